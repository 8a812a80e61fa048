//! Records the fuzz corpus (fuzz/corpus/) from real RabbitMQ traffic:
//!
//!     cargo run --release --example record_fuzz_corpus -- HOST:PORT OUT_DIR
//!
//! (scripts/fuzz-corpus.sh starts a private node and runs this). Each
//! scenario is one connection of a plain lapin client (frame_max 4096, no
//! heartbeats) through a TCP proxy that records what the broker sends. The
//! broker's bytes after the handshake (connection.open-ok) are rewritten for
//! `testing::ReaderProbe`: channel ids mapped into 1..=3, consumer tags of
//! basic.deliver / basic.cancel / basic.consume-ok set to "probe" (frame
//! sizes recomputed), so deliveries reach the probe's consumers. Written:
//! OUT_DIR/reader/*.bin (byte 0 frame_max, byte 1 chunk seed, then the
//! stream: the layout of `testing::run_reader_input`) and OUT_DIR/frames/*.bin
//! (byte 0 frame_max, then frames: `testing::run_frames_input`).

use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Runs `scenario` against a recording proxy in front of `upstream`; returns
/// every byte the broker sent on that connection.
fn record(rt: &tokio::runtime::Runtime, upstream: &str, scenario: Scenario) -> Res<Vec<u8>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let upstream = upstream.to_string();
    let proxy = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
        let (mut client, _) = listener.accept()?;
        let mut server = TcpStream::connect(upstream)?;
        let (mut c2, mut s2) = (client.try_clone()?, server.try_clone()?);
        let up = std::thread::spawn(move || {
            let _ = std::io::copy(&mut c2, &mut s2);
            let _ = s2.shutdown(Shutdown::Write);
        });
        let (mut recorded, mut buf) = (Vec::new(), vec![0u8; 65536]);
        loop {
            // EOF, or a reset once the client closed: the recording ends.
            let n = server.read(&mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            recorded.extend_from_slice(&buf[..n]);
            let _ = client.write_all(&buf[..n]);
        }
        let _ = client.shutdown(Shutdown::Both);
        let _ = up.join();
        Ok(recorded)
    });
    let uri = format!("amqp://guest:guest@{addr}/%2f?frame_max=4096&heartbeat=0");
    rt.block_on(async {
        let conn = Connection::connect(&uri, ConnectionProperties::default()).await?;
        scenario(&conn)
            .await
            .map_err(|e| format!("scenario: {e}"))?;
        // lapin may report a channel still closing here; the broker's
        // close-ok is recorded all the same.
        if let Err(e) = conn.close(200, "bye".into()).await {
            eprintln!("(closing the connection: {e})");
        }
        Res::Ok(())
    })?;
    Ok(proxy.join().map_err(|_| "proxy thread panicked")??)
}

type Scenario = fn(&Connection) -> futures_util::future::BoxFuture<'_, Res<()>>;

async fn confirm_channel(conn: &Connection, queue: &str) -> Res<Channel> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let opts = QueueDeclareOptions {
        auto_delete: false,
        ..Default::default()
    };
    ch.queue_declare(queue.into(), opts, FieldTable::default())
        .await?;
    Ok(ch)
}

fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Publishes with confirms (mandatory: a body to `rk` that reaches no
/// queue comes back as basic.return before its ack).
async fn publish(ch: &Channel, rk: &str, sizes: &[usize]) -> Res<()> {
    let mut confirms = Vec::new();
    for &n in sizes {
        let opts = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/octet-stream".into());
        confirms.push(
            ch.basic_publish("".into(), rk.into(), opts, &body(n), props)
                .await?,
        );
    }
    for c in confirms {
        c.await?;
    }
    Ok(())
}

/// Consumes `n` deliveries of `queue` on `ch`, acking each; returns the
/// consumer (dropping it cancels it).
async fn consume(ch: &Channel, queue: &str, n: usize) -> Res<lapin::Consumer> {
    ch.basic_qos(16, BasicQosOptions::default()).await?;
    let opts = BasicConsumeOptions::default();
    let mut consumer =
        (ch.basic_consume(queue.into(), "".into(), opts, FieldTable::default())).await?;
    for _ in 0..n {
        let d = consumer.next().await.ok_or("consumer ended")??;
        d.ack(BasicAckOptions::default()).await?;
    }
    Ok(consumer)
}

/// Sizes around frame_max 4096 (4088 is one whole body frame).
const SIZES: &[usize] = &[0, 1, 64, 300, 4088, 4089, 9000];

fn publish_confirms(conn: &Connection) -> futures_util::future::BoxFuture<'_, Res<()>> {
    Box::pin(async move {
        let ch = confirm_channel(conn, "fuzz-confirms").await?;
        let sizes: Vec<usize> = (0..40).map(|i| i * 7 % 200).collect();
        publish(&ch, "fuzz-confirms", &sizes).await?;
        ch.queue_delete("fuzz-confirms".into(), QueueDeleteOptions::default())
            .await?;
        Ok(())
    })
}

fn deliveries(conn: &Connection) -> futures_util::future::BoxFuture<'_, Res<()>> {
    Box::pin(async move {
        let ch1 = confirm_channel(conn, "fuzz-consume").await?;
        publish(&ch1, "fuzz-consume", SIZES).await?;
        let ch2 = conn.create_channel().await?;
        let consumer = consume(&ch2, "fuzz-consume", SIZES.len()).await?;
        ch2.basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await?;
        ch1.queue_delete("fuzz-consume".into(), QueueDeleteOptions::default())
            .await?;
        Ok(())
    })
}

fn returns(conn: &Connection) -> futures_util::future::BoxFuture<'_, Res<()>> {
    Box::pin(async move {
        let ch = confirm_channel(conn, "fuzz-return").await?;
        publish(&ch, "fuzz-unbound-key", &[5, 5000]).await?;
        publish(&ch, "fuzz-return", &[7]).await?;
        Ok(())
    })
}

fn channel_closes(conn: &Connection) -> futures_util::future::BoxFuture<'_, Res<()>> {
    Box::pin(async move {
        // 404: passive declare of a queue that does not exist.
        let ch1 = conn.create_channel().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let r = (ch1.queue_declare("fuzz-missing".into(), passive, FieldTable::default())).await;
        assert!(r.is_err(), "a passive declare of a missing queue succeeded");
        // 406: redeclared with other properties.
        let ch2 = confirm_channel(conn, "fuzz-redeclare").await?;
        let ch3 = conn.create_channel().await?;
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let r = (ch3.queue_declare("fuzz-redeclare".into(), durable, FieldTable::default())).await;
        assert!(r.is_err(), "a redeclare with other properties succeeded");
        ch2.queue_delete("fuzz-redeclare".into(), QueueDeleteOptions::default())
            .await?;
        Ok(())
    })
}

fn broker_cancel(conn: &Connection) -> futures_util::future::BoxFuture<'_, Res<()>> {
    Box::pin(async move {
        let ch1 = confirm_channel(conn, "fuzz-cancel").await?;
        publish(&ch1, "fuzz-cancel", &[10, 5000]).await?;
        let ch2 = conn.create_channel().await?;
        let _consumer = consume(&ch2, "fuzz-cancel", 2).await?;
        // Deleting the queue cancels its consumer: basic.cancel from the broker.
        ch1.queue_delete("fuzz-cancel".into(), QueueDeleteOptions::default())
            .await?;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        Ok(())
    })
}

fn session(conn: &Connection) -> futures_util::future::BoxFuture<'_, Res<()>> {
    Box::pin(async move {
        let ch1 = confirm_channel(conn, "fuzz-session").await?;
        let ch2 = conn.create_channel().await?;
        let sizes: Vec<usize> = (0..12).map(|i| SIZES[i % SIZES.len()]).collect();
        let (a, b) = tokio::join!(
            consume(&ch2, "fuzz-session", sizes.len()),
            publish(&ch1, "fuzz-session", &sizes)
        );
        a?;
        b?;
        publish(&ch1, "fuzz-nowhere", &[3]).await?;
        ch1.queue_delete("fuzz-session".into(), QueueDeleteOptions::default())
            .await?;
        Ok(())
    })
}

/// The frames of `bytes` (type, channel, payload), as far as they are whole.
fn frames(mut bytes: &[u8]) -> Vec<(u8, u16, &[u8])> {
    let mut out = Vec::new();
    while bytes.len() >= 8 {
        let size = u32::from_be_bytes([bytes[3], bytes[4], bytes[5], bytes[6]]) as usize;
        if bytes.len() < size + 8 {
            break;
        }
        out.push((
            bytes[0],
            u16::from_be_bytes([bytes[1], bytes[2]]),
            &bytes[7..7 + size],
        ));
        bytes = &bytes[size + 8..];
    }
    out
}

fn push_frame(out: &mut Vec<u8>, kind: u8, channel: u16, payload: &[u8]) {
    out.push(kind);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.push(0xCE);
}

/// A method payload whose first argument is a consumer tag, with the tag
/// set to "probe": basic.deliver (60,60), basic.cancel (60,30),
/// basic.consume-ok (60,21).
fn retag(payload: &[u8]) -> Option<Vec<u8>> {
    let ids = payload.get(..4)?;
    if ids[..2] != [0, 60] || ![60, 30, 21].contains(&ids[3]) || ids[2] != 0 {
        return None;
    }
    let tag_len = usize::from(*payload.get(4)?);
    let rest = payload.get(5 + tag_len..)?;
    let mut p = ids.to_vec();
    p.push(5);
    p.extend_from_slice(b"probe");
    p.extend_from_slice(rest);
    Some(p)
}

/// (handshake frames, the rest rewritten for the probe).
fn for_probe(recorded: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (mut handshake, mut rest) = (Vec::new(), Vec::new());
    let mut after_open = false;
    for (kind, channel, payload) in frames(recorded) {
        if !after_open {
            push_frame(&mut handshake, kind, channel, payload);
            // connection.open-ok (10,41) ends the handshake.
            after_open = kind == 1 && payload.get(..4) == Some(&[0, 10, 0, 41]);
            continue;
        }
        let channel = if channel == 0 {
            0
        } else {
            (channel - 1) % 3 + 1
        };
        match retag(payload).filter(|_| kind == 1) {
            Some(p) => push_frame(&mut rest, kind, channel, &p),
            None => push_frame(&mut rest, kind, channel, payload),
        }
    }
    (handshake, rest)
}

fn write(dir: &Path, name: &str, prefix: &[u8], bytes: &[u8]) -> Res<()> {
    std::fs::create_dir_all(dir)?;
    let mut data = prefix.to_vec();
    data.extend_from_slice(bytes);
    std::fs::write(dir.join(name), data)?;
    println!(
        "{} ({} bytes)",
        dir.join(name).display(),
        bytes.len() + prefix.len()
    );
    Ok(())
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, upstream, out] = &args[..] else {
        return Err("usage: record_fuzz_corpus HOST:PORT OUT_DIR".into());
    };
    let (reader, frames_dir) = (Path::new(out).join("reader"), Path::new(out).join("frames"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let scenarios: [(&str, Scenario); 6] = [
        ("confirms", publish_confirms),
        ("deliveries", deliveries),
        ("returns", returns),
        ("channel-closes", channel_closes),
        ("broker-cancel", broker_cancel),
        ("session", session),
    ];
    // One file per kind of frame (type, class, method) for `frames`.
    let mut kinds = std::collections::BTreeMap::new();
    for (i, (name, scenario)) in scenarios.into_iter().enumerate() {
        let recorded = record(&rt, upstream, scenario).map_err(|e| format!("{name}: {e}"))?;
        let (handshake, stream) = for_probe(&recorded);
        for (kind, channel, payload) in frames(&handshake).into_iter().chain(frames(&stream)) {
            let ids = if kind == 1 {
                payload.get(..4).unwrap_or(&[])
            } else {
                &[]
            };
            let key = format!(
                "one-{kind}-{}",
                ids.iter()
                    .map(|b| b.to_string())
                    .collect::<Vec<_>>()
                    .join("-")
            );
            kinds.entry(key).or_insert_with(|| {
                let mut f = Vec::new();
                push_frame(&mut f, kind, channel, payload);
                f
            });
        }
        let seed = 17 + 38 * i as u8;
        write(&reader, &format!("{name}.bin"), &[0, seed], &stream)?;
        write(&frames_dir, &format!("{name}.bin"), &[0], &stream)?;
        if i == 0 {
            // The handshake's frames again, unsolicited (connection.start
            // carries nested tables), then the scenario.
            let mut again = handshake.clone();
            again.extend_from_slice(&stream);
            write(&reader, "handshake-again.bin", &[1, 99], &again)?;
            write(&frames_dir, "handshake.bin", &[0], &handshake)?;
        }
        if name == "session" {
            write(&reader, "session-fm131072.bin", &[1, 200], &stream)?;
        }
    }
    for (key, frame) in kinds {
        write(&frames_dir, &format!("{key}.bin"), &[0], &frame)?;
    }
    Ok(())
}

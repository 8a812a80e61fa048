//! The hostile proxy: a TCP proxy between the library and the real (private) broker. It forwards
//! the library's bytes to the broker unchanged, parses the broker's byte stream into AMQP frames
//! and hands each one to the connection's [`Tamper`], which forwards, replaces, mutates or
//! injects frames, or cuts the connection. A connection whose tamper factory returns `None` is
//! transparent, so the library reconnects through the proxy and recovers.
//!
//! The proxy also watches the real conversation on its own (before any tampering): which
//! message (sequenced body, `seq-N`) each delivery tag of a confirm channel carries, and which of
//! them the REAL broker acked. `confirmed()` is that set: the messages the broker confirmed, which
//! must never be lost whatever the proxy forged.

use super::frames::{self, Frame};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What a tamper does with one frame of the broker.
pub enum Act {
    /// send the frame on unchanged
    Forward,
    /// send these bytes instead (empty: drop the frame)
    Replace(Vec<u8>),
}

/// What a tamper sees besides the frame.
pub struct Cx<'a> {
    pub track: &'a Mutex<Track>,
    pub stats: &'a ProxyStats,
}

impl Cx<'_> {
    /// Counts one hostile act (the tests wait for it).
    pub fn acted(&self) {
        self.stats.acts.fetch_add(1, Ordering::SeqCst);
    }
    /// Messages the library published on `channel` of this connection (the highest tag).
    pub fn published_on(&self, channel: u16) -> u64 {
        let t = self.track.lock().unwrap();
        t.channels.get(&channel).map_or(0, |c| c.next_tag - 1)
    }
}

/// The hostile side of one connection: called with every frame the broker sends, in order.
pub trait Tamper: Send {
    fn frame(&mut self, f: &Frame, cx: &Cx) -> Act;
}

/// Decides, per connection (numbered from 1), whether it is hostile.
pub type Factory = Box<dyn Fn(u64) -> Option<Box<dyn Tamper>> + Send + Sync>;

/// Counters shared by all connections of a proxy.
#[derive(Default)]
pub struct ProxyStats {
    pub accepted: AtomicU64,
    pub acts: AtomicU64,
    /// delivery tags the proxy turned from acks into nacks (messages covered)
    pub forged_nacks: AtomicU64,
    /// channel.close frames the real broker sent (each one costs the library a resend)
    pub channel_closes: AtomicU64,
    /// bumped by `cut_all`: every connection older than that is closed
    pub cut: AtomicU64,
    /// what the last hostile act was, in words (for reports)
    pub note: Mutex<String>,
    /// the sequence numbers of the messages the real broker acked
    confirmed: Mutex<HashSet<u64>>,
}

/// The library's side of the conversation as the proxy saw it, per channel.
#[derive(Default)]
pub struct Track {
    channels: HashMap<u16, ChanTrack>,
}

struct ChanTrack {
    confirm: bool,
    next_tag: u64,
    /// tag -> sequence number (None: a body that is not `seq-N`), until the broker settles it
    pending: BTreeMap<u64, Option<u64>>,
    /// the tag of the publish whose body comes next
    body_of: Option<u64>,
}

impl Default for ChanTrack {
    fn default() -> Self {
        ChanTrack {
            confirm: false,
            next_tag: 1,
            pending: BTreeMap::new(),
            body_of: None,
        }
    }
}

impl Track {
    /// A frame the library sent.
    fn client_frame(&mut self, f: &Frame) {
        if f.typ == frames::BODY {
            let c = self.channels.entry(f.channel).or_default();
            if let Some(tag) = c.body_of.take() {
                c.pending.insert(tag, super::parse_seq(&f.payload));
            }
            return;
        }
        match f.method_id() {
            Some(frames::CHANNEL_OPEN) => {
                self.channels.insert(f.channel, ChanTrack::default());
            }
            Some(frames::CONFIRM_SELECT) => {
                self.channels.entry(f.channel).or_default().confirm = true
            }
            Some(frames::BASIC_PUBLISH) => {
                let c = self.channels.entry(f.channel).or_default();
                if c.confirm {
                    c.body_of = Some(c.next_tag);
                    c.next_tag += 1;
                }
            }
            _ => {}
        }
    }

    /// A frame the real broker sent (before any tampering).
    fn broker_frame(&mut self, f: &Frame, stats: &ProxyStats) {
        let m = f.method_id();
        if m == Some(frames::CHANNEL_CLOSE) {
            stats.channel_closes.fetch_add(1, Ordering::SeqCst);
        }
        if m != Some(frames::BASIC_ACK) && m != Some(frames::BASIC_NACK) {
            return;
        }
        let Some((tag, multiple)) = frames::ack_fields(f) else {
            return;
        };
        let Some(c) = self.channels.get_mut(&f.channel) else {
            return;
        };
        let settled: Vec<u64> = if multiple {
            c.pending.range(..=tag).map(|(t, _)| *t).collect()
        } else {
            vec![tag]
        };
        let mut confirmed = stats.confirmed.lock().unwrap();
        for t in settled {
            if let Some(Some(seq)) = c.pending.remove(&t) {
                if m == Some(frames::BASIC_ACK) {
                    confirmed.insert(seq);
                }
            }
        }
    }
}

pub struct HostileProxy {
    pub port: u16,
    pub stats: Arc<ProxyStats>,
    stop: Arc<AtomicBool>,
    h: Option<JoinHandle<()>>,
}

impl HostileProxy {
    pub fn start(upstream: SocketAddr, factory: Factory) -> HostileProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let port = listener.local_addr().unwrap().port();
        let stats = Arc::new(ProxyStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (stats.clone(), stop.clone());
        let h = std::thread::Builder::new()
            .name("hostile-proxy".into())
            .spawn(move || {
                for client in listener.incoming() {
                    if sp.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let n = st.accepted.fetch_add(1, Ordering::SeqCst) + 1;
                    let Ok(server) = TcpStream::connect(upstream) else {
                        continue; // broker down: the library sees a close
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let track = Arc::new(Mutex::new(Track::default()));
                    let tamper = factory(n);
                    let gen = st.cut.load(Ordering::SeqCst);
                    let up = Pump {
                        from: client.try_clone().unwrap(),
                        to: server.try_clone().unwrap(),
                        track: track.clone(),
                        stats: st.clone(),
                        stop: sp.clone(),
                        gen,
                    };
                    let down = Pump {
                        from: server,
                        to: client,
                        track,
                        stats: st.clone(),
                        stop: sp.clone(),
                        gen,
                    };
                    std::thread::spawn(move || up.client_to_broker());
                    std::thread::spawn(move || down.broker_to_client(tamper));
                }
            })
            .unwrap();
        HostileProxy {
            port,
            stats,
            stop,
            h: Some(h),
        }
    }

    pub fn acts(&self) -> u64 {
        self.stats.acts.load(Ordering::SeqCst)
    }
    pub fn accepted(&self) -> u64 {
        self.stats.accepted.load(Ordering::SeqCst)
    }
    /// Closes every connection open now (both sides); new ones go through as usual.
    pub fn cut_all(&self) {
        self.stats.cut.fetch_add(1, Ordering::SeqCst);
    }
    pub fn note(&self) -> String {
        self.stats.note.lock().unwrap().clone()
    }
    /// The sequence numbers the real broker confirmed (acked), as the proxy saw them.
    pub fn confirmed(&self) -> HashSet<u64> {
        self.stats.confirmed.lock().unwrap().clone()
    }
}

impl Drop for HostileProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wake accept
        if let Some(h) = self.h.take() {
            let _ = h.join();
        }
    }
}

struct Pump {
    from: TcpStream,
    to: TcpStream,
    track: Arc<Mutex<Track>>,
    stats: Arc<ProxyStats>,
    stop: Arc<AtomicBool>,
    /// `stats.cut` when the connection began
    gen: u64,
}

/// What one read gave.
enum Got {
    Data(usize),
    Idle,
    End,
}

impl Pump {
    fn read(&mut self, buf: &mut [u8]) -> Got {
        if self.stats.cut.load(Ordering::SeqCst) != self.gen {
            return Got::End;
        }
        match self.from.read(buf) {
            Ok(0) => Got::End,
            Ok(n) => Got::Data(n),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Got::Idle
            }
            Err(_) => Got::End,
        }
    }

    fn end(&self) {
        let _ = self.to.shutdown(Shutdown::Both);
        let _ = self.from.shutdown(Shutdown::Both);
    }

    /// The library's bytes go to the broker unchanged; the proxy only watches them.
    fn client_to_broker(mut self) {
        let _ = self.from.set_read_timeout(Some(Duration::from_millis(20)));
        let mut buf = vec![0u8; 64 * 1024];
        let mut pending: Vec<u8> = Vec::new();
        let mut header_seen = false;
        while !self.stop.load(Ordering::SeqCst) {
            let n = match self.read(&mut buf) {
                Got::Data(n) => n,
                Got::Idle => continue,
                Got::End => break,
            };
            pending.extend_from_slice(&buf[..n]);
            if !header_seen && pending.len() >= 8 {
                pending.drain(..8); // "AMQP\0\0\x09\x01"
                header_seen = true;
            }
            if header_seen {
                let mut t = self.track.lock().unwrap();
                while let Some((f, used)) = frames::split(&pending) {
                    t.client_frame(&f);
                    pending.drain(..used);
                }
            }
            if self.to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        self.end();
    }

    fn broker_to_client(mut self, mut tamper: Option<Box<dyn Tamper>>) {
        let _ = self.from.set_read_timeout(Some(Duration::from_millis(20)));
        let mut buf = vec![0u8; 256 * 1024];
        let mut pending: Vec<u8> = Vec::new();
        let track = self.track.clone();
        let stats = self.stats.clone();
        let cx = Cx {
            track: &track,
            stats: &stats,
        };
        while !self.stop.load(Ordering::SeqCst) {
            let n = match self.read(&mut buf) {
                Got::Data(n) => n,
                Got::Idle => continue,
                Got::End => break,
            };
            pending.extend_from_slice(&buf[..n]);
            let mut out = Vec::new();
            let mut used_all = 0;
            while let Some((f, used)) = frames::split(&pending[used_all..]) {
                let raw = &pending[used_all..used_all + used];
                track.lock().unwrap().broker_frame(&f, &stats);
                match tamper.as_mut().map_or(Act::Forward, |t| t.frame(&f, &cx)) {
                    Act::Forward => out.extend_from_slice(raw),
                    Act::Replace(b) => out.extend_from_slice(&b),
                }
                used_all += used;
            }
            pending.drain(..used_all);
            if !out.is_empty() && self.to.write_all(&out).is_err() {
                break;
            }
        }
        self.end();
    }
}

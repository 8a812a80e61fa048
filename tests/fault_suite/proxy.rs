//! A TCP proxy between the library and the broker: blackholes and resets connections.

use super::*;

/// A TCP proxy on 127.0.0.1 between the library and the broker. While `blackhole` is set it
/// forwards nothing in either direction and closes nothing (the bytes wait in the kernel's
/// buffers, as on a silent network); new connections are accepted and connected upstream, but
/// nothing flows. When cleared, forwarding resumes on every connection.
pub(crate) struct Proxy {
    pub(crate) port: u16,
    pub(crate) blackhole: Arc<AtomicBool>,
    /// bumped by `reset_all`: every connection older than that is reset (RST to the library)
    pub(crate) resets: Arc<AtomicU64>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) accepted: Arc<AtomicU64>,
    pub(crate) h: Option<JoinHandle<()>>,
}

impl Proxy {
    pub(crate) fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let port = listener.local_addr().unwrap().port();
        let blackhole = Arc::new(AtomicBool::new(false));
        let resets = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let (bh, rs, st, acc) = (
            blackhole.clone(),
            resets.clone(),
            stop.clone(),
            accepted.clone(),
        );
        let h = std::thread::Builder::new()
            .name("fs-proxy".into())
            .spawn(move || {
                for client in listener.incoming() {
                    if st.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    acc.fetch_add(1, Ordering::SeqCst);
                    let Ok(server) = TcpStream::connect(upstream) else {
                        continue; // broker down: the client sees a close
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let gen = rs.load(Ordering::SeqCst);
                    for (from, to, from_is_client) in [
                        (
                            client.try_clone().unwrap(),
                            server.try_clone().unwrap(),
                            true,
                        ),
                        (server, client, false),
                    ] {
                        let p = PumpCtl {
                            blackhole: bh.clone(),
                            resets: rs.clone(),
                            gen,
                            stop: st.clone(),
                            from_is_client,
                        };
                        std::thread::spawn(move || pump(from, to, p));
                    }
                }
            })
            .unwrap();
        Proxy {
            port,
            blackhole,
            resets,
            stop,
            accepted,
            h: Some(h),
        }
    }

    /// Resets every connection open now: the library's side gets a TCP RST (SO_LINGER 0 and
    /// close), the broker's side a plain close. New connections go through normally.
    pub(crate) fn reset_all(&self) {
        self.resets.fetch_add(1, Ordering::SeqCst);
    }
}

pub(crate) struct PumpCtl {
    pub(crate) blackhole: Arc<AtomicBool>,
    pub(crate) resets: Arc<AtomicU64>,
    pub(crate) gen: u64,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) from_is_client: bool,
}

/// SO_LINGER {on, 0}: closing the socket sends a RST instead of a FIN.
pub(crate) fn set_linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

pub(crate) fn pump(mut from: TcpStream, mut to: TcpStream, p: PumpCtl) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = vec![0u8; 64 * 1024];
    while !p.stop.load(Ordering::SeqCst) {
        if p.resets.load(Ordering::SeqCst) != p.gen {
            // both pumps of the connection leave; the last close of the client socket sends RST
            set_linger_zero(if p.from_is_client { &from } else { &to });
            return;
        }
        if p.blackhole.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.blackhole.store(false, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wake accept
        if let Some(h) = self.h.take() {
            let _ = h.join();
        }
    }
}

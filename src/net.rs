//! Sockets: the only user of socket2. Listening (with SO_REUSEADDR, so a
//! restarted receiver can take its port back at once) and connecting with a
//! timeout, with errors that name the address and say what happened.

use crate::exit::{Exit, ExitError};
use crate::secure::Wire;
use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use std::io;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// A receiver's connection after its handshake: reads time out after the
/// idle timeout, and a frame or record that has started must complete
/// within it too (see [`Wire::pace`]): a peer trickling one byte at a time
/// cannot hold the session.
///
/// Each write goes out whole (see [`Wire`]), also from the writers made
/// with [`Deadlined::frame_writer`], so two threads can answer on one
/// connection without interleaving their frames.
pub struct Deadlined {
    inner: Wire,
}

/// When a connection last received bytes, shared with whoever watches it.
#[derive(Debug, Clone, Default)]
pub struct Activity(std::sync::Arc<std::sync::atomic::AtomicU64>);

fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Activity {
    /// Records that bytes arrived now.
    pub fn touch(&self) {
        let ms = u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long since bytes last arrived.
    pub fn idle(&self) -> Duration {
        let then = Duration::from_millis(self.0.load(std::sync::atomic::Ordering::Relaxed));
        epoch().elapsed().saturating_sub(then)
    }
}

impl crate::conn::FrameClock for Deadlined {
    fn mid_frame(&mut self, on: bool) {
        self.inner.mid_frame(on);
    }
}

impl Deadlined {
    /// Wraps a stream whose idle timeout is `idle`; every arrival of
    /// bytes (a part of a record too) touches `activity`, and a frame or
    /// record that has started must complete within `idle`.
    pub fn new(inner: Wire, idle: Duration, activity: Activity) -> Self {
        activity.touch();
        inner.pace(idle);
        inner.on_receive(std::sync::Arc::new(move || activity.touch()));
        Deadlined { inner }
    }

    /// Another writer on this connection, for another thread: its
    /// [`Wire::send_all`] writes whole frames with no other in between.
    pub fn frame_writer(&self) -> io::Result<Wire> {
        self.inner.try_clone()
    }
}

impl Deadlined {
    /// True when bytes (or EOF) can be read right now without waiting (on
    /// a sealed connection: a whole record is buffered, or ciphertext
    /// arrived, which may not yet complete one).
    pub fn readable_now(&self) -> bool {
        if self.inner.has_buffered() {
            return true;
        }
        !poll_one(
            self.inner.tcp(),
            rustix::event::PollFlags::IN,
            Duration::ZERO,
        )
        .is_empty()
    }
}

impl Read for Deadlined {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // The wire touches the activity as bytes arrive.
        self.inner.read(buf)
    }
}

impl Write for Deadlined {
    /// Writes all of `buf` (see [`Deadlined`]).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.send_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Binds and listens on `bind:port`. A port in use is reported by number.
pub fn listen(bind: IpAddr, port: u16) -> Result<TcpListener, ExitError> {
    match listen_on(bind, port) {
        // The default, `::` (IPv6 and IPv4), where the system has no IPv6.
        Err((e, _))
            if bind == IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
                && matches!(
                    e.raw_os_error(),
                    Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL | libc::EPROTONOSUPPORT)
                ) =>
        {
            listen_on(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), port).map_err(|(_, x)| x)
        }
        other => other.map_err(|(_, x)| x),
    }
}

fn listen_on(bind: IpAddr, port: u16) -> Result<TcpListener, (io::Error, ExitError)> {
    let addr = SocketAddr::new(bind, port);
    let fail = |what: &str, e: io::Error| {
        let why = if e.kind() == io::ErrorKind::AddrInUse {
            format!("port {port} is already in use")
        } else {
            e.to_string()
        };
        let x = ExitError::new(Exit::Connect, format!("cannot {what} on {addr}: {why}"));
        (e, x)
    };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| fail("create a socket", e))?;
    socket
        .set_reuse_address(true)
        .map_err(|e| fail("listen", e))?;
    if addr.is_ipv6() {
        // Let `::` serve IPv4 too where the system allows it.
        let _ = socket.set_only_v6(false);
    }
    socket.bind(&addr.into()).map_err(|e| fail("listen", e))?;
    socket.listen(1024).map_err(|e| fail("listen", e))?;
    Ok(socket.into())
}

/// Bytes written to `stream` that the peer has not acknowledged yet
/// (`ioctl(TIOCOUTQ)`); `None` where the system cannot tell.
pub fn unsent(stream: &TcpStream) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ on a socket writes one c_int through the pointer,
    // which points to a live local; the fd is owned by `stream`.
    let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    if rc == 0 {
        u32::try_from(n).ok()
    } else {
        None
    }
}

/// Tunes an established connection: no Nagle delay for control frames,
/// keepalive so a vanished peer is noticed, and the idle timeout.
pub fn tune(stream: &TcpStream, timeout: Duration) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let ka = TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10));
    SockRef::from(stream).set_tcp_keepalive(&ka)?;
    Ok(())
}

/// Connects to `target` ("host:port"), trying each address it resolves to.
/// Errors name the address and say whether it was refused or timed out.
pub fn connect(target: &str, timeout: Duration) -> Result<TcpStream, ExitError> {
    connect_to(target, timeout, "is `ftx recv` running there?")
}

/// [`connect`], saying `hint` when the connection is refused (what should
/// be listening there).
pub fn connect_to(target: &str, timeout: Duration, hint: &str) -> Result<TcpStream, ExitError> {
    let addrs: Vec<SocketAddr> = target
        .to_socket_addrs()
        .map_err(|e| {
            // A name that does not resolve is not a network fault to wait
            // out: it is said at once, and not retried.
            ExitError::lasting(
                Exit::Connect,
                format!("cannot resolve the host of {target}: {e}"),
            )
        })?
        .collect();
    let mut last = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some((*addr, e)),
        }
    }
    let message = match last {
        None => format!("cannot connect to {target}: it resolves to no address"),
        Some((addr, e)) => {
            let why = match e.kind() {
                io::ErrorKind::ConnectionRefused => {
                    format!("connection refused ({hint})")
                }
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                    format!("timed out after {} s", timeout.as_secs_f32())
                }
                _ => e.to_string(),
            };
            format!("cannot connect to {target} ({addr}): {why}")
        }
    };
    Err(ExitError::new(Exit::Connect, message))
}

/// The next receiver that calls in on `listener` (`ftx send --listen`),
/// waiting at most `wait` (`None`: for as long as it takes).
pub fn accept_call(listener: &TcpListener, wait: Option<Duration>) -> Result<TcpStream, ExitError> {
    let at = listener
        .local_addr()
        .map_or_else(|_| "the listening port".to_owned(), |a| a.to_string());
    loop {
        let ready = match wait {
            Some(w) => wait_readable(listener, w),
            None => wait_readable(listener, Duration::from_secs(3600)),
        };
        if !ready {
            if wait.is_none() {
                continue;
            }
            return Err(ExitError::new(
                Exit::Connect,
                format!(
                    "no receiver called in on {at} within {} s",
                    wait.unwrap_or_default().as_secs()
                ),
            ));
        }
        match listener.accept() {
            Ok((s, _)) => return Ok(s),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                return Err(ExitError::new(
                    Exit::Connect,
                    format!("cannot take a call on {at}: {e}"),
                ))
            }
        }
    }
}

/// Ends a connection at once with a reset (linger 0), so a peer blocked on
/// a closed window notices now rather than after minutes of probes. The
/// session reading from it sees an error and checkpoints what it holds.
pub fn abort(s: &std::net::TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
    let _ = s.shutdown(std::net::Shutdown::Both);
}

/// True when the peer of `s` has closed its end or reset it: whoever
/// reads `s` meets the end of the stream after what is still buffered.
pub fn peer_closed(s: &std::net::TcpStream) -> bool {
    use rustix::event::PollFlags;
    poll_one(s, PollFlags::RDHUP, Duration::ZERO)
        .intersects(PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR)
}

/// Waits up to `timeout` for `fd` to be readable (for a listener: a
/// connection to accept). False on timeout or error.
pub fn wait_readable(fd: impl std::os::fd::AsFd, timeout: Duration) -> bool {
    !poll_one(fd, rustix::event::PollFlags::IN, timeout).is_empty()
}

/// Polls `fd` once for `events`, waiting up to `timeout` (zero: not at
/// all): what it reported (errors and hang-ups always count), empty on
/// timeout or error.
fn poll_one(
    fd: impl std::os::fd::AsFd,
    events: rustix::event::PollFlags,
    timeout: Duration,
) -> rustix::event::PollFlags {
    let fd = fd.as_fd();
    let mut fds = [rustix::event::PollFd::new(&fd, events)];
    let t = rustix::event::Timespec {
        tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    match rustix::event::poll(&mut fds, Some(&t)) {
        Ok(n) if n > 0 => fds[0].revents(),
        _ => rustix::event::PollFlags::empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_connection_is_closed_by_its_peer_only_once_the_peer_closed_it() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut near = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("dial");
        let (mut far, _) = l.accept().expect("accept");
        assert!(!peer_closed(&far), "open, nothing sent");
        near.write_all(b"last bytes").expect("write");
        assert!(wait_readable(&far, Duration::from_secs(10)), "bytes arrive");
        assert!(!peer_closed(&far), "open, bytes waiting");
        drop(near);
        // The FIN follows the bytes; bounded wait for it to be seen.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !peer_closed(&far) && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert!(peer_closed(&far), "closed by its peer");
        let mut got = Vec::new();
        far.read_to_end(&mut got).expect("read");
        assert_eq!(got, b"last bytes", "what was sent is still there to read");
    }
}

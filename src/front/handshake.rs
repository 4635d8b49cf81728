//! The handshake's decisions, pure: what the gate ([`super::gate`])
//! answers a connection's first frame (HELLO) and, when a token is set,
//! its second (NOISE); how failed handshakes are counted, logged and
//! slowed down per address ([`Failures`]).

use crate::protocol::limits::{HELLO_FLAGS, VERSION};
use crate::protocol::{ErrorCode, Frame};
use crate::secure::{Cipher, HandshakeError, HELLO_CHACHA, MESSAGE_LEN};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The address a connection counts against: its IPv4 address, or the /64
/// prefix of its IPv6 address (one host usually holds a whole /64).
pub(crate) fn addr_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// An [`addr_key`] as shown in the log (`2001:db8::/64`).
pub(crate) fn addr_label(key: IpAddr) -> String {
    match key {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("{v6}/64"),
    }
}

/// Failed handshakes an address may have in a row before it has to wait.
pub(crate) const FAIL_BURST: f64 = 8.0;
/// One failure of an address is forgiven this often: past the burst, one
/// guess every 2 s (30 a minute).
pub(crate) const FORGIVE: Duration = Duration::from_secs(2);
/// An address's failures are logged at most once this often (as a count).
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(60);
/// Addresses tracked at most (then the forgiven ones are dropped, or all).
const MAX_TRACKED: usize = 4096;

/// The failed handshakes of one address.
#[derive(Debug)]
struct Tally {
    /// Failures in a row, less one for every [`FORGIVE`] since `at`.
    level: f64,
    at: Instant,
    /// Failures since the last line logged.
    unlogged: u64,
    /// When a line about this address was last logged.
    logged: Option<Instant>,
}

impl Tally {
    fn level(&self, now: Instant) -> f64 {
        let forgiven = now.saturating_duration_since(self.at).as_secs_f64() / FORGIVE.as_secs_f64();
        (self.level - forgiven).max(0.0)
    }
}

/// Failed handshakes (wrong token, replayed handshake, a first record that
/// does not open) by address: counted, logged as counts, and slowed down.
#[derive(Debug, Default)]
pub(crate) struct Failures {
    by: HashMap<IpAddr, Tally>,
}

impl Failures {
    /// Counts a failure of `ip`; the line to log when it is the first in a
    /// while (else `None`: it is counted and logged later by [`Failures::due`]).
    pub(crate) fn failed(&mut self, ip: IpAddr, now: Instant) -> Option<String> {
        let key = addr_key(ip);
        if self.by.len() >= MAX_TRACKED && !self.by.contains_key(&key) {
            self.by.retain(|_, t| t.unlogged > 0 || t.level(now) > 0.0);
            if self.by.len() >= MAX_TRACKED {
                self.by.clear();
            }
        }
        let t = self.by.entry(key).or_insert(Tally {
            level: 0.0,
            at: now,
            unlogged: 0,
            logged: None,
        });
        t.level = t.level(now) + 1.0;
        t.at = now;
        let quiet = t
            .logged
            .is_some_and(|at| t.unlogged > 0 || now.saturating_duration_since(at) < LOG_EVERY);
        if quiet {
            t.unlogged += 1;
            return None;
        }
        t.logged = Some(now);
        Some(format!(
            "further failed handshakes from {} are counted and logged once a minute",
            addr_label(key)
        ))
    }

    /// How long `ip` must wait before its next handshake, if it failed too
    /// often: past [`FAIL_BURST`] failures in a row, until one is forgiven.
    pub(crate) fn penalty(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        // Past FAIL_BURST - 1 (what is left of a burst of FAIL_BURST
        // after the time it took): wait until it is back there.
        let over = self.by.get(&addr_key(ip))?.level(now) - (FAIL_BURST - 1.0);
        (over > 0.0).then(|| FORGIVE.mul_f64(over))
    }

    /// The count lines due: addresses with failures not yet logged, last
    /// logged [`LOG_EVERY`] ago or more.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<String> {
        let mut lines = Vec::new();
        for (key, t) in &mut self.by {
            let Some(at) = t.logged else { continue };
            let since = now.saturating_duration_since(at);
            if t.unlogged > 0 && since >= LOG_EVERY {
                lines.push(format!(
                    "{}: {} failed handshakes in the last {} s (wrong token, or a recorded handshake replayed)",
                    addr_label(*key),
                    t.unlogged,
                    since.as_secs()
                ));
                t.unlogged = 0;
                t.logged = Some(now);
            }
        }
        lines
    }
}

/// Why a handshake ends without a session: the ERROR to send and the line
/// to log.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

pub(crate) fn refused(code: ErrorCode, message: impl Into<String>) -> Refused {
    Refused {
        code,
        message: message.into(),
    }
}

/// The answer to the first frame of a connection: `Ok(())` to go on with
/// WELCOME. `busy` when every session slot is taken.
pub(crate) fn on_hello(frame: &Frame, busy: Option<usize>) -> Result<(), Refused> {
    match frame {
        Frame::Hello { version, .. } if *version != VERSION => Err(refused(
            ErrorCode::Version,
            format!("unsupported protocol version {version}, this receiver speaks {VERSION}"),
        )),
        Frame::Hello { flags, .. } if flags & !HELLO_FLAGS != 0 => Err(refused(
            ErrorCode::Protocol,
            // Never ignored: a flag asks for something this receiver does
            // not do.
            format!("unsupported HELLO flags {:#010x}", flags & !HELLO_FLAGS),
        )),
        Frame::Hello { .. } => match busy {
            Some(n) => Err(refused(
                ErrorCode::Busy,
                format!("receiver busy: {n} sessions already running, try again later"),
            )),
            None => Ok(()),
        },
        other => Err(refused(
            ErrorCode::Protocol,
            format!("expected HELLO, got {}", other.name()),
        )),
    }
}

/// The answer to the frame after WELCOME when the session is sealed: the
/// keys and the NOISE reply, from `respond` (the handshake's receiving half
/// with this receiver's token).
pub(crate) fn on_noise<K>(
    frame: &Frame,
    respond: impl FnOnce(&[u8; MESSAGE_LEN]) -> Result<K, HandshakeError>,
) -> Result<K, Refused> {
    match frame {
        Frame::Noise { message } => respond(message).map_err(|e| match e {
            HandshakeError::WrongToken => refused(
                ErrorCode::Auth,
                "authentication failed: wrong token, or a recorded handshake replayed",
            ),
            other => refused(ErrorCode::Internal, other.to_string()),
        }),
        other => Err(refused(
            ErrorCode::Auth,
            format!(
                "authentication failed: sender sent {} instead of NOISE (no token?)",
                other.name()
            ),
        )),
    }
}

/// The cipher of a sealed session: ChaCha20-Poly1305 if the sender's HELLO
/// asks for it or this receiver would rather have it, else AES-256-GCM.
pub(crate) fn session_cipher(hello: &Frame, choice: Option<Cipher>) -> Cipher {
    let asked = matches!(hello, Frame::Hello { flags, .. } if flags & HELLO_CHACHA != 0);
    if asked || Cipher::preferred(choice) == Cipher::ChaChaPoly {
        Cipher::ChaChaPoly
    } else {
        Cipher::AesGcm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(version: u16, flags: u32) -> Frame {
        Frame::Hello {
            version,
            flags,
            agent: "t".into(),
        }
    }

    #[test]
    fn hello_branches() {
        assert_eq!(on_hello(&hello(VERSION, 0), None), Ok(()));
        let r = on_hello(&hello(VERSION + 1, 0), None).expect_err("version");
        assert_eq!(r.code, ErrorCode::Version);
        let r = on_hello(&hello(VERSION, 1 << 31), None).expect_err("flags");
        assert_eq!(r.code, ErrorCode::Protocol);
        assert!(
            r.message.contains("unsupported HELLO flags 0x80000000"),
            "{}",
            r.message
        );
        let r = on_hello(&hello(VERSION, 0), Some(64)).expect_err("busy");
        assert_eq!(r.code, ErrorCode::Busy);
        assert!(r.message.contains("busy") && r.message.contains("try again"));
        let r = on_hello(&Frame::End { flags: 0 }, None).expect_err("not HELLO");
        assert_eq!(r.code, ErrorCode::Protocol);
        assert_eq!(r.message, "expected HELLO, got END");
    }

    #[test]
    fn chacha20_when_either_side_asks() {
        use Cipher::{AesGcm, ChaChaPoly};
        let plain = hello(VERSION, 0);
        let asks = hello(VERSION, HELLO_CHACHA);
        assert_eq!(session_cipher(&asks, Some(AesGcm)), ChaChaPoly);
        assert_eq!(session_cipher(&plain, Some(ChaChaPoly)), ChaChaPoly);
        assert_eq!(session_cipher(&plain, Some(AesGcm)), AesGcm);
        assert_eq!(session_cipher(&plain, None), Cipher::preferred(None));
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(addr_key(a), addr_key(b));
        assert_ne!(addr_key(a), addr_key(c));
        assert_eq!(addr_label(addr_key(a)), "2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().expect("ip");
        assert_eq!(addr_key(mapped), "127.0.0.1".parse::<IpAddr>().expect("ip"));
    }

    #[test]
    fn failures_are_logged_as_counts_and_slow_an_address_down() {
        let mut f = Failures::default();
        let t0 = Instant::now();
        let ip: IpAddr = "2001:db8::1".parse().expect("ip");
        let neighbour: IpAddr = "2001:db8::2".parse().expect("ip");
        let other: IpAddr = "192.0.2.7".parse().expect("ip");
        // The first failure is logged, the next ones only counted.
        assert!(f.failed(ip, t0).is_some());
        for _ in 1..8 {
            assert_eq!(f.failed(neighbour, t0), None);
        }
        // Eight in a row: the /64 waits, another address does not.
        let wait = f.penalty(ip, t0).expect("penalised");
        assert_eq!(wait, FORGIVE);
        assert_eq!(f.penalty(other, t0), None);
        assert_eq!(f.penalty(ip, t0 + FORGIVE), None, "one forgiven after 2 s");
        // Once a minute, one line with the count.
        assert!(f.due(t0 + Duration::from_secs(59)).is_empty());
        let lines = f.due(t0 + LOG_EVERY);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("2001:db8::/64: 7 failed handshakes"),
            "{lines:?}"
        );
        assert!(f.due(t0 + LOG_EVERY * 2).is_empty(), "nothing new");
        // Past the burst: at most one guess per FORGIVE.
        let mut t = t0 + LOG_EVERY * 3;
        let mut allowed = 0;
        for _ in 0..600 {
            if f.penalty(ip, t).is_none() {
                f.failed(ip, t);
                allowed += 1;
            }
            t += Duration::from_millis(100);
        }
        // 60 s: the burst of 8, then one every 2 s.
        assert!((36..=40).contains(&allowed), "{allowed} guesses in 60 s");
    }

    #[test]
    fn noise_branches() {
        let noise = Frame::Noise { message: [1; 48] };
        assert_eq!(on_noise(&noise, |m| Ok(m[0])), Ok(1));
        let r = on_noise(&noise, |_| Err::<(), _>(HandshakeError::WrongToken)).expect_err("wrong");
        assert_eq!(r.code, ErrorCode::Auth);
        assert_eq!(
            r.message,
            "authentication failed: wrong token, or a recorded handshake replayed"
        );
        let r = on_noise(&noise, |_| {
            Err::<(), _>(HandshakeError::Noise(snow::Error::Input))
        })
        .expect_err("internal");
        assert_eq!(r.code, ErrorCode::Internal);
        let r = on_noise(&Frame::End { flags: 0 }, |_| Ok(())).expect_err("no NOISE");
        assert_eq!(r.code, ErrorCode::Auth);
        assert!(r.message.contains("instead of NOISE"), "{}", r.message);
    }
}

//! The handshake's decisions, pure: what the gate ([`super::gate`])
//! answers a connection's first frame (HELLO) and, when a token is set,
//! its second (NOISE).

use crate::protocol::limits::{HELLO_FLAGS, VERSION};
use crate::protocol::{ErrorCode, Frame};
use crate::secure::{Cipher, HandshakeError, HELLO_CHACHA, MESSAGE_LEN};

/// Why a handshake ends without a session: the ERROR to send and the line
/// to log.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Refused {
    pub(super) code: ErrorCode,
    pub(super) message: String,
}

pub(super) fn refused(code: ErrorCode, message: impl Into<String>) -> Refused {
    Refused {
        code,
        message: message.into(),
    }
}

/// The answer to the first frame of a connection: `Ok(())` to go on with
/// WELCOME. `busy` when every session slot is taken.
pub(super) fn on_hello(frame: &Frame, busy: Option<usize>) -> Result<(), Refused> {
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
pub(super) fn on_noise<K>(
    frame: &Frame,
    respond: impl FnOnce(&[u8; MESSAGE_LEN]) -> Result<K, HandshakeError>,
) -> Result<K, Refused> {
    match frame {
        Frame::Noise { message } => respond(message).map_err(|e| match e {
            HandshakeError::WrongToken => {
                refused(ErrorCode::Auth, "authentication failed: wrong token")
            }
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
pub(super) fn session_cipher(hello: &Frame, choice: Option<Cipher>) -> Cipher {
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
        let r = on_hello(&Frame::End, None).expect_err("not HELLO");
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
    fn noise_branches() {
        let noise = Frame::Noise { message: [1; 48] };
        assert_eq!(on_noise(&noise, |m| Ok(m[0])), Ok(1));
        let r = on_noise(&noise, |_| Err::<(), _>(HandshakeError::WrongToken)).expect_err("wrong");
        assert_eq!(r.code, ErrorCode::Auth);
        assert_eq!(r.message, "authentication failed: wrong token");
        let r = on_noise(&noise, |_| {
            Err::<(), _>(HandshakeError::Noise(snow::Error::Input))
        })
        .expect_err("internal");
        assert_eq!(r.code, ErrorCode::Internal);
        let r = on_noise(&Frame::End, |_| Ok(())).expect_err("no NOISE");
        assert_eq!(r.code, ErrorCode::Auth);
        assert!(r.message.contains("instead of NOISE"), "{}", r.message);
    }
}

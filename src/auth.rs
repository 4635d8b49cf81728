//! The shared token: where it comes from, how to make a strong one, and
//! the Noise pre-shared key derived from it (see [`crate::secure`]).
//!
//! When the receiver has a token it sets [`FLAG_SEALED`] in WELCOME, and
//! the session is encrypted with a Noise handshake whose PSK is
//! `HMAC-SHA256(key = token, message = "ftx-noise-psk-v2")`: 32 bytes from
//! a token of any length, bound to this one use.
//!
//! The token is read from a file (`--token-file`) or from the `FTX_TOKEN`
//! environment variable, never from argv, where any local user could read
//! it in the process list. [`Token`]'s `Debug` never prints the secret.

use anyhow::{bail, Context};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::fmt;
use std::path::Path;

/// WELCOME flags bit 0: the receiver has a token; the session is sealed
/// (NOISE, then encrypted records).
pub const FLAG_SEALED: u32 = 1;

/// Environment variable holding the token when no token file is given.
pub const TOKEN_ENV: &str = "FTX_TOKEN";

/// The HMAC message the PSK is derived with: it binds the PSK to this use.
const PSK_LABEL: &[u8] = b"ftx-noise-psk-v2";

type HmacSha256 = Hmac<Sha256>;

/// A shared secret. Its `Debug` prints `Token(<redacted>)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Vec<u8>);

impl Token {
    /// Wraps raw secret bytes.
    pub fn new(secret: impl Into<Vec<u8>>) -> Token {
        Token(secret.into())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Loads the token: from `token_file` if given, else from `FTX_TOKEN` if it
/// is set and non-empty, else `None` (no authentication).
///
/// A token file's contents are the token, less one trailing `\n` or `\r\n`.
/// An unreadable or empty file is an error that names the file (and never
/// quotes its contents).
pub fn load_token(token_file: Option<&Path>) -> anyhow::Result<Option<Token>> {
    let env_value = match token_file {
        Some(_) => None,
        None => std::env::var_os(TOKEN_ENV).map(|v| v.to_string_lossy().into_owned()),
    };
    load_token_from(token_file, env_value)
}

/// [`load_token`] with the environment variable's value passed in, so tests
/// need not touch the process environment.
fn load_token_from(
    token_file: Option<&Path>,
    env_value: Option<String>,
) -> anyhow::Result<Option<Token>> {
    if let Some(path) = token_file {
        let mut bytes = std::fs::read(path)
            .with_context(|| format!("cannot read token file {}", path.display()))?;
        if bytes.ends_with(b"\r\n") {
            bytes.truncate(bytes.len() - 2);
        } else if bytes.ends_with(b"\n") {
            bytes.truncate(bytes.len() - 1);
        }
        if bytes.is_empty() {
            bail!("token file {} is empty", path.display());
        }
        return Ok(Some(Token(bytes)));
    }
    Ok(env_value
        .filter(|v| !v.is_empty())
        .map(|v| Token(v.into_bytes())))
}

/// Tokens shorter than this many bytes get a warning: 22 characters of
/// base64 (or 32 of hex, as `ftx token` prints) hold 128 random bits; a
/// shorter one could be guessed offline from a captured handshake.
pub const TOKEN_MIN_LEN: usize = 22;

/// A fresh token: 128 random bits as 32 hex digits, easy to paste and to
/// keep in a file or an environment variable.
pub fn fresh_token() -> anyhow::Result<String> {
    let mut bits = [0u8; 16];
    getrandom::fill(&mut bits)
        .map_err(|e| anyhow::anyhow!("cannot get random bytes from the system: {e}"))?;
    Ok(bits.iter().map(|b| format!("{b:02x}")).collect())
}

/// Like [`load_token`], and warns on stderr when the token is shorter than
/// [`TOKEN_MIN_LEN`].
pub fn load_token_warned(token_file: Option<&Path>) -> anyhow::Result<Option<Token>> {
    let token = load_token(token_file)?;
    if let Some(t) = &token {
        if t.is_short() {
            eprintln!(
                "ftx: warning: the token is shorter than {TOKEN_MIN_LEN} characters; make one of 128 random bits with `ftx token`"
            );
        }
    }
    Ok(token)
}

impl Token {
    /// True when the token is shorter than [`TOKEN_MIN_LEN`].
    pub fn is_short(&self) -> bool {
        self.0.len() < TOKEN_MIN_LEN
    }
}

impl Token {
    /// The Noise pre-shared key: HMAC-SHA256(token, "ftx-noise-psk-v2").
    pub fn psk(&self) -> [u8; 32] {
        // HMAC takes a key of any length: longer keys are hashed, shorter
        // padded.
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        m.update(PSK_LABEL);
        m.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_sealed_flag_is_a_known_welcome_flag() {
        assert_eq!(FLAG_SEALED & !crate::protocol::limits::WELCOME_FLAGS, 0);
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn psk_known_answer() {
        // python3 -c "import hmac,hashlib;
        //   print(hmac.new(b'secret', b'ftx-noise-psk-v2',
        //   hashlib.sha256).hexdigest())"
        assert_eq!(
            hex(&Token::new(*b"secret").psk()),
            "9e79a170a97a2e0614ab2cbcfa35d6ed2bc21b582dcbf8302bff8b0ee28c9dd3"
        );
        assert_ne!(Token::new(*b"secreT").psk(), Token::new(*b"secret").psk());
        assert_ne!(Token::new(*b"secret\n").psk(), Token::new(*b"secret").psk());
    }

    #[test]
    fn fresh_tokens_are_128_bits_of_hex_and_differ() {
        let a = fresh_token().expect("token");
        let b = fresh_token().expect("token");
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b);
        assert!(!Token::new(a).is_short());
        assert!(Token::new("hunter2").is_short());
    }

    #[test]
    fn debug_does_not_leak() {
        let t = Token::new(*b"hunter2-very-secret");
        let shown = format!("{t:?} {:?} {:#?}", Some(&t), t);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
    }

    fn token_file(contents: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(contents).expect("write");
        f.flush().expect("flush");
        f
    }

    #[test]
    fn file_token_has_one_trailing_newline_stripped() {
        for (contents, want) in [
            (&b"secret\n"[..], &b"secret"[..]),
            (b"secret\r\n", b"secret"),
            (b"secret", b"secret"),
            (b"secret\n\n", b"secret\n"),
            (b" sp ace \n", b" sp ace "),
        ] {
            let f = token_file(contents);
            let t = load_token_from(Some(f.path()), None)
                .expect("readable")
                .expect("a token");
            assert_eq!(t, Token::new(want), "{contents:?}");
        }
    }

    #[test]
    fn file_wins_over_env() {
        let f = token_file(b"from-file\n");
        let t = load_token_from(Some(f.path()), Some("from-env".into()))
            .expect("readable")
            .expect("a token");
        assert_eq!(t, Token::new(*b"from-file"));
    }

    #[test]
    fn env_token() {
        let t = load_token_from(None, Some("from-env".into()))
            .expect("ok")
            .expect("a token");
        assert_eq!(t, Token::new(*b"from-env"));
        assert_eq!(
            load_token_from(None, Some(String::new())).expect("ok"),
            None
        );
        assert_eq!(load_token_from(None, None).expect("ok"), None);
    }

    #[test]
    fn empty_file_is_an_error_naming_the_file() {
        for contents in [&b""[..], b"\n", b"\r\n"] {
            let f = token_file(contents);
            let err =
                load_token_from(Some(f.path()), Some("env".into())).expect_err("empty token file");
            let msg = format!("{err:#}");
            assert!(msg.contains(&f.path().display().to_string()), "{msg}");
            assert!(msg.contains("empty"), "{msg}");
        }
    }

    #[test]
    fn unreadable_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("no-such-token");
        let err = load_token_from(Some(&missing), None).expect_err("missing file");
        let msg = format!("{err:#}");
        assert!(msg.contains(&missing.display().to_string()), "{msg}");
    }
}

//! The shared token: where it comes from, how to make a strong one, and
//! the Noise pre-shared key derived from it (see [`crate::secure`]).
//!
//! When the receiver has a token it sets [`FLAG_SEALED`] in WELCOME, and
//! the session is encrypted with a Noise handshake whose PSK is
//! `HMAC-SHA256(key = token, message = "ftx-noise-psk-v3")`: 32 bytes from
//! a token of any length, bound to this one use.
//!
//! The token is read from a file (`--token-file`, which others must not be
//! able to read) or from the `FTX_TOKEN` environment variable, never from
//! argv, where any local user could read it in the process list. A token
//! that cannot carry 128 bits is refused ([`check_strength`]): one recorded
//! handshake is enough to guess a weak one offline. [`Token`]'s `Debug`
//! never prints the secret, and the token and the PSK are wiped from
//! memory when dropped (`zeroize`).

use anyhow::{bail, Context};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::fmt;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use zeroize::Zeroizing;

/// WELCOME flags bit 0: the receiver has a token; the session is sealed
/// (NOISE, then encrypted records).
pub const FLAG_SEALED: u32 = 1;

/// Environment variable holding the token when no token file is given.
pub const TOKEN_ENV: &str = "FTX_TOKEN";

/// The HMAC message the PSK is derived with: it binds the PSK to this use.
const PSK_LABEL: &[u8] = b"ftx-noise-psk-v3";

/// The least a token must be able to carry, in bits.
pub const TOKEN_MIN_BITS: f64 = 128.0;

type HmacSha256 = Hmac<Sha256>;

/// A shared secret, wiped from memory when dropped. Its `Debug` prints
/// `Token(<redacted>)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Zeroizing<Vec<u8>>);

impl Token {
    /// Wraps raw secret bytes.
    pub fn new(secret: impl Into<Vec<u8>>) -> Token {
        Token(Zeroizing::new(secret.into()))
    }

    /// The Noise pre-shared key: HMAC-SHA256(token, "ftx-noise-psk-v3"),
    /// wiped when dropped.
    pub fn psk(&self) -> Zeroizing<[u8; 32]> {
        // HMAC takes a key of any length: longer keys are hashed, shorter
        // padded.
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        m.update(PSK_LABEL);
        Zeroizing::new(m.finalize().into_bytes().into())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// How many bits a token can carry at most: its length times log2 of the
/// size of the character classes it uses (digits 10, lower-case 26,
/// upper-case 26, other printable ASCII 33; any other byte makes it 256).
pub fn capacity_bits(t: &[u8]) -> f64 {
    let has = |f: fn(&u8) -> bool| t.iter().any(f);
    let alphabet = if has(|c| !(0x20..=0x7e).contains(c)) {
        256
    } else {
        [
            (has(u8::is_ascii_digit), 10),
            (has(u8::is_ascii_lowercase), 26),
            (has(u8::is_ascii_uppercase), 26),
            (has(|c| !c.is_ascii_alphanumeric()), 33),
        ]
        .iter()
        .filter(|(used, _)| *used)
        .map(|(_, n)| n)
        .sum()
    };
    t.len() as f64 * f64::from(alphabet).log2()
}

/// Refuses a token that cannot carry [`TOKEN_MIN_BITS`] ([`capacity_bits`]),
/// or where one byte makes up more than half of it. `ftx token`'s 32 hex
/// digits always pass.
pub fn check_strength(t: &[u8]) -> anyhow::Result<()> {
    let bits = capacity_bits(t);
    let mut counts = [0usize; 256];
    for &c in t {
        counts[usize::from(c)] += 1;
    }
    let most = counts.iter().max().copied().unwrap_or(0);
    if bits < TOKEN_MIN_BITS || most * 2 > t.len() {
        bail!(
            "the token is too weak: it can carry at most {bits:.0} bits, and a token must be able \
             to carry {TOKEN_MIN_BITS:.0} (length × log2 of the character classes it uses, no \
             character more than half of it), or one recorded handshake is enough to guess it \
             offline; make one with `ftx token FILE`"
        );
    }
    Ok(())
}

/// Loads the token: from `token_file` if given, else from `FTX_TOKEN` if it
/// is set and non-empty, else `None` (no authentication).
///
/// A token file's contents are the token, less one trailing `\n` or `\r\n`.
/// An unreadable or empty file, one that its group or others may read or
/// write (as ssh refuses such keys), a value that is not UTF-8 text in
/// `FTX_TOKEN`, and a weak token ([`check_strength`]) are errors that name
/// where the token came from (and never quote it).
pub fn load_token(token_file: Option<&Path>) -> anyhow::Result<Option<Token>> {
    let env_value = match token_file {
        Some(_) => None,
        None => match std::env::var_os(TOKEN_ENV) {
            None => None,
            Some(v) => Some(v.into_string().map(Zeroizing::new).map_err(|_| {
                anyhow::anyhow!("{TOKEN_ENV} is not valid text (UTF-8); use --token-file for a token of raw bytes")
            })?),
        },
    };
    load_token_from(token_file, env_value)
}

/// [`load_token`] with the environment variable's value passed in, so tests
/// need not touch the process environment.
fn load_token_from(
    token_file: Option<&Path>,
    env_value: Option<Zeroizing<String>>,
) -> anyhow::Result<Option<Token>> {
    if let Some(path) = token_file {
        let shown = crate::sanitize::escape(&path.to_string_lossy());
        let mode = std::fs::metadata(path)
            .with_context(|| format!("cannot read token file {shown}"))?
            .mode();
        if mode & 0o077 != 0 {
            bail!(
                "token file {shown} can be read or written by others (mode {:04o}): \
                 run `chmod 600 {shown}`",
                mode & 0o7777
            );
        }
        let mut bytes = Zeroizing::new(
            std::fs::read(path).with_context(|| format!("cannot read token file {shown}"))?,
        );
        if bytes.ends_with(b"\r\n") {
            let n = bytes.len() - 2;
            bytes.truncate(n);
        } else if bytes.ends_with(b"\n") {
            let n = bytes.len() - 1;
            bytes.truncate(n);
        }
        if bytes.is_empty() {
            bail!("token file {shown} is empty");
        }
        check_strength(&bytes).with_context(|| format!("token file {shown}"))?;
        return Ok(Some(Token::new(bytes.to_vec())));
    }
    match env_value.filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => {
            check_strength(v.as_bytes()).context(TOKEN_ENV)?;
            Ok(Some(Token::new(v.as_bytes().to_vec())))
        }
    }
}

/// A fresh token: 128 random bits as 32 hex digits, easy to paste and to
/// keep in a file or an environment variable.
pub fn fresh_token() -> anyhow::Result<Zeroizing<String>> {
    let mut bits = Zeroizing::new([0u8; 16]);
    getrandom::fill(&mut *bits)
        .map_err(|e| anyhow::anyhow!("cannot get random bytes from the system: {e}"))?;
    let mut hex = Zeroizing::new(String::with_capacity(32));
    for b in bits.iter() {
        hex.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    Ok(hex)
}

/// `ftx token FILE`: writes a fresh token to `path`, created with mode 0600
/// from the start (no window in which others could read it); an existing
/// file is never overwritten.
pub fn write_token_file(path: &Path) -> anyhow::Result<()> {
    let shown = crate::sanitize::escape(&path.to_string_lossy());
    let token = fresh_token()?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create token file {shown}"))?;
    f.write_all(token.as_bytes())
        .and_then(|()| f.write_all(b"\n"))
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write token file {shown}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    const STRONG: &str = "5c1d0f6e8a2b47d3a9e0c4b1f7d26e83";

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
        //   print(hmac.new(b'secret', b'ftx-noise-psk-v3',
        //   hashlib.sha256).hexdigest())"
        assert_eq!(
            hex(&*Token::new(*b"secret").psk()),
            "2c994bcd8fc8c73a553f8ae6edb70f531acdc17d7c6bd59c9a611e2708602aa5"
        );
        assert_ne!(Token::new(*b"secreT").psk(), Token::new(*b"secret").psk());
        assert_ne!(Token::new(*b"secret\n").psk(), Token::new(*b"secret").psk());
    }

    #[test]
    fn fresh_tokens_are_128_bits_of_hex_differ_and_always_pass() {
        let a = fresh_token().expect("token");
        let b = fresh_token().expect("token");
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()), "{}", *a);
        assert_ne!(a, b);
        // The weakest output `ftx token` can print still passes: 32 hex
        // digits that are all digits but one letter, or one repeated half.
        for t in [
            &*a,
            "0123456789012345678901234567890a",
            "0000000000000000abcdef1234567899",
        ] {
            check_strength(t.as_bytes()).unwrap_or_else(|e| panic!("{t}: {e:#}"));
        }
        for _ in 0..1000 {
            let t = fresh_token().expect("token");
            check_strength(t.as_bytes()).expect("every fresh token passes");
        }
    }

    #[test]
    fn weak_tokens_are_refused_with_the_rule() {
        for weak in [
            &b"fox7"[..],
            b"hunter2",
            b"abcdefghijklmnopqrst",
            b"correcthorsebattery",
            b"00000000000000000000000000000000000000000",
            b"0123456789012345678901234567890123456",
            b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaabcdefghij",
        ] {
            let e = check_strength(weak).expect_err("weak");
            let m = format!("{e:#}");
            assert!(m.contains("too weak") && m.contains("128"), "{m}");
        }
        for strong in [
            STRONG.as_bytes(),
            b"s3cret-Zq81xP-7hWm2kRv0nTe",
            b"q1w2E3r4T5y6U7i8O9p0Az", // 22 characters of base64's alphabet
            &[
                0x9f, 0x01, 0xee, 0x42, 0x17, 0xa8, 0x33, 0xc0, 0x5d, 0x6b, 0x71, 0x02, 0xfe, 0x88,
                0x29, 0xd4,
            ],
        ] {
            check_strength(strong).unwrap_or_else(|e| panic!("{strong:?}: {e:#}"));
        }
        assert!(capacity_bits(b"fox7") < 25.0);
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
        // NamedTempFile is created 0600.
        f
    }

    fn env(v: &str) -> Option<Zeroizing<String>> {
        Some(Zeroizing::new(v.to_owned()))
    }

    #[test]
    fn file_token_has_one_trailing_newline_stripped() {
        for suffix in [&b"\n"[..], b"\r\n", b""] {
            let mut contents = STRONG.as_bytes().to_vec();
            contents.extend_from_slice(suffix);
            let f = token_file(&contents);
            let t = load_token_from(Some(f.path()), None)
                .expect("readable")
                .expect("a token");
            assert_eq!(t, Token::new(STRONG), "{suffix:?}");
        }
        let f = token_file(format!("{STRONG}\n\n").as_bytes());
        let t = load_token_from(Some(f.path()), None)
            .expect("ok")
            .expect("a token");
        assert_eq!(t, Token::new(format!("{STRONG}\n")));
    }

    #[test]
    fn file_wins_over_env() {
        let f = token_file(format!("{STRONG}\n").as_bytes());
        let t = load_token_from(Some(f.path()), env("s3cret-Zq81xP-7hWm2kRv0nTe"))
            .expect("readable")
            .expect("a token");
        assert_eq!(t, Token::new(STRONG));
    }

    #[test]
    fn env_token() {
        let t = load_token_from(None, env(STRONG))
            .expect("ok")
            .expect("a token");
        assert_eq!(t, Token::new(STRONG));
        assert_eq!(load_token_from(None, env("")).expect("ok"), None);
        assert_eq!(load_token_from(None, None).expect("ok"), None);
        let e = load_token_from(None, env("hunter2")).expect_err("weak");
        let m = format!("{e:#}");
        assert!(m.starts_with("FTX_TOKEN: the token is too weak"), "{m}");
        assert!(!m.contains("hunter2"), "{m}");
    }

    #[test]
    fn a_token_file_others_can_read_is_refused() {
        let f = token_file(format!("{STRONG}\n").as_bytes());
        for mode in [0o640, 0o604, 0o660, 0o644] {
            std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(mode))
                .expect("chmod");
            let e = load_token_from(Some(f.path()), None).expect_err("too open");
            let m = format!("{e:#}");
            assert!(m.contains(&f.path().display().to_string()), "{m}");
            assert!(
                m.contains("chmod 600") && m.contains(&format!("{mode:04o}")),
                "{m}"
            );
        }
        std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(0o400)).expect("chmod");
        assert!(load_token_from(Some(f.path()), None).expect("ok").is_some());
    }

    #[test]
    fn ftx_token_file_is_created_0600_and_never_overwritten() {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path().join("tok");
        write_token_file(&p).expect("written");
        let meta = std::fs::metadata(&p).expect("exists");
        assert_eq!(meta.mode() & 0o777, 0o600);
        let t = load_token_from(Some(&p), None)
            .expect("loads")
            .expect("a token");
        let e = write_token_file(&p).expect_err("exists");
        assert!(format!("{e:#}").contains("cannot create token file"));
        assert_eq!(
            load_token_from(Some(&p), None).expect("ok"),
            Some(t),
            "unchanged"
        );
    }

    #[test]
    fn empty_file_is_an_error_naming_the_file() {
        for contents in [&b""[..], b"\n", b"\r\n"] {
            let f = token_file(contents);
            let err = load_token_from(Some(f.path()), env(STRONG)).expect_err("empty token file");
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

//! Sealed sessions (PROTOCOL.md, "Encrypted sessions"): the Noise handshake
//! keyed by the token, and [`Wire`], the connection both roles talk
//! through, plain or sealed.
//!
//! The cryptography is the `snow` crate's (Noise, revision 34) with ring's
//! ciphers: `Noise_NNpsk0_25519_AESGCM_BLAKE2s` where both CPUs have AES
//! instructions, else `Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s` ([`Cipher`]).
//! Nothing here encrypts or hashes by itself; this module frames snow's
//! messages into records and keeps one counter per direction. A body the
//! sender has hashed is sealed in place instead ([`Wire::send_consuming`]),
//! by ring's AEAD with this side's key of snow's handshake: the records
//! snow would make, one copy of every byte fewer.
//!
//! A [`Wire`]'s clones share its two directions: every write goes out
//! whole under one lock (two threads answering on one connection never
//! interleave their frames or reuse a nonce), and the read state travels
//! with whichever clone reads (the handshake on one thread, a reader
//! thread after it).

use crate::auth::Token;
use crate::protocol::frame::encode;
use crate::protocol::Frame;
use std::io;
use zeroize::Zeroizing;

mod wire;
pub use wire::{OnReceive, Wire};

#[cfg(test)]
mod tests;

/// HELLO flags bit 0: the sender would rather have ChaCha20-Poly1305 (its
/// CPU has no AES instructions, or `--cipher` says so).
pub const HELLO_CHACHA: u32 = 1;
/// WELCOME flags bit 1 (with bit 0, sealed): the session uses
/// ChaCha20-Poly1305 instead of AES-256-GCM.
pub const WELCOME_CHACHA: u32 = 2;

/// The AEAD a sealed session's records use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    /// AES-256-GCM: about 9 GB/s a core with AES instructions, slow
    /// without them.
    AesGcm,
    /// ChaCha20-Poly1305: about 2.6 GB/s a core here, and the fast one on
    /// CPUs without AES instructions.
    ChaChaPoly,
}

impl Cipher {
    /// The Noise protocol name with this cipher.
    pub fn pattern(self) -> &'static str {
        match self {
            Cipher::AesGcm => "Noise_NNpsk0_25519_AESGCM_BLAKE2s",
            Cipher::ChaChaPoly => "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s",
        }
    }

    /// What this side asks for: `choice` if given, else AES-GCM where the
    /// CPU has AES instructions (with carry-less multiply, for GCM).
    pub fn preferred(choice: Option<Cipher>) -> Cipher {
        choice.unwrap_or(if has_aes() {
            Cipher::AesGcm
        } else {
            Cipher::ChaChaPoly
        })
    }
}

/// True when this CPU runs AES-GCM in hardware.
fn has_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}
/// Both handshake messages: an ephemeral key (32) and an empty payload's
/// tag (16).
pub const MESSAGE_LEN: usize = 48;
/// The prologue's first bytes: they bind the handshake to this protocol.
const PROLOGUE_LABEL: &[u8] = b"ftx-noise-v3";
/// The AEAD tag of each record.
const TAG_LEN: usize = 16;
/// The largest record (ciphertext and tag): Noise's message limit.
pub const MAX_RECORD: usize = 65535;
/// The most stream bytes one record carries.
pub const MAX_PLAIN: usize = MAX_RECORD - TAG_LEN;
/// A record's length prefix.
const HEADER_LEN: usize = 2;
/// Received ciphertext is read into a buffer of this many records.
const READ_RECORDS: usize = 4;
/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The peer's message does not decrypt under our token: the two tokens
    /// differ (or the HELLO/WELCOME were changed in flight).
    #[error("wrong token")]
    WrongToken,
    /// Anything else snow reports (no randomness, a bad parameter).
    #[error("the encrypted handshake failed: {0}")]
    Noise(#[from] snow::Error),
}

/// A record that cannot be opened: the session ends at it.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// It failed authentication (or its length is impossible).
    #[error(
        "record {0} of the session failed authentication: it was changed, dropped, replayed or reordered on the way"
    )]
    Tampered(u64),
    /// The connection ended inside it.
    #[error("connection closed in the middle of an encrypted record")]
    Cut,
    /// A frame or record that started did not complete within the
    /// timeout: the peer trickles it.
    #[error(
        "a frame (or record) started {0} s ago is still not complete: the peer trickles it (timed out)"
    )]
    Stalled(u64),
}

/// A session's keys, one per direction (snow's stateless transport: the
/// record number is the nonce, kept here), and this side's sending key
/// once more as a [`Sealer`], for records sealed in place.
pub struct Keys(snow::StatelessTransportState, Box<Sealer>);

/// This side's sending key as ring's AEAD (the one snow's resolver uses):
/// seals a record in the caller's buffer, where snow's `write_message`
/// first copies the plaintext into its output (a copy of every byte of a
/// body). The record is the one snow would make: Noise's `ENCRYPT(k, n,
/// "", plaintext)` with its nonce (checked against snow in the tests).
struct Sealer {
    key: ring::aead::LessSafeKey,
    cipher: Cipher,
}

impl Sealer {
    /// From the raw key of this side's sending direction.
    fn new(raw: &[u8; 32], cipher: Cipher) -> Result<Box<Sealer>, HandshakeError> {
        let algorithm = match cipher {
            Cipher::AesGcm => &ring::aead::AES_256_GCM,
            Cipher::ChaChaPoly => &ring::aead::CHACHA20_POLY1305,
        };
        let key = ring::aead::UnboundKey::new(algorithm, raw)
            .map_err(|_| HandshakeError::Noise(snow::Error::Input))?;
        Ok(Box::new(Sealer {
            key: ring::aead::LessSafeKey::new(key),
            cipher,
        }))
    }

    /// Seals `data` (at most [`MAX_PLAIN`] bytes) in place as record `n`,
    /// returning its tag. Noise's nonce (its section 12): four zero bytes,
    /// then `n`, big-endian for AES-GCM, little-endian for ChaChaPoly.
    fn seal_in_place(&self, n: u64, data: &mut [u8]) -> io::Result<[u8; TAG_LEN]> {
        if n == u64::MAX || data.len() > MAX_PLAIN {
            return Err(io::Error::other(
                "cannot seal a record: nonce or length out of range",
            ));
        }
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&match self.cipher {
            Cipher::AesGcm => n.to_be_bytes(),
            Cipher::ChaChaPoly => n.to_le_bytes(),
        });
        let tag = self
            .key
            .seal_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::empty(),
                data,
            )
            .map_err(|_| io::Error::other("cannot seal a record"))?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }
}

/// The sender's first record on the wire: READY alone, sealed as record 0
/// (length prefix, 5 bytes of frame, 16 of tag).
pub const READY_RECORD_LEN: usize = HEADER_LEN + 5 + TAG_LEN;

impl Keys {
    /// Opens the sender's first record (`record`: exactly
    /// [`READY_RECORD_LEN`] bytes, as they arrived) and checks that it
    /// holds READY alone. `Err(WrongToken)` when it does not open (the
    /// sender does not hold the session's keys); `Ok(false)` when it opens
    /// but holds something else.
    pub fn open_ready(&self, record: &[u8]) -> Result<bool, HandshakeError> {
        let Some((len, ct)) = record.split_first_chunk::<HEADER_LEN>() else {
            return Ok(false);
        };
        if usize::from(u16::from_be_bytes(*len)) != ct.len() || ct.len() != 5 + TAG_LEN {
            return Ok(false);
        }
        let mut plain = [0u8; 5 + TAG_LEN];
        let n = self
            .0
            .read_message(0, ct, &mut plain)
            .map_err(|_| HandshakeError::WrongToken)?;
        let mut ready = Vec::new();
        encode(&Frame::Ready, &mut ready);
        Ok(plain[..n] == ready[..])
    }
}

/// The prologue both sides feed the handshake: the label, then HELLO and
/// WELCOME as encoded on the wire.
pub fn prologue(hello: &Frame, welcome: &Frame) -> Vec<u8> {
    let mut p = PROLOGUE_LABEL.to_vec();
    encode(hello, &mut p);
    encode(welcome, &mut p);
    p
}

fn builder<'a>(
    psk: &'a [u8; 32],
    prologue: &'a [u8],
    cipher: Cipher,
) -> Result<snow::Builder<'a>, snow::Error> {
    let params: snow::params::NoiseParams = cipher.pattern().parse()?;
    snow::Builder::new(params).psk(0, psk)?.prologue(prologue)
}

/// The sender's half of the handshake, between its message and the reply.
pub struct Initiator(snow::HandshakeState, Cipher);

impl Initiator {
    /// Starts the handshake: message 1 (`psk, e`) to send in NOISE.
    pub fn start(
        token: &Token,
        prologue: &[u8],
        cipher: Cipher,
    ) -> Result<(Initiator, [u8; MESSAGE_LEN]), HandshakeError> {
        let psk = token.psk();
        let mut hs = builder(&psk, prologue, cipher)?.build_initiator()?;
        let mut msg = [0u8; MESSAGE_LEN];
        let n = hs.write_message(&[], &mut msg)?;
        if n != MESSAGE_LEN {
            return Err(snow::Error::Input.into());
        }
        Ok((Initiator(hs, cipher), msg))
    }

    /// Reads the receiver's message 2 (`e, ee`): the session's keys, or
    /// [`HandshakeError::WrongToken`] if the receiver does not hold ours.
    pub fn finish(mut self, reply: &[u8; MESSAGE_LEN]) -> Result<Keys, HandshakeError> {
        let mut payload = [0u8; MESSAGE_LEN];
        self.0
            .read_message(reply, &mut payload)
            .map_err(|_| HandshakeError::WrongToken)?;
        // The initiator sends with the first key of the split.
        let sealer = Sealer::new(&raw_split(&mut self.0).0, self.1)?;
        Ok(Keys(self.0.into_stateless_transport_mode()?, sealer))
    }
}

/// The receiver's half: checks message 1 and answers message 2.
pub fn respond(
    token: &Token,
    prologue: &[u8],
    cipher: Cipher,
    first: &[u8; MESSAGE_LEN],
) -> Result<(Keys, [u8; MESSAGE_LEN]), HandshakeError> {
    let psk = token.psk();
    let mut hs = builder(&psk, prologue, cipher)?.build_responder()?;
    let mut payload = [0u8; MESSAGE_LEN];
    hs.read_message(first, &mut payload)
        .map_err(|_| HandshakeError::WrongToken)?;
    let mut reply = [0u8; MESSAGE_LEN];
    let n = hs.write_message(&[], &mut reply)?;
    if n != MESSAGE_LEN {
        return Err(snow::Error::Input.into());
    }
    // The responder sends with the second key of the split.
    let sealer = Sealer::new(&raw_split(&mut hs).1, cipher)?;
    Ok((Keys(hs.into_stateless_transport_mode()?, sealer), reply))
}

/// The two transport keys of a finished handshake (initiator to responder,
/// responder to initiator), wiped when dropped.
fn raw_split(hs: &mut snow::HandshakeState) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
    let (a, b) = hs.dangerously_get_raw_split();
    (Zeroizing::new(a), Zeroizing::new(b))
}
/// The [`RecordError`] inside an I/O error, if it is one.
pub fn record_error(e: &io::Error) -> Option<&RecordError> {
    e.get_ref().and_then(|i| i.downcast_ref::<RecordError>())
}

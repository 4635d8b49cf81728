//! Frames of the protocol: the [`Frame`] enum and its parts. Their encoding
//! and decoding are in [`super::codec`], the meaning of their codes in
//! [`super::codes`].
//!
//! Every message is a frame:
//!
//! ```text
//! +--------+----------------+---------------------+
//! | type:u8| len:u32 (BE)   | payload[len]        |
//! +--------+----------------+---------------------+
//! integers are big-endian; str = len:u16 + bytes
//! ```
//!
//! BODY is the one frame followed by bytes outside it: its 20-byte payload
//! announces `length`, and exactly that many raw file bytes follow on the
//! wire. [`decode`] returns only the BODY header; the caller reads the raw
//! bytes.

/// Frame type bytes.
pub mod kind {
    /// S→R: magic, version, flags, agent.
    pub const HELLO: u8 = 0x01;
    /// R→S: version, flags, agent.
    pub const WELCOME: u8 = 0x02;
    /// S→R then R→S: the Noise handshake of a sealed session.
    pub const NOISE: u8 = 0x03;
    /// D→L: a sealed dialer's first record (key confirmation).
    pub const READY: u8 = 0x04;
    /// D→L, first after the handshake: the dialer offers.
    pub const PUSH: u8 = 0x05;
    /// D→L, first after the handshake: the listener offers these paths.
    pub const PULL: u8 = 0x06;
    /// D→L, first after the handshake: the dialer's entries, to compare.
    pub const CHECK: u8 = 0x07;
    /// S→R: an entry under a PULL's path that the server does not offer.
    pub const LEFT: u8 = 0x19;
    /// S→R: offer of a regular file.
    pub const FILE: u8 = 0x10;
    /// S→R: offer of a directory.
    pub const DIR: u8 = 0x11;
    /// S→R: offer of a symbolic link.
    pub const SYMLINK: u8 = 0x14;
    /// S→R: offer of a hard link to an earlier entry of the session.
    pub const LINK: u8 = 0x15;
    /// S→R: header of a file body; raw bytes follow.
    pub const BODY: u8 = 0x12;
    /// S→R: a run of zeros in a sparse file's body, sent as nothing.
    pub const HOLE: u8 = 0x16;
    /// S→R: the digest of a body sent without one, right after it.
    pub const DIGEST: u8 = 0x17;
    /// S→R: one extended attribute of the next FILE or DIR (`--xattrs`,
    /// `--acls`).
    pub const XATTR: u8 = 0x18;
    /// S→R: no more entries (in this session).
    pub const END: u8 = 0x13;
    /// R→S: send the file from an offset.
    pub const ACCEPT: u8 = 0x20;
    /// R→S: do not send the file.
    pub const SKIP: u8 = 0x21;
    /// R→S: the offer is refused.
    pub const REJECT: u8 = 0x22;
    /// R→S: outcome of a file or directory.
    pub const RESULT: u8 = 0x23;
    /// R→S: the MD5 of the prefix a resume starts after, sent before the
    /// ACCEPT when the partial was written without the file's digest.
    pub const PREFIX: u8 = 0x25;
    /// R→S: answer to END.
    pub const SUMMARY: u8 = 0x24;
    /// R→S: digests of the blocks of the file an offer would replace,
    /// before its ACCEPT (a delta update).
    pub const BLOCKS: u8 = 0x26;
    /// S→R: an extent of a body the receiver takes from the old file.
    pub const SAME: u8 = 0x1A;
    /// Both ways: fatal for the session.
    pub const ERROR: u8 = 0x7F;
}

pub use super::codec::{decode, encode, to_bytes};
pub use super::codes::{error_code, reject_code, result_status, skip_reason};

/// FILE flag bits.
pub mod file_flags {
    /// The body comes as BODY and HOLE extents (a sparse file).
    pub const SPARSE: u32 = 1;
    /// The `md5` field is zero: the digest follows the body, in a DIGEST
    /// frame (the sender hashes while it sends).
    pub const DIGEST_FOLLOWS: u32 = 2;
    /// The digest fields hold XXH3-128, not MD5 (`ftx send --hash xxh3`).
    pub const XXH3: u32 = 4;
    /// The size is not known (`size` is 0): the body is a run of BODY
    /// extents of any length, ended by the DIGEST (standard input). Only
    /// with [`DIGEST_FOLLOWS`].
    pub const STREAM: u32 = 8;
    /// Every bit this build knows: any other is refused.
    pub const KNOWN: u32 = SPARSE | DIGEST_FOLLOWS | XXH3 | STREAM;

    /// The digest algorithm of a FILE with these flags.
    pub fn algo(flags: u32) -> crate::digest::Algo {
        if flags & XXH3 != 0 {
            crate::digest::Algo::Xxh3
        } else {
            crate::digest::Algo::Md5
        }
    }
}

/// PULL flag bits.
pub mod pull_flags {
    /// List only (`ftx ls`): entries without bodies.
    pub const LIST: u32 = 1;
    /// Offer files with XXH3-128 digests (`ftx get --hash xxh3`).
    pub const XXH3: u32 = 2;
    /// Every bit this build knows: any other is refused.
    pub const KNOWN: u32 = LIST | XXH3;
}

/// CHECK flag bits.
pub mod check_flags {
    /// The receiver re-reads every file instead of trusting its cache.
    pub const DEEP: u32 = 1;
    /// Every bit this build knows: any other is refused.
    pub const KNOWN: u32 = DEEP;
}

/// END flag bits.
pub mod end_flags {
    /// The offering side has entries left for a next session.
    pub const MORE: u32 = 1;
    /// Every bit this build knows: any other is refused.
    pub const KNOWN: u32 = MORE;
}

/// The offer of a regular file.
///
/// ```text
/// id:u32 size:u64 mode:u32 mtime_s:i64 mtime_ns:u32 flags:u32 md5:[16] path:str
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHeader {
    /// Sender-chosen id, echoed in the answers.
    pub id: u32,
    /// Size of the whole file in bytes.
    pub size: u64,
    /// Unix mode; only `0o777` is ever applied.
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime_s: i64,
    /// Modification time, nanoseconds part.
    pub mtime_ns: u32,
    /// See [`file_flags`].
    pub flags: u32,
    /// MD5 of the whole file, computed before the offer.
    pub md5: [u8; 16],
    /// Wire name, raw: validated by the receiver with [`super::WireName`].
    pub path: Vec<u8>,
}

/// The offer of a directory.
///
/// ```text
/// id:u32 mode:u32 mtime_s:i64 mtime_ns:u32 path:str
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirHeader {
    /// Sender-chosen id.
    pub id: u32,
    /// Unix mode; only `0o777` is ever applied.
    pub mode: u32,
    /// Modification time, seconds.
    pub mtime_s: i64,
    /// Modification time, nanoseconds part.
    pub mtime_ns: u32,
    /// Wire name, raw.
    pub path: Vec<u8>,
}

/// One message of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// ```text
    /// magic:"FTX1" version:u16 flags:u32 agent:str
    /// ```
    Hello {
        /// Protocol version.
        version: u16,
        /// Feature flags (none defined yet).
        flags: u32,
        /// Free-form software name.
        agent: String,
    },
    /// ```text
    /// version:u16 flags:u32 nonce:[16] agent:str
    /// ```
    Welcome {
        /// Protocol version.
        version: u16,
        /// Bit 0: sealed (the receiver has a token: NOISE follows, then
        /// encrypted records).
        flags: u32,
        /// Fresh random bytes of this connection, bound into a sealed
        /// handshake's prologue (so it cannot be replayed).
        nonce: [u8; 16],
        /// Free-form software name.
        agent: String,
    },
    /// ```text
    /// message:[48]
    /// ```
    Noise {
        /// A Noise handshake message (see [`crate::secure`]).
        message: [u8; 48],
    },
    /// Empty: a sealed sender's first record holds it alone, proving
    /// the sender holds the session's keys.
    Ready,
    /// Empty: the dialer offers (the first frame after the handshake).
    Push,
    /// ```text
    /// flags:u32
    /// ```
    /// The dialer offers its entries to be compared, without bodies (the
    /// first frame after the handshake).
    Check {
        /// See [`check_flags`].
        flags: u32,
    },
    /// ```text
    /// flags:u32 part:u16 parts:u16 count:u16 count×path:str
    /// ```
    /// The listener offers these paths (the first frame after the
    /// handshake).
    Pull {
        /// See [`pull_flags`].
        flags: u32,
        /// Which part of a split pull (`0..=parts`; see PROTOCOL.md).
        part: u16,
        /// Parts of a split pull; 0: the whole request.
        parts: u16,
        /// Paths in the server's namespace, raw; none: every root.
        paths: Vec<Vec<u8>>,
    },
    /// ```text
    /// path:str message:str
    /// ```
    Left {
        /// Wire name of the entry not offered.
        path: Vec<u8>,
        /// Why.
        message: String,
    },
    /// A file offer.
    File(FileHeader),
    /// A directory offer.
    Dir(DirHeader),
    /// ```text
    /// id:u32 mtime_s:i64 mtime_ns:u32 path:str target:str
    /// ```
    Symlink {
        /// Sender-chosen id.
        id: u32,
        /// Modification time of the link itself, seconds.
        mtime_s: i64,
        /// Modification time, nanoseconds part.
        mtime_ns: u32,
        /// Wire name of the link, raw (validated like any name).
        path: Vec<u8>,
        /// What the link points to, raw, as stored in the link.
        target: Vec<u8>,
    },
    /// ```text
    /// id:u32 path:str target:str
    /// ```
    Link {
        /// Sender-chosen id.
        id: u32,
        /// Wire name of the new link, raw.
        path: Vec<u8>,
        /// Wire name of an earlier FILE of the same session, raw.
        target: Vec<u8>,
    },
    /// ```text
    /// id:u32 offset:u64 length:u64      then `length` raw bytes
    /// ```
    Body {
        /// Id of the accepted file.
        id: u32,
        /// Equals the accepted offset.
        offset: u64,
        /// Number of raw bytes that follow; `offset + length == size`.
        length: u64,
    },
    /// ```text
    /// id:u32 offset:u64 length:u64      no bytes follow: they are zeros
    /// ```
    Hole {
        /// Id of the accepted (sparse) file.
        id: u32,
        /// Where the zeros start: the end of the previous extent.
        offset: u64,
        /// How many zero bytes.
        length: u64,
    },
    /// ```text
    /// id:u32 offset:u64 length:u64      no bytes follow: the old file's
    /// ```
    Same {
        /// Id of the accepted file (which got BLOCKS).
        id: u32,
        /// Where the extent starts: the end of the previous one.
        offset: u64,
        /// How many bytes, taken from the old file at the same offsets.
        length: u64,
    },
    /// ```text
    /// id:u32 block:u32 first:u32 total:u32 digests:[16]*k
    /// ```
    Blocks {
        /// Id of the offer the next ACCEPT answers.
        id: u32,
        /// Bytes per block (a power of two, [`super::limits::DELTA_BLOCK_MIN`]
        /// to [`super::limits::DELTA_BLOCK_MAX`]).
        block: u32,
        /// Index of the first digest in this frame.
        first: u32,
        /// Whole blocks of the old file covered, in all frames.
        total: u32,
        /// XXH3-128 of each block, big-endian.
        digests: Vec<[u8; 16]>,
    },
    /// ```text
    /// id:u32 name:str value:str
    /// ```
    Xattr {
        /// Id of the FILE or DIR offer it belongs to (which follows it).
        id: u32,
        /// The attribute's name (`user.x`, `security.capability`,
        /// `system.posix_acl_access`), raw bytes.
        name: Vec<u8>,
        /// Its value, raw bytes.
        value: Vec<u8>,
    },
    /// ```text
    /// id:u32 md5:[16]
    /// ```
    Digest {
        /// Id of the file whose body was just sent.
        id: u32,
        /// MD5 of the whole file, as the sender read and sent it.
        md5: [u8; 16],
    },
    /// ```text
    /// flags:u32
    /// ```
    /// No more entries in this session.
    End {
        /// See [`end_flags`].
        flags: u32,
    },
    /// ```text
    /// id:u32 offset:u64
    /// ```
    Accept {
        /// Id of the offer.
        id: u32,
        /// Send from here (0 = whole file).
        offset: u64,
    },
    /// ```text
    /// id:u32 md5:[16]
    /// ```
    Prefix {
        /// Id of the offer the next ACCEPT answers.
        id: u32,
        /// MD5 of the partial's first `offset` bytes (the ACCEPT's).
        md5: [u8; 16],
    },
    /// ```text
    /// id:u32 reason:u8
    /// ```
    Skip {
        /// Id of the offer.
        id: u32,
        /// See [`skip_reason`].
        reason: u8,
    },
    /// ```text
    /// id:u32 code:u16 message:str
    /// ```
    Reject {
        /// Id of the offer.
        id: u32,
        /// See [`reject_code`].
        code: u16,
        /// Human-readable reason (peer text: escape before printing).
        message: String,
    },
    /// ```text
    /// id:u32 status:u8 md5:[16] message:str
    /// ```
    Result {
        /// Id of the entry.
        id: u32,
        /// See [`result_status`].
        status: u8,
        /// MD5 the receiver computed (zero for directories).
        md5: [u8; 16],
        /// Human-readable detail.
        message: String,
    },
    /// ```text
    /// files_ok:u32 files_failed:u32 bytes:u64
    /// ```
    Summary {
        /// Entries verified or skipped.
        files_ok: u32,
        /// Entries that failed or were refused.
        files_failed: u32,
        /// Body bytes received in the session.
        bytes: u64,
    },
    /// ```text
    /// code:u16 message:str
    /// ```
    Error {
        /// See [`error_code`].
        code: u16,
        /// Human-readable reason.
        message: String,
    },
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The type byte is not one of the protocol.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    /// The length field is above the control-frame cap.
    #[error("frame length {len} exceeds the limit of {max} bytes")]
    TooLong {
        /// Announced length.
        len: u32,
        /// The cap.
        max: u32,
    },
    /// The payload is shorter than its fields need.
    #[error("{0} frame is truncated")]
    Truncated(&'static str),
    /// The payload has bytes after its last field.
    #[error("{0} frame has {1} trailing bytes")]
    Trailing(&'static str, usize),
    /// HELLO does not start with "FTX1".
    #[error("bad magic: not an ftx peer")]
    BadMagic,
    /// A field out of its bounds.
    #[error("{0}")]
    Field(&'static str),
}

/// Name of a frame type, for messages.
pub fn kind_name(t: u8) -> &'static str {
    match t {
        kind::HELLO => "HELLO",
        kind::WELCOME => "WELCOME",
        kind::NOISE => "NOISE",
        kind::READY => "READY",
        kind::FILE => "FILE",
        kind::DIR => "DIR",
        kind::SYMLINK => "SYMLINK",
        kind::LINK => "LINK",
        kind::BODY => "BODY",
        kind::END => "END",
        kind::PUSH => "PUSH",
        kind::CHECK => "CHECK",
        kind::PULL => "PULL",
        kind::LEFT => "LEFT",
        kind::HOLE => "HOLE",
        kind::DIGEST => "DIGEST",
        kind::XATTR => "XATTR",
        kind::ACCEPT => "ACCEPT",
        kind::SKIP => "SKIP",
        kind::REJECT => "REJECT",
        kind::RESULT => "RESULT",
        kind::SUMMARY => "SUMMARY",
        kind::PREFIX => "PREFIX",
        kind::BLOCKS => "BLOCKS",
        kind::SAME => "SAME",
        kind::ERROR => "ERROR",
        _ => "unknown",
    }
}

impl Frame {
    /// The type byte of this frame.
    pub fn kind(&self) -> u8 {
        match self {
            Frame::Hello { .. } => kind::HELLO,
            Frame::Welcome { .. } => kind::WELCOME,
            Frame::Noise { .. } => kind::NOISE,
            Frame::Ready => kind::READY,
            Frame::File(_) => kind::FILE,
            Frame::Dir(_) => kind::DIR,
            Frame::Symlink { .. } => kind::SYMLINK,
            Frame::Link { .. } => kind::LINK,
            Frame::Body { .. } => kind::BODY,
            Frame::End { .. } => kind::END,
            Frame::Push => kind::PUSH,
            Frame::Check { .. } => kind::CHECK,
            Frame::Pull { .. } => kind::PULL,
            Frame::Left { .. } => kind::LEFT,
            Frame::Hole { .. } => kind::HOLE,
            Frame::Digest { .. } => kind::DIGEST,
            Frame::Xattr { .. } => kind::XATTR,
            Frame::Accept { .. } => kind::ACCEPT,
            Frame::Skip { .. } => kind::SKIP,
            Frame::Reject { .. } => kind::REJECT,
            Frame::Result { .. } => kind::RESULT,
            Frame::Summary { .. } => kind::SUMMARY,
            Frame::Prefix { .. } => kind::PREFIX,
            Frame::Blocks { .. } => kind::BLOCKS,
            Frame::Same { .. } => kind::SAME,
            Frame::Error { .. } => kind::ERROR,
        }
    }

    /// Name of this frame's type, for messages.
    pub fn name(&self) -> &'static str {
        kind_name(self.kind())
    }
}

//! Bounds on every field of the protocol (version [`VERSION`]), checked before anything is
//! allocated or written.

/// Largest payload of a control frame (every frame except BODY's raw bytes).
pub const MAX_CONTROL_PAYLOAD: u32 = 64 * 1024;
/// Bytes of the frame header: type:u8 + len:u32.
pub const FRAME_HEADER_LEN: usize = 5;
/// Largest wire name, in bytes.
pub const MAX_NAME_LEN: usize = 4096;
/// Largest single path component, in bytes.
pub const MAX_COMPONENT_LEN: usize = 255;
/// Most components (directory depth + 1) in a wire name.
pub const MAX_DEPTH: usize = 128;
/// HELLO flags this build knows: bit 0, the sender would rather have
/// ChaCha20-Poly1305 ([`crate::secure::HELLO_CHACHA`]). Any other bit is
/// refused.
pub const HELLO_FLAGS: u32 = 1;
/// WELCOME flags this build knows: bit 0, the session is sealed
/// ([`crate::auth::FLAG_SEALED`]); bit 1, with ChaCha20-Poly1305
/// ([`crate::secure::WELCOME_CHACHA`]). Any other bit is refused.
pub const WELCOME_FLAGS: u32 = 3;
/// Entries (FILE and DIR offers) one session may offer: a receiver ends a
/// session that offers more; a sender with more opens another session.
pub const MAX_SESSION_ENTRIES: usize = 1 << 20;
/// Accepted files one session may have waiting for their BODY: a FILE
/// offered beyond that is a protocol error. The sender keeps no more
/// offers waiting for their answer (a file it accepted has its body on
/// the way before any offer sent after the ACCEPT was read).
pub const MAX_AWAITING_BODIES: usize = 1024;
/// Most paths one PULL may name.
pub const MAX_PULL_PATHS: usize = 1024;
/// Smallest block of a delta update (BLOCKS).
pub const DELTA_BLOCK_MIN: u32 = 64 << 10;
/// Largest block of a delta update.
pub const DELTA_BLOCK_MAX: u32 = 64 << 20;
/// Most blocks one BLOCKS list may cover.
pub const DELTA_BLOCKS_MAX: u32 = 1 << 16;
/// Most digests in one BLOCKS frame (so it fits the control cap).
pub const DELTA_DIGESTS_PER_FRAME: usize = 4000;
/// Protocol version spoken by this build.
pub const VERSION: u16 = 3;
/// Magic at the start of HELLO.
pub const MAGIC: [u8; 4] = *b"FTX1";
/// Software name sent in HELLO and WELCOME.
pub const AGENT: &str = concat!("ftx/", env!("CARGO_PKG_VERSION"));

//! The ftx wire protocol (PROTOCOL.md), sans I/O: frames, their encoding and decoding,
//! wire names and the bounds on every field. Nothing here touches a socket, a
//! file or a terminal, so it can be tested and fuzzed byte by byte.
//!
//! See PROTOCOL.md at the project root for the prose description.

pub mod codec;
pub mod codes;
pub mod frame;
pub mod limits;
pub mod name;

pub use codes::{ErrorCode, Reject, SkipReason, Status};
pub use frame::{decode, encode, DirHeader, FileHeader, Frame, FrameError};
pub use name::{NameError, WireName};

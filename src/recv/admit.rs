//! The answer to an offer, as pure functions: no sockets, no files.

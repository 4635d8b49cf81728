//! ftx's integration tests, one binary (as ripgrep's `tests/tests.rs`):
//! the harness in [`common`] compiles once. Each module is a topic; most
//! tests run `ftx recv` and `ftx send` as two real processes over loopback,
//! real files in temporary directories.

// Each topic uses part of the harness.
#[allow(dead_code)]
mod common;

mod attacks;
mod attrs;
mod bench_smoke;
mod changing;
mod check;
mod ci_recipe;
mod cli;
mod delta;
mod durable;
mod errors;
mod harness;
mod hostile;
mod http;
mod json;
mod listening;
mod manifest;
mod pull;
mod resume;
mod reverse;
mod sealed;
mod security;
mod serve;
mod staged;
mod stream;
mod transfer;
mod trees;

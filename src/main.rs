//! The `ftx` binary: parse the command line, run, print errors as
//! "ftx: ..." and map the outcome to the documented exit status.

use std::process::ExitCode;

// Small files cost a few allocations each, freed by another thread than
// the one that made them (the body travels from the session thread to the
// commit thread): glibc's arenas then take a lock on every free.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = ftx::cli::Cli::parse_checked();
    let exit = match ftx::run(cli) {
        Ok(exit) => exit,
        Err(err) => {
            eprintln!("ftx: {err:#}");
            ftx::exit::for_error(&err)
        }
    };
    ExitCode::from(u8::try_from(exit.code()).unwrap_or(1))
}

//! The `ftx` binary: parse the command line, run, print errors as
//! "ftx: ..." and map the outcome to the documented exit status.

use std::process::ExitCode;

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

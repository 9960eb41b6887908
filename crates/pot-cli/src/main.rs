//! The `pot` binary: the commands live in the library (`pot_cli::execute`).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // `pot challenges | head`: a closed stdout ends pot quietly, as it does other Unix tools,
    // instead of a panic from println! (Rust ignores SIGPIPE by default).
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match pot_cli::execute(pot_cli::Cli::parse()) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}

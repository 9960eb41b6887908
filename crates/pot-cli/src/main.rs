//! The `pot` binary: a thin clap front end over the stage crates.

mod challenges;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for usage errors and bad input (clap uses 2 as well).
pub const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(name = "pot", version, about = "Decide whether two language models are the same model")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a new secret master key (32 random bytes, hex, mode 0600).
    Keygen(challenges::KeygenArgs),
    /// Derive the secret challenge prompts of a run, or commit to / check a challenge set.
    Challenges(challenges::ChallengesArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen(args) => challenges::keygen(args),
        Command::Challenges(args) => challenges::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

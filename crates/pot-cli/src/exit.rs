//! Exit codes of `pot`, documented in the README.

pub const SAME: u8 = 0;
pub const DIFFERENT: u8 = 1;
pub const USAGE: u8 = 2;
pub const UNDECIDED: u8 = 3;
pub const LOAD_FAILED: u8 = 4;
/// Refused by the memory plan before loading, or stopped by the memory monitor.
pub const MEMORY: u8 = 5;
pub const RUNTIME: u8 = 6;

pub fn of_verdict(verdict: Option<pot_stats::Verdict>) -> u8 {
    match verdict {
        Some(pot_stats::Verdict::Same) => SAME,
        Some(pot_stats::Verdict::Different) => DIFFERENT,
        Some(pot_stats::Verdict::Undecided) | None => UNDECIDED,
    }
}

/// An error that carries the exit code it should end the process with.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Self {
        let error = error.into();
        let code = if error.downcast_ref::<pot_formats::FormatError>().is_some() {
            LOAD_FAILED
        } else {
            USAGE
        };
        Failure { code, error }
    }
}

pub fn fail(code: u8, error: anyhow::Error) -> Failure {
    Failure { code, error }
}

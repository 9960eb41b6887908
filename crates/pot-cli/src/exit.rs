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

/// The exit code an error means: bad input (a model, key, fingerprint or file that cannot be
/// used as given) 4; a failure of the machine (I/O, randomness) 6; anything else is an argument
/// the user gave that pot refuses, 2. Errors that need another code use [`fail`].
impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Self {
        use pot_challenge_kdf::KeyError;
        use pot_scoring::ScoringError;
        let error = error.into();
        let code = if error.downcast_ref::<pot_formats::FormatError>().is_some() {
            LOAD_FAILED
        } else if let Some(e) = error.downcast_ref::<KeyError>() {
            match e {
                KeyError::Unreadable { .. } | KeyError::Malformed { .. } => LOAD_FAILED,
                KeyError::Exists(_) => USAGE,
                KeyError::Unwritable { .. } | KeyError::Random(_) => RUNTIME,
            }
        } else if let Some(e) = error.downcast_ref::<ScoringError>() {
            match e {
                ScoringError::Fingerprint(_) => LOAD_FAILED,
                _ => RUNTIME,
            }
        } else if error.downcast_ref::<std::io::Error>().is_some()
            || error.downcast_ref::<serde_json::Error>().is_some()
        {
            RUNTIME
        } else {
            USAGE
        };
        Failure { code, error }
    }
}

pub fn fail(code: u8, error: anyhow::Error) -> Failure {
    Failure { code, error }
}

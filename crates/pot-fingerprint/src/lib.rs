//! What pot keeps of a model's outputs and how two sets of outputs are compared, without any
//! inference backend: per-position records (top-k log-probs, remaining mass, the text's own
//! token), the authenticated `.potfp` file that stores them ([`fingerprint`]) and the bounded
//! per-challenge scores ([`score`]). `pot-scoring` produces records with burn; a serving engine's
//! log-probs and a fingerprint file produce them too, and all are scored by the same functions.

pub mod fingerprint;
pub mod score;

pub use fingerprint::{ChallengeRecord, Fingerprint, FingerprintHeader, MAX_TOP_K, PositionRecord};
pub use score::{
    ChallengeScore, DEFAULT_PREFIX, DEFAULT_TOP_K, coarse_tvd, coarse_tvd_known,
    coarse_tvd_records, full_tvd, score_challenge, score_known, score_records, summarise_position,
};

/// A fingerprint that cannot be read, or that does not fit the comparison it is used in.
#[derive(Debug, thiserror::Error)]
pub enum FingerprintError {
    #[error("fingerprint file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("the fingerprint does not match this comparison: {0}")]
    Mismatch(String),
}

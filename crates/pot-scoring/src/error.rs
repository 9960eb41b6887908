//! Errors of scoring: they are reported, never turned into scores.

#[derive(Debug, thiserror::Error)]
pub enum ScoringError {
    #[error(transparent)]
    Format(#[from] pot_formats::FormatError),
    #[error("token id {id} is outside the model's vocabulary of {vocab}")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error("tokenizer failed on challenge {challenge}: {reason}")]
    Tokenize { challenge: String, reason: String },
    #[error("burn backend error: {0}")]
    Backend(String),
    #[error("{0}")]
    BackendUnavailable(String),
    #[error("vocabularies differ: {0}")]
    VocabularyMismatch(String),
    #[error("cancelled by the memory monitor")]
    Cancelled,
    #[error(transparent)]
    Fingerprint(#[from] pot_fingerprint::FingerprintError),
}

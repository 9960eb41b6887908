//! Teacher-forced scoring: burn forward passes over real model weights, per-position next-token
//! log-probabilities, bounded per-challenge scores and fingerprints.
//!
//! Flow: [`Engine::load`] a model, [`fingerprint`] it on challenges (top-k log-probs per
//! position), release it; load the candidate and [`score_candidate`] it against the fingerprint,
//! a batch at a time. Only [`engine`] touches burn.

pub mod emulate;
pub mod engine;
pub mod error;
pub mod kernels;
pub mod matmul;
pub mod scorer;
pub mod throughput;
pub mod weights;

pub use emulate::{Arithmetic, KvCache};
pub use engine::{Backend, Engine, SequenceLogProbs, emulation_supported};
pub use error::ScoringError;
pub use pot_fingerprint::{
    ChallengeRecord, ChallengeScore, DEFAULT_PREFIX, DEFAULT_TOP_K, Fingerprint, FingerprintError,
    FingerprintHeader, PositionRecord, coarse_tvd, coarse_tvd_records, fingerprint, full_tvd,
    score, score_records,
};
pub use scorer::{
    FingerprintOptions, check_same_vocabulary, config_sha256, encode_challenge, fingerprint,
    score_candidate, score_candidate_against,
};
pub use weights::{Int8Store, Residency};

//! Teacher-forced scoring: burn forward passes over real model weights, per-position next-token
//! log-probabilities, bounded per-challenge scores and fingerprints.

pub mod engine;
pub mod error;

pub use engine::{Backend, Engine, SequenceLogProbs};
pub use error::ScoringError;

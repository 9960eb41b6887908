//! pot-scoring

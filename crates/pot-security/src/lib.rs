//! Security evidence beside the statistics: configuration hashes, TLSH fuzzy hashes of the
//! weights and a tokenizer compatibility verdict (docs/SECURITY.md).

pub mod config;
pub mod fuzzy;
pub mod tokenizer;

pub use config::{ConfigComparison, ConfigHashes, canonical_json};
pub use fuzzy::{FuzzyComparison, FuzzyHash, MATCH_MAX_DISTANCE, ModelTlsh};
pub use tokenizer::{TokenizerReport, TokenizerVerdict, compare_tokenizers};

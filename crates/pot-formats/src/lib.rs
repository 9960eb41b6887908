//! Model files without burn: GGUF (v2/v3) with dequantisers, Hugging Face safetensors
//! directories, configurations, tokenizers, model descriptions and conversion to safetensors.
//!
//! Everything that reads a model (scoring, security, provenance, the memory governor) goes
//! through [`Model`]: one internal tensor naming (Hugging Face's), f32 values on demand, raw
//! bytes borrowed from the memory map, and a [`ModelDescription`] computed from headers alone.

pub mod atomic;
pub mod config;
pub mod convert;
pub mod dtype;
pub mod error;
pub mod fixtures;
pub mod gguf;
pub mod gguf_write;
pub mod hub;
pub mod model;
pub mod names;
pub mod quantize;
pub mod quantize_file;
pub mod rope;
pub mod tokenizer;
pub mod variants;

pub use atomic::write_atomically;
pub use config::{Architecture, ModelConfig};
pub use dtype::DType;
pub use error::{FormatError, Result};
pub use model::{Format, Model, ModelDescription, StoredRows, TensorInfo};
pub use rope::RopeScaling;
pub use tokenizer::Tokenizer;

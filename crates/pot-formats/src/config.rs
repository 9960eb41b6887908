//! The architecture hyper-parameters of a model, from config.json or from GGUF metadata.

use std::path::Path;

use serde_json::{Value as Json, json};

use crate::error::{FormatError, Result};
use crate::gguf::GgufFile;

/// Transformer families the forward pass implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// LLaMA / SmolLM2 / Mistral: RMSNorm, SwiGLU, RoPE, grouped-query attention, no biases.
    Llama,
    /// Qwen2: the LLaMA block with biases on the q, k and v projections.
    Qwen2,
}

impl Architecture {
    pub const SUPPORTED: &'static str = "llama, mistral, qwen2";

    pub fn name(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
        }
    }

    /// The architecture a config names, or an error naming the file and the supported ones.
    fn parse(path: &Path, name: &str) -> Result<Self> {
        Self::from_name(name).ok_or_else(|| FormatError::UnsupportedArchitecture {
            path: path.into(),
            arch: name.into(),
            supported: Self::SUPPORTED.into(),
        })
    }

    fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "llama" | "mistral" | "llamaforcausallm" | "mistralforcausallm" => {
                Some(Architecture::Llama)
            }
            "qwen2" | "qwen2forcausallm" => Some(Architecture::Qwen2),
            _ => None,
        }
    }

    /// Whether q, k and v projections carry biases.
    pub fn qkv_bias(self) -> bool {
        self == Architecture::Qwen2
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    pub tie_word_embeddings: bool,
    pub max_position_embeddings: usize,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

impl ModelConfig {
    pub fn from_hf_json(path: &Path, text: &str) -> Result<Self> {
        let invalid = |reason: String| FormatError::InvalidConfig {
            path: path.into(),
            reason,
        };
        let json: Json =
            serde_json::from_str(text).map_err(|e| invalid(format!("not JSON ({e})")))?;
        let arch_name = json["model_type"]
            .as_str()
            .or_else(|| json["architectures"][0].as_str())
            .ok_or_else(|| invalid("neither model_type nor architectures is set".into()))?;
        let architecture = Architecture::parse(path, arch_name)?;
        let usize_field = |key: &str| -> Result<usize> {
            json[key]
                .as_u64()
                .map(|v| v as usize)
                .ok_or_else(|| invalid(format!("`{key}` is missing or not a whole number")))
        };
        let hidden_size = usize_field("hidden_size")?;
        let num_attention_heads = usize_field("num_attention_heads")?;
        let config = Self {
            architecture,
            hidden_size,
            intermediate_size: usize_field("intermediate_size")?,
            num_hidden_layers: usize_field("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads: json["num_key_value_heads"]
                .as_u64()
                .map_or(num_attention_heads, |v| v as usize),
            head_dim: json["head_dim"]
                .as_u64()
                .map_or(hidden_size / num_attention_heads.max(1), |v| v as usize),
            vocab_size: usize_field("vocab_size")?,
            rope_theta: json["rope_theta"].as_f64().unwrap_or(10_000.0),
            rms_norm_eps: json["rms_norm_eps"].as_f64().unwrap_or(1e-6),
            tie_word_embeddings: json["tie_word_embeddings"].as_bool().unwrap_or(false),
            max_position_embeddings: json["max_position_embeddings"].as_u64().unwrap_or(2048)
                as usize,
            bos_token_id: json["bos_token_id"].as_u64().map(|v| v as u32),
            eos_token_id: json["eos_token_id"].as_u64().map(|v| v as u32),
        };
        config.validate(path)?;
        Ok(config)
    }

    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let path = file.path();
        let arch_name = file
            .get("general.architecture")
            .and_then(|v| v.as_str())
            .ok_or_else(|| FormatError::InvalidConfig {
                path: path.into(),
                reason: "general.architecture is missing".into(),
            })?;
        let architecture = Architecture::parse(path, arch_name)?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let num = |k: &str| -> Result<usize> {
            file.get(&key(k))
                .and_then(|v| v.as_u64())
                .map(|v| v as usize)
                .ok_or_else(|| FormatError::InvalidConfig {
                    path: path.into(),
                    reason: format!("metadata `{}` is missing", key(k)),
                })
        };
        let hidden_size = num("embedding_length")?;
        let num_attention_heads = num("attention.head_count")?;
        let vocab_size = match file.get(&key("vocab_size")).and_then(|v| v.as_u64()) {
            Some(v) => v as usize,
            None => file
                .get("tokenizer.ggml.tokens")
                .and_then(|v| v.as_array())
                .map(|a| a.len())
                .ok_or_else(|| FormatError::InvalidConfig {
                    path: path.into(),
                    reason: "neither vocab_size nor tokenizer.ggml.tokens is present".into(),
                })?,
        };
        let config = Self {
            architecture,
            hidden_size,
            intermediate_size: num("feed_forward_length")?,
            num_hidden_layers: num("block_count")?,
            num_attention_heads,
            num_key_value_heads: num("attention.head_count_kv").unwrap_or(num_attention_heads),
            head_dim: num("attention.key_length")
                .unwrap_or(hidden_size / num_attention_heads.max(1)),
            vocab_size,
            rope_theta: file
                .get(&key("rope.freq_base"))
                .and_then(|v| v.as_f64())
                .unwrap_or(10_000.0),
            rms_norm_eps: file
                .get(&key("attention.layer_norm_rms_epsilon"))
                .and_then(|v| v.as_f64())
                .unwrap_or(1e-6),
            tie_word_embeddings: file.tensor("output.weight").is_none(),
            max_position_embeddings: num("context_length").unwrap_or(2048),
            bos_token_id: file
                .get("tokenizer.ggml.bos_token_id")
                .and_then(|v| v.as_u64())
                .map(|v| v as u32),
            eos_token_id: file
                .get("tokenizer.ggml.eos_token_id")
                .and_then(|v| v.as_u64())
                .map(|v| v as u32),
        };
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let invalid = |reason: String| {
            Err(FormatError::InvalidConfig {
                path: path.into(),
                reason,
            })
        };
        if self.hidden_size == 0 || self.num_hidden_layers == 0 || self.vocab_size == 0 {
            return invalid(
                "hidden_size, num_hidden_layers and vocab_size must be positive".into(),
            );
        }
        if self.num_attention_heads == 0
            || self.num_key_value_heads == 0
            || !self
                .num_attention_heads
                .is_multiple_of(self.num_key_value_heads)
        {
            return invalid(format!(
                "{} attention heads cannot be grouped over {} key/value heads",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return invalid(format!("head_dim {} must be even for RoPE", self.head_dim));
        }
        Ok(())
    }

    /// A Hugging Face config.json for this configuration (what `pot convert` writes).
    pub fn to_hf_json(&self, torch_dtype: &str) -> Json {
        let (arch, model_type) = match self.architecture {
            Architecture::Llama => ("LlamaForCausalLM", "llama"),
            Architecture::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
        };
        json!({
            "architectures": [arch],
            "model_type": model_type,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab_size,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "hidden_act": "silu",
            "torch_dtype": torch_dtype,
        })
    }
}

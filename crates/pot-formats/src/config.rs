//! The forward-pass parameters of a model, from config.json (both layouts transformers has
//! written: 4.x top-level keys and `rope_scaling`, 5.x `rope_parameters`) or from GGUF metadata.
//!
//! Implement or refuse, never default: every key that changes what the forward pass computes is
//! either read and implemented, or refused with an error naming the key and its value. A key may
//! be absent only where transformers (for config.json, per `model_type`) or llama.cpp (for GGUF)
//! uses the same default; those defaults are listed in docs/SCORING.md with their source.

use std::path::Path;

use serde_json::{Map, Value as Json, json};

use crate::error::{FormatError, Result};
use crate::gguf::GgufFile;
use crate::rope::{RopeScaling, yarn_mscale};

/// Transformer families the forward pass implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// LLaMA / SmolLM2 / Mistral: RMSNorm, SwiGLU, RoPE, grouped-query attention; biases and a
    /// sliding window where the config declares them.
    Llama,
    /// Qwen2: the LLaMA block with biases on the q, k and v projections.
    Qwen2,
    /// Qwen3: the LLaMA block with an RMSNorm over each query and key head (`q_norm`, `k_norm`)
    /// before RoPE, and `head_dim` independent of the hidden size.
    Qwen3,
    /// Gemma 3 (text): the embedding scaled by sqrt(hidden), RMSNorms multiplying by `1 + w`,
    /// q/k norms, norms after attention and after the MLP as well as before, a GELU-gated MLP,
    /// sliding-window layers with their own RoPE base between full-attention layers.
    Gemma3,
    /// Phi-3: the LLaMA block with q/k/v fused into one `qkv_proj` and gate/up into one
    /// `gate_up_proj`.
    Phi3,
    /// Mixtral: the Mistral block with a sparse mixture of experts for the MLP (a router picks
    /// the top-k experts per token; their outputs are summed, weighted by the renormalised
    /// router probabilities).
    Mixtral,
    /// GPT-2: learned absolute positions, LayerNorm (with biases), q/k/v fused in `c_attn` and
    /// all projections stored as `Conv1D` (`[in, out]`), a plain GELU MLP, biases everywhere,
    /// no RoPE.
    Gpt2,
}

impl Architecture {
    pub const SUPPORTED: &'static str =
        "llama, mistral, qwen2, qwen3, gemma3 (text), phi3, mixtral";

    pub fn name(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
            Architecture::Qwen3 => "qwen3",
            Architecture::Gemma3 => "gemma3",
            Architecture::Phi3 => "phi3",
            Architecture::Mixtral => "mixtral",
            Architecture::Gpt2 => "gpt2",
        }
    }

    /// GPT-2's family: LayerNorm with biases instead of RMSNorm, learned absolute positions
    /// instead of RoPE, a non-gated MLP, `Conv1D` weights under `transformer.` names.
    pub fn gpt2_family(self) -> bool {
        self == Architecture::Gpt2
    }

    /// Whether each query and key head is RMS-normalised (with its own weight) before RoPE.
    pub fn qk_norm(self) -> bool {
        matches!(self, Architecture::Qwen3 | Architecture::Gemma3)
    }

    /// Whether the attention and MLP outputs are normalised again before the residual add
    /// (Gemma's `post_attention_layernorm` / `post_feedforward_layernorm`); the MLP's input
    /// norm is then `pre_feedforward_layernorm`.
    pub fn sandwich_norms(self) -> bool {
        self == Architecture::Gemma3
    }

    /// Whether the stored RMSNorm weights are `w` in `x * (1 + w)` (Gemma in Hugging Face
    /// files; llama.cpp's converter stores `1 + w`). pot reads them as the multiplier `1 + w`.
    pub fn norm_weight_offset(self) -> bool {
        self == Architecture::Gemma3
    }

    /// Whether q/k/v and gate/up are stored fused (`qkv_proj`, `gate_up_proj`).
    pub fn fused_projections(self) -> bool {
        self == Architecture::Phi3
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
            "qwen3" | "qwen3forcausallm" => Some(Architecture::Qwen3),
            "gemma3" | "gemma3_text" | "gemma3forcausallm" => Some(Architecture::Gemma3),
            "phi3" | "phi3forcausallm" => Some(Architecture::Phi3),
            "mixtral" | "mixtralforcausallm" => Some(Architecture::Mixtral),
            "gpt2" | "gpt2lmheadmodel" => Some(Architecture::Gpt2),
            _ => None,
        }
    }
}

/// Upper bounds on sizes read from a config, so a crafted file is refused before anything is
/// allocated from it (the largest released dense models are well inside them).
const MAX_LAYERS: usize = 1_024;
const MAX_HIDDEN: usize = 1 << 17;
const MAX_HEADS: usize = 4_096;
const MAX_VOCAB: usize = 1 << 22;
const MAX_EXPERTS: usize = 1_024;

/// Everything the forward pass computes with. [`ModelConfig::forward_parameters`] is what the
/// architecture hash covers, so two files describing the same function hash equal.
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
    pub rope_scaling: RopeScaling,
    pub rms_norm_eps: f64,
    pub tie_word_embeddings: bool,
    /// Attention sees at most this many keys back (the query's own position included).
    pub sliding_window: Option<usize>,
    /// Which layers the window applies to; `None`: every layer (Mistral). Gemma 3 alternates
    /// sliding-window and full-attention layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_layers: Option<Vec<bool>>,
    /// RoPE base of the sliding-window layers (default scaling), where it is not `rope_theta`
    /// (Gemma 3's local layers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_rope_theta: Option<f64>,
    /// Attention scores are scaled by `query_pre_attn_scalar^-1/2` instead of `head_dim^-1/2`
    /// (Gemma 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_pre_attn_scalar: Option<f64>,
    /// Experts per layer of a mixture-of-experts MLP (Mixtral); 0 for a dense MLP.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub num_experts: usize,
    /// Experts each token is routed to.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub experts_per_token: usize,
    /// Biases on the q, k and v projections.
    pub qkv_bias: bool,
    /// Bias on the attention output projection.
    pub o_bias: bool,
    /// Biases on the gate, up and down projections.
    pub mlp_bias: bool,
    /// The MLP's gate activation: `silu` (SwiGLU) or `gelu_tanh` (GELU, tanh approximation:
    /// transformers' `gelu_pytorch_tanh` / `gelu_new`); others are refused.
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

/// Fields added after the first release are left out of the serialised config where unset, so
/// a config's serialisation (and `config_sha256` of it) is what it was before they existed.
fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Typed reads of config.json keys: a key present with the wrong type is an error, never a
/// default.
struct HfKeys<'a> {
    path: &'a Path,
    json: &'a Map<String, Json>,
}

impl<'a> HfKeys<'a> {
    fn invalid(&self, reason: String) -> FormatError {
        FormatError::InvalidConfig {
            path: self.path.into(),
            reason,
        }
    }

    fn present(&self, key: &str) -> Option<&'a Json> {
        self.json.get(key).filter(|v| !v.is_null())
    }

    fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        self.present(key)
            .map(|v| {
                v.as_u64()
                    .and_then(|v| usize::try_from(v).ok())
                    .ok_or_else(|| self.invalid(format!("`{key}` = {v} is not a whole number")))
            })
            .transpose()
    }

    fn usize(&self, key: &str) -> Result<usize> {
        self.usize_opt(key)?
            .ok_or_else(|| self.invalid(format!("`{key}` is missing")))
    }

    fn f64_opt(&self, key: &str) -> Result<Option<f64>> {
        self.present(key)
            .map(|v| {
                v.as_f64()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| self.invalid(format!("`{key}` = {v} is not a finite number")))
            })
            .transpose()
    }

    fn bool_opt(&self, key: &str) -> Result<Option<bool>> {
        self.present(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| self.invalid(format!("`{key}` = {v} is not true or false")))
            })
            .transpose()
    }
}

/// The transformers defaults pot relies on, per `model_type` (transformers 5.x
/// `configuration_<type>.py`; listed in docs/SCORING.md).
struct HfDefaults {
    num_key_value_heads: Option<usize>,
    /// `None`: hidden_size / num_attention_heads.
    head_dim: Option<usize>,
    max_position_embeddings: usize,
    sliding_window: Option<usize>,
    rms_norm_eps: f64,
    rope_theta: f64,
    tie_word_embeddings: bool,
}

/// LlamaConfig: num_key_value_heads=None -> num_attention_heads, max 2048, eps 1e-6, theta 1e4.
const LLAMA_DEFAULTS: HfDefaults = HfDefaults {
    num_key_value_heads: None,
    head_dim: None,
    max_position_embeddings: 2048,
    sliding_window: None,
    rms_norm_eps: 1e-6,
    rope_theta: 10_000.0,
    tie_word_embeddings: false,
};

fn hf_defaults(model_type: &str) -> HfDefaults {
    match model_type {
        // MistralConfig: num_key_value_heads=8, max_position_embeddings=4096*32, sliding_window=4096.
        "mistral" => HfDefaults {
            num_key_value_heads: Some(8),
            max_position_embeddings: 4096 * 32,
            sliding_window: Some(4096),
            ..LLAMA_DEFAULTS
        },
        // Qwen3Config: num_key_value_heads=32, head_dim=128 (not hidden / heads),
        // max_position_embeddings=32768.
        "qwen3" => HfDefaults {
            num_key_value_heads: Some(32),
            head_dim: Some(128),
            max_position_embeddings: 32768,
            ..LLAMA_DEFAULTS
        },
        // Qwen2Config: num_key_value_heads=32, max_position_embeddings=32768.
        "qwen2" => HfDefaults {
            num_key_value_heads: Some(32),
            max_position_embeddings: 32768,
            ..LLAMA_DEFAULTS
        },
        // Gemma3TextConfig: num_key_value_heads=4, head_dim=256, max 131072, sliding_window=4096,
        // tie_word_embeddings=True, theta 1e6 (full layers; local layers 1e4).
        "gemma3" => HfDefaults {
            num_key_value_heads: Some(4),
            head_dim: Some(256),
            max_position_embeddings: 131_072,
            sliding_window: Some(4096),
            rms_norm_eps: 1e-6,
            rope_theta: 1_000_000.0,
            tie_word_embeddings: true,
        },
        // Phi3Config: num_key_value_heads=None -> heads, max 4096, eps 1e-5, no window.
        "phi3" => HfDefaults {
            max_position_embeddings: 4096,
            rms_norm_eps: 1e-5,
            ..LLAMA_DEFAULTS
        },
        // MixtralConfig: num_key_value_heads=8, max 4096*32, eps 1e-5, theta 1e6, no window.
        "mixtral" => HfDefaults {
            num_key_value_heads: Some(8),
            max_position_embeddings: 4096 * 32,
            rms_norm_eps: 1e-5,
            rope_theta: 1_000_000.0,
            ..LLAMA_DEFAULTS
        },
        _ => LLAMA_DEFAULTS,
    }
}

impl ModelConfig {
    /// A LLaMA-2-style configuration of the given shape (RoPE θ 10000, RMSNorm ε 1e-5, SwiGLU,
    /// untied head, no biases, context 4096, BOS 1 / EOS 2): the published 7B-70B shapes that
    /// `pot plan --shape` sizes and `cargo xtask bigmodel` writes.
    pub fn llama(
        hidden_size: usize,
        intermediate_size: usize,
        num_hidden_layers: usize,
        num_attention_heads: usize,
        num_key_value_heads: usize,
        vocab_size: usize,
    ) -> Self {
        Self {
            architecture: Architecture::Llama,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim: hidden_size / num_attention_heads.max(1),
            vocab_size,
            rope_theta: 10_000.0,
            rope_scaling: RopeScaling::Default,
            rms_norm_eps: 1e-5,
            tie_word_embeddings: false,
            sliding_window: None,
            sliding_layers: None,
            local_rope_theta: None,
            query_pre_attn_scalar: None,
            num_experts: 0,
            experts_per_token: 0,
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            hidden_act: "silu".into(),
            max_position_embeddings: 4096,
            bos_token_id: Some(1),
            eos_token_id: Some(2),
        }
    }

    /// The token embedding's internal (Hugging Face) name.
    pub fn embedding_name(&self) -> &'static str {
        if self.architecture.gpt2_family() {
            "transformer.wte.weight"
        } else {
            "model.embed_tokens.weight"
        }
    }

    /// The output head's name: the embedding's when tied.
    pub fn head_name(&self) -> &'static str {
        if self.tie_word_embeddings {
            self.embedding_name()
        } else {
            "lm_head.weight"
        }
    }

    /// The final norm's name (with a `.bias` beside it in the GPT-2 family), without `.weight`.
    pub fn final_norm_name(&self) -> &'static str {
        if self.architecture.gpt2_family() {
            "transformer.ln_f"
        } else {
            "model.norm"
        }
    }

    /// The prefix of block `i`'s tensor names.
    pub fn layer_prefix(&self, i: usize) -> String {
        if self.architecture.gpt2_family() {
            format!("transformer.h.{i}.")
        } else {
            format!("model.layers.{i}.")
        }
    }

    /// Whether layer `layer` is one of the config's sliding-window ("local") layers (Gemma 3's
    /// `layer_types`); with no per-layer types, none is.
    pub fn is_local_layer(&self, layer: usize) -> bool {
        self.sliding_layers
            .as_ref()
            .is_some_and(|l| l.get(layer).copied().unwrap_or(false))
    }

    /// The attention window of layer `layer`: the config's window on its local layers, or on
    /// every layer where it has no per-layer types (Mistral).
    pub fn layer_window(&self, layer: usize) -> Option<usize> {
        let window = self.sliding_window?;
        match &self.sliding_layers {
            Some(_) => self.is_local_layer(layer).then_some(window),
            None => Some(window),
        }
    }

    pub fn from_hf_json(path: &Path, text: &str) -> Result<Self> {
        let invalid = |reason: String| FormatError::InvalidConfig {
            path: path.into(),
            reason,
        };
        let value: Json =
            serde_json::from_str(text).map_err(|e| invalid(format!("not JSON ({e})")))?;
        let json = value
            .as_object()
            .ok_or_else(|| invalid("the top level is not a JSON object".into()))?;
        let keys = HfKeys { path, json };
        let arch_name = json
            .get("model_type")
            .and_then(Json::as_str)
            .or_else(|| json.get("architectures")?.get(0)?.as_str())
            .ok_or_else(|| invalid("neither model_type nor architectures is set".into()))?;
        if arch_name == "gemma3" || arch_name == "Gemma3ForConditionalGeneration" {
            return Err(unsupported(
                path,
                "model_type",
                &json!(arch_name),
                "the multimodal Gemma 3 checkpoint (vision tower, `language_model.` names) is \
                 not implemented; its text model (`gemma3_text`, Gemma3ForCausalLM) is",
            ));
        }
        let architecture = Architecture::parse(path, arch_name)?;
        if architecture == Architecture::Gpt2 {
            return Self::from_gpt2_json(&keys);
        }
        let model_type = match arch_name.to_ascii_lowercase().as_str() {
            "mistral" | "mistralforcausallm" => "mistral",
            _ if architecture == Architecture::Llama => "llama",
            _ => architecture.name(),
        };
        let defaults = hf_defaults(model_type);
        let gemma = architecture == Architecture::Gemma3;

        let hidden_size = keys.usize("hidden_size")?;
        let num_attention_heads = keys.usize("num_attention_heads")?;
        let num_key_value_heads = match keys.usize_opt("num_key_value_heads")? {
            Some(n) => n,
            None => defaults.num_key_value_heads.unwrap_or(num_attention_heads),
        };
        let head_dim = match keys.usize_opt("head_dim")? {
            Some(d) => d,
            None => defaults
                .head_dim
                .unwrap_or(hidden_size / num_attention_heads.max(1)),
        };
        let max_position_embeddings = keys
            .usize_opt("max_position_embeddings")?
            .unwrap_or(defaults.max_position_embeddings);
        let num_hidden_layers = keys.usize("num_hidden_layers")?;

        // Gemma names the key `hidden_activation` (default gelu_pytorch_tanh); the others
        // `hidden_act` (default silu).
        let (act_key, act_default) = if gemma {
            ("hidden_activation", "gelu_tanh")
        } else {
            ("hidden_act", "silu")
        };
        let hidden_act = match keys.present(act_key) {
            None => act_default.to_string(),
            Some(Json::String(s)) if s == "silu" || s == "swish" => "silu".to_string(),
            Some(Json::String(s)) if s == "gelu_pytorch_tanh" || s == "gelu_new" => {
                "gelu_tanh".to_string()
            }
            Some(other) => {
                return Err(unsupported(
                    path,
                    act_key,
                    other,
                    "implemented gate activations: silu (SwiGLU) and gelu_pytorch_tanh / gelu_new",
                ));
            }
        };
        if let Some(factor) = keys.f64_opt("partial_rotary_factor")?
            && factor != 1.0
        {
            return Err(unsupported(
                path,
                "partial_rotary_factor",
                &json!(factor),
                "RoPE over part of each head is not implemented",
            ));
        }
        for key in ["pretraining_tp"] {
            // transformers 4.x sliced the projections when pretraining_tp > 1: the same function
            // up to rounding, but not the same arithmetic; refuse rather than guess.
            if let Some(tp) = keys.usize_opt(key)?
                && tp > 1
            {
                return Err(unsupported(
                    path,
                    key,
                    &json!(tp),
                    "sliced projections are not implemented",
                ));
            }
        }
        // Gemma 2's soft-capping (null in Gemma 3 configs) and bidirectional attention change
        // the function: refused rather than ignored.
        for key in ["attn_logit_softcapping", "final_logit_softcapping"] {
            if let Some(v) = keys.present(key) {
                return Err(unsupported(
                    path,
                    key,
                    v,
                    "logit soft-capping is not implemented",
                ));
            }
        }
        if keys.bool_opt("use_bidirectional_attention")? == Some(true) {
            return Err(unsupported(
                path,
                "use_bidirectional_attention",
                &json!(true),
                "pot scores causal language models only",
            ));
        }

        let rope = if gemma {
            gemma_rope(&keys, max_position_embeddings)?
        } else {
            let (theta, scaling) = hf_rope(&keys, max_position_embeddings, defaults.rope_theta)?;
            (theta, scaling, None)
        };
        let (rope_theta, rope_scaling, local_rope_theta) = rope;

        let mut sliding_layers = None;
        let mut query_pre_attn_scalar = None;
        let (mut num_experts, mut experts_per_token) = (0, 0);
        let (qkv_bias, o_bias, mlp_bias, sliding_window) = match model_type {
            // LlamaAttention / LlamaMLP: bias = config.attention_bias / config.mlp_bias.
            "llama" => {
                let attention = keys.bool_opt("attention_bias")?.unwrap_or(false);
                let mlp = keys.bool_opt("mlp_bias")?.unwrap_or(false);
                (attention, attention, mlp, None)
            }
            // MistralAttention / Phi3Attention / MixtralAttention: no biases; a window (where
            // set) applies to every layer.
            "mistral" | "phi3" | "mixtral" => {
                let window = if json.contains_key("sliding_window") {
                    keys.usize_opt("sliding_window")?
                } else {
                    defaults.sliding_window
                };
                if model_type == "mixtral" {
                    num_experts = keys.usize("num_local_experts")?;
                    experts_per_token = keys.usize("num_experts_per_tok")?;
                }
                (false, false, false, window)
            }
            // Gemma3Attention: q/k/v/o biases with attention_bias; the window on the layers
            // `layer_types` marks sliding_attention (default: five of every six).
            "gemma3" => {
                let attention = keys.bool_opt("attention_bias")?.unwrap_or(false);
                let window = if json.contains_key("sliding_window") {
                    keys.usize_opt("sliding_window")?
                } else {
                    defaults.sliding_window
                };
                sliding_layers = Some(gemma_layer_types(&keys, num_hidden_layers)?);
                query_pre_attn_scalar =
                    Some(keys.f64_opt("query_pre_attn_scalar")?.unwrap_or(256.0));
                (attention, attention, false, window)
            }
            // Qwen2Attention: q, k, v biases; Qwen3Attention: q, k, v, o biases with
            // attention_bias. Both: a window only with use_sliding_window.
            _ => {
                if keys.bool_opt("use_sliding_window")?.unwrap_or(false) {
                    return Err(unsupported(
                        path,
                        "use_sliding_window",
                        &json!(true),
                        "Qwen's per-layer sliding window is not implemented",
                    ));
                }
                if let Some(Json::Array(types)) = keys.present("layer_types")
                    && types.iter().any(|t| t.as_str() != Some("full_attention"))
                {
                    return Err(unsupported(
                        path,
                        "layer_types",
                        &Json::Array(types.clone()),
                        "only full_attention layers are implemented for qwen2 and qwen3",
                    ));
                }
                if model_type == "qwen3" {
                    let attention = keys.bool_opt("attention_bias")?.unwrap_or(false);
                    (attention, attention, false, None)
                } else {
                    (true, false, false, None)
                }
            }
        };

        let config = Self {
            architecture,
            hidden_size,
            intermediate_size: keys.usize("intermediate_size")?,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            vocab_size: keys.usize("vocab_size")?,
            rope_theta,
            rope_scaling,
            rms_norm_eps: keys
                .f64_opt("rms_norm_eps")?
                .unwrap_or(defaults.rms_norm_eps),
            tie_word_embeddings: keys
                .bool_opt("tie_word_embeddings")?
                .unwrap_or(defaults.tie_word_embeddings),
            sliding_window,
            sliding_layers,
            local_rope_theta,
            query_pre_attn_scalar,
            num_experts,
            experts_per_token,
            qkv_bias,
            o_bias,
            mlp_bias,
            hidden_act,
            max_position_embeddings,
            bos_token_id: json
                .get("bos_token_id")
                .and_then(Json::as_u64)
                .and_then(|v| u32::try_from(v).ok()),
            eos_token_id: json
                .get("eos_token_id")
                .and_then(Json::as_u64)
                .and_then(|v| u32::try_from(v).ok()),
        };
        config.validate(path)?;
        Ok(config)
    }

    /// GPT2Config's keys (`n_embd`, `n_layer`, ...; transformers 5.x defaults: n_inner None ->
    /// 4 n_embd, layer_norm_epsilon 1e-5, activation gelu_new, tied head, 1024 positions).
    fn from_gpt2_json(keys: &HfKeys) -> Result<Self> {
        let path = keys.path;
        for (key, accepted, reason) in [
            (
                "scale_attn_by_inverse_layer_idx",
                false,
                "scaling attention by the layer index is not implemented",
            ),
            (
                "add_cross_attention",
                false,
                "cross-attention is not part of a causal language model",
            ),
            (
                "scale_attn_weights",
                true,
                "unscaled attention scores are not implemented",
            ),
        ] {
            if let Some(value) = keys.bool_opt(key)?
                && value != accepted
            {
                return Err(unsupported(path, key, &json!(value), reason));
            }
        }
        let hidden_act = match keys.present("activation_function") {
            None => "gelu_tanh".to_string(),
            Some(Json::String(s)) if s == "gelu_new" || s == "gelu_pytorch_tanh" => {
                "gelu_tanh".to_string()
            }
            Some(other) => {
                return Err(unsupported(
                    path,
                    "activation_function",
                    other,
                    "implemented for gpt2: gelu_new (GELU, tanh approximation)",
                ));
            }
        };
        let hidden_size = keys.usize_opt("n_embd")?.unwrap_or(768);
        let num_attention_heads = keys.usize_opt("n_head")?.unwrap_or(12);
        let num_hidden_layers = keys.usize_opt("n_layer")?.unwrap_or(12);
        let vocab_size = keys.usize_opt("vocab_size")?.unwrap_or(50257);
        let config = Self {
            architecture: Architecture::Gpt2,
            intermediate_size: keys.usize_opt("n_inner")?.unwrap_or(4 * hidden_size),
            // No RoPE: `llama`'s theta and scaling stay, unused (valid, so one validation
            // serves every family).
            rms_norm_eps: keys.f64_opt("layer_norm_epsilon")?.unwrap_or(1e-5),
            tie_word_embeddings: keys.bool_opt("tie_word_embeddings")?.unwrap_or(true),
            qkv_bias: true,
            o_bias: true,
            mlp_bias: true,
            hidden_act,
            max_position_embeddings: keys.usize_opt("n_positions")?.unwrap_or(1024),
            bos_token_id: keys.usize_opt("bos_token_id")?.map(|v| v as u32),
            eos_token_id: keys.usize_opt("eos_token_id")?.map(|v| v as u32),
            ..Self::llama(
                hidden_size,
                0,
                num_hidden_layers,
                num_attention_heads,
                num_attention_heads,
                vocab_size,
            )
        };
        config.validate(path)?;
        Ok(config)
    }

    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let path = file.path();
        let invalid = |reason: String| FormatError::InvalidConfig {
            path: path.into(),
            reason,
        };
        let arch_name = file
            .get("general.architecture")
            .and_then(|v| v.as_str())
            .ok_or_else(|| invalid("general.architecture is missing".into()))?;
        let architecture = Architecture::parse(path, arch_name)?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let num_opt = |k: &str| -> Result<Option<usize>> {
            match file.get(&key(k)) {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .and_then(|v| usize::try_from(v).ok())
                    .map(Some)
                    .ok_or_else(|| invalid(format!("metadata `{}` is not a whole number", key(k)))),
            }
        };
        let num = |k: &str| -> Result<usize> {
            num_opt(k)?.ok_or_else(|| invalid(format!("metadata `{}` is missing", key(k))))
        };
        let float_opt = |k: &str| -> Result<Option<f64>> {
            match file.get(&key(k)) {
                None => Ok(None),
                Some(v) => v
                    .as_f64()
                    .filter(|v| v.is_finite())
                    .map(Some)
                    .ok_or_else(|| invalid(format!("metadata `{}` is not a number", key(k)))),
            }
        };
        let hidden_size = num("embedding_length")?;
        let num_attention_heads = num("attention.head_count")?;
        let vocab_size = match num_opt("vocab_size")? {
            Some(v) => v,
            None => file
                .get("tokenizer.ggml.tokens")
                .and_then(|v| v.as_array())
                .map(|a| a.len())
                .ok_or_else(|| {
                    invalid("neither vocab_size nor tokenizer.ggml.tokens is present".into())
                })?,
        };
        let head_dim =
            num_opt("attention.key_length")?.unwrap_or(hidden_size / num_attention_heads.max(1));
        // Keys whose values pot does not compute: (key, the only accepted value, why).
        for (k, accepted, reason) in [
            (
                "attention.value_length",
                head_dim,
                "value heads of another width than key heads are not implemented",
            ),
            (
                "rope.dimension_count",
                head_dim,
                "RoPE over part of each head is not implemented",
            ),
        ] {
            if let Some(value) = num_opt(k)?
                && value != accepted
            {
                return Err(unsupported(path, &key(k), &json!(value), reason));
            }
        }
        // llama.cpp runs Mixtral as its llama graph with experts (`*.expert_count`).
        let num_experts = num_opt("expert_count")?.unwrap_or(0);
        let (architecture, experts_per_token) = match (architecture, num_experts) {
            (_, 0) => (architecture, 0),
            (Architecture::Llama, _) => (Architecture::Mixtral, num("expert_used_count")?),
            (other, n) => {
                return Err(unsupported(
                    path,
                    &key("expert_count"),
                    &json!(n),
                    &format!(
                        "mixtures of experts are implemented for llama-arch (Mixtral) GGUF files, not {}",
                        other.name()
                    ),
                ));
            }
        };
        let max_position_embeddings = num_opt("context_length")?.unwrap_or(2048);
        let rope_scaling = gguf_rope(file, arch_name, max_position_embeddings)?;
        // Biases are optional tensors in llama.cpp's llama and qwen2 graphs: present means used.
        let has = |t: &str| file.tensor(&format!("blk.0.{t}")).is_some();
        let num_hidden_layers = num("block_count")?;
        let gemma = architecture == Architecture::Gemma3;
        let gpt2 = architecture.gpt2_family();
        // llama.cpp's gemma3 graph (llama-model.cpp): `set_swa_pattern(6)` (layer i slides
        // unless i % 6 == 5), the sliding layers' RoPE base fixed at 10000, and the query scale
        // 1/sqrt(head_dim) except for the 27B (62 layers), which uses 1/sqrt(hidden / heads).
        let sliding_layers = gemma.then(|| {
            (0..num_hidden_layers)
                .map(|i| i % 6 < 5)
                .collect::<Vec<_>>()
        });
        let query_pre_attn_scalar = gemma.then(|| {
            if num_hidden_layers == 62 {
                (hidden_size / num_attention_heads.max(1)) as f64
            } else {
                head_dim as f64
            }
        });
        let config = Self {
            architecture,
            hidden_size,
            intermediate_size: num("feed_forward_length")?,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads: num_opt("attention.head_count_kv")?.unwrap_or(num_attention_heads),
            head_dim,
            vocab_size,
            // llama.cpp's default when the key is absent (llama-model.cpp: rope_freq_base_train).
            rope_theta: float_opt("rope.freq_base")?.unwrap_or(10_000.0),
            rope_scaling,
            // llama.cpp requires it (the LayerNorm epsilon for gpt2); so do we.
            rms_norm_eps: {
                let k = if gpt2 {
                    "attention.layer_norm_epsilon"
                } else {
                    "attention.layer_norm_rms_epsilon"
                };
                float_opt(k)?.ok_or_else(|| invalid(format!("metadata `{}` is missing", key(k))))?
            },
            tie_word_embeddings: file.tensor("output.weight").is_none(),
            sliding_window: num_opt("attention.sliding_window")?,
            sliding_layers,
            local_rope_theta: gemma.then_some(10_000.0),
            query_pre_attn_scalar,
            num_experts,
            experts_per_token,
            // GPT-2 has biases on every projection (its expected tensors list them).
            qkv_bias: gpt2 || has("attn_q.bias"),
            o_bias: gpt2 || has("attn_output.bias"),
            mlp_bias: gpt2 || has("ffn_up.bias"),
            hidden_act: if gemma || gpt2 { "gelu_tanh" } else { "silu" }.into(),
            max_position_embeddings,
            bos_token_id: file
                .get("tokenizer.ggml.bos_token_id")
                .and_then(|v| v.as_u64())
                .and_then(|v| u32::try_from(v).ok()),
            eos_token_id: file
                .get("tokenizer.ggml.eos_token_id")
                .and_then(|v| v.as_u64())
                .and_then(|v| u32::try_from(v).ok()),
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
        for (name, value, max) in [
            ("hidden_size", self.hidden_size, MAX_HIDDEN),
            ("intermediate_size", self.intermediate_size, 8 * MAX_HIDDEN),
            ("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS),
            ("num_attention_heads", self.num_attention_heads, MAX_HEADS),
            ("num_key_value_heads", self.num_key_value_heads, MAX_HEADS),
            ("head_dim", self.head_dim, MAX_HIDDEN),
            ("vocab_size", self.vocab_size, MAX_VOCAB),
        ] {
            if value == 0 || value > max {
                return invalid(format!(
                    "`{name}` = {value} is outside 1..={max}, the range pot accepts"
                ));
            }
        }
        if !self
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
        if self.num_attention_heads * self.head_dim > 8 * MAX_HIDDEN {
            return invalid(format!(
                "{} heads of {} dimensions exceed the {} pot accepts",
                self.num_attention_heads,
                self.head_dim,
                8 * MAX_HIDDEN
            ));
        }
        if self.rope_theta.is_nan() || self.rope_theta <= 1.0 {
            return invalid(format!("rope_theta {} must be above 1", self.rope_theta));
        }
        if self.rms_norm_eps.is_nan() || self.rms_norm_eps < 0.0 {
            return invalid(format!("rms_norm_eps {} must be >= 0", self.rms_norm_eps));
        }
        if self.sliding_window == Some(0) {
            return invalid("sliding_window 0 would attend to nothing".into());
        }
        if let Some(layers) = &self.sliding_layers
            && layers.len() != self.num_hidden_layers
        {
            return invalid(format!(
                "{} layer types for {} layers",
                layers.len(),
                self.num_hidden_layers
            ));
        }
        if let Some(theta) = self.local_rope_theta
            && (theta.is_nan() || theta <= 1.0)
        {
            return invalid(format!("the local RoPE base {theta} must be above 1"));
        }
        if let Some(scalar) = self.query_pre_attn_scalar
            && !(scalar.is_finite() && scalar > 0.0)
        {
            return invalid(format!("query_pre_attn_scalar {scalar} must be positive"));
        }
        if !matches!(self.hidden_act.as_str(), "silu" | "gelu_tanh") {
            return invalid(format!(
                "activation `{}` is not implemented",
                self.hidden_act
            ));
        }
        let moe = self.architecture == Architecture::Mixtral;
        if moe != (self.num_experts > 0) {
            return invalid(format!(
                "{} experts for a {} model",
                self.num_experts,
                self.architecture.name()
            ));
        }
        if moe
            && (self.num_experts > MAX_EXPERTS
                || self.experts_per_token == 0
                || self.experts_per_token > self.num_experts)
        {
            return invalid(format!(
                "{} experts per token out of {} (pot accepts 1..=experts, at most {MAX_EXPERTS} experts)",
                self.experts_per_token, self.num_experts
            ));
        }
        Ok(())
    }

    /// What the forward pass computes with, values as the pass uses them: the fields of the
    /// architecture hash (pot-security) and of `pot inspect`. Floats are rounded to f32 (GGUF
    /// stores them so), so a GGUF and the config.json of the same model agree.
    pub fn forward_parameters(&self) -> Json {
        let f = |v: f64| json!(v as f32);
        let scaling = match &self.rope_scaling {
            RopeScaling::Default => json!({"rope_type": "default"}),
            RopeScaling::Linear { factor } => json!({"rope_type": "linear", "factor": f(*factor)}),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => json!({
                "rope_type": "llama3", "factor": f(*factor),
                "low_freq_factor": f(*low_freq_factor), "high_freq_factor": f(*high_freq_factor),
                "original_max_position_embeddings": original_max_position_embeddings,
            }),
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings,
                beta_fast,
                beta_slow,
                attention_factor,
                truncate,
            } => json!({
                "rope_type": "yarn", "factor": f(*factor),
                "original_max_position_embeddings": original_max_position_embeddings,
                "beta_fast": f(*beta_fast), "beta_slow": f(*beta_slow),
                "attention_factor": f(*attention_factor), "truncate": truncate,
            }),
        };
        let mut out = json!({
            "architecture": self.architecture.name(),
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab_size,
            "rope_theta": f(self.rope_theta),
            "rope_scaling": scaling,
            "rms_norm_eps": f(self.rms_norm_eps),
            "tie_word_embeddings": self.tie_word_embeddings,
            "sliding_window": self.sliding_window,
            "qkv_bias": self.qkv_bias,
            "o_bias": self.o_bias,
            "mlp_bias": self.mlp_bias,
            "hidden_act": self.hidden_act,
        });
        // Keys of the newer architectures, written only where set, so the hashes of models
        // without them are what they were before these keys existed.
        if let Some(layers) = &self.sliding_layers {
            out["sliding_layers"] = json!(layers);
        }
        if let Some(theta) = self.local_rope_theta {
            out["local_rope_theta"] = f(theta);
        }
        if let Some(scalar) = self.query_pre_attn_scalar {
            out["query_pre_attn_scalar"] = f(scalar);
        }
        if self.num_experts > 0 {
            out["num_experts"] = json!(self.num_experts);
            out["experts_per_token"] = json!(self.experts_per_token);
        }
        out
    }

    /// A Hugging Face config.json for this configuration (what `pot convert` writes), in the
    /// transformers 4.x layout (top-level `rope_theta`, `rope_scaling`), which 5.x also reads.
    pub fn to_hf_json(&self, torch_dtype: &str) -> Json {
        let (arch, model_type) = match self.architecture {
            Architecture::Llama => ("LlamaForCausalLM", "llama"),
            Architecture::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
            Architecture::Qwen3 => ("Qwen3ForCausalLM", "qwen3"),
            Architecture::Phi3 => ("Phi3ForCausalLM", "phi3"),
            Architecture::Mixtral => ("MixtralForCausalLM", "mixtral"),
            // Refused by expressible_as_hf before anything is written.
            Architecture::Gemma3 => ("", "gemma3_text"),
            Architecture::Gpt2 => ("", "gpt2"),
        };
        let rope_scaling = match &self.rope_scaling {
            RopeScaling::Default => Json::Null,
            other => serde_json::to_value(other).expect("serialisable"),
        };
        let mut out = json!({
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
            "rope_scaling": rope_scaling,
            "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "hidden_act": self.hidden_act,
            "torch_dtype": torch_dtype,
        });
        if matches!(self.architecture, Architecture::Llama | Architecture::Qwen3) {
            // A window or an o/MLP bias is not expressible in a llama config: say so by refusing
            // in convert (checked there) rather than writing a config that computes otherwise.
            out["attention_bias"] = json!(self.qkv_bias && self.o_bias);
            out["mlp_bias"] = json!(self.mlp_bias);
        }
        if matches!(
            self.architecture,
            Architecture::Phi3 | Architecture::Mixtral
        ) {
            // Both apply a window (where set) to every layer; null is explicit, so no default
            // of the reader's version applies.
            out["sliding_window"] = json!(self.sliding_window);
        }
        if self.architecture == Architecture::Mixtral {
            out["num_local_experts"] = json!(self.num_experts);
            out["num_experts_per_tok"] = json!(self.experts_per_token);
        }
        out
    }

    /// Whether [`Self::to_hf_json`] describes exactly this function (transformers' llama config
    /// has one switch for q/k/v/o biases and no window; qwen2 has fixed q/k/v biases).
    pub fn expressible_as_hf(&self) -> std::result::Result<(), String> {
        match self.architecture {
            Architecture::Llama if self.qkv_bias != self.o_bias => Err(format!(
                "q/k/v biases {} but output bias {}: a llama config.json sets both with one key",
                self.qkv_bias, self.o_bias
            )),
            Architecture::Qwen2 if !self.qkv_bias || self.o_bias || self.mlp_bias => {
                Err("qwen2 configs fix biases on q/k/v only".into())
            }
            Architecture::Qwen3 if self.qkv_bias != self.o_bias || self.mlp_bias => Err(
                "a qwen3 config.json sets q/k/v/o biases with one key and has no MLP bias".into(),
            ),
            // Gemma's norms would have to be written back as w = multiplier - 1 (not exact in
            // f32) and its per-layer RoPE in the 5.x layout: not implemented.
            Architecture::Gemma3 => Err(
                "pot convert does not write gemma3 directories (its norms are stored as 1 + w)"
                    .into(),
            ),
            Architecture::Gpt2 => {
                Err("pot convert does not write gpt2 directories (Conv1D layout)".into())
            }
            Architecture::Phi3 | Architecture::Mixtral
                if self.qkv_bias || self.o_bias || self.mlp_bias =>
            {
                Err(format!(
                    "{} configs have no biases",
                    self.architecture.name()
                ))
            }
            Architecture::Phi3 | Architecture::Mixtral => Ok(()),
            _ if self.sliding_window.is_some() => Err(format!(
                "sliding window {:?} has no key in a {} config.json",
                self.sliding_window,
                self.architecture.name()
            )),
            _ => Ok(()),
        }
    }
}

fn unsupported(path: &Path, key: &str, value: &Json, reason: &str) -> FormatError {
    FormatError::UnsupportedConfig {
        path: path.into(),
        key: key.into(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// RoPE base and scaling from config.json: transformers 5.x's `rope_parameters` (theta inside)
/// or 4.x's top-level `rope_theta` with an optional `rope_scaling` object (`rope_type`, or the
/// older `type`). Both layouts at once must agree.
fn hf_rope(
    keys: &HfKeys,
    max_position_embeddings: usize,
    default_theta: f64,
) -> Result<(f64, RopeScaling)> {
    let path = keys.path;
    let top_theta = keys.f64_opt("rope_theta")?;
    let params = keys.present("rope_parameters");
    let legacy = keys.present("rope_scaling");
    let object = |key: &str, v: &'_ Json| -> Result<Map<String, Json>> {
        v.as_object()
            .cloned()
            .ok_or_else(|| keys.invalid(format!("`{key}` = {v} is not an object")))
    };
    let (theta, scaling_key, scaling) = match (params, legacy) {
        (Some(p), _) => {
            let p = object("rope_parameters", p)?;
            let inner = HfKeys { path, json: &p };
            let theta = inner.f64_opt("rope_theta")?;
            if let (Some(a), Some(b)) = (theta, top_theta)
                && a != b
            {
                return Err(keys.invalid(format!(
                    "`rope_parameters.rope_theta` = {a} and `rope_theta` = {b} disagree"
                )));
            }
            (theta.or(top_theta), "rope_parameters", Some(p))
        }
        (None, Some(s)) => (top_theta, "rope_scaling", Some(object("rope_scaling", s)?)),
        (None, None) => (top_theta, "rope_scaling", None),
    };
    let theta = theta.unwrap_or(default_theta);
    let Some(scaling) = scaling else {
        return Ok((theta, RopeScaling::Default));
    };
    let s = HfKeys {
        path,
        json: &scaling,
    };
    // transformers 5.x keeps Phi-3's partial_rotary_factor inside rope_parameters.
    if let Some(factor) = s.f64_opt("partial_rotary_factor")?
        && factor != 1.0
    {
        return Err(unsupported(
            path,
            &format!("{scaling_key}.partial_rotary_factor"),
            &json!(factor),
            "RoPE over part of each head is not implemented",
        ));
    }
    let rope_type = scaling
        .get("rope_type")
        .or_else(|| scaling.get("type"))
        .map(|v| {
            v.as_str().map(str::to_owned).ok_or_else(|| {
                keys.invalid(format!("`{scaling_key}.rope_type` = {v} is not a string"))
            })
        })
        .transpose()?
        .unwrap_or_else(|| "default".into());
    let factor = |name: &str| -> Result<f64> {
        let v = s.f64_opt("factor")?.ok_or_else(|| {
            keys.invalid(format!(
                "`{scaling_key}.factor` is missing for rope_type {name}"
            ))
        })?;
        if v < 1.0 {
            return Err(keys.invalid(format!("`{scaling_key}.factor` = {v} must be at least 1")));
        }
        Ok(v)
    };
    let required = |key: &str| -> Result<f64> {
        s.f64_opt(key)?.ok_or_else(|| {
            keys.invalid(format!(
                "`{scaling_key}.{key}` is missing for rope_type {rope_type}"
            ))
        })
    };
    let scaling = match rope_type.as_str() {
        "default" => RopeScaling::Default,
        "linear" => RopeScaling::Linear {
            factor: factor("linear")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: factor("llama3")?,
            low_freq_factor: required("low_freq_factor")?,
            high_freq_factor: required("high_freq_factor")?,
            original_max_position_embeddings: s
                .usize_opt("original_max_position_embeddings")?
                .ok_or_else(|| {
                    keys.invalid(format!(
                        "`{scaling_key}.original_max_position_embeddings` is missing for rope_type llama3"
                    ))
                })?,
        },
        "yarn" => {
            let factor = factor("yarn")?;
            // transformers: the config's max_position_embeddings when the key is absent.
            let original = s
                .usize_opt("original_max_position_embeddings")?
                .unwrap_or(max_position_embeddings);
            let attention_factor = match s.f64_opt("attention_factor")? {
                Some(a) => a,
                None => match (s.f64_opt("mscale")?, s.f64_opt("mscale_all_dim")?) {
                    (Some(m), Some(all)) if m != 0.0 && all != 0.0 => {
                        yarn_mscale(factor, m) / yarn_mscale(factor, all)
                    }
                    _ => yarn_mscale(factor, 1.0),
                },
            };
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings: original,
                beta_fast: s.f64_opt("beta_fast")?.unwrap_or(32.0),
                beta_slow: s.f64_opt("beta_slow")?.unwrap_or(1.0),
                attention_factor,
                truncate: s.bool_opt("truncate")?.unwrap_or(true),
            }
        }
        other => {
            return Err(unsupported(
                path,
                &format!("{scaling_key}.rope_type"),
                &json!(other),
                "implemented RoPE types: default, linear, llama3, yarn",
            ));
        }
    };
    Ok((theta, scaling))
}

/// Gemma 3's two RoPEs: (full-attention theta, its scaling, sliding-window theta). transformers
/// 5.x: `rope_parameters` = {"full_attention": {...}, "sliding_attention": {...}}; 4.x:
/// `rope_theta` (default 1e6) and `rope_scaling` for the full layers, `rope_local_base_freq`
/// (default 1e4) for the sliding ones. The sliding layers' RoPE must be unscaled.
fn gemma_rope(
    keys: &HfKeys,
    max_position_embeddings: usize,
) -> Result<(f64, RopeScaling, Option<f64>)> {
    let path = keys.path;
    let by_layer_type = keys
        .present("rope_parameters")
        .and_then(Json::as_object)
        .filter(|p| p.contains_key("full_attention") || p.contains_key("sliding_attention"));
    let (full, local) = match by_layer_type {
        Some(p) => {
            // Each layer type's object read as if it were the top-level rope_parameters.
            let one = |layer_type: &str, default_theta: f64| {
                let mut wrapper = Map::new();
                if let Some(v) = p.get(layer_type) {
                    wrapper.insert("rope_parameters".into(), v.clone());
                }
                hf_rope(
                    &HfKeys {
                        path,
                        json: &wrapper,
                    },
                    max_position_embeddings,
                    default_theta,
                )
            };
            (one("full_attention", 1e6)?, one("sliding_attention", 1e4)?)
        }
        None => {
            let full = hf_rope(keys, max_position_embeddings, 1e6)?;
            let local = keys.f64_opt("rope_local_base_freq")?.unwrap_or(1e4);
            (full, (local, RopeScaling::Default))
        }
    };
    if local.1 != RopeScaling::Default {
        return Err(unsupported(
            path,
            "rope_parameters.sliding_attention.rope_type",
            &json!(local.1.name()),
            "scaled RoPE on Gemma's sliding-window layers is not implemented",
        ));
    }
    Ok((full.0, full.1, Some(local.0)))
}

/// Which layers of a Gemma 3 config use the sliding window: `layer_types`, else transformers'
/// default of every layer but each `sliding_window_pattern`-th (default 6).
fn gemma_layer_types(keys: &HfKeys, layers: usize) -> Result<Vec<bool>> {
    if let Some(types) = keys.present("layer_types") {
        let types = types
            .as_array()
            .filter(|t| t.len() == layers)
            .ok_or_else(|| {
                keys.invalid(format!(
                    "`layer_types` is not a list of {layers} layer types"
                ))
            })?;
        return types
            .iter()
            .map(|t| match t.as_str() {
                Some("sliding_attention") => Ok(true),
                Some("full_attention") => Ok(false),
                _ => Err(unsupported(
                    keys.path,
                    "layer_types",
                    t,
                    "layer types are sliding_attention or full_attention",
                )),
            })
            .collect();
    }
    let pattern = keys
        .usize_opt("sliding_window_pattern")?
        .unwrap_or(6)
        .max(1);
    Ok((0..layers).map(|i| (i + 1) % pattern != 0).collect())
}

/// RoPE scaling from GGUF metadata (`*.rope.scaling.type` and friends; older files have
/// `*.rope.scale_linear`).
fn gguf_rope(file: &GgufFile, arch: &str, max_position_embeddings: usize) -> Result<RopeScaling> {
    let path = file.path();
    let get = |k: &str| file.get(&format!("{arch}.{k}"));
    let float = |k: &str| get(k).and_then(|v| v.as_f64());
    let kind = get("rope.scaling.type").and_then(|v| v.as_str().map(str::to_owned));
    let factor = float("rope.scaling.factor").or_else(|| float("rope.scale_linear"));
    let kind = match (kind.as_deref(), factor) {
        (Some(k), _) => k.to_string(),
        (None, Some(f)) if f != 1.0 => "linear".into(),
        (None, _) => "none".into(),
    };
    for extra in [
        "rope.scaling.attn_factor",
        "rope.scaling.yarn_log_multiplier",
        "rope.scaling.yarn_ext_factor",
    ] {
        if let Some(v) = get(extra) {
            return Err(unsupported(
                path,
                &format!("{arch}.{extra}"),
                &serde_json::to_value(v).unwrap_or(Json::Null),
                "this YaRN variant is not implemented",
            ));
        }
    }
    let need_factor = || {
        factor
            .filter(|f| f.is_finite() && *f >= 1.0)
            .ok_or_else(|| FormatError::InvalidConfig {
                path: path.into(),
                reason: format!("`{arch}.rope.scaling.factor` is missing or below 1"),
            })
    };
    Ok(match kind.as_str() {
        "none" => RopeScaling::Default,
        "linear" => RopeScaling::Linear {
            factor: need_factor()?,
        },
        "yarn" => {
            let factor = need_factor()?;
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings: get("rope.scaling.original_context_length")
                    .and_then(|v| v.as_u64())
                    .and_then(|v| usize::try_from(v).ok())
                    .unwrap_or(max_position_embeddings),
                beta_fast: float("rope.scaling.yarn_beta_fast").unwrap_or(32.0),
                beta_slow: float("rope.scaling.yarn_beta_slow").unwrap_or(1.0),
                attention_factor: yarn_mscale(factor, 1.0),
                truncate: true,
            }
        }
        other => {
            return Err(unsupported(
                path,
                &format!("{arch}.rope.scaling.type"),
                &json!(other),
                "implemented GGUF RoPE scalings: none, linear, yarn",
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `pot convert` writes for Phi-3 and Mixtral reads back as the same configuration.
    #[test]
    fn phi3_and_mixtral_configs_round_trip_through_config_json() {
        let phi3 = ModelConfig {
            architecture: Architecture::Phi3,
            sliding_window: Some(2047),
            ..ModelConfig::llama(96, 256, 2, 4, 4, 320)
        };
        let mixtral = ModelConfig {
            architecture: Architecture::Mixtral,
            num_experts: 8,
            experts_per_token: 2,
            ..ModelConfig::llama(96, 256, 2, 4, 2, 320)
        };
        for config in [phi3, mixtral] {
            config.expressible_as_hf().unwrap();
            let text = config.to_hf_json("float32").to_string();
            let back = ModelConfig::from_hf_json(Path::new("config.json"), &text).unwrap();
            assert_eq!(back, config, "{text}");
        }
    }

    #[test]
    fn gemma3_layer_types_default_to_five_local_layers_in_six() {
        let text = r#"{"model_type": "gemma3_text", "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 8, "num_attention_heads": 2, "num_key_value_heads": 1,
            "head_dim": 32, "vocab_size": 100}"#;
        let c = ModelConfig::from_hf_json(Path::new("config.json"), text).unwrap();
        let local: Vec<usize> = (0..8).filter(|&i| c.is_local_layer(i)).collect();
        assert_eq!(local, vec![0, 1, 2, 3, 4, 6, 7]);
        assert_eq!(c.layer_window(5), None);
        assert_eq!(c.layer_window(6), Some(4096));
        assert_eq!(c.local_rope_theta, Some(10_000.0));
        assert_eq!(c.rope_theta, 1_000_000.0);
        assert_eq!(c.query_pre_attn_scalar, Some(256.0));
        assert_eq!(c.hidden_act, "gelu_tanh");
        assert!(c.tie_word_embeddings);
        assert_eq!(c.rms_norm_eps, 1e-6);
        // Gemma 2's soft-capping and the multimodal checkpoint are refused by name.
        let capped = text.replace(
            "\"vocab_size\": 100",
            "\"vocab_size\": 100, \"final_logit_softcapping\": 30.0",
        );
        let err = ModelConfig::from_hf_json(Path::new("config.json"), &capped).unwrap_err();
        assert!(err.to_string().contains("final_logit_softcapping"), "{err}");
        let multimodal = text.replace("gemma3_text", "gemma3");
        let err = ModelConfig::from_hf_json(Path::new("config.json"), &multimodal).unwrap_err();
        assert!(err.to_string().contains("gemma3_text"), "{err}");
    }
}

//! The one module that talks to burn: weights as burn tensors and the teacher-forced forward pass
//! of the LLaMA family (LLaMA, SmolLM2, Mistral; Qwen2 adds q/k/v biases). A burn upgrade
//! touches this file only.
//!
//! The pass reads top to bottom like the papers: embedding, then per block
//! `x += Wo · attn(RoPE(Wq·rmsnorm(x)), RoPE(Wk·rmsnorm(x)), Wv·rmsnorm(x))` and
//! `x += Wdown · (silu(Wgate·rmsnorm(x)) ⊙ Wup·rmsnorm(x))`, then rmsnorm, the output head and
//! log-softmax. Sequences of a batch are right-padded: with the causal mask a real position never
//! attends to a later (padding) position, so padding needs no mask of its own and its outputs are
//! dropped.

use burn::tensor::activation::{log_softmax, silu, softmax};
use burn::tensor::{Device, Tensor, TensorData};
use pot_formats::{Model, ModelConfig};

use crate::error::ScoringError;

/// Which burn backend runs the pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// burn-flex on the CPU (rayon + SIMD): the default.
    Flex,
    /// burn-ndarray on the CPU (cargo feature `ndarray`).
    Ndarray,
    /// burn-wgpu on a GPU (cargo feature `wgpu`).
    Wgpu,
}

impl Backend {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "flex" | "cpu" => Some(Self::Flex),
            "ndarray" => Some(Self::Ndarray),
            "wgpu" | "gpu" => Some(Self::Wgpu),
            _ => None,
        }
    }

    pub fn device(self) -> Result<Device, ScoringError> {
        match self {
            Self::Flex => Ok(Device::flex()),
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            // burn 0.22 deprecates ndarray in favour of flex; kept for comparison
            Self::Ndarray => Ok(Device::ndarray()),
            #[cfg(feature = "wgpu")]
            Self::Wgpu => Ok(Device::default()),
            #[allow(unreachable_patterns)]
            other => Err(ScoringError::BackendUnavailable(format!(
                "backend {other:?} was not compiled in; rebuild with `--features pot-scoring/{}`",
                format!("{other:?}").to_lowercase()
            ))),
        }
    }
}

struct Block {
    attn_norm: Tensor<1>,
    /// Projections stored transposed (`[in, out]`) so the pass is `x.matmul(w)`.
    wq: Tensor<2>,
    wk: Tensor<2>,
    wv: Tensor<2>,
    bq: Option<Tensor<1>>,
    bk: Option<Tensor<1>>,
    bv: Option<Tensor<1>>,
    wo: Tensor<2>,
    ffn_norm: Tensor<1>,
    w_gate: Tensor<2>,
    w_up: Tensor<2>,
    w_down: Tensor<2>,
}

/// A model's weights loaded on a burn device, ready for forward passes.
pub struct Engine {
    device: Device,
    config: ModelConfig,
    /// Embedding rows stay in host memory: a lookup needs no matmul.
    embedding: Vec<f32>,
    blocks: Vec<Block>,
    final_norm: Tensor<1>,
    /// Output head, transposed: `[hidden, vocab]`.
    head: Tensor<2>,
}

/// Per-position next-token log-probabilities of one sequence: `len` rows of `vocab` values;
/// row `i` is the distribution of the token after position `i`.
pub struct SequenceLogProbs {
    pub len: usize,
    pub vocab: usize,
    pub values: Vec<f32>,
}

impl SequenceLogProbs {
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.vocab..(i + 1) * self.vocab]
    }
}

fn tensor1(values: Vec<f32>, device: &Device) -> Tensor<1> {
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [n]), device)
}

/// `[rows, cols]` row-major values as a transposed `[cols, rows]` tensor.
fn tensor2_transposed(values: &[f32], rows: usize, cols: usize, device: &Device) -> Tensor<2> {
    let mut t = vec![0.0f32; values.len()];
    // Blocked transpose: keeps both sides cache-friendly for large matrices.
    const B: usize = 64;
    for r0 in (0..rows).step_by(B) {
        for c0 in (0..cols).step_by(B) {
            for r in r0..(r0 + B).min(rows) {
                for c in c0..(c0 + B).min(cols) {
                    t[c * rows + r] = values[r * cols + c];
                }
            }
        }
    }
    Tensor::from_data(TensorData::new(t, [cols, rows]), device)
}

impl Engine {
    /// Loads every weight of `model` as f32 onto `device`.
    pub fn load(model: &Model, device: Device) -> Result<Self, ScoringError> {
        let config = model.config().clone();
        let load = |name: &str| model.load_f32(name).map_err(ScoringError::from);
        let matrix = |name: &str| -> Result<Tensor<2>, ScoringError> {
            let info = model.tensor(name).expect("checked complete when opened");
            let (rows, cols) = (info.shape[0], info.shape[1]);
            Ok(tensor2_transposed(&load(name)?, rows, cols, &device))
        };
        let vector =
            |name: &str| -> Result<Tensor<1>, ScoringError> { Ok(tensor1(load(name)?, &device)) };
        let mut blocks = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = |s: &str| format!("model.layers.{i}.{s}");
            let bias = |s: &str| -> Result<Option<Tensor<1>>, ScoringError> {
                if config.architecture.qkv_bias() {
                    vector(&p(s)).map(Some)
                } else {
                    Ok(None)
                }
            };
            blocks.push(Block {
                attn_norm: vector(&p("input_layernorm.weight"))?,
                wq: matrix(&p("self_attn.q_proj.weight"))?,
                wk: matrix(&p("self_attn.k_proj.weight"))?,
                wv: matrix(&p("self_attn.v_proj.weight"))?,
                bq: bias("self_attn.q_proj.bias")?,
                bk: bias("self_attn.k_proj.bias")?,
                bv: bias("self_attn.v_proj.bias")?,
                wo: matrix(&p("self_attn.o_proj.weight"))?,
                ffn_norm: vector(&p("post_attention_layernorm.weight"))?,
                w_gate: matrix(&p("mlp.gate_proj.weight"))?,
                w_up: matrix(&p("mlp.up_proj.weight"))?,
                w_down: matrix(&p("mlp.down_proj.weight"))?,
            });
        }
        let embedding = load("model.embed_tokens.weight")?;
        let head_name = if config.tie_word_embeddings {
            "model.embed_tokens.weight"
        } else {
            "lm_head.weight"
        };
        let head = if config.tie_word_embeddings {
            tensor2_transposed(&embedding, config.vocab_size, config.hidden_size, &device)
        } else {
            matrix(head_name)?
        };
        Ok(Self {
            final_norm: vector("model.norm.weight")?,
            device,
            config,
            embedding,
            blocks,
            head,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Teacher-forced pass over a batch of token sequences (any lengths >= 1); returns each
    /// sequence's per-position next-token log-probabilities.
    pub fn forward(&self, batch: &[Vec<u32>]) -> Result<Vec<SequenceLogProbs>, ScoringError> {
        let c = &self.config;
        let (d, vocab) = (c.hidden_size, c.vocab_size);
        let b = batch.len();
        let t = batch.iter().map(Vec::len).max().unwrap_or(0);
        if b == 0 || t == 0 {
            return Ok(Vec::new());
        }
        // Embedding lookup on the host; padding rows are zeros.
        let mut x = vec![0.0f32; b * t * d];
        for (s, ids) in batch.iter().enumerate() {
            for (i, &id) in ids.iter().enumerate() {
                let id = id as usize;
                if id >= vocab {
                    return Err(ScoringError::TokenOutOfRange {
                        id: id as u32,
                        vocab,
                    });
                }
                x[(s * t + i) * d..(s * t + i + 1) * d]
                    .copy_from_slice(&self.embedding[id * d..(id + 1) * d]);
            }
        }
        let mut x: Tensor<3> = Tensor::from_data(TensorData::new(x, [b, t, d]), &self.device);
        let rope = Rope::new(c, t, &self.device);
        let causal = self.causal_bias(t);
        for block in &self.blocks {
            x = self.block(block, x, &rope, &causal, b, t);
        }
        let x = rms_norm(x, &self.final_norm, c.rms_norm_eps).reshape([b * t, d]);
        let logp = log_softmax(x.matmul(self.head.clone()), 1);
        let values = logp
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| ScoringError::Backend(format!("{e:?}")))?;
        Ok(batch
            .iter()
            .enumerate()
            .map(|(s, ids)| SequenceLogProbs {
                len: ids.len(),
                vocab,
                values: values[s * t * vocab..(s * t + ids.len()) * vocab].to_vec(),
            })
            .collect())
    }

    /// `[groups * t, t]` additive mask: 0 where a query may attend, -inf for later keys. Rows are
    /// the query heads of one key/value group stacked (see `block`).
    fn causal_bias(&self, t: usize) -> Tensor<2> {
        let groups = self.config.num_attention_heads / self.config.num_key_value_heads;
        let mut bias = vec![0.0f32; groups * t * t];
        for g in 0..groups {
            for q in 0..t {
                for k in q + 1..t {
                    bias[(g * t + q) * t + k] = f32::NEG_INFINITY;
                }
            }
        }
        Tensor::from_data(TensorData::new(bias, [groups * t, t]), &self.device)
    }

    fn block(
        &self,
        w: &Block,
        x: Tensor<3>,
        rope: &Rope,
        causal: &Tensor<2>,
        b: usize,
        t: usize,
    ) -> Tensor<3> {
        let c = &self.config;
        let (d, hd) = (c.hidden_size, c.head_dim);
        let (heads, kv_heads) = (c.num_attention_heads, c.num_key_value_heads);
        let groups = heads / kv_heads;

        let h = rms_norm(x.clone(), &w.attn_norm, c.rms_norm_eps).reshape([b * t, d]);
        let project = |w: &Tensor<2>, bias: &Option<Tensor<1>>| {
            let y = h.clone().matmul(w.clone());
            match bias {
                Some(bias) => y + bias.clone().unsqueeze_dim(0),
                None => y,
            }
        };
        // [b, t, heads, hd] -> [b, heads, t, hd]
        let q = project(&w.wq, &w.bq)
            .reshape([b, t, heads, hd])
            .swap_dims(1, 2);
        let k = project(&w.wk, &w.bk)
            .reshape([b, t, kv_heads, hd])
            .swap_dims(1, 2);
        let v = project(&w.wv, &w.bv)
            .reshape([b, t, kv_heads, hd])
            .swap_dims(1, 2);
        let q = rope.apply(q);
        let k = rope.apply(k);
        // Grouped-query attention without copying k/v: the query heads sharing a key/value head
        // (heads g*groups .. (g+1)*groups, as in Hugging Face's repeat_kv) are stacked along time.
        let q = q.reshape([b, kv_heads, groups * t, hd]);
        let scores = q
            .matmul(k.swap_dims(2, 3))
            .mul_scalar(1.0 / (hd as f64).sqrt());
        let scores = scores + causal.clone().unsqueeze_dims::<4>(&[0, 1]);
        let attn = softmax(scores, 3).matmul(v); // [b, kv, groups*t, hd]
        let attn = attn
            .reshape([b, heads, t, hd])
            .swap_dims(1, 2)
            .reshape([b * t, heads * hd]);
        let x = x + attn.matmul(w.wo.clone()).reshape([b, t, d]);

        let h = rms_norm(x.clone(), &w.ffn_norm, c.rms_norm_eps).reshape([b * t, d]);
        let gate = silu(h.clone().matmul(w.w_gate.clone()));
        let up = h.matmul(w.w_up.clone());
        x + (gate * up).matmul(w.w_down.clone()).reshape([b, t, d])
    }
}

/// `x / sqrt(mean(x^2) + eps) * weight` over the last dimension.
fn rms_norm(x: Tensor<3>, weight: &Tensor<1>, eps: f64) -> Tensor<3> {
    let scale = x
        .clone()
        .powi_scalar(2)
        .mean_dim(2)
        .add_scalar(eps)
        .sqrt()
        .recip();
    x * scale * weight.clone().unsqueeze_dims::<3>(&[0, 1])
}

/// Rotary position embedding, rotate-half convention (Hugging Face layout; GGUF LLaMA files are
/// un-permuted into it when read).
struct Rope {
    cos: Tensor<4>,
    sin: Tensor<4>,
    half: usize,
}

impl Rope {
    fn new(c: &ModelConfig, t: usize, device: &Device) -> Self {
        let hd = c.head_dim;
        let half = hd / 2;
        let mut cos = vec![0.0f32; t * hd];
        let mut sin = vec![0.0f32; t * hd];
        for pos in 0..t {
            for i in 0..half {
                let freq = 1.0 / c.rope_theta.powf(2.0 * i as f64 / hd as f64);
                let angle = pos as f64 * freq;
                for j in [i, i + half] {
                    cos[pos * hd + j] = angle.cos() as f32;
                    sin[pos * hd + j] = angle.sin() as f32;
                }
            }
        }
        let make = |v| {
            Tensor::<2>::from_data(TensorData::new(v, [t, hd]), device).unsqueeze_dims::<4>(&[0, 1])
        };
        Self {
            cos: make(cos),
            sin: make(sin),
            half,
        }
    }

    /// `x * cos + rotate_half(x) * sin` for `x: [b, heads, t, hd]`.
    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, h, t, hd] = x.dims();
        let x1 = x.clone().slice([0..b, 0..h, 0..t, 0..self.half]);
        let x2 = x.clone().slice([0..b, 0..h, 0..t, self.half..hd]);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        x * self.cos.clone() + rotated * self.sin.clone()
    }
}

//! The one module that talks to burn: weights as burn tensors and the teacher-forced forward pass
//! of the LLaMA family (LLaMA, SmolLM2, Mistral; Qwen2 adds q/k/v biases, Qwen3 per-head q/k
//! norms; biases, RoPE scaling and a sliding window as the config declares them). A burn upgrade
//! touches this file only.
//!
//! The pass reads top to bottom like the papers: embedding, then per block
//! `x += Wo · attn(RoPE(Wq·rmsnorm(x)), RoPE(Wk·rmsnorm(x)), Wv·rmsnorm(x))` and
//! `x += Wdown · (silu(Wgate·rmsnorm(x)) ⊙ Wup·rmsnorm(x))`, then rmsnorm, the output head and
//! log-softmax. The sequences of a batch are packed, not padded: every position-wise operation
//! (norms, projections, MLP, head) runs once over all real tokens `[N, hidden]`, and only
//! attention runs per sequence, with its own causal mask. Padding to the longest sequence cost
//! 28-38 % extra matmul work on the benchmark batches (docs/BENCHMARKS.md). Weights are resident, streamed layer-major from the memory map, or kept as int8 and
//! dequantised per layer (see `weights`); the output head always runs in row chunks into host
//! buffers, so no `[positions, vocab]` tensor exists on the device at once.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use burn::tensor::activation::{gelu_approximate, silu, softmax};
use burn::tensor::{Device, Tensor, TensorData};
use pot_formats::{Architecture, Model, ModelConfig, RopeScaling};
use rayon::prelude::*;

use crate::emulate::{self, Arithmetic, BlockMatrix};
use crate::error::ScoringError;
use crate::kernels::{self, Activation};
use crate::matmul::{PackedMatrix, matmul};
use crate::weights::{BufferPool, Int8Store, Residency, Source};

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
            // wgpu's best adapter (a high-power GPU first); CUBECL_WGPU_DEFAULT_DEVICE overrides
            // it, e.g. `Cpu` for a software Vulkan driver.
            #[cfg(feature = "wgpu")]
            Self::Wgpu => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
            #[allow(unreachable_patterns)]
            other => {
                let name = format!("{other:?}").to_lowercase();
                Err(ScoringError::BackendUnavailable(format!(
                    "backend {name} was not compiled into this pot; build it with \
                     `cargo build -p pot-cli --features pot-scoring/{name}`"
                )))
            }
        }
    }
}

struct Block {
    attn_norm: Norm,
    /// q, k and v as one projection to `(heads + 2 kv_heads) · head_dim` outputs: one GEMM,
    /// whose output the CPU attention reads in place.
    qkv: Linear,
    /// Per-head RMSNorm weights of queries and keys (`[head_dim]`; Qwen3, Gemma 3).
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    o: Linear,
    /// Gemma: the attention output normalised before the residual add.
    post_attn_norm: Option<Tensor<1>>,
    /// The MLP's input norm.
    ffn_norm: Norm,
    /// Gemma: the MLP output normalised before the residual add.
    post_ffn_norm: Option<Tensor<1>>,
    mlp: Mlp,
}

impl Block {
    /// Hands the packed weights' buffers to `pool` for the next layers of a streamed pass.
    fn recycle(self, pool: &BufferPool) {
        let mut linears = vec![self.qkv, self.o];
        if let Mlp::Dense(ffn) = self.mlp {
            linears.extend([ffn.up, ffn.down]);
        }
        for linear in linears {
            if let Linear::Packed { w, .. } = linear {
                pool.give(w.into_buffer());
            }
        }
    }
}

/// A norm's weight, and its bias where it is a LayerNorm (GPT-2).
struct Norm {
    weight: Tensor<1>,
    bias: Option<Tensor<1>>,
}

/// A gated MLP, `down · (act(gate · x) ⊙ up · x)`, or without a gate (GPT-2) `down · act(up · x)`.
struct Ffn {
    /// `hidden -> ffn`, or gated `hidden -> 2 ffn`: gate and up as one projection (gate first).
    up: Linear,
    gated: bool,
    down: Linear,
}

/// A linear layer's weight and bias, in the form the pass multiplies by.
// A few per block: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Linear {
    /// The CPU pass: packed for [`matmul`] once, the bias on the host.
    Packed {
        w: PackedMatrix,
        bias: Option<Vec<f32>>,
    },
    /// An engine's arithmetic ([`Arithmetic::LlamaCpp`]): each stacked projection as its stored
    /// blocks, multiplied by the engine's kernels into its own columns.
    Blocks {
        parts: Vec<BlockMatrix>,
        bias: Option<Vec<f32>>,
    },
    /// Other backends: `[in, out]` burn tensors, so the pass is `x.matmul(w)`.
    Burn {
        w: Tensor<2>,
        bias: Option<Tensor<1>>,
    },
}

impl Linear {
    /// `x · w (+ bias)` for `x: [N, in]`.
    fn apply(&self, x: Tensor<2>) -> Result<Tensor<2>, ScoringError> {
        match self {
            Linear::Packed { w, bias } => {
                let device = x.device();
                let n = x.dims()[0];
                let x = to_host(x)?;
                let mut y = vec![0.0f32; n * w.width()];
                matmul(&x, n, w, bias.as_deref(), &mut y, w.width());
                Ok(Tensor::from_data(
                    TensorData::new(y, [n, w.width()]),
                    &device,
                ))
            }
            Linear::Blocks { parts, bias } => {
                let device = x.device();
                let n = x.dims()[0];
                let x = to_host(x)?;
                let width: usize = parts.iter().map(BlockMatrix::rows).sum();
                let mut y = vec![0.0f32; n * width];
                let mut offset = 0;
                for part in parts {
                    let bias = bias.as_deref().map(|b| &b[offset..offset + part.rows()]);
                    part.matmul(&x, n, bias, &mut y[offset..], width);
                    offset += part.rows();
                }
                Ok(Tensor::from_data(TensorData::new(y, [n, width]), &device))
            }
            Linear::Burn { w, bias } => {
                let y = x.matmul(w.clone());
                Ok(match bias {
                    Some(bias) => y + bias.clone().unsqueeze_dim(0),
                    None => y,
                })
            }
        }
    }
}

// One per block: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Mlp {
    Dense(Ffn),
    /// Mixtral's sparse mixture: the router (`[hidden, experts]`) and the experts, or no
    /// experts when streamed: each is then read from the source only if a token routes to it.
    Experts {
        router: Linear,
        experts: Vec<Ffn>,
    },
}

/// Rows of the output head per chunk: the head over a large vocabulary is never one f32 matrix.
const HEAD_CHUNK_ROWS: usize = 8192;

/// The weights of the transformer blocks and the output head, by residency.
enum Weights<'m> {
    Resident {
        blocks: Vec<Block>,
        /// The output head's `[vocab, hidden]` rows in host memory, or `None` when it is tied
        /// to the embedding (then the embedding's rows serve, with no second copy).
        head: Option<Vec<f32>>,
        /// Embedding rows in host memory: a lookup needs no matmul.
        embedding: Vec<f32>,
        /// GPT-2's learned position rows (empty for the other families).
        positions: Vec<f32>,
    },
    /// Blocks and head chunks built from `source` on every pass, `layers_at_once` at a time.
    Streamed {
        source: Source<'m>,
        layers_at_once: usize,
    },
}

/// A model's weights on a burn device, ready for forward passes. Borrows the model: streamed
/// weights are read from its memory map during each pass.
pub struct Engine<'m> {
    device: Device,
    config: ModelConfig,
    final_norm: Norm,
    weights: Weights<'m>,
    cancel: Option<Arc<AtomicBool>>,
    /// The last pass's `[N, vocab]` rows: reused by the next pass once its caller has dropped
    /// them (a fresh buffer of Qwen's vocabulary is 450 MB of page faults and zeroing per
    /// batch of 8 challenges, 7 % of the pass in `perf`).
    last_logits: Mutex<Option<Arc<Vec<f32>>>>,
    /// The device is burn-flex on this CPU: the output head, attention and the gated activation
    /// run as host kernels (`kernels`) on its buffers; other backends run them as burn ops.
    host_kernels: bool,
    activation: Activation,
    /// pot's f32 arithmetic, or an engine's ([`Engine::with_arithmetic`]).
    arithmetic: Arithmetic,
    /// The output head as its stored blocks, under an engine's arithmetic.
    head_blocks: Option<BlockMatrix>,
}

/// Per-position next-token log-probabilities of one sequence: `len` rows of `vocab` values;
/// row `i` is the distribution of the token after position `i`.
pub struct SequenceLogProbs {
    pub len: usize,
    pub vocab: usize,
    /// The batch's packed `[N, vocab]` rows, shared by its sequences (the head writes them with
    /// one GEMM per chunk); this sequence's rows start at row `first`.
    batch: Arc<Vec<f32>>,
    first: usize,
}

impl SequenceLogProbs {
    /// All `len` rows, row-major.
    pub fn values(&self) -> &[f32] {
        &self.batch[self.first * self.vocab..(self.first + self.len) * self.vocab]
    }

    pub fn row(&self, i: usize) -> &[f32] {
        assert!(i < self.len, "row {i} of a {}-row sequence", self.len);
        let start = (self.first + i) * self.vocab;
        &self.batch[start..start + self.vocab]
    }
}

fn tensor1(values: Vec<f32>, device: &Device) -> Tensor<1> {
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [n]), device)
}

/// How a pass holds a linear layer's `[out, in]` weight as the `[in, out]` it multiplies by,
/// on backends other than the CPU's (which packs every weight, [`Form::packed`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// A transposed copy, made once when a resident model loads.
    Copied,
    /// The stored rows with transposed strides, no copy: a streamed pass builds every weight
    /// on every pass, where the copy cost more than the matmuls lose to the strided operand
    /// (`matmul_ceiling` example: within ±20 % per shape, either way).
    View,
}

/// How a block's weights are built: resident (`Layout::Copied`, a mixture's experts too) or
/// per pass (`Layout::View`), for the host GEMM (`packed`) or as burn tensors, and in buffers
/// from `pool` (a streamed pass's recycled ones) or new ones.
#[derive(Clone, Copy)]
struct Form<'p> {
    layout: Layout,
    packed: bool,
    pool: Option<&'p BufferPool>,
    arithmetic: Arithmetic,
}

/// A linear layer from its `[rows = out, cols = in]` row-major weight and its bias.
fn weight(
    values: Vec<f32>,
    rows: usize,
    cols: usize,
    bias: Option<Vec<f32>>,
    device: &Device,
    form: Form,
) -> Linear {
    if form.packed {
        let w = packed(values, rows, cols, form);
        return Linear::Packed { w, bias };
    }
    let w = match form.layout {
        Layout::Copied => tensor2_transposed(&values, rows, cols, device),
        Layout::View => {
            Tensor::<2>::from_data(TensorData::new(values, [rows, cols]), device).transpose()
        }
    };
    Linear::Burn {
        w,
        bias: bias.map(|b| tensor1(b, device)),
    }
}

/// `[rows = out, cols = in]` row-major weights packed for [`matmul`] (the values' buffer goes
/// back to the pass's pool).
fn packed(values: Vec<f32>, rows: usize, cols: usize, form: Form) -> PackedMatrix {
    let buffer = BufferPool::take_from(form.pool, PackedMatrix::packed_len(rows, cols));
    let w = PackedMatrix::from_rows_in(&values, rows, cols, buffer);
    if let Some(pool) = form.pool {
        pool.give(values);
    }
    w
}

/// `[rows, cols]` row-major values as a transposed `[cols, rows]` tensor.
fn tensor2_transposed(values: &[f32], rows: usize, cols: usize, device: &Device) -> Tensor<2> {
    let mut t = vec![0.0f32; values.len()];
    // Blocked transpose (both sides cache-friendly), output blocks of B rows in parallel.
    const B: usize = 64;
    t.par_chunks_mut(B * rows)
        .enumerate()
        .for_each(|(block, out)| {
            let c0 = block * B;
            let width = out.len() / rows;
            for r0 in (0..rows).step_by(B) {
                for r in r0..(r0 + B).min(rows) {
                    for dc in 0..width {
                        out[dc * rows + r] = values[r * cols + c0 + dc];
                    }
                }
            }
        });
    Tensor::from_data(TensorData::new(t, [cols, rows]), device)
}

/// Block `i`'s weights. Resident (`Layout::Copied`): a mixture's experts too. Streamed
/// (`Layout::View`): the experts are read per pass by [`load_expert`], only those the tokens use.
fn load_block(
    source: &Source,
    config: &ModelConfig,
    i: usize,
    device: &Device,
    form: Form,
) -> Result<Block, ScoringError> {
    if config.architecture.gpt2_family() {
        return load_gpt2_block(source, config, i, device, form);
    }
    let p = |s: &str| format!("model.layers.{i}.{s}");
    let matrix = |name: &str, bias: Option<Vec<f32>>| -> Result<Linear, ScoringError> {
        stacked_weight(source, &[p(name)], bias, device, form)
    };
    let stacked = |names: &[&str], bias: Option<Vec<f32>>| -> Result<Linear, ScoringError> {
        let names: Vec<String> = names.iter().map(|name| p(name)).collect();
        stacked_weight(source, &names, bias, device, form)
    };
    let vector = |name: &str| -> Result<Tensor<1>, ScoringError> {
        Ok(tensor1(source.vector(&p(name))?, device))
    };
    let optional = |present: bool, name: &str| -> Result<Option<Tensor<1>>, ScoringError> {
        present.then(|| vector(name)).transpose()
    };
    // Stacked projections' biases, concatenated in the same order.
    let biases = |present: bool, names: &[&str]| -> Result<Option<Vec<f32>>, ScoringError> {
        if !present {
            return Ok(None);
        }
        let mut values = Vec::new();
        for name in names {
            values.extend(source.vector(&p(name))?);
        }
        Ok(Some(values))
    };
    let arch = config.architecture;
    let qkv_bias = biases(
        config.qkv_bias,
        &[
            "self_attn.q_proj.bias",
            "self_attn.k_proj.bias",
            "self_attn.v_proj.bias",
        ],
    )?;
    // Phi-3 stores them fused already, in this order.
    let qkv = if arch.fused_projections() {
        matrix("self_attn.qkv_proj.weight", qkv_bias)?
    } else {
        stacked(
            &[
                "self_attn.q_proj.weight",
                "self_attn.k_proj.weight",
                "self_attn.v_proj.weight",
            ],
            qkv_bias,
        )?
    };
    let sandwich = arch.sandwich_norms();
    let mlp = if config.num_experts > 0 {
        Mlp::Experts {
            router: matrix("block_sparse_moe.gate.weight", None)?,
            experts: if form.layout == Layout::Copied {
                (0..config.num_experts)
                    .map(|e| load_expert(source, i, e, device, form))
                    .collect::<Result<_, _>>()?
            } else {
                Vec::new()
            },
        }
    } else {
        let up_bias = biases(config.mlp_bias, &["mlp.gate_proj.bias", "mlp.up_proj.bias"])?;
        let down_bias = biases(config.mlp_bias, &["mlp.down_proj.bias"])?;
        Mlp::Dense(Ffn {
            up: if arch.fused_projections() {
                matrix("mlp.gate_up_proj.weight", up_bias)?
            } else {
                stacked(&["mlp.gate_proj.weight", "mlp.up_proj.weight"], up_bias)?
            },
            gated: true,
            down: matrix("mlp.down_proj.weight", down_bias)?,
        })
    };
    let rms = |name: &str| -> Result<Norm, ScoringError> {
        Ok(Norm {
            weight: vector(name)?,
            bias: None,
        })
    };
    let head_norm = |name: &str| -> Result<Option<Vec<f32>>, ScoringError> {
        arch.qk_norm().then(|| source.vector(&p(name))).transpose()
    };
    Ok(Block {
        attn_norm: rms("input_layernorm.weight")?,
        qkv,
        q_norm: head_norm("self_attn.q_norm.weight")?,
        k_norm: head_norm("self_attn.k_norm.weight")?,
        o: matrix(
            "self_attn.o_proj.weight",
            biases(config.o_bias, &["self_attn.o_proj.bias"])?,
        )?,
        post_attn_norm: optional(sandwich, "post_attention_layernorm.weight")?,
        ffn_norm: rms(if sandwich {
            "pre_feedforward_layernorm.weight"
        } else {
            "post_attention_layernorm.weight"
        })?,
        post_ffn_norm: optional(sandwich, "post_feedforward_layernorm.weight")?,
        mlp,
    })
}

/// The families and settings whose llama.cpp arithmetic pot reproduces: the LLaMA block
/// (llama, mistral, qwen2: RMSNorm, RoPE without scaling, SwiGLU) with a rotation over the
/// whole head; anything else is refused by name rather than approximated.
pub fn emulation_supported(c: &ModelConfig) -> Result<(), ScoringError> {
    let refuse = |what: String| {
        Err(ScoringError::Backend(format!(
            "llama.cpp's arithmetic is emulated for the llama, mistral and qwen2 families with \
             plain RoPE and SwiGLU; this model has {what}: run it without --emulate"
        )))
    };
    match c.architecture {
        Architecture::Llama | Architecture::Qwen2 => {}
        other => return refuse(format!("architecture {other:?}")),
    }
    if c.rope_scaling != RopeScaling::Default {
        return refuse(format!("RoPE scaling {:?}", c.rope_scaling));
    }
    if c.hidden_act != "silu" {
        return refuse(format!("activation {}", c.hidden_act));
    }
    Ok(())
}

/// GPT-2's learned position embeddings.
const POSITIONS: &str = "transformer.wpe.weight";

/// A norm's weight and, for the GPT-2 family's LayerNorm, its bias (`{name}.weight`,
/// `{name}.bias`).
fn load_norm(
    source: &Source,
    config: &ModelConfig,
    name: &str,
    device: &Device,
) -> Result<Norm, ScoringError> {
    let bias = config
        .architecture
        .gpt2_family()
        .then(|| source.vector(&format!("{name}.bias")))
        .transpose()?;
    Ok(Norm {
        weight: tensor1(source.vector(&format!("{name}.weight"))?, device),
        bias: bias.map(|b| tensor1(b, device)),
    })
}

/// GPT-2 block `i`: `Conv1D` weights are stored `[in, out]`, the layout the pass multiplies
/// by, so they are used as read; `c_attn` is already q, k and v as one projection.
fn load_gpt2_block(
    source: &Source,
    config: &ModelConfig,
    i: usize,
    device: &Device,
    form: Form,
) -> Result<Block, ScoringError> {
    let p = |s: &str| format!("transformer.h.{i}.{s}");
    // `{name}.weight` (`[in, out]`) and `{name}.bias`.
    let conv1d = |name: &str| -> Result<Linear, ScoringError> {
        let (values, rows, cols) = source.matrix(&p(&format!("{name}.weight")))?;
        let bias = source.vector(&p(&format!("{name}.bias")))?;
        Ok(match form.packed {
            true => Linear::Packed {
                w: PackedMatrix::from_columns(&values, rows, cols),
                bias: Some(bias),
            },
            false => Linear::Burn {
                w: Tensor::from_data(TensorData::new(values, [rows, cols]), device),
                bias: Some(tensor1(bias, device)),
            },
        })
    };
    Ok(Block {
        attn_norm: load_norm(source, config, &p("ln_1"), device)?,
        qkv: conv1d("attn.c_attn")?,
        q_norm: None,
        k_norm: None,
        o: conv1d("attn.c_proj")?,
        post_attn_norm: None,
        ffn_norm: load_norm(source, config, &p("ln_2"), device)?,
        post_ffn_norm: None,
        mlp: Mlp::Dense(Ffn {
            up: conv1d("mlp.c_fc")?,
            gated: false,
            down: conv1d("mlp.c_proj")?,
        }),
    })
}

/// Expert `e` of block `i` of a mixture (Mixtral's names: w1 gate, w3 up, w2 down).
fn load_expert(
    source: &Source,
    i: usize,
    e: usize,
    device: &Device,
    form: Form,
) -> Result<Ffn, ScoringError> {
    let name = |w: &str| format!("model.layers.{i}.block_sparse_moe.experts.{e}.{w}.weight");
    Ok(Ffn {
        up: stacked_weight(source, &[name("w1"), name("w3")], None, device, form)?,
        gated: true,
        down: stacked_weight(source, &[name("w2")], None, device, form)?,
    })
}

/// Projections that read the same input as one weight: their `[out, in]` rows stacked in the
/// order given, then laid out as [`weight`] does.
fn stacked_weight(
    source: &Source,
    names: &[String],
    bias: Option<Vec<f32>>,
    device: &Device,
    form: Form,
) -> Result<Linear, ScoringError> {
    if form.arithmetic != Arithmetic::Exact {
        let parts = names
            .iter()
            .map(|name| source.blocks(name))
            .collect::<Result<_, _>>()?;
        names.iter().for_each(|name| source.release(name));
        return Ok(Linear::Blocks { parts, bias });
    }
    if form.packed {
        // F32 weights are packed straight from the memory map: no copy into a buffer first.
        if let Some((parts, cols)) = source.stacked_in_place(names) {
            let rows = parts.iter().map(|p| p.len() / cols.max(1)).sum();
            let buffer = BufferPool::take_from(form.pool, PackedMatrix::packed_len(rows, cols));
            let w = PackedMatrix::from_row_parts_in(&parts, cols, buffer);
            names.iter().for_each(|name| source.release(name));
            return Ok(Linear::Packed { w, bias });
        }
    }
    let (values, rows, cols) = source.stacked(names, form.pool)?;
    Ok(weight(values, rows, cols, bias, device, form))
}

fn head_chunks(vocab: usize) -> impl Iterator<Item = Range<usize>> {
    (0..vocab)
        .step_by(HEAD_CHUNK_ROWS)
        .map(move |start| start..(start + HEAD_CHUNK_ROWS).min(vocab))
}

impl<'m> Engine<'m> {
    /// Loads every weight of `model` as f32 onto `device`.
    pub fn load(model: &'m Model, device: Device) -> Result<Self, ScoringError> {
        Self::with_residency(model, device, Residency::Resident)
    }

    /// Prepares `model` for forward passes with the given residency: resident loads everything
    /// now; streamed reads nothing yet; int8 quantises every matrix now (one tensor at a time).
    pub fn with_residency(
        model: &'m Model,
        device: Device,
        residency: Residency,
    ) -> Result<Self, ScoringError> {
        Self::with_arithmetic(model, device, residency, Arithmetic::Exact)
    }

    /// [`Engine::with_residency`] computing as `arithmetic` says: an engine's roundings
    /// (`emulate`) need the CPU pass's host kernels and the stored weights (not int8).
    pub fn with_arithmetic(
        model: &'m Model,
        device: Device,
        residency: Residency,
        arithmetic: Arithmetic,
    ) -> Result<Self, ScoringError> {
        let host_kernels = device == Device::flex();
        if arithmetic != Arithmetic::Exact {
            if !host_kernels {
                return Err(ScoringError::Backend(format!(
                    "{} arithmetic is emulated on the CPU backend only",
                    arithmetic.describe()
                )));
            }
            if residency == Residency::Int8 {
                return Err(ScoringError::Backend(
                    "an engine's arithmetic cannot be emulated over pot's int8 weights: drop \
                     --enable-8bit or --emulate"
                        .into(),
                ));
            }
        }
        Self::build(model, device, residency, host_kernels, arithmetic)
    }

    /// [`Engine::with_residency`] running every part of the pass as burn ops, as on the
    /// backends other than the CPU's, whatever the device: tests compare the two on the CPU.
    pub fn with_burn_ops(
        model: &'m Model,
        device: Device,
        residency: Residency,
    ) -> Result<Self, ScoringError> {
        Self::build(model, device, residency, false, Arithmetic::Exact)
    }

    fn build(
        model: &'m Model,
        device: Device,
        residency: Residency,
        host_kernels: bool,
        arithmetic: Arithmetic,
    ) -> Result<Self, ScoringError> {
        let config = model.config().clone();
        let source = Source::Model(model);
        let final_norm = load_norm(&source, &config, config.final_norm_name(), &device)?;
        let embedding_name = config.embedding_name();
        let weights = match residency {
            Residency::Resident => {
                let blocks = (0..config.num_hidden_layers)
                    .map(|i| {
                        let form = Form {
                            layout: Layout::Copied,
                            packed: host_kernels,
                            pool: None,
                            arithmetic,
                        };
                        load_block(&source, &config, i, &device, form)
                    })
                    .collect::<Result<_, _>>()?;
                let embedding = model.load_f32(embedding_name)?;
                source.release(embedding_name);
                let positions = if config.architecture.gpt2_family() {
                    let values = model.load_f32(POSITIONS)?;
                    source.release(POSITIONS);
                    values
                } else {
                    Vec::new()
                };
                // A tied head is the embedding already in memory: no second read of it.
                let head = if config.tie_word_embeddings {
                    None
                } else {
                    let values = model.load_f32(config.head_name())?;
                    source.release(config.head_name());
                    Some(values)
                };
                Weights::Resident {
                    blocks,
                    head,
                    embedding,
                    positions,
                }
            }
            Residency::Streamed { layers_at_once } => Weights::Streamed {
                source,
                layers_at_once: layers_at_once.max(1),
            },
            Residency::Int8 => Weights::Streamed {
                source: Source::Int8(Int8Store::quantize(model)?),
                layers_at_once: 1,
            },
        };
        // Under an engine's arithmetic the head multiplies as the engine's kernels do (a tied
        // head is the embedding's blocks).
        let head_blocks = match arithmetic {
            Arithmetic::Exact => None,
            _ => {
                emulation_supported(&config)?;
                Some(Source::Model(model).blocks(config.head_name())?)
            }
        };
        Ok(Self {
            host_kernels,
            arithmetic,
            head_blocks,
            activation: Activation::of(&config.hidden_act),
            device,
            config,
            final_norm,
            weights,
            cancel: None,
            last_logits: Mutex::new(None),
        })
    }

    /// How a pass builds the blocks it reads from a source (streamed weights, experts).
    fn streamed_form<'p>(&self, pool: Option<&'p BufferPool>) -> Form<'p> {
        Form {
            layout: Layout::View,
            packed: self.host_kernels,
            pool,
            arithmetic: self.arithmetic,
        }
    }

    /// A flag another thread (the memory monitor) sets to stop passes between layers.
    pub fn set_cancel(&mut self, flag: Arc<AtomicBool>) {
        self.cancel = Some(flag);
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The arithmetic this engine computes with.
    pub fn arithmetic(&self) -> Arithmetic {
        self.arithmetic
    }

    fn check_cancel(&self) -> Result<(), ScoringError> {
        match &self.cancel {
            Some(flag) if flag.load(Ordering::Relaxed) => Err(ScoringError::Cancelled),
            _ => Ok(()),
        }
    }

    /// Teacher-forced pass over a batch of token sequences (any lengths >= 1); returns each
    /// sequence's per-position next-token log-probabilities.
    pub fn forward(&self, batch: &[Vec<u32>]) -> Result<Vec<SequenceLogProbs>, ScoringError> {
        let c = &self.config;
        let (d, vocab) = (c.hidden_size, c.vocab_size);
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(empty) = batch.iter().position(Vec::is_empty) {
            return Err(ScoringError::Backend(format!(
                "sequence {empty} of the batch has no tokens"
            )));
        }
        // Sequence s occupies rows starts[s] .. starts[s] + len of the packed batch.
        let starts: Vec<usize> = batch
            .iter()
            .scan(0, |next, ids| {
                let start = *next;
                *next += ids.len();
                Some(start)
            })
            .collect();
        let n: usize = batch.iter().map(Vec::len).sum();
        // Embedding lookup on the host.
        let mut x = vec![0.0f32; n * d];
        for (ids, &start) in batch.iter().zip(&starts) {
            for (i, &id) in ids.iter().enumerate() {
                let id = id as usize;
                if id >= vocab {
                    return Err(ScoringError::TokenOutOfRange {
                        id: id as u32,
                        vocab,
                    });
                }
                let row = &mut x[(start + i) * d..(start + i + 1) * d];
                match &self.weights {
                    Weights::Resident { embedding, .. } => {
                        row.copy_from_slice(&embedding[id * d..(id + 1) * d])
                    }
                    Weights::Streamed { source, .. } => {
                        row.copy_from_slice(&source.rows(c.embedding_name(), id..id + 1)?)
                    }
                }
            }
        }
        if let Weights::Streamed { source, .. } = &self.weights {
            source.release(c.embedding_name());
        }
        // GPT-2 adds each token's learned position (its index within its own sequence).
        if c.architecture.gpt2_family() {
            let longest = batch.iter().map(Vec::len).max().unwrap_or(0);
            if longest > c.max_position_embeddings {
                return Err(ScoringError::Backend(format!(
                    "a sequence of {longest} tokens is longer than the model's {} positions",
                    c.max_position_embeddings
                )));
            }
            let streamed;
            let table: &[f32] = match &self.weights {
                Weights::Resident { positions, .. } => positions,
                Weights::Streamed { source, .. } => {
                    streamed = source.rows(POSITIONS, 0..longest)?;
                    source.release(POSITIONS);
                    &streamed
                }
            };
            for (ids, &start) in batch.iter().zip(&starts) {
                for pos in 0..ids.len() {
                    let row = &mut x[(start + pos) * d..(start + pos + 1) * d];
                    for (v, p) in row.iter_mut().zip(&table[pos * d..(pos + 1) * d]) {
                        *v += p;
                    }
                }
            }
        }
        // Gemma scales the embedding by sqrt(hidden), rounded to f32 as transformers' buffer.
        if c.architecture == Architecture::Gemma3 {
            let scale = (d as f64).sqrt() as f32;
            x.iter_mut().for_each(|v| *v *= scale);
        }
        let mut x: Tensor<2> = Tensor::from_data(TensorData::new(x, [n, d]), &self.device);
        // Buffers of packed weights (streamed layers, head chunks) reused within this pass.
        let pool = BufferPool::default();
        let packing = Packing::new(
            c,
            batch,
            &starts,
            (!self.host_kernels).then_some(&self.device),
        );
        match &self.weights {
            Weights::Resident { blocks, .. } => {
                for (i, block) in blocks.iter().enumerate() {
                    self.check_cancel()?;
                    x = self.block(block, i, x, &packing, None)?;
                }
            }
            Weights::Streamed {
                source,
                layers_at_once,
            } => {
                // Double buffering: the next group of layers is read while this one computes
                // (the plan counts both).
                let layers: Vec<usize> = (0..c.num_hidden_layers).collect();
                let groups: Vec<&[usize]> = layers.chunks(*layers_at_once).collect();
                let mut state = Some(x);
                read_ahead(
                    groups,
                    |group| {
                        group
                            .iter()
                            .map(|&i| {
                                load_block(
                                    source,
                                    c,
                                    i,
                                    &self.device,
                                    self.streamed_form(Some(&pool)),
                                )
                                .map(|b| (i, b))
                            })
                            .collect::<Result<Vec<_>, _>>()
                    },
                    |blocks| {
                        self.check_cancel()?;
                        for (i, block) in blocks {
                            let input = state.take().expect("set before each group");
                            state = Some(self.block(&block, i, input, &packing, Some(source))?);
                            block.recycle(&pool);
                        }
                        Ok(())
                    },
                )?;
                x = state.expect("set after the last group");
            }
        }
        let x = self.norm(x, &self.final_norm);

        // Logits chunk by chunk into the packed rows, then log-softmax per row on the host.
        // Every value is written below before it is read: the last pass's values may remain.
        let mut logits = self
            .last_logits
            .lock()
            .ok()
            .and_then(|mut last| last.take())
            .and_then(|last| Arc::try_unwrap(last).ok())
            .unwrap_or_default();
        logits.truncate(n * vocab);
        logits.resize(n * vocab, 0.0);
        if let Some(head) = &self.head_blocks {
            self.check_cancel()?;
            head.matmul(&to_host(x)?, n, None, &mut logits, vocab);
            return Ok(self.finish(logits, batch, &starts));
        }
        let host_x = match self.host_kernels {
            true => Some(to_host(x.clone())?),
            false => None,
        };
        // Logits of head rows `rows` (`w`: those rows of the head) into their columns.
        let mut write = |rows: Range<usize>, w: &[f32]| -> Result<(), ScoringError> {
            self.check_cancel()?;
            if let Some(host_x) = &host_x {
                // Packed per pass (6 ms per 8,192 x 896 chunk, 4 % of its product): a resident
                // packed copy would double a tied head's memory.
                let buffer = pool.take(PackedMatrix::packed_len(rows.len(), d));
                let packed = PackedMatrix::from_rows_in(w, rows.len(), d, buffer);
                matmul(host_x, n, &packed, None, &mut logits[rows.start..], vocab);
                pool.give(packed.into_buffer());
                return Ok(());
            }
            // Other backends: the chunk goes to the device for the matmul (per pass: the
            // device then never holds the whole head), the logits come back.
            let chunk =
                Tensor::<2>::from_data(TensorData::new(w.to_vec(), [rows.len(), d]), &self.device);
            let values = to_host(x.clone().matmul(chunk.transpose()))?;
            for (to, from) in logits.chunks_mut(vocab).zip(values.chunks(rows.len())) {
                to[rows.clone()].copy_from_slice(from);
            }
            Ok(())
        };
        match &self.weights {
            Weights::Resident {
                head, embedding, ..
            } => {
                let head = head.as_deref().unwrap_or(embedding);
                for rows in head_chunks(vocab) {
                    write(rows.clone(), &head[rows.start * d..rows.end * d])?;
                }
            }
            // The next chunk is read while this one multiplies, as the layers are.
            Weights::Streamed { source, .. } => read_ahead(
                head_chunks(vocab).collect(),
                |rows| {
                    let w = source.rows(c.head_name(), rows.clone())?;
                    // Keep the mapped pages of a large head from piling up chunk after chunk.
                    source.release(c.head_name());
                    Ok((rows, w))
                },
                |(rows, w)| write(rows, &w),
            )?,
        }
        Ok(self.finish(logits, batch, &starts))
    }

    /// Log-softmax of the batch's `[N, vocab]` logits, shared by its sequences' views.
    fn finish(
        &self,
        mut logits: Vec<f32>,
        batch: &[Vec<u32>],
        starts: &[usize],
    ) -> Vec<SequenceLogProbs> {
        let vocab = self.config.vocab_size;
        logits
            .par_chunks_mut(vocab)
            .for_each(kernels::log_softmax_in_place);
        let batch_rows = Arc::new(logits);
        if let Ok(mut last) = self.last_logits.lock() {
            *last = Some(Arc::clone(&batch_rows));
        }
        batch
            .iter()
            .zip(starts)
            .map(|(ids, &first)| SequenceLogProbs {
                len: ids.len(),
                vocab,
                batch: Arc::clone(&batch_rows),
                first,
            })
            .collect()
    }

    /// Transformer block `layer` over the packed batch `x: [N, hidden]`. `source` is where a
    /// streamed mixture's experts are read from (resident blocks hold theirs).
    fn block(
        &self,
        w: &Block,
        layer: usize,
        x: Tensor<2>,
        packing: &Packing,
        source: Option<&Source>,
    ) -> Result<Tensor<2>, ScoringError> {
        let c = &self.config;
        let (hd, heads, kv_heads) = (c.head_dim, c.num_attention_heads, c.num_key_value_heads);
        let groups = heads / kv_heads;
        let n = x.dims()[0];
        let eps = c.rms_norm_eps;
        let local = c.is_local_layer(layer);
        let windowed = c.layer_window(layer).is_some();

        let h = self.norm(x.clone(), &w.attn_norm);
        let qkv = w.qkv.apply(h)?;
        let scale = 1.0 / c.query_pre_attn_scalar.unwrap_or(hd as f64).sqrt();
        let rotary = packing.rotary(local);
        let rope = !c.architecture.gpt2_family(); // GPT-2 added learned positions instead
        let attn = if let Arithmetic::LlamaCpp { .. } = self.arithmetic {
            let mut qkv = to_host(qkv)?;
            let out = emulate::attention(
                &mut qkv,
                &packing.spans,
                &emulate::Attention {
                    heads,
                    kv_heads,
                    head_dim: hd,
                    scale: scale as f32,
                    window: c.layer_window(layer),
                    rope_base: Some(c.rope_theta as f32),
                    f16_cache: self.arithmetic.kv_f16(),
                    interleaved: matches!(&w.qkv, Linear::Blocks { parts, .. } if parts[0].permuted()),
                },
            );
            Tensor::from_data(TensorData::new(out, [n, heads * hd]), &self.device)
        } else if self.host_kernels {
            let mut qkv = to_host(qkv)?;
            let out = kernels::attention(
                &mut qkv,
                &packing.spans,
                &kernels::Attention {
                    heads,
                    kv_heads,
                    head_dim: hd,
                    scale: scale as f32,
                    window: c.layer_window(layer),
                    q_norm: w.q_norm.as_deref(),
                    k_norm: w.k_norm.as_deref(),
                    eps: eps as f32,
                    rope: rope.then_some((&rotary.host_cos[..], &rotary.host_sin[..])),
                },
            );
            Tensor::from_data(TensorData::new(out, [n, heads * hd]), &self.device)
        } else {
            let (q_end, k_end) = (heads * hd, (heads + kv_heads) * hd);
            let part = |cols: Range<usize>, count: usize, norm: &Option<Vec<f32>>| {
                let t = qkv.clone().slice([0..n, cols]).reshape([n, count, hd]);
                let t = head_norm(t, &norm.clone().map(|w| tensor1(w, &self.device)), eps);
                if rope { packing.rope(t, rotary) } else { t }
            };
            let q = part(0..q_end, heads, &w.q_norm);
            let k = part(q_end..k_end, kv_heads, &w.k_norm);
            let v = qkv
                .clone()
                .slice([0..n, k_end..k_end + kv_heads * hd])
                .reshape([n, kv_heads, hd]);
            // Attention per sequence. Grouped-query attention without copying k/v: the query
            // heads sharing a key/value head (heads g*groups .. (g+1)*groups, as in Hugging
            // Face's repeat_kv) are stacked along time.
            let per_sequence: Vec<Tensor<2>> = packing
                .spans
                .iter()
                .map(|&(start, t)| {
                    let rows = start..start + t;
                    let q = q
                        .clone()
                        .slice([rows.clone(), 0..heads, 0..hd])
                        .swap_dims(0, 1) // [heads, t, hd]
                        .reshape([kv_heads, groups * t, hd]);
                    let k = k
                        .clone()
                        .slice([rows.clone(), 0..kv_heads, 0..hd])
                        .swap_dims(0, 1);
                    let v = v.clone().slice([rows, 0..kv_heads, 0..hd]).swap_dims(0, 1);
                    let scores = q.matmul(k.swap_dims(1, 2)).mul_scalar(scale)
                        + packing.masks[&(t, windowed)].clone().unsqueeze_dim::<3>(0);
                    softmax(scores, 2)
                        .matmul(v) // [kv, groups*t, hd]
                        .reshape([heads, t, hd])
                        .swap_dims(0, 1)
                        .reshape([t, heads * hd])
                })
                .collect();
            Tensor::cat(per_sequence, 0)
        };
        let attn = w.o.apply(attn)?;
        let x = x + post_norm(attn, &w.post_attn_norm, eps);

        let h = self.norm(x.clone(), &w.ffn_norm);
        let mlp = match &w.mlp {
            Mlp::Dense(ffn) => self.ffn(ffn, h)?,
            Mlp::Experts { router, experts } => self.experts(h, router, experts, layer, source)?,
        };
        Ok(x + post_norm(mlp, &w.post_ffn_norm, eps))
    }

    /// `down · (act(gate · h) ⊙ up · h)`, or `down · act(up · h)` without a gate, with the
    /// configured activation; gated on the CPU, the activation and product are one host pass.
    fn ffn(&self, w: &Ffn, h: Tensor<2>) -> Result<Tensor<2>, ScoringError> {
        let act = |t: Tensor<2>| match self.activation {
            Activation::GeluTanh => gelu_approximate(t),
            Activation::Silu => silu(t),
        };
        let up = w.up.apply(h)?;
        let [n, width] = up.dims();
        let inner = match (w.gated, self.host_kernels) {
            (true, _) if self.arithmetic != Arithmetic::Exact => {
                let up = to_host(up)?;
                let inner = emulate::swiglu(&up, width / 2);
                Tensor::from_data(TensorData::new(inner, [n, width / 2]), &self.device)
            }
            (false, _) => act(up),
            (true, true) => {
                let up = to_host(up)?;
                let inner = kernels::gated_activation(&up, width / 2, self.activation);
                Tensor::from_data(TensorData::new(inner, [n, width / 2]), &self.device)
            }
            (true, false) => {
                let gate = up.clone().slice([0..n, 0..width / 2]);
                act(gate) * up.slice([0..n, width / 2..width])
            }
        };
        w.down.apply(inner)
    }

    /// The family's norm over the last dimension: LayerNorm with its bias (GPT-2) or RMSNorm.
    fn norm(&self, x: Tensor<2>, norm: &Norm) -> Tensor<2> {
        let eps = self.config.rms_norm_eps;
        if self.arithmetic != Arithmetic::Exact && norm.bias.is_none() {
            let [n, d] = x.dims();
            let host = to_host(x.clone());
            let w = to_host(norm.weight.clone().unsqueeze_dim::<2>(0));
            if let (Ok(host), Ok(w)) = (host, w) {
                let y = emulate::rms_norm(&host, &w, eps as f32);
                return Tensor::from_data(TensorData::new(y, [n, d]), &self.device);
            }
        }
        match &norm.bias {
            Some(bias) => layer_norm(x, &norm.weight, bias, eps),
            None => rms_norm(x, &norm.weight, eps),
        }
    }

    /// Mixtral's sparse MLP over `h: [N, hidden]`: router probabilities on the host, each
    /// expert run once over the rows routed to it, outputs summed with the routing weights.
    /// Streamed (`experts` empty), an expert no token picks is never read.
    fn experts(
        &self,
        h: Tensor<2>,
        router: &Linear,
        experts: &[Ffn],
        layer: usize,
        source: Option<&Source>,
    ) -> Result<Tensor<2>, ScoringError> {
        let c = &self.config;
        let [n, d] = h.dims();
        let logits = to_host(router.apply(h.clone())?)?;
        let routes = route(&logits, c.num_experts, c.experts_per_token);
        let rows = to_host(h)?;
        let mut out = vec![0.0f32; n * d];
        for (e, routed) in routes.iter().enumerate() {
            if routed.is_empty() {
                continue;
            }
            let loaded;
            let ffn = match (experts.get(e), source) {
                (Some(ffn), _) => ffn,
                (None, Some(source)) => {
                    loaded = load_expert(source, layer, e, &self.device, self.streamed_form(None))?;
                    &loaded
                }
                (None, None) => {
                    return Err(ScoringError::Backend(format!(
                        "expert {e} of layer {layer} is neither loaded nor readable"
                    )));
                }
            };
            let mut gathered = Vec::with_capacity(routed.len() * d);
            for &(row, _) in routed {
                gathered.extend_from_slice(&rows[row * d..(row + 1) * d]);
            }
            let input =
                Tensor::from_data(TensorData::new(gathered, [routed.len(), d]), &self.device);
            let y = to_host(self.ffn(ffn, input)?)?;
            for (k, &(row, weight)) in routed.iter().enumerate() {
                let dst = &mut out[row * d..(row + 1) * d];
                for (o, v) in dst.iter_mut().zip(&y[k * d..(k + 1) * d]) {
                    *o += weight * v;
                }
            }
        }
        Ok(Tensor::from_data(
            TensorData::new(out, [n, d]),
            &self.device,
        ))
    }
}

/// Runs `load` over `items` on a loader thread one item ahead of `consume` on this one: while
/// `consume` works on item i, item i + 1 is loaded and waits (a rendezvous channel), so at most
/// two loaded items exist at once. Stops at the first error of either side; when `consume`
/// stops early, the loader's next hand-over fails and it ends.
fn read_ahead<I: Send, T: Send>(
    items: Vec<I>,
    load: impl Fn(I) -> Result<T, ScoringError> + Send,
    mut consume: impl FnMut(T) -> Result<(), ScoringError>,
) -> Result<(), ScoringError> {
    std::thread::scope(|scope| {
        let (ready, next) = std::sync::mpsc::sync_channel(0);
        scope.spawn(move || {
            for item in items {
                let loaded = load(item);
                let failed = loaded.is_err();
                if ready.send(loaded).is_err() || failed {
                    break;
                }
            }
        });
        for loaded in next.iter() {
            consume(loaded?)?;
        }
        Ok(())
    })
}

fn to_host<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, ScoringError> {
    t.into_data()
        .try_into_vec::<f32>()
        .map_err(|e| ScoringError::Backend(format!("{e:?}")))
}

/// Per expert, the rows routed to it and their weights: per row, the softmax over all experts'
/// logits, its `k` largest (ties to the lower expert, as torch.topk), renormalised to sum 1
/// (Mixtral's `MixtralTopKRouter`). `logits` holds `experts` values per row.
pub(crate) fn route(logits: &[f32], experts: usize, k: usize) -> Vec<Vec<(usize, f32)>> {
    let mut routes = vec![Vec::new(); experts];
    for (row, l) in logits.chunks(experts).enumerate() {
        let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = l.iter().map(|v| (v - max).exp()).collect();
        let total: f32 = exp.iter().sum();
        let mut order: Vec<usize> = (0..experts).collect();
        order.sort_by(|&a, &b| exp[b].total_cmp(&exp[a]).then(a.cmp(&b)));
        let chosen = &order[..k];
        let mass: f32 = chosen.iter().map(|&e| exp[e] / total).sum();
        for &e in chosen {
            routes[e].push((row, exp[e] / total / mass));
        }
    }
    routes
}

/// Gemma's norm of a sublayer's output before the residual add, where the block has one.
fn post_norm(x: Tensor<2>, weight: &Option<Tensor<1>>, eps: f64) -> Tensor<2> {
    match weight {
        Some(weight) => rms_norm(x, weight, eps),
        None => x,
    }
}

/// Qwen3's per-head RMSNorm of `[N, heads, head_dim]` (one weight of `head_dim` shared by the
/// heads), where the architecture has it.
fn head_norm(x: Tensor<3>, weight: &Option<Tensor<1>>, eps: f64) -> Tensor<3> {
    let Some(weight) = weight else {
        return x;
    };
    let [n, heads, hd] = x.dims();
    rms_norm(x.reshape([n * heads, hd]), weight, eps).reshape([n, heads, hd])
}

/// `(x - mean) / sqrt(var + eps) * weight + bias` over the last dimension of `[N, hidden]`
/// (biased variance, as torch's LayerNorm).
fn layer_norm(x: Tensor<2>, weight: &Tensor<1>, bias: &Tensor<1>, eps: f64) -> Tensor<2> {
    let centred = x.clone() - x.mean_dim(1);
    let scale = centred
        .clone()
        .powi_scalar(2)
        .mean_dim(1)
        .add_scalar(eps)
        .sqrt()
        .recip();
    centred * scale * weight.clone().unsqueeze_dim(0) + bias.clone().unsqueeze_dim(0)
}

/// `x / sqrt(mean(x^2) + eps) * weight` over the last dimension of `[N, hidden]`.
fn rms_norm(x: Tensor<2>, weight: &Tensor<1>, eps: f64) -> Tensor<2> {
    let scale = x
        .clone()
        .powi_scalar(2)
        .mean_dim(1)
        .add_scalar(eps)
        .sqrt()
        .recip();
    x * scale * weight.clone().unsqueeze_dim(0)
}

/// Where each sequence sits in the packed batch, with what attention and RoPE need: the
/// attention masks by length and each row's rotary angles (its position within its own
/// sequence).
struct Packing {
    /// (first row, length) per sequence.
    spans: Vec<(usize, usize)>,
    /// For burn ops only (empty with the host kernels):
    /// `[groups * t, t]` additive masks by (length, windowed): 0 where a query may attend,
    /// -inf for later keys (and, windowed, for keys `window` or more positions back, as
    /// transformers' `sliding_window_overlay`); rows are the query heads of one key/value group
    /// stacked (see `block`).
    masks: HashMap<(usize, bool), Tensor<2>>,
    /// Per-row rotary tables of the global layers and, where the config has another RoPE base
    /// for its sliding-window layers (Gemma 3), of those.
    global: Rotary,
    local: Option<Rotary>,
    half: usize,
}

/// `[N, head_dim]` per-row cos and sin, rotate-half convention (Hugging Face layout; GGUF
/// LLaMA files are un-permuted into it when read), in host memory for the CPU attention and,
/// for burn ops, as `[N, 1, head_dim]` tensors.
struct Rotary {
    host_cos: Vec<f32>,
    host_sin: Vec<f32>,
    tensors: Option<(Tensor<3>, Tensor<3>)>,
}

impl Rotary {
    fn new(
        freqs: &[f64],
        scaling: f64,
        batch: &[Vec<u32>],
        starts: &[usize],
        hd: usize,
        device: Option<&Device>,
    ) -> Self {
        let half = hd / 2;
        let n: usize = batch.iter().map(Vec::len).sum();
        let (mut cos, mut sin) = (vec![0.0f32; n * hd], vec![0.0f32; n * hd]);
        for (ids, &start) in batch.iter().zip(starts) {
            for pos in 0..ids.len() {
                let row = (start + pos) * hd;
                for (i, freq) in freqs.iter().enumerate() {
                    let angle = pos as f64 * freq;
                    for j in [i, i + half] {
                        cos[row + j] = (angle.cos() * scaling) as f32;
                        sin[row + j] = (angle.sin() * scaling) as f32;
                    }
                }
            }
        }
        let tensors = device.map(|device| {
            let make =
                |v: &[f32]| Tensor::<3>::from_data(TensorData::new(v.to_vec(), [n, 1, hd]), device);
            (make(&cos), make(&sin))
        });
        Self {
            host_cos: cos,
            host_sin: sin,
            tensors,
        }
    }
}

impl Packing {
    /// `burn_ops`: the device the burn-op attention runs on, which needs masks and rotary
    /// tensors; `None` when the host kernels run it (they need neither).
    fn new(
        c: &ModelConfig,
        batch: &[Vec<u32>],
        starts: &[usize],
        burn_ops: Option<&Device>,
    ) -> Self {
        let (hd, half) = (c.head_dim, c.head_dim / 2);
        let groups = c.num_attention_heads / c.num_key_value_heads;
        let freqs = c.rope_scaling.inverse_frequencies(c.rope_theta, hd);
        // YaRN scales cos and sin (its attention temperature); 1 for the other scalings.
        let global = Rotary::new(
            &freqs,
            c.rope_scaling.attention_scaling(),
            batch,
            starts,
            hd,
            burn_ops,
        );
        let local = c.local_rope_theta.map(|theta| {
            let freqs = RopeScaling::Default.inverse_frequencies(theta, hd);
            Rotary::new(&freqs, 1.0, batch, starts, hd, burn_ops)
        });
        // The masks the layers use: windowed, full, or both (Gemma 3).
        let window = c.sliding_window.unwrap_or(usize::MAX);
        let kinds: Vec<bool> = {
            let mut kinds: Vec<bool> = (0..c.num_hidden_layers)
                .map(|i| c.layer_window(i).is_some())
                .collect();
            kinds.sort();
            kinds.dedup();
            kinds
        };
        let mut masks = HashMap::new();
        if let Some(device) = burn_ops {
            for ids in batch {
                let t = ids.len();
                for &windowed in &kinds {
                    masks.entry((t, windowed)).or_insert_with(|| {
                        let window = if windowed { window } else { usize::MAX };
                        let mut bias = vec![0.0f32; groups * t * t];
                        for g in 0..groups {
                            for q in 0..t {
                                for k in 0..t {
                                    if k > q || q - k >= window {
                                        bias[(g * t + q) * t + k] = f32::NEG_INFINITY;
                                    }
                                }
                            }
                        }
                        Tensor::from_data(TensorData::new(bias, [groups * t, t]), device)
                    });
                }
            }
        }
        Self {
            spans: starts
                .iter()
                .zip(batch)
                .map(|(&start, ids)| (start, ids.len()))
                .collect(),
            masks,
            global,
            local,
            half,
        }
    }

    /// The rotary tables of a layer: the local layers' where `local` and the config has them.
    fn rotary(&self, local: bool) -> &Rotary {
        match (&self.local, local) {
            (Some(tables), true) => tables,
            _ => &self.global,
        }
    }

    /// `x * cos + rotate_half(x) * sin` for `x: [N, heads, head_dim]`.
    fn rope(&self, x: Tensor<3>, tables: &Rotary) -> Tensor<3> {
        let [n, h, hd] = x.dims();
        let x1 = x.clone().slice([0..n, 0..h, 0..self.half]);
        let x2 = x.clone().slice([0..n, 0..h, self.half..hd]);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 2);
        let (cos, sin) = tables.tensors.as_ref().expect("built for burn ops");
        x * cos.clone() + rotated * sin.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::route;

    #[test]
    fn routing_keeps_the_top_k_renormalised_with_ties_to_the_lower_expert() {
        // Row 0: experts 2 and 0 lead; row 1: a three-way tie, so experts 0 and 1.
        let logits = [1.0, -1.0, 2.0, 0.0, 0.5, 0.5, 0.5, -3.0];
        let routes = route(&logits, 4, 2);
        let close = |got: &[(usize, f32)], want: &[(usize, f32)]| {
            got.len() == want.len()
                && got
                    .iter()
                    .zip(want)
                    .all(|(g, w)| g.0 == w.0 && (g.1 - w.1).abs() < 1e-6)
        };
        let (e0, e2) = (1f32.exp(), 2f32.exp());
        assert!(close(&routes[2], &[(0, e2 / (e0 + e2))]), "{routes:?}");
        assert!(
            close(&routes[0], &[(0, e0 / (e0 + e2)), (1, 0.5)]),
            "{routes:?}"
        );
        assert!(close(&routes[1], &[(1, 0.5)]), "{routes:?}");
        assert!(routes[3].is_empty());
        for row in 0..2 {
            let total: f32 = routes
                .iter()
                .flatten()
                .filter(|r| r.0 == row)
                .map(|r| r.1)
                .sum();
            assert!((total - 1.0).abs() < 1e-6);
        }
    }
}

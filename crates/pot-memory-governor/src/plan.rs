//! Choosing how to hold a model's weights before reading any of them.
//!
//! Estimates are upper bounds built from sizes (docs/MEMORY.md has the formulas and how they
//! compare with measured peaks): weights as held, the transient copies made while building a
//! layer (values, transposed copy, mapped pages), activations of one batch, the host
//! log-probability rows of one batch, and a fixed baseline for the process itself.

use pot_formats::ModelDescription;

use crate::{SystemMemory, gb};

/// Rows of the output head per chunk; must match pot-scoring's `HEAD_CHUNK_ROWS`.
const HEAD_CHUNK_ROWS: u64 = 8192;
/// Process baseline: code, allocator, tokenizer, challenge set, report (measured ~150 MB on the
/// fixtures; rounded up).
const BASELINE_BYTES: u64 = 256 << 20;
/// int8 bytes per weight: one byte plus an f32 scale per 32 values.
const INT8_BYTES_PER_WEIGHT: f64 = 1.0 + 4.0 / 32.0;

/// What the user allows.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// `--max-memory`: the most this process may hold.
    pub max_memory_bytes: u64,
    /// `--min-free`: memory to leave available to the rest of the system.
    pub min_free_bytes: u64,
    /// `--enable-offload`: stream weights layer by layer when they do not fit.
    pub enable_offload: bool,
    /// `--enable-8bit`: hold weights as int8.
    pub enable_8bit: bool,
}

impl Limits {
    /// What pot may hold: min(--max-memory, available - --min-free); just --max-memory where
    /// the system's memory cannot be read.
    pub fn budget_bytes(&self, system: Option<SystemMemory>) -> Result<u64, PlanError> {
        match system.map(|s| s.available_bytes) {
            Some(available) if available <= self.min_free_bytes => Err(PlanError::NoMemoryLeft {
                available: gb(available),
                min_free: gb(self.min_free_bytes),
            }),
            Some(available) => Ok(self.max_memory_bytes.min(available - self.min_free_bytes)),
            None => Ok(self.max_memory_bytes),
        }
    }
}

/// The work one forward pass does: sequences per batch and their longest length.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Workload {
    pub batch_size: usize,
    pub max_tokens: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Strategy {
    Resident,
    /// One layer at a time: the engine does not prefetch, so holding more layers would cost
    /// memory without saving time.
    Streamed {
        layers_at_once: usize,
    },
    Int8,
}

impl Strategy {
    /// The name the report (`strategy.kind`) and `pot plan` use.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Resident => "resident",
            Strategy::Streamed { .. } => "streamed",
            Strategy::Int8 => "int8",
        }
    }
}

/// Estimated peak bytes of one model under one strategy, by part.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Estimate {
    pub weights_bytes: u64,
    pub transient_bytes: u64,
    pub activation_bytes: u64,
    pub logits_bytes: u64,
    pub baseline_bytes: u64,
    pub total_bytes: u64,
}

impl Estimate {
    /// The process baseline counted in every estimate (subtract it once when adding two).
    pub const BASELINE_BYTES: u64 = BASELINE_BYTES;

    fn new(weights: u64, transient: u64, activation: u64, logits: u64) -> Self {
        Self {
            weights_bytes: weights,
            transient_bytes: transient,
            activation_bytes: activation,
            logits_bytes: logits,
            baseline_bytes: BASELINE_BYTES,
            total_bytes: weights + transient + activation + logits + BASELINE_BYTES,
        }
    }
}

/// The chosen strategy with its estimate and the budget it was checked against.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    pub strategy: Strategy,
    pub estimate: Estimate,
    /// min(--max-memory, available - --min-free).
    pub budget_bytes: u64,
    pub max_memory_bytes: u64,
    pub available_bytes: Option<u64>,
    pub min_free_bytes: u64,
    /// Estimates of every strategy, for the report and for advice.
    pub resident_bytes: u64,
    pub streamed_bytes: u64,
    pub int8_bytes: u64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error(
        "the system has {available} available and --min-free asks to keep {min_free} free: \
         nothing is left for pot; free memory or lower --min-free"
    )]
    NoMemoryLeft { available: String, min_free: String },
    #[error("{model} does not fit in the memory budget of {budget} ({why}): {advice}")]
    DoesNotFit {
        model: String,
        budget: String,
        why: String,
        advice: String,
    },
    #[error(
        "the memory monitor thread could not start ({0}); pot does not run unguarded. Free \
         system resources (threads, memory) and retry"
    )]
    Monitor(String),
}

/// Sizes of one model, derived from its description.
struct Sizes {
    params: u64,
    /// What one streamed layer holds at once: the layer, but of a mixture only one expert (the
    /// pass reads each routed expert, runs it and drops it before the next).
    streamed_layer: u64,
    /// The largest stored matrix (Phi-3's fused ones as stored).
    largest_matrix: u64,
    /// The largest projection the pass builds by stacking (gate + up, or q + k + v).
    stacked_matrix: u64,
    hidden: u64,
    vocab: u64,
    embedding: u64,
}

impl Sizes {
    fn of(d: &ModelDescription) -> Self {
        let c = &d.config;
        let (h, q, kv) = (
            c.hidden_size as u64,
            (c.num_attention_heads * c.head_dim) as u64,
            (c.num_key_value_heads * c.head_dim) as u64,
        );
        let inter = c.intermediate_size as u64;
        // Fused projections (Phi-3) are stored so; the others are stacked when loaded.
        let stacked_matrix = (2 * inter * h).max((q + 2 * kv) * h);
        let largest_matrix = if c.architecture.fused_projections() {
            stacked_matrix
        } else {
            (inter * h).max(q * h)
        };
        let largest_layer = d.largest_layer_parameters();
        let expert = 3 * inter * h;
        let idle_experts = (c.num_experts as u64).saturating_sub(1) * expert;
        Self {
            params: d.parameter_count,
            streamed_layer: largest_layer.saturating_sub(idle_experts),
            largest_matrix,
            stacked_matrix,
            hidden: h,
            vocab: c.vocab_size as u64,
            embedding: d.embedding_parameters,
        }
    }
}

/// Activation bytes of one batch through one block plus the host log-probability rows.
fn activations(d: &ModelDescription, w: &Workload) -> (u64, u64) {
    let c = &d.config;
    let bt = (w.batch_size * w.max_tokens) as u64;
    let (h, inter) = (c.hidden_size as u64, c.intermediate_size as u64);
    let heads = c.num_attention_heads as u64;
    let t = w.max_tokens as u64;
    // Residual, normed input, q, k, v, attention output, block output; gate, up, product;
    // scores, softmax and mask broadcast per head.
    let activation = 4 * (bt * h * 8 + bt * inter * 3 + w.batch_size as u64 * heads * t * t * 3);
    // Every position's log-probabilities in host rows, plus one chunk of logits in flight twice.
    let logits = 4 * (bt * c.vocab_size as u64 + 2 * bt * HEAD_CHUNK_ROWS);
    (activation, logits)
}

fn estimate(d: &ModelDescription, w: &Workload, strategy: Strategy) -> Estimate {
    let s = Sizes::of(d);
    let (activation, logits) = activations(d, w);
    let head_chunk = 2 * 4 * HEAD_CHUNK_ROWS.min(s.vocab) * s.hidden;
    // Hashing (TLSH, Merkle) maps one whole tensor at a time before any weight is loaded: the
    // embedding, up to 4 bytes a value.
    let hashing = 4 * s.embedding;
    match strategy {
        // Every weight as f32 (a tied head is the embedding's rows, not a copy); while loading,
        // a stacked projection as values and transposed copy, and one stored matrix's mapped
        // pages.
        Strategy::Resident => Estimate::new(
            4 * s.params,
            (4 * (2 * s.stacked_matrix + s.largest_matrix)).max(hashing),
            activation,
            logits,
        ),
        // The layers computing and the next ones, read ahead (double buffering), plus the
        // largest matrix's transient copies (on the CPU the next layer's stacked projection
        // as values while it is packed, 2 stored matrices, and one stored matrix's mapped
        // pages), or one head chunk as rows and packed.
        Strategy::Streamed { layers_at_once } => Estimate::new(
            2 * 4 * s.streamed_layer * layers_at_once as u64,
            (3 * 4 * s.largest_matrix).max(head_chunk).max(hashing),
            activation,
            logits,
        ),
        // The int8 store, two dequantised layers (one computing, one read ahead), and the
        // quantisation pass's transient copies.
        Strategy::Int8 => Estimate::new(
            (s.params as f64 * INT8_BYTES_PER_WEIGHT).ceil() as u64 + 2 * 4 * s.streamed_layer,
            (3 * 4 * s.largest_matrix)
                .max(3 * 4 * s.embedding)
                .max(head_chunk),
            activation,
            logits,
        ),
    }
}

/// Every strategy's estimate for one model and workload: resident, streamed one layer at a
/// time, int8. `plan` chooses among exactly these; `pot plan` shows them all.
pub fn estimates(description: &ModelDescription, workload: &Workload) -> [(Strategy, Estimate); 3] {
    [
        Strategy::Resident,
        Strategy::Streamed { layers_at_once: 1 },
        Strategy::Int8,
    ]
    .map(|s| (s, estimate(description, workload, s)))
}

/// How two planned models share the queries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Execution {
    /// Both resident at once, together within the budget: each batch goes through model 1 and
    /// then model 2, and early stopping saves both.
    SideBySide,
    /// Both streamed: a streamed model holds no weights between passes (its blocks and head
    /// chunks are built from the file during each pass and dropped), so both stay open and each
    /// batch streams through model 1 and then model 2, one layer resident at a time; the peak
    /// is the larger of the two plans, and early stopping saves both.
    Interleaved,
    /// Model 1 fingerprinted on the whole query cap and released, then model 2 (a resident or
    /// int8 model holds its weights, so two at once would not fit).
    Sequential,
}

impl Execution {
    pub fn of(plan1: &Plan, plan2: &Plan) -> Self {
        let together =
            plan1.estimate.total_bytes + plan2.estimate.total_bytes - Estimate::BASELINE_BYTES;
        let streamed = |p: &Plan| matches!(p.strategy, Strategy::Streamed { .. });
        if plan1.strategy == Strategy::Resident
            && plan2.strategy == Strategy::Resident
            && together <= plan2.budget_bytes
        {
            Execution::SideBySide
        } else if streamed(plan1) && streamed(plan2) {
            Execution::Interleaved
        } else {
            Execution::Sequential
        }
    }

    /// The sentence the report and `pot plan` print.
    pub fn describe(self) -> &'static str {
        match self {
            Execution::SideBySide => "side by side: both models resident within the budget",
            Execution::Interleaved => {
                "interleaved: both streamed, each batch through model 1 then model 2, one layer \
                 resident at a time"
            }
            Execution::Sequential => {
                "sequential: model 1 fingerprinted on the query cap and released, then model 2"
            }
        }
    }
}

/// Chooses the strategy for one model: int8 when `--enable-8bit`; otherwise resident when it
/// fits, else streamed when `--enable-offload`; else refused with the numbers and the flags
/// that would make it fit.
pub fn plan(
    description: &ModelDescription,
    limits: &Limits,
    workload: &Workload,
    system: Option<SystemMemory>,
) -> Result<Plan, PlanError> {
    let available = system.map(|s| s.available_bytes);
    let budget = limits.budget_bytes(system)?;
    let [(_, resident), (streamed_strategy, streamed), (_, int8)] =
        estimates(description, workload);
    let chosen = if limits.enable_8bit {
        Some((Strategy::Int8, int8)).filter(|_| int8.total_bytes <= budget)
    } else if resident.total_bytes <= budget {
        Some((Strategy::Resident, resident))
    } else if limits.enable_offload && streamed.total_bytes <= budget {
        Some((streamed_strategy, streamed))
    } else {
        None
    };
    let Some((strategy, estimate)) = chosen else {
        let why = match available {
            Some(a) => format!(
                "--max-memory {}, {} available, --min-free {}",
                gb(limits.max_memory_bytes),
                gb(a),
                gb(limits.min_free_bytes)
            ),
            None => format!("--max-memory {}", gb(limits.max_memory_bytes)),
        };
        return Err(PlanError::DoesNotFit {
            model: description.path.display().to_string(),
            budget: gb(budget),
            why,
            advice: advice(limits, budget, &resident, &streamed, &int8),
        });
    };
    Ok(Plan {
        strategy,
        estimate,
        budget_bytes: budget,
        max_memory_bytes: limits.max_memory_bytes,
        available_bytes: available,
        min_free_bytes: limits.min_free_bytes,
        resident_bytes: resident.total_bytes,
        streamed_bytes: streamed.total_bytes,
        int8_bytes: int8.total_bytes,
    })
}

fn advice(
    limits: &Limits,
    budget: u64,
    resident: &Estimate,
    streamed: &Estimate,
    int8: &Estimate,
) -> String {
    let mut ways = vec![format!("resident (f32) needs {}", gb(resident.total_bytes))];
    if streamed.total_bytes <= budget && !limits.enable_offload {
        ways.push(format!(
            "streamed layer by layer needs {}: add --enable-offload",
            gb(streamed.total_bytes)
        ));
    }
    if int8.total_bytes <= budget && !limits.enable_8bit {
        ways.push(format!(
            "int8 weights need {}: add --enable-8bit",
            gb(int8.total_bytes)
        ));
    }
    if ways.len() == 1 {
        let smallest = streamed.total_bytes.min(int8.total_bytes);
        ways.push(format!(
            "the smallest plan (streamed{}) needs {}: raise --max-memory (or lower --min-free) \
             to at least that{}",
            if limits.enable_offload {
                ""
            } else {
                ", with --enable-offload"
            },
            gb(smallest),
            if limits.enable_8bit {
                "; int8 keeps every layer in memory, drop --enable-8bit to stream instead"
            } else {
                ""
            }
        ));
    }
    ways.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use pot_formats::{Architecture, Format, ModelConfig};

    /// Qwen2.5-Coder-1.5B's shape (1.54 B parameters, tied embedding).
    fn qwen_15b() -> ModelDescription {
        let config = ModelConfig {
            architecture: Architecture::Qwen2,
            rope_theta: 1e6,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: true,
            qkv_bias: true,
            max_position_embeddings: 32768,
            bos_token_id: None,
            eos_token_id: None,
            ..ModelConfig::llama(1536, 8960, 28, 12, 2, 151_936)
        };
        let (h, kv) = (1536u64, 256u64);
        let layer = 2 * h * h + 2 * kv * h + 3 * 8960 * h + 2 * h + h + 2 * kv;
        let embedding = 151_936 * h;
        ModelDescription {
            path: "qwen-1.5b".into(),
            format: Format::Safetensors,
            config,
            parameter_count: 28 * layer + embedding + h,
            file_bytes: 0,
            dtypes: Default::default(),
            layer_parameters: vec![layer; 28],
            embedding_parameters: embedding,
            head_parameters: 0,
            other_parameters: h,
        }
    }

    const WORK: Workload = Workload {
        batch_size: 8,
        max_tokens: 160,
    };

    fn limits(gb: f64, offload: bool, int8: bool) -> Limits {
        Limits {
            max_memory_bytes: (gb * 1e9) as u64,
            min_free_bytes: 0,
            enable_offload: offload,
            enable_8bit: int8,
        }
    }

    #[test]
    fn resident_when_it_fits() {
        let p = plan(&qwen_15b(), &limits(40.0, false, false), &WORK, None).unwrap();
        assert_eq!(p.strategy, Strategy::Resident);
        assert!(p.estimate.total_bytes > 6_000_000_000 && p.estimate.total_bytes < 12_000_000_000);
    }

    #[test]
    fn streamed_only_with_offload_and_advice_names_the_flag() {
        let err = plan(&qwen_15b(), &limits(3.0, false, false), &WORK, None).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("--enable-offload"), "{msg}");
        let p = plan(&qwen_15b(), &limits(3.0, true, false), &WORK, None).unwrap();
        assert_eq!(p.strategy, Strategy::Streamed { layers_at_once: 1 });
        assert!(p.estimate.total_bytes <= 3_000_000_000);
    }

    #[test]
    fn a_budget_below_one_layer_is_refused_with_the_smallest_plan() {
        let err = plan(&qwen_15b(), &limits(0.3, true, false), &WORK, None).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("raise --max-memory"), "{msg}");
    }

    #[test]
    fn int8_is_about_a_quarter_of_f32_weights() {
        let p = plan(&qwen_15b(), &limits(40.0, false, true), &WORK, None).unwrap();
        assert_eq!(p.strategy, Strategy::Int8);
        let ratio = p.estimate.weights_bytes as f64 / (4.0 * qwen_15b().parameter_count as f64);
        assert!(ratio > 0.25 && ratio < 0.45, "{ratio}");
    }

    #[test]
    fn min_free_shrinks_the_budget() {
        let system = SystemMemory {
            total_bytes: 24_000_000_000,
            available_bytes: 20_000_000_000,
        };
        let mut l = limits(40.0, false, false);
        l.min_free_bytes = 4_000_000_000;
        let p = plan(&qwen_15b(), &l, &WORK, Some(system)).unwrap();
        assert_eq!(p.budget_bytes, 16_000_000_000);
        l.min_free_bytes = 21_000_000_000;
        assert!(matches!(
            plan(&qwen_15b(), &l, &WORK, Some(system)),
            Err(PlanError::NoMemoryLeft { .. })
        ));
    }
}

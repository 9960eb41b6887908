//! `pot plan`: what verifying a model would need on this machine, before loading or even
//! downloading it. The memory figures are the governor's own (`estimates` and `plan`, the
//! functions `pot verify` calls), on the workload verify would run; times are estimates from
//! the matmul throughput measured on the spot.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use clap::Args;
use pot_challenge_kdf::{ChallengeSpec, MasterKey, generate};
use pot_formats::{Model, ModelConfig, ModelDescription};
use pot_memory_governor::{
    Estimate, Execution, Plan, Strategy, SystemMemory, Workload, estimates, plan,
};
use pot_orchestrator::{workload, workload_without_tokenizer};
use pot_scoring::{Backend, encode_challenge};
use pot_stats::Mode;
use serde_json::json;

use crate::challenges::KeyArgs;
use crate::decide::parse_mode;
use crate::exit::{self, Failure};
use crate::resources::ResourceArgs;

/// Measured time of one challenge on one model over the matmul-only estimate, per strategy
/// (docs/MEMORY.md, "pot plan": Qwen2.5-Coder-0.5B, the larger fixture; SmolLM2-135M's are
/// higher, 2.1 / 3.3 / 2.3, its small matrices leave more to the rest). The rest is attention,
/// norms, RoPE, the host log-softmax and, for streamed and int8, re-reading and dequantising
/// every layer once per batch.
fn measured_overhead(strategy: &Strategy) -> f64 {
    match strategy {
        Strategy::Resident => 1.6,
        Strategy::Streamed { .. } => 2.3,
        Strategy::Int8 => 2.1,
    }
}
/// Cold sequential read of model files on the build machine (docs/BENCHMARKS.md, hashing with
/// the page cache dropped): a streamed model larger than the available memory is read from
/// disk once per batch.
const COLD_READ_BYTES_PER_S: f64 = 1.0e9;

#[derive(Args)]
pub struct PlanArgs {
    /// A GGUF file, a Hugging Face directory, or a config.json alone (no weights needed).
    #[arg(required_unless_present = "shape")]
    model: Option<PathBuf>,
    /// A LLaMA-family shape by size instead of a model: 7b (Llama-2-7B), 13b (Llama-2-13B),
    /// 34b (Yi-34B), 70b (Llama-2-70B).
    #[arg(long, conflicts_with = "model", value_parser = ["7b", "13b", "34b", "70b"])]
    shape: Option<String>,
    /// The mode verify would run (its challenge count sets the workload).
    #[arg(long, default_value = "audit", value_parser = parse_mode)]
    mode: Mode,
    /// The run's key, for the exact challenge lengths of that run (a fresh key otherwise).
    #[command(flatten)]
    key: KeyArgs,
    #[arg(long, default_value = "verify")]
    run_id: String,
    /// Challenges per forward pass, as `pot verify --batch-size`.
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    #[command(flatten)]
    resources: ResourceArgs,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
}

impl crate::hub::ModelArgs for PlanArgs {
    fn model_paths(&mut self) -> Vec<&mut PathBuf> {
        self.model.iter_mut().collect()
    }
}

/// One model's description and the tokenizer that comes with it, if any.
struct Subject {
    description: ModelDescription,
    tokenizer: Option<pot_formats::Tokenizer>,
    source: String,
}

fn subject(args: &PlanArgs) -> Result<Subject, Failure> {
    if let Some(name) = &args.shape {
        let config = shape(name);
        return Ok(Subject {
            description: ModelDescription::from_config(name.into(), &config, "F16", 2.0),
            tokenizer: None,
            source: format!("shape {name} (weights stored as f16)"),
        });
    }
    let path = args
        .model
        .as_ref()
        .expect("clap requires a model or --shape");
    let is_config = path.is_file() && path.extension().is_some_and(|e| e == "json");
    if is_config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))
            .map_err(|e| exit::fail(exit::LOAD_FAILED, e))?;
        let config = ModelConfig::from_hf_json(path, &text)?;
        return Ok(Subject {
            description: ModelDescription::from_config(path.clone(), &config, "F16", 2.0),
            tokenizer: None,
            source: format!("{} (config only; weights assumed f16)", path.display()),
        });
    }
    let model = Model::open(path)?;
    let tokenizer = model.tokenizer().ok();
    Ok(Subject {
        description: model.description(),
        tokenizer,
        source: path.display().to_string(),
    })
}

pub fn plan_cmd(args: PlanArgs) -> Result<u8, Failure> {
    let resources = args.resources.apply()?;
    let subject = subject(&args)?;
    let d = &subject.description;
    let key = if args.key.is_given() {
        args.key.load()?
    } else {
        MasterKey::generate()?
    };
    let challenges = generate(
        &key,
        &ChallengeSpec::new(args.run_id.clone(), args.mode.n_max),
    );
    let (work, mean_tokens, tokens_note) = match &subject.tokenizer {
        Some(t) => {
            let mut total = 0usize;
            for c in &challenges {
                total += encode_challenge(t, c)?.len();
            }
            let work = workload(t, &challenges, args.batch_size)
                .map_err(|e| exit::fail(exit::LOAD_FAILED, anyhow!(e)))?;
            (
                work,
                total as f64 / challenges.len().max(1) as f64,
                "tokenized",
            )
        }
        None => {
            let bytes: usize = challenges.iter().map(|c| c.prompt.len()).sum();
            (
                workload_without_tokenizer(&challenges, args.batch_size),
                bytes as f64 / challenges.len().max(1) as f64 / 4.0,
                "no tokenizer: longest prompt counted a token per byte (an upper bound), mean \
                 length at 4 bytes a token",
            )
        }
    };
    let system = SystemMemory::read();
    let limits = resources.limits;
    let budget = limits.budget_bytes(system).ok();
    let chosen = plan(d, &limits, &work, system);
    let c = &d.config;
    let gflops =
        pot_scoring::throughput::matmul_gflops(Backend::Flex, c.hidden_size, c.intermediate_size)?;
    // Matmul FLOPs of one sequence token: every block weight plus the output head.
    let block_parameters: u64 = d.layer_parameters.iter().sum();
    let flops_per_token =
        2.0 * (block_parameters + c.vocab_size as u64 * c.hidden_size as u64) as f64;
    let uncached = system.is_some_and(|s| d.file_bytes > s.available_bytes);
    let seconds = |strategy: &Strategy| {
        let compute = flops_per_token * mean_tokens / (gflops * 1e9) * measured_overhead(strategy);
        let reading = match strategy {
            Strategy::Streamed { .. } if uncached => {
                d.file_bytes as f64 / COLD_READ_BYTES_PER_S / work.batch_size as f64
            }
            _ => 0.0,
        };
        compute + reading
    };
    let rows: Vec<_> = estimates(d, &work)
        .iter()
        .map(|(strategy, e)| {
            let fits = budget.is_some_and(|b| e.total_bytes <= b);
            json!({
                "strategy": strategy.name(),
                "estimate": e,
                "fits": fits,
                "flags": flags(strategy),
                "seconds_per_query_per_model": seconds(strategy),
            })
        })
        .collect();
    let verify_plan = match &chosen {
        Ok(p) => json!({
            "strategy": p.strategy.name(),
            "total_bytes": p.estimate.total_bytes,
            "execution_against_a_copy": Execution::of(p, p).describe(),
        }),
        Err(e) => json!({ "refused": e.to_string() }),
    };
    let report = json!({
        "model": subject.source,
        "architecture": c.architecture,
        "parameters": d.parameter_count,
        "layers": c.num_hidden_layers,
        "config": c,
        "challenges": challenges.len(),
        "file_bytes": d.file_bytes,
        "workload": work,
        "mean_tokens_per_challenge": mean_tokens,
        "tokens": tokens_note,
        "limits": limits,
        "available_bytes": system.map(|s| s.available_bytes),
        "budget_bytes": budget,
        "strategies": rows,
        "verify": verify_plan,
        "matmul_gflops": gflops,
        "time_note": "estimate: the model's matmul FLOPs per challenge at the f32 matmul \
                      throughput measured now (CPU, flex), times the overhead measured for the \
                      strategy on the fixtures, plus, for a streamed model larger than available \
                      memory, reading its file once per batch at 1 GB/s (docs/MEMORY.md); pot \
                      verify runs two models a query",
    });
    if args.json {
        crate::embed::print_json(&report)?;
    } else {
        print_table(&report, &chosen, &work);
    }
    Ok(match chosen {
        Ok(_) => 0,
        Err(_) => exit::MEMORY,
    })
}

fn flags(strategy: &Strategy) -> &'static str {
    match strategy {
        Strategy::Resident => "",
        Strategy::Streamed { .. } => "--enable-offload",
        Strategy::Int8 => "--enable-8bit",
    }
}

fn gb(bytes: u64) -> String {
    format!("{:.2} GB", bytes as f64 / 1e9)
}

fn print_table(
    r: &serde_json::Value,
    chosen: &Result<Plan, pot_memory_governor::PlanError>,
    work: &Workload,
) {
    println!(
        "{}: {} ({:.2} B parameters, {} layers), {} on disk",
        r["model"].as_str().unwrap_or("?"),
        r["architecture"].as_str().unwrap_or("?"),
        r["parameters"].as_f64().unwrap_or(0.0) / 1e9,
        r["layers"],
        gb(r["file_bytes"].as_u64().unwrap_or(0)),
    );
    println!(
        "workload: batches of {} challenges, up to {} tokens each ({}); mean {:.0} tokens",
        work.batch_size,
        work.max_tokens,
        r["tokens"].as_str().unwrap_or(""),
        r["mean_tokens_per_challenge"].as_f64().unwrap_or(0.0)
    );
    match r["budget_bytes"].as_u64() {
        Some(b) => println!(
            "budget: {} (min of --max-memory {} and available {} minus --min-free {})",
            gb(b),
            gb(r["limits"]["max_memory_bytes"].as_u64().unwrap_or(0)),
            r["available_bytes"].as_u64().map_or("?".into(), gb),
            gb(r["limits"]["min_free_bytes"].as_u64().unwrap_or(0)),
        ),
        None => println!("budget: none left (available memory is below --min-free)"),
    }
    println!();
    println!(
        "{:<10} {:>10} {:>10} {:>10} {:>10} {:>10}  {:<4} {:<17} {:>14}",
        "strategy",
        "total",
        "weights",
        "transient",
        "activation",
        "log-probs",
        "fits",
        "flags",
        "s/query/model"
    );
    for row in r["strategies"].as_array().into_iter().flatten() {
        let e: Estimate = serde_json::from_value(row["estimate"].clone()).expect("own JSON");
        println!(
            "{:<10} {:>10} {:>10} {:>10} {:>10} {:>10}  {:<4} {:<17} {:>14}",
            row["strategy"].as_str().unwrap_or("?"),
            gb(e.total_bytes),
            gb(e.weights_bytes),
            gb(e.transient_bytes),
            gb(e.activation_bytes),
            gb(e.logits_bytes),
            if row["fits"] == true { "yes" } else { "no" },
            row["flags"].as_str().unwrap_or(""),
            format!(
                "~{:.1}",
                row["seconds_per_query_per_model"]
                    .as_f64()
                    .unwrap_or(f64::NAN)
            ),
        );
    }
    println!();
    match chosen {
        Ok(p) => println!(
            "pot verify with these flags: {} ({}); against a model of the same size: {}",
            p.strategy.name(),
            gb(p.estimate.total_bytes),
            r["verify"]["execution_against_a_copy"]
                .as_str()
                .unwrap_or("?")
        ),
        Err(e) => println!("pot verify with these flags would be refused: {e}"),
    }
    println!(
        "times: {} (f32 matmul {:.0} GFLOP/s here now)",
        r["time_note"].as_str().unwrap_or(""),
        r["matmul_gflops"].as_f64().unwrap_or(f64::NAN)
    );
}

/// Published LLaMA-family shapes (their config.json values), for sizing a machine before
/// downloading: Llama-2-7B/13B/70B and Yi-34B (the predecessor's large-model targets).
fn shape(name: &str) -> ModelConfig {
    let (hidden, intermediate, layers, heads, kv_heads, vocab) = match name {
        "7b" => (4096, 11008, 32, 32, 32, 32000),
        "13b" => (5120, 13824, 40, 40, 40, 32000),
        "34b" => (7168, 20480, 60, 56, 8, 64000),
        "70b" => (8192, 28672, 80, 64, 8, 32000),
        other => unreachable!("clap only accepts the listed shapes, not {other}"),
    };
    ModelConfig::llama(hidden, intermediate, layers, heads, kv_heads, vocab)
}

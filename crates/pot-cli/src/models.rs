//! `pot convert` and `pot inspect`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::anyhow;
use clap::Args;
use pot_formats::convert::{OutputDType, convert};
use pot_formats::{FormatError, Model};

use crate::exit::{self, Failure};

#[derive(Args)]
pub struct ConvertArgs {
    /// The model to convert (a GGUF file or a Hugging Face directory).
    model: PathBuf,
    /// Output directory (must not exist).
    #[arg(long)]
    out: PathBuf,
    /// Element type of the written weights: f32, f16 or bf16.
    #[arg(long, default_value = "f32", value_parser = parse_dtype)]
    dtype: OutputDType,
}

impl crate::hub::ModelArgs for ConvertArgs {
    fn model_paths(&mut self) -> Vec<&mut PathBuf> {
        vec![&mut self.model]
    }
}

fn parse_dtype(name: &str) -> Result<OutputDType, String> {
    OutputDType::parse(name)
        .ok_or_else(|| format!("unknown dtype `{name}`; choose f32, f16 or bf16"))
}

pub fn convert_cmd(args: ConvertArgs) -> Result<u8, Failure> {
    let model = Model::open(&args.model)?;
    convert(&model, &args.out, args.dtype, tensor_progress("converting"))
        .map_err(|e| exit::fail(exit::RUNTIME, e.into()))?;
    println!(
        "wrote {} ({:?}): config.json, model.safetensors, tokenizer.json",
        args.out.display(),
        args.dtype
    );
    Ok(exit::SAME)
}

#[derive(Args)]
pub struct QuantizeArgs {
    /// The GGUF model to quantize (F32, F16 or BF16 tensors; a quantised one with
    /// --allow-requantize).
    model: PathBuf,
    /// The file type, as llama-quantize names them: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1,
    /// q4_k_s, q4_k_m, q5_k_s, q5_k_m, q6_k.
    #[arg(long = "type", value_name = "TYPE")]
    ftype: String,
    /// Output GGUF file (written atomically).
    #[arg(long)]
    out: PathBuf,
    /// Quantize tensors that are already quantised (dequantised first; quality suffers), as
    /// llama-quantize's --allow-requantize.
    #[arg(long)]
    allow_requantize: bool,
}

impl crate::hub::ModelArgs for QuantizeArgs {
    fn model_paths(&mut self) -> Vec<&mut PathBuf> {
        vec![&mut self.model]
    }
}

/// Progress of a per-tensor job on stderr: one updated line on a terminal, a line per 50
/// tensors otherwise.
fn tensor_progress(verb: &'static str) -> impl FnMut(usize, usize) {
    let is_tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    move |done, total| {
        if is_tty {
            eprint!("\r{verb}: {done}/{total} tensors");
            if done == total {
                eprintln!();
            }
        } else if done == total || done % 50 == 0 {
            eprintln!("{verb}: {done}/{total} tensors");
        }
        std::io::stderr().flush().ok();
    }
}

/// `pot quantize`: llama.cpp's quantiser, ported (pot_formats::quantize_file).
pub fn quantize_cmd(args: QuantizeArgs) -> Result<u8, Failure> {
    use pot_formats::quantize::FileType;
    use pot_formats::quantize_file::{QuantizeFileError, QuantizeOptions, quantize_gguf};
    let ftype: FileType = args
        .ftype
        .parse()
        .map_err(|e| exit::fail(exit::USAGE, anyhow::anyhow!("--type {}: {e}", args.ftype)))?;
    let options = QuantizeOptions {
        allow_requantize: args.allow_requantize,
    };
    let progress = tensor_progress("quantizing");
    let summary = quantize_gguf(&args.model, ftype, &args.out, options, progress).map_err(|e| {
        let code = match e {
            QuantizeFileError::Requantize { .. } | QuantizeFileError::SameFile { .. } => {
                exit::USAGE
            }
            QuantizeFileError::Format(FormatError::Write { .. }) => exit::RUNTIME,
            _ => exit::LOAD_FAILED,
        };
        exit::fail(code, e.into())
    })?;
    println!(
        "wrote {} ({}, {:.2} bits per weight, {:.1} MB)",
        args.out.display(),
        ftype,
        summary.bits_per_weight(),
        summary.file_bytes as f64 / 1e6
    );
    for t in &summary.by_type {
        println!("  {:<5} {:>4} tensors", t.dtype.name(), t.tensors);
    }
    Ok(exit::SAME)
}

#[derive(Args)]
#[command(after_help = format!(
    "Architectures pot runs: {}. Any other is refused before loading, naming these.",
    pot_formats::Architecture::SUPPORTED
))]
pub struct InspectArgs {
    /// A GGUF file or a Hugging Face directory.
    model: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Also compute the TLSH fuzzy hash of the weights (samples at most 1 GiB; ~110 MB/s).
    #[arg(long)]
    fuzzy: bool,
}

impl crate::hub::ModelArgs for InspectArgs {
    fn model_paths(&mut self) -> Vec<&mut PathBuf> {
        vec![&mut self.model]
    }
}

pub fn inspect_cmd(args: InspectArgs) -> Result<u8, Failure> {
    let model = Model::open(&args.model)?;
    let d = model.description();
    let hashes = pot_security::ConfigHashes::of_model(&model);
    let root =
        pot_provenance::TensorTree::of_model(&model, pot_provenance::TensorEncoding::Stored)?
            .root();
    if args.json {
        let mut json = serde_json::to_value(&d).map_err(|e| anyhow!(e))?;
        json["config_hashes"] = serde_json::to_value(&hashes).map_err(|e| anyhow!(e))?;
        json["merkle_root"] = root.into();
        json["tensors"] =
            serde_json::to_value(model.tensors().collect::<Vec<_>>()).map_err(|e| anyhow!(e))?;
        println!(
            "{}",
            serde_json::to_string_pretty(&json).map_err(|e| anyhow!(e))?
        );
        return Ok(exit::SAME);
    }
    let c = &d.config;
    println!("{}", d.path.display());
    println!("  format        {:?}", d.format);
    println!("  architecture  {}", c.architecture.name());
    println!(
        "  parameters    {} ({:.1} M)",
        d.parameter_count,
        d.parameter_count as f64 / 1e6
    );
    println!(
        "  layers {}  hidden {}  ffn {}  heads {} / kv {}  head_dim {}  vocab {}",
        c.num_hidden_layers,
        c.hidden_size,
        c.intermediate_size,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.head_dim,
        c.vocab_size
    );
    if c.architecture.gpt2_family() {
        println!(
            "  learned positions {}  layernorm eps {:e}  tied embeddings {}",
            c.max_position_embeddings, c.rms_norm_eps, c.tie_word_embeddings
        );
    } else {
        println!(
            "  rope theta {}  scaling {}  rms eps {:e}  tied embeddings {}",
            c.rope_theta,
            serde_json::to_string(&c.rope_scaling).map_err(|e| anyhow!(e))?,
            c.rms_norm_eps,
            c.tie_word_embeddings
        );
    }
    let window = c
        .sliding_window
        .map_or("none".to_string(), |w| w.to_string());
    println!(
        "  activation {}  sliding window {window}  biases q/k/v {} o {} mlp {}",
        c.hidden_act, c.qkv_bias, c.o_bias, c.mlp_bias
    );
    if let Some(layers) = &c.sliding_layers {
        let local = layers.iter().filter(|&&l| l).count();
        println!(
            "  local layers  {local} of {} (window {window}, rope theta {})  query scale {}^-1/2",
            layers.len(),
            c.local_rope_theta.unwrap_or(c.rope_theta),
            c.query_pre_attn_scalar.unwrap_or(c.head_dim as f64)
        );
    }
    if c.num_experts > 0 {
        println!(
            "  experts       {} per layer, {} per token",
            c.num_experts, c.experts_per_token
        );
    }
    let dtypes: Vec<String> = d.dtypes.iter().map(|(k, v)| format!("{k} x{v}")).collect();
    println!("  dtypes        {}", dtypes.join(", "));
    println!(
        "  file {:.1} MB; f32 weights {:.1} MB",
        d.file_bytes as f64 / 1e6,
        d.weight_bytes(4.0) as f64 / 1e6
    );
    let show = |h: &Option<String>| h.clone().unwrap_or_else(|| "absent".into());
    println!("  config ({})", hashes.source);
    println!("    raw sha256          {}", show(&hashes.raw_sha256));
    println!("    canonical sha256    {}", show(&hashes.canonical_sha256));
    println!(
        "    architecture sha256 {}",
        show(&hashes.architecture_sha256)
    );
    println!("  tensor Merkle root    {root}");
    if args.fuzzy {
        let fuzzy = pot_security::FuzzyHash::of_model(&model);
        println!(
            "  TLSH of the weights   {} ({:.1} MB in {:.1} s)",
            fuzzy
                .model
                .as_deref()
                .unwrap_or("none (not enough variety)"),
            fuzzy.bytes_hashed as f64 / 1e6,
            fuzzy.seconds
        );
    }
    Ok(exit::SAME)
}

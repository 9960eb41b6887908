//! The `pot` binary: a thin clap front end over the stage crates.

mod challenges;
mod decide;
mod deployment;
mod emulate;
mod exit;
mod models;
mod monitor;
mod plan;
mod provenance;
mod report;
mod resources;
mod served;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "pot",
    version,
    about = "Decide whether two language models are the same model"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a new secret master key (32 random bytes, hex, mode 0600).
    Keygen(challenges::KeygenArgs),
    /// Derive the secret challenge prompts of a run, or commit to / check a challenge set.
    Challenges(challenges::ChallengesArgs),
    /// Run the sequential test over a file of scores (one per line).
    Decide(decide::DecideArgs),
    /// Convert a model (GGUF or HF directory) to a Hugging Face safetensors directory.
    Convert(models::ConvertArgs),
    /// Quantize a GGUF model as llama.cpp's llama-quantize does, byte for byte (no importance
    /// matrix): the deployments a served model may be (Q8_0, Q6_K, Q4_K_M ...).
    Quantize(models::QuantizeArgs),
    /// What verifying a model needs on this machine (memory per strategy, flags, time per
    /// query), from a model, a config.json or a shape, before loading or downloading it.
    Plan(plan::PlanArgs),
    /// Describe a model without loading its weights.
    Inspect(models::InspectArgs),
    /// Verify whether two models (or a model and a saved fingerprint) are the same model.
    Verify(verify::VerifyArgs),
    /// Measure the scores between a reference and a deployment of the same weights (no early
    /// stopping) and propose a tolerance for `pot verify --tolerance`.
    Calibrate(verify::CalibrateArgs),
    /// Save a model's fingerprint for later `pot verify --reference`.
    Fingerprint(verify::FingerprintArgs),
    /// Tensor Merkle trees: root, inclusion proof, proof check, diff of two models.
    Merkle(provenance::MerkleArgs),
    /// Read a saved JSON report back: its summary, and the HTML page (`--html`).
    Report(report::ReportArgs),
    /// Check a report's query transcript against its Merkle root.
    Provenance(provenance::ProvenanceArgs),
    /// Watch system memory and guard one pot process (SIGTERM at the kill threshold).
    Monitor(monitor::MonitorArgs),
}

fn main() -> ExitCode {
    // `pot challenges | head`: a closed stdout ends pot quietly, as it does other Unix tools,
    // instead of a panic from println! (Rust ignores SIGPIPE by default).
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen(args) => challenges::keygen(args),
        Command::Challenges(args) => challenges::run(args),
        Command::Decide(args) => decide::run(args),
        Command::Convert(args) => models::convert_cmd(args),
        Command::Quantize(args) => models::quantize_cmd(args),
        Command::Inspect(args) => models::inspect_cmd(args),
        Command::Plan(args) => plan::plan_cmd(args),
        Command::Verify(args) => verify::verify_cmd(args),
        Command::Fingerprint(args) => verify::fingerprint_cmd(args),
        Command::Calibrate(args) => verify::calibrate_cmd(args),
        Command::Merkle(args) => provenance::merkle_cmd(args),
        Command::Report(args) => report::report_cmd(args),
        Command::Provenance(args) => provenance::provenance_cmd(args),
        Command::Monitor(args) => monitor::monitor_cmd(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}

//! The `pot` command as a library: the binary (`src/main.rs`) and embedders (the Python
//! package, through [`embed`]) run the same commands from the same arguments.

mod challenges;
mod decide;
mod deployment;
pub mod embed;
mod emulate;
pub mod exit;
mod hub;
mod models;
mod monitor;
mod plan;
mod provenance;
mod report;
mod resources;
mod served;
mod verify;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "pot",
    version,
    about = "Decide whether two language models are the same model"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    hub: hub::HubArgs,
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

/// Runs `pot ARGS` (`argv[0]` is the program name) for an embedder: its exit code, or the
/// error that ends it with its code (argument errors: the usage code with clap's message).
/// Help and version requests print and return 0.
pub fn run<I, T>(argv: I) -> Result<u8, exit::Failure>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    match Cli::try_parse_from(argv) {
        Ok(cli) => execute(cli),
        Err(e) if !e.use_stderr() => {
            // --help, --version: what clap prints, and success.
            e.print().ok();
            Ok(exit::SAME)
        }
        Err(e) => Err(exit::fail(
            exit::USAGE,
            anyhow::anyhow!("{}", e.render().to_string().trim_end()),
        )),
    }
}

/// Runs a parsed command line.
pub fn execute(cli: Cli) -> Result<u8, exit::Failure> {
    match cli.command {
        Command::Keygen(args) => challenges::keygen(args),
        Command::Challenges(args) => challenges::run(args),
        Command::Decide(args) => decide::run(args),
        Command::Convert(args) => hub::locate(args, &cli.hub).and_then(models::convert_cmd),
        Command::Quantize(args) => hub::locate(args, &cli.hub).and_then(models::quantize_cmd),
        Command::Inspect(args) => hub::locate(args, &cli.hub).and_then(models::inspect_cmd),
        Command::Plan(args) => hub::locate(args, &cli.hub).and_then(plan::plan_cmd),
        Command::Verify(args) => hub::locate(args, &cli.hub).and_then(verify::verify_cmd),
        Command::Fingerprint(args) => hub::locate(args, &cli.hub).and_then(verify::fingerprint_cmd),
        Command::Calibrate(args) => hub::locate(args, &cli.hub).and_then(verify::calibrate_cmd),
        Command::Merkle(args) => hub::locate(args, &cli.hub).and_then(provenance::merkle_cmd),
        Command::Report(args) => report::report_cmd(args),
        Command::Provenance(args) => {
            hub::locate(args, &cli.hub).and_then(provenance::provenance_cmd)
        }
        Command::Monitor(args) => monitor::monitor_cmd(args),
    }
}

//! `pot verify` and `pot fingerprint`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use clap::Args;
use pot_challenge_kdf::MasterKey;
use pot_orchestrator::{
    Compute, Progress, Report, VerifyError, VerifyOptions, fingerprint_model, score_stream, verify,
};
use pot_scoring::Backend;
use pot_stats::{Method, Mode, Tolerance};

use crate::challenges::KeyArgs;
use crate::decide::parse_mode;
use crate::deployment::{self, ChoiceList};
use crate::emulate::{EmulateArgs, EmulateOneArgs};
use crate::exit::{self, Failure};
use crate::hub::ModelArgs;
use crate::resources::ResourceArgs;
use crate::served::{self, ServedArgs};
use pot_formats::hub::HubModel;

#[derive(Args)]
pub struct VerifyArgs {
    /// Reference model (GGUF file or Hugging Face directory).
    #[arg(long, required_unless_present = "reference")]
    model1: Option<PathBuf>,
    /// Candidate model: a GGUF file, a Hugging Face directory, or a serving engine's address
    /// (`http://host:port/v1`; see --served-api; API key from $POT_API_KEY).
    #[arg(long)]
    model2: PathBuf,
    #[command(flatten)]
    served: ServedArgs,
    /// A saved fingerprint (`pot fingerprint`) instead of --model1.
    #[arg(long, conflicts_with = "model1")]
    reference: Option<PathBuf>,
    /// quick (97.5 %), audit (99 %) or extended (99.9 %).
    #[arg(long, default_value = "audit", value_parser = parse_mode)]
    mode: Mode,
    /// Tolerance gamma on the mean score (total variation distance; the clip is 2 gamma).
    /// Without it, gamma follows the pair's path: the measured noise of exactly how the two
    /// sides are stored and computed, times 2.5, at least 0.002 (0.002 for the same values
    /// computed by pot, 0.0025 when one side is f16, 0.016 when bf16; docs/STATISTICS.md), or
    /// each deployment's (--deployment). Presets: `default` (0.016): SAME for the same weights
    /// in any encoding pot reads; `quantized` (0.072): also Q8_0 / int8 copies. Or a number,
    /// e.g. from `pot calibrate`. Against a server pot does not emulate the default is
    /// `quantized` (its arithmetic is not modelled; the report says what that cannot tell).
    #[arg(long, value_parser = Tolerance::parse)]
    tolerance: Option<Tolerance>,
    /// Deployments of model 1 to test the candidate against, comma-separated: `auto`, `exact`
    /// (model 1 as stored), file types made by llama.cpp's quantiser (`f16`, `bf16`, `q8_0`,
    /// `q6_k`, `q5_k_m`, `q4_k_m`, `q4_0`, `q4_1`, ...; model 1 must be a GGUF) or a `.gguf`
    /// file. SAME names the deployment that explains the candidate, DIFFERENT says none does;
    /// the error rate stays at alpha over the set. Default `auto`: against a llama.cpp server
    /// (llama-cpp-python) model 1 as stored and as F16, Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_1 and
    /// Q4_0, each computed as llama.cpp computes it; locally model 1 as stored, and the
    /// candidate GGUF's file type when it differs.
    #[arg(long, value_name = "LIST", value_parser = deployment::parse_choice_list)]
    deployment: Option<ChoiceList>,
    #[command(flatten)]
    key: KeyArgs,
    /// Run identifier (challenges differ per run id).
    #[arg(long, default_value = "verify")]
    run_id: String,
    /// Write the JSON report here (atomically). Without --key-file or $POT_KEY, a fresh key is
    /// saved beside it as REPORT.key (mode 0600) so the run can be replayed; with neither a key
    /// nor a report, verify refuses.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Also write the report as one self-contained HTML page (verdict, confidence sequence,
    /// per-challenge scores, evidence, memory over time; opens offline). `pot report R.json
    /// --html P` draws the same page from a saved report.
    #[arg(long, value_name = "PATH")]
    html: Option<PathBuf>,
    /// Compute backend: flex (CPU, default), ndarray or wgpu when compiled in.
    #[arg(long, default_value = "flex", value_parser = parse_backend)]
    backend: Backend,
    /// Challenges per forward pass (early stopping wastes at most one batch of work).
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    #[command(flatten)]
    resources: ResourceArgs,
    #[command(flatten)]
    emulate: EmulateArgs,
    /// No progress output on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Progress on stderr as `text` (for people) or `json`: one JSON object per line per event
    /// (`stage`, `fingerprinted`, `query` with the running mean and interval, each with the
    /// process's RSS in bytes), for tools that embed pot.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    progress: String,
    /// Models 1 and 2 as found in the Hugging Face cache, when named `ORG/NAME[@REV]`.
    /// (A vector, not an array: a `Command` variant stays small.)
    #[arg(skip)]
    sources: Vec<Option<HubModel>>,
}

impl ModelArgs for VerifyArgs {
    fn model_paths(&mut self) -> Vec<&mut PathBuf> {
        let mut paths: Vec<&mut PathBuf> = self.model1.iter_mut().collect();
        paths.push(&mut self.model2);
        paths.extend(self.served.tokenizer.as_mut());
        paths
    }

    fn resolved(&mut self, sources: Vec<Option<HubModel>>) {
        // In the order of `model_paths`: model 1 when given, then model 2.
        let mut sources = sources.into_iter();
        let model1 = self.model1.as_ref().and_then(|_| sources.next().flatten());
        self.sources = vec![model1, sources.next().flatten()];
    }
}

impl VerifyArgs {
    /// Writes the report where asked: JSON (`-o`) and HTML (`--html`), each atomically.
    fn write_reports(&self, json: &serde_json::Value) -> anyhow::Result<()> {
        if let Some(out) = &self.output {
            write_atomically(out, &serde_json::to_string_pretty(json)?)?;
        }
        if let Some(out) = &self.html {
            write_atomically(out, &pot_report::html(json))?;
        }
        Ok(())
    }

    /// Model 1 as a failure report names it: the fingerprint or the model path given.
    fn model1_label(&self) -> String {
        self.reference
            .as_ref()
            .or(self.model1.as_ref())
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }
}

/// A backend that this build of pot can run: one not compiled in is a usage error, reported
/// before any model is opened.
fn parse_backend(name: &str) -> Result<Backend, String> {
    let backend = Backend::parse(name)
        .ok_or_else(|| format!("unknown backend `{name}`; choose flex, ndarray or wgpu"))?;
    // Device handles are lazy: this checks the build, it does not start the device.
    backend.device().map_err(|e| e.to_string())?;
    Ok(backend)
}

/// The key of a run: given (`--key-file` or `$POT_KEY`), or a fresh one saved beside the report
/// (`REPORT.key`, mode 0600) so the run can be replayed. Without either, the run is refused: a
/// verification nobody can replay proves nothing to anyone else.
fn run_key(key: &KeyArgs, report: Option<&Path>) -> Result<MasterKey, Failure> {
    if key.is_given() {
        return Ok(key.load()?);
    }
    let Some(report) = report else {
        return Err(exit::fail(
            exit::USAGE,
            anyhow!(
                "no master key: pass --key-file K (add --create-key to make one), set ${}, or give \
                 -o REPORT and a fresh key is saved beside it as REPORT.key",
                pot_challenge_kdf::KEY_ENV
            ),
        ));
    };
    let mut name = report.as_os_str().to_os_string();
    name.push(".key");
    let path = PathBuf::from(name);
    let fresh = MasterKey::generate()?;
    fresh.save_new(&path)?;
    // Printed even with --quiet: without this file the run cannot be replayed.
    eprintln!(
        "no --key-file: a fresh key (id {}) is saved in {} (mode 0600); keep it secret until you \
         reveal it, and pass it as --key-file to replay this run",
        fresh.id(),
        path.display()
    );
    Ok(fresh)
}

/// Progress on stderr: lines updated in place on a terminal, plain lines otherwise, or JSON
/// lines (`--progress json`).
struct ProgressPrinter {
    quiet: bool,
    tty: bool,
    json: bool,
}

impl ProgressPrinter {
    fn new(quiet: bool) -> Self {
        Self {
            quiet,
            tty: std::io::stderr().is_terminal(),
            json: false,
        }
    }

    fn json(mut self, json: bool) -> Self {
        self.json = json;
        self
    }

    fn show(&self, event: Progress) {
        if self.quiet {
            return;
        }
        if self.json {
            let rss = pot_memory_governor::ProcessMemory::own().map(|m| m.rss_bytes);
            let line = match event {
                Progress::Stage(s) => {
                    serde_json::json!({ "event": "stage", "stage": s, "rss_bytes": rss })
                }
                Progress::Fingerprinted { done, total } => serde_json::json!({
                    "event": "fingerprinted", "done": done, "total": total, "rss_bytes": rss,
                }),
                Progress::Scored {
                    query,
                    score,
                    cap,
                    mean,
                    lower,
                    upper,
                } => serde_json::json!({
                    "event": "query", "query": query, "cap": cap, "score": score, "mean": mean,
                    "lower": lower, "upper": upper, "rss_bytes": rss,
                }),
            };
            if !crate::embed::progress(&line) {
                eprintln!("{line}");
            }
            return;
        }
        let (line, last) = match event {
            Progress::Stage(s) => (s.to_string(), true),
            Progress::Fingerprinted { done, total } => (
                format!(
                    "  fingerprint {} {done}/{total} challenges",
                    bar(done as u64, total as u64)
                ),
                done == total,
            ),
            Progress::Scored {
                query, score, cap, ..
            } => (
                format!(
                    "  queries {} {query} (cap {cap}), last score {score:.5}",
                    bar(query, cap)
                ),
                false,
            ),
        };
        if self.tty {
            eprint!("\r\x1b[2K{line}");
            if last {
                eprintln!();
            }
        } else {
            eprintln!("{line}");
        }
        std::io::stderr().flush().ok();
    }
}

/// `[#####---------------]`: `done` of `total` in 20 cells.
fn bar(done: u64, total: u64) -> String {
    let filled = (done * 20).checked_div(total).unwrap_or(0).min(20) as usize;
    format!("[{}{}]", "#".repeat(filled), "-".repeat(20 - filled))
}

pub fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    pot_formats::write_atomically(path, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The exit code of a pipeline error.
fn error_code(e: &VerifyError) -> u8 {
    use pot_scoring::ScoringError;
    match e {
        // A model or a fingerprint that cannot be used as given: bad input.
        VerifyError::Load(_) | VerifyError::Scoring(ScoringError::Fingerprint(_)) => {
            exit::LOAD_FAILED
        }
        VerifyError::Plan(_) | VerifyError::MemoryLimit(_) => exit::MEMORY,
        // The server's tokens are not the reference's (beyond what decides DIFFERENT), or its
        // answers lack what pot reads: bad input, like an unreadable model.
        VerifyError::Served(
            pot_served::ServedError::Tokens { .. }
            | pot_served::ServedError::Shape { .. }
            | pot_served::ServedError::Misaligned { .. },
        ) => exit::LOAD_FAILED,
        VerifyError::Served(pot_served::ServedError::Config(_)) => exit::USAGE,
        // A deployment that cannot be built from model 1 as asked (--deployment).
        VerifyError::Deployment(_) => exit::USAGE,
        _ => exit::RUNTIME,
    }
}

pub fn verify_cmd(args: VerifyArgs) -> Result<u8, Failure> {
    let resources = args.resources.apply()?;
    let mut served = match served::candidate(&args.model2, args.model1.as_deref(), &args.served) {
        Ok(s) => s,
        Err(failure) => {
            // A server that cannot be used still leaves a report saying so.
            args.write_reports(&Report::failure(
                &args.model1_label(),
                &args.model2.display().to_string(),
                &format!("{:#}", failure.error),
            ))?;
            return Err(failure);
        }
    };
    let key = run_key(&args.key, args.output.as_deref())?;

    let arithmetic = args.emulate.arithmetic();
    let enable_8bit = resources.limits.enable_8bit;
    // The tolerance follows the pair's path (or each deployment's); a fingerprint reference and
    // servers pot does not emulate keep the presets.
    // A preset or number given with --tolerance and no --deployment: model 1 as stored under it.
    let explicit_tolerance = args.tolerance.is_some() && args.deployment.is_none();
    let choices = args.deployment.as_ref().map(|l| l.0.as_slice());
    let decision = match (&args.reference, &served, &args.model1) {
        _ if explicit_tolerance => None,
        (Some(_), _, _) => {
            if args.deployment.is_some() {
                return Err(exit::fail(
                    exit::USAGE,
                    anyhow!(
                        "--deployment needs --model1 (a model file to build deployments from), not --reference"
                    ),
                ));
            }
            None
        }
        (None, Some(s), Some(model1)) => deployment::served(model1, choices, s, args.emulate.kv())
            .map_err(|e| exit::fail(exit::USAGE, e))?,
        (None, None, Some(model1)) => {
            deployment::local(model1, &args.model2, choices, arithmetic[0], enable_8bit)
        }
        _ => None,
    };
    let preset = if served.is_some() {
        Tolerance::Quantized
    } else {
        Tolerance::Default
    };
    let mut deployments = decision
        .as_ref()
        .map(|d| d.deployments.clone())
        .unwrap_or_default();
    let (mode, reason) = match (args.tolerance, &decision) {
        (Some(t), _) => {
            for d in &mut deployments {
                d.gamma = t.gamma();
                d.gamma_source = "given with --tolerance".into();
            }
            (
                args.mode.clone().with_tolerance(t),
                "given with --tolerance".to_string(),
            )
        }
        (None, Some(d)) => {
            let mut mode = args.mode.clone().with_gamma(d.gamma);
            mode.tolerance = "path".into();
            (mode, d.reason.clone())
        }
        (None, None) if served.is_some() => (
            args.mode.clone().with_tolerance(preset),
            "quantized, the default against a server pot does not emulate (or a fingerprint \
             reference): engines compute in reduced precision (llama.cpp serving a Q4_1 GGUF \
             scores 0.026 on average against pot's f32 computation of the same weights; \
             docs/STATISTICS.md), so the verdict cannot tell a change below gamma from the \
             engine's own arithmetic; `pot calibrate` measures a given server"
                .to_string(),
        ),
        (None, None) => (
            args.mode.clone().with_tolerance(preset),
            "default, the preset for a fingerprint reference (its encoding is not recorded)"
                .to_string(),
        ),
    };
    let tolerance = args.tolerance.unwrap_or(preset);
    if let Some(s) = served.as_mut() {
        s.tolerance_reason = reason.clone();
    }
    let opts = VerifyOptions {
        model1: args.model1.clone().unwrap_or_default(),
        model2: args.model2.clone(),
        reference: args.reference.clone(),
        mode,
        method: Method::Betting,
        key,
        run_id: args.run_id.clone(),
        backend: args.backend,
        batch_size: args.batch_size,
        resources,
        weight_evidence: true,
        served,
        arithmetic,
        deployments,
        tolerance_reason: reason,
        sources: std::array::from_fn(|k| args.sources.get(k).cloned().flatten()),
    };
    // Two live models under --enable-8bit are quantised alike, so the same weights still score
    // near 0; a fingerprint's log-probs came from unquantised weights, and int8 against them
    // scores above the default tolerance (docs/STATISTICS.md, detection table).
    if opts.resources.limits.enable_8bit
        && opts.reference.is_some()
        && tolerance == Tolerance::Default
    {
        return Err(exit::fail(
            exit::USAGE,
            anyhow!(
                "--enable-8bit against a saved fingerprint adds int8 noise above the default \
                 tolerance: add --tolerance quantized, or drop --enable-8bit"
            ),
        ));
    }
    let printer = ProgressPrinter::new(args.quiet).json(args.progress == "json");
    let result = verify(&opts, |e| printer.show(e));
    let (json, code) = match &result {
        Ok(report) if report.memory_aborted() => (report.json().clone(), exit::MEMORY),
        Ok(report) => (
            report.json().clone(),
            exit::of_verdict(Some(report.final_decision())),
        ),
        Err(e) => {
            let code = error_code(e);
            (
                Report::failure(
                    &args.model1_label(),
                    &args.model2.display().to_string(),
                    &e.to_string(),
                ),
                code,
            )
        }
    };
    crate::embed::result(&json);
    // A report that cannot be written must not hide the verdict: print it first, then fail
    // with the write error (exit 6, not a usage error).
    if let Err(e) = args.write_reports(&json) {
        if let Ok(report) = &result
            && !report.memory_aborted()
        {
            print_summary(report.json());
        }
        return Err(exit::fail(
            exit::RUNTIME,
            e.context("the report could not be written (the verdict above stands)"),
        ));
    }
    match result {
        Ok(report) if report.memory_aborted() => {
            let r = report.json();
            return Err(exit::fail(
                code,
                anyhow!(
                    "{}\nwhat to do: {}{}",
                    r["error"].as_str().unwrap_or("memory limit exceeded"),
                    r["advice"].as_str().unwrap_or(""),
                    args.output
                        .as_ref()
                        .map(|o| format!("\nreport written to {}", o.display()))
                        .unwrap_or_default()
                ),
            ));
        }
        Ok(report) => print_summary(report.json()),
        Err(e) => return Err(exit::fail(code, anyhow!(e))),
    }
    Ok(code)
}

fn print_summary(r: &serde_json::Value) {
    if crate::embed::quiet_stdout() {
        return;
    }
    for line in pot_report::summary(r) {
        println!("{line}");
    }
}

#[derive(Args)]
pub struct FingerprintArgs {
    /// The model to fingerprint.
    model: PathBuf,
    #[command(flatten)]
    key: KeyArgs,
    /// Run identifier; a later `pot verify --reference` must use the same.
    #[arg(long, default_value = "verify")]
    run_id: String,
    /// The mode whose query cap sets the number of challenges.
    #[arg(long, default_value = "audit", value_parser = parse_mode)]
    mode: Mode,
    /// Output file (.potfp).
    #[arg(long, short)]
    output: PathBuf,
    #[arg(long, default_value = "flex", value_parser = parse_backend)]
    backend: Backend,
    #[command(flatten)]
    resources: ResourceArgs,
    #[command(flatten)]
    emulate: EmulateOneArgs,
    #[arg(long, short)]
    quiet: bool,
}

impl ModelArgs for FingerprintArgs {
    fn model_paths(&mut self) -> Vec<&mut PathBuf> {
        vec![&mut self.model]
    }
}

pub fn fingerprint_cmd(args: FingerprintArgs) -> Result<u8, Failure> {
    let resources = args.resources.apply()?;
    let key = args.key.load()?;
    let printer = ProgressPrinter::new(args.quiet);
    let (fp, plan) = fingerprint_model(
        &args.model,
        &key,
        &args.run_id,
        &args.mode,
        Compute {
            backend: args.backend,
            arithmetic: args.emulate.arithmetic(),
        },
        &resources,
        |done, total| printer.show(Progress::Fingerprinted { done, total }),
    )
    .map_err(|e| exit::fail(error_code(&e), anyhow!(e)))?;
    if !args.quiet {
        eprintln!(
            "memory plan: {:?}, estimated peak {:.2} GB of a {:.2} GB budget",
            plan.strategy,
            plan.estimate.total_bytes as f64 / 1e9,
            plan.budget_bytes as f64 / 1e9
        );
    }
    if resources.limits.enable_8bit && !args.quiet {
        eprintln!(
            "note: this fingerprint comes from int8 weights; verify against it with \
             --tolerance quantized (int8 noise is above the default tolerance)"
        );
    }
    fp.save(&args.output, &key)
        .map_err(|e| exit::fail(exit::RUNTIME, anyhow!(e)))?;
    crate::embed::result(&serde_json::json!({
        "path": args.output,
        "challenges": fp.records.len(),
        "top_k": fp.header.top_k,
        "commitment": fp.header.commitment,
        "key_id": key.id(),
    }));
    if crate::embed::quiet_stdout() {
        return Ok(exit::SAME);
    }
    println!(
        "wrote {} ({} challenges, top-{}, commitment {})",
        args.output.display(),
        fp.records.len(),
        fp.header.top_k,
        fp.header.commitment
    );
    Ok(exit::SAME)
}

#[derive(Args)]
pub struct CalibrateArgs {
    /// Reference model (GGUF file or Hugging Face directory).
    #[arg(long)]
    model1: PathBuf,
    /// A deployment of the same weights (another encoding, engine or backend): a model file or
    /// directory, or a serving engine's address (`http://host:port/v1`).
    #[arg(long)]
    model2: PathBuf,
    #[command(flatten)]
    served: ServedArgs,
    /// Challenges to score (all of them: no early stopping).
    #[arg(short = 'n', long = "count", default_value_t = 48)]
    count: u64,
    #[command(flatten)]
    key: KeyArgs,
    /// Run identifier (challenges differ per run id).
    #[arg(long, default_value = "calibrate")]
    run_id: String,
    /// Compute backend: flex (CPU, default), ndarray or wgpu when compiled in.
    #[arg(long, default_value = "flex", value_parser = parse_backend)]
    backend: Backend,
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    #[command(flatten)]
    resources: ResourceArgs,
    #[command(flatten)]
    emulate: EmulateArgs,
    /// Write the scores here, one per line (input for `pot decide --scores`).
    #[arg(long)]
    scores_out: Option<PathBuf>,
    /// Print JSON (scores, noise summary, proposed tolerance).
    #[arg(long)]
    json: bool,
    #[arg(long, short)]
    quiet: bool,
}

impl ModelArgs for CalibrateArgs {
    fn model_paths(&mut self) -> Vec<&mut PathBuf> {
        vec![&mut self.model1, &mut self.model2]
    }
}

/// `pot calibrate`: the per-challenge scores of a same-weights pair and the tolerance the rule
/// of docs/STATISTICS.md proposes from them (`pot_stats::calibrate`).
pub fn calibrate_cmd(args: CalibrateArgs) -> Result<u8, Failure> {
    if args.count == 0 {
        return Err(exit::fail(
            exit::USAGE,
            anyhow!("--count must be at least 1"),
        ));
    }
    let resources = args.resources.apply()?;
    let served = served::candidate(&args.model2, Some(&args.model1), &args.served)?;
    // The scores measure noise between two deployments; any key serves, so a fresh one is used
    // when none is given (its id is in the JSON output).
    let key = if args.key.is_given() {
        args.key.load()?
    } else {
        MasterKey::generate()?
    };
    let opts = VerifyOptions {
        model1: args.model1.clone(),
        model2: args.model2.clone(),
        reference: None,
        mode: Mode::quick_gate(),
        method: Method::Betting,
        key,
        run_id: args.run_id.clone(),
        backend: args.backend,
        batch_size: args.batch_size,
        resources,
        weight_evidence: false,
        served,
        arithmetic: args.emulate.arithmetic(),
        deployments: Vec::new(),
        tolerance_reason: "pot calibrate: scores only, no verdict".into(),
        sources: [None, None],
    };
    let printer = ProgressPrinter::new(args.quiet || args.json);
    let report = score_stream(opts, args.count, |e| printer.show(e))
        .map_err(|e| exit::fail(error_code(&e), anyhow!(e)))?;
    let r = report.json();
    if report.memory_aborted() {
        return Err(exit::fail(
            exit::MEMORY,
            anyhow!("{}", r["error"].as_str().unwrap_or("memory limit exceeded")),
        ));
    }
    if r["security"]["tokenizer"]["verdict"] == "incompatible" {
        return Err(exit::fail(
            exit::LOAD_FAILED,
            anyhow!(
                "the tokenizers differ, so these are not the same weights: {}",
                r["reason"].as_str().unwrap_or("")
            ),
        ));
    }
    let scores: Vec<f64> = r["trace"]
        .as_array()
        .map(|t| t.iter().filter_map(|e| e["score"].as_f64()).collect())
        .unwrap_or_default();
    let calibration = pot_stats::calibrate(&scores, pot_stats::DEFAULT_MARGIN)
        .ok_or_else(|| exit::fail(exit::RUNTIME, anyhow!("no challenge produced a score")))?;
    if let Some(path) = &args.scores_out {
        let text: String = scores.iter().map(|s| format!("{s}\n")).collect();
        write_atomically(path, &text).map_err(|e| exit::fail(exit::RUNTIME, e))?;
    }
    let fits = |gamma: f64| calibration.gamma <= gamma;
    if args.json {
        let out = serde_json::json!({
            "model1": args.model1,
            "model2": args.model2,
            "run_id": args.run_id,
            "key_id": r["challenges"]["key_id"],
            "scores": scores,
            "calibration": calibration,
            "default_tolerance_covers": fits(pot_stats::DEFAULT_GAMMA),
            "quantized_tolerance_covers": fits(pot_stats::QUANTIZED_GAMMA),
        });
        crate::embed::print_json(&out).map_err(|e| anyhow!(e))?;
    } else {
        println!(
            "{} challenges: mean score {:.6}, sd {:.6}, max {:.6}",
            calibration.n, calibration.noise_mean, calibration.noise_sd, calibration.noise_max
        );
        println!(
            "proposed tolerance {:.6} = {} x max(max, mean + 3 sd)",
            calibration.gamma, calibration.margin
        );
        let advice = if fits(pot_stats::DEFAULT_GAMMA) {
            format!(
                "the default tolerance {} covers this deployment",
                pot_stats::DEFAULT_GAMMA
            )
        } else if fits(pot_stats::QUANTIZED_GAMMA) {
            format!(
                "above the default {}: use --tolerance quantized ({})",
                pot_stats::DEFAULT_GAMMA,
                pot_stats::QUANTIZED_GAMMA
            )
        } else {
            format!(
                "above the quantized setting {}: --tolerance {:.4} would accept it, and with it \
                 any modification scoring below that (docs/STATISTICS.md)",
                pot_stats::QUANTIZED_GAMMA,
                calibration.gamma
            )
        };
        println!("{advice}");
    }
    Ok(exit::SAME)
}

//! The verification pipeline, thin on purpose: it wires the stage crates together through the
//! typed stages of [`stages`] and writes one report. Data flows one way: challenges -> reference
//! records -> candidate scores, one query at a time into the sequential test -> final decision
//! -> report, with weight evidence (config, TLSH, Merkle) beside it.
//!
//! Memory: each model gets a plan from pot-memory-governor before any weight is read. When both
//! models fit resident in the budget they run side by side (model 1 fingerprints each batch just
//! before model 2 scores it, so early stopping saves both models' compute); otherwise model 1 is
//! fingerprinted on the mode's query cap and released before model 2 is loaded. A monitor
//! thread watches RSS and system memory; at the kill threshold or past the budget it cancels the
//! work, and the report says "memory limit exceeded" with `success: false`.

mod deployments;
mod report;
pub mod schema;
mod served;
pub mod stages;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use pot_challenge_kdf::{Challenge, ChallengeSpec, Commitment, MasterKey};
use pot_formats::{Model, Tokenizer};
use pot_memory_governor::{
    Execution, Limits, Monitor, MonitorConfig, Plan, PlanError, Strategy, SystemMemory, Thresholds,
    Workload, plan,
};
use pot_provenance::{TensorEncoding, TensorTree};
use pot_scoring::{
    Arithmetic, Backend, Fingerprint, FingerprintError, FingerprintHeader, FingerprintOptions,
    Residency, ScoringError, check_same_vocabulary, config_sha256, encode_challenge,
};
use pot_security::compare_tokenizers;
use pot_stats::{Method, Mode, SequentialTest, Step, Verdict};

pub use deployments::{Deployment, DeploymentWeights};
pub use report::{REPORT_VERSION, Report};
pub use served::ServedCandidate;
pub use stages::WeightEvidence;
use stages::{
    CandidateStage, ChallengeStage, DecisionStage, EvidenceStage, KdfChallenges, LiveModel,
    ReferenceStage, SecurityAndProvenance, sequential_test,
};

/// Environment variable that overrides the monitor's RSS budget (bytes) after planning: a test
/// hook to force a budget crossing mid-run.
pub const MONITOR_BUDGET_ENV: &str = "POT_MONITOR_BUDGET_BYTES";

/// How much memory and what safety the run may use.
#[derive(Clone, Debug)]
pub struct ResourceOptions {
    pub limits: Limits,
    pub thresholds: Thresholds,
    pub monitor_interval: Duration,
    /// A flag that stops the run when set (an embedder's Ctrl-C), through the monitor.
    pub interrupt: Option<Arc<AtomicBool>>,
}

impl Default for ResourceOptions {
    fn default() -> Self {
        Self {
            limits: Limits {
                max_memory_bytes: 40_000_000_000,
                min_free_bytes: 2_000_000_000,
                enable_offload: false,
                enable_8bit: false,
            },
            thresholds: Thresholds::default(),
            monitor_interval: Duration::from_millis(100),
            interrupt: None,
        }
    }
}

/// What to verify and how.
pub struct VerifyOptions {
    pub model1: PathBuf,
    pub model2: PathBuf,
    /// A saved fingerprint used instead of running model 1.
    pub reference: Option<PathBuf>,
    pub mode: Mode,
    pub method: Method,
    pub key: MasterKey,
    pub run_id: String,
    pub backend: Backend,
    /// Challenges per forward pass of the candidate (early stopping wastes at most a batch).
    pub batch_size: usize,
    pub resources: ResourceOptions,
    /// Hash both models' weights (config hashes, TLSH, Merkle roots) beside the test; off only
    /// for [`score_stream`], which measures scores and nothing else.
    pub weight_evidence: bool,
    /// Model 2 is served (`model2` then holds its address, for the report).
    pub served: Option<ServedCandidate>,
    /// How models 1 and 2 are computed when pot runs them: its own f32 arithmetic, or an
    /// engine's (`--emulate llama.cpp`: the reference as the serving engine computes it).
    pub arithmetic: [Arithmetic; 2],
    /// Deployments of model 1 to test the candidate against (`--deployment`), each with its
    /// own tolerance; empty: model 1 as stored under the mode's tolerance.
    pub deployments: Vec<Deployment>,
    /// Why the tolerance is what it is (the path and its measurement, or the preset given).
    pub tolerance_reason: String,
    /// Models 1 and 2 as resolved in the Hugging Face cache (`ORG/NAME[@REV]`), for the
    /// report; `None` for a path given as such.
    pub sources: [Option<pot_formats::hub::HubModel>; 2],
}

/// Progress events for a front end to display.
pub enum Progress<'a> {
    Stage(&'a str),
    Fingerprinted {
        done: usize,
        total: usize,
    },
    /// A query was scored; the running estimate and confidence-sequence bounds after it.
    Scored {
        query: u64,
        score: f64,
        cap: u64,
        mean: f64,
        lower: f64,
        upper: f64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    // Not `#[from]`: a source would print the same message twice in `{:#}` chains.
    #[error("model loading failed: {0}")]
    Load(pot_formats::FormatError),
    #[error(transparent)]
    Scoring(ScoringError),
    #[error(transparent)]
    Stats(#[from] pot_stats::StatsError),
    #[error("memory plan refused before loading: {0}")]
    Plan(PlanError),
    /// The monitor cancelled the work; the report records it.
    #[error("memory limit exceeded: {0}")]
    MemoryLimit(String),
    #[error("served model: {0}")]
    Served(pot_served::ServedError),
    /// A deployment could not be built or does not fit model 1.
    #[error("deployment: {0}")]
    Deployment(String),
}

impl From<pot_served::ServedError> for VerifyError {
    fn from(e: pot_served::ServedError) -> Self {
        VerifyError::Served(e)
    }
}

impl From<pot_formats::FormatError> for VerifyError {
    fn from(e: pot_formats::FormatError) -> Self {
        VerifyError::Load(e)
    }
}

impl From<PlanError> for VerifyError {
    fn from(e: PlanError) -> Self {
        VerifyError::Plan(e)
    }
}

impl From<ScoringError> for VerifyError {
    fn from(e: ScoringError) -> Self {
        match e {
            ScoringError::Cancelled => VerifyError::MemoryLimit("cancelled by the monitor".into()),
            other => VerifyError::Scoring(other),
        }
    }
}

impl From<FingerprintError> for VerifyError {
    fn from(e: FingerprintError) -> Self {
        VerifyError::Scoring(e.into())
    }
}

/// What to do after "memory limit exceeded", in the report and the README.
pub const MEMORY_ADVICE: &str = "lower --max-memory below what the machine can spare, add \
     --enable-8bit (int8 weights, about a quarter of f32), or add --enable-offload (stream \
     layer by layer); a smaller --batch-size also lowers the peak";

struct Side {
    model: Model,
    tokenizer: Tokenizer,
    config_sha256: String,
    vocab_sha256: String,
}

fn open(path: &Path) -> Result<Side, VerifyError> {
    let model = Model::open(path)?;
    let tokenizer = model.tokenizer()?;
    Ok(Side {
        config_sha256: config_sha256(model.config()),
        vocab_sha256: tokenizer.vocab_sha256(),
        tokenizer,
        model,
    })
}

fn residency(strategy: Strategy) -> Residency {
    match strategy {
        Strategy::Resident => Residency::Resident,
        Strategy::Streamed { layers_at_once } => Residency::Streamed { layers_at_once },
        Strategy::Int8 => Residency::Int8,
    }
}

/// Sequences per pass and their longest tokenised length, for the memory plan.
pub fn workload(
    tokenizer: &Tokenizer,
    challenges: &[Challenge],
    batch_size: usize,
) -> Result<Workload, VerifyError> {
    let mut max_tokens = 1;
    for c in challenges {
        // A challenge that does not tokenize is an error here, not a plan for 1 token.
        max_tokens = max_tokens.max(encode_challenge(tokenizer, c)?.len());
    }
    Ok(Workload {
        batch_size: batch_size.max(FingerprintOptions::default().batch_size),
        max_tokens,
    })
}

/// The workload of `challenges` when no tokenizer is at hand (a shape or a config.json without
/// one): every prompt byte counted as a token, plus BOS and a SentencePiece word prefix. No
/// tokenizer pot reads (byte-level BPE, SentencePiece with byte fallback) makes more tokens
/// than that, so the plan is an upper bound of the one a real run makes.
pub fn workload_without_tokenizer(challenges: &[Challenge], batch_size: usize) -> Workload {
    Workload {
        batch_size: batch_size.max(FingerprintOptions::default().batch_size),
        max_tokens: challenges
            .iter()
            .map(|c| c.prompt.len() + 2)
            .max()
            .unwrap_or(1),
    }
}

/// Whether two model paths name the same file or directory.
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn start_monitor(resources: &ResourceOptions) -> Result<Monitor, PlanError> {
    let budget = resources.limits.budget_bytes(SystemMemory::read())?;
    let budget = std::env::var(MONITOR_BUDGET_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(budget);
    // A run never goes on unguarded: no monitor thread, no run.
    Monitor::start(MonitorConfig {
        thresholds: resources.thresholds,
        budget_bytes: Some(budget),
        interval: resources.monitor_interval,
        interrupt: resources.interrupt.clone(),
    })
    .map_err(|e| PlanError::Monitor(e.to_string()))
}

fn check_monitor(monitor: &Monitor) -> Result<(), VerifyError> {
    match monitor.abort_reason() {
        Some(reason) => Err(VerifyError::MemoryLimit(reason)),
        None => Ok(()),
    }
}

/// Runs the whole pipeline. Errors before any evidence (unreadable model, plan refused, bad
/// fingerprint) are returned; a memory abort and everything after the first evidence are
/// recorded in the report.
pub fn verify(
    opts: &VerifyOptions,
    mut progress: impl FnMut(Progress),
) -> Result<Report, VerifyError> {
    let started = Instant::now();
    let mut report = Report::new(opts);
    let monitor = start_monitor(&opts.resources)?;
    monitor.note("start");
    let result = pipeline(opts, &mut report, &monitor, &mut progress);
    monitor.note("end");
    let abort = monitor.abort_reason();
    let memory = monitor.finish();
    match result {
        Ok(()) => {}
        Err(VerifyError::MemoryLimit(reason)) => {
            report.memory_abort(&abort.unwrap_or(reason), MEMORY_ADVICE)
        }
        Err(e) => return Err(e),
    }
    report.finish(started, &memory);
    Ok(report)
}

fn pipeline(
    opts: &VerifyOptions,
    report: &mut Report,
    monitor: &Monitor,
    progress: &mut impl FnMut(Progress),
) -> Result<(), VerifyError> {
    let challenge_stage = KdfChallenges {
        key: &opts.key,
        spec: ChallengeSpec::new(opts.run_id.clone(), opts.mode.n_max),
    };
    let commitment = challenge_stage.commitment();
    report.set_challenges(&commitment);
    let challenges = challenge_stage.challenges();
    if !opts.deployments.is_empty() {
        return deployments::pipeline(opts, &commitment, &challenges, report, monitor, progress);
    }
    if let Some(served) = &opts.served {
        return served_pipeline(
            opts,
            served,
            &commitment,
            &challenges,
            report,
            monitor,
            progress,
        );
    }
    let limits = &opts.resources.limits;
    let system = SystemMemory::read();
    progress(Progress::Stage("reading models"));
    let candidate = open(&opts.model2)?;
    let work = workload(&candidate.tokenizer, &challenges, opts.batch_size)?;
    let plan2 = plan(&candidate.model.description(), limits, &work, system)?;

    let evidence2 = if opts.weight_evidence {
        progress(Progress::Stage("hashing model 2 (config, TLSH, Merkle)"));
        Some(SecurityAndProvenance.evidence(&candidate.model, plan2.budget_bytes)?)
    } else {
        None
    };
    check_monitor(monitor)?;
    let load_candidate = |monitor: &Monitor| -> Result<LiveModel, VerifyError> {
        let m2 = LiveModel::load(
            &candidate.model,
            &candidate.tokenizer,
            header_for(&candidate, &opts.run_id, &commitment, None),
            opts.backend,
            residency(plan2.strategy),
            opts.arithmetic[1],
            monitor.cancel_flag(),
        )?;
        monitor.note("model 2 loaded");
        Ok(m2)
    };
    let mut run = QueryRun {
        opts,
        challenges: &challenges,
        test: sequential_test(&opts.mode, opts.method)?,
        monitor,
        started: Instant::now(),
    };

    match &opts.reference {
        Some(path) => {
            let mut fp = Fingerprint::load(path, &opts.key)?;
            report.model1_identity(&fp.header.config_sha256, &fp.header.vocab_sha256);
            if let Some(evidence2) = &evidence2 {
                report.reference_evidence(fp.header.merkle_root.as_deref(), evidence2);
            }
            check_reference(&fp, &commitment)?;
            report.model2_identity(&candidate.config_sha256, &candidate.vocab_sha256);
            if fp.header.vocab_sha256 != candidate.vocab_sha256 {
                report.tokenizer_mismatch(
                    "the candidate's token -> id map differs from the reference's",
                );
                return Ok(());
            }
            // The candidate's output rows are what the records' ids index.
            let vocab = candidate.model.config().vocab_size;
            check_records(&fp, path, &challenges, vocab, &candidate.tokenizer)?;
            let execution = "reference fingerprint: only model 2 is loaded";
            report.memory_plan(None, Some(&plan2), execution);
            progress(Progress::Stage("scoring model 2"));
            run.queries(&mut fp, &mut load_candidate(monitor)?, report, progress)?;
        }
        None => {
            let side = open(&opts.model1)?;
            report.model1_identity(&side.config_sha256, &side.vocab_sha256);
            report.model2_identity(&candidate.config_sha256, &candidate.vocab_sha256);
            let plan1 = plan(&side.model.description(), limits, &work, system)?;
            let root1 = match &evidence2 {
                Some(evidence2) => {
                    progress(Progress::Stage("hashing model 1 (config, TLSH, Merkle)"));
                    let evidence1 = if same_file(&opts.model1, &opts.model2) {
                        // The same file given twice is read and hashed once.
                        evidence2.clone()
                    } else {
                        SecurityAndProvenance.evidence(&side.model, plan1.budget_bytes)?
                    };
                    check_monitor(monitor)?;
                    report.weight_evidence(&evidence1, evidence2);
                    Some(evidence1.merkle_root)
                }
                None => None,
            };
            report.tokenizer_report(&compare_tokenizers(&side.tokenizer, &candidate.tokenizer));
            if let Err(e) = check_same_vocabulary(&side.tokenizer, &candidate.tokenizer) {
                report.tokenizer_mismatch(&e.to_string());
                return Ok(());
            }
            let header1 = header_for(&side, &opts.run_id, &commitment, root1);
            let load_reference = || {
                LiveModel::load(
                    &side.model,
                    &side.tokenizer,
                    header1.clone(),
                    opts.backend,
                    residency(plan1.strategy),
                    opts.arithmetic[0],
                    monitor.cancel_flag(),
                )
                .inspect(|_| monitor.note("model 1 loaded"))
            };
            let execution = Execution::of(&plan1, &plan2);
            report.memory_plan(Some(&plan1), Some(&plan2), execution.describe());
            if execution != Execution::Sequential {
                progress(Progress::Stage(match execution {
                    Execution::SideBySide => "loading both models (side by side)",
                    _ => "opening both models (streamed, interleaved per batch)",
                }));
                let mut m1 = load_reference()?;
                let mut m2 = load_candidate(monitor)?;
                progress(Progress::Stage("scoring"));
                run.queries(&mut m1, &mut m2, report, progress)?;
            } else {
                progress(Progress::Stage("fingerprinting model 1"));
                let mut fp = load_reference()?.fingerprint_all(&challenges, |done, total| {
                    progress(Progress::Fingerprinted { done, total })
                })?;
                report.timing("fingerprint_model1_s", run.started.elapsed().as_secs_f64());
                drop(side);
                monitor.note("model 1 released");
                check_monitor(monitor)?;
                progress(Progress::Stage("scoring model 2"));
                run.queries(&mut fp, &mut load_candidate(monitor)?, report, progress)?;
            }
        }
    }
    report.timing("queries_s", run.started.elapsed().as_secs_f64());
    monitor.note("models released");
    report.decide(run.test.outcome());
    Ok(())
}

/// [`pipeline`] with model 2 behind a serving engine: model 1 (or its fingerprint) is the
/// reference, the engine scores each challenge, and no weights of model 2 are ever read (so no
/// weight evidence for it: the verdict is the sequential test's alone).
fn served_pipeline(
    opts: &VerifyOptions,
    served: &ServedCandidate,
    commitment: &Commitment,
    challenges: &[Challenge],
    report: &mut Report,
    monitor: &Monitor,
    progress: &mut impl FnMut(Progress),
) -> Result<(), VerifyError> {
    let mut tokenizer = served.tokenizer.clone();
    report.served(served, &tokenizer.vocab_sha256());
    let mut run = QueryRun {
        opts,
        challenges,
        test: sequential_test(&opts.mode, opts.method)?,
        monitor,
        started: Instant::now(),
    };
    let mut candidate = served::ServedStage::new(served, challenges);
    let side;
    let mut reference: Box<dyn ReferenceStage + '_>;
    match &opts.reference {
        Some(path) => {
            let fp = Fingerprint::load(path, &opts.key)?;
            report.model1_identity(&fp.header.config_sha256, &fp.header.vocab_sha256);
            check_reference(&fp, commitment)?;
            if fp.header.vocab_sha256 != tokenizer.vocab_sha256() {
                return Err(ScoringError::from(FingerprintError::Mismatch(
                    "the tokenizer given with --tokenizer is not the one the fingerprint was made with \
                     (vocabulary digests differ); pass model 1's tokenizer"
                        .into(),
                ))
                .into());
            }
            // A bare tokenizer.json does not say whether the model adds a BOS token; the
            // records do (and are checked against the result next).
            if tokenizer.bos.is_none() {
                tokenizer.bos = leading_bos(&fp, challenges, &tokenizer);
            }
            // Record ids are only looked up here, never used to index a model's output rows.
            check_records(&fp, path, challenges, usize::MAX, &tokenizer)?;
            reference = Box::new(fp);
        }
        None => {
            progress(Progress::Stage("reading model 1"));
            side = open(&opts.model1)?;
            report.model1_identity(&side.config_sha256, &side.vocab_sha256);
            if side.vocab_sha256 != served.tokenizer.vocab_sha256() {
                return Err(VerifyError::Served(pot_served::ServedError::Config(
                    "the tokenizer used to check the server's tokens is not model 1's".into(),
                )));
            }
            let work = workload(&side.tokenizer, challenges, opts.batch_size)?;
            let plan1 = plan(
                &side.model.description(),
                &opts.resources.limits,
                &work,
                SystemMemory::read(),
            )?;
            report.memory_plan(
                Some(&plan1),
                None,
                "served: model 1 is the only model loaded; model 2 runs on its server",
            );
            if opts.weight_evidence {
                progress(Progress::Stage("hashing model 1 (config, TLSH, Merkle)"));
                let evidence1 = SecurityAndProvenance.evidence(&side.model, plan1.budget_bytes)?;
                report.model1_evidence(&evidence1);
                check_monitor(monitor)?;
            }
            progress(Progress::Stage("loading model 1"));
            let header1 = header_for(&side, &opts.run_id, commitment, None);
            reference = Box::new(
                LiveModel::load(
                    &side.model,
                    &side.tokenizer,
                    header1,
                    opts.backend,
                    residency(plan1.strategy),
                    opts.arithmetic[0],
                    monitor.cancel_flag(),
                )
                .inspect(|_| monitor.note("model 1 loaded"))?,
            );
        }
    }
    progress(Progress::Stage("checking the server's tokens"));
    let first = reference.records(&challenges[..1])?;
    if let Some(detail) = candidate.check_first(&first[0])? {
        report.tokenizer_mismatch(&detail);
        return Ok(());
    }
    progress(Progress::Stage("scoring model 2 on its server"));
    run.queries(reference.as_mut(), &mut candidate, report, progress)?;
    report.served_alignment(&candidate.stats);
    report.timing("queries_s", run.started.elapsed().as_secs_f64());
    report.decide(run.test.outcome());
    Ok(())
}

/// The BOS id every record starts with before the challenge's own tokens, if they all do.
fn leading_bos(fp: &Fingerprint, challenges: &[Challenge], tokenizer: &Tokenizer) -> Option<u32> {
    let first = fp.records.first()?.token_ids.first().copied()?;
    let all = fp.records.iter().zip(challenges).all(|(r, c)| {
        r.token_ids.first() == Some(&first)
            && tokenizer
                .encode(&c.prompt)
                .is_ok_and(|ids| ids.as_slice() == &r.token_ids[1..])
    });
    all.then_some(first)
}

/// Scores the first `n` challenges of `opts`'s run on both models without stopping early and
/// without hashing the weights: the noise floor between a reference and a deployment of the same
/// weights (`pot calibrate`) and the score streams of the detection table. Challenge `i` is the
/// same for every count, so the stream's first queries are exactly those `pot verify` would
/// score with the same key and run id. The report's `trace` holds the scores.
pub fn score_stream(
    opts: VerifyOptions,
    n: u64,
    progress: impl FnMut(Progress),
) -> Result<Report, VerifyError> {
    let mode = Mode {
        n_min: n,
        n_max: n,
        ..opts.mode.clone()
    };
    let opts = VerifyOptions {
        mode,
        weight_evidence: false,
        ..opts
    };
    verify(&opts, progress)
}

/// What every way of running the queries shares: the challenges, the decision, the monitor.
struct QueryRun<'a> {
    opts: &'a VerifyOptions,
    challenges: &'a [Challenge],
    test: SequentialTest,
    monitor: &'a Monitor,
    started: Instant,
}

impl QueryRun<'_> {
    /// Feeds the decision one query at a time, a batch of challenges per forward pass, until it
    /// stops or the cap is reached.
    fn queries(
        &mut self,
        reference: &mut dyn ReferenceStage,
        candidate: &mut dyn CandidateStage,
        report: &mut Report,
        progress: &mut impl FnMut(Progress),
    ) -> Result<(), VerifyError> {
        let test: &mut dyn DecisionStage = &mut self.test;
        for batch in self.challenges.chunks(self.opts.batch_size.max(1)) {
            check_monitor(self.monitor)?;
            let records = reference.records(batch)?;
            for (record, score) in records.iter().zip(candidate.score(&records)?) {
                let step = test.push(score.score)?;
                let outcome = test.outcome();
                progress(Progress::Scored {
                    query: outcome.n,
                    score: score.score,
                    cap: self.opts.mode.n_max,
                    mean: outcome.effect_size,
                    lower: outcome.ci_lower,
                    upper: outcome.ci_upper,
                });
                let family = self
                    .challenges
                    .iter()
                    .find(|c| c.index == record.index)
                    .map(|c| c.family.name());
                report.trace(record, family, &score, &outcome);
                if let Step::Stop(_) = step {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

fn check_reference(fp: &Fingerprint, commitment: &Commitment) -> Result<(), VerifyError> {
    if fp.header.commitment == commitment.digest {
        return Ok(());
    }
    Err(ScoringError::from(FingerprintError::Mismatch(format!(
        "it was made for challenge commitment {} (run id `{}`, key id {}), this run's is {}; \
         pass the same --run-id, --key-file and --mode",
        fp.header.commitment, fp.header.run_id, fp.header.key_id, commitment.digest
    )))
    .into())
}

/// Every record of an (authenticated) fingerprint is what this run would have produced: valid
/// against the vocabulary, one per challenge in order, on the token ids the challenge's prompt
/// tokenizes to, scored from the header's prefix. Nothing in a header is taken on trust.
fn check_records(
    fp: &Fingerprint,
    path: &Path,
    challenges: &[Challenge],
    vocab_size: usize,
    tokenizer: &Tokenizer,
) -> Result<(), VerifyError> {
    let origin = path.display().to_string();
    fp.validate(vocab_size, &origin)?;
    let mismatch = |reason: String| -> VerifyError {
        ScoringError::from(FingerprintError::File {
            path: origin.clone(),
            reason,
        })
        .into()
    };
    if fp.records.len() != challenges.len() {
        return Err(mismatch(format!(
            "it holds {} records for the {} challenges of this run",
            fp.records.len(),
            challenges.len()
        )));
    }
    for (record, challenge) in fp.records.iter().zip(challenges) {
        if record.index != challenge.index || record.challenge_id != challenge.id {
            return Err(mismatch(format!(
                "record {} is for challenge {} ({}), not {} ({})",
                record.index, record.challenge_id, record.index, challenge.id, challenge.index
            )));
        }
        let ids = encode_challenge(tokenizer, challenge)?;
        if ids != record.token_ids || record.first_scored != fp.header.prefix {
            return Err(mismatch(format!(
                "challenge {}: its token ids or first scored position are not what the \
                 challenge's prompt gives",
                challenge.id
            )));
        }
    }
    Ok(())
}

/// The header of a fingerprint of `side` on the challenge set `commitment` describes.
fn header_for(
    side: &Side,
    run_id: &str,
    commitment: &Commitment,
    merkle_root: Option<String>,
) -> FingerprintHeader {
    FingerprintHeader {
        model: side.model.path().display().to_string(),
        config_sha256: side.config_sha256.clone(),
        vocab_sha256: side.vocab_sha256.clone(),
        merkle_root,
        run_id: run_id.to_string(),
        key_id: commitment.key_id.0.clone(),
        commitment: commitment.digest.clone(),
        top_k: 0,
        prefix: 0,
    }
}

/// Where and how a model pot runs is computed.
#[derive(Clone, Copy, Debug)]
pub struct Compute {
    pub backend: Backend,
    /// pot's f32 arithmetic, or an engine's (`--emulate`).
    pub arithmetic: Arithmetic,
}

/// Fingerprints one model on the challenges a verify run with the same key, run id and mode
/// would use, so it can serve later as `--reference`. Planned and monitored like `verify`.
pub fn fingerprint_model(
    model: &Path,
    key: &MasterKey,
    run_id: &str,
    mode: &Mode,
    compute: Compute,
    resources: &ResourceOptions,
    progress: impl FnMut(usize, usize),
) -> Result<(Fingerprint, Plan), VerifyError> {
    let Compute {
        backend,
        arithmetic,
    } = compute;
    let side = open(model)?;
    let stage = KdfChallenges {
        key,
        spec: ChallengeSpec::new(run_id.to_string(), mode.n_max),
    };
    let commitment = stage.commitment();
    let challenges = stage.challenges();
    let work = workload(
        &side.tokenizer,
        &challenges,
        FingerprintOptions::default().batch_size,
    )?;
    let plan = plan(
        &side.model.description(),
        &resources.limits,
        &work,
        SystemMemory::read(),
    )?;
    let monitor = start_monitor(resources)?;
    let root = Some(TensorTree::of_model(&side.model, TensorEncoding::Stored)?.root());
    let header = header_for(&side, run_id, &commitment, root);
    let live = LiveModel::load(
        &side.model,
        &side.tokenizer,
        header,
        backend,
        residency(plan.strategy),
        arithmetic,
        monitor.cancel_flag(),
    )?;
    let result = live.fingerprint_all(&challenges, progress);
    let abort = monitor.abort_reason();
    drop(monitor);
    match (result, abort) {
        (_, Some(reason)) => Err(VerifyError::MemoryLimit(reason)),
        (Ok(fp), None) => Ok((fp, plan)),
        (Err(e), None) => Err(e.into()),
    }
}

/// The decision rule of docs/ARCHITECTURE.md, in one place: incompatible tokenizers mean
/// DIFFERENT; identical tensor Merkle roots prove identical weights, hence SAME; otherwise the
/// sequential test's verdict.
pub fn final_decision(
    tokenizers_compatible: bool,
    identical_weights: bool,
    statistical: Option<Verdict>,
) -> Verdict {
    if !tokenizers_compatible {
        Verdict::Different
    } else if identical_weights {
        Verdict::Same
    } else {
        statistical.unwrap_or(Verdict::Undecided)
    }
}

//! The verification pipeline, thin on purpose: it wires the stage crates together and writes one
//! report. Data flows one way: challenges -> reference fingerprint -> candidate scores, one query
//! at a time into the sequential test -> final decision -> report.
//!
//! Only one model is resident at a time: model 1 is fingerprinted on the mode's query cap and
//! released, then model 2 is scored in batches with the decision checked after every query.

mod memory;
mod report;

use std::path::{Path, PathBuf};
use std::time::Instant;

use pot_challenge_kdf::{ChallengeSpec, MasterKey, commit, generate};
use pot_formats::{Model, Tokenizer};
use pot_provenance::{TensorEncoding, TensorTree};
use pot_scoring::{
    Backend, Engine, Fingerprint, FingerprintHeader, FingerprintOptions, check_same_vocabulary,
    config_sha256, fingerprint, score_candidate,
};
use pot_security::{ConfigHashes, FuzzyHash, compare_tokenizers};
use pot_stats::{Method, Mode, SequentialTest, Step, Verdict};

pub use memory::{MemorySnapshot, peak_memory_gb};
pub use report::{REPORT_VERSION, Report};

/// What to verify and how.
pub struct VerifyOptions {
    pub model1: PathBuf,
    /// The candidate; `None` with a `reference` fingerprint standing in for model 1.
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
}

/// Progress events for a front end to display.
pub enum Progress<'a> {
    Stage(&'a str),
    Fingerprinted { done: usize, total: usize },
    Scored { query: u64, score: f64, cap: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("model loading failed: {0}")]
    Load(#[from] pot_formats::FormatError),
    #[error(transparent)]
    Scoring(#[from] pot_scoring::ScoringError),
    #[error(transparent)]
    Stats(#[from] pot_stats::StatsError),
}

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

/// Weight-level evidence of one model: config hashes, TLSH, tensor Merkle root. Read from the
/// memory map (no forward pass); computed before the model is released.
pub struct WeightEvidence {
    pub config: ConfigHashes,
    pub fuzzy: FuzzyHash,
    pub merkle_root: String,
}

fn weight_evidence(side: &Side) -> Result<WeightEvidence, VerifyError> {
    Ok(WeightEvidence {
        config: ConfigHashes::of_model(&side.model),
        fuzzy: FuzzyHash::of_model(&side.model),
        merkle_root: TensorTree::of_model(&side.model, TensorEncoding::Stored)?.root(),
    })
}

/// Runs the whole pipeline. Errors before any evidence (unreadable model, bad fingerprint) are
/// returned; everything after that is recorded in the report.
pub fn verify(
    opts: &VerifyOptions,
    mut progress: impl FnMut(Progress),
) -> Result<Report, VerifyError> {
    let started = Instant::now();
    let mut report = Report::new(opts);
    let memory_before = MemorySnapshot::now();

    progress(Progress::Stage("reading models"));
    let candidate = open(&opts.model2)?;
    progress(Progress::Stage("hashing model 2 (config, TLSH, Merkle)"));
    let evidence2 = weight_evidence(&candidate)?;
    let spec = ChallengeSpec::new(opts.run_id.clone(), opts.mode.n_max);
    let commitment = commit(&opts.key, &spec);
    report.set_challenges(&commitment);

    // Reference: a saved fingerprint, or model 1 fingerprinted now and released.
    let reference: Fingerprint = match &opts.reference {
        Some(path) => {
            let fp = Fingerprint::load(path)?;
            report.model1_identity(&fp.header.config_sha256, &fp.header.vocab_sha256);
            report.reference_evidence(fp.header.merkle_root.as_deref(), &evidence2);
            if fp.header.commitment != commitment.digest {
                return Err(pot_scoring::ScoringError::FingerprintMismatch(format!(
                    "it was made for challenge commitment {} (run id `{}`, key id {}), this run's is {}; \
                     pass the same --run-id, --key-file and --mode",
                    fp.header.commitment, fp.header.run_id, fp.header.key_id, commitment.digest
                ))
                .into());
            }
            fp
        }
        None => {
            let side = open(&opts.model1)?;
            report.model1_identity(&side.config_sha256, &side.vocab_sha256);
            progress(Progress::Stage("hashing model 1 (config, TLSH, Merkle)"));
            let evidence1 = weight_evidence(&side)?;
            report.weight_evidence(&evidence1, &evidence2);
            report.tokenizer_report(&compare_tokenizers(&side.tokenizer, &candidate.tokenizer));
            if let Err(e) = check_same_vocabulary(&side.tokenizer, &candidate.tokenizer) {
                report.tokenizer_mismatch(&e.to_string());
                report.finish(started, memory_before);
                return Ok(report);
            }
            progress(Progress::Stage("fingerprinting model 1"));
            let t = Instant::now();
            let engine = Engine::load(&side.model, opts.backend.device()?)?;
            let challenges = generate(&opts.key, &spec);
            let header = header_for(
                &side,
                &opts.run_id,
                &commitment,
                Some(evidence1.merkle_root.clone()),
            );
            let fp = fingerprint(
                &engine,
                &side.tokenizer,
                &challenges,
                header,
                &FingerprintOptions::default(),
                |done, total| progress(Progress::Fingerprinted { done, total }),
            )?;
            report.timing("fingerprint_model1_s", t.elapsed().as_secs_f64());
            drop(engine);
            drop(side);
            report.memory_event("model 1 released", MemorySnapshot::now());
            fp
        }
    };
    report.model2_identity(&candidate.config_sha256, &candidate.vocab_sha256);
    if reference.header.vocab_sha256 != candidate.vocab_sha256 {
        report.tokenizer_mismatch("the candidate's token -> id map differs from the reference's");
        report.finish(started, memory_before);
        return Ok(report);
    }

    progress(Progress::Stage("scoring model 2"));
    let t = Instant::now();
    let engine = Engine::load(&candidate.model, opts.backend.device()?)?;
    let mut test = SequentialTest::new(opts.mode.clone(), opts.method, 1.0)?;
    'batches: for batch in reference.records.chunks(opts.batch_size.max(1)) {
        for (record, score) in batch.iter().zip(score_candidate(&engine, batch)?) {
            let step = test.push(score.score)?;
            progress(Progress::Scored {
                query: test.n(),
                score: score.score,
                cap: opts.mode.n_max,
            });
            report.trace(record, &score, &test.outcome());
            if let Step::Stop(_) = step {
                break 'batches;
            }
        }
    }
    report.timing("score_model2_s", t.elapsed().as_secs_f64());
    drop(engine);
    report.decide(test.outcome());
    report.finish(started, memory_before);
    Ok(report)
}

/// The header of a fingerprint of `side` on the challenge set `commitment` describes.
fn header_for(
    side: &Side,
    run_id: &str,
    commitment: &pot_challenge_kdf::Commitment,
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

/// Fingerprints one model on the challenges a verify run with the same key, run id and mode
/// would use, so it can serve later as `--reference`.
pub fn fingerprint_model(
    model: &Path,
    key: &MasterKey,
    run_id: &str,
    mode: &Mode,
    backend: Backend,
    progress: impl FnMut(usize, usize),
) -> Result<Fingerprint, VerifyError> {
    let side = open(model)?;
    let spec = ChallengeSpec::new(run_id.to_string(), mode.n_max);
    let commitment = commit(key, &spec);
    let root = Some(TensorTree::of_model(&side.model, TensorEncoding::Stored)?.root());
    let header = header_for(&side, run_id, &commitment, root);
    let engine = Engine::load(&side.model, backend.device()?)?;
    let challenges = generate(key, &spec);
    Ok(fingerprint(
        &engine,
        &side.tokenizer,
        &challenges,
        header,
        &FingerprintOptions::default(),
        progress,
    )?)
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

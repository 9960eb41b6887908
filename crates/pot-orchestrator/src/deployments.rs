//! `pot verify --deployment`: model 1's deployments built by pot (its port of llama.cpp's
//! quantiser, and the engine's arithmetic where the candidate is served by llama.cpp), each
//! fingerprinted on the run's challenges, the candidate scored against all of them on the same
//! queries, and one [`DeploymentTest`] saying which deployment explains it (SAME, naming it),
//! that none does (DIFFERENT), or UNDECIDED. docs/STATISTICS.md, "Several deployments", has the
//! argument that the error rate stays at alpha over the set.

use std::path::{Path, PathBuf};
use std::time::Instant;

use pot_challenge_kdf::{Challenge, Commitment};
use pot_formats::quantize::FileType;
use pot_formats::quantize_file::{QuantizeOptions, quantize_gguf};
use pot_memory_governor::{Monitor, Plan, SystemMemory, Workload, plan};
use pot_scoring::{Arithmetic, ChallengeRecord, check_same_vocabulary};
use pot_security::compare_tokenizers;
use pot_stats::{Arm, DeploymentTest, Step};

use crate::stages::{
    CandidateStage, EvidenceStage, LiveModel, SecurityAndProvenance, WeightEvidence,
};
use crate::{
    Progress, Report, Side, VerifyError, VerifyOptions, check_monitor, header_for, open, residency,
    served, workload,
};

/// How a deployment's weights come from model 1's.
#[derive(Clone, Debug, PartialEq)]
pub enum DeploymentWeights {
    /// Model 1 as stored.
    Stored,
    /// Model 1 (a GGUF) quantised to this file type by pot's port of `llama_model_quantize`
    /// (byte-identical to llama.cpp's; a quantised model 1 is dequantised first, as
    /// llama-quantize's `--allow-requantize`).
    Quantized(FileType),
    /// A file the user names as a deployment of model 1; pot does not check that it is one.
    File(PathBuf),
}

/// A deployment of model 1 the candidate is tested against.
#[derive(Clone, Debug, PartialEq)]
pub struct Deployment {
    pub weights: DeploymentWeights,
    /// How pot computes it: its own f32 arithmetic, or the serving engine's.
    pub arithmetic: Arithmetic,
    /// Its tolerance, from the measured noise of its path (`pot_stats::Path`).
    pub gamma: f64,
    /// Where `gamma` comes from, for the report.
    pub gamma_source: String,
}

impl Deployment {
    /// A short name: `stored`, the file type (`Q4_K_M`), or the file's name.
    pub fn name(&self) -> String {
        match &self.weights {
            DeploymentWeights::Stored => "stored".into(),
            DeploymentWeights::Quantized(t) => t.name().into(),
            DeploymentWeights::File(p) => p
                .file_name()
                .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into()),
        }
    }

    /// One sentence for the report: "model 1 quantised to Q4_K_M by pot (llama.cpp's
    /// quantiser), computed as llama.cpp computes it".
    pub fn describe(&self) -> String {
        let weights = match &self.weights {
            DeploymentWeights::Stored => "model 1 as stored".to_string(),
            DeploymentWeights::Quantized(t) => {
                format!("model 1 quantised to {t} by pot (llama.cpp's quantiser, byte for byte)")
            }
            DeploymentWeights::File(p) => {
                format!("{} (named as a deployment of model 1)", p.display())
            }
        };
        let arithmetic = match self.arithmetic {
            Arithmetic::Exact => "computed by pot in f32".to_string(),
            other => format!("computed as {} computes it", other.describe()),
        };
        format!("{weights}, {arithmetic}")
    }
}

/// The deployment pipeline (see the module doc). Model 1 must be a file.
pub(crate) fn pipeline(
    opts: &VerifyOptions,
    commitment: &Commitment,
    challenges: &[Challenge],
    report: &mut Report,
    monitor: &Monitor,
    progress: &mut impl FnMut(Progress),
) -> Result<(), VerifyError> {
    let deployments = &opts.deployments;
    if opts.reference.is_some() {
        return Err(VerifyError::Deployment(
            "--deployment needs model 1 as a model file to build its deployments from; a \
             fingerprint is one deployment already (drop --deployment, or give --model1)"
                .into(),
        ));
    }
    progress(Progress::Stage("reading model 1"));
    let side = open(&opts.model1)?;
    report.model1_identity(&side.config_sha256, &side.vocab_sha256);
    let work = workload(&side.tokenizer, challenges, opts.batch_size)?;
    let evidence1 = if opts.weight_evidence {
        let plan1 = plan_for(&side, opts, &work)?;
        progress(Progress::Stage("hashing model 1 (config, TLSH, Merkle)"));
        Some(hash(&side, &plan1, monitor)?)
    } else {
        None
    };

    // Each deployment's file built when first needed; its records are computed in rounds (the
    // first as many challenges as a verdict can need at the earliest, each next round twice the
    // last), every deployment loaded, fingerprinted on the round's challenges and released
    // before the next: one model resident at a time, each under its own memory plan, and a
    // quick verdict does not pay for the query cap.
    let scratch = tempfile::Builder::new()
        .prefix("pot-deployments-")
        .tempdir()
        .map_err(|e| {
            VerifyError::Deployment(format!(
                "cannot create a scratch directory for the deployments: {e} (set TMPDIR to a \
                 directory with room for a copy of model 1)"
            ))
        })?;
    let first_round = (opts.mode.n_min as usize)
        .max(1)
        .next_multiple_of(opts.batch_size.max(1));
    let mut references = Rounds {
        opts,
        commitment,
        challenges,
        work: &work,
        deployments,
        scratch: scratch.path(),
        vocab: side.vocab_sha256.clone(),
        paths: vec![None; deployments.len()],
        records: vec![Vec::new(); deployments.len()],
        next_round: first_round,
        monitor,
        seconds: 0.0,
    };

    let arms: Vec<Arm> = deployments
        .iter()
        .map(|d| Arm {
            name: d.name(),
            gamma: d.gamma,
        })
        .collect();
    let mut test = DeploymentTest::new(&opts.mode, opts.method, 1.0, &arms)?;
    let queries_started = Instant::now();
    match &opts.served {
        Some(served) => {
            if let Some(e1) = &evidence1 {
                report.model1_evidence(e1);
            }
            report.served(served, &served.tokenizer.vocab_sha256());
            if side.vocab_sha256 != served.tokenizer.vocab_sha256() {
                return Err(VerifyError::Served(pot_served::ServedError::Config(
                    "the tokenizer used to check the server's tokens is not model 1's".into(),
                )));
            }
            let mut candidate = served::ServedStage::new(served, challenges);
            progress(Progress::Stage("checking the server's tokens"));
            let first = references.probe(progress)?;
            if let Some(detail) = candidate.check_first(&first)? {
                report.tokenizer_mismatch(&detail);
                return Ok(());
            }
            progress(Progress::Stage("scoring model 2 on its server"));
            queries(
                opts,
                challenges,
                &mut references,
                &mut candidate,
                &mut test,
                report,
                monitor,
                progress,
            )?;
            report.served_alignment(&candidate.stats);
        }
        None => {
            progress(Progress::Stage("reading model 2"));
            let candidate = open(&opts.model2)?;
            report.model2_identity(&candidate.config_sha256, &candidate.vocab_sha256);
            // One plan for model 2: its hashing and its load.
            let plan2 = plan_for(&candidate, opts, &work)?;
            if let Some(e1) = &evidence1 {
                progress(Progress::Stage("hashing model 2 (config, TLSH, Merkle)"));
                report.weight_evidence(e1, &hash(&candidate, &plan2, monitor)?);
            }
            report.tokenizer_report(&compare_tokenizers(&side.tokenizer, &candidate.tokenizer));
            if let Err(e) = check_same_vocabulary(&side.tokenizer, &candidate.tokenizer) {
                report.tokenizer_mismatch(&e.to_string());
                return Ok(());
            }
            report.memory_plan(
                None,
                Some(&plan2),
                "deployments fingerprinted one at a time, then model 2 loaded alone",
            );
            check_monitor(monitor)?;
            progress(Progress::Stage("loading model 2"));
            let mut live = LiveModel::load(
                &candidate.model,
                &candidate.tokenizer,
                header_for(&candidate, &opts.run_id, commitment, None),
                opts.backend,
                residency(plan2.strategy),
                opts.arithmetic[1],
                monitor.cancel_flag(),
            )?;
            monitor.note("model 2 loaded");
            progress(Progress::Stage("scoring model 2"));
            queries(
                opts,
                challenges,
                &mut references,
                &mut live,
                &mut test,
                report,
                monitor,
                progress,
            )?;
        }
    }
    report.timing("queries_s", queries_started.elapsed().as_secs_f64());
    report.timing("deployments_s", references.seconds);
    drop(references);
    drop(scratch);
    report.deployments(deployments, &test);
    report.decide(test.outcome());
    Ok(())
}

/// A model's memory plan for this run's workload, under the run's limits and the memory free now.
fn plan_for(side: &Side, opts: &VerifyOptions, work: &Workload) -> Result<Plan, VerifyError> {
    Ok(plan(
        &side.model.description(),
        &opts.resources.limits,
        work,
        SystemMemory::read(),
    )?)
}

/// A model's weight evidence (config hashes, TLSH, Merkle), within its plan's budget.
fn hash(side: &Side, plan: &Plan, monitor: &Monitor) -> Result<WeightEvidence, VerifyError> {
    let evidence = SecurityAndProvenance.evidence(&side.model, plan.budget_bytes)?;
    check_monitor(monitor)?;
    Ok(evidence)
}

/// Writes (or names) a deployment's model file.
fn build(
    model1: &Path,
    deployment: &Deployment,
    scratch: &Path,
    progress: &mut impl FnMut(Progress),
) -> Result<PathBuf, VerifyError> {
    match &deployment.weights {
        DeploymentWeights::Stored => Ok(model1.to_path_buf()),
        DeploymentWeights::File(p) => Ok(p.clone()),
        DeploymentWeights::Quantized(t) => {
            let stage = format!("building deployment {t} (quantising model 1)");
            progress(Progress::Stage(&stage));
            let out = scratch.join(format!("{t}.gguf"));
            let options = QuantizeOptions {
                allow_requantize: true,
            };
            quantize_gguf(model1, *t, &out, options, |_, _| {})
                .map_err(|e| VerifyError::Deployment(format!("building deployment {t}: {e}")))?;
            Ok(out)
        }
    }
}

/// One query at a time against every deployment, a batch of challenges per request or pass.
#[allow(clippy::too_many_arguments)]
fn queries(
    opts: &VerifyOptions,
    challenges: &[Challenge],
    references: &mut Rounds,
    candidate: &mut dyn CandidateStage,
    test: &mut DeploymentTest,
    report: &mut Report,
    monitor: &Monitor,
    progress: &mut impl FnMut(Progress),
) -> Result<(), VerifyError> {
    for batch in challenges.chunks(opts.batch_size.max(1)) {
        check_monitor(monitor)?;
        let records = references.records(batch, progress)?;
        let refs: Vec<&[ChallengeRecord]> = records.iter().map(Vec::as_slice).collect();
        let scores = candidate.score_against(&refs)?;
        for c in 0..batch.len() {
            let per_deployment: Vec<f64> = scores.iter().map(|s| s[c].score).collect();
            let step = test.push(&per_deployment)?;
            let outcome = test.outcome();
            let shown = test.chosen_index().unwrap_or(0);
            let score = &scores[shown][c];
            progress(Progress::Scored {
                query: outcome.n,
                score: score.score,
                cap: opts.mode.n_max,
                mean: outcome.effect_size,
                lower: outcome.ci_lower,
                upper: outcome.ci_upper,
            });
            let family = batch[c].family.name();
            report.trace(&records[shown][c], Some(family), score, &outcome);
            report.trace_deployment_scores(&per_deployment);
            if let Step::Stop(_) = step {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The deployments' records, computed round by round as the queries reach them.
struct Rounds<'a> {
    opts: &'a VerifyOptions,
    commitment: &'a Commitment,
    challenges: &'a [Challenge],
    work: &'a Workload,
    deployments: &'a [Deployment],
    /// Where derived deployments are written, and model 1's vocabulary digest they must keep.
    scratch: &'a Path,
    vocab: String,
    /// Each deployment's file, once built.
    paths: Vec<Option<PathBuf>>,
    /// Per deployment, the records of the challenges fingerprinted so far, in order.
    records: Vec<Vec<ChallengeRecord>>,
    /// Challenges the next round adds.
    next_round: usize,
    monitor: &'a Monitor,
    /// Time spent building and fingerprinting.
    seconds: f64,
}

impl Rounds<'_> {
    /// Every deployment's records of `batch` (`[d][c]`), running rounds until they are there.
    fn records(
        &mut self,
        batch: &[Challenge],
        progress: &mut impl FnMut(Progress),
    ) -> Result<Vec<Vec<ChallengeRecord>>, VerifyError> {
        let needed = batch
            .iter()
            .filter_map(|c| self.challenges.iter().position(|x| x.index == c.index))
            .max()
            .map_or(0, |p| p + 1);
        while self.records[0].len() < needed {
            self.round(progress)?;
        }
        Ok(self
            .records
            .iter()
            .map(|records| {
                batch
                    .iter()
                    .filter_map(|c| records.iter().find(|r| r.index == c.index).cloned())
                    .collect()
            })
            .collect())
    }

    /// Deployment `d`'s file, built on first use.
    fn path(
        &mut self,
        d: usize,
        progress: &mut impl FnMut(Progress),
    ) -> Result<PathBuf, VerifyError> {
        if let Some(p) = &self.paths[d] {
            return Ok(p.clone());
        }
        let path = build(
            &self.opts.model1,
            &self.deployments[d],
            self.scratch,
            progress,
        )?;
        if open(&path)?.vocab_sha256 != self.vocab {
            return Err(VerifyError::Deployment(format!(
                "{} has another vocabulary than model 1; it cannot be a deployment of it",
                path.display()
            )));
        }
        self.paths[d] = Some(path.clone());
        Ok(path)
    }

    /// Deployment `d` fingerprinted on `challenges` (loaded, run, released).
    fn fingerprint(
        &mut self,
        d: usize,
        challenges: &[Challenge],
        progress: &mut impl FnMut(Progress),
    ) -> Result<Vec<ChallengeRecord>, VerifyError> {
        let path = self.path(d, progress)?;
        let side = open(&path)?;
        let plan_d = plan_for(&side, self.opts, self.work)?;
        check_monitor(self.monitor)?;
        let live = LiveModel::load(
            &side.model,
            &side.tokenizer,
            header_for(&side, &self.opts.run_id, self.commitment, None),
            self.opts.backend,
            residency(plan_d.strategy),
            self.deployments[d].arithmetic,
            self.monitor.cancel_flag(),
        )?;
        self.monitor.note("deployment loaded");
        let fp = live.fingerprint_all(challenges, |done, total| {
            progress(Progress::Fingerprinted { done, total })
        })?;
        drop(live);
        self.monitor.note("deployment released");
        check_monitor(self.monitor)?;
        Ok(fp.records)
    }

    /// The first deployment's record of the first challenge alone (the server's token check
    /// runs before any other deployment is built).
    fn probe(
        &mut self,
        progress: &mut impl FnMut(Progress),
    ) -> Result<ChallengeRecord, VerifyError> {
        let started = Instant::now();
        let first = &self.challenges[..1];
        let record = self.fingerprint(0, first, progress)?.remove(0);
        self.seconds += started.elapsed().as_secs_f64();
        Ok(record)
    }

    fn round(&mut self, progress: &mut impl FnMut(Progress)) -> Result<(), VerifyError> {
        let started = Instant::now();
        let from = self.records[0].len();
        let to = (from + self.next_round).min(self.challenges.len());
        self.next_round *= 2;
        let round = &self.challenges[from..to];
        for d in 0..self.deployments.len() {
            let stage = format!(
                "fingerprinting deployment {} (challenges {}..{to})",
                self.deployments[d].name(),
                from + 1
            );
            progress(Progress::Stage(&stage));
            let records = self.fingerprint(d, round, progress)?;
            self.records[d].extend(records);
        }
        self.seconds += started.elapsed().as_secs_f64();
        Ok(())
    }
}

//! The typed stages of the pipeline and their adapters over the stage crates. The stage crates
//! know nothing of each other; only these adapters join them, and data flows one way:
//! [`ChallengeStage`] -> [`ReferenceStage`] -> [`CandidateStage`] -> [`DecisionStage`], with
//! [`EvidenceStage`] beside them (read from the weights, no forward pass).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use pot_challenge_kdf::{Challenge, ChallengeSpec, Commitment, MasterKey, commit, generate};
use pot_formats::{Model, Tokenizer};
use pot_provenance::{TensorEncoding, TensorLeaf, TensorTree};
use pot_scoring::{
    Arithmetic, Backend, ChallengeRecord, ChallengeScore, Engine, Fingerprint, FingerprintError,
    FingerprintHeader, FingerprintOptions, Residency, ScoringError, fingerprint, score_candidate,
    score_candidate_against,
};
use pot_security::{ConfigHashes, FuzzyHash, ModelTlsh};
use pot_stats::{Method, Mode, Outcome, SequentialTest, StatsError, Step};

use crate::VerifyError;

/// Challenges of a run and the commitment that pins them.
pub trait ChallengeStage {
    fn commitment(&self) -> Commitment;
    fn challenges(&self) -> Vec<Challenge>;
}

/// The reference side: fingerprint records of challenges (from a live model or a saved file).
pub trait ReferenceStage {
    /// Records of these challenges, in the same order.
    fn records(&mut self, challenges: &[Challenge]) -> Result<Vec<ChallengeRecord>, ScoringError>;
}

/// The candidate side: bounded scores of a batch of reference records (a live model, or a
/// served one: `served.rs`).
pub trait CandidateStage {
    fn score(&mut self, records: &[ChallengeRecord]) -> Result<Vec<ChallengeScore>, VerifyError>;

    /// Scores of the same challenges against several deployments' records (`records[d][c]`,
    /// the result indexed the same way), querying the candidate once per challenge.
    fn score_against(
        &mut self,
        records: &[&[ChallengeRecord]],
    ) -> Result<Vec<Vec<ChallengeScore>>, VerifyError>;
}

/// The anytime-valid decision, fed one score at a time.
pub trait DecisionStage {
    fn push(&mut self, score: f64) -> Result<Step, StatsError>;
    fn outcome(&self) -> Outcome;
}

/// Weight-level evidence of one model.
pub trait EvidenceStage {
    /// Evidence of `model`'s weights, holding at most `budget_bytes` while reading them.
    fn evidence(
        &self,
        model: &Model,
        budget_bytes: u64,
    ) -> Result<WeightEvidence, pot_formats::FormatError>;
}

/// The KDF's challenges for a key, run id and query cap.
pub struct KdfChallenges<'k> {
    pub key: &'k MasterKey,
    pub spec: ChallengeSpec,
}

impl ChallengeStage for KdfChallenges<'_> {
    fn commitment(&self) -> Commitment {
        commit(self.key, &self.spec)
    }

    fn challenges(&self) -> Vec<Challenge> {
        generate(self.key, &self.spec)
    }
}

/// A model loaded on a burn device: a reference (fingerprints challenges on demand) or a
/// candidate (scores records).
pub struct LiveModel<'m> {
    engine: Engine<'m>,
    tokenizer: &'m Tokenizer,
    header: FingerprintHeader,
    options: FingerprintOptions,
}

impl<'m> LiveModel<'m> {
    pub fn load(
        model: &'m Model,
        tokenizer: &'m Tokenizer,
        header: FingerprintHeader,
        backend: Backend,
        residency: Residency,
        arithmetic: Arithmetic,
        cancel: Arc<AtomicBool>,
    ) -> Result<Self, ScoringError> {
        let mut engine = Engine::with_arithmetic(model, backend.device()?, residency, arithmetic)?;
        engine.set_cancel(cancel);
        Ok(Self {
            engine,
            tokenizer,
            header,
            options: FingerprintOptions::default(),
        })
    }

    /// Fingerprints every challenge (the sequential plan: model 1 is then released).
    pub fn fingerprint_all(
        &self,
        challenges: &[Challenge],
        progress: impl FnMut(usize, usize),
    ) -> Result<Fingerprint, ScoringError> {
        fingerprint(
            &self.engine,
            self.tokenizer,
            challenges,
            self.header.clone(),
            &self.options,
            progress,
        )
    }
}

impl ReferenceStage for LiveModel<'_> {
    fn records(&mut self, challenges: &[Challenge]) -> Result<Vec<ChallengeRecord>, ScoringError> {
        Ok(self.fingerprint_all(challenges, |_, _| {})?.records)
    }
}

impl CandidateStage for LiveModel<'_> {
    fn score(&mut self, records: &[ChallengeRecord]) -> Result<Vec<ChallengeScore>, VerifyError> {
        Ok(score_candidate(&self.engine, records)?)
    }

    fn score_against(
        &mut self,
        records: &[&[ChallengeRecord]],
    ) -> Result<Vec<Vec<ChallengeScore>>, VerifyError> {
        Ok(score_candidate_against(&self.engine, records)?)
    }
}

/// A fingerprint in memory (loaded from a file, or made by a model since released).
impl ReferenceStage for Fingerprint {
    fn records(&mut self, challenges: &[Challenge]) -> Result<Vec<ChallengeRecord>, ScoringError> {
        challenges
            .iter()
            .map(|c| {
                self.records
                    .iter()
                    .find(|r| r.index == c.index)
                    .cloned()
                    .ok_or_else(|| {
                        ScoringError::from(FingerprintError::Mismatch(format!(
                            "it has no record of challenge {} ({})",
                            c.index, c.id
                        )))
                    })
            })
            .collect()
    }
}

/// pot-stats' sequential test.
impl DecisionStage for SequentialTest {
    fn push(&mut self, score: f64) -> Result<Step, StatsError> {
        SequentialTest::push(self, score)
    }

    fn outcome(&self) -> Outcome {
        SequentialTest::outcome(self)
    }
}

pub fn sequential_test(mode: &Mode, method: Method) -> Result<SequentialTest, StatsError> {
    // Scores are total variation distances: in [0, 1].
    SequentialTest::new(mode.clone(), method, 1.0)
}

/// Weight-level evidence of one model: config hashes, TLSH, tensor Merkle root. Read from the
/// memory map (no forward pass).
#[derive(Clone)]
pub struct WeightEvidence {
    pub config: ConfigHashes,
    pub fuzzy: FuzzyHash,
    pub merkle_root: String,
    /// The stored-tensor leaves behind the root, in name order: which tensors differ.
    pub leaves: Vec<TensorLeaf>,
    /// The OpenSSF model-signing root over the model's files (`pot provenance digest`), or why
    /// there is none (e.g. a symbolic link, which model_signing refuses).
    pub signing_root: Result<String, String>,
}

impl WeightEvidence {
    /// Tensors whose stored leaf (name, dtype, shape, bytes) differs between the two models or
    /// exists on one side only, in name order.
    pub fn differing_tensors(&self, other: &WeightEvidence) -> Vec<String> {
        let theirs: std::collections::BTreeMap<&str, &TensorLeaf> =
            other.leaves.iter().map(|l| (l.name.as_str(), l)).collect();
        let ours: std::collections::BTreeSet<&str> =
            self.leaves.iter().map(|l| l.name.as_str()).collect();
        let mut out: Vec<String> = self
            .leaves
            .iter()
            .filter(|l| theirs.get(l.name.as_str()) != Some(l))
            .map(|l| l.name.clone())
            .chain(
                other
                    .leaves
                    .iter()
                    .filter(|l| !ours.contains(l.name.as_str()))
                    .map(|l| l.name.clone()),
            )
            .collect();
        out.sort();
        out
    }

    /// Byte-identical weights computing the same function: equal tensor roots and equal
    /// architecture hashes (equal roots alone would call a changed RoPE base or head split
    /// identical).
    pub fn identical_model(&self, other: &WeightEvidence) -> bool {
        self.merkle_root == other.merkle_root
            && self.config.architecture_sha256.is_some()
            && self.config.architecture_sha256 == other.config.architecture_sha256
    }
}

/// pot-security's hashes and pot-provenance's tensor tree.
pub struct SecurityAndProvenance;

/// The whole-model TLSH on its own thread (every tensor in order, reading only its samples)
/// beside `workers` threads running `hash_one` on the tensors (the Merkle leaves, in order).
fn parallel_hashes<T: Send>(
    tensors: &[&pot_formats::TensorInfo],
    total: u64,
    workers: usize,
    model: &Model,
    hash_one: impl Fn(&&pot_formats::TensorInfo) -> T + Sync,
) -> (Option<String>, Vec<T>) {
    use rayon::prelude::*;
    std::thread::scope(|scope| {
        let whole = scope.spawn(|| {
            let mut whole = ModelTlsh::new(total);
            for t in tensors {
                whole.add(model.raw_bytes(&t.name).expect("listed tensor"));
                model.release_pages(&t.name);
            }
            whole.finish()
        });
        let per_tensor = match rayon::ThreadPoolBuilder::new().num_threads(workers).build() {
            Ok(pool) => pool.install(|| tensors.par_iter().map(&hash_one).collect()),
            // No threads to be had: the same work on this one.
            Err(_) => tensors.iter().map(&hash_one).collect(),
        };
        (
            whole.join().expect("the TLSH thread does not panic"),
            per_tensor,
        )
    })
}

impl EvidenceStage for SecurityAndProvenance {
    /// One pass over the stored bytes feeds the whole-model TLSH and the Merkle leaves, so a
    /// model larger than memory is read from disk once, not twice. The TLSH needs the bytes in
    /// order and reads only its samples (at most 1 GiB; ~75 MB/s, most of the hashing time):
    /// it runs on its own thread, beside as many workers hashing Merkle leaves as the budget
    /// holds tensors next to the one it reads; each side releases a tensor's mapped pages when
    /// done with it. Where the budget holds fewer than two of the largest tensors, one thread
    /// does both, one tensor at a time, as the plan's estimate counts.
    fn evidence(
        &self,
        model: &Model,
        budget_bytes: u64,
    ) -> Result<WeightEvidence, pot_formats::FormatError> {
        let started = std::time::Instant::now();
        let tensors: Vec<&pot_formats::TensorInfo> = model.tensors().collect();
        let total = tensors.iter().map(|t| t.bytes).sum();
        let largest = tensors.iter().map(|t| t.bytes).max().unwrap_or(0).max(1);
        let room = budget_bytes.saturating_sub(pot_memory_governor::Estimate::BASELINE_BYTES);
        let workers = usize::try_from(room / largest)
            .unwrap_or(usize::MAX)
            .saturating_sub(1)
            .min(rayon::current_num_threads());
        let leaf = |t: &&pot_formats::TensorInfo, whole: Option<&mut ModelTlsh>| {
            let bytes = model.raw_bytes(&t.name).expect("listed tensor");
            let leaf = TensorLeaf::stored(t, bytes);
            if let Some(whole) = whole {
                whole.add(bytes);
            }
            model.release_pages(&t.name);
            leaf
        };
        // model_signing's digest is a second read of the files (config and tokenizer included,
        // measured cost: docs/PROVENANCE.md) through small buffers: on its own thread meanwhile.
        let ((whole, leaves), signing_root) = std::thread::scope(|scope| {
            let signing = scope.spawn(|| {
                pot_provenance::model_signing::manifest(model.path())
                    .map(|m| m.root_sha256)
                    .map_err(|e| e.to_string())
            });
            let hashes = if workers == 0 {
                let mut whole = ModelTlsh::new(total);
                let leaves: Vec<_> = tensors.iter().map(|t| leaf(t, Some(&mut whole))).collect();
                (whole.finish(), leaves)
            } else {
                parallel_hashes(&tensors, total, workers, model, |t| leaf(t, None))
            };
            let signing = signing
                .join()
                .unwrap_or_else(|_| Err("the model-signing digest failed".into()));
            (hashes, signing)
        });
        let fuzzy = FuzzyHash {
            model: whole,
            bytes_hashed: total,
            seconds: started.elapsed().as_secs_f64(),
        };
        let tree = TensorTree {
            encoding: TensorEncoding::Stored,
            leaves,
        };
        Ok(WeightEvidence {
            config: ConfigHashes::of_model(model),
            fuzzy,
            merkle_root: tree.root(),
            leaves: tree.leaves,
            signing_root,
        })
    }
}

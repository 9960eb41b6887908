//! Secret challenge prompts for model verification.
//!
//! A verifier holds a 32-byte [`MasterKey`]. For a run id and an index `i` the per-challenge seed
//! is `HMAC-SHA256(key, "pot/challenge/v1" || u32be(len(run_id)) || run_id || u64be(i))`; from
//! the seed a deterministic generator writes a grammatical prompt in one of five [`Family`]s.
//! Before scoring the verifier publishes a [`Commitment`] (SHA-256 over the seed list); after
//! scoring it reveals the key, and anyone can recompute both. The algorithm is specified byte for
//! byte in docs/CHALLENGES.md.

mod draws;
mod families;
mod key;
pub mod prf;

use sha2::{Digest, Sha256};

pub use draws::Draws;
pub use families::{Family, GENERATOR_VERSION};
pub use key::{KEY_ENV, KeyError, KeyId, MasterKey};

/// One challenge: where it sits in the set, its public id, its family and its prompt text.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Challenge {
    pub index: u64,
    /// First 16 hex digits of `SHA-256(seed)`: names the challenge without revealing the seed.
    pub id: String,
    pub family: Family,
    pub prompt: String,
}

/// What determines a challenge set besides the key.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChallengeSpec {
    pub run_id: String,
    pub count: u64,
    /// Families drawn from, in canonical order; empty means all.
    pub families: Vec<Family>,
}

impl ChallengeSpec {
    pub fn new(run_id: impl Into<String>, count: u64) -> Self {
        Self {
            run_id: run_id.into(),
            count,
            families: Vec::new(),
        }
    }

    pub fn with_families(mut self, mut families: Vec<Family>) -> Self {
        families.sort_by_key(|f| Family::ALL.iter().position(|g| g == f));
        families.dedup();
        self.families = families;
        self
    }

    fn effective_families(&self) -> &[Family] {
        if self.families.is_empty() {
            &Family::ALL
        } else {
            &self.families
        }
    }
}

/// The seed of challenge `index` of `run_id`.
pub fn challenge_seed(key: &MasterKey, run_id: &str, index: u64) -> [u8; 32] {
    let run = run_id.as_bytes();
    prf::hmac_sha256(
        key.secret(),
        &[
            b"pot/challenge/v1",
            &(run.len() as u32).to_be_bytes(),
            run,
            &index.to_be_bytes(),
        ],
    )
}

/// The challenge a seed stands for. The first draw picks the family among `families`; the family's
/// generator makes every later draw.
pub fn challenge_from_seed(seed: &[u8; 32], index: u64, families: &[Family]) -> Challenge {
    let families = if families.is_empty() {
        &Family::ALL[..]
    } else {
        families
    };
    let mut draws = Draws::new(seed);
    let family = draws.pick(families);
    let prompt = family.generate(&mut draws);
    Challenge {
        index,
        id: hex::encode(&Sha256::digest(seed)[..8]),
        family,
        prompt,
    }
}

/// All challenges of a set, in index order.
pub fn generate(key: &MasterKey, spec: &ChallengeSpec) -> Vec<Challenge> {
    (0..spec.count)
        .map(|i| {
            let seed = challenge_seed(key, &spec.run_id, i);
            challenge_from_seed(&seed, i, spec.effective_families())
        })
        .collect()
}

/// A commitment to a challenge set, publishable before scoring.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Commitment {
    /// Hex SHA-256; see [`commit`] for the exact input.
    pub digest: String,
    pub key_id: KeyId,
    pub spec: ChallengeSpec,
    pub generator: String,
}

/// `SHA-256("pot/commitment/v1" || generator || 0x00 || key_id || 0x00 || u32be(len(run_id)) ||
/// run_id || u64be(count) || family names joined by "," || 0x00 || seed_0 || ... || seed_{n-1})`.
pub fn commit(key: &MasterKey, spec: &ChallengeSpec) -> Commitment {
    let key_id = key.id();
    let families: Vec<&str> = spec.effective_families().iter().map(|f| f.name()).collect();
    let mut hasher = Sha256::new();
    hasher.update(b"pot/commitment/v1");
    hasher.update(GENERATOR_VERSION.as_bytes());
    hasher.update([0]);
    hasher.update(key_id.0.as_bytes());
    hasher.update([0]);
    hasher.update((spec.run_id.len() as u32).to_be_bytes());
    hasher.update(spec.run_id.as_bytes());
    hasher.update(spec.count.to_be_bytes());
    hasher.update(families.join(",").as_bytes());
    hasher.update([0]);
    for i in 0..spec.count {
        hasher.update(challenge_seed(key, &spec.run_id, i));
    }
    Commitment {
        digest: hex::encode(hasher.finalize()),
        key_id,
        spec: spec.clone(),
        generator: GENERATOR_VERSION.to_string(),
    }
}

/// Whether a revealed key reproduces a published commitment digest for `spec`.
pub fn check_commitment(key: &MasterKey, spec: &ChallengeSpec, digest: &str) -> bool {
    commit(key, spec).digest.eq_ignore_ascii_case(digest.trim())
}

//! Fingerprinting a model on challenges and scoring a candidate against a fingerprint.

use pot_challenge_kdf::Challenge;
use pot_formats::{ModelConfig, Tokenizer};
use sha2::{Digest, Sha256};

use crate::engine::Engine;
use crate::error::ScoringError;
use pot_fingerprint::{
    ChallengeRecord, ChallengeScore, Fingerprint, FingerprintHeader, score_challenge,
    summarise_position,
};

/// SHA-256 of the configuration in pot's canonical JSON (fixed field order, compact).
pub fn config_sha256(config: &ModelConfig) -> String {
    hex::encode(Sha256::digest(
        serde_json::to_vec(config).expect("config serialises"),
    ))
}

/// Both models must map tokens to ids identically, or scores would compare unrelated tokens.
pub fn check_same_vocabulary(a: &Tokenizer, b: &Tokenizer) -> Result<(), ScoringError> {
    let (va, vb) = (a.vocab(), b.vocab());
    if va == vb {
        return Ok(());
    }
    let mut by_id_a: Vec<(u32, &String)> = va.iter().map(|(t, i)| (*i, t)).collect();
    let mut by_id_b: Vec<(u32, &String)> = vb.iter().map(|(t, i)| (*i, t)).collect();
    by_id_a.sort();
    by_id_b.sort();
    let first: Vec<String> = by_id_a
        .iter()
        .zip(&by_id_b)
        .filter(|(x, y)| x != y)
        .take(3)
        .map(|(x, y)| format!("id {}: {:?} vs {:?}", x.0, x.1, y.1))
        .collect();
    Err(ScoringError::VocabularyMismatch(format!(
        "{} tokens vs {} tokens; first differences: {}",
        va.len(),
        vb.len(),
        if first.is_empty() {
            "(one vocabulary extends the other)".to_string()
        } else {
            first.join("; ")
        }
    )))
}

/// A challenge's token ids as every stage tokenizes it (BOS policy included); a failure is an
/// error naming the challenge, never an empty sequence.
pub fn encode_challenge(
    tokenizer: &Tokenizer,
    challenge: &Challenge,
) -> Result<Vec<u32>, ScoringError> {
    tokenizer
        .encode_prompt(&challenge.prompt)
        .map_err(|reason| ScoringError::Tokenize {
            challenge: challenge.id.clone(),
            reason,
        })
}

/// Settings of a fingerprint run.
#[derive(Clone, Debug)]
pub struct FingerprintOptions {
    pub top_k: usize,
    pub prefix: usize,
    pub batch_size: usize,
}

impl Default for FingerprintOptions {
    fn default() -> Self {
        Self {
            top_k: pot_fingerprint::DEFAULT_TOP_K,
            prefix: pot_fingerprint::DEFAULT_PREFIX,
            batch_size: 8,
        }
    }
}

/// Runs the model on every challenge and keeps its fingerprint. `progress(done, total)` after
/// each batch.
pub fn fingerprint(
    engine: &Engine,
    tokenizer: &Tokenizer,
    challenges: &[Challenge],
    mut header: FingerprintHeader,
    options: &FingerprintOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<Fingerprint, ScoringError> {
    header.top_k = options.top_k;
    header.prefix = options.prefix;
    let mut records = Vec::with_capacity(challenges.len());
    for batch in challenges.chunks(options.batch_size.max(1)) {
        let ids: Vec<Vec<u32>> = batch
            .iter()
            .map(|c| encode_challenge(tokenizer, c))
            .collect::<Result<_, _>>()?;
        for (c, ids) in batch.iter().zip(&ids) {
            if ids.len() < options.prefix + 2 {
                return Err(ScoringError::Tokenize {
                    challenge: c.id.clone(),
                    reason: format!(
                        "only {} tokens; need at least {}",
                        ids.len(),
                        options.prefix + 2
                    ),
                });
            }
        }
        let out = engine.forward(&ids)?;
        for ((c, ids), lp) in batch.iter().zip(ids).zip(out) {
            let first = options.prefix;
            let positions = (first..ids.len() - 1)
                .map(|i| summarise_position(lp.row(i), options.top_k, ids[i + 1]))
                .collect();
            records.push(ChallengeRecord {
                index: c.index,
                challenge_id: c.id.clone(),
                token_ids: ids,
                first_scored: first,
                positions,
            });
        }
        progress(records.len(), challenges.len());
    }
    Ok(Fingerprint { header, records })
}

/// Scores a candidate against several references' records of the same challenges (one
/// deployment each: `references[d][c]`), with one forward pass for the batch; the result is
/// indexed the same way. Every reference must hold the same token ids per challenge.
pub fn score_candidate_against(
    engine: &Engine,
    references: &[&[ChallengeRecord]],
) -> Result<Vec<Vec<ChallengeScore>>, ScoringError> {
    let Some(first) = references.first() else {
        return Ok(Vec::new());
    };
    for other in &references[1..] {
        let same = other.len() == first.len()
            && other
                .iter()
                .zip(first.iter())
                .all(|(a, b)| a.token_ids == b.token_ids && a.first_scored == b.first_scored);
        if !same {
            return Err(ScoringError::Backend(
                "the deployments' records are not of the same token ids".into(),
            ));
        }
    }
    let ids: Vec<Vec<u32>> = first.iter().map(|r| r.token_ids.clone()).collect();
    let out = engine.forward(&ids)?;
    let rows: Vec<Vec<&[f32]>> = out
        .iter()
        .map(|lp| (0..lp.len).map(|i| lp.row(i)).collect())
        .collect();
    Ok(references
        .iter()
        .map(|records| {
            records
                .iter()
                .zip(&rows)
                .map(|(r, rows)| score_challenge(r, rows))
                .collect()
        })
        .collect())
}

/// Scores a candidate on some of a fingerprint's challenges (one forward pass for the batch).
pub fn score_candidate(
    engine: &Engine,
    records: &[ChallengeRecord],
) -> Result<Vec<ChallengeScore>, ScoringError> {
    let ids: Vec<Vec<u32>> = records.iter().map(|r| r.token_ids.clone()).collect();
    let out = engine.forward(&ids)?;
    Ok(records
        .iter()
        .zip(out)
        .map(|(r, lp)| {
            let rows: Vec<&[f32]> = (0..lp.len).map(|i| lp.row(i)).collect();
            score_challenge(r, &rows)
        })
        .collect())
}

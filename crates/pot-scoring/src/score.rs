//! The per-challenge score: mean total variation distance between the reference model's and the
//! candidate's next-token distributions over the scored positions (docs/SCORING.md).

use crate::fingerprint::{ChallengeRecord, PositionRecord};

/// Positions before this index are not scored: with almost no context the next-token
/// distribution says little about the model (and the BOS position is identical by construction).
pub const DEFAULT_PREFIX: usize = 4;

/// Default number of top tokens a fingerprint keeps per position. Measured on a near pair (SmolLM2
/// against its int8 weights, mean TVD 0.018): the fingerprint score is within 6.2e-4 of the
/// full-distribution score per challenge at k = 512 (3.0e-3 at 32, 1.0e-3 at 256). Far pairs
/// differ more, but their scores sit far above the clip 2γ = 0.1 the test uses, where the gap
/// cannot change a clipped score (docs/SCORING.md). About 4 KB per scored position.
pub const DEFAULT_TOP_K: usize = 512;

/// Score and diagnostics of one challenge.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChallengeScore {
    pub index: u64,
    pub challenge_id: String,
    /// Mean over scored positions of the total variation distance, in [0, 1].
    pub score: f64,
    /// Mean over scored positions of (candidate's - reference's) negative log-likelihood of the
    /// text's next token, in nats: positive when the candidate finds the text less likely.
    pub cross_entropy_diff: f64,
    /// Fraction of scored positions where both models' most likely next token agrees.
    pub top1_agreement: f64,
    pub positions: usize,
}

/// Total variation distance between the reference's distribution coarse-grained to its top-k
/// tokens plus one "rest" cell, and the candidate's full log-probabilities coarse-grained the same
/// way. By the data-processing inequality this never exceeds the full TVD; with k = vocabulary
/// size it equals it.
pub fn coarse_tvd(reference: &PositionRecord, candidate: &[f32]) -> f64 {
    let mut diff = 0.0f64;
    let mut mass_q = 0.0f64;
    for &(id, logp) in &reference.top {
        let p = f64::from(logp).exp();
        let q = f64::from(candidate[id as usize]).exp();
        diff += (p - q).abs();
        mass_q += q;
    }
    let rest_p = f64::from(reference.log_rest).exp();
    let rest_q = (1.0 - mass_q).max(0.0);
    (0.5 * (diff + (rest_p - rest_q).abs())).clamp(0.0, 1.0)
}

/// Full total variation distance between two log-probability rows (for measuring `coarse_tvd`).
pub fn full_tvd(a: &[f32], b: &[f32]) -> f64 {
    0.5 * a
        .iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x).exp() - f64::from(*y).exp()).abs())
        .sum::<f64>()
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

/// Scores a candidate's per-position log-probs (rows for every position of the reference's
/// token ids) against the reference record.
pub fn score_challenge(reference: &ChallengeRecord, candidate_rows: &[&[f32]]) -> ChallengeScore {
    let n = reference.positions.len();
    let (mut tvd, mut ce, mut agree) = (0.0, 0.0, 0usize);
    for (k, pos) in reference.positions.iter().enumerate() {
        let row = candidate_rows[reference.first_scored + k];
        tvd += coarse_tvd(pos, row);
        let target = reference.token_ids[reference.first_scored + k + 1] as usize;
        ce += -f64::from(row[target]) + f64::from(pos.target_logprob);
        agree += usize::from(
            pos.top
                .first()
                .is_some_and(|&(id, _)| id as usize == argmax(row)),
        );
    }
    let denom = n.max(1) as f64;
    ChallengeScore {
        index: reference.index,
        challenge_id: reference.challenge_id.clone(),
        score: tvd / denom,
        cross_entropy_diff: ce / denom,
        top1_agreement: agree as f64 / denom,
        positions: n,
    }
}

/// The top-k of a log-probability row and the log of the remaining mass.
pub fn summarise_position(row: &[f32], top_k: usize, target: u32) -> PositionRecord {
    let k = top_k.min(row.len());
    let mut ids: Vec<u32> = (0..row.len() as u32).collect();
    if k < ids.len() {
        ids.select_nth_unstable_by(k, |a, b| row[*b as usize].total_cmp(&row[*a as usize]));
        ids.truncate(k);
    }
    ids.sort_by(|a, b| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b)));
    let top: Vec<(u32, f32)> = ids.iter().map(|&i| (i, row[i as usize])).collect();
    let kept: f64 = top.iter().map(|&(_, lp)| f64::from(lp).exp()).sum();
    let rest = (1.0 - kept).max(0.0);
    PositionRecord {
        top,
        log_rest: if rest > 0.0 {
            rest.ln() as f32
        } else {
            f32::NEG_INFINITY
        },
        target_logprob: row[target as usize],
    }
}

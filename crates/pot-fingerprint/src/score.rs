//! The per-challenge score: mean total variation distance between the reference model's and the
//! candidate's next-token distributions over the scored positions (docs/SCORING.md).

use crate::FingerprintError;
use crate::fingerprint::{ChallengeRecord, PositionRecord};

/// Positions before this index are not scored: with almost no context the next-token
/// distribution says little about the model (and the BOS position is identical by construction).
pub const DEFAULT_PREFIX: usize = 4;

/// Default number of top tokens a fingerprint keeps per position. Measured on a near pair (SmolLM2
/// against its int8 weights, mean TVD 0.018): the fingerprint score is within 6.2e-4 of the
/// full-distribution score per challenge at k = 512 (3.0e-3 at 32, 1.0e-3 at 256); two
/// fingerprints scored against each other, within 2.3e-4. Far pairs
/// differ more, but their scores sit far above the clip 2γ the test uses (0.032 by default),
/// where the gap cannot change a clipped score (docs/SCORING.md). About 4 KB per scored position.
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
/// size it equals it. The gap to the full TVD is at most the reference's remaining mass.
pub fn coarse_tvd(reference: &PositionRecord, candidate: &[f32]) -> f64 {
    coarse_tvd_with(reference, |id| f64::from(candidate[id as usize]).exp())
}

/// [`coarse_tvd`] when the candidate is a fingerprint record too: a token of the reference's
/// top-k outside the candidate's top-k counts as probability 0 there, its mass stays in the
/// candidate's rest cell. That moves at most the candidate's remaining mass, so the result is
/// within `exp(candidate.log_rest)` of [`coarse_tvd`] on the candidate's full distribution.
pub fn coarse_tvd_records(reference: &PositionRecord, candidate: &PositionRecord) -> f64 {
    let known: std::collections::HashMap<u32, f32> = candidate.top.iter().copied().collect();
    coarse_tvd_with(reference, |id| {
        known.get(&id).map_or(0.0, |&lp| f64::from(lp).exp())
    })
}

/// The coarse TVD on the reference's partition (top-k + rest), given the candidate's probability
/// of each reference top-k token.
fn coarse_tvd_with(reference: &PositionRecord, candidate_p: impl Fn(u32) -> f64) -> f64 {
    let mut diff = 0.0f64;
    let mut mass_q = 0.0f64;
    for &(id, logp) in &reference.top {
        let p = f64::from(logp).exp();
        let q = candidate_p(id);
        diff += (p - q).abs();
        mass_q += q;
    }
    let rest_p = f64::from(reference.log_rest).exp();
    let rest_q = (1.0 - mass_q).max(0.0);
    (0.5 * (diff + (rest_p - rest_q).abs())).clamp(0.0, 1.0)
}

/// The coarse TVD when the candidate's distribution is known only in part, as a serving engine
/// reports it: `known` lists (token id, log-prob) pairs of the candidate (its top-k, the text's
/// next token where given; each id at most once). The partition is S = the tokens whose
/// probability both sides know (the candidate's known ids that are in the reference's top-k)
/// plus one cell for everything else:
///
/// `½ (Σ_{t∈S} |p_t − q_t| + |(1 − Σ_S p) − (1 − Σ_S q)|)`.
///
/// Merging the tokens outside S into one cell is a function of the token, so by the
/// data-processing inequality this never exceeds the full TVD (docs/SCORING.md has the proof and
/// the measured gap at k = 5, 10, 20). Returns the score and |S|.
pub fn coarse_tvd_known(reference: &PositionRecord, known: &[(u32, f32)]) -> (f64, usize) {
    let reference_p: std::collections::HashMap<u32, f32> = reference.top.iter().copied().collect();
    let (mut diff, mut mass_p, mut mass_q, mut shared) = (0.0f64, 0.0f64, 0.0f64, 0usize);
    for &(id, logq) in known {
        let Some(&logp) = reference_p.get(&id) else {
            continue;
        };
        let (p, q) = (f64::from(logp).exp(), f64::from(logq).exp());
        diff += (p - q).abs();
        mass_p += p;
        mass_q += q;
        shared += 1;
    }
    // Rounding can push a sum of probabilities a hair above 1.
    let rest = ((1.0 - mass_p).max(0.0) - (1.0 - mass_q).max(0.0)).abs();
    ((0.5 * (diff + rest)).clamp(0.0, 1.0), shared)
}

/// Scores a challenge whose candidate side is known only in part (a served model): per scored
/// position, the candidate's known (id, log-prob) pairs and its log-prob of the text's next
/// token where the engine reports it. The score is the mean [`coarse_tvd_known`]; the
/// cross-entropy difference is the mean over the positions where the next token's log-prob is
/// known (0 when none is); top-1 agreement compares the reference's most likely token with the
/// candidate's most likely known token.
pub fn score_known(
    reference: &ChallengeRecord,
    known: &[Vec<(u32, f32)>],
    next_token_logprob: &[Option<f32>],
) -> Result<ChallengeScore, FingerprintError> {
    if known.len() != reference.positions.len() || next_token_logprob.len() != known.len() {
        return Err(FingerprintError::Mismatch(format!(
            "challenge {}: {} served positions for {} scored positions",
            reference.challenge_id,
            known.len(),
            reference.positions.len()
        )));
    }
    let (mut ce, mut ce_n) = (0.0f64, 0usize);
    for (pos, q) in reference.positions.iter().zip(next_token_logprob) {
        if let Some(q) = q {
            ce += -f64::from(*q) + f64::from(pos.target_logprob);
            ce_n += 1;
        }
    }
    let per_position = reference
        .positions
        .iter()
        .zip(known)
        .map(|(pos, row)| PositionScore {
            tvd: coarse_tvd_known(pos, row).0,
            cross_entropy_diff: 0.0,
            top1_agrees: matches!(
                (pos.top.first(), row.iter().max_by(|a, b| a.1.total_cmp(&b.1))),
                (Some(a), Some(b)) if a.0 == b.0
            ),
        });
    let mut score = mean_over_positions(reference, per_position);
    score.cross_entropy_diff = if ce_n == 0 { 0.0 } else { ce / ce_n as f64 };
    Ok(score)
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
    let per_position = reference.positions.iter().enumerate().map(|(k, pos)| {
        let row = candidate_rows[reference.first_scored + k];
        let target = reference.token_ids[reference.first_scored + k + 1] as usize;
        PositionScore {
            tvd: coarse_tvd(pos, row),
            cross_entropy_diff: -f64::from(row[target]) + f64::from(pos.target_logprob),
            top1_agrees: pos
                .top
                .first()
                .is_some_and(|&(id, _)| id as usize == argmax(row)),
        }
    });
    mean_over_positions(reference, per_position)
}

/// One scored position's contribution to a [`ChallengeScore`].
struct PositionScore {
    tvd: f64,
    cross_entropy_diff: f64,
    top1_agrees: bool,
}

/// The challenge's score and diagnostics: means over its scored positions.
fn mean_over_positions(
    reference: &ChallengeRecord,
    positions: impl Iterator<Item = PositionScore>,
) -> ChallengeScore {
    let (mut tvd, mut ce, mut agree, mut n) = (0.0, 0.0, 0usize, 0usize);
    for p in positions {
        tvd += p.tvd;
        ce += p.cross_entropy_diff;
        agree += usize::from(p.top1_agrees);
        n += 1;
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

/// Scores two fingerprints of the same challenge against each other, so that neither model has
/// to be loaded: same score and diagnostics as [`score_challenge`], with [`coarse_tvd_records`]
/// per position. The records must cover the same token ids and positions.
pub fn score_records(
    reference: &ChallengeRecord,
    candidate: &ChallengeRecord,
) -> Result<ChallengeScore, FingerprintError> {
    if reference.token_ids != candidate.token_ids
        || reference.first_scored != candidate.first_scored
        || reference.positions.len() != candidate.positions.len()
    {
        return Err(FingerprintError::Mismatch(format!(
            "challenge {} was not scored on the same tokens and positions in both fingerprints",
            reference.challenge_id
        )));
    }
    let per_position = reference
        .positions
        .iter()
        .zip(&candidate.positions)
        .map(|(p, q)| PositionScore {
            tvd: coarse_tvd_records(p, q),
            cross_entropy_diff: -f64::from(q.target_logprob) + f64::from(p.target_logprob),
            top1_agrees: matches!((p.top.first(), q.top.first()), (Some(a), Some(b)) if a.0 == b.0),
        });
    Ok(mean_over_positions(reference, per_position))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(token_ids: Vec<u32>, rows: &[Vec<f32>]) -> ChallengeRecord {
        ChallengeRecord {
            index: 0,
            challenge_id: "c".into(),
            first_scored: 0,
            positions: rows
                .iter()
                .zip(&token_ids[1..])
                .map(|(row, &next)| summarise_position(row, 2, next))
                .collect(),
            token_ids,
        }
    }

    /// A deterministic log-probability row over `n` tokens (xorshift logits, a few peaked).
    fn row(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let logits: Vec<f64> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 1000) as f64 / 150.0
            })
            .collect();
        let norm = logits.iter().map(|l| l.exp()).sum::<f64>().ln();
        logits.iter().map(|l| (l - norm) as f32).collect()
    }

    #[test]
    fn the_partial_information_score_never_exceeds_the_full_tvd() {
        let n = 300;
        for seed in 1..200u64 {
            let (p, q) = (row(n, seed), row(n, seed + 1000));
            let reference = summarise_position(&p, 64, 0);
            let full = full_tvd(&p, &q);
            for k in [1, 5, 10, 20, 300] {
                let mut ids: Vec<u32> = (0..n as u32).collect();
                ids.sort_by(|a, b| q[*b as usize].total_cmp(&q[*a as usize]));
                let known: Vec<(u32, f32)> = ids[..k].iter().map(|&i| (i, q[i as usize])).collect();
                let (coarse, shared) = coarse_tvd_known(&reference, &known);
                assert!(
                    coarse <= full + 1e-9,
                    "seed {seed} k {k}: {coarse} > {full}"
                );
                assert!(shared <= k);
            }
        }
        // Everything known on both sides: the full TVD itself.
        let (p, q) = (row(50, 3), row(50, 4));
        let all: Vec<(u32, f32)> = q.iter().enumerate().map(|(i, &l)| (i as u32, l)).collect();
        let (coarse, shared) = coarse_tvd_known(&summarise_position(&p, 50, 0), &all);
        assert_eq!(shared, 50);
        assert!((coarse - full_tvd(&p, &q)).abs() < 1e-6);
    }

    #[test]
    fn two_fingerprints_score_like_a_live_candidate_and_refuse_other_tokens() {
        let ln = |p: &[f32]| p.iter().map(|v| v.ln()).collect::<Vec<f32>>();
        let p = vec![ln(&[0.6, 0.3, 0.1]), ln(&[0.2, 0.7, 0.1])];
        let q = vec![ln(&[0.5, 0.3, 0.2]), ln(&[0.2, 0.7, 0.1])];
        let (a, b) = (record(vec![0, 1, 2], &p), record(vec![0, 1, 2], &q));
        assert!(score_records(&a, &a).unwrap().score < 1e-6);
        let pair = score_records(&a, &b).unwrap();
        let rows: Vec<&[f32]> = q.iter().map(Vec::as_slice).collect();
        let live = score_challenge(&a, &rows);
        // Both top-2 sets hold the same tokens here, so the two agree exactly: (0.1 + 0.1) / 2 / 2.
        assert!((pair.score - live.score).abs() < 1e-6 && (pair.score - 0.05).abs() < 1e-6);
        assert_eq!(pair.top1_agreement, 1.0);
        let other = record(vec![0, 2, 1], &q);
        assert!(matches!(
            score_records(&a, &other),
            Err(FingerprintError::Mismatch(_))
        ));
    }
}

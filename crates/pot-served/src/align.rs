//! Same tokens or no score. A server tokenizes the challenge text itself; before any position is
//! scored, its tokens must be pot's tokens of the reference, one for one:
//!
//! - where the API gives ids (SGLang, vLLM with `token_id:N`, a tokenize endpoint), they are
//!   compared exactly;
//! - otherwise each token's text is compared with [`TokenTexts::text`] of pot's id, the token's
//!   bytes as UTF-8 with invalid bytes dropped (how engines print a single token).
//!
//! Alternatives listed by text are mapped to ids through the texts that exactly one token of the
//! vocabulary has. A text several tokens share (byte pieces of one character often print as "")
//! names no single token, so that alternative is left out: its probability stays in the
//! remainder cell of the score on both sides, which keeps the score a lower bound of the full
//! TVD (docs/SCORING.md). The count left out is reported.

use std::collections::HashMap;

use pot_formats::Tokenizer;

use crate::ServedError;
use crate::api::{ServedSequence, ServedToken};

/// Each token's printed text, and the texts that name exactly one token.
pub struct TokenTexts {
    by_id: Vec<Option<String>>,
    unique: HashMap<String, u32>,
}

impl TokenTexts {
    pub fn new(tokenizer: &Tokenizer) -> Self {
        let n = tokenizer.vocab_size();
        let by_id: Vec<Option<String>> = (0..n as u32).map(|id| tokenizer.token_text(id)).collect();
        let mut count: HashMap<&str, (u32, usize)> = HashMap::new();
        for (id, text) in by_id.iter().enumerate() {
            if let Some(t) = text {
                count.entry(t).or_insert((id as u32, 0)).1 += 1;
            }
        }
        let unique = count
            .into_iter()
            .filter(|(_, (_, c))| *c == 1)
            .map(|(t, (id, _))| (t.to_string(), id))
            .collect();
        Self { by_id, unique }
    }

    pub fn vocab_size(&self) -> usize {
        self.by_id.len()
    }

    pub fn text(&self, id: u32) -> Option<&str> {
        self.by_id.get(id as usize)?.as_deref()
    }

    /// The one token printed as `text`, if exactly one is.
    pub fn id(&self, text: &str) -> Option<u32> {
        self.unique.get(text).copied()
    }
}

/// The served side of one challenge, on the reference record's scored positions.
#[derive(Clone, Debug, PartialEq)]
pub struct AlignedChallenge {
    /// Per scored position: the candidate's known (token id, log-prob) pairs, each id once.
    pub known: Vec<Vec<(u32, f32)>>,
    /// Per scored position: the candidate's log-prob of the text's next token, where reported.
    pub next: Vec<Option<f32>>,
    /// Alternatives listed by the server.
    pub listed: usize,
    /// Of those, left out because their text names no single token.
    pub unmapped: usize,
}

/// Checks the server's tokens against `token_ids` (pot's tokens of the challenge) and maps the
/// rows of positions `first_scored .. first_scored + count` to token ids. `server_ids` are the
/// ids of the engine's tokenize endpoint, where it has one.
pub fn align(
    challenge: &str,
    token_ids: &[u32],
    first_scored: usize,
    count: usize,
    served: &ServedSequence,
    server_ids: Option<&[u32]>,
    texts: &TokenTexts,
) -> Result<AlignedChallenge, ServedError> {
    let show = |id: u32| format!("{id} {:?}", texts.text(id).unwrap_or("?"));
    // Ids from a tokenize endpoint are compared first; the texts must agree too.
    let same_id = |a: &u32, b: &u32| a == b;
    let same_token = |theirs: &ServedToken, ours: &u32| match theirs {
        ServedToken::Id(id) => id == ours,
        ServedToken::Text(t) => texts.text(*ours) == Some(t.as_str()),
    };
    if let Some(ids) = server_ids
        && ids != token_ids
    {
        let at = ids.iter().zip(token_ids).position(|(a, b)| a != b);
        return Err(tokens_differ(
            challenge,
            ids,
            token_ids,
            same_id,
            match at {
                Some(i) => format!(
                    "token {i} is {} on the server and {} in pot",
                    ids[i],
                    show(token_ids[i])
                ),
                None => format!(
                    "{} tokens on the server, {} in pot",
                    ids.len(),
                    token_ids.len()
                ),
            },
        ));
    }
    let at = served
        .tokens
        .iter()
        .zip(token_ids)
        .position(|(theirs, ours)| !same_token(theirs, ours));
    if at.is_some() || served.tokens.len() != token_ids.len() {
        return Err(tokens_differ(
            challenge,
            &served.tokens,
            token_ids,
            same_token,
            match at {
                Some(i) => format!(
                    "token {i} is {:?} on the server and {} in pot",
                    served.tokens[i],
                    show(token_ids[i])
                ),
                None => format!(
                    "{} tokens on the server, {} in pot",
                    served.tokens.len(),
                    token_ids.len()
                ),
            },
        ));
    }
    let vocab = texts.vocab_size();
    let mut out = AlignedChallenge {
        known: Vec::with_capacity(count),
        next: Vec::with_capacity(count),
        listed: 0,
        unmapped: 0,
    };
    for k in 0..count {
        let j = first_scored + k;
        let row =
            served
                .rows
                .get(j)
                .and_then(Option::as_ref)
                .ok_or_else(|| ServedError::Shape {
                    url: String::new(),
                    field: "log-probs".into(),
                    detail: format!("challenge {challenge}: no log-probs for prompt position {j}"),
                })?;
        let mut known: Vec<(u32, f32)> = Vec::with_capacity(row.top.len() + 1);
        for (token, lp) in &row.top {
            out.listed += 1;
            let id = match token {
                ServedToken::Id(id) => Some(*id).filter(|&id| (id as usize) < vocab),
                ServedToken::Text(t) => texts.id(t),
            };
            match id {
                Some(id) if !known.iter().any(|(k, _)| *k == id) => known.push((id, *lp)),
                Some(_) => {}
                None => out.unmapped += 1,
            }
        }
        let next_id = token_ids[j + 1];
        if let Some(lp) = row.next
            && !known.iter().any(|(k, _)| *k == next_id)
        {
            known.push((next_id, lp));
        }
        out.known.push(known);
        out.next.push(row.next);
    }
    Ok(out)
}

/// How well a server's rows fit the reference, read where they are expected and one position
/// either side: the fraction of scored positions whose most likely known token is the
/// reference's most likely token. Rows read at the wrong offset (an engine whose echo layout
/// differs from the `--served-api` chosen) agree far less where expected than one position off.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AlignmentFit {
    pub expected: f64,
    pub one_earlier: f64,
    pub one_later: f64,
}

impl AlignmentFit {
    /// Rows one position off fit clearly better than where they are expected: scoring them
    /// would compare the wrong positions.
    pub fn misaligned(&self) -> bool {
        let off = self.one_earlier.max(self.one_later);
        off >= 0.5 && off >= self.expected + 0.3
    }
}

/// The error for a server whose tokens are not pot's, saying whether they are pot's with one
/// extra or one missing leading token (a BOS policy: a serving setting, not another tokenizer).
fn tokens_differ<T>(
    challenge: &str,
    theirs: &[T],
    ours: &[u32],
    same: impl Fn(&T, &u32) -> bool,
    detail: String,
) -> ServedError {
    let equal = |a: &[T], b: &[u32]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y));
    let leading_token_only = (theirs.len() == ours.len() + 1 && equal(&theirs[1..], ours))
        || (ours.len() == theirs.len() + 1 && equal(theirs, &ours[1..]));
    ServedError::Tokens {
        challenge: challenge.to_string(),
        detail: if leading_token_only {
            format!("{detail} (only a leading BOS token differs: the server's BOS setting)")
        } else {
            detail
        },
        leading_token_only,
    }
}

/// [`AlignmentFit`] of `served` against the reference's most likely token per scored position
/// (`reference_top1[k]` for position `first_scored + k`).
pub fn alignment_fit(
    reference_top1: &[u32],
    first_scored: usize,
    served: &ServedSequence,
    texts: &TokenTexts,
) -> AlignmentFit {
    let agreement = |offset: isize| -> f64 {
        let mut hits = 0usize;
        for (k, &want) in reference_top1.iter().enumerate() {
            let j = (first_scored + k) as isize + offset;
            let Some(Some(row)) = usize::try_from(j).ok().and_then(|j| served.rows.get(j)) else {
                continue;
            };
            let best =
                row.top
                    .iter()
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .and_then(|(t, _)| match t {
                        ServedToken::Id(id) => Some(*id),
                        ServedToken::Text(t) => texts.id(t),
                    });
            hits += usize::from(best == Some(want));
        }
        hits as f64 / reference_top1.len().max(1) as f64
    };
    AlignmentFit {
        expected: agreement(0),
        one_earlier: agreement(-1),
        one_later: agreement(1),
    }
}

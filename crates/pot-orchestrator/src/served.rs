//! The candidate behind a serving engine (`--model2 http://...`): the reference side runs as
//! usual (a live model 1 or a saved fingerprint), the candidate's log-probs come from the
//! engine, a batch of challenges at a time with up to `concurrency` requests in flight.

use std::sync::Mutex;

use pot_challenge_kdf::Challenge;
use pot_formats::Tokenizer;
use pot_scoring::{ChallengeRecord, ChallengeScore, score::score_known};
use pot_served::{Api, ServedError, ServedModel, ServedSequence, TokenTexts, align, alignment_fit};

use crate::VerifyError;
use crate::stages::CandidateStage;

/// What `verify` needs to score a served candidate.
pub struct ServedCandidate {
    pub model: ServedModel,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// The reference's tokenizer (model 1's, or the one given with a fingerprint): the server's
    /// tokens are checked against it.
    pub tokenizer: Tokenizer,
    /// Why the run's tolerance is what it is, for the report.
    pub tolerance_reason: String,
}

/// Counters of a served run, for the report.
#[derive(Clone, Copy, Debug, Default)]
pub struct AlignmentStats {
    pub listed: usize,
    pub unmapped: usize,
    pub requests: usize,
}

pub(crate) struct ServedStage<'a> {
    served: &'a ServedCandidate,
    challenges: &'a [Challenge],
    texts: TokenTexts,
    pub stats: AlignmentStats,
    /// The answer fetched by [`ServedStage::check_first`], used again by the first batch
    /// instead of asking the server twice (a request can take tens of seconds).
    checked: Mutex<Option<(u64, Fetched)>>,
}

/// A server's answer for one challenge and its token ids where a tokenize call gave them.
type Fetched = (ServedSequence, Option<Vec<u32>>);

impl<'a> ServedStage<'a> {
    pub fn new(served: &'a ServedCandidate, challenges: &'a [Challenge]) -> Self {
        Self {
            texts: TokenTexts::new(&served.tokenizer),
            served,
            challenges,
            stats: AlignmentStats::default(),
            checked: Mutex::new(None),
        }
    }

    /// The engine's answer for one record's challenge, and its own token ids where its API
    /// needs a tokenize call for them.
    fn fetch(&self, record: &ChallengeRecord) -> Result<Fetched, VerifyError> {
        {
            let mut checked = self.checked.lock().expect("not poisoned");
            if checked
                .as_ref()
                .is_some_and(|(index, _)| *index == record.index)
            {
                return Ok(checked.take().expect("present").1);
            }
        }
        let challenge = self
            .challenges
            .iter()
            .find(|c| c.index == record.index)
            .ok_or_else(|| {
                VerifyError::Served(ServedError::Config(format!(
                    "no challenge with index {}",
                    record.index
                )))
            })?;
        let model = &self.served.model;
        let served = model.score_text(&challenge.prompt)?;
        // vLLM's `token_id:N` and SGLang's ids are exact already; a tokenize endpoint gives
        // llama-cpp-python's.
        let server_ids = match model.api {
            Api::LlamaCppPython => model.tokenize(&challenge.prompt)?,
            _ => None,
        };
        Ok((served, server_ids))
    }

    fn align(
        &self,
        record: &ChallengeRecord,
        served: &ServedSequence,
        server_ids: Option<&[u32]>,
    ) -> Result<pot_served::AlignedChallenge, ServedError> {
        align(
            &record.challenge_id,
            &record.token_ids,
            record.first_scored,
            record.positions.len(),
            served,
            server_ids,
            &self.texts,
        )
    }

    /// One challenge: the engine's log-probs, the token check, the score against each
    /// deployment's record of it (one request, whatever their number).
    fn score_one(
        &self,
        records: &[&ChallengeRecord],
    ) -> Result<(Vec<ChallengeScore>, usize, usize), VerifyError> {
        let (served, server_ids) = self.fetch(records[0])?;
        let aligned = self.align(records[0], &served, server_ids.as_deref())?;
        let scores = records
            .iter()
            .map(|record| score_known(record, &aligned.known, &aligned.next))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((scores, aligned.listed, aligned.unmapped))
    }

    /// Checks the first challenge before the run. `Ok(Some(detail))` when the server's tokenizer
    /// differs from the reference's beyond a leading BOS token (the models cannot be the same);
    /// an error when only the BOS policy differs (a serving setting to fix), or when the rows
    /// fit the reference clearly better one position off (the wrong `--served-api`: scoring them
    /// would compare the wrong positions).
    pub fn check_first(&self, first: &ChallengeRecord) -> Result<Option<String>, VerifyError> {
        let (served, server_ids) = self.fetch(first)?;
        match self.align(first, &served, server_ids.as_deref()) {
            Ok(_) => {}
            Err(ServedError::Tokens {
                detail,
                leading_token_only: false,
                ..
            }) => {
                return Ok(Some(format!(
                    "the server tokenizes the first challenge differently: {detail}"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        let top1: Vec<u32> = first
            .positions
            .iter()
            .map(|p| p.top.first().map_or(u32::MAX, |t| t.0))
            .collect();
        let fit = alignment_fit(&top1, first.first_scored, &served, &self.texts);
        if fit.misaligned() {
            return Err(VerifyError::Served(ServedError::Misaligned {
                api: self.served.model.api.name().into(),
                detail: format!(
                    "top-1 agreement {:.2} where expected, {:.2} one earlier, {:.2} one later",
                    fit.expected, fit.one_earlier, fit.one_later
                ),
            }));
        }
        *self.checked.lock().expect("not poisoned") = Some((first.index, (served, server_ids)));
        Ok(None)
    }
}

impl CandidateStage for ServedStage<'_> {
    fn score(&mut self, records: &[ChallengeRecord]) -> Result<Vec<ChallengeScore>, VerifyError> {
        let mut scores = self.score_against(&[records])?;
        Ok(scores.remove(0))
    }

    fn score_against(
        &mut self,
        records: &[&[ChallengeRecord]],
    ) -> Result<Vec<Vec<ChallengeScore>>, VerifyError> {
        let deployments = records.len();
        let challenges = records.first().map_or(0, |r| r.len());
        let width = self.served.concurrency.max(1);
        let mut scores: Vec<Vec<ChallengeScore>> =
            vec![Vec::with_capacity(challenges); deployments];
        let indices: Vec<usize> = (0..challenges).collect();
        for group in indices.chunks(width) {
            let this = &*self;
            let results: Vec<_> = std::thread::scope(|s| {
                let handles: Vec<_> = group
                    .iter()
                    .map(|&c| {
                        let of_c: Vec<&ChallengeRecord> = records.iter().map(|r| &r[c]).collect();
                        s.spawn(move || this.score_one(&of_c))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("a scoring thread does not panic"))
                    .collect()
            });
            for result in results {
                let (per_deployment, listed, unmapped) = result?;
                self.stats.listed += listed;
                self.stats.unmapped += unmapped;
                self.stats.requests += 1;
                for (d, score) in per_deployment.into_iter().enumerate() {
                    scores[d].push(score);
                }
            }
        }
        Ok(scores)
    }
}

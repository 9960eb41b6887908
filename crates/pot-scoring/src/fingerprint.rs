//! Fingerprints: one model's outputs on a challenge set (token ids and, per scored position, the
//! top-k log-probs plus the remaining mass), saved as a compact versioned file. A candidate model
//! is later scored against a fingerprint, so two models never need to be in memory together.
//!
//! File layout (`.potfp`, little endian): `b"POTFP"`, format version `u8`, header length `u32`,
//! header JSON ([`FingerprintHeader`]), then per challenge: token count `u32`, token ids `u32`...,
//! first scored position `u32`, position count `u32`, per position: target log-prob `f32`,
//! log of the remaining mass `f32`, `top_k` pairs (id `u32`, log-prob `f32`); and last the
//! SHA-256 of everything before it. Files are written to a temporary name and renamed.

use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::ScoringError;

const MAGIC: &[u8; 5] = b"POTFP";
const FORMAT_VERSION: u8 = 1;

/// Who made a fingerprint and on what.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FingerprintHeader {
    /// Model path as given, for humans.
    pub model: String,
    /// SHA-256 of the model's canonical config (architecture, dimensions, vocabulary size...).
    pub config_sha256: String,
    /// SHA-256 over the tokenizer's full token -> id map.
    pub vocab_sha256: String,
    /// Merkle root of the model's tensors, when computed.
    pub merkle_root: Option<String>,
    pub run_id: String,
    pub key_id: String,
    pub commitment: String,
    pub top_k: usize,
    pub prefix: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PositionRecord {
    /// The k most likely next tokens with their log-probs, most likely first.
    pub top: Vec<(u32, f32)>,
    /// ln(1 - sum of the top-k probabilities); -inf when they hold all the mass.
    pub log_rest: f32,
    /// Log-prob of the text's actual next token.
    pub target_logprob: f32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ChallengeRecord {
    pub index: u64,
    pub challenge_id: String,
    pub token_ids: Vec<u32>,
    /// Position of `positions[0]` in `token_ids`.
    pub first_scored: usize,
    pub positions: Vec<PositionRecord>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Fingerprint {
    pub header: FingerprintHeader,
    pub records: Vec<ChallengeRecord>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredHeader {
    #[serde(flatten)]
    header: FingerprintHeader,
    challenges: Vec<(u64, String)>,
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_f32(out: &mut Vec<u8>, v: f32) {
    out.extend_from_slice(&v.to_le_bytes());
}

impl Fingerprint {
    pub fn to_bytes(&self) -> Vec<u8> {
        let stored = StoredHeader {
            header: self.header.clone(),
            challenges: self
                .records
                .iter()
                .map(|r| (r.index, r.challenge_id.clone()))
                .collect(),
        };
        let header = serde_json::to_vec(&stored).expect("header serialises");
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_VERSION);
        put_u32(&mut out, header.len() as u32);
        out.extend_from_slice(&header);
        for r in &self.records {
            put_u32(&mut out, r.token_ids.len() as u32);
            for &id in &r.token_ids {
                put_u32(&mut out, id);
            }
            put_u32(&mut out, r.first_scored as u32);
            put_u32(&mut out, r.positions.len() as u32);
            for p in &r.positions {
                put_f32(&mut out, p.target_logprob);
                put_f32(&mut out, p.log_rest);
                for k in 0..self.header.top_k {
                    // A row shorter than k (tiny vocabulary) pads with impossible entries.
                    let (id, lp) = p
                        .top
                        .get(k)
                        .copied()
                        .unwrap_or((u32::MAX, f32::NEG_INFINITY));
                    put_u32(&mut out, id);
                    put_f32(&mut out, lp);
                }
            }
        }
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        out
    }

    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self, ScoringError> {
        let bad = |reason: &str| ScoringError::Fingerprint {
            path: origin.to_string(),
            reason: reason.to_string(),
        };
        if bytes.len() < MAGIC.len() + 1 + 4 + 32 || &bytes[..5] != MAGIC {
            return Err(bad(
                "not a pot fingerprint (bad magic); make one with `pot fingerprint`",
            ));
        }
        if bytes[5] != FORMAT_VERSION {
            return Err(bad(&format!(
                "format version {} (this pot reads version {FORMAT_VERSION})",
                bytes[5]
            )));
        }
        let (body, digest) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body).as_slice() != digest {
            return Err(bad("checksum mismatch: the file is corrupted or truncated"));
        }
        let mut pos = 6;
        let mut take = |n: usize| -> Result<&[u8], ScoringError> {
            let slice = body
                .get(pos..pos + n)
                .ok_or_else(|| bad("truncated record"))?;
            pos += n;
            Ok(slice)
        };
        let u32_at = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes"));
        let header_len = u32_at(take(4)?) as usize;
        let stored: StoredHeader = serde_json::from_slice(take(header_len)?)
            .map_err(|e| bad(&format!("bad header ({e})")))?;
        let k = stored.header.top_k;
        let mut records = Vec::with_capacity(stored.challenges.len());
        for (index, challenge_id) in &stored.challenges {
            let n = u32_at(take(4)?) as usize;
            let ids = take(4 * n)?;
            let token_ids: Vec<u32> = ids.chunks_exact(4).map(u32_at).collect();
            let first_scored = u32_at(take(4)?) as usize;
            let count = u32_at(take(4)?) as usize;
            let mut positions = Vec::with_capacity(count);
            for _ in 0..count {
                let target_logprob = f32::from_bits(u32_at(take(4)?));
                let log_rest = f32::from_bits(u32_at(take(4)?));
                let pairs = take(8 * k)?;
                let top = pairs
                    .chunks_exact(8)
                    .map(|c| (u32_at(&c[..4]), f32::from_bits(u32_at(&c[4..]))))
                    .filter(|&(id, _)| id != u32::MAX)
                    .collect();
                positions.push(PositionRecord {
                    top,
                    log_rest,
                    target_logprob,
                });
            }
            if first_scored + count >= token_ids.len() {
                return Err(bad("positions exceed the token ids"));
            }
            records.push(ChallengeRecord {
                index: *index,
                challenge_id: challenge_id.clone(),
                token_ids,
                first_scored,
                positions,
            });
        }
        Ok(Self {
            header: stored.header,
            records,
        })
    }

    /// Writes the fingerprint atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<(), ScoringError> {
        let fail = |e: std::io::Error| ScoringError::Fingerprint {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let mut file = std::fs::File::create(&tmp).map_err(fail)?;
        file.write_all(&self.to_bytes()).map_err(fail)?;
        file.sync_all().map_err(fail)?;
        std::fs::rename(&tmp, path).map_err(fail)
    }

    pub fn load(path: &Path) -> Result<Self, ScoringError> {
        let bytes = std::fs::read(path).map_err(|e| ScoringError::Fingerprint {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }
}

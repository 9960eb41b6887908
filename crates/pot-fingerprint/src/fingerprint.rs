//! Fingerprints: one model's outputs on a challenge set (token ids and, per scored position, the
//! top-k log-probs plus the remaining mass), saved as a compact versioned file. A candidate model
//! is later scored against a fingerprint, so two models never need to be in memory together.
//!
//! File layout (`.potfp`, little endian): `b"POTFP"`, format version `u8`, header length `u32`,
//! header JSON ([`FingerprintHeader`]), then per challenge: token count `u32`, token ids `u32`...,
//! first scored position `u32`, position count `u32`, per position: target log-prob `f32`,
//! log of the remaining mass `f32`, `top_k` pairs (id `u32`, log-prob `f32`); and last an
//! HMAC-SHA256 of everything before it under a subkey of the master key
//! ([`MasterKey::fingerprint_mac`]): a file edited after signing, or made under another key, is
//! refused. Files are written to a temporary name, synced and renamed.
//!
//! Everything read is untrusted: counts are checked against the bytes left before anything is
//! reserved, and [`Fingerprint::validate`] checks every record against the vocabulary.

use std::path::Path;

use pot_challenge_kdf::MasterKey;

use crate::FingerprintError;

const MAGIC: &[u8; 5] = b"POTFP";
const FORMAT_VERSION: u8 = 2;
const TAG_BYTES: usize = 32;
/// Largest `top_k` a fingerprint may carry (pot writes 512).
pub const MAX_TOP_K: usize = 1 << 16;

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
    /// The file's bytes, authenticated under `key`.
    pub fn to_bytes(&self, key: &MasterKey) -> Vec<u8> {
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
        let tag = key.fingerprint_mac(&out);
        out.extend_from_slice(&tag);
        out
    }

    /// Reads a fingerprint authenticated under `key`. The header is parsed first only to say
    /// why a tag does not verify (another key id, or an edit after signing).
    pub fn from_bytes(
        bytes: &[u8],
        origin: &str,
        key: &MasterKey,
    ) -> Result<Self, FingerprintError> {
        let bad = |reason: &str| FingerprintError::File {
            path: origin.to_string(),
            reason: reason.to_string(),
        };
        if bytes.len() < MAGIC.len() + 1 + 4 + TAG_BYTES || &bytes[..5] != MAGIC {
            return Err(bad(
                "not a pot fingerprint (bad magic); make one with `pot fingerprint`",
            ));
        }
        if bytes[5] != FORMAT_VERSION {
            return Err(bad(&format!(
                "format version {} (this pot reads version {FORMAT_VERSION}, which is \
                 authenticated with the master key); make the fingerprint again",
                bytes[5]
            )));
        }
        let (body, tag) = bytes.split_at(bytes.len() - TAG_BYTES);
        let mut reader = Reader {
            body,
            pos: 6,
            origin,
        };
        let header_len = reader.u32()? as usize;
        let stored: StoredHeader = serde_json::from_slice(reader.take(header_len)?)
            .map_err(|e| bad(&format!("bad header ({e})")))?;
        if !key.verify_fingerprint_mac(body, tag) {
            let ours = key.id().0;
            return Err(bad(&if stored.header.key_id != ours {
                format!(
                    "it was made under key id {} and this run uses key id {ours}; pass the \
                     --key-file it was made with",
                    stored.header.key_id
                )
            } else {
                "its authentication tag does not match: the file was edited after it was \
                 signed (or is damaged); make it again with `pot fingerprint`"
                    .to_string()
            }));
        }
        let k = stored.header.top_k;
        if k == 0 || k > MAX_TOP_K {
            return Err(bad(&format!("top_k {k} is outside 1..={MAX_TOP_K}")));
        }
        let mut records = Vec::with_capacity(stored.challenges.len().min(4096));
        for (index, challenge_id) in &stored.challenges {
            let n = reader.count(4)?;
            let token_ids: Vec<u32> = reader.take(4 * n)?.chunks_exact(4).map(u32_le).collect();
            let first_scored = reader.u32()? as usize;
            let count = reader.count(8 + 8 * k)?;
            let mut positions = Vec::with_capacity(count);
            for _ in 0..count {
                let target_logprob = f32::from_bits(reader.u32()?);
                let log_rest = f32::from_bits(reader.u32()?);
                let pairs = reader.take(8 * k)?;
                let top = pairs
                    .chunks_exact(8)
                    .map(|c| (u32_le(&c[..4]), f32::from_bits(u32_le(&c[4..]))))
                    .filter(|&(id, _)| id != u32::MAX)
                    .collect();
                positions.push(PositionRecord {
                    top,
                    log_rest,
                    target_logprob,
                });
            }
            if count == 0 {
                return Err(bad(&format!(
                    "challenge {challenge_id} has no scored position (a record must score at least one)"
                )));
            }
            if first_scored.saturating_add(count) >= token_ids.len() {
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
        if reader.pos != body.len() {
            return Err(bad("bytes after the last record"));
        }
        Ok(Self {
            header: stored.header,
            records,
        })
    }

    /// Every record checked against a vocabulary of `vocab` tokens: ids in range, finite
    /// log-probs, top-k sorted and consistent with the stored remaining mass. (Authenticity is
    /// the MAC's job; this catches a fingerprint of another vocabulary or a buggy writer.)
    pub fn validate(&self, vocab: usize, origin: &str) -> Result<(), FingerprintError> {
        let bad = |challenge: &str, reason: String| FingerprintError::File {
            path: origin.to_string(),
            reason: format!("challenge {challenge}: {reason}"),
        };
        if self.header.top_k > vocab {
            return Err(bad(
                "header",
                format!(
                    "top_k {} exceeds the vocabulary ({vocab})",
                    self.header.top_k
                ),
            ));
        }
        for r in &self.records {
            let id = r.challenge_id.as_str();
            if let Some(t) = r.token_ids.iter().find(|&&t| t as usize >= vocab) {
                return Err(bad(
                    id,
                    format!("token id {t} is outside the vocabulary ({vocab})"),
                ));
            }
            for (i, p) in r.positions.iter().enumerate() {
                let finite = |x: f32| x.is_finite() && x <= 1e-4;
                if !finite(p.target_logprob) || p.top.iter().any(|&(_, lp)| !finite(lp)) {
                    return Err(bad(
                        id,
                        format!("position {i} holds a log-prob that is not finite and <= 0"),
                    ));
                }
                if let Some(&(t, _)) = p.top.iter().find(|&&(t, _)| t as usize >= vocab) {
                    return Err(bad(
                        id,
                        format!("position {i} lists token {t} outside the vocabulary"),
                    ));
                }
                if p.top.is_empty() || p.top.windows(2).any(|w| w[0].1 < w[1].1) {
                    return Err(bad(
                        id,
                        format!("position {i}: the top-k is empty or not sorted"),
                    ));
                }
                let kept: f64 = p.top.iter().map(|&(_, lp)| f64::from(lp).exp()).sum();
                let rest = f64::from(p.log_rest).exp();
                if p.log_rest.is_nan() || p.log_rest > 1e-4 || (kept + rest - 1.0).abs() > 1e-3 {
                    return Err(bad(
                        id,
                        format!(
                            "position {i}: top-k mass {kept:.6} and remaining mass {rest:.6} do not add up to 1"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Writes the fingerprint, authenticated under `key`, atomically.
    pub fn save(&self, path: &Path, key: &MasterKey) -> Result<(), FingerprintError> {
        pot_formats::write_atomically(path, &self.to_bytes(key)).map_err(|e| {
            FingerprintError::File {
                path: path.display().to_string(),
                reason: e.to_string(),
            }
        })
    }

    pub fn load(path: &Path, key: &MasterKey) -> Result<Self, FingerprintError> {
        let bytes = std::fs::read(path).map_err(|e| FingerprintError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_bytes(&bytes, &path.display().to_string(), key)
    }
}

fn u32_le(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().expect("4 bytes"))
}

/// A bounds-checked cursor over an (authenticated or not yet authenticated) body.
struct Reader<'a> {
    body: &'a [u8],
    pos: usize,
    origin: &'a str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FingerprintError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.body.len());
        let Some(end) = end else {
            return Err(FingerprintError::File {
                path: self.origin.to_string(),
                reason: "truncated record".into(),
            });
        };
        let out = &self.body[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, FingerprintError> {
        Ok(u32_le(self.take(4)?))
    }

    /// A `u32` count of items of at least `item_bytes` each, checked against the bytes left.
    fn count(&mut self, item_bytes: usize) -> Result<usize, FingerprintError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(item_bytes) > self.body.len() - self.pos {
            return Err(FingerprintError::File {
                path: self.origin.to_string(),
                reason: format!("a count of {n} cannot fit in the bytes left"),
            });
        }
        Ok(n)
    }
}

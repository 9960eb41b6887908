//! TLSH fuzzy hashes of the weights (tlsh2, 128 buckets, 1-byte checksum), per tensor and for the
//! whole model, over the stored bytes straight from the memory map.
//!
//! No builder is ever fed more than [`MAX_FED_BYTES`] (1 GiB): a longer input is sampled as
//! evenly spaced 1 MiB chunks whose total stays under the cap (deterministic, so equal inputs
//! still hash equally). tlsh2 documents a 4.22 GB limit, but measured here it overflows earlier:
//! `q1 * 100` in `TlshBuilder::build` is a u32, and bucket counts grow by about one per 43 input
//! bytes, so past ~1.8 GB it panics with overflow checks on (our dev profile) or silently wraps in
//! release. Feeding 7.1 GB sampled to 4 GiB panicked; 1 GiB keeps a ~1.7x margin.
//!
//! Distance to similarity: `similarity = 1 - min(d, 300) / 300` (TLSH distances of unrelated
//! data are typically 200-300+); `match` when `d <= 30` (similarity >= 0.9). Advisory evidence:
//! quantisation or fine-tuning moves weights without changing their byte statistics much, so a
//! TLSH match never overrides the statistical verdict.

use std::time::Instant;

use pot_formats::Model;
use tlsh2::{TlshDefault, TlshDefaultBuilder};

/// Largest number of bytes fed to one TLSH builder (below tlsh2's 4 GiB length limit).
pub const MAX_FED_BYTES: u64 = 1024 * 1024 * 1024;
const CHUNK: u64 = 1 << 20;
/// Distance at or below which two hashes count as a match.
pub const MATCH_MAX_DISTANCE: i32 = 30;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FuzzyHash {
    /// Whole-model TLSH (hex string), `None` when the input lacks the variety TLSH needs.
    pub model: Option<String>,
    pub bytes_hashed: u64,
    pub seconds: f64,
}

/// Feeds `data` to `builder` through `feed`, sampling chunks when `total` exceeds the cap.
struct Sampler {
    /// Take one 1 MiB chunk of every `stride` (1 = everything).
    stride: u64,
    chunk_index: u64,
    fed: u64,
}

impl Sampler {
    fn for_total(total: u64) -> Self {
        let stride = total.div_ceil(MAX_FED_BYTES).max(1);
        Self {
            stride,
            chunk_index: 0,
            fed: 0,
        }
    }

    fn feed(&mut self, builder: &mut TlshDefaultBuilder, data: &[u8]) {
        for chunk in data.chunks(CHUNK as usize) {
            if self.chunk_index.is_multiple_of(self.stride)
                && self.fed + chunk.len() as u64 <= MAX_FED_BYTES
            {
                builder.update(chunk);
                self.fed += chunk.len() as u64;
            }
            self.chunk_index += 1;
        }
    }
}

fn hash_hex(builder: &TlshDefaultBuilder) -> Option<String> {
    builder
        .build()
        .map(|h| String::from_utf8_lossy(&h.hash()).into_owned())
}

/// The whole-model TLSH, fed every tensor in the model's sorted order (sampled as a whole past
/// [`MAX_FED_BYTES`]).
pub struct ModelTlsh {
    builder: TlshDefaultBuilder,
    sampler: Sampler,
}

impl ModelTlsh {
    /// For a model whose tensors hold `total` stored bytes in all.
    pub fn new(total: u64) -> Self {
        Self {
            builder: TlshDefaultBuilder::new(),
            sampler: Sampler::for_total(total),
        }
    }

    /// The next tensor's bytes.
    pub fn add(&mut self, bytes: &[u8]) {
        self.sampler.feed(&mut self.builder, bytes);
    }

    pub fn finish(self) -> Option<String> {
        hash_hex(&self.builder)
    }
}

impl FuzzyHash {
    /// The TLSH of a model's weights (`pot inspect --fuzzy`; `pot verify` feeds the same
    /// [`ModelTlsh`] beside its Merkle pass).
    pub fn of_model(model: &Model) -> Self {
        let started = Instant::now();
        let total = model.tensors().map(|t| t.bytes).sum();
        let mut whole = ModelTlsh::new(total);
        for t in model.tensors() {
            whole.add(model.raw_bytes(&t.name).expect("listed tensor"));
            model.release_pages(&t.name);
        }
        Self {
            model: whole.finish(),
            bytes_hashed: total,
            seconds: started.elapsed().as_secs_f64(),
        }
    }

    pub fn compare(&self, other: &FuzzyHash) -> FuzzyComparison {
        let distance = match (&self.model, &other.model) {
            (Some(a), Some(b)) => match (a.parse::<TlshDefault>(), b.parse::<TlshDefault>()) {
                (Ok(a), Ok(b)) => Some(a.diff(&b, true)),
                _ => None,
            },
            _ => None,
        };
        FuzzyComparison {
            distance,
            similarity: distance.map(|d| 1.0 - f64::from(d.min(300)) / 300.0),
            is_match: distance.map(|d| d <= MATCH_MAX_DISTANCE),
        }
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FuzzyComparison {
    pub distance: Option<i32>,
    pub similarity: Option<f64>,
    #[serde(rename = "match")]
    pub is_match: Option<bool>,
}

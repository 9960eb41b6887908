//! Where the forward pass gets its f32 weights from: the model's memory map (dequantised on
//! read) or an in-memory weight-only int8 copy (dequantised per layer on the fly). Host-side
//! only; the burn side is in `engine`.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;

use pot_formats::Model;
use rayon::prelude::*;

use crate::emulate::BlockMatrix;
use crate::error::ScoringError;

/// How weights are kept between forward passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Residency {
    /// Every weight loaded once as f32 tensors.
    Resident,
    /// Layer-major: `layers_at_once` blocks loaded from the memory map, run on the whole batch,
    /// freed; the output head read in row chunks. Each weight byte is read once per batch.
    Streamed { layers_at_once: usize },
    /// Weight-only int8 (per-output-channel scales) kept in memory and dequantised one layer
    /// (and one head chunk) at a time: about a quarter of the f32 memory.
    Int8,
}

/// Values per int8 scale: groups of 32 along a row, as in ggml's Q8_0. One scale per whole row
/// (per channel) was measured too coarse: mean TVD 0.034 against f32 on SmolLM2; groups of 32
/// give 0.018 (docs/SCORING.md), inside the `quantized` tolerance. Keeping the embedding and
/// the (tied) head in f32 was tried and changed nothing measurable (0.0163 vs 0.0151 against an
/// f32 fingerprint, 10 queries each), so every matrix is int8.
pub const INT8_GROUP: usize = 32;

/// A row-major `[rows, cols]` matrix as symmetric int8 with one f32 scale per group of
/// [`INT8_GROUP`] consecutive values of a row (the last group of a row may be shorter).
pub struct Int8Matrix {
    pub rows: usize,
    pub cols: usize,
    values: Vec<i8>,
    scales: Vec<f32>,
}

impl Int8Matrix {
    fn groups_per_row(cols: usize) -> usize {
        cols.div_ceil(INT8_GROUP)
    }

    pub fn quantize(values: &[f32], rows: usize, cols: usize) -> Self {
        let g = Self::groups_per_row(cols);
        let mut q = vec![0i8; rows * cols];
        let mut scales = vec![0f32; rows * g];
        q.par_chunks_mut(cols)
            .zip(scales.par_chunks_mut(g))
            .zip(values.par_chunks(cols))
            .for_each(|((q, scales), row)| {
                for ((q, scale), group) in q
                    .chunks_mut(INT8_GROUP)
                    .zip(scales.iter_mut())
                    .zip(row.chunks(INT8_GROUP))
                {
                    let max = group.iter().fold(0f32, |m, v| m.max(v.abs()));
                    *scale = if max > 0.0 { max / 127.0 } else { 1.0 };
                    for (q, v) in q.iter_mut().zip(group) {
                        *q = (v / *scale).round().clamp(-127.0, 127.0) as i8;
                    }
                }
            });
        Self {
            rows,
            cols,
            values: q,
            scales,
        }
    }

    pub fn rows_f32(&self, rows: Range<usize>) -> Vec<f32> {
        let mut out = vec![0f32; rows.len() * self.cols];
        self.rows_f32_into(rows, &mut out);
        out
    }

    /// [`Int8Matrix::rows_f32`] into `out` (`rows.len() * cols` values).
    fn rows_f32_into(&self, rows: Range<usize>, out: &mut [f32]) {
        let (cols, g) = (self.cols, Self::groups_per_row(self.cols));
        assert_eq!(
            out.len(),
            rows.len() * cols,
            "{} rows of {cols}",
            rows.len()
        );
        out.par_chunks_mut(cols).zip(rows).for_each(|(out, r)| {
            let q = &self.values[r * cols..(r + 1) * cols];
            let scales = &self.scales[r * g..(r + 1) * g];
            for ((out, q), &scale) in out
                .chunks_mut(INT8_GROUP)
                .zip(q.chunks(INT8_GROUP))
                .zip(scales)
            {
                for (o, &q) in out.iter_mut().zip(q) {
                    *o = f32::from(q) * scale;
                }
            }
        });
    }

    pub fn bytes(&self) -> usize {
        self.values.len() + 4 * self.scales.len()
    }
}

/// Every 2-D weight of a model as int8; vectors (norms, biases) and mixture routers stay f32.
pub struct Int8Store {
    matrices: HashMap<String, Int8Matrix>,
    vectors: HashMap<String, Vec<f32>>,
    /// Matrices kept exact: a router's top-k choice is discrete, so rounding its weights can
    /// send a token to another expert (a jump, not noise); routers are tiny (experts × hidden).
    exact: HashMap<String, (Vec<f32>, usize, usize)>,
}

/// Whether a 2-D weight stays f32 under int8 residency (see [`Int8Store::exact`]).
fn keep_exact(name: &str) -> bool {
    name.ends_with(".block_sparse_moe.gate.weight")
}

impl Int8Store {
    /// Quantises a model tensor by tensor, releasing each tensor's mapped pages after use.
    pub fn quantize(model: &Model) -> Result<Self, ScoringError> {
        let (mut matrices, mut vectors, mut exact) =
            (HashMap::new(), HashMap::new(), HashMap::new());
        for t in model.tensors() {
            let values = model.load_f32(&t.name)?;
            if t.shape.len() == 2 && keep_exact(&t.name) {
                exact.insert(t.name.clone(), (values, t.shape[0], t.shape[1]));
            } else if t.shape.len() == 2 {
                let m = Int8Matrix::quantize(&values, t.shape[0], t.shape[1]);
                matrices.insert(t.name.clone(), m);
            } else {
                vectors.insert(t.name.clone(), values);
            }
            model.release_pages(&t.name);
        }
        Ok(Self {
            matrices,
            vectors,
            exact,
        })
    }

    pub fn bytes(&self) -> usize {
        self.matrices.values().map(Int8Matrix::bytes).sum::<usize>()
            + 4 * self.vectors.values().map(Vec::len).sum::<usize>()
            + 4 * self.exact.values().map(|m| m.0.len()).sum::<usize>()
    }
}

/// Spare f32 buffers a streamed pass recycles: each layer's weights are read, packed and
/// dropped once per pass, and fresh buffers of that size cost page faults and zeroing (16 % of
/// a streamed Qwen 1.5B pass in `perf`). Lives for one pass.
#[derive(Default)]
pub struct BufferPool(Mutex<Vec<Vec<f32>>>);

impl BufferPool {
    /// A buffer of `len` values with unspecified contents (callers overwrite every one): the
    /// smallest spare buffer that holds them, else a new one.
    pub fn take(&self, len: usize) -> Vec<f32> {
        let spare = self.0.lock().ok().and_then(|mut spare| {
            let best = (0..spare.len())
                .filter(|&i| spare[i].capacity() >= len)
                .min_by_key(|&i| spare[i].capacity())?;
            Some(spare.swap_remove(best))
        });
        let mut buffer = spare.unwrap_or_default();
        buffer.truncate(len);
        buffer.resize(len, 0.0);
        buffer
    }

    /// [`BufferPool::take`] from `pool`, or a new buffer without one.
    pub fn take_from(pool: Option<&BufferPool>, len: usize) -> Vec<f32> {
        pool.map_or_else(|| vec![0.0; len], |pool| pool.take(len))
    }

    /// Returns a buffer for a later `take`.
    pub fn give(&self, buffer: Vec<f32>) {
        if let Ok(mut spare) = self.0.lock() {
            spare.push(buffer);
        }
    }
}

/// A source of f32 weights by internal tensor name.
pub enum Source<'m> {
    Model(&'m Model),
    Int8(Int8Store),
}

impl Source<'_> {
    /// A 2-D weight as `(values, rows, cols)`, row-major.
    pub fn matrix(&self, name: &str) -> Result<(Vec<f32>, usize, usize), ScoringError> {
        match self {
            Source::Model(model) => {
                let values = model.load_f32(name)?; // a missing tensor is reported here
                let shape = &model.tensor(name).expect("loaded above").shape;
                model.release_pages(name);
                Ok((values, shape[0], shape[1]))
            }
            Source::Int8(store) => {
                if let Some(exact) = store.exact.get(name) {
                    return Ok(exact.clone());
                }
                let m = store.matrix(name)?;
                Ok((m.rows_f32(0..m.rows), m.rows, m.cols))
            }
        }
    }

    /// 2-D weights that read the same input as one matrix, their rows stacked in the order
    /// given (`[sum of rows, cols]`), each read straight into its place in one buffer (from
    /// `pool` when given).
    pub fn stacked(
        &self,
        names: &[String],
        pool: Option<&BufferPool>,
    ) -> Result<(Vec<f32>, usize, usize), ScoringError> {
        let mut shapes = Vec::with_capacity(names.len());
        for name in names {
            let shape = match self {
                Source::Model(model) => model.tensor(name).map(|t| (t.shape[0], t.shape[1])),
                Source::Int8(store) => store
                    .exact
                    .get(name)
                    .map(|e| (e.1, e.2))
                    .or_else(|| store.matrices.get(name).map(|m| (m.rows, m.cols))),
            };
            // A missing tensor: `matrix` reports it by name.
            shapes.push(shape.map_or_else(|| self.matrix(name).map(|m| (m.1, m.2)), Ok)?);
        }
        let cols = shapes.first().map_or(0, |s| s.1);
        if let Some((name, _)) = names.iter().zip(&shapes).find(|(_, s)| s.1 != cols) {
            return Err(ScoringError::Backend(format!(
                "{name} does not have the {cols} columns of the projections stacked with it"
            )));
        }
        let rows: usize = shapes.iter().map(|s| s.0).sum();
        let mut values = BufferPool::take_from(pool, rows * cols);
        let mut parts = values.as_mut_slice();
        for (name, (r, _)) in names.iter().zip(&shapes) {
            let (part, rest) = parts.split_at_mut(r * cols);
            match self {
                Source::Model(model) => {
                    model.load_f32_into(name, part)?;
                    model.release_pages(name);
                }
                // Dequantised straight into place (no intermediate matrix to copy).
                Source::Int8(store) => match store.exact.get(name) {
                    Some(exact) => part.copy_from_slice(&exact.0),
                    None => store.matrix(name)?.rows_f32_into(0..*r, part),
                },
            }
            parts = rest;
        }
        Ok((values, rows, cols))
    }

    /// The weights [`Source::stacked`] would stack, borrowed in place from the memory map (no
    /// copy), with their column count: only where every part is stored as f32 as it is used
    /// ([`Model::f32_in_place`]) and all are 2-D of one width; `None` otherwise.
    pub fn stacked_in_place(&self, names: &[String]) -> Option<(Vec<&[f32]>, usize)> {
        let Source::Model(model) = self else {
            return None;
        };
        let mut width = None;
        let parts = names
            .iter()
            .map(|name| {
                let &[rows, cols] = model.tensor(name)?.shape.as_slice() else {
                    return None;
                };
                (*width.get_or_insert(cols) == cols).then_some(())?;
                // A part whose bytes do not hold its shape is left to `stacked` to report.
                let values = model.f32_in_place(name)?;
                (values.len() == rows * cols).then_some(values)
            })
            .collect::<Option<Vec<_>>>()?;
        Some((parts, width.unwrap_or(0)))
    }

    /// Rows of a 2-D weight (embedding lookups, output-head chunks).
    pub fn rows(&self, name: &str, rows: Range<usize>) -> Result<Vec<f32>, ScoringError> {
        match self {
            Source::Model(model) => Ok(model.load_f32_rows(name, rows)?),
            Source::Int8(store) => Ok(store.matrix(name)?.rows_f32(rows)),
        }
    }

    /// Drops mapped pages of a tensor once its rows have been read (no-op for int8).
    pub fn release(&self, name: &str) {
        if let Source::Model(model) = self {
            model.release_pages(name);
        }
    }

    /// A 2-D weight as its stored blocks, for an engine's kernels ([`BlockMatrix`]).
    pub fn blocks(&self, name: &str) -> Result<BlockMatrix, ScoringError> {
        match self {
            Source::Model(model) => BlockMatrix::new(&model.stored_rows(name)?),
            Source::Int8(_) => Err(ScoringError::Backend(
                "an engine's arithmetic cannot be emulated over pot's int8 weights: drop \
                 --enable-8bit or --emulate"
                    .into(),
            )),
        }
    }

    pub fn vector(&self, name: &str) -> Result<Vec<f32>, ScoringError> {
        match self {
            Source::Model(model) => Ok(model.load_f32(name)?),
            Source::Int8(store) => store
                .vectors
                .get(name)
                .cloned()
                .ok_or_else(|| ScoringError::Backend(format!("int8 store lacks vector {name}"))),
        }
    }
}

impl Int8Store {
    fn matrix(&self, name: &str) -> Result<&Int8Matrix, ScoringError> {
        self.matrices
            .get(name)
            .ok_or_else(|| ScoringError::Backend(format!("int8 store lacks matrix {name}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_round_trip_error_is_within_half_a_step_per_group() {
        // 48 columns: one full group of 32 and a short one of 16 per row.
        let values: Vec<f32> = (0..64 * 48)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * (1.0 + (i % 48 / 32 * 9) as f32))
            .collect();
        let m = Int8Matrix::quantize(&values, 64, 48);
        let back = m.rows_f32(0..64);
        for r in 0..64 {
            for (g, cols) in [(0, 0..32), (1, 32..48)] {
                let group = &values[r * 48 + cols.start..r * 48 + cols.end];
                let step = group.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
                for c in cols {
                    let err = (values[r * 48 + c] - back[r * 48 + c]).abs();
                    assert!(err <= step / 2.0 + 1e-6, "row {r} group {g} col {c}: {err}");
                }
            }
        }
        assert_eq!(m.rows_f32(5..7), back[5 * 48..7 * 48].to_vec());
        assert_eq!(m.bytes(), 64 * 48 + 64 * 2 * 4);
    }
}

//! The CPU pass's matrix product, `C = A · B (+ bias)`: `A` the activations (`[N, in]`,
//! row-major, read in place), `B` a weight packed once into column panels ([`PackedMatrix`]).
//!
//! Our own rather than the `gemm` crate burn-flex calls: measured at the pass's shapes
//! (1,623 tokens x Qwen 0.5B's and SmolLM2's projections, 2 threads, best of 5), `gemm` 0.19
//! ran at 107-127 GFLOP/s and this at 121-151 (a scratch benchmark, not kept); one thread on a
//! cache-resident problem, this micro-kernel reaches 90 of the core's 95 GFLOP/s FMA peak; in
//! the whole pass, the layers' projections through burn's matmul instead made a Qwen 0.5B pass
//! 1.38x slower (docs/SCORING.md, "Speed"). `gemm` packs its right-hand side on every call; a
//! weight here is packed once, when a resident model loads (or by the loader thread while the
//! previous layer computes, when streamed), and the activations need no packing (each
//! micro-tile reads six rows of `A` as six streams).

use std::ops::Range;

use rayon::prelude::*;

use crate::kernels::SendPtr;

/// Rows and columns of the micro-tile: 6 x 16 floats, 12 AVX2 accumulators.
const MR: usize = 6;
const NR: usize = 16;
/// Depth of one pass over a panel (a panel block of 32 KiB, in L1/L2 while the task's rows
/// pass); deeper products add their blocks' partial sums into the output. 512 rather than the
/// whole depth for accuracy: 1,024 (one block for every hidden size of our fixtures) doubled the
/// log-prob difference to llama.cpp on Qwen 0.5B (2.3e-4 against 1.1e-4) and brought Gemma 3
/// to 8.0e-5 of transformers (5.5e-5 at 512), at a speed within this machine's noise (Qwen 0.5B
/// pass, 3 alternating pairs: 14.2 / 13.1 / 14.5 s against 14.3 / 13.6 / 13.0 s).
const KC: usize = 512;
/// Rows of `A` per task: 48 rows of depth 512 (96 KiB) stay in L2 across the task's panels.
const MC: usize = 48;
/// Output columns per task (8 panels): enough tasks for the threads even for one short prompt.
const NC: usize = 128;

/// A `[depth, width]` matrix (`depth` = the layer's inputs, `width` its outputs) in the layout
/// the micro-kernel reads: per depth block of [`KC`], the 16-column panels one after another,
/// each `kc x 16` row-major; the last panel padded with zeros.
pub struct PackedMatrix {
    depth: usize,
    width: usize,
    panels: usize,
    data: Vec<f32>,
}

impl PackedMatrix {
    /// A linear layer's weight as checkpoints store it, `[out, in]` rows: it multiplies as its
    /// transpose, `[in, out]`.
    pub fn from_rows(w: &[f32], out: usize, inputs: usize) -> Self {
        Self::from_rows_in(w, out, inputs, Vec::new())
    }

    /// [`PackedMatrix::from_rows`] into `buffer` (any contents; reused when it is large
    /// enough): a streamed pass recycles its layers' buffers instead of faulting in fresh pages.
    pub fn from_rows_in(w: &[f32], out: usize, inputs: usize, buffer: Vec<f32>) -> Self {
        assert_eq!(w.len(), out * inputs, "{out} rows of {inputs}");
        let rows = (0..out).map(|j| &w[j * inputs..(j + 1) * inputs]).collect();
        Self::from_row_slices(rows, inputs, buffer)
    }

    /// Weights that read the same input as one, their `[out, in]` rows stacked in the order
    /// given (q, k, v; gate, up), each part read where it lies (a memory map, without a copy).
    pub fn from_row_parts_in(parts: &[&[f32]], inputs: usize, buffer: Vec<f32>) -> Self {
        assert!(
            inputs > 0 && parts.iter().all(|p| p.len() % inputs == 0),
            "whole rows of {inputs}"
        );
        let rows = parts.iter().flat_map(|p| p.chunks_exact(inputs)).collect();
        Self::from_row_slices(rows, inputs, buffer)
    }

    /// `rows` (each `inputs` long) as the `[out, in]` weight they form.
    fn from_row_slices(rows: Vec<&[f32]>, inputs: usize, buffer: Vec<f32>) -> Self {
        Self::pack(inputs, rows.len(), buffer, |panel, cols, depth| {
            let rows: Vec<&[f32]> = cols.map(|j| &rows[j][depth.clone()]).collect();
            #[cfg(target_arch = "x86_64")]
            if rows.len() == NR && crate::kernels::has_avx2() {
                // SAFETY: AVX2 is present; 16 rows of `depth.len()` values, a panel of
                // `depth.len() * 16`.
                unsafe { avx2::transpose_into_panel(&rows, panel) };
                return;
            }
            // Panel rows in order (16 reading streams, one writing): column by column, the
            // strided writes ran 3x slower (a 57 KiB panel does not stay in L1 for 16 passes).
            for (p, out) in panel.chunks_exact_mut(NR).enumerate() {
                for (o, row) in out.iter_mut().zip(&rows) {
                    *o = row[p];
                }
            }
        })
    }

    /// An `[in, out]` matrix (GPT-2's `Conv1D` weights), multiplied as it is.
    pub fn from_columns(b: &[f32], inputs: usize, out: usize) -> Self {
        assert_eq!(b.len(), inputs * out, "{inputs} rows of {out}");
        Self::pack(inputs, out, Vec::new(), |panel, cols, depth| {
            for (p, k) in depth.enumerate() {
                panel[p * NR..p * NR + cols.len()]
                    .copy_from_slice(&b[k * out + cols.start..k * out + cols.end]);
            }
        })
    }

    /// Values a packed `[out, in]` weight holds (its outputs padded to whole panels): the
    /// buffer size [`PackedMatrix::from_rows_in`] uses.
    pub fn packed_len(out: usize, inputs: usize) -> usize {
        inputs * out.div_ceil(NR) * NR
    }

    /// The packed values, for reuse as another matrix's buffer.
    pub fn into_buffer(self) -> Vec<f32> {
        self.data
    }

    /// Packs a `[depth, width]` matrix into `data`; `fill(panel, columns, depths)` writes the
    /// values of those columns (the first `columns.len()` of each panel row) and depths into a
    /// `kc x 16` panel, in parallel over panels; the padding columns are zeroed here.
    fn pack(
        depth: usize,
        width: usize,
        mut data: Vec<f32>,
        fill: impl Fn(&mut [f32], Range<usize>, Range<usize>) + Sync,
    ) -> Self {
        let panels = width.div_ceil(NR);
        // Every value is written below: a reused buffer needs no zeroing.
        data.truncate(depth * panels * NR);
        data.resize(depth * panels * NR, 0.0);
        for (block, k0) in data
            .chunks_mut(KC * panels * NR)
            .zip((0..depth).step_by(KC))
        {
            let kc = KC.min(depth - k0);
            block
                .par_chunks_mut(kc * NR)
                .enumerate()
                .for_each(|(jp, panel)| {
                    let cols = jp * NR..(jp * NR + NR).min(width);
                    let filled = cols.len();
                    fill(panel, cols, k0..k0 + kc);
                    if filled < NR {
                        for row in panel.chunks_exact_mut(NR) {
                            row[filled..].fill(0.0);
                        }
                    }
                });
        }
        Self {
            depth,
            width,
            panels,
            data,
        }
    }

    /// Inputs per output (the product's depth).
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Outputs (the product's width).
    pub fn width(&self) -> usize {
        self.width
    }

    /// The panel `jp` of the depth block starting at `k0`: `kc x 16`, row-major.
    fn panel(&self, k0: usize, jp: usize) -> &[f32] {
        let kc = KC.min(self.depth - k0);
        let start = k0 * self.panels * NR + jp * kc * NR;
        &self.data[start..start + kc * NR]
    }
}

/// `c = a · b (+ bias)`: `a` is `n` rows of `b.depth()`; row `i` of the product (`b.width()`
/// values) is written at `c[i * ldc..]`, so `c` may be a column range of a wider matrix.
/// In parallel over tasks of [`MC`] rows x [`NC`] columns.
pub fn matmul(
    a: &[f32],
    n: usize,
    b: &PackedMatrix,
    bias: Option<&[f32]>,
    c: &mut [f32],
    ldc: usize,
) {
    let (k, m) = (b.depth, b.width);
    assert_eq!(a.len(), n * k, "{n} rows of {k}");
    assert!(ldc >= m, "row stride {ldc} under the width {m}");
    assert!(n == 0 || c.len() >= (n - 1) * ldc + m, "output too short");
    if let Some(bias) = bias {
        assert_eq!(bias.len(), m, "one bias per output");
    }
    if n == 0 || m == 0 {
        return;
    }
    let tile = tile_kernel();
    let (row_blocks, col_blocks) = (n.div_ceil(MC), m.div_ceil(NC));
    let out = SendPtr(c.as_mut_ptr());
    (0..row_blocks * col_blocks)
        .into_par_iter()
        .for_each(|task| {
            // Column-block-major: consecutive tasks (one thread's share is a contiguous
            // range) reuse one block of the weight while the activations come from L3.
            let (row_block, col_block) = (task % row_blocks, task / row_blocks);
            let rows = row_block * MC..(row_block * MC + MC).min(n);
            let cols = col_block * NC..(col_block * NC + NC).min(m);
            for k0 in (0..k).step_by(KC) {
                let kc = KC.min(k - k0);
                for jp in cols.start / NR..cols.end.div_ceil(NR) {
                    let panel = b.panel(k0, jp);
                    let width = NR.min(m - jp * NR);
                    for i in rows.clone().step_by(MR) {
                        // SAFETY: rows i .. i + height of `a` hold `k` values each (asserted
                        // above), the panel `kc * NR`; the tile's outputs, rows i .. i + height
                        // and columns jp*NR .. + width, lie inside `c` (asserted above) and
                        // inside this task's block, which no other task writes.
                        unsafe {
                            tile(Tile {
                                depth: kc,
                                a: a.as_ptr().add(i * k + k0),
                                lda: k,
                                height: MR.min(rows.end - i),
                                b: panel.as_ptr(),
                                c: out.get().add(i * ldc + jp * NR),
                                ldc,
                                width,
                                accumulate: k0 > 0,
                            })
                        };
                    }
                }
            }
            if let Some(bias) = bias {
                for i in rows {
                    // SAFETY: as above, this task's own block of `c`.
                    let row = unsafe {
                        std::slice::from_raw_parts_mut(
                            out.get().add(i * ldc + cols.start),
                            cols.len(),
                        )
                    };
                    row.iter_mut()
                        .zip(&bias[cols.clone()])
                        .for_each(|(v, b)| *v += b);
                }
            }
        });
}

/// One micro-tile's operands: `height <= 6` rows of `a` (stride `lda`) times a `depth x 16`
/// panel, into `height x width` outputs at `c` (stride `ldc`), added to them if `accumulate`.
struct Tile {
    depth: usize,
    a: *const f32,
    lda: usize,
    height: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    width: usize,
    accumulate: bool,
}

type TileKernel = unsafe fn(Tile);

fn tile_kernel() -> TileKernel {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::has_avx2() {
        return avx2::tile;
    }
    tile_portable
}

/// The portable micro-kernel (separate multiply and add: within rounding of the FMA one).
///
/// # Safety
/// `t` must describe readable and writable memory as [`Tile`] says.
unsafe fn tile_portable(t: Tile) {
    let mut acc = [[0.0f32; NR]; MR];
    for p in 0..t.depth {
        let b = unsafe { std::slice::from_raw_parts(t.b.add(p * NR), NR) };
        for (r, acc) in acc.iter_mut().enumerate() {
            // Rows past `height` repeat the last row: computed, never stored.
            let x = unsafe { *t.a.add(r.min(t.height - 1) * t.lda + p) };
            for (o, b) in acc.iter_mut().zip(b) {
                *o += x * b;
            }
        }
    }
    for (r, acc) in acc.iter().enumerate().take(t.height) {
        let row = unsafe { std::slice::from_raw_parts_mut(t.c.add(r * t.ldc), t.width) };
        for (o, v) in row.iter_mut().zip(acc) {
            *o = if t.accumulate { *o + v } else { *v };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{MR, NR, Tile};

    /// `panel[p * 16 + j] = rows[j][p]` for 16 rows of equal length, in 8 x 8 blocks
    /// transposed in registers (packing a streamed layer was 6.6 % of the pass element by
    /// element).
    ///
    /// # Safety
    /// The CPU has AVX2; `rows` holds 16 slices of one length and `panel` 16 times that.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn transpose_into_panel(rows: &[&[f32]], panel: &mut [f32]) {
        let depth = rows[0].len();
        assert!(rows.len() == NR && rows.iter().all(|r| r.len() == depth));
        assert_eq!(panel.len(), depth * NR);
        let whole = depth - depth % 8;
        let out = panel.as_mut_ptr();
        for half in 0..2 {
            let rows = &rows[half * 8..half * 8 + 8];
            for p0 in (0..whole).step_by(8) {
                unsafe {
                    let r: [__m256; 8] =
                        std::array::from_fn(|i| _mm256_loadu_ps(rows[i].as_ptr().add(p0)));
                    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
                    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
                    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
                    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
                    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
                    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
                    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
                    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
                    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                    let columns = [
                        _mm256_permute2f128_ps::<0x20>(u0, u4),
                        _mm256_permute2f128_ps::<0x20>(u1, u5),
                        _mm256_permute2f128_ps::<0x20>(u2, u6),
                        _mm256_permute2f128_ps::<0x20>(u3, u7),
                        _mm256_permute2f128_ps::<0x31>(u0, u4),
                        _mm256_permute2f128_ps::<0x31>(u1, u5),
                        _mm256_permute2f128_ps::<0x31>(u2, u6),
                        _mm256_permute2f128_ps::<0x31>(u3, u7),
                    ];
                    for (i, column) in columns.into_iter().enumerate() {
                        // In bounds: (p0 + i) * 16 + half * 8 + 8 <= depth * 16.
                        _mm256_storeu_ps(out.add((p0 + i) * NR + half * 8), column);
                    }
                }
            }
        }
        for p in whole..depth {
            for (j, row) in rows.iter().enumerate() {
                panel[p * NR + j] = row[p];
            }
        }
    }

    /// The 6 x 16 tile in 12 accumulators: per depth step two panel loads, six broadcasts
    /// and twelve FMAs.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `t` describes readable and writable memory as [`Tile`] says.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile(t: Tile) {
        // Rows past `height` repeat the last row: computed, never stored.
        let row = |r: usize| unsafe { t.a.add(r.min(t.height - 1) * t.lda) };
        let (a0, a1, a2, a3, a4, a5) = (row(0), row(1), row(2), row(3), row(4), row(5));
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        let mut b = t.b;
        for p in 0..t.depth {
            unsafe {
                let b0 = _mm256_loadu_ps(b);
                let b1 = _mm256_loadu_ps(b.add(8));
                b = b.add(NR);
                for (acc, a) in acc.iter_mut().zip([a0, a1, a2, a3, a4, a5]) {
                    let x = _mm256_broadcast_ss(&*a.add(p));
                    acc[0] = _mm256_fmadd_ps(x, b0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(x, b1, acc[1]);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate().take(t.height) {
            let c = unsafe { t.c.add(r * t.ldc) };
            if t.width == NR {
                unsafe {
                    let (mut v0, mut v1) = (acc[0], acc[1]);
                    if t.accumulate {
                        v0 = _mm256_add_ps(v0, _mm256_loadu_ps(c));
                        v1 = _mm256_add_ps(v1, _mm256_loadu_ps(c.add(8)));
                    }
                    _mm256_storeu_ps(c, v0);
                    _mm256_storeu_ps(c.add(8), v1);
                }
            } else {
                let mut lanes = [0.0f32; NR];
                unsafe {
                    _mm256_storeu_ps(lanes.as_mut_ptr(), acc[0]);
                    _mm256_storeu_ps(lanes.as_mut_ptr().add(8), acc[1]);
                }
                let out = unsafe { std::slice::from_raw_parts_mut(c, t.width) };
                for (o, v) in out.iter_mut().zip(lanes) {
                    *o = if t.accumulate { *o + v } else { v };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], n: usize, w: &[f32], out: usize, k: usize, bias: &[f32]) -> Vec<f32> {
        let mut c = vec![0.0f32; n * out];
        for i in 0..n {
            for j in 0..out {
                let dot: f64 = (0..k)
                    .map(|p| a[i * k + p] as f64 * w[j * k + p] as f64)
                    .sum();
                c[i * out + j] = dot as f32 + bias[j];
            }
        }
        c
    }

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.5 - 1.0)
            .collect()
    }

    /// Every edge: rows not a multiple of 6 or of a task, columns not a multiple of 16 or of
    /// a task, depths across the 512-deep blocks; both packings; into a wider output's columns.
    #[test]
    fn packed_products_match_a_naive_product_at_every_edge() {
        for &(n, out, k) in &[
            (1, 1, 1),
            (7, 33, 5),
            (50, 130, 1025),
            (13, 16, 2100),
            (96, 257, 64),
        ] {
            let (a, w, bias) = (values(n * k, 1), values(out * k, 2), values(out, 3));
            let expected = naive(&a, n, &w, out, k, &bias);
            let transposed: Vec<f32> = (0..k * out).map(|i| w[(i % out) * k + i / out]).collect();
            let dirty = vec![f32::NAN; 3 * out * k];
            for (packed, how) in [
                (PackedMatrix::from_rows(&w, out, k), "rows"),
                (
                    PackedMatrix::from_rows_in(&w, out, k, dirty),
                    "rows, a reused buffer",
                ),
                (
                    PackedMatrix::from_row_parts_in(
                        &[&w[..out / 3 * k], &w[out / 3 * k..]],
                        k,
                        Vec::new(),
                    ),
                    "rows in two parts",
                ),
                (PackedMatrix::from_columns(&transposed, k, out), "columns"),
            ] {
                let ldc = out + 3;
                let mut c = vec![f32::NAN; n * ldc];
                matmul(&a, n, &packed, Some(&bias), &mut c, ldc);
                for i in 0..n {
                    for j in 0..out {
                        let (got, want) = (c[i * ldc + j], expected[i * out + j]);
                        assert!(
                            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "{how} {n}x{out}x{k} [{i},{j}]: {got} vs {want}"
                        );
                    }
                    assert!(
                        c[i * ldc + out..(i + 1) * ldc].iter().all(|v| v.is_nan()),
                        "wrote past the width"
                    );
                }
            }
        }
    }

    /// The AVX2 kernel and the portable one agree (the portable is what CPUs without AVX2 run).
    #[test]
    fn portable_tile_matches_the_dispatched_one() {
        let (n, out, k) = (11, 40, 300);
        let (a, w) = (values(n * k, 4), values(out * k, 5));
        let packed = PackedMatrix::from_rows(&w, out, k);
        let mut fast = vec![0.0f32; n * out];
        matmul(&a, n, &packed, None, &mut fast, out);
        let mut portable = vec![0.0f32; n * out];
        for i in (0..n).step_by(MR) {
            for jp in 0..out.div_ceil(NR) {
                // SAFETY: in bounds as in `matmul` (one depth block: k < KC).
                unsafe {
                    tile_portable(Tile {
                        depth: k,
                        a: a.as_ptr().add(i * k),
                        lda: k,
                        height: MR.min(n - i),
                        b: packed.panel(0, jp).as_ptr(),
                        c: portable.as_mut_ptr().add(i * out + jp * NR),
                        ldc: out,
                        width: NR.min(out - jp * NR),
                        accumulate: false,
                    })
                };
            }
        }
        for (f, p) in fast.iter().zip(&portable) {
            assert!((f - p).abs() <= 1e-5 * (1.0 + p.abs()), "{f} vs {p}");
        }
    }
}

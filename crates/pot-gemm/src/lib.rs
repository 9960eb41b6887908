//! The f32 matrix products of a linear layer on the CPU: `y[M, N] = x[M, K] · Wᵀ` with `W` the
//! `[N, K]` row-major weight as stored in model files, packed once into 16-column panels.
//!
//! Why our own kernel: burn-flex's matmul (and the `gemm`, `matrixmultiply` and OpenBLAS
//! kernels, measured in ../shared/design/CRATES.md) reach 50–74 GFLOP/s at the shapes of a
//! teacher-forced pass on the 2-core AVX2 build machine, whose FMA peak is ~140 GFLOP/s, while
//! llama.cpp's F32 path gets 108+. Packing the weights once at load time lets a BLIS-style
//! 6x16 AVX2/FMA micro-kernel run from L1/L2 without repacking per call
//! (`cargo run -p pot-scoring --example matmul_ceiling` compares the two). Other targets, and
//! CPUs without AVX2+FMA, use a portable loop over the same packed layout.
//!
//! The crate is built without debug assertions and overflow checks even in the dev profile
//! (workspace Cargo.toml): they halve the micro-kernel's speed. The tests compare every edge
//! shape with a naive product.

use rayon::prelude::*;

/// Output columns per packed panel (two AVX registers of 8 lanes).
const NR: usize = 16;
/// Rows of `x` per micro-kernel call (12 accumulators + 2 panel loads + 1 broadcast <= 16
/// AVX registers).
const MR: usize = 6;
/// Depth of one pass over a panel: a 16 KB panel slice stays in L1 across the row blocks.
const KC: usize = 256;
/// Rows and columns of one parallel task (row blocks x panels).
const MC: usize = 16 * MR;
const NC: usize = 16 * NR;

/// A `[N, K]` weight packed as `ceil(N / 16)` panels of `[K][16]`, zero-padded past `N`.
pub struct PackedMatrix {
    pub n: usize,
    pub k: usize,
    panels: Vec<f32>,
}

impl PackedMatrix {
    /// Packs a row-major `[n, k]` weight (one row per output).
    pub fn pack(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "weight is not [{n}, {k}]");
        let mut panels = vec![0.0f32; n.div_ceil(NR) * k * NR];
        panels
            .par_chunks_mut(k * NR)
            .enumerate()
            .for_each(|(p, panel)| {
                for j in 0..NR.min(n - p * NR) {
                    let row = &w[(p * NR + j) * k..(p * NR + j + 1) * k];
                    for (kk, &v) in row.iter().enumerate() {
                        panel[kk * NR + j] = v;
                    }
                }
            });
        Self { n, k, panels }
    }

    /// `x[m, k] · Wᵀ` as a row-major `[m, n]` vector.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        let mut y = vec![0.0f32; m * self.n];
        self.matmul_into(x, m, &mut y, self.n);
        y
    }

    /// `x[m, k] · Wᵀ` written into rows of a wider matrix: row `i` of the product goes to
    /// `y[i * row_stride..][..n]` (a column slice of `y`, e.g. one chunk of the vocabulary).
    pub fn matmul_into(&self, x: &[f32], m: usize, y: &mut [f32], row_stride: usize) {
        self.matmul_with(Kernel::detect(), x, m, y, row_stride)
    }

    fn matmul_with(&self, kernel: Kernel, x: &[f32], m: usize, y: &mut [f32], ldy: usize) {
        let (n, k) = (self.n, self.k);
        assert_eq!(x.len(), m * k, "input is not [{m}, {k}]");
        assert!(
            m == 0 || (ldy >= n && y.len() >= (m - 1) * ldy + n),
            "output does not hold {m} rows of {n} values at stride {ldy}"
        );
        // Tasks: MC-row x NC-column tiles of y, each computed over the full depth.
        let col_tiles = n.div_ceil(NC);
        let tiles: Vec<(usize, usize)> = (0..m.div_ceil(MC))
            .flat_map(|r| (0..col_tiles).map(move |c| (r, c)))
            .collect();
        let out = SharedOut(y.as_mut_ptr());
        tiles.into_par_iter().for_each(|(r, c)| {
            let rows = r * MC..(r * MC + MC).min(m);
            let panels = c * NC / NR..((c * NC + NC).min(n)).div_ceil(NR);
            for k0 in (0..k).step_by(KC) {
                let kc = KC.min(k - k0);
                for p in panels.clone() {
                    let panel = &self.panels[p * k * NR + k0 * NR..p * k * NR + (k0 + kc) * NR];
                    let cols = p * NR..(p * NR + NR).min(n);
                    for i0 in rows.clone().step_by(MR) {
                        let mr = MR.min(rows.end - i0);
                        let a = &x[i0 * k + k0..];
                        // SAFETY: tiles are disjoint, so this task is the only writer of rows
                        // `rows` x columns `cols` of y; the block written lies inside y
                        // (asserted above).
                        let c_block = unsafe { out.at(i0 * ldy + cols.start) };
                        unsafe {
                            kernel.run(mr, a, k, panel, kc, c_block, ldy, cols.len(), k0 > 0)
                        };
                    }
                }
            }
        });
    }

    pub fn bytes(&self) -> usize {
        4 * self.panels.len()
    }
}

/// y's base pointer, shared by the tasks that write disjoint tiles of it.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// # Safety
    /// `offset` lies inside y.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        unsafe { self.0.add(offset) }
    }
}

#[derive(Clone, Copy)]
enum Kernel {
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    Portable,
}

impl Kernel {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Self::Avx2Fma;
        }
        Self::Portable
    }

    /// `c[mr, width] (+)= a[mr, kc] · panel[kc, 16][.., ..width]`, `a` with row stride `lda`,
    /// `c` with row stride `ldc`; `accumulate` adds to c instead of overwriting it.
    ///
    /// # Safety
    /// `a` holds `mr` rows of `kc` values at stride `lda`; `c` is valid for `mr` rows of
    /// `width <= 16` values at stride `ldc`; `panel` holds `kc * 16` values.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run(
        self,
        mr: usize,
        a: &[f32],
        lda: usize,
        panel: &[f32],
        kc: usize,
        c: *mut f32,
        ldc: usize,
        width: usize,
        accumulate: bool,
    ) {
        assert!(panel.len() >= kc * NR && a.len() >= (mr - 1) * lda + kc);
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx2Fma => unsafe {
                let (a, b) = (a.as_ptr(), panel.as_ptr());
                match mr {
                    6 => avx2::tile::<6>(a, lda, b, kc, c, ldc, width, accumulate),
                    5 => avx2::tile::<5>(a, lda, b, kc, c, ldc, width, accumulate),
                    4 => avx2::tile::<4>(a, lda, b, kc, c, ldc, width, accumulate),
                    3 => avx2::tile::<3>(a, lda, b, kc, c, ldc, width, accumulate),
                    2 => avx2::tile::<2>(a, lda, b, kc, c, ldc, width, accumulate),
                    _ => avx2::tile::<1>(a, lda, b, kc, c, ldc, width, accumulate),
                }
            },
            Self::Portable => {
                let mut tile = [[0.0f32; NR]; MR];
                for (i, row) in tile.iter_mut().enumerate().take(mr) {
                    for p in 0..kc {
                        let av = a[i * lda + p];
                        for (acc, &b) in row.iter_mut().zip(&panel[p * NR..p * NR + NR]) {
                            *acc += av * b;
                        }
                    }
                }
                for (i, row) in tile.iter().enumerate().take(mr) {
                    unsafe { store_row(&row[..width], c.add(i * ldc), accumulate) };
                }
            }
        }
    }
}

/// Writes (or adds) `values` to the row at `out`.
///
/// # Safety
/// `out` is valid for `values.len()` writes.
unsafe fn store_row(values: &[f32], out: *mut f32, accumulate: bool) {
    let out = unsafe { std::slice::from_raw_parts_mut(out, values.len()) };
    if accumulate {
        for (o, v) in out.iter_mut().zip(values) {
            *o += v;
        }
    } else {
        out.copy_from_slice(values);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::NR;

    /// The 6x16 micro-kernel (fewer rows for the last row block): `R` rows of `a`, one
    /// broadcast per row and depth step, two 8-lane FMAs per row into registers, then written
    /// (or added) to `c`; a partial last panel (`width < 16`) goes through a row buffer.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile<const R: usize>(
        a: *const f32,
        lda: usize,
        panel: *const f32,
        kc: usize,
        c: *mut f32,
        ldc: usize,
        width: usize,
        accumulate: bool,
    ) {
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            for p in 0..kc {
                let b0 = _mm256_loadu_ps(panel.add(p * NR));
                let b1 = _mm256_loadu_ps(panel.add(p * NR + 8));
                for (i, acc) in acc.iter_mut().enumerate() {
                    let av = _mm256_broadcast_ss(&*a.add(i * lda + p));
                    acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
                }
            }
            for (i, &[mut lo, mut hi]) in acc.iter().enumerate() {
                let row = c.add(i * ldc);
                if width == NR {
                    if accumulate {
                        lo = _mm256_add_ps(lo, _mm256_loadu_ps(row));
                        hi = _mm256_add_ps(hi, _mm256_loadu_ps(row.add(8)));
                    }
                    _mm256_storeu_ps(row, lo);
                    _mm256_storeu_ps(row.add(8), hi);
                } else {
                    let mut buffer = [0.0f32; NR];
                    _mm256_storeu_ps(buffer.as_mut_ptr(), lo);
                    _mm256_storeu_ps(buffer.as_mut_ptr().add(8), hi);
                    super::store_row(&buffer[..width], row, accumulate);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut y = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                y[i * n + j] = (0..k)
                    .map(|p| f64::from(x[i * k + p]) * f64::from(w[j * k + p]))
                    .sum::<f64>() as f32;
            }
        }
        y
    }

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0 - 1.0)
            .collect()
    }

    /// Shapes that exercise every edge: partial row blocks, partial panels and tiles, depths
    /// below, at and above one KC step, and both kernels.
    #[test]
    fn matches_a_naive_product_at_edge_shapes() {
        for (m, n, k) in [
            (1, 1, 1),
            (7, 17, 3),
            (13, 40, 256),
            (97, 300, 257),
            (200, 16, 600),
            (5, 513, 1000),
        ] {
            let (x, w) = (values(m * k, 1), values(n * k, 2));
            let want = naive(&x, &w, m, n, k);
            let packed = PackedMatrix::pack(&w, n, k);
            for kernel in [Kernel::detect(), Kernel::Portable] {
                let mut got = vec![0.0f32; m * n];
                packed.matmul_with(kernel, &x, m, &mut got, n);
                let worst = got
                    .iter()
                    .zip(&want)
                    .map(|(g, w)| (g - w).abs() / (1.0 + w.abs()))
                    .fold(0.0f32, f32::max);
                assert!(worst < 1e-5, "[{m},{k}]x[{k},{n}]: relative error {worst}");
            }
        }
    }

    #[test]
    fn writes_into_a_column_slice_of_a_wider_matrix() {
        let (m, n, k, wide) = (9, 20, 33, 50);
        let (x, w) = (values(m * k, 3), values(n * k, 4));
        let want = naive(&x, &w, m, n, k);
        let mut y = vec![7.0f32; m * wide];
        PackedMatrix::pack(&w, n, k).matmul_into(&x, m, &mut y[10..], wide);
        for i in 0..m {
            let row = &y[i * wide..(i + 1) * wide];
            assert!(
                row[..10].iter().chain(&row[30..]).all(|&v| v == 7.0),
                "row {i} spilled"
            );
            for j in 0..n {
                assert!(
                    (row[10 + j] - want[i * n + j]).abs() < 1e-4,
                    "row {i} col {j}"
                );
            }
        }
    }
}

//! Host kernels of the CPU pass where burn's generic ops cost more than the work (its matrix
//! products are in `matmul`): the log-softmax over the vocabulary, the gated
//! activation fused into one pass, and attention per sequence and head. On SmolLM2 these parts
//! took 2.3 of 7.6 s per benchmark pass as burn ops (`silu(g) * u` alone 0.85 s: three passes
//! over fresh buffers with a scalar `exp`; attention and RoPE 0.81 s of slices, transposes, masks
//! and copies); docs/SCORING.md ("Speed") has the measurements.
//!
//! The element-wise kernels have an AVX2 + FMA version (8 lanes, chosen at run time: the build
//! does not require `-C target-cpu`; written with intrinsics because LLVM left the portable
//! loops scalar at 9 ns per element) and a portable one for other CPUs. Both use the same `exp`:
//! a polynomial (Cephes `expf`, within 2.5e-7 relative over the range used), not libm's call.

use rayon::prelude::*;

// Cephes `expf`: `x = n ln 2 + r` (ln 2 in two parts), `e^r = 1 + r + r^2 P(r)`, `2^n` put into
// the exponent bits. The input is clamped so that `n` stays in the normal exponent range.
const EXP_MIN: f32 = -87.33654;
const EXP_MAX: f32 = 88.0;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// `e^x` (clamped to [`EXP_MIN`, `EXP_MAX`]), the portable lane of the kernels.
fn exp(x: f32) -> f32 {
    let x = x.clamp(EXP_MIN, EXP_MAX);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = P.iter().fold(0.0, |acc, &c| acc * r + c);
    (p * r * r + r + 1.0) * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Natural-log softmax of one row, in place (max-shifted; the sum of exponentials accumulated
/// in f64).
pub fn log_softmax_in_place(row: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 and FMA were detected on this CPU.
        return unsafe { avx2::log_softmax_in_place(row) };
    }
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let sum: f64 = row.iter().map(|&v| f64::from(exp(v - max))).sum();
    let log_z = max + sum.ln() as f32;
    row.iter_mut().for_each(|v| *v -= log_z);
}

/// The gated MLP's `act(gate) ⊙ up` for `gate_up: [N, 2 ffn]` (each row: gate, then up):
/// SwiGLU's `silu` or Gemma's `gelu_pytorch_tanh` (`tanh` as `1 - 2 / (e^{2z} + 1)`), one pass,
/// rows in parallel. Returns `[N, ffn]`.
pub fn gated_activation(gate_up: &[f32], ffn: usize, act: Activation) -> Vec<f32> {
    assert_eq!(gate_up.len() % (2 * ffn), 0, "gate_up is [N, 2 ffn]");
    let mut out = vec![0f32; gate_up.len() / 2];
    out.par_chunks_mut(ffn)
        .zip(gate_up.par_chunks(2 * ffn))
        .for_each(|(out, row)| {
            let (g, u) = row.split_at(ffn);
            activation_mul(act, out, g, u)
        });
    out
}

/// The activations the families use (`ModelConfig::hidden_act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Silu,
    GeluTanh,
}

impl Activation {
    /// The config's `hidden_act` (`silu` or `gelu_tanh`: the only two its parser accepts).
    pub fn of(hidden_act: &str) -> Self {
        match hidden_act {
            "gelu_tanh" => Self::GeluTanh,
            _ => Self::Silu,
        }
    }
}

/// `out = act(g) ⊙ u`, on 8 lanes where the CPU has AVX2 + FMA.
fn activation_mul(act: Activation, out: &mut [f32], g: &[f32], u: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 and FMA were detected on this CPU.
        return unsafe {
            match act {
                Activation::Silu => avx2::silu_mul(out, g, u),
                Activation::GeluTanh => avx2::gelu_tanh_mul(out, g, u),
            }
        };
    }
    match act {
        Activation::Silu => silu_mul_portable(out, g, u),
        Activation::GeluTanh => gelu_tanh_mul_portable(out, g, u),
    }
}

fn silu_mul_portable(out: &mut [f32], g: &[f32], u: &[f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
        *o = g * u / (1.0 + exp(-g));
    }
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_CUBIC: f32 = 0.044_715;

fn gelu_tanh_mul_portable(out: &mut [f32], g: &[f32], u: &[f32]) {
    for ((o, &x), &u) in out.iter_mut().zip(g).zip(u) {
        let z = SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x);
        let tanh = 1.0 - 2.0 / (exp(2.0 * z) + 1.0);
        *o = 0.5 * x * (1.0 + tanh) * u;
    }
}

/// The same kernels on 8 lanes; each tail of fewer than 8 values goes through the portable code.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{EXP_MAX, EXP_MIN, GELU_CUBIC, LN2_HI, LN2_LO, P, SQRT_2_OVER_PI};

    #[target_feature(enable = "avx2,fma")]
    fn exp8(x: __m256) -> __m256 {
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(EXP_MIN)),
            _mm256_set1_ps(EXP_MAX),
        );
        let log2e = _mm256_set1_ps(std::f32::consts::LOG2_E);
        let n = _mm256_floor_ps(_mm256_fmadd_ps(x, log2e, _mm256_set1_ps(0.5)));
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_setzero_ps();
        for c in P {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let one = _mm256_set1_ps(1.0);
        let e = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, one));
        let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_mul_ps(e, _mm256_castsi256_ps(bits))
    }

    #[target_feature(enable = "avx2,fma")]
    fn load(v: &[f32]) -> __m256 {
        assert!(v.len() >= 8);
        // SAFETY: 8 values are in bounds (asserted); unaligned load.
        unsafe { _mm256_loadu_ps(v.as_ptr()) }
    }

    #[target_feature(enable = "avx2,fma")]
    fn store(v: &mut [f32], x: __m256) {
        assert!(v.len() >= 8);
        // SAFETY: as `load`.
        unsafe { _mm256_storeu_ps(v.as_mut_ptr(), x) }
    }

    #[target_feature(enable = "avx2,fma")]
    fn lanes(x: __m256) -> [f32; 8] {
        let mut out = [0f32; 8];
        store(&mut out, x);
        out
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn log_softmax_in_place(row: &mut [f32]) {
        let split = row.len() / 8 * 8;
        let (body, tail) = row.split_at_mut(split);
        let mut max8 = _mm256_set1_ps(f32::NEG_INFINITY);
        for chunk in body.chunks_exact(8) {
            max8 = _mm256_max_ps(max8, load(chunk));
        }
        let max = lanes(max8)
            .iter()
            .chain(tail.iter())
            .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let max8 = _mm256_set1_ps(max);
        // f64 partial sums, 4 + 4 lanes.
        let (mut lo, mut hi) = (_mm256_setzero_pd(), _mm256_setzero_pd());
        for chunk in body.chunks_exact(8) {
            let e = exp8(_mm256_sub_ps(load(chunk), max8));
            lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
            hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(e)));
        }
        let mut sums = [0f64; 4];
        // SAFETY: 4 f64 lanes into a 4-element array.
        unsafe { _mm256_storeu_pd(sums.as_mut_ptr(), _mm256_add_pd(lo, hi)) };
        let sum = sums.iter().sum::<f64>()
            + tail
                .iter()
                .map(|&v| f64::from(super::exp(v - max)))
                .sum::<f64>();
        let log_z = max + sum.ln() as f32;
        let log_z8 = _mm256_set1_ps(log_z);
        for chunk in body.chunks_exact_mut(8) {
            let v = _mm256_sub_ps(load(chunk), log_z8);
            store(chunk, v);
        }
        tail.iter_mut().for_each(|v| *v -= log_z);
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn silu_mul(out: &mut [f32], g: &[f32], u: &[f32]) {
        let split = out.len() / 8 * 8;
        let one = _mm256_set1_ps(1.0);
        let chunks = out[..split].chunks_exact_mut(8).zip(g.chunks_exact(8));
        for ((oc, gc), uc) in chunks.zip(u.chunks_exact(8)) {
            let x = load(gc);
            let sig = _mm256_div_ps(
                one,
                _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), x))),
            );
            store(oc, _mm256_mul_ps(_mm256_mul_ps(x, sig), load(uc)));
        }
        super::silu_mul_portable(&mut out[split..], &g[split..], &u[split..]);
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn gelu_tanh_mul(out: &mut [f32], g: &[f32], u: &[f32]) {
        let split = out.len() / 8 * 8;
        let (one, two, half) = (
            _mm256_set1_ps(1.0),
            _mm256_set1_ps(2.0),
            _mm256_set1_ps(0.5),
        );
        let chunks = out[..split].chunks_exact_mut(8).zip(g.chunks_exact(8));
        for ((oc, gc), uc) in chunks.zip(u.chunks_exact(8)) {
            let x = load(gc);
            let x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
            let z = _mm256_mul_ps(
                _mm256_set1_ps(SQRT_2_OVER_PI),
                _mm256_fmadd_ps(_mm256_set1_ps(GELU_CUBIC), x3, x),
            );
            let e = exp8(_mm256_mul_ps(two, z));
            let tanh = _mm256_sub_ps(one, _mm256_div_ps(two, _mm256_add_ps(e, one)));
            let gelu = _mm256_mul_ps(_mm256_mul_ps(half, x), _mm256_add_ps(one, tanh));
            store(oc, _mm256_mul_ps(gelu, load(uc)));
        }
        super::gelu_tanh_mul_portable(&mut out[split..], &g[split..], &u[split..]);
    }
}

/// One layer's attention settings for [`attention`].
pub struct Attention<'a> {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Multiplies `q · k` (`1 / sqrt(head_dim)`, or Gemma's `query_pre_attn_scalar`).
    pub scale: f32,
    /// A query attends to the keys fewer than `window` positions back (sliding-window layers).
    pub window: Option<usize>,
    /// Per-head RMSNorm weights (`[head_dim]`) of queries and keys, and their epsilon.
    pub q_norm: Option<&'a [f32]>,
    pub k_norm: Option<&'a [f32]>,
    pub eps: f32,
    /// Per-row rotary `cos` and `sin` (`[N, head_dim]`, rotate-half layout), or `None` (GPT-2).
    pub rope: Option<(&'a [f32], &'a [f32])>,
}

/// Causal attention per sequence over a packed batch. `qkv`: the fused projection's output,
/// `[N, (heads + 2 kv_heads) · head_dim]` (queries, keys, values); queries and keys are
/// normalised and rotated in place. Returns `[N, heads · head_dim]`. Grouped-query heads read
/// their shared key/value head in place (no copies); one (sequence, head) pair per task, each
/// two small GEMMs around a softmax over the allowed keys only.
pub fn attention(qkv: &mut [f32], spans: &[(usize, usize)], a: &Attention) -> Vec<f32> {
    let (h, kv, hd) = (a.heads, a.kv_heads, a.head_dim);
    let width = (h + 2 * kv) * hd;
    let n: usize = spans.iter().map(|s| s.1).sum();
    assert_eq!(
        qkv.len(),
        n * width,
        "qkv is [N, (heads + 2 kv) * head_dim]"
    );
    qkv.par_chunks_mut(width).enumerate().for_each(|(r, row)| {
        let (q, rest) = row.split_at_mut(h * hd);
        for (heads, norm) in [(q, a.q_norm), (&mut rest[..kv * hd], a.k_norm)] {
            for x in heads.chunks_exact_mut(hd) {
                if let Some(weight) = norm {
                    rms_norm_in_place(x, weight, a.eps);
                }
                if let Some((cos, sin)) = a.rope {
                    rotate_half(x, &cos[r * hd..(r + 1) * hd], &sin[r * hd..(r + 1) * hd]);
                }
            }
        }
    });
    let mut out = vec![0f32; n * h * hd];
    let out_ptr = SendPtr(out.as_mut_ptr());
    let qkv = &*qkv;
    let tasks: Vec<(usize, usize, usize)> = spans
        .iter()
        .flat_map(|&(start, t)| (0..h).map(move |head| (start, t, head)))
        .collect();
    tasks.par_iter().for_each(|&(start, t, head)| {
        let g = head / (h / kv);
        let mut scores = vec![0f32; t * t];
        let q = &qkv[start * width + head * hd..];
        let k = &qkv[start * width + (h + g) * hd..];
        let v = &qkv[start * width + (h + kv + g) * hd..];
        assert!(q.len() >= (t - 1) * width + hd && v.len() >= (t - 1) * width + hd);
        // SAFETY: rows start..start+t of `qkv` (asserted above through the longest reach, the
        // values' last row) hold this head's q, k and v at the offsets taken; `scores` is t x t.
        unsafe {
            gemm::gemm(
                t,
                t,
                hd,
                scores.as_mut_ptr(),
                1,
                t as isize,
                false,
                q.as_ptr(),
                1,
                width as isize,
                k.as_ptr(),
                width as isize,
                1,
                0.0,
                a.scale,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        for (i, row) in scores.chunks_exact_mut(t).enumerate() {
            let first = a.window.map_or(0, |w| (i + 1).saturating_sub(w));
            row[..first].fill(0.0);
            softmax_in_place(&mut row[first..=i]);
            row[i + 1..].fill(0.0);
        }
        // SAFETY: `out` has N rows of heads * head_dim; this task writes columns
        // head*hd..(head+1)*hd of rows start..start+t, which no other task writes, and `out`
        // outlives the parallel loop. `v` as above.
        unsafe {
            gemm::gemm(
                t,
                hd,
                t,
                out_ptr.get().add(start * h * hd + head * hd),
                1,
                (h * hd) as isize,
                false,
                scores.as_ptr(),
                1,
                t as isize,
                v.as_ptr(),
                1,
                width as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    });
    out
}

/// An output pointer parallel tasks share; each writes its own disjoint block through it
/// (`attention` here, `matmul::matmul`).
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: only used for disjoint writes, see `attention` and `matmul::matmul`.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// `x / sqrt(mean(x^2) + eps) * weight`.
fn rms_norm_in_place(x: &mut [f32], weight: &[f32], eps: f32) {
    let mean = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for (v, w) in x.iter_mut().zip(weight) {
        *v = *v * scale * w;
    }
}

/// `x * cos + rotate_half(x) * sin` (rotate_half: `[-x2, x1]`).
fn rotate_half(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = x.len() / 2;
    let (x1, x2) = x.split_at_mut(half);
    for j in 0..half {
        let (a, b) = (x1[j], x2[j]);
        x1[j] = a * cos[j] - b * sin[j];
        x2[j] = b * cos[j + half] + a * sin[j + half];
    }
}

/// Softmax of one short row, in place.
fn softmax_in_place(row: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0f32;
    for v in row.iter_mut() {
        *v = exp(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_libm_over_the_range_used() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (ours, libm) = (f64::from(exp(x)), f64::from(x.exp()));
            worst = worst.max(((ours - libm) / libm).abs());
            x += 0.001_3;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst:e}");
        assert_eq!(exp(-1000.0), exp(-87.33654), "clamped below, no NaN");
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn log_softmax_normalises() {
        let mut row = vec![1.0f32, 2.0, 3.0, -50.0];
        log_softmax_in_place(&mut row);
        let total: f32 = row.iter().map(|v| v.exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert!(row[2] > row[1] && row[1] > row[0]);
    }

    #[test]
    fn log_softmax_matches_the_f64_reference() {
        // 1003 values: full 8-lane chunks and a remainder; a large spread of logits.
        let row: Vec<f32> = (0..1003)
            .map(|i| ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * 40.0)
            .collect();
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let log_z = f64::from(max)
            + row
                .iter()
                .map(|&v| (f64::from(v) - f64::from(max)).exp())
                .sum::<f64>()
                .ln();
        let mut ours = row.clone();
        log_softmax_in_place(&mut ours);
        for (o, v) in ours.iter().zip(&row) {
            assert!((f64::from(*o) - (f64::from(*v) - log_z)).abs() < 1e-5);
        }
    }

    #[test]
    fn gated_activations_match_their_formulas() {
        let g: Vec<f32> = (0..40_000)
            .map(|i| (i as f32 - 20_000.0) / 1000.0)
            .collect();
        let u: Vec<f32> = (0..40_000).map(|i| 1.0 + (i % 7) as f32 / 7.0).collect();
        // Rows of 1000: gate then up, as the fused projection writes them.
        let gate_up: Vec<f32> = g
            .chunks(1000)
            .zip(u.chunks(1000))
            .flat_map(|(g, u)| g.iter().chain(u).copied())
            .collect();
        for act in [Activation::Silu, Activation::GeluTanh] {
            let ours = gated_activation(&gate_up, 1000, act);
            // The portable lanes agree with the dispatched (AVX2 here) ones.
            let mut portable = vec![0.0; g.len()];
            match act {
                Activation::Silu => silu_mul_portable(&mut portable, &g, &u),
                Activation::GeluTanh => gelu_tanh_mul_portable(&mut portable, &g, &u),
            }
            for (a, b) in ours.iter().zip(&portable) {
                assert!(
                    (a - b).abs() <= 1e-6 * a.abs().max(1.0),
                    "{act:?}: {a} vs {b}"
                );
            }
            for ((o, &x), &u) in ours.iter().zip(&g).zip(&u) {
                let x = f64::from(x);
                let a = match act {
                    Activation::Silu => x / (1.0 + (-x).exp()),
                    Activation::GeluTanh => {
                        let z = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3));
                        0.5 * x * (1.0 + z.tanh())
                    }
                };
                let want = a * f64::from(u);
                assert!(
                    (f64::from(*o) - want).abs() <= 1e-6 * want.abs().max(1.0),
                    "{act:?}({x}) * {u}: {o} vs {want}"
                );
            }
        }
    }
}

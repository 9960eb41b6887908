//! Engine-faithful arithmetic: compute as llama.cpp's CPU backend computes, so that a reference
//! computed here reproduces a llama.cpp server's log-probs, not just approximates them.
//!
//! Why exactness and not a model of the roundings: llama.cpp converts every matmul's input to
//! 8-bit blocks (Q8_0 / Q8_1 / Q8_K) before it multiplies by quantised weights. A one-ulp
//! difference anywhere upstream flips a rounding now and then; a flipped 8-bit value is an error
//! of a whole quantisation step, which the next layers carry on and multiply, so two
//! computations that differ only in the order of their f32 sums end up as far apart as two
//! independent quantisations (measured on SmolLM2 Q4_1, docs/SERVED.md: pot's f32 pass, pot
//! rounding the inputs as ggml does but summing its own way, and llama.cpp are each about 0.025
//! apart). So this module reproduces ggml-cpu's x86 AVX2 arithmetic as vendored in
//! llama-cpp-python 0.3.36 operation by operation, read from its source and checked bit for bit
//! against its intermediate tensors (`fixtures/emulation/`): the activation quantisers
//! ([`quantize_q8_0`], [`quantize_q8_k`]), the integer block dot products with their lane
//! structure and scale order ([`BlockMatrix`]), RMSNorm summed in f64 ([`rms_norm`]), RoPE with
//! ggml's iterated angles and fused rotation ([`rope_tables`], [`rotate`]), attention over an f16
//! cache with ggml's exponential ([`attention`], [`v_expf`]) and SwiGLU ([`swiglu`]).

use half::{bf16, f16};
use pot_formats::DType;
use rayon::prelude::*;

use crate::error::ScoringError;

/// How the forward pass computes: pot's own f32 arithmetic, or a named engine's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Arithmetic {
    /// f32 throughout (weights dequantised once, inputs unrounded, keys and values in f32).
    #[default]
    Exact,
    /// llama.cpp's CPU backend (the AVX-512 build of llama-cpp-python 0.3.36) computing a prompt
    /// batch, bit for bit; keys and values stored in the cache as `kv` stores them.
    LlamaCpp { kv: KvCache },
}

/// The type of llama.cpp's KV cache (`--cache-type-k/v`; f16 by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KvCache {
    #[default]
    F16,
    F32,
}

impl Arithmetic {
    /// Names accepted by `--emulate`.
    pub const NAMES: &'static [&'static str] = &["none", "llama.cpp"];

    /// `none` or `llama.cpp`, with the cache type `kv`.
    pub fn parse(name: &str, kv: KvCache) -> Option<Self> {
        match name {
            "none" | "exact" => Some(Arithmetic::Exact),
            "llama.cpp" | "llama-cpp" | "llamacpp" => Some(Arithmetic::LlamaCpp { kv }),
            _ => None,
        }
    }

    /// What the report says: `exact` or `llama.cpp (kv f16)`.
    pub fn describe(self) -> String {
        match self {
            Arithmetic::Exact => "exact".into(),
            Arithmetic::LlamaCpp { kv } => format!("llama.cpp (kv {})", kv.name()),
        }
    }

    /// Whether keys and values are rounded to f16 as they enter the cache.
    pub fn kv_f16(self) -> bool {
        matches!(self, Arithmetic::LlamaCpp { kv: KvCache::F16 })
    }
}

impl KvCache {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "f16" => Some(KvCache::F16),
            "f32" => Some(KvCache::F32),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KvCache::F16 => "f16",
            KvCache::F32 => "f32",
        }
    }
}

/// What ggml does to a matmul's f32 input before the product, by the weight's partner type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rounding {
    /// F32 weights (and pot's exact arithmetic): the input as it is.
    None,
    F16,
    Bf16,
    /// Blocks of 32, `d = amax / 127` stored as fp16, `q = round_even(x * 127 / amax)`.
    Q8_0,
    /// Q8_0's values, plus the fp16 of `d * sum(q)` per block.
    Q8_1,
    /// Blocks of 256, `d = 1 / iscale` in f32 with `iscale = -127 / max` (the signed value of
    /// largest magnitude), `q = min(127, round_even(iscale * x))`.
    Q8K,
}

/// Values per block of the 8-bit partner types.
const QK8: usize = 32;
const QKK: usize = 256;

impl Rounding {
    /// ggml-cpu's `type_traits_cpu[dtype].vec_dot_type`.
    pub fn partner_of(dtype: DType) -> Self {
        match dtype {
            DType::F32 => Rounding::None,
            DType::F16 => Rounding::F16,
            DType::BF16 => Rounding::Bf16,
            DType::Q8_0 | DType::Q4_0 | DType::Q5_0 => Rounding::Q8_0,
            DType::Q4_1 | DType::Q5_1 => Rounding::Q8_1,
            DType::Q4_K | DType::Q5_K | DType::Q6_K => Rounding::Q8K,
        }
    }

    /// The block length the rounding works in (1 for element-wise ones): a row's length must
    /// be a multiple of it, as ggml requires.
    pub fn block(self) -> usize {
        match self {
            Rounding::None | Rounding::F16 | Rounding::Bf16 => 1,
            Rounding::Q8_0 | Rounding::Q8_1 => QK8,
            Rounding::Q8K => QKK,
        }
    }
}

/// One Q8_0 (or Q8_1) block of 32 as ggml's AVX2 `quantize_row_q8_0` / `quantize_row_q8_1`
/// writes it.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockQ8 {
    pub d: f16,
    pub qs: [i8; QK8],
    /// Q8_1's `s`: fp16 of `d * sum(qs)` with the f32 `d` (before its fp16 rounding).
    pub s: f16,
}

/// ggml-cpu's x86 `quantize_row_q8_0` (AVX2) for one block: the largest magnitude `amax`,
/// `d = amax / 127` (stored as fp16), `id = 127 / amax` in f32 (from `amax`, not from the
/// rounded `d`), `q = round_half_even(x * id)` (`_mm256_round_ps(_MM_ROUND_NEAREST)`).
#[inline(always)]
pub fn quantize_q8_0(x: &[f32]) -> BlockQ8 {
    assert_eq!(x.len(), QK8);
    #[cfg(target_arch = "x86_64")]
    if has_vnni() {
        // SAFETY: the CPU has AVX-512F/BW/VL (checked with VNNI); x holds 32 values.
        return unsafe { quantize_q8_0_avx512(x) };
    }
    quantize_q8_0_portable(x)
}

/// [`quantize_q8_0`] element by element (the reference the vector version is tested against).
#[inline(always)]
fn quantize_q8_0_portable(x: &[f32]) -> BlockQ8 {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut qs = [0i8; QK8];
    let mut sum = 0i32;
    for (q, &v) in qs.iter_mut().zip(x) {
        let r = (v * id).round_ties_even() as i32;
        *q = r as i8;
        sum += r;
    }
    BlockQ8 {
        d: f16::from_f32(d),
        qs,
        s: f16::from_f32(d * sum as f32),
    }
}

/// [`quantize_q8_0`] sixteen values at a time: the same `amax`, `d` and `id`, the products
/// `x * id` rounded half to even by `vcvtps2dq` (the default rounding mode), the same sum.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
unsafe fn quantize_q8_0_avx512(x: &[f32]) -> BlockQ8 {
    use std::arch::x86_64::*;
    assert_eq!(x.len(), QK8);
    // SAFETY: x holds 32 values.
    let (v0, v1) = unsafe {
        (
            _mm512_loadu_ps(x.as_ptr()),
            _mm512_loadu_ps(x.as_ptr().add(16)),
        )
    };
    let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let scale = _mm512_set1_ps(id);
    let q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, scale));
    let q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, scale));
    let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
    let mut qs = [0i8; QK8];
    // SAFETY: qs holds 32 bytes, written sixteen at a time.
    unsafe {
        _mm_storeu_si128(qs.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128(qs.as_mut_ptr().add(16).cast(), _mm512_cvtepi32_epi8(q1));
    }
    BlockQ8 {
        d: f16::from_f32(d),
        qs,
        s: f16::from_f32(d * sum as f32),
    }
}

/// One Q8_K block of 256 as ggml writes it (`quantize_row_q8_K_ref`, which the x86 build uses).
#[derive(Clone, Debug, PartialEq)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QKK],
    /// Sums of each 16 consecutive `qs`.
    pub bsums: [i16; QKK / 16],
}

/// ggml's `quantize_row_q8_K_ref` for one block: `max` the value of largest magnitude (the
/// first of equal ones), `iscale = -127 / max`, `q = min(127, nearest_int(iscale * x))` (round
/// half to even), `d = 1 / iscale`; an all-zero block stays zero with `d = 0`.
#[inline(always)]
pub fn quantize_q8_k(x: &[f32]) -> BlockQ8K {
    assert_eq!(x.len(), QKK);
    #[cfg(target_arch = "x86_64")]
    if has_vnni() {
        // SAFETY: the CPU has AVX-512F/BW/VL (checked with VNNI); x holds 256 values.
        return unsafe { quantize_q8_k_avx512(x) };
    }
    quantize_q8_k_portable(x)
}

/// [`quantize_q8_k`] element by element (the reference the vector version is tested against).
#[inline(always)]
fn quantize_q8_k_portable(x: &[f32]) -> BlockQ8K {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    let mut block = BlockQ8K {
        d: 0.0,
        qs: [0; QKK],
        bsums: [0; QKK / 16],
    };
    if amax == 0.0 {
        return block;
    }
    let iscale = -127.0 / max;
    for (q, &v) in block.qs.iter_mut().zip(x) {
        *q = ((iscale * v).round_ties_even() as i32).min(127) as i8;
    }
    for (sum, qs) in block.bsums.iter_mut().zip(block.qs.chunks_exact(16)) {
        *sum = qs.iter().map(|&q| q as i16).sum();
    }
    block.d = 1.0 / iscale;
    block
}

/// [`quantize_q8_k`] sixteen values at a time: the same `max` (the first value of largest
/// magnitude), the same products `iscale * x`, rounded half to even by `vcvtps2dq` (the default
/// rounding mode, as `round_ties_even`), clamped to 127, and the sums of sixteen.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
unsafe fn quantize_q8_k_avx512(x: &[f32]) -> BlockQ8K {
    use std::arch::x86_64::*;
    assert_eq!(x.len(), QKK);
    let mut block = BlockQ8K {
        d: 0.0,
        qs: [0; QKK],
        bsums: [0; QKK / 16],
    };
    // SAFETY (loads): x holds 256 values, read sixteen at a time.
    let load = |c: usize| unsafe { _mm512_loadu_ps(x.as_ptr().add(16 * c)) };
    let mut amax = _mm512_setzero_ps();
    for c in 0..QKK / 16 {
        amax = _mm512_max_ps(amax, _mm512_abs_ps(load(c)));
    }
    let amax = _mm512_reduce_max_ps(amax);
    if amax == 0.0 {
        return block;
    }
    // The first value whose magnitude is the largest: what the scalar loop keeps.
    let max = x.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
    let iscale = -127.0 / max;
    let (scale, top) = (_mm512_set1_ps(iscale), _mm512_set1_epi32(127));
    for c in 0..QKK / 16 {
        let q = _mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(scale, load(c))), top);
        block.bsums[c] = _mm512_reduce_add_epi32(q) as i16;
        // SAFETY: qs holds 256 bytes, written sixteen at a time.
        unsafe {
            _mm_storeu_si128(
                block.qs.as_mut_ptr().add(16 * c).cast(),
                _mm512_cvtepi32_epi8(q),
            )
        };
    }
    block.d = 1.0 / iscale;
    block
}

/// The integer quants of a 32-value block (Q4_0/Q5_0 with their offset of 8 / 16 applied,
/// Q4_1/Q5_1 unsigned, Q8_0 signed), in element order.
fn small_block_quants(dtype: DType, b: &[u8]) -> [i32; QK8] {
    let mut q = [0i32; QK8];
    match dtype {
        DType::Q8_0 => {
            for (v, &byte) in q.iter_mut().zip(&b[2..34]) {
                *v = byte as i8 as i32;
            }
        }
        DType::Q4_0 | DType::Q4_1 => {
            let (nibbles, offset) = match dtype {
                DType::Q4_0 => (&b[2..18], 8),
                _ => (&b[4..20], 0),
            };
            for j in 0..16 {
                q[j] = (nibbles[j] & 0x0f) as i32 - offset;
                q[j + 16] = (nibbles[j] >> 4) as i32 - offset;
            }
        }
        DType::Q5_0 | DType::Q5_1 => {
            let (high, nibbles, offset) = match dtype {
                DType::Q5_0 => (&b[2..6], &b[6..22], 16),
                _ => (&b[4..8], &b[8..24], 0),
            };
            let qh = u32::from_le_bytes([high[0], high[1], high[2], high[3]]);
            for j in 0..16 {
                let h0 = ((qh >> j) & 1) << 4;
                let h1 = ((qh >> (j + 16)) & 1) << 4;
                q[j] = ((nibbles[j] & 0x0f) as u32 | h0) as i32 - offset;
                q[j + 16] = ((nibbles[j] >> 4) as u32 | h1) as i32 - offset;
            }
        }
        _ => unreachable!("not a 32-value block type: {dtype:?}"),
    }
    q
}

/// Q4_K/Q5_K's eight 6-bit scales and minimums (ggml's `get_scale_min_k4`).
fn k_scales(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut m) = ([0u8; 8], [0u8; 8]);
    for j in 0..8 {
        if j < 4 {
            sc[j] = s[j] & 63;
            m[j] = s[j + 4] & 63;
        } else {
            sc[j] = (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4);
            m[j] = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        }
    }
    (sc, m)
}

/// Q4_K/Q5_K's unsigned quants in element order (4 bits, plus Q5_K's high bit).
fn k_quants(dtype: DType, b: &[u8]) -> [i32; QKK] {
    let mut q = [0i32; QKK];
    let (qh, qs): (Option<&[u8]>, &[u8]) = match dtype {
        DType::Q4_K => (None, &b[16..144]),
        _ => (Some(&b[16..48]), &b[48..176]),
    };
    for chunk in 0..4 {
        let bytes = &qs[chunk * 32..chunk * 32 + 32];
        for l in 0..32 {
            let (lo, hi) = ((bytes[l] & 0xf) as i32, (bytes[l] >> 4) as i32);
            let (i_lo, i_hi) = (chunk * 64 + l, chunk * 64 + 32 + l);
            q[i_lo] = lo;
            q[i_hi] = hi;
            if let Some(qh) = qh {
                q[i_lo] += (((qh[l] >> (2 * chunk)) & 1) as i32) << 4;
                q[i_hi] += (((qh[l] >> (2 * chunk + 1)) & 1) as i32) << 4;
            }
        }
    }
    q
}

/// Runs `f` in a function compiled for AVX2 and FMA where the CPU has them: ggml's products
/// are fused multiply-adds and its roundings single instructions, which without those
/// features are library calls (`fmaf`, `rintf`: a third of an emulated pass in `perf`).
/// `f` is inlined into the wrapper, so its body is compiled with the features.
#[inline(always)]
fn with_fma<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        unsafe fn fast<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if crate::kernels::has_avx2() {
            // SAFETY: the CPU has AVX2 and FMA (checked).
            return unsafe { fast(f) };
        }
    }
    f()
}

/// ggml's `hsum_float_8`: `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`.
#[inline(always)]
fn hsum8(l: [f32; 8]) -> f32 {
    ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
}

/// The sum of a 16-lane AVX-512 register (`_mm512_reduce_add_ps`: halves added lane by lane,
/// then [`hsum8`]), the register held as two 8-lane halves (values `l` and `l + 8`).
#[inline(always)]
fn hsum_pair(acc: [[f32; 8]; 2]) -> f32 {
    hsum8(std::array::from_fn(|l| acc[0][l] + acc[1][l]))
}

/// [`hsum_pair`] of sixteen lanes in one array.
#[inline(always)]
fn hsum16(acc: [f32; 16]) -> f32 {
    hsum8(std::array::from_fn(|l| acc[l] + acc[l + 8]))
}

/// A weight as llama.cpp's CPU kernels read it: the stored blocks decoded once into their
/// integer quants and scales (or the exact f32 values of F32/F16/BF16 weights), rows in the
/// internal order. [`BlockMatrix::matmul`] multiplies as ggml does for a prompt batch.
pub struct BlockMatrix {
    dtype: DType,
    rows: usize,
    cols: usize,
    /// Integer quants, `rows x cols` (Q4_0/Q5_0 offsets applied; Q4_1/Q5_1/Q4_K/Q5_K unsigned;
    /// Q6_K with its offset of 32 applied).
    q: Vec<i8>,
    /// Per block (32 values) or super-block (256): the scale `d` as f32.
    d: Vec<f32>,
    /// Q4_1/Q5_1: each block's minimum; Q4_K/Q5_K: each super-block's `dmin`.
    m: Vec<f32>,
    /// K-quants: sub-block scales (8 of 32 values, or Q6_K's 16 of 16) and Q4_K/Q5_K's
    /// sub-block minimums.
    sc: Vec<i16>,
    mins: Vec<i16>,
    /// F32/F16/BF16 weights: their values.
    f: Vec<f32>,
    /// The file stores the rows permuted (llama.cpp's interleaved RoPE pairs of Q and K).
    permuted: bool,
}

impl BlockMatrix {
    /// Decodes a stored weight (any type pot reads) for llama.cpp's kernels. Refuses rows that
    /// are not whole blocks of the weight type and of its input's partner type (ggml's own
    /// requirement), or bytes that do not hold the rows.
    pub fn new(w: &pot_formats::StoredRows) -> Result<Self, ScoringError> {
        let (rows, cols, dtype) = (w.rows, w.cols, w.dtype);
        let (per_block, block_bytes) = dtype.block();
        let partner = Rounding::partner_of(dtype).block().max(8);
        let bytes = (cols / per_block)
            .checked_mul(block_bytes)
            .and_then(|b| b.checked_mul(rows));
        if !cols.is_multiple_of(per_block)
            || !cols.is_multiple_of(partner)
            || bytes != Some(w.bytes.len())
        {
            return Err(ScoringError::Backend(format!(
                "a {rows} x {cols} {} weight ({} bytes) is not rows of whole {per_block}-value \
                 blocks with inputs in blocks of {partner}: llama.cpp's arithmetic cannot run it",
                dtype.name(),
                w.bytes.len(),
            )));
        }
        let mut m = BlockMatrix {
            dtype,
            rows,
            cols,
            q: Vec::new(),
            d: Vec::new(),
            m: Vec::new(),
            sc: Vec::new(),
            mins: Vec::new(),
            f: Vec::new(),
            permuted: w.order.is_some(),
        };
        let fp16 = |b: &[u8]| f16::from_le_bytes([b[0], b[1]]).to_f32();
        match dtype {
            DType::F32 | DType::F16 | DType::BF16 => {
                m.f = vec![0f32; rows * cols];
                for (r, out) in m.f.chunks_exact_mut(cols).enumerate() {
                    pot_formats::dtype::dequantize(dtype, w.row(r), out);
                }
            }
            DType::Q8_0 | DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 => {
                m.q.reserve(rows * cols);
                for r in 0..rows {
                    for b in w.row(r).chunks_exact(block_bytes) {
                        m.q.extend(small_block_quants(dtype, b).iter().map(|&v| v as i8));
                        m.d.push(fp16(&b[0..2]));
                        if matches!(dtype, DType::Q4_1 | DType::Q5_1) {
                            m.m.push(fp16(&b[2..4]));
                        }
                    }
                }
            }
            DType::Q4_K | DType::Q5_K => {
                for r in 0..rows {
                    for b in w.row(r).chunks_exact(block_bytes) {
                        m.q.extend(k_quants(dtype, b).iter().map(|&v| v as i8));
                        m.d.push(fp16(&b[0..2]));
                        m.m.push(fp16(&b[2..4]));
                        let (sc, mins) = k_scales(&b[4..16]);
                        m.sc.extend(sc.iter().map(|&v| v as i16));
                        m.mins.extend(mins.iter().map(|&v| v as i16));
                    }
                }
            }
            DType::Q6_K => {
                for r in 0..rows {
                    for b in w.row(r).chunks_exact(block_bytes) {
                        m.q.extend(q6_k_quants(b).iter().map(|&v| v as i8));
                        m.sc.extend(b[192..208].iter().map(|&v| v as i8 as i16));
                        m.d.push(fp16(&b[208..210]));
                    }
                }
            }
        }
        Ok(m)
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Whether the engine holds these rows in another order than pot (llama.cpp's interleaved
    /// RoPE pairs): its products over a head then run in that order ([`attention`]).
    pub fn permuted(&self) -> bool {
        self.permuted
    }

    /// `y[i, offset + j] = x_i · w_j (+ bias_j)` for `n` input rows, computed as ggml-cpu
    /// computes a prompt batch of `n >= 8` tokens (`ldc`: y's row stride).
    pub fn matmul(&self, x: &[f32], n: usize, bias: Option<&[f32]>, y: &mut [f32], ldc: usize) {
        assert_eq!(x.len(), n * self.cols, "{n} rows of {}", self.cols);
        let input = Input::quantize(self.dtype, x, n, self.cols);
        // Outputs in column blocks (the block's weight rows stay in cache across the inputs),
        // each computed into a buffer of the task's own, input by input, then written into its
        // columns of y: the blocks' columns are disjoint, so no two tasks write one element.
        const COLS: usize = 16;
        assert!(
            n == 0 || (n - 1) * ldc + self.rows <= y.len(),
            "y holds {n} rows of {ldc}"
        );
        assert!(bias.is_none_or(|b| b.len() >= self.rows));
        /// y's elements, shared by the tasks that write disjoint columns of it.
        struct Columns(*mut f32);
        // SAFETY: each task writes only its own columns (see above), and y outlives the tasks.
        unsafe impl Sync for Columns {}
        let y_ptr = Columns(y.as_mut_ptr());
        let y_ptr = &y_ptr;
        (0..self.rows.div_ceil(COLS)).into_par_iter().for_each_init(
            Vec::new,
            |out: &mut Vec<f32>, block| {
                let j0 = block * COLS;
                let width = COLS.min(self.rows - j0);
                out.clear();
                out.resize(width * n, 0.0);
                self.block(j0, width, &input, out);
                for (i, src) in out.chunks_exact(width).enumerate() {
                    if let Some(b) = bias {
                        src.iter()
                            .zip(&b[j0..j0 + width])
                            .enumerate()
                            .for_each(|(dj, (v, b))| {
                                // SAFETY: i * ldc + j0 + dj < y.len() (asserted above); the
                                // column j0 + dj is this task's alone.
                                unsafe { y_ptr.0.add(i * ldc + j0 + dj).write(v + b) }
                            });
                    } else {
                        // SAFETY: as above, for the `width` columns from j0 of row i.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                src.as_ptr(),
                                y_ptr.0.add(i * ldc + j0),
                                width,
                            )
                        };
                    }
                }
            },
        );
    }

    /// Outputs `j0 .. j0 + width` for every input, `out[i * width + dj]`.
    fn block(&self, j0: usize, width: usize, a: &Input, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if has_vnni()
            && matches!(
                self.dtype,
                DType::Q8_0 | DType::Q4_0 | DType::Q5_0 | DType::Q4_1 | DType::Q5_1
            )
        {
            // SAFETY: the CPU has AVX-512 VNNI on 256-bit registers (checked).
            return unsafe { self.block_small_vnni(j0, width, a, out) };
        }
        #[cfg(target_arch = "x86_64")]
        if has_vnni()
            && matches!(self.dtype, DType::F32 | DType::F16 | DType::BF16)
            && self.cols.is_multiple_of(16)
        {
            // SAFETY: the CPU has AVX-512F (checked with VNNI).
            return unsafe { self.block_f32_zmm(j0, width, a, out) };
        }
        #[cfg(target_arch = "x86_64")]
        if has_vnni() && matches!(self.dtype, DType::Q4_K | DType::Q5_K | DType::Q6_K) {
            // SAFETY: the CPU has AVX-512 VNNI with BW (checked).
            return unsafe { self.block_kquant_zmm(j0, width, a, out) };
        }
        // Inputs in chunks that stay in L1 while the block's weight rows pass over them.
        const ROWS: usize = 32;
        for i0 in (0..a.rows).step_by(ROWS) {
            for dj in 0..width {
                for i in i0..(i0 + ROWS).min(a.rows) {
                    out[i * width + dj] = self.dot(j0 + dj, a, i);
                }
            }
        }
    }

    /// [`Self::block`] for the 32-value block types in tiles of four weight rows by four
    /// inputs, the integer lanes by `vpdpbusd`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,avx512f,avx512dq,avx512vl,avx512vnni")]
    unsafe fn block_small_vnni(&self, j0: usize, width: usize, a: &Input, out: &mut [f32]) {
        let signed = self.m.is_empty();
        let repacked = self.dtype == DType::Q4_0 && self.rows.is_multiple_of(8);
        match (signed, repacked) {
            // SAFETY (each): the caller checked the CPU.
            (true, true) => unsafe { self.tiles_vnni::<true, true>(j0, width, a, out) },
            (true, false) => unsafe { self.tiles_vnni::<true, false>(j0, width, a, out) },
            _ => unsafe { self.tiles_vnni::<false, false>(j0, width, a, out) },
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,avx512f,avx512dq,avx512vl,avx512vnni")]
    unsafe fn tiles_vnni<const SIGNED: bool, const REPACKED: bool>(
        &self,
        j0: usize,
        width: usize,
        a: &Input,
        out: &mut [f32],
    ) {
        in_tiles(
            out,
            width,
            a.rows,
            |out, i, dj, rows_left| {
                // Eight rows a tile where they exist: the inputs' loads serve twice the rows.
                let rows = if REPACKED || rows_left < 8 { 4 } else { 8 };
                // SAFETY: the caller checked the CPU; rows j0 + dj .. + rows and inputs
                // i .. i + 4 exist.
                unsafe {
                    match (REPACKED, rows) {
                        (true, _) => small_tile_vnni::<4, 4, SIGNED, true>(
                            self,
                            j0 + dj,
                            a,
                            i,
                            out,
                            width,
                            dj,
                        ),
                        (false, 8) => {
                            small_tile_zmm::<8, 2, SIGNED>(self, j0 + dj, a, i, out, width, dj)
                        }
                        _ => small_tile_zmm::<4, 2, SIGNED>(self, j0 + dj, a, i, out, width, dj),
                    }
                };
                rows
            },
            // SAFETY: as above, one row by one input.
            |out, i, dj| unsafe {
                small_tile_vnni::<1, 1, SIGNED, REPACKED>(self, j0 + dj, a, i, out, width, dj)
            },
        );
    }

    /// [`Self::block`] for F32/F16/BF16 weights: tinyBLAS's sixteen-lane accumulator per
    /// output in one 512-bit register, in tiles of four weight rows by four inputs.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,avx512f")]
    unsafe fn block_f32_zmm(&self, j0: usize, width: usize, a: &Input, out: &mut [f32]) {
        in_tiles(
            out,
            width,
            a.rows,
            |out, i, dj, _| {
                // SAFETY: the caller checked the CPU; the rows and inputs exist.
                unsafe { f32_tile_zmm::<4, 4>(self, j0 + dj, a, i, out, width, dj) };
                4
            },
            // SAFETY: as above, one row by one input.
            |out, i, dj| unsafe { f32_tile_zmm::<1, 1>(self, j0 + dj, a, i, out, width, dj) },
        );
    }

    /// [`Self::block`] for K-quants in tiles of four weight rows by four inputs
    /// ([`kquant_tile_zmm`]); outputs outside whole tiles one by one ([`kquant_dot_vnni`]).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
    unsafe fn block_kquant_zmm(&self, j0: usize, width: usize, a: &Input, out: &mut [f32]) {
        in_tiles(
            out,
            width,
            a.rows,
            |out, i, dj, _| {
                // SAFETY: the caller checked the CPU; rows j0 + dj .. + 4 and inputs i .. i + 4
                // exist.
                unsafe { kquant_tile_zmm(self, j0 + dj, a, i, out, width, dj) };
                4
            },
            // SAFETY: the caller checked the CPU; only K-quants reach here.
            |out, i, dj| out[i * width + dj] = unsafe { kquant_dot_vnni(self, j0 + dj, a, i) },
        );
    }

    /// Output `j` for input row `i`: the AVX2 integer products where the CPU has them
    /// (the same integers and the same float operations as [`Self::dot_with`] on [`lanes4`]).
    fn dot(&self, j: usize, a: &Input, i: usize) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::has_avx2() {
            let k = self.cols;
            if let DType::Q8_0 | DType::Q5_0 | DType::Q4_1 | DType::Q5_1 = self.dtype {
                let nb = k / QK8;
                let mins = (!self.m.is_empty())
                    .then(|| (&self.m[j * nb..(j + 1) * nb], &a.s[i * nb..(i + 1) * nb]));
                // SAFETY: AVX2 and FMA are present (checked above); the rows hold `nb` blocks.
                return unsafe {
                    small_dot_avx2(
                        &self.q[j * k..(j + 1) * k],
                        &a.q[i * k..(i + 1) * k],
                        &self.d[j * nb..(j + 1) * nb],
                        &a.d[i * nb..(i + 1) * nb],
                        mins,
                    )
                };
            }
            if let DType::F32 | DType::F16 | DType::BF16 = self.dtype {
                // SAFETY: AVX2 and FMA are present (checked above).
                return unsafe {
                    f32_dot_avx2(&self.f[j * k..(j + 1) * k], &a.f[i * k..(i + 1) * k])
                };
            }
            if has_vnni() {
                // SAFETY: the CPU has AVX-512 VNNI (checked); only K-quants reach here.
                return unsafe { kquant_dot_vnni(self, j, a, i) };
            }
            // SAFETY: AVX2 and FMA are present (checked above).
            return unsafe { self.dot_avx2(j, a, i) };
        }
        self.dot_with(j, a, i, lanes4)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_avx2(&self, j: usize, a: &Input, i: usize) -> f32 {
        // SAFETY: the caller checked AVX2.
        self.dot_with(j, a, i, |w, x| unsafe { lanes4_avx2(w, x) })
    }

    /// Output `j` for input row `i`, by ggml's formula for this type (see the module doc);
    /// `lanes(w, x)`: the eight sums of four consecutive products of a 32-value block.
    #[inline(always)]
    fn dot_with(
        &self,
        j: usize,
        a: &Input,
        i: usize,
        lanes: impl Fn(&[i8], &[i8]) -> [i32; 8],
    ) -> f32 {
        let k = self.cols;
        match self.dtype {
            DType::F32 | DType::F16 | DType::BF16 => {
                // tinyBLAS (AVX-512): one 16-lane accumulator over the depth, then its sum.
                let (w, x) = (&self.f[j * k..(j + 1) * k], &a.f[i * k..(i + 1) * k]);
                let mut acc = [[0f32; 8]; 2];
                for (c, (w8, x8)) in w.chunks_exact(8).zip(x.chunks_exact(8)).enumerate() {
                    let acc = &mut acc[c % 2];
                    for l in 0..8 {
                        acc[l] = w8[l].mul_add(x8[l], acc[l]);
                    }
                }
                hsum_pair(acc)
            }
            DType::Q4_0 if self.rows.is_multiple_of(8) => {
                // Repacked (q4_0_8x8; any matrix of whole 8-row groups): the whole block's
                // integer dot, one accumulator.
                let nb = k / QK8;
                let mut acc = 0f32;
                for b in 0..nb {
                    let w = &self.q[j * k + b * QK8..][..QK8];
                    let x = &a.q[i * k + b * QK8..][..QK8];
                    let isum: i32 = lanes(w, x).iter().sum();
                    let dd = self.d[j * nb + b] * a.d[i * nb + b];
                    acc = (isum as f32).mul_add(dd, acc);
                }
                acc
            }
            DType::Q8_0 | DType::Q4_0 | DType::Q5_0 | DType::Q4_1 | DType::Q5_1 => {
                // vec_dot (and tinyBLAS, bit-identical): eight lanes of four products per
                // block, each scaled into its lane, then the horizontal sum; Q4_1/Q5_1 add
                // their minimums times the input's fp16 block sums after it.
                let nb = k / QK8;
                let mut acc = [0f32; 8];
                let mut summs = 0f32;
                for b in 0..nb {
                    let w = &self.q[j * k + b * QK8..][..QK8];
                    let x = &a.q[i * k + b * QK8..][..QK8];
                    let dd = self.d[j * nb + b] * a.d[i * nb + b];
                    let s = lanes(w, x);
                    for l in 0..8 {
                        acc[l] = dd.mul_add(s[l] as f32, acc[l]);
                    }
                    if !self.m.is_empty() {
                        summs = self.m[j * nb + b].mul_add(a.s[i * nb + b], summs);
                    }
                }
                hsum8(acc) + summs
            }
            DType::Q4_K | DType::Q5_K | DType::Q6_K => {
                let nb = k / QKK;
                let (mut acc, mut acc_min) = (0f32, 0f32);
                for b in 0..nb {
                    let w = &self.q[j * k + b * QKK..][..QKK];
                    let x = &a.q[i * k + b * QKK..][..QKK];
                    let da = a.d[i * nb + b];
                    let bsums = &a.bsums[(i * nb + b) * 16..][..16];
                    let dw = self.d[j * nb + b];
                    if self.dtype == DType::Q6_K {
                        let sc = &self.sc[(j * nb + b) * 16..][..16];
                        let mut s1 = 0i32;
                        for pair in 0..8 {
                            let l =
                                lanes(&w[pair * 32..pair * 32 + 32], &x[pair * 32..pair * 32 + 32]);
                            let (lo, hi) = (l[..4].iter().sum::<i32>(), l[4..].iter().sum::<i32>());
                            s1 += sc[2 * pair] as i32 * lo + sc[2 * pair + 1] as i32 * hi;
                        }
                        // Tiled kernel: res = d_w·s1, then buf = fma(res, d_a, buf).
                        acc = (dw * s1 as f32).mul_add(da, acc);
                        continue;
                    }
                    let sc = &self.sc[(j * nb + b) * 8..][..8];
                    let mins = &self.mins[(j * nb + b) * 8..][..8];
                    // Per pair of sub-blocks (64 values): the scale and minimum terms.
                    let mut p1 = [0i32; 4];
                    let mut p2 = [0i32; 4];
                    for sub in 0..8 {
                        let dot: i32 =
                            lanes(&w[sub * 32..sub * 32 + 32], &x[sub * 32..sub * 32 + 32])
                                .iter()
                                .sum();
                        p1[sub / 2] += sc[sub] as i32 * dot;
                        p2[sub / 2] +=
                            mins[sub] as i32 * (bsums[2 * sub] as i32 + bsums[2 * sub + 1] as i32);
                    }
                    let path = KPath::of(self, a, i);
                    let sums = if path == KPath::Gemm {
                        KSums::Pairs(p1, p2)
                    } else {
                        KSums::Whole(p1.iter().sum(), p2.iter().sum())
                    };
                    fold_k_super_block(
                        path,
                        sums,
                        (dw, self.m[j * nb + b]),
                        da,
                        (&mut acc, &mut acc_min),
                    );
                }
                acc - acc_min
            }
        }
    }
}

/// Which of ggml's Q4_K/Q5_K kernels computes an output: the repacked AVX-512 gemm (Q4_K in
/// whole 8-row groups, inputs in groups of four rows), the repacked gemv (the inputs left over)
/// or the tiled kernel (Q5_K, and Q4_K without whole groups).
#[derive(Clone, Copy, PartialEq, Eq)]
enum KPath {
    Gemm,
    Gemv,
    Tiled,
}

impl KPath {
    fn of(m: &BlockMatrix, a: &Input, i: usize) -> Self {
        if m.dtype != DType::Q4_K || !m.rows.is_multiple_of(8) {
            KPath::Tiled
        } else if i < a.rows - a.rows % 4 {
            KPath::Gemm
        } else {
            KPath::Gemv
        }
    }
}

/// A K-quant super-block's exact integer sums: the scale term and the minimum term, per pair
/// of sub-blocks (what the gemm needs) or whole.
enum KSums {
    Pairs([i32; 4], [i32; 4]),
    Whole(i32, i32),
}

/// ggml's float operations for one Q4_K/Q5_K super-block, from its integer sums, the weight's
/// `(d, dmin)` and the input's `d`: the gemm adds every 64 values into a scale accumulator and
/// a minimum accumulator (subtracted at the end), the gemv every super-block, the tiled kernel
/// fuses `d·s1 - dmin·s2` and scales it into one accumulator. Shared by every integer path, so
/// they differ only in how they get the integers.
#[inline(always)]
fn fold_k_super_block(
    path: KPath,
    sums: KSums,
    (dw, dmin): (f32, f32),
    da: f32,
    (acc, acc_min): (&mut f32, &mut f32),
) {
    match (path, sums) {
        (KPath::Gemm, KSums::Pairs(p1, p2)) => {
            for pair in 0..4 {
                *acc = (p1[pair] as f32).mul_add(dw * da, *acc);
                *acc_min = (p2[pair] as f32).mul_add(dmin * da, *acc_min);
            }
        }
        (KPath::Gemv, KSums::Whole(s1, s2)) => {
            *acc = (s1 as f32).mul_add(dw * da, *acc);
            *acc_min = (s2 as f32).mul_add(dmin * da, *acc_min);
        }
        (KPath::Tiled, KSums::Whole(s1, s2)) => {
            let res = (-dmin).mul_add(s2 as f32, dw * s1 as f32);
            *acc = res.mul_add(da, *acc);
        }
        _ => unreachable!("the gemm folds pairs of sub-blocks, the others whole super-blocks"),
    }
}

/// Visits a column block's outputs `out` (`width` weight rows by `inputs` inputs): in groups of
/// four inputs, `tile(out, i, dj, rows_left)` computes a tile at rows `dj ..` and says how many
/// rows it took (at most `rows_left`, a multiple of four); the outputs outside whole tiles go
/// to `one(out, i, dj)`. The one walk of every tiled kernel.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn in_tiles(
    out: &mut [f32],
    width: usize,
    inputs: usize,
    mut tile: impl FnMut(&mut [f32], usize, usize, usize) -> usize,
    mut one: impl FnMut(&mut [f32], usize, usize),
) {
    let (full_j, full_i) = (width - width % 4, inputs - inputs % 4);
    for i in (0..full_i).step_by(4) {
        let mut dj = 0;
        while dj < full_j {
            dj += tile(out, i, dj, full_j - dj);
        }
    }
    for i in 0..inputs {
        let dj0 = if i < full_i { full_j } else { 0 };
        for dj in dj0..width {
            one(out, i, dj);
        }
    }
}

/// Whether the CPU has AVX-512 VNNI (`vpdpbusd`), with the F, BW, DQ and VL subsets the
/// 512-bit kernels and quantisers use, AVX2 and FMA:
/// the integer lanes in one instruction. Integer sums are exact, so they give the same lanes
/// as ggml's `maddubs`/`madd`; the float operations stay ggml's.
#[cfg(target_arch = "x86_64")]
fn has_vnni() -> bool {
    static VNNI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *VNNI.get_or_init(|| {
        crate::kernels::has_avx2()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512dq")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni")
    })
}

/// `R x C` outputs of a 32-value block type (weight rows `j ..`, inputs `i ..`), written to
/// `out[(i + c) * width + dj + r]`: per block, ggml's eight integer lanes (`vpdpbusd` on the
/// weights offset to unsigned, minus 128 times the inputs' sums), one `fma` of the scale
/// product per lane, then [`hsum8`] plus the minimums' sum; repacked Q4_0 sums the block's
/// lanes and keeps one scalar accumulator. The same operations as [`BlockMatrix::dot_with`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
// A register tile indexes its accumulators, inputs and weights by the same row and input.
#[allow(clippy::needless_range_loop)]
unsafe fn small_tile_vnni<
    const R: usize,
    const C: usize,
    const SIGNED: bool,
    const REPACKED: bool,
>(
    m: &BlockMatrix,
    j: usize,
    a: &Input,
    i: usize,
    out: &mut [f32],
    width: usize,
    dj: usize,
) {
    use std::arch::x86_64::*;
    let k = m.cols;
    let nb = k / QK8;
    assert!((j + R) * k <= m.q.len() && (i + C) * k <= a.q.len());
    assert!((j + R) * nb <= m.d.len() && (i + C) * nb <= a.d.len());
    assert!((i + C - 1) * width + dj + R <= out.len());
    debug_assert_eq!(SIGNED, m.m.is_empty());
    debug_assert_eq!(REPACKED, m.dtype == DType::Q4_0 && m.rows.is_multiple_of(8));
    let zero = _mm256_setzero_si256();
    let flip = _mm256_set1_epi8(-128);
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let mut scalar = [[0f32; C]; R];
    for b in 0..nb {
        let mut xv = [zero; C];
        let mut corr = [zero; C];
        let mut xd = [0f32; C];
        let mut xdv = [_mm256_setzero_ps(); C];
        for c in 0..C {
            // SAFETY: block b of input i + c lies inside a.q and a.d (asserted above).
            unsafe {
                xv[c] = _mm256_loadu_si256(a.q.as_ptr().add((i + c) * k + b * QK8).cast());
                xd[c] = *a.d.get_unchecked((i + c) * nb + b);
            }
            xdv[c] = _mm256_set1_ps(xd[c]);
            if SIGNED {
                corr[c] = _mm256_sub_epi32(zero, _mm256_dpbusd_epi32(zero, flip, xv[c]));
            }
        }
        for r in 0..R {
            // SAFETY: block b of row j + r lies inside m.q and m.d (asserted above).
            let (mut wv, wd) = unsafe {
                (
                    _mm256_loadu_si256(m.q.as_ptr().add((j + r) * k + b * QK8).cast()),
                    *m.d.get_unchecked((j + r) * nb + b),
                )
            };
            if SIGNED {
                wv = _mm256_xor_si256(wv, flip);
            }
            let wdv = _mm256_set1_ps(wd);
            for c in 0..C {
                let lanes = _mm256_dpbusd_epi32(corr[c], wv, xv[c]);
                if REPACKED {
                    let isum = hsum_i32(lanes);
                    scalar[r][c] = (isum as f32).mul_add(wd * xd[c], scalar[r][c]);
                } else {
                    // The scale product in every lane: the same rounding as ggml's scalar one.
                    acc[r][c] = _mm256_fmadd_ps(
                        _mm256_mul_ps(wdv, xdv[c]),
                        _mm256_cvtepi32_ps(lanes),
                        acc[r][c],
                    );
                }
            }
        }
    }
    for r in 0..R {
        for c in 0..C {
            let value = if REPACKED {
                scalar[r][c]
            } else {
                let mut lanes = [0f32; 8];
                // SAFETY: the array holds eight f32 (an unaligned store).
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc[r][c]) };
                let mut summs = 0f32;
                if !SIGNED {
                    let (wm, xs) = (&m.m[(j + r) * nb..][..nb], &a.s[(i + c) * nb..][..nb]);
                    for b in 0..nb {
                        summs = wm[b].mul_add(xs[b], summs);
                    }
                }
                hsum8(lanes) + summs
            };
            out[(i + c) * width + dj + r] = value;
        }
    }
}

/// Output `j` for input `i` of a K-quant weight (Q4_K, Q5_K, Q6_K): per sub-block ggml's i16
/// pair products (`maddubs`) times the sub-block scales summed into i32 lanes (`vpdpwssd`,
/// the `madd` and `add` of ggml in one), exact integers, then ggml's float operations per
/// super-block as [`BlockMatrix::dot_with`] does them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512vnni")]
unsafe fn kquant_dot_vnni(m: &BlockMatrix, j: usize, a: &Input, i: usize) -> f32 {
    use std::arch::x86_64::*;
    let k = m.cols;
    let nb = k / QKK;
    assert!((j + 1) * k <= m.q.len() && (i + 1) * k <= a.q.len());
    assert!((j + 1) * nb <= m.d.len() && (i + 1) * nb <= a.d.len());
    assert!((i + 1) * nb * 16 <= a.bsums.len());
    let q6 = m.dtype == DType::Q6_K;
    assert!((j + 1) * nb * if q6 { 16 } else { 8 } <= m.sc.len());
    let path = KPath::of(m, a, i);
    let zero = _mm256_setzero_si256();
    let (mut acc, mut acc_min) = (0f32, 0f32);
    for b in 0..nb {
        // SAFETY (loads below): super-block b of row j and of input i lie inside m.q and a.q
        // (asserted above); each load reads 32 of its 256 bytes.
        let w = unsafe { m.q.as_ptr().add(j * k + b * QKK) };
        let x = unsafe { a.q.as_ptr().add(i * k + b * QKK) };
        let load = |p: *const i8, sub: usize| unsafe { _mm256_loadu_si256(p.add(sub * 32).cast()) };
        let da = a.d[i * nb + b];
        let dw = m.d[j * nb + b];
        if q6 {
            // Quants offset to unsigned (+32) as ggml holds them, the offset's products
            // subtracted; one scale per 16 values.
            let sc = &m.sc[(j * nb + b) * 16..][..16];
            let (off, mut s) = (_mm256_set1_epi8(32), zero);
            for pair in 0..8 {
                let xv = load(x, pair);
                let wv = _mm256_add_epi8(load(w, pair), off);
                let p =
                    _mm256_sub_epi16(_mm256_maddubs_epi16(wv, xv), _mm256_maddubs_epi16(off, xv));
                let scales = _mm256_set_m128i(
                    _mm_set1_epi16(sc[2 * pair + 1]),
                    _mm_set1_epi16(sc[2 * pair]),
                );
                s = _mm256_dpwssd_epi32(s, p, scales);
            }
            let s1 = hsum_i32(s);
            acc = (dw * s1 as f32).mul_add(da, acc);
            continue;
        }
        let sc = &m.sc[(j * nb + b) * 8..][..8];
        let mins = &m.mins[(j * nb + b) * 8..][..8];
        let bsums = &a.bsums[(i * nb + b) * 16..][..16];
        let s2_of =
            |sub: usize| mins[sub] as i32 * (bsums[2 * sub] as i32 + bsums[2 * sub + 1] as i32);
        let scaled = |sub: usize, s: __m256i| {
            let p = _mm256_maddubs_epi16(load(w, sub), load(x, sub));
            _mm256_dpwssd_epi32(s, p, _mm256_set1_epi16(sc[sub]))
        };
        let dmin = m.m[j * nb + b];
        let sums = if path == KPath::Gemm {
            let p1 =
                std::array::from_fn(|pair| hsum_i32(scaled(2 * pair + 1, scaled(2 * pair, zero))));
            let p2 = std::array::from_fn(|pair| s2_of(2 * pair) + s2_of(2 * pair + 1));
            KSums::Pairs(p1, p2)
        } else {
            let mut s = zero;
            for sub in 0..8 {
                s = scaled(sub, s);
            }
            KSums::Whole(hsum_i32(s), (0..8).map(s2_of).sum())
        };
        fold_k_super_block(path, sums, (dw, dmin), da, (&mut acc, &mut acc_min));
    }
    acc - acc_min
}

/// Sixteen exact integer sums, one per lane, from `acc[r][cp]` (weight row `r`, inputs
/// `2 cp` and `2 cp + 1` in the low and high 256 bits, eight lanes each): lane `4 c + r` holds
/// row `r`'s sum for input `c`. Integer adds in a tree (exact in any order).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn reduce_tile(acc: &[[std::arch::x86_64::__m512i; 2]; 4]) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    let half = |cp: usize| {
        // Per 128-bit chunk: [r0, r1] interleaved partial sums, then [r0, r1, r2, r3].
        let pair = |a: __m512i, b: __m512i| {
            _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b))
        };
        let (t01, t23) = (pair(acc[0][cp], acc[1][cp]), pair(acc[2][cp], acc[3][cp]));
        _mm512_add_epi32(
            _mm512_unpacklo_epi64(t01, t23),
            _mm512_unpackhi_epi64(t01, t23),
        )
    };
    let (y0, y1) = (half(0), half(1));
    // Chunks 0+1 are input 2 cp, chunks 2+3 input 2 cp + 1.
    _mm512_add_epi32(
        _mm512_shuffle_i32x4(y0, y1, 0b10_00_10_00),
        _mm512_shuffle_i32x4(y0, y1, 0b11_01_11_01),
    )
}

/// Four weight rows (`j ..`) by four inputs (`i ..`) of a K-quant, written to
/// `out[(i + c) * width + dj + r]`: per sub-block of 32, `vpmaddubsw` of the weight's quants
/// and the input's (two inputs per 512-bit register) and `vpdpwssd` by the sub-block's scale;
/// the exact sums reduced to one lane per output ([`reduce_tile`]) per pair of sub-blocks (the
/// Q4_K gemm) or per super-block; the minimums' term by `vpmaddwd` of the row's minimums and
/// the input's sums of 32. Then ggml's float steps of [`fold_k_super_block`] on sixteen lanes
/// at once: lane by lane the same operations in the same order as [`BlockMatrix::dot_with`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
// A register tile indexes its accumulators, inputs and weights by the same row and input.
#[allow(clippy::needless_range_loop)]
unsafe fn kquant_tile_zmm(
    m: &BlockMatrix,
    j: usize,
    a: &Input,
    i: usize,
    out: &mut [f32],
    width: usize,
    dj: usize,
) {
    use std::arch::x86_64::*;
    const R: usize = 4;
    const C: usize = 4;
    let k = m.cols;
    let nb = k / QKK;
    let q6 = m.dtype == DType::Q6_K;
    let per_scale = if q6 { 16 } else { 8 };
    assert!((j + R) * k <= m.q.len() && (i + C) * k <= a.q.len());
    assert!((j + R) * nb <= m.d.len() && (i + C) * nb <= a.d.len());
    assert!((j + R) * nb * per_scale <= m.sc.len() && (i + C) * nb * 16 <= a.bsums.len());
    assert!(q6 || ((j + R) * nb * 8 <= m.mins.len() && (j + R) * nb <= m.m.len()));
    assert!((i + C - 1) * width + dj + R <= out.len());
    let path = if q6 { KPath::Tiled } else { KPath::of(m, a, i) };
    debug_assert!(path == KPath::Tiled || KPath::of(m, a, i + C - 1) == path);
    let zero = _mm512_setzero_si512();
    let off = _mm512_set1_epi8(32);
    // Lane 4 c + r: row r's value broadcast over the inputs, input c's over the rows.
    let rows_f = |v: &[f32]| {
        let x = _mm_setr_ps(v[j * nb], v[(j + 1) * nb], v[(j + 2) * nb], v[(j + 3) * nb]);
        _mm512_broadcast_f32x4(x)
    };
    let inputs_f = |v: &[f32]| {
        let x = _mm_setr_ps(v[i * nb], v[(i + 1) * nb], v[(i + 2) * nb], v[(i + 3) * nb]);
        _mm512_permutexvar_ps(
            _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
            _mm512_castps128_ps512(x),
        )
    };
    let (mut acc, mut acc_min) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    for b in 0..nb {
        let dw = rows_f(&m.d[b..]);
        let da = inputs_f(&a.d[b..]);
        // The minimums' term per pair of sub-blocks, lane 4 c + r, as `p2` of the scalar
        // code: min(2p) * sum32(2p) + min(2p + 1) * sum32(2p + 1).
        let mut p2 = [zero; 4];
        let mut dmin = _mm512_setzero_ps();
        if !q6 {
            dmin = rows_f(&m.m[b..]);
            // Chunk c: input c's eight sums of 32 quants (sums of 16 added in pairs).
            let mut sums = zero;
            for c in 0..C {
                // SAFETY: super-block b of input i + c has sixteen sums (asserted above).
                let s16 = unsafe {
                    _mm256_loadu_si256(a.bsums.as_ptr().add(((i + c) * nb + b) * 16).cast())
                };
                let s32 = _mm256_cvtepi32_epi16(_mm256_madd_epi16(s16, _mm256_set1_epi16(1)));
                sums = _mm512_mask_broadcast_i32x4(sums, 0xf << (4 * c), s32);
            }
            // Per row: chunk c = [p2(pair 0 .. 3)] for input c; then a 4 x 4 transpose per
            // chunk puts row r in lane r.
            let per_row: [__m512i; R] = std::array::from_fn(|r| {
                // SAFETY: super-block b of row j + r has eight minimums (asserted above).
                let mins =
                    unsafe { _mm_loadu_si128(m.mins.as_ptr().add(((j + r) * nb + b) * 8).cast()) };
                _mm512_madd_epi16(_mm512_broadcast_i32x4(mins), sums)
            });
            let t0 = _mm512_unpacklo_epi32(per_row[0], per_row[1]);
            let t1 = _mm512_unpackhi_epi32(per_row[0], per_row[1]);
            let t2 = _mm512_unpacklo_epi32(per_row[2], per_row[3]);
            let t3 = _mm512_unpackhi_epi32(per_row[2], per_row[3]);
            p2 = [
                _mm512_unpacklo_epi64(t0, t2),
                _mm512_unpackhi_epi64(t0, t2),
                _mm512_unpacklo_epi64(t1, t3),
                _mm512_unpackhi_epi64(t1, t3),
            ];
        }
        let mut isum = [[zero; 2]; R];
        for sub in 0..8 {
            let mut xv = [zero; 2];
            let mut corr = [zero; 2];
            for cp in 0..2 {
                let (c0, c1) = (i + 2 * cp, i + 2 * cp + 1);
                // SAFETY: sub-block `sub` of super-block b of inputs c0 and c1 lies inside a.q.
                unsafe {
                    let x0 =
                        _mm256_loadu_si256(a.q.as_ptr().add(c0 * k + b * QKK + sub * 32).cast());
                    let x1 =
                        _mm256_loadu_si256(a.q.as_ptr().add(c1 * k + b * QKK + sub * 32).cast());
                    xv[cp] = _mm512_inserti64x4(_mm512_castsi256_si512(x0), x1, 1);
                }
                if q6 {
                    corr[cp] = _mm512_maddubs_epi16(off, xv[cp]);
                }
            }
            for r in 0..R {
                let row = (j + r) * nb + b;
                // SAFETY: sub-block `sub` of super-block b of row j + r lies inside m.q.
                let mut wv = unsafe {
                    _mm512_broadcast_i64x4(_mm256_loadu_si256(
                        m.q.as_ptr().add((j + r) * k + b * QKK + sub * 32).cast(),
                    ))
                };
                let scale = if q6 {
                    wv = _mm512_add_epi8(wv, off);
                    let (lo, hi) = (m.sc[row * 16 + 2 * sub], m.sc[row * 16 + 2 * sub + 1]);
                    _mm512_broadcast_i64x4(_mm256_set_m128i(_mm_set1_epi16(hi), _mm_set1_epi16(lo)))
                } else {
                    _mm512_set1_epi16(m.sc[row * 8 + sub])
                };
                for cp in 0..2 {
                    let mut p = _mm512_maddubs_epi16(wv, xv[cp]);
                    if q6 {
                        p = _mm512_sub_epi16(p, corr[cp]);
                    }
                    isum[r][cp] = _mm512_dpwssd_epi32(isum[r][cp], p, scale);
                }
            }
            if path == KPath::Gemm && sub % 2 == 1 {
                let p1 = _mm512_cvtepi32_ps(reduce_tile(&isum));
                acc = _mm512_fmadd_ps(p1, _mm512_mul_ps(dw, da), acc);
                acc_min = _mm512_fmadd_ps(
                    _mm512_cvtepi32_ps(p2[sub / 2]),
                    _mm512_mul_ps(dmin, da),
                    acc_min,
                );
                isum = [[zero; 2]; R];
            }
        }
        if path == KPath::Gemm {
            continue;
        }
        let s1 = _mm512_cvtepi32_ps(reduce_tile(&isum));
        if q6 {
            acc = _mm512_fmadd_ps(_mm512_mul_ps(dw, s1), da, acc);
        } else {
            let s2 = _mm512_add_epi32(
                _mm512_add_epi32(p2[0], p2[1]),
                _mm512_add_epi32(p2[2], p2[3]),
            );
            let res = _mm512_fnmadd_ps(dmin, _mm512_cvtepi32_ps(s2), _mm512_mul_ps(dw, s1));
            acc = _mm512_fmadd_ps(res, da, acc);
        }
    }
    let mut lanes = [0f32; 16];
    // SAFETY: the array holds sixteen f32 (an unaligned store).
    unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), _mm512_sub_ps(acc, acc_min)) };
    for c in 0..C {
        for r in 0..R {
            out[(i + c) * width + dj + r] = lanes[4 * c + r];
        }
    }
}

/// [`small_tile_vnni`] (not repacked) with two inputs per 512-bit register: `R` weight rows
/// by `2 CP` inputs, each lane still one (row, input, lane) of ggml's accumulators, so the
/// same operations in the same order, in half the instructions.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512dq,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
// A register tile indexes its accumulators, inputs and weights by the same row and input.
#[allow(clippy::needless_range_loop)]
unsafe fn small_tile_zmm<const R: usize, const CP: usize, const SIGNED: bool>(
    m: &BlockMatrix,
    j: usize,
    a: &Input,
    i: usize,
    out: &mut [f32],
    width: usize,
    dj: usize,
) {
    use std::arch::x86_64::*;
    let k = m.cols;
    let nb = k / QK8;
    let c_all = 2 * CP;
    assert!((j + R) * k <= m.q.len() && (i + c_all) * k <= a.q.len());
    assert!((j + R) * nb <= m.d.len() && (i + c_all) * nb <= a.d.len());
    assert!((i + c_all - 1) * width + dj + R <= out.len());
    let zero = _mm512_setzero_si512();
    let flip = _mm512_set1_epi8(-128);
    let mut acc = [[_mm512_setzero_ps(); CP]; R];
    for b in 0..nb {
        let mut xv = [zero; CP];
        let mut corr = [zero; CP];
        let mut xd = [_mm512_setzero_ps(); CP];
        for cp in 0..CP {
            let (c0, c1) = (i + 2 * cp, i + 2 * cp + 1);
            // SAFETY: block b of inputs c0 and c1 lies inside a.q and a.d (asserted above).
            unsafe {
                let x0 = _mm256_loadu_si256(a.q.as_ptr().add(c0 * k + b * QK8).cast());
                let x1 = _mm256_loadu_si256(a.q.as_ptr().add(c1 * k + b * QK8).cast());
                xv[cp] = _mm512_inserti64x4(_mm512_castsi256_si512(x0), x1, 1);
                let d0 = _mm256_set1_ps(*a.d.get_unchecked(c0 * nb + b));
                let d1 = _mm256_set1_ps(*a.d.get_unchecked(c1 * nb + b));
                xd[cp] = _mm512_insertf32x8(_mm512_castps256_ps512(d0), d1, 1);
            }
            if SIGNED {
                corr[cp] = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, flip, xv[cp]));
            }
        }
        for r in 0..R {
            // SAFETY: block b of row j + r lies inside m.q and m.d (asserted above).
            let (mut wv, wd) = unsafe {
                (
                    _mm512_broadcast_i64x4(_mm256_loadu_si256(
                        m.q.as_ptr().add((j + r) * k + b * QK8).cast(),
                    )),
                    _mm512_set1_ps(*m.d.get_unchecked((j + r) * nb + b)),
                )
            };
            if SIGNED {
                wv = _mm512_xor_si512(wv, flip);
            }
            for cp in 0..CP {
                let lanes = _mm512_dpbusd_epi32(corr[cp], wv, xv[cp]);
                acc[r][cp] = _mm512_fmadd_ps(
                    _mm512_mul_ps(wd, xd[cp]),
                    _mm512_cvtepi32_ps(lanes),
                    acc[r][cp],
                );
            }
        }
    }
    for r in 0..R {
        for cp in 0..CP {
            let mut lanes = [0f32; 16];
            // SAFETY: the array holds sixteen f32 (an unaligned store).
            unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), acc[r][cp]) };
            for half in 0..2 {
                let c = 2 * cp + half;
                let mut summs = 0f32;
                if !SIGNED {
                    let (wm, xs) = (&m.m[(j + r) * nb..][..nb], &a.s[(i + c) * nb..][..nb]);
                    for b in 0..nb {
                        summs = wm[b].mul_add(xs[b], summs);
                    }
                }
                let l: [f32; 8] = lanes[8 * half..8 * half + 8].try_into().unwrap();
                out[(i + c) * width + dj + r] = hsum8(l) + summs;
            }
        }
    }
}

/// `R x C` outputs of an F32/F16/BF16 weight in 512-bit registers: one sixteen-lane `fma`
/// accumulator per output over the depth, then [`hsum_pair`] (tinyBLAS's AVX-512 kernel;
/// the same operations as [`BlockMatrix::dot_with`]). Needs `cols` a multiple of 16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f")]
// A register tile indexes its accumulators, inputs and weights by the same row and input.
#[allow(clippy::needless_range_loop)]
unsafe fn f32_tile_zmm<const R: usize, const C: usize>(
    m: &BlockMatrix,
    j: usize,
    a: &Input,
    i: usize,
    out: &mut [f32],
    width: usize,
    dj: usize,
) {
    use std::arch::x86_64::*;
    let k = m.cols;
    assert!(k.is_multiple_of(16) && (j + R) * k <= m.f.len() && (i + C) * k <= a.f.len());
    assert!((i + C - 1) * width + dj + R <= out.len());
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    for c16 in (0..k).step_by(16) {
        let mut xv = [_mm512_setzero_ps(); C];
        for c in 0..C {
            // SAFETY: values c16 .. c16 + 16 of input i + c lie inside a.f (asserted above).
            xv[c] = unsafe { _mm512_loadu_ps(a.f.as_ptr().add((i + c) * k + c16)) };
        }
        for r in 0..R {
            // SAFETY: values c16 .. c16 + 16 of row j + r lie inside m.f (asserted above).
            let wv = unsafe { _mm512_loadu_ps(m.f.as_ptr().add((j + r) * k + c16)) };
            for c in 0..C {
                acc[r][c] = _mm512_fmadd_ps(wv, xv[c], acc[r][c]);
            }
        }
    }
    for r in 0..R {
        for c in 0..C {
            let mut lanes = [0f32; 16];
            // SAFETY: the array holds sixteen f32 (an unaligned store).
            unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), acc[r][c]) };
            let (lo, hi) = lanes.split_at(8);
            out[(i + c) * width + dj + r] =
                hsum_pair([lo.try_into().unwrap(), hi.try_into().unwrap()]);
        }
    }
}

/// The sum of eight i32 lanes (exact).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn hsum_i32(v: std::arch::x86_64::__m256i) -> i32 {
    use std::arch::x86_64::*;
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}

/// The eight sums of four consecutive products of a 32-value block (ggml's integer lanes:
/// `maddubs` then `madd` with ones); exact integers.
fn lanes4(w: &[i8], x: &[i8]) -> [i32; 8] {
    std::array::from_fn(|l| {
        (0..4)
            .map(|t| w[4 * l + t] as i32 * x[4 * l + t] as i32)
            .sum()
    })
}

/// [`lanes4`] with AVX2 (ggml's sign trick: `|w|` times `x` carrying `w`'s sign; no
/// saturation, as `|w|, |x| <= 127`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn lanes4_avx2(w: &[i8], x: &[i8]) -> [i32; 8] {
    use std::arch::x86_64::*;
    assert!(w.len() >= 32 && x.len() >= 32);
    // SAFETY: both slices hold at least 32 bytes (asserted); unaligned loads.
    unsafe {
        let w = _mm256_loadu_si256(w.as_ptr() as *const __m256i);
        let x = _mm256_loadu_si256(x.as_ptr() as *const __m256i);
        let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
        let sums = _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
        std::mem::transmute::<__m256i, [i32; 8]>(sums)
    }
}

/// [`BlockMatrix::dot_with`] for the 32-value block types (Q8_0, Q5_0, Q4_1, Q5_1) in AVX2
/// registers, as ggml's `vec_dot` holds them: the same integer lanes, the same `fma` per block
/// and lane, then [`hsum8`] and the minimums' sum (their tests compare the two to the bit).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn small_dot_avx2(
    w: &[i8],
    x: &[i8],
    wd: &[f32],
    xd: &[f32],
    mins: Option<(&[f32], &[f32])>,
) -> f32 {
    use std::arch::x86_64::*;
    let nb = wd.len();
    assert!(w.len() >= nb * QK8 && x.len() >= nb * QK8 && xd.len() >= nb);
    let mut acc = _mm256_setzero_ps();
    let ones = _mm256_set1_epi16(1);
    for b in 0..nb {
        // SAFETY: block b's 32 bytes lie inside both rows (asserted above); unaligned loads.
        let (wv, xv) = unsafe {
            (
                _mm256_loadu_si256(w.as_ptr().add(b * QK8) as *const __m256i),
                _mm256_loadu_si256(x.as_ptr().add(b * QK8) as *const __m256i),
            )
        };
        let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
        let lanes = _mm256_madd_epi16(pairs, ones);
        acc = _mm256_fmadd_ps(
            _mm256_set1_ps(wd[b] * xd[b]),
            _mm256_cvtepi32_ps(lanes),
            acc,
        );
    }
    let mut lanes = [0f32; 8];
    // SAFETY: the array holds eight f32 (an unaligned store).
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
    let acc = lanes;
    let mut summs = 0f32;
    if let Some((m, s)) = mins {
        for b in 0..nb {
            summs = m[b].mul_add(s[b], summs);
        }
    }
    hsum8(acc) + summs
}

/// tinyBLAS's AVX-512 f32 product (one 16-lane accumulator, [`hsum_pair`]) in two AVX2
/// registers: the same `fma` per value and lane, so the same bits as [`BlockMatrix::dot_with`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn f32_dot_avx2(w: &[f32], x: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    assert!(w.len() == x.len() && w.len().is_multiple_of(8));
    let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for c in 0..w.len() / 8 {
        // SAFETY: values 8c..8c+8 lie inside both slices (asserted above).
        let (wv, xv) = unsafe {
            (
                _mm256_loadu_ps(w.as_ptr().add(8 * c)),
                _mm256_loadu_ps(x.as_ptr().add(8 * c)),
            )
        };
        if c % 2 == 0 {
            lo = _mm256_fmadd_ps(wv, xv, lo);
        } else {
            hi = _mm256_fmadd_ps(wv, xv, hi);
        }
    }
    let (mut l, mut h) = ([0f32; 8], [0f32; 8]);
    // SAFETY: each array holds eight f32 (unaligned stores).
    unsafe {
        _mm256_storeu_ps(l.as_mut_ptr(), lo);
        _mm256_storeu_ps(h.as_mut_ptr(), hi);
    }
    hsum_pair([l, h])
}

/// A batch's inputs converted to a weight type's partner (`vec_dot_type`).
struct Input {
    rows: usize,
    /// F32/F16/BF16 weights: the inputs (rounded to f16 / bf16 for those weights).
    f: Vec<f32>,
    q: Vec<i8>,
    d: Vec<f32>,
    /// Q8_1's fp16 block sums.
    s: Vec<f32>,
    /// Q8_K's sums of 16 quants.
    bsums: Vec<i16>,
}

impl Input {
    fn quantize(dtype: DType, x: &[f32], n: usize, cols: usize) -> Self {
        let mut input = Input {
            rows: n,
            f: Vec::new(),
            q: Vec::with_capacity(x.len()),
            d: Vec::new(),
            s: Vec::new(),
            bsums: Vec::new(),
        };
        with_fma(
            #[inline(always)]
            || match Rounding::partner_of(dtype) {
                Rounding::None => input.f = x.to_vec(),
                Rounding::F16 => input.f = x.iter().map(|&v| f16::from_f32(v).to_f32()).collect(),
                Rounding::Bf16 => input.f = x.iter().map(|&v| bf16::from_f32(v).to_f32()).collect(),
                Rounding::Q8_0 | Rounding::Q8_1 => {
                    let blocks: Vec<BlockQ8> = x
                        .par_chunks_exact(QK8)
                        .map(|b| with_fma(|| quantize_q8_0(b)))
                        .collect();
                    for q in blocks {
                        input.q.extend_from_slice(&q.qs);
                        input.d.push(q.d.to_f32());
                        input.s.push(q.s.to_f32());
                    }
                }
                Rounding::Q8K => {
                    let blocks: Vec<BlockQ8K> = x
                        .par_chunks_exact(QKK)
                        .map(|b| with_fma(|| quantize_q8_k(b)))
                        .collect();
                    for q in blocks {
                        input.q.extend_from_slice(&q.qs);
                        input.d.push(q.d);
                        input.bsums.extend_from_slice(&q.bsums);
                    }
                }
            },
        );
        debug_assert_eq!(x.len(), n * cols);
        input
    }
}

/// Q6_K's 256 quants in element order with the offset of 32 applied.
fn q6_k_quants(b: &[u8]) -> [i32; QKK] {
    let (ql, qh) = (&b[0..128], &b[128..192]);
    let mut q = [0i32; QKK];
    for half in 0..2 {
        let (ql, qh) = (&ql[half * 64..], &qh[half * 32..]);
        let base = half * 128;
        for l in 0..32 {
            q[base + l] = ((ql[l] & 0xf) | ((qh[l] & 3) << 4)) as i32 - 32;
            q[base + l + 32] = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            q[base + l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            q[base + l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
        }
    }
    q
}

/// ggml-cpu's `rms_norm` fused with the weight: `Σ x²` in f64 (each square rounded in f32),
/// `scale = 1 / sqrtf(mean + eps)` in f32, `y = (x · scale) · w`; rows of `w.len()`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .for_each(|(y, x)| {
            let sum: f64 = x.iter().map(|&v| f64::from(v * v)).sum();
            let mean = (sum / d as f64) as f32;
            let scale = 1.0 / (mean + eps).sqrt();
            for ((y, &v), &w) in y.iter_mut().zip(x).zip(w) {
                *y = (v * scale) * w;
            }
        });
    out
}

/// ggml's `ggml_v_expf` for one value as its AVX-512 build computes it (a polynomial with
/// ~1.5 ulp error, not libm's; the AVX2 build's variant differs in its last step).
#[inline(always)]
pub fn v_expf(x: f32) -> f32 {
    let r = f32::from_bits(0x4b40_0000); // 0x1.8p23
    let z = x.mul_add(f32::from_bits(0x3fb8_aa3b), r); // 0x1.715476p+0
    let n = z - r;
    let b = (-n).mul_add(
        f32::from_bits(0x35bf_be8e),                  // 0x1.7f7d1cp-20
        (-n).mul_add(f32::from_bits(0x3f31_7200), x), // 0x1.62e4p-1
    );
    if n.abs() > 192.0 {
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    let u = b * b;
    let j = f32::from_bits(0x3c07_2010) // 0x1.0e4020p-7
        .mul_add(b, f32::from_bits(0x3d2b_9f17)) // 0x1.573e2ep-5
        .mul_add(
            u,
            f32::from_bits(0x3e2a_af33).mul_add(b, f32::from_bits(0x3eff_fedb)), // 0x1.555e66p-3, 0x1.fffdb6p-2
        )
        .mul_add(u, f32::from_bits(0x3f7f_fff6).mul_add(b, 1.0)); // 0x1.ffffecp-1
    scalef(j, n as i32)
}

/// `_mm512_scalef_ps(j, n)`: `j · 2^n` rounded once (two exact steps where `2^n` is below
/// f32's normal range).
#[inline(always)]
fn scalef(j: f32, n: i32) -> f32 {
    let pow2 = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
    match n {
        -126..=127 => j * pow2(n),
        n if n > 127 => j * pow2(127) * pow2(n - 127),
        n => j * pow2(n + 64) * pow2(-64),
    }
}

/// ggml's `swiglu` on `[N, 2·ffn]` rows (gate then up): `(g / (1 + v_expf(-g))) · u`.
pub fn swiglu(gate_up: &[f32], ffn: usize) -> Vec<f32> {
    let mut out = vec![0f32; gate_up.len() / 2];
    out.par_chunks_mut(ffn)
        .zip(gate_up.par_chunks(2 * ffn))
        .for_each(|(y, gu)| {
            with_fma(
                #[inline(always)]
                || {
                    let (g, u) = gu.split_at(ffn);
                    for ((y, &g), &u) in y.iter_mut().zip(g).zip(u) {
                        *y = (g / (1.0 + v_expf(-g))) * u;
                    }
                },
            )
        });
    out
}

/// llama.cpp's RoPE angles for position `pos` (`ggml_rope_cache_init`): `theta` starts at the
/// position and is multiplied by `powf(base, -2 / dims)` in f32 at each pair; glibc's `cosf`
/// and `sinf`. Returns `(cos, sin)` per pair.
pub fn rope_tables(pos: usize, dims: usize, base: f32) -> (Vec<f32>, Vec<f32>) {
    let scale = base.powf(-2.0 / dims as f32);
    let mut theta = pos as f32;
    let (mut cos, mut sin) = (Vec::with_capacity(dims / 2), Vec::with_capacity(dims / 2));
    for _ in 0..dims / 2 {
        cos.push(theta.cos());
        sin.push(theta.sin());
        theta *= scale;
    }
    (cos, sin)
}

/// ggml's rotation of one head (`rotate_pairs`, as compiled: the first product fused), in the
/// rotate-half layout pot keeps (pair `i` is `x[i]`, `x[i + dims/2]`).
#[inline(always)]
pub fn rotate(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = x.len() / 2;
    for i in 0..half {
        let (x0, x1) = (x[i], x[i + half]);
        x[i] = x0.mul_add(cos[i], -(x1 * sin[i]));
        x[i + half] = x0.mul_add(sin[i], x1 * cos[i]);
    }
}

/// One layer's attention settings for [`attention`].
pub struct Attention {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Multiplies `q · k` (`1 / sqrt(head_dim)`).
    pub scale: f32,
    /// A query attends to the keys fewer than `window` positions back (sliding-window layers).
    pub window: Option<usize>,
    /// RoPE's base (`rope_theta`), or `None` for no rotation.
    pub rope_base: Option<f32>,
    /// Keys and values in an f16 cache (llama.cpp's default), else f32.
    pub f16_cache: bool,
    /// The engine's layout pairs RoPE's halves (2i, 2i + 1) where pot's keeps them apart
    /// (i, i + head_dim/2): llama GGUFs, whose Q/K rows pot un-permutes.
    pub interleaved: bool,
}

/// One layer's attention as llama.cpp computes it without flash attention, per sequence and
/// head: queries and keys rotated ([`rotate`]), queries, keys and values rounded to f16 (the
/// cache, and the query converted to its type), `q · k` in sixteen lanes in the engine's head
/// order, ggml's softmax (scaled, masked, [`v_expf`], the sum in f64 per sixteen values),
/// probabilities rounded to f16, `p · v` in sixteen lanes. `qkv`: `[N, (heads + 2 kv) ·
/// head_dim]`; `spans`: (first row, length) per sequence. Returns `[N, heads · head_dim]`.
pub fn attention(qkv: &mut [f32], spans: &[(usize, usize)], a: &Attention) -> Vec<f32> {
    let (heads, kv_heads, hd) = (a.heads, a.kv_heads, a.head_dim);
    let (scale, window, f16_cache, interleaved) = (a.scale, a.window, a.f16_cache, a.interleaved);
    // The engine's order of a head's values: its layout pairs RoPE's halves (2i, 2i + 1) where
    // pot's keeps them apart (i, i + hd/2), and `q · k` sums in the engine's order.
    let order: Vec<usize> = (0..hd)
        .map(|e| {
            if interleaved {
                e / 2 + (e % 2) * (hd / 2)
            } else {
                e
            }
        })
        .collect();
    let width = (heads + 2 * kv_heads) * hd;
    let n: usize = spans.iter().map(|s| s.1).sum();
    let round = |v: f32| {
        if f16_cache {
            f16::from_f32(v).to_f32()
        } else {
            v
        }
    };
    // Rotate queries and keys per row, then round everything the cache holds.
    with_fma(
        #[inline(always)]
        || {
            for &(start, t) in spans {
                for pos in 0..t {
                    let row = &mut qkv[(start + pos) * width..(start + pos + 1) * width];
                    if let Some(base) = a.rope_base {
                        let (cos, sin) = rope_tables(pos, hd, base);
                        for head in row[..(heads + kv_heads) * hd].chunks_exact_mut(hd) {
                            rotate(head, &cos, &sin);
                        }
                    }
                    row.iter_mut().for_each(|v| *v = round(*v));
                }
            }
        },
    );
    let mut out = vec![0f32; n * heads * hd];
    let qkv = &*qkv;
    let group = heads / kv_heads;
    let tasks: Vec<(usize, usize, usize)> = spans
        .iter()
        .flat_map(|&(start, t)| (0..heads).map(move |h| (start, t, h)))
        .collect();
    let results: Vec<Vec<f32>> = tasks
        .par_iter()
        .map(|&(start, t, h)| {
            with_fma(
                #[inline(always)]
                || {
                    let g = h / group;
                    let head = |row: usize, at: usize| &qkv[row * width + at * hd..][..hd];
                    // Queries and keys gathered into the engine's order once, so that `q · k`
                    // runs over contiguous sixteen-lane chunks.
                    let gather = |at: usize| -> Vec<f32> {
                        (0..t)
                            .flat_map(|j| order.iter().map(move |&e| head(start + j, at)[e]))
                            .collect()
                    };
                    let (qs, ks) = (gather(h), gather(heads + g));
                    let v = |j: usize| head(start + j, heads + kv_heads + g);
                    let mut result = vec![0f32; t * hd];
                    let mut p = vec![0f32; t];
                    // p · v: sixteen lanes by key position, every output dimension at once.
                    let mut lanes_pv = vec![[0f32; 16]; hd];
                    for i in 0..t {
                        let first = window.map_or(0, |w| (i + 1).saturating_sub(w));
                        let q = &qs[i * hd..(i + 1) * hd];
                        // Scores (masked ones are -inf, which the exponential takes to exactly 0).
                        for (j, pj) in p.iter_mut().enumerate() {
                            *pj = if j < first || j > i {
                                f32::NEG_INFINITY
                            } else {
                                let k = &ks[j * hd..(j + 1) * hd];
                                let mut acc = [0f32; 16];
                                let (qc, kc) = (q.chunks_exact(16), k.chunks_exact(16));
                                let (qr, kr) = (qc.remainder(), kc.remainder());
                                for (q16, k16) in qc.zip(kc) {
                                    for l in 0..16 {
                                        acc[l] = k16[l].mul_add(q16[l], acc[l]);
                                    }
                                }
                                for l in 0..qr.len() {
                                    acc[l] = kr[l].mul_add(qr[l], acc[l]);
                                }
                                hsum16(acc) * scale
                            };
                        }
                        let max = p.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                        let mut sum = 0f64;
                        for (c, chunk) in p.chunks_mut(16).enumerate() {
                            let mut lanes = [0f32; 16];
                            for (l, v) in chunk.iter_mut().enumerate() {
                                // A masked position's exponential is exactly 0 (of -inf).
                                let j = 16 * c + l;
                                *v = if j < first || j > i {
                                    0.0
                                } else {
                                    v_expf(*v - max)
                                };
                                lanes[l] = *v;
                            }
                            sum += f64::from(hsum16(lanes));
                        }
                        let inv = (1.0 / sum) as f32;
                        p.iter_mut().for_each(|v| *v = round(*v * inv));
                        lanes_pv.iter_mut().for_each(|l| *l = [0f32; 16]);
                        // Masked positions (p = 0) are left out: `fma(v, 0, lane)` is the lane.
                        for (j, &pj) in p.iter().enumerate().take(i + 1).skip(first) {
                            for (lanes, &vd) in lanes_pv.iter_mut().zip(v(j)) {
                                lanes[j % 16] = vd.mul_add(pj, lanes[j % 16]);
                            }
                        }
                        for (o, lanes) in result[i * hd..(i + 1) * hd].iter_mut().zip(&lanes_pv) {
                            *o = hsum16(*lanes);
                        }
                    }
                    result
                },
            )
        })
        .collect();
    for (&(start, t, h), r) in tasks.iter().zip(results) {
        for i in 0..t {
            out[(start + i) * heads * hd + h * hd..][..hd]
                .copy_from_slice(&r[i * hd..(i + 1) * hd]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// `values(seed)` of fixtures/emulation/record_kernels.py.
    fn values(seed: u32) -> Vec<f32> {
        (0..512usize)
            .map(|i| {
                let scale = if (i / 32) % 3 == 0 { 0.05 } else { 1.0 };
                let mut v = (0.37 * i as f64 + seed as f64).sin() * (1 + i % 7) as f64 * scale;
                if i % 61 == 0 {
                    v *= 9.0;
                }
                if i % 97 == 5 {
                    v = (v * 2.0).round_ties_even() / 2.0;
                }
                v as f32
            })
            .collect()
    }

    fn vectors() -> Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/emulation/kernel_vectors.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn activation_quantisers_write_ggml_cpu_bytes() {
        let v = vectors();
        for seed in 0..4 {
            let x = values(seed);
            let (mut q8_0, mut q8_1, mut q8_k) = (Vec::new(), Vec::new(), Vec::new());
            for b in x.chunks_exact(QK8) {
                let q = quantize_q8_0(b);
                q8_0.extend(q.d.to_le_bytes());
                q8_0.extend(q.qs.iter().map(|&v| v as u8));
                q8_1.extend(q.d.to_le_bytes());
                q8_1.extend(q.s.to_le_bytes());
                q8_1.extend(q.qs.iter().map(|&v| v as u8));
            }
            for b in x.chunks_exact(QKK) {
                let q = quantize_q8_k(b);
                q8_k.extend(q.d.to_le_bytes());
                q8_k.extend(q.qs.iter().map(|&v| v as u8));
                q8_k.extend(q.bsums.iter().flat_map(|s| s.to_le_bytes()));
            }
            for (name, ours) in [("Q8_0", q8_0), ("Q8_1", q8_1), ("Q8_K", q8_k)] {
                let theirs = unhex(v["activations"][format!("{name}/{seed}")].as_str().unwrap());
                assert_eq!(ours, theirs, "{name} of inputs {seed}");
            }
        }
    }

    #[test]
    fn block_dot_products_are_ggml_cpu_vec_dot_to_the_bit() {
        let v = vectors();
        for (name, dtype) in [
            ("Q8_0", DType::Q8_0),
            ("Q4_0", DType::Q4_0),
            ("Q4_1", DType::Q4_1),
            ("Q5_0", DType::Q5_0),
            ("Q5_1", DType::Q5_1),
        ] {
            for seed in 0..4 {
                let case = &v["dots"][format!("{name}/{seed}")];
                let bytes = unhex(case["weights"].as_str().unwrap());
                let stored = pot_formats::StoredRows {
                    dtype,
                    rows: 1,
                    cols: 512,
                    bytes: &bytes,
                    order: None,
                };
                let w = BlockMatrix::new(&stored).unwrap();
                let mut y = [0f32];
                w.matmul(&values(seed), 1, None, &mut y, 1);
                let theirs = f32::from_bits(case["result_bits"].as_u64().unwrap() as u32);
                assert_eq!(
                    y[0].to_bits(),
                    theirs.to_bits(),
                    "{name} . inputs {seed}: {} vs {theirs}",
                    y[0]
                );
                // The portable integer lanes give the same bits as the AVX2 ones.
                let input = Input::quantize(dtype, &values(seed), 1, 512);
                assert_eq!(w.dot_with(0, &input, 0, lanes4).to_bits(), theirs.to_bits());
            }
        }
    }

    /// The batched kernels (register tiles, `vpdpbusd` / `vpdpwssd` where the CPU has them)
    /// give the bits of the portable per-output formula for every type, for matrices with and
    /// without whole tiles and repacking groups.
    #[test]
    fn the_vector_quantisers_are_the_portable_ones() {
        let mut blocks: Vec<Vec<f32>> = (0..64)
            .flat_map(|seed| {
                values(seed)
                    .chunks_exact(QKK)
                    .map(<[f32]>::to_vec)
                    .collect::<Vec<_>>()
            })
            .collect();
        // Ties (iscale = 1: q = round half to even of x), the first of equal magnitudes, zero.
        blocks.push(
            (0..QKK)
                .map(|i| {
                    if i == 3 {
                        -127.0
                    } else {
                        (i % 40) as f32 - 19.5
                    }
                })
                .collect(),
        );
        blocks.push(
            (0..QKK)
                .map(|i| if i % 2 == 0 { 64.0 } else { -64.0 })
                .collect(),
        );
        blocks.push(
            (0..QKK)
                .map(|i| if i % 2 == 0 { -64.0 } else { 64.0 })
                .collect(),
        );
        blocks.push(vec![0.0; QKK]);
        for x in &blocks {
            assert_eq!(quantize_q8_k(x), quantize_q8_k_portable(x), "{x:?}");
            for b in x.chunks_exact(QK8) {
                assert_eq!(quantize_q8_0(b), quantize_q8_0_portable(b), "{b:?}");
            }
        }
    }

    #[test]
    fn batched_kernels_give_the_portable_formula_bits() {
        let cols = 512;
        for dtype in [
            DType::Q8_0,
            DType::Q4_0,
            DType::Q4_1,
            DType::Q5_0,
            DType::Q5_1,
            DType::Q4_K,
            DType::Q5_K,
            DType::Q6_K,
            DType::F16,
            DType::F32,
            DType::BF16,
        ] {
            for rows in [8, 13, 40] {
                let weights: Vec<f32> = (0..rows as u32)
                    .flat_map(|r| values(r + 7).into_iter().take(cols))
                    .collect();
                let bytes = pot_formats::quantize::quantize(dtype, &weights, cols).unwrap();
                let stored = pot_formats::StoredRows {
                    dtype,
                    rows,
                    cols,
                    bytes: &bytes,
                    order: None,
                };
                let w = BlockMatrix::new(&stored).unwrap();
                let n = 9;
                let x: Vec<f32> = (0..n as u32).flat_map(|s| values(s + 100)).collect();
                let mut y = vec![0f32; n * rows];
                w.matmul(&x, n, None, &mut y, rows);
                let input = Input::quantize(dtype, &x, n, cols);
                for i in 0..n {
                    for j in 0..rows {
                        let portable = w.dot_with(j, &input, i, lanes4);
                        assert_eq!(
                            y[i * rows + j].to_bits(),
                            portable.to_bits(),
                            "{} {rows} rows: output {j} of input {i}",
                            dtype.name()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn v_expf_is_within_ulps_of_exp_over_the_normal_range() {
        // Its polynomial's error, not a bug: below -87.3 the result is subnormal and coarser.
        for i in 0..20000 {
            let x = -87.0 + i as f32 * 0.0047;
            let (ours, libm) = (f64::from(v_expf(x)), f64::from(x).exp());
            assert!(((ours - libm) / libm).abs() < 3e-7, "{x}: {ours} vs {libm}");
        }
        assert_eq!(v_expf(f32::NEG_INFINITY), 0.0);
        assert_eq!(v_expf(-1000.0), 0.0);
    }
}

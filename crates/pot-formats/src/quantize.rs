//! llama.cpp's reference quantisers and its mixed-recipe tensor type selection, ported
//! byte-exact (no importance matrix).
//!
//! Source of truth: the llama.cpp vendored in llama-cpp-python 0.3.36 (`ggml/src/ggml-quants.c`,
//! `ggml/src/ggml.c` `ggml_quantize_chunk`, `ggml/src/ggml-impl.h` for the f16/bf16
//! conversions, `src/llama-quant.cpp` for the recipe). Every function below names the C function
//! it ports; the arithmetic keeps C's evaluation order (`a*b*c` is `(a*b)*c`, sums run left to
//! right, no fused multiply-add: the reference `libggml-base.so` contains no FMA instructions)
//! so that the bytes agree. Checked against llama.cpp itself by `fixtures/quantize/record.py`:
//! `vectors.json` (`ggml_quantize_chunk` on generated rows: hex, and digests over 2 M values),
//! `real_models.json` (digests over the 765 M dequantised weights of the SmolLM2 and Qwen2.5
//! fixture models, an ignored test) and `recipes.json` (`llama_quant_compute_types` on the
//! SmolLM2-135M, Qwen2.5-0.5B and other layouts, every file type).
//!
//! # Quantising (`ggml_quantize_chunk(type, src, dst, 0, nrows, n_per_row, imatrix = NULL)`)
//!
//! * `Q4_0`, `Q4_1`, `Q5_0`, `Q5_1`, `Q8_0`: with no importance matrix `quantize_q4_0` and its
//!   siblings call `quantize_row_*_ref` over the whole chunk, block by block (`quantize_q8_0`
//!   always does).
//! * `Q4_K`, `Q5_K`, `Q6_K`: with `quant_weights == NULL`, `quantize_q4_K` / `quantize_q5_K` /
//!   `quantize_q6_K` call `quantize_row_q4_K_ref` / `quantize_row_q5_K_ref` /
//!   `quantize_row_q6_K_ref` (the `_impl` variants with `make_qkx3_quants` / `make_qp_quants`
//!   run only with an imatrix and are not ported).
//! * `F16`: `ggml_fp32_to_fp16_row`, i.e. `GGML_FP32_TO_FP16`, which in ggml-base is always the
//!   scalar bit-manipulation routine of `ggml_compute_fp32_to_fp16` (FP16 library by
//!   Maratyszcza), never F16C. That routine rounds to nearest even for every non-NaN input,
//!   subnormals and overflow to infinity included, exactly as the `half` crate (software or
//!   F16C) does; it differs for NaN only: ggml writes the canonical quiet NaN `0x7E00` (with the
//!   sign) and drops the payload, `half` keeps the top payload bits. [`fp32_to_fp16`] uses `half`
//!   and special-cases NaN (a test sweeps the bit patterns against a port of the C routine).
//! * `BF16`: `ggml_fp32_to_bf16_row_ref` → `ggml_compute_fp32_to_bf16`: round to nearest even,
//!   NaN → `(bits >> 16) | 64` (quieted, payload kept), subnormals not flushed. Ported as is
//!   ([`fp32_to_bf16`]).
//! * `F32`: a copy.
//!
//! Blocks never straddle rows (row lengths are whole numbers of blocks), so quantising row by row
//! (and rows in parallel, as [`quantize`] does) gives the bytes of one `ggml_quantize_chunk` over
//! the whole tensor, which is also what `llama_tensor_quantize_impl` writes whatever its thread
//! count and chunking.
//!
//! Inputs are expected to be finite. Infinities and NaNs give the same bytes as C as far as the
//! arithmetic goes, but C's float → `int8_t` conversions of out-of-range values are undefined
//! behaviour where Rust's `as` saturates, so non-finite inputs are not promised byte-identical.
//!
//! # The recipe (`src/llama-quant.cpp`)
//!
//! [`Recipe`] ports `quantize_state_impl` and its counters, `init_quantize_state_counters`,
//! `tensor_allows_quantization`, `llama_tensor_get_type` (with `llama_tensor_get_type_impl`
//! and `tensor_type_fallback`) for the default `llama_model_quantize_params` (no imatrix, no
//! `--output-tensor-type` / `--token-embedding-type` / `--tensor-type` overrides, not `--pure`,
//! `quantize_output_tensor = true`, no pruning, not `keep_split`). [`plan`] runs it over a whole
//! tensor list in llama.cpp's order. [`FileType`] is `llama_ftype` for the file types pot writes,
//! with `llama_ftype_get_default_type`.
//!
//! # What `llama_model_quantize` does to the file, for the GGUF writer
//!
//! Byte identity of the whole output file with `llama_model_quantize` (llama-quantize) needs, on
//! top of the tensor bytes:
//!
//! 1. Tensor order: llama.cpp iterates `llama_model_loader::weights_map`, a `std::map` ordered by
//!    `weight_name_comparer`: first by the layer number parsed with `sscanf(name, "blk.%d.")`
//!    (names without it count as layer -1, so they come first), then by byte-wise name. Both the
//!    tensor infos and the data are written in that order ([`llama_tensor_order`]), *not* in the
//!    input file's order. The counters of the recipe advance in that order too.
//! 2. Metadata: the input's key/value pairs are copied in their order (`gguf_set_kv`), then
//!    `general.quantization_version` (u32, `GGML_QNT_VERSION` = 2) and `general.file_type` (u32,
//!    the `llama_ftype`, [`FileType::llama_ftype`]) are set. `gguf_set_val_u32` removes an
//!    existing key and appends, so these two end up as the last two pairs, in that order,
//!    whether or not the input had them. `split.no`, `split.count`, `split.tensors.count` are
//!    removed. Array values keep their element type. Without an imatrix no `quantize.imatrix.*`
//!    key is added.
//! 3. Header: magic `GGUF`, version 3, tensor count (i64), key/value count (i64); strings are a
//!    u64 length and the bytes.
//! 4. Tensor infos: name, `n_dims` = `ggml_n_dims` (trailing dimensions of 1 dropped, at least
//!    1), the dims (i64, `ne[0]` first), the new ggml type id (u32), the offset (u64) relative
//!    to the data section.
//! 5. Alignment: always `GGUF_DEFAULT_ALIGNMENT` = 32 (the output context comes from
//!    `gguf_init_empty`; a `general.alignment` key copied from the input does not change it).
//!    The metadata is zero-padded to a multiple of 32, then every tensor's data, the last one
//!    included, is followed by zeros up to a multiple of 32; offsets are the running sum of the
//!    padded sizes.
//! 6. Tensors whose target type equals their type in the input file are copied byte for byte
//!    (e.g. F32 norms, or F16 weights when writing F16); others are converted to f32 first
//!    (F16/BF16 exactly; quantised input is refused unless `--allow-requantize`) and quantised
//!    with [`quantize`].
//!
//! Items 1, 2 and 6 and the tensor bytes were checked once against `llama_model_quantize`
//! (Q4_K_M) on a small F32 llama GGUF whose tensors and keys were out of order: [`plan`] and
//! [`quantize`] gave its tensor order, types and bytes, and its keys ended with
//! `general.quantization_version`, `general.file_type`.
//!
//! Not ported: the imatrix paths, `make_q3_quants` / `make_qkx3_quants` / `make_qp_quants`
//! and the Q2_K / Q3_K / IQ* / TQ* / MXFP4 quantisers and recipe branches (no [`DType`] for them).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use half::f16;
use rayon::prelude::*;

use crate::dtype::DType;

/// Elements per super-block of the K-quants (`QK_K`).
pub const QK_K: usize = 256;

/// `GROUP_MAX_EPS` in ggml-quants.c.
const GROUP_MAX_EPS: f32 = 1e-15;

/// `GGML_QNT_VERSION`, written as `general.quantization_version`.
pub const GGML_QNT_VERSION: u32 = 2;

/// `GGUF_DEFAULT_ALIGNMENT`, the alignment of every file `llama_model_quantize` writes.
pub const GGUF_ALIGNMENT: usize = 32;

/// Why a quantisation or a recipe could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantizeError {
    #[error("{dtype:?} needs rows of a multiple of {block} values; got {n}")]
    NotWholeBlocks {
        dtype: DType,
        block: usize,
        n: usize,
    },
    #[error("{dtype:?}: {n} values need {expected} bytes, the destination has {got}")]
    DestinationLength {
        dtype: DType,
        n: usize,
        expected: usize,
        got: usize,
    },
    #[error(
        "unknown file type `{0}` (known: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K_S, Q4_K_M, Q4_K, Q5_K_S, Q5_K_M, Q5_K, Q6_K)"
    )]
    UnknownFileType(String),
    #[error("failed to determine layer for tensor {0}")]
    NoLayer(String),
    #[error("bad layer {layer} for tensor {name}. Must be in [0, {n_layer})")]
    BadLayer {
        name: String,
        layer: i64,
        n_layer: i64,
    },
}

// ------------------------------------------------------------------------------------------------
// Scalar conversions
// ------------------------------------------------------------------------------------------------

/// `GGML_FP32_TO_FP16` as ggml-base computes it (`ggml_compute_fp32_to_fp16`): round to nearest
/// even; NaN becomes `0x7E00` with the input's sign.
#[inline]
pub fn fp32_to_fp16(x: f32) -> u16 {
    if x.is_nan() {
        ((x.to_bits() >> 16) & 0x8000) as u16 | 0x7E00
    } else {
        f16::from_f32(x).to_bits()
    }
}

/// `GGML_FP16_TO_FP32` (exact).
#[inline]
fn fp16_to_fp32(h: u16) -> f32 {
    f16::from_bits(h).to_f32()
}

/// `ggml_compute_fp32_to_bf16`: round to nearest even, NaN quieted with its payload kept.
#[inline]
pub fn fp32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// `nearest_int` (ggml-quants.c): round to nearest (ties to even) through the float adder, for
/// `|fval| <= 4194303`; outside that range it returns C's garbage, bit for bit.
#[inline]
fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12_582_912.0;
    let i = val.to_bits() as i32;
    (i & 0x007f_ffff) - 0x0040_0000
}

// ------------------------------------------------------------------------------------------------
// Helpers of the K-quants
// ------------------------------------------------------------------------------------------------

/// `make_qx_quants(n, nmax, x, L, rmse_type = 1, qw = NULL)`, the only form the reference
/// quantisers use (Q6_K). `l` receives the levels offset by `nmax` (0..2*nmax).
fn make_qx_quants_rmse1(nmax: i32, x: &[f32], l_out: &mut [u8]) -> f32 {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &xi in x {
        let ax = xi.abs();
        if ax > amax {
            amax = ax;
            max = xi;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let level = |iscale: f32, xi: f32| nearest_int(iscale * xi).clamp(-nmax, nmax - 1);
    let mut iscale = -(nmax as f32) / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for (li, &xi) in l_out.iter_mut().zip(x) {
        let l = level(iscale, xi);
        *li = (l + nmax) as u8;
        let w = xi * xi;
        let lf = l as f32;
        sumlx += w * xi * lf;
        suml2 += w * lf * lf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1f32 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &xi in x {
            let lf = level(iscale, xi) as f32;
            let w = xi * xi;
            sumlx += w * xi * lf;
            suml2 += w * lf * lf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (li, &xi) in l_out.iter_mut().zip(x) {
                *li = (nmax + level(iscale, xi)) as u8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// `make_qkx2_quants(n, nmax, x, weights, L, &the_min, Laux, rmin, rdelta, nstep, use_mad = false)`.
/// Returns `(scale, the_min)`.
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out[..n].fill(0);
        return (0.0, -min);
    }
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min));
        let l = l.clamp(0, nmax) as u8;
        l_out[i] = l;
        let diff = scale * f32::from(l) + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmaxf) / (max - min);
        let mut sum_l = 0.0f32;
        let mut sum_l2 = 0.0f32;
        let mut sum_xl = 0.0f32;
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = l as u8;
            let w = weights[i];
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * f32::from(laux[i]) + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// `get_scale_min_k4`.
#[inline]
fn get_scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

// ------------------------------------------------------------------------------------------------
// Block quantisers (one block each; `x` holds exactly one block of values)
// ------------------------------------------------------------------------------------------------

fn put_f16(y: &mut [u8], at: usize, v: f32) -> f32 {
    let h = fp32_to_fp16(v);
    y[at..at + 2].copy_from_slice(&h.to_le_bytes());
    fp16_to_fp32(h)
}

/// One block of `quantize_row_q4_0_ref`.
fn block_q4_0(x: &[f32], y: &mut [u8]) {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(y, 0, d);
    for j in 0..16 {
        let x0 = x[j] * id;
        let x1 = x[16 + j] * id;
        let xi0 = ((x0 + 8.5) as i8).min(15) as u8;
        let xi1 = ((x1 + 8.5) as i8).min(15) as u8;
        y[2 + j] = xi0 | (xi1 << 4);
    }
}

/// One block of `quantize_row_q4_1_ref`.
fn block_q4_1(x: &[f32], y: &mut [u8]) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(y, 0, d);
    put_f16(y, 2, min);
    for j in 0..16 {
        let x0 = (x[j] - min) * id;
        let x1 = (x[16 + j] - min) * id;
        let xi0 = ((x0 + 0.5) as i8).min(15) as u8;
        let xi1 = ((x1 + 0.5) as i8).min(15) as u8;
        y[4 + j] = xi0 | (xi1 << 4);
    }
}

/// One block of `quantize_row_q5_0_ref`.
fn block_q5_0(x: &[f32], y: &mut [u8]) {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(y, 0, d);
    let mut qh = 0u32;
    for j in 0..16 {
        let x0 = x[j] * id;
        let x1 = x[16 + j] * id;
        let xi0 = ((x0 + 16.5) as i8).min(31) as u8;
        let xi1 = ((x1 + 16.5) as i8).min(31) as u8;
        y[6 + j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
        qh |= ((u32::from(xi0) & 0x10) >> 4) << j;
        qh |= ((u32::from(xi1) & 0x10) >> 4) << (j + 16);
    }
    y[2..6].copy_from_slice(&qh.to_le_bytes());
}

/// One block of `quantize_row_q5_1_ref`.
fn block_q5_1(x: &[f32], y: &mut [u8]) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    let d = (max - min) / 31.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(y, 0, d);
    put_f16(y, 2, min);
    let mut qh = 0u32;
    for j in 0..16 {
        let x0 = (x[j] - min) * id;
        let x1 = (x[16 + j] - min) * id;
        // C: `(uint8_t)(x0 + 0.5f)`, no clamp.
        let xi0 = (x0 + 0.5) as u8;
        let xi1 = (x1 + 0.5) as u8;
        y[8 + j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
        qh |= ((u32::from(xi0) & 0x10) >> 4) << j;
        qh |= ((u32::from(xi1) & 0x10) >> 4) << (j + 16);
    }
    y[4..8].copy_from_slice(&qh.to_le_bytes());
}

/// One block of `quantize_row_q8_0_ref`.
fn block_q8_0(x: &[f32], y: &mut [u8]) {
    let mut amax = 0.0f32;
    for &v in x {
        // MAX(amax, fabsf(v))
        let a = v.abs();
        amax = if amax > a { amax } else { a };
    }
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(y, 0, d);
    for (q, &v) in y[2..34].iter_mut().zip(x) {
        *q = (v * id).round() as i8 as u8;
    }
}

/// The 6-bit scales and mins of Q4_K / Q5_K into their 12 packed bytes (shared by
/// `quantize_row_q4_K_ref` and `quantize_row_q5_K_ref`).
fn pack_scales_mins_k4(
    scales: &[f32; 8],
    mins: &[f32; 8],
    max_scale: f32,
    max_min: f32,
) -> [u8; 12] {
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut s = [0u8; 12];
    for j in 0..8 {
        // `uint8_t ls = nearest_int(...)` wraps like `as u8`.
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            s[j] = ls;
            s[j + 4] = lm;
        } else {
            s[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            s[j - 4] |= (ls >> 4) << 6;
            s[j] |= (lm >> 4) << 6;
        }
    }
    s
}

/// The per-sub-block scales and mins of `quantize_row_q4_K_ref` / `quantize_row_q5_K_ref`, then
/// the final levels. Returns the 12 scale bytes, `d`, `dmin` (as f16 bits) and the levels.
#[allow(clippy::type_complexity)]
fn k4_levels(x: &[f32], nmax: i32, rmin: f32, nstep: i32) -> ([u8; 12], u16, u16, [u8; QK_K]) {
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 32];
    let mut weights = [0f32; 32];
    let mut mins = [0f32; 8];
    let mut scales = [0f32; 8];
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (scale, min) = make_qkx2_quants(
            nmax,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            &mut laux,
            rmin,
            0.1,
            nstep,
        );
        scales[j] = scale;
        mins[j] = min;
        if scale > max_scale {
            max_scale = scale;
        }
        if min > max_min {
            max_min = min;
        }
    }
    let packed = pack_scales_mins_k4(&scales, &mins, max_scale, max_min);
    let d = fp32_to_fp16(max_scale / 63.0);
    let dmin = fp32_to_fp16(max_min / 63.0);
    for j in 0..8 {
        let (sc, m) = get_scale_min_k4(j, &packed);
        let dd = fp16_to_fp32(d) * f32::from(sc);
        if dd == 0.0 {
            continue;
        }
        let dm = fp16_to_fp32(dmin) * f32::from(m);
        for ii in 0..32 {
            let q = nearest_int((x[32 * j + ii] + dm) / dd).clamp(0, nmax);
            l[32 * j + ii] = q as u8;
        }
    }
    (packed, d, dmin, l)
}

/// One super-block of `quantize_row_q4_K_ref`.
fn block_q4_k(x: &[f32], y: &mut [u8]) {
    let (scales, d, dmin, l) = k4_levels(x, 15, -1.0, 20);
    y[0..2].copy_from_slice(&d.to_le_bytes());
    y[2..4].copy_from_slice(&dmin.to_le_bytes());
    y[4..16].copy_from_slice(&scales);
    let q = &mut y[16..144];
    for (n, j) in (0..QK_K).step_by(64).enumerate() {
        for i in 0..32 {
            q[32 * n + i] = l[j + i] | (l[j + i + 32] << 4);
        }
    }
}

/// One super-block of `quantize_row_q5_K_ref`.
fn block_q5_k(x: &[f32], y: &mut [u8]) {
    let (scales, d, dmin, l) = k4_levels(x, 31, -0.5, 15);
    y[0..2].copy_from_slice(&d.to_le_bytes());
    y[2..4].copy_from_slice(&dmin.to_le_bytes());
    y[4..16].copy_from_slice(&scales);
    let (qh, ql) = y[16..176].split_at_mut(32);
    qh.fill(0);
    let (mut m1, mut m2) = (1u8, 2u8);
    for (k, n) in (0..QK_K).step_by(64).enumerate() {
        for j in 0..32 {
            let mut l1 = l[n + j];
            if l1 > 15 {
                l1 -= 16;
                qh[j] |= m1;
            }
            let mut l2 = l[n + j + 32];
            if l2 > 15 {
                l2 -= 16;
                qh[j] |= m2;
            }
            ql[32 * k + j] = l1 | (l2 << 4);
        }
        m1 <<= 2;
        m2 <<= 2;
    }
}

/// One super-block of `quantize_row_q6_K_ref`.
fn block_q6_k(x: &[f32], y: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    let mut max_scale = 0.0f32;
    let mut max_abs_scale = 0.0f32;
    for ib in 0..QK_K / 16 {
        let scale =
            make_qx_quants_rmse1(32, &x[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16]);
        scales[ib] = scale;
        let abs_scale = scale.abs();
        if abs_scale > max_abs_scale {
            max_abs_scale = abs_scale;
            max_scale = scale;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        // memset(&y[i], 0, ...); y[i].d = GGML_FP32_TO_FP16(0.f);
        y[..210].fill(0);
        return;
    }
    let iscale = -128.0f32 / max_scale;
    let d = put_f16(y, 208, 1.0 / iscale);
    let mut sc = [0i8; QK_K / 16];
    for ib in 0..QK_K / 16 {
        sc[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
        y[192 + ib] = sc[ib] as u8;
    }
    for j in 0..QK_K / 16 {
        let dd = d * f32::from(sc[j]);
        if dd == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / dd).clamp(-32, 31);
            l[16 * j + ii] = (q + 32) as u8;
        }
    }
    let (ql, rest) = y.split_at_mut(128);
    let qh = &mut rest[..64];
    for (n, j) in (0..QK_K).step_by(128).enumerate() {
        for i in 0..32 {
            let q1 = l[j + i] & 0xF;
            let q2 = l[j + i + 32] & 0xF;
            let q3 = l[j + i + 64] & 0xF;
            let q4 = l[j + i + 96] & 0xF;
            ql[64 * n + i] = q1 | (q3 << 4);
            ql[64 * n + i + 32] = q2 | (q4 << 4);
            qh[32 * n + i] = (l[j + i] >> 4)
                | ((l[j + i + 32] >> 4) << 2)
                | ((l[j + i + 64] >> 4) << 4)
                | ((l[j + i + 96] >> 4) << 6);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Public entry points
// ------------------------------------------------------------------------------------------------

/// Bytes of `n` values of `dtype`, or an error if `n` is not a whole number of blocks
/// (`ggml_row_size`).
pub fn row_size(dtype: DType, n: usize) -> Result<usize, QuantizeError> {
    let (block, bytes) = dtype.block();
    if !n.is_multiple_of(block) {
        return Err(QuantizeError::NotWholeBlocks { dtype, block, n });
    }
    Ok(n / block * bytes)
}

/// Quantises `src` (a whole number of blocks of `dtype`; typically one row) into `dst`, which
/// must be exactly [`row_size`] bytes: the bytes of `ggml_quantize_chunk(dtype, src, dst, 0, 1,
/// src.len(), NULL)`.
pub fn quantize_row(dtype: DType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantizeError> {
    let expected = row_size(dtype, src.len())?;
    if dst.len() != expected {
        return Err(QuantizeError::DestinationLength {
            dtype,
            n: src.len(),
            expected,
            got: dst.len(),
        });
    }
    match dtype {
        DType::F32 => {
            for (y, v) in dst.chunks_exact_mut(4).zip(src) {
                y.copy_from_slice(&v.to_le_bytes());
            }
        }
        DType::F16 => {
            for (y, &v) in dst.chunks_exact_mut(2).zip(src) {
                y.copy_from_slice(&fp32_to_fp16(v).to_le_bytes());
            }
        }
        DType::BF16 => {
            for (y, &v) in dst.chunks_exact_mut(2).zip(src) {
                y.copy_from_slice(&fp32_to_bf16(v).to_le_bytes());
            }
        }
        _ => {
            let block_fn: fn(&[f32], &mut [u8]) = match dtype {
                DType::Q8_0 => block_q8_0,
                DType::Q4_0 => block_q4_0,
                DType::Q4_1 => block_q4_1,
                DType::Q5_0 => block_q5_0,
                DType::Q5_1 => block_q5_1,
                DType::Q4_K => block_q4_k,
                DType::Q5_K => block_q5_k,
                DType::Q6_K => block_q6_k,
                DType::F32 | DType::F16 | DType::BF16 => unreachable!(),
            };
            let (block, bytes) = dtype.block();
            for (x, y) in src.chunks_exact(block).zip(dst.chunks_exact_mut(bytes)) {
                block_fn(x, y);
            }
        }
    }
    Ok(())
}

/// Quantises a whole tensor of rows of `n_per_row` values, rows in parallel over rayon's pool:
/// the bytes of `ggml_quantize_chunk(dtype, src, dst, 0, nrows, n_per_row, NULL)`.
pub fn quantize(dtype: DType, src: &[f32], n_per_row: usize) -> Result<Vec<u8>, QuantizeError> {
    let row_bytes = row_size(dtype, n_per_row)?;
    if n_per_row == 0 || !src.len().is_multiple_of(n_per_row) {
        return Err(QuantizeError::NotWholeBlocks {
            dtype,
            block: n_per_row,
            n: src.len(),
        });
    }
    let mut dst = vec![0u8; src.len() / n_per_row * row_bytes];
    // Tasks of whole rows, about 64 Ki values each (llama.cpp uses chunks of >= 16 Ki values).
    let rows_per_task = (65_536 / n_per_row).max(1);
    dst.par_chunks_mut(rows_per_task * row_bytes)
        .zip(src.par_chunks(rows_per_task * n_per_row))
        .try_for_each(|(y, x)| quantize_row(dtype, x, y))?;
    Ok(dst)
}

// ------------------------------------------------------------------------------------------------
// The recipe
// ------------------------------------------------------------------------------------------------

/// The file types pot writes: `llama_ftype` values and the names llama-quantize takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum FileType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
}

impl FileType {
    pub const ALL: [FileType; 13] = [
        FileType::F32,
        FileType::F16,
        FileType::BF16,
        FileType::Q8_0,
        FileType::Q4_0,
        FileType::Q4_1,
        FileType::Q5_0,
        FileType::Q5_1,
        FileType::Q4_K_S,
        FileType::Q4_K_M,
        FileType::Q5_K_S,
        FileType::Q5_K_M,
        FileType::Q6_K,
    ];

    /// The name llama-quantize prints (`QUANT_OPTIONS` in tools/quantize/quantize.cpp).
    pub fn name(self) -> &'static str {
        match self {
            FileType::F32 => "F32",
            FileType::F16 => "F16",
            FileType::BF16 => "BF16",
            FileType::Q8_0 => "Q8_0",
            FileType::Q4_0 => "Q4_0",
            FileType::Q4_1 => "Q4_1",
            FileType::Q5_0 => "Q5_0",
            FileType::Q5_1 => "Q5_1",
            FileType::Q4_K_S => "Q4_K_S",
            FileType::Q4_K_M => "Q4_K_M",
            FileType::Q5_K_S => "Q5_K_S",
            FileType::Q5_K_M => "Q5_K_M",
            FileType::Q6_K => "Q6_K",
        }
    }

    /// The `llama_ftype` value, written as `general.file_type` (u32).
    pub fn llama_ftype(self) -> u32 {
        match self {
            FileType::F32 => 0,
            FileType::F16 => 1,
            FileType::Q4_0 => 2,
            FileType::Q4_1 => 3,
            FileType::Q8_0 => 7,
            FileType::Q5_0 => 8,
            FileType::Q5_1 => 9,
            FileType::Q4_K_S => 14,
            FileType::Q4_K_M => 15,
            FileType::Q5_K_S => 16,
            FileType::Q5_K_M => 17,
            FileType::Q6_K => 18,
            FileType::BF16 => 32,
        }
    }

    pub fn from_llama_ftype(id: u32) -> Option<FileType> {
        FileType::ALL.into_iter().find(|f| f.llama_ftype() == id)
    }

    /// `llama_ftype_get_default_type`.
    pub fn default_type(self) -> DType {
        match self {
            FileType::F32 => DType::F32,
            FileType::F16 => DType::F16,
            FileType::BF16 => DType::BF16,
            FileType::Q8_0 => DType::Q8_0,
            FileType::Q4_0 => DType::Q4_0,
            FileType::Q4_1 => DType::Q4_1,
            FileType::Q5_0 => DType::Q5_0,
            FileType::Q5_1 => DType::Q5_1,
            FileType::Q4_K_S | FileType::Q4_K_M => DType::Q4_K,
            FileType::Q5_K_S | FileType::Q5_K_M => DType::Q5_K,
            FileType::Q6_K => DType::Q6_K,
        }
    }
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FileType {
    type Err = QuantizeError;

    /// Case-insensitive names as llama-quantize takes them (`q4_k_m`, `Q8_0`, ...), with its
    /// aliases `Q4_K` = `Q4_K_M` and `Q5_K` = `Q5_K_M`, or the numeric `llama_ftype`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.trim().to_ascii_uppercase();
        let alias = match upper.as_str() {
            "Q4_K" => Some(FileType::Q4_K_M),
            "Q5_K" => Some(FileType::Q5_K_M),
            _ => None,
        };
        alias
            .or_else(|| FileType::ALL.into_iter().find(|f| f.name() == upper))
            .or_else(|| upper.parse().ok().and_then(FileType::from_llama_ftype))
            .ok_or_else(|| QuantizeError::UnknownFileType(s.to_string()))
    }
}

/// What the recipe needs to know about the model (the `llama_model` fields llama-quant.cpp
/// reads).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipeModel {
    /// `general.architecture` (`llama`, `qwen2`, ...). Only `falcon` changes the rules for the
    /// file types of [`FileType`].
    pub arch: String,
    /// `hparams.n_layer_all` (`<arch>.block_count`).
    pub n_layer: u32,
    /// `hparams.n_expert` (`<arch>.expert_count`, 0 when absent).
    pub n_expert: u32,
    /// `model.type == LLM_TYPE_70B` (see [`RecipeModel::is_llm_type_70b`]).
    pub is_70b: bool,
}

impl RecipeModel {
    /// A dense model (no experts) with the size class derived by [`Self::is_llm_type_70b`].
    pub fn new(arch: &str, n_layer: u32, n_head: u32, n_head_kv: u32) -> RecipeModel {
        RecipeModel {
            arch: arch.to_string(),
            n_layer,
            n_expert: 0,
            is_70b: Self::is_llm_type_70b(arch, n_layer, n_head, n_head_kv, 0),
        }
    }

    /// Whether llama.cpp's loader classifies the model as `LLM_TYPE_70B` (the only model type the
    /// recipe looks at): `src/models/llama.cpp` (80 layers, no 8 experts, grouped-query
    /// attention), `qwen2.cpp`, `deci.cpp`, `olmo.cpp` (80 layers), `jais2.cpp` (68 layers).
    pub fn is_llm_type_70b(
        arch: &str,
        n_layer: u32,
        n_head: u32,
        n_head_kv: u32,
        n_expert: u32,
    ) -> bool {
        match arch {
            "llama" => n_expert != 8 && n_layer == 80 && n_head != n_head_kv,
            "qwen2" | "deci" | "olmo" => n_layer == 80,
            "jais2" => n_layer == 68,
            _ => false,
        }
    }
}

/// `tensor_category` (llama-quant.cpp).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    AttentionQ,
    AttentionV,
    AttentionK,
    AttentionQkv,
    AttentionKvB,
    AttentionOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

/// `tensor_get_category`.
fn category(name: &str) -> Category {
    if name == "output.weight" {
        return Category::Output;
    }
    if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        return Category::TokenEmbd;
    }
    const BY_SUBSTRING: [(&str, Category); 9] = [
        ("attn_qkv.weight", Category::AttentionQkv),
        ("attn_kv_b.weight", Category::AttentionKvB),
        ("attn_v.weight", Category::AttentionV),
        ("attn_k.weight", Category::AttentionK),
        ("attn_q.weight", Category::AttentionQ),
        ("attn_output.weight", Category::AttentionOutput),
        ("ffn_up", Category::FfnUp),
        ("ffn_gate", Category::FfnGate),
        ("ffn_down", Category::FfnDown),
    ];
    BY_SUBSTRING
        .iter()
        .find(|(s, _)| name.contains(s))
        .map_or(Category::Other, |&(_, c)| c)
}

/// `category_is_attn_v`.
fn category_is_attn_v(c: Category) -> bool {
    matches!(
        c,
        Category::AttentionV | Category::AttentionQkv | Category::AttentionKvB
    )
}

/// `ggml_n_dims`: dimensions up to the last one that is not 1 (at least 1).
fn n_dims(dims: &[u64]) -> usize {
    dims.iter().rposition(|&d| d != 1).map_or(1, |i| i + 1)
}

/// `sscanf(name, "blk.%d.", &layer)`: the layer number, if the name starts with `blk.` and an
/// integer.
fn blk_layer(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("blk.")?;
    // %d skips leading white space and takes an optional sign.
    let rest = rest.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (sign, digits) = match rest.as_bytes().first() {
        Some(b'-') => (-1, &rest[1..]),
        Some(b'+') => (1, &rest[1..]),
        _ => (1, rest),
    };
    let end = digits.bytes().take_while(u8::is_ascii_digit).count();
    if end == 0 {
        return None;
    }
    // Out-of-range values are undefined in C; saturate.
    let v: i64 = digits[..end].parse().unwrap_or(i64::MAX);
    Some((sign * v).clamp(i32::MIN.into(), i32::MAX.into()))
}

/// `llama_model_loader::weight_name_comparer`, the order in which `llama_model_quantize` visits
/// the tensors (and so the recipe's counters advance) and writes them: by the `blk.N.` layer
/// (-1 without one), then by name, byte-wise.
pub fn llama_tensor_order(a: &str, b: &str) -> Ordering {
    let la = blk_layer(a).unwrap_or(-1);
    let lb = blk_layer(b).unwrap_or(-1);
    la.cmp(&lb).then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

/// `tensor_allows_quantization` for the default parameters (`only_copy = false`,
/// `quantize_output_tensor = true`). `dims` in GGML order (`dims[0]` = row length).
pub fn tensor_allows_quantization(arch: &str, name: &str, dims: &[u64]) -> bool {
    if n_dims(dims) < 2 {
        return false;
    }
    // name.rfind("weight") == name.size() - 6, with size_t arithmetic (a 5-byte name passes).
    let len = name.len();
    let mut quantize = name.rfind("weight").unwrap_or(usize::MAX) == len.wrapping_sub(6);
    const EXCLUDED_SUBSTRINGS: [&str; 34] = [
        "_norm.weight",
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
        "time_mix_first.weight",
        "time_mix_w0.weight",
        "time_mix_w1.weight",
        "time_mix_w2.weight",
        "time_mix_v0.weight",
        "time_mix_v1.weight",
        "time_mix_v2.weight",
        "time_mix_a0.weight",
        "time_mix_a1.weight",
        "time_mix_a2.weight",
        "time_mix_g1.weight",
        "time_mix_g2.weight",
        "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight",
        "attn_rel_b.weight",
        ".position_embd",
        "sam.pos_embd",
        "sam.neck.",
        "sam.net_",
        ".rel_pos",
        ".patch_embd",
        ".patch_merger",
        "a.rvq.codebook",
    ];
    quantize &= !EXCLUDED_SUBSTRINGS.iter().any(|s| name.contains(s));
    quantize &= !name.contains("mm.a.code_embd");
    // LLM_TN(arch)(LLM_TENSOR_POS_EMBD / LLM_TENSOR_TOKEN_TYPES, "weight")
    quantize &= name != "position_embd.weight" && name != "token_types.weight";
    if arch == "glm5-next" {
        const GLM5_NEXT: [&str; 14] = [
            "hc_",
            "indexer.attn_q_b",
            "indexer.attn_k",
            "indexer.proj",
            "indexer_compressor_gate",
            "indexer_compressor_ape",
            "ssm_f_a.weight",
            "ssm_f_b.weight",
            "ssm_g_a.weight",
            "ssm_g_b.weight",
            "ssm_beta.weight",
            "attn_kv_a_mqa.weight",
            "attn_k_b.weight",
            "attn_v_b.weight",
        ];
        quantize &= !GLM5_NEXT.iter().any(|s| name.contains(s));
    }
    quantize
}

/// `use_more_bits` in `llama_tensor_get_type_impl`.
fn use_more_bits(i_layer: i32, n_layers: i32) -> bool {
    i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2
}

/// The state of `quantize_state_impl` (its counters) for one quantisation, with
/// `llama_tensor_get_type`. Build it with [`Recipe::new`] over every tensor name of the model,
/// then call [`Recipe::type_for`] once per tensor **in [`llama_tensor_order`]**, as
/// `llama_model_quantize_impl`'s preliminary loop does; or use [`plan`], which does both.
#[derive(Clone, Debug)]
pub struct Recipe {
    ftype: FileType,
    model: RecipeModel,
    n_attention_wv: i32,
    n_ffn_down: i32,
    n_ffn_gate: i32,
    n_ffn_up: i32,
    i_attention_wv: i32,
    i_ffn_down: i32,
    i_ffn_gate: i32,
    i_ffn_up: i32,
    n_fallback: usize,
    has_tied_embeddings: bool,
}

impl Recipe {
    /// `quantize_state_impl` + `init_quantize_state_counters` over the names of all the model's
    /// tensors (1-D ones included; the order does not matter here).
    pub fn new<'a>(
        ftype: FileType,
        model: RecipeModel,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Recipe {
        let mut n_attention_wv = 0;
        let mut has_tied_embeddings = true;
        for name in names {
            let c = category(name);
            if category_is_attn_v(c) {
                n_attention_wv += 1;
            }
            if c == Category::Output {
                has_tied_embeddings = false;
            }
        }
        let n_layer = model.n_layer as i32;
        Recipe {
            ftype,
            model,
            n_attention_wv,
            n_ffn_down: n_layer,
            n_ffn_gate: n_layer,
            n_ffn_up: n_layer,
            i_attention_wv: 0,
            i_ffn_down: 0,
            i_ffn_gate: 0,
            i_ffn_up: 0,
            n_fallback: 0,
            has_tied_embeddings,
        }
    }

    pub fn ftype(&self) -> FileType {
        self.ftype
    }

    /// Whether the model has no `output.weight` (the token embedding doubles as the output).
    pub fn has_tied_embeddings(&self) -> bool {
        self.has_tied_embeddings
    }

    /// How many tensors needed `tensor_type_fallback` so far (llama.cpp's closing warning).
    pub fn n_fallback(&self) -> usize {
        self.n_fallback
    }

    /// The type `llama_model_quantize` writes the tensor in: `llama_tensor_get_type`, or the
    /// source type for tensors it does not quantise (`tensor_allows_quantization` false).
    /// `dims` in GGML order (`dims[0]` = row length), `source` the type in the input file.
    /// Advances the counters: call once per tensor, in [`llama_tensor_order`].
    pub fn type_for(
        &mut self,
        name: &str,
        dims: &[u64],
        source: DType,
    ) -> Result<DType, QuantizeError> {
        if !tensor_allows_quantization(&self.model.arch, name, dims) {
            return Ok(source);
        }
        let default_type = self.ftype.default_type();
        if matches!(default_type, DType::F32 | DType::F16 | DType::BF16) {
            // !ggml_is_quantized(default_type)
            return Ok(default_type);
        }
        let new_type = self.get_type_impl(default_type, name, dims)?;
        Ok(self.fallback(dims, new_type))
    }

    /// `layer_info` in `llama_tensor_get_type_impl`.
    fn layer_info(
        &self,
        i_layer: i32,
        n_layer: i32,
        name: &str,
    ) -> Result<(i32, i32), QuantizeError> {
        if self.model.n_expert.max(1) > 1 {
            let layer = blk_layer(name).ok_or_else(|| QuantizeError::NoLayer(name.to_string()))?;
            if layer < 0 || layer >= i64::from(n_layer) {
                return Err(QuantizeError::BadLayer {
                    name: name.to_string(),
                    layer,
                    n_layer: n_layer.into(),
                });
            }
            return Ok((layer as i32, n_layer));
        }
        Ok((i_layer, n_layer))
    }

    /// `llama_tensor_get_type_impl`, for the file types of [`FileType`] (the branches for the
    /// other ftypes — Q2_K, Q3_K_*, IQ*, TQ*, MXFP4_MOE — are left out, as is the glm5-next
    /// Q8_0 floor) and no imatrix.
    fn get_type_impl(
        &mut self,
        mut new_type: DType,
        name: &str,
        dims: &[u64],
    ) -> Result<DType, QuantizeError> {
        use FileType as F;
        let ftype = self.ftype;
        let falcon = self.model.arch == "falcon";
        let n_expert = self.model.n_expert;
        let cat = category(name);
        if cat == Category::Output || (self.has_tied_embeddings && cat == Category::TokenEmbd) {
            let nx = dims[0];
            let qk_k = new_type.block().0 as u64;
            if falcon || !nx.is_multiple_of(qk_k) {
                new_type = DType::Q8_0;
            } else if new_type != DType::Q8_0 {
                new_type = DType::Q6_K;
            }
        } else if cat == Category::TokenEmbd {
            // Only the IQ*/TQ*/Q2_0 file types change the token embedding.
        } else if category_is_attn_v(cat) {
            if matches!(ftype, F::Q4_K_M | F::Q5_K_M)
                && use_more_bits(self.i_attention_wv, self.n_attention_wv)
            {
                new_type = DType::Q6_K;
            } else if ftype == F::Q4_K_S && self.i_attention_wv < 4 {
                new_type = DType::Q5_K;
            }
            if self.model.is_70b && new_type == DType::Q4_K {
                // (Q3_K too, which none of these file types produces)
                new_type = DType::Q5_K;
            }
            if n_expert == 8 {
                new_type = DType::Q8_0;
            }
            self.i_attention_wv += 1;
        } else if cat == Category::AttentionK {
            if n_expert == 8 {
                new_type = DType::Q8_0;
            }
        } else if cat == Category::AttentionQ {
            // Only IQ3_XS / IQ3_XXS change it.
        } else if cat == Category::FfnDown {
            let (i_layer, n_layer) = self.layer_info(self.i_ffn_down, self.n_ffn_down, name)?;
            if ftype == F::Q4_K_M {
                if falcon {
                    new_type = if i_layer < n_layer / 16 {
                        DType::Q6_K
                    } else if use_more_bits(i_layer, n_layer) {
                        DType::Q5_K
                    } else {
                        DType::Q4_K
                    };
                } else if use_more_bits(i_layer, n_layer) {
                    new_type = DType::Q6_K;
                }
            } else if ftype == F::Q5_K_M && use_more_bits(i_layer, n_layer) {
                new_type = DType::Q6_K;
            } else if ftype == F::Q4_K_S && !falcon && i_layer < n_layer / 8 {
                new_type = DType::Q5_K;
            }
            // (Q4_0 / Q5_0 -> Q4_1 / Q5_1 in the first layers happens only with an imatrix.)
            self.i_ffn_down += 1;
        } else if cat == Category::AttentionOutput {
            if !falcon && n_expert == 8 && matches!(ftype, F::Q4_K_S | F::Q4_K_M) {
                new_type = DType::Q5_K;
            }
        } else if cat == Category::FfnGate {
            // Only IQ3_XS changes it; the layer check can still fail, as in C.
            self.layer_info(self.i_ffn_gate, self.n_ffn_gate, name)?;
            self.i_ffn_gate += 1;
        } else if cat == Category::FfnUp {
            self.layer_info(self.i_ffn_up, self.n_ffn_up, name)?;
            self.i_ffn_up += 1;
        }
        // (The ATTENTION_QKV branch of the C code is unreachable: category_is_attn_v takes it.)
        Ok(new_type)
    }

    /// `tensor_type_fallback`: a type whose block does not divide the row length becomes the
    /// nearest 32-block type (Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0), and F16 if even that does
    /// not fit.
    fn fallback(&mut self, dims: &[u64], target: DType) -> DType {
        let ncols = dims[0];
        let qk_k = target.block().0 as u64;
        if ncols.is_multiple_of(qk_k) {
            return target;
        }
        self.n_fallback += 1;
        let ret = match target {
            DType::Q4_K => DType::Q5_0,
            DType::Q5_K => DType::Q5_1,
            DType::Q6_K => DType::Q8_0,
            // 32-block types: "no smaller block to demote to", then F16 below.
            other => other,
        };
        if !ncols.is_multiple_of(ret.block().0 as u64) {
            return DType::F16;
        }
        ret
    }
}

/// One tensor of a [`plan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedTensor {
    pub name: String,
    /// GGML order (`dims[0]` = row length).
    pub dims: Vec<u64>,
    /// The type in the input file.
    pub source: DType,
    /// The type `llama_model_quantize` writes.
    pub target: DType,
}

/// The whole recipe: every tensor (`(name, dims in GGML order, type in the input file)`) with
/// its target type, sorted in [`llama_tensor_order`], the order of the output file.
pub fn plan(
    ftype: FileType,
    model: RecipeModel,
    tensors: &[(&str, &[u64], DType)],
) -> Result<Vec<PlannedTensor>, QuantizeError> {
    let mut sorted: Vec<&(&str, &[u64], DType)> = tensors.iter().collect();
    sorted.sort_by(|a, b| llama_tensor_order(a.0, b.0));
    let mut recipe = Recipe::new(ftype, model, tensors.iter().map(|t| t.0));
    sorted
        .into_iter()
        .map(|&(name, dims, source)| {
            Ok(PlannedTensor {
                name: name.to_string(),
                dims: dims.to_vec(),
                source,
                target: recipe.type_for(name, dims, source)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::dequantize;
    use sha2::{Digest, Sha256};

    const QUANTISED: [DType; 8] = [
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
    ];

    fn fixture(name: &str) -> serde_json::Value {
        let path = format!(
            "{}/../../fixtures/quantize/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    fn sha256_hex(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// The input generator of fixtures/quantize/record.py (see its docstring).
    struct Gen(u32);

    impl Gen {
        fn next(&mut self) -> u32 {
            let mut s = self.0;
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            self.0 = s;
            s
        }

        fn uniform(&mut self, e: i32) -> f32 {
            let k = (self.next() >> 8) as i32 - (1 << 23);
            k as f32 * 2f32.powi(-(23 + e))
        }

        fn row(&mut self, kind: &str, e: i32, n: usize) -> Vec<f32> {
            match kind {
                "uniform" => (0..n).map(|_| self.uniform(e)).collect(),
                "blockscales" => (0..n / 32)
                    .flat_map(|_| {
                        let eb = (self.next() % 16) as i32;
                        (0..32).map(|_| self.uniform(eb)).collect::<Vec<_>>()
                    })
                    .collect(),
                "positive" => (0..n).map(|_| self.uniform(e).abs()).collect(),
                "shifted" => (0..n)
                    .map(|_| self.uniform(e) - 0.75 * 2f32.powi(-e))
                    .collect(),
                "outlier" => {
                    let mut v: Vec<f32> = (0..n).map(|_| self.uniform(e)).collect();
                    let p = self.next() as usize % n;
                    let s = self.next() & 1;
                    v[p] = if s == 1 { -8.0 } else { 8.0 };
                    v
                }
                "zero" => vec![0.0; n],
                "grid" => (0..n)
                    .map(|_| ((self.next() % 31) as i32 - 15) as f32 * 2f32.powi(-e))
                    .collect(),
                "gridblocks" => (0..n / 32)
                    .flat_map(|_| {
                        let r = 1 + self.next() % 40;
                        (0..32)
                            .map(|_| {
                                ((self.next() % (2 * r + 1)) as i32 - r as i32) as f32
                                    * 2f32.powi(-e)
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect(),
                "sparse" => (0..n / 32)
                    .flat_map(|b| match b % 4 {
                        0 => vec![0.0; 32],
                        1 => {
                            let c = 2f32.powi(-e);
                            vec![if (b / 4) % 2 == 1 { -c } else { c }; 32]
                        }
                        2 => (0..32).map(|_| self.uniform(40)).collect(),
                        _ => (0..32).map(|_| self.uniform(e)).collect(),
                    })
                    .collect(),
                other => panic!("unknown row kind {other}"),
            }
        }
    }

    const KINDS: [&str; 9] = [
        "uniform",
        "blockscales",
        "positive",
        "shifted",
        "outlier",
        "zero",
        "sparse",
        "grid",
        "gridblocks",
    ];

    fn main_input(v: &serde_json::Value) -> Vec<f32> {
        let mut g = Gen(v["seed"].as_u64().unwrap() as u32);
        let n = v["n_per_row"].as_u64().unwrap() as usize;
        let mut out = Vec::new();
        for r in v["rows"].as_array().unwrap() {
            out.extend(g.row(r[0].as_str().unwrap(), r[1].as_i64().unwrap() as i32, n));
        }
        out
    }

    fn stress_input(v: &serde_json::Value) -> Vec<f32> {
        let mut g = Gen(v["seed"].as_u64().unwrap() as u32);
        let n = v["n_per_row"].as_u64().unwrap() as usize;
        let rows = v["n_rows"].as_u64().unwrap() as usize;
        (0..rows)
            .flat_map(|r| g.row(KINDS[r % KINDS.len()], (r % 12) as i32, n))
            .collect()
    }

    fn dtype_named(name: &str) -> DType {
        *DType::ALL.iter().find(|d| d.name() == name).unwrap()
    }

    #[test]
    fn bytes_match_ggml_quantize_chunk() {
        let fx = fixture("vectors.json");
        let main = &fx["main"];
        let input = main_input(main);
        assert_eq!(
            sha256_hex(&f32_bytes(&input)),
            main["input_sha256"].as_str().unwrap(),
            "the generator disagrees with record.py"
        );
        let n = main["n_per_row"].as_u64().unwrap() as usize;
        let mut checked = 0;
        for (name, want) in main["hex"].as_object().unwrap() {
            let got = quantize(dtype_named(name), &input, n).unwrap();
            let want = hex::decode(want.as_str().unwrap()).unwrap();
            assert_eq!(got.len(), want.len(), "{name}");
            if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
                let (_, block_bytes) = dtype_named(name).block();
                panic!(
                    "{name}: first differing byte {i} (block {}, byte {} of it): got {:#04x}, ggml {:#04x}",
                    i / block_bytes,
                    i % block_bytes,
                    got[i],
                    want[i]
                );
            }
            checked += 1;
        }
        for (name, want) in main["sha256"].as_object().unwrap() {
            let got = quantize(dtype_named(name), &input, n).unwrap();
            assert_eq!(sha256_hex(&got), want.as_str().unwrap(), "{name}");
            checked += 1;
        }
        assert_eq!(checked, DType::ALL.len());
    }

    #[test]
    fn bytes_match_ggml_on_many_rows() {
        let fx = fixture("vectors.json");
        let stress = &fx["stress"];
        let kinds: Vec<&str> = stress["kinds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        assert_eq!(kinds, KINDS);
        let input = stress_input(stress);
        assert_eq!(
            sha256_hex(&f32_bytes(&input)),
            stress["input_sha256"].as_str().unwrap()
        );
        let n = stress["n_per_row"].as_u64().unwrap() as usize;
        let digests = stress["sha256"].as_object().unwrap();
        assert_eq!(digests.len(), DType::ALL.len());
        for (name, want) in digests {
            let got = quantize(dtype_named(name), &input, n).unwrap();
            assert_eq!(sha256_hex(&got), want.as_str().unwrap(), "{name}");
        }
    }

    #[test]
    fn f16_and_bf16_match_ggml_on_special_values() {
        let fx = fixture("vectors.json");
        let sp = &fx["specials"];
        let mut bits: Vec<u32> = sp["bits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u32)
            .collect();
        let mut g = Gen(sp["seed"].as_u64().unwrap() as u32);
        bits.extend((0..sp["n_random"].as_u64().unwrap()).map(|_| g.next()));
        let raw: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
        assert_eq!(sha256_hex(&raw), sp["input_sha256"].as_str().unwrap());
        let input: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
        for name in ["F16", "BF16"] {
            let want = hex::decode(sp["hex"][name].as_str().unwrap()).unwrap();
            let mut got = vec![0u8; want.len()];
            quantize_row(dtype_named(name), &input, &mut got).unwrap();
            for (i, (g, w)) in got.chunks(2).zip(want.chunks(2)).enumerate() {
                assert_eq!(g, w, "{name} of f32 bits {:#010x}", bits[i]);
            }
        }
    }

    /// `ggml_compute_fp32_to_fp16` transcribed from ggml-impl.h.
    fn ggml_fp32_to_fp16_scalar(f: f32) -> u16 {
        let scale_to_inf = f32::from_bits(0x7780_0000);
        let scale_to_zero = f32::from_bits(0x0880_0000);
        let mut base = (f.abs() * scale_to_inf) * scale_to_zero;
        let w = f.to_bits();
        let shl1_w = w.wrapping_add(w);
        let sign = w & 0x8000_0000;
        let mut bias = shl1_w & 0xFF00_0000;
        if bias < 0x7100_0000 {
            bias = 0x7100_0000;
        }
        base += f32::from_bits((bias >> 1) + 0x0780_0000);
        let bits = base.to_bits();
        let exp_bits = (bits >> 13) & 0x0000_7C00;
        let mantissa_bits = bits & 0x0000_0FFF;
        let nonsign = exp_bits + mantissa_bits;
        ((sign >> 16)
            | if shl1_w > 0xFF00_0000 {
                0x7E00
            } else {
                nonsign
            }) as u16
    }

    #[test]
    fn f16_conversion_is_ggmls_scalar_routine() {
        // A sweep over the f32 bit patterns (every exponent, both signs, NaNs included); run
        // with a step of 1 (`--ignored`) for all 2^32.
        for bits in (0..=u32::MAX).step_by(9_973) {
            let x = f32::from_bits(bits);
            assert_eq!(fp32_to_fp16(x), ggml_fp32_to_fp16_scalar(x), "{bits:#010x}");
        }
    }

    #[test]
    #[ignore = "exhaustive: 2^32 values, a minute in release"]
    fn f16_conversion_is_ggmls_scalar_routine_exhaustively() {
        (0..=u32::MAX).into_par_iter().for_each(|bits| {
            let x = f32::from_bits(bits);
            assert_eq!(fp32_to_fp16(x), ggml_fp32_to_fp16_scalar(x), "{bits:#010x}");
        });
    }

    #[test]
    fn bf16_conversion_rounds_to_nearest_even_and_quiets_nan() {
        assert_eq!(fp32_to_bf16(1.0), 0x3F80);
        assert_eq!(fp32_to_bf16(f32::from_bits(0x3F80_8000)), 0x3F80); // tie, even stays
        assert_eq!(fp32_to_bf16(f32::from_bits(0x3F81_8000)), 0x3F82); // tie, odd rounds up
        assert_eq!(fp32_to_bf16(f32::from_bits(0x7F7F_8000)), 0x7F80); // rounds to infinity
        assert_eq!(fp32_to_bf16(f32::from_bits(0x7F80_0001)), 0x7FC0); // sNaN quieted
        assert_eq!(fp32_to_bf16(f32::from_bits(0xFFA1_2345)), 0xFFE1);
        for bits in (0..=u32::MAX).step_by(9_973) {
            let x = f32::from_bits(bits);
            if !x.is_nan() {
                assert_eq!(
                    fp32_to_bf16(x),
                    half::bf16::from_f32(x).to_bits(),
                    "{bits:#010x}"
                );
            }
        }
    }

    fn round_trip(dtype: DType, x: &[f32]) -> Vec<f32> {
        let q = quantize(dtype, x, x.len()).unwrap();
        let mut y = vec![0.0; x.len()];
        dequantize(dtype, &q, &mut y);
        y
    }

    #[test]
    fn round_trips_stay_within_the_quantisation_step() {
        let mut g = Gen(99);
        let n = 4096;
        let rows: Vec<Vec<f32>> = vec![
            g.row("uniform", 0, n),
            g.row("blockscales", 0, n),
            g.row("positive", 3, n),
            g.row("shifted", 5, n),
        ];
        // (dtype, levels across a block's range, relative RMS error bound)
        let cases = [
            (DType::Q8_0, 254.0, 0.006),
            (DType::Q4_0, 15.0, 0.12),
            (DType::Q4_1, 15.0, 0.08),
            (DType::Q5_0, 31.0, 0.06),
            (DType::Q5_1, 31.0, 0.04),
            (DType::Q4_K, 15.0, 0.08),
            (DType::Q5_K, 31.0, 0.04),
            (DType::Q6_K, 63.0, 0.02),
        ];
        for x in &rows {
            for (dtype, levels, rel_rms) in cases {
                let y = round_trip(dtype, x);
                let block = dtype.block().0;
                let (mut se, mut sx) = (0.0f64, 0.0f64);
                for (xb, yb) in x.chunks(block).zip(y.chunks(block)) {
                    let lo = xb.iter().fold(0.0f32, |a, &v| a.min(v));
                    let hi = xb.iter().fold(0.0f32, |a, &v| a.max(v));
                    // One step of the coarsest grid the block can get (K-quants: the 6-bit
                    // sub-block scales can at most double the step of the widest sub-block).
                    let k = if block == QK_K { 2.0 } else { 1.0 };
                    let step = (hi - lo) / levels * k;
                    // The f16 scales: relative rounding, and absolute rounding once they are
                    // subnormal (tiny blocks), times the level (and the 6-bit K sub-scale).
                    let f16_slop = levels * if k > 1.0 { 64.0 } else { 1.0 } * 2f32.powi(-24);
                    for (&a, &b) in xb.iter().zip(yb) {
                        assert!(b.is_finite());
                        assert!(
                            (a - b).abs() <= step * 1.01 + a.abs() * 2f32.powi(-9) + f16_slop,
                            "{dtype:?}: {a} -> {b}, step {step}"
                        );
                        se += f64::from(a - b).powi(2);
                        sx += f64::from(a).powi(2);
                    }
                }
                let rel = (se / sx).sqrt();
                assert!(rel < rel_rms, "{dtype:?}: relative RMS error {rel}");
            }
        }
    }

    #[test]
    fn all_zero_blocks_stay_zero() {
        let x = vec![0.0f32; 512];
        for dtype in DType::ALL {
            let q = quantize(dtype, &x, 512).unwrap();
            let mut y = vec![1.0; 512];
            dequantize(dtype, &q, &mut y);
            assert!(y.iter().all(|&v| v == 0.0), "{dtype:?}");
        }
        // Q6_K writes an all-zero block; the others write zero scales.
        assert!(
            quantize(DType::Q6_K, &x, 512)
                .unwrap()
                .iter()
                .all(|&b| b == 0)
        );
        let q8 = quantize(DType::Q8_0, &x, 512).unwrap();
        assert!(q8.iter().all(|&b| b == 0));
    }

    #[test]
    fn one_huge_value_is_kept_and_nothing_is_nan() {
        let mut g = Gen(5);
        let mut x = g.row("uniform", 8, 512);
        x[37] = 30_000.0;
        x[300] = -20_000.0;
        for dtype in QUANTISED {
            let y = round_trip(dtype, &x);
            assert!(y.iter().all(|v| v.is_finite()), "{dtype:?}");
            for i in [37, 300] {
                let tol = x[i].abs() * 0.02;
                assert!(
                    (y[i] - x[i]).abs() <= tol,
                    "{dtype:?}: {} -> {}",
                    x[i],
                    y[i]
                );
            }
        }
    }

    #[test]
    fn a_negative_maximum_is_represented_exactly_by_the_symmetric_types() {
        let mut x: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) / 32.0).collect();
        x[5] = -3.0;
        for dtype in [DType::Q4_0, DType::Q5_0, DType::Q8_0] {
            let y = round_trip(dtype, &x);
            // d = max / -8 (-16, ...) so the most negative value is the bottom level.
            assert!((y[5] + 3.0).abs() <= 3.0 * 1e-3, "{dtype:?}: {}", y[5]);
        }
        // Q4_0: d = -3 / -8 = 0.375 is exact in f16, level 0 -> -8 * 0.375 = -3 exactly.
        assert_eq!(round_trip(DType::Q4_0, &x)[5], -3.0);
        let mut neg = vec![-1.0f32; 256];
        neg[0] = -2.0;
        for dtype in QUANTISED {
            let y = round_trip(dtype, &neg);
            assert!((y[0] + 2.0).abs() < 0.02, "{dtype:?}: {}", y[0]);
            assert!((y[1] + 1.0).abs() < 0.07, "{dtype:?}: {}", y[1]);
        }
    }

    #[test]
    fn row_lengths_must_be_whole_blocks() {
        let x = vec![0.5f32; 576];
        assert!(matches!(
            quantize(DType::Q4_K, &x, 576),
            Err(QuantizeError::NotWholeBlocks { block: 256, .. })
        ));
        assert_eq!(quantize(DType::Q8_0, &x, 576).unwrap().len(), 18 * 34);
        let mut dst = vec![0u8; 10];
        assert!(matches!(
            quantize_row(DType::Q8_0, &x[..32], &mut dst),
            Err(QuantizeError::DestinationLength { expected: 34, .. })
        ));
    }

    #[test]
    fn quantising_by_row_or_whole_tensor_agrees() {
        let mut g = Gen(11);
        let x = g.row("blockscales", 0, 256 * 40);
        for dtype in DType::ALL {
            let whole = quantize(dtype, &x, 256 * 40).unwrap();
            let rows = quantize(dtype, &x, 256).unwrap();
            assert_eq!(whole, rows, "{dtype:?}");
        }
    }

    #[test]
    #[ignore = "timing: quantises 135M values in every type and prints the rates"]
    fn quantising_a_135m_parameter_model_takes_seconds() {
        let mut g = Gen(1);
        let row = g.row("blockscales", 0, 1536);
        let x: Vec<f32> = row.iter().copied().cycle().take(1536 * 88_000).collect();
        for dtype in DType::ALL {
            let start = std::time::Instant::now();
            let q = quantize(dtype, &x, 1536).unwrap();
            let secs = start.elapsed().as_secs_f64();
            println!(
                "{dtype:?}: {:.0}M values in {secs:.2} s ({} bytes)",
                x.len() as f64 / 1e6,
                q.len()
            );
        }
    }

    /// Hundreds of millions of real weights (the fixture models, dequantised), where a one-ulp
    /// difference in the arithmetic would show. Run after `cargo xtask fixtures`.
    #[test]
    #[ignore = "needs the fixture models (cargo xtask fixtures); about a minute"]
    fn bytes_match_ggml_on_the_fixture_models() {
        use crate::fixtures::model_path;
        use crate::gguf::GgufFile;
        let fx = fixture("real_models.json");
        for (file, want) in fx["models"].as_object().unwrap() {
            let gguf = GgufFile::open(&model_path(file)).unwrap();
            let types: Vec<DType> = DType::ALL
                .into_iter()
                .filter(|&d| d != DType::F32)
                .collect();
            let mut h_in = Sha256::new();
            let mut h_out: Vec<Sha256> = types.iter().map(|_| Sha256::new()).collect();
            let mut n = 0;
            for t in gguf.tensors.iter().filter(|t| t.dims.len() >= 2) {
                let mut values = vec![0f32; t.elements() as usize];
                dequantize(t.dtype, gguf.bytes(t), &mut values);
                h_in.update(f32_bytes(&values));
                n += values.len();
                let ne0 = t.dims[0] as usize;
                for (&dtype, h) in types.iter().zip(&mut h_out) {
                    if ne0.is_multiple_of(dtype.block().0) {
                        h.update(quantize(dtype, &values, ne0).unwrap());
                    }
                }
            }
            assert_eq!(n as u64, want["values"].as_u64().unwrap(), "{file}");
            assert_eq!(
                hex::encode(h_in.finalize()),
                want["input_sha256"].as_str().unwrap(),
                "{file}: the dequantised input differs from gguf-py's"
            );
            for (dtype, h) in types.iter().zip(h_out) {
                assert_eq!(
                    hex::encode(h.finalize()),
                    want["sha256"][dtype.name()].as_str().unwrap(),
                    "{file}: {dtype:?}"
                );
            }
        }
    }

    #[test]
    fn file_types_parse_like_llama_quantize() {
        assert_eq!("q4_k_m".parse::<FileType>().unwrap(), FileType::Q4_K_M);
        assert_eq!("Q4_K".parse::<FileType>().unwrap(), FileType::Q4_K_M);
        assert_eq!("q5_k".parse::<FileType>().unwrap(), FileType::Q5_K_M);
        assert_eq!("bf16".parse::<FileType>().unwrap(), FileType::BF16);
        assert_eq!("7".parse::<FileType>().unwrap(), FileType::Q8_0);
        assert!("q3_k_m".parse::<FileType>().is_err());
        for f in FileType::ALL {
            assert_eq!(f.name().parse::<FileType>().unwrap(), f);
            assert_eq!(FileType::from_llama_ftype(f.llama_ftype()), Some(f));
        }
    }

    fn build_tensors(b: &serde_json::Value) -> Vec<(String, Vec<u64>)> {
        let u = |k: &str| b[k].as_u64().unwrap();
        let (kind, n_layer, d, ff, n_kv, vocab) = (
            b["kind"].as_str().unwrap(),
            u("n_layer"),
            u("d"),
            u("ff"),
            u("n_kv"),
            u("vocab"),
        );
        let mut t: Vec<(String, Vec<u64>)> = vec![
            ("token_embd.weight".into(), vec![d, vocab]),
            ("output_norm.weight".into(), vec![d]),
        ];
        if kind == "falcon" {
            t.push(("output_norm.bias".into(), vec![d]));
        }
        if !b["tied"].as_bool().unwrap() {
            t.push(("output.weight".into(), vec![d, vocab]));
        }
        for i in 0..n_layer {
            let mut add = |s: &str, dims: &[u64]| t.push((format!("blk.{i}.{s}"), dims.to_vec()));
            add("attn_norm.weight", &[d]);
            if kind == "falcon" {
                add("attn_norm.bias", &[d]);
                add("attn_qkv.weight", &[d, d + 2 * n_kv]);
                add("attn_output.weight", &[d, d]);
                add("ffn_up.weight", &[d, ff]);
                add("ffn_down.weight", &[ff, d]);
                continue;
            }
            add("attn_q.weight", &[d, d]);
            add("attn_k.weight", &[d, n_kv]);
            add("attn_v.weight", &[d, n_kv]);
            add("attn_output.weight", &[d, d]);
            add("ffn_norm.weight", &[d]);
            if b["biases"].as_bool().unwrap() {
                add("attn_q.bias", &[d]);
                add("attn_k.bias", &[n_kv]);
                add("attn_v.bias", &[n_kv]);
            }
            if kind == "moe" {
                let e = u("n_expert");
                add("ffn_gate_inp.weight", &[d, e]);
                add("ffn_gate_exps.weight", &[d, ff, e]);
                add("ffn_up_exps.weight", &[d, ff, e]);
                add("ffn_down_exps.weight", &[ff, d, e]);
            } else {
                add("ffn_gate.weight", &[d, ff]);
                add("ffn_up.weight", &[d, ff]);
                add("ffn_down.weight", &[ff, d]);
            }
        }
        t
    }

    #[test]
    fn recipes_match_llama_quant_compute_types() {
        let fx = fixture("recipes.json");
        for m in fx["models"].as_array().unwrap() {
            let name = m["name"].as_str().unwrap();
            let arch = m["arch"].as_str().unwrap();
            let b = &m["builder"];
            let n_layer = b["n_layer"].as_u64().unwrap() as u32;
            let n_expert = b["n_expert"].as_u64().unwrap() as u32;
            let (n_head, n_head_kv) = (
                m["n_head"].as_u64().unwrap() as u32,
                m["n_head_kv"].as_u64().unwrap() as u32,
            );
            let model = RecipeModel {
                arch: arch.to_string(),
                n_layer,
                n_expert,
                is_70b: RecipeModel::is_llm_type_70b(arch, n_layer, n_head, n_head_kv, n_expert),
            };
            // Shuffle the input order: plan() must sort like llama.cpp.
            let mut tensors = build_tensors(b);
            tensors.reverse();
            let specs: Vec<(&str, &[u64], DType)> = tensors
                .iter()
                .map(|(n, d)| (n.as_str(), d.as_slice(), DType::F32))
                .collect();
            for (ftype_name, want) in m["types"].as_object().unwrap() {
                let ftype: FileType = ftype_name.parse().unwrap();
                let planned = plan(ftype, model.clone(), &specs).unwrap();
                let listing: String = planned
                    .iter()
                    .map(|p| {
                        let dims: Vec<String> = p.dims.iter().map(u64::to_string).collect();
                        format!("{} {}\n", p.name, dims.join(","))
                    })
                    .collect();
                assert_eq!(
                    sha256_hex(listing.as_bytes()),
                    m["tensors_sha256"].as_str().unwrap(),
                    "{name}: tensor list or order differs from record.py"
                );
                let want = want.as_str().unwrap();
                assert_eq!(want.len(), planned.len());
                for (p, c) in planned.iter().zip(want.chars()) {
                    let id = c.to_digit(36).unwrap();
                    assert_eq!(
                        p.target.ggml_id(),
                        id,
                        "{name} {ftype_name}: {} is {:?}, llama.cpp says {}",
                        p.name,
                        p.target,
                        DType::ggml_name(id)
                    );
                }
            }
        }
    }

    #[test]
    fn smollm2_q4_k_m_in_words() {
        let mut names: Vec<(String, Vec<u64>)> = vec![
            ("token_embd.weight".into(), vec![576, 49152]),
            ("output_norm.weight".into(), vec![576]),
        ];
        for i in 0..30 {
            for (s, dims) in [
                ("attn_norm.weight", vec![576]),
                ("attn_q.weight", vec![576, 576]),
                ("attn_k.weight", vec![576, 192]),
                ("attn_v.weight", vec![576, 192]),
                ("attn_output.weight", vec![576, 576]),
                ("ffn_norm.weight", vec![576]),
                ("ffn_gate.weight", vec![576, 1536]),
                ("ffn_up.weight", vec![576, 1536]),
                ("ffn_down.weight", vec![1536, 576]),
            ] {
                names.push((format!("blk.{i}.{s}"), dims));
            }
        }
        let specs: Vec<(&str, &[u64], DType)> = names
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice(), DType::F32))
            .collect();
        let model = RecipeModel::new("llama", 30, 9, 3);
        let planned = plan(FileType::Q4_K_M, model, &specs).unwrap();
        let ty = |n: &str| planned.iter().find(|p| p.name == n).unwrap().target;
        // Tied: the embedding is the output; 576 is no multiple of 256 -> Q8_0.
        assert_eq!(ty("token_embd.weight"), DType::Q8_0);
        assert_eq!(ty("output_norm.weight"), DType::F32);
        // 576-wide rows: Q4_K falls back to Q5_0, Q6_K (attn_v with more bits) to Q8_0.
        assert_eq!(ty("blk.0.attn_q.weight"), DType::Q5_0);
        assert_eq!(ty("blk.0.attn_v.weight"), DType::Q8_0);
        // ffn_down rows are 1536 = 6 x 256 wide: Q6_K where use_more_bits, else Q4_K.
        assert_eq!(ty("blk.0.ffn_down.weight"), DType::Q6_K);
        assert_eq!(ty("blk.4.ffn_down.weight"), DType::Q4_K);
        assert_eq!(ty("blk.5.ffn_down.weight"), DType::Q6_K);
        assert_eq!(planned[0].name, "output_norm.weight");
        assert_eq!(planned[1].name, "token_embd.weight");
        assert_eq!(planned[2].name, "blk.0.attn_k.weight");
        assert_eq!(planned.last().unwrap().name, "blk.29.ffn_up.weight");
    }
}

//! Tensor element types and their dequantisation to f32, block by block as in ggml.
//! Checked against gguf-py's `dequantize` (fixtures/dequant/reference.json).

use half::{bf16, f16};
use rayon::prelude::*;

/// Element types pot can read and dequantise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[allow(non_camel_case_types)]
pub enum DType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q4_K,
    Q5_K,
    Q6_K,
}

impl DType {
    pub const ALL: [DType; 11] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::Q8_0 => "Q8_0",
            DType::Q4_0 => "Q4_0",
            DType::Q4_1 => "Q4_1",
            DType::Q5_0 => "Q5_0",
            DType::Q5_1 => "Q5_1",
            DType::Q4_K => "Q4_K",
            DType::Q5_K => "Q5_K",
            DType::Q6_K => "Q6_K",
        }
    }

    /// (elements per block, bytes per block)
    pub fn block(self) -> (usize, usize) {
        match self {
            DType::F32 => (1, 4),
            DType::F16 | DType::BF16 => (1, 2),
            DType::Q8_0 => (32, 34),
            DType::Q4_0 => (32, 18),
            DType::Q4_1 => (32, 20),
            DType::Q5_0 => (32, 22),
            DType::Q5_1 => (32, 24),
            DType::Q4_K => (256, 144),
            DType::Q5_K => (256, 176),
            DType::Q6_K => (256, 210),
        }
    }

    /// Bytes needed for `elements` values, or `None` if `elements` is not a whole number of blocks
    /// or the byte count overflows.
    pub fn bytes_for(self, elements: u64) -> Option<u64> {
        let (per_block, bytes) = self.block();
        if !elements.is_multiple_of(per_block as u64) {
            return None;
        }
        (elements / per_block as u64).checked_mul(bytes as u64)
    }

    /// GGML type id (as stored in GGUF tensor infos).
    pub fn from_ggml(id: u32) -> Option<DType> {
        Some(match id {
            0 => DType::F32,
            1 => DType::F16,
            2 => DType::Q4_0,
            3 => DType::Q4_1,
            6 => DType::Q5_0,
            7 => DType::Q5_1,
            8 => DType::Q8_0,
            12 => DType::Q4_K,
            13 => DType::Q5_K,
            14 => DType::Q6_K,
            30 => DType::BF16,
            _ => return None,
        })
    }

    pub fn ggml_id(self) -> u32 {
        match self {
            DType::F32 => 0,
            DType::F16 => 1,
            DType::Q4_0 => 2,
            DType::Q4_1 => 3,
            DType::Q5_0 => 6,
            DType::Q5_1 => 7,
            DType::Q8_0 => 8,
            DType::Q4_K => 12,
            DType::Q5_K => 13,
            DType::Q6_K => 14,
            DType::BF16 => 30,
        }
    }

    /// Name of any GGML type id, for error messages about the ones pot cannot read.
    pub fn ggml_name(id: u32) -> String {
        const NAMES: &[(u32, &str)] = &[
            (9, "Q8_1"),
            (10, "Q2_K"),
            (11, "Q3_K"),
            (15, "Q8_K"),
            (16, "IQ2_XXS"),
            (17, "IQ2_XS"),
            (18, "IQ3_XXS"),
            (19, "IQ1_S"),
            (20, "IQ4_NL"),
            (21, "IQ3_S"),
            (22, "IQ2_S"),
            (23, "IQ4_XS"),
            (24, "I8"),
            (25, "I16"),
            (26, "I32"),
            (27, "I64"),
            (28, "F64"),
            (29, "IQ1_M"),
            (34, "TQ1_0"),
            (35, "TQ2_0"),
            (39, "MXFP4"),
        ];
        match DType::from_ggml(id) {
            Some(d) => d.name().to_string(),
            None => NAMES
                .iter()
                .find(|(i, _)| *i == id)
                .map(|(_, n)| (*n).to_string())
                .unwrap_or_else(|| format!("unknown type id {id}")),
        }
    }

    /// safetensors dtype names this crate reads.
    pub fn from_safetensors(dtype: safetensors::Dtype) -> Option<DType> {
        match dtype {
            safetensors::Dtype::F32 => Some(DType::F32),
            safetensors::Dtype::F16 => Some(DType::F16),
            safetensors::Dtype::BF16 => Some(DType::BF16),
            _ => None,
        }
    }
}

/// Dequantises `bytes` (a whole number of blocks of `dtype`) into `out` (one f32 per element).
/// Large tensors are split over rayon's pool by runs of blocks.
///
/// # Panics
/// When the lengths disagree: callers validate byte counts against shapes when opening a file.
pub fn dequantize(dtype: DType, bytes: &[u8], out: &mut [f32]) {
    let (per_block, block_bytes) = dtype.block();
    assert_eq!(bytes.len() / block_bytes * per_block, out.len());
    assert_eq!(bytes.len() % block_bytes, 0);
    // Runs of blocks big enough to amortise the task overhead.
    let blocks_per_task = (65536 / per_block).max(1);
    out.par_chunks_mut(blocks_per_task * per_block)
        .zip(bytes.par_chunks(blocks_per_task * block_bytes))
        .for_each(|(out, bytes)| dequantize_run(dtype, bytes, out));
}

/// [`dequantize`] of one run of blocks. Types of one value per "block" are a loop per type, not
/// a call per value (F32 is a copy; this is what a streamed pass over F32 weights spends its
/// reading time on).
fn dequantize_run(dtype: DType, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        DType::F32 => {
            for (y, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *y = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        DType::F16 => {
            for (y, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *y = f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        DType::BF16 => {
            for (y, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *y = bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        _ => {
            let (per_block, block_bytes) = dtype.block();
            for (y, b) in out
                .chunks_exact_mut(per_block)
                .zip(bytes.chunks_exact(block_bytes))
            {
                dequantize_block(dtype, b, y);
            }
        }
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

fn dequantize_block(dtype: DType, b: &[u8], y: &mut [f32]) {
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => dequantize_run(dtype, b, y),
        DType::Q8_0 => {
            let d = f16_at(b, 0);
            for (y, &q) in y.iter_mut().zip(&b[2..34]) {
                *y = d * f32::from(q as i8);
            }
        }
        DType::Q4_0 => {
            let d = f16_at(b, 0);
            let qs = &b[2..18];
            for j in 0..16 {
                y[j] = (i32::from(qs[j] & 0xF) - 8) as f32 * d;
                y[j + 16] = (i32::from(qs[j] >> 4) - 8) as f32 * d;
            }
        }
        DType::Q4_1 => {
            let (d, m) = (f16_at(b, 0), f16_at(b, 2));
            let qs = &b[4..20];
            for j in 0..16 {
                y[j] = f32::from(qs[j] & 0xF) * d + m;
                y[j + 16] = f32::from(qs[j] >> 4) * d + m;
            }
        }
        DType::Q5_0 | DType::Q5_1 => {
            let (d, m, rest) = if dtype == DType::Q5_0 {
                (f16_at(b, 0), None, &b[2..])
            } else {
                (f16_at(b, 0), Some(f16_at(b, 2)), &b[4..])
            };
            let qh = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
            let qs = &rest[4..20];
            for j in 0..16 {
                let h0 = ((qh >> j) << 4) & 0x10;
                let h1 = (qh >> (j + 12)) & 0x10;
                let x0 = (u32::from(qs[j] & 0xF) | h0) as i32;
                let x1 = (u32::from(qs[j] >> 4) | h1) as i32;
                match m {
                    None => {
                        y[j] = (x0 - 16) as f32 * d;
                        y[j + 16] = (x1 - 16) as f32 * d;
                    }
                    Some(m) => {
                        y[j] = x0 as f32 * d + m;
                        y[j + 16] = x1 as f32 * d + m;
                    }
                }
            }
        }
        DType::Q4_K => {
            let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
            let scales = &b[4..16];
            let qs = &b[16..144];
            for j in 0..4 {
                let (sc1, m1) = scale_min_k4(2 * j, scales);
                let (sc2, m2) = scale_min_k4(2 * j + 1, scales);
                let (d1, min1) = (d * f32::from(sc1), dmin * f32::from(m1));
                let (d2, min2) = (d * f32::from(sc2), dmin * f32::from(m2));
                let q = &qs[32 * j..32 * j + 32];
                let y = &mut y[64 * j..64 * j + 64];
                for l in 0..32 {
                    y[l] = d1 * f32::from(q[l] & 0xF) - min1;
                    y[l + 32] = d2 * f32::from(q[l] >> 4) - min2;
                }
            }
        }
        DType::Q5_K => {
            let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
            let scales = &b[4..16];
            let qh = &b[16..48];
            let qs = &b[48..176];
            for j in 0..4 {
                let (sc1, m1) = scale_min_k4(2 * j, scales);
                let (sc2, m2) = scale_min_k4(2 * j + 1, scales);
                let (d1, min1) = (d * f32::from(sc1), dmin * f32::from(m1));
                let (d2, min2) = (d * f32::from(sc2), dmin * f32::from(m2));
                let (u1, u2) = (1u8 << (2 * j), 2u8 << (2 * j));
                let q = &qs[32 * j..32 * j + 32];
                let y = &mut y[64 * j..64 * j + 64];
                for l in 0..32 {
                    let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
                    let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
                    y[l] = d1 * f32::from((q[l] & 0xF) + h1) - min1;
                    y[l + 32] = d2 * f32::from((q[l] >> 4) + h2) - min2;
                }
            }
        }
        DType::Q6_K => {
            let d = f16_at(b, 208);
            for n in 0..2 {
                let ql = &b[64 * n..64 * n + 64];
                let qh = &b[128 + 32 * n..128 + 32 * n + 32];
                let sc = &b[192 + 8 * n..192 + 8 * n + 8];
                let y = &mut y[128 * n..128 * n + 128];
                for l in 0..32 {
                    let is = l / 16;
                    let q1 = i32::from((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32;
                    let q2 = i32::from((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    let q3 = i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                    let q4 = i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    let s = |k: usize| d * f32::from(sc[is + k] as i8);
                    y[l] = s(0) * q1 as f32;
                    y[l + 32] = s(2) * q2 as f32;
                    y[l + 64] = s(4) * q3 as f32;
                    y[l + 96] = s(6) * q4 as f32;
                }
            }
        }
    }
}

/// The 6-bit scale and min of sub-block `j` of a Q4_K / Q5_K block (ggml's get_scale_min_k4).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_types_dequantise_value_by_value() {
        let values: Vec<f32> = (0..70_001).map(|i| (i as f32 - 35_000.0) * 0.37).collect();
        let encodings: [(DType, Vec<u8>); 3] = [
            (
                DType::F32,
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            (
                DType::F16,
                values
                    .iter()
                    .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                    .collect(),
            ),
            (
                DType::BF16,
                values
                    .iter()
                    .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
                    .collect(),
            ),
        ];
        for (dtype, bytes) in encodings {
            let mut fast = vec![0.0; values.len()];
            dequantize(dtype, &bytes, &mut fast);
            let (_, width) = dtype.block();
            for (i, (y, b)) in fast.iter().zip(bytes.chunks_exact(width)).enumerate() {
                let one = match dtype {
                    DType::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                    DType::F16 => f16::from_le_bytes([b[0], b[1]]).to_f32(),
                    _ => bf16::from_le_bytes([b[0], b[1]]).to_f32(),
                };
                assert_eq!(y.to_bits(), one.to_bits(), "{dtype:?} value {i}");
            }
        }
    }
}

//! Tolerances that follow a pair's deployment path: the measured residual noise of exactly the
//! way the two sides are stored and computed, times the detection-table margin
//! ([`crate::DEFAULT_MARGIN`], 2.5), never below [`GAMMA_FLOOR`]. docs/STATISTICS.md has the
//! measurements each noise figure comes from.

use crate::{DEFAULT_GAMMA, DEFAULT_MARGIN, QUANTIZED_GAMMA};

/// The smallest tolerance pot uses, for paths whose measured noise is zero (pot computing the
/// same values twice). Identical computations score 0 and reach SAME in 8 / 10 / 14 queries
/// whatever gamma is (the test sees scores relative to the clip `2 gamma`); the floor has to sit
/// above the numerical noise of computing the same values another way (2e-6 for burn-ndarray
/// against flex, 1.2e-4 for wgpu on lavapipe: 2.5 x that is 3e-4) and below the smallest change
/// pot promises to catch in that setting (a 1-step AdamW fine-tune at lr 2e-5 scores 0.0058 on
/// average, 0.0045 at least: every score then sits above the clip and DIFFERENT comes in 8).
pub const GAMMA_FLOOR: f64 = 0.002;

/// How the two sides of a pair are stored and computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// pot computes the same values on both sides: the same file, a lossless re-encoding (F32
    /// export of a GGUF, a transformers re-save, another layout), a deployment pot derived
    /// itself, another batch size, thread count or CPU backend. Measured: 0 (ndarray 2e-6).
    Identical,
    /// One side rounds the other's values to f16. Measured: mean 0.00073, max 0.00094.
    F16,
    /// One side rounds the other's values to bf16. Measured: mean 0.0039 + 3 sd = 0.0064.
    Bf16,
    /// Both sides with pot's int8 weights (`--enable-8bit`) from differently rounded copies of
    /// the same weights. Measured (bf16 copy): mean 0.0093, max 0.0125.
    Int8Both,
    /// One side with pot's int8 weights, the other f32. Measured: mean 0.0184 + 3 sd = 0.0287.
    Int8One,
    /// A llama.cpp server against pot computing the same file as llama.cpp computes it
    /// (`--emulate llama.cpp`; the type of the file's matrices in `q4_0` or not).
    ServedEmulated { q4_0: bool },
    /// A server pot does not emulate, or not emulated: the `quantized` preset (the engine's
    /// arithmetic is not modelled, so the tolerance must swallow it).
    ServedUnmodelled,
}

/// A path's tolerance and where it comes from, for the report.
#[derive(Clone, Debug, PartialEq)]
pub struct PathTolerance {
    pub gamma: f64,
    /// The measured same-weights noise `N` of the path (`gamma = max(floor, 2.5 N)`).
    pub noise: f64,
    /// One line: the path and the measurement.
    pub source: String,
}

impl Path {
    pub fn name(self) -> &'static str {
        match self {
            Path::Identical => "identical values, computed by pot",
            Path::F16 => "one side rounded to f16",
            Path::Bf16 => "one side rounded to bf16",
            Path::Int8Both => "pot's int8 weights on both sides",
            Path::Int8One => "pot's int8 weights on one side",
            Path::ServedEmulated { .. } => "served by llama.cpp, reference computed as llama.cpp",
            Path::ServedUnmodelled => "served by an engine pot does not emulate",
        }
    }

    /// The path's measured noise and tolerance.
    pub fn tolerance(self) -> PathTolerance {
        let (noise, measured) = match self {
            Path::Identical => (
                0.0,
                "detection table rows f32, resaved, batch size, threads, ndarray: 0 (ndarray 2e-6)",
            ),
            Path::F16 => (0.001, "detection table row f16: max 0.00094"),
            Path::Bf16 => (0.0064, "detection table row bf16: mean 0.0039 + 3 sd"),
            Path::Int8Both => (
                0.0125,
                "detection table row bf16 (--enable-8bit): max 0.0125",
            ),
            Path::Int8One => (0.0287, "detection table row int8: mean 0.0184 + 3 sd"),
            Path::ServedEmulated { q4_0: false } => (
                0.0104,
                "docs/SERVED.md, llama-cpp-python vs --emulate llama.cpp on the same file: max 0.0104 (two challenges; the others 0)",
            ),
            Path::ServedEmulated { q4_0: true } => (
                0.0205,
                "docs/SERVED.md, llama-cpp-python vs --emulate llama.cpp on a Q4_0 file: max 0.0205",
            ),
            Path::ServedUnmodelled => {
                return PathTolerance {
                    gamma: QUANTIZED_GAMMA,
                    noise: QUANTIZED_GAMMA / DEFAULT_MARGIN,
                    source: format!(
                        "{}: the quantized preset ({QUANTIZED_GAMMA}); the verdict cannot tell a \
                         change below it from the engine's own arithmetic",
                        self.name()
                    ),
                };
            }
        };
        let gamma = round_up(GAMMA_FLOOR.max(DEFAULT_MARGIN * noise));
        debug_assert!(self != Path::Bf16 || (gamma - DEFAULT_GAMMA).abs() < 1e-12);
        PathTolerance {
            gamma,
            noise,
            source: format!(
                "{}: noise N = {noise} ({measured}); gamma = max({GAMMA_FLOOR}, 2.5 N)",
                self.name()
            ),
        }
    }
}

/// Up to the next multiple of 0.0005 (tolerances read as measured figures, not as artefacts
/// of a product).
fn round_up(g: f64) -> f64 {
    ((g * 2000.0) - 1e-9).ceil() / 2000.0
}

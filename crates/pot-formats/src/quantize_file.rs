//! A whole GGUF model quantised as `llama_model_quantize` (llama-quantize) does it without an
//! importance matrix, byte for byte: [`quantize_gguf`].
//!
//! The pieces are [`crate::quantize`] (the quantisers, the recipe [`crate::quantize::plan`] and the list of what
//! llama.cpp does to a file, in its module docs) and [`crate::gguf_write`]. This module reads
//! the source, checks it as llama.cpp's loader would, and streams the output one tensor at a
//! time:
//!
//! * Metadata: the source's key/value pairs byte for byte, in order, less
//!   `general.quantization_version`, `general.file_type` and the `split.*` keys; then
//!   `general.quantization_version` = [`GGML_QNT_VERSION`] and `general.file_type` = the
//!   `llama_ftype` as the last two (u32).
//! * Tensors in [`crate::quantize::plan`]'s order (`llama_tensor_order`), dimensions as `ggml_n_dims` (trailing
//!   ones dropped), data aligned to [`GGUF_ALIGNMENT`] with zero padding after every tensor.
//! * A tensor whose target type is its source type is copied byte for byte; any other is
//!   dequantised to f32 ([`dequantize`]: exact for F16/BF16) and quantised row by row
//!   ([`quantize_row`], rows in parallel over rayon), in slabs of rows so that a tensor's f32
//!   values are never all in memory at once.
//! * Like llama.cpp (`llama_model_loader` with `check_tensors`), every tensor's data is checked
//!   first: NaN or infinite values (for block formats: scales) are refused, naming the tensor.
//! * Like llama-quantize without `--allow-requantize`, a source tensor that is already quantised
//!   (Q8_0, Q4_K, ...; F16 and BF16 are not) and would change type is refused unless
//!   [`QuantizeOptions::allow_requantize`]. Unlike llama.cpp, which refuses when it reaches the
//!   tensor, this is checked before anything is written.
//!
//! Refused where llama.cpp would write something unusable or differ from this: a split model
//! (`split.count` > 1: llama.cpp reads all the parts), a `general.alignment` other than 32
//! (llama.cpp copies the key but writes with alignment 32, a file its own reader rejects),
//! duplicate keys or tensor names (llama.cpp's reader refuses them).
//!
//! A Hugging Face directory (or a `.safetensors` file) is refused with the way to get a GGUF:
//! llama.cpp's `convert_hf_to_gguf.py` (`pot convert` writes safetensors, not GGUF).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::dtype::{DType, dequantize};
use crate::error::FormatError;
use crate::gguf::{GgufFile, GgufTensor, Value};
use crate::gguf_write::{self, Entry, TensorSpec};
use crate::quantize::{
    FileType, GGML_QNT_VERSION, GGUF_ALIGNMENT, PlannedTensor, QuantizeError, Recipe, RecipeModel,
    llama_tensor_order, quantize_row, row_size,
};

/// What can go wrong quantising a file; every message names the file or tensor and what to do.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeFileError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(
        "{path} is {what}: pot quantizes GGUF files. Make an F32, F16 or BF16 GGUF of it first with llama.cpp's convert_hf_to_gguf.py (`python convert_hf_to_gguf.py MODEL_DIR --outtype f16 --outfile model.f16.gguf`), then quantize that (`pot convert` writes safetensors, not GGUF)"
    )]
    NotGguf { path: PathBuf, what: &'static str },
    #[error("{path}: metadata key `{key}` is missing; {why}")]
    MissingKey {
        path: PathBuf,
        key: String,
        why: &'static str,
    },
    #[error("{path}: metadata key `{key}` is {value}; {why}")]
    BadKey {
        path: PathBuf,
        key: String,
        value: String,
        why: String,
    },
    #[error(
        "{path} is part {no} of a model split into {count} files; merge the parts first (`llama-gguf-split --merge FIRST_PART.gguf merged.gguf`) and quantize the merged file"
    )]
    Split { path: PathBuf, no: u64, count: u64 },
    #[error(
        "{path}: {what} `{name}` appears twice; the file is malformed (llama.cpp refuses it too)"
    )]
    Duplicate {
        path: PathBuf,
        what: &'static str,
        name: String,
    },
    #[error(
        "{path}: tensor `{tensor}` is already quantized ({dtype}); quantizing it again to {target} adds the errors of both quantizations. Start from an F32, F16 or BF16 GGUF, or allow it explicitly (`pot quantize --allow-requantize`, llama-quantize's flag of the same name)"
    )]
    Requantize {
        path: PathBuf,
        tensor: String,
        dtype: &'static str,
        target: &'static str,
    },
    #[error(
        "{path}: tensor `{tensor}` ({dtype}) holds a NaN or an infinity ({at}); llama.cpp refuses such a file too (\"tensor has invalid data\"). Repair or re-export the source model"
    )]
    InvalidData {
        path: PathBuf,
        tensor: String,
        dtype: &'static str,
        at: String,
    },
    #[error("{path}: the recipe failed: {source}")]
    Recipe {
        path: PathBuf,
        source: QuantizeError,
    },
    #[error("{path}: tensor `{tensor}` cannot be written as {target}: {source}")]
    Tensor {
        path: PathBuf,
        tensor: String,
        target: &'static str,
        source: QuantizeError,
    },
    #[error(
        "the output {out} is the source file itself; write the quantized model to another path"
    )]
    SameFile { out: PathBuf },
}

/// Choices beyond the file type (llama-quantize's flags that [`quantize_gguf`] supports).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuantizeOptions {
    /// Quantise tensors that are already quantised in the source (dequantised first), as
    /// llama-quantize's `--allow-requantize`. Off: such a source is refused.
    pub allow_requantize: bool,
}

/// The tensors written in one type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeSummary {
    /// The type written.
    pub dtype: DType,
    /// How many tensors were written in it.
    pub tensors: usize,
    /// Of those, how many were copied byte for byte (already in that type in the source).
    pub copied: usize,
    /// Their bytes in the source and in the output (without alignment padding).
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// What [`quantize_gguf`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuantizeSummary {
    pub ftype: FileType,
    /// Per type written, in [`DType::ALL`] order; only the types that occur.
    pub by_type: Vec<TypeSummary>,
    /// Tensors whose recipe type did not fit their row length and fell back (llama.cpp's
    /// "N of M tensor(s) required fallback quantization").
    pub n_fallback: usize,
    /// Values in the model.
    pub elements: u64,
    /// Tensor bytes in the source and in the output (without padding).
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Size of the output file.
    pub file_bytes: u64,
}

impl QuantizeSummary {
    /// Bits per weight of the output's tensor data (llama-quantize's "BPW").
    pub fn bits_per_weight(&self) -> f64 {
        self.bytes_out as f64 * 8.0 / self.elements.max(1) as f64
    }
}

/// Values per slab when a tensor is converted: the f32 buffer stays below 32 MiB.
const SLAB_VALUES: usize = 8 << 20;

/// Quantises the GGUF file `src` to `ftype` into `out` (written atomically), byte-identical to
/// `llama_model_quantize` with default parameters and no importance matrix (see the module
/// docs). `progress(done, total)` is called with the number of tensors written so far (0 first,
/// then after each tensor).
pub fn quantize_gguf(
    src: &Path,
    ftype: FileType,
    out: &Path,
    options: QuantizeOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<QuantizeSummary, QuantizeFileError> {
    refuse_non_gguf(src)?;
    if same_file(src, out) {
        return Err(QuantizeFileError::SameFile {
            out: out.to_path_buf(),
        });
    }
    let gguf = match GgufFile::open(src) {
        Err(FormatError::UnknownFormat { path, .. }) if is_safetensors_file(&path) => {
            return Err(QuantizeFileError::NotGguf {
                path,
                what: "a safetensors file",
            });
        }
        other => other?,
    };
    check_metadata(&gguf)?;
    let model = recipe_model(&gguf)?;
    let (planned, sources, n_fallback) = plan_file(&gguf, ftype, model)?;
    check_tensors(&gguf, &planned, &sources, options)?;

    // Metadata: the source's entries less the keys llama.cpp replaces or removes, then the two
    // it sets last.
    const DROPPED: [&str; 5] = [
        "general.quantization_version",
        "general.file_type",
        "split.no",
        "split.count",
        "split.tensors.count",
    ];
    let mut entries: Vec<Entry> = gguf
        .entries
        .iter()
        .enumerate()
        .filter(|(_, (key, _))| !DROPPED.contains(&key.as_str()))
        .map(|(i, _)| Entry::Copied(&gguf, i))
        .collect();
    entries.push(Entry::New(
        "general.quantization_version",
        Value::U32(GGML_QNT_VERSION),
    ));
    entries.push(Entry::New(
        "general.file_type",
        Value::U32(ftype.llama_ftype()),
    ));

    let specs: Vec<TensorSpec> = planned
        .iter()
        .map(|p| TensorSpec {
            name: p.name.clone(),
            dims: output_dims(&p.dims),
            dtype: p.target,
        })
        .collect();

    let total = planned.len();
    progress(0, total);
    let mut by_type: Vec<TypeSummary> = Vec::new();
    gguf_write::write(out, &entries, &specs, GGUF_ALIGNMENT as u64, |i| {
        let (p, t) = (&planned[i], sources[i]);
        let bytes = gguf.bytes(t);
        let copied = p.target == p.source;
        let data = if copied {
            bytes.to_vec()
        } else {
            convert(p, bytes).map_err(|source| FormatError::Write {
                path: out.to_path_buf(),
                reason: QuantizeFileError::Tensor {
                    path: src.to_path_buf(),
                    tensor: p.name.clone(),
                    target: p.target.name(),
                    source,
                }
                .to_string(),
            })?
        };
        let entry = match by_type.iter_mut().find(|s| s.dtype == p.target) {
            Some(e) => e,
            None => {
                by_type.push(TypeSummary {
                    dtype: p.target,
                    tensors: 0,
                    copied: 0,
                    bytes_in: 0,
                    bytes_out: 0,
                });
                by_type.last_mut().unwrap()
            }
        };
        entry.tensors += 1;
        entry.copied += usize::from(copied);
        entry.bytes_in += bytes.len() as u64;
        entry.bytes_out += data.len() as u64;
        progress(i + 1, total);
        Ok(data)
    })?;

    by_type.sort_by_key(|s| DType::ALL.iter().position(|&d| d == s.dtype));
    let file_bytes = std::fs::metadata(out)
        .map_err(|e| FormatError::Io {
            path: out.to_path_buf(),
            source: e,
        })?
        .len();
    Ok(QuantizeSummary {
        ftype,
        n_fallback,
        elements: sources.iter().map(|t| t.elements()).sum(),
        bytes_in: by_type.iter().map(|s| s.bytes_in).sum(),
        bytes_out: by_type.iter().map(|s| s.bytes_out).sum(),
        by_type,
        file_bytes,
    })
}

/// A directory or a safetensors file: say how to get a GGUF.
fn refuse_non_gguf(src: &Path) -> Result<(), QuantizeFileError> {
    if src.is_dir() {
        let what = if src.join("config.json").is_file() {
            "a Hugging Face model directory"
        } else {
            "a directory"
        };
        return Err(QuantizeFileError::NotGguf {
            path: src.to_path_buf(),
            what,
        });
    }
    Ok(())
}

fn is_safetensors_file(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
}

fn same_file(src: &Path, out: &Path) -> bool {
    match (src.canonicalize(), out.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The file-level checks of llama.cpp's reader that matter for the output.
fn check_metadata(gguf: &GgufFile) -> Result<(), QuantizeFileError> {
    let path = gguf.path();
    let mut seen = HashSet::new();
    for (key, _) in &gguf.entries {
        if !seen.insert(key.as_str()) {
            return Err(QuantizeFileError::Duplicate {
                path: path.to_path_buf(),
                what: "metadata key",
                name: key.clone(),
            });
        }
    }
    let mut seen = HashSet::new();
    for t in &gguf.tensors {
        if !seen.insert(t.name.as_str()) {
            return Err(QuantizeFileError::Duplicate {
                path: path.to_path_buf(),
                what: "tensor",
                name: t.name.clone(),
            });
        }
    }
    if let Some(count) = gguf.get("split.count") {
        let n = count.as_u64().unwrap_or(0);
        if n > 1 {
            let no = gguf.get("split.no").and_then(Value::as_u64).unwrap_or(0);
            return Err(QuantizeFileError::Split {
                path: path.to_path_buf(),
                no: no + 1,
                count: n,
            });
        }
    }
    if let Some(a) = gguf.get("general.alignment")
        && a.as_u64() != Some(GGUF_ALIGNMENT as u64)
    {
        return Err(QuantizeFileError::BadKey {
            path: path.to_path_buf(),
            key: "general.alignment".into(),
            value: format!("{a:?}"),
            why: format!(
                "llama-quantize copies this key but always aligns to {GGUF_ALIGNMENT} bytes, which makes a file llama.cpp cannot read; remove the key (or set it to {GGUF_ALIGNMENT}) first"
            ),
        });
    }
    Ok(())
}

/// The model facts the recipe needs, from the metadata as llama.cpp's loader reads them.
fn recipe_model(gguf: &GgufFile) -> Result<RecipeModel, QuantizeFileError> {
    let path = gguf.path();
    let missing = |key: &str, why| QuantizeFileError::MissingKey {
        path: path.to_path_buf(),
        key: key.to_string(),
        why,
    };
    let arch = match gguf.get("general.architecture") {
        None => {
            return Err(missing(
                "general.architecture",
                "llama-quantize needs the model's architecture (a GGUF written by convert_hf_to_gguf.py has it)",
            ));
        }
        Some(v) => v.as_str().ok_or_else(|| QuantizeFileError::BadKey {
            path: path.to_path_buf(),
            key: "general.architecture".into(),
            value: format!("{v:?}"),
            why: "it must be a string such as \"llama\"".into(),
        })?,
    };
    // A number, or (per-layer hyperparameters) an array whose first element llama.cpp uses.
    let number = |key: &str| -> Result<Option<u32>, QuantizeFileError> {
        let Some(v) = gguf.get(key) else {
            return Ok(None);
        };
        let first = v.as_array().map_or(Some(v), <[Value]>::first);
        first
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| QuantizeFileError::BadKey {
                path: path.to_path_buf(),
                key: key.to_string(),
                value: format!("{v:?}"),
                why: "expected a non-negative integer".into(),
            })
    };
    let block_count = format!("{arch}.block_count");
    let n_layer = number(&block_count)?.ok_or_else(|| {
        missing(
            &block_count,
            "the recipe counts layers (llama.cpp cannot load the model without it either)",
        )
    })?;
    let n_head = number(&format!("{arch}.attention.head_count"))?.unwrap_or(0);
    let n_head_kv = number(&format!("{arch}.attention.head_count_kv"))?.unwrap_or(n_head);
    let n_expert = number(&format!("{arch}.expert_count"))?.unwrap_or(0);
    Ok(RecipeModel {
        arch: arch.to_string(),
        n_layer,
        n_expert,
        is_70b: RecipeModel::is_llm_type_70b(arch, n_layer, n_head, n_head_kv, n_expert),
    })
}

/// [`crate::quantize::plan`] over the file's tensors: the plan, the source tensors in the same
/// (output) order, and the recipe's fallback count.
fn plan_file(
    gguf: &GgufFile,
    ftype: FileType,
    model: RecipeModel,
) -> Result<(Vec<PlannedTensor>, Vec<&GgufTensor>, usize), QuantizeFileError> {
    let mut sorted: Vec<&GgufTensor> = gguf.tensors.iter().collect();
    sorted.sort_by(|a, b| llama_tensor_order(&a.name, &b.name));
    let mut recipe = Recipe::new(ftype, model, gguf.tensors.iter().map(|t| t.name.as_str()));
    let planned = sorted
        .iter()
        .map(|t| {
            Ok(PlannedTensor {
                name: t.name.clone(),
                dims: t.dims.clone(),
                source: t.dtype,
                target: recipe.type_for(&t.name, &t.dims, t.dtype)?,
            })
        })
        .collect::<Result<Vec<_>, QuantizeError>>()
        .map_err(|source| QuantizeFileError::Recipe {
            path: gguf.path().to_path_buf(),
            source,
        })?;
    Ok((planned, sorted, recipe.n_fallback()))
}

/// Before writing: the requantisation rule, row lengths the targets can hold, and every
/// tensor's data (llama.cpp's `ggml_validate_row_data`).
fn check_tensors(
    gguf: &GgufFile,
    planned: &[PlannedTensor],
    sources: &[&GgufTensor],
    options: QuantizeOptions,
) -> Result<(), QuantizeFileError> {
    let path = gguf.path();
    for p in planned {
        if p.target == p.source {
            continue;
        }
        if is_quantized(p.source) && !options.allow_requantize {
            return Err(QuantizeFileError::Requantize {
                path: path.to_path_buf(),
                tensor: p.name.clone(),
                dtype: p.source.name(),
                target: p.target.name(),
            });
        }
        let n_per_row = p.dims.first().copied().unwrap_or(1) as usize;
        row_size(p.target, n_per_row).map_err(|source| QuantizeFileError::Tensor {
            path: path.to_path_buf(),
            tensor: p.name.clone(),
            target: p.target.name(),
            source,
        })?;
    }
    for t in sources {
        if let Some(at) = first_invalid(t.dtype, gguf.bytes(t)) {
            return Err(QuantizeFileError::InvalidData {
                path: path.to_path_buf(),
                tensor: t.name.clone(),
                dtype: t.dtype.name(),
                at,
            });
        }
    }
    Ok(())
}

/// `ggml_is_quantized` for the types pot reads.
fn is_quantized(dtype: DType) -> bool {
    !matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
}

/// The dimensions llama.cpp writes: `ne` (padded with ones) up to `ggml_n_dims`, the last
/// dimension that is not 1 (at least one).
fn output_dims(dims: &[u64]) -> Vec<u64> {
    let n = dims.iter().rposition(|&d| d != 1).map_or(1, |i| i + 1);
    (0..n).map(|i| dims.get(i).copied().unwrap_or(1)).collect()
}

/// `ggml_validate_row_data`: where the first NaN or infinity is (a value of F32/F16/BF16, the
/// f16 scales of a block format), or `None`.
fn first_invalid(dtype: DType, bytes: &[u8]) -> Option<String> {
    let f16_bad = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]) & 0x7c00 == 0x7c00;
    let value = |i: usize| format!("value {i}");
    match dtype {
        DType::F32 => first_unit(bytes, 4, |b| {
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x7f80_0000 == 0x7f80_0000
        })
        .map(value),
        DType::F16 => first_unit(bytes, 2, |b| f16_bad(b, 0)).map(value),
        DType::BF16 => first_unit(bytes, 2, |b| {
            u16::from_le_bytes([b[0], b[1]]) & 0x7f80 == 0x7f80
        })
        .map(value),
        _ => {
            // Offsets of the f16 scales ggml checks: d (and m / dmin).
            let scales: &[usize] = match dtype {
                DType::Q4_0 | DType::Q5_0 | DType::Q8_0 => &[0],
                DType::Q4_1 | DType::Q5_1 | DType::Q4_K | DType::Q5_K => &[0, 2],
                DType::Q6_K => &[208],
                DType::F32 | DType::F16 | DType::BF16 => unreachable!(),
            };
            first_unit(bytes, dtype.block().1, |b| {
                scales.iter().any(|&at| f16_bad(b, at))
            })
            .map(|i| format!("the scale of block {i}"))
        }
    }
}

/// The index of the first `unit`-byte item of `bytes` for which `bad` holds: runs of 64 Ki
/// items in parallel, a plain loop within each.
fn first_unit(bytes: &[u8], unit: usize, bad: impl Fn(&[u8]) -> bool + Sync) -> Option<usize> {
    const PER_TASK: usize = 1 << 16;
    bytes
        .par_chunks(unit * PER_TASK)
        .enumerate()
        .find_map_first(|(k, run)| {
            run.chunks_exact(unit)
                .position(&bad)
                .map(|i| k * PER_TASK + i)
        })
}

/// A tensor in its target type: dequantised (or widened) to f32 and quantised, slab of rows by
/// slab of rows, the rows of a slab in parallel.
fn convert(p: &PlannedTensor, src: &[u8]) -> Result<Vec<u8>, QuantizeError> {
    let n_per_row = p.dims.first().copied().unwrap_or(1) as usize;
    let src_row = row_size(p.source, n_per_row)?;
    let dst_row = row_size(p.target, n_per_row)?;
    if src_row == 0 || dst_row == 0 {
        // No values (the reader refuses empty dimensions; kept safe all the same).
        return Ok(Vec::new());
    }
    let n_rows = src.len() / src_row;
    let mut dst = vec![0u8; n_rows * dst_row];
    let rows_per_slab = (SLAB_VALUES / n_per_row.max(1)).max(1);
    let mut values = vec![0f32; rows_per_slab.min(n_rows) * n_per_row];
    // Tasks of whole rows, about 64 Ki values each (as `quantize::quantize`).
    let rows_per_task = (65_536 / n_per_row.max(1)).max(1);
    for (x, y) in src
        .chunks(rows_per_slab * src_row)
        .zip(dst.chunks_mut(rows_per_slab * dst_row))
    {
        let v = &mut values[..x.len() / src_row * n_per_row];
        dequantize(p.source, x, v);
        y.par_chunks_mut(rows_per_task * dst_row)
            .zip(v.par_chunks(rows_per_task * n_per_row))
            .try_for_each(|(y, x)| quantize_row(p.target, x, y))?;
    }
    Ok(dst)
}

//! `pot convert`: any readable model to a Hugging Face directory (config.json, model.safetensors,
//! tokenizer.json, tokenizer_config.json) in f32, f16 or bf16.
//!
//! The safetensors file is written tensor by tensor (dequantise one, write it, drop it), so
//! converting a model larger than memory works. Everything goes to a temporary sibling directory
//! that is renamed into place at the end: an interrupted conversion leaves no half-written model.
//! Each file is written and synced by [`crate::atomic`], the writer of reports and fingerprints.

use std::io::Write;
use std::path::{Path, PathBuf};

use half::{bf16, f16};

use crate::atomic::{AtomicFile, write_atomically};
use crate::dtype::DType;
use crate::error::{FormatError, Result};
use crate::model::Model;

/// Output element types of a conversion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputDType {
    F32,
    F16,
    Bf16,
}

impl OutputDType {
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Some(Self::F32),
            "f16" | "float16" => Some(Self::F16),
            "bf16" | "bfloat16" => Some(Self::Bf16),
            _ => None,
        }
    }

    fn safetensors_name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::Bf16 => "BF16",
        }
    }

    fn torch_name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::F16 => "float16",
            Self::Bf16 => "bfloat16",
        }
    }

    fn bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::Bf16 => 2,
        }
    }

    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::F16 => DType::F16,
            Self::Bf16 => DType::BF16,
        }
    }
}

/// Writes `model` as a Hugging Face directory at `out` (which must not exist yet).
/// `progress` is called with (tensors written, total) after each tensor.
pub fn convert(
    model: &Model,
    out: &Path,
    dtype: OutputDType,
    progress: impl FnMut(usize, usize),
) -> Result<()> {
    convert_with(model, out, dtype, |_, _| {}, progress)
}

/// [`convert`] with `edit(name, values)` applied to each tensor's f32 values (internal name,
/// Hugging Face row order) before it is written: how the variant workshop (`cargo xtask
/// variants`) writes modified copies of a model that pot then reads like any other.
pub fn convert_with(
    model: &Model,
    out: &Path,
    dtype: OutputDType,
    mut edit: impl FnMut(&str, &mut [f32]),
    mut progress: impl FnMut(usize, usize),
) -> Result<()> {
    let write_err = |path: &Path, reason: String| FormatError::Write {
        path: path.into(),
        reason,
    };
    if out.exists() {
        return Err(write_err(
            out,
            "it already exists; choose a new directory or remove it first".into(),
        ));
    }
    let staging = staging_dir(out);
    std::fs::create_dir_all(&staging).map_err(|e| write_err(&staging, e.to_string()))?;
    let result = write_all(model, &staging, dtype, &mut edit, &mut progress);
    match result {
        Ok(()) => {
            std::fs::rename(&staging, out).map_err(|e| write_err(out, e.to_string()))?;
            crate::atomic::sync_parent(out);
            Ok(())
        }
        Err(e) => {
            std::fs::remove_dir_all(&staging).ok();
            Err(e)
        }
    }
}

fn staging_dir(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".partial-{}", std::process::id()));
    out.with_file_name(name)
}

fn write_all(
    model: &Model,
    dir: &Path,
    dtype: OutputDType,
    edit: &mut impl FnMut(&str, &mut [f32]),
    progress: &mut impl FnMut(usize, usize),
) -> Result<()> {
    write_hf_metadata(dir, model.config(), &model.tokenizer()?, dtype)?;
    let tensors: Vec<(String, Vec<usize>)> = model
        .tensors()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    write_safetensors(
        &dir.join("model.safetensors"),
        dtype,
        &tensors,
        "pot convert",
        |i, name| {
            let mut values = model.load_f32(name)?;
            edit(name, &mut values);
            progress(i + 1, tensors.len());
            Ok(values)
        },
    )
}

/// The files of a Hugging Face directory beside the weights: config.json (refused where the
/// configuration has no exact config.json), tokenizer.json and tokenizer_config.json.
pub fn write_hf_metadata(
    dir: &Path,
    config: &crate::ModelConfig,
    tokenizer: &crate::Tokenizer,
    dtype: OutputDType,
) -> Result<()> {
    let write_err = |path: &Path, e: &dyn std::fmt::Display| FormatError::Write {
        path: path.into(),
        reason: e.to_string(),
    };
    config.expressible_as_hf().map_err(|reason| {
        write_err(
            dir,
            &format!("this model has no exact config.json: {reason}"),
        )
    })?;
    let config_path = dir.join("config.json");
    let config_json = serde_json::to_string_pretty(&config.to_hf_json(dtype.torch_name()))
        .expect("JSON values serialise");
    write_atomically(&config_path, config_json.as_bytes())
        .map_err(|e| write_err(&config_path, &e))?;
    let tok_path = dir.join("tokenizer.json");
    let tok_json = tokenizer.to_json().map_err(|e| write_err(&tok_path, &e))?;
    write_atomically(&tok_path, tok_json.as_bytes()).map_err(|e| write_err(&tok_path, &e))?;
    let tok_config = serde_json::json!({
        "add_bos_token": tokenizer.bos.is_some(),
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
    });
    let tok_config_path = dir.join("tokenizer_config.json");
    write_atomically(&tok_config_path, tok_config.to_string().as_bytes())
        .map_err(|e| write_err(&tok_config_path, &e))
}

/// Writes a safetensors file of `tensors` (name, shape; written in this order, which should be
/// sorted by name as safetensors readers expect) in `dtype`, asking `values(i, name)` for one
/// tensor's f32 values at a time, so a file larger than memory can be written. Atomic: a
/// failure leaves nothing at `path`. `pot convert` and `cargo xtask bigmodel` write this way.
pub fn write_safetensors(
    path: &Path,
    dtype: OutputDType,
    tensors: &[(String, Vec<usize>)],
    written_by: &str,
    mut values: impl FnMut(usize, &str) -> Result<Vec<f32>>,
) -> Result<()> {
    let write_err = |e: &dyn std::fmt::Display| FormatError::Write {
        path: path.into(),
        reason: e.to_string(),
    };
    // Header first: every tensor's dtype, shape and byte range.
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".into(),
        serde_json::json!({ "format": "pt", "converted_by": written_by }),
    );
    let mut offset = 0u64;
    for (name, shape) in tensors {
        let len = shape.iter().map(|&d| d as u64).product::<u64>() * dtype.bytes() as u64;
        header.insert(
            name.clone(),
            serde_json::json!({
                "dtype": dtype.safetensors_name(),
                "shape": shape,
                "data_offsets": [offset, offset + len],
            }),
        );
        offset += len;
    }
    let mut header_bytes = serde_json::to_vec(&header).expect("JSON values serialise");
    while !header_bytes.len().is_multiple_of(8) {
        header_bytes.push(b' ');
    }
    let mut w = AtomicFile::create(path).map_err(|e| write_err(&e))?;
    w.write_all(&(header_bytes.len() as u64).to_le_bytes())
        .and_then(|()| w.write_all(&header_bytes))
        .map_err(|e| write_err(&e))?;
    for (i, (name, shape)) in tensors.iter().enumerate() {
        let values = values(i, name)?;
        let expected: usize = shape.iter().product();
        if values.len() != expected {
            return Err(write_err(&format!(
                "tensor `{name}` has {} values, its shape {shape:?} needs {expected}",
                values.len()
            )));
        }
        let bytes: Vec<u8> = match dtype {
            OutputDType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            OutputDType::F16 => values
                .iter()
                .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                .collect(),
            OutputDType::Bf16 => values
                .iter()
                .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
                .collect(),
        };
        w.write_all(&bytes).map_err(|e| write_err(&e))?;
    }
    w.commit().map_err(|e| write_err(&e))?;
    Ok(())
}

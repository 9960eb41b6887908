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
    let write_err = |path: &Path, e: &dyn std::fmt::Display| FormatError::Write {
        path: path.into(),
        reason: e.to_string(),
    };
    let config = model.config();
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

    let tokenizer = model.tokenizer()?;
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
        .map_err(|e| write_err(&tok_config_path, &e))?;

    // Header first: every tensor's dtype, shape and byte range, in sorted name order.
    let tensors: Vec<_> = model.tensors().cloned().collect();
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".into(),
        serde_json::json!({ "format": "pt", "converted_by": "pot convert" }),
    );
    let mut offset = 0u64;
    for t in &tensors {
        let len = t.elements() * dtype.bytes() as u64;
        header.insert(
            t.name.clone(),
            serde_json::json!({
                "dtype": dtype.safetensors_name(),
                "shape": t.shape,
                "data_offsets": [offset, offset + len],
            }),
        );
        offset += len;
    }
    let mut header_bytes = serde_json::to_vec(&header).expect("JSON values serialise");
    while !header_bytes.len().is_multiple_of(8) {
        header_bytes.push(b' ');
    }

    let st_path = dir.join("model.safetensors");
    let mut w = AtomicFile::create(&st_path).map_err(|e| write_err(&st_path, &e))?;
    w.write_all(&(header_bytes.len() as u64).to_le_bytes())
        .and_then(|()| w.write_all(&header_bytes))
        .map_err(|e| write_err(&st_path, &e))?;
    for (i, t) in tensors.iter().enumerate() {
        let mut values = model.load_f32(&t.name)?;
        edit(&t.name, &mut values);
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
        w.write_all(&bytes).map_err(|e| write_err(&st_path, &e))?;
        progress(i + 1, tensors.len());
    }
    w.commit().map_err(|e| write_err(&st_path, &e))?;
    Ok(())
}

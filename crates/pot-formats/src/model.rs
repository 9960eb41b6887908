//! A model on disk, whatever its format: configuration, tensors under internal names, raw bytes,
//! f32 values, tokenizer, and a description computed without touching the weights.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::config::{Architecture, ModelConfig};
use crate::dtype::{DType, dequantize};
use crate::error::{FormatError, Result};
use crate::gguf::GgufFile;
use crate::names::{
    gguf_expert_stack, hf_name_of_gguf, is_conv1d_weight, layer_of, rope_permutation_heads,
    unpermute_rope_rows,
};
use crate::tokenizer::Tokenizer;

/// Where a model's bytes live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Gguf,
    Safetensors,
}

/// One tensor under its internal name.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    /// Row-major, outermost first.
    pub shape: Vec<usize>,
    /// Stored bytes.
    pub bytes: u64,
}

impl TensorInfo {
    pub fn elements(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
}

/// Where a tensor's bytes are: which mapped file and which range.
#[derive(Clone, Debug)]
struct Location {
    info: TensorInfo,
    file: usize,
    start: usize,
    /// llama.cpp stored this tensor's rows permuted for interleaved RoPE (see names.rs).
    permuted_heads: Option<usize>,
    /// A GPT-2 `Conv1D` weight stored by llama.cpp as `[out, in]`: read transposed into the
    /// Hugging Face `[in, out]` layout (its `info.shape` is that layout already).
    transposed: bool,
    /// A Gemma RMSNorm weight stored as `w` of `x * (1 + w)`: read as `1 + w`, the multiplier
    /// llama.cpp's converter stores (transformers adds 1 in f32 too, so both read identically).
    plus_one: bool,
}

enum Files {
    Gguf(Box<GgufFile>),
    Safetensors(Vec<Mmap>),
}

/// A 2-D weight as stored ([`Model::stored_rows`]).
pub struct StoredRows<'a> {
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    /// `rows` rows of `cols` values, as the file stores them.
    pub bytes: &'a [u8],
    /// `order[r]`: the stored row that is internal row `r`; `None` when they coincide.
    pub order: Option<Vec<usize>>,
}

impl StoredRows<'_> {
    /// The stored bytes of internal row `r`.
    pub fn row(&self, r: usize) -> &[u8] {
        let stored = self.order.as_ref().map_or(r, |o| o[r]);
        let len = self.bytes.len() / self.rows.max(1);
        &self.bytes[stored * len..(stored + 1) * len]
    }
}

/// An opened model. Weights stay memory-mapped; nothing is read until asked for.
pub struct Model {
    path: PathBuf,
    format: Format,
    config: ModelConfig,
    files: Files,
    /// Tensors sorted by internal name.
    tensors: BTreeMap<String, Location>,
    file_bytes: u64,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl Model {
    /// Opens a GGUF file or a Hugging Face directory (config.json + safetensors).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| FormatError::io(path, e))?;
        if meta.is_dir() {
            Self::open_hf_dir(path)
        } else {
            Self::open_gguf(path)
        }
    }

    fn open_gguf(path: &Path) -> Result<Self> {
        let file = GgufFile::open(path)?;
        let config = ModelConfig::from_gguf(&file)?;
        // llama.cpp permutes Q/K rows for llama-arch files only (Mixtral's included; Qwen2,
        // Qwen3, Gemma 3, Phi-3 use NEOX RoPE).
        let permute = matches!(
            config.architecture,
            Architecture::Llama | Architecture::Mixtral
        );
        let mut tensors = BTreeMap::new();
        for t in &file.tensors {
            if config.num_experts > 0
                && let Some((layer, w)) = gguf_expert_stack(&t.name)
            {
                // One tensor per expert, each a contiguous slice of the stack.
                let shape = t.shape();
                let experts = config.num_experts;
                if shape.len() != 3 || shape[0] != experts || !t.len.is_multiple_of(experts) {
                    return Err(FormatError::corrupt(
                        path,
                        format!(
                            "`{}` has shape {shape:?}, not [{experts}, rows, cols]",
                            t.name
                        ),
                    ));
                }
                let bytes = t.len / experts;
                for e in 0..experts {
                    let name =
                        format!("model.layers.{layer}.block_sparse_moe.experts.{e}.{w}.weight");
                    let info = TensorInfo {
                        name: name.clone(),
                        dtype: t.dtype,
                        shape: shape[1..].to_vec(),
                        bytes: bytes as u64,
                    };
                    tensors.insert(
                        name,
                        Location {
                            info,
                            file: 0,
                            start: t.start + e * bytes,
                            permuted_heads: None,
                            transposed: false,
                            plus_one: false,
                        },
                    );
                }
                continue;
            }
            let Some(name) = hf_name_of_gguf(&t.name, config.architecture) else {
                return Err(FormatError::UnusedTensor {
                    path: path.into(),
                    tensor: t.name.clone(),
                    arch: config.architecture.name().into(),
                });
            };
            let permuted_heads = permute
                .then(|| {
                    rope_permutation_heads(
                        &name,
                        config.num_attention_heads,
                        config.num_key_value_heads,
                    )
                })
                .flatten();
            let transposed = is_conv1d_weight(&name);
            let mut shape = t.shape();
            if transposed {
                shape.reverse();
            }
            let info = TensorInfo {
                name: name.clone(),
                dtype: t.dtype,
                shape,
                bytes: t.len as u64,
            };
            tensors.insert(
                name,
                Location {
                    info,
                    file: 0,
                    start: t.start,
                    permuted_heads,
                    transposed,
                    plus_one: false,
                },
            );
        }
        let file_bytes = file.mapped().len() as u64;
        let mut model = Self {
            path: path.to_path_buf(),
            format: Format::Gguf,
            config,
            files: Files::Gguf(Box::new(file)),
            tensors,
            file_bytes,
        };
        model.check_complete()?;
        Ok(model)
    }

    fn open_hf_dir(dir: &Path) -> Result<Self> {
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(FormatError::MissingConfig { path: dir.into() });
        }
        let text =
            std::fs::read_to_string(&config_path).map_err(|e| FormatError::io(&config_path, e))?;
        let config = ModelConfig::from_hf_json(&config_path, &text)?;

        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let shard_names: Vec<String> = if single.is_file() {
            vec!["model.safetensors".into()]
        } else if index.is_file() {
            let text = std::fs::read_to_string(&index).map_err(|e| FormatError::io(&index, e))?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| FormatError::corrupt(&index, format!("not JSON ({e})")))?;
            let map = json["weight_map"]
                .as_object()
                .ok_or_else(|| FormatError::corrupt(&index, "no weight_map object"))?;
            let mut shards: Vec<String> = map
                .values()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            shards.sort();
            shards.dedup();
            shards
        } else {
            return Err(FormatError::MissingWeights { path: dir.into() });
        };

        let mut maps = Vec::new();
        let mut tensors = BTreeMap::new();
        let mut file_bytes = 0;
        for (i, shard) in shard_names.iter().enumerate() {
            let shard_path = dir.join(shard);
            let file =
                std::fs::File::open(&shard_path).map_err(|e| FormatError::io(&shard_path, e))?;
            // SAFETY: read-only map of a file pot does not modify.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|e| FormatError::io(&shard_path, e))?;
            file_bytes += mmap.len() as u64;
            let st = safetensors::SafeTensors::deserialize(&mmap)
                .map_err(|e| FormatError::corrupt(&shard_path, e.to_string()))?;
            for (name, view) in st.tensors() {
                // The original GPT-2 checkpoints name the base model's tensors without the
                // `transformer.` prefix GPT2LMHeadModel adds (`h.0.attn.c_attn.weight`).
                let name = if config.architecture.gpt2_family()
                    && !name.starts_with("transformer.")
                    && name != "lm_head.weight"
                {
                    format!("transformer.{name}")
                } else {
                    name
                };
                let dtype = DType::from_safetensors(view.dtype()).ok_or_else(|| {
                    FormatError::UnsupportedDtype {
                        path: shard_path.clone(),
                        tensor: name.clone(),
                        dtype: format!("{:?}", view.dtype()),
                    }
                })?;
                let start = view.data().as_ptr() as usize - mmap.as_ptr() as usize;
                let plus_one =
                    config.architecture.norm_weight_offset() && name.ends_with("norm.weight");
                let info = TensorInfo {
                    name: name.clone(),
                    dtype,
                    shape: view.shape().to_vec(),
                    bytes: view.data().len() as u64,
                };
                tensors.insert(
                    name,
                    Location {
                        info,
                        file: i,
                        start,
                        permuted_heads: None,
                        transposed: false,
                        plus_one,
                    },
                );
            }
            maps.push(mmap);
        }
        let mut model = Self {
            path: dir.to_path_buf(),
            format: Format::Safetensors,
            config,
            files: Files::Safetensors(maps),
            tensors,
            file_bytes,
        };
        model.check_complete()?;
        Ok(model)
    }

    /// Every tensor the architecture needs is present with the shape the config implies, and
    /// every tensor present is used (or is a known non-weight, see [`IGNORED_TENSORS`]).
    fn check_complete(&mut self) -> Result<()> {
        let expected = expected_tensors(&self.config);
        let names: std::collections::HashSet<&str> =
            expected.iter().map(|(n, _)| n.as_str()).collect();
        let mut drop = Vec::new();
        for name in self.tensors.keys() {
            if names.contains(name.as_str()) {
                continue;
            }
            if IGNORED_TENSORS.iter().any(|suffix| name.ends_with(suffix)) {
                drop.push(name.clone());
                continue;
            }
            // A tied model may store its head anyway (transformers ties it to the embedding
            // and ignores the stored copy): accepted only when it is the embedding, byte for
            // byte, and then not counted as a second tensor.
            let embedding = self.config.embedding_name();
            if name == "lm_head.weight"
                && self.config.tie_word_embeddings
                && self.raw_bytes(name) == self.raw_bytes(embedding)
                && self.tensor(name).map(|t| (&t.dtype, &t.shape))
                    == self.tensor(embedding).map(|t| (&t.dtype, &t.shape))
            {
                drop.push(name.clone());
                continue;
            }
            return Err(FormatError::UnusedTensor {
                path: self.path.clone(),
                tensor: name.clone(),
                arch: self.config.architecture.name().into(),
            });
        }
        for name in drop {
            self.tensors.remove(&name);
        }
        for (name, shape) in expected {
            match self.tensors.get(&name) {
                None => {
                    return Err(FormatError::MissingTensor {
                        path: self.path.clone(),
                        tensor: name,
                    });
                }
                Some(loc) if loc.info.shape != shape => {
                    return Err(FormatError::corrupt(
                        &self.path,
                        format!(
                            "tensor `{name}` has shape {:?}, the config implies {shape:?}",
                            loc.info.shape
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The GGUF file behind this model, if it is one (for metadata-level checks).
    pub fn gguf(&self) -> Option<&GgufFile> {
        match &self.files {
            Files::Gguf(f) => Some(f),
            Files::Safetensors(_) => None,
        }
    }

    /// Tensors in sorted internal-name order.
    pub fn tensors(&self) -> impl Iterator<Item = &TensorInfo> {
        self.tensors.values().map(|l| &l.info)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name).map(|l| &l.info)
    }

    /// Stored bytes of a tensor, borrowed from the memory map.
    pub fn raw_bytes(&self, name: &str) -> Option<&[u8]> {
        let loc = self.tensors.get(name)?;
        let data: &[u8] = match &self.files {
            Files::Gguf(f) => f.mapped(),
            Files::Safetensors(maps) => &maps[loc.file],
        };
        Some(&data[loc.start..loc.start + loc.info.bytes as usize])
    }

    /// A tensor's values read in place from the memory map, without a copy: only where they
    /// are stored as f32 in the internal layout (no permutation, transposition or offset) at a
    /// 4-byte-aligned address on a little-endian host; `None` otherwise (then `load_f32`).
    pub fn f32_in_place(&self, name: &str) -> Option<&[f32]> {
        let loc = self.tensors.get(name)?;
        if loc.info.dtype != DType::F32
            || loc.permuted_heads.is_some()
            || loc.transposed
            || loc.plus_one
            || cfg!(target_endian = "big")
        {
            return None;
        }
        let bytes = self.raw_bytes(name)?;
        // SAFETY: every bit pattern is a valid f32; `align_to` splits off any misaligned ends.
        let (head, values, tail) = unsafe { bytes.align_to::<f32>() };
        (head.is_empty() && tail.is_empty()).then_some(values)
    }

    fn location(&self, name: &str) -> Result<&Location> {
        self.tensors
            .get(name)
            .ok_or_else(|| FormatError::MissingTensor {
                path: self.path.clone(),
                tensor: name.into(),
            })
    }

    /// A tensor's values as f32, dequantised, in the internal (Hugging Face) row order.
    pub fn load_f32(&self, name: &str) -> Result<Vec<f32>> {
        let loc = self.location(name)?;
        let bytes = self.raw_bytes(name).expect("located above");
        let mut out = vec![0.0f32; loc.info.elements() as usize];
        dequantize(loc.info.dtype, bytes, &mut out);
        if let Some(heads) = loc.permuted_heads {
            let rows = loc.info.shape[0];
            let cols = loc.info.shape.get(1).copied().unwrap_or(1);
            out = unpermute_rope_rows(&out, rows, cols, heads);
        }
        if loc.transposed {
            // Stored [out, in] = [shape[1], shape[0]]; wanted [in, out].
            let (rows, cols) = (loc.info.shape[0], loc.info.shape[1]);
            let stored = out;
            out = vec![0.0f32; stored.len()];
            for (c, row) in stored.chunks(rows).enumerate() {
                for (r, v) in row.iter().enumerate() {
                    out[r * cols + c] = *v;
                }
            }
        }
        if loc.plus_one {
            out.iter_mut().for_each(|w| *w += 1.0);
        }
        Ok(out)
    }

    /// A 2-D weight's stored bytes (`rows` rows of `cols` values in blocks of its type) and,
    /// where the file stores its rows in another order than the internal one (llama.cpp's
    /// permuted Q/K rows), the stored row of each internal row: what an engine's block kernels
    /// read (`pot_scoring::emulate`).
    pub fn stored_rows(&self, name: &str) -> Result<StoredRows<'_>> {
        let loc = self.location(name)?;
        let info = &loc.info;
        let &[rows, cols] = info.shape.as_slice() else {
            return Err(FormatError::Corrupt {
                path: self.path.clone(),
                reason: format!("{name} is not a 2-D weight"),
            });
        };
        if loc.transposed || loc.plus_one {
            return Err(FormatError::Corrupt {
                path: self.path.clone(),
                reason: format!("{name} is adjusted when read: its stored rows are not its rows"),
            });
        }
        let order = loc.permuted_heads.map(|heads| {
            let index: Vec<f32> = (0..rows).map(|r| r as f32).collect();
            unpermute_rope_rows(&index, rows, 1, heads)
                .into_iter()
                .map(|r| r as usize)
                .collect()
        });
        Ok(StoredRows {
            dtype: info.dtype,
            rows,
            cols,
            bytes: self.raw_bytes(name).expect("located above"),
            order,
        })
    }

    /// [`Model::load_f32`] into `out`, which holds exactly the tensor's elements: with no
    /// reordering to do (most tensors), dequantised straight from the map into place.
    pub fn load_f32_into(&self, name: &str, out: &mut [f32]) -> Result<()> {
        let loc = self.location(name)?;
        assert_eq!(out.len() as u64, loc.info.elements(), "{name}: buffer size");
        if loc.permuted_heads.is_none() && !loc.transposed && !loc.plus_one {
            dequantize(
                loc.info.dtype,
                self.raw_bytes(name).expect("located above"),
                out,
            );
        } else {
            out.copy_from_slice(&self.load_f32(name)?);
        }
        Ok(())
    }

    /// Rows `rows` of a 2-D tensor as f32 (`rows.len() * cols` values), read without touching
    /// the other rows: how the embedding is looked up and the output head is streamed in chunks.
    pub fn load_f32_rows(&self, name: &str, rows: std::ops::Range<usize>) -> Result<Vec<f32>> {
        let loc = self.location(name)?;
        let info = &loc.info;
        let (n_rows, cols) = (info.shape[0], info.shape.get(1).copied().unwrap_or(1));
        let (per_block, block_bytes) = info.dtype.block();
        // GGUF rows are whole blocks; RoPE-permuted tensors (q/k) are never read by rows.
        assert!(
            loc.permuted_heads.is_none()
                && !loc.plus_one
                && !loc.transposed
                && cols % per_block == 0
                && rows.end <= n_rows,
            "row read of {name}: rows {rows:?} of {n_rows}, {cols} columns"
        );
        let row_bytes = cols / per_block * block_bytes;
        let bytes = self.raw_bytes(name).expect("located above");
        let mut out = vec![0.0f32; rows.len() * cols];
        dequantize(
            info.dtype,
            &bytes[rows.start * row_bytes..rows.end * row_bytes],
            &mut out,
        );
        Ok(out)
    }

    /// Drops this process's mapped pages of a tensor (they stay in the page cache and are read
    /// again on next use), so streaming or hashing a model larger than memory does not leave
    /// all of it counted in our resident set.
    pub fn release_pages(&self, name: &str) {
        let Some(loc) = self.tensors.get(name) else {
            return;
        };
        let mmap = match &self.files {
            Files::Gguf(f) => f.mmap(),
            Files::Safetensors(maps) => &maps[loc.file],
        };
        // SAFETY: the mapping is read-only and file-backed: after MADV_DONTNEED a later read
        // faults the same bytes back in from the file, so no borrowed slice ever changes.
        // Failure only means the pages stay resident, which is harmless.
        #[cfg(unix)]
        let _ = unsafe {
            mmap.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                loc.start,
                loc.info.bytes as usize,
            )
        };
        #[cfg(not(unix))]
        let _ = mmap;
    }

    pub fn tokenizer(&self) -> Result<Tokenizer> {
        match &self.files {
            Files::Gguf(f) => Tokenizer::from_gguf(f),
            Files::Safetensors(_) => {
                let path = self.path.join("tokenizer.json");
                if !path.is_file() {
                    return Err(FormatError::Tokenizer {
                        path: self.path.clone(),
                        reason: "tokenizer.json is missing from the model directory".into(),
                    });
                }
                let bos = self.hf_bos_token();
                Tokenizer::from_file(&path, bos)
            }
        }
    }

    /// BOS policy of a Hugging Face directory: tokenizer_config.json's `add_bos_token`.
    fn hf_bos_token(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.path.join("tokenizer_config.json")).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        json["add_bos_token"]
            .as_bool()
            .filter(|&b| b)
            .and(self.config.bos_token_id)
    }

    pub fn description(&self) -> ModelDescription {
        ModelDescription::new(self)
    }

    /// Total stored bytes of the model's files.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }
}

/// Tensors (internal name, shape) an architecture requires.
pub fn expected_tensors(c: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    if c.architecture.gpt2_family() {
        return gpt2_tensors(c);
    }
    let (h, kv) = (c.hidden_size, c.num_key_value_heads * c.head_dim);
    let (q, ffn) = (c.num_attention_heads * c.head_dim, c.intermediate_size);
    let arch = c.architecture;
    let mut out = vec![
        (
            "model.embed_tokens.weight".to_string(),
            vec![c.vocab_size, h],
        ),
        ("model.norm.weight".to_string(), vec![h]),
    ];
    if !c.tie_word_embeddings {
        out.push(("lm_head.weight".into(), vec![c.vocab_size, h]));
    }
    for i in 0..c.num_hidden_layers {
        let p = |s: &str| format!("model.layers.{i}.{s}");
        out.push((p("input_layernorm.weight"), vec![h]));
        out.push((p("post_attention_layernorm.weight"), vec![h]));
        if arch.sandwich_norms() {
            out.push((p("pre_feedforward_layernorm.weight"), vec![h]));
            out.push((p("post_feedforward_layernorm.weight"), vec![h]));
        }
        if arch.fused_projections() {
            out.push((p("self_attn.qkv_proj.weight"), vec![q + 2 * kv, h]));
        } else {
            out.push((p("self_attn.q_proj.weight"), vec![q, h]));
            out.push((p("self_attn.k_proj.weight"), vec![kv, h]));
            out.push((p("self_attn.v_proj.weight"), vec![kv, h]));
        }
        out.push((p("self_attn.o_proj.weight"), vec![h, q]));
        if c.num_experts > 0 {
            out.push((p("block_sparse_moe.gate.weight"), vec![c.num_experts, h]));
            for e in 0..c.num_experts {
                let x = |w: &str| p(&format!("block_sparse_moe.experts.{e}.{w}.weight"));
                out.push((x("w1"), vec![ffn, h]));
                out.push((x("w2"), vec![h, ffn]));
                out.push((x("w3"), vec![ffn, h]));
            }
        } else if arch.fused_projections() {
            out.push((p("mlp.gate_up_proj.weight"), vec![2 * ffn, h]));
            out.push((p("mlp.down_proj.weight"), vec![h, ffn]));
        } else {
            out.push((p("mlp.gate_proj.weight"), vec![ffn, h]));
            out.push((p("mlp.up_proj.weight"), vec![ffn, h]));
            out.push((p("mlp.down_proj.weight"), vec![h, ffn]));
        }
        if arch.qk_norm() {
            out.push((p("self_attn.q_norm.weight"), vec![c.head_dim]));
            out.push((p("self_attn.k_norm.weight"), vec![c.head_dim]));
        }
        if c.qkv_bias {
            out.push((p("self_attn.q_proj.bias"), vec![q]));
            out.push((p("self_attn.k_proj.bias"), vec![kv]));
            out.push((p("self_attn.v_proj.bias"), vec![kv]));
        }
        if c.o_bias {
            out.push((p("self_attn.o_proj.bias"), vec![h]));
        }
        if c.mlp_bias {
            out.push((p("mlp.gate_proj.bias"), vec![ffn]));
            out.push((p("mlp.up_proj.bias"), vec![ffn]));
            out.push((p("mlp.down_proj.bias"), vec![h]));
        }
    }
    out
}

/// GPT2LMHeadModel's tensors: `Conv1D` weights are `[in, out]`.
fn gpt2_tensors(c: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (h, ffn) = (c.hidden_size, c.intermediate_size);
    let mut out = vec![
        ("transformer.wte.weight".to_string(), vec![c.vocab_size, h]),
        (
            "transformer.wpe.weight".to_string(),
            vec![c.max_position_embeddings, h],
        ),
        ("transformer.ln_f.weight".to_string(), vec![h]),
        ("transformer.ln_f.bias".to_string(), vec![h]),
    ];
    if !c.tie_word_embeddings {
        out.push(("lm_head.weight".into(), vec![c.vocab_size, h]));
    }
    for i in 0..c.num_hidden_layers {
        let p = |s: &str| format!("transformer.h.{i}.{s}");
        for (name, shape) in [
            ("ln_1.weight", vec![h]),
            ("ln_1.bias", vec![h]),
            ("attn.c_attn.weight", vec![h, 3 * h]),
            ("attn.c_attn.bias", vec![3 * h]),
            ("attn.c_proj.weight", vec![h, h]),
            ("attn.c_proj.bias", vec![h]),
            ("ln_2.weight", vec![h]),
            ("ln_2.bias", vec![h]),
            ("mlp.c_fc.weight", vec![h, ffn]),
            ("mlp.c_fc.bias", vec![ffn]),
            ("mlp.c_proj.weight", vec![ffn, h]),
            ("mlp.c_proj.bias", vec![h]),
        ] {
            out.push((p(name), shape));
        }
    }
    out
}

/// Tensors a file may hold that are not weights: rotary `inv_freq` buffers (recomputed from the
/// config; older transformers saved them) and GPT-2's causal-mask buffers (`attn.bias`,
/// `attn.masked_bias` in checkpoints written before transformers 4.2x).
pub const IGNORED_TENSORS: &[&str] = &[".rotary_emb.inv_freq", ".attn.bias", ".attn.masked_bias"];

/// What the memory governor plans from: sizes only, computed from tensor infos (no weight reads).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelDescription {
    pub path: PathBuf,
    pub format: Format,
    pub config: ModelConfig,
    pub parameter_count: u64,
    pub file_bytes: u64,
    /// Number of tensors per stored dtype name.
    pub dtypes: BTreeMap<String, usize>,
    /// Parameters of each transformer block.
    pub layer_parameters: Vec<u64>,
    pub embedding_parameters: u64,
    /// Output head parameters (0 when tied to the embedding).
    pub head_parameters: u64,
    /// Parameters outside blocks, embedding and head (final norm).
    pub other_parameters: u64,
}

impl ModelDescription {
    fn new(model: &Model) -> Self {
        let tensors = model
            .tensors()
            .map(|t| (t.name.as_str(), t.dtype.name(), t.elements()));
        Self::from_tensors(
            model.path.clone(),
            model.format,
            &model.config,
            model.file_bytes,
            tensors,
        )
    }

    /// The description of a model known only by its config (a config.json without weights, or
    /// a shape given by hand): the tensors the architecture requires, stored as `dtype` (its
    /// size, `bytes_per_parameter`, gives `file_bytes`). What `pot plan` sizes a machine from.
    pub fn from_config(
        path: PathBuf,
        config: &ModelConfig,
        dtype: &str,
        bytes_per_parameter: f64,
    ) -> Self {
        let tensors = expected_tensors(config);
        let mut d = Self::from_tensors(
            path,
            Format::Safetensors,
            config,
            0,
            tensors.iter().map(|(name, shape)| {
                (
                    name.as_str(),
                    dtype,
                    shape.iter().map(|&d| d as u64).product(),
                )
            }),
        );
        d.file_bytes = d.weight_bytes(bytes_per_parameter);
        d
    }

    fn from_tensors<'a>(
        path: PathBuf,
        format: Format,
        config: &ModelConfig,
        file_bytes: u64,
        tensors: impl Iterator<Item = (&'a str, &'a str, u64)>,
    ) -> Self {
        let mut dtypes = BTreeMap::new();
        let mut layer_parameters = vec![0u64; config.num_hidden_layers];
        let (mut embedding, mut head, mut other, mut total) = (0, 0, 0, 0);
        for (name, dtype, n) in tensors {
            *dtypes.entry(dtype.to_string()).or_insert(0) += 1;
            total += n;
            match (layer_of(name), name) {
                (Some(i), _) if i < layer_parameters.len() => layer_parameters[i] += n,
                (_, "lm_head.weight") => head += n,
                (_, name) if name == config.embedding_name() => embedding += n,
                _ => other += n,
            }
        }
        Self {
            path,
            format,
            config: config.clone(),
            parameter_count: total,
            file_bytes,
            dtypes,
            layer_parameters,
            embedding_parameters: embedding,
            head_parameters: head,
            other_parameters: other,
        }
    }

    /// Bytes to hold every weight at `bytes_per_parameter` (4 for f32, 2 for f16, ~1 for int8).
    pub fn weight_bytes(&self, bytes_per_parameter: f64) -> u64 {
        (self.parameter_count as f64 * bytes_per_parameter).ceil() as u64
    }

    pub fn largest_layer_parameters(&self) -> u64 {
        self.layer_parameters.iter().copied().max().unwrap_or(0)
    }
}

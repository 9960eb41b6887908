//! GGUF (v2, v3) reader: header, typed metadata, tensor infos, memory-mapped tensor data.
//! Every length and offset is checked against the file size before use.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::dtype::DType;
use crate::error::{FormatError, Result};

/// A metadata value.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// A tensor as the GGUF file lists it (GGML dimension order: `dims[0]` varies fastest).
#[derive(Clone, Debug)]
pub struct GgufTensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub dtype: DType,
    /// Absolute byte range in the file.
    pub start: usize,
    pub len: usize,
}

impl GgufTensor {
    /// Row-major shape, outermost first (the order safetensors and PyTorch use).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

pub struct GgufFile {
    path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    /// Each metadata entry's key and its bytes in the file (key, type and value), in file
    /// order: what a writer copies to keep a file's metadata byte for byte (`pot quantize`).
    pub entries: Vec<(String, Range<usize>)>,
    pub tensors: Vec<GgufTensor>,
    mmap: Mmap,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// A bounds-checked little-endian cursor over the mapped file.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(end) => {
                let out = &self.data[self.pos..end];
                self.pos = end;
                Ok(out)
            }
            None => Err(FormatError::corrupt(
                self.path,
                format!(
                    "{what} at byte {} needs {n} bytes but the file ends at {}",
                    self.pos,
                    self.data.len()
                ),
            )),
        }
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1, "u8")?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2, "u16")?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, "u32")?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, "u64")?.try_into().unwrap()))
    }

    /// A count that must fit in the rest of the file at `min_item_bytes` per item.
    fn count(&mut self, what: &str, min_item_bytes: usize) -> Result<usize> {
        let n = self.u64()?;
        let remaining = (self.data.len() - self.pos) as u64;
        if n.saturating_mul(min_item_bytes as u64) > remaining {
            return Err(FormatError::corrupt(
                self.path,
                format!("{what} count {n} cannot fit in the remaining {remaining} bytes"),
            ));
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> Result<String> {
        let n = self.count("string length", 1)?;
        let bytes = self.take(n, "string")?;
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            FormatError::corrupt(
                self.path,
                format!("string at byte {} is not UTF-8", self.pos - n),
            )
        })
    }

    fn value(&mut self, ty: u32, depth: usize) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.u8()?),
            1 => Value::I8(self.u8()? as i8),
            2 => Value::U16(self.u16()?),
            3 => Value::I16(self.u16()? as i16),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(self.u32()? as i32),
            6 => Value::F32(f32::from_bits(self.u32()?)),
            7 => Value::Bool(self.u8()? != 0),
            8 => Value::String(self.string()?),
            9 => {
                if depth > 4 {
                    return Err(FormatError::corrupt(self.path, "arrays nested too deeply"));
                }
                let inner = self.u32()?;
                let n = self.count("array", min_value_bytes(inner))?;
                // Each item is checked against the bytes left as it is read; reserve little up
                // front (a `Value` is 32 bytes, 32 times a one-byte item on disk).
                let mut items = Vec::with_capacity(n.min(RESERVE_AT_MOST));
                for _ in 0..n {
                    items.push(self.value(inner, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(self.u64()? as i64),
            12 => Value::F64(f64::from_bits(self.u64()?)),
            other => {
                return Err(FormatError::corrupt(
                    self.path,
                    format!("unknown metadata value type {other}"),
                ));
            }
        })
    }
}

/// Smallest encoding of one metadata value of type `ty` (a string is at least its u64 length;
/// an array its u32 type and u64 count).
fn min_value_bytes(ty: u32) -> usize {
    match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        9 => 12,
        _ => 1,
    }
}

/// Entries reserved ahead of reading them, whatever a count claims.
const RESERVE_AT_MOST: usize = 4096;
/// Smallest tensor info: name length (8) + dims count (4) + type (4) + offset (8).
const MIN_TENSOR_INFO_BYTES: usize = 24;
/// Smallest metadata entry: key length (8) + value type (4) + one byte of value.
const MIN_KV_BYTES: usize = 13;

/// What [`GgufFile::parse`] reads before the tensor data.
struct Parsed {
    version: u32,
    metadata: BTreeMap<String, Value>,
    entries: Vec<(String, Range<usize>)>,
    tensors: Vec<GgufTensor>,
}

pub const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| FormatError::io(path, e))?;
        // SAFETY: the map is read-only; a file truncated by another process while mapped would
        // fault, which no safe API can prevent; pot never writes the files it reads.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| FormatError::io(path, e))?;
        let Parsed {
            version,
            metadata,
            entries,
            tensors,
        } = Self::parse(path, &mmap)?;
        Ok(Self {
            path: path.to_path_buf(),
            version,
            metadata,
            entries,
            tensors,
            mmap,
        })
    }

    /// A GGUF image held in memory, read exactly as [`Self::open`] reads a file (the bytes are
    /// copied into an anonymous map): how the fuzzer (`cargo xtask fuzz gguf`) drives the
    /// reader. `label` names the input in errors.
    pub fn from_bytes(label: &Path, bytes: &[u8]) -> Result<Self> {
        let io = |e| FormatError::io(label, e);
        let mut map = memmap2::MmapOptions::new()
            .len(bytes.len().max(1))
            .map_anon()
            .map_err(io)?;
        map[..bytes.len()].copy_from_slice(bytes);
        let mmap = map.make_read_only().map_err(io)?;
        let Parsed {
            version,
            metadata,
            entries,
            tensors,
        } = Self::parse(label, &mmap[..bytes.len()])?;
        Ok(Self {
            path: label.to_path_buf(),
            version,
            metadata,
            entries,
            tensors,
            mmap,
        })
    }

    fn parse(path: &Path, data: &[u8]) -> Result<Parsed> {
        let mut c = Cursor { data, pos: 0, path };
        let magic = c.take(4, "magic").map_err(|_| FormatError::UnknownFormat {
            path: path.into(),
            reason: "the file is shorter than a GGUF header".into(),
        })?;
        if magic != MAGIC {
            return Err(FormatError::UnknownFormat {
                path: path.into(),
                reason: format!("bad magic {magic:02x?}, expected \"GGUF\""),
            });
        }
        let version = c.u32()?;
        if !(2..=3).contains(&version) {
            return Err(FormatError::UnknownFormat {
                path: path.into(),
                reason: format!("GGUF version {version}; pot reads versions 2 and 3"),
            });
        }
        let tensor_count = c.count("tensor", MIN_TENSOR_INFO_BYTES)?;
        let kv_count = c.count("metadata", MIN_KV_BYTES)?;
        let mut metadata = BTreeMap::new();
        let mut entries = Vec::with_capacity(kv_count.min(RESERVE_AT_MOST));
        for _ in 0..kv_count {
            let start = c.pos;
            let key = c.string()?;
            let ty = c.u32()?;
            let value = c.value(ty, 0)?;
            entries.push((key.clone(), start..c.pos));
            metadata.insert(key, value);
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => v.as_u64().filter(|a| a.is_power_of_two()).ok_or_else(|| {
                FormatError::corrupt(
                    path,
                    format!("general.alignment {v:?} is not a power of two"),
                )
            })?,
        };
        let mut infos = Vec::with_capacity(tensor_count.min(RESERVE_AT_MOST));
        for _ in 0..tensor_count {
            let name = c.string()?;
            let n_dims = c.u32()? as usize;
            if n_dims > 4 {
                return Err(FormatError::corrupt(
                    path,
                    format!("tensor `{name}` has {n_dims} dimensions (GGUF allows at most 4)"),
                ));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                dims.push(c.u64()?);
            }
            let type_id = c.u32()?;
            let offset = c.u64()?;
            infos.push((name, dims, type_id, offset));
        }
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        let mut tensors = Vec::with_capacity(infos.len());
        for (name, dims, type_id, offset) in infos {
            if dims.contains(&0) {
                return Err(FormatError::corrupt(
                    path,
                    format!("tensor `{name}` has an empty dimension: {dims:?}"),
                ));
            }
            let dtype = DType::from_ggml(type_id).ok_or_else(|| FormatError::UnsupportedDtype {
                path: path.into(),
                tensor: name.clone(),
                dtype: DType::ggml_name(type_id),
            })?;
            let elements = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| {
                    FormatError::corrupt(path, format!("tensor `{name}`: shape {dims:?} overflows"))
                })?;
            // Blocks never straddle rows: each row (dims[0] values) must be whole blocks.
            let row = dims.first().copied().unwrap_or(1);
            let len = dtype
                .bytes_for(row)
                .and_then(|_| dtype.bytes_for(elements))
                .ok_or_else(|| {
                    FormatError::corrupt(
                        path,
                        format!(
                            "tensor `{name}`: rows of {row} values are not whole {} blocks of {}",
                            dtype.name(),
                            dtype.block().0
                        ),
                    )
                })?;
            let start = data_start.checked_add(offset);
            let end = start.and_then(|s| s.checked_add(len));
            match (start, end) {
                (Some(start), Some(end)) if end <= data.len() as u64 => tensors.push(GgufTensor {
                    name,
                    dims,
                    dtype,
                    start: start as usize,
                    len: len as usize,
                }),
                _ => {
                    return Err(FormatError::corrupt(
                        path,
                        format!(
                            "tensor `{name}` ({len} bytes at offset {offset}) ends past the end of the file ({} bytes)",
                            data.len()
                        ),
                    ));
                }
            }
        }
        Ok(Parsed {
            version,
            metadata,
            entries,
            tensors,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    pub fn tensor(&self, name: &str) -> Option<&GgufTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw bytes of a tensor, borrowed from the map.
    pub fn bytes(&self, tensor: &GgufTensor) -> &[u8] {
        &self.mmap[tensor.start..tensor.start + tensor.len]
    }

    /// The whole mapped file.
    pub fn mapped(&self) -> &[u8] {
        &self.mmap
    }

    pub(crate) fn mmap(&self) -> &Mmap {
        &self.mmap
    }
}

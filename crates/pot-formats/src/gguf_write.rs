//! GGUF v3 writer: the header and metadata, tensor infos, then each tensor's data at an aligned
//! offset, streamed tensor by tensor (a model's quantised copy is never whole in memory), into an
//! [`AtomicFile`] so an interrupted write leaves nothing behind. Used by `pot quantize`, which
//! copies a source file's metadata entries byte for byte ([`GgufFile::entries`]).

use std::io::Write;
use std::path::Path;

use crate::atomic::AtomicFile;
use crate::dtype::DType;
use crate::error::{FormatError, Result};
use crate::gguf::{GgufFile, MAGIC, Value};

/// A tensor of the file being written: its name, ggml dimensions (`dims[0]` fastest) and type.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    pub dims: Vec<u64>,
    pub dtype: DType,
}

impl TensorSpec {
    fn bytes(&self) -> Option<u64> {
        self.dtype.bytes_for(self.dims.iter().product())
    }
}

/// A metadata entry to write: copied as stored in a source file, or a new value.
pub enum Entry<'a> {
    Copied(&'a GgufFile, usize),
    New(&'a str, Value),
}

/// Writes `path` (GGUF v3, data aligned to `alignment`): `entries` in order, then the tensors
/// of `tensors` in order, the bytes of tensor `i` from `data(i)` (exactly its size).
pub fn write(
    path: &Path,
    entries: &[Entry],
    tensors: &[TensorSpec],
    alignment: u64,
    mut data: impl FnMut(usize) -> Result<Vec<u8>>,
) -> Result<()> {
    let io = |e: std::io::Error| FormatError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut out = AtomicFile::create(path).map_err(io)?;
    let mut header = Vec::new();
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&3u32.to_le_bytes());
    header.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    header.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for entry in entries {
        match entry {
            Entry::Copied(file, i) => {
                let (_, span) = &file.entries[*i];
                header.extend_from_slice(&file.mapped()[span.clone()]);
            }
            Entry::New(key, value) => {
                put_string(&mut header, key);
                put_value(&mut header, value, true);
            }
        }
    }
    let mut offset = 0u64;
    let mut sizes = Vec::with_capacity(tensors.len());
    for t in tensors {
        let size = t.bytes().ok_or_else(|| FormatError::Write {
            path: path.to_path_buf(),
            reason: format!(
                "{}: {:?} is not a whole number of {} blocks",
                t.name,
                t.dims,
                t.dtype.name()
            ),
        })?;
        put_string(&mut header, &t.name);
        header.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            header.extend_from_slice(&d.to_le_bytes());
        }
        header.extend_from_slice(&t.dtype.ggml_id().to_le_bytes());
        header.extend_from_slice(&offset.to_le_bytes());
        sizes.push(size);
        offset = (offset + size).next_multiple_of(alignment);
    }
    let padded = (header.len() as u64).next_multiple_of(alignment);
    header.resize(padded as usize, 0);
    out.write_all(&header).map_err(io)?;
    for (i, (t, &size)) in tensors.iter().zip(&sizes).enumerate() {
        let bytes = data(i)?;
        if bytes.len() as u64 != size {
            return Err(FormatError::Write {
                path: path.to_path_buf(),
                reason: format!("{}: {} bytes, expected {size}", t.name, bytes.len()),
            });
        }
        out.write_all(&bytes).map_err(io)?;
        let pad = size.next_multiple_of(alignment) - size;
        out.write_all(&vec![0u8; pad as usize]).map_err(io)?;
    }
    out.commit().map_err(io)
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// GGUF's type id of a value (an array's element type is its first element's; an empty array
/// is written as an array of u8).
fn type_id(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn put_value(out: &mut Vec<u8>, v: &Value, typed: bool) {
    if typed {
        out.extend_from_slice(&type_id(v).to_le_bytes());
    }
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(x) => put_string(out, x),
        Value::Array(items) => {
            let inner = items.first().map_or(0, type_id);
            out.extend_from_slice(&inner.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            items.iter().for_each(|item| put_value(out, item, false));
        }
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_file_reads_back_with_its_metadata_and_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.gguf");
        let tensors = vec![
            TensorSpec {
                name: "a".into(),
                dims: vec![3],
                dtype: DType::F32,
            },
            TensorSpec {
                name: "b".into(),
                dims: vec![32, 2],
                dtype: DType::Q8_0,
            },
        ];
        let entries = [
            Entry::New("general.architecture", Value::String("llama".into())),
            Entry::New("general.file_type", Value::U32(7)),
            Entry::New(
                "x.list",
                Value::Array(vec![Value::String("p".into()), Value::String("q".into())]),
            ),
        ];
        write(&path, &entries, &tensors, 32, |i| {
            Ok(match i {
                0 => [1f32, 2.0, 3.0]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                _ => vec![7u8; 68],
            })
        })
        .unwrap();
        let back = GgufFile::open(&path).unwrap();
        assert_eq!(back.get("general.file_type"), Some(&Value::U32(7)));
        assert_eq!(
            back.get("x.list")
                .and_then(Value::as_array)
                .map(<[Value]>::len),
            Some(2)
        );
        let b = back.tensor("b").unwrap();
        assert_eq!((b.dims.clone(), b.dtype), (vec![32, 2], DType::Q8_0));
        assert_eq!(back.bytes(b), &[7u8; 68][..]);
        assert_eq!(b.start % 32, 0);
        // Copying the entries of the file written reproduces it byte for byte.
        let again = dir.path().join("u.gguf");
        let copied: Vec<Entry> = (0..back.entries.len())
            .map(|i| Entry::Copied(&back, i))
            .collect();
        let specs: Vec<TensorSpec> = back
            .tensors
            .iter()
            .map(|t| TensorSpec {
                name: t.name.clone(),
                dims: t.dims.clone(),
                dtype: t.dtype,
            })
            .collect();
        write(&again, &copied, &specs, 32, |i| {
            Ok(back.bytes(&back.tensors[i]).to_vec())
        })
        .unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            std::fs::read(&again).unwrap()
        );
    }
}

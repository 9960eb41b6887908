//! Provenance: Merkle trees over a model's tensors and over a verification transcript, with
//! inclusion proofs (docs/PROVENANCE.md).

pub mod merkle;
pub mod model_signing;
pub mod transcript;

use pot_formats::{FormatError, Model, TensorInfo};
use sha2::{Digest, Sha256};

use merkle::{Hash, inclusion_path, leaf_hash, root_of_leaves, verify_inclusion};

/// What a tensor leaf commits to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TensorEncoding {
    /// The tensor's bytes as stored in the file (quantised blocks for GGUF).
    Stored,
    /// The dequantised f32 values (little endian, Hugging Face row order): two encodings of the
    /// same weights (a GGUF and its F32 conversion) get the same root.
    Canonical,
}

/// One tensor leaf: `leaf data = u32be(len name) || name || u32be(len dtype) || dtype ||
/// u32be(rank) || u64be(dim)... || SHA-256(bytes)`; the dtype is `F32` in canonical mode.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TensorLeaf {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub bytes_sha256: String,
}

impl TensorLeaf {
    pub fn data(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.name.len() as u32).to_be_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(&(self.dtype.len() as u32).to_be_bytes());
        out.extend_from_slice(self.dtype.as_bytes());
        out.extend_from_slice(&(self.shape.len() as u32).to_be_bytes());
        for &d in &self.shape {
            out.extend_from_slice(&(d as u64).to_be_bytes());
        }
        out.extend_from_slice(&hex::decode(&self.bytes_sha256).unwrap_or_default());
        out
    }

    pub fn hash(&self) -> Hash {
        leaf_hash(&self.data())
    }

    /// The stored-encoding leaf of a tensor from its bytes as stored in the file.
    pub fn stored(info: &TensorInfo, bytes: &[u8]) -> Self {
        Self {
            name: info.name.clone(),
            dtype: info.dtype.name().to_string(),
            shape: info.shape.clone(),
            bytes_sha256: hex::encode(Sha256::digest(bytes)),
        }
    }
}

/// The tensor tree of a model: leaves in sorted internal-name order.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TensorTree {
    pub encoding: TensorEncoding,
    pub leaves: Vec<TensorLeaf>,
}

impl TensorTree {
    pub fn of_model(model: &Model, encoding: TensorEncoding) -> Result<Self, FormatError> {
        let mut leaves = Vec::new();
        for t in model.tensors() {
            let leaf = match encoding {
                TensorEncoding::Stored => {
                    TensorLeaf::stored(t, model.raw_bytes(&t.name).expect("listed tensor"))
                }
                TensorEncoding::Canonical => {
                    let values = model.load_f32(&t.name)?;
                    let mut h = Sha256::new();
                    for chunk in values.chunks(1 << 16) {
                        let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
                        h.update(&bytes);
                    }
                    TensorLeaf {
                        name: t.name.clone(),
                        dtype: "F32".to_string(),
                        shape: t.shape.clone(),
                        bytes_sha256: hex::encode(h.finalize()),
                    }
                }
            };
            model.release_pages(&t.name);
            leaves.push(leaf);
        }
        Ok(Self { encoding, leaves })
    }

    fn hashes(&self) -> Vec<Hash> {
        self.leaves.iter().map(TensorLeaf::hash).collect()
    }

    pub fn root(&self) -> String {
        hex::encode(root_of_leaves(&self.hashes()))
    }

    pub fn proof(&self, tensor: &str) -> Option<TensorProof> {
        let index = self.leaves.iter().position(|l| l.name == tensor)?;
        let path = inclusion_path(&self.hashes(), index)?;
        Some(TensorProof {
            leaf: self.leaves[index].clone(),
            index: index as u64,
            size: self.leaves.len() as u64,
            path: path.iter().map(hex::encode).collect(),
            root: self.root(),
            encoding: self.encoding,
        })
    }

    /// Tensors whose leaves differ, and those present on one side only.
    pub fn diff(&self, other: &TensorTree) -> TreeDiff {
        use std::collections::BTreeMap;
        let a: BTreeMap<&str, &TensorLeaf> =
            self.leaves.iter().map(|l| (l.name.as_str(), l)).collect();
        let b: BTreeMap<&str, &TensorLeaf> =
            other.leaves.iter().map(|l| (l.name.as_str(), l)).collect();
        TreeDiff {
            changed: a
                .iter()
                .filter(|(n, l)| b.get(*n).is_some_and(|m| m != *l))
                .map(|(n, _)| n.to_string())
                .collect(),
            only_in_first: a
                .keys()
                .filter(|n| !b.contains_key(*n))
                .map(|n| n.to_string())
                .collect(),
            only_in_second: b
                .keys()
                .filter(|n| !a.contains_key(*n))
                .map(|n| n.to_string())
                .collect(),
            same_root: self.root() == other.root(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TreeDiff {
    pub changed: Vec<String>,
    pub only_in_first: Vec<String>,
    pub only_in_second: Vec<String>,
    pub same_root: bool,
}

/// An inclusion proof of one tensor, self-contained (JSON) and checkable without the model.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TensorProof {
    pub leaf: TensorLeaf,
    pub index: u64,
    pub size: u64,
    /// Audit path, bottom-up, hex.
    pub path: Vec<String>,
    pub root: String,
    pub encoding: TensorEncoding,
}

impl TensorProof {
    /// Checks the proof against `root` (defaults to the root it carries).
    pub fn verify(&self, root: Option<&str>) -> bool {
        let root = root.unwrap_or(&self.root);
        let Some(root) = decode_hash(root) else {
            return false;
        };
        let Some(path) = self
            .path
            .iter()
            .map(|p| decode_hash(p))
            .collect::<Option<Vec<_>>>()
        else {
            return false;
        };
        // A leaf digest that is not 32 bytes of hex cannot be a tensor's (it used to hash as
        // an empty digest).
        if decode_hash(&self.leaf.bytes_sha256).is_none() {
            return false;
        }
        verify_inclusion(&self.leaf.hash(), self.index, self.size, &path, &root)
    }
}

pub(crate) fn decode_hash(text: &str) -> Option<Hash> {
    hex::decode(text.trim()).ok()?.try_into().ok()
}

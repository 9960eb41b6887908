//! The digest the ecosystem signs: OpenSSF model signing (`model_signing`, sigstore
//! model-transparency) hashes every file of a model with SHA-256 and signs an in-toto statement
//! whose subject digest is SHA-256 over those digests, concatenated in path order. pot computes
//! the same manifest and root for a model on disk, and checks a signature bundle's manifest
//! against it. Matches `model_signing` 1.1.1's defaults, checked against it in
//! `crates/pot-cli/tests/provenance.rs`:
//!
//! - files under the model directory, recursively; a single-file model is one item named `.`;
//! - `.git/`, `.gitattributes`, `.github/` and `.gitignore` at the top are ignored;
//! - symbolic links are refused (its default);
//! - items are ordered by relative path compared component by component (Python's `PurePath`
//!   order), named by their POSIX relative path;
//! - root = SHA-256(digest_1 || digest_2 || ...), raw 32-byte digests.
//!
//! The Sigstore signature on a bundle is not verified here: that needs Sigstore's trust root and
//! network (use `model_signing verify`); pot checks what the signature covers against the files.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

/// Top-level paths `model_signing` ignores by default.
const IGNORED: &[&str] = &[".git", ".gitattributes", ".github", ".gitignore"];

/// A model's manifest: per file, its relative path and SHA-256; and the root digest.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SigningManifest {
    /// The model directory's (or file's) name, the in-toto subject name.
    pub model_name: String,
    pub files: Vec<FileDigest>,
    /// SHA-256 over the files' digests in order: the in-toto subject digest.
    pub root_sha256: String,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FileDigest {
    pub name: String,
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("{0}: symbolic links are refused, as model_signing refuses them by default")]
    Symlink(PathBuf),
    #[error("bundle {path}: {reason}")]
    Bundle { path: PathBuf, reason: String },
}

fn io(path: &Path, e: impl std::fmt::Display) -> SigningError {
    SigningError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// SHA-256 of a file, read in 1 MiB chunks.
fn file_sha256(path: &Path) -> Result<[u8; 32], SigningError> {
    let mut file = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

/// Every regular file under `dir`, as paths relative to `root`.
fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), SigningError> {
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let path = entry.map_err(|e| io(dir, e))?.path();
        let meta = std::fs::symlink_metadata(&path).map_err(|e| io(&path, e))?;
        let rel = path
            .strip_prefix(root)
            .expect("under the root")
            .to_path_buf();
        if dir == root
            && IGNORED
                .iter()
                .any(|i| rel.as_os_str() == std::ffi::OsStr::new(i))
        {
            continue;
        }
        if meta.file_type().is_symlink() {
            return Err(SigningError::Symlink(path));
        }
        if meta.is_dir() {
            walk(root, &path, out)?;
        } else if meta.is_file() {
            out.push(rel);
        }
    }
    Ok(())
}

/// Path components as text, for `PurePath`-style ordering and POSIX names.
fn components(rel: &Path) -> Vec<String> {
    rel.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect()
}

/// The manifest `model_signing` computes for `model` (a directory or a single file).
pub fn manifest(model: &Path) -> Result<SigningManifest, SigningError> {
    let meta = std::fs::symlink_metadata(model).map_err(|e| io(model, e))?;
    if meta.file_type().is_symlink() {
        return Err(SigningError::Symlink(model.to_path_buf()));
    }
    let mut files: Vec<(Vec<String>, PathBuf)> = if meta.is_dir() {
        let mut rel = Vec::new();
        walk(model, model, &mut rel)?;
        rel.into_iter().map(|r| (components(&r), r)).collect()
    } else {
        vec![(Vec::new(), PathBuf::new())]
    };
    files.sort();
    let mut root = Sha256::new();
    let mut out = Vec::with_capacity(files.len());
    for (parts, rel) in files {
        let path = if parts.is_empty() {
            model.to_path_buf()
        } else {
            model.join(&rel)
        };
        let digest = file_sha256(&path)?;
        root.update(digest);
        out.push(FileDigest {
            name: if parts.is_empty() {
                ".".to_string()
            } else {
                parts.join("/")
            },
            sha256: hex::encode(digest),
        });
    }
    let model_name = model
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(SigningManifest {
        model_name,
        files: out,
        root_sha256: hex::encode(root.finalize()),
    })
}

/// A bundle's manifest compared with the files on disk.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ManifestCheck {
    /// The bundle's subject digest, and whether its resources hash to it.
    pub subject_sha256: String,
    pub subject_consistent: bool,
    pub matching: Vec<String>,
    /// In both, with different digests.
    pub differing: Vec<String>,
    /// In the bundle, not on disk.
    pub missing: Vec<String>,
    /// On disk, not in the bundle.
    pub extra: Vec<String>,
}

impl ManifestCheck {
    pub fn all_match(&self) -> bool {
        self.subject_consistent
            && self.differing.is_empty()
            && self.missing.is_empty()
            && self.extra.is_empty()
    }
}

/// Checks a `model_signing` bundle (Sigstore bundle JSON with a DSSE envelope holding the
/// in-toto statement) against `model` on disk. The statement's resources must hash to its
/// subject digest; each resource is then compared with the file of the same name.
pub fn check_bundle(bundle: &Path, model: &Path) -> Result<ManifestCheck, SigningError> {
    let bad = |reason: String| SigningError::Bundle {
        path: bundle.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(bundle).map_err(|e| io(bundle, e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON ({e})")))?;
    let payload = json["dsseEnvelope"]["payload"]
        .as_str()
        .ok_or_else(|| bad("no dsseEnvelope.payload (is this a model_signing bundle?)".into()))?;
    use base64::Engine as _;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .map_err(|e| bad(format!("payload is not base64 ({e})")))?;
    let statement: serde_json::Value = serde_json::from_slice(&payload)
        .map_err(|e| bad(format!("payload is not an in-toto JSON statement ({e})")))?;
    let subject = statement["subject"][0]["digest"]["sha256"]
        .as_str()
        .ok_or_else(|| bad("no subject[0].digest.sha256".into()))?
        .to_string();
    let resources = statement["predicate"]["resources"]
        .as_array()
        .ok_or_else(|| bad("no predicate.resources (another predicate type?)".into()))?;
    let mut listed = Vec::with_capacity(resources.len());
    let mut root = Sha256::new();
    for r in resources {
        let (Some(name), Some(algorithm), Some(digest)) = (
            r["name"].as_str(),
            r["algorithm"].as_str(),
            r["digest"].as_str(),
        ) else {
            return Err(bad("a resource lacks name, algorithm or digest".into()));
        };
        if algorithm != "sha256" {
            return Err(bad(format!(
                "resource {name} is hashed with {algorithm}; pot checks sha256 manifests"
            )));
        }
        let raw = hex::decode(digest).map_err(|_| bad(format!("resource {name}: bad hex")))?;
        root.update(&raw);
        listed.push((name.to_string(), digest.to_ascii_lowercase()));
    }
    let on_disk = manifest(model)?;
    let mut check = ManifestCheck {
        subject_consistent: hex::encode(root.finalize()) == subject,
        subject_sha256: subject,
        ..ManifestCheck::default()
    };
    for (name, digest) in &listed {
        match on_disk.files.iter().find(|f| &f.name == name) {
            Some(f) if &f.sha256 == digest => check.matching.push(name.clone()),
            Some(_) => check.differing.push(name.clone()),
            None => check.missing.push(name.clone()),
        }
    }
    for f in &on_disk.files {
        if !listed.iter().any(|(n, _)| n == &f.name) {
            check.extra.push(f.name.clone());
        }
    }
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_file_is_one_item_named_dot() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.gguf");
        std::fs::write(&file, b"abc").unwrap();
        let m = manifest(&file).unwrap();
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(
            m.files,
            vec![FileDigest {
                name: ".".into(),
                sha256: abc.into()
            }]
        );
        let root: [u8; 32] = Sha256::digest(hex::decode(abc).unwrap()).into();
        assert_eq!(m.root_sha256, hex::encode(root));
        assert_eq!(m.model_name, "m.gguf");
    }
}

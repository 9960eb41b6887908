//! One error type for every way a model file can be unusable; each names the file and says what
//! to do next.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error(
        "model not found: {path} does not exist. Check the path (a GGUF file or a Hugging Face directory with config.json)"
    )]
    NotFound { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is a directory without config.json: a Hugging Face model directory needs config.json next to its *.safetensors files"
    )]
    MissingConfig { path: PathBuf },
    #[error("{path} holds no weights: expected model.safetensors or model.safetensors.index.json")]
    MissingWeights { path: PathBuf },
    #[error(
        "{path} is not a model file pot can read: {reason}. pot reads GGUF files (.gguf) and Hugging Face directories"
    )]
    UnknownFormat { path: PathBuf, reason: String },
    #[error("{path} is corrupted or truncated: {reason}. Download or convert the file again")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "{path}: tensor `{tensor}` has type {dtype}, which pot cannot dequantise (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K). Re-export the model with a supported quantisation"
    )]
    UnsupportedDtype {
        path: PathBuf,
        tensor: String,
        dtype: String,
    },
    #[error(
        "{path}: architecture `{arch}` is not supported (supported: {supported}). Open an issue with the model's config"
    )]
    UnsupportedArchitecture {
        path: PathBuf,
        arch: String,
        supported: String,
    },
    #[error(
        "{path}: `{key}` = {value} is not supported: {reason}. pot refuses it rather than compute a different model than the file describes"
    )]
    UnsupportedConfig {
        path: PathBuf,
        key: String,
        value: String,
        reason: String,
    },
    #[error(
        "{path}: tensor `{tensor}` is not used by the {arch} forward pass; pot refuses files with weights it would ignore (the model is not the one it would compute)"
    )]
    UnusedTensor {
        path: PathBuf,
        tensor: String,
        arch: String,
    },
    #[error("{path}: invalid config: {reason}")]
    InvalidConfig { path: PathBuf, reason: String },
    #[error("{path}: tensor `{tensor}` is missing; the file does not match its architecture")]
    MissingTensor { path: PathBuf, tensor: String },
    #[error("{path}: cannot build the tokenizer: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error(
        "{repo} is not in the Hugging Face cache (searched {searched}). Download it with `hf download {repo}` (huggingface_hub), set HF_HUB_CACHE or HF_HOME to the cache that holds it, or give a path"
    )]
    NotInHubCache { repo: String, searched: PathBuf },
    #[error(
        "{repo}: revision `{revision}` is not in the Hugging Face cache (searched {searched}). Download it with `hf download {repo} --revision {revision}`, or name a revision the cache holds"
    )]
    RevisionNotInHubCache {
        repo: String,
        revision: String,
        searched: PathBuf,
    },
    #[error("{repo} holds several GGUF files ({files}); pick one with --gguf-file NAME")]
    SeveralGgufInRepo { repo: String, files: String },
}

impl FormatError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            FormatError::NotFound { path }
        } else {
            FormatError::Io { path, source }
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        FormatError::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = FormatError> = std::result::Result<T, E>;

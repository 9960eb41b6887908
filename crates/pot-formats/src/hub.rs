//! Models named `ORG/NAME[@REVISION]`, found in the Hugging Face cache as `huggingface_hub`
//! lays it out: `models--ORG--NAME/refs/REVISION` holds a commit hash,
//! `models--ORG--NAME/snapshots/COMMIT/` the files (symlinks into `blobs/`).
//!
//! The cache is `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`, the
//! order `huggingface_hub` reads them in. Nothing is downloaded here: a repository that is not in
//! the cache is an error that names the directory searched and the command that fetches it.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{FormatError, Result};

/// A model resolved in the Hugging Face cache.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HubModel {
    /// `ORG/NAME` as given.
    pub repo: String,
    /// The revision asked for: a branch or tag (`main` when none was given) or a commit hash.
    pub revision: String,
    /// The commit hash the revision resolved to (the snapshot's directory name).
    pub commit: String,
    /// What pot opens: the snapshot directory (a Hugging Face model) or one GGUF file in it.
    pub path: PathBuf,
}

/// The Hugging Face hub cache directory this process would use.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("HF_HUB_CACHE")
        .or_else(|| var("HF_HOME").map(|home| home.join("hub")))
        .or_else(|| var("HOME").map(|home| home.join(".cache/huggingface/hub")))
}

/// `ORG/NAME[@REVISION]` split into repository and revision, or `None` when `spec` cannot be
/// a repository id (an absolute or explicitly relative path, a file name with an extension
/// pot reads, more or fewer than one `/`).
pub fn parse_spec(spec: &str) -> Option<(&str, Option<&str>)> {
    let (repo, revision) = match spec.split_once('@') {
        Some((repo, rev)) if !rev.is_empty() && !rev.contains(['@', '\\']) => (repo, Some(rev)),
        Some(_) => return None,
        None => (spec, None),
    };
    let (org, name) = repo.split_once('/')?;
    // Hugging Face's repo-id rule: letters, digits, `-`, `_`, `.`; no `--` or `..`; no
    // leading or trailing `-`/`.`.
    let part_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 96
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !s.contains("--")
            && !s.contains("..")
            && !s.starts_with(['-', '.'])
            && !s.ends_with(['-', '.'])
    };
    let is_model_file = name.ends_with(".gguf") || name.ends_with(".json");
    (part_ok(org) && part_ok(name) && !is_model_file).then_some((repo, revision))
}

/// Resolves `spec` when it names a repository rather than a path: `Ok(None)` when `spec`
/// exists on disk or cannot be a repository id (then it is a path, opened as given).
/// `gguf_file` picks one GGUF file inside the snapshot; without it a snapshot with
/// `config.json` is opened as a Hugging Face directory, one with a single `*.gguf` as that file.
pub fn resolve(spec: &Path, gguf_file: Option<&str>) -> Result<Option<HubModel>> {
    let Some(text) = spec.to_str() else {
        return Ok(None);
    };
    if spec.exists() {
        return Ok(None);
    }
    let Some((repo, revision)) = parse_spec(text) else {
        return Ok(None);
    };
    let Some(cache) = cache_dir() else {
        return Err(FormatError::NotInHubCache {
            repo: repo.to_string(),
            searched: PathBuf::from(
                "(no cache directory: HF_HUB_CACHE, HF_HOME and HOME are unset)",
            ),
        });
    };
    resolve_in(&cache, repo, revision, gguf_file).map(Some)
}

/// [`resolve`] in a given cache directory.
pub fn resolve_in(
    cache: &Path,
    repo: &str,
    revision: Option<&str>,
    gguf_file: Option<&str>,
) -> Result<HubModel> {
    let dir = cache.join(format!("models--{}", repo.replace('/', "--")));
    if !dir.is_dir() {
        return Err(FormatError::NotInHubCache {
            repo: repo.to_string(),
            searched: dir,
        });
    }
    let revision = revision.unwrap_or("main");
    let is_commit = revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit());
    let commit = if is_commit {
        revision.to_ascii_lowercase()
    } else {
        let refs = dir.join("refs").join(revision);
        // `refs/pr/1` is a ref; `..` would leave the repository's directory.
        if revision
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
        {
            return Err(FormatError::RevisionNotInHubCache {
                repo: repo.to_string(),
                revision: revision.to_string(),
                searched: refs,
            });
        }
        // A ref holds a 40-digit hash: read no more than a little over that.
        let mut text = String::new();
        std::fs::File::open(&refs)
            .and_then(|f| f.take(128).read_to_string(&mut text))
            .map_err(|_| FormatError::RevisionNotInHubCache {
                repo: repo.to_string(),
                revision: revision.to_string(),
                searched: refs.clone(),
            })?;
        let commit = text.trim().to_ascii_lowercase();
        if commit.len() != 40 || !commit.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(FormatError::Corrupt {
                path: refs,
                reason: format!("expected a 40-digit commit hash, found {:?}", text.trim()),
            });
        }
        commit
    };
    let snapshot = dir.join("snapshots").join(&commit);
    if !snapshot.is_dir() {
        return Err(FormatError::RevisionNotInHubCache {
            repo: repo.to_string(),
            revision: revision.to_string(),
            searched: snapshot,
        });
    }
    let path = pick_model(&snapshot, repo, gguf_file)?;
    Ok(HubModel {
        repo: repo.to_string(),
        revision: revision.to_string(),
        commit,
        path,
    })
}

/// The file or directory of a snapshot that pot opens.
fn pick_model(snapshot: &Path, repo: &str, gguf_file: Option<&str>) -> Result<PathBuf> {
    if let Some(name) = gguf_file {
        let path = snapshot.join(name);
        let inside = Path::new(name)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        return if inside && path.is_file() {
            Ok(path)
        } else {
            Err(FormatError::NotInHubCache {
                repo: format!("{repo} (file {name})"),
                searched: path,
            })
        };
    }
    if snapshot.join("config.json").is_file() {
        return Ok(snapshot.to_path_buf());
    }
    let mut ggufs: Vec<String> = std::fs::read_dir(snapshot)
        .map_err(|e| FormatError::io(snapshot, e))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".gguf"))
        .collect();
    ggufs.sort();
    match ggufs.as_slice() {
        [one] => Ok(snapshot.join(one)),
        [] => Err(FormatError::UnknownFormat {
            path: snapshot.to_path_buf(),
            reason: "the snapshot has neither config.json nor a .gguf file".into(),
        }),
        several => Err(FormatError::SeveralGgufInRepo {
            repo: repo.to_string(),
            files: several.join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_ids_and_paths_are_told_apart() {
        assert_eq!(
            parse_spec("HuggingFaceTB/SmolLM2-135M"),
            Some(("HuggingFaceTB/SmolLM2-135M", None))
        );
        assert_eq!(
            parse_spec("Qwen/Qwen2.5-0.5B@v1.0"),
            Some(("Qwen/Qwen2.5-0.5B", Some("v1.0")))
        );
        assert_eq!(
            parse_spec("org/name@refs/pr/1"),
            Some(("org/name", Some("refs/pr/1")))
        );
        for path in [
            "model.gguf",
            "./org/name",
            "/abs/name",
            "a/b/c",
            "dir/model.gguf",
            "org/",
            "/name",
            "org/na--me",
            "org/name@",
            "org/../x",
            "",
        ] {
            assert_eq!(parse_spec(path), None, "{path}");
        }
    }
}

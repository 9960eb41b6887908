//! `ORG/NAME[@REVISION]` in a cache laid out as huggingface_hub lays it: blobs named by their
//! hash, snapshots of relative symlinks into them, refs holding commit hashes.

use std::path::Path;

use sha2::Digest;

use pot_formats::FormatError;
use pot_formats::hub::resolve_in;

const MAIN: &str = "0123456789abcdef0123456789abcdef01234567";
const OLD: &str = "89abcdef0123456789abcdef0123456789abcdef";

/// One snapshot of `repo` at `commit` with `files` (name, contents), and `refs` pointing at it.
fn snapshot(cache: &Path, repo: &str, commit: &str, files: &[(&str, &str)], refs: &[&str]) {
    let dir = cache.join(format!("models--{}", repo.replace('/', "--")));
    let blobs = dir.join("blobs");
    let snap = dir.join("snapshots").join(commit);
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::create_dir_all(&snap).unwrap();
    for (name, contents) in files {
        // Large files are stored under their SHA-256 (small ones under a git hash).
        let blob = hex::encode(sha2::Sha256::digest(contents.as_bytes()));
        std::fs::write(blobs.join(&blob), contents).unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/{blob}"), snap.join(name)).unwrap();
    }
    for name in refs {
        let path = dir.join("refs").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, commit).unwrap();
    }
}

#[test]
fn a_repository_resolves_to_its_snapshot_by_branch_tag_or_commit() {
    let cache = tempfile::tempdir().unwrap();
    let repo = "HuggingFaceTB/SmolLM2-135M";
    snapshot(
        cache.path(),
        repo,
        MAIN,
        &[("config.json", "{}"), ("model.safetensors", "w")],
        &["main"],
    );
    snapshot(
        cache.path(),
        repo,
        OLD,
        &[("config.json", "{ }")],
        &["v1.0", "refs/pr/1"],
    );

    let m = resolve_in(cache.path(), repo, None, None).unwrap();
    assert_eq!((m.revision.as_str(), m.commit.as_str()), ("main", MAIN));
    assert!(
        m.path.ends_with(format!("snapshots/{MAIN}")),
        "{}",
        m.path.display()
    );
    assert!(
        m.path.join("model.safetensors").is_file(),
        "symlinks into blobs are followed"
    );

    for rev in ["v1.0", "refs/pr/1", OLD] {
        let m = resolve_in(cache.path(), repo, Some(rev), None).unwrap();
        assert_eq!(m.commit, OLD, "{rev}");
    }
    assert!(matches!(
        resolve_in(cache.path(), repo, Some("v2.0"), None),
        Err(FormatError::RevisionNotInHubCache { .. })
    ));
    assert!(matches!(
        resolve_in(cache.path(), repo, Some("../../x"), None),
        Err(FormatError::RevisionNotInHubCache { .. })
    ));
}

#[test]
fn a_gguf_repository_opens_its_one_file_or_the_one_named() {
    let cache = tempfile::tempdir().unwrap();
    snapshot(
        cache.path(),
        "org/one",
        MAIN,
        &[("m.Q4_0.gguf", "a"), ("README.md", "r")],
        &["main"],
    );
    snapshot(
        cache.path(),
        "org/two",
        MAIN,
        &[("m.Q4_0.gguf", "a"), ("m.Q8_0.gguf", "b")],
        &["main"],
    );
    let one = resolve_in(cache.path(), "org/one", None, None).unwrap();
    assert!(one.path.ends_with("m.Q4_0.gguf"));

    let err = resolve_in(cache.path(), "org/two", None, None).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, FormatError::SeveralGgufInRepo { .. }));
    assert!(
        text.contains("m.Q4_0.gguf, m.Q8_0.gguf") && text.contains("--gguf-file"),
        "{text}"
    );

    let picked = resolve_in(cache.path(), "org/two", None, Some("m.Q8_0.gguf")).unwrap();
    assert!(picked.path.ends_with("m.Q8_0.gguf"));
    for bad in ["m.Q2_K.gguf", "../../../../etc/passwd"] {
        assert!(matches!(
            resolve_in(cache.path(), "org/two", None, Some(bad)),
            Err(FormatError::NotInHubCache { .. })
        ));
    }
}

#[test]
fn a_repository_not_in_the_cache_names_the_directory_and_the_download_command() {
    let cache = tempfile::tempdir().unwrap();
    let err = resolve_in(cache.path(), "org/absent", None, None).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(
            &cache
                .path()
                .join("models--org--absent")
                .display()
                .to_string()
        ),
        "{text}"
    );
    assert!(text.contains("hf download org/absent"), "{text}");
}

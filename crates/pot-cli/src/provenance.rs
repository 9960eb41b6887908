//! `pot merkle root|proof|verify|diff` and `pot provenance verify`.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use clap::{Args, Subcommand};
use pot_formats::Model;
use pot_provenance::{TensorEncoding, TensorProof, TensorTree, model_signing, transcript};

use crate::exit::{self, Failure};

#[derive(Args)]
pub struct MerkleArgs {
    #[command(subcommand)]
    action: MerkleAction,
}

#[derive(Args, Clone, Copy)]
struct EncodingArg {
    /// Hash dequantised f32 values instead of stored bytes (two encodings of the same weights
    /// then share a root; costs a full dequantisation).
    #[arg(long)]
    canonical: bool,
}

impl EncodingArg {
    fn encoding(self) -> TensorEncoding {
        if self.canonical {
            TensorEncoding::Canonical
        } else {
            TensorEncoding::Stored
        }
    }
}

#[derive(Subcommand)]
enum MerkleAction {
    /// Print the tensor Merkle root of a model.
    Root {
        model: PathBuf,
        #[command(flatten)]
        encoding: EncodingArg,
    },
    /// Print an inclusion proof (JSON) of one tensor (internal Hugging Face name).
    Proof {
        model: PathBuf,
        tensor: String,
        #[command(flatten)]
        encoding: EncodingArg,
    },
    /// Check a proof file; against --root if given, else the root it carries.
    Verify {
        proof: PathBuf,
        #[arg(long)]
        root: Option<String>,
    },
    /// List the tensors that differ between two models.
    Diff {
        a: PathBuf,
        b: PathBuf,
        #[command(flatten)]
        encoding: EncodingArg,
        #[arg(long)]
        json: bool,
    },
}

impl crate::hub::ModelArgs for MerkleArgs {
    fn model_paths(&mut self) -> Vec<&mut PathBuf> {
        match &mut self.action {
            MerkleAction::Root { model, .. } | MerkleAction::Proof { model, .. } => vec![model],
            MerkleAction::Diff { a, b, .. } => vec![a, b],
            MerkleAction::Verify { .. } => Vec::new(),
        }
    }
}

impl crate::hub::ModelArgs for ProvenanceArgs {
    fn model_paths(&mut self) -> Vec<&mut PathBuf> {
        match &mut self.action {
            ProvenanceAction::Digest { model, .. }
            | ProvenanceAction::CheckManifest { model, .. } => vec![model],
            ProvenanceAction::Verify { .. } => Vec::new(),
        }
    }
}

fn tree(path: &PathBuf, encoding: TensorEncoding) -> Result<TensorTree, Failure> {
    Ok(TensorTree::of_model(&Model::open(path)?, encoding)?)
}

pub fn merkle_cmd(args: MerkleArgs) -> Result<u8, Failure> {
    match args.action {
        MerkleAction::Root { model, encoding } => {
            println!("{}", tree(&model, encoding.encoding())?.root());
            Ok(exit::SAME)
        }
        MerkleAction::Proof {
            model,
            tensor,
            encoding,
        } => {
            let tree = tree(&model, encoding.encoding())?;
            let proof = tree.proof(&tensor).ok_or_else(|| {
                anyhow!(
                    "no tensor `{tensor}` in {}; `pot inspect --json` lists the names",
                    model.display()
                )
            })?;
            println!(
                "{}",
                serde_json::to_string_pretty(&proof).map_err(|e| anyhow!(e))?
            );
            Ok(exit::SAME)
        }
        MerkleAction::Verify { proof, root } => {
            let text = std::fs::read_to_string(&proof)
                .with_context(|| format!("cannot read {}", proof.display()))?;
            let proof: TensorProof = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a proof", proof.display()))?;
            if proof.verify(root.as_deref()) {
                println!(
                    "ok: `{}` is leaf {} of {} under root {}",
                    proof.leaf.name,
                    proof.index,
                    proof.size,
                    root.as_deref().unwrap_or(&proof.root)
                );
                Ok(exit::SAME)
            } else {
                println!(
                    "INVALID: the proof of `{}` does not lead to the root",
                    proof.leaf.name
                );
                Ok(exit::DIFFERENT)
            }
        }
        MerkleAction::Diff {
            a,
            b,
            encoding,
            json,
        } => {
            let diff = tree(&a, encoding.encoding())?.diff(&tree(&b, encoding.encoding())?);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&diff).map_err(|e| anyhow!(e))?
                );
            } else {
                for name in &diff.changed {
                    println!("changed   {name}");
                }
                for name in &diff.only_in_first {
                    println!("only in A {name}");
                }
                for name in &diff.only_in_second {
                    println!("only in B {name}");
                }
                println!(
                    "{} changed, {} only in A, {} only in B; roots {}",
                    diff.changed.len(),
                    diff.only_in_first.len(),
                    diff.only_in_second.len(),
                    if diff.same_root { "equal" } else { "differ" }
                );
            }
            Ok(if diff.same_root {
                exit::SAME
            } else {
                exit::DIFFERENT
            })
        }
    }
}

#[derive(Args)]
pub struct ProvenanceArgs {
    #[command(subcommand)]
    action: ProvenanceAction,
}

#[derive(Subcommand)]
enum ProvenanceAction {
    /// Recompute a report's transcript root from its trace and check every query's inclusion.
    Verify { report: PathBuf },
    /// The OpenSSF model-signing digest of a model directory or file: SHA-256 per file and the
    /// root `model_signing` signs (the in-toto subject digest).
    Digest {
        model: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Check a `model_signing` bundle's manifest against a model on disk: which files match,
    /// differ, are missing or extra (exit 0 all match, 1 otherwise). The Sigstore signature
    /// itself is not verified here (`model_signing verify` does that).
    CheckManifest {
        bundle: PathBuf,
        model: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn signing_failure(e: model_signing::SigningError) -> Failure {
    exit::fail(exit::LOAD_FAILED, anyhow!(e))
}

pub fn provenance_cmd(args: ProvenanceArgs) -> Result<u8, Failure> {
    let report = match args.action {
        ProvenanceAction::Verify { report } => report,
        ProvenanceAction::Digest { model, json } => {
            let m = model_signing::manifest(&model).map_err(signing_failure)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&m).expect("serialises"));
            } else {
                for f in &m.files {
                    println!("{}  {}", f.sha256, f.name);
                }
                println!(
                    "root {}  ({} files, model_signing sha256 manifest)",
                    m.root_sha256,
                    m.files.len()
                );
            }
            return Ok(exit::SAME);
        }
        ProvenanceAction::CheckManifest {
            bundle,
            model,
            json,
        } => {
            let c = model_signing::check_bundle(&bundle, &model).map_err(signing_failure)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&c).expect("serialises"));
            } else {
                for (label, names) in [
                    ("match", &c.matching),
                    ("DIFFERS", &c.differing),
                    ("MISSING", &c.missing),
                    ("EXTRA", &c.extra),
                ] {
                    for n in names {
                        println!("{label:8} {n}");
                    }
                }
                if !c.subject_consistent {
                    println!(
                        "the bundle's resources do not hash to its subject digest {}",
                        c.subject_sha256
                    );
                }
                println!(
                    "{}: {} of {} signed files match",
                    if c.all_match() { "ok" } else { "MISMATCH" },
                    c.matching.len(),
                    c.matching.len() + c.differing.len() + c.missing.len()
                );
            }
            return Ok(if c.all_match() {
                exit::SAME
            } else {
                exit::DIFFERENT
            });
        }
    };
    let text = std::fs::read_to_string(&report)
        .with_context(|| format!("cannot read {}", report.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", report.display()))?;
    let trace = json["trace"].as_array().cloned().unwrap_or_default();
    let claimed = json["provenance"]["transcript_root"]
        .as_str()
        .unwrap_or_default();
    let root = transcript::root(&trace);
    let all_included = (0..trace.len()).all(|i| {
        transcript::proof(&trace, i).is_some_and(|p| {
            transcript::verify(&trace[i], i as u64, trace.len() as u64, &p, claimed)
        })
    });
    if root == claimed && all_included {
        println!(
            "ok: {} query records under transcript root {root}",
            trace.len()
        );
        Ok(exit::SAME)
    } else {
        println!("MISMATCH: the trace gives root {root}, the report claims {claimed}");
        Ok(exit::DIFFERENT)
    }
}

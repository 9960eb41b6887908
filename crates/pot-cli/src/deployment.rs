//! `--deployment` and the tolerance that follows a pair's path: which deployments of model 1 a
//! candidate is tested against, how each is computed, and each one's tolerance
//! (pot_stats::Path, measured in docs/STATISTICS.md).

use std::path::{Path as FsPath, PathBuf};

use anyhow::{Result, anyhow};
use pot_formats::quantize::FileType;
use pot_formats::{DType, Model};
use pot_orchestrator::{Deployment, DeploymentWeights, ServedCandidate};
use pot_scoring::{Arithmetic, KvCache};
use pot_stats::Path;

/// The deployments `auto` tries against a llama.cpp server: model 1 as stored and the file
/// types people serve it in (llama.cpp's quantiser, no importance matrix).
pub const SERVED_AUTO: [FileType; 7] = [
    FileType::F16,
    FileType::Q8_0,
    FileType::Q6_K,
    FileType::Q5_K_M,
    FileType::Q4_K_M,
    FileType::Q4_1,
    FileType::Q4_0,
];

/// One item of `--deployment`.
#[derive(Clone, Debug, PartialEq)]
pub enum Choice {
    Auto,
    Weights(DeploymentWeights),
}

/// `--deployment`'s list (one clap value: a newtype, so clap does not read it as many).
#[derive(Clone, Debug, PartialEq)]
pub struct ChoiceList(pub Vec<Choice>);

/// [`parse_list`] for clap.
pub fn parse_choice_list(text: &str) -> Result<ChoiceList, String> {
    parse_list(text).map(ChoiceList)
}

/// `auto`, `exact` (or `stored`), a file type (`f16`, `bf16`, `q8_0`, `q6_k`, `q5_k_m`,
/// `q4_k_m`, `q4_0`, ...), or a `.gguf` file; several separated by commas.
pub fn parse_list(text: &str) -> Result<Vec<Choice>, String> {
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let choice = match item.to_ascii_lowercase().as_str() {
            "auto" => Choice::Auto,
            "exact" | "stored" => Choice::Weights(DeploymentWeights::Stored),
            lower if lower.ends_with(".gguf") => {
                Choice::Weights(DeploymentWeights::File(PathBuf::from(item)))
            }
            _ => match item.parse::<FileType>() {
                Ok(t) => Choice::Weights(DeploymentWeights::Quantized(t)),
                Err(_) => {
                    return Err(format!(
                        "deployment `{item}`: give auto, exact, a file type (f16, bf16, q8_0, \
                         q6_k, q5_k_m, q4_k_m, q4_0, q4_1, q5_0, q5_1, ...) or a .gguf file"
                    ));
                }
            },
        };
        if !out.contains(&choice) {
            out.push(choice);
        }
    }
    if out.is_empty() {
        return Err("--deployment needs at least one deployment".into());
    }
    Ok(out)
}

/// How a model stores its matrices, as far as the tolerance is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    F32,
    F16,
    Bf16,
    /// A block type pot dequantises exactly (the values are f32 after decoding).
    Blocks(DType),
}

/// The encoding of most of a model's matrix values.
pub fn encoding(model: &Model) -> Encoding {
    let mut by_type: Vec<(DType, u64)> = Vec::new();
    for t in model.tensors().filter(|t| t.shape.len() >= 2) {
        match by_type.iter_mut().find(|(d, _)| *d == t.dtype) {
            Some((_, n)) => *n += t.elements(),
            None => by_type.push((t.dtype, t.elements())),
        }
    }
    let main = by_type
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map_or(DType::F32, |(d, _)| d);
    match main {
        DType::F32 => Encoding::F32,
        DType::F16 => Encoding::F16,
        DType::BF16 => Encoding::Bf16,
        other => Encoding::Blocks(other),
    }
}

/// A GGUF's llama.cpp file type (`general.file_type`), where it records one.
pub fn file_type(model: &Model) -> Option<FileType> {
    let id = model.gguf()?.get("general.file_type")?.as_u64()?;
    FileType::from_llama_ftype(u32::try_from(id).ok()?)
}

/// The path between two local models that pot computes, from their encodings: the same values
/// (same encoding, or a block type against its f32 decoding) or one side rounded to f16 / bf16;
/// with `--enable-8bit`, pot's int8 noise where the values differ.
pub fn local_path(model1: Encoding, model2: Encoding, int8_both: bool) -> Path {
    use Encoding::*;
    let path = match (model1, model2) {
        (a, b) if a == b => Path::Identical,
        (Bf16, _) | (_, Bf16) => Path::Bf16,
        (F16, _) | (_, F16) => Path::F16,
        // A block type's values are f32 values: its F32 export holds them exactly. Another
        // block type (a re-quantisation) is a deployment of its own (`--deployment auto`).
        _ => Path::Identical,
    };
    if int8_both && path != Path::Identical {
        Path::Int8Both
    } else {
        path
    }
}

/// What the CLI decided: the deployments to test (empty: model 1 as stored under `gamma`), the
/// tolerance of the single-deployment case, and the reason for the report.
pub struct Decision {
    pub deployments: Vec<Deployment>,
    pub gamma: f64,
    pub reason: String,
}

/// Deployments for a served candidate: llama.cpp's engine is emulated, so each deployment's
/// tolerance is the residual of that path. `choices`: what `--deployment` listed (`None`: the
/// default, `auto`).
pub fn served(
    model1: &FsPath,
    choices: Option<&[Choice]>,
    served: &ServedCandidate,
    kv: KvCache,
) -> Result<Option<Decision>> {
    let llama = served.model.api == pot_served::Api::LlamaCppPython;
    let explicit = choices.is_some();
    if !llama {
        if explicit {
            return Err(anyhow!(
                "--deployment needs a llama.cpp server (--served-api llama-cpp-python): pot \
                 reproduces llama.cpp's arithmetic only; against {} use --tolerance",
                served.model.api.name()
            ));
        }
        return Ok(None);
    }
    // A model that does not open is the pipeline's to report (with its report and exit code).
    let Ok(model) = Model::open(model1) else {
        return Ok(None);
    };
    if let Err(e) = pot_scoring::emulation_supported(model.config()) {
        if explicit {
            return Err(anyhow!("--deployment: {e}"));
        }
        return Ok(None);
    }
    let gguf = model.gguf().is_some();
    let mut weights = Vec::new();
    for choice in choices.unwrap_or(&[Choice::Auto]) {
        match choice {
            Choice::Auto => {
                weights.push(DeploymentWeights::Stored);
                if gguf {
                    let stored = file_type(&model);
                    weights.extend(
                        SERVED_AUTO
                            .iter()
                            .filter(|t| Some(**t) != stored)
                            .map(|t| DeploymentWeights::Quantized(*t)),
                    );
                }
            }
            Choice::Weights(w) => weights.push(w.clone()),
        }
    }
    dedup(&mut weights);
    let arithmetic = Arithmetic::LlamaCpp { kv };
    let deployments = weights
        .into_iter()
        .map(|w| {
            let q4_0 = matches!(w, DeploymentWeights::Quantized(FileType::Q4_0))
                || (w == DeploymentWeights::Stored
                    && encoding(&model) == Encoding::Blocks(DType::Q4_0));
            let t = Path::ServedEmulated { q4_0 }.tolerance();
            Deployment {
                weights: w,
                arithmetic,
                gamma: t.gamma,
                gamma_source: t.source,
            }
        })
        .collect::<Vec<_>>();
    Ok(Some(Decision {
        gamma: deployments[0].gamma,
        reason: format!(
            "deployments of model 1 computed as llama.cpp computes them, each with the \
             tolerance of that path ({} deployments; docs/STATISTICS.md, \"Several deployments\")",
            deployments.len()
        ),
        deployments,
    }))
}

/// Deployments for a local candidate that pot computes: model 1 as stored under the tolerance of
/// the two encodings' path, and (`auto`) the candidate's own GGUF file type derived from model
/// 1 when it differs from model 1's.
pub fn local(
    model1: &FsPath,
    model2: &FsPath,
    choices: Option<&[Choice]>,
    arithmetic: Arithmetic,
    int8_both: bool,
) -> Option<Decision> {
    // Models that do not open are the pipeline's to report (with its report and exit code).
    let (Ok(m1), Ok(m2)) = (Model::open(model1), Model::open(model2)) else {
        return None;
    };
    let (e1, e2) = (encoding(&m1), encoding(&m2));
    let stored_path = local_path(e1, e2, int8_both);
    let mut weights = Vec::new();
    for choice in choices.unwrap_or(&[Choice::Auto]) {
        match choice {
            Choice::Auto => {
                weights.push(DeploymentWeights::Stored);
                // A candidate GGUF of another block file type than model 1's: model 1 quantised
                // to that type is the deployment that could explain it.
                if m1.gguf().is_some()
                    && same_shape(&m1, &m2)
                    && matches!(e2, Encoding::Blocks(_))
                    && let Some(t2) = file_type(&m2)
                    && Some(t2) != file_type(&m1)
                {
                    weights.push(DeploymentWeights::Quantized(t2));
                }
            }
            Choice::Weights(w) => weights.push(w.clone()),
        }
    }
    dedup(&mut weights);
    let deployments: Vec<Deployment> = weights
        .into_iter()
        .map(|w| {
            // A derived deployment holds the candidate's values exactly when it is the
            // candidate, and pot computes both alike (int8 included).
            let path = match w {
                DeploymentWeights::Stored => stored_path,
                _ => Path::Identical,
            };
            let t = path.tolerance();
            Deployment {
                weights: w,
                arithmetic,
                gamma: t.gamma,
                gamma_source: t.source,
            }
        })
        .collect();
    let requantised = matches!((e1, e2), (Encoding::Blocks(a), Encoding::Blocks(b)) if a != b)
        || matches!((e1, e2), (Encoding::F32, Encoding::Blocks(_)));
    let reason = format!(
        "path: model 1 {e1:?}, model 2 {e2:?}{}{}",
        if int8_both {
            ", both with pot's int8 weights"
        } else {
            ""
        },
        if requantised {
            " (model 2 is not model 1's values re-encoded losslessly: model 1 as stored explains \
             it only if they score as the same values; a quantisation of model 1 is a deployment \
             of its own, --deployment TYPE)"
        } else {
            ""
        }
    );
    if deployments.len() == 1 && deployments[0].weights == DeploymentWeights::Stored {
        // One deployment: the ordinary pipeline under its tolerance.
        return Some(Decision {
            gamma: deployments[0].gamma,
            reason: format!("{reason}: {}", deployments[0].gamma_source),
            deployments: Vec::new(),
        });
    }
    Some(Decision {
        gamma: deployments[0].gamma,
        reason,
        deployments,
    })
}

/// Whether `m2` has model 1's shape (family, sizes, vocabulary): only then can it be one of its
/// deployments.
fn same_shape(m1: &Model, m2: &Model) -> bool {
    let (a, b) = (m1.config(), m2.config());
    a.architecture == b.architecture
        && a.hidden_size == b.hidden_size
        && a.intermediate_size == b.intermediate_size
        && a.num_hidden_layers == b.num_hidden_layers
        && a.vocab_size == b.vocab_size
}

fn dedup(weights: &mut Vec<DeploymentWeights>) {
    let mut seen = Vec::new();
    weights.retain(|w| {
        let new = !seen.contains(w);
        if new {
            seen.push(w.clone());
        }
        new
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_into_deployments() {
        let list = parse_list("auto, q4_k_m,Q8_0,exact,stored,x/y.gguf").unwrap();
        assert_eq!(
            list,
            vec![
                Choice::Auto,
                Choice::Weights(DeploymentWeights::Quantized(FileType::Q4_K_M)),
                Choice::Weights(DeploymentWeights::Quantized(FileType::Q8_0)),
                Choice::Weights(DeploymentWeights::Stored),
                Choice::Weights(DeploymentWeights::File("x/y.gguf".into())),
            ]
        );
        assert!(parse_list("q3_x").unwrap_err().contains("q4_k_m"));
        assert!(parse_list(" , ").is_err());
    }

    #[test]
    fn local_paths_follow_the_lossier_encoding() {
        use Encoding::*;
        let q = Blocks(DType::Q4_1);
        assert_eq!(local_path(F32, F32, false), Path::Identical);
        assert_eq!(local_path(q, F32, false), Path::Identical);
        assert_eq!(local_path(q, F16, false), Path::F16);
        assert_eq!(local_path(F32, Bf16, false), Path::Bf16);
        assert_eq!(local_path(F16, Bf16, false), Path::Bf16);
        assert_eq!(local_path(q, Bf16, true), Path::Int8Both);
        assert_eq!(local_path(q, q, true), Path::Identical);
    }
}

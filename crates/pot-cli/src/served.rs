//! `--model2 http://host:port/v1`: the flags of a served candidate, shared by `verify` and
//! `calibrate`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;
use pot_formats::{Model, Tokenizer};
use pot_orchestrator::ServedCandidate;
use pot_served::{Api, Client, ClientOptions, ServedModel};

use crate::exit::{self, Failure};

/// The environment variable holding a served model's API key (never printed or reported).
pub const API_KEY_ENV: &str = "POT_API_KEY";

#[derive(Args, Clone)]
pub struct ServedArgs {
    /// Model name on the server (`/v1/models`); default: the one it serves.
    #[arg(long, value_name = "NAME")]
    served_model: Option<String>,
    /// The server's API: openai (OpenAI-compatible /v1/completions with echo), vllm (the same
    /// with exact token ids), llama-cpp-python (its server, started with --logits_all true),
    /// sglang (native /generate). The requests and fields read: crates/pot-served/src/api.rs.
    #[arg(long, default_value = "openai", value_parser = parse_api)]
    served_api: Api,
    /// Alternatives per position asked of the server (1-20).
    #[arg(long, default_value_t = 20)]
    top_logprobs: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Seconds per request before it is retried (4 retries, exponential backoff, also on 429
    /// and 5xx).
    #[arg(long, default_value_t = 120.0)]
    request_timeout: f64,
    /// The reference's tokenizer, needed with --reference (a fingerprint holds no tokenizer):
    /// a `tokenizer.json` (no model file at all; whether a BOS token leads is read from the
    /// fingerprint's records), or a GGUF file / Hugging Face directory of which only the
    /// tokenizer is read.
    #[arg(long, value_name = "TOKENIZER")]
    pub(crate) tokenizer: Option<PathBuf>,
}

fn parse_api(name: &str) -> Result<Api, String> {
    Api::parse(name).ok_or_else(|| format!("choose one of {}", Api::NAMES.join(", ")))
}

/// Whether `--model2` names a server rather than a file.
pub fn is_endpoint(model2: &Path) -> bool {
    model2
        .to_str()
        .is_some_and(|s| s.starts_with("http://") || s.starts_with("https://"))
}

/// The served candidate of a run, connected (the server answers and serves the model), or
/// `None` when `--model2` is a file.
pub fn candidate(
    model2: &Path,
    model1: Option<&Path>,
    args: &ServedArgs,
) -> Result<Option<ServedCandidate>, Failure> {
    if !is_endpoint(model2) {
        return Ok(None);
    }
    let tokenizer_model = args.tokenizer.as_deref().or(model1).ok_or_else(|| {
        exit::fail(
            exit::USAGE,
            anyhow!(
                "a served --model2 with --reference needs --tokenizer MODEL (model 1's tokenizer \
                 checks the server's tokens)"
            ),
        )
    })?;
    if !(args.request_timeout.is_finite() && (0.1..=86_400.0).contains(&args.request_timeout)) {
        return Err(exit::fail(
            exit::USAGE,
            anyhow!("--request-timeout must be between 0.1 and 86400 seconds"),
        ));
    }
    let tokenizer = if tokenizer_model.extension().is_some_and(|e| e == "json") {
        Tokenizer::from_file(tokenizer_model, None)
    } else {
        Model::open(tokenizer_model).and_then(|m| m.tokenizer())
    }
    .map_err(|e| exit::fail(exit::LOAD_FAILED, anyhow!(e)))?;
    let options = ClientOptions {
        timeout: Duration::from_secs_f64(args.request_timeout),
        api_key: std::env::var(API_KEY_ENV).ok().filter(|k| !k.is_empty()),
        ..ClientOptions::default()
    };
    let url = model2.to_str().expect("an endpoint is text");
    let connect = || -> Result<ServedModel, pot_served::ServedError> {
        let client = Client::new(url, options.clone())?;
        ServedModel::connect(
            client,
            args.served_api,
            args.served_model.clone(),
            args.top_logprobs,
        )
    };
    let model = connect().map_err(|e| {
        let code = match e {
            pot_served::ServedError::Config(_) => exit::USAGE,
            _ => exit::RUNTIME,
        };
        exit::fail(
            code,
            anyhow!(e).context(format!("cannot use the server at {url}")),
        )
    })?;
    Ok(Some(ServedCandidate {
        model,
        concurrency: args.concurrency.max(1),
        tokenizer,
        tolerance_reason: String::new(),
    }))
}

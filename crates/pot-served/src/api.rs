//! What each engine is asked and which response fields are read. Every request scores the
//! prompt teacher-forced: the engine tokenizes the text itself, runs one forward pass over it and
//! reports, per prompt position, log-probs of the next token. One token is generated because
//! some engines refuse 0; it is ignored.
//!
//! | `--served-api` | request | fields read |
//! |---|---|---|
//! | `openai` (any OpenAI-compatible server, SGLang's included) | `POST /v1/completions` `{model, prompt, max_tokens: 1, echo: true, logprobs: k, temperature: 0}` | `choices[0].logprobs.tokens`, `.token_logprobs`, `.top_logprobs`, `usage.prompt_tokens` |
//! | `vllm` | the same plus `return_tokens_as_token_ids: true` | the same; tokens are `token_id:N`, so ids are exact; `GET /version` |
//! | `llama-cpp-python` | the same (the server needs `--logits_all true`) | the same, one row earlier: its entry i holds the distribution *after* token i (its issue #1983), and entry 0 is empty; `POST /extras/tokenize` for ids |
//! | `sglang` | `POST /generate` `{text, sampling_params: {max_new_tokens: 1, temperature: 0}, return_logprob: true, logprob_start_len: 0, top_logprobs_num: k, return_text_in_logprobs: true}` | `meta_info.input_token_logprobs` `[[logprob, id, text], ...]`, `meta_info.input_top_logprobs`; `GET /get_server_info` |
//!
//! In OpenAI's semantics entry i of an echoed prompt holds log P(token i | tokens before i) and
//! the top alternatives for position i; pot's row i (the distribution after token i) is entry
//! i + 1.

use serde_json::{Value, json};

use crate::ServedError;
use crate::client::Client;

/// The dialect of a server's API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    OpenAi,
    Vllm,
    LlamaCppPython,
    Sglang,
}

impl Api {
    pub const NAMES: &'static [&'static str] = &["openai", "vllm", "llama-cpp-python", "sglang"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "openai" => Some(Api::OpenAi),
            "vllm" => Some(Api::Vllm),
            "llama-cpp-python" => Some(Api::LlamaCppPython),
            "sglang" => Some(Api::Sglang),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Api::OpenAi => "openai",
            Api::Vllm => "vllm",
            Api::LlamaCppPython => "llama-cpp-python",
            Api::Sglang => "sglang",
        }
    }
}

/// A token as a server names it: an id where its API gives ids, else the token's text.
#[derive(Clone, Debug, PartialEq)]
pub enum ServedToken {
    Id(u32),
    Text(String),
}

/// What a server tells of the distribution after one prompt position.
#[derive(Clone, Debug, PartialEq)]
pub struct ServedRow {
    /// The listed alternatives (the k most likely, sometimes with the prompt's own token).
    pub top: Vec<(ServedToken, f32)>,
    /// Log-prob of the prompt's next token, where the server reports it.
    pub next: Option<f32>,
}

/// A prompt as a server scored it.
#[derive(Clone, Debug, PartialEq)]
pub struct ServedSequence {
    /// The prompt's tokens as the server tokenized them.
    pub tokens: Vec<ServedToken>,
    /// `rows[i]`: the distribution after `tokens[..=i]`; `None` where the server reports none.
    pub rows: Vec<Option<ServedRow>>,
}

pub(crate) fn list_models(client: &Client, _api: Api) -> Result<Vec<String>, ServedError> {
    let v = client.get("/v1/models")?;
    let data = v["data"].as_array().ok_or_else(|| ServedError::Shape {
        url: format!("{}/v1/models", client.base()),
        field: "data".into(),
        detail: "expected a list of models".into(),
    })?;
    Ok(data
        .iter()
        .filter_map(|m| m["id"].as_str().map(str::to_owned))
        .collect())
}

pub(crate) fn engine_version(client: &Client, api: Api) -> Option<String> {
    let path = match api {
        Api::Vllm => "/version",
        Api::Sglang => "/get_server_info",
        Api::OpenAi | Api::LlamaCppPython => return None,
    };
    let v = client.get(path).ok()?;
    v["version"].as_str().map(str::to_owned)
}

pub(crate) fn tokenize(
    client: &Client,
    api: Api,
    model: &str,
    text: &str,
) -> Result<Option<Vec<u32>>, ServedError> {
    let (path, body) = match api {
        Api::LlamaCppPython => ("/extras/tokenize", json!({ "input": text, "model": model })),
        Api::Vllm => ("/tokenize", json!({ "prompt": text, "model": model })),
        Api::OpenAi | Api::Sglang => return Ok(None),
    };
    // Token ids: a few bytes each, at most a token per byte of the text (plus specials).
    let bound = (1 << 20) + (text.len() as u64 + 16) * 16;
    let v = client.post_bounded(path, &body, bound)?;
    let url = format!("{}{path}", client.base());
    let ids = v["tokens"]
        .as_array()
        .ok_or_else(|| shape(&url, "tokens", "expected a list of token ids"))?
        .iter()
        .map(|t| token_id(t).ok_or_else(|| shape(&url, "tokens", "a token id is not a u32")))
        .collect::<Result<Vec<u32>, _>>()?;
    Ok(Some(ids))
}

pub(crate) fn score_text(
    client: &Client,
    api: Api,
    model: &str,
    top_k: usize,
    text: &str,
) -> Result<ServedSequence, ServedError> {
    match api {
        Api::Sglang => {
            let body = json!({
                "text": text,
                "sampling_params": { "max_new_tokens": 1, "temperature": 0 },
                "return_logprob": true,
                "logprob_start_len": 0,
                "top_logprobs_num": top_k,
                "return_text_in_logprobs": true,
            });
            let v = client.post_bounded("/generate", &body, response_bound(text, top_k))?;
            parse_sglang(&v, &format!("{}/generate", client.base()))
        }
        _ => {
            let mut body = json!({
                "model": model,
                "prompt": text,
                "max_tokens": 1,
                "echo": true,
                "logprobs": top_k,
                "temperature": 0,
            });
            if api == Api::Vllm {
                body["return_tokens_as_token_ids"] = true.into();
            }
            let v = client.post_bounded("/v1/completions", &body, response_bound(text, top_k))?;
            parse_completion(&v, api, &format!("{}/v1/completions", client.base()))
        }
    }
}

/// The most a prompt's log-probs can legitimately take as JSON: at most a token per byte of
/// the text (plus specials and the one generated), each position with its token, log-prob,
/// offset and `top_k` alternatives, each entry under 1 KiB (a token's text escaped as `\uXXXX`
/// is six bytes a byte), plus 1 MiB for the rest. A 600-byte prompt at k = 20: 16 MiB.
pub fn response_bound(text: &str, top_k: usize) -> u64 {
    let positions = text.len() as u64 + 16;
    (1 << 20) + positions * (top_k as u64 + 4) * 1024
}

fn shape(url: &str, field: &str, detail: &str) -> ServedError {
    ServedError::Shape {
        url: url.into(),
        field: field.into(),
        detail: detail.into(),
    }
}

fn token_id(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|i| u32::try_from(i).ok())
}

/// A log-prob as servers write it: a finite number <= a rounding hair above 0.
fn logprob(v: &Value) -> Option<f32> {
    let x = v.as_f64()?;
    (x.is_finite() && x <= 1e-3).then_some(x as f32)
}

/// An OpenAI token string; vLLM's `token_id:N` (with `return_tokens_as_token_ids`) is an id.
fn openai_token(s: &str, api: Api) -> ServedToken {
    if api == Api::Vllm
        && let Some(id) = s.strip_prefix("token_id:").and_then(|n| n.parse().ok())
    {
        return ServedToken::Id(id);
    }
    ServedToken::Text(s.to_string())
}

/// Parses an echoed `/v1/completions` response (see the module table).
pub fn parse_completion(v: &Value, api: Api, url: &str) -> Result<ServedSequence, ServedError> {
    let lp = &v["choices"][0]["logprobs"];
    let n = v["usage"]["prompt_tokens"].as_u64().ok_or_else(|| {
        shape(
            url,
            "usage.prompt_tokens",
            "the prompt's token count is missing",
        )
    })? as usize;
    let tokens = lp["tokens"].as_array().ok_or_else(|| {
        shape(
            url,
            "choices[0].logprobs.tokens",
            "no echoed tokens: the server must support echo with logprobs",
        )
    })?;
    let token_lps = lp["token_logprobs"]
        .as_array()
        .ok_or_else(|| shape(url, "choices[0].logprobs.token_logprobs", "missing"))?;
    let tops = lp["top_logprobs"]
        .as_array()
        .ok_or_else(|| shape(url, "choices[0].logprobs.top_logprobs", "missing"))?;
    if n == 0 || tokens.len() < n || token_lps.len() < n || tops.len() < n {
        return Err(shape(
            url,
            "choices[0].logprobs",
            &format!(
                "{} tokens, {} log-probs and {} top lists for a {n}-token prompt: the prompt was \
                 not echoed whole",
                tokens.len(),
                token_lps.len(),
                tops.len()
            ),
        ));
    }
    let texts: Vec<&str> = tokens[..n]
        .iter()
        .map(|t| {
            t.as_str()
                .ok_or_else(|| shape(url, "choices[0].logprobs.tokens", "a token is not a string"))
        })
        .collect::<Result<_, _>>()?;
    let top_at = |i: usize| -> Result<Option<Vec<(String, f32)>>, ServedError> {
        match &tops[i] {
            Value::Null => Ok(None),
            Value::Object(map) => Ok(Some(
                map.iter()
                    .filter_map(|(k, v)| logprob(v).map(|lp| (k.clone(), lp)))
                    .collect(),
            )),
            _ => Err(shape(
                url,
                "choices[0].logprobs.top_logprobs",
                "an entry is neither null nor an object of token -> log-prob",
            )),
        }
    };
    let to_row = |top: Vec<(String, f32)>, next: Option<f32>| ServedRow {
        top: top
            .into_iter()
            .map(|(t, lp)| (openai_token(&t, api), lp))
            .collect(),
        next,
    };
    let mut rows = Vec::with_capacity(n);
    for i in 0..n {
        let row = if api == Api::LlamaCppPython {
            // Entry i is the distribution after token i; the next token's log-prob is known only
            // where it is among the listed alternatives.
            top_at(i)?.map(|top| {
                let next = texts
                    .get(i + 1)
                    .filter(|_| i + 1 < n)
                    .and_then(|t| top.iter().find(|(k, _)| k == t).map(|(_, lp)| *lp));
                to_row(top, next)
            })
        } else if i + 1 < n {
            top_at(i + 1)?.map(|top| to_row(top, logprob(&token_lps[i + 1])))
        } else {
            None
        };
        rows.push(row);
    }
    Ok(ServedSequence {
        tokens: texts.iter().map(|t| openai_token(t, api)).collect(),
        rows,
    })
}

/// Parses SGLang's `/generate` response with input log-probs (see the module table).
pub fn parse_sglang(v: &Value, url: &str) -> Result<ServedSequence, ServedError> {
    // A batch answer is a list; pot sends one prompt per request.
    let v = if let Some(first) = v.as_array().and_then(|a| a.first()) {
        first
    } else {
        v
    };
    let meta = &v["meta_info"];
    let input = meta["input_token_logprobs"].as_array().ok_or_else(|| {
        shape(
            url,
            "meta_info.input_token_logprobs",
            "missing: the request asks for return_logprob with logprob_start_len 0",
        )
    })?;
    let tops = meta["input_top_logprobs"]
        .as_array()
        .ok_or_else(|| shape(url, "meta_info.input_top_logprobs", "missing"))?;
    if tops.len() != input.len() || input.is_empty() {
        return Err(shape(
            url,
            "meta_info.input_top_logprobs",
            &format!("{} top lists for {} input tokens", tops.len(), input.len()),
        ));
    }
    // Each entry: [logprob or null, token id, text or null].
    let entry = |e: &Value, field: &str| -> Result<(Option<f32>, u32), ServedError> {
        let id = token_id(&e[1])
            .ok_or_else(|| shape(url, field, "an entry is not [logprob, token id, text]"))?;
        Ok((logprob(&e[0]), id))
    };
    let tokens = input
        .iter()
        .map(|e| entry(e, "meta_info.input_token_logprobs").map(|(_, id)| ServedToken::Id(id)))
        .collect::<Result<Vec<_>, _>>()?;
    let n = tokens.len();
    let mut rows = Vec::with_capacity(n);
    for i in 0..n {
        let row = if i + 1 < n {
            match &tops[i + 1] {
                Value::Null => None,
                Value::Array(list) => {
                    let mut top = Vec::with_capacity(list.len());
                    for e in list {
                        let (lp, id) = entry(e, "meta_info.input_top_logprobs")?;
                        if let Some(lp) = lp {
                            top.push((ServedToken::Id(id), lp));
                        }
                    }
                    Some(ServedRow {
                        top,
                        next: entry(&input[i + 1], "meta_info.input_token_logprobs")?.0,
                    })
                }
                _ => {
                    return Err(shape(
                        url,
                        "meta_info.input_top_logprobs",
                        "an entry is neither null nor a list",
                    ));
                }
            }
        } else {
            None
        };
        rows.push(row);
    }
    Ok(ServedSequence { tokens, rows })
}

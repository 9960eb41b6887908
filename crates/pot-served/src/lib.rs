//! Verifying a model where it is served: a serving engine computes the candidate's
//! teacher-forced log-probs of a challenge and pot compares them with the reference's.
//!
//! - [`client`]: HTTP with timeouts, retries with backoff on 429 / 5xx / connection errors, an
//!   API key from the caller (never logged), https through rustls.
//! - [`api`]: the request each engine understands and the response fields read, turned into an
//!   engine-neutral [`ServedSequence`] (the prompt's tokens and, per position, the log-probs the
//!   engine tells of the next token).
//! - [`align`]: "same tokens or no score": the server's tokens are compared with pot's own
//!   tokenization, and the listed alternatives are mapped back to token ids exactly (or left out).

pub mod align;
pub mod api;
pub mod client;

pub use align::{AlignedChallenge, AlignmentFit, TokenTexts, align, alignment_fit};
pub use api::{Api, ServedRow, ServedSequence, ServedToken};
pub use client::{Client, ClientOptions};

/// Errors of talking to a server; every one says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum ServedError {
    #[error("{url}: {reason}")]
    Http { url: String, reason: String },
    #[error(
        "{url}: the response has no usable `{field}` ({detail}); is --served-api right for this server?"
    )]
    Shape {
        url: String,
        field: String,
        detail: String,
    },
    #[error("{0}")]
    Config(String),
    #[error("the server tokenized challenge {challenge} differently from the reference: {detail}")]
    Tokens {
        challenge: String,
        detail: String,
        /// Only a leading token differs (the BOS policy), not the tokenizer.
        leading_token_only: bool,
    },
    #[error(
        "the server's log-probs fit the reference one position off ({detail}): the engine's echo \
         layout is not the one --served-api {api} reads (llama-cpp-python's rows sit one entry \
         early); choose the right --served-api"
    )]
    Misaligned { api: String, detail: String },
}

/// A model behind a server: where, which, how to ask, how many alternatives per position.
pub struct ServedModel {
    pub client: Client,
    pub api: Api,
    /// Model name sent with every request (the server's `/v1/models` id).
    pub model: String,
    /// Alternatives requested per position (OpenAI's `logprobs`, SGLang's `top_logprobs_num`).
    pub top_k: usize,
    /// The engine's version where its API reports one (vLLM `/version`, SGLang
    /// `/get_server_info`).
    pub engine_version: Option<String>,
}

/// The most alternatives per position OpenAI's completions API allows (vLLM and SGLang keep it).
pub const MAX_TOP_K: usize = 20;

impl ServedModel {
    /// Connects: checks the server answers, picks the model (the one served when `model` is not
    /// given; an error listing them when several are) and asks for the engine's version.
    pub fn connect(
        client: Client,
        api: Api,
        model: Option<String>,
        top_k: usize,
    ) -> Result<Self, ServedError> {
        if !(1..=MAX_TOP_K).contains(&top_k) {
            return Err(ServedError::Config(format!(
                "--top-logprobs {top_k} is outside 1..={MAX_TOP_K} (the OpenAI API's limit)"
            )));
        }
        let listed = api::list_models(&client, api)?;
        let model = match model {
            Some(m) => {
                if !listed.is_empty() && !listed.contains(&m) {
                    return Err(ServedError::Config(format!(
                        "the server does not serve `{m}`; it serves: {}",
                        listed.join(", ")
                    )));
                }
                m
            }
            None => match listed.as_slice() {
                [one] => one.clone(),
                [] => {
                    return Err(ServedError::Config(
                        "the server lists no model; pass --served-model NAME".into(),
                    ));
                }
                many => {
                    return Err(ServedError::Config(format!(
                        "the server serves several models; pass --served-model with one of: {}",
                        many.join(", ")
                    )));
                }
            },
        };
        let engine_version = api::engine_version(&client, api);
        Ok(Self {
            client,
            api,
            model,
            top_k,
            engine_version,
        })
    }

    /// The engine's log-probs of `text` as a prompt (teacher-forced, nothing generated that is
    /// used).
    pub fn score_text(&self, text: &str) -> Result<ServedSequence, ServedError> {
        api::score_text(&self.client, self.api, &self.model, self.top_k, text)
    }

    /// The engine's own token ids for `text`, where its API has a tokenize endpoint
    /// (llama-cpp-python `/extras/tokenize`, vLLM `/tokenize`); `None` otherwise.
    pub fn tokenize(&self, text: &str) -> Result<Option<Vec<u32>>, ServedError> {
        api::tokenize(&self.client, self.api, &self.model, text)
    }
}

//! HTTP to a serving engine: JSON in, JSON out, with a global timeout per request, retries with
//! exponential backoff on 429, 5xx and connection failures, and an optional bearer key.

use std::time::Duration;

use serde_json::Value;

use crate::ServedError;

/// How hard to try.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Whole-request limit (connect, send, wait, read).
    pub timeout: Duration,
    /// Further attempts after a retryable failure.
    pub retries: u32,
    /// Sent as `Authorization: Bearer ...`; never printed or written to a report.
    pub api_key: Option<String>,
    /// First backoff; doubled per attempt.
    pub backoff: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(120),
            retries: 4,
            api_key: None,
            backoff: Duration::from_millis(500),
        }
    }
}

/// Responses larger than this are refused whatever the request (a 2,000-token prompt with 20
/// alternatives per position is about 1 MB of JSON).
pub const MAX_RESPONSE_BYTES: u64 = 256 << 20;

/// The bound of a request without a larger one of its own (model lists, versions): 4 MiB.
const SMALL_RESPONSE_BYTES: u64 = 4 << 20;

pub struct Client {
    base: String,
    agent: ureq::Agent,
    options: ClientOptions,
}

impl Client {
    /// `base` is the server's root or its `/v1` address (`http://host:8000/v1`); both work.
    pub fn new(base: &str, options: ClientOptions) -> Result<Self, ServedError> {
        let trimmed = base.trim_end_matches('/');
        let root = trimmed.strip_suffix("/v1").unwrap_or(trimmed);
        if !(root.starts_with("http://") || root.starts_with("https://")) {
            return Err(ServedError::Config(format!(
                "`{base}` is not an http:// or https:// address"
            )));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(options.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Self {
            base: root.to_string(),
            agent,
            options,
        })
    }

    /// The server's root address (without `/v1`), as the report records it.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// GET `path`; its answer may hold at most 4 MiB.
    pub fn get(&self, path: &str) -> Result<Value, ServedError> {
        self.request(path, None, SMALL_RESPONSE_BYTES)
    }

    /// POST `body` to `path`; its answer may hold at most 4 MiB.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value, ServedError> {
        self.request(path, Some(body), SMALL_RESPONSE_BYTES)
    }

    /// POST with the bound of what this request can legitimately return (for a prompt's
    /// log-probs: its tokens times the alternatives asked for), at most
    /// [`MAX_RESPONSE_BYTES`]. A longer answer is refused and not retried: the server would
    /// send it again.
    pub fn post_bounded(
        &self,
        path: &str,
        body: &Value,
        max_bytes: u64,
    ) -> Result<Value, ServedError> {
        self.request(path, Some(body), max_bytes.min(MAX_RESPONSE_BYTES))
    }

    fn request(&self, path: &str, body: Option<&Value>, limit: u64) -> Result<Value, ServedError> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 0;
        loop {
            match self.once(&url, body, limit) {
                Ok(v) => return Ok(v),
                Err(Attempt::Final(reason)) => return Err(ServedError::Http { url, reason }),
                Err(Attempt::Retry(reason)) if attempt >= self.options.retries => {
                    return Err(ServedError::Http {
                        url,
                        reason: format!("{reason} (after {} attempts)", attempt + 1),
                    });
                }
                Err(Attempt::Retry(_)) => {
                    std::thread::sleep(self.options.backoff * 2u32.saturating_pow(attempt));
                    attempt += 1;
                }
            }
        }
    }

    fn once(&self, url: &str, body: Option<&Value>, limit: u64) -> Result<Value, Attempt> {
        let auth = self.options.api_key.as_ref().map(|k| format!("Bearer {k}"));
        let response = match body {
            Some(body) => {
                let mut req = self
                    .agent
                    .post(url)
                    .header("Content-Type", "application/json");
                if let Some(auth) = &auth {
                    req = req.header("Authorization", auth);
                }
                req.send(body.to_string())
            }
            None => {
                let mut req = self.agent.get(url);
                if let Some(auth) = &auth {
                    req = req.header("Authorization", auth);
                }
                req.call()
            }
        };
        let mut response = response.map_err(|e| match e {
            ureq::Error::Io(_) | ureq::Error::Timeout(_) | ureq::Error::ConnectionFailed => {
                Attempt::Retry(format!("cannot reach the server ({e})"))
            }
            other => Attempt::Final(format!("request failed ({other})")),
        })?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_string()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => Attempt::Final(format!(
                    "the response is longer than {limit} bytes, more than this request can \
                     legitimately return: refused, not retried"
                )),
                e => Attempt::Retry(format!("response not read ({e})")),
            })?;
        match status {
            200..=299 => serde_json::from_str(&text)
                .map_err(|e| Attempt::Final(format!("the response is not JSON ({e})"))),
            429 | 500..=599 => Err(Attempt::Retry(format!("HTTP {status}: {}", excerpt(&text)))),
            401 | 403 => Err(Attempt::Final(format!(
                "HTTP {status}: the server wants an API key; set POT_API_KEY ({})",
                excerpt(&text)
            ))),
            _ => Err(Attempt::Final(format!("HTTP {status}: {}", excerpt(&text)))),
        }
    }
}

enum Attempt {
    Retry(String),
    Final(String),
}

/// The start of a server's error body, for the message.
fn excerpt(text: &str) -> String {
    let t: String = text.chars().take(300).collect();
    if t.len() < text.len() {
        format!("{t}...")
    } else {
        t
    }
}

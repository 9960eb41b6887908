//! Tokenizers: from `tokenizer.json`, or rebuilt from GGUF metadata (byte-level BPE with the
//! pre-tokenizer llama.cpp uses for the file's `tokenizer.ggml.pre`, or a SentencePiece
//! vocabulary with scores), and written back out.

use std::collections::HashMap;
use std::path::Path;

use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::error::{FormatError, Result};
use crate::gguf::GgufFile;

/// llama.cpp's split patterns per `tokenizer.ggml.pre` (llama-vocab.cpp), applied in sequence.
fn pre_tokenizer_patterns(pre: &str) -> Option<&'static [&'static str]> {
    const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
    match pre {
        // SmolLM, StarCoder, Refact and friends: digits one by one, then the GPT-2 pattern.
        "smollm" | "starcoder" | "refact" | "codeshell" => Some(&[r"\p{N}", GPT2]),
        "gpt-2" | "gpt2" => Some(&[GPT2]),
        "qwen2" => Some(&[
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ]),
        _ => None,
    }
}

/// A tokenizer plus the BOS policy of its model.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Prepend this id when encoding a prompt (the model asks for a BOS token).
    pub bos: Option<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.vocab_size())
            .field("bos", &self.bos)
            .finish()
    }
}

impl Tokenizer {
    pub fn from_file(path: &Path, bos: Option<u32>) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| FormatError::Tokenizer {
            path: path.into(),
            reason: e.to_string(),
        })?;
        Ok(Self { inner, bos })
    }

    /// Rebuilds the tokenizer stored in a GGUF file's metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let path = file.path();
        let fail = |reason: String| FormatError::Tokenizer {
            path: path.into(),
            reason,
        };
        let model = file.get("tokenizer.ggml.model").and_then(|v| v.as_str());
        if model == Some("llama") {
            return Self::spm_from_gguf(file);
        }
        if model != Some("gpt2") {
            return Err(fail(format!(
                "tokenizer.ggml.model is {model:?}; pot rebuilds byte-level BPE (\"gpt2\") and \
                 SentencePiece (\"llama\") tokenizers"
            )));
        }
        let pre = file
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.as_str())
            .unwrap_or("gpt2");
        let patterns = pre_tokenizer_patterns(pre).ok_or_else(|| {
            fail(format!(
                "pre-tokenizer `{pre}` is not supported (supported: smollm, starcoder, gpt2, qwen2)"
            ))
        })?;
        let strings = |key: &str| -> Result<Vec<String>> {
            file.get(key)
                .and_then(|v| v.as_array())
                .ok_or_else(|| fail(format!("`{key}` is missing")))?
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| fail(format!("`{key}` holds non-strings")))
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges: Vec<(String, String)> = strings("tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| fail(format!("merge `{m}` is not two tokens")))
            })
            .collect::<Result<_>>()?;
        let types: Vec<u64> = file
            .get("tokenizer.ggml.token_type")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().map(|v| v.as_u64().unwrap_or(1)).collect())
            .unwrap_or_default();
        if types.len() > tokens.len() {
            return Err(fail(format!(
                "`tokenizer.ggml.token_type` has {} entries for {} tokens",
                types.len(),
                tokens.len()
            )));
        }
        let vocab =
            unique_vocab(&tokens).ok_or_else(|| fail("the token list has duplicates".into()))?;
        let bpe = BPE::builder()
            .vocab_and_merges(
                vocab
                    .into_iter()
                    .collect::<tokenizers::models::bpe::Vocab>(),
                merges,
            )
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let mut steps: Vec<PreTokenizerWrapper> = Vec::new();
        for pattern in patterns {
            let split = Split::new(
                SplitPattern::Regex((*pattern).to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| fail(e.to_string()))?;
            steps.push(split.into());
        }
        steps.push(ByteLevel::new(false, false, false).into());
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(Sequence::new(steps)));
        inner.with_decoder(Some(ByteLevel::default()));
        // Control (3) and user-defined (4) tokens are whole tokens, never split by BPE.
        add_gguf_special_tokens(&mut inner, &tokens, &types).map_err(fail)?;
        Ok(Self {
            inner,
            bos: gguf_bos(file, false),
        })
    }

    /// Rebuilds a SentencePiece BPE vocabulary from GGUF metadata (`tokenizer.ggml.model` =
    /// "llama": tokens, scores, types; Gemma, LLaMA 1/2, Mistral v0.1), as a `tokenizers` BPE
    /// that computes what llama.cpp's `llm_tokenizer_spm` computes: spaces become `▁` (with a
    /// leading one where `add_space_prefix`), then adjacent pieces are merged best score first
    /// while the merged piece is in the vocabulary, and characters left outside it fall back to
    /// `<0xNN>` byte tokens. The merge list is derived from the scores: every token that splits
    /// into two tokens gives a merge, ranked by its score (what HF's SentencePiece converter
    /// does). Written here because `tokenizers` has no SentencePiece-model import and GGUF
    /// holds no merge list for these vocabularies.
    fn spm_from_gguf(file: &GgufFile) -> Result<Self> {
        use tokenizers::decoders::byte_fallback::ByteFallback;
        use tokenizers::decoders::fuse::Fuse;
        use tokenizers::decoders::sequence::Sequence as DecoderSequence;
        use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};

        let path = file.path();
        let fail = |reason: String| FormatError::Tokenizer {
            path: path.into(),
            reason,
        };
        let array = |key: &str| {
            file.get(key)
                .and_then(|v| v.as_array())
                .ok_or_else(|| fail(format!("`{key}` is missing")))
        };
        let tokens: Vec<String> = array("tokenizer.ggml.tokens")?
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| fail("`tokenizer.ggml.tokens` holds non-strings".into()))?;
        let scores: Vec<f64> = array("tokenizer.ggml.scores")?
            .iter()
            .map(|v| v.as_f64())
            .collect::<Option<_>>()
            .ok_or_else(|| fail("`tokenizer.ggml.scores` holds non-numbers".into()))?;
        let types: Vec<u64> = array("tokenizer.ggml.token_type")?
            .iter()
            .map(|v| v.as_u64())
            .collect::<Option<_>>()
            .ok_or_else(|| fail("`tokenizer.ggml.token_type` holds non-integers".into()))?;
        if scores.len() != tokens.len() || types.len() != tokens.len() {
            return Err(fail(format!(
                "{} tokens, {} scores, {} types",
                tokens.len(),
                scores.len(),
                types.len()
            )));
        }
        let vocab =
            unique_vocab(&tokens).ok_or_else(|| fail("the token list has duplicates".into()))?;
        // Merges: each token's splits into two tokens, best-scoring token first (ties by id,
        // then by split point).
        let mut ranked: Vec<(usize, usize)> = Vec::new();
        for (id, token) in tokens.iter().enumerate() {
            for (split, _) in token.char_indices().skip(1) {
                if vocab.contains_key(&token[..split]) && vocab.contains_key(&token[split..]) {
                    ranked.push((id, split));
                }
            }
        }
        ranked.sort_by(|a, b| scores[b.0].total_cmp(&scores[a.0]).then(a.cmp(b)));
        let merges: Vec<(String, String)> = ranked
            .into_iter()
            .map(|(id, split)| {
                let t = &tokens[id];
                (t[..split].to_string(), t[split..].to_string())
            })
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(
                vocab
                    .into_iter()
                    .collect::<tokenizers::models::bpe::Vocab>(),
                merges,
            )
            .byte_fallback(true)
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        let add_space_prefix = file
            .get("tokenizer.ggml.add_space_prefix")
            .and_then(|v| v.as_bool())
            // llama.cpp's default for SPM vocabularies.
            .unwrap_or(true);
        let mut normalizers = Vec::new();
        if add_space_prefix {
            normalizers.push(Prepend::new("\u{2581}".into()).into());
        }
        normalizers.push(
            Replace::new(" ", "\u{2581}")
                .map_err(|e| fail(e.to_string()))?
                .into(),
        );
        inner
            .with_normalizer(Some(NormalizerSequence::new(normalizers)))
            .map_err(|e| fail(e.to_string()))?;
        inner.with_decoder(Some(DecoderSequence::new(vec![
            Replace::new("\u{2581}", " ")
                .map_err(|e| fail(e.to_string()))?
                .into(),
            ByteFallback::new().into(),
            Fuse::new().into(),
        ])));
        // Control (3) tokens are special; user-defined (4) ones (Gemma's runs of newlines and
        // spaces) are split out of the text before merging, as llama.cpp does.
        add_gguf_special_tokens(&mut inner, &tokens, &types).map_err(fail)?;
        Ok(Self {
            inner,
            bos: gguf_bos(file, true),
        })
    }

    /// Token ids of `text` as plain text (special-token strings are not given special meaning
    /// beyond being whole tokens), without BOS.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| e.to_string())
    }

    /// Token ids of a prompt as the model is fed it: BOS first when the model asks for one.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, String> {
        let mut ids = self.bos.map(|b| vec![b]).unwrap_or_default();
        ids.extend(self.encode(text)?);
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, String> {
        self.inner.decode(ids, false).map_err(|e| e.to_string())
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The full token -> id map, added tokens included.
    pub fn vocab(&self) -> HashMap<String, u32> {
        self.inner.get_vocab(true)
    }

    /// SHA-256 over the full token -> id map, in id order: `u32be(id) || token || 0x00` each.
    pub fn vocab_sha256(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut entries: Vec<(u32, String)> =
            self.vocab().into_iter().map(|(t, i)| (i, t)).collect();
        entries.sort();
        let mut h = Sha256::new();
        for (id, token) in entries {
            h.update(id.to_be_bytes());
            h.update(token.as_bytes());
            h.update([0]);
        }
        hex::encode(h.finalize())
    }

    /// The tokenizer as `tokenizer.json` text.
    pub fn to_json(&self) -> Result<String, String> {
        self.inner.to_string(false).map_err(|e| e.to_string())
    }

    /// Pre-tokenizer and normaliser configuration as JSON (for compatibility checks).
    pub fn pipeline_json(&self) -> serde_json::Value {
        serde_json::json!({
            "normalizer": serde_json::to_value(self.inner.get_normalizer()).unwrap_or_default(),
            "pre_tokenizer": serde_json::to_value(self.inner.get_pre_tokenizer()).unwrap_or_default(),
        })
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// The text a single token stands for, as serving engines print it in log-prob listings:
    /// its bytes (byte-level BPE pieces mapped back through the GPT-2 byte alphabet, SentencePiece
    /// `▁` as a space and `<0xNN>` as that byte; added tokens as written), decoded as UTF-8 with
    /// invalid bytes dropped. A token holding part of a character therefore prints as less than
    /// its bytes, often as "", and several tokens can share a text (see pot-served).
    pub fn token_text(&self, id: u32) -> Option<String> {
        let piece = self.inner.id_to_token(id)?;
        let added = self.inner.get_added_tokens_decoder();
        if added.get(&id).is_some() {
            return Some(piece);
        }
        let byte_level = matches!(
            self.inner.get_decoder(),
            Some(tokenizers::DecoderWrapper::ByteLevel(_))
        );
        let bytes: Vec<u8> = if byte_level {
            let table = byte_level_table();
            let mut out = Vec::with_capacity(piece.len());
            for c in piece.chars() {
                match table.get(&c) {
                    Some(&b) => out.push(b),
                    None => out.extend_from_slice(c.to_string().as_bytes()),
                }
            }
            out
        } else if let Some(hex) = piece
            .strip_prefix("<0x")
            .and_then(|h| h.strip_suffix('>'))
            .filter(|h| h.len() == 2)
        {
            match u8::from_str_radix(hex, 16) {
                Ok(b) => vec![b],
                Err(_) => piece.into_bytes(),
            }
        } else {
            piece.replace('\u{2581}', " ").into_bytes()
        };
        Some(utf8_dropping_invalid(&bytes))
    }
}

/// GGUF control (type 3, special) and user-defined (type 4) tokens as whole added tokens, never
/// split by the model.
fn add_gguf_special_tokens(
    inner: &mut tokenizers::Tokenizer,
    tokens: &[String],
    types: &[u64],
) -> std::result::Result<(), String> {
    let special: Vec<AddedToken> = types
        .iter()
        .enumerate()
        .filter(|(_, t)| **t == 3 || **t == 4)
        .map(|(i, t)| AddedToken::from(tokens[i].clone(), *t == 3))
        .collect();
    inner
        .add_special_tokens(special)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Token -> id for a GGUF token list, or `None` when a token appears twice (ids would clash).
fn unique_vocab(tokens: &[String]) -> Option<HashMap<String, u32>> {
    let vocab: HashMap<String, u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    (vocab.len() == tokens.len()).then_some(vocab)
}

/// The BOS id to prepend: `tokenizer.ggml.bos_token_id` where `tokenizer.ggml.add_bos_token`
/// says so (llama.cpp's default when the key is absent: `default_add_bos`, true for SentencePiece
/// vocabularies, false for byte-level BPE).
fn gguf_bos(file: &GgufFile, default_add_bos: bool) -> Option<u32> {
    let add_bos = file
        .get("tokenizer.ggml.add_bos_token")
        .and_then(|v| v.as_bool())
        .unwrap_or(default_add_bos);
    file.get("tokenizer.ggml.bos_token_id")
        .and_then(|v| v.as_u64())
        .and_then(|v| u32::try_from(v).ok())
        .filter(|_| add_bos)
}

/// GPT-2's byte alphabet reversed (printable char -> byte), as byte-level BPE vocabularies use.
fn byte_level_table() -> &'static HashMap<char, u8> {
    static TABLE: std::sync::OnceLock<HashMap<char, u8>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let mut next = 0u32;
        (0..=255u8)
            .map(|b| {
                let c = if printable(b) {
                    char::from(b)
                } else {
                    next += 1;
                    char::from_u32(255 + next).expect("valid char")
                };
                (c, b)
            })
            .collect()
    })
}

/// UTF-8 text of `bytes` with every invalid sequence dropped (Python's `errors="ignore"`).
pub fn utf8_dropping_invalid(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace('\u{FFFD}', "")
}

//! Configuration hashes: raw file, canonical form, and architecture-only.
//!
//! Canonical form: the JSON value with every object's keys sorted (byte order), no whitespace,
//! numbers as serde_json writes them (integers verbatim, floats in shortest round-trip form).
//! The architecture hash covers only the fields that define the network, from pot's parsed
//! [`ModelConfig`], so a GGUF file and its conversion match there even when metadata differs.

use pot_formats::{Model, ModelConfig};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The value with sorted keys, compact.
pub fn canonical_json(value: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&map[k])))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_string(&sorted(value)).expect("JSON serialises")
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConfigHashes {
    /// `config.json`, `gguf-metadata` or `absent`.
    pub source: String,
    /// SHA-256 of the raw config.json bytes (none for GGUF: its metadata is not a file).
    pub raw_sha256: Option<String>,
    /// SHA-256 of the canonical JSON (for GGUF: all metadata except `tokenizer.*`).
    pub canonical_sha256: Option<String>,
    /// SHA-256 of the canonical JSON of the architecture fields.
    pub architecture_sha256: Option<String>,
    /// The effective forward-pass parameters that hash covers (what pot computes with).
    #[serde(default)]
    pub forward_parameters: Option<Value>,
}

/// The fields that define the network: exactly what the forward pass computes with
/// ([`ModelConfig::forward_parameters`]).
pub fn architecture_json(c: &ModelConfig) -> Value {
    c.forward_parameters()
}

impl ConfigHashes {
    pub fn absent() -> Self {
        Self {
            source: "absent".into(),
            raw_sha256: None,
            canonical_sha256: None,
            architecture_sha256: None,
            forward_parameters: None,
        }
    }

    pub fn of_model(model: &Model) -> Self {
        let forward = architecture_json(model.config());
        let architecture_sha256 = Some(sha256_hex(canonical_json(&forward).as_bytes()));
        let forward_parameters = Some(forward);
        if let Some(gguf) = model.gguf() {
            let meta: serde_json::Map<String, Value> = gguf
                .metadata
                .iter()
                .filter(|(k, _)| !k.starts_with("tokenizer."))
                .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or(Value::Null)))
                .collect();
            return Self {
                source: "gguf-metadata".into(),
                raw_sha256: None,
                canonical_sha256: Some(sha256_hex(canonical_json(&Value::Object(meta)).as_bytes())),
                architecture_sha256,
                forward_parameters,
            };
        }
        let path = model.path().join("config.json");
        match std::fs::read(&path) {
            Ok(raw) => Self {
                source: "config.json".into(),
                canonical_sha256: serde_json::from_slice::<Value>(&raw)
                    .ok()
                    .map(|v| sha256_hex(canonical_json(&v).as_bytes())),
                raw_sha256: Some(sha256_hex(&raw)),
                architecture_sha256,
                forward_parameters,
            },
            Err(_) => Self {
                architecture_sha256,
                forward_parameters,
                ..Self::absent()
            },
        }
    }

    /// Compares two models' hashes; a hash absent on either side is "absent", never a match.
    pub fn compare(&self, other: &ConfigHashes) -> ConfigComparison {
        let cmp = |a: &Option<String>, b: &Option<String>| match (a, b) {
            (Some(a), Some(b)) => Some(a == b),
            _ => None,
        };
        let architecture_match = cmp(&self.architecture_sha256, &other.architecture_sha256);
        ConfigComparison {
            raw_match: cmp(&self.raw_sha256, &other.raw_sha256),
            canonical_match: if self.source == other.source {
                cmp(&self.canonical_sha256, &other.canonical_sha256)
            } else {
                None
            },
            architecture_match,
            status: match architecture_match {
                Some(true) => "match",
                Some(false) => "mismatch",
                None => "absent",
            }
            .into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConfigComparison {
    pub raw_match: Option<bool>,
    /// Only compared between two configs of the same source kind.
    pub canonical_match: Option<bool>,
    /// What the report's `config_hash.match` shows.
    pub architecture_match: Option<bool>,
    pub status: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let a: Value =
            serde_json::from_str(r#"{"b": 1, "a": {"d": [3, {"z": 1, "y": 2}], "c": 0.5}}"#)
                .unwrap();
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"c":0.5,"d":[3,{"y":2,"z":1}]},"b":1}"#
        );
        let b: Value =
            serde_json::from_str(r#"{"a":{"c":0.5,"d":[3,{"z":1,"y":2}]},"b":1}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
    }

    #[test]
    fn absent_is_never_a_match() {
        let absent = ConfigHashes::absent();
        let cmp = absent.compare(&ConfigHashes::absent());
        assert_eq!(cmp.architecture_match, None);
        assert_eq!(cmp.status, "absent");
    }
}

//! The transcript tree: one leaf per query record of a verification, root in the report.
//! Leaf data is the record's canonical JSON (keys sorted, compact) as serde_json writes it.

use serde_json::Value;

use crate::decode_hash;
use crate::merkle::{Hash, inclusion_path, leaf_hash, root_of_leaves, verify_inclusion};

/// Keys of a trace entry that form the query record committed to by the transcript tree.
pub const RECORD_KEYS: [&str; 5] = [
    "query",
    "challenge_id",
    "token_ids_sha256",
    "score",
    "candidate",
];

/// The committed part of a trace entry, with sorted keys.
pub fn record_data(entry: &Value) -> Vec<u8> {
    let mut record = serde_json::Map::new();
    let mut keys = RECORD_KEYS.to_vec();
    keys.sort_unstable();
    for k in keys {
        record.insert(k.to_string(), entry.get(k).cloned().unwrap_or(Value::Null));
    }
    serde_json::to_vec(&Value::Object(record)).expect("JSON serialises")
}

pub fn leaf_hashes(trace: &[Value]) -> Vec<Hash> {
    trace.iter().map(|e| leaf_hash(&record_data(e))).collect()
}

pub fn root(trace: &[Value]) -> String {
    hex::encode(root_of_leaves(&leaf_hashes(trace)))
}

/// Audit path (hex) of query `index` of the trace.
pub fn proof(trace: &[Value], index: usize) -> Option<Vec<String>> {
    Some(
        inclusion_path(&leaf_hashes(trace), index)?
            .iter()
            .map(hex::encode)
            .collect(),
    )
}

/// Checks one record's inclusion proof against a transcript root.
pub fn verify(entry: &Value, index: u64, size: u64, path: &[String], root: &str) -> bool {
    let (Some(root), Some(path)) = (
        decode_hash(root),
        path.iter()
            .map(|p| decode_hash(p))
            .collect::<Option<Vec<_>>>(),
    ) else {
        return false;
    };
    verify_inclusion(&leaf_hash(&record_data(entry)), index, size, &path, &root)
}

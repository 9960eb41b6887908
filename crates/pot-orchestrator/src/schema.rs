//! The report's JSON Schema (draft 2020-12, the subset it uses) and a validator for it.
//!
//! Own code rather than the `jsonschema` crate: that crate's dependencies turn on features of
//! crates burn also uses (syn `fold`, num-traits `default`, uuid `std`, ahash `serde`...), so
//! adding it even as a dev-dependency made `cargo test` rebuild burn with a second feature set
//! (measured: 9 min on this machine) and kept run and test builds from sharing artifacts. The
//! keywords below are all the schema needs; an unknown keyword is an error, never ignored.

use serde_json::Value;

/// The schema of `pot verify` reports, also printed in docs/REPORT.md.
pub const REPORT_SCHEMA: &str = include_str!("report.schema.json");

/// Validates a report against [`REPORT_SCHEMA`]; returns every violation with its JSON path.
pub fn validate_report(report: &Value) -> Vec<String> {
    let schema: Value = serde_json::from_str(REPORT_SCHEMA).expect("the bundled schema is JSON");
    validate(&schema, report)
}

/// Validates `value` against `schema` (whose `$defs` serve `$ref`s).
pub fn validate(schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(schema, schema, value, "$", &mut errors);
    errors
}

fn type_matches(name: &str, v: &Value) -> bool {
    match name {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => false,
    }
}

/// `^[0-9a-f]{N}$`, the only pattern the schema uses.
fn pattern_matches(pattern: &str, s: &str) -> Option<bool> {
    let n: usize = pattern
        .strip_prefix("^[0-9a-f]{")?
        .strip_suffix("}$")?
        .parse()
        .ok()?;
    Some(
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
    )
}

fn check(root: &Value, schema: &Value, v: &Value, path: &str, errors: &mut Vec<String>) {
    let Some(schema) = schema.as_object() else {
        errors.push(format!("{path}: schema is not an object"));
        return;
    };
    for (keyword, arg) in schema {
        match keyword.as_str() {
            "$schema" | "$id" | "title" | "description" | "$defs" => {}
            "$ref" => {
                let target = arg
                    .as_str()
                    .and_then(|r| r.strip_prefix("#/$defs/"))
                    .and_then(|name| root["$defs"].get(name));
                match target {
                    Some(t) => check(root, t, v, path, errors),
                    None => errors.push(format!("{path}: unresolvable $ref {arg}")),
                }
            }
            "type" => {
                let ok = match arg {
                    Value::String(t) => type_matches(t, v),
                    Value::Array(ts) => ts
                        .iter()
                        .filter_map(Value::as_str)
                        .any(|t| type_matches(t, v)),
                    _ => false,
                };
                if !ok {
                    errors.push(format!("{path}: {v} is not of type {arg}"));
                }
            }
            "enum" => {
                if !arg.as_array().is_some_and(|a| a.contains(v)) {
                    errors.push(format!("{path}: {v} is not one of {arg}"));
                }
            }
            "const" => {
                if arg != v {
                    errors.push(format!("{path}: {v} is not {arg}"));
                }
            }
            "minimum" | "maximum" => {
                if let (Some(x), Some(bound)) = (v.as_f64(), arg.as_f64()) {
                    let ok = if keyword == "minimum" {
                        x >= bound
                    } else {
                        x <= bound
                    };
                    if !ok {
                        errors.push(format!("{path}: {x} is outside {keyword} {bound}"));
                    }
                }
            }
            "pattern" => {
                if let Some(s) = v.as_str() {
                    match pattern_matches(arg.as_str().unwrap_or(""), s) {
                        Some(true) => {}
                        Some(false) => errors.push(format!("{path}: {s:?} does not match {arg}")),
                        None => errors.push(format!("{path}: unsupported pattern {arg}")),
                    }
                }
            }
            "required" => {
                if let Some(obj) = v.as_object() {
                    for key in arg
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                    {
                        if !obj.contains_key(key) {
                            errors.push(format!("{path}: missing required `{key}`"));
                        }
                    }
                }
            }
            "properties" => {
                if let (Some(obj), Some(props)) = (v.as_object(), arg.as_object()) {
                    for (key, sub) in props {
                        if let Some(x) = obj.get(key) {
                            check(root, sub, x, &format!("{path}.{key}"), errors);
                        }
                    }
                }
            }
            "additionalProperties" => {
                if let Some(obj) = v.as_object() {
                    let declared = schema.get("properties").and_then(Value::as_object);
                    for (key, x) in obj {
                        if declared.is_some_and(|d| d.contains_key(key)) {
                            continue;
                        }
                        match arg {
                            Value::Bool(false) => {
                                errors.push(format!("{path}: unexpected property `{key}`"))
                            }
                            Value::Bool(true) => {}
                            sub => check(root, sub, x, &format!("{path}.{key}"), errors),
                        }
                    }
                }
            }
            "items" => {
                if let Some(items) = v.as_array() {
                    for (i, x) in items.iter().enumerate() {
                        check(root, arg, x, &format!("{path}[{i}]"), errors);
                    }
                }
            }
            "oneOf" => {
                let branches = arg.as_array().map(Vec::as_slice).unwrap_or_default();
                let passing = branches
                    .iter()
                    .filter(|b| validate_sub(root, b, v, path).is_empty())
                    .count();
                if passing != 1 {
                    let detail: Vec<String> = branches
                        .iter()
                        .flat_map(|b| validate_sub(root, b, v, path))
                        .collect();
                    errors.push(format!(
                        "{path}: matches {passing} of {} oneOf branches ({})",
                        branches.len(),
                        detail.join("; ")
                    ));
                }
            }
            other => errors.push(format!("{path}: unsupported schema keyword `{other}`")),
        }
    }
}

fn validate_sub(root: &Value, schema: &Value, v: &Value, path: &str) -> Vec<String> {
    let mut errors = Vec::new();
    check(root, schema, v, path, &mut errors);
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_schema_rejects_what_it_should() {
        let schema = json!({
            "type": "object",
            "required": ["a", "h"],
            "properties": {
                "a": { "type": "integer", "minimum": 1 },
                "h": { "$ref": "#/$defs/sha" },
                "o": { "oneOf": [{ "type": "null" }, { "enum": ["x"] }] }
            },
            "additionalProperties": false,
            "$defs": { "sha": { "type": "string", "pattern": "^[0-9a-f]{4}$" } }
        });
        assert!(validate(&schema, &json!({ "a": 2, "h": "00ff", "o": null })).is_empty());
        let errors = validate(&schema, &json!({ "a": 0, "h": "00FG", "o": "y", "z": 1 }));
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(validate(&schema, &json!({ "h": "0000" }))[0].contains("missing required `a`"));
        assert!(!validate(&json!({ "format": "date" }), &json!(1)).is_empty());
    }

    #[test]
    fn the_failure_report_is_valid() {
        let r = crate::Report::failure("a", "b", "model loading failed: x");
        assert_eq!(validate_report(&r), Vec::<String>::new());
    }
}

//! The engines' response shapes (fixtures/served: one recorded from a real llama-cpp-python
//! server, two written from vLLM's and SGLang's documented schemas) parsed and aligned to
//! SmolLM2's tokens of the same prompt.

use std::path::PathBuf;

use pot_formats::Model;
use pot_formats::fixtures::{SMOLLM2_135M, model_path};
use pot_served::api::{parse_completion, parse_sglang};
use pot_served::{Api, ServedError, ServedToken, TokenTexts, align, alignment_fit};
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/served")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn smollm2_texts() -> (TokenTexts, Vec<u32>) {
    let tokenizer = Model::open(model_path(SMOLLM2_135M))
        .unwrap()
        .tokenizer()
        .unwrap();
    let ids = tokenizer.encode_prompt("The capital of France is").unwrap();
    (TokenTexts::new(&tokenizer), ids)
}

#[test]
fn llama_cpp_python_rows_sit_one_entry_early() {
    let v = fixture("llama-cpp-python-completion.json");
    let seq = parse_completion(&v, Api::LlamaCppPython, "fixture").unwrap();
    assert_eq!(seq.tokens.len(), 5);
    assert!(seq.rows[0].is_none());
    // Row 1 is the distribution after "The capital": " of" most likely, and it names the next
    // prompt token " of", so that log-prob is known.
    let row = seq.rows[1].as_ref().unwrap();
    assert_eq!(row.top[0], (ServedToken::Text(" of".into()), -0.412_081_03));
    assert_eq!(row.next, Some(-0.412_081_03));
    let (texts, ids) = smollm2_texts();
    assert_eq!(ids, [504, 3575, 282, 4649, 314]);
    let aligned = align("c", &ids, 1, 3, &seq, Some(&ids), &texts).unwrap();
    assert_eq!(aligned.known.len(), 3);
    assert!(aligned.known[0].contains(&(282, -0.412_081_03)));
    assert_eq!(aligned.unmapped, 0);
    // The standard reading of the same response would put " of"'s row at position 0.
    let standard = parse_completion(&v, Api::OpenAi, "fixture").unwrap();
    assert_eq!(
        standard.rows[0].as_ref().unwrap().top,
        seq.rows[1].as_ref().unwrap().top
    );
}

#[test]
fn vllm_token_ids_and_sglang_ids_are_exact() {
    let (texts, ids) = smollm2_texts();
    let vllm = parse_completion(&fixture("vllm-completion.json"), Api::Vllm, "fixture").unwrap();
    // Cut at usage.prompt_tokens: the generated token is not part of the prompt.
    assert_eq!(vllm.tokens.len(), 5);
    assert_eq!(vllm.tokens[1], ServedToken::Id(3575));
    let a = align("c", &ids, 1, 3, &vllm, None, &texts).unwrap();
    assert_eq!(a.next, vec![Some(-0.41), Some(-2.52), Some(-0.43)]);
    assert!(a.known[1].contains(&(4649, -2.52)));

    let sglang = parse_sglang(&fixture("sglang-generate.json"), "fixture").unwrap();
    assert_eq!(sglang.tokens, vllm.tokens);
    let b = align("c", &ids, 1, 3, &sglang, None, &texts).unwrap();
    assert_eq!(a, b);
}

#[test]
fn other_tokens_are_refused_and_missing_fields_are_named() {
    let (texts, ids) = smollm2_texts();
    let v = fixture("vllm-completion.json");
    let seq = parse_completion(&v, Api::Vllm, "fixture").unwrap();
    let mut other = ids.clone();
    other[2] = 1;
    let err = align("c7", &other, 1, 3, &seq, None, &texts).unwrap_err();
    assert!(matches!(err, ServedError::Tokens { .. }), "{err}");
    assert!(err.to_string().contains("token 2"), "{err}");
    let with_bos: Vec<u32> = std::iter::once(1).chain(ids.iter().copied()).collect();
    let err = align("c7", &with_bos, 1, 3, &seq, None, &texts).unwrap_err();
    assert!(err.to_string().contains("BOS"), "{err}");

    let mut broken = v.clone();
    broken["usage"] = Value::Null;
    let err = parse_completion(&broken, Api::Vllm, "http://x/v1/completions").unwrap_err();
    assert!(err.to_string().contains("usage.prompt_tokens"), "{err}");
    let mut broken = v;
    broken["choices"][0]["logprobs"] = Value::Null;
    let err = parse_completion(&broken, Api::OpenAi, "http://x/v1/completions").unwrap_err();
    assert!(err.to_string().contains("echo"), "{err}");
    let err = parse_sglang(&serde_json::json!({"text": "x", "meta_info": {}}), "u").unwrap_err();
    assert!(err.to_string().contains("input_token_logprobs"), "{err}");
}

#[test]
fn byte_pieces_that_share_a_text_are_left_out() {
    let (texts, _) = smollm2_texts();
    // SmolLM2's byte-level vocabulary: the lone bytes 0x80..0xff print as "" (invalid UTF-8),
    // so "" names no single token; " Paris" names exactly one.
    assert_eq!(texts.id(""), None);
    assert_eq!(texts.id(" Paris"), Some(7042));
    assert_eq!(texts.text(7042), Some(" Paris"));
}

#[test]
fn rows_read_one_position_off_are_caught() {
    let (texts, _) = smollm2_texts();
    let v = fixture("llama-cpp-python-completion.json");
    // The reference's most likely next tokens after "The capital", " of", " France", " is".
    let top1 = [282, 260, 314, 7042];
    let right = parse_completion(&v, Api::LlamaCppPython, "fixture").unwrap();
    let fit = alignment_fit(&top1, 1, &right, &texts);
    assert_eq!(fit.expected, 1.0);
    assert!(!fit.misaligned(), "{fit:?}");
    // The same response read with OpenAI's layout: every row one position late.
    let wrong = parse_completion(&v, Api::OpenAi, "fixture").unwrap();
    let fit = alignment_fit(&top1, 1, &wrong, &texts);
    assert!(fit.misaligned(), "{fit:?}");
    assert_eq!(fit.one_earlier, 1.0);
}

//! One internal tensor naming (the Hugging Face names), the mapping from GGUF names, and
//! llama.cpp's row permutation of Q/K for rotary embeddings.

use crate::config::Architecture;

/// The internal (Hugging Face) name of a GGUF tensor of architecture `arch`, or `None` for a
/// name pot does not use. llama.cpp's names differ by architecture in two places: Gemma's
/// `ffn_norm` is its pre-MLP norm (LLaMA's is `post_attention_layernorm`), and Phi-3's fused
/// `attn_qkv` / `ffn_up` hold q/k/v and gate/up.
pub fn hf_name_of_gguf(name: &str, arch: Architecture) -> Option<String> {
    if arch.gpt2_family() {
        return gpt2_name_of_gguf(name);
    }
    match name {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = part.rsplit_once('.')?;
    let gemma = arch == Architecture::Gemma3;
    let phi3 = arch == Architecture::Phi3;
    let hf = match module {
        "attn_norm" => "input_layernorm",
        "ffn_norm" if gemma => "pre_feedforward_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "post_attention_norm" if gemma => "post_attention_layernorm",
        "post_ffw_norm" if gemma => "post_feedforward_layernorm",
        "attn_qkv" if phi3 => "self_attn.qkv_proj",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_up" if phi3 => "mlp.gate_up_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        "ffn_gate_inp" => "block_sparse_moe.gate",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// llama.cpp's fused expert tensors (`blk.N.ffn_{gate,up,down}_exps.weight`, shape
/// `[experts, rows, cols]`, expert-major): the layer and Mixtral's per-expert weight name
/// (`w1` gate, `w3` up, `w2` down) each slice is read as.
pub fn gguf_expert_stack(name: &str) -> Option<(usize, &'static str)> {
    let (layer, part) = name.strip_prefix("blk.")?.split_once('.')?;
    let w = match part {
        "ffn_gate_exps.weight" => "w1",
        "ffn_up_exps.weight" => "w3",
        "ffn_down_exps.weight" => "w2",
        _ => return None,
    };
    Some((layer.parse().ok()?, w))
}

/// GPT-2's names in llama.cpp's gpt2 graph.
fn gpt2_name_of_gguf(name: &str) -> Option<String> {
    let fixed = match name {
        "token_embd.weight" => Some("transformer.wte.weight"),
        "position_embd.weight" => Some("transformer.wpe.weight"),
        "output_norm.weight" => Some("transformer.ln_f.weight"),
        "output_norm.bias" => Some("transformer.ln_f.bias"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(fixed) = fixed {
        return Some(fixed.into());
    }
    let (layer, part) = name.strip_prefix("blk.")?.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = part.rsplit_once('.')?;
    let hf = match module {
        "attn_norm" => "ln_1",
        "attn_qkv" => "attn.c_attn",
        "attn_output" => "attn.c_proj",
        "ffn_norm" => "ln_2",
        "ffn_up" => "mlp.c_fc",
        "ffn_down" => "mlp.c_proj",
        _ => return None,
    };
    Some(format!("transformer.h.{layer}.{hf}.{kind}"))
}

/// Whether an internal GPT-2 tensor is a `Conv1D` weight (`[in, out]` in Hugging Face files;
/// llama.cpp's converter stores it transposed, as a linear layer's `[out, in]`).
pub fn is_conv1d_weight(name: &str) -> bool {
    name.starts_with("transformer.h.")
        && [
            ".attn.c_attn.weight",
            ".attn.c_proj.weight",
            ".mlp.c_fc.weight",
            ".mlp.c_proj.weight",
        ]
        .iter()
        .any(|s| name.ends_with(s))
}

/// The layer index of an internal name (`model.layers.N.…`, GPT-2's `transformer.h.N.…`).
pub fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("model.layers.")
        .or_else(|| name.strip_prefix("transformer.h."))?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// Which Q/K tensors llama.cpp stored with permuted rows, and with how many heads.
pub fn rope_permutation_heads(name: &str, heads: usize, kv_heads: usize) -> Option<usize> {
    if name.ends_with("self_attn.q_proj.weight") || name.ends_with("self_attn.q_proj.bias") {
        Some(heads)
    } else if name.ends_with("self_attn.k_proj.weight") || name.ends_with("self_attn.k_proj.bias") {
        Some(kv_heads)
    } else {
        None
    }
}

/// Undoes llama.cpp's `permute` for LLaMA-architecture GGUF files: within each head, GGUF row
/// `2 i + j` holds Hugging Face row `j * head_dim / 2 + i` (interleaved vs rotate-half RoPE).
/// `data` holds `rows` rows of `cols` values.
pub fn unpermute_rope_rows(data: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let head_dim = rows / heads;
    let half = head_dim / 2;
    let mut out = vec![0.0; data.len()];
    for h in 0..heads {
        for j in 0..2 {
            for i in 0..half {
                let dst = h * head_dim + j * half + i;
                let src = h * head_dim + 2 * i + j;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_names_map_to_hf_names() {
        assert_eq!(
            hf_name_of_gguf("blk.12.attn_q.weight", Architecture::Llama).as_deref(),
            Some("model.layers.12.self_attn.q_proj.weight")
        );
        assert_eq!(
            hf_name_of_gguf("blk.0.attn_k.bias", Architecture::Llama).as_deref(),
            Some("model.layers.0.self_attn.k_proj.bias")
        );
        assert_eq!(
            hf_name_of_gguf("output.weight", Architecture::Llama).as_deref(),
            Some("lm_head.weight")
        );
        assert_eq!(
            hf_name_of_gguf("blk.x.attn_q.weight", Architecture::Llama),
            None
        );
        // Where llama.cpp's names mean other things per architecture.
        for (arch, gguf, hf) in [
            (Architecture::Llama, "ffn_norm", "post_attention_layernorm"),
            (
                Architecture::Gemma3,
                "ffn_norm",
                "pre_feedforward_layernorm",
            ),
            (
                Architecture::Gemma3,
                "post_attention_norm",
                "post_attention_layernorm",
            ),
            (
                Architecture::Gemma3,
                "post_ffw_norm",
                "post_feedforward_layernorm",
            ),
            (Architecture::Phi3, "attn_qkv", "self_attn.qkv_proj"),
            (Architecture::Phi3, "ffn_up", "mlp.gate_up_proj"),
            (Architecture::Llama, "ffn_up", "mlp.up_proj"),
        ] {
            assert_eq!(
                hf_name_of_gguf(&format!("blk.3.{gguf}.weight"), arch),
                Some(format!("model.layers.3.{hf}.weight")),
                "{arch:?} {gguf}"
            );
        }
        assert_eq!(
            hf_name_of_gguf("blk.0.post_ffw_norm.weight", Architecture::Llama),
            None
        );
        for (gguf, hf) in [
            ("token_embd.weight", "transformer.wte.weight"),
            ("position_embd.weight", "transformer.wpe.weight"),
            ("output_norm.bias", "transformer.ln_f.bias"),
            (
                "blk.2.attn_qkv.weight",
                "transformer.h.2.attn.c_attn.weight",
            ),
            ("blk.2.ffn_down.bias", "transformer.h.2.mlp.c_proj.bias"),
        ] {
            assert_eq!(
                hf_name_of_gguf(gguf, Architecture::Gpt2).as_deref(),
                Some(hf)
            );
        }
        assert!(is_conv1d_weight("transformer.h.2.attn.c_attn.weight"));
        assert!(!is_conv1d_weight("transformer.h.2.attn.c_attn.bias"));
        assert!(!is_conv1d_weight("transformer.wte.weight"));
        assert_eq!(layer_of("model.layers.7.mlp.up_proj.weight"), Some(7));
        assert_eq!(layer_of("transformer.h.11.attn.c_attn.weight"), Some(11));
        assert_eq!(layer_of("transformer.wte.weight"), None);
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp: w.reshape(heads, 2, hd/2, cols).swapaxes(1, 2).reshape(rows, cols)
        let (heads, head_dim, cols) = (3, 8, 2);
        let rows = heads * head_dim;
        let hf: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
        let mut gguf = vec![0.0; hf.len()];
        for h in 0..heads {
            for i in 0..head_dim / 2 {
                for j in 0..2 {
                    let src = h * head_dim + j * head_dim / 2 + i;
                    let dst = h * head_dim + 2 * i + j;
                    gguf[dst * cols..(dst + 1) * cols]
                        .copy_from_slice(&hf[src * cols..(src + 1) * cols]);
                }
            }
        }
        assert_eq!(unpermute_rope_rows(&gguf, rows, cols, heads), hf);
    }
}

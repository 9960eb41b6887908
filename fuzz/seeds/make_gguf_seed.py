"""A tiny but complete llama GGUF (1 block, hidden 32, 6-token byte-level BPE vocabulary,
F32 + Q8_0 tensors) as a fuzz seed: unlike the head of a real fixture, every part of it parses,
so mutations reach the config, tokenizer and dequantiser code. Written with gguf-py 0.19.0:
    ~/.cache/pot/pyenv/bin/python fuzz/seeds/make_gguf_seed.py  (writes fuzz/seeds/gguf/tiny-llama.gguf)
"""
import os

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter
from gguf.quants import quantize

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gguf", "tiny-llama.gguf")
H, FF, V, HEADS, KV = 32, 64, 6, 4, 2

w = GGUFWriter(OUT, "llama")
w.add_context_length(64)
w.add_embedding_length(H)
w.add_feed_forward_length(FF)
w.add_block_count(1)
w.add_head_count(HEADS)
w.add_head_count_kv(KV)
w.add_layer_norm_rms_eps(1e-5)
w.add_rope_freq_base(10000.0)
w.add_tokenizer_model("gpt2")
w.add_tokenizer_pre("smollm")
w.add_token_list(["a", "b", "ab", "Ġ", "<s>", "</s>"])
w.add_token_types([1, 1, 1, 1, 3, 3])
w.add_token_merges(["a b"])
w.add_bos_token_id(4)
w.add_eos_token_id(5)
rng = np.random.default_rng(0)
hd = H // HEADS
shapes = {
    "token_embd.weight": (V, H),
    "output_norm.weight": (H,),
    "output.weight": (V, H),
    "blk.0.attn_norm.weight": (H,),
    "blk.0.ffn_norm.weight": (H,),
    "blk.0.attn_q.weight": (H, H),
    "blk.0.attn_k.weight": (KV * hd, H),
    "blk.0.attn_v.weight": (KV * hd, H),
    "blk.0.attn_output.weight": (H, H),
    "blk.0.ffn_gate.weight": (FF, H),
    "blk.0.ffn_up.weight": (FF, H),
    "blk.0.ffn_down.weight": (H, FF),
}
for name, shape in shapes.items():
    data = rng.standard_normal(shape).astype(np.float32)
    if len(shape) == 2 and name != "token_embd.weight":
        q = quantize(data, GGMLQuantizationType.Q8_0)
        w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=GGMLQuantizationType.Q8_0)
    else:
        w.add_tensor(name, data)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print(OUT, os.path.getsize(OUT), "bytes")

//! A GGUF image: header, metadata, tensor infos; then, for whatever parses, the model config,
//! the tokenizer and one row of every tensor, as `pot inspect` / `pot verify` would read them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pot_formats::gguf::GgufFile;

fuzz_target!(|data: &[u8]| {
    let label = std::path::Path::new("fuzz.gguf");
    let Ok(file) = GgufFile::from_bytes(label, data) else {
        return;
    };
    let _ = pot_formats::ModelConfig::from_gguf(&file);
    let _ = pot_formats::Tokenizer::from_gguf(&file);
    for t in &file.tensors {
        let bytes = file.bytes(t);
        let (per_block, block_bytes) = t.dtype.block();
        // One row, dequantised (rows are whole blocks: checked at parse).
        let row = t.dims.first().copied().unwrap_or(1) as usize;
        let row_bytes = row / per_block * block_bytes;
        if row_bytes <= bytes.len() && row <= 1 << 20 {
            let mut out = vec![0f32; row];
            pot_formats::dtype::dequantize(t.dtype, &bytes[..row_bytes], &mut out);
        }
    }
});

//! A config.json, read as `pot` reads a Hugging Face directory's config.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let path = std::path::Path::new("fuzz/config.json");
        if let Ok(config) = pot_formats::ModelConfig::from_hf_json(path, text) {
            // Whatever is accepted must describe tensors whose shapes can be computed.
            let _ = pot_formats::model::expected_tensors(&config);
            let _ = config.forward_parameters();
        }
    }
});

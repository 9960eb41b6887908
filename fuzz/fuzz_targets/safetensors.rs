//! A `model.safetensors` in a Hugging Face directory with a fixed tiny LLaMA config, opened as
//! `pot` opens a model (header, tensor table, completeness against the config), then every
//! tensor read as f32. The directory lives in the temporary folder (`/dev/shm` where it exists).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

const CONFIG: &str = include_str!("../../fixtures/transformers-parity/llama-default/config.json");

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("pot-fuzz-safetensors-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary folder");
        std::fs::write(dir.join("config.json"), CONFIG).expect("config");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = dir();
    std::fs::write(dir.join("model.safetensors"), data).expect("write the input");
    let Ok(model) = pot_formats::Model::open(dir) else {
        return;
    };
    let names: Vec<String> = model.tensors().map(|t| t.name.clone()).collect();
    for name in names {
        let _ = model.load_f32(&name);
    }
});

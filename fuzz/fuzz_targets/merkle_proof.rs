//! A tensor inclusion proof (`pot merkle verify PROOF.json`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(proof) = serde_json::from_slice::<pot_provenance::TensorProof>(data) {
        let _ = proof.verify(None);
    }
});

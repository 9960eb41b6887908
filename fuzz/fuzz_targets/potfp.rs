//! A `.potfp` fingerprint. The MAC would stop almost every mutated input before the record
//! parser, so each input is read twice under a fixed key: as given (magic, version, header, tag
//! checks) and re-signed (everything behind the tag: counts, records, then `validate` and
//! scoring the fingerprint against itself, as `verify --reference` would).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pot_challenge_kdf::MasterKey;
use pot_fingerprint::{Fingerprint, score_records};

const TAG_BYTES: usize = 32;

fuzz_target!(|data: &[u8]| {
    let key = MasterKey::from_bytes([7u8; 32]);
    let _ = Fingerprint::from_bytes(data, "fuzz.potfp", &key);
    let body = data.get(..data.len().saturating_sub(TAG_BYTES)).unwrap_or(data);
    let mut signed = body.to_vec();
    signed.extend_from_slice(&key.fingerprint_mac(body));
    if let Ok(fp) = Fingerprint::from_bytes(&signed, "fuzz.potfp", &key) {
        if fp.validate(1 << 17, "fuzz.potfp").is_ok() {
            for r in &fp.records {
                let _ = score_records(r, r);
            }
        }
    }
});

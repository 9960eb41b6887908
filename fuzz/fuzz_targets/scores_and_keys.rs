//! The small text inputs: a score file (`pot decide --scores`) and a key file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(scores) = pot_stats::parse_scores(text) {
            let mut test = pot_stats::SequentialTest::new(
                pot_stats::Mode::quick_gate(),
                pot_stats::Method::Betting,
                1.0,
            )
            .expect("valid mode");
            for (_, s) in scores {
                if test.push(s).is_err() {
                    break;
                }
            }
        }
        let _ = pot_challenge_kdf::MasterKey::from_hex(text, "fuzz");
    }
});

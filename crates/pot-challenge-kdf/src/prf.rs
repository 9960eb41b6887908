//! HMAC-SHA256 pseudo-random functions, byte-compatible with the Python predecessor.
//! Everything else in this crate draws its randomness through these four functions.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// `HMAC-SHA256(key, part_0 || part_1 || ...)`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// `derive_key(master, label, nonce) = HMAC(master, utf8(label) || nonce)`.
pub fn derive_key(master: &[u8], label: &str, nonce: &[u8]) -> [u8; 32] {
    hmac_sha256(master, &[label.as_bytes(), nonce])
}

/// Counter-mode expansion: blocks `HMAC(key, u32be(ctr) || info)` for ctr = 1, 2, ..., cut to `n`.
pub fn prf_bytes(key: &[u8], info: &[u8], n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 32);
    let mut counter: u32 = 1;
    while out.len() < n {
        out.extend_from_slice(&hmac_sha256(key, &[&counter.to_be_bytes(), info]));
        counter += 1;
    }
    out.truncate(n);
    out
}

/// `count` integers uniform in `[lo, hi)` by rejection sampling (no modulo bias).
///
/// Each draw uses `bpi = ceil(bitlen(hi - lo) / 8) + 1` big-endian bytes; a value `v` is kept when
/// `v < floor(2^(8 bpi) / range) * range` and mapped to `lo + v % range`. Fresh bytes come from
/// `prf_bytes(key, info || u32be(offset), remaining * bpi * 2)` for offset = 0, 1, ...
///
/// # Panics
/// When `hi <= lo` (an empty range is a programming error, not user input).
pub fn prf_integers(key: &[u8], info: &[u8], count: usize, lo: u64, hi: u64) -> Vec<u64> {
    assert!(hi > lo, "prf_integers needs lo < hi, got [{lo}, {hi})");
    let range = u128::from(hi - lo);
    let bitlen = 128 - range.leading_zeros() as usize;
    let bpi = bitlen.div_ceil(8) + 1;
    let limit = ((1u128 << (8 * bpi)) / range) * range;
    let mut out = Vec::with_capacity(count);
    let mut offset: u32 = 0;
    while out.len() < count {
        let remaining = count - out.len();
        let mut salted = info.to_vec();
        salted.extend_from_slice(&offset.to_be_bytes());
        let buf = prf_bytes(key, &salted, remaining * bpi * 2);
        for chunk in buf.chunks_exact(bpi) {
            let v = chunk
                .iter()
                .fold(0u128, |acc, &b| (acc << 8) | u128::from(b));
            if v < limit {
                out.push(lo + (v % range) as u64);
                if out.len() == count {
                    break;
                }
            }
        }
        offset += 1;
    }
    out
}

/// `count` floats in `[lo, hi)`: 8 bytes each from `prf_bytes(key, info, 8 count)`,
/// mapped as `lo + (u64be / 2^64) (hi - lo)`.
pub fn prf_floats(key: &[u8], info: &[u8], count: usize, lo: f64, hi: f64) -> Vec<f64> {
    prf_bytes(key, info, 8 * count)
        .chunks_exact(8)
        .map(|c| {
            let v = u64::from_be_bytes(c.try_into().expect("chunk of 8"));
            lo + (v as f64 / 18_446_744_073_709_551_616.0) * (hi - lo)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk() -> Vec<u8> {
        hex::decode("deadbeef".repeat(8)).unwrap()
    }

    // Golden vectors recorded from the Python predecessor (shared/design/REFERENCE-NOTES.md).
    #[test]
    fn derive_key_matches_predecessor() {
        let nonce = hex::decode("cafebabe".repeat(4)).unwrap();
        assert_eq!(
            hex::encode(derive_key(&mk(), "lm:templates", &nonce)),
            "8e7f5591e535e2c0319d554dc2ce44fd61b21540a28dcc019e879525608522bd"
        );
    }

    #[test]
    fn prf_bytes_matches_predecessor() {
        assert_eq!(
            hex::encode(prf_bytes(&mk(), b"x", 40)),
            "b72b683de68a75a44bd90c1c7954dc7df1e7c8275c738096945cc1024435ac541bfa07c886f63750"
        );
    }

    #[test]
    fn prf_integers_matches_predecessor() {
        assert_eq!(prf_integers(&mk(), b"t", 5, 0, 8), vec![5, 5, 3, 3, 1]);
    }

    #[test]
    fn prf_floats_matches_predecessor() {
        assert_eq!(
            prf_floats(&mk(), b"f", 2, 0.0, 1.0),
            vec![0.08072220745879323, 0.7399069334956228]
        );
    }

    #[test]
    fn prf_integers_stay_in_range() {
        for (lo, hi) in [
            (0, 1),
            (3, 4),
            (0, 255),
            (0, 256),
            (10, 70_000),
            (0, u64::MAX),
        ] {
            for v in prf_integers(&mk(), b"r", 200, lo, hi) {
                assert!(v >= lo && v < hi, "{v} outside [{lo}, {hi})");
            }
        }
    }
}

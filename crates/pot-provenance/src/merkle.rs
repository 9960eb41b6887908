//! The one Merkle tree of pot, RFC 6962 / RFC 9162 style: leaf = H(0x00 || data),
//! node = H(0x01 || left || right), the left subtree holding the largest power of two below n
//! leaves, odd nodes never duplicated, the empty tree's root H(""). Written by hand rather than
//! with rs_merkle, which has no leaf/node domain separation and promotes odd nodes unchanged.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

pub fn leaf_hash(data: &[u8]) -> Hash {
    Sha256::new()
        .chain_update([0u8])
        .chain_update(data)
        .finalize()
        .into()
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new()
        .chain_update([1u8])
        .chain_update(left)
        .chain_update(right)
        .finalize()
        .into()
}

/// Largest power of two strictly below `n` (n >= 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// Merkle tree hash of already-hashed leaves (RFC 6962 MTH).
pub fn root_of_leaves(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root_of_leaves(&leaves[..k]), &root_of_leaves(&leaves[k..]))
        }
    }
}

/// Inclusion proof of leaf `index`: the audit path, bottom-up (RFC 6962 PATH).
pub fn inclusion_path(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    fn path(leaves: &[Hash], m: usize, out: &mut Vec<Hash>) {
        let n = leaves.len();
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            path(&leaves[..k], m, out);
            out.push(root_of_leaves(&leaves[k..]));
        } else {
            path(&leaves[k..], m - k, out);
            out.push(root_of_leaves(&leaves[..k]));
        }
    }
    let mut out = Vec::new();
    path(leaves, index, &mut out);
    Some(out)
}

/// RFC 9162 section 2.1.3.2: does `path` prove `leaf` at `index` in a tree of `size` with `root`?
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, path: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(format!("leaf {i}").as_bytes()))
            .collect()
    }

    #[test]
    fn empty_and_single_leaf_trees() {
        assert_eq!(
            hex::encode(root_of_leaves(&[])),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let one = leaves(1);
        assert_eq!(root_of_leaves(&one), one[0]);
        assert!(verify_inclusion(&one[0], 0, 1, &[], &one[0]));
    }

    #[test]
    fn every_proof_verifies_for_odd_and_even_sizes() {
        for n in 1..=33 {
            let l = leaves(n);
            let root = root_of_leaves(&l);
            for i in 0..n {
                let path = inclusion_path(&l, i).unwrap();
                assert!(
                    verify_inclusion(&l[i], i as u64, n as u64, &path, &root),
                    "n {n} i {i}"
                );
                // Wrong index, wrong size, wrong leaf, truncated path: all rejected.
                if n > 1 {
                    assert!(!verify_inclusion(
                        &l[i],
                        ((i + 1) % n) as u64,
                        n as u64,
                        &path,
                        &root
                    ));
                    assert!(!verify_inclusion(
                        &l[(i + 1) % n],
                        i as u64,
                        n as u64,
                        &path,
                        &root
                    ));
                    assert!(!verify_inclusion(
                        &l[i],
                        i as u64,
                        n as u64,
                        &path[..path.len() - 1],
                        &root
                    ));
                }
            }
        }
    }

    #[test]
    fn odd_nodes_are_not_duplicated() {
        // The predecessor's bug: [a, b, c] and [a, b, c, c] shared a root.
        let l = leaves(3);
        let mut dup = l.clone();
        dup.push(l[2]);
        assert_ne!(root_of_leaves(&l), root_of_leaves(&dup));
        // A leaf can never pose as an inner node: domain separation.
        let inner = node_hash(&l[0], &l[1]);
        let mut forged = Vec::from([0x01]);
        forged.extend_from_slice(&l[0]);
        forged.extend_from_slice(&l[1]);
        assert_ne!(leaf_hash(&forged[1..]), inner);
    }
}

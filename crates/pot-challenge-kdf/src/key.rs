//! The 32-byte master key: read from a file or the environment, or generated and saved with mode
//! 0600. The key never leaves this type in printable form; outputs carry its [`KeyId`] instead.

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Name of the environment variable that may hold the master key as 64 hex digits.
pub const KEY_ENV: &str = "POT_KEY";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}. Create one with `pot keygen --out {path}`")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "malformed key in {origin}: {reason}. A key is 32 bytes written as 64 hex digits \
         (`pot keygen --out FILE` makes one)"
    )]
    Malformed { origin: String, reason: String },
    #[error("cannot write key file {path}: {source}")]
    Unwritable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("refusing to overwrite existing key file {0}; remove it first or choose another path")]
    Exists(PathBuf),
    #[error("the operating system's random source failed: {0}")]
    Random(String),
}

const FINGERPRINT_MAC_LABEL: &str = "pot/fingerprint-mac/v1";

/// A secret 32-byte master key. `Debug` and `Display` never show the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey([u8; 32]);

/// Public identifier of a key: the first 16 hex digits of `SHA-256("pot/key-id/v1" || key)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct KeyId(pub String);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey(id {})", self.id())
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses 64 hex digits (surrounding whitespace ignored). `origin` names the source in errors.
    pub fn from_hex(text: &str, origin: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let malformed = |reason: String| KeyError::Malformed {
            origin: origin.to_string(),
            reason,
        };
        if text.len() != 64 {
            return Err(malformed(format!(
                "expected 64 hex digits, found {} characters",
                text.len()
            )));
        }
        let bytes = hex::decode(text).map_err(|e| malformed(format!("not hex ({e})")))?;
        Ok(Self(bytes.try_into().expect("64 hex digits are 32 bytes")))
    }

    /// Reads a key file holding 64 hex digits.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read(path).map_err(|source| KeyError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        let text = String::from_utf8(text).map_err(|_| KeyError::Malformed {
            origin: path.display().to_string(),
            reason: "the file is not text".into(),
        })?;
        Self::from_hex(&text, &path.display().to_string())
    }

    /// Reads the key from `$POT_KEY` if it is set.
    pub fn from_env() -> Result<Option<Self>, KeyError> {
        match std::env::var(KEY_ENV) {
            Ok(text) => Self::from_hex(&text, &format!("${KEY_ENV}")).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(KeyError::Malformed {
                origin: format!("${KEY_ENV}"),
                reason: "not valid unicode".into(),
            }),
        }
    }

    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self(bytes))
    }

    /// Writes the key as hex to a new file readable by its owner only (mode 0600).
    pub fn save_new(&self, path: &Path) -> Result<(), KeyError> {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                KeyError::Exists(path.to_path_buf())
            } else {
                KeyError::Unwritable {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        writeln!(file, "{}", hex::encode(self.0)).map_err(|source| KeyError::Unwritable {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn id(&self) -> KeyId {
        let digest = Sha256::new()
            .chain_update(b"pot/key-id/v1")
            .chain_update(self.0)
            .finalize();
        KeyId(hex::encode(&digest[..8]))
    }

    /// `HMAC-SHA256(K_fp, data)` with `K_fp = HMAC(master, "pot/fingerprint-mac/v1")`: the
    /// trailer that authenticates a fingerprint file (a subkey, so the tag reveals nothing
    /// about the challenge seeds).
    pub fn fingerprint_mac(&self, data: &[u8]) -> [u8; 32] {
        let subkey = crate::prf::derive_key(&self.0, FINGERPRINT_MAC_LABEL, b"");
        crate::prf::hmac_sha256(&subkey, &[data])
    }

    /// Whether `tag` is [`Self::fingerprint_mac`] of `data`, compared in constant time.
    pub fn verify_fingerprint_mac(&self, data: &[u8], tag: &[u8]) -> bool {
        use hmac::Mac;
        let subkey = crate::prf::derive_key(&self.0, FINGERPRINT_MAC_LABEL, b"");
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&subkey)
            .expect("HMAC accepts keys of any length");
        mac.update(data);
        mac.verify_slice(tag).is_ok()
    }

    /// The secret bytes, for the PRF only.
    pub(crate) fn secret(&self) -> &[u8; 32] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let key = MasterKey::from_bytes([0xab; 32]);
        let shown = format!("{key:?}");
        assert!(!shown.contains("abab"), "{shown}");
        assert!(shown.contains(&key.id().0));
    }

    #[test]
    fn malformed_keys_get_clear_errors() {
        let short = MasterKey::from_hex("abcd", "test").unwrap_err().to_string();
        assert!(short.contains("64 hex digits"), "{short}");
        let bad = MasterKey::from_hex(&"zz".repeat(32), "test")
            .unwrap_err()
            .to_string();
        assert!(bad.contains("not hex"), "{bad}");
        let missing = MasterKey::from_file(Path::new("/nonexistent/key")).unwrap_err();
        assert!(missing.to_string().contains("pot keygen"), "{missing}");
    }

    #[test]
    fn saved_key_reads_back_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.hex");
        let key = MasterKey::generate().unwrap();
        key.save_new(&path).unwrap();
        assert_eq!(MasterKey::from_file(&path).unwrap(), key);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(key.save_new(&path), Err(KeyError::Exists(_))));
    }
}

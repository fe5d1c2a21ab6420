//! Names on the wire: secret names, secret versions and vault names. Pure.
//!
//! Secret names are case-insensitive in Key Vault: `Db-Password` and `db-password` are the
//! same secret. The name is kept as first written and compared by its lower-cased key.

use std::fmt;

/// Longest secret name Key Vault accepts.
pub const MAX_SECRET_NAME: usize = 127;

/// A valid secret name: 1 to 127 letters, digits and `-`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretName(String);

impl SecretName {
    /// Checks `name` against `^[0-9a-zA-Z-]{1,127}$`.
    pub fn parse(name: &str) -> Option<Self> {
        let ok = (1..=MAX_SECRET_NAME).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        ok.then(|| Self(name.to_string()))
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The lower-cased name: identity in storage keys and comparisons.
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretName({})", self.0)
    }
}

/// A secret version: 32 hexadecimal digits, kept lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretVersion(String);

impl SecretVersion {
    pub fn parse(version: &str) -> Option<Self> {
        (version.len() == 32 && version.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Self(version.to_ascii_lowercase()))
    }

    /// A fresh random version.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `name` is a valid vault name: 3 to 24 letters, digits and `-`, starting with a
/// letter, ending with a letter or digit, without `--`.
pub fn valid_vault_name(name: &str) -> bool {
    (3..=24).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && !name.contains("--")
}

/// The sentence that explains [`valid_vault_name`] in errors.
pub const VAULT_NAME_RULE: &str = "A vault name is 3 to 24 characters: letters, digits and '-'; it starts with a letter, ends with a letter or digit, and has no '--'.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        assert!(SecretName::parse("db-Password-1").is_some());
        assert!(SecretName::parse(&"a".repeat(127)).is_some());
        for bad in ["", "a_b", "a.b", "a b", "ä", "a/b", "%41"] {
            assert!(SecretName::parse(bad).is_none(), "{bad}");
        }
        assert!(SecretName::parse(&"a".repeat(128)).is_none());
        assert_eq!(SecretName::parse("Db").unwrap().key(), "db");
    }

    #[test]
    fn versions() {
        let v = SecretVersion::generate();
        assert_eq!(v.as_str().len(), 32);
        assert_eq!(SecretVersion::parse(v.as_str()), Some(v));
        assert_eq!(
            SecretVersion::parse("ABCDEF0123456789abcdef0123456789")
                .unwrap()
                .as_str(),
            "abcdef0123456789abcdef0123456789"
        );
        assert!(SecretVersion::parse("versions").is_none());
        assert!(SecretVersion::parse(&"g".repeat(32)).is_none());
    }

    #[test]
    fn vault_names() {
        assert!(valid_vault_name("kv1"));
        assert!(valid_vault_name("my-vault-01"));
        for bad in ["kv", "1kv", "kv-", "k--v", "k_v", &"a".repeat(25)] {
            assert!(!valid_vault_name(bad), "{bad}");
        }
    }
}

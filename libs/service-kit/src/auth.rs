//! API keys: `Authorization: Bearer <key>`, checked against configured SHA-256 hashes
//! (the keys themselves are never stored). Unknown or missing: 401; revoked: 403.

use std::collections::HashSet;

use sha2::{Digest, Sha256};

/// The outcome of checking a request's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResult {
    /// A valid key.
    Allowed,
    /// No key, a malformed header, or an unknown key.
    Unauthenticated,
    /// A revoked key.
    Revoked,
}

/// The configured keys.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    active: HashSet<String>,
    revoked: HashSet<String>,
}

/// SHA-256 of a key, as lowercase hex (how keys are configured).
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl ApiKeys {
    /// Keys from their hashes.
    pub fn new(active: &[String], revoked: &[String]) -> Self {
        let norm = |v: &[String]| v.iter().map(|h| h.to_ascii_lowercase()).collect::<HashSet<_>>();
        ApiKeys { active: norm(active), revoked: norm(revoked) }
    }

    /// Checks an `Authorization` header value.
    pub fn check(&self, authorization: Option<&str>) -> AuthResult {
        let Some(key) = authorization.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim) else {
            return AuthResult::Unauthenticated;
        };
        let h = hash_key(key);
        if self.revoked.contains(&h) {
            AuthResult::Revoked
        } else if self.active.contains(&h) {
            AuthResult::Allowed
        } else {
            AuthResult::Unauthenticated
        }
    }
}

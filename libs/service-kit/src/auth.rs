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

/// Checks configured key hashes: at least one active key (`env` names the variable to set),
/// each hash 64 hex characters (SHA-256). The reason is readable at start.
pub fn check_key_hashes(active: &[String], revoked: &[String], env: &str) -> Result<(), String> {
    if active.is_empty() {
        return Err(format!("no API key configured: set {env} to SHA-256 hex hashes of the keys (printf %s \"$KEY\" | sha256sum)"));
    }
    if active.iter().chain(revoked).any(|h| h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit())) {
        return Err("each hash must be 64 hex characters (SHA-256)".into());
    }
    Ok(())
}

impl ApiKeys {
    /// Keys from their hashes.
    pub fn new(active: &[String], revoked: &[String]) -> Self {
        let norm = |v: &[String]| v.iter().map(|h| h.to_ascii_lowercase()).collect::<HashSet<_>>();
        ApiKeys { active: norm(active), revoked: norm(revoked) }
    }

    /// Checks an `Authorization` header value; when allowed, also gives the key's hash (what
    /// per-key limits count by).
    pub fn check_key(&self, authorization: Option<&str>) -> (AuthResult, Option<String>) {
        let Some(key) = authorization.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim) else {
            return (AuthResult::Unauthenticated, None);
        };
        let h = hash_key(key);
        if self.revoked.contains(&h) {
            (AuthResult::Revoked, None)
        } else if self.active.contains(&h) {
            (AuthResult::Allowed, Some(h))
        } else {
            (AuthResult::Unauthenticated, None)
        }
    }

    /// Checks an `Authorization` header value.
    pub fn check(&self, authorization: Option<&str>) -> AuthResult {
        self.check_key(authorization).0
    }
}

//! Who is calling: a mobile client with a bearer JWT naming its user, or an internal caller
//! with a service key (configured as SHA-256 hashes, any user).
//!
//! JWTs come from the app's identity provider (Cognito user pools, Auth0, Firebase Auth,
//! Keycloak): RS256 or ES256, checked against the provider's published keys ([`jwks`]), with
//! `iss`, `aud`, `exp` and `nbf` checked (a clock skew of `leeway_secs`); the user is the
//! `user_claim` claim (default `sub`). HS256 tokens signed with a shared secret are accepted
//! too when a secret is configured (`eventctl dev`, tests and tools: `stats token`); they
//! need only `sub` and `exp`.
//!
//! A signature check costs tens of microseconds (RS256 in pure Rust: more), so tokens already
//! verified are remembered by the SHA-256 of the token (bounded, each entry expiring at the
//! latest with its token, or when keys are withdrawn from the provider's set): a client's
//! repeated requests cost one hash and one lookup, and the expiry is still checked each time.

pub mod jwks;

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use service_kit::auth::{ApiKeys, AuthResult};
use sha2::{Digest, Sha256};

use self::jwks::{Jwks, JwksSettings, Lookup};
use crate::definitions::MAX_VALUE_BYTES;

/// The caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A mobile client acting as this user.
    User(String),
    /// An internal service (any user).
    Service,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials, or invalid or expired ones: 401.
    #[error("{0}")]
    Unauthenticated(String),
    /// A revoked service key: 403.
    #[error("this service key is revoked")]
    Revoked,
    /// The token cannot be checked now (the identity provider's keys cannot be fetched):
    /// 503, retry.
    #[error("{0}")]
    Unavailable(String),
}

/// The claims of the HS256 tokens this service issues (`stats token`).
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
}

/// How JWTs are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// HS256 secret (at least 32 bytes; empty: no HS256 token accepted).
    pub secret: String,
    /// The identity provider's JWKS URL.
    pub jwks_url: String,
    /// The identity provider's issuer URL: its JWKS URL is discovered from
    /// `{issuer}/.well-known/openid-configuration`, and it is the expected `iss` unless
    /// `issuer` is set.
    pub oidc_issuer: String,
    /// The expected `iss`.
    pub issuer: String,
    /// Accepted audiences: a token's `aud` (a string or a list) must hold one, or, for a token
    /// without `aud` (Cognito access tokens), its `client_id`.
    pub audiences: Vec<String>,
    /// The claim holding the user id (provider tokens; HS256 tokens use `sub`).
    pub user_claim: String,
    /// Clock skew allowed on `exp` and `nbf`, seconds.
    pub leeway_secs: u64,
    /// Keys are refreshed when older than this, seconds.
    pub jwks_cache_secs: u64,
    /// At most one refresh per this many seconds for tokens naming an unknown key.
    pub jwks_min_refresh_secs: u64,
    /// Timeout of one request to the provider, seconds.
    pub jwks_timeout_secs: u64,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            secret: String::new(),
            jwks_url: String::new(),
            oidc_issuer: String::new(),
            issuer: String::new(),
            audiences: Vec::new(),
            user_claim: "sub".into(),
            leeway_secs: 60,
            jwks_cache_secs: 3600,
            jwks_min_refresh_secs: 30,
            jwks_timeout_secs: 5,
        }
    }
}

fn is_http_url(u: &str) -> bool {
    (u.starts_with("https://") || u.starts_with("http://")) && u.len() <= 2048
}

impl JwtConfig {
    /// True when provider tokens (JWKS) are accepted.
    pub fn jwks_enabled(&self) -> bool {
        !self.jwks_url.is_empty() || !self.oidc_issuer.is_empty()
    }

    /// The expected `iss` of provider tokens.
    pub fn expected_issuer(&self) -> &str {
        if self.issuer.is_empty() { &self.oidc_issuer } else { &self.issuer }
    }

    /// Checks the settings: `(field, reason)` of the first problem.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let bad = |field, reason: &str| Err((field, reason.to_owned()));
        if !self.secret.is_empty() && self.secret.len() < 32 {
            return bad("jwt_secret", "STATS_JWT_SECRET must be at least 32 bytes");
        }
        if !self.jwks_url.is_empty() && !is_http_url(&self.jwks_url) {
            return bad("jwks_url", "must be an https:// (or http://) URL");
        }
        if !self.oidc_issuer.is_empty() && !is_http_url(&self.oidc_issuer) {
            return bad("oidc_issuer", "must be the issuer's https:// URL");
        }
        if !self.jwks_enabled() {
            if !self.issuer.is_empty() || !self.audiences.is_empty() {
                return bad("jwt_issuer", "STATS_JWT_ISSUER / STATS_JWT_AUDIENCE need STATS_JWKS_URL or STATS_OIDC_ISSUER");
            }
            return Ok(());
        }
        if self.expected_issuer().is_empty() {
            return bad("jwt_issuer", "set STATS_JWT_ISSUER (the `iss` of the provider's tokens) with STATS_JWKS_URL");
        }
        if self.audiences.is_empty() || self.audiences.iter().any(String::is_empty) {
            return bad("jwt_audience", "set STATS_JWT_AUDIENCE (the app's client id or API audience): without it any app of the provider would be accepted");
        }
        if self.user_claim.is_empty() {
            return bad("jwt_user_claim", "must name a claim (default sub)");
        }
        if self.leeway_secs > 600 {
            return bad("jwt_leeway_secs", "at most 600 seconds");
        }
        if self.jwks_cache_secs == 0 || self.jwks_min_refresh_secs == 0 || self.jwks_timeout_secs == 0 {
            return bad("jwks_cache_secs", "jwks_cache_secs, jwks_min_refresh_secs and jwks_timeout_secs must be positive");
        }
        Ok(())
    }
}

/// A verified token, remembered.
struct Verified {
    user: String,
    exp: u64,
    /// The key set generation it was verified under.
    generation: u64,
}

/// Verified tokens remembered (bounded memory: ~100 bytes each).
const VERIFIED_CAPACITY: u64 = 200_000;
/// Longest a verified token is remembered.
const VERIFIED_TTL: Duration = Duration::from_secs(300);


fn unix_now() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0)
}

/// Checks credentials.
pub struct Authenticator {
    keys: ApiKeys,
    hs256: Option<DecodingKey>,
    jwks: Option<Arc<Jwks>>,
    config: JwtConfig,
    /// Each entry expires with its token (plus the leeway), and after [`VERIFIED_TTL`] at most.
    verified: crate::ttl_cache::TtlCache<[u8; 32], Arc<Verified>>,
}

fn unauthenticated(m: impl Into<String>) -> AuthError {
    AuthError::Unauthenticated(m.into())
}

impl Authenticator {
    /// From the service key hashes and the JWT settings (checked); fetches nothing yet (see
    /// [`Authenticator::load_keys`]).
    pub fn new(active: &[String], revoked: &[String], config: &JwtConfig) -> Result<Self, String> {
        config.validate().map_err(|(field, reason)| format!("{field}: {reason}"))?;
        let hs256 = (!config.secret.is_empty()).then(|| DecodingKey::from_secret(config.secret.as_bytes()));
        let jwks = if config.jwks_enabled() {
            Some(
                Jwks::new(JwksSettings {
                    jwks_url: config.jwks_url.clone(),
                    oidc_issuer: config.oidc_issuer.clone(),
                    cache_lifetime: Duration::from_secs(config.jwks_cache_secs),
                    min_refresh: Duration::from_secs(config.jwks_min_refresh_secs),
                    timeout: Duration::from_secs(config.jwks_timeout_secs),
                })
                .map_err(|e| e.to_string())?,
            )
        } else {
            None
        };
        let verified = crate::ttl_cache::TtlCache::new(VERIFIED_CAPACITY, VERIFIED_TTL);
        Ok(Authenticator { keys: ApiKeys::new(active, revoked), hs256, jwks, config: config.clone(), verified })
    }

    /// An authenticator for HS256 tokens only (tests, tools).
    pub fn with_secret(active: &[String], revoked: &[String], secret: &str) -> Result<Self, String> {
        Self::new(active, revoked, &JwtConfig { secret: secret.to_owned(), ..JwtConfig::default() })
    }

    /// The provider's key set, when configured.
    pub fn jwks(&self) -> Option<&Arc<Jwks>> {
        self.jwks.as_ref()
    }

    /// Fetches the provider's keys once (start-up); an error is logged and reported, the
    /// service starts anyway and the refresher keeps trying.
    pub async fn load_keys(&self) -> Result<(), String> {
        match &self.jwks {
            Some(j) => j.refresh().await.map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    /// Runs the key refresher until `stop` (nothing when no JWKS is configured).
    pub fn spawn_key_refresher(&self, stop: tokio::sync::watch::Receiver<bool>) -> Option<tokio::task::JoinHandle<()>> {
        self.jwks.clone().map(|j| tokio::spawn(j.run_refresher(stop)))
    }

    /// For `/readyz`: `Err` when provider tokens cannot be checked at all (no key loaded),
    /// `Ok(Some(why))` when degraded (the keys are cached but cannot be refreshed).
    pub fn status(&self) -> Result<Option<String>, String> {
        self.jwks.as_ref().map_or(Ok(None), |j| j.status())
    }

    /// The caller of an `Authorization` header value.
    pub async fn check(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        let Some(token) = authorization.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim).filter(|t| !t.is_empty()) else {
            return Err(unauthenticated("send Authorization: Bearer <JWT or service key>"));
        };
        let accepts_jwt = self.hs256.is_some() || self.jwks.is_some();
        let looks_like_jwt = accepts_jwt && token.starts_with("eyJ") && token.bytes().filter(|b| *b == b'.').count() == 2;
        if !looks_like_jwt {
            return match self.keys.check(authorization) {
                AuthResult::Allowed => Ok(Caller::Service),
                AuthResult::Revoked => Err(AuthError::Revoked),
                AuthResult::Unauthenticated => Err(unauthenticated("not a valid JWT or service key")),
            };
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = unix_now();
        let generation = self.jwks.as_ref().map_or(0, |j| j.generation());
        if let Some(v) = self.verified.get(&digest) {
            if v.exp + self.config.leeway_secs < now {
                self.verified.remove(&digest);
                return Err(unauthenticated("the JWT has expired"));
            }
            if v.generation == generation {
                return Ok(Caller::User(v.user.clone()));
            }
            // Keys were withdrawn since: check the signature again.
        }
        let verified = self.verify(token, generation).await?;
        let user = verified.user.clone();
        let left = (verified.exp + self.config.leeway_secs).saturating_sub(now);
        self.verified.insert_for(digest, Arc::new(verified), Duration::from_secs(left));
        Ok(Caller::User(user))
    }

    async fn verify(&self, token: &str, generation: u64) -> Result<Verified, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| unauthenticated("not a valid JWT or service key"))?;
        let alg = header.alg;
        let mut validation = Validation::new(alg);
        validation.leeway = self.config.leeway_secs;
        validation.validate_nbf = true;
        validation.validate_aud = false; // checked below (aud, or client_id)
        let provider = match alg {
            Algorithm::HS256 => false,
            Algorithm::RS256 | Algorithm::ES256 => true,
            other => return Err(unauthenticated(format!("JWT algorithm {other:?} is not accepted (RS256, ES256)"))),
        };
        let jwks_key;
        let key = if provider {
            let Some(jwks) = &self.jwks else {
                return Err(unauthenticated(format!("{alg:?} tokens are not accepted: no identity provider is configured")));
            };
            jwks_key = match jwks.key(header.kid.as_deref(), alg).await {
                Lookup::Found(k) => k,
                Lookup::Unknown => {
                    return Err(unauthenticated(format!("the JWT's signing key {:?} is not one of the identity provider's keys", header.kid.unwrap_or_default())));
                }
                Lookup::Unavailable(why) => {
                    metrics::counter!("stats_auth_unavailable_total").increment(1);
                    return Err(AuthError::Unavailable(format!("the identity provider's keys are unavailable; retry later ({why})")));
                }
            };
            validation.set_issuer(&[self.config.expected_issuer()]);
            validation.set_required_spec_claims(&["exp", "iss"]);
            &jwks_key.key
        } else {
            let Some(secret) = &self.hs256 else {
                return Err(unauthenticated("HS256 tokens are not accepted here"));
            };
            validation.set_required_spec_claims(&["exp", "sub"]);
            secret
        };
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, key, &validation).map_err(|e| {
            unauthenticated(match e.kind() {
                ErrorKind::ExpiredSignature => "the JWT has expired".to_owned(),
                ErrorKind::ImmatureSignature => "the JWT is not valid yet (nbf)".to_owned(),
                ErrorKind::InvalidIssuer => format!("the JWT's issuer is not {:?}", self.config.expected_issuer()),
                ErrorKind::InvalidSignature => "the JWT's signature does not match its key".to_owned(),
                ErrorKind::MissingRequiredClaim(c) => format!("the JWT has no {c} claim"),
                _ => format!("invalid JWT: {e}"),
            })
        })?;
        let claims = data.claims;
        if provider && !self.audience_matches(&claims) {
            return Err(unauthenticated(format!("the JWT is not for this audience (expected one of {:?})", self.config.audiences)));
        }
        let claim = if provider { self.config.user_claim.as_str() } else { "sub" };
        let user = match claims.get(claim) {
            Some(serde_json::Value::String(u)) if !u.is_empty() && u.len() <= MAX_VALUE_BYTES => u.clone(),
            _ => return Err(unauthenticated(format!("the JWT's {claim} claim is not a user id (a string of 1 to {MAX_VALUE_BYTES} bytes)"))),
        };
        let exp = claims.get("exp").and_then(serde_json::Value::as_f64).map_or(0, |e| e as u64);
        Ok(Verified { user, exp, generation })
    }

    /// `aud` (a string or a list) holds an accepted audience; a token without `aud` may name
    /// its client in `client_id` (Cognito access tokens).
    fn audience_matches(&self, claims: &serde_json::Map<String, serde_json::Value>) -> bool {
        let accepted = |v: &serde_json::Value| v.as_str().is_some_and(|a| self.config.audiences.iter().any(|x| x == a));
        match claims.get("aud") {
            Some(serde_json::Value::Array(list)) => list.iter().any(accepted),
            Some(aud) => accepted(aud),
            None => claims.get("client_id").is_some_and(accepted),
        }
    }
}

/// Issues an HS256 token for `user` valid `ttl_secs` (dev, tests, the benchmark).
pub fn issue_token(secret: &str, user: &str, ttl_secs: u64) -> Result<String, String> {
    let exp = unix_now() + ttl_secs;
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &Claims { sub: user.to_owned(), exp }, &EncodingKey::from_secret(secret.as_bytes()))
        .map_err(|e| e.to_string())
}

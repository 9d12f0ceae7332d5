//! Who is calling: a mobile client with a bearer JWT whose `sub` is its user id (HS256 with
//! `STATS_JWT_SECRET`; `exp` required), or an internal caller with a service key (configured
//! as SHA-256 hashes, any user).

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use service_kit::auth::{ApiKeys, AuthResult};

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
}

/// The claims read from a token.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
}

/// Checks credentials.
pub struct Authenticator {
    keys: ApiKeys,
    verifiers: Vec<(DecodingKey, Validation)>,
    /// Tokens already verified: token -> (subject, expiry), so a client's repeated requests
    /// cost a lookup instead of a signature check (the expiry is still checked each time).
    verified: moka::future::Cache<String, Arc<(String, u64)>>,
}

/// Verified tokens remembered (bounded memory).
const VERIFIED_CAPACITY: u64 = 200_000;

fn validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.set_required_spec_claims(&["exp", "sub"]);
    v.leeway = 30;
    v
}

impl Authenticator {
    /// From the service key hashes and the HS256 secret (empty: no JWT accepted).
    pub fn new(active: &[String], revoked: &[String], jwt_secret: &str) -> Result<Self, String> {
        let mut verifiers = Vec::new();
        if !jwt_secret.is_empty() {
            if jwt_secret.len() < 32 {
                return Err("the JWT secret must be at least 32 bytes".into());
            }
            verifiers.push((DecodingKey::from_secret(jwt_secret.as_bytes()), validation(Algorithm::HS256)));
        }
        let verified = moka::future::Cache::builder().max_capacity(VERIFIED_CAPACITY).time_to_live(Duration::from_secs(300)).build();
        Ok(Authenticator { keys: ApiKeys::new(active, revoked), verifiers, verified })
    }

    /// The caller of an `Authorization` header value.
    pub async fn check(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        let Some(token) = authorization.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim).filter(|t| !t.is_empty()) else {
            return Err(AuthError::Unauthenticated("send Authorization: Bearer <JWT or service key>".into()));
        };
        let looks_like_jwt = !self.verifiers.is_empty() && token.starts_with("eyJ") && token.bytes().filter(|b| *b == b'.').count() == 2;
        if !looks_like_jwt {
            return match self.keys.check(authorization) {
                AuthResult::Allowed => Ok(Caller::Service),
                AuthResult::Revoked => Err(AuthError::Revoked),
                AuthResult::Unauthenticated => Err(AuthError::Unauthenticated("not a valid JWT or service key".into())),
            };
        }
        let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
        if let Some(v) = self.verified.get(token).await {
            if v.1 + 30 >= now {
                return Ok(Caller::User(v.0.clone()));
            }
            self.verified.invalidate(token).await;
            return Err(AuthError::Unauthenticated("the JWT has expired".into()));
        }
        let caller = self.verify(token)?;
        Ok(caller)
    }

    fn verify_claims(&self, token: &str) -> Result<Claims, AuthError> {
        let alg = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Unauthenticated("not a valid JWT or service key".into()))?
            .alg;
        let Some((key, v)) = self.verifiers.iter().find(|(_, v)| v.algorithms.contains(&alg)) else {
            return Err(AuthError::Unauthenticated(format!("JWT algorithm {alg:?} is not accepted")));
        };
        match jsonwebtoken::decode::<Claims>(token, key, v) {
            Ok(data) if !data.claims.sub.is_empty() => Ok(data.claims),
            Ok(_) => Err(AuthError::Unauthenticated("the JWT has an empty subject".into())),
            Err(e) => Err(AuthError::Unauthenticated(match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => "the JWT has expired".to_owned(),
                _ => format!("invalid JWT: {e}"),
            })),
        }
    }

    fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let claims = self.verify_claims(token)?;
        let sub = claims.sub.clone();
        let cache = self.verified.clone();
        let token = token.to_owned();
        // Remembered in the background: the answer does not wait for the insert.
        tokio::spawn(async move { cache.insert(token, Arc::new((claims.sub, claims.exp))).await });
        Ok(Caller::User(sub))
    }
}

/// Issues an HS256 token for `user` valid `ttl_secs` (dev, tests, the benchmark).
pub fn issue_token(secret: &str, user: &str, ttl_secs: u64) -> Result<String, String> {
    let exp = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0) + ttl_secs;
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &Claims { sub: user.to_owned(), exp }, &EncodingKey::from_secret(secret.as_bytes()))
        .map_err(|e| e.to_string())
}

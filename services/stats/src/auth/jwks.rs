//! The identity provider's signing keys (JWKS), cached: fetched from `jwks_url`, or found
//! through OpenID discovery (`{issuer}/.well-known/openid-configuration`, its `jwks_uri`).
//!
//! - The key set is refreshed in the background when it is older than its cache lifetime, and
//!   on demand when a token names a key id (`kid`) the set does not hold (a rotation), at most
//!   once per `min_refresh` (a flood of made-up key ids costs one fetch per interval); the
//!   requests that wait on one refresh share it.
//! - While the URL is down the cached keys keep serving, whatever their age; a failed refresh
//!   is retried with backoff and reported by [`Jwks::status`] and the metrics.
//! - Only signing keys of RS256 (RSA) and ES256 (EC P-256) are kept; other keys in the set are
//!   skipped (logged), never an error for the whole set. A response is at most 1 MiB.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Largest JWKS or discovery document accepted.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// Where the keys come from and how long they are kept.
#[derive(Debug, Clone)]
pub struct JwksSettings {
    /// The JWKS URL, or empty to discover it from `oidc_issuer`.
    pub jwks_url: String,
    /// The OpenID issuer whose discovery document names the JWKS URL.
    pub oidc_issuer: String,
    /// Refresh the keys when they are older than this.
    pub cache_lifetime: Duration,
    /// At most one refresh per this interval for unknown key ids.
    pub min_refresh: Duration,
    /// Timeout of one HTTP request.
    pub timeout: Duration,
}

/// One verification key.
pub struct Key {
    /// Its algorithm (RS256 or ES256).
    pub alg: Algorithm,
    /// The key.
    pub key: DecodingKey,
}

/// A fetched key set.
struct KeySet {
    by_kid: HashMap<String, Arc<Key>>,
    /// Keys published without a `kid` (a token without `kid` may use one of them).
    anonymous: Vec<Arc<Key>>,
    fetched_at: Instant,
}

/// Why keys could not be fetched.
#[derive(Debug, Clone, thiserror::Error)]
#[error("JWKS: {0}")]
pub struct JwksError(pub String);

/// What a lookup found.
pub enum Lookup {
    /// The key.
    Found(Arc<Key>),
    /// The current key set (fetched successfully) does not hold it: the token is bad.
    Unknown,
    /// No key set could be fetched lately: the token cannot be checked now.
    Unavailable(String),
}

/// The cached key set of one identity provider.
pub struct Jwks {
    settings: JwksSettings,
    client: reqwest::Client,
    keys: RwLock<Option<Arc<KeySet>>>,
    /// The JWKS URL found by discovery (kept when a later discovery fails).
    discovered: Mutex<Option<String>>,
    /// Serializes refreshes: waiters of one refresh share its result.
    refreshing: tokio::sync::Mutex<()>,
    last_attempt: Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
    /// Bumped when keys disappear from the set (verified tokens must be forgotten).
    generation: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Jwks {
    /// A key set to be fetched (nothing is fetched yet: see [`Jwks::refresh`] and
    /// [`Jwks::run_refresher`]).
    pub fn new(settings: JwksSettings) -> Result<Arc<Jwks>, JwksError> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| JwksError(format!("HTTP client: {e}")))?;
        Ok(Arc::new(Jwks {
            settings,
            client,
            keys: RwLock::new(None),
            discovered: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            last_attempt: Mutex::new(None),
            last_error: Mutex::new(None),
            generation: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    fn current(&self) -> Option<Arc<KeySet>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Changes when keys were withdrawn from the set.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The key a token names (`kid`, else the only published key of its algorithm), after
    /// one rate-limited refresh when the cached set does not hold it.
    pub async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Lookup {
        if let Some(k) = self.find(kid, alg) {
            return Lookup::Found(k);
        }
        let due = lock(&self.last_attempt).is_none_or(|t| t.elapsed() >= self.settings.min_refresh);
        if due {
            // Unknown key id: the provider may have rotated its keys.
            self.refresh_shared().await;
            if let Some(k) = self.find(kid, alg) {
                return Lookup::Found(k);
            }
        }
        let error = lock(&self.last_error).clone();
        match (self.current(), error) {
            (None, e) => Lookup::Unavailable(e.unwrap_or_else(|| "the signing keys are not loaded yet".into())),
            // The key may be a new one the provider's URL cannot give us now.
            (Some(_), Some(e)) => Lookup::Unavailable(format!("unknown signing key, and refreshing the keys fails: {e}")),
            (Some(_), None) => Lookup::Unknown,
        }
    }

    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<Key>> {
        let set = self.current()?;
        let key = match kid {
            Some(kid) => set.by_kid.get(kid).cloned(),
            None => {
                let mut of_alg = set.anonymous.iter().chain(set.by_kid.values()).filter(|k| k.alg == alg);
                match (of_alg.next(), of_alg.next()) {
                    (Some(k), None) => Some(k.clone()),
                    _ => None, // none, or ambiguous without a kid
                }
            }
        };
        key.filter(|k| k.alg == alg)
    }

    /// One refresh shared by the callers waiting for it: a caller that waited while another
    /// fetch started does not fetch again.
    async fn refresh_shared(&self) {
        let asked = Instant::now();
        let _one = self.refreshing.lock().await;
        if lock(&self.last_attempt).is_some_and(|t| t >= asked) {
            return;
        }
        let _ = self.fetch_and_swap().await;
    }

    /// Fetches the key set now (start-up, the background refresher).
    pub async fn refresh(&self) -> Result<(), JwksError> {
        let _one = self.refreshing.lock().await;
        self.fetch_and_swap().await
    }

    async fn fetch_and_swap(&self) -> Result<(), JwksError> {
        *lock(&self.last_attempt) = Some(Instant::now());
        match self.fetch().await {
            Ok(set) => {
                let withdrawn = self.current().is_some_and(|old| old.by_kid.keys().any(|k| !set.by_kid.contains_key(k)));
                let (named, anonymous) = (set.by_kid.len(), set.anonymous.len());
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(set));
                if withdrawn {
                    self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                }
                *lock(&self.last_error) = None;
                metrics::counter!("stats_jwks_refresh_total", "result" => "ok").increment(1);
                metrics::gauge!("stats_jwks_keys").set((named + anonymous) as f64);
                tracing::info!(keys = named + anonymous, withdrawn, "signing keys refreshed");
                Ok(())
            }
            Err(e) => {
                *lock(&self.last_error) = Some(e.0.clone());
                metrics::counter!("stats_jwks_refresh_total", "result" => "error").increment(1);
                tracing::warn!(error = %e, cached = self.current().is_some(), "could not refresh the signing keys; the cached ones stay in use");
                Err(e)
            }
        }
    }

    /// Refreshes the keys every cache lifetime until `stop`; after a failure, retries with
    /// backoff (1 s doubling to at most the lifetime, and to 60 s while no key is loaded).
    pub async fn run_refresher(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let wait = match (self.current(), lock(&self.last_error).is_some()) {
                (Some(set), false) => self.settings.cache_lifetime.saturating_sub(set.fetched_at.elapsed()),
                (Some(_), true) => backoff.min(self.settings.cache_lifetime),
                (None, _) => backoff.min(Duration::from_secs(60)),
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            let stale = self.current().is_none_or(|s| s.fetched_at.elapsed() >= self.settings.cache_lifetime);
            if stale || lock(&self.last_error).is_some() {
                match self.refresh().await {
                    Ok(()) => backoff = Duration::from_secs(1),
                    Err(_) => backoff = (backoff * 2).min(Duration::from_secs(3600)),
                }
            }
        }
    }

    /// `Ok(None)`: keys loaded and fresh; `Ok(Some(why))`: keys loaded, the last refresh
    /// failed (degraded); `Err(why)`: no key loaded.
    pub fn status(&self) -> Result<Option<String>, String> {
        let error = lock(&self.last_error).clone();
        match self.current() {
            None => Err(format!("no signing key loaded: {}", error.unwrap_or_else(|| "not fetched yet".into()))),
            Some(set) => Ok(error.map(|e| format!("signing keys {} s old, refresh failing: {e}", set.fetched_at.elapsed().as_secs()))),
        }
    }

    async fn fetch(&self) -> Result<KeySet, JwksError> {
        let url = self.jwks_url().await?;
        let body = self.get(&url).await?;
        let doc: JwksDocument = serde_json::from_slice(&body).map_err(|e| JwksError(format!("{url}: not a JWKS document: {e}")))?;
        let mut set = KeySet { by_kid: HashMap::new(), anonymous: Vec::new(), fetched_at: Instant::now() };
        for raw in doc.keys {
            match parse_key(&raw) {
                Ok((kid, key)) => match kid {
                    Some(kid) => {
                        set.by_kid.insert(kid, Arc::new(key));
                    }
                    None => set.anonymous.push(Arc::new(key)),
                },
                Err(why) => tracing::debug!(%url, why, "JWKS key skipped"),
            }
        }
        if set.by_kid.is_empty() && set.anonymous.is_empty() {
            return Err(JwksError(format!("{url}: no RS256 or ES256 signing key in the set")));
        }
        Ok(set)
    }

    /// The JWKS URL: configured, or from the issuer's discovery document (the last one found
    /// is kept when discovery fails).
    async fn jwks_url(&self) -> Result<String, JwksError> {
        if !self.settings.jwks_url.is_empty() {
            return Ok(self.settings.jwks_url.clone());
        }
        let issuer = self.settings.oidc_issuer.trim_end_matches('/');
        let url = format!("{issuer}/.well-known/openid-configuration");
        let found = async {
            let body = self.get(&url).await?;
            let doc: Discovery = serde_json::from_slice(&body).map_err(|e| JwksError(format!("{url}: not a discovery document: {e}")))?;
            if doc.issuer.trim_end_matches('/') != issuer {
                return Err(JwksError(format!("{url}: names issuer {:?}, not {:?}", doc.issuer, self.settings.oidc_issuer)));
            }
            if !(doc.jwks_uri.starts_with("https://") || doc.jwks_uri.starts_with("http://")) {
                return Err(JwksError(format!("{url}: jwks_uri {:?} is not an http(s) URL", doc.jwks_uri)));
            }
            Ok(doc.jwks_uri)
        }
        .await;
        match found {
            Ok(jwks_uri) => {
                *lock(&self.discovered) = Some(jwks_uri.clone());
                Ok(jwks_uri)
            }
            Err(e) => match lock(&self.discovered).clone() {
                Some(known) => {
                    tracing::warn!(error = %e, jwks_uri = %known, "OpenID discovery failed; using the JWKS URL found before");
                    Ok(known)
                }
                None => Err(e),
            },
        }
    }

    /// GET with the size bound.
    async fn get(&self, url: &str) -> Result<Vec<u8>, JwksError> {
        let mut resp = self.client.get(url).header("Accept", "application/json").send().await.map_err(|e| JwksError(format!("{url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(JwksError(format!("{url}: HTTP {}", resp.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| JwksError(format!("{url}: {e}")))? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(JwksError(format!("{url}: larger than {MAX_DOCUMENT_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

#[derive(serde::Deserialize)]
struct JwksDocument {
    keys: Vec<serde_json::Value>,
}

#[derive(serde::Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// A signing key of the set, with its `kid`; why not when it is not an RS256 / ES256 signing
/// key.
fn parse_key(raw: &serde_json::Value) -> Result<(Option<String>, Key), String> {
    let jwk: Jwk = serde_json::from_value(raw.clone()).map_err(|e| format!("unreadable key: {e}"))?;
    if jwk.common.public_key_use.as_ref().is_some_and(|u| *u != PublicKeyUse::Signature) {
        return Err("not a signing key (use)".into());
    }
    let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES256)) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        (_, alg) => return Err(format!("algorithm {alg:?} of this key type is not accepted (RS256 and ES256 are)")),
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("bad key material: {e}"))?;
    Ok((jwk.common.key_id.clone(), Key { alg, key }))
}

//! Mobile sign-in with an identity provider's keys, over HTTP as the app uses it: a local
//! provider (axum, in the test) publishes its OpenID discovery document and a JWKS of RS256
//! and ES256 keys generated at run time (no key is checked in), and rotates them. A valid
//! token reads its own user's statistics; another user's give 403; expired, not-yet-valid,
//! wrong-audience, wrong-issuer and unknown-key tokens give 401; the clock skew is honoured;
//! a rotation is picked up without a restart (on an unknown key id, rate-limited, and on the
//! keys' cache lifetime, a withdrawn key's tokens refused at once); while the provider is down
//! the cached keys keep serving and `/readyz` reports degraded; HS256 tokens and service keys
//! still work beside it; a provider down at start means not ready, then ready once it answers;
//! the standalone binary (`STATS_OIDC_ISSUER`, `STATS_JWT_AUDIENCE`) and the embedded stats of
//! `eventctl dev` take the same settings.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use service_kit::auth::hash_key;
use stats::auth::{Authenticator, JwtConfig, issue_token};
use stats::cache::{CacheSettings, StatsCache};
use stats::definitions::default_metrics;
use stats::store::Store;
use stats::{AppState, StatsReader, router};

const AUDIENCE: &str = "mobile-app";
const SECRET: &str = "dev-secret-dev-secret-dev-secret-0123456";
const SERVICE_KEY: &str = "internal-key";

/// A signing key of the provider: private part for the test, public JWK for the set.
struct SigningKey {
    kid: String,
    alg: Algorithm,
    private: EncodingKey,
    public: Jwk,
}

impl SigningKey {
    fn rsa(kid: &str) -> SigningKey {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let key = rsa::RsaPrivateKey::new(&mut rand08::rngs::OsRng, 2048).expect("rsa key");
        let der = key.to_pkcs1_der().expect("pkcs1");
        Self::from_der(kid, Algorithm::RS256, EncodingKey::from_rsa_der(der.as_bytes()))
    }

    fn ec(kid: &str) -> SigningKey {
        use p256::pkcs8::EncodePrivateKey;
        let key = p256::SecretKey::random(&mut rand08::rngs::OsRng);
        let der = key.to_pkcs8_der().expect("pkcs8");
        Self::from_der(kid, Algorithm::ES256, EncodingKey::from_ec_der(der.as_bytes()))
    }

    fn from_der(kid: &str, alg: Algorithm, private: EncodingKey) -> SigningKey {
        let mut public = Jwk::from_encoding_key(&private, alg).expect("public jwk");
        public.common.key_id = Some(kid.to_owned());
        SigningKey { kid: kid.to_owned(), alg, private, public }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.private).expect("sign")
    }
}

/// The local identity provider.
struct Provider {
    base: String,
    keys: Arc<Mutex<Vec<Value>>>,
    down: Arc<AtomicBool>,
    fetches: Arc<AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

impl Provider {
    async fn start() -> Provider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let keys: Arc<Mutex<Vec<Value>>> = Arc::default();
        let down = Arc::new(AtomicBool::new(false));
        let fetches = Arc::new(AtomicUsize::new(0));
        let discovery = json!({"issuer": base, "jwks_uri": format!("{base}/keys"), "id_token_signing_alg_values_supported": ["RS256", "ES256"]});
        let (k, d, f) = (keys.clone(), down.clone(), fetches.clone());
        let d2 = down.clone();
        let app = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || {
                    let (down, doc) = (d2.clone(), discovery.clone());
                    async move {
                        if down.load(Ordering::SeqCst) {
                            return StatusCode::SERVICE_UNAVAILABLE.into_response();
                        }
                        axum::Json(doc).into_response()
                    }
                }),
            )
            .route(
                "/keys",
                get(move || {
                    let (keys, down, fetches) = (k.clone(), d.clone(), f.clone());
                    async move {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        if down.load(Ordering::SeqCst) {
                            return StatusCode::SERVICE_UNAVAILABLE.into_response();
                        }
                        axum::Json(json!({"keys": keys.lock().expect("keys").clone()})).into_response()
                    }
                }),
            );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Provider { base, keys, down, fetches, server }
    }

    fn publish(&self, keys: &[&SigningKey]) {
        self.publish_with(keys, &[]);
    }

    /// The keys, and other entries of the set (keys of other kinds, which must be skipped).
    fn publish_with(&self, keys: &[&SigningKey], others: &[Value]) {
        let mut set: Vec<Value> = keys.iter().map(|k| serde_json::to_value(&k.public).expect("jwk")).collect();
        set.extend_from_slice(others);
        *self.keys.lock().expect("keys") = set;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// The stats API on SQLite, with an authenticator.
struct Api {
    base: String,
    client: reqwest::Client,
    _stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

impl Api {
    /// With the provider's keys fetched at start (which must succeed).
    async fn start(jwt: JwtConfig) -> Api {
        let auth = Authenticator::new(&[hash_key(SERVICE_KEY)], &[], &jwt).expect("auth");
        auth.load_keys().await.expect("keys at start");
        Api::serve(auth).await
    }

    /// Serves the API with `auth` and its key refresher.
    async fn serve(auth: Authenticator) -> Api {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&format!("sqlite://{}/s.db", dir.path().display()), "public", 2, true).await.expect("sqlite");
        let cache = Arc::new(StatsCache::in_process(CacheSettings::default()));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        auth.spawn_key_refresher(stop_rx);
        let state = AppState::new(StatsReader::new(store, cache, &default_metrics()), auth, 64, 1);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, router(state)).await;
        });
        Api { base, client: reqwest::Client::new(), _stop: stop_tx, _dir: dir }
    }

    /// (status, error message) of reading `user`'s statistics with `token`.
    async fn get(&self, user: &str, token: &str) -> (u16, String) {
        let resp = self.client.get(format!("{}/v1/users/{user}/stats?days=2", self.base)).bearer_auth(token).send().await.expect("request");
        let status = resp.status().as_u16();
        let retry_after = resp.headers().get("retry-after").is_some();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status == 503 {
            assert!(retry_after, "503 comes with Retry-After");
        }
        (status, body["error"]["message"].as_str().unwrap_or_default().to_owned())
    }

    async fn readyz(&self) -> (u16, String) {
        let resp = self.client.get(format!("{}/readyz", self.base)).send().await.expect("request");
        (resp.status().as_u16(), resp.text().await.unwrap_or_default())
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims(iss: &str, user: &str) -> Value {
    json!({"iss": iss, "sub": user, "aud": AUDIENCE, "iat": now(), "exp": now() + 600})
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    base[key] = value;
    base
}

fn without(mut base: Value, key: &str) -> Value {
    if let Some(o) = base.as_object_mut() {
        o.remove(key);
    }
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_tokens_rotation_and_outage() {
    let provider = Provider::start().await;
    let rsa1 = SigningKey::rsa("rsa-1");
    let ec1 = SigningKey::ec("ec-1");
    // Beside them: a symmetric key (never to be trusted from a JWKS: anyone could sign with
    // it), an encryption key and a key of a curve not accepted; each is skipped.
    let hmac = json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTAxMjM0NTY3", "alg": "HS256"});
    let enc = json!({"kty": "RSA", "kid": "enc", "use": "enc", "n": "sXch", "e": "AQAB"});
    let p384 = json!({"kty": "EC", "kid": "p384", "crv": "P-384", "x": "AA", "y": "AA"});
    provider.publish_with(&[&rsa1, &ec1], &[hmac, enc, p384]);
    let iss = provider.base.clone();
    let jwt = JwtConfig {
        secret: SECRET.into(),
        oidc_issuer: iss.clone(), // the JWKS URL comes from discovery
        audiences: vec![AUDIENCE.into()],
        leeway_secs: 30,
        jwks_cache_secs: 3600,
        jwks_min_refresh_secs: 1,
        jwks_timeout_secs: 2,
        ..JwtConfig::default()
    };
    let api = Api::start(jwt).await;
    let c = || claims(&iss, "u1");

    // Valid RS256 and ES256 tokens read their own user's statistics; another user's: 403.
    assert_eq!(api.get("u1", &rsa1.sign(&c())).await.0, 200);
    assert_eq!(api.get("u2", &ec1.sign(&claims(&iss, "u2"))).await.0, 200);
    let (status, msg) = api.get("u2", &rsa1.sign(&c())).await;
    assert_eq!((status, msg.as_str()), (403, "a client may read only its own statistics"));
    // The audience may be a list; a token without aud may name the app as client_id (Cognito
    // access tokens).
    assert_eq!(api.get("u1", &rsa1.sign(&with(c(), "aud", json!(["other", AUDIENCE])))).await.0, 200);
    assert_eq!(api.get("u1", &ec1.sign(&with(without(c(), "aud"), "client_id", json!(AUDIENCE)))).await.0, 200);
    // A custom user claim is not configured here: sub is the user.
    assert_eq!(api.get("u1", &rsa1.sign(&with(c(), "sub", json!("")))).await.0, 401);

    // 401s, each with its reason.
    let cases: Vec<(&str, Value, &str)> = vec![
        ("expired", with(c(), "exp", json!(now() - 3600)), "expired"),
        ("not yet valid", with(c(), "nbf", json!(now() + 3600)), "not valid yet"),
        ("wrong audience", with(c(), "aud", json!("another-app")), "audience"),
        ("no audience", without(c(), "aud"), "audience"),
        ("wrong issuer", with(c(), "iss", json!("https://evil.example")), "issuer"),
        ("no issuer", without(c(), "iss"), "iss"),
        ("no expiry", without(c(), "exp"), "exp"),
    ];
    for (what, claims, reason) in cases {
        let (status, msg) = api.get("u1", &rsa1.sign(&claims)).await;
        assert_eq!(status, 401, "{what}: {msg}");
        assert!(msg.contains(reason), "{what}: {msg}");
    }
    // The clock skew: expired 10 s ago or valid from 10 s from now is within the 30 s leeway.
    assert_eq!(api.get("u1", &rsa1.sign(&with(c(), "exp", json!(now() - 10)))).await.0, 200);
    assert_eq!(api.get("u1", &ec1.sign(&with(c(), "nbf", json!(now() + 10)))).await.0, 200);
    // A token signed with the symmetric key of the set (HS256 "kid": "hmac") is refused.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("hmac".into());
    let forged = jsonwebtoken::encode(&header, &c(), &EncodingKey::from_secret(b"secret-secret-secret-secret-01234567")).expect("sign");
    let (status, msg) = api.get("u1", &forged).await;
    assert_eq!(status, 401, "{msg}");
    // A tampered payload fails the signature.
    let good = rsa1.sign(&c());
    let parts: Vec<&str> = good.split('.').collect();
    let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(&iss, "u2")).expect("json"));
    let (status, msg) = api.get("u2", &format!("{}.{forged_payload}.{}", parts[0], parts[2])).await;
    assert_eq!(status, 401, "{msg}");

    // An unknown key: one refresh (rate-limited: a burst of them costs at most one fetch).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stranger = SigningKey::rsa("rsa-unknown");
    let before = provider.fetches();
    for _ in 0..20 {
        let (status, msg) = api.get("u1", &stranger.sign(&c())).await;
        assert_eq!(status, 401, "{msg}");
        assert!(msg.contains("signing key"), "{msg}");
    }
    assert_eq!(provider.fetches() - before, 1, "one refresh for the burst of unknown keys");
    // A token without kid cannot pick among two keys of... it can: one RS256 key is published.
    let mut header = Header::new(Algorithm::RS256);
    header.kid = None;
    let no_kid = jsonwebtoken::encode(&header, &c(), &rsa1.private).expect("sign");
    assert_eq!(api.get("u1", &no_kid).await.0, 200);

    // Rotation without a restart: rsa-2 replaces rsa-1. A token signed with rsa-2 names an
    // unknown key: the keys are refreshed and it is accepted; rsa-1's tokens (verified and
    // remembered before) are refused from then on.
    let remembered = rsa1.sign(&c());
    assert_eq!(api.get("u1", &remembered).await.0, 200);
    let rsa2 = SigningKey::rsa("rsa-2");
    provider.publish(&[&rsa2, &ec1]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(api.get("u1", &rsa2.sign(&c())).await.0, 200, "the new key is fetched on first sight");
    let (status, msg) = api.get("u1", &remembered).await;
    assert_eq!(status, 401, "a withdrawn key's tokens are refused at once: {msg}");
    assert_eq!(api.get("u1", &ec1.sign(&c())).await.0, 200, "the key kept in the set still works");

    // The provider goes down: cached keys keep serving (even tokens never seen before);
    // a token naming an unknown key cannot be checked now: 503 with Retry-After;
    // /readyz is still ready, degraded.
    provider.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(api.get("u1", &rsa2.sign(&with(c(), "jti", json!("fresh-1")))).await.0, 200);
    let rsa3 = SigningKey::rsa("rsa-3");
    let (status, msg) = api.get("u1", &rsa3.sign(&c())).await;
    assert_eq!(status, 503, "{msg}");
    let (status, text) = api.readyz().await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("degraded"), "{text}");
    // Even with the server gone (connections refused).
    provider.server.abort();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(api.get("u1", &ec1.sign(&with(c(), "jti", json!("fresh-2")))).await.0, 200);
    assert_eq!(api.get("u1", &rsa3.sign(&c())).await.0, 503);

    // Beside the provider: the dev HS256 tokens and the service keys.
    assert_eq!(api.get("u1", &issue_token(SECRET, "u1", 60).expect("hs256")).await.0, 200);
    assert_eq!(api.get("u1", SERVICE_KEY).await.0, 200);
}

/// Keys are also refreshed on their cache lifetime, without any request asking: a key
/// withdrawn from the set stops working when the lifetime has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_refresh_on_their_lifetime() {
    let provider = Provider::start().await;
    let ec1 = SigningKey::ec("ec-1");
    let ec2 = SigningKey::ec("ec-2");
    provider.publish(&[&ec1, &ec2]);
    let jwt = JwtConfig {
        jwks_url: format!("{}/keys", provider.base), // the URL itself, no discovery
        issuer: "https://issuer.example".into(),
        audiences: vec![AUDIENCE.into()],
        jwks_cache_secs: 2,
        jwks_min_refresh_secs: 3600, // no refresh on unknown keys: only the lifetime refreshes
        ..JwtConfig::default()
    };
    let api = Api::start(jwt).await;
    let token = ec1.sign(&claims("https://issuer.example", "u9"));
    assert_eq!(api.get("u9", &token).await.0, 200);
    let fetched = provider.fetches();
    provider.publish(&[&ec2]);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(provider.fetches() > fetched, "refreshed on the lifetime");
    assert_eq!(api.get("u9", &token).await.0, 401, "ec-1 was withdrawn");
    assert_eq!(api.get("u9", &ec2.sign(&claims("https://issuer.example", "u9"))).await.0, 200);
    // HS256 is not accepted without a secret (no algorithm confusion with the provider's).
    assert_eq!(api.get("u9", &issue_token(SECRET, "u9", 60).expect("hs256")).await.0, 401);
}

/// The provider unreachable at start: not ready (no key to check tokens with), provider tokens
/// get 503 + Retry-After, service keys work; ready once the keys are fetched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_down_at_start() {
    let provider = Provider::start().await;
    let ec1 = SigningKey::ec("ec-1");
    provider.publish(&[&ec1]);
    provider.down.store(true, Ordering::SeqCst);
    let jwt = JwtConfig {
        jwks_url: format!("{}/keys", provider.base),
        issuer: "https://issuer.example".into(),
        audiences: vec![AUDIENCE.into()],
        jwks_min_refresh_secs: 1,
        ..JwtConfig::default()
    };
    let auth = Authenticator::new(&[hash_key(SERVICE_KEY)], &[], &jwt).expect("auth");
    assert!(auth.load_keys().await.is_err());
    let api = Api::serve(auth).await;
    let (status, text) = api.readyz().await;
    assert_eq!(status, 503, "{text}");
    let token = ec1.sign(&claims("https://issuer.example", "u1"));
    assert_eq!(api.get("u1", &token).await.0, 503);
    assert_eq!(api.get("u1", SERVICE_KEY).await.0, 200);
    provider.down.store(false, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while api.readyz().await.0 != 200 {
        assert!(std::time::Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(api.get("u1", &token).await.0, 200);
}

/// The same settings run the standalone binary (`STATS_OIDC_ISSUER`, `STATS_JWT_AUDIENCE`) and
/// the embedded stats of `eventctl dev` (which also keeps its HS256 sample tokens).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_binary_and_embedded_accept_provider_tokens() {
    let provider = Provider::start().await;
    let ec1 = SigningKey::ec("ec-1");
    provider.publish(&[&ec1]);
    let token = ec1.sign(&claims(&provider.base, "u5"));
    let client = reqwest::Client::new();
    let read = |base: String, token: String| {
        let client = client.clone();
        async move { client.get(format!("{base}/v1/users/u5/stats")).bearer_auth(token).send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
    };

    // The binary, on SQLite, API only.
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_stats"))
        .env("STATS_LISTEN", format!("127.0.0.1:{port}"))
        .env("STATS_DATABASE_URL", format!("sqlite://{}/s.db", dir.path().display()))
        .env("STATS_AGGREGATOR", "false")
        .env("STATS_OIDC_ISSUER", &provider.base)
        .env("STATS_JWT_AUDIENCE", AUDIENCE)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("stats binary");
    let base = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while client.get(format!("{base}/readyz")).send().await.map(|r| r.status().as_u16()).unwrap_or(0) != 200 {
        assert!(std::time::Instant::now() < deadline, "the binary did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(read(base.clone(), token.clone()).await, 200);
    assert_eq!(read(base.clone(), ec1.sign(&with(claims(&provider.base, "u5"), "aud", json!("x")))).await, 401);
    let _ = child.kill();
    let _ = child.wait();

    // Embedded (eventctl dev): HS256 sample tokens and the provider's tokens side by side.
    let bus = event_bus::InProcessBus::new(1000, 1 << 20);
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let config = stats::StatsConfig {
        database_url: format!("sqlite://{}/e.db", dir.path().display()),
        jwt_secret: SECRET.into(),
        oidc_issuer: provider.base.clone(),
        jwt_audience: vec![AUDIENCE.into()],
        ..stats::StatsConfig::default()
    };
    let service = stats::StatsService::build(&config, Some(std::sync::Arc::new(bus))).await.expect("embedded stats");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(service.run(listener, service_kit::shutdown::Shutdown::on(stop_rx)));
    assert_eq!(read(base.clone(), token).await, 200);
    assert_eq!(read(base.clone(), issue_token(SECRET, "u5", 60).expect("hs256")).await, 200);
    assert_eq!(read(base, issue_token(SECRET, "u6", 60).expect("hs256")).await, 403);
}

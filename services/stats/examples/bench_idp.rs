//! A stand-in identity provider for `scripts/bench-stats.sh` (not a test): an RSA-2048 key
//! published as a JWKS (`/keys`, and OpenID discovery), and RS256 tokens signed with it for
//! the benchmark's hot users, so the stats API is measured verifying the tokens that
//! Cognito, Auth0 or Keycloak issue to apps.
//!
//! `bench_idp LISTEN TOKENS_FILE USER...`: writes one `user token` line per user into
//! TOKENS_FILE (issuer `http://LISTEN`, audience `bench-app`, one hour), then serves the keys
//! until killed.

use std::io::Write;

use anyhow::{Context, Result};
use axum::Router;
use axum::routing::get;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use serde_json::json;

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(tokens_file)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: bench_idp LISTEN TOKENS_FILE USER...");
    };
    let users: Vec<String> = args.collect();
    let issuer = format!("http://{listen}");

    let key = rsa::RsaPrivateKey::new(&mut rand08::rngs::OsRng, 2048).context("generating the RSA key")?;
    let der = key.to_pkcs1_der().context("encoding the RSA key")?;
    let private = EncodingKey::from_rsa_der(der.as_bytes());
    let mut public = Jwk::from_encoding_key(&private, Algorithm::RS256).context("the public JWK")?;
    public.common.key_id = Some("bench-1".into());

    let exp = chrono::Utc::now().timestamp() + 3600;
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("bench-1".into());
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tokens_file).with_context(|| format!("creating {tokens_file}"))?);
    for user in &users {
        let claims = json!({"iss": issuer, "aud": "bench-app", "sub": user, "exp": exp, "iat": exp - 3600});
        let token = jsonwebtoken::encode(&header, &claims, &private).context("signing")?;
        writeln!(out, "{user} {token}")?;
    }
    out.flush()?;

    let set = JwkSet { keys: vec![public] };
    let discovery = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/keys"), "id_token_signing_alg_values_supported": ["RS256"]});
    let app = Router::new()
        .route("/keys", get(move || std::future::ready(axum::Json(set.clone()))))
        .route("/.well-known/openid-configuration", get(move || std::future::ready(axum::Json(discovery.clone()))));
    let listener = tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("binding {listen}"))?;
    axum::serve(listener, app).await.context("serving the keys")
}

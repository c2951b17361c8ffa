//! Unit tests of connection tokens: shared fixtures here (keys from `tests/keys`, signers,
//! claims, configs), the tests themselves in one file per module under `tests/`.

use super::mint::hmac_tag;
use super::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::EncodingKey;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

mod claims;
mod config;
mod keys;
mod mint;
mod verify;

const NOW: u64 = 1_700_000_000;
const SECRET: &str = "test-secret-0123456789abcdef-0123456789";
const OTHER_SECRET: &str = "another-secret-0123456789abcdef-01234567";

fn key_path(name: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys")).join(name)
}

fn key_bytes(name: &str) -> Vec<u8> {
    std::fs::read(key_path(name)).unwrap()
}

fn rsa_signer() -> EncodingKey {
    EncodingKey::from_rsa_pem(&key_bytes("rsa.pem")).unwrap()
}

fn ec_signer() -> EncodingKey {
    EncodingKey::from_ec_pem(&key_bytes("ec.pem")).unwrap()
}

fn ed_signer() -> EncodingKey {
    EncodingKey::from_ed_pem(&key_bytes("ed25519.pem")).unwrap()
}

fn hmac_signer(secret: &str) -> EncodingKey {
    EncodingKey::from_secret(secret.as_bytes())
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn claims() -> Value {
    json!({"sub": "user-1", "exp": NOW + 600})
}

fn with(extra: Value) -> Value {
    let mut claims = claims();
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    claims
}

fn without(claim: &str) -> Value {
    let mut claims = claims();
    claims.as_object_mut().unwrap().remove(claim);
    claims
}

fn hmac_config() -> TokenConfig {
    TokenConfig {
        hmac_secrets: vec![SECRET.into()],
        ..TokenConfig::default()
    }
}

fn keys_config(names: &[&str]) -> TokenConfig {
    TokenConfig {
        public_keys: names.iter().map(|n| key_path(n)).collect(),
        ..TokenConfig::default()
    }
}

fn jwks_config() -> TokenConfig {
    TokenConfig {
        jwks_file: Some(key_path("jwks.json")),
        ..TokenConfig::default()
    }
}

fn verifier(config: &TokenConfig) -> TokenVerifier {
    TokenVerifier::new(config).unwrap()
}

fn refusal(verifier: &TokenVerifier, token: &str) -> &'static str {
    verifier.verify(token, NOW).unwrap_err().reason()
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token signed with `SECRET` whose header and payload are given verbatim.
fn hs256_raw(header: &str, payload: &str) -> String {
    let message = format!("{}.{}", b64(header), b64(payload));
    let tag = hmac_tag(Algorithm::HS256, SECRET.as_bytes(), message.as_bytes());
    format!("{message}.{}", b64(tag))
}

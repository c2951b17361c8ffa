//! The `[auth.token]` config section, [`TokenConfig`], and the problems it can report
//! without reading any file. Loading the keys it names lives in `keys.rs`.

use super::{algorithm_named, Redacted, ALGORITHMS, MIN_HMAC_SECRET_BYTES};
use jsonwebtoken::AlgorithmFamily;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Clock skew allowed on `exp` and `nbf` unless configured.
const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);

/// `[auth.token]` config section.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// Secrets for HS256/HS384/HS512 tokens, each at least 32 bytes. Several may be listed so
    /// one can be rotated; the first signs tokens Herald mints.
    pub hmac_secrets: Vec<herald_core::Secret>,
    /// PEM public key files: RSA (SPKI or PKCS#1), EC P-256 or P-384 (SPKI), Ed25519 (SPKI).
    pub public_keys: Vec<PathBuf>,
    /// A JWK Set file of RSA, EC (P-256, P-384) and OKP (Ed25519) public keys, each with a `kid`.
    pub jwks_file: Option<PathBuf>,
    /// Allowed `alg` values; empty allows every algorithm the configured keys verify.
    pub algorithms: Vec<String>,
    /// When set, a token's `iss` must equal it.
    pub issuer: Option<String>,
    /// When set, a token's `aud` (a string or an array) must contain it.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Refuse tokens without `exp`.
    pub require_exp: bool,
    /// `POST /auth/refresh` renews a valid token until this long after the user logged in
    /// (the token's `auth_time`, else its `iat`); 0s turns renewal off. Needs an HMAC secret.
    #[serde(with = "humantime_serde")]
    pub max_session_age: Duration,
    /// Lifetime of a renewed token (cut short at the end of the session).
    #[serde(with = "humantime_serde")]
    pub refresh_ttl: Duration,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            hmac_secrets: Vec::new(),
            public_keys: Vec::new(),
            jwks_file: None,
            algorithms: Vec::new(),
            issuer: None,
            audience: None,
            leeway: DEFAULT_LEEWAY,
            require_exp: true,
            max_session_age: Duration::ZERO,
            refresh_ttl: Duration::from_secs(3600),
        }
    }
}

impl fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenConfig")
            .field("hmac_secrets", &Redacted(self.hmac_secrets.len()))
            .field("public_keys", &self.public_keys)
            .field("jwks_file", &self.jwks_file)
            .field("algorithms", &self.algorithms)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .field("require_exp", &self.require_exp)
            .field("max_session_age", &self.max_session_age)
            .field("refresh_ttl", &self.refresh_ttl)
            .finish()
    }
}

impl TokenConfig {
    /// Whether any secret, key file or JWK Set file is configured.
    pub fn configured(&self) -> bool {
        !self.hmac_secrets.is_empty() || !self.public_keys.is_empty() || self.jwks_file.is_some()
    }

    /// Problems a type cannot express, each prefixed with `auth.token.`; no files are read.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, secret) in self.hmac_secrets.iter().enumerate() {
            if secret.len() < MIN_HMAC_SECRET_BYTES {
                out.push(format!(
                    "auth.token.hmac_secrets[{i}]: is {} bytes; at least {MIN_HMAC_SECRET_BYTES} \
                     are required (`openssl rand -base64 48` makes one)",
                    secret.len()
                ));
            }
        }
        for name in &self.algorithms {
            if name.trim().eq_ignore_ascii_case("none") {
                out.push(format!(
                    "auth.token.algorithms: {name:?} is never allowed: it accepts unsigned tokens"
                ));
                continue;
            }
            let Some(alg) = algorithm_named(name) else {
                let known: Vec<&str> = ALGORITHMS.iter().map(|(n, _)| *n).collect();
                out.push(format!(
                    "auth.token.algorithms: unknown algorithm {name:?} (known: {})",
                    known.join(", ")
                ));
                continue;
            };
            let asymmetric_keys = !self.public_keys.is_empty() || self.jwks_file.is_some();
            match alg.family() {
                AlgorithmFamily::Hmac if self.hmac_secrets.is_empty() => out.push(format!(
                    "auth.token.algorithms: {name} is allowed but auth.token.hmac_secrets is empty"
                )),
                AlgorithmFamily::Rsa | AlgorithmFamily::Ec | AlgorithmFamily::Ed
                    if !asymmetric_keys =>
                {
                    out.push(format!(
                        "auth.token.algorithms: {name} is allowed but neither \
                         auth.token.public_keys nor auth.token.jwks_file is set"
                    ))
                }
                _ => {}
            }
        }
        if self.issuer.as_deref() == Some("") {
            out.push("auth.token.issuer: must not be empty (leave it out to accept any)".into());
        }
        if self.audience.as_deref() == Some("") {
            out.push("auth.token.audience: must not be empty (leave it out to accept any)".into());
        }
        if !self.max_session_age.is_zero() && self.hmac_secrets.is_empty() {
            out.push(
                "auth.token.max_session_age: renewing tokens needs auth.token.hmac_secrets \
                 (Herald signs the renewed token with the first)"
                    .into(),
            );
        }
        if !self.max_session_age.is_zero() && self.refresh_ttl.as_secs() == 0 {
            out.push("auth.token.refresh_ttl: must be at least 1s".into());
        }
        out
    }
}

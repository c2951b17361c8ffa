//! Connection tokens: verifying a compact JWS (JWT) into a [`herald_core::Identity`], and
//! minting HS256 tokens for logins and `herald token`. Key files are read once, by
//! [`TokenVerifier::new`]; nothing here fetches keys over the network or reads a clock.
//!
//! # Claims
//!
//! | Claim | Type | Meaning |
//! |---|---|---|
//! | `sub` | string, required, 1 to 256 bytes, no control characters | The user id (`Identity.user`). |
//! | `exp` | number (Unix seconds) | Expiry (`Identity.expires_at`). Required unless `require_exp = false`. |
//! | `nbf` | number (Unix seconds) | Not valid before. |
//! | `iat` | number (Unix seconds) | Issued at; only its type is checked. |
//! | `iss` | string | Must equal `auth.token.issuer` when that is set. |
//! | `aud` | string or array of strings | Must contain `auth.token.audience` when that is set. |
//! | `info` | JSON object, at most 4 KiB serialized | Public information shown in presence (`Identity.info`). |
//! | `channels` | array of channel patterns | Channels the user may subscribe to (`Identity.subscribe`). |
//! | `publish` | array of channel patterns | Channels the user may publish to from the client (`Identity.publish`). |
//!
//! A channel pattern is a channel name (`room:42`) or a prefix ending in `*` (`room:*`; `*`
//! alone matches every channel); at most 256 per list. Other claims are ignored; a `null` claim
//! counts as absent. `exp` and `nbf` may be fractional; `leeway` (default 5 s) absorbs clock skew.
//!
//! # Verification
//!
//! - Tokens over 8 KiB are refused before anything is parsed.
//! - The header's `alg` must be one of the allowed algorithms; `none` never is. A `crit` header
//!   is refused; `jwk`, `jku`, `x5u` and `x5c` headers are ignored (keys come only from config).
//! - The key is chosen by the algorithm's family, never by what the token says about the key:
//!   `HS*` only against `hmac_secrets` (each is tried, so one can be rotated), `RS*`/`PS*` only
//!   against RSA keys, `ES256`/`ES384` only against EC P-256/P-384 keys, `EdDSA` only against
//!   Ed25519 keys. With a JWK Set configured and a `kid` in the header, only the JWK with that
//!   `kid` is tried, and its `alg`, if it has one, must be the header's. Otherwise every key of
//!   the family is tried.
//! - HMAC secrets are the UTF-8 bytes of the configured strings (not base64-decoded).
//!
//! This module does not decide what a grant allows; [`herald_core::Grants`] and the namespaces
//! do.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use herald_core::{Grants, Identity};
use hmac::{Hmac, Mac};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Sha256, Sha384, Sha512};
use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Largest connection token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Largest `info` claim accepted, in bytes of compact JSON.
pub const MAX_TOKEN_INFO_BYTES: usize = 4 * 1024;
/// Longest `sub` (user id) accepted, in bytes.
pub const MAX_TOKEN_USER_BYTES: usize = 256;
/// Shortest HMAC secret accepted, in bytes.
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

/// Clock skew allowed on `exp` and `nbf` unless configured.
const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);
/// Key files larger than this are not key files.
const MAX_KEY_FILE_BYTES: u64 = 1024 * 1024;
/// Most keys one JWK Set may hold (every key may be tried for a token without `kid`).
const MAX_JWKS_KEYS: usize = 100;
/// Accepted RSA modulus sizes, in bits (the upper bound is the `rsa` crate's).
const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 4096;
/// Largest RSA public exponent the `rsa` crate accepts.
const MAX_RSA_EXPONENT: u64 = (1 << 33) - 1;
/// Text from a token (an `alg`, a `kid`) echoed in an error is cut to this many characters.
const MAX_ECHO_CHARS: usize = 64;

/// Every algorithm Herald verifies, by its JOSE name.
const ALGORITHMS: [(&str, Algorithm); 12] = [
    ("HS256", Algorithm::HS256),
    ("HS384", Algorithm::HS384),
    ("HS512", Algorithm::HS512),
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
];
const HMAC_ALGORITHMS: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

/// DER before the point in an EC P-256 SubjectPublicKeyInfo with an uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// DER before the point in an EC P-384 SubjectPublicKeyInfo with an uncompressed point.
const P384_SPKI_PREFIX: [u8; 23] = [
    0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b,
    0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
];
/// DER before the key in an Ed25519 SubjectPublicKeyInfo.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// The id-ecPublicKey OID's content bytes, to name EC keys on curves Herald does not support.
const EC_PUBLIC_KEY_OID: [u8; 7] = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];

/// `[auth.token]` config section.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// Secrets for HS256/HS384/HS512 tokens, each at least 32 bytes. Several may be listed so
    /// one can be rotated; the first signs tokens Herald mints.
    pub hmac_secrets: Vec<String>,
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
        out
    }
}

/// Why a token was refused (or could not be minted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("the token is {bytes} bytes; at most {MAX_TOKEN_BYTES} are accepted")]
    TooLarge {
        /// The token's length.
        bytes: usize,
    },
    /// Not a compact JWS: three base64url parts, a JSON object header with an `alg`.
    #[error("the token is malformed: {problem}")]
    Malformed {
        /// What is wrong.
        problem: &'static str,
    },
    /// `none`, an unknown algorithm, or one that is not allowed.
    #[error("the token's algorithm {alg:?} is not accepted")]
    UnsupportedAlgorithm {
        /// The header's `alg` (cut to 64 characters).
        alg: String,
    },
    /// No configured key of the algorithm's family (or with the header's `kid`).
    #[error("no configured key can verify the token{}", kid_suffix(.kid))]
    UnknownKey {
        /// The header's `kid`, if any (cut to 64 characters).
        kid: Option<String>,
    },
    /// No candidate key verifies the signature.
    #[error("the token's signature does not verify")]
    BadSignature,
    /// `exp` plus the leeway is in the past.
    #[error("the token expired at {exp} (Unix seconds)")]
    Expired {
        /// The token's `exp`.
        exp: u64,
    },
    /// `nbf` minus the leeway is in the future.
    #[error("the token is not valid before {nbf} (Unix seconds)")]
    NotYetValid {
        /// The token's `nbf`.
        nbf: u64,
    },
    /// `iss` is missing or differs from the configured issuer.
    #[error("the token's issuer (iss) is not the configured one")]
    WrongIssuer,
    /// `aud` is missing or does not contain the configured audience.
    #[error("the token's audience (aud) does not include the configured one")]
    WrongAudience,
    /// No `exp`, and one is required.
    #[error("the token has no expiry (exp)")]
    MissingExp,
    /// A claim has the wrong type or an invalid value.
    #[error("the token's claims are invalid: {claim} {problem}")]
    BadClaims {
        /// The claim (`sub`, `channels`, ...), or `payload` for the whole claims set.
        claim: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

impl TokenError {
    /// A stable snake_case name for logs and metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::Malformed { .. } => "malformed",
            Self::UnsupportedAlgorithm { .. } => "unsupported_algorithm",
            Self::UnknownKey { .. } => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::Expired { .. } => "expired",
            Self::NotYetValid { .. } => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::MissingExp => "missing_exp",
            Self::BadClaims { .. } => "bad_claims",
        }
    }
}

fn kid_suffix(kid: &Option<String>) -> String {
    kid.as_ref()
        .map(|kid| format!(" (kid {kid:?})"))
        .unwrap_or_default()
}

fn malformed(problem: &'static str) -> TokenError {
    TokenError::Malformed { problem }
}

fn bad_claim(claim: &'static str, problem: impl Into<String>) -> TokenError {
    TokenError::BadClaims {
        claim,
        problem: problem.into(),
    }
}

/// Verifies connection tokens against the configured secrets and public keys.
pub struct TokenVerifier {
    secrets: Vec<DecodingKey>,
    keys: Vec<PublicKey>,
    /// A JWK Set is configured, so a header `kid` names one of its keys.
    kid_addressed: bool,
    allowed: Vec<Algorithm>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: u64,
    require_exp: bool,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("hmac_secrets", &Redacted(self.secrets.len()))
            .field("public_keys", &self.keys)
            .field("algorithms", &self.allowed)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .field("require_exp", &self.require_exp)
            .finish()
    }
}

impl TokenVerifier {
    /// Loads key files. Errors name the file and what is wrong (unreadable, not a supported
    /// public key PEM, bad JWKS JSON, JWK without kid, unsupported key type), and include
    /// [`TokenConfig::problems`]. With nothing configured every token is refused.
    pub fn new(config: &TokenConfig) -> Result<Self, Vec<String>> {
        // Pin the pure-Rust provider, so a jsonwebtoken feature enabled elsewhere in the build
        // cannot leave the process without one. Failing means one is installed already.
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();

        let mut errors = config.problems();
        let mut keys = Vec::new();
        for path in &config.public_keys {
            match load_pem_key(path) {
                Ok(key) => keys.push(key),
                Err(why) => errors.push(format!("auth.token.public_keys: {why}")),
            }
        }
        if let Some(path) = &config.jwks_file {
            let shown = path.display().to_string();
            let loaded = read_key_file(path)
                .map_err(|why| vec![why])
                .and_then(|bytes| parse_jwks(&bytes, &shown));
            match loaded {
                Ok(mut jwks) => keys.append(&mut jwks),
                Err(whys) => errors.extend(
                    whys.into_iter()
                        .map(|why| format!("auth.token.jwks_file: {why}")),
                ),
            }
        }
        let secrets: Vec<DecodingKey> = config
            .hmac_secrets
            .iter()
            .map(|s| DecodingKey::from_secret(s.as_bytes()))
            .collect();

        let verifies = |alg: Algorithm| match alg.family() {
            AlgorithmFamily::Hmac => !secrets.is_empty(),
            _ => keys.iter().any(|k| k.verifies(alg)),
        };
        let allowed: Vec<Algorithm> = if config.algorithms.is_empty() {
            ALGORITHMS
                .iter()
                .map(|(_, alg)| *alg)
                .filter(|alg| verifies(*alg))
                .collect()
        } else {
            config
                .algorithms
                .iter()
                .filter_map(|name| algorithm_named(name))
                .collect()
        };
        if errors.is_empty() {
            for alg in &allowed {
                if alg.family() != AlgorithmFamily::Hmac && !verifies(*alg) {
                    errors.push(format!(
                        "auth.token.algorithms: {} is allowed but no configured key verifies it \
                         (it needs {})",
                        algorithm_name(*alg),
                        needed_key(*alg)
                    ));
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            secrets,
            keys,
            kid_addressed: config.jwks_file.is_some(),
            allowed,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway_secs: config.leeway.as_secs(),
            require_exp: config.require_exp,
        })
    }

    /// Verifies a compact JWS and returns who it names. `now` is Unix seconds.
    pub fn verify(&self, token: &str, now: u64) -> Result<Identity, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge { bytes: token.len() });
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("it is not three dot-separated parts"));
        };
        let header = Header::decode(header)?;
        let alg = self.accepted(&header.alg)?;
        let candidates = self.candidates(alg, header.kid.as_deref())?;
        if URL_SAFE_NO_PAD.decode(signature).is_err() {
            return Err(malformed("the signature is not base64url"));
        }
        let message = &token.as_bytes()[..token.len() - signature.len() - 1];
        let verified = candidates.iter().any(|key| {
            // An error means the key cannot be used with `alg`; keys are checked at load, so
            // this does not happen, and it would not verify anything.
            matches!(
                jsonwebtoken::crypto::verify(signature, message, key, alg),
                Ok(true)
            )
        });
        if !verified {
            return Err(TokenError::BadSignature);
        }
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| malformed("the payload is not base64url"))?;
        self.identity(&payload, now)
    }

    /// The header's algorithm, if it is allowed.
    fn accepted(&self, alg: &Value) -> Result<Algorithm, TokenError> {
        let refuse = |shown: String| TokenError::UnsupportedAlgorithm { alg: clip(&shown) };
        let Value::String(name) = alg else {
            return Err(refuse(alg.to_string()));
        };
        match algorithm_named(name) {
            Some(alg) if self.allowed.contains(&alg) => Ok(alg),
            _ => Err(refuse(name.clone())),
        }
    }

    /// The keys that may verify a token signed with `alg` whose header names `kid`.
    fn candidates(
        &self,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<Vec<&DecodingKey>, TokenError> {
        let keys: Vec<&DecodingKey> = match (alg.family(), kid) {
            (AlgorithmFamily::Hmac, _) => self.secrets.iter().collect(),
            (_, Some(kid)) if self.kid_addressed => self
                .keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid) && k.verifies(alg))
                .map(|k| &k.key)
                .collect(),
            _ => self
                .keys
                .iter()
                .filter(|k| k.verifies(alg))
                .map(|k| &k.key)
                .collect(),
        };
        if keys.is_empty() {
            return Err(TokenError::UnknownKey { kid: kid.map(clip) });
        }
        Ok(keys)
    }

    /// Checks the verified payload's claims and builds the identity.
    fn identity(&self, payload: &[u8], now: u64) -> Result<Identity, TokenError> {
        let claims = Claims::parse(payload)?;
        let exp = numeric_date("exp", claims.exp.as_ref(), Rounding::Down)?;
        let nbf = numeric_date("nbf", claims.nbf.as_ref(), Rounding::Up)?;
        numeric_date("iat", claims.iat.as_ref(), Rounding::Down)?;
        match exp {
            None if self.require_exp => return Err(TokenError::MissingExp),
            Some(exp) if now > exp.saturating_add(self.leeway_secs) => {
                return Err(TokenError::Expired { exp })
            }
            _ => {}
        }
        if let Some(nbf) = nbf {
            if now.saturating_add(self.leeway_secs) < nbf {
                return Err(TokenError::NotYetValid { nbf });
            }
        }
        let iss = match &claims.iss {
            None | Some(Value::Null) => None,
            Some(Value::String(iss)) => Some(iss.as_str()),
            Some(_) => return Err(bad_claim("iss", "must be a string")),
        };
        if let Some(issuer) = &self.issuer {
            if iss != Some(issuer.as_str()) {
                return Err(TokenError::WrongIssuer);
            }
        }
        let aud = audiences(claims.aud.as_ref())?;
        if let Some(audience) = &self.audience {
            if !aud.contains(&audience.as_str()) {
                return Err(TokenError::WrongAudience);
            }
        }
        let user = match &claims.sub {
            None | Some(Value::Null) => return Err(bad_claim("sub", "is missing")),
            Some(Value::String(sub)) => sub.as_str(),
            Some(_) => return Err(bad_claim("sub", "must be a string")),
        };
        check_user(user)?;
        Ok(Identity {
            user: Arc::from(user),
            info: info(claims.info.as_ref())?,
            subscribe: grants_claim("channels", claims.channels.as_ref())?,
            publish: grants_claim("publish", claims.publish.as_ref())?,
            expires_at: exp,
        })
    }
}

/// The JOSE header members Herald reads, as given.
#[derive(Deserialize)]
struct HeaderFields {
    alg: Option<Value>,
    kid: Option<Value>,
    crit: Option<Value>,
}

/// A decoded header: the `alg` as given (checked against the allowed set later), and the `kid`.
struct Header {
    alg: Value,
    kid: Option<String>,
}

impl Header {
    fn decode(part: &str) -> Result<Self, TokenError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| malformed("the header is not base64url"))?;
        if first_non_space(&bytes) != Some(b'{') {
            return Err(malformed("the header is not a JSON object"));
        }
        let header: HeaderFields = serde_json::from_slice(&bytes)
            .map_err(|_| malformed("the header is not a valid JSON object"))?;
        if header.crit.is_some() {
            return Err(malformed(
                "the header lists critical extensions (crit), which are not supported",
            ));
        }
        let alg = match header.alg {
            None | Some(Value::Null) => return Err(malformed("the header has no alg")),
            Some(alg) => alg,
        };
        let kid = match header.kid {
            None | Some(Value::Null) => None,
            Some(Value::String(kid)) => Some(kid),
            Some(_) => return Err(malformed("the header's kid is not a string")),
        };
        Ok(Self { alg, kid })
    }
}

/// The claims Herald reads; each is typed by hand so errors can name it.
#[derive(Deserialize)]
struct Claims {
    sub: Option<Value>,
    exp: Option<Value>,
    nbf: Option<Value>,
    iat: Option<Value>,
    iss: Option<Value>,
    aud: Option<Value>,
    info: Option<Value>,
    channels: Option<Value>,
    publish: Option<Value>,
}

impl Claims {
    fn parse(payload: &[u8]) -> Result<Self, TokenError> {
        if first_non_space(payload) != Some(b'{') {
            return Err(bad_claim("payload", "is not a JSON object"));
        }
        serde_json::from_slice(payload).map_err(|err| {
            let mut text = err.to_string();
            text.truncate(200);
            bad_claim("payload", format!("is not a valid JSON object: {text}"))
        })
    }
}

fn first_non_space(bytes: &[u8]) -> Option<u8> {
    bytes.iter().copied().find(|b| !b.is_ascii_whitespace())
}

#[derive(Clone, Copy)]
enum Rounding {
    Down,
    Up,
}

/// A NumericDate claim as whole Unix seconds; fractions round so comparisons with a whole
/// `now` stay exact.
fn numeric_date(
    claim: &'static str,
    value: Option<&Value>,
    rounding: Rounding,
) -> Result<Option<u64>, TokenError> {
    let number = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n,
        Some(_) => return Err(bad_claim(claim, "must be a number (Unix seconds)")),
    };
    if let Some(whole) = number.as_u64() {
        return Ok(Some(whole));
    }
    match number.as_f64() {
        Some(f) if f.is_finite() && f >= 0.0 => {
            let whole = match rounding {
                Rounding::Down => f.floor(),
                Rounding::Up => f.ceil(),
            };
            // Saturates above u64::MAX, which is far beyond any real date.
            Ok(Some(whole as u64))
        }
        _ => Err(bad_claim(
            claim,
            "must be a non-negative number (Unix seconds)",
        )),
    }
}

fn audiences(value: Option<&Value>) -> Result<Vec<&str>, TokenError> {
    const PROBLEM: &str = "must be a string or an array of strings";
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(aud)) => Ok(vec![aud.as_str()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().ok_or_else(|| bad_claim("aud", PROBLEM)))
            .collect(),
        Some(_) => Err(bad_claim("aud", PROBLEM)),
    }
}

fn check_user(user: &str) -> Result<(), TokenError> {
    if user.is_empty() {
        return Err(bad_claim("sub", "must not be empty"));
    }
    if user.len() > MAX_TOKEN_USER_BYTES {
        return Err(bad_claim(
            "sub",
            format!("is longer than {MAX_TOKEN_USER_BYTES} bytes"),
        ));
    }
    if user.chars().any(char::is_control) {
        return Err(bad_claim("sub", "must not contain control characters"));
    }
    Ok(())
}

/// The `info` claim as compact JSON.
fn info(value: Option<&Value>) -> Result<Option<Arc<RawValue>>, TokenError> {
    let object = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(object @ Value::Object(_)) => object,
        Some(_) => return Err(bad_claim("info", "must be a JSON object")),
    };
    let text = object.to_string();
    if text.len() > MAX_TOKEN_INFO_BYTES {
        return Err(bad_claim(
            "info",
            format!(
                "is {} bytes of JSON; at most {MAX_TOKEN_INFO_BYTES} are allowed",
                text.len()
            ),
        ));
    }
    let raw = RawValue::from_string(text).map_err(|err| bad_claim("info", err.to_string()))?;
    Ok(Some(Arc::from(raw)))
}

fn grants_claim(claim: &'static str, value: Option<&Value>) -> Result<Grants, TokenError> {
    const PROBLEM: &str = "must be an array of channel patterns (strings)";
    let items = match value {
        None | Some(Value::Null) => return Ok(Grants::default()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(bad_claim(claim, PROBLEM)),
    };
    let patterns = items
        .iter()
        .map(|item| item.as_str().ok_or_else(|| bad_claim(claim, PROBLEM)))
        .collect::<Result<Vec<&str>, _>>()?;
    grants(claim, &patterns)
}

fn grants<S: AsRef<str>>(claim: &'static str, patterns: &[S]) -> Result<Grants, TokenError> {
    Grants::new(patterns).map_err(|err| bad_claim(claim, format!("is invalid: {err}")))
}

/// A loaded public key and what it may verify.
struct PublicKey {
    key: DecodingKey,
    kind: KeyKind,
    /// The JWK's `kid`; PEM keys have none.
    kid: Option<String>,
    /// The JWK's `alg`, which restricts the key to one algorithm.
    alg: Option<Algorithm>,
    /// The file (and `kid`) it came from, for logs.
    origin: String,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("kind", &self.kind)
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("origin", &self.origin)
            .finish()
    }
}

impl PublicKey {
    fn verifies(&self, alg: Algorithm) -> bool {
        self.kind.algorithms().contains(&alg) && self.alg.is_none_or(|only| only == alg)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    fn algorithms(self) -> &'static [Algorithm] {
        match self {
            Self::Rsa => &[
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ],
            Self::P256 => &[Algorithm::ES256],
            Self::P384 => &[Algorithm::ES384],
            Self::Ed25519 => &[Algorithm::EdDSA],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Rsa => "RSA",
            Self::P256 => "EC P-256",
            Self::P384 => "EC P-384",
            Self::Ed25519 => "Ed25519",
        }
    }
}

fn algorithm_named(name: &str) -> Option<Algorithm> {
    ALGORITHMS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, alg)| *alg)
}

fn algorithm_name(alg: Algorithm) -> &'static str {
    ALGORITHMS
        .iter()
        .find(|(_, a)| *a == alg)
        .map_or("?", |(name, _)| name)
}

fn needed_key(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::ES256 => "an EC P-256 key",
        Algorithm::ES384 => "an EC P-384 key",
        Algorithm::EdDSA => "an Ed25519 key",
        _ => "an RSA key",
    }
}

fn clip(text: &str) -> String {
    text.chars().take(MAX_ECHO_CHARS).collect()
}

fn read_key_file(path: &Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|err| format!("{shown}: cannot read: {err}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("{shown}: cannot read: {err}"))?;
    if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(format!(
            "{shown}: is larger than {MAX_KEY_FILE_BYTES} bytes, too large for a key file"
        ));
    }
    Ok(bytes)
}

/// Loads one PEM public key, detecting its type.
fn load_pem_key(path: &Path) -> Result<PublicKey, String> {
    let bytes = read_key_file(path)?;
    pem_key(&bytes, path.display().to_string())
}

/// A PEM public key from a file's bytes; `shown` names the file in errors.
fn pem_key(bytes: &[u8], shown: String) -> Result<PublicKey, String> {
    let not_supported = || {
        format!(
            "{shown}: is not a supported public key PEM \
             (RSA, EC P-256 or P-384, or Ed25519; SPKI \"PUBLIC KEY\" or \"RSA PUBLIC KEY\")"
        )
    };
    let text = std::str::from_utf8(bytes).map_err(|_| not_supported())?;
    let (label, der) = single_pem_block(text).map_err(|why| format!("{shown}: {why}"))?;
    let (key, kind) = match label {
        "PUBLIC KEY" => spki_key(&der, text).ok_or_else(not_supported)?,
        "RSA PUBLIC KEY" => (DecodingKey::from_rsa_der(&der), KeyKind::Rsa),
        "CERTIFICATE" => {
            return Err(format!(
                "{shown}: is a certificate; configure its public key \
                 (`openssl x509 -in CERT -pubkey -noout`)"
            ))
        }
        label if label.contains("PRIVATE KEY") => {
            return Err(format!(
                "{shown}: is a private key ({label}); configure the public key \
                 (`openssl pkey -in KEY -pubout`)"
            ))
        }
        _ => return Err(not_supported()),
    };
    let key = checked_key(key, kind).map_err(|why| format!("{shown}: {why}"))?;
    Ok(PublicKey {
        key,
        kind,
        kid: None,
        alg: None,
        origin: shown,
    })
}

/// The label and DER of the file's only PEM block.
fn single_pem_block(text: &str) -> Result<(&str, Vec<u8>), String> {
    const BEGIN: &str = "-----BEGIN ";
    const DASHES: &str = "-----";
    let Some(start) = text.find(BEGIN) else {
        return Err("is not a PEM file (no -----BEGIN line)".into());
    };
    let rest = &text[start + BEGIN.len()..];
    let Some(label_end) = rest.find(DASHES) else {
        return Err("is not a PEM file (a broken -----BEGIN line)".into());
    };
    let label = &rest[..label_end];
    let body = &rest[label_end + DASHES.len()..];
    let end_line = format!("-----END {label}-----");
    let Some(body_end) = body.find(&end_line) else {
        return Err(format!("is not a PEM file (no {end_line} line)"));
    };
    if body[body_end..].contains(BEGIN) {
        return Err("holds more than one PEM block; put one public key in each file".into());
    }
    let base64: String = body[..body_end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let der = STANDARD
        .decode(base64)
        .map_err(|_| format!("is not a PEM file (the {label} body is not base64)"))?;
    Ok((label, der))
}

/// A SubjectPublicKeyInfo as a key: EC and Ed25519 by their exact encodings, RSA through
/// jsonwebtoken's PEM reader.
fn spki_key(der: &[u8], pem: &str) -> Option<(DecodingKey, KeyKind)> {
    let exact = |prefix: &[u8], len: usize| {
        (der.len() == prefix.len() + len && der.starts_with(prefix)).then(|| &der[prefix.len()..])
    };
    if let Some(point) = exact(&P256_SPKI_PREFIX, 65) {
        return Some((DecodingKey::from_ec_der(point), KeyKind::P256));
    }
    if let Some(point) = exact(&P384_SPKI_PREFIX, 97) {
        return Some((DecodingKey::from_ec_der(point), KeyKind::P384));
    }
    if let Some(x) = exact(&ED25519_SPKI_PREFIX, 32) {
        return Some((DecodingKey::from_ed_der(x), KeyKind::Ed25519));
    }
    if der
        .windows(EC_PUBLIC_KEY_OID.len())
        .any(|w| w == EC_PUBLIC_KEY_OID)
    {
        // Another curve, or a compressed point.
        return None;
    }
    let key = DecodingKey::from_rsa_pem(pem.as_bytes()).ok()?;
    Some((key, KeyKind::Rsa))
}

/// Checks a key can verify its algorithms; RSA keys come back as (n, e).
fn checked_key(key: DecodingKey, kind: KeyKind) -> Result<DecodingKey, String> {
    match kind {
        KeyKind::Rsa => {
            let jwk = Jwk::from_decoding_key(&key, None)
                .map_err(|_| "is not a valid RSA public key".to_string())?;
            let AlgorithmParameters::RSA(rsa) = jwk.algorithm else {
                return Err("is not a valid RSA public key".into());
            };
            let n = URL_SAFE_NO_PAD.decode(rsa.n).map_err(|e| e.to_string())?;
            let e = URL_SAFE_NO_PAD.decode(rsa.e).map_err(|e| e.to_string())?;
            rsa_key(&n, &e)
        }
        KeyKind::P256 | KeyKind::P384 | KeyKind::Ed25519 => {
            // jsonwebtoken parses the point when it builds a verifier and reports a bad one as an
            // error, while a signature that does not verify is `Ok(false)`.
            let alg = kind.algorithms()[0];
            match jsonwebtoken::crypto::verify("AAAA", b"", &key, alg) {
                Ok(_) => Ok(key),
                Err(_) => Err(format!("is not a valid {} public key", kind.name())),
            }
        }
    }
}

/// An RSA public key from its big-endian modulus and exponent, within the sizes the `rsa`
/// crate verifies with.
fn rsa_key(n: &[u8], e: &[u8]) -> Result<DecodingKey, String> {
    let n = strip_leading_zeros(n);
    let e = strip_leading_zeros(e);
    let bits = n.first().map_or(0, |top| {
        (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize)
    });
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(format!(
            "is a {bits}-bit RSA key; {MIN_RSA_BITS} to {MAX_RSA_BITS} bits are supported"
        ));
    }
    let exponent = match e.len() {
        1..=8 => e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
        _ => u64::MAX,
    };
    let n_odd = n.last().is_some_and(|b| b & 1 == 1);
    if !n_odd || !(3..=MAX_RSA_EXPONENT).contains(&exponent) || exponent % 2 == 0 {
        return Err("is not a valid RSA public key".into());
    }
    Ok(DecodingKey::from_rsa_raw_components(n, e))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// The JSON of a JWK Set file.
#[derive(Deserialize)]
struct JwkSetFile {
    keys: Vec<JwkFields>,
}

/// The JWK members Herald reads.
#[derive(Deserialize)]
struct JwkFields {
    kty: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    usage: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
    /// Present only in private keys.
    d: Option<Value>,
}

/// The signing keys of a JWK Set; keys marked `"use": "enc"` are skipped.
fn parse_jwks(bytes: &[u8], shown: &str) -> Result<Vec<PublicKey>, Vec<String>> {
    let set: JwkSetFile = serde_json::from_slice(bytes).map_err(|err| {
        vec![format!(
            "{shown}: is not a JWK Set ({{\"keys\": [...]}}): {err}"
        )]
    })?;
    if set.keys.len() > MAX_JWKS_KEYS {
        return Err(vec![format!(
            "{shown}: holds {} keys; at most {MAX_JWKS_KEYS} are supported",
            set.keys.len()
        )]);
    }
    let mut keys: Vec<PublicKey> = Vec::new();
    let mut errors = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let Some(kid) = jwk.kid.as_deref().filter(|kid| !kid.is_empty()) else {
            errors.push(format!(
                "{shown}: key #{i} has no kid; every key in the JWK Set needs one"
            ));
            continue;
        };
        if jwk.usage.as_deref() == Some("enc") {
            continue;
        }
        if keys.iter().any(|k| k.kid.as_deref() == Some(kid)) {
            errors.push(format!("{shown}: kid {kid:?} appears more than once"));
            continue;
        }
        match jwk_key(jwk) {
            Ok((key, kind, alg)) => keys.push(PublicKey {
                key,
                kind,
                kid: Some(kid.to_owned()),
                alg,
                origin: format!("{shown}#{kid}"),
            }),
            Err(why) => errors.push(format!("{shown}: key {kid:?} {why}")),
        }
    }
    if errors.is_empty() && keys.is_empty() {
        errors.push(format!("{shown}: holds no signing keys"));
    }
    if errors.is_empty() {
        Ok(keys)
    } else {
        Err(errors)
    }
}

fn jwk_key(jwk: &JwkFields) -> Result<(DecodingKey, KeyKind, Option<Algorithm>), String> {
    if jwk.d.is_some() {
        return Err("is a private key; the JWK Set must hold only public keys".into());
    }
    let member = |name: &str, value: &Option<String>| -> Result<Vec<u8>, String> {
        let text = value.as_deref().ok_or_else(|| format!("has no {name:?}"))?;
        URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| format!("has a {name:?} that is not base64url without padding"))
    };
    let sized = |name: &str, value: &Option<String>, len: usize| -> Result<Vec<u8>, String> {
        let bytes = member(name, value)?;
        if bytes.len() == len {
            Ok(bytes)
        } else {
            Err(format!(
                "has a {name:?} of {} bytes, not {len}",
                bytes.len()
            ))
        }
    };
    let (key, kind) = match (jwk.kty.as_deref(), jwk.crv.as_deref()) {
        (Some("RSA"), _) => (
            rsa_key(&member("n", &jwk.n)?, &member("e", &jwk.e)?)?,
            KeyKind::Rsa,
        ),
        (Some("EC"), Some(crv @ ("P-256" | "P-384"))) => {
            let (len, kind) = if crv == "P-256" {
                (32, KeyKind::P256)
            } else {
                (48, KeyKind::P384)
            };
            let mut point = vec![0x04];
            point.extend(sized("x", &jwk.x, len)?);
            point.extend(sized("y", &jwk.y, len)?);
            let key = checked_key(DecodingKey::from_ec_der(&point), kind)?;
            (key, kind)
        }
        (Some("OKP"), Some("Ed25519")) => {
            let x = sized("x", &jwk.x, 32)?;
            let key = checked_key(DecodingKey::from_ed_der(&x), KeyKind::Ed25519)?;
            (key, KeyKind::Ed25519)
        }
        (Some("EC" | "OKP"), crv) => {
            return Err(format!(
                "has an unsupported curve {crv:?} (P-256, P-384 and Ed25519 are supported)"
            ))
        }
        (Some("oct"), _) => {
            return Err(
                "is a symmetric key (kty \"oct\"), which a JWK Set may not hold; \
                 put HMAC secrets in auth.token.hmac_secrets"
                    .into(),
            )
        }
        (kty, _) => {
            return Err(format!(
                "has an unsupported key type {kty:?} (RSA, EC and OKP are supported)"
            ))
        }
    };
    let alg = match jwk.alg.as_deref() {
        None => None,
        Some(name) => {
            let alg =
                algorithm_named(name).ok_or_else(|| format!("has an unsupported alg {name:?}"))?;
            if !kind.algorithms().contains(&alg) {
                return Err(format!(
                    "has alg {name}, which a {} key cannot verify",
                    kind.name()
                ));
            }
            Some(alg)
        }
    };
    Ok((key, kind, alg))
}

/// What a redacted list of secrets shows in `Debug`.
struct Redacted(usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{} redacted]", self.0)
    }
}

/// What a minted token grants.
#[derive(Debug, Clone, PartialEq)]
pub struct MintRequest {
    /// The user id (`sub`).
    pub user: String,
    /// Public information shown in presence; must be a JSON object.
    pub info: Option<Value>,
    /// Channel patterns the user may subscribe to.
    pub channels: Vec<String>,
    /// Channel patterns the user may publish to from the client.
    pub publish: Vec<String>,
    /// How long the token is valid.
    pub ttl: Duration,
}

/// Signs HS256 tokens with the first configured HMAC secret (for logins and `herald token`).
///
/// When `algorithms` is set and leaves HS256 out, the first of HS384 and HS512 it allows is
/// used instead, so minted tokens always verify.
pub struct Minter {
    secret: Vec<u8>,
    alg: Algorithm,
    issuer: Option<String>,
    audience: Option<String>,
}

impl fmt::Debug for Minter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Minter")
            .field("secret", &Redacted(1))
            .field("alg", &self.alg)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

/// The claims of a minted token.
#[derive(Serialize)]
struct MintedClaims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    channels: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    publish: &'a [String],
}

impl Minter {
    /// `None` without HMAC secrets (or when `algorithms` allows no HMAC algorithm). Minted
    /// tokens carry the configured issuer and audience.
    pub fn from_config(config: &TokenConfig) -> Option<Minter> {
        let secret = config.hmac_secrets.first()?;
        let alg = if config.algorithms.is_empty() {
            Algorithm::HS256
        } else {
            HMAC_ALGORITHMS
                .into_iter()
                .find(|alg| config.algorithms.iter().any(|n| n == algorithm_name(*alg)))?
        };
        Some(Minter {
            secret: secret.as_bytes().to_vec(),
            alg,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
        })
    }

    /// Mints a token with `iat` = `now` and `exp` = `now + ttl` (Unix seconds). Grant
    /// patterns, the user and `info` are checked as verification checks them.
    pub fn mint(&self, req: &MintRequest, now: u64) -> Result<String, TokenError> {
        check_user(&req.user)?;
        grants("channels", &req.channels)?;
        grants("publish", &req.publish)?;
        let info = info(req.info.as_ref())?;
        if req.ttl.as_secs() == 0 {
            return Err(bad_claim("exp", "needs a ttl of at least one second"));
        }
        let claims = MintedClaims {
            sub: &req.user,
            iat: now,
            exp: now.saturating_add(req.ttl.as_secs()),
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
            info: info.as_deref(),
            channels: &req.channels,
            publish: &req.publish,
        };
        let claims =
            serde_json::to_vec(&claims).map_err(|err| bad_claim("payload", err.to_string()))?;
        let header = format!(r#"{{"alg":"{}","typ":"JWT"}}"#, algorithm_name(self.alg));
        let mut token = URL_SAFE_NO_PAD.encode(header);
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(claims));
        let tag = hmac_tag(self.alg, &self.secret, token.as_bytes());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(tag));
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge { bytes: token.len() });
        }
        Ok(token)
    }
}

fn hmac_tag(alg: Algorithm, secret: &[u8], message: &[u8]) -> Vec<u8> {
    // Invariant: HMAC takes keys of any length (longer ones are hashed first), so
    // `new_from_slice` cannot fail.
    const ANY_LENGTH: &str = "HMAC accepts keys of any length";
    match alg {
        Algorithm::HS384 => {
            let mut mac = Hmac::<Sha384>::new_from_slice(secret).expect(ANY_LENGTH);
            mac.update(message);
            mac.finalize().into_bytes().to_vec()
        }
        Algorithm::HS512 => {
            let mut mac = Hmac::<Sha512>::new_from_slice(secret).expect(ANY_LENGTH);
            mac.update(message);
            mac.finalize().into_bytes().to_vec()
        }
        _ => {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect(ANY_LENGTH);
            mac.update(message);
            mac.finalize().into_bytes().to_vec()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::EncodingKey;
    use serde_json::json;

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

    #[test]
    fn hmac_tokens_verify_with_each_hash_size() {
        let v = verifier(&hmac_config());
        for alg in HMAC_ALGORITHMS {
            let token = sign(alg, &hmac_signer(SECRET), None, &claims());
            let identity = v.verify(&token, NOW).unwrap();
            assert_eq!(&*identity.user, "user-1", "{alg:?}");
            assert_eq!(identity.expires_at, Some(NOW + 600));
        }
    }

    #[test]
    fn rsa_tokens_verify_with_an_rsa_public_key_file() {
        let v = verifier(&keys_config(&["rsa.pub.pem"]));
        for alg in [Algorithm::RS256, Algorithm::PS256] {
            let token = sign(alg, &rsa_signer(), None, &claims());
            assert_eq!(&*v.verify(&token, NOW).unwrap().user, "user-1", "{alg:?}");
        }
    }

    #[test]
    fn es256_tokens_verify_with_an_ec_public_key_file() {
        let v = verifier(&keys_config(&["ec.pub.pem"]));
        let token = sign(Algorithm::ES256, &ec_signer(), None, &claims());
        assert_eq!(&*v.verify(&token, NOW).unwrap().user, "user-1");
    }

    #[test]
    fn eddsa_tokens_verify_with_an_ed25519_public_key_file() {
        let v = verifier(&keys_config(&["ed25519.pub.pem"]));
        let token = sign(Algorithm::EdDSA, &ed_signer(), None, &claims());
        assert_eq!(&*v.verify(&token, NOW).unwrap().user, "user-1");
    }

    #[test]
    fn public_keys_only_verify_their_own_family() {
        let v = verifier(&keys_config(&[
            "rsa.pub.pem",
            "ec.pub.pem",
            "ed25519.pub.pem",
        ]));
        for (alg, key) in [
            (Algorithm::RS256, rsa_signer()),
            (Algorithm::ES256, ec_signer()),
            (Algorithm::EdDSA, ed_signer()),
        ] {
            let token = sign(alg, &key, None, &claims());
            assert!(v.verify(&token, NOW).is_ok(), "{alg:?}");
        }
        // ES384 needs a P-384 key, which is not configured.
        let only_rsa = verifier(&keys_config(&["rsa.pub.pem"]));
        let token = sign(Algorithm::ES256, &ec_signer(), None, &claims());
        assert_eq!(refusal(&only_rsa, &token), "unsupported_algorithm");
    }

    #[test]
    fn claims_become_the_identity() {
        let v = verifier(&hmac_config());
        let token = sign(
            Algorithm::HS256,
            &hmac_signer(SECRET),
            None,
            &with(json!({
                "info": {"name": "Ada", "tags": [1, 2]},
                "channels": ["room:*", "news"],
                "publish": ["room:42"],
                "iat": NOW,
                "nbf": NOW - 10,
                "custom": {"ignored": true},
            })),
        );
        let identity = v.verify(&token, NOW).unwrap();
        assert_eq!(&*identity.user, "user-1");
        assert_eq!(
            identity.info.unwrap().get(),
            r#"{"name":"Ada","tags":[1,2]}"#
        );
        let subscribe: Vec<&str> = identity.subscribe.patterns().collect();
        assert_eq!(subscribe, ["room:*", "news"]);
        let publish: Vec<&str> = identity.publish.patterns().collect();
        assert_eq!(publish, ["room:42"]);
        assert_eq!(identity.expires_at, Some(NOW + 600));
    }

    #[test]
    fn a_jwks_kid_selects_exactly_one_key() {
        let v = verifier(&jwks_config());
        let rsa = sign(Algorithm::RS256, &rsa_signer(), Some("rsa-1"), &claims());
        assert!(v.verify(&rsa, NOW).is_ok());
        let ec = sign(Algorithm::ES256, &ec_signer(), Some("ec-1"), &claims());
        assert!(v.verify(&ec, NOW).is_ok());

        let unknown = sign(Algorithm::RS256, &rsa_signer(), Some("rsa-2"), &claims());
        assert_eq!(refusal(&v, &unknown), "unknown_key");
        // The EC key signed, but the header names the RSA key.
        let mislabelled = sign(Algorithm::ES256, &ec_signer(), Some("rsa-1"), &claims());
        assert_eq!(refusal(&v, &mislabelled), "unknown_key");
        // The RSA key signed, but the header names the EC key.
        let mislabelled = sign(Algorithm::RS256, &rsa_signer(), Some("ec-1"), &claims());
        assert_eq!(refusal(&v, &mislabelled), "unknown_key");
        // The JWKs' algs (RS256, ES256) are all this set verifies.
        let other_alg = sign(Algorithm::RS512, &rsa_signer(), Some("rsa-1"), &claims());
        assert_eq!(refusal(&v, &other_alg), "unsupported_algorithm");

        // Without a kid every key of the family is tried.
        let no_kid = sign(Algorithm::RS256, &rsa_signer(), None, &claims());
        assert!(v.verify(&no_kid, NOW).is_ok());
    }

    #[test]
    fn a_kid_is_ignored_without_a_jwks() {
        let v = verifier(&keys_config(&["rsa.pub.pem"]));
        let token = sign(Algorithm::RS256, &rsa_signer(), Some("whatever"), &claims());
        assert!(v.verify(&token, NOW).is_ok());
        let hmac = verifier(&hmac_config());
        let token = sign(
            Algorithm::HS256,
            &hmac_signer(SECRET),
            Some("k1"),
            &claims(),
        );
        assert!(hmac.verify(&token, NOW).is_ok());
    }

    #[test]
    fn expired_tokens_are_refused_beyond_the_leeway() {
        let v = verifier(&hmac_config());
        let at = |exp: u64| {
            sign(
                Algorithm::HS256,
                &hmac_signer(SECRET),
                None,
                &with(json!({"exp": exp})),
            )
        };
        assert!(v.verify(&at(NOW), NOW).is_ok());
        assert!(v.verify(&at(NOW - 5), NOW).is_ok(), "within the 5 s leeway");
        assert_eq!(
            v.verify(&at(NOW - 6), NOW).unwrap_err(),
            TokenError::Expired { exp: NOW - 6 }
        );
        let fractional = sign(
            Algorithm::HS256,
            &hmac_signer(SECRET),
            None,
            &with(json!({"exp": (NOW - 5) as f64 + 0.5})),
        );
        assert!(v.verify(&fractional, NOW).is_ok());
        let fractional = sign(
            Algorithm::HS256,
            &hmac_signer(SECRET),
            None,
            &with(json!({"exp": (NOW - 6) as f64 + 0.5})),
        );
        assert_eq!(refusal(&v, &fractional), "expired");
    }

    #[test]
    fn tokens_before_nbf_are_refused() {
        let v = verifier(&hmac_config());
        let at = |nbf: u64| {
            sign(
                Algorithm::HS256,
                &hmac_signer(SECRET),
                None,
                &with(json!({"nbf": nbf})),
            )
        };
        assert!(v.verify(&at(NOW + 5), NOW).is_ok(), "within the 5 s leeway");
        assert_eq!(
            v.verify(&at(NOW + 6), NOW).unwrap_err(),
            TokenError::NotYetValid { nbf: NOW + 6 }
        );
    }

    #[test]
    fn the_issuer_must_match_when_configured() {
        let v = verifier(&TokenConfig {
            issuer: Some("https://auth.example".into()),
            ..hmac_config()
        });
        let signed = |claims: Value| sign(Algorithm::HS256, &hmac_signer(SECRET), None, &claims);
        assert!(v
            .verify(&signed(with(json!({"iss": "https://auth.example"}))), NOW)
            .is_ok());
        assert_eq!(
            refusal(&v, &signed(with(json!({"iss": "https://evil.example"})))),
            "wrong_issuer"
        );
        assert_eq!(refusal(&v, &signed(claims())), "wrong_issuer");
        assert_eq!(refusal(&v, &signed(with(json!({"iss": 7})))), "bad_claims");
    }

    #[test]
    fn the_audience_must_be_included_when_configured() {
        let v = verifier(&TokenConfig {
            audience: Some("herald".into()),
            ..hmac_config()
        });
        let signed = |claims: Value| sign(Algorithm::HS256, &hmac_signer(SECRET), None, &claims);
        assert!(v
            .verify(&signed(with(json!({"aud": "herald"}))), NOW)
            .is_ok());
        assert!(v
            .verify(&signed(with(json!({"aud": ["api", "herald"]}))), NOW)
            .is_ok());
        assert_eq!(
            refusal(&v, &signed(with(json!({"aud": "api"})))),
            "wrong_audience"
        );
        assert_eq!(
            refusal(&v, &signed(with(json!({"aud": []})))),
            "wrong_audience"
        );
        assert_eq!(refusal(&v, &signed(claims())), "wrong_audience");
        assert_eq!(
            refusal(&v, &signed(with(json!({"aud": [1]})))),
            "bad_claims"
        );

        // A token may carry an audience nobody configured.
        let open = verifier(&hmac_config());
        assert!(open
            .verify(&signed(with(json!({"aud": "api"}))), NOW)
            .is_ok());
    }

    #[test]
    fn tokens_without_exp_are_refused_unless_allowed() {
        let token = sign(
            Algorithm::HS256,
            &hmac_signer(SECRET),
            None,
            &without("exp"),
        );
        assert_eq!(refusal(&verifier(&hmac_config()), &token), "missing_exp");
        let lenient = verifier(&TokenConfig {
            require_exp: false,
            ..hmac_config()
        });
        assert_eq!(lenient.verify(&token, NOW).unwrap().expires_at, None);
    }

    #[test]
    fn alg_none_is_refused_in_any_case() {
        let v = verifier(&TokenConfig {
            require_exp: false,
            ..hmac_config()
        });
        let payload = b64(claims().to_string());
        for alg in ["none", "None", "NONE", "nOnE"] {
            let header = b64(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
            for signature in ["", "c2ln"] {
                let token = format!("{header}.{payload}.{signature}");
                assert_eq!(refusal(&v, &token), "unsupported_algorithm", "{token}");
            }
        }
    }

    #[test]
    fn hs256_signed_with_the_rsa_public_key_is_refused() {
        let pem = key_bytes("rsa.pub.pem");
        let forged = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(&pem),
            None,
            &claims(),
        );
        let keys_only = verifier(&keys_config(&["rsa.pub.pem"]));
        assert_eq!(refusal(&keys_only, &forged), "unsupported_algorithm");
        // Even with HS256 allowed, HS256 is checked against the HMAC secrets only.
        let both = verifier(&TokenConfig {
            public_keys: vec![key_path("rsa.pub.pem")],
            ..hmac_config()
        });
        assert_eq!(refusal(&both, &forged), "bad_signature");
        // The DER of the key as a secret fares no better.
        let der = single_pem_block(std::str::from_utf8(&pem).unwrap())
            .unwrap()
            .1;
        let forged = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(&der),
            None,
            &claims(),
        );
        assert_eq!(refusal(&both, &forged), "bad_signature");
        // Listing HS256 explicitly without a secret is a configuration error.
        let errors = TokenVerifier::new(&TokenConfig {
            algorithms: vec!["HS256".into(), "RS256".into()],
            ..keys_config(&["rsa.pub.pem"])
        })
        .unwrap_err();
        assert!(
            errors.iter().any(|e| e.contains("hmac_secrets")),
            "{errors:?}"
        );
    }

    #[test]
    fn a_different_secret_is_a_bad_signature() {
        let v = verifier(&hmac_config());
        let token = sign(
            Algorithm::HS256,
            &hmac_signer(OTHER_SECRET),
            None,
            &claims(),
        );
        assert_eq!(refusal(&v, &token), "bad_signature");
        let (message, _) = token.rsplit_once('.').unwrap();
        assert_eq!(refusal(&v, &format!("{message}.")), "bad_signature");
    }

    #[test]
    fn any_configured_secret_verifies() {
        let v = verifier(&TokenConfig {
            hmac_secrets: vec![SECRET.into(), OTHER_SECRET.into()],
            ..TokenConfig::default()
        });
        for secret in [SECRET, OTHER_SECRET] {
            let token = sign(Algorithm::HS256, &hmac_signer(secret), None, &claims());
            assert!(v.verify(&token, NOW).is_ok());
        }
    }

    #[test]
    fn algorithms_outside_the_allow_list_are_refused() {
        let v = verifier(&TokenConfig {
            algorithms: vec!["HS256".into()],
            ..hmac_config()
        });
        let hs256 = sign(Algorithm::HS256, &hmac_signer(SECRET), None, &claims());
        assert!(v.verify(&hs256, NOW).is_ok());
        let hs512 = sign(Algorithm::HS512, &hmac_signer(SECRET), None, &claims());
        assert_eq!(
            v.verify(&hs512, NOW).unwrap_err(),
            TokenError::UnsupportedAlgorithm {
                alg: "HS512".into()
            }
        );
    }

    #[test]
    fn oversize_tokens_are_refused_before_parsing() {
        let v = verifier(&hmac_config());
        let token = sign(
            Algorithm::HS256,
            &hmac_signer(SECRET),
            None,
            &with(json!({"padding": "x".repeat(MAX_TOKEN_BYTES)})),
        );
        assert_eq!(refusal(&v, &token), "too_large");
        assert_eq!(refusal(&v, &"a".repeat(MAX_TOKEN_BYTES + 1)), "too_large");
    }

    #[test]
    fn garbage_never_panics() {
        let v = verifier(&TokenConfig {
            public_keys: vec![key_path("rsa.pub.pem"), key_path("ed25519.pub.pem")],
            jwks_file: Some(key_path("jwks.json")),
            ..hmac_config()
        });
        let shapes = [
            (String::new(), "malformed"),
            (".".into(), "malformed"),
            ("..".into(), "malformed"),
            ("...".into(), "malformed"),
            ("a.b.c".into(), "malformed"),
            ("a.b.c.d".into(), "malformed"),
            ("é.ü.ß".into(), "malformed"),
            (".".repeat(10 * 1024), "too_large"),
            (".".repeat(MAX_TOKEN_BYTES), "malformed"),
        ];
        for (token, reason) in &shapes {
            let clipped: String = token.chars().take(40).collect();
            assert_eq!(refusal(&v, token), *reason, "{clipped}");
        }

        // Headers, with a well-formed payload and the given signature part.
        let headers = [
            ("[1,2]", "", "malformed"),
            ("null", "", "malformed"),
            ("{}", "", "malformed"),
            (r#"{"alg":null}"#, "", "malformed"),
            (r#"{"alg":"HS256","alg":"HS256"}"#, "", "malformed"),
            (r#"{"alg":"HS256","kid":5}"#, "", "malformed"),
            (r#"{"alg":"HS256","crit":["b64"]}"#, "", "malformed"),
            (r#"{"alg":"HS256"}"#, "!!!", "malformed"),
            (r#"{"alg":5}"#, "", "unsupported_algorithm"),
            (r#"{"alg":["HS256"]}"#, "", "unsupported_algorithm"),
            (r#"{"alg":"hs256"}"#, "", "unsupported_algorithm"),
            (r#"{"alg":"ES512"}"#, "", "unsupported_algorithm"),
            (r#"{"alg":"ES384"}"#, "", "unsupported_algorithm"),
            (r#"{"alg":"RSA-OAEP"}"#, "", "unsupported_algorithm"),
            (r#"{"alg":"EdDSA","kid":"x"}"#, "", "unknown_key"),
            (r#"{"alg":"HS256"}"#, "AAAA", "bad_signature"),
            (r#"{"alg":"RS256"}"#, "AAAA", "bad_signature"),
            (r#"{"alg":"PS512"}"#, "AAAA", "bad_signature"),
            (r#"{"alg":"ES256"}"#, "", "bad_signature"),
            (r#"{"alg":"ES256","kid":"ec-1"}"#, "AAAA", "bad_signature"),
            (r#"{"alg":"EdDSA"}"#, "AAAA", "bad_signature"),
        ];
        let payload = b64(claims().to_string());
        for (header, signature, reason) in headers {
            let token = format!("{}.{payload}.{signature}", b64(header));
            assert_eq!(refusal(&v, &token), reason, "{header} {signature}");
        }

        // Validly signed payloads that are not claims.
        let header = r#"{"alg":"HS256"}"#;
        assert_eq!(refusal(&v, &hs256_raw(header, "not json")), "bad_claims");
        assert_eq!(refusal(&v, &hs256_raw(header, "[1]")), "bad_claims");
        let message = format!("{}.%%", b64(header));
        let tag = hmac_tag(Algorithm::HS256, SECRET.as_bytes(), message.as_bytes());
        assert_eq!(refusal(&v, &format!("{message}.{}", b64(tag))), "malformed");
    }

    #[test]
    fn bad_claims_name_the_claim() {
        let v = verifier(&hmac_config());
        let cases = [
            (with(json!({"channels": "x"})), "channels"),
            (with(json!({"channels": ["bad channel"]})), "channels"),
            (with(json!({"channels": [1]})), "channels"),
            (with(json!({"publish": ["ro*m"]})), "publish"),
            (without("sub"), "sub"),
            (with(json!({"sub": 5})), "sub"),
            (with(json!({"sub": ""})), "sub"),
            (with(json!({"sub": "a\nb"})), "sub"),
            (
                with(json!({"sub": "u".repeat(MAX_TOKEN_USER_BYTES + 1)})),
                "sub",
            ),
            (with(json!({"info": "text"})), "info"),
            (with(json!({"info": [1]})), "info"),
            (
                with(json!({"info": {"x": "y".repeat(MAX_TOKEN_INFO_BYTES)}})),
                "info",
            ),
            (with(json!({"exp": "soon"})), "exp"),
            (with(json!({"exp": -1})), "exp"),
            (with(json!({"nbf": true})), "nbf"),
            (with(json!({"iat": "now"})), "iat"),
        ];
        for (claims, claim) in cases {
            let token = sign(Algorithm::HS256, &hmac_signer(SECRET), None, &claims);
            match v.verify(&token, NOW) {
                Err(TokenError::BadClaims { claim: named, .. }) => assert_eq!(named, claim),
                other => panic!("{claims}: {other:?}"),
            }
        }
        let long_enough = with(json!({"sub": "u".repeat(MAX_TOKEN_USER_BYTES)}));
        let token = sign(Algorithm::HS256, &hmac_signer(SECRET), None, &long_enough);
        assert!(v.verify(&token, NOW).is_ok());
        let err = v
            .verify(
                &hs256_raw(r#"{"alg":"HS256"}"#, r#"{"sub":"a","sub":"b","exp":1}"#),
                NOW,
            )
            .unwrap_err();
        assert_eq!(err.reason(), "bad_claims");
        let token = sign(
            Algorithm::HS256,
            &hmac_signer(SECRET),
            None,
            &with(json!({"channels": ["bad channel"]})),
        );
        let message = v.verify(&token, NOW).unwrap_err().to_string();
        assert!(
            message.contains("channels") && message.contains("bad channel"),
            "{message}"
        );
    }

    #[test]
    fn minted_tokens_verify_to_the_same_identity() {
        let config = TokenConfig {
            issuer: Some("herald".into()),
            audience: Some("chat".into()),
            ..hmac_config()
        };
        let minter = Minter::from_config(&config).unwrap();
        let request = MintRequest {
            user: "user-7".into(),
            info: Some(json!({"name": "Grace", "admin": false})),
            channels: vec!["room:*".into(), "news".into()],
            publish: vec!["room:1".into()],
            ttl: Duration::from_secs(3600),
        };
        let token = minter.mint(&request, NOW).unwrap();
        let identity = verifier(&config).verify(&token, NOW).unwrap();
        assert_eq!(&*identity.user, "user-7");
        let info: Value = serde_json::from_str(identity.info.unwrap().get()).unwrap();
        assert_eq!(Some(info), request.info);
        assert_eq!(identity.subscribe, Grants::new(&request.channels).unwrap());
        assert_eq!(identity.publish, Grants::new(&request.publish).unwrap());
        assert_eq!(identity.expires_at, Some(NOW + 3600));

        let claims: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["iat"], NOW);
        assert_eq!(claims["iss"], "herald");
        assert_eq!(claims["aud"], "chat");

        // jsonwebtoken agrees with the signature.
        let decoded = jsonwebtoken::crypto::verify(
            token.rsplit_once('.').unwrap().1,
            token.rsplit_once('.').unwrap().0.as_bytes(),
            &DecodingKey::from_secret(SECRET.as_bytes()),
            Algorithm::HS256,
        );
        assert_eq!(decoded, Ok(true));

        let bare = MintRequest {
            info: None,
            channels: vec![],
            publish: vec![],
            ..request
        };
        let token = minter.mint(&bare, NOW).unwrap();
        let identity = verifier(&config).verify(&token, NOW).unwrap();
        assert!(identity.info.is_none() && identity.subscribe.is_empty());
    }

    #[test]
    fn minting_checks_the_request() {
        let minter = Minter::from_config(&hmac_config()).unwrap();
        let request = MintRequest {
            user: "u".into(),
            info: None,
            channels: vec![],
            publish: vec![],
            ttl: Duration::from_secs(60),
        };
        let refused = |req: MintRequest| minter.mint(&req, NOW).unwrap_err();
        assert!(matches!(
            refused(MintRequest {
                channels: vec!["bad channel".into()],
                ..request.clone()
            }),
            TokenError::BadClaims {
                claim: "channels",
                ..
            }
        ));
        assert!(matches!(
            refused(MintRequest {
                publish: vec!["a*b".into()],
                ..request.clone()
            }),
            TokenError::BadClaims {
                claim: "publish",
                ..
            }
        ));
        assert!(matches!(
            refused(MintRequest {
                user: String::new(),
                ..request.clone()
            }),
            TokenError::BadClaims { claim: "sub", .. }
        ));
        assert!(matches!(
            refused(MintRequest {
                info: Some(json!(1)),
                ..request.clone()
            }),
            TokenError::BadClaims { claim: "info", .. }
        ));
        assert!(matches!(
            refused(MintRequest {
                ttl: Duration::ZERO,
                ..request.clone()
            }),
            TokenError::BadClaims { claim: "exp", .. }
        ));
        let many: Vec<String> = (0..200)
            .map(|i| format!("channel-with-a-long-name-{i}"))
            .collect();
        assert_eq!(
            refused(MintRequest {
                channels: many,
                ..request
            })
            .reason(),
            "too_large"
        );

        assert!(Minter::from_config(&keys_config(&["rsa.pub.pem"])).is_none());
        // An allow-list without HS256 mints with an HMAC algorithm it allows.
        let hs512_only = TokenConfig {
            algorithms: vec!["HS512".into()],
            ..hmac_config()
        };
        let token = Minter::from_config(&hs512_only)
            .unwrap()
            .mint(
                &MintRequest {
                    user: "u".into(),
                    info: None,
                    channels: vec![],
                    publish: vec![],
                    ttl: Duration::from_secs(60),
                },
                NOW,
            )
            .unwrap();
        assert!(verifier(&hs512_only).verify(&token, NOW).is_ok());
    }

    #[test]
    fn problems_flag_short_secrets_none_and_keyless_algorithms() {
        assert!(TokenConfig::default().problems().is_empty());
        assert!(hmac_config().problems().is_empty());
        let problems = TokenConfig {
            hmac_secrets: vec!["0123456789".into()],
            algorithms: vec![
                "none".into(),
                "HS256".into(),
                "RS1024".into(),
                "ES256".into(),
            ],
            issuer: Some(String::new()),
            ..TokenConfig::default()
        }
        .problems();
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(problems.iter().all(|p| p.starts_with("auth.token.")));
        assert!(problems[0].contains("hmac_secrets[0]") && problems[0].contains("10 bytes"));
        assert!(
            !problems[0].contains("0123456789"),
            "secrets are never echoed"
        );
        assert!(problems[1].contains("\"none\""));
        assert!(problems[2].contains("RS1024"));
        assert!(problems[3].contains("ES256") && problems[3].contains("public_keys"));
        assert!(problems[4].contains("issuer"));
        assert!(!TokenConfig::default().configured());
        assert!(hmac_config().configured() && jwks_config().configured());
    }

    #[test]
    fn new_reports_unusable_key_files_by_path() {
        let missing = key_path("missing.pem");
        let private = key_path("ec.pem");
        let not_pem = key_path("README.md");
        let errors = TokenVerifier::new(&TokenConfig {
            public_keys: vec![missing.clone(), private.clone(), not_pem.clone()],
            jwks_file: Some(key_path("rsa.pub.pem")),
            ..TokenConfig::default()
        })
        .unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:#?}");
        assert!(
            errors[0].contains(&missing.display().to_string()) && errors[0].contains("cannot read")
        );
        assert!(
            errors[1].contains(&private.display().to_string()) && errors[1].contains("private key")
        );
        assert!(
            errors[2].contains(&not_pem.display().to_string()) && errors[2].contains("not a PEM")
        );
        assert!(
            errors[3].starts_with("auth.token.jwks_file:") && errors[3].contains("not a JWK Set")
        );

        // An allowed algorithm that no loaded key verifies.
        let errors = TokenVerifier::new(&TokenConfig {
            algorithms: vec!["ES384".into()],
            ..keys_config(&["ec.pub.pem"])
        })
        .unwrap_err();
        assert!(
            errors[0].contains("ES384") && errors[0].contains("P-384"),
            "{errors:?}"
        );
    }

    #[test]
    fn pkcs1_rsa_public_keys_load_too() {
        let spki = key_bytes("rsa.pub.pem");
        let (_, der) = single_pem_block(std::str::from_utf8(&spki).unwrap()).unwrap();
        // A 2048-bit SPKI is 24 bytes of header, then the PKCS#1 RSAPublicKey.
        let pkcs1 = STANDARD.encode(&der[24..]);
        let pem =
            format!("-----BEGIN RSA PUBLIC KEY-----\n{pkcs1}\n-----END RSA PUBLIC KEY-----\n");
        let key = pem_key(pem.as_bytes(), "pkcs1.pem".into()).unwrap();
        assert_eq!(key.kind, KeyKind::Rsa);
        let token = sign(Algorithm::RS256, &rsa_signer(), None, &claims());
        let message = token.rsplit_once('.').unwrap();
        assert_eq!(
            jsonwebtoken::crypto::verify(
                message.1,
                message.0.as_bytes(),
                &key.key,
                Algorithm::RS256
            ),
            Ok(true)
        );

        let two = format!("{}{}", String::from_utf8(spki.clone()).unwrap(), pem);
        let err = pem_key(two.as_bytes(), "two.pem".into()).unwrap_err();
        assert!(err.contains("more than one PEM block"), "{err}");
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = pem_key(cert.as_bytes(), "cert.pem".into()).unwrap_err();
        assert!(err.starts_with("cert.pem: is a certificate"), "{err}");
        let junk = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        let err = pem_key(junk.as_bytes(), "junk.pem".into()).unwrap_err();
        assert!(
            err.starts_with("junk.pem: is not a supported public key PEM"),
            "{err}"
        );
    }

    #[test]
    fn jwks_problems_are_reported_per_key() {
        let rsa_1024_n = b64([&[0xc1u8][..], &[0x55; 126], &[0x01]].concat());
        let text = json!({"keys": [
            {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
            {"kty": "oct", "kid": "sym", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "small", "n": rsa_1024_n, "e": "AQAB"},
            {"kty": "EC", "kid": "off-curve", "crv": "P-256", "x": b64([1; 32]), "y": b64([2; 32])},
            {"kty": "EC", "kid": "k1", "crv": "secp256k1", "x": b64([1; 32]), "y": b64([2; 32])},
            {"kty": "OKP", "kid": "short", "crv": "Ed25519", "x": b64([1; 16])},
            {"kty": "EC", "kid": "private", "crv": "P-256", "x": "", "y": "", "d": "AA"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
        ]});
        let errors = parse_jwks(text.to_string().as_bytes(), "set.json").unwrap_err();
        let expect = [
            "key #0 has no kid",
            "\"sym\" is a symmetric key",
            "\"small\" is a 1024-bit RSA key",
            "\"off-curve\" is not a valid EC P-256 public key",
            "\"k1\" has an unsupported curve",
            "\"short\" has a \"x\" of 16 bytes",
            "\"private\" is a private key",
        ];
        assert_eq!(errors.len(), expect.len(), "{errors:#?}");
        for (error, part) in errors.iter().zip(expect) {
            assert!(
                error.starts_with("set.json: ") && error.contains(part),
                "{error} / {part}"
            );
        }

        let jwks = std::fs::read_to_string(key_path("jwks.json")).unwrap();
        let mut set: Value = serde_json::from_str(&jwks).unwrap();
        set["keys"][1]["alg"] = json!("RS256");
        let errors = parse_jwks(set.to_string().as_bytes(), "set.json").unwrap_err();
        assert!(errors[0].contains("cannot verify"), "{errors:?}");
        set["keys"][1]["kid"] = json!("rsa-1");
        set["keys"][1]["alg"] = json!("ES256");
        let errors = parse_jwks(set.to_string().as_bytes(), "set.json").unwrap_err();
        assert!(errors[0].contains("more than once"), "{errors:?}");
        let errors = parse_jwks(br#"{"keys": []}"#, "set.json").unwrap_err();
        assert!(errors[0].contains("no signing keys"), "{errors:?}");
        let keys = parse_jwks(jwks.as_bytes(), "set.json").unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(
            (keys[0].kind, keys[0].alg),
            (KeyKind::Rsa, Some(Algorithm::RS256))
        );
        assert_eq!(
            (keys[1].kind, keys[1].alg),
            (KeyKind::P256, Some(Algorithm::ES256))
        );
    }

    #[test]
    fn pem_and_jwks_forms_of_a_key_verify_the_same_tokens() {
        let pem = verifier(&keys_config(&["rsa.pub.pem", "ec.pub.pem"]));
        let jwks = verifier(&jwks_config());
        for (alg, key) in [
            (Algorithm::RS256, rsa_signer()),
            (Algorithm::ES256, ec_signer()),
        ] {
            let token = sign(alg, &key, None, &claims());
            assert!(pem.verify(&token, NOW).is_ok() && jwks.verify(&token, NOW).is_ok());
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let config = TokenConfig {
            hmac_secrets: vec![SECRET.into(), OTHER_SECRET.into()],
            ..TokenConfig::default()
        };
        let shown = format!(
            "{config:?} {:?} {:?}",
            verifier(&config),
            Minter::from_config(&config).unwrap()
        );
        assert!(
            !shown.contains(SECRET) && !shown.contains(OTHER_SECRET),
            "{shown}"
        );
        assert!(shown.contains("[2 redacted]"), "{shown}");
    }

    #[test]
    fn config_reads_humantime_and_refuses_unknown_keys() {
        let config: TokenConfig = serde_json::from_value(json!({
            "hmac_secrets": [SECRET],
            "leeway": "30s",
            "algorithms": ["HS256"],
        }))
        .unwrap();
        assert_eq!(config.leeway, Duration::from_secs(30));
        assert!(config.require_exp);
        assert!(serde_json::from_value::<TokenConfig>(json!({"secret": "x"})).is_err());
        assert_eq!(TokenConfig::default().leeway, Duration::from_secs(5));
    }

    #[test]
    fn an_unconfigured_verifier_refuses_everything() {
        let v = verifier(&TokenConfig::default());
        let token = sign(Algorithm::HS256, &hmac_signer(SECRET), None, &claims());
        assert_eq!(refusal(&v, &token), "unsupported_algorithm");
    }

    #[test]
    fn the_verifier_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<TokenVerifier>();
        check::<Minter>();
    }

    #[test]
    fn every_error_has_a_reason_and_a_message() {
        let errors = [
            TokenError::TooLarge { bytes: 9000 },
            malformed("x"),
            TokenError::UnsupportedAlgorithm { alg: "none".into() },
            TokenError::UnknownKey {
                kid: Some("k".into()),
            },
            TokenError::UnknownKey { kid: None },
            TokenError::BadSignature,
            TokenError::Expired { exp: 1 },
            TokenError::NotYetValid { nbf: 1 },
            TokenError::WrongIssuer,
            TokenError::WrongAudience,
            TokenError::MissingExp,
            bad_claim("sub", "is missing"),
        ];
        for err in errors {
            let reason = err.reason();
            assert!(reason.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
            let message = err.to_string();
            assert!(
                message.contains("token") && !message.contains('\n'),
                "{message}"
            );
        }
    }
}

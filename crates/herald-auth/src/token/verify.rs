//! [`TokenVerifier`]: builds the allowed algorithms and keys from a [`super::TokenConfig`],
//! then checks a compact JWS's header and signature before handing its payload to the claim
//! checks in `claims.rs`.

use super::claims::{
    audiences, check_user, first_non_space, grants_claim, info, numeric_date, Claims, Rounding,
};
use super::error::{bad_claim, malformed};
use super::keys::{load_pem_key, parse_jwks, read_key_file, PublicKey};
use super::{
    algorithm_name, algorithm_named, Redacted, TokenConfig, TokenError, ALGORITHMS, MAX_TOKEN_BYTES,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use herald_core::Identity;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde::Deserialize;
use serde_json::Value;
use std::fmt;
use std::sync::Arc;

/// Text from a token (an `alg`, a `kid`) echoed in an error is cut to this many characters.
const MAX_ECHO_CHARS: usize = 64;

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

/// Sessions check the tokens of WebSocket requests through herald-core's trait, at the time
/// of the call.
impl herald_core::Authenticator for TokenVerifier {
    fn authenticate(&self, token: &str) -> Result<Identity, herald_core::TokenRefused> {
        self.verify(token, crate::unix_now())
            .map_err(|e| herald_core::TokenRefused(format!("token refused ({}): {e}", e.reason())))
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
        let iat = numeric_date("iat", claims.iat.as_ref(), Rounding::Down)?;
        let auth_time = numeric_date("auth_time", claims.auth_time.as_ref(), Rounding::Down)?;
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
            session_start: auth_time.or(iat),
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

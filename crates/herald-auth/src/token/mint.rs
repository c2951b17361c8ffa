//! [`Minter`]: signs HMAC tokens for logins and `herald token` from a [`MintRequest`],
//! vetting it with the same claim checks verification uses.

use super::claims::{check_user, grants, info};
use super::error::bad_claim;
use super::{algorithm_name, Redacted, TokenConfig, TokenError, HMAC_ALGORITHMS, MAX_TOKEN_BYTES};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use jsonwebtoken::Algorithm;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Sha256, Sha384, Sha512};
use std::fmt;
use std::time::Duration;

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
    /// When the user logged in (Unix seconds), for a renewed token (`auth_time`); a token
    /// minted at login leaves it out (its `iat` is the login).
    pub session_start: Option<u64>,
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
    auth_time: Option<u64>,
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
            auth_time: req.session_start,
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

pub(super) fn hmac_tag(alg: Algorithm, secret: &[u8], message: &[u8]) -> Vec<u8> {
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

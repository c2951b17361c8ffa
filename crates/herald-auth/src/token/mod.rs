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
//! | `auth_time` | number (Unix seconds) | When the user logged in; only its type is checked. With `iat`, it dates the session `POST /auth/refresh` bounds by `auth.token.max_session_age`. |
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

mod claims;
mod config;
mod error;
mod keys;
mod mint;
mod verify;

pub use config::TokenConfig;
pub use error::TokenError;
pub use mint::{MintRequest, Minter};
pub use verify::TokenVerifier;

use jsonwebtoken::Algorithm;
use std::fmt;

/// Largest connection token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Largest `info` claim accepted, in bytes of compact JSON.
pub const MAX_TOKEN_INFO_BYTES: usize = 4 * 1024;
/// Longest `sub` (user id) accepted, in bytes.
pub const MAX_TOKEN_USER_BYTES: usize = 256;
/// Shortest HMAC secret accepted, in bytes.
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

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

/// What a redacted list of secrets shows in `Debug`.
struct Redacted(usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{} redacted]", self.0)
    }
}

#[cfg(test)]
mod tests;

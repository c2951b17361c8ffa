//! [`TokenError`]: why a token was refused or could not be minted, with its stable reason
//! names. What raises each error lives in `verify.rs`, `claims.rs` and `mint.rs`.

use super::MAX_TOKEN_BYTES;

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

pub(super) fn malformed(problem: &'static str) -> TokenError {
    TokenError::Malformed { problem }
}

pub(super) fn bad_claim(claim: &'static str, problem: impl Into<String>) -> TokenError {
    TokenError::BadClaims {
        claim,
        problem: problem.into(),
    }
}

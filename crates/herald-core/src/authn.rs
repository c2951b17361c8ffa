//! How a connection token reaches the core: the [`Authenticator`] trait, which herald-auth
//! implements, so a session can check the tokens its requests carry without knowing JWTs.

use crate::Identity;

/// Turns a connection token into the [`Identity`] it names, with its grants.
pub trait Authenticator: Send + Sync + std::fmt::Debug {
    /// Verifies `token` now; a refusal names the reason in words a client can act on.
    fn authenticate(&self, token: &str) -> Result<Identity, TokenRefused>;
}

/// Why a token was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TokenRefused(pub String);

//! Herald's authentication, with no network IO: connection tokens (JWT) verified into a
//! [`herald_core::Identity`] and minted for logins, and Telegram Mini App `initData` checked
//! exactly as Telegram specifies.

mod telegram;
mod token;

pub use telegram::{
    sign_init_data, verify_init_data, TelegramCheck, TelegramConfig, TelegramError, TelegramLogin,
    TelegramUser, MAX_FUTURE_SKEW, MAX_INIT_DATA_BYTES, TELEGRAM_PRODUCTION_KEY, TELEGRAM_TEST_KEY,
};
pub use token::{
    MintRequest, Minter, TokenConfig, TokenError, TokenVerifier, MAX_TOKEN_BYTES,
    MAX_TOKEN_INFO_BYTES, MAX_TOKEN_USER_BYTES, MIN_HMAC_SECRET_BYTES,
};

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

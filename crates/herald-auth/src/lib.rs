//! Herald's authentication, with no network IO: connection tokens (JWT) verified into a
//! [`herald_core::Identity`] and minted for logins, and Telegram Mini App `initData` checked
//! exactly as Telegram specifies.

mod telegram;
mod token;

pub use telegram::{
    verify_init_data, TelegramCheck, TelegramConfig, TelegramError, TelegramLogin, TelegramUser,
    TELEGRAM_PRODUCTION_KEY, TELEGRAM_TEST_KEY,
};
pub use token::{Minter, TokenConfig, TokenError, TokenVerifier};

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

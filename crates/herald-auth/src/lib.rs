//! Herald's authentication, with no network IO: connection tokens (JWT) verified into a
//! [`herald_core::Identity`] and minted for logins, and Telegram Mini App `initData` checked
//! exactly as Telegram specifies.

mod telegram;
mod token;

// Explicit lists replace these once both modules settle.
pub use telegram::*;
pub use token::*;

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

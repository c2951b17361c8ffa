//! `herald_auth::verify_init_data`: Telegram Mini App `initData` as `POST /auth/telegram`
//! receives it, through both checks (HMAC with a bot token, Ed25519 with Telegram's key).
//!
//! Input: first byte selects the check (even: HMAC, odd: Ed25519), the rest is the raw
//! initData (lossy UTF-8). Oracle: never panics; refusals have a reason; an accepted HMAC
//! login is only possible for a seed signed with the fuzz bot token, and then `auth_date` is
//! within the freshness window.
#![no_main]

use herald_auth::{verify_init_data, TelegramCheck, TELEGRAM_PRODUCTION_KEY};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

/// The bot token the seeds are signed with (fuzz/seeds/init_data).
const BOT_TOKEN: &str = "123456789:fuzz-bot-token-for-herald";
const NOW: u64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let raw = String::from_utf8_lossy(rest);
    let check = if first % 2 == 0 {
        TelegramCheck::Hmac {
            bot_token: BOT_TOKEN,
        }
    } else {
        TelegramCheck::Ed25519 {
            bot_id: 7_342_037_359,
            public_key: TELEGRAM_PRODUCTION_KEY,
        }
    };
    let max_age = Duration::from_secs(3600);
    match verify_init_data(&raw, &check, Some(max_age), NOW) {
        Ok(login) => {
            assert!(login.auth_date <= NOW + 60);
            assert!(NOW.saturating_sub(login.auth_date) <= 3600);
        }
        Err(e) => assert!(!e.reason().is_empty()),
    }
});

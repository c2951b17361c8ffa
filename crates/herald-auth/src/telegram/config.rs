//! The `[auth.telegram]` config section, [`TelegramConfig`]: which check runs, the grants of
//! the token minted at login, and the problems a type cannot express. The checks themselves
//! live in `mod.rs`.

use super::{TelegramCheck, TELEGRAM_PRODUCTION_KEY, TELEGRAM_TEST_KEY};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// The user id substituted for `{user}` when `problems()` validates grant patterns.
const SAMPLE_USER_ID: i64 = 1_234_567_890;

/// The placeholder in grant patterns that is replaced by the Telegram user id.
const USER_PLACEHOLDER: &str = "{user}";

/// The `[auth.telegram]` config section: how Telegram Mini App logins are checked and what
/// the Herald token minted for them grants.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelegramConfig {
    /// The bot token (`<bot id>:<secret>`) for the first-party HMAC check; authoritative when set.
    pub bot_token: Option<herald_core::Secret>,
    /// The numeric bot id for the third-party Ed25519 check, used when no `bot_token` is set.
    pub bot_id: Option<u64>,
    /// Check Ed25519 signatures against Telegram's test-environment key instead of production.
    pub test_environment: bool,
    /// Oldest `auth_date` accepted: data issued longer ago than this is refused.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Lifetime of the Herald token minted at login.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// Subscribe grant patterns for the minted token; `{user}` becomes the Telegram user id.
    pub channels: Vec<String>,
    /// Publish grant patterns for the minted token; `{user}` becomes the Telegram user id.
    pub publish: Vec<String>,
    /// Most login attempts per minute from one remote address (loopback is not counted);
    /// 0 for no limit.
    pub logins_per_minute_per_ip: u32,
}

impl Default for TelegramConfig {
    fn default() -> Self {
        Self {
            bot_token: None,
            bot_id: None,
            test_environment: false,
            max_age: Duration::from_secs(3600),
            token_ttl: Duration::from_secs(3600),
            channels: Vec::new(),
            publish: Vec::new(),
            logins_per_minute_per_ip: 30,
        }
    }
}

impl fmt::Debug for TelegramConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelegramConfig")
            .field("bot_token", &self.bot_token.as_ref().map(|_| "<redacted>"))
            .field("bot_id", &self.bot_id)
            .field("test_environment", &self.test_environment)
            .field("max_age", &self.max_age)
            .field("token_ttl", &self.token_ttl)
            .field("channels", &self.channels)
            .field("publish", &self.publish)
            .field("logins_per_minute_per_ip", &self.logins_per_minute_per_ip)
            .finish()
    }
}

impl TelegramConfig {
    /// Whether Telegram login is enabled (a `bot_token` or a `bot_id` is set).
    pub fn configured(&self) -> bool {
        self.bot_token.is_some() || self.bot_id.is_some()
    }

    /// The check to run: HMAC with the bot token if set, else Ed25519 for `bot_id` against the
    /// production or test key, else none (Telegram login disabled).
    pub fn check(&self) -> Option<TelegramCheck<'_>> {
        if let Some(bot_token) = self.bot_token.as_deref() {
            return Some(TelegramCheck::Hmac { bot_token });
        }
        let bot_id = self.bot_id?;
        let public_key = if self.test_environment {
            TELEGRAM_TEST_KEY
        } else {
            TELEGRAM_PRODUCTION_KEY
        };
        Some(TelegramCheck::Ed25519 { bot_id, public_key })
    }

    /// Every problem with these settings (the bot token itself is never quoted).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let token_bot_id = match self.bot_token.as_deref() {
            Some(token) => {
                let id = token_bot_id(token);
                if id.is_none() {
                    out.push(
                        "auth.telegram.bot_token must look like \"<digits>:<secret>\" \
                         (the token @BotFather gave, without spaces)"
                            .to_owned(),
                    );
                }
                id
            }
            None => None,
        };
        if self.bot_id == Some(0) {
            out.push("auth.telegram.bot_id must be more than 0".to_owned());
        }
        if let (Some(bot_id), Some(from_token)) = (self.bot_id, token_bot_id) {
            if bot_id != from_token {
                out.push(format!(
                    "auth.telegram.bot_id is {bot_id} but the bot_token belongs to bot {from_token}"
                ));
            }
        }
        if self.max_age.is_zero() {
            out.push("auth.telegram.max_age must be more than 0s".to_owned());
        }
        if self.token_ttl.is_zero() {
            out.push("auth.telegram.token_ttl must be more than 0s".to_owned());
        }
        let (channels, publish) = self.grants_for(SAMPLE_USER_ID);
        for (name, patterns) in [("channels", channels), ("publish", publish)] {
            if let Err(e) = herald_core::Grants::new(&patterns) {
                out.push(format!(
                    "auth.telegram.{name} (with {USER_PLACEHOLDER} = {SAMPLE_USER_ID}): {e}"
                ));
            }
        }
        out
    }

    /// The subscribe and publish grant patterns for a Telegram user, with `{user}` replaced by
    /// `user_id`.
    pub fn grants_for(&self, user_id: i64) -> (Vec<String>, Vec<String>) {
        let id = user_id.to_string();
        let fill = |patterns: &[String]| -> Vec<String> {
            patterns
                .iter()
                .map(|p| p.replace(USER_PLACEHOLDER, &id))
                .collect()
        };
        (fill(&self.channels), fill(&self.publish))
    }
}

/// The bot id of a well-formed bot token (`<digits>:<secret>`, secret without whitespace).
fn token_bot_id(token: &str) -> Option<u64> {
    let (id, secret) = token.split_once(':')?;
    let digits_only = !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit());
    let secret_ok =
        !secret.is_empty() && !secret.chars().any(|c| c.is_whitespace() || c.is_control());
    if !digits_only || !secret_ok {
        return None;
    }
    id.parse().ok()
}

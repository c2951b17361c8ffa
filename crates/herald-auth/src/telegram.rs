//! Telegram Mini App `initData` verification: the `[auth.telegram]` config section, the
//! first-party HMAC-SHA256 check (with the bot token) and the third-party Ed25519 check (with
//! only the bot id), both over the decoded raw values exactly as Telegram signs them, plus the
//! `auth_date` freshness rule. Minting Herald tokens for a verified login lives in `token.rs`;
//! reading the `Authorization: tma …` header is the server's job.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::fmt;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// Telegram's production Ed25519 public key for third-party `initData` checks.
pub const TELEGRAM_PRODUCTION_KEY: [u8; 32] =
    hex32("e7bf03a2fa4602af4580703d88dda5bb59f32ed8b02a56c187fe7d34caed242d");

/// Telegram's test-environment Ed25519 public key for third-party `initData` checks.
pub const TELEGRAM_TEST_KEY: [u8; 32] =
    hex32("40055058a4ee38156a06562e52eece92a771bcd8346a8c4615cb7376eddf72ec");

/// Longest `initData` accepted, in bytes; longer input is refused before it is parsed.
pub const MAX_INIT_DATA_BYTES: usize = 16 * 1024;

/// How far in the future `auth_date` may lie (clock skew between Telegram and us).
pub const MAX_FUTURE_SKEW: Duration = Duration::from_secs(60);

/// The user id substituted for `{user}` when `problems()` validates grant patterns.
const SAMPLE_USER_ID: i64 = 1_234_567_890;

/// The placeholder in grant patterns that is replaced by the Telegram user id.
const USER_PLACEHOLDER: &str = "{user}";

/// The constant HMAC key of the first-party check, and the suffix of the Ed25519 message prefix.
const WEB_APP_DATA: &str = "WebAppData";

/// Base64url that takes Telegram's unpadded signatures and padded ones alike.
const BASE64URL_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

type HmacSha256 = Hmac<Sha256>;

/// Decodes 64 hex digits at compile time.
const fn hex32(s: &str) -> [u8; 32] {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => panic!("not a hex digit"),
        }
    }
    let b = s.as_bytes();
    assert!(b.len() == 64, "expected 64 hex digits");
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = (nibble(b[2 * i]) << 4) | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

/// The `[auth.telegram]` config section: how Telegram Mini App logins are checked and what
/// the Herald token minted for them grants.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelegramConfig {
    /// The bot token (`<bot id>:<secret>`) for the first-party HMAC check; authoritative when set.
    pub bot_token: Option<String>,
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

/// How `initData` is authenticated.
#[derive(Clone, Copy)]
pub enum TelegramCheck<'a> {
    /// First-party check: HMAC-SHA256 keyed by the bot token (covers `signature` too).
    Hmac {
        /// The bot token.
        bot_token: &'a str,
    },
    /// Third-party check: Telegram's Ed25519 signature over the data for `bot_id`.
    Ed25519 {
        /// The numeric bot id (the part of the token before `:`).
        bot_id: u64,
        /// Telegram's public key ([`TELEGRAM_PRODUCTION_KEY`] or [`TELEGRAM_TEST_KEY`]).
        public_key: [u8; 32],
    },
}

impl fmt::Debug for TelegramCheck<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hmac { .. } => f
                .debug_struct("Hmac")
                .field("bot_token", &"<redacted>")
                .finish(),
            Self::Ed25519 { bot_id, public_key } => f
                .debug_struct("Ed25519")
                .field("bot_id", bot_id)
                .field("public_key", &hex::encode(public_key))
                .finish(),
        }
    }
}

/// A verified Telegram Mini App launch: the fields Herald uses, as Telegram sent them.
#[derive(Debug, Clone, Serialize)]
pub struct TelegramLogin {
    /// The user who opened the Mini App, if Telegram sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<TelegramUser>,
    /// When Telegram issued the data (Unix seconds).
    pub auth_date: u64,
    /// The Mini App session id for `answerWebAppQuery`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_id: Option<String>,
    /// The `startapp`/`startattach` parameter of the launch link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_param: Option<String>,
    /// The kind of chat the Mini App was opened from (`private`, `group`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_type: Option<String>,
    /// Telegram's global identifier of that chat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_instance: Option<String>,
}

/// Telegram's `WebAppUser` (unknown fields are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelegramUser {
    /// The Telegram user id (may exceed 32 bits).
    pub id: i64,
    /// First name.
    pub first_name: String,
    /// Last name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// Username, without `@`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// IETF language tag of the user's client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language_code: Option<String>,
    /// Whether the user has Telegram Premium.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_premium: Option<bool>,
    /// Whether the user is a bot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_bot: Option<bool>,
    /// URL of the user's profile photo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub photo_url: Option<String>,
    /// Whether the user allowed the bot to message them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allows_write_to_pm: Option<bool>,
    /// Whether the user added the bot to the attachment menu.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_to_attachment_menu: Option<bool>,
}

/// Why `initData` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TelegramError {
    /// Longer than [`MAX_INIT_DATA_BYTES`].
    #[error("initData is {0} bytes; the limit is {MAX_INIT_DATA_BYTES}")]
    TooLarge(usize),
    /// Not a well-formed query string, or a field of the wrong form.
    #[error("initData is malformed: {0}")]
    Malformed(&'static str),
    /// A key appears more than once.
    #[error("initData repeats a key")]
    DuplicateKey,
    /// No `hash` for the first-party check.
    #[error("initData has no hash")]
    MissingHash,
    /// No `signature` for the third-party check.
    #[error("initData has no signature")]
    MissingSignature,
    /// No `auth_date`.
    #[error("initData has no auth_date")]
    MissingAuthDate,
    /// The `hash` does not match the data (or is not 64 hex digits).
    #[error("the initData hash does not match")]
    BadHash,
    /// The `signature` does not verify (or is not a base64url Ed25519 signature).
    #[error("the initData signature does not verify")]
    BadSignature,
    /// Issued longer ago than the allowed age.
    #[error("initData was issued {age}s ago; the limit is {max_age}s")]
    Stale {
        /// Seconds since `auth_date`.
        age: u64,
        /// The allowed age in seconds.
        max_age: u64,
    },
    /// `auth_date` lies too far in the future.
    #[error("initData auth_date is {0}s in the future")]
    FromTheFuture(u64),
    /// `user` is not a `WebAppUser` JSON object.
    #[error("initData user is not a valid WebAppUser: {0}")]
    BadUser(String),
}

impl TelegramError {
    /// A stable snake_case code for logs, metrics labels and API errors.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge(_) => "too_large",
            Self::Malformed(_) => "malformed",
            Self::DuplicateKey => "duplicate_key",
            Self::MissingHash => "missing_hash",
            Self::MissingSignature => "missing_signature",
            Self::MissingAuthDate => "missing_auth_date",
            Self::BadHash => "bad_hash",
            Self::BadSignature => "bad_signature",
            Self::Stale { .. } => "stale",
            Self::FromTheFuture(_) => "from_the_future",
            Self::BadUser(_) => "bad_user",
        }
    }
}

/// Verifies the raw `initData` string with `check` and returns what it says.
///
/// `now` is Unix seconds. `max_age: None` skips the freshness rule entirely (both the age
/// limit and the future-skew limit); it is meant for tests and tools working on old data.
pub fn verify_init_data(
    raw: &str,
    check: &TelegramCheck<'_>,
    max_age: Option<Duration>,
    now: u64,
) -> Result<TelegramLogin, TelegramError> {
    let data = InitData::parse(raw)?;
    match *check {
        TelegramCheck::Hmac { bot_token } => verify_hmac(&data, bot_token)?,
        TelegramCheck::Ed25519 { bot_id, public_key } => {
            verify_ed25519(&data, bot_id, &public_key)?;
        }
    }
    let login = data.login()?;
    if let Some(max_age) = max_age {
        check_fresh(login.auth_date, max_age, now)?;
    }
    Ok(login)
}

/// Builds `initData` from `pairs` and signs it with `bot_token` the way Telegram does (first-
/// party HMAC), appending `hash`. For tests and tools only: real `initData` comes from
/// Telegram. Values are form-encoded; a `hash` among `pairs` is left out.
pub fn sign_init_data(pairs: &[(&str, &str)], bot_token: &str) -> String {
    let mut owned: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| *k != "hash")
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &owned {
        query.append_pair(k, v);
    }
    owned.sort_by(|a, b| a.0.cmp(&b.0));
    let hash = hex::encode(hmac_of(&data_check_string(&owned, &["hash"]), bot_token));
    query.append_pair("hash", &hash);
    query.finish()
}

/// Decoded `initData` pairs, sorted by key, keys unique.
#[derive(Debug)]
struct InitData {
    pairs: Vec<(String, String)>,
}

impl InitData {
    /// Splits on `&` and the first `=`, form-decodes keys and values, refuses duplicates.
    /// Empty segments (`a=1&&b=2`) carry no pair and are skipped.
    fn parse(raw: &str) -> Result<Self, TelegramError> {
        if raw.len() > MAX_INIT_DATA_BYTES {
            return Err(TelegramError::TooLarge(raw.len()));
        }
        let mut pairs = Vec::new();
        for segment in raw.split('&').filter(|s| !s.is_empty()) {
            let Some((k, v)) = segment.split_once('=') else {
                return Err(TelegramError::Malformed("a pair has no `=`"));
            };
            let key = form_decode(k)?;
            if key.is_empty() {
                return Err(TelegramError::Malformed("a pair has an empty key"));
            }
            pairs.push((key, form_decode(v)?));
        }
        pairs.sort_by(|a: &(String, String), b| a.0.cmp(&b.0));
        if pairs.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(TelegramError::DuplicateKey);
        }
        Ok(Self { pairs })
    }

    /// The decoded value of `key`.
    fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.pairs[i].1.as_str())
    }

    /// The fields Herald uses; call only after the data was authenticated.
    fn login(&self) -> Result<TelegramLogin, TelegramError> {
        let auth_date = self
            .get("auth_date")
            .ok_or(TelegramError::MissingAuthDate)?;
        if auth_date.is_empty() || !auth_date.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TelegramError::Malformed("auth_date is not a number"));
        }
        let auth_date = auth_date
            .parse()
            .map_err(|_| TelegramError::Malformed("auth_date is out of range"))?;
        let user = self
            .get("user")
            .map(serde_json::from_str::<TelegramUser>)
            .transpose()
            .map_err(|e| TelegramError::BadUser(e.to_string()))?;
        let owned = |key: &str| self.get(key).map(str::to_owned);
        Ok(TelegramLogin {
            user,
            auth_date,
            query_id: owned("query_id"),
            start_param: owned("start_param"),
            chat_type: owned("chat_type"),
            chat_instance: owned("chat_instance"),
        })
    }
}

/// Form-decodes one key or value: `+` is a space, `%XX` a byte; the result must be UTF-8.
/// Stricter than a lenient URL parser: a stray `%` or invalid UTF-8 is refused, not replaced.
fn form_decode(s: &str) -> Result<String, TelegramError> {
    fn hex_digit(c: Option<u8>) -> Option<u8> {
        match c? {
            c @ b'0'..=b'9' => Some(c - b'0'),
            c @ b'a'..=b'f' => Some(c - b'a' + 10),
            c @ b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(c) = bytes.next() {
        match c {
            b'+' => out.push(b' '),
            b'%' => {
                let (Some(hi), Some(lo)) = (hex_digit(bytes.next()), hex_digit(bytes.next()))
                else {
                    return Err(TelegramError::Malformed("bad percent-encoding"));
                };
                out.push((hi << 4) | lo);
            }
            c => out.push(c),
        }
    }
    String::from_utf8(out).map_err(|_| TelegramError::Malformed("not UTF-8 once decoded"))
}

/// The `key=value` lines of the sorted `pairs` without the `excluded` keys, joined by `\n`.
fn data_check_string(pairs: &[(String, String)], excluded: &[&str]) -> String {
    let mut out = String::new();
    for (k, v) in pairs
        .iter()
        .filter(|(k, _)| !excluded.contains(&k.as_str()))
    {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// HMAC-SHA256(key = HMAC-SHA256(key = "WebAppData", msg = bot_token), msg = data_check_string).
fn hmac_of(data_check_string: &str, bot_token: &str) -> [u8; 32] {
    // Invariant: HMAC takes keys of any length, so `new_from_slice` cannot fail.
    let mut secret =
        HmacSha256::new_from_slice(WEB_APP_DATA.as_bytes()).expect("HMAC accepts any key length");
    secret.update(bot_token.as_bytes());
    let secret = secret.finalize().into_bytes();
    // Invariant: as above.
    let mut mac = HmacSha256::new_from_slice(&secret).expect("HMAC accepts any key length");
    mac.update(data_check_string.as_bytes());
    mac.finalize().into_bytes().into()
}

/// The first-party check: `hash` against the HMAC of everything else (`signature` included).
fn verify_hmac(data: &InitData, bot_token: &str) -> Result<(), TelegramError> {
    let hash = data.get("hash").ok_or(TelegramError::MissingHash)?;
    let mut given = [0u8; 32];
    hex::decode_to_slice(hash, &mut given).map_err(|_| TelegramError::BadHash)?;
    let expected = hmac_of(&data_check_string(&data.pairs, &["hash"]), bot_token);
    if bool::from(expected.ct_eq(&given)) {
        Ok(())
    } else {
        Err(TelegramError::BadHash)
    }
}

/// The third-party check: Telegram's Ed25519 `signature` over `<bot_id>:WebAppData\n<data>`.
fn verify_ed25519(
    data: &InitData,
    bot_id: u64,
    public_key: &[u8; 32],
) -> Result<(), TelegramError> {
    let signature = data
        .get("signature")
        .ok_or(TelegramError::MissingSignature)?;
    let signature: [u8; 64] = BASE64URL_ANY_PADDING
        .decode(signature)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(TelegramError::BadSignature)?;
    let key = VerifyingKey::from_bytes(public_key).map_err(|_| TelegramError::BadSignature)?;
    let message = format!(
        "{bot_id}:{WEB_APP_DATA}\n{}",
        data_check_string(&data.pairs, &["hash", "signature"])
    );
    key.verify_strict(message.as_bytes(), &Signature::from_bytes(&signature))
        .map_err(|_| TelegramError::BadSignature)
}

/// Refuses data older than `max_age` or more than [`MAX_FUTURE_SKEW`] ahead of `now`.
fn check_fresh(auth_date: u64, max_age: Duration, now: u64) -> Result<(), TelegramError> {
    if auth_date > now.saturating_add(MAX_FUTURE_SKEW.as_secs()) {
        return Err(TelegramError::FromTheFuture(auth_date - now));
    }
    let age = now.saturating_sub(auth_date);
    if Duration::from_secs(age) > max_age {
        return Err(TelegramError::Stale {
            age,
            max_age: max_age.as_secs(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HMAC_TOKEN: &str = "5768337691:AAH5YkoiEuPk8-FZa32hStHTqXiLPtAEhx8";
    const HMAC_INIT_DATA: &str = "query_id=AAHdF6IQAAAAAN0XohDhrOrc&user=%7B%22id%22%3A279058397%2C%22first_name%22%3A%22Vladislav%22%2C%22last_name%22%3A%22Kibenko%22%2C%22username%22%3A%22vdkfrost%22%2C%22language_code%22%3A%22ru%22%2C%22is_premium%22%3Atrue%7D&auth_date=1662771648&hash=c501b71e775f74ce10e377dea85a7ea24ecd640b223ea86dfe453e0eaed2e2b2";
    const HMAC_CHECK_STRING: &str = "auth_date=1662771648\nquery_id=AAHdF6IQAAAAAN0XohDhrOrc\nuser={\"id\":279058397,\"first_name\":\"Vladislav\",\"last_name\":\"Kibenko\",\"username\":\"vdkfrost\",\"language_code\":\"ru\",\"is_premium\":true}";
    const HMAC_AUTH_DATE: u64 = 1_662_771_648;

    const ED_BOT_ID: u64 = 7_342_037_359;
    const ED_INIT_DATA: &str = "user=%7B%22id%22%3A279058397%2C%22first_name%22%3A%22Vladislav%20%2B%20-%20%3F%20%5C%2F%22%2C%22last_name%22%3A%22Kibenko%22%2C%22username%22%3A%22vdkfrost%22%2C%22language_code%22%3A%22ru%22%2C%22is_premium%22%3Atrue%2C%22allows_write_to_pm%22%3Atrue%2C%22photo_url%22%3A%22https%3A%5C%2F%5C%2Ft.me%5C%2Fi%5C%2Fuserpic%5C%2F320%5C%2F4FPEE4tmP3ATHa57u6MqTDih13LTOiMoKoLDRG4PnSA.svg%22%7D&chat_instance=8134722200314281151&chat_type=private&auth_date=1733584787&hash=2174df5b000556d044f3f020384e879c8efcab55ddea2ced4eb752e93e7080d6&signature=zL-ucjNyREiHDE8aihFwpfR9aggP2xiAo3NSpfe-p7IbCisNlDKlo7Kb6G4D0Ao2mBrSgEk4maLSdv6MLIlADQ";
    const ED_SIGNATURE: &str =
        "zL-ucjNyREiHDE8aihFwpfR9aggP2xiAo3NSpfe-p7IbCisNlDKlo7Kb6G4D0Ao2mBrSgEk4maLSdv6MLIlADQ";

    const MADE_UP_TOKEN: &str = "123456789:made-up_secret_for_tests";

    fn hmac() -> TelegramCheck<'static> {
        TelegramCheck::Hmac {
            bot_token: HMAC_TOKEN,
        }
    }

    fn ed(public_key: [u8; 32]) -> TelegramCheck<'static> {
        TelegramCheck::Ed25519 {
            bot_id: ED_BOT_ID,
            public_key,
        }
    }

    fn made_up() -> TelegramCheck<'static> {
        TelegramCheck::Hmac {
            bot_token: MADE_UP_TOKEN,
        }
    }

    fn reason(raw: &str, check: &TelegramCheck<'_>) -> &'static str {
        match verify_init_data(raw, check, None, 0) {
            Ok(_) => "ok",
            Err(e) => e.reason(),
        }
    }

    /// `raw` with the pair for `key` removed.
    fn without(raw: &str, key: &str) -> String {
        let prefix = format!("{key}=");
        raw.split('&')
            .filter(|p| !p.starts_with(&prefix))
            .collect::<Vec<_>>()
            .join("&")
    }

    #[test]
    fn public_keys_match_the_spec_hex() {
        assert_eq!(
            hex::encode(TELEGRAM_PRODUCTION_KEY),
            "e7bf03a2fa4602af4580703d88dda5bb59f32ed8b02a56c187fe7d34caed242d"
        );
        assert_eq!(
            hex::encode(TELEGRAM_TEST_KEY),
            "40055058a4ee38156a06562e52eece92a771bcd8346a8c4615cb7376eddf72ec"
        );
    }

    #[test]
    fn hmac_vector_data_check_string_matches_spec() {
        let data = InitData::parse(HMAC_INIT_DATA).unwrap();
        assert_eq!(data_check_string(&data.pairs, &["hash"]), HMAC_CHECK_STRING);
        assert_eq!(
            hex::encode(hmac_of(HMAC_CHECK_STRING, HMAC_TOKEN)),
            "c501b71e775f74ce10e377dea85a7ea24ecd640b223ea86dfe453e0eaed2e2b2"
        );
    }

    #[test]
    fn hmac_vector_verifies() {
        let login = verify_init_data(HMAC_INIT_DATA, &hmac(), None, 0).unwrap();
        assert_eq!(login.auth_date, HMAC_AUTH_DATE);
        assert_eq!(login.query_id.as_deref(), Some("AAHdF6IQAAAAAN0XohDhrOrc"));
        let user = login.user.unwrap();
        assert_eq!(user.id, 279_058_397);
        assert_eq!(user.first_name, "Vladislav");
        assert_eq!(user.username.as_deref(), Some("vdkfrost"));
        assert_eq!(user.is_premium, Some(true));
        assert_eq!(user.is_bot, None);
    }

    #[test]
    fn hmac_vector_accepts_an_uppercase_hash() {
        let upper = HMAC_INIT_DATA.replace(
            "c501b71e775f74ce10e377dea85a7ea24ecd640b223ea86dfe453e0eaed2e2b2",
            "C501B71E775F74CE10E377DEA85A7EA24ECD640B223EA86DFE453E0EAED2E2B2",
        );
        assert_eq!(reason(&upper, &hmac()), "ok");
    }

    #[test]
    fn ed25519_vector_verifies_against_the_production_key() {
        let login = verify_init_data(ED_INIT_DATA, &ed(TELEGRAM_PRODUCTION_KEY), None, 0).unwrap();
        assert_eq!(login.auth_date, 1_733_584_787);
        assert_eq!(login.chat_type.as_deref(), Some("private"));
        assert_eq!(login.chat_instance.as_deref(), Some("8134722200314281151"));
        // The signed value is the raw JSON text, with its literal `\/` escape intact…
        let data = InitData::parse(ED_INIT_DATA).unwrap();
        let raw_user = data.get("user").unwrap();
        assert!(
            raw_user.contains(r#""first_name":"Vladislav + - ? \/""#),
            "{raw_user}"
        );
        // …which JSON then reads as a plain `/`.
        let user = login.user.unwrap();
        assert_eq!(user.first_name, "Vladislav + - ? /");
        assert_eq!(user.allows_write_to_pm, Some(true));
        assert_eq!(
            user.photo_url.as_deref(),
            Some("https://t.me/i/userpic/320/4FPEE4tmP3ATHa57u6MqTDih13LTOiMoKoLDRG4PnSA.svg")
        );
    }

    #[test]
    fn ed25519_vector_fails_against_the_test_key() {
        assert_eq!(
            reason(ED_INIT_DATA, &ed(TELEGRAM_TEST_KEY)),
            "bad_signature"
        );
    }

    #[test]
    fn ed25519_vector_fails_for_another_bot_id() {
        let other = TelegramCheck::Ed25519 {
            bot_id: ED_BOT_ID + 1,
            public_key: TELEGRAM_PRODUCTION_KEY,
        };
        assert_eq!(reason(ED_INIT_DATA, &other), "bad_signature");
    }

    #[test]
    fn ed25519_accepts_a_padded_signature() {
        let padded = ED_INIT_DATA.replace(ED_SIGNATURE, &format!("{ED_SIGNATURE}%3D%3D"));
        assert_eq!(reason(&padded, &ed(TELEGRAM_PRODUCTION_KEY)), "ok");
    }

    #[test]
    fn ed25519_refuses_a_signature_that_is_not_64_bytes() {
        let short = ED_INIT_DATA.replace(ED_SIGNATURE, &ED_SIGNATURE[..80]);
        assert_eq!(
            reason(&short, &ed(TELEGRAM_PRODUCTION_KEY)),
            "bad_signature"
        );
        let junk = ED_INIT_DATA.replace(ED_SIGNATURE, "not*base64");
        assert_eq!(reason(&junk, &ed(TELEGRAM_PRODUCTION_KEY)), "bad_signature");
    }

    #[test]
    fn changed_value_fails_both_checks() {
        let hmac_changed = HMAC_INIT_DATA.replace("Kibenko", "Kibenka");
        assert_eq!(reason(&hmac_changed, &hmac()), "bad_hash");
        let ed_changed = ED_INIT_DATA.replace("Kibenko", "Kibenka");
        assert_eq!(
            reason(&ed_changed, &ed(TELEGRAM_PRODUCTION_KEY)),
            "bad_signature"
        );
        let date_changed = HMAC_INIT_DATA.replace("auth_date=1662771648", "auth_date=1662771649");
        assert_eq!(reason(&date_changed, &hmac()), "bad_hash");
    }

    #[test]
    fn wrong_bot_token_fails() {
        assert_eq!(reason(HMAC_INIT_DATA, &made_up()), "bad_hash");
    }

    #[test]
    fn hash_that_is_not_64_hex_digits_is_bad_hash() {
        for bad in [
            "",
            "c501",
            "zz01b71e775f74ce10e377dea85a7ea24ecd640b223ea86dfe453e0eaed2e2b2",
        ] {
            let raw = format!("{}&hash={bad}", without(HMAC_INIT_DATA, "hash"));
            assert_eq!(reason(&raw, &hmac()), "bad_hash", "{bad:?}");
        }
    }

    #[test]
    fn removed_hash_or_signature_is_missing() {
        assert_eq!(
            reason(&without(HMAC_INIT_DATA, "hash"), &hmac()),
            "missing_hash"
        );
        assert_eq!(
            reason(
                &without(ED_INIT_DATA, "signature"),
                &ed(TELEGRAM_PRODUCTION_KEY)
            ),
            "missing_signature"
        );
        // The third-party check does not need `hash`.
        assert_eq!(
            reason(&without(ED_INIT_DATA, "hash"), &ed(TELEGRAM_PRODUCTION_KEY)),
            "ok"
        );
    }

    #[test]
    fn duplicated_key_is_refused() {
        let dup = format!("{HMAC_INIT_DATA}&query_id=AAHdF6IQAAAAAN0XohDhrOrc");
        assert_eq!(reason(&dup, &hmac()), "duplicate_key");
        let dup = format!("auth_date=1&{ED_INIT_DATA}");
        assert_eq!(reason(&dup, &ed(TELEGRAM_PRODUCTION_KEY)), "duplicate_key");
        let dup_hash = format!("{HMAC_INIT_DATA}&hash=00");
        assert_eq!(reason(&dup_hash, &hmac()), "duplicate_key");
    }

    #[test]
    fn freshness_refuses_stale_and_future_data() {
        let hour = Some(Duration::from_secs(3600));
        let at = |now| verify_init_data(HMAC_INIT_DATA, &hmac(), hour, now);
        assert_eq!(
            at(HMAC_AUTH_DATE + 7200).unwrap_err(),
            TelegramError::Stale {
                age: 7200,
                max_age: 3600
            }
        );
        assert_eq!(
            at(HMAC_AUTH_DATE - 120).unwrap_err(),
            TelegramError::FromTheFuture(120)
        );
        assert!(at(HMAC_AUTH_DATE + 10).is_ok());
        assert!(at(HMAC_AUTH_DATE + 3600).is_ok());
        assert!(at(HMAC_AUTH_DATE - 60).is_ok());
        assert_eq!(at(HMAC_AUTH_DATE + 3601).unwrap_err().reason(), "stale");
        assert_eq!(at(0).unwrap_err().reason(), "from_the_future");
    }

    #[test]
    fn generated_init_data_round_trips_with_plus_and_encoded_plus() {
        let user = r#"{"id":9007199254740993,"first_name":"Ann + Bob","username":"a_b","is_bot":false,"extra":{"x":[1]}}"#;
        let raw = sign_init_data(
            &[
                ("query_id", "q1"),
                ("user", user),
                ("start_param", "a b+c"),
                ("signature", "whatever"),
                ("auth_date", "1700000000"),
            ],
            MADE_UP_TOKEN,
        );
        assert!(raw.contains("start_param=a+b%2Bc"), "{raw}");
        let login = verify_init_data(&raw, &made_up(), None, 0).unwrap();
        assert_eq!(login.start_param.as_deref(), Some("a b+c"));
        assert_eq!(login.query_id.as_deref(), Some("q1"));
        assert_eq!(login.auth_date, 1_700_000_000);
        let user = login.user.unwrap();
        assert_eq!(user.id, 9_007_199_254_740_993);
        assert_eq!(user.first_name, "Ann + Bob");
        assert_eq!(user.is_bot, Some(false));

        // Percent-encoding spaces as %20 (as Telegram does) decodes to the same values.
        let percent = raw.replace('+', "%20");
        assert_eq!(reason(&percent, &made_up()), "ok");
        // `+` and `%2B` are different characters once decoded.
        let swapped = raw.replace("a+b%2Bc", "a%2Bb%2Bc");
        assert_eq!(reason(&swapped, &made_up()), "bad_hash");
        // The HMAC covers `signature`.
        let resigned = raw.replace("signature=whatever", "signature=whatevex");
        assert_eq!(reason(&resigned, &made_up()), "bad_hash");
    }

    #[test]
    fn generated_init_data_fails_without_auth_date_or_with_a_bad_one() {
        let raw = sign_init_data(&[("query_id", "q1")], MADE_UP_TOKEN);
        assert_eq!(reason(&raw, &made_up()), "missing_auth_date");
        for bad in ["", "abc", "+5", "-1", "99999999999999999999999"] {
            let raw = sign_init_data(&[("auth_date", bad)], MADE_UP_TOKEN);
            assert_eq!(reason(&raw, &made_up()), "malformed", "{bad:?}");
        }
    }

    #[test]
    fn generated_init_data_with_a_bad_user_is_refused() {
        for bad in ["not json", "{}", r#"{"id":"7","first_name":"x"}"#, "[1]"] {
            let raw = sign_init_data(&[("auth_date", "1"), ("user", bad)], MADE_UP_TOKEN);
            assert_eq!(reason(&raw, &made_up()), "bad_user", "{bad:?}");
        }
    }

    #[test]
    fn unknown_keys_are_signed_and_ignored() {
        let raw = sign_init_data(
            &[("auth_date", "1"), ("receiver", "{}"), ("zz_new", "v")],
            MADE_UP_TOKEN,
        );
        assert_eq!(reason(&raw, &made_up()), "ok");
        let changed = raw.replace("zz_new=v", "zz_new=w");
        assert_eq!(reason(&changed, &made_up()), "bad_hash");
    }

    #[test]
    fn oversize_input_is_too_large() {
        let big = format!("{HMAC_INIT_DATA}&pad={}", "a".repeat(MAX_INIT_DATA_BYTES));
        assert_eq!(
            verify_init_data(&big, &hmac(), None, 0).unwrap_err(),
            TelegramError::TooLarge(big.len())
        );
        let limit = "a=".to_owned() + &"b".repeat(MAX_INIT_DATA_BYTES - 2);
        assert_ne!(reason(&limit, &hmac()), "too_large");
    }

    #[test]
    fn garbage_never_panics() {
        let garbage = [
            "",
            "%%%&&==",
            "&",
            "=",
            "==",
            "a",
            "%",
            "%4",
            "%zz=1",
            "a=%ff%fe",
            "hash=&hash",
            "signature=%3D%3D%3D&hash=",
            "auth_date=1&hash=c501b71e775f74ce10e377dea85a7ea24ecd640b223ea86dfe453e0eaed2e2b2",
            "\u{0}=\u{0}",
            "é=ü&ü=é",
            "signature=====",
        ];
        for g in garbage {
            for check in [hmac(), ed(TELEGRAM_PRODUCTION_KEY)] {
                assert!(
                    verify_init_data(g, &check, Some(Duration::from_secs(1)), 0).is_err(),
                    "{g:?}"
                );
            }
        }
        assert_eq!(reason("%%%&&==", &hmac()), "malformed");
    }

    #[test]
    fn decoding_is_strict_and_skips_empty_segments() {
        assert_eq!(form_decode("a+b%2Bc%20d").unwrap(), "a b+c d");
        assert_eq!(form_decode("%E2%9C%93").unwrap(), "\u{2713}");
        assert!(form_decode("%").is_err());
        assert!(form_decode("%G0").is_err());
        assert!(form_decode("%ff").is_err());
        let data = InitData::parse("&b=2&&a==1&").unwrap();
        assert_eq!(
            data.pairs,
            [("a".into(), "=1".into()), ("b".into(), "2".into())]
        );
        assert_eq!(InitData::parse("a=1&b").unwrap_err().reason(), "malformed");
        assert_eq!(InitData::parse("=1").unwrap_err().reason(), "malformed");
    }

    #[test]
    fn every_error_has_a_stable_reason() {
        let all = [
            (TelegramError::TooLarge(1), "too_large"),
            (TelegramError::Malformed("x"), "malformed"),
            (TelegramError::DuplicateKey, "duplicate_key"),
            (TelegramError::MissingHash, "missing_hash"),
            (TelegramError::MissingSignature, "missing_signature"),
            (TelegramError::MissingAuthDate, "missing_auth_date"),
            (TelegramError::BadHash, "bad_hash"),
            (TelegramError::BadSignature, "bad_signature"),
            (TelegramError::Stale { age: 2, max_age: 1 }, "stale"),
            (TelegramError::FromTheFuture(1), "from_the_future"),
            (TelegramError::BadUser("x".into()), "bad_user"),
        ];
        for (e, code) in all {
            assert_eq!(e.reason(), code);
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn login_serializes_without_missing_fields() {
        let login = verify_init_data(HMAC_INIT_DATA, &hmac(), None, 0).unwrap();
        let json = serde_json::to_value(&login).unwrap();
        assert_eq!(json["auth_date"], 1_662_771_648);
        assert_eq!(json["user"]["first_name"], "Vladislav");
        assert!(json.get("start_param").is_none());
        assert!(json["user"].get("photo_url").is_none());
    }

    #[test]
    fn telegram_config_defaults() {
        let c = TelegramConfig::default();
        assert_eq!(c.bot_token, None);
        assert_eq!(c.bot_id, None);
        assert!(!c.test_environment);
        assert_eq!(c.max_age, Duration::from_secs(3600));
        assert_eq!(c.token_ttl, Duration::from_secs(3600));
        assert!(c.channels.is_empty() && c.publish.is_empty());
        assert!(!c.configured());
        assert!(c.check().is_none());
        assert!(c.problems().is_empty());
        let parsed: TelegramConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed, c);
    }

    #[test]
    fn telegram_config_parses_durations_and_refuses_unknown_keys() {
        let c: TelegramConfig =
            serde_json::from_str(r#"{"bot_id": 7, "max_age": "5m", "token_ttl": "1day"}"#).unwrap();
        assert_eq!(c.max_age, Duration::from_secs(300));
        assert_eq!(c.token_ttl, Duration::from_secs(86_400));
        assert!(serde_json::from_str::<TelegramConfig>(r#"{"bot_tokn": "1:a"}"#).is_err());
    }

    #[test]
    fn telegram_config_chooses_the_check() {
        let mut c = TelegramConfig {
            bot_id: Some(ED_BOT_ID),
            ..TelegramConfig::default()
        };
        assert!(c.configured());
        assert!(matches!(
            c.check(),
            Some(TelegramCheck::Ed25519 { bot_id: ED_BOT_ID, public_key }) if public_key == TELEGRAM_PRODUCTION_KEY
        ));
        c.test_environment = true;
        assert!(matches!(
            c.check(),
            Some(TelegramCheck::Ed25519 { public_key, .. }) if public_key == TELEGRAM_TEST_KEY
        ));
        c.bot_token = Some(HMAC_TOKEN.to_owned());
        assert!(matches!(
            c.check(),
            Some(TelegramCheck::Hmac {
                bot_token: HMAC_TOKEN
            })
        ));
    }

    #[test]
    fn telegram_config_problems() {
        let c = TelegramConfig {
            bot_token: Some("not-a-token".to_owned()),
            max_age: Duration::ZERO,
            token_ttl: Duration::ZERO,
            channels: vec!["user#{user}".to_owned(), "bad channel".to_owned()],
            publish: vec!["chat:{user}:*".to_owned()],
            ..TelegramConfig::default()
        };
        let problems = c.problems();
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(problems.iter().all(|p| p.starts_with("auth.telegram.")));
        assert!(problems.iter().any(|p| p.contains("bot_token")));
        assert!(problems.iter().any(|p| p.contains("max_age")));
        assert!(problems.iter().any(|p| p.contains("token_ttl")));
        assert!(problems
            .iter()
            .any(|p| p.contains("auth.telegram.channels")));
        assert!(!problems.iter().any(|p| p.contains("not-a-token")));

        for bad in ["", ":abc", "12:", "1a:abc", "12:ab c", "12:abc\n"] {
            let c = TelegramConfig {
                bot_token: Some(bad.to_owned()),
                ..TelegramConfig::default()
            };
            assert_eq!(c.problems().len(), 1, "{bad:?}");
        }

        let mismatch = TelegramConfig {
            bot_token: Some(HMAC_TOKEN.to_owned()),
            bot_id: Some(ED_BOT_ID),
            ..TelegramConfig::default()
        };
        assert_eq!(mismatch.problems().len(), 1);
        let matching = TelegramConfig {
            bot_token: Some(HMAC_TOKEN.to_owned()),
            bot_id: Some(5_768_337_691),
            ..TelegramConfig::default()
        };
        assert!(matching.problems().is_empty(), "{:?}", matching.problems());
    }

    #[test]
    fn telegram_config_grants_for_replaces_user() {
        let c = TelegramConfig {
            channels: vec!["user#{user}".to_owned(), "news:*".to_owned()],
            publish: vec!["chat:{user}".to_owned()],
            ..TelegramConfig::default()
        };
        let (channels, publish) = c.grants_for(42);
        assert_eq!(channels, ["user#42", "news:*"]);
        assert_eq!(publish, ["chat:42"]);
        assert!(c.problems().is_empty());
    }

    #[test]
    fn debug_output_redacts_the_bot_token() {
        let c = TelegramConfig {
            bot_token: Some(HMAC_TOKEN.to_owned()),
            ..TelegramConfig::default()
        };
        let shown = format!("{c:?} {:?}", c.check().unwrap());
        assert!(shown.contains("<redacted>"));
        assert!(!shown.contains("AAH5Yk"), "{shown}");
    }
}

//! Telegram Mini App `initData` verification: the `[auth.telegram]` config section, the
//! first-party HMAC-SHA256 check (with the bot token) and the third-party Ed25519 check (with
//! only the bot id), both over the decoded raw values exactly as Telegram signs them, plus the
//! `auth_date` freshness rule. Minting Herald tokens for a verified login lives in `token/mint.rs`;
//! reading the `Authorization: tma …` header is the server's job.

mod config;

pub use config::TelegramConfig;

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
mod tests;

//! The claims of a verified token, each checked by hand so an error can name it. The same
//! checks vet a [`super::MintRequest`]. Signatures and keys are not this file's concern.

use super::error::bad_claim;
use super::{TokenError, MAX_TOKEN_INFO_BYTES, MAX_TOKEN_USER_BYTES};
use herald_core::Grants;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::sync::Arc;

/// The claims Herald reads; each is typed by hand so errors can name it.
#[derive(Deserialize)]
pub(super) struct Claims {
    pub(super) sub: Option<Value>,
    pub(super) exp: Option<Value>,
    pub(super) nbf: Option<Value>,
    pub(super) iat: Option<Value>,
    pub(super) auth_time: Option<Value>,
    pub(super) iss: Option<Value>,
    pub(super) aud: Option<Value>,
    pub(super) info: Option<Value>,
    pub(super) channels: Option<Value>,
    pub(super) publish: Option<Value>,
}

impl Claims {
    pub(super) fn parse(payload: &[u8]) -> Result<Self, TokenError> {
        if first_non_space(payload) != Some(b'{') {
            return Err(bad_claim("payload", "is not a JSON object"));
        }
        serde_json::from_slice(payload).map_err(|err| {
            let mut text = err.to_string();
            text.truncate(200);
            bad_claim("payload", format!("is not a valid JSON object: {text}"))
        })
    }
}

pub(super) fn first_non_space(bytes: &[u8]) -> Option<u8> {
    bytes.iter().copied().find(|b| !b.is_ascii_whitespace())
}

#[derive(Clone, Copy)]
pub(super) enum Rounding {
    Down,
    Up,
}

/// A NumericDate claim as whole Unix seconds; fractions round so comparisons with a whole
/// `now` stay exact.
pub(super) fn numeric_date(
    claim: &'static str,
    value: Option<&Value>,
    rounding: Rounding,
) -> Result<Option<u64>, TokenError> {
    let number = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n,
        Some(_) => return Err(bad_claim(claim, "must be a number (Unix seconds)")),
    };
    if let Some(whole) = number.as_u64() {
        return Ok(Some(whole));
    }
    match number.as_f64() {
        Some(f) if f.is_finite() && f >= 0.0 => {
            let whole = match rounding {
                Rounding::Down => f.floor(),
                Rounding::Up => f.ceil(),
            };
            // Saturates above u64::MAX, which is far beyond any real date.
            Ok(Some(whole as u64))
        }
        _ => Err(bad_claim(
            claim,
            "must be a non-negative number (Unix seconds)",
        )),
    }
}

pub(super) fn audiences(value: Option<&Value>) -> Result<Vec<&str>, TokenError> {
    const PROBLEM: &str = "must be a string or an array of strings";
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(aud)) => Ok(vec![aud.as_str()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().ok_or_else(|| bad_claim("aud", PROBLEM)))
            .collect(),
        Some(_) => Err(bad_claim("aud", PROBLEM)),
    }
}

pub(super) fn check_user(user: &str) -> Result<(), TokenError> {
    if user.is_empty() {
        return Err(bad_claim("sub", "must not be empty"));
    }
    if user.len() > MAX_TOKEN_USER_BYTES {
        return Err(bad_claim(
            "sub",
            format!("is longer than {MAX_TOKEN_USER_BYTES} bytes"),
        ));
    }
    if user.chars().any(char::is_control) {
        return Err(bad_claim("sub", "must not contain control characters"));
    }
    Ok(())
}

/// The `info` claim as compact JSON.
pub(super) fn info(value: Option<&Value>) -> Result<Option<Arc<RawValue>>, TokenError> {
    let object = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(object @ Value::Object(_)) => object,
        Some(_) => return Err(bad_claim("info", "must be a JSON object")),
    };
    let text = object.to_string();
    if text.len() > MAX_TOKEN_INFO_BYTES {
        return Err(bad_claim(
            "info",
            format!(
                "is {} bytes of JSON; at most {MAX_TOKEN_INFO_BYTES} are allowed",
                text.len()
            ),
        ));
    }
    let raw = RawValue::from_string(text).map_err(|err| bad_claim("info", err.to_string()))?;
    Ok(Some(Arc::from(raw)))
}

pub(super) fn grants_claim(
    claim: &'static str,
    value: Option<&Value>,
) -> Result<Grants, TokenError> {
    const PROBLEM: &str = "must be an array of channel patterns (strings)";
    let items = match value {
        None | Some(Value::Null) => return Ok(Grants::default()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(bad_claim(claim, PROBLEM)),
    };
    let patterns = items
        .iter()
        .map(|item| item.as_str().ok_or_else(|| bad_claim(claim, PROBLEM)))
        .collect::<Result<Vec<&str>, _>>()?;
    grants(claim, &patterns)
}

pub(super) fn grants<S: AsRef<str>>(
    claim: &'static str,
    patterns: &[S],
) -> Result<Grants, TokenError> {
    Grants::new(patterns).map_err(|err| bad_claim(claim, format!("is invalid: {err}")))
}

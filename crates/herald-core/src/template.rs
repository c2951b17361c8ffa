//! Templates that name a channel or an event from a JSON document (a webhook body, a NOTIFY
//! payload, a Twitch event): `donations:{streamer.id}` fills `{streamer.id}` with that field's
//! text or number.

use serde_json::Value;

/// Checks a template: braces paired, fields named, not empty.
pub fn check(t: &str) -> Result<(), String> {
    if t.is_empty() {
        return Err("must not be empty".into());
    }
    let mut rest = t;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return Err(format!("a '}}' without its '{{' in {t:?}"));
        }
        let Some(close) = rest[open..].find('}') else {
            return Err(format!("a '{{' without its '}}' in {t:?}"));
        };
        let path = &rest[open + 1..open + close];
        if path.is_empty() || path.contains('{') {
            return Err(format!("an empty or nested field in {t:?}"));
        }
        rest = &rest[open + close + 1..];
    }
    Ok(())
}

/// The body's value at `path` (`a.b.c`; the whole body when empty).
pub fn field<'a>(body: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(body);
    }
    path.split('.').try_fold(body, |v, k| v.get(k))
}

/// Fills `{field}`s of `template` from `body`.
pub fn render(template: &str, body: &Value) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("bad template {template:?}"))?;
        let path = &rest[open + 1..open + close];
        match field(body, path) {
            Some(Value::String(s)) => out.push_str(s),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => out.push_str(&v.to_string()),
            _ => return Err(format!("the body has no text or number at `{path}`")),
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn templates_fill_from_the_body_and_bad_ones_are_named() {
        let body = json!({"streamer": {"id": 42, "login": "kai"}, "kind": "tip"});
        assert_eq!(
            render("donations:{streamer.login}-{streamer.id}", &body).unwrap(),
            "donations:kai-42"
        );
        assert_eq!(render("{kind}", &body).unwrap(), "tip");
        assert!(render("{missing}", &body).is_err());
        assert!(render("{streamer}", &body).is_err());
        assert!(check("a:{b}").is_ok());
        assert!(check("a:{b").is_err());
        assert!(check("a:}b").is_err());
        assert!(check("a:{}").is_err());
        assert_eq!(field(&body, "streamer.id"), Some(&json!(42)));
        assert_eq!(field(&body, ""), Some(&body));
    }
}

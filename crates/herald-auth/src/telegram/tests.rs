//! Unit tests of Telegram `initData` verification and of `[auth.telegram]`, against Telegram's
//! published examples and data signed here.

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
    c.bot_token = Some(HMAC_TOKEN.into());
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
        bot_token: Some("not-a-token".into()),
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
            bot_token: Some(bad.into()),
            ..TelegramConfig::default()
        };
        assert_eq!(c.problems().len(), 1, "{bad:?}");
    }

    let mismatch = TelegramConfig {
        bot_token: Some(HMAC_TOKEN.into()),
        bot_id: Some(ED_BOT_ID),
        ..TelegramConfig::default()
    };
    assert_eq!(mismatch.problems().len(), 1);
    let matching = TelegramConfig {
        bot_token: Some(HMAC_TOKEN.into()),
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
        bot_token: Some(HMAC_TOKEN.into()),
        ..TelegramConfig::default()
    };
    let shown = format!("{c:?} {:?}", c.check().unwrap());
    assert!(shown.contains("<redacted>"));
    assert!(!shown.contains("AAH5Yk"), "{shown}");
}

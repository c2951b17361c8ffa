//! Tests of the claim checks in `claims.rs`, through verified tokens.

use super::*;

#[test]
fn claims_become_the_identity() {
    let v = verifier(&hmac_config());
    let token = sign(
        Algorithm::HS256,
        &hmac_signer(SECRET),
        None,
        &with(json!({
            "info": {"name": "Ada", "tags": [1, 2]},
            "channels": ["room:*", "news"],
            "publish": ["room:42"],
            "iat": NOW,
            "nbf": NOW - 10,
            "custom": {"ignored": true},
        })),
    );
    let identity = v.verify(&token, NOW).unwrap();
    assert_eq!(&*identity.user, "user-1");
    assert_eq!(
        identity.info.unwrap().get(),
        r#"{"name":"Ada","tags":[1,2]}"#
    );
    let subscribe: Vec<&str> = identity.subscribe.patterns().collect();
    assert_eq!(subscribe, ["room:*", "news"]);
    let publish: Vec<&str> = identity.publish.patterns().collect();
    assert_eq!(publish, ["room:42"]);
    assert_eq!(identity.expires_at, Some(NOW + 600));
}

#[test]
fn expired_tokens_are_refused_beyond_the_leeway() {
    let v = verifier(&hmac_config());
    let at = |exp: u64| {
        sign(
            Algorithm::HS256,
            &hmac_signer(SECRET),
            None,
            &with(json!({"exp": exp})),
        )
    };
    assert!(v.verify(&at(NOW), NOW).is_ok());
    assert!(v.verify(&at(NOW - 5), NOW).is_ok(), "within the 5 s leeway");
    assert_eq!(
        v.verify(&at(NOW - 6), NOW).unwrap_err(),
        TokenError::Expired { exp: NOW - 6 }
    );
    let fractional = sign(
        Algorithm::HS256,
        &hmac_signer(SECRET),
        None,
        &with(json!({"exp": (NOW - 5) as f64 + 0.5})),
    );
    assert!(v.verify(&fractional, NOW).is_ok());
    let fractional = sign(
        Algorithm::HS256,
        &hmac_signer(SECRET),
        None,
        &with(json!({"exp": (NOW - 6) as f64 + 0.5})),
    );
    assert_eq!(refusal(&v, &fractional), "expired");
}

#[test]
fn tokens_before_nbf_are_refused() {
    let v = verifier(&hmac_config());
    let at = |nbf: u64| {
        sign(
            Algorithm::HS256,
            &hmac_signer(SECRET),
            None,
            &with(json!({"nbf": nbf})),
        )
    };
    assert!(v.verify(&at(NOW + 5), NOW).is_ok(), "within the 5 s leeway");
    assert_eq!(
        v.verify(&at(NOW + 6), NOW).unwrap_err(),
        TokenError::NotYetValid { nbf: NOW + 6 }
    );
}

#[test]
fn the_issuer_must_match_when_configured() {
    let v = verifier(&TokenConfig {
        issuer: Some("https://auth.example".into()),
        ..hmac_config()
    });
    let signed = |claims: Value| sign(Algorithm::HS256, &hmac_signer(SECRET), None, &claims);
    assert!(v
        .verify(&signed(with(json!({"iss": "https://auth.example"}))), NOW)
        .is_ok());
    assert_eq!(
        refusal(&v, &signed(with(json!({"iss": "https://evil.example"})))),
        "wrong_issuer"
    );
    assert_eq!(refusal(&v, &signed(claims())), "wrong_issuer");
    assert_eq!(refusal(&v, &signed(with(json!({"iss": 7})))), "bad_claims");
}

#[test]
fn the_audience_must_be_included_when_configured() {
    let v = verifier(&TokenConfig {
        audience: Some("herald".into()),
        ..hmac_config()
    });
    let signed = |claims: Value| sign(Algorithm::HS256, &hmac_signer(SECRET), None, &claims);
    assert!(v
        .verify(&signed(with(json!({"aud": "herald"}))), NOW)
        .is_ok());
    assert!(v
        .verify(&signed(with(json!({"aud": ["api", "herald"]}))), NOW)
        .is_ok());
    assert_eq!(
        refusal(&v, &signed(with(json!({"aud": "api"})))),
        "wrong_audience"
    );
    assert_eq!(
        refusal(&v, &signed(with(json!({"aud": []})))),
        "wrong_audience"
    );
    assert_eq!(refusal(&v, &signed(claims())), "wrong_audience");
    assert_eq!(
        refusal(&v, &signed(with(json!({"aud": [1]})))),
        "bad_claims"
    );

    // A token may carry an audience nobody configured.
    let open = verifier(&hmac_config());
    assert!(open
        .verify(&signed(with(json!({"aud": "api"}))), NOW)
        .is_ok());
}

#[test]
fn tokens_without_exp_are_refused_unless_allowed() {
    let token = sign(
        Algorithm::HS256,
        &hmac_signer(SECRET),
        None,
        &without("exp"),
    );
    assert_eq!(refusal(&verifier(&hmac_config()), &token), "missing_exp");
    let lenient = verifier(&TokenConfig {
        require_exp: false,
        ..hmac_config()
    });
    assert_eq!(lenient.verify(&token, NOW).unwrap().expires_at, None);
}

#[test]
fn bad_claims_name_the_claim() {
    let v = verifier(&hmac_config());
    let cases = [
        (with(json!({"channels": "x"})), "channels"),
        (with(json!({"channels": ["bad channel"]})), "channels"),
        (with(json!({"channels": [1]})), "channels"),
        (with(json!({"publish": ["ro*m"]})), "publish"),
        (without("sub"), "sub"),
        (with(json!({"sub": 5})), "sub"),
        (with(json!({"sub": ""})), "sub"),
        (with(json!({"sub": "a\nb"})), "sub"),
        (
            with(json!({"sub": "u".repeat(MAX_TOKEN_USER_BYTES + 1)})),
            "sub",
        ),
        (with(json!({"info": "text"})), "info"),
        (with(json!({"info": [1]})), "info"),
        (
            with(json!({"info": {"x": "y".repeat(MAX_TOKEN_INFO_BYTES)}})),
            "info",
        ),
        (with(json!({"exp": "soon"})), "exp"),
        (with(json!({"exp": -1})), "exp"),
        (with(json!({"nbf": true})), "nbf"),
        (with(json!({"iat": "now"})), "iat"),
    ];
    for (claims, claim) in cases {
        let token = sign(Algorithm::HS256, &hmac_signer(SECRET), None, &claims);
        match v.verify(&token, NOW) {
            Err(TokenError::BadClaims { claim: named, .. }) => assert_eq!(named, claim),
            other => panic!("{claims}: {other:?}"),
        }
    }
    let long_enough = with(json!({"sub": "u".repeat(MAX_TOKEN_USER_BYTES)}));
    let token = sign(Algorithm::HS256, &hmac_signer(SECRET), None, &long_enough);
    assert!(v.verify(&token, NOW).is_ok());
    let err = v
        .verify(
            &hs256_raw(r#"{"alg":"HS256"}"#, r#"{"sub":"a","sub":"b","exp":1}"#),
            NOW,
        )
        .unwrap_err();
    assert_eq!(err.reason(), "bad_claims");
    let token = sign(
        Algorithm::HS256,
        &hmac_signer(SECRET),
        None,
        &with(json!({"channels": ["bad channel"]})),
    );
    let message = v.verify(&token, NOW).unwrap_err().to_string();
    assert!(
        message.contains("channels") && message.contains("bad channel"),
        "{message}"
    );
}

//! Tests of signature checks and key choice in `verify.rs`, and of refusal reasons.

use super::*;
use crate::token::error::{bad_claim, malformed};
use crate::token::keys::single_pem_block;

#[test]
fn hmac_tokens_verify_with_each_hash_size() {
    let v = verifier(&hmac_config());
    for alg in HMAC_ALGORITHMS {
        let token = sign(alg, &hmac_signer(SECRET), None, &claims());
        let identity = v.verify(&token, NOW).unwrap();
        assert_eq!(&*identity.user, "user-1", "{alg:?}");
        assert_eq!(identity.expires_at, Some(NOW + 600));
    }
}

#[test]
fn rsa_tokens_verify_with_an_rsa_public_key_file() {
    let v = verifier(&keys_config(&["rsa.pub.pem"]));
    for alg in [Algorithm::RS256, Algorithm::PS256] {
        let token = sign(alg, &rsa_signer(), None, &claims());
        assert_eq!(&*v.verify(&token, NOW).unwrap().user, "user-1", "{alg:?}");
    }
}

#[test]
fn es256_tokens_verify_with_an_ec_public_key_file() {
    let v = verifier(&keys_config(&["ec.pub.pem"]));
    let token = sign(Algorithm::ES256, &ec_signer(), None, &claims());
    assert_eq!(&*v.verify(&token, NOW).unwrap().user, "user-1");
}

#[test]
fn eddsa_tokens_verify_with_an_ed25519_public_key_file() {
    let v = verifier(&keys_config(&["ed25519.pub.pem"]));
    let token = sign(Algorithm::EdDSA, &ed_signer(), None, &claims());
    assert_eq!(&*v.verify(&token, NOW).unwrap().user, "user-1");
}

#[test]
fn public_keys_only_verify_their_own_family() {
    let v = verifier(&keys_config(&[
        "rsa.pub.pem",
        "ec.pub.pem",
        "ed25519.pub.pem",
    ]));
    for (alg, key) in [
        (Algorithm::RS256, rsa_signer()),
        (Algorithm::ES256, ec_signer()),
        (Algorithm::EdDSA, ed_signer()),
    ] {
        let token = sign(alg, &key, None, &claims());
        assert!(v.verify(&token, NOW).is_ok(), "{alg:?}");
    }
    // ES384 needs a P-384 key, which is not configured.
    let only_rsa = verifier(&keys_config(&["rsa.pub.pem"]));
    let token = sign(Algorithm::ES256, &ec_signer(), None, &claims());
    assert_eq!(refusal(&only_rsa, &token), "unsupported_algorithm");
}

#[test]
fn a_jwks_kid_selects_exactly_one_key() {
    let v = verifier(&jwks_config());
    let rsa = sign(Algorithm::RS256, &rsa_signer(), Some("rsa-1"), &claims());
    assert!(v.verify(&rsa, NOW).is_ok());
    let ec = sign(Algorithm::ES256, &ec_signer(), Some("ec-1"), &claims());
    assert!(v.verify(&ec, NOW).is_ok());

    let unknown = sign(Algorithm::RS256, &rsa_signer(), Some("rsa-2"), &claims());
    assert_eq!(refusal(&v, &unknown), "unknown_key");
    // The EC key signed, but the header names the RSA key.
    let mislabelled = sign(Algorithm::ES256, &ec_signer(), Some("rsa-1"), &claims());
    assert_eq!(refusal(&v, &mislabelled), "unknown_key");
    // The RSA key signed, but the header names the EC key.
    let mislabelled = sign(Algorithm::RS256, &rsa_signer(), Some("ec-1"), &claims());
    assert_eq!(refusal(&v, &mislabelled), "unknown_key");
    // The JWKs' algs (RS256, ES256) are all this set verifies.
    let other_alg = sign(Algorithm::RS512, &rsa_signer(), Some("rsa-1"), &claims());
    assert_eq!(refusal(&v, &other_alg), "unsupported_algorithm");

    // Without a kid every key of the family is tried.
    let no_kid = sign(Algorithm::RS256, &rsa_signer(), None, &claims());
    assert!(v.verify(&no_kid, NOW).is_ok());
}

#[test]
fn a_kid_is_ignored_without_a_jwks() {
    let v = verifier(&keys_config(&["rsa.pub.pem"]));
    let token = sign(Algorithm::RS256, &rsa_signer(), Some("whatever"), &claims());
    assert!(v.verify(&token, NOW).is_ok());
    let hmac = verifier(&hmac_config());
    let token = sign(
        Algorithm::HS256,
        &hmac_signer(SECRET),
        Some("k1"),
        &claims(),
    );
    assert!(hmac.verify(&token, NOW).is_ok());
}

#[test]
fn alg_none_is_refused_in_any_case() {
    let v = verifier(&TokenConfig {
        require_exp: false,
        ..hmac_config()
    });
    let payload = b64(claims().to_string());
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = b64(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
        for signature in ["", "c2ln"] {
            let token = format!("{header}.{payload}.{signature}");
            assert_eq!(refusal(&v, &token), "unsupported_algorithm", "{token}");
        }
    }
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    let pem = key_bytes("rsa.pub.pem");
    let forged = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&pem),
        None,
        &claims(),
    );
    let keys_only = verifier(&keys_config(&["rsa.pub.pem"]));
    assert_eq!(refusal(&keys_only, &forged), "unsupported_algorithm");
    // Even with HS256 allowed, HS256 is checked against the HMAC secrets only.
    let both = verifier(&TokenConfig {
        public_keys: vec![key_path("rsa.pub.pem")],
        ..hmac_config()
    });
    assert_eq!(refusal(&both, &forged), "bad_signature");
    // The DER of the key as a secret fares no better.
    let der = single_pem_block(std::str::from_utf8(&pem).unwrap())
        .unwrap()
        .1;
    let forged = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&der),
        None,
        &claims(),
    );
    assert_eq!(refusal(&both, &forged), "bad_signature");
    // Listing HS256 explicitly without a secret is a configuration error.
    let errors = TokenVerifier::new(&TokenConfig {
        algorithms: vec!["HS256".into(), "RS256".into()],
        ..keys_config(&["rsa.pub.pem"])
    })
    .unwrap_err();
    assert!(
        errors.iter().any(|e| e.contains("hmac_secrets")),
        "{errors:?}"
    );
}

#[test]
fn a_different_secret_is_a_bad_signature() {
    let v = verifier(&hmac_config());
    let token = sign(
        Algorithm::HS256,
        &hmac_signer(OTHER_SECRET),
        None,
        &claims(),
    );
    assert_eq!(refusal(&v, &token), "bad_signature");
    let (message, _) = token.rsplit_once('.').unwrap();
    assert_eq!(refusal(&v, &format!("{message}.")), "bad_signature");
}

#[test]
fn any_configured_secret_verifies() {
    let v = verifier(&TokenConfig {
        hmac_secrets: vec![SECRET.into(), OTHER_SECRET.into()],
        ..TokenConfig::default()
    });
    for secret in [SECRET, OTHER_SECRET] {
        let token = sign(Algorithm::HS256, &hmac_signer(secret), None, &claims());
        assert!(v.verify(&token, NOW).is_ok());
    }
}

#[test]
fn algorithms_outside_the_allow_list_are_refused() {
    let v = verifier(&TokenConfig {
        algorithms: vec!["HS256".into()],
        ..hmac_config()
    });
    let hs256 = sign(Algorithm::HS256, &hmac_signer(SECRET), None, &claims());
    assert!(v.verify(&hs256, NOW).is_ok());
    let hs512 = sign(Algorithm::HS512, &hmac_signer(SECRET), None, &claims());
    assert_eq!(
        v.verify(&hs512, NOW).unwrap_err(),
        TokenError::UnsupportedAlgorithm {
            alg: "HS512".into()
        }
    );
}

#[test]
fn oversize_tokens_are_refused_before_parsing() {
    let v = verifier(&hmac_config());
    let token = sign(
        Algorithm::HS256,
        &hmac_signer(SECRET),
        None,
        &with(json!({"padding": "x".repeat(MAX_TOKEN_BYTES)})),
    );
    assert_eq!(refusal(&v, &token), "too_large");
    assert_eq!(refusal(&v, &"a".repeat(MAX_TOKEN_BYTES + 1)), "too_large");
}

#[test]
fn garbage_never_panics() {
    let v = verifier(&TokenConfig {
        public_keys: vec![key_path("rsa.pub.pem"), key_path("ed25519.pub.pem")],
        jwks_file: Some(key_path("jwks.json")),
        ..hmac_config()
    });
    let shapes = [
        (String::new(), "malformed"),
        (".".into(), "malformed"),
        ("..".into(), "malformed"),
        ("...".into(), "malformed"),
        ("a.b.c".into(), "malformed"),
        ("a.b.c.d".into(), "malformed"),
        ("é.ü.ß".into(), "malformed"),
        (".".repeat(10 * 1024), "too_large"),
        (".".repeat(MAX_TOKEN_BYTES), "malformed"),
    ];
    for (token, reason) in &shapes {
        let clipped: String = token.chars().take(40).collect();
        assert_eq!(refusal(&v, token), *reason, "{clipped}");
    }

    // Headers, with a well-formed payload and the given signature part.
    let headers = [
        ("[1,2]", "", "malformed"),
        ("null", "", "malformed"),
        ("{}", "", "malformed"),
        (r#"{"alg":null}"#, "", "malformed"),
        (r#"{"alg":"HS256","alg":"HS256"}"#, "", "malformed"),
        (r#"{"alg":"HS256","kid":5}"#, "", "malformed"),
        (r#"{"alg":"HS256","crit":["b64"]}"#, "", "malformed"),
        (r#"{"alg":"HS256"}"#, "!!!", "malformed"),
        (r#"{"alg":5}"#, "", "unsupported_algorithm"),
        (r#"{"alg":["HS256"]}"#, "", "unsupported_algorithm"),
        (r#"{"alg":"hs256"}"#, "", "unsupported_algorithm"),
        (r#"{"alg":"ES512"}"#, "", "unsupported_algorithm"),
        (r#"{"alg":"ES384"}"#, "", "unsupported_algorithm"),
        (r#"{"alg":"RSA-OAEP"}"#, "", "unsupported_algorithm"),
        (r#"{"alg":"EdDSA","kid":"x"}"#, "", "unknown_key"),
        (r#"{"alg":"HS256"}"#, "AAAA", "bad_signature"),
        (r#"{"alg":"RS256"}"#, "AAAA", "bad_signature"),
        (r#"{"alg":"PS512"}"#, "AAAA", "bad_signature"),
        (r#"{"alg":"ES256"}"#, "", "bad_signature"),
        (r#"{"alg":"ES256","kid":"ec-1"}"#, "AAAA", "bad_signature"),
        (r#"{"alg":"EdDSA"}"#, "AAAA", "bad_signature"),
    ];
    let payload = b64(claims().to_string());
    for (header, signature, reason) in headers {
        let token = format!("{}.{payload}.{signature}", b64(header));
        assert_eq!(refusal(&v, &token), reason, "{header} {signature}");
    }

    // Validly signed payloads that are not claims.
    let header = r#"{"alg":"HS256"}"#;
    assert_eq!(refusal(&v, &hs256_raw(header, "not json")), "bad_claims");
    assert_eq!(refusal(&v, &hs256_raw(header, "[1]")), "bad_claims");
    let message = format!("{}.%%", b64(header));
    let tag = hmac_tag(Algorithm::HS256, SECRET.as_bytes(), message.as_bytes());
    assert_eq!(refusal(&v, &format!("{message}.{}", b64(tag))), "malformed");
}

#[test]
fn an_unconfigured_verifier_refuses_everything() {
    let v = verifier(&TokenConfig::default());
    let token = sign(Algorithm::HS256, &hmac_signer(SECRET), None, &claims());
    assert_eq!(refusal(&v, &token), "unsupported_algorithm");
}

#[test]
fn the_verifier_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<TokenVerifier>();
    check::<Minter>();
}

#[test]
fn every_error_has_a_reason_and_a_message() {
    let errors = [
        TokenError::TooLarge { bytes: 9000 },
        malformed("x"),
        TokenError::UnsupportedAlgorithm { alg: "none".into() },
        TokenError::UnknownKey {
            kid: Some("k".into()),
        },
        TokenError::UnknownKey { kid: None },
        TokenError::BadSignature,
        TokenError::Expired { exp: 1 },
        TokenError::NotYetValid { nbf: 1 },
        TokenError::WrongIssuer,
        TokenError::WrongAudience,
        TokenError::MissingExp,
        bad_claim("sub", "is missing"),
    ];
    for err in errors {
        let reason = err.reason();
        assert!(reason.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        let message = err.to_string();
        assert!(
            message.contains("token") && !message.contains('\n'),
            "{message}"
        );
    }
}

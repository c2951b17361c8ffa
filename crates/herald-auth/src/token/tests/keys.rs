//! Tests of key loading in `keys.rs`: PEM files, JWK Sets, and how unusable ones are reported.

use super::*;
use crate::token::keys::{parse_jwks, pem_key, single_pem_block, KeyKind};
use base64::engine::general_purpose::STANDARD;

#[test]
fn new_reports_unusable_key_files_by_path() {
    let missing = key_path("missing.pem");
    let private = key_path("ec.pem");
    let not_pem = key_path("README.md");
    let errors = TokenVerifier::new(&TokenConfig {
        public_keys: vec![missing.clone(), private.clone(), not_pem.clone()],
        jwks_file: Some(key_path("rsa.pub.pem")),
        ..TokenConfig::default()
    })
    .unwrap_err();
    assert_eq!(errors.len(), 4, "{errors:#?}");
    assert!(
        errors[0].contains(&missing.display().to_string()) && errors[0].contains("cannot read")
    );
    assert!(
        errors[1].contains(&private.display().to_string()) && errors[1].contains("private key")
    );
    assert!(errors[2].contains(&not_pem.display().to_string()) && errors[2].contains("not a PEM"));
    assert!(errors[3].starts_with("auth.token.jwks_file:") && errors[3].contains("not a JWK Set"));

    // An allowed algorithm that no loaded key verifies.
    let errors = TokenVerifier::new(&TokenConfig {
        algorithms: vec!["ES384".into()],
        ..keys_config(&["ec.pub.pem"])
    })
    .unwrap_err();
    assert!(
        errors[0].contains("ES384") && errors[0].contains("P-384"),
        "{errors:?}"
    );
}

#[test]
fn pkcs1_rsa_public_keys_load_too() {
    let spki = key_bytes("rsa.pub.pem");
    let (_, der) = single_pem_block(std::str::from_utf8(&spki).unwrap()).unwrap();
    // A 2048-bit SPKI is 24 bytes of header, then the PKCS#1 RSAPublicKey.
    let pkcs1 = STANDARD.encode(&der[24..]);
    let pem = format!("-----BEGIN RSA PUBLIC KEY-----\n{pkcs1}\n-----END RSA PUBLIC KEY-----\n");
    let key = pem_key(pem.as_bytes(), "pkcs1.pem".into()).unwrap();
    assert_eq!(key.kind, KeyKind::Rsa);
    let token = sign(Algorithm::RS256, &rsa_signer(), None, &claims());
    let message = token.rsplit_once('.').unwrap();
    assert_eq!(
        jsonwebtoken::crypto::verify(message.1, message.0.as_bytes(), &key.key, Algorithm::RS256),
        Ok(true)
    );

    let two = format!("{}{}", String::from_utf8(spki.clone()).unwrap(), pem);
    let err = pem_key(two.as_bytes(), "two.pem".into()).unwrap_err();
    assert!(err.contains("more than one PEM block"), "{err}");
    let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let err = pem_key(cert.as_bytes(), "cert.pem".into()).unwrap_err();
    assert!(err.starts_with("cert.pem: is a certificate"), "{err}");
    let junk = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
    let err = pem_key(junk.as_bytes(), "junk.pem".into()).unwrap_err();
    assert!(
        err.starts_with("junk.pem: is not a supported public key PEM"),
        "{err}"
    );
}

#[test]
fn jwks_problems_are_reported_per_key() {
    let rsa_1024_n = b64([&[0xc1u8][..], &[0x55; 126], &[0x01]].concat());
    let text = json!({"keys": [
        {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
        {"kty": "oct", "kid": "sym", "k": "c2VjcmV0"},
        {"kty": "RSA", "kid": "small", "n": rsa_1024_n, "e": "AQAB"},
        {"kty": "EC", "kid": "off-curve", "crv": "P-256", "x": b64([1; 32]), "y": b64([2; 32])},
        {"kty": "EC", "kid": "k1", "crv": "secp256k1", "x": b64([1; 32]), "y": b64([2; 32])},
        {"kty": "OKP", "kid": "short", "crv": "Ed25519", "x": b64([1; 16])},
        {"kty": "EC", "kid": "private", "crv": "P-256", "x": "", "y": "", "d": "AA"},
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
    ]});
    let errors = parse_jwks(text.to_string().as_bytes(), "set.json").unwrap_err();
    let expect = [
        "key #0 has no kid",
        "\"sym\" is a symmetric key",
        "\"small\" is a 1024-bit RSA key",
        "\"off-curve\" is not a valid EC P-256 public key",
        "\"k1\" has an unsupported curve",
        "\"short\" has a \"x\" of 16 bytes",
        "\"private\" is a private key",
    ];
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
    for (error, part) in errors.iter().zip(expect) {
        assert!(
            error.starts_with("set.json: ") && error.contains(part),
            "{error} / {part}"
        );
    }

    let jwks = std::fs::read_to_string(key_path("jwks.json")).unwrap();
    let mut set: Value = serde_json::from_str(&jwks).unwrap();
    set["keys"][1]["alg"] = json!("RS256");
    let errors = parse_jwks(set.to_string().as_bytes(), "set.json").unwrap_err();
    assert!(errors[0].contains("cannot verify"), "{errors:?}");
    set["keys"][1]["kid"] = json!("rsa-1");
    set["keys"][1]["alg"] = json!("ES256");
    let errors = parse_jwks(set.to_string().as_bytes(), "set.json").unwrap_err();
    assert!(errors[0].contains("more than once"), "{errors:?}");
    let errors = parse_jwks(br#"{"keys": []}"#, "set.json").unwrap_err();
    assert!(errors[0].contains("no signing keys"), "{errors:?}");
    let keys = parse_jwks(jwks.as_bytes(), "set.json").unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(
        (keys[0].kind, keys[0].alg),
        (KeyKind::Rsa, Some(Algorithm::RS256))
    );
    assert_eq!(
        (keys[1].kind, keys[1].alg),
        (KeyKind::P256, Some(Algorithm::ES256))
    );
}

#[test]
fn pem_and_jwks_forms_of_a_key_verify_the_same_tokens() {
    let pem = verifier(&keys_config(&["rsa.pub.pem", "ec.pub.pem"]));
    let jwks = verifier(&jwks_config());
    for (alg, key) in [
        (Algorithm::RS256, rsa_signer()),
        (Algorithm::ES256, ec_signer()),
    ] {
        let token = sign(alg, &key, None, &claims());
        assert!(pem.verify(&token, NOW).is_ok() && jwks.verify(&token, NOW).is_ok());
    }
}

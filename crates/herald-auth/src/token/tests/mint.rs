//! Tests of minting in `mint.rs`: minted tokens verify, and bad requests are refused.

use super::*;
use herald_core::Grants;
use jsonwebtoken::DecodingKey;
use std::time::Duration;

#[test]
fn minted_tokens_verify_to_the_same_identity() {
    let config = TokenConfig {
        issuer: Some("herald".into()),
        audience: Some("chat".into()),
        ..hmac_config()
    };
    let minter = Minter::from_config(&config).unwrap();
    let request = MintRequest {
        user: "user-7".into(),
        info: Some(json!({"name": "Grace", "admin": false})),
        channels: vec!["room:*".into(), "news".into()],
        publish: vec!["room:1".into()],
        ttl: Duration::from_secs(3600),
        session_start: None,
    };
    let token = minter.mint(&request, NOW).unwrap();
    let identity = verifier(&config).verify(&token, NOW).unwrap();
    assert_eq!(&*identity.user, "user-7");
    let info: Value = serde_json::from_str(identity.info.unwrap().get()).unwrap();
    assert_eq!(Some(info), request.info);
    assert_eq!(identity.subscribe, Grants::new(&request.channels).unwrap());
    assert_eq!(identity.publish, Grants::new(&request.publish).unwrap());
    assert_eq!(identity.expires_at, Some(NOW + 3600));

    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["iat"], NOW);
    assert_eq!(claims["iss"], "herald");
    assert_eq!(claims["aud"], "chat");

    // jsonwebtoken agrees with the signature.
    let decoded = jsonwebtoken::crypto::verify(
        token.rsplit_once('.').unwrap().1,
        token.rsplit_once('.').unwrap().0.as_bytes(),
        &DecodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::HS256,
    );
    assert_eq!(decoded, Ok(true));

    let bare = MintRequest {
        info: None,
        channels: vec![],
        publish: vec![],
        ..request
    };
    let token = minter.mint(&bare, NOW).unwrap();
    let identity = verifier(&config).verify(&token, NOW).unwrap();
    assert!(identity.info.is_none() && identity.subscribe.is_empty());
}

#[test]
fn minting_checks_the_request() {
    let minter = Minter::from_config(&hmac_config()).unwrap();
    let request = MintRequest {
        user: "u".into(),
        info: None,
        channels: vec![],
        publish: vec![],
        ttl: Duration::from_secs(60),
        session_start: None,
    };
    let refused = |req: MintRequest| minter.mint(&req, NOW).unwrap_err();
    assert!(matches!(
        refused(MintRequest {
            channels: vec!["bad channel".into()],
            ..request.clone()
        }),
        TokenError::BadClaims {
            claim: "channels",
            ..
        }
    ));
    assert!(matches!(
        refused(MintRequest {
            publish: vec!["a*b".into()],
            ..request.clone()
        }),
        TokenError::BadClaims {
            claim: "publish",
            ..
        }
    ));
    assert!(matches!(
        refused(MintRequest {
            user: String::new(),
            ..request.clone()
        }),
        TokenError::BadClaims { claim: "sub", .. }
    ));
    assert!(matches!(
        refused(MintRequest {
            info: Some(json!(1)),
            ..request.clone()
        }),
        TokenError::BadClaims { claim: "info", .. }
    ));
    assert!(matches!(
        refused(MintRequest {
            ttl: Duration::ZERO,
            session_start: None,
            ..request.clone()
        }),
        TokenError::BadClaims { claim: "exp", .. }
    ));
    let many: Vec<String> = (0..200)
        .map(|i| format!("channel-with-a-long-name-{i}"))
        .collect();
    assert_eq!(
        refused(MintRequest {
            channels: many,
            ..request
        })
        .reason(),
        "too_large"
    );

    assert!(Minter::from_config(&keys_config(&["rsa.pub.pem"])).is_none());
    // An allow-list without HS256 mints with an HMAC algorithm it allows.
    let hs512_only = TokenConfig {
        algorithms: vec!["HS512".into()],
        ..hmac_config()
    };
    let token = Minter::from_config(&hs512_only)
        .unwrap()
        .mint(
            &MintRequest {
                user: "u".into(),
                info: None,
                channels: vec![],
                publish: vec![],
                ttl: Duration::from_secs(60),
                session_start: None,
            },
            NOW,
        )
        .unwrap();
    assert!(verifier(&hs512_only).verify(&token, NOW).is_ok());
}

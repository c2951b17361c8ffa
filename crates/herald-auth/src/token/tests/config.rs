//! Tests of `[auth.token]` parsing, its problems and its redacted `Debug` output.

use super::*;
use std::time::Duration;

#[test]
fn problems_flag_short_secrets_none_and_keyless_algorithms() {
    assert!(TokenConfig::default().problems().is_empty());
    assert!(hmac_config().problems().is_empty());
    let problems = TokenConfig {
        hmac_secrets: vec!["0123456789".into()],
        algorithms: vec![
            "none".into(),
            "HS256".into(),
            "RS1024".into(),
            "ES256".into(),
        ],
        issuer: Some(String::new()),
        ..TokenConfig::default()
    }
    .problems();
    assert_eq!(problems.len(), 5, "{problems:#?}");
    assert!(problems.iter().all(|p| p.starts_with("auth.token.")));
    assert!(problems[0].contains("hmac_secrets[0]") && problems[0].contains("10 bytes"));
    assert!(
        !problems[0].contains("0123456789"),
        "secrets are never echoed"
    );
    assert!(problems[1].contains("\"none\""));
    assert!(problems[2].contains("RS1024"));
    assert!(problems[3].contains("ES256") && problems[3].contains("public_keys"));
    assert!(problems[4].contains("issuer"));
    assert!(!TokenConfig::default().configured());
    assert!(hmac_config().configured() && jwks_config().configured());
}

#[test]
fn debug_output_hides_secrets() {
    let config = TokenConfig {
        hmac_secrets: vec![SECRET.into(), OTHER_SECRET.into()],
        ..TokenConfig::default()
    };
    let shown = format!(
        "{config:?} {:?} {:?}",
        verifier(&config),
        Minter::from_config(&config).unwrap()
    );
    assert!(
        !shown.contains(SECRET) && !shown.contains(OTHER_SECRET),
        "{shown}"
    );
    assert!(shown.contains("[2 redacted]"), "{shown}");
}

#[test]
fn config_reads_humantime_and_refuses_unknown_keys() {
    let config: TokenConfig = serde_json::from_value(json!({
        "hmac_secrets": [SECRET],
        "leeway": "30s",
        "algorithms": ["HS256"],
    }))
    .unwrap();
    assert_eq!(config.leeway, Duration::from_secs(30));
    assert!(config.require_exp);
    assert!(serde_json::from_value::<TokenConfig>(json!({"secret": "x"})).is_err());
    assert_eq!(TokenConfig::default().leeway, Duration::from_secs(5));
}

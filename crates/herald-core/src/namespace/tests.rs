use super::*;
use crate::Grants;
use std::sync::Arc;

fn ch(s: &str) -> ChannelName {
    ChannelName::parse(s).unwrap()
}

fn user(name: &str, subscribe: &[&str], publish: &[&str]) -> Identity {
    Identity {
        user: Arc::from(name),
        info: None,
        subscribe: Grants::new(subscribe).unwrap(),
        publish: Grants::new(publish).unwrap(),
        expires_at: None,
        session_start: None,
    }
}

fn config(closed: bool) -> ChannelsConfig {
    let toml = r#"
        [namespaces.widget]
        subscribe = "public"
        [namespaces.feed]
        subscribe = "authenticated"
        [namespaces.room]
        subscribe = "granted"
        publish = "granted"
        read_presence = "none"
        [namespaces.chat]
        subscribe = "authenticated"
        publish = "authenticated"
        [namespaces.alerts]
        subscribe = "public"
        publish = "authenticated"
        user_scoped = true
    "#;
    let mut c: ChannelsConfig = toml::from_str(toml).unwrap();
    c.closed = closed;
    c
}

#[test]
fn unset_subscribe_is_open_until_auth_is_configured() {
    let anyone = None;
    assert!(config(false)
        .permits(Action::Subscribe, &ch("news"), anyone)
        .is_ok());
    assert!(matches!(
        config(true).permits(Action::Subscribe, &ch("news"), anyone),
        Err(Denied::Unauthenticated { .. })
    ));
    let granted = user("u1", &["news"], &[]);
    assert!(config(true)
        .permits(Action::Subscribe, &ch("news"), Some(&granted))
        .is_ok());
    assert!(config(true)
        .permits(Action::History, &ch("news"), Some(&granted))
        .is_ok());
}

#[test]
fn each_access_level_is_enforced() {
    let c = config(true);
    let alice = user("alice", &["room:1"], &["room:1"]);
    let bob = user("bob", &[], &[]);
    assert!(c.permits(Action::Subscribe, &ch("widget:w"), None).is_ok());
    assert!(c.permits(Action::Subscribe, &ch("feed:x"), None).is_err());
    assert!(c
        .permits(Action::Subscribe, &ch("feed:x"), Some(&bob))
        .is_ok());
    assert!(c
        .permits(Action::Subscribe, &ch("room:1"), Some(&alice))
        .is_ok());
    assert!(matches!(
        c.permits(Action::Subscribe, &ch("room:1"), Some(&bob)),
        Err(Denied::Forbidden { .. })
    ));
    assert!(c
        .permits(Action::Publish, &ch("room:1"), Some(&alice))
        .is_ok());
    assert!(c
        .permits(Action::Publish, &ch("room:1"), Some(&bob))
        .is_err());
    assert!(c
        .permits(Action::Presence, &ch("room:1"), Some(&alice))
        .is_err());
    assert!(c.permits(Action::Publish, &ch("widget:w"), None).is_err());
    assert!(c
        .permits(Action::Publish, &ch("chat:a"), Some(&bob))
        .is_ok());
}

#[test]
fn a_user_channel_is_for_its_user_only() {
    let c = config(true);
    let alice = user("alice", &["*"], &["*"]);
    let bob = user("bob", &[], &[]);
    let mine = ch("alerts#bob");
    assert!(c.permits(Action::Subscribe, &mine, Some(&bob)).is_ok());
    assert!(c.permits(Action::History, &mine, Some(&bob)).is_ok());
    assert!(
        c.permits(Action::Subscribe, &mine, Some(&alice)).is_err(),
        "a wildcard grant does not open another user's channel"
    );
    assert!(c.permits(Action::Subscribe, &mine, None).is_err());
    assert!(
        c.permits(Action::Publish, &mine, Some(&bob)).is_err(),
        "publishing still needs the namespace to allow it"
    );
    assert!(c
        .permits(Action::Publish, &ch("chat:dm#bob"), Some(&bob))
        .is_ok());
    assert!(c
        .permits(Action::Subscribe, &ch("widget:w#bob"), None)
        .is_err());
}

#[test]
fn a_user_scoped_namespace_names_the_owner_after_the_namespace() {
    let c = config(true);
    let owner = user("user_789", &[], &[]);
    let other = user("user_1", &["*"], &["*"]);
    let mine = ch("alerts:user_789");
    for action in [Action::Subscribe, Action::History, Action::Presence] {
        assert!(c.permits(action, &mine, Some(&owner)).is_ok());
        assert!(
            matches!(
                c.permits(action, &mine, Some(&other)),
                Err(Denied::Forbidden { .. })
            ),
            "another user, whatever the grants and the namespace's public access"
        );
        assert!(matches!(
            c.permits(action, &mine, None),
            Err(Denied::Unauthenticated { .. })
        ));
    }
    assert!(c.permits(Action::Publish, &mine, Some(&owner)).is_ok());
    assert!(c.permits(Action::Publish, &mine, Some(&other)).is_err());
    assert!(
        c.permits(Action::Subscribe, &ch("widget:user_789"), None)
            .is_ok(),
        "only the namespace that says so"
    );
}

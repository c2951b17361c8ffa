//! Configuration loading: layers, unknown keys, problems reported at once, rendering.
use super::*;
use std::io::Write;

fn file(text: &str) -> tempfile_path::TempPath {
    tempfile_path::write(text)
}

mod tempfile_path {
    use std::path::PathBuf;
    pub(crate) struct TempPath(pub(crate) PathBuf);
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    pub(crate) fn write(text: &str) -> TempPath {
        let path = std::env::temp_dir().join(format!("herald-config-{}.toml", fastrand::u64(..)));
        let mut f = std::fs::File::create(&path).unwrap();
        super::Write::write_all(&mut f, text.as_bytes()).unwrap();
        TempPath(path)
    }
}

#[test]
fn defaults_are_valid_and_render_back() {
    let c = load(None, &Overrides::default()).unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:7077");
    let text = render(&c).unwrap();
    let f = file(&text);
    assert_eq!(load(Some(&f.0), &Overrides::default()).unwrap(), c);
}

#[test]
fn every_problem_is_reported_at_once() {
    let f = file(
        "[server]\nlistn = \"x\"\n[sse]\nkeepalive = \"0s\"\n[channels.namespaces.chat]\nhistory_sise = 3\n[bogus]\na = 1\n",
    );
    let p = load(Some(&f.0), &Overrides::default()).unwrap_err();
    let text = p.to_string();
    assert!(text.contains("unknown key `server.listn`"), "{text}");
    assert!(
        text.contains("unknown key `channels.namespaces.chat.history_sise`"),
        "{text}"
    );
    assert!(text.contains("unknown key `bogus`"), "{text}");
    assert!(
        text.contains("sse.keepalive must be more than 0s"),
        "{text}"
    );
}

#[test]
fn type_errors_in_several_sections_and_semantic_problems_are_reported_together() {
    let f = file(
        "[server]\nmax_connections = \"abc\"\n[sse]\nretry = \"zz\"\n[ws]\nping_interval = \"90s\"\n",
    );
    let text = load(Some(&f.0), &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("server.max_connections: invalid type"),
        "{text}"
    );
    assert!(text.contains("sse.retry: invalid value"), "{text}");
    assert!(text.contains("ws.ping_interval must be"), "{text}");
}

#[test]
fn semantic_problems_are_listed_together() {
    let f = file("[sse]\nkeepalive = \"0s\"\n[ws]\nping_interval = \"90s\"\n[connection]\nmax_channels = 0\n");
    let text = load(Some(&f.0), &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(text.contains("sse.keepalive"), "{text}");
    assert!(text.contains("ws.ping_interval"), "{text}");
    assert!(text.contains("connection.max_channels"), "{text}");
}

#[test]
fn flags_win_over_the_file() {
    let f = file("[server]\nlisten = \"127.0.0.1:9000\"\n");
    let c = load(
        Some(&f.0),
        &Overrides {
            listen: Some("127.0.0.1:9001".parse().unwrap()),
            ..Overrides::default()
        },
    )
    .unwrap();
    assert_eq!(c.server.listen.port(), 9001);
}

#[test]
fn printed_sizes_read_back_exactly() {
    let f = file("[server]\nmax_body = \"1000000\"\n[connection]\noutbox_bytes = \"3 MiB\"\n");
    let c = load(Some(&f.0), &Overrides::default()).unwrap();
    let text = render(&c).unwrap();
    assert!(text.contains("max_body = \"1000000 B\""), "{text}");
    assert!(text.contains("outbox_bytes = \"3 MiB\""), "{text}");
    let again = file(&text);
    assert_eq!(load(Some(&again.0), &Overrides::default()).unwrap(), c);
}

#[test]
fn engine_is_chosen_by_file_or_flags_with_its_own_keys() {
    let f = file("[engine]\nkind = \"redis\"\nprefix = \"app\"\n");
    let c = load(Some(&f.0), &Overrides::default()).unwrap();
    let EngineConfig::Redis(r) = &c.engine else {
        panic!("not redis: {:?}", c.engine);
    };
    assert_eq!(r.prefix, "app");
    assert_eq!(&*r.url, "redis://127.0.0.1:6379");

    let c = load(
        None,
        &Overrides {
            engine: Some(EngineKind::Redis),
            engine_url: Some("redis://127.0.0.1:7000".to_owned()),
            ..Overrides::default()
        },
    )
    .unwrap();
    assert!(matches!(&c.engine, EngineConfig::Redis(r) if &*r.url == "redis://127.0.0.1:7000"));

    // A key of another engine, an unknown kind, and a URL of the wrong scheme are errors.
    let f = file("[engine]\nkind = \"redis\"\nmax_channels = 5\n");
    let text = load(Some(&f.0), &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(text.contains("unknown key `engine.max_channels`"), "{text}");
    let f = file("[engine]\nkind = \"etcd\"\n");
    let text = load(Some(&f.0), &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(text.contains("unknown engine"), "{text}");
    let text = load(
        None,
        &Overrides {
            engine: Some(EngineKind::Redis),
            engine_url: Some("http://x".to_owned()),
            ..Overrides::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(text.contains("must start with redis://"), "{text}");
}

#[test]
fn namespaces_and_sizes_parse() {
    let f = file("[connection]\noutbox_bytes = \"2MiB\"\n[channels.namespaces.chat]\nhistory_size = 50\npresence = true\nhistory_ttl = \"1h\"\nlatest_state = \"per_event\"\n[channels.namespaces.room]\npresence = \"users\"\nlatest_state = true\n[channels.namespaces.hall]\npresence = \"counts\"\n");
    let c = load(Some(&f.0), &Overrides::default()).unwrap();
    assert_eq!(c.connection.outbox_bytes.as_u64(), 2 * 1024 * 1024);
    let chat = &c.channels.namespaces["chat"];
    assert_eq!(chat.presence, herald_core::PresenceMode::Connections);
    assert_eq!(chat.latest_state, herald_core::LatestState::PerEvent);
    let room = &c.channels.namespaces["room"];
    assert_eq!(room.presence, herald_core::PresenceMode::Users);
    assert_eq!(room.latest_state, herald_core::LatestState::Last);
    assert_eq!(
        c.channels.namespaces["hall"].presence,
        herald_core::PresenceMode::Counts
    );
    // Printed back as written: booleans stay booleans.
    let printed = toml::to_string(&c.channels).unwrap();
    assert!(printed.contains("presence = true"), "{printed}");
    assert!(printed.contains("presence = \"users\""), "{printed}");
    assert!(
        printed.contains("latest_state = \"per_event\""),
        "{printed}"
    );
    assert_eq!(chat.history_size, 50);
    assert_eq!(chat.history_ttl.as_secs(), 3600);
}

#[test]
fn example_config_lists_every_key_with_its_default() {
    /// `section.key` for every `key = value` line outside comments.
    fn keys(text: &str) -> Vec<String> {
        let mut section = String::new();
        let mut out = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.trim().to_owned();
            } else if let Some((key, _)) = line.split_once(" = ") {
                out.push(format!("{section}.{}", key.trim()));
            }
        }
        out
    }
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../herald.example.toml"
    ));
    let example = std::fs::read_to_string(path).unwrap();
    let loaded = load(Some(path), &Overrides::default()).unwrap_or_else(|p| panic!("{p}"));
    assert_eq!(loaded, Config::default());
    let listed = keys(&example);
    let rendered = keys(&render(&Config::default()).unwrap());
    assert!(!rendered.is_empty());
    let missing: Vec<&String> = rendered.iter().filter(|k| !listed.contains(k)).collect();
    assert!(missing.is_empty(), "herald.example.toml lacks {missing:?}");
    // The other engines' keys are listed, commented out, with their defaults.
    for kind in ["redis", "nats"] {
        let engine = EngineConfig::defaults(kind).unwrap();
        let rendered = toml::to_string(&engine).unwrap();
        for line in rendered.lines().filter(|l| l.contains(" = ")) {
            assert!(
                example.contains(&format!("# {line}\n")),
                "herald.example.toml lacks `# {line}` for the {kind} engine"
            );
        }
    }
}

#[test]
fn connector_problems_are_listed_together() {
    let f = file(
        r#"
[engine]
kind = "redis"

[[connectors.postgres]]
name = "app"
url = "mysql://nope"
schema = "bad-schema"

[[connectors.postgres]]
name = "app"
url = "postgres://u@h/db"
mode = "trigger"
channel = "{table"

[[connectors.redis]]
name = "workers"
url = "redis://127.0.0.1:6379"

[[connectors.redis]]
name = "jobs"
url = "redis://127.0.0.1:6379"
stream = "herald:ingest"

[[connectors.twitch]]
name = "kai"
client_id = "cid"
client_secret = "s"
broadcaster_id = "kai"
broadcaster_login = "kai"
access_token = "a"
refresh_token = ""
events = ["channel.follow", "channel.poll"]
keepalive_timeout = "5s"
helix_url = "ftp://x"
"#,
    );
    let text = load(Some(&f.0), &Overrides::default())
        .unwrap_err()
        .to_string();
    for want in [
        "connectors.postgres[0].url is not a Postgres URL",
        "connectors.postgres[0].schema must be letters",
        "connectors.postgres[1].listen must name at least one NOTIFY channel",
        "connectors.postgres[1].channel: a '{' without its '}'",
        "connectors.postgres name \"app\" is used twice",
        "connectors.redis[0] needs patterns, a stream, or both",
        "connectors.redis[1].stream \"herald:ingest\" is the Redis engine's own worker stream",
        "connectors.twitch[0].refresh_token must not be empty",
        "connectors.twitch[0].broadcaster_id must be the numeric user id",
        "\"channel.poll\" is not one Herald subscribes to",
        "connectors.twitch[0].keepalive_timeout must be 10s to 600s",
        "connectors.twitch[0].helix_url must start with http:// or https://",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn more_connector_problems_are_listed_together() {
    let f = file(
        r#"
[engine]
kind = "redis"
prefix = "app"

[[connectors.postgres]]
name = "outbox"
url = "postgres://u@h/db"
schema = "1st"
batch = 0
poll_interval = "1ms"
listen = ["realtime_events"]

[[connectors.postgres]]
name = "social"
url = "postgres://u@h/db"
mode = "trigger"
listen = ["bad-name"]
channel = "{table}:{data.room_id}"
event = "}"

[[connectors.redis]]
name = "workers"
url = "127.0.0.1:6379"
patterns = [""]
channel = "{channel"
event = ""

[[connectors.redis]]
name = "workers"
url = "redis://127.0.0.1:6379"
stream = "app:ingest"
group = ""

[[connectors.redis]]
name = "bad name"
url = "redis://127.0.0.1:6379"
patterns = ["x:*"]
"#,
    );
    let text = load(Some(&f.0), &Overrides::default())
        .unwrap_err()
        .to_string();
    for want in [
        "connectors.postgres[0].schema must be letters",
        "connectors.postgres[0].batch must be 1 to 10000",
        "connectors.postgres[0].poll_interval must be at least 10ms",
        "connectors.postgres[0]: listen, channel and data belong to mode = \"trigger\"",
        "connectors.postgres[1].listen \"bad-name\" must be letters, digits and '_'",
        "connectors.postgres[1].event: a '}' without its '{'",
        "connectors.redis[0].url is not a Redis URL",
        "connectors.redis[0].patterns must not hold an empty pattern",
        "connectors.redis[0].channel: a '{' without its '}'",
        "connectors.redis[0].event: must not be empty",
        "connectors.redis[1].group must not be empty",
        "connectors.redis[1].stream \"app:ingest\" is the Redis engine's own worker stream",
        "connectors.redis name \"workers\" is used twice",
        "connectors.redis name \"bad name\" must be letters, digits, '-' or '_'",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert_eq!(text.matches("\n  - ").count(), 14, "{text}");
}

#[test]
fn a_connector_name_is_unique_per_kind_and_the_ingest_stream_only_beside_the_redis_engine() {
    let connectors = r#"
[[connectors.postgres]]
name = "app"
url = "postgres://u@h/db"

[[connectors.redis]]
name = "app"
url = "redis://127.0.0.1:6379"
stream = "herald:ingest"
"#;
    // On the memory engine `herald:ingest` is a stream like any other, and the same name
    // under two kinds names two connectors.
    let f = file(connectors);
    let c = load(Some(&f.0), &Overrides::default()).unwrap_or_else(|p| panic!("{p}"));
    let set = c.connectors.pulled(&c.engine);
    assert_eq!((set.postgres.len(), set.redis.len()), (1, 1));
    assert_eq!(set.engine_prefix, None);
    // Beside a Redis engine with another prefix too; with the default prefix it is refused.
    let f = file(&format!(
        "[engine]\nkind = \"redis\"\nprefix = \"app\"\n{connectors}"
    ));
    let c = load(Some(&f.0), &Overrides::default()).unwrap_or_else(|p| panic!("{p}"));
    assert_eq!(
        c.connectors.pulled(&c.engine).engine_prefix.as_deref(),
        Some("app")
    );
    let f = file(&format!("[engine]\nkind = \"redis\"\n{connectors}"));
    let text = load(Some(&f.0), &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("connectors.redis[0].stream \"herald:ingest\" is the Redis engine's own"),
        "{text}"
    );
    assert_eq!(text.matches("\n  - ").count(), 1, "{text}");
}

#[test]
fn the_example_connector_blocks_load_once_uncommented() {
    /// What a user does to add sources of `kinds`: delete their `KIND = []` lines under
    /// [connectors] and uncomment their blocks, leaving the rest of the section as it is.
    fn uncomment(section: &str, kinds: &[&str]) -> String {
        let mut out = String::new();
        let mut in_block = false;
        for line in section.lines() {
            if kinds.iter().any(|k| line == format!("{k} = []")) {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# [[connectors.") {
                in_block = kinds.iter().any(|k| rest == format!("{k}]]"));
            } else if !line.starts_with("# ") {
                in_block = false;
            }
            out.push_str(match line.strip_prefix("# ") {
                Some(l) if in_block => l,
                _ => line,
            });
            out.push('\n');
        }
        out
    }
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../herald.example.toml"
    ));
    let example = std::fs::read_to_string(path).unwrap();
    let (head, rest) = example.split_at(example.find("\n[connectors]\n").unwrap() + 1);
    let (section, tail) = rest.split_at(rest.find("\n[log]\n").unwrap() + 1);
    let all = ["webhook", "postgres", "redis", "twitch"];
    let load_with = |kinds: &[&str]| {
        let f = file(&format!("{head}{}{tail}", uncomment(section, kinds)));
        load(Some(&f.0), &Overrides::default())
            .unwrap_or_else(|p| panic!("uncommenting {kinds:?}: {p}"))
            .connectors
    };
    for kind in all {
        load_with(&[kind]);
    }
    let k = load_with(&all);
    assert_eq!(
        (
            k.webhook.len(),
            k.postgres.len(),
            k.redis.len(),
            k.twitch.len()
        ),
        (1, 2, 1, 1)
    );
    // The outbox block shows every key at its default.
    let outbox = &k.postgres[0];
    let defaults: herald_connectors::PostgresConfig = toml::from_str(&format!(
        "name = {:?}\nurl = {:?}",
        outbox.name, &*outbox.url
    ))
    .unwrap();
    assert_eq!(outbox, &defaults);
    assert_eq!(k.postgres[1].mode, herald_connectors::PostgresMode::Trigger);
    let redis = &k.redis[0];
    let defaults: herald_connectors::RedisSourceConfig =
        toml::from_str(&format!("name = {:?}\nurl = {:?}", redis.name, &*redis.url)).unwrap();
    assert_eq!(
        (&redis.channel, &redis.event, &redis.group),
        (&defaults.channel, &defaults.event, &defaults.group)
    );
}

use super::*;

fn load_str(toml: &str) -> Result<ServerConfig, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plimsoll.toml");
    std::fs::write(&path, toml).unwrap();
    ServerConfig::load(Some(&path), &Overrides::default())
}

#[test]
fn the_defaults_are_loopback_and_valid() {
    let config = load_str("").unwrap();
    assert!(config.listen.ip().is_loopback());
    assert_eq!(config.metrics_listen.unwrap().port(), 9464);
    assert_eq!(config.max_body, 1 << 20);
    assert_eq!(config.embedded_maxmemory, 512 << 20);
}

#[test]
fn a_bad_value_names_its_setting_and_file() {
    let err = load_str("listen = \"nowhere\"").unwrap_err();
    assert_eq!(err.key, "listen");
    assert!(err.origin.contains("plimsoll.toml"), "{err}");
    assert!(err.to_string().contains("not an address"), "{err}");

    let err = load_str("[hooks.github]\nsecret = \"short\"").unwrap_err();
    assert_eq!(err.key, "hooks.github.secret");

    let err = load_str("[queues.\"bad name\"]").unwrap_err();
    assert!(err.key.starts_with("queues."), "{err}");
}

/// Settings that started a server on which every request then failed
/// (`max_attempts = 0`, a 0 s push timeout, a 100 GiB `max_body`…) are
/// refused at start, each naming its key.
#[test]
fn every_setting_out_of_its_range_is_refused_naming_it() {
    let push = |extra: &str| format!("[queues.out.push]\nurl = \"http://127.0.0.1:1/x\"\n{extra}");
    let cases: Vec<(String, &str)> = vec![
        ("max_body = \"0\"".into(), "max_body"),
        ("max_body = \"100GiB\"".into(), "max_body"),
        ("shutdown_grace = \"0s\"".into(), "shutdown_grace"),
        ("shutdown_grace = \"400days\"".into(), "shutdown_grace"),
        ("tokens = [\"short\"]".into(), "tokens"),
        (format!("tokens = [\"{}\"]", "t".repeat(2000)), "tokens"),
        ("[redis]\nprefix = \"a{b}\"".into(), "redis.prefix"),
        (
            "[redis]\nembedded_maxmemory = \"1MiB\"".into(),
            "redis.embedded_maxmemory",
        ),
        (
            "[redis]\nembedded_maxmemory = \"100TiB\"".into(),
            "redis.embedded_maxmemory",
        ),
        (
            "[redis]\nembedded_maxmemory = \"9000GiB\"".into(),
            "redis.embedded_maxmemory",
        ),
        ("[spool]\nmax_bytes = \"10\"".into(), "spool.max_bytes"),
        ("[spool]\nmax_bytes = \"5000GiB\"".into(), "spool.max_bytes"),
        ("[spool]\nwarn_at = 0.0".into(), "spool.warn_at"),
        (
            "[queues.mail]\nmax_attempts = 0".into(),
            "queues.mail.max_attempts",
        ),
        (
            "[queues.mail]\nmax_attempts = 5000".into(),
            "queues.mail.max_attempts",
        ),
        (
            "[queues.mail]\ntimeout = \"0s\"".into(),
            "queues.mail.timeout",
        ),
        (
            "[queues.mail]\ntimeout = \"400days\"".into(),
            "queues.mail.timeout",
        ),
        (push("timeout = \"0s\""), "queues.out.push.timeout"),
        (push("timeout = \"400days\""), "queues.out.push.timeout"),
        (push("timeout = \"10m\""), "queues.out.push.timeout"),
        (push("concurrency = 0"), "queues.out.push.concurrency"),
        (
            push("rate_per_second = 0"),
            "queues.out.push.rate_per_second",
        ),
        (
            push("rate_per_second = 2000000"),
            "queues.out.push.rate_per_second",
        ),
        (push("secret = \"short\""), "queues.out.push.secret"),
        (
            "[queues.out.push]\nurl = \"ftp://x/\"".into(),
            "queues.out.push.url",
        ),
        ("[hooks.gh]\nmax_body = \"0\"".into(), "hooks.gh.max_body"),
        (
            "[hooks.gh]\nmax_body = \"100GiB\"".into(),
            "hooks.gh.max_body",
        ),
        ("[hooks.gh]\nsecret = \"x\"".into(), "hooks.gh.secret"),
        (
            "[hooks.gh]\nsecret = \"long enough\"\nsignature_header = \"a b\"".into(),
            "hooks.gh.signature_header",
        ),
        (
            "[hooks.gh]\ndelivery_header = \"a:b\"".into(),
            "hooks.gh.delivery_header",
        ),
        ("[hooks.gh]\nqueue = \"..\"".into(), "hooks.gh.queue"),
        ("[cache]\ntimeout = \"0s\"".into(), "cache.timeout"),
        ("[cache]\ntimeout = \"1h\"".into(), "cache.timeout"),
        ("[cache]\ndefault_ttl = \"0s\"".into(), "cache.default_ttl"),
        (
            "[cache]\ndefault_ttl = \"400days\"".into(),
            "cache.default_ttl",
        ),
        ("[guard]\ninterval = \"1ms\"".into(), "guard.interval"),
        ("[guard]\ninterval = \"30days\"".into(), "guard.interval"),
        ("[guard]\nlimit = \"0\"".into(), "guard.limit"),
        (
            "[guard]\nreport_interval = \"1s\"".into(),
            "guard.report_interval",
        ),
        (
            "[http]\nheader_read_timeout = \"0s\"".into(),
            "http.header_read_timeout",
        ),
        (
            "[http]\nheader_read_timeout = \"1h\"".into(),
            "http.header_read_timeout",
        ),
        (
            "[http]\nbody_read_timeout = \"0s\"".into(),
            "http.body_read_timeout",
        ),
        (
            "[http]\nbody_read_timeout = \"1day\"".into(),
            "http.body_read_timeout",
        ),
        ("[http]\nmax_connections = 0".into(), "http.max_connections"),
        (
            "[http]\nmax_connections = 100000000".into(),
            "http.max_connections",
        ),
        (
            "[http]\npublic_url = \"not a url\"".into(),
            "http.public_url",
        ),
        (
            "[http]\npublic_url = \"ftp://host/\"".into(),
            "http.public_url",
        ),
    ];
    for (toml, key) in &cases {
        let err = load_str(toml).expect_err(toml);
        assert_eq!(&err.key, key, "{toml}: {err}");
        assert!(err.to_string().contains(key), "{err}");
    }
    let err = load_str("[queues.mail]\nmax_attempts = 5000").unwrap_err();
    assert!(err.message.contains("1 to 1000"), "{err}");
    let err = load_str("[hooks.gh]\nmax_body = \"100GiB\"").unwrap_err();
    assert!(err.message.contains("64.0 MiB"), "{err}");
}

#[test]
fn the_edge_settings_have_defaults_and_fit_the_open_file_limit() {
    let config = load_str("").unwrap();
    assert_eq!(config.http.header_read_timeout, Duration::from_secs(5));
    assert_eq!(config.http.body_read_timeout, Duration::from_secs(30));
    let room = crate::listener::open_file_limit().saturating_sub(FD_RESERVE);
    assert_eq!(
        config.http.max_connections as u64,
        (DEFAULT_MAX_CONNECTIONS as u64).min(room)
    );
    assert!(!config.allow_eviction);
    let config = load_str("[http]\npublic_url = \"HTTPS://Dash.Example.com:443/x\"").unwrap();
    assert_eq!(
        config.http.public_origin.as_deref(),
        Some("https://dash.example.com")
    );
    let config = load_str(
        "[queues.out]\ntimeout = \"1h\"\n[queues.out.push]\nurl = \"http://h/\"\ntimeout = \"10m\"",
    )
    .unwrap();
    assert_eq!(
        config
            .queues
            .values()
            .next()
            .unwrap()
            .push
            .as_ref()
            .unwrap()
            .timeout,
        Duration::from_secs(600)
    );
}

#[test]
fn unknown_settings_are_errors_not_ignored() {
    let err = load_str("lisen = \"127.0.0.1:1\"").unwrap_err();
    assert!(err.to_string().contains("lisen"), "{err}");
}

#[test]
fn hooks_default_to_github_style_and_their_own_queue() {
    let config = load_str("[hooks.github]\nsecret = \"it's a secret\"").unwrap();
    let hook = &config.hooks["github"];
    assert_eq!(hook.queue.as_str(), "hooks.github");
    assert_eq!(hook.signature_header, "X-Hub-Signature-256");
    assert_eq!(hook.delivery_header.as_deref(), Some("X-GitHub-Delivery"));
}

#[test]
fn a_queues_retention_is_read_and_checked() {
    let config = load_str(
        "[queues.mail.retention]\n\
         completed = { max_count = 500, max_age = \"1h\", max_bytes = \"1MiB\" }\n\
         dead = { max_age = \"1d\" }\n",
    )
    .unwrap();
    let retention = config.queues.values().next().unwrap().retention.unwrap();
    assert_eq!(
        retention.completed,
        plimsoll::CompletedRetention::Keep(
            plimsoll::Bounds::new(500, Duration::from_secs(3600), 1 << 20).unwrap()
        )
    );
    assert_eq!(retention.dead.max_age(), Duration::from_secs(86_400));
    assert_eq!(
        retention.dead.max_count(),
        plimsoll::queue::DEFAULT_DEAD_MAX_COUNT,
        "a bound left out keeps its default"
    );
    let err = load_str("[queues.mail.retention]\ncompleted = { max_count = 5 }").unwrap_err();
    assert_eq!(err.key, "queues.mail.retention.completed.max_age");
    let err = load_str("[queues.mail.retention]\ndead = { max_count = 0 }").unwrap_err();
    assert_eq!(err.key, "queues.mail.retention.dead");
    assert!(
        load_str("[queues.mail]")
            .unwrap()
            .queues
            .values()
            .next()
            .unwrap()
            .retention
            .is_none()
    );
}

/// `./scripts/run` exited at once on a fresh machine: the default
/// `.plimsoll` was handed to redis-server as a relative path.
#[test]
fn the_default_data_folder_is_resolved_to_an_absolute_path() {
    let config = load_str("").unwrap();
    assert!(config.data_dir.is_absolute(), "{:?}", config.data_dir);
    assert_eq!(
        config.data_dir,
        std::env::current_dir().unwrap().join(DEFAULT_DATA_DIR)
    );
    let guard_history = config.guard.unwrap().history_dir.unwrap();
    assert_eq!(guard_history, config.data_dir.join("guard"));
}

/// A 600 KB webhook passed the hook's default 1 MiB `max_body`, was
/// answered 202 and spooled, and failed `PayloadTooLarge` forever on
/// replay against the queue's 512 KiB limit.
#[test]
fn a_hook_never_takes_a_body_its_queue_refuses() {
    let config = load_str("[hooks.github]\nsecret = \"it's a secret\"").unwrap();
    let derived = config.hooks["github"].max_body;
    assert_eq!(
        derived,
        plimsoll::queue::DEFAULT_PAYLOAD_LIMIT - crate::intake::envelope::ENVELOPE_RESERVE
    );

    let err = load_str("[hooks.github]\nmax_body = \"1MiB\"").unwrap_err();
    assert_eq!(err.key, "hooks.github.max_body");
    assert!(err.to_string().contains("payload_limit"), "{err}");

    let config = load_str(
        "[hooks.github]\nmax_body = \"1MiB\"\n[queues.\"hooks.github\"]\npayload_limit = \"2MiB\"",
    )
    .unwrap();
    assert_eq!(config.hooks["github"].max_body, 1 << 20);

    let err = load_str("[queues.mail]\npayload_limit = \"65MiB\"").unwrap_err();
    assert_eq!(err.key, "queues.mail.payload_limit");
}

#[test]
fn a_queue_s_idempotency_window_is_bounded() {
    let config = load_str("[queues.mail]\nidempotency_window = \"1h\"").unwrap();
    let mail = plimsoll::keyspace::QueueName::new("mail").unwrap();
    assert_eq!(
        config.queues[&mail].idempotency_window,
        Some(Duration::from_secs(3600))
    );
    for bad in ["0s", "31days"] {
        let err = load_str(&format!("[queues.mail]\nidempotency_window = \"{bad}\"")).unwrap_err();
        assert_eq!(err.key, "queues.mail.idempotency_window", "{bad}");
    }
}

#[test]
fn overrides_beat_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plimsoll.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:1000\"").unwrap();
    let config = ServerConfig::load(
        Some(&path),
        &Overrides {
            listen: Some("127.0.0.1:2000".into()),
            ..Overrides::default()
        },
    )
    .unwrap();
    assert_eq!(config.listen.port(), 2000);
}

#[test]
fn sizes_parse_with_units() {
    assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
    assert!(parse_bytes("512m").unwrap_err().contains("ambiguous"));
}

#[test]
fn durability_has_a_server_wide_default_and_a_per_queue_setting() {
    let config = load_str(
        "[redis]\ndurability = \"replicas:1:250ms\"\n[queues.mail]\ndurability = \"primary\"\n[queues.pay]\nmax_attempts = 3",
    )
    .unwrap();
    assert_eq!(
        config.durability,
        plimsoll::Durability::Replicas {
            count: 1,
            timeout: Duration::from_millis(250)
        }
    );
    let mail = QueueName::new("mail").unwrap();
    let pay = QueueName::new("pay").unwrap();
    assert_eq!(
        config.queues[&mail].durability,
        Some(plimsoll::Durability::Primary)
    );
    assert_eq!(config.queues[&pay].durability, None);
    assert_eq!(
        load_str("").unwrap().durability,
        plimsoll::Durability::Primary
    );

    let err = load_str("[queues.mail]\ndurability = \"replicas:0\"").unwrap_err();
    assert_eq!(err.key, "queues.mail.durability", "{err}");
    let err = load_str("[redis]\ndurability = \"always\"").unwrap_err();
    assert_eq!(err.key, "redis.durability", "{err}");
}

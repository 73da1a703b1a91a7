//! Unit tests over every setting of the table: each one set by flag and by
//! file (the flag winning over the file), and each one's bad values
//! refused with a message naming the key and the value.

use super::*;

/// One setting set two ways: `file` in the TOML file (as written there),
/// `flag` on the command line (as typed), and what each yields.
struct Case {
    key: &'static str,
    file: String,
    flag: String,
    read: fn(&Config) -> String,
    from_file: String,
    from_flag: String,
}

fn case(
    key: &'static str,
    file: &str,
    flag: &str,
    read: fn(&Config) -> String,
    from_file: &str,
    from_flag: &str,
) -> Case {
    Case {
        key,
        file: file.to_string(),
        flag: flag.to_string(),
        read,
        from_file: from_file.to_string(),
        from_flag: from_flag.to_string(),
    }
}

fn every_setting(dir: &std::path::Path) -> Vec<Case> {
    let d = |s: &str| toml_string(s);
    let mocks_a = dir.join("mocks-a");
    let mocks_b = dir.join("mocks-b");
    std::fs::create_dir_all(&mocks_a).expect("mkdir");
    std::fs::create_dir_all(&mocks_b).expect("mkdir");
    let token_a = dir.join("token-a");
    let token_b = dir.join("token-b");
    std::fs::write(&token_a, "file-token-aaaaaaaaaaaa\n").expect("write");
    std::fs::write(&token_b, "flag-token-bbbbbbbbbbbb\n").expect("write");
    let p = |p: &std::path::Path| p.display().to_string();
    vec![
        case(
            "listen",
            &d("127.0.0.1:7001"),
            "127.0.0.1:7002",
            |c| c.listen.to_string(),
            "127.0.0.1:7001",
            "127.0.0.1:7002",
        ),
        case(
            "relay",
            "[\"127.0.0.1:9001=a.test:80\"]",
            "127.0.0.1:9002=b.test:81",
            |c| {
                format!(
                    "{:?}",
                    c.relays
                        .iter()
                        .map(|r| format!("{}={}", r.listen, r.upstream))
                        .collect::<Vec<_>>()
                )
            },
            "[\"127.0.0.1:9001=a.test:80\"]",
            "[\"127.0.0.1:9002=b.test:81\"]",
        ),
        case(
            "idle_timeout",
            &d("2m"),
            "3m",
            |c| format!("{:?}", c.relay_limits.idle_timeout),
            "120s",
            "180s",
        ),
        case(
            "half_close_timeout",
            &d("5s"),
            "6s",
            |c| format!("{:?}", c.relay_limits.half_close_timeout),
            "5s",
            "6s",
        ),
        case(
            "connect_timeout",
            &d("3s"),
            "7s",
            |c| format!("{:?}", c.connector.connect_timeout),
            "3s",
            "7s",
        ),
        case(
            "header_timeout",
            &d("4s"),
            "8s",
            |c| format!("{:?}", c.client.header_timeout),
            "4s",
            "8s",
        ),
        case(
            "response_timeout",
            &d("9s"),
            "11s",
            |c| format!("{:?}", c.connector.response_timeout),
            "9s",
            "11s",
        ),
        case(
            "client_idle_timeout",
            &d("12s"),
            "13s",
            |c| format!("{:?}", c.client.client_idle_timeout),
            "12s",
            "13s",
        ),
        case(
            "body_idle_timeout",
            &d("14s"),
            "15s",
            |c| format!("{:?}", c.client.body_idle_timeout),
            "14s",
            "15s",
        ),
        case(
            "pool_idle_timeout",
            &d("16s"),
            "17s",
            |c| format!("{:?}", c.connector.pool_idle_timeout),
            "16s",
            "17s",
        ),
        case(
            "pool_max_idle_per_host",
            "0",
            "5",
            |c| c.connector.pool_max_idle_per_host.to_string(),
            "0",
            "5",
        ),
        case(
            "keepalive_idle",
            &d("18s"),
            "19s",
            |c| format!("{:?}", c.connector.keepalive.idle),
            "18s",
            "19s",
        ),
        case(
            "keepalive_interval",
            &d("2s"),
            "4s",
            |c| format!("{:?}", c.connector.keepalive.interval),
            "2s",
            "4s",
        ),
        case(
            "keepalive_count",
            "5",
            "6",
            |c| c.connector.keepalive.count.to_string(),
            "5",
            "6",
        ),
        case(
            "user_timeout",
            &d("21s"),
            "22s",
            |c| format!("{:?}", c.connector.keepalive.user_timeout),
            "21s",
            "22s",
        ),
        case(
            "max_connections",
            "7",
            "8",
            |c| c.client.max_connections.to_string(),
            "7",
            "8",
        ),
        case(
            "max_header_size",
            &d("4096"),
            "8192",
            |c| c.client.max_header_size.to_string(),
            "4096",
            "8192",
        ),
        case(
            "max_headers",
            "10",
            "20",
            |c| c.client.max_headers.to_string(),
            "10",
            "20",
        ),
        case(
            "drain_timeout",
            &d("1s"),
            "2s",
            |c| format!("{:?}", c.process.drain_timeout),
            "1s",
            "2s",
        ),
        case(
            "buffer_size",
            "1024",
            "2048",
            |c| c.relay_limits.buffer_size.to_string(),
            "1024",
            "2048",
        ),
        case(
            "log_level",
            &d("debug"),
            "warn,sluice=trace",
            |c| c.process.log_level.clone(),
            "debug",
            "warn,sluice=trace",
        ),
        case(
            "workers",
            "2",
            "3",
            |c| format!("{:?}", c.process.workers),
            "Some(2)",
            "Some(3)",
        ),
        case(
            "admin",
            &d("127.0.0.1:9901"),
            "off",
            |c| format!("{:?}", c.admin.admin_addr),
            "Some(127.0.0.1:9901)",
            "None",
        ),
        case(
            "admin_token",
            &d("file-token-0123456789"),
            "none",
            |c| format!("{:?}", c.admin.admin_token),
            "Given(hidden)",
            "Off",
        ),
        case(
            "admin_token_file",
            &d(&p(&token_a)),
            &p(&token_b),
            |c| match &c.admin.admin_token {
                AdminToken::Given(t) => t.clone(),
                other => format!("{other:?}"),
            },
            "file-token-aaaaaaaaaaaa",
            "flag-token-bbbbbbbbbbbb",
        ),
        case(
            "auth",
            &d("/etc/users-a"),
            "/etc/users-b",
            |c| format!("{:?}", c.users.auth_file),
            "Some(\"/etc/users-a\")",
            "Some(\"/etc/users-b\")",
        ),
        case(
            "max_connection_age",
            &d("1h"),
            "2h",
            |c| format!("{:?}", c.process.max_connection_age),
            "Some(3600s)",
            "Some(7200s)",
        ),
        case(
            "record",
            "false",
            "off",
            |c| c.record.enabled.to_string(),
            "false",
            "false",
        ),
        case(
            "data_dir",
            &d("/var/a"),
            ":memory:",
            |c| format!("{:?}", c.record.data_dir),
            "Path(\"/var/a\")",
            "Memory",
        ),
        case(
            "record_body_limit",
            &d("1KiB"),
            "0",
            |c| c.record.body_limit.to_string(),
            "1024",
            "0",
        ),
        case(
            "retain_records",
            "10",
            "20",
            |c| c.record.retain_records.to_string(),
            "10",
            "20",
        ),
        case(
            "retain_bytes",
            &d("2MiB"),
            "3MiB",
            |c| c.record.retain_bytes.to_string(),
            "2097152",
            "3145728",
        ),
        case(
            "retain_age",
            &d("1d"),
            "2d",
            |c| format!("{:?}", c.record.retain_age),
            "86400s",
            "172800s",
        ),
        case(
            "record_queue",
            "10",
            "11",
            |c| c.record.queue_records.to_string(),
            "10",
            "11",
        ),
        case(
            "record_queue_bytes",
            &d("1MiB"),
            "2MiB",
            |c| c.record.queue_body_bytes.to_string(),
            "1048576",
            "2097152",
        ),
        case(
            "rules",
            &d("/etc/rules-a"),
            "/etc/rules-b",
            |c| format!("{:?}", c.rules.rules_file),
            "Some(\"/etc/rules-a\")",
            "Some(\"/etc/rules-b\")",
        ),
        case(
            "mock_dir",
            &d(&p(&mocks_a)),
            &p(&mocks_b),
            |c| format!("{:?}", c.rules.mock_dir),
            &format!("Some({:?})", mocks_a),
            &format!("Some({:?})", mocks_b),
        ),
        case(
            "intercept",
            &d("*.example.com"),
            "all",
            |c| c.tls.intercept.clone(),
            "*.example.com",
            "all",
        ),
        case(
            "ca_cert",
            &d("/etc/team-ca.pem"),
            "/etc/other-ca.pem",
            |c| format!("{:?}", c.tls.ca_cert),
            "Some(\"/etc/team-ca.pem\")",
            "Some(\"/etc/other-ca.pem\")",
        ),
        case(
            "ca_key",
            &d("/etc/team-ca-key.pem"),
            "/etc/other-ca-key.pem",
            |c| format!("{:?}", c.tls.ca_key),
            "Some(\"/etc/team-ca-key.pem\")",
            "Some(\"/etc/other-ca-key.pem\")",
        ),
        case(
            "tls_handshake_timeout",
            &d("3s"),
            "4s",
            |c| format!("{:?}", c.tls.handshake_timeout),
            "3s",
            "4s",
        ),
        case(
            "tls_fallback",
            &d("0"),
            "1h",
            |c| format!("{:?}", c.tls.fallback),
            "None",
            "Some(3600s)",
        ),
        case(
            "upstream_ca",
            "[\"/etc/a.pem\", \"/etc/b.pem\"]",
            "/etc/c.pem",
            |c| format!("{:?}", c.tls.upstream_ca),
            "[\"/etc/a.pem\", \"/etc/b.pem\"]",
            "[\"/etc/c.pem\"]",
        ),
        case(
            "insecure_upstream",
            "\"on\"",
            "on",
            |c| c.tls.insecure_upstream.to_string(),
            "true",
            "true",
        ),
        case(
            "ws_message_limit",
            &d("1KiB"),
            "2KiB",
            |c| c.record.message_limit.to_string(),
            "1024",
            "2048",
        ),
        case(
            "ws_connection_messages",
            "10",
            "11",
            |c| c.record.connection_messages.to_string(),
            "10",
            "11",
        ),
        case(
            "ws_connection_bytes",
            &d("1MiB"),
            "2MiB",
            |c| c.record.connection_message_bytes.to_string(),
            "1048576",
            "2097152",
        ),
        case(
            "leaf_cache",
            "50",
            "60",
            |c| c.tls.leaf_cache.to_string(),
            "50",
            "60",
        ),
    ]
}

#[test]
fn every_setting_by_flag_and_by_file_and_flag_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = every_setting(dir.path());
    let mut keys: Vec<&str> = cases.iter().map(|c| c.key).collect();
    keys.sort_unstable();
    let mut all: Vec<&str> = KEYS.to_vec();
    all.sort_unstable();
    assert_eq!(keys, all, "one case per setting");
    let defaults = Config::from_args(&args()).expect("defaults");
    for c in &cases {
        let toml = format!("{} = {}", c.key, c.file);
        let by_file = from_file(&toml).unwrap_or_else(|e| panic!("{toml}: {e}"));
        assert_eq!((c.read)(&by_file), c.from_file, "{} by file", c.key);
        assert_ne!(
            (c.read)(&defaults),
            c.from_file,
            "{}: not the default",
            c.key
        );
        let by_flag = from_flag(c.key, &c.flag).unwrap_or_else(|e| panic!("--{}: {e}", c.key));
        assert_eq!((c.read)(&by_flag), c.from_flag, "{} by flag", c.key);
        // Both given: the flag wins.
        let f = file_with(&toml);
        let mut a = args();
        a.config = Some(f.path().to_path_buf());
        assert!(a.set(c.key, &c.flag));
        let both = Config::from_args(&a).unwrap_or_else(|e| panic!("{}: {e}", c.key));
        assert_eq!((c.read)(&both), c.from_flag, "{}: flag over file", c.key);
    }
}

/// Every setting that validates its text: a bad value, by flag and by
/// file, is refused with a message naming the key and the value.
#[test]
fn bad_values_by_flag_and_by_file_name_the_key_and_the_value() {
    let bad = [
        ("listen", "nowhere", "expected IP:PORT"),
        (
            "relay",
            "127.0.0.1:9000=nohost",
            "upstream must be HOST:PORT",
        ),
        ("idle_timeout", "5x", "expected a duration"),
        ("half_close_timeout", "0s", "must be greater than zero"),
        ("connect_timeout", "soon", "expected a duration"),
        ("header_timeout", "-1s", "expected a duration"),
        ("response_timeout", "1 fortnight", "expected a duration"),
        ("client_idle_timeout", "0ms", "must be greater than zero"),
        ("body_idle_timeout", "x", "expected a duration"),
        ("pool_idle_timeout", "1q", "expected a duration"),
        (
            "pool_max_idle_per_host",
            "100001",
            "must be between 0 and 100000",
        ),
        ("keepalive_idle", "0s", "must be greater than zero"),
        ("keepalive_interval", "often", "expected a duration"),
        ("keepalive_count", "128", "must be between 1 and 127"),
        ("user_timeout", "0s", "must be greater than zero"),
        ("max_connections", "0", "must be between 1 and 10000000"),
        (
            "max_header_size",
            "512",
            "must be between 1024 and 16777216",
        ),
        ("max_headers", "many", "expected a whole number"),
        ("drain_timeout", "never", "expected a duration"),
        ("buffer_size", "511", "must be between 512 and 16777216"),
        ("log_level", "sluice=loud", "not a log level or filter"),
        ("workers", "1025", "must be between 1 and 1024"),
        ("admin", "localhost:8900", "expected IP:PORT"),
        ("max_connection_age", "old", "expected a duration"),
        ("record", "maybe", "expected on or off"),
        ("data_dir", " ", "expected a folder or :memory:"),
        ("record_body_limit", "65MiB", "at most 64MiB per body"),
        (
            "retain_records",
            "4294967296",
            "must be between 1 and 4294967295",
        ),
        ("retain_bytes", "1KiB", "at least 1MiB"),
        ("retain_age", "forever", "expected a duration"),
        ("record_queue", "1000001", "must be between 1 and 1000000"),
        ("record_queue_bytes", "5GiB", "at most 4GiB"),
        ("ws_message_limit", "17MiB", "at most 16MiB per message"),
        ("ws_connection_bytes", "2GiB", "at most 1GiB per connection"),
        (
            "record_body_limit",
            "12 parsecs",
            "unknown size unit `parsecs`",
        ),
        ("mock_dir", "/nonexistent/mocks", "not a folder"),
        ("tls_handshake_timeout", "0s", "must be greater than zero"),
        ("tls_fallback", "a while", "expected a duration"),
        ("insecure_upstream", "perhaps", "expected on or off"),
        ("leaf_cache", "0", "must be between 1 and 1000000"),
    ];
    for (key, text, reason) in bad {
        let value = if key == "data_dir" { "" } else { text };
        let want = format!("{key}: invalid value `{value}`: ");
        let e = from_flag(key, text).unwrap_err().to_string();
        assert!(
            e.starts_with(&want) && e.contains(reason),
            "--{key} {text}: {e}"
        );
        let toml = if key == "relay" {
            format!("{key} = [{}]", toml_string(text))
        } else {
            format!("{key} = {}", toml_string(text))
        };
        let e = from_file(&toml).unwrap_err().to_string();
        assert!(e.starts_with(&want) && e.contains(reason), "{toml}: {e}");
    }
}

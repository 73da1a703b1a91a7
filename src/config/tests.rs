//! Unit tests of the configuration: every setting by flag and by file,
//! flag over file over default, defaults, and messages naming the key.

use std::io::Write;
use std::time::Duration;

use super::*;

#[path = "settings_tests.rs"]
mod settings;

fn args() -> RunArgs {
    RunArgs::default()
}

fn file_with(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    writeln!(f, "{text}").expect("write");
    f
}

fn from_file(text: &str) -> Result<Config, ConfigError> {
    let f = file_with(text);
    let mut a = args();
    a.config = Some(f.path().to_path_buf());
    Config::from_args(&a)
}

fn from_flag(key: &str, text: &str) -> Result<Config, ConfigError> {
    let mut a = args();
    assert!(a.set(key, text), "no flag for {key}");
    Config::from_args(&a)
}

/// A TOML string literal holding `text`.
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

#[test]
fn defaults_when_nothing_given() {
    let c = Config::from_args(&args()).expect("defaults");
    assert_eq!(c.listen, "127.0.0.1:8899".parse().expect("addr"));
    assert_eq!(c.relay_limits.idle_timeout, Duration::from_secs(300));
    assert_eq!(c.connector.keepalive.user_timeout, Duration::from_secs(60));
    // The binary's own defaults: an admin server, records on disk.
    assert_eq!(
        c.admin.admin_addr,
        Some(DEFAULT_ADMIN.parse().expect("addr"))
    );
    assert_eq!(c.record.data_dir, DataDir::Path(default_data_dir()));
    assert_eq!(c.admin.admin_token, AdminToken::Generate);
}

/// The defaults, as they were spelled before the table existed.
#[test]
fn library_defaults_are_the_documented_ones() {
    let s = Duration::from_secs;
    let c = Config::default();
    assert_eq!(c.listen, "127.0.0.1:8899".parse().expect("addr"));
    assert!(c.relays.is_empty());
    assert_eq!(
        c.client,
        ClientLimits {
            header_timeout: s(30),
            client_idle_timeout: s(60),
            body_idle_timeout: s(60),
            max_connections: 10_000,
            max_header_size: 64 * 1024,
            max_headers: 100,
        }
    );
    assert_eq!(
        c.connector,
        ConnectorConfig {
            connect_timeout: s(10),
            response_timeout: s(60),
            pool_idle_timeout: s(30),
            pool_max_idle_per_host: 64,
            keepalive: Keepalive {
                idle: s(30),
                interval: s(10),
                count: 3,
                user_timeout: s(60),
            },
        }
    );
    assert_eq!(
        c.relay_limits,
        RelayLimitsConfig {
            idle_timeout: s(300),
            half_close_timeout: s(60),
            buffer_size: 64 * 1024,
        }
    );
    assert_eq!(
        c.admin,
        AdminConfig {
            admin_addr: None,
            admin_token: AdminToken::Generate,
            test_hooks: false,
        }
    );
    assert_eq!(c.users, UsersConfig { auth_file: None });
    assert_eq!(
        c.record,
        Recording {
            enabled: true,
            data_dir: DataDir::Memory,
            body_limit: 1024 * 1024,
            message_limit: 64 * 1024,
            connection_messages: 10_000,
            connection_message_bytes: 16 * 1024 * 1024,
            retain_records: 1_000_000,
            retain_bytes: 1024 * 1024 * 1024,
            retain_age: s(7 * 24 * 3600),
            queue_records: 16_384,
            queue_body_bytes: 64 * 1024 * 1024,
        }
    );
    assert_eq!(Recording::default(), c.record);
    assert_eq!(
        c.rules,
        RulesConfig {
            rules_file: None,
            mock_dir: None,
        }
    );
    assert_eq!(
        c.process,
        ProcessConfig {
            log_level: "info".into(),
            workers: None,
            drain_timeout: s(30),
            max_connection_age: None,
        }
    );
    assert_eq!(DEFAULT_ADMIN, "127.0.0.1:8900");
}

#[test]
fn durations_accept_common_units() {
    assert_eq!(parse_duration("k", "30s").unwrap(), Duration::from_secs(30));
    assert_eq!(parse_duration("k", "5m").unwrap(), Duration::from_secs(300));
    assert_eq!(
        parse_duration("k", "250ms").unwrap(),
        Duration::from_millis(250)
    );
    let e = parse_duration("idle_timeout", "5x")
        .unwrap_err()
        .to_string();
    assert!(e.contains("idle_timeout") && e.contains("5x"), "{e}");
    assert!(parse_duration("k", "0s").is_err());
}

#[test]
fn flags_override_file_and_file_overrides_defaults() {
    let f = file_with(
        "idle_timeout = \"2m\"\nconnect_timeout = \"3s\"\nkeepalive_count = 5\nrelay = [\"127.0.0.1:9000=localhost:80\"]",
    );
    let mut a = args();
    a.config = Some(f.path().to_path_buf());
    a.connect_timeout = Some("7s".into());
    let c = Config::from_args(&a).unwrap();
    assert_eq!(c.relay_limits.idle_timeout, Duration::from_secs(120));
    assert_eq!(c.connector.connect_timeout, Duration::from_secs(7));
    assert_eq!(c.connector.keepalive.count, 5);
    // The user timeout follows the keepalive settings unless given.
    assert_eq!(
        c.connector.keepalive.user_timeout,
        Duration::from_secs(30 + 10 * 5)
    );
    assert_eq!(c.relays[0].upstream, "localhost:80");
    assert_eq!(c.client.header_timeout, Duration::from_secs(30), "default");
    // A flag list replaces the file's list.
    a.relay = vec!["127.0.0.1:9001=localhost:81".into()];
    let c = Config::from_args(&a).unwrap();
    assert_eq!(c.relays.len(), 1);
    assert_eq!(c.relays[0].upstream, "localhost:81");
}

#[test]
fn unknown_keys_and_bad_values_name_the_key() {
    let e = from_file("idle_timout = \"2m\"").unwrap_err().to_string();
    assert!(e.contains("idle_timout"), "{e}");
    // The schema lists every key, in table order.
    let listed = KEYS
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    assert!(e.contains(&format!("expected one of {listed}")), "{e}");
    assert!(e.ends_with("`insecure_upstream`, `leaf_cache`"), "{e}");

    let e = from_file("max_connections = \"lots\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_connections") && e.contains("lots"), "{e}");
    // A key whose TOML type is a string says so.
    let e = from_file("listen = 5").unwrap_err().to_string();
    assert!(
        e.contains("invalid type: integer `5`, expected a string"),
        "{e}"
    );

    let mut a = args();
    a.relay = vec!["127.0.0.1:9000".into()];
    let e = Config::from_args(&a).unwrap_err().to_string();
    assert!(e.contains("relay") && e.contains("127.0.0.1:9000"), "{e}");
    let mut a = args();
    a.listen = Some("127.0.0.1:0".into());
    a.relay = vec!["127.0.0.1:0=localhost:80".into()];
    assert!(
        Config::from_args(&a).is_ok(),
        "two ephemeral ports never clash"
    );
    a.listen = Some("127.0.0.1:9000".into());
    a.relay = vec!["127.0.0.1:9000=localhost:80".into()];
    assert!(Config::from_args(&a).is_err());
    let mut a = args();
    a.listen = Some("nowhere".into());
    assert!(Config::from_args(&a)
        .unwrap_err()
        .to_string()
        .contains("nowhere"));
}

#[test]
fn admin_token_rules_and_secrecy() {
    let e = from_flag("admin_token", "short").unwrap_err().to_string();
    assert_eq!(
        e,
        "admin_token: invalid value `(hidden)`: must be at least 16 characters"
    );
    let e = from_file("admin_token = \"short-secret\"")
        .unwrap_err()
        .to_string();
    assert!(!e.contains("short-secret"), "{e}");
    let mut a = args();
    a.admin = Some("0.0.0.0:8900".into());
    let e = Config::from_args(&a).unwrap_err().to_string();
    assert!(e.contains("not a loopback address"), "{e}");
    a.admin_token = Some("none".into());
    let e = Config::from_args(&a).unwrap_err().to_string();
    assert!(e.contains("--admin-token none is for a loopback"), "{e}");
    a.admin_token = Some("a-long-enough-token-0123".into());
    let c = Config::from_args(&a).expect("a token of the user's");
    assert_eq!(format!("{:?}", c.admin.admin_token), "Given(hidden)");
    assert!(!format!("{c:?}").contains("a-long-enough-token-0123"));
    let mut a = args();
    a.admin = Some("127.0.0.1:8899".into());
    let e = Config::from_args(&a).unwrap_err().to_string();
    assert!(e.contains("same address as --listen"), "{e}");
    let e = from_flag("admin_token_file", "/nonexistent/token")
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/token"), "{e}");
}

#[test]
fn help_shows_every_flag_with_its_default_and_no_secret() {
    use clap::{Args as _, CommandFactory};
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }
    let cmd = Cli::command();
    let flags: Vec<String> = cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| a.get_long().map(str::to_string))
        .filter(|l| l != "help" && l != "config")
        .collect();
    let mut keys: Vec<String> = KEYS.iter().map(|k| k.replace('_', "-")).collect();
    let mut shown = flags.clone();
    keys.sort();
    shown.sort();
    assert_eq!(shown, keys, "one flag per key");
    let token = cmd
        .get_arguments()
        .find(|a| a.get_long() == Some("admin-token"))
        .expect("--admin-token");
    assert!(token.is_hide_env_values_set());
    assert_eq!(
        token.get_env().and_then(|e| e.to_str()),
        Some("SLUICE_ADMIN_TOKEN")
    );
    let help = RunArgs::augment_args(clap::Command::new("t"))
        .render_help()
        .to_string();
    assert!(help.contains("no bytes either way [default: 5m]"), "{help}");
    assert!(help.contains("--record-queue-bytes"), "{help}");
    assert_eq!(defaults::idle_timeout, "5m");
}

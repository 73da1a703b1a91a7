//! Builds a [`Config`]: reads the file, resolves every setting (flag, else
//! file, else default) through the table, lays the settings out in
//! sections and checks what involves more than one of them.
//!
//! Invariant: a setting's own checks run in table order, then the checks
//! across settings (the admin lock, address clashes), so the first error
//! reported is the first bad value in that order.

use std::path::Path;

use super::knobs::{FileConfig, Knobs, RunArgs};
use super::parse::{invalid, ConfigError};
use super::sections::{
    AdminConfig, AdminToken, ClientLimits, Config, ConnectorConfig, Keepalive, ProcessConfig,
    Recording, RelayLimitsConfig, RulesConfig, TlsConfig, UsersConfig, ADMIN_TOKEN_OFF,
};
use super::table::Profile;

/// The library's recording defaults: the binary's, but in memory.
impl Default for Recording {
    fn default() -> Self {
        Config::default().record
    }
}

/// The library's defaults: the binary's, without an admin server and
/// with records in memory.
impl Default for Config {
    fn default() -> Self {
        // Defaults are constants, not input: a unit test proves they parse.
        Knobs::resolve(
            &RunArgs::default(),
            &FileConfig::default(),
            Profile::Library,
        )
        .and_then(Config::from_knobs)
        .expect("the built-in defaults are valid")
    }
}

impl Config {
    /// Builds the configuration from flags and the file they may name.
    pub fn from_args(args: &RunArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Config::from_knobs(Knobs::resolve(args, &file, Profile::Binary)?)
    }

    /// Lays the settings out in sections, then checks what involves more
    /// than one of them.
    fn from_knobs(k: Knobs) -> Result<Config, ConfigError> {
        let derived_user_timeout = k.keepalive_idle + k.keepalive_interval * k.keepalive_count;
        let c = Config {
            listen: k.listen,
            relays: k.relay,
            client: ClientLimits {
                header_timeout: k.header_timeout,
                client_idle_timeout: k.client_idle_timeout,
                body_idle_timeout: k.body_idle_timeout,
                max_connections: k.max_connections,
                max_header_size: k.max_header_size,
                max_headers: k.max_headers,
            },
            connector: ConnectorConfig {
                connect_timeout: k.connect_timeout,
                response_timeout: k.response_timeout,
                pool_idle_timeout: k.pool_idle_timeout,
                pool_max_idle_per_host: k.pool_max_idle_per_host,
                keepalive: Keepalive {
                    idle: k.keepalive_idle,
                    interval: k.keepalive_interval,
                    count: k.keepalive_count,
                    user_timeout: k.user_timeout.unwrap_or(derived_user_timeout),
                },
            },
            relay_limits: RelayLimitsConfig {
                idle_timeout: k.idle_timeout,
                half_close_timeout: k.half_close_timeout,
                buffer_size: k.buffer_size,
            },
            admin: AdminConfig {
                admin_addr: k.admin,
                // The file, when named, holds the token.
                admin_token: admin_token(k.admin_token_file.or(k.admin_token))?,
                test_hooks: k.test_hooks,
            },
            users: UsersConfig { auth_file: k.auth },
            record: Recording {
                enabled: k.record,
                data_dir: k.data_dir,
                body_limit: k.record_body_limit,
                message_limit: k.ws_message_limit,
                connection_messages: k.ws_connection_messages,
                connection_message_bytes: k.ws_connection_bytes,
                retain_records: k.retain_records,
                retain_bytes: k.retain_bytes,
                retain_age: k.retain_age,
                queue_records: k.record_queue,
                queue_body_bytes: k.record_queue_bytes,
            },
            rules: RulesConfig {
                rules_file: k.rules,
                mock_dir: k.mock_dir,
            },
            process: ProcessConfig {
                log_level: k.log_level,
                workers: k.workers,
                drain_timeout: k.drain_timeout,
                max_connection_age: k.max_connection_age,
            },
            tls: TlsConfig {
                intercept: k.intercept,
                ca_cert: k.ca_cert,
                ca_key: k.ca_key,
                handshake_timeout: k.tls_handshake_timeout,
                fallback: k.tls_fallback,
                upstream_ca: k.upstream_ca,
                insecure_upstream: k.insecure_upstream,
                leaf_cache: k.leaf_cache,
            },
        };
        c.check_addresses()?;
        Ok(c)
    }

    /// A non-loopback admin needs a token of the user's; no two listeners
    /// on one address (port 0 asks for an ephemeral port each: no clash).
    fn check_addresses(&self) -> Result<(), ConfigError> {
        if let Some(a) = self.admin.admin_addr {
            if !a.ip().is_loopback() {
                match self.admin.admin_token {
                    AdminToken::Given(_) => {}
                    AdminToken::Generate => {
                        return Err(invalid(
                            "admin",
                            &a.to_string(),
                            "not a loopback address: give --admin-token or --admin-token-file",
                        ))
                    }
                    AdminToken::Off => {
                        return Err(invalid(
                            "admin",
                            &a.to_string(),
                            "not a loopback address: --admin-token none is for a loopback \
                             admin only; give --admin-token or --admin-token-file",
                        ))
                    }
                }
            }
            if a == self.listen && a.port() != 0 {
                return Err(invalid("admin", &a.to_string(), "same address as --listen"));
            }
        }
        for r in &self.relays {
            if r.listen == self.listen && r.listen.port() != 0 {
                return Err(invalid(
                    "relay",
                    &r.listen.to_string(),
                    "same address as --listen",
                ));
            }
        }
        Ok(())
    }
}

/// The admin lock from the token given, if any.
fn admin_token(given: Option<String>) -> Result<AdminToken, ConfigError> {
    Ok(match given {
        None => AdminToken::Generate,
        Some(t) if t.trim().eq_ignore_ascii_case(ADMIN_TOKEN_OFF) => AdminToken::Off,
        Some(t) if t.len() < 16 => {
            // The value is a secret: the message must not hold it.
            return Err(invalid(
                "admin_token",
                "(hidden)",
                "must be at least 16 characters",
            ));
        }
        Some(t) => AdminToken::Given(t),
    })
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })
}

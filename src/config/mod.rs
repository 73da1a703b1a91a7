//! Configuration: command-line flags merged over an optional TOML file,
//! validated into one [`Config`] of per-subsystem sections, with built-in
//! defaults.
//!
//! Every setting is declared once, as a row of the table in `knobs.rs`
//! (key, type, value name, default, help, parser); the row makes its flag,
//! its TOML key, its default and its resolution (`table.rs` says how).
//! `layout.rs` lays the resolved settings out in the sections of
//! `sections.rs`, one per subsystem, and checks what involves more than
//! one setting; `parse.rs` turns text into values. Each subsystem takes
//! its section: the listeners and HTTP server
//! [`ClientLimits`], upstream connects [`ConnectorConfig`], the relay
//! [`RelayLimitsConfig`], the admin server [`AdminConfig`], proxy users
//! [`UsersConfig`], the recorder [`Recording`], the rules [`RulesConfig`]
//! and the process itself [`ProcessConfig`].
//!
//! Invariants: every value in a [`Config`] has been validated; a bad key or
//! value is rejected at start with a message naming the key and the value;
//! flags override the file, the file overrides the defaults. Modules,
//! bottom up: `sections`, `parse`, `table` (the table's macros), `knobs`
//! (the table), `layout`; this file only re-exports.

#[macro_use]
mod table;
mod knobs;
mod layout;
mod parse;
mod sections;
#[cfg(test)]
mod tests;

pub use knobs::{defaults, RunArgs, KEYS};
pub use parse::{parse_bytes, parse_duration, ConfigError};
pub use sections::{
    default_data_dir, AdminConfig, AdminToken, ClientLimits, Config, ConnectorConfig, DataDir,
    Keepalive, ProcessConfig, Recording, RelayLimitsConfig, RelaySpec, RulesConfig, TlsConfig,
    UsersConfig, ADMIN_TOKEN_FILE, ADMIN_TOKEN_OFF,
};

/// The admin address the binary uses when none is given.
pub const DEFAULT_ADMIN: &str = defaults::admin;

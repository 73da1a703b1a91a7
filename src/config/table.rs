//! The settings table's machinery: the `knobs!` macro (used once, in
//! `knobs.rs`) turns one row per setting into its clap flag (in
//! [`RunArgs`](super::RunArgs)), its TOML key (in the file's schema,
//! `FileConfig`), its default, its help text and its resolved, validated
//! value (in `Knobs`), plus [`KEYS`](super::KEYS) and
//! [`defaults`](super::defaults).
//!
//! A row reads
//! ```text
//! key: Type = kind "VALUE_NAME" [default] "help" { extra clap settings } => |raw| value;
//! ```
//! - `key` is the TOML key and, with `-` for `_`, the flag; messages name it;
//! - `kind` says how the setting is written: `value` (any TOML value,
//!   read as text like a flag), `string` (a TOML string), `path` (a
//!   TOML string, a path flag) or `list` (a repeatable flag, a TOML array);
//! - `[default "5m"]` is parsed like user text when nothing is given and
//!   shown in `--help` as `[default: 5m]`; `library "off"` replaces it for
//!   `Config::default()` (the in-process defaults); `[shown "..."]` only
//!   shows a default the row's code computes; `[]` has none;
//! - `raw` is a `Raw` (text and key) for a row with a default, an
//!   `Option<Raw>` without one, an `Option<RawPath>` for paths and a
//!   `Vec<Raw>` for lists; the expression turns it into the `Type`.
//!
//! Invariants: a setting is declared by its row alone (its field in
//! `sections.rs` and its place in `layout.rs` are checked by the compiler:
//! an unplaced setting is an unread field); flag beats file beats default
//! for every row alike; rows resolve in table order, so the first bad
//! value in that order is the one reported.

/// Whose defaults apply when a setting is not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Profile {
    /// The `sluice` binary: an admin server on its default address, the
    /// store in the user's data folder.
    Binary,
    /// [`Config::default`](super::Config): no admin server, nothing on disk.
    Library,
}

/// A flag's text, else the file's, with the key.
pub(super) fn pick(
    flag: Option<&String>,
    file: Option<String>,
    key: &'static str,
) -> Option<super::parse::Raw> {
    flag.cloned()
        .or(file)
        .map(|text| super::parse::Raw { text, key })
}

/// The default text a profile uses: the library's when the row has one.
pub(super) fn default_text(
    profile: Profile,
    binary: &'static str,
    library: Option<&'static str>,
) -> &'static str {
    match (profile, library) {
        (Profile::Library, Some(l)) => l,
        _ => binary,
    }
}

/// `RunArgs`, one flag per row. A muncher, so that each field's type is
/// written out where clap's derive can see it (it reads `Option`/`Vec`
/// from the tokens to decide how a flag is taken).
macro_rules! knob_flags {
    (@fields [$($fields:tt)*]) => {
        /// Flags of `sluice run` (and of plain `sluice`). Every flag is optional so
        /// that an absent flag leaves the file's value in place.
        #[derive(Debug, Clone, Default, clap::Args)]
        pub struct RunArgs {
            /// TOML config file; flags given on the command line override it.
            #[arg(long, value_name = "FILE")]
            pub config: Option<std::path::PathBuf>,
            $($fields)*
            /// Test-only admin routes.
            #[arg(long, hide = true)]
            pub test_hooks: bool,
        }
    };
    (@fields [$($fields:tt)*]
        $key:ident $kind:ident $value_name:literal [$($dflt:tt)*] $help:literal {$($arg:tt)*};
        $($rest:tt)*
    ) => {
        knob_flags!(@field [$($fields)*] $kind
            [#[arg(long, value_name = $value_name, help = knob_help!($help [$($dflt)*]), $($arg)*)]]
            $key; $($rest)*);
    };
    (@field [$($fields:tt)*] value [$($attr:tt)*] $key:ident; $($rest:tt)*) => {
        knob_flags!(@fields [$($fields)* $($attr)* pub $key: Option<String>,] $($rest)*);
    };
    (@field [$($fields:tt)*] string [$($attr:tt)*] $key:ident; $($rest:tt)*) => {
        knob_flags!(@fields [$($fields)* $($attr)* pub $key: Option<String>,] $($rest)*);
    };
    (@field [$($fields:tt)*] path [$($attr:tt)*] $key:ident; $($rest:tt)*) => {
        knob_flags!(@fields [$($fields)* $($attr)* pub $key: Option<std::path::PathBuf>,] $($rest)*);
    };
    (@field [$($fields:tt)*] list [$($attr:tt)*] $key:ident; $($rest:tt)*) => {
        knob_flags!(@fields [$($fields)* $($attr)* pub $key: Vec<String>,] $($rest)*);
    };
}

/// The type a TOML key of this kind deserializes into.
macro_rules! file_ty {
    (value) => { Option<toml::Value> };
    (string) => { Option<String> };
    (path) => { Option<std::path::PathBuf> };
    (list) => { Option<Vec<String>> };
}

/// The help line: the row's text, plus the default it shows.
macro_rules! knob_help {
    ($help:literal [default $d:literal $(library $l:literal)?]) => {
        concat!($help, " [default: ", $d, "]")
    };
    ($help:literal [shown $s:literal $(library $l:literal)?]) => {
        concat!($help, " [default: ", $s, "]")
    };
    ($help:literal []) => {
        $help
    };
}

/// The file's text for a text kind.
macro_rules! file_text {
    (value, $file:expr) => {
        $file.as_ref().map($crate::config::parse::value_text)
    };
    (string, $file:expr) => {
        $file.clone()
    };
}

/// What a row's expression receives (see the module doc).
macro_rules! knob_raw {
    ($kind:ident [default $d:literal $(library $l:literal)?] $flag:expr, $file:expr, $key:expr, $profile:expr) => {
        $crate::config::table::pick($flag.as_ref(), file_text!($kind, $file), $key).unwrap_or_else(
            || {
                let library: Option<&'static str> = None $(.or(Some($l)))?;
                $crate::config::parse::Raw::new(
                    $crate::config::table::default_text($profile, $d, library),
                    $key,
                )
            },
        )
    };
    (path [$(shown $s:literal)?] $flag:expr, $file:expr, $key:expr, $profile:expr) => {
        $flag
            .clone()
            .or_else(|| $file.clone())
            .map(|path| $crate::config::parse::RawPath { path, key: $key })
    };
    (list [] $flag:expr, $file:expr, $key:expr, $profile:expr) => {
        if $flag.is_empty() {
            $file.clone().unwrap_or_default()
        } else {
            $flag.clone()
        }
        .into_iter()
        .map(|text| $crate::config::parse::Raw { text, key: $key })
        .collect::<Vec<_>>()
    };
    ($kind:ident [$(shown $s:literal)? $(library $l:literal)?] $flag:expr, $file:expr, $key:expr, $profile:expr) => {
        $crate::config::table::pick($flag.as_ref(), file_text!($kind, $file), $key).or_else(|| {
            let library: Option<&'static str> = None $(.or(Some($l)))?;
            match $profile {
                $crate::config::table::Profile::Library => {
                    library.map(|text| $crate::config::parse::Raw::new(text, $key))
                }
                $crate::config::table::Profile::Binary => None,
            }
        })
    };
}

/// A `defaults::KEY` constant for a row with a default text.
macro_rules! knob_default_const {
    ($key:ident [default $d:literal $(library $l:literal)?]) => {
        pub const $key: &str = $d;
    };
    ($key:ident [$($other:tt)*]) => {};
}

/// Sets a flag from text (unit tests drive every row through it).
#[cfg(test)]
macro_rules! knob_set_flag {
    (value, $field:expr, $text:expr) => {
        $field = Some($text.to_string())
    };
    (string, $field:expr, $text:expr) => {
        $field = Some($text.to_string())
    };
    (path, $field:expr, $text:expr) => {
        $field = Some(std::path::PathBuf::from($text))
    };
    (list, $field:expr, $text:expr) => {
        $field.push($text.to_string())
    };
}

/// The table: generates `RunArgs`, `FileConfig`, `Knobs`, `KEYS` and
/// `defaults` from one row per setting (see the module doc).
macro_rules! knobs {
    (
        $(
            $key:ident : $ty:ty = $kind:ident $value_name:literal [$($dflt:tt)*] $help:literal
                $({ $($arg:tt)* })?
                => |$raw:ident| $value:expr;
        )*
    ) => {
        knob_flags! { @fields []
            $( $key $kind $value_name [$($dflt)*] $help { $($($arg)*)? }; )*
        }

        /// The TOML file: the same keys as the flags, with `_` for `-`. Values are
        /// read as written and validated with the flags, so messages name the key.
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct FileConfig {
            $( $key: file_ty!($kind), )*
        }

        /// Every setting resolved (flag, else file, else default) and
        /// validated on its own; [`Config`](super::Config) is laid out from it.
        pub(super) struct Knobs {
            $( pub(super) $key: $ty, )*
            pub(super) test_hooks: bool,
        }

        impl Knobs {
            pub(super) fn resolve(
                args: &RunArgs,
                file: &FileConfig,
                profile: $crate::config::table::Profile,
            ) -> Result<Knobs, $crate::config::parse::ConfigError> {
                Ok(Knobs {
                    $(
                        $key: {
                            let $raw = knob_raw!(
                                $kind [$($dflt)*] args.$key, file.$key, stringify!($key), profile
                            );
                            let value: Result<$ty, $crate::config::parse::ConfigError> = $value;
                            value?
                        },
                    )*
                    test_hooks: args.test_hooks,
                })
            }
        }

        /// Every TOML key, in table order (the order the file's schema lists them).
        pub const KEYS: &[&str] = &[$(stringify!($key)),*];

        /// The default text of every setting that has one, as `--help` shows it.
        #[allow(non_upper_case_globals)]
        pub mod defaults {
            $( knob_default_const!($key [$($dflt)*]); )*
        }

        #[cfg(test)]
        impl RunArgs {
            /// Sets the flag of `key` from text; false for an unknown key.
            pub(super) fn set(&mut self, key: &str, text: &str) -> bool {
                match key {
                    $( stringify!($key) => knob_set_flag!($kind, self.$key, text), )*
                    _ => return false,
                }
                true
            }
        }
    };
}

//! [`InterceptScope`]: the `--intercept` setting (`off`, `all`, or MATCH
//! patterns separated by commas), answered by the rule matcher itself.
//!
//! Invariants: a pattern means exactly what it means as a rule's MATCH,
//! because each one is compiled as the rule `PATTERN intercept://` by the
//! rule parser and compiler and asked through
//! [`RuleSet::plan_connect`]: there is no second matcher to drift; a
//! pattern is one MATCH word, and anything that would make that rule line
//! say more (spaces, quotes, `#`) is an error rather than part of a rule;
//! every error names its pattern; [`InterceptScope::matches`] is pure and
//! never panics.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use super::lexer::tokenize;
use super::load;
use super::matcher::RuleSet;

/// Which CONNECT tunnels the `--intercept` setting decrypts. Equal when
/// the settings say the same (`ALL` equals `all`; patterns compare as
/// written, after trimming).
#[derive(Clone, Default)]
pub struct InterceptScope {
    scope: Scope,
}

#[derive(Clone, Default)]
enum Scope {
    #[default]
    Off,
    All,
    Patterns {
        /// As given, trimmed: the setting's identity and its text.
        items: Vec<String>,
        /// One `PATTERN intercept://` rule per item; shared, so cloning
        /// a config does not copy compiled regexes.
        set: Arc<RuleSet>,
    },
}

const USAGE: &str = "expected `off`, `all` or a comma-separated list of MATCH patterns (e.g. `example.com,*.internal,10.0.0.5:8443`)";

impl InterceptScope {
    /// `off`, `all` (either in any case), or `PATTERN[,PATTERN...]` in
    /// rule MATCH syntax: `host`, `host:port`, `*.suffix`, `*`,
    /// `[v6]:port`, `/regex/` (a regex cannot hold a comma here: use a
    /// rule for such a one). Every bad pattern is reported, by name.
    pub fn parse(text: &str) -> Result<InterceptScope, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("off") {
            return Ok(InterceptScope { scope: Scope::Off });
        }
        if text.eq_ignore_ascii_case("all") {
            return Ok(InterceptScope { scope: Scope::All });
        }
        if text.is_empty() {
            return Err(USAGE.to_string());
        }
        let mut items = Vec::new();
        let mut errors = Vec::new();
        for part in text.split(',') {
            let item = part.trim();
            match one_word(item) {
                Ok(()) => items.push(item.to_string()),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        // Line N of this text is items[N - 1], so each error of the rule
        // parser can be told by its pattern.
        let rules: String = items
            .iter()
            .map(|i| format!("{i} intercept://\n"))
            .collect();
        match load::parse(&rules) {
            Ok(set) => Ok(InterceptScope {
                scope: Scope::Patterns {
                    items,
                    set: Arc::new(set),
                },
            }),
            Err(rule_errors) => Err(rule_errors
                .iter()
                .map(|e| {
                    let item = e
                        .line
                        .checked_sub(1)
                        .and_then(|i| items.get(i))
                        .map_or("?", String::as_str);
                    format!("pattern `{item}`: {}", e.message)
                })
                .collect::<Vec<_>>()
                .join("; ")),
        }
    }

    /// Whether a tunnel to `host:port` from `client` is in scope: `off`
    /// never, `all` always, patterns as a CONNECT rule with that MATCH
    /// would match.
    pub fn matches(&self, host: &str, port: u16, client: IpAddr) -> bool {
        match &self.scope {
            Scope::Off => false,
            Scope::All => true,
            Scope::Patterns { set, .. } => set.plan_connect(host, port, client).intercept.is_some(),
        }
    }

    /// True for `off`: nothing is in scope.
    pub fn is_off(&self) -> bool {
        matches!(self.scope, Scope::Off)
    }
}

/// A list item must stay one MATCH word once it is a rule line: the
/// lexer is asked, so what counts as a separator, a comment or a quote is
/// the rule language's own answer.
fn one_word(item: &str) -> Result<(), String> {
    if item.is_empty() {
        return Err(format!("an empty pattern in the list: {USAGE}"));
    }
    if item.eq_ignore_ascii_case("off") || item.eq_ignore_ascii_case("all") {
        return Err(format!(
            "`{item}` stands alone, not as one pattern of a list (use `*` for every host)"
        ));
    }
    match tokenize(item) {
        Ok(tokens) if tokens.len() == 1 && tokens[0].text == item => Ok(()),
        _ => Err(format!(
            "pattern `{item}`: a pattern is one MATCH word, without spaces, quotes or `#`"
        )),
    }
}

/// The setting as it would be written: `off`, `all`, or the patterns.
impl fmt::Display for InterceptScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scope {
            Scope::Off => f.write_str("off"),
            Scope::All => f.write_str("all"),
            Scope::Patterns { items, .. } => f.write_str(&items.join(",")),
        }
    }
}

/// The text, not the compiled rules (which would be pages of automata).
impl fmt::Debug for InterceptScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("InterceptScope")
            .field(&self.to_string())
            .finish()
    }
}

/// The compiled rules follow from the items, so comparing what was
/// written is comparing what matches.
impl PartialEq for InterceptScope {
    fn eq(&self, other: &InterceptScope) -> bool {
        match (&self.scope, &other.scope) {
            (Scope::Off, Scope::Off) | (Scope::All, Scope::All) => true,
            (Scope::Patterns { items: a, .. }, Scope::Patterns { items: b, .. }) => a == b,
            _ => false,
        }
    }
}

impl Eq for InterceptScope {}

#[cfg(test)]
#[path = "scope_tests.rs"]
mod tests;

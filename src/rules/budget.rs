//! The compile-size budget of a rule file's regexes.
//!
//! A regex's compiled size has little to do with its length: `\w{50}`
//! is eight characters and, with Unicode classes, several MiB of automata
//! (a forward and a reverse NFA, then lazy-DFA caches). Without a bound,
//! a few KiB of rules cost gigabytes. This module owns the limits and the
//! running total of one rule file.
//!
//! Invariants: every regex a rule file compiles (MATCH `/regex/` and
//! `bodySub://`) is built with [`SIZE_LIMIT`] and [`DFA_CACHE`]; the heap
//! size of all of them together (as the regex engine reports it: NFAs,
//! one-pass DFA, prefilters) stays under [`TOTAL`], so memory for a file's
//! regexes is bounded whatever the number of rules; a regex over either
//! bound is an error at its line and column.

use regex_automata::meta;

/// Largest NFA one regex may compile to (the regex crate's `size_limit`,
/// applied to the forward and to the reverse NFA).
pub(crate) const SIZE_LIMIT: usize = 1 << 20;

/// Lazy-DFA cache of one regex (the regex crate's `dfa_size_limit`): it
/// is allocated per thread that matches, so it is kept small.
pub(crate) const DFA_CACHE: usize = 1 << 20;

/// All of one rule file's regexes together, counted by heap size.
/// Measured: a file right at the budget (about 600 rules like
/// `/^http://h1\.test/(?-u:\w){40}x/`) costs ~36 MiB of RSS to compile and
/// hold, RegexSet included.
pub(crate) const TOTAL: usize = 4 << 20;

/// NFA limit of the `RegexSet` of MATCH regexes: their union, each already
/// within [`TOTAL`], so this only stops what the per-regex count missed.
pub(crate) const SET_LIMIT: usize = 32 << 20;

/// The running total of one rule file's regexes.
#[derive(Debug, Default)]
pub(crate) struct RegexBudget {
    used: usize,
}

impl RegexBudget {
    /// Charges one regex that already compiled under [`SIZE_LIMIT`];
    /// `Err` (the message) when it takes the file over [`TOTAL`].
    pub(crate) fn charge(&mut self, pattern: &str, case_insensitive: bool) -> Result<(), String> {
        let cost = heap_size(pattern, case_insensitive)?;
        if self.used + cost > TOTAL {
            return Err(format!(
                "the rule file's regexes together are over the {} MiB compile budget \
                 (this one adds {} KiB to {} KiB): use fewer or simpler regexes \
                 (a Unicode class such as \\w or \\d repeated many times costs most; \
                 (?-u:\\w) is ASCII-only and far smaller)",
                TOTAL >> 20,
                cost.div_ceil(1024),
                self.used.div_ceil(1024),
            ));
        }
        self.used += cost;
        Ok(())
    }
}

/// The heap the regex holds once built, as the regex crate builds it
/// (the same engine, with the same limits).
fn heap_size(pattern: &str, case_insensitive: bool) -> Result<usize, String> {
    let re = meta::Builder::new()
        .syntax(regex_automata::util::syntax::Config::new().case_insensitive(case_insensitive))
        .configure(
            meta::Config::new()
                .nfa_size_limit(Some(SIZE_LIMIT))
                .hybrid_cache_capacity(DFA_CACHE),
        )
        .build(pattern)
        .map_err(|_| too_large())?;
    Ok(re.memory_usage())
}

/// The message for a regex over [`SIZE_LIMIT`].
pub(crate) fn too_large() -> String {
    format!(
        "regex is too large to compile (over {} MiB of automata): a Unicode class such as \
         \\w or \\d repeated many times costs most; write (?-u:\\w) for ASCII, or repeat less",
        SIZE_LIMIT >> 20
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_regexes_fit_and_add_up() {
        let mut b = RegexBudget::default();
        b.charge("^https?://api\\.test/v[0-9]+/", false)
            .expect("fits");
        let after_one = b.used;
        assert!(after_one > 0 && after_one < 64 * 1024, "{after_one}");
        b.charge("foo|bar", true).expect("fits");
        assert!(b.used > after_one);
    }

    #[test]
    fn one_huge_regex_is_refused() {
        let e = RegexBudget::default()
            .charge("\\w{500}", false)
            .unwrap_err();
        assert!(e.contains("too large"), "{e}");
    }

    #[test]
    fn many_medium_regexes_exhaust_the_total() {
        let mut b = RegexBudget::default();
        let refused =
            (0..10_000).find(|i| b.charge(&format!("x{i}(?-u:\\w){{200}}"), false).is_err());
        assert!(refused.is_some(), "the budget never ran out");
        assert!(b.used <= TOTAL);
    }
}

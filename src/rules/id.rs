//! Where a rule is in its file: [`RuleId`] (`L<line>`) and [`RuleError`],
//! an error at a line and column.
//!
//! Invariant: a leaf of the rules tree; every other rules module may use
//! it, it uses none of them.

use std::fmt;

/// A rule's id: `L<line>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleId(pub u32);

impl RuleId {
    /// The rule's line in its file.
    pub fn line(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "L{}", self.0)
    }
}

impl serde::Serialize for RuleId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One error in a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub message: String,
}

impl RuleError {
    pub(crate) fn new(line: usize, column: usize, message: impl Into<String>) -> RuleError {
        RuleError {
            line,
            column,
            message: message.into(),
        }
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

impl std::error::Error for RuleError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_display_line_and_column() {
        let e = RuleError::new(3, 17, "bad");
        assert_eq!(e.to_string(), "line 3, column 17: bad");
        assert_eq!(RuleId(12).to_string(), "L12");
        assert_eq!(
            serde_json::to_string(&RuleId(12)).expect("serializes"),
            "\"L12\""
        );
    }
}

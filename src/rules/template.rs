//! Capture templates: the `$1` / `${name}` values of `url://`,
//! `redirect://` and the replacement of `bodySub://`.
//!
//! Syntax: `$0`..`$9` (a single digit: `$12` is group 1 then `2`),
//! `${N}` or `${name}` for any group, `$$` for a literal `$`. A `$`
//! followed by anything else is an error, so a typo never passes silently.
//!
//! Invariant: a [`Template`] is checked at load against the regex whose
//! captures it will read, so every group it names exists; expansion
//! cannot fail (a group that did not take part expands to nothing).

use std::fmt;

/// The capture groups a template may refer to.
#[derive(Debug, Clone)]
pub(crate) enum Groups {
    /// No regex: any `$` reference is an error.
    None,
    /// A regex with these group names (index 0 is the whole match).
    Regex(Vec<Option<String>>),
    /// The regex could not be compiled (already reported): accept any
    /// reference rather than report follow-on errors.
    Unknown,
}

impl Groups {
    pub(crate) fn of(re: &regex::Regex) -> Groups {
        Groups::Regex(re.capture_names().map(|n| n.map(str::to_owned)).collect())
    }

    pub(crate) fn of_bytes(re: &regex::bytes::Regex) -> Groups {
        Groups::Regex(re.capture_names().map(|n| n.map(str::to_owned)).collect())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Group(usize),
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
    source: String,
}

/// A template error: the character offset in the template, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TemplateError {
    pub offset: usize,
    pub message: String,
}

impl Template {
    pub(crate) fn parse(source: &str, groups: &Groups) -> Result<Template, TemplateError> {
        let chars: Vec<char> = source.chars().collect();
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut i = 0;
        while i < chars.len() {
            if chars[i] != '$' {
                lit.push(chars[i]);
                i += 1;
                continue;
            }
            let at = i;
            let (reference, next) = match chars.get(i + 1) {
                Some('$') => {
                    lit.push('$');
                    i += 2;
                    continue;
                }
                Some(d) if d.is_ascii_digit() => (d.to_string(), i + 2),
                Some('{') => {
                    let Some(close) = chars[i + 2..].iter().position(|&c| c == '}') else {
                        return Err(TemplateError {
                            offset: at,
                            message: "`${` without its closing `}`".into(),
                        });
                    };
                    let name: String = chars[i + 2..i + 2 + close].iter().collect();
                    (name, i + 3 + close)
                }
                _ => {
                    return Err(TemplateError {
                        offset: at,
                        message: "`$` must be followed by a digit, `{name}` or `$` (write `$$` for a literal `$`)".into(),
                    })
                }
            };
            let index = resolve(&reference, groups).map_err(|message| TemplateError {
                offset: at,
                message,
            })?;
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit)));
            }
            parts.push(Part::Group(index));
            i = next;
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Template {
            parts,
            source: source.to_owned(),
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Expands with the captures of a `regex::Regex` (none: no groups).
    pub fn expand(&self, caps: Option<&regex::Captures<'_>>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Group(i) => {
                    if let Some(m) = caps.and_then(|c| c.get(*i)) {
                        out.push_str(m.as_str());
                    }
                }
            }
        }
        out
    }

    /// Appends the expansion for a byte-regex match to `out`; returns
    /// false, leaving `out` at most `cap` long, when it would pass `cap`.
    pub(crate) fn expand_bytes_capped(
        &self,
        caps: &regex::bytes::Captures<'_>,
        out: &mut Vec<u8>,
        cap: usize,
    ) -> bool {
        for part in &self.parts {
            let piece: &[u8] = match part {
                Part::Lit(s) => s.as_bytes(),
                Part::Group(i) => caps.get(*i).map_or(&[], |m| m.as_bytes()),
            };
            if out.len() + piece.len() > cap {
                return false;
            }
            out.extend_from_slice(piece);
        }
        true
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn resolve(reference: &str, groups: &Groups) -> Result<usize, String> {
    let names = match groups {
        Groups::None => {
            return Err(format!(
                "`${reference}` refers to a capture, but MATCH is not a /regex/ (write `$$` for a literal `$`)"
            ))
        }
        Groups::Unknown => return Ok(reference.parse().unwrap_or(0)),
        Groups::Regex(names) => names,
    };
    if reference.is_empty() {
        return Err("empty group name in `${}`".into());
    }
    if reference.bytes().all(|b| b.is_ascii_digit()) {
        return match reference.parse::<usize>() {
            Ok(i) if i < names.len() => Ok(i),
            _ => Err(format!(
                "no capture group {reference} in the regex (it has {})",
                names.len().saturating_sub(1)
            )),
        };
    }
    names
        .iter()
        .position(|n| n.as_deref() == Some(reference))
        .ok_or_else(|| format!("no capture group named `{reference}` in the regex"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn re(s: &str) -> regex::Regex {
        regex::Regex::new(s).expect("test regex")
    }

    #[test]
    fn expands_numbered_and_named_groups() {
        let r = re(r"^http://a\.com/u/(\d+)/(?P<tab>\w+)");
        let t = Template::parse("/users?id=$1&tab=${tab}&all=${0}&d=$$1", &Groups::of(&r))
            .expect("valid template");
        let caps = r.captures("http://a.com/u/42/posts").expect("matches");
        assert_eq!(
            t.expand(Some(&caps)),
            "/users?id=42&tab=posts&all=http://a.com/u/42/posts&d=$1"
        );
        assert_eq!(t.as_str(), "/users?id=$1&tab=${tab}&all=${0}&d=$$1");
    }

    #[test]
    fn single_digit_and_missing_participation() {
        let r = re(r"(a)(b)?");
        let t = Template::parse("$12-$2", &Groups::of(&r)).expect("valid");
        let caps = r.captures("a").expect("matches");
        assert_eq!(t.expand(Some(&caps)), "a2-");
    }

    #[test]
    fn literal_templates_need_no_regex() {
        let t = Template::parse("/new/path?q=1&cost=$$5", &Groups::None).expect("valid");
        assert_eq!(t.expand(None), "/new/path?q=1&cost=$5");
    }

    #[test]
    fn errors_name_the_reference_and_offset() {
        let r = re(r"(a)(?P<x>b)");
        let g = Groups::of(&r);
        let e = Template::parse("/p/$3", &g).unwrap_err();
        assert_eq!(e.offset, 3);
        assert!(e.message.contains("group 3"), "{}", e.message);
        let e = Template::parse("ab${y}", &g).unwrap_err();
        assert_eq!(e.offset, 2);
        assert!(e.message.contains("`y`"), "{}", e.message);
        assert!(Template::parse("${x", &g).is_err());
        assert!(Template::parse("${}", &g).is_err());
        assert!(Template::parse("a$b", &g).is_err());
        assert!(Template::parse("a$", &g).is_err());
        let e = Template::parse("/x/$1", &Groups::None).unwrap_err();
        assert!(e.message.contains("not a /regex/"), "{}", e.message);
        assert!(Template::parse("/x/$1${n}", &Groups::Unknown).is_ok());
    }

    #[test]
    fn byte_expansion_respects_the_cap() {
        let r = regex::bytes::Regex::new("(b+)").expect("test regex");
        let t = Template::parse("<$1$1>", &Groups::of_bytes(&r)).expect("valid");
        let caps = r.captures(b"abbbc").expect("matches");
        let mut out = Vec::new();
        assert!(t.expand_bytes_capped(&caps, &mut out, 100));
        assert_eq!(out, b"<bbbbbb>");
        let mut out = Vec::new();
        assert!(!t.expand_bytes_capped(&caps, &mut out, 5));
        assert!(out.len() <= 5);
    }
}

//! Response bodies a rule produces or edits: `mock://` answers with
//! their default content type, `body://` replacements, and `bodySub://`
//! regex substitution with a size cap.
//!
//! Invariants: every regex is the `regex` crate's (linear time in the
//! body); neither the input nor the output of a substitution passes its
//! cap, and the output never grows past the cap while it is built (a
//! replacement full of `$0` cannot balloon memory); nothing here does I/O.

use std::fmt;

use bytes::Bytes;
use http::header::HeaderValue;
use http::StatusCode;

use super::actions::{regex_message, ValueError};
use super::template::{Groups, Template};

/// A mock answer: sluice replies without contacting the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mock {
    pub status: StatusCode,
    pub body: Bytes,
    /// From the body unless a `resHeaders://content-type=...` says otherwise.
    pub content_type: HeaderValue,
}

/// What the response body is: `mock://` (with its body) or `body://` alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseBody {
    Mock(Mock),
    /// Replaces the upstream's body (its content-type is kept).
    Replace(Bytes),
}

/// `application/json` for a body that is a JSON object or array, else text.
pub fn default_content_type(body: &[u8]) -> HeaderValue {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let json = matches!(first, Some(b'{') | Some(b'['))
        && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok();
    HeaderValue::from_static(if json {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    })
}

/// `bodySub:///REGEX/REPLACEMENT/[i]`.
#[derive(Debug, Clone)]
pub struct BodySub {
    pub regex: regex::bytes::Regex,
    /// The `i` flag (the regex's compile budget depends on it).
    pub(crate) case_insensitive: bool,
    pub replacement: Template,
    source: String,
}

/// Why a body could not be substituted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubstError {
    #[error("the body ({len} bytes) is over the {cap}-byte limit for bodySub")]
    BodyTooLarge { len: usize, cap: usize },
    #[error("the substituted body would pass the {cap}-byte limit")]
    OutputTooLarge { cap: usize },
}

impl BodySub {
    pub(crate) fn parse(value: &str) -> Result<BodySub, ValueError> {
        let usage = "bodySub:// takes /REGEX/REPLACEMENT/ (a / inside written \\/)";
        let chars: Vec<char> = value.chars().collect();
        if chars.first() != Some(&'/') {
            return Err(usage.to_string().into());
        }
        // The fields between delimiters: regex, replacement, flags.
        let mut fields: Vec<String> = Vec::new();
        let mut starts = vec![1];
        let mut field = String::new();
        let mut i = 1;
        while i < chars.len() {
            match chars[i] {
                '\\' if chars.get(i + 1) == Some(&'/') => {
                    field.push('/');
                    i += 2;
                }
                '\\' => {
                    field.push('\\');
                    if let Some(&c) = chars.get(i + 1) {
                        field.push(c);
                    }
                    i += 2;
                }
                '/' if fields.len() == 2 => {
                    return Err(ValueError {
                        offset: i,
                        message: format!("too many `/`: {usage}"),
                    })
                }
                '/' => {
                    fields.push(std::mem::take(&mut field));
                    starts.push(i + 1);
                    i += 1;
                }
                c => {
                    field.push(c);
                    i += 1;
                }
            }
        }
        if fields.len() < 2 {
            return Err(ValueError {
                offset: chars.len(),
                message: format!("missing the closing `/`: {usage}"),
            });
        }
        fields.push(field);
        let case_insensitive = match fields[2].as_str() {
            "" => false,
            "i" => true,
            other => {
                return Err(ValueError {
                    offset: starts[2],
                    message: format!("unknown flags `{other}` (only `i` is known)"),
                })
            }
        };
        if fields[0].is_empty() {
            return Err(ValueError {
                offset: 1,
                message: "empty regex".into(),
            });
        }
        let regex = regex::bytes::RegexBuilder::new(&fields[0])
            .case_insensitive(case_insensitive)
            .size_limit(super::budget::SIZE_LIMIT)
            .dfa_size_limit(super::budget::DFA_CACHE)
            .build()
            .map_err(|e| ValueError {
                offset: starts[0],
                message: regex_message(&e),
            })?;
        let replacement =
            Template::parse(&fields[1], &Groups::of_bytes(&regex)).map_err(|e| ValueError {
                offset: starts[1] + e.offset,
                message: e.message,
            })?;
        Ok(BodySub {
            regex,
            case_insensitive,
            replacement,
            source: value.to_owned(),
        })
    }

    /// [`substitute`] with this rule's regex and replacement.
    pub fn apply(&self, body: &[u8], cap: usize) -> Result<Vec<u8>, SubstError> {
        substitute(body, &self.regex, &self.replacement, cap)
    }
}

impl fmt::Display for BodySub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Replaces every match of `re` in `body` with `replacement` (captures
/// expanded). Neither the body nor the result may pass `cap` bytes; the
/// output never grows past `cap` while it is built.
pub fn substitute(
    body: &[u8],
    re: &regex::bytes::Regex,
    replacement: &Template,
    cap: usize,
) -> Result<Vec<u8>, SubstError> {
    if body.len() > cap {
        return Err(SubstError::BodyTooLarge {
            len: body.len(),
            cap,
        });
    }
    let mut out = Vec::with_capacity(body.len());
    let mut last = 0;
    for caps in re.captures_iter(body) {
        let Some(m) = caps.get(0) else { continue };
        let before = &body[last..m.start()];
        if out.len() + before.len() > cap {
            return Err(SubstError::OutputTooLarge { cap });
        }
        out.extend_from_slice(before);
        if !replacement.expand_bytes_capped(&caps, &mut out, cap) {
            return Err(SubstError::OutputTooLarge { cap });
        }
        last = m.end();
    }
    let rest = &body[last..];
    if out.len() + rest.len() > cap {
        return Err(SubstError::OutputTooLarge { cap });
    }
    out.extend_from_slice(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::actions::MAX_BODY;

    #[test]
    fn content_type_follows_the_body() {
        assert_eq!(
            default_content_type(br#" {"a": [1, 2]} "#),
            "application/json"
        );
        assert_eq!(default_content_type(b"[1,2]"), "application/json");
        assert_eq!(default_content_type(b"42"), "text/plain; charset=utf-8");
        assert_eq!(
            default_content_type(b"{not json"),
            "text/plain; charset=utf-8"
        );
        assert_eq!(default_content_type(b""), "text/plain; charset=utf-8");
    }

    #[test]
    fn substitution() {
        let s = BodySub::parse(r"/(\w+)@example\.com/$1@test.invalid/").expect("valid");
        assert_eq!(
            s.apply(b"to: ann@example.com, bob@example.com.", MAX_BODY)
                .expect("fits"),
            b"to: ann@test.invalid, bob@test.invalid."
        );
        let s = BodySub::parse(r"/a\/b/c\/d/i").expect("valid");
        assert_eq!(s.apply(b"xA/By", MAX_BODY).expect("fits"), b"xc/dy");
        assert_eq!(s.to_string(), r"/a\/b/c\/d/i");
        let s = BodySub::parse("/x//").expect("valid");
        assert_eq!(s.apply(b"axbx", MAX_BODY).expect("fits"), b"ab");
        // Bytes that are not UTF-8 pass through untouched.
        assert_eq!(s.apply(b"\xffx\xfe", MAX_BODY).expect("fits"), b"\xff\xfe");
    }

    #[test]
    fn substitution_caps() {
        let s = BodySub::parse("/a/aaaa/").expect("valid");
        assert_eq!(
            s.apply(b"aaaaa", 4),
            Err(SubstError::BodyTooLarge { len: 5, cap: 4 })
        );
        assert_eq!(
            s.apply(b"aa", 7),
            Err(SubstError::OutputTooLarge { cap: 7 })
        );
        assert_eq!(s.apply(b"aa", 8).expect("fits").len(), 8);
        let s = BodySub::parse("/zz/y/").expect("valid");
        assert_eq!(s.apply(b"abc", 3).expect("fits"), b"abc");
        // A replacement that multiplies a large match stops at the cap.
        let s = BodySub::parse("/.+/$0$0$0$0$0$0$0$0/s").ok();
        assert!(s.is_none(), "only the i flag is known");
        let s = BodySub::parse(r"/[\s\S]+/$0$0$0$0$0$0$0$0/").expect("valid");
        let body = vec![b'a'; 1000];
        assert_eq!(
            s.apply(&body, 4000),
            Err(SubstError::OutputTooLarge { cap: 4000 })
        );
    }

    #[test]
    fn substitution_errors() {
        for (bad, offset) in [
            ("x/y/", 0),
            ("/x/y", 4),
            ("/x/y/z/", 6),
            ("/x/y/g", 5),
            ("//y/", 1),
            ("/(/y/", 1),
            ("/(a)/$2/", 5),
        ] {
            let e = BodySub::parse(bad).expect_err(bad);
            assert_eq!(e.offset, offset, "{bad}: {}", e.message);
        }
        let e = BodySub::parse("/(/y/").expect_err("bad regex");
        assert!(e.message.starts_with("invalid regex"), "{}", e.message);
        assert!(!e.message.contains('\n'), "{}", e.message);
    }
}

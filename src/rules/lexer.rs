//! Splits one rule-file line into tokens.
//!
//! Owns the lexical rules of the rule language and nothing else: tokens
//! are separated by whitespace; `#` outside quotes starts a comment that
//! runs to the end of the line (also in the middle of a token); a
//! double-quoted segment may sit anywhere in a token (`name="a b"`), is
//! decoded with JSON escapes and may hold spaces and `#`. Outside quotes a
//! backslash is an ordinary character, so `\d` in a regex needs no
//! doubling there.
//!
//! Invariants: columns are 1-based character (not byte) positions of the
//! line; the lexer never panics, whatever the input.

/// One token of a line, with its quotes removed and escapes decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub text: String,
    /// Column of the token's first character.
    pub col: usize,
}

/// A lexical error: where on the line, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LexError {
    pub col: usize,
    pub message: String,
}

/// The tokens of `line` (a line without its terminator).
pub(crate) fn tokenize(line: &str) -> Result<Vec<Token>, LexError> {
    let chars: Vec<char> = line.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '#' {
            break;
        }
        let col = i + 1;
        let mut text = String::new();
        let mut comment = false;
        while i < chars.len() {
            match chars[i] {
                c if c.is_whitespace() => break,
                '#' => {
                    comment = true;
                    break;
                }
                '"' => i = read_quoted(&chars, i, &mut text)?,
                c => {
                    text.push(c);
                    i += 1;
                }
            }
        }
        tokens.push(Token { text, col });
        if comment {
            break;
        }
    }
    Ok(tokens)
}

/// Decodes the quoted segment opening at `start` into `out`; returns the
/// index just past its closing quote.
fn read_quoted(chars: &[char], start: usize, out: &mut String) -> Result<usize, LexError> {
    let unterminated = || LexError {
        col: start + 1,
        message: "unterminated quoted value: the closing \" is missing".into(),
    };
    let mut i = start + 1;
    loop {
        let Some(&c) = chars.get(i) else {
            return Err(unterminated());
        };
        match c {
            '"' => return Ok(i + 1),
            '\\' => {
                let Some(&e) = chars.get(i + 1) else {
                    return Err(unterminated());
                };
                let simple = match e {
                    '"' => Some('"'),
                    '\\' => Some('\\'),
                    '/' => Some('/'),
                    'b' => Some('\u{8}'),
                    'f' => Some('\u{c}'),
                    'n' => Some('\n'),
                    'r' => Some('\r'),
                    't' => Some('\t'),
                    _ => None,
                };
                if let Some(s) = simple {
                    out.push(s);
                    i += 2;
                } else if e == 'u' {
                    let (ch, used) = read_unicode_escape(chars, i)?;
                    out.push(ch);
                    i += used;
                } else {
                    return Err(LexError {
                        col: i + 1,
                        message: format!(
                            "unknown escape \\{e} in a quoted value (known: \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)"
                        ),
                    });
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
}

/// Decodes `\uXXXX` (or a `\uD8xx\uDCxx` surrogate pair) starting at the
/// backslash at `at`; returns the character and how many chars it used.
fn read_unicode_escape(chars: &[char], at: usize) -> Result<(char, usize), LexError> {
    let err = |message: &str| LexError {
        col: at + 1,
        message: message.into(),
    };
    let Some(high) = hex4(chars, at + 2) else {
        return Err(err("\\u needs exactly 4 hex digits"));
    };
    if (0xDC00..=0xDFFF).contains(&high) {
        return Err(err("unpaired low surrogate in a \\u escape"));
    }
    if !(0xD800..=0xDBFF).contains(&high) {
        return char::from_u32(high)
            .map(|c| (c, 6))
            .ok_or_else(|| err("invalid \\u escape"));
    }
    let pair_follows = chars.get(at + 6) == Some(&'\\') && chars.get(at + 7) == Some(&'u');
    let low = if pair_follows {
        hex4(chars, at + 8)
    } else {
        None
    };
    match low {
        Some(low) if (0xDC00..=0xDFFF).contains(&low) => {
            let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
            char::from_u32(code)
                .map(|c| (c, 12))
                .ok_or_else(|| err("invalid \\u surrogate pair"))
        }
        _ => Err(err(
            "unpaired high surrogate in a \\u escape (expected \\uDC00-\\uDFFF next)",
        )),
    }
}

fn hex4(chars: &[char], at: usize) -> Option<u32> {
    let digits = chars.get(at..at + 4)?;
    digits
        .iter()
        .try_fold(0u32, |acc, c| Some(acc * 16 + c.to_digit(16)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(line: &str) -> Vec<(String, usize)> {
        tokenize(line)
            .expect("valid line")
            .into_iter()
            .map(|t| (t.text, t.col))
            .collect()
    }

    #[test]
    fn splits_on_whitespace_with_columns() {
        assert_eq!(
            texts("  a.com\t127.0.0.1:80  status://404"),
            vec![
                ("a.com".into(), 3),
                ("127.0.0.1:80".into(), 9),
                ("status://404".into(), 23)
            ]
        );
        assert!(texts("").is_empty());
        assert!(texts("   \t ").is_empty());
    }

    #[test]
    fn comments_end_the_line_outside_quotes() {
        assert!(texts("# all comment").is_empty());
        assert_eq!(texts("a.com b:1 # note"), texts("a.com b:1"));
        assert_eq!(
            texts("a.com b:1#note"),
            vec![("a.com".into(), 1), ("b:1".into(), 7)]
        );
        assert_eq!(
            texts(r#"a.com body://"x # y" # z"#),
            vec![("a.com".into(), 1), ("body://x # y".into(), 7)]
        );
    }

    #[test]
    fn quotes_concatenate_and_decode_json_escapes() {
        assert_eq!(texts(r#"a"b c"d"#), vec![("ab cd".into(), 1)]);
        assert_eq!(texts(r#""""#), vec![(String::new(), 1)]);
        assert_eq!(texts(r#""\"\\\/\b\f\n\r\t""#)[0].0, "\"\\/\u{8}\u{c}\n\r\t");
        assert_eq!(texts(r#""\u00e9\uD83D\uDE00""#)[0].0, "é😀");
        // Outside quotes a backslash is literal.
        assert_eq!(texts(r"/\d+/")[0].0, r"/\d+/");
        // Columns count characters, not bytes.
        assert_eq!(texts("é x")[1].1, 3);
    }

    #[test]
    fn errors_point_at_the_problem() {
        let e = tokenize(r#"a.com body://"open"#).unwrap_err();
        assert_eq!(e.col, 14);
        assert!(e.message.contains("unterminated"), "{}", e.message);
        let e = tokenize(r#"a "x\qy""#).unwrap_err();
        assert_eq!(e.col, 5);
        assert!(e.message.contains("\\q"), "{}", e.message);
        for bad in [
            r#""\u12""#,
            r#""\uD800""#,
            r#""\uDC00""#,
            r#""\uD800\u0041""#,
            r#""\"#,
        ] {
            assert!(tokenize(bad).is_err(), "{bad}");
        }
    }
}

//! Cookies for HAR: `Cookie` request headers and `Set-Cookie` answers as
//! HAR cookie objects, with cookie dates turned into RFC 3339.

use serde::Serialize;

/// One HAR cookie; `httpOnly` and `secure` are given for `Set-Cookie` only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cookie {
    pub name: String,
    pub value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_only: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
}

/// The cookies of every `Cookie` header.
pub fn request_cookies(pairs: &[(String, String)]) -> Vec<Cookie> {
    pairs
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
        .flat_map(|(_, v)| v.split(';'))
        .filter_map(|c| {
            let (name, value) = c.split_once('=').unwrap_or((c, ""));
            let name = name.trim();
            (!name.is_empty()).then(|| Cookie {
                name: name.to_string(),
                value: value.trim().to_string(),
                ..Cookie::default()
            })
        })
        .collect()
}

/// The cookie of every `Set-Cookie` header; `Max-Age` becomes `expires`
/// counted from `started_us` (it wins over `Expires`, as in RFC 6265).
pub fn response_cookies(pairs: &[(String, String)], started_us: i64) -> Vec<Cookie> {
    pairs
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .filter_map(|(_, v)| set_cookie(v, started_us))
        .collect()
}

fn set_cookie(header: &str, started_us: i64) -> Option<Cookie> {
    let mut parts = header.split(';');
    let (name, value) = parts.next()?.split_once('=')?;
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    let mut c = Cookie {
        name: name.to_string(),
        value: value.trim().to_string(),
        http_only: Some(false),
        secure: Some(false),
        ..Cookie::default()
    };
    let mut max_age = None;
    for attr in parts {
        let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
        let (k, v) = (k.trim(), v.trim());
        match k.to_ascii_lowercase().as_str() {
            "path" => c.path = Some(v.to_string()),
            "domain" => c.domain = Some(v.to_string()),
            "expires" => {
                if let Some(secs) = cookie_date(v) {
                    c.expires = Some(rfc3339_secs(secs));
                }
            }
            "max-age" => max_age = v.parse::<i64>().ok(),
            "httponly" => c.http_only = Some(true),
            "secure" => c.secure = Some(true),
            _ => {}
        }
    }
    if let Some(age) = max_age {
        let at = (started_us / 1_000_000).saturating_add(age.max(0));
        c.expires = Some(rfc3339_secs(if age <= 0 { 0 } else { at }));
    }
    Some(c)
}

/// Unix seconds as RFC 3339, clamped to what the format can say.
fn rfc3339_secs(secs: i64) -> String {
    const LAST: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.clamp(0, LAST) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A cookie date (RFC 6265 5.1.1: IMF-fixdate, RFC 850, asctime and the
/// Netscape `21-Oct-2015` spellings) as Unix seconds.
pub fn cookie_date(text: &str) -> Option<i64> {
    let mut time = None;
    let mut day = None;
    let mut month = None;
    let mut year = None;
    let tokens = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == ':'))
        .filter(|t| !t.is_empty());
    for tok in tokens {
        let digits = tok.bytes().all(|b| b.is_ascii_digit());
        if time.is_none() && tok.contains(':') {
            let mut f = tok.split(':').map(|p| p.parse::<i64>().ok());
            if let (Some(Some(h)), Some(Some(m)), Some(Some(s)), None) =
                (f.next(), f.next(), f.next(), f.next())
            {
                time = Some((h, m, s));
                continue;
            }
        }
        if day.is_none() && digits && tok.len() <= 2 {
            day = tok.parse::<i64>().ok();
            continue;
        }
        if month.is_none() && tok.len() >= 3 {
            const MONTHS: [&str; 12] = [
                "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
            ];
            let prefix = tok[..3].to_ascii_lowercase();
            if let Some(m) = MONTHS.iter().position(|m| *m == prefix) {
                month = Some(m as i64 + 1);
                continue;
            }
        }
        if year.is_none() && digits && (2..=4).contains(&tok.len()) {
            year = tok.parse::<i64>().ok();
        }
    }
    let (h, mi, s) = time?;
    let (d, mo, mut y) = (day?, month?, year?);
    if (70..=99).contains(&y) {
        y += 1900;
    } else if (0..=69).contains(&y) {
        y += 2000;
    }
    if !(1..=31).contains(&d) || y < 1601 || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn request_cookies_are_split() {
        let h = pairs(&[
            ("cookie", "a=1; b=two=2;c"),
            ("Cookie", " d = 4 ;"),
            ("x-cookie", "no=1"),
        ]);
        let got: Vec<(String, String)> = request_cookies(&h)
            .into_iter()
            .map(|c| (c.name, c.value))
            .collect();
        assert_eq!(
            got,
            pairs(&[("a", "1"), ("b", "two=2"), ("c", ""), ("d", "4")])
        );
    }

    #[test]
    fn set_cookie_attributes() {
        let h = pairs(&[
            (
                "set-cookie",
                "sid=abc; Path=/; Domain=.example.com; Expires=Wed, 21 Oct 2015 07:28:00 GMT; HttpOnly; Secure",
            ),
            ("Set-Cookie", "n=1; max-age=60; expires=Thu, 01 Jan 1970 00:00:00 GMT"),
            ("set-cookie", "=nameless"),
            ("set-cookie", "gone=; Max-Age=0"),
        ]);
        let started_us = 1_000_000_000 * 1_000_000;
        let c = response_cookies(&h, started_us);
        assert_eq!(c.len(), 3);
        assert_eq!(
            c[0],
            Cookie {
                name: "sid".into(),
                value: "abc".into(),
                path: Some("/".into()),
                domain: Some(".example.com".into()),
                expires: Some("2015-10-21T07:28:00Z".into()),
                http_only: Some(true),
                secure: Some(true),
            }
        );
        assert_eq!(c[1].expires.as_deref(), Some("2001-09-09T01:47:40Z"));
        assert_eq!(c[1].http_only, Some(false));
        assert_eq!(c[2].expires.as_deref(), Some("1970-01-01T00:00:00Z"));
    }

    #[test]
    fn cookie_dates_in_every_spelling() {
        let want = Some(784_111_777); // 1994-11-06T08:49:37Z
        assert_eq!(cookie_date("Sun, 06 Nov 1994 08:49:37 GMT"), want);
        assert_eq!(cookie_date("Sunday, 06-Nov-94 08:49:37 GMT"), want);
        assert_eq!(cookie_date("Sun Nov  6 08:49:37 1994"), want);
        assert_eq!(cookie_date("Sun, 06-Nov-1994 08:49:37 GMT"), want);
        assert_eq!(
            cookie_date("Thu, 29 Feb 2024 00:00:00 GMT"),
            Some(1_709_164_800)
        );
        assert_eq!(cookie_date("tomorrow"), None);
        assert_eq!(cookie_date("Sun, 32 Nov 1994 08:49:37 GMT"), None);
        assert_eq!(cookie_date("Sun, 06 Nov 1994 25:49:37 GMT"), None);
    }
}

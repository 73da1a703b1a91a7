//! `cors://`: the CORS headers sluice adds to responses and the 204
//! answer it gives a preflight, so a page can call an API that does not
//! (yet) allow its origin.
//!
//! Invariants: pure functions of the rule and the request/response
//! headers; an upstream `Vary` is kept (ours is appended); with
//! `cors://*` and an `Origin` in the request, the origin is echoed and
//! credentials allowed (a literal `*` forbids credentials in browsers).

use std::fmt;

use http::header::{self, HeaderMap, HeaderValue};
use http::Method;

/// `cors://*` or `cors://ORIGIN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cors {
    /// Allow any origin: the request's `Origin` is echoed (with
    /// credentials allowed), or `*` when there is none.
    Any,
    /// Allow this origin only (with credentials).
    Origin(HeaderValue),
}

impl Cors {
    pub(crate) fn parse(s: &str) -> Result<Cors, String> {
        if s == "*" {
            return Ok(Cors::Any);
        }
        let rest = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"));
        match rest {
            Some(r) if !r.is_empty() && !r.contains('/') => HeaderValue::from_str(s)
                .map(Cors::Origin)
                .map_err(|_| format!("invalid origin `{s}`")),
            _ => Err(format!(
                "cors:// takes `*` or an origin such as https://app.example.com (no path), not `{s}`"
            )),
        }
    }

    fn allow_origin(&self, request: &HeaderMap) -> (HeaderValue, bool) {
        match (self, request.get(header::ORIGIN)) {
            (Cors::Any, Some(o)) => (o.clone(), true),
            (Cors::Any, None) => (HeaderValue::from_static("*"), false),
            (Cors::Origin(o), _) => (o.clone(), true),
        }
    }
}

impl fmt::Display for Cors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cors::Any => f.write_str("*"),
            Cors::Origin(o) => f.write_str(&String::from_utf8_lossy(o.as_bytes())),
        }
    }
}

/// A CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
pub fn is_preflight(method: &Method, request: &HeaderMap) -> bool {
    *method == Method::OPTIONS
        && request.contains_key(header::ORIGIN)
        && request.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The headers of the 204 answer sluice gives a preflight.
pub fn cors_preflight_headers(cors: &Cors, request: &HeaderMap) -> HeaderMap {
    let mut h = HeaderMap::new();
    let (origin, credentials) = cors.allow_origin(request);
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    let methods = request
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
        });
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods);
    if let Some(asked) = request.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    h.insert(
        header::VARY,
        HeaderValue::from_static(
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        ),
    );
    h
}

/// Adds the CORS headers to a response (upstream or mock): allow-origin,
/// credentials, the response's own header names as exposed, and
/// `Vary: Origin` (appended, so the upstream's `Vary` stays).
pub fn apply_cors(cors: &Cors, request: &HeaderMap, response: &mut HeaderMap) {
    const SAFELISTED: [&str; 7] = [
        "cache-control",
        "content-language",
        "content-length",
        "content-type",
        "expires",
        "last-modified",
        "pragma",
    ];
    let mut exposed = String::new();
    for name in response.keys() {
        let n = name.as_str();
        if SAFELISTED.contains(&n) || n.starts_with("access-control-") || n == "set-cookie" {
            continue;
        }
        if !exposed.is_empty() {
            exposed.push_str(", ");
        }
        exposed.push_str(n);
    }
    let (origin, credentials) = cors.allow_origin(request);
    response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if credentials {
        response.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if let Ok(v) = HeaderValue::from_str(&exposed) {
        if !exposed.is_empty() {
            response.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
        }
    }
    let varies_on_origin = response.get_all(header::VARY).iter().any(|v| {
        v.to_str()
            .map(|s| {
                s.split(',')
                    .any(|p| p.trim().eq_ignore_ascii_case("origin") || p.trim() == "*")
            })
            .unwrap_or(false)
    });
    if !varies_on_origin {
        response.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        assert_eq!(Cors::parse("*"), Ok(Cors::Any));
        assert_eq!(
            Cors::parse("https://app.example.com:8443"),
            Ok(Cors::Origin(HeaderValue::from_static(
                "https://app.example.com:8443"
            )))
        );
        for bad in ["", "app.example.com", "https://a.com/path", "https://"] {
            assert!(Cors::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn preflight_and_response_headers() {
        let mut req = HeaderMap::new();
        assert!(!is_preflight(&Method::OPTIONS, &req));
        req.insert(header::ORIGIN, HeaderValue::from_static("https://app.test"));
        req.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("PUT"),
        );
        req.insert(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("x-token"),
        );
        assert!(is_preflight(&Method::OPTIONS, &req));
        assert!(!is_preflight(&Method::GET, &req));
        let h = cors_preflight_headers(&Cors::Any, &req);
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.test");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_METHODS], "PUT");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_HEADERS], "x-token");

        let mut res = HeaderMap::new();
        res.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        res.insert("x-trace", HeaderValue::from_static("1"));
        res.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        apply_cors(&Cors::Any, &HeaderMap::new(), &mut res);
        assert_eq!(res[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(!res.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
        assert_eq!(res[header::ACCESS_CONTROL_EXPOSE_HEADERS], "x-trace, vary");
        let vary: Vec<_> = res.get_all(header::VARY).iter().collect();
        assert_eq!(vary, vec!["Accept-Encoding", "Origin"]);
        let fixed = Cors::parse("https://only.test").expect("valid");
        apply_cors(&fixed, &req, &mut res);
        assert_eq!(
            res[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://only.test"
        );
        assert_eq!(res[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(res.get_all(header::VARY).iter().count(), 2);
    }
}

//! The web UI: hand-written ES modules, CSS and a vendored chart library,
//! embedded in the binary and served by the admin server at `/` and
//! `/ui/*`.
//!
//! Invariants: nothing is fetched from elsewhere (no CDN, no install, works
//! offline); there is no build step, the files under `src/admin/ui/` are
//! served as written; every asset carries its content type, `no-cache`
//! plus an ETag (a reload costs a 304 per file, never a stale page); with a
//! token configured, a request without it gets the token prompt
//! (`login.html`, which holds no data) instead of the app.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::reply::error;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $ct:expr) => {
        Asset {
            name: $name,
            content_type: $ct,
            bytes: include_bytes!(concat!("ui/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("login.html", "text/html; charset=utf-8"),
    asset!("app.css", CSS),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("filter.js", JS),
    asset!("format.js", JS),
    asset!("network.js", JS),
    asset!("vlist.js", JS),
    asset!("detail.js", JS),
    asset!("body.js", JS),
    asset!("messages.js", JS),
    asset!("connections.js", JS),
    asset!("dashboard.js", JS),
    asset!("rules.js", JS),
    asset!("tls.js", JS),
    asset!("vendor/uPlot.iife.min.js", JS),
    asset!("vendor/uPlot.min.css", CSS),
    asset!("vendor/uPlot.LICENSE", "text/plain; charset=utf-8"),
];

fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// FNV-1a over the bytes: a cheap, stable ETag.
fn etag(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{h:016x}\"")
}

fn serve(a: &Asset, req_headers: &HeaderMap) -> Response {
    let tag = etag(a.bytes);
    let not_modified = req_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut resp = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        a.bytes.into_response()
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    resp
}

/// `GET /`: the app (the auth layer answers with the prompt instead when
/// a token is required and missing).
pub async fn index(headers: HeaderMap) -> Response {
    match find("index.html") {
        Some(a) => serve(a, &headers),
        None => error(StatusCode::INTERNAL_SERVER_ERROR, "index.html not embedded"),
    }
}

/// `GET /ui/{*file}`.
pub async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match find(&name).filter(|a| a.name != "login.html") {
        Some(a) => serve(a, &headers),
        None => error(StatusCode::NOT_FOUND, format!("no UI file `{name}`")),
    }
}

/// The token prompt, served in place of the app to a browser without the
/// token.
pub fn login_page() -> Response {
    match find("login.html") {
        Some(a) => {
            let mut resp = serve(a, &HeaderMap::new());
            // Never let a cache hand the prompt out after a login.
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp.headers_mut().remove(header::ETAG);
            resp
        }
        None => error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_type_and_the_page_stays_small() {
        let total: usize = ASSETS.iter().map(|a| a.bytes.len()).sum();
        assert!(total < 1 << 20, "UI assets total {total} bytes, over 1 MiB");
        for a in ASSETS {
            assert!(!a.bytes.is_empty(), "{} is empty", a.name);
            if a.name.ends_with(".js") {
                assert_eq!(a.content_type, JS, "{}", a.name);
            }
            if a.name.ends_with(".css") {
                assert_eq!(a.content_type, CSS, "{}", a.name);
            }
        }
    }

    #[test]
    fn index_names_only_embedded_files() {
        let html = std::str::from_utf8(find("index.html").unwrap().bytes).unwrap();
        for part in html.split("/ui/").skip(1) {
            let name = part.split(['"', '\'', '?']).next().unwrap();
            assert!(
                find(name).is_some(),
                "index.html links /ui/{name}, not embedded"
            );
        }
        for a in ASSETS
            .iter()
            .filter(|a| a.name.ends_with(".js") && !a.name.contains("vendor"))
        {
            let js = std::str::from_utf8(a.bytes).unwrap();
            for part in js.split("from './").skip(1) {
                let name = part.split('\'').next().unwrap();
                assert!(
                    find(name).is_some(),
                    "{} imports ./{name}, not embedded",
                    a.name
                );
            }
        }
    }

    #[test]
    fn etag_is_stable_and_differs_by_content() {
        assert_eq!(etag(b"a"), etag(b"a"));
        assert_ne!(etag(b"a"), etag(b"b"));
    }
}

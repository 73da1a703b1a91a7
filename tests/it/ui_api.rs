//! The admin routes the web UI needs: the page and its assets (content
//! types, ETag, embedded), the token prompt and the session cookie (with
//! the UI header required on writes), rule validation without saving, a
//! record count and the leak-watchdog state.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use crate::support::admin;
use crate::support::client::{self, Request, Response};
use crate::support::{origin, proxy};

const TOKEN: &str = "ui-api-token-0123456789abcdef";

/// One request with arbitrary headers and body, carrying the server's
/// generated token unless the test brings its own credentials.
async fn send(
    admin: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let req = admin::with_token(admin, admin::req(method, path).headers(headers)).body(body);
    admin::call(admin, req, Duration::from_secs(10))
        .await
        .expect("answer in 10 s")
}

fn json(r: &Response) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.text()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_and_assets_are_embedded_with_types_and_etags() {
    let p = proxy::spawn(&[]).await;
    let a = p.admin.unwrap();
    let index = admin::get(a, "/").await;
    assert_eq!(index.status, 200);
    assert!(index
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(index.text().contains("/ui/app.js"));
    let mut total = index.body.len();
    for (path, ty) in [
        ("/ui/app.js", "text/javascript"),
        ("/ui/network.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
        ("/ui/vendor/uPlot.iife.min.js", "text/javascript"),
        ("/ui/vendor/uPlot.min.css", "text/css"),
    ] {
        let r = admin::get(a, path).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("content-type").unwrap().starts_with(ty), "{path}");
        assert_eq!(r.header("cache-control"), Some("no-cache"), "{path}");
        let tag = r.header("etag").expect("etag").to_string();
        let again = send(a, "GET", path, &[("If-None-Match", &tag)], "").await;
        assert_eq!(again.status, 304, "{path} with its ETag");
        total += r.body.len();
    }
    assert!(total < 1 << 20, "page transfer {total} bytes");
    assert_eq!(admin::get(a, "/ui/nope.js").await.status, 404);
    assert_eq!(admin::get(a, "/ui/login.html").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_page_asks_for_it_and_a_session_cookie_carries_it() {
    let p = proxy::spawn(&["--admin-token", TOKEN]).await;
    let a = p.admin.unwrap();
    // On loopback too: the prompt, no app, no data, no assets.
    let prompt = admin::get(a, "/").await;
    assert_eq!(prompt.status, 200);
    assert!(prompt.text().contains("id=\"token\""), "{}", prompt.text());
    assert!(!prompt.text().contains("/ui/app.js"));
    assert_eq!(admin::get(a, "/ui/app.js").await.status, 401);
    assert_eq!(admin::get(a, "/api/records").await.status, 401);

    // A wrong token opens no session.
    let wrong = send(
        a,
        "POST",
        "/api/session",
        &[("Authorization", "Bearer nope-nope-nope-nope")],
        "",
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.header("set-cookie").is_none());

    let open = send(
        a,
        "POST",
        "/api/session",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        "",
    )
    .await;
    assert_eq!(open.status, 200, "{}", open.text());
    let cookie = open
        .header("set-cookie")
        .expect("a session cookie")
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();

    let app = send(a, "GET", "/", &[("Cookie", &pair)], "").await;
    assert!(app.text().contains("/ui/app.js"));
    assert_eq!(
        send(a, "GET", "/api/records", &[("Cookie", &pair)], "")
            .await
            .status,
        200
    );
    assert_eq!(
        send(a, "GET", "/ui/app.js", &[("Cookie", &pair)], "")
            .await
            .status,
        200
    );
    let bad = send(
        a,
        "GET",
        "/api/records",
        &[("Cookie", "sluice_admin=wrong-wrong-wrong-wrong")],
        "",
    )
    .await;
    assert_eq!(bad.status, 401);

    // A write with the cookie alone (a cross-site form) is refused; with
    // the UI header it goes through.
    let forged = send(a, "DELETE", "/api/records", &[("Cookie", &pair)], "").await;
    assert_eq!(forged.status, 401);
    let ui = send(
        a,
        "DELETE",
        "/api/records",
        &[("Cookie", &pair), ("x-sluice-ui", "1")],
        "",
    )
    .await;
    assert_eq!(ui.status, 200, "{}", ui.text());

    let close = send(
        a,
        "DELETE",
        "/api/session",
        &[("Cookie", &pair), ("x-sluice-ui", "1")],
        "",
    )
    .await;
    assert_eq!(close.status, 204);
    assert!(close.header("set-cookie").unwrap().contains("Max-Age=0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_validate_reports_lines_and_installs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r.rules");
    std::fs::write(&file, "example.com status://404\n").unwrap();
    let p = proxy::spawn(&["--rules", file.to_str().unwrap()]).await;
    let a = p.admin.unwrap();
    let ok = send(
        a,
        "POST",
        "/api/rules/validate",
        &[("x-sluice-ui", "1")],
        "a.test status://500\nb.test status://502\n",
    )
    .await;
    assert_eq!(ok.status, 200);
    let v = json(&ok);
    assert_eq!(v["valid"], true);
    assert_eq!(v["rules"], 2);

    let bad = send(
        a,
        "POST",
        "/api/rules/validate",
        &[("x-sluice-ui", "1")],
        "a.test status://500\n\n# c\nb.test bogus://x\n",
    )
    .await;
    let v = json(&bad);
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"][0]["line"], 4, "{v}");
    assert!(v["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("bogus"));

    // Nothing was installed nor written.
    let rules = admin::get_json(a, "/api/rules").await;
    assert_eq!(rules["generation"], 1);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "example.com status://404\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_count_follows_the_filter_and_watchdog_reports_ok() {
    let origin = origin::http().await;
    let p = proxy::spawn(&[]).await;
    let a = p.admin.unwrap();
    for path in ["/small", "/small", "/status/503"] {
        client::get_once(p.addr, origin, path).await.unwrap();
    }
    let mut all = 0;
    for _ in 0..100 {
        all = admin::get_json(a, "/api/records/count").await["count"]
            .as_u64()
            .unwrap();
        if all == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(all, 3);
    let five = admin::get_json(a, "/api/records/count?status=5xx").await;
    assert_eq!(five["count"], 1);
    let small = admin::get_json(a, "/api/records/count?url=small&cursor=1&limit=1").await;
    assert_eq!(small["count"], 2, "cursor and limit do not cut a count");
    assert_eq!(admin::get(a, "/api/records/count?nope=1").await.status, 400);

    let w = admin::get_json(a, "/api/watchdog").await;
    assert_eq!(w["state"], "ok", "{w}");
    assert_eq!(w["warnings"]["growth"], 0);
    assert_eq!(w["warnings"]["max_age"], 0);
}

/// `GET path` with the given `Host` header (and optional bearer token).
async fn get_with_host(admin: SocketAddr, path: &str, host: &str, token: Option<&str>) -> Response {
    let req = Request::get(path)
        .header("Host", host)
        .header("Connection", "close")
        .bearer(token);
    admin::call(admin, req, Duration::from_secs(10))
        .await
        .expect("answer in 10 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_only_local_host_names_are_answered() {
    // A page on evil.example whose name was rebound to 127.0.0.1 reaches
    // the admin port from loopback, but its requests still say its name.
    // Only a tokenless admin (`--admin-token none`) needs the guard.
    let p = proxy::spawn(&["--admin-token", "none"]).await;
    let a = p.admin.unwrap();
    let port = a.port();
    for host in [
        "evil.example",
        &format!("evil.example:{port}"),
        "127.0.0.1.nip.io",
    ] {
        let r = get_with_host(a, "/api/records", host, None).await;
        assert_eq!(r.status, 421, "Host: {host}: {}", r.text());
        assert!(r.text().contains("DNS rebinding"), "{}", r.text());
    }
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "LOCALHOST".to_string(),
        format!("[::1]:{port}"),
        "app.localhost".to_string(),
    ] {
        let r = get_with_host(a, "/api/health", &host, None).await;
        assert_eq!(r.status, 200, "Host: {host}: {}", r.text());
    }
    // With a token, the token is the guard: any name is fine.
    let p = proxy::spawn(&["--admin-token", TOKEN]).await;
    let a = p.admin.unwrap();
    let r = get_with_host(a, "/api/health", "sluice.lab.example", Some(TOKEN)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get_with_host(a, "/api/health", "sluice.lab.example", None).await;
    assert_eq!(r.status, 401, "{}", r.text());
}

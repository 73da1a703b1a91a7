//! Headless Chromium over `ws://` and `wss://` through sluice with
//! interception on, and the web UI showing those WebSockets' messages
//! (`tests/ui/ws-page.mjs`): real echo origins (tokio-tungstenite, one
//! speaking TLS with a certificate the browser trusts only through
//! sluice's CA), sluice in-process with its admin server, the browser's
//! own view of every echo and close, and what sluice stored.

use std::time::Duration;

use serde_json::Value;

use crate::intercept_clients::{
    browser_home, browser_rules, client, require_browser, ui_dir, CHROMIUM,
};
use crate::support::admin::{self, wait_records};
use crate::support::pki::{pki, OriginCert};
use crate::support::{bounded, proxy};
use crate::websocket::WsOrigin;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_websockets_through_interception_shown_live_in_the_ui() {
    require_browser("browser WebSocket");
    bounded(Duration::from_secs(120), async {
        let plain = WsOrigin::start().await;
        let secure =
            WsOrigin::start_with(Some(pki().origin_config(OriginCert::Valid, &[b"http/1.1"])))
                .await;
        let dir = tempfile::tempdir().unwrap();
        let rules = browser_rules(dir.path());
        let proxy = proxy::start(|c| {
            pki().intercept_all(c);
            c.admin.admin_addr = Some("127.0.0.1:0".parse().unwrap());
            c.rules.rules_file = Some(rules);
        })
        .await;
        let admin = proxy.admin_addr.unwrap();
        let token = admin::token_of(admin).expect("the admin server generated a token");
        let home = browser_home().await;
        let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-test-output");

        let mut node = client("node");
        node.arg(ui_dir().join("ws-page.mjs"))
            .current_dir(ui_dir())
            .env("HOME", home.path())
            .env("WS_URL", format!("ws://{}/chat", plain.addr))
            .env(
                "WSS_URL",
                format!("wss://localhost:{}/secure", secure.addr.port()),
            )
            .env("SLUICE_PROXY", format!("http://{}", proxy.addr))
            .env("SLUICE_ADMIN", format!("http://{admin}"))
            .env("SLUICE_TOKEN", &token)
            .env("SLUICE_OUT", &out)
            .env("CHROMIUM", CHROMIUM);
        let ran = tokio::time::timeout(Duration::from_secs(90), node.output())
            .await
            .expect("the browser script ends within 90 s")
            .expect("node runs");
        let stdout = String::from_utf8_lossy(&ran.stdout);
        let line = stdout.lines().rev().find(|l| l.starts_with('{'));
        let result: Value = serde_json::from_str(line.unwrap_or_default()).unwrap_or_else(|e| {
            panic!(
                "no JSON from ws-page.mjs ({e})\nstdout: {stdout}\nstderr: {}",
                String::from_utf8_lossy(&ran.stderr)
            )
        });
        println!("{}", serde_json::to_string_pretty(&result).unwrap());
        assert!(
            ran.status.success() && result["ok"] == true,
            "browser WebSocket test failed: {:#}\nstderr: {}",
            result["failures"],
            String::from_utf8_lossy(&ran.stderr)
        );

        // What sluice stored, seen from the API: the plain WebSocket went
        // through a CONNECT tunnel (as Chromium sends ws:// to a proxy),
        // the secure one through interception; both are one 101 record.
        let rows = wait_records(admin, "kind=http&status=101", 2).await;
        let chat = rows
            .iter()
            .find(|r| r["url"].as_str().is_some_and(|u| u.ends_with("/chat")))
            .unwrap_or_else(|| panic!("no /chat record: {rows:#?}"));
        let secure_row = rows
            .iter()
            .find(|r| r["url"] == format!("https://localhost:{}/secure", secure.addr.port()))
            .unwrap_or_else(|| panic!("no intercepted /secure record: {rows:#?}"));
        assert_eq!(secure_row["tls"]["sni"], "localhost", "{secure_row}");
        let d = admin::get_json(admin, &format!("/api/records/{}", chat["id"])).await;
        // 3 sent, 3 echoed, 1 live, its echo, the close both ways.
        assert_eq!(d["messages"]["seen"], 10, "{d}");
        assert!(!d["close_reason"].is_null(), "{d}");
    })
    .await;
}

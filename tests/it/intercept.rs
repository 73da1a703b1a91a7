//! HTTPS interception, end to end: real TLS origins (certificates from a
//! test CA: valid, expired, for another name, self-signed), sluice with a
//! team CA in front of them, and real clients (curl, rustls) that trust
//! sluice's CA — or, for the fallback, do not.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sluice::{Config, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};

use crate::support::admin::{self, get_json, wait_records};
use crate::support::client;
use crate::support::https::{self, Opened};
use crate::support::pki::{pki, OriginCert};
use crate::support::{eventually, origin, proxy};

const BOTH: &[&[u8]] = &[b"h2", b"http/1.1"];

/// An intercepting proxy with an admin server, then `tweak`ed.
async fn intercepting(tweak: impl FnOnce(&mut Config)) -> Proxy {
    proxy::start(|c| {
        pki().intercept_all(c);
        c.admin.admin_addr = Some("127.0.0.1:0".parse().unwrap());
        tweak(c)
    })
    .await
}

/// curl through `proxy`, trusting sluice's team CA; stdout with the head.
async fn curl(proxy: SocketAddr, args: &[&str]) -> String {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10", "--noproxy", ""])
        .arg("--cacert")
        .arg(&pki().sluice_ca_cert)
        .arg("-x")
        .arg(format!("http://{proxy}"))
        .args(args)
        .output()
        .await
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The detail of the one record whose URL is `url`.
async fn detail_of(admin: SocketAddr, url: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows = wait_records(admin, "", 1).await;
        if let Some(r) = rows.iter().find(|r| r["url"] == url) {
            return get_json(admin, &format!("/api/records/{}", r["id"])).await;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no record for {url}: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_https_over_http1_and_http2_and_each_exchange_is_a_record() {
    let origin = origin::https(pki().origin_config(OriginCert::Valid, BOTH)).await;
    let proxy = intercepting(|_| {}).await;
    let admin = proxy.admin_addr.unwrap();
    let port = origin.port();
    // The origin prefers h2, and sluice speaks it upstream for both: it
    // bridges an HTTP/1.1 client to it.
    let cases = [
        ("--http1.1", "a", "HTTP/1.1 200", "http/1.1"),
        ("--http2", "b", "HTTP/2 200", "h2"),
    ];
    for (flag, q, status, alpn) in cases {
        let url = format!("https://localhost:{port}/headers?{q}");
        let out = curl(proxy.addr, &[flag, &url]).await;
        assert!(out.contains(status), "{flag}: {out}");
        assert!(out.contains("HTTP/2.0"), "{flag}: the origin saw {out}");
        // Over HTTP/2 the authority is `:authority`; a Host header beside
        // it is a duplicate nginx answers with 400.
        assert!(!out.contains("\nhost:"), "{flag}: Host sent over h2: {out}");
        let d = detail_of(admin, &url).await;
        assert_eq!(d["status"], 200, "{d}");
        let tls = &d["tls"];
        assert_eq!(tls["sni"], "localhost", "{d}");
        assert_eq!(tls["client_alpn"], alpn, "{d}");
        assert_eq!(tls["upstream_alpn"], "h2", "{d}");
        assert_eq!(tls["verified"], true, "{d}");
        assert!(
            tls["upstream_cert"]["issuer"]
                .as_str()
                .unwrap_or_default()
                .contains("origin test CA"),
            "{d}"
        );
        assert!(
            tls["client_version"]
                .as_str()
                .unwrap_or_default()
                .contains("TLS"),
            "{d}"
        );
        assert!(d["offsets_us"]["tls_us"].as_i64().unwrap_or(0) > 0, "{d}");
    }
    // The tunnels' own records say they were intercepted.
    let tunnels = wait_records(admin, "kind=tunnel", 2).await;
    for t in &tunnels {
        let d = get_json(admin, &format!("/api/records/{}", t["id"])).await;
        assert_eq!(d["tls"]["state"], "intercepted", "{d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_is_bridged_when_client_and_origin_disagree() {
    let h1_only = origin::https(pki().origin_config(OriginCert::Valid, &[b"http/1.1"])).await;
    let h2_only = origin::https(pki().origin_config(OriginCert::Valid, &[b"h2"])).await;
    let proxy = intercepting(|_| {}).await;
    // An h2 client reaching an h1-only origin is offered HTTP/1.1.
    let url = format!("https://localhost:{}/headers", h1_only.port());
    let out = curl(proxy.addr, &["--http2", &url]).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("GET /headers HTTP/1.1"), "{out}");
    // An h1 client reaching an h2-only origin: sluice speaks h2 upstream.
    let url = format!("https://localhost:{}/headers", h2_only.port());
    let out = curl(proxy.addr, &["--http1.1", &url]).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("HTTP/2.0"), "the origin saw HTTP/2: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_certificate_failures_are_502s_that_say_what_failed() {
    let proxy = intercepting(|_| {}).await;
    let admin = proxy.admin_addr.unwrap();
    let cases = [
        (OriginCert::Expired, "expired"),
        (OriginCert::WrongName, "not valid for the name localhost"),
        (OriginCert::SelfSigned, "unknown issuer"),
    ];
    for (kind, needle) in cases {
        let origin = origin::https(pki().origin_config(kind, &[b"http/1.1"])).await;
        let resp = https::get_once(proxy.addr, origin, "/small").await.unwrap();
        assert_eq!(resp.status, 502, "{kind:?}: {}", resp.text());
        assert!(resp.text().contains(needle), "{kind:?}: {}", resp.text());
        assert_eq!(resp.header("x-sluice-error"), Some("upstream-tls"));
        let url = format!("https://localhost:{}/small", origin.port());
        let d = detail_of(admin, &url).await;
        assert!(
            d["error"].as_str().unwrap_or_default().contains(needle),
            "{kind:?}: {d}"
        );
        assert!(
            d["tls"]["upstream_error"]
                .as_str()
                .unwrap_or_default()
                .contains(needle),
            "{d}"
        );
    }
    let m = admin::metrics(admin).await;
    let failed = m
        .get(
            "sluice_tls_tunnels_total",
            &[("outcome", "upstream_failed"), ("reason", "http1")],
        )
        .unwrap_or(0.0);
    assert!(failed >= 3.0, "{failed}");
}

fn rules_file(dir: &Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("rules.txt");
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_upstream_by_rule_or_flag_is_served_and_marked_unverified() {
    let origin = origin::https(pki().origin_config(OriginCert::SelfSigned, &[b"http/1.1"])).await;
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_file(dir.path(), "localhost intercept://insecure\n");
    let by_rule = intercepting(|c| c.rules.rules_file = Some(rules)).await;
    let by_flag = intercepting(|c| c.tls.insecure_upstream = true).await;
    for proxy in [&by_rule, &by_flag] {
        let resp = https::get_once(proxy.addr, origin, "/small").await.unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
        let url = format!("https://localhost:{}/small", origin.port());
        let d = detail_of(proxy.admin_addr.unwrap(), &url).await;
        assert_eq!(d["tls"]["verified"], false, "{d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_literal_host_gets_a_certificate_for_its_address() {
    let origin = origin::https(pki().origin_config(OriginCert::Valid, BOTH)).await;
    let proxy = intercepting(|_| {}).await;
    let url = format!("https://127.0.0.1:{}/small", origin.port());
    let out = curl(proxy.addr, &[&url]).await;
    assert!(out.contains(" 200"), "{out}");
    // And a client that names the IP: no SNI, an IP-address SAN.
    let s = client::connect_tunnel(proxy.addr, origin).await.unwrap();
    let name =
        rustls::pki_types::ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
    let mut tls = tokio_rustls::TlsConnector::from(pki().client_config(&[b"http/1.1"]))
        .connect(name, s)
        .await
        .expect("the leaf carries 127.0.0.1");
    tls.write_all(b"GET /small HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let resp = client::read_response(&mut BufReader::new(tls))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
}

/// A client that trusts only the origin's CA, as a pinned app does.
fn pinned_client() -> Arc<rustls::ClientConfig> {
    pki().client_trusting(&pki().origin_ca_der, &[b"http/1.1"])
}

/// The pinned client's `GET /small` through a tunnel sluice passes
/// through (so the client sees the origin's own certificate), read until
/// the origin closes.
async fn pinned_get(proxy: SocketAddr, origin: SocketAddr) -> client::Response {
    let Opened::Tls(mut tls) = https::open_with(proxy, origin, pinned_client())
        .await
        .expect("passed through: the origin's own certificate")
    else {
        panic!("CONNECT refused")
    };
    tls.get_mut()
        .write_all(b"GET /small HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let resp = client::read_response(&mut tls).await.unwrap();
    let mut rest = Vec::new();
    let _ = tls.read_to_end(&mut rest).await;
    resp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_refuses_the_certificate_is_recorded_and_then_passed_through() {
    let origin = origin::https(pki().origin_config(OriginCert::Valid, BOTH)).await;
    let proxy = intercepting(|_| {}).await;
    let admin = proxy.admin_addr.unwrap();
    let first = https::open_with(proxy.addr, origin, pinned_client()).await;
    assert!(first.is_err(), "the pinned client refuses sluice's leaf");
    let refused = wait_records(admin, "kind=tunnel", 1).await;
    let d = get_json(admin, &format!("/api/records/{}", refused[0]["id"])).await;
    assert_eq!(d["tls"]["state"], "refused", "{d}");
    assert_eq!(d["tls"]["fallback"], true, "{d}");
    let reason = d["tls"]["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.contains("does not trust sluice's CA") && reason.contains("/ca"),
        "{reason}"
    );
    // The same client again: passed through, it talks to the origin itself.
    let resp = pinned_get(proxy.addr, origin).await;
    assert_eq!(resp.status, 200);
    assert!(resp.header("via").is_none(), "not served by sluice");
    let tunnels = wait_records(admin, "kind=tunnel", 2).await;
    let d = get_json(admin, &format!("/api/records/{}", tunnels[0]["id"])).await;
    assert_eq!(d["tls"]["state"], "passthrough", "{d}");
    assert_eq!(d["tls"]["why"], "fallback", "{d}");
    let m = admin::metrics(admin).await;
    assert!(
        m.get(
            "sluice_tls_tunnels_total",
            &[("outcome", "client_refused"), ("reason", "unknown_ca")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
}

/// Opens an intercepted tunnel to `origin`, finishes the handshake and
/// closes it cleanly (close_notify, FIN) without a request.
async fn close_unused(proxy: SocketAddr, origin: SocketAddr) {
    let Opened::Tls(mut tls) = https::open(proxy, origin, &[b"http/1.1"])
        .await
        .expect("sluice's certificate is trusted")
    else {
        panic!("CONNECT refused")
    };
    tls.get_mut().shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = tls.read_to_end(&mut rest).await;
}

/// The TLS state of every tunnel record of `admin`, once there are `n`.
async fn tunnel_states(admin: SocketAddr, n: usize) -> Vec<Value> {
    let mut states = Vec::new();
    for t in wait_records(admin, "kind=tunnel", n).await {
        let d = get_json(admin, &format!("/api/records/{}", t["id"])).await;
        states.push(d["tls"].clone());
    }
    states
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_unused_is_a_refusal_unless_its_client_uses_another() {
    let origin = origin::https(pki().origin_config(OriginCert::Valid, BOTH)).await;
    // Alone, a handshake then a close without a request looks like a
    // client that checked a pin after the handshake: passed through.
    let proxy = intercepting(|_| {}).await;
    close_unused(proxy.addr, origin).await;
    let states = tunnel_states(proxy.admin_addr.unwrap(), 1).await;
    assert_eq!(states[0]["state"], "refused", "{states:?}");
    assert_eq!(states[0]["why"], "closed_after_handshake", "{states:?}");
    assert_eq!(states[0]["fallback"], true, "{states:?}");

    // A browser opens a spare connection beside the one it uses and closes
    // it unused: while the used one is open, or after it closed, that is
    // no refusal, and the host stays intercepted.
    let proxy = intercepting(|_| {}).await;
    let admin = proxy.admin_addr.unwrap();
    let mut used = https::HttpsClient::new(proxy.addr);
    assert_eq!(used.get(origin, "/small").await.unwrap().status, 200);
    close_unused(proxy.addr, origin).await;
    drop(used);
    close_unused(proxy.addr, origin).await;
    let resp = https::get_once(proxy.addr, origin, "/small").await.unwrap();
    assert_eq!(resp.status, 200);
    assert!(
        resp.header("via").is_some(),
        "served by sluice: intercepted"
    );
    let states = tunnel_states(admin, 4).await;
    assert_eq!(states.len(), 4, "{states:?}");
    for s in &states {
        assert_eq!(s["state"], "intercepted", "{states:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fallback_a_refusing_client_keeps_being_refused() {
    let origin = origin::https(pki().origin_config(OriginCert::Valid, BOTH)).await;
    let proxy = intercepting(|c| c.tls.fallback = None).await;
    for _ in 0..2 {
        assert!(https::open_with(proxy.addr, origin, pinned_client())
            .await
            .is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_that_is_not_selected_is_relayed_unchanged() {
    let origin = origin::https(pki().origin_config(OriginCert::Valid, BOTH)).await;
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_file(dir.path(), "localhost passthrough://\n");
    let off = proxy::start(|c| c.admin.admin_addr = Some("127.0.0.1:0".parse().unwrap())).await;
    let by_rule = intercepting(|c| c.rules.rules_file = Some(rules)).await;
    for (proxy, why) in [(&off, "not_selected"), (&by_rule, "rule")] {
        assert_eq!(pinned_get(proxy.addr, origin).await.status, 200);
        let admin = proxy.admin_addr.unwrap();
        let t = wait_records(admin, "kind=tunnel", 1).await;
        let d = get_json(admin, &format!("/api/records/{}", t[0]["id"])).await;
        assert_eq!(d["tls"]["why"], why, "{d}");
        assert!(
            eventually(Duration::from_secs(2), || proxy
                .registry
                .live(sluice::registry::Kind::Tunnel)
                == 0)
            .await
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_hello_is_cut_at_the_handshake_deadline() {
    let origin = origin::https(pki().origin_config(OriginCert::Valid, BOTH)).await;
    let proxy = intercepting(|c| c.tls.handshake_timeout = Duration::from_secs(1)).await;
    let admin = proxy.admin_addr.unwrap();
    let (status, _, mut s) =
        client::connect(proxy.addr, format!("localhost:{}", origin.port()), "")
            .await
            .unwrap();
    assert_eq!(status, 200);
    // A TLS record header announcing 512 bytes, then one byte: slowloris.
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let closed = client::wait_closed(&mut s, Duration::from_secs(5)).await;
    let took = closed.expect("sluice closes a stalled handshake");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?} (started {started:?})"
    );
    let t = wait_records(admin, "kind=tunnel", 1).await;
    let d = get_json(admin, &format!("/api/records/{}", t[0]["id"])).await;
    assert_eq!(d["tls"]["why"], "timeout", "{d}");
    assert!(
        d["close_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("did not finish the TLS handshake"),
        "{d}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_of_5000_intercepted_connections_leaves_no_fd_or_socket_behind() {
    use crate::support::{bounded, churn, netns};
    bounded(Duration::from_secs(120), async move {
        const CONNECTIONS: usize = 5000;
        const PARALLEL: usize = 32;
        let origin = origin::https(pki().origin_config(OriginCert::Valid, &[b"http/1.1"])).await;
        let p = pki();
        let (cert, key, roots) = (
            p.sluice_ca_cert.display().to_string(),
            p.sluice_ca_key.display().to_string(),
            p.origin_ca_cert.display().to_string(),
        );
        let sluice = proxy::spawn(&[
            "--intercept",
            "all",
            "--ca-cert",
            &cert,
            "--ca-key",
            &key,
            "--upstream-ca",
            &roots,
            "--record",
            "off",
        ])
        .await;
        let proxy = sluice.addr;
        async fn one(proxy: SocketAddr, origin: SocketAddr, i: usize) -> Result<(), String> {
            let r = https::get_once(proxy, origin, "/small")
                .await
                .map_err(|e| format!("connection {i}: {e}"))?;
            if r.status != 200 || r.body.len() != 100 {
                return Err(format!("connection {i}: {} {}", r.status, r.text()));
            }
            Ok(())
        }
        for i in 0..PARALLEL {
            one(proxy, origin, i).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let baseline = sluice.fd_count();
        let started = std::time::Instant::now();
        let errors = churn(CONNECTIONS, PARALLEL, move |i| one(proxy, origin, i)).await;
        eprintln!(
            "{CONNECTIONS} intercepted connections in {:?}",
            started.elapsed()
        );
        assert!(
            errors.is_empty(),
            "{} failures, first: {:?}",
            errors.len(),
            &errors[..errors.len().min(5)]
        );
        let settled =
            eventually(Duration::from_secs(5), || sluice.fd_count() <= baseline + 4).await;
        assert!(
            settled,
            "fds: baseline {baseline}, now {}",
            sluice.fd_count()
        );
        let established: Vec<_> = netns::tcp_sockets_of(sluice.pid())
            .into_iter()
            .filter(|(_, r)| r.state == netns::TCP_ESTABLISHED)
            .collect();
        assert!(established.is_empty(), "still established: {established:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_without_close_notify_is_an_ordinary_eof() {
    let origin = origin::https(pki().origin_config(OriginCert::Valid, BOTH)).await;
    let proxy = intercepting(|_| {}).await;
    let admin = proxy.admin_addr.unwrap();
    let Opened::Tls(mut tls) = https::open(proxy.addr, origin, &[b"http/1.1"])
        .await
        .unwrap()
    else {
        panic!("CONNECT refused")
    };
    tls.get_mut()
        .write_all(b"GET /small HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(client::read_response(&mut tls).await.unwrap().status, 200);
    // Dropped: a FIN, no close_notify (as browsers close spare connections).
    drop(tls);
    let t = wait_records(admin, "kind=tunnel", 1).await;
    let d = get_json(admin, &format!("/api/records/{}", t[0]["id"])).await;
    assert_eq!(d["close_reason"], "eof", "{d}");
    assert!(d["error"].is_null(), "{d}");
}

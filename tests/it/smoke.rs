//! A first story: an origin, sluice in front of it, a client through it.

use std::time::Duration;

use crate::support::proxy::{self, SluiceProcess};
use crate::support::{client, eventually, origin};

#[tokio::test]
async fn forward_get_through_proxy() {
    let origin = origin::http().await;
    let proxy = proxy::start(|_| {}).await;
    let resp = client::get_once(proxy.addr, origin, "/small")
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, vec![b'x'; 100]);
    assert_eq!(resp.header("via"), Some("1.1 sluice"));
    assert!(
        eventually(Duration::from_secs(2), || proxy
            .registry
            .live(sluice::registry::Kind::Http)
            == 0)
        .await
    );
}

#[test]
fn binary_starts_and_exits_zero_on_sigterm() {
    let mut p = SluiceProcess::start(&["--drain-timeout", "2s"]);
    p.signal(libc::SIGTERM);
    assert_eq!(
        p.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        p.log_text()
    );
}

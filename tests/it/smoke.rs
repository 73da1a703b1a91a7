//! A first story: an origin, sluice in front of it, a client through it.

use std::time::Duration;

use crate::support::eventually;
use crate::support::mode::per_mode;
use crate::support::proxy::SluiceProcess;

per_mode! {
    #[tokio::test]
    async fn forward_get_through_proxy(mode) {
        let origin = mode.http_origin().await;
        let proxy = mode.proxy(|_| {}).await;
        let resp = mode.get_once(proxy.addr, origin, "/small").await.unwrap();
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

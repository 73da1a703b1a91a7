//! Unit tests of the action values and helpers in `actions.rs`.

use super::*;

#[test]
fn upstream_forms() {
    let u = Upstream::parse("127.0.0.1:3000").expect("valid");
    assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", Some(3000)));
    assert_eq!(u.port_or(80), 3000);
    let u = Upstream::parse("Backend.Local").expect("valid");
    assert_eq!((u.host.as_str(), u.port), ("backend.local", None));
    assert_eq!(u.port_or(8080), 8080);
    let u = Upstream::parse("[::1]:8443").expect("valid");
    assert_eq!((u.host.as_str(), u.port), ("::1", Some(8443)));
    assert_eq!(u.to_string(), "[::1]:8443");
    for bad in [
        "",
        "a.com:0",
        "a.com:99999",
        "a.com:x",
        "::1",
        "[nope]:1",
        "a b",
        "a/b:1",
        "[::1]x",
    ] {
        assert!(Upstream::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn header_edits_parse_and_apply_in_order() {
    let edits: Vec<HeaderEdit> = ["x-a=1", "+x-a=2", "-x-gone", "X-Empty=", "x-sp=a b"]
        .iter()
        .map(|s| HeaderEdit::parse(s).expect("valid"))
        .collect();
    assert_eq!(edits[3].name().as_str(), "x-empty");
    assert_eq!(edits[1].to_string(), "+x-a=2");
    let mut h = HeaderMap::new();
    h.insert("x-a", HeaderValue::from_static("old"));
    h.insert("x-gone", HeaderValue::from_static("bye"));
    apply_header_edits(&mut h, &edits);
    let a: Vec<_> = h.get_all("x-a").iter().collect();
    assert_eq!(a, vec!["1", "2"]);
    assert!(!h.contains_key("x-gone"));
    assert_eq!(h["x-empty"], "");
    assert_eq!(h["x-sp"], "a b");
}

#[test]
fn header_edit_errors() {
    for bad in [
        "x-a",
        "-x-a=1",
        "bad name=1",
        "=v",
        "x=a\nb",
        "content-length=5",
        "-Transfer-Encoding",
        "+connection=close",
    ] {
        assert!(HeaderEdit::parse(bad).is_err(), "{bad}");
    }
    let e = HeaderEdit::parse("Content-Length=1").unwrap_err();
    assert!(e.contains("manages"), "{e}");
}

#[test]
fn statuses_blocks_and_delays() {
    assert_eq!(parse_status("404", 200, 599), Ok(StatusCode::NOT_FOUND));
    assert!(parse_status("199", 200, 599).is_err());
    assert!(parse_status("600", 200, 599).is_err());
    assert!(parse_status("abc", 200, 599).is_err());
    assert_eq!(
        Block::parse("403"),
        Ok(Block::Status(StatusCode::FORBIDDEN))
    );
    assert_eq!(Block::parse("CLOSE"), Ok(Block::Close));
    assert!(Block::parse("200").is_err());
    assert_eq!(parse_delay("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_delay("1m 30s"), Ok(Duration::from_secs(90)));
    assert!(parse_delay("soon").is_err());
    assert!(parse_delay("2h").is_err());
}

#[test]
fn rates_are_explicit_about_bits_and_bytes() {
    let bps = |s: &str| Rate::parse(s).map(|r| r.bytes_per_sec());
    assert_eq!(bps("64kbps"), Ok(8_000));
    assert_eq!(bps("1mbps"), Ok(125_000));
    assert_eq!(bps("1Mbps"), Ok(125_000));
    assert_eq!(bps("2mbit/s"), Ok(250_000));
    assert_eq!(bps("800bps"), Ok(100));
    assert_eq!(bps("100KB/s"), Ok(100_000));
    assert_eq!(bps("1.5MB/s"), Ok(1_500_000));
    assert_eq!(bps("1MiB/s"), Ok(1_048_576));
    assert_eq!(bps("10B/s"), Ok(10));
    for bad in [
        "64",
        "64k",
        "64kb",
        "64kb/s",
        "64KBps",
        "64Bps",
        "x kbps",
        "0kbps",
        "1bps",
        "64 kbps",
        "1e3kbps",
        "99999999GB/s",
    ] {
        assert!(Rate::parse(bad).is_err(), "{bad}");
    }
    assert_eq!(Rate::parse("64kbps").expect("valid").to_string(), "64kbps");
}

#[test]
fn url_targets_and_rewrites() {
    let original: Uri = "http://a.com:8080/old?x=1".parse().expect("uri");
    let t = UrlTarget::parse("/new?y=2", &Groups::None).expect("valid");
    let rw = t.expand(None);
    assert_eq!(rw, UrlRewrite::PathAndQuery("/new?y=2".into()));
    assert_eq!(
        rewrite_uri(&original, &rw).expect("valid").to_string(),
        "http://a.com:8080/new?y=2"
    );
    let t = UrlTarget::parse("http://b.com/z", &Groups::None).expect("valid");
    assert_eq!(
        rewrite_uri(&original, &t.expand(None))
            .expect("valid")
            .to_string(),
        "http://b.com/z"
    );
    let re = regex::Regex::new(r"/u/(\d+)").expect("regex");
    let t = UrlTarget::parse("/users/$1", &Groups::of(&re)).expect("valid");
    let caps = re.captures("http://a.com/u/7").expect("matches");
    assert_eq!(
        t.expand(Some(&caps)),
        UrlRewrite::PathAndQuery("/users/7".into())
    );
    for bad in ["new", "https://b.com/", "http://", "/a b", "ftp://x/"] {
        assert!(UrlTarget::parse(bad, &Groups::None).is_err(), "{bad}");
    }
    let e = UrlTarget::parse("/a b", &Groups::None).unwrap_err();
    assert_eq!(e.offset, 2);
    assert!(rewrite_uri(&original, &UrlRewrite::Absolute("https://x/".into())).is_err());
    assert!(rewrite_uri(
        &original,
        &UrlRewrite::PathAndQuery("no-slash\u{7f}".into())
    )
    .is_err());
}

#[test]
fn intercept_values_and_their_syntax() {
    assert_eq!(Intercept::parse("intercept", ""), Ok(Intercept::On));
    assert_eq!(
        Intercept::parse("intercept", "insecure"),
        Ok(Intercept::Insecure)
    );
    assert_eq!(
        Intercept::parse("intercept", "INSECURE"),
        Ok(Intercept::Insecure)
    );
    assert_eq!(
        Intercept::parse("passthrough", ""),
        Ok(Intercept::Passthrough)
    );
    let e = Intercept::parse("intercept", "foo").unwrap_err();
    assert!(
        e.contains("intercept:// takes no value or `insecure`") && e.contains("`foo`"),
        "{e}"
    );
    let e = Intercept::parse("passthrough", "x").unwrap_err();
    assert!(e.contains("passthrough:// takes no value"), "{e}");
    for bad in ["insecur", "insecure ", "on", "1"] {
        assert!(Intercept::parse("intercept", bad).is_err(), "{bad}");
    }
    assert!(Intercept::parse("passthrough", "insecure").is_err());
    assert!(Intercept::parse("upstream", "").is_err());
    assert_eq!(Intercept::On.to_string(), "intercept://");
    assert_eq!(Intercept::Insecure.to_string(), "intercept://insecure");
    assert_eq!(Intercept::Passthrough.to_string(), "passthrough://");
    assert!(Intercept::On.decrypts() && Intercept::On.verifies_upstream());
    assert!(Intercept::Insecure.decrypts() && !Intercept::Insecure.verifies_upstream());
    assert!(!Intercept::Passthrough.decrypts());
    assert_eq!(ActionKind::Intercept.name(), "intercept");
    assert!(ActionKind::Intercept.applies_to_connect());
}

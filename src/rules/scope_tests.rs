//! Unit tests of the `--intercept` setting in `scope.rs`.

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn scope(text: &str) -> InterceptScope {
    InterceptScope::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[test]
fn off_and_all() {
    let client = ip("127.0.0.1");
    for text in ["off", "OFF", " off "] {
        let s = scope(text);
        assert!(s.is_off());
        assert!(!s.matches("example.com", 443, client));
        assert!(!s.matches("10.0.0.5", 8443, client));
        assert_eq!(s, InterceptScope::default());
        assert_eq!(s.to_string(), "off");
    }
    for text in ["all", "All"] {
        let s = scope(text);
        assert!(!s.is_off());
        assert!(s.matches("example.com", 443, client));
        assert!(s.matches("anything.test", 1, ip("::1")));
        assert_eq!(s.to_string(), "all");
    }
    assert_ne!(scope("all"), scope("off"));
    assert_ne!(scope("all"), scope("*"));
}

#[test]
fn patterns_match_as_rule_match_does() {
    let s = scope("example.com, *.internal,10.0.0.5:8443,[::1]:9443,/^re\\.test:44[0-9]$/");
    let client = ip("192.168.1.2");
    let m = |host: &str, port: u16| s.matches(host, port, client);
    // A bare host: any port, any case, trailing dot.
    assert!(m("example.com", 443));
    assert!(m("Example.COM.", 8443));
    assert!(!m("www.example.com", 443));
    // `*.suffix`: subdomains at any depth, not the apex.
    assert!(m("db.internal", 443));
    assert!(m("a.b.internal", 5432));
    assert!(!m("internal", 443));
    // host:port: that port only.
    assert!(m("10.0.0.5", 8443));
    assert!(!m("10.0.0.5", 443));
    assert!(m("::1", 9443));
    assert!(m("[::1]", 9443));
    assert!(!m("::1", 443));
    // A regex sees `host:port`, as for a CONNECT rule.
    assert!(m("re.test", 443));
    assert!(!m("re.test", 450));
    assert!(!m("other.test", 443));
    assert!(!s.is_off());
    assert_eq!(
        s.to_string(),
        "example.com,*.internal,10.0.0.5:8443,[::1]:9443,/^re\\.test:44[0-9]$/"
    );
    let star = scope("*:8443");
    assert!(star.matches("any.test", 8443, client));
    assert!(!star.matches("any.test", 443, client));
}

#[test]
fn equal_when_written_alike() {
    assert_eq!(scope("a.com,b.com"), scope(" a.com , b.com "));
    assert_ne!(scope("a.com,b.com"), scope("b.com,a.com"));
    let s = scope("a.com");
    let copy = s.clone();
    assert_eq!(s, copy);
    assert!(copy.matches("a.com", 443, ip("::1")));
    assert_eq!(format!("{s:?}"), r#"InterceptScope("a.com")"#);
}

#[test]
fn errors_name_the_bad_pattern() {
    for (text, needles) in [
        ("", &["expected `off`, `all`"][..]),
        ("a.com,,b.com", &["empty pattern"]),
        ("a.com,", &["empty pattern"]),
        (
            "good.com,api-*.example.com",
            &["`api-*.example.com`", "wildcard"],
        ),
        ("a..b", &["`a..b`", "invalid host"]),
        ("a.com:0", &["`a.com:0`", "port"]),
        ("a.com:99999", &["`a.com:99999`", "port"]),
        ("http://a.com", &["`http://a.com`", "not a URL"]),
        ("a.com/path", &["`a.com/path`", "never matches a CONNECT"]),
        ("/(/", &["`/(/`", "invalid regex"]),
        ("all,a.com", &["`all` stands alone"]),
        ("a.com,off", &["`off` stands alone"]),
        // Nothing may turn the pattern into more of a rule line.
        (
            "a.com status://404",
            &["`a.com status://404`", "one MATCH word"],
        ),
        ("a.com#x", &["`a.com#x`", "one MATCH word"]),
        ("\"a.com\"", &["one MATCH word"]),
    ] {
        let e = InterceptScope::parse(text).expect_err(text);
        for needle in needles {
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
    // Every bad pattern is reported, each by name; the good ones are not.
    let e = InterceptScope::parse("a..b,ok.com,x.com:0").expect_err("two bad");
    assert!(e.contains("`a..b`") && e.contains("`x.com:0`"), "{e}");
    assert!(!e.contains("ok.com"), "{e}");
}

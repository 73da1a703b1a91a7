//! Unit tests of matching and plans (`matcher.rs`, `plan.rs`), including
//! a comparison of the indexed matcher with a naive linear scan.

use std::time::Duration;

use http::StatusCode;

use super::*;
use crate::rules::{parse, Answer, Applied, Block, Chosen, Intercept, UrlRewrite};

fn set(text: &str) -> RuleSet {
    parse(text).unwrap_or_else(|e| panic!("{e:?}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn matched(set: &RuleSet, method: &str, url: &str) -> Vec<u32> {
    set.plan_url(method, url, ip("127.0.0.1"))
        .expect("url")
        .matched
        .iter()
        .map(|id| id.0)
        .collect()
}

#[test]
fn exact_hosts_any_case_and_port() {
    let s =
        set("Example.com status://404\nexample.com:8080 status://500\nother.com status://404\n");
    assert_eq!(matched(&s, "GET", "http://EXAMPLE.com/"), vec![1]);
    assert_eq!(matched(&s, "GET", "http://example.com.:8080/x"), vec![1, 2]);
    assert_eq!(
        matched(&s, "GET", "http://a.example.com/"),
        Vec::<u32>::new()
    );
    assert_eq!(matched(&s, "CONNECT", "example.com:443"), vec![1]);
    assert_eq!(matched(&s, "CONNECT", "example.com:8080"), vec![1, 2]);
}

#[test]
fn default_ports() {
    let s = set("a.com:80 status://404\na.com:443 status://500\n");
    assert_eq!(matched(&s, "GET", "http://a.com/"), vec![1]);
    assert_eq!(matched(&s, "GET", "http://a.com:80/"), vec![1]);
    assert_eq!(matched(&s, "CONNECT", "a.com:443"), vec![2]);
}

#[test]
fn wildcards_match_subdomains_not_the_apex() {
    let s = set("*.example.com status://404\n*.b.example.com:81 status://500\n* status://502\n");
    assert_eq!(matched(&s, "GET", "http://example.com/"), vec![3]);
    assert_eq!(matched(&s, "GET", "http://a.example.com/"), vec![1, 3]);
    assert_eq!(
        matched(&s, "GET", "http://x.Y.B.example.com:81/"),
        vec![1, 2, 3]
    );
    assert_eq!(matched(&s, "GET", "http://b.example.com:81/"), vec![1, 3]);
    assert_eq!(matched(&s, "GET", "http://notexample.com/"), vec![3]);
    assert_eq!(matched(&s, "CONNECT", "deep.a.example.com:443"), vec![1, 3]);
}

#[test]
fn path_prefixes_and_connect() {
    let s = set("a.com/api/ status://404\n*.a.com/v2 status://500\n*/health status://204\n");
    assert_eq!(matched(&s, "GET", "http://a.com/api/x?y"), vec![1]);
    assert_eq!(matched(&s, "GET", "http://a.com/API/x"), Vec::<u32>::new());
    assert_eq!(matched(&s, "GET", "http://a.com/apix"), Vec::<u32>::new());
    assert_eq!(matched(&s, "GET", "http://x.a.com/v2/z"), vec![2]);
    assert_eq!(matched(&s, "GET", "http://q.test/health"), vec![3]);
    assert_eq!(matched(&s, "CONNECT", "a.com:443"), Vec::<u32>::new());
}

#[test]
fn regexes_see_the_full_url() {
    let s = set(concat!(
        "/^http://a\\.com/x\\?q=1$/ status://404\n",
        "/^http://a\\.com:8080//i status://500\n",
        "/^b\\.com:443$/ block://403\n",
        "/^http://\\[::1\\]:81/ status://502\n",
        "/A\\.COM/i status://503\n",
    ));
    assert_eq!(matched(&s, "GET", "http://A.com/x?q=1"), vec![1, 5]);
    assert_eq!(matched(&s, "GET", "http://a.com:8080/"), vec![2, 5]);
    assert_eq!(matched(&s, "CONNECT", "b.com:443"), vec![3]);
    assert_eq!(matched(&s, "GET", "http://[::1]:81/"), vec![4]);
}

#[test]
fn conditions_filter_matches() {
    let s = set("a.com method:POST status://404\na.com client:10.0.0.0/8 status://500\n");
    let plan = |method: &str, client: &str| -> Vec<u32> {
        s.plan_url(method, "http://a.com/", ip(client))
            .expect("url")
            .matched
            .iter()
            .map(|id| id.0)
            .collect()
    };
    assert_eq!(plan("post", "10.9.9.9"), vec![1, 2]);
    assert_eq!(plan("GET", "10.9.9.9"), vec![2]);
    assert_eq!(plan("GET", "::ffff:10.0.0.1"), vec![2]);
    assert_eq!(plan("GET", "192.168.1.1"), Vec::<u32>::new());
}

#[test]
fn first_matching_rule_per_kind_wins() {
    let s = set(concat!(
        "# comment\n",
        "*.a.com status://404 delay://1s\n",
        "x.a.com status://500 1.2.3.4:81 resDelay://2s\n",
        "* 5.6.7.8 delay://3s throttle://64kbps block://close\n",
    ));
    let p = s
        .plan_url("GET", "http://x.a.com/", ip("::1"))
        .expect("url");
    assert_eq!(p.matched, vec![RuleId(2), RuleId(3), RuleId(4)]);
    let status = p.status.expect("status");
    assert_eq!(
        (status.rule, status.action),
        (RuleId(2), StatusCode::NOT_FOUND)
    );
    assert_eq!(
        p.delay.map(|c| (c.rule, c.action)),
        Some((RuleId(2), Duration::from_secs(1)))
    );
    let up = p.upstream.expect("upstream");
    assert_eq!(
        (up.rule, up.action.to_string()),
        (RuleId(3), "1.2.3.4:81".to_string())
    );
    assert_eq!(p.res_delay.map(|c| c.rule), Some(RuleId(3)));
    assert_eq!(p.throttle.map(|c| c.action.bytes_per_sec()), Some(8000));
    assert_eq!(p.block.map(|c| c.action), Some(Block::Close));
    assert!(matches!(p.answer(false), Some(Answer::Block(_))));
}

#[test]
fn header_edits_are_decided_per_name() {
    let s = set(concat!(
        "a.com resHeaders://content-type=text/html resHeaders://+x-a=1 resHeaders://+x-a=2\n",
        "* resHeaders://x-a=9 resHeaders://x-env=lab reqHeaders://-cookie\n",
    ));
    let p = s.plan_url("GET", "http://a.com/", ip("::1")).expect("url");
    let res: Vec<(u32, String)> = p
        .res_headers
        .iter()
        .map(|c| (c.rule.0, c.action.to_string()))
        .collect();
    assert_eq!(
        res,
        vec![
            (1, "content-type=text/html".into()),
            (1, "+x-a=1".into()),
            (1, "+x-a=2".into()),
            (2, "x-env=lab".into())
        ]
    );
    assert_eq!(p.req_headers.len(), 1);
}

#[test]
fn captures_expand_from_the_supplying_rule() {
    let s = set(concat!(
        "/^http://a\\.com/u/(?P<id>\\d+)/ url:///users?id=${id}\n",
        "/^http://a\\.com/(\\w)/ redirect301://https://b.com/$1 url:///never\n",
        "a.com url:///plain\n",
    ));
    let p = s
        .plan_url("GET", "http://a.com/u/42", ip("::1"))
        .expect("url");
    let url = p.url.as_ref().expect("url");
    assert_eq!(
        (url.rule, &url.action),
        (RuleId(1), &UrlRewrite::PathAndQuery("/users?id=42".into()))
    );
    let r = p.redirect.as_ref().expect("redirect");
    assert_eq!(
        (r.rule, r.action.location.as_str()),
        (RuleId(2), "https://b.com/u")
    );
    assert_eq!(r.action.status, StatusCode::MOVED_PERMANENTLY);
    let p = s.plan_url("GET", "http://a.com/", ip("::1")).expect("url");
    assert_eq!(
        p.url.map(|u| u.action),
        Some(UrlRewrite::PathAndQuery("/plain".into()))
    );
}

#[test]
fn connect_plans_hold_only_tunnel_kinds() {
    let s = set("a.com status://404 reqHeaders://x=1 cors://* mock://200 redirect://http://b/ url:///x\na.com delay://1s throttle://1mbps reqThrottle://8kbps 9.9.9.9:443\n");
    let p = s.plan_url("CONNECT", "a.com:443", ip("::1")).expect("url");
    assert_eq!(p.matched, vec![RuleId(1), RuleId(2)]);
    assert!(p.status.is_none() && p.req_headers.is_empty() && p.cors.is_none());
    assert!(p.response.is_none() && p.redirect.is_none() && p.url.is_none());
    let kinds: Vec<&str> = p.describe().iter().map(|a| a.kind).collect();
    assert_eq!(kinds, vec!["upstream", "delay", "throttle", "reqThrottle"]);
}

#[test]
fn intercept_first_matching_rule_wins_on_connect() {
    let s = set(concat!(
        "*.example.com passthrough://\n",
        "api.example.com intercept://\n",
        "example.com:8443 intercept://insecure delay://1s\n",
        "example.com intercept://\n",
        "* throttle://1mbps\n",
    ));
    let client = ip("10.0.0.1");
    let decided = |host: &str, port: u16| {
        s.plan_connect(host, port, client)
            .intercept
            .map(|c| (c.rule.0, c.action))
    };
    // The broad passthrough comes first, so it decides for api. too.
    assert_eq!(
        decided("api.example.com", 443),
        Some((1, Intercept::Passthrough))
    );
    assert_eq!(
        decided("API.Example.com.", 443),
        Some((1, Intercept::Passthrough))
    );
    assert_eq!(decided("example.com", 8443), Some((3, Intercept::Insecure)));
    assert_eq!(decided("example.com", 443), Some((4, Intercept::On)));
    assert_eq!(decided("other.test", 443), None);
    // The rule that decides interception still leaves the other kinds
    // to later rules, and every matching rule is listed.
    let p = s.plan_connect("api.example.com", 443, client);
    assert_eq!(p.matched, vec![RuleId(1), RuleId(2), RuleId(5)]);
    assert_eq!(p.throttle.map(|c| c.rule), Some(RuleId(5)));
    // In the other order, the specific rule wins for its host only.
    let s = set("api.example.com intercept://\n*.example.com passthrough://\n");
    let p = s.plan_connect("api.example.com", 443, client);
    assert_eq!(
        p.intercept,
        Some(Chosen {
            rule: RuleId(1),
            action: Intercept::On
        })
    );
    let p = s.plan_connect("www.example.com", 443, client);
    assert_eq!(p.intercept.map(|c| c.action), Some(Intercept::Passthrough));
}

#[test]
fn intercept_is_explained_and_only_for_tunnels() {
    let s = set("a.com intercept://insecure\n* delay://1s passthrough://\n");
    let p = s.plan_url("CONNECT", "a.com:443", ip("::1")).expect("url");
    assert!(!p.is_empty());
    assert_eq!(
        p.describe(),
        vec![
            Applied {
                rule: RuleId(2),
                kind: "delay",
                action: "delay://1s".into()
            },
            Applied {
                rule: RuleId(1),
                kind: "intercept",
                action: "intercept://insecure".into()
            },
        ]
    );
    // A plain request to the same host matches the rules, but has no TLS
    // to decrypt: no intercept in its plan or its explanation.
    let p = s.plan_url("GET", "http://a.com/", ip("::1")).expect("url");
    assert_eq!(p.matched, vec![RuleId(1), RuleId(2)]);
    assert!(p.intercept.is_none());
    assert!(p.describe().iter().all(|a| a.kind != "intercept"));
    // A rule that only decides interception makes a tunnel's plan non-empty.
    let s = set("b.com passthrough://\n");
    let p = s.plan_connect("b.com", 443, ip("::1"));
    assert!(!p.is_empty());
    assert_eq!(p.describe()[0].action, "passthrough://");
    assert!(s.plan_connect("c.com", 443, ip("::1")).is_empty());
}

#[test]
fn answers_in_precedence_order() {
    let s = set("a.com mock://200 body://[1]\na.com cors://*\na.com redirect://http://b/\n");
    let p = s
        .plan_url("OPTIONS", "http://a.com/", ip("::1"))
        .expect("url");
    assert!(matches!(p.answer(true), Some(Answer::Redirect(_))));
    let s = set("a.com mock://200 body://[1]\na.com cors://*\n");
    let p = s
        .plan_url("OPTIONS", "http://a.com/", ip("::1"))
        .expect("url");
    assert!(matches!(p.answer(true), Some(Answer::Preflight(_))));
    match p.answer(false) {
        Some(Answer::Mock(m)) => {
            assert_eq!(m.action.content_type, "application/json");
            assert_eq!(m.rule, RuleId(1));
        }
        other => panic!("{other:?}"),
    }
    let s = set("a.com body://replaced\n");
    let p = s.plan_url("GET", "http://a.com/", ip("::1")).expect("url");
    assert!(p.answer(false).is_none());
    assert!(p.response.is_some());
}

#[test]
fn describe_explains_each_action() {
    let s = set("a.com status://404 resHeaders://-server\n* delay://1s 500ms\n");
    let p = s.plan_url("GET", "http://a.com/", ip("::1")).expect("url");
    let d = p.describe();
    let want = |rule, kind, action: &str| Applied {
        rule: RuleId(rule),
        kind,
        action: action.into(),
    };
    assert_eq!(
        d,
        vec![
            want(2, "upstream", "upstream://500ms"),
            want(1, "resHeaders", "resHeaders://-server"),
            want(1, "status", "status://404"),
            want(2, "delay", "delay://1s"),
        ]
    );
    let json = serde_json::to_string(&d[0]).expect("json");
    assert_eq!(
        json,
        r#"{"rule":"L2","kind":"upstream","action":"upstream://500ms"}"#
    );
}

#[test]
fn plan_url_rejects_what_is_not_a_request() {
    let s = set("* status://404\n");
    let client = ip("::1");
    assert!(s.plan_url("GET", "https://a.com/", client).is_err());
    assert!(s.plan_url("GET", "a.com/x", client).is_err());
    assert!(s.plan_url("CONNECT", "a.com", client).is_err());
    assert!(RuleSet::default()
        .plan_url("GET", "http://a/", client)
        .expect("ok")
        .is_empty());
}

/// The rule a linear scan would check, from first principles.
fn naive_matches(rule: &Rule, req: &RequestInfo<'_>) -> bool {
    let host = normalize_host(req.host);
    let host_ok = match &rule.pattern {
        Pattern::Host { host: h, .. } => match h {
            HostPattern::Exact(e) => *host == **e,
            HostPattern::Suffix(s) => host.ends_with(&format!(".{s}")),
            HostPattern::Any => true,
        },
        Pattern::Regex { regex, .. } => regex.is_match(&full_url(req, &host)),
    };
    host_ok && rule.admits(req)
}

#[test]
fn index_agrees_with_a_linear_scan() {
    let hosts = [
        "a.com",
        "b.a.com",
        "c.b.a.com",
        "x.org",
        "A.Com",
        "com",
        "[::1]",
    ];
    let mut text = String::new();
    let mut seed: u64 = 0x1234_5678_9ABC_DEF1;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    for _ in 0..300 {
        let m = match next(8) {
            0 => "*".to_string(),
            1 => format!("*.{}", ["a.com", "com", "b.a.com"][next(3)]),
            2 => format!("{}/p{}", hosts[next(4)], next(3)),
            3 => format!("{}:{}", hosts[next(6)], [80, 443, 8080][next(3)]),
            4 => format!("/{}/", ["b\\.a", "^http://a", "p1", ":443$"][next(4)]),
            _ => hosts[next(hosts.len())].to_string(),
        };
        let cond = ["", " method:GET", " client:10.0.0.0/8"][next(3)];
        text.push_str(&format!("{m}{cond} status://{}\n", 200 + next(300)));
    }
    let s = set(&text);
    for host in hosts {
        for (scheme, port, path) in [
            (Scheme::Http, 80, "/p1/x"),
            (Scheme::Http, 8080, "/p2"),
            (Scheme::Connect, 443, ""),
        ] {
            for (method, client) in [("GET", "10.1.1.1"), ("POST", "::1")] {
                let req = RequestInfo {
                    method,
                    scheme,
                    host,
                    port,
                    path_and_query: path,
                    client: ip(client),
                };
                let got: Vec<RuleId> = s.plan(&req).matched;
                let want: Vec<RuleId> = s
                    .rules
                    .iter()
                    .filter(|r| naive_matches(r, &req))
                    .map(|r| r.id)
                    .collect();
                assert_eq!(got, want, "{req:?}");
            }
        }
    }
}

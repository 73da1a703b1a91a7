//! Unit tests of the rule grammar in `syntax.rs`, and a fixed-seed fuzz
//! test: no input makes the parser (or the compiler and matcher behind
//! it) panic.

use super::*;

fn one(line: &str) -> RuleSpec {
    let mut specs = parse(line).unwrap_or_else(|e| panic!("{line}: {e:?}"));
    assert_eq!(specs.len(), 1);
    specs.remove(0)
}

fn error(line: &str) -> RuleError {
    let errors = parse(line).expect_err(line);
    assert_eq!(errors.len(), 1, "{line}: {errors:?}");
    errors.into_iter().next().expect("one error")
}

fn host_of(spec: &RuleSpec) -> (HostPattern, Option<u16>, Option<String>) {
    match &spec.pattern {
        Pattern::Host { host, port, path } => (host.clone(), *port, path.clone()),
        Pattern::Regex { .. } => panic!("not a host pattern"),
    }
}

#[test]
fn match_forms() {
    let s = one("Example.COM. 127.0.0.1:3000");
    assert_eq!(
        host_of(&s),
        (HostPattern::Exact("example.com".into()), None, None)
    );
    assert_eq!(s.id, RuleId(1));
    let s = one("example.com:8080 status://404");
    assert_eq!(host_of(&s).1, Some(8080));
    let s = one("*.Example.com/api/v1?x status://404");
    assert_eq!(
        host_of(&s),
        (
            HostPattern::Suffix("example.com".into()),
            None,
            Some("/api/v1?x".into())
        )
    );
    assert_eq!(host_of(&one("* status://404")).0, HostPattern::Any);
    assert_eq!(
        host_of(&one("*:81 status://404")),
        (HostPattern::Any, Some(81), None)
    );
    assert_eq!(host_of(&one("*/x status://404")).2, Some("/x".into()));
    assert_eq!(
        host_of(&one("[::1]:8080 status://404")),
        (HostPattern::Exact("::1".into()), Some(8080), None)
    );
    match one(r"/^http://a\.com/(\d+)$/i status://404").pattern {
        Pattern::Regex {
            pattern,
            case_insensitive,
            ..
        } => {
            assert_eq!(pattern, r"^http://a\.com/(\d+)$");
            assert!(case_insensitive);
        }
        Pattern::Host { .. } => panic!("expected a regex"),
    }
}

#[test]
fn match_errors_have_columns() {
    for (line, col, needle) in [
        ("http://a.com/ status://404", 1, "not a URL"),
        ("api-*.a.com status://404", 1, "wildcard"),
        ("*. status://404", 1, "invalid host"),
        ("a.com:0 status://404", 1, "port"),
        ("a..b/ status://404", 1, ""),
        ("/abc status://404", 1, "must end"),
        ("// status://404", 2, "empty regex"),
        ("/(/ status://404", 2, "invalid regex"),
        ("::1 status://404", 1, "brackets"),
        ("a_b!.com status://404", 1, "invalid host"),
    ] {
        let e = error(line);
        assert_eq!((e.line, e.column), (1, col), "{line}: {e}");
        assert!(e.message.contains(needle), "{line}: {e}");
    }
}

#[test]
fn conditions() {
    let s = one("a.com method:get,Post client:10.0.0.0/8,::1 status://404");
    assert_eq!(s.methods, vec!["GET", "POST"]);
    assert_eq!(s.clients.len(), 2);
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    assert!(s.clients[0].contains(ip("10.200.1.1")));
    assert!(s.clients[0].contains(ip("::ffff:10.1.2.3")));
    assert!(!s.clients[0].contains(ip("11.0.0.1")));
    assert!(s.clients[1].contains(ip("::1")));
    assert!(!s.clients[1].contains(ip("127.0.0.1")));
    let all = Cidr::parse("0.0.0.0/0").expect("valid");
    assert!(all.contains(ip("1.2.3.4")) && !all.contains(ip("::2")));
    let v6 = Cidr::parse("fd00::/8").expect("valid");
    assert!(v6.contains(ip("fdff::1")) && !v6.contains(ip("fe00::1")));
    for (line, col) in [
        ("a.com method: status://404", 14),
        ("a.com method:GET,,PUT status://404", 18),
        ("a.com method:G(T status://404", 14),
        ("a.com client:10.0.0.0/33 status://404", 14),
        ("a.com client:1.2.3.4,nope status://404", 22),
        ("a.com method:GET method:PUT status://404", 18),
    ] {
        let e = error(line);
        assert_eq!(e.column, col, "{line}: {e}");
    }
}

#[test]
fn actions_parse_with_kinds() {
    let s = one(concat!(
        r#"a.com 10.0.0.1:80 url:///n redirect://https://b/ reqHeaders://x=1 reqHeaders://-y "#,
        r#"resHeaders://+z=2 status://201 mock://200 body://"{\"a\":1}" bodySub:///a/b/ "#,
        r#"delay://1s resDelay://2s throttle://64kbps reqThrottle://1MB/s block://close cors://*"#
    ));
    let kinds: Vec<ActionKind> = s.actions.iter().map(|a| a.action.kind()).collect();
    use ActionKind as K;
    assert_eq!(
        kinds,
        vec![
            K::Upstream,
            K::Url,
            K::Redirect,
            K::ReqHeaders,
            K::ReqHeaders,
            K::ResHeaders,
            K::Status,
            K::Response,
            K::Response,
            K::BodySub,
            K::Delay,
            K::ResDelay,
            K::Throttle,
            K::ReqThrottle,
            K::Block,
            K::Cors
        ]
    );
    assert_eq!(s.actions[1].col, 19);
    // Op names are case-insensitive; `host://` is an alias of upstream.
    let s = one("a.com STATUS://404 Host://b.local");
    assert!(matches!(s.actions[1].action, ParsedAction::Upstream(_)));
    let s = one("a.com redirect301://https://x/");
    match &s.actions[0].action {
        ParsedAction::Redirect(r) => assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY),
        other => panic!("{other:?}"),
    }
}

#[test]
fn action_errors_point_into_the_value() {
    for (line, col, needle) in [
        ("a.com status://99", 16, "status"),
        ("a.com nope://1", 7, "unknown action"),
        ("a.com status:404", 7, "did you mean `status://"),
        ("a.com what/ever", 7, "expected an action"),
        ("a.com", 1, "no action"),
        ("a.com url:///x/$1", 16, "not a /regex/"),
        (r"/(\d+)/ url:///x/$2", 18, "group 2"),
        ("a.com status://404 status://500", 20, "second `status`"),
        ("a.com body://x bodyFile://y", 16, "second `body/bodyFile`"),
        ("a.com mock://204 body://x", 7, "cannot have a body"),
        ("a.com throttle://64k", 18, "unit"),
        ("a.com bodySub:///a/b", 21, "closing"),
        ("a.com reqHeaders://content-length=1", 20, "manages"),
        ("a.com redirect://", 18, "Location"),
        (r#"a.com body://"x"#, 14, "unterminated"),
    ] {
        let e = error(line);
        assert_eq!(e.column, col, "{line}: {e}");
        assert!(e.message.contains(needle), "{line}: {e}");
    }
    // Header edits and mock + body may share a rule.
    one("a.com reqHeaders://a=1 reqHeaders://+a=2 mock://200 body://x");
}

#[test]
fn intercept_and_passthrough_parse_to_one_kind() {
    let action = |line: &str| one(line).actions.remove(0).action;
    for (line, want) in [
        ("api.example.com intercept://", Intercept::On),
        ("api.example.com INTERCEPT://", Intercept::On),
        ("10.0.0.5:8443 intercept://insecure", Intercept::Insecure),
        ("a.com Intercept://Insecure", Intercept::Insecure),
        ("*.bank.example passthrough://", Intercept::Passthrough),
        ("a.com PassThrough://", Intercept::Passthrough),
        ("/^a\\.com:443$/ intercept://", Intercept::On),
        ("a.com method:CONNECT intercept://", Intercept::On),
    ] {
        match action(line) {
            ParsedAction::Intercept(i) => assert_eq!(i, want, "{line}"),
            other => panic!("{line}: {other:?}"),
        }
    }
    let s = one("a.com intercept:// delay://1s");
    assert_eq!(s.actions[0].action.kind(), ActionKind::Intercept);
    assert_eq!(s.actions[1].action.kind(), ActionKind::Delay);
    assert!(ACTION_NAMES.contains(&"intercept") && ACTION_NAMES.contains(&"passthrough"));
}

#[test]
fn intercept_errors() {
    for (line, col, needle) in [
        (
            "a.com intercept://foo",
            19,
            "intercept:// takes no value or `insecure`",
        ),
        ("a.com passthrough://x", 21, "passthrough:// takes no value"),
        (
            "a.com intercept:// passthrough://",
            20,
            "already decides interception at column 7",
        ),
        (
            "a.com passthrough:// intercept://insecure",
            22,
            "already decides interception",
        ),
        (
            "a.com intercept:// intercept://",
            20,
            "already decides interception",
        ),
        ("a.com/api intercept://", 11, "never matches a CONNECT"),
        ("a.com method:GET passthrough://", 18, "leaves out CONNECT"),
        ("a.com intercept:80", 7, "did you mean `intercept://"),
    ] {
        let e = error(line);
        assert_eq!(e.column, col, "{line}: {e}");
        assert!(e.message.contains(needle), "{line}: {e}");
    }
    // The list of known actions names the new ones.
    let e = error("a.com nope://1");
    assert!(e.message.contains("intercept, passthrough"), "{e}");
    assert!(!e.message.contains("host"), "{e}");
}

#[test]
fn comments_blank_lines_and_all_errors() {
    let text = "\u{feff}# header\n\n  a.com 1.2.3.4:80 # note\nb.com\n\tc.com status://7\n\"d e\" status://404\n";
    let errors = parse(text).expect_err("two bad lines");
    let at: Vec<(usize, usize)> = errors.iter().map(|e| (e.line, e.column)).collect();
    assert_eq!(at, vec![(4, 1), (5, 17), (6, 1)]);
    let (specs, _) = parse_partial(text);
    assert_eq!(specs.len(), 1);
    assert_eq!(specs[0].id, RuleId(3));
    assert_eq!(specs[0].text, "a.com 1.2.3.4:80 # note");
}

#[test]
fn body_file_paths_must_stay_inside_the_mock_folder() {
    let errors = parse("a.com mock://200 bodyFile://x.json\nb.com bodyFile:///etc/passwd\nc.com bodyFile://fx/../../y\n").unwrap_err();
    let at: Vec<(usize, usize)> = errors.iter().map(|e| (e.line, e.column)).collect();
    assert_eq!(at, vec![(2, 18), (3, 18)], "{errors:?}");
    assert!(
        errors[0].message.contains("relative"),
        "{}",
        errors[0].message
    );
    assert!(errors[1].message.contains("`..`"), "{}", errors[1].message);
}

/// xorshift64*: a fixed-seed generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

const VALID: &str = r#"# a realistic file
api.example.com 127.0.0.1:3000
*.cdn.example.com:8443 status://404 resHeaders://x-a=1
example.com/api/ method:POST,get client:10.0.0.0/8 delay://500ms resDelay://1s
/^http://shop\.test/item/(\d+)(?P<rest>.*)$/i url:///items?id=$1${rest} redirect301://http://x/$0
* reqHeaders://+x-b="a b # c" reqHeaders://-cookie cors://* throttle://64kbps reqThrottle://1MiB/s
mock.test mock://201 body://"{\"id\": 1}\n\u00e9" block://close
sub.test bodySub:///foo\/bar/baz$$/i status://500 block://503 upstream://[::1]:9
tls.test:8443 intercept://insecure
*.bank.test passthrough://
"#;

fn run_everything(text: &str) {
    let (specs, _errors) = parse_partial(text);
    // `compile` has no folder for files: a bodyFile is an error, never a
    // read of an arbitrary path.
    if let Ok(set) = super::super::RuleSet::compile(specs) {
        let client = "10.1.2.3".parse().expect("ip");
        for url in [
            "http://api.example.com/",
            "http://Shop.test/item/42x",
            "http://a.b.cdn.example.com:8443/",
        ] {
            if let Ok(plan) = set.plan_url("POST", url, client) {
                let _ = plan.describe();
            }
        }
        if let Ok(plan) = set.plan_url("CONNECT", "mock.test:443", client) {
            let _ = plan.describe();
        }
    }
}

#[test]
fn fuzz_never_panics() {
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    // Random text over an alphabet heavy in syntax characters.
    let alphabet: Vec<char> = "ab.*:/\\\"#$ {}[]()=+-,?0123456789 \t\nimstu é\u{feff}\u{0}"
        .chars()
        .collect();
    for _ in 0..3000 {
        let len = rng.below(120);
        let text: String = (0..len)
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        run_everything(&text);
    }
    // Random bytes, as a file read lossily would give.
    for _ in 0..1000 {
        let len = rng.below(200);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        run_everything(&String::from_utf8_lossy(&bytes));
    }
    // Mutations of a valid file: deletions, insertions, swaps.
    assert!(parse(VALID).is_ok(), "{:?}", parse(VALID).err());
    let base: Vec<char> = VALID.chars().collect();
    for _ in 0..3000 {
        let mut text = base.clone();
        for _ in 0..1 + rng.below(6) {
            let at = rng.below(text.len() + 1);
            match rng.below(3) {
                0 if at < text.len() => {
                    text.remove(at);
                }
                1 => text.insert(at, alphabet[rng.below(alphabet.len())]),
                _ if at < text.len() => text[at] = alphabet[rng.below(alphabet.len())],
                _ => {}
            }
        }
        run_everything(&text.into_iter().collect::<String>());
    }
}

#[test]
fn fuzz_regex_rules_stay_within_the_budget() {
    let mut rng = Rng(0x5EED_4E6E_0000_0002);
    // Fragments that make automata large: Unicode classes, counted
    // repetitions, nesting.
    let parts = [
        "\\w",
        "\\d",
        "(?-u:\\w)",
        ".",
        "[a-z]",
        "(a|b)",
        "{50}",
        "{300}",
        "*",
        "+",
        "?",
        "(",
        ")",
        "{2,}",
        "\\p{L}",
        "x",
        "(?i)",
        "|",
    ];
    let started = std::time::Instant::now();
    for _ in 0..200 {
        let lines = 1 + rng.below(6);
        let text: String = (0..lines)
            .map(|_| {
                let regex: String = (0..1 + rng.below(8))
                    .map(|_| parts[rng.below(parts.len())])
                    .collect();
                if rng.below(2) == 0 {
                    format!("/{regex}/ status://200\n")
                } else {
                    format!("a.test bodySub:///{regex}/y/ status://200\n")
                }
            })
            .collect();
        run_everything(&text);
        if let Err(errors) = super::super::parse(&text) {
            for e in errors {
                assert!(
                    e.line >= 1 && e.line <= lines && e.column >= 1,
                    "{e:?} in {text}"
                );
            }
        }
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

//! `sluice rules check FILE`: a good file says how many rules it holds
//! and exits 0; a bad one prints every error as `FILE:LINE:COL: message`
//! and exits 1; so does a file that cannot be read.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use crate::support::proxy::{run_cli_blocking, CliRun};

/// Runs `sluice rules SUBCOMMAND FILE ARGS...`.
fn rules_cli(subcommand: &str, file: &Path, args: &[&str]) -> CliRun {
    let mut argv: Vec<OsString> = vec!["rules".into(), subcommand.into(), file.into()];
    argv.extend(args.iter().map(OsString::from));
    run_cli_blocking(&argv, None, Duration::from_secs(10))
}

fn check(file: &Path) -> CliRun {
    rules_cli("check", file, &[])
}

#[test]
fn a_good_file_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("fixtures")).expect("mkdir");
    std::fs::write(dir.path().join("fixtures/user.json"), r#"{"id": 1}"#).expect("write");
    let file = dir.path().join("rules.txt");
    std::fs::write(
        &file,
        r#"# rules for the lab
api.example.com                127.0.0.1:3000
*.cdn.example.com              status://404
example.com/api/ method:POST   delay://500ms resHeaders://x-debug=1
/^http://shop\.test/item/(\d+)/  url:///items?id=$1
api.test/v1/user               mock://200 bodyFile://fixtures/user.json
*  client:10.0.0.0/8           reqHeaders://x-office=1 throttle://64kbps
ads.test                       block://403   # no ads
"#,
    )
    .expect("write");
    let c = check(&file);
    assert_eq!(c.code, Some(0), "stdout: {} stderr: {}", c.stdout, c.stderr);
    assert_eq!(c.stdout.trim(), format!("{}: 7 rules OK", file.display()));
}

#[test]
fn a_bad_file_lists_every_error_with_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.rules");
    std::fs::write(
        &file,
        "a.com status://404\nb.com status://99\n\nc.com throttle://64k nope://x\nd.com bodyFile://missing.json\n",
    )
    .expect("write");
    let c = check(&file);
    assert_eq!(c.code, Some(1), "stdout: {} stderr: {}", c.stdout, c.stderr);
    assert!(c.stdout.is_empty(), "{}", c.stdout);
    let shown = file.display().to_string();
    let lines: Vec<&str> = c.stderr.lines().collect();
    let at: Vec<&str> = lines
        .iter()
        .map(|l| {
            let rest = l
                .strip_prefix(&format!("{shown}:"))
                .unwrap_or_else(|| panic!("{l}"));
            let mut parts = rest.splitn(3, ':');
            let line = parts.next().unwrap_or("");
            let col = parts.next().unwrap_or("");
            &rest[..line.len() + 1 + col.len()]
        })
        .collect();
    assert_eq!(at, vec!["2:16", "4:18", "4:22", "5:7"], "{}", c.stderr);
    assert!(lines[0].ends_with("(expected 200-599)"), "{}", lines[0]);
    assert!(
        lines[2].contains("unknown action `nope://`"),
        "{}",
        lines[2]
    );
    assert!(lines[3].contains("missing.json"), "{}", lines[3]);
}

#[test]
fn an_unreadable_file_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = check(&dir.path().join("absent.rules"));
    assert_eq!(c.code, Some(1));
    assert!(c.stderr.contains("cannot read rule file"), "{}", c.stderr);
}

fn rules_test(file: &Path, args: &[&str]) -> CliRun {
    rules_cli("test", file, args)
}

#[test]
fn rules_test_explains_a_request_offline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rules.txt");
    std::fs::write(
        &file,
        "api.test 127.0.0.1:3000 reqHeaders://x-a=1\n\
         *.test resHeaders://x-b=2 reqHeaders://x-a=9\n\
         ads.test method:CONNECT block://403\n",
    )
    .expect("write");
    let c = rules_test(&file, &["http://api.test/x"]);
    assert_eq!(c.code, Some(0), "{} {}", c.stdout, c.stderr);
    let lines: Vec<&str> = c.stdout.lines().map(str::trim).collect();
    assert_eq!(lines[0], "GET http://api.test/x: 2 rules match");
    assert!(
        lines.contains(&"L1  upstream     upstream://127.0.0.1:3000"),
        "{lines:?}"
    );
    // The first rule wins the x-a header; the second still sets x-b.
    assert!(
        lines.contains(&"L1  reqHeaders   reqHeaders://x-a=1"),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"L2  resHeaders   resHeaders://x-b=2"),
        "{lines:?}"
    );
    assert!(!c.stdout.contains("x-a=9"), "{}", c.stdout);

    let c = rules_test(&file, &["--method", "CONNECT", "ads.test:443"]);
    assert_eq!(c.code, Some(0), "{} {}", c.stdout, c.stderr);
    assert!(
        c.stdout.contains("L3  block        block://403"),
        "{}",
        c.stdout
    );

    let c = rules_test(&file, &["http://other.org/"]);
    assert_eq!(c.code, Some(1));
    assert!(c.stdout.contains("no rule matches"), "{}", c.stdout);

    let c = rules_test(&file, &["not a url"]);
    assert_eq!(c.code, Some(2));
    assert!(c.stderr.contains("url:"), "{}", c.stderr);
}

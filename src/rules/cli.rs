//! The offline rule commands: `sluice rules check FILE` and `sluice rules
//! test FILE URL`.
//!
//! Invariant: exit codes as documented on each command; errors go to
//! stderr, results to stdout.

use std::path::Path;

use super::load::load_file;

/// `sluice rules check FILE`: prints `FILE: N rules OK` (stdout, exit 0),
/// or each error as `FILE:LINE:COL: message` (stderr, exit 1).
pub fn cli_check(path: &Path) -> i32 {
    match load_file(path) {
        Ok(set) => {
            let n = set.len();
            println!(
                "{}: {n} rule{} OK",
                path.display(),
                if n == 1 { "" } else { "s" }
            );
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// `sluice rules test FILE URL`: which rules of `path` a request would
/// meet, and what each would do, in the same words records use. Exit 0
/// when a rule matched, 1 when none did, 2 when the file or the URL is
/// bad.
pub fn cli_test(path: &Path, method: &str, url: &str, client: std::net::IpAddr) -> i32 {
    let set = match load_file(path) {
        Ok(set) => set,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let plan = match set.plan_url(method, url, client) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sluice: url: {e}");
            return 2;
        }
    };
    let method = method.to_ascii_uppercase();
    if plan.is_empty() {
        println!("{method} {url}: no rule matches");
        return 1;
    }
    let n = plan.matched.len();
    println!(
        "{method} {url}: {n} rule{} match",
        if n == 1 { "" } else { "s" }
    );
    let applied = plan.describe();
    for id in &plan.matched {
        let mut any = false;
        for a in applied.iter().filter(|a| a.rule == *id) {
            println!("  {id}  {:<12} {}", a.kind, a.action);
            any = true;
        }
        if !any {
            println!(
                "  {id}  (matched; earlier rules decided its actions, or they do not apply here)"
            );
        }
    }
    0
}

//! What every area's tests share, in three nouns: [`origin`] (the servers
//! sluice forwards to), [`proxy`] (sluice itself, in-process or as the
//! real binary) and [`client`] (the one HTTP/1.1 client that drives it).
//! Beside them: the admin API's helpers ([`admin`]), TLS material
//! ([`tls`]), network namespaces and the kernel's socket tables
//! ([`netns`]) and the modes a test can run in ([`mode`]).
//!
//! Every test of every area runs in this one process, several at once:
//! nothing here may depend on a fixed port, a fixed name or the process's
//! own sockets, memory or environment.

pub mod admin;
pub mod client;
pub mod https;
pub mod mode;
pub mod netns;
pub mod origin;
pub mod pki;
pub mod proxy;
pub mod tls;

use std::time::Duration;

use sha2::{Digest, Sha256};

/// Polls `cond` every 20 ms until it holds or `within` passes.
pub async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs a test body under a hard deadline, so a regression that leaves a
/// socket hanging fails the test instead of stalling the suite.
pub async fn bounded(limit: Duration, body: impl std::future::Future<Output = ()>) {
    if tokio::time::timeout(limit, body).await.is_err() {
        panic!("test still running after {limit:?}");
    }
}

/// Runs `one(i)` for `i` in `0..total`, `parallel` at a time, each under a
/// 5 s deadline; the first failure stops every worker (a broken path
/// fails fast instead of timing out thousands of times). Returns the
/// failures.
pub async fn churn<F, Fut>(total: usize, parallel: usize, one: F) -> Vec<String>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    use std::sync::atomic::{AtomicBool, Ordering};
    let failed = std::sync::Arc::new(AtomicBool::new(false));
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..parallel {
        let (failed, one) = (failed.clone(), one.clone());
        workers.spawn(async move {
            let mut errors = Vec::new();
            let mut i = w;
            while i < total && !failed.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_secs(5), one(i)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => errors.push(e),
                    Err(_) => errors.push(format!("connection {i}: timed out")),
                }
                if !errors.is_empty() {
                    failed.store(true, Ordering::Relaxed);
                }
                i += parallel;
            }
            errors
        });
    }
    let mut errors = Vec::new();
    while let Some(r) = workers.join_next().await {
        errors.extend(r.unwrap_or_else(|e| vec![format!("worker panicked: {e}")]));
    }
    errors
}

/// Deterministic payload: byte `offset + i` of the stream seeded by `seed`
/// into `buf[i]`.
pub fn pattern(seed: u64, offset: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        let x = (offset + i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed;
        *b = (x >> 29) as u8;
    }
}

/// SHA-256 of the first `len` bytes of [`pattern`]`(seed, ..)`.
pub fn pattern_sha256(seed: u64, len: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    let mut off = 0u64;
    while off < len {
        let n = (len - off).min(buf.len() as u64) as usize;
        pattern(seed, off, &mut buf[..n]);
        h.update(&buf[..n]);
        off += n as u64;
    }
    h.finalize().into()
}

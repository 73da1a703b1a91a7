//! This process's own resource figures, read from /proc/self.

use std::time::Duration;

/// One reading of the process's resources.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ProcessStats {
    pub rss_bytes: u64,
    /// User + system CPU time since start.
    pub cpu_seconds: f64,
    pub open_fds: u64,
    pub threads: u64,
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

/// Reads /proc/self/stat, /proc/self/statm and /proc/self/fd. Missing
/// files yield zeros rather than errors: metrics must never fail a scrape.
pub fn read() -> ProcessStats {
    let mut s = ProcessStats::default();
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the parenthesised command name, which may hold spaces.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            // rest starts at field 3 (state): utime=14, stime=15, threads=20.
            let num = |i: usize| {
                f.get(i - 3)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            s.cpu_seconds = (num(14) + num(15)) as f64 / clock_ticks();
            s.threads = num(20);
        }
    }
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
        if let Some(rss_pages) = statm
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<u64>().ok())
        {
            s.rss_bytes = rss_pages * page_size();
        }
    }
    s.open_fds = open_fds();
    s
}

/// Open descriptors. Linux 6.2+ reports the count as the size of
/// /proc/self/fd, one stat instead of listing ten thousand entries every
/// second; older kernels report 0 there, and get the listing.
fn open_fds() -> u64 {
    match std::fs::metadata("/proc/self/fd") {
        Ok(m) if m.len() > 0 => m.len(),
        _ => std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count() as u64)
            .unwrap_or(0),
    }
}

/// CPU percent between two readings `elapsed` apart (100 = one core).
pub fn cpu_percent(before: &ProcessStats, after: &ProcessStats, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    ((after.cpu_seconds - before.cpu_seconds) / secs * 100.0).max(0.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_real_figures() {
        let s = super::read();
        assert!(s.rss_bytes > 1024 * 1024, "{s:?}");
        assert!(s.threads >= 1 && s.open_fds >= 3, "{s:?}");
    }
}

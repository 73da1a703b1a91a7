//! This process's own resource figures, read from /proc/self.

use std::time::Duration;

/// One reading of the process's resources.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ProcessStats {
    /// Resident set size, all kinds (statm): what `ps` and `top` show.
    pub rss_bytes: u64,
    /// The split of the RSS from /proc/self/status. A total alone cannot
    /// tell the process's own memory from page cache it maps.
    pub rss: RssSplit,
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

/// The resident set by kind, in bytes (the kernel's `RssAnon`, `RssFile`
/// and `RssShmem`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RssSplit {
    /// Anonymous pages: heap, stacks, buffers: the process's own memory,
    /// which only freeing (or exiting) gives back.
    pub anon: u64,
    /// Pages of mapped files (the binary, libraries, mmapped files): page
    /// cache the kernel can drop and read again.
    pub file: u64,
    /// Shared memory (shmem, tmpfs, memfd mappings).
    pub shmem: u64,
}

impl RssSplit {
    /// File-backed pages and shared memory together: the part of the RSS
    /// that is not the process's private heap.
    pub fn file_and_shmem(&self) -> u64 {
        self.file.saturating_add(self.shmem)
    }
}

/// The RSS split from the text of /proc/PID/status. A missing or
/// malformed line reads as 0 (kernels before 4.5 have none of the three),
/// never as an error: a scrape must not fail on it.
pub fn parse_status_rss(status: &str) -> RssSplit {
    let mut split = RssSplit::default();
    for line in status.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "RssAnon" => &mut split.anon,
            "RssFile" => &mut split.file,
            "RssShmem" => &mut split.shmem,
            _ => continue,
        };
        // "   1234 kB": the kernel always reports these in kB.
        *slot = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kib| kib.saturating_mul(1024));
    }
    split
}

/// Reads /proc/self/stat, /proc/self/statm, /proc/self/status and
/// /proc/self/fd. Missing files yield zeros rather than errors: metrics
/// must never fail a scrape.
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
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        s.rss = parse_status_rss(&status);
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
    use super::*;

    #[test]
    fn reads_real_figures() {
        let s = read();
        assert!(s.rss_bytes > 1024 * 1024, "{s:?}");
        assert!(s.threads >= 1 && s.open_fds >= 3, "{s:?}");
    }

    #[test]
    fn rss_split_of_the_real_process_adds_up_to_statm() {
        // Touch some heap so that anon is well above noise.
        let heap = vec![1u8; 8 * 1024 * 1024];
        std::hint::black_box(&heap);
        // Both files come from the same kernel counters, read a moment
        // apart; other test threads may allocate or free in between, so
        // the closest of a few tries is the one judged.
        let mut best: Option<(f64, RssSplit, u64)> = None;
        for _ in 0..5 {
            let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
            let split = parse_status_rss(&status);
            let statm = read().rss_bytes;
            assert!(split.anon >= 8 * 1024 * 1024, "{split:?}\n{status}");
            assert!(
                split.file > 0,
                "the binary itself is file-backed: {split:?}"
            );
            let sum = split.anon + split.file + split.shmem;
            let diff = sum.abs_diff(statm) as f64 / statm as f64;
            if best.is_none_or(|(d, _, _)| diff < d) {
                best = Some((diff, split, statm));
            }
        }
        let (diff, split, statm) = best.expect("five tries");
        assert!(
            diff < 0.05,
            "anon + file + shmem of {split:?} vs statm RSS {statm}: {:.1}% apart",
            diff * 100.0
        );
    }

    #[test]
    fn rss_split_parses_kib_lines_and_tolerates_missing_or_bad_ones() {
        let status = "Name:\tsluice\nVmRSS:\t   10240 kB\nRssAnon:\t    6144 kB\n\
                      RssFile:\t    4000 kB\nRssShmem:\t      96 kB\nThreads:\t4\n";
        assert_eq!(
            parse_status_rss(status),
            RssSplit {
                anon: 6144 * 1024,
                file: 4000 * 1024,
                shmem: 96 * 1024,
            }
        );
        assert_eq!(parse_status_rss(status).file_and_shmem(), 4096 * 1024);
        // An old kernel (no split lines), an empty file, garbage values.
        assert_eq!(
            parse_status_rss("Name:\tx\nVmRSS:\t100 kB\n"),
            RssSplit::default()
        );
        assert_eq!(parse_status_rss(""), RssSplit::default());
        let bad =
            parse_status_rss("RssAnon:\nRssFile:\tlots kB\nRssShmem:\t-5 kB\nRssAnon\t7 kB\n");
        assert_eq!(bad, RssSplit::default());
        let huge = parse_status_rss("RssAnon:\t18446744073709551615 kB\n");
        assert_eq!(huge.anon, u64::MAX, "saturates, never overflows");
    }
}

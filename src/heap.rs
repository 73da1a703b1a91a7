//! Giving freed memory back to the system when a worker goes idle.
//!
//! mimalloc returns freed pages to the OS only when the thread that owns
//! them next allocates or frees, once they have been free for its purge
//! delay (1 s). A record's buffers are allocated on a proxy worker and
//! freed on the record writer, so after a burst of 1 MiB bodies the worker
//! that owns them may go idle holding them: 100 MiB of RSS stayed resident
//! for as long as the proxy was idle (`bench/run.sh --only R`, section B's
//! workload). [`collect_if_due`] runs when a worker parks and, at most once
//! a second per thread, asks mimalloc to collect the blocks other threads
//! freed and to return the pages whose delay has passed.
//!
//! Invariants: it never frees memory in use (mimalloc's own collection);
//! it costs one clock read per park between collections.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// How often a parking worker collects.
const EVERY: Duration = Duration::from_secs(1);

thread_local! {
    static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Collects this thread's heap if it has not for [`EVERY`].
pub fn collect_if_due() {
    let now = Instant::now();
    let due = LAST.with(|last| match last.get() {
        Some(t) if now.duration_since(t) < EVERY => false,
        _ => {
            last.set(Some(now));
            true
        }
    });
    if due {
        // SAFETY: mi_collect takes no pointers; `false` asks only for the
        // cheap collection (expired purges, this thread's freed blocks).
        unsafe { libmimalloc_sys::mi_collect(false) };
    }
}

//! Noticing that a client left while its request waits for the upstream.
//!
//! hyper serves client connections with `half_close(true)` (a client that
//! half-closes still gets its whole response), so while a request waits
//! for the upstream's response head nobody reads the client socket, and a
//! client that closed sits in CLOSE-WAIT until the response timeout. This
//! watcher turns a FIN or a reset received during that wait into an early
//! end, as nginx and Envoy do: the upstream request is cancelled and both
//! legs close.
//!
//! Invariants: a request answered within [`FIRST_LOOK`] costs one timer and
//! no system call; a longer wait costs one peek, then one `dup` and epoll
//! registration, and wakes only on a socket event, never on a schedule.
//! The watcher reads nothing (peeks only), so a pipelined request stays
//! for hyper. The duplicated descriptor is owned here and closed on drop.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// How long a request waits before its client is first looked at: most
/// answers come sooner, and they pay nothing.
const FIRST_LOOK: Duration = Duration::from_millis(50);

/// What a non-blocking peek says about the client socket.
enum Peek {
    /// FIN with nothing unread, or an error (reset): the client is gone.
    Gone,
    /// Unread bytes (a pipelined request) or nothing yet.
    Here,
}

fn peek(fd: RawFd) -> Peek {
    let mut byte = [0u8; 1];
    // SAFETY: `fd` is the served client socket, open for the whole call
    // (see the module invariants); the buffer is one valid byte.
    let n = unsafe {
        libc::recv(
            fd,
            byte.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n == 0 {
        return Peek::Gone;
    }
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::Interrupted
        {
            return Peek::Gone;
        }
    }
    Peek::Here
}

/// Completes when the client behind `fd` has closed or reset its
/// connection; pending for ever while it stays. `fd` must stay open for as
/// long as the returned future lives.
pub async fn client_left(fd: RawFd) {
    tokio::time::sleep(FIRST_LOOK).await;
    if let Peek::Gone = peek(fd) {
        return;
    }
    // SAFETY: `fd` is open (caller's contract); the borrow ends here.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let watched = match borrowed.try_clone_to_owned().and_then(|dup: OwnedFd| {
        // SAFETY: `dup` is an open descriptor owned by the AsyncFd, which
        // closes it only after deregistering.
        unsafe { AsyncFd::register_with_interest(dup, Interest::READABLE) }
            .map_err(std::io::Error::from)
    }) {
        Ok(w) => w,
        // Out of descriptors or epoll refused: the response timeout still
        // bounds the wait.
        Err(_) => return std::future::pending().await,
    };
    loop {
        let Ok(mut guard) = watched.readable().await else {
            return std::future::pending().await;
        };
        // EPOLLRDHUP/EPOLLHUP: the peer's FIN or a reset arrived, even
        // behind unread pipelined bytes.
        if guard.ready().is_read_closed() {
            return;
        }
        if let Peek::Gone = peek(watched.get_ref().as_raw_fd()) {
            return;
        }
        // Readable only because of unread bytes: wait for the next event.
        guard.clear_ready();
    }
}

//! Zero-copy forwarding for bulk flows: `splice(2)` from one socket into a
//! pipe and from the pipe into the other socket, so payload pages move
//! inside the kernel instead of being copied through user space twice.
//!
//! Invariants: the pipe never holds more than its capacity (it is drained
//! completely before the next read, so backpressure is preserved); a pipe
//! exists only for a direction that has carried a bulk flow, and is closed
//! with the tunnel.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Pipe capacity asked for; the kernel may round it or refuse (then the
/// default 64 KiB stays).
const PIPE_SIZE: libc::c_int = 1 << 20;

pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

fn cvt(rc: libc::ssize_t) -> io::Result<usize> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

impl Pipe {
    pub fn new() -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 writes two descriptors into the array we own.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned here only.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fcntl on a descriptor we own.
        let size = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
        let capacity = if size > 0 { size as usize } else { 64 * 1024 };
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }

    /// Moves up to the pipe's capacity from socket `from` into the pipe.
    /// `Ok(0)` is EOF; `WouldBlock` means the socket has nothing now.
    pub fn fill_from(&self, from: RawFd) -> io::Result<usize> {
        // SAFETY: splice between descriptors that stay open for the call.
        cvt(unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                self.write.as_raw_fd(),
                std::ptr::null_mut(),
                self.capacity,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        })
    }

    /// Moves up to `len` bytes from the pipe into socket `to`.
    pub fn drain_into(&self, to: RawFd, len: usize) -> io::Result<usize> {
        // SAFETY: as above.
        cvt(unsafe {
            libc::splice(
                self.read.as_raw_fd(),
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        })
    }
}

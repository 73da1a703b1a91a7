//! Listeners and admission: bind with a deep backlog, accept until told to
//! stop, refuse at once past the connection limit.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Binds a listener with SO_REUSEADDR and a backlog sized for bursts.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket
        .bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    socket.listen(4096)
}

/// Caps concurrent client connections across all listeners.
#[derive(Debug, Clone)]
pub struct Limiter {
    permits: Arc<Semaphore>,
}

/// Held for as long as an admitted connection lives.
#[derive(Debug)]
pub struct Admission {
    _permit: OwnedSemaphorePermit,
}

impl Limiter {
    pub fn new(max: usize) -> Limiter {
        Limiter {
            permits: Arc::new(Semaphore::new(max)),
        }
    }

    /// Admits a connection now or not at all.
    pub fn try_admit(&self) -> Option<Admission> {
        self.permits
            .clone()
            .try_acquire_owned()
            .ok()
            .map(|p| Admission { _permit: p })
    }
}

/// Accepts until `stop` is cancelled. Admitted connections go to `admit`,
/// connections past the limit go to `refuse`. Accept errors never spin:
/// running out of descriptors backs off briefly.
pub async fn accept_loop<A, R>(
    listener: TcpListener,
    limiter: Limiter,
    stop: CancellationToken,
    mut admit: A,
    mut refuse: R,
) where
    A: FnMut(TcpStream, SocketAddr, Admission),
    R: FnMut(TcpStream, SocketAddr),
{
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => match limiter.try_admit() {
                Some(adm) => admit(stream, peer, adm),
                None => refuse(stream, peer),
            },
            Err(e) => {
                let fd_exhausted =
                    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE));
                tracing::warn!(error = %e, "accept failed");
                if fd_exhausted {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

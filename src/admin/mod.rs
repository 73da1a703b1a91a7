//! The admin server: inventory, kernel cross-check, metrics, history,
//! users, records, rules and the web UI over HTTP, on its own listener.
//!
//! Invariants: admin connections are registered (kind `admin`), tuned and
//! bounded like proxy connections (hyper's header timer closes idle and
//! slow ones); off loopback every request must carry the bearer token,
//! compared in constant time.

mod api;
pub mod client;
mod har;
mod records;
mod rules;
mod ui;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};

use crate::config::Config;
use crate::metrics::history::History;
use crate::metrics::Metrics;
use crate::net::{self, accept_loop, Admission, Limiter};
use crate::registry::{CloseReason, Kind, Registry, Side};
use crate::users::Users;
use crate::Shutdown;

/// What the admin handlers read.
pub struct AdminState {
    pub config: Arc<Config>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub history: Arc<History>,
    pub users: Arc<Users>,
    pub recorder: Arc<crate::record::Recorder>,
    pub rules: Arc<crate::rules::live::LiveRules>,
    pub started: Instant,
    pub shutdown: Shutdown,
    /// The proxy listener (target of the test-only leak hook).
    pub proxy_addr: SocketAddr,
}

/// Admin connections allowed at once; they are few and short.
const ADMIN_MAX_CONNECTIONS: usize = 256;

pub async fn serve_admin(listener: TcpListener, state: Arc<AdminState>) {
    let router = api::router(state.clone());
    let stop = state.shutdown.stop_accepting.clone();
    let reg = state.registry.clone();
    let mut server = http1::Builder::new();
    server
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .keep_alive(true);
    accept_loop(
        listener,
        Limiter::new(ADMIN_MAX_CONNECTIONS),
        stop,
        |stream, peer, admission| {
            tokio::spawn(serve_conn(
                stream,
                peer,
                admission,
                state.clone(),
                router.clone(),
                server.clone(),
            ));
        },
        move |_stream, _peer| reg.count_close(&CloseReason::RefusedAtLimit),
    )
    .await;
}

async fn serve_conn(
    stream: TcpStream,
    peer: SocketAddr,
    _admission: Admission,
    state: Arc<AdminState>,
    router: axum::Router,
    server: http1::Builder,
) {
    let guard = state.registry.register(Kind::Admin, Some(peer));
    let stream = stream;
    guard.entry().attach_socket(&stream);
    if let Err(e) = net::tune(&stream, &state.config.keepalive) {
        guard.set_reason(CloseReason::from_io(Side::Client, &e));
        return;
    }
    let conn = server.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
    tokio::pin!(conn);
    let entry = guard.entry().clone();
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                if e.is_timeout() {
                    guard.set_reason(CloseReason::HeaderTimeout);
                }
            }
        }
        _ = entry.kill.cancelled() => {}
        _ = state.shutdown.stop_accepting.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.as_mut()).await;
        }
    }
}

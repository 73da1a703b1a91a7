//! Port relay (`--relay LISTEN=UPSTREAM`): every accepted connection is
//! relayed to one fixed upstream with the same lifecycle as a tunnel.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

use super::{relay, RelayLimits};
use crate::config::{Config, RelaySpec};
use crate::net::{self, accept_loop, connect_upstream, split_host_port, Admission, Limiter};
use crate::registry::{CloseReason, ConnState, Kind, Registry, Side};
use crate::users::Users;
use crate::Shutdown;

/// Accepts on `listener` until shutdown, relaying each connection.
pub async fn serve_relay(
    listener: TcpListener,
    spec: RelaySpec,
    config: Arc<Config>,
    registry: Arc<Registry>,
    users: Arc<Users>,
    limiter: Limiter,
    shutdown: Shutdown,
) {
    let stop = shutdown.stop_accepting.clone();
    let reg = registry.clone();
    accept_loop(
        listener,
        limiter,
        stop,
        |stream, peer, admission| {
            let (config, registry, spec) = (config.clone(), registry.clone(), spec.clone());
            tokio::spawn(relay_one(
                stream,
                peer,
                admission,
                spec,
                config,
                registry,
                users.clone(),
            ));
        },
        move |stream, _peer| {
            reg.count_close(&CloseReason::RefusedAtLimit);
            net::set_abortive_close(&stream);
        },
    )
    .await;
}

async fn relay_one(
    client: TcpStream,
    peer: SocketAddr,
    _admission: Admission,
    spec: RelaySpec,
    config: Arc<Config>,
    registry: Arc<Registry>,
    users: Arc<Users>,
) {
    let guard = registry.register(Kind::Relay, Some(peer));
    // Rebound after the guard so it is dropped (closed) before the guard.
    let client = client;
    let entry = guard.entry().clone();
    entry.attach_socket(&client);
    let user = peer.ip().to_string();
    entry.set_user(user.clone());
    users.on_open(&user);
    if let Err(e) = net::tune(&client, &config.keepalive) {
        guard.set_reason(CloseReason::from_io(Side::Client, &e));
        return;
    }
    entry.set_upstream(spec.upstream.clone());
    entry.set_state(ConnState::WaitingUpstream);
    let Some((host, port)) = split_host_port(&spec.upstream) else {
        guard.set_reason(CloseReason::Error(Side::Sluice, "bad upstream".into()));
        return;
    };
    let connected = tokio::select! {
        r = connect_upstream(host, port, config.connect_timeout, &config.keepalive) => r,
        _ = entry.kill.cancelled() => return,
    };
    let upstream = match connected {
        Ok((s, _)) => {
            entry.attach_socket(&s);
            s
        }
        Err(e) => {
            tracing::warn!(relay = %spec.listen, error = %e, "relay upstream connect failed");
            guard.set_reason(match e.kind {
                net::ConnectErrorKind::Timeout => CloseReason::ConnectTimeout,
                _ => CloseReason::Error(Side::Upstream, e.to_string()),
            });
            // The client learns at once that there is nothing behind the port.
            net::set_abortive_close(&client);
            return;
        }
    };
    let limits = RelayLimits::new(&config);
    relay(&client, &upstream, limits, &entry).await;
    drop((client, upstream));
    drop(guard);
}

//! Port relay (`--relay LISTEN=UPSTREAM`): every accepted connection is
//! relayed to one fixed upstream with the same lifecycle as a tunnel.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

use super::{relay, RelayLimits};
use crate::config::{ConnectorConfig, RelayLimitsConfig, RelaySpec};
use crate::net::{
    self, accept_loop, connect_upstream_except, is_own_listener, split_host_port, Admission,
    Limiter,
};
use crate::registry::{CloseReason, ConnState, Kind, Registry, Side};
use crate::users::Users;
use crate::Shutdown;

/// What every relay connection of an instance shares.
pub struct RelayShared {
    /// How the upstream is reached (and the client socket tuned).
    pub connector: ConnectorConfig,
    /// Deadlines and buffer of the copy.
    pub limits: RelayLimitsConfig,
    pub registry: Arc<Registry>,
    pub users: Arc<Users>,
    /// sluice's own listeners: an upstream resolving to one is refused.
    pub own: Arc<[SocketAddr]>,
}

/// Accepts on `listener` until shutdown, relaying each connection.
pub async fn serve_relay(
    listener: TcpListener,
    spec: RelaySpec,
    shared: Arc<RelayShared>,
    limiter: Limiter,
    shutdown: Shutdown,
) {
    let stop = shutdown.stop_accepting.clone();
    let reg = shared.registry.clone();
    accept_loop(
        listener,
        limiter,
        stop,
        |stream, peer, admission| {
            tokio::spawn(relay_one(
                stream,
                peer,
                admission,
                spec.clone(),
                shared.clone(),
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
    shared: Arc<RelayShared>,
) {
    let RelayShared {
        connector,
        limits,
        registry,
        users,
        own,
    } = &*shared;
    let guard = registry.register(Kind::Relay, Some(peer));
    // Rebound after the guard so it is dropped (closed) before the guard.
    let client = client;
    let entry = guard.entry().clone();
    entry.attach_socket(&client);
    let user = peer.ip().to_string();
    entry.set_user(user.clone());
    users.on_open(&user);
    if let Err(e) = net::tune(&client, &connector.keepalive) {
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
        // Checked at start too; names can change what they resolve to.
        r = connect_upstream_except(host, port, connector, own) => r,
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
    relay(&client, &upstream, RelayLimits::new(limits), &entry).await;
    drop((client, upstream));
    drop(guard);
}

/// Refuses, at start, a relay whose upstream resolves to one of sluice's
/// own listeners: a relay to itself would fill the shared connection limit
/// from one client, and a relay to the admin port would expose it on the
/// relay's address. A name that does not resolve now is left to the
/// per-connection check.
pub async fn refuse_relay_loops(
    relays: &[RelaySpec],
    own: &[SocketAddr],
    relay_addrs: &[SocketAddr],
    admin: Option<SocketAddr>,
    resolve_timeout: std::time::Duration,
) -> Result<(), String> {
    for (spec, listen) in relays.iter().zip(relay_addrs) {
        let Some((host, port)) = split_host_port(&spec.upstream) else {
            continue;
        };
        let host = host.trim_matches(|c| c == '[' || c == ']');
        let lookup = tokio::net::lookup_host((host, port));
        let Ok(Ok(addrs)) = tokio::time::timeout(resolve_timeout, lookup).await else {
            continue;
        };
        for a in addrs {
            if is_own_listener(a, own) {
                let what = if admin.is_some_and(|ad| is_own_listener(a, &[ad])) {
                    "the admin server"
                } else if relay_addrs.iter().any(|r| is_own_listener(a, &[*r])) {
                    "one of its own relays"
                } else {
                    "its own proxy listener"
                };
                return Err(format!(
                    "relay {listen}={}: the upstream is sluice itself ({a} is {what}); a relay must point elsewhere",
                    spec.upstream
                ));
            }
        }
    }
    Ok(())
}

//! sluice: a leak-proof traffic relay and debugging proxy.
//!
//! Module map:
//! - [`config`]: flags + TOML merged and validated;
//! - [`net`]: listeners, socket options, upstream connects, connection limit;
//! - [`relay`]: duplex copy with deadlines, port relays (CONNECT tunnels use it);
//! - [`transport`]: the client stream type, metering, next-layer detection;
//! - [`http`]: the forward proxy, CONNECT tunnels, the HTTP serving function;
//! - [`registry`]: connection guards, live counts, close reasons.
//!
//! [`Proxy::start`] binds every listener of one instance and returns a
//! handle; [`Proxy::shutdown`] drains it. [`run`] is the binary's body.

pub mod admin;
pub mod cli;
pub mod cli_ca;
pub mod cli_records;
pub mod config;
pub mod heap;
pub mod http;
pub mod metrics;
pub mod net;
pub mod record;
pub mod registry;
pub mod relay;
pub mod rules;
pub mod secret_file;
pub mod sockets;
pub mod tls;
pub mod transport;
pub mod users;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use config::AdminToken;
pub use config::Config;
use registry::{CloseReason, Registry};

/// Signals shared by the listeners and connections of one instance.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    /// Cancelled when shutdown begins: listeners stop accepting and HTTP
    /// connections finish their request in flight, then close.
    pub stop_accepting: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Bind(std::io::Error),
    #[error("{0}")]
    Auth(users::auth::AuthFileError),
    #[error("{0}")]
    Record(record::store::StoreError),
    #[error("{0}")]
    Rules(rules::LoadError),
    /// A `--relay` whose upstream is one of sluice's own listeners.
    #[error("{0}")]
    RelayLoop(String),
    #[error("{0}")]
    Token(admin::token::TokenError),
    /// The CA, the upstream roots or `--intercept`.
    #[error("{0}")]
    Tls(String),
}

/// A running sluice instance.
pub struct Proxy {
    /// Where the HTTP proxy listens (the real port when 0 was asked for).
    pub addr: SocketAddr,
    /// Where each `--relay` listens, in the order given.
    pub relay_addrs: Vec<SocketAddr>,
    /// Where the admin server listens, if it runs.
    pub admin_addr: Option<SocketAddr>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<metrics::Metrics>,
    pub users: Arc<users::Users>,
    pub history: Arc<metrics::history::History>,
    pub recorder: Arc<record::Recorder>,
    pub rules: Arc<rules::live::LiveRules>,
    shutdown: Shutdown,
    listeners: JoinSet<()>,
    sampler_stop: CancellationToken,
    admin_token: Option<String>,
    admin_token_generated: bool,
    admin_token_file: Option<std::path::PathBuf>,
    /// Held until the instance is gone: one data dir, one instance.
    _data_lock: Option<record::store::DataDirLock>,
}

/// The interception machinery: leaves from `ca`, upstream roots, the
/// fallback table; the warnings a user must see at start.
fn start_tls(
    config: &Config,
    ca: Arc<tls::Ca>,
    admin_addr: Option<SocketAddr>,
) -> Result<tls::Interception, StartError> {
    let t = &config.tls;
    let summary = ca.summary().clone();
    tracing::info!(
        ca = %ca.cert_path().map_or_else(|| "in memory".to_string(), |p| p.display().to_string()),
        sha256 = %summary.sha256,
        created = summary.created,
        intercept = %t.intercept,
        "CA ready (clients trust it to be intercepted)"
    );
    let leaves = tls::Leaves::new(ca, t.leaf_cache).map_err(|e| StartError::Tls(e.to_string()))?;
    let upstream = tls::upstream::UpstreamTls::new(&t.upstream_ca)
        .map_err(|e| StartError::Tls(e.to_string()))?;
    if upstream.roots == 0 {
        tracing::warn!(
            "no trusted roots for upstream certificates (no system trust store found, no \
             --upstream-ca): every intercepted upstream will fail verification"
        );
    }
    if t.insecure_upstream {
        tracing::warn!(
            "--insecure-upstream: upstream certificates of intercepted tunnels are NOT verified"
        );
    }
    if std::env::var_os("SSLKEYLOGFILE").is_some() {
        tracing::warn!(
            "SSLKEYLOGFILE is set: TLS session keys of intercepted tunnels are written to it"
        );
    }
    let ca_url = match admin_addr {
        Some(a) => format!("http://{a}/ca"),
        None => format!("http://{}/ (through the proxy)", tls::TRUST_HOST),
    };
    Ok(tls::Interception::new(
        leaves,
        upstream,
        tls::fallback::Fallback::new(t.fallback),
        t.handshake_timeout,
        t.insecure_upstream,
        ca_url,
    ))
}

impl Proxy {
    /// Binds every listener and starts serving. Must run inside a tokio runtime.
    pub async fn start(config: Config) -> Result<Proxy, StartError> {
        let config = Arc::new(config);
        let registry = Registry::new();
        let users = Arc::new(users::Users::default());
        let metrics = metrics::Metrics::new(registry.clone(), users.clone());
        let history = metrics::history::History::new();
        let live_rules = Arc::new(
            rules::live::LiveRules::from_config(&config.rules).map_err(StartError::Rules)?,
        );
        // The data dir is locked before anything in it is touched (the
        // store, the token file): a second instance stops here.
        let generate =
            config.admin.admin_addr.is_some() && config.admin.admin_token == AdminToken::Generate;
        // The CA lives in the data dir too (unless a team CA is named).
        let own_ca = config.tls.ca_cert.is_none();
        let data_lock = match &config.record.data_dir {
            config::DataDir::Path(dir) if config.record.enabled || generate || own_ca => {
                Some(record::store::DataDirLock::acquire(dir).map_err(StartError::Record)?)
            }
            _ => None,
        };
        let (admin_token, admin_token_file) =
            match (&config.admin.admin_addr, &config.admin.admin_token) {
                (None, _) => (None, None),
                (Some(_), AdminToken::Given(t)) => (Some(t.clone()), None),
                (Some(a), AdminToken::Off) => {
                    tracing::warn!(
                        admin = %a,
                        "admin server has NO token (--admin-token none): any local user can \
                         read the records and rewrite the rules"
                    );
                    (None, None)
                }
                (Some(_), AdminToken::Generate) => {
                    let t = admin::token::generate().map_err(StartError::Token)?;
                    let file = match &data_lock {
                        Some(lock) => {
                            Some(admin::token::write(&lock.dir, &t).map_err(StartError::Token)?)
                        }
                        None => None,
                    };
                    (Some(t), file)
                }
            };
        let ca_source = tls::ca_source(&config).map_err(StartError::Tls)?;
        let ca = Arc::new(tls::Ca::load(&ca_source).map_err(|e| StartError::Tls(e.to_string()))?);
        let recorder = record::Recorder::start(&config.record).map_err(StartError::Record)?;
        metrics.attach_recorder(recorder.clone());
        metrics.attach_rules(live_rules.clone());
        {
            let users = users.clone();
            let recorder = recorder.clone();
            registry.set_on_close(Box::new(move |e, r| {
                users.on_close(e, r);
                recorder.on_close(e, r);
            }));
        }
        let auth = match &config.users.auth_file {
            Some(path) => Some(Arc::new(
                users::auth::Authenticator::load(path).map_err(StartError::Auth)?,
            )),
            None => None,
        };
        let shutdown = Shutdown::default();
        let limiter = net::Limiter::new(config.client.max_connections);
        let mut listeners = JoinSet::new();

        let http_listener = net::bind(config.listen).map_err(StartError::Bind)?;
        registry.attach_listener(&http_listener);
        let addr = http_listener.local_addr().map_err(StartError::Bind)?;
        let mut relay_listeners = Vec::new();
        let mut relay_addrs = Vec::new();
        for spec in &config.relays {
            let l = net::bind(spec.listen).map_err(StartError::Bind)?;
            registry.attach_listener(&l);
            relay_addrs.push(l.local_addr().map_err(StartError::Bind)?);
            relay_listeners.push((l, spec.clone()));
        }
        let admin_listener = match config.admin.admin_addr {
            Some(a) => {
                let l = net::bind(a).map_err(StartError::Bind)?;
                registry.attach_listener(&l);
                Some(l)
            }
            None => None,
        };
        let admin_addr = match &admin_listener {
            Some(l) => Some(l.local_addr().map_err(StartError::Bind)?),
            None => None,
        };
        let mut own = vec![addr];
        own.extend(relay_addrs.iter().copied());
        own.extend(admin_addr);
        relay::refuse_relay_loops(
            &config.relays,
            &own,
            &relay_addrs,
            admin_addr,
            config.connector.connect_timeout,
        )
        .await
        .map_err(StartError::RelayLoop)?;
        let own_listeners: Arc<[SocketAddr]> = own.clone().into();

        let interception = Arc::new(start_tls(&config, ca, admin_addr)?);
        let intercept =
            rules::InterceptScope::parse(&config.tls.intercept).map_err(StartError::Tls)?;
        let ctx = Arc::new(http::HttpContext::new(http::Shared {
            config: config.clone(),
            registry: registry.clone(),
            metrics: metrics.clone(),
            users: users.clone(),
            auth,
            own_addrs: own,
            recorder: recorder.clone(),
            rules: live_rules.clone(),
            tls: interception.clone(),
            intercept,
        }));
        listeners.spawn(http::serve_http(
            http_listener,
            ctx,
            limiter.clone(),
            shutdown.clone(),
        ));
        let relay_shared = Arc::new(relay::RelayShared {
            connector: config.connector,
            limits: config.relay_limits,
            registry: registry.clone(),
            users: users.clone(),
            own: own_listeners,
        });
        for (l, spec) in relay_listeners {
            listeners.spawn(relay::serve_relay(
                l,
                spec,
                relay_shared.clone(),
                limiter.clone(),
                shutdown.clone(),
            ));
        }
        if let Some(l) = admin_listener {
            let state = Arc::new(admin::AdminState {
                config: config.admin.clone(),
                keepalive: config.connector.keepalive,
                body_idle_timeout: config.client.body_idle_timeout,
                registry: registry.clone(),
                metrics: metrics.clone(),
                history: history.clone(),
                users: users.clone(),
                recorder: recorder.clone(),
                rules: live_rules.clone(),
                started: std::time::Instant::now(),
                shutdown: shutdown.clone(),
                proxy_addr: addr,
                token: admin_token.clone(),
                sessions: admin::session::Sessions::default(),
                conns: Default::default(),
                live_readers: Default::default(),
                heavy: Default::default(),
                tls: interception.clone(),
                intercept: config.tls.intercept.clone(),
            });
            listeners.spawn(admin::serve_admin(l, state));
        }
        // The sampler is not a listener: it stops with the hard stop.
        let watchdog = metrics::history::WatchdogConfig {
            max_connection_age: config.process.max_connection_age,
            ..Default::default()
        };
        let sampler_stop = CancellationToken::new();
        tokio::spawn(metrics::history::run_sampler(
            registry.clone(),
            metrics.clone(),
            history.clone(),
            watchdog,
            sampler_stop.clone(),
        ));
        tokio::spawn(live_rules.clone().watch(sampler_stop.clone()));
        tracing::info!(
            proxy = %addr,
            admin = %admin_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
            relays = ?relay_addrs,
            "sluice listening"
        );
        if let Some(f) = &admin_token_file {
            // Where, never what: the log must not hold the secret.
            tracing::info!(file = %f.display(), "admin token written (the CLI commands read it)");
        }
        Ok(Proxy {
            addr,
            relay_addrs,
            admin_addr,
            registry,
            metrics,
            users,
            history,
            recorder,
            rules: live_rules,
            shutdown,
            listeners,
            sampler_stop,
            admin_token,
            admin_token_generated: generate,
            admin_token_file,
            _data_lock: data_lock,
        })
    }

    /// The token the admin server demands (`None` with `--admin-token
    /// none` or without an admin server).
    pub fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }

    /// Whether the admin token was generated at start (not given).
    pub fn admin_token_generated(&self) -> bool {
        self.admin_token_generated && self.admin_token.is_some()
    }

    /// Where the generated token was written (`None` in memory mode).
    pub fn admin_token_file(&self) -> Option<&std::path::Path> {
        self.admin_token_file.as_deref()
    }

    /// The web UI's address, with the token in it when it was generated
    /// (a token the user gave is theirs to type).
    pub fn admin_url(&self) -> Option<String> {
        let a = self.admin_addr?;
        let host = if a.ip().is_unspecified() {
            SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), a.port())
        } else {
            a
        };
        match (&self.admin_token, self.admin_token_generated()) {
            (Some(t), true) => Some(format!("http://{host}/?token={t}")),
            _ => Some(format!("http://{host}/")),
        }
    }

    /// Stops accepting, lets in-flight requests and tunnels finish for up
    /// to `drain`, then closes whatever is left. Returns how many
    /// connections had to be closed at the deadline.
    pub async fn shutdown(mut self, drain: Duration) -> usize {
        self.shutdown.stop_accepting.cancel();
        while self.listeners.join_next().await.is_some() {}
        // Idle pooled upstream connections are not work in flight: they
        // close with the pool, so the drain waits only for client-facing work.
        let busy = |r: &Registry| {
            use registry::Kind;
            r.live(Kind::Http) + r.live(Kind::Tunnel) + r.live(Kind::Relay)
        };
        let deadline = tokio::time::Instant::now() + drain;
        while busy(&self.registry) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = busy(&self.registry) as usize;
        self.sampler_stop.cancel();
        if left > 0 {
            tracing::warn!(
                connections = left,
                "drain timeout reached, closing the rest"
            );
            self.registry.kill_all(CloseReason::Shutdown);
            let hard = tokio::time::Instant::now() + Duration::from_secs(2);
            while busy(&self.registry) > 0 && tokio::time::Instant::now() < hard {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        // Records of what just closed are stored before the process goes.
        let recorder = self.recorder.clone();
        let _ = tokio::task::spawn_blocking(move || recorder.close(Duration::from_secs(5))).await;
        left
    }
}

/// Installs the log subscriber for `level` (a level or a tracing filter).
pub fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs one instance until SIGTERM or SIGINT, then drains (SIGHUP
/// reloads the rule file). Returns the exit code.
pub fn run(config: Config) -> i32 {
    init_logging(&config.process.log_level);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all().on_thread_park(heap::collect_if_due);
    if let Some(n) = config.process.workers {
        rt.worker_threads(n);
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice: cannot start the runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        let drain = config.process.drain_timeout;
        // Handlers go in before the listeners: a supervisor may send SIGTERM
        // as soon as it sees "listening", and that must start a drain, not
        // the default action (immediate death, in-flight work cut).
        let signals = match Signals::install() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("sluice: cannot listen for signals: {e}");
                return 1;
            }
        };
        let proxy = match Proxy::start(config).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("sluice: {e}");
                return 1;
            }
        };
        // Once, to stdout (the log on stderr never holds the token).
        // A closed stdout must not panic the instance: the write is best effort.
        if let Some(url) = proxy.admin_url() {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "sluice admin UI: {url}").and_then(|_| out.flush());
        }
        signals.wait(&proxy.rules).await;
        tracing::info!(drain = %humantime::format_duration(drain), "shutting down");
        let closed = proxy.shutdown(drain).await;
        tracing::info!(closed_at_deadline = closed, "stopped");
        0
    })
}

/// SIGTERM and SIGINT (drain), SIGHUP (reload the rule file), caught
/// from the moment they are installed.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Returns at SIGTERM or SIGINT; reloads `rules` at each SIGHUP.
    async fn wait(mut self, rules: &rules::live::LiveRules) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
                _ = self.hup.recv() => rules.reload_logged("SIGHUP").await,
            }
        }
    }
}

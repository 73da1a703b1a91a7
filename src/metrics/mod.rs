//! Prometheus metrics, process figures and the one-hour history ring.
//!
//! Invariants: label sets are bounded (method is one of the standard
//! methods or `OTHER`, status is a class, clients are a top-N plus
//! `other`); registry-derived figures are computed at scrape time from the
//! registry, never kept twice; a scrape never fails on a missing /proc file.

pub mod history;
pub mod process;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;

use crate::registry::{Kind, Registry};
use crate::users::Users;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: &'static str,
    pub status: &'static str,
}

/// What happened to a TLS tunnel: `outcome` is intercepted, passthrough,
/// client_refused or upstream_failed; `reason` a fixed label of each.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsLabels {
    pub outcome: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchdogLabels {
    pub check: &'static str,
}

/// Metrics the data path updates directly.
pub struct Metrics {
    registry: prometheus_client::registry::Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub upstream_connect_seconds: Histogram,
    pub ttfb_seconds: Histogram,
    pub request_seconds: Histogram,
    pub leak_warnings: Family<WatchdogLabels, Counter>,
    pub tls: Family<TlsLabels, Counter>,
    /// All requests answered (for requests/s in the history).
    pub requests_total: AtomicU64,
    recorder: Arc<OnceLock<Arc<crate::record::Recorder>>>,
    rules: Arc<OnceLock<Arc<crate::rules::live::LiveRules>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ]
    .into_iter()
}

/// Bounded method label.
pub fn method_label(m: &http::Method) -> &'static str {
    match m.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "OTHER",
    }
}

/// Status class label: 1xx..5xx.
pub fn status_label(code: u16) -> &'static str {
    match code {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

impl Metrics {
    pub fn new(reg: Arc<Registry>, users: Arc<Users>) -> Arc<Metrics> {
        let mut r = prometheus_client::registry::Registry::with_prefix("sluice");
        let requests = Family::<RequestLabels, Counter>::default();
        r.register(
            "requests",
            "Requests answered, by method and status class",
            requests.clone(),
        );
        let upstream_connect_seconds = Histogram::new(latency_buckets());
        r.register(
            "upstream_connect_seconds",
            "Time to resolve and connect to an upstream",
            upstream_connect_seconds.clone(),
        );
        let ttfb_seconds = Histogram::new(latency_buckets());
        r.register(
            "time_to_first_byte_seconds",
            "Time from request head to upstream response head",
            ttfb_seconds.clone(),
        );
        let request_seconds = Histogram::new(latency_buckets());
        r.register(
            "request_duration_seconds",
            "Time from request head to the end of the response body",
            request_seconds.clone(),
        );
        let leak_warnings = Family::<WatchdogLabels, Counter>::default();
        r.register(
            "leak_warnings",
            "Leak watchdog warnings, by check",
            leak_warnings.clone(),
        );
        let tls = Family::<TlsLabels, Counter>::default();
        r.register(
            "tls_tunnels",
            "TLS tunnels by outcome (intercepted, passthrough, client_refused, \
             upstream_failed) and reason",
            tls.clone(),
        );
        r.register_collector(Box::new(RegistryCollector { reg, users }));
        let recorder: Arc<OnceLock<Arc<crate::record::Recorder>>> = Default::default();
        r.register_collector(Box::new(RecorderCollector {
            recorder: recorder.clone(),
        }));
        let rules: Arc<OnceLock<Arc<crate::rules::live::LiveRules>>> = Default::default();
        r.register_collector(Box::new(RulesCollector {
            rules: rules.clone(),
        }));
        Arc::new(Metrics {
            registry: r,
            requests,
            upstream_connect_seconds,
            ttfb_seconds,
            request_seconds,
            leak_warnings,
            tls,
            requests_total: AtomicU64::new(0),
            recorder,
            rules,
        })
    }

    /// Reports the live rules' reloads, generation and size.
    pub fn attach_rules(&self, rules: Arc<crate::rules::live::LiveRules>) {
        let _ = self.rules.set(rules);
    }

    /// Reports the recorder's queue, drops and store in the exposition.
    pub fn attach_recorder(&self, recorder: Arc<crate::record::Recorder>) {
        let _ = self.recorder.set(recorder);
    }

    pub fn count_request(&self, method: &http::Method, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method_label(method),
                status: status_label(status),
            })
            .inc();
        self.requests_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts what happened to one TLS tunnel.
    pub fn count_tls(&self, outcome: &'static str, reason: &'static str) {
        self.tls.get_or_create(&TlsLabels { outcome, reason }).inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            let _ = writeln!(out, "# encoding failed");
        }
        out
    }
}

/// Figures derived from the registry, users table and /proc at scrape time.
#[derive(Debug)]
struct RegistryCollector {
    reg: Arc<Registry>,
    users: Arc<Users>,
}

const TOP_CLIENTS: usize = 10;
const NO_LABELS: [(&str, &str); 0] = [];

impl Collector for RegistryCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.reg.snapshot();

        let mut open: std::collections::BTreeMap<(&'static str, &'static str), i64> =
            Default::default();
        for kind in Kind::ALL {
            open.entry((kind.as_str(), "all")).or_insert(0);
        }
        for e in &snapshot {
            *open
                .entry((e.kind.as_str(), e.state().as_str()))
                .or_insert(0) += 1;
        }
        let mut m = enc.encode_descriptor(
            "connections_open",
            "Live connections by kind and state (state=all is the kind's total)",
            None,
            MetricType::Gauge,
        )?;
        for kind in Kind::ALL {
            ConstGauge::new(self.reg.live(kind) as i64)
                .encode(m.encode_family(&[("kind", kind.as_str()), ("state", "all")])?)?;
        }
        for ((kind, state), n) in &open {
            if *state != "all" {
                ConstGauge::new(*n)
                    .encode(m.encode_family(&[("kind", *kind), ("state", *state)])?)?;
            }
        }

        let mut m = enc.encode_descriptor(
            "connections_accepted",
            "Connections registered since start, by kind",
            None,
            MetricType::Counter,
        )?;
        for kind in Kind::ALL {
            ConstCounter::new(self.reg.accepted(kind))
                .encode(m.encode_family(&[("kind", kind.as_str())])?)?;
        }

        let mut m = enc.encode_descriptor(
            "connections_closed",
            "Connections closed since start, by close reason",
            None,
            MetricType::Counter,
        )?;
        let closed = self.reg.closed_all();
        for reason in crate::registry::CloseReason::LABELS {
            let n = closed
                .iter()
                .find(|(k, _)| *k == reason)
                .map(|(_, v)| *v)
                .unwrap_or(0);
            ConstCounter::new(n).encode(m.encode_family(&[("reason", reason)])?)?;
        }

        let (up, down) = self.reg.bytes_total();
        let mut m = enc.encode_descriptor(
            "bytes",
            "Bytes relayed, by direction (up: client to upstream)",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(up).encode(m.encode_family(&[("direction", "up")])?)?;
        ConstCounter::new(down).encode(m.encode_family(&[("direction", "down")])?)?;

        let p = process::read();
        let mut m = enc.encode_descriptor(
            "process_resident_memory_bytes",
            "Resident set size",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(p.rss_bytes as i64).encode(m.encode_family(&NO_LABELS)?)?;
        // The total above stays unlabelled: a family mixing it with its own
        // parts would double in every sum(). The parts get their own name.
        let mut m = enc.encode_descriptor(
            "process_resident_memory_by_kind_bytes",
            "Resident set size by kind (anon: heap and stacks, the process's own; \
             file: mapped files, page cache the kernel can drop; shmem: shared memory)",
            None,
            MetricType::Gauge,
        )?;
        for (kind, bytes) in [
            ("anon", p.rss.anon),
            ("file", p.rss.file),
            ("shmem", p.rss.shmem),
        ] {
            ConstGauge::new(bytes as i64).encode(m.encode_family(&[("kind", kind)])?)?;
        }
        let mut m = enc.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(p.cpu_seconds).encode(m.encode_family(&NO_LABELS)?)?;
        let mut m = enc.encode_descriptor(
            "process_open_fds",
            "Open file descriptors",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(p.open_fds as i64).encode(m.encode_family(&NO_LABELS)?)?;
        let mut m =
            enc.encode_descriptor("process_threads", "OS threads", None, MetricType::Gauge)?;
        ConstGauge::new(p.threads as i64).encode(m.encode_family(&NO_LABELS)?)?;

        // Top clients: bounded label set (TOP_CLIENTS names plus "other").
        let top = self.users.top(TOP_CLIENTS, &snapshot);
        let mut m = enc.encode_descriptor(
            "client_bytes",
            "Bytes relayed for the top clients by bytes (user name or client IP), rest as other",
            None,
            MetricType::Gauge,
        )?;
        for (name, bytes) in &top.by_bytes {
            ConstGauge::new(*bytes as i64)
                .encode(m.encode_family(&[("client", name.as_str())])?)?;
        }
        let mut m = enc.encode_descriptor(
            "client_connections_open",
            "Open connections of the top clients by open connections, rest as other",
            None,
            MetricType::Gauge,
        )?;
        for (name, n) in &top.by_connections {
            ConstGauge::new(*n as i64).encode(m.encode_family(&[("client", name.as_str())])?)?;
        }
        Ok(())
    }
}

/// The recorder's figures: what was stored, what was dropped and why.
#[derive(Debug)]
struct RecorderCollector {
    recorder: Arc<OnceLock<Arc<crate::record::Recorder>>>,
}

impl Collector for RecorderCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(rec) = self.recorder.get() else {
            return Ok(());
        };
        let s = &rec.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut m = enc.encode_descriptor(
            "records_stored",
            "Records written to the record store",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(get(&s.stored)).encode(m.encode_family(&NO_LABELS)?)?;
        let mut m = enc.encode_descriptor(
            "records_dropped",
            "Records or bodies dropped because the recorder's queue was full (what=record|body), or not written (what=write_error)",
            None,
            MetricType::Counter,
        )?;
        for (what, n) in [
            ("record", get(&s.dropped_records)),
            ("body", get(&s.dropped_bodies)),
            ("write_error", get(&s.write_errors)),
        ] {
            ConstCounter::new(n).encode(m.encode_family(&[("what", what)])?)?;
        }
        let mut m = enc.encode_descriptor(
            "record_messages",
            "WebSocket messages and server-sent events: stored, counted only because their connection's budget was spent (over_budget), or because the recorder's queue was full (dropped)",
            None,
            MetricType::Counter,
        )?;
        for (what, n) in [
            ("stored", get(&s.messages_stored)),
            ("over_budget", get(&s.messages_over_budget)),
            ("dropped", get(&s.messages_dropped)),
        ] {
            ConstCounter::new(n).encode(m.encode_family(&[("what", what)])?)?;
        }
        let mut m = enc.encode_descriptor(
            "records_retention_deleted",
            "Records deleted by retention (count, bytes or age limit)",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(get(&s.retention_deleted)).encode(m.encode_family(&NO_LABELS)?)?;
        let mut m = enc.encode_descriptor(
            "records_queue",
            "Records waiting for the writer",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(s.queued.load(Ordering::Relaxed) as i64)
            .encode(m.encode_family(&NO_LABELS)?)?;
        let mut m =
            enc.encode_descriptor("records", "Records in the store", None, MetricType::Gauge)?;
        ConstGauge::new(get(&s.stored_now) as i64).encode(m.encode_family(&NO_LABELS)?)?;
        if let Some(store) = &rec.store {
            let mut m = enc.encode_descriptor(
                "record_store_bytes",
                "Size of the record store (database and WAL files)",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(store.disk_bytes() as i64).encode(m.encode_family(&NO_LABELS)?)?;
        }
        Ok(())
    }
}

/// The live rules: reload outcomes, current generation and rule count.
#[derive(Debug)]
struct RulesCollector {
    rules: Arc<OnceLock<Arc<crate::rules::live::LiveRules>>>,
}

impl Collector for RulesCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(rules) = self.rules.get() else {
            return Ok(());
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut m = enc.encode_descriptor(
            "rules_reloads",
            "Rule replacements (file reloads and API puts), by outcome (ok, failed: the running rules stayed)",
            None,
            MetricType::Counter,
        )?;
        for (outcome, n) in [
            ("ok", get(&rules.stats.ok)),
            ("failed", get(&rules.stats.failed)),
        ] {
            ConstCounter::new(n).encode(m.encode_family(&[("outcome", outcome)])?)?;
        }
        let snap = rules.current();
        let mut m = enc.encode_descriptor(
            "rules_generation",
            "Generation of the installed rules (bumped on each install)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(snap.generation as i64).encode(m.encode_family(&NO_LABELS)?)?;
        let mut m = enc.encode_descriptor("rules", "Rules installed", None, MetricType::Gauge)?;
        ConstGauge::new(snap.set.len() as i64).encode(m.encode_family(&NO_LABELS)?)?;
        Ok(())
    }
}

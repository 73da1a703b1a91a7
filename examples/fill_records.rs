//! Fills a record store with synthetic but realistic records, for timing
//! the records API on a large store (bench/records_query.sh).
//!
//!     cargo run --release --example fill_records -- DIR N
//!
//! Appends N records to DIR/records.db (ids continue after the newest
//! stored record), in transactions of 5000, through the store's own
//! `Store::insert`, so the schema, segments and indexes are the ones sluice uses.
//! The data is deterministic (a fixed seed): ~300 hosts with a skewed
//! (Zipf-like) share, ~20 paths per host with query strings, mostly GET
//! and 200, some 3xx/4xx/5xx, ~0.5% failed exchanges, ~8% CONNECT
//! tunnels, header blocks of a few hundred bytes, small captured bodies
//! on ~3%, and start times spread over the 24 hours before the fill, in
//! id order.
//!
//! When done it writes DIR/fill_records.meta (key=value lines): how many
//! records the fill left in the store, when, and filter values that the
//! benchmark uses (a popular and a rare host, common and rare URL
//! substrings, a client prefix).

use std::error::Error;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sluice::config::{DataDir, Recording};
use sluice::record::model::{CapturedBody, Record, RecordKind};
use sluice::record::store::Store;

const BATCH: usize = 5000;
const HOSTS: usize = 300;
/// Zipf exponent of the host distribution: the top host gets ~18% of the
/// records, the rarest a few hundred in a million.
const HOST_SKEW: f64 = 1.1;
const SPAN: Duration = Duration::from_secs(24 * 3600);

/// splitmix64: small, fast and deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
    /// One of `choices`, by weight.
    fn weighted<T: Copy>(&mut self, choices: &[(T, f64)]) -> T {
        let total: f64 = choices.iter().map(|c| c.1).sum();
        let mut x = self.unit() * total;
        for &(v, w) in choices {
            if x < w {
                return v;
            }
            x -= w;
        }
        choices[choices.len() - 1].0
    }
    /// Log-normal-ish: median `median`, heavier tail with larger `spread`.
    fn lognormal(&mut self, median: f64, spread: f64) -> f64 {
        // Box-Muller.
        let u1 = self.unit().max(1e-12);
        let u2 = self.unit();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        median * (spread * z).exp()
    }
    fn hex(&mut self, len: usize) -> String {
        let mut s = String::with_capacity(len);
        while s.len() < len {
            s.push_str(&format!("{:016x}", self.next()));
        }
        s.truncate(len);
        s
    }
}

const PREFIXES: &[&str] = &[
    "api", "www", "cdn", "static", "auth", "img", "assets", "login", "app", "m",
];
const DOMAINS: &[&str] = &[
    "github.com",
    "example.com",
    "googleapis.com",
    "shop-backend.io",
    "cloudfront.net",
    "internal.corp",
    "payments.example.net",
    "npmjs.org",
    "crates.io",
    "pypi.org",
    "slack.com",
    "sentry.io",
    "datadoghq.com",
    "stripe.com",
    "twilio.com",
    "gitlab.example.org",
    "grafana.lan",
    "wikipedia.org",
    "debian.org",
    "docker.io",
    "amazonaws.com",
    "azure.com",
    "fastly.net",
    "akamai.net",
    "mozilla.org",
    "ubuntu.com",
    "openai.com",
    "cloudflare.com",
    "jsdelivr.net",
    "unpkg.com",
];

/// Path templates; `{id}`, `{hex}`, `{word}`, `{n}` are filled per record.
/// The last ones are rare (they get a small weight).
const PATHS: &[(&str, f64)] = &[
    ("/", 6.0),
    ("/api/v1/users/{id}", 8.0),
    ("/api/v1/users/{id}/orders?page={n}&per_page=50", 5.0),
    ("/api/v2/search?q={word}&limit=20&offset={n}", 6.0),
    ("/api/v1/items/{id}?fields=name,price,stock", 6.0),
    ("/static/js/app.{hex}.js", 7.0),
    ("/static/css/main.{hex}.css", 4.0),
    ("/images/{id}/thumbnail.jpg?w=320&h=240", 6.0),
    ("/favicon.ico", 3.0),
    ("/health", 4.0),
    ("/v1/metrics/ingest?source={word}", 4.0),
    ("/login?next=%2Fdashboard%2F{word}", 2.0),
    ("/oauth/token", 2.0),
    ("/graphql?operationName={word}", 4.0),
    ("/feed.xml", 1.5),
    ("/api/v1/sessions/{hex}/heartbeat", 3.0),
    ("/download/{word}-{n}.tar.gz", 1.0),
    ("/cart/checkout?step={n}", 1.0),
    ("/internal/debug/pprof/heap", 0.05),
    ("/admin/export/audit-log.csv?from={n}", 0.05),
];
const WORDS: &[&str] = &[
    "kettle", "widget", "rust", "proxy", "summer", "invoice", "shoes", "coffee", "tokio", "sqlite",
    "blue", "green", "report", "alpha", "delta", "gamma",
];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "curl/8.5.0",
    "python-requests/2.32.3",
    "Go-http-client/1.1",
    "okhttp/4.12.0",
];
const CONTENT_TYPES: &[&str] = &[
    "application/json; charset=utf-8",
    "text/html; charset=utf-8",
    "application/javascript",
    "text/css",
    "image/jpeg",
    "application/octet-stream",
];

/// What the benchmark needs to know about the generated data.
struct Meta {
    popular_host: String,
    rare_host: String,
}

/// `HOSTS` names; rank r pairs prefix r / DOMAINS with domain r % DOMAINS,
/// so the most requested hosts are spread over many domains.
fn hosts() -> Vec<String> {
    (0..HOSTS)
        .map(|r| {
            format!(
                "{}.{}",
                PREFIXES[(r / DOMAINS.len()) % PREFIXES.len()],
                DOMAINS[r % DOMAINS.len()]
            )
        })
        .collect()
}

/// Cumulative weights of a Zipf distribution over `n` ranks.
fn zipf_cdf(n: usize, s: f64) -> Vec<f64> {
    let mut cdf = Vec::with_capacity(n);
    let mut acc = 0.0;
    for r in 0..n {
        acc += 1.0 / ((r + 1) as f64).powf(s);
        cdf.push(acc);
    }
    for v in &mut cdf {
        *v /= acc;
    }
    cdf
}

fn fill_template(t: &str, rng: &mut Rng) -> String {
    let mut s = t.to_string();
    if s.contains("{id}") {
        s = s.replace("{id}", &(rng.below(5_000_000) + 1).to_string());
    }
    if s.contains("{hex}") {
        s = s.replace("{hex}", &rng.hex(12));
    }
    if s.contains("{word}") {
        s = s.replace("{word}", rng.pick(WORDS));
    }
    if s.contains("{n}") {
        s = s.replace("{n}", &rng.below(40).to_string());
    }
    s
}

fn request_headers(rng: &mut Rng, host: &str, method: &str, body_len: usize) -> Vec<u8> {
    let mut h = String::with_capacity(640);
    h.push_str(&format!("host: {host}\r\n"));
    h.push_str(&format!("user-agent: {}\r\n", rng.pick(AGENTS)));
    h.push_str("accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n");
    h.push_str("accept-language: en-US,en;q=0.7,de;q=0.3\r\n");
    h.push_str("accept-encoding: gzip, deflate, br, zstd\r\n");
    h.push_str(&format!("x-request-id: {}\r\n", rng.hex(32)));
    if rng.unit() < 0.6 {
        h.push_str(&format!(
            "cookie: session={}; _ga=GA1.2.{}.{}; theme=dark\r\n",
            rng.hex(40),
            rng.below(1 << 30),
            rng.below(1 << 30)
        ));
    }
    if rng.unit() < 0.3 {
        h.push_str(&format!(
            "authorization: Bearer eyJhbGciOiJIUzI1NiJ9.{}\r\n",
            rng.hex(96)
        ));
    }
    if method == "POST" || method == "PUT" || method == "PATCH" {
        h.push_str("content-type: application/json\r\n");
        h.push_str(&format!("content-length: {body_len}\r\n"));
    }
    h.push_str("connection: keep-alive\r\n");
    h.into_bytes()
}

fn response_headers(rng: &mut Rng, status: u16, body_len: u64, started_us: i64) -> Vec<u8> {
    let mut h = String::with_capacity(512);
    let date =
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_micros(started_us as u64));
    h.push_str(&format!("date: {date}\r\n"));
    h.push_str(&format!("content-type: {}\r\n", rng.pick(CONTENT_TYPES)));
    h.push_str(&format!("content-length: {body_len}\r\n"));
    h.push_str("server: nginx/1.22.1\r\n");
    h.push_str("cache-control: private, max-age=0, must-revalidate\r\n");
    h.push_str(&format!("etag: W/\"{}\"\r\n", rng.hex(24)));
    h.push_str(&format!("x-request-id: {}\r\n", rng.hex(32)));
    h.push_str("strict-transport-security: max-age=31536000; includeSubDomains\r\n");
    if (301..=308).contains(&status) {
        h.push_str("location: https://www.example.com/moved/elsewhere\r\n");
    }
    if rng.unit() < 0.15 {
        h.push_str(&format!(
            "set-cookie: session={}; Path=/; HttpOnly; Secure; SameSite=Lax\r\n",
            rng.hex(40)
        ));
    }
    h.push_str("vary: Accept-Encoding\r\n");
    h.into_bytes()
}

fn json_body(rng: &mut Rng, approx: usize) -> Bytes {
    let mut s = String::with_capacity(approx + 64);
    s.push_str("{\"items\":[");
    while s.len() < approx {
        s.push_str(&format!(
            "{{\"id\":{},\"name\":\"{}\",\"price\":{}.{:02}}},",
            rng.below(100_000),
            rng.pick(WORDS),
            rng.below(500),
            rng.below(100)
        ));
    }
    s.pop();
    s.push_str("]}");
    Bytes::from(s)
}

fn body_of(data: Bytes, size: u64) -> CapturedBody {
    let mut b = CapturedBody::default();
    b.push(&data, usize::MAX);
    // The wire may have carried more than what is kept.
    b.size = size.max(b.captured as u64);
    b.truncated = b.size > b.captured as u64;
    b
}

fn make_record(
    rng: &mut Rng,
    id: u64,
    started_us: i64,
    hosts: &[String],
    host_cdf: &[f64],
    path_weights: &[(usize, f64)],
) -> Record {
    let u = rng.unit();
    let rank = host_cdf.partition_point(|&c| c < u).min(hosts.len() - 1);
    let host = &hosts[rank];
    let client_ip = format!("10.0.{}.{}", rng.below(4), 10 + rng.below(40));
    let client = format!("{client_ip}:{}", 30000 + rng.below(30000));
    let conn_id = id / 4 + 1;
    let mut r = Record::new(RecordKind::Http, conn_id, client, SystemTime::now());
    r.id = id;
    r.started_us = started_us;
    r.version = "HTTP/1.1".into();
    r.upstream_addr = Some(format!("93.184.{}.{}:443", rank % 256, rank / 256 + 10).into());
    if rng.unit() < 0.05 {
        r.user = Some((rng.pick(&["alice", "bob", "ci-runner", "carol"])).into());
    }

    if rng.unit() < 0.08 {
        // A CONNECT tunnel: no headers or bodies, long-lived, sizes only.
        r.kind = RecordKind::Tunnel;
        r.method = "CONNECT".into();
        r.url = format!("{host}:443");
        r.host = host.as_str().into();
        r.status = Some(200);
        r.req_body.size = rng.lognormal(4000.0, 1.5) as u64;
        r.resp_body.size = rng.lognormal(60_000.0, 2.0) as u64;
        r.timings.connect_us = Some(rng.lognormal(8000.0, 0.6) as i64);
        r.timings.total_us = Some(rng.lognormal(20_000_000.0, 1.5) as i64);
        r.close_reason = Some("eof".into());
        if rng.unit() < 0.02 {
            r.close_reason = Some("idle timeout".into());
            r.error = Some("idle timeout (failed: upstream)".into());
        }
        return r;
    }

    r.kind = RecordKind::Http;
    r.method = rng
        .weighted(&[
            ("GET", 80.0),
            ("POST", 12.0),
            ("PUT", 3.0),
            ("DELETE", 2.0),
            ("HEAD", 1.0),
            ("OPTIONS", 1.0),
            ("PATCH", 1.0),
        ])
        .into();
    let path_index = rng.weighted(path_weights);
    let path = fill_template(PATHS[path_index].0, rng);
    r.url = format!("http://{host}{path}");
    r.host = host.as_str().into();
    r.upstream_conn_id = Some(conn_id + 1_000_000);

    let failed = rng.unit() < 0.005;
    let status: u16 = if failed {
        rng.weighted(&[(502, 3.0), (504, 1.0)])
    } else {
        rng.weighted(&[
            (200, 80.0),
            (204, 3.0),
            (301, 1.0),
            (302, 2.0),
            (304, 3.0),
            (400, 1.0),
            (401, 1.5),
            (403, 1.0),
            (404, 4.0),
            (429, 0.5),
            (500, 1.0),
            (502, 1.0),
            (503, 0.7),
            (504, 0.3),
        ])
    };
    r.status = Some(status);

    // Request body: POST/PUT/PATCH carry one; captured on a few of them.
    let has_req_body = matches!(r.method.as_str(), "POST" | "PUT" | "PATCH");
    let req_len = if has_req_body {
        80 + rng.below(2000)
    } else {
        0
    };
    r.req_headers = request_headers(rng, host, &r.method, req_len);
    if has_req_body {
        if rng.unit() < 0.25 {
            let b = json_body(rng, req_len);
            let size = b.len() as u64;
            r.req_body = body_of(b, size);
        } else {
            r.req_body.size = req_len as u64;
        }
    }

    let resp_len = if r.method == "HEAD" || status == 204 || status == 304 {
        0
    } else {
        rng.lognormal(6000.0, 1.6) as u64
    };
    r.resp_body.size = resp_len;
    // Small captured bodies on ~3% (most records are large assets or the
    // body limit was set low: only their sizes are kept).
    if resp_len > 0 && rng.unit() < 0.03 {
        let keep = (resp_len as usize).min(512 + rng.below(16 * 1024));
        let b = json_body(rng, keep);
        r.resp_body = body_of(b, resp_len);
    }

    if failed {
        let target = format!("{host}:443");
        let msg = rng.pick(&[
            "upstream {t} refused the connection",
            "upstream {t} did not answer within 30s",
            "upstream {t} closed the connection before answering",
            "cannot resolve {t}: no such host",
        ]);
        r.error = Some(msg.replace("{t}", &target));
        r.resp_headers = Vec::new();
        r.resp_body = CapturedBody::default();
    } else {
        r.resp_headers = response_headers(rng, status, resp_len, started_us);
    }

    // Timings: 10% open a new upstream connection.
    let mut at = rng.lognormal(30.0, 0.5) as i64;
    r.timings.queued_us = Some(at);
    if rng.unit() < 0.10 {
        let dns = rng.lognormal(2000.0, 0.8) as i64;
        let connect = rng.lognormal(5000.0, 0.7) as i64;
        let tls = rng.lognormal(12_000.0, 0.5) as i64;
        r.timings.dns_us = Some(dns);
        r.timings.connect_us = Some(connect);
        r.timings.tls_us = Some(tls);
        at += dns + connect + tls;
    }
    at += (req_len as i64) / 10 + 50;
    r.timings.sent_us = Some(at);
    let ttfb = at + rng.lognormal(25_000.0, 1.1) as i64;
    r.timings.ttfb_us = Some(ttfb);
    r.timings.total_us = Some(ttfb + (resp_len as i64) / 50 + rng.below(2000) as i64);
    if failed {
        r.timings.ttfb_us = None;
    }
    r
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, n) = match args.as_slice() {
        [dir, n] => (PathBuf::from(dir), n.replace('_', "").parse::<u64>()?),
        _ => return Err("usage: fill_records DIR N".into()),
    };
    let config = Recording {
        data_dir: DataDir::Path(dir.clone()),
        // Large limits: the store opens with its WAL sized from these, and
        // nothing here enforces retention.
        retain_records: u32::MAX as u64,
        retain_bytes: 1 << 40,
        ..Recording::default()
    };
    let store = Store::open(&config)?;
    let first_id = store.max_id()? + 1;

    let hosts = hosts();
    let host_cdf = zipf_cdf(hosts.len(), HOST_SKEW);
    let path_weights: Vec<(usize, f64)> = PATHS.iter().enumerate().map(|(i, p)| (i, p.1)).collect();
    let meta = Meta {
        popular_host: hosts[0].clone(),
        rare_host: hosts[hosts.len() - 1].clone(),
    };

    let now_us = SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros() as i64;
    let span_us = SPAN.as_micros() as i64;
    let start_us = now_us - span_us;
    let step = span_us as f64 / n.max(1) as f64;
    // Fixed seed, offset by the first id so an append is not a copy.
    let mut rng = Rng(0x5eed_0000 ^ first_id);

    let t0 = Instant::now();
    let mut last_report = Instant::now();
    let mut done = 0u64;
    let mut batch = Vec::with_capacity(BATCH);
    let stdout = std::io::stdout();
    while done < n {
        batch.clear();
        let this = (n - done).min(BATCH as u64);
        for k in 0..this {
            let i = done + k;
            // In id order, with a little jitter that keeps the order.
            let started = start_us + (i as f64 * step) as i64 + (rng.unit() * step * 0.5) as i64;
            batch.push(make_record(
                &mut rng,
                first_id + i,
                started,
                &hosts,
                &host_cdf,
                &path_weights,
            ));
        }
        store.insert(&batch, || {})?;
        done += this;
        if last_report.elapsed() >= Duration::from_secs(2) || done == n {
            last_report = Instant::now();
            let secs = t0.elapsed().as_secs_f64();
            let mut out = stdout.lock();
            writeln!(
                out,
                "fill_records: {done}/{n} records ({:.0}%), {:.0} records/s, {:.1} s",
                done as f64 * 100.0 / n.max(1) as f64,
                done as f64 / secs.max(1e-9),
                secs
            )?;
            out.flush()?;
        }
    }
    let total = store.count()?;
    let secs = t0.elapsed().as_secs_f64();
    let db = dir.join(sluice::record::store::DB_FILE);
    let size = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    println!(
        "fill_records: inserted {n} records in {secs:.1} s ({:.0}/s); the store holds {total} records, {} ({:.0} MiB)",
        n as f64 / secs.max(1e-9),
        db.display(),
        size as f64 / 1048576.0
    );
    let meta_text = format!(
        "records={total}\nfilled_at={}\nspan_s={}\npopular_host={}\nrare_host={}\nurl_common=/api/v1/users/\nurl_rare=/admin/export/\nclient=10.0.3.\n",
        now_us / 1_000_000,
        SPAN.as_secs(),
        meta.popular_host,
        meta.rare_host,
    );
    std::fs::write(dir.join("fill_records.meta"), meta_text)?;
    println!(
        "fill_records: wrote {}",
        dir.join("fill_records.meta").display()
    );
    Ok(())
}

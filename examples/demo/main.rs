//! The one-command demo: `cargo run --release --example demo`.
//!
//! In one process: two loopback backends (backend 0 h2c; backend 1 HTTP/2 over TLS with a
//! certificate made at start-up, or h2c without the `rustls` feature), the reverse proxy from `examples/proxy` (same
//! code) with its `H2Pool`, and an h2c load generator driving many concurrent streams through
//! the proxy. Mid-run, backend 0's connections go dark (a relay in front of it stops
//! forwarding without closing them, as a NAT that lost its mapping would) and the pool's
//! keepalive PING finds them; later backend 0 sends GOAWAY on its connections, and backend 1
//! is restarted (listener and connections closed, then bound again on the same port), which
//! gets it ejected by the pool after its failed connects and restored once it answers again. At the end it prints
//! requests/s, latency p50/p99, the per-backend pool stats and `lost: N`, the requests that
//! neither got a response nor a counted error; the exit code is non-zero unless that is 0.

#[path = "../proxy/backend.rs"]
mod backend;
mod loadgen;
mod relay;
#[path = "../proxy/server.rs"]
mod server;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokenpool::h2::{H2Pool, H2PoolBuilder, Target};
use tokio::time::Instant;

use backend::Backend;
use loadgen::{LoadConfig, LoadGen, Outcome, Snapshot};
use relay::Relay;

const USAGE: &str = "\
usage: demo [options]

Starts two loopback h2c backends, the reverse proxy (tokenpool::h2::H2Pool) and an h2c load
generator in one process; mid-run backend 0's connections go dark (keepalive finds them),
backend 0 sends GOAWAY and backend 1 restarts (it is ejected, then restored); then prints
requests/s, latency p50/p99, per-backend pool stats and `lost: N` (exit code 1 unless 0).

options:
  --duration SECS               how long the load runs (default 6)
  --connections N               load generator connections to the proxy (default 4)
  --streams N                   concurrent streams per connection (default 32)
  --post-every N                every Nth request of a stream is an echoed POST (default 10; 0 = never)
  --threads N                   tokio worker threads (default: number of CPUs)
  --max-conns-per-backend N     pooled connections per backend (default 4)
  --backend-max-streams N       SETTINGS_MAX_CONCURRENT_STREAMS of the backends (default 128)
  -h, --help                    this text";

#[derive(Debug, Clone)]
struct Opts {
    duration: Duration,
    connections: usize,
    streams: usize,
    post_every: u64,
    threads: usize,
    max_conns: usize,
    backend_max_streams: u32,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Opts>, String> {
    let mut o = Opts {
        duration: Duration::from_secs(6),
        connections: 4,
        streams: 32,
        post_every: 10,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        max_conns: 4,
        backend_max_streams: backend::DEFAULT_MAX_STREAMS,
    };
    while let Some(arg) = args.next() {
        let (flag, mut inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg, None),
        };
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let mut value = || {
            inline
                .take()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--duration" => {
                let v = value()?;
                o.duration = match v.parse::<f64>() {
                    Ok(s) if s > 0.0 && s <= 3600.0 => Duration::from_secs_f64(s),
                    _ => return Err(format!("--duration needs seconds in (0, 3600], got '{v}'")),
                }
            }
            "--connections" => o.connections = positive(&flag, &value()?)?,
            "--streams" => o.streams = positive(&flag, &value()?)?,
            "--post-every" => {
                let v = value()?;
                o.post_every = v
                    .parse()
                    .map_err(|_| format!("--post-every needs a number (0 = never), got '{v}'"))?;
            }
            "--threads" => {
                o.threads = positive(&flag, &value()?)?;
                if o.threads > 1024 {
                    return Err("--threads is at most 1024".to_string());
                }
            }
            "--max-conns-per-backend" => o.max_conns = positive(&flag, &value()?)?,
            "--backend-max-streams" => {
                let v = value()?;
                o.backend_max_streams = match v.parse::<u32>() {
                    Ok(n) if n > 0 => n,
                    _ => {
                        return Err(format!(
                            "--backend-max-streams needs a positive integer, got '{v}'"
                        ))
                    }
                }
            }
            _ => return Err(format!("unknown argument '{flag}'")),
        }
    }
    if o.connections.saturating_mul(o.streams) > 100_000 {
        return Err("--connections x --streams is at most 100000 concurrent requests".to_string());
    }
    Ok(Some(o))
}

fn positive(flag: &str, value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 && n <= 100_000 => Ok(n),
        _ => Err(format!("{flag} needs a positive integer, got '{value}'")),
    }
}

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("demo: {e}\n(see --help)");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("demo: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(opts)) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(lost) => {
            eprintln!("demo: FAILED: {lost} requests lost");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}

const LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// How long backend 1 stays down during its restart.
const RESTART_DOWNTIME: Duration = Duration::from_millis(1500);

/// Keepalive PING settings of the demo's pool (demo scale: a real deployment would use
/// seconds to tens of seconds).
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_millis(250);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_millis(250);

/// Failed connects in a row that eject a backend in the demo (the pool's default is 3; the
/// proxy's own down-marking makes it try a down backend only about twice a second).
const EJECT_AFTER: u32 = 2;

/// How often the demo looks at the pool's health to report changes.
const HEALTH_POLL: Duration = Duration::from_millis(20);

/// How long in-flight requests get to finish after the load stops before they count as lost.
const FINISH_DEADLINE: Duration = Duration::from_secs(10);

/// Runs the demo; returns the number of lost requests.
async fn run(o: Opts) -> Result<u64, String> {
    let b0 = Backend::start_with(LOOPBACK, "backend-0", o.backend_max_streams, Arc::default())
        .await
        .map_err(|e| format!("backend 0: {e}"))?;
    let tls = Tls::new()?;
    let b1 = Backend::start_tls(
        LOOPBACK,
        "backend-1",
        o.backend_max_streams,
        Arc::default(),
        tls.server(),
    )
    .await
    .map_err(|e| format!("backend 1: {e}"))?;
    let b1_target = tls.target(b1.addr());
    // Backend 0 behind a relay that can black-hole its connections.
    let relay = Relay::start(b0.addr())
        .await
        .map_err(|e| format!("relay: {e}"))?;
    let pool = tls
        .client(H2Pool::builder([
            Target::from(relay.addr()),
            b1_target.clone(),
        ]))
        .max_connections_per_backend(o.max_conns)
        .connect_timeout(Duration::from_millis(500))
        .acquire_timeout(Duration::from_secs(2))
        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .eject_after_connect_failures(EJECT_AFTER)
        .ejection_backoff(Duration::from_millis(500), Duration::from_secs(2))
        .build()
        .map_err(|e| format!("pool: {e}"))?;
    let listener = tokio::net::TcpListener::bind(LOOPBACK)
        .await
        .map_err(|e| format!("proxy listener: {e}"))?;
    let proxy_addr = listener.local_addr().map_err(|e| e.to_string())?;
    let proxy = server::Proxy::new(pool);
    let (stop_proxy, stopped) = tokio::sync::oneshot::channel::<()>();
    let serve = tokio::spawn(server::serve(listener, Arc::clone(&proxy), async {
        let _ = stopped.await;
    }));

    println!(
        "demo: backends {} (h2c) and {b1_target}, max {} streams/conn, proxy on {proxy_addr} \
         ({} worker threads, {} conns/backend)",
        b0.addr(),
        o.backend_max_streams,
        o.threads,
        o.max_conns
    );
    println!(
        "demo: backend 0 through relay {} (can go dark); keepalive PING every {} ms, timeout {} \
         ms; a backend is ejected after {EJECT_AFTER} failed connects",
        relay.addr(),
        KEEP_ALIVE_INTERVAL.as_millis(),
        KEEP_ALIVE_TIMEOUT.as_millis()
    );
    println!(
        "demo: load: {} h2c connections x {} concurrent streams for {:.1} s, every {} request a POST /echo",
        o.connections,
        o.streams,
        o.duration.as_secs_f64(),
        if o.post_every == 0 { "no".to_string() } else { format!("{}th", o.post_every) }
    );

    let load = LoadGen::start(LoadConfig {
        target: proxy_addr,
        connections: o.connections,
        streams: o.streams,
        post_every: o.post_every,
    })
    .await?;

    let start = Instant::now();
    let end = start + o.duration;
    let dark_at = start + o.duration.mul_f64(0.15);
    let goaway_at = start + o.duration.mul_f64(0.35);
    let restart_at = start + o.duration.mul_f64(0.6);
    let mut next_tick = start + Duration::from_secs(1);
    let mut last = Snapshot::default();
    let mut last_t = start;
    let mut goaway_done = false;
    let mut b1 = Some(b1);
    let mut restarting = None;
    // Keepalive: (when the connections went dark, how many) until the pool closed them all.
    let mut dark: Option<(Instant, usize)> = None;
    let mut dark_done = false;
    let mut detected: Option<Duration> = None;
    // Ejection of backend 1: whether the last look saw it ejected, and how often it was.
    let mut ejected = false;
    let mut ejections = 0;

    loop {
        let mut wake = end.min(next_tick).min(Instant::now() + HEALTH_POLL);
        if !goaway_done {
            wake = wake.min(goaway_at);
        }
        if b1.is_some() {
            wake = wake.min(restart_at);
        }
        tokio::time::sleep_until(wake).await;
        let now = Instant::now();
        let t = now.duration_since(start).as_secs_f64();
        if !dark_done && dark.is_none() && now >= dark_at {
            let n = relay.blackhole();
            dark = Some((now, n));
            println!(
                "[{t:5.1}s] event: backend 0's {n} connection(s) go dark (the relay stops \
                 forwarding; no FIN, no RST)"
            );
        }
        if let Some((since, n)) = dark {
            if relay.dark_closed() >= n {
                let took = now.duration_since(since);
                detected = Some(took);
                dark = None;
                dark_done = true;
                println!(
                    "[{t:5.1}s] event: keepalive found and closed backend 0's {n} dark \
                     connection(s) {} ms after they went dark (interval + timeout = {} ms)",
                    took.as_millis(),
                    (KEEP_ALIVE_INTERVAL + KEEP_ALIVE_TIMEOUT).as_millis()
                );
            }
        }
        if let Ok(h) = proxy.pool().health(1) {
            // `ejected_until` is set from the ejection until a probe connect succeeds.
            match (ejected, h.ejected_until) {
                (false, Some(until)) => {
                    ejected = true;
                    ejections += 1;
                    let left = until.saturating_duration_since(std::time::Instant::now());
                    println!(
                        "[{t:5.1}s] event: backend 1 ejected after {} failed connects: requests \
                         needing a connection to it fail at once for {} ms",
                        h.consecutive_failures,
                        left.as_millis()
                    );
                }
                (true, None) => {
                    ejected = false;
                    println!("[{t:5.1}s] event: backend 1 restored (a probe connect succeeded)");
                }
                _ => {}
            }
        }
        if !goaway_done && now >= goaway_at {
            goaway_done = true;
            b0.goaway();
            println!("[{t:5.1}s] event: backend 0 sends GOAWAY on all its connections");
        }
        if now >= restart_at {
            if let Some(b) = b1.take() {
                println!(
                    "[{t:5.1}s] event: backend 1 restarts (listener and connections closed, \
                     back on the same port after {} ms)",
                    RESTART_DOWNTIME.as_millis()
                );
                restarting = Some(tokio::spawn(b.restart(RESTART_DOWNTIME)));
            }
        }
        if now >= next_tick {
            let snap = load.counters().snapshot();
            let dt = now.duration_since(last_t).as_secs_f64();
            let rate = (snap.finished() - last.finished()) as f64 / dt;
            println!(
                "[{t:5.1}s] {rate:8.0} req/s  ok {:>8}  errors {:>5}  in flight {:>4}  pools: {}",
                snap.ok(),
                snap.errors(),
                snap.unfinished(),
                pool_line(&proxy)
            );
            last = snap;
            last_t = now;
            next_tick += Duration::from_secs(1);
        }
        if now >= end {
            break;
        }
    }

    let load_counters = Arc::clone(load.counters());
    let result = load.finish(FINISH_DEADLINE).await;
    let load_samples = load_counters.bad_gateway_samples();
    let elapsed = start.elapsed().as_secs_f64();
    let b1 = match restarting {
        Some(task) => match task.await {
            Ok(Ok(b)) => Some(b),
            Ok(Err(e)) => {
                eprintln!("demo: backend 1 restart: {e}");
                None
            }
            Err(e) => {
                eprintln!("demo: backend 1 restart task failed: {e}");
                None
            }
        },
        None => b1,
    };

    // Streams hold a pool slot only briefly; wait (bounded) until every slot is idle again.
    let idle_deadline = Instant::now() + Duration::from_secs(3);
    let idle = loop {
        let busy: usize = (0..proxy.pool().backends())
            .filter_map(|b| proxy.pool().stats(b).ok())
            .map(|s| s.in_use + s.draining)
            .sum();
        if busy == 0 {
            break true;
        }
        if Instant::now() >= idle_deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let c = result.counts;
    let lost = c.unfinished();
    println!();
    println!("demo: results after {elapsed:.2} s");
    println!(
        "  requests: {} started, {} ok, {} errors; {:.0} requests/s ({:.0} ok/s)",
        c.started,
        c.ok(),
        c.errors(),
        c.finished() as f64 / elapsed,
        c.ok() as f64 / elapsed
    );
    let lat = &result.latencies_us;
    println!(
        "  latency (ok requests): p50 {}  p99 {}  max {}",
        fmt_us(percentile(lat, 0.50)),
        fmt_us(percentile(lat, 0.99)),
        fmt_us(lat.last().copied())
    );
    let errors: Vec<String> = Outcome::ALL[1..]
        .iter()
        .filter(|o| c.outcomes[**o as usize] > 0)
        .map(|o| format!("{} {}", o.label(), c.outcomes[*o as usize]))
        .collect();
    println!(
        "  errors by category: {}",
        if errors.is_empty() {
            "none".to_string()
        } else {
            errors.join(", ")
        }
    );
    for reason in load_samples {
        println!("    e.g. {reason}");
    }
    println!(
        "  backends answered: backend 0 {}, backend 1 {}; client connections opened: {}",
        b0.requests(),
        b1.as_ref().map_or(0, |b| b.requests()),
        c.connects
    );
    for line in proxy.report().lines() {
        println!("  {line}");
    }
    println!(
        "  pool slots idle after the run: {}",
        if idle {
            "yes"
        } else {
            "NO (a slot stayed in use)"
        }
    );
    if result.stuck_workers > 0 {
        println!(
            "  {} load workers were still waiting {} s after the load stopped",
            result.stuck_workers,
            FINISH_DEADLINE.as_secs()
        );
    }
    let pool = proxy.pool();
    for b in 0..pool.backends() {
        if let Ok(m) = pool.metrics(b) {
            println!(
                "  pool backend {b}: {} requests, {} connects ({} failed), {} GOAWAYs, evicted \
                 {} idle / {} keepalive, {} acquire timeouts, {} ejections",
                m.requests,
                m.connects,
                m.connect_failures,
                m.goaways,
                m.evicted_idle,
                m.evicted_keepalive,
                m.acquire_timeouts,
                m.ejections
            );
        }
    }
    println!(
        "  health: keepalive found backend 0's dark connections {}; backend 1 was ejected {} \
         time(s){}",
        detected.map_or("NOT within the run".to_string(), |d| format!(
            "after {} ms",
            d.as_millis()
        )),
        ejections,
        if ejected {
            " and is still ejected"
        } else {
            " and restored"
        }
    );
    println!("lost: {lost}");

    let _ = stop_proxy.send(());
    match serve.await {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("demo: proxy: some client connections outlived the shutdown grace period")
        }
        Err(e) => eprintln!("demo: proxy task failed: {e}"),
    }
    b0.stop().await;
    if let Some(b) = b1 {
        b.stop().await;
    }
    Ok(lost)
}

fn pool_line(proxy: &server::Proxy) -> String {
    (0..proxy.pool().backends())
        .map(|b| match proxy.pool().stats(b) {
            Ok(s) => format!(
                "b{b} avail {} in_use {} draining {}",
                s.available, s.in_use, s.draining
            ),
            Err(e) => format!("b{b} {e}"),
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let idx = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[idx])
}

fn fmt_us(us: Option<u32>) -> String {
    match us {
        Some(us) if us >= 1000 => format!("{:.2} ms", f64::from(us) / 1000.0),
        Some(us) => format!("{us} us"),
        None => "-".to_string(),
    }
}

/// Backend 1's TLS: a CA and a certificate for 127.0.0.1 made at start-up (rcgen), the
/// backend's server configuration and the pool's trust in that CA. Without the `rustls`
/// feature backend 1 is h2c.
struct Tls {
    #[cfg(feature = "rustls")]
    ca_pem: String,
    #[cfg(feature = "rustls")]
    server: Arc<rustls::ServerConfig>,
}

impl Tls {
    #[cfg(feature = "rustls")]
    fn new() -> Result<Tls, String> {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let ca_key = KeyPair::generate().map_err(|e| format!("CA key: {e}"))?;
        let mut ca =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| format!("CA params: {e}"))?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca
            .self_signed(&ca_key)
            .map_err(|e| format!("CA certificate: {e}"))?;
        let key = KeyPair::generate().map_err(|e| format!("leaf key: {e}"))?;
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .map_err(|e| format!("leaf params: {e}"))?
            .signed_by(&key, &ca, &ca_key)
            .map_err(|e| format!("leaf certificate: {e}"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .map_err(|e| format!("server certificate: {e}"))?;
        server.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Tls {
            ca_pem: ca.pem(),
            server: Arc::new(server),
        })
    }

    #[cfg(not(feature = "rustls"))]
    fn new() -> Result<Tls, String> {
        Ok(Tls {})
    }

    #[cfg(feature = "rustls")]
    fn server(&self) -> Option<Arc<rustls::ServerConfig>> {
        Some(Arc::clone(&self.server))
    }

    #[cfg(not(feature = "rustls"))]
    fn server(&self) -> Option<Arc<rustls::ServerConfig>> {
        None
    }

    fn target(&self, addr: SocketAddr) -> Target {
        if cfg!(feature = "rustls") {
            Target::parse(&format!("https://{addr}")).unwrap_or_else(|_| Target::from(addr))
        } else {
            Target::from(addr)
        }
    }

    #[cfg(feature = "rustls")]
    fn client(&self, builder: H2PoolBuilder) -> H2PoolBuilder {
        match tokenpool::h2::TlsConfig::new().ca_pem(self.ca_pem.as_bytes()) {
            Ok(tls) => builder.tls(tls),
            // Cannot happen (the PEM was just made); the pool then fails to verify backend 1
            // and says why.
            Err(_) => builder,
        }
    }

    #[cfg(not(feature = "rustls"))]
    fn client(&self, builder: H2PoolBuilder) -> H2PoolBuilder {
        builder
    }
}

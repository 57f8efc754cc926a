//! A multi-threaded HTTP/2 reverse proxy on `tokenpool::h2::H2Pool`.
//!
//! ```text
//! cargo run --release --example proxy -- --listen 127.0.0.1:8080 \
//!     --backend 127.0.0.1:9001 --backend https://127.0.0.1:9443 --ca-file ca.pem \
//!     --backend unix:/tmp/backend.sock [--threads N] [--runtime multi|per-core]
//! ```
//!
//! Clients speak h2c (prior knowledge) or HTTP/1.1; backends speak h2c (TCP or Unix socket)
//! or HTTP/2 over TLS. Each request goes to
//! the next backend round robin, skipping backends that fail; see `server.rs` for the details.
//! Ctrl-C stops accepting, lets open requests finish, and prints per-backend pool stats.

mod admin;
mod server;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tokenpool::h2::{H2Pool, Target};

const USAGE: &str = "\
usage: proxy --backend ADDR [--backend ADDR ...] [options]

A multi-threaded HTTP/2 reverse proxy: accepts h2c (prior knowledge) and HTTP/1.1
clients and forwards each request round robin to h2c backends through tokenpool's H2Pool.

options:
  --listen ADDR                 address to listen on (default 127.0.0.1:8080)
  --backend ADDR                a backend: IP:PORT or http://HOST:PORT (h2c),
                                https://HOST:PORT (TLS, ALPN h2) or unix:/PATH (h2c)
                                (repeat for more; at least one)
  --ca-file PEM                 trust these CAs for https backends (default: the
                                platform's roots)
  --threads N                   tokio worker threads (default: number of CPUs)
  --runtime multi|per-core      multi: one multi-thread tokio runtime with N workers and one
                                listener; per-core: N threads, each a current_thread
                                runtime with its own SO_REUSEPORT listener, all sharing one
                                backend pool that keeps each thread's requests on
                                connections driven there (default: per-core, as measured
                                in docs/throughput.md)
  --max-conns-per-backend N     pooled connections per backend (default 4, or one per
                                thread with --runtime per-core if that is more)
  --connect-timeout-ms MS       backend connect timeout (default 1000)
  --acquire-timeout-ms MS       wait for a pooled connection at most this long (default 2000)
  --min-conns-per-backend N     connections kept open to each backend (default 0)
  --balance POLICY              round-robin (default) or least-streams: how a request
                                picks its first backend (ejected ones skipped)
  --admin ADDR                  serve the pool's figures as Prometheus text on
                                http://ADDR/metrics (default: off)
  --backend-keep-alive-ms MS    PING backend connections this often; one unanswered for as
                                long again is closed (default 30000)

limits (each keeps one client or one backend from taking the proxy down; 0 is not allowed):
  --response-header-timeout-ms MS  a backend must answer within this (default 30000)
  --request-timeout-ms MS       a whole exchange, response body included (default 300000)
  --max-client-connections N    client connections open at once (default 1000)
  --header-read-timeout-ms MS   HTTP/1.1 request headers must arrive within this (default 10000)
  --handshake-timeout-ms MS     a new connection's first request head within this (default 10000)
  --idle-timeout-ms MS          close client connections idle this long (default 60000)
  --keep-alive-interval-ms MS   PING h2 clients this often (default 30000)
  --body-stall-timeout-ms MS    a request body silent this long fails with 408 (default 10000)
  --max-streams-per-client-conn N  SETTINGS_MAX_CONCURRENT_STREAMS for h2 clients (default 100)
  --backend-share-per-conn N    requests of one client connection at the backends at once
                                (default 32)
  --max-resets N                cancelled requests per reset window before the connection
                                is closed (default 200)
  --reset-window-ms MS          the reset window (default 10000)
  --max-pending-accept-resets N hyper's max_pending_accept_reset_streams (default 20)
  --max-local-error-resets N    hyper's max_local_error_reset_streams (default 50)
  -h, --help                    this text

Ctrl-C shuts down cleanly and prints per-backend pool stats.";

/// Upper bound for `--threads`.
const MAX_THREADS: usize = 1024;

/// How the proxy's threads run its tasks (`--runtime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RuntimeModel {
    /// One multi-thread runtime (work stealing) and one listener.
    Multi,
    /// One `current_thread` runtime per thread, each with its own `SO_REUSEPORT` listener on
    /// the same address (the kernel spreads connections over them); one backend pool,
    /// whose runtime affinity keeps a request's tasks, client and backend side, on its
    /// thread.
    PerCore,
}

#[derive(Debug)]
struct Args {
    listen: SocketAddr,
    backends: Vec<Target>,
    ca_file: Option<String>,
    threads: usize,
    /// `None`: chosen by the thread count (see `--help`).
    runtime: Option<RuntimeModel>,
    /// `None`: the default (see `max_conns`).
    max_conns: Option<usize>,
    connect_timeout: Duration,
    acquire_timeout: Duration,
    min_conns: usize,
    backend_keep_alive: Duration,
    balance: tokenpool::h2::Balance,
    admin: Option<SocketAddr>,
    response_header_timeout: Duration,
    request_timeout: Duration,
    limits: server::Limits,
}

impl Args {
    /// `--runtime`, or by measurement (docs/throughput.md): per-core at every thread count.
    /// On one thread a `current_thread` runtime does the same work with fewer syscalls (no
    /// cross-thread wake-ups to prepare for); on more, the pool's runtime affinity keeps
    /// every request on one thread, where the multi-thread runtime hands requests to
    /// connections driven on another worker.
    fn runtime(&self) -> RuntimeModel {
        self.runtime.unwrap_or(RuntimeModel::PerCore)
    }

    /// `--max-conns-per-backend`, by default 4, or one per thread with `--runtime per-core`
    /// when there are more (each thread's requests then use a connection driven on it; with
    /// 6 threads on 2 vCPUs and 2 connections per backend the per-core proxy served half
    /// of what it did with 4, docs/throughput.md).
    fn max_conns(&self) -> usize {
        self.max_conns.unwrap_or(match self.runtime() {
            RuntimeModel::PerCore => self.threads.max(4),
            RuntimeModel::Multi => 4,
        })
    }
}

/// `Ok(None)` means `--help` was asked for.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut parsed = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        backends: Vec::new(),
        ca_file: None,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        runtime: None,
        max_conns: None,
        connect_timeout: Duration::from_millis(1000),
        acquire_timeout: Duration::from_millis(2000),
        min_conns: 0,
        backend_keep_alive: Duration::from_secs(30),
        balance: tokenpool::h2::Balance::RoundRobin,
        admin: None,
        response_header_timeout: Duration::from_secs(30),
        request_timeout: Duration::from_secs(300),
        limits: server::Limits::default(),
    };
    while let Some(arg) = args.next() {
        // Accept both `--flag value` and `--flag=value`.
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
            "--listen" => parsed.listen = parse_addr(&flag, &value()?)?,
            "--backend" => parsed.backends.push(parse_backend(&flag, &value()?)?),
            "--ca-file" => parsed.ca_file = Some(value()?),
            "--threads" => {
                parsed.threads = parse_positive(&flag, &value()?)?;
                if parsed.threads > MAX_THREADS {
                    return Err(format!("--threads is at most {MAX_THREADS}"));
                }
            }
            "--runtime" => {
                parsed.runtime = match value()?.as_str() {
                    "multi" => Some(RuntimeModel::Multi),
                    "per-core" => Some(RuntimeModel::PerCore),
                    other => {
                        return Err(format!("--runtime is `multi` or `per-core`, got '{other}'"))
                    }
                }
            }
            "--max-conns-per-backend" => {
                parsed.max_conns = Some(parse_positive(&flag, &value()?)?);
            }
            "--connect-timeout-ms" => parsed.connect_timeout = parse_millis(&flag, &value()?)?,
            "--acquire-timeout-ms" => {
                parsed.acquire_timeout = parse_millis(&flag, &value()?)?;
                parsed.limits.share_wait = parsed.acquire_timeout;
            }
            "--response-header-timeout-ms" => {
                parsed.response_header_timeout = parse_millis(&flag, &value()?)?;
            }
            "--request-timeout-ms" => parsed.request_timeout = parse_millis(&flag, &value()?)?,
            "--min-conns-per-backend" => {
                parsed.min_conns = value()?
                    .parse()
                    .map_err(|_| format!("{flag} needs a number"))?;
            }
            "--balance" => {
                parsed.balance = match value()?.as_str() {
                    "round-robin" => tokenpool::h2::Balance::RoundRobin,
                    "least-streams" => tokenpool::h2::Balance::LeastStreams,
                    other => {
                        return Err(format!(
                            "{flag}: `{other}` is not a policy (round-robin, least-streams)"
                        ))
                    }
                };
            }
            "--admin" => parsed.admin = Some(parse_addr(&flag, &value()?)?),
            "--backend-keep-alive-ms" => {
                parsed.backend_keep_alive = parse_millis(&flag, &value()?)?;
            }
            _ => parse_limit(&mut parsed.limits, &flag, &mut value)?,
        }
    }
    if parsed.backends.is_empty() {
        return Err("at least one --backend ADDR is required".to_string());
    }
    Ok(Some(parsed))
}

/// The `Limits` flags; anything else is an unknown argument.
fn parse_limit(
    limits: &mut server::Limits,
    flag: &str,
    value: &mut impl FnMut() -> Result<String, String>,
) -> Result<(), String> {
    match flag {
        "--max-client-connections" => {
            limits.max_client_connections = parse_positive(flag, &value()?)?
        }
        "--header-read-timeout-ms" => limits.header_read_timeout = parse_millis(flag, &value()?)?,
        "--handshake-timeout-ms" => limits.handshake_timeout = parse_millis(flag, &value()?)?,
        "--idle-timeout-ms" => limits.idle_timeout = parse_millis(flag, &value()?)?,
        "--keep-alive-interval-ms" => limits.keep_alive_interval = parse_millis(flag, &value()?)?,
        "--body-stall-timeout-ms" => limits.body_stall_timeout = parse_millis(flag, &value()?)?,
        "--max-streams-per-client-conn" => {
            limits.max_streams_per_connection = u32::try_from(parse_positive(flag, &value()?)?)
                .map_err(|_| format!("{flag} is at most {}", u32::MAX))?;
        }
        "--backend-share-per-conn" => {
            limits.backend_share_per_connection = parse_positive(flag, &value()?)?;
        }
        "--max-resets" => {
            limits.max_resets_per_window = u32::try_from(parse_positive(flag, &value()?)?)
                .map_err(|_| format!("{flag} is at most {}", u32::MAX))?;
        }
        "--reset-window-ms" => limits.reset_window = parse_millis(flag, &value()?)?,
        "--max-pending-accept-resets" => {
            limits.max_pending_accept_reset_streams = parse_positive(flag, &value()?)?;
        }
        "--max-local-error-resets" => {
            limits.max_local_error_reset_streams = parse_positive(flag, &value()?)?;
        }
        _ => return Err(format!("unknown argument '{flag}'")),
    }
    Ok(())
}

fn parse_addr(flag: &str, value: &str) -> Result<SocketAddr, String> {
    value.parse().map_err(|_| {
        format!("{flag} needs an IP:PORT address such as 127.0.0.1:9001, got '{value}'")
    })
}

fn parse_backend(flag: &str, value: &str) -> Result<Target, String> {
    Target::parse(value).map_err(|e| format!("{flag}: {e}"))
}

fn parse_positive(flag: &str, value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{flag} needs a positive integer, got '{value}'")),
    }
}

fn parse_millis(flag: &str, value: &str) -> Result<Duration, String> {
    match value.parse::<u64>() {
        Ok(n) if n > 0 => Ok(Duration::from_millis(n)),
        _ => Err(format!(
            "{flag} needs a positive number of milliseconds, got '{value}'"
        )),
    }
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("proxy: {e}\n(see --help)");
            return ExitCode::from(2);
        }
    };
    let result = match args.runtime() {
        RuntimeModel::Multi => run_multi(args),
        RuntimeModel::PerCore => run_per_core(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--runtime multi`: one work-stealing runtime, one listener.
fn run_multi(args: Args) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;
    runtime.block_on(async {
        let proxy = server::Proxy::with_limits(build_pool(&args)?, args.limits.clone());
        print_future_sizes(&proxy);
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        banner(&args, listener.local_addr().map_err(|e| e.to_string())?);
        start_admin(&args, proxy.pool()).await?;
        let all_closed = server::serve(listener, proxy.clone(), shutdown_signal()).await;
        finish(&proxy, all_closed).await;
        Ok(())
    })
}

/// `--runtime per-core`: `threads` threads, each a `current_thread` runtime serving its own
/// `SO_REUSEPORT` listener; one [`H2Pool`] for all, built on this (the first) thread's
/// runtime, which also runs its background tasks. A backend connection is driven on the
/// runtime of the request that opened it, and each runtime's requests go to its own
/// connections first (the pool's runtime affinity), so a request stays on its core.
fn run_per_core(args: Args) -> Result<(), String> {
    let runtime = current_thread_runtime()?;
    runtime.block_on(async {
        let proxy = server::Proxy::with_limits(build_pool(&args)?, args.limits.clone());
        print_future_sizes(&proxy);
        let listener = reuseport_listener(args.listen)?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        banner(&args, local);
        start_admin(&args, proxy.pool()).await?;
        // Shutdown: this thread's signal handler tells the others through `stop`. Each says
        // when it has stopped serving (`served`); then the pool is closed, and they keep
        // their runtimes (and the backend connections driven there) until `done`.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (done_tx, done_rx) = tokio::sync::watch::channel(false);
        let (served_tx, mut served_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut others = Vec::new();
        for i in 1..args.threads {
            let (proxy, mut stop, mut done) = (proxy.clone(), stop_rx.clone(), done_rx.clone());
            let served = served_tx.clone();
            let (bound_tx, bound_rx) = std::sync::mpsc::channel();
            let thread = std::thread::Builder::new()
                .name(format!("proxy-{i}"))
                .spawn(move || {
                    let runtime = match current_thread_runtime() {
                        Ok(rt) => rt,
                        Err(e) => return bound_tx.send(Err(e)).unwrap_or(()),
                    };
                    runtime.block_on(async move {
                        let listener = match reuseport_listener(local) {
                            Ok(l) => l,
                            Err(e) => return bound_tx.send(Err(e)).unwrap_or(()),
                        };
                        let _ = bound_tx.send(Ok(()));
                        let stopped = async move {
                            let _ = stop.wait_for(|s| *s).await;
                        };
                        let _ = served.send(server::serve(listener, proxy, stopped).await);
                        drop(served);
                        let _ = done.wait_for(|d| *d).await;
                    });
                })
                .map_err(|e| format!("cannot start a thread: {e}"))?;
            bound_rx
                .recv()
                .map_err(|_| "a proxy thread died at start".to_string())??;
            others.push(thread);
        }
        drop(served_tx);
        let stopped = async {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        };
        let mut all_closed = server::serve(listener, proxy.clone(), stopped).await;
        let _ = stop_tx.send(true);
        // Every thread has stopped serving (or died) when the channel closes.
        while let Some(closed) = served_rx.recv().await {
            all_closed &= closed;
        }
        finish(&proxy, all_closed).await;
        let _ = done_tx.send(true);
        for t in others {
            let _ = t.join();
        }
        Ok(())
    })
}

/// What each request costs in moved bytes (docs/throughput.md).
fn print_future_sizes(proxy: &std::sync::Arc<server::Proxy>) {
    let sizes = server::request_future_sizes(proxy);
    let list: Vec<String> = sizes
        .iter()
        .map(|(what, n)| format!("{what} {n} B"))
        .collect();
    println!("proxy: request path futures: {}", list.join(", "));
}

fn current_thread_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))
}

/// A listener on `addr` that other threads may bind too (`SO_REUSEPORT`: the kernel spreads
/// new connections over them).
fn reuseport_listener(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    let bind = || {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        #[cfg(all(unix, not(target_os = "solaris"), not(target_os = "illumos")))]
        socket.set_reuseport(true)?;
        socket.bind(addr)?;
        socket.listen(1024)
    };
    bind().map_err(|e: std::io::Error| format!("cannot listen on {addr}: {e}"))
}

fn build_pool(args: &Args) -> Result<H2Pool, String> {
    let builder = H2Pool::builder(&args.backends);
    #[cfg(feature = "rustls")]
    let builder = match &args.ca_file {
        Some(ca) => builder.tls(
            tokenpool::h2::TlsConfig::new()
                .ca_file(ca)
                .map_err(|e| format!("--ca-file: {e}"))?,
        ),
        None => builder,
    };
    #[cfg(not(feature = "rustls"))]
    if args.ca_file.is_some() {
        return Err("--ca-file needs the `rustls` feature".into());
    }
    builder
        .max_connections_per_backend(args.max_conns())
        .connect_timeout(args.connect_timeout)
        .acquire_timeout(args.acquire_timeout)
        .response_header_timeout(args.response_header_timeout)
        .request_timeout(args.request_timeout)
        .min_connections_per_backend(args.min_conns)
        .keep_alive_interval(args.backend_keep_alive)
        .keep_alive_timeout(args.backend_keep_alive)
        .balance(args.balance.clone())
        .build()
        .map_err(|e| format!("invalid pool configuration: {e}"))
}

fn banner(args: &Args, local: SocketAddr) {
    let model = match args.runtime() {
        RuntimeModel::Multi => "worker threads (multi-thread runtime)",
        RuntimeModel::PerCore => {
            "threads (one current_thread runtime and SO_REUSEPORT listener each, one pool)"
        }
    };
    println!(
        "proxy: listening on {local} (h2c prior knowledge and HTTP/1.1), {} {model}, \
         up to {} connections per backend",
        args.threads,
        args.max_conns()
    );
    if args.runtime() == RuntimeModel::PerCore && args.max_conns() < args.threads {
        println!(
            "proxy: note: {} threads share {} connection(s) per backend: the threads without \
             one of their own hand their requests to other threads' connections (a wake-up \
             across threads each way); --max-conns-per-backend {} avoids that",
            args.threads,
            args.max_conns(),
            args.threads
        );
    }
    for (i, b) in args.backends.iter().enumerate() {
        println!("  backend {i}: {b}");
    }
    println!(
        "proxy: limits:\n  backend response head within {:?}, whole exchange within {:?}, \
         pooled connection within {:?}\n  backends: {} connection(s) kept open each, PING every \
         {:?}, ejected after 3 failed connects\n{}",
        args.response_header_timeout,
        args.request_timeout,
        args.acquire_timeout,
        args.min_conns,
        args.backend_keep_alive,
        args.limits.describe()
    );
}

/// `--admin`: serves the pool's figures on their own listener (on the current runtime).
async fn start_admin(args: &Args, pool: &H2Pool) -> Result<(), String> {
    if let Some(addr) = args.admin {
        let listener = admin::bind(addr).await?;
        println!(
            "proxy: admin endpoint on http://{}/metrics",
            listener.local_addr().map_err(|e| e.to_string())?
        );
        tokio::spawn(admin::serve(listener, pool.clone()));
    }
    println!("proxy: backends picked by {:?}", args.balance);
    Ok(())
}

/// After the client connections are closed: the report, then the backend connections
/// closed with GOAWAY.
async fn finish(proxy: &server::Proxy, all_closed: bool) {
    println!("proxy: shutting down");
    if !all_closed {
        println!(
            "proxy: some client connections were still open after {:?}; closing them",
            server::SHUTDOWN_GRACE
        );
    }
    print!("{}", proxy.report());
    let pool = proxy.pool();
    for b in 0..pool.backends() {
        if let Ok(h) = pool.health(b) {
            println!(
                "  backend {b} health: {} failed connect(s) in a row{}",
                h.consecutive_failures,
                if h.is_ejected(std::time::Instant::now()) {
                    " (ejected)"
                } else {
                    ""
                }
            );
        }
    }
    let closed = pool
        .shutdown(std::time::Instant::now() + server::SHUTDOWN_GRACE)
        .await;
    println!(
        "proxy: closed {} backend connection(s), {} cut at the deadline",
        closed.connections, closed.cut_at_deadline
    );
}

/// Completes on Ctrl-C (SIGINT) or, on Unix, SIGTERM.
async fn shutdown_signal() {
    // Without a Ctrl-C handler, run until killed rather than stop at once.
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    () = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => ctrl_c.await,
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await;
}

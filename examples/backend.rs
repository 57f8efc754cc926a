//! A tiny h2c (HTTP/2 prior knowledge) backend for trying the proxy by hand or under h2load.
//!
//! ```text
//! cargo run --release --example backend -- --listen 127.0.0.1:9001 [--name backend-1]
//! ```
//!
//! Answers every request `200`: `/echo` echoes the request body, any other path gets
//! `NAME METHOD PATH`. Stops on Ctrl-C.

#[path = "proxy/backend.rs"]
mod backend;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

const USAGE: &str = "\
usage: backend [--listen ADDR] [--name NAME] [--max-streams N]

A tiny h2c backend: `/echo` echoes the request body, other paths get `NAME METHOD PATH`.

options:
  --listen ADDR       address to listen on (default 127.0.0.1:9001)
  --name NAME         sent in the body and as `x-backend` (default: backend-PORT)
  --max-streams N     SETTINGS_MAX_CONCURRENT_STREAMS per connection (default 128)
  -h, --help          this text";

fn main() -> ExitCode {
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 9001));
    let mut name = None;
    let mut max_streams = backend::DEFAULT_MAX_STREAMS;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, mut inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg, None),
        };
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        let value = inline.take().or_else(|| args.next());
        let parsed = match (flag.as_str(), value) {
            (_, None) if ["--listen", "--name", "--max-streams"].contains(&flag.as_str()) => {
                Err(format!("{flag} needs a value"))
            }
            ("--listen", Some(v)) => v
                .parse()
                .map(|a| listen = a)
                .map_err(|_| format!("--listen needs an IP:PORT address, got '{v}'")),
            ("--name", Some(v)) if !v.is_empty() => {
                name = Some(v);
                Ok(())
            }
            ("--max-streams", Some(v)) => match v.parse::<u32>() {
                Ok(n) if n > 0 => {
                    max_streams = n;
                    Ok(())
                }
                _ => Err(format!("--max-streams needs a positive integer, got '{v}'")),
            },
            _ => Err(format!("unknown argument '{flag}'")),
        };
        if let Err(e) = parsed {
            eprintln!("backend: {e}\n(see --help)");
            return ExitCode::from(2);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("backend: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let name = name.unwrap_or_else(|| format!("backend-{}", listen.port()));
        let b = match backend::Backend::start_with(listen, &name, max_streams, Arc::default()).await
        {
            Ok(b) => b,
            Err(e) => {
                eprintln!("backend: cannot listen on {listen}: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!("backend {name}: listening on {} (h2c)", b.addr());
        let _ = tokio::signal::ctrl_c().await;
        println!("backend {name}: {} requests answered", b.requests());
        b.stop().await;
        ExitCode::SUCCESS
    })
}

//! End to end, side by side: the clients of `benches/end_to_end.rs` against the same
//! loopback h2c server, in interleaved rounds (each round runs every client in turn), so
//! that every client meets the same load on a shared machine. Criterion's back-to-back runs
//! of one client after another drift more there than the differences being measured
//! (docs/throughput.md). Prints each client's requests per second per round, the median,
//! and each median as a multiple of the first client's.
//!
//! ```text
//! cargo bench --bench end_to_end_rounds -- [--rounds 7] [--requests 60000] \
//!     [--in-flight 16,128] [CLIENT...]   (default clients: h2pool_send hyper_util)
//! ```
//!
//! Server and clients run as in `end_to_end`: one one-worker runtime for the server, one
//! for the clients; a client sends `--requests` GETs from `--in-flight` tasks per round,
//! after one warm-up run of a tenth as many.

#[path = "common/h2.rs"]
mod common;

use common::{client, run, runtime, server, CLIENTS};

struct Args {
    rounds: usize,
    requests: u64,
    in_flight: Vec<usize>,
    clients: Vec<String>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        rounds: 7,
        requests: 60_000,
        in_flight: vec![16, 128],
        clients: Vec::new(),
    };
    // `cargo bench` passes `--bench` to every bench binary.
    let mut args = std::env::args().skip(1).filter(|x| x != "--bench");
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--rounds" => a.rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--requests" => {
                a.requests = value()?.parse().map_err(|e| format!("--requests: {e}"))?;
            }
            "--in-flight" => {
                a.in_flight = value()?
                    .split(',')
                    .map(|n| n.parse().map_err(|e| format!("--in-flight: {e}")))
                    .collect::<Result<_, _>>()?;
            }
            name if CLIENTS.contains(&name) => a.clients.push(name.to_string()),
            other => return Err(format!("unknown argument {other}; clients: {CLIENTS:?}")),
        }
    }
    if a.rounds == 0 || a.requests == 0 || a.in_flight.contains(&0) {
        return Err("--rounds, --requests and --in-flight must be positive".into());
    }
    if a.clients.is_empty() {
        a.clients = vec!["h2pool_send".into(), "hyper_util".into()];
    }
    Ok(a)
}

fn main() {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("end_to_end_rounds: {e}");
            std::process::exit(2);
        }
    };
    let server_rt = runtime();
    let addr = server(&server_rt);
    let client_rt = runtime();
    let uri: http::Uri = format!("http://{addr}/").parse().expect("uri");
    let clients: Vec<_> = a
        .clients
        .iter()
        .map(|name| (name.as_str(), client_rt.block_on(client(name, addr))))
        .collect();
    println!(
        "end_to_end_rounds: {} rounds of {} requests per client, interleaved",
        a.rounds, a.requests
    );
    for &in_flight in &a.in_flight {
        for (_, c) in &clients {
            client_rt.block_on(run(c, &uri, in_flight, (a.requests / 10).max(1)));
        }
        let mut rates = vec![Vec::new(); clients.len()];
        for _ in 0..a.rounds {
            for (i, (_, c)) in clients.iter().enumerate() {
                let (took, _) = client_rt.block_on(run(c, &uri, in_flight, a.requests));
                rates[i].push(a.requests as f64 / took.as_secs_f64());
            }
        }
        let medians: Vec<f64> = rates
            .iter_mut()
            .map(|r| {
                r.sort_by(f64::total_cmp);
                r[r.len() / 2]
            })
            .collect();
        for ((name, _), (r, m)) in clients.iter().zip(rates.iter().zip(&medians)) {
            let sorted: Vec<String> = r.iter().map(|x| format!("{:.0}", x / 1e3)).collect();
            println!(
                "{in_flight:>4} in flight  {name:<16} median {:>6.1}k req/s  ×{:.2} of {}  (sorted, k: {})",
                m / 1e3,
                m / medians[0],
                clients[0].0,
                sorted.join(" ")
            );
        }
    }
    client_rt.block_on(async move { drop(clients) });
}

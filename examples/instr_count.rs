//! Single-thread checkout+return loop for instruction counting under callgrind.
//!
//! ```text
//! cargo build --release --example instr_count
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/instr_count tokenpool 1000000
//! ```
//!
//! Usage: `instr_count <impl> <pairs>` with `<impl>` one of `tokenpool` (token API:
//! `acquire` + `get` + `release(token, true)`), `tokenpool_lease` (`acquire_lease` + deref +
//! `release(true)`), `arrayqueue` (`crossbeam_queue::ArrayQueue` pop + push, as pingora's
//! pool uses it), `parking_lot` / `std_mutex` (`Mutex<Vec<_>>` pop + push),
//! `deadpool` (`deadpool::unmanaged::Pool` `try_get` + drop), or `none` (setup only).
//!
//! End to end: `instr_count <client> <requests> [in_flight]` with `<client>` one of `h2pool`,
//! `h2pool_send`, `h2pool_dispatch`, `hyper_util`, `raw_h2_1conn`, `raw_h2_4conn` (the clients of `benches/end_to_end.rs`, from
//! `benches/common/h2.rs`) sends that many GET requests, `in_flight` (default 16) at a time, to
//! the bench's loopback h2c server. Server and client share one current-thread tokio runtime,
//! so the count covers both sides of every request and does not depend on thread timing.
//! Needs the `h2` feature (on by default).
//!
//! Instructions per pair are the difference between two runs with different `<pairs>`
//! divided by the difference in pairs, which cancels process start-up and pool set-up;
//! `benches/instr_count.sh` does exactly that. The counts do not depend on the machine's load
//! (only on the compiler, the CPU's instruction set and the code), so a regression in the hot
//! path shows even on a noisy machine where wall-clock benches drift.

use std::hint::black_box;

use crossbeam_queue::ArrayQueue;
use tokenpool::Pool;

#[cfg(feature = "h2")]
#[path = "../benches/common/h2.rs"]
mod common;

/// Pool size: the same 64 objects as the `contention64` bench.
const SLOTS: usize = 64;

/// The pooled object, as in `benches/contention.rs`.
struct Conn {
    id: u64,
    _state: u64,
}

fn conn(id: usize) -> Conn {
    Conn {
        id: id as u64,
        _state: 0,
    }
}

#[inline(always)]
fn touch(c: &Conn) {
    black_box(c.id);
}

#[inline(never)]
fn tokenpool(pool: &Pool<Conn>, pairs: u64) {
    for _ in 0..pairs {
        let t = pool.acquire().expect("an idle object");
        touch(pool.get(&t).expect("live token"));
        pool.release(t, true);
    }
}

#[inline(never)]
fn tokenpool_lease(pool: &Pool<Conn>, pairs: u64) {
    for _ in 0..pairs {
        let l = pool.acquire_lease().expect("an idle object");
        touch(&l);
        l.release(true);
    }
}

#[inline(never)]
fn arrayqueue(q: &ArrayQueue<Conn>, pairs: u64) {
    for _ in 0..pairs {
        let c = q.pop().expect("an idle object");
        touch(&c);
        let _ = q.push(c);
    }
}

#[inline(never)]
fn parking_lot(m: &parking_lot::Mutex<Vec<Conn>>, pairs: u64) {
    for _ in 0..pairs {
        let c = m.lock().pop().expect("an idle object");
        touch(&c);
        m.lock().push(c);
    }
}

#[inline(never)]
fn std_mutex(m: &std::sync::Mutex<Vec<Conn>>, pairs: u64) {
    for _ in 0..pairs {
        let c = m.lock().unwrap().pop().expect("an idle object");
        touch(&c);
        m.lock().unwrap().push(c);
    }
}

#[inline(never)]
fn deadpool(p: &deadpool::unmanaged::Pool<Conn>, pairs: u64) {
    for _ in 0..pairs {
        let c = p.try_get().map_err(|_| ()).expect("an idle object");
        touch(&c);
        drop(c);
    }
}

/// A runtime for one side of the end-to-end run: with `E2E_RUNTIME=multi`, a multi-thread
/// runtime with one worker (as in `benches/end_to_end.rs`) that prints its worker's thread
/// id as `<role> tid <n>` to stderr, so that a syscall trace (`strace -f`) can tell the
/// client's writes from the server's; otherwise `None` (one current-thread runtime for
/// both).
#[cfg(feature = "h2")]
fn multi_thread_runtime(role: &'static str) -> Option<tokio::runtime::Runtime> {
    if std::env::var("E2E_RUNTIME").ok()? != "multi" {
        return None;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .on_thread_start(move || {
            if let Ok(path) = std::fs::read_link("/proc/thread-self") {
                // `<pid>/task/<tid>`
                let tid = path.file_name().map(|t| t.to_string_lossy().into_owned());
                eprintln!("{role} tid {}", tid.unwrap_or_default());
            }
        })
        .build()
        .expect("runtime");
    Some(rt)
}

/// Sends `requests` requests through `name`, `in_flight` at a time, after 200 to open the
/// connections; server and client on one thread (or, with `E2E_RUNTIME=multi`, each on a
/// multi-thread runtime of one worker).
#[cfg(feature = "h2")]
fn end_to_end(name: &str, requests: u64, in_flight: usize) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let server_rt = multi_thread_runtime("server");
    let client_rt = multi_thread_runtime("client");
    let addr = common::server(server_rt.as_ref().unwrap_or(&rt));
    let rt = client_rt.as_ref().unwrap_or(&rt);
    rt.block_on(async {
        let uri: http::Uri = format!("http://{addr}/").parse().expect("uri");
        let c = common::client(name, addr).await;
        for total in [200, requests] {
            let left = Arc::new(AtomicU64::new(total));
            let tasks: Vec<_> = (0..in_flight)
                .map(|worker| {
                    let (c, uri, left) = (c.clone(), uri.clone(), left.clone());
                    tokio::spawn(async move {
                        // Relaxed: only the count matters.
                        while left
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                                n.checked_sub(1)
                            })
                            .is_ok()
                        {
                            c.request(&uri, worker).await;
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("worker");
            }
        }
    });
}

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "tokenpool".into());
    let pairs: u64 = args
        .next()
        .map(|s| s.parse().expect("<pairs> is a number"))
        .unwrap_or(1_000_000);
    let pairs = black_box(pairs);
    #[cfg(feature = "h2")]
    if common::CLIENTS.contains(&which.as_str()) {
        let in_flight = args
            .next()
            .map(|s| s.parse().expect("[in_flight] is a number"))
            .unwrap_or(16);
        end_to_end(&which, pairs, in_flight);
        return;
    }
    match which.as_str() {
        "tokenpool" | "tokenpool_lease" => {
            let pool = Pool::new(SLOTS).expect("pool size");
            let tokens: Vec<_> = (0..SLOTS)
                .map(|i| pool.add(conn(i)).ok().unwrap())
                .collect();
            for t in tokens {
                pool.release(t, true);
            }
            if which == "tokenpool" {
                tokenpool(&pool, pairs);
            } else {
                tokenpool_lease(&pool, pairs);
            }
        }
        "arrayqueue" => {
            let q = ArrayQueue::new(SLOTS);
            for i in 0..SLOTS {
                let _ = q.push(conn(i));
            }
            arrayqueue(&q, pairs);
        }
        "parking_lot" => parking_lot(
            &parking_lot::Mutex::new((0..SLOTS).map(conn).collect()),
            pairs,
        ),
        "std_mutex" => std_mutex(
            &std::sync::Mutex::new((0..SLOTS).map(conn).collect()),
            pairs,
        ),
        "deadpool" => {
            let p = deadpool::unmanaged::Pool::new(SLOTS);
            for i in 0..SLOTS {
                p.try_add(conn(i)).map_err(|_| ()).expect("room");
            }
            deadpool(&p, pairs);
        }
        "none" => {}
        other => {
            eprintln!(
                "unknown impl {other}; one of: tokenpool tokenpool_lease arrayqueue \
                 parking_lot std_mutex deadpool none (and with the h2 feature: h2pool \
                 h2pool_send h2pool_dispatch hyper_util raw_h2_1conn raw_h2_4conn)"
            );
            std::process::exit(2);
        }
    }
}

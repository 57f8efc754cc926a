//! The core pool exercised from several threads, without any network: each thread acquires,
//! uses and returns connections of two backends through RAII leases, sometimes closes one,
//! sometimes opens one, and now and then drains a connection by id as a health checker would.
//! Prints per-backend stats and checks that every connection ever opened was closed exactly
//! once.
//!
//! ```sh
//! cargo run --release --example threads -- [threads] [ops-per-thread]
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokenpool::{Checkout, ConnectionPool, Error, Timeout};

/// A pretend connection that counts how often it is closed.
struct Conn {
    requests: u64,
    closed: Arc<AtomicUsize>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Relaxed: a plain event counter; the join below orders it before the final read.
        self.closed.fetch_add(1, Ordering::Relaxed);
    }
}

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let threads: usize = parse(args.next(), 4, "threads");
    let ops: usize = parse(args.next(), 200_000, "ops-per-thread");

    let pool = Arc::new(ConnectionPool::<Conn>::new(2, 4)?);
    let opened = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();

    std::thread::scope(|s| {
        for t in 0..threads {
            let (pool, opened, closed) = (&pool, &opened, &closed);
            s.spawn(move || {
                let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (t as u64 + 1);
                for _ in 0..ops {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let backend = pool.backend((rng & 1) as usize).expect("two backends");
                    let checkout = backend.acquire_timeout(Duration::from_millis(100));
                    let mut lease = match checkout {
                        Ok(Checkout::Acquired(lease)) => lease,
                        Ok(Checkout::Vacant(reservation)) => {
                            // Relaxed: a counter read after the scope joins every thread.
                            opened.fetch_add(1, Ordering::Relaxed);
                            reservation.fill(Conn {
                                requests: 0,
                                closed: closed.clone(),
                            })
                        }
                        Err(Timeout) => continue,
                    };
                    lease.requests += 1;
                    // Every 64th request fails and closes its connection; every 128th, a
                    // "health checker" drains the connection by id (it closes on release).
                    let keep = rng % 64 != 0;
                    if rng % 128 == 1 {
                        pool.drain(lease.conn_id());
                    }
                    lease.release(keep);
                }
            });
        }
    });

    let elapsed = start.elapsed();
    let total = threads * ops;
    println!(
        "{threads} threads x {ops} checkouts in {:.2?} ({:.1} M checkouts/s)",
        elapsed,
        total as f64 / elapsed.as_secs_f64() / 1e6
    );
    for b in 0..pool.backends() {
        println!("backend {b}: {:?}", pool.backend(b)?.stats());
    }
    let open_now = pool.total_stats().occupied();
    // Relaxed loads: every writer thread was joined by the scope above, which orders its
    // increments before these reads.
    println!(
        "connections opened: {}, closed: {}, still pooled: {open_now}",
        opened.load(Ordering::Relaxed),
        closed.load(Ordering::Relaxed)
    );
    drop(pool);
    let (o, c) = (
        opened.load(Ordering::Relaxed),
        closed.load(Ordering::Relaxed),
    );
    println!(
        "after dropping the pool: opened {o}, closed {c} (each exactly once: {})",
        o == c
    );
    if o != c {
        std::process::exit(1);
    }
    Ok(())
}

fn parse(arg: Option<String>, default: usize, what: &str) -> usize {
    match arg.map(|a| a.parse()) {
        None => default,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("{what} must be a positive integer");
            std::process::exit(2);
        }
    }
}

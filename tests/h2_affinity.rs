//! Runtime affinity (issue 14): one pool shared by `current_thread` runtimes on several
//! threads, as a per-core proxy shares it. Each runtime's requests go to a connection driven
//! on that runtime; a runtime that finds no free slot shares another's connection; a
//! runtime that ends takes its connections with it, and the others go on.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use tokenpool::h2::H2Pool;

/// An h2c backend, on a runtime of its own, that answers every request with the client
/// port of the connection it came on (`x-conn`).
fn backend() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            while let Ok((tcp, peer)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut conn = h2::server::handshake(tcp).await?;
                    while let Some((_, mut respond)) = conn.accept().await.transpose()? {
                        let response = http::Response::builder()
                            .header("x-conn", peer.port())
                            .body(())
                            .unwrap();
                        let _ = respond.send_response(response, true);
                    }
                    Ok::<_, h2::Error>(())
                });
            }
        });
    });
    rx.recv().unwrap()
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Sends `n` GETs one after another; the connections (client ports) that answered.
async fn connections_used(pool: &H2Pool, n: usize) -> BTreeSet<u16> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        let request = http::Request::get("/").body(Empty::<Bytes>::new()).unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), pool.send(0, request))
            .await
            .expect("answered in time")
            .expect("answered");
        let port = response.headers()["x-conn"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        seen.insert(port);
    }
    seen
}

/// Runs `first` on a `current_thread` runtime on this thread (where the pool is built), then
/// `second` on another thread's; both runtimes stay up until both are done (a connection is
/// driven on the runtime that opened it). Returns what each returned.
fn two_runtimes<A, B, FA, FB>(
    build: impl FnOnce() -> H2Pool,
    first: impl FnOnce(H2Pool) -> FA,
    second: impl FnOnce(H2Pool) -> FB + Send + 'static,
) -> (A, B)
where
    FA: std::future::Future<Output = A>,
    FB: std::future::Future<Output = B>,
    B: Send + 'static,
{
    let rt = current_thread();
    let pool = rt.block_on(async { build() });
    let first_done = Arc::new(tokio::sync::Notify::new());
    let all_done = Arc::new(tokio::sync::Barrier::new(2));
    let other = {
        let (pool, first_done, all_done) = (pool.clone(), first_done.clone(), all_done.clone());
        std::thread::spawn(move || {
            current_thread().block_on(async move {
                first_done.notified().await;
                let out = second(pool).await;
                all_done.wait().await;
                out
            })
        })
    };
    let a = rt.block_on(async {
        let a = first(pool).await;
        first_done.notify_one();
        all_done.wait().await;
        a
    });
    (a, other.join().unwrap())
}

#[test]
fn each_current_thread_runtime_uses_a_connection_of_its_own() {
    let addr = backend();
    let build = || {
        H2Pool::builder([addr])
            .max_connections_per_backend(4)
            .build()
            .unwrap()
    };
    // Thread 1 starts once thread 0 is done: its first request finds thread 0's connection
    // available, and without affinity every request would go there.
    let (mine, theirs) = two_runtimes(
        build,
        |pool| async move { connections_used(&pool, 50).await },
        |pool| async move { connections_used(&pool, 50).await },
    );
    eprintln!("thread 0 used {mine:?}, thread 1 used {theirs:?}");
    assert_eq!(mine.len(), 1, "thread 0 used {mine:?}");
    assert_eq!(theirs.len(), 1, "thread 1 used {theirs:?}");
    assert!(
        mine.is_disjoint(&theirs),
        "both runtimes used the same connection: {mine:?}"
    );
}

#[test]
fn a_runtime_without_a_free_slot_shares_another_runtimes_connection() {
    let addr = backend();
    let build = || {
        H2Pool::builder([addr])
            .max_connections_per_backend(1)
            .build()
            .unwrap()
    };
    let (mine, theirs) = two_runtimes(
        build,
        |pool| async move { connections_used(&pool, 10).await },
        |pool| async move { connections_used(&pool, 10).await },
    );
    assert_eq!(mine.len(), 1);
    assert_eq!(mine, theirs, "the only slot's connection serves both");
}

#[test]
fn a_runtime_that_ends_takes_its_connections_and_the_others_go_on() {
    let addr = backend();
    let rt = current_thread();
    let pool = rt.block_on(async {
        H2Pool::builder([addr])
            .max_connections_per_backend(2)
            .build()
            .unwrap()
    });
    // Another runtime opens a connection of its own, then ends (its driver is dropped).
    let theirs = {
        let pool = pool.clone();
        std::thread::spawn(move || current_thread().block_on(connections_used(&pool, 5)))
            .join()
            .unwrap()
    };
    // The runtime's end dropped the connection's driver, which closed the slot at once: no
    // dead connection waits there to be found by a request.
    let after = pool.stats(0).unwrap();
    assert_eq!(theirs.len(), 1);
    assert_eq!(
        (after.available, after.in_use),
        (0, 0),
        "the ended runtime's connection is still in its slot: {after:?}"
    );
    // And this runtime's requests are served on a connection of its own.
    let mine = rt.block_on(connections_used(&pool, 5));
    assert_eq!(mine.len(), 1);
    assert!(
        mine.is_disjoint(&theirs),
        "a dead runtime's connection was used"
    );
}

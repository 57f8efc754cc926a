//! A client connection's task: hyper's connection and every request it carries, polled in
//! one tokio task, each part only when it was woken.
//!
//! hyper's HTTP/2 server hands each request (its `H2Stream`: the service's future, then the
//! response body's pipe) to an executor. With `TokioExecutor` that is a task spawned per
//! request, and a task costs: its cell is allocated and the ~1.2 KB future copied in,
//! scheduled, tracked in the runtime's task list, and torn down (about 5k instructions per
//! request in callgrind, docs/throughput.md). [`Inline`] is an executor that queues the
//! future for the connection's own task instead; [`Serve`] polls it there, in a
//! `FuturesUnordered`, which polls only the requests that were woken.
//!
//! Each part of the task is polled only when its own waker fired ([`Gated`]): a request
//! finishing does not poll hyper's connection unless it queued a frame there, and a frame
//! from the client does not poll the watchdog's timer. The order inside one poll makes the
//! writes batch: first the requests that were woken (each queues its response), then the
//! connection (one flush carries them all, and new requests are accepted), then the new
//! requests (each sends its request to a backend).
//!
//! The cost, measured against the spawned tasks: the requests of one client connection
//! share one task, so on the multi-thread runtime they no longer run on two workers at
//! once (the connections still do). A request's future is dropped with its connection's
//! task: when the proxy closes a connection for a limit, its requests are cancelled with it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::task::AtomicWaker;

type Request = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The executor of one client connection: requests go to its [`Serve`], not to tokio.
#[derive(Clone)]
pub struct Inline {
    queue: Arc<Queue>,
}

struct Queue {
    /// Requests handed over and not yet moved into the task's set.
    new: Mutex<Vec<Request>>,
    /// Marked when a request is handed over.
    part: Arc<Part>,
    /// Set while [`Serve`] polls: a request handed over then is taken in the same poll,
    /// without waking the task again.
    polling: AtomicBool,
}

impl Inline {
    /// An executor for one connection; run the connection in a [`Serve`] made with it.
    pub fn new() -> Inline {
        Inline {
            queue: Arc::new(Queue {
                new: Mutex::new(Vec::new()),
                part: Part::new(),
                polling: AtomicBool::new(false),
            }),
        }
    }
}

impl<F> hyper::rt::Executor<F> for Inline
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, request: F) {
        self.queue
            .new
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::pin(request));
        // hyper hands requests over while `Serve` polls the connection, and `Serve` takes
        // them right after: no wake then (it would cost the task a second poll). SeqCst,
        // with `Serve::poll`'s end: a hand-over that saw `polling` set is seen there.
        self.queue.part.woken.store(true, Ordering::SeqCst);
        if !self.queue.polling.load(Ordering::SeqCst) {
            self.queue.part.task.wake();
        }
    }
}

/// One waker of the task, for one part of it: noting that this part was woken, then waking
/// the task.
struct Part {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Part {
    fn new() -> Arc<Part> {
        Arc::new(Part {
            // The first poll polls every part, which registers its wakers.
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        })
    }

    /// Registers the task's waker, then takes the mark: whether this part was woken since
    /// the last take. A wake after the register reaches the task, so none is lost.
    fn take(&self, cx: &Context<'_>) -> bool {
        self.task.register(cx.waker());
        // SeqCst: pairs with the stores in `wake_by_ref` and `Inline::execute` (what the
        // waker did before waking is visible to the poll that follows) and is in one order
        // with `Queue::polling`.
        self.woken.swap(false, Ordering::SeqCst)
    }
}

impl Wake for Part {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // SeqCst: see `take`.
        self.woken.store(true, Ordering::SeqCst);
        self.task.wake();
    }
}

/// A future polled only when its own waker was woken (and the first time).
pub struct Gated<F> {
    inner: Pin<Box<F>>,
    part: Arc<Part>,
    waker: Waker,
}

impl<F: Future> Gated<F> {
    pub fn new(inner: F) -> Gated<F> {
        let part = Part::new();
        Gated {
            inner: Box::pin(inner),
            waker: Waker::from(Arc::clone(&part)),
            part,
        }
    }

    /// The inner future, for calls between polls; the next poll polls it (a call such as
    /// `graceful_shutdown` changes its state without waking it).
    pub fn inner(&mut self) -> Pin<&mut F> {
        // SeqCst: see `Part::take`.
        self.part.woken.store(true, Ordering::SeqCst);
        self.inner.as_mut()
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if !self.part.take(cx) {
            return Poll::Pending;
        }
        let this = &mut *self;
        this.inner
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

/// A client connection (`conn`, served with `exec`) and the requests hyper handed to `exec`,
/// polled together; ready once the connection has ended and its last request is done.
pub struct Serve<C: Future> {
    conn: Gated<C>,
    /// `Some` until the connection ends.
    ended: Option<C::Output>,
    requests: FuturesUnordered<Request>,
    queue: Arc<Queue>,
}

impl<C: Future> Serve<C> {
    pub fn new(conn: C, exec: &Inline) -> Serve<C> {
        Serve {
            conn: Gated::new(conn),
            ended: None,
            requests: FuturesUnordered::new(),
            queue: Arc::clone(&exec.queue),
        }
    }

    /// The connection, for calls between polls (`graceful_shutdown`); the next poll polls
    /// it.
    pub fn conn(&mut self) -> Pin<&mut C> {
        self.conn.inner()
    }

    /// Moves the requests handed over since the last call into the set; whether there were
    /// any.
    fn take_new(&mut self, cx: &Context<'_>) -> bool {
        if !self.queue.part.take(cx) {
            return false;
        }
        let new = std::mem::take(
            &mut *self
                .queue
                .new
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let any = !new.is_empty();
        self.requests.extend(new);
        any
    }

    /// Polls the requests that were woken until none is ready.
    fn poll_requests(&mut self, cx: &mut Context<'_>) {
        while let Poll::Ready(Some(())) = self.requests.poll_next_unpin(cx) {}
    }
}

impl<C: Future> Future for Serve<C>
where
    C::Output: Unpin,
{
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        // `Serve` is never moved out of its pin: every field it pins is boxed.
        let this = Pin::into_inner(self);
        // SeqCst: see `Inline::execute`.
        this.queue.polling.store(true, Ordering::SeqCst);
        this.poll_requests(cx);
        if this.ended.is_none() {
            if let Poll::Ready(out) = Pin::new(&mut this.conn).poll(cx) {
                this.ended = Some(out);
            }
        }
        if this.take_new(cx) {
            this.poll_requests(cx);
        }
        this.queue.polling.store(false, Ordering::SeqCst);
        if this.queue.part.woken.load(Ordering::SeqCst) {
            // Handed over after `take_new` (not by hyper, which only does so in its poll).
            cx.waker().wake_by_ref();
        }
        if this.requests.is_empty() {
            if let Some(out) = this.ended.take() {
                return Poll::Ready(out);
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hyper::rt::Executor;

    use super::*;

    /// The connection's end does not end `Serve` while a request it handed over runs; a
    /// request handed over from outside the task's poll is run too (it wakes the task).
    #[tokio::test]
    async fn serve_runs_every_request_and_outlives_the_connection() {
        let (end_conn, conn) = tokio::sync::oneshot::channel::<()>();
        let exec = Inline::new();
        let serve = tokio::spawn(Serve::new(conn, &exec));
        // Polled once and idle: the hand-overs below come from outside its poll.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let tx = done_tx.clone();
        exec.execute(async move {
            let _ = released.await;
            let _ = tx.send("slow");
        });
        exec.execute(async move {
            let _ = done_tx.send("fast");
        });
        let within = Duration::from_secs(5);
        let fast = tokio::time::timeout(within, done_rx.recv()).await;
        assert_eq!(fast, Ok(Some("fast")), "a request handed over was not run");
        end_conn.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !serve.is_finished(),
            "Serve ended with a request still running"
        );
        release.send(()).unwrap();
        let slow = tokio::time::timeout(within, done_rx.recv()).await;
        assert_eq!(slow, Ok(Some("slow")));
        tokio::time::timeout(within, serve)
            .await
            .expect("Serve ends once its last request is done")
            .unwrap()
            .unwrap();
    }
}

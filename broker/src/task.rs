//! Long-running loops (routes, destinations) as actors that can be stopped
//! cleanly: the loop is told to stop through a watch channel, checks it
//! between units of work, and reports when it has really stopped — so a
//! successor reading the same durable cursor never repeats work in flight.

use actix::prelude::*;
use std::future::Future;
use std::pin::Pin;
use tokio::sync::{oneshot, watch};

/// Stops a running loop.
pub struct LoopHandle {
    /// What runs (route or destination name).
    pub name: String,
    stop: watch::Sender<bool>,
    done: oneshot::Receiver<()>,
}

impl LoopHandle {
    /// Ask the loop to stop and wait until it has.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.done.await;
    }
}

type BoxedLoop = Pin<Box<dyn Future<Output = ()>>>;
type MakeLoop = Box<dyn FnOnce(watch::Receiver<bool>) -> BoxedLoop + Send>;

/// The actor that owns one loop.
struct LoopActor {
    make: Option<MakeLoop>,
    stop: watch::Receiver<bool>,
    done: Option<oneshot::Sender<()>>,
}

impl Actor for LoopActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(make) = self.make.take() else { return };
        let task = make(self.stop.clone());
        let done = self.done.take();
        ctx.spawn(actix::fut::wrap_future(task).map(
            move |_, _act: &mut Self, ctx: &mut Context<Self>| {
                if let Some(d) = done {
                    let _ = d.send(());
                }
                ctx.stop();
            },
        ));
    }
}

/// Start the loop that `make` builds (given its stop signal) on `arbiter`.
pub fn spawn<F, Fut>(name: String, arbiter: &ArbiterHandle, make: F) -> LoopHandle
where
    F: FnOnce(watch::Receiver<bool>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, done_rx) = oneshot::channel();
    let make: MakeLoop = Box::new(move |stop| Box::pin(make(stop)));
    let actor = LoopActor {
        make: Some(make),
        stop: stop_rx,
        done: Some(done_tx),
    };
    LoopActor::start_in_arbiter(arbiter, move |_| actor);
    LoopHandle {
        name,
        stop: stop_tx,
        done: done_rx,
    }
}

/// Sleep `d` unless asked to stop first; `false` when stopping.
pub async fn pause(stop: &mut watch::Receiver<bool>, d: std::time::Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => !*stop.borrow(),
        _ = stop.changed() => false,
    }
}

/// Jitter for retry delays, so that many retrying loops do not wake in step
/// (xorshift; not for anything that needs real randomness).
pub struct Jitter(u64);

impl Jitter {
    /// Seeded from the clock.
    pub fn new() -> Jitter {
        Jitter(crate::storage::now_ms() | 1)
    }

    /// `d` with full jitter in [d/2, d].
    pub fn apply(&mut self, d: std::time::Duration) -> std::time::Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let half = d / 2;
        let extra = half.as_millis() as u64;
        half + std::time::Duration::from_millis(if extra == 0 { 0 } else { self.0 % (extra + 1) })
    }
}

impl Default for Jitter {
    fn default() -> Self {
        Self::new()
    }
}

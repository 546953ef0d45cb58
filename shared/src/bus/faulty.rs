//! A fault-injecting bus for tests and chaos runs: wraps a real bus and
//! delivers every event two to five times, in shuffled order, with some
//! copies sent again after a delay (so they arrive after later events). The
//! first copy of each event is published before `publish` returns, so the
//! outbox's at-least-once guarantee still holds; the extra copies are the
//! fault. Enabled with `DUIKOU_FAULTS=duplicate,reorder,delay` — never in
//! production. `late` (not in `all`) holds announcements
//! ([`crate::events::BROADCASTS`], which promise no delivery) back for
//! [`LATE`] instead: what a reader sees before the gateways hear of a
//! change.

use super::{Bus, BusConfig, BusError, EventRouter};
use crate::envelope::Envelope;
use crate::error::AppError;
use crate::rpc::RpcRouter;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::TaskTracker;

/// Which faults to inject.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Publish each event two to five times.
    pub duplicate: bool,
    /// Shuffle each batch.
    pub reorder: bool,
    /// Publish an extra copy of some events 20–200 ms later.
    pub delay: bool,
    /// Publish announcements only [`LATE`] after they were sent.
    pub late: bool,
}

/// How late announcements are with the `late` fault.
pub const LATE: Duration = Duration::from_secs(3);

impl Faults {
    /// Parses `duplicate,reorder,delay` (any subset; `all` for every one).
    pub fn parse(spec: &str) -> Result<Faults, String> {
        let mut f = Faults::default();
        for word in spec.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "duplicate" => f.duplicate = true,
                "reorder" => f.reorder = true,
                "delay" => f.delay = true,
                "late" => f.late = true,
                "all" => {
                    f = Faults {
                        duplicate: true,
                        reorder: true,
                        delay: true,
                        ..f
                    }
                }
                other => {
                    return Err(format!(
                        "unknown fault `{other}` (duplicate, reorder, delay, late, all)"
                    ));
                }
            }
        }
        Ok(f)
    }

    /// True when any fault is on.
    pub fn any(self) -> bool {
        self.duplicate || self.reorder || self.delay || self.late
    }
}

/// Random bits without another dependency: UUIDv7 carries 74 of them.
fn random() -> u64 {
    uuid::Uuid::now_v7().as_u128() as u64
}

/// The fault-injecting wrapper.
pub struct FaultyBus {
    inner: Arc<dyn Bus>,
    faults: Faults,
    delayed: TaskTracker,
}

impl FaultyBus {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Bus>, faults: Faults) -> FaultyBus {
        FaultyBus {
            inner,
            faults,
            delayed: TaskTracker::new(),
        }
    }
}

#[async_trait]
impl Bus for FaultyBus {
    async fn publish(&self, events: &[Envelope]) -> Vec<Result<(), BusError>> {
        // Late announcements count as sent: none is promised a delivery.
        let late = |e: &Envelope| self.faults.late && crate::events::is_broadcast(&e.kind);
        let held: Vec<Envelope> = events.iter().filter(|e| late(e)).cloned().collect();
        if !held.is_empty() {
            let inner = self.inner.clone();
            self.delayed.spawn(async move {
                tokio::time::sleep(LATE).await;
                let _ = inner.publish(&held).await;
            });
        }
        let mut order: Vec<usize> = (0..events.len()).filter(|&i| !late(&events[i])).collect();
        if self.faults.reorder {
            for i in (1..order.len()).rev() {
                order.swap(i, (random() % (i as u64 + 1)) as usize);
            }
        }
        let mut batch = Vec::new();
        let mut owner = Vec::new();
        for &i in &order {
            let copies = if self.faults.duplicate {
                2 + random() % 4
            } else {
                1
            };
            for _ in 0..copies {
                batch.push(events[i].clone());
                owner.push(i);
            }
        }
        let mut results: Vec<Result<(), BusError>> = (0..events.len()).map(|_| Ok(())).collect();
        for (i, r) in owner.into_iter().zip(self.inner.publish(&batch).await) {
            if let Err(e) = r {
                results[i] = Err(e);
            }
        }
        if self.faults.delay {
            for &i in order.iter().filter(|_| random().is_multiple_of(2)) {
                let (inner, env) = (self.inner.clone(), events[i].clone());
                let wait = Duration::from_millis(20 + random() % 180);
                self.delayed.spawn(async move {
                    tokio::time::sleep(wait).await;
                    let _ = inner.publish(&[env]).await;
                });
            }
        }
        results
    }

    async fn subscribe(&self, router: EventRouter) -> Result<(), BusError> {
        self.inner.subscribe(router).await
    }

    async fn declare(&self, router: &EventRouter) -> Result<(), BusError> {
        self.inner.declare(router).await
    }

    async fn serve(&self, router: RpcRouter) -> Result<(), BusError> {
        self.inner.serve(router).await
    }

    async fn call_raw(
        &self,
        service: &str,
        method: &str,
        body: serde_json::Value,
        deadline: Duration,
    ) -> Result<serde_json::Value, AppError> {
        self.inner.call_raw(service, method, body, deadline).await
    }

    fn config(&self) -> &BusConfig {
        self.inner.config()
    }

    async fn shutdown(&self) {
        self.delayed.close();
        self.delayed.wait().await;
        self.inner.shutdown().await;
    }

    async fn close(&self) {
        self.inner.close().await;
    }

    fn declared_queues(&self) -> Vec<String> {
        self.inner.declared_queues()
    }

    fn halt(&self) {
        self.inner.halt();
    }
}

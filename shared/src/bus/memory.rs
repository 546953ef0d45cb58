//! The in-process bus, for embedded mode: the same contract as RabbitMQ —
//! topic routing, unroutable publishes fail, at-least-once delivery with
//! redelivery on a retryable error, dead-letter after the limit or on reject,
//! RPC with a deadline — without a broker. Messages cross it as bytes, so
//! whatever would not survive the wire does not survive here either.
//!
//! It keeps nothing itself, so a publish is confirmed only once every queue
//! it reached has handled the event (or dead-lettered it): until then the
//! event stays in its service's outbox, and a crash or a stop before that
//! publishes it again on the next start (handlers are idempotent). What a
//! broker's confirm gives the RabbitMQ mode, the outbox gives this one.

use super::{
    Bus, BusConfig, BusError, EventRouter, HandlerError, retry_delay, rpc_timeout, topic_matches,
};
use crate::envelope::Envelope;
use crate::error::{AppError, ErrorCode};
use crate::rpc::RpcRouter;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info_span, warn};

/// One message waiting in a queue.
struct Delivery {
    body: Vec<u8>,
    attempt: u32,
    /// Told when the queue is done with it (handled or dead-lettered);
    /// dropped unsent when the bus stops first.
    done: Option<oneshot::Sender<()>>,
}

struct Queue {
    bindings: Vec<String>,
    tx: mpsc::UnboundedSender<Delivery>,
    /// A service's queue, which must handle every event bound to it (not a
    /// gateway's temporary push queue, which goes with its consumer).
    durable: bool,
}

/// A message the in-process bus dead-lettered.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The body as published.
    pub body: Vec<u8>,
    /// Why it was dead-lettered.
    pub reason: String,
}

#[derive(Default)]
struct State {
    queues: HashMap<String, Queue>,
    services: HashMap<String, Arc<RpcRouter>>,
    dead: HashMap<String, Vec<DeadLetter>>,
}

/// The in-process implementation of [`Bus`].
#[derive(Clone)]
pub struct MemoryBus {
    config: BusConfig,
    state: Arc<Mutex<State>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl MemoryBus {
    /// A bus with no queues yet.
    pub fn new(config: BusConfig) -> MemoryBus {
        MemoryBus {
            config,
            state: Arc::default(),
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The messages dead-lettered from queue `name` so far.
    pub fn dead_letters(&self, name: &str) -> Vec<DeadLetter> {
        self.state().dead.get(name).cloned().unwrap_or_default()
    }

    /// Puts raw bytes on a queue as if published (tests: malformed messages).
    pub fn inject(&self, queue: &str, body: Vec<u8>) -> Result<(), BusError> {
        let state = self.state();
        let q = state
            .queues
            .get(queue)
            .ok_or_else(|| BusError::Unroutable(queue.to_owned()))?;
        q.tx.send(Delivery {
            body,
            attempt: 1,
            done: None,
        })
        .map_err(|_| BusError::Broker("queue closed".into()))
    }

    fn bury(&self, queue: &str, body: Vec<u8>, reason: String) {
        warn!(queue, %reason, "dead-lettered a message");
        self.state()
            .dead
            .entry(queue.to_owned())
            .or_default()
            .push(DeadLetter { body, reason });
    }

    async fn deliver(&self, router: &EventRouter, mut delivery: Delivery) {
        let queue = router.queue();
        let done = delivery.done.take();
        let finished = |done: Option<oneshot::Sender<()>>| {
            if let Some(done) = done {
                let _ = done.send(());
            }
        };
        let env = match Envelope::from_bytes(&delivery.body) {
            Ok(env) => env,
            Err(e) => {
                self.bury(queue, delivery.body, format!("not an event envelope: {e}"));
                return finished(done);
            }
        };
        let span = info_span!("event", r#type = %env.kind, id = %env.id, correlation_id = %env.correlation_id);
        match super::dispatch_patiently(router, env, &self.cancel)
            .instrument(span)
            .await
        {
            Ok(()) => finished(done),
            Err(HandlerError::Reject(reason)) => {
                self.bury(queue, delivery.body, reason);
                finished(done);
            }
            Err(HandlerError::Retry(reason) | HandlerError::Unavailable(reason)) => {
                // Stopping (a handler waiting out a database outage is
                // handed back so): not a failure, whatever the attempt.
                // `done` dropped unanswered, the publish fails and the
                // event stays in its outbox for the next start.
                if self.cancel.is_cancelled() {
                    warn!(queue, %reason, "stopped before the handler succeeded; left in the outbox");
                    return;
                }
                // A temporary queue's copy is given up at once, as on
                // RabbitMQ: handed back, it would hold up (handled in
                // order) every push behind it.
                if router.is_ephemeral() {
                    warn!(queue, %reason, "dropped a push its handler failed on");
                    return finished(done);
                }
                // As RabbitMQ's quorum queues count: the first delivery
                // and `delivery_limit` more.
                if delivery.attempt > self.config.delivery_limit {
                    let reason = format!("delivery limit reached; last error: {reason}");
                    self.bury(queue, delivery.body, reason);
                    return finished(done);
                }
                warn!(queue, %reason, attempt = delivery.attempt, "handler failed; will be redelivered");
                tokio::time::sleep(retry_delay(delivery.attempt)).await;
                let state = self.state();
                if let Some(q) = state.queues.get(queue) {
                    let _ = q.tx.send(Delivery {
                        body: delivery.body,
                        attempt: delivery.attempt + 1,
                        done,
                    });
                }
            }
        }
    }
}

#[async_trait]
impl Bus for MemoryBus {
    /// Confirms each event once every queue it reached is done with it;
    /// an event the bus stopped before handling is an error, so it stays
    /// in its outbox for the next start.
    async fn publish(&self, events: &[Envelope]) -> Vec<Result<(), BusError>> {
        let routed: Vec<Result<Vec<oneshot::Receiver<()>>, BusError>> = {
            let state = self.state();
            events
                .iter()
                .map(|env| {
                    let mut handled = Vec::new();
                    let mut stopped = None;
                    for (name, q) in &state.queues {
                        if q.bindings.iter().any(|b| topic_matches(b, &env.kind)) {
                            let (done, handled_there) = oneshot::channel();
                            let delivery = Delivery {
                                body: env.to_bytes(),
                                attempt: 1,
                                done: Some(done),
                            };
                            if q.tx.send(delivery).is_ok() {
                                handled.push(handled_there);
                            } else if q.durable {
                                stopped = Some(name.clone());
                            }
                        }
                    }
                    // A service's queue whose consumer has stopped (the bus
                    // is stopping) did not get it: not confirmed, so it stays
                    // in its outbox for the next start, though the other
                    // queues have it (their inboxes skip it then). Skipped,
                    // a stop lost a `booking.confirmed` for partnership.
                    if let Some(queue) = stopped {
                        Err(BusError::Broker(format!(
                            "{queue} has stopped consuming; the event is kept for the next start"
                        )))
                    } else if !handled.is_empty() || crate::events::is_broadcast(&env.kind) {
                        Ok(handled)
                    } else {
                        Err(BusError::Unroutable(env.kind.clone()))
                    }
                })
                .collect()
        };
        let mut results = Vec::with_capacity(routed.len());
        for handled in routed {
            results.push(match handled {
                Ok(handled) => match futures::future::try_join_all(handled).await {
                    Ok(_) => Ok(()),
                    Err(_) => Err(BusError::Broker(
                        "the bus stopped before the event was handled".into(),
                    )),
                },
                Err(e) => Err(e),
            });
        }
        results
    }

    async fn subscribe(&self, router: EventRouter) -> Result<(), BusError> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Delivery>();
        let name = router.queue().to_owned();
        self.state().queues.insert(
            name,
            Queue {
                bindings: router.bindings(),
                tx,
                durable: !router.is_ephemeral(),
            },
        );
        let router = Arc::new(router);
        let bus = self.clone();
        let limit = Arc::new(tokio::sync::Semaphore::new(usize::from(
            self.config.prefetch.max(1),
        )));
        self.tracker.spawn(async move {
            loop {
                let next = tokio::select! {
                    next = rx.recv() => next,
                    () = bus.cancel.cancelled() => break,
                };
                let Some(delivery) = next else { break };
                // One process's pushes, handled in the order published (see
                // `EventRouter::ephemeral`).
                if router.is_ephemeral() {
                    bus.deliver(&router, delivery).await;
                    continue;
                }
                let Ok(permit) = limit.clone().acquire_owned().await else {
                    break;
                };
                let (bus2, router) = (bus.clone(), router.clone());
                bus.tracker.spawn(async move {
                    bus2.deliver(&router, delivery).await;
                    drop(permit);
                });
            }
        });
        Ok(())
    }

    async fn serve(&self, router: RpcRouter) -> Result<(), BusError> {
        self.state()
            .services
            .insert(router.service().to_owned(), Arc::new(router));
        Ok(())
    }

    async fn call_raw(
        &self,
        service: &str,
        method: &str,
        body: serde_json::Value,
        deadline: Duration,
    ) -> Result<serde_json::Value, AppError> {
        let router = self.state().services.get(service).cloned();
        let Some(router) = router else {
            return Err(AppError::new(
                ErrorCode::ServiceUnavailable,
                format!("{service} is not running"),
            ));
        };
        let (service_name, method_name) = (service.to_owned(), method.to_owned());
        let caller_gives_up = std::time::Instant::now() + deadline;
        let call = async move {
            // Cross the "wire" as bytes in both directions.
            let body: serde_json::Value =
                serde_json::from_slice(&serde_json::to_vec(&body).map_err(AppError::internal)?)
                    .map_err(AppError::internal)?;
            let request_id = crate::telemetry::request_id();
            let span = info_span!(
                "rpc",
                service = service_name,
                method = method_name,
                request_id = request_id.as_deref().unwrap_or("-")
            );
            let reply = super::serving_until(
                Some(caller_gives_up),
                None,
                router.dispatch(&method_name, body),
            )
            .instrument(span)
            .await?;
            let bytes = serde_json::to_vec(&reply).map_err(AppError::internal)?;
            serde_json::from_slice(&bytes).map_err(AppError::internal)
        };
        // A task of its own (the request id carried over): a caller that
        // gives up — its deadline, a client gone — must not stop a handler
        // between two of its transactions (a payment asked of the provider
        // and not yet recorded), as a service's consumer over RabbitMQ
        // would not.
        let handler = crate::telemetry::spawn_in_request(call);
        match tokio::time::timeout(deadline, handler).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => Err(AppError::internal(format!("{service}.{method}: {e}"))),
            Err(_) => Err(rpc_timeout(service, method, deadline)),
        }
    }

    fn config(&self) -> &BusConfig {
        &self.config
    }

    async fn shutdown(&self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::{MemoryBus, Queue};
    use crate::bus::{Bus, BusConfig, EventRouter};
    use crate::envelope::Envelope;
    use crate::events::HoldReleased;
    use crate::ids::BookingId;

    /// A queue of `kind` whose consumer is gone, as at a stop.
    fn stopped_queue(bus: &MemoryBus, name: &str, durable: bool) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        drop(rx);
        bus.state().queues.insert(
            name.into(),
            Queue {
                bindings: vec!["inventory.hold_released".into()],
                tx,
                durable,
            },
        );
    }

    fn released() -> Envelope {
        let booking_id = BookingId::new();
        let ev = HoldReleased {
            booking_id,
            expired: false,
        };
        Envelope::new("test", booking_id.0, &ev)
    }

    /// An event two services' queues are bound to, one of whose consumers
    /// has stopped, is not confirmed (it stays in its outbox), though the
    /// other queue handles it; a stopped temporary queue keeps nothing back.
    #[tokio::test]
    async fn an_event_a_stopped_service_queue_missed_is_not_confirmed() {
        let bus = MemoryBus::new(BusConfig::default());
        let router =
            EventRouter::new("booking.events").on::<HoldReleased, _, _>(|_, _| async { Ok(()) });
        bus.subscribe(router).await.expect("subscribed");
        let fine = bus.publish(&[released()]).await;
        assert!(fine.iter().all(Result::is_ok), "{fine:?}");
        stopped_queue(&bus, "gateway.push.x", false);
        let fine = bus.publish(&[released()]).await;
        assert!(fine.iter().all(Result::is_ok), "a push queue: {fine:?}");
        stopped_queue(&bus, "partnership.events", true);
        let kept = bus.publish(&[released()]).await;
        assert!(kept.iter().all(Result::is_err), "{kept:?}");
    }
}

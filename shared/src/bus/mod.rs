//! The bus: events on a topic exchange, and RPC, behind one trait with two
//! implementations — RabbitMQ ([`amqp::AmqpBus`]) and in-process
//! ([`memory::MemoryBus`]) — with the same at-least-once semantics.
//!
//! Handlers return [`HandlerError::Retry`] for a failure that may pass (the
//! message is redelivered until the delivery limit, then dead-lettered) and
//! [`HandlerError::Reject`] for a message that can never succeed (dead-lettered
//! at once, the reason in a header). A handler's effect and its inbox row
//! commit together, so a redelivery after a lost ack changes nothing.

pub mod amqp;
pub mod faulty;
pub mod memory;
mod topic;

use crate::envelope::{BadPayload, Envelope, Event};
use crate::error::{AppError, ErrorCode};
use crate::rpc::{Rpc, RpcRouter};
use async_trait::async_trait;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use topic::topic_matches;

/// Header naming why a message was dead-lettered by a consumer.
pub const DEAD_REASON_HEADER: &str = "x-duikou-dead-reason";

/// Tunables shared by both implementations.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// Prefix on every exchange and queue name: isolates tests, or tenants of one vhost.
    pub prefix: String,
    /// Unacknowledged deliveries per consumer (and handlers running at once).
    pub prefetch: u16,
    /// Deliveries of one message before it is dead-lettered.
    pub delivery_limit: u32,
    /// Default deadline of an RPC.
    pub rpc_timeout: Duration,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            prefix: String::new(),
            prefetch: 32,
            delivery_limit: 5,
            rpc_timeout: Duration::from_secs(5),
        }
    }
}

impl BusConfig {
    /// The events exchange, `duikou.events` with the prefix.
    pub fn exchange(&self) -> String {
        format!("{}duikou.events", self.prefix)
    }

    /// A queue's full name, e.g. `booking.events` with the prefix.
    pub fn queue(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The dead-letter queue of `name`.
    pub fn dead_queue(&self, name: &str) -> String {
        format!("{}{name}.dead", self.prefix)
    }

    /// The RPC queue of `service`.
    pub fn rpc_queue(&self, service: &str) -> String {
        format!("{}{service}.rpc", self.prefix)
    }
}

/// A bus failure when publishing or declaring.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// No queue is bound for the routing key (returned under `mandatory`).
    #[error("no queue is bound for `{0}`")]
    Unroutable(String),
    /// The broker refused the message (nack).
    #[error("the broker refused the message")]
    Nacked,
    /// The broker cannot be reached or the channel failed.
    #[error("broker: {0}")]
    Broker(String),
}

impl From<lapin::Error> for BusError {
    fn from(e: lapin::Error) -> Self {
        BusError::Broker(e.to_string())
    }
}

/// How a handler failed.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// May succeed later (database busy, deadlock): redeliver.
    #[error("retry: {0}")]
    Retry(String),
    /// The database cannot be reached (restarting, connections refused):
    /// the bus retries in place with backoff until it can be, so an outage
    /// never uses up the delivery limit and dead-letters healthy messages.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Can never succeed (malformed, unknown type): dead-letter now.
    #[error("reject: {0}")]
    Reject(String),
}

impl From<sea_orm::DbErr> for HandlerError {
    fn from(e: sea_orm::DbErr) -> Self {
        if crate::db::is_unavailable(&e) {
            HandlerError::Unavailable(e.to_string())
        } else {
            HandlerError::Retry(e.to_string())
        }
    }
}

/// How often a handler waiting out an unavailable database says so.
const PATIENCE_LOG_EVERY: Duration = Duration::from_secs(60);

/// Runs the router's handler for `env`, retrying in place (backoff from
/// 100 ms to 5 s) for as long as the database is unavailable, until `stop`.
/// An outage, however long, is not the message's fault: handing it back
/// would count a delivery each time, and after the queue's delivery limit
/// the broker would dead-letter a healthy event (a capture, a grant) that
/// nothing reads again. Only `stop` hands it back (as a retry).
pub(crate) async fn dispatch_patiently(
    router: &EventRouter,
    env: Envelope,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<(), HandlerError> {
    let mut pause = Duration::from_millis(100);
    let mut said: Option<std::time::Instant> = None;
    loop {
        match router.dispatch(env.clone()).await {
            Err(HandlerError::Unavailable(reason)) => {
                if stop.is_cancelled() {
                    return Err(HandlerError::Retry(reason));
                }
                if said.is_none_or(|at| at.elapsed() >= PATIENCE_LOG_EVERY) {
                    tracing::warn!(%reason, "database unavailable; retrying the handler in place");
                    said = Some(std::time::Instant::now());
                }
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = stop.cancelled() => return Err(HandlerError::Retry(reason)),
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

impl From<BadPayload> for HandlerError {
    fn from(e: BadPayload) -> Self {
        HandlerError::Reject(e.to_string())
    }
}

type EventRoute =
    Box<dyn Fn(Envelope) -> BoxFuture<'static, Result<(), HandlerError>> + Send + Sync>;

/// What an ephemeral queue's consumer calls when its queue was lost.
pub type GapHook = Arc<dyn Fn() + Send + Sync>;

/// The events one service consumes from its queue, one handler per type.
pub struct EventRouter {
    queue: String,
    routes: HashMap<&'static str, EventRoute>,
    retired: Vec<&'static str>,
    ephemeral: bool,
    gap: Option<GapHook>,
}

impl EventRouter {
    /// A router consuming the queue `name` (e.g. `booking.events`).
    pub fn new(queue: impl Into<String>) -> Self {
        EventRouter {
            queue: queue.into(),
            routes: HashMap::new(),
            retired: Vec::new(),
            ephemeral: false,
            gap: None,
        }
    }

    /// Makes the queue this process's own and temporary: not durable, gone
    /// with the connection, no dead-lettering. For pushes to connected
    /// clients, where every gateway replica needs every event and an event
    /// missed while down has no one to go to. Give it a unique name. Its
    /// events are handled one after another, in the order they arrive
    /// (handled side by side, a booking confirmed and cancelled within a
    /// few milliseconds was pushed cancelled first, and its confirmation,
    /// then older than what was pushed, never): keep its handlers quick.
    pub fn ephemeral(mut self) -> Self {
        self.ephemeral = true;
        self
    }

    /// For an [ephemeral](EventRouter::ephemeral) queue: `gap` runs each
    /// time the queue is set up again after it was lost (its channel or
    /// connection lost, the queue deleted) — the events published
    /// meanwhile never reached it, and whoever relied on them should know.
    pub fn on_gap(mut self, gap: impl Fn() + Send + Sync + 'static) -> Self {
        self.gap = Some(Arc::new(gap));
        self
    }

    /// What [`EventRouter::on_gap`] set.
    pub fn gap_hook(&self) -> Option<GapHook> {
        self.gap.clone()
    }

    /// Whether the queue is [ephemeral](EventRouter::ephemeral).
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// The queue's name without prefix.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The routing keys to bind: one per handled type.
    pub fn bindings(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.routes.keys().map(|k| (*k).to_owned()).collect();
        keys.sort();
        keys
    }

    /// Handles events of type `E`; the handler receives the envelope (for its
    /// id and correlation) and the decoded payload.
    pub fn on<E, F, Fut>(mut self, handler: F) -> Self
    where
        E: Event + 'static,
        F: Fn(Envelope, E) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.routes.insert(
            E::TYPE,
            Box::new(move |env| {
                let handler = handler.clone();
                Box::pin(async move {
                    let event: E = env.decode()?;
                    handler(env, event).await
                })
            }),
        );
        self
    }

    /// No longer consumes events of type `E`: the binding an earlier
    /// version declared is removed when the queue is declared, and what it
    /// already queued is acknowledged unread.
    pub fn retired<E: Event>(mut self) -> Self {
        self.retired.push(E::TYPE);
        self
    }

    /// The routing keys this router no longer binds.
    pub fn retired_bindings(&self) -> Vec<String> {
        self.retired.iter().map(|k| (*k).to_owned()).collect()
    }

    /// Runs the handler for the envelope's type; an unknown type is rejected.
    pub async fn dispatch(&self, env: Envelope) -> Result<(), HandlerError> {
        match self.routes.get(env.kind.as_str()) {
            // A panicking handler is a failed attempt, not a lost delivery:
            // the message is handed back (and dead-lettered at the limit)
            // instead of holding a prefetch slot unacked for ever.
            Some(route) => {
                use futures::FutureExt;
                std::panic::AssertUnwindSafe(route(env))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|panic| {
                        Err(HandlerError::Retry(format!(
                            "the handler panicked: {}",
                            crate::error::panic_message(panic.as_ref())
                        )))
                    })
            }
            None if self.retired.contains(&env.kind.as_str()) => Ok(()),
            None => Err(HandlerError::Reject(format!(
                "{} has no handler for event type `{}`",
                self.queue, env.kind
            ))),
        }
    }
}

/// The bus both implementations provide.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes events to `duikou.events` and waits for the broker to confirm
    /// each; the result at index i is event i's. Unroutable is a failure.
    async fn publish(&self, events: &[Envelope]) -> Vec<Result<(), BusError>>;

    /// Declares the router's queue (with its dead-letter queue and bindings)
    /// and consumes it until shutdown.
    async fn subscribe(&self, router: EventRouter) -> Result<(), BusError>;

    /// Declares the router's queue (with its dead-letter queue and
    /// bindings) without consuming it, so that events published before its
    /// service first starts wait there (`duikou migrate`). The in-process
    /// bus keeps no queues between runs: nothing to declare.
    async fn declare(&self, _router: &EventRouter) -> Result<(), BusError> {
        Ok(())
    }

    /// Serves the router's RPC methods as a competing consumer of `<service>.rpc`.
    async fn serve(&self, router: RpcRouter) -> Result<(), BusError>;

    /// Sends one RPC and waits for the reply until `deadline`.
    async fn call_raw(
        &self,
        service: &str,
        method: &str,
        body: serde_json::Value,
        deadline: Duration,
    ) -> Result<serde_json::Value, AppError>;

    /// The bus's configuration.
    fn config(&self) -> &BusConfig;

    /// Stops taking deliveries and waits for handlers in flight to finish.
    async fn shutdown(&self);

    /// Closes the connection; call after [`Bus::shutdown`] and after the
    /// outbox relays' last round.
    async fn close(&self) {}

    /// Names of the queues this bus declared (tests delete them afterwards).
    fn declared_queues(&self) -> Vec<String> {
        Vec::new()
    }

    /// Tells every consumer to stop without waiting (usable where nothing
    /// can await, e.g. in `Drop`): no consumer re-declares its queue after
    /// this, so the queues can be deleted for good.
    fn halt(&self) {}
}

tokio::task_local! {
    /// Set for a caller that waits out an RPC's deadline whatever (see
    /// [`patiently`]).
    static PATIENT: ();
}

/// Runs `work` as a patient caller: its RPCs wait out their deadline even
/// to a part that let an earlier call run out and that nothing consumes
/// for now, instead of failing at once. For background work (a sweeper
/// deciding what a silence means), which should not take a part
/// restarting for a part gone.
pub async fn patiently<F: std::future::Future>(work: F) -> F::Output {
    PATIENT.scope((), work).await
}

/// Whether the current task is a patient caller ([`patiently`]).
pub(crate) fn patient() -> bool {
    PATIENT.try_with(|()| ()).is_ok()
}

/// The RPC being served: when its caller gives up on it, and the call's
/// own id (its correlation id over RabbitMQ) while nothing made serving it
/// has been recorded under it yet ([`call_to_record`]).
struct Serving {
    gives_up: std::time::Instant,
    call: std::cell::Cell<Option<uuid::Uuid>>,
}

tokio::task_local! {
    static CALLER_GIVES_UP: Serving;
}

/// Runs `work`, an RPC's handler, knowing when its caller gives up: the
/// calls it makes itself ([`call`]) end before that, so that their failure
/// — which names the part that did not answer — reaches the caller, not
/// the caller's own "did not answer in time" (a payout run asking a booking
/// that was down made the admin wait 5 s for the vaguer message).
///
/// `call`, the call's id, is what a create made serving it is recorded
/// under ([`crate::db::commit_once_in_time`]): a request redelivered after
/// the part serving it stopped between its commit and its answer is then
/// refused, not made twice.
pub async fn serving_until<F: std::future::Future>(
    caller_gives_up: Option<std::time::Instant>,
    call: Option<uuid::Uuid>,
    work: F,
) -> F::Output {
    match caller_gives_up {
        Some(gives_up) => {
            let serving = Serving {
                gives_up,
                call: std::cell::Cell::new(call),
            };
            CALLER_GIVES_UP.scope(serving, work).await
        }
        None => work.await,
    }
}

/// The id of the RPC being served, while nothing made serving it has been
/// recorded under it ([`crate::db::commit_once_in_time`] records the
/// first, then [`recorded_call`]).
pub(crate) fn call_to_record() -> Option<uuid::Uuid> {
    CALLER_GIVES_UP.try_with(|s| s.call.get()).ok().flatten()
}

/// The RPC being served has a change recorded under its id: its later
/// changes are not recorded again.
pub(crate) fn recorded_call() {
    let _ = CALLER_GIVES_UP.try_with(|s| s.call.set(None));
}

/// What a call made while serving an RPC leaves its caller to answer in.
const ANSWER_IN: Duration = Duration::from_millis(500);

/// `own`, or less while serving an RPC whose caller gives up sooner (with
/// [`ANSWER_IN`] left for the answer): how long work done before answering
/// may take — after a commit, so that the answer still reaches its caller
/// and is not taken for a failure (SERVICE_UNAVAILABLE for a change made).
pub fn within_callers_wait(own: Duration) -> Duration {
    CALLER_GIVES_UP
        .try_with(|s| {
            s.gives_up
                .saturating_duration_since(std::time::Instant::now())
        })
        .map_or(own, |left| own.min(left.saturating_sub(ANSWER_IN)))
}

/// While serving an RPC, refuses a change about to commit once its caller
/// has given up or is within [`ANSWER_IN`] of it: the caller was (or will
/// be) told the part "did not answer in time; try again", and a change
/// landing after that answer is one its client believes undone — an
/// admin's calendar change told it failed was applied over the change the
/// admin made next. SERVICE_UNAVAILABLE, counted in
/// `duikou_rpc_changes_refused_late_total`; outside an RPC (an event's
/// handler, a sweeper) always Ok. For changes a retry cannot find by a
/// key: one kept by its idempotency key is better committed late, its
/// retry answered from it.
pub fn caller_still_waits() -> Result<(), AppError> {
    match CALLER_GIVES_UP.try_with(|s| s.gives_up) {
        Ok(at) if std::time::Instant::now() + ANSWER_IN >= at => {
            metrics::counter!("duikou_rpc_changes_refused_late_total").increment(1);
            tracing::warn!("a change was ready only as its caller gave up on it; not made");
            Err(AppError::new(
                ErrorCode::ServiceUnavailable,
                "this took too long and was not done: try again",
            ))
        }
        _ => Ok(()),
    }
}

/// The deadline of a call made now: the bus's, or less while serving an
/// RPC whose caller gives up sooner.
fn deadline_now(own: Duration) -> Duration {
    match CALLER_GIVES_UP.try_with(|_| ()) {
        Ok(()) => within_callers_wait(own).max(Duration::from_millis(100)),
        Err(_) => own,
    }
}

/// Sends a typed RPC with the bus's default deadline (less while serving
/// an RPC whose caller gives up sooner: [`serving_until`]).
pub async fn call<R: Rpc>(bus: &dyn Bus, request: &R) -> Result<R::Reply, AppError> {
    call_within(bus, request, deadline_now(bus.config().rpc_timeout)).await
}

/// Sends a typed RPC with an explicit deadline.
pub async fn call_within<R: Rpc>(
    bus: &dyn Bus,
    request: &R,
    deadline: Duration,
) -> Result<R::Reply, AppError> {
    let body = serde_json::to_value(request).map_err(AppError::internal)?;
    let reply = call_value(bus, (R::SERVICE, R::METHOD), body, deadline).await?;
    reply_as::<R>(reply)
}

/// An RPC by its service and method, its request and reply as JSON,
/// measured (`duikou_rpc_seconds`, `duikou_rpc_total`) as every call is.
pub async fn call_value(
    bus: &dyn Bus,
    (service, method): (&'static str, &'static str),
    body: serde_json::Value,
    deadline: Duration,
) -> Result<serde_json::Value, AppError> {
    let started = std::time::Instant::now();
    let reply = bus.call_raw(service, method, body, deadline).await;
    let outcome = match &reply {
        Ok(_) => "ok",
        Err(e) => e.code.as_str(),
    };
    metrics::histogram!("duikou_rpc_seconds", "service" => service, "method" => method)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("duikou_rpc_total", "service" => service, "method" => method, "outcome" => outcome)
        .increment(1);
    reply
}

/// `R`'s reply read from the JSON a service answered.
pub fn reply_as<R: Rpc>(reply: serde_json::Value) -> Result<R::Reply, AppError> {
    serde_json::from_value(reply).map_err(|e| {
        AppError::internal(format!(
            "{} replied to {} with an unexpected shape: {e}",
            R::SERVICE,
            R::METHOD
        ))
    })
}

/// What a caller is told when a service did not answer in time.
const UNANSWERED: &str = "a part of Duikou did not answer in time; try again shortly";

/// The error a caller sees when a service did not answer in time (which
/// one is logged, not told: service names are internal).
pub(crate) fn rpc_timeout(service: &str, method: &str, deadline: Duration) -> AppError {
    tracing::warn!(
        service,
        rpc = method,
        deadline_ms = deadline.as_millis(),
        "RPC deadline passed"
    );
    AppError::new(ErrorCode::ServiceUnavailable, UNANSWERED)
}

/// Whether `e` says a service took the request and did not answer in time
/// ([`rpc_timeout`]): unlike a part not running, what it asked may have
/// been done — the service committing it and stopping before its answer.
pub fn is_unanswered(e: &AppError) -> bool {
    e.code == ErrorCode::ServiceUnavailable && e.message == UNANSWERED
}

/// Backoff before a failed delivery is handed back: grows with the attempt.
pub(crate) fn retry_delay(attempt: u32) -> Duration {
    Duration::from_millis(50u64.saturating_mul(1 << attempt.min(6)))
}

#[cfg(test)]
mod tests {
    use super::{EventRouter, HandlerError};
    use crate::envelope::Envelope;
    use crate::events::HoldReleased;
    use crate::ids::BookingId;
    use crate::rpc::RpcRouter;

    #[tokio::test]
    async fn a_panicking_event_handler_is_a_failed_attempt() {
        let router = EventRouter::new("test").on::<HoldReleased, _, _>(|_, ev| async move {
            assert!(ev.expired, "not what this handler expects");
            Ok(())
        });
        let booking = BookingId::new();
        let ev = HoldReleased {
            booking_id: booking,
            expired: false,
        };
        match router.dispatch(Envelope::new("test", booking.0, &ev)).await {
            Err(HandlerError::Retry(why)) => assert!(why.contains("panicked"), "{why}"),
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Boom;

    impl crate::rpc::Rpc for Boom {
        const SERVICE: &'static str = "test";
        const METHOD: &'static str = "boom";
        type Reply = ();
    }

    #[tokio::test]
    async fn a_panicking_rpc_handler_answers_internal() {
        let router = RpcRouter::new("test").route::<Boom, _, _>(|_| async {
            let nothing: Option<()> = std::hint::black_box(None);
            nothing.expect("a bug");
            Ok(())
        });
        let answer = router.dispatch("boom", serde_json::Value::Null).await;
        let err = answer.expect_err("a panic is an error");
        assert_eq!(err.code, crate::ErrorCode::Internal, "{err:?}");
    }
}

//! The RabbitMQ bus (lapin).
//!
//! - Events: topic exchange `duikou.events`; one durable quorum queue per
//!   service with `x-delivery-limit` and (at-most-once) dead-lettering into
//!   `<queue>.dead`; manual ack after the handler returned (its transaction
//!   committed), nack with requeue on a retryable error, bounded prefetch.
//! - Publishing: publisher confirms with `mandatory`; a returned message is a
//!   failure (no queue bound), so the outbox keeps the row and tries again.
//!   Announcements ([`crate::events::BROADCASTS`]) are not mandatory: with
//!   no one listening they are dropped.
//! - RPC: the default exchange, queue `<service>.rpc` shared by competing
//!   consumers, replies through direct reply-to (`amq.rabbitmq.reply-to`).
//! - Recovery: the kernel's own. A lost connection is replaced by a new one
//!   on first use; channels opened on an old connection are replaced too; each
//!   consumer is supervised and sets itself up again (queue, bindings, QoS)
//!   with backoff. Deliveries whose ack was lost come again and the inbox
//!   skips them. (lapin's automatic recovery can stay "reconnecting" for good
//!   after `rabbitmqctl stop_app; start_app`, so it is not used.)

use super::{
    Bus, BusConfig, BusError, DEAD_REASON_HEADER, EventRouter, HandlerError, retry_delay,
    rpc_timeout,
};
use crate::envelope::Envelope;
use crate::error::{AppError, ErrorCode};
use crate::rpc::RpcRouter;
use async_trait::async_trait;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, info_span, warn};
use uuid::Uuid;

const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";
const PERSISTENT: u8 = 2;

/// What a pending RPC call is told: the reply, or that the broker returned
/// the request because no queue took it.
enum Answer {
    Reply(Vec<u8>),
    Returned,
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Answer>>>>;

/// The RabbitMQ implementation of [`Bus`].
pub struct AmqpBus {
    inner: Arc<Inner>,
    pending: Pending,
    cancel: CancellationToken,
    /// Stops the listener of RPC replies: at [`Bus::close`], not when
    /// consuming stops — sweepers and handlers finishing still call other
    /// parts, and a call whose answer nobody read ran out its deadline (a
    /// booking replica stopping took a silent payment for "no payment in
    /// flight" and expired bookings being paid).
    replies: CancellationToken,
    tracker: TaskTracker,
    declared: Mutex<Vec<String>>,
    /// Services whose last RPC from here ran out its deadline unanswered,
    /// with the last look at their queue: until one answers again, a call
    /// (not a patient one: [`super::patiently`]) first looks whether
    /// anything consumes their queue, and fails at once if nothing does.
    unanswered: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Look>>>>>,
}

/// What consumers and handlers share: the current connection and the
/// channels that are replaced when they die.
struct Inner {
    url: String,
    config: BusConfig,
    /// The current connection; replaced when it is no longer connected.
    connection: tokio::sync::Mutex<Arc<Connection>>,
    /// Sends RPC replies (no confirm awaited, nothing mandatory).
    publisher: tokio::sync::Mutex<Channel>,
    /// Confirming channels for events and dead letters, each lent to one
    /// publish at a time: a `basic.return` then belongs to that publish's
    /// batch and no other task's (lapin hands a return to whichever pending
    /// confirmation a bulk ack completes first).
    confirming: Mutex<Vec<Channel>>,
    /// Sends RPC requests (with confirms) and receives replies (direct reply-to).
    rpc_channel: tokio::sync::Mutex<Channel>,
}

/// (messages ready, consumers) of `queue` by a passive declare, which only
/// looks; None when there is no such queue (which closes the channel).
async fn counts_on(channel: &Channel, queue: &str) -> Option<(u32, u32)> {
    channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .ok()
        .map(|q| (q.message_count(), q.consumer_count()))
}

/// A look at a service's RPC queue: when, and whether it was there with
/// nobody consuming it (not when consumers were there, the queue was
/// missing — the broker returns the request at once — or the broker did
/// not say).
#[derive(Clone, Copy)]
struct Look {
    at: Instant,
    nobody: bool,
}

/// How long a look at a queue stands for the calls that follow it: one
/// look for a burst of calls, not one each.
const LOOK_STANDS: Duration = Duration::from_millis(250);

fn usable(channel: &Channel) -> bool {
    let status = channel.status();
    status.connected() || status.initializing()
}

/// How long the broker may take to open a connection or channel, or to
/// confirm a batch, before the attempt counts as failed. Without a bound, a
/// broker that accepts the socket mid-restart but never finishes the
/// handshake (or a confirm lost with its channel) would hold the caller —
/// an outbox relay holding its rows' locks — forever.
const BROKER_DEADLINE: Duration = Duration::from_secs(10);

async fn open_connection(url: &str) -> Result<Connection, BusError> {
    opening(url).await.map_err(Opening::into_error)
}

/// Why a connection could not be opened.
enum Opening {
    /// The broker is not there (yet): wait for it.
    Away(BusError),
    /// The broker answered and refused: a wrong user, password or virtual
    /// host, which waiting does not mend (unless the broker is still
    /// recovering its virtual hosts).
    Refused(String),
}

impl Opening {
    fn into_error(self) -> BusError {
        match self {
            Opening::Away(e) => e,
            Opening::Refused(reason) => BusError::Broker(format!(
                "RabbitMQ refused the connection: {reason} (check the AMQP URL's user, \
                 password and virtual host)"
            )),
        }
    }
}

/// How long a broker may go on refusing the first connection before
/// Duikou stops waiting and says why.
const REFUSED_FOR: Duration = Duration::from_secs(15);

async fn opening(url: &str) -> Result<Connection, Opening> {
    let properties = ConnectionProperties::default().with_connection_name("duikou".into());
    match tokio::time::timeout(BROKER_DEADLINE, Connection::connect(url, properties)).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => match e.kind() {
            lapin::ErrorKind::ProtocolError(refusal) => {
                Err(Opening::Refused(refusal.get_message().to_string()))
            }
            lapin::ErrorKind::AuthProviderError(reason) => Err(Opening::Refused(reason.clone())),
            _ => Err(Opening::Away(e.into())),
        },
        Err(_) => Err(Opening::Away(BusError::Broker(format!(
            "RabbitMQ did not complete the handshake in {} s",
            BROKER_DEADLINE.as_secs()
        )))),
    }
}

impl Inner {
    /// The current connection, or a new one if it was lost. Fails fast when
    /// the broker is away; callers retry with their own backoff.
    async fn connection(&self) -> Result<Arc<Connection>, BusError> {
        let mut current = self.connection.lock().await;
        if !current.status().connected() {
            *current = Arc::new(open_connection(&self.url).await?);
            tracing::info!("connected to RabbitMQ again");
        }
        Ok(current.clone())
    }

    async fn confirming_channel(&self) -> Result<Channel, BusError> {
        self.open_channel(true).await
    }

    /// A new channel, in confirm mode if `confirming`.
    async fn open_channel(&self, confirming: bool) -> Result<Channel, BusError> {
        let open = async {
            let channel = self.connection().await?.create_channel().await?;
            if confirming {
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await?;
            }
            Ok(channel)
        };
        tokio::time::timeout(BROKER_DEADLINE, open)
            .await
            .unwrap_or_else(|_| {
                Err(BusError::Broker(
                    "RabbitMQ did not open a channel in time".into(),
                ))
            })
    }

    /// The reply channel, replaced if it was closed. Not in confirm mode:
    /// replies wait for no confirm, and lapin keeps each confirm dropped
    /// before the broker's ack came until `wait_for_confirms`, which nothing
    /// calls — on a confirming channel every reply served grew the process
    /// until the channel closed.
    async fn publisher(&self) -> Result<Channel, BusError> {
        let mut channel = self.publisher.lock().await;
        if !usable(&channel) {
            *channel = self.open_channel(false).await?;
        }
        Ok(channel.clone())
    }

    /// A confirming channel of this caller's alone until it is dropped
    /// (then it goes back to the pool, if still usable).
    async fn lend_confirming(&self) -> Result<Lent<'_>, BusError> {
        let pooled = {
            let mut pool = lock(&self.confirming);
            std::iter::from_fn(|| pool.pop()).find(usable)
        };
        let channel = match pooled {
            Some(c) => c,
            None => self.confirming_channel().await?,
        };
        Ok(Lent {
            pool: &self.confirming,
            channel,
            discarded: false,
        })
    }
}

/// A pooled confirming channel, returned to its pool on drop.
struct Lent<'a> {
    pool: &'a Mutex<Vec<Channel>>,
    channel: Channel,
    /// Not to be lent again (its confirms stopped coming).
    discarded: bool,
}

impl std::ops::Deref for Lent<'_> {
    type Target = Channel;
    fn deref(&self) -> &Channel {
        &self.channel
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if !self.discarded && usable(&self.channel) {
            lock(self.pool).push(self.channel.clone());
        }
    }
}

impl AmqpBus {
    /// Whether the channel RPC replies go out on is in confirm mode (it
    /// must not be: see `Inner::publisher`). For tests.
    #[doc(hidden)]
    pub async fn replies_confirmed(&self) -> Result<bool, BusError> {
        Ok(self.inner.publisher().await?.status().confirm())
    }

    /// Closes the reply channel, as a channel error would: the next reply
    /// opens another. For tests.
    #[doc(hidden)]
    pub async fn close_reply_channel(&self) {
        let channel = self.inner.publisher.lock().await.clone();
        let _ = channel.close(200, "test".into()).await;
    }

    /// Connects (retrying until the broker answers), declares the events
    /// exchange and starts the reply listener.
    pub async fn connect(url: &str, config: BusConfig) -> Result<AmqpBus, BusError> {
        let mut backoff = Duration::from_millis(100);
        // A broker that is not up yet is waited for; one that keeps
        // refusing (wrong credentials or virtual host) is an error after
        // REFUSED_FOR, not a hang.
        let mut refused_since: Option<Instant> = None;
        // lapin reports a URL it cannot read as an I/O error, which would
        // be waited out as a broker that is away, for ever.
        url.parse::<lapin::uri::AMQPUri>()
            .map_err(|reason| BusError::Broker(format!("the AMQP URL cannot be read: {reason}")))?;
        let connection = loop {
            match opening(url).await {
                Ok(c) => break c,
                Err(Opening::Away(e)) => {
                    refused_since = None;
                    warn!(error = %e, "RabbitMQ does not answer yet; retrying");
                }
                Err(Opening::Refused(reason)) => {
                    let since = *refused_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= REFUSED_FOR {
                        return Err(Opening::Refused(reason).into_error());
                    }
                    warn!(%reason, "RabbitMQ refuses the connection; retrying a little");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        };
        // The reply channel (`Inner::publisher`), which confirms nothing,
        // and the RPC channel; bounded, as every wait on the broker is (one
        // that completed the handshake and then went silent).
        let channels = async {
            let publisher = connection.create_channel().await?;
            declare_exchange(&config, &publisher).await?;
            let rpc_channel = connection.create_channel().await?;
            rpc_channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            Ok::<_, BusError>((publisher, rpc_channel))
        };
        let (publisher, rpc_channel) = tokio::time::timeout(BROKER_DEADLINE, channels)
            .await
            .unwrap_or_else(|_| {
                Err(BusError::Broker(
                    "RabbitMQ did not open the bus's channels in time".into(),
                ))
            })?;
        let bus = AmqpBus {
            inner: Arc::new(Inner {
                url: url.to_owned(),
                config,
                connection: tokio::sync::Mutex::new(Arc::new(connection)),
                publisher: tokio::sync::Mutex::new(publisher),
                confirming: Mutex::default(),
                rpc_channel: tokio::sync::Mutex::new(rpc_channel.clone()),
            }),
            pending: Arc::default(),
            cancel: CancellationToken::new(),
            replies: CancellationToken::new(),
            tracker: TaskTracker::new(),
            declared: Mutex::default(),
            unanswered: Mutex::default(),
        };
        tokio::time::timeout(BROKER_DEADLINE, bus.listen_for_replies(rpc_channel))
            .await
            .unwrap_or_else(|_| {
                Err(BusError::Broker(
                    "RabbitMQ did not start the bus's reply consumer in time".into(),
                ))
            })?;
        Ok(bus)
    }

    /// Whether nothing consumes `service`'s RPC queue `queue`, for a call
    /// that has `within` to spare: one look at a time per service, on a
    /// channel of its own, standing [`LOOK_STANDS`] for the calls after
    /// it. False at once when the service answered its last call (or has
    /// no queue): nothing to look at.
    async fn nobody_consumes(&self, service: &str, queue: &str, within: Duration) -> bool {
        let Some(last) = lock(&self.unanswered).get(service).cloned() else {
            return false;
        };
        // All within `within`, the wait for another caller's look too (one
        // dropped half-way leaves no answer behind).
        let started = Instant::now();
        let Ok(mut last) = tokio::time::timeout(within, last.lock()).await else {
            return false;
        };
        let within = within.saturating_sub(started.elapsed());
        if let Some(look) = *last
            && look.at.elapsed() < LOOK_STANDS
        {
            return look.nobody;
        }
        let (inner, queue) = (self.inner.clone(), queue.to_owned());
        // A task of its own: the channel is closed whether or not the
        // caller still waits for the answer.
        let look = tokio::spawn(async move {
            let channel = inner.open_channel(false).await.ok()?;
            let counts = tokio::time::timeout(BROKER_DEADLINE, counts_on(&channel, &queue))
                .await
                .ok();
            if usable(&channel) {
                let _ = tokio::time::timeout(BROKER_DEADLINE, channel.close(200, "looked".into()))
                    .await;
            }
            counts
        });
        let nobody = match tokio::time::timeout(within, look).await {
            Ok(Ok(Some(Some((_, consumers))))) => consumers == 0,
            Ok(Ok(Some(None))) => {
                // No such queue: the broker returns every request at once,
                // with nothing to look at (each look would close a channel,
                // and lapin logs that as an error).
                lock(&self.unanswered).remove(service);
                false
            }
            _ => false,
        };
        *last = Some(Look {
            at: Instant::now(),
            nobody,
        });
        nobody
    }

    /// The RPC channel, replaced (with a new reply listener) if it was closed.
    async fn rpc_channel(&self) -> Result<Channel, BusError> {
        let mut channel = self.inner.rpc_channel.lock().await;
        if !usable(&channel) {
            let fresh = self.inner.confirming_channel().await?;
            self.listen_for_replies(fresh.clone()).await?;
            *channel = fresh;
        }
        Ok(channel.clone())
    }

    /// Direct reply-to: consume the pseudo-queue with no-ack on the channel
    /// that publishes the requests, before the first request.
    async fn listen_for_replies(&self, channel: Channel) -> Result<(), BusError> {
        let mut replies = channel
            .basic_consume(
                DIRECT_REPLY_TO.into(),
                "duikou-rpc-replies".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let pending = self.pending.clone();
        let cancel = self.replies.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = replies.next() => next,
                    () = cancel.cancelled() => break,
                };
                match next {
                    Some(Ok(delivery)) => {
                        let Some(corr) = delivery.properties.correlation_id() else {
                            continue;
                        };
                        let waiter = lock(&pending).remove(corr.as_str());
                        if let Some(tx) = waiter {
                            let _ = tx.send(Answer::Reply(delivery.data));
                        }
                    }
                    // The next call replaces the channel and this listener.
                    Some(Err(e)) => {
                        debug!(error = %e, "RPC reply channel closed");
                        break;
                    }
                    None => break,
                }
            }
        });
        Ok(())
    }

    /// How `router`'s queue is set up on a channel — its queue (durable
    /// with a dead-letter queue, or this connection's own), bindings, and
    /// retired bindings removed — for [`Bus::subscribe`] and [`Bus::declare`]
    /// alike. A durable queue is remembered for deletion by tests.
    fn declaring(&self, router: &EventRouter) -> Declare {
        let config = self.inner.config.clone();
        let ephemeral = router.is_ephemeral();
        if !ephemeral {
            lock(&self.declared).extend([
                config.queue(router.queue()),
                config.dead_queue(router.queue()),
            ]);
        }
        let (name, bindings) = (router.queue().to_owned(), router.bindings());
        let retired = router.retired_bindings();
        Arc::new(move |channel| {
            let (config, name, bindings) = (config.clone(), name.clone(), bindings.clone());
            let retired = retired.clone();
            Box::pin(async move {
                if ephemeral {
                    declare_ephemeral_queue(&config, &channel, &name, &bindings).await
                } else {
                    declare_event_queue(&config, &channel, &name, &bindings).await?;
                    unbind(&config, &channel, &config.queue(&name), &retired).await
                }
            })
        })
    }

    fn stopping(&self) -> Consuming {
        Consuming {
            cancel: self.cancel.clone(),
            tracker: self.tracker.clone(),
        }
    }
}

/// A queue of this connection only, deleted with it (pushes to clients).
/// Declares `duikou.events` (durable topic; declaring it again is a no-op).
async fn declare_exchange(config: &BusConfig, channel: &Channel) -> Result<(), BusError> {
    channel
        .exchange_declare(
            config.exchange().as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

async fn declare_ephemeral_queue(
    config: &BusConfig,
    channel: &Channel,
    queue: &str,
    bindings: &[String],
) -> Result<(), BusError> {
    let name = config.queue(queue);
    let options = QueueDeclareOptions {
        durable: false,
        exclusive: true,
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(name.as_str().into(), options, FieldTable::default())
        .await?;
    bind(config, channel, &name, bindings).await
}

async fn bind(
    config: &BusConfig,
    channel: &Channel,
    name: &str,
    bindings: &[String],
) -> Result<(), BusError> {
    // Again at every (re)binding: a broker that lost its definitions (reset,
    // or a new node without the old data) would refuse the bindings for
    // ever otherwise, and the relays' publishes with them.
    declare_exchange(config, channel).await?;
    for key in bindings {
        channel
            .queue_bind(
                name.into(),
                config.exchange().as_str().into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// Removes bindings an earlier version declared (a queue keeps them until
/// told; removing one that is not there is no error).
async fn unbind(
    config: &BusConfig,
    channel: &Channel,
    name: &str,
    retired: &[String],
) -> Result<(), BusError> {
    for key in retired {
        channel
            .queue_unbind(
                name.into(),
                config.exchange().as_str().into(),
                key.as_str().into(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// Declares `<queue>.dead`, then `<queue>` (quorum, delivery limit,
/// dead-lettering into `<queue>.dead`) and its bindings.
///
/// Dead-lettering is the quorum queue's default (at-most-once) strategy: the
/// at-least-once strategy crashes RabbitMQ 3.10 after `stop_app`/`start_app`
/// (its `rabbit_fifo_dlx_sup` is not restarted; declaring such a queue then
/// fails with INTERNAL_ERROR). See docs/messaging.md.
async fn declare_event_queue(
    config: &BusConfig,
    channel: &Channel,
    queue: &str,
    bindings: &[String],
) -> Result<(), BusError> {
    let name = config.queue(queue);
    let dead = config.dead_queue(queue);
    let mut dead_args = FieldTable::default();
    dead_args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            dead.as_str().into(),
            QueueDeclareOptions::durable(),
            dead_args,
        )
        .await?;

    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongInt(i32::try_from(config.delivery_limit).unwrap_or(i32::MAX)),
    );
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(dead.as_str().into()),
    );
    channel
        .queue_declare(name.as_str().into(), QueueDeclareOptions::durable(), args)
        .await?;
    bind(config, channel, &name, bindings).await
}

#[derive(Clone)]
struct Consuming {
    cancel: CancellationToken,
    tracker: TaskTracker,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned map of waiters is still a valid map.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The AMQP header that carries the gateway's `x-request-id` with an RPC.
const REQUEST_ID_HEADER: &str = "x-request-id";
/// When the caller of an RPC gives up (Unix milliseconds): past it, the
/// request is not run (the caller was told SERVICE_UNAVAILABLE already).
/// Hosts' clocks are assumed to agree to well under an RPC's deadline.
const DEADLINE_HEADER: &str = "x-deadline-ms";

/// Publishes `events` on `publisher` and collects their confirms in order
/// (pipelined: all sent, then all awaited).
async fn publish_confirmed(
    publisher: &Channel,
    exchange: &str,
    events: &[Envelope],
) -> Vec<Result<(), BusError>> {
    let mut confirms = Vec::with_capacity(events.len());
    for env in events {
        let sent = publisher
            .basic_publish(
                exchange.into(),
                env.kind.as_str().into(),
                BasicPublishOptions {
                    // Announcements go to whoever listens, or nowhere.
                    mandatory: !crate::events::is_broadcast(&env.kind),
                    ..BasicPublishOptions::default()
                },
                &env.to_bytes(),
                envelope_properties(env),
            )
            .await;
        confirms.push(sent);
    }
    let mut results = Vec::with_capacity(events.len());
    // Routing keys the broker returned in this batch, whichever
    // confirmation lapin attached each return to.
    let mut returned = std::collections::HashSet::new();
    for (env, sent) in events.iter().zip(confirms) {
        let result = match sent {
            Ok(confirm) => match confirm.await {
                Ok(c) => {
                    // A nack may carry another publish's return too.
                    if let Confirmation::Ack(Some(r)) | Confirmation::Nack(Some(r)) = &c {
                        returned.insert(r.delivery.routing_key.to_string());
                    }
                    confirmation_result(&env.kind, c)
                }
                Err(e) => Err(e.into()),
            },
            Err(e) => Err(e.into()),
        };
        results.push(result);
    }
    // An event whose routing key was returned had no queue either (same
    // key, same bindings): unroutable, even if its own confirmation
    // came back clean.
    for (env, result) in events.iter().zip(results.iter_mut()) {
        if result.is_ok() && returned.contains(&env.kind) {
            *result = Err(BusError::Unroutable(env.kind.clone()));
        }
    }
    results
}

fn header_str(props: &BasicProperties, key: &str) -> Option<String> {
    let headers = props.headers().as_ref()?;
    match headers.inner().get(key)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

fn delivery_count(props: &BasicProperties) -> u32 {
    let Some(headers) = props.headers().as_ref() else {
        return 0;
    };
    match headers.inner().get("x-delivery-count") {
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
        Some(AMQPValue::LongInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
        Some(AMQPValue::ShortInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
        Some(AMQPValue::LongUInt(n)) => *n,
        _ => 0,
    }
}

fn envelope_properties(env: &Envelope) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        "source".into(),
        AMQPValue::LongString(env.source.as_str().into()),
    );
    if let Some(c) = env.causation_id {
        headers.insert(
            "causation_id".into(),
            AMQPValue::LongString(c.to_string().into()),
        );
    }
    BasicProperties::default()
        .with_message_id(env.id.to_string().into())
        .with_type(env.kind.as_str().into())
        .with_correlation_id(env.correlation_id.to_string().into())
        .with_timestamp(u64::try_from(env.occurred_at.timestamp()).unwrap_or(0))
        .with_content_type("application/json".into())
        .with_delivery_mode(PERSISTENT)
        .with_headers(headers)
}

/// The outcome of one publish. lapin may hand a `basic.return` to another
/// publish's confirmation (a bulk ack completes several at once, in no
/// set order), so a return counts only if it carries our routing key; a
/// batch also checks the returns of its siblings (see `publish`).
fn confirmation_result(key: &str, confirmation: Confirmation) -> Result<(), BusError> {
    match confirmation {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(returned)) if returned.delivery.routing_key.as_str() == key => {
            Err(BusError::Unroutable(key.to_owned()))
        }
        Confirmation::Ack(Some(_)) => Ok(()),
        Confirmation::Nack(_) => Err(BusError::Nacked),
    }
}

/// Acks `delivery`: true when it went out on a live channel. Bounded:
/// lapin 4.12 never settles an ack handed over in the moment the
/// connection dies (the serial broker-restart test caught handlers waiting
/// on one for ever, which held up shutdown). An ack that did not go out is
/// harmless: the message comes again and the inbox skips it.
async fn ack(delivery: &Delivery) -> bool {
    let settled = delivery.ack(BasicAckOptions::default());
    matches!(
        tokio::time::timeout(BROKER_DEADLINE, settled).await,
        Ok(Ok(true))
    )
}

/// Hands `delivery` back to the queue, bounded like [`ack`].
async fn requeue(delivery: &Delivery) {
    let settled = delivery.nack(BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    });
    let _ = tokio::time::timeout(BROKER_DEADLINE, settled).await;
}

/// Dead-letters a delivery with the reason in a header, then acks it; if the
/// dead letter cannot be stored the delivery is requeued instead.
async fn dead_letter(inner: &Inner, dead_queue: &str, delivery: &Delivery, reason: &str) {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    headers.insert(
        DEAD_REASON_HEADER.into(),
        AMQPValue::LongString(reason.into()),
    );
    headers.insert(
        "x-duikou-routing-key".into(),
        AMQPValue::LongString(delivery.routing_key.as_str().into()),
    );
    let properties = delivery.properties.clone().with_headers(headers);
    let late = || BusError::Broker("the dead letter was not confirmed in time".into());
    let stored = match tokio::time::timeout(BROKER_DEADLINE, inner.lend_confirming()).await {
        Ok(Ok(mut channel)) => {
            let sent = tokio::time::timeout(BROKER_DEADLINE, async {
                channel
                    .basic_publish(
                        "".into(),
                        dead_queue.into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..BasicPublishOptions::default()
                        },
                        &delivery.data,
                        properties,
                    )
                    .await?
                    .await
                    .map_err(BusError::from)
                    .and_then(|c| confirmation_result(dead_queue, c))
            })
            .await;
            sent.unwrap_or_else(|_| {
                // Its confirm is still owed: lent again, it could take a
                // later publish's return with it (as in `publish`).
                channel.discarded = true;
                Err(late())
            })
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(late()),
    };
    match stored {
        Ok(()) => {
            warn!(reason, queue = dead_queue, "dead-lettered a message");
            ack(delivery).await;
        }
        Err(e) => {
            error!(error = %e, "could not dead-letter; requeueing");
            requeue(delivery).await;
        }
    }
}

/// Gives up on a delivery that can never be handled: dead-letters it, or,
/// from an [ephemeral](EventRouter::ephemeral) queue, which has no
/// dead-letter queue (its messages are copies for one process's pushes),
/// drops it with a warning — handing it back would bring it again at once,
/// for ever.
async fn give_up(inner: &Inner, router: &EventRouter, delivery: &Delivery, reason: &str) {
    if router.is_ephemeral() {
        warn!(
            reason,
            queue = router.queue(),
            "dropped a message no handler can take"
        );
        ack(delivery).await;
        return;
    }
    dead_letter(
        inner,
        &inner.config.dead_queue(router.queue()),
        delivery,
        reason,
    )
    .await;
}

async fn handle_event(
    inner: &Inner,
    router: &EventRouter,
    delivery: Delivery,
    stop: &CancellationToken,
) {
    let env = match Envelope::from_bytes(&delivery.data) {
        Ok(env) => env,
        Err(e) => {
            let reason = format!("not an event envelope: {e}");
            return give_up(inner, router, &delivery, &reason).await;
        }
    };
    let span =
        info_span!("event", r#type = %env.kind, id = %env.id, correlation_id = %env.correlation_id);
    // The whole handling, ack included, runs in the event's span (a span
    // guard must never be held across an await).
    async move {
        match super::dispatch_patiently(router, env, stop).await {
            Ok(()) => {
                // Ok(false) or an error: the channel died; the message comes again
                // and the inbox skips it.
                if !ack(&delivery).await {
                    debug!("ack lost with the channel; expecting a redelivery");
                }
            }
            // A temporary queue counts no deliveries and has no limit: what
            // fails there (a push handler that panicked) is given up at
            // once rather than handed back for ever.
            Err(HandlerError::Retry(reason) | HandlerError::Unavailable(reason))
                if router.is_ephemeral() =>
            {
                give_up(inner, router, &delivery, &reason).await;
            }
            Err(HandlerError::Retry(reason) | HandlerError::Unavailable(reason)) => {
                let attempt = delivery_count(&delivery.properties);
                warn!(%reason, attempt, "handler failed; will be redelivered");
                tokio::time::sleep(retry_delay(attempt)).await;
                requeue(&delivery).await;
            }
            Err(HandlerError::Reject(reason)) => {
                give_up(inner, router, &delivery, &reason).await;
            }
        }
    }
    .instrument(span)
    .await
}

async fn handle_rpc(inner: &Inner, router: &RpcRouter, delivery: Delivery) {
    let method = delivery
        .properties
        .kind()
        .as_ref()
        .map(|k| k.to_string())
        .unwrap_or_default();
    let deadline = match delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(DEADLINE_HEADER))
    {
        Some(AMQPValue::LongLongInt(deadline)) => Some(*deadline),
        _ => None,
    };
    // When the caller gives up, on this process's clock.
    let caller_gives_up = deadline.map(|at| {
        let left = at - chrono::Utc::now().timestamp_millis();
        Instant::now() + Duration::from_millis(u64::try_from(left).unwrap_or(0))
    });
    if let Some(deadline) = deadline
        && chrono::Utc::now().timestamp_millis() > deadline
    {
        // The caller has given up and told its client the call failed:
        // running it now would do what the client was told did not happen.
        warn!(service = router.service(), method = %method,
              "an RPC request came past its caller's deadline; not run");
        ack(&delivery).await;
        return;
    }
    let reply: Result<serde_json::Value, AppError> = match serde_json::from_slice(&delivery.data) {
        Ok(body) => {
            let request_id = header_str(&delivery.properties, REQUEST_ID_HEADER);
            let span = info_span!("rpc", service = router.service(), method = %method,
                correlation_id = delivery.properties.correlation_id().as_ref().map_or("-", |c| c.as_str()),
                request_id = request_id.as_deref().unwrap_or("-"));
            // The service's own calls serve the same request, and end
            // before its caller gives up.
            // The call's id, which a redelivered copy of it shares.
            let call_id = delivery
                .properties
                .correlation_id()
                .as_ref()
                .and_then(|c| Uuid::parse_str(c.as_str()).ok());
            let call =
                super::serving_until(caller_gives_up, call_id, router.dispatch(&method, body))
                    .instrument(span);
            crate::telemetry::with_request_id(request_id, call).await
        }
        Err(e) => Err(AppError::bad_input(format!("request is not JSON: {e}"))),
    };
    if let (Some(reply_to), Some(corr)) = (
        delivery.properties.reply_to().clone(),
        delivery.properties.correlation_id().clone(),
    ) {
        let body = serde_json::to_vec(&reply).unwrap_or_default();
        // Replies wait for no confirm: the caller has its deadline anyway.
        let sent = async {
            inner
                .publisher()
                .await?
                .basic_publish(
                    "".into(),
                    reply_to,
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default()
                        .with_correlation_id(corr)
                        .with_content_type("application/json".into()),
                )
                .await
                .map_err(BusError::from)
        };
        // Bounded: a broker blocking publishers (a memory or disk alarm)
        // would otherwise keep this handler's prefetch slot, and shutdown
        // waiting on it, for as long as the alarm lasts.
        let sent = tokio::time::timeout(BROKER_DEADLINE, sent)
            .await
            .unwrap_or_else(|_| Err(BusError::Broker("the reply was not taken in time".into())));
        if let Err(e) = sent {
            warn!(error = %e, "could not send an RPC reply");
        }
    }
    ack(&delivery).await;
}

/// Opens a channel with the prefetch, lets `declare` set up the queue, and
/// starts consuming it.
async fn open_consumer(
    inner: &Inner,
    queue: &str,
    declare: &(
         dyn Fn(Channel) -> futures::future::BoxFuture<'static, Result<(), BusError>> + Send + Sync
     ),
) -> Result<(Channel, lapin::Consumer, String), BusError> {
    // A broker half up (mid-restart) may take a request and never answer;
    // the supervisor's retry needs every step to end.
    let open = async {
        let channel = inner.connection().await?.create_channel().await?;
        channel
            .basic_qos(inner.config.prefetch, BasicQosOptions::default())
            .await?;
        declare(channel.clone()).await?;
        let tag = format!("{queue}-{}", Uuid::now_v7());
        let consumer = channel
            .basic_consume(
                queue.into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok((channel, consumer, tag))
    };
    tokio::time::timeout(BROKER_DEADLINE, open)
        .await
        .unwrap_or_else(|_| {
            Err(BusError::Broker(format!(
                "RabbitMQ did not set up a consumer of {queue} in {} s",
                BROKER_DEADLINE.as_secs()
            )))
        })
}

type Declare =
    Arc<dyn Fn(Channel) -> futures::future::BoxFuture<'static, Result<(), BusError>> + Send + Sync>;

/// Consumes `queue` until shutdown, running `handle` for each delivery as a
/// task (at most `prefetch` at once: the broker sends no more). Supervised:
/// when the channel dies for good (not just a connection recovery), the
/// consumer is set up again on a new channel, and `gap` runs (an
/// [ephemeral](EventRouter::ephemeral) queue's: the queue is new).
async fn consume<F, Fut>(
    inner: Arc<Inner>,
    queue: String,
    (declare, gap, in_order): (Declare, Option<super::GapHook>, bool),
    stop: Consuming,
    handle: F,
) -> Result<(), BusError>
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (mut channel, mut consumer, mut tag) =
        open_consumer(&inner, &queue, declare.as_ref()).await?;
    let tracker = stop.tracker.clone();
    tracker.spawn(async move {
        // Handlers in flight ack on this channel: it must outlive them
        // (dropping the last handle closes it and their acks are lost).
        let handlers = TaskTracker::new();
        let mut backoff = Duration::from_millis(100);
        // A channel closed under the consumer does not always end its
        // stream; look at it now and then, and set up again if it closed.
        let mut watch = tokio::time::interval(Duration::from_secs(1));
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = tokio::select! {
                next = consumer.next() => next,
                _ = watch.tick() => {
                    if usable(&channel) {
                        continue;
                    }
                    // Taken below like a stream that ended.
                    None
                }
                () = stop.cancel.cancelled() => {
                    let cancel = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default());
                    let _ = tokio::time::timeout(BROKER_DEADLINE, cancel).await;
                    handlers.close();
                    handlers.wait().await;
                    // Closed here, waiting for the broker's close-ok: left to
                    // its last handle's drop, lapin forgot the channel while
                    // the broker still answered on it, and logged an ERROR
                    // ("invalid channel: 3") on a clean stop.
                    if usable(&channel) {
                        let close = channel.close(200, "shutdown".into());
                        let _ = tokio::time::timeout(BROKER_DEADLINE, close).await;
                    }
                    break;
                }
            };
            match next {
                Some(Ok(delivery)) => {
                    backoff = Duration::from_millis(100);
                    if in_order {
                        handle(delivery).await;
                    } else {
                        handlers.spawn(handle(delivery));
                    }
                    continue;
                }
                Some(Err(e)) => warn!(queue, error = %e, "consumer channel lost; opening a new one"),
                None => warn!(queue, "consumer stream ended; opening a new one"),
            }
            // Set the consumer up again until it works or we are stopping.
            loop {
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.cancel.cancelled() => {
                        handlers.close();
                        handlers.wait().await;
                        return;
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                match open_consumer(&inner, &queue, declare.as_ref()).await {
                    Ok((c, s, t)) => {
                        (channel, consumer, tag) = (c, s, t);
                        // An ephemeral queue set up again is a new queue:
                        // what was published since the old one went was
                        // never in either (once per loss, when consuming).
                        if let Some(gap) = &gap {
                            warn!(queue, "temporary queue set up again: events were missed");
                            gap();
                        }
                        break;
                    }
                    Err(e) => error!(queue, error = %e, "cannot consume yet; will retry"),
                }
            }
        }
    });
    Ok(())
}

#[async_trait]
impl Bus for AmqpBus {
    async fn publish(&self, events: &[Envelope]) -> Vec<Result<(), BusError>> {
        let exchange = self.inner.config.exchange();
        let mut publisher = match self.inner.lend_confirming().await {
            Ok(p) => p,
            Err(e) => {
                let reason = e.to_string();
                return events
                    .iter()
                    .map(|_| Err(BusError::Broker(reason.clone())))
                    .collect();
            }
        };
        let confirmed = tokio::time::timeout(
            BROKER_DEADLINE,
            publish_confirmed(&publisher, &exchange, events),
        )
        .await;
        match confirmed {
            Ok(results) => results,
            Err(_) => {
                // Whatever this channel still owes is never coming: the
                // events count as not published (the outbox keeps them; a
                // copy that did arrive is deduplicated by the inbox).
                publisher.discarded = true;
                events
                    .iter()
                    .map(|_| {
                        Err(BusError::Broker(format!(
                            "no confirm from RabbitMQ in {} s",
                            BROKER_DEADLINE.as_secs()
                        )))
                    })
                    .collect()
            }
        }
    }

    async fn subscribe(&self, router: EventRouter) -> Result<(), BusError> {
        let queue = self.inner.config.queue(router.queue());
        let declare = self.declaring(&router);
        let gap = router.gap_hook().filter(|_| router.is_ephemeral());
        // One process's pushes, handled in the order published (see
        // `EventRouter::ephemeral`).
        let in_order = router.is_ephemeral();
        let router = Arc::new(router);
        let inner = self.inner.clone();
        let stop = self.cancel.clone();
        consume(
            self.inner.clone(),
            queue,
            (declare, gap, in_order),
            self.stopping(),
            move |delivery| {
                let (inner, router, stop) = (inner.clone(), router.clone(), stop.clone());
                async move { handle_event(&inner, &router, delivery, &stop).await }
            },
        )
        .await
    }

    async fn declare(&self, router: &EventRouter) -> Result<(), BusError> {
        if router.is_ephemeral() {
            return Ok(());
        }
        let declare = self.declaring(router);
        let set_up = async {
            let channel = self.inner.connection().await?.create_channel().await?;
            let done = declare(channel.clone()).await;
            let _ = channel.close(200, "declared".into()).await;
            done
        };
        tokio::time::timeout(BROKER_DEADLINE, set_up)
            .await
            .unwrap_or_else(|_| {
                Err(BusError::Broker(format!(
                    "RabbitMQ did not declare {} in {} s",
                    router.queue(),
                    BROKER_DEADLINE.as_secs()
                )))
            })
    }

    async fn serve(&self, router: RpcRouter) -> Result<(), BusError> {
        let queue = self.inner.config.rpc_queue(router.service());
        lock(&self.declared).push(queue.clone());
        let name = queue.clone();
        let declare: Declare = Arc::new(move |channel| {
            let name = name.clone();
            Box::pin(async move {
                channel
                    .queue_declare(
                        name.as_str().into(),
                        QueueDeclareOptions::durable(),
                        FieldTable::default(),
                    )
                    .await?;
                Ok(())
            })
        });
        let router = Arc::new(router);
        let inner = self.inner.clone();
        consume(
            self.inner.clone(),
            queue,
            (declare, None, false),
            self.stopping(),
            move |delivery| {
                let (inner, router) = (inner.clone(), router.clone());
                async move { handle_rpc(&inner, &router, delivery).await }
            },
        )
        .await
    }

    async fn call_raw(
        &self,
        service: &str,
        method: &str,
        body: serde_json::Value,
        deadline: Duration,
    ) -> Result<serde_json::Value, AppError> {
        let started = Instant::now();
        let queue = self.inner.config.rpc_queue(service);
        // A part that let the last call run out unanswered, and whose queue
        // nobody consumes now (stopped, killed, not yet restarted), is
        // not waited for: every request touching it would hang the whole
        // deadline. One that consumes but is slow is waited for as ever,
        // and so does a patient caller (a sweeper: what it does when
        // nobody answers is for a part gone a while, not one restarting).
        if !super::patient()
            && self
                .nobody_consumes(service, &queue, deadline.min(Duration::from_secs(1)))
                .await
        {
            warn!(service, "RPC to a part nothing consumes for; not waiting");
            return Err(AppError::new(
                ErrorCode::ServiceUnavailable,
                "a part of Duikou is not running; try again shortly",
            ));
        }
        // What the look took is the caller's too: the request expires, and
        // a service that takes it later does not run it, when the caller
        // gives up.
        let deadline = deadline.saturating_sub(started.elapsed());
        let started = Instant::now();
        let correlation = Uuid::now_v7().to_string();
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(correlation.clone(), tx);
        // Whatever happens next, the waiter must not outlive the call.
        let _cleanup = RemoveOnDrop(&self.pending, &correlation);

        let payload = serde_json::to_vec(&body).map_err(AppError::internal)?;
        let properties = BasicProperties::default()
            .with_reply_to(ShortString::from(DIRECT_REPLY_TO))
            .with_correlation_id(correlation.as_str().into())
            .with_type(method.into())
            .with_content_type("application/json".into())
            // A request nobody took before the caller gave up is dropped.
            .with_expiration(deadline.as_millis().to_string().as_str().into());
        // The public request this call serves, for the service's logs, and
        // when the caller gives up: a request delivered before its deadline
        // but run after it (a replica paused, or far behind) is not run.
        let mut headers = FieldTable::default();
        if let Some(id) = crate::telemetry::request_id() {
            headers.insert(REQUEST_ID_HEADER.into(), AMQPValue::LongString(id.into()));
        }
        let gives_up = chrono::Utc::now()
            + chrono::Duration::from_std(deadline).unwrap_or(chrono::Duration::zero());
        headers.insert(
            DEADLINE_HEADER.into(),
            AMQPValue::LongLongInt(gives_up.timestamp_millis()),
        );
        let properties = properties.with_headers(headers);
        let publish = async {
            let confirm = self
                .rpc_channel()
                .await?
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &payload,
                    properties,
                )
                .await?;
            confirm.await.map_err(BusError::from)
        };
        let ran_out = || {
            lock(&self.unanswered)
                .entry(service.to_owned())
                .or_default();
            rpc_timeout(service, method, deadline)
        };
        match tokio::time::timeout(deadline, publish).await {
            Err(_) => return Err(ran_out()),
            Ok(Err(e)) => {
                warn!(error = %e, "the message broker is unavailable for an RPC");
                return Err(AppError::new(
                    ErrorCode::ServiceUnavailable,
                    "Duikou cannot reach its services just now; try again shortly",
                ));
            }
            // lapin may hand a return to another publish's confirmation
            // (docs/messaging.md), so the return goes to the call whose
            // correlation id it carries; this call waits for its own answer.
            Ok(Ok(Confirmation::Ack(Some(returned)))) => {
                if let Some(owner) = returned.delivery.properties.correlation_id()
                    && let Some(tx) = lock(&self.pending).remove(owner.as_str())
                {
                    let _ = tx.send(Answer::Returned);
                }
            }
            Ok(Ok(Confirmation::Nack(returned))) => {
                // A return riding on this nack may be another call's.
                if let Some(owner) = returned
                    .as_ref()
                    .and_then(|r| r.delivery.properties.correlation_id().clone())
                    && let Some(tx) = lock(&self.pending).remove(owner.as_str())
                {
                    let _ = tx.send(Answer::Returned);
                }
                return Err(AppError::new(
                    ErrorCode::ServiceUnavailable,
                    "the message broker refused the request",
                ));
            }
            Ok(Ok(_)) => {}
        }
        let left = deadline.saturating_sub(started.elapsed());
        let bytes = match tokio::time::timeout(left, rx).await {
            Ok(Ok(Answer::Reply(bytes))) => {
                lock(&self.unanswered).remove(service);
                bytes
            }
            Ok(Ok(Answer::Returned)) => {
                warn!(service, "RPC to a service that is not running");
                return Err(AppError::new(
                    ErrorCode::ServiceUnavailable,
                    "a part of Duikou is not running; try again shortly",
                ));
            }
            _ => return Err(ran_out()),
        };
        let reply: Result<serde_json::Value, AppError> =
            serde_json::from_slice(&bytes).map_err(AppError::internal)?;
        reply
    }

    fn config(&self) -> &BusConfig {
        &self.inner.config
    }

    async fn shutdown(&self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    async fn close(&self) {
        self.replies.cancel();
        // The channels first, each waiting for the broker's close-ok: a
        // connection closed under them left lapin to close them itself,
        // and it logged an ERROR ("invalid channel state: Closing") on a
        // clean stop.
        let mut channels = vec![
            self.inner.rpc_channel.lock().await.clone(),
            self.inner.publisher.lock().await.clone(),
        ];
        channels.extend(lock(&self.inner.confirming).drain(..));
        for channel in channels.iter().filter(|c| usable(c)) {
            let _ =
                tokio::time::timeout(BROKER_DEADLINE, channel.close(200, "shutdown".into())).await;
        }
        let connection = self.inner.connection.lock().await.clone();
        let _ =
            tokio::time::timeout(BROKER_DEADLINE, connection.close(200, "shutdown".into())).await;
    }

    fn declared_queues(&self) -> Vec<String> {
        lock(&self.declared).clone()
    }

    fn halt(&self) {
        self.cancel.cancel();
        self.replies.cancel();
    }
}

struct RemoveOnDrop<'a>(&'a Pending, &'a str);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        lock(self.0).remove(self.1);
    }
}

/// Tools for tests and operators: read a dead-letter queue, delete a prefix's
/// queues.
pub mod admin {
    use super::*;
    use lapin::options::{BasicGetOptions, ExchangeDeleteOptions, QueueDeleteOptions};

    /// A dead-lettered message: its body and the reason header, if any.
    #[derive(Debug, Clone)]
    pub struct DeadLetter {
        /// The raw body.
        pub body: Vec<u8>,
        /// Our reason header, or the broker's `x-first-death-reason`.
        pub reason: Option<String>,
    }

    /// Takes (acks) every message currently in `queue`.
    pub async fn drain(url: &str, queue: &str) -> Result<Vec<DeadLetter>, BusError> {
        let conn = Connection::connect(url, ConnectionProperties::default()).await?;
        let channel = conn.create_channel().await?;
        let mut out = Vec::new();
        while let Some(msg) = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await?
        {
            let props = &msg.delivery.properties;
            let reason = header_str(props, DEAD_REASON_HEADER)
                .or_else(|| header_str(props, "x-first-death-reason"));
            out.push(DeadLetter {
                body: msg.delivery.data.clone(),
                reason,
            });
        }
        let _ = conn.close(200, "done".into()).await;
        Ok(out)
    }

    /// Messages ready in `queue`; None when there is no such queue.
    pub async fn message_count(url: &str, queue: &str) -> Result<Option<u32>, BusError> {
        Ok(queue_counts(url, queue)
            .await?
            .map(|(messages, _)| messages))
    }

    /// (messages ready, consumers) of `queue`; None when there is no such queue.
    pub async fn queue_counts(url: &str, queue: &str) -> Result<Option<(u32, u32)>, BusError> {
        let conn = Connection::connect(url, ConnectionProperties::default()).await?;
        let channel = conn.create_channel().await?;
        let found = super::counts_on(&channel, queue).await;
        let _ = conn.close(200, "done".into()).await;
        Ok(found)
    }

    /// Deletes the named queues and the prefix's exchange (test cleanup).
    pub async fn delete(url: &str, config: &BusConfig, queues: &[String]) -> Result<(), BusError> {
        let conn = Connection::connect(url, ConnectionProperties::default()).await?;
        for q in queues {
            // A missing queue closes the channel: use one per deletion.
            let channel = conn.create_channel().await?;
            let _ = channel
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let channel = conn.create_channel().await?;
        let _ = channel
            .exchange_delete(
                config.exchange().as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await;
        let _ = conn.close(200, "done".into()).await;
        Ok(())
    }

    /// Publishes raw bytes to the events exchange (tests: malformed messages).
    pub async fn publish_raw(
        url: &str,
        config: &BusConfig,
        routing_key: &str,
        body: &[u8],
    ) -> Result<(), BusError> {
        let conn = Connection::connect(url, ConnectionProperties::default()).await?;
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let confirm = channel
            .basic_publish(
                config.exchange().as_str().into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                BasicProperties::default().with_delivery_mode(PERSISTENT),
            )
            .await?
            .await?;
        let _ = conn.close(200, "done".into()).await;
        confirmation_result(routing_key, confirm)
    }
}

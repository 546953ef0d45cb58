//! The RabbitMQ bus (lapin).
//!
//! - Events: topic exchange `duikou.events`; one durable quorum queue per
//!   service with `x-delivery-limit` and at-least-once dead-lettering into
//!   `<queue>.dead`; manual ack after the handler returned (its transaction
//!   committed), nack with requeue on a retryable error, bounded prefetch.
//! - Publishing: publisher confirms with `mandatory`; a returned message is a
//!   failure (no queue bound), so the outbox keeps the row and tries again.
//! - RPC: the default exchange, queue `<service>.rpc` shared by competing
//!   consumers, replies through direct reply-to (`amq.rabbitmq.reply-to`).
//! - Recovery: lapin's automatic recovery replays the topology and consumers
//!   after a broker restart; deliveries whose ack was lost come again and the
//!   inbox skips them.

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

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Vec<u8>>>>>;

/// The RabbitMQ implementation of [`Bus`].
pub struct AmqpBus {
    config: BusConfig,
    connection: Connection,
    /// Publishes events and dead letters, with confirms.
    publisher: Channel,
    /// Sends RPC requests (with confirms) and receives replies (direct reply-to).
    rpc_channel: Channel,
    pending: Pending,
    cancel: CancellationToken,
    tracker: TaskTracker,
    declared: Mutex<Vec<String>>,
}

impl AmqpBus {
    /// Connects, declares the events exchange and starts the reply listener.
    /// Retries the connection itself until the broker answers.
    pub async fn connect(url: &str, config: BusConfig) -> Result<AmqpBus, BusError> {
        let properties = ConnectionProperties::default()
            .with_connection_name("duikou".into())
            // Keep retrying for as long as the broker is away; the outbox waits.
            .configure_backoff(|b| {
                b.with_min_delay(Duration::from_millis(100))
                    .with_max_delay(Duration::from_secs(2))
                    .with_max_times(1_000_000)
            })
            .enable_auto_recover();
        let connection = Connection::connect(url, properties).await?;

        let publisher = connection.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        publisher
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

        let rpc_channel = connection.create_channel().await?;
        rpc_channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let pending: Pending = Arc::default();
        let bus = AmqpBus {
            config,
            connection,
            publisher,
            rpc_channel,
            pending,
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            declared: Mutex::default(),
        };
        bus.listen_for_replies().await?;
        Ok(bus)
    }

    /// Direct reply-to: consume the pseudo-queue with no-ack on the channel
    /// that publishes the requests, before the first request.
    async fn listen_for_replies(&self) -> Result<(), BusError> {
        let mut replies = self
            .rpc_channel
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
        let channel = self.rpc_channel.clone();
        let cancel = self.cancel.clone();
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
                            let _ = tx.send(delivery.data);
                        }
                    }
                    Some(Err(e)) => {
                        if let Err(e) = channel.wait_for_recovery(e).await {
                            error!(error = %e, "RPC reply listener lost its channel");
                            break;
                        }
                    }
                    None => break,
                }
            }
        });
        Ok(())
    }

    /// Declares `<queue>.dead`, then `<queue>` (quorum, delivery limit,
    /// at-least-once dead-lettering) and its bindings.
    async fn declare_event_queue(
        &self,
        channel: &Channel,
        router: &EventRouter,
    ) -> Result<String, BusError> {
        let name = self.config.queue(router.queue());
        let dead = self.config.dead_queue(router.queue());
        lock(&self.declared).extend([name.clone(), dead.clone()]);
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
            AMQPValue::LongInt(i32::try_from(self.config.delivery_limit).unwrap_or(i32::MAX)),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("".into()),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(dead.as_str().into()),
        );
        args.insert(
            "x-dead-letter-strategy".into(),
            AMQPValue::LongString("at-least-once".into()),
        );
        args.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
        channel
            .queue_declare(name.as_str().into(), QueueDeclareOptions::durable(), args)
            .await?;
        for key in router.bindings() {
            channel
                .queue_bind(
                    name.as_str().into(),
                    self.config.exchange().as_str().into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(name)
    }

    fn stopping(&self) -> Consuming {
        Consuming {
            cancel: self.cancel.clone(),
            tracker: self.tracker.clone(),
        }
    }
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

fn confirmation_result(key: &str, confirmation: Confirmation) -> Result<(), BusError> {
    match confirmation {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(_)) => Err(BusError::Unroutable(key.to_owned())),
        Confirmation::Nack(_) => Err(BusError::Nacked),
    }
}

/// Dead-letters a delivery with the reason in a header, then acks it; if the
/// dead letter cannot be stored the delivery is requeued instead.
async fn dead_letter(publisher: &Channel, dead_queue: &str, delivery: &Delivery, reason: &str) {
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
    let stored = async {
        publisher
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
    }
    .await;
    match stored {
        Ok(()) => {
            warn!(reason, queue = dead_queue, "dead-lettered a message");
            let _ = delivery.ack(BasicAckOptions::default()).await;
        }
        Err(e) => {
            error!(error = %e, "could not dead-letter; requeueing");
            let _ = delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await;
        }
    }
}

async fn handle_event(
    router: &EventRouter,
    publisher: &Channel,
    dead_queue: &str,
    delivery: Delivery,
) {
    let env = match Envelope::from_bytes(&delivery.data) {
        Ok(env) => env,
        Err(e) => {
            let reason = format!("not an event envelope: {e}");
            return dead_letter(publisher, dead_queue, &delivery, &reason).await;
        }
    };
    let span =
        info_span!("event", r#type = %env.kind, id = %env.id, correlation_id = %env.correlation_id);
    let outcome = router.dispatch(env).instrument(span.clone()).await;
    let _entered = span.enter();
    match outcome {
        Ok(()) => {
            // Ok(false) or an error: the channel died; the message comes again
            // and the inbox skips it.
            if !matches!(delivery.ack(BasicAckOptions::default()).await, Ok(true)) {
                debug!("ack lost with the channel; expecting a redelivery");
            }
        }
        Err(HandlerError::Retry(reason)) => {
            let attempt = delivery_count(&delivery.properties);
            warn!(%reason, attempt, "handler failed; will be redelivered");
            tokio::time::sleep(retry_delay(attempt)).await;
            let _ = delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await;
        }
        Err(HandlerError::Reject(reason)) => {
            dead_letter(publisher, dead_queue, &delivery, &reason).await;
        }
    }
}

async fn handle_rpc(router: &RpcRouter, channel: &Channel, delivery: Delivery) {
    let method = delivery
        .properties
        .kind()
        .as_ref()
        .map(|k| k.to_string())
        .unwrap_or_default();
    let reply: Result<serde_json::Value, AppError> = match serde_json::from_slice(&delivery.data) {
        Ok(body) => {
            let span = info_span!("rpc", service = router.service(), method = %method,
                correlation_id = ?delivery.properties.correlation_id());
            router.dispatch(&method, body).instrument(span).await
        }
        Err(e) => Err(AppError::bad_input(format!("request is not JSON: {e}"))),
    };
    if let (Some(reply_to), Some(corr)) = (
        delivery.properties.reply_to().clone(),
        delivery.properties.correlation_id().clone(),
    ) {
        let body = serde_json::to_vec(&reply).unwrap_or_default();
        let sent = channel
            .basic_publish(
                "".into(),
                reply_to,
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default()
                    .with_correlation_id(corr)
                    .with_content_type("application/json".into()),
            )
            .await;
        if let Err(e) = sent {
            warn!(error = %e, "could not send an RPC reply");
        }
    }
    let _ = delivery.ack(BasicAckOptions::default()).await;
}

/// Consumes `queue` on `channel` until shutdown, running `handle` for each
/// delivery as a task (at most `prefetch` at once: the broker sends no more).
async fn consume<F, Fut>(
    channel: Channel,
    queue: String,
    stop: Consuming,
    handle: F,
) -> Result<(), BusError>
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let tag = format!("{queue}-{}", Uuid::now_v7());
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let tracker = stop.tracker.clone();
    tracker.spawn(async move {
        loop {
            let next = tokio::select! {
                next = consumer.next() => next,
                () = stop.cancel.cancelled() => {
                    let _ = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                    break;
                }
            };
            match next {
                Some(Ok(delivery)) => {
                    stop.tracker.spawn(handle(delivery));
                }
                Some(Err(e)) => {
                    warn!(queue, error = %e, "consumer interrupted; waiting for recovery");
                    if let Err(e) = channel.wait_for_recovery(e).await {
                        error!(queue, error = %e, "consumer cannot recover");
                        break;
                    }
                }
                None => break,
            }
        }
    });
    Ok(())
}

#[async_trait]
impl Bus for AmqpBus {
    async fn publish(&self, events: &[Envelope]) -> Vec<Result<(), BusError>> {
        // Pipeline: send all, then collect the confirms in order.
        let exchange = self.config.exchange();
        let mut confirms = Vec::with_capacity(events.len());
        for env in events {
            let sent = self
                .publisher
                .basic_publish(
                    exchange.as_str().into(),
                    env.kind.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &env.to_bytes(),
                    envelope_properties(env),
                )
                .await;
            confirms.push(sent);
        }
        let mut results = Vec::with_capacity(events.len());
        for (env, sent) in events.iter().zip(confirms) {
            let result = match sent {
                Ok(confirm) => match confirm.await {
                    Ok(c) => confirmation_result(&env.kind, c),
                    Err(e) => Err(e.into()),
                },
                Err(e) => Err(e.into()),
            };
            results.push(result);
        }
        results
    }

    async fn subscribe(&self, router: EventRouter) -> Result<(), BusError> {
        let channel = self.connection.create_channel().await?;
        channel
            .basic_qos(self.config.prefetch, BasicQosOptions::default())
            .await?;
        let queue = self.declare_event_queue(&channel, &router).await?;
        let dead = self.config.dead_queue(router.queue());
        let router = Arc::new(router);
        let publisher = self.publisher.clone();
        consume(channel, queue, self.stopping(), move |delivery| {
            let router = router.clone();
            let publisher = publisher.clone();
            let dead = dead.clone();
            async move { handle_event(&router, &publisher, &dead, delivery).await }
        })
        .await
    }

    async fn serve(&self, router: RpcRouter) -> Result<(), BusError> {
        let channel = self.connection.create_channel().await?;
        channel
            .basic_qos(self.config.prefetch, BasicQosOptions::default())
            .await?;
        let queue = self.config.rpc_queue(router.service());
        lock(&self.declared).push(queue.clone());
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::durable(),
                FieldTable::default(),
            )
            .await?;
        let router = Arc::new(router);
        let reply_channel = channel.clone();
        consume(channel, queue, self.stopping(), move |delivery| {
            let router = router.clone();
            let reply_channel = reply_channel.clone();
            async move { handle_rpc(&router, &reply_channel, delivery).await }
        })
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
        let correlation = Uuid::now_v7().to_string();
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(correlation.clone(), tx);
        // Whatever happens next, the waiter must not outlive the call.
        let _cleanup = RemoveOnDrop(&self.pending, &correlation);

        let queue = self.config.rpc_queue(service);
        let payload = serde_json::to_vec(&body).map_err(AppError::internal)?;
        let properties = BasicProperties::default()
            .with_reply_to(ShortString::from(DIRECT_REPLY_TO))
            .with_correlation_id(correlation.as_str().into())
            .with_type(method.into())
            .with_content_type("application/json".into())
            // A request nobody took before the caller gave up is dropped.
            .with_expiration(deadline.as_millis().to_string().as_str().into());
        let publish = async {
            let confirm = self
                .rpc_channel
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
            confirm.await
        };
        match tokio::time::timeout(deadline, publish).await {
            Err(_) => return Err(rpc_timeout(service, deadline)),
            Ok(Err(e)) => {
                return Err(AppError::new(
                    ErrorCode::ServiceUnavailable,
                    format!("the message broker is unavailable: {e}"),
                ));
            }
            Ok(Ok(Confirmation::Ack(Some(_)))) => {
                return Err(AppError::new(
                    ErrorCode::ServiceUnavailable,
                    format!("{service} is not running"),
                ));
            }
            Ok(Ok(Confirmation::Nack(_))) => {
                return Err(AppError::new(
                    ErrorCode::ServiceUnavailable,
                    "the message broker refused the request",
                ));
            }
            Ok(Ok(_)) => {}
        }
        let left = deadline.saturating_sub(started.elapsed());
        let bytes = match tokio::time::timeout(left, rx).await {
            Ok(Ok(bytes)) => bytes,
            _ => return Err(rpc_timeout(service, deadline)),
        };
        let reply: Result<serde_json::Value, AppError> =
            serde_json::from_slice(&bytes).map_err(AppError::internal)?;
        reply
    }

    fn config(&self) -> &BusConfig {
        &self.config
    }

    async fn shutdown(&self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    async fn close(&self) {
        let _ = self.connection.close(200, "shutdown".into()).await;
    }

    fn declared_queues(&self) -> Vec<String> {
        lock(&self.declared).clone()
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

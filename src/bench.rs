//! `duikou bench events`: events per second end to end — committed to an
//! outbox, relayed to RabbitMQ with confirms, consumed and committed by an
//! inbox handler — with one and with several competing consumers. This is the
//! ceiling every saga step shares. A figure, not a test.

use anyhow::Context;
use sea_orm::{ConnectionTrait, Database, DbBackend, TransactionTrait};
use shared::bus::amqp::{AmqpBus, admin};
use shared::bus::{Bus, BusConfig, EventRouter, HandlerError};
use shared::envelope::{Envelope, Event};
use shared::outbox::{OutboxSignal, Relay, begin_once, enqueue, stmt};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(serde::Serialize, serde::Deserialize)]
struct BenchPing {
    n: i64,
}
impl Event for BenchPing {
    const TYPE: &'static str = "bench.ping";
}

/// One measured run.
#[derive(Debug, serde::Serialize)]
pub struct EventsRun {
    /// Competing consumers on the queue.
    pub consumers: usize,
    /// Events measured (after warm-up).
    pub events: i64,
    /// Wall time from the first commit to the last handled event.
    pub seconds: f64,
    /// events / seconds.
    pub events_per_second: f64,
}

/// Runs the events benchmark against the servers in `postgres` and `amqp`.
pub async fn events(
    postgres: &str,
    amqp: &str,
    events: i64,
    consumer_counts: &[usize],
) -> anyhow::Result<Vec<EventsRun>> {
    crate::install_crypto();
    let mut runs = Vec::new();
    for &consumers in consumer_counts {
        let run = one_run(postgres, amqp, events, consumers).await?;
        println!(
            "  {:>2} consumer(s): {:>6} events in {:>6.2} s = {:>7.0} events/s",
            run.consumers, run.events, run.seconds, run.events_per_second
        );
        runs.push(run);
    }
    Ok(runs)
}

/// One measured run on a database and queues of its own, removed after
/// however it ended.
async fn one_run(
    postgres: &str,
    amqp: &str,
    events: i64,
    consumers: usize,
) -> anyhow::Result<EventsRun> {
    let id = uuid::Uuid::now_v7().simple().to_string()[20..].to_owned();
    let db_name = format!("bench_{id}_events");
    let config = BusConfig {
        prefix: format!("bench.{id}."),
        ..BusConfig::default()
    };
    let mut queues = Vec::new();
    let result = measure_events(
        (postgres, &db_name),
        (amqp, &config, &mut queues),
        events,
        consumers,
    )
    .await;
    if !queues.is_empty()
        && let Err(e) = admin::delete(amqp, &config, &queues).await
    {
        tracing::warn!(error = %e, prefix = %config.prefix, "the run's queues were not all removed");
    }
    if let Err(e) = shared::db::drop_database(postgres, &db_name).await {
        tracing::warn!(error = %e, database = %db_name, "the run's database was not removed");
    }
    result
}

async fn measure_events(
    (postgres, db_name): (&str, &str),
    (amqp, config, queues): (&str, &BusConfig, &mut Vec<String>),
    events: i64,
    consumers: usize,
) -> anyhow::Result<EventsRun> {
    shared::db::ensure_database(postgres, db_name).await?;
    let db = Database::connect(shared::db::with_database(postgres, db_name)?).await?;
    for ddl in shared::outbox::kernel_ddl(DbBackend::Postgres) {
        db.execute_unprepared(&ddl).await?;
    }
    db.execute_unprepared("CREATE TABLE effects (n BIGINT PRIMARY KEY)")
        .await?;
    let bus = Arc::new(
        AmqpBus::connect(amqp, config.clone())
            .await
            .context("connecting RabbitMQ")?,
    );
    for _ in 0..consumers {
        let db = db.clone();
        let router = EventRouter::new("bench.events").on::<BenchPing, _, _>(move |env, ping| {
            let db = db.clone();
            async move {
                let Some(txn) = begin_once(&db, &env).await? else {
                    return Ok(());
                };
                txn.execute_raw(stmt(
                    DbBackend::Postgres,
                    "INSERT INTO effects (n) VALUES ($1)",
                    vec![ping.n.into()],
                ))
                .await?;
                txn.commit().await?;
                Ok::<(), HandlerError>(())
            }
        });
        bus.subscribe(router).await?;
        *queues = bus.declared_queues();
    }
    let signal = OutboxSignal::default();
    let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
    // Failed part-way, the relay stops too.
    let _stop_relay = cancel.clone().drop_guard();
    Relay::new(db.clone(), bus.clone(), signal.clone()).spawn(cancel.clone(), &tracker);

    let count = || async {
        let row = db
            .query_one_raw(stmt(
                DbBackend::Postgres,
                "SELECT COUNT(*) AS n FROM effects",
                vec![],
            ))
            .await?;
        Ok::<i64, anyhow::Error>(row.map(|r| r.try_get("", "n")).transpose()?.unwrap_or(0))
    };
    let produce = |from: i64, to: i64| {
        let (db, signal) = (db.clone(), signal.clone());
        async move {
            let mut n = from;
            while n < to {
                let end = (n + 100).min(to);
                let txn = db.begin().await?;
                let batch: Vec<Envelope> = (n..end)
                    .map(|i| Envelope::new("bench", uuid::Uuid::now_v7(), &BenchPing { n: i }))
                    .collect();
                enqueue(&txn, &batch).await?;
                txn.commit().await?;
                signal.committed();
                n = end;
            }
            Ok::<(), anyhow::Error>(())
        }
    };
    let wait_for = |target: i64| async move {
        let deadline = Instant::now() + Duration::from_secs(300);
        while count().await? < target {
            anyhow::ensure!(
                Instant::now() < deadline,
                "events were not all handled within 300 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok::<(), anyhow::Error>(())
    };

    // Warm-up, not measured.
    let warm = (events / 10).max(100);
    produce(0, warm).await?;
    wait_for(warm).await?;

    let started = Instant::now();
    produce(warm, warm + events).await?;
    wait_for(warm + events).await?;
    let seconds = started.elapsed().as_secs_f64();

    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    bus.shutdown().await;
    bus.close().await;
    db.close().await?;
    Ok(EventsRun {
        consumers,
        events,
        seconds,
        events_per_second: events as f64 / seconds,
    })
}

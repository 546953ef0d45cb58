//! The in-process bus and the outbox/inbox on SQLite: the same guarantees
//! as RabbitMQ and PostgreSQL, for embedded mode.

mod common;

use duikou_shared::bus::memory::MemoryBus;
use duikou_shared::bus::{Bus, BusConfig, EventRouter, HandlerError, call_within};
use duikou_shared::config::Settings;
use duikou_shared::envelope::{Envelope, Event};
use duikou_shared::outbox::{OutboxSignal, Relay, begin_once, enqueue, prune_inbox, stmt};
use duikou_shared::rpcs::ListRegions;
use duikou_shared::{AppError, ErrorCode};
use sea_orm::{ConnectionTrait, DatabaseConnection, TransactionTrait};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ping {
    n: i64,
}
impl Event for Ping {
    const TYPE: &'static str = "test.ping";
}

struct Sqlite {
    db: DatabaseConnection,
    dir: PathBuf,
}

impl Drop for Sqlite {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn sqlite() -> Sqlite {
    let dir = std::env::temp_dir().join(format!("duikou-test-{}", uuid::Uuid::now_v7().simple()));
    let settings = Settings {
        data_dir: dir.clone(),
        ..Settings::default()
    };
    let db = duikou_shared::db::connect(&settings, "kernel")
        .await
        .expect("sqlite");
    for ddl in duikou_shared::outbox::kernel_ddl(db.get_database_backend()) {
        db.execute_unprepared(&ddl).await.expect("kernel ddl");
    }
    db.execute_unprepared("CREATE TABLE effects (n BIGINT PRIMARY KEY, times INTEGER NOT NULL)")
        .await
        .expect("effects");
    Sqlite { db, dir }
}

fn bus(limit: u32) -> Arc<MemoryBus> {
    Arc::new(MemoryBus::new(BusConfig {
        delivery_limit: limit,
        ..BusConfig::default()
    }))
}

fn recording(db: &DatabaseConnection, calls: Arc<AtomicUsize>) -> EventRouter {
    let db = db.clone();
    EventRouter::new("kernel.events").on::<Ping, _, _>(move |env, ping| {
        let (db, calls) = (db.clone(), calls.clone());
        async move {
            // Counted when the handling finished (applied or skipped).
                let result = async {
            let Some(txn) = begin_once(&db, &env).await? else { return Ok(()) };
            let b = txn.get_database_backend();
            txn.execute_raw(stmt(
                b,
                "INSERT INTO effects (n, times) VALUES ($1, 1) ON CONFLICT (n) DO UPDATE SET times = effects.times + 1",
                vec![ping.n.into()],
            ))
            .await?;
            txn.commit().await?;
            Ok::<(), HandlerError>(())
                }
                .await;
                calls.fetch_add(1, Ordering::SeqCst);
                result
        }
    })
}

async fn effects(db: &DatabaseConnection) -> (i64, i64) {
    let b = db.get_database_backend();
    let row = db
        .query_one_raw(stmt(
            b,
            "SELECT COUNT(*) AS n, COALESCE(SUM(times), 0) AS t FROM effects",
            vec![],
        ))
        .await
        .expect("query")
        .expect("row");
    (
        row.try_get("", "n").expect("n"),
        row.try_get("", "t").expect("t"),
    )
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_same_event_delivered_twice_changes_state_once_on_sqlite() {
    let s = sqlite().await;
    let bus = bus(5);
    let calls = Arc::new(AtomicUsize::new(0));
    bus.subscribe(recording(&s.db, calls.clone()))
        .await
        .expect("subscribe");
    let env = Envelope::new("test", uuid::Uuid::now_v7(), &Ping { n: 1 });
    for r in bus.publish(&[env.clone(), env]).await {
        r.expect("routed");
    }
    eventually("two deliveries", || async {
        calls.load(Ordering::SeqCst) == 2
    })
    .await;
    assert_eq!(effects(&s.db).await, (1, 1));
}

#[tokio::test]
async fn a_failing_handler_is_dead_lettered_after_the_limit_and_a_malformed_message_at_once() {
    let bus = bus(3);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let router = EventRouter::new("kernel.events").on::<Ping, _, _>(move |_, _| {
        let c = c.clone();
        async move {
            c.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(HandlerError::Retry("always".into()))
        }
    });
    bus.subscribe(router).await.expect("subscribe");
    bus.publish(&[Envelope::new("test", uuid::Uuid::now_v7(), &Ping { n: 1 })])
        .await;
    bus.inject("kernel.events", b"{oops".to_vec())
        .expect("inject");
    let b = bus.clone();
    eventually("two dead letters", move || {
        let b = b.clone();
        async move { b.dead_letters("kernel.events").len() == 2 }
    })
    .await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "delivered once and redelivered the limit's times, as RabbitMQ does"
    );
    let reasons: Vec<String> = bus
        .dead_letters("kernel.events")
        .into_iter()
        .map(|d| d.reason)
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("delivery limit")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("not an event envelope")),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn the_sqlite_outbox_keeps_unroutable_events_until_a_consumer_is_bound() {
    let s = sqlite().await;
    let bus = bus(5);
    let signal = OutboxSignal::default();
    let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
    Relay::new(s.db.clone(), bus.clone(), signal.clone()).spawn(cancel.clone(), &tracker);

    let txn = s.db.begin().await.expect("begin");
    let events: Vec<Envelope> = (0..5)
        .map(|n| Envelope::new("test", uuid::Uuid::now_v7(), &Ping { n }))
        .collect();
    enqueue(&txn, &events).await.expect("enqueue");
    txn.commit().await.expect("commit");
    signal.committed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let left = |db: DatabaseConnection| async move {
        let b = db.get_database_backend();
        let row = db
            .query_one_raw(stmt(b, "SELECT COUNT(*) AS n FROM outbox", vec![]))
            .await
            .expect("q")
            .expect("row");
        row.try_get::<i64>("", "n").expect("n")
    };
    assert_eq!(
        left(s.db.clone()).await,
        5,
        "nobody is bound: the rows wait"
    );

    let calls = Arc::new(AtomicUsize::new(0));
    bus.subscribe(recording(&s.db, calls))
        .await
        .expect("subscribe");
    let db = s.db.clone();
    eventually("all five handled", move || {
        let db = db.clone();
        async move { effects(&db).await == (5, 5) }
    })
    .await;
    assert_eq!(left(s.db.clone()).await, 0);
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
}

#[tokio::test]
async fn an_in_process_rpc_fails_fast_without_a_service_and_at_its_deadline_when_slow() {
    let bus = bus(5);
    let request = ListRegions {
        parent_code: None,
        poverty_only: false,
    };
    let err = call_within(bus.as_ref(), &request, Duration::from_millis(200))
        .await
        .expect_err("nobody serves");
    assert_eq!(err.code, ErrorCode::ServiceUnavailable);

    let router =
        duikou_shared::rpc::RpcRouter::new("inventory").route::<ListRegions, _, _>(|_| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Err::<Vec<duikou_shared::region::Region>, _>(AppError::internal("too late"))
        });
    bus.serve(router).await.expect("serve");
    let started = Instant::now();
    let err = call_within(bus.as_ref(), &request, Duration::from_millis(200))
        .await
        .expect_err("too slow");
    assert_eq!(err.code, ErrorCode::ServiceUnavailable);
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn inbox_rows_older_than_the_keep_are_pruned_and_newer_ones_kept() {
    let s = sqlite().await;
    let b = s.db.get_database_backend();
    let old = chrono::Utc::now() - chrono::Duration::days(8);
    for (id, at) in [
        (uuid::Uuid::now_v7(), Some(old)),
        (uuid::Uuid::now_v7(), None),
    ] {
        let sql = match at {
            Some(_) => {
                "INSERT INTO inbox (event_id, kind, handled_at) VALUES ($1, 'test.ping', $2)"
            }
            None => "INSERT INTO inbox (event_id, kind) VALUES ($1, 'test.ping')",
        };
        let mut values = vec![id.to_string().into()];
        values.extend(at.map(Into::into));
        s.db.execute_raw(stmt(b, sql, values))
            .await
            .expect("insert");
    }
    let pruned = prune_inbox(&s.db, duikou_shared::outbox::INBOX_KEEP)
        .await
        .expect("pruned");
    assert_eq!(pruned, 1);
    let count = || async {
        let row =
            s.db.query_one_raw(stmt(b, "SELECT COUNT(*) AS n FROM inbox", vec![]))
                .await
                .expect("q")
                .expect("row");
        row.try_get::<i64>("", "n").expect("n")
    };
    assert_eq!(count().await, 1, "the recent row stays");

    // A relay prunes as it starts (it did only after an hour running, so
    // a process restarted more often pruned never).
    s.db.execute_raw(stmt(
        b,
        "INSERT INTO inbox (event_id, kind, handled_at) VALUES ($1, 'test.ping', $2)",
        vec![uuid::Uuid::now_v7().to_string().into(), old.into()],
    ))
    .await
    .expect("insert");
    assert_eq!(count().await, 2);
    let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
    Relay::new(s.db.clone(), bus(5), OutboxSignal::default()).spawn(cancel.clone(), &tracker);
    eventually("the relay pruned at its start", || async {
        count().await == 1
    })
    .await;
    cancel.cancel();
    tracker.close();
    tracker.wait().await;

    // A stop ends a long prune between batches (it waited for all of it:
    // 20 s for four million rows).
    s.db.execute_unprepared(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 25000)
         INSERT INTO inbox (event_id, kind, handled_at)
         SELECT 'old-' || i, 'test.ping', '2000-01-01 00:00:00' FROM n",
    )
    .await
    .expect("old rows");
    let stopped = CancellationToken::new();
    stopped.cancel();
    let pruned = duikou_shared::outbox::prune_inbox_until(
        &s.db,
        duikou_shared::outbox::INBOX_KEEP,
        &stopped,
    )
    .await
    .expect("pruned");
    assert_eq!(pruned, 10_000, "one batch, then the stop");
    assert_eq!(count().await, 15_001);
}

/// The in-process bus keeps nothing: an event leaves its outbox only once
/// its queue has handled it. Stopped while the handler still fails (a
/// database away, say), the event stays in the outbox, and the next start
/// delivers it once. (The bus used to confirm on the hand-over, and a stop
/// or a crash lost the event: an exploratory run saw five bookings missing
/// from the partnership report after a clean stop.)
#[tokio::test]
async fn an_event_leaves_the_outbox_only_once_handled_and_survives_a_stop() {
    let s = sqlite().await;
    let txn = s.db.begin().await.expect("begin");
    enqueue(
        &txn,
        &[Envelope::new("test", uuid::Uuid::now_v7(), &Ping { n: 7 })],
    )
    .await
    .expect("enqueued");
    txn.commit().await.expect("commit");
    let outbox = |db: DatabaseConnection| async move {
        let row = db
            .query_one_raw(stmt(
                db.get_database_backend(),
                "SELECT COUNT(*) AS n FROM outbox",
                vec![],
            ))
            .await
            .expect("query")
            .expect("row");
        row.try_get::<i64>("", "n").expect("n")
    };

    // Stopped while its handler fails, and on its last attempt while its
    // handler waits out a database outage: handed back both times, not
    // buried as "delivery limit reached" (its row went, and the in-memory
    // dead letter with the process).
    let failures: [(u32, fn() -> HandlerError); 2] = [
        (1_000, || HandlerError::Retry("the database is away".into())),
        (1, || {
            HandlerError::Unavailable("the database is away".into())
        }),
    ];
    for (limit, failure) in failures {
        let failing = bus(limit);
        let tries = Arc::new(AtomicUsize::new(0));
        let t = tries.clone();
        let router = EventRouter::new("kernel.events").on::<Ping, _, _>(move |_, _| {
            t.fetch_add(1, Ordering::SeqCst);
            async move { Err::<(), _>(failure()) }
        });
        failing.subscribe(router).await.expect("subscribe");
        let relay = Relay::new(s.db.clone(), failing.clone(), OutboxSignal::default());
        let round = tokio::spawn(async move { relay.relay_once().await });
        eventually("a try", || async { tries.load(Ordering::SeqCst) > 0 }).await;
        failing.shutdown().await;
        let round = round.await.expect("the round ends");
        assert!(round.is_err(), "confirmed unhandled: {round:?}");
        assert_eq!(outbox(s.db.clone()).await, 1, "the event left the outbox");
        assert!(failing.dead_letters("kernel.events").is_empty());
    }

    let next = bus(5);
    let calls = Arc::new(AtomicUsize::new(0));
    next.subscribe(recording(&s.db, calls.clone()))
        .await
        .expect("subscribe");
    let relay = Relay::new(s.db.clone(), next.clone(), OutboxSignal::default());
    assert_eq!(relay.relay_once().await.expect("published"), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "handled before confirmed");
    assert_eq!(outbox(s.db.clone()).await, 0);
    assert_eq!(effects(&s.db).await, (1, 1));
}

/// A relay asked to stop publishes everything committed before it stops,
/// however many batches that is (its last round took one batch: what
/// sweepers commit as a part stops comes after the relay's last regular
/// round).
#[tokio::test]
async fn a_stopping_relay_publishes_every_batch_left() {
    let s = sqlite().await;
    let bus = bus(5);
    let calls = Arc::new(AtomicUsize::new(0));
    bus.subscribe(recording(&s.db, calls))
        .await
        .expect("subscribe");
    let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
    Relay::new(s.db.clone(), bus.clone(), OutboxSignal::default())
        .with_batch(1)
        .spawn(cancel.clone(), &tracker);
    // Rows committed unsignalled while the relay waits out its poll, and
    // the stop at once.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let events: Vec<Envelope> = (0..5)
        .map(|n| Envelope::new("test", uuid::Uuid::now_v7(), &Ping { n }))
        .collect();
    enqueue(&s.db, &events).await.expect("enqueue");
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    let b = s.db.get_database_backend();
    let left: i64 =
        s.db.query_one_raw(stmt(b, "SELECT COUNT(*) AS n FROM outbox", vec![]))
            .await
            .expect("q")
            .expect("row")
            .try_get("", "n")
            .expect("n");
    assert_eq!(left, 0, "every row published before the relay stopped");
}

/// A temporary queue's events (one process's pushes) are handled in the
/// order published, one after another: the first's slow handler does not
/// let the second overtake it (handled side by side, a booking's
/// confirmation pushed after its cancellation was dropped as older).
#[tokio::test]
async fn an_ephemeral_queue_handles_its_events_in_the_order_published() {
    let bus = bus(5);
    let (router, seen) = common::ordered_pushes("pushes".into());
    bus.subscribe(router).await.expect("subscribe");
    let events = common::pings(3);
    bus.publish(&events).await;
    let s = seen.clone();
    eventually("three handled", move || {
        let s = s.clone();
        async move { s.lock().expect("seen").len() == 3 }
    })
    .await;
    assert_eq!(*seen.lock().expect("seen"), vec![0, 1, 2]);
}

/// A SQLite connection whose commit failed (as on a full disk: SQLite
/// rolls the transaction back, sqlx still counts it open) is not used
/// again: before, its next transaction was a savepoint, a rollback of that
/// left SQLite inside a transaction for good, and every later "commit"
/// released a savepoint in it — answered as saved, never written, lost at
/// a restart. The failed commit is made here by committing behind sqlx's
/// back. The data directory has a space and a `?` in its name (they were
/// read as a URL's syntax).
#[tokio::test]
async fn a_connection_whose_commit_failed_is_not_used_again() {
    let dir =
        std::env::temp_dir().join(format!("duikou test {}?x=1", uuid::Uuid::now_v7().simple()));
    let settings = Settings {
        data_dir: dir.clone(),
        ..Settings::default()
    };
    let db = duikou_shared::db::connect(&settings, "kernel")
        .await
        .expect("sqlite in a directory with a space and a `?`");
    let _cleanup = Sqlite {
        db: db.clone(),
        dir: dir.clone(),
    };
    db.execute_unprepared("CREATE TABLE kept (n INTEGER PRIMARY KEY)")
        .await
        .expect("table");
    // Committed behind sqlx's back: its own COMMIT then fails.
    let txn = db.begin().await.expect("begin");
    txn.execute_unprepared("INSERT INTO kept (n) VALUES (1)")
        .await
        .expect("insert");
    txn.execute_unprepared("COMMIT").await.expect("committed");
    assert!(txn.commit().await.is_err(), "sqlx's commit fails");
    // A transaction given up (a handler's error), then one committed.
    let txn = db.begin().await.expect("begin");
    txn.execute_unprepared("INSERT INTO kept (n) VALUES (2)")
        .await
        .expect("insert");
    drop(txn);
    let txn = db.begin().await.expect("begin");
    txn.execute_unprepared("INSERT INTO kept (n) VALUES (3)")
        .await
        .expect("insert");
    txn.commit().await.expect("commit");
    // What another connection to the file reads: what was written.
    let other = duikou_shared::db::connect_existing(&settings, "kernel")
        .await
        .expect("a second connection");
    let rows = other
        .query_all_raw(stmt(
            other.get_database_backend(),
            "SELECT n FROM kept ORDER BY n",
            vec![],
        ))
        .await
        .expect("read");
    let kept: Vec<i64> = rows
        .iter()
        .map(|r| r.try_get::<i64>("", "n").expect("n"))
        .collect();
    assert_eq!(kept, [1, 3]);
}

/// A full disk (here SQLite's page limit, its SQLITE_FULL) is a database
/// away for a while, not a failed statement: handlers wait in place
/// rather than dead-letter their events after a few tries, and a client
/// is told to retry (it answered INTERNAL, and embedded mode lost the
/// events it dead-lettered at the next restart).
#[tokio::test]
async fn a_full_disk_is_a_database_away_not_a_failed_statement() {
    let s = sqlite().await;
    s.db.execute_unprepared("CREATE TABLE filler (b BLOB)")
        .await
        .expect("table");
    let pages =
        s.db.query_one_raw(stmt(
            s.db.get_database_backend(),
            "PRAGMA page_count",
            vec![],
        ))
        .await
        .expect("counted")
        .and_then(|r| r.try_get_by_index::<i64>(0).ok())
        .expect("pages");
    s.db.execute_unprepared(&format!("PRAGMA max_page_count = {pages}"))
        .await
        .expect("capped");
    let full =
        s.db.execute_unprepared("INSERT INTO filler (b) VALUES (zeroblob(1000000))")
            .await
            .expect_err("no room");
    assert!(full.to_string().contains("full"), "{full}");
    assert!(duikou_shared::db::is_unavailable(&full), "{full}");
    let told = AppError::from(full);
    assert_eq!(told.code, ErrorCode::ServiceUnavailable, "{told:?}");
}

/// No migrations: a start that only opens the database.
struct NoMigrations;
impl sea_orm_migration::MigratorTrait for NoMigrations {
    fn migrations() -> Vec<Box<dyn sea_orm_migration::MigrationTrait>> {
        Vec::new()
    }
}

/// A data directory whose database file is not a SQLite database (another
/// program's file, a copy cut short) fails the start at once, naming the
/// file: it was taken for a database unavailable, and the start waited its
/// minute for it before saying the driver's message, twice, and no file.
#[tokio::test]
async fn a_file_that_is_no_database_fails_the_start_naming_it() {
    let dir = std::env::temp_dir().join(format!("duikou-test-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("duikou_kernel.db");
    std::fs::write(&file, "not a database, ".repeat(64)).expect("written");
    let settings = Settings {
        data_dir: dir.clone(),
        ..Settings::default()
    };
    let refused = duikou_shared::db::connect(&settings, "kernel")
        .await
        .expect_err("no database");
    assert!(
        !duikou_shared::db::worth_waiting_at_start(&refused),
        "{refused}"
    );
    let start = duikou_shared::db::connect_migrated::<NoMigrations>(&settings, "kernel")
        .await
        .expect_err("no database");
    let said = start.to_string();
    assert!(said.contains(&file.display().to_string()), "{said}");
    assert_eq!(said.matches("not a database").count(), 1, "{said}");
    let _ = std::fs::remove_dir_all(&dir);
}

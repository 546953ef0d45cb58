//! Helpers for the kernel's tests against the real PostgreSQL and RabbitMQ:
//! a database and a queue prefix of their own per test, removed afterwards,
//! a TCP proxy that can cut the broker off, and polling with a deadline.

#![allow(dead_code)]

use duikou_shared::bus::amqp::{AmqpBus, admin};
use duikou_shared::bus::{Bus, BusConfig, EventRouter, HandlerError};
use duikou_shared::envelope::{Envelope, Event};
use duikou_shared::outbox::{OutboxSignal, Relay, begin_once, enqueue, stmt};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, TransactionTrait};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub fn postgres_url() -> String {
    std::env::var("DUIKOU_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432".into())
}

pub fn amqp_url() -> String {
    std::env::var("DUIKOU_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Polls `check` until it returns Some or `deadline` passes.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The test event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ping {
    pub n: i64,
}
impl Event for Ping {
    const TYPE: &'static str = "test.ping";
}

/// A temporary queue's router under `name` that records the pings it
/// handles, the first (n = 0) slowly: if events were handled side by side
/// it would be overtaken. With what it saw.
pub fn ordered_pushes(name: String) -> (EventRouter, Arc<Mutex<Vec<i64>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let router = EventRouter::new(name)
        .ephemeral()
        .on::<Ping, _, _>(move |_, ping| {
            let s = s.clone();
            async move {
                if ping.n == 0 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                s.lock().expect("seen").push(ping.n);
                Ok(())
            }
        });
    (router, seen)
}

/// Pings 0 to `count` - 1, as events.
pub fn pings(count: i64) -> Vec<Envelope> {
    (0..count)
        .map(|n| Envelope::new("test", uuid::Uuid::now_v7(), &Ping { n }))
        .collect()
}

/// An event no test binds a queue for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pong {
    pub n: i64,
}
impl Event for Pong {
    const TYPE: &'static str = "test.pong";
}

/// A database, a queue prefix and a bus of one test's own.
pub struct Kernel {
    pub id: String,
    pub db: DatabaseConnection,
    pub config: BusConfig,
    db_name: String,
}

impl Kernel {
    pub async fn new(delivery_limit: u32) -> Kernel {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        if std::env::var("TEST_LOG").is_ok() {
            duikou_shared::telemetry::init("pretty");
        }
        let id = uuid::Uuid::now_v7().simple().to_string()[20..].to_owned();
        let db_name = format!("t_{id}_kernel");
        duikou_shared::db::ensure_database(&postgres_url(), &db_name)
            .await
            .expect("create db");
        let url = duikou_shared::db::with_database(&postgres_url(), &db_name).expect("url");
        let db = Database::connect(url).await.expect("connect");
        for ddl in duikou_shared::outbox::kernel_ddl(DbBackend::Postgres) {
            db.execute_unprepared(&ddl).await.expect("kernel ddl");
        }
        db.execute_unprepared(
            "CREATE TABLE effects (n BIGINT PRIMARY KEY, times INTEGER NOT NULL)",
        )
        .await
        .expect("effects");
        let config = BusConfig {
            prefix: format!("t.{id}."),
            prefetch: 16,
            delivery_limit,
            rpc_timeout: Duration::from_secs(2),
        };
        Kernel {
            id,
            db,
            config,
            db_name,
        }
    }

    pub async fn bus(&self, url: &str) -> Arc<AmqpBus> {
        Arc::new(
            AmqpBus::connect(url, self.config.clone())
                .await
                .expect("bus"),
        )
    }

    /// Commits `n` pings to the outbox.
    pub async fn commit_pings(&self, range: std::ops::Range<i64>) {
        let txn = self.db.begin().await.expect("begin");
        let events: Vec<Envelope> = range
            .map(|n| Envelope::new("test", uuid::Uuid::now_v7(), &Ping { n }))
            .collect();
        enqueue(&txn, &events).await.expect("enqueue");
        txn.commit().await.expect("commit");
    }

    pub async fn outbox_len(&self) -> i64 {
        let row = self
            .db
            .query_one_raw(stmt(
                DbBackend::Postgres,
                "SELECT COUNT(*) AS n FROM outbox",
                vec![],
            ))
            .await
            .expect("count")
            .expect("row");
        row.try_get("", "n").expect("n")
    }

    /// Effects recorded: (distinct pings, total applications).
    pub async fn effects(&self) -> (i64, i64) {
        let row = self
            .db
            .query_one_raw(stmt(
                DbBackend::Postgres,
                "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(times), 0) AS BIGINT) AS t FROM effects",
                vec![],
            ))
            .await
            .expect("count")
            .expect("row");
        (
            row.try_get("", "n").expect("n"),
            row.try_get("", "t").expect("t"),
        )
    }

    /// A router whose handler applies each ping once (inbox) and counts calls.
    pub fn recording_router(&self, calls: Arc<AtomicUsize>) -> EventRouter {
        let db = self.db.clone();
        EventRouter::new("kernel.events").on::<Ping, _, _>(move |env, ping| {
            let db = db.clone();
            let calls = calls.clone();
            async move {
                // Counted when the handling finished (applied or skipped).
                let result = async {
                let Some(txn) = begin_once(&db, &env).await? else { return Ok(()) };
                txn.execute_raw(stmt(
                    DbBackend::Postgres,
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

    /// Starts an outbox relay on this test's database.
    pub fn relay(&self, bus: Arc<dyn Bus>) -> (OutboxSignal, CancellationToken, TaskTracker) {
        let signal = OutboxSignal::default();
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        Relay::new(self.db.clone(), bus, signal.clone()).spawn(cancel.clone(), &tracker);
        (signal, cancel, tracker)
    }

    pub fn queue(&self) -> String {
        self.config.queue("kernel.events")
    }

    pub fn dead_queue(&self) -> String {
        self.config.dead_queue("kernel.events")
    }

    /// Stops the bus; dropping the kernel then removes its database and queues.
    pub async fn cleanup(self, bus: &dyn Bus) {
        bus.shutdown().await;
        bus.close().await;
    }
}

impl Drop for Kernel {
    /// Removes the test's database and queues, also when the test failed.
    fn drop(&mut self) {
        let queues = vec![
            self.queue(),
            self.dead_queue(),
            self.config.rpc_queue("inventory"),
        ];
        let (config, db_name) = (self.config.clone(), self.db_name.clone());
        let cleaned = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Err(e) = admin::delete(&amqp_url(), &config, &queues).await {
                    eprintln!("cleanup: queues {queues:?} not deleted: {e}");
                }
                if let Err(e) = duikou_shared::db::drop_database(&postgres_url(), &db_name).await {
                    eprintln!("cleanup: database {db_name} not dropped: {e}");
                }
            });
        });
        let _ = cleaned.join();
    }
}

/// A TCP proxy in front of RabbitMQ that can cut every connection and refuse
/// new ones: "the broker is unreachable" for one test only.
pub struct Proxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    pub async fn start(target: &'static str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (up2, conns2) = (up.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns2.lock().expect("conns").push(task.abort_handle());
            }
        });
        Proxy { addr, up, conns }
    }

    pub fn url(&self) -> String {
        // The same virtual host as the tests' broker URL.
        let url = amqp_url();
        let vhost = url.rsplit('/').next().unwrap_or("%2f");
        format!("amqp://guest:guest@{}/{vhost}", self.addr)
    }

    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().expect("conns").drain(..) {
            c.abort();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

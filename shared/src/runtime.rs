//! What every service gets from the launcher: settings, the bus, and a place
//! to run background work that stops cleanly.
//!
//! Shutdown order matters: first the background sweeps (expiry, the
//! reconciler, crediting) end their round, while every part of the process
//! still answers their calls (for [`SWEEPS_END_WITHIN`] at most); then the
//! bus stops taking deliveries and lets the handlers in flight finish (their
//! effects commit, their acks go out); then the outbox relays publish what
//! is left and stop.

use crate::bus::Bus;
use crate::bus::amqp::AmqpBus;
use crate::bus::faulty::{Faults, FaultyBus};
use crate::bus::memory::MemoryBus;
use crate::config::Settings;
use crate::outbox::{OutboxSignal, Relay};
use sea_orm::{DatabaseConnection, DbErr};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Shared by the parts running in one process.
#[derive(Clone)]
pub struct Runtime {
    /// The configuration.
    pub settings: Arc<Settings>,
    /// The bus (RabbitMQ or in-process).
    pub bus: Arc<dyn Bus>,
    /// Cancelled first on shutdown: background sweeps (expiry, the
    /// reconciler, crediting) end their round while every part of the
    /// process still answers their calls.
    pub cancel: CancellationToken,
    /// Those background tasks, waited for before the bus stops.
    pub tracker: TaskTracker,
    /// The outbox relays: they run until the bus has stopped, so that what
    /// the last handlers commit is published.
    relays_stop: CancellationToken,
    relays_running: TaskTracker,
    /// Outbox relays of the parts started, until [`Runtime::start_relays`].
    relays: Arc<std::sync::Mutex<Vec<Relay>>>,
    /// The databases whose outboxes the relays publish.
    outboxes: Arc<std::sync::Mutex<Vec<DatabaseConnection>>>,
}

/// How long a stop waits for the background rounds under way before it
/// stops the bus anyway.
pub const SWEEPS_END_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a stop on the in-process bus waits for the outboxes to empty
/// while the parts still consume ([`Runtime::shutdown`]).
const SETTLE_FOR: std::time::Duration = std::time::Duration::from_secs(5);

impl Runtime {
    /// Connects the bus the settings name (RabbitMQ if `amqp_url`, else in-process).
    pub async fn connect(settings: Settings) -> anyhow::Result<Runtime> {
        let mut bus: Arc<dyn Bus> = match settings.amqp() {
            Some(url) => Arc::new(AmqpBus::connect(url, settings.bus()).await?),
            None => Arc::new(MemoryBus::new(settings.bus())),
        };
        let faults = Faults::parse(&settings.faults).map_err(anyhow::Error::msg)?;
        if faults.any() {
            tracing::warn!(?faults, "injecting faults into the bus");
            bus = Arc::new(FaultyBus::new(bus, faults));
        }
        Ok(Runtime::with_bus(settings, bus))
    }

    /// A runtime over an existing bus.
    pub fn with_bus(settings: Settings, bus: Arc<dyn Bus>) -> Runtime {
        Runtime {
            settings: Arc::new(settings),
            bus,
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            relays_stop: CancellationToken::new(),
            relays_running: TaskTracker::new(),
            relays: Arc::default(),
            outboxes: Arc::default(),
        }
    }

    /// Connects `service` to its database and runs its migrations `M`;
    /// its outbox relay starts with [`Runtime::start_relays`].
    pub async fn service_db<M: sea_orm_migration::MigratorTrait>(
        &self,
        service: &str,
    ) -> Result<(DatabaseConnection, OutboxSignal), DbErr> {
        let db = crate::db::connect_migrated::<M>(&self.settings, service).await?;
        let signal = OutboxSignal::default();
        self.outboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(db.clone());
        self.relays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Relay::new(db.clone(), self.bus.clone(), signal.clone()));
        Ok((db, signal))
    }

    /// Starts the outbox relays of the parts started so far: once every
    /// part of the process has subscribed. On the in-process bus a queue
    /// exists only once its part subscribed, and an event published before
    /// reaches the queues there are and is done: an event left in booking's
    /// outbox at a stop, relayed at the next start before partnership
    /// subscribed, reached inventory alone and was lost to partnership.
    /// (RabbitMQ's queues are declared by `duikou migrate`.)
    pub fn start_relays(&self) {
        let relays = std::mem::take(&mut *self.relays.lock().unwrap_or_else(|p| p.into_inner()));
        for relay in relays {
            relay.spawn(self.relays_stop.clone(), &self.relays_running);
        }
    }

    /// Stops consumers and background tasks without waiting for them.
    pub fn halt(&self) {
        self.bus.halt();
        self.cancel.cancel();
        self.relays_stop.cancel();
    }

    /// Stops the background sweeps (their round finished), then consuming
    /// (in-flight handlers finish), then the relays. Sweeps first: one
    /// going on while the bus stopped called parts of this very process
    /// that no longer answered — booking's expiry sweep, not told by a
    /// stopped payment that a payment was in flight, expired the booking
    /// being paid, and its capture was then refunded in full.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tracker.close();
        // Bounded: the consumers still take deliveries meanwhile, and a
        // round that hangs must not hold up the stop (it is waited for
        // again, as before, once the bus stopped).
        if tokio::time::timeout(SWEEPS_END_WITHIN, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("a background round is still running; stopping the bus beside it");
        }
        // On the in-process bus an event is delivered only while its part
        // consumes, and one relayed from a handler's commit goes on to the
        // next part: the outboxes are let empty first (a few seconds at
        // most), or what they held waits for the next start, and the data
        // left behind reads as inconsistent until then. RabbitMQ keeps
        // what is published for parts that stopped.
        if self.settings.amqp().is_none() {
            self.settle_outboxes().await;
        }
        self.bus.shutdown().await;
        self.relays_stop.cancel();
        self.relays_running.close();
        self.relays_running.wait().await;
        self.tracker.wait().await;
        self.bus.close().await;
    }

    /// Waits until every outbox of this process is empty, for at most
    /// [`SETTLE_FOR`], or until a second goes by with no row published
    /// (an event no part takes stays for the next start).
    async fn settle_outboxes(&self) {
        use sea_orm::ConnectionTrait;
        let dbs = self
            .outboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let until = tokio::time::Instant::now() + SETTLE_FOR;
        let mut last = (usize::MAX, tokio::time::Instant::now());
        loop {
            let mut left = 0;
            for db in &dbs {
                let count = crate::outbox::stmt(
                    db.get_database_backend(),
                    "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM outbox",
                    vec![],
                );
                match db.query_one_raw(count).await {
                    Ok(Some(row)) => {
                        left +=
                            usize::try_from(row.try_get::<i64>("", "n").unwrap_or(0)).unwrap_or(0);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "stopping: an outbox not read; its events wait for the next start");
                        return;
                    }
                }
            }
            let now = tokio::time::Instant::now();
            if left == 0 || now >= until {
                if left > 0 {
                    tracing::warn!(left, "stopping: events left for the next start");
                }
                return;
            }
            if left < last.0 {
                last = (left, now);
            } else if now - last.1 >= std::time::Duration::from_secs(1) {
                tracing::warn!(
                    left,
                    "stopping: events no part takes, left for the next start"
                );
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// The kernel's migration (outbox and inbox), first in every service's list.
pub struct KernelMigration;

impl sea_orm_migration::MigrationName for KernelMigration {
    fn name(&self) -> &str {
        "m20261123_000000_kernel_outbox_inbox"
    }
}

#[async_trait::async_trait]
impl sea_orm_migration::MigrationTrait for KernelMigration {
    async fn up(&self, manager: &sea_orm_migration::SchemaManager) -> Result<(), DbErr> {
        use sea_orm::ConnectionTrait;
        let conn = manager.get_connection();
        for ddl in crate::outbox::kernel_ddl(conn.get_database_backend()) {
            conn.execute_unprepared(&ddl).await?;
        }
        Ok(())
    }
}

/// The kernel's second migration: the inbox indexed by when each event was
/// handled, for the relay's pruning (a week of rows scanned each time
/// otherwise); last in every service's list.
pub struct KernelInboxByAge;

impl sea_orm_migration::MigrationName for KernelInboxByAge {
    fn name(&self) -> &str {
        "m20261208_000000_kernel_inbox_by_age"
    }
}

#[async_trait::async_trait]
impl sea_orm_migration::MigrationTrait for KernelInboxByAge {
    async fn up(&self, manager: &sea_orm_migration::SchemaManager) -> Result<(), DbErr> {
        use sea_orm::ConnectionTrait;
        manager
            .get_connection()
            .execute_unprepared(crate::outbox::INBOX_BY_AGE)
            .await?;
        Ok(())
    }
}

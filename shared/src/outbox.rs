//! The transactional outbox and the inbox.
//!
//! A state change and the events it emits commit in one transaction
//! ([`enqueue`]); the [`Relay`] publishes outbox rows in order with publisher
//! confirms and deletes the confirmed ones. On PostgreSQL several relays (N
//! copies of a service) share the table with `FOR UPDATE SKIP LOCKED`; on
//! SQLite one process owns the file, so one relay reads without a lock.
//!
//! The inbox makes handlers idempotent: [`begin_once`] opens the handler's
//! transaction with the event id recorded; a redelivered event finds its row
//! and is skipped.

use crate::bus::{Bus, BusError};
use crate::envelope::Envelope;
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, Statement,
    TransactionTrait, Value,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, warn};

/// A statement written with PostgreSQL's `$n` placeholders, made to run on
/// either backend (SQLite understands the same numbers as `?n`).
pub fn stmt(backend: DbBackend, sql: &str, values: Vec<Value>) -> Statement {
    let sql = match backend {
        DbBackend::Sqlite => sql.replace('$', "?"),
        _ => sql.to_owned(),
    };
    Statement::from_sql_and_values(backend, sql, values)
}

/// The kernel's tables: `outbox` and `inbox`. Every service migrates them first.
pub fn kernel_ddl(backend: DbBackend) -> Vec<String> {
    [
        "CREATE TABLE IF NOT EXISTS outbox (
            seq BIGSERIAL PRIMARY KEY,
            event_id UUID NOT NULL,
            kind TEXT NOT NULL,
            body TEXT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        "CREATE TABLE IF NOT EXISTS inbox (
            event_id UUID PRIMARY KEY,
            kind TEXT NOT NULL,
            handled_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    ]
    .iter()
    .map(|sql| crate::db::portable_ddl(backend, sql))
    .collect()
}

fn id_value(backend: DbBackend, id: uuid::Uuid) -> Value {
    match backend {
        DbBackend::Sqlite => id.to_string().into(),
        _ => id.into(),
    }
}

/// Adds events to the outbox inside the caller's transaction.
pub async fn enqueue<C: ConnectionTrait>(conn: &C, events: &[Envelope]) -> Result<(), DbErr> {
    if events.is_empty() {
        return Ok(());
    }
    let backend = conn.get_database_backend();
    let mut insert = Query::insert();
    insert
        .into_table("outbox")
        .columns(["event_id", "kind", "body"]);
    for env in events {
        let body = String::from_utf8(env.to_bytes()).unwrap_or_default();
        insert.values_panic([
            Expr::val(id_value(backend, env.id)),
            Expr::val(env.kind.clone()),
            Expr::val(body),
        ]);
    }
    conn.execute(&insert).await?;
    Ok(())
}

/// Opens the handler's transaction with `env` recorded in the inbox, or
/// returns `None` (nothing to do) when the event was already handled.
pub async fn begin_once(
    db: &DatabaseConnection,
    env: &Envelope,
) -> Result<Option<DatabaseTransaction>, DbErr> {
    let txn = db.begin().await?;
    let backend = txn.get_database_backend();
    let inserted = txn
        .execute_raw(stmt(
            backend,
            "INSERT INTO inbox (event_id, kind) VALUES ($1, $2) ON CONFLICT (event_id) DO NOTHING",
            vec![id_value(backend, env.id), env.kind.clone().into()],
        ))
        .await?;
    if inserted.rows_affected() == 0 {
        debug!(id = %env.id, "event already handled; skipping");
        txn.rollback().await?;
        return Ok(None);
    }
    Ok(Some(txn))
}

/// Wakes the relay after a commit that enqueued events.
#[derive(Clone, Default)]
pub struct OutboxSignal(Arc<Notify>);

impl OutboxSignal {
    /// Call after committing a transaction that enqueued events.
    pub fn committed(&self) {
        self.0.notify_one();
    }
}

/// Deletes the outbox rows `seqs`. On PostgreSQL one array parameter (its
/// text form: numbers only), so every batch size is the same prepared
/// statement instead of one per size.
fn delete_rows(backend: DbBackend, seqs: Vec<i64>) -> Statement {
    match backend {
        DbBackend::Postgres => {
            let list: Vec<String> = seqs.iter().map(i64::to_string).collect();
            stmt(
                backend,
                "DELETE FROM outbox WHERE seq = ANY(CAST($1 AS BIGINT[]))",
                vec![format!("{{{}}}", list.join(",")).into()],
            )
        }
        _ => {
            let mut delete = Query::delete();
            delete
                .from_table("outbox")
                .and_where(Expr::col("seq").is_in(seqs));
            backend.build(&delete)
        }
    }
}

/// Publishes outbox rows to the bus.
pub struct Relay {
    db: DatabaseConnection,
    bus: Arc<dyn Bus>,
    signal: OutboxSignal,
    batch: u64,
    poll: Duration,
}

impl Relay {
    /// A relay for `db`'s outbox; wake it through `signal`.
    pub fn new(db: DatabaseConnection, bus: Arc<dyn Bus>, signal: OutboxSignal) -> Relay {
        Relay {
            db,
            bus,
            signal,
            batch: 256,
            // Rows committed by another process (or left by a crash) are
            // found by polling; this process's own commits wake the relay.
            poll: Duration::from_millis(500),
        }
    }

    /// Publishes up to one batch; returns how many rows were published.
    pub async fn relay_once(&self) -> Result<usize, RelayError> {
        match self.db.get_database_backend() {
            DbBackend::Sqlite => {
                // One process owns the file: no lock needed, and holding a read
                // transaction across the publish would block writers.
                let rows = self.take(&self.db, false).await?;
                self.publish_and_delete(&self.db, rows).await
            }
            _ => {
                let txn = self.db.begin().await?;
                let rows = self.take(&txn, true).await?;
                let result = self.publish_and_delete(&txn, rows).await;
                txn.commit().await?;
                result
            }
        }
    }

    async fn take<C: ConnectionTrait>(
        &self,
        conn: &C,
        lock: bool,
    ) -> Result<Vec<(i64, String)>, DbErr> {
        let sql = if lock {
            "SELECT seq, body FROM outbox ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED"
        } else {
            "SELECT seq, body FROM outbox ORDER BY seq LIMIT $1"
        };
        let backend = conn.get_database_backend();
        let rows = conn
            .query_all_raw(stmt(backend, sql, vec![(self.batch as i64).into()]))
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<i64>("", "seq")?,
                    r.try_get::<String>("", "body")?,
                ))
            })
            .collect()
    }

    /// Publishes, then deletes the confirmed rows (in the same transaction as
    /// the lock on PostgreSQL). Failed rows stay for the next round.
    async fn publish_and_delete<C: ConnectionTrait>(
        &self,
        conn: &C,
        rows: Vec<(i64, String)>,
    ) -> Result<usize, RelayError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let mut done = Vec::with_capacity(rows.len());
        let mut events = Vec::with_capacity(rows.len());
        let mut seqs = Vec::with_capacity(rows.len());
        for (seq, body) in rows {
            match Envelope::from_bytes(body.as_bytes()) {
                Ok(env) => {
                    events.push(env);
                    seqs.push(seq);
                }
                Err(e) => {
                    // Only this crate writes rows; a corrupt one must not block the rest.
                    error!(seq, error = %e, "dropping an outbox row that is not an envelope");
                    done.push(seq);
                }
            }
        }
        let results = self.bus.publish(&events).await;
        let mut first_error = None;
        for ((seq, result), env) in seqs.into_iter().zip(results).zip(&events) {
            match result {
                Ok(()) => {
                    metrics::counter!("duikou_events_published_total", "type" => env.kind.clone())
                        .increment(1);
                    done.push(seq);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let published = done.len();
        if !done.is_empty() {
            conn.execute_raw(delete_rows(conn.get_database_backend(), done))
                .await?;
        }
        match first_error {
            Some(e) => Err(RelayError::Bus(e)),
            None => Ok(published),
        }
    }

    /// Runs until `cancel`: publishes whatever is pending whenever woken or
    /// every poll interval, backing off while the broker is away.
    pub fn spawn(self, cancel: CancellationToken, tracker: &TaskTracker) {
        tracker.spawn(async move {
            let mut backoff = Duration::from_millis(50);
            loop {
                match self.relay_once().await {
                    Ok(n) if n as u64 >= self.batch => continue,
                    Ok(_) => backoff = Duration::from_millis(50),
                    Err(e) => {
                        warn!(error = %e, "outbox relay could not publish; will retry");
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            () = cancel.cancelled() => break,
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        continue;
                    }
                }
                tokio::select! {
                    () = self.signal.0.notified() => {}
                    () = tokio::time::sleep(self.poll) => {}
                    () = cancel.cancelled() => break,
                }
            }
            // Last round so committed events are not left behind on a clean stop.
            let _ = self.relay_once().await;
        });
    }
}

/// Why a relay round failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The outbox could not be read or updated.
    #[error("database: {0}")]
    Db(#[from] DbErr),
    /// The bus refused or could not take an event.
    #[error("bus: {0}")]
    Bus(#[from] BusError),
}

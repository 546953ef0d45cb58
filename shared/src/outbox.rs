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
use tracing::{debug, error, info, warn};

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

/// The inbox's index by age ([`crate::runtime::KernelInboxByAge`]; may be
/// built by hand first, `CONCURRENTLY`, under this name).
pub const INBOX_BY_AGE: &str = "CREATE INDEX IF NOT EXISTS inbox_handled_at ON inbox (handled_at)";

fn id_value(backend: DbBackend, id: uuid::Uuid) -> Value {
    match backend {
        DbBackend::Sqlite => id.to_string().into(),
        _ => id.into(),
    }
}

/// An event's outbox row: `event_id`, `kind`, `body`, as bind values —
/// for a statement that writes the row itself (see [`enqueue`]).
pub fn row_values(backend: DbBackend, env: &Envelope) -> [Value; 3] {
    let body = String::from_utf8(env.to_bytes()).unwrap_or_default();
    [
        id_value(backend, env.id),
        env.kind.clone().into(),
        body.into(),
    ]
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
        insert.values_panic(row_values(backend, env).map(Expr::val));
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
    if !record_once(&txn, env.id, &env.kind).await? {
        debug!(id = %env.id, "event already handled; skipping");
        txn.rollback().await?;
        return Ok(None);
    }
    Ok(Some(txn))
}

/// Records `id` (an event's, or an RPC call's) in the inbox inside the
/// caller's transaction; false when it was there already: handled before.
pub async fn record_once<C: ConnectionTrait>(
    conn: &C,
    id: uuid::Uuid,
    kind: &str,
) -> Result<bool, DbErr> {
    let backend = conn.get_database_backend();
    let inserted = conn
        .execute_raw(stmt(
            backend,
            "INSERT INTO inbox (event_id, kind) VALUES ($1, $2) ON CONFLICT (event_id) DO NOTHING",
            vec![id_value(backend, id), kind.into()],
        ))
        .await?;
    Ok(inserted.rows_affected() > 0)
}

/// Whether `id` is recorded in the inbox ([`record_once`]).
pub async fn recorded<C: ConnectionTrait>(conn: &C, id: uuid::Uuid) -> Result<bool, DbErr> {
    let backend = conn.get_database_backend();
    let found = conn
        .query_one_raw(stmt(
            backend,
            "SELECT 1 AS found FROM inbox WHERE event_id = $1",
            vec![id_value(backend, id)],
        ))
        .await?;
    Ok(found.is_some())
}

/// How long an event's inbox row is kept: far longer than any redelivery
/// (the delivery limit is spent in seconds to minutes), short enough that
/// the table does not grow with every event a service ever handled.
pub const INBOX_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// How often a relay prunes its service's inbox.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Deletes inbox rows handled before `older_than` ago; returns how many.
pub async fn prune_inbox(db: &DatabaseConnection, older_than: Duration) -> Result<u64, DbErr> {
    prune_inbox_until(db, older_than, &CancellationToken::new()).await
}

/// [`prune_inbox`], stopping between batches once `stop` is cancelled (a
/// stop waited for a first prune of millions of rows: 20 s for four).
pub async fn prune_inbox_until(
    db: &DatabaseConnection,
    older_than: Duration,
    stop: &CancellationToken,
) -> Result<u64, DbErr> {
    let before = chrono::Utc::now()
        - chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
    let backend = db.get_database_backend();
    // SQLite keeps `handled_at` as text in its own format; compare like
    // with like.
    let before: Value = match backend {
        DbBackend::Sqlite => before.format("%Y-%m-%d %H:%M:%S").to_string().into(),
        _ => before.into(),
    };
    // In batches, each its own commit: a first prune of a large inbox
    // holds no lock for long, and what a crash interrupts stays done.
    let mut total = 0;
    loop {
        let done = db
            .execute_raw(stmt(
                backend,
                "DELETE FROM inbox WHERE event_id IN
                    (SELECT event_id FROM inbox WHERE handled_at < $1 LIMIT $2)",
                vec![before.clone(), PRUNE_BATCH.into()],
            ))
            .await?
            .rows_affected();
        total += done;
        if done < PRUNE_BATCH as u64 || stop.is_cancelled() {
            return Ok(total);
        }
    }
}

/// Inbox rows one pruning statement deletes at most.
const PRUNE_BATCH: i64 = 10_000;

/// Wakes the relay after a commit that enqueued events.
#[derive(Clone, Default)]
pub struct OutboxSignal(Arc<Notify>);

impl OutboxSignal {
    /// Call after committing a transaction that enqueued events.
    pub fn committed(&self) {
        self.0.notify_one();
    }
}

/// Deletes the outbox rows `seqs` (SQLite's relay; PostgreSQL's deletes
/// as it reads).
fn delete_rows(seqs: Vec<i64>) -> Statement {
    let mut delete = Query::delete();
    delete
        .from_table("outbox")
        .and_where(Expr::col("seq").is_in(seqs));
    DbBackend::Sqlite.build(&delete)
}

/// An outbox row taken by a PostgreSQL relay round (all of it, to put
/// back as it was if it cannot be published).
struct Taken {
    seq: i64,
    event_id: uuid::Uuid,
    kind: String,
    body: String,
    created_at: chrono::DateTime<chrono::Utc>,
}

/// Re-inserts rows a round deleted but could not publish, with their own
/// `seq`, so their order and age are kept.
fn put_back(rows: &[&Taken]) -> Statement {
    let mut insert = Query::insert();
    insert
        .into_table("outbox")
        .columns(["seq", "event_id", "kind", "body", "created_at"]);
    for t in rows {
        insert.values_panic([
            Expr::val(t.seq),
            Expr::val(t.event_id),
            Expr::val(t.kind.clone()),
            Expr::val(t.body.clone()),
            Expr::val(t.created_at),
        ]);
    }
    DbBackend::Postgres.build(&insert)
}

/// Publishes outbox rows to the bus.
pub struct Relay {
    db: DatabaseConnection,
    bus: Arc<dyn Bus>,
    signal: OutboxSignal,
    batch: u64,
    poll: Duration,
    parked: std::sync::Mutex<Parked>,
}

/// How long rows the broker found unroutable are passed over before they
/// are tried again (their queue may exist by then).
const PARK_FOR: Duration = Duration::from_secs(5);

/// The longest one pass over unroutable rows lasts, however often new ones
/// come: then the relay sweeps from the head again (a row committed late
/// with a lower seq, behind the pass, waits no longer than this; one pass
/// reaches past any backlog long before).
const PARK_AT_MOST: Duration = Duration::from_secs(60);

/// Where a relay resumes after a round the broker found unroutable rows
/// in: past them, until [`PARK_FOR`] has gone by without passing any more,
/// so that rows behind them — for queues that do exist — still go out,
/// however many there are. Without it, a batch's worth of events no queue
/// is bound for yet (a service not deployed) at the head of the outbox
/// would stop the whole service's events. (A row committed meanwhile with
/// a lower seq waits for the next sweep from the head. The time counted
/// from the first row passed over, a backlog of unroutable rows longer
/// than one such sweep reached was swept from the head again and again,
/// and the rows behind it never went out.)
#[derive(Default)]
struct Parked {
    after: Option<i64>,
    first_passed: Option<std::time::Instant>,
    last_passed: Option<std::time::Instant>,
}

impl Parked {
    /// The seq to resume after at `now` (none once the time is up).
    fn current(&mut self, now: std::time::Instant) -> Option<i64> {
        if self
            .last_passed
            .is_some_and(|at| now.duration_since(at) >= PARK_FOR)
            || self
                .first_passed
                .is_some_and(|at| now.duration_since(at) >= PARK_AT_MOST)
        {
            *self = Parked::default();
        }
        self.after
    }

    fn pass(&mut self, seq: i64, now: std::time::Instant) {
        self.first_passed.get_or_insert(now);
        self.last_passed = Some(now);
        self.after = Some(
            self.after
                .map_or(seq, |after| std::cmp::Ord::max(after, seq)),
        );
    }
}

/// `WHERE seq > …` while rows are passed over, or nothing. The seq is the
/// outbox's own integer, written as a literal.
fn passing_over(after: Option<i64>) -> String {
    after
        .map(|a| format!(" WHERE seq > {a}"))
        .unwrap_or_default()
}

/// How long a stopping relay goes on publishing what is left.
const LAST_ROUNDS_FOR: Duration = Duration::from_secs(10);

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
            parked: std::sync::Mutex::default(),
        }
    }

    /// Takes at most `batch` rows a round (256 by default).
    pub fn with_batch(mut self, batch: u64) -> Relay {
        self.batch = std::cmp::Ord::max(batch, 1);
        self
    }

    fn parked(&self) -> Option<i64> {
        self.parked
            .lock()
            .ok()
            .and_then(|mut p| p.current(std::time::Instant::now()))
    }

    /// Publishes up to one batch; returns how many rows were published.
    pub async fn relay_once(&self) -> Result<usize, RelayError> {
        match self.db.get_database_backend() {
            DbBackend::Sqlite => {
                // One process owns the file: no lock needed, and holding a read
                // transaction across the publish would block writers.
                let rows = self.take(&self.db).await?;
                let (done, result) = self
                    .publish(rows.iter().map(|(seq, body)| (*seq, body.as_str())))
                    .await;
                self.park_unroutable(rows.iter().map(|(seq, _)| *seq), &result);
                if !done.is_empty() {
                    self.db.execute_raw(delete_rows(done)).await?;
                }
                result
            }
            _ => self.relay_locked().await,
        }
    }

    /// PostgreSQL's round: the batch is deleted (and so locked; other
    /// relays skip it) in the statement that reads it, published, and the
    /// transaction committed — three round trips. Rows that could not be
    /// published are put back as they were; if none was, the transaction
    /// is rolled back instead.
    async fn relay_locked(&self) -> Result<usize, RelayError> {
        let txn = self.db.begin().await?;
        let rows = txn
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                format!(
                    "DELETE FROM outbox WHERE seq IN
                       (SELECT seq FROM outbox{} ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED)
                     RETURNING seq, event_id, kind, body, created_at",
                    passing_over(self.parked())
                ),
                [(self.batch as i64).into()],
            ))
            .await?;
        let mut taken = rows
            .iter()
            .map(|r| {
                Ok(Taken {
                    seq: r.try_get("", "seq")?,
                    event_id: r.try_get("", "event_id")?,
                    kind: r.try_get("", "kind")?,
                    body: r.try_get("", "body")?,
                    created_at: r.try_get("", "created_at")?,
                })
            })
            .collect::<Result<Vec<_>, DbErr>>()?;
        if taken.is_empty() {
            txn.commit().await?;
            return Ok(0);
        }
        taken.sort_by_key(|t| t.seq);
        let (done, result) = self
            .publish(taken.iter().map(|t| (t.seq, t.body.as_str())))
            .await;
        self.park_unroutable(taken.iter().map(|t| t.seq), &result);
        if done.is_empty() {
            txn.rollback().await?;
            return result;
        }
        if done.len() < taken.len() {
            let left: Vec<&Taken> = taken.iter().filter(|t| !done.contains(&t.seq)).collect();
            txn.execute_raw(put_back(&left)).await?;
        }
        txn.commit().await?;
        result
    }

    async fn take<C: ConnectionTrait>(&self, conn: &C) -> Result<Vec<(i64, String)>, DbErr> {
        let backend = conn.get_database_backend();
        let rows = conn
            .query_all_raw(stmt(
                backend,
                &format!(
                    "SELECT seq, body FROM outbox{} ORDER BY seq LIMIT $1",
                    passing_over(self.parked())
                ),
                vec![(self.batch as i64).into()],
            ))
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

    /// After a round whose failures were unroutable events: the next
    /// rounds resume past this one's rows for a while. (A broker that is
    /// away fails with another error; nothing is passed over then, the
    /// round backs off.)
    fn park_unroutable(
        &self,
        taken: impl Iterator<Item = i64>,
        result: &Result<usize, RelayError>,
    ) {
        if let Err(RelayError::Bus(BusError::Unroutable(_))) = result
            && let (Some(last), Ok(mut parked)) = (taken.max(), self.parked.lock())
        {
            warn!("no queue is bound for some outbox events yet; passing over them for a while");
            parked.pass(last, std::time::Instant::now());
        }
    }

    /// Publishes `rows`; returns the seqs that are done with (published, or
    /// not an envelope at all) and the first failure, if any. Failed rows
    /// are for the next round.
    async fn publish<'a>(
        &self,
        rows: impl ExactSizeIterator<Item = (i64, &'a str)>,
    ) -> (Vec<i64>, Result<usize, RelayError>) {
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
        if events.is_empty() {
            return (done, Ok(0));
        }
        let results = self.bus.publish(&events).await;
        let mut first_error = None;
        let mut published = 0;
        for ((seq, result), env) in seqs.into_iter().zip(results).zip(&events) {
            match result {
                Ok(()) => {
                    metrics::counter!("duikou_events_published_total", "type" => env.kind.clone())
                        .increment(1);
                    done.push(seq);
                    published += 1;
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => (done, Err(RelayError::Bus(e))),
            None => (done, Ok(published)),
        }
    }

    /// Runs until `cancel`: publishes whatever is pending whenever woken or
    /// every poll interval, backing off while the broker is away.
    pub fn spawn(self, cancel: CancellationToken, tracker: &TaskTracker) {
        // The inbox is pruned beside the relay, at the start and then
        // hourly: a process restarted more often than hourly (a crash loop,
        // frequent deploys) pruned never, when it waited an hour.
        let (db, stop) = (self.db.clone(), cancel.clone());
        tracker.spawn(async move {
            loop {
                match prune_inbox_until(&db, INBOX_KEEP, &stop).await {
                    Ok(0) => {}
                    Ok(n) => info!(rows = n, "pruned the inbox"),
                    Err(e) => warn!(error = %e, "could not prune the inbox; will try later"),
                }
                tokio::select! {
                    () = tokio::time::sleep(PRUNE_EVERY) => {}
                    () = stop.cancelled() => break,
                }
            }
        });
        tracker.spawn(async move {
            let mut backoff = Duration::from_millis(50);
            loop {
                match self.relay_once().await {
                    Ok(n) if n as u64 >= self.batch => continue,
                    Ok(_) => backoff = Duration::from_millis(50),
                    // Passed over: the rows behind go out next round, at once
                    // (each such round moves past its rows, so this ends).
                    Err(RelayError::Bus(BusError::Unroutable(_))) => {
                        backoff = Duration::from_millis(50);
                        continue;
                    }
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
            // Last rounds, so committed events are not left behind on a
            // clean stop (handlers let finish commit some as it stops): until
            // one finds less than a batch, fails, or the stop has waited
            // long enough.
            let until = std::time::Instant::now() + LAST_ROUNDS_FOR;
            while let Ok(n) = self.relay_once().await {
                if u64::try_from(n).unwrap_or(u64::MAX) < self.batch
                    || std::time::Instant::now() >= until
                {
                    break;
                }
            }
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

#[cfg(test)]
mod tests {
    use super::{PARK_AT_MOST, PARK_FOR, Parked};
    use std::time::{Duration, Instant};

    #[test]
    fn a_relay_passing_over_rows_goes_on_until_it_passes_none_for_a_while() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut parked = Parked::default();
        assert_eq!(parked.current(at(0)), None);
        parked.pass(256, at(0));
        // Still passing rows over 4 s later, and again 4 s after that: the
        // sweep goes on past them (it went back to the head at 5 s).
        parked.pass(512, at(4_000));
        assert_eq!(parked.current(at(8_000)), Some(512));
        parked.pass(768, at(8_000));
        assert_eq!(parked.current(at(12_000)), Some(768));
        // Nothing passed over for PARK_FOR: back to the head.
        let quiet = 8_000 + u64::try_from(PARK_FOR.as_millis()).unwrap_or(5_000);
        assert_eq!(parked.current(at(quiet)), None);
    }

    /// Rows passed over every few seconds without end (a part not deployed
    /// while its events keep coming): the pass still ends after
    /// PARK_AT_MOST, so a row committed late behind it goes out.
    #[test]
    fn a_pass_over_rows_ends_after_a_minute_however_often_rows_come() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let most = u64::try_from(PARK_AT_MOST.as_millis()).unwrap_or(60_000);
        let mut parked = Parked::default();
        let mut ms = 0;
        while ms < most {
            assert_eq!(parked.current(at(ms)), (ms > 0).then_some(100), "{ms}");
            parked.pass(100, at(ms));
            ms += 3_000;
        }
        assert_eq!(parked.current(at(most)), None, "back to the head");
        // And a new pass begins with the next rows passed over.
        parked.pass(200, at(most));
        assert_eq!(parked.current(at(most + 1)), Some(200));
    }
}

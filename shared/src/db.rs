//! Database connections: each service its own database — on PostgreSQL
//! `<db_prefix><service>`, created if missing; in embedded mode a SQLite file
//! under the data directory.
//!
//! Every part names the columns it reads, never `SELECT *` or
//! `RETURNING *`: a statement a running replica has prepared with `*`
//! breaks on PostgreSQL once a later migration adds a column to its table
//! ("cached plan must not change result type"), and a release adds columns
//! while the previous one still runs (docs/operations.md, upgrades).

use crate::config::Settings;
use crate::outbox::stmt;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr};
use std::time::Duration;
use tracing::info;

/// The database name (or file stem) of `service`.
pub fn database_name(settings: &Settings, service: &str) -> String {
    format!("{}{service}", settings.db_prefix)
}

/// Whether a URL's host (as `host_str` gives it: an IPv6 address in
/// brackets) is `localhost` or a loopback address.
pub fn loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Replaces the database in a PostgreSQL URL. On a loopback address with
/// no `sslmode` given, TLS is turned off: it protects nothing between two
/// processes of one machine, and it cost the booking path a tenth of its
/// CPU (both ends encrypting every statement; docs/performance.md). Say
/// `sslmode=require` (or any sslmode) in the URL to decide otherwise.
pub fn with_database(url: &str, database: &str) -> Result<String, DbErr> {
    let mut parsed = url::Url::parse(url)
        .map_err(|e| DbErr::Custom(format!("DUIKOU_POSTGRES_URL is not a URL: {e}")))?;
    // Any other scheme reaches sea-orm, whose refusal quotes the whole URL,
    // password and all.
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return Err(DbErr::Custom(format!(
            "DUIKOU_POSTGRES_URL: a PostgreSQL URL begins postgres:// (or postgresql://), not {}://",
            parsed.scheme()
        )));
    }
    parsed.set_path(&format!("/{database}"));
    let loopback = parsed.host_str().is_some_and(loopback_host);
    // A `host` or `hostaddr` parameter is where the driver connects, over
    // the URL's own host: the server may be elsewhere, TLS is left as said.
    let elsewhere_maybe = parsed
        .query_pairs()
        .any(|(k, _)| k == "sslmode" || k == "host" || k == "hostaddr");
    if loopback && !elsewhere_maybe {
        parsed.query_pairs_mut().append_pair("sslmode", "disable");
    }
    Ok(parsed.to_string())
}

/// Connects a pool; when the pool gives up waiting for a first connection,
/// says why (its own error is only "pool timed out") by trying the server's
/// address once: refused, unreachable, or reached but not let in.
async fn connect_explained(
    server_url: &str,
    options: impl Into<ConnectOptions>,
) -> Result<DatabaseConnection, DbErr> {
    let error = match Database::connect(options).await {
        Ok(db) => return Ok(db),
        Err(e) => e,
    };
    if !error.to_string().contains("timed out") {
        return Err(error);
    }
    let Some((host, port)) = url::Url::parse(server_url)
        .ok()
        .and_then(|u| Some((u.host_str()?.to_owned(), u.port().unwrap_or(5432))))
    else {
        return Err(error);
    };
    let address = format!("{host}:{port}");
    let tried = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(address.as_str()),
    )
    .await;
    let why = match tried {
        Ok(Ok(_)) => "answers, but gave no connection in time".to_owned(),
        Ok(Err(e)) => format!("cannot be reached ({e}); is it running, and is the port right?"),
        Err(_) => "did not answer in 2 s".to_owned(),
    };
    Err(DbErr::Custom(format!(
        "{error}: PostgreSQL at {address} {why}"
    )))
}

/// One connection to the server's `postgres` database, to create or drop
/// the services' own: given up after 5 s as the services' pools are (the
/// library's default was 30 s, so a start against a server away said
/// nothing for half a minute).
fn maintenance(server_url: &str) -> Result<ConnectOptions, DbErr> {
    let mut options = ConnectOptions::new(with_database(server_url, "postgres")?);
    options
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    Ok(options)
}

/// Creates the database on the server unless it exists (safe under races).
pub async fn ensure_database(server_url: &str, database: &str) -> Result<(), DbErr> {
    let admin = connect_explained(server_url, maintenance(server_url)?).await?;
    let exists = admin
        .query_one_raw(stmt(
            DbBackend::Postgres,
            "SELECT 1 AS one FROM pg_database WHERE datname = $1",
            vec![database.into()],
        ))
        .await?
        .is_some();
    if !exists {
        let quoted = database.replace('"', "\"\"");
        match admin
            .execute_unprepared(&format!("CREATE DATABASE \"{quoted}\""))
            .await
        {
            Ok(_) => info!(database, "created database"),
            // Another process created it between our check and our create
            // (or at the same instant: then PostgreSQL reports the race as
            // a duplicate key in its catalogue).
            Err(e)
                if e.to_string().contains("already exists")
                    || e.to_string().contains("pg_database_datname_index") => {}
            Err(e) => return Err(e),
        }
    }
    admin.close().await
}

/// Drops a database (test cleanup), closing its connections.
pub async fn drop_database(server_url: &str, database: &str) -> Result<(), DbErr> {
    let admin = connect_explained(server_url, maintenance(server_url)?).await?;
    let quoted = database.replace('"', "\"\"");
    admin
        .execute_unprepared(&format!(
            "DROP DATABASE IF EXISTS \"{quoted}\" WITH (FORCE)"
        ))
        .await?;
    admin.close().await
}

/// How long a PostgreSQL connection may sit in an open transaction doing
/// nothing before the server ends the session (rolling the transaction
/// back). No part waits on anything but the database inside a
/// transaction, so only a stuck task meets it; and such a transaction
/// would hold its locks and rows indefinitely, and stamp ledger entries
/// with a moment the payout runs' mark (an hour behind) could pass
/// before they commit (services/payment, `MARK_BEHIND`).
pub const IDLE_IN_TRANSACTION_LIMIT: &str = "SET idle_in_transaction_session_timeout = '10min'";

/// Connects `service` to its own database, creating it if need be.
pub async fn connect(settings: &Settings, service: &str) -> Result<DatabaseConnection, DbErr> {
    open(settings, service, true).await
}

/// Connects to `service`'s database only if it exists (a read-only tool
/// such as `duikou check` must not leave empty databases behind a typo).
pub async fn connect_existing(
    settings: &Settings,
    service: &str,
) -> Result<DatabaseConnection, DbErr> {
    open(settings, service, false).await
}

async fn open(
    settings: &Settings,
    service: &str,
    create: bool,
) -> Result<DatabaseConnection, DbErr> {
    let name = database_name(settings, service);
    match settings.postgres() {
        Some(server) => {
            if create {
                ensure_database(server, &name).await?;
            }
            let mut options = ConnectOptions::new(with_database(server, &name)?);
            options
                .max_connections(settings.db_pool_size())
                .min_connections(1)
                .acquire_timeout(Duration::from_secs(5))
                .map_sqlx_postgres_pool_opts(|p| {
                    p.after_connect(|conn, _| {
                        Box::pin(async move {
                            sea_orm::sqlx::query(IDLE_IN_TRANSACTION_LIMIT)
                                .execute(conn)
                                .await
                                .map(drop)
                        })
                    })
                })
                .sqlx_logging(false);
            connect_explained(server, options).await
        }
        None => {
            let path = sqlite_file(settings, service);
            if !create && !path.exists() {
                return Err(DbErr::Custom(format!(
                    "no database {} (has Duikou run with these settings?)",
                    path.display()
                )));
            }
            std::fs::create_dir_all(&settings.data_dir).map_err(|e| {
                DbErr::Custom(format!(
                    "cannot create {}: {e}",
                    settings.data_dir.display()
                ))
            })?;
            // The file by name, not in a URL: a data directory with a space,
            // `?` or `%` in it was read as the URL's syntax.
            let mut options = ConnectOptions::new("sqlite://duikou.db");
            options
                .map_sqlx_sqlite_opts(move |o| {
                    o.filename(&path)
                        .create_if_missing(true)
                        .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                        .busy_timeout(std::time::Duration::from_secs(5))
                        .foreign_keys(true)
                })
                .map_sqlx_sqlite_pool_opts(|p| p.after_release(|conn, _| Box::pin(settled(conn))));
            // One connection (`db_pool_size`): SQLite has one writer
            // anyway, and a second connection inside an open transaction
            // would wait on itself.
            options
                .max_connections(settings.db_pool_size())
                .sqlx_logging(false);
            Database::connect(options).await
        }
    }
}

/// Whether a SQLite connection given back is out of every transaction, as
/// one given back must be; when it is not, the pool closes it (rolling back
/// whatever it holds) and opens another. A COMMIT that fails (a full disk)
/// is rolled back by SQLite but still counted open by sqlx, whose next
/// "transaction" is then a savepoint: after a second failure every commit
/// released a savepoint inside a transaction that never committed, the
/// services answered as saved, and a restart lost it all (an exploratory
/// run lost 194 of 238 bookings, paid ones among them).
async fn settled(conn: &mut sea_orm::sqlx::SqliteConnection) -> Result<bool, sea_orm::sqlx::Error> {
    use sea_orm::sqlx::Connection;
    // A transaction dropped unfinished is rolled back on the next command:
    // flushed first, so that it is not taken for one left open.
    conn.ping().await?;
    let open = conn.is_in_transaction();
    if open {
        metrics::counter!("duikou_sqlite_connections_reset_total").increment(1);
        // Once in ten seconds at most: a minute of full disk closed
        // thousands (their count is the metric).
        static SAID_AT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
        let now = chrono::Utc::now().timestamp();
        let said = SAID_AT.load(std::sync::atomic::Ordering::Relaxed);
        if now - said >= 10 {
            SAID_AT.store(now, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(
                "a SQLite connection was given back inside a transaction (a commit failed: disk \
                 full?); closed, what it held rolled back (duikou_sqlite_connections_reset_total \
                 counts them)"
            );
        }
    }
    Ok(!open)
}

/// Commits a change made while serving an RPC, unless its caller has given
/// up on it ([`crate::bus::caller_still_waits`]): then rolls it back and
/// says so.
pub async fn commit_in_time(txn: sea_orm::DatabaseTransaction) -> Result<(), crate::AppError> {
    if let Err(late) = crate::bus::caller_still_waits() {
        txn.rollback().await?;
        return Err(late);
    }
    Ok(txn.commit().await?)
}

/// What a copy of a request whose creation was made already is told
/// ([`commit_once_in_time`]).
const MADE_ALREADY: &str = "this was created already, by an earlier delivery of the same request \
     whose answer was lost as the part serving it stopped: look it up before creating it again";

/// [`commit_in_time`] for a keyless create (a homestay, room type, host,
/// route, departure), which a request run twice makes twice: the call's id
/// is recorded in the inbox with the change, so that a copy of the request
/// redelivered because the part serving it stopped after this commit but
/// before its answer and ack (a replica killed) is refused — CONFLICT,
/// [`is_made_already`] — not made a second time. A copy of a request whose
/// first delivery made nothing runs as usual. Changes that come out the
/// same when run again (an update to given values, a step answered as
/// recorded) use [`commit_in_time`]: their copy answers as the first would
/// have.
pub async fn commit_once_in_time(txn: sea_orm::DatabaseTransaction) -> Result<(), crate::AppError> {
    // Recorded before the deadline is looked at: the insert can wait (on
    // the first delivery's uncommitted row, a lock on the inbox).
    let call = crate::bus::call_to_record();
    if let Some(call) = call
        && !crate::outbox::record_once(&txn, call, "rpc").await?
    {
        txn.rollback().await?;
        return Err(made_already(call));
    }
    commit_in_time(txn).await?;
    if call.is_some() {
        crate::bus::recorded_call();
    }
    Ok(())
}

/// The refusal of a copy of `call`, whose creation was made already.
fn made_already(call: uuid::Uuid) -> crate::AppError {
    metrics::counter!("duikou_rpc_repeats_refused_total").increment(1);
    tracing::warn!(%call, "a redelivered RPC request whose creation was made already; not made again");
    crate::AppError::new(crate::ErrorCode::Conflict, MADE_ALREADY)
}

/// For a create that found what it makes exists already (a unique key
/// taken): [`commit_once_in_time`]'s refusal when this very request made
/// it (a redelivered copy), rather than the conflict with someone else's
/// it would otherwise report. Asks `conn`, not the create's transaction
/// (PostgreSQL's is aborted by then).
pub async fn refuse_if_made_already<C: ConnectionTrait>(conn: &C) -> Result<(), crate::AppError> {
    match crate::bus::call_to_record() {
        Some(call) if crate::outbox::recorded(conn, call).await? => Err(made_already(call)),
        _ => Ok(()),
    }
}

/// Whether `e` is [`commit_once_in_time`]'s refusal of a repeated create:
/// its creation was made (and may not have been announced).
pub fn is_made_already(e: &crate::AppError) -> bool {
    e.code == crate::ErrorCode::Conflict && e.message == MADE_ALREADY
}

/// `$first, $first+1, …`: the placeholders of an `IN (…)` list of `n`
/// values whose first is parameter `first`.
pub fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rows of `sql` — a query whose `{ids}` stands for an `IN (…)` list —
/// for `ids`, in one round trip; none without asking when `ids` is empty.
pub async fn rows_with_ids<C: ConnectionTrait>(
    conn: &C,
    sql: &str,
    ids: impl ExactSizeIterator<Item = uuid::Uuid>,
) -> Result<Vec<sea_orm::QueryResult>, DbErr> {
    if ids.len() == 0 {
        return Ok(Vec::new());
    }
    let b = conn.get_database_backend();
    let sql = sql.replace("{ids}", &placeholders(1, ids.len()));
    conn.query_all_raw(stmt(b, &sql, ids.map(|id| uuid_value(b, id)).collect()))
        .await
}

/// A UUID as a bind value: native on PostgreSQL, text on SQLite.
pub fn uuid_value(backend: DbBackend, id: uuid::Uuid) -> sea_orm::Value {
    match backend {
        DbBackend::Sqlite => id.to_string().into(),
        _ => id.into(),
    }
}

/// Reads a UUID column stored by [`uuid_value`].
pub fn row_uuid(row: &sea_orm::QueryResult, column: &str) -> Result<uuid::Uuid, DbErr> {
    match row.try_get::<uuid::Uuid>("", column) {
        Ok(id) => Ok(id),
        Err(_) => {
            let s: String = row.try_get("", column)?;
            uuid::Uuid::parse_str(&s).map_err(|e| DbErr::Custom(format!("{column}: {e}")))
        }
    }
}

/// Reads a nullable UUID column on either backend.
pub fn opt_row_uuid(row: &sea_orm::QueryResult, column: &str) -> Result<Option<uuid::Uuid>, DbErr> {
    match row.try_get::<Option<uuid::Uuid>>("", column) {
        Ok(id) => Ok(id),
        Err(_) => row
            .try_get::<Option<String>>("", column)?
            .map(|s| uuid::Uuid::parse_str(&s).map_err(|e| DbErr::Custom(format!("{column}: {e}"))))
            .transpose(),
    }
}

/// Reads a nullable region code column.
pub fn opt_row_region(
    row: &sea_orm::QueryResult,
    column: &str,
) -> Result<Option<crate::region::RegionCode>, DbErr> {
    let s: Option<String> = row.try_get("", column)?;
    s.map(|s| {
        crate::region::RegionCode::parse(&s).map_err(|e| DbErr::Custom(format!("{column}: {e}")))
    })
    .transpose()
}

/// Reads a region code column that must be set.
pub fn row_region(
    row: &sea_orm::QueryResult,
    column: &str,
) -> Result<crate::region::RegionCode, DbErr> {
    opt_row_region(row, column)?.ok_or_else(|| DbErr::Custom(format!("{column} is missing")))
}

/// DDL written for PostgreSQL, adapted to SQLite's types where needed.
pub fn portable_ddl(backend: DbBackend, sql: &str) -> String {
    match backend {
        DbBackend::Sqlite => replace_word(
            &sql.replace("BIGSERIAL PRIMARY KEY", "INTEGER PRIMARY KEY AUTOINCREMENT")
                .replace("TIMESTAMPTZ", "TEXT")
                .replace("UUID", "TEXT")
                .replace("JSONB", "TEXT")
                .replace("DEFAULT now()", "DEFAULT CURRENT_TIMESTAMP"),
            "DATE",
            "TEXT",
        ),
        _ => sql.to_owned(),
    }
}

/// `sql` with every whole word `word` (not `UPDATE`, not `CURRENT_DATE`)
/// replaced by `by`.
fn replace_word(sql: &str, word: &str, by: &str) -> String {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(sql.len());
    let mut copied = 0;
    for (at, _) in sql.match_indices(word) {
        let end = at + word.len();
        let whole = !sql[..at].chars().next_back().is_some_and(is_word)
            && !sql[end..].chars().next().is_some_and(is_word);
        if whole && at >= copied {
            out.push_str(&sql[copied..at]);
            out.push_str(by);
            copied = end;
        }
    }
    out.push_str(&sql[copied..]);
    out
}

/// Runs a service's DDL statements (PostgreSQL dialect, see [`portable_ddl`]).
pub async fn run_ddl(
    manager: &sea_orm_migration::SchemaManager<'_>,
    statements: &[&str],
) -> Result<(), DbErr> {
    let conn = manager.get_connection();
    let backend = conn.get_database_backend();
    for sql in statements {
        conn.execute_unprepared(&portable_ddl(backend, sql)).await?;
    }
    Ok(())
}

/// The SQLSTATE the database answered with, if it did (sqlx does not put
/// it in the error's text: "terminating connection due to administrator
/// command" is all 57P01 says there).
pub fn sqlstate(e: &DbErr) -> Option<String> {
    Some(sqlx_error(e)?.as_database_error()?.code()?.into_owned())
}

/// SQLite's (extended) result code of `e`: a number, where PostgreSQL's
/// SQLSTATE has five characters.
fn sqlite_code(e: &DbErr) -> Option<u32> {
    sqlstate(e).filter(|code| code.len() < 5)?.parse().ok()
}

/// The driver's error under `e`, if it came from the database driver.
fn sqlx_error(e: &DbErr) -> Option<&sea_orm::SqlxError> {
    use sea_orm::RuntimeErr::SqlxError;
    match e {
        DbErr::Exec(SqlxError(err))
        | DbErr::Query(SqlxError(err))
        | DbErr::Conn(SqlxError(err)) => Some(err),
        _ => None,
    }
}

/// True for errors worth retrying: serialization failure, deadlock, busy.
pub fn is_transient(e: &DbErr) -> bool {
    if sqlstate(e).is_some_and(|code| ["40001", "40P01"].contains(&code.as_str())) {
        return true;
    }
    let s = e.to_string();
    s.contains("deadlock") || s.contains("database is locked")
}

/// True when the database could not be reached or dropped the connection
/// (a restart, an outage): worth waiting for, unlike a failed statement.
pub fn is_unavailable(e: &DbErr) -> bool {
    if matches!(e, DbErr::ConnectionAcquire(_) | DbErr::Conn(_)) {
        return true;
    }
    // admin_shutdown, crash_shutdown, cannot_connect_now; the
    // connection_exception class; insufficient_resources (a full disk, out
    // of memory, too many connections). On SQLite, whose codes are numbers
    // and never five characters: a full disk (13) and an I/O error (10,
    // and its extended codes). Each passes when the disk has room again:
    // a handler failing on one waits in place instead of dead-lettering its
    // event after a few tries (embedded mode keeps no dead letters past a
    // restart), and a client is told to retry, not INTERNAL.
    if sqlstate(e).is_some_and(|code| {
        code.starts_with("57P0") || code.starts_with("08") || code.starts_with("53")
    }) || sqlite_code(e).is_some_and(|n| matches!(n & 0xff, 10 | 13))
    {
        return true;
    }
    let s = e.to_string();
    [
        "Connection refused",
        "connection refused",
        "Connection reset",
        "connection reset",
        "Broken pipe",
        "broken pipe",
        "pool timed out",
        "PoolTimedOut",
        "PoolClosed",
        "error communicating with database",
        "connection closed",
        "unexpected end of file",
        "the database system is",
    ]
    .iter()
    .any(|needle| s.contains(needle))
}

/// Claims `name` for this process, once per database: true for exactly one
/// caller however many race (N replicas starting together), false for the
/// rest and forever after. For one-time work such as demo seeding.
pub async fn claim_once(db: &DatabaseConnection, name: &str) -> Result<bool, DbErr> {
    claims_table(db).await?;
    claim(db, name).await
}

/// Creates the table [`claim`] records in, if missing.
pub async fn claims_table(db: &DatabaseConnection) -> Result<(), DbErr> {
    let ddl = "CREATE TABLE IF NOT EXISTS claims (name TEXT PRIMARY KEY)";
    if let Err(e) = db.execute_unprepared(ddl).await {
        // Two creators at once on PostgreSQL: the loser sees a duplicate
        // type; the table is there either way.
        if !is_unique_violation(&e) && !e.to_string().contains("already exists") {
            return Err(e);
        }
    }
    Ok(())
}

/// [`claim_once`] on a connection or in a transaction (after
/// [`claims_table`]): in a transaction, the claim commits with the work it
/// guards, so a process that dies half-way leaves the work to the next.
pub async fn claim<C: ConnectionTrait>(conn: &C, name: &str) -> Result<bool, DbErr> {
    let inserted = conn
        .execute_raw(stmt(
            conn.get_database_backend(),
            "INSERT INTO claims (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
            vec![name.into()],
        ))
        .await?;
    Ok(inserted.rows_affected() == 1)
}

/// True when the error is a unique-constraint violation.
pub fn is_unique_violation(e: &DbErr) -> bool {
    matches!(
        e.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}

/// True when the error is a CHECK-constraint violation (on PostgreSQL and
/// SQLite alike, by the database's code rather than its wording).
pub fn is_check_violation(e: &DbErr) -> bool {
    sqlx_error(e)
        .and_then(|err| err.as_database_error())
        .is_some_and(|db| db.is_check_violation())
}

/// A page read from `rows`, fetched with one more than `first`: the
/// first `first` of them, each read by `read`, and whether more follow.
pub fn page<T>(
    rows: &[sea_orm::QueryResult],
    first: u32,
    read: impl FnMut(&sea_orm::QueryResult) -> Result<T, DbErr>,
) -> Result<(Vec<T>, bool), DbErr> {
    let first = first as usize;
    let page = rows
        .iter()
        .take(first)
        .map(read)
        .collect::<Result<_, _>>()?;
    Ok((page, rows.len() > first))
}

/// How many rows `from_where` (`<table> WHERE …`, or any FROM clause)
/// holds, with its bind values.
pub async fn count<C: ConnectionTrait>(
    conn: &C,
    from_where: &str,
    values: Vec<sea_orm::Value>,
) -> Result<u64, DbErr> {
    let b = conn.get_database_backend();
    let row = conn
        .query_one_raw(stmt(
            b,
            &format!("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM {from_where}"),
            values,
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("a count without a row".into()))?;
    Ok(u64::try_from(row.try_get::<i64>("", "n")?).unwrap_or(0))
}

/// An optional UUID as a bind value (a typed NULL on PostgreSQL).
pub fn opt_uuid_value(backend: DbBackend, id: Option<uuid::Uuid>) -> sea_orm::Value {
    match backend {
        DbBackend::Sqlite => id.map(|i| i.to_string()).into(),
        _ => id.into(),
    }
}

/// How long a part's start waits for a database that is unavailable (a
/// restart in progress) before it gives up.
const START_PATIENCE: Duration = Duration::from_secs(60);

/// Connects to `service`'s database and runs its migrations ([`connect`],
/// [`migrate`]). A part started while PostgreSQL restarts (a process
/// manager bringing it back at that moment) waits for it, as its handlers
/// do, instead of exiting: a chaos run found payment gone for good, its
/// start cut by "terminating connection due to administrator command".
/// Bounded by [`START_PATIENCE`]; a failed statement fails at once.
pub async fn connect_migrated<M: sea_orm_migration::MigratorTrait>(
    settings: &Settings,
    service: &str,
) -> Result<DatabaseConnection, DbErr> {
    let deadline = tokio::time::Instant::now() + START_PATIENCE;
    let mut pause = Duration::from_millis(200);
    loop {
        let started = async {
            let db = connect(settings, service).await?;
            migrate::<M>(&db).await?;
            Ok::<_, DbErr>(db)
        }
        .await;
        match started {
            Err(e) if worth_waiting_at_start(&e) && tokio::time::Instant::now() < deadline => {
                tracing::warn!(service, error = %e, "database unavailable at start; waiting for it");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            started => {
                return started.map_err(|e| {
                    let at = match settings.postgres() {
                        Some(_) => format!("database {}", database_name(settings, service)),
                        None => sqlite_file(settings, service).display().to_string(),
                    };
                    DbErr::Custom(format!("{at}: {e}"))
                });
            }
        }
    }
}

/// Whether a start that failed with `e` may pass by waiting: a database
/// unavailable ([`is_unavailable`]), but not a SQLite file that is no
/// database, corrupt, cannot be opened or written (its directory's
/// permissions) or asks a password — a start waited its minute on each.
/// Only at start: running, a connection reopened when the process is out
/// of file descriptors fails as "cannot open" too, and passes.
pub fn worth_waiting_at_start(e: &DbErr) -> bool {
    let broken_file = sqlite_code(e).is_some_and(|n| matches!(n & 0xff, 8 | 11 | 14 | 23 | 26));
    is_unavailable(e) && !broken_file
}

/// The SQLite file of `service`'s database in embedded mode.
fn sqlite_file(settings: &Settings, service: &str) -> std::path::PathBuf {
    settings
        .data_dir
        .join(format!("{}.db", database_name(settings, service)))
}

/// Runs the migrations `M` in one transaction, so a failed or interrupted
/// migration leaves nothing half-applied (on SQLite too: a column added by
/// a migration stopped before it was recorded made every later start fail).
/// On PostgreSQL under an advisory lock, so N copies of a service starting
/// at once migrate once (the others wait, then find nothing pending).
pub async fn migrate<M: sea_orm_migration::MigratorTrait>(
    db: &DatabaseConnection,
) -> Result<(), DbErr> {
    use sea_orm::TransactionTrait;
    let txn = db.begin().await?;
    if db.get_database_backend() == DbBackend::Postgres {
        txn.execute_unprepared("SELECT pg_advisory_xact_lock(8127001)")
            .await?;
    }
    M::up(&txn, None).await?;
    txn.commit().await
}

#[cfg(test)]
mod tests {
    use sea_orm::ConnectionTrait;
    use sea_orm_migration::{MigrationName, MigrationTrait, MigratorTrait, SchemaManager};

    /// Adds a column to a table it made, then fails (a process stopped
    /// half-way does the same).
    struct HalfWay;

    impl MigrationName for HalfWay {
        fn name(&self) -> &str {
            "m_test_half_way"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for HalfWay {
        async fn up(&self, manager: &SchemaManager) -> Result<(), sea_orm::DbErr> {
            let conn = manager.get_connection();
            conn.execute_unprepared("CREATE TABLE t (a INTEGER)")
                .await?;
            conn.execute_unprepared("ALTER TABLE t ADD COLUMN b INTEGER")
                .await?;
            Err(sea_orm::DbErr::Custom("stopped half-way".into()))
        }
    }

    struct Migrator;

    impl MigratorTrait for Migrator {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            vec![Box::new(HalfWay)]
        }
    }

    /// On SQLite too, a migration that fails half-way leaves nothing: a
    /// column it added stayed, and every later start failed on it
    /// ("duplicate column name").
    #[tokio::test]
    async fn a_migration_stopped_half_way_leaves_nothing_on_sqlite() {
        let mut options = sea_orm::ConnectOptions::new("sqlite::memory:");
        options.max_connections(1).min_connections(1);
        let db = sea_orm::Database::connect(options).await.expect("sqlite");
        assert!(super::migrate::<Migrator>(&db).await.is_err());
        let left = db
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Sqlite,
                "SELECT COUNT(*) AS n FROM sqlite_master WHERE name = 't'",
            ))
            .await
            .expect("read")
            .expect("a row")
            .try_get::<i64>("", "n")
            .expect("a count");
        assert_eq!(left, 0, "the half-made table stayed");
    }

    /// Creating a service's database on a server away gives up as the
    /// services' pools do, saying why: the maintenance connection waited
    /// the library's 30 s, so a start said nothing for half a minute.
    #[tokio::test]
    async fn a_server_away_is_said_within_seconds_when_creating_a_database() {
        let said = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            super::ensure_database("postgres://root@127.0.0.1:1", "duikou_never"),
        )
        .await
        .expect("an answer within 20 s")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(said.contains("cannot be reached"), "{said}");
    }

    #[test]
    fn sqlite_ddl_changes_the_date_type_and_nothing_that_contains_it() {
        let sql = "ALTER TABLE p ADD COLUMN ended_on DATE; UPDATE p SET ended_on = CURRENT_DATE;
                   CREATE TABLE q (since DATE, until DATE NOT NULL, DATEDATE INT)";
        assert_eq!(
            super::portable_ddl(sea_orm::DbBackend::Sqlite, sql),
            "ALTER TABLE p ADD COLUMN ended_on TEXT; UPDATE p SET ended_on = CURRENT_DATE;
                   CREATE TABLE q (since TEXT, until TEXT NOT NULL, DATEDATE INT)"
        );
    }

    #[test]
    fn loopback_urls_skip_tls_unless_they_say_otherwise() {
        let local = super::with_database("postgres://root@127.0.0.1:5432", "x").ok();
        assert_eq!(
            local.as_deref(),
            Some("postgres://root@127.0.0.1:5432/x?sslmode=disable")
        );
        let asked = super::with_database("postgres://root@localhost/?sslmode=require", "x").ok();
        assert_eq!(
            asked.as_deref(),
            Some("postgres://root@localhost/x?sslmode=require")
        );
        let remote = super::with_database("postgres://root@db.example.cn:5432", "x").ok();
        assert_eq!(
            remote.as_deref(),
            Some("postgres://root@db.example.cn:5432/x")
        );
        // The driver goes where `host` says, whatever the URL's host.
        let redirected =
            super::with_database("postgres://root@127.0.0.1:5432/?host=db.example.cn", "x").ok();
        assert_eq!(
            redirected.as_deref(),
            Some("postgres://root@127.0.0.1:5432/x?host=db.example.cn")
        );
    }

    #[test]
    fn another_scheme_is_refused_without_its_password() {
        for url in ["mysql://root:hunter2@127.0.0.1:5432", "hunter2"] {
            let said = super::with_database(url, "x")
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(said.contains("DUIKOU_POSTGRES_URL"), "{said}");
            assert!(!said.contains("hunter2"), "{said}");
        }
        assert!(super::with_database("postgresql://root@127.0.0.1", "x").is_ok());
    }
}

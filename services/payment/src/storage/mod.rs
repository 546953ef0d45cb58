//! Payment's tables: payments (one CAPTURED or PROCESSING per booking, by a
//! partial unique index — a second charge is refused by the database, not by
//! a read first) and the append-only ledger.

use chrono::Utc;
use sea_orm::{ConnectionTrait, DbErr, QueryResult};
use sea_orm_migration::{MigrationName, MigrationTrait, MigratorTrait, SchemaManager};
use shared::auth::{Booker, Principal};
use shared::db::{row_uuid, run_ddl, uuid_value};
use shared::ids::{AccountId, AgencyId, BookingId, HostId, PaymentId};
use shared::money::{Fen, Split};
use shared::outbox::stmt;
use shared::region::RegionCode;
use shared::rpcs::PaymentView;

/// Payment's migrations.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(shared::runtime::KernelMigration),
            Box::new(Payments),
            Box::new(Refunds),
            Box::new(SandboxBooks),
            Box::new(Payouts),
            Box::new(ClosedCharges),
            Box::new(Reconciliation),
            Box::new(AppendOnly),
            Box::new(PaymentsByBooking),
            Box::new(PaymentsBooker),
            Box::new(LedgerByDay),
            Box::new(ChargesByDay),
            Box::new(CapturesHeard),
            Box::new(MismatchesOnce),
            Box::new(StaysBegin),
            Box::new(shared::runtime::KernelInboxByAge),
            Box::new(FundTotals),
            Box::new(HostEntries),
            Box::new(PaymentsByAgency),
            Box::new(HostMarks),
        ]
    }
}

struct Payments;

impl MigrationName for Payments {
    fn name(&self) -> &str {
        "m20261123_000001_payments_ledger"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Payments {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(
            manager,
            &[
                "CREATE TABLE payments (
                    id UUID PRIMARY KEY,
                    booking_id UUID NOT NULL,
                    idempotency_key TEXT NOT NULL UNIQUE,
                    fingerprint TEXT NOT NULL,
                    amount_fen BIGINT NOT NULL CHECK (amount_fen > 0),
                    status TEXT NOT NULL,
                    failure_reason TEXT,
                    provider_ref TEXT,
                    split TEXT,
                    created_at TIMESTAMPTZ NOT NULL,
                    updated_at TIMESTAMPTZ NOT NULL)",
                "CREATE UNIQUE INDEX payments_one_live_per_booking ON payments (booking_id)
                    WHERE status IN ('PROCESSING', 'CAPTURED')",
                "CREATE TABLE ledger_entries (
                    id BIGSERIAL PRIMARY KEY,
                    txn_id UUID NOT NULL,
                    booking_id UUID NOT NULL,
                    account TEXT NOT NULL,
                    amount_fen BIGINT NOT NULL,
                    region_code TEXT NOT NULL,
                    created_at TIMESTAMPTZ NOT NULL)",
                "CREATE INDEX ledger_entries_account ON ledger_entries (account, id)",
            ],
        )
        .await
    }
}

struct Refunds;

impl MigrationName for Refunds {
    fn name(&self) -> &str {
        "m20261124_000001_refunds"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Refunds {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(
            manager,
            &[
                // Raised only by a conditional update that keeps it within
                // the amount captured (see `reserve_refund`).
                "ALTER TABLE payments ADD COLUMN refunded_fen BIGINT NOT NULL DEFAULT 0",
                // Whom a capture paid and where: a refund reverses the same legs.
                "ALTER TABLE payments ADD COLUMN host_id UUID",
                "ALTER TABLE payments ADD COLUMN region_code TEXT",
                "ALTER TABLE payments ADD COLUMN agency_id UUID",
                "CREATE TABLE refunds (
                    id UUID PRIMARY KEY,
                    payment_id UUID NOT NULL REFERENCES payments (id),
                    booking_id UUID NOT NULL,
                    request_key TEXT NOT NULL UNIQUE,
                    amount_fen BIGINT NOT NULL CHECK (amount_fen >= 0),
                    split TEXT NOT NULL,
                    reason TEXT NOT NULL,
                    status TEXT NOT NULL,
                    provider_ref TEXT,
                    failure_reason TEXT,
                    created_at TIMESTAMPTZ NOT NULL,
                    updated_at TIMESTAMPTZ NOT NULL)",
                "CREATE INDEX refunds_booking ON refunds (booking_id)",
            ],
        )
        .await
    }
}

struct SandboxBooks;

impl MigrationName for SandboxBooks {
    fn name(&self) -> &str {
        "m20261124_000002_sandbox_books"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for SandboxBooks {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The sandbox provider's own records. A real provider keeps them on
        // its side; the sandbox keeps them here so they outlive a restart
        // of payment and every replica sees the same ones.
        run_ddl(
            manager,
            &[
                "CREATE TABLE sandbox_charges (
                    idempotency_key TEXT PRIMARY KEY,
                    reference TEXT NOT NULL,
                    amount_fen BIGINT NOT NULL,
                    created_at TIMESTAMPTZ NOT NULL)",
                "CREATE TABLE sandbox_refunds (
                    idempotency_key TEXT PRIMARY KEY,
                    charge_key TEXT NOT NULL REFERENCES sandbox_charges (idempotency_key),
                    reference TEXT NOT NULL,
                    amount_fen BIGINT NOT NULL,
                    created_at TIMESTAMPTZ NOT NULL)",
                "CREATE INDEX payments_processing ON payments (updated_at) WHERE status = 'PROCESSING'",
            ],
        )
        .await
    }
}

struct ClosedCharges;

impl MigrationName for ClosedCharges {
    fn name(&self) -> &str {
        "m20261125_000001_sandbox_closed_charges"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for ClosedCharges {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // A key closed by reconciliation before any charge: none can follow.
        run_ddl(
            manager,
            &["ALTER TABLE sandbox_charges ADD COLUMN closed BOOLEAN NOT NULL DEFAULT FALSE"],
        )
        .await
    }
}

struct Reconciliation;

impl MigrationName for Reconciliation {
    fn name(&self) -> &str {
        "m20261202_000001_reconciliation_log_and_admin_refunds"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Reconciliation {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(
            manager,
            &[
                // What the reconciler found and did; one entry per finding.
                "CREATE TABLE reconciliation_log (
                    id BIGSERIAL PRIMARY KEY,
                    kind TEXT NOT NULL,
                    payment_id UUID NOT NULL,
                    booking_id UUID NOT NULL,
                    amount_fen BIGINT NOT NULL,
                    note TEXT NOT NULL,
                    created_at TIMESTAMPTZ NOT NULL)",
                "CREATE UNIQUE INDEX reconciliation_log_once ON reconciliation_log (kind, payment_id)
                    WHERE kind = 'MISMATCH'",
                // An admin's refund request: what it asked, to tell a replay
                // of its key from a reuse.
                "ALTER TABLE refunds ADD COLUMN fingerprint TEXT",
                "CREATE INDEX refunds_pending ON refunds (updated_at) WHERE status = 'PENDING'",
            ],
        )
        .await
    }
}

struct AppendOnly;

impl MigrationName for AppendOnly {
    fn name(&self) -> &str {
        "m20261202_000002_ledger_append_only"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AppendOnly {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The database itself refuses to change or remove a posting: a
        // mistake is corrected by a new, reversing transaction.
        let conn = manager.get_connection();
        let statements: &[&str] = match conn.get_database_backend() {
            sea_orm::DbBackend::Postgres => &[
                "CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN RAISE EXCEPTION 'ledger entries are append-only'; END $$",
                "CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
                 FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only()",
            ],
            _ => &[
                "CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE ON ledger_entries
                 BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END",
                "CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries
                 BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END",
            ],
        };
        for sql in statements {
            conn.execute_unprepared(sql).await?;
        }
        Ok(())
    }
}

struct PaymentsByBooking;

impl MigrationName for PaymentsByBooking {
    fn name(&self) -> &str {
        "m20261203_000001_payments_by_booking"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for PaymentsByBooking {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Every attempt of a booking (failed ones too): what a page of
        // bookings shows of its money (`money_of`).
        run_ddl(
            manager,
            &["CREATE INDEX payments_booking ON payments (booking_id, created_at)"],
        )
        .await
    }
}

struct PaymentsBooker;

impl MigrationName for PaymentsBooker {
    fn name(&self) -> &str {
        "m20261203_000002_payments_booker"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for PaymentsBooker {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The account that booked: with agency_id and region_code, who may
        // read a payment (`money_of`). Payments made before it have none and
        // are shown to their agency and the admins only.
        run_ddl(
            manager,
            &["ALTER TABLE payments ADD COLUMN account_id UUID"],
        )
        .await
    }
}

struct LedgerByDay;

impl MigrationName for LedgerByDay {
    fn name(&self) -> &str {
        "m20261204_000003_ledger_by_day"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for LedgerByDay {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // An agency's commission over some days reads its account's entries
        // of those days only.
        run_ddl(
            manager,
            &["CREATE INDEX ledger_entries_account_day ON ledger_entries (account, created_at)"],
        )
        .await
    }
}

struct ChargesByDay;

impl MigrationName for ChargesByDay {
    fn name(&self) -> &str {
        "m20261205_000006_sandbox_charges_by_day"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for ChargesByDay {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The reconciler compares the provider's last day of charges with
        // the payments every round: the day's, not every charge ever.
        run_ddl(
            manager,
            &["CREATE INDEX sandbox_charges_by_day ON sandbox_charges (created_at)"],
        )
        .await
    }
}

struct MismatchesOnce;

impl MigrationName for MismatchesOnce {
    fn name(&self) -> &str {
        "m20261206_000002_reconciliation_refund"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for MismatchesOnce {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // A MISMATCH was noted once per payment: a second refund of it
        // that the provider paid after it was recorded as declined was not
        // noted at all. Once per charge (no refund) or per refund now.
        run_ddl(
            manager,
            &[
                "ALTER TABLE reconciliation_log ADD COLUMN refund_id UUID",
                "DROP INDEX reconciliation_log_once",
                "CREATE UNIQUE INDEX reconciliation_log_charge_once ON reconciliation_log (payment_id)
                    WHERE kind = 'MISMATCH' AND refund_id IS NULL",
                "CREATE UNIQUE INDEX reconciliation_log_refund_once ON reconciliation_log (kind, refund_id)
                    WHERE refund_id IS NOT NULL",
            ],
        )
        .await
    }
}

struct StaysBegin;

impl MigrationName for StaysBegin {
    fn name(&self) -> &str {
        "m20261206_000003_payments_starts_on"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for StaysBegin {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The day the stay or departure paid for begins: a host's share is
        // paid out once it is under way (a cancellation before gives it all
        // back). Payments made before this release have none, and stay
        // payable at capture as they were.
        run_ddl(
            manager,
            &[
                "ALTER TABLE payments ADD COLUMN starts_on DATE",
                // A run keeps back only captures in the ledger before its
                // `upTo`: looked up by booking.
                "CREATE INDEX IF NOT EXISTS ledger_entries_booking ON ledger_entries (booking_id)",
            ],
        )
        .await
    }
}

struct FundTotals;

impl MigrationName for FundTotals {
    fn name(&self) -> &str {
        "m20261207_000001_fund_totals"
    }
}

/// The welfare fund's totals per year (China time) and region, and its
/// entries that move money, kept by the database as each fund entry is
/// posted (any path, in the posting's own transaction): the fund's public
/// figures read these few rows, not every fund entry (0.7 s a read at
/// 600,000 entries).
#[async_trait::async_trait]
impl MigrationTrait for FundTotals {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        let (year_of, before): (&str, &[&str]) = match conn.get_database_backend() {
            sea_orm::DbBackend::Postgres => (
                "CAST(EXTRACT(YEAR FROM created_at AT TIME ZONE 'Asia/Shanghai') AS INTEGER)",
                // No posting between the totals' first reading and the
                // trigger (the migration's transaction holds the lock).
                &["LOCK TABLE ledger_entries IN SHARE ROW EXCLUSIVE MODE"],
            ),
            _ => (
                "CAST(strftime('%Y', created_at, '+8 hours') AS INTEGER)",
                &[],
            ),
        };
        let add = |new: &str| {
            format!(
                "INSERT INTO fund_totals (year, region_code, amount_fen, entries)
                 VALUES ({}, {new}.region_code, {new}.amount_fen,
                         CASE WHEN {new}.amount_fen <> 0 THEN 1 ELSE 0 END)
                 ON CONFLICT (year, region_code) DO UPDATE
                 SET amount_fen = fund_totals.amount_fen + excluded.amount_fen,
                     entries = fund_totals.entries + excluded.entries",
                year_of.replace("created_at", &format!("{new}.created_at"))
            )
        };
        let trigger = match conn.get_database_backend() {
            sea_orm::DbBackend::Postgres => vec![
                format!(
                    "CREATE FUNCTION fund_totals_add() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN {}; RETURN NULL; END $$",
                    add("NEW")
                ),
                format!(
                    "CREATE TRIGGER ledger_entries_fund_totals AFTER INSERT ON ledger_entries
                     FOR EACH ROW WHEN (NEW.account = '{}') EXECUTE FUNCTION fund_totals_add()",
                    crate::domain::FUND
                ),
            ],
            _ => vec![format!(
                "CREATE TRIGGER ledger_entries_fund_totals AFTER INSERT ON ledger_entries
                 WHEN NEW.account = '{}' BEGIN {}; END",
                crate::domain::FUND,
                add("NEW")
            )],
        };
        let mut statements: Vec<String> = before.iter().map(|s| (*s).to_owned()).collect();
        statements.push(
            "CREATE TABLE fund_totals (
                year INTEGER NOT NULL,
                region_code TEXT NOT NULL,
                amount_fen BIGINT NOT NULL,
                entries BIGINT NOT NULL,
                PRIMARY KEY (year, region_code))"
                .to_owned(),
        );
        statements.push(format!(
            "INSERT INTO fund_totals (year, region_code, amount_fen, entries)
             SELECT {year_of}, region_code, CAST(SUM(amount_fen) AS BIGINT),
                    CAST(SUM(CASE WHEN amount_fen <> 0 THEN 1 ELSE 0 END) AS BIGINT)
             FROM ledger_entries WHERE account = '{}' GROUP BY 1, 2",
            crate::domain::FUND
        ));
        statements.extend(trigger);
        for sql in &statements {
            conn.execute_unprepared(sql).await?;
        }
        Ok(())
    }
}

struct HostEntries;

impl MigrationName for HostEntries {
    fn name(&self) -> &str {
        "m20261207_000002_ledger_host_entries"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for HostEntries {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The host balances (`HOST_BALANCES`: `hostBalances`, every payout
        // run) read only the hosts' entries, in account order, from the
        // index alone: at 2.4 million entries a scan of them all and a sort
        // spilled to disk took 1.09 s, this 0.38 s. Still every host entry
        // ever posted (performance.md, "At a year's data").
        run_ddl(
            manager,
            &["CREATE INDEX ledger_host_entries
               ON ledger_entries (account, created_at, amount_fen, booking_id, region_code)
               WHERE account LIKE 'host:%'"],
        )
        .await
    }
}

struct PaymentsByAgency;

impl MigrationName for PaymentsByAgency {
    fn name(&self) -> &str {
        "m20261207_000003_payments_by_agency"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for PaymentsByAgency {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // An agency's commission counts its captured bookings from its own
        // payments (it scanned every capture of the period: 1-2 s a year
        // at 490,000 bookings, 0.15-0.4 s for an agency with none).
        run_ddl(
            manager,
            &["CREATE INDEX payments_agency ON payments (agency_id) WHERE agency_id IS NOT NULL"],
        )
        .await
    }
}

struct HostMarks;

impl MigrationName for HostMarks {
    fn name(&self) -> &str {
        "m20261207_000004_host_marks"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for HostMarks {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Each host's balance up to a moment a payout run moves on
        // (`advance_host_marks`), so that the host balances add only the
        // entries since to it, read by time from the second index, instead
        // of every host entry ever posted (performance.md, "At a year's
        // data"). Empty until the first run after this migration.
        //
        // A host entry stamped before the mark would be in no balance
        // (neither the kept sums nor the entries read after them): the
        // database refuses it, loudly, rather than let it be lost — its
        // posting fails and is made again, stamped again (a process whose
        // clock is an hour slow fails every time).
        let guard: &[&str] = match manager.get_database_backend() {
            sea_orm::DbBackend::Postgres => &[
                "CREATE FUNCTION host_entries_after_the_mark() RETURNS trigger
                 LANGUAGE plpgsql AS $$
                 BEGIN
                     IF NEW.created_at < (SELECT MAX(mark_at) FROM host_marks) THEN
                         RAISE EXCEPTION 'a host entry stamped % is before the hosts'' mark: \
                             no balance would count it (a clock behind?)', NEW.created_at;
                     END IF;
                     RETURN NEW;
                 END $$",
                "CREATE TRIGGER ledger_entries_host_mark BEFORE INSERT ON ledger_entries
                 FOR EACH ROW WHEN (NEW.account LIKE 'host:%')
                 EXECUTE FUNCTION host_entries_after_the_mark()",
            ],
            _ => &[
                "CREATE TRIGGER ledger_entries_host_mark BEFORE INSERT ON ledger_entries
                    WHEN NEW.account LIKE 'host:%'
                         AND NEW.created_at < (SELECT MAX(mark_at) FROM host_marks)
                    BEGIN SELECT RAISE(ABORT, 'a host entry stamped before the hosts'' mark: \
                        no balance would count it (a clock behind?)'); END",
            ],
        };
        run_ddl(
            manager,
            &[
                "CREATE TABLE host_marks (
                    account TEXT PRIMARY KEY,
                    region_code TEXT NOT NULL,
                    owed_fen BIGINT NOT NULL,
                    mark_at TIMESTAMPTZ NOT NULL)",
                "CREATE INDEX host_marks_at ON host_marks (mark_at)",
                "CREATE INDEX ledger_host_entries_by_time
                   ON ledger_entries (created_at, account, amount_fen, booking_id, region_code)
                   WHERE account LIKE 'host:%'",
            ],
        )
        .await?;
        run_ddl(manager, guard).await
    }
}

struct CapturesHeard;

impl MigrationName for CapturesHeard {
    fn name(&self) -> &str {
        "m20261206_000001_payments_booking_heard"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CapturesHeard {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // When booking said it handled the capture
        // (`shared::rpcs::GetCapturesHeard`), by the database's clock;
        // until it has, a payout run keeps the host's share back (and a
        // run keeps back those heard since it asked booking for its
        // refunds: `payable_balances`). The captures made before this
        // migration are taken as heard long ago: booking has no record of
        // them (upgrade booking first, see docs/operations.md). On
        // PostgreSQL the column comes with a constant default (no rewrite
        // of the table under its lock), which is then dropped for new
        // rows; SQLite cannot drop a default, and its tables are small.
        let add: &[&str] = match manager.get_database_backend() {
            sea_orm::DbBackend::Postgres => &[
                "ALTER TABLE payments ADD COLUMN booking_heard_at TIMESTAMPTZ
                    DEFAULT '1970-01-01T00:00:00Z'",
                "ALTER TABLE payments ALTER COLUMN booking_heard_at DROP DEFAULT",
                "UPDATE payments SET booking_heard_at = NULL WHERE status = 'PROCESSING'",
            ],
            _ => &[
                "ALTER TABLE payments ADD COLUMN booking_heard_at TIMESTAMPTZ",
                "UPDATE payments SET booking_heard_at = '1970-01-01T00:00:00+00:00'
                    WHERE status <> 'PROCESSING'",
            ],
        };
        let mut ddl = add.to_vec();
        // Only captures with something left wait to be heard (a failed
        // payment never is; one refunded in full keeps nothing back).
        ddl.push(
            "CREATE INDEX payments_unheard ON payments (id)
                WHERE booking_heard_at IS NULL AND status = 'CAPTURED'
                  AND refunded_fen < amount_fen",
        );
        run_ddl(manager, &ddl).await
    }
}

/// The database's clock (the one `booking_heard_at` is stamped by), as
/// a payout run reads it before asking booking for its refunds.
pub async fn clock<C: ConnectionTrait>(conn: &C) -> Result<chrono::DateTime<Utc>, DbErr> {
    let b = conn.get_database_backend();
    if b != sea_orm::DbBackend::Postgres {
        // One process owns the SQLite files: its clock is the one.
        return Ok(Utc::now());
    }
    let row = conn
        .query_one_raw(stmt(b, "SELECT CAST(now() AS TIMESTAMPTZ) AS now", vec![]))
        .await?
        .ok_or_else(|| DbErr::Custom("now() answered no row".into()))?;
    row.try_get("", "now")
}

/// Captures booking has not yet said it handled (as payment last knew),
/// with something left to keep back, oldest first, `at_most` of them (all
/// when none).
pub async fn unheard_captures<C: ConnectionTrait>(
    conn: &C,
    at_most: Option<u64>,
) -> Result<Vec<PaymentId>, DbErr> {
    let b = conn.get_database_backend();
    let limit = i64::try_from(at_most.unwrap_or(u64::MAX)).unwrap_or(i64::MAX);
    conn.query_all_raw(stmt(
        b,
        "SELECT id FROM payments WHERE booking_heard_at IS NULL AND status = 'CAPTURED'
           AND refunded_fen < amount_fen
         ORDER BY id LIMIT $1",
        vec![limit.into()],
    ))
    .await?
    .iter()
    .map(|r| Ok(PaymentId(row_uuid(r, "id")?)))
    .collect()
}

/// Records that booking handled these captures.
pub async fn captures_heard<C: ConnectionTrait>(
    conn: &C,
    payments: &[PaymentId],
) -> Result<(), DbErr> {
    if payments.is_empty() {
        return Ok(());
    }
    let b = conn.get_database_backend();
    // Stamped by the database's clock as the statement runs, after
    // booking's answer ([`clock`]). A row another transaction has (a
    // refund reserving its amount) is left for the next look: kept back
    // meanwhile, waiting for nobody.
    let sql = match b {
        sea_orm::DbBackend::Postgres => format!(
            "UPDATE payments SET booking_heard_at = now() WHERE id IN
                (SELECT id FROM payments WHERE id IN ({}) FOR UPDATE SKIP LOCKED)",
            shared::db::placeholders(1, payments.len())
        ),
        _ => format!(
            "UPDATE payments SET booking_heard_at = ${} WHERE id IN ({})",
            payments.len() + 1,
            shared::db::placeholders(1, payments.len())
        ),
    };
    let mut values: Vec<sea_orm::Value> = payments.iter().map(|p| uuid_value(b, p.0)).collect();
    if b != sea_orm::DbBackend::Postgres {
        values.push(Utc::now().into());
    }
    conn.execute_raw(stmt(b, &sql, values)).await?;
    Ok(())
}

struct Payouts;

impl MigrationName for Payouts {
    fn name(&self) -> &str {
        "m20261124_000003_payouts"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Payouts {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(
            manager,
            &[
                "CREATE TABLE payouts (
                    reference TEXT NOT NULL,
                    host_id UUID NOT NULL,
                    amount_fen BIGINT NOT NULL CHECK (amount_fen > 0),
                    created_at TIMESTAMPTZ NOT NULL,
                    PRIMARY KEY (reference, host_id))",
                "CREATE TABLE payout_runs (
                    reference TEXT PRIMARY KEY,
                    up_to TIMESTAMPTZ NOT NULL,
                    created_at TIMESTAMPTZ NOT NULL)",
            ],
        )
        .await
    }
}

/// The columns of `payments` this version reads, named: `SELECT *`
/// prepared by a running replica breaks on PostgreSQL once a later
/// migration adds a column ("cached plan must not change result type").
const PAYMENT_COLUMNS: &str = "id, booking_id, idempotency_key, fingerprint, amount_fen, status, \
     failure_reason, provider_ref, split, created_at, updated_at, refunded_fen, host_id, \
     region_code, agency_id, account_id, booking_heard_at";

/// The columns of `refunds` this version reads (see [`PAYMENT_COLUMNS`]).
const REFUND_COLUMNS: &str = "id, payment_id, booking_id, request_key, amount_fen, split, reason, \
     status, provider_ref, failure_reason, created_at, updated_at, fingerprint";

/// A stored payment and its fingerprint.
pub struct Stored {
    /// As clients see it.
    pub view: PaymentView,
    /// Fingerprint of the request that created it.
    pub fingerprint: String,
    /// When the request that created it began.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

fn stored(row: &QueryResult) -> Result<Stored, DbErr> {
    let split: Option<String> = row.try_get("", "split")?;
    Ok(Stored {
        view: PaymentView {
            id: PaymentId(row_uuid(row, "id")?),
            booking_id: BookingId(row_uuid(row, "booking_id")?),
            status: row.try_get("", "status")?,
            amount: Fen(row.try_get("", "amount_fen")?),
            split: split
                .map(|s| serde_json::from_str::<Split>(&s))
                .transpose()
                .map_err(|e| DbErr::Custom(format!("payments.split: {e}")))?,
            failure_reason: row.try_get("", "failure_reason")?,
        },
        fingerprint: row.try_get("", "fingerprint")?,
        created_at: row.try_get("", "created_at")?,
    })
}

/// A payment about to be made.
pub struct NewPayment<'a> {
    /// The payment.
    pub id: PaymentId,
    /// The booking paid for.
    pub booking: BookingId,
    /// The client's idempotency key.
    pub key: &'a str,
    /// Fingerprint of the request.
    pub fingerprint: &'a str,
    /// Amount to charge.
    pub amount: Fen,
    /// Who gets the host's share.
    pub host: HostId,
    /// The listing's region.
    pub region: RegionCode,
    /// The agency that booked, owed the commission.
    pub agency: Option<AgencyId>,
    /// The account that booked (who may read the payment).
    pub account: Option<AccountId>,
    /// How the amount will be split once captured (rates as of now).
    pub split: Split,
    /// The day the stay or departure begins.
    pub starts_on: Option<chrono::NaiveDate>,
}

/// Inserts a PROCESSING payment unless the key exists; Ok(false) when it does.
/// A live payment for the same booking fails with a unique violation.
pub async fn insert_processing<C: ConnectionTrait>(
    conn: &C,
    new: &NewPayment<'_>,
) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    let now = Utc::now();
    let r = conn
        .execute_raw(stmt(
            b,
            "INSERT INTO payments (id, booking_id, idempotency_key, fingerprint, amount_fen, host_id, region_code, agency_id, split, status, created_at, updated_at, account_id, starts_on)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $9, $10, 'PROCESSING', $8, $8, $11, $12)
             ON CONFLICT (idempotency_key) DO NOTHING",
            vec![
                uuid_value(b, new.id.0),
                uuid_value(b, new.booking.0),
                new.key.into(),
                new.fingerprint.into(),
                new.amount.get().into(),
                uuid_value(b, new.host.0),
                new.region.to_string().into(),
                now.into(),
                shared::db::opt_uuid_value(b, new.agency.map(|a| a.0)),
                serde_json::to_string(&new.split).unwrap_or_default().into(),
                shared::db::opt_uuid_value(b, new.account.map(|a| a.0)),
                new.starts_on.into(),
            ],
        ))
        .await?;
    Ok(r.rows_affected() == 1)
}

/// The payment made with this key.
pub async fn by_key<C: ConnectionTrait>(conn: &C, key: &str) -> Result<Option<Stored>, DbErr> {
    let b = conn.get_database_backend();
    conn.query_one_raw(stmt(
        b,
        &format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE idempotency_key = $1"),
        vec![key.into()],
    ))
    .await?
    .map(|r| stored(&r))
    .transpose()
}

/// The payment made with `key` while it is PROCESSING, as settling it
/// needs (its split, host, region and agency as stored); None otherwise.
pub async fn processing_by_key<C: ConnectionTrait>(
    conn: &C,
    key: &str,
) -> Result<Option<Processing>, DbErr> {
    let b = conn.get_database_backend();
    conn.query_one_raw(stmt(
        b,
        &format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE idempotency_key = $1 AND status = 'PROCESSING'"
        ),
        vec![key.into()],
    ))
    .await?
    .map(|r| settlement(&r))
    .transpose()
}

/// Marks a PROCESSING payment CAPTURED; Ok(false) when something else
/// (the pay request or the reconciler) settled it first.
pub async fn mark_captured<C: ConnectionTrait>(
    conn: &C,
    id: PaymentId,
    reference: &str,
) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    let r = conn
        .execute_raw(stmt(
            b,
            "UPDATE payments SET status = 'CAPTURED', provider_ref = $2, updated_at = $3
             WHERE id = $1 AND status = 'PROCESSING'",
            vec![uuid_value(b, id.0), reference.into(), Utc::now().into()],
        ))
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Marks a PROCESSING payment FAILED with the provider's reason.
pub async fn mark_failed<C: ConnectionTrait>(
    conn: &C,
    id: PaymentId,
    reason: &str,
) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    let r = conn
        .execute_raw(stmt(
            b,
            "UPDATE payments SET status = 'FAILED', failure_reason = $2, updated_at = $3
             WHERE id = $1 AND status = 'PROCESSING'",
            vec![uuid_value(b, id.0), reason.into(), Utc::now().into()],
        ))
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Refuses legs that do not make one balanced ledger transaction.
fn balanced(legs: &[(String, Fen)]) -> Result<(), DbErr> {
    let sum: Fen = legs.iter().map(|(_, a)| *a).sum();
    if sum != Fen::ZERO {
        return Err(DbErr::Custom(format!(
            "refusing an unbalanced ledger transaction (sum {sum})"
        )));
    }
    if legs.is_empty() {
        return Err(DbErr::Custom(
            "refusing a ledger transaction without legs".into(),
        ));
    }
    Ok(())
}

/// On PostgreSQL, the whole of a capture in one statement (one round trip
/// and its own commit, no transaction around it): marks a PROCESSING
/// payment CAPTURED, posts `legs` and puts `captured` in the outbox.
/// False, and nothing written, when the payment was no longer PROCESSING.
/// What [`mark_captured`], [`post`] and `enqueue` do in a transaction
/// elsewhere.
pub async fn capture_at_once<C: ConnectionTrait>(
    conn: &C,
    id: PaymentId,
    reference: &str,
    (booking, region): (BookingId, RegionCode),
    legs: &[(String, Fen)],
    captured: &shared::envelope::Envelope,
) -> Result<bool, DbErr> {
    balanced(legs)?;
    let b = conn.get_database_backend();
    let now = Utc::now();
    let mut values: Vec<sea_orm::Value> = vec![
        uuid_value(b, id.0),
        reference.into(),
        now.into(),
        uuid_value(b, uuid::Uuid::now_v7()),
        uuid_value(b, booking.0),
        region.to_string().into(),
    ];
    values.extend(shared::outbox::row_values(b, captured));
    let rows: Vec<String> = (0..legs.len())
        .map(|i| format!("(${}, ${})", 10 + 2 * i, 11 + 2 * i))
        .collect();
    for (account, amount) in legs {
        values.push(account.as_str().into());
        values.push(amount.get().into());
    }
    let row = conn
        .query_one_raw(stmt(
            b,
            &format!(
                "WITH moved AS (UPDATE payments SET status = 'CAPTURED', provider_ref = $2, updated_at = $3
                                WHERE id = $1 AND status = 'PROCESSING' RETURNING id),
                      legs AS (INSERT INTO ledger_entries (txn_id, booking_id, account, amount_fen, region_code, created_at)
                               SELECT $4, $5, v.account, v.amount, $6, {}
                               FROM moved, (VALUES {}) AS v (account, amount)),
                      queued AS (INSERT INTO outbox (event_id, kind, body) SELECT $7, $8, $9 FROM moved)
                 SELECT COUNT(*) AS moved FROM moved",
                not_before_the_mark(b, "$3"),
                rows.join(", ")
            ),
            values,
        ))
        .await?;
    Ok(match row {
        Some(r) => r.try_get::<i64>("", "moved")? == 1,
        None => false,
    })
}

/// The stamp `param` for a ledger entry, or the hosts' mark if that is
/// later: an entry stamped before the mark would be in no host's balance
/// (the database refuses one, `host_entries_after_the_mark`), and a mark
/// set while a clock ran ahead would otherwise refuse every posting until
/// the clock caught up with it. Posted at the mark instead, an entry counts
/// from the next run on.
fn not_before_the_mark(b: sea_orm::DbBackend, param: &str) -> String {
    let later = match b {
        sea_orm::DbBackend::Postgres => "GREATEST",
        _ => "MAX",
    };
    format!("{later}({param}, COALESCE((SELECT MAX(mark_at) FROM host_marks), {param}))")
}

/// Appends one balanced ledger transaction.
pub async fn post<C: ConnectionTrait>(
    conn: &C,
    booking: BookingId,
    region: RegionCode,
    legs: &[(String, Fen)],
) -> Result<uuid::Uuid, DbErr> {
    balanced(legs)?;
    let b = conn.get_database_backend();
    let txn_id = uuid::Uuid::now_v7();
    // One statement for every leg: a capture's four legs are one round trip.
    let at = not_before_the_mark(b, "$4");
    let rows: Vec<String> = (0..legs.len())
        .map(|i| format!("($1, $2, ${}, ${}, $3, {at})", 5 + 2 * i, 6 + 2 * i))
        .collect();
    let mut values: Vec<sea_orm::Value> = vec![
        uuid_value(b, txn_id),
        uuid_value(b, booking.0),
        region.to_string().into(),
        Utc::now().into(),
    ];
    for (account, amount) in legs {
        values.push(account.as_str().into());
        values.push(amount.get().into());
    }
    conn.execute_raw(stmt(
        b,
        &format!(
            "INSERT INTO ledger_entries (txn_id, booking_id, account, amount_fen, region_code, created_at)
             VALUES {}",
            rows.join(", ")
        ),
        values,
    ))
    .await?;
    Ok(txn_id)
}

/// The welfare fund's balance, from its kept totals (`fund_totals`).
pub async fn fund_balance<C: ConnectionTrait>(conn: &C) -> Result<Fen, DbErr> {
    let b = conn.get_database_backend();
    let row = conn
        .query_one_raw(stmt(
            b,
            "SELECT CAST(COALESCE(SUM(amount_fen), 0) AS BIGINT) AS total FROM fund_totals",
            vec![],
        ))
        .await?;
    Ok(Fen(match row {
        Some(r) => r.try_get("", "total")?,
        None => 0,
    }))
}

/// The welfare fund's entries that move money (0.00 legs left out, as
/// [`fund_entries`] leaves them), of listings within `region`, from its
/// kept totals.
pub async fn fund_entry_count<C: ConnectionTrait>(
    conn: &C,
    region: Option<RegionCode>,
) -> Result<i64, DbErr> {
    let b = conn.get_database_backend();
    let row = conn
        .query_one_raw(stmt(
            b,
            "SELECT CAST(COALESCE(SUM(entries), 0) AS BIGINT) AS n FROM fund_totals
             WHERE region_code LIKE $1",
            vec![within(region).into()],
        ))
        .await?;
    Ok(match row {
        Some(r) => r.try_get("", "n")?,
        None => 0,
    })
}

/// A page of the welfare fund's ledger entries, newest first, and whether
/// more follow. Legs of 0.00 (a share that rounds to nothing, on a small
/// payment or refund) are in the ledger but not on the public list.
pub async fn fund_entries<C: ConnectionTrait>(
    conn: &C,
    first: u32,
    after: Option<i64>,
    region: Option<RegionCode>,
) -> Result<(Vec<shared::rpcs::FundEntry>, bool), DbErr> {
    let b = conn.get_database_backend();
    let rows = conn
        .query_all_raw(stmt(
            b,
            "SELECT id, booking_id, region_code, amount_fen, created_at FROM ledger_entries
             WHERE account = $1 AND amount_fen <> 0 AND id < $2 AND region_code LIKE $4
             ORDER BY id DESC LIMIT $3",
            vec![
                crate::domain::FUND.into(),
                after.unwrap_or(i64::MAX).into(),
                (i64::from(first) + 1).into(),
                within(region).into(),
            ],
        ))
        .await?;
    shared::db::page(&rows, first, |r| {
        let booking = row_uuid(r, "booking_id")?;
        let region: String = r.try_get("", "region_code")?;
        Ok(shared::rpcs::FundEntry {
            id: r.try_get("", "id")?,
            booking_reference: BookingId(booking).public_reference(),
            region_code: RegionCode::parse(&region).map_err(|e| DbErr::Custom(e.to_string()))?,
            amount: Fen(r.try_get("", "amount_fen")?),
            at: r.try_get("", "created_at")?,
        })
    })
}

/// The `LIKE` pattern of the region codes within `region` (all of them
/// for none).
fn within(region: Option<RegionCode>) -> String {
    format!(
        "{}%",
        region.map(RegionCode::code_prefix).unwrap_or_default()
    )
}

/// The captured payment of a booking, locked on PostgreSQL.
pub struct Captured {
    /// The payment as captured: amount, split, whom it paid.
    pub payment: Processing,
    /// Refunded so far.
    pub refunded: Fen,
}

/// The booking's CAPTURED payment, if any; `Err` names a payment still in
/// flight so the caller can wait for it.
pub async fn captured_for_booking<C: ConnectionTrait>(
    conn: &C,
    booking: BookingId,
) -> Result<Option<Captured>, DbErr> {
    let b = conn.get_database_backend();
    let lock = match b {
        sea_orm::DbBackend::Postgres => " FOR UPDATE",
        _ => "",
    };
    let sql = format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments WHERE booking_id = $1 AND status = 'CAPTURED'{lock}"
    );
    let Some(row) = conn
        .query_one_raw(stmt(b, &sql, vec![uuid_value(b, booking.0)]))
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(Captured {
        payment: settlement(&row)?,
        refunded: Fen(row.try_get("", "refunded_fen")?),
    }))
}

/// Whether the booking has a payment still PROCESSING.
pub async fn processing_for_booking<C: ConnectionTrait>(
    conn: &C,
    booking: BookingId,
) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    Ok(conn
        .query_one_raw(stmt(
            b,
            "SELECT id FROM payments WHERE booking_id = $1 AND status = 'PROCESSING'",
            vec![uuid_value(b, booking.0)],
        ))
        .await?
        .is_some())
}

/// Which of `bookings` have a payment in flight: PROCESSING (the provider's
/// answer not recorded), or CAPTURED (booking may not have heard of it yet;
/// for a booking still awaiting payment, its `payment.captured` is on its
/// way).
pub async fn paying<C: ConnectionTrait>(
    conn: &C,
    bookings: &[BookingId],
) -> Result<Vec<BookingId>, DbErr> {
    let rows = shared::db::rows_with_ids(
        conn,
        "SELECT DISTINCT booking_id FROM payments WHERE booking_id IN ({ids})
         AND status IN ('PROCESSING', 'CAPTURED')",
        bookings.iter().map(|id| id.0),
    )
    .await?;
    rows.iter()
        .map(|r| Ok(BookingId(shared::db::row_uuid(r, "booking_id")?)))
        .collect()
}

/// Adds `amount` to what is refunded of a payment if that stays within the
/// amount captured, in one conditional update: concurrent refunds can never
/// take more than was paid. Ok(false) when it would.
pub async fn reserve_refund<C: ConnectionTrait>(
    conn: &C,
    payment: PaymentId,
    amount: Fen,
) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    let r = conn
        .execute_raw(stmt(
            b,
            "UPDATE payments SET refunded_fen = refunded_fen + $2, updated_at = $3
             WHERE id = $1 AND status = 'CAPTURED' AND refunded_fen + $2 <= amount_fen",
            vec![
                uuid_value(b, payment.0),
                amount.get().into(),
                Utc::now().into(),
            ],
        ))
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Gives back a reservation whose refund the provider declined.
pub async fn unreserve_refund<C: ConnectionTrait>(
    conn: &C,
    payment: PaymentId,
    amount: Fen,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "UPDATE payments SET refunded_fen = refunded_fen - $2, updated_at = $3 WHERE id = $1",
        vec![
            uuid_value(b, payment.0),
            amount.get().into(),
            Utc::now().into(),
        ],
    ))
    .await?;
    Ok(())
}

/// A refund row.
#[derive(Debug, Clone)]
pub struct Refund {
    /// The refund.
    pub id: shared::ids::RefundId,
    /// The payment refunded.
    pub payment_id: PaymentId,
    /// The booking.
    pub booking_id: BookingId,
    /// Amount.
    pub amount: Fen,
    /// The reversed shares.
    pub split: Split,
    /// Why.
    pub reason: String,
    /// PENDING (reserved, provider not yet done), SUCCEEDED, FAILED (the
    /// provider refused) or REFUSED (more than was left to refund).
    pub status: String,
    /// The `booking.refund_requested` event it answers (its id is the
    /// request key); `None` for an admin's refund.
    pub request: Option<uuid::Uuid>,
}

/// Records a refund for a request key: PENDING, or REFUSED (with why in
/// `failure_reason`) when the request asked for more than is left.
pub async fn insert_refund<C: ConnectionTrait>(
    conn: &C,
    refund: &Refund,
    request_key: &str,
    refused: Option<&str>,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    let now = Utc::now();
    conn.execute_raw(stmt(
        b,
        "INSERT INTO refunds (id, payment_id, booking_id, request_key, amount_fen, split, reason, status, failure_reason, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
        vec![
            uuid_value(b, refund.id.0),
            uuid_value(b, refund.payment_id.0),
            uuid_value(b, refund.booking_id.0),
            request_key.into(),
            refund.amount.get().into(),
            serde_json::to_string(&refund.split).unwrap_or_default().into(),
            refund.reason.as_str().into(),
            if refused.is_some() { "REFUSED" } else { "PENDING" }.into(),
            refused.map(str::to_owned).into(),
            now.into(),
        ],
    ))
    .await?;
    Ok(())
}

fn refund_row(row: &QueryResult) -> Result<(Refund, shared::rpcs::RefundView), DbErr> {
    let split: String = row.try_get("", "split")?;
    let refund = Refund {
        id: shared::ids::RefundId(row_uuid(row, "id")?),
        payment_id: PaymentId(row_uuid(row, "payment_id")?),
        booking_id: BookingId(row_uuid(row, "booking_id")?),
        amount: Fen(row.try_get("", "amount_fen")?),
        split: serde_json::from_str(&split)
            .map_err(|e| DbErr::Custom(format!("refunds.split: {e}")))?,
        reason: row.try_get("", "reason")?,
        status: row.try_get("", "status")?,
        request: uuid::Uuid::parse_str(&row.try_get::<String>("", "request_key")?).ok(),
    };
    let view = shared::rpcs::RefundView {
        id: refund.id,
        booking_id: refund.booking_id,
        amount: refund.amount,
        split: (refund.status == "SUCCEEDED").then_some(refund.split),
        status: refund.status.clone(),
        reason: refund.reason.clone(),
        failure_reason: row.try_get("", "failure_reason")?,
        created_at: row.try_get("", "created_at")?,
    };
    Ok((refund, view))
}

/// The refund made for a request key.
pub async fn refund_by_key<C: ConnectionTrait>(
    conn: &C,
    request_key: &str,
) -> Result<Option<Refund>, DbErr> {
    Ok(refund_with_view(conn, request_key)
        .await?
        .map(|(r, _, _)| r))
}

/// A refund's status, if it exists.
pub async fn refund_status<C: ConnectionTrait>(
    conn: &C,
    id: shared::ids::RefundId,
) -> Result<Option<String>, DbErr> {
    let b = conn.get_database_backend();
    conn.query_one_raw(stmt(
        b,
        "SELECT status FROM refunds WHERE id = $1",
        vec![uuid_value(b, id.0)],
    ))
    .await?
    .map(|r| r.try_get("", "status"))
    .transpose()
}

/// [`refund_by_key`] with the client's view and the fingerprint of the
/// admin request that made it.
pub async fn refund_with_view<C: ConnectionTrait>(
    conn: &C,
    request_key: &str,
) -> Result<Option<(Refund, shared::rpcs::RefundView, Option<String>)>, DbErr> {
    let b = conn.get_database_backend();
    let Some(row) = conn
        .query_one_raw(stmt(
            b,
            &format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE request_key = $1"),
            vec![request_key.into()],
        ))
        .await?
    else {
        return Ok(None);
    };
    let (refund, view) = refund_row(&row)?;
    Ok(Some((refund, view, row.try_get("", "fingerprint")?)))
}

/// The payments and refunds of several bookings, oldest first, in two
/// queries: what a page of bookings shows of its money.
pub async fn money_of<C: ConnectionTrait>(
    conn: &C,
    bookings: &[BookingId],
    viewer: &Principal,
) -> Result<Vec<shared::rpcs::BookingMoney>, DbErr> {
    let mut out: Vec<shared::rpcs::BookingMoney> = bookings
        .iter()
        .map(|id| shared::rpcs::BookingMoney {
            booking_id: *id,
            payments: Vec::new(),
            refunds: Vec::new(),
        })
        .collect();
    let keys = || bookings.iter().map(|id| id.0);
    let payments = shared::db::rows_with_ids(
        conn,
        &format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE booking_id IN ({{ids}})
             ORDER BY created_at, id"
        ),
        keys(),
    )
    .await?;
    // A booking's money is shown to whom the booking is: its booker (the
    // account, or its agency) and the admins of the listing's region.
    let mut hidden = Vec::new();
    for row in &payments {
        let view = stored(row)?.view;
        // Payments older than account_id name no account: the nil one,
        // which is nobody's, leaves them to their agency and the admins.
        let booker = Booker {
            account_id: AccountId(shared::db::opt_row_uuid(row, "account_id")?.unwrap_or_default()),
            agency_id: shared::db::opt_row_uuid(row, "agency_id")?.map(AgencyId),
        };
        let region = shared::db::row_region(row, "region_code").ok();
        if !viewer.may_see(Some(&booker), region) {
            hidden.push(view.booking_id);
            continue;
        }
        if let Some(m) = out.iter_mut().find(|m| m.booking_id == view.booking_id) {
            m.payments.push(view);
        }
    }
    let refunds = shared::db::rows_with_ids(
        conn,
        &format!(
            "SELECT {REFUND_COLUMNS} FROM refunds WHERE booking_id IN ({{ids}})
             ORDER BY created_at, id"
        ),
        keys(),
    )
    .await?;
    for row in &refunds {
        let (_, mut view) = refund_row(row)?;
        if hidden.contains(&view.booking_id) {
            continue;
        }
        // Why the provider refused a refund (or why one asked for more
        // than was left) is the platform's business with its provider;
        // the traveler, the agency and region admins read what happens.
        if view.failure_reason.is_some() && !viewer.is_platform_admin() {
            view.failure_reason =
                Some("the refund could not be made; the platform will settle it with you".into());
        }
        if let Some(m) = out.iter_mut().find(|m| m.booking_id == view.booking_id) {
            m.refunds.push(view);
        }
    }
    Ok(out)
}

/// Records the fingerprint of the admin request a refund was made for.
pub async fn set_refund_fingerprint<C: ConnectionTrait>(
    conn: &C,
    id: shared::ids::RefundId,
    fingerprint: &str,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "UPDATE refunds SET fingerprint = $2 WHERE id = $1",
        vec![uuid_value(b, id.0), fingerprint.into()],
    ))
    .await?;
    Ok(())
}

/// Refunds left PENDING since before `before` (the provider did not
/// confirm, or payment stopped in between), oldest first, `limit` of them
/// after `after` (where the last page ended; None: from the first).
pub async fn pending_refunds<C: ConnectionTrait>(
    conn: &C,
    before: chrono::DateTime<Utc>,
    after: Option<Stuck>,
    limit: u64,
) -> Result<(Vec<Refund>, Option<Stuck>), DbErr> {
    let (rows, next) = stuck(
        conn,
        ("refunds", REFUND_COLUMNS, "PENDING"),
        before,
        after,
        limit,
    )
    .await?;
    let read = |r: &QueryResult| refund_row(r).map(|(refund, _)| refund);
    Ok((
        rows.iter()
            .filter_map(|r| readable(r, "refund", read))
            .collect(),
        next,
    ))
}

/// SQL: whether the booking named by `$booking` (a column) was captured
/// before the period's end `$1`: a payout run keeps back and deducts only
/// what is in what it owes (one sold after `upTo` took that period's
/// earnings away). One definition for the statements that must agree.
macro_rules! captured_before_up_to {
    ($booking:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM ledger_entries c WHERE c.booking_id = ",
            $booking,
            " AND c.created_at < $1)"
        )
    };
}

/// Where a page of stuck rows ended: its last row's `updated_at` and id.
pub type Stuck = (chrono::DateTime<Utc>, uuid::Uuid);

/// A page of `table`'s rows (`columns` of them) still `status` since before
/// `before`, oldest first after `after`, and where the page ended (None:
/// the last page). Paged so that rows the provider keeps failing on do
/// not keep newer ones from their turn in a round.
async fn stuck<C: ConnectionTrait>(
    conn: &C,
    (table, columns, status): (&str, &str, &str),
    before: chrono::DateTime<Utc>,
    after: Option<Stuck>,
    limit: u64,
) -> Result<(Vec<QueryResult>, Option<Stuck>), DbErr> {
    let b = conn.get_database_backend();
    let (from, id) = after.unwrap_or((chrono::DateTime::<Utc>::UNIX_EPOCH, uuid::Uuid::nil()));
    let rows = conn
        .query_all_raw(stmt(
            b,
            &format!(
                "SELECT {columns} FROM {table} WHERE status = $1 AND updated_at < $2
                   AND (updated_at > $3 OR (updated_at = $3 AND id > $4))
                 ORDER BY updated_at, id LIMIT $5"
            ),
            vec![
                status.into(),
                before.into(),
                from.into(),
                uuid_value(b, id),
                (limit as i64).into(),
            ],
        ))
        .await?;
    let next = match rows.last() {
        Some(last) if rows.len() as u64 == limit => {
            Some((last.try_get("", "updated_at")?, row_uuid(last, "id")?))
        }
        _ => None,
    };
    Ok((rows, next))
}

/// `read` of `row`, or None with a warning: one row the reconciler cannot
/// read (a split or region written by a newer release, say) leaves the
/// rest of its round to run.
fn readable<T>(
    row: &QueryResult,
    what: &str,
    read: impl FnOnce(&QueryResult) -> Result<T, DbErr>,
) -> Option<T> {
    read(row)
        .inspect_err(|e| {
            let id = row_uuid(row, "id").map(|id| id.to_string()).unwrap_or_default();
            tracing::warn!(%id, error = %e, "reconciliation: a {what} it cannot read, left for a person");
        })
        .ok()
}

/// What the payment's SUCCEEDED refunds add up to: where the next refund's
/// share of the split begins, so reversals tile the gross in the order the
/// provider confirmed them, whatever was refused or declined between.
pub async fn succeeded_refunds<C: ConnectionTrait>(
    conn: &C,
    payment: PaymentId,
) -> Result<Fen, DbErr> {
    let b = conn.get_database_backend();
    let row = conn
        .query_one_raw(stmt(
            b,
            "SELECT CAST(COALESCE(SUM(amount_fen), 0) AS BIGINT) AS n FROM refunds
             WHERE payment_id = $1 AND status = 'SUCCEEDED'",
            vec![uuid_value(b, payment.0)],
        ))
        .await?;
    Ok(Fen(match row {
        Some(r) => r.try_get("", "n")?,
        None => 0,
    }))
}

/// Moves a PENDING refund to SUCCEEDED (with the provider's reference and
/// the reversed split) or FAILED; Ok(false) if it had already left PENDING
/// (a redelivery or the reconciler finished it first).
pub async fn finish_refund<C: ConnectionTrait>(
    conn: &C,
    id: shared::ids::RefundId,
    outcome: Result<(&str, &Split), &str>,
) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    let (status, reference, failure, split) = match outcome {
        Ok((reference, split)) => (
            "SUCCEEDED",
            Some(reference),
            None,
            Some(serde_json::to_string(split).map_err(|e| DbErr::Custom(e.to_string()))?),
        ),
        Err(reason) => ("FAILED", None, Some(reason), None),
    };
    let r = conn
        .execute_raw(stmt(
            b,
            "UPDATE refunds SET status = $2, provider_ref = $3, failure_reason = $4, updated_at = $5,
                 split = COALESCE($6, split)
             WHERE id = $1 AND status = 'PENDING'",
            vec![
                uuid_value(b, id.0),
                status.into(),
                reference.map(str::to_owned).into(),
                failure.map(str::to_owned).into(),
                Utc::now().into(),
                split.into(),
            ],
        ))
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Notes what the reconciler found, of a refund of the payment or of the
/// payment itself (`refund` none); false when it was noted already (a
/// MISMATCH of a charge once per payment, each kind once per refund).
pub async fn log_reconciliation<C: ConnectionTrait>(
    conn: &C,
    kind: &str,
    (payment, booking, refund): (PaymentId, BookingId, Option<shared::ids::RefundId>),
    amount: Fen,
    note: &str,
) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    let refund = shared::db::opt_uuid_value(b, refund.map(|r| r.0));
    let written = conn.execute_raw(stmt(
        b,
        "INSERT INTO reconciliation_log (kind, payment_id, booking_id, amount_fen, note, created_at, refund_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        vec![
            kind.into(),
            uuid_value(b, payment.0),
            uuid_value(b, booking.0),
            amount.get().into(),
            note.into(),
            Utc::now().into(),
            refund,
        ],
    ))
    .await?;
    Ok(written.rows_affected() > 0)
}

/// How many entries the reconciliation log holds (of `kind`, when given).
pub async fn reconciliation_count<C: ConnectionTrait>(
    conn: &C,
    kind: Option<&str>,
) -> Result<u64, DbErr> {
    shared::db::count(
        conn,
        "reconciliation_log WHERE ($1 IS NULL OR kind = $1)",
        vec![kind.map(str::to_owned).into()],
    )
    .await
}

/// How many payout runs there were.
pub async fn payout_run_count<C: ConnectionTrait>(conn: &C) -> Result<u64, DbErr> {
    shared::db::count(conn, "payout_runs", vec![]).await
}

/// A page of the reconciliation log, newest first; only entries of
/// `kind` when given.
pub async fn reconciliation_log<C: ConnectionTrait>(
    conn: &C,
    first: u32,
    after: Option<i64>,
    kind: Option<&str>,
) -> Result<(Vec<(shared::rpcs::ReconciliationEntry, String)>, bool), DbErr> {
    let b = conn.get_database_backend();
    let rows = conn
        .query_all_raw(stmt(
            b,
            "SELECT id, kind, payment_id, booking_id, amount_fen, note, created_at
             FROM reconciliation_log WHERE ($3 IS NULL OR kind = $3) AND id < $1
             ORDER BY id DESC LIMIT $2",
            vec![
                after.unwrap_or(i64::MAX).into(),
                (i64::from(first) + 1).into(),
                kind.map(str::to_owned).into(),
            ],
        ))
        .await?;
    shared::db::page(&rows, first, |r| {
        let id: i64 = r.try_get("", "id")?;
        Ok((
            shared::rpcs::ReconciliationEntry {
                at: r.try_get("", "created_at")?,
                kind: r.try_get("", "kind")?,
                payment_id: PaymentId(row_uuid(r, "payment_id")?),
                booking_id: BookingId(row_uuid(r, "booking_id")?),
                amount: Fen(r.try_get("", "amount_fen")?),
                note: r.try_get("", "note")?,
            },
            id.to_string(),
        ))
    })
}

/// A charge at the provider that the payments disagree with.
pub struct ChargeMismatch {
    /// The charge's key (a payment id, if the charge is ours).
    pub key: String,
    /// What the provider charged.
    pub charged: Fen,
    /// The payment of that id, if there is one: its status, amount, booking.
    pub payment: Option<(String, Fen, BookingId)>,
}

/// The provider's charges since `since` that no payment explains — none
/// CAPTURED for the amount, none PROCESSING (in flight: the reconciler
/// settles it once it is old enough) — and that are not logged as a
/// MISMATCH yet: one statement over the day's charges (by their index),
/// each joined to its payment by primary key.
pub async fn provider_mismatches_since<C: ConnectionTrait>(
    conn: &C,
    since: chrono::DateTime<Utc>,
) -> Result<Vec<ChargeMismatch>, DbErr> {
    let b = conn.get_database_backend();
    // A key that is not a UUID is nobody's payment (and no cast of it may
    // fail the statement); SQLite keeps UUIDs as text.
    let id = match b {
        sea_orm::DbBackend::Postgres => {
            "CASE WHEN c.idempotency_key ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                  THEN CAST(c.idempotency_key AS UUID) END"
        }
        _ => "c.idempotency_key",
    };
    let sql = format!(
        "SELECT c.idempotency_key, c.amount_fen AS charged, p.status, p.amount_fen, p.booking_id
         FROM sandbox_charges c LEFT JOIN payments p ON p.id = {id}
         WHERE c.created_at >= $1 AND NOT c.closed
           AND (p.id IS NULL
                OR NOT ((p.status = 'CAPTURED' AND p.amount_fen = c.amount_fen)
                        OR p.status = 'PROCESSING'))
           AND NOT EXISTS (SELECT 1 FROM reconciliation_log l
                           WHERE l.kind = 'MISMATCH' AND l.refund_id IS NULL
                             AND l.payment_id = {id})"
    );
    conn.query_all_raw(stmt(b, &sql, vec![since.into()]))
        .await?
        .iter()
        .map(|r| {
            let payment = match r.try_get::<Option<String>>("", "status")? {
                Some(status) => Some((
                    status,
                    Fen(r.try_get("", "amount_fen")?),
                    BookingId(row_uuid(r, "booking_id")?),
                )),
                None => None,
            };
            Ok(ChargeMismatch {
                key: r.try_get("", "idempotency_key")?,
                charged: Fen(r.try_get("", "charged")?),
                payment,
            })
        })
        .collect()
}

/// A payment by id.
pub async fn payment<C: ConnectionTrait>(
    conn: &C,
    id: PaymentId,
) -> Result<Option<PaymentView>, DbErr> {
    let b = conn.get_database_backend();
    conn.query_one_raw(stmt(
        b,
        &format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1"),
        vec![uuid_value(b, id.0)],
    ))
    .await?
    .map(|r| stored(&r).map(|s| s.view))
    .transpose()
}

/// Whether a payout run `reference` exists (a page cursor names one).
pub async fn payout_run_exists<C: ConnectionTrait>(
    conn: &C,
    reference: &str,
) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    let row = conn
        .query_one_raw(stmt(
            b,
            "SELECT reference FROM payout_runs WHERE reference = $1",
            vec![reference.into()],
        ))
        .await?;
    Ok(row.is_some())
}

/// A page of payout runs, newest first, with their payouts; `after` is the
/// reference of the last run seen.
pub async fn payout_runs<C: ConnectionTrait>(
    conn: &C,
    first: u32,
    after: Option<&str>,
) -> Result<(Vec<shared::rpcs::PayoutRun>, bool), DbErr> {
    let b = conn.get_database_backend();
    let rows = conn
        .query_all_raw(stmt(
            b,
            "SELECT reference, up_to, created_at FROM payout_runs
             WHERE ($1 IS NULL OR created_at < (SELECT created_at FROM payout_runs WHERE reference = $1))
             ORDER BY created_at DESC LIMIT $2",
            vec![after.map(str::to_owned).into(), (i64::from(first) + 1).into()],
        ))
        .await?;
    let has_next = rows.len() > first as usize;
    let mut runs = Vec::new();
    for r in rows.iter().take(first as usize) {
        let reference: String = r.try_get("", "reference")?;
        let payouts: Vec<shared::rpcs::HostBalance> = payouts_of(conn, &reference)
            .await?
            .into_iter()
            .map(|(host_id, owed)| shared::rpcs::HostBalance { host_id, owed })
            .collect();
        runs.push(shared::rpcs::PayoutRun {
            total: payouts.iter().map(|p| p.owed).sum(),
            reference,
            up_to: Some(r.try_get("", "up_to")?),
            ran_at: Some(r.try_get("", "created_at")?),
            payouts,
        });
    }
    Ok((runs, has_next))
}

/// How many refunds of a booking are in each status.
pub async fn refund_counts<C: ConnectionTrait>(
    conn: &C,
    booking: BookingId,
) -> Result<Vec<(String, i64)>, DbErr> {
    let b = conn.get_database_backend();
    conn.query_all_raw(stmt(
        b,
        "SELECT status, CAST(COUNT(*) AS BIGINT) AS n FROM refunds WHERE booking_id = $1
         GROUP BY status ORDER BY status",
        vec![uuid_value(b, booking.0)],
    ))
    .await?
    .iter()
    .map(|r| Ok((r.try_get("", "status")?, r.try_get("", "n")?)))
    .collect()
}

/// A payment still PROCESSING: what settling it needs.
#[derive(Debug, Clone)]
pub struct Processing {
    /// The payment (also the provider's idempotency key).
    pub id: PaymentId,
    /// The booking.
    pub booking_id: BookingId,
    /// Amount charged.
    pub amount: Fen,
    /// The split to post.
    pub split: Split,
    /// The host paid.
    pub host: HostId,
    /// The listing's region.
    pub region: RegionCode,
    /// The agency owed commission.
    pub agency: Option<AgencyId>,
}

/// Payments PROCESSING since before `before` (a provider that never
/// answered, or a crash between the charge and its record), oldest first,
/// `limit` of them after `after` (None: from the first).
pub async fn stuck_processing<C: ConnectionTrait>(
    conn: &C,
    before: chrono::DateTime<Utc>,
    after: Option<Stuck>,
    limit: u64,
) -> Result<(Vec<Processing>, Option<Stuck>), DbErr> {
    let table = ("payments", PAYMENT_COLUMNS, "PROCESSING");
    let (rows, next) = stuck(conn, table, before, after, limit).await?;
    Ok((
        rows.iter()
            .filter_map(|r| readable(r, "payment", settlement))
            .collect(),
        next,
    ))
}

/// What settling or refunding a payment row needs.
fn settlement(row: &QueryResult) -> Result<Processing, DbErr> {
    let s = stored(row)?;
    Ok(Processing {
        id: s.view.id,
        booking_id: s.view.booking_id,
        amount: s.view.amount,
        split: s
            .view
            .split
            .ok_or_else(|| DbErr::Custom("a payment without its split".into()))?,
        host: HostId(
            shared::db::opt_row_uuid(row, "host_id")?
                .ok_or_else(|| DbErr::Custom("a payment without its host".into()))?,
        ),
        region: shared::db::row_region(row, "region_code")?,
        agency: shared::db::opt_row_uuid(row, "agency_id")?.map(AgencyId),
    })
}

/// The welfare fund's net donations per year (China time), and per region
/// for `year` (or all years).
pub async fn fund_totals<C: ConnectionTrait>(
    conn: &C,
    year: Option<i32>,
) -> Result<shared::rpcs::FundTotals, DbErr> {
    let b = conn.get_database_backend();
    // From the totals kept as entries are posted (`fund_totals`).
    let by_year = conn
        .query_all_raw(stmt(
            b,
            "SELECT year, CAST(SUM(amount_fen) AS BIGINT) AS total
             FROM fund_totals GROUP BY year ORDER BY year",
            vec![],
        ))
        .await?
        .iter()
        .map(|r| Ok((r.try_get::<i32>("", "year")?, Fen(r.try_get("", "total")?))))
        .collect::<Result<Vec<_>, DbErr>>()?;
    let by_region = conn
        .query_all_raw(stmt(
            b,
            "SELECT region_code, CAST(SUM(amount_fen) AS BIGINT) AS total
             FROM fund_totals WHERE ($1 OR year = $2)
             GROUP BY region_code HAVING SUM(amount_fen) <> 0 ORDER BY 2 DESC, 1",
            vec![year.is_none().into(), year.unwrap_or(0).into()],
        ))
        .await?
        .iter()
        .map(|r| {
            Ok((
                shared::db::row_region(r, "region_code")?,
                Fen(r.try_get("", "total")?),
            ))
        })
        .collect::<Result<Vec<_>, DbErr>>()?;
    Ok(shared::rpcs::FundTotals { by_year, by_region })
}

/// Balances of the host accounts (positive: owed): what bookings earned
/// them before `up_to`, less every payout and every refund ever made — also
/// those made after `up_to` — so a run over an earlier period never pays
/// the same earnings again, nor earnings a traveler has since had back.
pub async fn host_balances<C: ConnectionTrait>(
    conn: &C,
    up_to: chrono::DateTime<Utc>,
) -> Result<Vec<(HostId, Fen, RegionCode)>, DbErr> {
    balances(conn, up_to, true).await
}

/// What a payout run pays each host for entries before `up_to`: its
/// balance ([`host_balances`]) less its share of the refunds still PENDING
/// with the provider — money already promised back to travelers, not yet
/// in the ledger — and of what is left of the captures booking has not
/// said it handled (a capture reaching a booking that has ended goes back
/// in full), when that leaves something to pay.
///
/// All are read by one statement, so from one snapshot: read one after
/// the other, a refund the provider confirmed in between would be held
/// back and deducted (the host paid too little), and one reserved in
/// between neither (paid the share a traveler is owed); a capture made
/// after the unheard ones were looked up would be paid out unheard. (The
/// captures booking has handled are marked before: [`captures_heard`].)
/// Those marked at or after `asked_at` (when the run asked booking for its
/// refunds, by [`clock`]) are kept back too: booking records a capture
/// handled and the refund it asks for in one transaction, and one marked
/// after booking listed its refunds (by another replica's reconciler) may
/// have a refund that list left out.
///
/// The refunds booking `asked` for that payment has not heard of are read
/// before that statement: one that arrives in between is then held back
/// twice (as unheard and as pending or posted: this run pays less, the
/// next makes it up), where read after it, it would be held back by
/// neither (the statement saw no refund, the later look found it heard).
pub async fn payable_balances<C: ConnectionTrait>(
    conn: &C,
    up_to: chrono::DateTime<Utc>,
    (asked, asked_at): (&[shared::rpcs::RefundAsked], chrono::DateTime<Utc>),
) -> Result<Vec<(HostId, Fen, RegionCode)>, DbErr> {
    let b = conn.get_database_backend();
    let unheard = unheard_shares(conn, asked, up_to).await?;
    let rows = conn
        .query_all_raw(stmt(
            b,
            &format!(
                "WITH owed AS ({HOST_BALANCES})
                 SELECT account, region_code, owed, NULL AS host_id, NULL AS split,
                        NULL AS refunded_fen, NULL AS pending, CAST(NULL AS BIGINT) AS captured,
                        NULL AS payment_id
                 FROM owed
                 UNION ALL
                 SELECT NULL, NULL, NULL, p.host_id, p.split, p.refunded_fen,
                        CAST(SUM(r.amount_fen) AS BIGINT), NULL, p.id
                 FROM refunds r JOIN payments p ON p.id = r.payment_id
                 WHERE r.status = 'PENDING' AND p.host_id IS NOT NULL AND p.split IS NOT NULL
                   AND {pending_before}
                 GROUP BY p.id, p.host_id, p.split, p.refunded_fen
                 UNION ALL
                 SELECT NULL, NULL, NULL, host_id, split, refunded_fen, NULL, amount_fen, id
                 FROM payments
                 WHERE ((booking_heard_at IS NULL OR booking_heard_at >= $4) OR starts_on >= $5)
                   AND status = 'CAPTURED' AND refunded_fen < amount_fen
                   AND host_id IS NOT NULL AND split IS NOT NULL
                   AND {captured_before}",
                pending_before = captured_before_up_to!("p.booking_id"),
                captured_before = captured_before_up_to!("payments.booking_id"),
            ),
            vec![
                up_to.into(),
                uuid_value(b, uuid::Uuid::nil()),
                true.into(),
                asked_at.into(),
                shared::policy::china_today(up_to).into(),
            ],
        ))
        .await?;
    let mut owed = Vec::new();
    let mut promised: std::collections::HashMap<HostId, Fen> = std::collections::HashMap::new();
    // Captures kept back whole: a refund of one on its way is in it.
    let mut kept_whole = std::collections::HashSet::new();
    for row in &rows {
        if row.try_get::<Option<String>>("", "account")?.is_some() {
            owed.push(host_balance(row)?);
            continue;
        }
        // A pending refund's split is set when the provider confirms it;
        // until then the host's share is the split's between what the
        // payment had given back before its pending refunds and what they
        // will make it.
        let split: String = row.try_get("", "split")?;
        let split: Split = serde_json::from_str(&split)
            .map_err(|e| DbErr::Custom(format!("payments.split: {e}")))?;
        let reserved = Fen(row.try_get("", "refunded_fen")?);
        let share = match row.try_get::<Option<i64>>("", "captured")? {
            // A capture booking has not handled, or of a stay not under
            // way by the end of the run's period (China time: its booker
            // may still cancel it): what no refund has reserved yet
            // (reserved ones are held back as pending, or are in the
            // ledger).
            Some(captured) => {
                kept_whole.insert(row_uuid(row, "payment_id")?);
                split.reversal(reserved, Fen(captured)).host
            }
            None => {
                let pending = Fen(row.try_get("", "pending")?);
                split.reversal(reserved - pending, reserved).host
            }
        };
        *promised
            .entry(HostId(row_uuid(row, "host_id")?))
            .or_default() += share;
    }
    for (payment, host, share) in unheard {
        if !kept_whole.contains(&payment) {
            *promised.entry(host).or_default() += share;
        }
    }
    // By host, as `host_balances` lists them (the union has no order).
    owed.sort_by_key(|(host, _, _)| host.0);
    Ok(owed
        .into_iter()
        .map(|(host, owed, region)| {
            let held_back = promised.get(&host).copied().unwrap_or_default();
            (host, owed - held_back, region)
        })
        .filter(|(_, payable, _)| *payable > Fen::ZERO)
        .collect())
}

/// Of `bookings`, those with a refund booking asked for (not an admin's:
/// their keys begin `admin:`), in any state.
pub async fn refunded_at_bookings_request<C: ConnectionTrait>(
    conn: &C,
    bookings: &[BookingId],
) -> Result<std::collections::HashSet<BookingId>, DbErr> {
    let b = conn.get_database_backend();
    let mut found = std::collections::HashSet::new();
    for chunk in bookings.chunks(500) {
        let rows = conn
            .query_all_raw(stmt(
                b,
                &format!(
                    "SELECT DISTINCT booking_id FROM refunds
                     WHERE request_key NOT LIKE 'admin:%' AND booking_id IN ({})",
                    shared::db::placeholders(1, chunk.len())
                ),
                chunk.iter().map(|id| uuid_value(b, id.0)).collect(),
            ))
            .await?;
        for row in &rows {
            found.insert(BookingId(row_uuid(row, "booking_id")?));
        }
    }
    Ok(found)
}

/// The host shares of the refunds booking asked for (`asked`) that payment
/// has no refund of yet — their request still on its way — each taken as
/// the next refund of its booking's capture, at most what is left of it;
/// by payment. Only of captures in the ledger before `up_to`: a later one
/// is no part of the run's earnings (it took the refund of a sale after the
/// period out of the period's pay).
async fn unheard_shares<C: ConnectionTrait>(
    conn: &C,
    asked: &[shared::rpcs::RefundAsked],
    up_to: chrono::DateTime<Utc>,
) -> Result<Vec<(uuid::Uuid, HostId, Fen)>, DbErr> {
    let b = conn.get_database_backend();
    let mut heard = std::collections::HashSet::new();
    for chunk in asked.chunks(500) {
        let rows = conn
            .query_all_raw(stmt(
                b,
                &format!(
                    "SELECT request_key FROM refunds WHERE request_key IN ({})",
                    shared::db::placeholders(1, chunk.len())
                ),
                chunk.iter().map(|a| a.request.to_string().into()).collect(),
            ))
            .await?;
        for row in &rows {
            heard.insert(row.try_get::<String>("", "request_key")?);
        }
    }
    let unheard: Vec<&shared::rpcs::RefundAsked> = asked
        .iter()
        .filter(|a| !heard.contains(&a.request.to_string()))
        .collect();
    let mut shares = Vec::new();
    for chunk in unheard.chunks(500) {
        let rows = conn
            .query_all_raw(stmt(
                b,
                &format!(
                    "SELECT id, booking_id, host_id, split, amount_fen, refunded_fen FROM payments
                     WHERE status = 'CAPTURED' AND host_id IS NOT NULL AND split IS NOT NULL
                       AND {captured_before} AND booking_id IN ({})",
                    shared::db::placeholders(2, chunk.len()),
                    captured_before = captured_before_up_to!("payments.booking_id"),
                ),
                std::iter::once(up_to.into())
                    .chain(chunk.iter().map(|a| uuid_value(b, a.booking_id.0)))
                    .collect(),
            ))
            .await?;
        for row in &rows {
            let booking = BookingId(row_uuid(row, "booking_id")?);
            let Some(ask) = chunk.iter().find(|a| a.booking_id == booking) else {
                continue;
            };
            let split: String = row.try_get("", "split")?;
            let split: Split = serde_json::from_str(&split)
                .map_err(|e| DbErr::Custom(format!("payments.split: {e}")))?;
            let reserved = Fen(row.try_get("", "refunded_fen")?);
            let left = Fen(row.try_get("", "amount_fen")?) - reserved;
            let amount = ask.amount.min(left).max(Fen::ZERO);
            let share = split.reversal(reserved, reserved + amount).host;
            shares.push((
                row_uuid(row, "id")?,
                HostId(row_uuid(row, "host_id")?),
                share,
            ));
        }
    }
    Ok(shares)
}

/// Balances of the host accounts as the ledger stood at `at`: every entry
/// before it, payouts included only if made before it (a report; payout
/// runs use [`host_balances`]).
pub async fn host_balances_at<C: ConnectionTrait>(
    conn: &C,
    at: chrono::DateTime<Utc>,
) -> Result<Vec<(HostId, Fen, RegionCode)>, DbErr> {
    balances(conn, at, false).await
}

/// A moment before every entry, as both backends compare it with
/// `created_at` (PostgreSQL reads it as a timestamptz; SQLite compares
/// text, and every stored instant sorts after it).
macro_rules! epoch {
    () => {
        "'1970-01-01 00:00:00+00:00'"
    };
}

/// Each host account's balance: entries before `$1`, and with `$3` every
/// payout (booked to the nil booking `$2`) and every refund whenever made.
/// The entries before the hosts' mark ([`advance_host_marks`]), when it is
/// no later than `$1`, are read as the mark's sums: every one of them is
/// before `$1`, so counted whole.
const HOST_BALANCES: &str = concat!(
    "SELECT account, MIN(region_code) AS region_code,
        CAST(SUM(amount_fen) AS BIGINT) AS owed
    FROM (
        SELECT account, region_code, owed_fen AS amount_fen FROM host_marks
        WHERE mark_at <= $1
        UNION ALL
        SELECT account, region_code, amount_fen FROM ledger_entries e
        WHERE account LIKE 'host:%'
          AND created_at >= COALESCE(
              (SELECT MAX(mark_at) FROM host_marks WHERE mark_at <= $1), ",
    epoch!(),
    ")
          AND (created_at < $1 OR ($3 AND (booking_id = $2 OR (amount_fen < 0 AND ",
    // A refund since, of earnings before `upTo`.
    captured_before_up_to!("e.booking_id"),
    "))))
    ) x
    GROUP BY account HAVING SUM(amount_fen) <> 0"
);

/// Moves the hosts' mark on to `to` (never back): adds each host's entries
/// from the mark up to `to` to its kept sum ([`HOST_BALANCES`] reads the
/// sums in place of those entries). Payout runs call it, each under the
/// payouts' lock, so two never add the same entries.
pub async fn advance_host_marks<C: ConnectionTrait>(
    conn: &C,
    to: chrono::DateTime<Utc>,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    let from: Option<chrono::DateTime<Utc>> = conn
        .query_one_raw(stmt(
            b,
            "SELECT MAX(mark_at) AS mark_at FROM host_marks",
            vec![],
        ))
        .await?
        .map(|r| r.try_get("", "mark_at"))
        .transpose()?
        .flatten();
    if from.is_some_and(|from| from >= to) {
        return Ok(());
    }
    let from = from.unwrap_or(chrono::DateTime::<Utc>::UNIX_EPOCH);
    conn.execute_raw(stmt(
        b,
        "INSERT INTO host_marks (account, region_code, owed_fen, mark_at)
         SELECT account, MIN(region_code), CAST(SUM(amount_fen) AS BIGINT), $2
         FROM ledger_entries
         WHERE account LIKE 'host:%' AND created_at >= $1 AND created_at < $2
         GROUP BY account
         ON CONFLICT (account) DO UPDATE SET
            owed_fen = host_marks.owed_fen + excluded.owed_fen,
            region_code = CASE WHEN excluded.region_code < host_marks.region_code
                THEN excluded.region_code ELSE host_marks.region_code END,
            mark_at = excluded.mark_at",
        vec![from.into(), to.into()],
    ))
    .await?;
    // The hosts with nothing since: one mark for all.
    conn.execute_raw(stmt(
        b,
        "UPDATE host_marks SET mark_at = $1 WHERE mark_at < $1",
        vec![to.into()],
    ))
    .await?;
    Ok(())
}

async fn balances<C: ConnectionTrait>(
    conn: &C,
    up_to: chrono::DateTime<Utc>,
    every_payout: bool,
) -> Result<Vec<(HostId, Fen, RegionCode)>, DbErr> {
    let b = conn.get_database_backend();
    conn.query_all_raw(stmt(
        b,
        &format!("{HOST_BALANCES} ORDER BY account"),
        vec![
            up_to.into(),
            uuid_value(b, uuid::Uuid::nil()),
            every_payout.into(),
        ],
    ))
    .await?
    .iter()
    .map(host_balance)
    .collect()
}

/// A row of [`HOST_BALANCES`].
fn host_balance(r: &QueryResult) -> Result<(HostId, Fen, RegionCode), DbErr> {
    let account: String = r.try_get("", "account")?;
    let id = account
        .strip_prefix("host:")
        .and_then(|id| uuid::Uuid::parse_str(id).ok())
        .ok_or_else(|| DbErr::Custom(format!("ledger account {account}")))?;
    Ok((
        HostId(id),
        Fen(r.try_get("", "owed")?),
        shared::db::row_region(r, "region_code")?,
    ))
}

/// An agency's commission account over `[from, until)`: what captures
/// credited, what refunds took back, and how many of its bookings were
/// captured (the traveler's clearing leg of each capture of a payment of the
/// agency's).
pub async fn agency_commission<C: ConnectionTrait>(
    conn: &C,
    agency: AgencyId,
    from: chrono::DateTime<Utc>,
    until: chrono::DateTime<Utc>,
) -> Result<shared::rpcs::AgencyCommission, DbErr> {
    let b = conn.get_database_backend();
    let row = conn
        .query_one_raw(stmt(
            b,
            "SELECT CAST(COALESCE(SUM(CASE WHEN amount_fen > 0 THEN amount_fen ELSE 0 END), 0) AS BIGINT) AS earned,
                    CAST(COALESCE(SUM(CASE WHEN amount_fen < 0 THEN -amount_fen ELSE 0 END), 0) AS BIGINT) AS reversed,
                    (SELECT CAST(COUNT(DISTINCT l.booking_id) AS BIGINT)
                     FROM payments p JOIN ledger_entries l ON l.booking_id = p.booking_id
                     WHERE p.agency_id = $5 AND l.account = $4 AND l.amount_fen < 0
                       AND l.created_at >= $2 AND l.created_at < $3) AS bookings
             FROM ledger_entries WHERE account = $1 AND created_at >= $2 AND created_at < $3",
            vec![
                crate::domain::agency_account(agency).into(),
                from.into(),
                until.into(),
                // Every capture counts, its commission rounded to nothing
                // (or a contract of 0 basis points) too: no agency leg then.
                crate::domain::CLEARING.into(),
                uuid_value(b, agency.0),
            ],
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("an aggregate without a row".into()))?;
    Ok(shared::rpcs::AgencyCommission {
        earned: Fen(row.try_get("", "earned")?),
        reversed: Fen(row.try_get("", "reversed")?),
        bookings: u32::try_from(row.try_get::<i64>("", "bookings")?).unwrap_or(u32::MAX),
    })
}

/// Records a payout run; Ok(false) when its reference was used before.
pub async fn insert_payout_run<C: ConnectionTrait>(
    conn: &C,
    reference: &str,
    up_to: chrono::DateTime<Utc>,
) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    let r = conn
        .execute_raw(stmt(
            b,
            "INSERT INTO payout_runs (reference, up_to, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (reference) DO NOTHING",
            vec![reference.into(), up_to.into(), Utc::now().into()],
        ))
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Records one host's payout in a run.
pub async fn insert_payout<C: ConnectionTrait>(
    conn: &C,
    reference: &str,
    host: HostId,
    amount: Fen,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "INSERT INTO payouts (reference, host_id, amount_fen, created_at) VALUES ($1, $2, $3, $4)",
        vec![
            reference.into(),
            uuid_value(b, host.0),
            amount.get().into(),
            Utc::now().into(),
        ],
    ))
    .await?;
    Ok(())
}

/// The payouts of a run.
pub async fn payouts_of<C: ConnectionTrait>(
    conn: &C,
    reference: &str,
) -> Result<Vec<(HostId, Fen)>, DbErr> {
    let b = conn.get_database_backend();
    conn.query_all_raw(stmt(
        b,
        "SELECT host_id, amount_fen FROM payouts WHERE reference = $1 ORDER BY host_id",
        vec![reference.into()],
    ))
    .await?
    .iter()
    .map(|r| {
        Ok((
            HostId(row_uuid(r, "host_id")?),
            Fen(r.try_get("", "amount_fen")?),
        ))
    })
    .collect()
}

/// The advisory lock payout runs take, in their transaction.
const PAYOUTS_LOCK: i64 = 7461;

/// Serialises payout runs on PostgreSQL (SQLite has one writer anyway).
pub async fn lock_payouts<C: ConnectionTrait>(conn: &C) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    if b == sea_orm::DbBackend::Postgres {
        conn.execute_raw(stmt(
            b,
            "SELECT pg_advisory_xact_lock($1)",
            vec![PAYOUTS_LOCK.into()],
        ))
        .await?;
    }
    Ok(())
}

/// Takes the payouts' lock if no other run holds it (always on SQLite:
/// its one writer serialises runs); whether it did.
pub async fn try_lock_payouts<C: ConnectionTrait>(conn: &C) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    if b != sea_orm::DbBackend::Postgres {
        return Ok(true);
    }
    let row = conn
        .query_one_raw(stmt(
            b,
            "SELECT pg_try_advisory_xact_lock($1) AS taken",
            vec![PAYOUTS_LOCK.into()],
        ))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("pg_try_advisory_xact_lock".into()))?;
    row.try_get("", "taken")
}

/// When a payout run was recorded, and the moment it paid up to.
pub async fn payout_run_times<C: ConnectionTrait>(
    conn: &C,
    reference: &str,
) -> Result<Option<(chrono::DateTime<Utc>, chrono::DateTime<Utc>)>, DbErr> {
    let b = conn.get_database_backend();
    conn.query_one_raw(stmt(
        b,
        "SELECT up_to, created_at FROM payout_runs WHERE reference = $1",
        vec![reference.into()],
    ))
    .await?
    .map(|r| Ok((r.try_get("", "up_to")?, r.try_get("", "created_at")?)))
    .transpose()
}

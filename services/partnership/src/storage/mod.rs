//! Partnership's tables: partnerships and agreements; per booking the facts
//! known from events; the append-only attribution records (one row per
//! change of what a booking contributes to a partnership); and the monthly
//! totals kept from them in the same transaction, which reports read.

use crate::domain::{Contribution, Facts, Money3, Pair};
use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{ConnectionTrait, DbErr, QueryResult, Value};
use sea_orm_migration::{MigrationName, MigrationTrait, MigratorTrait, SchemaManager};
use shared::db::{opt_row_region, row_region, row_uuid, run_ddl, uuid_value};
use shared::ids::{AgreementId, BookingId, PartnershipId};
use shared::money::Fen;
use shared::outbox::stmt;
use shared::region::RegionCode;
use shared::rpcs::{AgreementView, Figures, PartnershipView, Withdrawal, YearTarget};

/// Partnership's migrations.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(shared::runtime::KernelMigration),
            Box::new(Impact),
            Box::new(Partnerships),
            Box::new(Terms),
            Box::new(FactsByDay),
            Box::new(RefundsHeard),
            Box::new(Recredits),
            Box::new(Withdrawals),
            Box::new(CreditsByPair),
            Box::new(shared::runtime::KernelInboxByAge),
            Box::new(PairWithdrawals),
        ]
    }
}

struct Impact;

impl MigrationName for Impact {
    fn name(&self) -> &str {
        "m20261123_000001_confirmed_bookings"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Impact {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(
            manager,
            &["CREATE TABLE confirmed_bookings (
                booking_id UUID PRIMARY KEY,
                sponsor_region TEXT,
                listing_region TEXT NOT NULL,
                certified BOOLEAN NOT NULL,
                travelers INTEGER NOT NULL,
                spend_fen BIGINT NOT NULL,
                confirmed_at TIMESTAMPTZ NOT NULL)"],
        )
        .await
    }
}

struct Partnerships;

impl MigrationName for Partnerships {
    fn name(&self) -> &str {
        "m20261124_000001_partnerships_attribution"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Partnerships {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(
            manager,
            &[
                "CREATE TABLE partnerships (
                    id UUID PRIMARY KEY,
                    sponsor_code TEXT NOT NULL,
                    beneficiary_code TEXT NOT NULL,
                    since DATE,
                    status TEXT NOT NULL,
                    notes TEXT,
                    demo BOOLEAN NOT NULL,
                    created_at TIMESTAMPTZ NOT NULL,
                    UNIQUE (sponsor_code, beneficiary_code))",
                "CREATE TABLE agreements (
                    id UUID PRIMARY KEY,
                    partnership_id UUID NOT NULL REFERENCES partnerships (id),
                    title TEXT NOT NULL,
                    signed_on DATE NOT NULL,
                    starts_on DATE NOT NULL,
                    ends_on DATE NOT NULL CHECK (ends_on >= starts_on),
                    signatories TEXT NOT NULL,
                    targets TEXT NOT NULL,
                    created_at TIMESTAMPTZ NOT NULL)",
                "CREATE INDEX agreements_partnership ON agreements (partnership_id)",
                "CREATE TABLE booking_facts (
                    booking_id UUID PRIMARY KEY,
                    sponsor_code TEXT,
                    listing_code TEXT,
                    certified BOOLEAN NOT NULL DEFAULT FALSE,
                    travelers INTEGER NOT NULL DEFAULT 0,
                    total_fen BIGINT NOT NULL DEFAULT 0,
                    confirmed_at TIMESTAMPTZ,
                    captured_gross BIGINT NOT NULL DEFAULT 0,
                    captured_host BIGINT NOT NULL DEFAULT 0,
                    captured_fund BIGINT NOT NULL DEFAULT 0,
                    refunded_gross BIGINT NOT NULL DEFAULT 0,
                    refunded_host BIGINT NOT NULL DEFAULT 0,
                    refunded_fund BIGINT NOT NULL DEFAULT 0,
                    cancelled BOOLEAN NOT NULL DEFAULT FALSE)",
                "INSERT INTO booking_facts (booking_id, sponsor_code, listing_code, certified, travelers, total_fen, confirmed_at)
                    SELECT booking_id, sponsor_region, listing_region, certified, travelers, spend_fen, confirmed_at
                    FROM confirmed_bookings",
                "DROP TABLE confirmed_bookings",
                "CREATE TABLE attributions (
                    id BIGSERIAL PRIMARY KEY,
                    booking_id UUID NOT NULL,
                    partnership_id UUID NOT NULL REFERENCES partnerships (id),
                    cause TEXT NOT NULL,
                    year INTEGER NOT NULL,
                    month INTEGER NOT NULL,
                    tourists BIGINT NOT NULL,
                    bookings BIGINT NOT NULL,
                    spend_fen BIGINT NOT NULL,
                    certified_fen BIGINT NOT NULL,
                    host_fen BIGINT NOT NULL,
                    fund_fen BIGINT NOT NULL,
                    at TIMESTAMPTZ NOT NULL)",
                "CREATE INDEX attributions_booking ON attributions (booking_id, partnership_id)",
                "CREATE TABLE impact_totals (
                    partnership_id UUID NOT NULL REFERENCES partnerships (id),
                    year INTEGER NOT NULL,
                    month INTEGER NOT NULL,
                    tourists BIGINT NOT NULL,
                    bookings BIGINT NOT NULL,
                    spend_fen BIGINT NOT NULL,
                    certified_fen BIGINT NOT NULL,
                    host_fen BIGINT NOT NULL,
                    fund_fen BIGINT NOT NULL,
                    PRIMARY KEY (partnership_id, year, month))",
            ],
        )
        .await
    }
}

struct Terms;

impl MigrationName for Terms {
    fn name(&self) -> &str {
        "m20261204_000002_partnership_terms"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Terms {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // A pair ended before its end had a day ends today (China time);
        // `Partnerships::apply_terms_once` then credits every pair by its
        // term.
        let ended_today = match manager.get_database_backend() {
            sea_orm::DbBackend::Postgres => {
                "UPDATE partnerships SET ended_on = CAST(now() AT TIME ZONE 'UTC' + INTERVAL '8 hours' AS DATE)
                 WHERE status = 'ENDED'"
            }
            _ => "UPDATE partnerships SET ended_on = date('now', '+8 hours') WHERE status = 'ENDED'",
        };
        run_ddl(
            manager,
            &[
                "ALTER TABLE partnerships ADD COLUMN ended_on DATE",
                ended_today,
            ],
        )
        .await
    }
}

/// A region's year is read by its confirmation time (`impact_in`).
struct FactsByDay;

impl MigrationName for FactsByDay {
    fn name(&self) -> &str {
        "m20261205_000001_booking_facts_by_day"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for FactsByDay {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(
            manager,
            &["CREATE INDEX booking_facts_confirmed ON booking_facts (confirmed_at)"],
        )
        .await
    }
}

struct RefundsHeard;

impl MigrationName for RefundsHeard {
    fn name(&self) -> &str {
        "m20261205_000009_refunds_heard"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for RefundsHeard {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // A refund adds to what was refunded: counted once by its id, for
        // good (the inbox forgets events after a week, and a refund
        // replayed later would be taken off the figures again).
        run_ddl(
            manager,
            &["CREATE TABLE refunds_heard (
                refund_id UUID PRIMARY KEY,
                booking_id UUID NOT NULL,
                heard_at TIMESTAMPTZ NOT NULL)"],
        )
        .await
    }
}

struct Recredits;

impl MigrationName for Recredits {
    fn name(&self) -> &str {
        "m20261206_000001_recredits"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Recredits {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Crediting partnerships again with a sub-tree's bookings (a pair
        // recorded, its term moved) is work queued here and done a batch
        // of bookings per transaction, `after` the last one done: a crash
        // half-way leaves the rest to the next run.
        run_ddl(
            manager,
            &["CREATE TABLE recredits (
                id UUID PRIMARY KEY,
                prefix TEXT NOT NULL,
                cause TEXT NOT NULL,
                after_booking UUID,
                queued_at TIMESTAMPTZ NOT NULL)"],
        )
        .await
    }
}

struct Withdrawals;

impl MigrationName for Withdrawals {
    fn name(&self) -> &str {
        "m20261207_000001_agreement_withdrawals"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Withdrawals {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // An agreement withdrawn stays on record: when, why and by whom.
        run_ddl(
            manager,
            &[
                "ALTER TABLE agreements ADD COLUMN withdrawn_on DATE",
                "ALTER TABLE agreements ADD COLUMN withdrawal_reason TEXT",
                "ALTER TABLE agreements ADD COLUMN withdrawn_by UUID",
            ],
        )
        .await
    }
}

struct PairWithdrawals;

impl MigrationName for PairWithdrawals {
    fn name(&self) -> &str {
        "m20261209_000000_partnership_withdrawals"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for PairWithdrawals {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // A pair withdrawn (recorded by mistake) stays on record: when,
        // why and by whom.
        run_ddl(
            manager,
            &[
                "ALTER TABLE partnerships ADD COLUMN withdrawn_on DATE",
                "ALTER TABLE partnerships ADD COLUMN withdrawal_reason TEXT",
                "ALTER TABLE partnerships ADD COLUMN withdrawn_by UUID",
            ],
        )
        .await
    }
}

struct CreditsByPair;

impl MigrationName for CreditsByPair {
    fn name(&self) -> &str {
        "m20261207_000002_attributions_by_pair"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreditsByPair {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // A pair's credits for a year, a page at a time by booking
        // (`credits_page`), without reading every pair's.
        run_ddl(
            manager,
            &["CREATE INDEX IF NOT EXISTS attributions_pair_year
                ON attributions (partnership_id, year, booking_id)"],
        )
        .await
    }
}

/// Queues crediting every partnership again with the confirmed bookings of
/// listings whose code starts with `prefix` (`""`: every booking).
pub async fn queue_recredit<C: ConnectionTrait>(
    conn: &C,
    prefix: &str,
    cause: &str,
) -> Result<uuid::Uuid, DbErr> {
    let b = conn.get_database_backend();
    let id = uuid::Uuid::now_v7();
    conn.execute_raw(stmt(
        b,
        "INSERT INTO recredits (id, prefix, cause, after_booking, queued_at)
         VALUES ($1, $2, $3, NULL, $4)",
        vec![
            uuid_value(b, id),
            prefix.into(),
            cause.into(),
            Utc::now().into(),
        ],
    ))
    .await?;
    Ok(id)
}

/// Queued recredits, oldest first.
pub async fn queued_recredits<C: ConnectionTrait>(conn: &C) -> Result<Vec<uuid::Uuid>, DbErr> {
    let b = conn.get_database_backend();
    conn.query_all_raw(stmt(
        b,
        "SELECT id FROM recredits ORDER BY queued_at, id",
        vec![],
    ))
    .await?
    .iter()
    .map(|r| row_uuid(r, "id"))
    .collect()
}

/// A queued recredit taken for one batch.
pub struct Recredit {
    pub prefix: String,
    pub cause: String,
    /// The last booking done.
    pub after: Option<BookingId>,
}

/// Takes recredit `id` for this transaction; `None` when it is done or
/// another transaction has it (PostgreSQL: it waits for nobody).
pub async fn take_recredit<C: ConnectionTrait>(
    conn: &C,
    id: uuid::Uuid,
) -> Result<Option<Recredit>, DbErr> {
    let b = conn.get_database_backend();
    let lock = if b == sea_orm::DbBackend::Postgres {
        " FOR UPDATE SKIP LOCKED"
    } else {
        ""
    };
    let row = conn
        .query_one_raw(stmt(
            b,
            &format!("SELECT prefix, cause, after_booking FROM recredits WHERE id = $1{lock}"),
            vec![uuid_value(b, id)],
        ))
        .await?;
    row.map(|r| {
        Ok(Recredit {
            prefix: r.try_get("", "prefix")?,
            cause: r.try_get("", "cause")?,
            after: shared::db::opt_row_uuid(&r, "after_booking")?.map(BookingId),
        })
    })
    .transpose()
}

/// Marks recredit `id` done up to `last`, or done altogether (`None`).
pub async fn advance_recredit<C: ConnectionTrait>(
    conn: &C,
    id: uuid::Uuid,
    last: Option<BookingId>,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    let (sql, values) = match last {
        Some(last) => (
            "UPDATE recredits SET after_booking = $2 WHERE id = $1",
            vec![uuid_value(b, id), uuid_value(b, last.0)],
        ),
        None => (
            "DELETE FROM recredits WHERE id = $1",
            vec![uuid_value(b, id)],
        ),
    };
    conn.execute_raw(stmt(b, sql, values)).await?;
    Ok(())
}

/// Records that refund `id` of `booking` is counted; false when it was
/// already.
async fn first_hearing<C: ConnectionTrait>(
    conn: &C,
    booking: BookingId,
    id: shared::ids::RefundId,
) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    let done = conn
        .execute_raw(stmt(
            b,
            "INSERT INTO refunds_heard (refund_id, booking_id, heard_at) VALUES ($1, $2, $3)
             ON CONFLICT (refund_id) DO NOTHING",
            vec![
                uuid_value(b, id.0),
                uuid_value(b, booking.0),
                Utc::now().into(),
            ],
        ))
        .await?;
    Ok(done.rows_affected() == 1)
}

fn json_col<T: serde::de::DeserializeOwned>(row: &QueryResult, column: &str) -> Result<T, DbErr> {
    let s: String = row.try_get("", column)?;
    serde_json::from_str(&s).map_err(|e| DbErr::Custom(format!("{column}: {e}")))
}

// ------------------------------------------------------------ partnerships

/// Inserts a partnership; Ok(false) when the same pair exists.
pub async fn insert_partnership<C: ConnectionTrait>(
    conn: &C,
    p: &PartnershipView,
) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    let r = conn
        .execute_raw(stmt(
            b,
            "INSERT INTO partnerships (id, sponsor_code, beneficiary_code, since, status, notes, demo, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (sponsor_code, beneficiary_code) DO NOTHING",
            vec![
                uuid_value(b, p.id.0),
                p.sponsor.to_string().into(),
                p.beneficiary.to_string().into(),
                p.since.into(),
                p.status.as_str().into(),
                p.notes.clone().into(),
                p.demo.into(),
                Utc::now().into(),
            ],
        ))
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Whether `sponsor` already sponsors `beneficiary` (a pair not withdrawn).
pub async fn sponsors<C: ConnectionTrait>(
    conn: &C,
    sponsor: RegionCode,
    beneficiary: RegionCode,
) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    Ok(conn
        .query_one_raw(stmt(
            b,
            "SELECT 1 AS one FROM partnerships
             WHERE sponsor_code = $1 AND beneficiary_code = $2 AND status <> 'WITHDRAWN'",
            vec![sponsor.to_string().into(), beneficiary.to_string().into()],
        ))
        .await?
        .is_some())
}

/// The columns of `partnerships` [`partnership`] reads, named
/// (`shared::db` says why).
const PARTNERSHIP_COLUMNS: &str = "id, sponsor_code, beneficiary_code, since, ended_on, status, \
     notes, demo, withdrawn_on, withdrawal_reason";

fn partnership(row: &QueryResult) -> Result<PartnershipView, DbErr> {
    Ok(PartnershipView {
        id: PartnershipId(row_uuid(row, "id")?),
        sponsor: row_region(row, "sponsor_code")?,
        beneficiary: row_region(row, "beneficiary_code")?,
        since: row.try_get("", "since")?,
        ended_on: row.try_get("", "ended_on")?,
        status: row.try_get("", "status")?,
        notes: row.try_get("", "notes")?,
        demo: row.try_get("", "demo")?,
        agreements: Vec::new(),
        withdrawn_agreements: Vec::new(),
        crediting: false,
        withdrawal: withdrawal(row)?,
    })
}

/// A row's withdrawal (agreements, partnerships): set once `withdrawn_on`
/// is.
fn withdrawal(row: &QueryResult) -> Result<Option<Withdrawal>, DbErr> {
    let Some(on) = row.try_get::<Option<NaiveDate>>("", "withdrawn_on")? else {
        return Ok(None);
    };
    Ok(Some(Withdrawal {
        on,
        reason: row
            .try_get::<Option<String>>("", "withdrawal_reason")?
            .unwrap_or_default(),
    }))
}

/// The sub-trees queued recredits cover (`recredits.prefix`).
async fn crediting_prefixes<C: ConnectionTrait>(conn: &C) -> Result<Vec<String>, DbErr> {
    let b = conn.get_database_backend();
    conn.query_all_raw(stmt(b, "SELECT DISTINCT prefix FROM recredits", vec![]))
        .await?
        .iter()
        .map(|r| r.try_get("", "prefix"))
        .collect()
}

/// Whether a queued recredit covers bookings `beneficiary`'s pairs count:
/// one sub-tree holds the other.
fn credits_into(prefixes: &[String], beneficiary: RegionCode) -> bool {
    let own = beneficiary.code_prefix();
    prefixes
        .iter()
        .any(|p| p.starts_with(own.as_str()) || own.starts_with(p.as_str()))
}

/// Whether the figures of pairs of `beneficiary` are still being credited.
pub async fn crediting<C: ConnectionTrait>(
    conn: &C,
    beneficiary: RegionCode,
) -> Result<bool, DbErr> {
    Ok(credits_into(&crediting_prefixes(conn).await?, beneficiary))
}

/// Every partnership, with its agreements, oldest first.
pub async fn partnerships<C: ConnectionTrait>(conn: &C) -> Result<Vec<PartnershipView>, DbErr> {
    let b = conn.get_database_backend();
    let mut list = conn
        .query_all_raw(stmt(
            b,
            &format!("SELECT {PARTNERSHIP_COLUMNS} FROM partnerships ORDER BY created_at, id"),
            vec![],
        ))
        .await?
        .iter()
        .map(partnership)
        .collect::<Result<Vec<_>, _>>()?;
    let agreements = conn
        .query_all_raw(stmt(
            b,
            &format!("SELECT {AGREEMENT_COLUMNS} FROM agreements ORDER BY starts_on, id"),
            vec![],
        ))
        .await?
        .iter()
        .map(agreement)
        .collect::<Result<Vec<_>, _>>()?;
    for a in agreements {
        if let Some(p) = list.iter_mut().find(|p| p.id == a.partnership_id) {
            file_agreement(p, a);
        }
    }
    let prefixes = crediting_prefixes(conn).await?;
    for p in &mut list {
        p.crediting = credits_into(&prefixes, p.beneficiary);
    }
    Ok(list)
}

/// One partnership with its agreements.
pub async fn partnership_by_id<C: ConnectionTrait>(
    conn: &C,
    id: PartnershipId,
) -> Result<Option<PartnershipView>, DbErr> {
    let b = conn.get_database_backend();
    let Some(row) = conn
        .query_one_raw(stmt(
            b,
            &format!("SELECT {PARTNERSHIP_COLUMNS} FROM partnerships WHERE id = $1"),
            vec![uuid_value(b, id.0)],
        ))
        .await?
    else {
        return Ok(None);
    };
    let mut view = partnership(&row)?;
    let agreements = conn
        .query_all_raw(stmt(
            b,
            &format!(
                "SELECT {AGREEMENT_COLUMNS} FROM agreements WHERE partnership_id = $1
                 ORDER BY starts_on, id"
            ),
            vec![uuid_value(b, id.0)],
        ))
        .await?;
    for a in &agreements {
        file_agreement(&mut view, agreement(a)?);
    }
    view.crediting = crediting(conn, view.beneficiary).await?;
    Ok(Some(view))
}

/// Files an agreement with its partnership's in force or withdrawn ones:
/// everything that reads a pair's targets or bounds its term reads
/// `agreements`, which holds only those in force.
fn file_agreement(p: &mut PartnershipView, a: AgreementView) {
    if a.withdrawal.is_some() {
        p.withdrawn_agreements.push(a);
    } else {
        p.agreements.push(a);
    }
}

/// The partnership an agreement belongs to, if the agreement exists.
pub async fn partnership_of_agreement<C: ConnectionTrait>(
    conn: &C,
    id: AgreementId,
) -> Result<Option<PartnershipId>, DbErr> {
    let b = conn.get_database_backend();
    conn.query_one_raw(stmt(
        b,
        "SELECT partnership_id FROM agreements WHERE id = $1",
        vec![uuid_value(b, id.0)],
    ))
    .await?
    .map(|r| Ok(PartnershipId(row_uuid(&r, "partnership_id")?)))
    .transpose()
}

/// Marks an agreement withdrawn, if it is not already.
pub async fn withdraw_agreement<C: ConnectionTrait>(
    conn: &C,
    id: AgreementId,
    withdrawal: &Withdrawal,
    by: shared::ids::AccountId,
) -> Result<bool, DbErr> {
    mark_withdrawn(conn, "agreements", id.0, withdrawal, by).await
}

/// Marks a partnership withdrawn, if it is not already.
pub async fn withdraw_partnership<C: ConnectionTrait>(
    conn: &C,
    id: PartnershipId,
    withdrawal: &Withdrawal,
    by: shared::ids::AccountId,
) -> Result<bool, DbErr> {
    mark_withdrawn(conn, "partnerships", id.0, withdrawal, by).await
}

/// Marks row `id` of `table` (agreements, partnerships) withdrawn, if it
/// is not already; a partnership's status says so too.
async fn mark_withdrawn<C: ConnectionTrait>(
    conn: &C,
    table: &str,
    id: uuid::Uuid,
    withdrawal: &Withdrawal,
    by: shared::ids::AccountId,
) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    let status = if table == "partnerships" {
        ", status = 'WITHDRAWN'"
    } else {
        ""
    };
    let r = conn
        .execute_raw(stmt(
            b,
            &format!(
                "UPDATE {table} SET withdrawn_on = $2, withdrawal_reason = $3, withdrawn_by = $4
                 {status} WHERE id = $1 AND withdrawn_on IS NULL"
            ),
            vec![
                uuid_value(b, id),
                withdrawal.on.into(),
                withdrawal.reason.as_str().into(),
                uuid_value(b, by.0),
            ],
        ))
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Records a withdrawn pair again, as `p` asks (its id kept): ACTIVE from
/// `p.since`, its withdrawal gone.
pub async fn record_again<C: ConnectionTrait>(
    conn: &C,
    id: PartnershipId,
    p: &PartnershipView,
) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    let r = conn
        .execute_raw(stmt(
            b,
            "UPDATE partnerships SET status = 'ACTIVE', since = $2, ended_on = NULL, notes = $3,
                    demo = $4, withdrawn_on = NULL, withdrawal_reason = NULL, withdrawn_by = NULL
             WHERE id = $1 AND status = 'WITHDRAWN'",
            vec![
                uuid_value(b, id.0),
                p.since.into(),
                p.notes.clone().into(),
                p.demo.into(),
            ],
        ))
        .await?;
    Ok(r.rows_affected() == 1)
}

/// The partnership of `sponsor` and `beneficiary`, if they are paired.
pub async fn partnership_of<C: ConnectionTrait>(
    conn: &C,
    sponsor: RegionCode,
    beneficiary: RegionCode,
) -> Result<Option<PartnershipView>, DbErr> {
    let b = conn.get_database_backend();
    let Some(row) = conn
        .query_one_raw(stmt(
            b,
            "SELECT id FROM partnerships WHERE sponsor_code = $1 AND beneficiary_code = $2",
            vec![sponsor.to_string().into(), beneficiary.to_string().into()],
        ))
        .await?
    else {
        return Ok(None);
    };
    partnership_by_id(conn, PartnershipId(row_uuid(&row, "id")?)).await
}

/// Every partnership's regions: what attribution matches bookings against.
pub async fn pairs<C: ConnectionTrait>(conn: &C) -> Result<Vec<(PartnershipId, Pair)>, DbErr> {
    let b = conn.get_database_backend();
    conn.query_all_raw(stmt(
        b,
        "SELECT id, sponsor_code, beneficiary_code, since, ended_on, status FROM partnerships
         ORDER BY id",
        vec![],
    ))
    .await?
    .iter()
    .map(|r| {
        Ok((
            PartnershipId(row_uuid(r, "id")?),
            Pair {
                sponsor: row_region(r, "sponsor_code")?,
                beneficiary: row_region(r, "beneficiary_code")?,
                since: r.try_get("", "since")?,
                ended_on: r.try_get("", "ended_on")?,
                withdrawn: r.try_get::<String>("", "status")? == "WITHDRAWN",
            },
        ))
    })
    .collect()
}

/// Inserts an agreement.
pub async fn insert_agreement<C: ConnectionTrait>(
    conn: &C,
    a: &AgreementView,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "INSERT INTO agreements (id, partnership_id, title, signed_on, starts_on, ends_on, signatories, targets, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        vec![
            uuid_value(b, a.id.0),
            uuid_value(b, a.partnership_id.0),
            a.title.as_str().into(),
            a.signed_on.into(),
            a.starts_on.into(),
            a.ends_on.into(),
            serde_json::to_string(&a.signatories).unwrap_or_default().into(),
            serde_json::to_string(&a.targets).unwrap_or_default().into(),
            Utc::now().into(),
        ],
    ))
    .await?;
    Ok(())
}

/// The columns of `agreements` [`agreement`] reads, named.
const AGREEMENT_COLUMNS: &str = "id, partnership_id, title, signed_on, starts_on, ends_on, \
     signatories, targets, withdrawn_on, withdrawal_reason";

fn agreement(row: &QueryResult) -> Result<AgreementView, DbErr> {
    Ok(AgreementView {
        id: AgreementId(row_uuid(row, "id")?),
        partnership_id: PartnershipId(row_uuid(row, "partnership_id")?),
        title: row.try_get("", "title")?,
        signed_on: row.try_get("", "signed_on")?,
        starts_on: row.try_get("", "starts_on")?,
        ends_on: row.try_get("", "ends_on")?,
        signatories: json_col(row, "signatories")?,
        targets: json_col::<Vec<YearTarget>>(row, "targets")?,
        withdrawal: withdrawal(row)?,
    })
}

// ------------------------------------------------------------ booking facts

/// One fact an event brings about a booking.
pub enum Fact {
    /// `booking.confirmed`.
    Confirmed {
        /// Sponsor region.
        sponsor: Option<RegionCode>,
        /// Listing region.
        listing: RegionCode,
        /// Certified when held.
        certified: bool,
        /// Travelers.
        travelers: u32,
        /// Price.
        total: Fen,
        /// When.
        at: DateTime<Utc>,
        /// The capture's split (carried on `booking.confirmed`; None from
        /// producers older than the field).
        captured: Option<Money3>,
    },
    /// `payment.refunded` (added to what was refunded before, once per
    /// refund id).
    Refunded(shared::ids::RefundId, Money3),
    /// `booking.cancelled`.
    Cancelled,
    /// Nothing new (backfilling a new partnership).
    Nothing,
}

/// Records a fact and returns the booking's facts, the row locked until the
/// transaction ends on PostgreSQL: two events of one booking handled at once
/// reconcile one after the other. One statement: an upsert that returns the
/// row (`ON CONFLICT … DO UPDATE … RETURNING`, PostgreSQL and SQLite ≥ 3.35).
pub async fn record_fact<C: ConnectionTrait>(
    conn: &C,
    booking: BookingId,
    fact: Fact,
) -> Result<Facts, DbErr> {
    let b = conn.get_database_backend();
    // A refund counted before (its event replayed after the inbox forgot
    // it) changes nothing; the row is still locked and returned.
    let fact = match fact {
        Fact::Refunded(id, _) if !first_hearing(conn, booking, id).await? => Fact::Nothing,
        other => other,
    };
    // The columns the fact sets, their values, and what an existing row
    // becomes (a new row takes the values; `excluded` names them).
    const CONFIRMED: [&str; 6] = [
        "sponsor_code",
        "listing_code",
        "certified",
        "travelers",
        "total_fen",
        "confirmed_at",
    ];
    const CAPTURED: [&str; 3] = ["captured_gross", "captured_host", "captured_fund"];
    const REFUNDED: [&str; 3] = ["refunded_gross", "refunded_host", "refunded_fund"];
    let money = |m: Money3| -> [Value; 3] {
        [
            m.gross.get().into(),
            m.host.get().into(),
            m.fund.get().into(),
        ]
    };
    let replace = |columns: &[&str]| -> Vec<String> {
        columns
            .iter()
            .map(|c| format!("{c} = excluded.{c}"))
            .collect()
    };
    let (columns, mut values, update): (Vec<&str>, Vec<Value>, Vec<String>) = match fact {
        Fact::Confirmed {
            sponsor,
            listing,
            certified,
            travelers,
            total,
            at,
            captured,
        } => {
            let mut columns = CONFIRMED.to_vec();
            let mut values: Vec<Value> = vec![
                sponsor.map(|s| s.to_string()).into(),
                listing.to_string().into(),
                certified.into(),
                travelers.into(),
                total.get().into(),
                at.into(),
            ];
            if let Some(m) = captured {
                columns.extend(CAPTURED);
                values.extend(money(m));
            }
            let update = replace(&columns);
            (columns, values, update)
        }
        Fact::Refunded(_, m) => (
            REFUNDED.to_vec(),
            money(m).to_vec(),
            REFUNDED
                .iter()
                .map(|c| format!("{c} = booking_facts.{c} + excluded.{c}"))
                .collect(),
        ),
        Fact::Cancelled => (
            vec!["cancelled"],
            vec![true.into()],
            vec!["cancelled = TRUE".into()],
        ),
        // Takes the row lock like the others.
        Fact::Nothing => (
            vec![],
            vec![],
            vec!["cancelled = booking_facts.cancelled".into()],
        ),
    };
    values.insert(0, uuid_value(b, booking.0));
    let placeholders: Vec<String> = (1..=values.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "INSERT INTO booking_facts (booking_id{}) VALUES ({})
         ON CONFLICT (booking_id) DO UPDATE SET {}
         RETURNING {FACT_COLUMNS}",
        columns.iter().map(|c| format!(", {c}")).collect::<String>(),
        placeholders.join(", "),
        update.join(", ")
    );
    let row = conn
        .query_one_raw(stmt(b, &sql, values))
        .await?
        .ok_or_else(|| DbErr::Custom("booking facts: the upsert returned no row".into()))?;
    facts(&row)
}

fn money(row: &QueryResult, prefix: &str) -> Result<Money3, DbErr> {
    Ok(Money3 {
        gross: Fen(row.try_get("", &format!("{prefix}_gross"))?),
        host: Fen(row.try_get("", &format!("{prefix}_host"))?),
        fund: Fen(row.try_get("", &format!("{prefix}_fund"))?),
    })
}

/// The columns of `booking_facts` [`facts`] reads, named.
const FACT_COLUMNS: &str = "sponsor_code, listing_code, certified, travelers, total_fen, \
     confirmed_at, captured_gross, captured_host, captured_fund, refunded_gross, refunded_host, \
     refunded_fund, cancelled";

fn facts(row: &QueryResult) -> Result<Facts, DbErr> {
    Ok(Facts {
        sponsor: opt_row_region(row, "sponsor_code")?,
        listing: opt_row_region(row, "listing_code")?,
        certified: row.try_get("", "certified")?,
        travelers: u32::try_from(row.try_get::<i32>("", "travelers")?).unwrap_or(0),
        total: Fen(row.try_get("", "total_fen")?),
        confirmed_at: row.try_get("", "confirmed_at")?,
        captured: money(row, "captured")?,
        refunded: money(row, "refunded")?,
        cancelled: row.try_get("", "cancelled")?,
    })
}

/// Bookings confirmed from `from` (inclusive) to `to` (exclusive) whose
/// sponsor (or listing, when `as_sponsor` is false) code starts with
/// `prefix`, each as recorded (tests read them; reports use [`impact_in`]).
pub async fn facts_in<C: ConnectionTrait>(
    conn: &C,
    prefix: &str,
    as_sponsor: bool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Facts>, DbErr> {
    conn.query_all_raw(confirmed_between(
        conn.get_database_backend(),
        FACT_COLUMNS,
        (prefix, as_sponsor),
        (from, to),
    ))
    .await?
    .iter()
    .map(facts)
    .collect()
}

/// `SELECT <what>` over the facts of the bookings confirmed in `[from, to)`
/// whose sponsor (or listing, when `as_sponsor` is false) code starts with
/// `prefix`.
fn confirmed_between(
    b: sea_orm::DbBackend,
    what: &str,
    (prefix, as_sponsor): (&str, bool),
    (from, to): (DateTime<Utc>, DateTime<Utc>),
) -> sea_orm::Statement {
    let column = if as_sponsor {
        "sponsor_code"
    } else {
        "listing_code"
    };
    stmt(
        b,
        &format!(
            "SELECT {what} FROM booking_facts
             WHERE {column} LIKE $1 AND confirmed_at >= $2 AND confirmed_at < $3"
        ),
        vec![format!("{prefix}%").into(), from.into(), to.into()],
    )
}

/// What the bookings confirmed from `from` (inclusive) to `to` (exclusive)
/// whose sponsor (or listing, when `as_sponsor` is false) code starts with
/// `prefix` contribute now: [`Facts::contribution`] of each, summed by the
/// database. A region's year may hold hundreds of thousands of bookings:
/// read out and summed here, 200,000 cost seconds and a hundred MiB a call
/// of an anonymous query. (tests/partnership.rs holds the two to one
/// rule: `a_regions_year_is_summed_as_each_booking_contributes`.)
pub async fn impact_in<C: ConnectionTrait>(
    conn: &C,
    prefix: &str,
    as_sponsor: bool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Figures, DbErr> {
    let row = conn
        .query_one_raw(confirmed_between(
            conn.get_database_backend(),
            &contribution_sql(),
            (prefix, as_sponsor),
            (from, to),
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("a sum gave no row".into()))?;
    figures(&row)
}

/// [`Facts::contribution`] summed over confirmed `booking_facts` rows, in
/// SQL: travelers and the booking until cancelled; spend as captured (the
/// confirmed price until the capture is known) less refunds, certified when
/// held on a certified listing; host income and fund as captured less
/// refunded. Named as [`figures`] reads them.
fn contribution_sql() -> String {
    let spend =
        "(CASE WHEN captured_gross > 0 THEN captured_gross ELSE total_fen END - refunded_gross)";
    format!(
        "CAST(COALESCE(SUM(CASE WHEN cancelled THEN 0 ELSE travelers END), 0) AS BIGINT) AS tourists,
         CAST(COALESCE(SUM(CASE WHEN cancelled THEN 0 ELSE 1 END), 0) AS BIGINT) AS bookings,
         CAST(COALESCE(SUM({spend}), 0) AS BIGINT) AS spend_fen,
         CAST(COALESCE(SUM(CASE WHEN certified THEN {spend} ELSE 0 END), 0) AS BIGINT) AS certified_fen,
         CAST(COALESCE(SUM(captured_host - refunded_host), 0) AS BIGINT) AS host_fen,
         CAST(COALESCE(SUM(captured_fund - refunded_fund), 0) AS BIGINT) AS fund_fen"
    )
}

/// Makes a new partnership's backfill see every booking (one creation at a
/// time): waits for the
/// handlers recording facts right now to commit, and holds new ones until
/// the partnership is committed (PostgreSQL; SQLite has one writer). A
/// handler reads the pairs after recording its fact; without the lock a
/// booking confirmed while the partnership is created could be seen by
/// neither side and never be credited to it.
pub async fn lock_facts<C: ConnectionTrait>(conn: &C) -> Result<(), DbErr> {
    if conn.get_database_backend() == sea_orm::DbBackend::Postgres {
        // SHARE ROW EXCLUSIVE, not SHARE: two creations at once would both
        // hold SHARE and then deadlock on their backfills' writes.
        conn.execute_unprepared("LOCK TABLE booking_facts IN SHARE ROW EXCLUSIVE MODE")
            .await?;
    }
    Ok(())
}

/// The next `limit` confirmed bookings, in id order after `after`, of
/// listings whose code starts with `prefix` (`""`: every listing), their
/// facts rows locked in that order (PostgreSQL) before anything else is:
/// a batch then never holds a month's totals while it waits for a booking
/// an event's handler has (which waits for those totals in turn).
pub async fn confirmed_in<C: ConnectionTrait>(
    conn: &C,
    prefix: &str,
    after: Option<BookingId>,
    limit: u64,
) -> Result<Vec<BookingId>, DbErr> {
    let b = conn.get_database_backend();
    let lock = if b == sea_orm::DbBackend::Postgres {
        " FOR UPDATE"
    } else {
        ""
    };
    let mut values = vec![format!("{prefix}%").into()];
    let after = match after {
        Some(after) => {
            values.push(uuid_value(b, after.0));
            " AND booking_id > $2"
        }
        None => "",
    };
    values.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
    let n = values.len();
    conn.query_all_raw(stmt(
        b,
        &format!(
            "SELECT booking_id FROM booking_facts
             WHERE listing_code LIKE $1 AND confirmed_at IS NOT NULL{after}
             ORDER BY booking_id LIMIT ${n}{lock}"
        ),
        values,
    ))
    .await?
    .iter()
    .map(|r| Ok(BookingId(row_uuid(r, "booking_id")?)))
    .collect()
}

// ------------------------------------------------------------- attribution

fn figures(row: &QueryResult) -> Result<Figures, DbErr> {
    Ok(Figures {
        tourists: row.try_get("", "tourists")?,
        bookings: row.try_get("", "bookings")?,
        spend: Fen(row.try_get("", "spend_fen")?),
        certified_spend: Fen(row.try_get("", "certified_fen")?),
        host_income: Fen(row.try_get("", "host_fen")?),
        fund: Fen(row.try_get("", "fund_fen")?),
    })
}

const SUMS: &str = "CAST(COALESCE(SUM(tourists), 0) AS BIGINT) AS tourists,
    CAST(COALESCE(SUM(bookings), 0) AS BIGINT) AS bookings,
    CAST(COALESCE(SUM(spend_fen), 0) AS BIGINT) AS spend_fen,
    CAST(COALESCE(SUM(certified_fen), 0) AS BIGINT) AS certified_fen,
    CAST(COALESCE(SUM(host_fen), 0) AS BIGINT) AS host_fen,
    CAST(COALESCE(SUM(fund_fen), 0) AS BIGINT) AS fund_fen";

/// What each partnership was credited for a booking so far.
pub async fn credited<C: ConnectionTrait>(
    conn: &C,
    booking: BookingId,
) -> Result<Vec<(PartnershipId, Figures)>, DbErr> {
    let b = conn.get_database_backend();
    let sql = format!(
        "SELECT partnership_id, {SUMS} FROM attributions WHERE booking_id = $1
         GROUP BY partnership_id ORDER BY partnership_id"
    );
    conn.query_all_raw(stmt(b, &sql, vec![uuid_value(b, booking.0)]))
        .await?
        .iter()
        .map(|r| Ok((PartnershipId(row_uuid(r, "partnership_id")?), figures(r)?)))
        .collect()
}

/// The bookings that count for `partnership` in `year`, their records net
/// of reversals: one cancelled since counts what it kept (no tourist, the
/// spend its refund left), one that keeps nothing is left out; by booking
/// id after `after`, `first` of them; and, when `count`, how many there
/// are (else 0). The page walks `attributions_pair_year` in booking order
/// and stops at `first`; only its bookings' facts are read (at 400,000
/// credits a pair-year, the join and sort of them all took a second per
/// page). The count reads the whole year.
pub async fn credits_page<C: ConnectionTrait>(
    conn: &C,
    partnership: PartnershipId,
    year: i32,
    (after, first, count): (Option<BookingId>, u32, bool),
) -> Result<(Vec<shared::rpcs::PartnershipCredit>, u64), DbErr> {
    let b = conn.get_database_backend();
    let mut values = vec![uuid_value(b, partnership.0), year.into()];
    let after_clause = match after {
        Some(after) => {
            values.push(uuid_value(b, after.0));
            " AND a.booking_id > $3"
        }
        None => "",
    };
    // Anything left to count: a booking, tourists, or money kept.
    const COUNTS: &str = "(SUM(a.bookings) <> 0 OR SUM(a.tourists) <> 0 OR SUM(a.spend_fen) <> 0
         OR SUM(a.certified_fen) <> 0 OR SUM(a.host_fen) <> 0 OR SUM(a.fund_fen) <> 0)";
    let total: i64 = if count {
        let counting = format!(
            "SELECT a.booking_id FROM attributions a
             WHERE a.partnership_id = $1 AND a.year = $2
             GROUP BY a.booking_id HAVING {COUNTS}"
        );
        conn.query_one_raw(stmt(
            b,
            &format!("SELECT COUNT(*) AS n FROM ({counting}) counted"),
            values[..2].to_vec(),
        ))
        .await?
        .map(|r| r.try_get("", "n"))
        .transpose()?
        .unwrap_or(0)
    } else {
        0
    };
    let sql = format!(
        "SELECT page.*, f.sponsor_code, f.listing_code, f.confirmed_at
         FROM (SELECT a.booking_id, {SUMS}
               FROM attributions a
               WHERE a.partnership_id = $1 AND a.year = $2{after_clause}
               GROUP BY a.booking_id
               HAVING {COUNTS}
               ORDER BY a.booking_id LIMIT {first}) page
         LEFT JOIN booking_facts f ON f.booking_id = page.booking_id
         ORDER BY page.booking_id"
    );
    let credits = conn
        .query_all_raw(stmt(b, &sql, values))
        .await?
        .iter()
        .map(|r| {
            Ok(shared::rpcs::PartnershipCredit {
                booking_id: BookingId(row_uuid(r, "booking_id")?),
                confirmed_at: r.try_get("", "confirmed_at")?,
                sponsor_region: opt_row_region(r, "sponsor_code")?,
                listing_region: opt_row_region(r, "listing_code")?,
                figures: figures(r)?,
            })
        })
        .collect::<Result<Vec<_>, DbErr>>()?;
    Ok((credits, u64::try_from(total).unwrap_or(0)))
}

/// Appends one attribution record (its month's totals: [`add_to_totals`]).
pub async fn attribute<C: ConnectionTrait>(
    conn: &C,
    booking: BookingId,
    partnership: PartnershipId,
    cause: &str,
    (year, month): (i32, u32),
    delta: &Contribution,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    let mut values = vec![
        uuid_value(b, booking.0),
        uuid_value(b, partnership.0),
        cause.into(),
        year.into(),
        month.into(),
    ];
    values.extend(figure_values(delta));
    values.push(Utc::now().into());
    conn.execute_raw(stmt(
        b,
        "INSERT INTO attributions (booking_id, partnership_id, cause, year, month,
            tourists, bookings, spend_fen, certified_fen, host_fen, fund_fen, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        values,
    ))
    .await?;
    Ok(())
}

/// `figures` as the columns tourists, bookings, spend_fen, certified_fen,
/// host_fen and fund_fen take them.
fn figure_values(figures: &Contribution) -> [Value; 6] {
    [
        figures.tourists.into(),
        figures.bookings.into(),
        figures.spend.get().into(),
        figures.certified_spend.get().into(),
        figures.host_income.get().into(),
        figures.fund.get().into(),
    ]
}

/// What a transaction's attributions add to each (pair, year, month).
pub type Totals = std::collections::BTreeMap<(PartnershipId, i32, u32), Contribution>;

/// Adds `totals` to the kept monthly totals, in key order: every
/// transaction that credits takes the rows it changes in that one order (a
/// batch of bookings of several months, or two pairs' crediting side by
/// side, took them booking by booking, and two of them could deadlock).
pub async fn add_to_totals<C: ConnectionTrait>(conn: &C, totals: &Totals) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    for ((partnership, year, month), delta) in totals {
        if delta.is_zero() {
            continue;
        }
        let mut values = vec![
            uuid_value(b, partnership.0),
            (*year).into(),
            (*month).into(),
        ];
        values.extend(figure_values(delta));
        conn.execute_raw(stmt(
            b,
            "INSERT INTO impact_totals (partnership_id, year, month,
                tourists, bookings, spend_fen, certified_fen, host_fen, fund_fen)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (partnership_id, year, month) DO UPDATE SET
                tourists = impact_totals.tourists + excluded.tourists,
                bookings = impact_totals.bookings + excluded.bookings,
                spend_fen = impact_totals.spend_fen + excluded.spend_fen,
                certified_fen = impact_totals.certified_fen + excluded.certified_fen,
                host_fen = impact_totals.host_fen + excluded.host_fen,
                fund_fen = impact_totals.fund_fen + excluded.fund_fen",
            values,
        ))
        .await?;
    }
    Ok(())
}

/// A partnership's kept monthly totals for a year.
pub async fn monthly_totals<C: ConnectionTrait>(
    conn: &C,
    partnership: PartnershipId,
    year: i32,
) -> Result<Vec<(u32, Figures)>, DbErr> {
    monthly(conn, "impact_totals", partnership, year).await
}

/// The same, recomputed from the raw attribution records (audits, tests).
pub async fn monthly_recomputed<C: ConnectionTrait>(
    conn: &C,
    partnership: PartnershipId,
    year: i32,
) -> Result<Vec<(u32, Figures)>, DbErr> {
    monthly(conn, "attributions", partnership, year).await
}

async fn monthly<C: ConnectionTrait>(
    conn: &C,
    table: &str,
    partnership: PartnershipId,
    year: i32,
) -> Result<Vec<(u32, Figures)>, DbErr> {
    let b = conn.get_database_backend();
    let sql = format!(
        "SELECT month, {SUMS} FROM {table} WHERE partnership_id = $1 AND year = $2
         GROUP BY month ORDER BY month"
    );
    conn.query_all_raw(stmt(
        b,
        &sql,
        vec![uuid_value(b, partnership.0), year.into()],
    ))
    .await?
    .iter()
    .map(|r| {
        let month: i32 = r.try_get("", "month")?;
        Ok((u32::try_from(month).unwrap_or(0), figures(r)?))
    })
    // A month whose every figure was taken back (refunds, a pair withdrawn
    // or its term moved past its bookings) counts nothing: left out, as a
    // month never credited is.
    .filter(|m| !matches!(m, Ok((_, f)) if *f == Figures::default()))
    .collect()
}

/// First day of a year at midnight China time, in UTC.
pub fn year_start(year: i32) -> Option<DateTime<Utc>> {
    NaiveDate::from_ymd_opt(year, 1, 1).map(shared::policy::china_midnight)
}

/// A partnership's new status, term and notes, as stored.
pub struct PartnershipEdit {
    /// ACTIVE or ENDED.
    pub status: String,
    /// Paired since.
    pub since: Option<NaiveDate>,
    /// Ended on (None while ACTIVE).
    pub ended_on: Option<NaiveDate>,
    /// Notes.
    pub notes: Option<String>,
}

/// Stores a partnership's status, term and notes.
pub async fn update_partnership<C: ConnectionTrait>(
    conn: &C,
    id: PartnershipId,
    edit: PartnershipEdit,
) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    let r = conn
        .execute_raw(stmt(
            b,
            "UPDATE partnerships SET status = $2, since = $3, ended_on = $4, notes = $5 WHERE id = $1",
            vec![
                uuid_value(b, id.0),
                edit.status.into(),
                edit.since.into(),
                edit.ended_on.into(),
                edit.notes.into(),
            ],
        ))
        .await?;
    Ok(r.rows_affected() == 1)
}

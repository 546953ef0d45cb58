//! Booking's tables and queries. Status moves only by conditional updates
//! (`WHERE status IN (…)`), so two handlers racing on one booking cannot both
//! move it: the loser's update touches no row.

use crate::domain::Status;
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, QueryResult, Value};
use sea_orm_migration::{MigrationName, MigrationTrait, MigratorTrait, SchemaManager};
use shared::auth::{Booker, Principal, Role};
use shared::db::{placeholders, run_ddl, uuid_value};
use shared::envelope::Envelope;
use shared::events::ListingSnapshot;
use shared::events::{
    BookingCancelled, BookingConfirmed, BookingExpired, BookingFacts, BookingRejected,
    BookingStatusChanged,
};
use shared::ids::{AccountId, AgencyId, BookingId};
use shared::money::{Fen, Split};
use shared::outbox::{enqueue, stmt};
use shared::region::RegionCode;
use shared::rpcs::{BookingView, ContactInput, CreateBooking, HistoryEntry, TravelerInput};

/// Booking's migrations.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(shared::runtime::KernelMigration),
            Box::new(Bookings),
            Box::new(Cancellations),
            Box::new(HoldAttempts),
            Box::new(Refunds),
            Box::new(Bookers),
            Box::new(Replays),
            Box::new(HomeRegions),
            Box::new(CapturedSplits),
            Box::new(StartsOn),
            Box::new(Departures),
            Box::new(RefundRequests),
            Box::new(RefundsAsked),
            Box::new(RefundsWhole),
            Box::new(CapturesHeard),
            Box::new(CancelledForHost),
            Box::new(shared::runtime::KernelInboxByAge),
            Box::new(ByDay),
        ]
    }
}

struct Bookings;

impl MigrationName for Bookings {
    fn name(&self) -> &str {
        "m20261123_000001_bookings"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Bookings {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(
            manager,
            &[
                "CREATE TABLE bookings (
                    id UUID PRIMARY KEY,
                    status TEXT NOT NULL,
                    idempotency_key TEXT NOT NULL UNIQUE,
                    fingerprint TEXT NOT NULL,
                    item TEXT NOT NULL,
                    travelers TEXT NOT NULL,
                    traveler_count INTEGER NOT NULL,
                    contact TEXT NOT NULL,
                    sponsor_region TEXT,
                    notes TEXT,
                    total_fen BIGINT,
                    listing TEXT,
                    expires_at TIMESTAMPTZ,
                    reason TEXT,
                    created_at TIMESTAMPTZ NOT NULL,
                    updated_at TIMESTAMPTZ NOT NULL)",
                "CREATE INDEX bookings_awaiting_expiry ON bookings (expires_at) WHERE status = 'AWAITING_PAYMENT'",
                "CREATE TABLE booking_history (
                    id BIGSERIAL PRIMARY KEY,
                    booking_id UUID NOT NULL REFERENCES bookings (id),
                    status TEXT NOT NULL,
                    cause TEXT NOT NULL,
                    at TIMESTAMPTZ NOT NULL)",
                "CREATE INDEX booking_history_booking ON booking_history (booking_id)",
            ],
        )
        .await
    }
}

struct Cancellations;

impl MigrationName for Cancellations {
    fn name(&self) -> &str {
        "m20261123_000002_cancellations"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Cancellations {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(
            manager,
            &["CREATE TABLE cancellations (
                idempotency_key TEXT PRIMARY KEY,
                booking_id UUID NOT NULL REFERENCES bookings (id),
                at TIMESTAMPTZ NOT NULL)"],
        )
        .await
    }
}

struct HoldAttempts;

impl MigrationName for HoldAttempts {
    fn name(&self) -> &str {
        "m20261123_000003_hold_attempts"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for HoldAttempts {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(
            manager,
            &[
                "ALTER TABLE bookings ADD COLUMN hold_attempts INTEGER NOT NULL DEFAULT 1",
                "CREATE INDEX bookings_pending ON bookings (updated_at) WHERE status = 'PENDING'",
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
                "ALTER TABLE bookings ADD COLUMN refund_due_fen BIGINT",
                "ALTER TABLE bookings ADD COLUMN refunded_fen BIGINT NOT NULL DEFAULT 0",
            ],
        )
        .await
    }
}

struct Bookers;

impl MigrationName for Bookers {
    fn name(&self) -> &str {
        "m20261124_000002_bookers"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Bookers {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(
            manager,
            &[
                "ALTER TABLE bookings ADD COLUMN account_id UUID",
                "ALTER TABLE bookings ADD COLUMN agency_id UUID",
                "ALTER TABLE bookings ADD COLUMN commission_bp INTEGER NOT NULL DEFAULT 0",
                "CREATE INDEX bookings_account ON bookings (account_id, id)",
                "CREATE INDEX bookings_agency ON bookings (agency_id, id)",
            ],
        )
        .await
    }
}

struct Replays;

impl MigrationName for Replays {
    fn name(&self) -> &str {
        "m20261125_000001_replays_and_listing_region"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Replays {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(
            manager,
            &[
                // The first answers, replayed for a repeated idempotency key.
                "ALTER TABLE bookings ADD COLUMN first_response TEXT",
                "ALTER TABLE cancellations ADD COLUMN response TEXT",
                // The held listing's region, for region admins' lists.
                "ALTER TABLE bookings ADD COLUMN listing_region TEXT",
                "CREATE INDEX bookings_listing_region ON bookings (listing_region, id)",
            ],
        )
        .await
    }
}

struct HomeRegions;

impl MigrationName for HomeRegions {
    fn name(&self) -> &str {
        "m20261202_000001_home_regions_and_early_captures"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for HomeRegions {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(
            manager,
            &[
                // The booker's own home region, beside the sponsor region
                // the booking counts for (which a declared one overrides).
                "ALTER TABLE bookings ADD COLUMN home_region TEXT",
                // A capture that arrived while the booking was still PENDING
                // (its hold answer not yet recorded): confirmed on the answer.
                "ALTER TABLE bookings ADD COLUMN captured_fen BIGINT",
            ],
        )
        .await
    }
}

struct CapturedSplits;

impl MigrationName for CapturedSplits {
    fn name(&self) -> &str {
        "m20261203_000001_captured_splits"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CapturedSplits {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(
            manager,
            // How the capture that confirms the booking was shared out
            // (JSON), carried on `booking.confirmed` for attribution.
            &["ALTER TABLE bookings ADD COLUMN captured_split TEXT"],
        )
        .await
    }
}

struct StartsOn;

impl MigrationName for StartsOn {
    fn name(&self) -> &str {
        "m20261204_000001_booking_starts_on"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for StartsOn {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The day a booking starts (a stay's check-in, a departure's day):
        // region admins list their arrivals by it. Known at the create for
        // a stay, at the hold for seats; bookings made before, from what
        // they stored.
        let backfill = match manager.get_database_backend() {
            DbBackend::Postgres => {
                "UPDATE bookings SET starts_on = CAST(COALESCE(
                     CAST(listing AS JSON)->>'starts_on', CAST(item AS JSON)->>'check_in') AS DATE)"
            }
            _ => {
                "UPDATE bookings SET starts_on = COALESCE(
                     json_extract(listing, '$.starts_on'), json_extract(item, '$.check_in'))"
            }
        };
        run_ddl(
            manager,
            &["ALTER TABLE bookings ADD COLUMN starts_on DATE", backfill],
        )
        .await
    }
}

struct Departures;

impl MigrationName for Departures {
    fn name(&self) -> &str {
        "m20261205_000002_booking_departure"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Departures {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The departure a booking of seats is on: its operator's passenger
        // list. Known at the create; bookings made before, from their item.
        let backfill = match manager.get_database_backend() {
            DbBackend::Postgres => {
                "UPDATE bookings SET departure_id = CAST(CAST(item AS JSON)->>'departure_id' AS UUID)
                 WHERE CAST(item AS JSON)->>'kind' = 'SEATS'"
            }
            _ => {
                "UPDATE bookings SET departure_id = json_extract(item, '$.departure_id')
                 WHERE json_extract(item, '$.kind') = 'SEATS'"
            }
        };
        run_ddl(
            manager,
            &[
                "ALTER TABLE bookings ADD COLUMN departure_id UUID",
                backfill,
                "CREATE INDEX bookings_departure ON bookings (departure_id, id)
                 WHERE departure_id IS NOT NULL",
            ],
        )
        .await
    }
}

struct RefundsAsked;

impl MigrationName for RefundsAsked {
    fn name(&self) -> &str {
        "m20261205_000005_booking_refunds_asked"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for RefundsAsked {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Every payout run lists the refunds asked and not answered.
        run_ddl(
            manager,
            &[
                "CREATE INDEX bookings_refunds_asked ON bookings (refund_request)
               WHERE refund_request IS NOT NULL",
            ],
        )
        .await
    }
}

struct RefundsWhole;

impl MigrationName for RefundsWhole {
    fn name(&self) -> &str {
        "m20261205_000007_booking_refund_whole"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for RefundsWhole {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // A refund of the whole total whatever payment answers to its last
        // request (a stay lost to an expired hold: it could never be had).
        run_ddl(
            manager,
            &["ALTER TABLE bookings ADD COLUMN refund_whole BOOLEAN NOT NULL DEFAULT FALSE"],
        )
        .await
    }
}

struct CapturesHeard;

impl MigrationName for CapturesHeard {
    fn name(&self) -> &str {
        "m20261206_000001_booking_captures_heard"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CapturesHeard {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The captures booking has handled, whatever it made of them
        // (`shared::rpcs::GetCapturesHeard`).
        run_ddl(
            manager,
            &["CREATE TABLE captures_heard (
                payment_id UUID PRIMARY KEY,
                booking_id UUID NOT NULL,
                heard_at TIMESTAMPTZ NOT NULL)"],
        )
        .await
    }
}

struct CancelledForHost;

impl MigrationName for CancelledForHost {
    fn name(&self) -> &str {
        "m20261207_000001_booking_cancel_for_host"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CancelledForHost {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // A cancel key's request says whether it was for the host, and why:
        // the same key sent with another is another request.
        run_ddl(
            manager,
            &["ALTER TABLE cancellations ADD COLUMN for_host TEXT"],
        )
        .await
    }
}

struct ByDay;

impl MigrationName for ByDay {
    fn name(&self) -> &str {
        "m20261207_000002_booking_by_day"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for ByDay {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // An admin's arrivals (`startsFrom`/`startsTo`) and the list by day
        // (`orderBy: STARTS_ON`, its page after a (day, id)) read a few rows
        // in order instead of sorting every booking: at 500,000, a region's
        // week of arrivals took 0.56 s, its first page by day 0.67 s.
        run_ddl(
            manager,
            &[
                "CREATE INDEX bookings_by_day ON bookings ((COALESCE(starts_on, '9999-12-31')), id)",
                // The planner's statistics of the indexed day, before
                // autovacuum would gather them.
                "ANALYZE bookings",
            ],
        )
        .await
    }
}

/// Records that booking has handled capture `payment` of `booking`.
pub async fn capture_heard<C: ConnectionTrait>(
    conn: &C,
    payment: shared::ids::PaymentId,
    booking: BookingId,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "INSERT INTO captures_heard (payment_id, booking_id, heard_at) VALUES ($1, $2, $3)
         ON CONFLICT (payment_id) DO NOTHING",
        vec![
            uuid_value(b, payment.0),
            uuid_value(b, booking.0),
            Utc::now().into(),
        ],
    ))
    .await?;
    Ok(())
}

/// Of `payments`, the captures booking has handled.
pub async fn captures_heard<C: ConnectionTrait>(
    conn: &C,
    payments: &[shared::ids::PaymentId],
) -> Result<Vec<shared::ids::PaymentId>, DbErr> {
    shared::db::rows_with_ids(
        conn,
        "SELECT payment_id FROM captures_heard WHERE payment_id IN ({ids})",
        payments.iter().map(|p| p.0),
    )
    .await?
    .iter()
    .map(|r| {
        Ok(shared::ids::PaymentId(shared::db::row_uuid(
            r,
            "payment_id",
        )?))
    })
    .collect()
}

struct RefundRequests;

impl MigrationName for RefundRequests {
    fn name(&self) -> &str {
        "m20261205_000004_booking_refund_request"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for RefundRequests {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The `booking.refund_requested` a promised refund was asked with:
        // payment's answer to it (what it gave back, or that nothing was
        // left) replaces the promise.
        run_ddl(
            manager,
            &["ALTER TABLE bookings ADD COLUMN refund_request UUID"],
        )
        .await
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str, column: &str) -> Result<T, DbErr> {
    serde_json::from_str(s).map_err(|e| DbErr::Custom(format!("bookings.{column}: {e}")))
}

/// A stored booking: the view plus what idempotency needs.
pub struct Stored {
    /// As clients see it.
    pub view: BookingView,
    /// The create request's fingerprint.
    pub fingerprint: String,
    /// The booker's home region.
    pub home_region: Option<RegionCode>,
    /// Gross of a capture recorded while the booking was still PENDING.
    pub captured_early: Option<Fen>,
    /// How the capture was shared out, once recorded.
    pub captured: Option<Split>,
    /// The answer to the create request, replayed for its key.
    pub first_response: Option<BookingView>,
}

/// The columns of `bookings` this version reads ([`stored`] and
/// [`with_guests`]), named (`shared::db` says why).
const BOOKING_COLUMNS: &str = "id, status, item, traveler_count, total_fen, listing, expires_at, \
     reason, created_at, updated_at, refund_due_fen, refunded_fen, account_id, agency_id, \
     commission_bp, fingerprint, sponsor_region, home_region, captured_fen, captured_split, \
     first_response, travelers, contact, notes";

fn stored(row: &QueryResult) -> Result<Stored, DbErr> {
    let item: String = row.try_get("", "item")?;
    let listing: Option<String> = row.try_get("", "listing")?;
    let sponsor: Option<String> = row.try_get("", "sponsor_region")?;
    Ok(Stored {
        view: BookingView {
            id: BookingId(shared::db::row_uuid(row, "id")?),
            status: row.try_get("", "status")?,
            item: from_json(&item, "item")?,
            travelers: u32::try_from(row.try_get::<i32>("", "traveler_count")?).unwrap_or(0),
            total: row.try_get::<Option<i64>>("", "total_fen")?.map(Fen),
            listing: listing
                .map(|l| from_json::<ListingSnapshot>(&l, "listing"))
                .transpose()?,
            expires_at: row.try_get("", "expires_at")?,
            reason: row.try_get("", "reason")?,
            created_at: row.try_get("", "created_at")?,
            updated_at: Some(row.try_get("", "updated_at")?),
            refund_due: row.try_get::<Option<i64>>("", "refund_due_fen")?.map(Fen),
            refunded: Fen(row.try_get("", "refunded_fen")?),
            history: Vec::new(),
            booker: shared::db::opt_row_uuid(row, "account_id")?.map(|account| Booker {
                account_id: AccountId(account),
                agency_id: shared::db::opt_row_uuid(row, "agency_id")
                    .ok()
                    .flatten()
                    .map(AgencyId),
            }),
            commission_bp: u32::try_from(row.try_get::<i32>("", "commission_bp")?).unwrap_or(0),
            sponsor_region: sponsor.and_then(|s| RegionCode::parse(&s).ok()),
        },
        fingerprint: row.try_get("", "fingerprint")?,
        home_region: shared::db::opt_row_region(row, "home_region")?,
        captured_early: row.try_get::<Option<i64>>("", "captured_fen")?.map(Fen),
        captured: row
            .try_get::<Option<String>>("", "captured_split")?
            .map(|r| from_json(&r, "captured_split"))
            .transpose()?,
        first_response: row
            .try_get::<Option<String>>("", "first_response")?
            .map(|r| from_json(&r, "first_response"))
            .transpose()?,
    })
}

/// The INSERT of a new PENDING booking's row unless its idempotency key
/// exists (no RETURNING), and its values ($1 to $18).
fn booking_row(
    b: DbBackend,
    (id, req, fingerprint): (BookingId, &CreateBooking, &str),
    first_response: &BookingView,
    now: DateTime<Utc>,
) -> (&'static str, Vec<Value>) {
    let insert = "INSERT INTO bookings (id, status, idempotency_key, fingerprint, item, travelers,
                traveler_count, contact, sponsor_region, notes, created_at, updated_at,
                account_id, agency_id, commission_bp, home_region, first_response, starts_on,
                departure_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13, $14, $15, $16, $17,
                     $18)
             ON CONFLICT (idempotency_key) DO NOTHING";
    // A stay starts at check-in (seats on the day the hold tells); seats
    // are on a departure.
    let (starts_on, departure) = match req.item {
        shared::events::HoldItem::RoomNights { check_in, .. } => (Some(check_in), None),
        shared::events::HoldItem::Seats { departure_id, .. } => (None, Some(departure_id.0)),
    };
    let values: Vec<Value> = vec![
        uuid_value(b, id.0),
        Status::Pending.as_str().into(),
        req.idempotency_key.trim().into(),
        fingerprint.into(),
        json(&req.item).into(),
        json(&req.travelers).into(),
        (req.travelers.len() as i32).into(),
        json(&req.contact).into(),
        sponsor_of(req).map(|r| r.to_string()).into(),
        req.notes.clone().into(),
        now.into(),
        uuid_value(b, req.by.account_id.0),
        shared::db::opt_uuid_value(b, req.by.agency_id.map(|a| a.0)),
        commission_bp(req).into(),
        req.by.home_region.map(|r| r.to_string()).into(),
        json(first_response).into(),
        starts_on.into(),
        shared::db::opt_uuid_value(b, departure),
    ];
    (insert, values)
}

/// Whether the idempotency key of a create is taken, waiting for a copy
/// still being made to commit or give up: the booking's row alone is tried
/// under the unique index in `txn`, which the caller rolls back (a read
/// does not see a copy not yet committed; PostgreSQL's use).
pub async fn key_taken(
    txn: &sea_orm::DatabaseTransaction,
    new: (BookingId, &CreateBooking, &str),
    first_response: &BookingView,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let b = txn.get_database_backend();
    let (insert, values) = booking_row(b, new, first_response, now);
    let tried = txn.execute_raw(stmt(b, insert, values)).await?;
    Ok(tried.rows_affected() == 0)
}

/// Inserts a new PENDING booking, with its first history entry, whose
/// answer to its request is `first_response`, unless its idempotency key
/// exists; returns it as stored (`RETURNING`), or None when the key exists.
/// On PostgreSQL `queued` goes into the outbox in the same statement, so a
/// create is one round trip and needs no transaction around it; elsewhere
/// the caller enqueues it in its transaction.
pub async fn insert<C: ConnectionTrait>(
    conn: &C,
    (id, req, fingerprint): (BookingId, &CreateBooking, &str),
    first_response: &BookingView,
    queued: &Envelope,
    now: DateTime<Utc>,
) -> Result<Option<Stored>, DbErr> {
    let b = conn.get_database_backend();
    let (insert, mut values) = booking_row(b, (id, req, fingerprint), first_response, now);
    let insert = &format!("{insert} RETURNING {BOOKING_COLUMNS}");
    let sql = logged(
        b,
        19,
        insert,
        "queued AS (INSERT INTO outbox (event_id, kind, body) SELECT $20, $21, $22 FROM moved)",
    );
    if b == DbBackend::Postgres {
        values.push(CREATED.into());
        values.extend(shared::outbox::row_values(b, queued));
    }
    let row = conn.query_one_raw(stmt(b, &sql, values)).await?;
    let Some(row) = row else { return Ok(None) };
    if b != DbBackend::Postgres {
        history(conn, id, Status::Pending, CREATED, now).await?;
        enqueue(conn, std::slice::from_ref(queued)).await?;
    }
    stored(&row).map(Some)
}

/// The agency's commission a booking keeps (none for a traveler's own).
fn commission_bp(req: &CreateBooking) -> i32 {
    if req.by.agency_id.is_some() {
        req.commission_bp as i32
    } else {
        0
    }
}

/// The booking `insert` stores for `req`, as a read of it would show it
/// the moment it is created (PENDING, its one history entry): the answer
/// to the create, and to every retry of it.
pub fn as_created(id: BookingId, req: &CreateBooking, now: DateTime<Utc>) -> BookingView {
    BookingView {
        id,
        status: Status::Pending.as_str().to_owned(),
        item: req.item.clone(),
        travelers: u32::try_from(req.travelers.len()).unwrap_or(0),
        total: None,
        listing: None,
        expires_at: None,
        reason: None,
        created_at: now,
        updated_at: Some(now),
        refund_due: None,
        refunded: Fen::ZERO,
        history: vec![HistoryEntry {
            status: Status::Pending.as_str().to_owned(),
            cause: CREATED.to_owned(),
            at: now,
        }],
        booker: Some(Booker {
            account_id: req.by.account_id,
            agency_id: req.by.agency_id,
        }),
        commission_bp: u32::try_from(commission_bp(req)).unwrap_or(0),
        sponsor_region: sponsor_of(req),
    }
}

/// The sponsor region a booking made by `req` counts for: the one declared,
/// else the booker's home region.
fn sponsor_of(req: &CreateBooking) -> Option<RegionCode> {
    req.sponsor_region.or(req.by.home_region)
}

/// The first history entry's cause.
pub const CREATED: &str = "created";

/// `sql` (a statement on `bookings` returning [`BOOKING_COLUMNS`]) with the history entry of
/// the row's new status, at its `updated_at`, the cause in parameter
/// `cause` — on PostgreSQL in the same statement (one round trip), with
/// `also`, another clause of the `WITH` over `moved`, if not empty; other
/// backends leave `sql` as it is and the caller does both.
fn logged(b: DbBackend, cause: usize, sql: &str, also: &str) -> String {
    let also = if also.is_empty() {
        String::new()
    } else {
        format!(", {also}")
    };
    match b {
        DbBackend::Postgres => format!(
            "WITH moved AS ({sql}),
                  logged AS (INSERT INTO booking_history (booking_id, status, cause, at)
                             SELECT id, status, ${cause}, updated_at FROM moved){also}
             SELECT {BOOKING_COLUMNS} FROM moved"
        ),
        _ => sql.to_owned(),
    }
}

/// The booking created with this idempotency key.
pub async fn by_key<C: ConnectionTrait>(conn: &C, key: &str) -> Result<Option<Stored>, DbErr> {
    let b = conn.get_database_backend();
    conn.query_one_raw(stmt(
        b,
        &format!("SELECT {BOOKING_COLUMNS} FROM bookings WHERE idempotency_key = $1"),
        vec![key.trim().into()],
    ))
    .await?
    .map(|r| stored(&r))
    .transpose()
}

/// One booking.
pub async fn by_id<C: ConnectionTrait>(conn: &C, id: BookingId) -> Result<Option<Stored>, DbErr> {
    let b = conn.get_database_backend();
    conn.query_one_raw(stmt(
        b,
        &format!("SELECT {BOOKING_COLUMNS} FROM bookings WHERE id = $1"),
        vec![uuid_value(b, id.0)],
    ))
    .await?
    .map(|r| stored(&r))
    .transpose()
}

/// The rows of several bookings, in one query.
async fn rows_by_ids<C: ConnectionTrait>(
    conn: &C,
    ids: &[BookingId],
) -> Result<Vec<QueryResult>, DbErr> {
    shared::db::rows_with_ids(
        conn,
        &format!("SELECT {BOOKING_COLUMNS} FROM bookings WHERE id IN ({{ids}})"),
        ids.iter().map(|id| id.0),
    )
    .await
}

/// Several bookings by id, in one query.
pub async fn by_ids<C: ConnectionTrait>(conn: &C, ids: &[BookingId]) -> Result<Vec<Stored>, DbErr> {
    rows_by_ids(conn, ids).await?.iter().map(stored).collect()
}

/// Which of these bookings were confirmed: CONFIRMED now, or confirmed
/// once and cancelled since. Inventory's hold sweeper commits the overdue
/// holds of these rather than put them back on sale: a booking confirmed
/// and then cancelled by its booker has its release queued behind its
/// confirmation, which gives the room back; had the sweeper released the
/// hold and the room gone to someone else, the late confirmation would be
/// refused and the booker refunded in full against the policy.
pub async fn confirmed_once<C: ConnectionTrait>(
    conn: &C,
    ids: &[BookingId],
) -> Result<Vec<BookingId>, DbErr> {
    shared::db::rows_with_ids(
        conn,
        "SELECT id FROM bookings b WHERE id IN ({ids}) AND (status = 'CONFIRMED' \
         OR EXISTS (SELECT 1 FROM booking_history h \
                    WHERE h.booking_id = b.id AND h.status = 'CONFIRMED'))",
        ids.iter().map(|id| id.0),
    )
    .await?
    .iter()
    .map(|r| shared::db::row_uuid(r, "id").map(BookingId))
    .collect()
}

/// A booking with who travels on it, as its create request gave them
/// (document numbers whole).
pub struct WithGuests {
    /// The booking.
    pub stored: Stored,
    /// Its travelers, in the request's order.
    pub travelers: Vec<TravelerInput>,
    /// Who to contact.
    pub contact: ContactInput,
    /// Notes for the host.
    pub notes: Option<String>,
}

/// Several bookings by id with their travelers and contact, in one query.
pub async fn with_guests<C: ConnectionTrait>(
    conn: &C,
    ids: &[BookingId],
) -> Result<Vec<WithGuests>, DbErr> {
    rows_by_ids(conn, ids)
        .await?
        .iter()
        .map(|row| {
            let travelers: String = row.try_get("", "travelers")?;
            let contact: String = row.try_get("", "contact")?;
            Ok(WithGuests {
                stored: stored(row)?,
                travelers: from_json(&travelers, "travelers")?,
                contact: from_json(&contact, "contact")?,
                notes: row.try_get("", "notes")?,
            })
        })
        .collect()
}

/// The histories of several bookings, each oldest first, in one query.
pub async fn histories_of<C: ConnectionTrait>(
    conn: &C,
    ids: &[BookingId],
) -> Result<Vec<(BookingId, Vec<shared::rpcs::HistoryEntry>)>, DbErr> {
    let mut out: Vec<(BookingId, Vec<shared::rpcs::HistoryEntry>)> =
        ids.iter().map(|id| (*id, Vec::new())).collect();
    if ids.is_empty() {
        return Ok(out);
    }
    let rows = shared::db::rows_with_ids(
        conn,
        "SELECT booking_id, status, cause, at FROM booking_history
         WHERE booking_id IN ({ids}) ORDER BY id",
        ids.iter().map(|id| id.0),
    )
    .await?;
    for r in &rows {
        let id = BookingId(shared::db::row_uuid(r, "booking_id")?);
        if let Some((_, steps)) = out.iter_mut().find(|(b, _)| *b == id) {
            steps.push(shared::rpcs::HistoryEntry {
                status: r.try_get("", "status")?,
                cause: r.try_get("", "cause")?,
                at: r.try_get("", "at")?,
            });
        }
    }
    Ok(out)
}

/// Extra columns a transition sets.
#[derive(Default)]
pub struct Changes {
    /// Price snapshot.
    pub total: Option<Fen>,
    /// Listing snapshot.
    pub listing: Option<ListingSnapshot>,
    /// Payment deadline.
    pub expires_at: Option<DateTime<Utc>>,
    /// Reason shown to the booker.
    pub reason: Option<String>,
    /// What is to be refunded (a cancellation after payment).
    pub refund_due: Option<Fen>,
    /// The `booking.refund_requested` that asks payment for `refund_due`.
    pub refund_request: Option<uuid::Uuid>,
    /// The capture's split (the capture that confirms it).
    pub captured: Option<Split>,
}

/// Moves a booking from one of `from` to `to`, with a history row and its
/// event (`booking.confirmed`, `.cancelled`, `.expired` or `.rejected` for
/// those states, `booking.status_changed` for the others), all in the
/// caller's transaction. Returns the booking as moved, or None (and changes
/// nothing) when it was in no state of `from`.
pub async fn transition<C: ConnectionTrait>(
    conn: &C,
    id: BookingId,
    from: &[Status],
    to: Status,
    changes: Changes,
    cause: &str,
) -> Result<Option<Stored>, DbErr> {
    let b = conn.get_database_backend();
    let now = Utc::now();
    let from_confirmed = from.contains(&Status::Confirmed);
    let mut values: Vec<Value> = vec![
        uuid_value(b, id.0),
        to.as_str().into(),
        now.into(),
        changes.total.map(Fen::get).into(),
        changes.listing.as_ref().map(json).into(),
        changes.expires_at.into(),
        changes.reason.into(),
        changes
            .listing
            .as_ref()
            .map(|l| l.region_code.to_string())
            .into(),
        changes.refund_due.map(Fen::get).into(),
        changes.captured.as_ref().map(json).into(),
        changes.listing.as_ref().and_then(|l| l.starts_on).into(),
        shared::db::opt_uuid_value(b, changes.refund_request),
    ];
    let first = values.len() + 1;
    let placeholders: Vec<String> = (0..from.len()).map(|i| format!("${}", first + i)).collect();
    values.extend(from.iter().map(|s| Value::from(s.as_str())));
    // A capture confirms only the total it paid (as the move leaves it).
    let paid_in_full = match &changes.captured {
        Some(split) => {
            values.push(split.gross.get().into());
            format!(" AND COALESCE($4, total_fen) = ${}", values.len())
        }
        None => String::new(),
    };
    if b == DbBackend::Postgres {
        values.push(cause.into());
    }
    let cause_at = values.len();
    // The move's time was read before its statement, which may wait on the
    // row's lock for a move committing meanwhile (a grant a cancellation
    // raced): it is never before that move's, so the history keeps the
    // order the moves took and `updatedAt` never goes back. (SQLite has
    // one writer at a time: nothing commits in between.)
    let stamp = match b {
        DbBackend::Postgres => "GREATEST($3, updated_at + INTERVAL '1 microsecond')",
        _ => "$3",
    };
    // One statement moves and reads back (RETURNING: PostgreSQL, SQLite ≥ 3.35).
    let sql = format!(
        "UPDATE bookings SET status = $2, updated_at = {stamp},
            total_fen = COALESCE($4, total_fen), listing = COALESCE($5, listing),
            expires_at = COALESCE($6, expires_at), reason = COALESCE($7, reason),
            listing_region = COALESCE($8, listing_region),
            refund_due_fen = COALESCE($9, refund_due_fen),
            captured_split = COALESCE($10, captured_split),
            starts_on = COALESCE($11, starts_on),
            refund_request = COALESCE($12, refund_request)
         WHERE id = $1 AND status IN ({}){paid_in_full}
         RETURNING {BOOKING_COLUMNS}",
        placeholders.join(", ")
    );
    let sql = logged(b, cause_at, &sql, "");
    let Some(row) = conn.query_one_raw(stmt(b, &sql, values)).await? else {
        return Ok(None);
    };
    let moved = stored(&row)?;
    let now = moved.view.updated_at.unwrap_or(now);
    if b != DbBackend::Postgres {
        history(conn, id, to, cause, now).await?;
    }
    // One event per move: the outcome's, which the gateway pushes too, or
    // the plain change.
    let mut event = match outcome_event(&moved, to, from_confirmed)? {
        Some(outcome) => outcome,
        None => Envelope::new(crate::SERVICE, id.0, &BookingStatusChanged::of(&moved.view)),
    };
    // The move's own time, as in its history row: partnership dates a
    // confirmation by it, and the invariant check by the history.
    event.occurred_at = now;
    enqueue(conn, &[event]).await?;
    Ok(Some(moved))
}

/// What a confirmation of `booking` tells (`captured`: the capture's
/// split), the booking's view with it; None without a listing or price
/// snapshot, which nothing can have confirmed.
pub fn confirmation(booking: &Stored, captured: Option<Split>) -> Option<BookingConfirmed> {
    let v = &booking.view;
    Some(BookingConfirmed {
        booking_id: v.id,
        travelers: v.travelers,
        sponsor_region: v.sponsor_region,
        listing: v.listing.clone()?,
        total: v.total?,
        booker_home_region: booking.home_region,
        agency_id: v.booker.and_then(|b| b.agency_id),
        commission_bp: v.commission_bp,
        captured,
        booking: Some(Box::new(v.clone())),
    })
}

/// The event that announces a booking reaching `to`, if `to` has one.
fn outcome_event(
    booking: &Stored,
    to: Status,
    was_confirmed: bool,
) -> Result<Option<Envelope>, DbErr> {
    let v = &booking.view;
    let facts = || BookingFacts {
        booking_id: v.id,
        reason: v.reason.clone(),
        listing: v.listing.clone(),
        listing_region: v.listing.as_ref().map(|l| l.region_code),
        booker_home_region: booking.home_region,
        sponsor_region: v.sponsor_region,
        travelers: v.travelers,
        total: v.total,
        refund_due: v.refund_due,
        account_id: v.booker.map(|b| b.account_id),
        agency_id: v.booker.and_then(|b| b.agency_id),
        booking: Some(Box::new(v.clone())),
    };
    let source = crate::SERVICE;
    Ok(match to {
        Status::Confirmed => {
            let Some(confirmed) = confirmation(booking, booking.captured) else {
                return Err(DbErr::Custom(format!(
                    "booking {} confirmed without a listing or price snapshot",
                    v.id
                )));
            };
            Some(Envelope::new(source, v.id.0, &confirmed))
        }
        Status::Cancelled => Some(Envelope::new(
            source,
            v.id.0,
            &BookingCancelled {
                facts: facts(),
                was_confirmed,
            },
        )),
        Status::Expired => Some(Envelope::new(
            source,
            v.id.0,
            &BookingExpired { facts: facts() },
        )),
        Status::Rejected => Some(Envelope::new(
            source,
            v.id.0,
            &BookingRejected { facts: facts() },
        )),
        Status::Pending | Status::AwaitingPayment => None,
    })
}

/// Records a capture that came while the booking was still PENDING: the
/// hold's answer will confirm it (or refund it). False when not PENDING.
pub async fn record_early_capture<C: ConnectionTrait>(
    conn: &C,
    id: BookingId,
    split: &Split,
) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    let r = conn
        .execute_raw(stmt(
            b,
            "UPDATE bookings SET captured_fen = $2, captured_split = $3
             WHERE id = $1 AND status = 'PENDING'",
            vec![
                uuid_value(b, id.0),
                split.gross.get().into(),
                json(split).into(),
            ],
        ))
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Appends to a booking's history.
pub async fn history<C: ConnectionTrait>(
    conn: &C,
    id: BookingId,
    status: Status,
    cause: &str,
    at: DateTime<Utc>,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "INSERT INTO booking_history (booking_id, status, cause, at) VALUES ($1, $2, $3, $4)",
        vec![
            uuid_value(b, id.0),
            status.as_str().into(),
            cause.into(),
            at.into(),
        ],
    ))
    .await?;
    Ok(())
}

/// Locks a booking's row until the transaction ends (PostgreSQL; SQLite
/// has one writer): for a step that reads before it writes. As an update
/// of it does (NO KEY UPDATE): rows that only refer to it (a cancellation's
/// key, a history row: KEY SHARE) do not wait, so a transaction that
/// inserted one and then locks cannot deadlock with another that did too.
pub async fn lock<C: ConnectionTrait>(conn: &C, id: BookingId) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    if b == DbBackend::Postgres {
        conn.query_one_raw(stmt(
            b,
            "SELECT id FROM bookings WHERE id = $1 FOR NO KEY UPDATE",
            vec![uuid_value(b, id.0)],
        ))
        .await?;
    }
    Ok(())
}

/// Whether a booking's history has a step with `cause`.
pub async fn has_cause<C: ConnectionTrait>(
    conn: &C,
    id: BookingId,
    cause: &str,
) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    Ok(conn
        .query_one_raw(stmt(
            b,
            "SELECT 1 AS one FROM booking_history WHERE booking_id = $1 AND cause = $2",
            vec![uuid_value(b, id.0), cause.into()],
        ))
        .await?
        .is_some())
}

/// Bookings awaiting payment past their deadline, locked for this sweeper
/// (others skip them).
pub async fn overdue<C: ConnectionTrait>(
    conn: &C,
    now: DateTime<Utc>,
    since: Option<DateTime<Utc>>,
    limit: u64,
    lock: bool,
) -> Result<Vec<(BookingId, DateTime<Utc>)>, DbErr> {
    let b = conn.get_database_backend();
    let lock = if lock && b == DbBackend::Postgres {
        " FOR UPDATE SKIP LOCKED"
    } else {
        ""
    };
    let sql = format!(
        "SELECT id, expires_at FROM bookings WHERE status = 'AWAITING_PAYMENT' AND expires_at < $1
         AND expires_at >= $3 ORDER BY expires_at LIMIT $2{lock}"
    );
    let since = since.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let rows = conn
        .query_all_raw(stmt(
            b,
            &sql,
            vec![now.into(), (limit as i64).into(), since.into()],
        ))
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                BookingId(shared::db::row_uuid(r, "id")?),
                r.try_get("", "expires_at")?,
            ))
        })
        .collect()
}

/// Stores the answer given to a cancel request, to replay for its key.
pub async fn set_cancel_response<C: ConnectionTrait>(
    conn: &C,
    key: &str,
    view: &BookingView,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "UPDATE cancellations SET response = $2 WHERE idempotency_key = $1",
        vec![key.into(), json(view).into()],
    ))
    .await?;
    Ok(())
}

/// A cancel request as its key first recorded it.
pub struct CancelKey {
    /// The booking it cancels.
    pub booking: BookingId,
    /// Its `forHost` reason, if it was for the host.
    pub for_host: Option<String>,
    /// The answer given to it, once given.
    pub answer: Option<BookingView>,
}

/// Records a cancel request's key (for `booking`, with `for_host`);
/// returns the request the key belongs to: this one if new, the first
/// one if the key was used before.
pub async fn claim_cancel_key<C: ConnectionTrait>(
    conn: &C,
    key: &str,
    booking: BookingId,
    for_host: Option<&str>,
) -> Result<CancelKey, DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "INSERT INTO cancellations (idempotency_key, booking_id, at, for_host)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (idempotency_key) DO NOTHING",
        vec![
            key.into(),
            uuid_value(b, booking.0),
            Utc::now().into(),
            for_host.map(str::to_owned).into(),
        ],
    ))
    .await?;
    let row = conn
        .query_one_raw(stmt(
            b,
            "SELECT booking_id, for_host, response FROM cancellations
             WHERE idempotency_key = $1",
            vec![key.into()],
        ))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("cancellation key".into()))?;
    Ok(CancelKey {
        booking: BookingId(shared::db::row_uuid(&row, "booking_id")?),
        for_host: row.try_get("", "for_host")?,
        answer: row
            .try_get::<Option<String>>("", "response")?
            .map(|r| from_json(&r, "cancellations.response"))
            .transpose()?,
    })
}

/// A PENDING booking whose hold request went unanswered.
pub struct Unanswered {
    /// The booking.
    pub id: BookingId,
    /// What it asks to hold.
    pub item: shared::events::HoldItem,
    /// Requests sent so far.
    pub attempts: i32,
    /// Travelers it is for.
    pub travelers: u32,
}

/// PENDING bookings not touched since `before`, locked for this sweeper.
pub async fn unanswered<C: ConnectionTrait>(
    conn: &C,
    before: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<Unanswered>, DbErr> {
    let b = conn.get_database_backend();
    let lock = if b == DbBackend::Postgres {
        " FOR UPDATE SKIP LOCKED"
    } else {
        ""
    };
    let sql = format!(
        "SELECT id, item, hold_attempts, traveler_count FROM bookings WHERE status = 'PENDING' AND updated_at < $1 ORDER BY updated_at LIMIT $2{lock}"
    );
    let rows = conn
        .query_all_raw(stmt(b, &sql, vec![before.into(), (limit as i64).into()]))
        .await?;
    rows.iter()
        .map(|r| {
            let item: String = r.try_get("", "item")?;
            Ok(Unanswered {
                id: BookingId(shared::db::row_uuid(r, "id")?),
                item: from_json(&item, "item")?,
                attempts: r.try_get("", "hold_attempts")?,
                travelers: u32::try_from(r.try_get::<i32>("", "traveler_count")?).unwrap_or(0),
            })
        })
        .collect()
}

/// Counts another hold request for a PENDING booking.
pub async fn count_attempt<C: ConnectionTrait>(
    conn: &C,
    id: BookingId,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "UPDATE bookings SET hold_attempts = hold_attempts + 1, updated_at = $2 WHERE id = $1 AND status = 'PENDING'",
        vec![uuid_value(b, id.0), now.into()],
    ))
    .await?;
    Ok(())
}

/// Records the refund a booking promised and the `booking.refund_requested`
/// event (`request`) that asks payment for it (none when nothing is due).
pub async fn set_refund_due<C: ConnectionTrait>(
    conn: &C,
    id: BookingId,
    amount: Fen,
    request: Option<uuid::Uuid>,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "UPDATE bookings SET refund_due_fen = $2, refund_request = $3, refund_whole = FALSE,
            updated_at = $4
         WHERE id = $1",
        vec![
            uuid_value(b, id.0),
            amount.get().into(),
            shared::db::opt_uuid_value(b, request),
            Utc::now().into(),
        ],
    ))
    .await?;
    Ok(())
}

/// Rewrites a booking's reason (the refund it names changed since).
pub async fn set_reason<C: ConnectionTrait>(
    conn: &C,
    id: BookingId,
    reason: &str,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "UPDATE bookings SET reason = $2 WHERE id = $1",
        vec![uuid_value(b, id.0), reason.into()],
    ))
    .await?;
    Ok(())
}

/// Payment answered the refund `request`: the promise becomes what it gave
/// back (the policy's share of what was left when it refunded, or nothing
/// when refunds made meanwhile took it all), unless it is the whole total
/// whatever the answer ([`refund_whole`]: the rest of a stay lost after
/// its booker cancelled is part of it). Whether the booking was waiting
/// for that answer (a later request replaces an earlier one).
pub async fn refund_answered<C: ConnectionTrait>(
    conn: &C,
    id: BookingId,
    request: uuid::Uuid,
    given: Fen,
) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    let r = conn
        .execute_raw(stmt(
            b,
            "UPDATE bookings SET refund_due_fen = CASE WHEN refund_whole THEN refund_due_fen
                                                      ELSE $3 END,
               refund_request = NULL, updated_at = $4
             WHERE id = $1 AND refund_request = $2",
            vec![
                uuid_value(b, id.0),
                uuid_value(b, request),
                given.get().into(),
                Utc::now().into(),
            ],
        ))
        .await?;
    Ok(r.rows_affected() > 0)
}

/// The refunds asked of payment and not yet answered (see
/// [`shared::rpcs::GetRefundsAsked`]; before 2026-12-05 an answer left
/// its request in place, so older ones are listed too, and payment passes
/// over those it has).
pub async fn refunds_asked<C: ConnectionTrait>(
    conn: &C,
) -> Result<Vec<shared::rpcs::RefundAsked>, DbErr> {
    let b = conn.get_database_backend();
    let rows = conn
        .query_all_raw(stmt(
            b,
            "SELECT id, refund_request, refund_due_fen FROM bookings
             WHERE refund_request IS NOT NULL AND refund_due_fen > 0",
            vec![],
        ))
        .await?;
    rows.iter()
        .map(|row| {
            Ok(shared::rpcs::RefundAsked {
                booking_id: BookingId(shared::db::row_uuid(row, "id")?),
                request: shared::db::row_uuid(row, "refund_request")?,
                amount: Fen(row.try_get("", "refund_due_fen")?),
            })
        })
        .collect()
}

/// Marks a booking's promised refund as its whole total whatever payment
/// answers (a confirmed stay inventory could not keep: all of it goes
/// back, whatever the booker had been promised before).
pub async fn refund_whole<C: ConnectionTrait>(conn: &C, id: BookingId) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "UPDATE bookings SET refund_whole = TRUE WHERE id = $1",
        vec![uuid_value(b, id.0)],
    ))
    .await?;
    Ok(())
}

/// Forgets a capture heard before the hold's answer (refunded in full:
/// it was of another amount than the total).
pub async fn forget_early_capture<C: ConnectionTrait>(
    conn: &C,
    id: BookingId,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "UPDATE bookings SET captured_fen = NULL, captured_split = NULL WHERE id = $1",
        vec![uuid_value(b, id.0)],
    ))
    .await?;
    Ok(())
}

/// Adds a refund that went through.
pub async fn add_refunded<C: ConnectionTrait>(
    conn: &C,
    id: BookingId,
    amount: Fen,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "UPDATE bookings SET refunded_fen = refunded_fen + $2, updated_at = $3 WHERE id = $1",
        vec![uuid_value(b, id.0), amount.get().into(), Utc::now().into()],
    ))
    .await?;
    Ok(())
}

/// A booking's history, oldest first.
pub async fn history_of<C: ConnectionTrait>(
    conn: &C,
    id: BookingId,
) -> Result<Vec<shared::rpcs::HistoryEntry>, DbErr> {
    let b = conn.get_database_backend();
    conn.query_all_raw(stmt(
        b,
        "SELECT status, cause, at FROM booking_history WHERE booking_id = $1 ORDER BY id",
        vec![uuid_value(b, id.0)],
    ))
    .await?
    .iter()
    .map(|r| {
        Ok(shared::rpcs::HistoryEntry {
            status: r.try_get("", "status")?,
            cause: r.try_get("", "cause")?,
            at: r.try_get("", "at")?,
        })
    })
    .collect()
}

/// Which bookings of a viewer's a page holds: their statuses (any when
/// empty), changed after an instant.
#[derive(Debug, Default)]
pub struct ListFilter<'a> {
    /// Only these statuses (all when empty).
    pub statuses: &'a [String],
    /// Only bookings changed after this.
    pub updated_since: Option<DateTime<Utc>>,
    /// Only bookings starting on these days (both included).
    pub starts: (Option<chrono::NaiveDate>, Option<chrono::NaiveDate>),
    /// Only bookings of seats on this departure.
    pub departure: Option<shared::ids::DepartureId>,
    /// A region admin's own bookings too (its `myBookings`).
    pub with_own: bool,
}

/// The SQL condition and its values for the bookings `viewer` may list
/// that pass `only`, its placeholders numbered from `$first`: a traveler's
/// own, an agency's, those held in an admin's region, all for platform
/// admins.
fn listed(
    b: sea_orm::DbBackend,
    viewer: &Principal,
    only: &ListFilter<'_>,
    first: usize,
) -> (String, Vec<Value>) {
    let mut values: Vec<Value> = Vec::new();
    let mut sql = match (viewer.role, viewer.agency_id, viewer.region_scope) {
        (Role::PlatformAdmin, _, _) => "TRUE".to_owned(),
        // The agency's bookings, and its person's own (Principal::booked).
        (Role::Agency, Some(agency), _) => {
            values.push(uuid_value(b, agency.0));
            values.push(uuid_value(b, viewer.account_id.0));
            format!(
                "(agency_id = ${first} OR (account_id = ${} AND agency_id IS NULL))",
                first + 1
            )
        }
        (Role::Agency, None, _) => "FALSE".to_owned(),
        // A region admin: bookings held on listings inside its region (a
        // REJECTED one names its listing but held nothing: its booker's
        // alone, as `BookingView::visible_to` says).
        (Role::RegionAdmin, _, Some(region)) if only.with_own => {
            values.push(format!("{}%", region.code_prefix()).into());
            values.push(uuid_value(b, viewer.account_id.0));
            format!(
                "((listing_region LIKE ${first} AND status <> 'REJECTED')
                  OR (account_id = ${} AND agency_id IS NULL))",
                first + 1
            )
        }
        (Role::RegionAdmin, _, Some(region)) => {
            values.push(format!("{}%", region.code_prefix()).into());
            format!("(listing_region LIKE ${first} AND status <> 'REJECTED')")
        }
        (Role::RegionAdmin, _, None) => "FALSE".to_owned(),
        // A person's own: not what they booked for an agency they worked for.
        _ => {
            values.push(uuid_value(b, viewer.account_id.0));
            format!("account_id = ${first} AND agency_id IS NULL")
        }
    };
    if !only.statuses.is_empty() {
        let list = placeholders(first + values.len(), only.statuses.len());
        sql.push_str(&format!(" AND status IN ({list})"));
        values.extend(only.statuses.iter().map(|s| Value::from(s.as_str())));
    }
    // Each filter given: `AND <column> <op> $n`, its value the n-th.
    let mut and = |test: &str, value: Option<Value>| {
        if let Some(value) = value {
            values.push(value);
            sql.push_str(&format!(" AND {test} ${}", first + values.len() - 1));
        }
    };
    and("updated_at >", only.updated_since.map(Value::from));
    and("departure_id =", only.departure.map(|d| uuid_value(b, d.0)));
    // On the day as `bookings_by_day` holds it (a booking without one is
    // in neither range): a week's arrivals are a range of that index, read
    // in the order by day too.
    let from = format!("starts_on IS NOT NULL AND {BY_DAY} >=");
    let to = format!("starts_on IS NOT NULL AND {BY_DAY} <=");
    and(&from, only.starts.0.map(Value::from));
    and(&to, only.starts.1.map(Value::from));
    (sql, values)
}

/// A booking's day in the list by day (`bookings_by_day`): one without a
/// day yet (seats not held) after every day.
const BY_DAY: &str = "COALESCE(starts_on, '9999-12-31')";

/// A page of the bookings a traveler (by account) or an agency made, in
/// `order`, after the booking `after` (the last of the page before), and
/// whether more follow. Platform admins page through all.
pub async fn list<C: ConnectionTrait>(
    conn: &C,
    viewer: &Principal,
    (first, after, order): (u32, Option<BookingId>, shared::rpcs::BookingOrder),
    only: ListFilter<'_>,
) -> Result<(Vec<BookingView>, bool), DbErr> {
    let b = conn.get_database_backend();
    let (condition, mut more) = listed(b, viewer, &only, 3);
    let mut values = vec![(i64::from(first) + 1).into()];
    let sql = match order {
        shared::rpcs::BookingOrder::NewestFirst => {
            values.push(
                after
                    .map(|a| uuid_value(b, a.0))
                    .unwrap_or_else(|| uuid_value(b, uuid::Uuid::max())),
            );
            format!(
                "SELECT {BOOKING_COLUMNS} FROM bookings WHERE {condition} AND id < $2 ORDER BY id DESC LIMIT $1"
            )
        }
        // By day, then id; a booking without a day yet (seats not held) after
        // every day. The page after a booking starts past its (day, id), as
        // it reads now — a booking the viewer may list (whatever the filter
        // says of it now), or none: another's booking tells nothing of
        // itself by where the page would start.
        shared::rpcs::BookingOrder::StartsOn => {
            values.push(shared::db::opt_uuid_value(b, after.map(|a| a.0)));
            let day = BY_DAY;
            let (theirs, seen) = listed(b, viewer, &on_the_list(&only), 3 + more.len());
            more.extend(seen);
            format!(
                "SELECT {BOOKING_COLUMNS} FROM bookings WHERE {condition}
                   AND ($2 IS NULL OR ({day}, id) >
                        (SELECT {day}, id FROM bookings WHERE id = $2 AND {theirs}))
                 ORDER BY {day}, id LIMIT $1"
            )
        }
    };
    values.extend(more);
    let rows = conn.query_all_raw(stmt(b, &sql, values)).await?;
    shared::db::page(&rows, first, |r| stored(r).map(|s| s.view))
}

/// The bookings `viewer` may list, whatever `only` filters out of them
/// (a region admin's own trips too, in its `myBookings`).
fn on_the_list<'a>(only: &ListFilter<'a>) -> ListFilter<'a> {
    ListFilter {
        with_own: only.with_own,
        ..ListFilter::default()
    }
}

/// Whether `after` is a booking on `viewer`'s list (as [`list`] reads it
/// for a cursor): a cursor that names none is refused, not an empty page.
pub async fn on_list<C: ConnectionTrait>(
    conn: &C,
    viewer: &Principal,
    only: &ListFilter<'_>,
    after: BookingId,
) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    let (theirs, mut values) = listed(b, viewer, &on_the_list(only), 2);
    values.insert(0, uuid_value(b, after.0));
    let sql = format!("SELECT 1 AS one FROM bookings WHERE id = $1 AND {theirs}");
    Ok(conn.query_one_raw(stmt(b, &sql, values)).await?.is_some())
}

/// How many bookings [`list`] pages through for `viewer` and `only`.
pub async fn count<C: ConnectionTrait>(
    conn: &C,
    viewer: &Principal,
    only: ListFilter<'_>,
) -> Result<u64, DbErr> {
    let (condition, values) = listed(conn.get_database_backend(), viewer, &only, 1);
    shared::db::count(conn, &format!("bookings WHERE {condition}"), values).await
}

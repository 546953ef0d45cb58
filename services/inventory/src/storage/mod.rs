//! Inventory's tables and queries.
//!
//! Capacity lives in `room_nights.available`, guarded by
//! `CHECK (available >= 0)`. A hold takes every night in one conditional
//! `UPDATE … WHERE available >= n` and succeeds only if it touched every night
//! of the stay: all or nothing, never read-then-write.

pub mod certification;
pub mod routes;

use crate::domain::StayDates;
use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{ConnectionTrait, DbErr, QueryResult};
use sea_orm_migration::{MigrationName, MigrationTrait, MigratorTrait, SchemaManager};
use shared::db::{opt_uuid_value, row_uuid, run_ddl, uuid_value};
use shared::envelope::Envelope;
use shared::events::ListingSnapshot;
use shared::ids::{BookingId, DepartureId, HomestayId, HostId, RoomTypeId};
use shared::money::Fen;
use shared::outbox::stmt;
use shared::policy::CancellationPolicy;
use shared::region::{Region, RegionCode, reference_regions};
use shared::rpcs::{HomestayDetails, HomestayView, Night, RoomTypeView};

/// Inventory's migrations.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(shared::runtime::KernelMigration),
            Box::new(Catalogue),
            Box::new(HoldReplies),
            Box::new(Policies),
            Box::new(routes::Routes),
            Box::new(certification::Certifications),
            Box::new(HomestayDetailsMigration),
            Box::new(RoomCountsAndExpiry),
            Box::new(certification::Evidence),
            Box::new(EnglishNames),
            Box::new(HomestayPublication),
            Box::new(ListingsByHost),
            Box::new(routes::DepartureCancellation),
            Box::new(routes::DepartureDays),
            Box::new(routes::CancelledDepartures),
            Box::new(shared::runtime::KernelInboxByAge),
            Box::new(certification::AcceptedOn),
            Box::new(CreateKeys),
            Box::new(routes::SearchText),
        ]
    }
}

/// The keys clients send with the creates that have none of their own
/// ([`shared::keyed`]).
struct CreateKeys;

impl MigrationName for CreateKeys {
    fn name(&self) -> &str {
        "m20261207_000002_create_keys"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateKeys {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(manager, &[shared::keyed::DDL]).await
    }
}

struct Catalogue;

impl MigrationName for Catalogue {
    fn name(&self) -> &str {
        "m20261123_000001_catalogue"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Catalogue {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(
            manager,
            &[
                "CREATE TABLE regions (
                    code TEXT PRIMARY KEY,
                    name_zh TEXT NOT NULL,
                    name_en TEXT NOT NULL,
                    parent_code TEXT,
                    poverty_county BOOLEAN NOT NULL,
                    lifted_year INTEGER)",
                "CREATE TABLE hosts (
                    id UUID PRIMARY KEY,
                    name TEXT NOT NULL,
                    region_code TEXT NOT NULL REFERENCES regions (code),
                    created_at TIMESTAMPTZ NOT NULL DEFAULT now())",
                "CREATE TABLE homestays (
                    id UUID PRIMARY KEY,
                    host_id UUID NOT NULL REFERENCES hosts (id),
                    region_code TEXT NOT NULL REFERENCES regions (code),
                    name TEXT NOT NULL,
                    certified BOOLEAN NOT NULL DEFAULT FALSE,
                    created_at TIMESTAMPTZ NOT NULL DEFAULT now())",
                "CREATE TABLE room_types (
                    id UUID PRIMARY KEY,
                    homestay_id UUID NOT NULL REFERENCES homestays (id),
                    name TEXT NOT NULL,
                    beds INTEGER NOT NULL CHECK (beds > 0),
                    max_guests INTEGER NOT NULL CHECK (max_guests > 0))",
                "CREATE TABLE room_nights (
                    room_type_id UUID NOT NULL REFERENCES room_types (id),
                    night DATE NOT NULL,
                    rooms INTEGER NOT NULL CHECK (rooms >= 0),
                    available INTEGER NOT NULL CHECK (available >= 0 AND available <= rooms),
                    price_fen BIGINT NOT NULL CHECK (price_fen >= 0),
                    PRIMARY KEY (room_type_id, night))",
                "CREATE TABLE holds (
                    booking_id UUID PRIMARY KEY,
                    room_type_id UUID,
                    check_in DATE,
                    check_out DATE,
                    rooms INTEGER NOT NULL DEFAULT 0,
                    state TEXT NOT NULL,
                    expires_at TIMESTAMPTZ,
                    created_at TIMESTAMPTZ NOT NULL DEFAULT now())",
            ],
        )
        .await?;
        seed_regions(manager.get_connection()).await
    }
}

struct HoldReplies;

impl MigrationName for HoldReplies {
    fn name(&self) -> &str {
        "m20261123_000002_hold_replies"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for HoldReplies {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(
            manager,
            &[
                "ALTER TABLE holds ADD COLUMN reply_kind TEXT",
                "ALTER TABLE holds ADD COLUMN reply_payload TEXT",
            ],
        )
        .await
    }
}

struct HomestayDetailsMigration;

impl MigrationName for HomestayDetailsMigration {
    fn name(&self) -> &str {
        "m20261125_000003_homestay_details"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for HomestayDetailsMigration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(
            manager,
            &[
                "ALTER TABLE homestays ADD COLUMN details TEXT NOT NULL DEFAULT '{}'",
                "ALTER TABLE room_nights ADD COLUMN closed BOOLEAN NOT NULL DEFAULT FALSE",
                "ALTER TABLE room_nights ADD COLUMN min_stay INTEGER NOT NULL DEFAULT 1 CHECK (min_stay >= 1)",
            ],
        )
        .await
    }
}

struct EnglishNames;

impl MigrationName for EnglishNames {
    fn name(&self) -> &str {
        "m20261203_000001_english_names"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for EnglishNames {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Names in English beside the Chinese ones ('' : none given).
        run_ddl(
            manager,
            &[
                "ALTER TABLE homestays ADD COLUMN name_en TEXT NOT NULL DEFAULT ''",
                "ALTER TABLE room_types ADD COLUMN name_en TEXT NOT NULL DEFAULT ''",
            ],
        )
        .await
    }
}

struct HomestayPublication;

impl MigrationName for HomestayPublication {
    fn name(&self) -> &str {
        "m20261204_000001_homestay_publication"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for HomestayPublication {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Homestays were on sale from their creation; they stay so.
        run_ddl(
            manager,
            &["ALTER TABLE homestays ADD COLUMN published BOOLEAN NOT NULL DEFAULT TRUE"],
        )
        .await
    }
}

struct ListingsByHost;

impl MigrationName for ListingsByHost {
    fn name(&self) -> &str {
        "m20261204_000002_listings_by_host"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for ListingsByHost {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(
            manager,
            &[
                // A host's listings counted (`hosts`) and filtered
                // (`regionListings(hostId:)`) without a scan of them all.
                "CREATE INDEX homestays_by_host ON homestays (host_id)",
                "CREATE INDEX routes_by_host ON routes (host_id)",
                // `hosts` pages in this order.
                "CREATE INDEX hosts_by_region ON hosts (region_code, name, id)",
            ],
        )
        .await
    }
}

/// Puts a homestay on sale or takes it off.
pub async fn set_homestay_published<C: ConnectionTrait>(
    conn: &C,
    id: uuid::Uuid,
    published: bool,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "UPDATE homestays SET published = $2 WHERE id = $1",
        vec![uuid_value(b, id), published.into()],
    ))
    .await?;
    Ok(())
}

struct RoomCountsAndExpiry;

impl MigrationName for RoomCountsAndExpiry {
    fn name(&self) -> &str {
        "m20261202_000001_room_counts_and_hold_expiry"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for RoomCountsAndExpiry {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(
            manager,
            &[
                "ALTER TABLE room_types ADD COLUMN rooms INTEGER NOT NULL DEFAULT 1 CHECK (rooms >= 1)",
                // The hold sweeper's scan: live holds by deadline.
                "CREATE INDEX holds_live_by_expiry ON holds (expires_at) WHERE state = 'HELD'",
            ],
        )
        .await?;
        // Room types made before the count existed have as many rooms as
        // their calendar ever put on sale (not DDL: run as it is).
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE room_types SET rooms = (
                     SELECT CASE WHEN MAX(n.rooms) >= 1 THEN MAX(n.rooms) ELSE 1 END
                     FROM room_nights n WHERE n.room_type_id = room_types.id)
                 WHERE EXISTS (SELECT 1 FROM room_nights n WHERE n.room_type_id = room_types.id)",
            )
            .await?;
        Ok(())
    }
}

struct Policies;

impl MigrationName for Policies {
    fn name(&self) -> &str {
        "m20261124_000001_cancellation_policies"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Policies {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // NULL: the platform's standard policy.
        run_ddl(
            manager,
            &["ALTER TABLE homestays ADD COLUMN cancellation_policy TEXT"],
        )
        .await
    }
}

async fn seed_regions<C: ConnectionTrait>(conn: &C) -> Result<(), DbErr> {
    refresh_regions(conn).await
}

/// Writes the reference regions as the code has them, in one statement:
/// rows added, names, parents and lift years corrected. Run at every start
/// (the table is the code's, and a database seeded by an earlier release
/// would keep its old rows), by any number of replicas at once.
pub async fn refresh_regions<C: ConnectionTrait>(conn: &C) -> Result<(), DbErr> {
    let backend = conn.get_database_backend();
    let regions = reference_regions();
    let mut values = Vec::with_capacity(regions.len() * 6);
    let rows: Vec<String> = regions
        .iter()
        .enumerate()
        .map(|(i, r)| {
            values.extend([
                r.code.to_string().into(),
                r.name_zh.clone().into(),
                r.name_en.clone().into(),
                r.parent.map(|p| p.to_string()).into(),
                r.poverty_county.into(),
                r.lifted_year.into(),
            ]);
            format!("({})", shared::db::placeholders(i * 6 + 1, 6))
        })
        .collect();
    conn.execute_raw(stmt(
        backend,
        &format!(
            "INSERT INTO regions (code, name_zh, name_en, parent_code, poverty_county, lifted_year)
             VALUES {}
             ON CONFLICT (code) DO UPDATE SET name_zh = excluded.name_zh,
               name_en = excluded.name_en, parent_code = excluded.parent_code,
               poverty_county = excluded.poverty_county, lifted_year = excluded.lifted_year",
            rows.join(", ")
        ),
        values,
    ))
    .await?;
    Ok(())
}

fn region_from_row(row: &sea_orm::QueryResult) -> Result<Region, DbErr> {
    let code: String = row.try_get("", "code")?;
    let parent: Option<String> = row.try_get("", "parent_code")?;
    let bad = |e: shared::region::BadRegionCode| DbErr::Custom(e.to_string());
    Ok(Region {
        code: RegionCode::parse(&code).map_err(bad)?,
        name_zh: row.try_get("", "name_zh")?,
        name_en: row.try_get("", "name_en")?,
        parent: parent
            .map(|p| RegionCode::parse(&p))
            .transpose()
            .map_err(bad)?,
        poverty_county: row.try_get("", "poverty_county")?,
        lifted_year: row.try_get("", "lifted_year")?,
    })
}

/// Children of `parent` (provinces when `None`), sorted by code; with
/// `poverty_only`, the (former) national poverty counties anywhere inside
/// `parent` (anywhere at all when `None`): under a province they are its
/// prefectures' children, never its own.
pub async fn regions<C: ConnectionTrait>(
    conn: &C,
    parent: Option<RegionCode>,
    poverty_only: bool,
) -> Result<Vec<Region>, DbErr> {
    let backend = conn.get_database_backend();
    let (condition, values): (&str, Vec<sea_orm::Value>) = match (parent, poverty_only) {
        (Some(p), false) => ("parent_code = $1", vec![p.to_string().into()]),
        (None, false) => ("parent_code IS NULL", vec![]),
        (Some(p), true) => (
            "poverty_county AND code LIKE $1 AND code <> $2",
            vec![format!("{}%", p.code_prefix()).into(), p.to_string().into()],
        ),
        (None, true) => ("poverty_county", vec![]),
    };
    // Named columns (`shared::db` says why).
    let sql = format!(
        "SELECT code, parent_code, name_zh, name_en, poverty_county, lifted_year FROM regions
         WHERE {condition} ORDER BY code"
    );
    let rows = conn.query_all_raw(stmt(backend, &sql, values)).await?;
    rows.iter().map(region_from_row).collect()
}

/// True when the region is in the table.
pub async fn region_exists<C: ConnectionTrait>(conn: &C, code: RegionCode) -> Result<bool, DbErr> {
    let backend = conn.get_database_backend();
    Ok(conn
        .query_one_raw(stmt(
            backend,
            "SELECT code FROM regions WHERE code = $1",
            vec![code.to_string().into()],
        ))
        .await?
        .is_some())
}

/// Inserts a host, its homestay and one room type.
pub async fn insert_homestay<C: ConnectionTrait>(
    conn: &C,
    host: (HostId, Option<&str>),
    homestay: (HomestayId, (&str, &str), &HomestayDetails),
    region: RegionCode,
    room_type: &RoomTypeView,
    policy: Option<&CancellationPolicy>,
    published: bool,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    if let Some(name) = host.1 {
        insert_host(conn, host.0, name, region).await?;
    }
    conn.execute_raw(stmt(
        b,
        "INSERT INTO homestays (id, host_id, region_code, name, cancellation_policy, details, name_en,
                                published)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        vec![
            uuid_value(b, homestay.0.0),
            uuid_value(b, host.0.0),
            region.to_string().into(),
            homestay.1.0.into(),
            policy_column(policy)?,
            serde_json::to_string(homestay.2)
                .map_err(|e| DbErr::Custom(e.to_string()))?
                .into(),
            homestay.1.1.into(),
            published.into(),
        ],
    ))
    .await?;
    insert_room_type(conn, homestay.0, room_type).await
}

/// Inserts a host.
pub async fn insert_host<C: ConnectionTrait>(
    conn: &C,
    id: HostId,
    name: &str,
    region: RegionCode,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "INSERT INTO hosts (id, name, region_code) VALUES ($1, $2, $3)",
        vec![uuid_value(b, id.0), name.into(), region.to_string().into()],
    ))
    .await?;
    Ok(())
}

/// A host with how many listings it has; `o` is the host.
const HOST: &str = "SELECT o.id, o.name, o.region_code,
        CAST((SELECT COUNT(*) FROM homestays h WHERE h.host_id = o.id)
           + (SELECT COUNT(*) FROM routes r WHERE r.host_id = o.id) AS BIGINT) AS listings
     FROM hosts o";

fn host_view(r: &sea_orm::QueryResult) -> Result<shared::rpcs::HostView, DbErr> {
    Ok(shared::rpcs::HostView {
        id: HostId(row_uuid(r, "id")?),
        name: r.try_get("", "name")?,
        region_code: shared::db::row_region(r, "region_code")?,
        listings: u32::try_from(r.try_get::<i64>("", "listings")?).unwrap_or(0),
    })
}

/// Hosts whose region code starts with `prefix` ('' for all; `id` for one),
/// with how many listings each has.
pub async fn hosts<C: ConnectionTrait>(
    conn: &C,
    prefix: &str,
    id: Option<HostId>,
) -> Result<Vec<shared::rpcs::HostView>, DbErr> {
    let b = conn.get_database_backend();
    let rows = conn
        .query_all_raw(stmt(
            b,
            &format!(
                "{HOST} WHERE o.region_code LIKE $1 AND ($2 IS NULL OR o.id = $2)
                 ORDER BY o.region_code, o.name, o.id"
            ),
            vec![
                format!("{prefix}%").into(),
                opt_uuid_value(b, id.map(|h| h.0)),
            ],
        ))
        .await?;
    rows.iter().map(host_view).collect()
}

/// The hosts among `ids` that exist, in one query.
pub async fn hosts_by_ids<C: ConnectionTrait>(
    conn: &C,
    ids: &[HostId],
) -> Result<Vec<shared::rpcs::HostView>, DbErr> {
    let rows = shared::db::rows_with_ids(
        conn,
        &format!("{HOST} WHERE o.id IN ({{ids}})"),
        ids.iter().map(|id| id.0),
    )
    .await?;
    rows.iter().map(host_view).collect()
}

/// Up to `first` hosts whose region code starts with `prefix`, by region
/// code, name and id, from the one after `after`; and whether more follow.
pub async fn host_page<C: ConnectionTrait>(
    conn: &C,
    prefix: &str,
    first: u32,
    after: Option<HostId>,
) -> Result<(Vec<shared::rpcs::HostView>, bool), DbErr> {
    let b = conn.get_database_backend();
    let rows = conn
        .query_all_raw(stmt(
            b,
            &format!(
                "{HOST} WHERE o.region_code LIKE $1
                   AND ($2 IS NULL OR (o.region_code, o.name, o.id) >
                        (SELECT a.region_code, a.name, a.id FROM hosts a
                         WHERE a.id = $2 AND a.region_code LIKE $1))
                 ORDER BY o.region_code, o.name, o.id LIMIT $3"
            ),
            vec![
                format!("{prefix}%").into(),
                opt_uuid_value(b, after.map(|h| h.0)),
                (i64::from(first) + 1).into(),
            ],
        ))
        .await?;
    shared::db::page(&rows, first, host_view)
}

/// How many hosts have a region code starting with `prefix`.
pub async fn host_count<C: ConnectionTrait>(conn: &C, prefix: &str) -> Result<u64, DbErr> {
    shared::db::count(
        conn,
        "hosts WHERE region_code LIKE $1",
        vec![format!("{prefix}%").into()],
    )
    .await
}

/// Adds a room type to a homestay.
pub async fn insert_room_type<C: ConnectionTrait>(
    conn: &C,
    homestay: HomestayId,
    room_type: &RoomTypeView,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "INSERT INTO room_types (id, homestay_id, name, beds, max_guests, rooms, name_en)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        vec![
            uuid_value(b, room_type.id.0),
            uuid_value(b, homestay.0),
            room_type.name.clone().into(),
            room_type.beds.into(),
            room_type.max_guests.into(),
            room_type.rooms.into(),
            room_type.name_en.clone().into(),
        ],
    ))
    .await?;
    Ok(())
}

/// How many rooms of a room type the homestay has; None: no such room type.
/// On PostgreSQL the row is share-locked until the transaction ends: a
/// calendar set against this count and a change of it go one after the
/// other.
pub async fn room_count<C: ConnectionTrait>(
    conn: &C,
    room_type: RoomTypeId,
) -> Result<Option<u32>, DbErr> {
    let b = conn.get_database_backend();
    let sql = match b {
        sea_orm::DbBackend::Postgres => "SELECT rooms FROM room_types WHERE id = $1 FOR SHARE",
        _ => "SELECT rooms FROM room_types WHERE id = $1",
    };
    let row = conn
        .query_one_raw(stmt(b, sql, vec![uuid_value(b, room_type.0)]))
        .await?;
    row.map(|r| Ok(u32::try_from(r.try_get::<i32>("", "rooms")?).unwrap_or(0)))
        .transpose()
}

/// A room type, its row locked until the transaction ends (PostgreSQL).
pub async fn room_type_for_update<C: ConnectionTrait>(
    conn: &C,
    id: RoomTypeId,
) -> Result<Option<RoomTypeView>, DbErr> {
    lock_row(conn, "room_types", id.0).await?;
    let b = conn.get_database_backend();
    let row = conn
        .query_one_raw(stmt(
            b,
            "SELECT id, name, name_en, beds, max_guests, rooms FROM room_types WHERE id = $1",
            vec![uuid_value(b, id.0)],
        ))
        .await?;
    row.as_ref().map(room_type_from_row).transpose()
}

fn room_type_from_row(r: &QueryResult) -> Result<RoomTypeView, DbErr> {
    Ok(RoomTypeView {
        id: RoomTypeId(row_uuid(r, "id")?),
        name: r.try_get("", "name")?,
        name_en: r.try_get("", "name_en")?,
        beds: u32::try_from(r.try_get::<i32>("", "beds")?).unwrap_or(0),
        max_guests: u32::try_from(r.try_get::<i32>("", "max_guests")?).unwrap_or(0),
        rooms: u32::try_from(r.try_get::<i32>("", "rooms")?).unwrap_or(0),
    })
}

/// Writes a room type; with fewer rooms, every night from `today` that
/// has more on sale puts only `rooms` on sale, keeping what is held or
/// sold (a night with more taken than that violates the nights' check).
pub async fn update_room_type<C: ConnectionTrait>(
    conn: &C,
    room_type: &RoomTypeView,
    today: NaiveDate,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "UPDATE room_types SET name = $2, name_en = $3, beds = $4, max_guests = $5, rooms = $6
         WHERE id = $1",
        vec![
            uuid_value(b, room_type.id.0),
            room_type.name.clone().into(),
            room_type.name_en.clone().into(),
            room_type.beds.into(),
            room_type.max_guests.into(),
            room_type.rooms.into(),
        ],
    ))
    .await?;
    conn.execute_raw(stmt(
        b,
        "UPDATE room_nights SET available = available - (rooms - $2), rooms = $2
         WHERE room_type_id = $1 AND night >= $3 AND rooms > $2",
        vec![
            uuid_value(b, room_type.id.0),
            room_type.rooms.into(),
            today.into(),
        ],
    ))
    .await?;
    Ok(())
}

/// A homestay with its room types.
pub async fn homestay<C: ConnectionTrait>(
    conn: &C,
    id: HomestayId,
) -> Result<Option<HomestayView>, DbErr> {
    Ok(homestays(conn, &[id]).await?.pop())
}

/// A refund rule as its column holds it: JSON, or NULL for the standard
/// rule.
pub(crate) fn policy_column(policy: Option<&CancellationPolicy>) -> Result<sea_orm::Value, DbErr> {
    Ok(policy
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| DbErr::Custom(format!("cancellation_policy: {e}")))?
        .into())
}

/// A homestay with its room types, its row locked until the transaction
/// ends (on SQLite the one connection serialises writers anyway).
pub async fn homestay_for_update<C: ConnectionTrait>(
    conn: &C,
    id: HomestayId,
) -> Result<Option<HomestayView>, DbErr> {
    lock_row(conn, "homestays", id.0).await?;
    homestay(conn, id).await
}

/// Locks a catalogue row (`homestays`, `routes`) by id until the
/// transaction ends, on PostgreSQL; on SQLite the one connection
/// serialises writers anyway.
pub(crate) async fn lock_row<C: ConnectionTrait>(
    conn: &C,
    table: &'static str,
    id: uuid::Uuid,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    if b == sea_orm::DbBackend::Postgres {
        conn.execute_raw(stmt(
            b,
            &format!("SELECT id FROM {table} WHERE id = $1 FOR UPDATE"),
            vec![uuid_value(b, id)],
        ))
        .await?;
    }
    Ok(())
}

/// Writes a homestay's names and details, and its refund rule when one is
/// given (none keeps the stored one, or the standard rule).
pub async fn update_homestay<C: ConnectionTrait>(
    conn: &C,
    homestay: &HomestayView,
    policy: Option<&CancellationPolicy>,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    let json = |e: serde_json::Error| DbErr::Custom(format!("homestays: {e}"));
    conn.execute_raw(stmt(
        b,
        "UPDATE homestays SET name = $2, name_en = $3, details = $4,
                cancellation_policy = COALESCE($5, cancellation_policy)
         WHERE id = $1",
        vec![
            uuid_value(b, homestay.id.0),
            homestay.name.clone().into(),
            homestay.name_en.clone().into(),
            serde_json::to_string(&homestay.details)
                .map_err(json)?
                .into(),
            policy_column(policy)?,
        ],
    ))
    .await?;
    Ok(())
}

/// Homestays with their room types, two queries for any number; those that
/// exist, in no particular order.
pub async fn homestays<C: ConnectionTrait>(
    conn: &C,
    ids: &[HomestayId],
) -> Result<Vec<HomestayView>, DbErr> {
    let keys = || ids.iter().map(|id| id.0);
    let rows = shared::db::rows_with_ids(
        conn,
        "SELECT h.id, h.name, h.name_en, h.host_id, o.name AS host_name, h.region_code,
                h.details, h.certified_until, h.cancellation_policy, h.published
         FROM homestays h JOIN hosts o ON o.id = h.host_id WHERE h.id IN ({ids})",
        keys(),
    )
    .await?;
    let rooms = shared::db::rows_with_ids(
        conn,
        "SELECT homestay_id, id, name, name_en, beds, max_guests, rooms FROM room_types
         WHERE homestay_id IN ({ids}) ORDER BY name, id",
        keys(),
    )
    .await?;
    let mut rooms_of: std::collections::HashMap<uuid::Uuid, Vec<RoomTypeView>> =
        std::collections::HashMap::new();
    for r in &rooms {
        rooms_of
            .entry(row_uuid(r, "homestay_id")?)
            .or_default()
            .push(room_type_from_row(r)?);
    }
    let custom = |e: serde_json::Error| DbErr::Custom(format!("homestays: {e}"));
    rows.iter()
        .map(|row| {
            let id = row_uuid(row, "id")?;
            let details: String = row.try_get("", "details")?;
            Ok(HomestayView {
                id: HomestayId(id),
                name: row.try_get("", "name")?,
                name_en: row.try_get("", "name_en")?,
                host_id: HostId(row_uuid(row, "host_id")?),
                host_name: row.try_get("", "host_name")?,
                region_code: shared::db::row_region(row, "region_code")?,
                details: serde_json::from_str(&details).map_err(custom)?,
                certified_until: row.try_get("", "certified_until")?,
                cancellation_policy: match row
                    .try_get::<Option<String>>("", "cancellation_policy")?
                {
                    Some(p) => serde_json::from_str(&p).map_err(custom)?,
                    None => CancellationPolicy::default(),
                },
                published: row.try_get("", "published")?,
                room_types: rooms_of.remove(&id).unwrap_or_default(),
            })
        })
        .collect()
}

/// A page of the listings of hosts whose region code starts with
/// `prefix`: each listing's id and whether it is a route, newest first
/// (ids are time-ordered v7 UUIDs; `after` is the last id seen), and
/// whether more follow. `published`: only those on sale, or only those not.
pub async fn listing_page<C: ConnectionTrait>(
    conn: &C,
    prefix: &str,
    host: Option<HostId>,
    published: Option<bool>,
    first: u32,
    after: Option<uuid::Uuid>,
) -> Result<(Vec<(uuid::Uuid, bool)>, bool), DbErr> {
    let b = conn.get_database_backend();
    let mut values = listing_values(b, prefix, host, published);
    values.extend([opt_uuid_value(b, after), (i64::from(first) + 1).into()]);
    let rows = conn
        .query_all_raw(stmt(
            b,
            &format!(
                "SELECT id, is_route FROM {LISTINGS} AND ($4 IS NULL OR id < $4)
                 ORDER BY id DESC LIMIT $5"
            ),
            values,
        ))
        .await?;
    shared::db::page(&rows, first, |r| {
        Ok((row_uuid(r, "id")?, r.try_get::<i32>("", "is_route")? == 1))
    })
}

/// How many listings [`listing_page`] pages through.
pub async fn listing_count<C: ConnectionTrait>(
    conn: &C,
    prefix: &str,
    host: Option<HostId>,
    published: Option<bool>,
) -> Result<u64, DbErr> {
    let values = listing_values(conn.get_database_backend(), prefix, host, published);
    shared::db::count(conn, LISTINGS, values).await
}

/// Homestays and routes as one list, filtered by region prefix ($1), host
/// ($2) and whether on sale ($3).
const LISTINGS: &str = "(
         SELECT id, host_id, region_code, published, 0 AS is_route FROM homestays
         UNION ALL
         SELECT id, host_id, region_code,
                CASE WHEN status = 'PUBLISHED' THEN TRUE ELSE FALSE END, 1 FROM routes
     ) AS l
     WHERE region_code LIKE $1 AND ($2 IS NULL OR host_id = $2)
       AND ($3 IS NULL OR published = $3)";

fn listing_values(
    b: sea_orm::DbBackend,
    prefix: &str,
    host: Option<HostId>,
    published: Option<bool>,
) -> Vec<sea_orm::Value> {
    vec![
        format!("{prefix}%").into(),
        opt_uuid_value(b, host.map(|h| h.0)),
        published.into(),
    ]
}

/// What decides whether a stay may be held besides free rooms: whether a
/// night is closed, the minimum stay of the check-in night, and how many
/// guests a room sleeps.
pub struct StayRules {
    /// The homestay is on sale.
    pub published: bool,
    /// Some night of the stay is closed or was never put on sale.
    pub closed: bool,
    /// The first night of the stay closed (or with no rooms), when one is;
    /// None when only nights never put on sale make it `closed`.
    pub first_closed: Option<chrono::NaiveDate>,
    /// The check-in night's minimum stay (1 when the night is not set).
    pub min_stay: u32,
    /// Guests per room.
    pub max_guests: u32,
    /// Rooms free on the stay's fullest night, as last committed (0 when a
    /// night is not on sale). A hint that refuses without a lock; the
    /// conditional update decides a grant.
    pub fewest_free: u32,
    /// One room for the whole stay, at the nights' prices as last committed.
    pub price: Fen,
}

/// The listing a room type belongs to and its rules over a stay, in one
/// query; None when there is no such room type.
pub async fn stay_rules<C: ConnectionTrait>(
    conn: &C,
    room_type: RoomTypeId,
    stay: StayDates,
) -> Result<Option<(ListingSnapshot, StayRules)>, DbErr> {
    let b = conn.get_database_backend();
    let row = conn
        .query_one_raw(stmt(
            b,
            "SELECT h.id AS homestay_id, h.name AS homestay, r.name AS room, h.name_en AS homestay_en,
                    r.name_en AS room_en, h.host_id, h.region_code, h.certified_until,
                    h.cancellation_policy, h.published, r.max_guests,
                    CAST(COALESCE(SUM(CASE WHEN n.closed OR n.rooms = 0 THEN 1 ELSE 0 END), 0) AS BIGINT) AS closed,
                    MIN(CASE WHEN n.closed OR n.rooms = 0 THEN n.night END) AS first_closed,
                    CAST(COUNT(n.night) AS BIGINT) AS on_sale,
                    CAST(COALESCE(MAX(CASE WHEN n.night = $2 THEN n.min_stay ELSE 1 END), 1) AS BIGINT) AS min_stay,
                    CASE WHEN COUNT(n.night) = $4 THEN CAST(MIN(n.available) AS BIGINT) ELSE 0 END AS fewest_free,
                    CAST(COALESCE(SUM(n.price_fen), 0) AS BIGINT) AS price
             FROM room_types r
             JOIN homestays h ON h.id = r.homestay_id
             LEFT JOIN room_nights n ON n.room_type_id = r.id AND n.night >= $2 AND n.night < $3
             WHERE r.id = $1
             GROUP BY h.id, h.name, r.name, h.name_en, r.name_en, h.host_id, h.region_code,
                      h.certified_until, h.cancellation_policy, h.published, r.max_guests",
            vec![
                uuid_value(b, room_type.0),
                stay.check_in.into(),
                stay.check_out.into(),
                stay.nights().into(),
            ],
        ))
        .await?;
    let Some(row) = row else { return Ok(None) };
    let rules = StayRules {
        published: row.try_get("", "published")?,
        // A night never put on sale is as closed as one closed.
        closed: row.try_get::<i64>("", "closed")? > 0
            || row.try_get::<i64>("", "on_sale")? < stay.nights(),
        first_closed: row.try_get("", "first_closed")?,
        min_stay: u32::try_from(row.try_get::<i64>("", "min_stay")?).unwrap_or(1),
        max_guests: u32::try_from(row.try_get::<i32>("", "max_guests")?).unwrap_or(0),
        fewest_free: u32::try_from(row.try_get::<i64>("", "fewest_free")?).unwrap_or(0),
        price: Fen(row.try_get("", "price")?),
    };
    Ok(Some((snapshot(&row)?, rules)))
}

/// The region of a room type's homestay and whether it is on sale; none
/// when there is no such room type.
pub async fn listing_shown<C: ConnectionTrait>(
    conn: &C,
    room_type: RoomTypeId,
) -> Result<Option<(RegionCode, bool)>, DbErr> {
    let b = conn.get_database_backend();
    let row = conn
        .query_one_raw(stmt(
            b,
            "SELECT h.region_code, h.published
             FROM room_types r JOIN homestays h ON h.id = r.homestay_id WHERE r.id = $1",
            vec![uuid_value(b, room_type.0)],
        ))
        .await?;
    row.map(|row| {
        Ok((
            shared::db::row_region(&row, "region_code")?,
            row.try_get("", "published")?,
        ))
    })
    .transpose()
}

/// True when the room type exists.
pub async fn room_type_exists<C: ConnectionTrait>(conn: &C, id: RoomTypeId) -> Result<bool, DbErr> {
    Ok(listing(conn, id).await?.is_some())
}

/// How nights are to be sold.
#[derive(Debug, Clone, Copy)]
pub struct NightTerms {
    /// Rooms on sale.
    pub rooms: Option<u32>,
    /// The room type's rooms: a new night's when `rooms` is left out.
    pub all_rooms: u32,
    /// Price per room (a new night needs one).
    pub price: Option<Fen>,
    /// Not bookable.
    pub closed: Option<bool>,
    /// Shortest stay beginning on the night.
    pub min_stay: Option<u32>,
}

/// Sets the terms of each night in `[from, to)`: those given, the others
/// as the night has them (a new night: every room, open, any stay).
/// Lowering `rooms` lowers `available` by the same amount; below what is
/// held, the CHECK fails.
pub async fn set_nights<C: ConnectionTrait>(
    conn: &C,
    room_type: RoomTypeId,
    from: NaiveDate,
    to: NaiveDate,
    terms: NightTerms,
) -> Result<u32, DbErr> {
    let b = conn.get_database_backend();
    let Some(price) = terms.price else {
        // Nights already set (the caller checked): one update. (An upsert
        // would not do: its row to insert must have a price, even when
        // it conflicts.)
        let done = conn
            .execute_raw(stmt(
                b,
                "UPDATE room_nights SET
                   available = available + (COALESCE($4, rooms) - rooms),
                   rooms = COALESCE($4, rooms),
                   closed = COALESCE($5, closed),
                   min_stay = COALESCE($6, min_stay)
                 WHERE room_type_id = $1 AND night >= $2 AND night < $3",
                vec![
                    uuid_value(b, room_type.0),
                    from.into(),
                    to.into(),
                    terms.rooms.into(),
                    terms.closed.into(),
                    terms.min_stay.into(),
                ],
            ))
            .await?;
        return Ok(u32::try_from(done.rows_affected()).unwrap_or(u32::MAX));
    };
    let mut n = 0;
    let mut night = from;
    while night < to {
        conn.execute_raw(stmt(
            b,
            "INSERT INTO room_nights (room_type_id, night, rooms, available, price_fen, closed, min_stay)
             VALUES ($1, $2, COALESCE($3, $7), COALESCE($3, $7), $4, COALESCE($5, FALSE),
                     COALESCE($6, 1))
             ON CONFLICT (room_type_id, night) DO UPDATE SET
               available = room_nights.available
                           + (COALESCE($3, room_nights.rooms) - room_nights.rooms),
               rooms = COALESCE($3, room_nights.rooms),
               price_fen = excluded.price_fen,
               closed = COALESCE($5, room_nights.closed),
               min_stay = COALESCE($6, room_nights.min_stay)",
            vec![
                uuid_value(b, room_type.0),
                night.into(),
                terms.rooms.into(),
                price.get().into(),
                terms.closed.into(),
                terms.min_stay.into(),
                terms.all_rooms.into(),
            ],
        ))
        .await?;
        n += 1;
        night = night.succ_opt().unwrap_or(night);
    }
    Ok(n)
}

/// The first night of `[from, to)` not yet on sale (never set), if any.
pub async fn first_night_unset<C: ConnectionTrait>(
    conn: &C,
    room_type: RoomTypeId,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Option<NaiveDate>, DbErr> {
    let b = conn.get_database_backend();
    let set: std::collections::BTreeSet<NaiveDate> = conn
        .query_all_raw(stmt(
            b,
            "SELECT night FROM room_nights WHERE room_type_id = $1 AND night >= $2 AND night < $3",
            vec![uuid_value(b, room_type.0), from.into(), to.into()],
        ))
        .await?
        .iter()
        .map(|r| r.try_get("", "night"))
        .collect::<Result<_, _>>()?;
    Ok(from
        .iter_days()
        .take_while(|d| *d < to)
        .find(|d| !set.contains(d)))
}

/// The night of `[from, to)` (no end: every night from `from`) with the
/// most rooms held or sold, and how many: what a change of the room count
/// must leave room for.
pub async fn busiest_night<C: ConnectionTrait>(
    conn: &C,
    room_type: RoomTypeId,
    from: NaiveDate,
    to: Option<NaiveDate>,
) -> Result<Option<(NaiveDate, i32)>, DbErr> {
    let b = conn.get_database_backend();
    conn.query_one_raw(stmt(
        b,
        "SELECT night, rooms - available AS taken FROM room_nights
         WHERE room_type_id = $1 AND night >= $2 AND ($3 IS NULL OR night < $3)
         ORDER BY rooms - available DESC, night LIMIT 1",
        vec![uuid_value(b, room_type.0), from.into(), to.into()],
    ))
    .await?
    .map(|r| Ok((r.try_get("", "night")?, r.try_get("", "taken")?)))
    .transpose()
}

/// The calendar of a room type for `[from, to)`: only nights that were set.
pub async fn nights<C: ConnectionTrait>(
    conn: &C,
    room_type: RoomTypeId,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<Night>, DbErr> {
    Ok(nights_of(conn, &[room_type], from, to)
        .await?
        .pop()
        .map(|(_, nights)| nights)
        .unwrap_or_default())
}

/// The calendars of several room types for `[from, to)`, in one query:
/// each room type asked for, with the nights that were set.
pub async fn nights_of<C: ConnectionTrait>(
    conn: &C,
    room_types: &[RoomTypeId],
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<(RoomTypeId, Vec<Night>)>, DbErr> {
    let mut out: Vec<(RoomTypeId, Vec<Night>)> =
        room_types.iter().map(|id| (*id, Vec::new())).collect();
    if room_types.is_empty() {
        return Ok(out);
    }
    let b = conn.get_database_backend();
    let mut values: Vec<sea_orm::Value> = vec![from.into(), to.into()];
    values.extend(room_types.iter().map(|id| uuid_value(b, id.0)));
    let rows = conn
        .query_all_raw(stmt(
            b,
            &format!(
                "SELECT room_type_id, night, rooms, available, price_fen, closed, min_stay FROM room_nights
                 WHERE night >= $1 AND night < $2 AND room_type_id IN ({}) ORDER BY night",
                shared::db::placeholders(3, room_types.len())
            ),
            values,
        ))
        .await?;
    for r in &rows {
        let id = RoomTypeId(row_uuid(r, "room_type_id")?);
        let night = Night {
            date: r.try_get("", "night")?,
            rooms: u32::try_from(r.try_get::<i32>("", "rooms")?).unwrap_or(0),
            available: u32::try_from(r.try_get::<i32>("", "available")?).unwrap_or(0),
            price: Fen(r.try_get("", "price_fen")?),
            closed: r.try_get("", "closed")?,
            min_stay: u32::try_from(r.try_get::<i32>("", "min_stay")?).unwrap_or(1),
        };
        if let Some((_, nights)) = out.iter_mut().find(|(rt, _)| *rt == id) {
            nights.push(night);
        }
    }
    Ok(out)
}

/// The listing snapshot of a room type: title, host, region, certification.
pub async fn listing<C: ConnectionTrait>(
    conn: &C,
    room_type: RoomTypeId,
) -> Result<Option<ListingSnapshot>, DbErr> {
    let b = conn.get_database_backend();
    let row = conn
        .query_one_raw(stmt(
            b,
            "SELECT h.id AS homestay_id, h.name AS homestay, r.name AS room,
                    h.name_en AS homestay_en, r.name_en AS room_en, h.host_id, h.region_code,
                    h.certified_until, h.cancellation_policy
             FROM room_types r JOIN homestays h ON h.id = r.homestay_id WHERE r.id = $1",
            vec![uuid_value(b, room_type.0)],
        ))
        .await?;
    row.map(|row| snapshot(&row)).transpose()
}

/// The listing snapshot in a row of `homestay_id`, `homestay`, `room`,
/// `homestay_en`, `room_en`, `host_id`, `region_code`, `certified_until`
/// and `cancellation_policy`.
fn snapshot(row: &QueryResult) -> Result<ListingSnapshot, DbErr> {
    let homestay: String = row.try_get("", "homestay")?;
    let room: String = row.try_get("", "room")?;
    let (homestay_en, room_en): (String, String) =
        (row.try_get("", "homestay_en")?, row.try_get("", "room_en")?);
    let region: String = row.try_get("", "region_code")?;
    // In English where a name has it, the Chinese name where not.
    let either = |en: &str, zh: &str| {
        if en.is_empty() {
            zh.to_owned()
        } else {
            en.to_owned()
        }
    };
    Ok(ListingSnapshot {
        title: format!("{homestay} · {room}"),
        title_en: (!homestay_en.is_empty() || !room_en.is_empty()).then(|| {
            format!(
                "{} · {}",
                either(&homestay_en, &homestay),
                either(&room_en, &room)
            )
        }),
        host_id: HostId(row_uuid(row, "host_id")?),
        region_code: RegionCode::parse(&region).map_err(|e| DbErr::Custom(e.to_string()))?,
        certified: shared::policy::certified_now(row.try_get("", "certified_until")?),
        cancellation_policy: match row.try_get::<Option<String>>("", "cancellation_policy")? {
            Some(p) => serde_json::from_str(&p)
                .map_err(|e| DbErr::Custom(format!("homestays.cancellation_policy: {e}")))?,
            None => CancellationPolicy::default(),
        },
        starts_on: None,
        listing_id: Some(row_uuid(row, "homestay_id")?),
    })
}

/// Takes `rooms` rooms on every night of the stay, or nothing. Returns the
/// total price when every night had room and the homestay is on sale.
pub async fn take_nights<C: ConnectionTrait>(
    conn: &C,
    room_type: RoomTypeId,
    stay: StayDates,
    rooms: u32,
) -> Result<Option<Fen>, DbErr> {
    let b = conn.get_database_backend();
    // The homestay's row shared until the transaction ends (PostgreSQL;
    // SQLite has one writer): a `publishListing(false)` committing while
    // this take runs is waited for and then seen, so nothing is taken on a
    // homestay just taken off sale, nor by a late payment's take again.
    let on_sale = match b {
        sea_orm::DbBackend::Postgres => "h.published FOR SHARE OF h",
        _ => "h.published",
    };
    // One statement takes the rooms and reads the nights' prices back.
    let taken = conn
        .query_all_raw(stmt(
            b,
            &format!(
                "UPDATE room_nights SET available = available - $4
                 WHERE room_type_id = $1 AND night >= $2 AND night < $3 AND available >= $4
                   AND NOT closed
                   AND EXISTS (SELECT 1 FROM room_types r JOIN homestays h ON h.id = r.homestay_id
                               WHERE r.id = $1 AND {on_sale})
                 RETURNING price_fen"
            ),
            vec![
                uuid_value(b, room_type.0),
                stay.check_in.into(),
                stay.check_out.into(),
                rooms.into(),
            ],
        ))
        .await?;
    if taken.len() as i64 != stay.nights() {
        return Ok(None);
    }
    let mut per_room = 0;
    for night in &taken {
        per_room += night.try_get::<i64>("", "price_fen")?;
    }
    Ok(Some(Fen(per_room * i64::from(rooms))))
}

/// Gives `rooms` back on every night of the stay.
pub async fn return_nights<C: ConnectionTrait>(
    conn: &C,
    room_type: RoomTypeId,
    stay: StayDates,
    rooms: u32,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "UPDATE room_nights SET available = available + $4
         WHERE room_type_id = $1 AND night >= $2 AND night < $3",
        vec![
            uuid_value(b, room_type.0),
            stay.check_in.into(),
            stay.check_out.into(),
            rooms.into(),
        ],
    ))
    .await?;
    Ok(())
}

/// A hold's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// HELD, COMMITTED, RELEASED or REJECTED.
    pub state: String,
    /// Room type held (none for a tombstone or seats).
    pub room_type_id: Option<RoomTypeId>,
    /// Departure held (seats).
    pub departure_id: Option<DepartureId>,
    /// The stay held.
    pub stay: Option<StayDates>,
    /// Rooms per night, or seats.
    pub rooms: u32,
    /// The answer sent for it (event type and payload), to send again when
    /// the request is repeated.
    pub reply: Option<(String, serde_json::Value)>,
}

/// Reads a hold, locking it on PostgreSQL.
pub async fn hold_for_update<C: ConnectionTrait>(
    conn: &C,
    booking: BookingId,
) -> Result<Option<Hold>, DbErr> {
    let b = conn.get_database_backend();
    // Named columns (`shared::db` says why).
    let sql = format!(
        "SELECT state, room_type_id, departure_id, check_in, check_out, rooms, reply_kind,
                reply_payload
         FROM holds WHERE booking_id = $1{}",
        match b {
            sea_orm::DbBackend::Postgres => " FOR UPDATE",
            _ => "",
        }
    );
    let Some(row) = conn
        .query_one_raw(stmt(b, &sql, vec![uuid_value(b, booking.0)]))
        .await?
    else {
        return Ok(None);
    };
    let check_in: Option<NaiveDate> = row.try_get("", "check_in")?;
    let check_out: Option<NaiveDate> = row.try_get("", "check_out")?;
    let room_type = shared::db::opt_row_uuid(&row, "room_type_id")?;
    Ok(Some(Hold {
        state: row.try_get("", "state")?,
        room_type_id: room_type.map(RoomTypeId),
        departure_id: shared::db::opt_row_uuid(&row, "departure_id")?.map(DepartureId),
        stay: check_in
            .zip(check_out)
            .map(|(check_in, check_out)| StayDates {
                check_in,
                check_out,
            }),
        rooms: u32::try_from(row.try_get::<i32>("", "rooms")?).unwrap_or(0),
        reply: match (
            row.try_get::<Option<String>>("", "reply_kind")?,
            row.try_get::<Option<String>>("", "reply_payload")?,
        ) {
            (Some(kind), Some(payload)) => serde_json::from_str(&payload).ok().map(|p| (kind, p)),
            _ => None,
        },
    }))
}

/// Capacity a hold took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Rooms of a room type on every night of a stay.
    Nights(RoomTypeId, StayDates, u32),
    /// Seats on a departure.
    Seats(DepartureId, u32),
}

/// Records a hold (or a tombstone: state RELEASED/REJECTED with no
/// capacity); false, and nothing written, when the booking has one already
/// (after waiting for a concurrent insert of it to commit).
pub async fn insert_hold<C: ConnectionTrait>(
    conn: &C,
    booking: BookingId,
    state: &str,
    held: Option<Held>,
    expires_at: Option<DateTime<Utc>>,
    reply: Option<&Envelope>,
) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    let (room_type, departure, check_in, check_out, units) = match held {
        Some(Held::Nights(r, s, n)) => (Some(r.0), None, Some(s.check_in), Some(s.check_out), n),
        Some(Held::Seats(d, n)) => (None, Some(d.0), None, None, n),
        None => (None, None, None, None, 0),
    };
    let inserted = conn.execute_raw(stmt(
        b,
        "INSERT INTO holds (booking_id, room_type_id, check_in, check_out, rooms, state, expires_at,
                            reply_kind, reply_payload, departure_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (booking_id) DO NOTHING",
        vec![
            uuid_value(b, booking.0),
            opt_uuid_value(b, room_type),
            check_in.into(),
            check_out.into(),
            units.into(),
            state.into(),
            expires_at.into(),
            reply.map(|r| r.kind.clone()).into(),
            reply.map(|r| r.payload.to_string()).into(),
            opt_uuid_value(b, departure),
        ],
    ))
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Moves a hold to `state`.
pub async fn set_hold_state<C: ConnectionTrait>(
    conn: &C,
    booking: BookingId,
    state: &str,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "UPDATE holds SET state = $2 WHERE booking_id = $1",
        vec![uuid_value(b, booking.0), state.into()],
    ))
    .await?;
    Ok(())
}

/// Moves a hold from `from` to `to` in one conditional update; false
/// when it is not in `from` (or does not exist).
pub async fn move_hold<C: ConnectionTrait>(
    conn: &C,
    booking: BookingId,
    from: &str,
    to: &str,
) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    let moved = conn
        .execute_raw(stmt(
            b,
            "UPDATE holds SET state = $3 WHERE booking_id = $1 AND state = $2",
            vec![uuid_value(b, booking.0), from.into(), to.into()],
        ))
        .await?;
    Ok(moved.rows_affected() == 1)
}

/// Live holds whose deadline passed before `cutoff`, oldest first, locked
/// (and skipped by another sweeper) on PostgreSQL.
pub async fn overdue_holds<C: ConnectionTrait>(
    conn: &C,
    cutoff: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<BookingId>, DbErr> {
    let b = conn.get_database_backend();
    let lock = match b {
        sea_orm::DbBackend::Postgres => "FOR UPDATE SKIP LOCKED",
        _ => "",
    };
    let rows = conn
        .query_all_raw(stmt(
            b,
            &format!(
                "SELECT booking_id FROM holds WHERE state = 'HELD' AND expires_at < $1
                 ORDER BY expires_at LIMIT $2 {lock}"
            ),
            vec![cutoff.into(), i64::from(limit).into()],
        ))
        .await?;
    rows.iter()
        .map(|r| Ok(BookingId(row_uuid(r, "booking_id")?)))
        .collect()
}

/// Number of homestays (demo seeding checks for an empty catalogue).
pub async fn homestay_count<C: ConnectionTrait>(conn: &C) -> Result<i64, DbErr> {
    let b = conn.get_database_backend();
    let row = conn
        .query_one_raw(stmt(
            b,
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM homestays",
            vec![],
        ))
        .await?;
    match row {
        Some(r) => r.try_get("", "n"),
        None => Ok(0),
    }
}

/// Room types bookable for every night of `[check_in, check_out)` with
/// `rooms` rooms free, inside the region whose codes start with `prefix`,
/// cheapest first; `after` is the (total, room type) of the last offer seen.
#[allow(clippy::too_many_arguments)]
pub async fn search<C: ConnectionTrait>(
    conn: &C,
    prefix: &str,
    stay: StayDates,
    guests: u32,
    rooms: u32,
    certified_only: bool,
    first: u32,
    after: Option<(i64, uuid::Uuid)>,
) -> Result<(Vec<shared::rpcs::Offer>, bool), DbErr> {
    let b = conn.get_database_backend();
    let nights = (stay.check_out - stay.check_in).num_days();
    let (after_total, after_id) = after.unwrap_or((-1, uuid::Uuid::nil()));
    let rows = conn
        .query_all_raw(stmt(
            b,
            "SELECT * FROM (
                SELECT h.id AS homestay_id, h.name AS homestay_name,
                       h.name_en AS homestay_name_en, h.region_code,
                       COALESCE(h.certified_until >= $11, FALSE) AS certified, h.certified_until,
                       r.id AS room_type_id, r.name AS room_type_name,
                       r.name_en AS room_type_name_en, r.max_guests,
                       CAST(MIN(n.available) AS BIGINT) AS rooms_left,
                       CAST(SUM(n.price_fen) * $4 AS BIGINT) AS total
                FROM homestays h
                JOIN room_types r ON r.homestay_id = h.id
                JOIN room_nights n ON n.room_type_id = r.id AND n.night >= $2 AND n.night < $3
                                   AND NOT n.closed
                WHERE h.region_code LIKE $1 AND h.published AND r.max_guests * $4 >= $5
                  AND (NOT $6 OR (h.certified_until IS NOT NULL AND h.certified_until >= $11))
                GROUP BY h.id, h.name, h.name_en, h.region_code, h.certified_until,
                         r.id, r.name, r.name_en, r.max_guests
                HAVING COUNT(*) = $7 AND MIN(n.available) >= $4
                   AND MAX(CASE WHEN n.night = $2 THEN n.min_stay ELSE 1 END) <= $7
             ) AS o
             WHERE o.total > $8 OR (o.total = $8 AND o.room_type_id > $9)
             ORDER BY o.total, o.room_type_id
             LIMIT $10",
            vec![
                format!("{prefix}%").into(),
                stay.check_in.into(),
                stay.check_out.into(),
                i64::from(rooms).into(),
                i64::from(guests).into(),
                certified_only.into(),
                nights.into(),
                after_total.into(),
                uuid_value(b, after_id),
                (i64::from(first) + 1).into(),
                shared::policy::china_today(Utc::now()).into(),
            ],
        ))
        .await?;
    shared::db::page(&rows, first, |r| {
        let room_type = row_uuid(r, "room_type_id")?;
        let total: i64 = r.try_get("", "total")?;
        let region: String = r.try_get("", "region_code")?;
        Ok(shared::rpcs::Offer {
            homestay_id: shared::ids::HomestayId(row_uuid(r, "homestay_id")?),
            homestay_name: r.try_get("", "homestay_name")?,
            homestay_name_en: r.try_get("", "homestay_name_en")?,
            region_code: RegionCode::parse(&region).map_err(|e| DbErr::Custom(e.to_string()))?,
            certified: r.try_get("", "certified")?,
            certified_until: r.try_get("", "certified_until")?,
            room_type_id: RoomTypeId(room_type),
            room_type_name: r.try_get("", "room_type_name")?,
            room_type_name_en: r.try_get("", "room_type_name_en")?,
            max_guests: u32::try_from(r.try_get::<i32>("", "max_guests")?).unwrap_or(0),
            nights: u32::try_from(nights).unwrap_or(0),
            rooms_left: u32::try_from(r.try_get::<i64>("", "rooms_left")?).unwrap_or(0),
            total: Fen(total),
            cursor: format!("{total}:{room_type}"),
        })
    })
}

//! Routes (旅游线路) and their departures.
//!
//! Seats live in `departures.available`, guarded like room nights by
//! `CHECK (available >= 0 AND available <= seats)`; a hold takes them with
//! one conditional `UPDATE … WHERE available >= n`.

use chrono::NaiveDate;
use sea_orm::{ConnectionTrait, DbErr, QueryResult, Value};
use sea_orm_migration::{MigrationName, MigrationTrait, SchemaManager};
use shared::db::{row_region, row_uuid, run_ddl, uuid_value};
use shared::ids::{DepartureId, HostId, RouteId};
use shared::money::Fen;
use shared::outbox::stmt;
use shared::policy::CancellationPolicy;
use shared::region::RegionCode;
use shared::rpcs::{DepartureView, ItineraryDay, RouteStatus, RouteView};

pub(super) struct Routes;

impl MigrationName for Routes {
    fn name(&self) -> &str {
        "m20261125_000001_routes"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Routes {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(
            manager,
            &[
                "CREATE TABLE routes (
                    id UUID PRIMARY KEY,
                    host_id UUID NOT NULL REFERENCES hosts (id),
                    region_code TEXT NOT NULL REFERENCES regions (code),
                    title_zh TEXT NOT NULL,
                    title_en TEXT NOT NULL,
                    description_zh TEXT NOT NULL,
                    description_en TEXT NOT NULL,
                    itinerary TEXT NOT NULL,
                    price_fen BIGINT NOT NULL CHECK (price_fen >= 0),
                    cancellation_policy TEXT,
                    status TEXT NOT NULL,
                    certified_until DATE NULL,
                    created_at TIMESTAMPTZ NOT NULL DEFAULT now())",
                // Every region a route starts in or visits: search by sub-tree.
                "CREATE TABLE route_regions (
                    route_id UUID NOT NULL REFERENCES routes (id),
                    region_code TEXT NOT NULL REFERENCES regions (code),
                    PRIMARY KEY (route_id, region_code))",
                "CREATE TABLE departures (
                    id UUID PRIMARY KEY,
                    route_id UUID NOT NULL REFERENCES routes (id),
                    starts_on DATE NOT NULL,
                    last_booking_day DATE NOT NULL,
                    seats INTEGER NOT NULL CHECK (seats >= 0),
                    available INTEGER NOT NULL CHECK (available >= 0 AND available <= seats),
                    price_fen BIGINT CHECK (price_fen >= 0),
                    UNIQUE (route_id, starts_on))",
                "CREATE INDEX departures_by_day ON departures (starts_on)",
                // A seat hold names its departure; `rooms` then counts seats.
                "ALTER TABLE holds ADD COLUMN departure_id UUID",
            ],
        )
        .await
    }
}

pub(super) struct DepartureCancellation;

impl MigrationName for DepartureCancellation {
    fn name(&self) -> &str {
        "m20261205_000001_departure_cancellation"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for DepartureCancellation {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(
            manager,
            &[
                "ALTER TABLE departures ADD COLUMN cancelled_at TIMESTAMPTZ",
                "ALTER TABLE departures ADD COLUMN cancel_reason TEXT",
                // The bookings on a departure, when it is cancelled.
                "CREATE INDEX holds_by_departure ON holds (departure_id)",
            ],
        )
        .await
    }
}

pub(super) struct CancelledDepartures;

impl MigrationName for CancelledDepartures {
    fn name(&self) -> &str {
        "m20261205_000008_cancelled_departures"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CancelledDepartures {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Every payout run asks for the bookings a departure's
        // cancellation announced, of the departures cancelled lately.
        run_ddl(
            manager,
            &[
                "CREATE INDEX departures_cancelled ON departures (cancelled_at)
                 WHERE cancelled_at IS NOT NULL",
                "ALTER TABLE holds ADD COLUMN departure_cancelled BOOLEAN NOT NULL DEFAULT FALSE",
            ],
        )
        .await
    }
}

/// What a route's text search reads: its four texts, folded as the
/// search folds the traveler's words ([`search_text`]: composed, each
/// letter lower-cased on its own, ς as σ). SQL's `LOWER` folded ASCII
/// only on SQLite (Ü never found ü) and differed from Rust's on a final Σ
/// on PostgreSQL; one function on both sides finds a word in whichever
/// case. Filled here for the routes there are, by the same function.
pub(super) struct SearchText;

impl MigrationName for SearchText {
    fn name(&self) -> &str {
        "m20261207_000008_route_search_text"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for SearchText {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(
            manager,
            &["ALTER TABLE routes ADD COLUMN search_text TEXT NOT NULL DEFAULT ''"],
        )
        .await?;
        let conn = manager.get_connection();
        let b = conn.get_database_backend();
        let rows = conn
            .query_all_raw(stmt(
                b,
                "SELECT id, title_zh, title_en, description_zh, description_en FROM routes",
                vec![],
            ))
            .await?;
        for row in rows {
            let texts: [String; 4] = [
                row.try_get("", "title_zh")?,
                row.try_get("", "title_en")?,
                row.try_get("", "description_zh")?,
                row.try_get("", "description_en")?,
            ];
            conn.execute_raw(stmt(
                b,
                "UPDATE routes SET search_text = $2 WHERE id = $1",
                vec![
                    uuid_value(b, row_uuid(&row, "id")?),
                    search_text(&texts.each_ref().map(String::as_str)).into(),
                ],
            ))
            .await?;
        }
        Ok(())
    }
}

/// A route's texts as its search reads them: joined, folded as the
/// traveler's words are ([`shared::text::folded`]).
pub fn search_text(texts: &[&str; 4]) -> String {
    shared::text::folded(&texts.join(" "))
}

pub(super) struct DepartureDays;

impl MigrationName for DepartureDays {
    fn name(&self) -> &str {
        "m20261205_000003_departure_days"
    }
}

/// A cancelled departure keeps its day only while nothing else runs on
/// it: one departure a route and day among those not cancelled (a road
/// closed by snow may open again, and the day be sold anew). PostgreSQL
/// swaps the constraint for a partial unique index; SQLite cannot drop a
/// table constraint, so the table is rebuilt (nothing references it).
#[async_trait::async_trait]
impl MigrationTrait for DepartureDays {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let on_day = "CREATE UNIQUE INDEX departures_on_day ON departures (route_id, starts_on)
                      WHERE cancelled_at IS NULL";
        match manager.get_database_backend() {
            sea_orm::DbBackend::Sqlite => {
                run_ddl(
                    manager,
                    &[
                        "CREATE TABLE departures_rebuilt (
                            id UUID PRIMARY KEY,
                            route_id UUID NOT NULL REFERENCES routes (id),
                            starts_on DATE NOT NULL,
                            last_booking_day DATE NOT NULL,
                            seats INTEGER NOT NULL CHECK (seats >= 0),
                            available INTEGER NOT NULL
                                CHECK (available >= 0 AND available <= seats),
                            price_fen BIGINT CHECK (price_fen >= 0),
                            cancelled_at TIMESTAMPTZ,
                            cancel_reason TEXT)",
                        "INSERT INTO departures_rebuilt
                            (id, route_id, starts_on, last_booking_day, seats, available,
                             price_fen, cancelled_at, cancel_reason)
                         SELECT id, route_id, starts_on, last_booking_day, seats, available,
                                price_fen, cancelled_at, cancel_reason
                         FROM departures",
                        "DROP TABLE departures",
                        "ALTER TABLE departures_rebuilt RENAME TO departures",
                        "CREATE INDEX departures_by_day ON departures (starts_on)",
                        on_day,
                    ],
                )
                .await
            }
            _ => {
                run_ddl(
                    manager,
                    &[
                        "ALTER TABLE departures DROP CONSTRAINT departures_route_id_starts_on_key",
                        on_day,
                    ],
                )
                .await
            }
        }
    }
}

/// A new route's fields, validated.
pub struct NewRoute<'a> {
    /// The route.
    pub id: RouteId,
    /// Its host, and its name when it is new.
    pub host: (HostId, Option<&'a str>),
    /// Start region.
    pub region: RegionCode,
    /// Titles and descriptions, zh then en.
    pub texts: [&'a str; 4],
    /// Day by day.
    pub itinerary: &'a [ItineraryDay],
    /// Price per person.
    pub price: Fen,
    /// Refund tiers; none: standard.
    pub policy: Option<&'a CancellationPolicy>,
}

/// Inserts a route as a DRAFT with its host and the regions it visits.
pub async fn insert_route<C: ConnectionTrait>(conn: &C, r: NewRoute<'_>) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    if let Some(name) = r.host.1 {
        super::insert_host(conn, r.host.0, name, r.region).await?;
    }
    let json = |v: Result<String, serde_json::Error>| v.map_err(|e| DbErr::Custom(e.to_string()));
    conn.execute_raw(stmt(
        b,
        "INSERT INTO routes (id, host_id, region_code, title_zh, title_en, description_zh,
                             description_en, itinerary, price_fen, cancellation_policy, status,
                             search_text)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'DRAFT', $11)",
        vec![
            uuid_value(b, r.id.0),
            uuid_value(b, r.host.0.0),
            r.region.to_string().into(),
            r.texts[0].into(),
            r.texts[1].into(),
            r.texts[2].into(),
            r.texts[3].into(),
            json(serde_json::to_string(r.itinerary))?.into(),
            r.price.get().into(),
            super::policy_column(r.policy)?,
            search_text(&r.texts).into(),
        ],
    ))
    .await?;
    insert_route_regions(conn, r.id, r.region, r.itinerary).await
}

/// Records the regions a route starts in or visits (search by sub-tree).
async fn insert_route_regions<C: ConnectionTrait>(
    conn: &C,
    id: RouteId,
    home: RegionCode,
    itinerary: &[ItineraryDay],
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    let mut visited: Vec<RegionCode> = itinerary
        .iter()
        .flat_map(|d| d.regions.iter().copied())
        .chain([home])
        .collect();
    visited.sort_by_key(|c| c.to_string());
    visited.dedup();
    for code in visited {
        conn.execute_raw(stmt(
            b,
            "INSERT INTO route_regions (route_id, region_code) VALUES ($1, $2)",
            vec![uuid_value(b, id.0), code.to_string().into()],
        ))
        .await?;
    }
    Ok(())
}

/// A route without departures, its row locked until the transaction ends
/// (on SQLite the one connection serialises writers anyway).
pub async fn route_for_update<C: ConnectionTrait>(
    conn: &C,
    id: RouteId,
) -> Result<Option<RouteView>, DbErr> {
    super::lock_row(conn, "routes", id.0).await?;
    route(conn, id).await
}

/// Writes a route's texts, itinerary and price, its refund rule when one
/// is given (none keeps the stored one), and the regions it visits when
/// the itinerary `moved`.
pub async fn update_route<C: ConnectionTrait>(
    conn: &C,
    r: &RouteView,
    policy: Option<&CancellationPolicy>,
    moved: bool,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    let json = |e: serde_json::Error| DbErr::Custom(format!("routes: {e}"));
    conn.execute_raw(stmt(
        b,
        "UPDATE routes SET title_zh = $2, title_en = $3, description_zh = $4, description_en = $5,
                itinerary = $6, price_fen = $7, cancellation_policy = COALESCE($8, cancellation_policy),
                search_text = $9
         WHERE id = $1",
        vec![
            uuid_value(b, r.id.0),
            r.title_zh.clone().into(),
            r.title_en.clone().into(),
            r.description_zh.clone().into(),
            r.description_en.clone().into(),
            serde_json::to_string(&r.itinerary).map_err(json)?.into(),
            r.price.get().into(),
            super::policy_column(policy)?,
            search_text(&[
                &r.title_zh,
                &r.title_en,
                &r.description_zh,
                &r.description_en,
            ])
            .into(),
        ],
    ))
    .await?;
    if moved {
        conn.execute_raw(stmt(
            b,
            "DELETE FROM route_regions WHERE route_id = $1",
            vec![uuid_value(b, r.id.0)],
        ))
        .await?;
        insert_route_regions(conn, r.id, r.region_code, &r.itinerary).await?;
    }
    Ok(())
}

/// Inserts a departure; a second one on the same day is a unique violation.
pub async fn insert_departure<C: ConnectionTrait>(
    conn: &C,
    d: &DepartureView,
    price_override: Option<Fen>,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "INSERT INTO departures (id, route_id, starts_on, last_booking_day, seats, available, price_fen)
         VALUES ($1, $2, $3, $4, $5, $5, $6)",
        vec![
            uuid_value(b, d.id.0),
            uuid_value(b, d.route_id.0),
            d.starts_on.into(),
            d.last_booking_day.into(),
            d.seats.into(),
            price_override.map(Fen::get).into(),
        ],
    ))
    .await?;
    Ok(())
}

/// Sets a route's sale state.
pub async fn set_status<C: ConnectionTrait>(
    conn: &C,
    route: RouteId,
    status: RouteStatus,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "UPDATE routes SET status = $2 WHERE id = $1",
        vec![uuid_value(b, route.0), status.as_str().into()],
    ))
    .await?;
    Ok(())
}

const ROUTE_COLUMNS: &str = "r.id, r.host_id, h.name AS host_name, r.region_code, r.title_zh,
    r.title_en, r.description_zh, r.description_en, r.itinerary, r.price_fen,
    r.cancellation_policy, r.status, r.certified_until";

fn route_from_row(row: &QueryResult) -> Result<RouteView, DbErr> {
    let custom =
        |what: &str, e: &dyn std::fmt::Display| DbErr::Custom(format!("routes.{what}: {e}"));
    let itinerary: String = row.try_get("", "itinerary")?;
    let status: String = row.try_get("", "status")?;
    Ok(RouteView {
        id: RouteId(row_uuid(row, "id")?),
        host_id: HostId(row_uuid(row, "host_id")?),
        host_name: row.try_get("", "host_name")?,
        region_code: row_region(row, "region_code")?,
        title_zh: row.try_get("", "title_zh")?,
        title_en: row.try_get("", "title_en")?,
        description_zh: row.try_get("", "description_zh")?,
        description_en: row.try_get("", "description_en")?,
        itinerary: serde_json::from_str(&itinerary).map_err(|e| custom("itinerary", &e))?,
        price: Fen(row.try_get("", "price_fen")?),
        cancellation_policy: match row.try_get::<Option<String>>("", "cancellation_policy")? {
            Some(p) => serde_json::from_str(&p).map_err(|e| custom("cancellation_policy", &e))?,
            None => CancellationPolicy::default(),
        },
        status: RouteStatus::parse(&status).ok_or_else(|| custom("status", &status))?,
        certified_until: row.try_get("", "certified_until")?,
        departures: Vec::new(),
    })
}

const DEPARTURE_COLUMNS: &str = "d.id, d.route_id, d.starts_on, d.last_booking_day, d.seats,
    d.available, COALESCE(d.price_fen, r.price_fen) AS price_fen, d.cancelled_at, d.cancel_reason";

fn departure_from_row(row: &QueryResult) -> Result<DepartureView, DbErr> {
    let cancelled_at: Option<chrono::DateTime<chrono::Utc>> = row.try_get("", "cancelled_at")?;
    // A cancelled departure has nothing to sell, whatever its seats hold
    // while its bookings are being released.
    let seats_left = match cancelled_at {
        Some(_) => 0,
        None => u32::try_from(row.try_get::<i32>("", "available")?).unwrap_or(0),
    };
    Ok(DepartureView {
        id: DepartureId(row_uuid(row, "id")?),
        route_id: RouteId(row_uuid(row, "route_id")?),
        starts_on: row.try_get("", "starts_on")?,
        last_booking_day: row.try_get("", "last_booking_day")?,
        seats: u32::try_from(row.try_get::<i32>("", "seats")?).unwrap_or(0),
        seats_left,
        price: Fen(row.try_get("", "price_fen")?),
        cancelled_at,
        cancel_reason: row.try_get("", "cancel_reason")?,
    })
}

/// A route without departures.
pub async fn route<C: ConnectionTrait>(conn: &C, id: RouteId) -> Result<Option<RouteView>, DbErr> {
    Ok(routes(conn, &[id]).await?.pop())
}

/// Routes without departures, in one query; those that exist, in no
/// particular order.
pub async fn routes<C: ConnectionTrait>(
    conn: &C,
    ids: &[RouteId],
) -> Result<Vec<RouteView>, DbErr> {
    let rows = shared::db::rows_with_ids(
        conn,
        &format!(
            "SELECT {ROUTE_COLUMNS} FROM routes r JOIN hosts h ON h.id = r.host_id
             WHERE r.id IN ({{ids}})"
        ),
        ids.iter().map(|id| id.0),
    )
    .await?;
    rows.iter().map(route_from_row).collect()
}

/// A route's departures in `[from, to]`, by day.
pub async fn departures<C: ConnectionTrait>(
    conn: &C,
    route: RouteId,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<DepartureView>, DbErr> {
    departures_of(conn, &[route], from, to).await
}

/// The departures of several routes leaving in `[from, to]`, in one query.
pub async fn departures_of<C: ConnectionTrait>(
    conn: &C,
    routes: &[RouteId],
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<DepartureView>, DbErr> {
    if routes.is_empty() {
        return Ok(Vec::new());
    }
    let b = conn.get_database_backend();
    let mut values: Vec<Value> = vec![from.into(), to.into()];
    values.extend(routes.iter().map(|r| uuid_value(b, r.0)));
    let rows = conn
        .query_all_raw(stmt(
            b,
            &format!(
                "SELECT {DEPARTURE_COLUMNS} FROM departures d JOIN routes r ON r.id = d.route_id
                 WHERE d.starts_on >= $1 AND d.starts_on <= $2 AND d.route_id IN ({})
                 ORDER BY d.starts_on, d.id",
                shared::db::placeholders(3, routes.len())
            ),
            values,
        ))
        .await?;
    rows.iter().map(departure_from_row).collect()
}

/// A departure and its route (without other departures).
pub async fn departure<C: ConnectionTrait>(
    conn: &C,
    id: DepartureId,
) -> Result<Option<(RouteView, DepartureView)>, DbErr> {
    let b = conn.get_database_backend();
    let row = conn
        .query_one_raw(stmt(
            b,
            &format!(
                "SELECT {DEPARTURE_COLUMNS}, r.id AS rid FROM departures d
                 JOIN routes r ON r.id = d.route_id WHERE d.id = $1"
            ),
            vec![uuid_value(b, id.0)],
        ))
        .await?;
    let Some(row) = row else { return Ok(None) };
    let departure = departure_from_row(&row)?;
    Ok(route(conn, departure.route_id)
        .await?
        .map(|route| (route, departure)))
}

/// A departure's price after a change: as it was, its own, or the route's.
#[derive(Debug, Clone, Copy)]
pub enum PriceChange {
    /// As it was.
    Keep,
    /// A price of its own.
    Own(Fen),
    /// The route's price (none of its own).
    Route,
}

/// Changes a departure in one statement: its seats (what is held or sold
/// stays taken; fewer seats than that violate the check), its price, its
/// last booking day; None leaves each as it is. False when it was cancelled
/// (meanwhile, as the caller read it before): it is left as it is.
pub async fn update_departure<C: ConnectionTrait>(
    conn: &C,
    id: DepartureId,
    seats: Option<u32>,
    price: PriceChange,
    last_booking_day: Option<NaiveDate>,
) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    let (own, to_route) = match price {
        PriceChange::Keep => (None, false),
        PriceChange::Own(p) => (Some(p.get()), false),
        PriceChange::Route => (None, true),
    };
    conn.execute_raw(stmt(
        b,
        "UPDATE departures SET available = available + (COALESCE($2, seats) - seats),
                seats = COALESCE($2, seats),
                price_fen = CASE WHEN $5 THEN NULL ELSE COALESCE($3, price_fen) END,
                last_booking_day = COALESCE($4, last_booking_day)
         WHERE id = $1 AND cancelled_at IS NULL",
        vec![
            uuid_value(b, id.0),
            seats.map(i64::from).into(),
            own.into(),
            last_booking_day.into(),
            to_route.into(),
        ],
    ))
    .await
    .map(|done| done.rows_affected() == 1)
}

/// Locks the holds on departure `id` that its cancellation announces, in
/// one order, before the departure's row is: a release, the sweeper and a
/// late confirmation lock a hold and then the departure (to give or take
/// its seats), so taking the departure first and the holds after made a
/// circle with each of them, which PostgreSQL broke by failing one side.
pub async fn lock_holds_on<C: ConnectionTrait>(conn: &C, id: DepartureId) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    if b != sea_orm::DbBackend::Postgres {
        return Ok(());
    }
    conn.execute_raw(stmt(
        b,
        "SELECT booking_id FROM holds
         WHERE departure_id = $1 AND state IN ('HELD', 'COMMITTED', 'EXPIRED')
         ORDER BY booking_id FOR UPDATE",
        vec![uuid_value(b, id.0)],
    ))
    .await?;
    Ok(())
}

/// Cancels a departure that runs: true when this call cancelled it (false:
/// it already was).
pub async fn cancel_departure<C: ConnectionTrait>(
    conn: &C,
    id: DepartureId,
    reason: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    let done = conn
        .execute_raw(stmt(
            b,
            // Its price is kept as it was when it was called off: a later
            // change of the route's price is not this departure's.
            "UPDATE departures SET cancelled_at = $2, cancel_reason = $3,
                 price_fen = COALESCE(price_fen,
                                      (SELECT r.price_fen FROM routes r WHERE r.id = route_id))
             WHERE id = $1 AND cancelled_at IS NULL",
            vec![uuid_value(b, id.0), at.into(), reason.into()],
        ))
        .await?;
    Ok(done.rows_affected() == 1)
}

/// The bookings whose holds on departure `id` (being cancelled) still
/// stand or may come back (held, sold, or expired and so paid late), by
/// id; marked as announced with its cancellation (a payout run keeps their
/// hosts' shares back until they are refunded).
pub async fn announce_bookings_on<C: ConnectionTrait>(
    conn: &C,
    id: DepartureId,
) -> Result<Vec<shared::ids::BookingId>, DbErr> {
    let b = conn.get_database_backend();
    let rows = conn
        .query_all_raw(stmt(
            b,
            "UPDATE holds SET departure_cancelled = TRUE
             WHERE departure_id = $1 AND state IN ('HELD', 'COMMITTED', 'EXPIRED')
             RETURNING booking_id",
            vec![uuid_value(b, id.0)],
        ))
        .await?;
    let mut bookings = rows
        .iter()
        .map(|r| row_uuid(r, "booking_id").map(shared::ids::BookingId))
        .collect::<Result<Vec<_>, _>>()?;
    bookings.sort_by_key(|b| b.0);
    Ok(bookings)
}

/// The bookings whose seats the cancellation of a departure cancelled at
/// or after `since` announced, whatever became of their holds since.
pub async fn bookings_on_cancelled<C: ConnectionTrait>(
    conn: &C,
    since: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<shared::ids::BookingId>, DbErr> {
    let b = conn.get_database_backend();
    let rows = conn
        .query_all_raw(stmt(
            b,
            "SELECT h.booking_id FROM holds h JOIN departures d ON d.id = h.departure_id
             WHERE d.cancelled_at >= $1 AND h.departure_cancelled",
            vec![since.into()],
        ))
        .await?;
    rows.iter()
        .map(|r| row_uuid(r, "booking_id").map(shared::ids::BookingId))
        .collect()
}

/// Takes `seats` seats of a departure that runs, of a route on sale, or
/// none: what they cost at the take (None when not taken).
pub async fn take_seats<C: ConnectionTrait>(
    conn: &C,
    departure: DepartureId,
    seats: u32,
) -> Result<Option<Fen>, DbErr> {
    let b = conn.get_database_backend();
    // The route's row shared until the transaction ends (PostgreSQL): a
    // `publishRoute(false)` committing meanwhile is waited for, then seen.
    let on_sale = match b {
        sea_orm::DbBackend::Postgres => "r.status = 'PUBLISHED' FOR SHARE",
        _ => "r.status = 'PUBLISHED'",
    };
    let Some(taken) = conn
        .query_one_raw(stmt(
            b,
            &format!(
                "UPDATE departures SET available = available - $2
                 WHERE id = $1 AND available >= $2 AND cancelled_at IS NULL
                   AND EXISTS (SELECT 1 FROM routes r WHERE r.id = departures.route_id
                               AND {on_sale})
                 RETURNING price_fen, route_id"
            ),
            vec![uuid_value(b, departure.0), seats.into()],
        ))
        .await?
    else {
        return Ok(None);
    };
    // Its own price is read under the row's lock; its route's after the
    // take, as the route stands now.
    let per_seat = match taken.try_get::<Option<i64>>("", "price_fen")? {
        Some(own) => own,
        None => conn
            .query_one_raw(stmt(
                b,
                "SELECT price_fen FROM routes WHERE id = $1",
                vec![uuid_value(b, row_uuid(&taken, "route_id")?)],
            ))
            .await?
            .ok_or_else(|| DbErr::Custom("a departure's route vanished".into()))?
            .try_get("", "price_fen")?,
    };
    Ok(Some(Fen(per_seat * i64::from(seats))))
}

/// Gives `seats` seats back to a departure.
pub async fn return_seats<C: ConnectionTrait>(
    conn: &C,
    departure: DepartureId,
    seats: u32,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "UPDATE departures SET available = available + $2 WHERE id = $1",
        vec![uuid_value(b, departure.0), seats.into()],
    ))
    .await?;
    Ok(())
}

/// What a route search filters by.
pub struct RouteFilter<'a> {
    /// Code prefix of the region sub-tree ('' for everywhere).
    pub prefix: &'a str,
    /// Departure window `[from, to]`.
    pub from: NaiveDate,
    /// See `from`.
    pub to: NaiveDate,
    /// Today in China: departures past their last booking day are skipped.
    pub today: NaiveDate,
    /// Seats needed.
    pub travelers: u32,
    /// Highest price per person.
    pub max_price: Option<Fen>,
    /// Only routes certified today.
    pub certified_only: bool,
    /// Lower-cased words to find in titles and descriptions, each
    /// somewhere, in any order.
    pub text: Option<&'a str>,
}

impl RouteFilter<'_> {
    /// The words of `text`, each to be found (in any order).
    fn words(&self) -> Vec<&str> {
        let mut words: Vec<&str> = self.text.unwrap_or("").split_whitespace().collect();
        words.sort_unstable();
        words.dedup();
        words
    }

    /// The departures on sale that the filters match, whatever seats they
    /// have left, over `r` (routes) and `d` (departures): parameters `$1`–
    /// `$4`, `$6`, `$7` and one from `$8` on per word of the text.
    fn on_sale(&self) -> String {
        let mut sql = String::from(
            "r.status = 'PUBLISHED'
            AND EXISTS (SELECT 1 FROM route_regions rr WHERE rr.route_id = r.id AND rr.region_code LIKE $1)
            AND d.starts_on >= $2 AND d.starts_on <= $3 AND d.last_booking_day >= $4
            AND d.cancelled_at IS NULL
            AND COALESCE(d.price_fen, r.price_fen) <= $6
            AND (NOT $7 OR (r.certified_until IS NOT NULL AND r.certified_until >= $4))",
        );
        for n in 0..self.words().len() {
            sql.push_str(&format!(" AND r.search_text LIKE ${} ESCAPE '\\'", 8 + n));
        }
        sql
    }

    /// The departures that match, seats included.
    fn matching(&self) -> String {
        format!("d.available >= $5 AND {}", self.on_sale())
    }

    /// The values of [`RouteFilter::on_sale`]'s parameters, `$1` on; a
    /// query's own follow them.
    fn values(&self) -> Vec<Value> {
        let mut values: Vec<Value> = vec![
            format!("{}%", self.prefix).into(),
            self.from.into(),
            self.to.into(),
            self.today.into(),
            i64::from(self.travelers).into(),
            self.max_price.map(Fen::get).unwrap_or(i64::MAX).into(),
            self.certified_only.into(),
        ];
        values.extend(
            self.words()
                .into_iter()
                .map(|w| Value::from(format!("%{}%", escape_like(w)))),
        );
        values
    }
}

/// LIKE wildcards in the traveler's words are matched as themselves, not
/// interpreted: searching `%` finds titles with a `%`, not every route.
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Routes with a matching departure, by the earliest of their departures
/// that match but for the seats left, then id; `after` is the (day, route)
/// of the last route seen. Each route carries its matching departures.
///
/// Seats are left out of the order so that bookings do not move a route
/// between pages: ordered by the first departure with seats enough, a
/// route whose early departures filled while a client paged came again on
/// a later page, and one whose early departure freed up was skipped. What
/// moves a route now is an admin's change (a departure added, cancelled or
/// repriced) or a cut-off passing.
pub async fn search<C: ConnectionTrait>(
    conn: &C,
    filter: &RouteFilter<'_>,
    first: u32,
    after: Option<(NaiveDate, uuid::Uuid)>,
) -> Result<(Vec<(RouteView, String)>, bool), DbErr> {
    let b = conn.get_database_backend();
    let (after_day, after_id) = after.unwrap_or((NaiveDate::default(), uuid::Uuid::nil()));
    let mut values = filter.values();
    let (day, id, limit) = (values.len() + 1, values.len() + 2, values.len() + 3);
    values.extend([
        after_day.into(),
        uuid_value(b, after_id),
        (i64::from(first) + 1).into(),
    ]);
    // Ordered by the departures that match but for the seats left.
    let rows = conn
        .query_all_raw(stmt(
            b,
            &format!(
                "SELECT * FROM (
                    SELECT r.id AS route_id, MIN(d.starts_on) AS first_day
                    FROM routes r JOIN departures d ON d.route_id = r.id
                    WHERE {}
                    GROUP BY r.id
                    HAVING MAX(CASE WHEN d.available >= $5 THEN 1 ELSE 0 END) = 1
                 ) AS o
                 WHERE o.first_day > ${day} OR (o.first_day = ${day} AND o.route_id > ${id})
                 ORDER BY o.first_day, o.route_id
                 LIMIT ${limit}",
                filter.on_sale()
            ),
            values,
        ))
        .await?;
    let (page, has_next) = shared::db::page(&rows, first, |row| {
        Ok((
            row_uuid(row, "route_id")?,
            row.try_get::<NaiveDate>("", "first_day")?,
        ))
    })?;
    if page.is_empty() {
        return Ok((Vec::new(), has_next));
    }
    // The page's routes and their matching departures: two queries, not two per route.
    let ids: Vec<Value> = page.iter().map(|(id, _)| uuid_value(b, *id)).collect();
    let list = |from: usize| shared::db::placeholders(from, ids.len());
    let routes = conn
        .query_all_raw(stmt(
            b,
            &format!(
                "SELECT {ROUTE_COLUMNS} FROM routes r JOIN hosts h ON h.id = r.host_id
                 WHERE r.id IN ({})",
                list(1)
            ),
            ids.clone(),
        ))
        .await?;
    let mut routes = routes
        .iter()
        .map(|row| route_from_row(row).map(|r| (r.id.0, r)))
        .collect::<Result<std::collections::HashMap<_, _>, DbErr>>()?;
    let mut values = filter.values();
    let first_id = values.len() + 1;
    values.extend(ids.iter().cloned());
    let departures = conn
        .query_all_raw(stmt(
            b,
            &format!(
                "SELECT {DEPARTURE_COLUMNS} FROM departures d JOIN routes r ON r.id = d.route_id
                 WHERE d.route_id IN ({}) AND {} ORDER BY d.starts_on",
                list(first_id),
                filter.matching()
            ),
            values,
        ))
        .await?;
    for row in &departures {
        let departure = departure_from_row(row)?;
        if let Some(route) = routes.get_mut(&departure.route_id.0) {
            route.departures.push(departure);
        }
    }
    Ok((
        page.into_iter()
            .filter_map(|(id, first_day)| {
                routes
                    .remove(&id)
                    .map(|route| (route, format!("{first_day}:{id}")))
            })
            .collect(),
        has_next,
    ))
}

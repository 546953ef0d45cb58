//! Certification (扶贫产品认定) of homestays and routes.
//!
//! A listing's `certified_until` is always the latest `valid_until` among
//! its CERTIFIED certifications ([`refresh_listing`]), so search and the
//! hold snapshot read one column, and expiry needs no sweeper: a listing is
//! certified on the days up to and including `certified_until`.

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{ConnectionTrait, DbErr, QueryResult};
use sea_orm_migration::{MigrationName, MigrationTrait, SchemaManager};
use shared::db::{row_region, row_uuid, run_ddl, uuid_value};
use shared::outbox::stmt;
use shared::region::RegionCode;
use shared::rpcs::{CertificationState, CertificationView, Objection};
use uuid::Uuid;

pub(super) struct Certifications;

impl MigrationName for Certifications {
    fn name(&self) -> &str {
        "m20261125_000002_certifications"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Certifications {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(
            manager,
            &[
                "ALTER TABLE homestays ADD COLUMN certified_until DATE NULL",
                "CREATE TABLE certifications (
                    id UUID PRIMARY KEY,
                    listing_id UUID NOT NULL,
                    listing_kind TEXT NOT NULL,
                    listing_title TEXT NOT NULL,
                    region_code TEXT NOT NULL REFERENCES regions (code),
                    state TEXT NOT NULL,
                    statement TEXT NOT NULL,
                    applied_by UUID NOT NULL,
                    applied_at TIMESTAMPTZ NOT NULL,
                    notice_ends_on DATE NULL,
                    valid_until DATE NULL,
                    decision_note TEXT,
                    decided_by UUID)",
                // One open application per listing at a time.
                "CREATE UNIQUE INDEX certifications_one_open ON certifications (listing_id)
                    WHERE state IN ('APPLIED', 'PUBLIC_NOTICE')",
                "CREATE INDEX certifications_by_listing ON certifications (listing_id, state)",
                "CREATE TABLE certification_objections (
                    id BIGSERIAL PRIMARY KEY,
                    certification_id UUID NOT NULL REFERENCES certifications (id),
                    account_id UUID NOT NULL,
                    text TEXT NOT NULL,
                    created_at TIMESTAMPTZ NOT NULL)",
            ],
        )
        .await
    }
}

/// Evidence links on applications, and who objected (read back).
pub(super) struct Evidence;

impl MigrationName for Evidence {
    fn name(&self) -> &str {
        "m20261202_000002_certification_evidence"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Evidence {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(
            manager,
            &["ALTER TABLE certifications ADD COLUMN evidence TEXT NOT NULL DEFAULT '[]'"],
        )
        .await
    }
}

/// The day an application was accepted for public notice: a retry of the
/// acceptance sent after midnight is known by it (`accepted_on`).
pub(super) struct AcceptedOn;

impl MigrationName for AcceptedOn {
    fn name(&self) -> &str {
        "m20261207_000001_certification_accepted_on"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AcceptedOn {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(
            manager,
            &["ALTER TABLE certifications ADD COLUMN accepted_on DATE"],
        )
        .await
    }
}

/// The day certification `id` was accepted for public notice (China
/// time); None before it was, or when an older release accepted it.
pub async fn accepted_on<C: ConnectionTrait>(
    conn: &C,
    id: Uuid,
) -> Result<Option<NaiveDate>, DbErr> {
    let b = conn.get_database_backend();
    Ok(conn
        .query_one_raw(stmt(
            b,
            "SELECT accepted_on FROM certifications WHERE id = $1",
            vec![uuid_value(b, id)],
        ))
        .await?
        .map(|r| r.try_get::<Option<NaiveDate>>("", "accepted_on"))
        .transpose()?
        .flatten())
}

/// A listing that can be certified.
pub struct Listing {
    /// HOMESTAY or ROUTE.
    pub kind: &'static str,
    /// Its name.
    pub title: String,
    /// Where it is.
    pub region: RegionCode,
    /// On sale (a homestay published, a route PUBLISHED).
    pub on_sale: bool,
}

/// The homestay or route with this id.
pub async fn listing<C: ConnectionTrait>(conn: &C, id: Uuid) -> Result<Option<Listing>, DbErr> {
    let b = conn.get_database_backend();
    let row = conn
        .query_one_raw(stmt(
            b,
            "SELECT 'HOMESTAY' AS kind, name AS title, region_code, published AS on_sale
             FROM homestays WHERE id = $1
             UNION ALL
             SELECT 'ROUTE' AS kind, title_zh AS title, region_code,
                    status = 'PUBLISHED' AS on_sale
             FROM routes WHERE id = $1",
            vec![uuid_value(b, id)],
        ))
        .await?;
    let Some(row) = row else { return Ok(None) };
    let kind: String = row.try_get("", "kind")?;
    Ok(Some(Listing {
        kind: if kind == "ROUTE" { "ROUTE" } else { "HOMESTAY" },
        title: row.try_get("", "title")?,
        region: row_region(&row, "region_code")?,
        on_sale: row.try_get("", "on_sale")?,
    }))
}

/// Files an application; a unique violation means one is open already.
pub async fn insert<C: ConnectionTrait>(
    conn: &C,
    id: Uuid,
    listing_id: Uuid,
    listing: &Listing,
    (statement, evidence): (&str, &[String]),
    by: Uuid,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    let evidence = serde_json::to_string(evidence).map_err(|e| DbErr::Custom(e.to_string()))?;
    conn.execute_raw(stmt(
        b,
        "INSERT INTO certifications (id, listing_id, listing_kind, listing_title, region_code, state,
                                     statement, applied_by, applied_at, evidence)
         VALUES ($1, $2, $3, $4, $5, 'APPLIED', $6, $7, $8, $9)",
        vec![
            uuid_value(b, id),
            uuid_value(b, listing_id),
            listing.kind.into(),
            listing.title.clone().into(),
            listing.region.to_string().into(),
            statement.into(),
            uuid_value(b, by),
            Utc::now().into(),
            evidence.into(),
        ],
    ))
    .await?;
    Ok(())
}

/// The open application (applied for, or on public notice) of `listing_id`
/// that `by` filed with this statement and evidence: the one a retry of
/// its filing (its answer lost) finds.
pub async fn open_as_filed<C: ConnectionTrait>(
    conn: &C,
    listing_id: Uuid,
    (statement, evidence): (&str, &[String]),
    by: Uuid,
) -> Result<Option<Uuid>, DbErr> {
    let b = conn.get_database_backend();
    let evidence = serde_json::to_string(evidence).map_err(|e| DbErr::Custom(e.to_string()))?;
    conn.query_one_raw(stmt(
        b,
        "SELECT id FROM certifications
         WHERE listing_id = $1 AND state IN ('APPLIED', 'PUBLIC_NOTICE')
           AND statement = $2 AND evidence = $3 AND applied_by = $4",
        vec![
            uuid_value(b, listing_id),
            statement.into(),
            evidence.into(),
            uuid_value(b, by),
        ],
    ))
    .await?
    .map(|r| shared::db::row_uuid(&r, "id"))
    .transpose()
}

/// Demonstration data only: records the public notice of `id` as ending on
/// `on`, as though its days had passed.
pub async fn end_notice_for_demo<C: ConnectionTrait>(
    conn: &C,
    id: Uuid,
    on: NaiveDate,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "UPDATE certifications SET notice_ends_on = $2 WHERE id = $1 AND state = 'PUBLIC_NOTICE'",
        vec![uuid_value(b, id), on.into()],
    ))
    .await?;
    Ok(())
}

/// What a step changes.
#[derive(Default)]
pub struct Change {
    /// The end of the public notice.
    pub notice_ends_on: Option<NaiveDate>,
    /// The day it was accepted for public notice.
    pub accepted_on: Option<NaiveDate>,
    /// The last valid day.
    pub valid_until: Option<NaiveDate>,
    /// The decision's note.
    pub note: Option<String>,
}

/// Moves a certification from `from` to `to`: false when it was not in
/// `from` any more (someone else decided first).
pub async fn transition<C: ConnectionTrait>(
    conn: &C,
    id: Uuid,
    from: CertificationState,
    to: CertificationState,
    change: Change,
    by: Uuid,
) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    let moved = conn
        .execute_raw(stmt(
            b,
            "UPDATE certifications SET state = $3,
                 notice_ends_on = COALESCE($4, notice_ends_on),
                 valid_until = COALESCE($5, valid_until),
                 decision_note = COALESCE($6, decision_note),
                 decided_by = $7,
                 accepted_on = COALESCE($8, accepted_on)
             WHERE id = $1 AND state = $2",
            vec![
                uuid_value(b, id),
                from.as_str().into(),
                to.as_str().into(),
                change.notice_ends_on.into(),
                change.valid_until.into(),
                change.note.into(),
                uuid_value(b, by),
                change.accepted_on.into(),
            ],
        ))
        .await?;
    Ok(moved.rows_affected() == 1)
}

/// Revokes every other certification of the listing in force (CERTIFIED
/// and valid on `today`: one that lapsed stays EXPIRED) with the same
/// note: a revocation takes the listing's badge, not one certificate of it
/// (an earlier one, still valid, would keep it certified). `ids` is (the
/// listing, the certification revoked). Waits for a certificate another
/// step holds: the caller holds the listing, which every other step takes
/// first (it passed such rows over, and left a renewal whose certify was
/// waiting for the listing CERTIFIED).
pub async fn revoke_others<C: ConnectionTrait>(
    conn: &C,
    (listing_id, revoked): (Uuid, Uuid),
    note: Option<&str>,
    by: Uuid,
    today: NaiveDate,
) -> Result<u64, DbErr> {
    let b = conn.get_database_backend();
    let done = conn
        .execute_raw(stmt(
            b,
            "UPDATE certifications SET state = 'REVOKED',
                 decision_note = COALESCE($3, decision_note), decided_by = $4
             WHERE listing_id = $1 AND id <> $2 AND state = 'CERTIFIED' AND valid_until >= $5",
            vec![
                uuid_value(b, listing_id),
                uuid_value(b, revoked),
                note.map(str::to_owned).into(),
                uuid_value(b, by),
                today.into(),
            ],
        ))
        .await?;
    Ok(done.rows_affected())
}

/// Whether `by` has objected to the certification already.
pub async fn has_objected<C: ConnectionTrait>(conn: &C, id: Uuid, by: Uuid) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    Ok(conn
        .query_one_raw(stmt(
            b,
            "SELECT 1 AS one FROM certification_objections
             WHERE certification_id = $1 AND account_id = $2",
            vec![uuid_value(b, id), uuid_value(b, by)],
        ))
        .await?
        .is_some())
}

/// How many objections a certification has.
pub async fn objection_count<C: ConnectionTrait>(conn: &C, id: Uuid) -> Result<u64, DbErr> {
    let b = conn.get_database_backend();
    shared::db::count(
        conn,
        "certification_objections WHERE certification_id = $1",
        vec![uuid_value(b, id)],
    )
    .await
}

/// Records an objection.
pub async fn object<C: ConnectionTrait>(
    conn: &C,
    id: Uuid,
    by: Uuid,
    text: &str,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "INSERT INTO certification_objections (certification_id, account_id, text, created_at)
         VALUES ($1, $2, $3, $4)",
        vec![
            uuid_value(b, id),
            uuid_value(b, by),
            text.into(),
            Utc::now().into(),
        ],
    ))
    .await?;
    Ok(())
}

/// Sets the listing's `certified_until` to the latest validity among its
/// CERTIFIED certifications (none: not certified).
pub async fn refresh_listing<C: ConnectionTrait>(
    conn: &C,
    listing_id: Uuid,
    kind: &str,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    let table = listing_table(kind);
    conn.execute_raw(stmt(
        b,
        &format!(
            "UPDATE {table} SET certified_until = (
                SELECT MAX(valid_until) FROM certifications
                WHERE listing_id = $1 AND state = 'CERTIFIED')
             WHERE id = $1"
        ),
        vec![uuid_value(b, listing_id)],
    ))
    .await?;
    Ok(())
}

/// The columns of `certifications` [`view`] reads, named (`shared::db`
/// says why).
const CERTIFICATION_COLUMNS: &str = "id, listing_id, listing_kind, listing_title, region_code, \
     state, statement, evidence, applied_at, notice_ends_on, valid_until, decision_note";

fn view(row: &QueryResult, today: NaiveDate) -> Result<CertificationView, DbErr> {
    let state: String = row.try_get("", "state")?;
    let mut state = CertificationState::parse(&state)
        .ok_or_else(|| DbErr::Custom(format!("certifications.state {state}")))?;
    let valid_until: Option<NaiveDate> = row.try_get("", "valid_until")?;
    if state == CertificationState::Certified && valid_until.is_some_and(|d| d < today) {
        state = CertificationState::Expired;
    }
    Ok(CertificationView {
        id: row_uuid(row, "id")?,
        listing_id: row_uuid(row, "listing_id")?,
        listing_kind: row.try_get("", "listing_kind")?,
        listing_title: row.try_get("", "listing_title")?,
        region_code: row_region(row, "region_code")?,
        state,
        statement: row.try_get("", "statement")?,
        evidence: serde_json::from_str(&row.try_get::<String>("", "evidence")?)
            .map_err(|e| DbErr::Custom(format!("certifications.evidence: {e}")))?,
        applied_at: row.try_get::<DateTime<Utc>>("", "applied_at")?,
        notice_ends_on: row.try_get("", "notice_ends_on")?,
        objections: Vec::new(),
        valid_until,
        decision_note: row.try_get("", "decision_note")?,
    })
}

/// Fills in the objections of `certifications`, in one query.
async fn with_objections<C: ConnectionTrait>(
    conn: &C,
    mut certifications: Vec<CertificationView>,
) -> Result<Vec<CertificationView>, DbErr> {
    if certifications.is_empty() {
        return Ok(certifications);
    }
    let b = conn.get_database_backend();
    let placeholders: Vec<String> = (1..=certifications.len())
        .map(|i| format!("${i}"))
        .collect();
    let rows = conn
        .query_all_raw(stmt(
            b,
            &format!(
                "SELECT certification_id, account_id, text, created_at FROM certification_objections
                 WHERE certification_id IN ({}) ORDER BY id",
                placeholders.join(", ")
            ),
            certifications.iter().map(|c| uuid_value(b, c.id)).collect(),
        ))
        .await?;
    for r in &rows {
        let id = row_uuid(r, "certification_id")?;
        if let Some(c) = certifications.iter_mut().find(|c| c.id == id) {
            c.objections.push(Objection {
                text: r.try_get("", "text")?,
                at: r.try_get("", "created_at")?,
                by: Some(shared::ids::AccountId(row_uuid(r, "account_id")?)),
            });
        }
    }
    Ok(certifications)
}

/// Locks a certification row for the rest of the transaction (PostgreSQL;
/// SQLite has one writer anyway), so a step and an objection never cross.
pub async fn lock<C: ConnectionTrait>(conn: &C, id: Uuid) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    if b == sea_orm::DbBackend::Postgres {
        conn.execute_raw(stmt(
            b,
            "SELECT id FROM certifications WHERE id = $1 FOR UPDATE",
            vec![uuid_value(b, id)],
        ))
        .await?;
    }
    Ok(())
}

/// The table of a listing of `kind` (`HOMESTAY` or `ROUTE`).
fn listing_table(kind: &str) -> &'static str {
    if kind == "ROUTE" {
        "routes"
    } else {
        "homestays"
    }
}

/// Locks the listing's row (PostgreSQL) for the rest of the transaction:
/// the steps on one listing's certifications then run one at a time, so the
/// listing's `certified_until`, recomputed at the end of each, is never
/// computed from a state another step is changing (two revocations at once
/// left a listing certified with every certificate revoked).
pub async fn lock_listing<C: ConnectionTrait>(
    conn: &C,
    listing_id: Uuid,
    kind: &str,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    if b == sea_orm::DbBackend::Postgres {
        let table = listing_table(kind);
        conn.execute_raw(stmt(
            b,
            &format!("SELECT id FROM {table} WHERE id = $1 FOR NO KEY UPDATE"),
            vec![uuid_value(b, listing_id)],
        ))
        .await?;
    }
    Ok(())
}

/// One certification with its objections.
pub async fn get<C: ConnectionTrait>(
    conn: &C,
    id: Uuid,
    today: NaiveDate,
) -> Result<Option<CertificationView>, DbErr> {
    let b = conn.get_database_backend();
    let row = conn
        .query_one_raw(stmt(
            b,
            &format!("SELECT {CERTIFICATION_COLUMNS} FROM certifications WHERE id = $1"),
            vec![uuid_value(b, id)],
        ))
        .await?;
    match row {
        Some(row) => Ok(with_objections(conn, vec![view(&row, today)?]).await?.pop()),
        None => Ok(None),
    }
}

/// What a list of certifications filters by.
pub struct Filter<'a> {
    /// Region code prefix ('' for all).
    pub prefix: &'a str,
    /// Only in this state.
    pub state: Option<CertificationState>,
    /// Only this listing's.
    pub listing: Option<Uuid>,
    /// Today in China (EXPIRED is CERTIFIED past its validity).
    pub today: NaiveDate,
    /// The code prefix of the regions the reader administers, whose
    /// listings' certifications it sees whether they are on sale or not;
    /// none: only those of listings on sale, and any in public notice.
    pub administered: Option<String>,
}

impl Filter<'_> {
    /// The condition over `certifications` and its values, `$1` on.
    fn condition(&self, b: sea_orm::DbBackend) -> (String, Vec<sea_orm::Value>) {
        // EXPIRED and CERTIFIED are one stored state split by the validity.
        let (state, validity) = match self.state {
            Some(CertificationState::Expired) => (Some("CERTIFIED"), " AND valid_until < $4"),
            Some(CertificationState::Certified) => (Some("CERTIFIED"), " AND valid_until >= $4"),
            Some(s) => (Some(s.as_str()), ""),
            None => (None, ""),
        };
        let mut values = vec![
            format!("{}%", self.prefix).into(),
            state.map(str::to_owned).into(),
            opt_uuid(b, self.listing),
        ];
        if !validity.is_empty() {
            values.push(self.today.into());
        }
        let shown = values.len() + 1;
        values.push(self.administered.as_ref().map(|p| format!("{p}%")).into());
        (
            format!(
                "region_code LIKE $1 AND ($2 IS NULL OR state = $2)
                 AND ($3 IS NULL OR listing_id = $3){validity}
                 AND (state = 'PUBLIC_NOTICE' OR region_code LIKE ${shown}
                      OR EXISTS (SELECT 1 FROM homestays h WHERE h.id = listing_id AND h.published)
                      OR EXISTS (SELECT 1 FROM routes r
                                 WHERE r.id = listing_id AND r.status = 'PUBLISHED'))"
            ),
            values,
        )
    }
}

/// Certifications newest first (ids are time-ordered v7 UUIDs); `after` is
/// the id of the last one seen.
pub async fn list<C: ConnectionTrait>(
    conn: &C,
    f: &Filter<'_>,
    first: u32,
    after: Option<Uuid>,
) -> Result<(Vec<CertificationView>, bool), DbErr> {
    let b = conn.get_database_backend();
    let (condition, mut values) = f.condition(b);
    let (a, l) = (values.len() + 1, values.len() + 2);
    values.extend([opt_uuid(b, after), (i64::from(first) + 1).into()]);
    let rows = conn
        .query_all_raw(stmt(
            b,
            &format!(
                "SELECT {CERTIFICATION_COLUMNS} FROM certifications WHERE {condition} AND (${a} IS NULL OR id < ${a})
                 ORDER BY id DESC LIMIT ${l}"
            ),
            values,
        ))
        .await?;
    let (page, has_next) = shared::db::page(&rows, first, |row| view(row, f.today))?;
    Ok((with_objections(conn, page).await?, has_next))
}

/// How many certifications [`list`] pages through.
pub async fn count<C: ConnectionTrait>(conn: &C, f: &Filter<'_>) -> Result<u64, DbErr> {
    let (condition, values) = f.condition(conn.get_database_backend());
    shared::db::count(conn, &format!("certifications WHERE {condition}"), values).await
}

fn opt_uuid(b: sea_orm::DbBackend, id: Option<Uuid>) -> sea_orm::Value {
    shared::db::opt_uuid_value(b, id)
}

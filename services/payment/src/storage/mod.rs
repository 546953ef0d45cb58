//! Payment's tables: payments (one CAPTURED or PROCESSING per booking, by a
//! partial unique index — a second charge is refused by the database, not by
//! a read first) and the append-only ledger.

use chrono::Utc;
use sea_orm::{ConnectionTrait, DbErr, QueryResult};
use sea_orm_migration::{MigrationName, MigrationTrait, MigratorTrait, SchemaManager};
use shared::db::{row_uuid, run_ddl, uuid_value};
use shared::ids::{BookingId, PaymentId};
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

/// A stored payment and its fingerprint.
pub struct Stored {
    /// As clients see it.
    pub view: PaymentView,
    /// Fingerprint of the request that created it.
    pub fingerprint: String,
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
    })
}

/// Inserts a PROCESSING payment unless the key exists; Ok(false) when it does.
/// A live payment for the same booking fails with a unique violation.
pub async fn insert_processing<C: ConnectionTrait>(
    conn: &C,
    id: PaymentId,
    booking: BookingId,
    key: &str,
    fingerprint: &str,
    amount: Fen,
) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    let now = Utc::now();
    let r = conn
        .execute_raw(stmt(
            b,
            "INSERT INTO payments (id, booking_id, idempotency_key, fingerprint, amount_fen, status, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, 'PROCESSING', $6, $6)
             ON CONFLICT (idempotency_key) DO NOTHING",
            vec![uuid_value(b, id.0), uuid_value(b, booking.0), key.into(), fingerprint.into(), amount.get().into(), now.into()],
        ))
        .await?;
    Ok(r.rows_affected() == 1)
}

/// The payment made with this key.
pub async fn by_key<C: ConnectionTrait>(conn: &C, key: &str) -> Result<Option<Stored>, DbErr> {
    let b = conn.get_database_backend();
    conn.query_one_raw(stmt(
        b,
        "SELECT * FROM payments WHERE idempotency_key = $1",
        vec![key.into()],
    ))
    .await?
    .map(|r| stored(&r))
    .transpose()
}

/// Marks a PROCESSING payment CAPTURED with its split.
pub async fn mark_captured<C: ConnectionTrait>(
    conn: &C,
    id: PaymentId,
    reference: &str,
    split: &Split,
) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    let r = conn
        .execute_raw(stmt(
            b,
            "UPDATE payments SET status = 'CAPTURED', provider_ref = $2, split = $3, updated_at = $4
             WHERE id = $1 AND status = 'PROCESSING'",
            vec![uuid_value(b, id.0), reference.into(), serde_json::to_string(split).unwrap_or_default().into(), Utc::now().into()],
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

/// Appends one balanced ledger transaction.
pub async fn post<C: ConnectionTrait>(
    conn: &C,
    booking: BookingId,
    region: RegionCode,
    legs: &[(String, Fen)],
) -> Result<uuid::Uuid, DbErr> {
    let sum: Fen = legs.iter().map(|(_, a)| *a).sum();
    if sum != Fen::ZERO {
        return Err(DbErr::Custom(format!(
            "refusing an unbalanced ledger transaction (sum {sum})"
        )));
    }
    let b = conn.get_database_backend();
    let txn_id = uuid::Uuid::now_v7();
    let now = Utc::now();
    for (account, amount) in legs {
        conn.execute_raw(stmt(
            b,
            "INSERT INTO ledger_entries (txn_id, booking_id, account, amount_fen, region_code, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            vec![uuid_value(b, txn_id), uuid_value(b, booking.0), account.as_str().into(), amount.get().into(), region.to_string().into(), now.into()],
        ))
        .await?;
    }
    Ok(txn_id)
}

/// The balance of an account.
pub async fn balance<C: ConnectionTrait>(conn: &C, account: &str) -> Result<Fen, DbErr> {
    let b = conn.get_database_backend();
    let row = conn
        .query_one_raw(stmt(
            b,
            "SELECT CAST(COALESCE(SUM(amount_fen), 0) AS BIGINT) AS total FROM ledger_entries WHERE account = $1",
            vec![account.into()],
        ))
        .await?;
    Ok(Fen(match row {
        Some(r) => r.try_get("", "total")?,
        None => 0,
    }))
}

/// A page of the welfare fund's ledger entries, newest first, and whether
/// more follow.
pub async fn fund_entries<C: ConnectionTrait>(
    conn: &C,
    first: u32,
    after: Option<i64>,
) -> Result<(Vec<shared::rpcs::FundEntry>, bool), DbErr> {
    use sha2::{Digest, Sha256};
    let b = conn.get_database_backend();
    let rows = conn
        .query_all_raw(stmt(
            b,
            "SELECT id, booking_id, region_code, amount_fen, created_at FROM ledger_entries
             WHERE account = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
            vec![
                crate::domain::FUND.into(),
                after.unwrap_or(i64::MAX).into(),
                (i64::from(first) + 1).into(),
            ],
        ))
        .await?;
    let has_next = rows.len() > first as usize;
    let entries = rows
        .iter()
        .take(first as usize)
        .map(|r| {
            let booking = row_uuid(r, "booking_id")?;
            let region: String = r.try_get("", "region_code")?;
            Ok(shared::rpcs::FundEntry {
                id: r.try_get("", "id")?,
                booking_reference: format!(
                    "DK-{}",
                    &hex::encode(Sha256::digest(booking.as_bytes()))[..10]
                ),
                region_code: RegionCode::parse(&region)
                    .map_err(|e| DbErr::Custom(e.to_string()))?,
                amount: Fen(r.try_get("", "amount_fen")?),
                at: r.try_get("", "created_at")?,
            })
        })
        .collect::<Result<Vec<_>, DbErr>>()?;
    Ok((entries, has_next))
}

/// Number of ledger entries of an account.
pub async fn entry_count<C: ConnectionTrait>(conn: &C, account: &str) -> Result<i64, DbErr> {
    let b = conn.get_database_backend();
    let row = conn
        .query_one_raw(stmt(
            b,
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM ledger_entries WHERE account = $1",
            vec![account.into()],
        ))
        .await?;
    Ok(match row {
        Some(r) => r.try_get("", "n")?,
        None => 0,
    })
}

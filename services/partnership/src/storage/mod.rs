//! Partnership's tables: for now the ledger of confirmed bookings that
//! attribution and reports are computed from.

use sea_orm::{ConnectionTrait, DbErr};
use sea_orm_migration::{MigrationName, MigrationTrait, MigratorTrait, SchemaManager};
use shared::db::{run_ddl, uuid_value};
use shared::events::BookingConfirmed;
use shared::outbox::stmt;

/// Partnership's migrations.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(shared::runtime::KernelMigration), Box::new(Impact)]
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

/// Records a confirmed booking once.
pub async fn record_confirmed<C: ConnectionTrait>(
    conn: &C,
    ev: &BookingConfirmed,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "INSERT INTO confirmed_bookings (booking_id, sponsor_region, listing_region, certified, travelers, spend_fen, confirmed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (booking_id) DO NOTHING",
        vec![
            uuid_value(b, ev.booking_id.0),
            ev.sponsor_region.map(|r| r.to_string()).into(),
            ev.listing.region_code.to_string().into(),
            ev.listing.certified.into(),
            ev.travelers.into(),
            ev.total.get().into(),
            at.into(),
        ],
    ))
    .await?;
    Ok(())
}

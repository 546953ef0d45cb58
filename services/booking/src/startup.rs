//! Starting booking: database, migrations, consumers, the expiry sweeper.

use crate::SERVICE;
use crate::domain::sold_out::SoldOutMemory;
use crate::messaging::Bookings;
use crate::storage::Migrator;
use sea_orm::DatabaseConnection;
use shared::config::Settings;
use shared::outbox::OutboxSignal;
use shared::runtime::Runtime;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// Booking's handlers over `db`, configured by `settings`.
pub fn bookings(settings: &Settings, db: DatabaseConnection, outbox: OutboxSignal) -> Bookings {
    Bookings {
        db,
        outbox,
        hold_for: chrono::Duration::seconds(settings.hold_seconds),
        pending_retry: chrono::Duration::seconds(settings.pending_retry_seconds),
        hold_attempts: settings.hold_attempts.max(1),
        sold_out: Arc::new(SoldOutMemory::new(Duration::from_millis(
            settings.sold_out_memory_ms,
        ))),
        payments: None,
        payment_wait: chrono::Duration::seconds(settings.payment_wait_in_effect()),
        expiry_from: Arc::default(),
    }
}

/// Connects, migrates, and starts the saga's consumers and sweeper.
pub async fn start(rt: &Runtime) -> anyhow::Result<()> {
    let (db, outbox) = rt.service_db::<Migrator>(SERVICE).await?;
    let bookings = Bookings {
        payments: Some(Arc::downgrade(&rt.bus)),
        ..bookings(&rt.settings, db, outbox)
    };
    rt.bus.subscribe(bookings.events()).await?;
    rt.bus.serve(bookings.rpc()).await?;

    let cancel = rt.cancel.clone();
    rt.tracker.spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
                () = cancel.cancelled() => break,
            }
            if let Err(e) = bookings.expire_overdue().await {
                warn!(error = %e, "expiry sweep failed; will retry");
            }
            if let Err(e) = bookings.retry_unanswered().await {
                warn!(error = %e, "pending sweep failed; will retry");
            }
        }
    });
    Ok(())
}

//! Starting payment: database, migrations, the provider, its consumers and
//! the reconciler.

use crate::SERVICE;
use crate::messaging::Payments;
use crate::provider::Sandbox;
use crate::storage::Migrator;
use sea_orm::DatabaseConnection;
use shared::config::Settings;
use shared::outbox::OutboxSignal;
use shared::runtime::Runtime;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// Payment's handlers over `db` with the sandbox provider, configured by
/// `settings`.
pub fn payments(settings: &Settings, db: DatabaseConnection, outbox: OutboxSignal) -> Payments {
    let provider = Sandbox::new(db.clone(), Duration::from_millis(settings.sandbox_slow_ms));
    Payments {
        db,
        outbox,
        provider: Arc::new(provider),
        rates: settings.split_rates(),
        bus: None,
        reports: Arc::new(tokio::sync::Semaphore::new(
            // Of the pool as opened: one connection embedded, whatever
            // DUIKOU_DB_MAX_CONNECTIONS says (two permits had a payment
            // wait behind two reports for the one connection).
            crate::messaging::report_permits(settings.db_pool_size()),
        )),
    }
}

/// Connects, migrates, serves payment's RPCs and events with the sandbox
/// provider, and reconciles payments the provider left unanswered.
pub async fn start(rt: &Runtime) -> anyhow::Result<()> {
    let (db, outbox) = rt.service_db::<Migrator>(SERVICE).await?;
    let payments = Payments {
        bus: Some(Arc::downgrade(&rt.bus)),
        ..payments(&rt.settings, db, outbox)
    };
    rt.bus.subscribe(payments.events()).await?;
    rt.bus.serve(payments.rpc()).await?;

    let after = chrono::Duration::seconds(rt.settings.reconcile_after_seconds.max(1));
    let every = rt.settings.reconcile_round();
    let cancel = rt.cancel.clone();
    rt.tracker.spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = cancel.cancelled() => break,
            }
            if let Err(e) = payments.reconcile(after).await {
                warn!(error = %e.message, "reconciliation failed; will retry");
            }
            // The captures booking has handled since, so that a payout run
            // finds few left to ask about.
            if let Some(bus) = payments.bus.as_ref().and_then(std::sync::Weak::upgrade)
                && let Err(e) = payments.hear_captures(bus.as_ref(), None).await
            {
                warn!(error = %e.message, "could not ask booking which captures it handled; will retry");
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reports take half the pool at most, of the pool as it is opened: on
    /// SQLite one connection whatever `DUIKOU_DB_MAX_CONNECTIONS` says, so
    /// one report at a time (two had a payment wait behind both).
    #[tokio::test]
    async fn reports_take_turns_on_the_pool_as_opened() {
        let db = sea_orm::Database::connect("sqlite::memory:")
            .await
            .expect("sqlite");
        let embedded = Settings {
            db_max_connections: 10,
            ..Settings::default()
        };
        let on_postgres = Settings {
            postgres_url: Some("postgres://root@127.0.0.1:5432".to_owned().into()),
            ..embedded.clone()
        };
        for (settings, permits) in [(embedded, 1), (on_postgres, 5)] {
            let p = payments(
                &settings,
                db.clone(),
                shared::outbox::OutboxSignal::default(),
            );
            assert_eq!(p.reports.available_permits(), permits);
        }
    }
}

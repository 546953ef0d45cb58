//! Partnership's event handlers.

use crate::storage;
use sea_orm::DatabaseConnection;
use shared::bus::{EventRouter, HandlerError};
use shared::envelope::Envelope;
use shared::events::BookingConfirmed;
use shared::outbox::begin_once;

/// What the handlers share.
#[derive(Clone)]
pub struct Partnerships {
    /// Partnership's database.
    pub db: DatabaseConnection,
}

impl Partnerships {
    /// The events partnership consumes.
    pub fn events(&self) -> EventRouter {
        let s = self.clone();
        EventRouter::new("partnership.events").on::<BookingConfirmed, _, _>(move |env, ev| {
            let s = s.clone();
            async move { s.on_confirmed(env, ev).await }
        })
    }

    async fn on_confirmed(&self, env: Envelope, ev: BookingConfirmed) -> Result<(), HandlerError> {
        let Some(txn) = begin_once(&self.db, &env).await? else {
            return Ok(());
        };
        storage::record_confirmed(&txn, &ev, env.occurred_at).await?;
        txn.commit().await?;
        Ok(())
    }
}

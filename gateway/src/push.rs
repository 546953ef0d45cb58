//! Pushes to connected clients: this gateway's own temporary queue receives
//! every `booking.status_changed` and fans it out to the subscriptions of
//! this process. The same queue hears of catalogue changes and holds, which
//! move the catalogue cache's version (`cache.rs`). Every gateway replica has its own queue, so a client gets
//! its push whichever replica it is connected to.

use shared::bus::{Bus, BusError, EventRouter};
use shared::events::{BookingStatusChanged, CatalogueChanged, HoldGranted, HoldReleased};
use std::sync::Arc;
use tokio::sync::broadcast;

/// Booking changes seen by this gateway.
#[derive(Clone)]
pub struct Push {
    tx: broadcast::Sender<Arc<BookingStatusChanged>>,
}

impl Push {
    /// Subscribes this gateway to booking changes, and `cache` to the
    /// changes of the catalogue.
    pub async fn start(bus: &Arc<dyn Bus>, cache: crate::cache::Cache) -> Result<Push, BusError> {
        let (tx, _) = broadcast::channel(4096);
        let sender = tx.clone();
        let queue = format!("gateway.push.{}", uuid::Uuid::now_v7().simple());
        let [a, b, c, d] = [(); 4].map(|()| cache.clone());
        let router = EventRouter::new(queue)
            .ephemeral()
            .on::<BookingStatusChanged, _, _>(move |_env, ev| {
                // Remembered before the push: a client paying on the push
                // finds it.
                if let Some(view) = &ev.booking {
                    d.heard(view);
                }
                // No subscriber is fine: nobody is watching.
                let _ = sender.send(Arc::new(ev));
                async { Ok(()) }
            })
            .on::<CatalogueChanged, _, _>(move |env, _| {
                metrics::counter!("duikou_catalogue_changes_total").increment(1);
                a.rules_changed(env.id);
                async { Ok(()) }
            })
            .on::<HoldGranted, _, _>(move |env, _| {
                b.changed(env.id);
                async { Ok(()) }
            })
            .on::<HoldReleased, _, _>(move |env, _| {
                c.changed(env.id);
                async { Ok(()) }
            });
        bus.subscribe(router).await?;
        Ok(Push { tx })
    }

    /// A receiver of every booking change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<BookingStatusChanged>> {
        self.tx.subscribe()
    }
}

//! Pushes to connected clients: this gateway's own temporary queue receives
//! every `booking.status_changed` and fans it out to the subscriptions of
//! this process. Every gateway replica has its own queue, so a client gets
//! its push whichever replica it is connected to.

use shared::bus::{Bus, BusError, EventRouter};
use shared::events::BookingStatusChanged;
use shared::ids::BookingId;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Booking changes seen by this gateway.
#[derive(Clone)]
pub struct Push {
    tx: broadcast::Sender<BookingId>,
}

impl Push {
    /// Subscribes this gateway to booking changes.
    pub async fn start(bus: &Arc<dyn Bus>) -> Result<Push, BusError> {
        let (tx, _) = broadcast::channel(4096);
        let sender = tx.clone();
        let queue = format!("gateway.push.{}", uuid::Uuid::now_v7().simple());
        let router = EventRouter::new(queue)
            .ephemeral()
            .on::<BookingStatusChanged, _, _>(move |_env, ev| {
                // No subscriber is fine: nobody is watching.
                let _ = sender.send(ev.booking_id);
                async { Ok(()) }
            });
        bus.subscribe(router).await?;
        Ok(Push { tx })
    }

    /// A receiver of every booking id that changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<BookingId> {
        self.tx.subscribe()
    }
}

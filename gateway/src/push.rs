//! Pushes to connected clients: this gateway's own temporary queue receives
//! every booking move — `booking.status_changed`, and the outcomes
//! `booking.confirmed`, `.cancelled`, `.expired` and `.rejected`, which carry
//! the booking — and fans it out to the subscriptions of this process. The
//! same queue hears of catalogue changes and holds, which move the catalogue
//! cache's version (`cache.rs`). Every gateway replica has its own queue, so
//! a client gets its push whichever replica it is connected to.

use shared::bus::{Bus, BusError, EventRouter};
use shared::envelope::Event;
use shared::events::{
    BookingCancelled, BookingConfirmed, BookingExpired, BookingRejected, BookingStatusChanged,
    CatalogueChanged, HoldReleased,
};
use shared::rpcs::BookingView;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Booking changes seen by this gateway.
#[derive(Clone)]
pub struct Push {
    tx: broadcast::Sender<Pushed>,
    cache: crate::cache::Cache,
}

/// What this gateway's subscriptions hear.
#[derive(Clone)]
pub enum Pushed {
    /// A booking moved.
    Moved(Arc<BookingStatusChanged>),
    /// Changes may have been missed: the push queue was lost (a broker
    /// restart, a channel closed) and set up again, and what was published
    /// in between never reached it.
    Missed,
}

impl Push {
    /// Subscribes this gateway to booking changes, and `cache` to the
    /// changes of the catalogue.
    pub async fn start(bus: &Arc<dyn Bus>, cache: crate::cache::Cache) -> Result<Push, BusError> {
        let (tx, _) = broadcast::channel(4096);
        let queue = format!("gateway.push.{}", uuid::Uuid::now_v7().simple());
        let [a, b] = [(); 2].map(|()| cache.clone());
        let push = Push { tx, cache };
        // The outcomes carry the booking; from producers older than that,
        // `booking.status_changed` says the same and is pushed instead.
        let missed = push.clone();
        let router = EventRouter::new(queue)
            .ephemeral()
            .on_gap(move || missed.missed());
        let router = push.pushing(router, |ev: BookingStatusChanged| Some(ev));
        let router = push.pushing(router, |ev: BookingConfirmed| of(ev.booking));
        let router = push.pushing(router, |ev: BookingCancelled| of(ev.facts.booking));
        let router = push.pushing(router, |ev: BookingExpired| of(ev.facts.booking));
        let router = push.pushing(router, |ev: BookingRejected| of(ev.facts.booking));
        let router = router
            .on::<CatalogueChanged, _, _>(move |env, _| {
                metrics::counter!("duikou_catalogue_changes_total").increment(1);
                a.rules_changed(env.id);
                async { Ok(()) }
            })
            .on::<HoldReleased, _, _>(move |env, _| {
                b.changed(env.id);
                async { Ok(()) }
            });
        bus.subscribe(router).await?;
        Ok(push)
    }

    /// Binds `E` on `router`, pushing the change `change` reads from it.
    fn pushing<E: Event + 'static>(
        &self,
        router: EventRouter,
        change: fn(E) -> Option<BookingStatusChanged>,
    ) -> EventRouter {
        let push = self.clone();
        router.on::<E, _, _>(move |env, ev| {
            if let Some(changed) = change(ev) {
                push.send(env.id, changed);
            }
            async { Ok(()) }
        })
    }

    /// Fans `changed` (event `id`) out to this process's subscriptions.
    fn send(&self, id: uuid::Uuid, changed: BookingStatusChanged) {
        // A booking awaits payment once inventory granted its hold (and
        // committed it): availability moved. This push, which follows the
        // grant, moves the catalogue version in place of a delivery of
        // every `inventory.hold_granted` to every gateway.
        if changed.status == "AWAITING_PAYMENT" {
            self.cache.changed(id);
        }
        // Remembered before the push: a client paying on the push finds it.
        if let Some(view) = &changed.booking {
            self.cache.heard(view);
        }
        // No subscriber is fine: nobody is watching.
        let _ = self.tx.send(Pushed::Moved(Arc::new(changed)));
    }

    /// Events were missed: what was cached or remembered from them may be
    /// stale, and every subscription is told.
    fn missed(&self) {
        self.cache.events_missed();
        let _ = self.tx.send(Pushed::Missed);
    }

    /// A receiver of every booking change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Pushed> {
        self.tx.subscribe()
    }
}

/// The push an outcome event carries, if its producer put the booking in.
fn of(view: Option<Box<BookingView>>) -> Option<BookingStatusChanged> {
    view.map(|v| BookingStatusChanged::of(&v))
}

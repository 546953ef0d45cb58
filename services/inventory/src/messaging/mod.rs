//! Inventory's event handlers (holds) and RPC handlers (catalogue).

mod assess;
mod certification_rpc;
mod quote;
mod routes_rpc;

use crate::SERVICE;
use crate::domain::{StayDates, calendar_range};
use crate::storage::{self, Held, routes};
use chrono::Utc;
use sea_orm::{ConnectionTrait, DatabaseConnection, TransactionTrait};
use shared::auth::Principal;
use shared::bus::{EventRouter, HandlerError};
use shared::envelope::Envelope;
use shared::events::ListingSnapshot;
use shared::events::{
    BookingConfirmed, HoldCommitRefused, HoldGranted, HoldRejected, HoldReleaseRequested,
    HoldReleased, HoldRequested,
};
use shared::ids::{BookingId, HomestayId, HostId, RoomTypeId, RouteId};
use shared::keyed::CreateKey;
use shared::money::Fen;
use shared::outbox::{OutboxSignal, begin_once, enqueue};
use shared::policy::CancellationPolicy;
use shared::policy::china_today;
use shared::region::RegionCode;
use shared::rpc::RpcRouter;
use shared::rpcs::{
    AddDeparture, CreateRoute, GetRoute, OfferPage, SearchHomestays, SearchRoutes, SetRouteStatus,
};
use shared::rpcs::{
    AddRoomType, AdvanceCertification, ApplyForCertification, GetHomestay, ListCertifications,
    NewRoomType, RoomTypeView,
};
use shared::rpcs::{
    CreateHomestay, GetRoomCalendar, HomestayCreated, ListRegions, Night, SetRoomCalendar,
};
use shared::rpcs::{CreateHost, HostView};
use shared::{AppError, ErrorCode};
use std::collections::HashMap;
use tracing::{info, warn};

/// How long a catalogue change's announcement may take outside an RPC's
/// wait (within one, less: [`shared::bus::within_callers_wait`]).
const ANNOUNCE_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// What a sweep of overdue holds did.
#[derive(Debug, Clone, Copy)]
pub struct Swept {
    /// Holds put back on sale.
    pub released: usize,
    /// Booking answered the question (or none was needed).
    pub booking_answered: bool,
}

/// What the handlers share.
#[derive(Clone)]
pub struct Inventory {
    /// Inventory's database.
    pub db: DatabaseConnection,
    /// Wakes the outbox relay.
    pub outbox: OutboxSignal,
}

impl Inventory {
    /// The events inventory consumes.
    pub fn events(&self) -> EventRouter {
        let (a, b, c) = (self.clone(), self.clone(), self.clone());
        EventRouter::new("inventory.events")
            .on::<HoldRequested, _, _>(move |env, ev| {
                let s = a.clone();
                async move { s.on_hold_requested(env, ev).await }
            })
            .on::<HoldReleaseRequested, _, _>(move |env, ev| {
                let s = b.clone();
                async move { s.on_release_requested(env, ev).await }
            })
            .on::<BookingConfirmed, _, _>(move |env, ev| {
                let s = c.clone();
                async move { s.on_booking_confirmed(env, ev).await }
            })
    }

    /// The RPC methods inventory answers.
    pub fn rpc(&self) -> RpcRouter {
        let [a, b, c, d, e] = [(); 5].map(|()| self.clone());
        let [f, g, h, i, j] = [(); 5].map(|()| self.clone());
        let [k, l, m, n, o] = [(); 5].map(|()| self.clone());
        let [p, r, t, u] = [(); 4].map(|()| self.clone());
        let [v, w, x, y, z] = [(); 5].map(|()| self.clone());
        let [aa, ab, ac, ad, cd] = [(); 5].map(|()| self.clone());
        let cancelled = self.clone();
        RpcRouter::new(SERVICE)
            .ready_with(self.db.clone())
            .route::<shared::rpcs::QuoteBooking, _, _>(move |req| {
                let s = r.clone();
                async move { s.quote(req).await }
            })
            .route::<CreateHost, _, _>(move |req| {
                let s = p.clone();
                async move { s.create_host(req).await }
            })
            .route::<shared::rpcs::ListHostPage, _, _>(move |req| {
                let s = ac.clone();
                async move { s.list_host_page(req).await }
            })
            .route::<shared::rpcs::GetHosts, _, _>(move |req| {
                let s = ad.clone();
                async move {
                    if req.host_ids.len() > 100 {
                        return Err(AppError::bad_input("at most 100 hosts at a time"));
                    }
                    Ok(storage::hosts_by_ids(&s.db, &req.host_ids).await?)
                }
            })
            .route::<shared::rpcs::ListListings, _, _>(move |req| {
                let s = w.clone();
                async move { s.list_listings(req).await }
            })
            .route::<AddRoomType, _, _>(move |req| {
                let s = n.clone();
                async move {
                    let done = s.add_room_type(req).await;
                    s.announce("add_room_type", done).await
                }
            })
            .route::<shared::rpcs::UpdateHomestay, _, _>(move |req| {
                let s = x.clone();
                async move {
                    let done = s.update_homestay(req).await;
                    s.announce("update_homestay", done).await
                }
            })
            .route::<shared::rpcs::GetHomestays, _, _>(move |req| {
                let s = z.clone();
                async move {
                    if req.homestay_ids.len() > 100 {
                        return Err(AppError::bad_input("at most 100 homestays at a time"));
                    }
                    Ok(storage::homestays(&s.db, &req.homestay_ids).await?)
                }
            })
            .route::<shared::rpcs::UpdateRoomType, _, _>(move |req| {
                let s = aa.clone();
                async move {
                    let done = s.update_room_type(req).await;
                    s.announce("update_room_type", done).await
                }
            })
            .route::<GetHomestay, _, _>(move |req| {
                let s = o.clone();
                async move { Ok(storage::homestay(&s.db, req.homestay_id).await?) }
            })
            .route::<ApplyForCertification, _, _>(move |req| {
                let s = k.clone();
                async move {
                    let done = s.apply_for_certification(req).await;
                    s.announce("apply_for_certification", done).await
                }
            })
            .route::<AdvanceCertification, _, _>(move |req| {
                let s = l.clone();
                async move {
                    let done = s.advance_certification(req).await;
                    s.announce("advance_certification", done).await
                }
            })
            .route::<ListCertifications, _, _>(move |req| {
                let s = m.clone();
                async move { s.list_certifications(req).await }
            })
            .route::<CreateRoute, _, _>(move |req| {
                let s = f.clone();
                async move {
                    let done = s.create_route(req).await;
                    s.announce("create_route", done).await
                }
            })
            .route::<AddDeparture, _, _>(move |req| {
                let s = g.clone();
                async move {
                    let done = s.add_departure(req).await;
                    s.announce("add_departure", done).await
                }
            })
            .route::<shared::rpcs::PublishListing, _, _>(move |req| {
                let s = v.clone();
                async move {
                    let done = s.publish_listing(req).await;
                    s.announce("publish_listing", done).await
                }
            })
            .route::<SetRouteStatus, _, _>(move |req| {
                let s = h.clone();
                async move {
                    let done = s.set_route_status(req).await;
                    s.announce("set_route_status", done).await
                }
            })
            .route::<shared::rpcs::UpdateRoute, _, _>(move |req| {
                let s = y.clone();
                async move {
                    let done = s.update_route(req).await;
                    s.announce("update_route", done).await
                }
            })
            .route::<shared::rpcs::CancelDeparture, _, _>(move |req| {
                let s = cd.clone();
                async move {
                    // A deadlock PostgreSQL broke by failing the
                    // cancellation (a release of a hold a take committed
                    // between its two looks at the holds): sent again,
                    // twice at most, rather than answered unavailable. It
                    // is one transaction, and a second cancel answers the
                    // first.
                    let mut done = s.cancel_departure(req.clone()).await;
                    for _ in 0..2 {
                        if !done.as_ref().is_err_and(AppError::gave_way) {
                            break;
                        }
                        done = s.cancel_departure(req.clone()).await;
                    }
                    s.announce("cancel_departure", done).await
                }
            })
            .route::<shared::rpcs::UpdateDeparture, _, _>(move |req| {
                let s = ab.clone();
                async move {
                    let done = s.update_departure(req).await;
                    s.announce("update_departure", done).await
                }
            })
            // Payment's, before a payout run (services only).
            .route::<shared::rpcs::GetCancelledDepartureBookings, _, _>(move |req| {
                let s = cancelled.clone();
                async move { Ok(storage::routes::bookings_on_cancelled(&s.db, req.since).await?) }
            })
            .route::<GetRoute, _, _>(move |req| {
                let s = i.clone();
                async move { s.get_route(req).await }
            })
            .route::<shared::rpcs::GetDepartures, _, _>(move |req| {
                let s = u.clone();
                async move { s.get_departures(req).await }
            })
            .route::<SearchRoutes, _, _>(move |req| {
                let s = j.clone();
                async move { s.search_routes(req).await }
            })
            .route::<SearchHomestays, _, _>(move |req| {
                let s = e.clone();
                async move { s.search(req).await }
            })
            .route::<ListRegions, _, _>(move |req| {
                let s = a.clone();
                async move { Ok(storage::regions(&s.db, req.parent_code, req.poverty_only).await?) }
            })
            .route::<CreateHomestay, _, _>(move |req| {
                let s = b.clone();
                async move {
                    let done = s.create_homestay(req).await;
                    s.announce("create_homestay", done).await
                }
            })
            .route::<SetRoomCalendar, _, _>(move |req| {
                let s = c.clone();
                async move {
                    let done = s.set_room_calendar(req).await;
                    s.announce("set_room_calendar", done).await
                }
            })
            .route::<GetRoomCalendar, _, _>(move |req| {
                let s = d.clone();
                async move { s.room_calendar(req).await }
            })
            .route::<shared::rpcs::GetRoomCalendars, _, _>(move |req| {
                let s = t.clone();
                async move { s.room_calendars(req).await }
            })
    }

    /// Tells the gateways' caches that the catalogue changed, after a
    /// catalogue change committed (its own small transaction: should this
    /// process die in between, the caches' expiry bounds what is stale).
    /// Within the caller's wait: a change made must be answered as made, not
    /// taken for a failure its client retries (a second homestay) while the
    /// announcement waits on a busy database; one not announced in time is
    /// left to the caches' expiry.
    /// A create refused as made already ([`shared::db::is_made_already`]) is
    /// announced too: the delivery that made it may have stopped before
    /// announcing it, and its admin, told to look it up, must find it.
    async fn announce<T>(&self, method: &str, done: Result<T, AppError>) -> Result<T, AppError> {
        if done.is_ok() || done.as_ref().is_err_and(shared::db::is_made_already) {
            let event = Envelope::new(
                SERVICE,
                uuid::Uuid::now_v7(),
                &shared::events::CatalogueChanged {
                    by: method.to_owned(),
                },
            );
            // At least a moment: a change committed just inside its
            // caller's wait (commit_in_time leaves the answer 0.5 s).
            let wait = shared::bus::within_callers_wait(ANNOUNCE_WITHIN)
                .max(std::time::Duration::from_millis(100));
            let sent = async {
                let txn = self.db.begin().await?;
                if txn.get_database_backend() == sea_orm::DbBackend::Postgres {
                    // The server gives up with us: a statement still waiting
                    // when we stop would keep its connection from the pool
                    // (a stall pinning one more with each change).
                    let limit = format!("SET LOCAL statement_timeout = {}", wait.as_millis());
                    txn.execute_unprepared(&limit).await?;
                }
                enqueue(&txn, &[event]).await?;
                txn.commit().await
            };
            match tokio::time::timeout(wait, sent).await {
                Ok(Ok(())) => self.outbox.committed(),
                Ok(Err(e)) => warn!(error = %e, method, "could not announce a catalogue change"),
                Err(_) => warn!(
                    method,
                    "a catalogue change was not announced in its caller's wait; the caches' \
                     expiry bounds what they serve stale"
                ),
            }
        }
        done
    }

    async fn on_hold_requested(
        &self,
        env: Envelope,
        ev: HoldRequested,
    ) -> Result<(), HandlerError> {
        let Some(txn) = begin_once(&self.db, &env).await? else {
            return Ok(());
        };
        // A first request, the usual case, is taken without looking for a
        // hold first: a repeated one finds its booking's hold at the insert
        // (`grant`, `reject`), which undoes the take and answers it again.
        let assessed = match assess::assess(&txn, &ev.item, ev.travelers).await? {
            Ok(assess::Assessed {
                refusal: Some(assess::Refusal(code, reason)),
                listing,
                ..
            }) => {
                let refused = rejection(&ev, code, &reason, Some(listing));
                return self.reject(txn, &env, refused).await;
            }
            Err(assess::Refusal(code, reason)) => {
                return self
                    .reject(txn, &env, rejection(&ev, code, &reason, None))
                    .await;
            }
            Ok(assessed) => assessed,
        };
        // Take it: one conditional update, never read-then-write.
        let taken = match assessed.held {
            Held::Nights(room_type, stay, rooms) => {
                storage::take_nights(&txn, room_type, stay, rooms).await?
            }
            Held::Seats(departure, seats) => routes::take_seats(&txn, departure, seats).await?,
        };
        match taken {
            Some(total) => {
                // The listing as it is now that the take holds its locks: a
                // change committed while the take waited on them (a refund
                // rule, a revoked badge, a longer minimum stay) was not in
                // the first read. Sold out is what the take itself made it.
                let now = match assess::assess(&txn, &ev.item, ev.travelers).await? {
                    Ok(assess::Assessed {
                        refusal: None | Some(assess::Refusal(ErrorCode::SoldOut, _)),
                        listing,
                        ..
                    }) => Ok(listing),
                    Ok(assess::Assessed {
                        refusal: Some(refusal),
                        listing,
                        ..
                    }) => Err((refusal, Some(listing))),
                    Err(refusal) => Err((refusal, None)),
                };
                match now {
                    Ok(listing) => {
                        self.grant(txn, &env, &ev, assessed.held, total, listing)
                            .await
                    }
                    Err((assess::Refusal(code, reason), listing)) => {
                        txn.rollback().await?;
                        let Some(txn) = begin_once(&self.db, &env).await? else {
                            return Ok(());
                        };
                        let refused = rejection(&ev, code, &reason, listing);
                        self.reject(txn, &env, refused).await
                    }
                }
            }
            None => {
                // Some night (or the departure) lacked room: undo any partial
                // update, then record the refusal.
                txn.rollback().await?;
                let Some(txn) = begin_once(&self.db, &env).await? else {
                    return Ok(());
                };
                // Closed, taken off sale, cancelled or its rules changed
                // while this request was looking (the take waited on the
                // change's lock of the nights, the homestay, the route or
                // the departure): said as such, not as a sale.
                let changed = match assess::assess(&txn, &ev.item, ev.travelers).await? {
                    Ok(assess::Assessed {
                        refusal: Some(refusal),
                        ..
                    })
                    | Err(refusal) => Some(refusal),
                    Ok(_) => None,
                };
                let assess::Refusal(code, reason) = match (changed, assessed.held) {
                    (Some(refusal), _) => refusal,
                    (None, Held::Nights(_, stay, _)) => assess::sold_out_nights(stay),
                    // Sold out, with the seats left as they are now (read
                    // before the take, they could exceed those asked).
                    (None, Held::Seats(departure, seats)) => {
                        match routes::departure(&txn, departure).await? {
                            Some((_, d)) => assess::cancelled(&d).unwrap_or_else(|| {
                                assess::sold_out_seats(seats, d.seats_left, d.starts_on)
                            }),
                            None => assess::sold_out_seats(
                                seats,
                                0,
                                assessed.listing.starts_on.unwrap_or_default(),
                            ),
                        }
                    }
                };
                let refused = rejection(&ev, code, &reason, Some(assessed.listing));
                self.reject(txn, &env, refused).await
            }
        }
    }

    async fn grant(
        &self,
        txn: sea_orm::DatabaseTransaction,
        env: &Envelope,
        ev: &HoldRequested,
        held: Held,
        total: Fen,
        listing: ListingSnapshot,
    ) -> Result<(), HandlerError> {
        let granted = HoldGranted {
            booking_id: ev.booking_id,
            total,
            listing,
            expires_at: ev.expires_at,
        };
        let reply = env.follow(SERVICE, &granted);
        let first = storage::insert_hold(
            &txn,
            ev.booking_id,
            "HELD",
            Some(held),
            Some(ev.expires_at),
            Some(&reply),
        )
        .await?;
        if !first {
            txn.rollback().await?;
            return self.answer_again(env, ev.booking_id).await;
        }
        enqueue(&txn, &[reply]).await?;
        txn.commit().await?;
        self.outbox.committed();
        info!(booking = %ev.booking_id, %total, "hold granted");
        Ok(())
    }

    async fn reject(
        &self,
        txn: sea_orm::DatabaseTransaction,
        env: &Envelope,
        reject: HoldRejected,
    ) -> Result<(), HandlerError> {
        let reply = env.follow(SERVICE, &reject);
        let first = storage::insert_hold(
            &txn,
            reject.booking_id,
            "REJECTED",
            None,
            None,
            Some(&reply),
        )
        .await?;
        if !first {
            txn.rollback().await?;
            return self.answer_again(env, reject.booking_id).await;
        }
        enqueue(&txn, &[reply]).await?;
        txn.commit().await?;
        self.outbox.committed();
        info!(booking = %reject.booking_id, reason = %reject.reason, "hold rejected");
        Ok(())
    }

    /// A request for a booking that has a hold: the saga repeats a
    /// request it got no answer to. It is answered as the first time; a
    /// hold given back (released or expired) answers nothing, nothing is
    /// held any more.
    async fn answer_again(&self, env: &Envelope, booking: BookingId) -> Result<(), HandlerError> {
        let Some(txn) = begin_once(&self.db, env).await? else {
            return Ok(());
        };
        if let Some(hold) = storage::hold_for_update(&txn, booking).await? {
            let given_back = matches!(hold.state.as_str(), "RELEASED" | "EXPIRED" | "REFUSED");
            if let (Some((kind, payload)), false) = (hold.reply, given_back) {
                enqueue(&txn, &[env.follow_raw(SERVICE, &kind, payload)]).await?;
                txn.commit().await?;
                self.outbox.committed();
                return Ok(());
            }
        }
        txn.commit().await?;
        Ok(())
    }

    async fn on_release_requested(
        &self,
        env: Envelope,
        ev: HoldReleaseRequested,
    ) -> Result<(), HandlerError> {
        let Some(txn) = begin_once(&self.db, &env).await? else {
            return Ok(());
        };
        match storage::hold_for_update(&txn, ev.booking_id).await? {
            Some(hold) if hold.state == "HELD" || hold.state == "COMMITTED" => {
                give_back(&txn, &hold).await?;
                storage::set_hold_state(&txn, ev.booking_id, "RELEASED").await?;
            }
            // The sweeper gave the capacity back already; RELEASED records
            // booking's decision, so a `booking.confirmed` redelivered or
            // overtaken after it does not take the nights again.
            Some(hold) if hold.state == "EXPIRED" => {
                storage::set_hold_state(&txn, ev.booking_id, "RELEASED").await?;
            }
            Some(_) => {}
            // The release overtook the request: leave a tombstone so the
            // request, when it comes, holds nothing.
            None => {
                if !storage::insert_hold(&txn, ev.booking_id, "RELEASED", None, None, None).await? {
                    // The request's hold committed meanwhile: give it back next time.
                    return Err(HandlerError::Retry("a hold was recorded meanwhile".into()));
                }
            }
        }
        enqueue(
            &txn,
            &[env.follow(
                SERVICE,
                &HoldReleased {
                    booking_id: ev.booking_id,
                    expired: false,
                },
            )],
        )
        .await?;
        txn.commit().await?;
        self.outbox.committed();
        Ok(())
    }

    /// A confirmed booking's hold becomes sold. If inventory's own sweeper
    /// expired it first (the payment landed in the grace window's last
    /// moment), the capacity is taken again in one conditional update; if
    /// it was sold meanwhile, the commit is refused and booking refunds.
    async fn on_booking_confirmed(
        &self,
        env: Envelope,
        ev: BookingConfirmed,
    ) -> Result<(), HandlerError> {
        let Some(txn) = begin_once(&self.db, &env).await? else {
            return Ok(());
        };
        // The usual case, a live hold, in one conditional update.
        if storage::move_hold(&txn, ev.booking_id, "HELD", "COMMITTED").await? {
            txn.commit().await?;
            return Ok(());
        }
        let Some(hold) = storage::hold_for_update(&txn, ev.booking_id).await? else {
            txn.commit().await?;
            return Ok(());
        };
        match hold.state.as_str() {
            // Inserted since the update looked (not a path the saga takes).
            "HELD" => storage::set_hold_state(&txn, ev.booking_id, "COMMITTED").await?,
            "EXPIRED" => {
                let retaken = {
                    // A savepoint: a stay taken on some nights only is undone.
                    let attempt = txn.begin().await?;
                    if take_again(&attempt, &hold).await? {
                        attempt.commit().await?;
                        true
                    } else {
                        attempt.rollback().await?;
                        false
                    }
                };
                if retaken {
                    storage::set_hold_state(&txn, ev.booking_id, "COMMITTED").await?;
                    // The expiry's `hold_released` told the gateways' caches
                    // the capacity was free: this tells them it is not.
                    let taken = shared::events::CatalogueChanged {
                        by: "late_payment".to_owned(),
                    };
                    enqueue(&txn, &[env.follow(SERVICE, &taken)]).await?;
                    info!(booking = %ev.booking_id, "an expired hold was paid; capacity taken again");
                } else {
                    let assess::Refusal(code, meanwhile) = not_taken_again(&txn, &hold).await?;
                    let refused = HoldCommitRefused {
                        booking_id: ev.booking_id,
                        code,
                        reason: format!(
                            "the hold expired before the payment was recorded, and {meanwhile}"
                        ),
                    };
                    storage::set_hold_state(&txn, ev.booking_id, "REFUSED").await?;
                    enqueue(&txn, &[env.follow(SERVICE, &refused)]).await?;
                    warn!(booking = %ev.booking_id, reason = %refused.reason, "an expired hold was paid but cannot be taken again; commit refused");
                }
            }
            // RELEASED at booking's request: a later decision than this one.
            _ => {}
        }
        txn.commit().await?;
        self.outbox.committed();
        Ok(())
    }

    /// Releases holds still unpaid `grace` past their deadline: booking's
    /// own expiry normally releases them first; this is the net for a
    /// booking that never does (its release lost, booking down). Returns
    /// how many were released.
    ///
    /// Not having heard `booking.confirmed` is not proof of no payment:
    /// this consumer may be behind, or just started with the confirmation
    /// still queued (the sweeper runs every second, a handler waiting out a
    /// database outage every five). So booking is asked first, over `bus`,
    /// which of them were confirmed (CONFIRMED now, or cancelled since,
    /// their release queued behind the confirmation): those are committed,
    /// as their confirmation would, instead of put back on sale for someone
    /// else while their traveler holds a confirmation; only those asked about
    /// are swept (the rest wait for the next round's question). Booking not
    /// answering, the holds are released as before (this is the net for
    /// booking away) when `release_unanswered`, else left for later (until
    /// booking has not answered for `grace`: it may be starting).
    pub async fn expire_holds(
        &self,
        grace: chrono::Duration,
        bus: Option<&dyn shared::bus::Bus>,
        release_unanswered: bool,
    ) -> Result<Swept, sea_orm::DbErr> {
        use crate::domain::{Asked, Sweep};
        let cutoff = Utc::now() - grace;
        let asked = match bus {
            Some(bus) => self.ask_booking(bus, cutoff).await?,
            None => Asked::Unanswered,
        };
        let booking_answered = matches!(asked, Asked::Answered { .. });
        let nothing = Swept {
            released: 0,
            booking_answered,
        };
        match &asked {
            Asked::Unanswered if !release_unanswered => return Ok(nothing),
            Asked::Answered { asked, .. } if asked.is_empty() => return Ok(nothing),
            _ => {}
        }
        let txn = self.db.begin().await?;
        let overdue = storage::overdue_holds(&txn, cutoff, 100).await?;
        let mut holds = Vec::with_capacity(overdue.len());
        for booking in overdue {
            if let Some(hold) = storage::hold_for_update(&txn, booking).await? {
                holds.push((booking, hold));
            }
        }
        // Give back by room type (or departure) and date, the order a room
        // count change takes the same nights in, so the two never wait on
        // each other in a circle (a deadlock PostgreSQL would break by
        // failing one of them).
        holds.sort_by_key(|(_, h)| {
            (
                h.room_type_id.map(|r| r.0),
                h.departure_id.map(|d| d.0),
                h.stay.map(|s| s.check_in),
            )
        });
        let mut events = Vec::with_capacity(holds.len());
        for (booking, hold) in holds {
            match crate::domain::sweep(&asked, booking) {
                Sweep::Later => continue,
                Sweep::Commit => {
                    storage::set_hold_state(&txn, booking, "COMMITTED").await?;
                    warn!(%booking, "hold past its deadline belongs to a booking confirmed (perhaps cancelled since: its release gives it back); committed");
                    continue;
                }
                Sweep::Release => {}
            }
            give_back(&txn, &hold).await?;
            storage::set_hold_state(&txn, booking, "EXPIRED").await?;
            let released = HoldReleased {
                booking_id: booking,
                expired: true,
            };
            events.push(Envelope::new(SERVICE, booking.0, &released));
            warn!(%booking, "hold outlived its deadline; released by inventory");
        }
        enqueue(&txn, &events).await?;
        txn.commit().await?;
        if !events.is_empty() {
            self.outbox.committed();
        }
        Ok(Swept {
            released: events.len(),
            booking_answered,
        })
    }

    /// Asks booking which overdue holds' bookings were confirmed (nothing
    /// overdue: answered, as nothing was asked).
    async fn ask_booking(
        &self,
        bus: &dyn shared::bus::Bus,
        cutoff: chrono::DateTime<Utc>,
    ) -> Result<crate::domain::Asked, sea_orm::DbErr> {
        use crate::domain::Asked;
        let overdue = storage::overdue_holds(&self.db, cutoff, 100).await?;
        if overdue.is_empty() {
            return Ok(Asked::Answered {
                asked: Default::default(),
                confirmed: Default::default(),
            });
        }
        let question = shared::rpcs::GetConfirmedBookings {
            booking_ids: overdue,
        };
        // Patient: booking restarting is waited for, not taken for gone.
        match shared::bus::patiently(shared::bus::call(bus, &question)).await {
            Ok(confirmed) => Ok(Asked::Answered {
                asked: question.booking_ids.into_iter().collect(),
                confirmed: confirmed.into_iter().collect(),
            }),
            Err(e) => {
                warn!(error = %e.message, "booking did not say which overdue holds are paid");
                Ok(Asked::Unanswered)
            }
        }
    }

    /// Creates a host, its homestay and a room type.
    pub async fn create_homestay(&self, req: CreateHomestay) -> Result<HomestayCreated, AppError> {
        let key = CreateKey::of(&req, req.idempotency_key.as_deref())?;
        if let Some(first) = key.replay(&self.db).await? {
            return Ok(first);
        }
        let name = req.name.trim();
        shared::text::check_line("name", name, 100, true)?;
        let name_en = req.name_en.trim();
        shared::text::check_line("nameEn", name_en, 100, false)?;
        let room = check_room_type(&req.room_type, false)?;
        let mut details = req.details;
        details.tidy();
        details.check()?;
        let policy = policy(req.cancellation_policy)?;
        county("regionCode", req.region_code)?;
        administers(&req.by, req.region_code)?;
        let txn = self.db.begin().await?;
        if !storage::region_exists(&txn, req.region_code).await? {
            return Err(AppError::bad_input(format!(
                "unknown region {}",
                req.region_code
            )));
        }
        let host = host_of(&txn, req.host_id, &req.host_name, req.region_code).await?;
        let created = HomestayCreated {
            homestay_id: HomestayId::new(),
            host_id: host.0,
            room_type_id: RoomTypeId::new(),
        };
        storage::insert_homestay(
            &txn,
            host,
            (created.homestay_id, (name, name_en), &details),
            req.region_code,
            &room.view(created.room_type_id),
            policy.as_ref(),
            !req.unpublished,
        )
        .await?;
        key.commit(txn, &self.db, created).await
    }

    /// Changes a homestay's names, details and refund rule for bookings
    /// held from now on (admins of its region); the row is locked while
    /// it is read and written, so two admins' changes both stay.
    pub async fn update_homestay(
        &self,
        req: shared::rpcs::UpdateHomestay,
    ) -> Result<shared::rpcs::HomestayView, AppError> {
        use shared::rpcs::GradeChange;
        if req.changes_nothing() {
            return Err(nothing_to_change(
                "name, nameEn, address, grade, amenities, photos or cancellationPolicy",
            ));
        }
        let name = req.name.as_deref().map(str::trim);
        if let Some(name) = name {
            shared::text::check_line("name", name, 100, true)?;
        }
        let name_en = req.name_en.as_deref().map(str::trim);
        if let Some(name_en) = name_en {
            shared::text::check_line("nameEn", name_en, 100, false)?;
        }
        let policy = policy(req.cancellation_policy)?;
        let txn = self.db.begin().await?;
        let Some(mut homestay) = storage::homestay_for_update(&txn, req.homestay_id).await? else {
            return Err(AppError::not_found(NO_HOMESTAY));
        };
        may_change_homestay(&req.by, &homestay)?;
        if let Some(name) = name {
            name.clone_into(&mut homestay.name);
        }
        if let Some(name_en) = name_en {
            name_en.clone_into(&mut homestay.name_en);
        }
        let details = &mut homestay.details;
        if let Some(address) = req.address {
            details.address = address;
        }
        match req.grade {
            GradeChange::Keep => {}
            GradeChange::Set(grade) => details.grade = Some(grade),
            GradeChange::Clear => details.grade = None,
        }
        if let Some(amenities) = req.amenities {
            details.amenities = amenities;
        }
        if let Some(photos) = req.photos {
            details.photos = photos;
        }
        details.tidy();
        details.check()?;
        storage::update_homestay(&txn, &homestay, policy.as_ref()).await?;
        shared::db::commit_in_time(txn).await?;
        if let Some(policy) = policy {
            homestay.cancellation_policy = policy;
        }
        Ok(homestay)
    }

    /// Sets the terms of a range of nights: those given, the others kept.
    pub async fn set_room_calendar(&self, req: SetRoomCalendar) -> Result<u32, AppError> {
        calendar_range(req.from, req.to)?;
        // Every term left out is kept: with none given nothing would change,
        // and "1 night set" would tell an admin whose form lost its fields
        // that something had.
        if req.rooms.is_none()
            && req.price.is_none()
            && req.closed.is_none()
            && req.min_stay.is_none()
        {
            return Err(AppError::bad_input(
                "nothing to set: give rooms, price, closed or minStay (those left out are kept)",
            ));
        }
        if let Some(price) = req.price {
            shared::money::check_price("price", price)?;
        }
        if req.min_stay.is_some_and(|m| !(1..=30).contains(&m)) {
            return Err(AppError::bad_input("minStay: 1 to 30 nights"));
        }
        let today = china_today(Utc::now());
        if req.from < today {
            return Err(AppError::bad_input(format!(
                "from: {} is in the past (today is {today} in China)",
                req.from
            )));
        }
        let last = today + chrono::Duration::days(shared::policy::MAX_DAYS_AHEAD);
        if req.to > last {
            return Err(AppError::bad_input(format!(
                "to: nights are put on sale at most {} days ahead (to: {last} at the latest)",
                shared::policy::MAX_DAYS_AHEAD
            )));
        }
        let txn = self.db.begin().await?;
        let Some((region, on_sale)) = storage::listing_shown(&txn, req.room_type_id).await? else {
            return Err(AppError::not_found("no such room type"));
        };
        administers_listing(&req.by, region, on_sale, "no such room type")?;
        let count = storage::room_count(&txn, req.room_type_id)
            .await?
            .unwrap_or_default();
        if req.rooms.is_some_and(|rooms| rooms > count) {
            return Err(AppError::bad_input(format!(
                "rooms: the room type has {}; at most {count} can be on sale",
                shared::text::plural(count, "room", "rooms")
            )));
        }
        if req.price.is_none()
            && let Some(unset) =
                storage::first_night_unset(&txn, req.room_type_id, req.from, req.to).await?
        {
            return Err(AppError::bad_input(format!(
                "price: {unset} is not on sale yet: give its price (the terms left out are \
                 kept only on nights already set)"
            )));
        }
        let rooms = req.rooms.unwrap_or(count);
        let terms = storage::NightTerms {
            rooms: req.rooms,
            all_rooms: count,
            price: req.price,
            closed: req.closed,
            min_stay: req.min_stay,
        };
        let n = match storage::set_nights(&txn, req.room_type_id, req.from, req.to, terms).await {
            Ok(n) => n,
            Err(e) if shared::db::is_check_violation(&e) => {
                drop(txn);
                let busiest =
                    storage::busiest_night(&self.db, req.room_type_id, req.from, Some(req.to))
                        .await?;
                return Err(too_few_rooms(
                    rooms,
                    busiest,
                    "put at least that many on sale",
                ));
            }
            Err(e) => return Err(e.into()),
        };
        shared::db::commit_in_time(txn).await?;
        Ok(n)
    }

    async fn room_calendar(&self, req: GetRoomCalendar) -> Result<Vec<Night>, AppError> {
        calendar_range(req.from, req.to)?;
        // A homestay off sale (or never put on) is its region admins' to see,
        // as `homestay(id)` is; to anyone else it is not there.
        let shown = storage::listing_shown(&self.db, req.room_type_id).await?;
        match shown {
            Some((region, published))
                if published || req.viewer.is_some_and(|v| v.administers(region)) =>
            {
                Ok(storage::nights(&self.db, req.room_type_id, req.from, req.to).await?)
            }
            _ => Err(AppError::not_found(format!(
                "roomTypeId: no room type {} on sale",
                req.room_type_id
            ))),
        }
    }

    async fn room_calendars(
        &self,
        req: shared::rpcs::GetRoomCalendars,
    ) -> Result<Vec<(RoomTypeId, Vec<Night>)>, AppError> {
        calendar_range(req.from, req.to)?;
        if req.room_type_ids.len() > 500 {
            return Err(AppError::bad_input("at most 500 room types at a time"));
        }
        Ok(storage::nights_of(&self.db, &req.room_type_ids, req.from, req.to).await?)
    }
}

/// The listing's host: the existing one named by `id` (it must be in the
/// listing's region), or a new one called `name`.
pub(crate) async fn host_of<'a, C: sea_orm::ConnectionTrait>(
    conn: &C,
    id: Option<HostId>,
    name: &'a str,
    region: RegionCode,
) -> Result<(HostId, Option<&'a str>), AppError> {
    match id {
        Some(_) if !name.trim().is_empty() => Err(AppError::bad_input(
            "hostId or hostName: an existing host or a new one, not both",
        )),
        Some(id) => {
            let found = storage::hosts(conn, "", Some(id)).await?;
            let Some(host) = found.first() else {
                return Err(AppError::not_found("hostId: no such host"));
            };
            // Where another region's host is is not this caller's to
            // learn (its region's admins may; platform admins administer
            // every region).
            if host.region_code != region {
                return Err(AppError::bad_input(
                    "hostId: the host is not one of this listing's region: register the \
                     household in the listing's region, or leave hostId out and give hostName",
                ));
            }
            Ok((id, None))
        }
        None => Ok((HostId::new(), Some(host_name("hostName", name)?))),
    }
}

/// BAD_USER_INPUT for a change that changes nothing (a form that lost its
/// fields would be told it had saved), naming the fields it may give.
pub(crate) fn nothing_to_change(fields: &str) -> AppError {
    AppError::bad_input(format!(
        "nothing to change: give {fields} (those left out are kept)"
    ))
}

/// CONFLICT for a room count below what a night has held or sold, naming
/// the night with the most (read after the refused change).
fn too_few_rooms(rooms: u32, busiest: Option<(chrono::NaiveDate, i32)>, then: &str) -> AppError {
    match busiest {
        Some((night, taken)) => AppError::conflict(format!(
            "rooms: {} is too few — the night of {night} has {} held or sold; {then}",
            rooms,
            shared::text::plural(u32::try_from(taken).unwrap_or(0), "room", "rooms")
        )),
        None => AppError::conflict(format!(
            "rooms: {} is fewer than a night has held or sold",
            rooms
        )),
    }
}

/// A new host's name, trimmed and checked, reported as `field`.
fn host_name<'a>(field: &str, name: &'a str) -> Result<&'a str, AppError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(AppError::bad_input(format!(
            "{field}: a new host needs a name"
        )));
    }
    shared::text::check_line(field, name, 200, true)?;
    Ok(name)
}

impl Inventory {
    /// Registers a host (admins of its region).
    pub async fn create_host(&self, req: CreateHost) -> Result<HostView, AppError> {
        let key = CreateKey::of(&req, req.idempotency_key.as_deref())?;
        if let Some(first) = key.replay(&self.db).await? {
            return Ok(first);
        }
        county("regionCode", req.region_code)?;
        administers(&req.by, req.region_code)?;
        let txn = self.db.begin().await?;
        if !storage::region_exists(&txn, req.region_code).await? {
            return Err(AppError::bad_input(format!(
                "regionCode: unknown region {}",
                req.region_code
            )));
        }
        let name = host_name("name", &req.name)?;
        let id = HostId::new();
        storage::insert_host(&txn, id, name, req.region_code).await?;
        let view = HostView {
            id,
            name: name.to_owned(),
            region_code: req.region_code,
            listings: 0,
        };
        key.commit(txn, &self.db, view).await
    }

    /// A page of a region's hosts by region code, name and id (admins of
    /// it), counted when asked.
    pub async fn list_host_page(
        &self,
        req: shared::rpcs::ListHostPage,
    ) -> Result<shared::rpcs::HostPage, AppError> {
        administers(&req.by, req.region)?;
        let after = page_after(req.first, req.after.as_deref())?.map(HostId);
        let prefix = req.region.code_prefix();
        let (hosts, has_next_page) =
            storage::host_page(&self.db, &prefix, req.first, after).await?;
        // An empty page after a host that is not on the list (none, or
        // another region's: it tells nothing of where it would sort): a
        // bad cursor, not the end of the list.
        if let Some(after) = after.filter(|_| hosts.is_empty())
            && storage::hosts(&self.db, &prefix, Some(after))
                .await?
                .is_empty()
        {
            return Err(shared::rpcs::not_a_cursor(after));
        }
        let total_count = if req.count {
            Some(storage::host_count(&self.db, &prefix).await?)
        } else {
            None
        };
        Ok(shared::rpcs::HostPage {
            hosts: hosts
                .into_iter()
                .map(|h| {
                    let cursor = h.id.to_string();
                    (h, cursor)
                })
                .collect(),
            has_next_page,
            total_count,
        })
    }

    /// The homestays and routes of a region's hosts, newest first, drafts
    /// included (admins of the region); a route with its coming year's
    /// departures. Five queries a page, however long (six counted).
    pub async fn list_listings(
        &self,
        req: shared::rpcs::ListListings,
    ) -> Result<shared::rpcs::ListingPage, AppError> {
        use shared::rpcs::{ListingView, RouteView};
        administers(&req.by, req.region)?;
        let after = page_after(req.first, req.after.as_deref())?;
        let prefix = req.region.code_prefix();
        let (page, has_next_page) = storage::listing_page(
            &self.db,
            &prefix,
            req.host_id,
            req.published,
            req.first,
            after,
        )
        .await?;
        let total_count = if req.count {
            Some(storage::listing_count(&self.db, &prefix, req.host_id, req.published).await?)
        } else {
            None
        };
        let (route_ids, homestay_ids): (Vec<_>, Vec<_>) =
            page.iter().partition(|(_, is_route)| *is_route);
        let homestay_ids: Vec<HomestayId> = homestay_ids
            .into_iter()
            .map(|(id, _)| HomestayId(id))
            .collect();
        let route_ids: Vec<RouteId> = route_ids.into_iter().map(|(id, _)| RouteId(id)).collect();
        let mut found: HashMap<uuid::Uuid, ListingView> =
            storage::homestays(&self.db, &homestay_ids)
                .await?
                .into_iter()
                .map(|h| (h.id.0, ListingView::Homestay(h)))
                .collect();
        let mut routes: HashMap<uuid::Uuid, RouteView> =
            storage::routes::routes(&self.db, &route_ids)
                .await?
                .into_iter()
                .map(|r| (r.id.0, r))
                .collect();
        let from = china_today(Utc::now());
        let to = from + chrono::Duration::days(routes_rpc::MAX_WINDOW_DAYS - 1);
        for d in storage::routes::departures_of(&self.db, &route_ids, from, to).await? {
            if let Some(route) = routes.get_mut(&d.route_id.0) {
                route.departures.push(d);
            }
        }
        found.extend(
            routes
                .into_iter()
                .map(|(id, r)| (id, ListingView::Route(r))),
        );
        Ok(shared::rpcs::ListingPage {
            listings: page
                .into_iter()
                .filter_map(|(id, _)| found.remove(&id).map(|l| (l, id.to_string())))
                .collect(),
            has_next_page,
            total_count,
        })
    }
}

/// Most rooms of one type a homestay may list.
const MAX_ROOMS: u32 = 500;

/// A new room type, checked: a name, 1 to 20 beds and guests, 1 to
/// [`MAX_ROOMS`] rooms.
struct CheckedRoomType<'a>(&'a NewRoomType, &'a str);

impl CheckedRoomType<'_> {
    fn view(&self, id: RoomTypeId) -> RoomTypeView {
        RoomTypeView {
            id,
            name: self.1.to_owned(),
            name_en: self.0.name_en.trim().to_owned(),
            beds: self.0.beds,
            max_guests: self.0.max_guests,
            rooms: self.0.rooms,
        }
    }
}

/// Checks a room type as a create sends it (`roomType`) or as an update
/// leaves it (`in_update`: its fields are the `input`'s own, and named so).
fn check_room_type(r: &NewRoomType, in_update: bool) -> Result<CheckedRoomType<'_>, AppError> {
    let within = if in_update { "" } else { "roomType." };
    let name = r.name.trim();
    shared::text::check_line(&format!("{within}name"), name, 100, true)?;
    shared::text::check_line(&format!("{within}nameEn"), r.name_en.trim(), 100, false)?;
    if r.beds == 0 || r.max_guests == 0 || r.beds > 20 || r.max_guests > 20 {
        let what = if in_update {
            "beds, maxGuests"
        } else {
            "roomType"
        };
        return Err(AppError::bad_input(format!(
            "{what}: 1 to 20 beds and 1 to 20 guests per room"
        )));
    }
    if !(1..=MAX_ROOMS).contains(&r.rooms) {
        return Err(AppError::bad_input(format!(
            "{within}rooms: 1 to {MAX_ROOMS} rooms of this type"
        )));
    }
    Ok(CheckedRoomType(r, name))
}

impl Inventory {
    /// Changes a room type (admins of its homestay's region); fewer rooms
    /// take the surplus off sale from today, refused while a night has
    /// more held or sold. The room type's row is locked while it changes,
    /// and calendars share-lock it while they check against its count.
    pub async fn update_room_type(
        &self,
        req: shared::rpcs::UpdateRoomType,
    ) -> Result<RoomTypeView, AppError> {
        if req.changes_nothing() {
            return Err(nothing_to_change("name, nameEn, beds, maxGuests or rooms"));
        }
        let txn = self.db.begin().await?;
        let Some(current) = storage::room_type_for_update(&txn, req.room_type_id).await? else {
            return Err(AppError::not_found("no such room type"));
        };
        let Some((region, on_sale)) = storage::listing_shown(&txn, req.room_type_id).await? else {
            return Err(AppError::not_found("no such room type"));
        };
        administers_listing(&req.by, region, on_sale, "no such room type")?;
        let wanted = NewRoomType {
            name: req.name.unwrap_or(current.name),
            name_en: req.name_en.unwrap_or(current.name_en),
            beds: req.beds.unwrap_or(current.beds),
            max_guests: req.max_guests.unwrap_or(current.max_guests),
            rooms: req.rooms.unwrap_or(current.rooms),
        };
        let view = check_room_type(&wanted, true)?.view(req.room_type_id);
        let rooms = view.rooms;
        let today = china_today(Utc::now());
        match storage::update_room_type(&txn, &view, today).await {
            Ok(()) => {}
            Err(e) if shared::db::is_check_violation(&e) => {
                drop(txn);
                let busiest =
                    storage::busiest_night(&self.db, req.room_type_id, today, None).await?;
                return Err(too_few_rooms(rooms, busiest, "keep at least that many"));
            }
            // A deadlock with holds handed back in another order is
            // SERVICE_UNAVAILABLE, "try again" (`AppError::from`).
            Err(e) => return Err(e.into()),
        }
        shared::db::commit_in_time(txn).await?;
        Ok(view)
    }

    /// Adds a room type to a homestay (admins of its region).
    pub async fn add_room_type(&self, req: AddRoomType) -> Result<RoomTypeView, AppError> {
        let key = CreateKey::of(&req, req.idempotency_key.as_deref())?;
        if let Some(first) = key.replay(&self.db).await? {
            return Ok(first);
        }
        let room = check_room_type(&req.room_type, false)?;
        let txn = self.db.begin().await?;
        // Locked: two additions at once count each other.
        let Some(homestay) = storage::homestay_for_update(&txn, req.homestay_id).await? else {
            return Err(AppError::not_found(NO_HOMESTAY));
        };
        may_change_homestay(&req.by, &homestay)?;
        // A copy with the same key that held the lock first has made it
        // (and counts among the room types): its answer, not "at most 30".
        if let Some(first) = key.replay(&txn).await? {
            return Ok(first);
        }
        if homestay.room_types.len() >= MAX_ROOM_TYPES {
            return Err(AppError::bad_input(format!(
                "a homestay has at most {MAX_ROOM_TYPES} room types; change one instead"
            )));
        }
        let view = room.view(RoomTypeId::new());
        storage::insert_room_type(&txn, req.homestay_id, &view).await?;
        key.commit(txn, &self.db, view).await
    }
}

/// The most room types a homestay has (every one is read with its
/// homestay, and its calendar with it on a page of listings).
pub const MAX_ROOM_TYPES: usize = 30;

/// A listing's refund tiers, checked; none: the platform's standard policy.
fn policy(
    tiers: Option<Vec<shared::policy::PolicyTier>>,
) -> Result<Option<CancellationPolicy>, AppError> {
    tiers
        .map(|tiers| {
            CancellationPolicy::new(tiers)
                .map_err(|e| AppError::bad_input(format!("cancellationPolicy: {}", e.0)))
        })
        .transpose()
}

/// A page's start, checking its size (1 to 100): the id of the last item
/// seen, from its cursor.
pub(crate) fn page_after(first: u32, after: Option<&str>) -> Result<Option<uuid::Uuid>, AppError> {
    if !(1..=100).contains(&first) {
        return Err(AppError::bad_input("first: 1 to 100 at a time"));
    }
    after
        .map(|c| uuid::Uuid::parse_str(c).map_err(|_| shared::rpcs::not_a_cursor(c)))
        .transpose()
}

/// A host, and so its homestays and routes, belongs to a county or banner
/// (区、县、旗): the region a listing's money and impact are filed under,
/// and what partnerships pair. A province or prefecture is refused.
pub(crate) fn county(field: &str, region: RegionCode) -> Result<(), AppError> {
    if region.level() == shared::region::RegionLevel::County {
        return Ok(());
    }
    Err(AppError::bad_input(format!(
        "{field}: {region} is a province or prefecture; a host and its listings are in a \
         county or banner (e.g. 150430 敖汉旗)"
    )))
}

/// What a change to a homestay that is not there says (and, to all but its
/// region's admins, to one off sale).
const NO_HOMESTAY: &str = "no such homestay";

/// [`administers`] for a change to a listing: a listing not on sale is
/// not there for those who may not see it — NOT_FOUND in the words an
/// unknown id gets, as reading it by id answers — rather than FORBIDDEN,
/// which would tell them it exists and name its region.
pub(crate) fn administers_listing(
    by: &Principal,
    region: RegionCode,
    on_sale: bool,
    missing: &str,
) -> Result<(), AppError> {
    if on_sale || by.administers(region) {
        administers(by, region)
    } else {
        Err(AppError::not_found(missing))
    }
}

/// Whether `by` may change `homestay` (see [`administers_listing`]).
fn may_change_homestay(
    by: &Principal,
    homestay: &shared::rpcs::HomestayView,
) -> Result<(), AppError> {
    administers_listing(by, homestay.region_code, homestay.published, NO_HOMESTAY)
}

/// Catalogue changes are for the admins of the listing's region (internal
/// callers act as [`Principal::platform`]).
fn administers(by: &Principal, region: RegionCode) -> Result<(), AppError> {
    if by.administers(region) {
        Ok(())
    } else {
        Err(AppError::new(
            ErrorCode::Forbidden,
            format!(
                "only an admin of {region} (or a platform admin) may see or change its hosts and \
                 listings"
            ),
        ))
    }
}

impl Inventory {
    /// Room types bookable for the whole stay, cheapest first.
    pub async fn search(&self, req: SearchHomestays) -> Result<OfferPage, AppError> {
        let stay = StayDates::parse(req.check_in, req.check_out)?;
        let today = china_today(Utc::now());
        if stay.check_in < today {
            return Err(AppError::bad_input(format!(
                "checkIn: {} is in the past (today is {today} in China)",
                stay.check_in
            )));
        }
        if !(1..=100).contains(&req.first) {
            return Err(AppError::bad_input("ask for 1 to 100 offers at a time"));
        }
        // What one booking may take: a search for more finds nothing bookable.
        let travelers = u32::try_from(shared::rpcs::MAX_TRAVELERS).unwrap_or(u32::MAX);
        if !(1..=shared::stay::MAX_ROOMS).contains(&req.rooms)
            || !(1..=travelers).contains(&req.guests)
        {
            return Err(AppError::bad_input(format!(
                "search for 1 to {} rooms and 1 to {travelers} guests, as one booking takes",
                shared::stay::MAX_ROOMS
            )));
        }
        let after = req
            .after
            .as_deref()
            .map(|c| {
                c.split_once(':')
                    .and_then(|(t, id)| {
                        Some((t.parse::<i64>().ok()?, uuid::Uuid::parse_str(id).ok()?))
                    })
                    .ok_or_else(|| shared::rpcs::not_a_cursor(c))
            })
            .transpose()?;
        let prefix = req.region.map(RegionCode::code_prefix).unwrap_or_default();
        let (offers, has_next_page) = storage::search(
            &self.db,
            &prefix,
            stay,
            req.guests,
            req.rooms,
            req.certified_only,
            req.first,
            after,
        )
        .await?;
        Ok(OfferPage {
            offers,
            has_next_page,
        })
    }
}

/// Puts what a hold took back on sale.
async fn give_back<C: sea_orm::ConnectionTrait>(
    conn: &C,
    hold: &storage::Hold,
) -> Result<(), sea_orm::DbErr> {
    if let (Some(room_type), Some(stay)) = (hold.room_type_id, hold.stay) {
        storage::return_nights(conn, room_type, stay, hold.rooms).await?;
    }
    if let Some(departure) = hold.departure_id {
        routes::return_seats(conn, departure, hold.rooms).await?;
    }
    Ok(())
}

/// Takes what an expired hold had taken once more, all or nothing: false
/// when some night or the departure is short (the caller rolls back).
async fn take_again<C: sea_orm::ConnectionTrait>(
    conn: &C,
    hold: &storage::Hold,
) -> Result<bool, sea_orm::DbErr> {
    if let (Some(room_type), Some(stay)) = (hold.room_type_id, hold.stay) {
        return Ok(storage::take_nights(conn, room_type, stay, hold.rooms)
            .await?
            .is_some());
    }
    match hold.departure_id {
        Some(departure) => Ok(routes::take_seats(conn, departure, hold.rooms)
            .await?
            .is_some()),
        None => Ok(false),
    }
}

/// Why an expired hold's capacity could not be taken again, as the
/// listing says now (after "and"): closed, taken off sale or cancelled by
/// its host or operator (a HELD hold would have stood; an expired one is
/// free capacity they withdrew), else sold.
async fn not_taken_again<C: sea_orm::ConnectionTrait>(
    conn: &C,
    hold: &storage::Hold,
) -> Result<assess::Refusal, sea_orm::DbErr> {
    if let (Some(room_type), Some(stay)) = (hold.room_type_id, hold.stay) {
        let (code, why) = match storage::stay_rules(conn, room_type, stay).await? {
            Some((_, rules)) if !rules.published => (
                ErrorCode::Closed,
                "the homestay was taken off sale meanwhile",
            ),
            Some((_, rules)) if rules.closed => (
                ErrorCode::Closed,
                "a night of the stay was closed, or left with no rooms on sale, meanwhile",
            ),
            _ => (ErrorCode::SoldOut, SOLD_MEANWHILE),
        };
        return Ok(assess::Refusal(code, why.into()));
    }
    if let Some(departure) = hold.departure_id
        && let Some((route, d)) = routes::departure(conn, departure).await?
    {
        if let Some(cancelled) = assess::cancelled(&d) {
            return Ok(cancelled);
        }
        if route.status != shared::rpcs::RouteStatus::Published {
            return Ok(assess::Refusal(
                ErrorCode::Closed,
                "the route was taken off sale meanwhile".into(),
            ));
        }
    }
    Ok(assess::Refusal(ErrorCode::SoldOut, SOLD_MEANWHILE.into()))
}

const SOLD_MEANWHILE: &str = "the capacity was sold meanwhile";

/// The refusal of `ev`, with the listing as assessed when it is on sale.
fn rejection(
    ev: &HoldRequested,
    code: ErrorCode,
    reason: &str,
    listing: Option<ListingSnapshot>,
) -> HoldRejected {
    HoldRejected {
        booking_id: ev.booking_id,
        code,
        reason: reason.to_owned(),
        listing: listing.filter(|_| code != ErrorCode::NotPublished),
    }
}

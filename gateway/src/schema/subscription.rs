//! Subscriptions over graphql-transport-ws at `/graphql`, authenticated in
//! `connection_init` (`{ "Authorization": "Bearer <accessToken>" }`).

use super::auth::principal;
use super::types::Booking;
use super::{parse, rpc};
use crate::error::gql;
use crate::push::{Push, Pushed};
use async_graphql::{Context, ID, Result, Subscription as GqlSubscription};
use futures::Stream;
use shared::auth::{Principal, Role};
use shared::bus::{Bus, call};
use shared::ids::BookingId;
use shared::rpcs::GetBooking;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

/// Subscriptions.
pub struct Subscription;

#[GqlSubscription]
impl Subscription {
    /// The booking, pushed each time its status changes (PENDING →
    /// AWAITING_PAYMENT → CONFIRMED, …). For its owner, its agency and the
    /// admins of its region. It completes once the booking has ended; one
    /// that has ended already is pushed once, as it ended, then completes.
    async fn booking_updated(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> Result<impl Stream<Item = Result<Booking>> + use<>> {
        let viewer = principal(ctx)?.clone();
        let booking_id: BookingId = parse("booking id", &id)?;
        let slot = slot(ctx)?;
        // Listen first, then check: no change slips in between.
        let changes = pushes(ctx)?.subscribe();
        let current = rpc(
            ctx,
            GetBooking {
                booking_id,
                viewer: viewer.clone(),
            },
        )
        .await?;
        let bus = super::bus(ctx).map_err(gql)?;
        // The status the client last learnt of (from the subscription or
        // before it): an event that arrives late, after the status it
        // announces was already read, pushes nothing.
        let known = current.status.clone();
        // A booking that has ended already is pushed once as it ended, so
        // the client learns how, and the subscription completes.
        let ended = is_final(&known).then_some(current);
        Ok(futures::stream::unfold(
            (Some(changes), bus, viewer, known, slot, ended),
            move |(changes, bus, viewer, mut known, slot, ended)| async move {
                if let Some(view) = ended {
                    return Some((Ok(Booking(view)), (changes, bus, viewer, known, slot, None)));
                }
                // A booking that ended moves no more: the subscription
                // completes (and gives its slot back).
                if is_final(&known) {
                    return None;
                }
                let mut changes = changes?;
                loop {
                    let changed = match changes.recv().await {
                        Ok(Pushed::Moved(changed)) if changed.booking_id == booking_id => {
                            Some(changed)
                        }
                        Ok(Pushed::Moved(_)) => continue,
                        // Too slow to keep up, or the gateway's queue was
                        // lost a while: ours may be among the missed, so
                        // read the current state.
                        Ok(Pushed::Missed) | Err(RecvError::Lagged(_)) => None,
                        Err(RecvError::Closed) => return None,
                    };
                    let item = match view_of(changed.as_deref(), booking_id, &bus, &viewer).await {
                        // Already known, or older than what is (an event
                        // handled late): statuses only move on.
                        Ok(view) if !moves_on(&known, &view.status) => continue,
                        Ok(view) => {
                            known.clone_from(&view.status);
                            Ok(Booking(view))
                        }
                        // Moved where the viewer may not follow (a region
                        // admin's booking REJECTED, which only its booker
                        // reads) or gone: said once, and the subscription
                        // ends, instead of waiting for ever on a booking
                        // whose end it cannot see (and saying it again at
                        // every gap in the pushes).
                        Err(e)
                            if matches!(
                                e.code,
                                shared::ErrorCode::Forbidden | shared::ErrorCode::NotFound
                            ) =>
                        {
                            return Some((Err(gql(e)), (None, bus, viewer, known, slot, None)));
                        }
                        // Not read (booking away or slow): the change it
                        // was to show is not pushed, and nothing would
                        // read it again. Said, and the subscription ends,
                        // so the client subscribes again (reading the
                        // booking afresh) instead of waiting unaware.
                        Err(e) => {
                            let e = missed(e, booking_id);
                            return Some((Err(gql(e)), (None, bus, viewer, known, slot, None)));
                        }
                    };
                    return Some((item, (Some(changes), bus, viewer, known, slot, None)));
                }
            },
        ))
    }

    /// Every booking of yours, pushed each time one changes status: an
    /// agency's whole feed (all its bookings), a traveler's own. One
    /// connection instead of one subscription per booking.
    async fn bookings_updated(
        &self,
        ctx: &Context<'_>,
    ) -> Result<impl Stream<Item = Result<Booking>> + use<>> {
        let viewer = principal(ctx)?.clone();
        if !matches!(viewer.role, Role::Traveler | Role::Agency) {
            return Err(super::auth::forbidden(
                "the feed is a traveler's or an agency's own bookings",
            ));
        }
        let slot = slot(ctx)?;
        let changes = pushes(ctx)?.subscribe();
        let bus = super::bus(ctx).map_err(gql)?;
        // Whose the change is, from the event itself: no read per change
        // that is not ours.
        let mine = move |changed: &shared::events::BookingStatusChanged, viewer: &Principal| {
            changed.account_id.is_some_and(|account_id| {
                viewer.booked(&shared::auth::Booker {
                    account_id,
                    agency_id: changed.agency_id,
                })
            })
        };
        // The status pushed last for each booking, ended ones too: a late or
        // repeated event of an earlier status (deliveries are handled side
        // by side) pushes nothing. Bounded: the least recently pushed go
        // first, long after any late event of theirs.
        // (Unbounded to the crate, trimmed here: a bounded one takes room
        // for them all at once, ~34 KiB a feed before any push.)
        let known: lru::LruCache<BookingId, String> = lru::LruCache::unbounded();
        Ok(futures::stream::unfold(
            (Some(changes), bus, viewer, known, slot),
            move |(changes, bus, viewer, mut known, slot)| async move {
                let mut changes = changes?;
                loop {
                    let changed = match changes.recv().await {
                        Ok(Pushed::Moved(changed)) if mine(&changed, &viewer) => changed,
                        Ok(Pushed::Moved(_)) => continue,
                        // Too slow to keep up, or the gateway's queue was
                        // lost a while: some of ours may be among the
                        // missed. Said, and the feed ends, so the client
                        // catches up (`myBookings(filter: { updatedSince
                        // })`) instead of missing them unaware.
                        Ok(Pushed::Missed) | Err(RecvError::Lagged(_)) => {
                            let behind = shared::AppError::new(
                                shared::ErrorCode::ServiceUnavailable,
                                "some changes may not have been pushed (the feed \
                                 fell behind, or the gateway lost its queue a \
                                 while): subscribe again and catch up with \
                                 myBookings(filter: { updatedSince })",
                            );
                            return Some((Err(gql(behind)), (None, bus, viewer, known, slot)));
                        }
                        Err(RecvError::Closed) => return None,
                    };
                    let item =
                        match view_of(Some(&changed), changed.booking_id, &bus, &viewer).await {
                            Ok(view) => {
                                let before = known.peek(&view.id).map_or("", String::as_str);
                                if !moves_on(before, &view.status) {
                                    continue;
                                }
                                known.put(view.id, view.status.clone());
                                if known.len() > FEED_MEMORY {
                                    known.pop_lru();
                                }
                                Ok(Booking(view))
                            }
                            // Not read (an event without the booking, from
                            // an older producer, with booking away): its
                            // change is not pushed. Said, naming it, and the
                            // feed ends, as after a gap, so the client
                            // catches up.
                            Err(e) => {
                                let e = missed(e, changed.booking_id);
                                return Some((Err(gql(e)), (None, bus, viewer, known, slot)));
                            }
                        };
                    return Some((item, (Some(changes), bus, viewer, known, slot)));
                }
            },
        ))
    }
}

/// The booking a change announces, as `viewer` may see it: from the event
/// itself when it carries the booking (no read back), else read.
async fn view_of(
    changed: Option<&shared::events::BookingStatusChanged>,
    booking_id: BookingId,
    bus: &Arc<dyn Bus>,
    viewer: &Principal,
) -> Result<shared::rpcs::BookingView, shared::AppError> {
    if let Some(view) = changed.and_then(|c| c.booking.as_deref()) {
        return if view.visible_to(viewer) {
            Ok(view.clone())
        } else {
            Err(shared::AppError::new(
                shared::ErrorCode::Forbidden,
                "you may not see this booking",
            ))
        };
    }
    let request = GetBooking {
        booking_id,
        viewer: viewer.clone(),
    };
    call(bus.as_ref(), &request).await
}

/// `e`, the failed read of a booking whose change a subscription was to
/// push, as the subscription's last word: its code kept (retry safe or
/// not), and what to do.
fn missed(e: shared::AppError, booking_id: BookingId) -> shared::AppError {
    shared::AppError::new(
        e.code,
        format!(
            "a change of booking {booking_id} could not be pushed ({}): subscribe again \
             and read it afresh",
            e.message
        ),
    )
}

/// How many bookings a feed remembers the last pushed status of.
const FEED_MEMORY: usize = 1024;

/// Whether a booking in `status` can move no more.
fn is_final(status: &str) -> bool {
    matches!(status, "REJECTED" | "EXPIRED" | "CANCELLED")
}

/// Whether a booking known as `known` ("" for not yet) has moved on to
/// `status`: a booking's statuses only move forward (PENDING, then
/// AWAITING_PAYMENT, then CONFIRMED, then an end).
fn moves_on(known: &str, status: &str) -> bool {
    fn rank(status: &str) -> u8 {
        match status {
            "" => 0,
            "PENDING" => 1,
            "AWAITING_PAYMENT" => 2,
            "CONFIRMED" => 3,
            _ => 4,
        }
    }
    rank(status) > rank(known)
}

/// A slot of the connection's for one more subscription (none is needed
/// where a subscription runs outside a WebSocket, as in tests).
fn slot(ctx: &Context<'_>) -> Result<Option<tokio::sync::OwnedSemaphorePermit>> {
    ctx.data_opt::<crate::socket::Slots>()
        .map(crate::socket::Slots::take)
        .transpose()
}

/// This gateway's pushes, or SERVICE_UNAVAILABLE (never a type name).
fn pushes<'a>(ctx: &Context<'a>) -> Result<&'a Push> {
    ctx.data::<Push>().map_err(|_| {
        gql(shared::AppError::new(
            shared::ErrorCode::ServiceUnavailable,
            "live updates are not available here",
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::moves_on;

    #[test]
    fn a_status_pushed_once_and_never_an_earlier_one() {
        assert!(moves_on("", "AWAITING_PAYMENT"));
        assert!(moves_on("AWAITING_PAYMENT", "CONFIRMED"));
        assert!(moves_on("CONFIRMED", "CANCELLED"));
        assert!(!moves_on("CONFIRMED", "CONFIRMED"));
        assert!(!moves_on("CONFIRMED", "AWAITING_PAYMENT"));
        assert!(!moves_on("CANCELLED", "CONFIRMED"));
    }
}

//! Subscriptions over graphql-transport-ws at `/graphql`, authenticated in
//! `connection_init` (`{ "Authorization": "Bearer <accessToken>" }`).

use super::auth::principal;
use super::types::Booking;
use super::{parse, rpc};
use crate::error::gql;
use crate::push::Push;
use async_graphql::{Context, ID, Result, Subscription as GqlSubscription};
use futures::Stream;
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
    /// admins of its region.
    async fn booking_updated(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> Result<impl Stream<Item = Result<Booking>> + use<>> {
        let viewer = principal(ctx)?.clone();
        let booking_id: BookingId = parse("booking id", &id)?;
        // Listen first, then check: no change slips in between.
        let changes = ctx.data::<Push>()?.subscribe();
        rpc(
            ctx,
            GetBooking {
                booking_id,
                viewer: viewer.clone(),
            },
        )
        .await?;
        let bus = ctx.data::<Arc<dyn Bus>>()?.clone();
        Ok(futures::stream::unfold(
            (changes, bus, viewer),
            move |(mut changes, bus, viewer)| async move {
                loop {
                    match changes.recv().await {
                        Ok(changed) if changed == booking_id => {}
                        Ok(_) => continue,
                        // Too slow to keep up: ours may be among the missed,
                        // so send the current state.
                        Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => return None,
                    }
                    let request = GetBooking {
                        booking_id,
                        viewer: viewer.clone(),
                    };
                    let item = call(bus.as_ref(), &request).await.map(Booking).map_err(gql);
                    return Some((item, (changes, bus, viewer)));
                }
            },
        ))
    }
}

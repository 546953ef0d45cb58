//! The catalogue: homestay search for travelers, listing management for
//! region admins.

use super::auth::principal;
use super::types::{Date, Money, page_info};
use super::{non_negative, parse, region, rpc, yuan};
use crate::error::bad_input;
use async_graphql::{Context, ID, InputObject, Object, Result, SimpleObject};
use shared::policy::PolicyTier;
use shared::rpcs;

/// A room type bookable for the whole stay, with what the stay costs.
pub struct HomestayOffer(pub rpcs::Offer);

#[Object]
impl HomestayOffer {
    async fn homestay_id(&self) -> ID {
        ID(self.0.homestay_id.to_string())
    }
    async fn homestay_name(&self) -> &str {
        &self.0.homestay_name
    }
    async fn region_code(&self) -> ID {
        ID(self.0.region_code.to_string())
    }
    /// Carries the poverty-relief certification (扶贫产品认定).
    async fn certified(&self) -> bool {
        self.0.certified
    }
    /// Book it with `createBooking(input: { roomTypeId, … })`.
    async fn room_type_id(&self) -> ID {
        ID(self.0.room_type_id.to_string())
    }
    async fn room_type_name(&self) -> &str {
        &self.0.room_type_name
    }
    /// Guests per room.
    async fn max_guests(&self) -> u32 {
        self.0.max_guests
    }
    async fn nights(&self) -> u32 {
        self.0.nights
    }
    /// Fewest rooms free on any night of the stay.
    async fn rooms_left(&self) -> u32 {
        self.0.rooms_left
    }
    /// The whole stay for the rooms asked.
    async fn total(&self) -> Money {
        self.0.total.into()
    }
}

/// An offer in a list.
#[derive(SimpleObject)]
pub struct HomestayOfferEdge {
    pub cursor: String,
    pub node: HomestayOffer,
}

/// Offers, cheapest first.
#[derive(SimpleObject)]
pub struct HomestayOfferConnection {
    pub edges: Vec<HomestayOfferEdge>,
    pub page_info: async_graphql::connection::PageInfo,
}

/// `searchHomestays`.
#[allow(clippy::too_many_arguments)]
pub async fn search(
    ctx: &Context<'_>,
    region_code: Option<ID>,
    check_in: Date,
    check_out: Date,
    guests: i32,
    rooms: i32,
    certified_only: bool,
    first: i32,
    after: Option<String>,
) -> Result<HomestayOfferConnection> {
    let page = rpc(
        ctx,
        rpcs::SearchHomestays {
            region: region_code.map(|c| region(&c)).transpose()?,
            check_in: check_in.0,
            check_out: check_out.0,
            guests: non_negative("guests", guests)?,
            rooms: non_negative("rooms", rooms)?,
            certified_only,
            first: non_negative("first", first)?,
            after,
        },
    )
    .await?;
    let edges: Vec<HomestayOfferEdge> = page
        .offers
        .into_iter()
        .map(|o| HomestayOfferEdge {
            cursor: o.cursor.clone(),
            node: HomestayOffer(o),
        })
        .collect();
    Ok(HomestayOfferConnection {
        page_info: page_info(edges.iter().map(|e| &e.cursor), page.has_next_page),
        edges,
    })
}

/// A room type of a new homestay.
#[derive(InputObject)]
pub struct RoomTypeInput {
    /// e.g. 蒙古包双床房.
    pub name: String,
    pub beds: i32,
    pub max_guests: i32,
}

/// One refund tier of a cancellation policy.
#[derive(InputObject)]
pub struct PolicyTierInput {
    /// Cancelling at least this many days ahead…
    pub days_before: i32,
    /// …refunds this share (0–100).
    pub refund_percent: i32,
}

/// Policy tiers from the API, checked for range (the service checks order).
pub fn policy_tiers(tiers: Option<Vec<PolicyTierInput>>) -> Result<Option<Vec<PolicyTier>>> {
    tiers
        .map(|tiers| {
            tiers
                .into_iter()
                .map(|t| {
                    Ok(PolicyTier {
                        days_before: non_negative("daysBefore", t.days_before)?,
                        refund_percent: u8::try_from(t.refund_percent)
                            .map_err(|_| bad_input("refundPercent is 0 to 100"))?,
                    })
                })
                .collect::<Result<Vec<_>>>()
        })
        .transpose()
}

/// A new homestay (民宿) with its host and first room type.
#[derive(InputObject)]
pub struct HomestayInput {
    /// The household, cooperative or village collective paid for stays.
    pub host_name: String,
    /// Where it is (a county or banner).
    pub region_code: ID,
    pub name: String,
    pub room_type: RoomTypeInput,
    /// Refund tiers; none: the standard policy (100 % from 7 days, 50 % from 3).
    pub cancellation_policy: Option<Vec<PolicyTierInput>>,
}

/// What `createHomestay` made.
#[derive(SimpleObject)]
pub struct HomestayCreated {
    pub homestay_id: ID,
    pub host_id: ID,
    pub room_type_id: ID,
}

/// `createHomestay`: admins of the region (the inventory service checks).
pub async fn create_homestay(ctx: &Context<'_>, input: HomestayInput) -> Result<HomestayCreated> {
    let by = principal(ctx)?.clone();
    let policy = policy_tiers(input.cancellation_policy)?;
    let created = rpc(
        ctx,
        rpcs::CreateHomestay {
            host_name: input.host_name,
            region_code: region(&input.region_code)?,
            name: input.name,
            room_type: rpcs::NewRoomType {
                name: input.room_type.name,
                beds: non_negative("beds", input.room_type.beds)?,
                max_guests: non_negative("maxGuests", input.room_type.max_guests)?,
            },
            cancellation_policy: policy,
            by: Some(by),
        },
    )
    .await?;
    Ok(HomestayCreated {
        homestay_id: ID(created.homestay_id.to_string()),
        host_id: ID(created.host_id.to_string()),
        room_type_id: ID(created.room_type_id.to_string()),
    })
}

/// `setRoomCalendar`: admins of the homestay's region.
pub async fn set_room_calendar(
    ctx: &Context<'_>,
    room_type_id: ID,
    from: Date,
    to: Date,
    rooms: i32,
    price: String,
) -> Result<u32> {
    let by = principal(ctx)?.clone();
    let price = yuan("price", &price)?;
    rpc(
        ctx,
        rpcs::SetRoomCalendar {
            room_type_id: parse("room type id", &room_type_id)?,
            from: from.0,
            to: to.0,
            rooms: non_negative("rooms", rooms)?,
            price,
            by: Some(by),
        },
    )
    .await
}

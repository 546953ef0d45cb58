//! The GraphQL schema: types, queries and mutations over the services' RPCs.

mod impact;
mod types;

use crate::error::{bad_input, gql};
use async_graphql::{Context, EmptySubscription, ID, InputObject, Object, Result, Schema};
pub use impact::*;
use shared::bus::{Bus, call};
use shared::events::HoldItem;
use shared::ids::{BookingId, DepartureId, RoomTypeId};
use shared::region::RegionCode;
use shared::rpc::Rpc;
use shared::rpcs::{self, ContactInput, IdType, TravelerInput};
use shared::{AppError, ErrorCode};
use std::str::FromStr;
use std::sync::Arc;
pub use types::*;

/// The schema type.
pub type DuikouSchema = Schema<Query, Mutation, EmptySubscription>;

/// Builds the schema with its limits; `bus` is how resolvers reach services.
pub fn build_schema(bus: Option<Arc<dyn Bus>>) -> DuikouSchema {
    let mut builder = Schema::build(Query, Mutation, EmptySubscription)
        // GraphiQL's introspection query is 13 deep; leave it room.
        .limit_depth(16)
        .limit_complexity(2_000);
    if let Some(bus) = bus {
        builder = builder.data(bus);
    }
    builder.finish()
}

async fn call_service<R: Rpc>(ctx: &Context<'_>, request: R) -> Result<R::Reply, AppError> {
    let bus = ctx
        .data::<Arc<dyn Bus>>()
        .map_err(|_| AppError::new(ErrorCode::ServiceUnavailable, "the gateway has no bus"))?;
    call(bus.as_ref(), &request).await
}

pub(crate) async fn rpc<R: Rpc>(ctx: &Context<'_>, request: R) -> Result<R::Reply> {
    call_service(ctx, request).await.map_err(gql)
}

fn parse<T: FromStr>(what: &str, value: &str) -> Result<T> {
    value
        .parse()
        .map_err(|_| bad_input(format!("`{value}` is not a valid {what}")))
}

fn region(code: &str) -> Result<RegionCode> {
    RegionCode::parse(code).map_err(|e| bad_input(e.to_string()))
}

/// Queries.
pub struct Query;

#[Object]
impl Query {
    /// Regions under `parentCode` (provinces when omitted), e.g. the banners of 赤峰市 (150400).
    async fn regions(
        &self,
        ctx: &Context<'_>,
        parent_code: Option<ID>,
        poverty_only: Option<bool>,
    ) -> Result<Vec<Region>> {
        let parent_code = parent_code.map(|c| region(&c)).transpose()?;
        let list = rpc(
            ctx,
            rpcs::ListRegions {
                parent_code,
                poverty_only: poverty_only.unwrap_or(false),
            },
        )
        .await?;
        Ok(list.into_iter().map(Region).collect())
    }

    /// One booking.
    async fn booking(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Booking>> {
        let booking_id: BookingId = parse("booking id", &id)?;
        match call_service(ctx, rpcs::GetBooking { booking_id }).await {
            Ok(b) => Ok(Some(Booking(b))),
            Err(e) if e.code == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(gql(e)),
        }
    }

    /// What cancelling a booking now would refund, by its listing's policy.
    async fn cancellation_quote(
        &self,
        ctx: &Context<'_>,
        booking_id: ID,
    ) -> Result<CancellationQuote> {
        let booking_id: BookingId = parse("booking id", &booking_id)?;
        Ok(CancellationQuote(
            rpc(ctx, rpcs::QuoteCancellation { booking_id }).await?,
        ))
    }

    /// Partnerships (结对帮扶) where the region's sub-tree is either side; all
    /// when `regionCode` is omitted.
    async fn partnerships(
        &self,
        ctx: &Context<'_>,
        region_code: Option<ID>,
    ) -> Result<Vec<Partnership>> {
        let region = region_code.map(|c| region(&c)).transpose()?;
        let list = rpc(ctx, rpcs::ListPartnerships { region }).await?;
        Ok(list.into_iter().map(Partnership).collect())
    }

    /// A partnership's figures for a year (China time): totals, months,
    /// progress against its agreement's targets, CSV.
    async fn partnership_report(
        &self,
        ctx: &Context<'_>,
        partnership_id: ID,
        year: i32,
    ) -> Result<PartnershipReport> {
        let partnership_id = parse("partnership id", &partnership_id)?;
        Ok(PartnershipReport(
            rpc(
                ctx,
                rpcs::GetPartnershipReport {
                    partnership_id,
                    year,
                },
            )
            .await?,
        ))
    }

    /// A region's year as sponsor and as beneficiary, each booking once.
    async fn region_impact(
        &self,
        ctx: &Context<'_>,
        region_code: ID,
        year: i32,
    ) -> Result<RegionImpact> {
        let region = region(&region_code)?;
        Ok(RegionImpact(
            rpc(ctx, rpcs::GetRegionImpact { region, year }).await?,
        ))
    }

    /// Which partnerships a booking credited, most specific pair first.
    async fn booking_impact(&self, ctx: &Context<'_>, booking_id: ID) -> Result<Vec<ImpactCredit>> {
        let booking_id: BookingId = parse("booking id", &booking_id)?;
        let credits = rpc(ctx, rpcs::GetBookingImpact { booking_id }).await?;
        Ok(credits.into_iter().map(ImpactCredit).collect())
    }

    /// The public welfare fund (公益基金): its balance and every entry, newest
    /// first. Readable without login; no personal data.
    async fn welfare_fund(&self) -> WelfareFund {
        WelfareFund
    }

    /// A room type's nights from `from` to `to` (exclusive).
    async fn room_calendar(
        &self,
        ctx: &Context<'_>,
        room_type_id: ID,
        from: Date,
        to: Date,
    ) -> Result<Vec<Night>> {
        let room_type_id: RoomTypeId = parse("room type id", &room_type_id)?;
        let nights = rpc(
            ctx,
            rpcs::GetRoomCalendar {
                room_type_id,
                from: from.0,
                to: to.0,
            },
        )
        .await?;
        Ok(nights.into_iter().map(Night).collect())
    }
}

/// A traveler on a booking, with real name and document.
#[derive(InputObject)]
pub struct TravelerIn {
    /// Real name, as on the document.
    pub name: String,
    /// RESIDENT_ID or PASSPORT.
    pub id_type: DocumentType,
    /// The document's number.
    pub id_number: String,
}

/// How to reach the booker.
#[derive(InputObject)]
pub struct ContactIn {
    /// Name.
    pub name: String,
    /// Mobile phone.
    pub phone: String,
    /// Email.
    pub email: Option<String>,
}

/// What to book: either a stay (`roomTypeId`, `checkIn`, `checkOut`, `rooms`)
/// or seats on a departure (`departureId`, one seat per traveler).
#[derive(InputObject)]
pub struct CreateBookingInput {
    /// Room type to stay in.
    pub room_type_id: Option<ID>,
    /// First night.
    pub check_in: Option<Date>,
    /// Departure day.
    pub check_out: Option<Date>,
    /// Rooms per night (default 1).
    pub rooms: Option<i32>,
    /// Route departure.
    pub departure_id: Option<ID>,
    /// Who travels.
    pub travelers: Vec<TravelerIn>,
    /// Who to contact.
    pub contact: ContactIn,
    /// The sponsor region the trip is credited to (GB/T 2260 code).
    pub sponsor_region_code: Option<ID>,
    /// Notes for the host.
    pub notes: Option<String>,
}

fn hold_item(input: &CreateBookingInput) -> Result<HoldItem> {
    match (&input.room_type_id, &input.departure_id) {
        (Some(room_type), None) => {
            let (Some(check_in), Some(check_out)) = (input.check_in, input.check_out) else {
                return Err(bad_input("a stay needs checkIn and checkOut"));
            };
            let rooms = u32::try_from(input.rooms.unwrap_or(1))
                .map_err(|_| bad_input("rooms must be positive"))?;
            Ok(HoldItem::RoomNights {
                room_type_id: parse("room type id", room_type)?,
                check_in: check_in.0,
                check_out: check_out.0,
                rooms,
            })
        }
        (None, Some(departure)) => {
            let departure_id: DepartureId = parse("departure id", departure)?;
            Ok(HoldItem::Seats {
                departure_id,
                seats: input.travelers.len() as u32,
            })
        }
        _ => Err(bad_input(
            "book either a room type (roomTypeId) or a departure (departureId), not both",
        )),
    }
}

/// Mutations.
pub struct Mutation;

#[Object]
impl Mutation {
    /// Books a stay or seats; the same idempotency key with the same input
    /// returns the first booking. The booking starts PENDING and moves to
    /// AWAITING_PAYMENT once inventory holds the capacity.
    async fn create_booking(
        &self,
        ctx: &Context<'_>,
        input: CreateBookingInput,
        idempotency_key: String,
    ) -> Result<Booking> {
        let item = hold_item(&input)?;
        let sponsor_region = input
            .sponsor_region_code
            .as_ref()
            .map(|c| region(c))
            .transpose()?;
        let request = rpcs::CreateBooking {
            idempotency_key,
            item,
            travelers: input
                .travelers
                .into_iter()
                .map(|t| TravelerInput {
                    name: t.name,
                    id_type: t.id_type.into(),
                    id_number: t.id_number,
                })
                .collect(),
            contact: ContactInput {
                name: input.contact.name,
                phone: input.contact.phone,
                email: input.contact.email,
            },
            sponsor_region,
            notes: input.notes,
        };
        Ok(Booking(rpc(ctx, request).await?))
    }

    /// Pays a booking that is AWAITING_PAYMENT. A retry with the same key
    /// never charges twice.
    async fn pay_booking(
        &self,
        ctx: &Context<'_>,
        booking_id: ID,
        payment_token: String,
        idempotency_key: String,
    ) -> Result<Payment> {
        let booking_id: BookingId = parse("booking id", &booking_id)?;
        let booking = rpc(ctx, rpcs::GetBooking { booking_id }).await?;
        let payment = rpc(
            ctx,
            rpcs::PayBooking {
                idempotency_key,
                booking,
                payment_token,
            },
        )
        .await?;
        Ok(Payment(payment))
    }

    /// Cancels a booking; its rooms go back on sale. A paid (CONFIRMED)
    /// booking is refunded by its listing's policy as of now — the amount
    /// `cancellationQuote` shows — and `refundDue`/`refunded`/`history` follow
    /// the refund. Retrying with the same key is safe.
    async fn cancel_booking(
        &self,
        ctx: &Context<'_>,
        booking_id: ID,
        idempotency_key: String,
    ) -> Result<Booking> {
        let booking_id: BookingId = parse("booking id", &booking_id)?;
        Ok(Booking(
            rpc(
                ctx,
                rpcs::CancelBooking {
                    idempotency_key,
                    booking_id,
                },
            )
            .await?,
        ))
    }
}

impl From<DocumentType> for IdType {
    fn from(d: DocumentType) -> IdType {
        match d {
            DocumentType::ResidentId => IdType::ResidentId,
            DocumentType::Passport => IdType::Passport,
        }
    }
}

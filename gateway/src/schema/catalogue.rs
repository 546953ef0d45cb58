//! The catalogue: homestay search for travelers, listing management for
//! region admins.

use super::auth::{region_admin, scoped};
use super::types::Night;
use super::types::{Date, Lang, Money, in_lang, page_info};
use super::{at_least_one, cached, changing, creating, non_negative, parse, region, rpc, yuan};
use crate::error::bad_input;
use async_graphql::{
    Context, Enum, ID, InputObject, MaybeUndefined, Object, Result, SimpleObject, Union,
};
use shared::policy::PolicyTier;
use shared::rpcs;

/// A room type bookable for the whole stay, with what the stay costs.
pub struct HomestayOffer(pub rpcs::Offer);

#[Object]
impl HomestayOffer {
    async fn homestay_id(&self) -> ID {
        ID(self.0.homestay_id.to_string())
    }
    /// In the language asked for (or `Accept-Language`; Chinese by default).
    async fn homestay_name(&self, ctx: &Context<'_>, lang: Option<Lang>) -> String {
        in_lang(ctx, lang, &self.0.homestay_name, &self.0.homestay_name_en).to_owned()
    }
    async fn region_code(&self) -> ID {
        ID(self.0.region_code.to_string())
    }
    /// Carries the poverty-relief certification (扶贫产品认定).
    async fn certified(&self) -> bool {
        self.0.certified
    }
    /// The last day (China time) its certification is valid.
    async fn certified_until(&self) -> Option<Date> {
        self.0.certified_until.map(Date)
    }
    /// Book it with `createBooking(input: { roomTypeId, … })`.
    async fn room_type_id(&self) -> ID {
        ID(self.0.room_type_id.to_string())
    }
    /// In the language asked for (or `Accept-Language`; Chinese by default).
    async fn room_type_name(&self, ctx: &Context<'_>, lang: Option<Lang>) -> String {
        in_lang(ctx, lang, &self.0.room_type_name, &self.0.room_type_name_en).to_owned()
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
    /// The homestay: address, grade, amenities, photos, refund rule (the
    /// homestays of a page come in one call, apart from the search: null
    /// with its error when that call fails, the offer kept).
    async fn homestay(&self, ctx: &Context<'_>) -> Result<Option<Homestay>> {
        offer_homestay(ctx, self.0.homestay_id)
            .await
            .map(|h| Some(Homestay(h)))
    }
    /// The room type offered: beds, guests, rooms (from the same call as
    /// `homestay`: null with its error when it fails).
    async fn room_type(&self, ctx: &Context<'_>) -> Result<Option<RoomType>> {
        let homestay = offer_homestay(ctx, self.0.homestay_id).await?;
        homestay
            .room_types
            .into_iter()
            .find(|r| r.id == self.0.room_type_id)
            .map(|r| Some(RoomType(r)))
            .ok_or_else(|| crate::error::gql(shared::AppError::not_found("no such room type")))
    }
}

/// An offer's homestay: through the request's loader (one call for the
/// page), or a call of its own where there is none.
async fn offer_homestay(
    ctx: &Context<'_>,
    id: shared::ids::HomestayId,
) -> Result<rpcs::HomestayView> {
    let loader =
        ctx.data_opt::<async_graphql::dataloader::DataLoader<super::loaders::HomestayLoader>>();
    let found = match loader {
        Some(loader) => loader
            .load_one(id)
            .await
            .map_err(|e| crate::error::gql((*e).clone()))?,
        None => cached(ctx, rpcs::GetHomestay { homestay_id: id }).await?,
    };
    found.ok_or_else(|| crate::error::gql(shared::AppError::not_found("no such homestay")))
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
    let page = cached(
        ctx,
        rpcs::SearchHomestays {
            region: region_code.map(|c| region(&c)).transpose()?,
            check_in: check_in.0,
            check_out: check_out.0,
            // Below one, negative or not, inventory's refusal says what
            // a search takes.
            guests: u32::try_from(guests).unwrap_or(0),
            rooms: u32::try_from(rooms).unwrap_or(0),
            certified_only,
            first: super::page_size(first)?,
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
    /// In English, e.g. "Yurt, twin beds" (travelers asking for English
    /// see it; left out: they see the Chinese).
    #[graphql(default)]
    pub name_en: String,
    pub beds: i32,
    pub max_guests: i32,
    /// How many rooms of this type the homestay has (1 to 500): the most a
    /// night's calendar can put on sale.
    pub rooms: i32,
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
                        days_before: non_negative("cancellationPolicy: daysBefore", t.days_before)?,
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
    /// A new household, cooperative or village collective paid for stays…
    pub host_name: Option<String>,
    /// …or an existing host of the same region (`createHost`, `hosts`).
    pub host_id: Option<ID>,
    /// Where it is (a county or banner).
    pub region_code: ID,
    pub name: String,
    /// In English, e.g. "Aohan Grassland Yurts" (left out: travelers
    /// asking for English see the Chinese).
    #[graphql(default)]
    pub name_en: String,
    pub room_type: RoomTypeInput,
    /// Street address, e.g. 敖汉旗宝国吐乡兴隆洼村.
    #[graphql(default)]
    pub address: String,
    /// 金宿 (GOLD) or 银宿 (SILVER), if graded.
    pub grade: Option<HomestayGrade>,
    /// e.g. 热水, 暖气, Wi-Fi, 停车 (at most 30).
    #[graphql(default)]
    pub amenities: Vec<String>,
    /// Photo URLs, http or https (at most 20).
    #[graphql(default)]
    pub photos: Vec<String>,
    /// Refund tiers; none: the standard policy (100 % from 7 days, 50 % from 3).
    pub cancellation_policy: Option<Vec<PolicyTierInput>>,
    /// On sale from the start (default), or prepared off sale until
    /// `publishListing`.
    #[graphql(default = true)]
    pub published: bool,
}

/// What `createHomestay` made.
#[derive(SimpleObject)]
pub struct HomestayCreated {
    pub homestay_id: ID,
    pub host_id: ID,
    pub room_type_id: ID,
}

/// `createHomestay`: admins of the region (the inventory service checks).
pub async fn create_homestay(
    ctx: &Context<'_>,
    input: HomestayInput,
    idempotency_key: Option<String>,
) -> Result<HomestayCreated> {
    let by = region_admin(ctx)?.clone();
    let policy = policy_tiers(input.cancellation_policy)?;
    let created = creating(
        ctx,
        ("homestay", idempotency_key.is_some()),
        rpcs::CreateHomestay {
            idempotency_key: scoped(&by, idempotency_key)?,
            host_name: input.host_name.unwrap_or_default(),
            host_id: input.host_id.map(|h| parse("host id", &h)).transpose()?,
            region_code: region(&input.region_code)?,
            name: input.name,
            name_en: input.name_en,
            room_type: input.room_type.into_rpc()?,
            details: rpcs::HomestayDetails {
                address: input.address,
                grade: input.grade.map(Into::into),
                amenities: input.amenities,
                photos: input.photos,
            },
            cancellation_policy: policy,
            unpublished: !input.published,
            by,
        },
    )
    .await?;
    Ok(HomestayCreated {
        homestay_id: ID(created.homestay_id.to_string()),
        host_id: ID(created.host_id.to_string()),
        room_type_id: ID(created.room_type_id.to_string()),
    })
}

/// What to change about a homestay; what is left out stays as it is.
#[derive(InputObject)]
pub struct HomestayUpdate {
    pub name: Option<String>,
    /// Empty: none (travelers asking for English see the Chinese).
    pub name_en: Option<String>,
    pub address: Option<String>,
    /// `null`: no grade any more.
    pub grade: MaybeUndefined<HomestayGrade>,
    /// All of them (at most 30).
    pub amenities: Option<Vec<String>>,
    /// All of them, http or https URLs (at most 20).
    pub photos: Option<Vec<String>>,
    /// For bookings held from now on; bookings already held keep the rule
    /// they were held under.
    pub cancellation_policy: Option<Vec<PolicyTierInput>>,
}

/// `updateHomestay`: admins of the homestay's region.
pub async fn update_homestay(
    ctx: &Context<'_>,
    homestay_id: ID,
    input: HomestayUpdate,
) -> Result<Homestay> {
    let by = region_admin(ctx)?.clone();
    let view = changing(
        ctx,
        rpcs::UpdateHomestay {
            homestay_id: parse("homestay id", &homestay_id)?,
            name: input.name,
            name_en: input.name_en,
            address: input.address,
            grade: match input.grade {
                MaybeUndefined::Undefined => rpcs::GradeChange::Keep,
                MaybeUndefined::Null => rpcs::GradeChange::Clear,
                MaybeUndefined::Value(grade) => rpcs::GradeChange::Set(grade.into()),
            },
            amenities: input.amenities,
            photos: input.photos,
            cancellation_policy: policy_tiers(input.cancellation_policy)?,
            by,
        },
    )
    .await?;
    Ok(Homestay(view))
}

/// The arguments of `setRoomCalendar`.
pub struct CalendarArgs {
    pub room_type_id: ID,
    pub from: Date,
    pub to: Date,
    pub rooms: Option<i32>,
    pub price: Option<String>,
    pub closed: Option<bool>,
    pub min_stay: Option<i32>,
}

/// `setRoomCalendar`: admins of the homestay's region.
pub async fn set_room_calendar(ctx: &Context<'_>, a: CalendarArgs) -> Result<u32> {
    let by = region_admin(ctx)?.clone();
    let price = a.price.map(|p| yuan("price", &p)).transpose()?;
    changing(
        ctx,
        rpcs::SetRoomCalendar {
            room_type_id: parse("room type id", &a.room_type_id)?,
            from: a.from.0,
            to: a.to.0,
            rooms: a.rooms.map(|r| non_negative("rooms", r)).transpose()?,
            price,
            closed: a.closed,
            min_stay: a.min_stay.map(at_least_one),
            by,
        },
    )
    .await
}

impl RoomTypeInput {
    fn into_rpc(self) -> Result<rpcs::NewRoomType> {
        Ok(rpcs::NewRoomType {
            name: self.name,
            name_en: self.name_en,
            beds: at_least_one(self.beds),
            max_guests: at_least_one(self.max_guests),
            rooms: at_least_one(self.rooms),
        })
    }
}

/// The official grade of a rural homestay.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "shared::rpcs::HomestayGrade")]
pub enum HomestayGrade {
    /// 金宿.
    Gold,
    /// 银宿.
    Silver,
}

/// A room type of a homestay: book it by its id.
pub struct RoomType(pub rpcs::RoomTypeView);

#[Object]
impl RoomType {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// In the language asked for (or `Accept-Language`; Chinese by default).
    async fn name(&self, ctx: &Context<'_>, lang: Option<Lang>) -> String {
        in_lang(ctx, lang, &self.0.name, &self.0.name_en).to_owned()
    }
    async fn name_zh(&self) -> &str {
        &self.0.name
    }
    /// Empty when none was given.
    async fn name_en(&self) -> &str {
        &self.0.name_en
    }
    /// Beds per room.
    async fn beds(&self) -> u32 {
        self.0.beds
    }
    /// Guests per room.
    async fn max_guests(&self) -> u32 {
        self.0.max_guests
    }
    /// How many rooms of this type the homestay has.
    async fn rooms(&self) -> u32 {
        self.0.rooms
    }
    /// Its nights in [from, to): rooms, free rooms, price, closed, minimum
    /// stay (a call of its own: null with its error when it fails, the room
    /// type and its homestay kept).
    #[graphql(complexity = "super::per_span(Some(&from), Some(&to), 7, child_complexity)")]
    async fn calendar(
        &self,
        ctx: &Context<'_>,
        from: Date,
        to: Date,
    ) -> Result<Option<Vec<Night>>> {
        let nights = match ctx
            .data_opt::<async_graphql::dataloader::DataLoader<super::loaders::CalendarLoader>>()
        {
            // Every room type of the page in one call per date range.
            Some(loader) => loader
                .load_one((self.0.id, from.0, to.0))
                .await
                .and_then(|found| found.transpose())
                .map_err(|e| crate::error::gql((*e).clone()))?
                .unwrap_or_default(),
            None => {
                rpc(
                    ctx,
                    rpcs::GetRoomCalendar {
                        room_type_id: self.0.id,
                        from: from.0,
                        to: to.0,
                        viewer: super::auth::viewer(ctx),
                    },
                )
                .await?
            }
        };
        Ok(Some(nights.into_iter().map(Night).collect()))
    }
}

/// A homestay (民宿).
pub struct Homestay(pub rpcs::HomestayView);

#[Object]
impl Homestay {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// In the language asked for (or `Accept-Language`; Chinese by default).
    async fn name(&self, ctx: &Context<'_>, lang: Option<Lang>) -> String {
        in_lang(ctx, lang, &self.0.name, &self.0.name_en).to_owned()
    }
    async fn name_zh(&self) -> &str {
        &self.0.name
    }
    /// Empty when none was given.
    async fn name_en(&self) -> &str {
        &self.0.name_en
    }
    /// The household, cooperative or village collective paid for stays.
    async fn host_id(&self) -> ID {
        ID(self.0.host_id.to_string())
    }
    async fn host_name(&self) -> &str {
        &self.0.host_name
    }
    async fn region_code(&self) -> ID {
        ID(self.0.region_code.to_string())
    }
    async fn address(&self) -> &str {
        &self.0.details.address
    }
    /// 金宿 (GOLD) or 银宿 (SILVER), if graded.
    async fn grade(&self) -> Option<HomestayGrade> {
        self.0.details.grade.map(Into::into)
    }
    async fn amenities(&self) -> &[String] {
        &self.0.details.amenities
    }
    /// Photo URLs.
    async fn photos(&self) -> &[String] {
        &self.0.details.photos
    }
    /// Carries a valid poverty-relief certification (扶贫产品认定) today.
    async fn certified(&self) -> bool {
        shared::policy::certified_now(self.0.certified_until)
    }
    async fn certified_until(&self) -> Option<Date> {
        self.0.certified_until.map(Date)
    }
    /// On sale: found in search and bookable (`publishListing`).
    async fn published(&self) -> bool {
        self.0.published
    }
    /// Refund tiers when a paid stay is cancelled.
    async fn cancellation_policy(&self) -> Vec<super::types::PolicyTier> {
        super::types::policy_tiers_view(&self.0.cancellation_policy)
    }
    async fn room_types(&self) -> Vec<RoomType> {
        self.0.room_types.iter().cloned().map(RoomType).collect()
    }
}

/// A host: the household, cooperative or village collective paid for its
/// homestays and routes.
#[derive(SimpleObject)]
pub struct Host {
    pub id: ID,
    pub name: String,
    pub region_code: ID,
    /// Homestays and routes it is paid for.
    pub listings: u32,
}

impl From<rpcs::HostView> for Host {
    fn from(h: rpcs::HostView) -> Host {
        Host {
            id: ID(h.id.to_string()),
            name: h.name,
            region_code: ID(h.region_code.to_string()),
            listings: h.listings,
        }
    }
}

/// `createHost`: admins of the region.
pub async fn create_host(
    ctx: &Context<'_>,
    name: String,
    region_code: ID,
    idempotency_key: Option<String>,
) -> Result<Host> {
    let by = region_admin(ctx)?.clone();
    let host = creating(
        ctx,
        ("host", idempotency_key.is_some()),
        rpcs::CreateHost {
            idempotency_key: scoped(&by, idempotency_key)?,
            name,
            region_code: region(&region_code)?,
            by,
        },
    )
    .await?;
    Ok(host.into())
}

/// A host in a list.
#[derive(SimpleObject)]
pub struct HostEdge {
    pub cursor: String,
    pub node: Host,
}

/// Hosts by region code, then name.
#[derive(SimpleObject)]
pub struct HostConnection {
    pub edges: Vec<HostEdge>,
    pub page_info: async_graphql::connection::PageInfo,
    /// Every host of the region, on all pages (counted only when asked
    /// for).
    pub total_count: u32,
}

/// `hosts`: admins of the region.
pub async fn hosts(
    ctx: &Context<'_>,
    region_code: ID,
    first: i32,
    after: Option<String>,
) -> Result<HostConnection> {
    let by = region_admin(ctx)?.clone();
    let count = ctx.look_ahead().field("totalCount").exists();
    let page = rpc(
        ctx,
        rpcs::ListHostPage {
            region: region(&region_code)?,
            first: super::page_size(first)?,
            after,
            count,
            by,
        },
    )
    .await?;
    let edges: Vec<HostEdge> = page
        .hosts
        .into_iter()
        .map(|(host, cursor)| HostEdge {
            cursor,
            node: host.into(),
        })
        .collect();
    Ok(HostConnection {
        page_info: page_info(edges.iter().map(|e| &e.cursor), page.has_next_page),
        edges,
        total_count: super::types::count(count, page.total_count)?,
    })
}

/// A homestay or a route in the catalogue: what a host is paid for.
#[derive(Union)]
pub enum CatalogueListing {
    Homestay(Homestay),
    Route(super::routes::Route),
}

/// A listing in a list.
#[derive(SimpleObject)]
pub struct CatalogueListingEdge {
    pub cursor: String,
    pub node: CatalogueListing,
}

/// Listings, newest first.
#[derive(SimpleObject)]
pub struct CatalogueListingConnection {
    pub edges: Vec<CatalogueListingEdge>,
    pub page_info: async_graphql::connection::PageInfo,
    /// Every listing the filter lets through, on all pages (counted only
    /// when asked for).
    pub total_count: u32,
}

/// What `regionListings` filters by.
pub struct ListingFilter {
    pub region_code: ID,
    pub host_id: Option<ID>,
    pub published: Option<bool>,
    pub first: i32,
    pub after: Option<String>,
}

/// `regionListings`: admins of the region.
pub async fn region_listings(
    ctx: &Context<'_>,
    f: ListingFilter,
) -> Result<CatalogueListingConnection> {
    let by = region_admin(ctx)?.clone();
    let count = ctx.look_ahead().field("totalCount").exists();
    let page = rpc(
        ctx,
        rpcs::ListListings {
            region: region(&f.region_code)?,
            host_id: f.host_id.map(|id| parse("host id", &id)).transpose()?,
            published: f.published,
            first: super::page_size(f.first)?,
            after: f.after,
            count,
            by,
        },
    )
    .await?;
    let edges: Vec<CatalogueListingEdge> = page
        .listings
        .into_iter()
        .map(|(listing, cursor)| CatalogueListingEdge {
            cursor,
            node: match listing {
                rpcs::ListingView::Homestay(h) => CatalogueListing::Homestay(Homestay(h)),
                rpcs::ListingView::Route(r) => CatalogueListing::Route(super::routes::Route(r)),
            },
        })
        .collect();
    Ok(CatalogueListingConnection {
        page_info: page_info(edges.iter().map(|e| &e.cursor), page.has_next_page),
        edges,
        total_count: super::types::count(count, page.total_count)?,
    })
}

/// `homestay(id)`: public while on sale; one taken off sale (or never
/// put on) only to the admins of its region.
pub async fn homestay(ctx: &Context<'_>, id: ID) -> Result<Option<Homestay>> {
    let found = cached(
        ctx,
        rpcs::GetHomestay {
            homestay_id: parse("homestay id", &id)?,
        },
    )
    .await?;
    Ok(found
        .filter(|h| h.published || super::auth::manages(ctx, h.region_code))
        .map(Homestay))
}

/// `addRoomType`: admins of the homestay's region.
pub async fn add_room_type(
    ctx: &Context<'_>,
    homestay_id: ID,
    room_type: RoomTypeInput,
    idempotency_key: Option<String>,
) -> Result<RoomType> {
    let by = region_admin(ctx)?.clone();
    let view = creating(
        ctx,
        ("room type", idempotency_key.is_some()),
        rpcs::AddRoomType {
            idempotency_key: scoped(&by, idempotency_key)?,
            homestay_id: parse("homestay id", &homestay_id)?,
            room_type: room_type.into_rpc()?,
            by,
        },
    )
    .await?;
    Ok(RoomType(view))
}

/// What to change about a room type; what is left out stays as it is.
#[derive(InputObject)]
pub struct RoomTypeUpdate {
    pub name: Option<String>,
    /// Empty: none.
    pub name_en: Option<String>,
    pub beds: Option<i32>,
    /// For bookings from now on.
    pub max_guests: Option<i32>,
    /// How many rooms of this type the homestay has (1 to 500). Fewer take
    /// the surplus off sale on every night from today (refused while a
    /// night has more held or sold); more let `setRoomCalendar` put more
    /// on sale.
    pub rooms: Option<i32>,
}

/// `updateRoomType`: admins of the homestay's region.
pub async fn update_room_type(
    ctx: &Context<'_>,
    room_type_id: ID,
    input: RoomTypeUpdate,
) -> Result<RoomType> {
    let by = region_admin(ctx)?.clone();
    let view = changing(
        ctx,
        rpcs::UpdateRoomType {
            room_type_id: parse("room type id", &room_type_id)?,
            name: input.name,
            name_en: input.name_en,
            beds: input.beds.map(at_least_one),
            max_guests: input.max_guests.map(at_least_one),
            rooms: input.rooms.map(at_least_one),
            by,
        },
    )
    .await?;
    Ok(RoomType(view))
}

/// What `publishListing` did.
#[derive(SimpleObject)]
pub struct ListingPublication {
    pub listing_id: ID,
    /// HOMESTAY or ROUTE.
    pub listing_kind: String,
    /// On sale now.
    pub published: bool,
}

/// `publishListing`: admins of the listing's region.
pub async fn publish_listing(
    ctx: &Context<'_>,
    listing_id: ID,
    published: bool,
) -> Result<ListingPublication> {
    let by = region_admin(ctx)?.clone();
    let done = changing(
        ctx,
        rpcs::PublishListing {
            listing_id: parse("listing id", &listing_id)?,
            published,
            by,
        },
    )
    .await?;
    Ok(ListingPublication {
        listing_id: ID(done.listing_id.to_string()),
        listing_kind: done.listing_kind,
        published: done.published,
    })
}

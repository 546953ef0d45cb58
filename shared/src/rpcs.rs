//! The RPC requests of each service and their replies. The gateway sends
//! them; the owning service answers.

use crate::events::{HoldItem, ListingSnapshot};
use crate::ids::{
    AgencyId, BookingId, DepartureId, HomestayId, HostId, PaymentId, RefundId, RoomTypeId, RouteId,
};
use crate::money::{Fen, Split};
use crate::region::{Region, RegionCode};
use crate::rpc::Rpc;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// Most travelers on one booking (and in one quote).
pub const MAX_TRAVELERS: usize = 50;

/// The one refusal, whatever the list, of an `after` that is no cursor of
/// the list it is given to.
pub fn not_a_cursor(after: impl std::fmt::Display) -> crate::AppError {
    crate::AppError::bad_input(format!(
        "after: `{after}` is not a cursor of this list; pass the endCursor of one of its pages"
    ))
}

/// Refuses more bookings than a page (100) in one batched call.
pub fn at_most_a_page(ids: &[BookingId]) -> Result<(), crate::AppError> {
    if ids.len() > 100 {
        return Err(crate::AppError::bad_input("at most 100 bookings at a time"));
    }
    Ok(())
}

// ---------------------------------------------------------------- inventory

/// Regions under a parent (or the top level), optionally poverty counties only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListRegions {
    /// Direct children of this region; `None` for provinces.
    pub parent_code: Option<RegionCode>,
    /// Only national poverty counties.
    pub poverty_only: bool,
}
impl Rpc for ListRegions {
    const SERVICE: &'static str = "inventory";
    const METHOD: &'static str = "list_regions";
    type Reply = Vec<Region>;
}

/// A room type to create with a homestay.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewRoomType {
    /// e.g. 蒙古包双床房
    pub name: String,
    /// In English, e.g. "Yurt, twin beds" (empty: none; Chinese is shown).
    #[serde(default)]
    pub name_en: String,
    /// Beds per room.
    pub beds: u32,
    /// Guests per room.
    pub max_guests: u32,
    /// Rooms of this type the homestay has (1 for older callers).
    #[serde(default = "one")]
    pub rooms: u32,
}

/// Creates a host's homestay with one room type.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateHomestay {
    /// The host household, cooperative or village collective.
    pub host_name: String,
    /// An existing host of the same region instead (then `host_name` is
    /// ignored): one household or cooperative with several listings.
    #[serde(default)]
    pub host_id: Option<HostId>,
    /// Where it is (county level).
    pub region_code: RegionCode,
    /// The homestay's name.
    pub name: String,
    /// In English (empty: none; Chinese is shown).
    #[serde(default)]
    pub name_en: String,
    /// Its first room type.
    pub room_type: NewRoomType,
    /// Address, grade, amenities and photos.
    #[serde(default)]
    pub details: HomestayDetails,
    /// Refund tiers when a paid booking is cancelled; none: the standard
    /// policy (100 % from 7 days ahead, 50 % from 3).
    #[serde(default)]
    pub cancellation_policy: Option<Vec<crate::policy::PolicyTier>>,
    /// Kept off sale until [`PublishListing`] (prepared first); otherwise
    /// on sale from the start.
    #[serde(default)]
    pub unpublished: bool,
    /// Who asks: an admin of the region (internal callers such as the demo
    /// seed say [`Principal::platform`](crate::auth::Principal::platform)).
    pub by: crate::auth::Principal,
    /// The client's idempotency key, scoped to it by the gateway: sent
    /// again, the create answers what it first answered.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// The official grade of a rural homestay (乡村民宿等级).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HomestayGrade {
    /// 金宿, the higher grade.
    Gold,
    /// 银宿.
    Silver,
}

/// What a traveler reads about a homestay beyond its name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HomestayDetails {
    /// Street address, e.g. 敖汉旗宝国吐乡兴隆洼村.
    #[serde(default)]
    pub address: String,
    /// 金宿/银宿, if graded.
    #[serde(default)]
    pub grade: Option<HomestayGrade>,
    /// e.g. 热水, 暖气, Wi-Fi, 停车.
    #[serde(default)]
    pub amenities: Vec<String>,
    /// Photo URLs (http or https).
    #[serde(default)]
    pub photos: Vec<String>,
}

impl HomestayDetails {
    /// Trims the address, each amenity and each photo URL.
    pub fn tidy(&mut self) {
        self.address = self.address.trim().to_owned();
        for text in self.amenities.iter_mut().chain(self.photos.iter_mut()) {
            *text = text.trim().to_owned();
        }
    }

    /// Checks lengths and that photos are http(s) URLs; the message names
    /// the field.
    pub fn check(&self) -> Result<(), crate::AppError> {
        let bad = crate::AppError::bad_input;
        crate::text::check_line("address", &self.address, 200, false)?;
        if self.amenities.len() > 30 {
            return Err(bad("amenities: at most 30"));
        }
        for amenity in &self.amenities {
            crate::text::check_line("amenities", amenity, 50, true)?;
        }
        if self.photos.len() > 20 {
            return Err(bad("photos: at most 20"));
        }
        for photo in &self.photos {
            if !is_http_url(photo) {
                return Err(not_an_http_url("photos", photo));
            }
        }
        for (field, list) in [("amenities", &self.amenities), ("photos", &self.photos)] {
            if let Some(twice) = list
                .iter()
                .enumerate()
                .find_map(|(i, x)| list[..i].contains(x).then_some(x))
            {
                return Err(crate::AppError::bad_input(format!(
                    "{field}: `{twice}` is listed twice"
                )));
            }
        }
        Ok(())
    }
}

/// The error for a link [`is_http_url`] refuses, the link cut short if long.
pub fn not_an_http_url(field: &str, link: &str) -> crate::AppError {
    let shown: String = link.chars().take(80).collect();
    let cut = if shown.len() < link.len() { "…" } else { "" };
    crate::AppError::bad_input(format!(
        "{field}: `{shown}{cut}` is not an http(s) URL of at most {MAX_URL} bytes without spaces"
    ))
}

/// Longest link kept (photos, evidence), in bytes.
const MAX_URL: usize = 500;

/// True for an http or https URL of at most 500 bytes (photos, evidence).
pub fn is_http_url(link: &str) -> bool {
    // The url crate takes a space inside a link (it would encode it): a link
    // shown as typed must be one a reader can follow as it reads.
    link.len() <= MAX_URL
        && !link.chars().any(|c| c.is_whitespace() || c.is_control())
        && url::Url::parse(link).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
}

/// What a quote or a hold of a room type that is not there says (and, to
/// all but its region's admins, of one off sale).
pub const NO_SUCH_ROOM_TYPE: &str = "roomTypeId: no such room type";
/// The same for a departure.
pub const NO_SUCH_DEPARTURE: &str = "departureId: no such departure";

/// Changes what travelers read about a homestay (admins of its region);
/// what is left out stays as it is. Bookings already held keep the name
/// and the refund rule they were held under.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateHomestay {
    /// The homestay.
    pub homestay_id: HomestayId,
    /// A new name.
    #[serde(default)]
    pub name: Option<String>,
    /// A new English name (empty: none).
    #[serde(default)]
    pub name_en: Option<String>,
    /// A new address.
    #[serde(default)]
    pub address: Option<String>,
    /// A new grade, or none.
    #[serde(default)]
    pub grade: GradeChange,
    /// The amenities, all of them.
    #[serde(default)]
    pub amenities: Option<Vec<String>>,
    /// The photos, all of them.
    #[serde(default)]
    pub photos: Option<Vec<String>>,
    /// The refund rule for bookings held from now on.
    #[serde(default)]
    pub cancellation_policy: Option<Vec<crate::policy::PolicyTier>>,
    /// Who asks: an admin of the homestay's region.
    pub by: crate::auth::Principal,
}
impl Rpc for UpdateHomestay {
    const SERVICE: &'static str = "inventory";
    const METHOD: &'static str = "update_homestay";
    /// The homestay as it is now.
    type Reply = HomestayView;
}
impl UpdateHomestay {
    /// Whether it leaves every field as it is.
    pub fn changes_nothing(&self) -> bool {
        self.name.is_none()
            && self.name_en.is_none()
            && self.address.is_none()
            && self.grade == GradeChange::Keep
            && self.amenities.is_none()
            && self.photos.is_none()
            && self.cancellation_policy.is_none()
    }
}

/// What [`UpdateHomestay`] does to the grade.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum GradeChange {
    /// Leave it.
    #[default]
    Keep,
    /// Graded so now.
    Set(HomestayGrade),
    /// No grade any more.
    Clear,
}

/// Changes a room type (admins of its homestay's region); what is left
/// out stays. Fewer rooms take the surplus off sale on every night from
/// today, refused while more are held or sold on some night; more rooms
/// let calendars put more on sale. Bookings already held stand.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateRoomType {
    /// The room type.
    pub room_type_id: RoomTypeId,
    /// A new name.
    #[serde(default)]
    pub name: Option<String>,
    /// A new English name (empty: none).
    #[serde(default)]
    pub name_en: Option<String>,
    /// Beds per room.
    #[serde(default)]
    pub beds: Option<u32>,
    /// Guests per room (for holds from now on).
    #[serde(default)]
    pub max_guests: Option<u32>,
    /// Rooms of this type the homestay has.
    #[serde(default)]
    pub rooms: Option<u32>,
    /// Who asks: an admin of the homestay's region.
    pub by: crate::auth::Principal,
}
impl Rpc for UpdateRoomType {
    const SERVICE: &'static str = "inventory";
    const METHOD: &'static str = "update_room_type";
    /// The room type as it is now.
    type Reply = RoomTypeView;
}
impl UpdateRoomType {
    /// Whether it leaves every field as it is.
    pub fn changes_nothing(&self) -> bool {
        self.name.is_none()
            && self.name_en.is_none()
            && self.beds.is_none()
            && self.max_guests.is_none()
            && self.rooms.is_none()
    }
}

/// Adds a room type to a homestay.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddRoomType {
    /// The homestay.
    pub homestay_id: HomestayId,
    /// The room type.
    pub room_type: NewRoomType,
    /// Who asks: an admin of the homestay's region.
    pub by: crate::auth::Principal,
    /// The client's idempotency key, scoped to it by the gateway: sent
    /// again, the create answers what it first answered.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}
impl Rpc for AddRoomType {
    const SERVICE: &'static str = "inventory";
    const METHOD: &'static str = "add_room_type";
    type Reply = RoomTypeView;
}

/// A room type of a homestay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomTypeView {
    /// The room type (book it by this id).
    pub id: RoomTypeId,
    /// e.g. 蒙古包双床房.
    pub name: String,
    /// In English (empty: none).
    #[serde(default)]
    pub name_en: String,
    /// Beds per room.
    pub beds: u32,
    /// Guests per room.
    pub max_guests: u32,
    /// Rooms of this type: the most that a night's calendar can put on sale.
    #[serde(default = "one")]
    pub rooms: u32,
}

/// Reads a homestay with its room types.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetHomestay {
    /// The homestay.
    pub homestay_id: HomestayId,
}
impl Rpc for GetHomestay {
    const SERVICE: &'static str = "inventory";
    const METHOD: &'static str = "get_homestay";
    type Reply = Option<HomestayView>;
}

/// Reads several homestays with their room types at once (a page of
/// search offers shows them in one call; the gateway's DataLoader batches
/// them). At most 100.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetHomestays {
    /// The homestays.
    pub homestay_ids: Vec<HomestayId>,
}
impl Rpc for GetHomestays {
    const SERVICE: &'static str = "inventory";
    const METHOD: &'static str = "get_homestays";
    /// Those that exist, in no particular order.
    type Reply = Vec<HomestayView>;
}

/// A homestay as travelers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HomestayView {
    /// The homestay.
    pub id: HomestayId,
    /// Its name.
    pub name: String,
    /// In English (empty: none).
    #[serde(default)]
    pub name_en: String,
    /// Who is paid for stays.
    pub host_id: HostId,
    /// The host's name.
    pub host_name: String,
    /// Where it is.
    pub region_code: RegionCode,
    /// Address, grade, amenities, photos.
    pub details: HomestayDetails,
    /// Certified as a poverty-relief product until this day.
    pub certified_until: Option<NaiveDate>,
    /// Refund rule for paid bookings.
    pub cancellation_policy: crate::policy::CancellationPolicy,
    /// On sale: found in search and bookable ([`PublishListing`]).
    pub published: bool,
    /// Its room types.
    pub room_types: Vec<RoomTypeView>,
}

/// A host: the household, cooperative or village collective paid for stays
/// and trips.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostView {
    /// The host.
    pub id: HostId,
    /// Its name.
    pub name: String,
    /// Where it is.
    pub region_code: RegionCode,
    /// Homestays and routes it is paid for.
    pub listings: u32,
}

/// Registers a host before its first listing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateHost {
    /// e.g. 敖汉旗宝国吐乡牧民合作社.
    pub name: String,
    /// Where it is (county level).
    pub region_code: RegionCode,
    /// Who asks: an admin of the region.
    pub by: crate::auth::Principal,
    /// The client's idempotency key, scoped to it by the gateway: sent
    /// again, the create answers what it first answered.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}
impl Rpc for CreateHost {
    const SERVICE: &'static str = "inventory";
    const METHOD: &'static str = "create_host";
    type Reply = HostView;
}

/// Hosts by id, up to 100 (those that exist): who a payout is for. A
/// host's name and region are no secret (travelers see them on listings).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetHosts {
    /// The hosts.
    pub host_ids: Vec<HostId>,
}
impl Rpc for GetHosts {
    const SERVICE: &'static str = "inventory";
    const METHOD: &'static str = "get_hosts";
    type Reply = Vec<HostView>;
}

/// A page of the hosts inside a region, by region code, name and id
/// (admins of the region).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListHostPage {
    /// The region's sub-tree.
    pub region: RegionCode,
    /// Page size (1 to 100).
    pub first: u32,
    /// The cursor of the last one seen.
    pub after: Option<String>,
    /// Count every host of the region, too.
    #[serde(default)]
    pub count: bool,
    /// Who asks: an admin of the region.
    pub by: crate::auth::Principal,
}
impl Rpc for ListHostPage {
    const SERVICE: &'static str = "inventory";
    const METHOD: &'static str = "list_host_page";
    type Reply = HostPage;
}

/// A page of hosts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostPage {
    /// Each with the cursor that follows it.
    pub hosts: Vec<(HostView, String)>,
    /// Whether more follow.
    pub has_next_page: bool,
    /// All the region's hosts, when counted.
    #[serde(default)]
    pub total_count: Option<u64>,
}

/// Ids of what [`CreateHomestay`] made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HomestayCreated {
    /// The homestay.
    pub homestay_id: HomestayId,
    /// Its host.
    pub host_id: HostId,
    /// Its room type.
    pub room_type_id: RoomTypeId,
}
impl Rpc for CreateHomestay {
    const SERVICE: &'static str = "inventory";
    const METHOD: &'static str = "create_homestay";
    type Reply = HomestayCreated;
}

/// Sets rooms and price for every night in `[from, to)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetRoomCalendar {
    /// The room type.
    pub room_type_id: RoomTypeId,
    /// First night.
    pub from: NaiveDate,
    /// End (exclusive).
    pub to: NaiveDate,
    /// Rooms on sale each night, at most the room type's count. Each term
    /// left out (None) stays as the night has it; a night not yet on sale
    /// gets all the rooms, is open, and takes stays of any length — and
    /// needs a price.
    #[serde(default)]
    pub rooms: Option<u32>,
    /// Price per room per night.
    #[serde(default)]
    pub price: Option<Fen>,
    /// Closed: not bookable on these nights (rooms and price are kept).
    #[serde(default)]
    pub closed: Option<bool>,
    /// Shortest stay that may begin on these nights (1: any).
    #[serde(default)]
    pub min_stay: Option<u32>,
    /// Who asks: an admin of the homestay's region.
    pub by: crate::auth::Principal,
}
impl Rpc for SetRoomCalendar {
    const SERVICE: &'static str = "inventory";
    const METHOD: &'static str = "set_room_calendar";
    /// Nights written.
    type Reply = u32;
}

/// One night of a room type's calendar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Night {
    /// The night.
    pub date: NaiveDate,
    /// Rooms on sale.
    pub rooms: u32,
    /// Rooms not held or sold.
    pub available: u32,
    /// Price per room.
    pub price: Fen,
    /// Not bookable.
    pub closed: bool,
    /// Shortest stay that may begin this night.
    pub min_stay: u32,
}

fn one() -> u32 {
    1
}

/// Reads a room type's calendar for `[from, to)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetRoomCalendar {
    /// The room type.
    pub room_type_id: RoomTypeId,
    /// First night.
    pub from: NaiveDate,
    /// End (exclusive).
    pub to: NaiveDate,
    /// Who asks: a homestay off sale shows its calendar only to the admins
    /// of its region (none: an anonymous caller).
    #[serde(default)]
    pub viewer: Option<crate::auth::Principal>,
}
impl Rpc for GetRoomCalendar {
    const SERVICE: &'static str = "inventory";
    const METHOD: &'static str = "get_room_calendar";
    type Reply = Vec<Night>;
}

/// The calendars of several room types for one `[from, to)`: what a page
/// of homestays shows, in one call (the gateway's DataLoader batches them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetRoomCalendars {
    /// The room types.
    pub room_type_ids: Vec<RoomTypeId>,
    /// First night.
    pub from: NaiveDate,
    /// End (exclusive).
    pub to: NaiveDate,
}
impl Rpc for GetRoomCalendars {
    const SERVICE: &'static str = "inventory";
    const METHOD: &'static str = "get_room_calendars";
    type Reply = Vec<(RoomTypeId, Vec<Night>)>;
}

/// Homestays bookable for a whole stay: every night has the rooms free.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchHomestays {
    /// Only inside this region (its whole sub-tree).
    pub region: Option<RegionCode>,
    /// First night.
    pub check_in: NaiveDate,
    /// Day of departure.
    pub check_out: NaiveDate,
    /// Guests to sleep.
    pub guests: u32,
    /// Rooms wanted.
    pub rooms: u32,
    /// Only certified poverty-relief listings.
    pub certified_only: bool,
    /// Page size (1 to 100).
    pub first: u32,
    /// The cursor of the last offer seen.
    pub after: Option<String>,
}
impl Rpc for SearchHomestays {
    const SERVICE: &'static str = "inventory";
    const METHOD: &'static str = "search_homestays";
    type Reply = OfferPage;
}

/// A room type bookable for the whole stay, with its total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The homestay.
    pub homestay_id: HomestayId,
    /// Its name.
    pub homestay_name: String,
    /// In English (empty: none).
    #[serde(default)]
    pub homestay_name_en: String,
    /// Where it is.
    pub region_code: RegionCode,
    /// Certified poverty-relief listing.
    pub certified: bool,
    /// The last day its certification is valid.
    #[serde(default)]
    pub certified_until: Option<NaiveDate>,
    /// The room type.
    pub room_type_id: RoomTypeId,
    /// Its name.
    pub room_type_name: String,
    /// In English (empty: none).
    #[serde(default)]
    pub room_type_name_en: String,
    /// Guests per room.
    pub max_guests: u32,
    /// Nights of the stay.
    pub nights: u32,
    /// Fewest rooms free on any night of the stay.
    pub rooms_left: u32,
    /// Price of the stay for the rooms asked.
    pub total: Fen,
    /// Pass as `after` for the offers that follow this one.
    pub cursor: String,
}

/// A page of offers, cheapest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OfferPage {
    /// The offers.
    pub offers: Vec<Offer>,
    /// Whether more follow.
    pub has_next_page: bool,
}

/// Prices a booking request before it is made, by the same rules the hold
/// applies. Unknown listings and impossible requests are errors
/// (`BAD_USER_INPUT` naming the field); a listing that cannot take it now
/// (closed, minimum stay, cut-off, off sale, sold out) is a quote that
/// says so.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuoteBooking {
    /// What would be held.
    pub item: crate::events::HoldItem,
    /// Travelers it is for.
    pub travelers: u32,
}
impl Rpc for QuoteBooking {
    const SERVICE: &'static str = "inventory";
    const METHOD: &'static str = "quote_booking";
    type Reply = BookingQuote;
}

/// What a booking request would cost and whether it can be held now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookingQuote {
    /// The listing as a booking would snapshot it (terms, certification).
    pub listing: crate::events::ListingSnapshot,
    /// The whole price: every night for the rooms asked, or every seat.
    pub total: Fen,
    /// Whether it could be held at this moment (the hold itself decides:
    /// someone may take the last room in between).
    pub bookable: bool,
    /// Why not, when not: `SOLD_OUT`, `CLOSED`, `MIN_STAY`, `CUT_OFF`,
    /// `NOT_PUBLISHED`.
    pub refusal: Option<crate::ErrorCode>,
    /// The reason, for the traveler.
    pub reason: Option<String>,
}

// ------------------------------------------------------------------- routes

/// One day of a route's itinerary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItineraryDay {
    /// Day number, from 1.
    pub day: u32,
    /// What happens that day, e.g. 赤峰—克什克腾旗 草原骑马.
    pub title: String,
    /// The same in English (empty when not given: English readers see the
    /// Chinese).
    #[serde(default)]
    pub title_en: String,
    /// Regions visited that day (a route is found by any region it visits).
    pub regions: Vec<RegionCode>,
}

/// Changes a route's texts, itinerary, price or refund rule (admins of its
/// region); what is left out stays as it is. Bookings already held keep
/// their price and refund rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateRoute {
    /// The route.
    pub route_id: RouteId,
    /// A new Chinese title.
    #[serde(default)]
    pub title_zh: Option<String>,
    /// A new English title.
    #[serde(default)]
    pub title_en: Option<String>,
    /// A new Chinese description.
    #[serde(default)]
    pub description_zh: Option<String>,
    /// A new English description.
    #[serde(default)]
    pub description_en: Option<String>,
    /// The days, all of them.
    #[serde(default)]
    pub itinerary: Option<Vec<ItineraryDay>>,
    /// A new price per person (departures without their own price).
    #[serde(default)]
    pub price: Option<Fen>,
    /// The refund rule for bookings held from now on.
    #[serde(default)]
    pub cancellation_policy: Option<Vec<crate::policy::PolicyTier>>,
    /// Who asks: an admin of the route's region.
    pub by: crate::auth::Principal,
}
impl Rpc for UpdateRoute {
    const SERVICE: &'static str = "inventory";
    const METHOD: &'static str = "update_route";
    /// The route as it is now, with its coming year's departures.
    type Reply = RouteView;
}
impl UpdateRoute {
    /// Whether it leaves every field as it is.
    pub fn changes_nothing(&self) -> bool {
        self.title_zh.is_none()
            && self.title_en.is_none()
            && self.description_zh.is_none()
            && self.description_en.is_none()
            && self.itinerary.is_none()
            && self.price.is_none()
            && self.cancellation_policy.is_none()
    }
}

/// A route's sale state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RouteStatus {
    /// Being written; not found by search, not bookable.
    Draft,
    /// On sale.
    Published,
    /// Taken off sale; bookings already made stand.
    Unpublished,
}

impl RouteStatus {
    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteStatus::Draft => "DRAFT",
            RouteStatus::Published => "PUBLISHED",
            RouteStatus::Unpublished => "UNPUBLISHED",
        }
    }

    /// From the stored text.
    pub fn parse(s: &str) -> Option<RouteStatus> {
        match s {
            "DRAFT" => Some(RouteStatus::Draft),
            "PUBLISHED" => Some(RouteStatus::Published),
            "UNPUBLISHED" => Some(RouteStatus::Unpublished),
            _ => None,
        }
    }
}

/// Creates a route (旅游线路) as a DRAFT, with the host paid for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateRoute {
    /// The cooperative, village collective or household that runs it.
    pub host_name: String,
    /// An existing host of the same region instead (then `host_name` is
    /// ignored): one household or cooperative with several listings.
    #[serde(default)]
    pub host_id: Option<HostId>,
    /// Where it is based: its host's region, where payouts and impact count.
    pub region_code: RegionCode,
    /// Title in Chinese.
    pub title_zh: String,
    /// Title in English.
    pub title_en: String,
    /// Description in Chinese.
    #[serde(default)]
    pub description_zh: String,
    /// Description in English.
    #[serde(default)]
    pub description_en: String,
    /// Day by day, with the regions visited.
    pub itinerary: Vec<ItineraryDay>,
    /// Price per person (a departure may override it).
    pub price: Fen,
    /// Refund tiers; none: the standard policy.
    #[serde(default)]
    pub cancellation_policy: Option<Vec<crate::policy::PolicyTier>>,
    /// Who asks: an admin of the start region.
    pub by: crate::auth::Principal,
    /// The client's idempotency key, scoped to it by the gateway: sent
    /// again, the create answers what it first answered.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// Ids of what [`CreateRoute`] made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouteCreated {
    /// The route.
    pub route_id: RouteId,
    /// Its host.
    pub host_id: HostId,
}
impl Rpc for CreateRoute {
    const SERVICE: &'static str = "inventory";
    const METHOD: &'static str = "create_route";
    type Reply = RouteCreated;
}

/// Adds a departure (a dated group with seats) to a route.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddDeparture {
    /// The route.
    pub route_id: RouteId,
    /// Day the group leaves.
    pub starts_on: NaiveDate,
    /// Seats on sale.
    pub seats: u32,
    /// Price per person for this departure; none: the route's price.
    #[serde(default)]
    pub price: Option<Fen>,
    /// Bookings close this many days before `starts_on` (China time).
    pub cutoff_days: u32,
    /// Who asks: an admin of the route's region.
    pub by: crate::auth::Principal,
    /// The client's idempotency key, scoped to it by the gateway: sent
    /// again, the create answers what it first answered.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}
impl Rpc for AddDeparture {
    const SERVICE: &'static str = "inventory";
    const METHOD: &'static str = "add_departure";
    type Reply = DepartureView;
}

/// Changes a departure that has not left (admins of its route's region):
/// its seats (never fewer than are held or sold), its own price, when
/// bookings close. What is left out stays; bookings already held stand.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateDeparture {
    /// The departure.
    pub departure_id: DepartureId,
    /// Seats on sale in all (held and sold ones included).
    #[serde(default)]
    pub seats: Option<u32>,
    /// Its own price per person.
    #[serde(default)]
    pub price: Option<Fen>,
    /// No price of its own any more: the route's (`price` is then None).
    #[serde(default)]
    pub route_price: bool,
    /// Bookings close this many days before it leaves.
    #[serde(default)]
    pub cutoff_days: Option<u32>,
    /// Who asks: an admin of the route's region.
    pub by: crate::auth::Principal,
}
impl Rpc for UpdateDeparture {
    const SERVICE: &'static str = "inventory";
    const METHOD: &'static str = "update_departure";
    /// The departure as it is now.
    type Reply = DepartureView;
}
impl UpdateDeparture {
    /// Whether it leaves every field as it is.
    pub fn changes_nothing(&self) -> bool {
        self.seats.is_none()
            && self.price.is_none()
            && !self.route_price
            && self.cutoff_days.is_none()
    }
}

/// Cancels a departure that has not left (admins of its route's region):
/// it takes no more bookings, and each booking on it is cancelled, those
/// paid refunded in full whatever the route's policy. Cancelling it again
/// answers the departure as it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CancelDeparture {
    /// The departure.
    pub departure_id: DepartureId,
    /// Why, for its travelers (one line, at most 200 characters).
    pub reason: String,
    /// Who asks: an admin of the route's region.
    pub by: crate::auth::Principal,
}
impl Rpc for CancelDeparture {
    const SERVICE: &'static str = "inventory";
    const METHOD: &'static str = "cancel_departure";
    /// The departure, cancelled.
    type Reply = DepartureView;
}

/// Publishes or unpublishes a route.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetRouteStatus {
    /// The route.
    pub route_id: RouteId,
    /// PUBLISHED or UNPUBLISHED.
    pub status: RouteStatus,
    /// Who asks: an admin of the route's region.
    pub by: crate::auth::Principal,
}
impl Rpc for SetRouteStatus {
    const SERVICE: &'static str = "inventory";
    const METHOD: &'static str = "set_route_status";
    type Reply = RouteView;
}

/// Puts a listing — a homestay or a route — on sale, or takes it off:
/// off sale, it leaves search and new bookings of it are refused
/// (`NOT_PUBLISHED`); bookings made before keep their rooms and seats.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishListing {
    /// A homestay's or a route's id.
    pub listing_id: uuid::Uuid,
    /// On sale (true) or off (false).
    pub published: bool,
    /// Who asks: an admin of the listing's region.
    pub by: crate::auth::Principal,
}
impl Rpc for PublishListing {
    const SERVICE: &'static str = "inventory";
    const METHOD: &'static str = "publish_listing";
    type Reply = ListingPublished;
}

/// A listing's sale status after [`PublishListing`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListingPublished {
    /// The listing.
    pub listing_id: uuid::Uuid,
    /// `HOMESTAY` or `ROUTE`.
    pub listing_kind: String,
    /// On sale now.
    pub published: bool,
}

/// The homestays and routes of a region's hosts, drafts and listings off
/// sale included, newest first (admins of the region).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListListings {
    /// Listings of hosts inside this region's sub-tree.
    pub region: RegionCode,
    /// Only this host's.
    pub host_id: Option<HostId>,
    /// Only those on sale (`true`) or only those not (`false`).
    pub published: Option<bool>,
    /// Page size (1 to 100).
    pub first: u32,
    /// The cursor of the last one seen.
    pub after: Option<String>,
    /// Count every listing the filter lets through, too.
    #[serde(default)]
    pub count: bool,
    /// Who asks: an admin of the region.
    pub by: crate::auth::Principal,
}
impl Rpc for ListListings {
    const SERVICE: &'static str = "inventory";
    const METHOD: &'static str = "list_listings";
    type Reply = ListingPage;
}

/// A homestay or a route, as [`GetHomestay`] and [`GetRoute`] show them (a
/// route with its departures of the coming year).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ListingView {
    /// A homestay with its room types.
    Homestay(HomestayView),
    /// A route with its departures.
    Route(RouteView),
}

/// A page of listings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListingPage {
    /// Each with the cursor that follows it.
    pub listings: Vec<(ListingView, String)>,
    /// Whether more follow.
    pub has_next_page: bool,
    /// All the listings the filter lets through, when counted.
    #[serde(default)]
    pub total_count: Option<u64>,
}

/// Reads a route with its departures in `[from, to]` (all when unbounded).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetRoute {
    /// The route.
    pub route_id: RouteId,
    /// Earliest departure day shown.
    #[serde(default)]
    pub from: Option<NaiveDate>,
    /// Latest departure day shown.
    #[serde(default)]
    pub to: Option<NaiveDate>,
}
/// The departures of several routes in one window (a page of routes shows
/// them in one call; the gateway's DataLoader batches them). The window's
/// defaults are `GetRoute`'s.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetDepartures {
    /// The routes (at most 100).
    pub route_ids: Vec<RouteId>,
    /// Earliest departure day shown.
    pub from: Option<NaiveDate>,
    /// Latest departure day shown.
    pub to: Option<NaiveDate>,
}
impl Rpc for GetDepartures {
    const SERVICE: &'static str = "inventory";
    const METHOD: &'static str = "get_departures";
    /// Each route asked for, with its departures in the window.
    type Reply = Vec<(RouteId, Vec<DepartureView>)>;
}

impl Rpc for GetRoute {
    const SERVICE: &'static str = "inventory";
    const METHOD: &'static str = "get_route";
    /// None: no such route (drafts are shown too; the gateway hides them
    /// from those who may not manage them).
    type Reply = Option<RouteView>;
}

/// A dated departure of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepartureView {
    /// The departure (book it by this id).
    pub id: DepartureId,
    /// Its route.
    pub route_id: RouteId,
    /// Day the group leaves.
    pub starts_on: NaiveDate,
    /// Seats on sale.
    pub seats: u32,
    /// Seats not held or sold.
    pub seats_left: u32,
    /// Price per person (the override or the route's price).
    pub price: Fen,
    /// Last day bookings are taken.
    pub last_booking_day: NaiveDate,
    /// When its operator cancelled it; none while it runs.
    #[serde(default)]
    pub cancelled_at: Option<DateTime<Utc>>,
    /// Why it was cancelled, as the operator gave it.
    #[serde(default)]
    pub cancel_reason: Option<String>,
}

/// A route as travelers and admins see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteView {
    /// The route.
    pub id: RouteId,
    /// Who is paid for it.
    pub host_id: HostId,
    /// The host's name.
    pub host_name: String,
    /// Where it is based (its host's region).
    pub region_code: RegionCode,
    /// Title in Chinese.
    pub title_zh: String,
    /// Title in English.
    pub title_en: String,
    /// Description in Chinese.
    pub description_zh: String,
    /// Description in English.
    pub description_en: String,
    /// Day by day.
    pub itinerary: Vec<ItineraryDay>,
    /// Price per person.
    pub price: Fen,
    /// Refund rule for paid bookings.
    pub cancellation_policy: crate::policy::CancellationPolicy,
    /// Sale state.
    pub status: RouteStatus,
    /// Certified as a poverty-relief product until this day.
    pub certified_until: Option<NaiveDate>,
    /// Departures (those asked for, or those matching a search).
    pub departures: Vec<DepartureView>,
}

/// Widest window of departure days read or searched at once, both ends
/// included: a window left open ends a year (365 days) after its start.
pub const ROUTE_WINDOW_DAYS: i64 = 366;

/// Published routes with departures in a date window that still take
/// `travelers`, by earliest departure on sale (whatever its seats; see
/// inventory's `storage::routes::search`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchRoutes {
    /// Start or visited region inside this sub-tree.
    pub region: Option<RegionCode>,
    /// Earliest departure day.
    pub from: NaiveDate,
    /// Latest departure day.
    pub to: NaiveDate,
    /// Seats needed on one departure.
    pub travelers: u32,
    /// Highest price per person.
    #[serde(default)]
    pub max_price: Option<Fen>,
    /// Only certified poverty-relief routes.
    pub certified_only: bool,
    /// Words in the title or description.
    #[serde(default)]
    pub text: Option<String>,
    /// Page size (1 to 100).
    pub first: u32,
    /// The cursor of the last route seen.
    pub after: Option<String>,
}
impl Rpc for SearchRoutes {
    const SERVICE: &'static str = "inventory";
    const METHOD: &'static str = "search_routes";
    type Reply = RoutePage;
}

/// A page of routes found, each with its matching departures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoutePage {
    /// Each route with the cursor that follows it.
    pub routes: Vec<(RouteView, String)>,
    /// Whether more follow.
    pub has_next_page: bool,
}

// ------------------------------------------------------------ certification

/// Where an application for certification (扶贫产品认定) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CertificationState {
    /// Filed for the host; the county (or higher) office reviews it.
    Applied,
    /// Accepted for public notice (公示): anyone may object until it ends.
    PublicNotice,
    /// Certified until `valid_until`.
    Certified,
    /// Certified once, and the validity ran out.
    Expired,
    /// Refused before certification.
    Rejected,
    /// Withdrawn after certification.
    Revoked,
}

impl CertificationState {
    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            CertificationState::Applied => "APPLIED",
            CertificationState::PublicNotice => "PUBLIC_NOTICE",
            CertificationState::Certified => "CERTIFIED",
            CertificationState::Expired => "EXPIRED",
            CertificationState::Rejected => "REJECTED",
            CertificationState::Revoked => "REVOKED",
        }
    }

    /// From the stored text.
    pub fn parse(s: &str) -> Option<CertificationState> {
        [
            CertificationState::Applied,
            CertificationState::PublicNotice,
            CertificationState::Certified,
            CertificationState::Expired,
            CertificationState::Rejected,
            CertificationState::Revoked,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// Applies for the certification of a homestay or route, for its host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyForCertification {
    /// The homestay or route.
    pub listing_id: uuid::Uuid,
    /// How the listing benefits poor households (the application's case).
    pub statement: String,
    /// Links to the evidence: the county office's documents, photos, lists
    /// of households (http or https, at most 10).
    #[serde(default)]
    pub evidence: Vec<String>,
    /// Who files it: an admin of the listing's region.
    pub by: crate::auth::Principal,
}
impl Rpc for ApplyForCertification {
    const SERVICE: &'static str = "inventory";
    const METHOD: &'static str = "apply_for_certification";
    type Reply = CertificationView;
}

/// A step of the certification procedure.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "step")]
pub enum CertificationStep {
    /// APPLIED → PUBLIC_NOTICE for `notice_days` days (admins).
    AcceptForPublicNotice {
        /// Length of the notice.
        notice_days: u32,
    },
    /// An objection during the notice (any logged-in account).
    Object {
        /// What is objected.
        text: String,
    },
    /// PUBLIC_NOTICE → CERTIFIED once the notice ended (admins); with
    /// objections on record, `resolution` says how they were settled.
    Certify {
        /// Last valid day.
        valid_until: NaiveDate,
        /// How objections were resolved (required when there are any).
        resolution: Option<String>,
    },
    /// APPLIED or PUBLIC_NOTICE → REJECTED (admins).
    Reject {
        /// Why.
        reason: String,
    },
    /// CERTIFIED → REVOKED (admins).
    Revoke {
        /// Why.
        reason: String,
    },
}

/// Takes a step on a certification.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdvanceCertification {
    /// The certification.
    pub certification_id: uuid::Uuid,
    /// The step.
    pub step: CertificationStep,
    /// Who takes it.
    pub by: crate::auth::Principal,
}
impl Rpc for AdvanceCertification {
    const SERVICE: &'static str = "inventory";
    const METHOD: &'static str = "advance_certification";
    type Reply = CertificationView;
}

/// Certifications of listings in a region's sub-tree, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListCertifications {
    /// Listings inside this region; all when none.
    pub region: Option<RegionCode>,
    /// Only in this state (EXPIRED: certified ones past their validity).
    pub state: Option<CertificationState>,
    /// Only this listing's.
    #[serde(default)]
    pub listing_id: Option<uuid::Uuid>,
    /// Page size (1 to 100).
    pub first: u32,
    /// The cursor of the last one seen.
    pub after: Option<String>,
    /// Count every certification the filter lets through, too.
    #[serde(default)]
    pub count: bool,
    /// Who reads the board: the certifications of a listing not on sale
    /// are its region admins' to see, except in public notice (公示,
    /// public by its nature).
    #[serde(default)]
    pub viewer: Option<crate::auth::Principal>,
}
impl Rpc for ListCertifications {
    const SERVICE: &'static str = "inventory";
    const METHOD: &'static str = "list_certifications";
    type Reply = CertificationPage;
}

/// A page of certifications.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertificationPage {
    /// Each with the cursor that follows it.
    pub certifications: Vec<(CertificationView, String)>,
    /// Whether more follow.
    pub has_next_page: bool,
    /// All the certifications the filter lets through, when counted.
    #[serde(default)]
    pub total_count: Option<u64>,
}

/// An objection raised during a public notice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Objection {
    /// What was objected.
    pub text: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Who raised it (the gateway shows it to the deciding admins only).
    #[serde(default)]
    pub by: Option<crate::ids::AccountId>,
}

/// A certification as the public notice shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificationView {
    /// The certification.
    pub id: uuid::Uuid,
    /// The homestay or route.
    pub listing_id: uuid::Uuid,
    /// HOMESTAY or ROUTE.
    pub listing_kind: String,
    /// Its name.
    pub listing_title: String,
    /// Where it is.
    pub region_code: RegionCode,
    /// Where it stands (EXPIRED computed from `valid_until`, China time).
    pub state: CertificationState,
    /// The host's case.
    pub statement: String,
    /// Links to the evidence.
    #[serde(default)]
    pub evidence: Vec<String>,
    /// Filed.
    pub applied_at: DateTime<Utc>,
    /// The day the public notice ends: certification is possible from then.
    pub notice_ends_on: Option<NaiveDate>,
    /// Objections raised during the notice.
    pub objections: Vec<Objection>,
    /// Last valid day, once certified.
    pub valid_until: Option<NaiveDate>,
    /// Why it was rejected or revoked, or how objections were resolved.
    pub decision_note: Option<String>,
}

// ------------------------------------------------------------------ booking

/// Kind of identity document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IdType {
    /// 居民身份证, 18 characters with a checksum; so are the residence
    /// permits of Hong Kong, Macao and Taiwan residents (港澳台居民居住证,
    /// 81…/82…/83…) and the foreign permanent resident ID card of 2023
    /// (外国人永久居留身份证, 9…), which are written as one.
    ResidentId,
    /// Passport.
    Passport,
    /// 港澳居民来往内地通行证 (回乡证): H (Hong Kong) or M (Macao) and 8
    /// digits (10 on cards before 2013: the 8 and a 2-digit issue count).
    HkMacaoPermit,
    /// 台湾居民来往大陆通行证 (台胞证): 8 digits (10 on booklets before 2015).
    TaiwanPermit,
}

/// A traveler, with real name and document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TravelerInput {
    /// Real name.
    pub name: String,
    /// Document kind.
    pub id_type: IdType,
    /// Document number.
    pub id_number: String,
}

/// How to reach the booker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactInput {
    /// Contact name.
    pub name: String,
    /// Mobile phone.
    pub phone: String,
    /// Email, optional.
    #[serde(default)]
    pub email: Option<String>,
}

/// Creates a booking and starts its saga.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateBooking {
    /// Client-chosen key: the same key and input return the first booking.
    pub idempotency_key: String,
    /// What to book.
    pub item: HoldItem,
    /// Who travels.
    pub travelers: Vec<TravelerInput>,
    /// Who to contact.
    pub contact: ContactInput,
    /// Declared sponsor region (the booker's home region otherwise).
    #[serde(default)]
    pub sponsor_region: Option<RegionCode>,
    /// Free text for the host.
    #[serde(default)]
    pub notes: Option<String>,
    /// Who books (the traveler or agency the gateway authenticated).
    pub by: crate::auth::Principal,
    /// The agency's commission by its contract, in basis points, snapshotted
    /// on the booking (0 for travelers).
    #[serde(default)]
    pub commission_bp: u32,
}
impl Rpc for CreateBooking {
    const SERVICE: &'static str = "booking";
    const METHOD: &'static str = "create_booking";
    type Reply = BookingView;
}

/// The booking a [`CreateBooking`] with this idempotency key made, as its
/// first answer (None when the key made none; IDEMPOTENCY_KEY_REUSED when
/// it made one of another request): what a retry gets when the create
/// itself would be refused now — its listing since taken off sale, its
/// check-in since past.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayCreateBooking {
    /// The create retried.
    pub create: CreateBooking,
}
impl Rpc for ReplayCreateBooking {
    const SERVICE: &'static str = "booking";
    const METHOD: &'static str = "replay_create_booking";
    type Reply = Option<BookingView>;
}

/// Reads one booking.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetBooking {
    /// The booking.
    pub booking_id: BookingId,
    /// Who asks: its owner, its agency or an admin of its listing's region.
    pub viewer: crate::auth::Principal,
}

/// The histories of up to 100 bookings, for a viewer who may see each
/// (others are left out). `GetBooking` and `ListBookings` answer without
/// the history; a client that shows it asks for it (the gateway's
/// DataLoader, one call per page).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetBookingHistories {
    /// The bookings.
    pub booking_ids: Vec<BookingId>,
    /// Who asks.
    pub viewer: crate::auth::Principal,
}
impl Rpc for GetBookingHistories {
    const SERVICE: &'static str = "booking";
    const METHOD: &'static str = "get_booking_histories";
    /// Each booking the viewer may see, with its steps, oldest first.
    type Reply = Vec<(BookingId, Vec<HistoryEntry>)>;
}

/// Who travels on up to 100 bookings and how to reach them, for a viewer
/// who may see each (others are left out). Not on `GetBooking`, its
/// events or pushes: personal data goes only where it is asked for, and
/// a document number only masked (`TravelerView::id_number`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetBookingGuests {
    /// The bookings.
    pub booking_ids: Vec<BookingId>,
    /// Who asks.
    pub viewer: crate::auth::Principal,
}
impl Rpc for GetBookingGuests {
    const SERVICE: &'static str = "booking";
    const METHOD: &'static str = "get_booking_guests";
    /// Each booking the viewer may see, with its travelers and contact.
    type Reply = Vec<(BookingId, BookingGuests)>;
}

/// Who travels on a booking and how to reach them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookingGuests {
    /// The travelers, in the order the booking named them.
    pub travelers: Vec<TravelerView>,
    /// Who to contact.
    pub contact: ContactInput,
    /// Notes for the host.
    pub notes: Option<String>,
}

/// A traveler as a booking's readers see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TravelerView {
    /// Real name.
    pub name: String,
    /// Document kind.
    pub id_type: IdType,
    /// The document number with all but its last four characters starred
    /// (`**************123X`): enough to match the document at check-in.
    pub id_number: String,
}

/// The bookings a traveler or agency made, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListBookings {
    /// Who asks (a traveler sees theirs, an agency its own).
    pub viewer: crate::auth::Principal,
    /// Page size (1 to 100).
    pub first: u32,
    /// Bookings older than this one.
    pub after: Option<BookingId>,
    /// Only bookings in one of these statuses (all when empty).
    #[serde(default)]
    pub statuses: Vec<String>,
    /// Only bookings changed after this instant (a client catching up).
    #[serde(default)]
    pub updated_since: Option<DateTime<Utc>>,
    /// Only bookings starting on this day or later (a stay's check-in, a
    /// departure's day).
    #[serde(default)]
    pub starts_from: Option<NaiveDate>,
    /// Only bookings starting on this day or earlier.
    #[serde(default)]
    pub starts_to: Option<NaiveDate>,
    /// Only bookings of seats on this departure (its passenger list).
    #[serde(default)]
    pub departure_id: Option<DepartureId>,
    /// Also the viewer's own bookings (`myBookings`): a region admin who
    /// booked as a traveler before the role keeps its trips in the list.
    #[serde(default)]
    pub with_own: bool,
    /// In which order; `after` is the last booking of the page before.
    #[serde(default)]
    pub order: BookingOrder,
    /// Count every booking the filter lets through, too.
    #[serde(default)]
    pub count: bool,
}
impl Rpc for ListBookings {
    const SERVICE: &'static str = "booking";
    const METHOD: &'static str = "list_bookings";
    type Reply = BookingPage;
}

/// The order of a list of bookings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BookingOrder {
    /// Newest booking first.
    #[default]
    NewestFirst,
    /// By the day it starts (a stay's check-in, a departure's day),
    /// earliest first, then as booked; seats not yet held (no day yet)
    /// last: an arrivals list.
    StartsOn,
}

/// A page of bookings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BookingPage {
    /// Newest first.
    pub bookings: Vec<BookingView>,
    /// Whether older ones follow.
    pub has_next_page: bool,
    /// All the bookings the filter lets through, when counted.
    #[serde(default)]
    pub total_count: Option<u64>,
}
impl Rpc for GetBooking {
    const SERVICE: &'static str = "booking";
    const METHOD: &'static str = "get_booking";
    type Reply = BookingView;
}

/// Cancels a booking, releasing its hold; a paid (CONFIRMED) booking is
/// refunded by its listing's cancellation policy at the time of cancelling.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CancelBooking {
    /// Client-chosen key: a retry returns the same booking; the key may not
    /// be reused for another booking.
    pub idempotency_key: String,
    /// The booking.
    pub booking_id: BookingId,
    /// Who cancels: its owner, its agency or a platform admin; with
    /// `for_host`, an admin of the listing's region.
    pub viewer: crate::auth::Principal,
    /// Cancelled for its host, who cannot honour it, for this reason: all
    /// that was paid goes back, whatever the policy. (Absent from an older
    /// gateway's requests.)
    #[serde(default)]
    pub for_host: Option<String>,
    /// What payment had refunded of the booking (made or under way) when
    /// the gateway asked, None when it could not: booking hears of a
    /// refund (an admin's) only when payment's event arrives, and the
    /// policy's share is of what is left. (Absent from an older gateway's
    /// requests.)
    #[serde(default)]
    pub refunded: Option<crate::money::Fen>,
}
impl Rpc for CancelBooking {
    const SERVICE: &'static str = "booking";
    const METHOD: &'static str = "cancel_booking";
    type Reply = BookingView;
}

/// A booking as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookingView {
    /// The booking.
    pub id: BookingId,
    /// PENDING, AWAITING_PAYMENT, CONFIRMED, REJECTED, EXPIRED or CANCELLED.
    pub status: String,
    /// What was booked.
    pub item: HoldItem,
    /// Number of travelers.
    pub travelers: u32,
    /// The price snapshot, once the hold was granted.
    pub total: Option<Fen>,
    /// The listing as held.
    pub listing: Option<ListingSnapshot>,
    /// Payment is due before this.
    pub expires_at: Option<DateTime<Utc>>,
    /// Why it was rejected, expired or cancelled.
    pub reason: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed (None from producers older than the field).
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
    /// The refund promised when it was cancelled after payment (or when a
    /// payment arrived after it ended).
    #[serde(default)]
    pub refund_due: Option<Fen>,
    /// Money refunded so far.
    #[serde(default)]
    pub refunded: Fen,
    /// Every state it went through, oldest first (filled by `GetBooking`).
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
    /// Who booked.
    #[serde(default)]
    pub booker: Option<crate::auth::Booker>,
    /// The booking agency's commission, basis points (0 without one).
    #[serde(default)]
    pub commission_bp: u32,
    /// The sponsor region it counts for (declared with it, else the
    /// booker's home region; none for a booker living abroad who declared
    /// none).
    #[serde(default)]
    pub sponsor_region: Option<RegionCode>,
}

impl BookingView {
    /// The day its stay (check-in) or departure begins, if known (a
    /// departure's once held: its listing carries the day).
    pub fn starts_on(&self) -> Option<chrono::NaiveDate> {
        match &self.item {
            HoldItem::RoomNights { check_in, .. } => Some(*check_in),
            HoldItem::Seats { .. } => self.listing.as_ref().and_then(|l| l.starts_on),
        }
    }

    /// Whether `viewer` may read this booking: its booker (the account, or
    /// its agency) and the admins of the listing's region — but for a
    /// REJECTED one, which held nothing there: its travelers' details are
    /// not the region's to read, though it names the listing it asked for.
    pub fn visible_to(&self, viewer: &crate::auth::Principal) -> bool {
        let region = self
            .listing
            .as_ref()
            .filter(|_| self.status != "REJECTED")
            .map(|l| l.region_code);
        viewer.may_see(self.booker.as_ref(), region)
    }
}

/// One step of a booking's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The status after the step.
    pub status: String,
    /// What caused it.
    pub cause: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// What cancelling a booking now would refund, before cancelling.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuoteCancellation {
    /// The booking.
    pub booking_id: BookingId,
    /// Who asks.
    pub viewer: crate::auth::Principal,
    /// Quote an admin's cancellation for the host (everything left back).
    #[serde(default)]
    pub for_host: bool,
}
impl Rpc for QuoteCancellation {
    const SERVICE: &'static str = "booking";
    const METHOD: &'static str = "quote_cancellation";
    type Reply = CancellationQuote;
}

/// The answer to [`QuoteCancellation`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancellationQuote {
    /// The booking.
    pub booking_id: BookingId,
    /// Its status now.
    pub status: String,
    /// Whether it can be cancelled at all.
    pub cancellable: bool,
    /// What was paid (zero before payment).
    pub paid: Fen,
    /// What of it was refunded already (an admin's refund): the refund is
    /// a share of what is left.
    #[serde(default)]
    pub refunded: Fen,
    /// What cancelling now refunds.
    pub refund: Fen,
    /// The policy's share for `days_before` (100 for the host).
    pub refund_percent: u8,
    /// Whole days (China time) until the stay or departure starts.
    pub days_before: i64,
    /// The listing's policy.
    pub policy: crate::policy::CancellationPolicy,
}

// ------------------------------------------------------------------ payment

/// What a `forHost` cancellation (or its quote) asked by one who is no
/// admin says, the booking's own booker included.
pub const FOR_HOST_IS_ADMINS: &str = "only the admins of the listing's region (and platform \
     admins) cancel a booking for its host; its booker cancels without `forHost`";

/// What paying another's booking says, whether payment refuses it or the
/// gateway, which could not read the booking to pay it (one wording for
/// both: a stranger learns no more from one than from the other).
pub const ONLY_THE_BOOKER_PAYS: &str = "only the booker pays a booking";

/// Pays a booking awaiting payment with a provider token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PayBooking {
    /// Client-chosen key: a retry never charges twice.
    pub idempotency_key: String,
    /// The booking, as the gateway read it from the booking service.
    pub booking: BookingView,
    /// The provider's card/wallet token (`tok_success`, ... in the sandbox).
    pub payment_token: String,
    /// Who pays: only the booker (or its agency) may.
    pub viewer: crate::auth::Principal,
}
impl Rpc for PayBooking {
    const SERVICE: &'static str = "payment";
    const METHOD: &'static str = "pay_booking";
    type Reply = PaymentView;
}

/// A payment as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentView {
    /// The payment.
    pub id: PaymentId,
    /// The booking paid for.
    pub booking_id: BookingId,
    /// CAPTURED or FAILED.
    pub status: String,
    /// Gross amount.
    pub amount: Fen,
    /// Where the money went (captured payments).
    pub split: Option<Split>,
    /// The provider's reason for a failure.
    pub failure_reason: Option<String>,
}

/// Reads the public welfare fund: its balance and a page of entries, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetWelfareFund {
    /// Entries per page (1 to 100).
    pub first: u32,
    /// Entries older than this entry id.
    #[serde(default)]
    pub after: Option<i64>,
    /// Only entries of listings in this region (and the regions within
    /// it); the count too.
    #[serde(default)]
    pub region: Option<RegionCode>,
}
impl Rpc for GetWelfareFund {
    const SERVICE: &'static str = "payment";
    const METHOD: &'static str = "get_welfare_fund";
    type Reply = WelfareFundPage;
}

/// One donation to (or, for a refund, back from) the welfare fund. No
/// personal data: the booking appears only as a reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundEntry {
    /// Ledger entry id (the cursor).
    pub id: i64,
    /// A reference derived from the booking, not its id.
    pub booking_reference: String,
    /// Where the listing is.
    pub region_code: RegionCode,
    /// The amount (negative for a refund's reversal).
    pub amount: Fen,
    /// When it was posted.
    pub at: DateTime<Utc>,
}

/// The welfare fund's totals: per year (China time) and, for one year or
/// all, per beneficiary region (the listing's county).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetFundTotals {
    /// Only this year for the per-region totals; all years when None.
    pub year: Option<i32>,
}
impl Rpc for GetFundTotals {
    const SERVICE: &'static str = "payment";
    const METHOD: &'static str = "fund_totals";
    type Reply = FundTotals;
}

/// The answer to [`GetFundTotals`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FundTotals {
    /// Net donations per year, oldest first.
    pub by_year: Vec<(i32, Fen)>,
    /// Net donations per region, largest first.
    pub by_region: Vec<(RegionCode, Fen)>,
}

/// What each host is owed now: host shares captured, less refunded, less
/// paid out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetHostBalances {
    /// Balances as of this moment (ledger entries before it, payouts
    /// whenever); now if None.
    #[serde(default)]
    pub up_to: Option<DateTime<Utc>>,
    /// What a payout run up to `up_to` would pay now instead: earnings
    /// before it less every payout and every refund so far, only hosts
    /// owed more than nothing.
    #[serde(default)]
    pub payable: bool,
    /// Who asks: a platform admin.
    pub by: crate::auth::Principal,
}
impl Rpc for GetHostBalances {
    const SERVICE: &'static str = "payment";
    const METHOD: &'static str = "host_balances";
    type Reply = Vec<HostBalance>;
}

/// An agency's commission over a period: what its bookings' captures
/// owed it and what refunds took back (the agency's own accounts,
/// platform admins).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetAgencyCommission {
    /// The agency.
    pub agency_id: AgencyId,
    /// Ledger entries from this instant…
    pub from: DateTime<Utc>,
    /// …until before this one.
    pub until: DateTime<Utc>,
    /// Who asks.
    pub by: crate::auth::Principal,
}
impl Rpc for GetAgencyCommission {
    const SERVICE: &'static str = "payment";
    const METHOD: &'static str = "agency_commission";
    type Reply = AgencyCommission;
}

/// An agency's commission over a period, from the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgencyCommission {
    /// Commission on the payments captured in the period.
    pub earned: Fen,
    /// Commission taken back by refunds made in the period.
    pub reversed: Fen,
    /// Bookings whose payment was captured in the period.
    pub bookings: u32,
}

/// A host's balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostBalance {
    /// The host household, cooperative or village collective.
    pub host_id: HostId,
    /// Owed to it.
    pub owed: Fen,
}

/// Pays every host what it is owed for bookings captured before `up_to`,
/// once per `reference` (the bank batch): a second run with the same
/// reference returns the first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunPayouts {
    /// The payout batch's reference (e.g. the bank's).
    pub reference: String,
    /// Ledger entries up to this moment count (the period's end); now if None.
    pub up_to: Option<DateTime<Utc>>,
    /// Who runs it: a platform admin.
    pub by: crate::auth::Principal,
}
impl Rpc for RunPayouts {
    const SERVICE: &'static str = "payment";
    const METHOD: &'static str = "run_payouts";
    type Reply = PayoutRun;
}

/// The refunds booking has asked of payment (`booking.refund_requested`)
/// and heard no answer to yet: what a payout run keeps the host shares of
/// back, as it does a refund payment recorded and the provider has not
/// confirmed. (Payment hears of a cancellation only when its request
/// arrives; a run in between paid the host for a stay already cancelled.)
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetRefundsAsked {}
impl Rpc for GetRefundsAsked {
    const SERVICE: &'static str = "booking";
    const METHOD: &'static str = "refunds_asked";
    type Reply = Vec<RefundAsked>;
}

/// Which of these bookings were confirmed — CONFIRMED now, or confirmed and
/// cancelled since (inventory's hold sweeper, before it releases holds
/// overdue: a booking paid in time whose `booking.confirmed` inventory has
/// not heard yet — its consumer behind or just started — keeps its room;
/// one cancelled since gives it back by the release queued behind its
/// confirmation). At most a page of ids.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetConfirmedBookings {
    /// The bookings asked about.
    pub booking_ids: Vec<BookingId>,
}
impl Rpc for GetConfirmedBookings {
    const SERVICE: &'static str = "booking";
    const METHOD: &'static str = "confirmed_bookings";
    type Reply = Vec<BookingId>;
}

/// Which of these captures booking has heard of (`payment.captured`
/// handled: the booking confirmed, or a refund asked for a capture it
/// could not take). Payment's, before a payout run: a capture booking has
/// not heard of yet may still go back in full (the booking ended before the
/// capture reached it), so the host's share of it is not paid out yet.
/// At most [`CAPTURES_A_CALL`] ids.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetCapturesHeard {
    /// The captured payments asked about.
    pub payment_ids: Vec<PaymentId>,
}
/// How many captures one [`GetCapturesHeard`] asks about at most.
pub const CAPTURES_A_CALL: usize = 1_000;

impl Rpc for GetCapturesHeard {
    const SERVICE: &'static str = "booking";
    const METHOD: &'static str = "captures_heard";
    type Reply = Vec<PaymentId>;
}

/// The bookings holding seats on departures an operator cancelled since
/// `since` (payment's, before a payout run: booking asks for their refunds
/// only once it hears of the cancellation, and a run in between would pay
/// the host for seats refunded in full).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetCancelledDepartureBookings {
    /// Departures cancelled at or after this instant.
    pub since: chrono::DateTime<chrono::Utc>,
}
impl Rpc for GetCancelledDepartureBookings {
    const SERVICE: &'static str = "inventory";
    const METHOD: &'static str = "get_cancelled_departure_bookings";
    type Reply = Vec<BookingId>;
}

/// A refund booking asked for (see [`GetRefundsAsked`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefundAsked {
    /// The booking.
    pub booking_id: BookingId,
    /// The `booking.refund_requested` event's id: payment's key for the
    /// refund once it has it.
    pub request: uuid::Uuid,
    /// What booking promised (its quote): at least what payment will give.
    pub amount: Fen,
}

/// Payout runs, newest first (platform admins).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListPayoutRuns {
    /// Page size (1 to 100).
    pub first: u32,
    /// The cursor of the last run seen.
    pub after: Option<String>,
    /// Count every run, too.
    #[serde(default)]
    pub count: bool,
    /// Who asks: a platform admin.
    pub by: crate::auth::Principal,
}
impl Rpc for ListPayoutRuns {
    const SERVICE: &'static str = "payment";
    const METHOD: &'static str = "list_payout_runs";
    type Reply = PayoutRunPage;
}

/// A page of payout runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PayoutRunPage {
    /// Each with the cursor that follows it.
    pub runs: Vec<(PayoutRun, String)>,
    /// Whether older runs follow.
    pub has_next_page: bool,
    /// All the runs, when counted.
    #[serde(default)]
    pub total_count: Option<u64>,
}

/// Refunds part or all of a booking's captured payment (platform admins):
/// a goodwill gesture, a complaint settled. Never more than is left.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefundPayment {
    /// The booking whose capture is refunded.
    pub booking_id: BookingId,
    /// How much (more than zero, at most what is left).
    pub amount: Fen,
    /// Why (shown in the booking's history and on the refund).
    pub reason: String,
    /// The same key with the same request gives the first answer.
    pub idempotency_key: String,
    /// Who asks: a platform admin.
    pub by: crate::auth::Principal,
}
impl Rpc for RefundPayment {
    const SERVICE: &'static str = "payment";
    const METHOD: &'static str = "refund_payment";
    type Reply = RefundView;
}

/// A refund as admins and the booking's owner see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefundView {
    /// The refund.
    pub id: RefundId,
    /// The booking.
    pub booking_id: BookingId,
    /// Amount.
    pub amount: Fen,
    /// PENDING (the provider has not confirmed yet; retried until it does),
    /// SUCCEEDED, FAILED (the provider refused) or REFUSED (more than was
    /// left).
    pub status: String,
    /// Why it was asked for.
    pub reason: String,
    /// The reversed shares, once SUCCEEDED.
    pub split: Option<Split>,
    /// Why it failed or was refused.
    pub failure_reason: Option<String>,
    /// Asked for.
    pub created_at: DateTime<Utc>,
}

/// Which of up to 100 bookings have a payment in flight: PROCESSING (begun,
/// the provider's answer not recorded yet) or CAPTURED (its news not yet
/// heard by a booking still awaiting payment). Booking's expiry sweeper asks,
/// and keeps such a booking past its deadline until the payment settles:
/// a traveler who paid in the last second is not charged for a booking
/// that expired while the provider answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentsInFlight {
    /// The bookings.
    pub booking_ids: Vec<BookingId>,
}
impl Rpc for PaymentsInFlight {
    const SERVICE: &'static str = "payment";
    const METHOD: &'static str = "payments_in_flight";
    type Reply = Vec<BookingId>;
}

/// The payments and refunds of up to 100 bookings, each oldest first: what
/// their money did. A booking whose money the viewer may not see (not its
/// booker, nor an admin of its listing's region) shows none.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetBookingsMoney {
    /// The bookings.
    pub booking_ids: Vec<BookingId>,
    /// Who asks.
    pub viewer: crate::auth::Principal,
}
impl Rpc for GetBookingsMoney {
    const SERVICE: &'static str = "payment";
    const METHOD: &'static str = "bookings_money";
    type Reply = Vec<BookingMoney>;
}

/// A booking's payments and refunds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookingMoney {
    /// The booking.
    pub booking_id: BookingId,
    /// Every payment attempt, oldest first (at most one CAPTURED).
    pub payments: Vec<PaymentView>,
    /// Every refund, oldest first.
    pub refunds: Vec<RefundView>,
}

/// What the reconciler found and did, newest first (platform admins).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListReconciliation {
    /// Page size (1 to 100).
    pub first: u32,
    /// The cursor of the last entry seen.
    pub after: Option<String>,
    /// Only entries of this kind (`MISMATCH`: those for a person).
    #[serde(default)]
    pub kind: Option<String>,
    /// Count every entry the filter lets through, too.
    #[serde(default)]
    pub count: bool,
    /// Who asks: a platform admin.
    pub by: crate::auth::Principal,
}
impl Rpc for ListReconciliation {
    const SERVICE: &'static str = "payment";
    const METHOD: &'static str = "list_reconciliation";
    type Reply = ReconciliationPage;
}

/// One thing the reconciler found when comparing the provider's records
/// with the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconciliationEntry {
    /// When.
    pub at: DateTime<Utc>,
    /// CAPTURED_LATE (a charge the ledger lacked: captured and posted),
    /// CLOSED_UNCHARGED (no charge: the payment failed and the key was
    /// closed), REFUND_COMPLETED (a refund the provider had not confirmed),
    /// REFUND_DECLINED (a refund the provider refused: for a person), or
    /// MISMATCH (the provider's record disagrees with the ledger in a way
    /// no event fixes: for a person).
    pub kind: String,
    /// The payment.
    pub payment_id: PaymentId,
    /// Its booking.
    pub booking_id: BookingId,
    /// The amount concerned.
    pub amount: Fen,
    /// What was found.
    pub note: String,
}

/// A page of the reconciliation log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReconciliationPage {
    /// Each with the cursor that follows it.
    pub entries: Vec<(ReconciliationEntry, String)>,
    /// Whether older entries follow.
    pub has_next_page: bool,
    /// All the entries the filter lets through, when counted.
    #[serde(default)]
    pub total_count: Option<u64>,
}

/// A payout run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PayoutRun {
    /// Its reference.
    pub reference: String,
    /// Ledger entries before this moment were paid out.
    #[serde(default)]
    pub up_to: Option<DateTime<Utc>>,
    /// When it ran.
    #[serde(default)]
    pub ran_at: Option<DateTime<Utc>>,
    /// What each host was paid.
    pub payouts: Vec<HostBalance>,
    /// The sum.
    pub total: Fen,
}

/// The fund's balance and one page of its entries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WelfareFundPage {
    /// The balance.
    pub balance: Fen,
    /// Entries in all.
    pub total_count: i64,
    /// This page, newest first.
    pub entries: Vec<FundEntry>,
    /// Whether older entries follow.
    pub has_next_page: bool,
}

// -------------------------------------------------------------- partnership

/// The figures impact is counted in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Figures {
    /// Tourists sent (travelers on confirmed bookings).
    pub tourists: i64,
    /// Confirmed bookings.
    pub bookings: i64,
    /// Spend, net of refunds.
    pub spend: Fen,
    /// Spend on certified listings.
    pub certified_spend: Fen,
    /// Income to hosts (the households, cooperatives and village collectives paid).
    pub host_income: Fen,
    /// Donations to the welfare fund.
    pub fund: Fen,
}

impl std::ops::Add for Figures {
    type Output = Figures;
    fn add(self, o: Figures) -> Figures {
        Figures {
            tourists: self.tourists + o.tourists,
            bookings: self.bookings + o.bookings,
            spend: self.spend + o.spend,
            certified_spend: self.certified_spend + o.certified_spend,
            host_income: self.host_income + o.host_income,
            fund: self.fund + o.fund,
        }
    }
}

impl std::ops::Sub for Figures {
    type Output = Figures;
    fn sub(self, o: Figures) -> Figures {
        Figures {
            tourists: self.tourists - o.tourists,
            bookings: self.bookings - o.bookings,
            spend: self.spend - o.spend,
            certified_spend: self.certified_spend - o.certified_spend,
            host_income: self.host_income - o.host_income,
            fund: self.fund - o.fund,
        }
    }
}

impl std::iter::Sum for Figures {
    fn sum<I: Iterator<Item = Figures>>(iter: I) -> Figures {
        iter.fold(Figures::default(), |a, b| a + b)
    }
}

impl Figures {
    /// True when every figure is zero.
    pub fn is_zero(&self) -> bool {
        *self == Figures::default()
    }
}

/// Pairs a sponsor region with a beneficiary region.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatePartnership {
    /// The sponsor (帮扶方), e.g. 110108 北京市海淀区.
    pub sponsor: RegionCode,
    /// The beneficiary (受援方), e.g. 150430 敖汉旗.
    pub beneficiary: RegionCode,
    /// Paired since.
    pub since: Option<NaiveDate>,
    /// Notes.
    pub notes: Option<String>,
    /// Demonstration data.
    #[serde(default)]
    pub demo: bool,
    /// Who records it: a platform admin or an admin of either region.
    pub by: crate::auth::Principal,
}
impl Rpc for CreatePartnership {
    const SERVICE: &'static str = "partnership";
    const METHOD: &'static str = "create_partnership";
    type Reply = PartnershipView;
}

/// Edits a partnership: its status (ACTIVE, ENDED), since when, notes.
/// Fields left `None` stay as they are.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdatePartnership {
    /// The partnership.
    pub partnership_id: crate::ids::PartnershipId,
    /// ACTIVE or ENDED.
    pub status: Option<String>,
    /// Paired since.
    pub since: Option<NaiveDate>,
    /// Ended on this day (China time), its last: sets ENDED; bookings
    /// confirmed after it do not count. ENDED without it ends it today
    /// (an ended pair keeps its day).
    #[serde(default)]
    pub ended_on: Option<NaiveDate>,
    /// Notes (empty clears them).
    pub notes: Option<String>,
    /// Who edits it: the partnership's admins.
    pub by: crate::auth::Principal,
}
impl UpdatePartnership {
    /// Whether it leaves every field as it is.
    pub fn changes_nothing(&self) -> bool {
        self.status.is_none()
            && self.since.is_none()
            && self.ended_on.is_none()
            && self.notes.is_none()
    }
}
impl Rpc for UpdatePartnership {
    const SERVICE: &'static str = "partnership";
    const METHOD: &'static str = "update_partnership";
    type Reply = PartnershipView;
}

/// A yearly target of an agreement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct YearTarget {
    /// The year.
    pub year: i32,
    /// Tourists to send.
    pub tourists: Option<i64>,
    /// Spend to reach.
    pub spend: Option<Fen>,
    /// Spend on certified listings to reach.
    pub certified_spend: Option<Fen>,
    /// Further indicators the agreement sets (e.g. 培训乡村旅游带头人 30),
    /// recorded and shown; Duikou does not measure them.
    #[serde(default)]
    pub custom: Vec<CustomTarget>,
}

/// An indicator of an agreement beyond what bookings measure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomTarget {
    /// What is counted, e.g. 培训乡村旅游带头人.
    pub name: String,
    /// The target.
    pub target: f64,
    /// Unit, e.g. 人次.
    #[serde(default)]
    pub unit: Option<String>,
}

/// Adds an agreement (框架协议) to a partnership.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateAgreement {
    /// The partnership.
    pub partnership_id: crate::ids::PartnershipId,
    /// e.g. 《京蒙旅游扶贫协作框架协议》.
    pub title: String,
    /// Signed on.
    pub signed_on: NaiveDate,
    /// First day in force.
    pub starts_on: NaiveDate,
    /// Last day in force.
    pub ends_on: NaiveDate,
    /// Who signed.
    pub signatories: Vec<String>,
    /// Targets by year.
    pub targets: Vec<YearTarget>,
    /// Who records it: the partnership's admins.
    pub by: crate::auth::Principal,
}
impl Rpc for CreateAgreement {
    const SERVICE: &'static str = "partnership";
    const METHOD: &'static str = "create_agreement";
    type Reply = AgreementView;
}

/// An agreement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgreementView {
    /// The agreement.
    pub id: crate::ids::AgreementId,
    /// Its partnership.
    pub partnership_id: crate::ids::PartnershipId,
    /// Title.
    pub title: String,
    /// Signed on.
    pub signed_on: NaiveDate,
    /// First day in force.
    pub starts_on: NaiveDate,
    /// Last day in force.
    pub ends_on: NaiveDate,
    /// Who signed.
    pub signatories: Vec<String>,
    /// Targets by year.
    pub targets: Vec<YearTarget>,
    /// Set once it was withdrawn (recorded by mistake, superseded, never
    /// signed): its targets no longer count and it no longer bounds the
    /// pair's term.
    #[serde(default)]
    pub withdrawal: Option<Withdrawal>,
}

/// Why and when an agreement was withdrawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Withdrawal {
    /// The day (China time).
    pub on: NaiveDate,
    /// Why, as the admin wrote it.
    pub reason: String,
}

/// Withdraws an agreement: recorded by mistake (to be recorded again as
/// it should have been), superseded or never signed. It stays on record,
/// apart from those in force; its targets count no more.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WithdrawAgreement {
    /// The agreement.
    pub agreement_id: crate::ids::AgreementId,
    /// Why, one line.
    pub reason: String,
    /// Who withdraws it: the partnership's admins.
    pub by: crate::auth::Principal,
}
impl Rpc for WithdrawAgreement {
    const SERVICE: &'static str = "partnership";
    const METHOD: &'static str = "withdraw_agreement";
    type Reply = AgreementView;
}

/// A partnership.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartnershipView {
    /// The partnership.
    pub id: crate::ids::PartnershipId,
    /// The sponsor.
    pub sponsor: RegionCode,
    /// The beneficiary.
    pub beneficiary: RegionCode,
    /// Paired since: bookings confirmed before this day do not count.
    pub since: Option<NaiveDate>,
    /// Its last day, once ENDED: bookings confirmed after it do not count.
    #[serde(default)]
    pub ended_on: Option<NaiveDate>,
    /// ACTIVE, ENDED or WITHDRAWN.
    pub status: String,
    /// Notes.
    pub notes: Option<String>,
    /// Demonstration data.
    pub demo: bool,
    /// Its agreements in force, oldest first.
    pub agreements: Vec<AgreementView>,
    /// Those withdrawn, oldest first: on record, counting for nothing.
    #[serde(default)]
    pub withdrawn_agreements: Vec<AgreementView>,
    /// Its figures are still being credited (a pair recorded, or a term
    /// moved, over the bookings of its beneficiary's sub-tree).
    #[serde(default)]
    pub crediting: bool,
    /// Set once it was withdrawn (status WITHDRAWN): recorded by mistake,
    /// it counts nothing and is listed no more.
    #[serde(default)]
    pub withdrawal: Option<Withdrawal>,
}

/// Withdraws a partnership recorded by mistake (the wrong way round, a
/// mistyped region): it stays on record, counts nothing (what it was
/// credited is taken back), is listed no more and keeps neither its
/// reverse nor itself from being recorded again. Its agreements must be
/// withdrawn first. Sent again with the same reason (a retry), the
/// withdrawal recorded; with another, CONFLICT.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WithdrawPartnership {
    /// The partnership.
    pub partnership_id: crate::ids::PartnershipId,
    /// Why, one line.
    pub reason: String,
    /// Who withdraws it: the partnership's admins.
    pub by: crate::auth::Principal,
}
impl Rpc for WithdrawPartnership {
    const SERVICE: &'static str = "partnership";
    const METHOD: &'static str = "withdraw_partnership";
    type Reply = PartnershipView;
}

/// The bookings a partnership was credited with in a year (China time),
/// each with what it counts for now (net of refunds; one cancelled since
/// counts nothing and is left out), a page at a time by booking id: for
/// the admins of either side (and platform admins), to see which trips
/// make up their figures. No person: ids, regions and figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListPartnershipCredits {
    /// The partnership.
    pub partnership_id: crate::ids::PartnershipId,
    /// The year.
    pub year: i32,
    /// Page size (1 to 100).
    pub first: u32,
    /// The credits after this booking's.
    #[serde(default)]
    pub after: Option<BookingId>,
    /// Leave `total_count` at 0 (not asked for: counting reads every
    /// booking of the pair's year). Gateways before 2026-12-07 leave it
    /// out and get the count.
    #[serde(default)]
    pub skip_count: bool,
    /// Who asks: an admin of either side.
    pub by: crate::auth::Principal,
}
impl Rpc for ListPartnershipCredits {
    const SERVICE: &'static str = "partnership";
    const METHOD: &'static str = "list_partnership_credits";
    type Reply = PartnershipCreditPage;
}

/// One booking's credit to a partnership.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartnershipCredit {
    /// The booking.
    pub booking_id: BookingId,
    /// When it was confirmed.
    pub confirmed_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The sponsor region it was credited from (the booker's, or the one
    /// declared).
    pub sponsor_region: Option<RegionCode>,
    /// The listing's region.
    pub listing_region: Option<RegionCode>,
    /// What it counts for now.
    pub figures: Figures,
}

/// A page of a partnership's credits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartnershipCreditPage {
    /// The page, by booking id.
    pub credits: Vec<PartnershipCredit>,
    /// More after the last one.
    pub has_next_page: bool,
    /// How many bookings count for the year, over all pages (0 when asked
    /// with `skip_count`).
    pub total_count: u64,
}

/// Partnerships where a region (or a region inside it) is either side, a
/// page at a time, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListPartnerships {
    /// Only pairs touching this region's sub-tree; all when None.
    pub region: Option<RegionCode>,
    /// Page size (1 to 100).
    pub first: u32,
    /// The partnerships after this one.
    #[serde(default)]
    pub after: Option<crate::ids::PartnershipId>,
}
impl Rpc for ListPartnerships {
    const SERVICE: &'static str = "partnership";
    const METHOD: &'static str = "list_partnerships";
    type Reply = PartnershipPage;
}

/// A page of partnerships.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartnershipPage {
    /// The page, oldest first.
    pub partnerships: Vec<PartnershipView>,
    /// More after the last one.
    pub has_next_page: bool,
    /// How many match, over all pages.
    pub total_count: u64,
}

/// One partnership with its agreements; None when there is no such pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetPartnership {
    /// The partnership.
    pub partnership_id: crate::ids::PartnershipId,
}
impl Rpc for GetPartnership {
    const SERVICE: &'static str = "partnership";
    const METHOD: &'static str = "get_partnership";
    type Reply = Option<PartnershipView>;
}

/// A partnership's figures for a year.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetPartnershipReport {
    /// The partnership.
    pub partnership_id: crate::ids::PartnershipId,
    /// The year (China time).
    pub year: i32,
}
impl Rpc for GetPartnershipReport {
    const SERVICE: &'static str = "partnership";
    const METHOD: &'static str = "partnership_report";
    type Reply = PartnershipReport;
}

/// Reached against a target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetProgress {
    /// Reached so far.
    pub actual: i64,
    /// The target.
    pub target: i64,
    /// actual / target in percent.
    pub percent: f64,
    /// At or ahead of the share of the year gone by.
    pub on_track: bool,
}

/// A partnership's year.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartnershipReport {
    /// The partnership.
    pub partnership: PartnershipView,
    /// The year.
    pub year: i32,
    /// The year's figures.
    pub totals: Figures,
    /// Month 1..=12 and its figures.
    pub monthly: Vec<(u32, Figures)>,
    /// Progress against the year's targets (tourists; spend and certified
    /// spend in fen), where an agreement sets them.
    pub tourists_progress: Option<TargetProgress>,
    /// Spend against its target.
    pub spend_progress: Option<TargetProgress>,
    /// Certified spend against its target.
    pub certified_spend_progress: Option<TargetProgress>,
    /// The year's targets, each indicator from the newest agreement that
    /// sets it for the year (none from a service of an earlier release).
    #[serde(default)]
    pub targets: Option<YearTarget>,
    /// The report as CSV (one row per month and a total).
    pub csv: String,
}

/// A region's impact in a year, as sponsor and as beneficiary; each booking
/// counted once, however many partnerships it credited.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetRegionImpact {
    /// The region (its whole sub-tree).
    pub region: RegionCode,
    /// The year.
    pub year: i32,
}
impl Rpc for GetRegionImpact {
    const SERVICE: &'static str = "partnership";
    const METHOD: &'static str = "region_impact";
    type Reply = RegionImpact;
}

/// The answer to [`GetRegionImpact`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegionImpact {
    /// The region.
    pub region: RegionCode,
    /// The year.
    pub year: i32,
    /// Bookings its people made.
    pub as_sponsor: Figures,
    /// Bookings of listings inside it.
    pub as_beneficiary: Figures,
    /// Both, as CSV.
    pub csv: String,
}

/// Which partnerships a booking credited, and with what.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetBookingImpact {
    /// The booking.
    pub booking_id: BookingId,
}
impl Rpc for GetBookingImpact {
    const SERVICE: &'static str = "partnership";
    const METHOD: &'static str = "booking_impact";
    type Reply = Vec<ImpactCredit>;
}

/// One partnership credited by a booking.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImpactCredit {
    /// The partnership.
    pub partnership: PartnershipView,
    /// What the booking counts for there now.
    pub figures: Figures,
}

#[cfg(test)]
mod tests {
    use super::{HomestayDetails, is_http_url};

    #[test]
    fn a_link_is_followed_as_it_reads() {
        assert!(is_http_url("https://aohan.example.cn/fupin/2026-12.pdf"));
        assert!(is_http_url("http://example.cn/a%20b"));
        for odd in [
            "https://a.example.cn/ x",
            "https://a.example.cn/\tx",
            "ftp://example.cn/x",
            "https://a.example.cn/\u{85}",
        ] {
            assert!(!is_http_url(odd), "{odd:?}");
        }
    }

    fn details(address: &str, amenities: &[&str], photos: &[&str]) -> HomestayDetails {
        let mut d = HomestayDetails {
            address: address.to_owned(),
            amenities: amenities.iter().map(|s| (*s).to_owned()).collect(),
            photos: photos.iter().map(|s| (*s).to_owned()).collect(),
            ..HomestayDetails::default()
        };
        d.tidy();
        d
    }

    #[test]
    fn a_homestays_details_are_tidied_and_each_listed_once() {
        let fine = details(
            " 敖汉旗兴隆洼村 ",
            &[" 热水", "暖气 "],
            &["https://x.cn/1.jpg "],
        );
        assert!(fine.check().is_ok());
        assert_eq!(fine.address, "敖汉旗兴隆洼村");
        assert_eq!(fine.amenities, ["热水", "暖气"]);
        assert_eq!(fine.photos, ["https://x.cn/1.jpg"]);
        for (bad, says) in [
            (
                details("", &["热水", " 热水"], &[]),
                "amenities: `热水` is listed twice",
            ),
            (
                details("", &[], &["https://x.cn/1.jpg", "https://x.cn/1.jpg"]),
                "photos: `https://x.cn/1.jpg` is listed twice",
            ),
            (
                details("", &["a\nb"], &[]),
                "amenities: one line, no line breaks or tabs",
            ),
            (
                details("\u{200B}", &[], &[]),
                "address: shows nothing; leave it empty or write it out",
            ),
            (
                details("一\n二", &[], &[]),
                "address: one line, no line breaks or tabs",
            ),
        ] {
            assert_eq!(bad.check().map_err(|e| e.message), Err(says.to_owned()));
        }
    }
}

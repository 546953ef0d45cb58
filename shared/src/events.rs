//! The events of DESIGN.md, one struct per routing key. Versioned by adding
//! fields only: a new field is `#[serde(default)]` so old producers still parse.

use crate::envelope::Event;
use crate::ids::{
    AccountId, AgencyId, BookingId, DepartureId, HostId, PaymentId, RefundId, RoomTypeId,
};
use crate::money::{Fen, Split};
use crate::region::RegionCode;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// Announcements: events published for whoever watches, dropped when no
/// queue is bound for them (no `mandatory`). Every other event has a
/// consumer that must get it, so an unroutable one stays in the outbox
/// until its queue exists.
pub const BROADCASTS: &[&str] = &[
    BookingStatusChanged::TYPE,
    BookingExpired::TYPE,
    BookingRejected::TYPE,
    CatalogueChanged::TYPE,
];

/// True when `kind` is one of the [`BROADCASTS`].
pub fn is_broadcast(kind: &str) -> bool {
    BROADCASTS.contains(&kind)
}

/// What a booking holds: room-nights of one room type, or seats on a departure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HoldItem {
    /// `rooms` rooms of a room type for every night in `[check_in, check_out)`.
    RoomNights {
        /// The room type.
        room_type_id: RoomTypeId,
        /// First night.
        check_in: NaiveDate,
        /// Day of departure (not a night).
        check_out: NaiveDate,
        /// Rooms per night.
        rooms: u32,
    },
    /// `seats` seats on a route departure.
    Seats {
        /// The departure.
        departure_id: DepartureId,
        /// Seats (travelers).
        seats: u32,
    },
}

/// booking → inventory: hold this capacity for the booking until `expires_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldRequested {
    /// The booking (and the hold's id).
    pub booking_id: BookingId,
    /// What to hold.
    pub item: HoldItem,
    /// Travelers it is for, to check against what a room sleeps (0: not
    /// said, from older producers).
    #[serde(default)]
    pub travelers: u32,
    /// When the hold lapses unless committed.
    pub expires_at: DateTime<Utc>,
}
impl Event for HoldRequested {
    const TYPE: &'static str = "booking.hold_requested";
}

/// The priced listing a hold was granted on: the booking's price snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListingSnapshot {
    /// The listing's title (homestay name + room type, or route title).
    pub title: String,
    /// The title in English, when the listing has English names (none from
    /// older producers, or for a listing named in Chinese only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title_en: Option<String>,
    /// Who receives the host payout.
    pub host_id: HostId,
    /// Where the listing is.
    pub region_code: RegionCode,
    /// Whether it carried a valid poverty-relief certification when held.
    pub certified: bool,
    /// The refund rule when a confirmed booking is cancelled, as it was
    /// when held (the standard policy for older producers).
    #[serde(default)]
    pub cancellation_policy: crate::policy::CancellationPolicy,
    /// The departure's date, for seats on a route (a stay starts at check-in).
    #[serde(default)]
    pub starts_on: Option<NaiveDate>,
    /// The homestay or route (none from producers before 2026-12-07): a
    /// traveler's trip leads back to the listing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listing_id: Option<uuid::Uuid>,
}

/// inventory → booking: the capacity is held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldGranted {
    /// The booking.
    pub booking_id: BookingId,
    /// Total price of what was held.
    pub total: Fen,
    /// The listing as it was when held.
    pub listing: ListingSnapshot,
    /// When the hold lapses.
    pub expires_at: DateTime<Utc>,
}
impl Event for HoldGranted {
    const TYPE: &'static str = "inventory.hold_granted";
}

/// inventory → booking: the hold could not be granted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldRejected {
    /// The booking.
    pub booking_id: BookingId,
    /// `SOLD_OUT`, `NOT_FOUND`, `BAD_USER_INPUT`…
    pub code: crate::ErrorCode,
    /// Why, for the traveler.
    pub reason: String,
    /// The listing as it is, when inventory found it on sale (sold out,
    /// closed, past its cut-off, a stay too short): the booking keeps it, so
    /// that a refused booking still says what it was for and when (a
    /// departure's date is known only from it). None for an unknown or
    /// off-sale listing, and from senders older than the field.
    #[serde(default)]
    pub listing: Option<ListingSnapshot>,
}
impl Event for HoldRejected {
    const TYPE: &'static str = "inventory.hold_rejected";
}

/// booking → inventory: give the held capacity back (expired, cancelled).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldReleaseRequested {
    /// The booking.
    pub booking_id: BookingId,
    /// Why.
    pub reason: String,
}
impl Event for HoldReleaseRequested {
    const TYPE: &'static str = "booking.hold_release_requested";
}

/// inventory → booking: the capacity is back on sale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldReleased {
    /// The booking.
    pub booking_id: BookingId,
    /// Released by inventory itself because the hold outlived its deadline
    /// (and its grace), not at booking's request.
    #[serde(default)]
    pub expired: bool,
}
impl Event for HoldReleased {
    const TYPE: &'static str = "inventory.hold_released";
}

/// inventory → gateways (their caches): a listing, a calendar, a route or a
/// certification changed; what search and listing reads answer may differ.
/// (Holds change availability too; those are `inventory.hold_granted` and
/// `inventory.hold_released`.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogueChanged {
    /// The RPC method that changed it, e.g. `set_room_calendar`.
    pub by: String,
}
impl Event for CatalogueChanged {
    const TYPE: &'static str = "inventory.catalogue_changed";
}

/// inventory → booking: a confirmed booking's hold had expired and its
/// capacity could not be taken again (sold meanwhile). The booking cannot
/// stand: booking cancels it and refunds in full.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldCommitRefused {
    /// The booking.
    pub booking_id: BookingId,
    /// `SOLD_OUT`.
    pub code: crate::ErrorCode,
    /// Why, for the traveler.
    pub reason: String,
}
impl Event for HoldCommitRefused {
    const TYPE: &'static str = "inventory.commit_refused";
}

/// inventory → booking: an operator cancelled a departure. Every booking
/// holding seats on it is listed (a hold asked for later is refused): booking
/// cancels each, refunding those paid in full.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepartureCancelled {
    /// The departure.
    pub departure_id: DepartureId,
    /// The day it was to leave.
    pub starts_on: NaiveDate,
    /// Why, as the operator gave it.
    pub reason: String,
    /// The bookings holding seats on it when it was cancelled.
    pub bookings: Vec<BookingId>,
}
impl Event for DepartureCancelled {
    const TYPE: &'static str = "inventory.departure_cancelled";
}

/// payment → booking, partnership: money was captured, split as shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentCaptured {
    /// The booking paid for.
    pub booking_id: BookingId,
    /// The payment.
    pub payment_id: PaymentId,
    /// Gross and its split.
    pub split: Split,
}
impl Event for PaymentCaptured {
    const TYPE: &'static str = "payment.captured";
}

/// payment → booking: the provider refused the payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentFailed {
    /// The booking.
    pub booking_id: BookingId,
    /// The payment.
    pub payment_id: PaymentId,
    /// The provider's reason.
    pub reason: String,
}
impl Event for PaymentFailed {
    const TYPE: &'static str = "payment.failed";
}

/// payment → booking, partnership: money went back, reversing this split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    /// The booking.
    pub booking_id: BookingId,
    /// The payment refunded.
    pub payment_id: PaymentId,
    /// The refund.
    pub refund_id: RefundId,
    /// The reversed shares (positive amounts).
    pub split: Split,
    /// Why the money went back.
    #[serde(default)]
    pub reason: String,
    /// The `booking.refund_requested` event this refund answers (its id is
    /// the refund's key); `None` for a platform admin's refund.
    #[serde(default)]
    pub request: Option<uuid::Uuid>,
}
impl Event for PaymentRefunded {
    const TYPE: &'static str = "payment.refunded";
}

/// payment → booking: a requested refund gave nothing back — the payment
/// had nothing left to refund (refunds made meanwhile took it all).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefundRefused {
    /// The booking.
    pub booking_id: BookingId,
    /// The `booking.refund_requested` event refused.
    pub request: uuid::Uuid,
    /// Why, e.g. "50.00 asked, 0.00 left to refund".
    pub reason: String,
}
impl Event for RefundRefused {
    const TYPE: &'static str = "payment.refund_refused";
}

/// booking → payment: give money back for this booking. The event's id is
/// the refund's idempotency key: redelivered, it refunds once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefundRequested {
    /// The booking whose captured payment is refunded.
    pub booking_id: BookingId,
    /// How much; `None` refunds everything captured and not yet refunded.
    pub amount: Option<Fen>,
    /// Why (shown in the booking's history and the ledger).
    pub reason: String,
    /// A share of what is left, in percent, taken by payment when it
    /// handles the request (under the payment's lock) instead of `amount`,
    /// which booking quoted from what it knew: a cancellation by the
    /// policy's share of what is left must not count a refund made
    /// meanwhile (an admin's) as still paid. `amount` stays for readers
    /// of an older payment.
    #[serde(default)]
    pub percent_of_left: Option<u32>,
}
impl Event for RefundRequested {
    const TYPE: &'static str = "booking.refund_requested";
}

/// booking → inventory, partnership, gateway: the booking is confirmed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookingConfirmed {
    /// The booking.
    pub booking_id: BookingId,
    /// Travelers on it (tourists sent).
    pub travelers: u32,
    /// The region the booking counts for as sponsor: the declared sponsor
    /// region, else the booker's home region.
    pub sponsor_region: Option<RegionCode>,
    /// The listing as held (its region is the beneficiary side).
    pub listing: ListingSnapshot,
    /// Gross paid.
    pub total: Fen,
    /// Where the traveler or agency that booked is from.
    #[serde(default)]
    pub booker_home_region: Option<RegionCode>,
    /// The agency that booked, if one did.
    #[serde(default)]
    pub agency_id: Option<AgencyId>,
    /// The agency's commission on it, basis points (0 without an agency).
    #[serde(default)]
    pub commission_bp: u32,
    /// How the capture that confirmed it was shared out (`payment.captured`'s
    /// split), so attribution needs one event per booking. None from
    /// producers older than the field.
    #[serde(default)]
    pub captured: Option<crate::money::Split>,
    /// The booking as it stands now (without its history): what the
    /// gateway pushes to subscribers. None from producers older than the
    /// field, which also sent a `booking.status_changed`.
    #[serde(default)]
    pub booking: Option<Box<crate::rpcs::BookingView>>,
}
impl Event for BookingConfirmed {
    const TYPE: &'static str = "booking.confirmed";
}

/// booking → partnership: a capture made before its booking was cancelled
/// and heard after (the booker paid, then cancelled at once): the booking
/// was never confirmed, yet keeps what the policy keeps, as a booking
/// confirmed and then cancelled does, and counts so (impact.md). The facts
/// a confirmation would have carried, `captured` set and `booking` none;
/// its `occurred_at` is when booking heard of the capture. Inventory and
/// the gateways do not bind it: nothing is held, nothing to push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BookingCaptureKept(pub BookingConfirmed);
impl Event for BookingCaptureKept {
    const TYPE: &'static str = "booking.capture_kept";
}

/// What every booking outcome event says about the booking: enough for
/// partnership's attribution and for pushes, without a read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookingFacts {
    /// The booking.
    pub booking_id: BookingId,
    /// Why it ended so (shown to the booker).
    pub reason: Option<String>,
    /// The listing as held, or as found when the hold was refused; none
    /// when there was none to find (an unknown or off-sale listing).
    pub listing: Option<ListingSnapshot>,
    /// Where the listing is (the beneficiary side).
    pub listing_region: Option<RegionCode>,
    /// Where the traveler or agency that booked is from.
    pub booker_home_region: Option<RegionCode>,
    /// The region the booking counts for as sponsor.
    pub sponsor_region: Option<RegionCode>,
    /// Travelers on it.
    pub travelers: u32,
    /// The price held (none when nothing was held).
    pub total: Option<Fen>,
    /// What is to be refunded (cancelled after payment).
    pub refund_due: Option<Fen>,
    /// The account that booked.
    pub account_id: Option<AccountId>,
    /// The agency that booked, if one did.
    pub agency_id: Option<AgencyId>,
    /// The booking as it ended (without its history): what the gateway
    /// pushes. None from producers older than the field, which also sent
    /// a `booking.status_changed`.
    #[serde(default)]
    pub booking: Option<Box<crate::rpcs::BookingView>>,
}

/// booking → partnership, gateway: the booking was cancelled (before or
/// after payment; `refund_due` says what goes back).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookingCancelled {
    /// The booking as it ended.
    #[serde(flatten)]
    pub facts: BookingFacts,
    /// It had been CONFIRMED (paid) before.
    pub was_confirmed: bool,
}
impl Event for BookingCancelled {
    const TYPE: &'static str = "booking.cancelled";
}

/// booking → anyone watching: not paid in time; the hold was given back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookingExpired {
    /// The booking as it ended.
    #[serde(flatten)]
    pub facts: BookingFacts,
}
impl Event for BookingExpired {
    const TYPE: &'static str = "booking.expired";
}

/// booking → anyone watching: nothing could be held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookingRejected {
    /// The booking as it ended.
    #[serde(flatten)]
    pub facts: BookingFacts,
}
impl Event for BookingRejected {
    const TYPE: &'static str = "booking.rejected";
}

/// booking → gateway (pushes): the booking moved to a state that has no
/// outcome event of its own (PENDING, AWAITING_PAYMENT); CONFIRMED,
/// CANCELLED, EXPIRED and REJECTED are pushed from `booking.confirmed`,
/// `.cancelled`, `.expired` and `.rejected`, which carry the booking too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookingStatusChanged {
    /// The booking.
    pub booking_id: BookingId,
    /// The new status, e.g. `CONFIRMED`.
    pub status: String,
    /// Why, when there is a reason (rejected, expired).
    #[serde(default)]
    pub reason: Option<String>,
    /// The account that booked (pushes go to its owner).
    #[serde(default)]
    pub account_id: Option<AccountId>,
    /// The agency that booked (its feed gets the push).
    #[serde(default)]
    pub agency_id: Option<AgencyId>,
    /// The booking as it stands after the change (without its history):
    /// what a push shows, so the gateway need not read it back.
    #[serde(default)]
    pub booking: Option<Box<crate::rpcs::BookingView>>,
}
impl Event for BookingStatusChanged {
    const TYPE: &'static str = "booking.status_changed";
}

impl BookingStatusChanged {
    /// The change that leaves the booking as `view`.
    pub fn of(view: &crate::rpcs::BookingView) -> BookingStatusChanged {
        BookingStatusChanged {
            booking_id: view.id,
            status: view.status.clone(),
            reason: view.reason.clone(),
            account_id: view.booker.map(|b| b.account_id),
            agency_id: view.booker.and_then(|b| b.agency_id),
            booking: Some(Box::new(view.clone())),
        }
    }
}

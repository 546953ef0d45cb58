//! The RPC requests of each service and their replies. The gateway sends
//! them; the owning service answers.

use crate::events::{HoldItem, ListingSnapshot};
use crate::ids::{BookingId, HomestayId, HostId, PaymentId, RoomTypeId};
use crate::money::{Fen, Split};
use crate::region::{Region, RegionCode};
use crate::rpc::Rpc;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

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
    /// Beds per room.
    pub beds: u32,
    /// Guests per room.
    pub max_guests: u32,
}

/// Creates a host's homestay with one room type.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateHomestay {
    /// The host household, cooperative or village collective.
    pub host_name: String,
    /// Where it is (county level).
    pub region_code: RegionCode,
    /// The homestay's name.
    pub name: String,
    /// Its first room type.
    pub room_type: NewRoomType,
    /// Refund tiers when a paid booking is cancelled; none: the standard
    /// policy (100 % from 7 days ahead, 50 % from 3).
    #[serde(default)]
    pub cancellation_policy: Option<Vec<crate::policy::PolicyTier>>,
    /// Who asks (the gateway always says; must administer the region).
    /// None: a trusted internal caller such as the demo seed.
    #[serde(default)]
    pub by: Option<crate::auth::Principal>,
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
    /// Rooms on sale each night.
    pub rooms: u32,
    /// Price per room per night.
    pub price: Fen,
    /// Who asks (must administer the homestay's region); None: internal.
    #[serde(default)]
    pub by: Option<crate::auth::Principal>,
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
}
impl Rpc for GetRoomCalendar {
    const SERVICE: &'static str = "inventory";
    const METHOD: &'static str = "get_room_calendar";
    type Reply = Vec<Night>;
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
    /// Where it is.
    pub region_code: RegionCode,
    /// Certified poverty-relief listing.
    pub certified: bool,
    /// The room type.
    pub room_type_id: RoomTypeId,
    /// Its name.
    pub room_type_name: String,
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

// ------------------------------------------------------------------ booking

/// Kind of identity document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IdType {
    /// 居民身份证, 18 characters with a checksum.
    ResidentId,
    /// Passport.
    Passport,
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

/// Reads one booking.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetBooking {
    /// The booking.
    pub booking_id: BookingId,
    /// Who asks: its owner, its agency or an admin of its listing's region.
    pub viewer: crate::auth::Principal,
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
}
impl Rpc for ListBookings {
    const SERVICE: &'static str = "booking";
    const METHOD: &'static str = "list_bookings";
    type Reply = BookingPage;
}

/// A page of bookings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BookingPage {
    /// Newest first.
    pub bookings: Vec<BookingView>,
    /// Whether older ones follow.
    pub has_next_page: bool,
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
    /// Who cancels: its owner, its agency or a platform admin.
    pub viewer: crate::auth::Principal,
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
    /// What cancelling now refunds.
    pub refund: Fen,
    /// The policy's share for `days_before`.
    pub refund_percent: u8,
    /// Whole days (China time) until the stay or departure starts.
    pub days_before: i64,
    /// The listing's policy.
    pub policy: crate::policy::CancellationPolicy,
}

// ------------------------------------------------------------------ payment

/// Pays a booking awaiting payment with a provider token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PayBooking {
    /// Client-chosen key: a retry never charges twice.
    pub idempotency_key: String,
    /// The booking, as the gateway read it from the booking service.
    pub booking: BookingView,
    /// The provider's card/wallet token (`tok_success`, ... in the sandbox).
    pub payment_token: String,
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
pub struct GetHostBalances {}
impl Rpc for GetHostBalances {
    const SERVICE: &'static str = "payment";
    const METHOD: &'static str = "host_balances";
    type Reply = Vec<HostBalance>;
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
}
impl Rpc for RunPayouts {
    const SERVICE: &'static str = "payment";
    const METHOD: &'static str = "run_payouts";
    type Reply = PayoutRun;
}

/// A payout run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PayoutRun {
    /// Its reference.
    pub reference: String,
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
    /// Income to host households.
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
    /// Notes (empty clears them).
    pub notes: Option<String>,
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
    /// Paired since.
    pub since: Option<NaiveDate>,
    /// ACTIVE or ENDED.
    pub status: String,
    /// Notes.
    pub notes: Option<String>,
    /// Demonstration data.
    pub demo: bool,
    /// Its agreements, oldest first.
    pub agreements: Vec<AgreementView>,
}

/// Partnerships where a region (or a region inside it) is either side.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListPartnerships {
    /// Only pairs touching this region's sub-tree; all when None.
    pub region: Option<RegionCode>,
}
impl Rpc for ListPartnerships {
    const SERVICE: &'static str = "partnership";
    const METHOD: &'static str = "list_partnerships";
    type Reply = Vec<PartnershipView>;
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

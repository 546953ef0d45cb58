//! GraphQL output types, thin wrappers over the services' views.

use async_graphql::{
    Enum, ID, InputValueError, InputValueResult, Object, Scalar, ScalarType, SimpleObject, Value,
};
use chrono::{DateTime, NaiveDate, Utc};
use shared::events::HoldItem;
use shared::money::{CURRENCY, Fen};

/// A calendar date, `YYYY-MM-DD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Date(pub NaiveDate);

/// The years a date may name: wide enough for any stay, agreement or
/// report, narrow enough that no day arithmetic on it can overflow
/// (chrono alone reads `+262142-06-01` as a date).
pub(crate) const DATE_YEARS: std::ops::RangeInclusive<i32> = 1900..=2200;

/// An instant, as the API reads and writes it (`DateTime`): chrono's own
/// reading and writing (async-graphql's scalar), and an argument checked
/// with the request as a [`Date`] is — one that does not parse, or outside
/// the years a date may name, refuses the whole request (400) where
/// async-graphql's scalar failed only its field (200, the field null).
/// A leap second is read as the next second. The validator says only the
/// type it expected (worded in `http::explained`). async-graphql's
/// `chrono` feature is off, so no chrono type can be a second `DateTime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instant(pub DateTime<Utc>);

impl From<DateTime<Utc>> for Instant {
    fn from(at: DateTime<Utc>) -> Instant {
        Instant(at)
    }
}

/// An instant, RFC 3339 with its offset (`2026-12-05T08:00:00Z`, `2026-12-05T16:00:00+08:00`); answered in UTC. Given as an argument, in the years 1900 to 2200.
#[Scalar(
    name = "DateTime",
    specified_by_url = "https://datatracker.ietf.org/doc/html/rfc3339"
)]
impl ScalarType for Instant {
    fn parse(value: Value) -> InputValueResult<Self> {
        use chrono::{Datelike, Timelike};
        let Value::String(s) = &value else {
            return Err(InputValueError::expected_type(value));
        };
        let at = s.parse::<DateTime<Utc>>().map_err(|_| {
            InputValueError::custom(format!(
                "`{s}` is not a DateTime: an RFC 3339 date and time with its offset, e.g. \
                 2026-12-05T08:00:00+08:00 or 2026-12-05T00:00:00Z"
            ))
        })?;
        // PostgreSQL keeps no time before 4713 BC: such an instant was an
        // INTERNAL error where it reached a query.
        if !DATE_YEARS.contains(&at.year()) {
            return Err(InputValueError::custom(format!(
                "`{s}`: an instant between the years {} and {}",
                DATE_YEARS.start(),
                DATE_YEARS.end()
            )));
        }
        // A leap second (`10:00:60Z`, which chrono keeps as such) is the
        // next second, as PostgreSQL stores it: kept as given, a payout
        // run's `upTo` read back another instant than the one asked, and
        // every try was IDEMPOTENCY_KEY_REUSED.
        let at = match at.nanosecond().checked_sub(1_000_000_000) {
            Some(past) => at
                .with_nanosecond(past)
                .map_or(at, |at| at + chrono::Duration::seconds(1)),
            None => at,
        };
        Ok(Instant(at))
    }

    fn is_valid(value: &Value) -> bool {
        Self::parse(value.clone()).is_ok()
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_rfc3339())
    }
}

/// A day, `YYYY-MM-DD`, in the years 1900 to 2200: a night of a stay, a
/// departure's day, a day of a report or a term, as in China (UTC+8).
#[Scalar(name = "Date")]
impl ScalarType for Date {
    fn parse(value: Value) -> InputValueResult<Self> {
        use chrono::Datelike;
        let Value::String(s) = &value else {
            return Err(InputValueError::expected_type(value));
        };
        let date = (s.len() == 10)
            .then(|| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
            .flatten()
            .ok_or_else(|| InputValueError::custom(format!("`{s}` is not a date (YYYY-MM-DD)")))?;
        if !DATE_YEARS.contains(&date.year()) {
            return Err(InputValueError::custom(format!(
                "`{s}`: a date between {} and {}",
                DATE_YEARS.start(),
                DATE_YEARS.end()
            )));
        }
        Ok(Date(date))
    }

    /// Checked with the request, before anything runs: a variable that is
    /// no date refuses the whole request (400), where it failed only the
    /// field using it — after the mutations before it had run.
    fn is_valid(value: &Value) -> bool {
        Self::parse(value.clone()).is_ok()
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_string())
    }
}

/// An amount of money: a decimal string in yuan and the currency.
#[derive(SimpleObject)]
pub struct Money {
    /// e.g. "380.00".
    pub amount: String,
    /// Always "CNY".
    pub currency: String,
}

impl From<Fen> for Money {
    fn from(f: Fen) -> Money {
        Money {
            amount: f.to_string(),
            currency: CURRENCY.into(),
        }
    }
}

/// Language of names.
#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq, Default)]
pub enum Lang {
    /// 中文.
    #[default]
    Zh,
    /// English.
    En,
}

/// Picks the text in the language asked for, else the `Accept-Language`
/// of the request, else Chinese.
pub fn in_lang<'a>(
    ctx: &async_graphql::Context<'_>,
    lang: Option<Lang>,
    zh: &'a str,
    en: &'a str,
) -> &'a str {
    match lang
        .or_else(|| ctx.data_opt::<Lang>().copied())
        .unwrap_or_default()
    {
        Lang::En if !en.is_empty() => en,
        _ => zh,
    }
}

/// Kind of identity document, as China's real-name rules for travel take
/// them.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum DocumentType {
    /// 居民身份证: 18 characters with a checksum. Also the residence permits
    /// of Hong Kong, Macao and Taiwan residents (港澳台居民居住证, 81…, 82…,
    /// 83…) and the foreign permanent resident ID card of 2023
    /// (外国人永久居留身份证, 9…), which have the same form.
    ResidentId,
    /// Passport: 5 to 20 letters and digits.
    Passport,
    /// 港澳居民来往内地通行证 (回乡证): H or M and 8 digits (10 on older
    /// cards).
    HkMacaoPermit,
    /// 台湾居民来往大陆通行证 (台胞证): 8 digits (10 on older booklets).
    TaiwanPermit,
}

impl From<shared::rpcs::IdType> for DocumentType {
    fn from(t: shared::rpcs::IdType) -> DocumentType {
        use shared::rpcs::IdType;
        match t {
            IdType::ResidentId => DocumentType::ResidentId,
            IdType::Passport => DocumentType::Passport,
            IdType::HkMacaoPermit => DocumentType::HkMacaoPermit,
            IdType::TaiwanPermit => DocumentType::TaiwanPermit,
        }
    }
}

/// An administrative region (GB/T 2260).
pub struct Region(pub shared::region::Region);

#[Object]
impl Region {
    /// The six-digit code, e.g. 150430.
    async fn code(&self) -> ID {
        ID(self.0.code.to_string())
    }
    /// The name in the language asked for (or `Accept-Language`; Chinese by default).
    async fn name(&self, ctx: &async_graphql::Context<'_>, lang: Option<Lang>) -> &str {
        in_lang(ctx, lang, &self.0.name_zh, &self.0.name_en)
    }
    /// Chinese name.
    async fn name_zh(&self) -> &str {
        &self.0.name_zh
    }
    /// English name.
    async fn name_en(&self) -> &str {
        &self.0.name_en
    }
    /// The parent region's code.
    async fn parent_code(&self) -> Option<ID> {
        self.0.parent.map(|p| ID(p.to_string()))
    }
    /// One of the 832 national poverty counties.
    async fn poverty_county(&self) -> bool {
        self.0.poverty_county
    }
    /// The year it was lifted out of poverty.
    async fn lifted_year(&self) -> Option<i32> {
        self.0.lifted_year
    }
}

/// Booking status.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum BookingStatus {
    /// Waiting for the hold.
    Pending,
    /// Held; pay before `expiresAt`.
    AwaitingPayment,
    /// Paid and confirmed.
    Confirmed,
    /// The hold was refused (see `reason`).
    Rejected,
    /// Not paid in time.
    Expired,
    /// Cancelled.
    Cancelled,
}

impl BookingStatus {
    /// The name the services use.
    pub fn as_str(self) -> &'static str {
        match self {
            BookingStatus::Pending => "PENDING",
            BookingStatus::AwaitingPayment => "AWAITING_PAYMENT",
            BookingStatus::Confirmed => "CONFIRMED",
            BookingStatus::Rejected => "REJECTED",
            BookingStatus::Expired => "EXPIRED",
            BookingStatus::Cancelled => "CANCELLED",
        }
    }
}

fn status(s: &str) -> BookingStatus {
    match s {
        "AWAITING_PAYMENT" => BookingStatus::AwaitingPayment,
        "CONFIRMED" => BookingStatus::Confirmed,
        "REJECTED" => BookingStatus::Rejected,
        "EXPIRED" => BookingStatus::Expired,
        "CANCELLED" => BookingStatus::Cancelled,
        _ => BookingStatus::Pending,
    }
}

/// The listing a booking holds, as it was when held.
pub struct Listing {
    listing_id: Option<ID>,
    cancellation_policy: shared::policy::CancellationPolicy,
    title: String,
    title_en: Option<String>,
    region_code: ID,
    certified: bool,
    host_id: ID,
}

#[Object]
impl Listing {
    /// Homestay and room type, or route and its day, in the language asked
    /// for (or `Accept-Language`; Chinese by default, and where the listing
    /// had no English name when held).
    async fn title(&self, ctx: &async_graphql::Context<'_>, lang: Option<Lang>) -> &str {
        in_lang(
            ctx,
            lang,
            &self.title,
            self.title_en.as_deref().unwrap_or(""),
        )
    }
    /// Where it is.
    async fn region_code(&self) -> &ID {
        &self.region_code
    }
    /// Carried the poverty-relief certification when held.
    async fn certified(&self) -> bool {
        self.certified
    }
    /// The household, cooperative or village collective paid for it.
    async fn host_id(&self) -> &ID {
        &self.host_id
    }
    /// The homestay (`homestay(id:)`) or route (`route(id:)`) booked, to
    /// find it again; null for bookings held before 2026-12-07. Not named
    /// `id`: this is a snapshot, one per booking, not the listing itself.
    async fn listing_id(&self) -> Option<&ID> {
        self.listing_id.as_ref()
    }
    /// Refund tiers if a paid booking is cancelled, as they were when held
    /// (a later change of the listing's rule applies to bookings held
    /// after it).
    async fn cancellation_policy(&self) -> Vec<PolicyTier> {
        policy_tiers_view(&self.cancellation_policy)
    }
}

impl From<&shared::events::ListingSnapshot> for Listing {
    fn from(l: &shared::events::ListingSnapshot) -> Listing {
        Listing {
            listing_id: l.listing_id.map(|id| ID(id.to_string())),
            cancellation_policy: l.cancellation_policy.clone(),
            title: l.title.clone(),
            title_en: l.title_en.clone(),
            region_code: ID(l.region_code.to_string()),
            certified: l.certified,
            host_id: ID(l.host_id.to_string()),
        }
    }
}

/// What a booking request would cost, and whether it could be held now.
pub struct BookingQuote(pub shared::rpcs::BookingQuote);

#[Object]
impl BookingQuote {
    /// The listing as a booking would snapshot it.
    async fn listing(&self) -> Listing {
        Listing::from(&self.0.listing)
    }
    /// Every night for the rooms asked, or every seat: of the nights on
    /// sale only, so when `bookable` is false (a night CLOSED or never on
    /// sale) it is not a price to show.
    async fn total(&self) -> Money {
        self.0.total.into()
    }
    /// Whether it could be held at this moment. The hold decides: someone
    /// may take the last room in between.
    async fn bookable(&self) -> bool {
        self.0.bookable
    }
    /// Why not: SOLD_OUT, CLOSED, MIN_STAY, CUT_OFF or NOT_PUBLISHED.
    async fn refusal(&self) -> Option<&str> {
        self.0.refusal.map(|c| c.as_str())
    }
    /// Why not, for the traveler: which night, how many nights at least,
    /// when bookings closed (null when `bookable`).
    async fn reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }
    /// Refund tiers if a paid booking is cancelled.
    async fn cancellation_policy(&self) -> Vec<PolicyTier> {
        policy_tiers_view(&self.0.listing.cancellation_policy)
    }
}

/// A booking.
pub struct Booking(pub shared::rpcs::BookingView);

/// What a stay booked.
struct Stay {
    room_type_id: shared::ids::RoomTypeId,
    check_in: NaiveDate,
    check_out: NaiveDate,
    rooms: u32,
}

impl Booking {
    /// The stay, when it booked rooms (not seats).
    fn stay(&self) -> Option<Stay> {
        match self.0.item {
            HoldItem::RoomNights {
                room_type_id,
                check_in,
                check_out,
                rooms,
            } => Some(Stay {
                room_type_id,
                check_in,
                check_out,
                rooms,
            }),
            HoldItem::Seats { .. } => None,
        }
    }
}

#[Object]
impl Booking {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn status(&self) -> BookingStatus {
        status(&self.0.status)
    }
    /// Number of travelers.
    async fn travelers(&self) -> u32 {
        self.0.travelers
    }
    /// The room type of a stay.
    async fn room_type_id(&self) -> Option<ID> {
        self.stay().map(|s| ID(s.room_type_id.to_string()))
    }
    /// A stay's first night.
    async fn check_in(&self) -> Option<Date> {
        self.stay().map(|s| Date(s.check_in))
    }
    /// A stay's day of departure (not a night).
    async fn check_out(&self) -> Option<Date> {
        self.stay().map(|s| Date(s.check_out))
    }
    /// Rooms a night, for a stay.
    async fn rooms(&self) -> Option<u32> {
        self.stay().map(|s| s.rooms)
    }
    /// The route departure of a seat booking.
    async fn departure_id(&self) -> Option<ID> {
        match &self.0.item {
            HoldItem::Seats { departure_id, .. } => Some(ID(departure_id.to_string())),
            HoldItem::RoomNights { .. } => None,
        }
    }
    /// The day it starts: a stay's check-in, or a route's departure date
    /// (known once the seats were held, or refused with the departure found).
    async fn starts_on(&self) -> Option<Date> {
        match self.stay() {
            Some(stay) => Some(Date(stay.check_in)),
            None => self.0.listing.as_ref().and_then(|l| l.starts_on).map(Date),
        }
    }
    /// The price snapshot, once held.
    async fn total(&self) -> Option<Money> {
        self.0.total.map(Money::from)
    }
    /// What was booked, as it was when held (title, region, host, refund
    /// rule); null until the hold is granted (PENDING). A REJECTED booking
    /// has it as it was when refused, or null when the listing was unknown
    /// or off sale.
    async fn listing(&self) -> Option<Listing> {
        self.0.listing.as_ref().map(Listing::from)
    }
    /// Pay before this, or the booking expires: set while it is
    /// AWAITING_PAYMENT; null while PENDING (no hold yet) and once it is
    /// confirmed or has ended (no deadline stands then).
    async fn expires_at(&self) -> Option<Instant> {
        self.0
            .expires_at
            .filter(|_| self.0.status == "AWAITING_PAYMENT")
            .map(Instant)
    }
    /// The sponsor region it counts for in the partnerships' figures: the
    /// one declared with it (`sponsorRegionCode`), else the booker's home
    /// region; null for a booker living abroad who declared none.
    async fn sponsor_region(&self) -> Option<Region> {
        self.0
            .sponsor_region
            .and_then(shared::region::reference_region)
            .map(Region)
    }
    /// Why it was rejected, expired or cancelled.
    async fn reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }
    /// Of a REJECTED booking, the code its `reason` starts with — SOLD_OUT,
    /// CLOSED, MIN_STAY, CUT_OFF, NOT_PUBLISHED, NOT_FOUND, BAD_USER_INPUT,
    /// SERVICE_UNAVAILABLE (the hold was never answered) — for a client to
    /// decide on (other dates, another listing, later).
    async fn refusal(&self) -> Option<&'static str> {
        if self.0.status != "REJECTED" {
            return None;
        }
        let code = self.0.reason.as_deref()?.split(':').next()?;
        serde_json::from_value::<shared::ErrorCode>(serde_json::Value::from(code))
            .ok()
            .map(shared::ErrorCode::as_str)
    }
    async fn created_at(&self) -> Instant {
        Instant(self.0.created_at)
    }
    /// When it last changed: its status, a refund, or a retried hold.
    async fn updated_at(&self) -> Instant {
        Instant(self.0.updated_at.unwrap_or(self.0.created_at))
    }
    /// The refund promised when it was cancelled after payment, or when a
    /// payment arrived after it had ended: the quote until payment has made
    /// the refund, then what it gave back (the policy's share of what was
    /// left by then; 0.00 when nothing was).
    async fn refund_due(&self) -> Option<Money> {
        self.0.refund_due.map(Money::from)
    }
    /// The booking agency's commission from its contract, in basis points
    /// (0 when a traveler booked).
    async fn commission_basis_points(&self) -> u32 {
        self.0.commission_bp
    }
    /// Money refunded so far.
    async fn refunded(&self) -> Money {
        self.0.refunded.into()
    }
    /// Money given back from its payment: by the cancellation policy, for
    /// a payment that came after it ended, or by an admin. Null (with its
    /// error) when payment does not answer: the booking, and the list it
    /// is in, are still answered.
    async fn refunds(
        &self,
        ctx: &async_graphql::Context<'_>,
    ) -> async_graphql::Result<Option<Vec<super::payments::Refund>>> {
        super::payments::refunds_of(ctx, self.0.id).await.map(Some)
    }
    /// Its payment: the captured one, else the latest attempt (none before
    /// `payBooking`).
    async fn payment(
        &self,
        ctx: &async_graphql::Context<'_>,
    ) -> async_graphql::Result<Option<Payment>> {
        super::payments::payment_of(ctx, self.0.id).await
    }
    /// Who travels, as the booking named them; each document number with
    /// all but its last four characters starred (enough to match the
    /// document at check-in). Read only when asked for, for a whole page
    /// in one call.
    async fn guests(
        &self,
        ctx: &async_graphql::Context<'_>,
    ) -> async_graphql::Result<Vec<Traveler>> {
        let guests = guests_of(ctx, self.0.id).await?;
        Ok(guests
            .travelers
            .into_iter()
            .map(|t| Traveler {
                name: t.name,
                id_type: t.id_type.into(),
                id_number: t.id_number,
            })
            .collect())
    }
    /// Who to contact about it: the host before arrival, the platform
    /// about a refund.
    async fn contact(&self, ctx: &async_graphql::Context<'_>) -> async_graphql::Result<Contact> {
        let contact = guests_of(ctx, self.0.id).await?.contact;
        Ok(Contact {
            name: contact.name,
            phone: contact.phone,
            email: contact.email,
        })
    }
    /// Notes for the host.
    async fn notes(
        &self,
        ctx: &async_graphql::Context<'_>,
    ) -> async_graphql::Result<Option<String>> {
        Ok(guests_of(ctx, self.0.id).await?.notes)
    }
    /// Every step it went through, oldest first.
    async fn history(
        &self,
        ctx: &async_graphql::Context<'_>,
    ) -> async_graphql::Result<Vec<BookingEvent>> {
        // Bookings are read without their history; it comes for the whole
        // page in one call when asked for.
        let steps = if self.0.history.is_empty() {
            super::loaders::history(ctx, self.0.id).await?
        } else {
            self.0.history.clone()
        };
        Ok(steps
            .iter()
            .map(|h| BookingEvent {
                status: status(&h.status),
                cause: h.cause.clone(),
                at: Instant(h.at),
            })
            .collect())
    }
}

/// Who travels on a booking and how to reach them. Whoever may read the
/// booking may read these; a booking read at all is the caller's to see.
async fn guests_of(
    ctx: &async_graphql::Context<'_>,
    booking: shared::ids::BookingId,
) -> async_graphql::Result<shared::rpcs::BookingGuests> {
    super::loaders::of_booking::<shared::rpcs::GetBookingGuests>(ctx, booking)
        .await?
        .ok_or_else(|| {
            crate::error::gql(shared::AppError::new(
                shared::ErrorCode::Forbidden,
                format!("booking {booking}: not yours to see who travels"),
            ))
        })
}

/// Someone travelling on a booking.
#[derive(SimpleObject)]
pub struct Traveler {
    /// Real name, as on the document.
    pub name: String,
    /// RESIDENT_ID, PASSPORT, HK_MACAO_PERMIT or TAIWAN_PERMIT.
    pub id_type: DocumentType,
    /// The document's number, all but its last four characters starred
    /// (`**************002X`; fewer shown of a short passport number).
    pub id_number: String,
}

/// How to reach whoever booked.
#[derive(SimpleObject)]
pub struct Contact {
    pub name: String,
    /// Mobile phone.
    pub phone: String,
    pub email: Option<String>,
}

/// One step of a booking's history.
#[derive(SimpleObject)]
pub struct BookingEvent {
    /// The status after this step.
    pub status: BookingStatus,
    /// What caused it.
    pub cause: String,
    /// When.
    pub at: Instant,
}

/// One step of a cancellation policy.
#[derive(SimpleObject)]
pub struct PolicyTier {
    /// Cancelling at least this many days ahead…
    pub days_before: u32,
    /// …refunds this share of the price.
    pub refund_percent: u8,
}

/// A cancellation policy's tiers, most days first.
pub fn policy_tiers_view(policy: &shared::policy::CancellationPolicy) -> Vec<PolicyTier> {
    policy
        .tiers
        .iter()
        .map(|t| PolicyTier {
            days_before: t.days_before,
            refund_percent: t.refund_percent,
        })
        .collect()
}

/// What cancelling a booking now would refund; ask before `cancelBooking`.
pub struct CancellationQuote(pub shared::rpcs::CancellationQuote);

#[Object]
impl CancellationQuote {
    async fn booking_id(&self) -> ID {
        ID(self.0.booking_id.to_string())
    }
    /// The booking's status now.
    async fn status(&self) -> BookingStatus {
        status(&self.0.status)
    }
    /// Whether it can be cancelled at all: not once it has ended, nor
    /// once a paid booking's stay or departure is under way.
    async fn cancellable(&self) -> bool {
        self.0.cancellable
    }
    /// What was paid (zero before payment).
    async fn paid(&self) -> Money {
        self.0.paid.into()
    }
    /// What of it was refunded already, or is on its way back (an admin's
    /// refund): `refund` is `refundPercent` of what is left, `paid` less
    /// this.
    async fn refunded(&self) -> Money {
        self.0.refunded.into()
    }
    /// What cancelling now refunds.
    async fn refund(&self) -> Money {
        self.0.refund.into()
    }
    /// The policy's share for `daysBefore`, of what is left (100 quoted
    /// `forHost`).
    async fn refund_percent(&self) -> u8 {
        self.0.refund_percent
    }
    /// Whole days until the stay or departure starts (China Standard Time).
    async fn days_before(&self) -> i64 {
        self.0.days_before
    }
    /// The listing's cancellation policy, most days first.
    async fn policy(&self) -> Vec<PolicyTier> {
        policy_tiers_view(&self.0.policy)
    }
}

/// Where a payment's money went.
#[derive(SimpleObject)]
pub struct PaymentSplit {
    /// To the host household, cooperative or village collective.
    pub host: Money,
    /// Platform fee.
    pub platform: Money,
    /// Donation to the public welfare fund.
    pub fund: Money,
    /// Agency commission.
    pub agency: Money,
}

/// Payment status.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum PaymentStatus {
    /// Being processed.
    Processing,
    /// Money captured.
    Captured,
    /// Declined.
    Failed,
}

/// A payment.
pub struct Payment(pub shared::rpcs::PaymentView);

#[Object]
impl Payment {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn booking_id(&self) -> ID {
        ID(self.0.booking_id.to_string())
    }
    async fn status(&self) -> PaymentStatus {
        match self.0.status.as_str() {
            "CAPTURED" => PaymentStatus::Captured,
            "FAILED" => PaymentStatus::Failed,
            _ => PaymentStatus::Processing,
        }
    }
    async fn amount(&self) -> Money {
        self.0.amount.into()
    }
    /// The split of a captured payment.
    async fn split(&self) -> Option<PaymentSplit> {
        self.0.split.map(PaymentSplit::from)
    }
    /// Why a FAILED payment failed, as the provider said (a decline, an
    /// unknown token, a charge that never went through).
    async fn failure_reason(&self) -> Option<&str> {
        self.0.failure_reason.as_deref()
    }
}

/// One night of a room type's calendar.
pub struct Night(pub shared::rpcs::Night);

#[Object]
impl Night {
    async fn date(&self) -> Date {
        Date(self.0.date)
    }
    /// Rooms on sale.
    async fn rooms(&self) -> u32 {
        self.0.rooms
    }
    /// Rooms neither held nor sold. A closed night keeps its count here
    /// but takes no booking (see `closed`).
    async fn available(&self) -> u32 {
        self.0.available
    }
    /// Price per room.
    async fn price(&self) -> Money {
        self.0.price.into()
    }
    /// Not bookable this night.
    async fn closed(&self) -> bool {
        self.0.closed
    }
    /// Shortest stay that may begin this night.
    async fn min_stay(&self) -> u32 {
        self.0.min_stay
    }
}

/// The public welfare fund.
pub struct WelfareFund;

/// The fund's donations in a year.
#[derive(SimpleObject)]
pub struct FundYear {
    pub year: i32,
    pub amount: Money,
}

/// The fund's donations from bookings in a region.
#[derive(SimpleObject)]
pub struct FundRegion {
    pub region_code: ID,
    pub amount: Money,
}

/// One entry of the welfare fund.
#[derive(async_graphql::SimpleObject)]
pub struct FundEntry {
    /// A reference derived from the booking (not its id).
    pub booking_reference: String,
    /// The listing's region.
    pub region_code: ID,
    /// The donation (negative when a refund reversed it).
    pub amount: Money,
    /// When it was posted.
    pub at: Instant,
}

/// Extra fields of the fund's entry list.
#[derive(async_graphql::SimpleObject)]
pub struct FundEntryCount {
    /// Entries in all.
    pub total_count: i64,
}

#[Object]
impl WelfareFund {
    /// The fund's balance. Each field of the fund is a read of its own from
    /// payment: null with the error when it fails, the rest of the answer
    /// kept.
    async fn balance(
        &self,
        ctx: &async_graphql::Context<'_>,
    ) -> async_graphql::Result<Option<Money>> {
        let page = super::rpc(
            ctx,
            shared::rpcs::GetWelfareFund {
                first: 1,
                after: None,
                region: None,
            },
        )
        .await?;
        Ok(Some(page.balance.into()))
    }

    /// Net donations per year (China time), oldest first. Null with the
    /// error when it cannot be read.
    async fn by_year(
        &self,
        ctx: &async_graphql::Context<'_>,
    ) -> async_graphql::Result<Option<Vec<FundYear>>> {
        let totals = super::rpc(ctx, shared::rpcs::GetFundTotals { year: None }).await?;
        Ok(Some(
            totals
                .by_year
                .into_iter()
                .map(|(year, amount)| FundYear {
                    year,
                    amount: amount.into(),
                })
                .collect(),
        ))
    }

    /// Net donations per beneficiary region (the listing's county), largest
    /// first; for one year, or all. Null with the error when it cannot be
    /// read.
    async fn by_region(
        &self,
        ctx: &async_graphql::Context<'_>,
        year: Option<i32>,
    ) -> async_graphql::Result<Option<Vec<FundRegion>>> {
        let totals = super::rpc(ctx, shared::rpcs::GetFundTotals { year }).await?;
        Ok(Some(
            totals
                .by_region
                .into_iter()
                .map(|(code, amount)| FundRegion {
                    region_code: ID(code.to_string()),
                    amount: amount.into(),
                })
                .collect(),
        ))
    }

    /// Entries, newest first (Relay connection; `first` at most 100); with
    /// `regionCode`, only those of listings in that region or within it
    /// (a banner's, a prefecture's), `totalCount` too. Null with the error
    /// when it cannot be read.
    #[graphql(complexity = "super::per_item(first.unwrap_or(20), child_complexity)")]
    async fn entries(
        &self,
        ctx: &async_graphql::Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        region_code: Option<ID>,
    ) -> async_graphql::Result<
        Option<async_graphql::connection::Connection<String, FundEntry, FundEntryCount>>,
    > {
        let first = super::page_size(first.unwrap_or(20))?;
        let after = after
            .map(|a| {
                a.parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| crate::error::gql(shared::rpcs::not_a_cursor(&a)))
            })
            .transpose()?;
        let region = region_code.map(|code| super::region(&code)).transpose()?;
        let page = super::rpc(
            ctx,
            shared::rpcs::GetWelfareFund {
                first,
                after,
                region,
            },
        )
        .await?;
        let mut connection = async_graphql::connection::Connection::with_additional_fields(
            after.is_some(),
            page.has_next_page,
            FundEntryCount {
                total_count: page.total_count,
            },
        );
        connection.edges.extend(page.entries.into_iter().map(|e| {
            async_graphql::connection::Edge::new(
                e.id.to_string(),
                FundEntry {
                    booking_reference: e.booking_reference,
                    region_code: ID(e.region_code.to_string()),
                    amount: e.amount.into(),
                    at: Instant(e.at),
                },
            )
        }));
        Ok(Some(connection))
    }
}

/// A booking in a list.
#[derive(SimpleObject)]
pub struct BookingEdge {
    pub cursor: String,
    pub node: Booking,
}

/// A page of bookings, in the order asked (newest first by default).
#[derive(SimpleObject)]
pub struct BookingConnection {
    pub edges: Vec<BookingEdge>,
    pub page_info: async_graphql::connection::PageInfo,
    /// Every booking the filter lets through, on all pages (counted only
    /// when asked for).
    pub total_count: u32,
}

impl BookingConnection {
    /// A page as a connection; `counted`: whether `totalCount` was selected.
    pub fn of(page: shared::rpcs::BookingPage, counted: bool) -> async_graphql::Result<Self> {
        let edges: Vec<BookingEdge> = page
            .bookings
            .into_iter()
            .map(|b| BookingEdge {
                cursor: b.id.to_string(),
                node: Booking(b),
            })
            .collect();
        Ok(BookingConnection {
            page_info: page_info(edges.iter().map(|e| &e.cursor), page.has_next_page),
            edges,
            total_count: count(counted, page.total_count)?,
        })
    }
}

/// A connection's `totalCount`: what the service counted, 0 when the field
/// was not selected (nothing was counted), an error when it was selected
/// and the service did not count (an older replica during an upgrade).
pub fn count(selected: bool, counted: Option<u64>) -> async_graphql::Result<u32> {
    match (selected, counted) {
        (_, Some(n)) => Ok(u32::try_from(n).unwrap_or(u32::MAX)),
        (false, None) => Ok(0),
        (true, None) => Err(crate::error::gql(shared::AppError::new(
            shared::ErrorCode::ServiceUnavailable,
            "totalCount: the service answering did not count (an upgrade is under way); ask again",
        ))),
    }
}

/// Relay page info for a forward page with these cursors.
pub fn page_info<'a>(
    mut cursors: impl DoubleEndedIterator<Item = &'a String>,
    has_next_page: bool,
) -> async_graphql::connection::PageInfo {
    let start_cursor = cursors.next().cloned();
    let end_cursor = cursors
        .next_back()
        .cloned()
        .or_else(|| start_cursor.clone());
    async_graphql::connection::PageInfo {
        has_previous_page: false,
        has_next_page,
        start_cursor,
        end_cursor,
    }
}

/// What a host is owed, or was paid.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct HostBalance {
    /// The household, cooperative or village collective.
    pub host_id: ID,
    pub amount: Money,
    #[graphql(skip)]
    pub id: shared::ids::HostId,
}

#[async_graphql::ComplexObject]
impl HostBalance {
    /// Who it is: name and region, to make the transfer to (one call for
    /// the whole list).
    async fn host(
        &self,
        ctx: &async_graphql::Context<'_>,
    ) -> async_graphql::Result<Option<super::catalogue::Host>> {
        Ok(super::loaders::host(ctx, self.id)
            .await?
            .map(super::catalogue::Host::from))
    }
}

impl From<shared::rpcs::HostBalance> for HostBalance {
    fn from(b: shared::rpcs::HostBalance) -> HostBalance {
        HostBalance {
            host_id: ID(b.host_id.to_string()),
            amount: b.owed.into(),
            id: b.host_id,
        }
    }
}

#[cfg(test)]
mod count_tests {
    use super::count;

    #[test]
    fn a_selected_count_the_service_did_not_make_is_an_error_not_zero() {
        assert_eq!(count(true, Some(7)).ok(), Some(7));
        assert_eq!(count(false, None).ok(), Some(0));
        assert!(count(true, None).is_err());
        assert_eq!(count(true, Some(u64::MAX)).ok(), Some(u32::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leap_second_is_the_next_second() {
        let at = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .expect("an instant")
                .with_timezone(&chrono::Utc)
        };
        for (given, read) in [
            ("2026-12-06T10:00:60Z", "2026-12-06T10:01:00Z"),
            ("2026-12-31T23:59:60.5Z", "2027-01-01T00:00:00.5Z"),
            ("2026-12-06T10:00:59Z", "2026-12-06T10:00:59Z"),
        ] {
            assert_eq!(
                <Instant as ScalarType>::parse(Value::String(given.to_owned()))
                    .ok()
                    .map(|i| i.0),
                Some(at(read)),
                "{given}"
            );
        }
    }
}

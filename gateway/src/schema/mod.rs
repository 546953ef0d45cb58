//! The GraphQL schema: types, queries and mutations over the services' RPCs.

mod auth;
mod catalogue;
mod certification;
mod impact;
pub mod loaders;
mod payments;
mod routes;
mod subscription;
pub(crate) mod types;

use crate::error::{bad_input, gql};
use crate::identity::Identity;
use async_graphql::{Context, ID, InputObject, Object, Result, Schema};
pub use auth::*;
pub use catalogue::*;
pub use certification::{Certification, CertificationConnection, CertificationState};
pub use impact::*;
pub use routes::{Departure, Route, RouteConnection, RouteCreated, RouteInput};
use shared::bus::{Bus, call};
use shared::events::HoldItem;
use shared::ids::{BookingId, DepartureId, RoomTypeId};
use shared::region::RegionCode;
use shared::rpc::Rpc;
use shared::rpcs::{self, ContactInput, IdType, TravelerInput};
use shared::{AppError, ErrorCode};
use std::str::FromStr;
use std::sync::Arc;
pub use subscription::Subscription;
pub use types::*;

/// The schema type.
pub type DuikouSchema = Schema<Query, Mutation, Subscription>;

/// How much a list costs against the complexity limit: each item as much
/// as its selection (so `first: 100` of a wide selection counts 100 times).
pub(crate) fn per_item(first: i32, child_complexity: usize) -> usize {
    child_complexity.saturating_mul(usize::try_from(first.clamp(1, 100)).unwrap_or(1))
}

/// How much a list over dates costs: its selection once per `days_each`
/// days of the span (a week of nights, a month of departures), at most a
/// year's worth; an open end counts as a year. (A route's departures asked
/// with no dates are those already read with it, counted once.) (Counted once, a 366-night
/// calendar on each offer of a search page let one anonymous request read
/// 146,000 nights.)
pub(crate) fn per_span(
    from: Option<&types::Date>,
    to: Option<&types::Date>,
    days_each: i64,
    child_complexity: usize,
) -> usize {
    let days = match (from, to) {
        (None, None) => 1,
        (Some(from), Some(to)) => (to.0 - from.0).num_days(),
        _ => 366,
    };
    let units = (days.clamp(1, 366) + days_each - 1) / days_each;
    child_complexity.saturating_mul(usize::try_from(units).unwrap_or(1))
}

/// How deep a query may nest: GraphiQL's introspection query is 13 deep;
/// this leaves it room.
pub const MAX_DEPTH: usize = 16;

/// How costly a query may be: each field 1, a list's fields times its page
/// size (a page of 100 with a 40-field selection fits).
pub const MAX_COMPLEXITY: usize = 5_000;

/// What `regionImpact` costs against [`MAX_COMPLEXITY`]: it reads a
/// year's booking facts twice, whatever the region (thirty aliases in one
/// anonymous request were sixty such reads).
const REGION_IMPACT_COST: usize = 1_000;

/// Builds the schema with its limits; `bus` is how resolvers reach services.
pub fn build_schema(
    bus: Option<Arc<dyn Bus>>,
    identity: Option<Identity>,
    push: Option<crate::push::Push>,
) -> DuikouSchema {
    let mut builder = Schema::build(Query, Mutation, Subscription)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        // No "Did you mean" for an unknown field or argument: the guess
        // compares the name with every one of its type, in time that
        // grows with the name's length (a 250,000-letter field held a
        // worker for seconds). The schema is introspectable: tools guess.
        .disable_suggestions()
        // Lists and input objects nested past this overflow the stack.
        .extension(crate::nesting::NestingLimit)
        // The WebSocket is for subscriptions (crate::socket).
        .extension(crate::socket::SubscriptionsOnly)
        // A failed field is null, as the spec says, not left out.
        .extension(crate::nulls::FieldErrorsAsNull);
    if let Some(bus) = bus {
        builder = builder.data(bus);
    }
    if let Some(identity) = identity {
        builder = builder.data(identity);
    }
    if let Some(push) = push {
        builder = builder.data(push);
    }
    builder.finish()
}

/// The bus, or SERVICE_UNAVAILABLE (never a type name).
pub(crate) fn bus(ctx: &Context<'_>) -> Result<Arc<dyn Bus>, AppError> {
    ctx.data::<Arc<dyn Bus>>()
        .cloned()
        .map_err(|_| AppError::new(ErrorCode::ServiceUnavailable, "the gateway has no bus"))
}

async fn call_service<R: Rpc>(ctx: &Context<'_>, request: R) -> Result<R::Reply, AppError> {
    let bus = bus(ctx)?;
    let Some(asked) = ctx.data_opt::<AskedOnce>() else {
        return call(bus.as_ref(), &request).await;
    };
    let body = serde_json::to_value(&request).map_err(AppError::internal)?;
    shared::bus::reply_as::<R>(asked.ask(bus, (R::SERVICE, R::METHOD), body).await?)
}

/// An answer a query is waiting for or has had, shared by every field that
/// asks the same.
type Asked = futures::future::Shared<
    futures::future::BoxFuture<'static, Result<serde_json::Value, AppError>>,
>;

/// What one query has asked the services, by service, method and request:
/// a field the query writes many times — repeated, or spread by fragments;
/// async-graphql runs every copy — asks its service once (2,048 copies of
/// `welfareFund { byYear }` in a 550-byte anonymous query were 2,048 RPCs,
/// and a few such queries a minute made payment time out for everyone).
/// Put in the data of queries only: a mutation's later fields may read what
/// its earlier ones changed.
#[derive(Default)]
pub(crate) struct AskedOnce(
    std::sync::Mutex<std::collections::HashMap<(&'static str, &'static str, String), Asked>>,
);

impl AskedOnce {
    async fn ask(
        &self,
        bus: Arc<dyn Bus>,
        method: (&'static str, &'static str),
        body: serde_json::Value,
    ) -> Result<serde_json::Value, AppError> {
        use futures::FutureExt;
        let asked = {
            let mut asked = self.0.lock().unwrap_or_else(|p| p.into_inner());
            asked
                .entry((method.0, method.1, body.to_string()))
                .or_insert_with(|| {
                    async move {
                        let deadline = bus.config().rpc_timeout;
                        shared::bus::call_value(bus.as_ref(), method, body, deadline).await
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        asked.await
    }
}

/// [`call_service`] with a deadline shorter than the bus's default.
async fn call_service_within<R: Rpc>(
    ctx: &Context<'_>,
    request: R,
    deadline: std::time::Duration,
) -> Result<R::Reply, AppError> {
    let bus = bus(ctx)?;
    let deadline = deadline.min(bus.config().rpc_timeout);
    shared::bus::call_within(bus.as_ref(), &request, deadline).await
}

pub(crate) async fn rpc<R: Rpc>(ctx: &Context<'_>, request: R) -> Result<R::Reply> {
    call_service(ctx, request).await.map_err(gql)
}

/// [`rpc`] for a request its client sent with a key (`key`: the argument
/// that carries it, `idempotencyKey` or a payout run's `reference`): one
/// its service did not answer in time may have been done, and the client
/// is told to send it again with the same key — which answers what was
/// done, or does it — never with another (a payment or refund under a new
/// key is another one).
pub(crate) async fn keyed_rpc<R: Rpc>(
    ctx: &Context<'_>,
    key: &str,
    request: R,
) -> Result<R::Reply> {
    call_service(ctx, request).await.map_err(|e| {
        if shared::bus::is_unanswered(&e) {
            gql(shared::AppError::new(
                ErrorCode::ServiceUnavailable,
                format!(
                    "a part of Duikou did not answer in time, and this may have been done: \
                     send it again with the same {key}, which answers what was done or does \
                     it (never with another)"
                ),
            ))
        } else {
            gql(e)
        }
    })
}

/// [`rpc`] for a change of the catalogue (a listing, calendar, route or
/// certification): once it succeeded, this gateway's cached catalogue
/// answers are stale at once, not when the service's
/// `inventory.catalogue_changed` arrives — the caller's next read sees
/// what it just did. Other gateways move on the event.
pub(crate) async fn changing<R: Rpc>(ctx: &Context<'_>, request: R) -> Result<R::Reply> {
    let done = rpc(ctx, request).await?;
    if let Some(cache) = ctx.data_opt::<crate::cache::Cache>() {
        cache.changed_here();
    }
    Ok(done)
}

/// [`changing`] for a create of the catalogue (a homestay, room type,
/// host, route, departure): one its service did not answer in time may
/// have been made — the replica serving it stopped between its commit and
/// its answer, and none took the request up again in time — so its client
/// is told so, not to try again (an exploratory run made 5 of 16 homestays
/// so answered, a retry of each a second): sent with an idempotency key
/// (`keyed`), to send it again with the key; without, to look for it
/// first. `what`: what was being created, for the message. The cache
/// moves on whenever it may have been made, so that the one looking finds
/// it (no announcement may ever come).
pub(crate) async fn creating<R: Rpc>(
    ctx: &Context<'_>,
    (what, keyed): (&str, bool),
    request: R,
) -> Result<R::Reply> {
    let done = call_service(ctx, request).await;
    let unanswered = done.as_ref().is_err_and(shared::bus::is_unanswered);
    let made = done.is_ok() || unanswered || done.as_ref().is_err_and(shared::db::is_made_already);
    if made && let Some(cache) = ctx.data_opt::<crate::cache::Cache>() {
        cache.changed_here();
    }
    if unanswered {
        let then = if keyed {
            "send it again with the same idempotencyKey: it answers the one made, or makes it"
        } else {
            "look for it before sending this again (sent with an idempotencyKey, a create sent \
             again answers the one made)"
        };
        return Err(gql(shared::AppError::new(
            shared::ErrorCode::ServiceUnavailable,
            format!(
                "a part of Duikou did not answer in time, and the {what} may have been created: {then}"
            ),
        )));
    }
    done.map_err(gql)
}

/// [`rpc`] through the catalogue cache (reads that need no principal).
pub(crate) async fn cached<R: Rpc>(ctx: &Context<'_>, request: R) -> Result<R::Reply>
where
    R::Reply: Clone + Sync,
{
    let (Ok(bus), Some(cache)) = (bus(ctx), ctx.data_opt::<crate::cache::Cache>()) else {
        return rpc(ctx, request).await;
    };
    cache.call(bus.as_ref(), &request).await.map_err(gql)
}

fn parse<T: FromStr>(what: &str, value: &str) -> Result<T> {
    value
        .parse()
        .map_err(|_| bad_input(format!("`{value}` is not a valid {what}")))
}

/// A list's `after`, read as its cursors are written.
pub(crate) fn cursor<T: FromStr>(after: &str) -> Result<T> {
    after.parse().map_err(|_| gql(rpcs::not_a_cursor(after)))
}

/// A count from the API (GraphQL `Int` is signed).
/// Most items a page holds (`first`), everywhere.
pub(crate) const MAX_PAGE: u32 = 100;

/// A page's size: `first` is 1 to [`MAX_PAGE`], with one message for every
/// list.
pub(crate) fn page_size(first: i32) -> Result<u32> {
    u32::try_from(first)
        .ok()
        .filter(|n| (1..=MAX_PAGE).contains(n))
        .ok_or_else(|| bad_input(format!("first: 1 to {MAX_PAGE} at a time, not {first}")))
}

/// A count whose least is one (seats, beds, guests, rooms of a type, a
/// minimum stay): below one, negative or not, is passed on as 0, so that
/// the service's refusal says what it takes in one set of words for 0
/// and -1 (as the searches' counts).
fn at_least_one(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

fn non_negative(what: &str, n: i32) -> Result<u32> {
    u32::try_from(n).map_err(|_| bad_input(format!("{what} must not be negative")))
}

/// An amount in yuan, as the API writes money: digits, and at most two
/// after a point ("380", "380.5", "380.00"; not " 380" nor "380.").
fn yuan(what: &str, s: &str) -> Result<shared::money::Fen> {
    s.parse().map_err(|e| {
        bad_input(match e {
            shared::money::BadAmount::TooLarge(_) => {
                format!("{what} `{s}` is more yuan than any amount can be")
            }
            shared::money::BadAmount::Form(_) => {
                format!("{what} `{s}` is not an amount in yuan, such as \"380.00\"")
            }
        })
    })
}

/// A region Duikou knows: a code of the right form that is not in the
/// region table is refused (a mistyped code would otherwise read as a
/// region with nothing in it).
fn region(code: &str) -> Result<RegionCode> {
    let parsed = RegionCode::parse(code).map_err(|e| bad_input(e.to_string()))?;
    if shared::region::is_known(parsed) {
        return Ok(parsed);
    }
    // Said with what would do: the known region around it, or (Hong Kong,
    // Macao, Taiwan) that the table is mainland China's.
    let around = parsed
        .ancestors()
        .into_iter()
        .find_map(shared::region::reference_region);
    Err(bad_input(match around {
        _ if (81..=83).contains(&(parsed.get() / 10_000)) => format!(
            "unknown region {parsed}: Duikou's regions are mainland China's; someone living \
             in Hong Kong, Macao or Taiwan gives none (a home region left out)"
        ),
        Some(around) => format!(
            "unknown region {parsed}: Duikou's table does not list it; {} ({}) around it is \
             listed, give that (`regions` lists the regions Duikou knows)",
            around.name_zh, around.code
        ),
        None => format!("unknown region {parsed}: `regions` lists the regions Duikou knows"),
    }))
}

/// Which of a viewer's bookings a list holds.
#[derive(async_graphql::InputObject, Default)]
pub struct BookingFilter {
    /// Only these statuses (all when omitted or empty).
    pub status: Option<Vec<types::BookingStatus>>,
    /// Only bookings changed after this instant: a client whose
    /// `bookingsUpdated` subscription dropped catches up with this (ask
    /// from a minute before the last `updatedAt` seen and keep each id
    /// once: a change is stamped just before it commits).
    pub updated_since: Option<types::Instant>,
    /// Only bookings starting on this day or later: a stay's check-in, a
    /// departure's day (China dates). With `startsTo`, a region's arrivals
    /// for a week.
    pub starts_from: Option<types::Date>,
    /// Only bookings starting on this day or earlier.
    pub starts_to: Option<types::Date>,
    /// Only bookings of seats on this departure: with `guests`, its
    /// passenger list.
    pub departure_id: Option<ID>,
}

/// The order of a list of bookings.
#[derive(async_graphql::Enum, Copy, Clone, Eq, PartialEq, Default)]
#[graphql(remote = "rpcs::BookingOrder")]
pub enum BookingOrder {
    /// Newest booking first.
    #[default]
    NewestFirst,
    /// By the day it starts (a stay's check-in, a departure's day),
    /// earliest first, then in the order booked; bookings of seats not
    /// held yet (no day yet) last: an arrivals list.
    StartsOn,
}

/// The bookings `viewer` answers for, a page at a time.
async fn list_bookings(
    ctx: &Context<'_>,
    (viewer, with_own): (shared::auth::Principal, bool),
    (first, after, order): (Option<i32>, Option<String>, BookingOrder),
    filter: Option<BookingFilter>,
) -> Result<BookingConnection> {
    let first = page_size(first.unwrap_or(20))?;
    let after = after.map(|a| cursor::<BookingId>(&a)).transpose()?;
    let filter = filter.unwrap_or_default();
    let mut statuses: Vec<String> = filter
        .status
        .unwrap_or_default()
        .into_iter()
        .map(|s| s.as_str().to_owned())
        .collect();
    // Six statuses at most, however many times a request repeats them.
    statuses.sort_unstable();
    statuses.dedup();
    // Counted only when asked for (fragments included).
    let count = ctx.look_ahead().field("totalCount").exists();
    let page = rpc(
        ctx,
        rpcs::ListBookings {
            viewer,
            first,
            after,
            statuses,
            updated_since: filter.updated_since.map(|at| at.0),
            starts_from: filter.starts_from.map(|d| d.0),
            starts_to: filter.starts_to.map(|d| d.0),
            departure_id: filter
                .departure_id
                .map(|d| parse("departure id", &d))
                .transpose()?,
            order: order.into(),
            with_own,
            count,
        },
    )
    .await?;
    BookingConnection::of(page, count)
}

/// Queries.
pub struct Query;

#[Object]
impl Query {
    /// Regions under `parentCode` (provinces when omitted), e.g. the banners of 赤峰市 (150400);
    /// with `povertyOnly: true`, the (former) national poverty counties anywhere inside
    /// `parentCode` (内蒙古's 31 under 150000), or everywhere when it is omitted.
    async fn regions(
        &self,
        ctx: &Context<'_>,
        parent_code: Option<ID>,
        poverty_only: Option<bool>,
    ) -> Result<Vec<Region>> {
        let parent_code = parent_code.map(|c| region(&c)).transpose()?;
        let list = cached(
            ctx,
            rpcs::ListRegions {
                parent_code,
                poverty_only: poverty_only.unwrap_or(false),
            },
        )
        .await?;
        Ok(list.into_iter().map(Region).collect())
    }

    /// Room types bookable for every night of the stay with `rooms` rooms
    /// free and room for `guests`, cheapest first, with the stay's total.
    #[allow(clippy::too_many_arguments)]
    #[graphql(complexity = "per_item(first, child_complexity)")]
    async fn search_homestays(
        &self,
        ctx: &Context<'_>,
        region_code: Option<ID>,
        check_in: Date,
        check_out: Date,
        guests: i32,
        #[graphql(default = 1)] rooms: i32,
        #[graphql(default = false)] certified_only: bool,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<HomestayOfferConnection> {
        catalogue::search(
            ctx,
            region_code,
            check_in,
            check_out,
            guests,
            rooms,
            certified_only,
            first,
            after,
        )
        .await
    }

    /// Published routes with a departure in [from, to] that still has
    /// seats for `travelers`, starting in or visiting the region's sub-tree,
    /// by their earliest departure on sale in the window (whatever its seats
    /// left, so that bookings do not move a route between pages); each
    /// route lists the departures that match.
    #[allow(clippy::too_many_arguments)]
    #[graphql(complexity = "per_item(first, child_complexity)")]
    async fn search_routes(
        &self,
        ctx: &Context<'_>,
        region_code: Option<ID>,
        #[graphql(desc = "First departure day; left out: today (China time).")] from: Option<Date>,
        #[graphql(desc = "Last departure day; left out: a year after `from`.")] to: Option<Date>,
        #[graphql(default = 1)] travelers: i32,
        #[graphql(desc = "Highest price per person in yuan.")] max_price: Option<String>,
        #[graphql(default = false)] certified_only: bool,
        #[graphql(
            desc = "Words to find in the title or description (Chinese or English): each somewhere, in any order, Latin letters in either case."
        )]
        text: Option<String>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<RouteConnection> {
        let filter = routes::RouteSearch {
            region_code,
            from,
            to,
            travelers,
            max_price,
            certified_only,
            text,
            first,
            after,
        };
        routes::search(ctx, filter).await
    }

    /// The public notice board of certifications (扶贫产品认定) of listings
    /// in the region's sub-tree, newest first; anyone may read it. Those
    /// of a listing not on sale are shown to its region's admins only,
    /// except while in public notice (公示 is public). Null with the error
    /// when it cannot be read (the rest of the answer stays).
    #[graphql(complexity = "per_item(first, child_complexity)")]
    async fn certifications(
        &self,
        ctx: &Context<'_>,
        region_code: Option<ID>,
        state: Option<CertificationState>,
        listing_id: Option<ID>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<Option<CertificationConnection>> {
        certification::list(ctx, region_code, state, listing_id, first, after)
            .await
            .map(Some)
    }

    /// The hosts (households, cooperatives, village collectives) of a
    /// region's sub-tree, by region code and name, with how many listings
    /// each has (admins of the region). Null with the error when it cannot
    /// be read (the rest of the answer stays).
    #[graphql(complexity = "per_item(first, child_complexity)")]
    async fn hosts(
        &self,
        ctx: &Context<'_>,
        region_code: ID,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<Option<catalogue::HostConnection>> {
        catalogue::hosts(ctx, region_code, first, after)
            .await
            .map(Some)
    }

    /// The homestays and routes of hosts in the region's sub-tree, drafts
    /// and listings off sale included, newest first (admins of the region).
    /// `published`: only those on sale, or only those not; `hostId`: one
    /// host's. Null with the error when it cannot be read (the rest of the
    /// answer stays).
    #[graphql(complexity = "per_item(first, child_complexity)")]
    async fn region_listings(
        &self,
        ctx: &Context<'_>,
        region_code: ID,
        host_id: Option<ID>,
        published: Option<bool>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<Option<CatalogueListingConnection>> {
        catalogue::region_listings(
            ctx,
            catalogue::ListingFilter {
                region_code,
                host_id,
                published,
                first,
                after,
            },
        )
        .await
        .map(Some)
    }

    /// A homestay with its address, grade, amenities, photos and room types
    /// (each with `calendar(from, to)`); one off sale only for the admins
    /// of its region.
    async fn homestay(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Homestay>> {
        catalogue::homestay(ctx, id).await
    }

    /// A route with its departures; drafts and routes off sale only for the
    /// admins of its region.
    async fn route(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Route>> {
        routes::route(ctx, id).await
    }

    /// What each host is owed (platform admins; a region's admins, its
    /// hosts', `payable` aside): host shares captured, less refunded, less paid out — now,
    /// or as the ledger stood at `upTo`. A refund after a payout leaves a
    /// balance below zero, which later earnings make good before anything
    /// more is paid. Null with the error when it cannot be read (the rest
    /// of the answer stays).
    async fn host_balances(
        &self,
        ctx: &Context<'_>,
        up_to: Option<types::Instant>,
        #[graphql(
            default,
            desc = "true: what `runPayouts(upTo:)` would pay now, before running it — earnings before `upTo` of stays under way by then, less every payout and every refund so far (a refund after `upTo` too), hosts owed more than nothing."
        )]
        payable: bool,
    ) -> Result<Option<Vec<HostBalance>>> {
        let by = principal(ctx)?.clone();
        let up_to = up_to.map(|at| at.0);
        let balances = rpc(ctx, rpcs::GetHostBalances { up_to, payable, by }).await?;
        Ok(Some(balances.into_iter().map(HostBalance::from).collect()))
    }

    /// Payout runs, newest first, with what each host was paid (platform
    /// admins). Null with the error when it cannot be read (the rest of the
    /// answer stays).
    #[graphql(complexity = "per_item(first, child_complexity)")]
    async fn payout_runs(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<Option<payments::PayoutRunConnection>> {
        payments::payout_runs(ctx, first, after).await.map(Some)
    }

    /// What the reconciler found comparing the payment provider's records
    /// with the ledger, and what it did, newest first (platform admins);
    /// `kind: MISMATCH` lists what needs a person. Null with the error when
    /// it cannot be read (the rest of the answer stays).
    #[graphql(complexity = "per_item(first, child_complexity)")]
    async fn reconciliation_log(
        &self,
        ctx: &Context<'_>,
        kind: Option<payments::ReconciliationKind>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<Option<payments::ReconciliationConnection>> {
        payments::reconciliation_log(ctx, kind, first, after)
            .await
            .map(Some)
    }

    /// Who you are (needs a token).
    async fn me(&self, ctx: &Context<'_>) -> Result<Account> {
        let p = principal(ctx)?;
        identity(ctx)?
            .account(p.account_id)
            .await
            .map_err(gql)?
            .map(Account)
            .ok_or_else(|| {
                gql(AppError::new(
                    ErrorCode::Unauthenticated,
                    "the account no longer exists",
                ))
            })
    }

    /// Agencies, oldest first (platform admins).
    #[graphql(complexity = "per_item(first, child_complexity)")]
    async fn agencies(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<AgencyConnection> {
        platform_admin(ctx)?;
        let after = after.map(|a| cursor(&a)).transpose()?;
        let (list, has_next_page, total_count) = identity(ctx)?
            .agencies(page_size(first)?, after)
            .await
            .map_err(gql)?;
        let edges: Vec<AgencyEdge> = list
            .into_iter()
            .map(|a| AgencyEdge {
                cursor: a.id.to_string(),
                node: Agency(a),
            })
            .collect();
        Ok(AgencyConnection {
            page_info: page_info(edges.iter().map(|e| &e.cursor), has_next_page),
            edges,
            total_count,
        })
    }

    /// One agency: platform admins, and the agency's own accounts.
    async fn agency(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Agency>> {
        // Who asks first, as every field that needs a login does; one who
        // is in no agency is refused before the id is read.
        let p = principal(ctx)?;
        if !(p.is_platform_admin() || p.agency_id.is_some()) {
            return Err(forbidden(AGENCY_INSIDERS));
        }
        let id = parse("agency id", &id)?;
        agency_insider(ctx, id)?;
        Ok(identity(ctx)?.agency(id).await.map_err(gql)?.map(Agency))
    }

    /// Your bookings (a traveler's own, an agency's all; a region admin's
    /// are those held in its region, like `regionBookings`, and its own
    /// from before the role; a platform admin's, all), newest first or by the day they start (`orderBy`);
    /// `filter` narrows them by status, by when they last changed, by the
    /// day they start and by departure.
    #[graphql(complexity = "per_item(first.unwrap_or(20), child_complexity)")]
    async fn my_bookings(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        filter: Option<BookingFilter>,
        #[graphql(default)] order_by: BookingOrder,
    ) -> Result<BookingConnection> {
        let viewer = principal(ctx)?.clone();
        list_bookings(ctx, (viewer, true), (first, after, order_by), filter).await
    }

    /// Bookings held on listings in your region (region admins; platform
    /// admins: all), newest first or by the day they start (`orderBy:
    /// STARTS_ON`, the hosts' arrivals list). A booking counts once
    /// inventory held its listing. Null with the error when it cannot be
    /// read (the rest of the answer stays).
    #[graphql(complexity = "per_item(first.unwrap_or(20), child_complexity)")]
    async fn region_bookings(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        filter: Option<BookingFilter>,
        #[graphql(default)] order_by: BookingOrder,
    ) -> Result<Option<BookingConnection>> {
        let viewer = region_admin(ctx)?.clone();
        list_bookings(ctx, (viewer, false), (first, after, order_by), filter)
            .await
            .map(Some)
    }

    /// One booking: yours, your agency's, or (admins) one in your region.
    async fn booking(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Booking>> {
        let viewer = principal(ctx)?.clone();
        let booking_id: BookingId = parse("booking id", &id)?;
        match call_service(ctx, rpcs::GetBooking { booking_id, viewer }).await {
            Ok(b) => Ok(Some(Booking(b))),
            Err(e) if e.code == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(gql(e)),
        }
    }

    /// What a booking would cost and whether it can be held now, by the
    /// rules the hold applies; ask before `createBooking`. Anonymous. A
    /// listing off sale is quoted (refusal NOT_PUBLISHED) to its region's
    /// admins alone; to anyone else it is NOT_FOUND, as an unknown id is.
    /// Null with the error when it cannot be given (the rest of the answer
    /// stays).
    async fn booking_quote(
        &self,
        ctx: &Context<'_>,
        input: BookingQuoteInput,
    ) -> Result<Option<types::BookingQuote>> {
        // Below one, negative or not: one refusal saying what a booking has.
        let travelers = traveler_count(usize::try_from(input.travelers).unwrap_or(0))?;
        let item = hold_item(
            input.room_type_id.as_ref(),
            (input.check_in, input.check_out, input.rooms),
            input.departure_id.as_ref(),
            travelers,
        )?;
        let quote = rpc(ctx, rpcs::QuoteBooking { item, travelers }).await?;
        // A listing off sale (or a draft) is its region's admins' to read,
        // as `homestay(id)` and `route(id)` are: to anyone else it is not
        // there, in the very words an unknown id gets (not even that it
        // exists, nor its region).
        if quote.refusal == Some(ErrorCode::NotPublished)
            && !auth::manages(ctx, quote.listing.region_code)
        {
            return Err(gql(AppError::not_found(if input.departure_id.is_some() {
                rpcs::NO_SUCH_DEPARTURE
            } else {
                rpcs::NO_SUCH_ROOM_TYPE
            })));
        }
        Ok(Some(types::BookingQuote(quote)))
    }

    /// What cancelling a booking now would refund, by its listing's policy
    /// — or, `forHost: true`, what an admin's `cancelBooking(forHost:)`
    /// would: all that is left (the admins who may cancel it so; FORBIDDEN
    /// for others). Null with the error when it cannot be given (the rest
    /// of the answer stays).
    async fn cancellation_quote(
        &self,
        ctx: &Context<'_>,
        booking_id: ID,
        #[graphql(default = false)] for_host: bool,
    ) -> Result<Option<CancellationQuote>> {
        let viewer = principal(ctx)?.clone();
        if for_host && !viewer.may_administer() {
            return Err(forbidden(rpcs::FOR_HOST_IS_ADMINS));
        }
        let booking_id: BookingId = parse("booking id", &booking_id)?;
        let mut quote = rpc(
            ctx,
            rpcs::QuoteCancellation {
                booking_id,
                viewer,
                for_host,
            },
        )
        .await?;
        // What was paid and what is left to refund, as payment counts them
        // when the cancellation reaches it. Booking hears of a capture or a
        // refund (an admin's) only when payment's event arrives: a moment
        // after `payBooking` answered CAPTURED, it still quotes nothing paid.
        // (PENDING: payment takes only bookings awaiting it, and one
        // cancelled before its hold is granted has no policy to apply yet.
        // An ended booking quotes no refund, but what was paid all the
        // same: a capture that came after it expired, refunded in full.)
        if quote.status != "PENDING" {
            match loaders::money(ctx, booking_id).await {
                Ok(money) => {
                    if let Some((paid, refunded)) = payments::captured_and_refunded(&money) {
                        quote.paid = paid;
                        quote.refunded = refunded;
                        quote.refund =
                            (paid - refunded).scale(i64::from(quote.refund_percent), 100);
                    }
                }
                // Payment away: booking's own figures, which lag it at most.
                Err(e) => tracing::warn!(error = ?e.message, "quoting without payment's figures"),
            }
        }
        Ok(Some(CancellationQuote(quote)))
    }

    /// Partnerships (结对帮扶) that cover the region on either side: a side
    /// that is the region, lies inside it, or contains it (北京市↔内蒙古
    /// covers 海淀区); all when `regionCode` is omitted.
    #[graphql(complexity = "per_item(first, child_complexity)")]
    async fn partnerships(
        &self,
        ctx: &Context<'_>,
        region_code: Option<ID>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<PartnershipConnection> {
        let region = region_code.map(|c| region(&c)).transpose()?;
        let page = rpc(
            ctx,
            rpcs::ListPartnerships {
                region,
                first: page_size(first)?,
                after: after.map(|a| cursor(&a)).transpose()?,
            },
        )
        .await?;
        Ok(PartnershipConnection::from(page))
    }

    /// One partnership with its agreements; its yearly `report` beside.
    async fn partnership(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Partnership>> {
        let partnership_id = parse("partnership id", &id)?;
        let found = rpc(ctx, rpcs::GetPartnership { partnership_id }).await?;
        Ok(found.map(Partnership))
    }

    /// A partnership's figures for a year (China time): totals, months,
    /// progress against its agreement's targets, CSV. Null with the error
    /// when it cannot be read (the rest of the answer stays).
    async fn partnership_report(
        &self,
        ctx: &Context<'_>,
        partnership_id: ID,
        year: i32,
    ) -> Result<Option<PartnershipReport>> {
        let partnership_id = parse("partnership id", &partnership_id)?;
        impact::report(ctx, partnership_id, year).await.map(Some)
    }

    /// A region's year as sponsor and as beneficiary, each booking once.
    /// Costs 1,000 against the complexity limit (four in a request): each
    /// reads the year's bookings of the whole country twice. Null with the
    /// error when it cannot be read (the rest of the answer stays).
    #[graphql(complexity = "REGION_IMPACT_COST + child_complexity")]
    async fn region_impact(
        &self,
        ctx: &Context<'_>,
        region_code: ID,
        year: i32,
    ) -> Result<Option<RegionImpact>> {
        let region = region(&region_code)?;
        Ok(Some(RegionImpact(
            rpc(ctx, rpcs::GetRegionImpact { region, year }).await?,
        )))
    }

    /// Where a booking's money went — the host household, the platform,
    /// the welfare fund, the agency — net of refunds, and which
    /// partnerships it counted for. Its owner, its agency and admins. Null
    /// with the error when it cannot be read (the rest of the answer stays).
    async fn booking_impact(
        &self,
        ctx: &Context<'_>,
        booking_id: ID,
    ) -> Result<Option<ImpactTrace>> {
        let viewer = principal(ctx)?.clone();
        let booking_id: BookingId = parse("booking id", &booking_id)?;
        // Only those who may see the booking see where its money went.
        let booking = rpc(ctx, rpcs::GetBooking { booking_id, viewer }).await?;
        impact::trace(ctx, booking).await.map(Some)
    }

    /// The public welfare fund (公益基金): its balance and every entry, newest
    /// first. Readable without login; no personal data.
    async fn welfare_fund(&self) -> WelfareFund {
        WelfareFund
    }

    /// A room type's nights from `from` to `to` (exclusive). A homestay off
    /// sale shows its calendar to the admins of its region only (NOT_FOUND
    /// to anyone else, as for an unknown room type). Null with the error
    /// when it cannot be read (the rest of the answer stays).
    #[graphql(complexity = "per_span(Some(&from), Some(&to), 7, child_complexity)")]
    async fn room_calendar(
        &self,
        ctx: &Context<'_>,
        room_type_id: ID,
        from: Date,
        to: Date,
    ) -> Result<Option<Vec<Night>>> {
        let room_type_id: RoomTypeId = parse("room type id", &room_type_id)?;
        let nights = rpc(
            ctx,
            rpcs::GetRoomCalendar {
                room_type_id,
                from: from.0,
                to: to.0,
                viewer: auth::viewer(ctx),
            },
        )
        .await?;
        Ok(Some(nights.into_iter().map(Night).collect()))
    }
}

/// A traveler on a booking, with real name and document.
#[derive(InputObject)]
pub struct TravelerIn {
    /// Real name, as on the document.
    pub name: String,
    /// RESIDENT_ID, PASSPORT, HK_MACAO_PERMIT or TAIWAN_PERMIT.
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
    /// The sponsor region the trip is credited to (GB/T 2260 code): the
    /// booker's home region when left out; given, it may only say that more
    /// or less exactly (海淀区 or 北京市 for a home in 海淀区), else
    /// BAD_USER_INPUT. A booker without a home region (living outside
    /// mainland China) may name any region (a trip organised by a Beijing
    /// district's programme, say); left out, none.
    pub sponsor_region_code: Option<ID>,
    /// Notes for the host.
    pub notes: Option<String>,
}

/// What `bookingQuote` prices: a stay or seats, as in `CreateBookingInput`.
#[derive(InputObject)]
pub struct BookingQuoteInput {
    pub room_type_id: Option<ID>,
    pub check_in: Option<Date>,
    pub check_out: Option<Date>,
    /// Rooms per night (default 1).
    pub rooms: Option<i32>,
    pub departure_id: Option<ID>,
    /// How many travel (a seat each on a departure).
    pub travelers: i32,
}

/// The capacity a request asks for: a stay or seats, never both.
fn hold_item(
    room_type: Option<&ID>,
    (check_in, check_out, rooms): (Option<Date>, Option<Date>, Option<i32>),
    departure: Option<&ID>,
    travelers: u32,
) -> Result<HoldItem> {
    match (room_type, departure) {
        (Some(room_type), None) => {
            let (Some(check_in), Some(check_out)) = (check_in, check_out) else {
                return Err(bad_input("checkIn, checkOut: a stay needs both"));
            };
            // Below one, negative or not, inventory's refusal says what a
            // stay takes (as for the searches).
            let rooms = u32::try_from(rooms.unwrap_or(1)).unwrap_or(0);
            Ok(HoldItem::RoomNights {
                room_type_id: parse("room type id", room_type)?,
                check_in: check_in.0,
                check_out: check_out.0,
                rooms,
            })
        }
        (None, Some(departure)) => {
            // A departure's dates and seats are its own: stay fields would
            // be silently dropped.
            if check_in.is_some() || check_out.is_some() || rooms.is_some() {
                return Err(bad_input(
                    "checkIn, checkOut, rooms: a departure has its own dates and takes one \
                     seat per traveler; leave them out",
                ));
            }
            let departure_id: DepartureId = parse("departure id", departure)?;
            Ok(HoldItem::Seats {
                departure_id,
                seats: travelers,
            })
        }
        (Some(_), Some(_)) => Err(bad_input(
            "book either a room type (roomTypeId) or a departure (departureId), not both",
        )),
        (None, None) => Err(bad_input(
            "name what to book: a room type (roomTypeId) or a departure (departureId)",
        )),
    }
}

/// Refuses a booking request no hold could ever grant, by inventory's quote.
/// How many travelers a booking or a quote is for, 1 to
/// [`rpcs::MAX_TRAVELERS`].
fn traveler_count(n: usize) -> Result<u32> {
    if n == 0 || n > rpcs::MAX_TRAVELERS {
        return Err(bad_input(format!(
            "travelers: a booking has 1 to {} travelers",
            rpcs::MAX_TRAVELERS
        )));
    }
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// A request of the same shape (listing, dates, rooms, travelers) the quote
/// found admissible under the listing's current rules is not asked again:
/// that only changes with the rules (`inventory.catalogue_changed` voids
/// what was admitted) and the day (a check-in today is past tomorrow: kept
/// a minute at most). The hold applies the same rules anyway; this only
/// answers bad input at once.
async fn admissible(ctx: &Context<'_>, item: &HoldItem, travelers: u32) -> Result<()> {
    let shape = admission_shape(item, travelers)?;
    let request = rpcs::QuoteBooking {
        item: item.clone(),
        travelers,
    };
    // A second at most: this check must not hold a booking up.
    let quote = async {
        let quote = call_service_within(ctx, request, std::time::Duration::from_secs(1)).await?;
        // Off sale (or a draft) is not there, as `bookingQuote` tells
        // anyone who may book (travelers and agencies, never admins).
        match quote.refusal {
            Some(ErrorCode::NotPublished) => Err(AppError::not_found(match item {
                HoldItem::Seats { .. } => rpcs::NO_SUCH_DEPARTURE,
                HoldItem::RoomNights { .. } => rpcs::NO_SUCH_ROOM_TYPE,
            })),
            _ => Ok(()),
        }
    };
    let quoted = match ctx.data_opt::<crate::cache::Cache>() {
        Some(cache) => cache.admitted(cache.admission(&shape), quote).await,
        None => quote.await.map_err(Arc::new),
    };
    match quoted {
        Err(e) if matches!(e.code, ErrorCode::BadUserInput | ErrorCode::NotFound) => {
            Err(gql((*e).clone()))
        }
        // Inventory away or slow: the booking is taken; its hold decides.
        _ => Ok(()),
    }
}

/// What a quote's answer depends on, as the key requests share it under:
/// everything the request says. (Without the dates, a check-in in the past
/// shared its quote's error with every request for the room in flight
/// with it, each told its check-in was one it never sent.)
fn admission_shape(item: &HoldItem, travelers: u32) -> Result<String> {
    Ok(match item {
        HoldItem::RoomNights {
            room_type_id,
            check_in,
            check_out,
            rooms,
        } => {
            shared::stay::StayDates::parse(*check_in, *check_out).map_err(gql)?;
            format!("room:{room_type_id}:{check_in}:{check_out}:{rooms}:{travelers}")
        }
        HoldItem::Seats {
            departure_id,
            seats,
        } => format!("seats:{departure_id}:{seats}:{travelers}"),
    })
}

/// The booking agency's commission from its contract (0 for travelers).
async fn agency_commission(ctx: &Context<'_>, by: &shared::auth::Principal) -> Result<u32> {
    let Some(agency) = by.agency_id else {
        return Ok(0);
    };
    let found = identity(ctx)?.agency(agency).await.map_err(gql)?;
    found.map(|a| a.commission_bp).ok_or_else(|| {
        gql(AppError::new(
            ErrorCode::Forbidden,
            "your agency no longer exists",
        ))
    })
}

/// Mutations.
pub struct Mutation;

#[Object]
impl Mutation {
    /// Books a stay or seats; the same idempotency key with the same input
    /// returns the first booking. The booking starts PENDING and moves to
    /// AWAITING_PAYMENT once inventory holds the capacity, or REJECTED when
    /// it cannot. A stay inventory has just refused as sold out (the same
    /// nights, as many rooms or more; the same departure, as many seats or
    /// more) is refused at once with SOLD_OUT and nothing is booked, until
    /// capacity comes back (a couple of seconds at most). An unknown
    /// listing, or one off sale, is NOT_FOUND at once.
    async fn create_booking(
        &self,
        ctx: &Context<'_>,
        input: CreateBookingInput,
        idempotency_key: String,
    ) -> Result<Booking> {
        let by = principal(ctx)?.clone();
        // Who may book before what is booked: an admin's request for an
        // unknown listing was NOT_FOUND, for a known one FORBIDDEN.
        by.may_book().map_err(gql)?;
        let idempotency_key = scoped_key(&by, &idempotency_key)?;
        // The count first: what the rooms sleep says nothing useful of 51.
        let travelers = traveler_count(input.travelers.len())?;
        let item = hold_item(
            input.room_type_id.as_ref(),
            (input.check_in, input.check_out, input.rooms),
            input.departure_id.as_ref(),
            travelers,
        )?;
        let sponsor_region = input
            .sponsor_region_code
            .as_ref()
            .map(|c| region(c))
            .transpose()?;
        let admitted = admissible(ctx, &item, travelers).await;
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
            commission_bp: agency_commission(ctx, &by).await?,
            by,
        };
        // Refuse at once what no hold could ever grant (an unknown listing,
        // more travelers than the rooms sleep). Whether it can be held now
        // is the hold's answer, and with inventory away the booking is still
        // taken: its hold request waits.
        if let Err(refused) = admitted {
            // Unless it is a retry of a create that was taken: it keeps its
            // answer, whatever changed since (the listing taken off sale,
            // midnight passed its check-in).
            let replay = rpcs::ReplayCreateBooking { create: request };
            return match call_service_within(ctx, replay, std::time::Duration::from_secs(1)).await {
                Ok(Some(first)) => Ok(Booking(first)),
                Err(e) if e.code == ErrorCode::IdempotencyKeyReused => Err(gql(e)),
                Ok(None) | Err(_) => Err(refused),
            };
        }
        Ok(Booking(keyed_rpc(ctx, "idempotencyKey", request).await?))
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
        let viewer = principal(ctx)?.clone();
        let idempotency_key = scoped_key(&viewer, &idempotency_key)?;
        let booking_id: BookingId = parse("booking id", &booking_id)?;
        // Heard awaiting payment (the push the client pays on), or read.
        let heard = ctx
            .data_opt::<crate::cache::Cache>()
            .and_then(|c| c.payable(booking_id));
        let booking = match heard {
            Some(view) => (*view).clone(),
            // One who may not see it is not its booker: refused as payment
            // refuses a booking heard (one wording, whichever way). The
            // read's only FORBIDDEN is that (`get_for`); a refusal of
            // another kind added there would need its own arm here.
            None => call_service(
                ctx,
                rpcs::GetBooking {
                    booking_id,
                    viewer: viewer.clone(),
                },
            )
            .await
            .map_err(|e| match e.code {
                ErrorCode::Forbidden => {
                    shared::AppError::new(ErrorCode::Forbidden, rpcs::ONLY_THE_BOOKER_PAYS)
                }
                _ => e,
            })
            .map_err(gql)?,
        };
        // Payment decides who may pay (the booker): see docs/identity.md.
        let payment = keyed_rpc(
            ctx,
            "idempotencyKey",
            rpcs::PayBooking {
                idempotency_key,
                booking,
                payment_token,
                viewer,
            },
        )
        .await?;
        Ok(Payment(payment))
    }

    /// Cancels a booking; its rooms go back on sale. A paid (CONFIRMED)
    /// booking is refunded by its listing's policy as of now — the amount
    /// `cancellationQuote` shows — and `refundDue`/`refunded`/`history` follow
    /// the refund. From the day after its check-in or departure (China
    /// time) a paid booking is under way and no longer cancelled
    /// (CONFLICT): an admin refunds it instead. Retrying with the same key
    /// is safe; the key sent with or without `forHost` (or with another
    /// reason) than at first is IDEMPOTENCY_KEY_REUSED.
    ///
    /// `forHost`: an admin of the listing's region (or a platform admin)
    /// cancels it for its host, who cannot honour it (a flood, an
    /// illness): all that was paid goes back whatever the policy, and the
    /// reason is in its history and `reason`; up to its first day, as
    /// above.
    async fn cancel_booking(
        &self,
        ctx: &Context<'_>,
        booking_id: ID,
        idempotency_key: String,
        #[graphql(desc = "Why its host cannot honour it: one line, at most 200 characters.")]
        for_host: Option<String>,
    ) -> Result<Booking> {
        let viewer = principal(ctx)?.clone();
        if for_host.is_some() && !viewer.may_administer() {
            return Err(forbidden(rpcs::FOR_HOST_IS_ADMINS));
        }
        let idempotency_key = scoped_key(&viewer, &idempotency_key)?;
        let booking_id: BookingId = parse("booking id", &booking_id)?;
        // What payment has refunded, as the quote counts it: a refund an
        // admin made a moment ago that booking has not heard of yet is not
        // still paid (the answer and the history said the policy's share
        // of the whole price). Payment away or slow (a second at most: a
        // cancellation frees rooms): booking's own figure.
        let asked = rpcs::GetBookingsMoney {
            booking_ids: vec![booking_id],
            viewer: viewer.clone(),
        };
        let refunded =
            match call_service_within(ctx, asked, std::time::Duration::from_secs(1)).await {
                Ok(money) => money
                    .iter()
                    .find(|m| m.booking_id == booking_id)
                    .and_then(payments::captured_and_refunded)
                    .map(|(_, refunded)| refunded),
                Err(e) => {
                    tracing::warn!(error = %e.message, "cancelling without payment's figures");
                    None
                }
            };
        let cancelled = keyed_rpc(
            ctx,
            "idempotencyKey",
            rpcs::CancelBooking {
                idempotency_key,
                booking_id,
                viewer,
                for_host,
                refunded,
            },
        )
        .await;
        // Heard here at once: a payBooking on this gateway right after
        // must not pay on the view it heard while the booking awaited
        // payment (the cancellation's push comes a moment later); nor
        // after a cancel whose answer was lost (it may have committed).
        if let Some(cache) = ctx.data_opt::<crate::cache::Cache>() {
            match &cancelled {
                Ok(view) => cache.heard(view),
                Err(_) => cache.unsure(booking_id),
            }
        }
        Ok(Booking(cancelled?))
    }

    /// Gives an account a role (platform admins only): REGION_ADMIN needs
    /// `regionCode`, AGENCY needs `agencyId`. Its access tokens of the old
    /// role stop at once; its next token (refresh or log in) carries the
    /// new one. Pass `accountId` too — the person reads it from `me { id }`
    /// — so the role goes to them and not to whoever registered their email
    /// first (no mail proves an address): another account under that email
    /// is CONFLICT and keeps its role.
    async fn grant_role(
        &self,
        ctx: &Context<'_>,
        email: String,
        role: Role,
        region_code: Option<ID>,
        agency_id: Option<ID>,
        account_id: Option<ID>,
    ) -> Result<Account> {
        let by = platform_admin(ctx)?.account_id;
        let scope = region_code.map(|c| region(&c)).transpose()?;
        let agency = agency_id.map(|a| parse("agency id", &a)).transpose()?;
        let expected = account_id
            .map(|a| parse::<shared::ids::AccountId>("account id", &a))
            .transpose()?;
        let account = identity(ctx)?
            .grant_role(&email, expected, role.into(), scope, agency, by)
            .await
            .map_err(gql)?;
        Ok(Account(account))
    }

    /// Lists a homestay with its host and first room type (admins of the
    /// region, platform admins).
    async fn create_homestay(
        &self,
        ctx: &Context<'_>,
        input: HomestayInput,
        #[graphql(
            desc = "Your key for this create (1 to 200 characters): sent again with it, it answers what it first did instead of creating a second; with another input, IDEMPOTENCY_KEY_REUSED."
        )]
        idempotency_key: Option<String>,
    ) -> Result<catalogue::HomestayCreated> {
        catalogue::create_homestay(ctx, input, idempotency_key).await
    }

    /// Changes a homestay's names, address, grade, amenities, photos or
    /// refund rule; what is left out stays (admins of its region). Bookings
    /// already held keep the name and refund rule they were held under.
    /// Nothing to change (`input: {}`) is BAD_USER_INPUT.
    async fn update_homestay(
        &self,
        ctx: &Context<'_>,
        homestay_id: ID,
        input: catalogue::HomestayUpdate,
    ) -> Result<Homestay> {
        catalogue::update_homestay(ctx, homestay_id, input).await
    }

    /// Writes a route as a DRAFT (admins of its start region); add
    /// departures, then `publishRoute`.
    async fn create_route(
        &self,
        ctx: &Context<'_>,
        input: RouteInput,
        #[graphql(
            desc = "Your key for this create (1 to 200 characters): sent again with it, it answers what it first did instead of creating a second; with another input, IDEMPOTENCY_KEY_REUSED."
        )]
        idempotency_key: Option<String>,
    ) -> Result<RouteCreated> {
        routes::create_route(ctx, input, idempotency_key).await
    }

    /// Adds a departure with `seats` seats (admins of the route's region).
    /// Bookings close `cutoffDays` days before it leaves (China time).
    #[allow(clippy::too_many_arguments)] // the mutation's arguments
    async fn add_departure(
        &self,
        ctx: &Context<'_>,
        route_id: ID,
        starts_on: Date,
        seats: i32,
        #[graphql(desc = "Price per person in yuan; the route's price when omitted.")]
        price_per_person: Option<String>,
        #[graphql(default = 1)] cutoff_days: i32,
        #[graphql(
            desc = "Your key for this create (1 to 200 characters): sent again with it, it answers what it first did instead of creating a second; with another input, IDEMPOTENCY_KEY_REUSED."
        )]
        idempotency_key: Option<String>,
    ) -> Result<Departure> {
        routes::add_departure(
            ctx,
            route_id,
            starts_on,
            seats,
            price_per_person,
            cutoff_days,
            idempotency_key,
        )
        .await
    }

    /// Cancels a departure (admins of the route's region), up to its day:
    /// it takes no more bookings, and every booking on it is cancelled —
    /// those paid refunded in full, whatever the route's policy — with
    /// `reason` in their history. Cancelling it again changes nothing.
    async fn cancel_departure(
        &self,
        ctx: &Context<'_>,
        departure_id: ID,
        #[graphql(desc = "Why, for its travelers: one line, at most 200 characters.")]
        reason: String,
    ) -> Result<Departure> {
        let by = region_admin(ctx)?.clone();
        let departure = changing(
            ctx,
            rpcs::CancelDeparture {
                departure_id: parse("departure id", &departure_id)?,
                reason,
                by,
            },
        )
        .await?;
        Ok(Departure(departure))
    }

    /// Changes a departure that has not left (admins of the route's
    /// region): `seats` in all, never fewer than are held or sold
    /// (CONFLICT); its own price per person (or `routePrice: true`: the
    /// route's again); when bookings close. What is left out stays;
    /// bookings already held keep their price. Nothing to change (only the
    /// departure's id) is BAD_USER_INPUT.
    async fn update_departure(
        &self,
        ctx: &Context<'_>,
        departure_id: ID,
        seats: Option<i32>,
        #[graphql(desc = "Price per person in yuan for this departure.")] price_per_person: Option<
            String,
        >,
        #[graphql(
            default,
            desc = "true: no price of its own any more, the route's price again."
        )]
        route_price: bool,
        cutoff_days: Option<i32>,
    ) -> Result<Departure> {
        let by = region_admin(ctx)?.clone();
        let departure = changing(
            ctx,
            rpcs::UpdateDeparture {
                departure_id: parse("departure id", &departure_id)?,
                seats: seats.map(at_least_one),
                route_price,
                price: price_per_person
                    .map(|p| yuan("pricePerPerson", &p))
                    .transpose()?,
                cutoff_days: cutoff_days
                    .map(|n| non_negative("cutoffDays", n))
                    .transpose()?,
                by,
            },
        )
        .await?;
        Ok(Departure(departure))
    }

    /// Puts a route on sale, or takes it off (`published: false`); bookings
    /// already made stand (admins of the route's region).
    async fn publish_route(
        &self,
        ctx: &Context<'_>,
        route_id: ID,
        #[graphql(default = true)] published: bool,
    ) -> Result<Route> {
        routes::publish_route(ctx, route_id, published).await
    }

    /// Changes a route's titles, descriptions, itinerary, price or refund
    /// rule; what is left out stays (admins of its region). Bookings already
    /// held keep the price and refund rule they were held under. Nothing to
    /// change (`input: {}`) is BAD_USER_INPUT.
    async fn update_route(
        &self,
        ctx: &Context<'_>,
        route_id: ID,
        input: routes::RouteUpdate,
    ) -> Result<Route> {
        routes::update_route(ctx, route_id, input).await
    }

    /// Puts a homestay or a route on sale, or takes it off (`published:
    /// false`): off sale, it leaves search and a new `createBooking` of it
    /// is NOT_FOUND (one sent in the moment before a gateway hears of the
    /// change is REJECTED with `NOT_PUBLISHED`); bookings already made
    /// stand (admins of the listing's region).
    async fn publish_listing(
        &self,
        ctx: &Context<'_>,
        listing_id: ID,
        #[graphql(default = true)] published: bool,
    ) -> Result<ListingPublication> {
        catalogue::publish_listing(ctx, listing_id, published).await
    }

    /// Applies for the poverty-relief certification of a homestay or route
    /// on its host's behalf, stating how it benefits poor households
    /// (admins of the listing's region).
    async fn apply_for_certification(
        &self,
        ctx: &Context<'_>,
        listing_id: ID,
        statement: String,
        #[graphql(
            default,
            desc = "Links to the evidence (http or https, at most 10): the county office's documents, photos, lists of benefiting households."
        )]
        evidence: Vec<String>,
    ) -> Result<Certification> {
        certification::apply(ctx, listing_id, statement, evidence).await
    }

    /// Accepts an application into public notice (公示) for `noticeDays`
    /// days, 1 to 30 (admins of the listing's region).
    async fn accept_for_public_notice(
        &self,
        ctx: &Context<'_>,
        certification_id: ID,
        #[graphql(default = 7)] notice_days: i32,
    ) -> Result<Certification> {
        // Negative is as out of range as 0 or 31: the service says the range.
        let notice_days = u32::try_from(notice_days).unwrap_or(0);
        let step = rpcs::CertificationStep::AcceptForPublicNotice { notice_days };
        certification::advance(ctx, certification_id, step).await
    }

    /// Objects to a listing in public notice (any logged-in account); the
    /// objection is shown, its author is not.
    async fn object_to_certification(
        &self,
        ctx: &Context<'_>,
        certification_id: ID,
        text: String,
    ) -> Result<Certification> {
        let step = rpcs::CertificationStep::Object { text };
        certification::advance(ctx, certification_id, step).await
    }

    /// Certifies a listing once its public notice has ended, valid until
    /// `validUntil` (three years when omitted); with objections on record,
    /// `resolution` must say how they were settled (admins of its region).
    async fn certify_listing(
        &self,
        ctx: &Context<'_>,
        certification_id: ID,
        valid_until: Option<Date>,
        resolution: Option<String>,
    ) -> Result<Certification> {
        let step = rpcs::CertificationStep::Certify {
            valid_until: valid_until.map_or_else(certification::default_validity, |d| d.0),
            resolution,
        };
        certification::advance(ctx, certification_id, step).await
    }

    /// Refuses an application before certification (admins of its region).
    async fn reject_certification(
        &self,
        ctx: &Context<'_>,
        certification_id: ID,
        reason: String,
    ) -> Result<Certification> {
        let step = rpcs::CertificationStep::Reject { reason };
        certification::advance(ctx, certification_id, step).await
    }

    /// Withdraws a certification: the listing loses the badge at once, and
    /// bookings held from then on no longer count as certified spend (one
    /// held before keeps what it was held as, paid later or not; admins
    /// of its region).
    async fn revoke_certification(
        &self,
        ctx: &Context<'_>,
        certification_id: ID,
        reason: String,
    ) -> Result<Certification> {
        let step = rpcs::CertificationStep::Revoke { reason };
        certification::advance(ctx, certification_id, step).await
    }

    /// Sets the terms of every night in [from, to) (admins of the
    /// homestay's region): `rooms` rooms on sale at `price` yuan a night;
    /// `closed` nights are not bookable, and a stay beginning on these
    /// nights lasts at least `minStay` nights. A term left out stays as
    /// each night has it (raising the price keeps closed nights closed); a
    /// night not yet on sale needs a `price`, and gets every room, open, for
    /// stays of any length unless told otherwise. Lowering the rooms below
    /// what is held or sold on a night is a CONFLICT; giving no term at all
    /// is BAD_USER_INPUT (nothing would change). Answers how many nights
    /// were set.
    #[allow(clippy::too_many_arguments)]
    async fn set_room_calendar(
        &self,
        ctx: &Context<'_>,
        room_type_id: ID,
        from: Date,
        to: Date,
        #[graphql(
            desc = "Rooms on sale each night, at most the room type's `rooms`; left out: as set (a new night: all of them)."
        )]
        rooms: Option<i32>,
        #[graphql(desc = "Yuan a room a night; left out: as set (a new night needs one).")]
        price: Option<String>,
        #[graphql(desc = "Not bookable; left out: as set (a new night: open).")] closed: Option<
            bool,
        >,
        #[graphql(
            desc = "Shortest stay beginning on the night; left out: as set (a new night: 1)."
        )]
        min_stay: Option<i32>,
    ) -> Result<u32> {
        let args = catalogue::CalendarArgs {
            room_type_id,
            from,
            to,
            rooms,
            price,
            closed,
            min_stay,
        };
        catalogue::set_room_calendar(ctx, args).await
    }

    /// Registers a host before its first listing, so that several homestays
    /// and routes pay the same household or cooperative (admins of its region).
    async fn create_host(
        &self,
        ctx: &Context<'_>,
        name: String,
        region_code: ID,
        #[graphql(
            desc = "Your key for this create (1 to 200 characters): sent again with it, it answers what it first did instead of creating a second; with another input, IDEMPOTENCY_KEY_REUSED."
        )]
        idempotency_key: Option<String>,
    ) -> Result<Host> {
        catalogue::create_host(ctx, name, region_code, idempotency_key).await
    }

    /// Adds a room type to a homestay (admins of its region); a homestay
    /// has at most 30.
    async fn add_room_type(
        &self,
        ctx: &Context<'_>,
        homestay_id: ID,
        room_type: RoomTypeInput,
        #[graphql(
            desc = "Your key for this create (1 to 200 characters): sent again with it, it answers what it first did instead of creating a second; with another input, IDEMPOTENCY_KEY_REUSED."
        )]
        idempotency_key: Option<String>,
    ) -> Result<RoomType> {
        catalogue::add_room_type(ctx, homestay_id, room_type, idempotency_key).await
    }

    /// Changes a room type's names, beds, guests or room count; what is
    /// left out stays (admins of its homestay's region). Bookings already
    /// held stand; fewer rooms are refused while a night has more taken.
    /// Nothing to change (`input: {}`) is BAD_USER_INPUT.
    async fn update_room_type(
        &self,
        ctx: &Context<'_>,
        room_type_id: ID,
        input: catalogue::RoomTypeUpdate,
    ) -> Result<RoomType> {
        catalogue::update_room_type(ctx, room_type_id, input).await
    }

    /// Pairs a sponsor region with a beneficiary region (platform admins, or
    /// an admin of either region). The confirmed bookings it covers are
    /// credited to it before it answers; where they run to many thousands,
    /// the rest within moments after (docs/impact.md).
    async fn create_partnership(
        &self,
        ctx: &Context<'_>,
        input: PartnershipInput,
    ) -> Result<Partnership> {
        impact::create_partnership(ctx, input).await
    }

    /// Edits a partnership's status, start or notes (the admins of either side).
    async fn update_partnership(
        &self,
        ctx: &Context<'_>,
        input: PartnershipUpdate,
    ) -> Result<Partnership> {
        impact::update_partnership(ctx, input).await
    }

    /// Records an agreement with yearly targets (the partnership's admins).
    async fn record_agreement(
        &self,
        ctx: &Context<'_>,
        input: AgreementInput,
    ) -> Result<Agreement> {
        impact::record_agreement(ctx, input).await
    }

    /// Withdraws an agreement recorded by mistake, superseded or never
    /// signed (the partnership's admins): it stays on record among the
    /// pair's `withdrawnAgreements`, its targets count no more, and it no
    /// longer bounds the pair's term. To correct one, withdraw it and
    /// record it again as it should be. The same reason again answers the
    /// withdrawal recorded; another, CONFLICT.
    async fn withdraw_agreement(
        &self,
        ctx: &Context<'_>,
        agreement_id: ID,
        reason: String,
    ) -> Result<Agreement> {
        impact::withdraw_agreement(ctx, agreement_id, reason).await
    }

    /// Withdraws a partnership recorded by mistake — the wrong way round,
    /// a mistyped region — (the partnership's admins): it stays on record
    /// (`partnership(id:)`, status WITHDRAWN), what it was credited is
    /// taken back, it is listed no more, and neither the right pair nor
    /// itself is refused when recorded again (itself under its id). Its
    /// agreements in force must be withdrawn first. The same reason again
    /// answers the withdrawal recorded; another, CONFLICT.
    async fn withdraw_partnership(
        &self,
        ctx: &Context<'_>,
        partnership_id: ID,
        reason: String,
    ) -> Result<Partnership> {
        impact::withdraw_partnership(ctx, partnership_id, reason).await
    }

    /// Registers a travel agency with its home region and commission
    /// contract (platform admins).
    async fn create_agency(
        &self,
        ctx: &Context<'_>,
        name: String,
        home_region_code: ID,
        commission_basis_points: i32,
    ) -> Result<Agency> {
        platform_admin(ctx)?;
        let home = region(&home_region_code)?;
        let bp = u32::try_from(commission_basis_points)
            .map_err(|_| bad_input(crate::identity::COMMISSION_RANGE))?;
        Ok(identity(ctx)?
            .create_agency(&name, home, bp)
            .await
            .map_err(gql)?
            .into())
    }

    /// Renames an agency or changes its commission contract (platform
    /// admins); what is left out stays. A new rate is for bookings made
    /// from now on: each booking keeps the rate it was made at
    /// (`Booking.commissionBasisPoints`), and its refunds take back its own.
    async fn update_agency(
        &self,
        ctx: &Context<'_>,
        agency_id: ID,
        name: Option<String>,
        commission_basis_points: Option<i32>,
    ) -> Result<Agency> {
        platform_admin(ctx)?;
        let id = parse("agency id", &agency_id)?;
        let bp = commission_basis_points
            .map(|bp| u32::try_from(bp).map_err(|_| bad_input(crate::identity::COMMISSION_RANGE)))
            .transpose()?;
        Ok(identity(ctx)?
            .update_agency(id, name.as_deref(), bp)
            .await
            .map_err(gql)?
            .into())
    }

    /// Suspends an agency (platform admins), saying why: none of its
    /// accounts — staff and API clients — gets a token until it is
    /// reinstated, and those they hold stop at once (on other gateway
    /// replicas within 2 s). Its bookings stand: confirmed ones are
    /// honoured, those awaiting payment expire unpaid. Again: the first
    /// time and reason are kept.
    async fn suspend_agency(
        &self,
        ctx: &Context<'_>,
        agency_id: ID,
        reason: String,
    ) -> Result<Agency> {
        platform_admin(ctx)?;
        let id = parse("agency id", &agency_id)?;
        Ok(identity(ctx)?
            .suspend_agency(id, &reason)
            .await
            .map_err(gql)?
            .into())
    }

    /// Reinstates a suspended agency (platform admins): its accounts sign
    /// in again — API clients with their secrets, unless revoked.
    async fn reinstate_agency(&self, ctx: &Context<'_>, agency_id: ID) -> Result<Agency> {
        platform_admin(ctx)?;
        let id = parse("agency id", &agency_id)?;
        Ok(identity(ctx)?
            .reinstate_agency(id)
            .await
            .map_err(gql)?
            .into())
    }

    /// Creates API credentials for an agency's integration (platform admins).
    /// The secret is returned once.
    async fn create_api_client(
        &self,
        ctx: &Context<'_>,
        agency_id: ID,
        name: String,
        #[graphql(
            desc = "Your key for this create (1 to 200 characters): sent again with it (the answer was lost), it answers the same client with a new secret — the lost one no longer works; of copies in flight at once only the last answer's does — instead of creating a second, as long as the client has not signed in, is less than a day old and is not revoked; after that CONFLICT, naming the client; with another agency or name, IDEMPOTENCY_KEY_REUSED."
        )]
        idempotency_key: Option<String>,
    ) -> Result<ApiClientCredentials> {
        let admin = platform_admin(ctx)?;
        let by = admin.account_id;
        let key = scoped(admin, idempotency_key)?;
        let agency = parse("agency id", &agency_id)?;
        let (client_id, client_secret) = identity(ctx)?
            .create_api_client(agency, &name, Some(by), key.as_deref())
            .await
            .map_err(gql)?;
        Ok(ApiClientCredentials {
            client_id,
            client_secret,
        })
    }

    /// Revokes an API client (platform admins): it gets no more tokens, and
    /// its refresh and access tokens stop at once (on other gateway
    /// replicas within 2 s).
    async fn revoke_api_client(&self, ctx: &Context<'_>, client_id: String) -> Result<ApiClient> {
        platform_admin(ctx)?;
        let revoked = identity(ctx)?
            .revoke_api_client(&client_id)
            .await
            .map_err(gql)?;
        Ok(ApiClient(revoked))
    }

    /// Exchanges an agency's API client credentials for tokens.
    async fn api_client_token(
        &self,
        ctx: &Context<'_>,
        client_id: String,
        client_secret: String,
    ) -> Result<AuthPayload> {
        Ok(identity(ctx)?
            .client_token(&client_id, &client_secret)
            .await
            .map_err(gql)?
            .into())
    }

    /// Pays every host what it is owed for bookings captured before `upTo`
    /// (now when omitted) whose stay or departure is under way by then (from
    /// the day after its first day, China time: until then its booker may
    /// cancel it): balanced ledger entries, once per `reference` — the same
    /// reference again returns the first run (platform admins).
    async fn run_payouts(
        &self,
        ctx: &Context<'_>,
        reference: String,
        up_to: Option<types::Instant>,
    ) -> Result<payments::PayoutRun> {
        let by = platform_admin(ctx)?.clone();
        let run = keyed_rpc(
            ctx,
            "reference",
            rpcs::RunPayouts {
                reference,
                up_to: up_to.map(|at| at.0),
                by,
            },
        )
        .await?;
        Ok(run.into())
    }

    /// Refunds part or all of a booking's payment (platform admins): never
    /// more than is left (BAD_USER_INPUT), once per idempotency key. The
    /// reversal reaches the ledger, the welfare fund and the impact reports
    /// like any refund.
    async fn refund_payment(
        &self,
        ctx: &Context<'_>,
        booking_id: ID,
        #[graphql(desc = "Yuan, e.g. \"100.00\".")] amount: String,
        reason: String,
        idempotency_key: String,
    ) -> Result<payments::Refund> {
        payments::refund_payment(ctx, booking_id, amount, reason, idempotency_key).await
    }

    /// Creates a traveler account and logs it in. Bookings made with it
    /// count for the partnerships of `homeRegionCode` (unless a booking
    /// declares another sponsor region); without one (a traveler living
    /// outside mainland China), for none unless a booking declares one.
    async fn register(&self, ctx: &Context<'_>, input: RegisterInput) -> Result<AuthPayload> {
        // Blank is none, as a form's empty field sends it.
        let home = input
            .home_region_code
            .as_ref()
            .filter(|code| !code.trim().is_empty())
            .map(|code| region(code))
            .transpose()?;
        let tokens = identity(ctx)?
            .register(&input.email, input.password, &input.display_name, home)
            .await
            .map_err(gql)?;
        Ok(tokens.into())
    }

    /// Logs in with email and password.
    async fn login(
        &self,
        ctx: &Context<'_>,
        email: String,
        password: String,
    ) -> Result<AuthPayload> {
        Ok(identity(ctx)?
            .login(&email, password)
            .await
            .map_err(gql)?
            .into())
    }

    /// A new token pair for a refresh token; the old refresh token stops
    /// working: sent again within seconds of its exchange (10 by default;
    /// two tabs, or a retry of a call whose answer was lost), it gets a
    /// pair of its own; later, it has leaked and revokes every session of
    /// the account.
    async fn refresh_token(&self, ctx: &Context<'_>, token: String) -> Result<AuthPayload> {
        Ok(identity(ctx)?.refresh(&token).await.map_err(gql)?.into())
    }

    /// Ends the session a refresh token belongs to, whichever of its
    /// tokens it is (one already refreshed too): its refresh token stops
    /// working (its access token lives out its minutes). With `everywhere: true`, every session of the
    /// token's account ends, refresh and access tokens alike (a lost
    /// phone).
    async fn logout(
        &self,
        ctx: &Context<'_>,
        refresh_token: String,
        #[graphql(default = false)] everywhere: bool,
    ) -> Result<bool> {
        identity(ctx)?
            .logout(&refresh_token, everywhere)
            .await
            .map_err(gql)?;
        Ok(true)
    }

    /// Changes your password; every refresh and access token of the
    /// account is revoked and a new pair returned.
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        current_password: String,
        new_password: String,
    ) -> Result<AuthPayload> {
        let who = principal(ctx)?;
        let tokens = identity(ctx)?
            .change_password(who, current_password, new_password)
            .await
            .map_err(gql)?;
        Ok(tokens.into())
    }
}

/// A new traveler.
#[derive(InputObject)]
pub struct RegisterInput {
    /// Login email.
    pub email: String,
    /// 10 to 128 characters.
    pub password: String,
    /// Shown name.
    pub display_name: String,
    /// Home region (e.g. 110108 北京市海淀区), a division code of mainland
    /// China; left out (or null) by a traveler who lives elsewhere.
    pub home_region_code: Option<ID>,
}

impl From<DocumentType> for IdType {
    fn from(d: DocumentType) -> IdType {
        match d {
            DocumentType::ResidentId => IdType::ResidentId,
            DocumentType::Passport => IdType::Passport,
            DocumentType::HkMacaoPermit => IdType::HkMacaoPermit,
            DocumentType::TaiwanPermit => IdType::TaiwanPermit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::yuan;

    /// Requests share a quote (and its error) only when they ask the same:
    /// a check-in in the past is its own request's error alone.
    #[test]
    fn requests_share_a_quote_only_when_they_ask_the_same() {
        use shared::events::HoldItem;
        let day = |d: u32| chrono::NaiveDate::from_ymd_opt(2026, 12, d).expect("a day");
        let stay = |check_in: u32| HoldItem::RoomNights {
            room_type_id: shared::ids::RoomTypeId(uuid::Uuid::nil()),
            check_in: day(check_in),
            check_out: day(check_in + 2),
            rooms: 1,
        };
        let shape = |item: &HoldItem, travelers| {
            super::admission_shape(item, travelers).expect("dates in order")
        };
        assert_eq!(shape(&stay(10), 2), shape(&stay(10), 2));
        assert_ne!(shape(&stay(1), 2), shape(&stay(10), 2));
        assert_ne!(shape(&stay(10), 1), shape(&stay(10), 2));
        let seats = HoldItem::Seats {
            departure_id: shared::ids::DepartureId(uuid::Uuid::nil()),
            seats: 2,
        };
        assert_ne!(shape(&seats, 1), shape(&seats, 2));
    }

    #[test]
    fn an_amount_in_yuan_is_digits_and_at_most_two_after_a_point() {
        for good in ["380", "380.5", "380.00", "0.01"] {
            assert!(yuan("price", good).is_ok(), "{good}");
        }
        for bad in [" 1", "1 ", "1.", ".5", "+5", "1e2", "0.001", "１２", ""] {
            let refused = yuan("price", bad).expect_err(bad);
            assert!(refused.message.contains("not an amount"), "{bad}");
        }
    }
}

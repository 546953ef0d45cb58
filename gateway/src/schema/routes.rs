//! Routes (旅游线路) and departures: search and reads for travelers,
//! management for region admins.

use super::auth::{region_admin, scoped};
use super::catalogue::{PolicyTierInput, policy_tiers};
use super::types::{Date, Lang, Money, PolicyTier, in_lang, page_info, policy_tiers_view};
use super::{cached, changing, creating, non_negative, parse, region, yuan};
use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, Enum, ID, InputObject, Object, Result, SimpleObject};
use shared::rpcs::{self, RouteStatus as Status};

/// A route's sale state.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "shared::rpcs::RouteStatus")]
pub enum RouteStatus {
    /// Being written: not searchable, not bookable.
    Draft,
    /// On sale.
    Published,
    /// Off sale; bookings made stand.
    Unpublished,
}

/// One day of the itinerary.
pub struct ItineraryDay(rpcs::ItineraryDay);

#[Object]
impl ItineraryDay {
    async fn day(&self) -> u32 {
        self.0.day
    }
    /// What happens that day, in the language asked for (or
    /// `Accept-Language`; Chinese by default, and where no English was given).
    async fn title(&self, ctx: &Context<'_>, lang: Option<Lang>) -> &str {
        in_lang(ctx, lang, &self.0.title, &self.0.title_en)
    }
    /// The Chinese title.
    async fn title_zh(&self) -> &str {
        &self.0.title
    }
    /// The English title ("" when none was given).
    async fn title_en(&self) -> &str {
        &self.0.title_en
    }
    /// Regions visited that day.
    async fn region_codes(&self) -> Vec<ID> {
        self.0.regions.iter().map(|c| ID(c.to_string())).collect()
    }
}

/// A dated departure: book it with `createBooking(input: { departureId, … })`,
/// one seat per traveler.
pub struct Departure(pub rpcs::DepartureView);

#[Object]
impl Departure {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn route_id(&self) -> ID {
        ID(self.0.route_id.to_string())
    }
    /// The day the group leaves.
    async fn starts_on(&self) -> Date {
        Date(self.0.starts_on)
    }
    /// The day the group leaves (DESIGN.md's name; the same as `startsOn`).
    async fn date(&self) -> Date {
        Date(self.0.starts_on)
    }
    async fn seats(&self) -> u32 {
        self.0.seats
    }
    /// Seats that can still be booked: neither held nor sold, and none once
    /// the departure is cancelled.
    async fn seats_left(&self) -> u32 {
        self.0.seats_left
    }
    async fn price_per_person(&self) -> Money {
        self.0.price.into()
    }
    /// The last day (China time) bookings are taken.
    async fn last_booking_day(&self) -> Date {
        Date(self.0.last_booking_day)
    }
    /// When its operator cancelled it (`cancelDeparture`); null while it
    /// runs. A cancelled departure takes no bookings, and those made on it
    /// were cancelled and refunded in full.
    async fn cancelled_at(&self) -> Option<super::types::Instant> {
        self.0.cancelled_at.map(super::types::Instant)
    }
    /// Why it was cancelled, as its operator gave it.
    async fn cancel_reason(&self) -> Option<&str> {
        self.0.cancel_reason.as_deref()
    }
}

/// A route (旅游线路).
pub struct Route(pub rpcs::RouteView);

#[Object]
impl Route {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// Title in the language asked for (or `Accept-Language`; Chinese by default).
    async fn title(&self, ctx: &Context<'_>, lang: Option<Lang>) -> String {
        in_lang(ctx, lang, &self.0.title_zh, &self.0.title_en).to_owned()
    }
    async fn title_zh(&self) -> &str {
        &self.0.title_zh
    }
    async fn title_en(&self) -> &str {
        &self.0.title_en
    }
    async fn description(&self, ctx: &Context<'_>, lang: Option<Lang>) -> String {
        in_lang(ctx, lang, &self.0.description_zh, &self.0.description_en).to_owned()
    }
    /// Who is paid for it.
    async fn host_id(&self) -> ID {
        ID(self.0.host_id.to_string())
    }
    async fn host_name(&self) -> &str {
        &self.0.host_name
    }
    /// Where it is based (its host's region): payouts and impact count there.
    async fn region_code(&self) -> ID {
        ID(self.0.region_code.to_string())
    }
    async fn itinerary(&self) -> Vec<ItineraryDay> {
        self.0.itinerary.iter().cloned().map(ItineraryDay).collect()
    }
    /// Price per person (a departure may differ).
    async fn price_per_person(&self) -> Money {
        self.0.price.into()
    }
    /// Refund tiers when a paid booking is cancelled.
    async fn cancellation_policy(&self) -> Vec<PolicyTier> {
        policy_tiers_view(&self.0.cancellation_policy)
    }
    async fn status(&self) -> RouteStatus {
        self.0.status.into()
    }
    /// Carries a valid poverty-relief certification (扶贫产品认定) today.
    async fn certified(&self) -> bool {
        shared::policy::certified_now(self.0.certified_until)
    }
    /// The certification's last valid day.
    async fn certified_until(&self) -> Option<Date> {
        self.0.certified_until.map(Date)
    }
    /// Departures leaving in [from, to]. Without dates: those this route
    /// was found with by `searchRoutes`, or the coming year's for `route(id)`
    /// and `regionListings`. With dates, a call of its own: null with its
    /// error when it fails, the route kept.
    #[graphql(complexity = "super::per_span(from.as_ref(), to.as_ref(), 30, child_complexity)")]
    async fn departures(
        &self,
        ctx: &Context<'_>,
        from: Option<Date>,
        to: Option<Date>,
    ) -> Result<Option<Vec<Departure>>> {
        if from.is_none() && to.is_none() {
            return Ok(Some(
                self.0.departures.iter().cloned().map(Departure).collect(),
            ));
        }
        let key = (self.0.id, from.map(|d| d.0), to.map(|d| d.0));
        let found = match ctx.data_opt::<DataLoader<super::loaders::DepartureLoader>>() {
            // Every route of the page in one call per window.
            Some(loader) => loader
                .load_one(key)
                .await
                .and_then(|found| found.transpose())
                .map_err(|e| crate::error::gql((*e).clone()))?
                .unwrap_or_default(),
            None => {
                let (route_id, from, to) = key;
                cached(ctx, rpcs::GetRoute { route_id, from, to })
                    .await?
                    .map(|r| r.departures)
                    .unwrap_or_default()
            }
        };
        Ok(Some(found.into_iter().map(Departure).collect()))
    }
}

/// A route in a list.
#[derive(SimpleObject)]
pub struct RouteEdge {
    pub cursor: String,
    pub node: Route,
}

/// Routes, by earliest departure on sale (see `searchRoutes`).
#[derive(SimpleObject)]
pub struct RouteConnection {
    pub edges: Vec<RouteEdge>,
    pub page_info: async_graphql::connection::PageInfo,
}

/// What `searchRoutes` filters by.
pub struct RouteSearch {
    pub region_code: Option<ID>,
    pub from: Option<Date>,
    pub to: Option<Date>,
    pub travelers: i32,
    pub max_price: Option<String>,
    pub certified_only: bool,
    pub text: Option<String>,
    pub first: i32,
    pub after: Option<String>,
}

/// `searchRoutes`.
pub async fn search(ctx: &Context<'_>, s: RouteSearch) -> Result<RouteConnection> {
    let from = s
        .from
        .map_or_else(|| shared::policy::china_today(chrono::Utc::now()), |d| d.0);
    // Left out: a year after `from`, as inventory reads departures.
    let to = s.to.map_or(
        from + chrono::Duration::days(rpcs::ROUTE_WINDOW_DAYS - 1),
        |d| d.0,
    );
    let max_price = s.max_price.map(|p| yuan("maxPrice", &p)).transpose()?;
    if max_price.is_some_and(|p| p.get() < 0) {
        return Err(crate::error::bad_input("maxPrice: a price is not negative"));
    }
    let page = cached(
        ctx,
        rpcs::SearchRoutes {
            region: s.region_code.map(|c| region(&c)).transpose()?,
            from,
            to,
            // Below one, negative or not: inventory's refusal says what a
            // search takes.
            travelers: u32::try_from(s.travelers).unwrap_or(0),
            max_price,
            certified_only: s.certified_only,
            text: s.text,
            first: super::page_size(s.first)?,
            after: s.after,
        },
    )
    .await?;
    let edges: Vec<RouteEdge> = page
        .routes
        .into_iter()
        .map(|(route, cursor)| RouteEdge {
            cursor,
            node: Route(route),
        })
        .collect();
    Ok(RouteConnection {
        page_info: page_info(edges.iter().map(|e| &e.cursor), page.has_next_page),
        edges,
    })
}

/// `route(id)`: drafts only for those who may manage them.
pub async fn route(ctx: &Context<'_>, id: ID) -> Result<Option<Route>> {
    let found = cached(
        ctx,
        rpcs::GetRoute {
            route_id: parse("route id", &id)?,
            from: None,
            to: None,
        },
    )
    .await?;
    let Some(route) = found else { return Ok(None) };
    // Drafts and routes taken off sale are their region's admins' alone.
    let on_sale = route.status == Status::Published;
    Ok((on_sale || super::auth::manages(ctx, route.region_code)).then_some(Route(route)))
}

/// One day of a new route's itinerary.
#[derive(InputObject)]
pub struct ItineraryDayInput {
    /// 1, 2, 3… in order.
    pub day: i32,
    pub title: String,
    /// The same in English (optional: English readers see the Chinese).
    #[graphql(default)]
    pub title_en: String,
    /// Regions visited that day.
    #[graphql(default)]
    pub region_codes: Vec<ID>,
}

/// A new route, created as a DRAFT.
#[derive(InputObject)]
pub struct RouteInput {
    /// A new cooperative, village collective or household paid for it…
    pub host_name: Option<String>,
    /// …or an existing host of the same region.
    pub host_id: Option<ID>,
    /// Where it is based: its host's county or banner (in the admin's region).
    pub region_code: ID,
    pub title_zh: String,
    /// The same in English (optional: English readers see the Chinese).
    #[graphql(default)]
    pub title_en: String,
    #[graphql(default)]
    pub description_zh: String,
    #[graphql(default)]
    pub description_en: String,
    pub itinerary: Vec<ItineraryDayInput>,
    /// Price per person in yuan, e.g. "2980.00".
    pub price_per_person: String,
    /// Refund tiers; none: the standard policy (100 % from 7 days, 50 % from 3).
    pub cancellation_policy: Option<Vec<PolicyTierInput>>,
}

/// What `createRoute` made.
#[derive(SimpleObject)]
pub struct RouteCreated {
    pub route_id: ID,
    pub host_id: ID,
}

/// `createRoute`.
pub async fn create_route(
    ctx: &Context<'_>,
    input: RouteInput,
    idempotency_key: Option<String>,
) -> Result<RouteCreated> {
    let by = region_admin(ctx)?.clone();
    let itinerary = itinerary_rpc(input.itinerary)?;
    let created = creating(
        ctx,
        ("route", idempotency_key.is_some()),
        rpcs::CreateRoute {
            idempotency_key: scoped(&by, idempotency_key)?,
            host_name: input.host_name.unwrap_or_default(),
            host_id: input.host_id.map(|h| parse("host id", &h)).transpose()?,
            region_code: region(&input.region_code)?,
            title_zh: input.title_zh,
            title_en: input.title_en,
            description_zh: input.description_zh,
            description_en: input.description_en,
            itinerary,
            price: yuan("pricePerPerson", &input.price_per_person)?,
            cancellation_policy: policy_tiers(input.cancellation_policy)?,
            by,
        },
    )
    .await?;
    Ok(RouteCreated {
        route_id: ID(created.route_id.to_string()),
        host_id: ID(created.host_id.to_string()),
    })
}

/// The days of an itinerary, as inventory takes them.
fn itinerary_rpc(days: Vec<ItineraryDayInput>) -> Result<Vec<rpcs::ItineraryDay>> {
    days.into_iter()
        .map(|d| {
            Ok(rpcs::ItineraryDay {
                day: non_negative("itinerary.day", d.day)?,
                title: d.title,
                title_en: d.title_en,
                regions: d
                    .region_codes
                    .iter()
                    .map(|c| region(c))
                    .collect::<Result<_>>()?,
            })
        })
        .collect()
}

/// What to change about a route; what is left out stays as it is.
#[derive(InputObject)]
pub struct RouteUpdate {
    pub title_zh: Option<String>,
    pub title_en: Option<String>,
    pub description_zh: Option<String>,
    pub description_en: Option<String>,
    /// All the days (where it goes is searched by region).
    pub itinerary: Option<Vec<ItineraryDayInput>>,
    /// Price per person in yuan, for departures without a price of their
    /// own; bookings already held keep theirs.
    pub price_per_person: Option<String>,
    /// For bookings held from now on; bookings already held keep the rule
    /// they were held under.
    pub cancellation_policy: Option<Vec<PolicyTierInput>>,
}

/// `updateRoute`.
pub async fn update_route(ctx: &Context<'_>, route_id: ID, input: RouteUpdate) -> Result<Route> {
    let by = region_admin(ctx)?.clone();
    let route = changing(
        ctx,
        rpcs::UpdateRoute {
            route_id: parse("route id", &route_id)?,
            title_zh: input.title_zh,
            title_en: input.title_en,
            description_zh: input.description_zh,
            description_en: input.description_en,
            itinerary: input.itinerary.map(itinerary_rpc).transpose()?,
            price: input
                .price_per_person
                .map(|p| yuan("pricePerPerson", &p))
                .transpose()?,
            cancellation_policy: policy_tiers(input.cancellation_policy)?,
            by,
        },
    )
    .await?;
    Ok(Route(route))
}

/// `addDeparture`.
pub async fn add_departure(
    ctx: &Context<'_>,
    route_id: ID,
    starts_on: Date,
    seats: i32,
    price_per_person: Option<String>,
    cutoff_days: i32,
    idempotency_key: Option<String>,
) -> Result<Departure> {
    let by = region_admin(ctx)?.clone();
    let departure = creating(
        ctx,
        ("departure", idempotency_key.is_some()),
        rpcs::AddDeparture {
            idempotency_key: scoped(&by, idempotency_key)?,
            route_id: parse("route id", &route_id)?,
            starts_on: starts_on.0,
            seats: super::at_least_one(seats),
            price: price_per_person
                .map(|p| yuan("pricePerPerson", &p))
                .transpose()?,
            cutoff_days: non_negative("cutoffDays", cutoff_days)?,
            by,
        },
    )
    .await?;
    Ok(Departure(departure))
}

/// `publishRoute`.
pub async fn publish_route(ctx: &Context<'_>, route_id: ID, published: bool) -> Result<Route> {
    let by = region_admin(ctx)?.clone();
    let route = changing(
        ctx,
        rpcs::SetRouteStatus {
            route_id: parse("route id", &route_id)?,
            status: if published {
                Status::Published
            } else {
                Status::Unpublished
            },
            by,
        },
    )
    .await?;
    Ok(Route(route))
}

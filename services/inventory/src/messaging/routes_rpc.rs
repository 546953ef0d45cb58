//! RPC handlers for routes (旅游线路) and their departures.

use super::{Inventory, administers};
use crate::domain::check_text;
use crate::storage::{self, routes};
use chrono::{Duration, NaiveDate, Utc};
use sea_orm::TransactionTrait;
use shared::AppError;
use shared::db::is_unique_violation;
use shared::envelope::Envelope;
use shared::ids::{DepartureId, RouteId};
use shared::keyed::CreateKey;
use shared::outbox::enqueue;
use shared::policy::china_today;
use shared::rpcs::{
    AddDeparture, CreateRoute, DepartureView, GetRoute, ItineraryDay, RouteCreated, RoutePage,
    RouteStatus, RouteView, SearchRoutes, SetRouteStatus,
};

/// Longest itinerary accepted.
const MAX_DAYS: usize = 60;
/// What a change to a route that is not there says (and, to all but its
/// region's admins, to one not on sale).
const NO_ROUTE: &str = "no such route";
/// The same for a departure.
const NO_DEPARTURE: &str = "no such departure";
/// Most regions one itinerary day names (a day on the train names none).
const MAX_DAY_REGIONS: usize = 10;
/// Longest title, in characters.
const MAX_TITLE: usize = 200;
/// Longest description, in characters.
const MAX_DESCRIPTION: usize = 10_000;
/// Most seats on one departure.
const MAX_SEATS: u32 = 1_000;
use shared::policy::MAX_DAYS_AHEAD;
/// Widest window of departure days read or searched at once.
pub(crate) const MAX_WINDOW_DAYS: i64 = shared::rpcs::ROUTE_WINDOW_DAYS;

fn window(from: NaiveDate, to: NaiveDate) -> Result<(), AppError> {
    let days = (to - from).num_days();
    if !(0..MAX_WINDOW_DAYS).contains(&days) {
        return Err(AppError::bad_input(format!(
            "the departure window must run forwards and span at most {MAX_WINDOW_DAYS} days"
        )));
    }
    Ok(())
}

/// A route's days: 1 to [`MAX_DAYS`], numbered 1, 2, 3… in order, each
/// with a title.
fn check_itinerary(itinerary: &[ItineraryDay]) -> Result<(), AppError> {
    if itinerary.is_empty() || itinerary.len() > MAX_DAYS {
        return Err(AppError::bad_input(format!(
            "itinerary: a route has 1 to {MAX_DAYS} days"
        )));
    }
    for (i, day) in itinerary.iter().enumerate() {
        if day.day as usize != i + 1 {
            return Err(AppError::bad_input(format!(
                "itinerary: days are numbered 1, 2, 3… in order; entry {} says day {}",
                i + 1,
                day.day
            )));
        }
        shared::text::check_line(
            &format!("itinerary day {}: title", day.day),
            &day.title,
            MAX_TITLE,
            true,
        )?;
        shared::text::check_line(
            &format!("itinerary day {}: titleEn", day.day),
            &day.title_en,
            MAX_TITLE,
            false,
        )?;
        if day.regions.len() > MAX_DAY_REGIONS {
            return Err(AppError::bad_input(format!(
                "itinerary day {}: at most {MAX_DAY_REGIONS} regions a day",
                day.day
            )));
        }
        if let Some(twice) = day
            .regions
            .iter()
            .enumerate()
            .find_map(|(i, r)| day.regions[..i].contains(r).then_some(r))
        {
            return Err(AppError::bad_input(format!(
                "itinerary day {}: region {twice} is listed twice",
                day.day
            )));
        }
    }
    Ok(())
}

/// Every region an itinerary visits, and the route's own, is known.
async fn regions_exist<C: sea_orm::ConnectionTrait>(
    conn: &C,
    itinerary: &[ItineraryDay],
    home: shared::region::RegionCode,
) -> Result<(), AppError> {
    let codes: std::collections::BTreeSet<_> = itinerary
        .iter()
        .flat_map(|d| d.regions.iter())
        .chain([&home])
        .collect();
    for code in codes {
        if !storage::region_exists(conn, *code).await? {
            return Err(AppError::bad_input(format!("unknown region {code}")));
        }
    }
    Ok(())
}

/// Whether `by` may change `route` or its departures (see
/// [`super::administers_listing`]).
fn may_change(
    by: &shared::auth::Principal,
    route: &RouteView,
    missing: &str,
) -> Result<(), AppError> {
    let on_sale = route.status == RouteStatus::Published;
    super::administers_listing(by, route.region_code, on_sale, missing)
}

impl Inventory {
    /// Creates a route as a DRAFT.
    pub async fn create_route(&self, req: CreateRoute) -> Result<RouteCreated, AppError> {
        let key = CreateKey::of(&req, req.idempotency_key.as_deref())?;
        if let Some(first) = key.replay(&self.db).await? {
            return Ok(first);
        }
        shared::text::check_line("titleZh", &req.title_zh, MAX_TITLE, true)?;
        shared::text::check_line("titleEn", &req.title_en, MAX_TITLE, false)?;
        check_text("descriptionZh", &req.description_zh, MAX_DESCRIPTION, false)?;
        check_text("descriptionEn", &req.description_en, MAX_DESCRIPTION, false)?;
        check_itinerary(&req.itinerary)?;
        shared::money::check_price("pricePerPerson", req.price)?;
        let policy = super::policy(req.cancellation_policy)?;
        super::county("regionCode", req.region_code)?;
        administers(&req.by, req.region_code)?;
        let txn = self.db.begin().await?;
        regions_exist(&txn, &req.itinerary, req.region_code).await?;
        let host = super::host_of(&txn, req.host_id, &req.host_name, req.region_code).await?;
        let created = RouteCreated {
            route_id: RouteId::new(),
            host_id: host.0,
        };
        routes::insert_route(
            &txn,
            routes::NewRoute {
                id: created.route_id,
                host,
                region: req.region_code,
                texts: [
                    req.title_zh.trim(),
                    req.title_en.trim(),
                    req.description_zh.trim(),
                    req.description_en.trim(),
                ],
                itinerary: &req.itinerary,
                price: req.price,
                policy: policy.as_ref(),
            },
        )
        .await?;
        key.commit(txn, &self.db, created).await
    }

    /// Changes a route's texts, itinerary, price or refund rule (admins of
    /// its region); what is left out stays. The row is locked while it is
    /// read and written. Bookings already held keep their price and rule;
    /// a new price applies to departures without a price of their own.
    pub async fn update_route(
        &self,
        req: shared::rpcs::UpdateRoute,
    ) -> Result<RouteView, AppError> {
        if req.changes_nothing() {
            return Err(super::nothing_to_change(
                "titleZh, titleEn, descriptionZh, descriptionEn, itinerary, pricePerPerson or \
                 cancellationPolicy",
            ));
        }
        // Titles are one line, as when the route was written (the English
        // one may be emptied: English readers then see the Chinese).
        for (field, title, required) in [
            ("titleZh", &req.title_zh, true),
            ("titleEn", &req.title_en, false),
        ] {
            if let Some(title) = title {
                shared::text::check_line(field, title.trim(), MAX_TITLE, required)?;
            }
        }
        for (field, text) in [
            ("descriptionZh", &req.description_zh),
            ("descriptionEn", &req.description_en),
        ] {
            if let Some(text) = text {
                check_text(field, text.trim(), MAX_DESCRIPTION, false)?;
            }
        }
        if let Some(itinerary) = &req.itinerary {
            check_itinerary(itinerary)?;
        }
        if let Some(price) = req.price {
            shared::money::check_price("pricePerPerson", price)?;
        }
        let policy = super::policy(req.cancellation_policy)?;
        let txn = self.db.begin().await?;
        let Some(mut route) = routes::route_for_update(&txn, req.route_id).await? else {
            return Err(AppError::not_found(NO_ROUTE));
        };
        may_change(&req.by, &route, NO_ROUTE)?;
        for (field, text) in [
            (&mut route.title_zh, req.title_zh),
            (&mut route.title_en, req.title_en),
            (&mut route.description_zh, req.description_zh),
            (&mut route.description_en, req.description_en),
        ] {
            if let Some(text) = text {
                text.trim().clone_into(field);
            }
        }
        let moved = req.itinerary.is_some();
        if let Some(itinerary) = req.itinerary {
            regions_exist(&txn, &itinerary, route.region_code).await?;
            route.itinerary = itinerary;
        }
        if let Some(price) = req.price {
            route.price = price;
        }
        routes::update_route(&txn, &route, policy.as_ref(), moved).await?;
        // Read before the commit: once it is stored, nothing may fail.
        let today = china_today(Utc::now());
        route.departures = routes::departures(
            &txn,
            route.id,
            today,
            today + Duration::days(MAX_WINDOW_DAYS - 1),
        )
        .await?;
        shared::db::commit_in_time(txn).await?;
        if let Some(policy) = policy {
            route.cancellation_policy = policy;
        }
        Ok(route)
    }

    /// Adds a departure with seats to a route.
    pub async fn add_departure(&self, req: AddDeparture) -> Result<DepartureView, AppError> {
        let key = CreateKey::of(&req, req.idempotency_key.as_deref())?;
        if let Some(first) = key.replay(&self.db).await? {
            return Ok(first);
        }
        if req.seats == 0 || req.seats > MAX_SEATS {
            return Err(AppError::bad_input(format!(
                "seats: 1 to {MAX_SEATS} on one departure"
            )));
        }
        if let Some(price) = req.price {
            shared::money::check_price("pricePerPerson", price)?;
        }
        if req.cutoff_days > 365 {
            return Err(AppError::bad_input("cutoffDays: at most 365"));
        }
        let today = china_today(Utc::now());
        if req.starts_on <= today {
            return Err(AppError::bad_input(format!(
                "startsOn: a departure must leave after today ({today})"
            )));
        }
        if req.starts_on > today + Duration::days(MAX_DAYS_AHEAD) {
            return Err(AppError::bad_input(format!(
                "startsOn: a departure is put on sale at most {MAX_DAYS_AHEAD} days ahead"
            )));
        }
        let last_booking_day = req.starts_on - Duration::days(i64::from(req.cutoff_days));
        if last_booking_day < today {
            return Err(AppError::bad_input(format!(
                "cutoffDays: bookings would have closed on {last_booking_day}, before today \
                 ({today}); a departure on {} takes at most {}",
                req.starts_on,
                shared::text::plural(
                    u32::try_from((req.starts_on - today).num_days()).unwrap_or(0),
                    "day",
                    "days"
                )
            )));
        }
        let txn = self.db.begin().await?;
        let Some(route) = routes::route(&txn, req.route_id).await? else {
            return Err(AppError::not_found(NO_ROUTE));
        };
        may_change(&req.by, &route, NO_ROUTE)?;
        let departure = DepartureView {
            id: DepartureId::new(),
            route_id: route.id,
            starts_on: req.starts_on,
            seats: req.seats,
            seats_left: req.seats,
            price: req.price.unwrap_or(route.price),
            last_booking_day,
            cancelled_at: None,
            cancel_reason: None,
        };
        match routes::insert_departure(&txn, &departure, req.price).await {
            Err(e) if is_unique_violation(&e) => {
                drop(txn);
                // A request with the same key, made meanwhile, took the day.
                if let Some(first) = key.replay(&self.db).await? {
                    return Ok(first);
                }
                shared::db::refuse_if_made_already(&self.db).await?;
                return Err(AppError::conflict(format!(
                    "the route already has a departure on {}",
                    req.starts_on
                )));
            }
            other => other?,
        }
        key.commit(txn, &self.db, departure).await
    }

    /// Changes a departure that has not left: seats (never fewer than are
    /// taken: CONFLICT), its own price, when bookings close.
    pub async fn update_departure(
        &self,
        req: shared::rpcs::UpdateDeparture,
    ) -> Result<DepartureView, AppError> {
        if req.changes_nothing() {
            return Err(super::nothing_to_change(
                "seats, pricePerPerson, routePrice: true (the route's price again) or cutoffDays",
            ));
        }
        if let Some(seats) = req.seats
            && (seats == 0 || seats > MAX_SEATS)
        {
            return Err(AppError::bad_input(format!(
                "seats: 1 to {MAX_SEATS} on one departure"
            )));
        }
        if let Some(price) = req.price {
            shared::money::check_price("pricePerPerson", price)?;
        }
        if req.cutoff_days.is_some_and(|d| d > 365) {
            return Err(AppError::bad_input("cutoffDays: at most 365"));
        }
        let txn = self.db.begin().await?;
        let Some((route, before)) = routes::departure(&txn, req.departure_id).await? else {
            return Err(AppError::not_found(NO_DEPARTURE));
        };
        may_change(&req.by, &route, NO_DEPARTURE)?;
        let cancelled = || {
            AppError::conflict(format!(
                "the departure of {} was cancelled; it cannot change",
                before.starts_on
            ))
        };
        if before.cancelled_at.is_some() {
            return Err(cancelled());
        }
        let today = china_today(Utc::now());
        // On its day it may still take bookings (cut-off 0), but no longer
        // changes: its travelers are on their way.
        if before.starts_on <= today {
            let gone = if before.starts_on == today {
                "leaves today"
            } else {
                "has left"
            };
            // The departure's state, not the request's fault (as a
            // cancelled one's).
            return Err(AppError::conflict(format!(
                "the departure of {} {gone}; it cannot change",
                before.starts_on
            )));
        }
        let last_booking_day = req
            .cutoff_days
            .map(|d| before.starts_on - Duration::days(i64::from(d)));
        if let Some(day) = last_booking_day
            && day < today
        {
            return Err(AppError::bad_input(format!(
                "cutoffDays: bookings would have closed on {day}, before today ({today})"
            )));
        }
        let price = match (req.price, req.route_price) {
            (Some(_), true) => {
                return Err(AppError::bad_input(
                    "pricePerPerson: a price of its own, or the route's, not both",
                ));
            }
            (Some(p), false) => routes::PriceChange::Own(p),
            (None, true) => routes::PriceChange::Route,
            (None, false) => routes::PriceChange::Keep,
        };
        let changed =
            match routes::update_departure(&txn, before.id, req.seats, price, last_booking_day)
                .await
            {
                Ok(changed) => changed,
                Err(e) if shared::db::is_check_violation(&e) => {
                    drop(txn);
                    let asked = req.seats.unwrap_or(before.seats);
                    return Err(self.fewer_seats_than_taken(req.departure_id, asked).await);
                }
                Err(e) => return Err(e.into()),
            };
        // Cancelled since it was read: it keeps what it had then.
        if !changed {
            return Err(cancelled());
        }
        let Some((_, after)) = routes::departure(&txn, req.departure_id).await? else {
            return Err(AppError::not_found(NO_DEPARTURE));
        };
        shared::db::commit_in_time(txn).await?;
        Ok(after)
    }

    /// The refusal of fewer seats than are taken, with the count taken as
    /// it is now (read afresh: the one read before the update may be older
    /// than the bookings that refused it — a count below the seats asked).
    /// Seats given back since (a release) may leave fewer taken than asked
    /// again: then it says the count moved.
    async fn fewer_seats_than_taken(&self, id: DepartureId, asked: u32) -> AppError {
        let taken = match routes::departure(&self.db, id).await {
            Ok(Some((_, now))) => now.seats.saturating_sub(now.seats_left),
            found => {
                if let Err(e) = found {
                    tracing::warn!(error = %e, "the seats taken could not be read again");
                }
                return AppError::conflict("seats: fewer than are held or sold");
            }
        };
        let seats = shared::text::plural(taken, "seat", "seats");
        AppError::conflict(if taken > asked {
            format!("seats: {seats} held or sold now; a departure cannot have fewer")
        } else {
            format!(
                "seats: bookings took more than {asked} as the change was made ({seats} held \
                 or sold now, as bookings come and go): try again"
            )
        })
    }

    /// Cancels a departure that has not left (on its day it still may be):
    /// it takes no more holds, and the bookings holding seats on it are
    /// announced in the same transaction, for booking to cancel and refund.
    /// A departure already cancelled is answered as it is.
    pub async fn cancel_departure(
        &self,
        req: shared::rpcs::CancelDeparture,
    ) -> Result<DepartureView, AppError> {
        let reason = req.reason.trim();
        shared::text::check_line("reason", reason, MAX_TITLE, true)?;
        let txn = self.db.begin().await?;
        let Some((route, before)) = routes::departure(&txn, req.departure_id).await? else {
            return Err(AppError::not_found(NO_DEPARTURE));
        };
        may_change(&req.by, &route, NO_DEPARTURE)?;
        if before.cancelled_at.is_some() {
            return Ok(before);
        }
        let today = china_today(Utc::now());
        if before.starts_on < today {
            return Err(AppError::conflict(format!(
                "the departure of {} has left; it cannot be cancelled",
                before.starts_on
            )));
        }
        // The holds before the departure, in the order the other paths
        // take them (routes::lock_holds_on). Taking seats waits on the
        // update's lock and then finds the departure cancelled; every hold
        // committed before is read below.
        routes::lock_holds_on(&txn, before.id).await?;
        if routes::cancel_departure(&txn, before.id, reason, Utc::now()).await? {
            let cancelled = shared::events::DepartureCancelled {
                departure_id: before.id,
                starts_on: before.starts_on,
                reason: reason.to_owned(),
                bookings: routes::announce_bookings_on(&txn, before.id).await?,
            };
            let count = cancelled.bookings.len();
            enqueue(
                &txn,
                &[Envelope::new(crate::SERVICE, before.id.0, &cancelled)],
            )
            .await?;
            tracing::info!(departure = %before.id, bookings = count, "departure cancelled");
        }
        let Some((_, after)) = routes::departure(&txn, before.id).await? else {
            return Err(AppError::not_found(NO_DEPARTURE));
        };
        // Committed however late: a cancellation only moves one way and its
        // retry answers the departure cancelled; refused late, one with
        // many bookings under load could never be made.
        txn.commit().await?;
        self.outbox.committed();
        Ok(after)
    }

    /// Publishes or unpublishes a route.
    pub async fn set_route_status(&self, req: SetRouteStatus) -> Result<RouteView, AppError> {
        if req.status == RouteStatus::Draft {
            return Err(AppError::bad_input(
                "status: a route can be PUBLISHED or UNPUBLISHED, not made a draft again",
            ));
        }
        let txn = self.db.begin().await?;
        let Some(mut route) = routes::route(&txn, req.route_id).await? else {
            return Err(AppError::not_found(NO_ROUTE));
        };
        may_change(&req.by, &route, NO_ROUTE)?;
        routes::set_status(&txn, route.id, req.status).await?;
        shared::db::commit_in_time(txn).await?;
        route.status = req.status;
        Ok(route)
    }

    /// Puts a homestay or a route on sale, or takes it off.
    pub async fn publish_listing(
        &self,
        req: shared::rpcs::PublishListing,
    ) -> Result<shared::rpcs::ListingPublished, AppError> {
        let txn = self.db.begin().await?;
        let Some(listing) = storage::certification::listing(&txn, req.listing_id).await? else {
            return Err(AppError::not_found("listingId: no such homestay or route"));
        };
        super::administers_listing(
            &req.by,
            listing.region,
            listing.on_sale,
            "listingId: no such homestay or route",
        )?;
        if listing.kind == "ROUTE" {
            let status = if req.published {
                RouteStatus::Published
            } else {
                RouteStatus::Unpublished
            };
            routes::set_status(&txn, RouteId(req.listing_id), status).await?;
        } else {
            storage::set_homestay_published(&txn, req.listing_id, req.published).await?;
        }
        shared::db::commit_in_time(txn).await?;
        Ok(shared::rpcs::ListingPublished {
            listing_id: req.listing_id,
            listing_kind: listing.kind.to_owned(),
            published: req.published,
        })
    }

    /// A route with its departures in a window (from today for a year by default).
    pub async fn get_route(&self, req: GetRoute) -> Result<Option<RouteView>, AppError> {
        let from = req.from.unwrap_or_else(|| china_today(Utc::now()));
        let to = req.to.unwrap_or(from + Duration::days(MAX_WINDOW_DAYS - 1));
        window(from, to)?;
        let Some(mut route) = routes::route(&self.db, req.route_id).await? else {
            return Ok(None);
        };
        route.departures = routes::departures(&self.db, route.id, from, to).await?;
        Ok(Some(route))
    }

    /// The departures of several routes in one window.
    pub async fn get_departures(
        &self,
        req: shared::rpcs::GetDepartures,
    ) -> Result<Vec<(shared::ids::RouteId, Vec<shared::rpcs::DepartureView>)>, AppError> {
        if req.route_ids.len() > 100 {
            return Err(AppError::bad_input("at most 100 routes at a time"));
        }
        let from = req.from.unwrap_or_else(|| china_today(Utc::now()));
        let to = req.to.unwrap_or(from + Duration::days(MAX_WINDOW_DAYS - 1));
        window(from, to)?;
        let mut out: Vec<_> = req.route_ids.iter().map(|r| (*r, Vec::new())).collect();
        for d in routes::departures_of(&self.db, &req.route_ids, from, to).await? {
            if let Some((_, list)) = out.iter_mut().find(|(r, _)| *r == d.route_id) {
                list.push(d);
            }
        }
        Ok(out)
    }

    /// Published routes with a departure in the window that still has the seats.
    pub async fn search_routes(&self, req: SearchRoutes) -> Result<RoutePage, AppError> {
        window(req.from, req.to)?;
        if !(1..=100).contains(&req.first) {
            return Err(AppError::bad_input(
                "first: ask for 1 to 100 routes at a time",
            ));
        }
        // What one booking may take: a search for more finds nothing bookable.
        let most = u32::try_from(shared::rpcs::MAX_TRAVELERS).unwrap_or(u32::MAX);
        if !(1..=most).contains(&req.travelers) {
            return Err(AppError::bad_input(format!(
                "travelers: 1 to {most}, as one booking takes"
            )));
        }
        // Folded as the routes' texts are (`storage::routes::search_text`).
        let text = req.text.as_deref().map(|t| shared::text::folded(t.trim()));
        if let Some(t) = &text {
            check_text("text", t, 100, false)?;
        }
        let after = req
            .after
            .as_deref()
            .map(|c| {
                c.split_once(':')
                    .and_then(|(d, id)| Some((d.parse().ok()?, uuid::Uuid::parse_str(id).ok()?)))
                    .ok_or_else(|| shared::rpcs::not_a_cursor(c))
            })
            .transpose()?;
        let prefix = req
            .region
            .map(shared::region::RegionCode::code_prefix)
            .unwrap_or_default();
        let filter = routes::RouteFilter {
            prefix: &prefix,
            from: req.from,
            to: req.to,
            today: china_today(Utc::now()),
            travelers: req.travelers,
            max_price: req.max_price,
            certified_only: req.certified_only,
            text: text.as_deref(),
        };
        let (routes, has_next_page) = routes::search(&self.db, &filter, req.first, after).await?;
        Ok(RoutePage {
            routes,
            has_next_page,
        })
    }
}

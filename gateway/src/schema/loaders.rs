//! DataLoaders, one set per request (a loader kept in the schema would
//! cache across users): the calendars of every room type a page shows come
//! in one RPC per date range instead of one per room type, and the
//! payments and refunds of every booking a page shows in one RPC, the
//! homestays of a page of search offers in one RPC.

use crate::cache::Cache;
use async_graphql::dataloader::{DataLoader, Loader};
use chrono::NaiveDate;
use shared::AppError;
use shared::bus::Bus;
use shared::ids::{BookingId, HomestayId, RoomTypeId, RouteId};
use shared::rpcs::{
    BookingMoney, DepartureView, GetBookingHistories, GetBookingsMoney, GetDepartures,
    GetHomestays, GetRoomCalendars, HistoryEntry, HomestayView, Night,
};
use std::collections::HashMap;
use std::sync::Arc;

/// A room type's calendar over `[from, to)`.
pub type CalendarKey = (RoomTypeId, NaiveDate, NaiveDate);

/// Loads calendars, batched by date range, through the catalogue cache.
pub struct CalendarLoader {
    bus: Arc<dyn Bus>,
    cache: Cache,
}

impl Loader<CalendarKey> for CalendarLoader {
    type Value = Vec<Night>;
    type Error = Arc<AppError>;

    async fn load(
        &self,
        keys: &[CalendarKey],
    ) -> Result<HashMap<CalendarKey, Vec<Night>>, Arc<AppError>> {
        let mut ranges: HashMap<(NaiveDate, NaiveDate), Vec<RoomTypeId>> = HashMap::new();
        for (id, from, to) in keys {
            ranges.entry((*from, *to)).or_default().push(*id);
        }
        let mut found = HashMap::with_capacity(keys.len());
        for ((from, to), mut room_type_ids) in ranges {
            room_type_ids.sort();
            let request = GetRoomCalendars {
                room_type_ids,
                from,
                to,
            };
            let calendars = self
                .cache
                .call(self.bus.as_ref(), &request)
                .await
                .map_err(Arc::new)?;
            for (id, nights) in calendars {
                found.insert((id, from, to), nights);
            }
        }
        Ok(found)
    }
}

/// A route's departures in a window (`None`: `GetRoute`'s defaults).
pub type DeparturesKey = (RouteId, Option<NaiveDate>, Option<NaiveDate>);

/// Loads departures, batched by window, through the catalogue cache.
pub struct DepartureLoader {
    bus: Arc<dyn Bus>,
    cache: Cache,
}

impl Loader<DeparturesKey> for DepartureLoader {
    type Value = Vec<DepartureView>;
    type Error = Arc<AppError>;

    async fn load(
        &self,
        keys: &[DeparturesKey],
    ) -> Result<HashMap<DeparturesKey, Vec<DepartureView>>, Arc<AppError>> {
        let mut windows: HashMap<(Option<NaiveDate>, Option<NaiveDate>), Vec<RouteId>> =
            HashMap::new();
        for (id, from, to) in keys {
            windows.entry((*from, *to)).or_default().push(*id);
        }
        let mut found = HashMap::with_capacity(keys.len());
        for ((from, to), mut route_ids) in windows {
            route_ids.sort();
            for chunk in route_ids.chunks(100) {
                let request = GetDepartures {
                    route_ids: chunk.to_vec(),
                    from,
                    to,
                };
                let departures = self
                    .cache
                    .call(self.bus.as_ref(), &request)
                    .await
                    .map_err(Arc::new)?;
                for (id, list) in departures {
                    found.insert((id, from, to), list);
                }
            }
        }
        Ok(found)
    }
}

/// Loads homestays (a page of search offers), through the catalogue cache.
pub struct HomestayLoader {
    bus: Arc<dyn Bus>,
    cache: Cache,
}

impl Loader<HomestayId> for HomestayLoader {
    type Value = HomestayView;
    type Error = Arc<AppError>;

    async fn load(
        &self,
        keys: &[HomestayId],
    ) -> Result<HashMap<HomestayId, HomestayView>, Arc<AppError>> {
        let mut ids = keys.to_vec();
        ids.sort();
        let mut found = HashMap::with_capacity(keys.len());
        for chunk in ids.chunks(100) {
            let request = GetHomestays {
                homestay_ids: chunk.to_vec(),
            };
            let homestays = self
                .cache
                .call(self.bus.as_ref(), &request)
                .await
                .map_err(Arc::new)?;
            found.extend(homestays.into_iter().map(|h| (h.id, h)));
        }
        Ok(found)
    }
}

/// Loads the payments and refunds of bookings the caller has read, a page
/// at a time (payment shows the viewer only the money it may see).
pub struct MoneyLoader {
    bus: Arc<dyn Bus>,
    viewer: shared::auth::Principal,
}

impl Loader<BookingId> for MoneyLoader {
    type Value = BookingMoney;
    type Error = Arc<AppError>;

    async fn load(
        &self,
        keys: &[BookingId],
    ) -> Result<HashMap<BookingId, BookingMoney>, Arc<AppError>> {
        let mut found = HashMap::with_capacity(keys.len());
        // The service answers 100 at a time; a page is at most that.
        for chunk in keys.chunks(100) {
            let request = GetBookingsMoney {
                booking_ids: chunk.to_vec(),
                viewer: self.viewer.clone(),
            };
            let money = shared::bus::call(self.bus.as_ref(), &request)
                .await
                .map_err(Arc::new)?;
            found.extend(money.into_iter().map(|m| (m.booking_id, m)));
        }
        Ok(found)
    }
}

/// Loads the histories of bookings, for the request's caller.
pub struct HistoryLoader {
    bus: Arc<dyn Bus>,
    viewer: shared::auth::Principal,
}

impl Loader<BookingId> for HistoryLoader {
    type Value = Vec<HistoryEntry>;
    type Error = Arc<AppError>;

    async fn load(
        &self,
        keys: &[BookingId],
    ) -> Result<HashMap<BookingId, Vec<HistoryEntry>>, Arc<AppError>> {
        let mut found = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(100) {
            let request = GetBookingHistories {
                booking_ids: chunk.to_vec(),
                viewer: self.viewer.clone(),
            };
            let histories = shared::bus::call(self.bus.as_ref(), &request)
                .await
                .map_err(Arc::new)?;
            found.extend(histories);
        }
        Ok(found)
    }
}

/// A booking's history: through the request's loader (one RPC for the
/// page), or one RPC of its own (subscriptions).
pub async fn history(
    ctx: &async_graphql::Context<'_>,
    booking: BookingId,
) -> async_graphql::Result<Vec<HistoryEntry>> {
    if let Some(loader) = ctx.data_opt::<DataLoader<HistoryLoader>>() {
        return Ok(loader
            .load_one(booking)
            .await
            .map_err(|e| crate::error::gql((*e).clone()))?
            .unwrap_or_default());
    }
    let viewer = super::auth::principal(ctx)?.clone();
    let found = super::rpc(
        ctx,
        GetBookingHistories {
            booking_ids: vec![booking],
            viewer,
        },
    )
    .await?;
    Ok(found.into_iter().next().map(|(_, h)| h).unwrap_or_default())
}

/// Adds the loaders of one request to it (`viewer`: the caller, if any).
pub fn attach(
    request: async_graphql::Request,
    bus: Arc<dyn Bus>,
    cache: Cache,
    viewer: Option<shared::auth::Principal>,
) -> async_graphql::Request {
    // Bookings, their histories and their money are read by someone.
    let request = match viewer {
        Some(viewer) => request
            .data(DataLoader::new(
                HistoryLoader {
                    bus: bus.clone(),
                    viewer: viewer.clone(),
                },
                shared::telemetry::spawn_in_request,
            ))
            .data(DataLoader::new(
                MoneyLoader {
                    bus: bus.clone(),
                    viewer,
                },
                shared::telemetry::spawn_in_request,
            )),
        None => request,
    };
    request
        .data(DataLoader::new(
            CalendarLoader {
                bus: bus.clone(),
                cache: cache.clone(),
            },
            shared::telemetry::spawn_in_request,
        ))
        .data(DataLoader::new(
            HomestayLoader {
                bus: bus.clone(),
                cache: cache.clone(),
            },
            shared::telemetry::spawn_in_request,
        ))
        .data(DataLoader::new(
            DepartureLoader { bus, cache },
            shared::telemetry::spawn_in_request,
        ))
}

/// A booking's payments and refunds, through the request's loader (one RPC
/// for the whole page), or one RPC of its own where there is no loader.
pub async fn money(
    ctx: &async_graphql::Context<'_>,
    booking: BookingId,
) -> async_graphql::Result<BookingMoney> {
    let found = match ctx.data_opt::<DataLoader<MoneyLoader>>() {
        Some(loader) => loader
            .load_one(booking)
            .await
            .map_err(|e| crate::error::gql((*e).clone()))?,
        None => super::rpc(
            ctx,
            GetBookingsMoney {
                booking_ids: vec![booking],
                viewer: super::auth::principal(ctx)?.clone(),
            },
        )
        .await?
        .pop(),
    };
    Ok(found.unwrap_or(BookingMoney {
        booking_id: booking,
        payments: Vec::new(),
        refunds: Vec::new(),
    }))
}

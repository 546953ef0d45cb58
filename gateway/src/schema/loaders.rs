//! DataLoaders, one set per request (a loader kept in the schema would
//! cache across users): the calendars of every room type a page shows come
//! in one RPC per date range instead of one per room type, and the
//! payments and refunds of every booking a page shows in one RPC, the
//! homestays of a page of search offers in one RPC.

use crate::cache::Cache;
use async_graphql::dataloader::{DataLoader, Loader};
use chrono::NaiveDate;
use shared::AppError;
use shared::auth::Principal;
use shared::bus::Bus;
use shared::ids::{BookingId, HomestayId, HostId, RoomTypeId, RouteId};
use shared::rpc::Rpc;
use shared::rpcs::{
    BookingGuests, BookingMoney, DepartureView, GetBookingGuests, GetBookingHistories,
    GetBookingsMoney, GetDepartures, GetHomestays, GetHosts, GetRoomCalendars, HistoryEntry,
    HomestayView, HostView, Night,
};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

/// A room type's calendar over `[from, to)`.
pub type CalendarKey = (RoomTypeId, NaiveDate, NaiveDate);

/// Loads calendars, batched by date range, through the catalogue cache.
pub struct CalendarLoader {
    bus: Arc<dyn Bus>,
    cache: Cache,
}

impl Loader<CalendarKey> for CalendarLoader {
    type Value = Ranged<Vec<Night>>;
    type Error = Arc<AppError>;

    async fn load(
        &self,
        keys: &[CalendarKey],
    ) -> Result<HashMap<CalendarKey, Ranged<Vec<Night>>>, Arc<AppError>> {
        by_range(
            &self.cache,
            self.bus.as_ref(),
            keys,
            |room_type_ids, from, to| GetRoomCalendars {
                room_type_ids,
                from,
                to,
            },
        )
        .await
    }
}

/// What one id loads over one range, or why that range was refused (a
/// range of its own: one bad range in a query fails its own fields, not
/// every field the batch held).
pub type Ranged<V> = Result<V, Arc<AppError>>;

/// What `keys` — each an id and a range — load, asked once per range and
/// per hundred ids (a page can show more than a service reads at once),
/// through the catalogue cache.
async fn by_range<I, A, V, R>(
    cache: &Cache,
    bus: &dyn Bus,
    keys: &[(I, A, A)],
    request: impl Fn(Vec<I>, A, A) -> R,
) -> Result<HashMap<(I, A, A), Ranged<V>>, Arc<AppError>>
where
    I: Copy + Ord + std::hash::Hash,
    A: Copy + Eq + std::hash::Hash,
    R: Rpc<Reply = Vec<(I, V)>>,
    R::Reply: serde::Serialize + serde::de::DeserializeOwned + Clone + Sync,
{
    let mut ranges: HashMap<(A, A), Vec<I>> = HashMap::new();
    for (id, from, to) in keys {
        ranges.entry((*from, *to)).or_default().push(*id);
    }
    let mut found = HashMap::with_capacity(keys.len());
    for ((from, to), mut ids) in ranges {
        ids.sort();
        for chunk in ids.chunks(100) {
            match cache.call(bus, &request(chunk.to_vec(), from, to)).await {
                Ok(answer) => {
                    for (id, value) in answer {
                        found.insert((id, from, to), Ok(value));
                    }
                }
                Err(e) => {
                    let e = Arc::new(e);
                    for id in chunk {
                        found.insert((*id, from, to), Err(e.clone()));
                    }
                }
            }
        }
    }
    Ok(found)
}

/// A route's departures in a window (`None`: `GetRoute`'s defaults).
pub type DeparturesKey = (RouteId, Option<NaiveDate>, Option<NaiveDate>);

/// Loads departures, batched by window, through the catalogue cache.
pub struct DepartureLoader {
    bus: Arc<dyn Bus>,
    cache: Cache,
}

impl Loader<DeparturesKey> for DepartureLoader {
    type Value = Ranged<Vec<DepartureView>>;
    type Error = Arc<AppError>;

    async fn load(
        &self,
        keys: &[DeparturesKey],
    ) -> Result<HashMap<DeparturesKey, Ranged<Vec<DepartureView>>>, Arc<AppError>> {
        by_range(
            &self.cache,
            self.bus.as_ref(),
            keys,
            |route_ids, from, to| GetDepartures {
                route_ids,
                from,
                to,
            },
        )
        .await
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

/// Loads hosts by id (who a page of payouts is for), 100 to a call.
pub struct HostLoader {
    bus: Arc<dyn Bus>,
}

impl Loader<HostId> for HostLoader {
    type Value = HostView;
    type Error = Arc<AppError>;

    async fn load(&self, keys: &[HostId]) -> Result<HashMap<HostId, HostView>, Arc<AppError>> {
        let mut found = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(100) {
            let request = GetHosts {
                host_ids: chunk.to_vec(),
            };
            let hosts = shared::bus::call(self.bus.as_ref(), &request)
                .await
                .map_err(Arc::new)?;
            found.extend(hosts.into_iter().map(|h| (h.id, h)));
        }
        Ok(found)
    }
}

/// A host, through the request's loader (one call for a page of payouts).
pub async fn host(
    ctx: &async_graphql::Context<'_>,
    id: HostId,
) -> async_graphql::Result<Option<HostView>> {
    let loader = ctx.data::<DataLoader<HostLoader>>()?;
    loader
        .load_one(id)
        .await
        .map_err(|e| crate::error::gql((*e).clone()))
}

/// An RPC that reads something of up to 100 bookings for the caller: the
/// service leaves out those the caller may not see.
pub trait OfBookings: Rpc {
    /// What it reads of one booking.
    type Item: Clone + Send + Sync + 'static;
    /// The request for `booking_ids`, asked by `viewer`.
    fn ask(booking_ids: Vec<BookingId>, viewer: Principal) -> Self;
    /// Its answer, booking by booking.
    fn items(reply: Self::Reply) -> Vec<(BookingId, Self::Item)>;
}

/// An [`OfBookings`] whose answer is already booking by booking.
macro_rules! of_bookings {
    ($rpc:ident, $item:ty) => {
        impl OfBookings for $rpc {
            type Item = $item;
            fn ask(booking_ids: Vec<BookingId>, viewer: Principal) -> Self {
                $rpc {
                    booking_ids,
                    viewer,
                }
            }
            fn items(reply: Self::Reply) -> Vec<(BookingId, Self::Item)> {
                reply
            }
        }
    };
}
of_bookings!(GetBookingHistories, Vec<HistoryEntry>);
of_bookings!(GetBookingGuests, BookingGuests);

/// Payment shows the viewer only the money it may see.
impl OfBookings for GetBookingsMoney {
    type Item = BookingMoney;
    fn ask(booking_ids: Vec<BookingId>, viewer: Principal) -> Self {
        GetBookingsMoney {
            booking_ids,
            viewer,
        }
    }
    fn items(reply: Self::Reply) -> Vec<(BookingId, Self::Item)> {
        reply.into_iter().map(|m| (m.booking_id, m)).collect()
    }
}

/// Loads what `R` reads of the bookings the caller has read, a page at a
/// time (the services answer 100 at a time; a page is at most that).
pub struct ViewerLoader<R> {
    bus: Arc<dyn Bus>,
    viewer: Principal,
    of: PhantomData<fn() -> R>,
}

impl<R: OfBookings> ViewerLoader<R> {
    fn new(bus: Arc<dyn Bus>, viewer: Principal) -> DataLoader<Self> {
        DataLoader::new(
            ViewerLoader {
                bus,
                viewer,
                of: PhantomData,
            },
            shared::telemetry::spawn_in_request,
        )
    }
}

impl<R: OfBookings> Loader<BookingId> for ViewerLoader<R> {
    type Value = R::Item;
    type Error = Arc<AppError>;

    async fn load(&self, keys: &[BookingId]) -> Result<HashMap<BookingId, R::Item>, Arc<AppError>> {
        let mut found = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(100) {
            let request = R::ask(chunk.to_vec(), self.viewer.clone());
            let reply = shared::bus::call(self.bus.as_ref(), &request)
                .await
                .map_err(Arc::new)?;
            found.extend(R::items(reply));
        }
        Ok(found)
    }
}

/// What `R` reads of one booking: through the request's loader (one RPC
/// for the whole page), or an RPC of its own where there is no loader
/// (subscriptions). None: not the caller's to see.
pub async fn of_booking<R: OfBookings>(
    ctx: &async_graphql::Context<'_>,
    booking: BookingId,
) -> async_graphql::Result<Option<R::Item>> {
    if let Some(loader) = ctx.data_opt::<DataLoader<ViewerLoader<R>>>() {
        return loader
            .load_one(booking)
            .await
            .map_err(|e| crate::error::gql((*e).clone()));
    }
    let viewer = super::auth::principal(ctx)?.clone();
    let reply = super::rpc(ctx, R::ask(vec![booking], viewer)).await?;
    Ok(R::items(reply).pop().map(|(_, item)| item))
}

/// A booking's history (none that the caller may not see).
pub async fn history(
    ctx: &async_graphql::Context<'_>,
    booking: BookingId,
) -> async_graphql::Result<Vec<HistoryEntry>> {
    Ok(of_booking::<GetBookingHistories>(ctx, booking)
        .await?
        .unwrap_or_default())
}

/// Adds the loaders to a request's data, or to a subscription connection's
/// (where each pushed booking's fields then share one call, as a page's
/// do); `viewer`: the caller, if any.
pub fn attach(
    data: &mut async_graphql::Data,
    bus: &Arc<dyn Bus>,
    cache: &Cache,
    viewer: Option<&Principal>,
) {
    // Bookings, their histories and their money are read by someone.
    if let Some(viewer) = viewer {
        data.insert(ViewerLoader::<GetBookingHistories>::new(
            bus.clone(),
            viewer.clone(),
        ));
        data.insert(ViewerLoader::<GetBookingGuests>::new(
            bus.clone(),
            viewer.clone(),
        ));
        data.insert(ViewerLoader::<GetBookingsMoney>::new(
            bus.clone(),
            viewer.clone(),
        ));
    }
    let spawn = shared::telemetry::spawn_in_request;
    data.insert(DataLoader::new(
        CalendarLoader {
            bus: bus.clone(),
            cache: cache.clone(),
        },
        spawn,
    ));
    data.insert(DataLoader::new(
        HomestayLoader {
            bus: bus.clone(),
            cache: cache.clone(),
        },
        spawn,
    ));
    data.insert(DataLoader::new(HostLoader { bus: bus.clone() }, spawn));
    data.insert(DataLoader::new(
        DepartureLoader {
            bus: bus.clone(),
            cache: cache.clone(),
        },
        spawn,
    ));
}

/// A booking's payments and refunds (none that the caller may not see).
pub async fn money(
    ctx: &async_graphql::Context<'_>,
    booking: BookingId,
) -> async_graphql::Result<BookingMoney> {
    let found = of_booking::<GetBookingsMoney>(ctx, booking).await?;
    Ok(found.unwrap_or(BookingMoney {
        booking_id: booking,
        payments: Vec::new(),
        refunds: Vec::new(),
    }))
}

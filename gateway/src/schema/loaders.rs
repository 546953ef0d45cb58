//! DataLoaders, one set per request (a loader kept in the schema would
//! cache across users): the calendars of every room type a page shows come
//! in one RPC per date range instead of one per room type.

use crate::cache::Cache;
use async_graphql::dataloader::{DataLoader, Loader};
use chrono::NaiveDate;
use shared::AppError;
use shared::bus::Bus;
use shared::ids::RoomTypeId;
use shared::rpcs::{GetRoomCalendars, Night};
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

/// The loaders of one request.
pub fn for_request(bus: Arc<dyn Bus>, cache: Cache) -> DataLoader<CalendarLoader> {
    DataLoader::new(CalendarLoader { bus, cache }, tokio::spawn)
}

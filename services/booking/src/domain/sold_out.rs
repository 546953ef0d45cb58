//! What booking remembers of the stays inventory has just refused as sold
//! out, so that another create for the same stay is answered `SOLD_OUT` at
//! once instead of being recorded PENDING, sent to inventory and refused
//! there a few milliseconds later (docs/decisions.md, "A create for a stay
//! just refused as sold out").
//!
//! Only refusals are remembered, never availability: a grant is still
//! decided by inventory's conditional update alone, so nothing here can
//! oversell. What it can do wrong is refuse a stay that has just become
//! free again; that lasts until booking hears of the release (any release
//! of the listing forgets its refusals) and at most [`SoldOutMemory::new`]'s
//! `keep` after the refusal (rooms added to a calendar are not heard of).

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use shared::events::HoldItem;
use shared::ids::{DepartureId, RoomTypeId};
use std::collections::HashMap;
use std::sync::Mutex;

/// Entries kept before the expired ones are swept out.
const SWEEP_ABOVE: usize = 4_096;

/// A listing whose capacity a hold takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Listing {
    RoomType(RoomTypeId),
    Departure(DepartureId),
}

/// The listing, the stay (none for a departure) and the units asked for.
fn shape(item: &HoldItem) -> (Listing, Option<(NaiveDate, NaiveDate)>, u32) {
    match *item {
        HoldItem::RoomNights {
            room_type_id,
            check_in,
            check_out,
            rooms,
        } => (
            Listing::RoomType(room_type_id),
            Some((check_in, check_out)),
            rooms,
        ),
        HoldItem::Seats {
            departure_id,
            seats,
        } => (Listing::Departure(departure_id), None, seats),
    }
}

/// One refusal: this stay had fewer than `units` free at `at`.
#[derive(Debug, Clone)]
struct Refusal {
    stay: Option<(NaiveDate, NaiveDate)>,
    units: u32,
    at: DateTime<Utc>,
    reason: String,
}

#[derive(Debug, Default)]
struct Entry {
    /// The latest release of the listing heard of.
    released_at: Option<DateTime<Utc>>,
    refusals: Vec<Refusal>,
}

/// Stays refused as sold out in the last `keep`, per listing.
#[derive(Debug)]
pub struct SoldOutMemory {
    keep: TimeDelta,
    entries: Mutex<Entries>,
}

#[derive(Debug)]
struct Entries {
    map: HashMap<Listing, Entry>,
    /// Sweep when the map holds this many.
    sweep_above: usize,
}

impl SoldOutMemory {
    /// Remembers each refusal for `keep`; zero remembers nothing.
    pub fn new(keep: std::time::Duration) -> SoldOutMemory {
        SoldOutMemory {
            keep: TimeDelta::from_std(keep).unwrap_or(TimeDelta::MAX),
            entries: Mutex::new(Entries {
                map: HashMap::new(),
                sweep_above: SWEEP_ABOVE,
            }),
        }
    }

    fn fresh(&self, at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        now.signed_duration_since(at) < self.keep
    }

    /// Inventory refused `item` as sold out at `at` (the refusal's
    /// `occurred_at`), saying `reason`. Ignored when it is older than a
    /// release already heard of, or than `keep`.
    pub fn refused(&self, item: &HoldItem, at: DateTime<Utc>, reason: &str, now: DateTime<Utc>) {
        // Stamped by inventory's clock: one ahead of this one must not make
        // a refusal last longer than `keep` (earlier only refuses less).
        let at = at.min(now);
        if !self.fresh(at, now) {
            return;
        }
        let (listing, stay, units) = shape(item);
        let mut entries = self.entries(now);
        let entry = entries.map.entry(listing).or_default();
        if entry.released_at.is_some_and(|r| r >= at) {
            return;
        }
        let refusal = Refusal {
            stay,
            units,
            at,
            reason: reason.to_owned(),
        };
        match entry.refusals.iter_mut().find(|r| r.stay == stay) {
            // A fresh refusal of fewer units, or a later one of as many,
            // stands: it refuses at least as much, as truly.
            Some(r) if self.fresh(r.at, now) && (r.units < units || r.at > at) => {}
            Some(r) => *r = refusal,
            None => entry.refusals.push(refusal),
        }
    }

    /// The entries, swept of what went stale by `now` once there are many.
    fn entries(&self, now: DateTime<Utc>) -> std::sync::MutexGuard<'_, Entries> {
        let mut guard = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if guard.map.len() >= guard.sweep_above {
            let fresh = |at: DateTime<Utc>| self.fresh(at, now);
            guard.map.retain(|_, e| {
                e.refusals.retain(|r| fresh(r.at));
                !e.refusals.is_empty() || e.released_at.is_some_and(fresh)
            });
            guard.sweep_above = (guard.map.len() * 2).max(SWEEP_ABOVE);
        }
        guard
    }

    /// Capacity of `item`'s listing was given back at `at`: every refusal
    /// of the listing up to then is forgotten, whatever the stay.
    pub fn released(&self, item: &HoldItem, at: DateTime<Utc>, now: DateTime<Utc>) {
        if self.keep.is_zero() {
            return;
        }
        let (listing, _, _) = shape(item);
        let mut entries = self.entries(now);
        let entry = entries.map.entry(listing).or_default();
        entry.released_at = Some(entry.released_at.map_or(at, |r| r.max(at)));
        entry.refusals.retain(|r| r.at > at);
    }

    /// Why `item` would be refused now, if a refusal of the same stay for
    /// as many units or fewer is fresh and no release came after it: that
    /// refusal's reason (its own count), and, when it was for fewer, how
    /// many this one asks.
    pub fn refusal(&self, item: &HoldItem, now: DateTime<Utc>) -> Option<String> {
        if self.keep.is_zero() {
            return None;
        }
        let (listing, stay, units) = shape(item);
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .map
            .get(&listing)?
            .refusals
            .iter()
            .find(|r| r.stay == stay && r.units <= units && self.fresh(r.at, now))
            .map(|r| {
                if r.units < units {
                    format!("{} (this request asks for {units})", r.reason)
                } else {
                    r.reason.clone()
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn room(room_type: RoomTypeId, nights: (u32, u32), rooms: u32) -> HoldItem {
        let day = |d| NaiveDate::from_ymd_opt(2027, 7, d).expect("a date");
        HoldItem::RoomNights {
            room_type_id: room_type,
            check_in: day(nights.0),
            check_out: day(nights.1),
            rooms,
        }
    }

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).expect("a time")
    }

    #[test]
    fn a_refused_stay_is_refused_for_as_many_rooms_or_more_until_it_is_stale() {
        let memory = SoldOutMemory::new(Duration::from_secs(2));
        let rt = RoomTypeId::new();
        memory.refused(&room(rt, (10, 12), 2), t(0), "no room", t(5));
        assert_eq!(
            memory.refusal(&room(rt, (10, 12), 2), t(10)),
            Some("no room".into())
        );
        // A larger request is told its own count beside the refusal's.
        assert_eq!(
            memory.refusal(&room(rt, (10, 12), 3), t(10)),
            Some("no room (this request asks for 3)".into())
        );
        // One room fewer may still fit; another stay is another question.
        assert_eq!(memory.refusal(&room(rt, (10, 12), 1), t(10)), None);
        assert_eq!(memory.refusal(&room(rt, (10, 11), 2), t(10)), None);
        assert_eq!(
            memory.refusal(&room(RoomTypeId::new(), (10, 12), 2), t(10)),
            None
        );
        assert_eq!(memory.refusal(&room(rt, (10, 12), 2), t(2_000)), None);
    }

    #[test]
    fn a_release_forgets_the_listings_refusals_and_outranks_older_ones() {
        let memory = SoldOutMemory::new(Duration::from_secs(2));
        let rt = RoomTypeId::new();
        memory.refused(&room(rt, (10, 12), 1), t(0), "no room", t(0));
        memory.released(&room(rt, (1, 2), 1), t(100), t(100));
        assert_eq!(memory.refusal(&room(rt, (10, 12), 1), t(200)), None);
        // A refusal read before the release, delivered after it.
        memory.refused(&room(rt, (10, 12), 1), t(50), "no room", t(300));
        assert_eq!(memory.refusal(&room(rt, (10, 12), 1), t(300)), None);
        memory.refused(&room(rt, (10, 12), 1), t(400), "no room", t(400));
        assert!(memory.refusal(&room(rt, (10, 12), 1), t(400)).is_some());
    }

    #[test]
    fn stale_refusals_and_a_zero_memory_refuse_nothing() {
        let rt = RoomTypeId::new();
        let off = SoldOutMemory::new(Duration::ZERO);
        off.refused(&room(rt, (10, 12), 1), t(0), "no room", t(0));
        assert_eq!(off.refusal(&room(rt, (10, 12), 1), t(0)), None);
        let memory = SoldOutMemory::new(Duration::from_secs(2));
        memory.refused(&room(rt, (10, 12), 1), t(0), "no room", t(2_500));
        assert_eq!(memory.refusal(&room(rt, (10, 12), 1), t(2_500)), None);
    }

    #[test]
    fn a_refusal_stamped_ahead_of_this_clock_lasts_no_longer_than_keep() {
        let memory = SoldOutMemory::new(Duration::from_secs(2));
        let rt = RoomTypeId::new();
        memory.refused(&room(rt, (10, 12), 1), t(60_000), "no room", t(0));
        assert!(memory.refusal(&room(rt, (10, 12), 1), t(1_000)).is_some());
        assert_eq!(memory.refusal(&room(rt, (10, 12), 1), t(2_000)), None);
    }

    #[test]
    fn departures_are_remembered_by_seats() {
        let memory = SoldOutMemory::new(Duration::from_secs(2));
        let departure = DepartureId::new();
        let seats = |n| HoldItem::Seats {
            departure_id: departure,
            seats: n,
        };
        memory.refused(&seats(3), t(0), "2 seats left", t(0));
        assert_eq!(memory.refusal(&seats(2), t(1)), None);
        assert_eq!(
            memory.refusal(&seats(4), t(1)),
            Some("2 seats left (this request asks for 4)".into())
        );
    }

    #[test]
    fn the_memory_sweeps_what_went_stale() {
        let memory = SoldOutMemory::new(Duration::from_millis(10));
        for i in 0..(SWEEP_ABOVE as i64 * 3) {
            memory.refused(
                &room(RoomTypeId::new(), (10, 12), 1),
                t(i * 20),
                "x",
                t(i * 20),
            );
        }
        // Releases are remembered too (a late refusal is checked against
        // them), and swept alike.
        let later = SWEEP_ABOVE as i64 * 3 * 20;
        for i in 0..(SWEEP_ABOVE as i64 * 3) {
            let at = t(later + i * 20);
            memory.released(&room(RoomTypeId::new(), (10, 12), 1), at, at);
        }
        let len = memory.entries.lock().expect("not poisoned").map.len();
        assert!(len <= SWEEP_ABOVE, "{len} entries kept");
    }
}

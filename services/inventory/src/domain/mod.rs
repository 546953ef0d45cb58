//! Inventory rules, without I/O.

use chrono::NaiveDate;
use shared::AppError;

pub use shared::stay::{MAX_NIGHTS, StayDates};
pub use shared::text::check as check_text;

/// Validates a calendar range `[from, to)`: at most a year at once.
pub fn calendar_range(from: NaiveDate, to: NaiveDate) -> Result<i64, AppError> {
    let days = (to - from).num_days();
    if !(1..=366).contains(&days) {
        return Err(AppError::bad_input(
            "the calendar range must cover 1 to 366 nights, `to` exclusive",
        ));
    }
    Ok(days)
}

/// What booking said, before a sweep, of the overdue holds it was asked
/// about (`GetConfirmedBookings`).
#[derive(Debug, Default)]
pub enum Asked {
    /// It answered: those asked, and those of them confirmed (now, or
    /// cancelled since).
    Answered {
        /// The bookings asked about.
        asked: std::collections::HashSet<shared::ids::BookingId>,
        /// Those of them booking confirmed.
        confirmed: std::collections::HashSet<shared::ids::BookingId>,
    },
    /// It did not answer (or there was nothing to ask).
    #[default]
    Unanswered,
}

/// What the sweep does with an overdue hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Sweep {
    /// Its booking was confirmed: sold, as its confirmation would make it
    /// (cancelled since, the release queued behind it gives the room back).
    Commit,
    /// Back on sale.
    Release,
    /// Not asked about (it became overdue, or unlocked, after the
    /// question): the next round asks.
    Later,
}

/// The sweep of the overdue hold of `booking`, by what booking said.
pub fn sweep(asked: &Asked, booking: shared::ids::BookingId) -> Sweep {
    match asked {
        Asked::Answered { confirmed, .. } if confirmed.contains(&booking) => Sweep::Commit,
        Asked::Answered { asked, .. } if asked.contains(&booking) => Sweep::Release,
        Asked::Answered { .. } => Sweep::Later,
        Asked::Unanswered => Sweep::Release,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_releases_only_what_booking_was_asked_and_did_not_confirm() {
        use shared::ids::BookingId;
        let (paid, unpaid, unasked) = (BookingId::new(), BookingId::new(), BookingId::new());
        let answered = Asked::Answered {
            asked: [paid, unpaid].into(),
            confirmed: [paid].into(),
        };
        assert_eq!(sweep(&answered, paid), Sweep::Commit);
        assert_eq!(sweep(&answered, unpaid), Sweep::Release);
        // Overdue since the question (a second read finds more): asked next.
        assert_eq!(sweep(&answered, unasked), Sweep::Later);
        // Booking away: the net releases.
        assert_eq!(sweep(&Asked::Unanswered, paid), Sweep::Release);
    }

    fn d(s: &str) -> NaiveDate {
        s.parse().expect("date")
    }

    #[test]
    fn a_stay_needs_at_least_one_night_and_at_most_thirty() {
        assert!(StayDates::parse(d("2026-07-01"), d("2026-07-01")).is_err());
        assert!(StayDates::parse(d("2026-07-02"), d("2026-07-01")).is_err());
        assert!(StayDates::parse(d("2026-07-01"), d("2026-08-15")).is_err());
        assert_eq!(
            StayDates::parse(d("2026-07-01"), d("2026-07-03")).map(|s| s.nights()),
            Ok(2)
        );
    }
}

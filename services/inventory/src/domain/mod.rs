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

#[cfg(test)]
mod tests {
    use super::*;

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

//! Inventory rules, without I/O.

use chrono::NaiveDate;
use shared::AppError;

/// The longest stay one booking may hold.
pub const MAX_NIGHTS: i64 = 30;

/// A validated stay: `check_in < check_out`, at most [`MAX_NIGHTS`] nights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StayDates {
    /// First night.
    pub check_in: NaiveDate,
    /// Departure day.
    pub check_out: NaiveDate,
}

impl StayDates {
    /// Validates a stay.
    pub fn parse(check_in: NaiveDate, check_out: NaiveDate) -> Result<StayDates, AppError> {
        let nights = (check_out - check_in).num_days();
        if nights < 1 {
            return Err(AppError::bad_input("check-out must be after check-in"));
        }
        if nights > MAX_NIGHTS {
            return Err(AppError::bad_input(format!(
                "a stay can be at most {MAX_NIGHTS} nights; this one is {nights}"
            )));
        }
        Ok(StayDates {
            check_in,
            check_out,
        })
    }

    /// Number of nights.
    pub fn nights(&self) -> i64 {
        (self.check_out - self.check_in).num_days()
    }
}

/// Checks a text field: not blank when `required`, at most `max` characters;
/// the message names the field.
pub fn check_text(field: &str, text: &str, max: usize, required: bool) -> Result<(), AppError> {
    if required && text.trim().is_empty() {
        return Err(AppError::bad_input(format!("{field} must not be empty")));
    }
    if text.chars().count() > max {
        return Err(AppError::bad_input(format!(
            "{field} is longer than {max} characters"
        )));
    }
    Ok(())
}

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

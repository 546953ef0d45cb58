//! A stay's dates, validated once at the edge: booking checks them when the
//! request comes, inventory when it holds and searches.

use crate::AppError;
use chrono::NaiveDate;

/// The longest stay one booking may hold.
pub const MAX_NIGHTS: i64 = 30;

/// The most rooms one booking takes.
pub const MAX_ROOMS: u32 = 50;

/// Refuses a check-in before today (China time): booking refuses to book
/// it, and the quote refuses to call it bookable.
pub fn check_not_past(
    check_in: NaiveDate,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), AppError> {
    let today = crate::policy::china_today(now);
    if check_in < today {
        return Err(AppError::bad_input(format!(
            "checkIn: {check_in} is in the past (today is {today} in China)"
        )));
    }
    Ok(())
}

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
            return Err(AppError::bad_input("checkOut: must be after checkIn"));
        }
        if nights > MAX_NIGHTS {
            return Err(AppError::bad_input(format!(
                "checkOut: a stay is at most {MAX_NIGHTS} nights; this one is {nights}"
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

//! Cancellation policies: how much of the price goes back when a confirmed
//! booking is cancelled, by whole days left before the stay or departure.

use crate::money::Fen;
use chrono::{DateTime, FixedOffset, NaiveDate, Utc};

/// Today's date in China Standard Time (UTC+8): the calendar of stays,
/// departures, cut-offs, certifications and refund policies.
pub fn china_today(now: DateTime<Utc>) -> NaiveDate {
    match FixedOffset::east_opt(8 * 3600) {
        Some(china) => now.with_timezone(&china).date_naive(),
        None => now.date_naive(),
    }
}

/// The instant a China day (UTC+8) begins: days given by people become
/// the half-open range `[china_midnight(from), china_midnight(to + 1))`.
pub fn china_midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(chrono::NaiveTime::MIN).and_utc() - chrono::Duration::hours(8)
}

/// Whether a listing certified until `until` (its last valid day) carries
/// the poverty-relief badge today, China time.
pub fn certified_now(until: Option<NaiveDate>) -> bool {
    until.is_some_and(|d| d >= china_today(Utc::now()))
}
use serde::{Deserialize, Serialize};

/// One step of a policy: cancelling at least `days_before` days ahead
/// refunds `refund_percent` of the price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyTier {
    /// Whole days between the cancellation and the start date.
    pub days_before: u32,
    /// Share refunded, 0 to 100.
    pub refund_percent: u8,
}

/// The most days before the start a tier may name (nothing is on sale
/// further ahead).
pub const MAX_DAYS_BEFORE: u32 = 730;

/// The day three calendar years after `day` (a 29 February ends on the
/// 28th): how long a certification stands unless its admin says otherwise.
pub fn three_years_after(day: NaiveDate) -> NaiveDate {
    day.checked_add_months(chrono::Months::new(36))
        .unwrap_or(NaiveDate::MAX)
}

/// How far ahead a night or a departure is put on sale (two years).
pub const MAX_DAYS_AHEAD: i64 = 730;

/// The years reports are kept and asked for: partnerships, their
/// agreements and targets, the welfare fund's totals.
pub const YEARS: std::ops::RangeInclusive<i32> = 1990..=2100;

/// Tiers by days before the start; the first whose `days_before` is reached
/// applies, and none reached means no refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancellationPolicy {
    /// Most days first once [`CancellationPolicy::new`] sorted them.
    pub tiers: Vec<PolicyTier>,
}

impl Default for CancellationPolicy {
    /// The platform's standard policy: full refund 7 or more days ahead,
    /// half from 3 days, nothing after.
    fn default() -> Self {
        CancellationPolicy {
            tiers: vec![
                PolicyTier {
                    days_before: 7,
                    refund_percent: 100,
                },
                PolicyTier {
                    days_before: 3,
                    refund_percent: 50,
                },
            ],
        }
    }
}

/// Why a policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadPolicy(pub String);

impl CancellationPolicy {
    /// A policy from tiers in any order: percents ≤ 100, days distinct, and
    /// more days never refunding less.
    pub fn new(mut tiers: Vec<PolicyTier>) -> Result<CancellationPolicy, BadPolicy> {
        // No tiers would mean no refund ever, which nobody means by an
        // empty list: say it with a tier.
        if tiers.is_empty() {
            return Err(BadPolicy(
                "a policy has at least one tier: leave it out for the standard policy, \
                 or say [{daysBefore: 0, refundPercent: 0}] for no refunds"
                    .into(),
            ));
        }
        if tiers.len() > 10 {
            return Err(BadPolicy("a policy has at most 10 tiers".into()));
        }
        tiers.sort_by_key(|t| std::cmp::Reverse(t.days_before));
        for t in &tiers {
            if t.days_before > MAX_DAYS_BEFORE {
                return Err(BadPolicy(format!(
                    "a tier of {} days before is more than {MAX_DAYS_BEFORE} (two years)",
                    t.days_before
                )));
            }
            if t.refund_percent > 100 {
                return Err(BadPolicy(format!(
                    "a refund of {}% is more than the price",
                    t.refund_percent
                )));
            }
        }
        for w in tiers.windows(2) {
            if w[0].days_before == w[1].days_before {
                return Err(BadPolicy(format!(
                    "two tiers for {} before",
                    crate::text::plural(w[0].days_before, "day", "days")
                )));
            }
            if w[0].refund_percent < w[1].refund_percent {
                return Err(BadPolicy(
                    "cancelling earlier must never refund less".into(),
                ));
            }
        }
        Ok(CancellationPolicy { tiers })
    }

    /// Percent refunded when cancelling `days_before` days ahead (negative:
    /// after the start).
    pub fn refund_percent(&self, days_before: i64) -> u8 {
        self.tiers
            .iter()
            .find(|t| days_before >= i64::from(t.days_before))
            .map_or(0, |t| t.refund_percent)
    }

    /// The refund of `paid` when cancelling `days_before` days ahead, in
    /// whole fen rounded down.
    pub fn refund(&self, paid: Fen, days_before: i64) -> Fen {
        paid.scale(i64::from(self.refund_percent(days_before)), 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_china_day_begins_at_four_in_the_afternoon_utc_the_day_before() {
        let day = NaiveDate::from_ymd_opt(2026, 12, 4).expect("a day");
        let start = china_midnight(day);
        assert_eq!(start.to_rfc3339(), "2026-12-03T16:00:00+00:00");
        assert_eq!(china_today(start), day);
        assert_eq!(
            china_today(start - chrono::Duration::seconds(1)),
            day.pred_opt().expect("a day")
        );
    }

    #[test]
    fn the_standard_policy_refunds_by_days_left() {
        let p = CancellationPolicy::default();
        assert_eq!(p.refund(Fen(38_001), 30), Fen(38_001));
        assert_eq!(p.refund(Fen(38_001), 7), Fen(38_001));
        assert_eq!(p.refund(Fen(38_001), 6), Fen(19_000));
        assert_eq!(p.refund(Fen(38_001), 3), Fen(19_000));
        assert_eq!(p.refund(Fen(38_001), 2), Fen::ZERO);
        assert_eq!(p.refund(Fen(38_001), -1), Fen::ZERO);
    }

    #[test]
    fn a_policy_refunding_more_for_later_cancelling_is_refused() {
        let tier = |days_before, refund_percent| PolicyTier {
            days_before,
            refund_percent,
        };
        assert!(CancellationPolicy::new(vec![tier(1, 100), tier(7, 50)]).is_err());
        assert!(CancellationPolicy::new(vec![tier(1, 101)]).is_err());
        assert!(CancellationPolicy::new(vec![tier(3, 10), tier(3, 20)]).is_err());
        assert!(CancellationPolicy::new(vec![tier(u32::MAX, 100)]).is_err());
        assert!(CancellationPolicy::new(vec![tier(MAX_DAYS_BEFORE, 100)]).is_ok());
        let ok = CancellationPolicy::new(vec![tier(1, 20), tier(14, 100)]).expect("valid");
        assert_eq!(ok.tiers[0].days_before, 14);
    }
}

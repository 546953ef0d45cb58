//! Attribution rules, without I/O.
//!
//! What a booking contributes is a function of everything known about it (its
//! [`Facts`]): confirmed, paid, refunded, cancelled. Each event updates the
//! facts and then credits every matching partnership with the *difference*
//! between what the booking should contribute now and what it was credited
//! already. So a duplicated event changes nothing, events may come in any
//! order, and a cancellation or refund takes back exactly what it undoes.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use shared::AppError;
use shared::money::Fen;
use shared::region::RegionCode;
use shared::rpcs::{TargetProgress, YearTarget};

/// Everything partnership knows about one booking.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// The sponsor side: the booker's home region or the declared one.
    pub sponsor: Option<RegionCode>,
    /// Where the listing is (known once confirmed).
    pub listing: Option<RegionCode>,
    /// Whether the listing was certified when held.
    pub certified: bool,
    /// Travelers on the booking.
    pub travelers: u32,
    /// The price, from the confirmation.
    pub total: Fen,
    /// When it was confirmed; None until `booking.confirmed` arrives.
    pub confirmed_at: Option<DateTime<Utc>>,
    /// Captured: gross, host share, fund share (zero until `booking.confirmed`
    /// brings the capture's split).
    pub captured: Money3,
    /// Refunded so far, same shares.
    pub refunded: Money3,
    /// Cancelled (before or after confirmation: nothing counts before it).
    pub cancelled: bool,
}

/// Gross, host share and fund share of a payment or refund.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Money3 {
    /// What the traveler paid (or got back).
    pub gross: Fen,
    /// The host's share.
    pub host: Fen,
    /// The welfare fund's share.
    pub fund: Fen,
}

/// What a booking contributes to a partnership's figures.
pub type Contribution = shared::rpcs::Figures;

impl Facts {
    /// What the booking contributes now: nothing before it is confirmed;
    /// travelers and the booking itself until it is cancelled; money as
    /// captured (the confirmed price until the capture is known) less refunds.
    pub fn contribution(&self) -> Contribution {
        if self.confirmed_at.is_none() {
            return Contribution::default();
        }
        let counted = i64::from(!self.cancelled);
        let gross = if self.captured.gross > Fen::ZERO {
            self.captured.gross
        } else {
            self.total
        };
        let spend = gross - self.refunded.gross;
        Contribution {
            tourists: counted * i64::from(self.travelers),
            bookings: counted,
            spend,
            certified_spend: if self.certified { spend } else { Fen::ZERO },
            host_income: self.captured.host - self.refunded.host,
            fund: self.captured.fund - self.refunded.fund,
        }
    }

    /// Year and month of the confirmation in China time, where the booking's
    /// figures are reported.
    pub fn period(&self) -> Option<(i32, u32)> {
        self.confirmed_on().map(|day| (day.year(), day.month()))
    }

    /// The day of the confirmation in China time: what a partnership's
    /// term is compared with.
    pub fn confirmed_on(&self) -> Option<NaiveDate> {
        self.confirmed_at.map(shared::policy::china_today)
    }
}

/// A partnership as attribution sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    /// The sponsor (帮扶方).
    pub sponsor: RegionCode,
    /// The beneficiary (受援方).
    pub beneficiary: RegionCode,
    /// Paired from this day (China time); always, when not known.
    pub since: Option<NaiveDate>,
    /// Its last day, once ended: bookings confirmed after it do not count.
    pub ended_on: Option<NaiveDate>,
    /// Withdrawn (recorded by mistake): it counts nothing.
    pub withdrawn: bool,
}

impl Pair {
    /// A pair of regions with no term (checks, tests).
    pub fn of(sponsor: RegionCode, beneficiary: RegionCode) -> Self {
        Pair {
            sponsor,
            beneficiary,
            since: None,
            ended_on: None,
            withdrawn: false,
        }
    }

    /// Whether a booking from `sponsor` to a listing in `listing`,
    /// confirmed on `day` (China time), counts here: the regions match and
    /// the day lies in the partnership's term — from `since` through
    /// `ended_on`, both included (as an agreement's term) — and the pair
    /// was not withdrawn.
    pub fn credits(&self, sponsor: RegionCode, listing: RegionCode, day: NaiveDate) -> bool {
        !self.withdrawn
            && self.sponsor.contains(sponsor)
            && self.beneficiary.contains(listing)
            && self.since.is_none_or(|since| since <= day)
            && self.ended_on.is_none_or(|end| day <= end)
    }

    /// What a booking contributes here given its facts: all of it when the
    /// pair credits it, nothing otherwise (not confirmed, other regions,
    /// outside the term).
    pub fn share(&self, facts: &Facts) -> Contribution {
        match (facts.sponsor, facts.listing, facts.confirmed_on()) {
            (Some(sponsor), Some(listing), Some(day)) if self.credits(sponsor, listing, day) => {
                facts.contribution()
            }
            _ => Contribution::default(),
        }
    }

    /// Checks a new pair: two different regions, neither inside the other.
    pub fn validate(&self) -> Result<(), AppError> {
        if self.sponsor == self.beneficiary {
            return Err(AppError::bad_input("a region cannot be paired with itself"));
        }
        if self.sponsor.contains(self.beneficiary) || self.beneficiary.contains(self.sponsor) {
            return Err(AppError::bad_input(format!(
                "{} and {} lie one inside the other; a partnership pairs separate regions",
                self.sponsor, self.beneficiary
            )));
        }
        Ok(())
    }
}

/// Progress of `actual` against `target` for `year`, judged at `on`: the
/// target is spread evenly over the year's days gone by before `on` (on 1
/// January none is due; on 31 December all but a day's share), a past
/// year must have reached it.
pub fn progress(actual: i64, target: i64, year: i32, on: NaiveDate) -> TargetProgress {
    let percent = if target > 0 {
        actual as f64 * 100.0 / target as f64
    } else {
        100.0
    };
    // The days gone by of the year's: today is not over (it was counted
    // gone, so every pair with a target read off track from the first
    // second of the year).
    let days = NaiveDate::from_ymd_opt(year, 12, 31).map_or(365, |d| d.ordinal());
    let gone = if on.year() > year {
        days
    } else if on.year() < year {
        0
    } else {
        on.ordinal0()
    };
    TargetProgress {
        actual,
        target,
        percent,
        // In whole numbers: 365 × (29 / 365) in floats is 29.000000000000004,
        // and 29 of a due 29 read off track.
        on_track: i128::from(actual) * i128::from(days) >= i128::from(target) * i128::from(gone),
    }
}

/// The years partnerships are recorded and reported for.
pub const YEARS: std::ops::RangeInclusive<i32> = shared::policy::YEARS;

/// Checks an agreement's signatories (at most 20 names of 1 to 100
/// characters) and that it was signed by `today` (China time) within
/// [`YEARS`].
pub fn validate_signing(
    signatories: &[String],
    signed_on: chrono::NaiveDate,
    today: chrono::NaiveDate,
) -> Result<(), AppError> {
    use chrono::Datelike;
    if signatories.len() > 20 {
        return Err(AppError::bad_input("signatories: at most 20 names"));
    }
    for (i, name) in signatories.iter().enumerate() {
        shared::text::check_line("signatories", name, 100, true)?;
        if signatories[..i].iter().any(|n| n.trim() == name.trim()) {
            return Err(AppError::bad_input(format!(
                "signatories: `{}` is named twice",
                name.trim()
            )));
        }
    }
    if signed_on > today || !YEARS.contains(&signed_on.year()) {
        return Err(AppError::bad_input(format!(
            "signedOn {signed_on}: an agreement is recorded once signed, on a day from {} to today",
            YEARS.start()
        )));
    }
    Ok(())
}

/// A year's targets from a partnership's agreements (oldest first), one
/// indicator at a time: each from the newest agreement that sets it for
/// that year. A supplementary agreement adding a training target leaves
/// the framework agreement's tourist and spend targets standing; one that
/// sets a new tourist target replaces that one only. None when no
/// agreement sets anything for the year.
pub fn year_targets(agreements: &[shared::rpcs::AgreementView], year: i32) -> Option<YearTarget> {
    let mut merged: Option<YearTarget> = None;
    for t in agreements
        .iter()
        .rev()
        .flat_map(|a| a.targets.iter())
        .filter(|t| t.year == year)
    {
        let m = merged.get_or_insert_with(|| YearTarget {
            year,
            tourists: None,
            spend: None,
            certified_spend: None,
            custom: Vec::new(),
        });
        m.tourists = m.tourists.or(t.tourists);
        m.spend = m.spend.or(t.spend);
        m.certified_spend = m.certified_spend.or(t.certified_spend);
        for c in &t.custom {
            if !m.custom.iter().any(|k| k.name.trim() == c.name.trim()) {
                m.custom.push(c.clone());
            }
        }
    }
    merged
}

/// Refuses agreements (as stored: by `starts_on`, then id) whose merged
/// targets ([`year_targets`]) for one of `years` would put certified spend
/// above spend: each agreement is checked alone when recorded, but a
/// supplementary one setting only certified spend, or only a lower spend,
/// could break the rule in the year the report reads.
pub fn merged_targets_hold(
    agreements: &[shared::rpcs::AgreementView],
    years: impl IntoIterator<Item = i32>,
) -> Result<(), AppError> {
    match merged_contradiction(agreements, years) {
        Some((year, certified, spend)) => Err(AppError::bad_input(format!(
            "the targets for {year}: with the partnership's other agreements, certifiedSpend \
             would be {certified} and spend {spend} (the newest agreement setting each \
             decides it); certified spend is part of spend, so not more"
        ))),
        None => Ok(()),
    }
}

/// The first of `years` whose merged targets put certified spend above
/// spend, with the two: (year, certified spend, spend).
pub fn merged_contradiction(
    agreements: &[shared::rpcs::AgreementView],
    years: impl IntoIterator<Item = i32>,
) -> Option<(i32, Fen, Fen)> {
    years
        .into_iter()
        .find_map(|year| match year_targets(agreements, year) {
            Some(YearTarget {
                spend: Some(spend),
                certified_spend: Some(certified),
                ..
            }) if certified > spend => Some((year, certified, spend)),
            _ => None,
        })
}

/// Most custom indicators one year's targets name.
pub const MAX_CUSTOM: usize = 20;

/// The largest target of a custom indicator (people trained, products
/// sold, …): past it a figure is a typing slip, not a plan.
pub const MAX_CUSTOM_TARGET: f64 = 1e12;

/// The first agreement among `agreements` with a target for a year before
/// `since`, and that year: a target no booking can meet (nothing counts
/// for a pair before it began).
pub fn target_before(
    since: chrono::NaiveDate,
    agreements: &[shared::rpcs::AgreementView],
) -> Option<(&shared::rpcs::AgreementView, i32)> {
    let first = chrono::Datelike::year(&since);
    agreements.iter().find_map(|a| {
        a.targets
            .iter()
            .map(|t| t.year)
            .find(|y| *y < first)
            .map(|y| (a, y))
    })
}

/// The first year of `agreement`'s targets after `end`'s year: a target
/// no booking can meet (nothing counts for a pair after it ended).
pub fn target_after(
    end: chrono::NaiveDate,
    agreement: &shared::rpcs::AgreementView,
) -> Option<i32> {
    let last = chrono::Datelike::year(&end);
    agreement.targets.iter().map(|t| t.year).find(|y| *y > last)
}

/// Checks yearly targets — within [`YEARS`], none negative, one per year,
/// one per custom indicator (at most [`MAX_CUSTOM`] of them), names and
/// units one line of text — and gives them back with the names and units
/// trimmed, as they are compared.
pub fn validate_targets(mut targets: Vec<YearTarget>) -> Result<Vec<YearTarget>, AppError> {
    if let Some(t) = targets.iter().find(|t| !YEARS.contains(&t.year)) {
        return Err(AppError::bad_input(format!(
            "a target's year {} is not between {} and {}",
            t.year,
            YEARS.start(),
            YEARS.end()
        )));
    }
    let mut years: Vec<i32> = targets.iter().map(|t| t.year).collect();
    years.sort_unstable();
    if years.windows(2).any(|w| w[0] == w[1]) {
        return Err(AppError::bad_input("one target per year"));
    }
    for t in &targets {
        // A year named with nothing to reach would show as targets that are
        // all empty, where a report says "none" for a year without any.
        if t.tourists.is_none()
            && t.spend.is_none()
            && t.certified_spend.is_none()
            && t.custom.is_empty()
        {
            return Err(AppError::bad_input(format!(
                "the targets for {}: set tourists, spend, certifiedSpend or a custom \
                 indicator, or leave the year out",
                t.year
            )));
        }
        if t.custom.len() > MAX_CUSTOM {
            return Err(AppError::bad_input(format!(
                "the targets for {}: at most {MAX_CUSTOM} custom indicators",
                t.year
            )));
        }
        let mut names: Vec<&str> = Vec::with_capacity(t.custom.len());
        for c in &t.custom {
            shared::text::check_line("custom indicator name", &c.name, 100, true)?;
            if let Some(unit) = &c.unit {
                shared::text::check_line("custom indicator unit", unit, 20, false)?;
            }
            let name = c.name.trim();
            if names.contains(&name) {
                return Err(AppError::bad_input(format!(
                    "the targets for {}: one target per custom indicator, and `{name}` has two",
                    t.year
                )));
            }
            names.push(name);
        }
        if let Some(c) = t.custom.iter().find(|c| c.target > MAX_CUSTOM_TARGET) {
            return Err(AppError::bad_input(format!(
                "the targets for {}: `{}` at most {MAX_CUSTOM_TARGET:.0}",
                t.year,
                c.name.trim()
            )));
        }
        if let (Some(spend), Some(certified)) = (t.spend, t.certified_spend)
            && certified > spend
        {
            return Err(AppError::bad_input(format!(
                "the targets for {}: certifiedSpend ({certified}) is part of spend ({spend}), \
                 so not more",
                t.year
            )));
        }
        let negative = t.tourists.is_some_and(|n| n < 0)
            || t.spend.is_some_and(|f| f < Fen::ZERO)
            || t.certified_spend.is_some_and(|f| f < Fen::ZERO)
            || t.custom
                .iter()
                .any(|c| !c.target.is_finite() || c.target < 0.0);
        if negative {
            return Err(AppError::bad_input(format!(
                "the targets for {} must not be negative",
                t.year
            )));
        }
    }
    // Kept as they are compared: a later agreement's " 培训" replaces "培训".
    for c in targets.iter_mut().flat_map(|t| t.custom.iter_mut()) {
        c.name = c.name.trim().to_owned();
        // -0 (not below 0, so taken) is 0: shown as "-0" otherwise.
        c.target += 0.0;
        c.unit = c
            .unit
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned);
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(s: &str) -> RegionCode {
        RegionCode::parse(s).expect("code")
    }

    fn confirmed() -> Facts {
        Facts {
            sponsor: Some(code("110108")),
            listing: Some(code("150430")),
            certified: true,
            travelers: 2,
            total: Fen(76_000),
            confirmed_at: Some(Utc::now()),
            ..Facts::default()
        }
    }

    /// An agreement starting (and signed) on `starts`, to 2030, with `target`.
    fn agreement(starts: (i32, u32, u32), target: YearTarget) -> shared::rpcs::AgreementView {
        shared::rpcs::AgreementView {
            id: shared::ids::AgreementId::new(),
            partnership_id: shared::ids::PartnershipId::new(),
            title: "协议".into(),
            signed_on: NaiveDate::from_ymd_opt(starts.0, starts.1, starts.2).expect("day"),
            starts_on: NaiveDate::from_ymd_opt(starts.0, starts.1, starts.2).expect("day"),
            ends_on: NaiveDate::from_ymd_opt(2030, 12, 31).expect("day"),
            signatories: Vec::new(),
            targets: vec![target],
            withdrawal: None,
        }
    }

    #[test]
    fn each_target_of_a_year_comes_from_the_newest_agreement_that_sets_it() {
        let year = |tourists, spend: Option<i64>, custom: &[(&str, f64)]| YearTarget {
            year: 2026,
            tourists,
            spend: spend.map(Fen),
            certified_spend: None,
            custom: custom
                .iter()
                .map(|(name, target)| shared::rpcs::CustomTarget {
                    name: (*name).into(),
                    target: *target,
                    unit: None,
                })
                .collect(),
        };
        let framework = agreement(
            (2018, 6, 1),
            year(Some(10), Some(1_000_000), &[("培训", 10.0)]),
        );
        let training = agreement((2026, 6, 1), year(None, None, &[("培训", 30.0)]));
        let merged = year_targets(&[framework.clone(), training.clone()], 2026).expect("set");
        assert_eq!(
            (merged.tourists, merged.spend, merged.custom[0].target),
            (Some(10), Some(Fen(1_000_000)), 30.0),
            "a supplement adding training leaves tourists and spend standing"
        );
        let more = agreement((2026, 9, 1), year(Some(20), None, &[]));
        let merged = year_targets(&[framework, training, more], 2026).expect("set");
        assert_eq!(
            (merged.tourists, merged.spend),
            (Some(20), Some(Fen(1_000_000)))
        );
        assert_eq!(merged.custom.len(), 1);
        assert_eq!(merged.custom[0].target, 30.0);
        assert!(year_targets(&[], 2026).is_none());
    }

    #[test]
    fn merged_targets_keep_certified_spend_within_spend() {
        let spend = |spend: Option<i64>, certified: Option<i64>| YearTarget {
            year: 2026,
            tourists: None,
            spend: spend.map(Fen),
            certified_spend: certified.map(Fen),
            custom: Vec::new(),
        };
        let framework = agreement((2020, 1, 1), spend(Some(100_000), Some(50_000)));
        for (later, holds) in [
            // Only certified spend, above the framework's spend.
            (spend(None, Some(200_000)), false),
            // Only a spend below the framework's certified spend.
            (spend(Some(30_000), None), false),
            (spend(None, Some(80_000)), true),
            (spend(Some(300_000), Some(200_000)), true),
        ] {
            let supplement = agreement((2022, 1, 1), later);
            assert_eq!(
                merged_targets_hold(&[framework.clone(), supplement], [2026]).is_ok(),
                holds
            );
        }
    }

    #[test]
    fn a_cancelled_and_fully_refunded_booking_contributes_nothing() {
        let mut f = confirmed();
        f.captured = Money3 {
            gross: Fen(76_000),
            host: Fen(72_960),
            fund: Fen(760),
        };
        assert_eq!(f.contribution().tourists, 2);
        assert_eq!(f.contribution().certified_spend, Fen(76_000));
        f.cancelled = true;
        f.refunded = f.captured;
        assert!(f.contribution().is_zero(), "{:?}", f.contribution());
    }

    #[test]
    fn nothing_counts_before_the_confirmation_whatever_arrived_first() {
        let f = Facts {
            captured: Money3 {
                gross: Fen(100),
                host: Fen(96),
                fund: Fen(1),
            },
            ..Facts::default()
        };
        assert!(f.contribution().is_zero());
    }

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("date")
    }

    #[test]
    fn haidian_to_aohan_counts_for_the_district_pair_and_the_province_pair() {
        let district = Pair::of(code("110108"), code("150430"));
        let province = Pair::of(code("110000"), code("150000"));
        let other = Pair::of(code("110105"), code("150430"));
        let today = day(2026, 12, 4);
        for p in [district, province] {
            assert!(p.credits(code("110108"), code("150430"), today));
        }
        assert!(!other.credits(code("110108"), code("150430"), today));
    }

    #[test]
    fn a_booking_counts_within_the_partnership_term_only() {
        let pair = Pair {
            since: Some(day(2026, 6, 1)),
            ended_on: Some(day(2026, 12, 1)),
            ..Pair::of(code("110108"), code("150430"))
        };
        let counts = |d| pair.credits(code("110108"), code("150430"), d);
        assert!(!counts(day(2026, 5, 31)), "before it began");
        assert!(counts(day(2026, 6, 1)), "on its first day");
        assert!(counts(day(2026, 12, 1)), "on the day it ended");
        assert!(!counts(day(2026, 12, 2)), "after it ended");
        let withdrawn = Pair {
            withdrawn: true,
            ..pair
        };
        assert!(!withdrawn.credits(code("110108"), code("150430"), day(2026, 6, 1)));
    }

    #[test]
    fn the_term_is_judged_by_the_day_in_china() {
        // 2026-05-31 17:00 UTC is 1 June, 01:00 in Beijing.
        let mut f = confirmed();
        f.confirmed_at = Some(
            day(2026, 5, 31)
                .and_hms_opt(17, 0, 0)
                .expect("time")
                .and_utc(),
        );
        let pair = Pair {
            since: Some(day(2026, 6, 1)),
            ..Pair::of(code("110108"), code("150430"))
        };
        assert_eq!(pair.share(&f), f.contribution());
        let later = Pair {
            since: Some(day(2026, 6, 2)),
            ..pair
        };
        assert!(later.share(&f).is_zero());
    }

    #[test]
    fn a_region_is_not_paired_with_itself_or_its_ancestor() {
        let pair = |a, b| Pair::of(code(a), code(b));
        assert!(pair("150430", "150430").validate().is_err());
        assert!(pair("150000", "150430").validate().is_err());
        assert!(pair("150430", "150400").validate().is_err());
        assert!(pair("110108", "150430").validate().is_ok());
    }

    #[test]
    fn progress_is_judged_against_the_share_of_the_year_gone_by() {
        let mid = NaiveDate::from_ymd_opt(2026, 7, 1).expect("date");
        assert!(progress(50, 100, 2026, mid).on_track);
        assert!(!progress(40, 100, 2026, mid).on_track);
        assert!(!progress(99, 100, 2025, mid).on_track);
        assert!(progress(0, 100, 2027, mid).on_track);
        assert_eq!(progress(25, 100, 2026, mid).percent, 25.0);
        // The days before today: on 1 January nothing is due yet, on 31
        // December all but its own day.
        let (first, last) = (
            NaiveDate::from_ymd_opt(2027, 1, 1).expect("date"),
            NaiveDate::from_ymd_opt(2026, 12, 31).expect("date"),
        );
        assert!(progress(0, 2000, 2027, first).on_track);
        assert!(progress(3650 - 10, 3650, 2026, last).on_track);
        assert!(!progress(3650 - 11, 3650, 2026, last).on_track);
        // Exactly the share due, which floats put a hair above it.
        let thirtieth = NaiveDate::from_ymd_opt(2026, 1, 30).expect("date");
        assert!(progress(29, 365, 2026, thirtieth).on_track);
        assert!(!progress(28, 365, 2026, thirtieth).on_track);
        // A leap year's 366 days.
        let leap = NaiveDate::from_ymd_opt(2028, 1, 26).expect("date");
        assert!(progress(25, 366, 2028, leap).on_track);
    }

    #[test]
    fn a_custom_target_of_minus_zero_is_zero() {
        let targets = validate_targets(vec![YearTarget {
            year: 2027,
            tourists: None,
            spend: None,
            certified_spend: None,
            custom: vec![shared::rpcs::CustomTarget {
                name: "培训".into(),
                target: -0.0,
                unit: None,
            }],
        }])
        .expect("taken");
        let target = targets[0].custom[0].target;
        assert!(target == 0.0 && target.is_sign_positive(), "{target}");
    }
}

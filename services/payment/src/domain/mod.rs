//! Ledger rules, without I/O.

use shared::ids::{AgencyId, HostId};
use shared::money::{Fen, Split};

/// The traveler clearing account: money in from travelers.
pub const CLEARING: &str = "traveler_clearing";
/// Platform revenue.
pub const PLATFORM: &str = "platform_revenue";
/// The public welfare fund (公益基金).
pub const FUND: &str = "welfare_fund";

/// Money paid out to hosts' bank accounts.
pub const PAYOUTS: &str = "payouts_bank";

/// The commission payable account of an agency.
pub fn agency_account(agency: AgencyId) -> String {
    format!("agency:{agency}")
}

/// The payable account of a host.
pub fn host_account(host: HostId) -> String {
    format!("host:{host}")
}

/// The legs of a capture: clearing pays out to host, platform, fund (and
/// agency). They sum to exactly zero because the split sums to the gross.
pub fn capture_legs(split: &Split, host: HostId, agency: Option<AgencyId>) -> Vec<(String, Fen)> {
    let mut legs = vec![
        (CLEARING.to_owned(), -split.gross),
        (host_account(host), split.host),
        (PLATFORM.to_owned(), split.platform),
        (FUND.to_owned(), split.fund),
    ];
    if split.agency != Fen::ZERO {
        // A commission without an agency would be a bug upstream; it stays
        // visible on a suspense account rather than unbalancing the books.
        let account = agency.map_or_else(|| "agency:unknown".to_owned(), agency_account);
        legs.push((account, split.agency));
    }
    legs
}

/// The legs of a refund: the exact reverse of the capture's legs for the
/// reversed part of the split.
pub fn refund_legs(reversed: &Split, host: HostId, agency: Option<AgencyId>) -> Vec<(String, Fen)> {
    capture_legs(reversed, host, agency)
        .into_iter()
        .map(|(account, amount)| (account, Fen::ZERO - amount))
        .collect()
}

/// How far behind the clocks the hosts' mark stays at least: an entry is
/// stamped with its process's clock as it is inserted, no earlier than the
/// mark (and the database refuses one stamped before it), but one inserted
/// before a run moved the mark past it and committed after would be left
/// out of every balance. An hour is far past any posting's transaction
/// (an idle one is ended after ten minutes: `shared::db`) and any clock
/// drift between replicas; `duikou check` compares the marks with the
/// entries.
pub const MARK_BEHIND: chrono::Duration = chrono::Duration::hours(1);

/// Where a payout run over entries before `up_to` moves the hosts' mark:
/// to `up_to`, but [`MARK_BEHIND`] behind this replica's clock (`here`)
/// and the database's (`database`), whichever is earlier — either running
/// fast would put the mark past entries others are still stamping.
pub fn host_mark(
    up_to: chrono::DateTime<chrono::Utc>,
    here: chrono::DateTime<chrono::Utc>,
    database: chrono::DateTime<chrono::Utc>,
) -> chrono::DateTime<chrono::Utc> {
    up_to.min(here - MARK_BEHIND).min(database - MARK_BEHIND)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::money::SplitRates;

    #[test]
    fn the_hosts_mark_stays_an_hour_behind_both_clocks() {
        use chrono::TimeZone;
        let at = |h, m| {
            chrono::Utc
                .with_ymd_and_hms(2026, 12, 7, h, m, 0)
                .single()
                .expect("time")
        };
        // A run over a past period: its end.
        assert_eq!(host_mark(at(8, 0), at(12, 0), at(12, 0)), at(8, 0));
        // Up to now: an hour ago.
        assert_eq!(host_mark(at(12, 0), at(12, 0), at(12, 0)), at(11, 0));
        // This replica's clock ten minutes fast, or the database's: an hour
        // behind the slower one.
        assert_eq!(host_mark(at(12, 10), at(12, 10), at(12, 0)), at(11, 0));
        assert_eq!(host_mark(at(12, 0), at(12, 0), at(12, 10)), at(11, 0));
    }

    #[test]
    fn a_capture_posts_legs_that_sum_to_zero() {
        let split = Split::of(Fen(38_001), SplitRates::default());
        let legs = capture_legs(&split, HostId::new(), None);
        assert_eq!(legs.iter().map(|(_, a)| *a).sum::<Fen>(), Fen::ZERO);
        assert_eq!(legs[0].1, Fen(-38_001));
    }

    proptest::proptest! {
        /// Any gross, any rates, an agency or none, refunded in any number
        /// of parts that add up to the gross: every account the capture
        /// touched ends at exactly zero, and each transaction balances.
        #[test]
        fn capture_then_refunds_in_parts_leave_every_account_at_zero(
            gross in 1i64..10_000_000_000,
            platform in 0u32..2_000,
            fund in 0u32..2_000,
            agency_bp in 0u32..3_000,
            with_agency in proptest::bool::ANY,
            cuts in proptest::collection::vec(0i64..10_000, 0..6),
        ) {
            let agency = with_agency.then(AgencyId::new);
            let rates = SplitRates { platform_bp: platform, fund_bp: fund, agency_bp: if with_agency { agency_bp } else { 0 } };
            let split = Split::of(Fen(gross), rates);
            let host = HostId::new();
            let mut accounts = std::collections::BTreeMap::<String, Fen>::new();
            let mut post = |legs: Vec<(String, Fen)>| {
                proptest::prop_assert_eq!(legs.iter().map(|(_, a)| *a).sum::<Fen>(), Fen::ZERO);
                for (account, amount) in legs {
                    *accounts.entry(account).or_insert(Fen::ZERO) += amount;
                }
                Ok(())
            };
            post(capture_legs(&split, host, agency))?;
            let mut marks: Vec<Fen> = cuts.iter().map(|c| Fen(gross).scale(*c, 10_000)).collect();
            marks.extend([Fen::ZERO, Fen(gross)]);
            marks.sort();
            for w in marks.windows(2) {
                post(refund_legs(&split.reversal(w[0], w[1]), host, agency))?;
            }
            for (account, balance) in &accounts {
                proptest::prop_assert_eq!(*balance, Fen::ZERO, "{}", account);
            }
        }
    }

    #[test]
    fn a_full_refund_posts_the_exact_reverse_of_the_capture() {
        let split = Split::of(Fen(38_001), SplitRates::default());
        let host = HostId::new();
        let capture = capture_legs(&split, host, None);
        let refund = refund_legs(&split.reversal(Fen::ZERO, split.gross), host, None);
        for ((a, x), (b, y)) in capture.iter().zip(&refund) {
            assert_eq!((a, *x), (b, Fen::ZERO - *y));
        }
    }
}

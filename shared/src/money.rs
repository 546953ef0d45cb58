//! Money: integer fen (分) inside, a decimal string outside.
//!
//! All amounts are CNY. `Fen` never holds a fraction, so sums are exact; the
//! only place rounding happens is [`Split::of`], and its remainder goes to the
//! host so the parts always add up to the gross.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Neg, Sub};
use std::str::FromStr;

/// The only currency Duikou sells in.
pub const CURRENCY: &str = "CNY";

/// The highest price of one night of a room or one seat of a departure, a
/// million yuan: every total a booking can reach (rooms × nights, seats)
/// stays far inside `i64`.
pub const MAX_PRICE: Fen = Fen::yuan(1_000_000);

/// Checks a price a listing asks, given as `field`: more than zero, at
/// most [`MAX_PRICE`].
pub fn check_price(field: &str, price: Fen) -> Result<(), crate::AppError> {
    if price <= Fen::ZERO || price > MAX_PRICE {
        return Err(crate::AppError::bad_input(format!(
            "{field}: more than zero and at most {MAX_PRICE}"
        )));
    }
    Ok(())
}

/// An amount of money in fen (1/100 yuan). May be negative (ledger legs).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Fen(pub i64);

impl Fen {
    /// Zero fen.
    pub const ZERO: Fen = Fen(0);

    /// Whole yuan.
    pub const fn yuan(y: i64) -> Fen {
        Fen(y * 100)
    }

    /// The raw number of fen.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// Multiplies by a count (nights, rooms, travelers); `None` on overflow.
    pub fn checked_mul(self, n: i64) -> Option<Fen> {
        self.0.checked_mul(n).map(Fen)
    }

    /// `self * basis_points / 10_000`, rounded down (towards zero).
    pub fn share_bp(self, basis_points: u32) -> Fen {
        Fen(((self.0 as i128 * basis_points as i128) / 10_000) as i64)
    }

    /// `self * num / den`, rounded towards zero; `den` must not be zero.
    pub fn scale(self, num: i64, den: i64) -> Fen {
        if den == 0 {
            return Fen::ZERO;
        }
        Fen(((self.0 as i128 * num as i128) / den as i128) as i64)
    }
}

impl Add for Fen {
    type Output = Fen;
    fn add(self, rhs: Fen) -> Fen {
        Fen(self.0 + rhs.0)
    }
}

impl AddAssign for Fen {
    fn add_assign(&mut self, rhs: Fen) {
        self.0 += rhs.0;
    }
}

impl Sub for Fen {
    type Output = Fen;
    fn sub(self, rhs: Fen) -> Fen {
        Fen(self.0 - rhs.0)
    }
}

impl Neg for Fen {
    type Output = Fen;
    fn neg(self) -> Fen {
        Fen(-self.0)
    }
}

impl Sum for Fen {
    fn sum<I: Iterator<Item = Fen>>(iter: I) -> Fen {
        iter.fold(Fen::ZERO, Add::add)
    }
}

/// Shows fen as a decimal yuan string: `12345` → `"123.45"`, `-5` → `"-0.05"`.
impl fmt::Display for Fen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

/// Why a decimal string is not an amount of money.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadAmount {
    /// Not digits with at most two after a point.
    #[error("`{0}` is not an amount of yuan with at most two decimals")]
    Form(String),
    /// Written well, but more fen than an amount holds.
    #[error("`{0}` is more yuan than any amount can be")]
    TooLarge(String),
}

/// Parses a decimal yuan string with at most two decimals: `"123.4"` → 12340
/// fen. Digits only, and some after a point if it has one: not `" 1"` nor
/// `"1."`.
impl FromStr for Fen {
    type Err = BadAmount;
    fn from_str(s: &str) -> Result<Fen, BadAmount> {
        let bad = || BadAmount::Form(s.to_owned());
        let (neg, digits) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (whole, frac) = match digits.split_once('.') {
            Some((_, "")) => return Err(bad()),
            Some(parts) => parts,
            None => (digits, ""),
        };
        if whole.is_empty()
            || frac.len() > 2
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let too_large = || BadAmount::TooLarge(s.to_owned());
        let whole: i64 = whole.parse().map_err(|_| too_large())?;
        let frac: i64 = format!("{frac:0<2}").parse().map_err(|_| bad())?;
        let fen = whole
            .checked_mul(100)
            .and_then(|w| w.checked_add(frac))
            .ok_or_else(too_large)?;
        Ok(Fen(if neg { -fen } else { fen }))
    }
}

/// Rates applied to each sale, in basis points (1 bp = 0.01 %).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitRates {
    /// Platform fee, default 300 bp (3 %).
    pub platform_bp: u32,
    /// Welfare fund donation, default 100 bp (1 %).
    pub fund_bp: u32,
    /// Agency commission from the agency's contract; 0 for a traveler's own booking.
    pub agency_bp: u32,
}

impl Default for SplitRates {
    fn default() -> Self {
        SplitRates {
            platform_bp: 300,
            fund_bp: 100,
            agency_bp: 0,
        }
    }
}

/// How a gross amount is shared out. `host + platform + fund + agency == gross`, always.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    /// What the traveler paid.
    pub gross: Fen,
    /// Owed to the host household, cooperative or village collective.
    pub host: Fen,
    /// Platform revenue.
    pub platform: Fen,
    /// Donation to the public welfare fund (公益基金).
    pub fund: Fen,
    /// Commission owed to the booking agency (zero without one).
    pub agency: Fen,
}

impl Split {
    /// Splits `gross` by `rates`: each share rounds down, the host gets the
    /// remainder, so the parts sum to `gross` exactly.
    pub fn of(gross: Fen, rates: SplitRates) -> Split {
        let platform = gross.share_bp(rates.platform_bp);
        let fund = gross.share_bp(rates.fund_bp);
        let agency = gross.share_bp(rates.agency_bp);
        Split {
            gross,
            host: gross - platform - fund - agency,
            platform,
            fund,
            agency,
        }
    }

    /// The part of this split that a refund of `refund` (≤ gross) reverses,
    /// each share within two fen of refund/gross of it, and refunding the
    /// whole gross reverses exactly the original split.
    ///
    /// The shares are nested so that each of them only grows, by at most the
    /// refund's own growth, as `refund` grows: first what is not the host's
    /// (`others`), then the platform's part of that, then the fund's part of
    /// the rest; the agency and the host take the remainders. A later partial
    /// refund ([`Split::reversal`]) therefore never credits one share while
    /// debiting another: separate roundings of each share could take three
    /// fen from the platform, fund and agency for a refund of one fen and
    /// credit the host two.
    pub fn portion(&self, refund: Fen) -> Split {
        let others = self.platform + self.fund + self.agency;
        let taken = others.scale(refund.0, self.gross.0);
        let platform = self.platform.scale(taken.0, others.0);
        let rest = taken - platform;
        let fund = self.fund.scale(rest.0, (self.fund + self.agency).0);
        Split {
            gross: refund,
            host: refund - taken,
            platform,
            fund,
            agency: rest - fund,
        }
    }

    /// The part of this split reversed by a refund that takes the refunded
    /// total from `before` to `after` (both ≤ gross): the difference of the
    /// two portions, so partial refunds that add up to the gross reverse
    /// exactly the original split, whatever their rounding.
    pub fn reversal(&self, before: Fen, after: Fen) -> Split {
        let (a, b) = (self.portion(after), self.portion(before));
        Split {
            gross: a.gross - b.gross,
            host: a.host - b.host,
            platform: a.platform - b.platform,
            fund: a.fund - b.fund,
            agency: a.agency - b.agency,
        }
    }

    /// Sum of the parts (equals `gross` by construction).
    pub fn total(&self) -> Fen {
        self.host + self.platform + self.fund + self.agency
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fen_prints_and_parses_as_yuan() {
        assert_eq!(Fen(12345).to_string(), "123.45");
        assert_eq!(Fen(-5).to_string(), "-0.05");
        assert_eq!("123.4".parse::<Fen>(), Ok(Fen(12340)));
        assert_eq!("7".parse::<Fen>(), Ok(Fen(700)));
        assert!("1.234".parse::<Fen>().is_err());
        assert!("abc".parse::<Fen>().is_err());
        assert!(".5".parse::<Fen>().is_err());
        // Well written but past i64's fen: said to be too large.
        for huge in ["99999999999999999.99", "92233720368547758.08"] {
            assert_eq!(
                huge.parse::<Fen>(),
                Err(BadAmount::TooLarge(huge.to_owned()))
            );
        }
        assert_eq!("92233720368547758.07".parse::<Fen>(), Ok(Fen(i64::MAX)));
        for loose in [" 1", "1 ", "1."] {
            assert!(loose.parse::<Fen>().is_err(), "{loose}");
        }
    }

    #[test]
    fn the_host_takes_the_rounding_remainder() {
        let s = Split::of(Fen(999), SplitRates::default());
        assert_eq!(
            (s.platform, s.fund, s.agency, s.host),
            (Fen(29), Fen(9), Fen(0), Fen(961))
        );
    }

    #[test]
    fn refunds_of_one_fen_at_a_time_never_credit_a_share() {
        for gross in [1, 7, 99, 999, 12_345] {
            for agency_bp in [0, 800, 1500] {
                let s = Split::of(
                    Fen(gross),
                    SplitRates {
                        agency_bp,
                        ..SplitRates::default()
                    },
                );
                for r in 0..gross {
                    let step = s.reversal(Fen(r), Fen(r + 1));
                    let parts = [step.host, step.platform, step.fund, step.agency];
                    assert!(
                        parts.iter().all(|p| *p >= Fen::ZERO),
                        "{s:?} at {r}: {step:?}"
                    );
                }
            }
        }
    }

    proptest! {
        #[test]
        fn a_split_always_sums_to_the_gross(gross in 0i64..10_000_000_000, p in 0u32..2000, f in 0u32..2000, a in 0u32..3000) {
            let s = Split::of(Fen(gross), SplitRates { platform_bp: p, fund_bp: f, agency_bp: a });
            prop_assert_eq!(s.total(), Fen(gross));
            prop_assert!(s.host >= Fen::ZERO);
        }

        #[test]
        fn a_refund_portion_sums_and_a_full_refund_reverses_exactly(gross in 1i64..10_000_000_000, r in 0i64..10_000, p in 0u32..2000, f in 0u32..2000, a in 0u32..3000) {
            let s = Split::of(Fen(gross), SplitRates { platform_bp: p, fund_bp: f, agency_bp: a });
            let refund = Fen(gross).scale(r, 10_000);
            let part = s.portion(refund);
            prop_assert_eq!(part.total(), refund);
            prop_assert!(part.platform <= s.platform && part.fund <= s.fund && part.agency <= s.agency);
            for (share, whole) in [(part.platform, s.platform), (part.fund, s.fund), (part.agency, s.agency)] {
                let exact = whole.get() as f64 * refund.get() as f64 / gross as f64;
                prop_assert!((share.get() as f64 - exact).abs() <= 2.0, "{:?} of {:?}", part, s);
            }
            prop_assert_eq!(s.portion(Fen(gross)), s);
        }

        #[test]
        fn partial_refunds_up_to_the_gross_reverse_the_split_exactly(gross in 1i64..10_000_000_000, cuts in proptest::collection::vec(0i64..10_000, 0..6), a in 0u32..3000) {
            let s = Split::of(Fen(gross), SplitRates { agency_bp: a, ..SplitRates::default() });
            let mut marks: Vec<Fen> = cuts.iter().map(|c| Fen(gross).scale(*c, 10_000)).collect();
            marks.push(Fen::ZERO);
            marks.push(Fen(gross));
            marks.sort();
            let mut sum = Split { gross: Fen::ZERO, host: Fen::ZERO, platform: Fen::ZERO, fund: Fen::ZERO, agency: Fen::ZERO };
            for w in marks.windows(2) {
                let r = s.reversal(w[0], w[1]);
                prop_assert_eq!(r.total(), r.gross);
                prop_assert!(r.host >= Fen::ZERO && r.platform >= Fen::ZERO && r.fund >= Fen::ZERO && r.agency >= Fen::ZERO, "{:?}", r);
                sum = Split { gross: sum.gross + r.gross, host: sum.host + r.host, platform: sum.platform + r.platform, fund: sum.fund + r.fund, agency: sum.agency + r.agency };
            }
            prop_assert_eq!(sum, s);
        }
    }
}

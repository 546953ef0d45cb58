//! Reports as CSV (UTF-8, a header row, yuan with two decimals).

use shared::region::RegionCode;
use shared::rpcs::{Figures, PartnershipView};

const HEADER: [&str; 6] = [
    "tourists",
    "bookings",
    "spend_yuan",
    "certified_spend_yuan",
    "host_income_yuan",
    "fund_yuan",
];

fn row(first: &str, f: &Figures) -> Vec<String> {
    vec![
        first.to_owned(),
        f.tourists.to_string(),
        f.bookings.to_string(),
        f.spend.to_string(),
        f.certified_spend.to_string(),
        f.host_income.to_string(),
        f.fund.to_string(),
    ]
}

fn finish(w: csv::Writer<Vec<u8>>) -> Result<String, csv::Error> {
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// A partnership's year: one row per month with activity, then the year's
/// total (period `YYYY`).
pub fn partnership_csv(
    p: &PartnershipView,
    year: i32,
    monthly: &[(u32, Figures)],
    totals: &Figures,
) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["sponsor", "beneficiary", "period"];
    header.extend(HEADER);
    w.write_record(&header)?;
    let periods = monthly
        .iter()
        .map(|(month, f)| (format!("{year}-{month:02}"), f))
        .chain(std::iter::once((year.to_string(), totals)));
    for (period, f) in periods {
        let mut r = vec![p.sponsor.to_string(), p.beneficiary.to_string()];
        r.extend(row(&period, f));
        w.write_record(&r)?;
    }
    finish(w)
}

/// A region's year as sponsor and as beneficiary.
pub fn region_csv(
    region: RegionCode,
    year: i32,
    as_sponsor: &Figures,
    as_beneficiary: &Figures,
) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["region", "year", "side"];
    header.extend(HEADER);
    w.write_record(&header)?;
    for (side, f) in [("sponsor", as_sponsor), ("beneficiary", as_beneficiary)] {
        let mut r = vec![region.to_string(), year.to_string()];
        r.extend(row(side, f));
        w.write_record(&r)?;
    }
    finish(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::money::Fen;

    #[test]
    fn a_region_report_is_csv_with_a_header() {
        let f = Figures {
            tourists: 2,
            bookings: 1,
            spend: Fen(76_000),
            ..Figures::default()
        };
        let csv = region_csv(
            RegionCode::parse("110108").expect("code"),
            2026,
            &f,
            &Figures::default(),
        )
        .expect("csv");
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "region,year,side,tourists,bookings,spend_yuan,certified_spend_yuan,host_income_yuan,fund_yuan"
        );
        assert_eq!(lines[1], "110108,2026,sponsor,2,1,760.00,0.00,0.00,0.00");
    }
}

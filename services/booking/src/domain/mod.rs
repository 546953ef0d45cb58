//! Booking rules, without I/O: validation at the edge and the status machine.

pub mod sold_out;

use chrono::{DateTime, Datelike, Utc};
use sha2::{Digest, Sha256};
use shared::AppError;
use shared::events::HoldItem;
use shared::money::Fen;
use shared::rpcs::{BookingView, CancellationQuote, CreateBooking, IdType, TravelerInput};

/// Booking status, as DESIGN.md names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Waiting for inventory's answer to the hold.
    Pending,
    /// Held; payment due before `expires_at`.
    AwaitingPayment,
    /// Paid and held for good.
    Confirmed,
    /// Inventory could not hold it.
    Rejected,
    /// Not paid in time; the hold was released.
    Expired,
    /// Cancelled by the booker.
    Cancelled,
}

impl Status {
    /// The status stored under `name`.
    pub fn parse(name: &str) -> Option<Status> {
        [
            Status::Pending,
            Status::AwaitingPayment,
            Status::Confirmed,
            Status::Rejected,
            Status::Expired,
            Status::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }

    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::AwaitingPayment => "AWAITING_PAYMENT",
            Status::Confirmed => "CONFIRMED",
            Status::Rejected => "REJECTED",
            Status::Expired => "EXPIRED",
            Status::Cancelled => "CANCELLED",
        }
    }
}

pub use shared::rpcs::MAX_TRAVELERS;
/// Longest note to the host on a booking.
pub const MAX_NOTES: usize = 1_000;

/// Validates a resident ID (GB 11643): 17 digits and an ISO 7064 MOD 11-2 check character.
pub fn resident_id_is_valid(id: &str) -> bool {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: &[u8; 11] = b"10X98765432";
    let bytes = id.as_bytes();
    if bytes.len() != 18 || !bytes[..17].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = bytes[..17]
        .iter()
        .zip(WEIGHTS)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    bytes[17].to_ascii_uppercase() == CHECK[(sum % 11) as usize]
}

/// Why `id` cannot be a resident ID number, if it cannot: besides its form
/// and checksum ([`resident_id_is_valid`]), no address code (its first six
/// digits) begins with 0, and digits 7 to 14 are a birth date: a day from
/// 1900 to `today`.
pub fn resident_id_refusal(id: &str, today: chrono::NaiveDate) -> Option<&'static str> {
    if !resident_id_is_valid(id) {
        return Some("18 characters, 17 digits and a check character, by the GB 11643 checksum");
    }
    if id.starts_with('0') {
        return Some("no address code begins with 0");
    }
    let part = |range: std::ops::Range<usize>| id[range].parse::<u32>().ok();
    let born = match (part(6..10), part(10..12), part(12..14)) {
        (Some(y), Some(m), Some(d)) => i32::try_from(y)
            .ok()
            .and_then(|y| chrono::NaiveDate::from_ymd_opt(y, m, d)),
        _ => None,
    };
    match born {
        Some(day) if day.year() >= 1900 && day <= today => None,
        _ => Some("digits 7 to 14 are the birth date, a day from 1900 to today"),
    }
}

/// A document number as a booking's readers see it: all but its last
/// characters starred (four of a resident ID's eighteen, fewer of a short
/// passport number: never more than half).
pub fn masked(id_number: &str) -> String {
    let chars: Vec<char> = id_number.trim().chars().collect();
    let starred = chars.len() - (chars.len() / 2).min(4);
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| if i < starred { '*' } else { *c })
        .collect()
}

/// Who travels on a booking, as its readers see them.
pub fn guests(
    travelers: Vec<TravelerInput>,
    contact: shared::rpcs::ContactInput,
    notes: Option<String>,
) -> shared::rpcs::BookingGuests {
    shared::rpcs::BookingGuests {
        travelers: travelers
            .into_iter()
            .map(|t| shared::rpcs::TravelerView {
                id_number: masked(&t.id_number),
                name: t.name.trim().to_owned(),
                id_type: t.id_type,
            })
            .collect(),
        contact,
        notes,
    }
}

/// A 港澳居民来往内地通行证 number: H or M, then 8 digits, or 10 (a card
/// before 2013 carried a 2-digit issue count after them).
fn hk_macao_permit(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some('H' | 'M'))
        && matches!(id.len(), 9 | 11)
        && chars.all(|c| c.is_ascii_digit())
}

/// The form of a Hong Kong identity card number (`A123456(7)`: one or two
/// letters, six digits, a check digit or A, in brackets or not), which a
/// Hong Kong resident may type where a mainland resident ID goes.
fn hong_kong_identity_card(id: &str) -> bool {
    let id: String = id.chars().filter(|c| !matches!(c, '(' | ')')).collect();
    let letters = id.chars().take_while(char::is_ascii_uppercase).count();
    let rest = &id[letters..];
    matches!(letters, 1 | 2)
        && rest.len() == 7
        && rest[..6].chars().all(|c| c.is_ascii_digit())
        && rest[6..].chars().all(|c| c.is_ascii_digit() || c == 'A')
}

/// A 台湾居民来往大陆通行证 number: 8 digits, or 10 on an older booklet.
fn taiwan_permit(id: &str) -> bool {
    matches!(id.len(), 8 | 10) && id.chars().all(|c| c.is_ascii_digit())
}

fn check_traveler(i: usize, t: &TravelerInput) -> Result<(), AppError> {
    let n = i + 1;
    shared::text::check_line(&format!("traveler {n}: name"), &t.name, 100, true)?;
    match t.id_type {
        IdType::ResidentId => match resident_id_refusal(
            t.id_number.trim(),
            shared::policy::china_today(chrono::Utc::now()),
        ) {
            Some(why) => Err(AppError::bad_input(format!(
                "traveler {n}: `{}` is not a valid resident ID number ({why}){}",
                t.id_number,
                if hong_kong_identity_card(&t.id_number) {
                    "; it looks like a Hong Kong identity card: on the mainland a Hong Kong \
                     resident travels on the 港澳居民来往内地通行证 (HK_MACAO_PERMIT)"
                } else {
                    ""
                }
            ))),
            None => Ok(()),
        },
        IdType::Passport
            if !(5..=20).contains(&t.id_number.trim().len())
                || !t
                    .id_number
                    .trim()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric()) =>
        {
            Err(AppError::bad_input(format!(
                "traveler {n}: a passport number is 5 to 20 letters and digits"
            )))
        }
        IdType::HkMacaoPermit if !hk_macao_permit(t.id_number.trim()) => {
            Err(AppError::bad_input(format!(
                "traveler {n}: a Hong Kong or Macao permit number (港澳居民来往内地通行证) is H \
                 or M and 8 digits (10 on older cards)"
            )))
        }
        IdType::TaiwanPermit if !taiwan_permit(t.id_number.trim()) => {
            Err(AppError::bad_input(format!(
                "traveler {n}: a Taiwan permit number (台湾居民来往大陆通行证) is 8 digits (10 \
                 on older booklets)"
            )))
        }
        _ => Ok(()),
    }
}

/// Puts a create request in the one form it is stored, compared and
/// fingerprinted in: names trimmed and composed (NFC: "Renée" typed with
/// a combining accent is the name on the passport, and counts its letters
/// as such), document numbers without spaces and in capitals (a resident ID's
/// check character `x` is `X`), document numbers and the phone with their
/// full-width characters (`１３８００１３８０００`, as a Chinese input method
/// types them) as the ASCII ones they stand for (NFKC), the contact's
/// email trimmed and in lower case, blank email and notes left out.
pub fn normalise(req: &mut CreateBooking) {
    use unicode_normalization::UnicodeNormalization;
    let name = |name: &str| name.trim().nfc().collect::<String>();
    for t in &mut req.travelers {
        t.name = name(&t.name);
        // Spaces inside too: numbers are printed in groups (`H 1234 5678`)
        // and no document's number holds one.
        t.id_number = t
            .id_number
            .nfkc()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_uppercase();
    }
    req.contact.name = name(&req.contact.name);
    req.contact.phone = req
        .contact
        .phone
        .nfkc()
        .collect::<String>()
        .trim()
        .to_owned();
    // As an account's address is kept: full-width forms (an input
    // method's `ｏｐｓ＠ｅｘａｍｐｌｅ．ｃｎ`) as the ASCII they stand for, so
    // that a host can write to it; one that is no address stays as typed
    // for `validate` to refuse.
    req.contact.email = req
        .contact
        .email
        .take()
        .map(|e| shared::text::normalise_email(&e).unwrap_or_else(|_| e.trim().to_lowercase()))
        .filter(|e| !e.is_empty());
    req.notes = req
        .notes
        .take()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty());
}

/// Validates a create request at the edge ([`normalise`]d first); the saga
/// never re-checks.
pub fn validate(req: &CreateBooking) -> Result<(), AppError> {
    if req.commission_bp > 3_000 {
        return Err(AppError::bad_input("an agency commission is at most 30 %"));
    }
    shared::text::scoped_key(&req.idempotency_key)?;
    if req.travelers.is_empty() || req.travelers.len() > MAX_TRAVELERS {
        return Err(AppError::bad_input(format!(
            "travelers: a booking has 1 to {MAX_TRAVELERS} travelers"
        )));
    }
    for (i, t) in req.travelers.iter().enumerate() {
        check_traveler(i, t)?;
        if let Some(first) = req.travelers[..i]
            .iter()
            .position(|o| o.id_type == t.id_type && o.id_number == t.id_number)
        {
            return Err(AppError::bad_input(format!(
                "traveler {}: the same document as traveler {} (each traveler is one person)",
                i + 1,
                first + 1
            )));
        }
    }
    // Digits a host can dial, written as people write them: a leading +,
    // dashes and spaces between (`+86 138-0013-8000`, `0476 432 1234`).
    let phone = req.contact.phone.trim();
    let digits = phone.chars().filter(char::is_ascii_digit).count();
    let written = phone.strip_prefix('+').unwrap_or(phone);
    if !(5..=20).contains(&digits)
        || phone.chars().count() > 30
        || !written
            .chars()
            .all(|c| c.is_ascii_digit() || c == '-' || c == ' ')
        || !written.starts_with(|c: char| c.is_ascii_digit())
        || !written.ends_with(|c: char| c.is_ascii_digit())
    {
        return Err(AppError::bad_input(
            "contact.phone: 5 to 20 digits and at most 30 characters, with a + in front \
             and dashes or spaces between if you like",
        ));
    }
    shared::text::check_line("contact.name", &req.contact.name, 100, true)?;
    if let Some(email) = &req.contact.email {
        let refused =
            || AppError::bad_input(format!("contact.email: `{email}` is not an email address"));
        let email = shared::text::normalise_email(email).map_err(|_| refused())?;
        // Dotted names, none empty nor starting or ending with a dash
        // (`a@b..cn` and `a@-b.cn` reach no one).
        let domain = email.rsplit_once('@').map_or("", |(_, domain)| domain);
        if domain
            .split('.')
            .any(|l| l.is_empty() || l.starts_with('-') || l.ends_with('-'))
        {
            return Err(refused());
        }
    }
    if let Some(region) = req.sponsor_region
        && shared::region::reference_region(region).is_none()
    {
        return Err(AppError::bad_input(format!(
            "sponsorRegionCode: no region {region} in the table of regions (see `regions`)"
        )));
    }
    // The sponsor side is where the booker is from (DESIGN: the traveler's
    // or agency's home region): a declared region may say it more or less
    // exactly (海淀区 for a home in 北京市, or 北京市 for 海淀区), not name
    // another, or anyone could credit any partnership.
    if let (Some(declared), Some(home)) = (req.sponsor_region, req.by.home_region)
        && !declared.contains(home)
        && !home.contains(declared)
    {
        return Err(AppError::bad_input(format!(
            "sponsorRegionCode: {declared} is neither inside nor around your home region {home} \
             (a booking counts for where its booker is from)"
        )));
    }
    if let Some(notes) = &req.notes {
        shared::text::check("notes", notes, MAX_NOTES, false)?;
    }
    match &req.item {
        HoldItem::RoomNights {
            check_in,
            check_out,
            rooms,
            ..
        } => {
            shared::stay::StayDates::parse(*check_in, *check_out)?;
            if !(1..=shared::stay::MAX_ROOMS).contains(rooms) {
                return Err(AppError::bad_input(format!(
                    "rooms: book 1 to {} rooms",
                    shared::stay::MAX_ROOMS
                )));
            }
        }
        HoldItem::Seats { seats, .. } => {
            if *seats as usize != req.travelers.len() {
                return Err(AppError::bad_input("travelers: one seat per traveler"));
            }
        }
    }
    Ok(())
}

/// Whole days from `now` until the booking's stay or departure starts, in
/// China Standard Time (UTC+8), the calendar the policy is written in.
/// None when the start is unknown (no listing snapshot yet for seats).
pub fn days_before(view: &BookingView, now: DateTime<Utc>) -> Option<i64> {
    let start = view.starts_on()?;
    Some((start - shared::policy::china_today(now)).num_days())
}

/// The day a CONFIRMED booking's stay or departure began, once it has
/// (China time): a stay under way is no longer cancelled — its nights are
/// lived or lost, its tourist was sent — only refunded by an admin
/// (`refundPayment`). The check-in day itself still cancels (a no-show
/// that gives the night back), by the policy's share for day 0.
pub fn under_way(view: &BookingView, now: DateTime<Utc>) -> Option<chrono::NaiveDate> {
    if Status::parse(&view.status) != Some(Status::Confirmed) {
        return None;
    }
    let days = days_before(view, now)?;
    (days < 0).then(|| shared::policy::china_today(now) + chrono::Duration::days(days))
}

/// What cancelling the booking at `now` refunds, by its listing's policy,
/// or everything left when an admin cancels it for its host.
pub fn quote(view: &BookingView, now: DateTime<Utc>, for_host: bool) -> CancellationQuote {
    let status = Status::parse(&view.status);
    let policy = view
        .listing
        .as_ref()
        .map(|l| l.cancellation_policy.clone())
        .unwrap_or_default();
    let days = days_before(view, now).unwrap_or(0);
    let paid = match (status, view.total) {
        (Some(Status::Confirmed), Some(total)) => total,
        // Cancelled after payment (a refund was promised): still paid.
        (Some(Status::Cancelled), Some(total)) if view.refund_due.is_some() => total,
        _ => Fen::ZERO,
    };
    let cancellable = matches!(
        status,
        Some(Status::Pending | Status::AwaitingPayment | Status::Confirmed)
    ) && under_way(view, now).is_none();
    // The policy's share for the days left, paid or not (unpaid, it is
    // the share of nothing, and says what paying now would leave).
    let percent = match (cancellable, for_host) {
        (false, _) => 0,
        (true, true) => 100,
        (true, false) => policy.refund_percent(days),
    };
    let refunded = view.refunded.min(paid);
    CancellationQuote {
        booking_id: view.id,
        status: view.status.clone(),
        cancellable,
        paid,
        refunded,
        // The policy's share of what the traveler still has in: after a
        // refund already made (a complaint settled by an admin), the share
        // of what is left, so that the two never add up to more than the
        // policy and the complaint together give.
        refund: if percent > 0 {
            (paid - refunded).scale(i64::from(percent), 100)
        } else {
            Fen::ZERO
        },
        refund_percent: percent,
        days_before: days,
        policy,
    }
}

/// A fingerprint of the request without its key, as stored with it: the
/// same key with a request of another fingerprint is
/// IDEMPOTENCY_KEY_REUSED ([`is_fingerprint_of`]). The sponsor region as
/// declared, as every release has made it: an older replica compares a
/// retry with it byte for byte.
pub fn fingerprint(req: &CreateBooking) -> String {
    fingerprint_with(req, req.sponsor_region)
}

/// Whether `stored` is the fingerprint of `req`. A sponsor region declared
/// that is the booker's home region is the one the booking counts for
/// undeclared: a retry that spells out the default, or leaves out the one
/// spelled out before, is the same request (it was refused as another).
pub fn is_fingerprint_of(stored: &str, req: &CreateBooking) -> bool {
    let home = req.by.home_region;
    let spellings = if req.sponsor_region.is_none() || req.sponsor_region == home {
        vec![None, home]
    } else {
        vec![req.sponsor_region]
    };
    spellings
        .into_iter()
        .any(|region| stored == fingerprint_with(req, region))
}

fn fingerprint_with(
    req: &CreateBooking,
    sponsor_region: Option<shared::region::RegionCode>,
) -> String {
    let body = serde_json::json!({
        "item": req.item,
        "travelers": req.travelers,
        "contact": req.contact,
        "sponsor_region": sponsor_region,
        "notes": req.notes,
    });
    hex::encode(Sha256::digest(body.to_string().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn confirmed(check_in: chrono::NaiveDate, total: i64) -> BookingView {
        BookingView {
            id: shared::ids::BookingId::new(),
            status: "CONFIRMED".into(),
            item: HoldItem::RoomNights {
                room_type_id: shared::ids::RoomTypeId::new(),
                check_in,
                check_out: check_in + chrono::Duration::days(2),
                rooms: 1,
            },
            travelers: 1,
            total: Some(Fen(total)),
            listing: None,
            expires_at: None,
            reason: None,
            created_at: Utc::now(),
            updated_at: None,
            refund_due: None,
            refunded: Fen::ZERO,
            history: Vec::new(),
            booker: None,
            commission_bp: 0,
            sponsor_region: None,
        }
    }

    #[test]
    fn a_document_number_shows_its_last_characters_only() {
        assert_eq!(masked("11010519491231002X"), "**************002X");
        assert_eq!(masked(" E1234567 "), "****4567");
        assert_eq!(masked("AB123"), "***23");
        assert_eq!(masked(""), "");
    }

    #[test]
    fn a_quote_counts_days_in_china_time_and_applies_the_policy() {
        use chrono::TimeZone;
        let check_in = chrono::NaiveDate::from_ymd_opt(2026, 12, 10).expect("date");
        let view = confirmed(check_in, 76_000);
        // 2026-12-02 20:00 UTC is already 12-03 in Beijing: 7 days ahead.
        let at = Utc
            .with_ymd_and_hms(2026, 12, 2, 20, 0, 0)
            .single()
            .expect("time");
        let q = quote(&view, at, false);
        assert_eq!(
            (q.days_before, q.refund_percent, q.refund),
            (7, 100, Fen(76_000))
        );
        let at = Utc
            .with_ymd_and_hms(2026, 12, 5, 1, 0, 0)
            .single()
            .expect("time");
        assert_eq!(quote(&view, at, false).refund, Fen(38_000));
        let at = Utc
            .with_ymd_and_hms(2026, 12, 9, 1, 0, 0)
            .single()
            .expect("time");
        assert_eq!(quote(&view, at, false).refund, Fen::ZERO);
        let unpaid = BookingView {
            status: "AWAITING_PAYMENT".into(),
            ..view
        };
        let q = quote(&unpaid, at, false);
        assert!(q.cancellable);
        assert_eq!((q.paid, q.refund), (Fen::ZERO, Fen::ZERO));
        // Unpaid, the policy's share still reads as the policy has it.
        let early = Utc
            .with_ymd_and_hms(2026, 12, 2, 20, 0, 0)
            .single()
            .expect("time");
        assert_eq!(quote(&unpaid, early, false).refund_percent, 100);
    }

    #[test]
    fn a_quote_for_the_host_gives_back_all_that_is_left_whatever_the_policy() {
        use chrono::TimeZone;
        let check_in = chrono::NaiveDate::from_ymd_opt(2026, 12, 10).expect("date");
        // The day before: the policy gives nothing back.
        let at = Utc
            .with_ymd_and_hms(2026, 12, 9, 1, 0, 0)
            .single()
            .expect("time");
        let view = BookingView {
            refunded: Fen(1_000),
            ..confirmed(check_in, 76_000)
        };
        let (policy, host) = (quote(&view, at, false), quote(&view, at, true));
        assert_eq!((policy.refund_percent, policy.refund), (0, Fen::ZERO));
        assert_eq!(
            (host.refund_percent, host.paid, host.refunded, host.refund),
            (100, Fen(76_000), Fen(1_000), Fen(75_000))
        );
        // Under way, not even for its host.
        let late = Utc
            .with_ymd_and_hms(2026, 12, 10, 16, 0, 0)
            .single()
            .expect("time");
        assert_eq!(quote(&view, late, true).refund, Fen::ZERO);
    }

    #[test]
    fn a_paid_stay_is_under_way_from_the_day_after_its_check_in_china_time() {
        use chrono::TimeZone;
        let check_in = chrono::NaiveDate::from_ymd_opt(2026, 12, 10).expect("date");
        let view = confirmed(check_in, 76_000);
        let at = |d, h| {
            Utc.with_ymd_and_hms(2026, 12, d, h, 0, 0)
                .single()
                .expect("time")
        };
        // 12-10 15:00 UTC is 23:00 on the check-in day in Beijing.
        assert_eq!(under_way(&view, at(10, 15)), None);
        assert!(quote(&view, at(10, 15), false).cancellable);
        // 12-10 16:00 UTC is already 12-11 there.
        assert_eq!(under_way(&view, at(10, 16)), Some(check_in));
        let q = quote(&view, at(10, 16), false);
        assert_eq!(
            (q.cancellable, q.days_before, q.refund),
            (false, -1, Fen::ZERO)
        );
        // Unpaid, it only holds rooms: it still cancels.
        let unpaid = BookingView {
            status: "AWAITING_PAYMENT".into(),
            ..view
        };
        assert_eq!(under_way(&unpaid, at(12, 1)), None);
        assert!(quote(&unpaid, at(12, 1), false).cancellable);
    }

    #[test]
    fn a_quote_never_refunds_more_than_is_left_after_earlier_refunds() {
        let check_in = Utc::now().date_naive() + chrono::Duration::days(30);
        let view = BookingView {
            refunded: Fen(10_000),
            ..confirmed(check_in, 100_000)
        };
        let q = quote(&view, Utc::now(), false);
        assert_eq!((q.refund_percent, q.refund), (100, Fen(90_000)));
        let all_back = BookingView {
            refunded: Fen(100_000),
            ..view.clone()
        };
        assert_eq!(quote(&all_back, Utc::now(), false).refund, Fen::ZERO);
        // Half by the policy, after 400 of 1,000 were given back: half of
        // the 600 left, not half of the price on top of the 400.
        let half = BookingView {
            refunded: Fen(40_000),
            ..confirmed(Utc::now().date_naive() + chrono::Duration::days(4), 100_000)
        };
        let q = quote(&half, Utc::now(), false);
        assert_eq!((q.refund_percent, q.refund), (50, Fen(30_000)));
        // Cancelled after payment: what was paid stays; cancelling again
        // refunds nothing.
        let cancelled = BookingView {
            status: "CANCELLED".into(),
            refund_due: Some(Fen(30_000)),
            refunded: Fen(70_000),
            ..half
        };
        let q = quote(&cancelled, Utc::now(), false);
        assert_eq!(
            (q.cancellable, q.paid, q.refund, q.refund_percent),
            (false, Fen(100_000), Fen::ZERO, 0)
        );
    }

    fn request(travelers: &[(&str, &str)]) -> CreateBooking {
        CreateBooking {
            idempotency_key: "k".into(),
            item: HoldItem::RoomNights {
                room_type_id: shared::ids::RoomTypeId::new(),
                check_in: Utc::now().date_naive() + chrono::Duration::days(3),
                check_out: Utc::now().date_naive() + chrono::Duration::days(4),
                rooms: 1,
            },
            travelers: travelers
                .iter()
                .map(|(name, id)| TravelerInput {
                    name: (*name).into(),
                    id_type: if id.trim().len() == 18 {
                        IdType::ResidentId
                    } else {
                        IdType::Passport
                    },
                    id_number: (*id).into(),
                })
                .collect(),
            contact: shared::rpcs::ContactInput {
                name: " 张三 ".into(),
                phone: "13800138000".into(),
                email: Some("  ".into()),
            },
            sponsor_region: shared::region::RegionCode::parse("110108").ok(),
            notes: Some(" \n ".into()),
            by: shared::auth::Principal {
                account_id: shared::ids::AccountId::new(),
                role: shared::auth::Role::Traveler,
                home_region: None,
                agency_id: None,
                region_scope: None,
            },
            commission_bp: 0,
        }
    }

    /// The fingerprint kept is the request's as declared, as older
    /// replicas make and compare it (one kept in another form refused their
    /// byte-identical retry); any spelling of the home region is the same
    /// request, another region is not.
    #[test]
    fn a_fingerprint_is_kept_as_declared_and_matches_every_spelling_of_home() {
        let home = shared::region::RegionCode::parse("110108").ok();
        let mut spelled = request(&[("张三", "11010519491231002X")]);
        spelled.by.home_region = home;
        let mut left_out = spelled.clone();
        left_out.sponsor_region = None;
        let mut other = spelled.clone();
        other.sponsor_region = shared::region::RegionCode::parse("110000").ok();
        assert_ne!(fingerprint(&spelled), fingerprint(&left_out));
        for (first, retry) in [(&spelled, &left_out), (&left_out, &spelled)] {
            assert!(is_fingerprint_of(&fingerprint(first), retry));
            assert!(!is_fingerprint_of(&fingerprint(first), &other));
            assert!(!is_fingerprint_of(&fingerprint(&other), retry));
        }
        assert!(is_fingerprint_of(&fingerprint(&other), &other));
    }

    fn refusal(req: &CreateBooking) -> String {
        let mut req = req.clone();
        normalise(&mut req);
        validate(&req).err().map(|e| e.message).unwrap_or_default()
    }

    #[test]
    fn a_request_is_stored_in_one_form_and_names_each_person_once() {
        let mut req = request(&[(" 张三 ", " 11010519491231002x "), ("Anna", "e1234567")]);
        normalise(&mut req);
        assert_eq!(req.travelers[0].name, "张三");
        assert_eq!(req.travelers[0].id_number, "11010519491231002X");
        assert_eq!(req.travelers[1].id_number, "E1234567");
        assert_eq!(
            (req.contact.name.as_str(), &req.contact.email),
            ("张三", &None)
        );
        assert_eq!(req.notes, None);
        assert_eq!(refusal(&req), "");
        // The same key with `x` for `X` is the same request.
        let mut again = request(&[("张三", "11010519491231002X"), ("Anna", "E1234567")]);
        again.item = req.item.clone();
        normalise(&mut again);
        assert_eq!(fingerprint(&again), fingerprint(&req));
        // A name typed with combining accents is the name, composed, and
        // counts its letters: sixty of them fit the hundred.
        let decomposed = "Rene\u{301}e ".to_owned() + &"e\u{301}".repeat(60);
        let mut accented = request(&[(decomposed.as_str(), "E1234567")]);
        normalise(&mut accented);
        assert_eq!(
            accented.travelers[0].name,
            "Renée ".to_owned() + &"é".repeat(60)
        );
        assert_eq!(refusal(&accented), "");

        let mut twice = request(&[
            ("张三", "11010519491231002X"),
            ("李四", "11010519491231002x"),
        ]);
        normalise(&mut twice);
        assert!(refusal(&twice).contains("traveler 2: the same document as traveler 1"));
        let split = request(&[("张\n三", "11010519491231002X")]);
        assert!(refusal(&split).contains("one line"), "{}", refusal(&split));
        for (phone, taken) in [
            ("13800138000", true),
            ("+86 138-0013-8000", true),
            ("1 3 8 0 0 1 3 8 0 0 0", true),
            ("-----", false),
            ("+ + +", false),
            ("1 3 8", false),
            ("138+0013", false),
            ("-----12345", false),
            ("+-- -- 12345", false),
            ("12345-", false),
        ] {
            let mut call = request(&[("张三", "11010519491231002X")]);
            call.contact.phone = phone.into();
            assert_eq!(refusal(&call).is_empty(), taken, "{phone}");
        }
        // As a Chinese input method types them: full-width digits, plus
        // and dash are the ASCII ones, in the phone and the document.
        let mut wide = request(&[("张三", "１１０１０５１９４９１２３１００２ｘ")]);
        wide.contact.phone = "＋８６ １３８－００１３－８０００".into();
        normalise(&mut wide);
        assert_eq!(wide.travelers[0].id_number, "11010519491231002X");
        assert_eq!(wide.contact.phone, "+86 138-0013-8000");
        assert_eq!(refusal(&wide), "");
        let mut mail = request(&[("张三", "11010519491231002X")]);
        mail.contact.email = Some("nope".into());
        assert!(refusal(&mail).starts_with("contact.email"));
        // An address as an input method types it: the one it stands for;
        // one whose domain reaches no one, refused.
        let mut wide = request(&[("张三", "11010519491231002X")]);
        wide.contact.email = Some(" ＺＨＡＮＧ＠ｅｘａｍｐｌｅ．ｃｎ".into());
        normalise(&mut wide);
        assert_eq!(wide.contact.email.as_deref(), Some("zhang@example.cn"));
        for nowhere in ["a@b..cn", "a@-b.cn", "a@b-.cn", "a@b"] {
            mail.contact.email = Some(nowhere.into());
            assert!(refusal(&mail).starts_with("contact.email"), "{nowhere}");
        }
        let mut nowhere = request(&[("张三", "11010519491231002X")]);
        nowhere.sponsor_region = shared::region::RegionCode::parse("119999").ok();
        assert!(refusal(&nowhere).starts_with("sponsorRegionCode"));
        // From 海淀区: 海淀区 or 北京市 may be declared, 朝阳区 not.
        let code = |c: &str| shared::region::RegionCode::parse(c).ok();
        for (declared, taken) in [("110108", true), ("110000", true), ("110105", false)] {
            let mut from_haidian = request(&[("张三", "11010519491231002X")]);
            from_haidian.by.home_region = code("110108");
            from_haidian.sponsor_region = code(declared);
            assert_eq!(refusal(&from_haidian).is_empty(), taken, "{declared}");
        }
    }

    #[test]
    fn permits_of_hong_kong_macao_and_taiwan_residents_have_their_own_forms() {
        let with = |id_type: IdType, number: &str| {
            let mut req = request(&[("陈大文", "11010519491231002X")]);
            req.travelers[0].id_type = id_type;
            req.travelers[0].id_number = number.into();
            normalise(&mut req);
            refusal(&req)
        };
        for good in ["H12345678", "M1234567801", "h12345678"] {
            assert_eq!(with(IdType::HkMacaoPermit, good), "", "{good}");
        }
        for bad in [
            "12345678",
            "H1234567",
            "X12345678",
            "H123456789",
            "H1234567A",
        ] {
            assert!(
                with(IdType::HkMacaoPermit, bad).contains("港澳居民来往内地通行证"),
                "{bad}"
            );
        }
        for good in ["12345678", "1234567890"] {
            assert_eq!(with(IdType::TaiwanPermit, good), "", "{good}");
        }
        for bad in ["1234567", "123456789", "T1234567"] {
            assert!(
                with(IdType::TaiwanPermit, bad).contains("台湾居民来往大陆通行证"),
                "{bad}"
            );
        }
        // Printed in groups, typed with spaces: the same number.
        assert_eq!(with(IdType::HkMacaoPermit, "H 1234 5678"), "");
        // A Hong Kong identity card typed as a resident ID: pointed to
        // the permit.
        for card in ["A123456(7)", "AB9876543", "a123456(A)"] {
            assert!(
                with(IdType::ResidentId, card).contains("HK_MACAO_PERMIT"),
                "{card}"
            );
        }
        assert!(!with(IdType::ResidentId, "11010519491231002Y").contains("HK_MACAO_PERMIT"));
        // A Hong Kong resident's residence permit (810000…) is written as
        // a resident ID, and checked as one.
        assert_eq!(with(IdType::ResidentId, "810000199408230021"), "");
    }

    #[test]
    fn resident_ids_are_checked_by_their_checksum() {
        assert!(resident_id_is_valid("11010519491231002X"));
        assert!(resident_id_is_valid("11010519491231002x"));
        assert!(!resident_id_is_valid("110105194912310021"));
        assert!(!resident_id_is_valid("1101051949123100"));
        assert!(!resident_id_is_valid("A1010519491231002X"));
    }

    #[test]
    fn a_resident_id_names_a_birth_date_that_was_and_an_address_code() {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 12, 5).expect("a day");
        // Each with its checksum right.
        let with_check = |first17: &str| {
            const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
            let sum: u32 = first17
                .bytes()
                .zip(WEIGHTS)
                .map(|(b, w)| u32::from(b - b'0') * w)
                .sum();
            format!(
                "{first17}{}",
                char::from(b"10X98765432"[(sum % 11) as usize])
            )
        };
        assert_eq!(resident_id_refusal("11010519491231002X", today), None);
        assert_eq!(
            resident_id_refusal(&with_check("15042920261205001"), today),
            None
        );
        for refused in [
            "11010519491331002",
            "11010520991231002",
            "11010518991231002",
            "11010520230229002",
            "11010520261206002",
            "00000019800101002",
        ] {
            let id = with_check(refused);
            assert!(resident_id_is_valid(&id), "{id}");
            assert!(resident_id_refusal(&id, today).is_some(), "{id}");
        }
        assert!(resident_id_refusal("110105194912310021", today).is_some());
    }
}

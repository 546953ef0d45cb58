//! Booking rules, without I/O: validation at the edge and the status machine.

use sha2::{Digest, Sha256};
use shared::AppError;
use shared::events::HoldItem;
use shared::rpcs::{CreateBooking, IdType, TravelerInput};

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

/// Most travelers on one booking.
pub const MAX_TRAVELERS: usize = 50;
/// Longest idempotency key accepted.
pub const MAX_KEY_LEN: usize = 255;

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

fn check_traveler(i: usize, t: &TravelerInput) -> Result<(), AppError> {
    let n = i + 1;
    if t.name.trim().is_empty() || t.name.chars().count() > 100 {
        return Err(AppError::bad_input(format!(
            "traveler {n}: a real name of 1 to 100 characters is required"
        )));
    }
    match t.id_type {
        IdType::ResidentId if !resident_id_is_valid(t.id_number.trim()) => {
            Err(AppError::bad_input(format!(
                "traveler {n}: `{}` is not a valid resident ID number (18 characters, checksum)",
                t.id_number
            )))
        }
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
        _ => Ok(()),
    }
}

/// Validates a create request at the edge; the saga never re-checks.
pub fn validate(req: &CreateBooking) -> Result<(), AppError> {
    let key = req.idempotency_key.trim();
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(AppError::bad_input(format!(
            "the idempotency key must be 1 to {MAX_KEY_LEN} characters"
        )));
    }
    if req.travelers.is_empty() || req.travelers.len() > MAX_TRAVELERS {
        return Err(AppError::bad_input(format!(
            "a booking has 1 to {MAX_TRAVELERS} travelers"
        )));
    }
    for (i, t) in req.travelers.iter().enumerate() {
        check_traveler(i, t)?;
    }
    let phone = req.contact.phone.trim();
    if !(5..=20).contains(&phone.len())
        || !phone
            .chars()
            .all(|c| c.is_ascii_digit() || c == '+' || c == '-' || c == ' ')
    {
        return Err(AppError::bad_input(
            "the contact phone must be 5 to 20 digits",
        ));
    }
    if req.contact.name.trim().is_empty() {
        return Err(AppError::bad_input("the contact name must not be empty"));
    }
    match &req.item {
        HoldItem::RoomNights {
            check_in,
            check_out,
            rooms,
            ..
        } => {
            if check_out <= check_in {
                return Err(AppError::bad_input("check-out must be after check-in"));
            }
            if *rooms == 0 || *rooms > 50 {
                return Err(AppError::bad_input("book 1 to 50 rooms"));
            }
        }
        HoldItem::Seats { seats, .. } => {
            if *seats as usize != req.travelers.len() {
                return Err(AppError::bad_input("one seat per traveler"));
            }
        }
    }
    Ok(())
}

/// A fingerprint of the request without its key: the same key with a
/// different fingerprint is IDEMPOTENCY_KEY_REUSED.
pub fn fingerprint(req: &CreateBooking) -> String {
    let body = serde_json::json!({
        "item": req.item,
        "travelers": req.travelers,
        "contact": req.contact,
        "sponsor_region": req.sponsor_region,
        "notes": req.notes,
    });
    hex::encode(Sha256::digest(body.to_string().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_ids_are_checked_by_their_checksum() {
        assert!(resident_id_is_valid("11010519491231002X"));
        assert!(resident_id_is_valid("11010519491231002x"));
        assert!(!resident_id_is_valid("110105194912310021"));
        assert!(!resident_id_is_valid("1101051949123100"));
        assert!(!resident_id_is_valid("A1010519491231002X"));
    }
}

//! Quotes: what a booking request would cost, and whether it could be held
//! now, by the rules the hold applies (`assess`), without taking anything.

use super::Inventory;
use super::assess::{Refusal, assess};
use shared::AppError;
use shared::rpcs::{BookingQuote, QuoteBooking};

impl Inventory {
    /// Prices `req`; unknown listings and impossible requests are errors
    /// (`BAD_USER_INPUT` naming the field).
    pub async fn quote(&self, req: QuoteBooking) -> Result<BookingQuote, AppError> {
        // As booking refuses it: a quote never says bookable for a stay
        // that createBooking would refuse.
        if let shared::events::HoldItem::RoomNights { check_in, .. } = req.item {
            shared::stay::check_not_past(check_in, chrono::Utc::now())?;
        }
        let assessed = match assess(&self.db, &req.item, req.travelers).await? {
            Ok(assessed) => assessed,
            // Input that names nothing (NOT_FOUND) or makes no sense.
            Err(Refusal(code, reason)) => return Err(AppError::new(code, reason)),
        };
        let refusal = assessed.refusal;
        Ok(BookingQuote {
            listing: assessed.listing,
            total: assessed.total,
            bookable: refusal.is_none(),
            refusal: refusal.as_ref().map(|r| r.0),
            reason: refusal.map(|r| r.1),
        })
    }
}

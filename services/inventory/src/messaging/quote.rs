//! Quotes: what a booking request would cost, and whether it could be held
//! now, by the rules the hold applies (`assess`), without taking anything.

use super::Inventory;
use super::assess::{Refusal, assess};
use crate::storage::{self, Held};
use shared::money::Fen;
use shared::rpcs::{BookingQuote, QuoteBooking};
use shared::{AppError, ErrorCode};

impl Inventory {
    /// Prices `req`; unknown listings and impossible requests are errors
    /// (`BAD_USER_INPUT` naming the field).
    pub async fn quote(&self, req: QuoteBooking) -> Result<BookingQuote, AppError> {
        let assessed = match assess(&self.db, &req.item, req.travelers).await? {
            Ok(assessed) => assessed,
            Err(Refusal(_, reason)) => return Err(AppError::bad_input(reason)),
        };
        let (total, free) = match assessed.held {
            Held::Nights(room_type, stay, rooms) => {
                let (open, free, price) = storage::stay_offer(&self.db, room_type, stay).await?;
                let free = open == stay.nights() && free >= i64::from(rooms);
                (Fen(price.get() * i64::from(rooms)), free)
            }
            Held::Seats(_, seats) => (
                assessed.seats_total.unwrap_or(Fen::ZERO),
                assessed.seats_left >= seats,
            ),
        };
        let refusal = match (assessed.refusal, free) {
            (Some(r), _) => Some(r),
            (None, false) => Some(Refusal(
                ErrorCode::SoldOut,
                "not enough free for the whole request".into(),
            )),
            (None, true) => None,
        };
        Ok(BookingQuote {
            listing: assessed.listing,
            total,
            bookable: refusal.is_none(),
            refusal: refusal.as_ref().map(|r| r.0),
            reason: refusal.map(|r| r.1),
        })
    }
}

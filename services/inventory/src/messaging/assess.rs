//! What decides whether a stay or seats may be held, besides free capacity:
//! one set of rules for the hold itself and for the quote a client asks for
//! before booking, so the two never disagree.

use crate::domain::StayDates;
use crate::storage::{self, Held, routes};
use chrono::Utc;
use sea_orm::{ConnectionTrait, DbErr};
use shared::ErrorCode;
use shared::events::{HoldItem, ListingSnapshot};
use shared::money::Fen;
use shared::policy::china_today;
use shared::rpcs::RouteStatus;

/// Why a request cannot be held: the code clients branch on, and a reason
/// for the traveler.
#[derive(Debug, Clone)]
pub(crate) struct Refusal(pub ErrorCode, pub String);

fn refuse(code: ErrorCode, reason: impl Into<String>) -> Refusal {
    Refusal(code, reason.into())
}

/// Not enough rooms on some night of `stay`.
pub(crate) fn sold_out_nights(stay: StayDates) -> Refusal {
    refuse(
        ErrorCode::SoldOut,
        format!(
            "not enough rooms for every night from {} to {}",
            stay.check_in, stay.check_out
        ),
    )
}

/// Fewer seats left than asked.
pub(crate) fn sold_out_seats(asked: u32, left: u32, starts_on: chrono::NaiveDate) -> Refusal {
    refuse(
        ErrorCode::SoldOut,
        format!(
            "{} asked, {left} left on {starts_on}",
            shared::text::plural(asked, "seat", "seats")
        ),
    )
}

/// A departure its operator cancelled.
pub(crate) fn cancelled(departure: &shared::rpcs::DepartureView) -> Option<Refusal> {
    departure.cancelled_at.map(|_| {
        refuse(
            ErrorCode::Closed,
            format!(
                "the departure on {} was cancelled by its operator: {}",
                departure.starts_on,
                departure
                    .cancel_reason
                    .as_deref()
                    .unwrap_or("no reason given")
            ),
        )
    })
}

/// A request for a listing that exists: what it would hold, on which
/// listing, for how much as last committed (a quote's answer: a hold takes
/// its price from the nights or the departure it takes), and the rule it
/// breaks, if any.
pub(crate) struct Assessed {
    /// Closed, minimum stay, cut-off, off sale: held by no one now.
    pub refusal: Option<Refusal>,
    /// The capacity to take.
    pub held: Held,
    /// The listing snapshot the booking keeps.
    pub listing: ListingSnapshot,
    /// The whole request's price: seats × price, or rooms × the stay.
    pub total: Fen,
}

/// Checks `item` for `travelers` against the listing's rules as they are
/// in `conn`'s view. The outer refusal is the request's own fault (an
/// unknown listing, impossible numbers); [`Assessed::refusal`] is the
/// listing's answer.
pub(crate) async fn assess<C: ConnectionTrait>(
    conn: &C,
    item: &HoldItem,
    travelers: u32,
) -> Result<Result<Assessed, Refusal>, DbErr> {
    match *item {
        HoldItem::RoomNights {
            room_type_id,
            check_in,
            check_out,
            rooms,
        } => {
            let stay = match StayDates::parse(check_in, check_out) {
                Ok(stay) if (1..=shared::stay::MAX_ROOMS).contains(&rooms) => stay,
                Ok(_) => {
                    return Ok(Err(refuse(
                        ErrorCode::BadUserInput,
                        format!("rooms: 1 to {}", shared::stay::MAX_ROOMS),
                    )));
                }
                Err(e) => return Ok(Err(Refusal(e.code, e.message))),
            };
            let Some((listing, rules)) = storage::stay_rules(conn, room_type_id, stay).await?
            else {
                return Ok(Err(refuse(
                    ErrorCode::NotFound,
                    shared::rpcs::NO_SUCH_ROOM_TYPE,
                )));
            };
            let sleeps = rules.max_guests * rooms;
            // Off sale, the listing says nothing of itself (NOT_FOUND to
            // all but its region's admins): not even how many it sleeps.
            if rules.published && travelers > sleeps {
                return Ok(Err(refuse(
                    ErrorCode::BadUserInput,
                    format!(
                        "travelers: {travelers} travelers, but {rooms} room(s) sleep {sleeps} at most"
                    ),
                )));
            }
            let refusal = if !rules.published {
                Some(refuse(
                    ErrorCode::NotPublished,
                    "this homestay is not on sale",
                ))
            } else if rules.closed {
                // The night to change, when one is closed; else some night
                // was never put on sale (past the calendar, or not yet open).
                let last_night = stay.check_out.pred_opt().unwrap_or(stay.check_out);
                Some(refuse(
                    ErrorCode::Closed,
                    match rules.first_closed {
                        Some(night) => format!(
                            "the room type takes no bookings on the night of {night} (closed, or \
                             none of its rooms on sale)"
                        ),
                        None => format!(
                            "the homestay is not open on every night from {check_in} through \
                             {last_night} (not yet on sale, or past its calendar)"
                        ),
                    },
                ))
            } else if i64::from(rules.min_stay) > stay.nights() {
                Some(refuse(
                    ErrorCode::MinStay,
                    format!(
                        "stays from {check_in} are at least {} nights; this one is {}",
                        rules.min_stay,
                        stay.nights()
                    ),
                ))
            } else if rules.fewest_free < rooms {
                // Sold out as last committed: refused without taking a lock.
                Some(sold_out_nights(stay))
            } else {
                None
            };
            Ok(Ok(Assessed {
                refusal,
                held: Held::Nights(room_type_id, stay, rooms),
                listing,
                total: Fen(rules.price.get() * i64::from(rooms)),
            }))
        }
        HoldItem::Seats {
            departure_id,
            seats,
        } => {
            if seats == 0 {
                return Ok(Err(refuse(
                    ErrorCode::BadUserInput,
                    "travelers: at least one seat",
                )));
            }
            let Some((route, departure)) = routes::departure(conn, departure_id).await? else {
                return Ok(Err(refuse(
                    ErrorCode::NotFound,
                    shared::rpcs::NO_SUCH_DEPARTURE,
                )));
            };
            let refusal = if route.status != RouteStatus::Published {
                Some(refuse(ErrorCode::NotPublished, "this route is not on sale"))
            } else if let Some(refusal) = cancelled(&departure) {
                Some(refusal)
            } else if china_today(Utc::now()) > departure.last_booking_day {
                Some(refuse(
                    ErrorCode::CutOff,
                    format!(
                        "bookings for the departure on {} closed after {}",
                        departure.starts_on, departure.last_booking_day
                    ),
                ))
            } else if departure.seats_left < seats {
                Some(sold_out_seats(
                    seats,
                    departure.seats_left,
                    departure.starts_on,
                ))
            } else {
                None
            };
            let listing = ListingSnapshot {
                title: format!("{} · {}", route.title_zh, departure.starts_on),
                title_en: (!route.title_en.is_empty())
                    .then(|| format!("{} · {}", route.title_en, departure.starts_on)),
                host_id: route.host_id,
                region_code: route.region_code,
                certified: shared::policy::certified_now(route.certified_until),
                cancellation_policy: route.cancellation_policy,
                starts_on: Some(departure.starts_on),
                listing_id: Some(route.id.0),
            };
            Ok(Ok(Assessed {
                refusal,
                held: Held::Seats(departure_id, seats),
                listing,
                total: Fen(departure.price.get() * i64::from(seats)),
            }))
        }
    }
}

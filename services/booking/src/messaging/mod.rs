//! Booking's RPC handlers (create, read) and the saga's event handlers.
//! Every step commits its state change, history and outgoing events in one
//! transaction with the inbox row of the event that caused it.

use crate::SERVICE;
use crate::domain::sold_out::SoldOutMemory;
use crate::domain::{self, Status};
use crate::storage::{self, Changes};
use chrono::{Duration, SubsecRound, Utc};
use sea_orm::{DatabaseConnection, TransactionTrait};
use shared::auth::{Principal, Role};
use shared::bus::{EventRouter, HandlerError};
use shared::envelope::Envelope;
use shared::events::{
    BookingCaptureKept, BookingConfirmed, DepartureCancelled, HoldCommitRefused, HoldGranted,
    HoldRejected, HoldReleaseRequested, HoldReleased, HoldRequested, PaymentCaptured,
    PaymentFailed, PaymentRefunded, RefundRefused, RefundRequested,
};
use shared::ids::BookingId;
use shared::money::{Fen, Split};
use shared::outbox::{OutboxSignal, begin_once, enqueue};
use shared::rpc::RpcRouter;
use shared::rpcs::{
    BookingPage, BookingView, CancelBooking, CancellationQuote, CreateBooking, GetBooking,
    ListBookings, QuoteCancellation,
};
use shared::{AppError, ErrorCode};
use std::sync::Arc;
use tracing::{debug, info, warn};

/// FORBIDDEN, with who tried what (logged, not shown).
fn forbidden(viewer: &Principal, booking: &BookingView, what: &str) -> AppError {
    warn!(account = %viewer.account_id, role = ?viewer.role, booking = %booking.id, what, "refused");
    AppError::new(
        ErrorCode::Forbidden,
        format!("you may not {what} this booking"),
    )
}

/// The answer to a create whose key was taken by `first`: the first
/// answer, exactly (Stripe's semantics; `booking(id)` reads the current
/// state), or IDEMPOTENCY_KEY_REUSED for a different request.
fn replay(first: storage::Stored, req: &CreateBooking) -> Result<BookingView, AppError> {
    if !domain::is_fingerprint_of(&first.fingerprint, req) {
        return Err(AppError::new(
            ErrorCode::IdempotencyKeyReused,
            "this idempotency key was used for a different booking request",
        ));
    }
    Ok(first.first_response.unwrap_or(first.view))
}

/// Who cancels a booking, and so what a paid one gets back.
#[derive(Clone, Copy)]
enum Canceller<'a> {
    /// Its booker: the listing's cancellation policy decides the refund.
    Booker,
    /// A platform admin who did not book it (a traveler's call to the
    /// hotline, say), named in its history: the policy decides the refund,
    /// as for the booker (more is `refundPayment`'s to give).
    Admin(shared::ids::AccountId),
    /// The operator, who cancelled the departure on `.0` for reason `.1`:
    /// all that was paid goes back, whatever the policy.
    Operator(chrono::NaiveDate, &'a str),
    /// An admin of the listing's region (or a platform admin), account
    /// `.0`, for its host, who cannot honour it (reason `.1`): all that was
    /// paid goes back, whatever the policy; not once the stay is under way.
    Host(shared::ids::AccountId, &'a str),
}

/// What became of a request to cancel a booking.
enum Cancelled {
    /// Cancelled now, with the events that give its hold and money back.
    Moved(Vec<Envelope>),
    /// It already was.
    Already,
    /// It is in this status and cannot be (REJECTED, EXPIRED).
    Not(String),
    /// CONFIRMED, and its stay or departure began on this day.
    UnderWay(chrono::NaiveDate),
}

/// The history's cause of a booker's cancellation of a booking booking saw
/// unpaid (a capture it has not heard of yet may have come before it).
const CANCELLED_UNPAID: &str = "cancelled before payment";
/// How the history of a booking paid before it was cancelled (the capture
/// heard after the cancellation) begins the row that says so: the check
/// counts such a booking's kept money from that row's day.
pub const PAID_BEFORE_CANCELLING: &str = "payment captured before the cancellation";
/// The history cause of a booking its host could not honour, cancelled
/// before its payment was recorded: unlike [`CANCELLED_UNPAID`], a capture
/// heard after it is refunded in full, not by the policy.
const CANCELLED_FOR_HOST: &str = "cancelled for its host before payment";
/// How the history row begins that says a booking cancelled unpaid (as far
/// as booking knew) had its departure cancelled by the operator first: a
/// capture heard after it goes back in full, not by the policy. The
/// departure's words follow, after ": ".
const DEPARTURE_CANCELLED_FIRST: &str = "cancelled after its departure was, unpaid as far as booking knew; a payment heard of later goes back in full";

/// The history's note that inventory gave a booking's capacity back.
const RELEASED: &str = "capacity released";
/// The history's step when inventory's sweeper released the hold of a
/// booking still awaiting payment (booking's expiry decides).
const RELEASED_WHILE_AWAITING: &str = "inventory released the hold past the deadline; a payment captured in time still confirms the booking";

/// When the booker cancelled a booking (its `history`) as unpaid at or
/// after `captured_at` (the capture committed first; its news came later),
/// that moment; None for any other ending (an operator's cancellation, an
/// expiry, a payment made after the cancellation: all of it goes back
/// then).
fn paid_before_cancelling(
    history: &[shared::rpcs::HistoryEntry],
    captured_at: chrono::DateTime<Utc>,
) -> Option<chrono::DateTime<Utc>> {
    history
        .iter()
        .find(|h| h.status == Status::Cancelled.as_str() && h.cause == CANCELLED_UNPAID)
        .map(|h| h.at)
        .filter(|at| captured_at <= *at)
}

/// The departure's words, when a booking's `history` says its departure
/// was cancelled before it was, unpaid as booking knew
/// ([`DEPARTURE_CANCELLED_FIRST`]).
fn departure_cancelled_first(history: &[shared::rpcs::HistoryEntry]) -> Option<String> {
    history.iter().find_map(|h| {
        h.cause
            .strip_prefix(DEPARTURE_CANCELLED_FIRST)
            .and_then(|why| why.strip_prefix(": "))
            .map(str::to_owned)
    })
}

/// What partnership is told of a booking paid before it was cancelled: the
/// facts its confirmation would have carried, with the capture's split.
/// None (logged) for a booking with no listing or price snapshot, which
/// no capture can have paid.
fn capture_kept(stored: &storage::Stored, split: Split) -> Option<BookingCaptureKept> {
    let Some(confirmed) = storage::confirmation(stored, Some(split)) else {
        warn!(booking = %stored.view.id, "a capture kept for a booking without a listing or price; not counted");
        return None;
    };
    // Nothing to push: partnership alone hears it.
    Some(BookingCaptureKept(BookingConfirmed {
        booking: None,
        ..confirmed
    }))
}

/// Cancels `booking` (as last read) in `txn`: before payment its hold is
/// released (and a capture that overtook the grant refunded in full); once
/// CONFIRMED, the refund is the policy's share or, for the operator, all of
/// it. `cause`: the event the cancellation follows, if any.
async fn cancel_one<C: sea_orm::ConnectionTrait>(
    txn: &C,
    booking: &BookingView,
    by: Canceller<'_>,
    cause: Option<&Envelope>,
    refunded_at_payment: Option<Fen>,
) -> Result<Cancelled, sea_orm::DbErr> {
    let id = booking.id;
    // The booking's saga goes on; what caused this is its cause.
    let wrap = |mut envelope: Envelope| {
        envelope.causation_id = cause.map(|c| c.id);
        envelope
    };
    let release = wrap(Envelope::new(
        SERVICE,
        id.0,
        &HoldReleaseRequested {
            booking_id: id,
            reason: "cancelled".into(),
        },
    ));
    let (who, why) = match by {
        Canceller::Booker => (
            "cancelled by the booker".to_owned(),
            CANCELLED_UNPAID.to_owned(),
        ),
        Canceller::Admin(account) => (
            format!("cancelled by a platform admin (account {account})"),
            CANCELLED_UNPAID.to_owned(),
        ),
        Canceller::Operator(day, reason) => (
            format!("the departure on {day} was cancelled by its operator: {reason}"),
            "the departure was cancelled".to_owned(),
        ),
        Canceller::Host(account, reason) => (
            format!("cancelled for its host by an admin (account {account}): {reason}"),
            CANCELLED_FOR_HOST.to_owned(),
        ),
    };
    let unpaid = Changes {
        reason: Some(who.clone()),
        ..Changes::default()
    };
    let from = [Status::Pending, Status::AwaitingPayment];
    if let Some(moved) =
        storage::transition(txn, id, &from, Status::Cancelled, unpaid, &why).await?
    {
        // A hold granted after this is released by on_hold_granted; a
        // release that overtakes the request leaves a tombstone.
        let mut events = vec![release];
        // Paid while the booking still looked PENDING here (the capture
        // overtook the grant): all of it goes back.
        if let Some(gross) = moved.captured_early {
            let refund = RefundRequested {
                booking_id: id,
                amount: None,
                reason: "cancelled before the payment was recorded".into(),
                percent_of_left: None,
            };
            let request = Envelope::new(SERVICE, id.0, &refund);
            storage::set_refund_due(txn, id, gross, Some(request.id)).await?;
            events.push(wrap(request));
        }
        return Ok(Cancelled::Moved(events));
    }
    // Read again, under the row's lock: it may have been paid since the
    // first read, and a refund being recorded now (an admin's, heard this
    // moment) is in the quote, not missed by a read just before it
    // committed. A CONFIRMED booking's price no longer changes, and the
    // conditional move below makes sure it still is CONFIRMED.
    storage::lock(txn, id).await?;
    let mut current = storage::by_id(txn, id)
        .await?
        .map_or_else(|| booking.clone(), |b| b.view);
    // A refund payment has made that booking has not heard of yet (an
    // admin's, a moment ago) is not still paid.
    if let Some(refunded) = refunded_at_payment {
        current.refunded = current.refunded.max(refunded);
    }
    let now = Utc::now();
    if !matches!(by, Canceller::Operator(..))
        && let Some(began) = domain::under_way(&current, now)
    {
        return Ok(Cancelled::UnderWay(began));
    }
    let quote = domain::quote(&current, now, false);
    let (refund, percent, changes, cause_text) = match by {
        Canceller::Booker | Canceller::Admin(_) => (
            quote.refund,
            quote.refund_percent,
            format!("{who}; refund {}", quote.refund),
            format!(
                "cancelled after payment; refund {} ({}% by the policy, {} {} ahead)",
                quote.refund,
                quote.refund_percent,
                quote.days_before,
                if quote.days_before == 1 {
                    "day"
                } else {
                    "days"
                }
            ),
        ),
        Canceller::Operator(..) => {
            let all = (quote.paid - current.refunded).max(Fen::ZERO);
            (
                all,
                100,
                format!("{who}; refunded in full"),
                format!("{why}; full refund {all}"),
            )
        }
        Canceller::Host(_, reason) => {
            let all = (quote.paid - current.refunded).max(Fen::ZERO);
            (
                all,
                100,
                format!("{who}; refunded in full"),
                format!("cancelled after payment for its host: {reason}; full refund {all}"),
            )
        }
    };
    // The share is taken of what payment has left when it handles the
    // request: a refund made meanwhile is not counted as still paid. What
    // it gives back then replaces `refund_due`, the quote.
    let request = (refund > Fen::ZERO).then(|| {
        let request = RefundRequested {
            booking_id: id,
            amount: Some(refund),
            reason: who,
            percent_of_left: Some(u32::from(percent)),
        };
        Envelope::new(SERVICE, id.0, &request)
    });
    let paid = Changes {
        reason: Some(changes),
        refund_due: Some(refund),
        refund_request: request.as_ref().map(|r| r.id),
        ..Changes::default()
    };
    let confirmed = [Status::Confirmed];
    if storage::transition(txn, id, &confirmed, Status::Cancelled, paid, &cause_text)
        .await?
        .is_some()
    {
        let mut events = vec![release];
        events.extend(request.map(wrap));
        return Ok(Cancelled::Moved(events));
    }
    // Moved by someone else meanwhile (a concurrent cancellation waited on
    // its row and found it changed): answered by what it is now, not by
    // the status read before.
    let now = storage::by_id(txn, id)
        .await?
        .map_or(current.status, |b| b.view.status);
    if now == Status::Cancelled.as_str() {
        Ok(Cancelled::Already)
    } else {
        Ok(Cancelled::Not(now))
    }
}

/// [`storage::refund_answered`], and the booking's reason made to name the
/// refund given when it named the one promised: a refund an admin made in
/// between leaves less to give back ("cancelled by the booker; refund
/// 500.00" stood beside a `refundDue` of 200.00).
async fn refund_answered<C: sea_orm::ConnectionTrait>(
    conn: &C,
    id: BookingId,
    request: uuid::Uuid,
    given: Fen,
) -> Result<bool, sea_orm::DbErr> {
    let before = storage::by_id(conn, id).await?;
    if !storage::refund_answered(conn, id, request, given).await? {
        return Ok(false);
    }
    let after = storage::by_id(conn, id).await?;
    let promised = before.as_ref().and_then(|b| b.view.refund_due);
    let due = after.as_ref().and_then(|b| b.view.refund_due);
    if let (Some(promised), Some(due), Some(reason)) = (
        promised,
        due,
        after.as_ref().and_then(|b| b.view.reason.as_ref()),
    ) && promised != due
    {
        let (was, now) = (format!("; refund {promised}"), format!("; refund {due}"));
        if reason.contains(&was) {
            storage::set_reason(conn, id, &reason.replacen(&was, &now, 1)).await?;
        }
    }
    Ok(true)
}

/// Asks payment for all that is left of booking `id`'s payment (`total`)
/// with `request` (a `RefundRequested` of no amount), in place of the
/// policy's share its booker was promised: the trip could never have been
/// had. The booker's own request, if payment has not made it yet, takes
/// its share of what is left; together they give back all of it.
/// `step` is the history's row.
async fn refund_the_rest<C: sea_orm::ConnectionTrait>(
    conn: &C,
    id: BookingId,
    total: Fen,
    request: Envelope,
    (why, step): (&str, &str),
) -> Result<(), sea_orm::DbErr> {
    storage::set_refund_due(conn, id, total, Some(request.id)).await?;
    storage::set_reason(conn, id, &format!("{why}; refunded in full")).await?;
    storage::history(conn, id, Status::Cancelled, step, Utc::now()).await?;
    storage::refund_whole(conn, id).await?;
    enqueue(conn, &[request]).await
}

/// A paid booking on a cancelled departure that its booker cancelled as
/// the departure was being cancelled — the cancellation recorded here at
/// or after inventory's (the event's time), before its event arrived —
/// was refunded by its policy: all of it goes back, as for every booking
/// on the departure (an exploratory run saw 4 of 16 bookings cancelled
/// within 20 ms of the departure keep only the policy's half). One its
/// booker cancelled before the departure's cancellation keeps the
/// policy's share: that was the booker's own choice. One not paid as far
/// as booking knows (no capture confirmed it or was kept by its policy)
/// is noted instead ([`DEPARTURE_CANCELLED_FIRST`]): a payment heard of
/// later goes back in full.
async fn cancelled_as_its_departure_was<C: sea_orm::ConnectionTrait>(
    conn: &C,
    id: BookingId,
    cause: &Envelope,
    ev: &DepartureCancelled,
) -> Result<(), sea_orm::DbErr> {
    let Some(current) = storage::by_id(conn, id).await? else {
        return Ok(());
    };
    let view = &current.view;
    if view.status != Status::Cancelled.as_str() {
        return Ok(());
    }
    let history = storage::history_of(conn, id).await?;
    let cancelled_at = history
        .iter()
        .find(|h| h.status == Status::Cancelled.as_str())
        .map(|h| h.at);
    if cancelled_at.is_none_or(|at| at < cause.occurred_at) {
        return Ok(());
    }
    let why = format!(
        "the departure on {} was cancelled by its operator: {}",
        ev.starts_on, ev.reason
    );
    // Paid: confirmed by its capture (of the total), or its capture heard
    // after the cancellation kept by the policy. A capture of another
    // amount, refunded, paid nothing: topped up "to the total", payment
    // refused it and `refundDue` stayed above what went back.
    let paid = current.captured.is_some()
        || history
            .iter()
            .any(|h| h.cause.starts_with(PAID_BEFORE_CANCELLING));
    if !paid {
        let noted = history
            .iter()
            .any(|h| h.cause.starts_with(DEPARTURE_CANCELLED_FIRST));
        if !noted {
            let step = format!("{DEPARTURE_CANCELLED_FIRST}: {why}");
            storage::history(conn, id, Status::Cancelled, &step, Utc::now()).await?;
        }
        return Ok(());
    }
    let due = view.refund_due.unwrap_or(Fen::ZERO);
    // Cancelled for its host (or by inventory) it was promised all that
    // was left already, an admin's partial refund aside.
    let in_full = view
        .reason
        .as_deref()
        .is_some_and(|r| r.ends_with("; refunded in full"));
    let Some(total) = view.total.filter(|total| due < *total && !in_full) else {
        return Ok(());
    };
    let request = cause.follow(
        SERVICE,
        &RefundRequested {
            booking_id: id,
            amount: None,
            reason: why.clone(),
            percent_of_left: None,
        },
    );
    let step = format!("{why}; the rest refunded");
    refund_the_rest(conn, id, total, request, (&why, &step)).await?;
    warn!(booking = %id, "cancelled by its booker as its departure was cancelled; refunding the rest");
    Ok(())
}

/// Refunds in full a capture recorded while `booking` was PENDING, now that
/// it ended without a hold.
async fn refund_early_capture<C: sea_orm::ConnectionTrait>(
    conn: &C,
    cause: Option<&Envelope>,
    booking: &storage::Stored,
    why: &str,
) -> Result<(), sea_orm::DbErr> {
    let Some(gross) = booking.captured_early else {
        return Ok(());
    };
    ask_full_refund(conn, cause, booking.view.id, gross, why.into()).await?;
    warn!(booking = %booking.view.id, "paid, but nothing could be held; refunding");
    Ok(())
}

/// Asks payment for all of booking `id`'s capture (`gross`) back, for
/// `reason`, and records the promise with the request's id (which a payout
/// run keeps the host's share of back until payment has it).
async fn ask_full_refund<C: sea_orm::ConnectionTrait>(
    conn: &C,
    cause: Option<&Envelope>,
    id: BookingId,
    gross: Fen,
    reason: String,
) -> Result<(), sea_orm::DbErr> {
    let refund = RefundRequested {
        booking_id: id,
        amount: None,
        reason,
        percent_of_left: None,
    };
    let request = match cause {
        Some(cause) => cause.follow(SERVICE, &refund),
        None => Envelope::new(SERVICE, id.0, &refund),
    };
    storage::set_refund_due(conn, id, gross, Some(request.id)).await?;
    enqueue(conn, &[request]).await
}

/// What the handlers share.
#[derive(Clone)]
pub struct Bookings {
    /// Booking's database.
    pub db: DatabaseConnection,
    /// Wakes the outbox relay.
    pub outbox: OutboxSignal,
    /// How long a hold lasts.
    pub hold_for: Duration,
    /// How long a PENDING booking waits for inventory before asking again.
    pub pending_retry: Duration,
    /// Hold requests before a booking is rejected as unanswered.
    pub hold_attempts: i32,
    /// Stays inventory has just refused as sold out.
    pub sold_out: Arc<SoldOutMemory>,
    /// The bus to ask payment which overdue bookings have a payment in
    /// flight (none: every overdue booking expires at its deadline). Weak:
    /// the in-process bus holds these handlers.
    pub payments: Option<std::sync::Weak<dyn shared::bus::Bus>>,
    /// How long past its deadline a booking whose payment is in flight is
    /// kept for the payment to settle: past it the booking expires all the
    /// same (a capture after that is refunded in full). The provider
    /// answers within the pay request's deadline, or the reconciler
    /// settles the payment a minute or two later.
    pub payment_wait: Duration,
    /// Where the expiry sweeper's next round reads from (None: the oldest
    /// overdue booking): on after a full page, so that bookings it keeps
    /// for a capture on its way never hold the head of every round.
    pub expiry_from: Arc<std::sync::Mutex<Option<chrono::DateTime<Utc>>>>,
}

/// What payment said of the overdue bookings the expiry sweeper asked about.
#[derive(Default)]
struct InFlight {
    /// Asked about.
    asked: Vec<BookingId>,
    /// Of those, the ones with a payment in flight.
    flying: Vec<BookingId>,
    /// Past the wait, those payment was asked about (None: it did not
    /// answer, and they expire as before), and of them those it captured
    /// (in time: it charges no booking past its deadline), their
    /// `payment.captured` not yet handled: they are confirmed by it, not
    /// expired.
    late: Option<Vec<BookingId>>,
    captured: Vec<BookingId>,
    /// Payment did not say which payments are in flight: those within the
    /// wait expire at their deadline (the late ones still go by `late`).
    unanswered: bool,
}

impl InFlight {
    /// Whether overdue booking `id`, past the wait, expires: unless it was
    /// not asked about (another replica had the first ones locked, or the
    /// round moved on: it waits for the next round) or was captured.
    fn expires_late(&self, id: &BookingId) -> bool {
        match &self.late {
            None => true,
            Some(late) => late.contains(id) && !self.captured.contains(id),
        }
    }
}

/// Overdue bookings the expiry sweeper reads a round.
const EXPIRY_PAGE: u64 = 100;

/// How long the expiry sweeper waits for payment's answer before expiring
/// as if no payment were in flight.
const IN_FLIGHT_ASK_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

macro_rules! handler {
    ($router:expr, $svc:expr, $event:ty, $method:ident) => {{
        let s = $svc.clone();
        $router.on::<$event, _, _>(move |env, ev| {
            let s = s.clone();
            async move { s.$method(env, ev).await }
        })
    }};
}

impl Bookings {
    /// The events the saga reacts to.
    pub fn events(&self) -> EventRouter {
        let r = EventRouter::new("booking.events");
        let r = handler!(r, self, HoldGranted, on_hold_granted);
        let r = handler!(r, self, HoldRejected, on_hold_rejected);
        let r = handler!(r, self, HoldReleased, on_hold_released);
        let r = handler!(r, self, HoldCommitRefused, on_commit_refused);
        let r = handler!(r, self, DepartureCancelled, on_departure_cancelled);
        let r = handler!(r, self, PaymentCaptured, on_payment_captured);
        let r = handler!(r, self, PaymentRefunded, on_payment_refunded);
        let r = handler!(r, self, RefundRefused, on_refund_refused);
        handler!(r, self, PaymentFailed, on_payment_failed)
    }

    /// The RPC methods booking answers.
    pub fn rpc(&self) -> RpcRouter {
        let [a, b, c, d, e, g, h, i, j, k, l] = [(); 11].map(|()| self.clone());
        RpcRouter::new(SERVICE)
            .ready_with(self.db.clone())
            .route::<QuoteCancellation, _, _>(move |req| {
                let s = d.clone();
                async move { s.quote(&req.viewer, req.booking_id, req.for_host).await }
            })
            .route::<ListBookings, _, _>(move |req| {
                let s = e.clone();
                async move { s.list(req).await }
            })
            .route::<CancelBooking, _, _>(move |req| {
                let s = c.clone();
                async move { s.cancel(req).await }
            })
            .route::<CreateBooking, _, _>(move |req| {
                let s = a.clone();
                async move { s.create(req).await }
            })
            .route::<shared::rpcs::ReplayCreateBooking, _, _>(move |req| {
                let s = j.clone();
                async move { s.replay_create(req.create).await }
            })
            .route::<GetBooking, _, _>(move |req| {
                let s = b.clone();
                async move { s.get_for(&req.viewer, req.booking_id).await }
            })
            .route::<shared::rpcs::GetBookingHistories, _, _>(move |req| {
                let s = h.clone();
                async move { s.histories_for(req).await }
            })
            .route::<shared::rpcs::GetBookingGuests, _, _>(move |req| {
                let s = g.clone();
                async move { s.guests_for(req).await }
            })
            // Payment's, before a payout run (services only: the gateway
            // has no field for it).
            .route::<shared::rpcs::GetRefundsAsked, _, _>(move |_| {
                let s = i.clone();
                async move { Ok(storage::refunds_asked(&s.db).await?) }
            })
            // Payment's too, before a payout run.
            .route::<shared::rpcs::GetCapturesHeard, _, _>(move |req| {
                let s = l.clone();
                async move {
                    if req.payment_ids.len() > shared::rpcs::CAPTURES_A_CALL {
                        return Err(AppError::bad_input(format!(
                            "at most {} payments at a time",
                            shared::rpcs::CAPTURES_A_CALL
                        )));
                    }
                    Ok(storage::captures_heard(&s.db, &req.payment_ids).await?)
                }
            })
            // Inventory's, before its sweeper releases overdue holds.
            .route::<shared::rpcs::GetConfirmedBookings, _, _>(move |req| {
                let s = k.clone();
                async move {
                    shared::rpcs::at_most_a_page(&req.booking_ids)?;
                    Ok(storage::confirmed_once(&s.db, &req.booking_ids).await?)
                }
            })
    }

    /// Creates a PENDING booking and asks inventory for the hold, once per
    /// idempotency key.
    pub async fn create(&self, mut req: CreateBooking) -> Result<BookingView, AppError> {
        req.by.may_book()?;
        domain::normalise(&mut req);
        domain::validate(&req)?;
        let fingerprint = domain::fingerprint(&req);
        if let shared::events::HoldItem::RoomNights { check_in, .. } = req.item
            && let Err(past) = shared::stay::check_not_past(check_in, Utc::now())
        {
            // A retry of a create taken before midnight keeps its answer.
            return self.replayed_once_made(&req).await?.ok_or(past);
        }
        let refused = self.sold_out.refusal(&req.item, Utc::now());
        let id = BookingId::new();
        // As stored (microseconds), so the answer's history is what a read gives.
        let now = Utc::now().trunc_subsecs(6);
        let hold = HoldRequested {
            booking_id: id,
            item: req.item.clone(),
            expires_at: now + self.hold_for,
            travelers: u32::try_from(req.travelers.len()).unwrap_or(u32::MAX),
        };
        let hold = Envelope::new(SERVICE, id.0, &hold);
        // The answer is the booking as created (PENDING), whatever the saga
        // does the moment it is committed; a retry gets it too.
        let view = storage::as_created(id, &req, now);
        if let Some(reason) = refused {
            // A copy of this create that was taken, or whose insert is
            // under way (it passed before the memory refused, here or on
            // another replica), keeps its answer. (A copy whose insert
            // comes after this answer makes the booking: nothing is kept.)
            if let Some(first) = self.replayed_once_made(&req).await? {
                return Ok(first);
            }
            debug!(item = ?req.item, "refused at once: this stay was just refused as sold out");
            return Err(AppError::new(
                ErrorCode::SoldOut,
                // The count is inventory's when it refused: capacity added since
                // is heard within the memory's span.
                format!("{reason} when last asked; nothing was booked"),
            ));
        }
        // One statement on PostgreSQL (the booking, its history, the hold's
        // request in the outbox); a transaction around the three elsewhere.
        // Two requests with one key: the second waits on the unique index
        // until the first commits, then inserts nothing and reads the first.
        let created = match self.db.get_database_backend() {
            sea_orm::DbBackend::Postgres => {
                storage::insert(&self.db, (id, &req, &fingerprint), &view, &hold, now).await?
            }
            _ => {
                let txn = self.db.begin().await?;
                let created =
                    storage::insert(&txn, (id, &req, &fingerprint), &view, &hold, now).await?;
                txn.commit().await?;
                created
            }
        };
        let Some(created) = created else {
            let first = storage::by_key(&self.db, &req.idempotency_key)
                .await?
                .ok_or_else(|| AppError::internal("idempotency key vanished"))?;
            return replay(first, &req);
        };
        self.outbox.committed();
        // The answer is what a read of the new row gives (checked wherever
        // the tests run).
        debug_assert_eq!(
            BookingView {
                history: view.history.clone(),
                ..created.view
            },
            view
        );
        info!(booking = %id, "booking created; hold requested");
        Ok(view)
    }

    /// The first answer to a create with `req`'s idempotency key, if it
    /// made a booking (IDEMPOTENCY_KEY_REUSED if that was another request).
    async fn replayed(&self, req: &CreateBooking) -> Result<Option<BookingView>, AppError> {
        storage::by_key(&self.db, &req.idempotency_key)
            .await?
            .map(|first| replay(first, req))
            .transpose()
    }

    /// [`Self::replayed`] once a copy of the create still being made (here
    /// or on another replica) has committed or given up: what a refusal
    /// answers a retry with. On PostgreSQL the key is tried as the create
    /// tries it, waiting for that copy, and let go (a read misses a copy
    /// not yet committed); SQLite's one connection has no copy half made.
    /// A try that fails (a row the table would not take) leaves the read.
    async fn replayed_once_made(
        &self,
        req: &CreateBooking,
    ) -> Result<Option<BookingView>, AppError> {
        if self.db.get_database_backend() == sea_orm::DbBackend::Postgres {
            let id = BookingId::new();
            let now = Utc::now().trunc_subsecs(6);
            let fingerprint = domain::fingerprint(req);
            let view = storage::as_created(id, req, now);
            let txn = self.db.begin().await?;
            let taken = storage::key_taken(&txn, (id, req, &fingerprint), &view, now).await;
            txn.rollback().await?;
            if matches!(taken, Ok(false)) {
                return Ok(None);
            }
        }
        self.replayed(req).await
    }

    /// [`shared::rpcs::ReplayCreateBooking`]: the gateway's question when
    /// it refuses a create that may be a retry.
    pub async fn replay_create(
        &self,
        mut req: CreateBooking,
    ) -> Result<Option<BookingView>, AppError> {
        domain::normalise(&mut req);
        self.replayed_once_made(&req).await
    }

    /// Cancels a booking. Before payment its hold is released; after
    /// payment (CONFIRMED) it is also refunded by the listing's policy as of
    /// now, the same figure `quote` shows. Cancelling a cancelled booking
    /// returns it unchanged.
    pub async fn cancel(&self, req: CancelBooking) -> Result<BookingView, AppError> {
        let key = shared::text::scoped_key(&req.idempotency_key)?;
        let id = req.booking_id;
        let txn = self.db.begin().await?;
        let Some(booking) = storage::by_id(&txn, id).await? else {
            return Err(AppError::not_found(format!("no booking {id}")));
        };
        let for_host = req.for_host.as_deref().map(str::trim);
        let administers = administers(&req.viewer, &booking.view);
        match for_host {
            Some(reason) => {
                shared::text::check_line("forHost", reason, 200, true)?;
                may_cancel_for_host(&req.viewer, &booking.view)?;
            }
            None if !req.viewer.owns(booking.view.booker.as_ref()) => {
                if administers {
                    return Err(AppError::new(
                        ErrorCode::Forbidden,
                        "its booker cancels it by the listing's policy; an admin of its \
                         region cancels it for its host, with `forHost` saying why (refunded \
                         in full)",
                    ));
                }
                return Err(forbidden(&req.viewer, &booking.view, "cancel"));
            }
            None => {}
        }
        // A second request with the key waits here on the first's row
        // until it commits, then replays its answer.
        let first = storage::claim_cancel_key(&txn, key, id, for_host).await?;
        if first.booking != id {
            return Err(AppError::new(
                ErrorCode::IdempotencyKeyReused,
                "this idempotency key was used to cancel a different booking",
            ));
        }
        // The same key with or without `forHost`, or another reason, is
        // another request: its answer (by the policy, say) is not this one's.
        if first.for_host.as_deref() != for_host {
            let was = match &first.for_host {
                Some(reason) => format!("for its host (\"{reason}\")"),
                None => "without `forHost`".to_owned(),
            };
            return Err(AppError::new(
                ErrorCode::IdempotencyKeyReused,
                format!(
                    "this idempotency key was used to cancel this booking {was}: a new request needs a key of its own"
                ),
            ));
        }
        if let Some(answer) = first.answer {
            return Ok(answer);
        }
        let by = match (&booking.view.booker, for_host) {
            (_, Some(reason)) => Canceller::Host(req.viewer.account_id, reason),
            (Some(booker), None) if req.viewer.booked(booker) => Canceller::Booker,
            _ => Canceller::Admin(req.viewer.account_id),
        };
        let events = match cancel_one(&txn, &booking.view, by, None, req.refunded).await? {
            Cancelled::Moved(events) => events,
            // Cancelled before (by its booker, say, by the policy): this
            // request gives nothing more back, and says so.
            Cancelled::Already if for_host.is_some() => {
                return Err(AppError::conflict(
                    "the booking was cancelled already; its history says what was refunded, \
                     and a platform admin can give the rest back (refundPayment)",
                ));
            }
            Cancelled::Already => Vec::new(),
            Cancelled::Not(status) => {
                return Err(AppError::conflict(format!(
                    "the booking is {status} and cannot be cancelled"
                )));
            }
            Cancelled::UnderWay(began) => {
                return Err(AppError::conflict(format!(
                    "its stay or departure began on {began} (China time): a booking under way \
                     can no longer be cancelled; a platform admin can refund part of it \
                     (refundPayment)"
                )));
            }
        };
        enqueue(&txn, &events).await?;
        let mut answer = storage::by_id(&txn, id)
            .await?
            .map(|b| b.view)
            .ok_or_else(|| AppError::internal("the booking vanished"))?;
        answer.history = storage::history_of(&txn, id).await?;
        storage::set_cancel_response(&txn, key, &answer).await?;
        txn.commit().await?;
        if !events.is_empty() {
            self.outbox.committed();
            self.giving_back(&answer.item);
            info!(booking = %id, "booking cancelled");
        }
        Ok(answer)
    }

    /// What cancelling the booking now would refund.
    pub async fn quote(
        &self,
        viewer: &Principal,
        id: BookingId,
        for_host: bool,
    ) -> Result<CancellationQuote, AppError> {
        // For the host, as `cancelBooking(forHost:)` asks: those who may
        // cancel it so (an admin of a booking not held yet is told to wait,
        // not that it is not theirs to see).
        let view = if for_host {
            let view = storage::by_id(&self.db, id)
                .await?
                .map(|s| s.view)
                .ok_or_else(|| AppError::not_found(format!("no booking {id}")))?;
            may_cancel_for_host(viewer, &view)?;
            view
        } else {
            self.get_for(viewer, id).await?
        };
        Ok(domain::quote(&view, Utc::now(), for_host))
    }

    /// One booking, if `viewer` may see it: its owner, its agency, an admin
    /// of its listing's region (FORBIDDEN for anyone else).
    pub async fn get_for(
        &self,
        viewer: &Principal,
        id: BookingId,
    ) -> Result<BookingView, AppError> {
        // Without the history: who shows it asks for it (GetBookingHistories).
        let view = storage::by_id(&self.db, id)
            .await?
            .map(|s| s.view)
            .ok_or_else(|| AppError::not_found(format!("no booking {id}")))?;
        if view.visible_to(viewer) {
            Ok(view)
        } else {
            Err(forbidden(viewer, &view, "see"))
        }
    }

    /// The histories of the bookings the viewer may see among those asked.
    pub async fn histories_for(
        &self,
        req: shared::rpcs::GetBookingHistories,
    ) -> Result<Vec<(BookingId, Vec<shared::rpcs::HistoryEntry>)>, AppError> {
        shared::rpcs::at_most_a_page(&req.booking_ids)?;
        let visible: Vec<BookingId> = storage::by_ids(&self.db, &req.booking_ids)
            .await?
            .into_iter()
            .filter(|s| s.view.visible_to(&req.viewer))
            .map(|s| s.view.id)
            .collect();
        Ok(storage::histories_of(&self.db, &visible).await?)
    }

    /// Who travels on the bookings the viewer may see among those asked,
    /// document numbers masked.
    pub async fn guests_for(
        &self,
        req: shared::rpcs::GetBookingGuests,
    ) -> Result<Vec<(BookingId, shared::rpcs::BookingGuests)>, AppError> {
        shared::rpcs::at_most_a_page(&req.booking_ids)?;
        Ok(storage::with_guests(&self.db, &req.booking_ids)
            .await?
            .into_iter()
            .filter(|b| b.stored.view.visible_to(&req.viewer))
            .map(|b| {
                (
                    b.stored.view.id,
                    domain::guests(b.travelers, b.contact, b.notes),
                )
            })
            .collect())
    }

    /// The viewer's bookings, newest first.
    pub async fn list(&self, req: ListBookings) -> Result<BookingPage, AppError> {
        if !(1..=100).contains(&req.first) {
            return Err(AppError::bad_input("ask for 1 to 100 bookings at a time"));
        }
        if let Some(odd) = req
            .statuses
            .iter()
            .find(|s| Status::parse(s.as_str()).is_none())
        {
            return Err(AppError::bad_input(format!("no booking status {odd}")));
        }
        if let (Some(from), Some(to)) = (req.starts_from, req.starts_to)
            && from > to
        {
            return Err(AppError::bad_input(format!(
                "startsFrom {from} is after startsTo {to}"
            )));
        }
        let only = || storage::ListFilter {
            statuses: &req.statuses,
            updated_since: req.updated_since,
            starts: (req.starts_from, req.starts_to),
            departure: req.departure_id,
            with_own: req.with_own,
        };
        let (bookings, has_next_page) = storage::list(
            &self.db,
            &req.viewer,
            (req.first, req.after, req.order),
            only(),
        )
        .await?;
        // By day, the page after a booking starts at its day: one not on
        // the viewer's list has none to start from (asked only when the
        // page came back empty, where that is the reason it could be).
        if bookings.is_empty()
            && req.order == shared::rpcs::BookingOrder::StartsOn
            && let Some(after) = req.after
            && !storage::on_list(&self.db, &req.viewer, &only(), after).await?
        {
            return Err(shared::rpcs::not_a_cursor(after));
        }
        let total_count = if req.count {
            Some(storage::count(&self.db, &req.viewer, only()).await?)
        } else {
            None
        };
        Ok(BookingPage {
            bookings,
            has_next_page,
            total_count,
        })
    }

    /// Reads one booking with its history.
    pub async fn get(&self, id: BookingId) -> Result<BookingView, AppError> {
        let mut view = storage::by_id(&self.db, id)
            .await?
            .map(|s| s.view)
            .ok_or_else(|| AppError::not_found(format!("no booking {id}")))?;
        view.history = storage::history_of(&self.db, id).await?;
        Ok(view)
    }

    async fn on_hold_granted(&self, env: Envelope, ev: HoldGranted) -> Result<(), HandlerError> {
        let Some(txn) = begin_once(&self.db, &env).await? else {
            return Ok(());
        };
        let changes = Changes {
            total: Some(ev.total),
            listing: Some(ev.listing),
            expires_at: Some(ev.expires_at),
            ..Changes::default()
        };
        let moved = storage::transition(
            &txn,
            ev.booking_id,
            &[Status::Pending],
            Status::AwaitingPayment,
            changes,
            "hold granted",
        )
        .await?;
        match moved {
            // Paid something else than the total (a capture of another
            // amount never confirms): it all goes back; the booking waits
            // for its payment (had payment itself captured it, that payment
            // stays its one live payment and the booking can only expire:
            // docs/decisions.md).
            Some(b) if b.captured_early.is_some_and(|paid| paid != ev.total) => {
                let why = format!(
                    "paid {} for a total of {}; refunded in full",
                    b.captured_early.unwrap_or_default(),
                    ev.total
                );
                storage::history(
                    &txn,
                    ev.booking_id,
                    Status::AwaitingPayment,
                    &why,
                    Utc::now(),
                )
                .await?;
                refund_early_capture(&txn, Some(&env), &b, &why).await?;
                // Given back: a later ending asks for it no second time.
                storage::forget_early_capture(&txn, ev.booking_id).await?;
            }
            // Paid before this answer was recorded (events out of order):
            // the capture confirms it now.
            Some(b) if b.captured_early.is_some() => {
                storage::transition(
                    &txn,
                    ev.booking_id,
                    &[Status::AwaitingPayment],
                    Status::Confirmed,
                    Changes::default(),
                    "payment captured (it arrived before the hold was recorded)",
                )
                .await?;
                info!(booking = %ev.booking_id, "booking confirmed by an earlier capture");
            }
            Some(_) => {}
            None => {
                let status = self.status_of(&txn, ev.booking_id).await?;
                match status {
                    // A repeated answer to a request that was already answered.
                    Some(Status::AwaitingPayment | Status::Confirmed) => {}
                    // Cancelled, expired or given up before the hold came back: give it back.
                    _ => {
                        warn!(booking = %ev.booking_id, ?status, "hold granted for a booking that ended; releasing");
                        let release = HoldReleaseRequested {
                            booking_id: ev.booking_id,
                            reason: "booking no longer pending".into(),
                        };
                        enqueue(&txn, &[env.follow(SERVICE, &release)]).await?;
                    }
                }
            }
        }
        txn.commit().await?;
        self.outbox.committed();
        Ok(())
    }

    async fn on_hold_rejected(&self, env: Envelope, ev: HoldRejected) -> Result<(), HandlerError> {
        let Some(txn) = begin_once(&self.db, &env).await? else {
            return Ok(());
        };
        // The code first, for clients that branch on it: "SOLD_OUT: …".
        // The listing, when inventory found it: a refused booking still says
        // what it was for and when (a departure's date is only there).
        let changes = Changes {
            reason: Some(format!("{}: {}", ev.code, ev.reason)),
            listing: ev.listing,
            ..Changes::default()
        };
        let moved = storage::transition(
            &txn,
            ev.booking_id,
            &[Status::Pending],
            Status::Rejected,
            changes,
            &format!("hold rejected: {}", ev.code),
        )
        .await?;
        if let Some(b) = moved {
            refund_early_capture(&txn, Some(&env), &b, "nothing could be held").await?;
            // True whether or not this commits: remembered before anyone
            // can read the REJECTED.
            if ev.code == ErrorCode::SoldOut {
                self.sold_out
                    .refused(&b.view.item, env.occurred_at, &ev.reason, Utc::now());
            }
        }
        txn.commit().await?;
        self.outbox.committed();
        Ok(())
    }

    /// Capacity given back: at booking's request (history only, once), or by
    /// inventory's own sweeper for a hold past its deadline, which leaves a
    /// booking still awaiting payment to booking's own expiry.
    async fn on_hold_released(&self, env: Envelope, ev: HoldReleased) -> Result<(), HandlerError> {
        let Some(txn) = begin_once(&self.db, &env).await? else {
            return Ok(());
        };
        storage::lock(&txn, ev.booking_id).await?;
        let current = storage::by_id(&txn, ev.booking_id).await?;
        let status = current.as_ref().and_then(|b| Status::parse(&b.view.status));
        let note = match status {
            // Inventory's sweeper released the hold of a booking still
            // awaiting payment: booking was down past the hold's grace, or
            // kept the booking for a payment in flight. Booking's own expiry
            // decides: it asks payment, patiently, and keeps a booking whose
            // capture is on its way (the capture confirms it; inventory
            // takes the room again, or refuses and all is refunded), else
            // expires it at once, the booking being past its deadline.
            // Expired here, a booking paid in time whose capture was queued
            // behind this release was refunded.
            Some(Status::AwaitingPayment) if ev.expired => Some(RELEASED_WHILE_AWAITING),
            // Not for a hold that expired under a booking paid within the
            // grace: its confirmation takes the capacity again, and its
            // release, if it is ever cancelled, is the one to record.
            Some(Status::Confirmed) if ev.expired => None,
            // Once: a cancel while PENDING asks for the release, and so does
            // the grant that comes after it; inventory answers each, and the
            // two answers may be handled at once.
            Some(_) => Some(RELEASED),
            None => None,
        };
        if let (Some(status), Some(note)) = (status, note)
            && !storage::has_cause(&txn, ev.booking_id, note).await?
        {
            storage::history(&txn, ev.booking_id, status, note, Utc::now()).await?;
        }
        txn.commit().await?;
        self.outbox.committed();
        // Room again: a stay refused as sold out may fit now (or until a
        // late capture takes it again).
        if let Some(b) = current {
            self.sold_out
                .released(&b.view.item, env.occurred_at, Utc::now());
        }
        Ok(())
    }

    /// Inventory could not take an expired hold again for a booking that
    /// was confirmed meanwhile: it cannot stand; cancel and refund it all.
    async fn on_commit_refused(
        &self,
        env: Envelope,
        ev: HoldCommitRefused,
    ) -> Result<(), HandlerError> {
        let Some(txn) = begin_once(&self.db, &env).await? else {
            return Ok(());
        };
        // Locked: a cancellation racing this is either before (read here)
        // or after (finds it CANCELLED).
        storage::lock(&txn, ev.booking_id).await?;
        let Some(current) = storage::by_id(&txn, ev.booking_id).await? else {
            txn.commit().await?;
            return Ok(());
        };
        let refund = current.view.total.unwrap_or(Fen::ZERO);
        // Asked by its id, as every refund is: a payout run holds back the
        // host's share of a refund payment has not heard of yet.
        let request = (refund > Fen::ZERO).then(|| {
            env.follow(
                SERVICE,
                &RefundRequested {
                    booking_id: ev.booking_id,
                    amount: None,
                    // Inventory's: why the capacity could not be had (sold,
                    // or closed, taken off sale, the departure cancelled).
                    reason: ev.reason.clone(),
                    percent_of_left: None,
                },
            )
        });
        let changes = Changes {
            reason: Some(format!("{}: {}; refunded in full", ev.code, ev.reason)),
            refund_due: Some(refund),
            refund_request: request.as_ref().map(|r| r.id),
            ..Changes::default()
        };
        let moved = storage::transition(
            &txn,
            ev.booking_id,
            &[Status::Confirmed],
            Status::Cancelled,
            changes,
            &format!("{}; full refund", ev.reason),
        )
        .await?;
        // Cancelled by its booker since it was confirmed, the policy's share
        // promised back: the stay could never have been had, so the rest
        // goes back too (a cancellation that promised it all is left be).
        let cancelled_since = moved.is_none()
            && current.view.status == Status::Cancelled.as_str()
            && current.view.refund_due.unwrap_or(Fen::ZERO) < refund;
        if cancelled_since && let Some(request) = request {
            let step = format!("{}; the rest refunded", ev.reason);
            refund_the_rest(&txn, ev.booking_id, refund, request, (&ev.reason, &step)).await?;
            warn!(booking = %ev.booking_id, "a cancelled booking lost its expired hold; refunding the rest");
        } else if let Some(request) = request.filter(|_| moved.is_some()) {
            storage::refund_whole(&txn, ev.booking_id).await?;
            enqueue(&txn, &[request]).await?;
            warn!(booking = %ev.booking_id, "a confirmed booking lost its expired hold; refunding");
        }
        txn.commit().await?;
        self.outbox.committed();
        Ok(())
    }

    /// An operator cancelled a departure: each booking on it is cancelled,
    /// those paid refunded in full; one that had already ended stays as it
    /// is. All in the transaction of the event's inbox row.
    async fn on_departure_cancelled(
        &self,
        env: Envelope,
        ev: DepartureCancelled,
    ) -> Result<(), HandlerError> {
        let Some(txn) = begin_once(&self.db, &env).await? else {
            return Ok(());
        };
        let by = Canceller::Operator(ev.starts_on, &ev.reason);
        let mut events = Vec::new();
        let bookings = storage::by_ids(&txn, &ev.bookings).await?;
        for booking in &bookings {
            match cancel_one(&txn, &booking.view, by, Some(&env), None).await? {
                Cancelled::Moved(moved) => events.extend(moved),
                Cancelled::Already => {
                    cancelled_as_its_departure_was(&txn, booking.view.id, &env, &ev).await?;
                }
                _ => {}
            }
        }
        enqueue(&txn, &events).await?;
        txn.commit().await?;
        self.outbox.committed();
        // A departure remembered as sold out is asked again: inventory
        // now refuses it as cancelled (CLOSED), which says more.
        for booking in &bookings {
            self.giving_back(&booking.view.item);
        }
        info!(departure = %ev.departure_id, bookings = ev.bookings.len(), "departure cancelled");
        Ok(())
    }

    async fn on_payment_captured(
        &self,
        env: Envelope,
        ev: PaymentCaptured,
    ) -> Result<(), HandlerError> {
        let Some(txn) = begin_once(&self.db, &env).await? else {
            return Ok(());
        };
        // Handled before, its inbox row pruned since (a copy replayed from
        // a dead-letter queue weeks later): nothing more to do. Taken for a
        // capture after the booking ended, it refunded a CONFIRMED stay.
        if storage::captures_heard(&txn, &[ev.payment_id])
            .await?
            .contains(&ev.payment_id)
        {
            txn.commit().await?;
            return Ok(());
        }
        let confirm = |txn| {
            storage::transition(
                txn,
                ev.booking_id,
                &[Status::AwaitingPayment],
                Status::Confirmed,
                Changes {
                    captured: Some(ev.split),
                    ..Changes::default()
                },
                "payment captured",
            )
        };
        let mut moved = confirm(&txn).await?;
        if moved.is_none() {
            // Not awaiting payment when asked: decide under the row's lock,
            // so the grant cannot commit between the statements below (a
            // capture meeting PENDING, then AWAITING_PAYMENT, was taken for
            // one after the booking ended and refunded).
            storage::lock(&txn, ev.booking_id).await?;
            moved = confirm(&txn).await?;
        }
        let mut known = true;
        if moved.is_some() {
            // Said once committed (a commit that failed, on a full disk,
            // logged "confirmed" at every try).
        } else if storage::record_early_capture(&txn, ev.booking_id, &ev.split).await? {
            // Out of order: the hold's answer is not recorded yet. It
            // confirms the booking when it comes (or refunds it).
            storage::history(
                &txn,
                ev.booking_id,
                Status::Pending,
                "payment captured before the hold was recorded; waiting for it",
                Utc::now(),
            )
            .await?;
        } else if let Some((stored, status)) = storage::by_id(&txn, ev.booking_id)
            .await?
            .and_then(|b| Status::parse(&b.view.status).map(|s| (b, s)))
        {
            // A cancelled booking's history says how it ended (read once).
            let history = if status == Status::Cancelled {
                storage::history_of(&txn, ev.booking_id).await?
            } else {
                Vec::new()
            };
            if status == Status::AwaitingPayment && stored.view.total != Some(ev.split.gross) {
                // A capture of another amount than the total never
                // confirms: it all goes back; the booking waits for its
                // payment.
                let why = format!(
                    "paid {} for a total of {}; refunded in full",
                    ev.split.gross,
                    stored.view.total.unwrap_or_default()
                );
                storage::history(&txn, ev.booking_id, status, &why, Utc::now()).await?;
                ask_full_refund(&txn, Some(&env), ev.booking_id, ev.split.gross, why).await?;
                warn!(booking = %ev.booking_id, "a capture of another amount than the total; refunding");
            } else if let Some(why) = departure_cancelled_first(&history) {
                // Cancelled once the operator had cancelled the departure,
                // paid (before or after) as booking heard last: the trip
                // could never have been had, all of it goes back.
                let request = env.follow(
                    SERVICE,
                    &RefundRequested {
                        booking_id: ev.booking_id,
                        amount: None,
                        reason: why.clone(),
                        percent_of_left: None,
                    },
                );
                let step =
                    format!("payment heard of after the cancellation; {why}; refunded in full");
                let gross = ev.split.gross;
                refund_the_rest(&txn, ev.booking_id, gross, request, (&why, &step)).await?;
                warn!(booking = %ev.booking_id, "paid, then cancelled after its departure was; refunding in full");
            } else if let Some(at) = paid_before_cancelling(&history, env.occurred_at) {
                // The traveler had paid when it cancelled; booking heard of the
                // payment only after: the cancellation was one after payment,
                // refunded by the policy as of then (all of it was refunded,
                // whatever the policy, when this went back in full).
                let view = &stored.view;
                let days = domain::days_before(view, at).unwrap_or(0);
                let policy = view
                    .listing
                    .as_ref()
                    .map(|l| l.cancellation_policy.clone())
                    .unwrap_or_default();
                let (percent, refund) = (
                    policy.refund_percent(days),
                    policy.refund(ev.split.gross, days),
                );
                let cause = format!(
                    "{PAID_BEFORE_CANCELLING}; refund {refund} ({percent}% by the policy, {days} \
                     {} ahead)",
                    if days == 1 { "day" } else { "days" }
                );
                let now = Utc::now();
                storage::history(&txn, ev.booking_id, Status::Cancelled, &cause, now).await?;
                // What it keeps counts for its partnerships, as a booking
                // confirmed then cancelled does (it counted nowhere).
                let kept = capture_kept(&stored, ev.split).map(|kept| Envelope {
                    occurred_at: now,
                    ..env.follow(SERVICE, &kept)
                });
                let request = (refund > Fen::ZERO).then(|| {
                    let refund = RefundRequested {
                        booking_id: ev.booking_id,
                        amount: Some(refund),
                        // Whoever cancelled it, as its reason names them.
                        reason: view
                            .reason
                            .clone()
                            .unwrap_or_else(|| "cancelled by the booker".into()),
                        percent_of_left: Some(u32::from(percent)),
                    };
                    env.follow(SERVICE, &refund)
                });
                let request_id = request.as_ref().map(|r| r.id);
                storage::set_refund_due(&txn, ev.booking_id, refund, request_id).await?;
                enqueue(&txn, &request.into_iter().chain(kept).collect::<Vec<_>>()).await?;
                info!(booking = %ev.booking_id, %refund, "paid before it was cancelled; refunded by the policy");
            } else {
                // Captured after the booking expired or was cancelled (its hold
                // is gone or going): never confirm over capacity, give it all back.
                storage::history(
                    &txn,
                    ev.booking_id,
                    status,
                    "payment captured after the booking ended; full refund requested",
                    Utc::now(),
                )
                .await?;
                let reason = format!("paid after the booking was {}", status.as_str());
                ask_full_refund(&txn, Some(&env), ev.booking_id, ev.split.gross, reason).await?;
                warn!(booking = %ev.booking_id, ?status, "payment captured for a booking that ended; refunding");
            }
        } else {
            // Money for a booking this service never had: give it back.
            let refund = RefundRequested {
                booking_id: ev.booking_id,
                amount: None,
                reason: "paid for an unknown booking".into(),
                percent_of_left: None,
            };
            enqueue(&txn, &[env.follow(SERVICE, &refund)]).await?;
            warn!(booking = %ev.booking_id, "payment captured for an unknown booking; refunding");
            // Not marked handled: no booking lists its refund as asked
            // (`refunds_asked`), so a payout run keeps the host's share of
            // it back until payment has reserved the refund.
            known = false;
        }
        // Whatever came of it, in the same transaction as the refund it
        // asked for, if any: a payout run keeps the host's share of a
        // capture back until booking has handled it, and asks which it has
        // before it asks which refunds booking has asked for.
        if known {
            storage::capture_heard(&txn, ev.payment_id, ev.booking_id).await?;
        }
        txn.commit().await?;
        self.outbox.committed();
        if moved.is_some() {
            info!(booking = %ev.booking_id, "booking confirmed");
        }
        Ok(())
    }

    async fn on_payment_refunded(
        &self,
        env: Envelope,
        ev: PaymentRefunded,
    ) -> Result<(), HandlerError> {
        let Some(txn) = begin_once(&self.db, &env).await? else {
            return Ok(());
        };
        if let Some(status) = self.status_of(&txn, ev.booking_id).await? {
            storage::add_refunded(&txn, ev.booking_id, ev.split.gross).await?;
            if let Some(request) = ev.request {
                refund_answered(&txn, ev.booking_id, request, ev.split.gross).await?;
            }
            let cause = format!("refunded {}: {}", ev.split.gross, ev.reason);
            storage::history(&txn, ev.booking_id, status, &cause, Utc::now()).await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Payment had nothing left to give back for a refund booking asked
    /// (refunds made meanwhile took it all): nothing is due any more.
    async fn on_refund_refused(
        &self,
        env: Envelope,
        ev: RefundRefused,
    ) -> Result<(), HandlerError> {
        let Some(txn) = begin_once(&self.db, &env).await? else {
            return Ok(());
        };
        if let Some(status) = self.status_of(&txn, ev.booking_id).await?
            && refund_answered(&txn, ev.booking_id, ev.request, Fen::ZERO).await?
        {
            let cause = format!("no refund: {}", ev.reason);
            storage::history(&txn, ev.booking_id, status, &cause, Utc::now()).await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Booking has just asked inventory to give back `item`'s capacity:
    /// a stay of its listing refused as sold out may fit again, so it is
    /// no longer refused at once (nor is a refusal read before now, if
    /// one is delivered late). The release, when it comes, says so again.
    fn giving_back(&self, item: &shared::events::HoldItem) {
        let now = Utc::now();
        self.sold_out.released(item, now, now);
    }

    /// A booking's current status, if it exists, its row locked: a history
    /// note written with it waits for a move committing meanwhile, and
    /// says the status after it (read before, a note came after the
    /// sweeper's EXPIRED saying AWAITING_PAYMENT).
    async fn status_of<C: sea_orm::ConnectionTrait>(
        &self,
        conn: &C,
        id: BookingId,
    ) -> Result<Option<Status>, sea_orm::DbErr> {
        storage::lock(conn, id).await?;
        Ok(storage::by_id(conn, id)
            .await?
            .and_then(|b| Status::parse(&b.view.status)))
    }

    async fn on_payment_failed(
        &self,
        env: Envelope,
        ev: PaymentFailed,
    ) -> Result<(), HandlerError> {
        let Some(txn) = begin_once(&self.db, &env).await? else {
            return Ok(());
        };
        // The booking keeps its state (usually AWAITING_PAYMENT: the
        // traveler may pay again); the history notes the failure in it.
        if let Some(status) = self.status_of(&txn, ev.booking_id).await? {
            storage::history(
                &txn,
                ev.booking_id,
                status,
                &format!("payment failed: {}", ev.reason),
                Utc::now(),
            )
            .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Asks inventory again for bookings still PENDING after `pending_retry`
    /// (the request or its answer was dead-lettered), and rejects those that
    /// used up their attempts, releasing whatever may have been held: no
    /// booking stays PENDING. Returns how many were moved.
    pub async fn retry_unanswered(&self) -> Result<usize, sea_orm::DbErr> {
        let now = Utc::now();
        let txn = self.db.begin().await?;
        let stuck = storage::unanswered(&txn, now - self.pending_retry, 100).await?;
        let mut events = Vec::with_capacity(stuck.len());
        for b in &stuck {
            if b.attempts >= self.hold_attempts {
                let changes = Changes {
                    reason: Some(
                        "SERVICE_UNAVAILABLE: inventory did not answer; nothing is held".into(),
                    ),
                    ..Changes::default()
                };
                if let Some(moved) = storage::transition(
                    &txn,
                    b.id,
                    &[Status::Pending],
                    Status::Rejected,
                    changes,
                    "hold requests unanswered",
                )
                .await?
                {
                    let release = HoldReleaseRequested {
                        booking_id: b.id,
                        reason: "hold requests unanswered".into(),
                    };
                    events.push(Envelope::new(SERVICE, b.id.0, &release));
                    refund_early_capture(&txn, None, &moved, "nothing could be held").await?;
                }
            } else {
                storage::count_attempt(&txn, b.id, now).await?;
                let hold = HoldRequested {
                    booking_id: b.id,
                    item: b.item.clone(),
                    expires_at: now + self.hold_for,
                    travelers: b.travelers,
                };
                events.push(Envelope::new(SERVICE, b.id.0, &hold));
                warn!(booking = %b.id, attempt = b.attempts + 1, "no answer to the hold request; asking again");
            }
        }
        enqueue(&txn, &events).await?;
        txn.commit().await?;
        if !events.is_empty() {
            self.outbox.committed();
        }
        Ok(stuck.len())
    }

    /// Expires bookings whose payment deadline passed and asks inventory to
    /// release their holds; returns how many expired.
    pub async fn expire_overdue(&self) -> Result<usize, sea_orm::DbErr> {
        // Asked before the bookings are locked (no RPC under a row lock):
        // payment refuses to charge past a booking's deadline, also after
        // recording the payment, so none it did not count starts later.
        let now = Utc::now();
        let since = *self
            .expiry_from
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let asked = self.payments_in_flight(now, since).await?;
        let txn = self.db.begin().await?;
        let overdue = storage::overdue(&txn, now, since, EXPIRY_PAGE, true).await?;
        // A full page: the next round reads on from its last deadline (a
        // hundred bookings kept for captures whose news was dead-lettered
        // held the head of every round, and no later booking expired); a
        // page not full: back to the oldest.
        let next = match overdue.last() {
            Some((_, at)) if overdue.len() as u64 == EXPIRY_PAGE => Some(*at),
            _ => None,
        };
        *self
            .expiry_from
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
        // With payment asked, a booking expires when payment said it has
        // none in flight, or when the wait is over; one it was not asked
        // about (another replica had it locked, a later one came into the
        // round) waits for the next round.
        let ids: Vec<BookingId> = overdue
            .into_iter()
            .filter(|(id, expires_at)| match &asked {
                None => true,
                Some(asked) if now >= *expires_at + self.payment_wait => asked.expires_late(id),
                Some(asked) => {
                    asked.unanswered || (asked.asked.contains(id) && !asked.flying.contains(id))
                }
            })
            .map(|(id, _)| id)
            .collect();
        let (mut events, mut items) = (Vec::with_capacity(ids.len()), Vec::new());
        for id in &ids {
            let changes = Changes {
                reason: Some("not paid in time".into()),
                ..Changes::default()
            };
            if let Some(expired) = storage::transition(
                &txn,
                *id,
                &[Status::AwaitingPayment],
                Status::Expired,
                changes,
                "payment deadline passed",
            )
            .await?
            {
                let release = HoldReleaseRequested {
                    booking_id: *id,
                    reason: "expired".into(),
                };
                events.push(Envelope::new(SERVICE, id.0, &release));
                items.push(expired.view.item);
            }
        }
        enqueue(&txn, &events).await?;
        txn.commit().await?;
        if !events.is_empty() {
            self.outbox.committed();
        }
        for item in &items {
            self.giving_back(item);
        }
        Ok(events.len())
    }

    /// Of `late` (overdue past the wait), those with a captured payment not
    /// given back in full (a wrong amount refunded is done with); None when
    /// payment does not say (they expire, as before).
    async fn captured_of(
        &self,
        bus: &dyn shared::bus::Bus,
        late: &[BookingId],
    ) -> Option<Vec<BookingId>> {
        if late.is_empty() {
            return Some(Vec::new());
        }
        let ask = shared::rpcs::GetBookingsMoney {
            booking_ids: late.to_vec(),
            viewer: Principal::platform(),
        };
        let asking = shared::bus::call_within(bus, &ask, IN_FLIGHT_ASK_WITHIN);
        match shared::bus::patiently(asking).await {
            Ok(money) => Some(
                money
                    .into_iter()
                    .filter(|m| {
                        let captured: i64 = m
                            .payments
                            .iter()
                            .filter(|p| p.status == "CAPTURED")
                            .map(|p| p.amount.0)
                            .sum();
                        let given_back: i64 = m
                            .refunds
                            .iter()
                            .filter(|r| r.status != "FAILED" && r.status != "REFUSED")
                            .map(|r| r.amount.0)
                            .sum();
                        captured > given_back
                    })
                    .map(|m| m.booking_id)
                    .collect(),
            ),
            Err(e) => {
                warn!(error = %e, "payment did not say which late bookings were paid; expiring them");
                None
            }
        }
    }

    /// The overdue bookings payment was asked about, and those of them
    /// with a payment in flight; None when it was not asked (no bus, no
    /// wait) or did not answer in time: every overdue booking expires then,
    /// and a capture after that is refunded in full.
    async fn payments_in_flight(
        &self,
        now: chrono::DateTime<Utc>,
        since: Option<chrono::DateTime<Utc>>,
    ) -> Result<Option<InFlight>, sea_orm::DbErr> {
        let Some(bus) = self
            .payments
            .as_ref()
            .filter(|_| self.payment_wait > Duration::zero())
            .and_then(std::sync::Weak::upgrade)
        else {
            return Ok(None);
        };
        // Read without locks (a row another replica holds is asked about
        // too): those still within the wait are asked whether a payment is
        // in flight; those past it (booking was down, or behind on its
        // events) whether one was captured — its news is queued for this
        // very booking, which expired it unasked and then refunded a
        // payment made in time (an operator's restart: half of 300).
        let within = now - self.payment_wait;
        let (asked, late): (Vec<_>, Vec<_>) =
            storage::overdue(&self.db, now, since, EXPIRY_PAGE, false)
                .await?
                .into_iter()
                .partition(|(_, expires_at)| *expires_at >= within);
        let asked: Vec<BookingId> = asked.into_iter().map(|(id, _)| id).collect();
        let late: Vec<BookingId> = late.into_iter().map(|(id, _)| id).collect();
        let (late, captured) = match self.captured_of(bus.as_ref(), &late).await {
            Some(captured) => (Some(late), captured),
            None => (None, Vec::new()),
        };
        if asked.is_empty() {
            return Ok(Some(InFlight {
                late,
                captured,
                ..InFlight::default()
            }));
        }
        let ask = shared::rpcs::PaymentsInFlight {
            booking_ids: asked.clone(),
        };
        // Patient: payment restarting is waited for, not taken for gone
        // (which would expire bookings whose payments are in flight).
        let asking = shared::bus::call_within(bus.as_ref(), &ask, IN_FLIGHT_ASK_WITHIN);
        match shared::bus::patiently(asking).await {
            Ok(flying) => Ok(Some(InFlight {
                asked,
                flying,
                late,
                captured,
                unanswered: false,
            })),
            Err(e) => {
                warn!(error = %e, "payment did not say which payments are in flight; expiring at the deadline");
                // The late ones it spoke of still go by what it said.
                Ok(Some(InFlight {
                    late,
                    captured,
                    unanswered: true,
                    ..InFlight::default()
                }))
            }
        }
    }
}

/// Whether `viewer` administers the booking's listing's region. A booking
/// not held yet has no listing to judge by: a platform admin administers
/// every region all the same.
fn administers(viewer: &Principal, view: &BookingView) -> bool {
    viewer.is_platform_admin()
        || view
            .listing
            .as_ref()
            .is_some_and(|l| viewer.administers(l.region_code))
}

/// Whether `viewer` may cancel the booking for its host (`forHost`), or
/// have that quoted: an admin of its listing's region or a platform admin,
/// who did not book it.
fn may_cancel_for_host(viewer: &Principal, view: &BookingView) -> Result<(), AppError> {
    // Its booker cancels by the policy, admin or not.
    if view.booker.as_ref().is_some_and(|b| viewer.booked(b)) {
        return Err(AppError::new(
            ErrorCode::Forbidden,
            "you booked it: cancel it as its booker, without `forHost` (by the \
             listing's policy)",
        ));
    }
    if administers(viewer, view) {
        return Ok(());
    }
    if view.listing.is_none() && viewer.role == Role::RegionAdmin {
        return Err(AppError::conflict(
            "the booking is not held yet, so its listing (and whose region it is in) \
             is not known: try again in a moment",
        ));
    }
    Err(AppError::new(
        ErrorCode::Forbidden,
        shared::rpcs::FOR_HOST_IS_ADMINS,
    ))
}

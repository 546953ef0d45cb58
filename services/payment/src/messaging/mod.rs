//! Payment's RPC handlers: pay a booking through the provider, post the
//! ledger, emit `payment.captured` or `payment.failed` through the outbox.

use crate::SERVICE;
use crate::domain::{capture_legs, refund_legs};
use crate::provider::{PaymentProvider, ProviderError};
use crate::storage;
use sea_orm::{DatabaseConnection, DbBackend, TransactionTrait};
use sha2::{Digest, Sha256};
use shared::bus::{EventRouter, HandlerError};
use shared::envelope::Envelope;
use shared::events::{
    PaymentCaptured, PaymentFailed, PaymentRefunded, RefundRefused, RefundRequested,
};
use shared::ids::{BookingId, PaymentId, RefundId};
use shared::money::Fen;
use shared::money::{Split, SplitRates};
use shared::outbox::{OutboxSignal, enqueue};
use shared::rpc::RpcRouter;
use shared::rpcs::{
    GetBookingsMoney, GetFundTotals, GetHostBalances, GetWelfareFund, HostBalance, ListPayoutRuns,
    ListReconciliation, PayBooking, PaymentView, PaymentsInFlight, PayoutRun, PayoutRunPage,
    ReconciliationPage, RefundPayment, RefundView, RunPayouts, WelfareFundPage,
};
use shared::{AppError, ErrorCode};
use std::sync::Arc;
use tracing::{error, info, warn};

/// How long from a payment's first request a retry of it, the payment still
/// waiting for the provider, waits for that request's answer (under the
/// gateway's RPC deadline, 5 s by default). A retry sent later asks the
/// provider again at once: the first request has had its time, and may be
/// gone (its process killed) — a retry that waited its own 4 s and then
/// called the provider answered past the gateway's deadline.
const RETRY_WAITS_FOR_FIRST: std::time::Duration = std::time::Duration::from_secs(4);

/// When a retry stops waiting for the first request made at `began`:
/// [`RETRY_WAITS_FOR_FIRST`] after it (now, if that is past; a clock that
/// puts `began` ahead of now waits the whole time, no longer).
fn first_waited_until(began: chrono::DateTime<chrono::Utc>) -> tokio::time::Instant {
    let since = (chrono::Utc::now() - began)
        .to_std()
        .unwrap_or(std::time::Duration::ZERO);
    tokio::time::Instant::now() + RETRY_WAITS_FOR_FIRST.saturating_sub(since)
}

/// What the reconciler writes in its log, each entry one of these.
pub const RECONCILIATION_KINDS: [&str; 5] = [
    "CAPTURED_LATE",
    "CLOSED_UNCHARGED",
    "REFUND_COMPLETED",
    "REFUND_DECLINED",
    "MISMATCH",
];

/// Provider calls per payment when it times out.
const PROVIDER_ATTEMPTS: usize = 3;

/// How far back a payout run looks for cancelled departures whose
/// bookings' refunds booking may not have asked for yet (booking asks
/// within moments; a week covers a booking service that was down).
const CANCELLED_DEPARTURES_WITHIN: chrono::Duration = chrono::Duration::days(7);

/// What the handlers share.
#[derive(Clone)]
pub struct Payments {
    /// Payment's database.
    pub db: DatabaseConnection,
    /// Wakes the outbox relay.
    pub outbox: OutboxSignal,
    /// The payment provider.
    pub provider: Arc<dyn PaymentProvider>,
    /// Fee and fund rates.
    pub rates: SplitRates,
    /// The bus to ask booking and inventory, before a payout, which refunds
    /// are on their way (none: only those payment has heard of are kept
    /// back). Weak: the in-process bus holds these handlers.
    pub bus: Option<std::sync::Weak<dyn shared::bus::Bus>>,
    /// Reports that read much of the ledger (an agency's commission, host
    /// balances) run at most half the database pool at once, so that
    /// payments and refunds always find a connection: a page of agencies'
    /// yearly commissions, read in parallel, took every connection and
    /// `payBooking` timed out waiting for one.
    pub reports: Arc<tokio::sync::Semaphore>,
}

/// The permits of [`Payments::reports`] for a pool of `pool` connections.
pub fn report_permits(pool: u32) -> usize {
    usize::try_from(pool / 2).unwrap_or(1).max(1)
}

/// How long a report waits for its turn at most (less when its caller
/// gives up sooner).
const REPORT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A report's turn: a permit of `reports`, waited for only while the caller
/// still waits. A report queued past that would keep one of the queue's
/// deliveries — and the `payBooking`s behind it — for an answer nobody
/// reads.
async fn report_turn(
    reports: &tokio::sync::Semaphore,
) -> Result<tokio::sync::SemaphorePermit<'_>, AppError> {
    let wait = shared::bus::within_callers_wait(REPORT_WAIT);
    match tokio::time::timeout(wait, reports.acquire()).await {
        Ok(Ok(permit)) => Ok(permit),
        Ok(Err(_)) => Err(AppError::new(
            ErrorCode::ServiceUnavailable,
            "payment is stopping",
        )),
        Err(_) => Err(AppError::new(ErrorCode::ServiceUnavailable, REPORTS_BUSY)),
    }
}

/// The answer to a report that did not get its turn in time.
pub const REPORTS_BUSY: &str = "payment is busy with other reports; try again shortly";

impl Payments {
    /// The events payment reacts to.
    pub fn events(&self) -> EventRouter {
        let s = self.clone();
        EventRouter::new("payment.events").on::<RefundRequested, _, _>(move |env, ev| {
            let s = s.clone();
            async move { s.on_refund_requested(env, ev).await }
        })
    }

    /// The RPC methods payment answers.
    pub fn rpc(&self) -> RpcRouter {
        let [a, b, c, d, e] = [(); 5].map(|()| self.clone());
        let [f, h, i, m, n] = [(); 5].map(|()| self.clone());
        let in_flight = self.clone();
        RpcRouter::new(SERVICE)
            .ready_with(self.db.clone())
            .route::<PaymentsInFlight, _, _>(move |req| {
                let s = in_flight.clone();
                async move {
                    shared::rpcs::at_most_a_page(&req.booking_ids)?;
                    Ok(storage::paying(&s.db, &req.booking_ids).await?)
                }
            })
            .route::<RefundPayment, _, _>(move |req| {
                let s = f.clone();
                async move { s.refund_payment(req).await }
            })
            .route::<GetBookingsMoney, _, _>(move |req| {
                let s = m.clone();
                async move {
                    shared::rpcs::at_most_a_page(&req.booking_ids)?;
                    Ok(storage::money_of(&s.db, &req.booking_ids, &req.viewer).await?)
                }
            })
            .route::<ListPayoutRuns, _, _>(move |req| {
                let s = h.clone();
                async move { s.payout_runs(req).await }
            })
            .route::<ListReconciliation, _, _>(move |req| {
                let s = i.clone();
                async move { s.reconciliation_log(req).await }
            })
            .route::<PayBooking, _, _>(move |req| {
                let s = a.clone();
                async move { s.pay(req).await }
            })
            .route::<GetWelfareFund, _, _>(move |req| {
                let s = b.clone();
                async move { s.welfare_fund(req).await }
            })
            .route::<GetFundTotals, _, _>(move |req| {
                let s = c.clone();
                async move {
                    if let Some(year) = req.year.filter(|y| !shared::policy::YEARS.contains(y)) {
                        return Err(AppError::bad_input(format!(
                            "year: {year} is not between {} and {}",
                            shared::policy::YEARS.start(),
                            shared::policy::YEARS.end()
                        )));
                    }
                    Ok(storage::fund_totals(&s.db, req.year).await?)
                }
            })
            .route::<GetHostBalances, _, _>(move |req| {
                let s = d.clone();
                async move {
                    // A region's admins see its hosts' (what its households
                    // are owed), a platform admin every host's. The preview
                    // of a run (`payable`) asks booking and inventory and
                    // records what it heard: a run's, the platform's.
                    if req.payable && req.by.role == shared::auth::Role::RegionAdmin {
                        return Err(AppError::new(
                            ErrorCode::Forbidden,
                            "`payable: true` previews a payout run, a platform admin's; a \
                             region's admins see its hosts' balances without it",
                        ));
                    }
                    if req.payable
                        || !(req.by.is_platform_admin()
                            || req.by.role == shared::auth::Role::RegionAdmin)
                    {
                        platform_admin(&req.by)?;
                    }
                    let _report = report_turn(&s.reports).await?;
                    let now = chrono::Utc::now();
                    let balances = match (req.up_to, req.payable) {
                        // What run_payouts would pay: its own reading.
                        (up_to, true) => {
                            let up_to = up_to.unwrap_or(now);
                            if up_to > now {
                                return Err(AppError::bad_input(FUTURE_PERIOD));
                            }
                            let (asked, asked_at) = s.refunds_owed().await?;
                            storage::payable_balances(&s.db, up_to, (&asked, asked_at)).await?
                        }
                        (Some(at), false) => storage::host_balances_at(&s.db, at).await?,
                        (None, false) => storage::host_balances(&s.db, now).await?,
                    };
                    Ok(balances
                        .into_iter()
                        .filter(|(_, _, region)| req.by.administers(*region))
                        .map(|(host_id, owed, _)| HostBalance { host_id, owed })
                        .collect())
                }
            })
            .route::<shared::rpcs::GetAgencyCommission, _, _>(move |req| {
                let s = n.clone();
                async move {
                    if !(req.by.is_platform_admin() || req.by.agency_id == Some(req.agency_id)) {
                        return Err(AppError::new(
                            ErrorCode::Forbidden,
                            "only the agency itself and platform admins see its commission",
                        ));
                    }
                    if req.from >= req.until {
                        return Err(AppError::bad_input("the period must end after it begins"));
                    }
                    let _report = report_turn(&s.reports).await?;
                    Ok(
                        storage::agency_commission(&s.db, req.agency_id, req.from, req.until)
                            .await?,
                    )
                }
            })
            .route::<RunPayouts, _, _>(move |req| {
                let s = e.clone();
                async move { s.run_payouts(req).await }
            })
    }

    /// Pays a booking: once per idempotency key, at most one live payment per
    /// booking, and the provider is called with a key derived from the
    /// payment so a retry after a timeout never charges twice.
    pub async fn pay(&self, req: PayBooking) -> Result<PaymentView, AppError> {
        // Who pays first: a stranger is told only that, whatever it sent
        // (as the gateway tells one it could not read the booking for).
        let booking = &req.booking;
        if !req.viewer.owns(booking.booker.as_ref()) {
            return Err(AppError::new(
                ErrorCode::Forbidden,
                shared::rpcs::ONLY_THE_BOOKER_PAYS,
            ));
        }
        let key = shared::text::scoped_key(&req.idempotency_key)?;
        // A provider's token is short; a long one would be copied into the
        // booking's history and the error with every failed attempt.
        // Copied from a provider's page with a space or a line end around
        // it, it is the same token.
        let token = req.payment_token.trim();
        shared::text::check("paymentToken", token, 200, true)?;
        let fingerprint = hex::encode(Sha256::digest(format!("{}|{}", booking.id, token)));
        let (amount, listing) = match payable(booking) {
            Ok(payable) => payable,
            // A retry of the payment that moved the booking on answers as
            // the first one did. (A retry while it is still payable finds
            // its key taken at the insert below: no read before that.)
            Err(refused) => {
                return match storage::by_key(&self.db, key).await? {
                    Some(first) => self.first_answer(key, &fingerprint, first).await,
                    None => Err(refused),
                };
            }
        };

        let id = PaymentId::new();
        let agency = booking.booker.and_then(|b| b.agency_id);
        let rates = SplitRates {
            agency_bp: if agency.is_some() {
                booking.commission_bp
            } else {
                0
            },
            ..self.rates
        };
        let new = storage::NewPayment {
            id,
            booking: booking.id,
            key,
            fingerprint: &fingerprint,
            amount,
            host: listing.host_id,
            region: listing.region_code,
            agency,
            account: booking.booker.map(|b| b.account_id),
            split: Split::of(amount, rates),
            starts_on: booking.starts_on(),
        };
        let inserted = match storage::insert_processing(&self.db, &new).await {
            Ok(inserted) => inserted,
            // Another live payment of the booking — unless it is this key's,
            // inserted at the same instant: PostgreSQL may check the one-live
            // index before the key's, and the retry is then the first's.
            Err(e) if shared::db::is_unique_violation(&e) => {
                if storage::by_key(&self.db, key).await?.is_none() {
                    return Err(AppError::conflict(
                        "this booking is already paid or a payment for it is in progress",
                    ));
                }
                false
            }
            Err(e) => return Err(e.into()),
        };
        if !inserted {
            // Same key, concurrently: the other request owns it.
            let first = self.keyed(key).await?;
            let answer = self.first_answer(key, &fingerprint, first).await;
            if answer
                .as_ref()
                .is_err_and(|e| e.code == ErrorCode::ServiceUnavailable)
            {
                return self
                    .ask_again(key, &fingerprint, token, booking.expires_at, answer)
                    .await;
            }
            return answer;
        }
        let processing = storage::Processing {
            id,
            booking_id: booking.id,
            amount,
            split: new.split,
            host: listing.host_id,
            region: listing.region_code,
            agency,
        };
        // The deadline again, now that the payment is on record as in
        // flight: booking's sweeper keeps a booking whose payment it sees in
        // flight, and one recorded only after the deadline (the insert
        // waited) may already have been passed over. Failed, no charge.
        if let Some(at) = booking.expires_at.filter(|at| *at <= chrono::Utc::now()) {
            let why = time_to_pay_ended(at);
            self.settle(&processing, Err(&why)).await?;
            return Err(AppError::conflict(why));
        }

        let mut outcome = Err(ProviderError::Timeout);
        for _ in 0..PROVIDER_ATTEMPTS {
            outcome = self.provider.charge(&id.to_string(), token, amount).await;
            if outcome != Err(ProviderError::Timeout) {
                break;
            }
            warn!(payment = %id, "provider timed out; retrying with the same key");
        }
        let (settled_here, status, failure_reason) = match outcome {
            Ok(charge) => (
                self.settle(&processing, Ok(&charge.reference)).await?,
                "CAPTURED",
                None,
            ),
            Err(ProviderError::Declined(reason)) => (
                self.settle(&processing, Err(&reason)).await?,
                "FAILED",
                Some(reason),
            ),
            Err(ProviderError::Timeout) => {
                // The charge may have happened: the payment stays PROCESSING
                // and the reconciler asks the provider by the same key.
                return Err(AppError::new(
                    ErrorCode::ServiceUnavailable,
                    "the payment provider did not answer; the payment will be reconciled: retry with the same idempotency key to learn how it ended, never pay again with another",
                ));
            }
        };
        if settled_here {
            // As stored by this request's own settlement: no read back.
            return answer(PaymentView {
                id,
                booking_id: booking.id,
                status: status.to_owned(),
                amount,
                split: Some(new.split),
                failure_reason,
            });
        }
        // The reconciler settled it first: this is it now.
        let settled = self.keyed(key).await?;
        replay(settled, &fingerprint)
    }

    /// A retry whose payment is still PROCESSING past [`first_answer`]'s
    /// wait: the first request may be gone (its process killed between the
    /// provider's charge and the record of it), and the traveler was told
    /// to retry until the reconciler's round, a minute or more. The
    /// provider charges once per key, so asking it again with the
    /// payment's own key and the same card finds the charge made (or makes
    /// the one the first asked for, or is declined as it was) — what the
    /// first request's own retries do; whichever settles first wins, the
    /// other finds it settled. The provider silent again: `waiting`, the
    /// wait's answer — and so past the booking's deadline, when no charge
    /// may begin (booking may have expired it meanwhile): the reconciler
    /// then finds or closes it, as before.
    ///
    /// [`first_answer`]: Self::first_answer
    async fn ask_again(
        &self,
        key: &str,
        fingerprint: &str,
        token: &str,
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
        waiting: Result<PaymentView, AppError>,
    ) -> Result<PaymentView, AppError> {
        if expires_at.is_some_and(|at| at <= chrono::Utc::now()) {
            return waiting;
        }
        let processing = match storage::processing_by_key(&self.db, key).await {
            Ok(Some(processing)) => processing,
            Ok(None) => return replay(self.keyed(key).await?, fingerprint),
            // Unreadable (no split or host kept): left to the reconciler.
            Err(e) => {
                warn!(error = %e, "a payment retry could not read its payment; answering as it waits");
                return waiting;
            }
        };
        let id = processing.id.to_string();
        let settled = match self.provider.charge(&id, token, processing.amount).await {
            Ok(charge) => self.settle(&processing, Ok(&charge.reference)).await?,
            Err(ProviderError::Declined(reason)) => self.settle(&processing, Err(&reason)).await?,
            Err(ProviderError::Timeout) => return waiting,
        };
        if settled {
            info!(payment = %processing.id, "a retry asked the provider again and settled the payment");
        }
        replay(self.keyed(key).await?, fingerprint)
    }

    /// The payment made with `key`, which exists (its insert was seen).
    async fn keyed(&self, key: &str) -> Result<storage::Stored, AppError> {
        storage::by_key(&self.db, key)
            .await?
            .ok_or_else(|| AppError::internal("payment vanished"))
    }

    /// The answer of the payment first made with `key`: at once when it has
    /// settled, else once it does — a retry sent while the first request
    /// still waits for the provider waits with it, until
    /// [`RETRY_WAITS_FOR_FIRST`] after the first began; past that
    /// SERVICE_UNAVAILABLE (the provider is slow or its answer was lost:
    /// the caller may ask it again, else the reconciler settles it).
    /// `first` is the key's row as just read.
    async fn first_answer(
        &self,
        key: &str,
        fingerprint: &str,
        mut first: storage::Stored,
    ) -> Result<PaymentView, AppError> {
        // Another payment's key answers at once, whatever its state.
        if first.fingerprint != fingerprint {
            return replay(first, fingerprint);
        }
        let deadline = first_waited_until(first.created_at);
        while first.view.status == "PROCESSING" && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            first = self.keyed(key).await?;
        }
        replay(first, fingerprint)
    }

    /// Settles a PROCESSING payment with the provider's answer — captured
    /// (ledger posted, `payment.captured`) or declined (`payment.failed`) —
    /// in one transaction, unless it was settled already. Returns whether
    /// this call settled it.
    async fn settle(
        &self,
        p: &storage::Processing,
        outcome: Result<&str, &str>,
    ) -> Result<bool, AppError> {
        let settled = match outcome {
            Ok(reference) => self.capture(p, reference).await?,
            Err(reason) => {
                let txn = self.db.begin().await?;
                let moved = storage::mark_failed(&txn, p.id, reason).await?;
                if moved {
                    let failed = PaymentFailed {
                        booking_id: p.booking_id,
                        payment_id: p.id,
                        reason: reason.to_owned(),
                    };
                    enqueue(&txn, &[Envelope::new(SERVICE, p.booking_id.0, &failed)]).await?;
                }
                txn.commit().await?;
                moved
            }
        };
        if settled {
            self.outbox.committed();
        }
        Ok(settled)
    }

    /// Captures a PROCESSING payment: marks it, posts its ledger legs and
    /// enqueues `payment.captured`, all or nothing — on PostgreSQL in one
    /// statement. Returns whether this call moved it.
    async fn capture(&self, p: &storage::Processing, reference: &str) -> Result<bool, AppError> {
        let legs = capture_legs(&p.split, p.host, p.agency);
        let captured = Envelope::new(
            SERVICE,
            p.booking_id.0,
            &PaymentCaptured {
                booking_id: p.booking_id,
                payment_id: p.id,
                split: p.split,
            },
        );
        let moved = if self.db.get_database_backend() == DbBackend::Postgres {
            let at = (p.booking_id, p.region);
            storage::capture_at_once(&self.db, p.id, reference, at, &legs, &captured).await?
        } else {
            let txn = self.db.begin().await?;
            let moved = storage::mark_captured(&txn, p.id, reference).await?;
            if moved {
                storage::post(&txn, p.booking_id, p.region, &legs).await?;
                enqueue(&txn, &[captured]).await?;
            }
            txn.commit().await?;
            moved
        };
        if moved {
            info!(payment = %p.id, booking = %p.booking_id, amount = %p.amount, "payment captured");
        }
        Ok(moved)
    }

    /// Reconciles with the provider what `after` has passed on:
    /// 1. payments still PROCESSING (the provider never answered, or payment
    ///    stopped between the charge and its record): the key is closed at
    ///    the provider, which tells whether it charged — a charge the ledger
    ///    lacked is captured and posted (and the saga goes on: confirmed, or
    ///    refunded if the booking ended); no charge is a failed payment;
    /// 2. refunds still PENDING: asked again with the same key;
    /// 3. the provider's charges of the last day against the payments: a
    ///    charge whose payment is not CAPTURED for that amount is noted as a
    ///    MISMATCH for a person.
    ///
    /// Each finding goes to the reconciliation log; one bad row never stops
    /// the rest. Returns how many findings this round made.
    pub async fn reconcile(&self, after: chrono::Duration) -> Result<usize, AppError> {
        let cutoff = chrono::Utc::now() - after;
        let mut found = 0;
        // Page by page, so that a hundred the provider keeps failing on
        // do not keep the newer ones from their turn; at most
        // [`ROUND_PAGES`] of each a round, so a stop waits for one round of
        // bounded length.
        let mut round = Round::default();
        loop {
            let (stuck, next) =
                storage::stuck_processing(&self.db, cutoff, round.after, 100).await?;
            for p in stuck {
                match self.reconcile_payment(&p).await {
                    Ok(true) => found += 1,
                    Ok(false) => {}
                    Err(e) => {
                        warn!(payment = %p.id, error = %e.message, "reconciliation: next round")
                    }
                }
            }
            if !round.turn(next) {
                break;
            }
        }
        let mut round = Round::default();
        loop {
            let (pending, next) =
                storage::pending_refunds(&self.db, cutoff, round.after, 100).await?;
            for refund in pending {
                match self.complete_refund(&refund, None).await {
                    Ok(RefundProgress::Done) => {
                        let note =
                            "a refund the provider had not confirmed was asked again and completed";
                        self.note_finding(
                            "REFUND_COMPLETED",
                            (refund.payment_id, refund.booking_id, Some(refund.id)),
                            refund.amount,
                            note,
                        )
                        .await;
                        found += 1;
                    }
                    Ok(_) => {}
                    Err(e) => warn!(refund = %refund.id, error = %e, "reconciliation: next round"),
                }
            }
            if !round.turn(next) {
                break;
            }
        }
        let since = chrono::Utc::now() - chrono::Duration::days(1);
        for m in storage::provider_mismatches_since(&self.db, since).await? {
            let Ok(id) = m.key.parse::<PaymentId>() else {
                continue;
            };
            let charged = m.charged;
            let (note, booking) = match m.payment {
                Some((status, amount, booking)) => (
                    format!(
                        "the provider charged {charged} for a payment that is {status} for {amount}"
                    ),
                    booking,
                ),
                None => (
                    format!("the provider charged {charged} for no known payment"),
                    BookingId(uuid::Uuid::nil()),
                ),
            };
            // Said once, when first found (the statement leaves out what
            // is logged already).
            // One not written is found again by the next round.
            if self
                .note_finding("MISMATCH", (id, booking, None), charged, &note)
                .await
            {
                error!(payment = %id, %note, "reconciliation: the provider and the ledger disagree");
            }
        }
        Ok(found)
    }

    /// Step 1 of [`Payments::reconcile`] for one payment: true when settled.
    async fn reconcile_payment(&self, p: &storage::Processing) -> Result<bool, AppError> {
        let (kind, note, settled) = match self.provider.close(&p.id.to_string()).await {
            Ok(Some(charge)) => (
                "CAPTURED_LATE",
                "the provider had charged; the ledger was completed and the booking told",
                self.settle(p, Ok(&charge.reference)).await?,
            ),
            Ok(None) => (
                "CLOSED_UNCHARGED",
                "no charge at the provider; the key was closed and the payment failed",
                self.settle(
                    p,
                    Err("the payment was not completed in time and was closed; nothing was charged, pay again"),
                )
                .await?,
            ),
            Err(e) => {
                warn!(payment = %p.id, error = %e, "reconciliation: the provider did not answer; next round");
                return Ok(false);
            }
        };
        if settled {
            warn!(payment = %p.id, booking = %p.booking_id, kind, "reconciliation settled a payment");
            self.note_finding(kind, (p.id, p.booking_id, None), p.amount, note)
                .await;
        }
        Ok(settled)
    }

    /// Writes a finding to the reconciliation log (`storage::log_reconciliation`);
    /// true when written now. One that cannot be written is a warning: the
    /// round goes on, and what it settled stays settled.
    async fn note_finding(
        &self,
        kind: &str,
        subject: (PaymentId, BookingId, Option<shared::ids::RefundId>),
        amount: Fen,
        note: &str,
    ) -> bool {
        match storage::log_reconciliation(&self.db, kind, subject, amount, note).await {
            Ok(written) => written,
            Err(e) => {
                warn!(payment = %subject.0, kind, error = %e, "reconciliation: a finding not logged");
                false
            }
        }
    }
}

/// A part's silence before a payout run: nobody is paid until it answers.
/// (Payment's own errors are not the part's, and pass as they are.)
fn unanswered(who: &str, what: &str, e: AppError) -> AppError {
    AppError::new(
        ErrorCode::ServiceUnavailable,
        format!(
            "{who} did not say {what} ({}): no host is paid until it does; try again shortly",
            e.message
        ),
    )
}

/// How many unhandled captures a payout run (or its preview) asks booking
/// about at most before it reads the books; the reconciler's loop asks
/// about the rest.
const HEARD_IN_A_RUN: u64 = 5_000;

/// How many other payout runs one waits out before it gives up.
const RUNS_WAITED_OUT: u32 = 10;

/// Pages of a hundred stuck payments, and of a hundred pending refunds,
/// one reconciler round reads at most; the rest wait for the next round.
const ROUND_PAGES: usize = 50;

/// Where a reconciler round is in one kind of stuck rows.
#[derive(Default)]
struct Round {
    /// Where the last page ended (None: at the first).
    after: Option<storage::Stuck>,
    pages: usize,
}

impl Round {
    /// Moves past a page that ended at `next` (None: the last); whether
    /// another page is read this round.
    fn turn(&mut self, next: Option<storage::Stuck>) -> bool {
        self.pages += 1;
        self.after = next;
        self.after.is_some() && self.pages < ROUND_PAGES
    }
}

/// The payout run recorded under `reference`, read in `txn`, which it
/// commits (with the run, when it was made in it).
/// `asked_up_to`: the period a retry says again, if it does: the same
/// reference for another period is a mistake, not a retry (a retry of a
/// run "up to now" cannot say its period again, and gets the run).
async fn stored_run(
    txn: sea_orm::DatabaseTransaction,
    reference: &str,
    asked_up_to: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<PayoutRun, AppError> {
    let times = storage::payout_run_times(&txn, reference).await?;
    if let (Some((first, _)), Some(up_to)) = (times, asked_up_to)
        && first != up_to
    {
        return Err(AppError::new(
            ErrorCode::IdempotencyKeyReused,
            format!(
                "reference {reference} was run up to {first}; a run up to {up_to} needs a \
                 reference of its own"
            ),
        ));
    }
    let payouts: Vec<HostBalance> = storage::payouts_of(&txn, reference)
        .await?
        .into_iter()
        .map(|(host_id, owed)| HostBalance { host_id, owed })
        .collect();
    txn.commit().await?;
    Ok(PayoutRun {
        total: payouts.iter().map(|p| p.owed).sum(),
        reference: reference.to_owned(),
        up_to: times.map(|(up_to, _)| up_to),
        ran_at: times.map(|(_, at)| at),
        payouts,
    })
}

impl Payments {
    /// Pays every host what it is owed for entries before `up_to`: one
    /// balanced transaction per host (host payable → payouts bank), once
    /// per reference, runs serialised so a balance is never paid twice.
    pub async fn run_payouts(&self, req: RunPayouts) -> Result<PayoutRun, AppError> {
        platform_admin(&req.by)?;
        let reference = req.reference.trim().to_owned();
        shared::text::check_line("reference", &reference, 100, true)?;
        // As stored (microseconds), to compare with a run already made.
        let up_to =
            chrono::SubsecRound::trunc_subsecs(req.up_to.unwrap_or_else(chrono::Utc::now), 6);
        if up_to > chrono::Utc::now() {
            return Err(AppError::bad_input(FUTURE_PERIOD));
        }
        // A retry of a run that committed gets it back at once, whether or
        // not booking and inventory answer now (the run's questions to
        // them are for making a run, not for reading one).
        if storage::payout_run_times(&self.db, &reference)
            .await?
            .is_some()
        {
            let txn = self.db.begin().await?;
            return stored_run(txn, &reference, req.up_to.map(|_| up_to)).await;
        }
        // Asked before anything is read: a cancellation answered before
        // this run began is kept back, whether or not its refund request
        // has reached payment. A run that finds another under way waits
        // for it and asks again: those answered while it waited are kept
        // back too (asked once, a run waiting out a long one paid stays
        // cancelled meanwhile, and the host owed them back).
        let mut waits = 0;
        let (txn, asked, asked_at) = loop {
            let (asked, asked_at) = self.refunds_owed().await?;
            let txn = self.db.begin().await?;
            if storage::try_lock_payouts(&txn).await? {
                break (txn, asked, asked_at);
            }
            storage::lock_payouts(&txn).await?;
            txn.rollback().await?;
            waits += 1;
            if waits == RUNS_WAITED_OUT {
                return Err(AppError::new(
                    ErrorCode::ServiceUnavailable,
                    "other payout runs kept the books busy; try again shortly",
                ));
            }
        };
        let made = storage::insert_payout_run(&txn, &reference, up_to).await?;
        if made {
            // The hosts' mark follows the runs' periods, so that the next
            // run (and preview) reads the entries since, not all of them.
            // Behind this replica's clock and the database's (as read when
            // the run asked for the refunds, a moment ago): either running
            // fast would put the mark past entries others are still
            // stamping.
            let mark = crate::domain::host_mark(up_to, chrono::Utc::now(), asked_at);
            storage::advance_host_marks(&txn, mark).await?;
            for (host, owed, region) in
                storage::payable_balances(&txn, up_to, (&asked, asked_at)).await?
            {
                let legs = vec![
                    (crate::domain::host_account(host), Fen::ZERO - owed),
                    (crate::domain::PAYOUTS.to_owned(), owed),
                ];
                storage::post(
                    &txn,
                    shared::ids::BookingId(uuid::Uuid::nil()),
                    region,
                    &legs,
                )
                .await?;
                storage::insert_payout(&txn, &reference, host, owed).await?;
            }
            info!(%reference, "payout run");
        }
        stored_run(txn, &reference, req.up_to.map(|_| up_to)).await
    }

    /// The refunds on their way to payment, which a payout run keeps the
    /// host's shares of back: those booking has asked for
    /// ([`shared::rpcs::GetRefundsAsked`]), and every booking of a departure
    /// cancelled in the last [`CANCELLED_DEPARTURES_WITHIN`] as asked for
    /// all that is left (booking asks for those only once it hears of the
    /// cancellation, and a run in between paid the host for seats then
    /// refunded in full). What payment has refunded already leaves nothing
    /// to keep back. First marks the captures booking has handled since
    /// the last look ([`Self::hear_captures`]). With the moment booking was
    /// asked for its refunds (`storage::clock`: captures marked from then
    /// on are kept back too). None without a bus; booking or inventory not
    /// answering stops the run.
    async fn refunds_owed(
        &self,
    ) -> Result<
        (
            Vec<shared::rpcs::RefundAsked>,
            chrono::DateTime<chrono::Utc>,
        ),
        AppError,
    > {
        let Some(bus) = self.bus.as_ref().and_then(std::sync::Weak::upgrade) else {
            return Ok((Vec::new(), storage::clock(&self.db).await?));
        };
        let departures = shared::rpcs::GetCancelledDepartureBookings {
            since: chrono::Utc::now() - CANCELLED_DEPARTURES_WITHIN,
        };
        // Booking records a capture handled and the refund it asked for
        // in one transaction: the captures first, then the refunds, so
        // that a capture flagged as handled has its refund (if any) in
        // the answer (asked the other way round, or at once, one handled in
        // between would be neither kept back nor listed).
        let captures_then_refunds = async {
            self.hear_captures(bus.as_ref(), Some(HEARD_IN_A_RUN))
                .await?;
            let asked_at = storage::clock(&self.db).await?;
            let asked = shared::bus::call(bus.as_ref(), &shared::rpcs::GetRefundsAsked {})
                .await
                .map_err(|e| unanswered("booking", "which refunds are on their way", e))?;
            Ok::<_, AppError>((asked, asked_at))
        };
        let (asked, cancelled) = tokio::join!(
            captures_then_refunds,
            shared::bus::call(bus.as_ref(), &departures),
        );
        let (mut asked, asked_at) = asked?;
        let cancelled =
            cancelled.map_err(|e| unanswered("inventory", "which refunds are on their way", e))?;
        // Those booking has asked about already are in `asked`; those it
        // refunded at its own request before (a booker's cancellation: the
        // departure's cancellation leaves an ended booking be) get nothing
        // more. The rest: no request of booking's yet, a key no refund has.
        let listed: std::collections::HashSet<BookingId> =
            asked.iter().map(|a| a.booking_id).collect();
        let cancelled: Vec<BookingId> = cancelled
            .into_iter()
            .filter(|b| !listed.contains(b))
            .collect();
        let ended = storage::refunded_at_bookings_request(&self.db, &cancelled).await?;
        asked.extend(
            cancelled
                .into_iter()
                .filter(|b| !ended.contains(b))
                .map(|booking_id| shared::rpcs::RefundAsked {
                    booking_id,
                    request: uuid::Uuid::nil(),
                    amount: Fen(i64::MAX),
                }),
        );
        Ok((asked, asked_at))
    }

    /// Asks booking which of the captures it had not handled at the last
    /// look it has handled now, and marks them: the rest keep their hosts'
    /// shares back from payout runs (`storage::payable_balances`). The
    /// oldest `at_most` (all when none): the reconciler's loop looks every
    /// round, so a run finds few to ask about; what a run leaves is kept
    /// back, and paid by a later one.
    pub async fn hear_captures(
        &self,
        bus: &dyn shared::bus::Bus,
        at_most: Option<u64>,
    ) -> Result<(), AppError> {
        let unheard = storage::unheard_captures(&self.db, at_most).await?;
        for page in unheard.chunks(shared::rpcs::CAPTURES_A_CALL) {
            let heard = shared::bus::call(
                bus,
                &shared::rpcs::GetCapturesHeard {
                    payment_ids: page.to_vec(),
                },
            )
            .await
            .map_err(|e| unanswered("booking", "which captures it has handled", e))?;
            storage::captures_heard(&self.db, &heard).await?;
        }
        Ok(())
    }

    /// Payout runs, newest first (platform admins).
    pub async fn payout_runs(&self, req: ListPayoutRuns) -> Result<PayoutRunPage, AppError> {
        platform_admin(&req.by)?;
        if !(1..=100).contains(&req.first) {
            return Err(AppError::bad_input("first: 1 to 100 runs at a time"));
        }
        if let Some(after) = req.after.as_deref()
            && !storage::payout_run_exists(&self.db, after).await?
        {
            return Err(shared::rpcs::not_a_cursor(after));
        }
        let (runs, has_next_page) =
            storage::payout_runs(&self.db, req.first, req.after.as_deref()).await?;
        let total_count = if req.count {
            Some(storage::payout_run_count(&self.db).await?)
        } else {
            None
        };
        Ok(PayoutRunPage {
            runs: runs
                .into_iter()
                .map(|r| {
                    let cursor = r.reference.clone();
                    (r, cursor)
                })
                .collect(),
            has_next_page,
            total_count,
        })
    }

    /// What the reconciler found, newest first (platform admins).
    pub async fn reconciliation_log(
        &self,
        req: ListReconciliation,
    ) -> Result<ReconciliationPage, AppError> {
        platform_admin(&req.by)?;
        if !(1..=100).contains(&req.first) {
            return Err(AppError::bad_input("first: 1 to 100 entries at a time"));
        }
        let after = req
            .after
            .as_deref()
            .map(|c| {
                c.parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| shared::rpcs::not_a_cursor(c))
            })
            .transpose()?;
        let kind = req.kind.as_deref();
        if let Some(kind) = kind
            && !RECONCILIATION_KINDS.contains(&kind)
        {
            return Err(AppError::bad_input(format!(
                "kind: `{kind}` is none of {}",
                RECONCILIATION_KINDS.join(", ")
            )));
        }
        let (entries, has_next_page) =
            storage::reconciliation_log(&self.db, req.first, after, kind).await?;
        let total_count = if req.count {
            Some(storage::reconciliation_count(&self.db, kind).await?)
        } else {
            None
        };
        Ok(ReconciliationPage {
            entries,
            has_next_page,
            total_count,
        })
    }

    /// The public welfare fund: balance, entry count and one page of entries.
    pub async fn welfare_fund(&self, req: GetWelfareFund) -> Result<WelfareFundPage, AppError> {
        if !(1..=100).contains(&req.first) {
            return Err(AppError::bad_input("ask for 1 to 100 entries at a time"));
        }
        let (entries, has_next_page) =
            storage::fund_entries(&self.db, req.first, req.after, req.region).await?;
        Ok(WelfareFundPage {
            balance: storage::fund_balance(&self.db).await?,
            total_count: storage::fund_entry_count(&self.db, req.region).await?,
            entries,
            has_next_page,
        })
    }
}

impl Payments {
    /// Refunds a booking's captured payment, once per request (the event id
    /// is the key): reserve the amount with a conditional update, then
    /// [`Payments::complete_refund`]. A redelivery after a crash resumes
    /// from the stored refund; a provider that does not answer leaves it
    /// PENDING for the reconciler. Never pays twice.
    pub async fn on_refund_requested(
        &self,
        env: Envelope,
        ev: RefundRequested,
    ) -> Result<(), HandlerError> {
        let key = env.id.to_string();
        let refund = match storage::refund_by_key(&self.db, &key).await? {
            Some(r) => r,
            None => match self.reserve(&env, &ev).await? {
                Some(r) => r,
                None => return Ok(()),
            },
        };
        if refund.status == "PENDING" {
            // Not answered: PENDING, and the reconciler asks again.
            self.complete_refund(&refund, Some(&env)).await?;
        }
        Ok(())
    }

    /// Reserves the requested amount on the booking's captured payment and
    /// records a PENDING refund; None when there is nothing to refund (and
    /// booking is told so: `payment.refund_refused`).
    async fn reserve(
        &self,
        env: &Envelope,
        ev: &RefundRequested,
    ) -> Result<Option<storage::Refund>, HandlerError> {
        let key = env.id.to_string();
        let key = key.as_str();
        let txn = self.db.begin().await?;
        let Some(captured) = storage::captured_for_booking(&txn, ev.booking_id).await? else {
            if storage::processing_for_booking(&txn, ev.booking_id).await? {
                return Err(HandlerError::Retry(
                    "the payment is still in progress; refund after it settles".into(),
                ));
            }
            // Booking asks only after it heard a capture: a restore or a
            // hand-made request. Booking is told, so its refund is not
            // awaited for ever (nor kept back from every payout run).
            self.refuse(txn, env, ev, "nothing was captured for this booking".into())
                .await?;
            return Ok(None);
        };
        // Another copy of this request (delivered twice, or redelivered to
        // another replica) that had the payment's row first has made its
        // refund: this copy goes on with that one. Read under the row's
        // lock, after the other committed; before, this copy failed on the
        // key and was redelivered.
        if let Some(made) = storage::refund_by_key(&txn, key).await? {
            txn.rollback().await?;
            return Ok(Some(made));
        }
        let left = captured.payment.amount - captured.refunded;
        // A cancellation's refund is the policy's share of what is left,
        // taken here, where the refunds are: booking quoted it from what it
        // knew, and a refund made since (an admin's, say) leaves less.
        let asked = match ev.percent_of_left {
            Some(percent) => left.scale(i64::from(percent.min(100)), 100),
            None => ev.amount.unwrap_or(left),
        };
        let amount = asked.min(left);
        let mut refund = storage::Refund {
            id: RefundId::new(),
            payment_id: captured.payment.id,
            booking_id: ev.booking_id,
            amount,
            split: captured
                .payment
                .split
                .reversal(captured.refunded, captured.refunded + amount),
            reason: ev.reason.clone(),
            status: "PENDING".into(),
            request: Some(env.id),
        };
        let fits = amount > Fen::ZERO
            && amount <= left
            && storage::reserve_refund(&txn, captured.payment.id, amount).await?;
        if !fits {
            // Recorded, so the request is answered once and can be audited;
            // the provider is never asked for money that is not there.
            // Said as the request was made: a share of nothing is not
            // "0.00 asked" (a booker's cancellation after an admin gave
            // everything back read so).
            let why = match ev.percent_of_left {
                _ if left <= Fen::ZERO => format!(
                    "nothing left to refund: the {} paid was given back already",
                    captured.payment.amount
                ),
                Some(percent) => {
                    format!("{percent}% of the {left} left to refund is {asked}")
                }
                None => format!("{asked} asked, {left} left to refund"),
            };
            refund.amount = amount.max(Fen::ZERO);
            refund.split = captured.payment.split.reversal(Fen::ZERO, Fen::ZERO);
            refund.status = "REFUSED".into();
            storage::insert_refund(&txn, &refund, key, Some(&why)).await?;
            self.refuse(txn, env, ev, why).await?;
            return Ok(None);
        }
        storage::insert_refund(&txn, &refund, key, None).await?;
        txn.commit().await?;
        Ok(Some(refund))
    }

    /// Answers refund request `ev` (`env`) with `payment.refund_refused`,
    /// saying `why`, and commits `txn` with it.
    async fn refuse(
        &self,
        txn: sea_orm::DatabaseTransaction,
        env: &Envelope,
        ev: &RefundRequested,
        why: String,
    ) -> Result<(), HandlerError> {
        warn!(booking = %ev.booking_id, %why, "refund refused");
        let refused = RefundRefused {
            booking_id: ev.booking_id,
            request: env.id,
            reason: why,
        };
        enqueue(&txn, &[env.follow(SERVICE, &refused)]).await?;
        txn.commit().await?;
        self.outbox.committed();
        Ok(())
    }
}

/// How far a refund got with the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundProgress {
    /// SUCCEEDED by this call.
    Done,
    /// Settled by another call meanwhile (the handler's or the
    /// reconciler's), as the provider says it should be.
    SettledElsewhere,
    /// The provider refused it: FAILED, its reservation given back.
    Declined,
    /// No answer: it stays PENDING for the next try.
    NotAnswered,
}

impl Payments {
    /// Asks the provider for a PENDING refund (the refund's id is its
    /// idempotency key, so asking again never pays twice) and records the
    /// answer in one transaction: SUCCEEDED with the reversed legs posted
    /// and `payment.refunded` emitted, or FAILED with its reservation given
    /// back. The reversed share of the split is taken where the payment's
    /// earlier SUCCEEDED refunds end, under the payment's row lock, so the
    /// reversals tile the capture exactly whatever was declined between.
    pub async fn complete_refund(
        &self,
        refund: &storage::Refund,
        cause: Option<&Envelope>,
    ) -> Result<RefundProgress, sea_orm::DbErr> {
        let outcome = self
            .provider
            .refund(
                &refund.id.to_string(),
                &refund.payment_id.to_string(),
                refund.amount,
            )
            .await;
        let txn = self.db.begin().await?;
        let progress = match outcome {
            Ok(done) => {
                let captured = storage::captured_for_booking(&txn, refund.booking_id)
                    .await?
                    .ok_or_else(|| sea_orm::DbErr::Custom("the payment vanished".into()))?;
                let before = storage::succeeded_refunds(&txn, refund.payment_id).await?;
                let reversal = captured
                    .payment
                    .split
                    .reversal(before, before + refund.amount);
                if storage::finish_refund(&txn, refund.id, Ok((&done.reference, &reversal))).await?
                {
                    let legs =
                        refund_legs(&reversal, captured.payment.host, captured.payment.agency);
                    storage::post(&txn, refund.booking_id, captured.payment.region, &legs).await?;
                    let refunded = PaymentRefunded {
                        booking_id: refund.booking_id,
                        payment_id: refund.payment_id,
                        refund_id: refund.id,
                        split: reversal,
                        reason: refund.reason.clone(),
                        request: refund.request,
                    };
                    let event = match cause {
                        Some(env) => env.follow(SERVICE, &refunded),
                        None => Envelope::new(SERVICE, refund.booking_id.0, &refunded),
                    };
                    enqueue(&txn, &[event]).await?;
                    info!(booking = %refund.booking_id, amount = %refund.amount, "refunded");
                    RefundProgress::Done
                } else if storage::refund_status(&txn, refund.id).await?.as_deref()
                    == Some("FAILED")
                {
                    // Declined to the other asker (the handler or the
                    // reconciler), paid to this one: the provider gave money
                    // back that the ledger, and the reservation given back,
                    // say it did not. A person must look.
                    let note = format!(
                        "the provider refunded {} ({}) for a refund recorded as declined",
                        refund.amount, refund.reason
                    );
                    storage::log_reconciliation(
                        &txn,
                        "MISMATCH",
                        (refund.payment_id, refund.booking_id, Some(refund.id)),
                        refund.amount,
                        &note,
                    )
                    .await?;
                    error!(booking = %refund.booking_id, %note, "reconciliation: the provider and the ledger disagree");
                    RefundProgress::Declined
                } else {
                    RefundProgress::SettledElsewhere
                }
            }
            Err(ProviderError::Timeout) => {
                txn.rollback().await?;
                warn!(refund = %refund.id, "the provider did not answer a refund; it stays PENDING for the reconciler");
                return Ok(RefundProgress::NotAnswered);
            }
            Err(ProviderError::Declined(reason)) => {
                if storage::finish_refund(&txn, refund.id, Err(&reason)).await? {
                    storage::unreserve_refund(&txn, refund.payment_id, refund.amount).await?;
                    // Where an admin finds it (`reconciliationLog`), not
                    // only in this log line.
                    let note = format!(
                        "the provider refused a refund of {} ({}): {reason}",
                        refund.amount, refund.reason
                    );
                    storage::log_reconciliation(
                        &txn,
                        "REFUND_DECLINED",
                        (refund.payment_id, refund.booking_id, Some(refund.id)),
                        refund.amount,
                        &note,
                    )
                    .await?;
                    error!(booking = %refund.booking_id, %reason, "the provider refused a refund; it needs a person");
                }
                RefundProgress::Declined
            }
        };
        txn.commit().await?;
        self.outbox.committed();
        Ok(progress)
    }

    /// Refunds part or all of a booking's capture at a platform admin's
    /// request, once per idempotency key; more than is left is
    /// BAD_USER_INPUT, whatever the concurrency (the reservation is one
    /// conditional update under the payment's row lock).
    pub async fn refund_payment(&self, req: RefundPayment) -> Result<RefundView, AppError> {
        if !req.by.is_platform_admin() {
            return Err(AppError::new(
                ErrorCode::Forbidden,
                "only a platform admin refunds a payment",
            ));
        }
        let key = req.idempotency_key.trim();
        shared::text::check("idempotencyKey", key, 200, true)?;
        let reason = req.reason.trim();
        shared::text::check("reason", reason, 500, true)?;
        if req.amount <= Fen::ZERO {
            return Err(AppError::bad_input("amount: must be more than zero"));
        }
        // Admin keys apart from the event ids that key booking's requests.
        let key = format!("admin:{key}");
        let fingerprint = hex::encode(Sha256::digest(format!(
            "{}|{}|{reason}",
            req.booking_id, req.amount
        )));
        if let Some(answer) = self.replay_refund(&key, &fingerprint, true).await? {
            return Ok(answer);
        }
        let txn = self.db.begin().await?;
        let Some(captured) = storage::captured_for_booking(&txn, req.booking_id).await? else {
            let why = if storage::processing_for_booking(&txn, req.booking_id).await? {
                "the booking's payment is still in progress; refund once it is captured"
            } else {
                "nothing was captured for this booking"
            };
            return Err(AppError::conflict(why));
        };
        let left = captured.payment.amount - captured.refunded;
        if req.amount > left
            || !storage::reserve_refund(&txn, captured.payment.id, req.amount).await?
        {
            txn.rollback().await?;
            // The same request sent twice at once: the one that had the
            // row first made the refund (and took what was left); this
            // gets its answer, not "nothing left".
            if let Some(answer) = self.replay_refund(&key, &fingerprint, true).await? {
                return Ok(answer);
            }
            return Err(AppError::bad_input(format!(
                "amount: {} asked, {left} is left to refund",
                req.amount
            )));
        }
        let refund = storage::Refund {
            id: RefundId::new(),
            payment_id: captured.payment.id,
            booking_id: req.booking_id,
            amount: req.amount,
            // Set for good when the provider confirms (see complete_refund).
            split: captured.payment.split.reversal(Fen::ZERO, Fen::ZERO),
            reason: reason.to_owned(),
            status: "PENDING".into(),
            request: None,
        };
        match storage::insert_refund(&txn, &refund, &key, None).await {
            Err(e) if shared::db::is_unique_violation(&e) => {
                // The same key, concurrently: the other request owns it.
                txn.rollback().await?;
                return self
                    .replay_refund(&key, &fingerprint, true)
                    .await?
                    .ok_or_else(|| AppError::internal("the refund vanished"));
            }
            other => other?,
        }
        storage::set_refund_fingerprint(&txn, refund.id, &fingerprint).await?;
        txn.commit().await?;
        self.complete_refund(&refund, None).await?;
        self.replay_refund(&key, &fingerprint, false)
            .await?
            .ok_or_else(|| AppError::internal("the refund vanished"))
    }

    /// The refund made for an admin's key, if any; IDEMPOTENCY_KEY_REUSED
    /// when the key asked for something else.
    ///
    /// A retry (`retry`) of a refund still with the provider waits for
    /// its answer, as a payment's retry does, up to
    /// [`RETRY_WAITS_FOR_FIRST`]; past that it is PENDING (the reconciler
    /// finishes it).
    async fn replay_refund(
        &self,
        key: &str,
        fingerprint: &str,
        retry: bool,
    ) -> Result<Option<RefundView>, AppError> {
        let deadline = tokio::time::Instant::now() + RETRY_WAITS_FOR_FIRST;
        loop {
            let view = match storage::refund_with_view(&self.db, key).await? {
                None => return Ok(None),
                Some((_, _, Some(first))) if first != fingerprint => {
                    return Err(AppError::new(
                        ErrorCode::IdempotencyKeyReused,
                        "this idempotency key was used for a different refund",
                    ));
                }
                Some((_, view, _)) => view,
            };
            if !retry || view.status != "PENDING" || tokio::time::Instant::now() >= deadline {
                return Ok(Some(view));
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }
}

/// The first result for a key, or IDEMPOTENCY_KEY_REUSED / CONFLICT.
/// What a booking's view says is to be paid, or why it cannot be paid.
fn payable(
    booking: &shared::rpcs::BookingView,
) -> Result<(Fen, shared::events::ListingSnapshot), AppError> {
    if booking.status != "AWAITING_PAYMENT" {
        return Err(AppError::conflict(format!(
            "the booking is {}, not awaiting payment",
            booking.status
        )));
    }
    // Past its deadline a booking is as good as expired, whether or not
    // booking's sweeper (every half second, or later when busy) has
    // marked it yet: no charge is started for it.
    let now = chrono::Utc::now();
    if let Some(at) = booking.expires_at.filter(|at| *at <= now) {
        return Err(AppError::conflict(time_to_pay_ended(at)));
    }
    // Nor once its stay or departure has begun (China time; the day
    // itself still pays, as it still books): paid, it would be confirmed
    // under way — no longer cancelled, the host paid out — for a group
    // that left without the traveler. Held late on the day, its deadline
    // may run past midnight. It expires at the deadline.
    if let Some(began) = booking
        .starts_on()
        .filter(|day| *day < shared::policy::china_today(now))
    {
        return Err(AppError::conflict(format!(
            "its stay or departure began on {began} (China time): it can no longer be paid, \
             and expires at its deadline; book another"
        )));
    }
    let (Some(amount), Some(listing)) = (booking.total, booking.listing.clone()) else {
        return Err(AppError::conflict("the booking has no price yet"));
    };
    if amount.get() <= 0 {
        return Err(AppError::bad_input("the amount to pay must be positive"));
    }
    Ok((amount, listing))
}

/// How a payment refused past its booking's deadline is refused, and the
/// reason a payment failed for it keeps.
const TIME_TO_PAY_ENDED: &str = "the time to pay this booking ended";

fn time_to_pay_ended(at: chrono::DateTime<chrono::Utc>) -> String {
    format!(
        "{TIME_TO_PAY_ENDED} at {}; it is expiring",
        at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

fn replay(first: storage::Stored, fingerprint: &str) -> Result<PaymentView, AppError> {
    if first.fingerprint != fingerprint {
        return Err(AppError::new(
            ErrorCode::IdempotencyKeyReused,
            "this idempotency key was used for a different payment",
        ));
    }
    answer(first.view)
}

/// A payment as its request is answered: an error while it waits for the
/// provider or once it failed, else the payment.
fn answer(payment: PaymentView) -> Result<PaymentView, AppError> {
    match payment.status.as_str() {
        "PROCESSING" => Err(AppError::new(
            ErrorCode::ServiceUnavailable,
            "a payment with this key is still waiting for the provider, or its answer was lost \
             (payment then asks the provider again by itself, within about two minutes); retry \
             with the same key to learn how it ended (do not pay again with another)",
        )),
        // Failed at the deadline, never sent to the provider: answered as
        // the first try was.
        "FAILED"
            if payment
                .failure_reason
                .as_deref()
                .is_some_and(|r| r.starts_with(TIME_TO_PAY_ENDED)) =>
        {
            Err(AppError::conflict(
                payment.failure_reason.unwrap_or_default(),
            ))
        }
        "FAILED" => Err(AppError::new(
            ErrorCode::PaymentDeclined,
            payment.failure_reason.unwrap_or_else(|| "declined".into()),
        )),
        _ => Ok(payment),
    }
}

/// Why a payout run (or its preview) for a period ending later is refused.
const FUTURE_PERIOD: &str = "a payout period cannot end in the future";

/// Host balances and payouts are for platform admins, whoever forwards the
/// request.
fn platform_admin(by: &shared::auth::Principal) -> Result<(), AppError> {
    if by.is_platform_admin() {
        Ok(())
    } else {
        Err(AppError::new(
            ErrorCode::Forbidden,
            "only a platform admin runs payouts and sees every host's balance (a region's \
             admins see its hosts')",
        ))
    }
}

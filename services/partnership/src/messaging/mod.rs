//! Partnership's event handlers (attribution) and RPCs (partnerships,
//! agreements, reports).

use crate::SERVICE;
use crate::domain::{self, Facts, Money3, Pair};
use crate::storage::{self, Fact};
use chrono::Utc;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, TransactionTrait};
use shared::bus::{EventRouter, HandlerError};
use shared::envelope::Envelope;
use shared::events::{
    BookingCancelled, BookingCaptureKept, BookingConfirmed, PaymentCaptured, PaymentRefunded,
};
use shared::ids::{AgreementId, BookingId, PartnershipId};
use shared::outbox::begin_once;
use shared::region::{RegionCode, RegionLevel, reference_region};
use shared::rpc::RpcRouter;
use shared::rpcs::{
    AgreementView, CreateAgreement, CreatePartnership, Figures, GetBookingImpact, GetPartnership,
    GetPartnershipReport, GetRegionImpact, ImpactCredit, ListPartnershipCredits, ListPartnerships,
    PartnershipCreditPage, PartnershipPage, PartnershipReport, PartnershipView, RegionImpact,
    UpdatePartnership, WithdrawAgreement, WithdrawPartnership, Withdrawal,
};
use shared::{AppError, ErrorCode};
use tracing::{info, warn};

/// Longest notes on a partnership.
const MAX_NOTES: usize = 2_000;

/// Longest reason for withdrawing an agreement.
const MAX_REASON: usize = 500;

/// Bookings credited again per transaction when a pair or its term changes.
pub const RECREDIT_BATCH: u64 = 200;

/// How long the call that recorded a pair or moved its term goes on
/// crediting it before it answers (well within an RPC's 5 s deadline, with
/// its wait for its turn before: `storage::lock_facts`); the rest goes on
/// in the background ([`Partnerships::recredit_queued`]).
pub const RECREDIT_WHILE_ASKED: std::time::Duration = std::time::Duration::from_millis(1500);

/// How often each replica looks for queued recredits.
pub const RECREDIT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// What the handlers share.
#[derive(Clone)]
pub struct Partnerships {
    /// Partnership's database.
    pub db: DatabaseConnection,
}

macro_rules! on {
    ($router:expr, $svc:expr, $event:ty, $fact:expr) => {{
        let s = $svc.clone();
        $router.on::<$event, _, _>(move |env, ev| {
            let s = s.clone();
            async move {
                let fact: Option<(BookingId, Fact)> = $fact(&env, ev);
                match fact {
                    Some((booking, fact)) => s.apply(&env, booking, fact).await,
                    None => Ok(()),
                }
            }
        })
    }};
}

/// The fact a confirmation (or a capture kept) brings.
fn confirmed(env: &Envelope, ev: BookingConfirmed) -> (BookingId, Fact) {
    (
        ev.booking_id,
        Fact::Confirmed {
            sponsor: ev.sponsor_region,
            listing: ev.listing.region_code,
            certified: ev.listing.certified,
            travelers: ev.travelers,
            total: ev.total,
            at: env.occurred_at,
            captured: ev.captured.as_ref().map(money),
        },
    )
}

impl Partnerships {
    /// The events attribution learns from.
    pub fn events(&self) -> EventRouter {
        let r = EventRouter::new("partnership.events");
        let r = on!(
            r,
            self,
            BookingConfirmed,
            |env: &Envelope, ev: BookingConfirmed| { Some(confirmed(env, ev)) }
        );
        // Paid before it was cancelled: it counts as a booking confirmed
        // when booking heard of the capture, and cancelled (which its
        // `booking.cancelled` says, in whichever order they come).
        let r = on!(
            r,
            self,
            BookingCaptureKept,
            |env: &Envelope, ev: BookingCaptureKept| { Some(confirmed(env, ev.0)) }
        );
        // The capture's split comes with the confirmation: one event, one
        // transaction per booking.
        let r = r.retired::<PaymentCaptured>();
        let r = on!(
            r,
            self,
            PaymentRefunded,
            |_: &Envelope, ev: PaymentRefunded| {
                Some((
                    ev.booking_id,
                    Fact::Refunded(ev.refund_id, money(&ev.split)),
                ))
            }
        );
        on!(
            r,
            self,
            BookingCancelled,
            |_: &Envelope, ev: BookingCancelled| { Some((ev.facts.booking_id, Fact::Cancelled)) }
        )
    }

    /// Records the event's fact and credits the difference, once per event.
    async fn apply(
        &self,
        env: &Envelope,
        booking: BookingId,
        fact: Fact,
    ) -> Result<(), HandlerError> {
        let Some(txn) = begin_once(&self.db, env).await? else {
            return Ok(());
        };
        let facts = storage::record_fact(&txn, booking, fact).await?;
        let pairs = storage::pairs(&txn).await?;
        let mut totals = storage::Totals::new();
        let cause = format!("{} {}", env.kind, env.id);
        reconcile(&txn, booking, &facts, &pairs, &cause, &mut totals).await?;
        storage::add_to_totals(&txn, &totals).await?;
        txn.commit().await?;
        Ok(())
    }

    /// The RPC methods partnership answers.
    pub fn rpc(&self) -> RpcRouter {
        let s = [(); 11].map(|()| self.clone());
        let [a, b, c, d, e, f, g, h, i, j, k] = s;
        RpcRouter::new(SERVICE)
            .ready_with(self.db.clone())
            .route::<UpdatePartnership, _, _>(move |req| {
                let s = g.clone();
                async move { s.update_partnership(req).await }
            })
            .route::<CreatePartnership, _, _>(move |req| {
                let s = a.clone();
                async move { s.create_partnership(req).await }
            })
            .route::<CreateAgreement, _, _>(move |req| {
                let s = b.clone();
                async move { s.create_agreement(req).await }
            })
            .route::<WithdrawAgreement, _, _>(move |req| {
                let s = i.clone();
                async move { s.withdraw_agreement(req).await }
            })
            .route::<WithdrawPartnership, _, _>(move |req| {
                let s = k.clone();
                async move { s.withdraw_partnership(req).await }
            })
            .route::<ListPartnershipCredits, _, _>(move |req| {
                let s = j.clone();
                async move { s.credits(req).await }
            })
            .route::<ListPartnerships, _, _>(move |req| {
                let s = c.clone();
                async move { s.list(req).await }
            })
            .route::<GetPartnership, _, _>(move |req| {
                let s = h.clone();
                async move { Ok(storage::partnership_by_id(&s.db, req.partnership_id).await?) }
            })
            .route::<GetPartnershipReport, _, _>(move |req| {
                let s = d.clone();
                async move { s.report(req.partnership_id, req.year).await }
            })
            .route::<GetRegionImpact, _, _>(move |req| {
                let s = e.clone();
                async move { s.region_impact(req.region, req.year).await }
            })
            .route::<GetBookingImpact, _, _>(move |req| {
                let s = f.clone();
                async move { s.booking_impact(req.booking_id).await }
            })
    }

    /// Pairs two regions, and credits the pair with the confirmed bookings
    /// it covers that are already known.
    pub async fn create_partnership(
        &self,
        req: CreatePartnership,
    ) -> Result<PartnershipView, AppError> {
        for code in [req.sponsor, req.beneficiary] {
            if reference_region(code).is_none() {
                return Err(AppError::bad_input(format!("unknown region {code}")));
            }
        }
        may_record(&req.by, req.sponsor, req.beneficiary)?;
        Pair::of(req.sponsor, req.beneficiary).validate()?;
        check_day("since", req.since)?;
        let notes = req
            .notes
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty());
        if let Some(notes) = &notes {
            shared::text::check("notes", notes, MAX_NOTES, false)?;
        }
        let view = PartnershipView {
            id: PartnershipId::new(),
            sponsor: req.sponsor,
            beneficiary: req.beneficiary,
            since: req.since,
            ended_on: None,
            status: "ACTIVE".into(),
            notes,
            demo: req.demo,
            agreements: Vec::new(),
            withdrawn_agreements: Vec::new(),
            crediting: true,
            withdrawal: None,
        };
        let txn = self.db.begin().await?;
        storage::lock_facts(&txn).await?;
        // A pair runs one way: the sponsor sends tourists and spending to
        // the beneficiary. The same two the other way round is a mistake.
        if storage::sponsors(&txn, req.beneficiary, req.sponsor).await? {
            return Err(AppError::bad_input(format!(
                "{} already sponsors {}: a pair runs one way, from the sponsor to the \
                 beneficiary (check which is which)",
                req.beneficiary, req.sponsor
            )));
        }
        let mut view = view;
        if !storage::insert_partnership(&txn, &view).await? {
            let existing = storage::partnership_of(&txn, req.sponsor, req.beneficiary).await?;
            // Withdrawn (recorded by mistake, or too soon): recorded again,
            // under its id, as now asked.
            if let Some(withdrawn) = existing.as_ref().filter(|p| p.status == "WITHDRAWN")
                && storage::record_again(&txn, withdrawn.id, &view).await?
            {
                view.id = withdrawn.id;
                view.agreements = withdrawn.agreements.clone();
                view.withdrawn_agreements = withdrawn.withdrawn_agreements.clone();
            }
            // The same pair asked for again as it was recorded (a retry of
            // a call that answered SERVICE_UNAVAILABLE, or whose replica
            // stopped, after the pair was committed) is that pair.
            else if let Some(existing) = existing
                && existing.since == view.since
                && existing.notes == view.notes
                && existing.demo == view.demo
                && existing.status == "ACTIVE"
            {
                return Ok(existing);
            } else {
                return Err(AppError::bad_input(format!(
                    "{} and {} are already paired",
                    req.sponsor, req.beneficiary
                )));
            }
        }
        let queued =
            storage::queue_recredit(&txn, &req.beneficiary.code_prefix(), "partnership created")
                .await?;
        shared::db::commit_in_time(txn).await?;
        info!(partnership = %view.id, sponsor = %view.sponsor, beneficiary = %view.beneficiary, "partnership created");
        self.recredit_for_a_while(queued).await;
        Ok(PartnershipView {
            crediting: self.still_crediting(view.beneficiary).await,
            ..view
        })
    }

    /// Edits a partnership's status (ACTIVE, ENDED), term and notes. Its
    /// figures follow its term: when the term changes, the bookings it
    /// covers are credited again, so that a booking counts exactly when it
    /// was confirmed within the term (what was confirmed before an end
    /// stays: figures are history).
    pub async fn update_partnership(
        &self,
        req: UpdatePartnership,
    ) -> Result<PartnershipView, AppError> {
        if req.changes_nothing() {
            return Err(AppError::bad_input(
                "nothing to change: give status, since, endedOn or notes (those left out are \
                 kept)",
            ));
        }
        if req.status.as_deref() == Some("WITHDRAWN") {
            return Err(AppError::bad_input(
                "status WITHDRAWN is not set here: withdrawPartnership withdraws a pair \
                 recorded by mistake, with a reason",
            ));
        }
        if let Some(status) = req.status.as_deref()
            && !matches!(status, "ACTIVE" | "ENDED")
        {
            return Err(AppError::bad_input(format!(
                "a partnership is ACTIVE or ENDED, not {status}"
            )));
        }
        if req.status.as_deref() == Some("ACTIVE") && req.ended_on.is_some() {
            return Err(AppError::bad_input(
                "endedOn ends a partnership: give it with status ENDED or alone, not with ACTIVE",
            ));
        }
        let notes = req.notes.map(|n| {
            let n = n.trim().to_owned();
            (!n.is_empty()).then_some(n)
        });
        if let Some(Some(notes)) = &notes {
            shared::text::check("notes", notes, MAX_NOTES, false)?;
        }
        check_day("since", req.since)?;
        check_day("endedOn", req.ended_on)?;
        let today = shared::policy::china_today(Utc::now());
        if let Some(end) = req.ended_on
            && end > today
        {
            return Err(AppError::bad_input(format!(
                "endedOn {end}: a partnership is ended on a day up to today"
            )));
        }
        let not_found = || AppError::not_found(format!("no partnership {}", req.partnership_id));
        let (txn, pair) = self.pair_locked(req.partnership_id, &req.by).await?;
        withdrawn_stays(&pair)?;
        let status = match (req.status, req.ended_on) {
            (Some(status), _) => status,
            (None, Some(_)) => "ENDED".to_owned(),
            (None, None) => pair.status.clone(),
        };
        let ended_on = (status == "ENDED").then(|| req.ended_on.or(pair.ended_on).unwrap_or(today));
        let since = req.since.or(pair.since);
        if let Some(since) = req.since
            && let Some(agreement) = pair.agreements.iter().find(|a| a.ends_on < since)
        {
            return Err(AppError::bad_input(format!(
                "since {since}: the agreement {} ended before it ({}); a pair begins by its \
                 agreements' last day",
                agreement.title, agreement.ends_on
            )));
        }
        // Nor a target for a year before it: no booking could meet it.
        if let Some(since) = req.since
            && let Some((agreement, year)) = domain::target_before(since, &pair.agreements)
        {
            return Err(AppError::bad_input(format!(
                "since {since}: the agreement {} has a target for {year}, before it",
                agreement.title
            )));
        }
        // The mirror of `since`: an end before an agreement began leaves
        // that agreement's targets where nothing can ever count.
        if let Some(end) = ended_on
            && let Some(agreement) = pair.agreements.iter().find(|a| a.starts_on > end)
        {
            return Err(AppError::bad_input(format!(
                "endedOn {end}: the agreement {} starts after it ({}); a pair ends on or after \
                 its agreements' first day",
                agreement.title, agreement.starts_on
            )));
        }
        if let (Some(since), Some(end)) = (since, ended_on)
            && end < since
        {
            return Err(AppError::bad_input(format!(
                "a partnership cannot end ({end}) before it began ({since}); if `since` was \
                 entered wrong, give the right one with the end"
            )));
        }
        let edit = storage::PartnershipEdit {
            status,
            since,
            ended_on,
            notes: notes.unwrap_or(pair.notes.clone()),
        };
        if !storage::update_partnership(&txn, req.partnership_id, edit).await? {
            return Err(not_found());
        }
        let queued = if since != pair.since || ended_on != pair.ended_on {
            let prefix = pair.beneficiary.code_prefix();
            Some(storage::queue_recredit(&txn, &prefix, "partnership term changed").await?)
        } else {
            None
        };
        let view = storage::partnership_by_id(&txn, req.partnership_id)
            .await?
            .ok_or_else(|| AppError::internal("the partnership vanished"))?;
        shared::db::commit_in_time(txn).await?;
        info!(partnership = %view.id, status = %view.status, since = ?view.since, ended_on = ?view.ended_on, "partnership edited");
        if let Some(queued) = queued {
            self.recredit_for_a_while(queued).await;
        }
        Ok(PartnershipView {
            crediting: self.still_crediting(view.beneficiary).await,
            ..view
        })
    }

    /// Once per database, after the migration that gave partnerships their
    /// end day: credits every pair again by its term, which attribution did
    /// not look at before (a pair recorded with a later `since` had been
    /// credited with earlier bookings). Queued with its claim, so a process
    /// stopped half-way leaves the rest to the next.
    pub async fn apply_terms_once(&self) -> Result<(), DbErr> {
        shared::db::claims_table(&self.db).await?;
        let txn = self.db.begin().await?;
        storage::lock_facts(&txn).await?;
        if shared::db::claim(&txn, "partnership terms").await? {
            let queued = storage::queue_recredit(&txn, "", "partnership terms applied").await?;
            txn.commit().await?;
            // A batch that fails (the database restarting; an older
            // replica crediting beside it in a rolling upgrade) leaves the
            // rest queued for the crediting loop: the start goes on.
            match self.recredit(queued, RECREDIT_BATCH, &|| false).await {
                Ok(true) => info!("credited every partnership by its term"),
                Ok(false) => {}
                Err(e) => {
                    warn!(error = %e, "crediting by term: left queued, taken up again shortly")
                }
            }
        }
        Ok(())
    }

    /// Does queued recredit `id` (`storage::queue_recredit`), `batch`
    /// bookings per transaction, until it is done, another transaction has
    /// it, or `enough` says so (asked after each batch: one batch at
    /// least; a stopping replica leaves the rest queued). True when this
    /// call finished it.
    ///
    /// No lock on the facts table: the recredit was queued in the
    /// transaction that recorded the pair or its term under
    /// `storage::lock_facts`, so a handler recording a fact either
    /// committed before (its booking is in the batches) or reads the pair
    /// as it is now; a batch and a handler on the same booking take turns
    /// on its facts row, and each credits the difference from what the
    /// other left.
    pub async fn recredit(
        &self,
        id: uuid::Uuid,
        batch: u64,
        enough: &(dyn Fn() -> bool + Sync),
    ) -> Result<bool, DbErr> {
        loop {
            let txn = self.db.begin().await?;
            let Some(work) = storage::take_recredit(&txn, id).await? else {
                return Ok(false);
            };
            let bookings = storage::confirmed_in(&txn, &work.prefix, work.after, batch).await?;
            let pairs = storage::pairs(&txn).await?;
            let mut totals = storage::Totals::new();
            for booking in &bookings {
                let facts = storage::record_fact(&txn, *booking, Fact::Nothing).await?;
                reconcile(&txn, *booking, &facts, &pairs, &work.cause, &mut totals).await?;
            }
            storage::add_to_totals(&txn, &totals).await?;
            let more = u64::try_from(bookings.len()).is_ok_and(|n| n >= batch);
            let last = bookings.last().copied().filter(|_| more);
            storage::advance_recredit(&txn, id, last).await?;
            txn.commit().await?;
            if last.is_none() {
                return Ok(true);
            }
            if enough() {
                return Ok(false);
            }
        }
    }

    /// Does every queued recredit: one a replica stopped in, or one an RPC
    /// left to run on ([`RECREDIT_WHILE_ASKED`]).
    /// One that fails (the database restarting, say: PostgreSQL aborted
    /// the batch) is left for the next look, and the rest go on.
    /// Once `stop` is cancelled, what is left stays queued.
    pub async fn recredit_queued(
        &self,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<(), DbErr> {
        for id in storage::queued_recredits(&self.db).await? {
            if stop.is_cancelled() {
                break;
            }
            if let Err(e) = self
                .recredit(id, RECREDIT_BATCH, &|| stop.is_cancelled())
                .await
            {
                warn!(recredit = %id, error = %e, "crediting a partnership failed; will retry");
            }
        }
        Ok(())
    }

    /// Recredits for as long as an admin's call can wait, cut off there
    /// whatever a batch is doing (a batch cut off is abandoned: rolled
    /// back once its statement returns — or committed, if the cut came
    /// with its commit on its way; crediting is by difference either way);
    /// what is left stays queued for [`Self::recredit_queued`]. The pair
    /// is recorded either way.
    async fn recredit_for_a_while(&self, id: uuid::Uuid) {
        let crediting = self.recredit(id, RECREDIT_BATCH, &|| false);
        // Within the caller's wait: past it, the pair recorded would be
        // answered as a failure.
        let asked = shared::bus::within_callers_wait(RECREDIT_WHILE_ASKED);
        match tokio::time::timeout(asked, crediting).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) | Err(_) => {
                info!(recredit = %id, "crediting goes on in the background");
            }
            Ok(Err(e)) => {
                warn!(recredit = %id, error = %e, "crediting failed; will retry in the background");
            }
        }
    }

    /// Whether `beneficiary`'s figures are still being credited, asked after
    /// a change committed: within the caller's wait, and "still crediting"
    /// when it cannot be told — the change is made, and its answer must not
    /// become a failure its admin retries.
    async fn still_crediting(&self, beneficiary: RegionCode) -> bool {
        let asked = shared::bus::within_callers_wait(RECREDIT_WHILE_ASKED);
        match tokio::time::timeout(asked, storage::crediting(&self.db, beneficiary)).await {
            Ok(Ok(crediting)) => crediting,
            Ok(Err(e)) => {
                warn!(error = %e, %beneficiary, "could not tell whether a pair is still crediting");
                true
            }
            Err(_) => true,
        }
    }

    /// Adds an agreement with yearly targets.
    pub async fn create_agreement(&self, req: CreateAgreement) -> Result<AgreementView, AppError> {
        let title = req.title.trim();
        shared::text::check_line("title", title, 200, true)?;
        if req.ends_on < req.starts_on {
            return Err(AppError::bad_input(
                "an agreement cannot end before it starts",
            ));
        }
        let targets = domain::validate_targets(req.targets)?;
        let term = chrono::Datelike::year(&req.starts_on)..=chrono::Datelike::year(&req.ends_on);
        if let Some(t) = targets.iter().find(|t| !term.contains(&t.year)) {
            return Err(AppError::bad_input(format!(
                "a target's year {} is outside the agreement ({} to {})",
                t.year,
                term.start(),
                term.end()
            )));
        }
        let today = shared::policy::china_today(chrono::Utc::now());
        domain::validate_signing(&req.signatories, req.signed_on, today)?;
        let view = AgreementView {
            id: AgreementId::new(),
            partnership_id: req.partnership_id,
            title: title.to_owned(),
            signed_on: req.signed_on,
            starts_on: req.starts_on,
            ends_on: req.ends_on,
            signatories: req
                .signatories
                .iter()
                .map(|name| name.trim().to_owned())
                .collect(),
            targets,
            withdrawal: None,
        };
        let not_found = || AppError::not_found(format!("no partnership {}", req.partnership_id));
        // Who may record it, before taking any lock (the lock holds every
        // booking's attribution up: a stranger's calls must not).
        let pair = storage::partnership_by_id(&self.db, req.partnership_id)
            .await?
            .ok_or_else(not_found)?;
        may_record(&req.by, pair.sponsor, pair.beneficiary)?;
        let txn = self.db.begin().await?;
        // One at a time with the edits of a pair's term (its `since` is
        // checked against the agreements' ends); then the pair as it is now.
        storage::lock_facts(&txn).await?;
        let pair = storage::partnership_by_id(&txn, req.partnership_id)
            .await?
            .ok_or_else(not_found)?;
        withdrawn_stays(&pair)?;
        // The same agreement sent again (a retry after an unanswered
        // call): the one recorded, not a second copy for good.
        if let Some(recorded) = pair.agreements.iter().find(|a| {
            AgreementView {
                id: a.id,
                ..view.clone()
            } == **a
        }) {
            return Ok(recorded.clone());
        }
        if let Some(since) = pair.since
            && view.ends_on < since
        {
            return Err(AppError::bad_input(format!(
                "the agreement ends ({}) before the partnership began ({since})",
                view.ends_on
            )));
        }
        // Nothing counts for a pair before it began: a year before then
        // would hold a target no booking can meet.
        if let Some(since) = pair.since
            && let Some((_, year)) = domain::target_before(since, std::slice::from_ref(&view))
        {
            return Err(AppError::bad_input(format!(
                "a target's year {year} is before the partnership began ({since})"
            )));
        }
        // Nothing counts for a pair after it ended: an agreement starting
        // then would hold targets no booking can meet.
        if let Some(end) = pair.ended_on.filter(|_| pair.status == "ENDED")
            && view.starts_on > end
        {
            return Err(AppError::bad_input(format!(
                "the agreement starts ({}) after the partnership ended ({end}); set the pair \
                 ACTIVE again first if it goes on",
                view.starts_on
            )));
        }
        if let Some(end) = pair.ended_on.filter(|_| pair.status == "ENDED")
            && let Some(year) = domain::target_after(end, &view)
        {
            return Err(AppError::bad_input(format!(
                "a target's year {year} is after the partnership ended ({end}); set the pair \
                 ACTIVE again first if it goes on"
            )));
        }
        let mut agreements = pair.agreements.clone();
        agreements.push(view.clone());
        agreements.sort_by_key(|a| (a.starts_on, a.id));
        domain::merged_targets_hold(&agreements, view.targets.iter().map(|t| t.year))?;
        storage::insert_agreement(&txn, &view).await?;
        shared::db::commit_in_time(txn).await?;
        Ok(view)
    }

    /// Withdraws an agreement: it stays on record, among the pair's
    /// withdrawn ones, and counts for nothing more (its targets, its days
    /// bounding the pair's term). Sent again with the same reason (a retry),
    /// the withdrawal recorded; with another, CONFLICT.
    pub async fn withdraw_agreement(
        &self,
        req: WithdrawAgreement,
    ) -> Result<AgreementView, AppError> {
        let reason = req.reason.trim();
        shared::text::check_line("reason", reason, MAX_REASON, true)?;
        let not_found = || AppError::not_found(format!("no agreement {}", req.agreement_id));
        let of = |pair: PartnershipView| {
            pair.agreements
                .into_iter()
                .chain(pair.withdrawn_agreements)
                .find(|a| a.id == req.agreement_id)
        };
        // Who may withdraw it, before taking any lock.
        let partnership_id = storage::partnership_of_agreement(&self.db, req.agreement_id)
            .await?
            .ok_or_else(not_found)?;
        let pair = storage::partnership_by_id(&self.db, partnership_id)
            .await?
            .ok_or_else(not_found)?;
        may_record(&req.by, pair.sponsor, pair.beneficiary)?;
        let txn = self.db.begin().await?;
        // One at a time with the other edits of the pair's agreements and
        // term, which read the agreements in force.
        storage::lock_facts(&txn).await?;
        let pair = storage::partnership_by_id(&txn, partnership_id)
            .await?
            .ok_or_else(not_found)?;
        // What stays in force must still hold together: without a newer
        // agreement's spend target, an older one's lower spend may fall
        // under a certified-spend target another set.
        let staying: Vec<AgreementView> = pair
            .agreements
            .iter()
            .filter(|a| a.id != req.agreement_id)
            .cloned()
            .collect();
        let agreement = of(pair).ok_or_else(not_found)?;
        if let Some(done) = &agreement.withdrawal {
            return if done.reason == reason {
                Ok(agreement)
            } else {
                Err(AppError::new(
                    ErrorCode::Conflict,
                    format!(
                        "the agreement {} was withdrawn on {}: {}",
                        agreement.title, done.on, done.reason
                    ),
                ))
            };
        }
        if let Some((year, certified, spend)) =
            domain::merged_contradiction(&staying, agreement.targets.iter().map(|t| t.year))
        {
            return Err(AppError::bad_input(format!(
                "withdrawing {} would leave the targets for {year} at certifiedSpend \
                 {certified} above spend {spend} (set by the other agreements in force): \
                 withdraw or supersede those first",
                agreement.title
            )));
        }
        let withdrawal = Withdrawal {
            on: shared::policy::china_today(Utc::now()),
            reason: reason.to_owned(),
        };
        if !storage::withdraw_agreement(&txn, req.agreement_id, &withdrawal, req.by.account_id)
            .await?
        {
            return Err(AppError::internal("the agreement changed under the lock"));
        }
        shared::db::commit_in_time(txn).await?;
        info!(agreement = %agreement.id, partnership = %partnership_id, reason, "agreement withdrawn");
        Ok(AgreementView {
            withdrawal: Some(withdrawal),
            ..agreement
        })
    }

    /// Partnership `id` as it is once its edits go one at a time — `by`
    /// may edit it (asked before taking any lock), the attribution table
    /// locked so that no booking is recorded while what the pair counts
    /// changes (see `storage::lock_facts`) — with the transaction holding
    /// the lock.
    async fn pair_locked(
        &self,
        id: shared::ids::PartnershipId,
        by: &shared::auth::Principal,
    ) -> Result<(sea_orm::DatabaseTransaction, PartnershipView), AppError> {
        let not_found = || AppError::not_found(format!("no partnership {id}"));
        let pair = storage::partnership_by_id(&self.db, id)
            .await?
            .ok_or_else(not_found)?;
        may_record(by, pair.sponsor, pair.beneficiary)?;
        let txn = self.db.begin().await?;
        storage::lock_facts(&txn).await?;
        let pair = storage::partnership_by_id(&txn, id)
            .await?
            .ok_or_else(not_found)?;
        Ok((txn, pair))
    }

    /// Withdraws a partnership recorded by mistake: it stays on record,
    /// counts nothing from now on (what it was credited is taken back, a
    /// recredit of its beneficiary's bookings), is listed no more, and
    /// keeps neither its reverse nor itself from being recorded. Its
    /// agreements must be withdrawn first. Sent again with the same reason
    /// (a retry), the withdrawal recorded; with another, CONFLICT.
    pub async fn withdraw_partnership(
        &self,
        req: WithdrawPartnership,
    ) -> Result<PartnershipView, AppError> {
        let reason = req.reason.trim();
        shared::text::check_line("reason", reason, MAX_REASON, true)?;
        let (txn, pair) = self.pair_locked(req.partnership_id, &req.by).await?;
        if let Some(done) = &pair.withdrawal {
            return if done.reason == reason {
                Ok(pair)
            } else {
                Err(AppError::new(
                    ErrorCode::Conflict,
                    format!(
                        "the partnership {} → {} was withdrawn on {}: {}",
                        pair.sponsor, pair.beneficiary, done.on, done.reason
                    ),
                ))
            };
        }
        if let Some(agreement) = pair.agreements.first() {
            return Err(AppError::bad_input(format!(
                "the agreement {} is in force on this pair: withdraw its agreements first \
                 (withdrawAgreement), then the pair",
                agreement.title
            )));
        }
        let withdrawal = Withdrawal {
            on: shared::policy::china_today(Utc::now()),
            reason: reason.to_owned(),
        };
        if !storage::withdraw_partnership(&txn, pair.id, &withdrawal, req.by.account_id).await? {
            return Err(AppError::internal("the partnership changed under the lock"));
        }
        let queued = storage::queue_recredit(
            &txn,
            &pair.beneficiary.code_prefix(),
            "partnership withdrawn",
        )
        .await?;
        let view = storage::partnership_by_id(&txn, pair.id)
            .await?
            .ok_or_else(|| AppError::internal("the partnership vanished"))?;
        shared::db::commit_in_time(txn).await?;
        info!(partnership = %pair.id, reason, "partnership withdrawn");
        self.recredit_for_a_while(queued).await;
        Ok(PartnershipView {
            crediting: self.still_crediting(view.beneficiary).await,
            ..view
        })
    }

    /// The bookings a pair counts for a year, for the admins of either
    /// side (a sponsor district checking which of its residents' trips make
    /// up its figures; the banner checking which stays).
    pub async fn credits(
        &self,
        req: ListPartnershipCredits,
    ) -> Result<PartnershipCreditPage, AppError> {
        if !(1..=100).contains(&req.first) {
            return Err(AppError::bad_input("first: 1 to 100 bookings at a time"));
        }
        check_year(req.year)?;
        let pair = storage::partnership_by_id(&self.db, req.partnership_id)
            .await?
            .ok_or_else(|| AppError::not_found(format!("no partnership {}", req.partnership_id)))?;
        if !(req.by.administers(pair.sponsor) || req.by.administers(pair.beneficiary)) {
            return Err(AppError::new(
                ErrorCode::Forbidden,
                "a pair's bookings are for the admins of its two regions (and platform \
                 admins); its report is public",
            ));
        }
        let first = req.first;
        let page = (req.after, first + 1, !req.skip_count);
        let (mut credits, total_count) =
            storage::credits_page(&self.db, req.partnership_id, req.year, page).await?;
        let has_next_page = credits.len() > first as usize;
        credits.truncate(first as usize);
        Ok(PartnershipCreditPage {
            credits,
            has_next_page,
            total_count,
        })
    }

    /// Partnerships touching a region's sub-tree (either side), or all, a
    /// page at a time. Pairs are few (one per sponsor and beneficiary), so
    /// the filter runs over all of them and the count is exact.
    pub async fn list(&self, req: ListPartnerships) -> Result<PartnershipPage, AppError> {
        if !(1..=100).contains(&req.first) {
            return Err(AppError::bad_input(
                "first: ask for 1 to 100 partnerships at a time",
            ));
        }
        let all = storage::partnerships(&self.db).await?;
        // The cursor is placed among every pair, withdrawn ones too: the
        // last of a page withdrawn meanwhile still marks where it ends.
        let start = match req.after {
            None => 0,
            Some(after) => {
                all.iter()
                    .position(|p| p.id == after)
                    .ok_or_else(|| shared::rpcs::not_a_cursor(after))?
                    + 1
            }
        };
        let listed = |p: &PartnershipView| {
            p.withdrawal.is_none()
                && req.region.is_none_or(|r| {
                    [p.sponsor, p.beneficiary]
                        .iter()
                        .any(|side| r.contains(*side) || side.contains(r))
                })
        };
        let total_count = all.iter().filter(|p| listed(p)).count() as u64;
        let first = req.first as usize;
        let rest = all.into_iter().skip(start).filter(listed);
        let mut partnerships: Vec<PartnershipView> = rest.take(first + 1).collect();
        let has_next_page = partnerships.len() > first;
        partnerships.truncate(first);
        Ok(PartnershipPage {
            partnerships,
            has_next_page,
            total_count,
        })
    }

    /// A partnership's year: totals, months, progress against its targets, CSV.
    pub async fn report(
        &self,
        id: PartnershipId,
        year: i32,
    ) -> Result<PartnershipReport, AppError> {
        check_year(year)?;
        let Some(partnership) = storage::partnership_by_id(&self.db, id).await? else {
            return Err(AppError::not_found(format!("no partnership {id}")));
        };
        let monthly = storage::monthly_totals(&self.db, id, year).await?;
        let totals: Figures = monthly.iter().map(|(_, f)| *f).sum();
        let today = shared::policy::china_today(Utc::now());
        let target = domain::year_targets(&partnership.agreements, year);
        let progress = |actual: i64, target: Option<i64>| {
            target.map(|t| domain::progress(actual, t, year, today))
        };
        let csv = crate::report::partnership_csv(&partnership, year, &monthly, &totals)
            .map_err(|e| AppError::internal(format!("writing the CSV: {e}")))?;
        Ok(PartnershipReport {
            tourists_progress: progress(totals.tourists, target.as_ref().and_then(|t| t.tourists)),
            spend_progress: progress(
                totals.spend.get(),
                target.as_ref().and_then(|t| t.spend).map(|f| f.get()),
            ),
            certified_spend_progress: progress(
                totals.certified_spend.get(),
                target
                    .as_ref()
                    .and_then(|t| t.certified_spend)
                    .map(|f| f.get()),
            ),
            targets: target,
            partnership,
            year,
            totals,
            monthly,
            csv,
        })
    }

    /// A region's year as sponsor and as beneficiary, each booking once.
    pub async fn region_impact(
        &self,
        region: RegionCode,
        year: i32,
    ) -> Result<RegionImpact, AppError> {
        check_year(year)?;
        let (Some(from), Some(to)) = (storage::year_start(year), storage::year_start(year + 1))
        else {
            return Err(AppError::bad_input(format!("no such year {year}")));
        };
        let prefix = region.code_prefix();
        let as_sponsor = storage::impact_in(&self.db, &prefix, true, from, to).await?;
        let as_beneficiary = storage::impact_in(&self.db, &prefix, false, from, to).await?;
        let csv = crate::report::region_csv(region, year, &as_sponsor, &as_beneficiary)
            .map_err(|e| AppError::internal(format!("writing the CSV: {e}")))?;
        Ok(RegionImpact {
            region,
            year,
            as_sponsor,
            as_beneficiary,
            csv,
        })
    }

    /// Which partnerships a booking credited, with what it counts for now.
    pub async fn booking_impact(&self, booking: BookingId) -> Result<Vec<ImpactCredit>, AppError> {
        let credited = storage::credited(&self.db, booking).await?;
        let pairs = storage::partnerships(&self.db).await?;
        // A pair it counts for nothing now (a full refund, a term moved
        // past it) is not one it counted for: history is in the pair's
        // months, not here.
        let mut out: Vec<ImpactCredit> = credited
            .into_iter()
            .filter(|(_, figures)| *figures != Figures::default())
            .filter_map(|(id, figures)| {
                let partnership = pairs.iter().find(|p| p.id == id)?.clone();
                Some(ImpactCredit {
                    partnership,
                    figures,
                })
            })
            .collect();
        // Most specific pair first.
        out.sort_by_key(|c| {
            (
                level_rank(c.partnership.beneficiary) + level_rank(c.partnership.sponsor),
                c.partnership.id,
            )
        });
        Ok(out)
    }
}

/// Credits every partnership with the difference between what the booking
/// contributes to it now and what it was credited so far: its attribution
/// records, and the months' totals added to `totals`, which the caller adds
/// to the kept ones once for the transaction ([`storage::add_to_totals`],
/// in one order whatever the bookings' order). Runs with the booking's
/// facts row locked (see `storage::record_fact`).
async fn reconcile<C: ConnectionTrait>(
    conn: &C,
    booking: BookingId,
    facts: &Facts,
    pairs: &[(PartnershipId, Pair)],
    cause: &str,
    totals: &mut storage::Totals,
) -> Result<(), DbErr> {
    let Some(period) = facts.period() else {
        return Ok(()); // not confirmed yet: nothing counts
    };
    let credited = storage::credited(conn, booking).await?;
    for (id, pair) in pairs {
        let want = pair.share(facts);
        let have = credited
            .iter()
            .find(|(credited_id, _)| credited_id == id)
            .map(|(_, f)| *f)
            .unwrap_or_default();
        let delta = want - have;
        if !delta.is_zero() {
            storage::attribute(conn, booking, *id, cause, period, &delta).await?;
            let total = totals.entry((*id, period.0, period.1)).or_default();
            *total = *total + delta;
        }
    }
    Ok(())
}

fn money(split: &shared::money::Split) -> Money3 {
    Money3 {
        gross: split.gross,
        host: split.host,
        fund: split.fund,
    }
}

fn level_rank(region: RegionCode) -> u8 {
    match region.level() {
        RegionLevel::County => 0,
        RegionLevel::Prefecture => 1,
        RegionLevel::Province => 2,
    }
}

/// Checks a day of a partnership's term: within [`domain::YEARS`].
fn check_day(field: &str, day: Option<chrono::NaiveDate>) -> Result<(), AppError> {
    match day {
        Some(day) if !domain::YEARS.contains(&chrono::Datelike::year(&day)) => {
            Err(AppError::bad_input(format!(
                "{field} {day}: a day from {} to {}",
                domain::YEARS.start(),
                domain::YEARS.end()
            )))
        }
        _ => Ok(()),
    }
}

fn check_year(year: i32) -> Result<(), AppError> {
    if domain::YEARS.contains(&year) {
        Ok(())
    } else {
        Err(AppError::new(
            ErrorCode::BadUserInput,
            format!(
                "{year} is not a year between {} and {}",
                domain::YEARS.start(),
                domain::YEARS.end()
            ),
        ))
    }
}

/// A withdrawn pair is not edited: CONFLICT, with when and why.
fn withdrawn_stays(pair: &PartnershipView) -> Result<(), AppError> {
    match &pair.withdrawal {
        Some(done) => Err(AppError::new(
            ErrorCode::Conflict,
            format!(
                "the partnership {} → {} was withdrawn on {} ({}): record it again \
                 (createPartnership) if it goes on",
                pair.sponsor, pair.beneficiary, done.on, done.reason
            ),
        )),
        None => Ok(()),
    }
}

/// Partnerships and agreements are recorded by a platform admin or an admin
/// of either region (internal callers act as `Principal::platform()`).
fn may_record(
    by: &shared::auth::Principal,
    sponsor: shared::region::RegionCode,
    beneficiary: shared::region::RegionCode,
) -> Result<(), AppError> {
    if by.administers(sponsor) || by.administers(beneficiary) {
        Ok(())
    } else {
        Err(AppError::new(
            shared::ErrorCode::Forbidden,
            "only a platform admin or an admin of one of the pair's two regions may record or \
             change its partnership and agreements",
        ))
    }
}

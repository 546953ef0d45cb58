//! Certification (扶贫产品认定): apply → public notice (公示, objections
//! recorded) → CERTIFIED until a date → EXPIRED, or REJECTED / REVOKED.

use super::{Inventory, administers};
use crate::storage::certification::{self as store, Change, Filter};
use chrono::{Duration, Utc};
use sea_orm::TransactionTrait;
use shared::db::is_unique_violation;
use shared::policy::china_today;
use shared::rpcs::{
    AdvanceCertification, ApplyForCertification, CertificationPage, CertificationState as State,
    CertificationStep as Step, CertificationView, ListCertifications,
};
use shared::{AppError, ErrorCode};

/// Longest statement, objection or note, in characters.
const MAX_TEXT: usize = 2_000;
/// Most objections one public notice keeps (each account objects once).
pub const MAX_OBJECTIONS: u64 = 200;

/// Shortest and longest public notice accepted, in days: a notice is
/// public for at least a day, or it is no notice.
const NOTICE_DAYS: std::ops::RangeInclusive<u32> = 1..=30;
/// Most evidence links on an application.
const MAX_EVIDENCE: usize = 10;
/// Longest validity of a certification, in months (five years).
const MAX_VALIDITY_MONTHS: u32 = 5 * 12;

fn text(field: &str, value: &str) -> Result<String, AppError> {
    crate::domain::check_text(field, value, MAX_TEXT, true)?;
    // "。" or "😀" is not a statement, an objection or a resolution.
    if !shared::text::says_something(value) {
        return Err(AppError::bad_input(format!(
            "{field}: must hold a letter or a digit"
        )));
    }
    Ok(value.trim().to_owned())
}

/// A decision's reason, shown on the public board beside it: one line.
fn one_line_reason(value: &str) -> Result<String, AppError> {
    let value = value.trim();
    shared::text::check_line("reason", value, MAX_TEXT, true)?;
    Ok(value.to_owned())
}

/// Evidence links, trimmed: http(s) URLs, at most [`MAX_EVIDENCE`].
fn evidence(links: &[String]) -> Result<Vec<String>, AppError> {
    if links.len() > MAX_EVIDENCE {
        return Err(AppError::bad_input(format!(
            "evidence: at most {MAX_EVIDENCE} links"
        )));
    }
    let mut kept: Vec<String> = Vec::with_capacity(links.len());
    for link in links {
        let link = link.trim();
        if !shared::rpcs::is_http_url(link) {
            return Err(shared::rpcs::not_an_http_url("evidence", link));
        }
        if kept.iter().any(|k| k == link) {
            return Err(AppError::bad_input(format!(
                "evidence: `{link}` is listed twice"
            )));
        }
        kept.push(link.to_owned());
    }
    Ok(kept)
}

fn conflict(c: &CertificationView, step: &str) -> AppError {
    AppError::conflict(format!(
        "cannot {step}: the certification is {}",
        c.state.as_str()
    ))
}

/// Whether `step` is the one that brought `current` where it is, with the
/// same decision (its reason, resolution, validity or notice): sent again.
/// An acceptance is judged from the day it was made (`accepted_on`; today
/// for one an older release made): sent again after midnight it was a
/// CONFLICT.
fn taken_already(
    step: &Step,
    current: &CertificationView,
    today: chrono::NaiveDate,
    accepted_on: Option<chrono::NaiveDate>,
) -> bool {
    let noted = |note: Option<&str>| current.decision_note.as_deref() == note.map(str::trim);
    match step {
        Step::AcceptForPublicNotice { notice_days } => {
            current.state == State::PublicNotice
                && current.notice_ends_on
                    == Some(
                        accepted_on.unwrap_or(today) + Duration::days(i64::from(*notice_days) + 1),
                    )
        }
        Step::Certify {
            valid_until,
            resolution,
        } => {
            current.state == State::Certified
                && current.valid_until == Some(*valid_until)
                && noted(resolution.as_deref())
        }
        Step::Reject { reason } => current.state == State::Rejected && noted(Some(reason)),
        Step::Revoke { reason } => current.state == State::Revoked && noted(Some(reason)),
        Step::Object { .. } => false,
    }
}

impl Inventory {
    /// Files an application for a listing, for its host.
    pub async fn apply_for_certification(
        &self,
        req: ApplyForCertification,
    ) -> Result<CertificationView, AppError> {
        let statement = text("statement", &req.statement)?;
        let evidence = evidence(&req.evidence)?;
        let txn = self.db.begin().await?;
        let Some(listing) = store::listing(&txn, req.listing_id).await? else {
            return Err(AppError::not_found("no homestay or route with this id"));
        };
        super::administers_listing(
            &req.by,
            listing.region,
            listing.on_sale,
            "no homestay or route with this id",
        )?;
        let id = uuid::Uuid::now_v7();
        match store::insert(
            &txn,
            id,
            req.listing_id,
            &listing,
            (&statement, &evidence),
            req.by.account_id.0,
        )
        .await
        {
            Err(e) if is_unique_violation(&e) => {
                // The same filing sent again (its answer lost): the
                // application it made, as it stands now.
                drop(txn);
                let txn = self.db.begin().await?;
                let filed = (statement.as_str(), evidence.as_slice());
                if let Some(made) =
                    store::open_as_filed(&txn, req.listing_id, filed, req.by.account_id.0).await?
                {
                    return Self::answer(txn, made, china_today(Utc::now())).await;
                }
                return Err(AppError::conflict(
                    "this listing has an application under review already",
                ));
            }
            other => other?,
        }
        Self::answer(txn, id, china_today(Utc::now())).await
    }

    /// Takes one step of the procedure.
    pub async fn advance_certification(
        &self,
        req: AdvanceCertification,
    ) -> Result<CertificationView, AppError> {
        let today = china_today(Utc::now());
        let txn = self.db.begin().await?;
        let Some(seen) = store::get(&txn, req.certification_id, today).await? else {
            return Err(AppError::not_found("no such certification"));
        };
        // Objections are anyone's; every other step is the region's admins'
        // (to others one the board hides is no certification at all).
        if !matches!(req.step, Step::Object { .. }) {
            if !on_the_board(&txn, &req.by, &seen).await? {
                return Err(AppError::not_found("no such certification"));
            }
            administers(&req.by, seen.region_code)?;
            // The listing first, then the certification: every step takes
            // the two in this order (an objection the certification alone),
            // so a revocation can wait for the listing's other certificates
            // (`revoke_others`): whoever holds one of them holds the listing
            // too, or is an objection that waits for nothing.
            store::lock_listing(&txn, seen.listing_id, &seen.listing_kind).await?;
        }
        store::lock(&txn, req.certification_id).await?;
        let Some(current) = store::get(&txn, req.certification_id, today).await? else {
            return Err(AppError::not_found("no such certification"));
        };
        // The same step sent again (a retry after a lost answer or
        // SERVICE_UNAVAILABLE): what it recorded, not a CONFLICT.
        let accepted_on = match req.step {
            Step::AcceptForPublicNotice { .. } => store::accepted_on(&txn, current.id).await?,
            _ => None,
        };
        if taken_already(&req.step, &current, today, accepted_on) {
            return Self::answer(txn, current.id, today).await;
        }
        let by = req.by.account_id.0;
        let (from, to, change) = match req.step {
            Step::AcceptForPublicNotice { notice_days } => {
                if !NOTICE_DAYS.contains(&notice_days) {
                    return Err(AppError::bad_input(format!(
                        "noticeDays: {} to {} days",
                        NOTICE_DAYS.start(),
                        NOTICE_DAYS.end()
                    )));
                }
                // Whole days after the day of acceptance: a notice accepted
                // at 23:59 still stays up `notice_days` full days.
                let change = Change {
                    notice_ends_on: Some(today + Duration::days(i64::from(notice_days) + 1)),
                    accepted_on: Some(today),
                    ..Change::default()
                };
                (State::Applied, State::PublicNotice, change)
            }
            Step::Object { text: objection } => {
                let objection = text("text", &objection)?;
                if current.state != State::PublicNotice {
                    // Said as the notice board would say it: one the caller
                    // cannot see there (an off-sale listing's, outside its
                    // region) is no certification, whatever its state.
                    if !on_the_board(&txn, &req.by, &current).await? {
                        return Err(AppError::not_found("no such certification"));
                    }
                    return Err(conflict(&current, "object"));
                }
                // The notice runs until the day before certification may
                // come: objections after it would come after the decision
                // was due (they were taken, and the certify then asked for
                // a resolution of them).
                if let Some(ends) = current.notice_ends_on.filter(|d| today >= *d) {
                    return Err(AppError::conflict(format!(
                        "the public notice ended on {}; objections are closed",
                        ends - Duration::days(1)
                    )));
                }
                // One objection per account (the row lock above makes the
                // look and the insert one step): a board of a hundred copies
                // of one voice hides the others.
                if store::has_objected(&txn, current.id, by).await? {
                    return Err(AppError::conflict(
                        "you have objected to this certification already; one objection per \
                         account",
                    ));
                }
                // Every reader of the certification gets its objections:
                // bounded, as every list of the API is.
                if store::objection_count(&txn, current.id).await? >= MAX_OBJECTIONS {
                    return Err(AppError::conflict(format!(
                        "this notice has {MAX_OBJECTIONS} objections on record, the most it \
                         keeps; the region's admins decide on them"
                    )));
                }
                store::object(&txn, current.id, by, &objection).await?;
                return Self::answer(txn, current.id, today).await;
            }
            Step::Certify {
                valid_until,
                resolution,
            } => {
                // The input first, as the other steps check theirs.
                let resolution = resolution.map(|r| text("resolution", &r)).transpose()?;
                let latest = today
                    .checked_add_months(chrono::Months::new(MAX_VALIDITY_MONTHS))
                    .unwrap_or(today);
                if valid_until <= today || valid_until > latest {
                    return Err(AppError::bad_input(format!(
                        "validUntil: after today and at most five years ahead, by {latest}"
                    )));
                }
                if current.state != State::PublicNotice {
                    return Err(conflict(&current, "certify"));
                }
                if let Some(ends) = current.notice_ends_on.filter(|d| today < *d) {
                    return Err(AppError::conflict(format!(
                        "the public notice runs through {}; certify from {ends}",
                        ends - Duration::days(1)
                    )));
                }
                let note = match (current.objections.is_empty(), resolution) {
                    (_, Some(r)) => Some(r),
                    (true, None) => None,
                    (false, None) => {
                        return Err(AppError::bad_input(format!(
                            "resolution: {} objection(s) were raised; say how they were resolved",
                            current.objections.len()
                        )));
                    }
                };
                let change = Change {
                    valid_until: Some(valid_until),
                    note,
                    ..Change::default()
                };
                (State::PublicNotice, State::Certified, change)
            }
            Step::Reject { reason } => {
                let note = Some(one_line_reason(&reason)?);
                let from = match current.state {
                    State::Applied | State::PublicNotice => current.state,
                    _ => return Err(conflict(&current, "reject")),
                };
                let change = Change {
                    note,
                    ..Change::default()
                };
                (from, State::Rejected, change)
            }
            Step::Revoke { reason } => {
                let note = Some(one_line_reason(&reason)?);
                if current.state != State::Certified {
                    return Err(conflict(&current, "revoke"));
                }
                let change = Change {
                    note,
                    ..Change::default()
                };
                (State::Certified, State::Revoked, change)
            }
        };
        if current.state != from {
            return Err(conflict(&current, "accept it for public notice"));
        }
        let revoked_note = (to == State::Revoked)
            .then(|| change.note.clone())
            .flatten();
        if !store::transition(&txn, current.id, from, to, change, by).await? {
            return Err(AppError::new(
                ErrorCode::Conflict,
                "someone else decided on this certification just now; read it again",
            ));
        }
        if to == State::Revoked {
            store::revoke_others(
                &txn,
                (current.listing_id, current.id),
                revoked_note.as_deref(),
                by,
                today,
            )
            .await?;
        }
        store::refresh_listing(&txn, current.listing_id, &current.listing_kind).await?;
        Self::answer(txn, current.id, today).await
    }

    /// The certification as the step's own transaction left it, committed:
    /// read after the commit, a step taken by another admin just after
    /// answered for this one (an accept answered REJECTED).
    async fn answer(
        txn: sea_orm::DatabaseTransaction,
        id: uuid::Uuid,
        today: chrono::NaiveDate,
    ) -> Result<CertificationView, AppError> {
        let view = store::get(&txn, id, today)
            .await?
            .ok_or_else(|| AppError::internal("the certification vanished"))?;
        shared::db::commit_in_time(txn).await?;
        Ok(view)
    }

    /// The public notice board: certifications in a region, newest first.
    pub async fn list_certifications(
        &self,
        req: ListCertifications,
    ) -> Result<CertificationPage, AppError> {
        let after = super::page_after(req.first, req.after.as_deref())?;
        let prefix = req
            .region
            .map(shared::region::RegionCode::code_prefix)
            .unwrap_or_default();
        let filter = Filter {
            prefix: &prefix,
            state: req.state,
            listing: req.listing_id,
            today: china_today(Utc::now()),
            administered: req.viewer.as_ref().and_then(administered_prefix),
        };
        let (found, has_next_page) = store::list(&self.db, &filter, req.first, after).await?;
        let total_count = if req.count {
            Some(store::count(&self.db, &filter).await?)
        } else {
            None
        };
        Ok(CertificationPage {
            certifications: found
                .into_iter()
                .map(|c| {
                    let cursor = c.id.to_string();
                    (c, cursor)
                })
                .collect(),
            has_next_page,
            total_count,
        })
    }
}

/// The code prefix of the regions `viewer` administers ('' for all), or
/// none for a viewer who administers none.
fn administered_prefix(viewer: &shared::auth::Principal) -> Option<String> {
    match viewer.role {
        shared::auth::Role::PlatformAdmin => Some(String::new()),
        shared::auth::Role::RegionAdmin => viewer.region_scope.map(|r| r.code_prefix()),
        _ => None,
    }
}

/// Whether `by` sees `certification` on the notice board: its region's
/// admins always; others while it is in public notice or its listing is
/// on sale.
async fn on_the_board<C: sea_orm::ConnectionTrait>(
    conn: &C,
    by: &shared::auth::Principal,
    certification: &CertificationView,
) -> Result<bool, AppError> {
    Ok(by.administers(certification.region_code)
        || certification.state == State::PublicNotice
        || store::listing(conn, certification.listing_id)
            .await?
            .is_some_and(|l| l.on_sale))
}

//! Money in the schema beyond paying: refunds (a booking's, and an
//! admin's partial refund), payout history and the reconciliation log.

use super::auth::platform_admin;
use super::types::{HostBalance, Instant, Money, PaymentSplit, page_info};
use super::{page_size, parse, rpc, yuan};
use async_graphql::{Context, Enum, ID, Object, Result, SimpleObject};
use shared::money::Split;
use shared::rpcs;

impl From<Split> for PaymentSplit {
    fn from(s: Split) -> PaymentSplit {
        PaymentSplit {
            host: s.host.into(),
            platform: s.platform.into(),
            fund: s.fund.into(),
            agency: s.agency.into(),
        }
    }
}

/// Where a refund stands.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum RefundStatus {
    /// Reserved; the provider has not confirmed yet (asked again until it does).
    Pending,
    /// Money returned.
    Succeeded,
    /// The provider refused it.
    Failed,
    /// It asked for more than was left.
    Refused,
}

/// Money given back from a booking's payment.
pub struct Refund(pub rpcs::RefundView);

#[Object]
impl Refund {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn booking_id(&self) -> ID {
        ID(self.0.booking_id.to_string())
    }
    async fn amount(&self) -> Money {
        self.0.amount.into()
    }
    async fn status(&self) -> RefundStatus {
        match self.0.status.as_str() {
            "SUCCEEDED" => RefundStatus::Succeeded,
            "FAILED" => RefundStatus::Failed,
            "REFUSED" => RefundStatus::Refused,
            _ => RefundStatus::Pending,
        }
    }
    async fn reason(&self) -> &str {
        &self.0.reason
    }
    /// The shares reversed: host, platform, fund, agency (once SUCCEEDED).
    async fn split(&self) -> Option<PaymentSplit> {
        self.0.split.map(PaymentSplit::from)
    }
    /// Why it failed or was refused.
    async fn failure_reason(&self) -> Option<&str> {
        self.0.failure_reason.as_deref()
    }
    async fn created_at(&self) -> Instant {
        Instant(self.0.created_at)
    }
}

/// The refunds of a booking the caller may see (the caller has read it).
pub async fn refunds_of(ctx: &Context<'_>, booking: shared::ids::BookingId) -> Result<Vec<Refund>> {
    let money = super::loaders::money(ctx, booking).await?;
    Ok(money.refunds.into_iter().map(Refund).collect())
}

/// The sum of the refunds in one of `statuses`.
pub fn refunded(refunds: &[rpcs::RefundView], statuses: &[&str]) -> shared::money::Fen {
    refunds
        .iter()
        .filter(|r| statuses.contains(&r.status.as_str()))
        .map(|r| r.amount)
        .sum()
}

/// What payment counts of a booking's money, if it captured any: the
/// amount captured and what is refunded of it, made or under way — ahead
/// of booking, which hears of each when payment's event arrives.
pub fn captured_and_refunded(
    money: &rpcs::BookingMoney,
) -> Option<(shared::money::Fen, shared::money::Fen)> {
    let captured = money.payments.iter().find(|p| p.status == "CAPTURED")?;
    let taken = refunded(&money.refunds, &["PENDING", "SUCCEEDED"]);
    Some((captured.amount, taken.min(captured.amount)))
}

/// The payment that stands for a booking: the captured (or still
/// processing) one, else the latest attempt.
pub async fn payment_of(
    ctx: &Context<'_>,
    booking: shared::ids::BookingId,
) -> Result<Option<super::types::Payment>> {
    let money = super::loaders::money(ctx, booking).await?;
    Ok(standing(money.payments).map(super::types::Payment))
}

/// The payment that counts among a booking's attempts.
pub fn standing(payments: Vec<rpcs::PaymentView>) -> Option<rpcs::PaymentView> {
    let live = payments
        .iter()
        .rposition(|p| matches!(p.status.as_str(), "CAPTURED" | "PROCESSING"));
    match live {
        Some(i) => payments.into_iter().nth(i),
        None => payments.into_iter().last(),
    }
}

/// `refundPayment`: platform admins.
pub async fn refund_payment(
    ctx: &Context<'_>,
    booking_id: ID,
    amount: String,
    reason: String,
    idempotency_key: String,
) -> Result<Refund> {
    let by = platform_admin(ctx)?.clone();
    let booking_id = parse("booking id", &booking_id)?;
    // Payment knows a booking only by its payments; a mistyped id is told
    // it names no booking, not that the booking was never paid.
    rpc(
        ctx,
        rpcs::GetBooking {
            booking_id,
            viewer: by.clone(),
        },
    )
    .await?;
    let view = super::keyed_rpc(
        ctx,
        "idempotencyKey",
        rpcs::RefundPayment {
            booking_id,
            amount: yuan("amount", &amount)?,
            reason,
            idempotency_key,
            by,
        },
    )
    .await?;
    Ok(Refund(view))
}

/// A payout run.
#[derive(SimpleObject)]
pub struct PayoutRun {
    /// The batch reference.
    pub reference: String,
    /// Ledger entries before this moment were paid out.
    pub up_to: Option<Instant>,
    /// When it ran.
    pub ran_at: Option<Instant>,
    /// What each host was paid.
    pub payouts: Vec<HostBalance>,
    pub total: Money,
}

impl From<rpcs::PayoutRun> for PayoutRun {
    fn from(run: rpcs::PayoutRun) -> PayoutRun {
        PayoutRun {
            reference: run.reference,
            up_to: run.up_to.map(Instant),
            ran_at: run.ran_at.map(Instant),
            total: run.total.into(),
            payouts: run.payouts.into_iter().map(HostBalance::from).collect(),
        }
    }
}

/// A payout run in a list.
#[derive(SimpleObject)]
pub struct PayoutRunEdge {
    pub cursor: String,
    pub node: PayoutRun,
}

/// Payout runs, newest first.
#[derive(SimpleObject)]
pub struct PayoutRunConnection {
    pub edges: Vec<PayoutRunEdge>,
    pub page_info: async_graphql::connection::PageInfo,
    /// Every run, on all pages (counted only when asked for).
    pub total_count: u32,
}

/// `payoutRuns`: platform admins.
pub async fn payout_runs(
    ctx: &Context<'_>,
    first: i32,
    after: Option<String>,
) -> Result<PayoutRunConnection> {
    let by = platform_admin(ctx)?.clone();
    let count = ctx.look_ahead().field("totalCount").exists();
    let page = rpc(
        ctx,
        rpcs::ListPayoutRuns {
            first: page_size(first)?,
            after,
            count,
            by,
        },
    )
    .await?;
    let edges: Vec<PayoutRunEdge> = page
        .runs
        .into_iter()
        .map(|(run, cursor)| PayoutRunEdge {
            cursor,
            node: run.into(),
        })
        .collect();
    Ok(PayoutRunConnection {
        page_info: page_info(edges.iter().map(|e| &e.cursor), page.has_next_page),
        edges,
        total_count: super::types::count(count, page.total_count)?,
    })
}

/// One thing the reconciler found comparing the provider with the ledger.
#[derive(SimpleObject)]
pub struct ReconciliationEntry {
    pub at: Instant,
    /// What it records (REFUND_DECLINED and MISMATCH are for a person).
    pub kind: ReconciliationKind,
    pub payment_id: ID,
    pub booking_id: ID,
    pub amount: Money,
    pub note: String,
}

/// An entry in a list.
#[derive(SimpleObject)]
pub struct ReconciliationEdge {
    pub cursor: String,
    pub node: ReconciliationEntry,
}

/// The reconciliation log, newest first.
#[derive(SimpleObject)]
pub struct ReconciliationConnection {
    pub edges: Vec<ReconciliationEdge>,
    pub page_info: async_graphql::connection::PageInfo,
    /// Every entry the filter lets through, on all pages (counted only
    /// when asked for).
    pub total_count: u32,
}

/// What a reconciliation entry records.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum ReconciliationKind {
    /// A charge the provider took after the payment was given up: captured.
    CapturedLate,
    /// A payment given up that the provider never charged: closed.
    ClosedUncharged,
    /// A refund the provider had not confirmed, now completed.
    RefundCompleted,
    /// A refund the provider refused (FAILED, its amount left to refund):
    /// for a person, who settles it with the traveler and may refund again.
    RefundDeclined,
    /// The provider's record disagrees with the ledger in a way no event
    /// fixes: for a person.
    Mismatch,
}

impl ReconciliationKind {
    const ALL: [ReconciliationKind; 5] = [
        ReconciliationKind::CapturedLate,
        ReconciliationKind::ClosedUncharged,
        ReconciliationKind::RefundCompleted,
        ReconciliationKind::RefundDeclined,
        ReconciliationKind::Mismatch,
    ];

    /// The kind payment wrote; None for one this gateway does not know.
    fn parse(kind: &str) -> Option<ReconciliationKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == kind)
    }

    fn as_str(self) -> &'static str {
        match self {
            ReconciliationKind::CapturedLate => "CAPTURED_LATE",
            ReconciliationKind::ClosedUncharged => "CLOSED_UNCHARGED",
            ReconciliationKind::RefundCompleted => "REFUND_COMPLETED",
            ReconciliationKind::RefundDeclined => "REFUND_DECLINED",
            ReconciliationKind::Mismatch => "MISMATCH",
        }
    }
}

/// `reconciliationLog`: platform admins.
pub async fn reconciliation_log(
    ctx: &Context<'_>,
    kind: Option<ReconciliationKind>,
    first: i32,
    after: Option<String>,
) -> Result<ReconciliationConnection> {
    let by = platform_admin(ctx)?.clone();
    let count = ctx.look_ahead().field("totalCount").exists();
    let page = rpc(
        ctx,
        rpcs::ListReconciliation {
            first: page_size(first)?,
            after,
            kind: kind.map(|k| k.as_str().to_owned()),
            count,
            by,
        },
    )
    .await?;
    let edges = page
        .entries
        .into_iter()
        .map(|(e, cursor)| {
            // A kind newer than this gateway (payment upgraded first): for
            // a person, as a mismatch is.
            let kind = ReconciliationKind::parse(&e.kind).unwrap_or(ReconciliationKind::Mismatch);
            ReconciliationEdge {
                cursor,
                node: ReconciliationEntry {
                    at: Instant(e.at),
                    kind,
                    payment_id: ID(e.payment_id.to_string()),
                    booking_id: ID(e.booking_id.to_string()),
                    amount: e.amount.into(),
                    note: e.note,
                },
            }
        })
        .collect::<Vec<ReconciliationEdge>>();
    Ok(ReconciliationConnection {
        page_info: page_info(edges.iter().map(|e| &e.cursor), page.has_next_page),
        edges,
        total_count: super::types::count(count, page.total_count)?,
    })
}

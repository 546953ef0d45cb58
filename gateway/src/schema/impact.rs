//! Partnerships, agreements and the impact bookings feed.

use super::auth::region_admin;
use super::rpc;
use super::types::{Date, Money, Region};
use async_graphql::{Context, ID, InputObject, Object, Result, SimpleObject};
use shared::ids::PartnershipId;
use shared::region::{RegionCode, reference_region};
use shared::rpcs;

fn region(code: RegionCode) -> Option<Region> {
    reference_region(code).map(Region)
}

/// A sponsor↔beneficiary pair of regions (结对帮扶 / 对口协作).
pub struct Partnership(pub rpcs::PartnershipView);

#[Object]
impl Partnership {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// The sponsor (帮扶方).
    async fn sponsor(&self) -> Option<Region> {
        region(self.0.sponsor)
    }
    /// The beneficiary (受援方).
    async fn beneficiary(&self) -> Option<Region> {
        region(self.0.beneficiary)
    }
    /// Paired since (China time): bookings confirmed before this day do
    /// not count for it.
    async fn since(&self) -> Option<Date> {
        self.0.since.map(Date)
    }
    /// The day it ended (its last day in force), when ENDED: bookings
    /// confirmed after it do not count for it; those before stay.
    async fn ended_on(&self) -> Option<Date> {
        self.0.ended_on.map(Date)
    }
    /// ACTIVE, ENDED on `endedOn`, or WITHDRAWN (`withdrawal`).
    async fn status(&self) -> PartnershipStatus {
        match self.0.status.as_str() {
            "ENDED" => PartnershipStatus::Ended,
            "WITHDRAWN" => PartnershipStatus::Withdrawn,
            _ => PartnershipStatus::Active,
        }
    }
    /// When and why it was withdrawn (`withdrawPartnership`); null
    /// otherwise.
    async fn withdrawal(&self) -> Option<AgreementWithdrawal> {
        withdrawal(self.0.withdrawal.as_ref())
    }
    async fn notes(&self) -> Option<&str> {
        self.0.notes.as_deref()
    }
    /// Demonstration data, not a real record.
    async fn demo(&self) -> bool {
        self.0.demo
    }
    /// Its agreements (框架协议) in force, oldest first: their targets are
    /// what `report` measures progress against.
    async fn agreements(&self) -> Vec<Agreement> {
        self.0.agreements.iter().cloned().map(Agreement).collect()
    }
    /// Its withdrawn agreements (`withdrawAgreement`), oldest first: on
    /// record, counting for nothing.
    async fn withdrawn_agreements(&self) -> Vec<Agreement> {
        self.0
            .withdrawn_agreements
            .iter()
            .cloned()
            .map(Agreement)
            .collect()
    }
    /// Its figures are still being credited with the bookings it covers (a
    /// pair just recorded, or a term moved, over many bookings of its
    /// beneficiary's sub-tree or one overlapping it: seconds). Until false
    /// its reports may still change: short of bookings a new or longer
    /// term adds, or still holding those a shorter one takes out.
    async fn crediting(&self) -> bool {
        self.0.crediting
    }
    /// Its figures for a year (China time): totals, months, progress
    /// against the agreement's targets, CSV. Costs 100 against the
    /// complexity limit: each is a call to partnership, which reads and
    /// writes out the year (under fifty a request). Null with its error
    /// when that call fails: the pair, and the list it is in, kept.
    #[graphql(complexity = "REPORT_COST + child_complexity")]
    async fn report(&self, ctx: &Context<'_>, year: i32) -> Result<Option<PartnershipReport>> {
        report(ctx, self.0.id, year).await.map(Some)
    }
    /// The bookings it counts for in `year` (China time), by booking id,
    /// each with what it counts for now, net of refunds — one cancelled
    /// since with what it kept (no tourist; the spend its refund left), one
    /// that keeps nothing left out —: the trips that make up the report's
    /// figures, adding up to its totals. No person is named. For the
    /// admins of either side and platform admins; anyone else gets null
    /// here and FORBIDDEN in `errors`, the rest of the pair as it is (the
    /// report is the public view). Costs 100 against the complexity limit,
    /// as `report` does.
    #[graphql(complexity = "REPORT_COST + child_complexity")]
    async fn credits(
        &self,
        ctx: &Context<'_>,
        year: i32,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<Option<PartnershipCreditConnection>> {
        // The admins of its two regions see them: asked before the page.
        let by = region_admin(ctx)?.clone();
        let page = rpc(
            ctx,
            rpcs::ListPartnershipCredits {
                partnership_id: self.0.id,
                year,
                first: super::page_size(first)?,
                after: after.map(|a| super::cursor(&a)).transpose()?,
                skip_count: !ctx.look_ahead().field("totalCount").exists(),
                by,
            },
        )
        .await?;
        let edges: Vec<PartnershipCreditEdge> = page
            .credits
            .into_iter()
            .map(|c| PartnershipCreditEdge {
                cursor: c.booking_id.to_string(),
                node: PartnershipCredit {
                    booking_id: ID(c.booking_id.to_string()),
                    confirmed_at: c.confirmed_at.map(super::types::Instant),
                    sponsor_region: c.sponsor_region.and_then(region),
                    listing_region: c.listing_region.and_then(region),
                    impact: c.figures.into(),
                },
            })
            .collect();
        Ok(Some(PartnershipCreditConnection {
            page_info: super::types::page_info(edges.iter().map(|e| &e.cursor), page.has_next_page),
            edges,
            total_count: page.total_count,
        }))
    }
}

/// One booking's credit to a partnership.
#[derive(SimpleObject)]
pub struct PartnershipCredit {
    /// The booking (its admins and booker read it; the sponsor side's
    /// admins see only this).
    pub booking_id: ID,
    /// When it was confirmed.
    pub confirmed_at: Option<super::types::Instant>,
    /// The sponsor region it was credited from: the booker's home, or the
    /// one declared with the booking.
    pub sponsor_region: Option<Region>,
    /// The listing's region.
    pub listing_region: Option<Region>,
    /// What it counts for now.
    pub impact: Impact,
}

/// An edge of a [`PartnershipCreditConnection`].
#[derive(SimpleObject)]
pub struct PartnershipCreditEdge {
    pub cursor: String,
    pub node: PartnershipCredit,
}

/// A page of a partnership's credits, by booking id.
#[derive(SimpleObject)]
pub struct PartnershipCreditConnection {
    pub edges: Vec<PartnershipCreditEdge>,
    pub page_info: async_graphql::connection::PageInfo,
    /// How many bookings count for the year, over all pages.
    pub total_count: u64,
}

/// What a partnership's nested `report` costs against the complexity
/// limit: one call to partnership each, not batched (a page of 100 pairs
/// asked for 24 years each made 2,400 calls from one anonymous request).
const REPORT_COST: usize = 100;

/// A partnership's report for `year`: public, like the fund.
pub async fn report(
    ctx: &Context<'_>,
    partnership_id: PartnershipId,
    year: i32,
) -> Result<PartnershipReport> {
    let request = rpcs::GetPartnershipReport {
        partnership_id,
        year,
    };
    Ok(PartnershipReport(rpc(ctx, request).await?))
}

/// An edge of a [`PartnershipConnection`].
#[derive(SimpleObject)]
pub struct PartnershipEdge {
    pub cursor: String,
    pub node: Partnership,
}

/// A page of partnerships, oldest first.
#[derive(SimpleObject)]
pub struct PartnershipConnection {
    pub edges: Vec<PartnershipEdge>,
    pub page_info: async_graphql::connection::PageInfo,
    /// How many match, over all pages.
    pub total_count: u64,
}

impl From<rpcs::PartnershipPage> for PartnershipConnection {
    fn from(page: rpcs::PartnershipPage) -> PartnershipConnection {
        let edges: Vec<PartnershipEdge> = page
            .partnerships
            .into_iter()
            .map(|p| PartnershipEdge {
                cursor: p.id.to_string(),
                node: Partnership(p),
            })
            .collect();
        PartnershipConnection {
            page_info: super::types::page_info(edges.iter().map(|e| &e.cursor), page.has_next_page),
            edges,
            total_count: page.total_count,
        }
    }
}

/// An agreement of a partnership, with yearly targets.
pub struct Agreement(pub rpcs::AgreementView);

#[Object]
impl Agreement {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// e.g. 《京蒙旅游扶贫协作框架协议》.
    async fn title(&self) -> &str {
        &self.0.title
    }
    async fn signed_on(&self) -> Date {
        Date(self.0.signed_on)
    }
    async fn starts_on(&self) -> Date {
        Date(self.0.starts_on)
    }
    async fn ends_on(&self) -> Date {
        Date(self.0.ends_on)
    }
    async fn signatories(&self) -> &[String] {
        &self.0.signatories
    }
    async fn targets(&self) -> Vec<YearTarget> {
        self.0.targets.iter().map(YearTarget::from).collect()
    }
    /// When and why it was withdrawn; null while in force.
    async fn withdrawal(&self) -> Option<AgreementWithdrawal> {
        withdrawal(self.0.withdrawal.as_ref())
    }
}

fn withdrawal(w: Option<&rpcs::Withdrawal>) -> Option<AgreementWithdrawal> {
    w.map(|w| AgreementWithdrawal {
        on: Date(w.on),
        reason: w.reason.clone(),
    })
}

/// The withdrawal of an agreement or a partnership recorded by mistake.
#[derive(SimpleObject)]
pub struct AgreementWithdrawal {
    /// The day (China time).
    pub on: Date,
    /// Why, as the admin wrote it.
    pub reason: String,
}

impl From<&rpcs::YearTarget> for YearTarget {
    fn from(t: &rpcs::YearTarget) -> YearTarget {
        YearTarget {
            year: t.year,
            tourists: t.tourists,
            spend: t.spend.map(Money::from),
            certified_spend: t.certified_spend.map(Money::from),
            custom: t
                .custom
                .iter()
                .map(|c| CustomTarget {
                    name: c.name.clone(),
                    target: c.target,
                    unit: c.unit.clone(),
                })
                .collect(),
        }
    }
}

/// What an agreement aims at in a year.
#[derive(SimpleObject)]
pub struct YearTarget {
    pub year: i32,
    /// Tourists to send.
    pub tourists: Option<i64>,
    /// Spend to reach.
    pub spend: Option<Money>,
    /// Spend on certified listings to reach.
    pub certified_spend: Option<Money>,
    /// Further indicators (recorded, not measured by Duikou).
    pub custom: Vec<CustomTarget>,
}

/// An agreement's indicator beyond what bookings measure.
#[derive(SimpleObject, InputObject)]
#[graphql(input_name = "CustomTargetInput")]
pub struct CustomTarget {
    /// e.g. 培训乡村旅游带头人.
    pub name: String,
    pub target: f64,
    /// e.g. 人次.
    pub unit: Option<String>,
}

/// Impact figures: net of cancellations and refunds.
#[derive(SimpleObject)]
pub struct Impact {
    /// Tourists sent (客源互送).
    pub tourists: i64,
    /// Confirmed bookings.
    pub bookings: i64,
    /// Spend.
    pub spend: Money,
    /// Spend on certified poverty-relief listings.
    pub certified_spend: Money,
    /// Income to hosts (the households, cooperatives and village collectives paid).
    pub host_income: Money,
    /// Donations to the welfare fund.
    pub fund: Money,
}

impl From<rpcs::Figures> for Impact {
    fn from(f: rpcs::Figures) -> Impact {
        Impact {
            tourists: f.tourists,
            bookings: f.bookings,
            spend: f.spend.into(),
            certified_spend: f.certified_spend.into(),
            host_income: f.host_income.into(),
            fund: f.fund.into(),
        }
    }
}

/// One month of a report.
#[derive(SimpleObject)]
pub struct MonthImpact {
    /// 1 to 12.
    pub month: u32,
    pub impact: Impact,
}

/// A count against its target.
#[derive(SimpleObject)]
pub struct TargetProgress {
    /// Reached.
    pub actual: i64,
    /// The target.
    pub target: i64,
    /// actual / target in percent, to a tenth rounded down (a target
    /// missed by a fen is 99.9, not 100.0).
    pub percent: f64,
    /// At or ahead of the share of the year gone by (its days before
    /// today, China time: none on 1 January).
    pub on_track: bool,
}

/// An amount of money against its target (a province's yearly spend
/// target is past what a GraphQL Int holds in fen).
#[derive(SimpleObject)]
pub struct MoneyProgress {
    /// Reached.
    pub actual: Money,
    /// The target.
    pub target: Money,
    /// actual / target in percent, to a tenth rounded down (a target
    /// missed by a fen is 99.9, not 100.0).
    pub percent: f64,
    /// At or ahead of the share of the year gone by (its days before
    /// today, China time: none on 1 January).
    pub on_track: bool,
}

/// To a tenth, rounded down, from the whole figures (no float error):
/// 99.96 % of a target is not 100.0 % (a target missed by a fen read as
/// reached).
fn percent(p: &rpcs::TargetProgress) -> f64 {
    if p.target <= 0 {
        return (p.percent * 10.0).floor() / 10.0;
    }
    let tenths = i128::from(p.actual) * 1000 / i128::from(p.target);
    i64::try_from(tenths).map_or(p.percent, |t| t as f64 / 10.0)
}

fn progress(p: Option<rpcs::TargetProgress>) -> Option<TargetProgress> {
    p.map(|p| TargetProgress {
        actual: p.actual,
        target: p.target,
        percent: percent(&p),
        on_track: p.on_track,
    })
}

fn money_progress(p: Option<rpcs::TargetProgress>) -> Option<MoneyProgress> {
    p.map(|p| MoneyProgress {
        actual: shared::money::Fen(p.actual).into(),
        target: shared::money::Fen(p.target).into(),
        percent: percent(&p),
        on_track: p.on_track,
    })
}

/// A partnership's year.
pub struct PartnershipReport(pub rpcs::PartnershipReport);

#[Object]
impl PartnershipReport {
    async fn partnership(&self) -> Partnership {
        Partnership(self.0.partnership.clone())
    }
    async fn year(&self) -> i32 {
        self.0.year
    }
    /// The year's figures.
    async fn totals(&self) -> Impact {
        self.0.totals.into()
    }
    /// Months with anything counted (a month whose bookings were all
    /// taken back, by refunds or a withdrawal, is left out).
    async fn monthly(&self) -> Vec<MonthImpact> {
        self.0
            .monthly
            .iter()
            .map(|(month, f)| MonthImpact {
                month: *month,
                impact: (*f).into(),
            })
            .collect()
    }
    /// The year's targets, each indicator from the newest agreement that
    /// sets it for the year: a supplementary agreement adding an indicator
    /// leaves the others standing. Custom indicators are shown, not
    /// measured.
    async fn targets(&self) -> Option<YearTarget> {
        self.0.targets.as_ref().map(YearTarget::from)
    }
    /// Tourists against the year's target.
    async fn tourists_progress(&self) -> Option<TargetProgress> {
        progress(self.0.tourists_progress.clone())
    }
    /// Spend against its target.
    async fn spend_progress(&self) -> Option<MoneyProgress> {
        money_progress(self.0.spend_progress.clone())
    }
    /// Certified spend against its target.
    async fn certified_spend_progress(&self) -> Option<MoneyProgress> {
        money_progress(self.0.certified_spend_progress.clone())
    }
    /// The report as CSV.
    async fn csv(&self) -> &str {
        &self.0.csv
    }
}

/// A region's year, each booking counted once.
pub struct RegionImpact(pub rpcs::RegionImpact);

#[Object]
impl RegionImpact {
    async fn region(&self) -> Option<Region> {
        region(self.0.region)
    }
    async fn year(&self) -> i32 {
        self.0.year
    }
    /// Bookings its people made.
    async fn as_sponsor(&self) -> Impact {
        self.0.as_sponsor.into()
    }
    /// Bookings of listings inside it.
    async fn as_beneficiary(&self) -> Impact {
        self.0.as_beneficiary.into()
    }
    /// The report as CSV.
    async fn csv(&self) -> &str {
        &self.0.csv
    }
}

/// A partnership a booking credited, and what the booking counts for there now.
pub struct ImpactCredit(pub rpcs::ImpactCredit);

#[Object]
impl ImpactCredit {
    async fn partnership(&self) -> Partnership {
        Partnership(self.0.partnership.clone())
    }
    async fn impact(&self) -> Impact {
        self.0.figures.into()
    }
}

/// Where a booking's money went, yuan by yuan, and what it counted for.
#[derive(SimpleObject)]
pub struct ImpactTrace {
    pub booking: super::types::Booking,
    /// Captured from the traveler (zero before payment).
    pub paid: Money,
    /// Given back so far.
    pub refunded: Money,
    /// What stays after refunds, shared out: the host household (with the
    /// capture's rounding remainder), the platform fee, the welfare fund
    /// donation and the agency's commission. The parts add up to paid −
    /// refunded; a partial refund rounds the platform's share it takes
    /// back down, and the fund's too when an agency shares the booking
    /// (else the fund takes the remainder), the agency's and the host's up
    /// (docs/architecture.md, the ledger).
    pub kept: super::types::PaymentSplit,
    /// The household, cooperative or village collective paid.
    pub host_id: Option<ID>,
    /// The listing carried the poverty-relief certification when booked:
    /// its spend counts as certified spend.
    pub certified: bool,
    /// How the public welfare fund names this booking: find its donation
    /// in `welfareFund.entries` by this reference.
    pub fund_reference: String,
    /// The partnerships it counts for now, most specific pair first (none
    /// until it is confirmed; a cancellation refunded in full, or a term
    /// moved past it, takes a pair back).
    pub partnerships: Vec<ImpactCredit>,
}

/// The [`ImpactTrace`] of a booking the caller has read (so may see).
pub async fn trace(ctx: &Context<'_>, booking: rpcs::BookingView) -> Result<ImpactTrace> {
    use shared::money::{Fen, Split};
    let booking_id = booking.id;
    let (money, credits) = futures::try_join!(
        super::loaders::money(ctx, booking_id),
        rpc(ctx, rpcs::GetBookingImpact { booking_id }),
    )?;
    let zero = Split {
        gross: Fen(0),
        host: Fen(0),
        platform: Fen(0),
        fund: Fen(0),
        agency: Fen(0),
    };
    let captured = money
        .payments
        .iter()
        .find(|p| p.status == "CAPTURED")
        .and_then(|p| p.split)
        .unwrap_or(zero);
    // Each SUCCEEDED refund carries the exact shares it reversed.
    let kept = money
        .refunds
        .iter()
        .filter(|r| r.status == "SUCCEEDED")
        .filter_map(|r| r.split)
        .fold(captured, |k, r| Split {
            gross: k.gross - r.gross,
            host: k.host - r.host,
            platform: k.platform - r.platform,
            fund: k.fund - r.fund,
            agency: k.agency - r.agency,
        });
    Ok(ImpactTrace {
        paid: captured.gross.into(),
        refunded: (captured.gross - kept.gross).into(),
        kept: kept.into(),
        host_id: booking.listing.as_ref().map(|l| ID(l.host_id.to_string())),
        certified: booking.listing.as_ref().is_some_and(|l| l.certified),
        fund_reference: booking_id.public_reference(),
        partnerships: credits.into_iter().map(ImpactCredit).collect(),
        booking: super::types::Booking(booking),
    })
}

/// A new partnership.
#[derive(InputObject)]
pub struct PartnershipInput {
    /// The sponsor (帮扶方), e.g. 110108 北京市海淀区.
    pub sponsor_region_code: ID,
    /// The beneficiary (受援方), e.g. 150430 敖汉旗.
    pub beneficiary_region_code: ID,
    /// Paired since.
    pub since: Option<Date>,
    pub notes: Option<String>,
}

/// A year's targets of an agreement; money in yuan ("1500000.00").
#[derive(InputObject)]
pub struct YearTargetInput {
    pub year: i32,
    pub tourists: Option<i32>,
    pub spend: Option<String>,
    pub certified_spend: Option<String>,
    #[graphql(default)]
    pub custom: Vec<CustomTarget>,
}

/// A new agreement (框架协议).
#[derive(InputObject)]
pub struct AgreementInput {
    pub partnership_id: ID,
    /// e.g. 《京蒙旅游扶贫协作框架协议》.
    pub title: String,
    pub signed_on: Date,
    pub starts_on: Date,
    pub ends_on: Date,
    #[graphql(default)]
    pub signatories: Vec<String>,
    #[graphql(default)]
    pub targets: Vec<YearTargetInput>,
}

/// `createPartnership`: a platform admin, or an admin of either region.
pub async fn create_partnership(ctx: &Context<'_>, input: PartnershipInput) -> Result<Partnership> {
    let by = region_admin(ctx)?.clone();
    let sponsor = super::region(&input.sponsor_region_code)?;
    let beneficiary = super::region(&input.beneficiary_region_code)?;
    let created = rpc(
        ctx,
        rpcs::CreatePartnership {
            sponsor,
            beneficiary,
            since: input.since.map(|d| d.0),
            notes: input.notes,
            demo: false,
            by,
        },
    )
    .await?;
    Ok(Partnership(created))
}

/// `recordAgreement`: the same admins as the partnership's.
pub async fn record_agreement(ctx: &Context<'_>, input: AgreementInput) -> Result<Agreement> {
    let by = region_admin(ctx)?.clone();
    let partnership_id: PartnershipId = super::parse("partnership id", &input.partnership_id)?;
    let targets = input
        .targets
        .into_iter()
        .map(|t| {
            Ok(rpcs::YearTarget {
                year: t.year,
                tourists: t.tourists.map(i64::from),
                spend: t.spend.map(|s| super::yuan("spend", &s)).transpose()?,
                certified_spend: t
                    .certified_spend
                    .map(|s| super::yuan("certifiedSpend", &s))
                    .transpose()?,
                custom: t
                    .custom
                    .into_iter()
                    .map(|c| rpcs::CustomTarget {
                        name: c.name,
                        target: c.target,
                        unit: c.unit,
                    })
                    .collect(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let created = rpc(
        ctx,
        rpcs::CreateAgreement {
            partnership_id,
            title: input.title,
            signed_on: input.signed_on.0,
            starts_on: input.starts_on.0,
            ends_on: input.ends_on.0,
            signatories: input.signatories,
            targets,
            by,
        },
    )
    .await?;
    Ok(Agreement(created))
}

/// `withdrawAgreement`: the same admins as the partnership's.
pub async fn withdraw_agreement(
    ctx: &Context<'_>,
    agreement_id: ID,
    reason: String,
) -> Result<Agreement> {
    let by = region_admin(ctx)?.clone();
    let agreement_id = super::parse("agreement id", &agreement_id)?;
    let withdrawn = rpc(
        ctx,
        rpcs::WithdrawAgreement {
            agreement_id,
            reason,
            by,
        },
    )
    .await?;
    Ok(Agreement(withdrawn))
}

/// `withdrawPartnership`: the same admins as the partnership's.
pub async fn withdraw_partnership(
    ctx: &Context<'_>,
    partnership_id: ID,
    reason: String,
) -> Result<Partnership> {
    let by = region_admin(ctx)?.clone();
    let partnership_id = super::parse("partnership id", &partnership_id)?;
    let withdrawn = rpc(
        ctx,
        rpcs::WithdrawPartnership {
            partnership_id,
            reason,
            by,
        },
    )
    .await?;
    Ok(Partnership(withdrawn))
}

/// Partnership status.
#[derive(async_graphql::Enum, Copy, Clone, Eq, PartialEq)]
pub enum PartnershipStatus {
    /// In force.
    Active,
    /// Ended (on `endedOn`); what it counted before stays.
    Ended,
    /// Withdrawn, recorded by mistake (`withdrawPartnership`): it counts
    /// nothing and is listed no more. Not a status to set.
    Withdrawn,
}

/// Changes to a partnership; omitted fields stay. A change of `since` or of
/// the end credits the pair again with exactly the bookings confirmed within
/// its term.
#[derive(InputObject)]
pub struct PartnershipUpdate {
    pub partnership_id: ID,
    /// ENDED alone ends it today (an ended pair keeps its day); ACTIVE
    /// clears the end.
    pub status: Option<PartnershipStatus>,
    pub since: Option<Date>,
    /// The day it ended, its last in force (up to today, not before
    /// `since`); implies ENDED.
    pub ended_on: Option<Date>,
    /// An empty string clears them.
    pub notes: Option<String>,
}

/// `updatePartnership`: the admins of either side.
pub async fn update_partnership(
    ctx: &Context<'_>,
    input: PartnershipUpdate,
) -> Result<Partnership> {
    let by = region_admin(ctx)?.clone();
    let partnership_id: PartnershipId = super::parse("partnership id", &input.partnership_id)?;
    let updated = rpc(
        ctx,
        rpcs::UpdatePartnership {
            partnership_id,
            status: input.status.map(|s| {
                match s {
                    PartnershipStatus::Active => "ACTIVE",
                    PartnershipStatus::Ended => "ENDED",
                    PartnershipStatus::Withdrawn => "WITHDRAWN",
                }
                .to_owned()
            }),
            since: input.since.map(|d| d.0),
            ended_on: input.ended_on.map(|d| d.0),
            notes: input.notes,
            by,
        },
    )
    .await?;
    Ok(Partnership(updated))
}

#[cfg(test)]
mod tests {
    use super::percent;

    #[test]
    fn a_target_missed_by_a_fen_is_not_shown_reached() {
        let progress = |actual: i64, target: i64| shared::rpcs::TargetProgress {
            actual,
            target,
            percent: actual as f64 * 100.0 / target as f64,
            on_track: false,
        };
        assert_eq!(percent(&progress(2_036_000, 2_036_001)), 99.9);
        assert_eq!(percent(&progress(38_000, 1_000_000)), 3.8);
        assert_eq!(percent(&progress(5, 5)), 100.0);
        // 0.3 of 1 by floats is 29.999…: the whole figures say 30.0.
        assert_eq!(percent(&progress(3, 10)), 30.0);
    }
}

//! Certification (扶贫产品认定) in the schema: the public notice board and
//! the steps region admins take.

use super::auth::{principal, region_admin};
use super::types::{Date, Instant, page_info};
use super::{changing, page_size, parse, region, rpc};
use async_graphql::{Context, Enum, ID, Object, Result, SimpleObject};
use shared::policy::china_today;
use shared::rpcs::{self, CertificationStep as Step};

/// Where a certification stands.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "shared::rpcs::CertificationState")]
pub enum CertificationState {
    /// Filed for the host; under review.
    Applied,
    /// In public notice (公示): objections are recorded.
    PublicNotice,
    /// Certified: the listing carries the poverty-relief badge until `validUntil`.
    Certified,
    /// Its validity ran out.
    Expired,
    /// Refused.
    Rejected,
    /// Withdrawn after certification.
    Revoked,
}

/// An objection raised during the public notice.
#[derive(SimpleObject)]
pub struct Objection {
    pub text: String,
    pub at: Instant,
    /// The account that objected: shown to the admins who decide on the
    /// certification (the listing's region, or the platform), null to
    /// everyone else.
    pub by_account_id: Option<ID>,
}

/// A listing's certification as the public notice board shows it.
pub struct Certification(pub rpcs::CertificationView);

#[Object]
impl Certification {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// The homestay or route.
    async fn listing_id(&self) -> ID {
        ID(self.0.listing_id.to_string())
    }
    /// HOMESTAY or ROUTE.
    async fn listing_kind(&self) -> &str {
        &self.0.listing_kind
    }
    async fn listing_title(&self) -> &str {
        &self.0.listing_title
    }
    async fn region_code(&self) -> ID {
        ID(self.0.region_code.to_string())
    }
    async fn state(&self) -> CertificationState {
        self.0.state.into()
    }
    /// How the listing benefits poor households.
    async fn statement(&self) -> &str {
        &self.0.statement
    }
    async fn applied_at(&self) -> Instant {
        Instant(self.0.applied_at)
    }
    /// The first day after the public notice: objections are taken until
    /// the day before, and certification is possible from this day.
    async fn notice_ends_on(&self) -> Option<Date> {
        self.0.notice_ends_on.map(Date)
    }
    async fn objections(&self, ctx: &Context<'_>) -> Vec<Objection> {
        let decides = super::auth::manages(ctx, self.0.region_code);
        self.0
            .objections
            .iter()
            .map(|o| Objection {
                text: o.text.clone(),
                at: Instant(o.at),
                by_account_id: o.by.filter(|_| decides).map(|id| ID(id.0.to_string())),
            })
            .collect()
    }
    /// Links to the evidence filed with the application.
    async fn evidence(&self) -> &[String] {
        &self.0.evidence
    }
    /// The last day the certification is valid (China time).
    async fn valid_until(&self) -> Option<Date> {
        self.0.valid_until.map(Date)
    }
    /// Why it was rejected or revoked, or how objections were resolved.
    async fn decision_note(&self) -> Option<&str> {
        self.0.decision_note.as_deref()
    }
}

/// A certification in a list.
#[derive(SimpleObject)]
pub struct CertificationEdge {
    pub cursor: String,
    pub node: Certification,
}

/// Certifications, newest first.
#[derive(SimpleObject)]
pub struct CertificationConnection {
    pub edges: Vec<CertificationEdge>,
    pub page_info: async_graphql::connection::PageInfo,
    /// Every certification the filter lets through, on all pages (counted
    /// only when asked for).
    pub total_count: u32,
}

/// `certifications`: public.
pub async fn list(
    ctx: &Context<'_>,
    region_code: Option<ID>,
    state: Option<CertificationState>,
    listing_id: Option<ID>,
    first: i32,
    after: Option<String>,
) -> Result<CertificationConnection> {
    let count = ctx.look_ahead().field("totalCount").exists();
    let page = rpc(
        ctx,
        rpcs::ListCertifications {
            region: region_code.map(|c| region(&c)).transpose()?,
            state: state.map(Into::into),
            listing_id: listing_id.map(|id| parse("listing id", &id)).transpose()?,
            first: page_size(first)?,
            after,
            count,
            viewer: super::auth::viewer(ctx),
        },
    )
    .await?;
    let edges: Vec<CertificationEdge> = page
        .certifications
        .into_iter()
        .map(|(c, cursor)| CertificationEdge {
            cursor,
            node: Certification(c),
        })
        .collect();
    Ok(CertificationConnection {
        page_info: page_info(edges.iter().map(|e| &e.cursor), page.has_next_page),
        edges,
        total_count: super::types::count(count, page.total_count)?,
    })
}

/// `applyForCertification`.
pub async fn apply(
    ctx: &Context<'_>,
    listing_id: ID,
    statement: String,
    evidence: Vec<String>,
) -> Result<Certification> {
    let by = region_admin(ctx)?.clone();
    let view = changing(
        ctx,
        rpcs::ApplyForCertification {
            listing_id: parse("listing id", &listing_id)?,
            statement,
            evidence,
            by,
        },
    )
    .await?;
    Ok(Certification(view))
}

/// One step on a certification, as the caller.
pub async fn advance(ctx: &Context<'_>, id: ID, step: Step) -> Result<Certification> {
    // Anyone logged in objects; the other steps are the region's admins'.
    let by = match step {
        Step::Object { .. } => principal(ctx)?,
        _ => region_admin(ctx)?,
    }
    .clone();
    let view = changing(
        ctx,
        rpcs::AdvanceCertification {
            certification_id: parse("certification id", &id)?,
            step,
            by,
        },
    )
    .await?;
    Ok(Certification(view))
}

/// The default validity of a certification: three years from today.
pub fn default_validity() -> chrono::NaiveDate {
    shared::policy::three_years_after(china_today(chrono::Utc::now()))
}

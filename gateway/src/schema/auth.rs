//! Identity in the schema: who is asking, and the account mutations.

use super::types::Instant;
use crate::error::gql;
use crate::identity::{Identity, Tokens, storage::Account as StoredAccount};
use async_graphql::{Context, Enum, ID, Object, Result, SimpleObject};
use shared::auth::{Principal, Role as SharedRole};
use shared::{AppError, ErrorCode};

/// The caller, or UNAUTHENTICATED.
pub fn principal<'a>(ctx: &Context<'a>) -> Result<&'a Principal> {
    ctx.data_opt::<Principal>().ok_or_else(|| {
        gql(AppError::new(
            ErrorCode::Unauthenticated,
            "log in first: send `Authorization: Bearer <accessToken>`",
        ))
    })
}

/// The caller if it is a platform admin, FORBIDDEN (or UNAUTHENTICATED) otherwise.
pub fn platform_admin<'a>(ctx: &Context<'a>) -> Result<&'a Principal> {
    let p = principal(ctx)?;
    if p.is_platform_admin() {
        Ok(p)
    } else {
        Err(forbidden("only a platform admin may do this"))
    }
}

/// The caller if it is a region or platform admin, FORBIDDEN (or
/// UNAUTHENTICATED) otherwise: asked before anything is read of the input,
/// so a traveler or an agency is told who may do it, not what is wrong with
/// what they sent. Whether the admin's region is the one concerned is the
/// service's to judge, from what it reads.
pub fn region_admin<'a>(ctx: &Context<'a>) -> Result<&'a Principal> {
    let p = principal(ctx)?;
    if p.may_administer() {
        Ok(p)
    } else {
        Err(forbidden(
            "only the admins of a region (and platform admins) may do this",
        ))
    }
}

/// The caller, if logged in: for the services to answer as it may see.
pub fn viewer(ctx: &Context<'_>) -> Option<Principal> {
    ctx.data_opt::<Principal>().cloned()
}

/// Whether the caller, if any, administers `region` (its admins, platform
/// admins): what shows a listing off sale, or who objected.
pub fn manages(ctx: &Context<'_>, region: shared::region::RegionCode) -> bool {
    ctx.data_opt::<Principal>()
        .is_some_and(|p| p.administers(region))
}

/// A FORBIDDEN error.
pub fn forbidden(message: &str) -> async_graphql::Error {
    gql(AppError::new(ErrorCode::Forbidden, message))
}

/// The identity service, or SERVICE_UNAVAILABLE.
pub fn identity<'a>(ctx: &Context<'a>) -> Result<&'a Identity> {
    ctx.data::<Identity>().map_err(|_| {
        gql(AppError::new(
            ErrorCode::ServiceUnavailable,
            "accounts are not available here",
        ))
    })
}

/// An idempotency key scoped to the caller's agency or account, so two
/// clients choosing the same key never see each other's results.
pub fn scoped_key(p: &Principal, key: &str) -> Result<String> {
    let key = key.trim();
    shared::text::check("idempotencyKey", key, 200, true).map_err(gql)?;
    let scope = p
        .agency_id
        .map_or_else(|| p.account_id.to_string(), |a| format!("agency:{a}"));
    Ok(format!("{scope}:{key}"))
}

/// [`scoped_key`] of a key the caller may leave out.
pub fn scoped(p: &Principal, key: Option<String>) -> Result<Option<String>> {
    key.map(|k| scoped_key(p, &k)).transpose()
}

/// A role.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum Role {
    /// A registered traveler.
    Traveler,
    /// A travel agency.
    Agency,
    /// Manages a region and everything under it.
    RegionAdmin,
    /// Runs the platform.
    PlatformAdmin,
}

impl From<SharedRole> for Role {
    fn from(r: SharedRole) -> Role {
        match r {
            SharedRole::Traveler => Role::Traveler,
            SharedRole::Agency => Role::Agency,
            SharedRole::RegionAdmin => Role::RegionAdmin,
            SharedRole::PlatformAdmin => Role::PlatformAdmin,
        }
    }
}

impl From<Role> for SharedRole {
    fn from(r: Role) -> SharedRole {
        match r {
            Role::Traveler => SharedRole::Traveler,
            Role::Agency => SharedRole::Agency,
            Role::RegionAdmin => SharedRole::RegionAdmin,
            Role::PlatformAdmin => SharedRole::PlatformAdmin,
        }
    }
}

/// An account.
pub struct Account(pub StoredAccount);

#[Object]
impl Account {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn email(&self) -> &str {
        &self.0.email
    }
    async fn display_name(&self) -> &str {
        &self.0.display_name
    }
    async fn role(&self) -> Role {
        self.0.role.into()
    }
    /// Where the account is from — the agency's region for an agency's
    /// staff and clients —: the sponsor side of its bookings.
    async fn home_region_code(&self) -> Option<ID> {
        self.0.home_region.map(|r| ID(r.to_string()))
    }
    /// The region a REGION_ADMIN manages (with everything under it).
    async fn region_scope_code(&self) -> Option<ID> {
        self.0.region_scope.map(|r| ID(r.to_string()))
    }
    /// The agency of an AGENCY account.
    async fn agency_id(&self) -> Option<ID> {
        self.0.agency_id.map(|a| ID(a.to_string()))
    }
}

/// Tokens after registering, logging in or refreshing.
#[derive(SimpleObject)]
pub struct AuthPayload {
    /// Send as `Authorization: Bearer <accessToken>`; short-lived.
    pub access_token: String,
    /// Exchange with `refreshToken` for a new pair; each works once (sent
    /// again within seconds — 10 by default —, as by two tabs at once, it
    /// gets a pair of its own).
    pub refresh_token: String,
    /// Seconds the access token lives.
    pub expires_in: i64,
    /// Who you are.
    pub account: Account,
}

impl From<Tokens> for AuthPayload {
    fn from(t: Tokens) -> AuthPayload {
        AuthPayload {
            access_token: t.access_token,
            refresh_token: t.refresh_token,
            expires_in: t.expires_in,
            account: Account(t.account),
        }
    }
}

/// A travel agency and its commission contract.
pub struct Agency(pub crate::identity::storage::Agency);

#[Object]
impl Agency {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Where it is based: the sponsor side of its bookings.
    async fn home_region_code(&self) -> ID {
        ID(self.0.home_region.to_string())
    }
    /// Commission on its bookings, in basis points (800 = 8 %).
    async fn commission_basis_points(&self) -> u32 {
        self.0.commission_bp
    }
    /// Since when it is suspended (`suspendAgency`): none of its accounts
    /// signs in. Null while it is not.
    async fn suspended_at(&self) -> Option<Instant> {
        self.0.suspended.as_ref().map(|(at, _)| Instant(*at))
    }
    /// Why it was suspended; null while it is not.
    async fn suspension_reason(&self) -> Option<&str> {
        self.0.suspended.as_ref().map(|(_, why)| why.as_str())
    }
    /// Its integrations' credentials (never the secrets): platform admins
    /// and the agency's own accounts.
    async fn api_clients(&self, ctx: &Context<'_>) -> Result<Vec<ApiClient>> {
        agency_insider(ctx, self.0.id)?;
        let clients = identity(ctx)?.api_clients(self.0.id).await.map_err(gql)?;
        Ok(clients.into_iter().map(ApiClient).collect())
    }
    /// Its people: accounts given the AGENCY role for it with `grantRole`.
    /// They see and manage its bookings like its API clients. Platform
    /// admins and the agency's own accounts.
    async fn staff(&self, ctx: &Context<'_>) -> Result<Vec<Account>> {
        agency_insider(ctx, self.0.id)?;
        let staff = identity(ctx)?.agency_staff(self.0.id).await.map_err(gql)?;
        // Each as `me` shows them: from the agency's region (the one their
        // bookings count for), not the home they registered with, which is
        // theirs and not their colleagues' or the integrations' to read.
        Ok(staff
            .into_iter()
            .map(|mut member| {
                member.home_region = Some(self.0.home_region);
                Account(member)
            })
            .collect())
    }
    /// Its commission from `from` through `to` (China days, at most 366):
    /// what its bookings' payments owed it when captured, less what refunds
    /// in those days took back — the ledger's figures, to reconcile with
    /// the platform's statement. Platform admins and the agency's own
    /// accounts. Null (with its error) when it cannot be given — payment
    /// not answering, days out of range —: the agency, and the list it is
    /// in, are still answered.
    async fn commission(
        &self,
        ctx: &Context<'_>,
        from: super::types::Date,
        to: super::types::Date,
    ) -> Result<Option<AgencyCommission>> {
        let by = agency_insider(ctx, self.0.id)?.clone();
        let days = (to.0 - from.0).num_days();
        if !(0..366).contains(&days) {
            return Err(crate::error::bad_input(
                "from and to: to is on or after from, at most 366 days in all",
            ));
        }
        let figures = super::rpc(
            ctx,
            shared::rpcs::GetAgencyCommission {
                agency_id: self.0.id,
                from: shared::policy::china_midnight(from.0),
                until: shared::policy::china_midnight(to.0 + chrono::Duration::days(1)),
                by,
            },
        )
        .await?;
        Ok(Some(AgencyCommission { from, to, figures }))
    }
}

/// An agency's commission over some days.
pub struct AgencyCommission {
    from: super::types::Date,
    to: super::types::Date,
    figures: shared::rpcs::AgencyCommission,
}

#[Object]
impl AgencyCommission {
    async fn from(&self) -> super::types::Date {
        self.from
    }
    async fn to(&self) -> super::types::Date {
        self.to
    }
    /// Commission on the payments captured in these days.
    async fn earned(&self) -> super::types::Money {
        self.figures.earned.into()
    }
    /// Commission that refunds made in these days took back.
    async fn reversed(&self) -> super::types::Money {
        self.figures.reversed.into()
    }
    /// Earned less reversed.
    async fn net(&self) -> super::types::Money {
        (self.figures.earned - self.figures.reversed).into()
    }
    /// Bookings whose payment was captured in these days.
    async fn bookings(&self) -> u32 {
        self.figures.bookings
    }
}

impl From<crate::identity::storage::Agency> for Agency {
    fn from(a: crate::identity::storage::Agency) -> Agency {
        Agency(a)
    }
}

/// What one outside an agency asking for what is its own is told.
pub const AGENCY_INSIDERS: &str = "only the agency itself and platform admins may see this";

/// The caller if it is a platform admin or an account of `agency`.
pub fn agency_insider<'a>(
    ctx: &Context<'a>,
    agency: shared::ids::AgencyId,
) -> Result<&'a Principal> {
    let p = principal(ctx)?;
    if p.is_platform_admin() || p.agency_id == Some(agency) {
        Ok(p)
    } else {
        Err(forbidden(AGENCY_INSIDERS))
    }
}

/// An agency's API client (its secret was shown once, at creation).
pub struct ApiClient(pub crate::identity::storage::ApiClient);

#[Object]
impl ApiClient {
    async fn client_id(&self) -> &str {
        &self.0.client_id
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn created_at(&self) -> Instant {
        Instant(self.0.created_at)
    }
    /// When it was revoked; it gets no more tokens after.
    async fn revoked_at(&self) -> Option<Instant> {
        self.0.revoked_at.map(Instant)
    }
}

/// An edge of an [`AgencyConnection`].
#[derive(SimpleObject)]
pub struct AgencyEdge {
    pub cursor: String,
    pub node: Agency,
}

/// A page of agencies, oldest first.
#[derive(SimpleObject)]
pub struct AgencyConnection {
    pub edges: Vec<AgencyEdge>,
    pub page_info: async_graphql::connection::PageInfo,
    /// How many agencies there are.
    pub total_count: u64,
}

/// A new API client's credentials: the secret is shown this once.
#[derive(SimpleObject)]
pub struct ApiClientCredentials {
    pub client_id: String,
    /// Keep it safe: only its hash is stored, it cannot be shown again.
    pub client_secret: String,
}

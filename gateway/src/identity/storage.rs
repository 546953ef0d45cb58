//! The gateway's tables: accounts, refresh tokens (hashes only), agencies,
//! API clients (secret hashes only) and the token signing secret.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr, QueryResult};
use sea_orm_migration::{MigrationName, MigrationTrait, MigratorTrait, SchemaManager};
use shared::auth::Role;
use shared::db::{
    opt_row_region, opt_row_uuid, opt_uuid_value, row_region, row_uuid, run_ddl, uuid_value,
};
use shared::ids::{AccountId, AgencyId};
use shared::outbox::stmt;
use shared::region::RegionCode;

/// The gateway database's name suffix.
pub const DATABASE: &str = "gateway";

/// The gateway's migrations.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(Identity),
            Box::new(AgencyLookups),
            Box::new(AccessRevocation),
            Box::new(RefreshRevocation),
            Box::new(RefreshSessions),
            Box::new(LoginFailures),
            Box::new(RefreshExchangedFrom),
            Box::new(AgencySuspension),
            Box::new(RefreshExpiry),
            Box::new(ApiClientKeys),
        ]
    }
}

struct Identity;

impl MigrationName for Identity {
    fn name(&self) -> &str {
        "m20261124_000001_identity"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Identity {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(
            manager,
            &[
                "CREATE TABLE secrets (
                    name TEXT PRIMARY KEY,
                    value TEXT NOT NULL)",
                "CREATE TABLE agencies (
                    id UUID PRIMARY KEY,
                    name TEXT NOT NULL UNIQUE,
                    home_region TEXT NOT NULL,
                    commission_bp INTEGER NOT NULL CHECK (commission_bp >= 0 AND commission_bp <= 3000),
                    created_at TIMESTAMPTZ NOT NULL)",
                "CREATE TABLE accounts (
                    id UUID PRIMARY KEY,
                    email TEXT NOT NULL UNIQUE,
                    password_hash TEXT,
                    display_name TEXT NOT NULL,
                    role TEXT NOT NULL,
                    home_region TEXT,
                    region_scope TEXT,
                    agency_id UUID REFERENCES agencies (id),
                    created_at TIMESTAMPTZ NOT NULL)",
                "CREATE TABLE refresh_tokens (
                    token_hash TEXT PRIMARY KEY,
                    account_id UUID NOT NULL REFERENCES accounts (id),
                    expires_at TIMESTAMPTZ NOT NULL,
                    revoked_at TIMESTAMPTZ,
                    created_at TIMESTAMPTZ NOT NULL)",
                "CREATE INDEX refresh_tokens_account ON refresh_tokens (account_id)",
                "CREATE TABLE api_clients (
                    client_id TEXT PRIMARY KEY,
                    secret_hash TEXT NOT NULL,
                    account_id UUID NOT NULL REFERENCES accounts (id),
                    name TEXT NOT NULL,
                    revoked_at TIMESTAMPTZ,
                    created_at TIMESTAMPTZ NOT NULL)",
            ],
        )
        .await
    }
}

struct AgencySuspension;

impl MigrationName for AgencySuspension {
    fn name(&self) -> &str {
        "m20261207_000001_agency_suspension"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AgencySuspension {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // A suspended agency's accounts get no tokens (`suspend_agency`).
        run_ddl(
            manager,
            &[
                "ALTER TABLE agencies ADD COLUMN suspended_at TIMESTAMPTZ",
                "ALTER TABLE agencies ADD COLUMN suspension_reason TEXT",
            ],
        )
        .await
    }
}

struct AgencyLookups;

impl MigrationName for AgencyLookups {
    fn name(&self) -> &str {
        "m20261203_000001_agency_lookups"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AgencyLookups {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // An agency's people and clients (`staff_of`, `api_clients_of`).
        run_ddl(
            manager,
            &[
                "CREATE INDEX accounts_agency ON accounts (agency_id)",
                "CREATE INDEX api_clients_account ON api_clients (account_id)",
            ],
        )
        .await
    }
}

struct AccessRevocation;

impl MigrationName for AccessRevocation {
    fn name(&self) -> &str {
        "m20261204_000001_access_revocation"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AccessRevocation {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(
            manager,
            &[
                // Access tokens carry the generation they were issued in;
                // a revocation moves it on and stamps when.
                "ALTER TABLE accounts ADD COLUMN token_generation INTEGER NOT NULL DEFAULT 0",
                "ALTER TABLE accounts ADD COLUMN tokens_revoked_at TIMESTAMPTZ",
                "CREATE INDEX accounts_tokens_revoked ON accounts (tokens_revoked_at)
                 WHERE tokens_revoked_at IS NOT NULL",
            ],
        )
        .await
    }
}

struct RefreshRevocation;

impl MigrationName for RefreshRevocation {
    fn name(&self) -> &str {
        "m20261205_000001_refresh_revocation"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for RefreshRevocation {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(
            manager,
            &[
                // When every refresh token was last revoked, apart from
                // when access tokens were (a role change stops those
                // alone): a token revoked on its own after it has leaked.
                "ALTER TABLE accounts ADD COLUMN refresh_revoked_at TIMESTAMPTZ",
                "UPDATE accounts SET refresh_revoked_at = tokens_revoked_at",
            ],
        )
        .await
    }
}

struct RefreshSessions;

impl MigrationName for RefreshSessions {
    fn name(&self) -> &str {
        "m20261205_000002_refresh_sessions"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for RefreshSessions {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(
            manager,
            &[
                // The sign-in a refresh token carries on (each refresh
                // keeps it): a logout ends the session, whichever of its
                // tokens it is given. None for tokens issued before.
                "ALTER TABLE refresh_tokens ADD COLUMN session UUID",
                "CREATE INDEX refresh_tokens_session ON refresh_tokens (session)",
                // Revoked by a logout, not by use: presented again it is
                // merely dead, not leaked.
                "ALTER TABLE refresh_tokens ADD COLUMN logged_out BOOLEAN NOT NULL DEFAULT FALSE",
            ],
        )
        .await
    }
}

struct RefreshExchangedFrom;

impl MigrationName for RefreshExchangedFrom {
    fn name(&self) -> &str {
        "m20261209_000001_refresh_exchanged_from"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for RefreshExchangedFrom {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(
            manager,
            &[
                // The token (its hash) a refresh token was exchanged for:
                // what bounds the pairs one token gets within the reuse
                // grace. None for a sign-in's first, and for those before.
                "ALTER TABLE refresh_tokens ADD COLUMN exchanged_from TEXT",
                "CREATE INDEX refresh_tokens_exchanged_from ON refresh_tokens (exchanged_from)",
            ],
        )
        .await
    }
}

struct RefreshExpiry;

impl MigrationName for RefreshExpiry {
    fn name(&self) -> &str {
        "m20261207_000006_refresh_expiry"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for RefreshExpiry {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(
            manager,
            &[
                // The hourly prune of tokens expired a day
                // ([`prune_expired_refresh_tokens`]) read the whole table
                // when there was nothing to delete. May be built by hand
                // first, `CONCURRENTLY`, under this name.
                "CREATE INDEX IF NOT EXISTS refresh_tokens_expires ON refresh_tokens (expires_at)",
            ],
        )
        .await
    }
}

struct ApiClientKeys;

impl MigrationName for ApiClientKeys {
    fn name(&self) -> &str {
        "m20261207_000007_api_client_keys"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for ApiClientKeys {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(
            manager,
            &[
                // `createApiClient`'s idempotency key (scoped to the admin
                // who sent it) and what it was sent with: a retry finds
                // the client it made. None for those made without one.
                "ALTER TABLE api_clients ADD COLUMN create_key TEXT",
                "ALTER TABLE api_clients ADD COLUMN create_fingerprint TEXT",
                "CREATE UNIQUE INDEX api_clients_create_key ON api_clients (create_key)",
            ],
        )
        .await
    }
}

struct LoginFailures;

impl MigrationName for LoginFailures {
    fn name(&self) -> &str {
        "m20261205_000010_login_failures"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for LoginFailures {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_ddl(
            manager,
            &[
                // Wrong passwords per email in a window, shared by every
                // gateway replica (the rate limit counts per address).
                "CREATE TABLE login_failures (
                    email TEXT PRIMARY KEY,
                    failures INTEGER NOT NULL,
                    since TIMESTAMPTZ NOT NULL)",
                "CREATE INDEX login_failures_since ON login_failures (since)",
            ],
        )
        .await
    }
}

/// Counts a password attempt for `email` before it is checked (a new
/// window once the last has passed, windows passed forgotten): until when
/// its attempts are refused, when this one is past `max` within `window`
/// of the first. Counted first, so a burst of attempts at once cannot all
/// be checked before any is counted; a success forgets them
/// ([`login_succeeded`]).
pub async fn password_attempt<C: ConnectionTrait>(
    conn: &C,
    email: &str,
    max: i32,
    window: chrono::Duration,
) -> Result<Option<DateTime<Utc>>, DbErr> {
    let b = conn.get_database_backend();
    let now = Utc::now();
    let passed = now - window;
    conn.execute_raw(stmt(
        b,
        "DELETE FROM login_failures WHERE since < $1",
        vec![passed.into()],
    ))
    .await?;
    let row = conn
        .query_one_raw(stmt(
            b,
            "INSERT INTO login_failures (email, failures, since) VALUES ($1, 1, $2)
             ON CONFLICT (email) DO UPDATE SET failures = login_failures.failures + 1
             RETURNING failures, since",
            vec![email.into(), now.into()],
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("login_failures: no row returned".into()))?;
    let failures: i32 = row.try_get("", "failures")?;
    let until = row.try_get::<DateTime<Utc>>("", "since")? + window;
    Ok((failures > max).then_some(until))
}

/// Forgets the wrong passwords of `email` (it logged in).
pub async fn login_succeeded<C: ConnectionTrait>(conn: &C, email: &str) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "DELETE FROM login_failures WHERE email = $1",
        vec![email.into()],
    ))
    .await?;
    Ok(())
}

/// An account as the gateway shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The account.
    pub id: AccountId,
    /// Login email, lower case.
    pub email: String,
    /// Shown name.
    pub display_name: String,
    /// Role.
    pub role: Role,
    /// Home region.
    pub home_region: Option<RegionCode>,
    /// Administered region (REGION_ADMIN).
    pub region_scope: Option<RegionCode>,
    /// Agency (AGENCY).
    pub agency_id: Option<AgencyId>,
    /// The generation its access tokens are issued in: those of an
    /// earlier one were revoked.
    pub token_generation: i32,
}

/// The columns of `accounts` [`account`] reads, named (`shared::db` says
/// why).
const ACCOUNT_COLUMNS: &str =
    "id, email, display_name, role, home_region, region_scope, agency_id, token_generation";

fn account(row: &QueryResult) -> Result<Account, DbErr> {
    let role: String = row.try_get("", "role")?;
    Ok(Account {
        id: AccountId(row_uuid(row, "id")?),
        email: row.try_get("", "email")?,
        display_name: row.try_get("", "display_name")?,
        role: Role::parse(&role).ok_or_else(|| DbErr::Custom(format!("role {role}")))?,
        home_region: opt_row_region(row, "home_region")?,
        region_scope: opt_row_region(row, "region_scope")?,
        agency_id: opt_row_uuid(row, "agency_id")?.map(AgencyId),
        token_generation: row.try_get("", "token_generation")?,
    })
}

/// The signing secret: the stored one, or `candidate` stored now (the first
/// gateway to start wins; the others read its secret).
pub async fn signing_secret<C: ConnectionTrait>(
    conn: &C,
    candidate: &str,
) -> Result<String, DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "INSERT INTO secrets (name, value) VALUES ('jwt', $1) ON CONFLICT (name) DO NOTHING",
        vec![candidate.into()],
    ))
    .await?;
    let row = conn
        .query_one_raw(stmt(
            b,
            "SELECT value FROM secrets WHERE name = 'jwt'",
            vec![],
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("the signing secret vanished".into()))?;
    row.try_get("", "value")
}

/// Inserts an account; Ok(false) when the email is taken.
pub async fn insert_account<C: ConnectionTrait>(
    conn: &C,
    a: &Account,
    password_hash: &str,
) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    let r = conn
        .execute_raw(stmt(
            b,
            "INSERT INTO accounts (id, email, password_hash, display_name, role, home_region, region_scope, agency_id, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (email) DO NOTHING",
            vec![
                uuid_value(b, a.id.0),
                a.email.as_str().into(),
                password_hash.into(),
                a.display_name.as_str().into(),
                a.role.as_str().into(),
                a.home_region.map(|r| r.to_string()).into(),
                a.region_scope.map(|r| r.to_string()).into(),
                opt_uuid_value(b, a.agency_id.map(|id| id.0)),
                Utc::now().into(),
            ],
        ))
        .await?;
    Ok(r.rows_affected() == 1)
}

/// An account and its password hash, by email.
pub async fn account_by_email<C: ConnectionTrait>(
    conn: &C,
    email: &str,
) -> Result<Option<(Account, String)>, DbErr> {
    let b = conn.get_database_backend();
    let Some(row) = conn
        .query_one_raw(stmt(
            b,
            &format!("SELECT {ACCOUNT_COLUMNS}, password_hash FROM accounts WHERE email = $1"),
            vec![email.into()],
        ))
        .await?
    else {
        return Ok(None);
    };
    let hash: Option<String> = row.try_get("", "password_hash")?;
    Ok(Some((account(&row)?, hash.unwrap_or_default())))
}

/// An account by id.
pub async fn account_by_id<C: ConnectionTrait>(
    conn: &C,
    id: AccountId,
) -> Result<Option<Account>, DbErr> {
    let b = conn.get_database_backend();
    conn.query_one_raw(stmt(
        b,
        &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"),
        vec![uuid_value(b, id.0)],
    ))
    .await?
    .map(|r| account(&r))
    .transpose()
}

/// An account's password hash.
pub async fn password_hash<C: ConnectionTrait>(
    conn: &C,
    id: AccountId,
) -> Result<Option<String>, DbErr> {
    let b = conn.get_database_backend();
    let row = conn
        .query_one_raw(stmt(
            b,
            "SELECT password_hash FROM accounts WHERE id = $1",
            vec![uuid_value(b, id.0)],
        ))
        .await?;
    Ok(match row {
        Some(r) => r.try_get("", "password_hash")?,
        None => None,
    })
}

/// Replaces an account's password hash.
pub async fn set_password<C: ConnectionTrait>(
    conn: &C,
    id: AccountId,
    hash: &str,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "UPDATE accounts SET password_hash = $2 WHERE id = $1",
        vec![uuid_value(b, id.0), hash.into()],
    ))
    .await?;
    Ok(())
}

/// Whether any account is a platform admin.
pub async fn has_platform_admin<C: ConnectionTrait>(conn: &C) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    Ok(conn
        .query_one_raw(stmt(
            b,
            "SELECT id FROM accounts WHERE role = $1 LIMIT 1",
            vec![Role::PlatformAdmin.as_str().into()],
        ))
        .await?
        .is_some())
}

/// Gives an account a role (and the region or agency it is bound to).
pub async fn set_role<C: ConnectionTrait>(
    conn: &C,
    id: AccountId,
    role: Role,
    region_scope: Option<RegionCode>,
    agency: Option<AgencyId>,
) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    let r = conn
        .execute_raw(stmt(
            b,
            "UPDATE accounts SET role = $2, region_scope = $3, agency_id = $4 WHERE id = $1",
            vec![
                uuid_value(b, id.0),
                role.as_str().into(),
                region_scope.map(|r| r.to_string()).into(),
                opt_uuid_value(b, agency.map(|a| a.0)),
            ],
        ))
        .await?;
    Ok(r.rows_affected() == 1)
}

/// A stored refresh token.
pub struct StoredRefresh {
    /// Whose.
    pub account_id: AccountId,
    /// Until when.
    pub expires_at: DateTime<Utc>,
    /// When it was used or logged out.
    pub revoked_at: Option<DateTime<Utc>>,
    /// When every refresh token of its account was last revoked.
    pub account_revoked_at: Option<DateTime<Utc>>,
    /// The sign-in it carries on (none: issued before sessions were kept).
    pub session: Option<uuid::Uuid>,
    /// Revoked by a logout.
    pub logged_out: bool,
}

impl StoredRefresh {
    /// Revoked on its own by use after the account's last revocation of
    /// everything: presented again, it has leaked. One that went with
    /// everything, or with its session's logout, is merely old.
    pub fn leaked(&self) -> bool {
        if self.logged_out {
            return false;
        }
        match (self.revoked_at, self.account_revoked_at) {
            (Some(token), Some(account)) => token > account,
            (revoked, None) => revoked.is_some(),
            (None, Some(_)) => false,
        }
    }
}

/// Most live refresh tokens (sessions) an account keeps: past it the
/// oldest goes. An API client asking `apiClientToken` per job would
/// otherwise leave a live 30-day credential and a row per call.
pub const MAX_LIVE_REFRESH: u32 = 100;

/// Most revoked refresh tokens an account keeps (each rotation revokes
/// one), for telling a leaked one presented again: one older is unknown,
/// refused all the same.
pub const MAX_REVOKED_REFRESH: u32 = 1_000;

/// Stores a refresh token's hash; the account's expired ones are deleted,
/// and its oldest past [`MAX_LIVE_REFRESH`] live or
/// [`MAX_REVOKED_REFRESH`] revoked, so that its rows stay bounded however
/// often it signs in.
pub async fn insert_refresh<C: ConnectionTrait>(
    conn: &C,
    hash: &str,
    account: AccountId,
    expires_at: DateTime<Utc>,
    session: uuid::Uuid,
    exchanged_from: Option<&str>,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "INSERT INTO refresh_tokens (token_hash, account_id, expires_at, created_at, session,
                                     exchanged_from)
         VALUES ($1, $2, $3, $4, $5, $6)",
        vec![
            hash.into(),
            uuid_value(b, account.0),
            expires_at.into(),
            Utc::now().into(),
            uuid_value(b, session),
            exchanged_from.map(str::to_owned).into(),
        ],
    ))
    .await?;
    // In one statement: the expired, and the ones past each allowance,
    // newest first (a LIMIT both databases take: PostgreSQL refuses
    // SQLite's `LIMIT -1`) — live ones by when they were issued, used ones
    // by when they were used: one issued long ago and rotated just now (by
    // this very call, perhaps) is the one a leak or a logout racing the
    // rotation presents next.
    conn.execute_raw(stmt(
        b,
        "DELETE FROM refresh_tokens WHERE account_id = $1 AND (expires_at < $2
            OR token_hash IN (SELECT token_hash FROM refresh_tokens
                WHERE account_id = $1 AND revoked_at IS NULL
                ORDER BY created_at DESC, token_hash LIMIT 1000000000 OFFSET $3)
            OR token_hash IN (SELECT token_hash FROM refresh_tokens
                WHERE account_id = $1 AND revoked_at IS NOT NULL
                ORDER BY revoked_at DESC, token_hash LIMIT 1000000000 OFFSET $4))",
        vec![
            uuid_value(b, account.0),
            Utc::now().into(),
            i64::from(MAX_LIVE_REFRESH).into(),
            i64::from(MAX_REVOKED_REFRESH).into(),
        ],
    ))
    .await?;
    Ok(())
}

/// Ends a session: the refresh token `hash` and every other of its
/// `session` still live, marked as logged out.
pub async fn end_session<C: ConnectionTrait>(
    conn: &C,
    hash: &str,
    session: Option<uuid::Uuid>,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "UPDATE refresh_tokens SET revoked_at = $3, logged_out = TRUE
         WHERE (token_hash = $1 OR session = $2) AND revoked_at IS NULL",
        vec![
            hash.into(),
            shared::db::opt_uuid_value(b, session),
            Utc::now().into(),
        ],
    ))
    .await?;
    Ok(())
}

/// A refresh token by hash, locked on PostgreSQL (two refreshes with one
/// token: the second sees it revoked).
async fn refresh_for_update<C: ConnectionTrait>(
    conn: &C,
    hash: &str,
) -> Result<Option<StoredRefresh>, DbErr> {
    let b = conn.get_database_backend();
    let lock = match b {
        sea_orm::DbBackend::Postgres => "FOR UPDATE OF r",
        _ => "",
    };
    let sql = format!(
        "SELECT r.account_id, r.expires_at, r.revoked_at, r.session, r.logged_out,
                a.refresh_revoked_at
         FROM refresh_tokens r JOIN accounts a ON a.id = r.account_id
         WHERE r.token_hash = $1 {lock}"
    );
    let Some(row) = conn.query_one_raw(stmt(b, &sql, vec![hash.into()])).await? else {
        return Ok(None);
    };
    Ok(Some(StoredRefresh {
        account_id: AccountId(row_uuid(&row, "account_id")?),
        expires_at: row.try_get("", "expires_at")?,
        revoked_at: row.try_get("", "revoked_at")?,
        account_revoked_at: row.try_get("", "refresh_revoked_at")?,
        session: shared::db::opt_row_uuid(&row, "session")?,
        logged_out: row.try_get("", "logged_out")?,
    }))
}

/// A refresh token with its account's row and its own locked, the account
/// first (the order `revoke_all` keeps): a refresh, a logout and a logout
/// everywhere of one account run one after the other. None for an unknown
/// token.
pub async fn refresh_locked<C: ConnectionTrait>(
    conn: &C,
    hash: &str,
) -> Result<Option<StoredRefresh>, DbErr> {
    let Some(owner) = refresh_owner(conn, hash).await? else {
        return Ok(None);
    };
    lock_account(conn, owner).await?;
    refresh_for_update(conn, hash).await
}

/// The account of sign-in `session`, locked, and how many live refresh
/// tokens the session has; None for a session no token row names.
pub async fn session_locked<C: ConnectionTrait>(
    conn: &C,
    session: uuid::Uuid,
) -> Result<Option<(AccountId, i64)>, DbErr> {
    let b = conn.get_database_backend();
    let Some(row) = conn
        .query_one_raw(stmt(
            b,
            "SELECT account_id FROM refresh_tokens WHERE session = $1 LIMIT 1",
            vec![uuid_value(b, session)],
        ))
        .await?
    else {
        return Ok(None);
    };
    let account = AccountId(row_uuid(&row, "account_id")?);
    lock_account(conn, account).await?;
    let live = conn
        .query_one_raw(stmt(
            b,
            "SELECT COUNT(*) AS n FROM refresh_tokens
             WHERE session = $1 AND revoked_at IS NULL AND expires_at > $2",
            vec![uuid_value(b, session), Utc::now().into()],
        ))
        .await?
        .map(|r| r.try_get::<i64>("", "n"))
        .transpose()?
        .unwrap_or(0);
    Ok(Some((account, live)))
}

/// How many live refresh tokens the token `hash` was exchanged for.
pub async fn exchanged_for<C: ConnectionTrait>(conn: &C, hash: &str) -> Result<i64, DbErr> {
    let b = conn.get_database_backend();
    Ok(conn
        .query_one_raw(stmt(
            b,
            "SELECT COUNT(*) AS n FROM refresh_tokens
             WHERE exchanged_from = $1 AND revoked_at IS NULL AND expires_at > $2",
            vec![hash.into(), Utc::now().into()],
        ))
        .await?
        .map(|r| r.try_get::<i64>("", "n"))
        .transpose()?
        .unwrap_or(0))
}

/// The account a refresh token belongs to, without locking anything.
async fn refresh_owner<C: ConnectionTrait>(
    conn: &C,
    hash: &str,
) -> Result<Option<AccountId>, DbErr> {
    let b = conn.get_database_backend();
    let Some(row) = conn
        .query_one_raw(stmt(
            b,
            "SELECT account_id FROM refresh_tokens WHERE token_hash = $1",
            vec![hash.into()],
        ))
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(AccountId(row_uuid(&row, "account_id")?)))
}

/// Locks an account's row until the transaction ends (PostgreSQL; SQLite
/// has one writer at a time anyway). Rotating a refresh token and revoking
/// all of an account's tokens both take it first, so a revocation never
/// runs beside a rotation and misses the token that rotation inserts.
pub async fn lock_account<C: ConnectionTrait>(conn: &C, account: AccountId) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    if b == sea_orm::DbBackend::Postgres {
        conn.query_one_raw(stmt(
            b,
            "SELECT id FROM accounts WHERE id = $1 FOR UPDATE",
            vec![uuid_value(b, account.0)],
        ))
        .await?;
    }
    Ok(())
}

/// Revokes one refresh token.
pub async fn revoke<C: ConnectionTrait>(conn: &C, hash: &str) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "UPDATE refresh_tokens SET revoked_at = $2 WHERE token_hash = $1 AND revoked_at IS NULL",
        vec![hash.into(), Utc::now().into()],
    ))
    .await?;
    Ok(())
}

/// Revokes every refresh token of an account.
pub async fn revoke_all<C: ConnectionTrait>(conn: &C, account: AccountId) -> Result<i32, DbErr> {
    lock_account(conn, account).await?;
    let b = conn.get_database_backend();
    let now = Utc::now();
    conn.execute_raw(stmt(
        b,
        "UPDATE refresh_tokens SET revoked_at = $2 WHERE account_id = $1 AND revoked_at IS NULL",
        vec![uuid_value(b, account.0), now.into()],
    ))
    .await?;
    conn.execute_raw(stmt(
        b,
        "UPDATE accounts SET refresh_revoked_at = $2 WHERE id = $1",
        vec![uuid_value(b, account.0), now.into()],
    ))
    .await?;
    revoke_access(conn, account).await
}

/// Revokes every access token of an account issued so far: moves its
/// token generation on (returned) and stamps the moment, which every
/// gateway replica polls for.
pub async fn revoke_access<C: ConnectionTrait>(conn: &C, account: AccountId) -> Result<i32, DbErr> {
    let b = conn.get_database_backend();
    conn.query_one_raw(stmt(
        b,
        "UPDATE accounts SET token_generation = token_generation + 1, tokens_revoked_at = $2
         WHERE id = $1 RETURNING token_generation",
        vec![uuid_value(b, account.0), Utc::now().into()],
    ))
    .await?
    .ok_or_else(|| DbErr::RecordNotFound(format!("account {account}")))?
    .try_get("", "token_generation")
}

/// Deletes up to `batch` refresh tokens that expired before `before`, and
/// says how many: an account's own are deleted whenever it is issued one,
/// these are of accounts that have not signed in since (they would stay
/// for ever, one table row per sign-in of every account ever).
pub async fn prune_expired_refresh_tokens<C: ConnectionTrait>(
    conn: &C,
    before: chrono::DateTime<Utc>,
    batch: u64,
) -> Result<u64, DbErr> {
    let b = conn.get_database_backend();
    let done = conn
        .execute_raw(stmt(
            b,
            "DELETE FROM refresh_tokens WHERE token_hash IN (
                SELECT token_hash FROM refresh_tokens WHERE expires_at < $1 LIMIT $2)",
            vec![
                before.into(),
                i64::try_from(batch).unwrap_or(i64::MAX).into(),
            ],
        ))
        .await?;
    Ok(done.rows_affected())
}

/// The token generation of every account whose access tokens were revoked
/// after `since`.
pub async fn revocations_since<C: ConnectionTrait>(
    conn: &C,
    since: DateTime<Utc>,
) -> Result<Vec<(AccountId, i32, DateTime<Utc>)>, DbErr> {
    let b = conn.get_database_backend();
    let rows = conn
        .query_all_raw(stmt(
            b,
            "SELECT id, token_generation, tokens_revoked_at FROM accounts
             WHERE tokens_revoked_at > $1",
            vec![since.into()],
        ))
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                AccountId(row_uuid(r, "id")?),
                r.try_get("", "token_generation")?,
                r.try_get("", "tokens_revoked_at")?,
            ))
        })
        .collect()
}

/// Whether an agency exists.
pub async fn agency_exists<C: ConnectionTrait>(conn: &C, id: AgencyId) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    Ok(conn
        .query_one_raw(stmt(
            b,
            "SELECT id FROM agencies WHERE id = $1",
            vec![uuid_value(b, id.0)],
        ))
        .await?
        .is_some())
}

/// An agency and its commission contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agency {
    /// The agency.
    pub id: AgencyId,
    /// Its name (unique).
    pub name: String,
    /// Where it is based: the sponsor side of its bookings.
    pub home_region: RegionCode,
    /// Commission on its bookings, basis points.
    pub commission_bp: u32,
    /// Since when it is suspended, and why: its accounts get no tokens.
    pub suspended: Option<(DateTime<Utc>, String)>,
}

/// Inserts an agency; Ok(false) when the name is taken.
pub async fn insert_agency<C: ConnectionTrait>(conn: &C, a: &Agency) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    let r = conn
        .execute_raw(stmt(
            b,
            "INSERT INTO agencies (id, name, home_region, commission_bp, created_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
            vec![
                uuid_value(b, a.id.0),
                a.name.as_str().into(),
                a.home_region.to_string().into(),
                (a.commission_bp as i32).into(),
                Utc::now().into(),
            ],
        ))
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Renames an agency or changes its commission (what is None stays); the
/// agency as it is now, None when there is no such agency. A name another
/// agency has is a unique violation, as for [`insert_agency`].
pub async fn update_agency<C: ConnectionTrait>(
    conn: &C,
    id: AgencyId,
    name: Option<&str>,
    commission_bp: Option<u32>,
) -> Result<Option<Agency>, DbErr> {
    let b = conn.get_database_backend();
    conn.query_one_raw(stmt(
        b,
        &format!(
            "UPDATE agencies SET name = COALESCE($2, name),
                commission_bp = COALESCE($3, commission_bp)
             WHERE id = $1 RETURNING {AGENCY_COLUMNS}"
        ),
        vec![
            uuid_value(b, id.0),
            name.map(str::to_owned).into(),
            commission_bp
                .map(|bp| i32::try_from(bp).unwrap_or(i32::MAX))
                .into(),
        ],
    ))
    .await?
    .map(|r| agency_row(&r))
    .transpose()
}

/// Suspends an agency (`Some`: when and why; suspended already, it keeps
/// its first time and reason) or reinstates it (`None`); the agency as it
/// is now, None when there is no such agency.
pub async fn set_suspension<C: ConnectionTrait>(
    conn: &C,
    id: AgencyId,
    suspension: Option<(DateTime<Utc>, &str)>,
) -> Result<Option<Agency>, DbErr> {
    let b = conn.get_database_backend();
    let (sql, values) = match suspension {
        Some((at, reason)) => (
            "UPDATE agencies SET suspended_at = COALESCE(suspended_at, $2),
                 suspension_reason = COALESCE(suspension_reason, $3)
             WHERE id = $1",
            vec![uuid_value(b, id.0), at.into(), reason.into()],
        ),
        None => (
            "UPDATE agencies SET suspended_at = NULL, suspension_reason = NULL WHERE id = $1",
            vec![uuid_value(b, id.0)],
        ),
    };
    conn.query_one_raw(stmt(
        b,
        &format!("{sql} RETURNING {AGENCY_COLUMNS}"),
        values,
    ))
    .await?
    .map(|r| agency_row(&r))
    .transpose()
}

/// Every account of an agency: its staff and its API clients'.
pub async fn agency_accounts<C: ConnectionTrait>(
    conn: &C,
    id: AgencyId,
) -> Result<Vec<AccountId>, DbErr> {
    let b = conn.get_database_backend();
    conn.query_all_raw(stmt(
        b,
        "SELECT id FROM accounts WHERE agency_id = $1 ORDER BY id",
        vec![uuid_value(b, id.0)],
    ))
    .await?
    .iter()
    .map(|r| Ok(AccountId(row_uuid(r, "id")?)))
    .collect()
}

/// An agency by id.
pub async fn agency<C: ConnectionTrait>(conn: &C, id: AgencyId) -> Result<Option<Agency>, DbErr> {
    let b = conn.get_database_backend();
    let Some(row) = conn
        .query_one_raw(stmt(
            b,
            &format!("SELECT {AGENCY_COLUMNS} FROM agencies WHERE id = $1"),
            vec![uuid_value(b, id.0)],
        ))
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(agency_row(&row)?))
}

/// Records an API client (its secret only as a hash).
pub async fn insert_api_client<C: ConnectionTrait>(
    conn: &C,
    client_id: &str,
    secret_hash: &str,
    account: AccountId,
    name: &str,
    key: Option<(&str, &str)>,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    let (key, fingerprint) = key.unzip();
    conn.execute_raw(stmt(
        b,
        "INSERT INTO api_clients
            (client_id, secret_hash, account_id, name, created_at, create_key, create_fingerprint)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        vec![
            client_id.into(),
            secret_hash.into(),
            uuid_value(b, account.0),
            name.into(),
            Utc::now().into(),
            key.map(str::to_owned).into(),
            fingerprint.map(str::to_owned).into(),
        ],
    ))
    .await?;
    Ok(())
}

/// The API client made with an idempotency key (scoped), if one was.
pub async fn api_client_by_create_key<C: ConnectionTrait>(
    conn: &C,
    key: &str,
) -> Result<Option<KeyedApiClient>, DbErr> {
    let b = conn.get_database_backend();
    let Some(row) = conn
        .query_one_raw(stmt(
            b,
            &format!(
                "SELECT {API_CLIENT_COLUMNS}, c.create_fingerprint
                 FROM api_clients c WHERE c.create_key = $1"
            ),
            vec![key.into()],
        ))
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(KeyedApiClient {
        client: api_client_row(&row)?,
        fingerprint: row
            .try_get::<Option<String>>("", "create_fingerprint")?
            .unwrap_or_default(),
    }))
}

/// An API client and what its create was sent with.
pub struct KeyedApiClient {
    /// The client.
    pub client: ApiClient,
    /// The create's input, as [`insert_api_client`] kept it.
    pub fingerprint: String,
}

/// Whether the account was ever issued a token (rows of tokens expired over
/// a day are deleted: asked of a client a day old at most, it tells).
pub async fn ever_signed_in<C: ConnectionTrait>(
    conn: &C,
    account: AccountId,
) -> Result<bool, DbErr> {
    any_row_of(
        conn,
        "SELECT 1 AS one FROM refresh_tokens WHERE account_id = $1 LIMIT 1",
        account,
    )
    .await
}

/// Whether `sql`, given the account as `$1`, answers a row.
async fn any_row_of<C: ConnectionTrait>(
    conn: &C,
    sql: &str,
    account: AccountId,
) -> Result<bool, DbErr> {
    let b = conn.get_database_backend();
    Ok(conn
        .query_one_raw(stmt(b, sql, vec![uuid_value(b, account.0)]))
        .await?
        .is_some())
}

/// Gives an API client another secret (its digest).
pub async fn set_api_client_secret<C: ConnectionTrait>(
    conn: &C,
    client_id: &str,
    secret_hash: &str,
) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "UPDATE api_clients SET secret_hash = $2 WHERE client_id = $1",
        vec![client_id.into(), secret_hash.into()],
    ))
    .await?;
    Ok(())
}

/// An API client's secret hash and account, unless revoked.
pub async fn api_client<C: ConnectionTrait>(
    conn: &C,
    client_id: &str,
) -> Result<Option<ApiClientKey>, DbErr> {
    let b = conn.get_database_backend();
    let Some(row) = conn
        .query_one_raw(stmt(
            b,
            "SELECT secret_hash, account_id, revoked_at IS NOT NULL AS revoked
             FROM api_clients WHERE client_id = $1",
            vec![client_id.into()],
        ))
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(ApiClientKey {
        secret_hash: row.try_get("", "secret_hash")?,
        account: AccountId(row_uuid(&row, "account_id")?),
        revoked: row.try_get("", "revoked")?,
    }))
}

/// What an API client signs in with.
pub struct ApiClientKey {
    /// Digest of its secret.
    pub secret_hash: String,
    /// Its account.
    pub account: AccountId,
    /// Revoked (`revokeApiClient`): it signs in no more.
    pub revoked: bool,
}

/// A page of agencies, oldest first, after the agency `after`; and whether
/// more follow.
pub async fn agencies<C: ConnectionTrait>(
    conn: &C,
    first: u32,
    after: Option<AgencyId>,
) -> Result<(Vec<Agency>, bool), DbErr> {
    let b = conn.get_database_backend();
    // UUIDv7 ids are time-ordered: the id is the order and the cursor.
    let rows = conn
        .query_all_raw(stmt(
            b,
            &format!(
                "SELECT {AGENCY_COLUMNS} FROM agencies WHERE ($1 OR id > $2) ORDER BY id LIMIT $3"
            ),
            vec![
                after.is_none().into(),
                uuid_value(b, after.map_or(uuid::Uuid::nil(), |a| a.0)),
                (i64::from(first) + 1).into(),
            ],
        ))
        .await?;
    shared::db::page(&rows, first, agency_row)
}

/// How many agencies there are.
pub async fn agency_count<C: ConnectionTrait>(conn: &C) -> Result<u64, DbErr> {
    let b = conn.get_database_backend();
    let row = conn
        .query_one_raw(stmt(
            b,
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM agencies",
            vec![],
        ))
        .await?;
    Ok(row
        .map(|r| r.try_get::<i64>("", "n"))
        .transpose()?
        .map_or(0, |n| u64::try_from(n).unwrap_or(0)))
}

/// The columns of `agencies` [`agency_row`] reads, named.
const AGENCY_COLUMNS: &str =
    "id, name, home_region, commission_bp, suspended_at, suspension_reason";

fn agency_row(row: &QueryResult) -> Result<Agency, DbErr> {
    let at: Option<DateTime<Utc>> = row.try_get("", "suspended_at")?;
    let reason: Option<String> = row.try_get("", "suspension_reason")?;
    Ok(Agency {
        id: AgencyId(row_uuid(row, "id")?),
        name: row.try_get("", "name")?,
        home_region: row_region(row, "home_region")?,
        commission_bp: u32::try_from(row.try_get::<i32>("", "commission_bp")?).unwrap_or(0),
        suspended: at.map(|at| (at, reason.unwrap_or_default())),
    })
}

/// An API client as admins see it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiClient {
    /// What it logs in with.
    pub client_id: String,
    /// What the agency called it.
    pub name: String,
    /// Its account (role AGENCY).
    pub account_id: AccountId,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Revoked: it gets no more tokens.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The columns of `api_clients` (as `c`) [`api_client_row`] reads, named.
const API_CLIENT_COLUMNS: &str = "c.client_id, c.name, c.account_id, c.created_at, c.revoked_at";

fn api_client_row(row: &QueryResult) -> Result<ApiClient, DbErr> {
    Ok(ApiClient {
        client_id: row.try_get("", "client_id")?,
        name: row.try_get("", "name")?,
        account_id: AccountId(row_uuid(row, "account_id")?),
        created_at: row.try_get("", "created_at")?,
        revoked_at: row.try_get("", "revoked_at")?,
    })
}

/// Whether the account is a revoked API client's.
pub async fn revoked_client_account<C: ConnectionTrait>(
    conn: &C,
    account: AccountId,
) -> Result<bool, DbErr> {
    any_row_of(
        conn,
        "SELECT 1 AS one FROM api_clients WHERE account_id = $1 AND revoked_at IS NOT NULL",
        account,
    )
    .await
}

/// The API clients of an agency, oldest first.
pub async fn api_clients_of<C: ConnectionTrait>(
    conn: &C,
    agency: AgencyId,
) -> Result<Vec<ApiClient>, DbErr> {
    let b = conn.get_database_backend();
    conn.query_all_raw(stmt(
        b,
        &format!(
            "SELECT {API_CLIENT_COLUMNS} FROM api_clients c JOIN accounts a ON a.id = c.account_id
             WHERE a.agency_id = $1 ORDER BY c.created_at, c.client_id"
        ),
        vec![uuid_value(b, agency.0)],
    ))
    .await?
    .iter()
    .map(api_client_row)
    .collect()
}

/// An API client and its agency, revoked or not.
pub async fn api_client_by_id<C: ConnectionTrait>(
    conn: &C,
    client_id: &str,
) -> Result<Option<(ApiClient, Option<AgencyId>)>, DbErr> {
    let b = conn.get_database_backend();
    let Some(row) = conn
        .query_one_raw(stmt(
            b,
            &format!(
                "SELECT {API_CLIENT_COLUMNS}, a.agency_id
                 FROM api_clients c JOIN accounts a ON a.id = c.account_id
                 WHERE c.client_id = $1"
            ),
            vec![client_id.into()],
        ))
        .await?
    else {
        return Ok(None);
    };
    Ok(Some((
        api_client_row(&row)?,
        opt_row_uuid(&row, "agency_id")?.map(AgencyId),
    )))
}

/// Marks an API client revoked (once: the first time is kept).
pub async fn revoke_api_client<C: ConnectionTrait>(conn: &C, client_id: &str) -> Result<(), DbErr> {
    let b = conn.get_database_backend();
    conn.execute_raw(stmt(
        b,
        "UPDATE api_clients SET revoked_at = $2 WHERE client_id = $1 AND revoked_at IS NULL",
        vec![client_id.into(), Utc::now().into()],
    ))
    .await?;
    Ok(())
}

/// The people of an agency: AGENCY accounts that are not API clients.
pub async fn staff_of<C: ConnectionTrait>(
    conn: &C,
    agency: AgencyId,
) -> Result<Vec<Account>, DbErr> {
    let b = conn.get_database_backend();
    conn.query_all_raw(stmt(
        b,
        &format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.agency_id = $1
             AND NOT EXISTS (SELECT 1 FROM api_clients c WHERE c.account_id = a.id)
             ORDER BY a.created_at, a.id"
        ),
        vec![uuid_value(b, agency.0)],
    ))
    .await?
    .iter()
    .map(account)
    .collect()
}

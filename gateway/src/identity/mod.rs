//! Identity: accounts with argon2 password hashes, short-lived access tokens
//! (JWT, HS256 pinned, issuer and audience checked) and long-lived refresh
//! tokens stored only as hashes, rotated on every use and revocable.

pub mod storage;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use sea_orm::{DatabaseConnection, TransactionTrait};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shared::auth::{Principal, Role};
use shared::ids::{AccountId, AgencyId};
use shared::region::{RegionCode, reference_region};
use shared::{AppError, ErrorCode};
use std::collections::HashMap;
use std::sync::Arc;
use storage::{Account, Agency};
use subtle::ConstantTimeEq;
use tracing::{info, warn};

/// Who issues the tokens and for whom.
const ISSUER: &str = "duikou";
const AUDIENCE: &str = "duikou-api";

/// Why a request with an expired access token is refused (a socket says
/// it its own way: `socket::TOKEN_EXPIRED`).
pub(crate) const ACCESS_TOKEN_EXPIRED: &str = "the access token expired; use your refresh token";

/// Passwords: long enough to resist guessing, short enough to hash cheaply.
const PASSWORD_CHARS: std::ops::RangeInclusive<usize> = 10..=128;

/// The claims of an access token.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The account.
    pub sub: String,
    /// Its role.
    pub role: Role,
    /// Home region (travelers, agencies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<String>,
    /// Agency (AGENCY).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agency: Option<String>,
    /// Administered region (REGION_ADMIN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// The account's token generation when issued; a revocation moves the
    /// account's on and refuses every token of an earlier one. Tokens
    /// issued before generations existed read as 0.
    #[serde(rename = "gen", default)]
    pub generation: i32,
}

/// What a verified access token says beside its principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// When it expires.
    pub expires: chrono::DateTime<Utc>,
    /// The token generation it was issued in.
    pub generation: i32,
}

/// How often a gateway reads the revocations other replicas made.
pub const REVOCATION_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// How often each gateway deletes the refresh tokens that expired.
pub const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Access-token revocations this gateway knows of: for each account whose
/// tokens were revoked within an access token's lifetime, the generation
/// its tokens must have and when it was revoked.
type Revoked = std::sync::RwLock<HashMap<AccountId, (i32, chrono::DateTime<Utc>)>>;

/// A pair of tokens for a principal.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// The JWT for `Authorization: Bearer`.
    pub access_token: String,
    /// Exchange for a new pair with `refreshToken`; revocable.
    pub refresh_token: String,
    /// Seconds the access token lives.
    pub expires_in: i64,
    /// The account.
    pub account: Account,
}

/// Identity: the gateway's accounts and tokens.
#[derive(Clone)]
pub struct Identity {
    db: DatabaseConnection,
    encoding: Arc<EncodingKey>,
    decoding: Arc<DecodingKey>,
    validation: Arc<Validation>,
    access_ttl: Duration,
    refresh_ttl: Duration,
    /// For how long a refresh token just exchanged may be exchanged again
    /// (see [`Identity::refresh`]).
    reuse_grace: Duration,
    revoked: Arc<Revoked>,
    /// The key a refresh token's session is sealed with (from the signing
    /// secret, apart from its use for access tokens).
    seal_key: Arc<[u8; 32]>,
}

/// Most live refresh tokens one refresh token gets exchanged for, sent
/// again within the reuse grace (see [`Identity::refresh`]).
pub const MAX_LIVE_PER_TOKEN: i64 = 10;

/// Wrong passwords for one email within [`LOGIN_WINDOW`] before its logins
/// are refused until the window has passed.
pub const MAX_LOGIN_FAILURES: i32 = 10;

/// The window [`MAX_LOGIN_FAILURES`] counts in, from the first failure.
pub const LOGIN_WINDOW: chrono::Duration = chrono::Duration::minutes(15);

/// Why an account of a suspended agency gets no token.
fn suspended(agency: &Agency, since: chrono::DateTime<Utc>, reason: &str) -> AppError {
    AppError::new(
        ErrorCode::Forbidden,
        format!(
            "the agency {} is suspended since {} ({reason}): its accounts sign in again once a \
             platform admin reinstates it",
            agency.name,
            shared::policy::china_today(since)
        ),
    )
}

fn unauthenticated(message: impl Into<String>) -> AppError {
    AppError::new(ErrorCode::Unauthenticated, message)
}

/// Hex SHA-256 of a refresh token or client secret: what is stored.
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The seal of a refresh token's `body` (`<session>.<secret>`) under `key`:
/// HMAC-SHA-256, its first 16 bytes in hex.
fn seal(key: &[u8; 32], body: &str) -> Option<[u8; 16]> {
    use hmac::Mac;
    let mut mac = <hmac::Hmac<Sha256> as Mac>::new_from_slice(key).ok()?;
    mac.update(body.as_bytes());
    let full = mac.finalize().into_bytes();
    full.get(..16)?.try_into().ok()
}

/// How long after its making an API client's create sent again with its
/// key gets a new secret (if the client has not signed in): past it, the
/// first answer was read.
pub const RESEND_WITHIN: Duration = Duration::days(1);

/// A refresh token of ours whose sign-in has no live token left.
pub const SIGN_IN_ENDED: &str = "this sign-in has ended (its refresh token expired, it was \
     logged out, a hundred newer sign-ins of the account replaced it, or every session of the \
     account was ended); log in again";

/// The sign-in a refresh token names, when its seal shows this platform
/// issued it (`<session>.<secret>.<seal>`): a token whose row was trimmed
/// away is still told by it. Sealed, so that the session alone (the
/// token's plain first part, which a log may keep) ends nothing. None for
/// one issued before tokens named their sign-in, or forged.
fn session_of(key: &[u8; 32], token: &str) -> Option<uuid::Uuid> {
    // As sent, byte for byte, as it was looked up by its hash: the live
    // token sent with a newline (or its seal in capitals) is not a copy of
    // itself gone missing, which would end every session.
    let (body, sealed) = token.rsplit_once('.')?;
    let (session, _) = body.split_once('.')?;
    let expected = hex::encode(seal(key, body)?);
    // Compared in constant time.
    let same = sealed.len() == expected.len()
        && sealed
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |d, (a, b)| d | (a ^ b))
            == 0;
    same.then(|| uuid::Uuid::try_parse(session).ok()).flatten()
}

/// Whether `token` has a shape refresh tokens had before they named their
/// sign-in and were sealed: `<secret>` or `<session>.<secret>` (a secret:
/// [`random_secret`]'s 43 characters).
fn unsealed_refresh_token(token: &str) -> bool {
    let secret = |s: &str| {
        s.len() == 43
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    match token.split('.').collect::<Vec<_>>().as_slice() {
        [s] => secret(s),
        [session, s] => uuid::Uuid::try_parse(session).is_ok() && secret(s),
        _ => false,
    }
}

/// 32 random bytes, URL-safe base64.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// argon2id at OWASP's "m=7 MiB, t=5, p=1" (one of its equivalent
/// settings; the 19 MiB one costs the same time but three times the memory,
/// which a gateway holds per hash in flight). Hashes stored with other
/// parameters still verify: each carries its own.
fn hasher() -> Result<Argon2<'static>, AppError> {
    let params = argon2::Params::new(7 * 1024, 5, 1, None).map_err(AppError::internal)?;
    Ok(Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        params,
    ))
}

/// Hashes in flight at once, per gateway: a flood of logins waits here
/// instead of taking a hash's memory each.
static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// How long a sign-in waits for a turn at the hasher before it is told to
/// come back (RATE_LIMITED) instead of hanging behind a flood.
const HASHING_QUEUE: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs one hash or verification off the async threads (it is slow on
/// purpose), at most [`HASHING`] at a time, waiting at most
/// [`HASHING_QUEUE`] for a turn.
async fn hashing<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AppError> {
    hashing_on(&HASHING, work).await
}

/// [`hashing`] with turns from `turns`. The turn goes with the work onto
/// the blocking thread and ends with it: a caller that goes away (a client
/// closing its connection mid-login drops the request) must not free a
/// turn while its hash still runs, or a script hanging up after each login
/// would have hundreds of hashes — 7 MiB each — running at once.
async fn hashing_on<T: Send + 'static>(
    turns: &'static tokio::sync::Semaphore,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AppError> {
    let stopped = || AppError::internal("the password hasher stopped");
    let turn = match tokio::time::timeout(HASHING_QUEUE, turns.acquire()).await {
        Ok(turn) => turn.map_err(|_| stopped())?,
        Err(_) => {
            return Err(AppError::new(
                shared::ErrorCode::RateLimited,
                "too many sign-ins at once; try again in a few seconds",
            ));
        }
    };
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        work()
    })
    .await
    .map_err(|_| stopped())
}

fn hash_now(password: &[u8]) -> Result<String, AppError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(AppError::internal)?;
    hasher()?
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(AppError::internal)
}

/// A password composed (NFC): "crème" typed as e + U+0300 by one keyboard
/// and as è by another is one password.
fn composed(password: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    password.nfc().collect()
}

/// Hashes a password with argon2id, composed (NFC).
pub async fn hash_password(password: String) -> Result<String, AppError> {
    hashing(move || hash_now(composed(&password).as_bytes())).await?
}

/// Checks a password against a stored hash; without one — an unknown
/// email, or an API client's account, which has no password ("") — it
/// still does the work, so neither answers faster than a wrong password.
/// RATE_LIMITED when the hasher is too busy to take it.
pub async fn verify_password(password: String, hash: Option<String>) -> Result<bool, AppError> {
    hashing(move || {
        // A hash of a random password, made once, at today's cost.
        static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let dummy =
            || DUMMY.get_or_init(|| hash_now(random_secret().as_bytes()).unwrap_or_default());
        let (stored, real) = match hash.as_deref().map(PasswordHash::new) {
            Some(Ok(parsed)) => (parsed, true),
            _ => match PasswordHash::new(dummy()) {
                Ok(parsed) => (parsed, false),
                Err(_) => return false,
            },
        };
        // Composed, as hashed since; as typed, for one set decomposed
        // before (checked only when the two differ).
        let nfc = composed(&password);
        let matches = |typed: &str| {
            Argon2::default()
                .verify_password(typed.as_bytes(), &stored)
                .is_ok()
        };
        (matches(&nfc) || (nfc != password && matches(&password))) && real
    })
    .await
}

/// Checks a new password; `field` is the argument that carries it.
fn check_password(field: &str, password: &str) -> Result<(), AppError> {
    // Counted as hashed: composed (five é typed with combining accents are
    // five characters, not ten).
    if !PASSWORD_CHARS.contains(&composed(password).chars().count()) {
        return Err(AppError::bad_input(format!(
            "{field}: a password has {} to {} characters",
            PASSWORD_CHARS.start(),
            PASSWORD_CHARS.end()
        )));
    }
    if shared::text::is_blank(password) {
        return Err(AppError::bad_input(format!(
            "{field}: a password needs more than spaces and invisible characters"
        )));
    }
    Ok(())
}

pub use shared::text::normalise_email;

/// The domain of API clients' accounts (`<clientId>@clients.duikou`),
/// which nobody registers.
const CLIENT_DOMAIN: &str = "clients.duikou";

fn is_client_account(email: &str) -> bool {
    email
        .rsplit_once('@')
        .is_some_and(|(_, domain)| domain == CLIENT_DOMAIN)
}

/// Password of every demonstration account.
pub const DEMO_PASSWORD: &str = "duikou-demo-2026";
/// The demonstration traveler (from 北京市海淀区).
pub const DEMO_TRAVELER: &str = "traveler@demo.duikou";
/// The demonstration region admin (赤峰市).
pub const DEMO_REGION_ADMIN: &str = "chifeng@demo.duikou";

/// What `seed_demo_accounts` created that can only be shown now.
#[derive(Debug, Clone)]
pub struct DemoAccounts {
    /// The demo agency's API client.
    pub client_id: String,
    /// Its secret (shown once).
    pub client_secret: String,
}

impl DemoAccounts {
    /// The credentials, for the start-up summary.
    pub fn describe(&self) -> String {
        format!(
            "Demonstration accounts (password {DEMO_PASSWORD}):\n  traveler      {DEMO_TRAVELER}\n  region admin  {DEMO_REGION_ADMIN} (赤峰市)\n  agency API client  {} / {} (shown once)",
            self.client_id, self.client_secret
        )
    }
}

/// A new account's details.
pub struct NewAccount {
    /// Email (the login).
    pub email: String,
    /// Password, checked and hashed here.
    pub password: String,
    /// Shown name.
    pub display_name: String,
    /// Home region (the sponsor side of bookings).
    pub home_region: Option<RegionCode>,
    /// Role.
    pub role: Role,
    /// Administered region (REGION_ADMIN).
    pub region_scope: Option<RegionCode>,
    /// Agency (AGENCY).
    pub agency_id: Option<AgencyId>,
}

/// What `createAgency` says of a commission out of range.
pub const COMMISSION_RANGE: &str =
    "commissionBasisPoints: a commission is 0 to 3000 basis points (30 %)";

impl Identity {
    /// Identity over the gateway's database; the signing key is `secret`, or
    /// one generated once and kept in the database so every gateway replica
    /// signs and checks with the same key.
    pub async fn new(
        db: DatabaseConnection,
        secret: Option<&str>,
        access_minutes: i64,
        reuse_seconds: i64,
    ) -> Result<Identity, AppError> {
        let secret = match secret {
            Some(s) if s.len() >= 32 => s.to_owned(),
            Some(_) => {
                return Err(AppError::bad_input(
                    "DUIKOU_JWT_SECRET must be at least 32 characters",
                ));
            }
            None => storage::signing_secret(&db, &random_secret()).await?,
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Ok(Identity {
            db,
            encoding: Arc::new(EncodingKey::from_secret(secret.as_bytes())),
            decoding: Arc::new(DecodingKey::from_secret(secret.as_bytes())),
            validation: Arc::new(validation),
            access_ttl: Duration::minutes(access_minutes.clamp(1, 24 * 60)),
            refresh_ttl: Duration::days(30),
            reuse_grace: Duration::seconds(reuse_seconds.clamp(0, 60)),
            revoked: Arc::default(),
            seal_key: Arc::new(
                Sha256::new()
                    .chain_update(b"duikou refresh-token seal\0")
                    .chain_update(secret.as_bytes())
                    .finalize()
                    .into(),
            ),
        })
    }

    /// Whether tokens of `account` issued in `generation` were revoked,
    /// as far as this gateway knows.
    pub fn is_revoked(&self, account: AccountId, generation: i32) -> bool {
        let revoked = self.revoked.read().unwrap_or_else(|e| e.into_inner());
        revoked
            .get(&account)
            .is_some_and(|(floor, _)| generation < *floor)
    }

    /// Records a revocation this gateway made (or read).
    fn note_revoked(&self, account: AccountId, generation: i32, at: chrono::DateTime<Utc>) {
        let mut revoked = self.revoked.write().unwrap_or_else(|e| e.into_inner());
        let entry = revoked.entry(account).or_insert((generation, at));
        *entry = (entry.0.max(generation), entry.1.max(at));
    }

    /// Reads the revocations of the last access-token lifetime from the
    /// database (every replica's), and forgets older ones: a token issued
    /// before them has expired anyway. Returns how many are known.
    pub async fn read_revocations(&self) -> Result<usize, AppError> {
        // Two minutes over the lifetime: the tokens' leeway and clocks
        // that differ between replicas.
        let since = Utc::now() - self.access_ttl - Duration::minutes(2);
        let found = storage::revocations_since(&self.db, since).await?;
        for (account, generation, at) in found {
            self.note_revoked(account, generation, at);
        }
        let mut revoked = self.revoked.write().unwrap_or_else(|e| e.into_inner());
        revoked.retain(|_, (_, at)| *at > since);
        Ok(revoked.len())
    }

    /// Reads revocations every [`REVOCATION_POLL`] until `cancel`, so that
    /// one made through another replica refuses its tokens here too; and
    /// every [`PRUNE_EVERY`] (the first a poll after the start) deletes the
    /// refresh tokens that expired, a thousand a poll until none is left
    /// ([`Self::prune_refresh_tokens`]): a backlog of millions does not
    /// hold the revocations up.
    pub fn watch_revocations(
        &self,
        cancel: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        const BATCH: u64 = 1_000;
        let identity = self.clone();
        tokio::spawn(async move {
            let mut prune_at = std::time::Instant::now();
            loop {
                tokio::select! {
                    () = tokio::time::sleep(REVOCATION_POLL) => {}
                    () = cancel.cancelled() => break,
                }
                if let Err(e) = identity.read_revocations().await {
                    metrics::counter!("duikou_revocation_reads_failed_total").increment(1);
                    warn!(error = %e.message, "reading token revocations failed; will retry");
                }
                if std::time::Instant::now() < prune_at {
                    continue;
                }
                prune_at = std::time::Instant::now() + PRUNE_EVERY;
                match identity.prune_refresh_tokens(BATCH).await {
                    Ok(n) => {
                        if n > 0 {
                            info!(deleted = n, "expired refresh tokens deleted");
                        }
                        // More left: the next batch at the next poll.
                        if n == BATCH {
                            prune_at = std::time::Instant::now();
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "deleting expired refresh tokens failed; will retry")
                    }
                }
            }
        })
    }

    /// Deletes up to `at_most` refresh tokens that expired (a day's margin:
    /// clocks); how many.
    pub async fn prune_refresh_tokens(&self, at_most: u64) -> Result<u64, sea_orm::DbErr> {
        let before = Utc::now() - Duration::days(1);
        storage::prune_expired_refresh_tokens(&self.db, before, at_most).await
    }

    /// The database (for the agency and API client handlers).
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The principal of a valid access token; UNAUTHENTICATED otherwise
    /// (`none`, another algorithm or key, expired, wrong issuer or audience).
    pub fn verify(&self, token: &str) -> Result<Principal, AppError> {
        self.verify_until(token).map(|(principal, _)| principal)
    }

    /// [`verify`](Self::verify), with when the token expires and its
    /// generation.
    pub fn verify_until(&self, token: &str) -> Result<(Principal, Token), AppError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::ExpiredSignature => unauthenticated(ACCESS_TOKEN_EXPIRED),
                    _ => unauthenticated("the access token is not valid"),
                }
            })?;
        let c = data.claims;
        let parse_region = |s: Option<String>| s.and_then(|s| RegionCode::parse(&s).ok());
        let expires = chrono::DateTime::from_timestamp(c.exp, 0)
            .ok_or_else(|| unauthenticated("the access token is not valid"))?;
        let principal = Principal {
            account_id: c
                .sub
                .parse::<AccountId>()
                .map_err(|_| unauthenticated("the access token is not valid"))?,
            role: c.role,
            home_region: parse_region(c.home),
            agency_id: c.agency.and_then(|a| a.parse().ok()),
            region_scope: parse_region(c.scope),
        };
        if self.is_revoked(principal.account_id, c.generation) {
            return Err(unauthenticated(
                "the access token was revoked (the account's password, role or sessions \
                 changed, or its API client was revoked); log in again, or refresh if \
                 your session still stands (a revoked API client gets no more tokens)",
            ));
        }
        Ok((
            principal,
            Token {
                expires,
                generation: c.generation,
            },
        ))
    }

    /// An access token for `account`, its `home` claim `sponsor`: the
    /// region its bookings count for.
    fn access_token(
        &self,
        account: &Account,
        sponsor: Option<RegionCode>,
    ) -> Result<String, AppError> {
        let now = Utc::now();
        let claims = Claims {
            sub: account.id.to_string(),
            role: account.role,
            home: sponsor.map(|r| r.to_string()),
            agency: account.agency_id.map(|a| a.to_string()),
            scope: account.region_scope.map(|r| r.to_string()),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            exp: (now + self.access_ttl).timestamp(),
            iat: now.timestamp(),
            generation: account.token_generation,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(AppError::internal)
    }

    /// A fresh token pair for an account (the refresh token stored hashed).
    async fn issue<C: sea_orm::ConnectionTrait>(
        &self,
        conn: &C,
        account: Account,
    ) -> Result<Tokens, AppError> {
        self.issue_in(conn, account, uuid::Uuid::now_v7(), None)
            .await
    }

    /// Tokens for `account` carrying on the sign-in `session`.
    async fn issue_in<C: sea_orm::ConnectionTrait>(
        &self,
        conn: &C,
        mut account: Account,
        session: uuid::Uuid,
        exchanged_from: Option<&str>,
    ) -> Result<Tokens, AppError> {
        // Named by its sign-in: a used token presented after its row was
        // trimmed away (a thief refreshing a thousand times to get it
        // trimmed) is still known as a copy of a session that goes on.
        let body = format!("{}.{}", session.simple(), random_secret());
        let sealed = seal(&self.seal_key, &body)
            .ok_or_else(|| AppError::internal("the refresh token could not be sealed"))?;
        let refresh = format!("{body}.{}", hex::encode(sealed));
        storage::insert_refresh(
            conn,
            &digest(&refresh),
            account.id,
            Utc::now() + self.refresh_ttl,
            session,
            exchanged_from,
        )
        .await?;
        // An agency's bookings count for the agency's region, whichever of
        // its staff (whose own home may be elsewhere) or clients books.
        let sponsor = self.sponsor_of(conn, &account, true).await?;
        let access_token = self.access_token(&account, sponsor)?;
        // Shown as every other read of the account shows it (`me`, an
        // agency's staff): an agency account's home is its agency's.
        account.home_region = sponsor;
        Ok(Tokens {
            access_token,
            refresh_token: refresh,
            expires_in: self.access_ttl.num_seconds(),
            account,
        })
    }

    /// The account of address `typed` (as sent), with its password hash:
    /// as typed, by its composed form, or fully decomposed (one stored
    /// before addresses were composed).
    async fn account_by_address(&self, typed: &str) -> Result<Option<(Account, String)>, AppError> {
        // As typed first: of two accounts made before addresses were
        // composed, one each way, each is found as its owner types it.
        let composed = normalise_email(typed)?;
        for form in shared::text::email_forms(typed, composed) {
            if let Some(found) = storage::account_by_email(&self.db, &form).await? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Creates an account (checked: email, password, name, region).
    pub async fn create_account(&self, new: NewAccount) -> Result<Account, AppError> {
        let email = normalise_email(&new.email)?;
        shared::text::check_new_email(&email)?;
        if is_client_account(&email) {
            return Err(AppError::bad_input(format!(
                "email: @{CLIENT_DOMAIN} is the platform's own, for API clients' accounts"
            )));
        }
        check_password("password", &new.password)?;
        // One stored decomposed before: the same address, taken.
        if self.account_by_address(&new.email).await?.is_some() {
            return Err(AppError::conflict(format!(
                "an account for {email} exists already; log in instead"
            )));
        }
        let display_name = new.display_name.trim().to_owned();
        shared::text::check_line("displayName", &display_name, 100, true)?;
        for region in [new.home_region, new.region_scope].into_iter().flatten() {
            if reference_region(region).is_none() {
                return Err(AppError::bad_input(format!("unknown region {region}")));
            }
        }
        let account = Account {
            id: AccountId::new(),
            email,
            display_name,
            role: new.role,
            home_region: new.home_region,
            region_scope: new.region_scope,
            agency_id: new.agency_id,
            token_generation: 0,
        };
        let hash = hash_password(new.password).await?;
        if !storage::insert_account(&self.db, &account, &hash).await? {
            return Err(AppError::conflict(format!(
                "an account for {} exists already; log in instead",
                account.email
            )));
        }
        Ok(account)
    }

    /// Registers a traveler and logs them in.
    pub async fn register(
        &self,
        email: &str,
        password: String,
        display_name: &str,
        home_region: Option<RegionCode>,
    ) -> Result<Tokens, AppError> {
        let account = self
            .create_account(NewAccount {
                email: email.into(),
                password,
                display_name: display_name.into(),
                home_region,
                role: Role::Traveler,
                region_scope: None,
                agency_id: None,
            })
            .await?;
        info!(account = %account.id, "traveler registered");
        self.issue(&self.db, account).await
    }

    /// Logs in with email and password.
    pub async fn login(&self, email: &str, password: String) -> Result<Tokens, AppError> {
        let email_written = email;
        let email = normalise_email(email).ok();
        // Guessing one account's password from many addresses (each with
        // its own rate allowance) stops after a few wrong ones; every
        // email counts alike, so the refusal tells nobody an account exists.
        if let Some(email) = &email {
            self.password_attempt(email).await?;
        }
        let found = match &email {
            Some(_) => self.account_by_address(email_written).await?,
            None => None,
        };
        let hash = found.as_ref().map(|(_, h)| h.clone());
        if !verify_password(password, hash).await? {
            return Err(unauthenticated("wrong email or password"));
        }
        let (account, verified) =
            found.ok_or_else(|| unauthenticated("wrong email or password"))?;
        // Issued under the account's lock from the row as it is now: a
        // password changed while this one was being checked refuses it,
        // and a revocation committed meanwhile is in the token.
        let txn = self.db.begin().await?;
        storage::lock_account(&txn, account.id).await?;
        let account = match storage::account_by_email(&txn, &account.email).await? {
            Some((now, hash)) if hash == verified => now,
            _ => return Err(unauthenticated("wrong email or password")),
        };
        if let Some(email) = &email {
            storage::login_succeeded(&txn, email).await?;
        }
        let tokens = match self.issue(&txn, account).await {
            Ok(tokens) => tokens,
            // Refused with the right password (a suspended agency's
            // staff): not a wrong password, counted towards a lock-out.
            Err(refused) => {
                txn.rollback().await?;
                if let Some(email) = &email {
                    storage::login_succeeded(&self.db, email).await?;
                }
                return Err(refused);
            }
        };
        txn.commit().await?;
        Ok(tokens)
    }

    /// Counts a password attempt for `email` before it is checked;
    /// RATE_LIMITED past [`MAX_LOGIN_FAILURES`] within [`LOGIN_WINDOW`].
    async fn password_attempt(&self, email: &str) -> Result<(), AppError> {
        let Some(until) =
            storage::password_attempt(&self.db, email, MAX_LOGIN_FAILURES, LOGIN_WINDOW).await?
        else {
            return Ok(());
        };
        let minutes = (until - Utc::now()).num_minutes() + 1;
        Err(AppError::new(
            ErrorCode::RateLimited,
            format!(
                "{MAX_LOGIN_FAILURES} wrong passwords for this email: try again in {minutes} \
                 minute{} (or sign in with a refresh token)",
                if minutes == 1 { "" } else { "s" }
            ),
        ))
    }

    /// Exchanges a refresh token for a new pair; the old one stops working.
    /// A token used twice means it leaked: every token of the account is
    /// revoked and the holder must log in again (not for a token that went
    /// with an earlier revocation of everything: that is merely old) —
    /// unless it is presented again within the reuse grace of its exchange
    /// while its sign-in goes on: two tabs or an app's parallel requests
    /// refreshing one token at once, each of which gets a pair of its own.
    pub async fn refresh(&self, token: &str) -> Result<Tokens, AppError> {
        let hash = digest(token);
        let txn = self.db.begin().await?;
        let Some(stored) = storage::refresh_locked(&txn, &hash).await? else {
            // Unknown, but sealed by this platform: of a sign-in that goes
            // on with another token (one used long ago, whose row was
            // trimmed), or of one that has ended (the rows of tokens
            // expired a day are deleted).
            if let Some(session) = session_of(&self.seal_key, token) {
                return Err(match storage::session_locked(&txn, session).await? {
                    Some((account, live)) if live > 0 => self.leaked(txn, account).await?,
                    _ => unauthenticated(SIGN_IN_ENDED),
                });
            }
            return Err(unauthenticated("unknown refresh token"));
        };
        if let Some(exchanged) = stored.revoked_at {
            if stored.leaked() {
                // Exchanged a moment ago: another tab or request of the
                // same client most likely, and the sign-in goes on.
                if let Some(session) = stored.session
                    && Utc::now() - exchanged <= self.reuse_grace
                    && stored.expires_at > Utc::now()
                {
                    let live = storage::session_locked(&txn, session).await?;
                    if live.is_none_or(|(_, live)| live == 0) {
                        // Its successor logged out meanwhile: that ended
                        // the sign-in and nothing more.
                        return Err(unauthenticated(
                            "this sign-in was ended meanwhile (a logout); log in again",
                        ));
                    }
                    // A burst of one client's requests each sending it: a
                    // few pairs, not one per request pushing the account's
                    // other sign-ins out of its live tokens. Those it was
                    // exchanged for and still live: pairs an earlier
                    // token's resends left behind, or the tabs' own
                    // refreshes since, do not use these up.
                    if storage::exchanged_for(&txn, &hash).await? >= MAX_LIVE_PER_TOKEN {
                        return Err(unauthenticated(format!(
                            "this refresh token was sent again at once more often than it gets \
                             pairs for ({MAX_LIVE_PER_TOKEN}): use a token one of those calls \
                             returned (refresh one call at a time), or log in again"
                        )));
                    }
                    let account = storage::account_by_id(&txn, stored.account_id)
                        .await?
                        .ok_or_else(|| unauthenticated("the account no longer exists"))?;
                    let tokens = self.issue_in(&txn, account, session, Some(&hash)).await?;
                    txn.commit().await?;
                    return Ok(tokens);
                }
                return Err(self.leaked(txn, stored.account_id).await?);
            }
            // A revoked client's token: apiClientToken would refuse it too.
            if storage::revoked_client_account(&txn, stored.account_id).await? {
                return Err(unauthenticated(
                    "this API client was revoked: ask a platform admin for a new one \
                     (createApiClient)",
                ));
            }
            // Revoked by its agency's suspension (live until then): said
            // so, as a login or apiClientToken would say it, not "log in
            // again". One that had ended before (a logout, a use, a
            // password change, its time) is told it was revoked, as
            // before: the suspension is not its holder's to learn of.
            if !stored.logged_out
                && let Some(account) = storage::account_by_id(&txn, stored.account_id).await?
                && let (Role::Agency, Some(agency)) = (account.role, account.agency_id)
                && let Some(agency) = storage::agency(&txn, agency).await?
                && let Some((since, reason)) = &agency.suspended
                && exchanged >= *since
                && stored.expires_at > *since
            {
                return Err(suspended(&agency, *since, reason));
            }
            return Err(unauthenticated(
                "this refresh token was revoked; log in again (an API client: apiClientToken)",
            ));
        }
        if stored.expires_at < Utc::now() {
            return Err(unauthenticated("the refresh token expired; log in again"));
        }
        let account = storage::account_by_id(&txn, stored.account_id)
            .await?
            .ok_or_else(|| unauthenticated("the account no longer exists"))?;
        storage::revoke(&txn, &hash).await?;
        let session = stored.session.unwrap_or_else(uuid::Uuid::now_v7);
        let tokens = self.issue_in(&txn, account, session, Some(&hash)).await?;
        txn.commit().await?;
        Ok(tokens)
    }

    /// A refresh token presented again: every session of `account` ends
    /// (committing `txn`), and the error to answer with.
    async fn leaked(
        &self,
        txn: sea_orm::DatabaseTransaction,
        account: AccountId,
    ) -> Result<AppError, AppError> {
        let generation = storage::revoke_all(&txn, account).await?;
        txn.commit().await?;
        self.note_revoked(account, generation, Utc::now());
        warn!(%account, "a revoked refresh token was used; all sessions revoked");
        Ok(unauthenticated(
            "this refresh token had been used already, so a copy may be in other hands: every \
             session of the account was ended; log in again (an API client: apiClientToken)",
        ))
    }

    /// Ends the session a refresh token belongs to (logout), whichever of
    /// its tokens it is — one already refreshed too (a refresh racing the
    /// logout, an app refreshing in the background): its current token
    /// goes, and presented again it is dead, not taken for a leak.
    /// One of ours already ended is fine (a retry); what is not a refresh
    /// token of ours at all (an access token, one cut short or changed) is
    /// refused, saying nothing ended. `everywhere`: every refresh and access
    /// token of its account, for a token still in use only (an old one
    /// could otherwise end the sessions of whoever holds the account now).
    pub async fn logout(&self, token: &str, everywhere: bool) -> Result<(), AppError> {
        let hash = digest(token);
        if !everywhere {
            // Locked as a refresh locks it: the two run one after the other.
            let txn = self.db.begin().await?;
            if let Some(stored) = storage::refresh_locked(&txn, &hash).await? {
                storage::end_session(&txn, &hash, stored.session).await?;
            } else if let Some(session) = session_of(&self.seal_key, token) {
                // One used long ago (its row trimmed): its session still ends.
                if storage::session_locked(&txn, session).await?.is_some() {
                    storage::end_session(&txn, &hash, Some(session)).await?;
                }
            } else if !unsealed_refresh_token(token) {
                // It answered true, and the caller took its user for signed
                // out while the session went on. (One of the two shapes
                // issued before tokens were sealed, its row gone, cannot be
                // told from one that ended: true, as before.)
                return Err(AppError::bad_input(
                    "refreshToken: not a refresh token this platform holds or sealed (an access \
                     token? one cut short or changed? one sealed before its signing secret \
                     changed, ended since?): nothing was logged out; send the refreshToken that \
                     login or refreshToken answered",
                ));
            }
            txn.commit().await?;
            return Ok(());
        }
        let dead =
            || unauthenticated("this refresh token no longer works; log in to log out everywhere");
        let txn = self.db.begin().await?;
        let stored = storage::refresh_locked(&txn, &hash)
            .await?
            .ok_or_else(dead)?;
        let owner = stored.account_id;
        // One revoked on its own since the last revocation of everything
        // has leaked (someone refreshed it first: the owner of a lost phone
        // still holds it): ending every session is what presenting it to
        // `refreshToken` does, and what is asked here.
        if stored.revoked_at.is_some() && !stored.leaked() {
            // A retry of a logout everywhere whose answer was lost lands
            // here too: say what is known, not only that it failed.
            return Err(unauthenticated(
                "this refresh token was ended already (by a logout, a logout everywhere, a \
                 password change or a token used twice): if you just logged out everywhere, \
                 that is done; otherwise log in to log out everywhere",
            ));
        }
        if stored.expires_at < Utc::now() {
            return Err(dead());
        }
        let generation = storage::revoke_all(&txn, owner).await?;
        txn.commit().await?;
        self.note_revoked(owner, generation, Utc::now());
        info!(account = %owner, "logged out everywhere");
        Ok(())
    }

    /// Changes the password and revokes every refresh token of the account.
    pub async fn change_password(
        &self,
        who: &Principal,
        current: String,
        new: String,
    ) -> Result<Tokens, AppError> {
        check_password("newPassword", &new)?;
        if composed(&new) == composed(&current) {
            return Err(AppError::bad_input(
                "newPassword: the same as the current one; choose another",
            ));
        }
        // An API client signs in with its secret: there is no password to
        // guess (the answer was "the current password is wrong", then the
        // login limit's "wrong passwords for this email").
        let hash = storage::password_hash(&self.db, who.account_id).await?;
        // (An API client's account stores an empty hash.)
        if hash.as_deref().is_none_or(str::is_empty) {
            return Err(AppError::bad_input(
                "this account has no password: an API client signs in with its secret \
                 (apiClientToken), and a new secret is a new client (createApiClient, a \
                 platform admin's)",
            ));
        }
        // A stolen access token guesses the password no faster than a
        // login does: the same count, by the account's email.
        let email = storage::account_by_id(&self.db, who.account_id)
            .await?
            // Composed, as login counts it (one stored decomposed before).
            .map(|a| normalise_email(&a.email).unwrap_or(a.email));
        if let Some(email) = &email {
            self.password_attempt(email).await?;
        }
        if !verify_password(current, hash.clone()).await? {
            return Err(AppError::new(
                ErrorCode::Forbidden,
                "the current password is wrong",
            ));
        }
        if let Some(email) = &email {
            storage::login_succeeded(&self.db, email).await?;
        }
        let new_hash = hash_password(new).await?;
        // Under the account's lock: the password checked is still the one
        // stored, and the new tokens are issued from the row as it is
        // after the revocation (a role changed meanwhile included).
        let txn = self.db.begin().await?;
        storage::lock_account(&txn, who.account_id).await?;
        if storage::password_hash(&txn, who.account_id).await? != hash {
            return Err(AppError::conflict(
                "the password was changed meanwhile; log in again",
            ));
        }
        storage::set_password(&txn, who.account_id, &new_hash).await?;
        let generation = storage::revoke_all(&txn, who.account_id).await?;
        let account = storage::account_by_id(&txn, who.account_id)
            .await?
            .ok_or_else(|| unauthenticated("the account no longer exists"))?;
        let tokens = self.issue(&txn, account).await?;
        txn.commit().await?;
        self.note_revoked(who.account_id, generation, Utc::now());
        Ok(tokens)
    }

    /// The account behind a principal.
    /// An account as it acts: an agency's staff and clients with the
    /// agency's region as their home (the sponsor side of their bookings,
    /// as their tokens carry it), whatever they registered with.
    pub async fn account(&self, id: AccountId) -> Result<Option<Account>, AppError> {
        let Some(mut account) = storage::account_by_id(&self.db, id).await? else {
            return Ok(None);
        };
        account.home_region = self.sponsor_of(&self.db, &account, false).await?;
        Ok(Some(account))
    }

    /// Where `account`'s bookings count from: its agency's region for an
    /// AGENCY account, its own home otherwise. With `issuing` (a token for
    /// it), refused while its agency is suspended: no token for any of its
    /// accounts (staff and API clients). Not otherwise: a grant to such an
    /// agency, or a read of its account, is answered.
    async fn sponsor_of<C: sea_orm::ConnectionTrait>(
        &self,
        conn: &C,
        account: &Account,
        issuing: bool,
    ) -> Result<Option<RegionCode>, AppError> {
        let (Role::Agency, Some(agency)) = (account.role, account.agency_id) else {
            return Ok(account.home_region);
        };
        let agency = storage::agency(conn, agency).await?;
        if issuing
            && let Some(agency) = &agency
            && let Some((since, reason)) = &agency.suspended
        {
            return Err(suspended(agency, *since, reason));
        }
        Ok(agency.map(|a| a.home_region).or(account.home_region))
    }

    /// Creates the platform admin from configuration if the email is unused.
    pub async fn bootstrap_admin(&self, email: &str, password: &str) -> Result<(), AppError> {
        if let Some((account, hash)) = self.account_by_address(email).await? {
            return self.bootstrap_again(account, hash, password).await;
        }
        let email = normalise_email(email)?;
        match self
            .create_account(NewAccount {
                email: email.clone(),
                password: password.to_owned(),
                display_name: "Platform admin".into(),
                home_region: None,
                role: Role::PlatformAdmin,
                region_scope: None,
                agency_id: None,
            })
            .await
        {
            Ok(account) => {
                info!(account = %account.id, %email, "bootstrap platform admin created");
                Ok(())
            }
            // Another gateway replica created it first.
            Err(e) if e.code == ErrorCode::Conflict => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The bootstrap admin's email names an account already: nothing to do
    /// when it is a platform admin; made one again when the platform has
    /// none left (the way back, short of editing the database) and its
    /// password is the configured one — an account someone registered under
    /// that email before it was configured is not theirs to promote;
    /// otherwise left as it is, saying so.
    async fn bootstrap_again(
        &self,
        account: Account,
        hash: String,
        password: &str,
    ) -> Result<(), AppError> {
        if account.role == Role::PlatformAdmin {
            return Ok(());
        }
        if !verify_password(password.to_owned(), Some(hash)).await? {
            warn!(
                account = %account.id,
                role = account.role.as_str(),
                "DUIKOU_ADMIN_EMAIL names an account whose password is not \
                 DUIKOU_ADMIN_PASSWORD; it stays as it is (configure another email, or \
                 that account's own password)"
            );
            return Ok(());
        }
        let txn = self.db.begin().await?;
        storage::lock_account(&txn, account.id).await?;
        if storage::has_platform_admin(&txn).await? {
            warn!(
                account = %account.id,
                role = account.role.as_str(),
                "DUIKOU_ADMIN_EMAIL names an account that is not a platform admin; \
                 it stays as it is (another platform admin may grant the role)"
            );
            return Ok(());
        }
        storage::set_role(&txn, account.id, Role::PlatformAdmin, None, None).await?;
        let generation = storage::revoke_access(&txn, account.id).await?;
        txn.commit().await?;
        self.note_revoked(account.id, generation, Utc::now());
        warn!(
            account = %account.id,
            "no platform admin was left: the account of DUIKOU_ADMIN_EMAIL is one again"
        );
        Ok(())
    }

    /// Gives the account with `email` a role bound to what it needs: a
    /// region for REGION_ADMIN, an agency for AGENCY, nothing otherwise.
    pub async fn grant_role(
        &self,
        email: &str,
        expected: Option<AccountId>,
        role: Role,
        region_scope: Option<RegionCode>,
        agency: Option<AgencyId>,
        by: AccountId,
    ) -> Result<Account, AppError> {
        let typed = email;
        let email = normalise_email(email)?;
        // What does not go with the role is refused, not dropped: the
        // caller meant something by it.
        if agency.is_some() && role != Role::Agency {
            return Err(AppError::bad_input(format!(
                "agencyId is for an AGENCY account, not a {}",
                role.as_str()
            )));
        }
        if region_scope.is_some() && role != Role::RegionAdmin {
            return Err(AppError::bad_input(format!(
                "regionCode is for a REGION_ADMIN, not a {}",
                role.as_str()
            )));
        }
        let (region_scope, agency) = match role {
            Role::RegionAdmin => {
                let region = region_scope
                    .ok_or_else(|| AppError::bad_input("a REGION_ADMIN needs regionCode"))?;
                if reference_region(region).is_none() {
                    return Err(AppError::bad_input(format!("unknown region {region}")));
                }
                (Some(region), None)
            }
            Role::Agency => {
                let agency = agency
                    .ok_or_else(|| AppError::bad_input("an AGENCY account needs agencyId"))?;
                if !storage::agency_exists(&self.db, agency).await? {
                    return Err(AppError::not_found(format!("no agency {agency}")));
                }
                (None, Some(agency))
            }
            Role::Traveler | Role::PlatformAdmin => (None, None),
        };
        // An API client's account is its agency's machine login: a role
        // granted to it would turn the client's secret into another
        // agency's, or a platform admin's, credentials.
        if is_client_account(&email) {
            return Err(AppError::conflict(
                "an API client keeps its agency and role; revoke it (revokeApiClient) and \
                 create another for the agency you mean",
            ));
        }
        let (account, _) = self
            .account_by_address(typed)
            .await?
            .ok_or_else(|| AppError::not_found(format!("no account {email}")))?;
        // The person named by id, not whoever registered the email first.
        if let Some(expected) = expected
            && expected != account.id
        {
            return Err(AppError::conflict(format!(
                "the account registered under {email} is not {expected}: someone else may have \
                 registered this address; nothing was granted (ask the person for `me {{ id }}`)"
            )));
        }
        // A platform admin giving up the role could leave nobody to grant it.
        if account.id == by && role != Role::PlatformAdmin {
            return Err(AppError::conflict(
                "a platform admin cannot change their own role; another platform admin can",
            ));
        }
        let txn = self.db.begin().await?;
        // The granter's row too, in one order: two platform admins
        // demoting each other at once run one after the other, and the
        // second finds it no longer may (both did, leaving none).
        let (first, second) = if account.id.0 <= by.0 {
            (account.id, by)
        } else {
            (by, account.id)
        };
        storage::lock_account(&txn, first).await?;
        storage::lock_account(&txn, second).await?;
        let still_admin = storage::account_by_id(&txn, by)
            .await?
            .is_some_and(|granter| granter.role == Role::PlatformAdmin);
        if !still_admin {
            return Err(AppError::new(
                ErrorCode::Forbidden,
                "only a platform admin grants roles, and you no longer are one",
            ));
        }
        let account = storage::account_by_id(&txn, account.id)
            .await?
            .ok_or_else(|| AppError::not_found(format!("no account {email}")))?;
        // The same role again changes nothing and stops no token.
        if (account.role, account.region_scope, account.agency_id) == (role, region_scope, agency) {
            let home_region = self.sponsor_of(&txn, &account, false).await?;
            return Ok(Account {
                home_region,
                ..account
            });
        }
        // Tokens of the old role stop at once; a refresh gets the new one.
        storage::set_role(&txn, account.id, role, region_scope, agency).await?;
        let generation = storage::revoke_access(&txn, account.id).await?;
        txn.commit().await?;
        self.note_revoked(account.id, generation, Utc::now());
        info!(account = %account.id, role = role.as_str(), "role granted");
        let granted = Account {
            role,
            region_scope,
            agency_id: agency,
            token_generation: generation,
            ..account
        };
        // As `me` will show it: an agency's staff at home in its region.
        let home_region = self.sponsor_of(&self.db, &granted, false).await?;
        Ok(Account {
            home_region,
            ..granted
        })
    }

    /// Demonstration accounts (marked `demo.duikou` and [演示]): a traveler
    /// from 海淀区, the admin of 赤峰市 and an agency with API credentials.
    /// None when they exist already (the agency's secret is shown only once).
    pub async fn seed_demo_accounts(&self) -> Result<Option<DemoAccounts>, AppError> {
        if storage::account_by_email(&self.db, DEMO_TRAVELER)
            .await?
            .is_some()
        {
            return Ok(None);
        }
        let account = |email: &str, name: &str, role, home: &str, scope: Option<&str>| NewAccount {
            email: email.into(),
            password: DEMO_PASSWORD.into(),
            display_name: name.into(),
            home_region: RegionCode::parse(home).ok(),
            role,
            region_scope: scope.and_then(|s| RegionCode::parse(s).ok()),
            agency_id: None,
        };
        self.create_account(account(
            DEMO_TRAVELER,
            "[演示] 张三",
            Role::Traveler,
            "110108",
            None,
        ))
        .await?;
        self.create_account(account(
            DEMO_REGION_ADMIN,
            "[演示] 赤峰市文旅局",
            Role::RegionAdmin,
            "150400",
            Some("150400"),
        ))
        .await?;
        let home = RegionCode::parse("110105").map_err(AppError::internal)?;
        let agency = self
            .create_agency("[演示] 草原之旅国际旅行社", home, 800)
            .await?;
        let (client_id, client_secret) = self
            .create_api_client(agency.id, "demo integration", None, None)
            .await?;
        Ok(Some(DemoAccounts {
            client_id,
            client_secret,
        }))
    }

    /// Registers an agency with its commission contract.
    pub async fn create_agency(
        &self,
        name: &str,
        home_region: RegionCode,
        commission_bp: u32,
    ) -> Result<Agency, AppError> {
        let name = name.trim();
        shared::text::check_line("name", name, 200, true)?;
        if reference_region(home_region).is_none() {
            return Err(AppError::bad_input(format!("unknown region {home_region}")));
        }
        if commission_bp > 3_000 {
            return Err(AppError::bad_input(COMMISSION_RANGE));
        }
        let agency = Agency {
            id: AgencyId::new(),
            name: name.to_owned(),
            home_region,
            commission_bp,
            suspended: None,
        };
        if !storage::insert_agency(&self.db, &agency).await? {
            return Err(AppError::conflict(format!("an agency named {name} exists")));
        }
        info!(agency = %agency.id, "agency created");
        Ok(agency)
    }

    /// Renames an agency or changes its commission contract (platform
    /// admins; what is left out stays). A new rate is for bookings made
    /// from now on: each booking keeps the rate it was made at.
    pub async fn update_agency(
        &self,
        id: AgencyId,
        name: Option<&str>,
        commission_bp: Option<u32>,
    ) -> Result<Agency, AppError> {
        if name.is_none() && commission_bp.is_none() {
            return Err(AppError::bad_input(
                "nothing to change: give name or commissionBasisPoints (those left out are kept)",
            ));
        }
        let name = name.map(str::trim);
        if let Some(name) = name {
            shared::text::check_line("name", name, 200, true)?;
        }
        if commission_bp.is_some_and(|bp| bp > 3_000) {
            return Err(AppError::bad_input(COMMISSION_RANGE));
        }
        match storage::update_agency(&self.db, id, name, commission_bp).await {
            Ok(Some(agency)) => {
                info!(agency = %agency.id, commission_bp = agency.commission_bp, "agency updated");
                Ok(agency)
            }
            Ok(None) => Err(AppError::not_found(format!("no agency {id}"))),
            Err(e) if shared::db::is_unique_violation(&e) => Err(AppError::conflict(format!(
                "an agency named {} exists",
                name.unwrap_or_default()
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Suspends an agency (platform admins): none of its accounts — staff
    /// and API clients — gets a token until it is reinstated, and the
    /// tokens they hold stop at once (on other gateway replicas within
    /// [`REVOCATION_POLL`]). Its bookings stand: those confirmed are
    /// honoured, those awaiting payment expire unpaid unless it is
    /// reinstated in time. Suspending it again keeps the first time and
    /// reason.
    pub async fn suspend_agency(&self, id: AgencyId, reason: &str) -> Result<Agency, AppError> {
        let reason = reason.trim();
        shared::text::check_line("reason", reason, 500, true)?;
        let txn = self.db.begin().await?;
        // The agency first, then its accounts' locks (`revoke_all`): a
        // token issued under an account's lock before this either reads
        // the agency unsuspended and is revoked here, or waits and reads it
        // suspended.
        let Some(agency) = storage::set_suspension(&txn, id, Some((Utc::now(), reason))).await?
        else {
            return Err(AppError::not_found(format!("no agency {id}")));
        };
        let mut revoked = Vec::new();
        for account in storage::agency_accounts(&txn, id).await? {
            revoked.push((account, storage::revoke_all(&txn, account).await?));
        }
        txn.commit().await?;
        let now = Utc::now();
        for (account, generation) in &revoked {
            self.note_revoked(*account, *generation, now);
        }
        info!(agency = %id, accounts = revoked.len(), "agency suspended");
        Ok(agency)
    }

    /// Reinstates a suspended agency (platform admins): its accounts sign
    /// in again (API clients with their secrets, unless revoked).
    pub async fn reinstate_agency(&self, id: AgencyId) -> Result<Agency, AppError> {
        match storage::set_suspension(&self.db, id, None).await? {
            Some(agency) => {
                info!(agency = %id, "agency reinstated");
                Ok(agency)
            }
            None => Err(AppError::not_found(format!("no agency {id}"))),
        }
    }

    /// An agency.
    pub async fn agency(&self, id: AgencyId) -> Result<Option<Agency>, AppError> {
        Ok(storage::agency(&self.db, id).await?)
    }

    /// Creates an API client for an agency: an AGENCY account of its own and
    /// a secret returned once (only its hash is kept). With `key` (the
    /// caller's idempotency key, scoped), a retry answers the client the key
    /// made, with a new secret while it has not signed in within a day of
    /// its making ([`Self::created_with`]).
    pub async fn create_api_client(
        &self,
        agency: AgencyId,
        name: &str,
        by: Option<AccountId>,
        key: Option<&str>,
    ) -> Result<(String, String), AppError> {
        let name = name.trim();
        shared::text::check_line("name", name, 100, true)?;
        let Some(agency) = storage::agency(&self.db, agency).await? else {
            return Err(AppError::not_found(format!("no agency {agency}")));
        };
        let fingerprint = format!("{}\n{name}", agency.id);
        let client_id = format!("dk_{}", uuid::Uuid::now_v7().simple());
        let secret = random_secret();
        let account = Account {
            id: AccountId::new(),
            email: format!("{client_id}@{CLIENT_DOMAIN}"),
            display_name: format!("{} · {name}", agency.name),
            role: Role::Agency,
            home_region: Some(agency.home_region),
            region_scope: None,
            agency_id: Some(agency.id),
            token_generation: 0,
        };
        let txn = self.db.begin().await?;
        // Credentials outlive the token that asked for them: its role is
        // read again under the caller's lock, as `grant_role` does, so an
        // admin demoted a moment ago (other replicas hear of it within 2 s)
        // leaves no client behind.
        // (None: the platform's own demo seeding.)
        if let Some(by) = by {
            storage::lock_account(&txn, by).await?;
            let still_admin = storage::account_by_id(&txn, by)
                .await?
                .is_some_and(|caller| caller.role == Role::PlatformAdmin);
            if !still_admin {
                return Err(AppError::new(
                    ErrorCode::Forbidden,
                    "only a platform admin creates API clients, and you no longer are one",
                ));
            }
        }
        // Under the caller's lock: copies sent at once wait for the first.
        if let Some(key) = key
            && let Some(made) = storage::api_client_by_create_key(&txn, key).await?
        {
            return self.created_with(txn, made, &fingerprint).await;
        }
        // No password: the account logs in only with the client's secret.
        storage::insert_account(&txn, &account, "").await?;
        storage::insert_api_client(
            &txn,
            &client_id,
            &digest(&secret),
            account.id,
            name,
            key.map(|k| (k, fingerprint.as_str())),
        )
        .await?;
        txn.commit().await?;
        info!(agency = %agency.id, client = %client_id, "API client created");
        Ok((client_id, secret))
    }

    /// `createApiClient` sent again with the key that made `made`: the
    /// same client with a new secret (the first answer's secret, lost with
    /// it, stops working) while the client has never signed in and was
    /// made within [`RESEND_WITHIN`]; CONFLICT naming it once it has
    /// signed in (its secret was delivered) or been revoked;
    /// IDEMPOTENCY_KEY_REUSED with another agency or name.
    async fn created_with(
        &self,
        txn: sea_orm::DatabaseTransaction,
        made: storage::KeyedApiClient,
        fingerprint: &str,
    ) -> Result<(String, String), AppError> {
        let client = made.client;
        let id = &client.client_id;
        if made.fingerprint != fingerprint {
            return Err(AppError::new(
                ErrorCode::IdempotencyKeyReused,
                format!(
                    "this idempotency key made API client {id}, for another agency or name: a \
                     new client needs a key of its own"
                ),
            ));
        }
        // Its sign-ins and its revocation wait on this (`client_token`
        // reads the secret again under the same lock): none slips in with
        // the old secret, and a revocation committed meanwhile is seen.
        storage::lock_account(&txn, client.account_id).await?;
        if storage::api_client(&txn, id)
            .await?
            .is_none_or(|now| now.revoked)
        {
            return Err(AppError::conflict(format!(
                "this idempotency key made API client {id}, revoked since: create another with \
                 a new key"
            )));
        }
        if Utc::now() - client.created_at > RESEND_WITHIN
            || storage::ever_signed_in(&txn, client.account_id).await?
        {
            return Err(AppError::conflict(format!(
                "this idempotency key made API client {id}, which has signed in since or is \
                 over a day old: its secret was delivered then. If it is lost, revoke the \
                 client (revokeApiClient) and create another with a new key"
            )));
        }
        let secret = random_secret();
        storage::set_api_client_secret(&txn, id, &digest(&secret)).await?;
        txn.commit().await?;
        info!(client = %id, "API client's create sent again: a new secret");
        Ok((id.clone(), secret))
    }

    /// A page of agencies, oldest first, with the total.
    pub async fn agencies(
        &self,
        first: u32,
        after: Option<AgencyId>,
    ) -> Result<(Vec<Agency>, bool, u64), AppError> {
        if !(1..=100).contains(&first) {
            return Err(AppError::bad_input(
                "first: ask for 1 to 100 agencies at a time",
            ));
        }
        let (list, more) = storage::agencies(&self.db, first, after).await?;
        Ok((list, more, storage::agency_count(&self.db).await?))
    }

    /// An agency's API clients (never their secrets).
    pub async fn api_clients(&self, agency: AgencyId) -> Result<Vec<storage::ApiClient>, AppError> {
        Ok(storage::api_clients_of(&self.db, agency).await?)
    }

    /// An agency's people: accounts given the AGENCY role for it.
    pub async fn agency_staff(&self, agency: AgencyId) -> Result<Vec<Account>, AppError> {
        Ok(storage::staff_of(&self.db, agency).await?)
    }

    /// Revokes an API client: it gets no more tokens, and its refresh and
    /// access tokens stop working at once (on other gateway replicas
    /// within [`REVOCATION_POLL`]). Revoking twice keeps the first time.
    pub async fn revoke_api_client(&self, client_id: &str) -> Result<storage::ApiClient, AppError> {
        let client_id = client_id.trim();
        let txn = self.db.begin().await?;
        let Some((client, agency)) = storage::api_client_by_id(&txn, client_id).await? else {
            return Err(AppError::not_found(format!("no API client {client_id}")));
        };
        // The account first, as a sign-in and a create sent again take it
        // before the client's row: neither waits on the other in turn.
        storage::lock_account(&txn, client.account_id).await?;
        storage::revoke_api_client(&txn, client_id).await?;
        let generation = storage::revoke_all(&txn, client.account_id).await?;
        let revoked = storage::api_client_by_id(&txn, client_id)
            .await?
            .map(|(c, _)| c)
            .ok_or_else(|| AppError::internal("the API client vanished while revoked"))?;
        txn.commit().await?;
        self.note_revoked(client.account_id, generation, Utc::now());
        info!(client = %client_id, agency = ?agency, "API client revoked");
        Ok(revoked)
    }

    /// Exchanges an API client's credentials for tokens.
    pub async fn client_token(&self, client_id: &str, secret: &str) -> Result<Tokens, AppError> {
        let refused = || unauthenticated("unknown client or wrong secret");
        // Said only to whoever holds the secret: a revoked client is not
        // a typo to look for.
        let revoked = || {
            unauthenticated(
                "this API client was revoked: ask a platform admin for a new one \
                 (createApiClient)",
            )
        };
        let Some(key) = storage::api_client(&self.db, client_id.trim()).await? else {
            return Err(refused());
        };
        // Digests compared in constant time.
        let same: bool = digest(secret)
            .as_bytes()
            .ct_eq(key.secret_hash.as_bytes())
            .into();
        if !same {
            return Err(refused());
        }
        if key.revoked {
            return Err(revoked());
        }
        let account = key.account;
        // Issued under the account's lock, the client looked up again: a
        // revocation committed since the first look refuses it, and one
        // running now waits and then revokes this token too.
        let txn = self.db.begin().await?;
        storage::lock_account(&txn, account).await?;
        match storage::api_client(&txn, client_id.trim()).await? {
            // Its secret too: a create sent again gives a client that has
            // not signed in a new one, under this lock.
            Some(now) if now.revoked => return Err(revoked()),
            Some(now) if now.secret_hash == key.secret_hash => {}
            _ => return Err(refused()),
        }
        let account = storage::account_by_id(&txn, account)
            .await?
            .ok_or_else(refused)?;
        let tokens = self.issue(&txn, account).await?;
        txn.commit().await?;
        Ok(tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hash whose caller went away keeps its turn until it is done.
    #[tokio::test]
    async fn a_dropped_sign_in_keeps_its_hashing_turn_until_its_hash_ends() {
        static TURNS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let running = started.clone();
        let caller = tokio::spawn(hashing_on(&TURNS, move || {
            running.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = wait.recv();
        }));
        while !started.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        caller.abort();
        let _ = caller.await;
        assert_eq!(TURNS.available_permits(), 1, "the running hash holds one");
        go.send(()).expect("the hash is waiting");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while TURNS.available_permits() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the turn never came back"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            normalise_email(" Zhang@Example.CN ").ok().as_deref(),
            Some("zhang@example.cn")
        );
        for bad in [
            "",
            "zhang",
            "@example.cn",
            "zhang@cn",
            "zhang@.cn",
            "a b@example.cn",
        ] {
            assert!(normalise_email(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_password_verifies_against_its_hash_and_nothing_else() {
        let hash = hash_password("correct horse battery".into())
            .await
            .expect("hash");
        assert!(
            verify_password("correct horse battery".into(), Some(hash.clone()))
                .await
                .expect("verified")
        );
        assert!(
            !verify_password("wrong horse battery".into(), Some(hash))
                .await
                .expect("verified")
        );
        assert!(
            !verify_password("correct horse battery".into(), None)
                .await
                .expect("verified")
        );
        assert!(
            hash_password("x".repeat(12))
                .await
                .expect("hash")
                .starts_with("$argon2id$v=19$m=7168,t=5,p=1$")
        );
    }

    #[tokio::test]
    async fn a_hash_stored_with_the_earlier_19_mib_setting_still_verifies() {
        let salt = SaltString::encode_b64(b"sixteen byte salt").expect("salt");
        let old = Argon2::default()
            .hash_password(b"correct horse battery", &salt)
            .expect("hash")
            .to_string();
        assert!(old.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{old}");
        assert!(
            verify_password("correct horse battery".into(), Some(old.clone()))
                .await
                .expect("verified")
        );
        assert!(
            !verify_password("wrong horse battery".into(), Some(old))
                .await
                .expect("verified")
        );
    }
}

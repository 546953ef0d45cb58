//! The catalogue cache: answers of read RPCs that need no principal
//! (search, a homestay, a route, calendars, regions), kept in Redis for a
//! minute and shared by every gateway replica, and in this process's
//! memory in front of Redis (no round trip, no parsing for a hot answer).
//!
//! Invalidation is by version: a cached answer's key carries the version
//! of the catalogue it was read from, and every event that changes what
//! those reads answer — `inventory.catalogue_changed` (a listing, calendar,
//! route or certification), a booking's move to AWAITING_PAYMENT (its hold
//! was granted) and `inventory.hold_released` (availability) — moves this
//! gateway's version to that event's id (time-ordered UUIDv7; the greatest wins, so replicas
//! that saw the same events agree on it). Answers of older versions are
//! never read again and expire. The gateway that carried a change moves
//! its version at once (`schema::changing`, counted apart from the event
//! ids: see [`Version`]); on the others, between a
//! change's commit and its event reaching them (milliseconds), a read may
//! be stale; the hold itself always decides.

use crate::guarded::Redis;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use shared::AppError;
use shared::bus::Bus;
use shared::ids::BookingId;
use shared::rpc::Rpc;
use shared::rpcs::BookingView;
use std::any::Any;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a cached answer lives (bounds staleness if an event is lost).
const TTL_SECONDS: u64 = 60;

/// How long a persisted query is kept (a client registers it again after).
const PERSISTED_SECONDS: u64 = 24 * 3600;
/// Bytes of persisted queries kept in process without Redis (the least
/// used go first).
const PERSISTED_IN_PROCESS: u64 = 16 * 1024 * 1024;
/// Bytes of new persisted queries Redis takes in one window of
/// [`PERSISTED_SECONDS`], from every client together: past it a query
/// still runs when sent whole, it is just not kept (a client registering
/// a new 32 KiB query at every request would fill Redis, ~20 MB a minute
/// from one address at the default rate, for a day each).
pub const PERSISTED_BUDGET: u64 = 64 * 1024 * 1024;
/// Keeps a persisted query within the window's budget: one already kept
/// only lives longer; a new one is counted, and kept if the count stays
/// within it (1), else not (2 the first time the count passes the budget,
/// then 0). KEYS: the query's, the window's count. ARGV: the query, its
/// lifetime in seconds, the budget.
const PERSIST_WITHIN_BUDGET: &str = r"
if redis.call('EXPIRE', KEYS[1], ARGV[2]) == 1 then return 1 end
local used = redis.call('INCRBY', KEYS[2], string.len(ARGV[1]))
if redis.call('TTL', KEYS[2]) < 0 then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
if used - string.len(ARGV[1]) > tonumber(ARGV[3]) then return 0 end
if used > tonumber(ARGV[3]) then return 2 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
";
/// The longest query kept as a persisted one; a longer one still runs when
/// sent whole, it is just not kept.
pub const MAX_PERSISTED_QUERY: usize = 32 * 1024;
/// Rules versions' admissions kept in this process.
const LOCAL_ENTRIES: u64 = 10_000;
/// Bytes of answers (as JSON) kept in this process's memory: weighed, not
/// counted (ten thousand calendars of a year each were gigabytes).
const LOCAL_BYTES: u64 = 64 * 1024 * 1024;
/// The largest answer kept, in either level (as JSON); a larger one is
/// answered, not kept.
const MAX_KEPT_ANSWER: usize = 1024 * 1024;

/// A decoded answer kept in this process: what it weighs (its JSON's
/// bytes) and how long it has left to live — a copy of a Redis entry lives
/// no longer than the entry (a fresh minute for each copy let a replica
/// serve an answer up to two minutes old).
#[derive(Clone)]
struct Local {
    value: Arc<dyn Any + Send + Sync>,
    bytes: u32,
    ttl: Duration,
}

/// Each [`Local`] expires when its own lifetime says.
struct LocalExpiry;

impl moka::Expiry<String, Local> for LocalExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Local,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The cache, or none (no Redis configured: every read goes to the
/// service). It also keeps automatic persisted queries (APQ): in Redis,
/// shared by the replicas, or in process without it.
#[derive(Clone)]
pub struct Cache {
    redis: Option<Redis>,
    prefix: String,
    version: Arc<Mutex<Version>>,
    persisted: moka::sync::Cache<String, Arc<str>>,
    /// Decoded answers by the same versioned keys as in Redis.
    local: moka::future::Cache<String, Local>,
    /// The version of the listings' rules (what a quote refuses as the
    /// request's fault), moved only by `inventory.catalogue_changed` and the
    /// catalogue changes this gateway carried.
    rules: Arc<Mutex<Version>>,
    /// Booking requests inventory's quote found admissible under a rules
    /// version (see [`Cache::admission`]).
    admitted: moka::future::Cache<String, ()>,
    /// Bookings heard (`booking.status_changed`) awaiting payment, with
    /// their view; `None` once one moved on (see [`Cache::payable`]).
    payable: moka::sync::Cache<BookingId, Option<Arc<BookingView>>>,
}

/// Bookings remembered for [`Cache::payable`]: those awaiting payment now
/// (a client pays within minutes of the push).
const PAYABLE_ENTRIES: u64 = 4_096;

/// A version of what the cache answers, the same on the replicas that
/// heard the same events, in whatever order: the greatest event id heard
/// (time-ordered UUIDv7), with the ids heard within [`LATE_WINDOW_MS`]
/// below it — an event stamped before another that was heard first (ids
/// are taken before their commits, deliveries are handled side by side)
/// still moves the version, and replicas agree again once it falls out of
/// the window — and how many changes this gateway carried itself, which
/// set it apart from every other replica (`process`) until it stops. An
/// own change is never stamped with this host's clock, which, compared
/// with the producers' ids, could hide the next event's change if it ran
/// ahead of theirs.
struct Version {
    heard: u128,
    /// Ids heard within the window below `heard`, and their sum.
    recent: std::collections::BTreeSet<u128>,
    sum: u128,
    /// Set apart from the other replicas (random) until the greatest id
    /// passes `salt_until` (ms): from a start until the first event (what
    /// was cached before it is not read), and after events were missed
    /// until the window has passed the missed ones by.
    salt: u128,
    salt_until: u64,
    own: u64,
    process: u64,
}

/// How far below the greatest id heard (by the ids' clocks) an event still
/// moves the version: the cache's lifetime, past which nothing cached
/// before it is read anyway.
const LATE_WINDOW_MS: u64 = TTL_SECONDS * 1000;

/// The milliseconds since the epoch of a UUIDv7 (its first 48 bits).
fn millis(id: u128) -> u64 {
    u64::try_from(id >> 80).unwrap_or(u64::MAX)
}

impl Version {
    fn new() -> Version {
        Version {
            heard: 0,
            recent: std::collections::BTreeSet::new(),
            sum: 0,
            salt: rand::random(),
            salt_until: 0,
            own: 0,
            process: rand::random(),
        }
    }

    fn heard(&mut self, id: uuid::Uuid) {
        let id = id.as_u128();
        self.heard = self.heard.max(id);
        let floor = millis(self.heard).saturating_sub(LATE_WINDOW_MS);
        // A repeated delivery moves nothing: its change was heard.
        if millis(id) >= floor && self.recent.insert(id) {
            self.sum = self.sum.wrapping_add(id);
        }
        while let Some(oldest) = self.recent.first().copied() {
            if millis(oldest) >= floor {
                break;
            }
            self.recent.remove(&oldest);
            self.sum = self.sum.wrapping_sub(oldest);
        }
        if millis(self.heard) > self.salt_until {
            self.salt = 0;
        }
    }

    /// Events may have been missed (up to now, by this host's clock).
    fn missed(&mut self) {
        self.salt = rand::random();
        let now = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
        self.salt_until = now + LATE_WINDOW_MS;
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}.{:032x}", self.heard, self.sum ^ self.salt)?;
        if self.own > 0 {
            write!(f, ".{:016x}.{}", self.process, self.own)?;
        }
        Ok(())
    }
}

impl Cache {
    /// A cache in Redis under `prefix`, or a pass-through without Redis.
    pub fn new(redis: Option<Redis>, prefix: &str) -> Cache {
        Cache {
            redis,
            prefix: format!("{prefix}cache:"),
            version: Arc::new(Mutex::new(Version::new())),
            persisted: moka::sync::Cache::builder()
                .weigher(|hash: &String, query: &Arc<str>| {
                    u32::try_from(hash.len() + query.len()).unwrap_or(u32::MAX)
                })
                .max_capacity(PERSISTED_IN_PROCESS)
                .time_to_live(std::time::Duration::from_secs(PERSISTED_SECONDS))
                .build(),
            local: moka::future::Cache::builder()
                .weigher(|_: &String, answer: &Local| answer.bytes)
                .max_capacity(LOCAL_BYTES)
                .expire_after(LocalExpiry)
                .build(),
            rules: Arc::new(Mutex::new(Version::new())),
            admitted: moka::future::Cache::builder()
                .max_capacity(LOCAL_ENTRIES)
                .time_to_live(Duration::from_secs(TTL_SECONDS))
                .build(),
            payable: moka::sync::Cache::builder()
                .max_capacity(PAYABLE_ENTRIES)
                .time_to_live(Duration::from_secs(30 * 60))
                .build(),
        }
    }

    /// A booking's change was heard: remembered while it awaits payment,
    /// forgotten (and kept from coming back by a late, out-of-order copy
    /// of an earlier change) once it moved on. Works without Redis.
    pub fn heard(&self, view: &BookingView) {
        match view.status.as_str() {
            "PENDING" => {}
            "AWAITING_PAYMENT" => {
                // A later status heard first stays: statuses only move on.
                if !matches!(self.payable.get(&view.id), Some(None)) {
                    self.payable.insert(view.id, Some(Arc::new(view.clone())));
                }
            }
            _ => self.payable.insert(view.id, None),
        }
    }

    /// A booking may have moved without its answer reaching this gateway
    /// (a cancel that committed and timed out): what was heard of it
    /// awaiting payment is not paid on; the next `payBooking` reads it.
    pub fn unsure(&self, id: BookingId) {
        if matches!(self.payable.get(&id), Some(Some(_))) {
            self.payable.invalidate(&id);
        }
    }

    /// The booking as last heard, if it was awaiting payment then and its
    /// hold has not run out: what `payBooking` sends payment without
    /// reading the booking back. A change not heard yet (milliseconds) is
    /// the same race as a change between a read and the capture: payment
    /// captured for a booking that ended is refunded by the saga.
    pub fn payable(&self, id: BookingId) -> Option<Arc<BookingView>> {
        let view = self.payable.get(&id).flatten()?;
        let open = view.expires_at.is_some_and(|t| t > chrono::Utc::now());
        open.then_some(view)
    }

    /// A listing's rules changed (`inventory.catalogue_changed`): the
    /// catalogue moves too.
    pub fn rules_changed(&self, id: uuid::Uuid) {
        self.changed(id);
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        rules.heard(id);
    }

    /// The key under which a booking request of this shape (`what`:
    /// everything the request says that the quote reads) is admitted under
    /// the rules as they are now. Taken before asking the quote, so that a
    /// change meanwhile voids it.
    pub fn admission(&self, what: &str) -> String {
        let rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        format!("{rules}:{what}")
    }

    /// Ok when inventory's quote found a request under `admission`
    /// admissible (no unknown listing, no more travelers than it sleeps):
    /// remembered, or asked now with `quote`. Requests of one shape that
    /// arrive together share one quote (a thousand clients racing for one
    /// room ask it once); its error goes to each of them, and is not kept.
    pub async fn admitted<F>(&self, admission: String, quote: F) -> Result<(), Arc<AppError>>
    where
        F: std::future::Future<Output = Result<(), AppError>>,
    {
        self.admitted.try_get_with(admission, quote).await
    }

    /// The query persisted under its SHA-256 `hash`, if known.
    pub async fn persisted(&self, hash: &str) -> Option<String> {
        let key = format!("{}apq:{hash}", self.prefix);
        match &self.redis {
            Some(redis) => redis
                .run("persisted queries", |mut conn| async move {
                    redis::cmd("GET")
                        .arg(&key)
                        .query_async::<Option<String>>(&mut conn)
                        .await
                })
                .await
                .flatten(),
            None => self.persisted.get(hash).map(|q| q.to_string()),
        }
    }

    /// Keeps `query` under its SHA-256 `hash` (the caller checked it), in
    /// Redis within [`PERSISTED_BUDGET`].
    pub async fn persist(&self, hash: &str, query: &str) {
        let key = format!("{}apq:{hash}", self.prefix);
        let Some(redis) = &self.redis else {
            self.persisted.insert(hash.to_owned(), query.into());
            return;
        };
        let budget = persisted_budget_key(&self.prefix, std::time::SystemTime::now());
        let kept = redis
            .run("persisted queries", |mut conn| async move {
                redis::Script::new(PERSIST_WITHIN_BUDGET)
                    .key(&key)
                    .key(budget)
                    .arg(query)
                    .arg(PERSISTED_SECONDS)
                    .arg(PERSISTED_BUDGET)
                    .invoke_async::<u8>(&mut conn)
                    .await
            })
            .await;
        match kept {
            // Kept, or Redis trouble (logged by the guard): the query runs.
            Some(1) | None => {}
            Some(first) => {
                metrics::counter!("duikou_persisted_queries_refused_total").increment(1);
                if first == 2 {
                    tracing::warn!(
                        budget = PERSISTED_BUDGET,
                        "persisted queries reached their budget for the day: new ones run but are not kept"
                    );
                }
            }
        }
    }

    /// The catalogue changed with the event `id`.
    pub fn changed(&self, id: uuid::Uuid) {
        let mut version = self.version.lock().unwrap_or_else(|p| p.into_inner());
        version.heard(id);
    }

    /// Events may have been missed (the push queue was lost and set up
    /// again): nothing cached before is read, and no booking is taken as
    /// awaiting payment on what a push said.
    pub fn events_missed(&self) {
        for version in [&self.version, &self.rules] {
            version.lock().unwrap_or_else(|p| p.into_inner()).missed();
        }
        self.payable.invalidate_all();
    }

    /// This gateway carried a change of the catalogue (or of a listing's
    /// rules) that the service has committed: what it cached before is
    /// stale now, before the change's event arrives.
    pub fn changed_here(&self) {
        for version in [&self.version, &self.rules] {
            version.lock().unwrap_or_else(|p| p.into_inner()).own += 1;
        }
    }

    /// What every cached answer's key starts with: the contracts' build,
    /// the catalogue version and the day (China time: certifications lapse
    /// and cut-offs pass at midnight with no event). None without Redis:
    /// nothing is cached. Built from other contracts (an older gateway
    /// beside this one in a rolling upgrade), a gateway reads and writes
    /// entries of its own: decoding this one's views it would drop the
    /// fields it does not know — a cancelled departure's cancellation — and
    /// write them back without them. Persisted queries stay shared.
    pub fn scope(&self) -> Option<String> {
        self.redis.as_ref()?;
        let version = self
            .version
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .to_string();
        let today = shared::policy::china_today(chrono::Utc::now());
        Some(format!(
            "{}{}:{version}:{today}",
            self.prefix,
            shared::CONTRACTS
        ))
    }

    fn key<R: Rpc>(&self, request: &R) -> Option<String> {
        let body = serde_json::to_vec(request).ok()?;
        Some(format!(
            "{}:{}:{}",
            self.scope()?,
            R::METHOD,
            hex::encode(Sha256::digest(body))
        ))
    }

    /// `request`'s answer from the cache, or from the service (then cached).
    /// Redis trouble falls back to the service (logged).
    pub async fn call<R>(&self, bus: &dyn Bus, request: &R) -> Result<R::Reply, AppError>
    where
        R: Rpc,
        R::Reply: Serialize + DeserializeOwned + Clone + Sync,
    {
        let (Some(redis), Some(key)) = (&self.redis, self.key(request)) else {
            return shared::bus::call(bus, request).await;
        };
        let fetched = std::sync::atomic::AtomicBool::new(false);
        // One fetch for every request of this key at once (a query writing
        // one search thirty times, a burst after the version moved): the
        // others wait for its answer.
        let kept = self
            .local
            .try_get_with(key.clone(), async {
                fetched.store(true, std::sync::atomic::Ordering::Relaxed);
                self.fetch(redis, &key, bus, request).await
            })
            .await
            .map_err(|e| (*e).clone())?;
        if !fetched.load(std::sync::atomic::Ordering::Relaxed) {
            metrics::counter!("duikou_cache_total", "method" => R::METHOD, "outcome" => "local")
                .increment(1);
        }
        kept.value
            .downcast_ref::<R::Reply>()
            .cloned()
            .ok_or_else(|| AppError::internal("a cached answer of another type"))
    }

    /// `request`'s answer from Redis (with the entry's lifetime left) or
    /// from the service (then written to Redis), to keep in this process.
    async fn fetch<R>(
        &self,
        redis: &Redis,
        key: &str,
        bus: &dyn Bus,
        request: &R,
    ) -> Result<Local, AppError>
    where
        R: Rpc,
        R::Reply: Serialize + DeserializeOwned + Clone + Sync,
    {
        let full = Duration::from_secs(TTL_SECONDS);
        let found = redis
            .run("the catalogue cache", |mut conn| async move {
                redis::pipe()
                    .get(key)
                    .pttl(key)
                    .query_async::<(Option<String>, i64)>(&mut conn)
                    .await
            })
            .await;
        // A miss, or Redis trouble (logged by the guard), asks the service;
        // so does an entry gone between its GET and its PTTL (-2: it
        // expired just then, and would have been kept a whole minute).
        if let Some((Some(hit), left)) = found
            && left != -2
            && let Ok(reply) = serde_json::from_str::<R::Reply>(&hit)
        {
            metrics::counter!("duikou_cache_total", "method" => R::METHOD, "outcome" => "hit")
                .increment(1);
            // -1: no expiry set (never so here).
            let left = u64::try_from(left).map_or(full, Duration::from_millis);
            return Ok(local(reply, hit.len(), left.min(full)));
        }
        metrics::counter!("duikou_cache_total", "method" => R::METHOD, "outcome" => "miss")
            .increment(1);
        let reply = shared::bus::call(bus, request).await?;
        let bytes = match serde_json::to_string(&reply) {
            Ok(body) if body.len() <= MAX_KEPT_ANSWER => {
                let bytes = body.len();
                // Written beside the answer, not before it goes out.
                let (redis, key) = (redis.clone(), key.to_owned());
                tokio::spawn(async move { set_for(&redis, &key, &body, TTL_SECONDS).await });
                bytes
            }
            _ => usize::MAX,
        };
        Ok(local(reply, bytes, full))
    }
}

/// `reply` to keep in this process, weighing `bytes` (past
/// [`MAX_KEPT_ANSWER`] it weighs more than the cache holds: not kept), for
/// `ttl`.
fn local<T: Any + Send + Sync>(reply: T, bytes: usize, ttl: Duration) -> Local {
    let bytes = if bytes > MAX_KEPT_ANSWER {
        u32::MAX
    } else {
        u32::try_from(bytes).unwrap_or(u32::MAX)
    };
    Local {
        value: Arc::new(reply),
        bytes,
        ttl,
    }
}

/// The Redis key counting the bytes of persisted queries kept in the
/// window of [`PERSISTED_SECONDS`] that `at` falls in.
pub fn persisted_budget_key(prefix: &str, at: std::time::SystemTime) -> String {
    let seconds = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{prefix}apq-budget:{}", seconds / PERSISTED_SECONDS)
}

/// `SET key value EX seconds`; a failure is logged by the guard (the cache
/// is only a cache).
async fn set_for(redis: &Redis, key: &str, value: &str, seconds: u64) {
    redis
        .write_behind("the catalogue cache", |mut conn| async move {
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("EX")
                .arg(seconds)
                .query_async::<()>(&mut conn)
                .await
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::{LATE_WINDOW_MS, Version};

    fn awaiting(id: shared::ids::BookingId, status: &str) -> shared::rpcs::BookingView {
        shared::rpcs::BookingView {
            id,
            status: status.into(),
            item: shared::events::HoldItem::Seats {
                departure_id: shared::ids::DepartureId(uuid::Uuid::now_v7()),
                seats: 1,
            },
            travelers: 1,
            total: None,
            listing: None,
            expires_at: Some(chrono::Utc::now() + chrono::Duration::minutes(15)),
            reason: None,
            created_at: chrono::Utc::now(),
            updated_at: None,
            refund_due: None,
            refunded: shared::money::Fen::ZERO,
            history: Vec::new(),
            booker: None,
            commission_bp: 0,
            sponsor_region: None,
        }
    }

    /// A cancel whose answer was lost may have committed: the booking is
    /// not paid on what was heard of it awaiting payment, and a later
    /// status heard before stays (no late copy brings the old view back).
    #[test]
    fn a_booking_unsure_is_read_before_it_is_paid() {
        let cache = super::Cache::new(None, "t");
        let id = shared::ids::BookingId(uuid::Uuid::now_v7());
        cache.heard(&awaiting(id, "AWAITING_PAYMENT"));
        assert!(cache.payable(id).is_some());
        cache.unsure(id);
        assert!(cache.payable(id).is_none(), "read again");
        cache.heard(&awaiting(id, "AWAITING_PAYMENT"));
        assert!(cache.payable(id).is_some(), "heard again");
        cache.heard(&awaiting(id, "CANCELLED"));
        cache.unsure(id);
        cache.heard(&awaiting(id, "AWAITING_PAYMENT"));
        assert!(cache.payable(id).is_none(), "a late copy after the end");
    }

    /// An event id stamped at `ms` (a UUIDv7's first 48 bits), `n` apart.
    fn id(ms: u64, n: u128) -> uuid::Uuid {
        uuid::Uuid::from_u128((u128::from(ms) << 80) | n)
    }

    fn after(events: &[uuid::Uuid]) -> String {
        let mut v = Version::new();
        for e in events {
            v.heard(*e);
        }
        v.to_string()
    }

    #[test]
    fn an_event_heard_late_moves_the_version_and_replicas_agree_in_any_order() {
        let (r, e) = (id(100_000, 1), id(100_005, 2));
        assert_ne!(
            Version::new().to_string(),
            Version::new().to_string(),
            "apart until an event"
        );
        // R stamped before E, committed after it: answers cached after E
        // alone may lack R's change.
        assert_ne!(after(&[e]), after(&[e, r]));
        // Heard in either order, the same version.
        assert_eq!(after(&[e, r]), after(&[r, e]));
        // Heard twice: its change was heard; nothing moves.
        assert_eq!(after(&[e, r, r]), after(&[r, e]));
        // Once R is out of the window below the greatest, replicas that
        // heard it and one that never did agree again.
        let later = id(100_005 + LATE_WINDOW_MS + 1, 3);
        assert_eq!(after(&[e, r, later]), after(&[later]));
    }

    #[test]
    fn replicas_that_each_carried_a_change_key_apart() {
        let (mut a, mut b) = (Version::new(), Version::new());
        for v in [&mut a, &mut b] {
            v.heard(id(7, 0));
            v.own += 1;
        }
        assert_ne!(a.to_string(), b.to_string());
    }

    #[test]
    fn after_missed_events_a_replica_keys_apart_until_the_window_passes() {
        let now = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
        let (mut a, mut b) = (Version::new(), Version::new());
        for v in [&mut a, &mut b] {
            v.heard(id(now, 1));
        }
        a.missed();
        a.heard(id(now + 1, 2));
        b.heard(id(now + 1, 2));
        assert_ne!(a.to_string(), b.to_string());
        let past = id(now + LATE_WINDOW_MS + 1_000, 3);
        a.heard(past);
        b.heard(past);
        assert_eq!(a.to_string(), b.to_string());
    }
}

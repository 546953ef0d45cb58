//! Redis as the gateway uses it — a cache and a shared counter, never a
//! store of record — bounded: every call answers within [`CALL_WITHIN`] or
//! counts as failed, and after a failure Redis is left alone for
//! [`SKIP_FOR`], the gateway going on as without it (each replica counts
//! rate limits alone, caches miss, persisted queries are asked for again).
//! A cache write made beside an answer ([`Redis::write_behind`]) is bounded
//! the same but leaves Redis in use when slow: a large one, queued, is no
//! outage.
//!
//! The client library's connection manager reconnects by itself, but a
//! command sent while it does waits for the whole reconnect (six tries,
//! seconds), and one sent to a hung server for its response timeout: each
//! request's three or four calls made a Redis gone mid-run cost every
//! request seconds, for as long as it was gone.

use redis::aio::ConnectionManager;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long one call may take before it counts as failed (a local Redis
/// answers in well under a millisecond).
pub const CALL_WITHIN: Duration = Duration::from_millis(200);

/// How long Redis is left alone after a call failed.
pub const SKIP_FOR: Duration = Duration::from_secs(5);

/// A Redis connection whose calls are bounded in time and skipped for a
/// while after one failed.
#[derive(Clone)]
pub struct Redis {
    conn: ConnectionManager,
    /// Milliseconds since `start` until which Redis is skipped.
    skip_until: Arc<AtomicU64>,
    /// Failing: the last call made failed (logged once per outage).
    down: Arc<AtomicBool>,
    start: Instant,
}

impl Redis {
    /// Guards `conn`.
    pub fn new(conn: ConnectionManager) -> Redis {
        Redis {
            conn,
            skip_until: Arc::default(),
            down: Arc::default(),
            start: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether Redis is being left alone after a failure.
    pub fn skipped(&self) -> bool {
        self.now() < self.skip_until.load(Ordering::Relaxed)
    }

    /// `call` on a connection, for `what` (logged when it fails): None
    /// while Redis is skipped, or when it failed or took too long (then
    /// Redis is skipped for [`SKIP_FOR`]).
    pub async fn run<T, F, Fut>(&self, what: &str, call: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.bounded(what, call, true).await
    }

    /// As [`Redis::run`], for a write made beside an answer: one that is
    /// only slow (a large value queued behind others) does not leave Redis
    /// alone; one that fails does.
    pub async fn write_behind<F, Fut>(&self, what: &str, call: F)
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<()>>,
    {
        self.bounded(what, call, false).await;
    }

    async fn bounded<T, F, Fut>(&self, what: &str, call: F, slow_trips: bool) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if self.skipped() {
            metrics::counter!("duikou_redis_skipped_total").increment(1);
            return None;
        }
        let why = match tokio::time::timeout(CALL_WITHIN, call(self.conn.clone())).await {
            Ok(Ok(answer)) => {
                // A call sent before another failed may still answer: Redis
                // is said to be back only once it is used again (the log
                // said "failed", "answers again" a dozen times in 100 ms).
                if !self.skipped() && self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!("Redis answers again");
                }
                return Some(answer);
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) if !slow_trips => {
                metrics::counter!("duikou_redis_slow_writes_total").increment(1);
                return None;
            }
            Err(_) => format!("no answer within {} ms", CALL_WITHIN.as_millis()),
        };
        let until = self.now() + u64::try_from(SKIP_FOR.as_millis()).unwrap_or(u64::MAX);
        self.skip_until.fetch_max(until, Ordering::Relaxed);
        metrics::counter!("duikou_redis_failures_total").increment(1);
        // Once per outage in the log, not once per request or window.
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error = %why,
                what,
                skip_seconds = SKIP_FOR.as_secs(),
                "Redis failed: going on without it, trying again every few seconds (each \
                 replica counts rate limits alone, caches miss)"
            );
        }
        None
    }
}

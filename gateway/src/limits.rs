//! Request rate limits per caller: the principal's account when there is a
//! token, the client's IP address otherwise. With Redis configured every
//! gateway replica counts in the same fixed window there; without it each
//! process limits on its own (governor, in memory).

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use redis::aio::ConnectionManager;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// What a caller may send: `limit` requests per `window`.
#[derive(Clone)]
pub enum Limiter {
    /// Counted in Redis, shared by every gateway.
    Redis {
        /// The connection (reconnects by itself).
        conn: ConnectionManager,
        /// Key prefix (isolates deployments and tests).
        prefix: String,
        /// Requests per window.
        limit: u32,
        /// The window.
        window: Duration,
    },
    /// Counted in this process.
    Local(Arc<DefaultKeyedRateLimiter<String>>),
    /// No limit (0 configured).
    Off,
}

impl Limiter {
    /// A limiter of `limit` requests per `window`, in Redis when `redis_url`
    /// is set (connection failures at start are errors).
    pub async fn new(
        redis_url: Option<&str>,
        prefix: &str,
        limit: u32,
        window: Duration,
    ) -> Result<Limiter, redis::RedisError> {
        let Some(burst) = NonZeroU32::new(limit) else {
            return Ok(Limiter::Off);
        };
        let window = window.max(Duration::from_secs(1));
        match redis_url {
            Some(url) => Ok(Limiter::Redis {
                conn: redis::Client::open(url)?.get_connection_manager().await?,
                prefix: format!("{prefix}ratelimit:"),
                limit,
                window,
            }),
            None => {
                let quota = Quota::with_period(window / limit)
                    .unwrap_or_else(|| Quota::per_second(burst))
                    .allow_burst(burst);
                Ok(Limiter::Local(Arc::new(DefaultKeyedRateLimiter::keyed(
                    quota,
                ))))
            }
        }
    }

    /// Ok, or how long `who` must wait. Redis trouble lets requests through
    /// (logged): the limit protects the service, it must not take it down.
    pub async fn check(&self, who: &str) -> Result<(), Duration> {
        match self {
            Limiter::Off => Ok(()),
            Limiter::Local(limiter) => limiter
                .check_key(&who.to_owned())
                .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now())),
            Limiter::Redis {
                conn,
                prefix,
                limit,
                window,
            } => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                let secs = window.as_secs().max(1);
                let slot = now.as_secs() / secs;
                let key = format!("{prefix}{who}:{slot}");
                let mut conn = conn.clone();
                let counted: Result<(i64,), _> = redis::pipe()
                    .atomic()
                    .incr(&key, 1)
                    .expire(&key, i64::try_from(secs * 2).unwrap_or(i64::MAX))
                    .ignore()
                    .query_async(&mut conn)
                    .await;
                match counted {
                    Ok((n,)) if n > i64::from(*limit) => {
                        let ends = (slot + 1) * secs;
                        Err(Duration::from_secs(
                            ends.saturating_sub(now.as_secs()).max(1),
                        ))
                    }
                    Ok(_) => Ok(()),
                    Err(e) => {
                        warn!(error = %e, "rate limit check failed; letting the request through");
                        Ok(())
                    }
                }
            }
        }
    }
}

//! Request rate limits per caller: the principal's account when there is a
//! token, the client's IP address otherwise — and, for logged-in callers,
//! their IP address too, with [`IP_CEILING`] times the limit (many accounts
//! behind one address, but not without bound). With Redis configured every
//! gateway replica counts in the same fixed window there; without it each
//! process limits on its own (governor, in memory).

/// How many callers' worth of requests one IP address may send when its
/// requests carry tokens.
pub const IP_CEILING: u32 = 10;

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
    /// Counted in this process: per caller, and the IP ceiling.
    Local(
        Arc<DefaultKeyedRateLimiter<String>>,
        Arc<DefaultKeyedRateLimiter<String>>,
    ),
    /// No limit (0 configured).
    Off,
}

impl Limiter {
    /// A limiter of `limit` requests per `window`, counted in Redis when a
    /// connection is given.
    pub fn new(
        redis: Option<ConnectionManager>,
        prefix: &str,
        limit: u32,
        window: Duration,
    ) -> Limiter {
        let Some(burst) = NonZeroU32::new(limit) else {
            return Limiter::Off;
        };
        let window = window.max(Duration::from_secs(1));
        match redis {
            Some(conn) => Limiter::Redis {
                conn,
                prefix: format!("{prefix}ratelimit:"),
                limit,
                window,
            },
            None => {
                let quota = |burst: NonZeroU32| {
                    Quota::with_period(window / burst.get())
                        .unwrap_or_else(|| Quota::per_second(burst))
                        .allow_burst(burst)
                };
                let ceiling =
                    burst.saturating_mul(NonZeroU32::new(IP_CEILING).unwrap_or(NonZeroU32::MIN));
                Limiter::Local(
                    Arc::new(DefaultKeyedRateLimiter::keyed(quota(burst))),
                    Arc::new(DefaultKeyedRateLimiter::keyed(quota(ceiling))),
                )
            }
        }
    }

    /// Ok, or how long `who` must wait. Redis trouble lets requests through
    /// (logged): the limit protects the service, it must not take it down.
    pub async fn check(&self, who: &str) -> Result<(), Duration> {
        self.check_times(who, 1).await
    }

    /// The IP ceiling for a logged-in caller's address.
    pub async fn check_ip_ceiling(&self, ip: &str) -> Result<(), Duration> {
        self.check_times(&format!("ceiling:{ip}"), IP_CEILING).await
    }

    async fn check_times(&self, who: &str, times: u32) -> Result<(), Duration> {
        match self {
            Limiter::Off => Ok(()),
            Limiter::Local(caller, ceiling) => {
                let limiter = if times > 1 { ceiling } else { caller };
                limiter
                    .check_key(&who.to_owned())
                    .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
            }
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
                    Ok((n,)) if n > i64::from(*limit) * i64::from(times) => {
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

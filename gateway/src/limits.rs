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
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Whole seconds a refused caller is told to wait: rounded up, so that
/// waiting exactly this long finds room, and at least one.
pub fn wait_seconds(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// What a caller over its limit is told, over HTTP or a socket.
pub fn too_many(wait: Duration) -> String {
    format!("too many requests; try again in {} s", wait_seconds(wait))
}

/// The address a caller is counted under: an IPv4 address as it is; an
/// IPv6 address by its /64, the block one subscriber is given — a client
/// rotating through its own block would otherwise get a new allowance per
/// address.
pub fn caller_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let block = u128::from(v6) & !((1u128 << 64) - 1);
                format!("{}/64", std::net::Ipv6Addr::from(block))
            }
        },
    }
}

/// How many in-memory checks pass between two sweeps of the callers whose
/// allowance is full again (governor keeps every key it has seen).
const SWEEP_EVERY: u64 = 10_000;

/// What a caller may send: `limit` requests per `window`.
#[derive(Clone)]
pub enum Limiter {
    /// Counted in Redis, shared by every gateway.
    Redis {
        /// The connection (reconnects by itself; skipped a while after a
        /// failure).
        conn: crate::guarded::Redis,
        /// Key prefix (isolates deployments and tests).
        prefix: String,
        /// Requests per window.
        limit: u32,
        /// The window.
        window: Duration,
        /// Counted in this process instead while Redis fails (a
        /// [`Limiter::Local`]): the limits stay on, each replica counting
        /// alone.
        meanwhile: Box<Limiter>,
    },
    /// Counted in this process: per caller, and the IP ceiling.
    Local(
        Arc<DefaultKeyedRateLimiter<String>>,
        Arc<DefaultKeyedRateLimiter<String>>,
        Arc<AtomicU64>,
    ),
    /// No limit (0 configured).
    Off,
}

impl Limiter {
    /// A limiter of `limit` requests per `window`, counted in Redis when a
    /// connection is given.
    pub fn new(
        redis: Option<crate::guarded::Redis>,
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
                meanwhile: Box::new(Limiter::new(None, prefix, limit, window)),
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
                    Arc::new(AtomicU64::new(0)),
                )
            }
        }
    }

    /// Ok, or how long `who` must wait. While Redis fails (logged) each
    /// replica counts alone: the limit protects the service, it must not
    /// take it down, nor go off with Redis.
    pub async fn check(&self, who: &str) -> Result<(), Duration> {
        self.check_times(who, 1).await
    }

    /// The IP ceiling for a logged-in caller's address.
    pub async fn check_ip_ceiling(&self, ip: &str) -> Result<(), Duration> {
        self.check_times(&format!("ceiling:{ip}"), IP_CEILING).await
    }

    /// The count in this process ([`Limiter::Local`]; Ok for the others).
    fn check_here(&self, who: &str, times: u32) -> Result<(), Duration> {
        let Limiter::Local(caller, ceiling, checks) = self else {
            return Ok(());
        };
        if checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            for limiter in [caller, ceiling] {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }
        let limiter = if times > 1 { ceiling } else { caller };
        limiter
            .check_key(&who.to_owned())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    async fn check_times(&self, who: &str, times: u32) -> Result<(), Duration> {
        match self {
            Limiter::Off => Ok(()),
            Limiter::Local(..) => self.check_here(who, times),
            Limiter::Redis {
                conn,
                prefix,
                limit,
                window,
                meanwhile,
            } => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                let secs = window.as_secs().max(1);
                let slot = now.as_secs() / secs;
                let key = format!("{prefix}{who}:{slot}");
                let counted = conn
                    .run("the rate limit", |mut conn| async move {
                        redis::pipe()
                            .atomic()
                            .incr(&key, 1)
                            .expire(&key, i64::try_from(secs * 2).unwrap_or(i64::MAX))
                            .ignore()
                            .query_async::<(i64,)>(&mut conn)
                            .await
                    })
                    .await;
                match counted {
                    Some((n,)) if n > i64::from(*limit) * i64::from(times) => {
                        let ends = (slot + 1) * secs;
                        Err(Duration::from_secs(
                            ends.saturating_sub(now.as_secs()).max(1),
                        ))
                    }
                    Some(_) => Ok(()),
                    // Redis trouble (logged by the guard): counted here.
                    None => meanwhile.check_here(who, times),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::caller_ip;

    #[test]
    fn an_ipv6_caller_is_counted_by_its_64_block() {
        let ip = |s: &str| caller_ip(s.parse().expect("an address"));
        assert_eq!(ip("203.0.113.7"), "203.0.113.7");
        assert_eq!(ip("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(ip("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(ip("2001:db8:1:2:bbbb::9"), ip("2001:db8:1:2:aaaa::1"));
        assert_ne!(ip("2001:db8:1:3::1"), ip("2001:db8:1:2::1"));
    }
}

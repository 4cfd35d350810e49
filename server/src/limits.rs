//! Rate limits (governor): per client IP on `/auth/*`, per user on sends (REST and
//! WebSocket together), and per WebSocket session on frames.
//!
//! REST answers say where the client stands with the IETF `RateLimit-Limit`,
//! `RateLimit-Remaining` and `RateLimit-Reset` fields, and a refusal adds `Retry-After`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use courier_engine::{EngineError, UserId};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::{StateInformationMiddleware, StateSnapshot};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, NotUntil, Quota, RateLimiter};

use crate::config::Config;
use crate::error::{ApiError, ErrorCode};
use crate::metrics::Metrics;

type Instant = <DefaultClock as Clock>::Instant;
type KeyedLimiter<K> = DefaultKeyedRateLimiter<K, StateInformationMiddleware>;

/// The server's limiters.
pub struct RateLimits {
    auth: KeyedLimiter<IpAddr>,
    sends: KeyedLimiter<UserId>,
    frames: Quota,
    clock: DefaultClock,
}

/// Where a client stands with one limit, as the `RateLimit-*` header fields say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// Requests allowed in a burst.
    pub limit: u32,
    /// Requests still allowed now.
    pub remaining: u32,
    /// Seconds until the whole burst is available again.
    pub reset_s: u64,
}

impl Standing {
    /// Adds `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let fields = [
            ("ratelimit-limit", u64::from(self.limit)),
            ("ratelimit-remaining", u64::from(self.remaining)),
            ("ratelimit-reset", self.reset_s),
        ];
        for (name, value) in fields {
            headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
        }
    }
}

fn per_second(n: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN))
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN))
}

/// Whole seconds, rounded up.
fn seconds(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis().div_ceil(1000)).unwrap_or(u64::MAX)
}

impl RateLimits {
    /// Limiters with the configured quotas.
    pub fn new(config: &Config) -> Self {
        Self {
            auth: RateLimiter::keyed(per_minute(config.auth_requests_per_minute))
                .with_middleware::<StateInformationMiddleware>(),
            sends: RateLimiter::keyed(per_second(config.sends_per_second))
                .with_middleware::<StateInformationMiddleware>(),
            frames: per_second(config.ws_frames_per_second),
            clock: DefaultClock::default(),
        }
    }

    fn wait(&self, not_until: &NotUntil<Instant>) -> Duration {
        not_until.wait_time_from(self.clock.now())
    }

    /// The standing after an allowed request.
    fn allowed(snapshot: &StateSnapshot) -> Standing {
        let quota = snapshot.quota();
        let limit = quota.burst_size().get();
        let remaining = snapshot.remaining_burst_capacity().min(limit);
        Standing {
            limit,
            remaining,
            reset_s: seconds(quota.replenish_interval() * (limit - remaining)),
        }
    }

    /// The 429 for a refused request, with `Retry-After` and the standing.
    fn refused(&self, not_until: &NotUntil<Instant>) -> ApiError {
        let wait = self.wait(not_until);
        let quota = not_until.quota();
        let limit = quota.burst_size().get();
        ApiError {
            retry_after_s: Some(seconds(wait).max(1)),
            rate_limit: Some(Standing {
                limit,
                remaining: 0,
                // The next request is allowed after `wait`, the whole burst one interval
                // per request later.
                reset_s: seconds(wait + quota.replenish_interval() * (limit - 1)).max(1),
            }),
            ..ApiError::new(ErrorCode::RateLimited, "too many requests")
        }
    }

    /// One request to `/auth/*` from `ip`.
    pub fn check_auth(&self, ip: IpAddr, metrics: &Metrics) -> Result<Standing, ApiError> {
        match self.auth.check_key(&ip) {
            Ok(snapshot) => Ok(Self::allowed(&snapshot)),
            Err(not_until) => {
                metrics.rate_limited.with_label_values(&["auth"]).inc();
                Err(self.refused(&not_until))
            }
        }
    }

    /// One message sent by `user` over REST: the standing, or the 429.
    pub fn check_rest_send(&self, user: UserId, metrics: &Metrics) -> Result<Standing, ApiError> {
        match self.sends.check_key(&user) {
            Ok(snapshot) => Ok(Self::allowed(&snapshot)),
            Err(not_until) => {
                metrics.rate_limited.with_label_values(&["send"]).inc();
                Err(self.refused(&not_until))
            }
        }
    }

    /// One message sent by `user`, over any transport: the same budget as
    /// [`Self::check_rest_send`].
    pub fn check_send(&self, user: UserId, metrics: &Metrics) -> Result<(), EngineError> {
        self.sends.check_key(&user).map(drop).map_err(|not_until| {
            metrics.rate_limited.with_label_values(&["send"]).inc();
            limited(self.wait(&not_until))
        })
    }

    /// A limiter for one socket's frames.
    pub fn frame_limiter(&self) -> DefaultDirectRateLimiter {
        RateLimiter::direct(self.frames)
    }

    /// Checks one frame against a socket's limiter.
    pub fn check_frame(
        &self,
        limiter: &DefaultDirectRateLimiter,
        metrics: &Metrics,
    ) -> Result<(), EngineError> {
        limiter.check().map_err(|not_until| {
            metrics.rate_limited.with_label_values(&["frame"]).inc();
            limited(self.wait(&not_until))
        })
    }

    /// Forgets keys whose limits have fully recovered, so memory follows active clients.
    pub fn forget_idle(&self) {
        self.auth.retain_recent();
        self.sends.retain_recent();
    }
}

fn limited(wait: Duration) -> EngineError {
    let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
    EngineError::RateLimited {
        retry_after_ms: millis,
    }
}

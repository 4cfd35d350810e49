//! Rate limits (governor): per client IP on `/auth/*`, per user on sends (REST and
//! WebSocket together), and per WebSocket session on frames.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use courier_engine::{EngineError, UserId};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::Config;
use crate::metrics::Metrics;

/// The server's limiters.
pub struct RateLimits {
    auth: DefaultKeyedRateLimiter<IpAddr>,
    sends: DefaultKeyedRateLimiter<UserId>,
    frames: Quota,
    clock: DefaultClock,
}

fn per_second(n: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN))
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN))
}

impl RateLimits {
    /// Limiters with the configured quotas.
    pub fn new(config: &Config) -> Self {
        Self {
            auth: RateLimiter::keyed(per_minute(config.auth_requests_per_minute)),
            sends: RateLimiter::keyed(per_second(config.sends_per_second)),
            frames: per_second(config.ws_frames_per_second),
            clock: DefaultClock::default(),
        }
    }

    fn wait(&self, not_until: &governor::NotUntil<<DefaultClock as Clock>::Instant>) -> Duration {
        not_until.wait_time_from(self.clock.now())
    }

    /// One request to `/auth/*` from `ip`.
    pub fn check_auth(&self, ip: IpAddr, metrics: &Metrics) -> Result<(), EngineError> {
        self.auth.check_key(&ip).map_err(|not_until| {
            metrics.rate_limited.with_label_values(&["auth"]).inc();
            limited(self.wait(&not_until))
        })
    }

    /// One message sent by `user`, over any transport.
    pub fn check_send(&self, user: UserId, metrics: &Metrics) -> Result<(), EngineError> {
        self.sends.check_key(&user).map_err(|not_until| {
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

//! Throttles for what strangers can call without an account: logins, sign-ups and token
//! refreshes, counted per client address and (for logins) failures per account, in fixed
//! windows kept in memory. Past a limit the caller gets a 429 with `Retry-After`.
//!
//! Counts are per process: on Lambda each instance counts apart, so an attacker spread over
//! many instances gets that many times the limit (API Gateway's own throttling is the
//! guard in front of them).

use crate::{CoreError, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Limits of the throttled calls (`[limits.throttle]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Throttles {
    /// Login attempts per client address per minute.
    pub logins_per_address_per_minute: u32,
    /// Failed logins per account per 15 minutes; past it, even the right password waits.
    pub failed_logins_per_account: u32,
    /// Sign-ups (vendors and subscribers) per client address per hour.
    pub signups_per_address_per_hour: u32,
    /// Token refreshes per client address per minute.
    pub refreshes_per_address_per_minute: u32,
}

impl Default for Throttles {
    fn default() -> Self {
        Throttles {
            logins_per_address_per_minute: 30,
            failed_logins_per_account: 10,
            signups_per_address_per_hour: 20,
            refreshes_per_address_per_minute: 60,
        }
    }
}

/// What is counted, and over how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counted {
    /// Login attempts from an address.
    Login,
    /// Failed logins of an account.
    FailedLogin,
    /// Sign-ups from an address.
    Signup,
    /// Token refreshes from an address.
    Refresh,
}

impl Counted {
    fn window(self) -> Duration {
        match self {
            Counted::Login | Counted::Refresh => Duration::from_secs(60),
            Counted::FailedLogin => Duration::from_secs(15 * 60),
            Counted::Signup => Duration::from_secs(3600),
        }
    }

    fn limit(self, throttles: &Throttles) -> u32 {
        match self {
            Counted::Login => throttles.logins_per_address_per_minute,
            Counted::FailedLogin => throttles.failed_logins_per_account,
            Counted::Signup => throttles.signups_per_address_per_hour,
            Counted::Refresh => throttles.refreshes_per_address_per_minute,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Counted::Login => "logins_per_address_per_minute",
            Counted::FailedLogin => "failed_logins_per_account",
            Counted::Signup => "signups_per_address_per_hour",
            Counted::Refresh => "refreshes_per_address_per_minute",
        }
    }
}

/// Keys counted at most; past it the oldest windows are dropped first.
const MAX_KEYS: usize = 100_000;

/// The counters.
#[derive(Default)]
pub struct Throttle {
    windows: Mutex<HashMap<(Counted, String), (Timestamp, u32)>>,
}

impl Throttle {
    /// Fails with a 429 when `key` has used up `what`'s limit in its current window.
    pub fn check(
        &self,
        throttles: &Throttles,
        what: Counted,
        key: &str,
        now: Timestamp,
    ) -> Result<(), CoreError> {
        let windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let limit = what.limit(throttles);
        match windows.get(&(what, key.to_owned())) {
            Some((start, n)) if *start + what.window() > now && *n >= limit => {
                Err(CoreError::TooManyRequests {
                    message: format!("over the limit `{}` of {limit}", what.name()),
                    retry_after: (*start + what.window() - now).unsigned_abs(),
                })
            }
            _ => Ok(()),
        }
    }

    /// Counts one `what` for `key`.
    pub fn count(&self, what: Counted, key: &str, now: Timestamp) {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        if windows.len() >= MAX_KEYS {
            windows.retain(|(what, _), (start, _)| *start + what.window() > now);
            if windows.len() >= MAX_KEYS {
                windows.clear();
            }
        }
        let window = windows.entry((what, key.to_owned())).or_insert((now, 0));
        if window.0 + what.window() <= now {
            *window = (now, 0);
        }
        window.1 += 1;
    }

    /// Checks `what` for `key`, then counts it.
    pub fn admit(
        &self,
        throttles: &Throttles,
        what: Counted,
        key: &str,
        now: Timestamp,
    ) -> Result<(), CoreError> {
        self.check(throttles, what, key, now)?;
        self.count(what, key, now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_past_its_limit_waits_for_its_window_to_end() {
        let throttle = Throttle::default();
        let limits = Throttles {
            logins_per_address_per_minute: 2,
            ..Throttles::default()
        };
        let t0 = Timestamp::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(
            throttle
                .admit(&limits, Counted::Login, "10.0.0.1", t0)
                .is_ok()
        );
        assert!(
            throttle
                .admit(&limits, Counted::Login, "10.0.0.1", t0)
                .is_ok()
        );
        let refused = throttle.admit(
            &limits,
            Counted::Login,
            "10.0.0.1",
            t0 + Duration::from_secs(20),
        );
        match refused {
            Err(CoreError::TooManyRequests { retry_after, .. }) => {
                assert_eq!(retry_after, Duration::from_secs(40));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            throttle
                .admit(&limits, Counted::Login, "10.0.0.2", t0)
                .is_ok(),
            "per key"
        );
        assert!(
            throttle
                .admit(&limits, Counted::Signup, "10.0.0.1", t0)
                .is_ok(),
            "per kind"
        );
        let later = t0 + Duration::from_secs(60);
        assert!(
            throttle
                .admit(&limits, Counted::Login, "10.0.0.1", later)
                .is_ok()
        );
    }
}

//! Wrong passwords at the hub's MQTT listener: each login (user and the address it comes from)
//! that failed must wait before its password is checked again — 2 s after the first failure,
//! doubling to 10 minutes — and a login tried sooner is refused unchecked. Without it, a wrong
//! password cost only a second's wait per connection, and 100 connections guessed about 100
//! passwords a second (an outside tester). Keyed by address too, so that someone guessing a
//! sensor's password (its user name is predictable: `<district>/<box>/<sensor>`) from elsewhere
//! does not lock the sensor itself out; a right password clears the login's failures.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The wait after a login's first failure; each further one doubles it.
const FIRST_WAIT: Duration = Duration::from_secs(2);
/// The longest wait.
const LONGEST_WAIT: Duration = Duration::from_secs(600);
/// Logins with failures tracked at most; beyond, those whose wait is over are forgotten.
const LOGINS_TRACKED: usize = 50_000;

/// Every login's failures: how many, and until when its password is not checked.
#[derive(Debug, Default)]
pub struct FailedLogins {
    logins: Mutex<HashMap<(String, IpAddr), (u32, Instant)>>,
}

impl FailedLogins {
    /// Whether `user` from `from` may have its password checked at `now`.
    pub fn may_try(&self, user: &str, from: IpAddr, now: Instant) -> bool {
        let logins = self.logins.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        logins.get(&(user.to_string(), from)).is_none_or(|&(_, until)| now >= until)
    }

    /// The password of `user` from `from` was wrong at `now`.
    pub fn failed(&self, user: &str, from: IpAddr, now: Instant) {
        let mut logins = self.logins.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if logins.len() >= LOGINS_TRACKED {
            logins.retain(|_, (_, until)| *until > now);
        }
        let (failures, until) = logins.entry((user.to_string(), from)).or_insert((0, now));
        *failures = failures.saturating_add(1);
        *until = now + FIRST_WAIT.saturating_mul(1u32 << (*failures - 1).min(16)).min(LONGEST_WAIT);
    }

    /// The password of `user` from `from` was right: its failures are forgotten.
    pub fn succeeded(&self, user: &str, from: IpAddr) {
        self.logins.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&(user.to_string(), from));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_that_keeps_failing_waits_longer_each_time_and_others_are_not_held_up() {
        let logins = FailedLogins::default();
        let (attacker, sensor): (IpAddr, IpAddr) = ("203.0.113.9".parse().unwrap(), "198.51.100.4".parse().unwrap());
        let user = "old-town/east/east-03";
        let start = Instant::now();
        assert!(logins.may_try(user, attacker, start));
        // Guess after guess, each as soon as allowed: 2 s, 4 s, 8 s … up to 10 minutes.
        let mut at = start;
        let mut waits = Vec::new();
        for _ in 0..12 {
            logins.failed(user, attacker, at);
            let mut wait = Duration::ZERO;
            while !logins.may_try(user, attacker, at + wait) {
                wait += Duration::from_millis(500);
            }
            waits.push(wait.as_secs());
            at += wait;
        }
        assert_eq!(waits, [2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600, 600]);
        // 12 guesses in about 37 minutes, where a second's wait per connection allowed thousands.
        assert!(at.duration_since(start) > Duration::from_secs(30 * 60));
        // The sensor itself, from its own address, is not locked out, and a right password from
        // the attacker's address clears that login.
        assert!(logins.may_try(user, sensor, at));
        logins.succeeded(user, attacker);
        assert!(logins.may_try(user, attacker, at));
    }
}

//! Links signed while the box's clock was not set: their expiry is on that clock, so when NTP
//! steps it forward they would expire at once. This maps them through the step.
//!
//! A link's expiry is the signing clock's time plus `link_valid_hours` (see [`crate::links`]).
//! While the clock is not set, every signing notes the expiry it signed and the clock's offset
//! (wall time − the daemon's monotonic time, constant between steps). Once the clock is set the
//! step is measured the way [`crate::store`] re-stamps times: the new offset minus the old. An
//! expiry signed before is then read as `expiry + step` — the link lives its full
//! `link_valid_hours` from when it was really signed, and no longer.
//!
//! The measured steps ([`ClockStep`]) are kept in the store, so a restart after the clock was set
//! still honours the links signed before it. Monotonic time is the process's: links signed by an
//! earlier run that never saw the clock set (restarted or rebooted before NTP) are not mapped and
//! expire as their unset clock says (as the store's times of such a run stay "time unknown").
//!
//! Invariants: an expiry is mapped only if it lies in a range signed by the unset clock and below
//! the first expiry signed after the step (so a link signed after it is never mapped, whichever
//! way the clock stepped); a mapped link expires at most `link_valid_hours` after the step — a
//! link signed by an unset clock never becomes valid for good.

use crate::clock::Clock;
use std::sync::{Arc, Mutex, PoisonError};

/// Offsets closer than this are one clock (the wall clock slews a little between steps).
const SAME_CLOCK_MS: i64 = 2_000;

/// Steps smaller than this move no expiry (link expiries are whole seconds).
const SMALLEST_STEP_MS: i64 = 2_000;

/// Windows of signings kept while the clock is not set; one per step of the unset clock, so a
/// handful at most. Past it, further ones are not noted (their links expire as signed).
const MAX_WINDOWS: usize = 16;

/// A measured step of the wall clock, as links' expiries see it (all in Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockStep {
    /// The range of expiries the unset clock signed.
    pub expires_from: i64,
    pub expires_until: i64,
    /// The earliest expiry a link signed after the step can carry (the wall time then plus
    /// `link_valid_hours`): no expiry at or above it is mapped.
    pub first_expiry_after: i64,
    /// Seconds to add to an expiry in the range.
    pub step_secs: i64,
}

impl ClockStep {
    /// The true expiry of `expires`, if this step covers it.
    fn maps(&self, expires: i64) -> Option<i64> {
        ((self.expires_from..=self.expires_until).contains(&expires) && expires < self.first_expiry_after).then(|| expires + self.step_secs)
    }

    /// The latest true expiry of a link this step maps: past it, it maps nothing still valid.
    pub fn last_true_expiry(&self) -> i64 {
        self.expires_until + self.step_secs
    }
}

/// Signings by the unset clock at one offset.
#[derive(Debug, Clone, Copy)]
struct Window {
    offset_ms: i64,
    expires_from: i64,
    expires_until: i64,
}

#[derive(Debug, Default)]
struct Inner {
    /// Signings since the clock was last seen set.
    unset: Vec<Window>,
    /// Steps measured (or loaded from the store), newest last.
    steps: Vec<ClockStep>,
    /// Steps measured but not yet in the store.
    unsaved: Vec<ClockStep>,
}

/// The link signers' and verifiers' shared view of the clock's steps (clones share it).
#[derive(Debug, Clone, Default)]
pub struct LinkClock(Arc<Mutex<Inner>>);

impl LinkClock {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A link is signed now with `expires` (Unix seconds) on `clock`: noted while the clock is
    /// not set; once it is, the step since is measured first (`valid_secs`: the links' life).
    pub fn signing(&self, clock: &Clock, expires: i64, valid_secs: i64) {
        if clock.synchronized() {
            self.measure(clock, valid_secs);
            return;
        }
        let offset_ms = clock.now() - clock.elapsed_ms();
        let unset = &mut self.inner().unset;
        if let Some(window) = unset.iter_mut().find(|w| (w.offset_ms - offset_ms).abs() <= SAME_CLOCK_MS) {
            window.expires_from = window.expires_from.min(expires);
            window.expires_until = window.expires_until.max(expires);
        } else if unset.len() < MAX_WINDOWS {
            unset.push(Window { offset_ms, expires_from: expires, expires_until: expires });
        }
    }

    /// Once `clock` is set: turns the signings noted before into steps. Cheap when there are none.
    pub fn measure(&self, clock: &Clock, valid_secs: i64) {
        let mut inner = self.inner();
        if inner.unset.is_empty() || !clock.synchronized() {
            return;
        }
        // Read together: the wall time now and the elapsed time now.
        let (now, elapsed) = (clock.now(), clock.elapsed_ms());
        let first_expiry_after = now.div_euclid(1000) + valid_secs;
        let windows = std::mem::take(&mut inner.unset);
        for window in windows {
            let step_ms = now - elapsed - window.offset_ms;
            if step_ms.abs() < SMALLEST_STEP_MS {
                continue;
            }
            let step = ClockStep {
                expires_from: window.expires_from,
                expires_until: window.expires_until,
                first_expiry_after,
                step_secs: (step_ms as f64 / 1000.0).round() as i64,
            };
            tracing::info!(step_secs = step.step_secs, "the clock is set: links signed before it was are read on the true time");
            inner.steps.push(step);
            inner.unsaved.push(step);
        }
    }

    /// The true expiry of a link that says `expires`: mapped through the newest step that covers
    /// it, else as it is.
    pub fn true_expiry(&self, expires: i64) -> i64 {
        self.inner().steps.iter().rev().find_map(|step| step.maps(expires)).unwrap_or(expires)
    }

    /// Steps from the store (an earlier run measured them); those that map nothing still valid
    /// at `now_secs` are left out.
    pub fn load(&self, steps: Vec<ClockStep>, now_secs: i64) {
        let mut inner = self.inner();
        inner.steps = steps.into_iter().filter(|s| s.last_true_expiry() >= now_secs).collect();
    }

    /// The steps measured since the last call, for the store ([`LinkClock::unsaved_back`] if it
    /// could not take them).
    pub fn take_unsaved(&self) -> Vec<ClockStep> {
        std::mem::take(&mut self.inner().unsaved)
    }

    pub fn unsaved_back(&self, steps: Vec<ClockStep>) {
        self.inner().unsaved.extend(steps);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// 2026-11-23T00:00:00Z.
    const TRUE_NOW: i64 = 1_795_392_000_000;
    const DAY_MS: i64 = 86_400_000;
    const VALID: i64 = 3_600;

    /// The box's clock three days behind (not set) and, later, as NTP set it.
    fn clocks() -> (Clock, Clock) {
        let started = tokio::time::Instant::now();
        let behind = Clock::Accelerated { start: TRUE_NOW - 3 * DAY_MS, started, speed: 1.0, synchronized: false };
        let set = Clock::Accelerated { start: TRUE_NOW, started, speed: 1.0, synchronized: true };
        (behind, set)
    }

    fn sign(links: &LinkClock, clock: &Clock) -> i64 {
        let expires = clock.now().div_euclid(1000) + VALID;
        links.signing(clock, expires, VALID);
        expires
    }

    #[tokio::test(start_paused = true)]
    async fn a_link_signed_three_days_behind_lives_its_hour_from_when_it_was_really_signed() {
        let (behind, set) = clocks();
        let links = LinkClock::default();
        let first = sign(&links, &behind);
        tokio::time::advance(Duration::from_secs(60)).await;
        let second = sign(&links, &behind);
        assert_eq!(links.true_expiry(first), first, "nothing is mapped while the clock is not set");

        tokio::time::advance(Duration::from_secs(60)).await;
        links.measure(&set, VALID);
        let three_days = 3 * 86_400;
        assert_eq!((links.true_expiry(first), links.true_expiry(second)), (first + three_days, second + three_days));
        assert_eq!(links.take_unsaved().len(), 1, "one step to keep");
        let after = sign(&links, &set);
        assert_eq!(links.true_expiry(after), after, "a link signed after the step is as it says");
        assert_eq!(links.true_expiry(first - 1), first - 1, "an expiry the unset clock never signed is not mapped");
    }

    #[tokio::test(start_paused = true)]
    async fn a_clock_stepped_back_maps_only_what_no_later_link_can_carry() {
        let started = tokio::time::Instant::now();
        let ahead = Clock::Accelerated { start: TRUE_NOW + 2 * 3_600_000, started, speed: 1.0, synchronized: false };
        let set = Clock::Accelerated { start: TRUE_NOW, started, speed: 1.0, synchronized: true };
        let links = LinkClock::default();
        let early = sign(&links, &ahead);
        tokio::time::advance(Duration::from_secs(3 * 3_600)).await;
        let late = sign(&links, &ahead);
        links.measure(&set, VALID);
        assert_eq!(links.true_expiry(early), early - 7_200, "two hours shorter: its true hour");
        let after = sign(&links, &set);
        assert!(after <= late, "the ranges overlap");
        assert_eq!(links.true_expiry(late), late, "at or above the first expiry signed after the step: not mapped");
        assert_eq!(links.true_expiry(after), after);
    }

    #[tokio::test(start_paused = true)]
    async fn steps_from_the_store_map_links_after_a_restart_until_they_could_map_nothing_valid() {
        let (behind, set) = clocks();
        let links = LinkClock::default();
        let signed = sign(&links, &behind);
        links.measure(&set, VALID);
        let kept = links.take_unsaved();

        let restarted = LinkClock::default();
        restarted.load(kept.clone(), set.now().div_euclid(1000));
        assert_eq!(restarted.true_expiry(signed), signed + 3 * 86_400);
        let later = LinkClock::default();
        later.load(kept, signed + 3 * 86_400 + 1);
        assert_eq!(later.true_expiry(signed), signed, "a step that maps nothing still valid is dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn no_step_no_mapping() {
        let started = tokio::time::Instant::now();
        let unset_but_right = Clock::Accelerated { start: TRUE_NOW, started, speed: 1.0, synchronized: false };
        let set = Clock::Accelerated { start: TRUE_NOW, started, speed: 1.0, synchronized: true };
        let links = LinkClock::default();
        let signed = sign(&links, &unset_but_right);
        links.measure(&set, VALID);
        assert_eq!((links.true_expiry(signed), links.take_unsaved()), (signed, Vec::new()));
    }
}

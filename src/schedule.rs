//! When the daemon runs next, and how it sleeps until then: the manual's scheduling
//! chapter ("Sleep System Architecture", "Smart Sleep Implementation"), pure of I/O but
//! for the [`Clock`].
//!
//! - `sleep_seconds`: the next run starts that long after the previous one ended.
//! - `run_at_time` (`HH:MM`): every day at that wall-clock time in the schedule's zone. On
//!   a day the time does not exist (the clocks jump over it) the run starts at the next
//!   valid instant, the jump itself; on a day it occurs twice it runs once, at the first.
//! - Sleeps are cut into chunks of at most `max_sleep_chunk_seconds`, with a progress line
//!   between chunks. The first chunk takes the remainder, so later lines fall on whole
//!   chunks (the manual's "10800 ... 7200 ... 3600 seconds remaining"), and every chunk is
//!   measured from the clock anew, so the sleeper wakes at the target instant, never a
//!   chunk late, and a clock that jumps (a suspended machine) is caught up with.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::{Date, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};

/// How runs follow each other.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// No schedule: one run (the config sets neither `sleep_seconds` nor `run_at_time`).
    Once,
    /// `sleep_seconds`: the pause between the end of a run and the start of the next.
    Every(Duration),
    /// `run_at_time`: daily at `hour:minute` wall-clock time in `zone`.
    Daily {
        /// Hour, 0 to 23.
        hour: u8,
        /// Minute, 0 to 59.
        minute: u8,
        /// The zone of the wall-clock time (config `timezone`, default the machine's).
        zone: TimeZone,
    },
}

impl Schedule {
    /// The instant the next run starts when the previous one ended at `now`; `None` for
    /// [`Schedule::Once`].
    pub fn next_start(&self, now: Timestamp) -> Option<Timestamp> {
        match self {
            Schedule::Once => None,
            Schedule::Every(pause) => {
                let pause = jiff::SignedDuration::try_from(*pause).unwrap_or(jiff::SignedDuration::MAX);
                Some(now.checked_add(pause).unwrap_or(Timestamp::MAX))
            }
            Schedule::Daily { hour, minute, zone } => {
                let today = now.to_zoned_datetime(zone.clone()).date();
                // Today's time if it is still ahead, else tomorrow's (a day after a jump
                // may hold it twice or not at all; three days always hold one ahead).
                let mut date = today;
                for _ in 0..3 {
                    let at = daily_instant(date, *hour, *minute, zone);
                    if at > now {
                        return Some(at);
                    }
                    date = date.tomorrow().ok()?;
                }
                None
            }
        }
    }

    /// `HH:MM` of a daily schedule.
    pub fn time_of_day(&self) -> Option<String> {
        match self {
            Schedule::Daily { hour, minute, .. } => Some(format!("{hour:02}:{minute:02}")),
            _ => None,
        }
    }
}

/// The instant of `hour:minute` on `date` in `zone`: the earlier of two when the clocks
/// go back over it, the instant of the jump when they go forward over it.
pub fn daily_instant(date: Date, hour: u8, minute: u8, zone: &TimeZone) -> Timestamp {
    let time = Time::new(hour as i8, minute as i8, 0, 0).unwrap_or(Time::midnight());
    let civil = date.to_datetime(time);
    let ambiguous = zone.to_ambiguous_timestamp(civil);
    match ambiguous.offset() {
        AmbiguousOffset::Unambiguous { offset } | AmbiguousOffset::Fold { before: offset, .. } => {
            offset.to_timestamp(civil).unwrap_or(Timestamp::MAX)
        }
        AmbiguousOffset::Gap { after, .. } => {
            // Read with the later offset the time lies before the jump; the zone's next
            // transition from there is the jump, the first instant the day has again.
            let before_jump = after.to_timestamp(civil).unwrap_or(Timestamp::MIN);
            zone.following(before_jump)
                .next()
                .map(|t| t.timestamp())
                .unwrap_or_else(|| ambiguous.compatible().unwrap_or(Timestamp::MAX))
        }
    }
}

/// The length of the next sleep chunk when `remaining` is left and chunks are at most
/// `max_chunk`: the remainder of whole chunks first, then whole chunks. Counted in whole
/// seconds, rounded: 4.99 s with 2 s chunks sleeps 0.99 s, then 2 s and 2 s.
pub fn next_chunk(remaining: Duration, max_chunk: Duration) -> Duration {
    let chunk = max_chunk.as_secs();
    if chunk == 0 || remaining <= max_chunk {
        return remaining;
    }
    let whole = (remaining.as_millis() as u64 + 500) / 1000;
    if whole <= chunk {
        return remaining;
    }
    let rest = whole % chunk;
    let after = if rest == 0 { whole - chunk } else { whole - rest };
    remaining.saturating_sub(Duration::from_secs(after))
}

/// `n` seconds as the manual's progress shows them: `"82800 seconds remaining (23.0 hours)"`.
pub fn remaining_text(remaining: Duration) -> String {
    let secs = remaining.as_secs_f64().round() as u64;
    format!("{secs} seconds remaining ({:.1} hours)", secs as f64 / 3600.0)
}

/// Wall-clock time and sleeping, so that tests control time.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> Timestamp;
    /// Sleeps `d`.
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The machine's clock and tokio's timer.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep(d))
    }
}

/// A clock for tests: time stands still until a sleep moves it on by exactly the time
/// slept (or [`ManualClock::advance`] does); every sleep is recorded.
#[derive(Debug)]
pub struct ManualClock {
    now: std::sync::Mutex<Timestamp>,
    slept: std::sync::Mutex<Vec<Duration>>,
}

impl ManualClock {
    /// A clock that reads `start`.
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock { now: std::sync::Mutex::new(start), slept: std::sync::Mutex::new(Vec::new()) }
    }

    /// Moves the clock on by `d` (time spent in a run).
    pub fn advance(&self, d: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now = now.checked_add(jiff::SignedDuration::try_from(d).unwrap_or_default()).unwrap_or(Timestamp::MAX);
    }

    /// The sleeps so far, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.slept.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        // Time moves when the sleep is first polled, not when it is created (a sleep that
        // loses a `select!` never happened).
        Box::pin(async move {
            self.slept.lock().unwrap_or_else(|p| p.into_inner()).push(d);
            self.advance(d);
            // Let other tasks (a signal, a reload) run as a real sleep would.
            tokio::task::yield_now().await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse::<jiff::ZonedDateTime>().expect("zoned").timestamp()
    }

    fn paris() -> TimeZone {
        TimeZone::get("Europe/Paris").expect("tzdb has Europe/Paris")
    }

    fn daily(hour: u8, minute: u8) -> Schedule {
        Schedule::Daily { hour, minute, zone: paris() }
    }

    #[test]
    fn hourly_runs_an_hour_after_the_previous_ended() {
        let now = at("2026-06-01T10:17:03+02:00[Europe/Paris]");
        let next = Schedule::Every(Duration::from_secs(3600)).next_start(now).unwrap();
        assert_eq!(next, at("2026-06-01T11:17:03+02:00[Europe/Paris]"));
        assert_eq!(Schedule::Once.next_start(now), None);
    }

    #[test]
    fn daily_at_two_runs_today_if_ahead_else_tomorrow() {
        let s = daily(2, 0);
        assert_eq!(
            s.next_start(at("2026-06-01T22:30:00+02:00[Europe/Paris]")).unwrap(),
            at("2026-06-02T02:00:00+02:00[Europe/Paris]")
        );
        assert_eq!(
            s.next_start(at("2026-06-02T01:59:59+02:00[Europe/Paris]")).unwrap(),
            at("2026-06-02T02:00:00+02:00[Europe/Paris]")
        );
        // A run that started at 02:00 and ended at once runs again the next day.
        assert_eq!(
            s.next_start(at("2026-06-02T02:00:00+02:00[Europe/Paris]")).unwrap(),
            at("2026-06-03T02:00:00+02:00[Europe/Paris]")
        );
    }

    /// 29 March 2026 in Paris: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist and
    /// runs at the jump, 01:00 UTC. The next day it is 02:30 CEST again.
    #[test]
    fn spring_forward_day_runs_at_the_jump() {
        let s = daily(2, 30);
        let evening = at("2026-03-28T23:00:00+01:00[Europe/Paris]");
        let next = s.next_start(evening).unwrap();
        assert_eq!(next, "2026-03-29T01:00:00Z".parse::<Timestamp>().unwrap());
        assert_eq!(next.to_zoned_datetime(paris()).time(), Time::constant(3, 0, 0, 0));
        assert_eq!(s.next_start(next).unwrap(), at("2026-03-30T02:30:00+02:00[Europe/Paris]"));
        // 02:00 itself is the jump too; 03:00 exists once.
        assert_eq!(daily(2, 0).next_start(evening).unwrap(), next);
        assert_eq!(daily(3, 0).next_start(evening).unwrap(), next);
        assert_eq!(daily(1, 59).next_start(evening).unwrap(), "2026-03-29T00:59:00Z".parse::<Timestamp>().unwrap());
    }

    /// 25 October 2026 in Paris: 03:00 CEST goes back to 02:00 CET; 02:30 occurs twice and
    /// runs once, at the first (00:30 UTC); after that run the next is the 26th.
    #[test]
    fn fall_back_day_runs_once() {
        let s = daily(2, 30);
        let first = s.next_start(at("2026-10-24T23:00:00+02:00[Europe/Paris]")).unwrap();
        assert_eq!(first, "2026-10-25T00:30:00Z".parse::<Timestamp>().unwrap());
        let after_run = first.checked_add(jiff::SignedDuration::from_mins(5)).unwrap();
        let next = s.next_start(after_run).unwrap();
        assert_eq!(next, at("2026-10-26T02:30:00+01:00[Europe/Paris]"));
        // Woken between the two 02:30s (a daemon started at 02:10 CET): not again that day.
        let between = "2026-10-25T01:10:00Z".parse::<Timestamp>().unwrap();
        assert_eq!(s.next_start(between).unwrap(), next);
        // The first 02:30 comes 24 h after the 24th's; the 26th's 25 h after it.
        let day_before = s.next_start(at("2026-10-23T23:00:00+02:00[Europe/Paris]")).unwrap();
        assert_eq!(first.duration_since(day_before), jiff::SignedDuration::from_hours(24));
        assert_eq!(next.duration_since(first), jiff::SignedDuration::from_hours(25));
    }

    #[test]
    fn chunks_take_the_remainder_first() {
        let hour = Duration::from_secs(3600);
        assert_eq!(next_chunk(Duration::from_secs(86_400), hour), hour);
        assert_eq!(next_chunk(Duration::from_secs(12_600), hour), Duration::from_secs(1800));
        assert_eq!(next_chunk(Duration::from_secs(90), hour), Duration::from_secs(90));
        assert_eq!(next_chunk(Duration::from_millis(3_600_400), hour), Duration::from_millis(3_600_400), "rounded");
        let two = Duration::from_secs(2);
        assert_eq!(next_chunk(Duration::from_millis(4_990), two), Duration::from_millis(990), "the odd second first");
        assert_eq!(next_chunk(Duration::from_millis(4_000), two), two);
        assert_eq!(next_chunk(Duration::from_millis(5_010), two), Duration::from_millis(1_010));
        assert_eq!(remaining_text(Duration::from_secs(82_800)), "82800 seconds remaining (23.0 hours)");
        assert_eq!(remaining_text(Duration::from_millis(10_799_600)), "10800 seconds remaining (3.0 hours)");
    }
}

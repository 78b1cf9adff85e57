//! Cron schedules: five fields in an IANA time zone, and which slots are due.
//!
//! The slot arithmetic is pure ([`due_slot`]) so it is tested on a fake
//! clock; the scheduler records each slot it fires in SQL under a unique key
//! before it submits, so a slot never fires twice, across restarts included.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;

use crate::spec::MissedPolicy;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    zone: Tz,
}

impl Schedule {
    /// Parses five cron fields and a time zone name.
    pub fn parse(expression: &str, zone: &str) -> Result<Schedule, String> {
        let fields = expression.split_whitespace().count();
        if fields != 5 {
            return Err(format!(
                "cron '{expression}' has {fields} fields; write five: minute hour day-of-month month day-of-week"
            ));
        }
        let cron =
            Cron::from_str(expression).map_err(|e| format!("invalid cron '{expression}': {e}"))?;
        let zone: Tz = zone.parse().map_err(|_| {
            format!("unknown time zone '{zone}' (an IANA name such as Europe/Paris)")
        })?;
        Ok(Schedule { cron, zone })
    }

    /// The first slot strictly after `after_us` (µs since the epoch).
    pub fn next_after(&self, after_us: i64) -> Option<i64> {
        let at = self.zone.from_utc_datetime(&to_utc(after_us)?.naive_utc());
        let next = self.cron.find_next_occurrence(&at, false).ok()?;
        Some(next.with_timezone(&Utc).timestamp_micros())
    }
}

fn to_utc(us: i64) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_micros(us)
}

/// The slot to fire at `now_us`, given the last slot fired (or the time the
/// schedule began, when none was), under `policy`; none when nothing is due.
/// A slot is due once `now` reaches it. Of several slots passed since the
/// last one, only the latest can fire, and only under [`MissedPolicy::RunOnce`]
/// unless it is the one slot that just passed.
pub fn due_slot(
    schedule: &Schedule,
    last_us: i64,
    now_us: i64,
    policy: MissedPolicy,
    grace_us: i64,
) -> Option<i64> {
    let first = schedule.next_after(last_us)?;
    if first > now_us {
        return None;
    }
    let mut latest = first;
    while let Some(next) = schedule.next_after(latest) {
        if next > now_us {
            break;
        }
        latest = next;
    }
    let on_time = now_us - latest <= grace_us;
    match policy {
        _ if on_time && latest == first => Some(latest),
        MissedPolicy::RunOnce => Some(latest),
        MissedPolicy::Skip if on_time => Some(latest),
        MissedPolicy::Skip => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000;

    fn at(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_micros()
    }

    #[test]
    fn five_fields_and_a_known_zone() {
        assert!(Schedule::parse("*/5 * * * *", "UTC").is_ok());
        assert!(Schedule::parse("0 * * * * *", "UTC")
            .unwrap_err()
            .contains("6 fields"));
        assert!(Schedule::parse("61 * * * *", "UTC").is_err());
        assert!(Schedule::parse("0 3 * * *", "Mars/Olympus")
            .unwrap_err()
            .contains("time zone"));
    }

    #[test]
    fn slots_follow_the_time_zone() {
        let paris = Schedule::parse("0 3 * * *", "Europe/Paris").unwrap();
        // 03:00 in Paris in winter is 02:00 UTC.
        assert_eq!(
            paris.next_after(at("2026-12-05T00:00:00Z")),
            Some(at("2026-12-05T02:00:00Z"))
        );
    }

    #[test]
    fn a_slot_fires_once_when_reached() {
        let every5 = Schedule::parse("*/5 * * * *", "UTC").unwrap();
        let start = at("2026-12-05T10:01:00Z");
        let slot = at("2026-12-05T10:05:00Z");
        assert_eq!(
            due_slot(&every5, start, slot - 1, MissedPolicy::Skip, MIN),
            None
        );
        assert_eq!(
            due_slot(&every5, start, slot, MissedPolicy::Skip, MIN),
            Some(slot)
        );
        // Once recorded as fired, the same slot is never due again.
        assert_eq!(
            due_slot(&every5, slot, slot + 30_000_000, MissedPolicy::Skip, MIN),
            None
        );
    }

    #[test]
    fn missed_slots_follow_the_policy() {
        let every5 = Schedule::parse("*/5 * * * *", "UTC").unwrap();
        let last = at("2026-12-05T10:00:00Z");
        // Down for an hour: twelve slots passed, the latest at 11:00.
        let now = at("2026-12-05T11:02:00Z");
        assert_eq!(due_slot(&every5, last, now, MissedPolicy::Skip, MIN), None);
        assert_eq!(
            due_slot(&every5, last, now, MissedPolicy::RunOnce, MIN),
            Some(at("2026-12-05T11:00:00Z"))
        );
        // Within the grace period the latest slot is on time, not missed.
        let now = at("2026-12-05T11:00:30Z");
        assert_eq!(
            due_slot(&every5, last, now, MissedPolicy::Skip, MIN),
            Some(at("2026-12-05T11:00:00Z"))
        );
    }
}

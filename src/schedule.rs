//! Cron schedule: parsing and the next firing, as pure functions of time.
//!
//! Standard 5-field expressions (`min hour dom mon dow`) and 6-field ones with
//! seconds in front are accepted; always UTC. Day-of-week numbers are
//! standard cron (0 or 7 = Sunday, 1 = Monday). When both day-of-month and
//! day-of-week are restricted, a day must match both (`0 3 1 * 1`: a Monday
//! the 1st), not either as in Vixie cron.

use chrono::{DateTime, SubsecRound, Utc};

/// A parsed expression.
pub type Schedule = croner::Cron;

/// Parses a 5- or 6-field expression.
pub fn parse(expr: &str) -> Result<Schedule, String> {
    match expr.split_whitespace().count() {
        5 | 6 => {}
        n => {
            return Err(format!(
                "{expr:?} has {n} fields; expected 5 (min hour day month weekday) or 6 (with seconds first)"
            ))
        }
    }
    croner::Cron::new(expr)
        .with_seconds_optional()
        .with_dom_and_dow()
        .parse()
        .map_err(|e| format!("{expr:?} is not a cron expression: {e}"))
}

/// The first firing strictly after `now`. Computed from the clock each time,
/// so a suspended machine or a clock jump yields one catch-up run, not a burst.
/// None when the schedule never fires again.
pub fn next_after(schedule: &Schedule, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    // Firings fall on whole seconds: the first after `now` is the first
    // after the start of its second.
    schedule
        .find_next_occurrence(&now.trunc_subsecs(0), false)
        .ok()
}

/// How long the daemon sleeps before looking at the clock again: until
/// `next`, but never more than `max`. Timers run on the monotonic clock,
/// which stops while a machine is suspended; waking up at least every `max`
/// and re-reading the wall clock bounds how late a run can be.
pub fn sleep_before(
    next: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    max: std::time::Duration,
) -> std::time::Duration {
    match next {
        None => max,
        Some(n) => (n - now).to_std().unwrap_or_default().min(max),
    }
}

/// Whether the firing at `next` is due.
pub fn is_due(next: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    next.is_some_and(|n| now >= n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Weekday};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn five_fields_daily_at_three() {
        let s = parse("0 3 * * *").unwrap();
        assert_eq!(
            next_after(&s, at("2026-01-25T02:59:59Z")).unwrap(),
            at("2026-01-25T03:00:00Z")
        );
        assert_eq!(
            next_after(&s, at("2026-01-25T03:00:00Z")).unwrap(),
            at("2026-01-26T03:00:00Z")
        );
    }

    #[test]
    fn six_fields_with_seconds() {
        let s = parse("*/10 * * * * *").unwrap();
        assert_eq!(
            next_after(&s, at("2026-01-25T00:00:01Z")).unwrap(),
            at("2026-01-25T00:00:10Z")
        );
    }

    #[test]
    fn weekday_numbers_are_standard_cron() {
        // 2026-01-25 is a Sunday.
        let monday = parse("0 3 * * 1").unwrap();
        let n = next_after(&monday, at("2026-01-25T00:00:00Z")).unwrap();
        assert_eq!(n.weekday(), Weekday::Mon);
        for sunday in ["0 3 * * 0", "0 3 * * 7", "0 3 * * SUN"] {
            let n = next_after(&parse(sunday).unwrap(), at("2026-01-24T04:00:00Z")).unwrap();
            assert_eq!(n.weekday(), Weekday::Sun, "{sunday}");
        }
        let weekdays = parse("30 2 * * 1-5").unwrap();
        let n = next_after(&weekdays, at("2026-01-24T00:00:00Z")).unwrap(); // Saturday
        assert_eq!(n, Utc.with_ymd_and_hms(2026, 1, 26, 2, 30, 0).unwrap());
    }

    #[test]
    fn day_of_month_and_weekday_must_both_match() {
        // 2026-06-01 is the first Monday the 1st after 2026-01-25.
        let s = parse("0 3 1 * 1").unwrap();
        let n = next_after(&s, at("2026-01-25T00:00:00Z")).unwrap();
        assert_eq!(n, at("2026-06-01T03:00:00Z"));
        assert_eq!(n.weekday(), Weekday::Mon);
        // Either one alone restricts by itself.
        let firsts = parse("0 3 1 * *").unwrap();
        assert_eq!(
            next_after(&firsts, at("2026-01-25T00:00:00Z")).unwrap(),
            at("2026-02-01T03:00:00Z")
        );
    }

    #[test]
    fn the_next_firing_is_a_whole_second_after_now() {
        let s = parse("0 3 * * *").unwrap();
        let just_before = at("2026-01-25T02:59:59.900Z");
        assert_eq!(
            next_after(&s, just_before).unwrap(),
            at("2026-01-25T03:00:00Z")
        );
        let just_after = at("2026-01-25T03:00:00.100Z");
        assert_eq!(
            next_after(&s, just_after).unwrap(),
            at("2026-01-26T03:00:00Z")
        );
    }

    #[test]
    fn a_schedule_that_never_fires_has_no_next() {
        assert_eq!(
            next_after(&parse("0 0 30 2 *").unwrap(), at("2026-01-25T00:00:00Z")),
            None
        );
    }

    #[test]
    fn a_long_gap_gives_one_next_run_not_a_burst() {
        // After a week asleep, the next firing is the next one from now.
        let s = parse("0 * * * *").unwrap();
        let woke = at("2026-02-01T10:17:00Z");
        assert_eq!(next_after(&s, woke).unwrap(), at("2026-02-01T11:00:00Z"));
    }

    #[test]
    fn sleeps_are_bounded_and_due_is_exact() {
        use std::time::Duration;
        let max = Duration::from_secs(60);
        let next = Some(at("2026-01-25T03:00:00Z"));
        assert_eq!(
            sleep_before(next, at("2026-01-25T02:59:30Z"), max),
            Duration::from_secs(30)
        );
        assert_eq!(sleep_before(next, at("2026-01-25T01:00:00Z"), max), max);
        assert_eq!(
            sleep_before(next, at("2026-01-25T03:00:05Z"), max),
            Duration::ZERO
        );
        assert_eq!(sleep_before(None, at("2026-01-25T03:00:05Z"), max), max);
        assert!(!is_due(next, at("2026-01-25T02:59:59Z")));
        assert!(is_due(next, at("2026-01-25T03:00:00Z")));
        assert!(!is_due(None, at("2026-01-25T03:00:00Z")));
    }

    #[test]
    fn bad_expressions_are_rejected() {
        for e in [
            "",
            "* * *",
            "61 * * * *",
            "0 3 * * 8",
            "0 3 * * mon-fri-sat",
            "a b c d e",
            "@daily",
            "0 0 3 * * * 2026",
        ] {
            assert!(parse(e).is_err(), "{e}");
        }
    }
}

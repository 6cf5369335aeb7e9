//! Cron schedule: parsing and the next firing, as pure functions of time.
//!
//! Standard 5-field expressions (`min hour dom mon dow`) and 6-field ones with
//! seconds in front are accepted; always UTC. Day-of-week numbers follow
//! standard cron (0 or 7 = Sunday, 1 = Monday), not the `cron` crate's own
//! numbering (1 = Sunday), so `0 3 * * 1` means Monday as users expect.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use cron::Schedule;

const DAYS: [&str; 8] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"];

/// Parses a 5- or 6-field expression.
pub fn parse(expr: &str) -> Result<Schedule, String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let mut six: Vec<String> = match fields.len() {
        5 => std::iter::once("0")
            .chain(fields.iter().copied())
            .map(String::from)
            .collect(),
        6 => fields.iter().map(|s| s.to_string()).collect(),
        n => {
            return Err(format!(
                "{expr:?} has {n} fields; expected 5 (min hour day month weekday) or 6 (with seconds first)"
            ))
        }
    };
    six[5] = weekday_names(&six[5])?;
    Schedule::from_str(&six.join(" "))
        .map_err(|e| format!("{expr:?} is not a cron expression: {e}"))
}

/// Rewrites standard day-of-week numbers as names; a number after `/` is a step.
fn weekday_names(field: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut digits = String::new();
    let mut after_slash = false;
    let flush = |digits: &mut String, out: &mut String, after_slash: bool| -> Result<(), String> {
        if digits.is_empty() {
            return Ok(());
        }
        if after_slash {
            out.push_str(digits);
        } else {
            let n: usize = digits
                .parse()
                .map_err(|_| format!("bad weekday {digits:?}"))?;
            let name = DAYS
                .get(n)
                .ok_or_else(|| format!("weekday {n} is out of range 0-7"))?;
            out.push_str(name);
        }
        digits.clear();
        Ok(())
    };
    for c in field.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out, after_slash)?;
            after_slash = c == '/';
            out.push(c);
        }
    }
    flush(&mut digits, &mut out, after_slash)?;
    Ok(out)
}

/// The first firing strictly after `now`. Computed from the clock each time,
/// so a suspended machine or a clock jump yields one catch-up run, not a burst.
pub fn next_after(schedule: &Schedule, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule.after(&now).next()
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
        ] {
            assert!(parse(e).is_err(), "{e}");
        }
    }
}

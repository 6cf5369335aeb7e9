//! Retention: which of our backups to delete, then deleting them.
//!
//! [`plan`] is pure: it sees a listing and a clock and decides. [`apply`]
//! lists, plans, deletes in batches and aborts stale multipart uploads.
//!
//! # Rules
//! Only keys of exactly the backup name shape under the prefix take part
//! (see [`crate::naming`]); anything else is never deleted. A backup's time
//! is the timestamp in its name, never the store's LastModified, which a
//! copy or a migration between buckets resets.
//!
//! A backup is kept when ANY of these keeps it, and deleted otherwise:
//! - `min_count` (BACKUP_RETENTION_MIN_COUNT): the newest N backups. Zero
//!   counts as one: retention never deletes the newest backup.
//! - `days` (BACKUP_RETENTION_DAYS): backups at most N days old (age = now
//!   minus the name's time; exactly N days is kept). 0 keeps everything, and
//!   then nothing is ever deleted, whatever the GFS rules say.
//! - `keep_daily` / `keep_weekly` / `keep_monthly` (BACKUP_KEEP_*): the
//!   newest backup of each of the N most recent UTC days / ISO weeks /
//!   calendar months that have a backup. Periods without a backup do not
//!   count, so a month of failed backups does not use up the daily slots.
//!   Unset or 0: the rule is off.
//!
//! The Railway template's imported backups ([`naming::parse_template`]) are
//! left out entirely (never deleted, not counted for `min_count`) unless
//! BACKUP_RETENTION_INCLUDE_IMPORTED is true; then they are backups like any
//! other, under the same rules.
//!
//! A deletion the store refuses because the object is still locked (S3
//! Object Lock with SUPPORT_OBJECT_LOCK; see [`ObjectStore::locked`]) is not
//! a failure: the backup is kept by [`Rule::Locked`] and the next pass tries
//! again.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};

use crate::config::RetentionSettings;
use crate::error::{JobError, Stage};
use crate::naming;
use crate::storage::{ObjectInfo, ObjectStore};

/// Multipart uploads older than this are abandoned: no backup runs that long
/// between two retention passes, and S3 keeps charging for their parts.
pub const STALE_UPLOAD_AGE: Duration = Duration::from_secs(24 * 3600);

/// DeleteObjects takes at most 1,000 keys.
const DELETE_BATCH: usize = 1000;

/// Why a backup is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    MinCount,
    Days,
    Daily,
    Weekly,
    Monthly,
    /// The store refused the deletion: the object is still locked.
    Locked,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::MinCount => "min count",
            Rule::Days => "days",
            Rule::Daily => "daily",
            Rule::Weekly => "weekly",
            Rule::Monthly => "monthly",
            Rule::Locked => "object lock",
        })
    }
}

/// One of our backups and what the plan decided for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub key: String,
    pub time: DateTime<Utc>,
    pub size: u64,
    /// The rules that keep it; empty for a backup to delete.
    pub kept_by: Vec<Rule>,
}

/// The decision for every backup of ours in a listing, newest first.
/// Keys that are not backups appear in neither list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub keep: Vec<Planned>,
    pub delete: Vec<Planned>,
}

/// A UTC day, ISO week or month as a comparable key.
type PeriodOf = fn(&DateTime<Utc>) -> (i32, u32, u32);

/// Decides what to keep and what to delete. Pure: no I/O, no clock.
pub fn plan(
    objects: &[ObjectInfo],
    prefix: &str,
    now: DateTime<Utc>,
    s: &RetentionSettings,
) -> Plan {
    let all: Vec<Planned> = objects
        .iter()
        .filter_map(|o| {
            let parsed = naming::parse(prefix, &o.key).or_else(|| {
                s.include_imported
                    .then(|| naming::parse_template(prefix, &o.key))
                    .flatten()
            })?;
            Some(Planned {
                key: o.key.clone(),
                time: parsed.time,
                size: o.size,
                kept_by: Vec::new(),
            })
        })
        .collect();
    plan_times(all, now, s)
}

/// [`plan`] of backups already named and timed (base backups use it too).
pub fn plan_times(mut all: Vec<Planned>, now: DateTime<Utc>, s: &RetentionSettings) -> Plan {
    // Newest first; the key breaks ties so the plan never depends on listing order.
    all.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.key.cmp(&a.key)));

    let newest = s.min_count.max(1) as usize;
    for p in all.iter_mut().take(newest) {
        p.kept_by.push(Rule::MinCount);
    }

    let cutoff = now - chrono::Duration::days(i64::from(s.days));
    for p in all.iter_mut() {
        if s.days == 0 || p.time >= cutoff {
            p.kept_by.push(Rule::Days);
        }
    }

    let periods: [(Option<u32>, Rule, PeriodOf); 3] = [
        (s.keep_daily, Rule::Daily, |t| {
            (t.year(), t.month(), t.day())
        }),
        (s.keep_weekly, Rule::Weekly, |t| {
            let w = t.iso_week();
            (w.year(), w.week(), 0)
        }),
        (s.keep_monthly, Rule::Monthly, |t| (t.year(), t.month(), 0)),
    ];
    for (n, rule, period_of) in periods {
        let n = n.unwrap_or(0) as usize;
        let mut seen = HashSet::new();
        for p in all.iter_mut() {
            if seen.len() >= n {
                break;
            }
            // Newest first, so the first backup seen in a period is its newest.
            if seen.insert(period_of(&p.time)) {
                p.kept_by.push(rule);
            }
        }
    }

    let (keep, delete) = all.into_iter().partition(|p| !p.kept_by.is_empty());
    Plan { keep, delete }
}

/// What a retention pass did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Backups deleted (with `dry_run`: that would be deleted), newest first.
    pub deleted: Vec<String>,
    /// Backups whose deletion failed, with the reason. They are still stored.
    pub failed: Vec<(String, String)>,
    /// Backups whose deletion the store refused because they are still
    /// locked, with what holds them: kept, not failed.
    pub locked: Vec<(String, String)>,
    /// Our backups remaining after the pass, and their bytes.
    pub stored_objects: u64,
    pub stored_bytes: u64,
    /// Stale multipart uploads aborted (with `dry_run`: that would be).
    pub aborted_uploads: u64,
    /// Bytes of the deleted backups.
    pub deleted_bytes: u64,
    /// The backups kept and why, newest first.
    pub kept: Vec<Planned>,
    pub dry_run: bool,
}

impl RetentionReport {
    /// The failed deletions as one error, if there were any.
    pub fn error(&self) -> Option<JobError> {
        let (key, why) = self.failed.first()?;
        let more = match self.failed.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        Some(JobError::permanent(
            Stage::Retention,
            format!("cannot delete {key}: {why}{more}"),
        ))
    }
}

/// How [`apply_with`] runs; [`apply`] uses the defaults.
#[derive(Debug, Clone)]
pub struct Options {
    pub dry_run: bool,
    /// Multipart uploads initiated at least this long ago are aborted.
    pub abort_uploads_older_than: Duration,
    /// A key that must be in the listing and is never deleted: the backup
    /// just made. If the listing lacks it, the pass deletes nothing.
    pub protect: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dry_run: false,
            abort_uploads_older_than: STALE_UPLOAD_AGE,
            protect: None,
        }
    }
}

/// Lists, plans and deletes. A listing error deletes nothing and is the
/// `Err`; failed deletions are in `failed` (see [`RetentionReport::error`]).
pub async fn apply(
    storage: &dyn ObjectStore,
    prefix: &str,
    settings: &RetentionSettings,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<RetentionReport, JobError> {
    let opts = Options {
        dry_run,
        ..Options::default()
    };
    apply_with(storage, prefix, settings, now, &opts).await
}

pub async fn apply_with(
    storage: &dyn ObjectStore,
    prefix: &str,
    settings: &RetentionSettings,
    now: DateTime<Utc>,
    opts: &Options,
) -> Result<RetentionReport, JobError> {
    let listing = if settings.include_imported {
        crate::catalog::listing_prefix(prefix)
    } else {
        prefix.to_string()
    };
    let objects = storage
        .list(&listing)
        .await
        .map_err(|e| JobError::storage(Stage::Retention, e))?;
    if let Some(key) = &opts.protect {
        if !objects.iter().any(|o| &o.key == key) {
            return Err(JobError::permanent(
                Stage::Retention,
                format!(
                    "the new backup {key} is not in the listing of {}; deleting nothing",
                    storage.describe()
                ),
            ));
        }
    }
    let mut plan = plan(&objects, prefix, now, settings);
    if let Some(key) = &opts.protect {
        if let Some(i) = plan.delete.iter().position(|p| &p.key == key) {
            let p = plan.delete.remove(i);
            plan.keep.push(p);
            plan.keep
                .sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.key.cmp(&a.key)));
        }
    }

    let mut report = RetentionReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let mut failed_keys = HashSet::new();
    if !opts.dry_run {
        let keys: Vec<String> = plan.delete.iter().map(|p| p.key.clone()).collect();
        for (i, batch) in keys.chunks(DELETE_BATCH).enumerate() {
            tracing::debug!(batch = i + 1, keys = batch.len(), "deleting a batch");
            match storage.delete(batch).await {
                Ok(failed) => report.failed.extend(failed),
                Err(e) => {
                    // The same call would fail for the rest: stop, report them all.
                    let why = e.to_string();
                    for k in &keys[i * DELETE_BATCH..] {
                        report.failed.push((k.clone(), why.clone()));
                    }
                    break;
                }
            }
        }
        // A refusal because the object is locked is no failure: kept.
        for (key, why) in std::mem::take(&mut report.failed) {
            match storage.locked(&key, &why).await {
                Some(hold) => {
                    tracing::info!(object = %key, hold = %hold, "kept: the store refused the deletion because the object is locked");
                    report.locked.push((key, hold));
                }
                None => report.failed.push((key, why)),
            }
        }
        failed_keys = report
            .failed
            .iter()
            .chain(&report.locked)
            .map(|(k, _)| k.clone())
            .collect();
        // Each deleted backup's manifest goes with it (older backups may have
        // none; deleting a missing key is not an error).
        let manifests: Vec<String> = plan
            .delete
            .iter()
            .filter(|p| !failed_keys.contains(&p.key) && naming::parse(prefix, &p.key).is_some())
            .map(|p| crate::manifest::object_name(&p.key))
            .collect();
        for batch in manifests.chunks(DELETE_BATCH) {
            match storage.delete(batch).await {
                Ok(failed) if failed.is_empty() => {}
                Ok(failed) => {
                    tracing::warn!(count = failed.len(), first = %failed[0].0, "cannot delete manifests")
                }
                Err(e) => tracing::warn!(error = %e, "cannot delete manifests"),
            }
        }
    }
    let locked: HashSet<&String> = report.locked.iter().map(|(k, _)| k).collect();
    let mut delete = Vec::new();
    for mut p in plan.delete {
        if locked.contains(&p.key) {
            p.kept_by.push(Rule::Locked);
            plan.keep.push(p);
        } else {
            delete.push(p);
        }
    }
    plan.keep
        .sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.key.cmp(&a.key)));
    for p in delete {
        if failed_keys.contains(&p.key) {
            report.stored_objects += 1;
            report.stored_bytes += p.size;
        } else {
            report.deleted_bytes += p.size;
            report.deleted.push(p.key);
        }
    }
    report.stored_objects += plan.keep.len() as u64;
    report.stored_bytes += plan.keep.iter().map(|p| p.size).sum::<u64>();
    report.kept = plan.keep;

    report.aborted_uploads = abort_stale_uploads(storage, prefix, now, opts).await;
    Ok(report)
}

/// Aborts our abandoned multipart uploads. Best effort: a failure here is
/// logged and never blocks the deletions above.
async fn abort_stale_uploads(
    storage: &dyn ObjectStore,
    prefix: &str,
    now: DateTime<Utc>,
    opts: &Options,
) -> u64 {
    let uploads = match storage.pending_uploads(prefix).await {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list pending multipart uploads");
            return 0;
        }
    };
    let min_age =
        chrono::Duration::from_std(opts.abort_uploads_older_than).unwrap_or(chrono::TimeDelta::MAX);
    let mut aborted = 0;
    for u in uploads {
        // Only uploads of our own backups, and only when we know their age.
        let stale = u.initiated.is_some_and(|t| now - t >= min_age);
        if !stale || naming::parse(prefix, &u.key).is_none() {
            continue;
        }
        if opts.dry_run {
            aborted += 1;
            continue;
        }
        match storage.abort_pending(&u).await {
            Ok(()) => {
                tracing::info!(object = %u.key, "aborted an abandoned multipart upload");
                aborted += 1;
            }
            Err(e) => tracing::warn!(error = %e, "cannot abort an abandoned multipart upload"),
        }
    }
    aborted
}

/// Retention after a successful backup of `backup` (its key is the proof):
/// never deletes that backup, and deletes nothing if the listing lacks it.
/// Logs what it did. `Err` when the pass failed in any way, including a
/// single failed deletion; the backup itself stays a success.
pub async fn after_backup(
    prefix: &str,
    settings: &RetentionSettings,
    storage: &dyn ObjectStore,
    backup: &str,
    now: DateTime<Utc>,
) -> Result<RetentionReport, JobError> {
    let opts = Options {
        protect: Some(backup.to_string()),
        ..Options::default()
    };
    let report = apply_with(storage, prefix, settings, now, &opts).await;
    match &report {
        Ok(r) => {
            for key in &r.deleted {
                tracing::info!(object = %key, "retention deleted an old backup");
            }
            tracing::info!(
                deleted = r.deleted.len(),
                kept = r.stored_objects,
                stored_bytes = r.stored_bytes,
                aborted_uploads = r.aborted_uploads,
                "retention done"
            );
        }
        Err(e) => tracing::error!(stage = %e.stage, error = %e.message, "retention failed"),
    }
    let report = report?;
    if let Some(e) = report.error() {
        tracing::error!(stage = %e.stage, error = %e.message, failed = report.failed.len(), "retention failed");
        return Err(e);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const P: &str = "backup_";

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap()
    }

    fn name(t: DateTime<Utc>) -> String {
        format!("{P}{}.dump.zst", t.format("%Y-%m-%d_%H-%M-%S"))
    }

    fn obj(key: &str) -> ObjectInfo {
        ObjectInfo {
            key: key.to_string(),
            size: 100,
            // Deliberately misleading: age must come from the name.
            last_modified: Some(now()),
        }
    }

    fn days_ago(d: i64) -> DateTime<Utc> {
        now() - chrono::Duration::days(d)
    }

    fn settings(days: u32, min_count: u32) -> RetentionSettings {
        RetentionSettings {
            days,
            min_count,
            keep_daily: None,
            keep_weekly: None,
            keep_monthly: None,
            include_imported: false,
        }
    }

    fn keys(v: &[Planned]) -> Vec<String> {
        v.iter().map(|p| p.key.clone()).collect()
    }

    /// One backup per day, `n` days, the newest `from` days ago.
    fn daily(n: i64, from: i64) -> Vec<ObjectInfo> {
        (0..n).map(|i| obj(&name(days_ago(from + i)))).collect()
    }

    #[test]
    fn empty_listing_plans_nothing() {
        assert_eq!(plan(&[], P, now(), &settings(30, 3)), Plan::default());
    }

    #[test]
    fn exactly_n_days_old_is_kept_a_second_more_is_deleted() {
        let at = name(days_ago(30));
        let older = name(days_ago(30) - chrono::Duration::seconds(1));
        let objs = vec![obj(&name(now())), obj(&at), obj(&older)];
        let p = plan(&objs, P, now(), &settings(30, 1));
        assert_eq!(keys(&p.keep), vec![name(now()), at]);
        assert_eq!(keys(&p.delete), vec![older]);
    }

    #[test]
    fn all_old_min_count_keeps_the_newest_n() {
        let objs = daily(10, 40);
        let p = plan(&objs, P, now(), &settings(30, 3));
        assert_eq!(
            keys(&p.keep),
            vec![name(days_ago(40)), name(days_ago(41)), name(days_ago(42))]
        );
        assert!(p.keep.iter().all(|k| k.kept_by == vec![Rule::MinCount]));
        assert_eq!(p.delete.len(), 7);
    }

    #[test]
    fn min_count_zero_still_keeps_the_newest() {
        let p = plan(&daily(5, 100), P, now(), &settings(1, 0));
        assert_eq!(keys(&p.keep), vec![name(days_ago(100))]);
        assert_eq!(p.delete.len(), 4);
    }

    #[test]
    fn days_zero_keeps_everything_even_with_gfs() {
        let mut s = settings(0, 0);
        s.keep_daily = Some(1);
        let p = plan(&daily(400, 0), P, now(), &s);
        assert_eq!(p.keep.len(), 400);
        assert!(p.delete.is_empty());
    }

    #[test]
    fn min_count_larger_than_the_listing_keeps_all() {
        let p = plan(&daily(3, 100), P, now(), &settings(7, 10));
        assert_eq!(p.keep.len(), 3);
        assert!(p.delete.is_empty());
    }

    #[test]
    fn age_comes_from_the_name_not_last_modified() {
        let mut o = obj(&name(days_ago(90)));
        o.last_modified = Some(now());
        let p = plan(&[obj(&name(now())), o.clone()], P, now(), &settings(30, 1));
        assert_eq!(keys(&p.delete), vec![o.key]);
    }

    #[test]
    fn foreign_and_unparseable_names_are_never_planned() {
        let old = name(days_ago(100));
        let foreign = [
            "notes.txt".to_string(),
            "backup_latest.sql.gz".to_string(),
            format!("{old}.sha256"),
            format!(".{old}.0123456789abcdef.partial"),
            "other/backup_2020-01-01_00-00-00.dump".to_string(),
            "backup_2020-01-01_00-00-00.tar".to_string(),
            "backup_2020-02-30_00-00-00.dump".to_string(),
            "xbackup_2020-01-01_00-00-00.dump".to_string(),
        ];
        let mut objs: Vec<ObjectInfo> = foreign.iter().map(|k| obj(k)).collect();
        objs.push(obj(&name(now())));
        objs.push(obj(&old));
        let p = plan(&objs, P, now(), &settings(30, 1));
        assert_eq!(keys(&p.keep), vec![name(now())]);
        assert_eq!(keys(&p.delete), vec![old]);
    }

    #[test]
    fn other_prefixes_are_not_ours() {
        let objs = vec![
            obj("db1/backup_2020-01-01_00-00-00.dump"),
            obj("db2/backup_2020-01-01_00-00-00.dump"),
            obj("db2/backup_2020-01-02_00-00-00.dump"),
        ];
        let p = plan(&objs, "db2/backup_", now(), &settings(30, 1));
        assert_eq!(keys(&p.keep), vec!["db2/backup_2020-01-02_00-00-00.dump"]);
        assert_eq!(keys(&p.delete), vec!["db2/backup_2020-01-01_00-00-00.dump"]);
    }

    #[test]
    fn every_extension_counts_and_ties_are_ordered_by_key() {
        let t = days_ago(100);
        let ts = t.format("%Y-%m-%d_%H-%M-%S");
        let objs: Vec<ObjectInfo> = ["dump.zst", "dump.gz", "sql.zst", "sql.gz", "dump", "sql"]
            .iter()
            .map(|e| obj(&format!("{P}{ts}.{e}")))
            .collect();
        let p = plan(&objs, P, now(), &settings(30, 2));
        assert_eq!(
            keys(&p.keep),
            vec![format!("{P}{ts}.sql.zst"), format!("{P}{ts}.sql.gz")]
        );
        assert_eq!(p.delete.len(), 4);
        // The listing's order does not change the plan.
        let mut rev = objs.clone();
        rev.reverse();
        assert_eq!(plan(&rev, P, now(), &settings(30, 2)), p);
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day_with_backups() {
        // Four backups a day for ten days, all older than the days rule.
        let objs: Vec<ObjectInfo> = (0..10)
            .flat_map(|d| {
                (0..4).map(move |h| obj(&name(days_ago(40 + d) + chrono::Duration::hours(h))))
            })
            .collect();
        let mut s = settings(30, 1);
        s.keep_daily = Some(3);
        let p = plan(&objs, P, now(), &s);
        let three_h = chrono::Duration::hours(3);
        assert_eq!(
            keys(&p.keep),
            vec![
                name(days_ago(40) + three_h),
                name(days_ago(41) + three_h),
                name(days_ago(42) + three_h)
            ]
        );
        assert_eq!(p.keep[0].kept_by, vec![Rule::MinCount, Rule::Daily]);
        assert_eq!(p.keep[1].kept_by, vec![Rule::Daily]);
    }

    #[test]
    fn gaps_do_not_use_up_daily_slots() {
        // Backups 50, 60 and 70 days ago: keep_daily=2 keeps the two newest days.
        let objs = vec![
            obj(&name(days_ago(50))),
            obj(&name(days_ago(60))),
            obj(&name(days_ago(70))),
        ];
        let mut s = settings(30, 1);
        s.keep_daily = Some(2);
        let p = plan(&objs, P, now(), &s);
        assert_eq!(keys(&p.delete), vec![name(days_ago(70))]);
    }

    #[test]
    fn weekly_uses_iso_weeks() {
        // 2026-01-04 is a Sunday (ISO week 2026-W01); 2026-01-05 is Monday of W02.
        let sun = Utc.with_ymd_and_hms(2026, 1, 4, 3, 0, 0).unwrap();
        let mon = Utc.with_ymd_and_hms(2026, 1, 5, 3, 0, 0).unwrap();
        let sat = Utc.with_ymd_and_hms(2026, 1, 3, 3, 0, 0).unwrap();
        // 2025-12-29 (Monday) is in ISO week 2026-W01 too: the ISO year differs from the calendar one.
        let dec = Utc.with_ymd_and_hms(2025, 12, 29, 3, 0, 0).unwrap();
        let objs: Vec<ObjectInfo> = [mon, sun, sat, dec]
            .iter()
            .map(|t| obj(&name(*t)))
            .collect();
        let mut s = settings(30, 1);
        s.keep_weekly = Some(2);
        let p = plan(&objs, P, now(), &s);
        assert_eq!(keys(&p.keep), vec![name(mon), name(sun)]);
        assert_eq!(keys(&p.delete), vec![name(sat), name(dec)]);
    }

    #[test]
    fn monthly_keeps_the_newest_of_each_month() {
        let objs: Vec<ObjectInfo> = (1..=4)
            .flat_map(|m| {
                [1, 28].map(|d| obj(&name(Utc.with_ymd_and_hms(2025, m, d, 3, 0, 0).unwrap())))
            })
            .collect();
        let mut s = settings(30, 1);
        s.keep_monthly = Some(3);
        let p = plan(&objs, P, now(), &s);
        let t = |m, d| name(Utc.with_ymd_and_hms(2025, m, d, 3, 0, 0).unwrap());
        assert_eq!(keys(&p.keep), vec![t(4, 28), t(3, 28), t(2, 28)]);
        assert_eq!(p.delete.len(), 5);
    }

    #[test]
    fn imported_backups_are_never_planned_unless_included() {
        let old = "backup-2025-01-01T05-00-00-123Z.tar.gz";
        let new = "backup-2026-03-15T05-00-00-000Z.tar.gz";
        let mut objs = vec![obj(old), obj(new)];
        objs.extend(daily(5, 40));
        let s = settings(30, 1);
        let p = plan(&objs, P, now(), &s);
        // Off: not deleted, and not counted either (the newest own backup
        // is kept by min_count even though an imported one is newer).
        let planned: Vec<String> = keys(&p.keep).into_iter().chain(keys(&p.delete)).collect();
        assert!(
            !planned.iter().any(|k| k.ends_with(".tar.gz")),
            "{planned:?}"
        );
        assert_eq!(p.keep.len(), 1);
        let mut s = s;
        s.include_imported = true;
        let p = plan(&objs, P, now(), &s);
        assert_eq!(keys(&p.keep), vec![new.to_string()]);
        assert!(keys(&p.delete).contains(&old.to_string()));
        assert_eq!(p.delete.len(), 6);
    }

    #[test]
    fn gfs_rules_overlap_and_any_rule_keeps() {
        // One backup a day for 120 days, newest today.
        let objs = daily(120, 0);
        let s = RetentionSettings {
            days: 7,
            min_count: 3,
            keep_daily: Some(10),
            keep_weekly: Some(6),
            keep_monthly: Some(4),
            include_imported: false,
        };
        let p = plan(&objs, P, now(), &s);
        let expect_keep: HashSet<String> = {
            let mut k = HashSet::new();
            // days: ages 0..=7; daily: ages 0..=9 (covers min count too).
            for d in 0..10 {
                k.insert(name(days_ago(d)));
            }
            // weekly: the newest of each of the 6 newest ISO weeks. now() is
            // Sunday 2026-03-15, so each week's newest is a Sunday.
            for w in 0..6 {
                k.insert(name(days_ago(7 * w)));
            }
            // monthly: the newest of March (today), Feb 28, Jan 31, Dec 31.
            for t in [(2026, 2, 28), (2026, 1, 31), (2025, 12, 31)] {
                let d = Utc.with_ymd_and_hms(t.0, t.1, t.2, 12, 0, 0).unwrap();
                k.insert(name(d));
            }
            k
        };
        let kept: HashSet<String> = keys(&p.keep).into_iter().collect();
        assert_eq!(kept, expect_keep);
        assert_eq!(p.keep.len() + p.delete.len(), 120);
        // Today is kept by every rule at once.
        let today = &p.keep[0];
        assert_eq!(
            today.kept_by,
            vec![
                Rule::MinCount,
                Rule::Days,
                Rule::Daily,
                Rule::Weekly,
                Rule::Monthly
            ]
        );
        assert!(p.delete.iter().all(|d| d.kept_by.is_empty()));
    }

    #[test]
    fn zero_gfs_counts_are_off() {
        let mut s = settings(30, 1);
        s.keep_daily = Some(0);
        s.keep_weekly = Some(0);
        s.keep_monthly = Some(0);
        let p = plan(&daily(5, 100), P, now(), &s);
        assert_eq!(p.keep.len(), 1);
    }

    #[test]
    fn future_names_count_as_recent() {
        // A clock running ahead must not make retention delete today's backup.
        let objs = vec![
            obj(&name(now() + chrono::Duration::days(2))),
            obj(&name(now())),
        ];
        let p = plan(&objs, P, now(), &settings(30, 1));
        assert_eq!(p.keep.len(), 2);
    }

    #[test]
    fn report_error_names_the_first_failure() {
        let mut r = RetentionReport::default();
        assert!(r.error().is_none());
        r.failed = vec![
            ("a".into(), "AccessDenied".into()),
            ("b".into(), "x".into()),
        ];
        let e = r.error().unwrap();
        assert_eq!(e.stage, Stage::Retention);
        assert_eq!(e.message, "cannot delete a: AccessDenied (and 1 more)");
    }

    // ---- the pass against a store: memory, with faults injected ----------

    use crate::storage::faulty::{Faulty, Op};
    use crate::storage::memory::MemoryStore;
    use crate::storage::{ObjectMeta, ObjectStore};

    /// Ten daily backups with manifests, and a foreign object.
    fn stocked() -> (Faulty<MemoryStore>, Vec<String>) {
        let m = MemoryStore::new();
        let backups: Vec<String> = (0..10).map(|d| name(days_ago(d))).collect();
        for k in &backups {
            m.insert(k, vec![0u8; 100], ObjectMeta::default(), now());
            m.insert(
                &crate::manifest::object_name(k),
                b"{}".to_vec(),
                ObjectMeta::default(),
                now(),
            );
        }
        m.insert(
            "backup_notes.txt",
            b"mine".to_vec(),
            ObjectMeta::default(),
            now(),
        );
        (Faulty::new(m), backups)
    }

    async fn pass(store: &dyn ObjectStore, opts: &Options) -> Result<RetentionReport, JobError> {
        apply_with(store, P, &settings(5, 2), now(), opts).await
    }

    #[tokio::test]
    async fn a_pass_deletes_old_backups_with_their_manifests_and_nothing_foreign() {
        let (s, backups) = stocked();
        let r = pass(&s, &Options::default()).await.unwrap();
        assert_eq!(r.deleted, backups[6..].to_vec());
        let left = s.inner().keys();
        for k in &backups[6..] {
            assert!(!left.contains(k) && !left.contains(&crate::manifest::object_name(k)));
        }
        for k in &backups[..6] {
            assert!(left.contains(k) && left.contains(&crate::manifest::object_name(k)));
        }
        assert!(left.contains(&"backup_notes.txt".to_string()));
        assert_eq!((r.stored_objects, r.stored_bytes), (6, 600));
    }

    #[tokio::test]
    async fn locked_objects_are_kept_not_failed() {
        let (s, backups) = stocked();
        let until = Utc::now() + chrono::Duration::days(1);
        s.inner().lock_until(&backups[7], until);
        s.inner().lock_until(&backups[8], until);
        let r = pass(&s, &Options::default()).await.unwrap();
        assert!(r.failed.is_empty() && r.error().is_none(), "{:?}", r.failed);
        assert_eq!(r.deleted, vec![backups[6].clone(), backups[9].clone()]);
        let locked: Vec<&String> = r.locked.iter().map(|(k, _)| k).collect();
        assert_eq!(locked, vec![&backups[7], &backups[8]]);
        assert!(r.locked[0].1.starts_with("locked until"), "{:?}", r.locked);
        let k7 = r.kept.iter().find(|p| p.key == backups[7]).unwrap();
        assert_eq!(k7.kept_by, vec![Rule::Locked]);
        assert_eq!(r.stored_objects, 8);
        let left = s.inner().keys();
        for k in &backups[7..9] {
            assert!(left.contains(k) && left.contains(&crate::manifest::object_name(k)));
        }
        // A refusal that is not a lock stays a failure.
        let m = MemoryStore::new();
        m.insert(&backups[9], vec![0u8; 1], ObjectMeta::default(), now());
        assert_eq!(m.locked(&backups[9], "AccessDenied").await, None);
    }

    #[tokio::test]
    async fn dry_run_deletes_nothing() {
        let (s, _) = stocked();
        let before = s.inner().keys();
        let opts = Options {
            dry_run: true,
            ..Options::default()
        };
        let r = pass(&s, &opts).await.unwrap();
        assert_eq!(r.deleted.len(), 4);
        assert_eq!(s.inner().keys(), before);
        assert_eq!(s.calls(Op::Delete), 0);
    }

    #[tokio::test]
    async fn a_listing_failure_deletes_nothing() {
        let (s, _) = stocked();
        let before = s.inner().keys();
        s.fail_nth(Op::List, 1, true);
        let e = pass(&s, &Options::default()).await.unwrap_err();
        assert_eq!(e.stage, Stage::Retention);
        assert!(e.is_retryable(), "{e}");
        assert_eq!(s.inner().keys(), before);
    }

    #[tokio::test]
    async fn a_failed_deletion_is_reported_and_its_backups_still_count_as_stored() {
        let (s, backups) = stocked();
        s.fail_nth(Op::Delete, 1, false);
        let r = pass(&s, &Options::default()).await.unwrap();
        assert!(r.deleted.is_empty());
        assert_eq!(r.failed.len(), 4);
        assert_eq!(r.stored_objects, 10);
        let e = r.error().expect("a failed pass");
        assert_eq!(e.stage, Stage::Retention);
        assert!(e.message.contains("injected"), "{e}");
        // Nothing was deleted, manifests included.
        for k in &backups {
            assert!(s.inner().keys().contains(&crate::manifest::object_name(k)));
        }
    }

    #[tokio::test]
    async fn the_new_backup_is_protected_and_must_be_listed() {
        let (s, backups) = stocked();
        let missing = Options {
            protect: Some(name(now() + chrono::Duration::hours(1))),
            ..Options::default()
        };
        let before = s.inner().keys();
        let e = pass(&s, &missing).await.unwrap_err();
        assert!(e.message.contains("not in the listing"), "{e}");
        assert_eq!(s.inner().keys(), before);
        // Listed, it is kept even when the plan would delete it.
        let old = Options {
            protect: Some(backups[9].clone()),
            ..Options::default()
        };
        let r = pass(&s, &old).await.unwrap();
        assert!(!r.deleted.contains(&backups[9]));
        assert!(s.inner().keys().contains(&backups[9]));
    }

    #[tokio::test]
    async fn stale_uploads_of_our_backups_are_aborted_others_left() {
        let (s, _) = stocked();
        let mut ours = s.create(&name(days_ago(3))).await.unwrap();
        ours.write_part(bytes::Bytes::from_static(b"x"))
            .await
            .unwrap();
        let _theirs = s.create("other/thing.bin").await.unwrap();
        // Two days later, both uploads are stale; only ours is ours.
        let later = Utc::now() + chrono::Duration::days(2);
        let r = apply_with(&s, P, &settings(0, 1), later, &Options::default())
            .await
            .unwrap();
        assert_eq!(r.aborted_uploads, 1);
        let pending = s.pending_uploads("").await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].key, "other/thing.bin");
    }
}

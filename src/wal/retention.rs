//! Retention of base backups and WAL. Base backups follow the same rules as
//! dumps (BACKUP_RETENTION_DAYS, _MIN_COUNT, BACKUP_KEEP_*); WAL is kept
//! from the start of the oldest base backup left, so every kept base
//! backup recovers to now. Never less: a base backup that could not be
//! deleted still holds its WAL, and with no base backup nothing of the WAL
//! is deleted. History files are tiny and always kept.

use chrono::{DateTime, Utc};

use super::base::BaseInfo;
use super::{Segment, StoredWal, WalObject};
use crate::config::RetentionSettings;
use crate::retention::{plan_times, Planned};

/// Base backups to delete, by key, newest first.
pub fn plan_bases(bases: &[BaseInfo], now: DateTime<Utc>, s: &RetentionSettings) -> Vec<String> {
    let all = bases
        .iter()
        .map(|b| Planned {
            key: b.base.key.clone(),
            time: b.base.time,
            size: b.base.size,
            kept_by: Vec::new(),
        })
        .collect();
    plan_times(all, now, s)
        .delete
        .into_iter()
        .map(|p| p.key)
        .collect()
}

/// WAL objects no remaining base backup needs: segments (complete or
/// partial) before the oldest remaining base backup's start, and partials
/// superseded by their completed segment or a longer partial.
pub fn plan_wal(remaining: &[BaseInfo], wal: &[StoredWal]) -> Vec<String> {
    let mut out = Vec::new();
    let oldest = remaining.iter().map(|b| b.start_segment().number).min();
    let seg_size = remaining
        .first()
        .map(|b| b.seg_size)
        .unwrap_or(super::DEFAULT_SEGMENT_SIZE);
    let completed: std::collections::BTreeSet<&str> = wal
        .iter()
        .filter_map(|w| match &w.object {
            WalObject::Segment(s) => Some(s.as_str()),
            _ => None,
        })
        .collect();
    let newest_partial = |seg: &str| {
        wal.iter()
            .filter_map(|w| match &w.object {
                WalObject::Partial(s, off) if s == seg => Some(*off),
                _ => None,
            })
            .max()
    };
    for w in wal {
        let (name, superseded) = match &w.object {
            WalObject::History(_) => continue,
            WalObject::Segment(s) => (s, false),
            WalObject::Partial(s, off) => (
                s,
                completed.contains(s.as_str()) || newest_partial(s).is_some_and(|n| n > *off),
            ),
        };
        let old = match (oldest, Segment::parse(name, seg_size)) {
            (Some(o), Some(seg)) => seg.number < o,
            _ => false,
        };
        if old || superseded {
            out.push(w.key.clone());
        }
    }
    out
}

/// What a pass over base backups and WAL did (or would do).
#[derive(Debug, Clone, Default)]
pub struct Pruned {
    pub bases_deleted: Vec<String>,
    pub wal_deleted: Vec<String>,
    /// The base backups left, oldest first.
    pub bases_left: Vec<BaseInfo>,
    /// Deletes the store refused, with why.
    pub failed: Vec<(String, String)>,
}

/// Applies [`plan_bases`], then [`plan_wal`] over the base backups that are
/// really gone: one that could not be deleted keeps its WAL.
pub async fn apply(
    store: &dyn crate::storage::ObjectStore,
    prefix: &str,
    settings: &RetentionSettings,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<Pruned, crate::error::JobError> {
    use crate::error::{JobError, Stage};
    let stage = Stage::Retention;
    let bases = super::base::list(store, prefix, stage).await?;
    let mut out = Pruned::default();
    let doomed = plan_bases(&bases, now, settings);
    if !dry_run && !doomed.is_empty() {
        out.failed = store
            .delete(&doomed)
            .await
            .map_err(|e| JobError::storage(stage, e))?;
    }
    out.bases_deleted = doomed
        .iter()
        .filter(|k| !out.failed.iter().any(|(f, _)| f == *k))
        .cloned()
        .collect();
    out.bases_left = bases
        .into_iter()
        .filter(|b| !out.bases_deleted.contains(&b.base.key))
        .collect();
    let listing = store
        .list(&super::wal_prefix(prefix))
        .await
        .map_err(|e| JobError::storage(stage, e))?;
    let wal = super::select_wal(prefix, &listing);
    let doomed = plan_wal(&out.bases_left, &wal);
    if !dry_run && !doomed.is_empty() {
        let failed = store
            .delete(&doomed)
            .await
            .map_err(|e| JobError::storage(stage, e))?;
        out.wal_deleted = doomed
            .iter()
            .filter(|k| !failed.iter().any(|(f, _)| f == *k))
            .cloned()
            .collect();
        out.failed.extend(failed);
    } else {
        out.wal_deleted = doomed;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::base::Base;
    use crate::wal::Lsn;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn base(day: u32, start_seg: u64) -> BaseInfo {
        let time = at(&format!("2026-11-{day:02}T03:00:00Z"));
        BaseInfo {
            base: Base {
                key: format!("p/base/2026-11-{day:02}_03-00-00.tar.zst"),
                time,
                size: 10,
                encrypted: false,
            },
            start: Lsn(start_seg * super::super::DEFAULT_SEGMENT_SIZE + 40),
            stop: Lsn(start_seg * super::super::DEFAULT_SEGMENT_SIZE + 4000),
            timeline: 1,
            finished: time + chrono::Duration::minutes(1),
            sha256: String::new(),
            seg_size: super::super::DEFAULT_SEGMENT_SIZE,
        }
    }

    fn wal(keys: &[&str]) -> Vec<StoredWal> {
        crate::wal::listing("p/", keys)
    }

    fn settings(days: u32, min: u32) -> RetentionSettings {
        RetentionSettings {
            days,
            min_count: min,
            keep_daily: None,
            keep_weekly: None,
            keep_monthly: None,
            include_imported: false,
        }
    }

    #[test]
    fn base_backups_follow_the_dump_rules() {
        let bases = vec![base(1, 2), base(10, 20), base(29, 40)];
        let del = plan_bases(&bases, at("2026-11-30T12:00:00Z"), &settings(7, 1));
        assert_eq!(
            del,
            vec![
                "p/base/2026-11-10_03-00-00.tar.zst",
                "p/base/2026-11-01_03-00-00.tar.zst"
            ]
        );
        // min count keeps them all.
        assert!(plan_bases(&bases, at("2026-11-30T12:00:00Z"), &settings(7, 3)).is_empty());
    }

    #[test]
    fn wal_is_kept_from_the_oldest_remaining_base_backup() {
        let w = wal(&[
            "00000001.history.zst",
            "000000010000000000000013.zst",
            "000000010000000000000014.zst",
            "000000010000000000000015.partial.00001000.zst",
            "000000010000000000000015.zst",
            "000000010000000000000016.partial.00001000.zst",
            "000000010000000000000016.partial.00002000.zst",
        ]);
        let del = plan_wal(&[base(10, 0x14), base(29, 0x16)], &w);
        assert_eq!(
            del,
            vec![
                "p/wal/000000010000000000000013.zst",
                "p/wal/000000010000000000000015.partial.00001000.zst",
                "p/wal/000000010000000000000016.partial.00001000.zst",
            ]
        );
    }

    #[test]
    fn without_a_base_backup_no_segment_is_deleted() {
        let w = wal(&[
            "000000010000000000000001.zst",
            "000000010000000000000002.zst",
        ]);
        assert!(plan_wal(&[], &w).is_empty());
    }

    #[test]
    fn the_start_segment_of_the_oldest_base_is_itself_kept() {
        let w = wal(&[
            "000000010000000000000013.zst",
            "000000010000000000000014.zst",
        ]);
        assert_eq!(
            plan_wal(&[base(1, 0x14)], &w),
            vec!["p/wal/000000010000000000000013.zst"]
        );
    }
}

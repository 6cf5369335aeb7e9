//! Physical backups: WAL segments streamed into the store, base backups,
//! and restoring a cluster to a point in time.
//!
//! Layout below the prefix (cluster-wide, so one per server whatever
//! BACKUP_DATABASES says):
//! - `wal/<segment>.zst[.age]`: a completed segment, e.g.
//!   `wal/000000010000000000000003.zst`; the timeline is the first 8 hex
//!   digits of the segment name;
//! - `wal/<segment>.partial.<offset>.zst[.age]`: the segment in progress as
//!   far as `offset` (8 hex digits, bytes into the segment). A newer one is
//!   stored before the older is deleted, so one is always there;
//! - `wal/<timeline>.history.zst[.age]`: timeline history files;
//! - `base/<YYYY-MM-DD_HH-MM-SS>.tar.zst[.age]`: `pg_basebackup -Ft`
//!   output with its backup manifest; the WAL positions ride in the object's
//!   metadata.
//!
//! This module holds the pure part: names and WAL positions.

pub mod archiver;
pub mod base;
pub mod fetch;
pub mod pitr;
pub mod prefetch;
pub mod record;
pub mod retention;

use crate::crypto;

/// WAL segments are 16 MiB unless the cluster was initialised otherwise;
/// pg_receivewal and pg_basebackup read the real size from the server.
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;

pub const WAL_DIR: &str = "wal/";
pub const BASE_DIR: &str = "base/";

pub fn wal_prefix(prefix: &str) -> String {
    format!("{prefix}{WAL_DIR}")
}

pub fn base_prefix(prefix: &str) -> String {
    format!("{prefix}{BASE_DIR}")
}

/// A WAL position, `X/Y` in PostgreSQL's spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    pub fn parse(s: &str) -> Option<Lsn> {
        let (hi, lo) = s.trim().split_once('/')?;
        if hi.is_empty() || lo.is_empty() || hi.len() > 8 || lo.len() > 8 {
            return None;
        }
        let hi = u64::from_str_radix(hi, 16).ok()?;
        let lo = u64::from_str_radix(lo, 16).ok()?;
        Some(Lsn((hi << 32) | lo))
    }
}

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// A segment: its timeline and number (the LSN of its start divided by the
/// segment size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Segment {
    pub timeline: u32,
    pub number: u64,
}

impl Segment {
    /// The segment holding `lsn`.
    pub fn of(timeline: u32, lsn: Lsn, seg_size: u64) -> Segment {
        Segment {
            timeline,
            number: lsn.0 / seg_size,
        }
    }

    /// `TTTTTTTTXXXXXXXXYYYYYYYY`, as PostgreSQL names the file.
    pub fn name(&self, seg_size: u64) -> String {
        let per_id = 0x1_0000_0000 / seg_size;
        format!(
            "{:08X}{:08X}{:08X}",
            self.timeline,
            self.number / per_id,
            self.number % per_id
        )
    }

    pub fn parse(name: &str, seg_size: u64) -> Option<Segment> {
        if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let timeline = u32::from_str_radix(&name[..8], 16).ok()?;
        let log = u64::from_str_radix(&name[8..16], 16).ok()?;
        let seg = u64::from_str_radix(&name[16..], 16).ok()?;
        let per_id = 0x1_0000_0000 / seg_size;
        if seg >= per_id {
            return None;
        }
        Some(Segment {
            timeline,
            number: log * per_id + seg,
        })
    }

    pub fn start(&self, seg_size: u64) -> Lsn {
        Lsn(self.number * seg_size)
    }

    pub fn end(&self, seg_size: u64) -> Lsn {
        Lsn((self.number + 1) * seg_size)
    }
}

/// What a stored WAL object is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalObject {
    /// A completed segment, by its file name.
    Segment(String),
    /// The segment in progress, this many bytes into it.
    Partial(String, u32),
    /// `<timeline>.history`.
    History(String),
}

impl WalObject {
    /// The object's key (without `.age`).
    pub fn key(&self, prefix: &str) -> String {
        let dir = wal_prefix(prefix);
        match self {
            WalObject::Segment(s) => format!("{dir}{s}.zst"),
            WalObject::Partial(s, off) => format!("{dir}{s}.partial.{off:08X}.zst"),
            WalObject::History(h) => format!("{dir}{h}.zst"),
        }
    }
}

/// A stored WAL object: what it is, whether encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWal {
    pub key: String,
    pub object: WalObject,
    pub encrypted: bool,
    pub size: u64,
}

/// Parses a key under `wal_prefix(prefix)`; None for anything else.
pub fn parse_wal_key(prefix: &str, key: &str) -> Option<(WalObject, bool)> {
    let rest = key.strip_prefix(&wal_prefix(prefix))?;
    let (rest, encrypted) = match rest.strip_suffix(crypto::SUFFIX) {
        Some(r) => (r, true),
        None => (rest, false),
    };
    let rest = rest.strip_suffix(".zst")?;
    if let Some(h) = rest.strip_suffix(".history") {
        if h.len() == 8 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Some((WalObject::History(rest.to_string()), encrypted));
        }
        return None;
    }
    if let Some((seg, off)) = rest.split_once(".partial.") {
        if is_segment_name(seg) && off.len() == 8 {
            let off = u32::from_str_radix(off, 16).ok()?;
            return Some((WalObject::Partial(seg.to_string(), off), encrypted));
        }
        return None;
    }
    is_segment_name(rest).then(|| (WalObject::Segment(rest.to_string()), encrypted))
}

pub fn is_segment_name(s: &str) -> bool {
    s.len() == 24 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F'))
}

pub fn is_history_name(s: &str) -> bool {
    s.len() == 16
        && s.ends_with(".history")
        && s[..8]
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F'))
}

/// The stored WAL objects of a listing, in WAL order (segments by name,
/// a segment's partials after it by offset).
pub fn select_wal(prefix: &str, objects: &[crate::storage::ObjectInfo]) -> Vec<StoredWal> {
    let mut out: Vec<StoredWal> = objects
        .iter()
        .filter_map(|o| {
            let (object, encrypted) = parse_wal_key(prefix, &o.key)?;
            Some(StoredWal {
                key: o.key.clone(),
                object,
                encrypted,
                size: o.size,
            })
        })
        .collect();
    out.sort_by_key(|w| order_key(&w.object));
    out
}

fn order_key(o: &WalObject) -> (String, u8, u32) {
    match o {
        WalObject::History(h) => (h.clone(), 0, 0),
        WalObject::Segment(s) => (s.clone(), 2, 0),
        WalObject::Partial(s, off) => (s.clone(), 1, *off),
    }
}

/// How far the stored WAL reaches: the end of the newest completed segment,
/// or of the newest partial beyond it. Segments are compared by number, so
/// a new timeline's first segment continues its parent's.
pub fn stored_end(wal: &[StoredWal], seg_size: u64) -> Option<(Segment, Lsn)> {
    let mut best: Option<(Segment, Lsn)> = None;
    for w in wal {
        let (seg, end) = match &w.object {
            WalObject::Segment(s) => {
                let Some(seg) = Segment::parse(s, seg_size) else {
                    continue;
                };
                (seg, seg.end(seg_size))
            }
            WalObject::Partial(s, off) => {
                let Some(seg) = Segment::parse(s, seg_size) else {
                    continue;
                };
                (seg, Lsn(seg.start(seg_size).0 + u64::from(*off)))
            }
            WalObject::History(_) => continue,
        };
        if best.is_none_or(|(_, e)| end > e) {
            best = Some((seg, end));
        }
    }
    best
}

/// The first segment, at or after `from`, that is stored neither complete
/// nor as a partial: where replay from `from` must stop. The numbers are
/// compared whatever the timeline, the newest timeline winning.
pub fn first_gap(wal: &[StoredWal], from: Segment, seg_size: u64) -> u64 {
    let have: std::collections::BTreeSet<u64> = wal
        .iter()
        .filter_map(|w| match &w.object {
            WalObject::Segment(s) | WalObject::Partial(s, _) => Segment::parse(s, seg_size),
            WalObject::History(_) => None,
        })
        .filter(|s| s.timeline >= from.timeline)
        .map(|s| s.number)
        .collect();
    let mut n = from.number;
    while have.contains(&n) {
        n += 1;
    }
    n
}

/// A listing of `keys` below `<prefix>wal/`, for tests.
#[cfg(test)]
pub(crate) fn listing(prefix: &str, keys: &[&str]) -> Vec<StoredWal> {
    let objs: Vec<crate::storage::ObjectInfo> = keys
        .iter()
        .map(|k| crate::storage::ObjectInfo {
            key: format!("{}{k}", wal_prefix(prefix)),
            size: 1,
            last_modified: None,
        })
        .collect();
    select_wal(prefix, &objs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = DEFAULT_SEGMENT_SIZE;

    #[test]
    fn lsns_parse_and_print_as_postgresql_does() {
        let l = Lsn::parse("16/B374D848").unwrap();
        assert_eq!(l.0, 0x16_B374_D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert_eq!(Lsn::parse("0/0"), Some(Lsn(0)));
        assert_eq!(Lsn::parse("x/1"), None);
        assert_eq!(Lsn::parse("1"), None);
        assert_eq!(Lsn::parse("123456789/0"), None);
    }

    #[test]
    fn segment_names_match_postgresql() {
        // pg_walfile_name('0/3000060') on timeline 1.
        let s = Segment::of(1, Lsn::parse("0/3000060").unwrap(), SEG);
        assert_eq!(s.name(SEG), "000000010000000000000003");
        // 256 segments of 16 MiB per "log id".
        let s = Segment::of(2, Lsn::parse("16/B374D848").unwrap(), SEG);
        assert_eq!(s.name(SEG), "0000000200000016000000B3");
        assert_eq!(Segment::parse("0000000200000016000000B3", SEG), Some(s));
        assert_eq!(s.start(SEG), Lsn::parse("16/B3000000").unwrap());
        assert_eq!(s.end(SEG), Lsn::parse("16/B4000000").unwrap());
        assert_eq!(Segment::parse("000000010000000000000100", SEG), None);
        assert_eq!(Segment::parse("00000001000000000000000", SEG), None);
        // 64 MiB segments: 64 per log id.
        let big = 64 << 20;
        assert_eq!(
            Segment::of(1, Lsn::parse("1/4000000").unwrap(), big).name(big),
            "000000010000000100000001"
        );
    }

    #[test]
    fn wal_keys_round_trip_and_nothing_else_parses() {
        let p = "backup_";
        for o in [
            WalObject::Segment("000000010000000000000003".into()),
            WalObject::Partial("000000010000000000000004".into(), 0x00A1_2000),
            WalObject::History("00000002.history".into()),
        ] {
            let k = o.key(p);
            assert_eq!(parse_wal_key(p, &k), Some((o.clone(), false)));
            assert_eq!(parse_wal_key(p, &format!("{k}.age")), Some((o, true)));
        }
        for k in [
            "backup_wal/000000010000000000000003",
            "backup_wal/000000010000000000000003.gz",
            "backup_wal/00000001000000000000000g.zst",
            "backup_wal/000000010000000000000003.partial.zst",
            "backup_wal/000000010000000000000003.partial.1.zst",
            "backup_wal/0000002.history.zst",
            "backup_2026-01-25_03-00-00.dump.zst",
            "other/wal/000000010000000000000003.zst",
        ] {
            assert_eq!(parse_wal_key(p, k), None, "{k}");
        }
    }

    fn listing(keys: &[&str]) -> Vec<StoredWal> {
        super::listing("p/", keys)
    }

    #[test]
    fn the_stored_end_is_the_newest_segment_or_partial() {
        let w = listing(&[
            "000000010000000000000002.zst",
            "000000010000000000000003.zst",
            "000000010000000000000004.partial.00001000.zst",
            "000000010000000000000004.partial.00800000.zst",
            "00000002.history.zst",
        ]);
        assert_eq!(w.len(), 5);
        assert!(w
            .iter()
            .any(|x| x.object == WalObject::History("00000002.history".into())));
        // A segment's partials come before it, shortest first.
        let names: Vec<&str> = w.iter().map(|x| x.key.as_str()).collect();
        let pos = |k: &str| names.iter().position(|n| n.ends_with(k)).unwrap();
        assert!(pos("04.partial.00001000.zst") < pos("04.partial.00800000.zst"));
        assert!(pos("03.zst") < pos("04.partial.00001000.zst"));
        assert_eq!(
            stored_end(&w, SEG).unwrap().1,
            Lsn::parse("0/4800000").unwrap()
        );
        let w = listing(&[
            "000000010000000000000002.zst",
            "000000010000000000000003.partial.00001000.zst",
            "000000010000000000000003.zst",
        ]);
        assert_eq!(
            stored_end(&w, SEG).unwrap().1,
            Lsn::parse("0/4000000").unwrap()
        );
        assert_eq!(stored_end(&[], SEG), None);
    }

    #[test]
    fn replay_stops_at_the_first_missing_segment() {
        let w = listing(&[
            "000000010000000000000002.zst",
            "000000010000000000000003.zst",
            "000000010000000000000005.zst",
        ]);
        let from = Segment::parse("000000010000000000000002", SEG).unwrap();
        assert_eq!(first_gap(&w, from, SEG), 4);
        // A promoted timeline continues its parent's numbers.
        let w = listing(&[
            "000000010000000000000002.zst",
            "000000020000000000000003.partial.00000100.zst",
        ]);
        assert_eq!(first_gap(&w, from, SEG), 4);
    }
}

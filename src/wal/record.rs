//! Reads just enough of a WAL segment to know where its valid records end
//! and when its transactions ended. Both drive point-in-time recovery: a
//! partial segment is stored up to its last complete record (what follows
//! may be half written), and PostgreSQL 13+ refuses a recovery target time
//! later than the last commit it can replay, so the recovery window ends at
//! the last commit or abort found here.
//!
//! The format is PostgreSQL 15's (`access/xlog_internal.h`,
//! `access/xlogrecord.h`, `access/xact.h`): pages with a short header (a
//! long one first in the segment), records MAXALIGNed, headers and bodies
//! free to span pages, each record checked by its CRC-32C and its link to
//! the previous one. The first bad, torn or zero record is the end.

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XactEnd {
    pub lsn: u64,
    pub time: DateTime<Utc>,
    pub commit: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// LSN of the segment's first byte (from the long page header).
    pub start_lsn: u64,
    /// LSN just past the last valid record (== start_lsn when none).
    pub end_lsn: u64,
    /// Commit/abort records in order.
    pub xact_ends: Vec<XactEnd>,
    /// The last record was an XLOG_SWITCH (the rest of the segment is unused).
    pub switched: bool,
    pub timeline: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError(pub String);

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScanError {}

/// XLOG_PAGE_MAGIC of PostgreSQL 15.
const PAGE_MAGIC_15: u16 = 0xD110;
const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
const XLP_LONG_HEADER: u16 = 0x0002;
const SHORT_HEADER: u64 = 24;
const LONG_HEADER: u64 = 40;
const RECORD_HEADER: usize = 24;
const RM_XLOG_ID: u8 = 0;
const RM_XACT_ID: u8 = 1;
const XLOG_SWITCH: u8 = 0x40;
const XLOG_XACT_OPMASK: u8 = 0x70;
const XLOG_XACT_COMMIT: u8 = 0x00;
const XLOG_XACT_ABORT: u8 = 0x20;
const XLOG_XACT_COMMIT_PREPARED: u8 = 0x30;
const XLOG_XACT_ABORT_PREPARED: u8 = 0x40;
/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

fn maxalign(n: u64) -> u64 {
    (n + 7) & !7
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The segment as pages: offsets are bytes into the file.
struct Pages<'a> {
    bytes: &'a [u8],
    page: u64,
    start_lsn: u64,
}

impl Pages<'_> {
    /// The size of the header of the page holding `off`, if that page is
    /// valid WAL of this segment (magic, address).
    fn header_len(&self, page_off: u64) -> Option<u64> {
        let p = page_off as usize;
        if u16_at(self.bytes, p)? != PAGE_MAGIC_15 {
            return None;
        }
        if u64_at(self.bytes, p + 8)? != self.start_lsn + page_off {
            return None;
        }
        let info = u16_at(self.bytes, p + 2)?;
        Some(if info & XLP_LONG_HEADER != 0 {
            LONG_HEADER
        } else {
            SHORT_HEADER
        })
    }

    /// `n` bytes of record data from `off`, skipping the page headers it
    /// crosses; returns them and the offset after them.
    fn read(&self, mut off: u64, n: usize) -> Option<(Vec<u8>, u64)> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let in_page = off % self.page;
            if in_page == 0 {
                // A continuation page: its header first, and it must say so.
                let hl = self.header_len(off)?;
                let info = u16_at(self.bytes, off as usize + 2)?;
                if info & XLP_FIRST_IS_CONTRECORD == 0 {
                    return None;
                }
                off += hl;
                continue;
            }
            let room = (self.page - in_page) as usize;
            let take = room.min(n - out.len());
            out.extend_from_slice(self.bytes.get(off as usize..off as usize + take)?);
            off += take as u64;
        }
        Some((out, off))
    }
}

/// Where the main data of a record's body is, from its block headers:
/// the body's last `len` bytes.
fn main_data_len(body: &[u8]) -> Option<usize> {
    let mut at = 0usize;
    while at < body.len() {
        let id = body[at];
        at += 1;
        match id {
            255 => return Some(*body.get(at)? as usize),
            254 => return Some(u32_at(body, at)? as usize),
            253 => at += 2,
            252 => at += 4,
            0..=32 => {
                let fork_flags = *body.get(at)?;
                at += 3; // fork_flags, data_length
                if fork_flags & 0x10 != 0 {
                    let bimg_info = *body.get(at + 4)?;
                    at += 5;
                    let compressed = bimg_info & (0x04 | 0x08 | 0x10) != 0;
                    if bimg_info & 0x01 != 0 && compressed {
                        at += 2;
                    }
                }
                if fork_flags & 0x80 == 0 {
                    at += 12;
                }
                at += 4;
            }
            _ => return None,
        }
    }
    Some(0)
}

pub fn scan(bytes: &[u8]) -> Result<Scan, ScanError> {
    let bad = |what: &str| ScanError(format!("not a WAL segment: {what}"));
    if u16_at(bytes, 0) != Some(PAGE_MAGIC_15) {
        return Err(bad("the first page's magic is not PostgreSQL 15's"));
    }
    let info = u16_at(bytes, 2).ok_or_else(|| bad("too short"))?;
    if info & XLP_LONG_HEADER == 0 {
        return Err(bad("the first page has no long header"));
    }
    let timeline = u32_at(bytes, 4).ok_or_else(|| bad("too short"))?;
    let start_lsn = u64_at(bytes, 8).ok_or_else(|| bad("too short"))?;
    let seg_size = u32_at(bytes, 32).ok_or_else(|| bad("too short"))? as u64;
    let page = u32_at(bytes, 36).ok_or_else(|| bad("too short"))? as u64;
    if !page.is_power_of_two() || !(1024..=65536).contains(&page) {
        return Err(bad("page size"));
    }
    if !seg_size.is_power_of_two() || seg_size < page || start_lsn % seg_size != 0 {
        return Err(bad("segment size"));
    }
    let bytes = &bytes[..bytes.len().min(seg_size as usize)];
    let pages = Pages {
        bytes,
        page,
        start_lsn,
    };
    let mut out = Scan {
        start_lsn,
        end_lsn: start_lsn,
        timeline,
        ..Scan::default()
    };
    // Skip the tail of a record begun in the previous segment.
    let mut off = LONG_HEADER;
    if info & XLP_FIRST_IS_CONTRECORD != 0 {
        let mut rem = u32_at(bytes, 16).ok_or_else(|| bad("too short"))? as u64;
        let mut page_off = 0u64;
        loop {
            let hl = if page_off == 0 {
                LONG_HEADER
            } else {
                match pages.header_len(page_off) {
                    Some(h) => h,
                    None => return Ok(out),
                }
            };
            let room = page - hl;
            if rem <= room {
                off = page_off + maxalign(hl + rem);
                break;
            }
            rem -= room;
            page_off += page;
            if page_off >= bytes.len() as u64 {
                return Ok(out);
            }
        }
    }
    let mut prev: Option<u64> = None;
    loop {
        if off.is_multiple_of(page) {
            match pages.header_len(off) {
                Some(h) => off += h,
                None => break,
            }
        }
        if off >= bytes.len() as u64 {
            break;
        }
        let Some((head, after_head)) = pages.read(off, RECORD_HEADER) else {
            break;
        };
        let tot_len = u32_at(&head, 0).unwrap_or(0) as usize;
        if tot_len < RECORD_HEADER || tot_len as u64 > seg_size * 4 {
            break;
        }
        let xl_prev = u64_at(&head, 8).unwrap_or(0);
        if prev.is_some_and(|p| p != xl_prev) {
            break;
        }
        let Some((body, after)) = pages.read(after_head, tot_len - RECORD_HEADER) else {
            break;
        };
        let mut crc = crc32c::crc32c(&body);
        crc = crc32c::crc32c_append(crc, &head[..20]);
        if crc != u32_at(&head, 20).unwrap_or(0) {
            break;
        }
        let lsn = start_lsn + off;
        let (xl_info, rmid) = (head[16], head[17]);
        prev = Some(lsn);
        out.end_lsn = start_lsn + after;
        if rmid == RM_XLOG_ID && xl_info & 0xF0 == XLOG_SWITCH {
            out.switched = true;
            break;
        }
        if rmid == RM_XACT_ID {
            let op = xl_info & XLOG_XACT_OPMASK;
            let commit = matches!(op, XLOG_XACT_COMMIT | XLOG_XACT_COMMIT_PREPARED);
            let abort = matches!(op, XLOG_XACT_ABORT | XLOG_XACT_ABORT_PREPARED);
            if commit || abort {
                let time = main_data_len(&body)
                    .filter(|&n| n >= 8 && n <= body.len())
                    .and_then(|n| u64_at(&body, body.len() - n))
                    .and_then(|us| DateTime::from_timestamp_micros(us as i64 + PG_EPOCH_MICROS));
                if let Some(time) = time {
                    out.xact_ends.push(XactEnd { lsn, time, commit });
                }
            }
        }
        off = maxalign(after);
        if off >= bytes.len() as u64 {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = 8192;
    const SEG: usize = 16 << 20;
    const START: u64 = 0x0300_0000;

    /// Writes records into pages as PostgreSQL does, with correct headers,
    /// continuation flags and CRCs.
    struct Writer {
        buf: Vec<u8>,
        pos: usize,
        prev: u64,
    }

    impl Writer {
        fn new(pages: usize) -> Writer {
            let mut w = Writer {
                buf: vec![0u8; pages * PAGE],
                pos: 0,
                prev: 0,
            };
            w.page_header(0, 0);
            w.pos = LONG_HEADER as usize;
            w
        }

        fn page_header(&mut self, at: usize, rem: u32) {
            let mut info = 0u16;
            if at == 0 {
                info |= XLP_LONG_HEADER;
            }
            if rem > 0 {
                info |= XLP_FIRST_IS_CONTRECORD;
            }
            self.buf[at..at + 2].copy_from_slice(&PAGE_MAGIC_15.to_le_bytes());
            self.buf[at + 2..at + 4].copy_from_slice(&info.to_le_bytes());
            self.buf[at + 4..at + 8].copy_from_slice(&1u32.to_le_bytes());
            self.buf[at + 8..at + 16].copy_from_slice(&(START + at as u64).to_le_bytes());
            self.buf[at + 16..at + 20].copy_from_slice(&rem.to_le_bytes());
            if at == 0 {
                self.buf[32..36].copy_from_slice(&(SEG as u32).to_le_bytes());
                self.buf[36..40].copy_from_slice(&(PAGE as u32).to_le_bytes());
            }
        }

        /// One record of `rmid`/`info` whose body is `body`; its LSN.
        fn record(&mut self, rmid: u8, info: u8, body: &[u8]) -> u64 {
            if self.pos.is_multiple_of(PAGE) {
                let p = self.pos;
                self.page_header(p, 0);
                self.pos += SHORT_HEADER as usize;
            }
            let lsn = START + self.pos as u64;
            let tot = (RECORD_HEADER + body.len()) as u32;
            let mut head = Vec::new();
            head.extend_from_slice(&tot.to_le_bytes());
            head.extend_from_slice(&7u32.to_le_bytes());
            head.extend_from_slice(&self.prev.to_le_bytes());
            head.push(info);
            head.push(rmid);
            head.extend_from_slice(&[0, 0]);
            let crc = crc32c::crc32c_append(crc32c::crc32c(body), &head);
            head.extend_from_slice(&crc.to_le_bytes());
            let mut all = head;
            all.extend_from_slice(body);
            let mut left = &all[..];
            while !left.is_empty() {
                if self.pos.is_multiple_of(PAGE) {
                    let p = self.pos;
                    self.page_header(p, left.len() as u32);
                    self.pos += SHORT_HEADER as usize;
                }
                let room = PAGE - self.pos % PAGE;
                let n = room.min(left.len());
                self.buf[self.pos..self.pos + n].copy_from_slice(&left[..n]);
                self.pos += n;
                left = &left[n..];
            }
            self.prev = lsn;
            self.pos = maxalign(self.pos as u64) as usize;
            lsn
        }

        fn end(&self) -> u64 {
            START + self.pos as u64
        }
    }

    fn ts(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn pg_time(t: DateTime<Utc>) -> [u8; 8] {
        (t.timestamp_micros() - PG_EPOCH_MICROS).to_le_bytes()
    }

    /// A commit body: optional origin header, then the main data header.
    fn xact_body(t: DateTime<Utc>, origin: bool, long: bool) -> Vec<u8> {
        let mut main = pg_time(t).to_vec();
        main.extend_from_slice(&[0u8; 4]);
        let mut b = Vec::new();
        if origin {
            b.extend_from_slice(&[253, 1, 0]);
        }
        if long {
            b.push(254);
            b.extend_from_slice(&(main.len() as u32).to_le_bytes());
        } else {
            b.push(255);
            b.push(main.len() as u8);
        }
        b.extend_from_slice(&main);
        b
    }

    /// A heap-like record with one block reference and a full-page image.
    fn block_body(image: usize) -> Vec<u8> {
        let mut b = vec![0u8, 0x10 | 0x20, 0, 0];
        b.extend_from_slice(&(image as u16).to_le_bytes());
        b.extend_from_slice(&[0, 0, 0]);
        b.extend_from_slice(&[1u8; 12]);
        b.extend_from_slice(&5u32.to_le_bytes());
        b.push(255);
        b.push(3);
        b.extend(std::iter::repeat_n(9u8, image));
        b.extend_from_slice(&[1, 2, 3]);
        b
    }

    #[test]
    fn commits_aborts_and_the_end_are_found_across_pages() {
        let mut w = Writer::new(4);
        let t1 = ts("2026-11-30T17:00:00.123456Z");
        let t2 = ts("2026-11-30T17:00:01Z");
        let t3 = ts("2026-11-30T17:00:02Z");
        w.record(10, 0, &block_body(3000));
        let c1 = w.record(RM_XACT_ID, XLOG_XACT_COMMIT, &xact_body(t1, false, false));
        // Spans a page boundary, header and all.
        w.record(10, 0, &block_body(7000));
        let a = w.record(RM_XACT_ID, XLOG_XACT_ABORT, &xact_body(t2, true, false));
        // Put the next header across a page boundary.
        while (w.pos % PAGE) < PAGE - 16 {
            w.record(10, 0, &[255, 0]);
        }
        let c2 = w.record(
            RM_XACT_ID,
            XLOG_XACT_COMMIT_PREPARED | 0x80,
            &xact_body(t3, false, true),
        );
        let s = scan(&w.buf).unwrap();
        assert_eq!(s.start_lsn, START);
        assert_eq!(s.timeline, 1);
        assert_eq!(
            s.xact_ends,
            vec![
                XactEnd {
                    lsn: c1,
                    time: t1,
                    commit: true
                },
                XactEnd {
                    lsn: a,
                    time: t2,
                    commit: false
                },
                XactEnd {
                    lsn: c2,
                    time: t3,
                    commit: true
                },
            ]
        );
        assert!(s.end_lsn > c2 && s.end_lsn <= w.end());
        assert!(!s.switched);
    }

    #[test]
    fn a_bad_crc_or_a_wrong_link_ends_the_valid_wal() {
        let mut w = Writer::new(2);
        let t = ts("2026-11-30T17:00:00Z");
        w.record(RM_XACT_ID, 0, &xact_body(t, false, false));
        let end = w.end();
        let second = w.record(RM_XACT_ID, 0, &xact_body(t, false, false));
        let mut bad = w.buf.clone();
        bad[(second - START) as usize + 30] ^= 1;
        let s = scan(&bad).unwrap();
        assert_eq!(s.xact_ends.len(), 1);
        assert!(s.end_lsn <= end);
        // A record pointing at the wrong predecessor.
        w.prev = 12345;
        w.record(RM_XACT_ID, 0, &xact_body(t, false, false));
        assert_eq!(scan(&w.buf).unwrap().xact_ends.len(), 2);
    }

    #[test]
    fn a_switch_ends_the_segment() {
        let mut w = Writer::new(2);
        w.record(RM_XLOG_ID, XLOG_SWITCH, &[]);
        w.record(
            RM_XACT_ID,
            0,
            &xact_body(ts("2026-11-30T17:00:00Z"), false, false),
        );
        let s = scan(&w.buf).unwrap();
        assert!(s.switched);
        assert!(s.xact_ends.is_empty());
    }

    #[test]
    fn a_segment_starting_inside_a_record_skips_its_tail() {
        let mut w = Writer::new(3);
        // The long header says 9000 bytes of a record from before: this
        // page and part of the next.
        w.buf[2] |= XLP_FIRST_IS_CONTRECORD as u8;
        w.buf[16..20].copy_from_slice(&9000u32.to_le_bytes());
        w.page_header(PAGE, 9000 - (PAGE as u32 - LONG_HEADER as u32));
        w.pos = PAGE + maxalign(SHORT_HEADER + 9000 - (PAGE as u64 - LONG_HEADER)) as usize;
        let t = ts("2026-11-30T17:00:00Z");
        let c = w.record(RM_XACT_ID, 0, &xact_body(t, false, false));
        let s = scan(&w.buf).unwrap();
        assert_eq!(
            s.xact_ends,
            vec![XactEnd {
                lsn: c,
                time: t,
                commit: true
            }]
        );
    }

    #[test]
    fn zeros_after_the_last_record_are_the_end_of_a_partial() {
        let mut w = Writer::new(4);
        let c = w.record(
            RM_XACT_ID,
            0,
            &xact_body(ts("2026-11-30T17:00:00Z"), false, false),
        );
        let s = scan(&w.buf).unwrap();
        assert_eq!(s.xact_ends.len(), 1);
        assert_eq!(s.end_lsn, c + (RECORD_HEADER + 14) as u64);
        // A wrong page address on the next page ends it too.
        let mut w = Writer::new(2);
        w.record(10, 0, &block_body(9000));
        w.buf[PAGE + 8] ^= 1;
        assert_eq!(scan(&w.buf).unwrap().end_lsn, START);
    }

    #[test]
    fn not_wal_is_an_error_and_nothing_panics() {
        assert!(scan(&[]).is_err());
        assert!(scan(&[0u8; 8192]).is_err());
        let mut w = Writer::new(3);
        w.record(10, 0, &block_body(12000));
        w.record(
            RM_XACT_ID,
            0,
            &xact_body(ts("2026-11-30T17:00:00Z"), false, false),
        );
        for cut in [41, 100, 8191, 8192, 8200, 16000, 20000] {
            let _ = scan(&w.buf[..cut]);
        }
        let mut seed = 1u64;
        for _ in 0..200 {
            let mut b = w.buf.clone();
            for _ in 0..20 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let i = (seed >> 33) as usize % b.len();
                b[i] = (seed >> 13) as u8;
            }
            let _ = scan(&b);
        }
    }
}

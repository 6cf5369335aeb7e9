//! Reads just enough of a WAL segment's records to tell where its valid WAL
//! ends and when its transactions ended. Both drive point-in-time recovery:
//! a partial segment is worth storing only up to its last complete record
//! (what follows may be half written), and PostgreSQL 13+ refuses a
//! recovery target time later than the last commit it can replay, so the
//! recovery window ends at the last commit or abort found here.
//!
//! The format is PostgreSQL's (`access/xlog_internal.h`,
//! `access/xlogrecord.h`, `access/xact.h`): pages with a short header (a
//! long one first in the segment), records MAXALIGNed, headers and bodies
//! free to span pages, each record checked by its CRC-32C and its link to
//! the previous one. The first bad, torn or zero record is the end, as it is
//! for PostgreSQL's own reader. Written against PostgreSQL 15 and checked
//! against its pg_waldump; 13, 14, 16, 17 and 18 share the layout (bar one
//! flag bit for 13/14, handled below) and are accepted by their page magic.
//!
//! A record that runs on into the next segment cannot be checked from this
//! file alone, so it is not reported, here or in the next segment.

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

const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
const XLP_LONG_HEADER: u16 = 0x0002;
/// The page starts a record that replaces one left torn at the end of the
/// previous page (written after crash recovery lost the torn one's tail).
const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
const XLP_ALL_FLAGS: u16 = 0x000F;
const SHORT_HEADER: u64 = 24;
const LONG_HEADER: u64 = 40;
const RECORD_HEADER: usize = 24;

const RM_XLOG_ID: u8 = 0;
const RM_XACT_ID: u8 = 1;
const XLOG_SWITCH: u8 = 0x40;
const XLR_RMGR_INFO_MASK: u8 = 0xF0;
const XLOG_XACT_OPMASK: u8 = 0x70;
const XLOG_XACT_COMMIT: u8 = 0x00;
const XLOG_XACT_ABORT: u8 = 0x20;
const XLOG_XACT_COMMIT_PREPARED: u8 = 0x30;
const XLOG_XACT_ABORT_PREPARED: u8 = 0x40;

const XLR_MAX_BLOCK_ID: u8 = 32;
const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;
const XLR_BLOCK_ID_DATA_LONG: u8 = 254;
const XLR_BLOCK_ID_ORIGIN: u8 = 253;
const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;
const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
const BKPBLOCK_SAME_REL: u8 = 0x80;
const BKPIMAGE_HAS_HOLE: u8 = 0x01;
/// "Compressed" in bimg_info: one bit up to 14, one bit per method from 15.
const BKPIMAGE_IS_COMPRESSED_14: u8 = 0x02;
const BKPIMAGE_COMPRESSED_15: u8 = 0x04 | 0x08 | 0x10;
const RELFILENODE: usize = 12;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// XLOG_PAGE_MAGIC of each major accepted, with its compressed-image bits.
fn version(magic: u16) -> Option<u8> {
    match magic {
        // 13, 14
        0xD106 | 0xD10D => Some(BKPIMAGE_IS_COMPRESSED_14),
        // 15, 16, 17, 18
        0xD110 | 0xD113 | 0xD116 | 0xD118 => Some(BKPIMAGE_COMPRESSED_15),
        _ => None,
    }
}

/// Reads `bytes`, the whole file: a segment, or a `.partial` (the segment
/// size, zeros after the last write), or its start. Errors only when the
/// file is not WAL at all; anything invalid after a valid start just ends
/// the scan, as that is where valid WAL stops.
pub fn scan(bytes: &[u8]) -> Result<Scan, ScanError> {
    Ok(Segment::open(bytes)?.scan())
}

fn maxalign(n: u64) -> u64 {
    n.saturating_add(7) & !7
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

struct PageHeader {
    info: u16,
    rem_len: u32,
    size: u64,
}

/// How reading a record's bytes across pages went.
enum Walk {
    /// All read; the LSN just past them.
    Done(u64),
    /// A torn record was replaced by the one starting on this page.
    Overwritten(u64),
    /// Not valid WAL (or not in this file).
    Stop,
}

struct Segment<'a> {
    bytes: &'a [u8],
    start: u64,
    seg_size: u64,
    page_size: u64,
    magic: u16,
    compressed: u8,
    timeline: u32,
}

impl<'a> Segment<'a> {
    fn open(bytes: &'a [u8]) -> Result<Self, ScanError> {
        let bad = |what: String| Err(ScanError(format!("not a WAL segment: {what}")));
        if bytes.len() < LONG_HEADER as usize {
            return bad(format!(
                "{} bytes, too short for the page header at offset 0",
                bytes.len()
            ));
        }
        let field = |v: Option<u32>| v.unwrap_or_default();
        let magic = u16_at(bytes, 0).unwrap_or_default();
        let Some(compressed) = version(magic) else {
            return bad(format!(
                "page magic {magic:#06X} at offset 0 is not PostgreSQL 13 to 18's"
            ));
        };
        let info = u16_at(bytes, 2).unwrap_or_default();
        if info & XLP_LONG_HEADER == 0 || info & !XLP_ALL_FLAGS != 0 {
            return bad(format!(
                "page flags {info:#06X} at offset 2 are not a segment's first page's"
            ));
        }
        let timeline = field(u32_at(bytes, 4));
        let start = u64_at(bytes, 8).unwrap_or_default();
        let seg_size = u64::from(field(u32_at(bytes, 32)));
        let page_size = u64::from(field(u32_at(bytes, 36)));
        // The ranges PostgreSQL allows (initdb --wal-segsize, configure
        // --with-wal-blocksize).
        if !seg_size.is_power_of_two() || !(1 << 20..=1 << 30).contains(&seg_size) {
            return bad(format!("segment size {seg_size} at offset 32"));
        }
        if !page_size.is_power_of_two() || !(1 << 10..=1 << 16).contains(&page_size) {
            return bad(format!("page size {page_size} at offset 36"));
        }
        if !start.is_multiple_of(seg_size) || start.checked_add(seg_size).is_none() {
            return bad(format!(
                "page address {start:#X} at offset 8 is not a segment's start"
            ));
        }
        if bytes.len() as u64 > seg_size {
            return bad(format!(
                "{} bytes, more than the segment size {seg_size} at offset 32",
                bytes.len()
            ));
        }
        Ok(Segment {
            bytes,
            start,
            seg_size,
            page_size,
            magic,
            compressed,
            timeline,
        })
    }

    /// `n` bytes at `lsn`, if the file holds them.
    fn slice(&self, lsn: u64, n: u64) -> Option<&'a [u8]> {
        let at = usize::try_from(lsn.checked_sub(self.start)?).ok()?;
        let end = at.checked_add(usize::try_from(n).ok()?)?;
        self.bytes.get(at..end)
    }

    /// The header of the page at `lsn`, if it is this segment's and valid.
    fn page_header(&self, lsn: u64) -> Option<PageHeader> {
        let off = lsn.checked_sub(self.start)?;
        if off >= self.seg_size {
            return None;
        }
        let h = self.slice(lsn, SHORT_HEADER)?;
        let info = u16_at(h, 2)?;
        if u16_at(h, 0)? != self.magic || u64_at(h, 8)? != lsn || info & !XLP_ALL_FLAGS != 0 {
            return None;
        }
        // A segment opens with the long header (PostgreSQL writes it
        // nowhere else, but would read it).
        let long = info & XLP_LONG_HEADER != 0;
        if off == 0 && !long {
            return None;
        }
        let size = if long { LONG_HEADER } else { SHORT_HEADER };
        self.slice(lsn, size)?;
        Some(PageHeader {
            info,
            rem_len: u32_at(h, 16)?,
            size,
        })
    }

    /// Feeds `f` the `total` bytes of a record (or of a continuation) from
    /// `start`, skipping the headers of the pages it runs onto. Each such
    /// page must say it continues a record with exactly what is left.
    fn walk(&self, start: u64, total: u32, mut f: impl FnMut(&[u8])) -> Walk {
        let total = u64::from(total);
        let (mut pos, mut got) = (start, 0u64);
        while got < total {
            if pos.is_multiple_of(self.page_size) {
                let Some(h) = self.page_header(pos) else {
                    return Walk::Stop;
                };
                if h.info & XLP_FIRST_IS_CONTRECORD == 0 {
                    if h.info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0 {
                        return Walk::Overwritten(pos);
                    }
                    return Walk::Stop;
                }
                if u64::from(h.rem_len) != total - got {
                    return Walk::Stop;
                }
                pos += h.size;
            }
            let page_left = self.page_size - pos % self.page_size;
            let n = page_left.min(total - got);
            let Some(chunk) = self.slice(pos, n) else {
                return Walk::Stop;
            };
            f(chunk);
            got += n;
            pos += n;
        }
        Walk::Done(pos)
    }

    fn scan(&self) -> Scan {
        let mut out = Scan {
            start_lsn: self.start,
            end_lsn: self.start,
            timeline: self.timeline,
            ..Scan::default()
        };
        let Some(first) = self.page_header(self.start) else {
            return out;
        };
        let mut pos = self.start + first.size;
        // The tail of a record begun in an earlier segment comes first.
        if first.info & XLP_FIRST_IS_CONTRECORD != 0 {
            match self.walk(pos, first.rem_len, |_| {}) {
                Walk::Done(end) => pos = maxalign(end),
                Walk::Overwritten(page) => pos = page,
                Walk::Stop => return out,
            }
        }
        // Unknown for the first record: it links to the previous segment.
        let mut prev: Option<u64> = None;
        let mut body = Vec::new();
        loop {
            if pos.is_multiple_of(self.page_size) {
                match self.page_header(pos) {
                    // A record ending a page leaves the next one to start
                    // with a new record.
                    Some(h) if h.info & XLP_FIRST_IS_CONTRECORD == 0 => pos += h.size,
                    _ => break,
                }
            }
            // The length is never split: records and pages are 8-aligned.
            let Some(total) = self.slice(pos, 4).and_then(|b| u32_at(b, 0)) else {
                break;
            };
            if (total as usize) < RECORD_HEADER || total as usize > self.bytes.len() {
                break;
            }
            let mut head = [0u8; RECORD_HEADER];
            let mut got = 0;
            let mut crc = 0u32;
            body.clear();
            let walked = self.walk(pos, total, |mut chunk| {
                if got < RECORD_HEADER {
                    let n = (RECORD_HEADER - got).min(chunk.len());
                    head[got..got + n].copy_from_slice(&chunk[..n]);
                    got += n;
                    chunk = &chunk[n..];
                }
                if !chunk.is_empty() {
                    crc = crc32c::crc32c_append(crc, chunk);
                    // Only transaction records' contents are looked at.
                    if head[17] == RM_XACT_ID {
                        body.extend_from_slice(chunk);
                    }
                }
            });
            let end = match walked {
                Walk::Done(end) => end,
                // Keeps `prev`: the replacement links past the torn record.
                Walk::Overwritten(page) => {
                    pos = page;
                    continue;
                }
                Walk::Stop => break,
            };
            // The CRC covers the body, then the header up to xl_crc.
            let crc = crc32c::crc32c_append(crc, &head[..20]);
            let xl_prev = u64_at(&head, 8).unwrap_or_default();
            let (info, rmid) = (head[16], head[17]);
            if u32_at(&head, 20) != Some(crc) {
                break;
            }
            match prev {
                Some(p) if xl_prev != p => break,
                None if xl_prev >= pos => break,
                _ => {}
            }
            prev = Some(pos);
            out.end_lsn = end;
            if rmid == RM_XLOG_ID && info & XLR_RMGR_INFO_MASK == XLOG_SWITCH {
                out.switched = true;
                break;
            }
            if rmid == RM_XACT_ID {
                if let Some(x) = xact_end(pos, info, &body, self.compressed) {
                    out.xact_ends.push(x);
                }
            }
            pos = maxalign(end);
        }
        out
    }
}

/// A commit or abort (prepared or not) and its xact_time, the first field
/// of xl_xact_commit and xl_xact_abort alike.
fn xact_end(lsn: u64, info: u8, body: &[u8], compressed: u8) -> Option<XactEnd> {
    let commit = match info & XLOG_XACT_OPMASK {
        XLOG_XACT_COMMIT | XLOG_XACT_COMMIT_PREPARED => true,
        XLOG_XACT_ABORT | XLOG_XACT_ABORT_PREPARED => false,
        _ => return None,
    };
    let main = main_data(body, compressed)?;
    let micros = i64::from_le_bytes(main.get(..8)?.try_into().ok()?);
    let time = DateTime::from_timestamp_micros(micros.checked_add(PG_EPOCH_MICROS)?)?;
    Some(XactEnd { lsn, time, commit })
}

/// The record's main data: `body` is what follows the 24-byte header, i.e.
/// block headers, the main-data header, block data, then the main data.
/// Parsed as DecodeXLogRecord does, lengths required to add up exactly.
fn main_data(body: &[u8], compressed: u8) -> Option<&[u8]> {
    let mut i = 0usize;
    // Payload bytes announced so far by block headers.
    let mut payload = 0usize;
    // Headers go on while more bytes are left than the payloads announced.
    while body.len().checked_sub(i)? > payload {
        let id = *body.get(i)?;
        i += 1;
        match id {
            XLR_BLOCK_ID_DATA_SHORT | XLR_BLOCK_ID_DATA_LONG => {
                let len = if id == XLR_BLOCK_ID_DATA_SHORT {
                    i += 1;
                    usize::from(*body.get(i - 1)?)
                } else {
                    i += 4;
                    usize::try_from(u32_at(body, i - 4)?).ok()?
                };
                let left = body.len().checked_sub(i)?;
                if left != payload.checked_add(len)? {
                    return None;
                }
                return body.get(body.len() - len..);
            }
            XLR_BLOCK_ID_ORIGIN => i += 2,
            XLR_BLOCK_ID_TOPLEVEL_XID => i += 4,
            0..=XLR_MAX_BLOCK_ID => {
                let flags = *body.get(i)?;
                payload = payload.saturating_add(usize::from(u16_at(body, i + 1)?));
                i += 3;
                if flags & BKPBLOCK_HAS_IMAGE != 0 {
                    payload = payload.saturating_add(usize::from(u16_at(body, i)?));
                    let bimg_info = *body.get(i + 4)?;
                    i += 5;
                    // The hole's length is stored only when it cannot be
                    // inferred, i.e. for a compressed image.
                    if bimg_info & BKPIMAGE_HAS_HOLE != 0 && bimg_info & compressed != 0 {
                        i += 2;
                    }
                }
                if flags & BKPBLOCK_SAME_REL == 0 {
                    i += RELFILENODE;
                }
                // The block number.
                i += 4;
            }
            _ => return None,
        }
    }
    // No main data.
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    // Small pages keep the multi-page cases short.
    const PAGE: u64 = 1024;
    const SEG: u64 = 1 << 20;
    const START: u64 = 0x1_0300_0000;
    const PG15: u16 = 0xD110;
    const HEAP: u8 = 10;

    /// Builds a segment the way PostgreSQL lays it out.
    #[derive(Clone)]
    struct Wal {
        buf: Vec<u8>,
        pos: u64,
        prev: u64,
        magic: u16,
    }

    impl Wal {
        fn new() -> Wal {
            Wal::starting(PG15, 0, 0)
        }

        /// A segment whose first page has `info` (besides the long-header
        /// flag) and `rem_len`.
        fn starting(magic: u16, info: u16, rem_len: u32) -> Wal {
            let mut w = Wal {
                buf: Vec::new(),
                pos: START,
                prev: START - 0x40,
                magic,
            };
            w.page_header(XLP_LONG_HEADER | info, rem_len);
            w
        }

        fn page_header(&mut self, info: u16, rem_len: u32) {
            assert_eq!(self.pos % PAGE, 0);
            let mut h = Vec::new();
            h.extend(self.magic.to_le_bytes());
            h.extend(info.to_le_bytes());
            h.extend(3u32.to_le_bytes());
            h.extend(self.pos.to_le_bytes());
            h.extend(rem_len.to_le_bytes());
            h.extend([0; 4]);
            if info & XLP_LONG_HEADER != 0 {
                h.extend(0x1234_5678_9abc_def0u64.to_le_bytes());
                h.extend((SEG as u32).to_le_bytes());
                h.extend((PAGE as u32).to_le_bytes());
            }
            self.pos += h.len() as u64;
            self.buf.extend(h);
        }

        /// Writes (the rest of) one record, adding continuation headers.
        fn put(&mut self, data: &[u8]) {
            let mut i = 0;
            while i < data.len() {
                if self.pos.is_multiple_of(PAGE) {
                    self.page_header(XLP_FIRST_IS_CONTRECORD, (data.len() - i) as u32);
                }
                let n = (data.len() - i).min((PAGE - self.pos % PAGE) as usize);
                self.buf.extend(&data[i..i + n]);
                self.pos += n as u64;
                i += n;
            }
        }

        /// Moves to where the next record starts.
        fn align(&mut self) {
            while !self.pos.is_multiple_of(8) {
                self.buf.push(0);
                self.pos += 1;
            }
            if self.pos.is_multiple_of(PAGE) {
                self.page_header(0, 0);
            }
        }

        fn record(&mut self, rmid: u8, info: u8, payload: &[u8]) -> u64 {
            self.align();
            let lsn = self.pos;
            self.put(&record(rmid, info, self.prev, payload));
            self.prev = lsn;
            lsn
        }

        /// A filler record after which the next record starts at `off`
        /// into a page (0: the next page's start).
        fn pad_to(&mut self, off: u64) {
            self.align();
            let cur = self.pos % PAGE;
            let len = if off == 0 {
                PAGE - cur
            } else if off >= cur + 32 {
                off - cur
            } else {
                PAGE - cur + off - SHORT_HEADER
            };
            self.record(HEAP, 0, &filler(len as usize - RECORD_HEADER));
            assert_eq!(maxalign(self.pos) % PAGE, off);
        }

        fn bytes(&self) -> Vec<u8> {
            self.buf.clone()
        }

        /// As pg_receivewal leaves a `.partial`: zeros to the segment size.
        fn partial(&self) -> Vec<u8> {
            let mut b = self.buf.clone();
            b.resize(SEG as usize, 0);
            b
        }

        fn at(&mut self, lsn: u64) -> &mut u8 {
            &mut self.buf[(lsn - START) as usize]
        }
    }

    fn record(rmid: u8, info: u8, prev: u64, payload: &[u8]) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend(((RECORD_HEADER + payload.len()) as u32).to_le_bytes());
        r.extend(742u32.to_le_bytes());
        r.extend(prev.to_le_bytes());
        r.extend([info, rmid, 0, 0]);
        let crc = crc32c::crc32c_append(crc32c::crc32c(payload), &r);
        r.extend(crc.to_le_bytes());
        r.extend(payload);
        r
    }

    /// A payload of exactly `len` bytes: a main-data header and data.
    fn filler(len: usize) -> Vec<u8> {
        let mut p = Vec::new();
        if len - 2 <= 255 {
            p.extend([XLR_BLOCK_ID_DATA_SHORT, (len - 2) as u8]);
        } else {
            p.push(XLR_BLOCK_ID_DATA_LONG);
            p.extend(((len - 5) as u32).to_le_bytes());
        }
        p.resize(len, 0x5A);
        p
    }

    fn main_header(main: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        if main.len() <= 255 {
            p.extend([XLR_BLOCK_ID_DATA_SHORT, main.len() as u8]);
        } else {
            p.push(XLR_BLOCK_ID_DATA_LONG);
            p.extend((main.len() as u32).to_le_bytes());
        }
        p
    }

    /// xl_xact_commit/abort: xact_time, xinfo, then `extra` bytes.
    fn xact_main(micros: i64, extra: usize) -> Vec<u8> {
        let mut m = micros.to_le_bytes().to_vec();
        m.extend(0u32.to_le_bytes());
        m.resize(m.len() + extra, 0xC3);
        m
    }

    fn xact(micros: i64) -> Vec<u8> {
        let main = xact_main(micros, 0);
        [main_header(&main), main].concat()
    }

    fn time(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// 2026-01-02 03:04:05.678901 UTC in PostgreSQL's microseconds.
    const T1: i64 = 820_638_245_678_901;

    fn end(lsn: u64, commit: bool, micros: i64) -> XactEnd {
        XactEnd {
            lsn,
            commit,
            time: DateTime::from_timestamp_micros(micros + PG_EPOCH_MICROS).unwrap(),
        }
    }

    #[test]
    fn reports_commits_and_aborts_with_their_times() {
        let mut w = Wal::new();
        w.record(HEAP, 0, &filler(60));
        let c = w.record(RM_XACT_ID, XLOG_XACT_COMMIT, &xact(T1));
        // Info bits outside the opcode do not matter (XLOG_XACT_HAS_INFO).
        let a = w.record(RM_XACT_ID, XLOG_XACT_ABORT | 0x80, &xact(T1 + 1));
        let cp = w.record(RM_XACT_ID, XLOG_XACT_COMMIT_PREPARED, &xact(T1 + 2));
        let ap = w.record(RM_XACT_ID, XLOG_XACT_ABORT_PREPARED, &xact(T1 + 3));
        // PREPARE, ASSIGNMENT and INVALIDATIONS end nothing.
        w.record(RM_XACT_ID, 0x10, &xact(T1 + 4));
        w.record(RM_XACT_ID, 0x50, &xact(T1 + 5));
        w.record(RM_XACT_ID, 0x60, &xact(T1 + 6));
        let want = Scan {
            start_lsn: START,
            end_lsn: w.pos,
            xact_ends: vec![
                end(c, true, T1),
                end(a, false, T1 + 1),
                end(cp, true, T1 + 2),
                end(ap, false, T1 + 3),
            ],
            switched: false,
            timeline: 3,
        };
        assert_eq!(want.xact_ends[0].time, time("2026-01-02T03:04:05.678901Z"));
        assert_eq!(scan(&w.bytes()).unwrap(), want);
        assert_eq!(scan(&w.partial()).unwrap(), want);
    }

    #[test]
    fn finds_the_main_data_behind_other_headers() {
        let mut w = Wal::new();
        let mut want = Vec::new();
        // A replication origin, as commits from logical replication carry.
        let mut p = vec![XLR_BLOCK_ID_ORIGIN, 7, 0];
        p.extend(xact(T1));
        want.push(end(w.record(RM_XACT_ID, 0, &p), true, T1));
        // A long main-data header (many subtransactions or files).
        let main = xact_main(T1 + 1, 400);
        let p = [main_header(&main), main].concat();
        assert_eq!(p[0], XLR_BLOCK_ID_DATA_LONG);
        want.push(end(w.record(RM_XACT_ID, 0, &p), true, T1 + 1));
        // The top-level xid and block references, one with a compressed
        // image with a hole, one with a plain image on the same relation.
        let mut p = vec![XLR_BLOCK_ID_TOPLEVEL_XID, 1, 2, 3, 4];
        p.extend([0, BKPBLOCK_HAS_IMAGE | 0x20, 3, 0]); // 3 bytes of data
        p.extend([5, 0, 0, 1, BKPIMAGE_HAS_HOLE | 0x04, 0x00, 0x10]); // 5-byte image
        p.extend([9; RELFILENODE]);
        p.extend(77u32.to_le_bytes());
        p.extend([1, BKPBLOCK_HAS_IMAGE | BKPBLOCK_SAME_REL, 0, 0]);
        p.extend([4, 0, 0, 0, 0]); // 4-byte image, no hole
        p.extend(78u32.to_le_bytes());
        let main = xact_main(T1 + 2, 1);
        p.extend(main_header(&main));
        p.extend([0xEE; 3 + 5 + 4]);
        p.extend(main);
        want.push(end(w.record(RM_XACT_ID, 0, &p), true, T1 + 2));
        // Without main data, or with lengths that do not add up, a record
        // still counts as WAL but not as a transaction end.
        w.record(RM_XACT_ID, 0, &[]);
        let mut p = xact(T1 + 3);
        p[1] += 1;
        p.push(0);
        p.push(0);
        w.record(RM_XACT_ID, 0, &p);
        let last = w.record(RM_XACT_ID, XLOG_XACT_ABORT, &xact(T1 + 4));
        want.push(end(last, false, T1 + 4));
        let s = scan(&w.partial()).unwrap();
        assert_eq!(s.xact_ends, want);
        assert_eq!(s.end_lsn, w.pos);
    }

    #[test]
    fn compressed_images_are_told_apart_by_version() {
        // bimg_info 0x03 is "hole, compressed" up to 14 (a hole length
        // follows) but "hole, apply" from 15 (none follows).
        let mut p = vec![0, BKPBLOCK_HAS_IMAGE, 0, 0, 2, 0, 0, 1, 0x03, 0, 0x10];
        p.extend([9; RELFILENODE]);
        p.extend(5u32.to_le_bytes());
        let main = xact_main(T1, 0);
        p.extend(main_header(&main));
        p.extend([0xEE; 2]);
        p.extend(main);
        for (magic, found) in [(0xD10D, 1), (0xD110, 0), (0xD113, 0)] {
            let mut w = Wal::starting(magic, 0, 0);
            w.record(RM_XACT_ID, 0, &p);
            let s = scan(&w.bytes()).unwrap();
            assert_eq!(s.xact_ends.len(), found, "{magic:#X}");
            assert_eq!(s.end_lsn, w.pos);
        }
    }

    #[test]
    fn records_span_pages() {
        let mut w = Wal::new();
        // A body over several pages.
        let big = w.record(HEAP, 0, &filler(3000));
        assert!(w.pos - big > 3 * PAGE);
        // A commit whose header is split across a page boundary.
        w.pad_to(PAGE - 8);
        let split_head = w.record(RM_XACT_ID, 0, &xact(T1));
        assert_eq!(split_head % PAGE, PAGE - 8);
        // A commit whose main data is split.
        w.pad_to(PAGE - 32);
        let split_body = w.record(RM_XACT_ID, 0, &xact(T1 + 1));
        // A record ending a page exactly: the next one follows the header.
        w.pad_to(0);
        let after = w.record(RM_XACT_ID, XLOG_XACT_ABORT, &xact(T1 + 2));
        assert_eq!(after % PAGE, SHORT_HEADER);
        let s = scan(&w.partial()).unwrap();
        assert_eq!(
            s.xact_ends,
            vec![
                end(split_head, true, T1),
                end(split_body, true, T1 + 1),
                end(after, false, T1 + 2)
            ]
        );
        assert_eq!(s.end_lsn, w.pos);
    }

    #[test]
    fn a_switch_ends_the_segment() {
        let mut w = Wal::new();
        let c = w.record(RM_XACT_ID, 0, &xact(T1));
        w.record(RM_XLOG_ID, XLOG_SWITCH, &[]);
        let switch_end = w.pos;
        // Never written by PostgreSQL; shows the scan stopped.
        w.record(RM_XACT_ID, 0, &xact(T1 + 1));
        let s = scan(&w.partial()).unwrap();
        assert!(s.switched);
        assert_eq!(s.end_lsn, switch_end);
        assert_eq!(s.xact_ends, vec![end(c, true, T1)]);
        // Other XLOG records (a checkpoint, info 0x10) do not.
        let mut w = Wal::new();
        w.record(RM_XLOG_ID, 0x10, &filler(80));
        w.record(RM_XACT_ID, 0, &xact(T1));
        let s = scan(&w.bytes()).unwrap();
        assert!(!s.switched);
        assert_eq!(s.xact_ends.len(), 1);
    }

    #[test]
    fn a_bad_crc_or_link_ends_the_scan() {
        let mut w = Wal::new();
        w.record(RM_XACT_ID, 0, &xact(T1));
        let first_end = w.pos;
        let second = w.record(RM_XACT_ID, 0, &xact(T1 + 1));
        let good = scan(&w.bytes()).unwrap();
        assert_eq!(good.xact_ends.len(), 2);
        // A flipped bit in the body, in the header, in the CRC itself.
        for at in [second + 30, second + 16, second + 21] {
            let mut bad = w.clone();
            *bad.at(at) ^= 0x04;
            let s = scan(&bad.bytes()).unwrap();
            assert_eq!(s.xact_ends.len(), 1, "flip at {at:#X}");
            assert_eq!(s.end_lsn, first_end);
        }
        // A record with a valid CRC that does not link to the previous one
        // (left from an older pass over recycled space).
        let mut w = Wal::new();
        w.record(RM_XACT_ID, 0, &xact(T1));
        let first_end = w.pos;
        w.prev += 8;
        w.record(RM_XACT_ID, 0, &xact(T1 + 1));
        let s = scan(&w.bytes()).unwrap();
        assert_eq!((s.xact_ends.len(), s.end_lsn), (1, first_end));
        // A length too short to be a record, and one past the file.
        for len in [23u32, 0x7FFF_FFFF] {
            let mut w = Wal::new();
            w.record(RM_XACT_ID, 0, &xact(T1));
            let first_end = w.pos;
            let second = w.record(RM_XACT_ID, 0, &xact(T1 + 1));
            let at = (second - START) as usize;
            w.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
            let s = scan(&w.bytes()).unwrap();
            assert_eq!((s.xact_ends.len(), s.end_lsn), (1, first_end));
        }
    }

    #[test]
    fn a_bad_page_header_ends_the_scan() {
        // A record running onto a page whose address is wrong (a recycled
        // page not yet overwritten), whose magic is wrong, which does not
        // say it continues a record, claims a long header, or has the wrong
        // length left.
        for (field, value) in [
            (8usize, 0x55u8),
            (0, 0x00),
            (2, 0x00),
            (2, XLP_LONG_HEADER as u8),
            (16, 0x01),
        ] {
            let mut w = Wal::new();
            w.record(RM_XACT_ID, 0, &xact(T1));
            let first_end = w.pos;
            w.pad_to(PAGE - 16);
            let spanning = w.record(RM_XACT_ID, 0, &xact(T1 + 1));
            let page = spanning - spanning % PAGE + PAGE;
            *w.at(page + field as u64) ^= value.max(1);
            let s = scan(&w.partial()).unwrap();
            // The filler before is fine; the spanning commit is not.
            assert_eq!(s.xact_ends.len(), 1, "field {field}");
            assert!(s.end_lsn > first_end && s.end_lsn <= spanning);
        }
        // A page where a new record would start, with a wrong address.
        let mut w = Wal::new();
        w.pad_to(0);
        let boundary = w.pos;
        w.record(RM_XACT_ID, 0, &xact(T1));
        *w.at(boundary + 9) ^= 1;
        let s = scan(&w.bytes()).unwrap();
        assert_eq!((s.xact_ends.len(), s.end_lsn), (0, boundary));
        // Or flagged as a continuation when none is due.
        let mut w = Wal::new();
        w.pad_to(0);
        let boundary = w.pos;
        w.record(RM_XACT_ID, 0, &xact(T1));
        *w.at(boundary + 2) |= XLP_FIRST_IS_CONTRECORD as u8;
        let s = scan(&w.bytes()).unwrap();
        assert_eq!((s.xact_ends.len(), s.end_lsn), (0, boundary));
    }

    #[test]
    fn the_first_page_may_continue_an_earlier_record() {
        // 2500 bytes left of a record begun in the previous segment: they
        // fill this segment's first pages, each flagged as a continuation.
        let mut w = Wal::starting(PG15, XLP_FIRST_IS_CONTRECORD, 2500);
        w.put(&[0x77; 2500]);
        assert!(w.pos - START > 2 * PAGE);
        let c = w.record(RM_XACT_ID, 0, &xact(T1));
        let s = scan(&w.partial()).unwrap();
        assert_eq!(s.xact_ends, vec![end(c, true, T1)]);
        assert_eq!(s.end_lsn, w.pos);
        // Cut inside the continuation: nothing valid in the file.
        let s = scan(&w.bytes()[..1500]).unwrap();
        assert_eq!((s.end_lsn, s.xact_ends.len()), (START, 0));
    }

    #[test]
    fn a_torn_record_replaced_after_a_crash_is_skipped() {
        // A record cut at a page end, whose rest was lost in a crash:
        // PostgreSQL writes on from the next page, flagging it.
        let mut w = Wal::new();
        let a = w.record(RM_XACT_ID, 0, &xact(T1));
        w.align();
        let torn = record(RM_XACT_ID, 0, w.prev, &xact_main(T1 + 1, 3000));
        let fits = (PAGE - w.pos % PAGE) as usize;
        w.buf.extend(&torn[..fits]);
        w.pos += fits as u64;
        w.page_header(XLP_FIRST_IS_OVERWRITE_CONTRECORD, 0);
        let b = w.record(RM_XACT_ID, 0, &xact(T1 + 2));
        let s = scan(&w.partial()).unwrap();
        assert_eq!(s.xact_ends, vec![end(a, true, T1), end(b, true, T1 + 2)]);
        assert_eq!(s.end_lsn, w.pos);
    }

    #[test]
    fn a_record_cut_by_the_end_of_the_file_is_not_valid() {
        let mut w = Wal::new();
        w.record(RM_XACT_ID, 0, &xact(T1));
        let first_end = w.pos;
        w.record(RM_XACT_ID, 0, &xact(T1 + 1));
        let bytes = w.bytes();
        for cut in (first_end - START) as usize..bytes.len() {
            let s = scan(&bytes[..cut]).unwrap();
            assert_eq!((s.xact_ends.len(), s.end_lsn), (1, first_end), "cut {cut}");
        }
        assert_eq!(scan(&bytes).unwrap().xact_ends.len(), 2);
        // Nothing but the header: no records.
        let s = scan(&bytes[..LONG_HEADER as usize]).unwrap();
        assert_eq!((s.start_lsn, s.end_lsn), (START, START));
    }

    #[test]
    fn files_that_are_not_wal_are_errors() {
        let good = {
            let mut w = Wal::new();
            w.record(RM_XACT_ID, 0, &xact(T1));
            w.bytes()
        };
        assert!(scan(&good).is_ok());
        let mut longer = good.clone();
        longer.resize(SEG as usize + 8, 0);
        let with = |at: usize, v: &[u8]| {
            let mut b = good.clone();
            b[at..at + v.len()].copy_from_slice(v);
            scan(&b).unwrap_err().0
        };
        let cases = [
            (scan(&[]).unwrap_err().0, "offset 0"),
            (scan(&good[..39]).unwrap_err().0, "offset 0"),
            (
                scan(&vec![0; 16384]).unwrap_err().0,
                "magic 0x0000 at offset 0",
            ),
            (with(0, &0xD0FFu16.to_le_bytes()), "magic 0xD0FF"),
            (with(2, &[0, 0]), "offset 2"),
            (with(2, &[0x12, 0]), "offset 2"),
            (
                with(32, &(3u32 << 20).to_le_bytes()),
                "segment size 3145728 at offset 32",
            ),
            (with(32, &(1u32 << 19).to_le_bytes()), "offset 32"),
            (
                with(36, &1000u32.to_le_bytes()),
                "page size 1000 at offset 36",
            ),
            (with(8, &(START + PAGE).to_le_bytes()), "offset 8"),
            (with(8, &(u64::MAX - SEG + 1).to_le_bytes()), "offset 8"),
            (scan(&longer).unwrap_err().0, "more than the segment size"),
        ];
        for (msg, want) in cases {
            assert!(msg.contains(want), "{msg:?} lacks {want:?}");
            assert!(msg.starts_with("not a WAL segment: ") && !msg.contains('\n'));
        }
    }

    /// xorshift: deterministic and dependency-free.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn sample() -> Wal {
        let mut w = Wal::starting(PG15, XLP_FIRST_IS_CONTRECORD, 1100);
        w.put(&[0x77; 1100]);
        for i in 0..40 {
            w.record(RM_XACT_ID, (i % 5) * 0x10, &xact(T1 + i64::from(i)));
            w.record(HEAP, 0, &filler(30 + 37 * (i as usize % 13)));
        }
        w
    }

    #[test]
    fn no_input_panics() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let w = sample();
        let full = scan(&w.partial()).unwrap();
        assert_eq!(full.xact_ends.len(), 32);
        // Every truncation: a prefix of the same answer.
        let bytes = w.bytes();
        for cut in 0..=bytes.len() {
            if let Ok(s) = scan(&bytes[..cut]) {
                assert!(s.end_lsn <= full.end_lsn);
                assert!(s.end_lsn - START <= cut as u64);
                assert_eq!(s.xact_ends[..], full.xact_ends[..s.xact_ends.len()]);
            }
        }
        // Random damage: never a panic, never more than the undamaged file.
        for _ in 0..3000 {
            let mut b = bytes.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(b.len());
                b[at] = rng.next() as u8;
            }
            if let Ok(s) = scan(&b) {
                assert!(s.xact_ends.len() <= full.xact_ends.len());
            }
        }
        // Random bytes, bare and behind a valid long header.
        for _ in 0..300 {
            let len = rng.below(20_000);
            let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let _ = scan(&b);
            if b.len() >= 40 {
                b[..40].copy_from_slice(&bytes[..40]);
                b[2] &= !(XLP_FIRST_IS_CONTRECORD as u8);
                let s = scan(&b).unwrap();
                assert!(s.end_lsn >= START);
            }
        }
    }
}

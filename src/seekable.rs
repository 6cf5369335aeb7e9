//! Filling in the data offsets of a custom-format archive that was written
//! to a pipe, so that `pg_restore --jobs` can seek instead of scan.
//!
//! pg_dump writes the table of contents first. Writing to a file, it seeks
//! back at the end and fills in where each table's data block starts;
//! writing to a pipe, as for every backup, it leaves "offset not set". A
//! parallel pg_restore of such an archive has each worker read its way to
//! every block it needs, chunk header by chunk header (one chunk per row),
//! and, knowing no sizes, cannot start the big tables first
//! (bench/results/restore.md). While `restore --jobs` spools the dump,
//! [`OffsetRecorder`] watches the bytes go by and notes where each block
//! starts; [`Patch`]es then fill in the offsets in place, as pg_dump itself
//! does (the fields have a fixed size). Anything unexpected makes it give up
//! and leave the file as it is: pg_restore then scans, slower but correct.
//!
//! The format, from pg_dump's pg_backup_archiver.c and pg_backup_custom.c:
//! integers are a sign byte and `intSize` little-endian bytes; strings an
//! integer length (-1 for NULL) and the bytes; an offset is a flag byte
//! (1 not set, 2 set, 3 no data) and `offSize` little-endian bytes. A data
//! block is a type byte (1 table data, 3 large objects), the dump id, and
//! length-prefixed chunks up to a zero length (large objects: per object an
//! oid, its chunks and a zero; a zero oid ends the block).

use std::collections::HashMap;
use std::io::{self, Write};

/// Archive versions whose table of contents this module can read: 1.14
/// (pg_dump 12-15), 1.15 (16) and 1.16 (17, 18).
const VERSIONS: std::ops::RangeInclusive<u8> = 14..=16;
const FORMAT_CUSTOM: u8 = 1;
const OFFSET_NOT_SET: u8 = 1;
const OFFSET_SET: u8 = 2;
const BLOCK_DATA: u8 = 1;
const BLOCK_BLOBS: u8 = 3;
/// A table of contents larger than this is not buffered (100k+ objects).
const MAX_TOC: usize = 64 << 20;

/// Bytes to write at a position of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    pub at: u64,
    pub bytes: Vec<u8>,
}

/// Passes an archive through to `inner` and learns where its blocks start.
pub struct OffsetRecorder<W> {
    inner: W,
    phase: Phase,
    /// Bytes of the archive seen so far.
    pos: u64,
}

enum Phase {
    /// Collecting the header and table of contents; parsed again once the
    /// buffer reaches the given length (doubling, so a large TOC is not
    /// parsed over and over).
    Head(Vec<u8>, usize),
    Blocks(Blocks),
    GaveUp(&'static str),
}

struct Toc {
    int_size: usize,
    off_size: usize,
    /// Dump id -> position of its offset field, for entries with data
    /// whose offset is not set.
    fields: HashMap<i64, u64>,
}

struct Blocks {
    toc: Toc,
    step: Step,
    /// Dump id -> where its block starts.
    found: HashMap<i64, u64>,
    block_start: u64,
    /// Integer being read across writes: bytes so far.
    int: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Kind,
    DataId,
    BlobsId,
    ChunkLen,
    Skip(u64),
    BlobOid,
    BlobChunkLen,
    BlobSkip(u64),
}

impl<W: Write> OffsetRecorder<W> {
    pub fn new(inner: W) -> Self {
        OffsetRecorder {
            inner,
            phase: Phase::Head(Vec::new(), 0),
            pos: 0,
        }
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The writer, and the patches that set every offset; Err says why
    /// there are none.
    pub fn into_parts(mut self) -> (W, Result<Vec<Patch>, &'static str>) {
        self.parse_head(true);
        let patches = match self.phase {
            Phase::GaveUp(why) => Err(why),
            Phase::Head(..) => Err("the archive ended inside its table of contents"),
            Phase::Blocks(b) if b.step != Step::Kind || !b.int.is_empty() => {
                Err("the archive ended inside a data block")
            }
            Phase::Blocks(b) => {
                let mut patches: Vec<Patch> = b
                    .found
                    .iter()
                    .filter_map(|(id, start)| {
                        let at = *b.toc.fields.get(id)?;
                        let mut bytes = vec![OFFSET_SET];
                        bytes.extend((0..b.toc.off_size).map(|i| {
                            if i < 8 {
                                (start >> (8 * i)) as u8
                            } else {
                                0
                            }
                        }));
                        Some(Patch { at, bytes })
                    })
                    .collect();
                patches.sort_by_key(|p| p.at);
                Ok(patches)
            }
        };
        (self.inner, patches)
    }

    fn observe(&mut self, data: &[u8]) {
        match &mut self.phase {
            Phase::GaveUp(_) => {}
            Phase::Head(buf, _) => {
                buf.extend_from_slice(data);
                self.parse_head(false);
            }
            Phase::Blocks(_) => self.scan(self.pos, data),
        }
    }

    /// Moves on to the blocks once the table of contents is complete.
    fn parse_head(&mut self, now: bool) {
        let Phase::Head(buf, next_try) = &mut self.phase else {
            return;
        };
        if !now && buf.len() < *next_try {
            return;
        }
        match parse_head(buf) {
            Ok((toc, end)) => {
                let rest = buf[end..].to_vec();
                let base = end as u64;
                self.phase = Phase::Blocks(Blocks {
                    toc,
                    step: Step::Kind,
                    found: HashMap::new(),
                    block_start: base,
                    int: Vec::new(),
                });
                self.scan(base, &rest);
            }
            Err(Parse::More) if buf.len() <= MAX_TOC => *next_try = buf.len() * 2,
            Err(Parse::More) => self.phase = Phase::GaveUp("table of contents too large"),
            Err(Parse::Bad(why)) => self.phase = Phase::GaveUp(why),
        }
    }

    /// Follows the blocks through `data`, which starts at archive position `at`.
    fn scan(&mut self, at: u64, data: &[u8]) {
        let Phase::Blocks(b) = &mut self.phase else {
            return;
        };
        let mut i = 0usize;
        while i < data.len() {
            match b.step {
                Step::Skip(n) | Step::BlobSkip(n) => {
                    let take = n.min((data.len() - i) as u64);
                    i += take as usize;
                    let left = n - take;
                    b.step = match (b.step, left) {
                        (Step::Skip(_), 0) => Step::ChunkLen,
                        (Step::Skip(_), l) => Step::Skip(l),
                        (_, 0) => Step::BlobChunkLen,
                        (_, l) => Step::BlobSkip(l),
                    };
                }
                Step::Kind => {
                    b.block_start = at + i as u64;
                    b.step = match data[i] {
                        BLOCK_DATA => Step::DataId,
                        BLOCK_BLOBS => Step::BlobsId,
                        _ => {
                            self.phase = Phase::GaveUp("unknown data block type");
                            return;
                        }
                    };
                    i += 1;
                }
                _ => {
                    let need = 1 + b.toc.int_size;
                    let take = (need - b.int.len()).min(data.len() - i);
                    b.int.extend_from_slice(&data[i..i + take]);
                    i += take;
                    if b.int.len() < need {
                        continue;
                    }
                    let v = int_of(&b.int);
                    b.int.clear();
                    let next = match (b.step, v) {
                        (Step::DataId | Step::BlobsId, id) => {
                            if !b.toc.fields.contains_key(&id)
                                || b.found.insert(id, b.block_start).is_some()
                            {
                                self.phase = Phase::GaveUp(
                                    "a data block the table of contents does not list",
                                );
                                return;
                            }
                            if b.step == Step::DataId {
                                Step::ChunkLen
                            } else {
                                Step::BlobOid
                            }
                        }
                        (Step::ChunkLen, 0) => Step::Kind,
                        (Step::ChunkLen, n) if n > 0 => Step::Skip(n as u64),
                        (Step::BlobOid, 0) => Step::Kind,
                        (Step::BlobOid, _) => Step::BlobChunkLen,
                        (Step::BlobChunkLen, 0) => Step::BlobOid,
                        (Step::BlobChunkLen, n) if n > 0 => Step::BlobSkip(n as u64),
                        _ => {
                            self.phase = Phase::GaveUp("a negative chunk length");
                            return;
                        }
                    };
                    b.step = next;
                }
            }
        }
    }
}

impl<W: Write> Write for OffsetRecorder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.observe(&data[..n]);
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Value of a pg_dump integer: sign byte, then little-endian bytes.
fn int_of(b: &[u8]) -> i64 {
    let v = b[1..]
        .iter()
        .take(8)
        .enumerate()
        .fold(0i64, |v, (i, x)| v | (i64::from(*x) << (8 * i)));
    if b[0] != 0 {
        -v
    } else {
        v
    }
}

enum Parse {
    More,
    Bad(&'static str),
}

struct Cursor<'a> {
    b: &'a [u8],
    p: usize,
    int_size: usize,
}

impl Cursor<'_> {
    fn bytes(&mut self, n: usize) -> Result<&[u8], Parse> {
        let end = self
            .p
            .checked_add(n)
            .ok_or(Parse::Bad("a length overflows"))?;
        let s = self.b.get(self.p..end).ok_or(Parse::More)?;
        self.p = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, Parse> {
        Ok(self.bytes(1)?[0])
    }

    fn int(&mut self) -> Result<i64, Parse> {
        let n = 1 + self.int_size;
        Ok(int_of(self.bytes(n)?))
    }

    /// A string's bytes, None for NULL.
    fn str(&mut self) -> Result<Option<&[u8]>, Parse> {
        match self.int()? {
            -1 => Ok(None),
            n if n < 0 => Err(Parse::Bad("a negative string length")),
            n => Ok(Some(self.bytes(n as usize)?)),
        }
    }

    fn skip_strs(&mut self, n: usize) -> Result<(), Parse> {
        for _ in 0..n {
            self.str()?;
        }
        Ok(())
    }
}

/// Reads the header and table of contents; returns them and where the
/// first data block starts.
fn parse_head(buf: &[u8]) -> Result<(Toc, usize), Parse> {
    let mut c = Cursor {
        b: buf,
        p: 0,
        int_size: 0,
    };
    if c.bytes(5)? != b"PGDMP" {
        return Err(Parse::Bad("not a custom-format archive"));
    }
    let (major, minor, _rev) = (c.byte()?, c.byte()?, c.byte()?);
    if major != 1 || !VERSIONS.contains(&minor) {
        return Err(Parse::Bad("an archive version this pgbackup does not know"));
    }
    let (int_size, off_size) = (c.byte()? as usize, c.byte()? as usize);
    if !(1..=8).contains(&int_size) || !(1..=8).contains(&off_size) {
        return Err(Parse::Bad("unexpected integer or offset size"));
    }
    c.int_size = int_size;
    if c.byte()? != FORMAT_CUSTOM {
        return Err(Parse::Bad("not a custom-format archive"));
    }
    if minor >= 15 {
        c.byte()?; // compression algorithm
    } else {
        c.int()?; // compression level
    }
    for _ in 0..7 {
        c.int()?; // creation time
    }
    c.skip_strs(3)?; // database, server version, pg_dump version

    let count = c.int()?;
    if count < 0 {
        return Err(Parse::Bad("a negative entry count"));
    }
    let mut fields = HashMap::new();
    for _ in 0..count {
        let id = c.int()?;
        let has_data = c.int()? != 0;
        // tableoid, oid, tag, desc
        c.skip_strs(4)?;
        c.int()?; // section
                  // definition, drop, copy statement, namespace, tablespace, table AM
        c.skip_strs(6)?;
        if minor >= 16 {
            c.int()?; // relkind
        }
        c.skip_strs(2)?; // owner, "false" (was WITH OIDS)
        while c.str()?.is_some() {} // dependencies
        let at = c.p;
        let flag = c.byte()?;
        c.bytes(off_size)?;
        if has_data && flag == OFFSET_NOT_SET {
            fields.insert(id, at as u64);
        }
    }
    Ok((
        Toc {
            int_size,
            off_size,
            fields,
        },
        c.p,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes archives the way pg_dump does (int size 4, offset size 8).
    struct Dump(Vec<u8>);

    impl Dump {
        fn int(&mut self, v: i64) {
            self.0.push(u8::from(v < 0));
            self.0
                .extend_from_slice(&(v.unsigned_abs() as u32).to_le_bytes());
        }
        fn str(&mut self, s: Option<&str>) {
            match s {
                Some(s) => {
                    self.int(s.len() as i64);
                    self.0.extend_from_slice(s.as_bytes());
                }
                None => self.int(-1),
            }
        }
        fn head(minor: u8, entries: &[(i64, bool)]) -> Dump {
            let mut d = Dump(b"PGDMP".to_vec());
            d.0.extend_from_slice(&[1, minor, 0, 4, 8, FORMAT_CUSTOM]);
            if minor >= 15 {
                d.0.push(0);
            } else {
                d.int(0);
            }
            for v in [1, 2, 3, 4, 5, 126, 0] {
                d.int(v);
            }
            for s in ["db", "15.2", "15.2"] {
                d.str(Some(s));
            }
            d.int(entries.len() as i64);
            for (id, data) in entries {
                d.int(*id);
                d.int(i64::from(*data));
                for s in [Some("1259"), Some("16384"), Some("t ü"), Some("TABLE DATA")] {
                    d.str(s);
                }
                d.int(3);
                for s in [
                    Some(""),
                    Some(""),
                    Some("COPY t FROM stdin;\n"),
                    Some("public"),
                    None,
                    Some("heap"),
                ] {
                    d.str(s);
                }
                if minor >= 16 {
                    d.int(i64::from(b'r'));
                }
                d.str(Some("postgres"));
                d.str(Some("false"));
                d.str(Some("7"));
                d.str(None);
                d.0.push(if *data { OFFSET_NOT_SET } else { 3 });
                d.0.extend_from_slice(&[0; 8]);
            }
            d
        }
        fn data(&mut self, id: i64, rows: &[&str]) -> u64 {
            let at = self.0.len() as u64;
            self.0.push(BLOCK_DATA);
            self.int(id);
            for r in rows {
                self.int(r.len() as i64);
                self.0.extend_from_slice(r.as_bytes());
            }
            self.int(0);
            at
        }
        fn blobs(&mut self, id: i64, objects: &[(i64, &[u8])]) -> u64 {
            let at = self.0.len() as u64;
            self.0.push(BLOCK_BLOBS);
            self.int(id);
            for (oid, bytes) in objects {
                self.int(*oid);
                // pg_dump writes no empty chunks: a zero length ends the object.
                if !bytes.is_empty() {
                    self.int(bytes.len() as i64);
                    self.0.extend_from_slice(bytes);
                }
                self.int(0);
            }
            self.int(0);
            at
        }
    }

    /// Feeds `bytes` in pieces of `step` and applies the patches.
    fn record(bytes: &[u8], step: usize) -> (Vec<u8>, Result<Vec<Patch>, &'static str>) {
        let mut r = OffsetRecorder::new(Vec::new());
        for piece in bytes.chunks(step) {
            r.write_all(piece).unwrap();
        }
        let (mut out, patches) = r.into_parts();
        assert_eq!(out, bytes, "passed through unchanged");
        if let Ok(ps) = &patches {
            for p in ps {
                out[p.at as usize..p.at as usize + p.bytes.len()].copy_from_slice(&p.bytes);
            }
        }
        (out, patches)
    }

    /// Where each entry's offset field is, for entries whose offset is unset.
    fn unset_fields(archive: &[u8]) -> HashMap<i64, u64> {
        match parse_head(archive) {
            Ok((toc, _)) => toc.fields,
            Err(_) => panic!("unreadable table of contents"),
        }
    }

    #[test]
    fn fills_in_where_each_block_starts_whatever_the_write_sizes() {
        for minor in [14, 15, 16] {
            let mut d = Dump::head(minor, &[(5, false), (7, true), (9, true), (11, true)]);
            // Blocks in another order than the TOC, as pg_dump may write them.
            let b9 = d.data(9, &["1\tone\n", "2\ttwo\n"]);
            let b11 = d.blobs(11, &[(16400, b"large"), (16401, b"")]);
            let b7 = d.data(7, &[]);
            let fields = unset_fields(&d.0);
            assert_eq!(fields.len(), 3, "entries with data, offsets not set");
            for step in [1, 3, 7, 64, 1 << 20] {
                let (out, patches) = record(&d.0, step);
                let patches = patches.unwrap();
                assert_eq!(patches.len(), 3, "v1.{minor} step {step}");
                assert!(unset_fields(&out).is_empty(), "no offset left unset");
                for (id, block) in [(7, b7), (9, b9), (11, b11)] {
                    let at = fields[&id] as usize;
                    assert_eq!(out[at], OFFSET_SET);
                    let v = u64::from_le_bytes(out[at + 1..at + 9].try_into().unwrap());
                    assert_eq!(v, block, "entry {id}");
                }
            }
        }
    }

    #[test]
    fn gives_up_on_what_it_does_not_know() {
        let mut d = Dump::head(14, &[(7, true)]);
        d.data(7, &["x\n"]);
        // A block for an id the TOC does not list.
        let mut other = Dump(d.0.clone());
        other.data(8, &["y\n"]);
        assert!(record(&other.0, 5).1.is_err());
        // A truncated archive.
        assert!(record(&d.0[..d.0.len() - 2], 5).1.is_err());
        // An unknown block type.
        let mut bad = d.0.clone();
        bad.push(9);
        assert!(record(&bad, 5).1.is_err());
        // A version it does not know, and plain SQL.
        let mut newer = d.0.clone();
        newer[6] = 17;
        assert!(record(&newer, 5).1.is_err());
        assert!(record(b"--\n-- PostgreSQL database dump\n--\n", 5)
            .1
            .is_err());
        // The good one, for contrast.
        assert_eq!(record(&d.0, 5).1.map(|p| p.len()), Ok(1));
    }
}

//! What pgbackup needs to know about a dump while it streams past, as pure
//! logic: the plain-SQL scanner, the table-of-contents entries of both
//! formats, and the writer that holds back a stream's tail.

use std::io::{self, Write};

/// The line pg_dump writes last in a plain dump (a `\unrestrict` line may follow).
pub const PLAIN_COMPLETE: &str = "-- PostgreSQL database dump complete";

/// A table, or a table's data, named in a dump's table of contents.
///
/// pg_dump's listings print names unquoted (`TABLE we ird t 1 postgres`), so
/// `schema name owner` cannot be split when names hold spaces; entries are
/// matched against known tables instead (see [`match_table`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TocEntry {
    /// `TABLE DATA` rather than `TABLE`.
    pub data: bool,
    /// `schema name owner`, as pg_restore --list prints them.
    pub rest: String,
}

impl TocEntry {
    /// `schema name` for messages (the owner dropped).
    pub fn label(&self) -> &str {
        self.rest
            .rsplit_once(' ')
            .map(|(a, _)| a)
            .unwrap_or(&self.rest)
    }
}

/// Parses `pg_restore --list` output: `id; tableoid oid DESC schema name owner`.
pub fn parse_toc_list(text: &str) -> Vec<TocEntry> {
    text.lines()
        .filter(|l| !l.starts_with(';'))
        .filter_map(|l| {
            let (_, rest) = l.split_once("; ")?;
            let (_, rest) = rest.split_once(' ')?;
            let (_, rest) = rest.split_once(' ')?;
            toc_entry(rest)
        })
        .collect()
}

fn toc_entry(desc_and_rest: &str) -> Option<TocEntry> {
    if let Some(r) = desc_and_rest.strip_prefix("TABLE DATA ") {
        return Some(TocEntry {
            data: true,
            rest: r.to_string(),
        });
    }
    if desc_and_rest.starts_with("TABLE ATTACH ") {
        return None;
    }
    desc_and_rest.strip_prefix("TABLE ").map(|r| TocEntry {
        data: false,
        rest: r.to_string(),
    })
}

/// The known table (`schema`, `name`) that a TOC entry names; the longest
/// match wins, so `a b` + `c` is not taken for `a` + `b c` when both exist.
pub fn match_table<'a>(
    entry: &TocEntry,
    tables: &'a [(String, String)],
) -> Option<&'a (String, String)> {
    tables
        .iter()
        .filter(|(s, n)| {
            let sn = format!("{s} {n}");
            entry.rest == sn || entry.rest.starts_with(&format!("{sn} "))
        })
        .max_by_key(|(s, n)| s.len() + n.len())
}

/// A line longer than this passes through unexamined; pg_dump's comment,
/// COPY and transaction lines are far shorter.
const LINE_CAP: usize = 1 << 20;

/// Passes a plain dump through while watching its lines (outside COPY data):
/// pg_dump's `-- Name: ...; Type: TABLE` comments, the completion marker, and
/// the `BEGIN;`/`COMMIT;` pg_dump wraps large objects in. With
/// `one_transaction`, those two are replaced by comments: the whole restore
/// is one transaction whose COMMIT pgbackup sends only after the checksum
/// matched, and an inner COMMIT would end it early.
pub struct PlainScanner<W: Write> {
    inner: W,
    line: Vec<u8>,
    long_line: bool,
    in_copy: bool,
    in_blobs: bool,
    one_transaction: bool,
    /// The completion marker was seen.
    pub complete: bool,
    pub toc: Vec<TocEntry>,
}

impl<W: Write> PlainScanner<W> {
    pub fn new(inner: W, one_transaction: bool) -> Self {
        PlainScanner {
            inner,
            line: Vec::new(),
            long_line: false,
            in_copy: false,
            in_blobs: false,
            one_transaction,
            complete: false,
            toc: Vec::new(),
        }
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Writes out a last line that had no newline.
    pub fn flush_line(&mut self) -> io::Result<()> {
        if !self.line.is_empty() || self.long_line {
            self.end_line()?;
        }
        self.inner.flush()
    }

    fn end_line(&mut self) -> io::Result<()> {
        if self.long_line {
            self.long_line = false;
            return Ok(());
        }
        let line = std::mem::take(&mut self.line);
        let text = String::from_utf8_lossy(&line);
        let t = text.trim_end_matches(['\n', '\r']);
        let mut out: &[u8] = &line;
        if self.in_copy {
            if t == "\\." {
                self.in_copy = false;
            }
        } else if t.starts_with("COPY ") && t.ends_with("FROM stdin;") {
            self.in_copy = true;
        } else if let Some(c) = t.strip_prefix("-- ") {
            self.comment(c);
        } else if self.in_blobs && self.one_transaction && (t == "BEGIN;" || t == "COMMIT;") {
            out = if t == "BEGIN;" {
                b"-- BEGIN; (left out: the restore is one transaction)\n"
            } else {
                b"-- COMMIT; (left out: the restore is one transaction)\n"
            };
        }
        let r = self.inner.write_all(out);
        self.line = line;
        self.line.clear();
        r
    }

    fn comment(&mut self, c: &str) {
        if c == PLAIN_COMPLETE.trim_start_matches("-- ") {
            self.complete = true;
            return;
        }
        let (data, rest) = if let Some(r) = c.strip_prefix("Data for Name: ") {
            (true, r)
        } else if let Some(r) = c.strip_prefix("Name: ") {
            (false, r)
        } else {
            return;
        };
        // `<name>; Type: <type>; Schema: <schema>; Owner: <owner>`
        let Some((name, rest)) = rest.split_once("; Type: ") else {
            return;
        };
        let Some((kind, rest)) = rest.split_once("; Schema: ") else {
            return;
        };
        let (schema, owner) = rest.split_once("; Owner: ").unwrap_or((rest, ""));
        self.in_blobs = kind == "BLOBS" || kind == "LARGE OBJECTS";
        if (data && kind == "TABLE DATA") || (!data && kind == "TABLE") {
            self.toc.push(TocEntry {
                data,
                rest: format!("{schema} {name} {owner}"),
            });
        }
    }
}

impl<W: Write> Write for PlainScanner<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            let (seg, ends) = match data.iter().position(|&b| b == b'\n') {
                Some(i) => (&data[..=i], true),
                None => (data, false),
            };
            data = &data[seg.len()..];
            if self.long_line {
                self.inner.write_all(seg)?;
            } else if self.line.len() + seg.len() > LINE_CAP {
                // Too long to be a line we act on: pass it through as it comes.
                self.inner.write_all(&self.line)?;
                self.inner.write_all(seg)?;
                self.line.clear();
                self.long_line = true;
            } else {
                self.line.extend_from_slice(seg);
            }
            if ends {
                self.end_line()?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Forwards a stream but holds back its end until [`HoldBack::release`].
///
/// pg_restore cannot finish a custom archive, and so cannot COMMIT its
/// single transaction, without the archive's last bytes; holding them until
/// the stored checksum matched means a corrupt download never commits.
/// With the dump's size known (its `dump-bytes` metadata) the held bytes are
/// exactly the archive's last `hold`, and a stream longer than the dump is
/// refused: otherwise bytes appended to an object would be what is held,
/// and pg_restore would see the archive's real end and commit. Without it,
/// the stream's last `hold` bytes are held.
pub struct HoldBack<W: Write> {
    inner: W,
    tail: Vec<u8>,
    hold: usize,
    size: Option<u64>,
    forwarded: u64,
    total: u64,
}

impl<W: Write> HoldBack<W> {
    pub fn new(inner: W, hold: usize, size: Option<u64>) -> Self {
        HoldBack {
            inner,
            tail: Vec::new(),
            hold: hold.max(1),
            size,
            forwarded: 0,
            total: 0,
        }
    }

    /// Writes the held tail.
    pub fn release(&mut self) -> io::Result<()> {
        let tail = std::mem::take(&mut self.tail);
        self.inner.write_all(&tail)?;
        self.forwarded += tail.len() as u64;
        self.inner.flush()
    }
}

impl<W: Write> Write for HoldBack<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.total += data.len() as u64;
        if let Some(size) = self.size {
            if self.total > size {
                return Err(io::Error::other(format!(
                    "the stream is longer than the dump's recorded {size} bytes"
                )));
            }
        }
        self.tail.extend_from_slice(data);
        let n = match self.size {
            Some(size) => {
                let cutoff = size.saturating_sub(self.hold as u64);
                cutoff
                    .saturating_sub(self.forwarded)
                    .min(self.tail.len() as u64) as usize
            }
            None if self.tail.len() >= 2 * self.hold => self.tail.len() - self.hold,
            None => 0,
        };
        if n > 0 {
            self.inner.write_all(&self.tail[..n])?;
            self.tail.drain(..n);
            self.forwarded += n as u64;
        }
        Ok(data.len())
    }

    /// Flushes what was forwarded; the tail stays held.
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &str = "--\n-- PostgreSQL database dump\n--\n\\restrict abc\n\
SET client_encoding = 'UTF8';\n\
--\n-- Name: t 1; Type: TABLE; Schema: we ird; Owner: postgres\n--\n\
CREATE TABLE \"we ird\".\"t 1\" (i integer);\n\
--\n-- Name: p; Type: TABLE; Schema: public; Owner: app\n--\n\
CREATE TABLE public.p (x text);\n\
--\n-- Name: v; Type: VIEW; Schema: public; Owner: app\n--\n\
CREATE VIEW public.v AS SELECT 1;\n\
--\n-- Data for Name: p; Type: TABLE DATA; Schema: public; Owner: app\n--\n\
COPY public.p (x) FROM stdin;\n\
-- Name: fake; Type: TABLE; Schema: public; Owner: app\n\
COMMIT;\n\
\\.\n\
--\n-- Data for Name: BLOBS; Type: BLOBS; Schema: -; Owner: -\n--\n\
BEGIN;\n\
SELECT pg_catalog.lo_open('16412', 131072);\n\
COMMIT;\n\
--\n-- Name: t t_pkey; Type: CONSTRAINT; Schema: s; Owner: postgres\n--\n\
COMMIT;\n\
--\n-- PostgreSQL database dump complete\n--\n\
\\unrestrict abc\n";

    fn scan(input: &str, chunk: usize, one_tx: bool) -> (String, PlainScanner<Vec<u8>>) {
        let mut s = PlainScanner::new(Vec::new(), one_tx);
        for c in input.as_bytes().chunks(chunk) {
            s.write_all(c).unwrap();
        }
        s.flush_line().unwrap();
        let out = String::from_utf8(std::mem::take(s.get_mut())).unwrap();
        (out, s)
    }

    #[test]
    fn plain_scanner_finds_tables_data_and_the_marker() {
        for chunk in [1, 7, 4096] {
            let (out, s) = scan(PLAIN, chunk, false);
            assert_eq!(out, PLAIN, "passes everything through unchanged");
            assert!(s.complete);
            let rests: Vec<(bool, &str)> =
                s.toc.iter().map(|e| (e.data, e.rest.as_str())).collect();
            // The look-alike comment inside COPY data is data, not a table.
            assert_eq!(
                rests,
                vec![
                    (false, "we ird t 1 postgres"),
                    (false, "public p app"),
                    (true, "public p app")
                ]
            );
        }
    }

    #[test]
    fn only_the_large_object_transaction_is_left_out() {
        let (out, _) = scan(PLAIN, 5, true);
        assert!(!out.contains("\nBEGIN;\n"), "{out}");
        assert!(out.contains("-- BEGIN; (left out"));
        // COMMIT; in COPY data and after the blobs section are not pg_dump's blob wrapper.
        assert_eq!(out.matches("\nCOMMIT;\n").count(), 2, "{out}");
        assert_eq!(out.matches("-- COMMIT; (left out").count(), 1);
    }

    #[test]
    fn a_truncated_dump_has_no_marker() {
        let cut = &PLAIN[..PLAIN.find("-- PostgreSQL database dump complete").unwrap()];
        assert!(!scan(cut, 64, false).1.complete);
        let no_newline = PLAIN.trim_end_matches('\n');
        assert!(scan(no_newline, 3, false).1.complete);
    }

    #[test]
    fn long_lines_pass_through() {
        let big = format!(
            "COPY public.p (x) FROM stdin;\n{}\n\\.\n{PLAIN}",
            "y".repeat(LINE_CAP + 10)
        );
        let (out, s) = scan(&big, 1 << 16, false);
        assert_eq!(out, big);
        assert!(s.complete);
    }

    #[test]
    fn toc_list_lines() {
        let list = ";\n; Archive created at 2026-01-25\n;\n\
6; 2615 16397 SCHEMA - we ird postgres\n\
215; 1259 16398 TABLE we ird t 1 postgres\n\
216; 1259 16400 TABLE public p app\n\
217; 0 0 TABLE ATTACH public p_1 app\n\
3339; 0 16398 TABLE DATA we ird t 1 postgres\n\
3359; 0 0 BLOBS - BLOBS \n";
        let toc = parse_toc_list(list);
        assert_eq!(
            toc,
            vec![
                TocEntry {
                    data: false,
                    rest: "we ird t 1 postgres".into()
                },
                TocEntry {
                    data: false,
                    rest: "public p app".into()
                },
                TocEntry {
                    data: true,
                    rest: "we ird t 1 postgres".into()
                },
            ]
        );
        let tables = vec![
            ("we".to_string(), "ird t 1".to_string()),
            ("we ird".to_string(), "t 1".to_string()),
            ("public".to_string(), "p".to_string()),
        ];
        assert_eq!(match_table(&toc[0], &tables).unwrap().0, "we ird");
        assert_eq!(match_table(&toc[1], &tables).unwrap().1, "p");
        assert_eq!(toc[0].label(), "we ird t 1");
        assert!(match_table(&toc[1], &tables[..2]).is_none());
    }

    #[test]
    fn hold_back_keeps_the_tail_until_released() {
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        for size in [None, Some(data.len() as u64)] {
            let mut h = HoldBack::new(Vec::new(), 1000, size);
            for c in data.chunks(777) {
                h.write_all(c).unwrap();
            }
            h.flush().unwrap();
            assert_eq!(h.inner.len(), data.len() - h.tail.len());
            assert!(h.tail.len() >= 1000, "{size:?}");
            if size.is_some() {
                assert_eq!(h.tail.len(), 1000, "exactly the dump's last bytes");
            }
            assert_eq!(&h.inner[..], &data[..h.inner.len()]);
            h.release().unwrap();
            assert_eq!(h.inner, data);
        }
    }

    #[test]
    fn hold_back_refuses_more_than_the_dump() {
        let mut h = HoldBack::new(Vec::new(), 10, Some(100));
        h.write_all(&[1; 95]).unwrap();
        assert_eq!(h.inner.len(), 90);
        assert!(h.write_all(&[2; 6]).is_err(), "appended bytes are refused");
        assert_eq!(
            h.inner.len(),
            90,
            "and the archive's end was never forwarded"
        );
    }
}

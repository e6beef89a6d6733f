//! Streaming a CSV file row by row with its header resolved: header names are matched
//! case-insensitively through an alias table (real exports write `userId`, `sourceID`,
//! `orgSourcedIDs`, `agents`, `grade`, ...), a UTF-8 BOM is stripped, unknown columns are
//! ignored with a warning, `metadata.*` and `ext_*` columns are kept as extras, and every
//! value is trimmed. Problems carry the file, the row's first line and the column.

use crate::problem::Problems;
use std::collections::HashMap;

/// Header spellings seen in the wild, lower case, and the spec's name they stand for.
const ALIASES: &[(&str, &str)] = &[
    ("sourceid", "sourcedId"),
    ("sourcedid", "sourcedId"),
    ("userid", "userIds"),
    ("agents", "agentSourcedIds"),
    ("agentsourceids", "agentSourcedIds"),
    ("grade", "grades"),
    ("orgsourceids", "orgSourcedIds"),
    ("userprofile", "userProfileSourcedId"),
    ("schoolsourceid", "schoolSourcedId"),
    ("classsourceid", "classSourcedId"),
    ("usersourceid", "userSourcedId"),
    ("orgsourceid", "orgSourcedId"),
    ("parentsourceid", "parentSourcedId"),
];

/// A file's resolved header.
#[derive(Debug)]
pub struct Header {
    index: HashMap<&'static str, usize>,
    extras: Vec<(String, usize)>,
    width: usize,
}

impl Header {
    pub fn has(&self, col: &str) -> bool {
        self.index.contains_key(col)
    }
}

/// One row being read; collects its own problems.
pub struct Row<'a> {
    pub file: &'a str,
    pub line: u64,
    rec: &'a csv::StringRecord,
    header: &'a Header,
    pub problems: &'a mut Problems,
    /// Set by any error on this row: the caller drops the row.
    pub failed: bool,
}

impl<'a> Row<'a> {
    /// The trimmed value, `None` when the column is absent or the value blank.
    pub fn get(&self, col: &str) -> Option<&'a str> {
        let i = *self.header.index.get(col)?;
        let v = self.rec.get(i)?.trim();
        (!v.is_empty()).then_some(v)
    }

    pub fn opt(&self, col: &str) -> Option<String> {
        self.get(col).map(str::to_owned)
    }

    /// A required value; an error when blank.
    pub fn req(&mut self, col: &str) -> Option<String> {
        match self.get(col) {
            Some(v) => Some(v.to_owned()),
            None => {
                self.error(Some(col), "missing_value", format!("{col} is required"));
                None
            }
        }
    }

    /// A comma-separated list (one quoted field), items trimmed, blanks dropped.
    pub fn list(&self, col: &str) -> Vec<String> {
        self.get(col)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn error(&mut self, col: Option<&str>, code: &str, reason: impl Into<String>) {
        self.failed = true;
        self.problems
            .error(self.file, Some(self.line), col, code, reason);
    }

    pub fn warn(&mut self, col: Option<&str>, code: &str, reason: impl Into<String>) {
        self.problems
            .warn(self.file, Some(self.line), col, code, reason);
    }

    /// `metadata.*` / `ext_*` values of the row (non-blank), as a JSON object.
    pub fn extra(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for (name, i) in &self.header.extras {
            if let Some(v) = self.rec.get(*i).map(str::trim).filter(|v| !v.is_empty()) {
                map.insert(name.clone(), serde_json::Value::String(v.to_owned()));
            }
        }
        serde_json::Value::Object(map)
    }
}

/// How a file's columns are checked.
pub struct Columns {
    /// Every column the spec defines for this file and version (spec spelling).
    pub known: &'static [&'static str],
    /// Columns that must be in the header (an error otherwise).
    pub required: &'static [&'static str],
    /// Columns the spec requires but Homeroom does not use: a warning when absent.
    pub expected: &'static [&'static str],
}

fn resolve(name: &str, known: &[&'static str]) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    if let Some(k) = known.iter().find(|k| k.to_ascii_lowercase() == lower) {
        return Some(k);
    }
    let (_, canon) = ALIASES.iter().find(|(a, _)| *a == lower)?;
    known.iter().find(|k| *k == canon).copied()
}

/// Line numbers from byte offsets. The csv crate's own line count skips blank lines and
/// miscounts CRLF files, and a record's byte offset is where the previous one ended
/// (blank lines and line breaks included), so those are skipped first. Offsets only grow,
/// so counting is incremental.
struct LineCounter<'a> {
    bytes: &'a [u8],
    pos: usize,
    line: u64,
}

impl<'a> LineCounter<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        LineCounter {
            bytes,
            pos: 0,
            line: 1,
        }
    }

    fn line_at(&mut self, offset: u64) -> u64 {
        let mut start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.bytes.len());
        while start < self.bytes.len() && matches!(self.bytes[start], b'\r' | b'\n') {
            start += 1;
        }
        if start >= self.pos {
            self.line += self.bytes[self.pos..start]
                .iter()
                .filter(|b| **b == b'\n')
                .count() as u64;
            self.pos = start;
        }
        self.line
    }
}

/// Reads `bytes` as CSV, resolves the header against `cols`, then calls `on_row` for
/// each well-formed row. Returns the number of data rows seen, or `None` when the header
/// itself is unusable (errors recorded).
pub fn read(
    file: &str,
    bytes: &[u8],
    cols: &Columns,
    problems: &mut Problems,
    mut on_row: impl FnMut(&mut Row<'_>),
) -> Option<usize> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut records = reader.records();
    let head = match records.next() {
        None => {
            problems.error(
                file,
                Some(1),
                None,
                "missing_header",
                "the file is empty (no header row)",
            );
            return None;
        }
        Some(Err(e)) => {
            problems.error(
                file,
                Some(1),
                None,
                "malformed_row",
                format!("unreadable header: {e}"),
            );
            return None;
        }
        Some(Ok(h)) => h,
    };
    let mut header = Header {
        index: HashMap::new(),
        extras: Vec::new(),
        width: head.len(),
    };
    let mut bad_header = false;
    for (i, raw) in head.iter().enumerate() {
        let name = raw.trim_start_matches('\u{feff}').trim();
        if name.is_empty() {
            continue;
        }
        let lower = name.to_ascii_lowercase();
        if let Some(canon) = resolve(name, cols.known) {
            if header.index.insert(canon, i).is_some() {
                problems.error(
                    file,
                    Some(1),
                    Some(canon),
                    "duplicate_column",
                    format!("column {canon} appears twice in the header (as {name:?} again)"),
                );
                bad_header = true;
            }
        } else if lower.starts_with("metadata.")
            || lower.starts_with("ext_")
            || lower.starts_with("ext:")
        {
            header.extras.push((name.to_owned(), i));
        } else {
            problems.warn(
                file,
                Some(1),
                Some(name),
                "unknown_column",
                format!("unknown column {name:?} ignored"),
            );
        }
    }
    for req in cols.required {
        if !header.has(req) {
            problems.error(
                file,
                Some(1),
                Some(req),
                "missing_column",
                format!("required column {req} is missing from the header"),
            );
            bad_header = true;
        }
    }
    for exp in cols.expected {
        if !header.has(exp) {
            problems.warn(
                file,
                Some(1),
                Some(exp),
                "missing_column",
                format!("column {exp} (required by the spec, unused by Homeroom) is missing"),
            );
        }
    }
    if bad_header {
        return None;
    }

    let mut rows = 0usize;
    let mut lines = LineCounter::new(bytes);
    let mut last_line = 1u64;
    for rec in records {
        match rec {
            Err(e) => {
                let line = e
                    .position()
                    .map(|p| lines.line_at(p.byte()))
                    .unwrap_or(last_line + 1);
                last_line = line;
                rows += 1;
                let reason = match e.kind() {
                    csv::ErrorKind::Utf8 { .. } => "the row is not valid UTF-8".to_owned(),
                    _ => format!("unreadable row: {e}"),
                };
                problems.error(file, Some(line), None, "malformed_row", reason);
            }
            Ok(rec) => {
                let line = rec
                    .position()
                    .map(|p| lines.line_at(p.byte()))
                    .unwrap_or(last_line + 1);
                last_line = line;
                if rec.len() == 1 && rec.get(0).is_some_and(|f| f.trim().is_empty()) {
                    continue; // a blank line
                }
                rows += 1;
                if rec.len() != header.width {
                    problems.error(
                        file,
                        Some(line),
                        None,
                        "malformed_row",
                        format!(
                            "the row has {} fields but the header has {}",
                            rec.len(),
                            header.width
                        ),
                    );
                    continue;
                }
                let mut row = Row {
                    file,
                    line,
                    rec: &rec,
                    header: &header,
                    problems,
                    failed: false,
                };
                on_row(&mut row);
            }
        }
    }
    Some(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLS: Columns = Columns {
        known: &["sourcedId", "userIds", "agentSourcedIds", "name"],
        required: &["sourcedId", "name"],
        expected: &[],
    };

    type Seen = (u64, Option<String>, Vec<String>, String);

    fn collect(bytes: &[u8]) -> (Option<usize>, Vec<Seen>, Problems) {
        let mut p = Problems::new();
        let mut out = Vec::new();
        let n = read("x.csv", bytes, &COLS, &mut p, |r| {
            out.push((
                r.line,
                r.opt("sourcedId"),
                r.list("userIds"),
                r.extra().to_string(),
            ));
        });
        (n, out, p)
    }

    #[test]
    fn bom_case_aliases_and_extras() {
        let (n, rows, p) = collect(
            b"\xEF\xBB\xBFSOURCEDID,UserId,Name,metadata.color,surprise\n u1 ,\"{LDAP:a}, {LTI:b}\",Ada,red,x\n",
        );
        assert_eq!(n, Some(1));
        assert_eq!(rows[0].0, 2);
        assert_eq!(rows[0].1.as_deref(), Some("u1"));
        assert_eq!(rows[0].2, vec!["{LDAP:a}", "{LTI:b}"]);
        assert_eq!(rows[0].3, r#"{"metadata.color":"red"}"#);
        assert_eq!(p.warnings.len(), 1);
        assert_eq!(p.warnings[0].column.as_deref(), Some("surprise"));
    }

    #[test]
    fn missing_required_column_stops_the_file() {
        let (n, rows, p) = collect(b"sourcedId\nu1\n");
        assert_eq!(n, None);
        assert!(rows.is_empty());
        let e = p.find("x.csv", Some(1), Some("name")).unwrap();
        assert_eq!(e.code, "missing_column");
    }

    #[test]
    fn short_rows_and_multiline_fields_keep_line_numbers() {
        let (n, rows, p) = collect(b"sourcedId,name\nu1,\"two\nlines\"\nu2\n\nu3,ok\n");
        assert_eq!(n, Some(3));
        assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), vec![2, 6]);
        let e = p.find("x.csv", Some(4), None).unwrap();
        assert_eq!(e.code, "malformed_row");
    }

    #[test]
    fn crlf_and_blank_lines() {
        let (_, rows, _) = collect(b"sourcedId,name\r\nu1,a\r\n\r\n\r\nu2,b\r\n");
        assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), vec![2, 5]);
    }

    #[test]
    fn invalid_utf8_is_a_row_error() {
        let (_, rows, p) = collect(b"sourcedId,name\nu1,\xff\xfe\nu2,b\n");
        assert_eq!(rows.len(), 1);
        assert_eq!(
            p.find("x.csv", Some(2), None).unwrap().code,
            "malformed_row"
        );
    }

    #[test]
    fn duplicate_column_after_aliasing() {
        let (n, _, p) = collect(b"sourcedId,sourceID,name\n");
        assert_eq!(n, None);
        assert_eq!(p.errors[0].code, "duplicate_column");
    }
}

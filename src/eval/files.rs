//! Reading evaluation inputs: one item per line, or JSON Lines. Every error names the file and
//! the line.

use anyhow::{bail, ensure, Context, Result};
use std::path::Path;

/// The items of `path`: its lines (a final newline does not start an extra, empty item; empty
/// lines in between are items), or for a `.jsonl` file one item per line taken from the JSON
/// string on that line or from the string (or number) field `field` of the object on it.
pub fn read_items(path: &Path, field: &str) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    ensure!(!bytes.is_empty(), "{} is empty", path.display());
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
            bail!("{} is not valid UTF-8 (line {line}, byte {at})", path.display());
        }
    };
    let body = text.strip_suffix('\n').unwrap_or(&text);
    let lines = body.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    if path.extension().is_some_and(|e| e == "jsonl") {
        lines
            .enumerate()
            .map(|(i, line)| {
                let at = || format!("{} line {}", path.display(), i + 1);
                let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{}: not JSON", at()))?;
                match &v {
                    serde_json::Value::String(s) => Ok(s.clone()),
                    serde_json::Value::Object(o) => match o.get(field) {
                        Some(serde_json::Value::String(s)) => Ok(s.clone()),
                        Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
                        Some(_) => bail!("{}: field {field:?} is not a string or number", at()),
                        None => bail!("{}: no field {field:?}", at()),
                    },
                    _ => bail!("{}: expected a JSON string or object", at()),
                }
            })
            .collect()
    } else {
        Ok(lines.map(String::from).collect())
    }
}

/// Items of several files that must align line by line (hypotheses and their references).
pub fn read_aligned(paths: &[&Path], field: &str) -> Result<Vec<Vec<String>>> {
    let sets: Vec<Vec<String>> = paths.iter().map(|p| read_items(p, field)).collect::<Result<_>>()?;
    if let Some(first) = sets.first() {
        for (p, s) in paths.iter().zip(&sets).skip(1) {
            ensure!(
                s.len() == first.len(),
                "{} has {} items but {} has {}: the files must be aligned line by line",
                p.display(),
                s.len(),
                paths[0].display(),
                first.len()
            );
        }
    }
    Ok(sets)
}

/// A CSV file (RFC 4180: comma-separated, fields optionally double-quoted, `""` inside quotes
/// for a quote, newlines allowed inside quoted fields, LF or CRLF) with a header row.
#[derive(Clone, Debug)]
pub struct CsvTable {
    /// The file, for error messages.
    pub path: String,
    pub header: Vec<String>,
    /// Data records, each with exactly `header.len()` fields.
    pub rows: Vec<Vec<String>>,
}

impl CsvTable {
    /// Reads and parses `path`; a record with a different number of fields than the header is
    /// an error naming its record number (1 = the first data record).
    pub fn read(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read {} as UTF-8 text", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses CSV `text`; `path` only names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Self> {
        let mut records = parse_csv_records(text).with_context(|| format!("{path} is not valid CSV"))?;
        ensure!(!records.is_empty(), "{path} is empty (expected a header row)");
        let header = records.remove(0);
        for (i, r) in records.iter().enumerate() {
            ensure!(
                r.len() == header.len(),
                "{path}: record {} has {} fields but the header has {}",
                i + 1,
                r.len(),
                header.len()
            );
        }
        Ok(CsvTable { path: path.to_string(), header, rows: records })
    }

    /// The index of column `name`, or an error that names it and lists the columns there are.
    pub fn column_index(&self, name: &str) -> Result<usize> {
        self.header.iter().position(|h| h == name).ok_or_else(|| {
            anyhow::anyhow!("{} has no column {name:?} (its columns: {})", self.path, self.header.join(", "))
        })
    }

    /// Every value of column `name`, in record order.
    pub fn column(&self, name: &str) -> Result<Vec<String>> {
        let i = self.column_index(name)?;
        Ok(self.rows.iter().map(|r| r[i].clone()).collect())
    }
}

/// The records of RFC-4180 CSV text (a final line break does not start an empty record).
fn parse_csv_records(text: &str) -> Result<Vec<Vec<String>>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    // Whether the current record has anything in it yet (so "\n\n" at the end adds nothing).
    let mut started = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if field.is_empty() => {
                started = true;
                let open_line = line;
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some('"') => break,
                        Some(ch) => {
                            line += usize::from(ch == '\n');
                            field.push(ch);
                        }
                        None => bail!("line {open_line}: a quoted field is never closed"),
                    }
                }
                match chars.peek() {
                    None | Some(',') | Some('\n') | Some('\r') => {}
                    Some(other) => bail!("line {line}: {other:?} after a closing quote (expected , or a line end)"),
                }
            }
            ',' => {
                started = true;
                record.push(std::mem::take(&mut field));
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                line += 1;
                if started || !field.is_empty() {
                    record.push(std::mem::take(&mut field));
                    records.push(std::mem::take(&mut record));
                }
                started = false;
            }
            _ => {
                started = true;
                field.push(c);
            }
        }
    }
    if started || !field.is_empty() {
        record.push(field);
        records.push(record);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_jsonl_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        std::fs::write(&p, "one\n\nthree\n").unwrap();
        assert_eq!(read_items(&p, "text").unwrap(), ["one", "", "three"]);
        std::fs::write(&p, "no final newline\r\nx").unwrap();
        assert_eq!(read_items(&p, "text").unwrap(), ["no final newline", "x"]);
        let j = dir.path().join("a.jsonl");
        std::fs::write(&j, "{\"label\": \"pos\"}\n\"neg\"\n{\"label\": 3}\n").unwrap();
        assert_eq!(read_items(&j, "label").unwrap(), ["pos", "neg", "3"]);
        std::fs::write(&j, "{\"label\": \"pos\"}\n{\"other\": 1}\n").unwrap();
        let e = format!("{:#}", read_items(&j, "label").unwrap_err());
        assert!(e.contains("line 2") && e.contains("no field \"label\""), "{e}");
        std::fs::write(&j, "{oops\n").unwrap();
        assert!(format!("{:#}", read_items(&j, "label").unwrap_err()).contains("line 1: not JSON"));
        std::fs::write(&p, b"ok\nbad \xff\n").unwrap();
        let e = format!("{:#}", read_items(&p, "text").unwrap_err());
        assert!(e.contains("not valid UTF-8 (line 2"), "{e}");
        std::fs::write(&p, "").unwrap();
        assert!(format!("{:#}", read_items(&p, "text").unwrap_err()).contains("is empty"));
        assert!(format!("{:#}", read_items(&dir.path().join("missing"), "text").unwrap_err()).contains("cannot read"));
        let q = dir.path().join("b.txt");
        std::fs::write(&p, "a\nb\n").unwrap();
        std::fs::write(&q, "a\n").unwrap();
        let e = format!("{:#}", read_aligned(&[&p, &q], "text").unwrap_err());
        assert!(e.contains("1 items") && e.contains("aligned"), "{e}");
    }

    #[test]
    fn csv_quotes_newlines_and_errors() {
        let t = CsvTable::parse(",a,b\r\n0,\"x, \"\"y\"\"\",\"two\nlines\"\n1,,z\n", "t.csv").unwrap();
        assert_eq!(t.header, ["", "a", "b"]);
        assert_eq!(t.rows, [vec!["0", "x, \"y\"", "two\nlines"], vec!["1", "", "z"]]);
        assert_eq!(t.column("b").unwrap(), ["two\nlines", "z"]);
        let e = format!("{:#}", t.column("sent_more").unwrap_err());
        assert!(e.contains("no column \"sent_more\"") && e.contains("columns: , a, b"), "{e}");
        let e = format!("{:#}", CsvTable::parse("a,b\n1\n", "t.csv").unwrap_err());
        assert!(e.contains("record 1 has 1 fields but the header has 2"), "{e}");
        let e = format!("{:#}", CsvTable::parse("a\n\"open\n", "t.csv").unwrap_err());
        assert!(e.contains("never closed"), "{e}");
        let e = format!("{:#}", CsvTable::parse("a\n\"x\"y\n", "t.csv").unwrap_err());
        assert!(e.contains("after a closing quote"), "{e}");
        assert!(format!("{:#}", CsvTable::parse("", "t.csv").unwrap_err()).contains("empty"));
    }
}

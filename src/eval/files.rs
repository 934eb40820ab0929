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
}

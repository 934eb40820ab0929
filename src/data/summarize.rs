//! Summarization records in JSON Lines (DialogSum's format) and the utterances of a dialogue.
//!
//! One JSON object per line; the text to summarize and its summaries are string fields named by
//! the caller (DialogSum: `dialogue`, and `summary` in train/dev, `summary1` .. `summary3` in
//! test). Blank lines are skipped; anything else that is not an object with the named string
//! fields is an error naming the file and the line.
//!
//! An utterance is one `\n`-separated turn of a dialogue, trimmed of surrounding whitespace,
//! with its speaker tag kept (`#Person1#: Hello.`); empty turns are not utterances.

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::{Map, Value};
use std::path::Path;

/// One record: the source text and its reference summaries, in field order.
#[derive(Clone, Debug, PartialEq)]
pub struct SummaryRecord {
    /// 1-based line of the record in its file.
    pub line: usize,
    /// The record's `fname` or `id` field when it has one (to label outputs).
    pub id: Option<String>,
    pub source: String,
    pub references: Vec<String>,
}

/// Reads the JSON objects of a JSON Lines file with their 1-based line numbers.
fn read_objects(path: &Path) -> Result<Vec<(usize, Map<String, Value>)>> {
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = String::from_utf8(text).map_err(|e| {
        let line = e.as_bytes()[..e.utf8_error().valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
        anyhow!("{}: line {line} is not valid UTF-8", path.display())
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line)
            .map_err(|e| anyhow!("{}: line {}: not valid JSON: {e}", path.display(), i + 1))?;
        let Value::Object(obj) = value else {
            bail!("{}: line {}: expected a JSON object, got {}", path.display(), i + 1, kind(&value));
        };
        out.push((i + 1, obj));
    }
    ensure!(!out.is_empty(), "{} holds no records", path.display());
    Ok(out)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The string field `name` of the record on `line` of `path`.
fn string_field(obj: &Map<String, Value>, name: &str, path: &Path, line: usize) -> Result<String> {
    match obj.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => bail!("{}: line {line}: field {name:?} must be a string, got {}", path.display(), kind(other)),
        None => bail!("{}: line {line}: the record has no field {name:?}", path.display()),
    }
}

/// The reference fields of records whose first object is `first`: `explicit` when given, else
/// `target` when the record has it, else `target1`, `target2`, ... (consecutive from 1).
/// Empty when none is found (then there is nothing to score against).
fn reference_fields(first: &Map<String, Value>, target: &str, explicit: &[String]) -> Vec<String> {
    if !explicit.is_empty() {
        return explicit.to_vec();
    }
    if first.contains_key(target) {
        return vec![target.to_owned()];
    }
    (1..).map(|k| format!("{target}{k}")).take_while(|f| first.contains_key(f)).collect()
}

/// Reads summarization records: `source_field` from each, and the references named by
/// `reference_fields`, or found from `target_field` as described at `reference_fields` (on
/// the first record; every record must then have them). With `require_references`, a file
/// without any is an error.
pub fn read_records(
    path: &Path,
    source_field: &str,
    target_field: &str,
    reference_fields_given: &[String],
    require_references: bool,
) -> Result<Vec<SummaryRecord>> {
    let objects = read_objects(path)?;
    let fields = reference_fields(&objects[0].1, target_field, reference_fields_given);
    ensure!(
        !(require_references && fields.is_empty()),
        "{}: line {}: the record has no field {target_field:?} (nor {target_field}1, {target_field}2, ...)",
        path.display(),
        objects[0].0
    );
    objects
        .iter()
        .map(|(line, obj)| {
            let id = ["fname", "id"].iter().find_map(|k| obj.get(*k).and_then(Value::as_str)).map(str::to_owned);
            Ok(SummaryRecord {
                line: *line,
                id,
                source: string_field(obj, source_field, path, *line)?,
                references: fields.iter().map(|f| string_field(obj, f, path, *line)).collect::<Result<_>>()?,
            })
        })
        .collect()
}

/// (source, target) pairs for training: `source_field` and `target_field` of every record.
pub fn read_pairs(path: &Path, source_field: &str, target_field: &str) -> Result<Vec<(String, String)>> {
    let objects = read_objects(path)?;
    objects
        .iter()
        .map(|(line, obj)| {
            Ok((string_field(obj, source_field, path, *line)?, string_field(obj, target_field, path, *line)?))
        })
        .collect()
}

/// The utterances of a dialogue: its `\n`-separated turns, trimmed, empty ones dropped.
pub fn utterances(dialogue: &str) -> Vec<&str> {
    dialogue.split('\n').map(str::trim).filter(|u| !u.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utterances_split_on_newlines() {
        assert_eq!(utterances("#Person1#: Hi.\n\n  #Person2#: Hello!  \n"), ["#Person1#: Hi.", "#Person2#: Hello!"]);
        assert!(utterances(" \n").is_empty());
    }
}

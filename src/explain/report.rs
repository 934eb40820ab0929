//! `lmlab report`: every explain result present, in one self-contained HTML page.
//!
//! The page has no external resources (no scripts, fonts or style sheets from elsewhere): the
//! CSS is inline, each chart's SVG is inlined (or its PNG embedded as a `data:` URI when the
//! result has no SVG), so the one file can be mailed, archived or opened offline. Every string
//! of a result is escaped: result.json files are data, never markup.

use super::{ChartFiles, ExplainResult, Machine, Question, Table, QUESTIONS};
use anyhow::{bail, ensure, Context, Result};
use std::fmt::Write as _;
use std::path::Path;

/// What [`write_report`] put in the page.
#[derive(Clone, Debug, Default)]
pub struct ReportSummary {
    /// Questions with a result, and questions listed as pending.
    pub answered: usize,
    pub pending: usize,
    pub charts: usize,
}

/// Writes the report of the results under `results_dir` (`ID/result.json` and its charts) to
/// `out`.
pub fn write_report(results_dir: &Path, out: &Path) -> Result<ReportSummary> {
    let results = read_results(results_dir)?;
    ensure!(
        !results.is_empty(),
        "no explain results in {0}: run `lmlab explain run ID --out {0}` first (ID from `lmlab explain list`, or `all`)",
        results_dir.display()
    );
    let mut summary = ReportSummary { answered: results.len(), pending: QUESTIONS.len() - results.len(), charts: 0 };
    let mut body = String::new();
    for (q, r) in &results {
        body += &section(results_dir, q, r, &mut summary.charts)?;
    }
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>lmlab explain: the classic Transformer questions, measured</title>\n\
         <style>{CSS}</style>\n</head>\n<body>\n{}{}<main>\n{body}</main>\n</body>\n</html>\n",
        header(&results, &summary),
        toc(&results),
    );
    crate::io::atomic::write_file_atomic(out, html.as_bytes())?;
    Ok(summary)
}

/// The results present, in the order of [`QUESTIONS`].
fn read_results(dir: &Path) -> Result<Vec<(&'static Question, ExplainResult)>> {
    let mut results = Vec::new();
    for q in QUESTIONS {
        let path = dir.join(q.id).join("result.json");
        if !path.is_file() {
            continue;
        }
        let r = ExplainResult::read(&path)?;
        ensure!(r.id == q.id, "{} is the result of {:?}, not of {:?}", path.display(), r.id, q.id);
        results.push((q, r));
    }
    Ok(results)
}

const CSS: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;line-height:1.5;color:#222;\
max-width:62em;margin:0 auto;padding:1em 1.5em 4em}\
h1{margin-bottom:.2em}h2{margin-top:2.2em;border-bottom:1px solid #ddd;padding-bottom:.2em}\
.meta{color:#555;font-size:.92em}\
.caption{font-weight:600;margin:1.2em 0 0}\
nav ol{padding-left:2.2em}nav li{margin:.15em 0}nav .pending{color:#777}\
nav .why{font-size:.9em}\
code,pre{font-family:ui-monospace,'DejaVu Sans Mono',Menlo,Consolas,monospace;font-size:.9em}\
code{background:#f3f3f3;padding:0 .25em;border-radius:3px}\
pre{background:#f6f6f6;padding:.6em .8em;overflow-x:auto}\
figure{margin:1.2em 0}figure svg,figure img{display:block;max-width:100%;height:auto}\
figcaption{color:#555;font-size:.9em;margin-top:.3em}\
table{border-collapse:collapse;margin:1em 0;font-size:.92em}\
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#f3f3f3}\
td{font-variant-numeric:tabular-nums}\
details{margin:.8em 0}summary{cursor:pointer;color:#444}";

/// `s` with the HTML special characters escaped (safe in text and in quoted attributes).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escaped prose, with `backquoted` spans as `<code>` (commands and file names in findings and
/// in the reasons a question is pending).
fn prose(s: &str) -> String {
    let escaped = escape(s);
    let parts: Vec<&str> = escaped.split('`').collect();
    if parts.len().is_multiple_of(2) {
        return escaped; // an unpaired backquote: leave the text as it is
    }
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{part}</code>");
        } else {
            out += part;
        }
    }
    out
}

/// The anchor of a question's section.
fn anchor(q: &Question) -> String {
    format!("q{}-{}", q.number, escape(q.id))
}

fn machine_line(m: &Machine) -> String {
    format!("{} ({}, {} cores, {} threads, {})", m.cpu, m.isa, m.cores, m.threads, m.os)
}

fn duration(seconds: f64) -> String {
    if seconds < 59.95 {
        return format!("{seconds:.1} s");
    }
    let s = seconds.round() as u64;
    format!("{} min {} s", s / 60, s % 60)
}

/// The distinct values of `f` over the results, in order of first appearance.
fn distinct(results: &[(&Question, ExplainResult)], f: impl Fn(&ExplainResult) -> String) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for (_, r) in results {
        let v = f(r);
        if !seen.contains(&v) {
            seen.push(v);
        }
    }
    seen
}

/// The title, and the versions and machines the results were measured with.
fn header(results: &[(&Question, ExplainResult)], s: &ReportSummary) -> String {
    let versions = distinct(results, |r| r.lmlab_version.clone());
    let machines = distinct(results, |r| machine_line(&r.machine));
    format!(
        "<header>\n<h1>The classic Transformer questions, measured</h1>\n\
         <p class=\"meta\" id=\"provenance\">lmlab {} · {} {}</p>\n\
         <p>{} of {} questions answered by an experiment anyone can re-run ({} charts){}. \
         Each section gives the question, the set-up, the charts, \
         the numbers, the findings written from them, and the command that reproduces them.</p>\n</header>\n",
        escape(&versions.join(", ")),
        if machines.len() == 1 { "machine:" } else { "machines:" },
        escape(&machines.join("; ")),
        s.answered,
        QUESTIONS.len(),
        s.charts,
        if s.answered < QUESTIONS.len() { "; the others are marked below, pending or not run yet" } else { "" },
    )
}

/// The table of contents: every question by number, answered ones linked to their sections.
fn toc(results: &[(&Question, ExplainResult)]) -> String {
    let mut out = String::from("<nav id=\"toc\">\n<h2>Questions</h2>\n<ol>\n");
    for q in QUESTIONS {
        let title = escape(q.title);
        if results.iter().any(|(a, _)| a.id == q.id) {
            let _ = writeln!(out, "<li value=\"{}\"><a href=\"#{}\">{title}</a></li>", q.number, anchor(q));
        } else {
            let why = match q.pending {
                Some(why) => format!("pending: {}", prose(why)),
                None => format!("not run yet: <code>lmlab explain run {}</code>", escape(q.id)),
            };
            let _ = writeln!(
                out,
                "<li value=\"{}\" class=\"pending\">{title} <span class=\"why\">— {why}</span></li>",
                q.number
            );
        }
    }
    out + "</ol>\n</nav>\n"
}

/// One answered question: its set-up, charts, table, findings and how to reproduce it.
fn section(dir: &Path, q: &Question, r: &ExplainResult, charts: &mut usize) -> Result<String> {
    let mut out = format!("<section id=\"{}\">\n<h2>{}. {}</h2>\n", anchor(q), q.number, escape(&r.title));
    let _ = writeln!(out, "<h3>Set-up</h3>\n<p class=\"setup\">{}</p>", prose(&r.setup));
    for c in &r.charts {
        out += &chart(&dir.join(q.id), c)?;
        *charts += 1;
    }
    if !r.table.columns.is_empty() {
        out += &table(&r.table);
    }
    for (caption, t) in &r.more_tables {
        let _ = writeln!(out, "<p class=\"caption\">{}</p>", escape(caption));
        out += &table(t);
    }
    if !r.findings.is_empty() {
        out += "<h3>Findings</h3>\n<ul class=\"findings\">\n";
        for f in &r.findings {
            let _ = writeln!(out, "<li>{}</li>", prose(f));
        }
        out += "</ul>\n";
    }
    let seeds: Vec<String> = r.seeds.iter().map(|s| s.to_string()).collect();
    let _ = writeln!(
        out,
        "<p>Reproduce: <code class=\"command\">{}</code></p>\n\
         <p class=\"meta\">budget {} · {} · seeds {} · lmlab {} · {}</p>",
        escape(&r.command),
        r.budget.name(),
        duration(r.seconds),
        if seeds.is_empty() { "none".to_string() } else { seeds.join(", ") },
        escape(&r.lmlab_version),
        escape(&machine_line(&r.machine)),
    );
    if !r.configs.is_empty() {
        out += "<details>\n<summary>The resolved run config of each arm</summary>\n";
        for (arm, config) in &r.configs {
            let _ = writeln!(out, "<h4>{}</h4>\n<pre>{}</pre>", escape(arm), escape(config));
        }
        out += "</details>\n";
    }
    Ok(out + "</section>\n")
}

/// A result's table: the column names, then the rows of formatted cells.
fn table(t: &Table) -> String {
    let row = |cells: &[String], tag: &str| -> String {
        let cells: String = cells.iter().map(|c| format!("<{tag}>{}</{tag}>", escape(c))).collect();
        format!("<tr>{cells}</tr>\n")
    };
    let body: String = t.rows.iter().map(|r| row(r, "td")).collect();
    format!("<table>\n<thead>{}</thead>\n<tbody>\n{body}</tbody>\n</table>\n", row(&t.columns, "th").trim_end())
}

/// A chart as a figure: its SVG inline, or else its PNG as a `data:` URI.
fn chart(dir: &Path, c: &ChartFiles) -> Result<String> {
    let svg = (!c.svg.is_empty()).then(|| dir.join(&c.svg));
    let png = (!c.png.is_empty()).then(|| dir.join(&c.png));
    let content = match (svg, png) {
        (Some(svg), _) if svg.is_file() => {
            let text = std::fs::read_to_string(&svg).with_context(|| format!("cannot read chart {}", svg.display()))?;
            let inline = inline_svg(&text).with_context(|| format!("chart {} is not an SVG image", svg.display()))?;
            // The title is the accessible name of the figure (the SVG has none of its own).
            format!("<div role=\"img\" aria-label=\"{}\">{inline}</div>", escape(&c.title))
        }
        (_, Some(png)) if png.is_file() => {
            let bytes = std::fs::read(&png).with_context(|| format!("cannot read chart {}", png.display()))?;
            ensure!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "chart {} is not a PNG image", png.display());
            format!("<img alt=\"{}\" src=\"data:image/png;base64,{}\">", escape(&c.title), crate::util::base64(&bytes))
        }
        (svg, png) => {
            let missing: Vec<String> = svg.iter().chain(png.iter()).map(|p| p.display().to_string()).collect();
            bail!(
                "chart {:?}: missing file {}",
                c.title,
                if missing.is_empty() { "(none named)".into() } else { missing.join(" and ") }
            );
        }
    };
    Ok(format!("<figure class=\"chart\">\n{content}\n<figcaption>{}</figcaption>\n</figure>\n", escape(&c.title)))
}

/// The `<svg …>…</svg>` element of an SVG file, without the XML declaration, doctype and
/// comments before it (which are not allowed inside HTML).
fn inline_svg(text: &str) -> Result<&str> {
    let mut rest = text.trim_start_matches('\u{feff}').trim_start();
    loop {
        if rest.starts_with("<?") {
            rest = &rest[rest.find("?>").context("unterminated <? … ?>")? + 2..];
        } else if rest.starts_with("<!--") {
            rest = &rest[rest.find("-->").context("unterminated comment")? + 3..];
        } else if rest.starts_with("<!") {
            rest = &rest[rest.find('>').context("unterminated <!DOCTYPE …>")? + 1..];
        } else {
            break;
        }
        rest = rest.trim_start();
    }
    let rest = rest.trim_end();
    ensure!(rest.starts_with("<svg") && rest.ends_with("</svg>"), "no <svg> … </svg> element");
    Ok(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_keeps_backquoted_code() {
        assert_eq!(escape("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
        assert_eq!(prose("run `lmlab <x>` now"), "run <code>lmlab &lt;x&gt;</code> now");
        assert_eq!(prose("an odd ` backquote"), "an odd ` backquote");
    }

    #[test]
    fn svg_prologue_is_stripped() {
        let text = "\u{feff}<?xml version=\"1.0\"?>\n<!-- made by hand -->\n<!DOCTYPE svg PUBLIC \"-//W3C//DTD SVG 1.1//EN\" \"x.dtd\">\n<svg width=\"2\"><rect/></svg>\n";
        assert_eq!(inline_svg(text).unwrap(), "<svg width=\"2\"><rect/></svg>");
        assert!(inline_svg("<html></html>").is_err());
        assert!(inline_svg("<?xml version=\"1.0\"").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration(12.34), "12.3 s");
        assert_eq!(duration(125.0), "2 min 5 s");
        assert_eq!(duration(119.7), "2 min 0 s");
    }
}

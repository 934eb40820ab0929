//! `lmlab report` (src/inspect/explain/report.rs): hand-written results in a temporary directory
//! → one self-contained HTML page.
//!
//! `LMLAB_REPORT_DEMO=PATH cargo test --release --test explain_report` also writes the page of
//! `report_of_plotted_charts` (real plotters charts) to PATH, for
//! scripts/check_report_chromium.py.

use lmlab::explain::{write_report, Budget, ChartFiles, ExplainResult, Machine, Table, QUESTIONS};
use lmlab::inspect::plot::{plot_xy, XyChart, XySeries};
use std::fs;
use std::path::Path;

fn result(id: &str) -> ExplainResult {
    let q = QUESTIONS.iter().find(|q| q.id == id).unwrap();
    ExplainResult {
        id: id.into(),
        question: q.number,
        title: q.title.into(),
        setup: format!("A hand-written result of `{id}` for the report test."),
        budget: Budget::Quick,
        command: format!("lmlab explain run {id} --budget quick"),
        lmlab_version: "0.1.0-test".into(),
        machine: Machine { cpu: "Test CPU".into(), isa: "avx2".into(), cores: 2, threads: 2, os: "linux".into() },
        seconds: 12.5,
        seeds: vec![1, 2],
        configs: vec![("base".into(), "[model]\nd_model = 32\n".into())],
        table: Table::default(),
        more_tables: Vec::new(),
        charts: Vec::new(),
        findings: Vec::new(),
        data: serde_json::Value::Null,
    }
}

fn write_result(dir: &Path, r: &ExplainResult) {
    fs::create_dir_all(dir.join(&r.id)).unwrap();
    fs::write(dir.join(&r.id).join("result.json"), serde_json::to_string_pretty(r).unwrap()).unwrap();
}

fn chart(title: &str, png: &str, svg: &str) -> ChartFiles {
    ChartFiles { title: title.into(), png: png.into(), svg: svg.into() }
}

/// A 4×3 RGB PNG.
fn png_bytes() -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut enc = png::Encoder::new(&mut bytes, 4, 3);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let pixels: Vec<u8> = (0..4 * 3 * 3).map(|i| (i * 20) as u8).collect();
    enc.write_header().unwrap().write_image_data(&pixels).unwrap();
    bytes
}

const SVG: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
<!DOCTYPE svg PUBLIC \"-//W3C//DTD SVG 1.1//EN\" \"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd\">\n\
<svg width=\"120\" height=\"80\" viewBox=\"0 0 120 80\" xmlns=\"http://www.w3.org/2000/svg\">\
<rect x=\"10\" y=\"10\" width=\"100\" height=\"60\" fill=\"#1f77b4\"/></svg>\n";

/// Two results: `scale` (an SVG chart, a PNG-only chart, a table) and `heads` (markup in its
/// strings).
fn two_results(dir: &Path) {
    let mut scale = result("scale");
    fs::write(dir.join("notes.txt"), "").unwrap(); // the results dir may hold other files
    scale.charts =
        vec![chart("Loss against parameters", "loss.png", "loss.svg"), chart("Curves (PNG only)", "curves.png", "")];
    scale.table = Table {
        columns: vec!["params".into(), "val loss".into()],
        rows: vec![vec!["10K".into(), "2.51".into()], vec!["1M".into(), "1.93".into()]],
    };
    scale.findings = vec!["The 1M model reached val loss 1.93 vs 2.51 for the 10K one.".into()];
    write_result(dir, &scale);
    fs::write(dir.join("scale/loss.svg"), SVG).unwrap();
    fs::write(dir.join("scale/curves.png"), png_bytes()).unwrap();

    let mut heads = result("heads");
    heads.findings =
        vec!["<script>alert('x')</script> 4 heads beat 1 head".into(), "a \"quoted\" & <b>bold</b> claim".into()];
    heads.table = Table { columns: vec!["<th>".into()], rows: vec![vec!["<img src=x onerror=alert(1)>".into()]] };
    heads.more_tables = vec![(
        "Part <2>: per class".into(),
        Table { columns: vec!["class".into(), "F1".into()], rows: vec![vec!["ABBR & co".into(), "0.5".into()]] },
    )];
    heads.command = "lmlab explain run heads --out \"<dir>\"".into();
    write_result(dir, &heads);
}

/// The part of `html` from `<section id="ID"` to the end of that section.
fn section<'a>(html: &'a str, anchor: &str) -> &'a str {
    let start = html.find(&format!("<section id=\"{anchor}\"")).unwrap_or_else(|| panic!("no section {anchor}"));
    let end = start + html[start..].find("</section>").unwrap();
    &html[start..end]
}

#[test]
fn report_of_two_results() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("explain");
    fs::create_dir_all(&dir).unwrap();
    two_results(&dir);
    let out = tmp.path().join("report.html");
    let s = write_report(&dir, &out).unwrap();
    assert_eq!((s.answered, s.pending, s.charts), (2, QUESTIONS.len() - 2, 2));
    let html = fs::read_to_string(&out).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("lmlab 0.1.0-test"), "version line");
    assert!(html.contains("Test CPU (avx2, 2 cores, 2 threads, linux)"), "machine line");

    // The table of contents: all 14 questions, answered ones linked, the others pending.
    let toc = &html[html.find("<nav id=\"toc\">").unwrap()..html.find("</nav>").unwrap()];
    assert_eq!(QUESTIONS.len(), 14);
    assert_eq!(toc.matches("<li ").count(), 14);
    for q in QUESTIONS {
        let li = &toc[toc.find(&format!("<li value=\"{}\"", q.number)).unwrap()..];
        let li = &li[..li.find("</li>").unwrap()];
        match q.id {
            "scale" | "heads" => assert!(li.contains(&format!("href=\"#q{}-{}\"", q.number, q.id)), "{li}"),
            _ if q.pending.is_some() => assert!(li.contains("class=\"pending\"") && li.contains("pending:"), "{li}"),
            _ => assert!(li.contains(&format!("not run yet: <code>lmlab explain run {}</code>", q.id)), "{li}"),
        }
    }

    // `scale`: the SVG inline without its prologue, the PNG as a data: URI, the table.
    let scale = section(&html, "q1-scale");
    assert!(scale.contains("<svg width=\"120\""));
    assert!(!html.contains("<?xml") && !html.contains("<!DOCTYPE svg"));
    let uri = format!("src=\"data:image/png;base64,{}\"", lmlab::util::base64(&png_bytes()));
    assert!(scale.contains(&uri));
    assert!(scale.contains("<th>val loss</th>") && scale.contains("<td>1.93</td>"));
    assert!(scale.contains("<li>The 1M model reached val loss 1.93 vs 2.51 for the 10K one.</li>"));
    assert!(scale.contains("<code class=\"command\">lmlab explain run scale --budget quick</code>"));
    assert!(scale.contains("budget quick · 12.5 s · seeds 1, 2"));
    assert!(scale.contains("Loss against parameters"));

    // `heads`: every string escaped.
    let heads = section(&html, "q3-heads");
    assert!(heads.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; 4 heads beat 1 head"));
    assert!(heads.contains("a &quot;quoted&quot; &amp; &lt;b&gt;bold&lt;/b&gt; claim"));
    assert!(heads.contains("<th>&lt;th&gt;</th>") && heads.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(heads.contains("--out &quot;&lt;dir&gt;&quot;"));
    // A further table after the first, under its caption.
    let part2 = heads.find("<p class=\"caption\">Part &lt;2&gt;: per class</p>\n<table>").expect("the caption");
    assert!(heads[part2..].contains("<th>F1</th>") && heads[part2..].contains("<td>ABBR &amp; co</td>"));
    assert!(heads.find("<th>&lt;th&gt;</th>").unwrap() < part2, "the main table comes first");
    assert!(!html.contains("<script") && !html.contains("<b>") && !html.contains("<img src=x"));

    // Self-contained: every src/href is a fragment or a data: URI; no style sheet, script, font
    // or import from elsewhere.
    for attr in ["src=\"", "href=\""] {
        for (i, _) in html.match_indices(attr) {
            let value = &html[i + attr.len()..];
            assert!(
                value.starts_with('#') || value.starts_with("data:"),
                "external {attr}{}",
                &value[..40.min(value.len())]
            );
        }
    }
    for external in ["<link", "<script", "@import", "url(", "<iframe", "<object", "<embed"] {
        assert!(!html.contains(external), "the page contains {external}");
    }
}

#[test]
fn a_missing_svg_falls_back_to_the_png() {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = result("norms");
    r.charts = vec![chart("Only the PNG was written", "a.png", "a.svg")];
    write_result(tmp.path(), &r);
    fs::write(tmp.path().join("norms/a.png"), png_bytes()).unwrap();
    let out = tmp.path().join("report.html");
    assert_eq!(write_report(tmp.path(), &out).unwrap().charts, 1);
    assert!(fs::read_to_string(&out).unwrap().contains("src=\"data:image/png;base64,"));
}

fn error_of(dir: &Path) -> String {
    let out = dir.join("report.html");
    let e = write_report(dir, &out).expect_err("write_report should fail");
    assert!(!out.exists(), "no page is written on an error");
    format!("{e:#}")
}

#[test]
fn a_missing_chart_file_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = result("optimizers");
    r.charts = vec![chart("Curves", "curves.png", "curves.svg")];
    write_result(tmp.path(), &r);
    let e = error_of(tmp.path());
    assert!(e.contains("optimizers/curves.svg") && e.contains("optimizers/curves.png"), "{e}");
}

#[test]
fn a_chart_that_is_not_an_image_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = result("optimizers");
    r.charts = vec![chart("Curves", "curves.png", "curves.svg")];
    write_result(tmp.path(), &r);
    fs::write(tmp.path().join("optimizers/curves.svg"), "<html>not an svg</html>").unwrap();
    let e = error_of(tmp.path());
    assert!(e.contains("optimizers/curves.svg is not an SVG image"), "{e}");
}

#[test]
fn a_malformed_result_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    write_result(tmp.path(), &result("scale"));
    fs::create_dir_all(tmp.path().join("gradients")).unwrap();
    fs::write(tmp.path().join("gradients/result.json"), "{\"id\": \"gradients\", ").unwrap();
    let e = error_of(tmp.path());
    assert!(e.contains("gradients/result.json is not an explain result.json"), "{e}");
}

#[test]
fn a_result_in_the_wrong_directory_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let r = result("scale");
    fs::create_dir_all(tmp.path().join("heads")).unwrap();
    fs::write(tmp.path().join("heads/result.json"), serde_json::to_string(&r).unwrap()).unwrap();
    let e = error_of(tmp.path());
    assert!(e.contains("heads/result.json is the result of \"scale\""), "{e}");
}

#[test]
fn no_results_is_an_error_that_says_what_to_run() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("scale")).unwrap(); // a directory without result.json
    let e = error_of(tmp.path());
    assert!(e.contains("no explain results in") && e.contains("lmlab explain run"), "{e}");
    let e = format!("{:#}", write_report(&tmp.path().join("absent"), &tmp.path().join("r.html")).unwrap_err());
    assert!(e.contains("lmlab explain run"), "{e}");
}

#[test]
fn base64_matches_rfc_4648() {
    let cases =
        [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("foobar", "Zm9vYmFy")];
    for (plain, encoded) in cases {
        assert_eq!(lmlab::util::base64(plain.as_bytes()), encoded);
    }
}

/// Charts drawn by lmlab's own plotting code (SVG and PNG), as `explain run` writes them.
#[test]
fn report_of_plotted_charts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let curve = |name: &str, a: f64| XySeries {
        name: name.into(),
        points: (0..20).map(|i| (i as f64 * 50.0, 1.6 + a / (1.0 + i as f64 * 0.4))).collect(),
    };
    let results = [
        ("heads", "val loss against step", vec![curve("1 head", 2.0), curve("4 heads", 1.6)]),
        ("optimizers", "train loss against step", vec![curve("SGD", 2.6), curve("AdamW", 1.5), curve("Adam", 1.55)]),
    ];
    for (id, title, series) in results {
        let mut r = result(id);
        fs::create_dir_all(dir.join(id)).unwrap();
        let c = XyChart { title: title.into(), x: "step".into(), y: "loss".into(), series, scatter: false };
        plot_xy(&c, &dir.join(id).join("curves.svg")).unwrap();
        plot_xy(&c, &dir.join(id).join("curves.png")).unwrap();
        r.charts = vec![chart(title, "curves.png", "curves.svg"), chart(&format!("{title} (PNG)"), "curves.png", "")];
        r.table = Table {
            columns: vec!["arm".into(), "final loss".into()],
            rows: c.series.iter().map(|s| vec![s.name.clone(), format!("{:.3}", s.points.last().unwrap().1)]).collect(),
        };
        r.findings = vec![format!("{} reached the lowest loss.", c.series[1].name)];
        write_result(dir, &r);
    }
    let out = dir.join("report.html");
    let s = write_report(dir, &out).unwrap();
    assert_eq!((s.answered, s.charts), (2, 4));
    let html = fs::read_to_string(&out).unwrap();
    assert_eq!(html.matches("<svg").count(), 2);
    assert_eq!(html.matches("<img ").count(), 2);
    if let Some(demo) = std::env::var_os("LMLAB_REPORT_DEMO") {
        fs::copy(&out, &demo).unwrap();
    }
}

//! SST-2 and TREC loaders (`data::classify`): the real files against the counts in the shared
//! data README, and malformed files.

mod common;
use lmlab::data::classify::LabelledText;
use std::path::PathBuf;

/// The shared data file, or None after saying why the test is skipped.
fn data(rel: &str) -> Option<PathBuf> {
    common::shared_data(rel)
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn sst2_counts_match_the_readme() {
    let (Some(train), Some(dev)) = (data("sst2/train.tsv"), data("sst2/dev.tsv")) else { return };
    let train = LabelledText::load_sst2(&train).unwrap();
    let dev = LabelledText::load_sst2(&dev).unwrap();
    assert_eq!(train.len(), 67349);
    assert_eq!(train.class_counts(), vec![29780, 37569]);
    assert_eq!(dev.len(), 872);
    assert_eq!(dev.class_counts(), vec![428, 444]);
    assert_eq!(train.label_names, names(&["0", "1"]));
    assert_eq!(dev.label_names, train.label_names);
    // First rows, with the space before the tab removed.
    assert_eq!(train.texts[0], "hide new secretions from the parental units");
    assert_eq!((train.labels[0], train.labels[1]), (0, 0));
    assert_eq!(train.texts[1], "contains no wit , only labored gags");
    for t in train.texts.iter().chain(&dev.texts) {
        assert!(!t.contains('\t') && !t.ends_with(' ') && !t.is_empty(), "{t:?}");
    }
    // Accented letters survive (UTF-8).
    assert!(train.texts.iter().any(|t| t.contains('é')));
}

#[test]
fn trec_counts_match_the_readme() {
    let (Some(train_p), Some(test_p)) = (data("trec/train_5500.label"), data("trec/TREC_10.label")) else { return };
    let coarse = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"];
    let train = LabelledText::load_trec(&train_p, true).unwrap();
    assert_eq!(train.len(), 5452);
    assert_eq!(train.label_names, names(&coarse));
    assert_eq!(train.class_counts(), vec![86, 1162, 1250, 1223, 835, 896]);
    assert_eq!(train.texts[0], "How did serfdom develop in and then leave Russia ?");
    assert_eq!(train.label_names[train.labels[0]], "DESC");
    let test = LabelledText::load_trec_with_labels(&test_p, true, &train.label_names).unwrap();
    assert_eq!(test.len(), 500);
    assert_eq!(test.class_counts(), vec![9, 138, 94, 65, 81, 113]);
    assert_eq!(test.texts[0], "How far is it from Denver to Aspen ?");
    assert_eq!(test.label_names[test.labels[0]], "NUM");

    // Fine labels: 50 in train, 42 of them used in the test set, which keeps train's indices.
    let fine = LabelledText::load_trec(&train_p, false).unwrap();
    assert_eq!(fine.num_classes(), 50);
    assert_eq!(fine.label_names[fine.labels[0]], "DESC:manner");
    let own = LabelledText::load_trec(&test_p, false).unwrap();
    assert_eq!(own.num_classes(), 42);
    let test_fine = LabelledText::load_trec_with_labels(&test_p, false, &fine.label_names).unwrap();
    assert_eq!(test_fine.num_classes(), 50);
    assert_eq!(test_fine.label_names[test_fine.labels[0]], "NUM:dist");
    assert_eq!(test_fine.class_counts().iter().filter(|&&c| c > 0).count(), 42);
    // with_labels re-indexes the same way.
    assert_eq!(own.clone().with_labels(&fine.label_names).unwrap(), test_fine);
    // Line 66 holds the "ð" that replaced the original Latin-1 byte.
    assert!(fine.texts[65].contains("sisterðcity"), "{}", fine.texts[65]);
}

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn sst2_err(dir: &tempfile::TempDir, bytes: &[u8]) -> String {
    format!("{:#}", LabelledText::load_sst2(&write(dir, "x.tsv", bytes)).unwrap_err())
}

fn trec_err(dir: &tempfile::TempDir, bytes: &[u8]) -> String {
    format!("{:#}", LabelledText::load_trec(&write(dir, "x.label", bytes), true).unwrap_err())
}

#[test]
fn sst2_small_files_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ok = LabelledText::load_sst2(&write(&dir, "ok.tsv", b"sentence\tlabel\ngood fun \t1\nbad  \t0\nno space\t1"))
        .unwrap();
    // Only the one space before the tab is removed; a missing final newline is fine.
    assert_eq!(ok.texts, names(&["good fun", "bad ", "no space"]));
    assert_eq!(ok.labels, vec![1, 0, 1]);
    // A CRLF file reads the same.
    let crlf = LabelledText::load_sst2(&write(&dir, "crlf.tsv", b"sentence\tlabel\r\ngood fun \t1\r\n")).unwrap();
    assert_eq!((crlf.texts[0].as_str(), crlf.labels[0]), ("good fun", 1));

    let missing = dir.path().join("nope.tsv");
    let e = format!("{:#}", LabelledText::load_sst2(&missing).unwrap_err());
    assert!(e.contains("cannot read") && e.contains("nope.tsv"), "{e}");
    let e = sst2_err(&dir, b"");
    assert!(e.contains("empty file"), "{e}");
    let e = sst2_err(&dir, b"text\tlabel\na \t1\n");
    assert!(e.contains("line 1") && e.contains("header"), "{e}");
    let e = sst2_err(&dir, b"sentence\tlabel\n");
    assert!(e.contains("no examples"), "{e}");
    let e = sst2_err(&dir, b"sentence\tlabel\na \t1\nno tab here 0\n");
    assert!(e.contains("line 3") && e.contains("no tab"), "{e}");
    let e = sst2_err(&dir, b"sentence\tlabel\na \t1\t0\n");
    assert!(e.contains("line 2") && e.contains("more than one tab"), "{e}");
    let e = sst2_err(&dir, b"sentence\tlabel\na \t1\nb \t2\n");
    assert!(e.contains("line 3") && e.contains("\"2\""), "{e}");
    let e = sst2_err(&dir, b"sentence\tlabel\na \t1\nb \tpositive\n");
    assert!(e.contains("line 3") && e.contains("not 0 or 1"), "{e}");
    let e = sst2_err(&dir, b"sentence\tlabel\na \t1\nb \t\n");
    assert!(e.contains("line 3"), "{e}");
    let e = sst2_err(&dir, b"sentence\tlabel\na \t1\nb\xff \t0\n");
    assert!(e.contains("line 3") && e.contains("UTF-8"), "{e}");
}

#[test]
fn trec_small_files_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "t.label", b"NUM:dist How far ?\nHUM:ind Who is it ?\nNUM:date When ?\n");
    let fine = LabelledText::load_trec(&p, false).unwrap();
    assert_eq!(fine.label_names, names(&["HUM:ind", "NUM:date", "NUM:dist"]));
    assert_eq!(fine.labels, vec![2, 0, 1]);
    assert_eq!(fine.texts, names(&["How far ?", "Who is it ?", "When ?"]));
    let coarse = LabelledText::load_trec(&p, true).unwrap();
    assert_eq!(coarse.label_names, names(&["HUM", "NUM"]));
    assert_eq!(coarse.labels, vec![1, 0, 1]);
    assert_eq!(coarse.class_counts(), vec![1, 2]);

    // Test sets through the training labels: indices follow train's names; unknown labels fail.
    let train_names = names(&["ABBR", "HUM", "LOC", "NUM"]);
    let mapped = LabelledText::load_trec_with_labels(&p, true, &train_names).unwrap();
    assert_eq!(mapped.labels, vec![3, 1, 3]);
    assert_eq!(mapped.label_names, train_names);
    assert_eq!(coarse.clone().with_labels(&train_names).unwrap(), mapped);
    let e = format!("{:#}", LabelledText::load_trec_with_labels(&p, true, &names(&["ABBR", "NUM"])).unwrap_err());
    assert!(e.contains("line 2") && e.contains("\"HUM\""), "{e}");
    let e = format!("{:#}", coarse.clone().with_labels(&names(&["NUM", "HUM"])).unwrap_err());
    assert!(e.contains("sorted"), "{e}");
    let e = format!("{:#}", coarse.with_labels(&names(&["LOC", "NUM"])).unwrap_err());
    assert!(e.contains("\"HUM\""), "{e}");

    let e = format!("{:#}", LabelledText::load_trec(&dir.path().join("none.label"), true).unwrap_err());
    assert!(e.contains("cannot read") && e.contains("none.label"), "{e}");
    let e = trec_err(&dir, b"NUM:dist How far ?\nHUM:ind\n");
    assert!(e.contains("line 2") && e.contains("no space"), "{e}");
    let e = trec_err(&dir, b"NUM:dist How far ?\nNUMdist How far ?\n");
    assert!(e.contains("line 2") && e.contains("COARSE:fine"), "{e}");
    let e = trec_err(&dir, b":dist How far ?\n");
    assert!(e.contains("line 1") && e.contains("COARSE:fine"), "{e}");
    let e = trec_err(&dir, b"NUM:dist How far ?\n\nHUM:ind Who ?\n");
    assert!(e.contains("line 2"), "{e}");
    let e = trec_err(&dir, b"NUM:dist   \n");
    assert!(e.contains("line 1") && e.contains("no question text"), "{e}");
    let e = trec_err(&dir, b"NUM:dist How far ?\nHUM:ind sister\xf0city ?\n");
    assert!(e.contains("line 2") && e.contains("UTF-8"), "{e}");
    let e = trec_err(&dir, b"");
    assert!(e.contains("no examples"), "{e}");
}

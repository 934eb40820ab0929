//! The pre- and post-processing of extractive QA (src/infer/qa_span.rs): context windows with
//! a stride, and the best valid span of a window's start/end logits mapped back to characters.

use lmlab::infer::qa_span::{best_spans, windows, Window};

#[test]
fn windows_overlap_by_the_stride_and_cover_the_context() {
    let w = windows(10, 4, 1).unwrap();
    let want = [(0, 4), (3, 7), (6, 10)];
    assert_eq!(w, want.iter().map(|&(start, end)| Window { start, end }).collect::<Vec<_>>());
    assert_eq!(windows(3, 4, 1).unwrap(), vec![Window { start: 0, end: 3 }]);
    assert_eq!(windows(0, 4, 1).unwrap(), vec![Window { start: 0, end: 0 }]);
    // Every token is in some window, and consecutive windows share `stride` tokens.
    for (n, len, stride) in [(100, 16, 5), (17, 16, 0), (33, 8, 7)] {
        let w = windows(n, len, stride).unwrap();
        assert_eq!(w.last().unwrap().end, n);
        for pair in w.windows(2) {
            assert_eq!(pair[0].end - pair[1].start, stride);
        }
    }
    assert!(windows(10, 4, 4).is_err());
    assert!(windows(10, 0, 0).is_err());
}

#[test]
fn the_best_valid_span_wins_and_maps_to_characters() {
    // Positions: 0 [CLS], 1-2 question, 3 [SEP], 4-7 context "The cat sat down", 8 [SEP].
    let offsets = [None, None, None, None, Some((0, 3)), Some((4, 7)), Some((8, 11)), Some((12, 16)), None];
    let mut start = vec![0.0f32; 9];
    let mut end = vec![0.0f32; 9];
    // The highest logits point into the question or backwards; they must be skipped.
    start[1] = 9.0;
    end[2] = 9.0;
    start[6] = 5.0;
    end[5] = 6.0; // end before the best start
    start[4] = 3.0;
    end[6] = 4.0;
    let spans = best_spans(&start, &end, &offsets, 20, 30);
    // Two valid spans score 9: "sat" (start 6 + end 6 = 5 + 4) and "The cat" (start 4 + end 5
    // = 3 + 6). Candidates come in the order of the best starts, and the sort is stable, so
    // "sat" (its start logit is larger) comes first.
    assert_eq!((spans[0].chars, spans[1].chars), ((8, 11), (0, 7)));
    assert!((spans[0].score - 9.0).abs() < 1e-6 && (spans[1].score - 9.0).abs() < 1e-6);
    for s in &spans {
        assert!(s.chars.0 <= s.chars.1 && s.chars.1 <= 16, "{s:?}");
    }
    // A maximum length of one token drops the two-token span.
    let one = best_spans(&start, &end, &offsets, 20, 1);
    assert_eq!(one[0].chars, (8, 11), "\"sat\": start 6 + end 6");
    assert!(one.iter().all(|s| s.chars != (0, 7)));
    // n_best limits the candidates considered on each side.
    let few = best_spans(&start, &end, &offsets, 1, 30);
    assert!(few.is_empty(), "the single best start and end both lie in the question");
}

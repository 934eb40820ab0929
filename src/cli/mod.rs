//! The subcommands of `lmlab`, one file each: the arguments (clap), one call into the library,
//! and the printing. The product logic lives in the library (`lmlab::infer`, `lmlab::eval`, …),
//! where tests reach it without a process.

pub mod account;
pub mod answer;
pub mod bench;
pub mod classify;
pub mod demo;
pub mod embed;
pub mod eval;
pub mod explain;
pub mod export;
pub mod fairness;
pub mod import;
pub mod info;
pub mod inspect;
pub mod merge_lora;
pub mod plot;
pub mod profile;
pub mod prune;
pub mod quantize;
pub mod sample;
pub mod schedule;
pub mod serve;
pub mod summarize;
pub mod train;
pub mod translate;

/// Says on stderr when the charts could not get text (no font found).
fn note_textless(text: bool) {
    if !text {
        eprintln!(
            "note: the charts have no text: no TrueType font was found (or LMLAB_FONT=none); install one \
             (e.g. fonts-dejavu-core) or set LMLAB_FONT=/path/to/font.ttf"
        );
    }
}

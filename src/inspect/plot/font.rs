//! The font of chart text, looked up at run time (see the module doc of `plot`) and registered
//! with plotters once per process.

use anyhow::{bail, Result};
use plotters::style::FontStyle;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub(super) const FONT: &str = "sans-serif";

fn font_candidates() -> Vec<PathBuf> {
    let fixed = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
        "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
        "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
        "/usr/share/fonts/noto/NotoSans-Regular.ttf",
        "/System/Library/Fonts/Supplemental/Arial.ttf",
        "/Library/Fonts/Arial.ttf",
        "C:\\Windows\\Fonts\\arial.ttf",
    ];
    let mut out: Vec<PathBuf> = fixed.iter().map(PathBuf::from).collect();
    // Any other TrueType font, regular sans faces first.
    let mut found = Vec::new();
    let mut dirs = vec![(PathBuf::from("/usr/share/fonts"), 0), (PathBuf::from("/usr/local/share/fonts"), 0)];
    while let Some((dir, depth)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && depth < 4 {
                dirs.push((p, depth + 1));
            } else if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("ttf")) {
                found.push(p);
            }
        }
    }
    let rank = |p: &PathBuf| {
        let n = p.file_name().unwrap_or_default().to_string_lossy().to_lowercase();
        let styled = ["bold", "italic", "oblique", "mono", "light", "condensed"].iter().any(|s| n.contains(s));
        (styled, !n.contains("sans"), n)
    };
    found.sort_by_key(rank);
    out.extend(found);
    out
}

/// Registers a font for chart text, once per process. Returns whether text can be drawn.
pub(super) fn text_available() -> Result<bool> {
    static FONT_STATE: OnceLock<std::result::Result<Option<PathBuf>, String>> = OnceLock::new();
    let state = FONT_STATE.get_or_init(|| {
        let load = |p: &Path| -> bool {
            let Ok(bytes) = std::fs::read(p) else { return false };
            // plotters keeps a &'static reference to the font: it lives as long as the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_ok()
        };
        match std::env::var("LMLAB_FONT") {
            Ok(v) if v.is_empty() || v.eq_ignore_ascii_case("none") => Ok(None),
            Ok(v) if load(Path::new(&v)) => Ok(Some(PathBuf::from(v))),
            Ok(v) => Err(format!("LMLAB_FONT={v}: not a readable TrueType/OpenType font")),
            Err(_) => Ok(font_candidates().into_iter().find(|p| load(p))),
        }
    });
    match state {
        Ok(font) => Ok(font.is_some()),
        Err(e) => bail!("{e}"),
    }
}

//! `lmlab inspect ...`: looking inside a trained model — attention maps and rollout, the logit
//! lens, attributions, head ablation. Each writes its pictures and a JSON file with every number
//! into `--out` (and prints a summary, or the JSON with `--json`).

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use lmlab::data::Tokenizer;
use lmlab::inspect::interpret::ablation::ablate_all;
use lmlab::inspect::interpret::attention::{attention_maps, rollout, AttentionLayer};
use lmlab::inspect::interpret::attribution::{attribute, to_html, Method, Target};
use lmlab::inspect::interpret::lens::logit_lens;
use lmlab::inspect::interpret::Tokens;
use lmlab::inspect::plot::{plot_heatmaps, Format, Heatmap, Scale};
use lmlab::io::checkpoint;
use lmlab::model::transformer::{AblationMode, Arch};
use std::path::{Path, PathBuf};

/// Where the results go.
#[derive(Args)]
pub struct Output {
    /// Directory for the pictures, the JSON (and attribution's HTML).
    #[arg(long, default_value = "inspect")]
    out: PathBuf,
    /// Picture format: png or svg.
    #[arg(long, default_value = "png")]
    format: Format,
    /// Print the JSON instead of the summary.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum InspectCmd {
    /// Attention maps of every layer and head for a text (a grid of heat maps with the tokens
    /// on the axes), and attention rollout (Abnar & Zuidema, 2020). Decoder, encoder and
    /// encoder-decoder (self- and cross-attention) models.
    Attention {
        #[arg(long)]
        checkpoint: PathBuf,
        /// The text (an encoder-decoder's decoder input).
        #[arg(long)]
        text: String,
        /// Encoder-decoder only: the source text.
        #[arg(long)]
        source: Option<String>,
        #[command(flatten)]
        output: Output,
    },
    /// The logit lens: the next-token predictions read from the residual stream after every
    /// layer through the final norm and the unembedding (decoder-only models).
    Lens {
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long)]
        text: String,
        /// Predictions kept per layer and position.
        #[arg(long, default_value_t = 5)]
        top: usize,
        #[command(flatten)]
        output: Output,
    },
    /// Which input tokens drove an output: gradient × input and integrated gradients on the
    /// token embeddings, with the completeness check; coloured text (HTML) and JSON.
    Attribute {
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long)]
        text: String,
        /// Language model: the next token to explain (its text, one token; default: the
        /// model's own top prediction).
        #[arg(long, conflicts_with = "class")]
        target: Option<String>,
        /// Language model: the position whose prediction is explained (default: the last).
        #[arg(long, conflicts_with = "class")]
        position: Option<usize>,
        /// Classifier: the class to explain (its index).
        #[arg(long)]
        class: Option<usize>,
        /// Integrated-gradients steps.
        #[arg(long, default_value_t = 50)]
        steps: usize,
        /// gausslegendre (Captum's default), riemann_trapezoid, riemann_left, riemann_right,
        /// riemann_middle.
        #[arg(long, default_value = "gausslegendre")]
        method: String,
        #[command(flatten)]
        output: Output,
    },
    /// The change in loss on a text when each attention head (and each feed-forward layer) is
    /// zero- or mean-ablated, as a layer × head heat map (decoder-only models).
    Ablate {
        #[arg(long)]
        checkpoint: PathBuf,
        /// UTF-8 text to measure the loss on.
        #[arg(long)]
        data: PathBuf,
        /// Windows of block_size + 1 tokens taken from the start of the text.
        #[arg(long, default_value_t = 8)]
        windows: usize,
        /// zero or mean.
        #[arg(long, default_value = "zero")]
        mode: String,
        #[command(flatten)]
        output: Output,
    },
    /// A 2-D PCA projection of sentence representations coloured by label: all-MiniLM-L6-v2
    /// embeddings (the `embed` pipeline), or a checkpoint's mean residual stream after a layer.
    Pca {
        /// Labelled sentences: TREC (`LABEL:fine text`, coarse labels), SST-2 TSV, or plain
        /// `label<TAB>text` lines.
        #[arg(long)]
        input: PathBuf,
        /// trec, sst2 or tsv.
        #[arg(long, default_value = "tsv")]
        input_format: String,
        /// At most this many sentences (from the start).
        #[arg(long, default_value_t = 500)]
        limit: usize,
        /// Sentence-embedding model directory (default: the downloaded all-MiniLM-L6-v2).
        #[arg(long, conflicts_with = "checkpoint")]
        model: Option<PathBuf>,
        /// Instead: an lmlab checkpoint, each sentence the mean of its tokens' residual stream
        /// after block --layer.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Block of --checkpoint (default: the last).
        #[arg(long)]
        layer: Option<usize>,
        #[command(flatten)]
        output: Output,
    },
    /// Per-layer activation statistics for a text: the residual stream's mean, standard
    /// deviation, RMS and largest magnitude after every block, the feed-forward activations'
    /// share of positive values, and the mean attention entropy.
    Stats {
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long)]
        text: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: InspectCmd) -> Result<()> {
    match cmd {
        InspectCmd::Attention { checkpoint, text, source, output: o } => {
            run_attention(&checkpoint, &text, source.as_deref(), &o.out, o.format, o.json)
        }
        InspectCmd::Lens { checkpoint, text, top, output: o } => {
            run_lens(&checkpoint, &text, top, &o.out, o.format, o.json)
        }
        InspectCmd::Attribute { checkpoint, text, target, position, class, steps, method, output: o } => {
            run_attribute(&checkpoint, &text, target.as_deref(), position, class, steps, &method, &o.out, o.json)
        }
        InspectCmd::Ablate { checkpoint, data, windows, mode, output: o } => {
            run_ablate(&checkpoint, &data, windows, &mode, &o.out, o.format, o.json)
        }
        InspectCmd::Pca { input, input_format, limit, model, checkpoint, layer, output: o } => {
            let src = match checkpoint {
                Some(dir) => Representation::Checkpoint { dir, layer },
                None => Representation::Embedder(model),
            };
            run_pca(&input, &input_format, limit, src, &o.out, o.format, o.json)
        }
        InspectCmd::Stats { checkpoint, text, json } => run_stats(&checkpoint, &text, json),
    }
}

/// Where `inspect pca` takes each sentence's vector from.
enum Representation {
    Embedder(Option<PathBuf>),
    Checkpoint { dir: PathBuf, layer: Option<usize> },
}

fn run_pca(
    input: &Path,
    input_format: &str,
    limit: usize,
    src: Representation,
    out: &Path,
    format: Format,
    json: bool,
) -> Result<()> {
    use lmlab::data::classify::LabelledText;
    let data = match input_format {
        "trec" => LabelledText::load_trec(input, true)?,
        "sst2" => LabelledText::load_sst2(input)?,
        "tsv" => {
            let mut texts = Vec::new();
            let mut names = Vec::new();
            for (i, line) in lmlab::util::read_lines(input)?.iter().enumerate() {
                let (l, t) = line
                    .split_once('\t')
                    .with_context(|| format!("{}:{}: expected label<TAB>text", input.display(), i + 1))?;
                names.push(l.to_string());
                texts.push(t.to_string());
            }
            let mut label_names = names.clone();
            label_names.sort();
            label_names.dedup();
            let labels = names.iter().map(|n| label_names.binary_search(n).unwrap()).collect();
            LabelledText { texts, labels, label_names }
        }
        _ => bail!("unknown --input-format {input_format:?}: trec, sst2 or tsv"),
    };
    let n = data.len().min(limit);
    if n < 2 {
        bail!("{} has {} labelled sentences: PCA needs at least two", input.display(), data.len());
    }
    let texts = &data.texts[..n];
    let (vecs, what) = match src {
        Representation::Embedder(model) => {
            let mut e = lmlab::infer::embed_driver::open_embedder(model, 32)?;
            (e.embed(texts)?, "sentence embeddings (mean pooling, normalised)".to_string())
        }
        Representation::Checkpoint { dir, layer } => {
            let mut ck = load(&dir)?;
            let nl = ck.model.config.n_layer;
            let layer = layer.unwrap_or(nl.saturating_sub(1));
            if layer >= nl {
                bail!("layer {layer} does not exist: the model has {nl} blocks (0..{})", nl - 1);
            }
            let c = ck.model.config.n_embd;
            let mut vecs = Vec::with_capacity(n);
            for (i, t) in texts.iter().enumerate() {
                let ids = ck.tokenizer.encode(t)?;
                let ids = &ids[..ids.len().min(ck.model.config.block_size)];
                if ids.is_empty() {
                    bail!("sentence {} is empty", i + 1);
                }
                lmlab::inspect::interpret::forward_tokens(&mut ck.model, ids)?;
                let blocks = ck.model.blocks();
                let h = &blocks.iter().rfind(|b| b.layer == layer).context("no such block")?.output;
                let mut mean = vec![0f32; c];
                for row in h[..ids.len() * c].chunks_exact(c) {
                    mean.iter_mut().zip(row).for_each(|(m, v)| *m += v / ids.len() as f32);
                }
                vecs.push(mean);
            }
            (vecs, format!("mean residual stream after block {layer}"))
        }
    };
    let dim = vecs[0].len();
    let flat: Vec<f32> = vecs.concat();
    let p = lmlab::inspect::interpret::pca::pca(&flat, n, dim, 2)?;
    out_dir(out)?;
    let series: Vec<lmlab::inspect::plot::XySeries> = data
        .label_names
        .iter()
        .enumerate()
        .map(|(k, name)| lmlab::inspect::plot::XySeries {
            name: name.clone(),
            points: p
                .coords
                .iter()
                .zip(&data.labels[..n])
                .filter(|(_, &l)| l == k)
                .map(|(c, _)| (c[0], c[1]))
                .collect(),
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    let chart = lmlab::inspect::plot::XyChart {
        title: format!("PCA of {what}"),
        x: format!("PC1 ({:.1}% of variance)", 100.0 * p.explained_ratio[0]),
        y: format!("PC2 ({:.1}% of variance)", 100.0 * p.explained_ratio[1]),
        series,
        scatter: true,
    };
    let path = out.join(format!("pca.{}", format.extension()));
    super::note_textless(lmlab::inspect::plot::plot_xy(&chart, &path)?);
    let value = serde_json::json!({
        "representation": what, "explained_variance_ratio": p.explained_ratio,
        "points": p.coords.iter().zip(&data.labels[..n]).zip(texts).map(|((c, &l), t)| serde_json::json!({
            "label": data.label_names[l], "text": t, "pc1": c[0], "pc2": c[1]})).collect::<Vec<_>>(),
    });
    let jpath = out.join("pca.json");
    write_json(&jpath, &value)?;
    let summary = format!(
        "{n} sentences, {} labels; PC1 {:.1}%, PC2 {:.1}% of the variance of the {what}\n",
        data.label_names.len(),
        100.0 * p.explained_ratio[0],
        100.0 * p.explained_ratio[1]
    );
    finish(json, &value, &[path, jpath], &summary);
    Ok(())
}

fn run_stats(dir: &Path, text: &str, json: bool) -> Result<()> {
    let mut ck = load(dir)?;
    let tokens = Tokens::encode(&ck.tokenizer, text, ck.model.config.block_size)?;
    lmlab::inspect::interpret::forward_tokens(&mut ck.model, &tokens.ids)?;
    let c = ck.model.config.n_embd;
    let t = tokens.len();
    let mut rows = Vec::new();
    for b in ck.model.blocks() {
        let h = &b.output[..t * c];
        let nf = h.len() as f64;
        let mean = h.iter().map(|&x| x as f64).sum::<f64>() / nf;
        let var = h.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / nf;
        let rms = (h.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / nf).sqrt();
        let max = h.iter().fold(0f32, |m, x| m.max(x.abs()));
        let (fi, fh) = (b.ffn_in, b.ffn_hidden);
        // The activation's input: c_fc(x), or SwiGLU's gate (the first F columns).
        let pre: Vec<f32> = b.ffn_pre[..t * fi].chunks_exact(fi).flat_map(|r| r[..fh].to_vec()).collect();
        let positive = pre.iter().filter(|&&x| x > 0.0).count() as f64 / pre.len().max(1) as f64;
        let entropy = lmlab::inspect::health::attention_entropy(&b.self_attn);
        rows.push(serde_json::json!({
            "stack": b.stack, "layer": b.layer, "mean": mean, "std": var.sqrt(), "rms": rms, "max_abs": max,
            "ffn_positive_fraction": positive, "attention_entropy": entropy,
        }));
    }
    let value = serde_json::json!({"tokens": tokens.labels, "layers": rows});
    let mut s = format!(
        "{:<16} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        "block", "mean", "std", "rms", "max|x|", "ffn>0", "attn H"
    );
    for r in &rows {
        s.push_str(&format!(
            "{:<16} {:>9.4} {:>9.4} {:>9.4} {:>9.3} {:>9.3} {:>9.3}\n",
            format!("{}.{}", r["stack"].as_str().unwrap_or(""), r["layer"]),
            r["mean"].as_f64().unwrap_or(f64::NAN),
            r["std"].as_f64().unwrap_or(f64::NAN),
            r["rms"].as_f64().unwrap_or(f64::NAN),
            r["max_abs"].as_f64().unwrap_or(f64::NAN),
            r["ffn_positive_fraction"].as_f64().unwrap_or(f64::NAN),
            r["attention_entropy"].as_f64().unwrap_or(f64::NAN),
        ));
    }
    finish(json, &value, &[], &s);
    Ok(())
}

fn load(dir: &Path) -> Result<checkpoint::Checkpoint> {
    checkpoint::load(dir, 1, false)
}

fn out_dir(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    lmlab::io::atomic::write_file_atomic(path, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn finish(json: bool, value: &serde_json::Value, written: &[PathBuf], summary: &str) {
    if json {
        println!("{value}");
    } else {
        print!("{summary}");
        for f in written {
            println!("wrote {}", f.display());
        }
    }
}

fn run_attention(dir: &Path, text: &str, source: Option<&str>, out: &Path, format: Format, json: bool) -> Result<()> {
    let mut ck = load(dir)?;
    let block = ck.model.config.block_size;
    let tokens = Tokens::encode(&ck.tokenizer, text, block)?;
    let src = source.map(|s| Tokens::encode(&ck.tokenizer, s, block)).transpose()?;
    let layers = attention_maps(&mut ck.model, &tokens.ids, src.as_ref().map(|s| &s.ids[..]))?;
    out_dir(out)?;
    let labels_of = |l: &AttentionLayer| -> (Vec<String>, Vec<String>) {
        let dec = &tokens.labels;
        let enc = src.as_ref().map_or(dec, |s| &s.labels);
        match (l.stack.as_str(), l.kind.as_str()) {
            ("encoder", _) if ck.model.config.arch == Arch::EncoderDecoder => (enc.clone(), enc.clone()),
            (_, "cross") => (dec.clone(), enc.clone()),
            _ => (dec.clone(), dec.clone()),
        }
    };
    let mut written = Vec::new();
    let mut groups: Vec<(String, Vec<&AttentionLayer>)> = Vec::new();
    for l in &layers {
        let key = format!("{}-{}", l.stack, l.kind);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(l),
            None => groups.push((key, vec![l])),
        }
    }
    let mut rollouts = serde_json::Map::new();
    for (key, group) in &groups {
        let mut maps = Vec::new();
        for l in group {
            let (rows, cols) = labels_of(l);
            for h in 0..l.n_head {
                let values = l.head(h).iter().map(|&p| p as f64).collect();
                let title = format!("layer {} head {h}", l.layer);
                maps.push(Heatmap { title, row_labels: rows.clone(), col_labels: cols.clone(), values });
            }
        }
        let path = out.join(format!("attention-{key}.{}", format.extension()));
        let title = format!("{key} attention (rows: queries, columns: keys)");
        let text = plot_heatmaps(&maps, group[0].n_head, &title, Scale { lo: 0.0, hi: 1.0, diverging: false }, &path)?;
        super::note_textless(text);
        written.push(path);
        if group[0].kind == "self" {
            let r = rollout(group)?;
            let (rows, cols) = labels_of(group[0]);
            let map =
                Heatmap { title: format!("{key} rollout"), row_labels: rows, col_labels: cols, values: r.clone() };
            let path = out.join(format!("rollout-{}.{}", group[0].stack, format.extension()));
            let scale = Scale::of(std::slice::from_ref(&map), false);
            plot_heatmaps(&[map], 1, "attention rollout (Abnar & Zuidema, 2020)", scale, &path)?;
            written.push(path);
            rollouts.insert(group[0].stack.clone(), serde_json::json!(r));
        }
    }
    let value = serde_json::json!({
        "tokens": tokens.labels, "source_tokens": src.as_ref().map(|s| &s.labels),
        "layers": layers, "rollout": rollouts,
    });
    let path = out.join("attention.json");
    write_json(&path, &value)?;
    written.push(path);
    let summary = format!("{} attention layers, {} tokens\n", layers.len(), tokens.len());
    finish(json, &value, &written, &summary);
    Ok(())
}

fn token_text(tok: &Tokenizer, id: u32) -> String {
    tok.decode(&[id]).unwrap_or_else(|_| format!("<{id}>"))
}

fn run_lens(dir: &Path, text: &str, top: usize, out: &Path, format: Format, json: bool) -> Result<()> {
    let mut ck = load(dir)?;
    let tokens = Tokens::encode(&ck.tokenizer, text, ck.model.config.block_size)?;
    let lens = logit_lens(&mut ck.model, &tokens.ids, top)?;
    out_dir(out)?;
    // Heat map: layers (rows) × positions (columns) of the next token's probability.
    let values: Vec<f64> =
        lens.iter().flat_map(|l| l.target_prob.iter().map(|p| p.map_or(f64::NAN, |p| p as f64))).collect();
    let cols: Vec<String> = tokens.labels.clone();
    let map = Heatmap {
        title: "probability of the next token".into(),
        row_labels: lens.iter().map(|l| l.name.clone()).collect(),
        col_labels: cols,
        values,
    };
    let path = out.join(format!("lens.{}", format.extension()));
    let text_ok = plot_heatmaps(&[map], 1, "logit lens", Scale { lo: 0.0, hi: 1.0, diverging: false }, &path)?;
    super::note_textless(text_ok);
    let tok = &ck.tokenizer;
    let layers: Vec<serde_json::Value> = lens
        .iter()
        .map(|l| {
            let top: Vec<Vec<serde_json::Value>> = l
                .top
                .iter()
                .map(|p| {
                    p.iter()
                        .map(|(id, pr)| serde_json::json!({"id": id, "text": token_text(tok, *id), "p": pr}))
                        .collect()
                })
                .collect();
            serde_json::json!({"name": l.name, "top": top, "target_prob": l.target_prob, "target_rank": l.target_rank})
        })
        .collect();
    let value = serde_json::json!({"tokens": tokens.labels, "layers": layers});
    let jpath = out.join("lens.json");
    write_json(&jpath, &value)?;
    // Summary: the top prediction of every layer at each position, as a table.
    let mut s = format!("{:<12}", "layer");
    for l in &tokens.labels {
        s.push_str(&format!(" {:>8}", format!("{l:?}")));
    }
    s.push('\n');
    for l in &lens {
        s.push_str(&format!("{:<12}", l.name));
        for p in &l.top {
            s.push_str(&format!(" {:>8}", format!("{:?}", token_text(tok, p[0].0))));
        }
        s.push('\n');
    }
    finish(json, &value, &[path, jpath], &s);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run_attribute(
    dir: &Path,
    text: &str,
    target: Option<&str>,
    position: Option<usize>,
    class: Option<usize>,
    steps: usize,
    method: &str,
    out: &Path,
    json: bool,
) -> Result<()> {
    let method = Method::parse(method)?;
    let mut ck = load(dir)?;
    let tokens = Tokens::encode(&ck.tokenizer, text, ck.model.config.block_size)?;
    let (target, what) = match (ck.model.config.arch, class) {
        (Arch::Encoder, Some(k)) => (Target::Class(k), format!("class {k}")),
        (Arch::Encoder, None) => bail!("give --class K for a classifier"),
        (Arch::Decoder, Some(_)) => bail!("--class is for classifiers; give --target TOKEN for a language model"),
        (Arch::Decoder, None) => {
            let pos = position.unwrap_or(tokens.len() - 1);
            let token = match target {
                Some(s) => {
                    let ids = ck.tokenizer.encode(s)?;
                    match ids[..] {
                        [id] => id,
                        _ => bail!("--target {s:?} is {} tokens; give exactly one token", ids.len()),
                    }
                }
                None => {
                    // The model's own top prediction at `pos` (the smallest id among equals).
                    if pos >= tokens.len() {
                        bail!("position {pos} is outside the text ({} tokens)", tokens.len());
                    }
                    lmlab::inspect::interpret::forward_tokens(&mut ck.model, &tokens.ids)?;
                    let v = ck.model.config.vocab_size;
                    let row = &ck.model.logits()[pos * v..(pos + 1) * v];
                    let best = row.iter().enumerate().fold(0, |b, (i, &x)| if x > row[b] { i } else { b });
                    best as u32
                }
            };
            let what = format!("{:?} as the next token after position {pos}", token_text(&ck.tokenizer, token));
            (Target::Token { pos, token }, what)
        }
        (Arch::EncoderDecoder | Arch::Lstm | Arch::Gru | Arch::Cnn, _) => {
            bail!("attribution is implemented for decoder-only and encoder-only models")
        }
    };
    let a = attribute(&mut ck.model, &tokens.ids, target, method, steps)?;
    out_dir(out)?;
    let hpath = out.join("attribution.html");
    lmlab::io::atomic::write_file_atomic(&hpath, to_html(&tokens.labels, &a, &what).as_bytes())?;
    let value = serde_json::json!({"tokens": tokens.labels, "target": what, "attribution": a});
    let jpath = out.join("attribution.json");
    write_json(&jpath, &value)?;
    let mut s = format!("attribution of {what}\n{:<14} {:>14} {:>14}\n", "token", "integrated", "grad×input");
    for (l, (ig, gx)) in tokens.labels.iter().zip(a.integrated_gradients.iter().zip(&a.grad_x_input)) {
        s.push_str(&format!("{:<14} {ig:>14.6} {gx:>14.6}\n", format!("{l:?}")));
    }
    s.push_str(&format!(
        "f(x) = {:.6}, f(0) = {:.6}, Σ integrated = {:.6}, convergence delta {:+.3e} ({}, {} steps)\n",
        a.f_input,
        a.f_baseline,
        a.integrated_gradients.iter().sum::<f64>(),
        a.delta,
        a.method,
        a.steps
    ));
    finish(json, &value, &[hpath, jpath], &s);
    Ok(())
}

fn run_ablate(
    dir: &Path,
    data: &Path,
    windows: usize,
    mode: &str,
    out: &Path,
    format: Format,
    json: bool,
) -> Result<()> {
    let mode = match mode {
        "zero" => AblationMode::Zero,
        "mean" => AblationMode::Mean,
        _ => bail!("unknown ablation mode {mode:?}: zero or mean"),
    };
    let mut ck = load(dir)?;
    let text = lmlab::util::read_corpus(data)?;
    let ids = ck.tokenizer.encode(&text)?;
    let w = ck.model.config.block_size + 1;
    let wins: Vec<Vec<u32>> = ids.chunks_exact(w).take(windows).map(|c| c.to_vec()).collect();
    if wins.is_empty() {
        bail!("{} has {} tokens: fewer than one window of block_size + 1 = {w}", data.display(), ids.len());
    }
    let table = ablate_all(&mut ck.model, &wins, mode)?;
    out_dir(out)?;
    let nh = ck.model.config.n_head;
    let rows: Vec<String> = (0..table.heads.len()).map(|l| format!("layer {l}")).collect();
    let mut cols: Vec<String> = (0..nh).map(|h| format!("head {h}")).collect();
    cols.push("MLP".into());
    let values = table.heads.iter().zip(&table.mlps).flat_map(|(h, m)| h.iter().copied().chain([*m])).collect();
    let map = Heatmap {
        title: format!("Δ loss ({} ablation; base {:.4})", table.mode, table.base_loss),
        row_labels: rows,
        col_labels: cols,
        values,
    };
    let path = out.join(format!("ablation.{}", format.extension()));
    let scale = Scale::of(std::slice::from_ref(&map), true);
    super::note_textless(plot_heatmaps(&[map], 1, "head and feed-forward ablation", scale, &path)?);
    let value = serde_json::to_value(&table)?;
    let jpath = out.join("ablation.json");
    write_json(&jpath, &value)?;
    let mut s = format!(
        "base loss {:.4} over {} tokens; Δ loss with each part {}-ablated:\n{:<8}",
        table.base_loss, table.tokens, table.mode, "layer"
    );
    for h in 0..nh {
        s.push_str(&format!(" {:>8}", format!("head {h}")));
    }
    s.push_str(&format!(" {:>8}\n", "MLP"));
    for (l, (h, m)) in table.heads.iter().zip(&table.mlps).enumerate() {
        s.push_str(&format!("{l:<8}"));
        for d in h {
            s.push_str(&format!(" {d:>+8.4}"));
        }
        s.push_str(&format!(" {m:>+8.4}\n"));
    }
    finish(json, &value, &[path, jpath], &s);
    Ok(())
}

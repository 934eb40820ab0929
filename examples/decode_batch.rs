//! Times one batched decode step (T = 1 per row, `forward_cached`) of a checkpoint at several
//! batch sizes, each row holding a 64-token context: what a step of `lmlab serve`'s continuous
//! batching costs as the batch grows.
//! `cargo run --release --example decode_batch -- CKPT_DIR [THREADS]`
use lmlab::io::checkpoint;
use lmlab::model::transformer::LogitRows;
use std::path::Path;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).expect("usage: decode_batch CKPT_DIR [THREADS]");
    let threads: usize = args.get(2).map_or(2, |t| t.parse().unwrap());
    let pool = lmlab::util::thread_pool(threads)?;
    let mut model = checkpoint::load_inference(Path::new(dir), 32)?.model;
    let vocab = model.config.vocab_size as u32;
    pool.install(|| -> anyhow::Result<()> {
        println!("rows  ms/step  ms/row  tokens/s");
        // ROWS=16 times that batch size alone (for a profiler), 400 steps.
        let only: Option<usize> = std::env::var("ROWS").ok().map(|r| r.parse().unwrap());
        let sizes = only.map_or(vec![1usize, 2, 4, 8, 16, 32], |r| vec![r]);
        let steps = if only.is_some() { 150 } else { 40 };
        for b in sizes {
            let mut cache = model.kv_cache(b)?;
            let prompt: Vec<u32> = (0..b * 64).map(|i| (i as u32 * 7) % vocab).collect();
            model.forward_cached(&prompt, &vec![64; b], 64, &mut cache, LogitRows::Last)?;
            let step: Vec<u32> = (0..b).map(|i| i as u32 % vocab).collect();
            let mut times = vec![];
            for _ in 0..steps {
                let t = Instant::now();
                model.forward_cached(&step, &vec![1; b], 1, &mut cache, LogitRows::Last)?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            times.sort_by(|a, b| a.total_cmp(b));
            let ms = times[times.len() / 2];
            println!("{b:4}  {ms:7.2}  {:6.2}  {:8.0}", ms / b as f64, b as f64 / ms * 1e3);
        }
        Ok(())
    })
}

//! All-reduce latency and bandwidth between the ranks of an MPI job, through lmlab's own
//! communicator (the call data-parallel training makes once per step on the gradients):
//!
//!     cargo build --release --features mpi --example allreduce
//!     mpirun -np 2 target/release/examples/allreduce
//!
//! Rank 0 prints one JSON line per message size: the median time of an f32 sum all-reduce, the
//! algorithm bandwidth (bytes / time) and the bus bandwidth (2·(N−1)/N · bytes / time, what
//! each link carries in a ring all-reduce: the figure to compare with a network's line rate).

use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let world = lmlab::dist::init()?;
    let n = world.size() as f64;
    for floats in [1usize, 256, 4096, 65_536, 262_144, 1 << 20, 4 << 20, 16 << 20] {
        let mut buf = vec![1.0f32; floats];
        let reps = (256 * 1024 * 1024 / (floats * 4)).clamp(5, 2000);
        for _ in 0..3 {
            world.all_reduce_sum(&mut buf);
        }
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps {
            world.barrier();
            let t = Instant::now();
            world.all_reduce_sum(&mut buf);
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let t = times[reps / 2];
        let bytes = (floats * 4) as f64;
        if world.is_root() {
            println!(
                "{}",
                serde_json::json!({
                    "ranks": world.size(), "bytes": bytes, "median_us": t * 1e6,
                    "algbw_gb_s": bytes / t / 1e9, "busbw_gb_s": 2.0 * (n - 1.0) / n * bytes / t / 1e9,
                    "reps": reps,
                })
            );
        }
    }
    lmlab::dist::finalize();
    Ok(())
}

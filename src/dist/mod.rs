//! Several processes, one job: the communicator that data-parallel training uses (MPI, as llm.c
//! and the HPC world use it, through the `mpi` crate over the system's Open MPI).
//!
//! A process has one [`Comm`], the world: [`init`] sets it up once at start (MPI when the
//! process was started by `mpirun` and lmlab was built with `--features mpi`; a single process
//! otherwise), [`world`] returns it anywhere after that, and [`finalize`] shuts MPI down before
//! the process exits. In a single process every collective is the identity, so code written for
//! N ranks runs unchanged as one.
//!
//! Collectives are called by one thread at a time (MPI is initialized with
//! `MPI_THREAD_SERIALIZED`, and the backend holds a lock around every call): the training loop
//! calls them between kernels, never from inside a parallel kernel.

#[cfg(feature = "mpi")]
mod mpi_backend;

use anyhow::Result;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// The processes of this job and the collectives between them.
pub struct Comm {
    rank: usize,
    size: usize,
    /// Ranks on this machine (Open MPI's `OMPI_COMM_WORLD_LOCAL_SIZE`; 1 when unknown).
    local_size: usize,
    backend: Backend,
    /// Time spent in collectives (nanoseconds) and bytes reduced, for the communication share
    /// of a step.
    comm_ns: AtomicU64,
    comm_bytes: AtomicU64,
}

enum Backend {
    Single,
    #[cfg(feature = "mpi")]
    Mpi(mpi_backend::World),
}

static WORLD: OnceLock<Comm> = OnceLock::new();

/// How `mpirun` (Open MPI, or a PMI launcher such as MPICH's or Slurm's) says this process is
/// one of several: (world size, rank, ranks on this machine).
pub fn launch_env() -> Option<(usize, usize, usize)> {
    let var = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<usize>().ok());
    let size = var("OMPI_COMM_WORLD_SIZE").or_else(|| var("PMI_SIZE"))?;
    let rank = var("OMPI_COMM_WORLD_RANK").or_else(|| var("PMI_RANK")).unwrap_or(0);
    let local = var("OMPI_COMM_WORLD_LOCAL_SIZE").or_else(|| var("MPI_LOCALNRANKS")).unwrap_or(1);
    Some((size, rank, local.max(1)))
}

/// Sets up the world once: MPI when started by `mpirun`, a single process otherwise. A job of
/// several ranks without MPI support compiled in is an error (the ranks would each train alone
/// and write the same files).
pub fn init() -> Result<&'static Comm> {
    if let Some(w) = WORLD.get() {
        return Ok(w);
    }
    let comm = match launch_env() {
        #[cfg(feature = "mpi")]
        Some(_) => mpi_backend::World::init()?,
        #[cfg(not(feature = "mpi"))]
        Some((size, _, _)) if size > 1 => anyhow::bail!(
            "started as one of {size} MPI ranks, but this lmlab was built without MPI support: \
             rebuild with `cargo build --release --features mpi`"
        ),
        _ => Comm::single(),
    };
    Ok(WORLD.get_or_init(|| comm))
}

/// The world [`init`] set up; a single process when it was never called (library use, tests).
pub fn world() -> &'static Comm {
    WORLD.get_or_init(Comm::single)
}

/// Shuts MPI down (`MPI_Finalize`) if it was started; the last call of a process.
pub fn finalize() {
    #[cfg(feature = "mpi")]
    mpi_backend::finalize();
}

impl Comm {
    /// One process: rank 0 of 1, every collective the identity.
    pub fn single() -> Comm {
        Comm::new(0, 1, 1, Backend::Single)
    }

    fn new(rank: usize, size: usize, local_size: usize, backend: Backend) -> Comm {
        Comm { rank, size, local_size, backend, comm_ns: AtomicU64::new(0), comm_bytes: AtomicU64::new(0) }
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Rank 0: the one that prints, logs and writes checkpoints.
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// More than one rank.
    pub fn is_distributed(&self) -> bool {
        self.size > 1
    }

    /// Worker threads per rank when the config says 0: this machine's cores shared by its ranks.
    pub fn default_threads(&self) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / self.local_size).max(1)
    }

    /// "rank R of N" for messages (empty in a single process).
    pub fn who(&self) -> String {
        if self.is_distributed() {
            format!("rank {} of {}", self.rank, self.size)
        } else {
            String::new()
        }
    }

    /// buf ← the element-wise sum of every rank's buf.
    pub fn all_reduce_sum(&self, buf: &mut [f32]) {
        self.timed(std::mem::size_of_val(buf), || match &self.backend {
            Backend::Single => {}
            #[cfg(feature = "mpi")]
            Backend::Mpi(w) => w.all_reduce_sum_f32(buf),
        })
    }

    /// buf ← the element-wise sum of every rank's buf, in f64 (losses and counts).
    pub fn all_reduce_sum_f64(&self, buf: &mut [f64]) {
        self.timed(std::mem::size_of_val(buf), || match &self.backend {
            Backend::Single => {}
            #[cfg(feature = "mpi")]
            Backend::Mpi(w) => w.all_reduce_sum_f64(buf),
        })
    }

    /// Rank `r`'s part of `len` items split as evenly as the count allows:
    /// `r·len/size .. (r+1)·len/size` (parts differ by at most one item).
    pub fn part_of(&self, rank: usize, len: usize) -> std::ops::Range<usize> {
        rank * len / self.size..(rank + 1) * len / self.size
    }

    /// This rank's [`Comm::part_of`] `len` items.
    pub fn part(&self, len: usize) -> std::ops::Range<usize> {
        self.part_of(self.rank, len)
    }

    /// buf ← every rank's own part of it ([`Comm::part`]): the others' parts are overwritten
    /// with theirs (an all-gather, in place).
    pub fn all_gather_parts(&self, buf: &mut [f32]) {
        self.timed(std::mem::size_of_val(buf), || match &self.backend {
            Backend::Single => {}
            #[cfg(feature = "mpi")]
            Backend::Mpi(w) => {
                let parts: Vec<_> = (0..self.size).map(|r| self.part_of(r, buf.len())).collect();
                w.all_gather_parts(buf, &parts, self.rank)
            }
        })
    }

    /// Every rank's `local` (rank r's holding `part_of(r, len)` of a `len`-long buffer)
    /// assembled on rank 0; None on the other ranks. In one process, `local` itself.
    pub fn gather_parts(&self, local: &[f32], len: usize) -> Option<Vec<f32>> {
        match &self.backend {
            Backend::Single => {
                debug_assert_eq!(local.len(), len, "one process holds the whole buffer");
                Some(local.to_vec())
            }
            #[cfg(feature = "mpi")]
            Backend::Mpi(w) => {
                let parts: Vec<_> = (0..self.size).map(|r| self.part_of(r, len)).collect();
                w.gather_parts(local, &parts, self.rank)
            }
        }
    }

    /// Rank 0's `bytes` on every rank (their length included, so the Vec may be resized).
    // Without MPI there is one rank and nothing to receive.
    #[cfg_attr(not(feature = "mpi"), allow(unused_variables, clippy::ptr_arg))]
    pub fn broadcast_bytes(&self, bytes: &mut Vec<u8>) {
        match &self.backend {
            Backend::Single => {}
            #[cfg(feature = "mpi")]
            Backend::Mpi(w) => w.broadcast_bytes(bytes),
        }
    }

    /// Every rank waits for the others.
    pub fn barrier(&self) {
        match &self.backend {
            Backend::Single => {}
            #[cfg(feature = "mpi")]
            Backend::Mpi(w) => w.barrier(),
        }
    }

    /// Ends the whole job (`MPI_Abort`: mpirun stops every rank) after an error on this rank;
    /// in a single process, exits with `code`.
    pub fn abort(&self, code: i32) -> ! {
        match &self.backend {
            Backend::Single => std::process::exit(code),
            #[cfg(feature = "mpi")]
            Backend::Mpi(w) => w.abort(code),
        }
    }

    /// (seconds, bytes) spent in collectives since the last call; resets both.
    pub fn take_comm_stats(&self) -> (f64, u64) {
        let ns = self.comm_ns.swap(0, Ordering::Relaxed);
        (ns as f64 * 1e-9, self.comm_bytes.swap(0, Ordering::Relaxed))
    }

    fn timed(&self, bytes: usize, f: impl FnOnce()) {
        if !self.is_distributed() {
            return f();
        }
        let t = Instant::now();
        f();
        self.comm_ns.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.comm_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

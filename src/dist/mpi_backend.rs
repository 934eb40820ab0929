//! The MPI backend of [`super::Comm`]: the `mpi` crate (rsmpi) over the system's MPI library.

use super::{Backend, Comm};
use anyhow::{anyhow, ensure, Result};
use mpi::collective::SystemOperation;
use mpi::datatype::{Equivalence, PartitionMut};
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;
use mpi::Count;
use std::sync::Mutex;

/// MPI_COMM_WORLD, with a lock that serializes calls (MPI_THREAD_SERIALIZED) and a reusable
/// receive buffer, so a reduction allocates nothing once it has run at its largest size.
pub struct World {
    inner: Mutex<Inner>,
}

struct Inner {
    comm: SimpleCommunicator,
    recv_f32: Vec<f32>,
    recv_f64: Vec<f64>,
}

// SAFETY: the communicator is a handle that MPI lets any thread use when MPI runs at
// MPI_THREAD_SERIALIZED or above (checked in `init`) and calls never overlap; the Mutex makes
// every use exclusive.
unsafe impl Send for Inner {}

/// The universe: dropping it calls MPI_Finalize, so it lives until [`finalize`].
static UNIVERSE: Mutex<Option<UniverseBox>> = Mutex::new(None);

struct UniverseBox(#[allow(dead_code)] Universe);
// SAFETY: only taken out and dropped once, by `finalize`, after every collective has returned.
unsafe impl Send for UniverseBox {}

impl World {
    pub fn init() -> Result<Comm> {
        let (universe, threading) = mpi::initialize_with_threading(mpi::Threading::Serialized)
            .ok_or_else(|| anyhow!("MPI was already initialized"))?;
        ensure!(
            threading >= mpi::Threading::Serialized,
            "the MPI library offers thread level {threading:?}; lmlab needs Serialized or above"
        );
        let comm = universe.world();
        let (rank, size) = (comm.rank() as usize, comm.size() as usize);
        let local = super::launch_env().map_or(1, |(_, _, l)| l);
        *UNIVERSE.lock().unwrap_or_else(|e| e.into_inner()) = Some(UniverseBox(universe));
        let inner = Inner { comm, recv_f32: Vec::new(), recv_f64: Vec::new() };
        Ok(Comm::new(rank, size, local, Backend::Mpi(World { inner: Mutex::new(inner) })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn all_reduce_sum_f32(&self, buf: &mut [f32]) {
        let mut g = self.lock();
        let Inner { comm, recv_f32, .. } = &mut *g;
        all_reduce_sum(comm, buf, recv_f32);
    }

    pub fn all_reduce_sum_f64(&self, buf: &mut [f64]) {
        let mut g = self.lock();
        let Inner { comm, recv_f64, .. } = &mut *g;
        all_reduce_sum(comm, buf, recv_f64);
    }

    /// In-place all-gather: rank r contributes `buf[parts[r]]`.
    pub fn all_gather_parts(&self, buf: &mut [f32], parts: &[std::ops::Range<usize>], rank: usize) {
        let mut g = self.lock();
        let Inner { comm, recv_f32, .. } = &mut *g;
        if recv_f32.len() < buf.len() {
            recv_f32.resize(buf.len(), 0.0);
        }
        let counts: Vec<Count> = parts.iter().map(|p| p.len() as Count).collect();
        let displs: Vec<Count> = parts.iter().map(|p| p.start as Count).collect();
        let mut recv = PartitionMut::new(&mut recv_f32[..buf.len()], counts, displs);
        comm.all_gather_varcount_into(&buf[parts[rank].clone()], &mut recv);
        buf.copy_from_slice(&recv_f32[..buf.len()]);
    }

    /// Gather to rank 0: rank r sends `local` (= its `parts[r]`); rank 0 gets the whole.
    pub fn gather_parts(&self, local: &[f32], parts: &[std::ops::Range<usize>], rank: usize) -> Option<Vec<f32>> {
        let g = self.lock();
        let root = g.comm.process_at_rank(0);
        if rank != 0 {
            root.gather_varcount_into(local);
            return None;
        }
        let len = parts.last().map_or(0, |p| p.end);
        let mut out = vec![0f32; len];
        let counts: Vec<Count> = parts.iter().map(|p| p.len() as Count).collect();
        let displs: Vec<Count> = parts.iter().map(|p| p.start as Count).collect();
        let mut recv = PartitionMut::new(&mut out[..], counts, displs);
        root.gather_varcount_into_root(local, &mut recv);
        Some(out)
    }

    pub fn broadcast_bytes(&self, bytes: &mut Vec<u8>) {
        let g = self.lock();
        let root = g.comm.process_at_rank(0);
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        bytes.resize(len as usize, 0);
        root.broadcast_into(&mut bytes[..]);
    }

    pub fn barrier(&self) {
        self.lock().comm.barrier();
    }

    pub fn abort(&self, code: i32) -> ! {
        // Not through the lock: another thread may hold it, blocked in a collective that the
        // failed rank will never join.
        mpi::topology::SimpleCommunicator::world().abort(code)
    }
}

/// buf ← the sum over the ranks, through `recv` (grown once to the largest size seen).
fn all_reduce_sum<T: Equivalence + Copy + Default>(comm: &SimpleCommunicator, buf: &mut [T], recv: &mut Vec<T>) {
    if recv.len() < buf.len() {
        recv.resize(buf.len(), T::default());
    }
    let recv = &mut recv[..buf.len()];
    comm.all_reduce_into(&*buf, recv, SystemOperation::sum());
    buf.copy_from_slice(recv);
}

/// MPI_Finalize, once, if MPI was started.
pub fn finalize() {
    drop(UNIVERSE.lock().unwrap_or_else(|e| e.into_inner()).take());
}

//! Mixed precision: the linear layers computing as autocast does in bf16/f16, over a rounded
//! copy of the weights, while everything else stays f32.

use super::layers::{LowScratch, Lowp};
use super::Transformer;
use crate::kernels::precision::{matmul_lowp_scratch_len, round_into, Precision};
use crate::model::layout::{ActLayout, Regions};

/// Mixed-precision state: the rounded weights the linear layers read and their scratch.
pub(super) struct LowState {
    p: Precision,
    /// `params` rounded to `p`, refreshed at the start of every forward pass.
    w: Vec<f32>,
    scratch: Vec<f32>,
    ranges: LowScratch,
}

impl LowState {
    /// Rounds the current parameters into the working copy.
    pub(super) fn refresh(&mut self, params: &[f32]) {
        round_into(&mut self.w, params, self.p);
    }
}

impl Transformer {
    /// Runs every linear layer (the head included) as autocast does in `p`: inputs and weights
    /// rounded to bf16/f16, f32 accumulation, the output and the gradients flowing back
    /// through the layer rounded too (see `kernels::precision`). Everything else — embeddings,
    /// norms, attention softmax, the loss, the gradients' f32 accumulation and the master
    /// weights in `params` — stays f32. Allocates the rounded weight copy and the scratch here,
    /// once; `Precision::Fp32` frees them.
    pub fn set_precision(&mut self, p: Precision) {
        if !p.is_reduced() {
            self.low = None;
            return;
        }
        let n = self.max_batch * self.config.block_size;
        let (win, wout) = self.widths;
        let head_out = self.config.vocab_size.max(self.config.num_classes);
        let biggest = self.layout.tensors.iter().map(|t| t.numel()).max().unwrap_or(0);
        let (ranges, scratch_len) = low_scratch(n, win, wout, head_out, biggest);
        self.low = Some(LowState { p, w: vec![0.0; self.layout.total], scratch: vec![0.0; scratch_len], ranges });
    }

    /// Bytes of the low-precision working copy of the weights and its scratch (0 in fp32).
    pub fn low_precision_bytes(&self) -> usize {
        self.low.as_ref().map_or(0, |l| 4 * (l.w.len() + l.scratch.len()))
    }

    /// The precision of the linear layers.
    pub fn precision(&self) -> Precision {
        self.low.as_ref().map_or(Precision::Fp32, |l| l.p)
    }
}

/// Views of the mixed-precision buffers for one pass: (precision, rounded weights, scratch).
pub(super) type LowViews<'a> = (Precision, Regions<'a>, Regions<'a>, &'a LowScratch);

pub(super) fn low_regions(l: &mut LowState) -> LowViews<'_> {
    (l.p, Regions::new(&mut l.w), Regions::new(&mut l.scratch), &l.ranges)
}

pub(super) fn lowp<'a>(views: &'a Option<LowViews<'a>>) -> Option<Lowp<'a>> {
    views.as_ref().map(|(p, w, s, ranges)| Lowp { p: *p, w, s, ranges })
}

/// The low-precision scratch for `n` rows: linear inputs up to `win` wide, outputs up to `wout`,
/// a head of `head_out` outputs and a largest tensor of `biggest` elements; its ranges and total
/// element count.
pub(super) fn low_scratch(n: usize, win: usize, wout: usize, head_out: usize, biggest: usize) -> (LowScratch, usize) {
    let mut al = ActLayout::default();
    let ranges = LowScratch {
        x: al.alloc(n * win),
        dout: al.alloc(n * wout),
        bwd: al.alloc(matmul_lowp_scratch_len(n, win, 0) + biggest + wout.max(head_out)),
    };
    (ranges, al.total)
}

//! Linear layers with quantized weights, for inference.
//!
//! A quantized model keeps its f32 parameter buffer (norms, biases, embeddings, and the
//! dequantized value of every quantized weight, so whatever reads `params` sees the numbers
//! that run), and a [`QuantLinears`] table: for each quantized linear weight, keyed by the
//! start of its range in `params`, the [`QuantMatrix`] that [`super::layers::Ctx::linear_forward`]
//! multiplies with instead (`kernels::quant`). Training passes are refused.

use super::ablation::Ablation;
use super::layers::LinearHooks;
use super::lora::{lora_pass, LoraTable};
use super::Transformer;
use crate::kernels::quant::{quant_matmul_forward, quant_matmul_scratch_len, QuantMatrix};
use crate::model::layout::Regions;
use anyhow::{ensure, Context, Result};
use std::ops::Range;
use std::sync::{Arc, Mutex};

/// Called with (the start of the weight's range in `params`, the layer's input x (N, C), N)
/// before every linear layer's product (see [`Transformer::set_linear_observer`]).
pub type LinearObserver = dyn Fn(usize, &[f32], usize) + Send + Sync;

/// The quantized linear weights of a model.
#[derive(Debug, Default)]
pub struct QuantLinears {
    /// (parameter name, range start, the quantized weight), sorted by range start.
    mats: Vec<(String, usize, QuantMatrix)>,
    /// The activations of the running product, quantized (one linear layer runs at a time);
    /// sized once for the largest product, so a forward pass allocates nothing.
    scratch: Mutex<Vec<u8>>,
}

impl QuantLinears {
    /// The quantized weight whose f32 copy sits at `w`, if that weight is quantized.
    fn get(&self, w: &Range<usize>) -> Option<&QuantMatrix> {
        self.mats.binary_search_by_key(&w.start, |(_, s, _)| *s).ok().map(|i| &self.mats[i].2)
    }

    /// out (N, rows) = x (N, cols) · Wᵀ (+ bias) with the quantized weight at `w`; false (and
    /// nothing done) when that weight is not quantized.
    pub(crate) fn forward(&self, out: &mut [f32], x: &[f32], w: &Range<usize>, bias: Option<&[f32]>, n: usize) -> bool {
        let Some(m) = self.get(w) else { return false };
        let mut scratch = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        quant_matmul_forward(out, x, m, bias, n, &mut scratch);
        true
    }

    /// Every quantized weight: (parameter name, matrix), in layout order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &QuantMatrix)> {
        self.mats.iter().map(|(n, _, m)| (n.as_str(), m))
    }

    pub fn len(&self) -> usize {
        self.mats.len()
    }

    pub fn is_empty(&self) -> bool {
        self.mats.is_empty()
    }

    /// Bytes of the quantized weights (codes and scales).
    pub fn bytes(&self) -> usize {
        self.mats.iter().map(|(_, _, m)| m.bytes()).sum()
    }
}

impl Transformer {
    /// Replaces the linear weight `name` (rows, cols) by its quantized form `m` in every
    /// forward pass; `params` gets the dequantized values. The model runs inference only from
    /// then on.
    pub fn set_quantized(&mut self, name: &str, m: QuantMatrix) -> Result<()> {
        ensure!(
            self.lora.is_none(),
            "a model with LoRA adapters cannot be quantized: merge them first (lmlab merge-lora)"
        );
        let t = self.layout.get(name).with_context(|| format!("the model has no tensor {name}"))?;
        ensure!(
            t.shape == [m.rows, m.cols],
            "quantized {name} is {}×{}, but the model's tensor has shape {:?}",
            m.rows,
            m.cols,
            t.shape
        );
        let range = t.range();
        m.dequantize(&mut self.params[range.clone()]);
        // The largest product this weight takes part in: every row of the largest batch.
        let rows = self.max_batch() * self.config.block_size;
        let need = quant_matmul_scratch_len(&m, rows);
        let q = self.quant.get_or_insert_with(QuantLinears::default);
        let scratch = q.scratch.get_mut().unwrap_or_else(|e| e.into_inner());
        if scratch.len() < need {
            scratch.resize(need, 0);
        }
        match q.mats.binary_search_by_key(&range.start, |(_, s, _)| *s) {
            Ok(i) => q.mats[i] = (name.to_string(), range.start, m),
            Err(i) => q.mats.insert(i, (name.to_string(), range.start, m)),
        }
        Ok(())
    }

    /// Tensor parallelism (Megatron-LM): the outputs of the linear weights named `names` are
    /// partial sums of this rank's heads or neurons, added up over every rank of the MPI job
    /// right after the product (one all-reduce each), before anything else reads them. None:
    /// off. Inference only.
    pub fn set_tensor_parallel(&mut self, names: Option<&[String]>) -> Result<()> {
        ensure!(names.is_none() || self.inference, "tensor parallelism runs inference models only");
        self.tp_reduce = match names {
            None => None,
            Some(names) => {
                let mut starts = names
                    .iter()
                    .map(|n| {
                        self.layout.get(n).map(|t| t.offset).with_context(|| format!("the model has no tensor {n}"))
                    })
                    .collect::<Result<Vec<usize>>>()?;
                starts.sort_unstable();
                Some(starts)
            }
        };
        Ok(())
    }

    /// Calls `observer` with the input of every linear layer in every forward pass from now
    /// on (None: stop): calibration for GPTQ. The weight is named by the start of its range in
    /// `params` (`layout.tensors[i].offset`).
    pub fn set_linear_observer(&mut self, observer: Option<Arc<LinearObserver>>) {
        self.observer = observer;
    }

    /// Drops the quantized weights: the model runs (and may train) on `params`, which hold
    /// their dequantized values.
    pub fn clear_quantized(&mut self) {
        self.quant = None;
    }

    /// The quantized linear weights, if any.
    pub fn quantized(&self) -> Option<&QuantLinears> {
        self.quant.as_ref()
    }

    /// Bytes of the weights in the form a checkpoint stores them: 4 per f32 parameter, and
    /// for each quantized weight its codes, scales and zero points instead of its f32 copy.
    pub fn weight_bytes(&self) -> usize {
        let q = self.quant.as_ref();
        let quantized: usize = q.map_or(0, |q| q.iter().map(|(_, m)| m.rows * m.cols).sum());
        4 * (self.params.len() - quantized) + q.map_or(0, |q| q.bytes())
    }
}

/// The hooks of a model's linear layers, from its fields (a function of the fields, not of
/// `&self`, so a pass can hold its buffers mutably at the same time).
pub(crate) fn linear_hooks<'a>(
    quant: &'a Option<QuantLinears>,
    observer: &'a Option<Arc<LinearObserver>>,
    reduce: &'a Option<Vec<usize>>,
    ablate: &'a Option<Ablation>,
    lora: &'a Option<(&'a LoraTable, Regions<'a>)>,
    frozen: &'a [Range<usize>],
) -> LinearHooks<'a> {
    LinearHooks {
        quant: quant.as_ref(),
        observe: observer.as_deref(),
        reduce: reduce.as_deref(),
        ablate: ablate.as_ref(),
        lora: lora_pass(lora),
        frozen,
    }
}

//! The encoder-decoder's entry points: a full forward pass over (source, target) pairs, and
//! encode-once / decode-many inference (greedy and beam search decode the same encoding many
//! times, with [`Transformer::reorder_encoded`] following the beams).

use super::config::Arch;
use super::precision::{low_regions, lowp};
use super::quant::linear_hooks;
use super::{ctx, Transformer};
use crate::model::layout::Regions;
use anyhow::{bail, ensure, Result};

impl Transformer {
    /// Encoder-decoder: forward over `src` (B, S) with `src_mask` (B, S) and the decoder input
    /// `tgt_in` (B, T); with `tgt_out` (B, T) returns the mean cross-entropy over targets that
    /// are not -1.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_seq2seq(
        &mut self,
        src: &[u32],
        src_mask: Option<&[bool]>,
        tgt_in: &[u32],
        tgt_out: Option<&[i32]>,
        b: usize,
        s: usize,
        t: usize,
        train: bool,
        dropout_seed: u64,
    ) -> Result<Option<f32>> {
        ensure!(self.config.arch == Arch::EncoderDecoder, "forward_seq2seq needs arch = \"encoder_decoder\"");
        self.check_train(train)?;
        self.check_shape(b, s, "source")?;
        self.check_shape(b, t, "target")?;
        ensure!(src.len() == b * s, "src has {} tokens, expected B·S = {}", src.len(), b * s);
        ensure!(tgt_in.len() == b * t, "tgt_in has {} tokens, expected B·T = {}", tgt_in.len(), b * t);
        self.check_tokens("src", src)?;
        self.check_tokens("tgt_in", tgt_in)?;
        self.set_targets(tgt_out, b * t, self.config.vocab_size)?;
        self.begin(b, t, s, train, dropout_seed);
        self.last.src[..b * s].copy_from_slice(src);
        self.last.idx[..b * t].copy_from_slice(tgt_in);
        self.set_mask(src_mask, b, s)?;
        self.run_forward()
    }

    /// Encoder-decoder inference, step 1 of encode-once / decode-many: runs only the encoder
    /// (evaluation mode, no dropout) over `src` (B, S) with `src_mask` (B, S) (true = real
    /// token; None = no padding) and keeps its output in the activation buffers for
    /// [`Transformer::decode`]. Any later `forward_*` call overwrites it.
    pub fn encode(&mut self, src: &[u32], src_mask: Option<&[bool]>, b: usize, s: usize) -> Result<()> {
        ensure!(self.config.arch == Arch::EncoderDecoder, "encode needs arch = \"encoder_decoder\"");
        self.check_shape(b, s, "source")?;
        ensure!(src.len() == b * s, "src has {} tokens, expected B·S = {}", src.len(), b * s);
        self.check_tokens("src", src)?;
        // A failed call below must not leave an earlier encoding usable with changed inputs.
        self.last.encoded = false;
        self.set_mask(src_mask, b, s)?;
        // t = 0 until the first decode: logits() and hidden() are empty, not stale.
        self.begin(b, 0, s, false, 0);
        self.last.has_targets = false;
        self.last.src[..b * s].copy_from_slice(src);
        if let Some(l) = &mut self.low {
            l.refresh(&self.params);
        }
        let last = &self.last;
        let (enc, ea) = (self.encoder.as_ref().unwrap(), self.enc_acts.as_ref().unwrap());
        let w = Regions::new(&mut self.params);
        let g = Regions::new(&mut self.grads);
        let r = Regions::new(&mut self.acts);
        let low_views = self.low.as_mut().map(low_regions);
        let low = lowp(&low_views);
        let lora_views = super::lora::lora_regions(&mut self.lora);
        let hooks =
            linear_hooks(&self.quant, &self.observer, &self.tp_reduce, &self.ablation, &lora_views, &self.frozen);
        let mask = last.has_mask.then(|| &last.mask[..b * s]);
        let cxe = ctx(&w, &g, &r, &self.consts, &self.scratch, last, s, mask, None, low, hooks);
        enc.forward(&cxe, ea, &last.src[..b * s], None);
        self.last.encoded = true;
        Ok(())
    }

    /// Encoder-decoder inference, step 2 (repeatable): runs only the decoder over `tgt_in`
    /// (B, T), cross-attending to the output kept by the last [`Transformer::encode`] (row `i`
    /// of `tgt_in` reads encoded row `i`; `b` must be the encoded batch size), and returns the
    /// logits (B, T, V). Bit-identical to the logits of [`Transformer::forward_seq2seq`] on the
    /// same source and `tgt_in` in evaluation mode: the same kernels run on the same buffers.
    pub fn decode(&mut self, tgt_in: &[u32], b: usize, t: usize) -> Result<&[f32]> {
        ensure!(self.config.arch == Arch::EncoderDecoder, "decode needs arch = \"encoder_decoder\"");
        ensure!(self.last.encoded, "decode() needs encode() first (a forward pass discards the encoder output)");
        ensure!(b == self.last.b, "decode with batch {b}, but {} rows are encoded", self.last.b);
        self.check_shape(b, t, "target")?;
        ensure!(tgt_in.len() == b * t, "tgt_in has {} tokens, expected B·T = {}", tgt_in.len(), b * t);
        self.check_tokens("tgt_in", tgt_in)?;
        self.last.t = t;
        self.last.idx[..b * t].copy_from_slice(tgt_in);
        self.run_forward_from(false)?;
        Ok(self.logits())
    }

    /// Rearranges the rows kept by [`Transformer::encode`]: new row `i` is old row `rows[i]`,
    /// and the batch size becomes `rows.len()` (rows may repeat or be dropped). Beam search
    /// encodes each sentence once, then repeats its row once per beam and drops the rows of
    /// finished sentences, instead of running the encoder on `beam` copies. Copies are exact,
    /// so decoding a gathered row equals decoding the original. Allocates nothing.
    pub fn reorder_encoded(&mut self, rows: &[usize]) -> Result<()> {
        ensure!(self.last.encoded, "reorder_encoded() needs encode() first");
        let (old_b, s, c) = (self.last.b, self.last.t_enc, self.config.n_embd);
        ensure!(
            !rows.is_empty() && rows.len() <= self.max_batch,
            "reorder_encoded: {} rows outside 1..={}",
            rows.len(),
            self.max_batch
        );
        if let Some(bad) = rows.iter().find(|&&r| r >= old_b) {
            bail!("reorder_encoded: row {bad} out of range for {old_b} encoded rows");
        }
        let nb = rows.len();
        let out = self.encoder.as_ref().unwrap().output_range(self.enc_acts.as_ref().unwrap()).start;
        // Gather into the backward scratch (free between passes, (max_batch·block_size, C)
        // so large enough), then copy back; rows may repeat, so in place would overwrite.
        let tmp = self.scratch.d_fin.start;
        let row = s * c;
        for (i, &r) in rows.iter().enumerate() {
            self.acts.copy_within(out + r * row..out + (r + 1) * row, tmp + i * row);
        }
        self.acts.copy_within(tmp..tmp + nb * row, out);
        // Source tokens and mask follow their rows.
        let last = &mut self.last;
        for (i, &r) in rows.iter().enumerate() {
            last.gather_src[i * s..(i + 1) * s].copy_from_slice(&last.src[r * s..(r + 1) * s]);
            last.gather_mask[i * s..(i + 1) * s].copy_from_slice(&last.mask[r * s..(r + 1) * s]);
        }
        last.src[..nb * s].copy_from_slice(&last.gather_src[..nb * s]);
        last.mask[..nb * s].copy_from_slice(&last.gather_mask[..nb * s]);
        last.b = nb;
        last.t = 0;
        Ok(())
    }
}

//! The shape of a convolution ([`ConvGeom`]) and what follows from it alone: output sizes, the
//! valid output range of a tap, whether the image is its own column matrix, the geometry of
//! the grad-input taken as a forward.

/// Geometry of a convolution without bias or dilation: `x (n, c, h, w)` convolved with a
/// `k × k` kernel, stride `stride`, `pad` zeros on every side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    /// Images in the batch (N).
    pub n: usize,
    /// Input channels per image (C).
    pub c: usize,
    /// Input plane height in pixels (H).
    pub h: usize,
    /// Input plane width in pixels (W).
    pub w: usize,
    /// Side of the square kernel (k: 1, 3, 7 …).
    pub k: usize,
    /// Step between output positions, in input pixels, both axes.
    pub stride: usize,
    /// Zero pixels added on each side of the plane, both axes.
    pub pad: usize,
}

impl ConvGeom {
    /// Output plane height, `(H + 2·pad − k) / stride + 1`.
    pub fn ho(&self) -> usize {
        (self.h + 2 * self.pad - self.k) / self.stride + 1
    }
    /// Output plane width, `(W + 2·pad − k) / stride + 1`.
    pub fn wo(&self) -> usize {
        (self.w + 2 * self.pad - self.k) / self.stride + 1
    }
    /// Taps per output channel, `C·k·k`: the rows of the column matrix, the weight's row length.
    pub(super) fn row_len(&self) -> usize {
        self.c * self.k * self.k
    }
}

/// Valid output range `[lo, hi)` along one axis for kernel offset `kk`: the outputs whose
/// input coordinate `o·stride + kk − pad` falls inside `[0, size)`.
pub(super) fn valid_range(size: usize, out: usize, kk: usize, g: &ConvGeom) -> (usize, usize) {
    let (s, p) = (g.stride as isize, g.pad as isize);
    let lo = ((p - kk as isize + s - 1).max(0) / s) as usize;
    // Floor division: `size − 1 + p − kk` can be negative (a 1×1 input to a 3×3 tap).
    let hi = ((size as isize - 1 + p - kk as isize).div_euclid(s) + 1).max(0) as usize;
    let hi = hi.min(out);
    (lo.min(hi), hi)
}

/// A 1×1, stride-1, unpadded convolution reads the image itself as its column matrix.
pub(super) fn is_pointwise(g: &ConvGeom) -> bool {
    g.k == 1 && g.stride == 1 && g.pad == 0
}

/// The grad-input of a stride-1 convolution is itself a stride-1 convolution of `gY` with the
/// flipped, transposed weight and padding `k − 1 − pad`: its geometry (it then runs as a
/// Winograd or implicit-GEMM forward, with no col2im).
pub(super) fn grad_input_as_conv(g: &ConvGeom, cout: usize) -> Option<ConvGeom> {
    (g.stride == 1 && g.pad < g.k).then(|| ConvGeom {
        n: g.n,
        c: cout,
        h: g.ho(),
        w: g.wo(),
        k: g.k,
        stride: 1,
        pad: g.k - 1 - g.pad,
    })
}

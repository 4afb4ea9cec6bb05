//! Direct f64 references of the convolution and its weight gradient (any k, stride, padding)
//! for the tests of the implicit and Winograd kernels.

use super::geometry::ConvGeom;

/// Every (output position, tap) pair of a convolution whose input pixel lies inside:
/// `f(out channel, in channel, tap, input index, output index)` with the tap
/// `ky·k + kx` and the indices into `x (N, C, H, W)` and `y (N, Cout, Ho, Wo)`.
fn for_each_term(g: &ConvGeom, cout: usize, mut f: impl FnMut(usize, usize, usize, usize, usize)) {
    let (ho, wo, k) = (g.ho(), g.wo(), g.k);
    for i in 0..g.n {
        for o in 0..cout {
            for ci in 0..g.c {
                for t in 0..k * k {
                    for oy in 0..ho {
                        for ox in 0..wo {
                            let iy = (oy * g.stride + t / k) as isize - g.pad as isize;
                            let ix = (ox * g.stride + t % k) as isize - g.pad as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                                let xi = ((i * g.c + ci) * g.h + iy as usize) * g.w + ix as usize;
                                f(o, ci, t, xi, ((i * cout + o) * ho + oy) * wo + ox);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `y = conv(x, w)`, `w (Cout, C, k, k)`.
pub(crate) fn forward(x: &[f32], w: &[f32], g: &ConvGeom, cout: usize) -> Vec<f64> {
    let (c, kk) = (g.c, g.k * g.k);
    let mut y = vec![0f64; g.n * cout * g.ho() * g.wo()];
    for_each_term(g, cout, |o, ci, t, xi, yi| y[yi] += x[xi] as f64 * w[(o * c + ci) * kk + t] as f64);
    y
}

/// `gW (Cout, C, k, k)` from `x` and `gy (N, Cout, Ho, Wo)`.
pub(crate) fn grad_weight(x: &[f32], gy: &[f32], g: &ConvGeom, cout: usize) -> Vec<f64> {
    let (c, kk) = (g.c, g.k * g.k);
    let mut gw = vec![0f64; cout * c * kk];
    for_each_term(g, cout, |o, ci, t, xi, yi| {
        gw[(o * c + ci) * kk + t] += x[xi] as f64 * gy[yi] as f64
    });
    gw
}

//! The convolutions' products on the 6×64 wide tile ([`packed::wide_tile`],
//! [`packed::wide_tile_cols`]): the 64-channel panel layouts ([`panels_t`], [`pack_wide`]),
//! the implicit forward's product ([`wide_product`]), and the weight gradients' product
//! ([`wide_gw`], shared by the implicit, im2col and Winograd weight gradients) with the
//! conditions they need ([`gw_applies`]).

use super::geometry::ConvGeom;
use super::knobs;
use crate::kernels::packed::{self, WR, WV};

/// Whether the wide tile can hold `cout` output channels: whole 64-channel panels.
pub(super) fn wide_channels(cout: usize) -> bool {
    cout > 0 && cout.is_multiple_of(WV)
}

/// What every wide-tile weight gradient needs: the AVX-512 kernel, 64+ taps (not the stem),
/// whole 64-channel panels, and [`knobs::Knobs::wide_gw`] on.
pub(super) fn gw_applies(g: &ConvGeom, cout: usize) -> bool {
    packed::has_fast_kernel() && g.row_len() >= 64 && wide_channels(cout) && knobs::get().wide_gw
}

/// Inner indices per block of the wide products (`A`'s block, `KC × 64` floats = 32 KB, stays
/// in L1 while the tiles sweep the image).
const WIDE_KC: usize = 128;

/// `gYᵀ` of one image in 64-channel panels: `dst[pn·pstride + (oy·ld + ox)·64 + v] =
/// gy[pn·64 + v][oy][ox]` (`ld` ≥ `Wo`: the padded-width grid leaves its extra columns as they
/// were, zero).
pub(super) fn panels_t(gyi: &[f32], cout: usize, ho: usize, wo: usize, ld: usize, dst: &mut [f32], pstride: usize) {
    let plane = ho * wo;
    for o in 0..cout {
        let (pn, v) = (o / WV, o % WV);
        for oy in 0..ho {
            let src = &gyi[o * plane + oy * wo..][..wo];
            let d = &mut dst[pn * pstride + oy * ld * WV + v..];
            for (ox, s) in src.iter().enumerate() {
                d[ox * WV] = *s;
            }
        }
    }
}

/// The weight `(Cout, K)` row-major in 64-channel k-major panels for the wide tile,
/// `a[(pn·K + kk)·64 + v] = w[pn·64 + v][kk]`, 64-byte aligned: `(buffer, offset)` — the
/// panel transpose of [`panels_t`] with the weight as a one-row "image" of `K` positions.
pub(super) fn pack_wide(w: &[f32], cout: usize, k: usize) -> (Vec<f32>, usize) {
    let (mut ap, a0) = packed::aligned_zeros(cout * k);
    panels_t(w, cout, 1, k, k, &mut ap[a0..a0 + cout * k], k * WV);
    (ap, a0)
}

/// `ct (n × Cout, position-major, rows cout apart) = (A · B)ᵀ` on the wide tile: `apk` the
/// weight packed by [`pack_wide`] (`K` = `offs.len()`), `B(kk, j) = b[offs[kk] + j]` for
/// `j` below `n` rounded up to [`WR`] (those extra positions are read, and their products
/// land in `ct`'s spare rows). Blocks of [`WIDE_KC`] inner indices: `A`'s block stays in L1
/// while the tiles sweep the positions.
pub(super) fn wide_product(apk: &[f32], cout: usize, b: &[f32], offs: &[usize], n: usize, ct: &mut [f32]) {
    let (k, np, panels) = (offs.len(), n.next_multiple_of(WR), cout / WV);
    assert!(apk.len() >= cout * k && ct.len() >= np * cout, "wide_product: buffers too small");
    assert!(offs.iter().all(|&o| o + np <= b.len()), "wide_product: B rows out of bounds");
    for k0 in (0..k).step_by(WIDE_KC) {
        let kl = WIDE_KC.min(k - k0);
        for pn in 0..panels {
            let a = apk[(pn * k + k0) * WV..].as_ptr();
            for n0 in (0..np).step_by(WR) {
                // SAFETY: A's block holds kl·WV floats; every B read, b[offs[kk] + n0 + j] for
                // j < WR, is inside b (asserted: offs + np ≤ len); the tile's rows
                // n0..n0+WR, columns pn·WV..+WV lie inside ct (np × cout).
                unsafe {
                    packed::wide_tile_cols(
                        kl,
                        a,
                        b.as_ptr().add(n0),
                        offs[k0..].as_ptr(),
                        ct.as_mut_ptr().add(n0 * cout + pn * WV),
                        cout,
                        k0 > 0,
                    )
                }
            }
        }
    }
}

/// `acc (rows × Cout, rows cout apart) += B · A` on the wide tile, the weight gradients' inner
/// loop: `A` is `gYᵀ` for `kn` output positions in 64-channel panels `pstride` apart
/// (`a[pn·pstride + q·64 + v]`), `B`'s row `r` is `kn` contiguous floats at `b[roff(r)..]`.
/// Blocks of [`WIDE_KC`] positions: `A`'s block stays in L1 while the tiles of rows sweep it.
#[allow(clippy::too_many_arguments)]
pub(super) fn wide_gw(
    acc: &mut [f32],
    cout: usize,
    rows: usize,
    roff: impl Fn(usize) -> usize,
    b: &[f32],
    a: &[f32],
    pstride: usize,
    kn: usize,
) {
    let panels = cout / WV;
    assert!(acc.len() >= rows * cout && a.len() >= (panels - 1) * pstride + kn * WV);
    assert!((0..rows).all(|r| roff(r) + kn <= b.len()), "wide_gw: B rows out of bounds");
    let mut tile = [0f32; WR * WV];
    for k0 in (0..kn).step_by(WIDE_KC) {
        let kl = WIDE_KC.min(kn - k0);
        for pn in 0..panels {
            let ap = a[pn * pstride + k0 * WV..].as_ptr();
            for t0 in (0..rows).step_by(WR) {
                let tr = WR.min(rows - t0);
                let boff: [usize; WR] = std::array::from_fn(|j| roff(t0 + j.min(tr - 1)) + k0);
                let off = t0 * cout + pn * WV;
                if tr == WR {
                    // SAFETY: A's block holds kl·WV floats, each B row kl floats (asserted
                    // above), the tile's WR rows × WV columns lie inside acc (rows cout apart,
                    // pn·WV + WV ≤ cout).
                    unsafe { packed::wide_tile(kl, ap, b.as_ptr(), &boff, acc.as_mut_ptr().add(off), cout, true) }
                } else {
                    // SAFETY: as above, into the local WR × WV tile.
                    unsafe { packed::wide_tile(kl, ap, b.as_ptr(), &boff, tile.as_mut_ptr(), WV, false) }
                    for j in 0..tr {
                        let dst = &mut acc[off + j * cout..][..WV];
                        dst.iter_mut().zip(&tile[j * WV..(j + 1) * WV]).for_each(|(d, s)| *d += s);
                    }
                }
            }
        }
    }
}

//! Two small GEMM microkernels of our own, used by the convolutions ([`super::conv`]) but not
//! specific to them:
//!
//! - [`gemm`]: `C (M×N) [+]= A (M×K) · B (K×N)`, `C` row-major, on an 8×32 AVX-512 tile. `A`
//!   (the weights) is packed once per call into 8-row panels per block of [`KC`] inner indices;
//!   `B`'s rows are either read in place through a table of row offsets ([`BSource::Rows`]: the
//!   implicit convolution reads the rows of its column matrix straight from a zero-padded
//!   image, so no column matrix is written, read back or packed) or packed [`NR`] columns at a
//!   time by a caller's function ([`BSource::Packed`]). 16 accumulators, two loads and eight
//!   broadcasts per 16 FMAs; its loads of `B` rows at arbitrary shifts split cache lines,
//!   which costs it part of its speed (`examples/kernel_probe.rs`).
//! - [`wide_tile`] / [`wide_tile_cols`]: a 6×64 tile whose vector side is 64 output channels
//!   (four aligned loads of a packed panel per step) and whose six broadcasts come from rows
//!   read in place, so no vector load touches a shifted row. The convolutions with 64-channel
//!   multiples run on it.
//!
//! Without AVX-512 portable kernels with the same arithmetic run (exact, scalar, slow: the
//! convolutions then keep the `gemm` crate's path, [`has_fast_kernel`]).

/// Rows of an `A` panel (and of the microkernel's tile).
pub const MR: usize = 8;
/// Columns of a `B` panel (two AVX-512 vectors).
pub const NR: usize = 32;
/// Inner indices per block: one `B` panel is `KC × NR` floats (24 KB, in L1).
pub const KC: usize = 192;
/// Rows of `A` per outer block (`MC × KC` floats, 384 KB, in L2).
pub const MC: usize = 512;

/// `A` packed for [`gemm`]: for each block of [`KC`] inner indices, `M/MR` panels of
/// `MR × kc` values, `k`-major (`panel[kk·MR + r]`), rows past `M` zero.
pub struct PackedA {
    data: Vec<f32>,
    m: usize,
    k: usize,
    mpad: usize,
}

impl PackedA {
    /// Pack `a` `(m, k)`, element `(r, kk)` at `a[r·rs + kk·cs]`.
    pub fn new(a: &[f32], m: usize, k: usize, rs: usize, cs: usize) -> Self {
        let mpad = m.next_multiple_of(MR);
        let mut data = vec![0f32; mpad * k];
        if m > 0 && k > 0 {
            assert!(a.len() > (m - 1) * rs + (k - 1) * cs, "PackedA: matrix out of bounds");
        }
        for k0 in (0..k).step_by(KC) {
            let kl = KC.min(k - k0);
            for ip in 0..mpad / MR {
                let base = k0 * mpad + ip * MR * kl;
                for r in 0..MR.min(m - ip * MR) {
                    let row = ip * MR + r;
                    for kk in 0..kl {
                        data[base + kk * MR + r] = a[row * rs + (k0 + kk) * cs];
                    }
                }
            }
        }
        Self { data, m, k, mpad }
    }

    /// An all-zero packing of an `(m, k)` matrix, to be filled at [`Self::slot`]s through
    /// [`Self::data_mut`] (a producer that makes several matrices at once writes each value
    /// once, where [`Self::new`] would copy a finished matrix).
    pub fn zeroed(m: usize, k: usize) -> Self {
        let mpad = m.next_multiple_of(MR);
        Self {
            data: vec![0f32; mpad * k],
            m,
            k,
            mpad,
        }
    }

    /// Where element `(r, kk)` lives in the packed data (the layout [`Self::new`] writes).
    pub fn slot(&self, r: usize, kk: usize) -> usize {
        debug_assert!(
            r < self.m && kk < self.k,
            "PackedA::slot: ({r}, {kk}) outside {}×{}",
            self.m,
            self.k
        );
        let k0 = kk / KC * KC;
        let kl = KC.min(self.k - k0);
        k0 * self.mpad + (r / MR) * MR * kl + (kk - k0) * MR + r % MR
    }

    /// The packed data, to fill at [`Self::slot`]s.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Rows of the packed matrix, `M` (the panels are padded to whole [`MR`]).
    pub fn m(&self) -> usize {
        self.m
    }

    /// Columns of the packed matrix, the product's inner dimension `K`.
    pub fn k(&self) -> usize {
        self.k
    }

    fn panel(&self, k0: usize, kl: usize, ip: usize) -> &[f32] {
        &self.data[k0 * self.mpad + ip * MR * kl..][..MR * kl]
    }
}

/// A `B` panel buffer for [`gemm`] (one per thread).
pub fn panel_buffer() -> Vec<f32> {
    vec![0f32; KC * NR]
}

/// Where `B`'s rows come from.
pub enum BSource<'a, F: FnMut(usize, usize, usize, usize, &mut [f32])> {
    /// Packed [`NR`] columns at a time: `pack(k0, kl, n0, nw, panel)` writes `B[k0 + kk][n0 + j]`
    /// to `panel[kk·NR + j]` for `kk < kl`, `j < nw` (the rest of a narrow panel is zeroed
    /// before the call) into `buf` (at least `KC·NR`).
    Packed {
        /// Writes one panel of `B`: `pack(k0, kl, n0, nw, panel)` as above.
        pack: F,
        /// The panel (at least `KC·NR`).
        buf: &'a mut [f32],
    },
    /// Read in place: row `kk` of `B` starts at `base[offs[kk]]` and is contiguous. The
    /// convolution's implicit GEMM: `base` is a zero-padded image, `offs` the taps' shifts, so
    /// the column matrix is never formed. Every `base[offs[kk] + j]` for `j <` `N` rounded up
    /// to [`NR`] must be in bounds (columns past `N` are read, never stored).
    Rows {
        /// The data the rows point into.
        base: &'a [f32],
        /// Row `kk` starts at `base[offs[kk]]`.
        offs: &'a [usize],
    },
}

/// `B` rows read in place, no packing (the type parameter of an unused packer).
pub type NoPack = fn(usize, usize, usize, usize, &mut [f32]);

/// `C (M×N) [+]= A · B`, `C` row-major with rows `ldc` apart, `B` from `b`.
/// Single-threaded: callers split the work.
pub fn gemm<F: FnMut(usize, usize, usize, usize, &mut [f32])>(
    a: &PackedA,
    n: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    mut b: BSource<'_, F>,
) {
    let (m, k) = (a.m, a.k);
    if m == 0 || n == 0 {
        return;
    }
    assert!(c.len() >= (m - 1) * ldc + n, "gemm: C out of bounds");
    match &b {
        BSource::Packed { buf, .. } => assert!(buf.len() >= KC * NR, "gemm: panel buffer too small"),
        BSource::Rows { base, offs } => {
            assert!(offs.len() == k, "gemm: {} row offsets for K = {k}", offs.len());
            let reach = offs.iter().max().copied().unwrap_or(0) + n.next_multiple_of(NR);
            assert!(base.len() >= reach, "gemm: B rows out of bounds ({reach} > {})", base.len());
        }
    }
    if k == 0 {
        if !accumulate {
            (0..m).for_each(|r| c[r * ldc..r * ldc + n].fill(0.0));
        }
        return;
    }
    let kernel = microkernel();
    let panel_offs: Vec<usize> = (0..KC).map(|kk| kk * NR).collect();
    for ic in (0..a.mpad).step_by(MC) {
        let panels = ic / MR..(ic + MC).min(a.mpad) / MR;
        for n0 in (0..n).step_by(NR) {
            let nw = NR.min(n - n0);
            for k0 in (0..k).step_by(KC) {
                let kl = KC.min(k - k0);
                let (bbase, boffs): (*const f32, &[usize]) = match &mut b {
                    BSource::Packed { pack, buf } => {
                        let bp = &mut buf[..kl * NR];
                        if nw < NR {
                            bp.fill(0.0);
                        }
                        pack(k0, kl, n0, nw, bp);
                        (bp.as_ptr(), &panel_offs[..kl])
                    }
                    // SAFETY (of the offset): base[offs[kk] + n0 + j] is in bounds for every
                    // kk and j < NR (asserted above).
                    BSource::Rows { base, offs } => (unsafe { base.as_ptr().add(n0) }, &offs[k0..k0 + kl]),
                };
                let acc = accumulate || k0 > 0;
                for ip in panels.clone() {
                    let ap = a.panel(k0, kl, ip);
                    let rows = MR.min(m - ip * MR);
                    let off = ip * MR * ldc + n0;
                    if rows == MR && nw == NR {
                        // SAFETY: the tile's MR rows × NR columns lie inside C (asserted
                        // above: row ip·MR+MR−1 ≤ m−1, column n0+NR ≤ n); A's panel holds
                        // MR·kl values, B's rows NR each.
                        unsafe { kernel(kl, ap.as_ptr(), bbase, boffs.as_ptr(), c.as_mut_ptr().add(off), ldc, acc) }
                    } else {
                        let mut tile = [0f32; MR * NR];
                        // SAFETY: the tile buffer is MR × NR with rows NR apart.
                        unsafe { kernel(kl, ap.as_ptr(), bbase, boffs.as_ptr(), tile.as_mut_ptr(), NR, false) }
                        for r in 0..rows {
                            let dst = &mut c[off + r * ldc..off + r * ldc + nw];
                            let src = &tile[r * NR..r * NR + nw];
                            if acc {
                                dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
                            } else {
                                dst.copy_from_slice(src);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `tile (MR×NR, rows ldc apart) [+]= Σ_kk a[kk·MR + r] · b[offs[kk] + j]`.
type Kernel = unsafe fn(usize, *const f32, *const f32, *const usize, *mut f32, usize, bool);

/// Whether the AVX-512 microkernel runs on this CPU (else the portable one).
pub fn has_fast_kernel() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn microkernel() -> Kernel {
    #[cfg(target_arch = "x86_64")]
    {
        if has_fast_kernel() {
            return avx512::kernel_8x32;
        }
    }
    portable_kernel
}

/// The same arithmetic without SIMD intrinsics (per element, a chain of FMAs over `kk` in
/// order, like the AVX-512 kernel, so both give the same bits).
unsafe fn portable_kernel(kc: usize, a: *const f32, b: *const f32, offs: *const usize, c: *mut f32, ldc: usize, acc: bool) {
    let mut t = [[0f32; NR]; MR];
    for kk in 0..kc {
        let brow = b.add(*offs.add(kk));
        for (r, row) in t.iter_mut().enumerate() {
            let av = *a.add(kk * MR + r);
            for (j, v) in row.iter_mut().enumerate() {
                *v = av.mul_add(*brow.add(j), *v);
            }
        }
    }
    for (r, row) in t.iter().enumerate() {
        let p = c.add(r * ldc);
        for (j, v) in row.iter().enumerate() {
            *p.add(j) = if acc { *p.add(j) + v } else { *v };
        }
    }
}

/// Rows of the "wide" tile ([`wide_tile`]): pixels or taps, one broadcast each.
pub const WR: usize = 6;
/// Columns of the wide tile: four AVX-512 vectors (64 output channels).
pub const WV: usize = 64;

/// The wide tile: `C (WR × WV, rows ldc apart) [+]= Σ_kk B(kk, j) · A[kk·WV + v]` with
/// `B(kk, j) = b[boff[j] + kk]` — `A` a k-major panel of 64-wide vectors (four aligned loads
/// per step), `B` six rows read in place, one broadcast each per step: 24 accumulators, ten
/// loads per 24 FMAs, and no vector load of `B`, so `B`'s alignment does not matter (the 8×32
/// kernel loses speed on unaligned `B` rows, `examples/kernel_probe.rs`). The convolutions'
/// weight gradients run on it (`B` = shifted rows of a padded image, or im2col rows). `a`
/// should be 64-byte aligned (the loads are unaligned-safe; alignment only saves split lines).
///
/// # Safety
/// `a` holds `WV·kc` floats, each `b + boff[j]` `kc` floats, `c` a `WR × WV` tile with rows
/// `ldc` apart.
pub unsafe fn wide_tile(kc: usize, a: *const f32, b: *const f32, boff: &[usize; WR], c: *mut f32, ldc: usize, acc: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_fast_kernel() {
            return avx512::wide_6x64(kc, a, b, boff, c, ldc, acc);
        }
    }
    portable_wide(kc, a, b, boff, c, ldc, acc)
}

/// The wide tile with `B(kk, j) = b[offs[kk] + j]`: six consecutive columns of a row read in
/// place (the implicit convolution: `B` is a zero-padded image at the taps' shifts, `j` six
/// output positions), otherwise as [`wide_tile`].
///
/// # Safety
/// `a` holds `WV·kc` floats, `offs` `kc` offsets with `WR` floats at each `b + offs[kk]`, `c`
/// a `WR × WV` tile with rows `ldc` apart.
pub unsafe fn wide_tile_cols(kc: usize, a: *const f32, b: *const f32, offs: *const usize, c: *mut f32, ldc: usize, acc: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_fast_kernel() {
            return avx512::wide_6x64_cols(kc, a, b, offs, c, ldc, acc);
        }
    }
    portable_wide_cols(kc, a, b, offs, c, ldc, acc)
}

/// [`wide_tile_cols`] without SIMD intrinsics, the same arithmetic.
unsafe fn portable_wide_cols(kc: usize, a: *const f32, b: *const f32, offs: *const usize, c: *mut f32, ldc: usize, acc: bool) {
    let mut t = [[0f32; WV]; WR];
    for kk in 0..kc {
        let ak = a.add(kk * WV);
        let brow = b.add(*offs.add(kk));
        for (j, row) in t.iter_mut().enumerate() {
            let bv = *brow.add(j);
            for (v, x) in row.iter_mut().enumerate() {
                *x = bv.mul_add(*ak.add(v), *x);
            }
        }
    }
    store_wide(&t, c, ldc, acc)
}

/// Write (or add) a finished portable wide tile.
unsafe fn store_wide(t: &[[f32; WV]; WR], c: *mut f32, ldc: usize, acc: bool) {
    for (j, row) in t.iter().enumerate() {
        let p = c.add(j * ldc);
        for (v, x) in row.iter().enumerate() {
            *p.add(v) = if acc { *p.add(v) + x } else { *x };
        }
    }
}

/// [`wide_tile`] without SIMD intrinsics, the same arithmetic (a chain of FMAs over `kk` per
/// element), so the same bits.
unsafe fn portable_wide(kc: usize, a: *const f32, b: *const f32, boff: &[usize; WR], c: *mut f32, ldc: usize, acc: bool) {
    let mut t = [[0f32; WV]; WR];
    for kk in 0..kc {
        let ak = a.add(kk * WV);
        for (j, row) in t.iter_mut().enumerate() {
            let bv = *b.add(boff[j] + kk);
            for (v, x) in row.iter_mut().enumerate() {
                *x = bv.mul_add(*ak.add(v), *x);
            }
        }
    }
    store_wide(&t, c, ldc, acc)
}

/// A zeroed buffer of `n` floats starting at element `off`, 64-byte aligned where the
/// allocation allows (always, for f32 allocations on this target): `(buffer, off)`.
pub fn aligned_zeros(n: usize) -> (Vec<f32>, usize) {
    let v = vec![0f32; n + 16];
    let off = v.as_ptr().align_offset(64).min(15);
    (v, off)
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{MR, WR, WV};
    use std::arch::x86_64::*;

    /// The 8×32 microkernel (see the module docs).
    ///
    /// # Safety
    /// `a` holds `MR·kc` floats, `offs` `kc` offsets with `NR` floats at each `b + offs[kk]`,
    /// `c` an `MR × NR` tile with rows `ldc` apart; the CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn kernel_8x32(kc: usize, a: *const f32, b: *const f32, offs: *const usize, c: *mut f32, ldc: usize, acc: bool) {
        let mut r = [[_mm512_setzero_ps(); 2]; MR];
        for kk in 0..kc {
            let brow = b.add(*offs.add(kk));
            let b0 = _mm512_loadu_ps(brow);
            let b1 = _mm512_loadu_ps(brow.add(16));
            let ak = a.add(kk * MR);
            for (i, ri) in r.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*ak.add(i));
                ri[0] = _mm512_fmadd_ps(av, b0, ri[0]);
                ri[1] = _mm512_fmadd_ps(av, b1, ri[1]);
            }
        }
        for (i, ri) in r.iter().enumerate() {
            let p = c.add(i * ldc);
            if acc {
                _mm512_storeu_ps(p, _mm512_add_ps(_mm512_loadu_ps(p), ri[0]));
                _mm512_storeu_ps(p.add(16), _mm512_add_ps(_mm512_loadu_ps(p.add(16)), ri[1]));
            } else {
                _mm512_storeu_ps(p, ri[0]);
                _mm512_storeu_ps(p.add(16), ri[1]);
            }
        }
    }
    /// The 6×64 wide tile ([`super::wide_tile`]).
    ///
    /// # Safety
    /// As [`super::wide_tile`]; the CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn wide_6x64(kc: usize, a: *const f32, b: *const f32, boff: &[usize; WR], c: *mut f32, ldc: usize, acc: bool) {
        let mut r = [[_mm512_setzero_ps(); 4]; WR];
        let bp: [*const f32; WR] = std::array::from_fn(|j| b.add(boff[j]));
        for kk in 0..kc {
            let ak = a.add(kk * WV);
            let av = [
                _mm512_loadu_ps(ak),
                _mm512_loadu_ps(ak.add(16)),
                _mm512_loadu_ps(ak.add(32)),
                _mm512_loadu_ps(ak.add(48)),
            ];
            for (j, rj) in r.iter_mut().enumerate() {
                let bv = _mm512_set1_ps(*bp[j].add(kk));
                for (x, a) in rj.iter_mut().zip(av) {
                    *x = _mm512_fmadd_ps(bv, a, *x);
                }
            }
        }
        store(&r, c, ldc, acc)
    }

    /// The 6×64 wide tile reading six consecutive columns of each row
    /// ([`super::wide_tile_cols`]).
    ///
    /// # Safety
    /// As [`super::wide_tile_cols`]; the CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn wide_6x64_cols(kc: usize, a: *const f32, b: *const f32, offs: *const usize, c: *mut f32, ldc: usize, acc: bool) {
        let mut r = [[_mm512_setzero_ps(); 4]; WR];
        for kk in 0..kc {
            let ak = a.add(kk * WV);
            let av = [
                _mm512_loadu_ps(ak),
                _mm512_loadu_ps(ak.add(16)),
                _mm512_loadu_ps(ak.add(32)),
                _mm512_loadu_ps(ak.add(48)),
            ];
            let brow = b.add(*offs.add(kk));
            for (j, rj) in r.iter_mut().enumerate() {
                let bv = _mm512_set1_ps(*brow.add(j));
                for (x, a) in rj.iter_mut().zip(av) {
                    *x = _mm512_fmadd_ps(bv, a, *x);
                }
            }
        }
        store(&r, c, ldc, acc)
    }

    /// Write (or add) the 24 accumulators of a wide tile.
    #[target_feature(enable = "avx512f")]
    unsafe fn store(r: &[[__m512; 4]; WR], c: *mut f32, ldc: usize, acc: bool) {
        for (j, rj) in r.iter().enumerate() {
            let p = c.add(j * ldc);
            for (v, x) in rj.iter().enumerate() {
                let q = p.add(16 * v);
                if acc {
                    _mm512_storeu_ps(q, _mm512_add_ps(_mm512_loadu_ps(q), *x));
                } else {
                    _mm512_storeu_ps(q, *x);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn reference(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
        let mut c = vec![0f64; m * n];
        for r in 0..m {
            for j in 0..n {
                c[r * n + j] = (0..k).map(|kk| a[r * k + kk] as f64 * b[kk * n + j] as f64).sum();
            }
        }
        c
    }

    /// Every edge: M and N not multiples of the tile, K across several blocks, MC blocks,
    /// accumulate on and off, a C with rows wider than N; and the portable kernel gives the
    /// AVX-512 kernel's bits.
    #[test]
    fn matches_a_plain_product_on_ragged_shapes() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for &(m, n, k) in &[(1, 1, 1), (8, 32, 192), (13, 45, 200), (27, 70, 5), (600, 33, 400), (9, 100, 577)] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let ldc = n + 3;
            let init: Vec<f32> = (0..m * ldc).map(|_| rng.random_range(-1.0..1.0)).collect();
            let exact = reference(&a, &b, m, n, k);
            let pa = PackedA::new(&a, m, k, k, 1);
            let mut panel = panel_buffer();
            // B in place: rows `n + 5` apart, slack for the last panel's overrun.
            let ldb = n + 5;
            let mut b_rows = vec![f32::NAN; k * ldb + NR];
            for kk in 0..k {
                b_rows[kk * ldb..kk * ldb + n].copy_from_slice(&b[kk * n..(kk + 1) * n]);
            }
            let offs: Vec<usize> = (0..k).map(|kk| kk * ldb).collect();
            for (accumulate, in_place) in [(false, false), (true, false), (false, true), (true, true)] {
                let mut c = init.clone();
                if in_place {
                    gemm::<NoPack>(
                        &pa,
                        n,
                        &mut c,
                        ldc,
                        accumulate,
                        BSource::Rows {
                            base: &b_rows,
                            offs: &offs,
                        },
                    );
                } else {
                    let pack = |k0: usize, kl: usize, n0: usize, nw: usize, bp: &mut [f32]| {
                        for kk in 0..kl {
                            bp[kk * NR..kk * NR + nw].copy_from_slice(&b[(k0 + kk) * n + n0..][..nw]);
                        }
                    };
                    gemm(&pa, n, &mut c, ldc, accumulate, BSource::Packed { pack, buf: &mut panel });
                }
                for r in 0..m {
                    for j in 0..ldc {
                        let got = c[r * ldc + j] as f64;
                        let want = if j >= n {
                            init[r * ldc + j] as f64 // outside the product: untouched
                        } else {
                            exact[r * n + j] + if accumulate { init[r * ldc + j] as f64 } else { 0.0 }
                        };
                        assert!(
                            (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                            "({m},{n},{k}) [{r},{j}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
        // The two microkernels agree bit for bit.
        let a: Vec<f32> = (0..MR * 300).map(|_| rng.random_range(-1.0..1.0)).collect();
        let b: Vec<f32> = (0..300 * NR).map(|_| rng.random_range(-1.0..1.0)).collect();
        let (mut c1, mut c2) = (vec![0.5f32; MR * NR], vec![0.5f32; MR * NR]);
        let offs: Vec<usize> = (0..300).map(|kk| kk * NR).collect();
        // SAFETY: buffers of the sizes the kernels read and write.
        unsafe {
            portable_kernel(300, a.as_ptr(), b.as_ptr(), offs.as_ptr(), c1.as_mut_ptr(), NR, true);
            microkernel()(300, a.as_ptr(), b.as_ptr(), offs.as_ptr(), c2.as_mut_ptr(), NR, true);
        }
        assert_eq!(c1, c2);
    }

    /// The wide tile against an f64 reference (B rows at odd offsets, accumulate on and off);
    /// the column-reading tile gives the same bits on the transposed B; each portable kernel
    /// gives its AVX-512 kernel's bits.
    #[test]
    fn wide_tile_matches_a_reference() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for kc in [1, 7, 128, 301] {
            let a: Vec<f32> = (0..kc * WV).map(|_| rng.random_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..WR * kc + 50).map(|_| rng.random_range(-1.0..1.0)).collect();
            let boff: [usize; WR] = std::array::from_fn(|j| 3 + j * kc + j % 2);
            let init: Vec<f32> = (0..WR * (WV + 5)).map(|_| rng.random_range(-1.0..1.0)).collect();
            for acc in [false, true] {
                let mut c = init.clone();
                // SAFETY: buffers of the sizes the kernel reads and writes (rows WV + 5 apart).
                unsafe { wide_tile(kc, a.as_ptr(), b.as_ptr(), &boff, c.as_mut_ptr(), WV + 5, acc) };
                for j in 0..WR {
                    for v in 0..WV + 5 {
                        let got = c[j * (WV + 5) + v] as f64;
                        let want = if v >= WV {
                            init[j * (WV + 5) + v] as f64
                        } else {
                            let s: f64 = (0..kc).map(|kk| b[boff[j] + kk] as f64 * a[kk * WV + v] as f64).sum();
                            s + if acc { init[j * (WV + 5) + v] as f64 } else { 0.0 }
                        };
                        assert!((got - want).abs() < 1e-4 * (1.0 + want.abs()), "kc {kc} [{j},{v}]: {got} vs {want}");
                    }
                }
                let mut c2 = init.clone();
                // SAFETY: as above.
                unsafe { portable_wide(kc, a.as_ptr(), b.as_ptr(), &boff, c2.as_mut_ptr(), WV + 5, acc) };
                assert_eq!(c, c2, "portable and dispatched wide tile differ (kc {kc})");
                // The same product with B transposed (six consecutive columns of rows at odd
                // offsets) through the column-reading tile and its portable twin.
                let bt_ld = WR + 3;
                let mut bt = vec![f32::NAN; kc * bt_ld + 7];
                for kk in 0..kc {
                    for j in 0..WR {
                        bt[5 + kk * bt_ld + j] = b[boff[j] + kk];
                    }
                }
                let offs: Vec<usize> = (0..kc).map(|kk| 5 + kk * bt_ld).collect();
                let (mut c3, mut c4) = (init.clone(), init.clone());
                // SAFETY: each offs[kk] has WR floats after it; the tile as above.
                unsafe {
                    wide_tile_cols(kc, a.as_ptr(), bt.as_ptr(), offs.as_ptr(), c3.as_mut_ptr(), WV + 5, acc);
                    portable_wide_cols(kc, a.as_ptr(), bt.as_ptr(), offs.as_ptr(), c4.as_mut_ptr(), WV + 5, acc);
                }
                assert_eq!(c, c3, "column-reading wide tile differs (kc {kc})");
                assert_eq!(c3, c4, "portable column-reading wide tile differs (kc {kc})");
            }
        }
    }
}

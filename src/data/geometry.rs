//! Crop and resize geometry with torchvision's semantics, resampled straight from 8-bit pixels.
//!
//! - [`random_resized_crop_params`]: `RandomResizedCrop.get_params` (10 tries of an area
//!   fraction and a log-uniform aspect ratio, then the central fallback), drawn from the
//!   original width and height.
//! - [`Resample`]: a source box resized to an output grid with PIL's antialiased bilinear
//!   filter (`Image.resize(BILINEAR)`, the support widened by the downscale factor), which is
//!   what torchvision does to PIL images. Pixels are read through a 256-entry u8 → f32 table,
//!   so the whole image is never converted to float; the result is f32 in [0, 1] without
//!   PIL's uint8 rounding (between its two passes and at the end).
//! - [`Resample::crop`] is `resized_crop(top, left, h, w, [S, S])`; [`Resample::eval`] is
//!   `Resize(int(S / fraction))` on the short side then `CenterCrop(S)`.
//! - [`Resample::reduced`] maps a box into an image decoded at 1/2, 1/4 or 1/8 (JPEG DCT
//!   scaling): the box divided by the factor, fractional, resampled from the reduced pixels.

use super::Image;
use rand::Rng;

/// `i / 255` for every 8-bit value: torchvision's `to_tensor` scaling.
const LUT: [f32; 256] = {
    let mut t = [0f32; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = i as f32 / 255.0;
        i += 1;
    }
    t
};

/// A float RGB image, HWC, values in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct FloatImage {
    /// Width.
    pub width: usize,
    /// Height.
    pub height: usize,
    /// `h*w*3` values.
    pub data: Vec<f32>,
}

/// The random draws of [`random_resized_crop_params`], so a test can replay torchvision's.
pub trait CropDraws {
    /// Area fraction, uniform in `[lo, hi]`.
    fn area_fraction(&mut self, lo: f32, hi: f32) -> f32;
    /// Log aspect ratio, uniform in `[lo, hi)`.
    fn log_ratio(&mut self, lo: f32, hi: f32) -> f32;
    /// Offset, uniform in `0..=max`.
    fn offset(&mut self, max: usize) -> usize;
}

impl<R: Rng> CropDraws for R {
    fn area_fraction(&mut self, lo: f32, hi: f32) -> f32 {
        self.random_range(lo..=hi)
    }
    fn log_ratio(&mut self, lo: f32, hi: f32) -> f32 {
        self.random_range(lo..hi)
    }
    fn offset(&mut self, max: usize) -> usize {
        self.random_range(0..=max)
    }
}

/// torchvision `RandomResizedCrop.get_params` on a `width`×`height` image: returns (top,
/// left, height, width).
pub fn random_resized_crop_params(
    width: usize,
    height: usize,
    scale: [f32; 2],
    ratio: [f32; 2],
    draws: &mut impl CropDraws,
) -> (usize, usize, usize, usize) {
    let area = (width * height) as f32;
    let (lr0, lr1) = (ratio[0].ln(), ratio[1].ln());
    for _ in 0..10 {
        let target = area * draws.area_fraction(scale[0], scale[1]);
        let aspect = if lr0 < lr1 { draws.log_ratio(lr0, lr1).exp() } else { ratio[0] };
        let w = (target * aspect).sqrt().round() as usize;
        let h = (target / aspect).sqrt().round() as usize;
        if w > 0 && h > 0 && w <= width && h <= height {
            let top = draws.offset(height - h);
            let left = draws.offset(width - w);
            return (top, left, h, w);
        }
    }
    // Fallback: central crop with the ratio clamped to the range.
    let in_ratio = width as f32 / height as f32;
    let (w, h) = if in_ratio < ratio[0] {
        (width, ((width as f32 / ratio[0]).round() as usize).min(height))
    } else if in_ratio > ratio[1] {
        (((height as f32 * ratio[1]).round() as usize).min(width), height)
    } else {
        (width, height)
    };
    ((height - h) / 2, (width - w) / 2, h, w)
}

/// One axis of a resize: the source interval `[start, start + len)` (in source pixels,
/// fractional after a DCT reduction) resampled to `out_len` samples, of which `count` from
/// `first` are computed (a center crop of the resized axis).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Axis {
    /// First source coordinate.
    pub start: f32,
    /// Source length.
    pub len: f32,
    /// Samples of the whole resized axis.
    pub out_len: usize,
    /// First computed sample.
    pub first: usize,
    /// Computed samples.
    pub count: usize,
}

impl Axis {
    /// `[start, start + len)` resized to exactly `out` samples.
    pub fn crop(start: usize, len: usize, out: usize) -> Self {
        Self {
            start: start as f32,
            len: len as f32,
            out_len: out,
            first: 0,
            count: out,
        }
    }

    /// True when the computed samples are the source pixels themselves.
    fn is_identity(&self) -> bool {
        self.len == self.out_len as f32 && self.start.fract() == 0.0
    }

    /// PIL's antialiased bilinear weights for an axis of `n` source pixels: per computed
    /// sample, (first source index, weights summing to 1). Sources outside the interval's
    /// pixels (`[floor(start), ceil(start + len))`, within `[0, n)`) get no weight, as when
    /// the box is cropped before resizing.
    fn weights(&self, n: usize) -> Vec<(usize, Vec<f32>)> {
        let scale = self.len / self.out_len as f32;
        let support = scale.max(1.0);
        let lo_bound = (self.start.floor().max(0.0) as usize).min(n - 1);
        let hi_bound = ((self.start + self.len).ceil() as usize).clamp(lo_bound + 1, n);
        // Within [lo_bound, hi_bound) even for a box past the image (a header that lied).
        (self.first..self.first + self.count)
            .map(|o| {
                let center = self.start + (o as f32 + 0.5) * scale;
                let lo = (((center - support).floor().max(lo_bound as f32)) as usize).min(hi_bound - 1);
                let hi = ((center + support).ceil() as usize).min(hi_bound).max(lo + 1);
                let mut w: Vec<f32> = (lo..hi)
                    .map(|s| (1.0 - ((s as f32 + 0.5 - center) / support).abs()).max(0.0))
                    .collect();
                let sum: f32 = w.iter().sum();
                if sum > 0.0 {
                    w.iter_mut().for_each(|v| *v /= sum);
                }
                (lo, w)
            })
            .collect()
    }

    /// The same interval in an image reduced by `factor` (coordinates divided, fractional).
    fn reduced(self, factor: usize) -> Self {
        let f = factor as f32;
        Self {
            start: self.start / f,
            len: self.len / f,
            ..self
        }
    }
}

/// A resize of a source box to an output grid, both axes: what [`Resample::apply`] computes
/// from any image holding the box.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resample {
    /// Horizontal axis.
    pub x: Axis,
    /// Vertical axis.
    pub y: Axis,
}

impl Resample {
    /// torchvision `resized_crop(img, top, left, h, w, [out_h, out_w])`.
    pub fn crop(top: usize, left: usize, h: usize, w: usize, out_w: usize, out_h: usize) -> Self {
        Self {
            x: Axis::crop(left, w, out_w),
            y: Axis::crop(top, h, out_h),
        }
    }

    /// torchvision's evaluation transform on a `width`×`height` image:
    /// `Resize(int(size / fraction))` (short side to that, long side
    /// `int(short_target * long / short)`) then `CenterCrop(size)` (offset
    /// `round((resized - size) / 2)`, ties to even as Python's `round`).
    pub fn eval(width: usize, height: usize, size: usize, fraction: f32) -> Self {
        let target = ((size as f64 / fraction as f64) as usize).max(size);
        let (short, long) = (width.min(height), width.max(height));
        let long_target = (target as f64 * long as f64 / short as f64) as usize;
        let (nw, nh) = if width <= height {
            (target, long_target)
        } else {
            (long_target, target)
        };
        let axis = |n: usize, resized: usize| Axis {
            start: 0.0,
            len: n as f32,
            out_len: resized,
            first: ((resized - size) as f64 / 2.0).round_ties_even() as usize,
            count: size,
        };
        Self {
            x: axis(width, nw),
            y: axis(height, nh),
        }
    }

    /// The largest DCT reduction in {1, 2, 4, 8} that keeps the source at least as large as
    /// the resized grid on both axes (no axis upsampled that was not already).
    pub fn reduction(&self) -> usize {
        super::decode::reduction_xy(self.x.len, self.y.len, self.x.out_len, self.y.out_len)
    }

    /// The same resize read from the image decoded at 1/`factor`.
    pub fn reduced(self, factor: usize) -> Self {
        Self {
            x: self.x.reduced(factor),
            y: self.y.reduced(factor),
        }
    }

    /// Resample `img` (8-bit RGB): `x.count`×`y.count` pixels in [0, 1].
    pub fn apply(&self, img: &Image) -> FloatImage {
        let (out_w, out_h) = (self.x.count, self.y.count);
        let (top, left) = (self.y.start as usize + self.y.first, self.x.start as usize + self.x.first);
        let inside = top + out_h <= img.height && left + out_w <= img.width;
        if self.x.is_identity() && self.y.is_identity() && inside {
            return copy_box(img, top, left, out_w, out_h);
        }
        let wx = self.x.weights(img.width);
        let wy = self.y.weights(img.height);
        let row0 = wy.iter().map(|(lo, _)| *lo).min().unwrap_or(0);
        let row1 = wy.iter().map(|(lo, w)| lo + w.len()).max().unwrap_or(row0).min(img.height);
        let tmp = horizontal(img, &wx, row0..row1);
        let mut data = vec![0f32; out_h * out_w * 3];
        for (oy, (lo, ws)) in wy.iter().enumerate() {
            let dst = &mut data[oy * out_w * 3..(oy + 1) * out_w * 3];
            for (k, wt) in ws.iter().enumerate() {
                let row = (lo + k - row0) * out_w * 3;
                for (d, s) in dst.iter_mut().zip(&tmp[row..row + out_w * 3]) {
                    *d += wt * s;
                }
            }
        }
        FloatImage {
            width: out_w,
            height: out_h,
            data,
        }
    }
}

/// The pixels of a box, unresampled, in [0, 1].
fn copy_box(img: &Image, top: usize, left: usize, w: usize, h: usize) -> FloatImage {
    let mut data = Vec::with_capacity(w * h * 3);
    for y in top..top + h {
        let row = (y * img.width + left) * 3;
        data.extend(img.pixels[row..row + w * 3].iter().map(|&p| LUT[p as usize]));
    }
    FloatImage { width: w, height: h, data }
}

/// The horizontal pass over `rows` of `img`: `rows.len()`×`wx.len()`×3 floats.
fn horizontal(img: &Image, wx: &[(usize, Vec<f32>)], rows: std::ops::Range<usize>) -> Vec<f32> {
    let out_w = wx.len();
    let mut tmp = vec![0f32; rows.len() * out_w * 3];
    for (y, row) in rows.enumerate() {
        let src = &img.pixels[row * img.width * 3..(row + 1) * img.width * 3];
        for (ox, (lo, ws)) in wx.iter().enumerate() {
            let mut acc = [0f32; 3];
            for (k, wt) in ws.iter().enumerate() {
                let s = (lo + k) * 3;
                for c in 0..3 {
                    acc[c] += wt * LUT[src[s + c] as usize];
                }
            }
            tmp[(y * out_w + ox) * 3..(y * out_w + ox) * 3 + 3].copy_from_slice(&acc);
        }
    }
    tmp
}

/// Crop the box (top, left, h, w) of `img` and resize it to `out_w`×`out_h`
/// ([`Resample::crop`]).
pub fn crop_resize(img: &Image, top: usize, left: usize, h: usize, w: usize, out_w: usize, out_h: usize) -> FloatImage {
    Resample::crop(top, left, h, w, out_w, out_h).apply(img)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_image as image;

    #[test]
    fn identity_crop_is_the_pixels_over_255() {
        let img = image(9, 7);
        let r = crop_resize(&img, 1, 2, 5, 6, 6, 5);
        assert_eq!(r.data[0], img.pixels[(9 + 2) * 3] as f32 / 255.0);
        assert_eq!((r.width, r.height, r.data.len()), (6, 5, 90));
    }

    #[test]
    fn eval_sizes_follow_torchvision() {
        // Resize(256) of 500×375: 341×256; CenterCrop(224): left round(58.5) = 58, top 16.
        let e = Resample::eval(500, 375, 224, 0.875);
        assert_eq!((e.x.out_len, e.y.out_len, e.x.first, e.y.first), (341, 256, 58, 16));
        // Resize(32) of 97×61 is 50×32 (int(50.9)), left (50 - 32) / 2 = 9.
        let e = Resample::eval(97, 61, 32, 1.0);
        assert_eq!((e.x.out_len, e.x.first, e.y.first), (50, 9, 0));
        let e = Resample::eval(333, 500, 32, 0.875);
        assert_eq!((e.x.out_len, e.y.out_len, e.y.first), (36, 54, 11));
    }

    #[test]
    fn reduced_box_of_a_constant_image_stays_constant() {
        let img = Image {
            width: 13,
            height: 10,
            pixels: vec![64; 390],
        };
        let r = Resample::crop(3, 5, 50, 60, 7, 7).reduced(8).apply(&img);
        assert!(r.data.iter().all(|v| (v - 64.0 / 255.0).abs() < 1e-6));
    }
}

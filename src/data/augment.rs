//! The two-view augmentations of MoCo, with torchvision's semantics and parameters.
//!
//! Sources (facebookresearch/moco `main_moco.py`, `moco_cifar10_demo.ipynb`):
//! - v1: `RandomResizedCrop(224, scale=(0.2, 1.))`, `RandomGrayscale(p=0.2)`,
//!   `ColorJitter(0.4, 0.4, 0.4, 0.4)`, `RandomHorizontalFlip()`.
//! - v2: `RandomResizedCrop(224, scale=(0.2, 1.))`,
//!   `RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8)`, `RandomGrayscale(p=0.2)`,
//!   `RandomApply([GaussianBlur([.1, 2.])], p=0.5)`, `RandomHorizontalFlip()`.
//! - CIFAR demo: v2 without blur (crop, flip, jitter p=0.8, grayscale 0.2).
//!
//! Pixels are f32 in [0, 1] (torchvision's tensor path, no uint8 rounding between ops).
//! Resizing is PIL-style antialiased bilinear. Every random draw comes from the `rng` passed
//! in, so one sample's views are a pure function of its stream.

use super::Image;
use crate::config::{AugmentConfig, AugmentPreset};
use rand::seq::SliceRandom;
use rand::Rng;

/// Fully resolved augmentation parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct AugmentParams {
    /// Apply RandomResizedCrop (else resize/center-crop to the output size).
    pub crop: bool,
    /// Crop area fraction range.
    pub crop_scale: [f32; 2],
    /// Crop aspect-ratio range (3/4, 4/3).
    pub crop_ratio: [f32; 2],
    /// ColorJitter brightness, contrast, saturation, hue.
    pub jitter: [f32; 4],
    /// Probability of ColorJitter.
    pub jitter_p: f32,
    /// Grayscale before jitter (v1 order) instead of after (v2 order).
    pub grayscale_first: bool,
    /// Probability of grayscale.
    pub grayscale_p: f32,
    /// Probability of blur.
    pub blur_p: f32,
    /// Blur σ range.
    pub blur_sigma: [f32; 2],
    /// Probability of horizontal flip.
    pub flip_p: f32,
}

impl AugmentParams {
    /// The preset with the config's overrides applied.
    pub fn resolve(cfg: &AugmentConfig) -> Self {
        let base = match cfg.preset {
            AugmentPreset::V1 => Self {
                crop: true,
                crop_scale: [0.2, 1.0],
                crop_ratio: [3.0 / 4.0, 4.0 / 3.0],
                jitter: [0.4, 0.4, 0.4, 0.4],
                jitter_p: 1.0,
                grayscale_first: true,
                grayscale_p: 0.2,
                blur_p: 0.0,
                blur_sigma: [0.1, 2.0],
                flip_p: 0.5,
            },
            AugmentPreset::V2 | AugmentPreset::V2Cifar => Self {
                crop: true,
                crop_scale: [0.2, 1.0],
                crop_ratio: [3.0 / 4.0, 4.0 / 3.0],
                jitter: [0.4, 0.4, 0.4, 0.1],
                jitter_p: 0.8,
                grayscale_first: false,
                grayscale_p: 0.2,
                blur_p: if cfg.preset == AugmentPreset::V2 { 0.5 } else { 0.0 },
                blur_sigma: [0.1, 2.0],
                flip_p: 0.5,
            },
            AugmentPreset::None => Self::none(),
        };
        let f = |v: Option<f64>, d: f32| v.map(|x| x as f32).unwrap_or(d);
        let f2 = |v: Option<[f64; 2]>, d: [f32; 2]| v.map(|x| [x[0] as f32, x[1] as f32]).unwrap_or(d);
        Self {
            crop_scale: f2(cfg.crop_scale, base.crop_scale),
            jitter: cfg.jitter.map(|j| j.map(|x| x as f32)).unwrap_or(base.jitter),
            jitter_p: f(cfg.jitter_p, base.jitter_p),
            grayscale_p: f(cfg.grayscale_p, base.grayscale_p),
            blur_p: f(cfg.blur_p, base.blur_p),
            blur_sigma: f2(cfg.blur_sigma, base.blur_sigma),
            flip_p: f(cfg.flip_p, base.flip_p),
            ..base
        }
    }

    /// No augmentation at all (evaluation).
    pub fn none() -> Self {
        Self {
            crop: false,
            crop_scale: [1.0, 1.0],
            crop_ratio: [1.0, 1.0],
            jitter: [0.0; 4],
            jitter_p: 0.0,
            grayscale_first: false,
            grayscale_p: 0.0,
            blur_p: 0.0,
            blur_sigma: [0.1, 2.0],
            flip_p: 0.0,
        }
    }

    /// The linear protocol's training transform: RandomResizedCrop(scale 0.08–1) + flip.
    pub fn linear_train() -> Self {
        Self {
            crop: true,
            crop_scale: [0.08, 1.0],
            crop_ratio: [3.0 / 4.0, 4.0 / 3.0],
            flip_p: 0.5,
            ..Self::none()
        }
    }
}

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

/// torchvision `RandomResizedCrop.get_params`: returns (top, left, height, width).
pub fn random_resized_crop_params(
    width: usize,
    height: usize,
    scale: [f32; 2],
    ratio: [f32; 2],
    rng: &mut impl Rng,
) -> (usize, usize, usize, usize) {
    let area = (width * height) as f32;
    let (lr0, lr1) = (ratio[0].ln(), ratio[1].ln());
    for _ in 0..10 {
        let target = area * rng.random_range(scale[0]..=scale[1]);
        let aspect = if lr0 < lr1 { rng.random_range(lr0..lr1).exp() } else { ratio[0] };
        let w = (target * aspect).sqrt().round() as usize;
        let h = (target / aspect).sqrt().round() as usize;
        if w > 0 && h > 0 && w <= width && h <= height {
            let top = rng.random_range(0..=height - h);
            let left = rng.random_range(0..=width - w);
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

/// PIL-style antialiased bilinear weights for resampling `[start, start+len)` of an axis to
/// `out` samples: for each output sample, (first source index, weights).
fn resample_weights(start: usize, len: usize, out: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = len as f32 / out as f32;
    let support = scale.max(1.0);
    (0..out)
        .map(|o| {
            let center = start as f32 + (o as f32 + 0.5) * scale;
            let lo = ((center - support).floor().max(start as f32)) as usize;
            let hi = ((center + support).ceil() as usize).min(start + len);
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

/// Crop the box (top, left, h, w) of `img` and resize it to `out_w`×`out_h`.
pub fn crop_resize(img: &FloatImage, top: usize, left: usize, h: usize, w: usize, out_w: usize, out_h: usize) -> FloatImage {
    if h == out_h && w == out_w {
        let mut data = Vec::with_capacity(out_w * out_h * 3);
        for y in top..top + h {
            let row = (y * img.width + left) * 3;
            data.extend_from_slice(&img.data[row..row + w * 3]);
        }
        return FloatImage {
            width: out_w,
            height: out_h,
            data,
        };
    }
    let wx = resample_weights(left, w, out_w);
    let wy = resample_weights(top, h, out_h);
    // Horizontal pass over the rows of the box: (h, out_w, 3).
    let mut tmp = vec![0f32; h * out_w * 3];
    for y in 0..h {
        let src = &img.data[(top + y) * img.width * 3..(top + y + 1) * img.width * 3];
        for (ox, (lo, ws)) in wx.iter().enumerate() {
            let mut acc = [0f32; 3];
            for (k, wt) in ws.iter().enumerate() {
                let s = (lo + k) * 3;
                for c in 0..3 {
                    acc[c] += wt * src[s + c];
                }
            }
            tmp[(y * out_w + ox) * 3..(y * out_w + ox) * 3 + 3].copy_from_slice(&acc);
        }
    }
    let mut data = vec![0f32; out_h * out_w * 3];
    for (oy, (lo, ws)) in wy.iter().enumerate() {
        for (k, wt) in ws.iter().enumerate() {
            let row = (lo + k - top) * out_w * 3;
            let dst = &mut data[oy * out_w * 3..(oy + 1) * out_w * 3];
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

/// ITU-R 601-2 luma, as torchvision's `rgb_to_grayscale`.
#[inline]
fn luma(p: &[f32]) -> f32 {
    0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]
}

fn blend(img: &mut FloatImage, factor: f32, other: impl Fn(&[f32]) -> f32) {
    for p in img.data.chunks_exact_mut(3) {
        let o = other(p);
        for v in p.iter_mut() {
            *v = (factor * *v + (1.0 - factor) * o).clamp(0.0, 1.0);
        }
    }
}

fn adjust_hue(img: &mut FloatImage, shift: f32) {
    for p in img.data.chunks_exact_mut(3) {
        let (r, g, b) = (p[0], p[1], p[2]);
        let max = r.max(g).max(b);
        let min = r.min(g).min(b);
        let delta = max - min;
        let v = max;
        let s = if max > 0.0 { delta / max } else { 0.0 };
        let mut h = if delta == 0.0 {
            0.0
        } else if max == r {
            ((g - b) / delta).rem_euclid(6.0) / 6.0
        } else if max == g {
            ((b - r) / delta + 2.0) / 6.0
        } else {
            ((r - g) / delta + 4.0) / 6.0
        };
        h = (h + shift).rem_euclid(1.0);
        let i = (h * 6.0).floor();
        let f = h * 6.0 - i;
        let (pp, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
        let (nr, ng, nb) = match i as i32 % 6 {
            0 => (v, t, pp),
            1 => (q, v, pp),
            2 => (pp, v, t),
            3 => (pp, q, v),
            4 => (t, pp, v),
            _ => (v, pp, q),
        };
        p[0] = nr;
        p[1] = ng;
        p[2] = nb;
    }
}

/// torchvision `ColorJitter`: a random order of brightness, contrast, saturation, hue, each
/// with its factor drawn uniformly.
pub fn color_jitter(img: &mut FloatImage, strength: [f32; 4], rng: &mut impl Rng) {
    let mut order = [0usize, 1, 2, 3];
    order.shuffle(rng);
    let factor = |s: f32, rng: &mut dyn rand::RngCore| {
        if s > 0.0 {
            rng.random_range((1.0 - s).max(0.0)..=1.0 + s)
        } else {
            1.0
        }
    };
    let b = factor(strength[0], rng);
    let c = factor(strength[1], rng);
    let s = factor(strength[2], rng);
    let h = if strength[3] > 0.0 {
        rng.random_range(-strength[3]..=strength[3])
    } else {
        0.0
    };
    for op in order {
        match op {
            0 if b != 1.0 => img.data.iter_mut().for_each(|v| *v = (*v * b).clamp(0.0, 1.0)),
            1 if c != 1.0 => {
                let mean = img.data.chunks_exact(3).map(luma).sum::<f32>() / (img.width * img.height) as f32;
                blend(img, c, |_| mean);
            }
            2 if s != 1.0 => blend(img, s, luma),
            3 if h != 0.0 => adjust_hue(img, h),
            _ => {}
        }
    }
}

/// Replace each pixel by its luma in all three channels.
pub fn grayscale(img: &mut FloatImage) {
    for p in img.data.chunks_exact_mut(3) {
        let l = luma(p);
        p.fill(l);
    }
}

/// Separable Gaussian blur with σ in pixels, kernel radius ⌈3σ⌉ (capped by the image) and
/// reflect padding. MoCo v2 uses PIL's `GaussianBlur(radius=σ)` (an extended-box
/// approximation of the same Gaussian); this is the exact Gaussian.
pub fn gaussian_blur(img: &mut FloatImage, sigma: f32) {
    let radius = ((3.0 * sigma).ceil() as usize).clamp(1, img.width.min(img.height).saturating_sub(1).max(1));
    let kernel: Vec<f32> = (-(radius as i64)..=radius as i64)
        .map(|x| (-((x * x) as f32) / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / sum).collect();
    let reflect = |i: i64, n: usize| -> usize {
        let n = n as i64;
        let mut i = i;
        if n == 1 {
            return 0;
        }
        while i < 0 || i >= n {
            if i < 0 {
                i = -i;
            }
            if i >= n {
                i = 2 * (n - 1) - i;
            }
        }
        i as usize
    };
    let (w, h) = (img.width, img.height);
    let mut tmp = vec![0f32; img.data.len()];
    for y in 0..h {
        for x in 0..w {
            let mut acc = [0f32; 3];
            for (k, kv) in kernel.iter().enumerate() {
                let sx = reflect(x as i64 + k as i64 - radius as i64, w);
                for (a, v) in acc.iter_mut().zip(&img.data[(y * w + sx) * 3..(y * w + sx) * 3 + 3]) {
                    *a += kv * v;
                }
            }
            tmp[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&acc);
        }
    }
    for y in 0..h {
        for x in 0..w {
            let mut acc = [0f32; 3];
            for (k, kv) in kernel.iter().enumerate() {
                let sy = reflect(y as i64 + k as i64 - radius as i64, h);
                for c in 0..3 {
                    acc[c] += kv * tmp[(sy * w + x) * 3 + c];
                }
            }
            img.data[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&acc);
        }
    }
}

/// Convert 8-bit pixels to [0, 1].
pub fn to_float(img: &Image) -> FloatImage {
    FloatImage {
        width: img.width,
        height: img.height,
        data: img.pixels.iter().map(|&p| p as f32 / 255.0).collect(),
    }
}

/// Resize the shorter side to `size` and center-crop `size`×`size` (identity for a
/// `size`×`size` input): the evaluation transform.
pub fn center(img: &FloatImage, size: usize) -> FloatImage {
    if img.width == size && img.height == size {
        return img.clone();
    }
    let s = img.width.min(img.height);
    crop_resize(img, (img.height - s) / 2, (img.width - s) / 2, s, s, size, size)
}

/// One augmented view of `img`, written normalised in CHW order into `out` (`3*size*size`).
pub fn augment_into(img: &Image, p: &AugmentParams, size: usize, mean: [f32; 3], std: [f32; 3], rng: &mut impl Rng, out: &mut [f32]) {
    let src = to_float(img);
    let mut v = if p.crop {
        let (t, l, h, w) = random_resized_crop_params(src.width, src.height, p.crop_scale, p.crop_ratio, rng);
        crop_resize(&src, t, l, h, w, size, size)
    } else {
        center(&src, size)
    };
    let gray = |v: &mut FloatImage, rng: &mut dyn rand::RngCore| {
        if p.grayscale_p > 0.0 && rng.random::<f32>() < p.grayscale_p {
            grayscale(v);
        }
    };
    if p.grayscale_first {
        gray(&mut v, rng);
    }
    if p.jitter_p > 0.0 && rng.random::<f32>() < p.jitter_p {
        color_jitter(&mut v, p.jitter, rng);
    }
    if !p.grayscale_first {
        gray(&mut v, rng);
    }
    if p.blur_p > 0.0 && rng.random::<f32>() < p.blur_p {
        let sigma = rng.random_range(p.blur_sigma[0]..=p.blur_sigma[1]);
        gaussian_blur(&mut v, sigma);
    }
    let flip = p.flip_p > 0.0 && rng.random::<f32>() < p.flip_p;
    write_chw(&v, flip, mean, std, out);
}

/// Normalise and write HWC → CHW, optionally mirrored.
pub fn write_chw(v: &FloatImage, flip: bool, mean: [f32; 3], std: [f32; 3], out: &mut [f32]) {
    let (w, h) = (v.width, v.height);
    assert_eq!(out.len(), 3 * w * h, "output buffer must hold 3×{h}×{w}");
    for c in 0..3 {
        let inv = 1.0 / std[c];
        for y in 0..h {
            for x in 0..w {
                let sx = if flip { w - 1 - x } else { x };
                out[c * w * h + y * w + x] = (v.data[(y * w + sx) * 3 + c] - mean[c]) * inv;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{stream, Purpose};

    fn test_image(w: usize, h: usize) -> Image {
        Image {
            width: w,
            height: h,
            pixels: (0..w * h * 3).map(|i| (i * 37 % 256) as u8).collect(),
        }
    }

    #[test]
    fn crop_params_inside_image_and_in_scale() {
        let mut rng = stream(0, Purpose::Augment, 0, 0);
        for _ in 0..500 {
            let (t, l, h, w) = random_resized_crop_params(32, 24, [0.2, 1.0], [0.75, 4.0 / 3.0], &mut rng);
            assert!(t + h <= 24 && l + w <= 32 && h > 0 && w > 0);
        }
    }

    #[test]
    fn resize_of_constant_is_constant_and_identity_is_exact() {
        let img = FloatImage {
            width: 10,
            height: 7,
            data: vec![0.25; 210],
        };
        let r = crop_resize(&img, 1, 2, 5, 6, 13, 4);
        assert!(r.data.iter().all(|v| (v - 0.25).abs() < 1e-6));
        let f = to_float(&test_image(8, 8));
        assert_eq!(crop_resize(&f, 0, 0, 8, 8, 8, 8), f);
    }

    #[test]
    fn views_are_deterministic_per_stream_and_in_range() {
        let img = test_image(32, 32);
        let p = AugmentParams::resolve(&AugmentConfig {
            preset: AugmentPreset::V2,
            ..Default::default()
        });
        let (mean, std) = ([0.5; 3], [0.25; 3]);
        let mut a = vec![0f32; 3 * 32 * 32];
        let mut b = a.clone();
        let mut c = a.clone();
        augment_into(&img, &p, 32, mean, std, &mut stream(1, Purpose::Augment, 0, 5), &mut a);
        augment_into(&img, &p, 32, mean, std, &mut stream(1, Purpose::Augment, 0, 5), &mut b);
        augment_into(&img, &p, 32, mean, std, &mut stream(1, Purpose::Augment, 0, 6), &mut c);
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Pixels in [0,1] normalised by (0.5, 0.25) lie in [-2, 2].
        assert!(a.iter().all(|v| (-2.0 - 1e-5..=2.0 + 1e-5).contains(v)));
    }

    #[test]
    fn none_preset_is_plain_normalisation() {
        let img = test_image(32, 32);
        let mut out = vec![0f32; 3 * 32 * 32];
        augment_into(
            &img,
            &AugmentParams::none(),
            32,
            [0.0; 3],
            [1.0; 3],
            &mut stream(0, Purpose::Augment, 0, 0),
            &mut out,
        );
        // CHW: channel 1 of pixel (0,2) is byte index (0*32+2)*3+1.
        assert!((out[32 * 32 + 2] - img.pixels[7] as f32 / 255.0).abs() < 1e-6);
    }

    #[test]
    fn grayscale_equalises_channels_and_jitter_keeps_range() {
        let mut f = to_float(&test_image(5, 5));
        grayscale(&mut f);
        assert!(f.data.chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2]));
        let mut g = to_float(&test_image(9, 9));
        let mut rng = stream(3, Purpose::Augment, 0, 0);
        for _ in 0..20 {
            color_jitter(&mut g, [0.4, 0.4, 0.4, 0.1], &mut rng);
            assert!(g.data.iter().all(|v| (0.0..=1.0).contains(v)));
        }
    }

    #[test]
    fn hue_shift_by_one_is_identity_and_blur_keeps_mean_of_constant() {
        let orig = to_float(&test_image(6, 6));
        let mut f = orig.clone();
        adjust_hue(&mut f, 1.0);
        assert!(f.data.iter().zip(&orig.data).all(|(a, b)| (a - b).abs() < 1e-5));
        let mut c = FloatImage {
            width: 8,
            height: 8,
            data: vec![0.3; 192],
        };
        gaussian_blur(&mut c, 1.5);
        assert!(c.data.iter().all(|v| (v - 0.3).abs() < 1e-5));
    }
}

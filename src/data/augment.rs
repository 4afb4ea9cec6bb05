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
//! The crop and resize are [`super::geometry`]'s (PIL's antialiased bilinear, read from the
//! 8-bit pixels); after them pixels are f32 in [0, 1] (torchvision's tensor path, no uint8
//! rounding between ops). Every random draw comes from the `rng` passed in, so one sample's
//! views are a pure function of its stream.

use super::decode::Encoded;
pub use super::geometry::FloatImage;
use super::geometry::{random_resized_crop_params, Resample};
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

/// The geometry of one view of a `width`×`height` image: a RandomResizedCrop drawn from
/// `rng` (from the original size), or without crop the short side resized to `size` and
/// center-cropped (the identity for a `size`×`size` image).
fn view_geometry(width: usize, height: usize, p: &AugmentParams, size: usize, rng: &mut impl Rng) -> Resample {
    if p.crop {
        let (t, l, h, w) = random_resized_crop_params(width, height, p.crop_scale, p.crop_ratio, rng);
        Resample::crop(t, l, h, w, size, size)
    } else {
        Resample::eval(width, height, size, 1.0)
    }
}

/// One augmented view of `img`, written normalised in CHW order into `out` (`3*size*size`).
pub fn augment_into(img: &Image, p: &AugmentParams, size: usize, mean: [f32; 3], std: [f32; 3], rng: &mut impl Rng, out: &mut [f32]) {
    let v = view_geometry(img.width, img.height, p, size, rng).apply(img);
    finish_view(v, p, mean, std, rng, out);
}

/// One augmented view of an encoded image, as [`augment_into`] with the same draws: the
/// crop is drawn from the image's width and height (the header's with DCT scaling on) and
/// read from the decode at the largest reduction that keeps it at least `size` (shared with
/// the sample's other views that ask for the same reduction).
pub fn augment_encoded(
    src: &mut Encoded,
    p: &AugmentParams,
    size: usize,
    mean: [f32; 3],
    std: [f32; 3],
    rng: &mut impl Rng,
    out: &mut [f32],
) -> Result<(), String> {
    let (w, h) = src.dims()?;
    let geom = view_geometry(w, h, p, size, rng);
    let (img, f) = src.at(geom.reduction())?;
    let v = geom.reduced(f).apply(img);
    finish_view(v, p, mean, std, rng, out);
    Ok(())
}

/// The photometric half of a view (grayscale, jitter, blur, flip) and the CHW write.
fn finish_view(mut v: FloatImage, p: &AugmentParams, mean: [f32; 3], std: [f32; 3], rng: &mut impl Rng, out: &mut [f32]) {
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

/// The evaluation view of `img` into `out` (`3*size*size`, CHW): torchvision's
/// `Resize(int(size / fraction))` + `CenterCrop(size)`, normalised.
pub fn eval_into(img: &Image, size: usize, fraction: f32, mean: [f32; 3], std: [f32; 3], out: &mut [f32]) {
    let v = Resample::eval(img.width, img.height, size, fraction).apply(img);
    write_chw(&v, false, mean, std, out);
}

/// [`eval_into`] of encoded bytes; with `dct`, a JPEG is decoded at the largest reduction
/// that keeps it at least the resized size.
pub fn eval_encoded(
    bytes: &[u8],
    size: usize,
    fraction: f32,
    mean: [f32; 3],
    std: [f32; 3],
    out: &mut [f32],
    dct: bool,
) -> Result<(), String> {
    let mut src = Encoded::new(bytes, dct);
    let (w, h) = src.dims()?;
    let geom = Resample::eval(w, h, size, fraction);
    let (img, f) = src.at(geom.reduction())?;
    write_chw(&geom.reduced(f).apply(img), false, mean, std, out);
    Ok(())
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
    use crate::data::test_image;
    use crate::rng::{stream, Purpose};

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
        use crate::data::geometry::crop_resize;
        let img = Image {
            width: 10,
            height: 7,
            pixels: vec![64; 210],
        };
        let r = crop_resize(&img, 1, 2, 5, 6, 13, 4);
        assert!(r.data.iter().all(|v| (v - 64.0 / 255.0).abs() < 1e-6));
        let img = test_image(8, 8);
        assert_eq!(crop_resize(&img, 0, 0, 8, 8, 8, 8), to_float(&img));
    }

    #[test]
    fn eval_view_of_a_square_image_at_its_size_is_plain_normalisation() {
        let img = test_image(32, 32);
        let (mut a, mut b) = (vec![0f32; 3 * 32 * 32], vec![0f32; 3 * 32 * 32]);
        eval_into(&img, 32, 1.0, [0.0; 3], [1.0; 3], &mut a);
        write_chw(&to_float(&img), false, [0.0; 3], [1.0; 3], &mut b);
        assert_eq!(a, b);
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

//! The built-in dataset: seeded procedural images of up to 10 visually distinct pattern
//! classes (disc, square, triangle, horizontal/vertical/diagonal stripes, checkerboard, ring,
//! plus, cross) with random colours, position, size, period and pixel noise. No files, no
//! download: the embedded default of the README's main command and of the tests.
//!
//! Colour and position vary within a class, so a model has to learn shape, which is what the
//! augmentations (crops, colour jitter, grayscale) make contrastive learning learn.

use super::{Image, ImageSet, Splits};
use crate::config::DataConfig;
use crate::rng::{stream, Purpose};
use rand::Rng;

const NAMES: [&str; 10] = [
    "disc", "square", "triangle", "hstripes", "vstripes", "checker", "ring", "plus", "dstripes", "cross",
];

/// Generate the train and test splits (test images use a disjoint stream).
pub fn generate(cfg: &DataConfig, seed: u64) -> Splits {
    let make = |split: u64, n: usize| {
        let classes = cfg.synthetic_classes.min(NAMES.len());
        let mut set = ImageSet {
            classes: NAMES[..classes].iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        for i in 0..n {
            let label = (i % classes) as u32;
            let mut rng = stream(seed, Purpose::Synthetic, split, i as u64);
            set.images.push(render(label as usize, cfg.image_size, &mut rng));
            set.labels.push(label);
        }
        set
    };
    Splits {
        train: make(0, cfg.synthetic_train),
        test: make(1, cfg.synthetic_test),
    }
}

/// Draw one image of class `class` (0..10) at `size`×`size`.
pub fn render(class: usize, size: usize, rng: &mut impl Rng) -> Image {
    let s = size as f32;
    let bg: [f32; 3] = [rng.random_range(0.0..1.0), rng.random_range(0.0..1.0), rng.random_range(0.0..1.0)];
    // Foreground far enough from the background in at least one channel.
    let mut fg = [0f32; 3];
    loop {
        for c in &mut fg {
            *c = rng.random_range(0.0..1.0);
        }
        if fg.iter().zip(&bg).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max) > 0.45 {
            break;
        }
    }
    let cx = s * rng.random_range(0.35..0.65);
    let cy = s * rng.random_range(0.35..0.65);
    let r = s * rng.random_range(0.22..0.4);
    let period = rng.random_range(3.0..7.0f32) * s / 32.0;
    let phase = rng.random_range(0.0..period);
    let thick = r * rng.random_range(0.25..0.45);
    let noise = 0.08;
    let mut pixels = vec![0u8; size * size * 3];
    for y in 0..size {
        for x in 0..size {
            let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
            let (dx, dy) = (px - cx, py - cy);
            let inside = match class {
                0 => dx * dx + dy * dy <= r * r,
                1 => dx.abs() <= r * 0.85 && dy.abs() <= r * 0.85,
                2 => dy <= r * 0.8 && dy >= -r && dx.abs() <= (dy + r) * 0.6,
                3 => ((py + phase) / period).floor() as i64 % 2 == 0,
                4 => ((px + phase) / period).floor() as i64 % 2 == 0,
                5 => (((px + phase) / period).floor() as i64 + ((py + phase) / period).floor() as i64) % 2 == 0,
                6 => {
                    let d = (dx * dx + dy * dy).sqrt();
                    d <= r && d >= r - thick
                }
                7 => (dx.abs() <= thick * 0.5 && dy.abs() <= r) || (dy.abs() <= thick * 0.5 && dx.abs() <= r),
                8 => ((px + py + phase) / (period * 1.4)).floor() as i64 % 2 == 0,
                _ => ((dx - dy).abs() <= thick * 0.7 || (dx + dy).abs() <= thick * 0.7) && dx.abs() <= r && dy.abs() <= r,
            };
            let col = if inside { &fg } else { &bg };
            for c in 0..3 {
                let v = col[c] + rng.random_range(-noise..noise);
                pixels[(y * size + x) * 3 + c] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
    }
    Image {
        width: size,
        height: size,
        pixels,
    }
}

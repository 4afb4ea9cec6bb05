//! The built-in dataset: seeded procedural images of up to 10 texture classes (tiled discs,
//! squares, triangles, rings, pluses and crosses; horizontal, vertical and diagonal stripes;
//! checkerboard) with random colours, scale, phase and pixel noise. No files, no download: the
//! embedded default of the README's main command and of the tests.
//!
//! Why textures with a colour per element: MoCo learns what two augmented views of one image
//! share. A single shape in one foreground colour on one background colour (this generator's
//! first design) does not survive a 20 % crop, and its colour pair does survive the v2 colour
//! jitter, so the encoder learned colour, which says nothing about the class (kNN fell below
//! its random init). Here every crop still shows the class's pattern, and since each element
//! (motif, stripe, checker square) has its own random colour over a smooth random dark
//! background, the colours two crops of one image show differ almost as much as two images':
//! what the views share is the pattern. A random encoder, which mostly sees colour, separates
//! the classes poorly (kNN ~35–39 % at 16×16); MoCo learns the patterns (`experiments/demo.toml`).

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
        note: None,
    }
}

/// Elements (tiles, stripes, checker squares) per axis in the colour table of one image.
const TABLE: usize = 16;

/// Draw one image of class `class` (0..10) at `size`×`size`.
///
/// Shapes are tiled on a grid (cell size, motif size and stroke, grid offset drawn per image);
/// stripes and checkers cover the image (period and phase drawn per image). Sizes scale with
/// `size`; each element has its own colour (see the module documentation).
pub fn render(class: usize, size: usize, rng: &mut impl Rng) -> Image {
    let s = size as f32;
    // Background: a smooth field through 3×3 random dark colours; element colours: random,
    // bright in at least one channel.
    let mut field = [[0f32; 3]; 9];
    for c in field.iter_mut().flatten() {
        *c = rng.random_range(0.0..0.35);
    }
    let colours: Vec<[f32; 3]> = (0..TABLE * TABLE)
        .map(|_| loop {
            let fg: [f32; 3] = [rng.random_range(0.0..1.0), rng.random_range(0.0..1.0), rng.random_range(0.0..1.0)];
            if fg.iter().fold(0.0f32, |m, &v| m.max(v)) > 0.8 {
                break fg;
            }
        })
        .collect();
    // Shapes: one motif per cell of side `cell`, radius `r`, stroke `thick`.
    let cell = s * rng.random_range(0.33..0.5);
    let r = cell * rng.random_range(0.32..0.42);
    let thick = r * rng.random_range(0.4..0.55);
    let (ox, oy) = (rng.random_range(0.0..cell), rng.random_range(0.0..cell));
    let period = rng.random_range(4.0..8.0f32) * s / 32.0;
    let phase = rng.random_range(0.0..period);
    let noise = 0.08;
    let idx = |v: f32, p: f32| (v / p).floor() as i64;
    let mut pixels = vec![0u8; size * size * 3];
    for y in 0..size {
        for x in 0..size {
            let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
            // Offset from the centre of this pixel's cell.
            let dx = (px + ox).rem_euclid(cell) - cell * 0.5;
            let dy = (py + oy).rem_euclid(cell) - cell * 0.5;
            let (cx, cy) = (idx(px + ox, cell), idx(py + oy, cell));
            let (sx, sy) = (idx(px + phase, period), idx(py + phase, period));
            // Whether the pixel is foreground, and which element it belongs to.
            let (inside, e) = match class {
                0 => (dx * dx + dy * dy <= r * r, (cx, cy)),
                1 => (dx.abs() <= r * 0.8 && dy.abs() <= r * 0.8, (cx, cy)),
                2 => (dy <= r * 0.8 && dy >= -r && dx.abs() <= (dy + r) * 0.6, (cx, cy)),
                3 => (sy % 2 == 0, (0, sy)),
                4 => (sx % 2 == 0, (sx, 0)),
                5 => ((sx + sy) % 2 == 0, (sx, sy)),
                6 => {
                    let d = (dx * dx + dy * dy).sqrt();
                    (d <= r && d >= r - thick, (cx, cy))
                }
                7 => (
                    (dx.abs() <= thick * 0.5 && dy.abs() <= r) || (dy.abs() <= thick * 0.5 && dx.abs() <= r),
                    (cx, cy),
                ),
                8 => {
                    let d = idx(px + py + phase, period * 1.4);
                    (d % 2 == 0, (d, 0))
                }
                _ => (
                    ((dx - dy).abs() <= thick * 0.7 || (dx + dy).abs() <= thick * 0.7) && dx.abs() <= r && dy.abs() <= r,
                    (cx, cy),
                ),
            };
            let t = TABLE as i64;
            let col = match inside {
                true => colours[(e.1.rem_euclid(t) * t + e.0.rem_euclid(t)) as usize],
                false => bilinear(&field, px / s, py / s),
            };
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

/// The 3×3 grid of colours `g` (row-major, at u, v ∈ {0, ½, 1}) bilinearly interpolated at
/// `(u, v)` in [0, 1]².
fn bilinear(g: &[[f32; 3]; 9], u: f32, v: f32) -> [f32; 3] {
    let (fu, fv) = ((u * 2.0).min(1.999), (v * 2.0).min(1.999));
    let (i, j) = (fu as usize, fv as usize);
    let (a, b) = (fu - i as f32, fv - j as f32);
    let at = |x: usize, y: usize| g[y * 3 + x];
    std::array::from_fn(|c| {
        let top = at(i, j)[c] * (1.0 - a) + at(i + 1, j)[c] * a;
        let bottom = at(i, j + 1)[c] * (1.0 - a) + at(i + 1, j + 1)[c] * a;
        top * (1.0 - b) + bottom * b
    })
}

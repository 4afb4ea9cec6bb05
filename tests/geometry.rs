//! Our crop/resize geometry against torchvision's, from the same uint8 pixels
//! (`tests/fixtures/geometry.safetensors`, written by `scripts/torchvision_geometry.py`):
//! `resized_crop(..., antialias=True)` on PIL images, `Resize(int(S / f))` + `CenterCrop(S)`,
//! and `RandomResizedCrop.get_params` replayed from torchvision's own draws.
//!
//! Bound: PIL resamples 8-bit images in two passes (horizontal, then vertical), each rounded
//! to uint8; we keep f32 throughout. The first rounding (≤ 0.5/255) passes through the
//! vertical pass's convex weights, the second adds ≤ 0.5/255: at most 1/255, plus PIL's
//! 22-bit fixed-point weights and f32 arithmetic (< 1e-5). A pass PIL skips (an axis kept at
//! its size) removes one rounding.

use moco_harness::data::decode;
use moco_harness::data::geometry::{crop_resize, random_resized_crop_params, CropDraws, Resample};
use moco_harness::data::Image;
use safetensors::{Dtype, SafeTensors};

const FIXTURE: &str = "tests/fixtures/geometry.safetensors";

/// Two roundings to uint8 of ≤ 0.5/255 each, plus float error.
const BOUND: f32 = 1.0 / 255.0 + 1e-5;

fn fixture() -> Vec<u8> {
    std::fs::read(FIXTURE).expect("fixture present (scripts/torchvision_geometry.py)")
}

fn u8_tensor(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<u8>) {
    let t = st.tensor(name).unwrap_or_else(|_| panic!("fixture lacks {name}"));
    assert_eq!(t.dtype(), Dtype::U8, "{name}");
    (t.shape().to_vec(), t.data().to_vec())
}

fn f64s(st: &SafeTensors, name: &str) -> Vec<f64> {
    let t = st.tensor(name).unwrap_or_else(|_| panic!("fixture lacks {name}"));
    assert_eq!(t.dtype(), Dtype::F64, "{name}");
    t.data()
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn i64s(st: &SafeTensors, name: &str) -> Vec<usize> {
    let t = st.tensor(name).unwrap_or_else(|_| panic!("fixture lacks {name}"));
    assert_eq!(t.dtype(), Dtype::I64, "{name}");
    t.data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as usize)
        .collect()
}

fn image(st: &SafeTensors, k: usize) -> Image {
    let (shape, pixels) = u8_tensor(st, &format!("img/{k}"));
    Image {
        width: shape[1],
        height: shape[0],
        pixels,
    }
}

/// (max, mean) absolute difference between our [0, 1] HWC floats and PIL's uint8 / 255.
fn compare(ours: &[f32], theirs: &[u8]) -> (f32, f32) {
    assert_eq!(ours.len(), theirs.len());
    let d: Vec<f32> = ours.iter().zip(theirs).map(|(a, &b)| (a - b as f32 / 255.0).abs()).collect();
    (d.iter().cloned().fold(0.0, f32::max), d.iter().sum::<f32>() / d.len() as f32)
}

/// Compare, print and bound one output against PIL's (`what` names it); returns the max error.
fn check(what: &str, img: &Image, ours: &[f32], theirs: &[u8]) -> f32 {
    let (max, mean) = compare(ours, theirs);
    println!(
        "{what} ({}×{}): max {:.3}/255, mean {:.3}/255",
        img.width,
        img.height,
        max * 255.0,
        mean * 255.0
    );
    assert!(max <= BOUND && mean < 0.4 / 255.0, "{what}: max {max}, mean {mean}");
    max
}

#[test]
fn resized_crop_matches_torchvision_on_pil() {
    let bytes = fixture();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (mut worst, mut n) = (0f32, 0);
    for k in 0..3 {
        let img = image(&st, k);
        for j in 0..4 {
            let b = i64s(&st, &format!("crop/{k}/{j}/box"));
            for s in [32, 112, 224] {
                let Ok(t) = st.tensor(&format!("crop/{k}/{j}/{s}")) else { continue };
                let ours = crop_resize(&img, b[0], b[1], b[2], b[3], s, s);
                let max = check(&format!("crop img {k} box {j} {b:?} → {s}"), &img, &ours.data, t.data());
                worst = worst.max(max);
                n += 1;
            }
        }
    }
    assert_eq!(n, 25, "every crop of the fixture compared");
    println!("resized_crop: {n} outputs, max abs error {:.3}/255", worst * 255.0);
}

#[test]
fn eval_transform_matches_torchvision_resize_and_center_crop() {
    let bytes = fixture();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut worst = 0f32;
    for k in 0..3 {
        let img = image(&st, k);
        for (frac, s) in [(0.875f32, 32), (0.875, 112), (1.0, 32)] {
            let (shape, theirs) = u8_tensor(&st, &format!("eval/{k}/{frac:?}/{s}"));
            assert_eq!(shape, [s, s, 3]);
            let ours = Resample::eval(img.width, img.height, s, frac).apply(&img);
            let max = check(&format!("eval img {k} {frac} → {s}"), &img, &ours.data, &theirs);
            worst = worst.max(max);
        }
    }
    println!("eval: max abs error {:.3}/255", worst * 255.0);
}

/// torchvision's recorded draws, served in order: area fractions and log ratios as the f32
/// torch drew them, offsets as the integers `torch.randint` gave.
struct Replay(std::vec::IntoIter<f64>);

impl CropDraws for Replay {
    fn area_fraction(&mut self, lo: f32, hi: f32) -> f32 {
        let v = self.0.next().expect("a recorded draw") as f32;
        assert!((lo..=hi).contains(&v));
        v
    }
    fn log_ratio(&mut self, lo: f32, hi: f32) -> f32 {
        let v = self.0.next().expect("a recorded draw") as f32;
        assert!((lo - 1e-6..=hi + 1e-6).contains(&v));
        v
    }
    fn offset(&mut self, max: usize) -> usize {
        let v = self.0.next().expect("a recorded draw") as usize;
        assert!(v <= max);
        v
    }
}

#[test]
fn random_resized_crop_params_equal_torchvision_given_its_draws() {
    let bytes = fixture();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (mut c, mut fallbacks) = (0, 0);
    while st.tensor(&format!("rrc/{c}/spec")).is_ok() {
        let spec = f64s(&st, &format!("rrc/{c}/spec"));
        let draws = f64s(&st, &format!("rrc/{c}/draws"));
        let expected = i64s(&st, &format!("rrc/{c}/box"));
        let (w, h) = (spec[0] as usize, spec[1] as usize);
        let scale = [spec[2] as f32, spec[3] as f32];
        let ratio = [spec[4] as f32, spec[5] as f32];
        let mut replay = Replay(draws.clone().into_iter());
        let got = random_resized_crop_params(w, h, scale, ratio, &mut replay);
        assert_eq!([got.0, got.1, got.2, got.3], expected[..], "case {c}: {w}×{h}, draws {draws:?}");
        assert_eq!(replay.0.len(), 0, "case {c}: every draw consumed");
        fallbacks += (draws.len() == 20) as usize;
        c += 1;
    }
    assert_eq!((c, fallbacks), (44, 4), "cases, of which the central fallback");
}

/// A JPEG (quality 90) of a fixture image upscaled 4× by the PIL-style resize.
fn jpeg_of_fixture_image() -> Vec<u8> {
    let bytes = fixture();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let img = image(&st, 0);
    let big = Resample::crop(0, 0, img.height, img.width, img.width * 4, img.height * 4).apply(&img);
    let px: Vec<u8> = big.data.iter().map(|v| (v * 255.0).round() as u8).collect();
    let rgb = image::RgbImage::from_raw(big.width as u32, big.height as u32, px).unwrap();
    let mut out = Vec::new();
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90);
    rgb.write_with_encoder(enc).unwrap();
    out
}

/// (mean, max) absolute difference of `size`² views from a reduced and a full decode, over
/// `n` seeded RandomResizedCrop draws (scale 0.2–1) that allow a reduction; and the count of
/// views per reduction (1, 2, 4, 8).
fn dct_error(jpeg: &[u8], size: usize, n: usize) -> (f32, f32, [usize; 4]) {
    use rand::SeedableRng;
    let full = decode::decode(jpeg).unwrap();
    let (w, h) = decode::dimensions(jpeg).unwrap();
    assert_eq!((w, h), (full.width, full.height));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let (mut sum, mut max, mut count, mut per) = (0f64, 0f32, 0usize, [0usize; 4]);
    for _ in 0..n {
        let (t, l, ch, cw) = random_resized_crop_params(w, h, [0.2, 1.0], [0.75, 4.0 / 3.0], &mut rng);
        let geom = Resample::crop(t, l, ch, cw, size, size);
        let f = decode::reduction(cw, ch, size);
        assert_eq!(geom.reduction(), f);
        per[f.trailing_zeros() as usize] += 1;
        if f == 1 {
            continue;
        }
        let (small, got) = decode::decode_reduced(jpeg, f).unwrap();
        assert_eq!(got, f);
        let a = geom.apply(&full);
        let b = geom.reduced(f).apply(&small);
        for (x, y) in a.data.iter().zip(&b.data) {
            let d = (x - y).abs();
            sum += d as f64;
            max = max.max(d);
            count += 1;
        }
    }
    ((sum / count.max(1) as f64) as f32, max, per)
}

#[test]
fn dct_reduced_views_are_close_to_full_decode_views() {
    let jpeg = jpeg_of_fixture_image();
    let (mean, max, per) = dct_error(&jpeg, 32, 40);
    println!(
        "960×720 upscaled JPEG q90, 32 px: mean {:.2}/255, max {:.1}/255, views per reduction {per:?}",
        mean * 255.0,
        max * 255.0
    );
    assert!(
        per[1..].iter().sum::<usize>() > 30,
        "most crops of a 960×720 image allow a reduction at 32 px"
    );
    assert!(mean < 2.0 / 255.0 && max < 40.0 / 255.0, "mean {mean} max {max}");
}

/// The measurement in bench/README.md: `GEOMETRY_PHOTOS=DIR` holds JPEGs written by
/// `scripts/torchvision_geometry.py --photos DIR` (scikit-image photos at quality 90).
#[test]
#[ignore = "needs GEOMETRY_PHOTOS (scripts/torchvision_geometry.py --photos DIR)"]
fn dct_scaling_error_on_photos() {
    let dir = std::env::var("GEOMETRY_PHOTOS").expect("GEOMETRY_PHOTOS=DIR");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for f in files.iter().filter(|f| f.extension().is_some_and(|e| e == "jpg")) {
        let jpeg = std::fs::read(f).unwrap();
        let (w, h) = decode::dimensions(&jpeg).unwrap();
        for size in [112, 224] {
            let (mean, max, per) = dct_error(&jpeg, size, 500);
            println!(
                "{} ({w}×{h}), RandomResizedCrop(scale 0.2–1) → {size}: reduced views {:?} of 500 (×2, ×4, ×8); |reduced − full|: mean {:.2}/255, max {:.1}/255",
                f.file_name().unwrap().to_string_lossy(),
                &per[1..],
                mean * 255.0,
                max * 255.0
            );
        }
    }
}

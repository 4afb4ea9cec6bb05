//! The STL-10 binary format (`stl10_binary/`), <https://cs.stanford.edu/~acoates/stl10/>.
//!
//! `train_X.bin` (5,000 images), `test_X.bin` (8,000) and `unlabeled_X.bin` (100,000) hold
//! 96×96 RGB images of 27,648 bytes each: the red plane, then green, then blue, each plane
//! stored **column by column** (byte `c·9216 + x·96 + y` is channel `c` of the pixel in row `y`,
//! column `x`; torchvision reads it as `reshape(-1, 3, 96, 96)` then swaps the last two axes).
//! `train_y.bin` / `test_y.bin` hold one label byte per image, 1..=10; `class_names.txt` names
//! the classes in label order. The unlabeled images have no labels: in a pre-training set they
//! carry [`UNLABELED`], and they never enter [`Splits`].

use super::{io_err, DataError, Image, ImageSet, Splits, UNLABELED};
use std::io::{BufReader, Read};
use std::path::Path;

/// Side of an STL-10 image in pixels.
pub const SIDE: usize = 96;
/// Bytes of one image record (3 planes of 96×96).
pub const RECORD: usize = 3 * SIDE * SIDE;
/// The classes in label order, as in `class_names.txt` (used when that file is absent).
pub const CLASSES: [&str; 10] = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"];

/// Decode one 27,648-byte record (channel planes, column-major) into a row-major HWC image.
pub fn decode_record(rec: &[u8]) -> Image {
    debug_assert_eq!(rec.len(), RECORD);
    let plane = SIDE * SIDE;
    let mut pixels = vec![0u8; RECORD];
    for c in 0..3 {
        let p = &rec[c * plane..(c + 1) * plane];
        for x in 0..SIDE {
            let col = &p[x * SIDE..(x + 1) * SIDE];
            for (y, &v) in col.iter().enumerate() {
                pixels[(y * SIDE + x) * 3 + c] = v;
            }
        }
    }
    Image {
        width: SIDE,
        height: SIDE,
        pixels,
    }
}

/// Parse the bytes of an `*_X.bin` file (every record decoded).
pub fn parse_images(bytes: &[u8], path: &Path) -> Result<Vec<Image>, DataError> {
    check_size(bytes.len() as u64, path)?;
    Ok(bytes.chunks_exact(RECORD).map(decode_record).collect())
}

/// Parse the bytes of an `*_y.bin` file: labels 1..=10 become class indices 0..=9.
pub fn parse_labels(bytes: &[u8], path: &Path) -> Result<Vec<u32>, DataError> {
    bytes
        .iter()
        .enumerate()
        .map(|(i, &b)| match b {
            1..=10 => Ok(b as u32 - 1),
            _ => Err(DataError::Layout {
                path: path.to_path_buf(),
                message: format!("label {b} of image {i} is outside 1..=10"),
            }),
        })
        .collect()
}

fn check_size(len: u64, path: &Path) -> Result<(), DataError> {
    if len == 0 || !len.is_multiple_of(RECORD as u64) {
        return Err(DataError::Layout {
            path: path.to_path_buf(),
            message: format!("size {len} is not a multiple of the {RECORD}-byte STL-10 record (3×96×96)"),
        });
    }
    Ok(())
}

/// Read up to `limit` images (0 = all) from an `*_X.bin` file, one record at a time, so the
/// peak memory is the decoded images only (100,000 unlabeled images: 2.76 GB).
pub fn read_images(path: &Path, limit: usize) -> Result<Vec<Image>, DataError> {
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    check_size(len, path)?;
    let total = (len / RECORD as u64) as usize;
    let n = if limit == 0 { total } else { total.min(limit) };
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut rec = vec![0u8; RECORD];
    let mut images = Vec::with_capacity(n);
    for _ in 0..n {
        reader.read_exact(&mut rec).map_err(io_err(path))?;
        images.push(decode_record(&rec));
    }
    Ok(images)
}

fn labelled(dir: &Path, split: &str, classes: &[String]) -> Result<ImageSet, DataError> {
    let xp = dir.join(format!("{split}_X.bin"));
    let yp = dir.join(format!("{split}_y.bin"));
    let images = read_images(&xp, 0)?;
    let labels = parse_labels(&std::fs::read(&yp).map_err(io_err(&yp))?, &yp)?;
    if labels.len() != images.len() {
        return Err(DataError::Layout {
            path: yp,
            message: format!("{} labels for the {} images of {}", labels.len(), images.len(), xp.display()),
        });
    }
    Ok(ImageSet {
        images,
        labels,
        classes: classes.to_vec(),
        ..Default::default()
    })
}

/// Class names from `class_names.txt` (10 non-empty lines), or [`CLASSES`] when it is absent.
pub fn class_names(dir: &Path) -> Result<Vec<String>, DataError> {
    let p = dir.join("class_names.txt");
    if !p.exists() {
        return Ok(CLASSES.iter().map(|s| s.to_string()).collect());
    }
    let text = std::fs::read_to_string(&p).map_err(io_err(&p))?;
    let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    if names.len() != CLASSES.len() {
        return Err(DataError::Layout {
            path: p,
            message: format!("expected {} class names, found {}", CLASSES.len(), names.len()),
        });
    }
    Ok(names)
}

/// Load the labelled splits of an STL-10 binary folder: `train` (5,000 images) and `test`
/// (8,000). The unlabeled images are read separately by [`load_unlabeled`].
pub fn load_stl10_bin(dir: &Path) -> Result<Splits, DataError> {
    if !dir.join("train_X.bin").exists() {
        return Err(DataError::Layout {
            path: dir.to_path_buf(),
            message: "no STL-10 binary files (expected train_X.bin, train_y.bin, test_X.bin, test_y.bin)".into(),
        });
    }
    let classes = class_names(dir)?;
    Ok(Splits {
        train: labelled(dir, "train", &classes)?,
        test: labelled(dir, "test", &classes)?,
        note: None,
    })
}

/// The first `limit` images (0 = all) of `unlabeled_X.bin`, each labelled [`UNLABELED`].
pub fn load_unlabeled(dir: &Path, limit: usize) -> Result<ImageSet, DataError> {
    let images = read_images(&dir.join("unlabeled_X.bin"), limit)?;
    Ok(ImageSet {
        labels: vec![UNLABELED; images.len()],
        images,
        classes: class_names(dir)?,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record whose byte at (c, x, y) in file order is `f(c, x, y)`.
    fn record(f: impl Fn(usize, usize, usize) -> u8) -> Vec<u8> {
        let mut r = Vec::with_capacity(RECORD);
        for c in 0..3 {
            for x in 0..SIDE {
                for y in 0..SIDE {
                    r.push(f(c, x, y));
                }
            }
        }
        r
    }

    #[test]
    fn planes_are_column_major() {
        // Channel c of pixel (row y, column x) = c*80 + x/2 - y/4 … distinct enough to catch
        // a transposed or interleaved reading.
        let f = |c: usize, x: usize, y: usize| (c * 80 + x / 2 + (95 - y) / 4) as u8;
        let img = decode_record(&record(f));
        assert_eq!((img.width, img.height), (96, 96));
        for (y, x) in [(0, 0), (0, 95), (95, 0), (10, 70), (70, 10), (95, 95)] {
            for c in 0..3 {
                assert_eq!(img.pixels[(y * 96 + x) * 3 + c], f(c, x, y), "pixel row {y} col {x} channel {c}");
            }
        }
        // The second byte of the file is row 1 of column 0 (not column 1 of row 0).
        let mut r = vec![0u8; RECORD];
        r[1] = 200;
        r[SIDE * SIDE + 96] = 100; // green, column 1, row 0
        let img = decode_record(&r);
        assert_eq!(img.pixels[96 * 3], 200, "row 1, column 0, red");
        assert_eq!(img.pixels[3 + 1], 100, "row 0, column 1, green");
        assert_eq!(img.pixels.iter().map(|&v| v as u32).sum::<u32>(), 300);
    }

    #[test]
    fn loads_splits_limits_unlabeled_and_rejects_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let images = |n: usize, base: u8| -> Vec<u8> {
            (0..n)
                .flat_map(|i| record(move |c, x, y| base + i as u8 + c as u8 + ((x + y) % 2) as u8))
                .collect()
        };
        std::fs::write(d.join("train_X.bin"), images(3, 10)).unwrap();
        std::fs::write(d.join("train_y.bin"), [1u8, 10, 4]).unwrap();
        std::fs::write(d.join("test_X.bin"), images(2, 50)).unwrap();
        std::fs::write(d.join("test_y.bin"), [2u8, 3]).unwrap();
        std::fs::write(d.join("unlabeled_X.bin"), images(4, 100)).unwrap();
        let s = load_stl10_bin(d).unwrap();
        assert_eq!(s.train.labels, vec![0, 9, 3]);
        assert_eq!(s.test.labels, vec![1, 2]);
        assert_eq!(s.train.classes[2], "car");
        assert_eq!(&s.train.images[1].pixels[..4], &[11, 12, 13, 12]); // (0,0) then (0,1): parity flips
        let u = load_unlabeled(d, 0).unwrap();
        assert_eq!((u.len(), u.labels[0]), (4, UNLABELED));
        assert_eq!(u.images[3].pixels[0], 103);
        assert_eq!(load_unlabeled(d, 2).unwrap().len(), 2);

        std::fs::write(d.join("class_names.txt"), "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n").unwrap();
        assert_eq!(load_stl10_bin(d).unwrap().test.classes[9], "j");
        std::fs::write(d.join("class_names.txt"), "a\nb\n").unwrap();
        let e = load_stl10_bin(d).unwrap_err().to_string();
        assert!(e.contains("class_names.txt") && e.contains("found 2"), "{e}");
        std::fs::remove_file(d.join("class_names.txt")).unwrap();

        std::fs::write(d.join("train_y.bin"), [1u8, 11, 4]).unwrap();
        let e = load_stl10_bin(d).unwrap_err().to_string();
        assert!(e.contains("train_y.bin") && e.contains("label 11"), "{e}");
        std::fs::write(d.join("train_y.bin"), [1u8, 2]).unwrap();
        let e = load_stl10_bin(d).unwrap_err().to_string();
        assert!(e.contains("train_y.bin") && e.contains("2 labels for the 3 images"), "{e}");
        std::fs::write(d.join("test_X.bin"), &images(2, 50)[..RECORD + 5]).unwrap();
        std::fs::write(d.join("train_y.bin"), [1u8, 2, 3]).unwrap();
        let e = load_stl10_bin(d).unwrap_err().to_string();
        assert!(e.contains("test_X.bin") && e.contains("multiple"), "{e}");
        let e = load_stl10_bin(&d.join("nope")).unwrap_err().to_string();
        assert!(e.contains("no STL-10 binary files"), "{e}");
    }
}

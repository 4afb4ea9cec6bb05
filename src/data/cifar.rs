//! The CIFAR-10/100 binary format (`cifar-10-batches-bin`, `cifar-100-binary`).
//!
//! CIFAR-10 records are `<1 byte label><3072 bytes: 1024 R, 1024 G, 1024 B>`; CIFAR-100
//! records are `<coarse label><fine label><3072 bytes>` and we use the fine label.
//! <https://www.cs.toronto.edu/~kriz/cifar.html>

use super::{DataError, Image, ImageSet, Splits};
use std::path::Path;

const PIXELS: usize = 32 * 32;
const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Parse one binary file of records with `label_bytes` leading label bytes (label = last one).
pub fn parse_records(bytes: &[u8], label_bytes: usize, path: &Path) -> Result<(Vec<Image>, Vec<u32>), DataError> {
    let rec = label_bytes + 3 * PIXELS;
    if bytes.is_empty() || !bytes.len().is_multiple_of(rec) {
        return Err(DataError::Layout {
            path: path.to_path_buf(),
            message: format!("size {} is not a multiple of the {rec}-byte CIFAR record", bytes.len()),
        });
    }
    let mut images = Vec::with_capacity(bytes.len() / rec);
    let mut labels = Vec::with_capacity(bytes.len() / rec);
    for r in bytes.chunks_exact(rec) {
        labels.push(r[label_bytes - 1] as u32);
        let planes = &r[label_bytes..];
        let mut pixels = vec![0u8; 3 * PIXELS];
        for p in 0..PIXELS {
            for c in 0..3 {
                pixels[p * 3 + c] = planes[c * PIXELS + p];
            }
        }
        images.push(Image {
            width: 32,
            height: 32,
            pixels,
        });
    }
    Ok((images, labels))
}

/// CIFAR-10 records (`<label><R plane><G plane><B plane>`) of 32×32 images.
fn records(set: &ImageSet, path: &Path) -> Result<Vec<u8>, DataError> {
    let mut out = Vec::with_capacity(set.len() * (1 + 3 * PIXELS));
    for (img, &label) in set.images.iter().zip(&set.labels) {
        if img.width != 32 || img.height != 32 || img.pixels.len() != 3 * PIXELS || label > 255 {
            return Err(DataError::Layout {
                path: path.to_path_buf(),
                message: format!(
                    "CIFAR records hold 32x32 RGB images with labels < 256, got {}x{} label {label}",
                    img.width, img.height
                ),
            });
        }
        out.push(label as u8);
        for c in 0..3 {
            out.extend(img.pixels.iter().skip(c).step_by(3));
        }
    }
    Ok(out)
}

/// Write `splits` as a CIFAR-10 binary folder (`data_batch_1..5.bin`, `test_batch.bin`,
/// `batches.meta.txt`), e.g. a class-balanced subset small enough to carry to a GPU machine.
/// The classes must be CIFAR-10's, in its order. The folder appears whole or not at all (written
/// beside it, then renamed).
pub fn write_cifar10_bin(dir: &Path, splits: &Splits) -> Result<(), DataError> {
    if splits.train.classes != CIFAR10_CLASSES {
        return Err(DataError::Layout {
            path: dir.to_path_buf(),
            message: format!(
                "the CIFAR-10 format needs CIFAR-10's classes in order, got {:?}",
                splits.train.classes
            ),
        });
    }
    let io = |source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    };
    if dir.exists() {
        return Err(DataError::Layout {
            path: dir.to_path_buf(),
            message: "already exists; remove it or pick another --out".into(),
        });
    }
    let tmp = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io)?;
    let n = splits.train.len();
    for b in 0..5 {
        let (lo, hi) = (n * b / 5, n * (b + 1) / 5);
        let part = ImageSet {
            images: splits.train.images[lo..hi].to_vec(),
            labels: splits.train.labels[lo..hi].to_vec(),
            classes: splits.train.classes.clone(),
            ..Default::default()
        };
        let p = tmp.join(format!("data_batch_{}.bin", b + 1));
        std::fs::write(&p, records(&part, &p)?).map_err(io)?;
    }
    let p = tmp.join("test_batch.bin");
    std::fs::write(&p, records(&splits.test, &p)?).map_err(io)?;
    std::fs::write(tmp.join("batches.meta.txt"), CIFAR10_CLASSES.join("\n") + "\n").map_err(io)?;
    std::fs::rename(&tmp, dir).map_err(io)
}

fn read(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(super::io_err(path))
}

/// Load CIFAR-10 (`data_batch_1..5.bin`, `test_batch.bin`) or CIFAR-100 (`train.bin`,
/// `test.bin`) from `dir`.
pub fn load_cifar_bin(dir: &Path) -> Result<Splits, DataError> {
    let set = |(images, labels): (Vec<Image>, Vec<u32>), classes: &[String]| ImageSet {
        images,
        labels,
        classes: classes.to_vec(),
        ..Default::default()
    };
    if dir.join("data_batch_1.bin").exists() {
        let classes: Vec<String> = CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect();
        let mut train = ImageSet {
            classes: classes.clone(),
            ..Default::default()
        };
        for i in 1..=5 {
            let p = dir.join(format!("data_batch_{i}.bin"));
            let (im, lb) = parse_records(&read(&p)?, 1, &p)?;
            train.images.extend(im);
            train.labels.extend(lb);
        }
        let p = dir.join("test_batch.bin");
        let test = set(parse_records(&read(&p)?, 1, &p)?, &classes);
        check_labels(&train, dir)?;
        Ok(Splits { train, test, note: None })
    } else if dir.join("train.bin").exists() {
        let classes: Vec<String> = (0..100).map(|i| format!("class_{i:02}")).collect();
        let p = dir.join("train.bin");
        let train = set(parse_records(&read(&p)?, 2, &p)?, &classes);
        let p = dir.join("test.bin");
        let test = set(parse_records(&read(&p)?, 2, &p)?, &classes);
        check_labels(&train, dir)?;
        Ok(Splits { train, test, note: None })
    } else {
        Err(DataError::Layout {
            path: dir.to_path_buf(),
            message: "no CIFAR binary files (expected data_batch_1.bin … test_batch.bin, or train.bin/test.bin)".into(),
        })
    }
}

fn check_labels(set: &ImageSet, dir: &Path) -> Result<(), DataError> {
    match set.labels.iter().find(|&&l| l as usize >= set.classes.len()) {
        Some(l) => Err(DataError::Layout {
            path: dir.to_path_buf(),
            message: format!("label {l} out of range"),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cifar10_and_100_records_and_rejects_truncated_files() {
        let dir = tempfile::tempdir().unwrap();
        let rec = |label: u8| {
            let mut r = vec![label];
            r.extend((0..3072).map(|i| (i / 1024) as u8 * 100)); // R plane 0, G 100, B 200
            r
        };
        let mut b = rec(3);
        b.extend(rec(9));
        for i in 1..=5 {
            std::fs::write(dir.path().join(format!("data_batch_{i}.bin")), &b).unwrap();
        }
        std::fs::write(dir.path().join("test_batch.bin"), rec(1)).unwrap();
        let s = load_cifar_bin(dir.path()).unwrap();
        // Written back (a packed subset) and read again: the same images and labels.
        let out = dir.path().join("packed");
        write_cifar10_bin(&out, &s).unwrap();
        let t = load_cifar_bin(&out).unwrap();
        assert_eq!((t.train.images == s.train.images, t.train.labels == s.train.labels), (true, true));
        assert_eq!((t.test.images == s.test.images, t.test.labels == s.test.labels), (true, true));
        assert!(write_cifar10_bin(&out, &s).is_err(), "an existing folder is not overwritten");
        assert_eq!(s.train.len(), 10);
        assert_eq!(s.train.labels[..2], [3, 9]);
        assert_eq!(s.test.labels, vec![1]);
        assert_eq!(&s.train.images[0].pixels[..3], &[0, 100, 200]); // HWC
        std::fs::write(dir.path().join("test_batch.bin"), &rec(1)[..100]).unwrap();
        let e = load_cifar_bin(dir.path()).unwrap_err().to_string();
        assert!(e.contains("test_batch.bin") && e.contains("multiple"), "{e}");
        // CIFAR-100: coarse + fine label, the fine one is used.
        let d100 = tempfile::tempdir().unwrap();
        let mut r = vec![4u8, 77];
        r.extend(std::iter::repeat_n(5u8, 3072));
        std::fs::write(d100.path().join("train.bin"), &r).unwrap();
        std::fs::write(d100.path().join("test.bin"), &r).unwrap();
        let s = load_cifar_bin(d100.path()).unwrap();
        assert_eq!(s.train.labels, vec![77]);
        assert_eq!(s.train.classes.len(), 100);
    }
}

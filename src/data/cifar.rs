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

fn read(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Load CIFAR-10 (`data_batch_1..5.bin`, `test_batch.bin`) or CIFAR-100 (`train.bin`,
/// `test.bin`) from `dir`.
pub fn load_cifar_bin(dir: &Path) -> Result<Splits, DataError> {
    let set = |(images, labels): (Vec<Image>, Vec<u32>), classes: &[String]| ImageSet {
        images,
        labels,
        classes: classes.to_vec(),
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
        Ok(Splits { train, test })
    } else if dir.join("train.bin").exists() {
        let classes: Vec<String> = (0..100).map(|i| format!("class_{i:02}")).collect();
        let p = dir.join("train.bin");
        let train = set(parse_records(&read(&p)?, 2, &p)?, &classes);
        let p = dir.join("test.bin");
        let test = set(parse_records(&read(&p)?, 2, &p)?, &classes);
        check_labels(&train, dir)?;
        Ok(Splits { train, test })
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

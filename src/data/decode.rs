//! Decoding encoded images: header dimensions without decoding, full decodes, and JPEG
//! decodes at a DCT reduction (1/2, 1/4, 1/8: libjpeg's scaled IDCT, PIL's `draft`).
//!
//! A full decode goes through the `image` crate (the same call as a decoded ImageFolder, so a
//! streamed sample decoded in full has the same pixels). A reduced decode uses `jpeg-decoder`,
//! whose IDCT computes each 8×8 block at 4×4, 2×2 or 1×1 directly: cheaper, and not the
//! same pixels as a full decode then a resize (inexact by construction). Grayscale and CMYK
//! JPEGs come out as RGB; anything `jpeg-decoder` cannot reduce is decoded in full.

use super::Image;
use std::io::Cursor;

/// True for JPEG bytes (SOI marker then another marker), whatever the file name says.
fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8, 0xFF])
}

/// Width and height from the header, no pixel decoded (JPEG: the frame header; others: the
/// `image` crate's header read).
pub fn dimensions(bytes: &[u8]) -> Result<(usize, usize), String> {
    if is_jpeg(bytes) {
        let mut d = jpeg_decoder::Decoder::new(bytes);
        if d.read_info().is_ok() {
            if let Some(info) = d.info() {
                return Ok((info.width as usize, info.height as usize));
            }
        }
    }
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    let (w, h) = reader.into_dimensions().map_err(|e| e.to_string())?;
    Ok((w as usize, h as usize))
}

/// Decode in full into 8-bit RGB (JPEG, PNG, any format the `image` crate was built with).
pub fn decode(bytes: &[u8]) -> Result<Image, String> {
    let img = image::load_from_memory(bytes).map_err(|e| e.to_string())?.to_rgb8();
    Ok(Image {
        width: img.width() as usize,
        height: img.height() as usize,
        pixels: img.into_raw(),
    })
}

/// Decode at 1/`factor` (1, 2, 4 or 8): a JPEG through the scaled IDCT, `ceil(w / factor)` ×
/// `ceil(h / factor)` pixels. Returns the image and the reduction it has: `factor`, or 1 when
/// the file is not a JPEG `jpeg-decoder` can reduce (then decoded in full).
pub fn decode_reduced(bytes: &[u8], factor: usize) -> Result<(Image, usize), String> {
    if factor > 1 && is_jpeg(bytes) {
        if let Some(img) = jpeg_reduced(bytes, factor) {
            return Ok((img, factor));
        }
    }
    Ok((decode(bytes)?, 1))
}

/// `jpeg-decoder` at 1/`factor`, as RGB; `None` when it fails, would not give exactly
/// `ceil(w / factor)` × `ceil(h / factor)`, or the pixels are 16-bit.
fn jpeg_reduced(bytes: &[u8], factor: usize) -> Option<Image> {
    let mut d = jpeg_decoder::Decoder::new(bytes);
    d.read_info().ok()?;
    let info = d.info()?;
    let want = |n: u16| n.div_ceil(factor as u16);
    let (w, h) = (want(info.width), want(info.height));
    if d.scale(w, h).ok()? != (w, h) {
        return None;
    }
    let raw = d.decode().ok()?;
    let n = w as usize * h as usize;
    let pixels = match d.info()?.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => raw,
        jpeg_decoder::PixelFormat::L8 => raw.iter().flat_map(|&v| [v, v, v]).collect(),
        jpeg_decoder::PixelFormat::CMYK32 => cmyk_to_rgb(&raw),
        jpeg_decoder::PixelFormat::L16 => return None,
    };
    (pixels.len() == 3 * n).then_some(Image {
        width: w as usize,
        height: h as usize,
        pixels,
    })
}

/// `jpeg-decoder`'s CMYK (ink amounts) to RGB: `(255 - c)(255 - k) / 255`, as the `image`
/// crate did with it.
fn cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    cmyk.chunks_exact(4)
        .flat_map(|p| {
            let k = 255 - p[3] as u16;
            [0, 1, 2].map(|c| ((255 - p[c] as u16) * k / 255) as u8)
        })
        .collect()
}

/// The largest factor in {1, 2, 4, 8} such that both crop sides divided by it stay at least
/// `out_size`: the DCT reduction a crop resized to `out_size`² allows.
pub fn reduction(crop_w: usize, crop_h: usize, out_size: usize) -> usize {
    reduction_xy(crop_w as f32, crop_h as f32, out_size, out_size)
}

/// [`reduction`] for a `w`×`h` source region resized to `out_w`×`out_h`.
pub fn reduction_xy(w: f32, h: f32, out_w: usize, out_h: usize) -> usize {
    [8, 4, 2]
        .into_iter()
        .find(|&f| w >= (f * out_w) as f32 && h >= (f * out_h) as f32)
        .unwrap_or(1)
}

/// One encoded image and its decodes, at most one per reduction: a sample's views share the
/// decode when they ask for the same reduction.
pub struct Encoded<'a> {
    bytes: &'a [u8],
    dct: bool,
    dims: Option<(usize, usize)>,
    decoded: [Option<Image>; 4],
    /// A reduced decode failed once (not a JPEG, or one `jpeg-decoder` cannot reduce).
    full_only: bool,
}

impl<'a> Encoded<'a> {
    /// Wrap `bytes`; with `dct` off every request is served by one full decode.
    pub fn new(bytes: &'a [u8], dct: bool) -> Self {
        Self {
            bytes,
            dct,
            dims: None,
            decoded: Default::default(),
            full_only: !dct,
        }
    }

    /// Width and height: from the header with DCT scaling on, else from the full decode
    /// (whose pixels the views will read).
    pub fn dims(&mut self) -> Result<(usize, usize), String> {
        if let Some(d) = self.dims {
            return Ok(d);
        }
        let d = if self.dct {
            dimensions(self.bytes)?
        } else {
            let img = self.at(1)?.0;
            (img.width, img.height)
        };
        self.dims = Some(d);
        Ok(d)
    }

    /// The image decoded at 1/`factor` (1 when DCT scaling is off) and the reduction it has.
    pub fn at(&mut self, factor: usize) -> Result<(&Image, usize), String> {
        let mut factor = if self.full_only { 1 } else { factor };
        let mut slot = factor.trailing_zeros().min(3) as usize;
        if self.decoded[slot].is_none() {
            let (img, got) = decode_reduced(self.bytes, factor)?;
            if got != factor {
                self.full_only = true;
                (factor, slot) = (1, 0);
            }
            self.decoded[slot] = Some(img);
        }
        Ok((self.decoded[slot].as_ref().expect("decoded above"), factor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32, gray: bool) -> Vec<u8> {
        let mut buf = Vec::new();
        let rgb = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 3) as u8, (y * 5) as u8, 90]));
        let dynimg = if gray {
            image::DynamicImage::ImageLuma8(image::DynamicImage::ImageRgb8(rgb).to_luma8())
        } else {
            image::DynamicImage::ImageRgb8(rgb)
        };
        dynimg.write_to(&mut Cursor::new(&mut buf), image::ImageFormat::Jpeg).unwrap();
        buf
    }

    #[test]
    fn reduction_is_the_largest_keeping_both_sides() {
        assert_eq!(reduction(500, 375, 224), 1);
        assert_eq!(reduction(500, 448, 224), 2);
        assert_eq!(reduction(900, 900, 112), 8);
        assert_eq!(reduction(900, 447, 112), 2);
        assert_eq!(reduction(20, 20, 32), 1);
    }

    #[test]
    fn header_dims_and_reduced_decodes_of_rgb_and_gray() {
        for gray in [false, true] {
            let bytes = jpeg(83, 50, gray);
            assert_eq!(dimensions(&bytes).unwrap(), (83, 50));
            let full = decode(&bytes).unwrap();
            assert_eq!((full.width, full.height, full.pixels.len()), (83, 50, 83 * 50 * 3));
            for f in [2, 4, 8] {
                let (img, got) = decode_reduced(&bytes, f).unwrap();
                assert_eq!((img.width, img.height, got), (83usize.div_ceil(f), 50usize.div_ceil(f), f));
                // The reduced decode is close to the mean of the full pixels it covers.
                let (x, y) = (3, 2);
                let avg = |c: usize| {
                    let px = (y * f..(y + 1) * f).flat_map(|yy| (x * f..(x + 1) * f).map(move |xx| (yy, xx)));
                    px.map(|(yy, xx)| full.pixels[(yy * 83 + xx) * 3 + c] as f32).sum::<f32>() / (f * f) as f32
                };
                let got_px = &img.pixels[(y * img.width + x) * 3..(y * img.width + x) * 3 + 3];
                for (c, &v) in got_px.iter().enumerate() {
                    assert!((v as f32 - avg(c)).abs() < 12.0, "f={f} c={c}: {v} vs {}", avg(c));
                }
            }
        }
    }

    #[test]
    fn png_reduces_to_a_full_decode_and_encoded_reuses_decodes() {
        let mut buf = Vec::new();
        image::RgbImage::from_pixel(40, 30, image::Rgb([1, 2, 3]))
            .write_to(&mut Cursor::new(&mut buf), image::ImageFormat::Png)
            .unwrap();
        let (img, got) = decode_reduced(&buf, 4).unwrap();
        assert_eq!((img.width, got), (40, 1));
        let bytes = jpeg(64, 64, false);
        let mut e = Encoded::new(&bytes, true);
        assert_eq!(e.dims().unwrap(), (64, 64));
        assert_eq!(e.at(4).unwrap().0.width, 16);
        assert!(e.decoded[2].is_some() && e.decoded[0].is_none());
        let mut off = Encoded::new(&bytes, false);
        assert_eq!(off.at(4).unwrap().1, 1);
        assert_eq!(off.dims().unwrap(), (64, 64));
        assert!(off.decoded[1..].iter().all(Option::is_none));
    }

    #[test]
    fn cmyk_converts_like_the_image_crate() {
        assert_eq!(cmyk_to_rgb(&[0, 255, 0, 0, 0, 0, 0, 255]), vec![255, 0, 255, 0, 0, 0]);
    }
}

//! The POSIX ustar subset a WebDataset shard needs: regular-file members, each a 512-byte header
//! (name, octal size, checksum) and its data padded to 512 bytes, and two zero blocks at the
//! end. Written here rather than with the `tar` crate, which is only built with the `hub`
//! feature.

use std::io::{self, Write};

/// Bytes per tar block.
pub const BLOCK: u64 = 512;

/// Bytes of a member's data once padded to whole blocks.
pub fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK) * BLOCK
}

/// Write `value` as zero-padded octal filling `field` but its last byte (a NUL).
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
}

/// The ustar header of a regular file `name` (at most 100 ASCII bytes) of `size` bytes, with
/// mode 0644, owner 0 and mtime 0 (a pack is the same bytes whenever it is made).
pub fn header(name: &str, size: u64) -> io::Result<[u8; 512]> {
    if name.len() > 100 || !name.is_ascii() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("tar member name {name:?} is not ASCII of at most 100 bytes"),
        ));
    }
    if size >= 1 << 33 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("tar member {name:?} of {size} bytes exceeds ustar's 8 GiB"),
        ));
    }
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 0);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // The checksum is the byte sum of the header with its own field read as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    let text = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(text.as_bytes());
    Ok(h)
}

/// A tar stream being written: counts bytes so each member's data offset is known.
pub struct TarWriter<W: Write> {
    out: W,
    pos: u64,
}

impl<W: Write> TarWriter<W> {
    /// A writer at offset 0 of `out`.
    pub fn new(out: W) -> Self {
        Self { out, pos: 0 }
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Append member `name` holding `data`; returns the offset of its data.
    pub fn append(&mut self, name: &str, data: &[u8]) -> io::Result<u64> {
        self.out.write_all(&header(name, data.len() as u64)?)?;
        let offset = self.pos + BLOCK;
        self.out.write_all(data)?;
        let pad = padded(data.len() as u64) - data.len() as u64;
        self.out.write_all(&[0u8; 512][..pad as usize])?;
        self.pos = offset + padded(data.len() as u64);
        Ok(offset)
    }

    /// Write the two zero blocks that end the archive; returns the stream and its length.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        self.out.write_all(&[0u8; 1024])?;
        self.pos += 2 * BLOCK;
        Ok((self.out, self.pos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_block_aligned_with_a_valid_checksum_and_two_zero_blocks() {
        let mut w = TarWriter::new(Vec::new());
        assert_eq!(w.append("000000001.jpg", &[7u8; 700]).unwrap(), 512);
        assert_eq!(w.append("000000001.cls", b"3").unwrap(), 512 + 1024 + 512);
        let (bytes, len) = w.finish().unwrap();
        assert_eq!((bytes.len() as u64, len), (512 + 1024 + 512 + 512 + 1024, 3584));
        let h = &bytes[..512];
        assert_eq!(&h[..13], b"000000001.jpg");
        assert_eq!(&h[124..136], b"00000001274\0", "700 in octal");
        assert_eq!(&h[257..263], b"ustar\0");
        let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        let mut blank = h.to_vec();
        blank[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, blank.iter().map(|&b| b as u32).sum::<u32>());
        assert_eq!(&bytes[1536 + 512..1536 + 513], b"3");
        assert!(bytes[bytes.len() - 1024..].iter().all(|&b| b == 0));
        assert!(header(&"x".repeat(101), 1).is_err());
    }
}

//! The one place request bodies are decompressed. Every caller passes a cap, and the output
//! never grows past it: a 10 KiB gzip bomb cannot make weir allocate gigabytes.
use std::io::Read;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecompressError {
    #[error("decompressed body exceeds the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("invalid gzip data: {0}")]
    Invalid(String),
    #[error("invalid zstd data: {0}")]
    InvalidZstd(String),
    #[error("invalid zlib data: {0}")]
    InvalidZlib(String),
    #[error("invalid snappy data: {0}")]
    InvalidSnappy(String),
    #[error("invalid lz4 data: {0}")]
    InvalidLz4(String),
}

/// Inflates zlib-wrapped deflate (HTTP's `deflate` and `zlib` encodings, read as the Collector
/// reads them), failing as soon as the output would pass `limit` bytes.
pub fn unzlib_capped(input: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    let decoder = flate2::read::ZlibDecoder::new(input);
    let mut limited = decoder.take(limit as u64 + 1);
    let mut out = Vec::with_capacity((input.len() * 4).min(limit).min(1 << 20));
    limited
        .read_to_end(&mut out)
        .map_err(|e| DecompressError::InvalidZlib(e.to_string()))?;
    if out.len() > limit {
        return Err(DecompressError::TooLarge { limit });
    }
    Ok(out)
}

/// Decompresses a snappy block; its declared length is checked against `limit` before any
/// allocation.
pub fn unsnappy_capped(input: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    let n = snap::raw::decompress_len(input)
        .map_err(|e| DecompressError::InvalidSnappy(e.to_string()))?;
    if n > limit {
        return Err(DecompressError::TooLarge { limit });
    }
    snap::raw::Decoder::new()
        .decompress_vec(input)
        .map_err(|e| DecompressError::InvalidSnappy(e.to_string()))
}

/// Decodes an LZ4 frame (HTTP's `lz4` encoding, as the Collector reads it), failing as soon
/// as the output would pass `limit` bytes.
pub fn unlz4_capped(input: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    let decoder = lz4_flex::frame::FrameDecoder::new(input);
    let mut limited = decoder.take(limit as u64 + 1);
    let mut out = Vec::with_capacity((input.len() * 4).min(limit).min(1 << 20));
    limited
        .read_to_end(&mut out)
        .map_err(|e| DecompressError::InvalidLz4(e.to_string()))?;
    if out.len() > limit {
        return Err(DecompressError::TooLarge { limit });
    }
    Ok(out)
}

/// Gunzips `input`, failing as soon as the output would pass `limit` bytes.
pub fn gunzip_capped(input: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    let decoder = flate2::read::MultiGzDecoder::new(input);
    // Read one byte past the limit to tell "exactly at the limit" from "over it".
    let mut limited = decoder.take(limit as u64 + 1);
    // Start from a modest guess; growth is bounded by the cap.
    let mut out = Vec::with_capacity((input.len() * 4).min(limit).min(1 << 20));
    limited
        .read_to_end(&mut out)
        .map_err(|e| DecompressError::Invalid(e.to_string()))?;
    if out.len() > limit {
        return Err(DecompressError::TooLarge { limit });
    }
    Ok(out)
}

/// Un-zstds `input`, failing as soon as the output would pass `limit` bytes.
pub fn unzstd_capped(input: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    let decoder = zstd::stream::read::Decoder::new(input)
        .map_err(|e| DecompressError::InvalidZstd(e.to_string()))?;
    let mut limited = decoder.take(limit as u64 + 1);
    let mut out = Vec::with_capacity((input.len() * 4).min(limit).min(1 << 20));
    limited
        .read_to_end(&mut out)
        .map_err(|e| DecompressError::InvalidZstd(e.to_string()))?;
    if out.len() > limit {
        return Err(DecompressError::TooLarge { limit });
    }
    Ok(out)
}

/// Zstd-compresses `input` at level 1 (fast; the ratio is already better than gzip's).
pub fn zstd(input: &[u8]) -> Vec<u8> {
    zstd_level(input, 1)
}

/// Zstd at `level` (1–22; 0 means 1).
pub fn zstd_level(input: &[u8], level: i32) -> Vec<u8> {
    zstd::bulk::compress(input, if level == 0 { 1 } else { level }).unwrap_or_default()
}

/// gzip at `level`: 1 (and 0, unset) is fastest (weir's default, as the Collector's), 9
/// smallest; -1 is zlib's default (6).
pub fn gzip_level(input: &[u8], level: i32) -> Vec<u8> {
    use std::io::Write;
    let level = match level {
        -1 => flate2::Compression::default(),
        l => flate2::Compression::new(l.clamp(1, 9) as u32),
    };
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(input.len() / 4 + 64), level);
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(input);
    enc.finish().unwrap_or_default()
}

/// Gzips `input` at the fastest level (weir's default, as the Collector's).
pub fn gzip(input: &[u8]) -> Vec<u8> {
    gzip_level(input, 1)
}

#[cfg(test)]
mod zlib_snappy_tests {
    use super::*;
    use std::io::Write;

    /// `compression_params.level`: every level round-trips; higher gzip levels are smaller.
    #[test]
    fn levels_round_trip_and_trade_speed_for_size() {
        let data: Vec<u8> = (0..200_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 997) as u8)
            .collect();
        let mut sizes = Vec::new();
        for level in [-1, 0, 1, 5, 9] {
            let gz = gzip_level(&data, level);
            assert_eq!(
                gunzip_capped(&gz, data.len()).as_deref(),
                Ok(&data[..]),
                "{level}"
            );
            sizes.push((level, gz.len()));
        }
        assert!(
            sizes[4].1 < sizes[2].1,
            "level 9 smaller than level 1: {sizes:?}"
        );
        assert_eq!(sizes[1].1, sizes[2].1, "0 (unset) is level 1");
        for level in [0, 1, 3, 19] {
            let z = zstd_level(&data, level);
            assert_eq!(
                unzstd_capped(&z, data.len()).as_deref(),
                Ok(&data[..]),
                "{level}"
            );
        }
    }

    #[test]
    fn lz4_frames_decode_and_are_capped() {
        let data = vec![9u8; 10_000];
        let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
        enc.write_all(&data).expect("write");
        let lz = enc.finish().expect("finish");
        assert_eq!(unlz4_capped(&lz, 10_000).as_deref(), Ok(&data[..]));
        assert_eq!(
            unlz4_capped(&lz, 9_999),
            Err(DecompressError::TooLarge { limit: 9_999 })
        );
        assert!(matches!(
            unlz4_capped(b"not lz4 at all", 100),
            Err(DecompressError::InvalidLz4(_))
        ));
    }

    #[test]
    fn zlib_and_snappy_round_trip_and_are_capped() {
        let data = vec![7u8; 10_000];
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&data).expect("write");
        let zb = z.finish().expect("finish");
        assert_eq!(unzlib_capped(&zb, 10_000).as_deref(), Ok(&data[..]));
        assert_eq!(
            unzlib_capped(&zb, 9_999),
            Err(DecompressError::TooLarge { limit: 9_999 })
        );
        assert!(matches!(
            unzlib_capped(b"not zlib", 100),
            Err(DecompressError::InvalidZlib(_))
        ));
        let sb = snap::raw::Encoder::new()
            .compress_vec(&data)
            .expect("snappy");
        assert_eq!(unsnappy_capped(&sb, 10_000).as_deref(), Ok(&data[..]));
        assert_eq!(
            unsnappy_capped(&sb, 9_999),
            Err(DecompressError::TooLarge { limit: 9_999 })
        );
        // A block that claims 4 GiB is refused before allocating.
        assert_eq!(
            unsnappy_capped(&[0xff, 0xff, 0xff, 0xff, 0x0f], 1 << 20),
            Err(DecompressError::TooLarge { limit: 1 << 20 })
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zstd_round_trips_and_caps_bombs() {
        let data = vec![b'x'; 100_000];
        let z = zstd(&data);
        assert!(z.len() < 1000);
        assert_eq!(unzstd_capped(&z, 100_000), Ok(data));
        assert_eq!(
            unzstd_capped(&z, 99_999),
            Err(DecompressError::TooLarge { limit: 99_999 })
        );
        assert!(matches!(
            unzstd_capped(b"not zstd", 10),
            Err(DecompressError::InvalidZstd(_))
        ));
    }

    #[test]
    fn round_trip_and_caps() {
        let data = vec![b'a'; 100_000];
        let z = gzip(&data);
        assert!(z.len() < 1000);
        assert_eq!(gunzip_capped(&z, 100_000).as_deref(), Ok(&data[..]));
        assert_eq!(
            gunzip_capped(&z, 99_999),
            Err(DecompressError::TooLarge { limit: 99_999 })
        );
        assert!(matches!(
            gunzip_capped(b"not gzip", 10),
            Err(DecompressError::Invalid(_))
        ));
    }
}

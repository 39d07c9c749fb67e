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

/// A job for the compression threads.
type Job = Box<dyn FnOnce() + Send>;

/// The compression threads: as many as the machine has cores, started on first use, each
/// keeping its codec contexts. Large bodies are compressed here so a runtime worker that
/// serves connections is never held for milliseconds.
fn pool() -> Option<&'static crossbeam_channel::Sender<Job>> {
    static POOL: std::sync::OnceLock<Option<crossbeam_channel::Sender<Job>>> =
        std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        for i in 0..n {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("weir-compress-{i}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        job();
                    }
                })
                .ok()?;
        }
        Some(tx)
    })
    .as_ref()
}

/// Bodies at least this large are compressed on the compression threads: 256 KiB takes
/// about half a millisecond to gzip at level 1.
pub const OFFLOAD_AT: usize = 256 << 10;

/// Runs `f` (CPU-bound work on `len` bytes) on the compression threads when `len` is
/// large enough to hold up a runtime worker, else here.
pub async fn offload<T: Send + 'static>(len: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
    if len < OFFLOAD_AT {
        return f();
    }
    on_pool(f).await
}

/// Runs `f` on the compression threads (here, if they could not be started).
pub async fn on_pool<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let Some(pool) = pool() else { return f() };
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A panic in `f` is carried back and resumed here, as if `f` had run here; the thread
    // lives on.
    let job: Job = Box::new(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    // With the threads gone (they never stop), the job runs here.
    if let Err(crossbeam_channel::SendError(job)) = pool.send(job) {
        job();
    }
    match rx.await {
        Ok(Ok(v)) => v,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("a compression job was dropped unrun"),
    }
}

/// Compressed bodies at least this large are inflated on the compression threads: 64 KiB of
/// gzip inflates to half a megabyte or more, about half a millisecond.
pub const INFLATE_OFFLOAD_AT: usize = 64 << 10;

/// Inflates a request body of content coding `coding` (`gzip`, `zstd`, `snappy` (one block),
/// `snappy-framed`, `lz4`, and `zlib`/`deflate`, both zlib-wrapped as the Collector reads
/// them), capped at `limit`; large bodies on the compression threads.
pub async fn inflate(
    coding: &'static str,
    body: bytes::Bytes,
    limit: usize,
) -> Result<Vec<u8>, DecompressError> {
    let big = body.len() >= INFLATE_OFFLOAD_AT;
    let run = move || match coding {
        "gzip" => gunzip_capped(&body, limit),
        "zstd" => unzstd_capped(&body, limit),
        "snappy" => unsnappy_capped(&body, limit),
        "snappy-framed" => unsnappy_framed_capped(&body, limit),
        "lz4" => unlz4_capped(&body, limit),
        _ => unzlib_capped(&body, limit),
    };
    if big {
        on_pool(run).await
    } else {
        run()
    }
}

/// Reads `decoder` to its end into a buffer of `capacity` to start with, failing as soon as
/// the output would pass `limit` bytes (one byte past it is read to tell "exactly at the
/// limit" from "over it"); `invalid` names a decoding error.
fn read_capped(
    decoder: impl Read,
    limit: usize,
    capacity: usize,
    invalid: fn(String) -> DecompressError,
) -> Result<Vec<u8>, DecompressError> {
    let mut limited = decoder.take(limit as u64 + 1);
    let mut out = Vec::with_capacity(capacity);
    limited
        .read_to_end(&mut out)
        .map_err(|e| invalid(e.to_string()))?;
    if out.len() > limit {
        return Err(DecompressError::TooLarge { limit });
    }
    Ok(out)
}

/// A first guess at the output size of `input`: growth after it is bounded by the cap.
fn guess(input: &[u8], limit: usize) -> usize {
    (input.len() * 4).min(limit).min(1 << 20)
}

/// One snappy block of `body` (remote write's and Loki's `Content-Encoding: snappy`), on the
/// compression threads when `body` is large.
pub async fn snappy_block(body: Vec<u8>) -> Result<Vec<u8>, String> {
    offload(body.len(), move || {
        snap::raw::Encoder::new()
            .compress_vec(&body)
            .map_err(|e| format!("snappy: {e}"))
    })
    .await
}

/// gzip of `body` at the fastest level, on the compression threads when `body` is large.
pub async fn gzip_owned(body: Vec<u8>) -> Vec<u8> {
    offload(body.len(), move || gzip(&body)).await
}

/// Inflates zlib-wrapped deflate (HTTP's `deflate` and `zlib` encodings, read as the Collector
/// reads them), failing as soon as the output would pass `limit` bytes.
pub fn unzlib_capped(input: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    read_capped(
        flate2::read::ZlibDecoder::new(input),
        limit,
        guess(input, limit),
        DecompressError::InvalidZlib,
    )
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

/// Decodes snappy's framing format (what gRPC's `snappy` encoding carries: the Collector's
/// and grpc-go's snappy compressors write it), failing as soon as the output would pass
/// `limit` bytes. Chunk checksums are verified.
pub fn unsnappy_framed_capped(input: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    read_capped(
        snap::read::FrameDecoder::new(input),
        limit,
        guess(input, limit),
        DecompressError::InvalidSnappy,
    )
}

/// Snappy in its framing format (gRPC's `snappy` encoding).
pub fn snappy_framed(input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = snap::write::FrameEncoder::new(Vec::with_capacity(input.len() / 2 + 64));
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(input);
    enc.into_inner().unwrap_or_default()
}

/// Decodes an LZ4 frame (HTTP's `lz4` encoding, as the Collector reads it), failing as soon
/// as the output would pass `limit` bytes.
pub fn unlz4_capped(input: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    read_capped(
        lz4_flex::frame::FrameDecoder::new(input),
        limit,
        guess(input, limit),
        DecompressError::InvalidLz4,
    )
}

/// Deflate cannot expand more than 1032:1, so a gzip trailer that claims more than this for
/// its input is a lie and is not used to size a buffer.
const DEFLATE_MAX_RATIO: usize = 1032;

/// The output size a gzip body declares in its trailer (ISIZE, the last member's size modulo
/// 2^32), when it is one a body of this size can produce and within `limit`: used to
/// allocate the output once. Only a hint (a body may hold several members); the cap is
/// still enforced on what inflating produces.
fn gzip_declared_size(input: &[u8], limit: usize) -> Option<usize> {
    if input.len() < 18 {
        return None;
    }
    let t = input.len() - 4;
    let isize = u32::from_le_bytes([input[t], input[t + 1], input[t + 2], input[t + 3]]) as usize;
    (isize <= limit && isize <= input.len().saturating_mul(DEFLATE_MAX_RATIO)).then_some(isize)
}

/// Gunzips `input`, failing as soon as the output would pass `limit` bytes. The output is
/// allocated once at the size the trailer declares (when it is plausible).
pub fn gunzip_capped(input: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    // The declared size (+1 so reaching the end needs no growth), else a modest guess.
    let capacity = match gzip_declared_size(input, limit) {
        Some(n) => n + 1,
        None => guess(input, limit),
    };
    read_capped(
        flate2::bufread::MultiGzDecoder::new(input),
        limit,
        capacity,
        DecompressError::Invalid,
    )
}

thread_local! {
    /// One zstd decompression context per thread, reused: creating one per request cost
    /// more than decompressing a small request.
    static ZSTD_D: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
    /// One zstd compression context per thread and level.
    static ZSTD_C: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    /// One deflate state per thread and level, reset between uses.
    static DEFLATE: std::cell::RefCell<Option<(u32, flate2::Compress)>> =
        const { std::cell::RefCell::new(None) };
}

/// Un-zstds `input`, failing as soon as the output would pass `limit` bytes. A frame that
/// declares its size (zstd writes it whenever it knows it) is decompressed in one call into
/// a buffer of that size, with this thread's reused context; others are streamed.
pub fn unzstd_capped(input: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    if let Ok(Some(n)) = zstd::zstd_safe::get_frame_content_size(input) {
        if n > limit as u64 {
            // The first frame alone declares more than the cap: refused before allocating.
            return Err(DecompressError::TooLarge { limit });
        }
        let whole = ZSTD_D.with(|d| {
            let mut d = d.borrow_mut();
            if d.is_none() {
                *d = zstd::bulk::Decompressor::new().ok();
            }
            d.as_mut().map(|d| d.decompress(input, n as usize))
        });
        // Exactly the declared size: one frame, whole. Otherwise (concatenated frames, a
        // frame that disagrees with its header) the stream decoder below decodes within the
        // cap or says what is wrong.
        if let Some(Ok(v)) = whole {
            if v.len() as u64 == n {
                return Ok(v);
            }
        }
    }
    let decoder = zstd::stream::read::Decoder::new(input)
        .map_err(|e| DecompressError::InvalidZstd(e.to_string()))?;
    read_capped(
        decoder,
        limit,
        guess(input, limit),
        DecompressError::InvalidZstd,
    )
}

/// Zstd-compresses `input` at level 1 (fast; the ratio is already better than gzip's).
pub fn zstd(input: &[u8]) -> Vec<u8> {
    zstd_level(input, 1)
}

/// Zstd at `level` (1–22; 0 means 1), with this thread's reused context.
pub fn zstd_level(input: &[u8], level: i32) -> Vec<u8> {
    let level = if level == 0 { 1 } else { level };
    let reused = ZSTD_C.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            *c = zstd::bulk::Compressor::new(level).ok().map(|z| (level, z));
        }
        c.as_mut().map(|(_, z)| z.compress(input))
    });
    match reused {
        Some(Ok(v)) => v,
        _ => zstd::bulk::compress(input, level).unwrap_or_default(),
    }
}

/// gzip at `level`: 1 (and 0, unset) is fastest (weir's default, as the Collector's), 9
/// smallest; -1 is zlib's default (6). One member: a 10-byte header, raw deflate from this
/// thread's reused state, CRC-32 and size.
pub fn gzip_level(input: &[u8], level: i32) -> Vec<u8> {
    let level = match level {
        -1 => flate2::Compression::default().level(),
        l => l.clamp(1, 9) as u32,
    };
    let mut out = Vec::with_capacity(input.len() / 4 + 64);
    // ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL OS=unknown
    let xfl = match level {
        1 => 4,
        9 => 2,
        _ => 0,
    };
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255]);
    DEFLATE.with(|d| {
        let mut d = d.borrow_mut();
        match d.as_mut() {
            Some((l, c)) if *l == level => c.reset(),
            _ => {
                *d = Some((
                    level,
                    flate2::Compress::new(flate2::Compression::new(level), false),
                ))
            }
        }
        if let Some((_, c)) = d.as_mut() {
            deflate_all(c, input, &mut out);
        }
    });
    let mut crc = flate2::Crc::new();
    crc.update(input);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(input.len() as u32).to_le_bytes());
    out
}

/// Raw-deflates all of `input` onto `out`, finishing the stream.
fn deflate_all(c: &mut flate2::Compress, input: &[u8], out: &mut Vec<u8>) {
    let start_in = c.total_in();
    loop {
        let consumed = (c.total_in() - start_in) as usize;
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(1024));
        }
        match c.compress_vec(&input[consumed..], out, flate2::FlushCompress::Finish) {
            Ok(flate2::Status::StreamEnd) => return,
            Ok(_) => {}
            // Compressing into a Vec cannot fail short of a bug; the truncated stream
            // that results would be refused by the receiver, never misread.
            Err(_) => return,
        }
    }
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

    /// gRPC's snappy: the framing format round-trips, is capped, and garbage is an error.
    #[test]
    fn snappy_framing_round_trips_and_is_capped() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 97) as u8).collect();
        let f = snappy_framed(&data);
        assert_eq!(
            &f[..10],
            b"\xff\x06\x00\x00sNaPpY",
            "stream identifier first"
        );
        assert_eq!(
            unsnappy_framed_capped(&f, data.len()).as_deref(),
            Ok(&data[..])
        );
        assert_eq!(
            unsnappy_framed_capped(&f, data.len() - 1),
            Err(DecompressError::TooLarge {
                limit: data.len() - 1
            })
        );
        // A raw block is not the framing format.
        let block = snap::raw::Encoder::new()
            .compress_vec(&data)
            .expect("block");
        assert!(matches!(
            unsnappy_framed_capped(&block, 1 << 20),
            Err(DecompressError::InvalidSnappy(_))
        ));
        // A flipped byte fails the chunk's checksum.
        let mut bad = f.clone();
        let n = bad.len();
        bad[n - 3] ^= 0x55;
        assert!(unsnappy_framed_capped(&bad, 1 << 20).is_err());
    }

    /// The gzip trailer sizes the output, but a lying one changes nothing but the guess:
    /// output is still exact, capped, and a huge claim is not allocated.
    #[test]
    fn gzip_declared_size_is_a_hint_only() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 13) as u8).collect();
        let gz = gzip(&data);
        assert_eq!(gzip_declared_size(&gz, 1 << 20), Some(data.len()));
        assert_eq!(gzip_declared_size(&gz, 1000), None, "over the cap: no hint");
        // Claims 4 GiB - 1: more than deflate can expand this body to, so no hint.
        let mut lie = gz.clone();
        let n = lie.len();
        lie[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(gzip_declared_size(&lie, usize::MAX), None);
        // Inflating checks ISIZE: a lying trailer is an error, not wrong data.
        assert!(matches!(
            gunzip_capped(&lie, 1 << 20),
            Err(DecompressError::Invalid(_))
        ));
        // Claims less than it holds: still capped by the limit, never by the claim.
        let mut small = gz.clone();
        small[n - 4..].copy_from_slice(&10u32.to_le_bytes());
        assert!(gunzip_capped(&small, 1 << 20).is_err());
        // Two members: the trailer names the last one only; both are read.
        let mut two = gzip(b"hello ");
        two.extend_from_slice(&gzip(b"world"));
        assert_eq!(gunzip_capped(&two, 100).as_deref(), Ok(&b"hello world"[..]));
        // Every level reads back with flate2's own decoder too.
        for level in [-1, 1, 6, 9] {
            let gz = gzip_level(&data, level);
            let mut d = flate2::read::GzDecoder::new(&gz[..]);
            let mut out = Vec::new();
            d.read_to_end(&mut out).expect("flate2 reads weir's gzip");
            assert_eq!(out, data, "level {level}");
        }
    }

    /// zstd: one declared frame takes the one-call path; concatenated frames, frames
    /// without a size and frames that lie about it take the stream path or fail cleanly.
    #[test]
    fn zstd_declared_sizes() {
        let a = vec![1u8; 50_000];
        let b = vec![2u8; 30_000];
        let za = zstd(&a);
        assert_eq!(unzstd_capped(&za, 50_000).as_deref(), Ok(&a[..]));
        // The first frame alone declares more than the cap: refused before decoding.
        assert_eq!(
            unzstd_capped(&za, 49_999),
            Err(DecompressError::TooLarge { limit: 49_999 })
        );
        let mut both = za.clone();
        both.extend_from_slice(&zstd(&b));
        let mut ab = a.clone();
        ab.extend_from_slice(&b);
        assert_eq!(unzstd_capped(&both, 80_000).as_deref(), Ok(&ab[..]));
        assert_eq!(
            unzstd_capped(&both, 79_999),
            Err(DecompressError::TooLarge { limit: 79_999 })
        );
        // A frame written by a streaming encoder carries no size.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).expect("encoder");
        std::io::Write::write_all(&mut enc, &a).expect("write");
        let streamed = enc.finish().expect("finish");
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&streamed)
                .ok()
                .flatten(),
            None
        );
        assert_eq!(unzstd_capped(&streamed, 50_000).as_deref(), Ok(&a[..]));
        // A frame cut short: an error, whichever path.
        assert!(unzstd_capped(&za[..za.len() / 2], 1 << 20).is_err());
        // Levels reuse one context per thread and level; switching levels is fine.
        for level in [1, 3, 1, 19, 1] {
            assert_eq!(
                unzstd_capped(&zstd_level(&a, level), 50_000).as_deref(),
                Ok(&a[..])
            );
        }
    }

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

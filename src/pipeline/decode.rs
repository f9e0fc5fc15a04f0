//! Step 1 of the recipe: encoded bytes → upright 8-bit BGR pixels.
//!
//! - The container is sniffed from magic bytes; the declared dimensions are read from the header
//!   and checked against [`DecodeLimits`] **before** any pixel buffer is allocated (decompression
//!   bombs are refused from a few hundred bytes).
//! - JPEG is decoded with libjpeg-turbo's algorithms (the `mozjpeg` crate builds that code from
//!   bundled sources, no system library): OpenCV decodes with libjpeg-turbo, and the `image`
//!   crate's decoder differs from it by up to 4 grey levels, which moved p_real by up to 0.023 on
//!   the samples. CMYK/YCCK JPEGs, which libjpeg cannot turn into BGR, fall back to `image`.
//! - Every other format goes through the `image` crate with allocation limits.
//! - Conversions follow OpenCV's `imread(IMREAD_COLOR)`: grey is replicated, alpha is dropped (not
//!   composited), 16-bit samples keep their high byte.
//! - The EXIF orientation (JPEG, PNG, WebP, TIFF) is applied, as OpenCV does.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};
use serde::{Deserialize, Serialize};

/// File extensions of the formats [`decode`] reads (lowercase): what `check` and `eval` pick up
/// from a directory.
pub const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"];

/// True when `path` has one of [`IMAGE_EXTENSIONS`] (any case).
pub fn has_image_extension(path: &std::path::Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Limits enforced before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DecodeLimits {
    /// Largest encoded input accepted, in bytes.
    pub max_bytes: usize,
    /// Largest declared `width * height` accepted.
    pub max_pixels: u64,
}

/// Default of [`DecodeLimits::max_bytes`]: the largest image accepted anywhere (the service's
/// `--max-image-bytes`, the fetcher's body cap).
pub const DEFAULT_MAX_IMAGE_BYTES: usize = 10 * 1024 * 1024;
/// Default of [`DecodeLimits::max_pixels`] (`--max-pixels`).
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_bytes: DEFAULT_MAX_IMAGE_BYTES,
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

/// An owned 8-bit BGR image, rows packed (`data.len() == width * height * 3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgrImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl BgrImage {
    /// Wrap a packed BGR buffer; `None` when the length does not match.
    pub fn from_raw(width: u32, height: u32, data: Vec<u8>) -> Option<Self> {
        (data.len() as u64 == u64::from(width) * u64::from(height) * 3).then_some(BgrImage {
            width,
            height,
            data,
        })
    }

    /// A borrowed view of the whole image.
    pub fn view(&self) -> super::resize::ImageView<'_> {
        super::resize::ImageView {
            data: &self.data,
            width: self.width as usize,
            height: self.height as usize,
            stride: self.width as usize * 3,
        }
    }
}

/// Why bytes did not become pixels.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the data is not an image (no known image signature)")]
    NotAnImage,
    #[error("image format {0} is not supported (use JPEG, PNG, WebP, BMP, GIF or TIFF)")]
    Unsupported(String),
    #[error("the image could not be decoded: {0}")]
    Corrupt(String),
    #[error("the image is {width}x{height} pixels, more than the limit of {limit} pixels")]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    #[error("the image is {bytes} bytes, more than the limit of {limit} bytes")]
    TooLarge { bytes: usize, limit: usize },
}

impl DecodeError {
    /// A stable code for this failure: `not_an_image`, `unsupported_format`, `image_corrupt` or
    /// `too_many_pixels` (pixels or bytes over the limits). A decode failure is never a verdict
    /// (`service` module docs).
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::NotAnImage => "not_an_image",
            DecodeError::Unsupported(_) => "unsupported_format",
            DecodeError::Corrupt(_) => "image_corrupt",
            DecodeError::TooManyPixels { .. } | DecodeError::TooLarge { .. } => "too_many_pixels",
        }
    }

    /// A sentence for API clients: what is wrong and what to send instead.
    pub fn client_message(&self) -> String {
        match self {
            DecodeError::NotAnImage => {
                "The image is not a valid image file; send a JPEG, PNG, WebP or BMP photo".into()
            }
            DecodeError::Unsupported(f) => {
                format!("Image format {f} is not supported; send a JPEG, PNG, WebP or BMP photo")
            }
            DecodeError::Corrupt(_) => {
                "The image could not be decoded (truncated or corrupt file); send the complete file"
                    .into()
            }
            DecodeError::TooManyPixels { width, height, limit } => format!(
                "Image too large: {width}x{height} pixels exceeds the limit of {limit} pixels; \
                 send a smaller photo"
            ),
            DecodeError::TooLarge { bytes, limit } => format!(
                "Image too large: {bytes} bytes exceeds the limit of {limit} bytes; send a smaller photo"
            ),
        }
    }
}

extern "C" {
    /// libjpeg-turbo's SIMD dispatch, linked statically through mozjpeg-sys: `simd/*/jsimd.c`
    /// when the library was built with its SIMD code (x86 needs `nasm` at build time),
    /// `jsimd_none.c` (always 0) when not. Takes no arguments and only reads the CPU's features.
    fn jsimd_can_idct_islow() -> std::os::raw::c_int;
}

/// True when JPEG decoding runs libjpeg-turbo's SIMD code here: the library was built with it and
/// this CPU has it. Without it decoding gives the same pixels, 1.5 to 2 times slower.
pub fn jpeg_simd() -> bool {
    // SAFETY: a C function without arguments or shared state beyond a lazily set CPU-feature
    // flag (libjpeg-turbo initialises it on first use, as any decode would).
    unsafe { jsimd_can_idct_islow() != 0 }
}

/// Decode `bytes` to upright BGR under `limits`.
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<BgrImage, DecodeError> {
    decode_observing(bytes, limits, None).map(|(img, _)| img)
}

/// What receives a JPEG's 8x8 luma blocks (quantised DCT coefficients, natural row-major order).
pub type LumaVisitor<'a> = dyn FnMut(&[i16; 64]) + 'a;

/// What [`decode_with_luma`] did with a JPEG's luma coefficients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LumaRead {
    /// Every luma block went to the visitor, as [`jpeg_luma_coefficients`] would have passed
    /// them; the luma quantisation table (what it would have returned).
    Read([u16; 64]),
    /// There are none to read: [`jpeg_luma_coefficients`] would have returned `Ok(None)` (not a
    /// YCbCr or greyscale DCT JPEG, or over [`MAX_COEFFICIENT_PIXELS`]).
    Unreadable,
    /// Not read with the pixels (not a JPEG, or a file [`jpeg_luma_coefficients`] would read
    /// differently: over [`MAX_COEFFICIENT_BYTES`], not sequential or progressive); read them
    /// with [`jpeg_luma_coefficients`] if wanted.
    Separately,
}

/// [`decode`], passing a JPEG's luma blocks to `visit` from the same entropy decode that makes
/// the pixels, instead of a second one in [`jpeg_luma_coefficients`] (about 1 ms for a 75 KB
/// selfie). The pixels are those of [`decode`]; the blocks and table those of
/// [`jpeg_luma_coefficients`], or [`LumaRead`] says why not.
///
/// How: libjpeg's buffered-image mode, in which the decoder keeps every block's coefficients
/// (a progressive decode keeps them anyway; a sequential one costs 128 bytes per block more
/// memory, at most [`MAX_COEFFICIENT_BYTES`] of file), absorbs the whole file, makes the pixels
/// from the final coefficients, and then hands out the coefficient arrays.
pub fn decode_with_luma(
    bytes: &[u8],
    limits: &DecodeLimits,
    visit: &mut LumaVisitor<'_>,
) -> Result<(BgrImage, LumaRead), DecodeError> {
    decode_observing(bytes, limits, Some(visit))
}

fn decode_observing(
    bytes: &[u8],
    limits: &DecodeLimits,
    visit: Option<&mut LumaVisitor<'_>>,
) -> Result<(BgrImage, LumaRead), DecodeError> {
    if bytes.len() > limits.max_bytes {
        return Err(DecodeError::TooLarge {
            bytes: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    let format = image::guess_format(bytes).map_err(|_| DecodeError::NotAnImage)?;
    let supported = matches!(
        format,
        ImageFormat::Jpeg
            | ImageFormat::Png
            | ImageFormat::WebP
            | ImageFormat::Bmp
            | ImageFormat::Gif
            | ImageFormat::Tiff
    );
    if !supported {
        return Err(DecodeError::Unsupported(
            format!("{format:?}").to_uppercase(),
        ));
    }

    // Header only: dimensions and orientation, no pixel allocation yet.
    let reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let (width, height) = decoder.dimensions();
    check_pixels(width, height, limits)?;
    if width == 0 || height == 0 {
        return Err(DecodeError::Corrupt("zero-sized image".into()));
    }
    // A broken EXIF block is not worth refusing the photo over: treat it as "no rotation".
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);

    // The luma blocks come with the pixels only where jpeg_luma_coefficients would read the
    // whole file (the frame kind is looked up only when someone wants the blocks).
    let together = || {
        bytes.len() <= MAX_COEFFICIENT_BYTES
            && matches!(
                sof_kind(bytes),
                Some((Sof::Sequential | Sof::Progressive, _))
            )
    };
    let (upright_raw, luma) = if format == ImageFormat::Jpeg {
        let decoded = match visit {
            Some(visit) if together() => decode_jpeg_buffered(bytes, limits, visit)?,
            _ => decode_jpeg_libjpeg(bytes, limits)?.map(|img| (img, LumaRead::Separately)),
        };
        match decoded {
            Some(decoded) => decoded,
            // CMYK or YCCK: no luma component either.
            None => (decode_with_image(decoder, limits)?, LumaRead::Unreadable),
        }
    } else {
        (decode_with_image(decoder, limits)?, LumaRead::Separately)
    };
    Ok((apply_orientation(upright_raw, exif_code(orientation)), luma))
}

fn corrupt(e: image::ImageError) -> DecodeError {
    match e {
        image::ImageError::Unsupported(u) => DecodeError::Unsupported(u.to_string()),
        image::ImageError::Limits(_) => DecodeError::Corrupt("image exceeds decoder limits".into()),
        other => DecodeError::Corrupt(other.to_string()),
    }
}

fn check_pixels(width: u32, height: u32, limits: &DecodeLimits) -> Result<(), DecodeError> {
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(DecodeError::TooManyPixels {
            width,
            height,
            limit: limits.max_pixels,
        });
    }
    Ok(())
}

/// libjpeg-turbo-compatible JPEG decode straight to BGR. `Ok(None)` means "colour space libjpeg
/// cannot convert to BGR (CMYK/YCCK): use the fallback".
///
/// libjpeg decodes a truncated or damaged file without failing: it warns, fills the missing
/// blocks with grey and carries on (OpenCV's `imread` returns that picture). A liveness verdict on
/// half a face is worthless, so the warnings that mean "pixels are missing or invented" turn the
/// decode into [`DecodeError::Corrupt`] here. Benign warnings (extraneous bytes between segments,
/// trailing data, an odd JFIF version or ICC profile) leave the pixels intact and are ignored.
fn decode_jpeg_libjpeg(
    bytes: &[u8],
    limits: &DecodeLimits,
) -> Result<Option<BgrImage>, DecodeError> {
    jpeg_warnings::reset();
    // libjpeg reports fatal errors by unwinding out of its error handler (the mozjpeg crate's
    // design); catch that here so a hostile file can never take the process down.
    let result = std::panic::catch_unwind(|| -> Result<Option<BgrImage>, DecodeError> {
        let d = mozjpeg::Decompress::with_err(jpeg_warnings::error_mgr())
            .from_mem(bytes)
            .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
        let (w, h) = d.size();
        let (w32, h32) = (
            u32::try_from(w).map_err(|_| DecodeError::Corrupt("width".into()))?,
            u32::try_from(h).map_err(|_| DecodeError::Corrupt("height".into()))?,
        );
        check_pixels(w32, h32, limits)?;
        match d.color_space() {
            mozjpeg::ColorSpace::JCS_CMYK | mozjpeg::ColorSpace::JCS_YCCK => return Ok(None),
            _ => {}
        }
        let mut started = d
            .to_colorspace(mozjpeg::ColorSpace::JCS_EXT_BGR)
            .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
        let data = started
            .read_scanlines::<u8>()
            .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
        // Reads up to EOI: a file cut after its last scan still warns here.
        let _ = started.finish();
        BgrImage::from_raw(w32, h32, data)
            .map(Some)
            .ok_or_else(|| DecodeError::Corrupt("short pixel buffer".into()))
    });
    pixels_or_damage(result)
}

/// The end of a libjpeg pixel decode run under `catch_unwind` (after `jpeg_warnings::reset`): a
/// fatal error (an unwind) or a warning that pixels are missing or invented is
/// [`DecodeError::Corrupt`].
fn pixels_or_damage<T>(
    result: std::thread::Result<Result<Option<T>, DecodeError>>,
) -> Result<Option<T>, DecodeError> {
    let damage = jpeg_warnings::take_damage();
    let decoded = match result {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "libjpeg error".into());
            Err(DecodeError::Corrupt(msg))
        }
    }?;
    match damage {
        Some(what) if decoded.is_some() => Err(DecodeError::Corrupt(what.to_owned())),
        _ => Ok(decoded),
    }
}

use mozjpeg_sys as sys;

/// `consume_input`'s answer once the whole file is in (jpeglib.h's `JPEG_REACHED_EOI`).
const JPEG_REACHED_EOI: std::os::raw::c_int = 2;
/// `consume_input`'s answer when the source has no more data (`JPEG_SUSPENDED`; a memory source
/// never suspends, it inserts an EOI with a warning).
const JPEG_SUSPENDED: std::os::raw::c_int = 0;

/// [`decode_jpeg_libjpeg`] in libjpeg's buffered-image mode, with the luma blocks passed to
/// `visit` (see [`decode_with_luma`]). The same settings as the `mozjpeg` crate's decode (the
/// library's defaults: islow IDCT, fancy upsampling, block smoothing where a scan is missing)
/// and the same handling of damage.
fn decode_jpeg_buffered(
    bytes: &[u8],
    limits: &DecodeLimits,
    visit: &mut LumaVisitor<'_>,
) -> Result<Option<(BgrImage, LumaRead)>, DecodeError> {
    jpeg_warnings::reset();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(
        || -> Result<Option<(BgrImage, LumaRead)>, DecodeError> {
            let mut r = JpegReader::new(bytes)?;
            let cinfo = &mut *r.cinfo;
            let (w, h) = (cinfo.image_width, cinfo.image_height);
            check_pixels(w, h, limits)?;
            let luma = match cinfo.jpeg_color_space {
                sys::JCS_CMYK | sys::JCS_YCCK => return Ok(None),
                sys::JCS_YCbCr | sys::JCS_GRAYSCALE => {
                    u64::from(w) * u64::from(h) <= MAX_COEFFICIENT_PIXELS
                }
                _ => false,
            };
            cinfo.out_color_space = sys::JCS_EXT_BGR;
            cinfo.buffered_image = sys::boolean::from(luma);
            // SAFETY: header read, output colour space set; errors unwind.
            unsafe { sys::jpeg_start_decompress(cinfo) };
            if luma {
                // Absorb the whole file, then make the pixels from its final coefficients.
                loop {
                    // SAFETY: a started buffered-image decompression.
                    match unsafe { sys::jpeg_consume_input(cinfo) } {
                        JPEG_REACHED_EOI => break,
                        JPEG_SUSPENDED => return Err(DecodeError::Corrupt("no EOI".into())),
                        _ => {}
                    }
                }
                let scan = cinfo.input_scan_number;
                // SAFETY: all input consumed; the last scan's output pass.
                unsafe { sys::jpeg_start_output(cinfo, scan) };
            }
            let (ow, oh) = (cinfo.output_width as usize, cinfo.output_height as usize);
            if (ow, oh) != (w as usize, h as usize) || cinfo.output_components != 3 {
                return Err(DecodeError::Corrupt("unexpected output size".into()));
            }
            let stride = ow * 3;
            let mut data: Vec<u8> = Vec::new();
            data.try_reserve_exact(stride * oh)
                .map_err(|_| DecodeError::Corrupt("out of memory for pixels".into()))?;
            let base = data.as_mut_ptr();
            // SAFETY: each pointer is the start of one of `oh` rows of `stride` bytes inside the
            // reserved capacity.
            let mut rows: Vec<*mut u8> = (0..oh).map(|y| unsafe { base.add(y * stride) }).collect();
            while (cinfo.output_scanline as usize) < oh {
                let at = cinfo.output_scanline as usize;
                // SAFETY: rows[at..] are `oh - at` row pointers of `stride` writable bytes;
                // libjpeg writes at most that many rows and returns how many it wrote.
                let n = unsafe {
                    sys::jpeg_read_scanlines(
                        cinfo,
                        rows.as_mut_ptr().add(at).cast(),
                        (oh - at) as sys::JDIMENSION,
                    )
                };
                if n == 0 {
                    return Err(DecodeError::Corrupt("no scanlines".into()));
                }
            }
            // SAFETY: every row was written by jpeg_read_scanlines (output_scanline == oh).
            unsafe { data.set_len(stride * oh) };
            let read = if luma {
                // SAFETY: the output pass is complete; then, in buffered-image mode,
                // read_coefficients hands out the decoder's own coefficient arrays.
                unsafe { sys::jpeg_finish_output(cinfo) };
                let arrays = unsafe { sys::jpeg_read_coefficients(cinfo) };
                LumaRead::Read(walk_luma(cinfo, arrays, visit)?)
            } else {
                LumaRead::Unreadable
            };
            // Reads up to EOI: a file cut after its last scan still warns here.
            // SAFETY: every scanline read (or, buffered, the output pass finished).
            unsafe { sys::jpeg_finish_decompress(cinfo) };
            BgrImage::from_raw(w, h, data)
                .map(|img| Some((img, read)))
                .ok_or_else(|| DecodeError::Corrupt("short pixel buffer".into()))
        },
    ));
    pixels_or_damage(result)
}

/// Owns a created libjpeg decompressor (its header read) and its error manager; destroys it
/// however the read ends. Errors inside libjpeg unwind (the error manager panics): callers run
/// it inside `catch_unwind`.
struct JpegReader {
    cinfo: Box<sys::jpeg_decompress_struct>,
    _err: Box<sys::jpeg_error_mgr>,
}

impl Drop for JpegReader {
    fn drop(&mut self) {
        // SAFETY: `cinfo` was created by jpeg_CreateDecompress in `JpegReader::new`; destroy
        // frees its pools whatever state the read stopped in.
        unsafe { sys::jpeg_destroy_decompress(&mut self.cinfo) }
    }
}

impl JpegReader {
    /// A decompressor reading `bytes`, which must outlive it, with the header read.
    fn new(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut err = Box::new(jpeg_warnings::error_mgr());
        // SAFETY: all-zero is the state libjpeg expects before create (it keeps `err`).
        let mut cinfo: Box<sys::jpeg_decompress_struct> = Box::new(unsafe { std::mem::zeroed() });
        cinfo.common.err = &mut *err;
        // SAFETY: a zeroed struct of the size the library was built for, `err` set and boxed
        // (it outlives `cinfo`: both live in this reader, destroyed in Drop first).
        unsafe { sys::jpeg_create_decompress(&mut *cinfo) };
        let mut r = JpegReader { cinfo, _err: err };
        let len = std::os::raw::c_ulong::try_from(bytes.len())
            .map_err(|_| DecodeError::Corrupt("file too long".into()))?;
        // SAFETY: a created decompressor; the caller keeps `bytes` alive as long as `r`.
        unsafe { sys::jpeg_mem_src(&mut r.cinfo, bytes.as_ptr(), len) };
        // SAFETY: a created decompressor with a source; errors unwind to the caller's
        // catch_unwind.
        unsafe { sys::jpeg_read_header(&mut r.cinfo, 1) };
        Ok(r)
    }
}

/// Passes every 8x8 block of the luma component (the first) in `arrays`, the coefficient arrays
/// `jpeg_read_coefficients` returned, to `visit` in raster order; returns the luma quantisation
/// table. One walk for both readers ([`jpeg_luma_coefficients`], [`decode_with_luma`]), so they
/// visit the same blocks.
fn walk_luma(
    cinfo: &mut sys::jpeg_decompress_struct,
    arrays: *mut *mut sys::jvirt_barray_control,
    visit: &mut LumaVisitor<'_>,
) -> Result<[u16; 64], DecodeError> {
    if arrays.is_null() || cinfo.comp_info.is_null() || cinfo.num_components < 1 {
        return Err(DecodeError::Corrupt("no coefficients".into()));
    }
    // SAFETY: comp_info holds num_components (>= 1) entries once the coefficients are read.
    let comp = unsafe { &*cinfo.comp_info };
    // SAFETY: a component's table pointer is set (or null) by then.
    let quant = match unsafe { comp.quant_table.as_ref() } {
        Some(t) => t.quantval,
        None => return Err(DecodeError::Corrupt("no quantisation table".into())),
    };
    let (rows, cols) = (comp.height_in_blocks, comp.width_in_blocks as usize);
    let access = unsafe { cinfo.common.mem.as_ref() }
        .and_then(|m| m.access_virt_barray)
        .ok_or_else(|| DecodeError::Corrupt("no memory manager".into()))?;
    // SAFETY: `arrays` has num_components entries; the first is the luma array.
    let luma_array = unsafe { *arrays };
    for row in 0..rows {
        // SAFETY: a row inside the component's block rows, read-only access; libjpeg returns a
        // pointer to an array of one row of `cols` blocks.
        let block_rows = unsafe { access(&mut cinfo.common, luma_array, row, 1, 0) };
        let blocks = unsafe { block_rows.as_ref() }
            .copied()
            .filter(|p| !p.is_null())
            .ok_or_else(|| DecodeError::Corrupt("no coefficient row".into()))?;
        // SAFETY: the row holds `cols` blocks (width_in_blocks).
        for block in unsafe { std::slice::from_raw_parts(blocks, cols) } {
            visit(block);
        }
    }
    Ok(quant)
}

/// Largest JPEG (declared pixels) whose coefficients [`jpeg_luma_coefficients`] reads: libjpeg
/// holds every component's coefficients in memory at once (3 bytes per pixel at 4:2:0), so a
/// bigger file is not analysed rather than given a second full-size buffer.
pub const MAX_COEFFICIENT_PIXELS: u64 = 24_000_000;

/// Entropy-decode a JPEG without making pixels, passing every 8x8 block of its luma component to
/// `visit` (the quantised DCT coefficients as stored in the file, natural row-major order), and
/// return the luma quantisation table (natural order). `Ok(None)`: not a YCbCr or greyscale DCT
/// JPEG, over [`MAX_COEFFICIENT_PIXELS`], or a progressive file over [`MAX_COEFFICIENT_BYTES`].
/// A sequential file over [`MAX_COEFFICIENT_BYTES`] is read as its top rows, about as many as
/// that many bytes hold. The file is expected to have passed [`decode`]; damage
/// libjpeg only warns about is an error here too.
///
/// Hand-written over `mozjpeg-sys`: the `mozjpeg` crate has no coefficient access, and no other
/// maintained Rust crate reads a JPEG's coefficients.
pub fn jpeg_luma_coefficients(
    bytes: &[u8],
    mut visit: impl FnMut(&[i16; 64]),
) -> Result<Option<[u16; 64]>, DecodeError> {
    // Entropy decoding costs about 1 ms per 100 KB. A progressive file is read whole or not at
    // all (its scans refine every block, so a cut file has coarsened coefficients everywhere). A
    // longer sequential file is read as its top part: the first MAX_COEFFICIENT_BYTES, with the
    // frame's height in a copy of the header lowered to the rows that part likely holds (three
    // quarters of its share of the file, whole MCU rows), so libjpeg neither allocates nor walks
    // the rest of the image.
    let cut_copy;
    let (bytes, cut) = match sof_kind(bytes) {
        Some((Sof::Sequential, at)) if bytes.len() > MAX_COEFFICIENT_BYTES => {
            let Some(height) = bytes
                .get(at + 5..at + 7)
                .filter(|_| at + 7 <= MAX_COEFFICIENT_BYTES)
            else {
                return Ok(None);
            };
            let height = u64::from(u16::from_be_bytes([height[0], height[1]]));
            let share = height * MAX_COEFFICIENT_BYTES as u64 * 3 / 4 / bytes.len() as u64;
            let rows = u16::try_from(share & !15).unwrap_or(0);
            if rows == 0 {
                return Ok(None);
            }
            let mut copy = bytes[..MAX_COEFFICIENT_BYTES].to_vec();
            copy[at + 5..at + 7].copy_from_slice(&rows.to_be_bytes());
            cut_copy = copy;
            (&cut_copy[..], true)
        }
        Some((Sof::Sequential, _)) => (bytes, false),
        Some((Sof::Progressive, _)) if bytes.len() <= MAX_COEFFICIENT_BYTES => (bytes, false),
        _ => return Ok(None),
    };
    jpeg_warnings::reset();
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(
        || -> Result<Option<[u16; 64]>, DecodeError> {
            let mut r = JpegReader::new(bytes)?;
            let cinfo = &mut *r.cinfo;
            let pixels = u64::from(cinfo.image_width) * u64::from(cinfo.image_height);
            let luma = matches!(cinfo.jpeg_color_space, sys::JCS_YCbCr | sys::JCS_GRAYSCALE);
            if !luma || pixels > MAX_COEFFICIENT_PIXELS || cinfo.num_components < 1 {
                return Ok(None);
            }
            // SAFETY: after read_header: the transcoding read of the whole (or cut) file.
            let arrays = unsafe { sys::jpeg_read_coefficients(cinfo) };
            walk_luma(cinfo, arrays, &mut visit).map(Some)
        },
    ));
    let damage = jpeg_warnings::take_damage();
    let read = match read {
        Ok(r) => r,
        Err(payload) => Err(DecodeError::Corrupt(
            payload
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "libjpeg error".into()),
        )),
    }?;
    match damage {
        // The end of a file cut on purpose.
        Some(what) if cut && what == jpeg_warnings::EOF => Ok(read),
        Some(what) => Err(DecodeError::Corrupt(what.to_owned())),
        None => Ok(read),
    }
}

/// How much of a sequential JPEG [`jpeg_luma_coefficients`] reads (and the largest progressive
/// JPEG it reads at all): 128 KiB, 1.5 to 5 ms of entropy decoding (dense data decodes slower
/// per byte), the whole of a typical 1 MP selfie and 10,000 or more luma blocks of any photo.
pub const MAX_COEFFICIENT_BYTES: usize = 128 * 1024;

/// The kind of a JPEG's frame, from its SOF marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sof {
    /// Baseline or extended sequential DCT (Huffman or arithmetic).
    Sequential,
    /// Progressive DCT.
    Progressive,
    /// Lossless or hierarchical: no DCT coefficients to speak of.
    Other,
}

/// The frame kind of a JPEG and where its SOF marker is, from the marker segments before its
/// first scan; `None` when there is no frame header there.
fn sof_kind(bytes: &[u8]) -> Option<(Sof, usize)> {
    // SOF0-15 but DHT (C4), JPG (C8) and DAC (CC), which are tables; or a scan or the end.
    let sof_or_end =
        |m| matches!(m, 0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF | 0xDA | 0xD9);
    let (marker, at) = first_marker(bytes, sof_or_end)?;
    let kind = match marker {
        0xC0 | 0xC1 | 0xC9 => Sof::Sequential,
        0xC2 | 0xCA => Sof::Progressive,
        0xC3 | 0xC5..=0xC7 | 0xCB | 0xCD..=0xCF => Sof::Other,
        // A scan or the end before any frame.
        _ => return None,
    };
    Some((kind, at))
}

/// Length of a JPEG's header: the bytes before its first scan (SOS), where its frame header,
/// tables and application segments (EXIF among them) are. `None` when there is no scan.
pub fn jpeg_header_len(bytes: &[u8]) -> Option<usize> {
    first_marker(bytes, |m| m == 0xDA).map(|(_, at)| at)
}

/// The first marker `wanted` accepts among the marker segments of a JPEG before its first scan,
/// and its offset.
fn first_marker(bytes: &[u8], wanted: impl Fn(u8) -> bool) -> Option<(u8, usize)> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut at = 2;
    loop {
        // Fill bytes (0xFF) may precede a marker.
        while bytes.get(at) == Some(&0xFF) && bytes.get(at + 1) == Some(&0xFF) {
            at += 1;
        }
        let (&ff, &marker) = (bytes.get(at)?, bytes.get(at + 1)?);
        if ff != 0xFF {
            return None;
        }
        if wanted(marker) {
            return Some((marker, at));
        }
        match marker {
            0xDA | 0xD9 => return None,
            // Markers without a length.
            0x01 | 0xD0..=0xD7 => at += 2,
            _ => {
                let len = usize::from(u16::from_be_bytes([
                    *bytes.get(at + 2)?,
                    *bytes.get(at + 3)?,
                ]));
                if len < 2 {
                    return None;
                }
                at += 2 + len;
            }
        }
    }
}

/// libjpeg's warnings, collected per thread while one JPEG decodes.
///
/// The `mozjpeg` crate silences every libjpeg message and has no hook to read them, so this
/// installs its own `jpeg_error_mgr` (built by libjpeg's `jpeg_std_error`, then two callbacks
/// replaced). A decode runs on one thread from start to finish, so a thread-local is enough to
/// carry the warnings out of the C callback.
mod jpeg_warnings {
    use std::cell::Cell;
    use std::os::raw::c_int;

    use mozjpeg_sys::{
        jpeg_common_struct, jpeg_error_mgr, jpeg_std_error, JWRN_HIT_MARKER, JWRN_HUFF_BAD_CODE,
        JWRN_JPEG_EOF, JWRN_MUST_RESYNC, JWRN_NOT_SEQUENTIAL,
    };

    thread_local! {
        /// The first damage warning of the current decode.
        static DAMAGE: Cell<Option<&'static str>> = const { Cell::new(None) };
    }

    pub(super) fn reset() {
        DAMAGE.with(|d| d.set(None));
    }

    pub(super) fn take_damage() -> Option<&'static str> {
        DAMAGE.with(Cell::take)
    }

    /// The damage of [`JWRN_JPEG_EOF`].
    pub(super) const EOF: &str = "truncated JPEG: the file ends before its image data does";

    /// What a warning code means for the pixels: `Some` when data is missing or invented.
    pub(super) fn damage(code: c_int) -> Option<&'static str> {
        match code {
            JWRN_JPEG_EOF => Some(EOF),
            JWRN_HIT_MARKER | JWRN_MUST_RESYNC => {
                Some("corrupt JPEG: image data is missing between markers")
            }
            JWRN_HUFF_BAD_CODE => Some("corrupt JPEG: bad Huffman code in the image data"),
            JWRN_NOT_SEQUENTIAL => Some("corrupt JPEG: invalid scan parameters"),
            _ => None,
        }
    }

    pub(super) fn error_mgr() -> jpeg_error_mgr {
        // SAFETY: jpeg_error_mgr is a plain C struct for which all-zero is a valid state, and
        // jpeg_std_error fills every field of it.
        let mut err: jpeg_error_mgr = unsafe { std::mem::zeroed() };
        unsafe { jpeg_std_error(&mut err) };
        err.error_exit = Some(unwind_on_error);
        err.emit_message = Some(record_warning);
        err
    }

    /// Level -1 is a warning; higher levels are trace messages.
    extern "C-unwind" fn record_warning(cinfo: &mut jpeg_common_struct, level: c_int) {
        if level >= 0 {
            return;
        }
        // SAFETY: libjpeg calls this with the cinfo whose `err` points at our manager.
        let code = unsafe { cinfo.err.as_ref() }.map_or(0, |e| e.msg_code);
        if let Some(what) = damage(code) {
            DAMAGE.with(|d| {
                if d.get().is_none() {
                    d.set(Some(what));
                }
            });
        }
    }

    /// Fatal errors unwind to the `catch_unwind` around the decode, as the crate's own manager
    /// does, carrying libjpeg's text of the error.
    extern "C-unwind" fn unwind_on_error(cinfo: &mut jpeg_common_struct) {
        let mut buffer = [0u8; 80];
        // SAFETY: libjpeg calls this with the cinfo whose `err` points at our manager, whose
        // `format_message` (from jpeg_std_error) writes at most 80 bytes, NUL-terminated, into
        // the buffer. The binding declares the buffer `&[u8; 80]` although C writes to it, so the
        // function type is corrected to `&mut` (same ABI: a pointer), as the mozjpeg crate does.
        let format = unsafe { cinfo.err.as_ref() }.and_then(|e| e.format_message);
        if let Some(format) = format {
            type Writes = unsafe extern "C-unwind" fn(&mut jpeg_common_struct, &mut [u8; 80]);
            let format: Writes = unsafe {
                std::mem::transmute::<
                    unsafe extern "C-unwind" fn(&mut jpeg_common_struct, &[u8; 80]),
                    Writes,
                >(format)
            };
            unsafe { format(cinfo, &mut buffer) };
        }
        let text = buffer.split(|&c| c == 0).next().unwrap_or_default();
        let msg = format!("libjpeg: {}", String::from_utf8_lossy(text));
        std::panic::resume_unwind(Box::new(msg));
    }
}

fn decode_with_image(
    mut decoder: impl ImageDecoder,
    limits: &DecodeLimits,
) -> Result<BgrImage, DecodeError> {
    let mut l = image::Limits::default();
    // Widest decoded sample is 16-bit RGBA (8 bytes per pixel); leave room for the decoder's own work.
    l.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    decoder.set_limits(l).map_err(corrupt)?;
    let img = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    Ok(dynamic_to_bgr(&img))
}

/// OpenCV `IMREAD_COLOR` conversion: grey replicated, alpha dropped, 16-bit → high byte.
fn dynamic_to_bgr(img: &DynamicImage) -> BgrImage {
    let (w, h) = (img.width(), img.height());
    let n = w as usize * h as usize;
    let mut out = Vec::with_capacity(n * 3);
    match img {
        DynamicImage::ImageLuma8(b) => b.as_raw().iter().for_each(|&g| out.extend([g, g, g])),
        DynamicImage::ImageLumaA8(b) => b
            .as_raw()
            .chunks_exact(2)
            .for_each(|p| out.extend([p[0], p[0], p[0]])),
        DynamicImage::ImageRgb8(b) => b
            .as_raw()
            .chunks_exact(3)
            .for_each(|p| out.extend([p[2], p[1], p[0]])),
        DynamicImage::ImageRgba8(b) => b
            .as_raw()
            .chunks_exact(4)
            .for_each(|p| out.extend([p[2], p[1], p[0]])),
        DynamicImage::ImageLuma16(b) => b.as_raw().iter().for_each(|&g| {
            let g = (g >> 8) as u8;
            out.extend([g, g, g])
        }),
        DynamicImage::ImageLumaA16(b) => b.as_raw().chunks_exact(2).for_each(|p| {
            let g = (p[0] >> 8) as u8;
            out.extend([g, g, g])
        }),
        DynamicImage::ImageRgb16(b) => b
            .as_raw()
            .chunks_exact(3)
            .for_each(|p| out.extend([(p[2] >> 8) as u8, (p[1] >> 8) as u8, (p[0] >> 8) as u8])),
        DynamicImage::ImageRgba16(b) => b
            .as_raw()
            .chunks_exact(4)
            .for_each(|p| out.extend([(p[2] >> 8) as u8, (p[1] >> 8) as u8, (p[0] >> 8) as u8])),
        other => {
            let rgb = other.to_rgb8();
            rgb.as_raw()
                .chunks_exact(3)
                .for_each(|p| out.extend([p[2], p[1], p[0]]))
        }
    }
    BgrImage {
        width: w,
        height: h,
        data: out,
    }
}

fn exif_code(o: image::metadata::Orientation) -> u8 {
    use image::metadata::Orientation::*;
    match o {
        NoTransforms => 1,
        FlipHorizontal => 2,
        Rotate180 => 3,
        FlipVertical => 4,
        Rotate90FlipH => 5,
        Rotate90 => 6,
        Rotate270FlipH => 7,
        Rotate270 => 8,
    }
}

/// Apply an EXIF orientation code (1-8) to a BGR image. Codes outside 2..=8 leave it unchanged.
///
/// Phone cameras mark most photos 6 (rotate 90°), so this runs on most selfies: each code's
/// mapping is written once as a start pixel and two strides, and the copy loop has no branch.
pub fn apply_orientation(img: BgrImage, code: u8) -> BgrImage {
    if !(2..=8).contains(&code) {
        return img;
    }
    let (w, h) = (img.width as usize, img.height as usize);
    let (dw, dh) = if code >= 5 { (h, w) } else { (w, h) };
    // Source pixel of destination (dx, dy) = start + dx * step_x + dy * step_y, in pixels.
    let (wi, hi) = (w as isize, h as isize);
    let (start, step_x, step_y) = match code {
        2 => (wi - 1, -1, wi),
        3 => ((hi - 1) * wi + wi - 1, -1, -wi),
        4 => ((hi - 1) * wi, 1, -wi),
        5 => (0, wi, 1),
        6 => ((hi - 1) * wi, -wi, 1),
        7 => ((hi - 1) * wi + wi - 1, -wi, -1),
        _ => (wi - 1, wi, -1), // 8
    };
    let src = &img.data;
    let mut out = vec![0u8; src.len()];
    // In tiles of ORIENT_TILE x ORIENT_TILE destination pixels: a rotation reads the source down
    // its columns, and a tile keeps the source rows it touches in cache.
    const ORIENT_TILE: usize = 32;
    for ty in (0..dh).step_by(ORIENT_TILE) {
        for tx in (0..dw).step_by(ORIENT_TILE) {
            for dy in ty..(ty + ORIENT_TILE).min(dh) {
                let row = &mut out[dy * dw * 3..(dy + 1) * dw * 3];
                let first = start + dy as isize * step_y + tx as isize * step_x;
                let run = &mut row[tx * 3..(tx + ORIENT_TILE).min(dw) * 3];
                copy_run(src, first, step_x, run);
            }
        }
    }
    BgrImage {
        width: dw as u32,
        height: dh as u32,
        data: out,
    }
}

/// `run[3j..3j + 3] = src[3s..3s + 3]` for `s = first + j * step` (pixels of 3 bytes), one
/// run of a tile of [`apply_orientation`]: source indices are checked once for the run's two
/// ends (the indices in between lie between them), not per pixel: a third less time for a
/// 640x480 rotation than a bounds-checked slice copy per pixel (a throwaway best-of-100 A/B:
/// 123 against 188 µs).
fn copy_run(src: &[u8], first: isize, step: isize, run: &mut [u8]) {
    let n = run.len() / 3;
    let last = first + (n as isize - 1) * step;
    let in_bounds = |s: isize| s >= 0 && (s as usize + 1) * 3 <= src.len();
    if n == 0 || !in_bounds(first) || !in_bounds(last) {
        // Not reachable from `apply_orientation`, whose strides keep every pixel inside.
        debug_assert!(n == 0, "orientation run outside the image");
        return;
    }
    let (sp, dp) = (src.as_ptr(), run.as_mut_ptr());
    for j in 0..n {
        let s = (first + j as isize * step) as usize;
        // SAFETY: `s` lies between `first` and `last`, both checked above to start a whole
        // pixel inside `src`; `3j + 3 <= run.len()`; `src` and `run` do not overlap (`run` is
        // part of a freshly allocated output).
        unsafe { std::ptr::copy_nonoverlapping(sp.add(3 * s), dp.add(3 * j), 3) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_kinds_are_read_from_the_markers() {
        // SOI, an APP0 of 4 bytes, fill bytes, then the frame marker.
        let with = |sof: u8| vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 1, 2, 0xFF, 0xFF, sof, 0, 8];
        assert_eq!(sof_kind(&with(0xC0)), Some((Sof::Sequential, 9)));
        assert_eq!(sof_kind(&with(0xC1)), Some((Sof::Sequential, 9)));
        assert_eq!(sof_kind(&with(0xC2)), Some((Sof::Progressive, 9)));
        assert_eq!(sof_kind(&with(0xC3)), Some((Sof::Other, 9)));
        // A scan before any frame, a cut header, a bad length, not a JPEG.
        assert_eq!(sof_kind(&with(0xDA)), None);
        assert_eq!(sof_kind(&with(0xC0)[..9]), None);
        assert_eq!(sof_kind(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 1]), None);
        assert_eq!(sof_kind(b"\x89PNG"), None);
        // Tables before the frame are stepped over; the header ends at the scan.
        let mut tables = vec![
            0xFF, 0xD8, 0xFF, 0xC4, 0, 3, 9, 0xFF, 0xC0, 0, 2, 0xFF, 0xDA, 0, 2,
        ];
        assert_eq!(sof_kind(&tables), Some((Sof::Sequential, 7)));
        assert_eq!(jpeg_header_len(&tables), Some(11));
        tables.truncate(11);
        assert_eq!(jpeg_header_len(&tables), None);
    }

    /// Every build this repo's scripts make has libjpeg-turbo's SIMD decoder (scripts/setup.sh
    /// installs nasm); a build without it is not wrong, only slow, and should not pass unnoticed.
    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn jpeg_decoding_uses_simd() {
        assert!(
            jpeg_simd(),
            "libjpeg-turbo was built without SIMD: run `bash scripts/setup.sh` (installs nasm, \
             rebuilds mozjpeg-sys)"
        );
    }

    fn sample(w: u32, h: u32) -> BgrImage {
        let data = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
        BgrImage {
            width: w,
            height: h,
            data,
        }
    }

    #[test]
    fn orientation_matches_image_crate_for_all_codes() {
        for (w, h) in [(1, 1), (1, 4), (4, 1), (5, 3), (70, 33), (33, 97)] {
            orientation_matches_image_crate(sample(w, h), w, h);
        }
    }

    fn orientation_matches_image_crate(src: BgrImage, w: u32, h: u32) {
        use image::metadata::Orientation::*;
        for (code, o) in [
            (1, NoTransforms),
            (2, FlipHorizontal),
            (3, Rotate180),
            (4, FlipVertical),
            (5, Rotate90FlipH),
            (6, Rotate90),
            (7, Rotate270FlipH),
            (8, Rotate270),
        ] {
            let ours = apply_orientation(src.clone(), code);
            let rgb = image::RgbImage::from_raw(w, h, src.data.clone()).unwrap();
            let mut dynimg = DynamicImage::ImageRgb8(rgb);
            dynimg.apply_orientation(o);
            let theirs = dynimg.to_rgb8();
            assert_eq!(
                (ours.width, ours.height),
                theirs.dimensions(),
                "code {code}"
            );
            assert_eq!(ours.data, theirs.into_raw(), "code {code}");
        }
    }

    #[test]
    fn not_an_image_and_empty() {
        let l = DecodeLimits::default();
        assert!(matches!(decode(b"", &l), Err(DecodeError::NotAnImage)));
        assert!(matches!(
            decode(b"hello world, not a picture", &l),
            Err(DecodeError::NotAnImage)
        ));
    }

    #[test]
    fn too_many_bytes_refused_before_sniffing() {
        let l = DecodeLimits {
            max_bytes: 4,
            max_pixels: 10,
        };
        assert!(matches!(
            decode(&[0xFF, 0xD8, 0xFF, 0xE0, 0], &l),
            Err(DecodeError::TooLarge { .. })
        ));
    }
}

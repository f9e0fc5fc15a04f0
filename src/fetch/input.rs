//! Parsing the API's `image` field: an http(s) URL, a `data:image/...;base64,` URI, or bare
//! base64.
//!
//! The string is hostile: size caps are enforced from the encoded length before anything is
//! decoded or copied, and again on the decoded bytes.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use url::Url;

/// Longest accepted image URL, in bytes.
pub const MAX_URL_LEN: usize = 8192;

/// Where decoded image bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputKind {
    /// Fetched from an http(s) URL.
    Url,
    /// Decoded from a `data:image/...;base64,` URI.
    DataUri,
    /// Decoded from bare base64.
    Base64,
}

impl InputKind {
    /// The audit label: `"url"` for URLs, `"base64"` for data URIs and bare base64.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Url => "url",
            Self::DataUri | Self::Base64 => "base64",
        }
    }
}

/// A parsed `image` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageInput {
    /// An http or https URL still to be fetched (through [`super::Fetcher`], which applies the
    /// address policy; nothing about the host has been checked yet).
    Url(Url),
    /// Inline image bytes, already decoded; never empty and never above the byte cap.
    Bytes {
        /// The decoded bytes (not yet validated as an image).
        bytes: Vec<u8>,
        /// [`InputKind::DataUri`] or [`InputKind::Base64`].
        kind: InputKind,
    },
}

impl ImageInput {
    /// The kind of input, for the audit record.
    pub fn kind(&self) -> InputKind {
        match self {
            Self::Url(_) => InputKind::Url,
            Self::Bytes { kind, .. } => *kind,
        }
    }
}

/// Why the `image` field could not be parsed. [`InputError::client_message`] is safe to return to
/// the API client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// Empty or whitespace-only string.
    #[error("image field is empty")]
    Empty,
    /// URL longer than [`MAX_URL_LEN`].
    #[error("image URL longer than {limit} bytes")]
    UrlTooLong {
        /// The limit in bytes.
        limit: usize,
    },
    /// http(s) URL that does not parse.
    #[error("image URL is not a valid URL")]
    InvalidUrl,
    /// A scheme other than http, https or data.
    #[error("unsupported image URL scheme {scheme:?}")]
    UnsupportedScheme {
        /// The scheme, lowercased (at most 32 characters).
        scheme: String,
    },
    /// `data:` URI without the `,` separating header and payload.
    #[error("malformed data URI")]
    MalformedDataUri,
    /// `data:` URI whose media type is not `image/*`.
    #[error("data URI media type is not image/*")]
    DataUriNotImage,
    /// `data:` URI that is not base64-encoded.
    #[error("data URI is not base64-encoded")]
    DataUriNotBase64,
    /// Neither a URL nor valid base64 (bad characters, mixed alphabets, bad length or padding).
    #[error("image is not valid base64")]
    InvalidBase64,
    /// Decoded size above the cap.
    #[error("image larger than {limit} bytes")]
    TooLarge {
        /// The cap in bytes.
        limit: usize,
    },
    /// Base64 payload with no data in it.
    #[error("image data is empty")]
    EmptyImage,
}

impl InputError {
    /// A message for the API client (HTTP 400 body) saying what to fix. Never echoes the input
    /// beyond a short, sanitised scheme name.
    pub fn client_message(&self) -> String {
        match self {
            Self::Empty => "image is required: send an http(s) URL, a data:image/...;base64 URI \
                            or base64-encoded image bytes"
                .to_owned(),
            Self::UrlTooLong { limit } => {
                format!("image URL is too long (at most {limit} characters)")
            }
            Self::InvalidUrl => "image URL is not a valid http(s) URL".to_owned(),
            Self::UnsupportedScheme { scheme } => format!(
                "image URL scheme \"{scheme}\" is not supported: use http, https, or a \
                 data:image/...;base64 URI"
            ),
            Self::MalformedDataUri => {
                "image data URI is malformed: expected data:image/<type>;base64,<data>".to_owned()
            }
            Self::DataUriNotImage => {
                "image data URI must have an image/* media type, e.g. data:image/jpeg;base64,..."
                    .to_owned()
            }
            Self::DataUriNotBase64 => {
                "image data URI must be base64-encoded: data:image/<type>;base64,<data>".to_owned()
            }
            Self::InvalidBase64 => "image is neither an http(s) URL nor valid base64 \
                                    (standard or URL-safe alphabet, padding optional)"
                .to_owned(),
            Self::TooLarge { limit } => format!("image is too large (at most {limit} bytes)"),
            Self::EmptyImage => "image data is empty".to_owned(),
        }
    }
}

const DECODE_CONFIG: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::RequireNone)
    .with_decode_allow_trailing_bits(true);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, DECODE_CONFIG);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, DECODE_CONFIG);

/// Parse the API's `image` string.
///
/// - `http://` / `https://` (any case): parsed with the WHATWG URL parser, at most
///   [`MAX_URL_LEN`] bytes. Nothing is fetched and no address policy is applied here.
/// - `data:image/<type>[;param...];base64,<payload>`: payload decoded as base64.
/// - anything without a `:` is treated as bare base64: standard or URL-safe alphabet (not
///   mixed), padding optional (but correct if present), ASCII whitespace anywhere ignored.
///
/// Inline data is refused with [`InputError::TooLarge`] when its encoded length implies more
/// than `max_bytes` decoded bytes, before anything is decoded; the decoded length is checked
/// again afterwards.
pub fn parse_image_input(s: &str, max_bytes: usize) -> Result<ImageInput, InputError> {
    let s = s.trim_matches(|c: char| c.is_ascii_whitespace());
    if s.is_empty() {
        return Err(InputError::Empty);
    }
    // Base64 never contains ':', so a colon means "this is meant to be a URI".
    let Some(colon) = s.find(':') else {
        let bytes = decode_base64(s, max_bytes)?;
        return Ok(ImageInput::Bytes {
            bytes,
            kind: InputKind::Base64,
        });
    };
    let scheme = &s[..colon];
    if !is_scheme(scheme) {
        return Err(InputError::InvalidBase64);
    }
    let scheme = scheme.to_ascii_lowercase();
    match scheme.as_str() {
        "http" | "https" => {
            if s.len() > MAX_URL_LEN {
                return Err(InputError::UrlTooLong { limit: MAX_URL_LEN });
            }
            let url = Url::parse(s).map_err(|_| InputError::InvalidUrl)?;
            // Defensive: the parser keeps the scheme, but never hand out anything else.
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                return Err(InputError::InvalidUrl);
            }
            Ok(ImageInput::Url(url))
        }
        "data" => {
            let bytes = parse_data_uri(&s[colon + 1..], max_bytes)?;
            Ok(ImageInput::Bytes {
                bytes,
                kind: InputKind::DataUri,
            })
        }
        _ => Err(InputError::UnsupportedScheme { scheme }),
    }
}

/// RFC 3986 scheme syntax, capped at 32 characters.
fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && s.len() <= 32
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Parse what follows `data:`: `<mediatype>[;param]*;base64,<payload>`.
fn parse_data_uri(rest: &str, max_bytes: usize) -> Result<Vec<u8>, InputError> {
    let (header, payload) = rest.split_once(',').ok_or(InputError::MalformedDataUri)?;
    let mut params = header.split(';').map(|p| p.trim());
    let media_type = params.next().unwrap_or("");
    let is_image = media_type
        .get(..6)
        .is_some_and(|p| p.eq_ignore_ascii_case("image/"))
        && media_type.len() > 6;
    if !is_image {
        return Err(InputError::DataUriNotImage);
    }
    // RFC 2397: ";base64" is the last parameter.
    let is_base64 = header
        .rsplit(';')
        .next()
        .is_some_and(|last| header.contains(';') && last.trim().eq_ignore_ascii_case("base64"));
    if !is_base64 {
        return Err(InputError::DataUriNotBase64);
    }
    decode_base64(payload, max_bytes)
}

/// Decode lenient base64 (see [`parse_image_input`]) with the size cap checked first.
fn decode_base64(text: &str, max_bytes: usize) -> Result<Vec<u8>, InputError> {
    // Fast path: canonical standard base64 without whitespace (what clients send) decodes in one
    // pass. Every input it accepts decodes to the same bytes on the lenient path below, which
    // takes everything else (whitespace, URL-safe alphabet, missing padding) and gives the errors.
    // The cap holds: `len / 4 * 3` bounds the decoded length of canonical input.
    //
    // `base64-simd` rather than the `base64` crate here: it decodes with SIMD (AVX2/SSE4.1/NEON,
    // chosen at run time) into uninitialised capacity, where `base64` decodes a byte at a time
    // into a zero-filled buffer; on a photo that was about 0.07 ms of every check's CPU on the
    // async workers (docs/benchmarks.md, session 28). It accepts exactly what `base64`'s
    // `STANDARD` accepts (padding required, canonical trailing bits), which a property test
    // below checks.
    if text.len() / 4 * 3 <= max_bytes {
        if let Ok(bytes) = base64_simd::STANDARD.decode_to_vec(text.as_bytes()) {
            if !bytes.is_empty() {
                return Ok(bytes);
            }
        }
    }
    // Pass 1: validate characters and count data symbols without allocating.
    let mut symbols = 0usize;
    let mut padding = 0usize;
    let (mut standard, mut url_safe) = (false, false);
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' | b'-' | b'_' => {
                if padding > 0 {
                    // Data after padding.
                    return Err(InputError::InvalidBase64);
                }
                standard |= matches!(b, b'+' | b'/');
                url_safe |= matches!(b, b'-' | b'_');
                symbols += 1;
            }
            b'=' => padding += 1,
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => {}
            _ => return Err(InputError::InvalidBase64),
        }
    }
    if symbols == 0 {
        return Err(if padding == 0 {
            InputError::EmptyImage
        } else {
            InputError::InvalidBase64
        });
    }
    let tail = symbols % 4;
    if (standard && url_safe) || tail == 1 || padding > 2 {
        return Err(InputError::InvalidBase64);
    }
    if padding > 0 && !(symbols + padding).is_multiple_of(4) {
        return Err(InputError::InvalidBase64);
    }
    let decoded_len = symbols / 4 * 3 + tail.saturating_sub(1);
    if decoded_len > max_bytes {
        return Err(InputError::TooLarge { limit: max_bytes });
    }
    // Pass 2: copy the data symbols and decode.
    let clean: Vec<u8> = text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'=')
        .collect();
    let engine = if url_safe {
        &URL_SAFE_LENIENT
    } else {
        &STANDARD_LENIENT
    };
    let bytes = engine
        .decode(&clean)
        .map_err(|_| InputError::InvalidBase64)?;
    if bytes.len() > max_bytes {
        return Err(InputError::TooLarge { limit: max_bytes });
    }
    if bytes.is_empty() {
        return Err(InputError::EmptyImage);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    const MAX: usize = 1024;

    proptest::proptest! {
        /// The fast path and the lenient path agree: canonical base64 and the same text broken
        /// into MIME lines decode to the same bytes, within the cap or refused by it alike.
        #[test]
        fn canonical_and_wrapped_base64_decode_alike(data in proptest::collection::vec(0u8..=255, 1..400), cap in 1usize..500) {
            let canonical = STANDARD.encode(&data);
            let wrapped: String = canonical
                .as_bytes()
                .chunks(76)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect::<Vec<_>>()
                .join("\r\n");
            let fast = decode_base64(&canonical, cap);
            let slow = decode_base64(&wrapped, cap);
            proptest::prop_assert_eq!(format!("{fast:?}"), format!("{slow:?}"));
            if data.len() <= cap {
                proptest::prop_assert_eq!(fast.unwrap(), data);
            }
        }
    }

    proptest::proptest! {
        /// The fast path's decoder (`base64-simd`) accepts and rejects exactly what the `base64`
        /// crate's `STANDARD` does, with the same bytes: canonical encodings, then the same text
        /// with one symbol replaced by any alphabet symbol, padding or other byte (non-canonical
        /// trailing bits, padding in the middle, bad characters), truncated at any length.
        #[test]
        fn the_fast_decoder_agrees_with_the_base64_crate(
            data in proptest::collection::vec(0u8..=255, 0..200),
            at in 0usize..400,
            with in proptest::sample::select(
                b"AZaz09+/-_=. \n\x80".to_vec()),
            cut in 0usize..400,
        ) {
            let canonical = STANDARD.encode(&data).into_bytes();
            let mut edited = canonical.clone();
            if !edited.is_empty() {
                let i = at % edited.len();
                edited[i] = with;
            }
            let mut truncated = canonical.clone();
            truncated.truncate(cut);
            for text in [&canonical, &edited, &truncated] {
                let simd = base64_simd::STANDARD.decode_to_vec(text).ok();
                let reference = STANDARD.decode(text).ok();
                proptest::prop_assert_eq!(simd, reference, "{:?}", String::from_utf8_lossy(text));
            }
        }
    }

    #[test]
    fn the_fast_decoder_rejects_what_the_base64_crate_rejects() {
        // Non-canonical trailing bits ("QR==" has bits set past the one byte it encodes),
        // missing or surplus padding, padding inside, other alphabets, whitespace.
        for text in [
            "QR==", "QUJ=", "QQ", "QUI", "QQ===", "Q===", "QQ==QQ==", "QU=I", "a-_b", "QUJD\n",
            " QUJD", "QUJD====",
        ] {
            assert!(STANDARD.decode(text).is_err(), "{text}");
            assert!(base64_simd::STANDARD.decode_to_vec(text).is_err(), "{text}");
        }
        assert_eq!(base64_simd::STANDARD.decode_to_vec("QUJD").unwrap(), b"ABC");
    }

    fn bytes_of(input: Result<ImageInput, InputError>) -> (Vec<u8>, InputKind) {
        match input {
            Ok(ImageInput::Bytes { bytes, kind }) => (bytes, kind),
            other => panic!("expected bytes, got {other:?}"),
        }
    }

    #[test]
    fn urls() {
        let url = parse_image_input("  https://Example.com/a.jpg?x=1 \n", MAX).unwrap();
        assert_eq!(url.kind(), InputKind::Url);
        assert_eq!(url.kind().as_str(), "url");
        match url {
            ImageInput::Url(u) => assert_eq!(u.as_str(), "https://example.com/a.jpg?x=1"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_image_input("HTTP://example.com/", MAX),
            Ok(ImageInput::Url(_))
        ));
        assert_eq!(
            parse_image_input("http://", MAX),
            Err(InputError::InvalidUrl)
        );
        assert_eq!(
            parse_image_input("http://exa mple.com/", MAX),
            Err(InputError::InvalidUrl)
        );
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(
            parse_image_input(&long, MAX),
            Err(InputError::UrlTooLong { limit: MAX_URL_LEN })
        );
    }

    #[test]
    fn other_schemes_are_refused() {
        for (input, scheme) in [
            ("file:///etc/passwd", "file"),
            ("FTP://example.com/a.png", "ftp"),
            ("gopher://127.0.0.1:70/", "gopher"),
            ("javascript:alert(1)", "javascript"),
            ("blob:https://example.com/x", "blob"),
        ] {
            let err = parse_image_input(input, MAX).unwrap_err();
            assert_eq!(
                err,
                InputError::UnsupportedScheme {
                    scheme: scheme.to_owned()
                },
                "{input}"
            );
            assert!(err.client_message().contains(scheme));
        }
        // Not a scheme at all, and not base64 either.
        assert_eq!(
            parse_image_input("1abc:def", MAX),
            Err(InputError::InvalidBase64)
        );
        assert_eq!(
            parse_image_input("example.com/a.jpg", MAX),
            Err(InputError::InvalidBase64)
        );
    }

    #[test]
    fn data_uris() {
        let payload = STANDARD.encode(b"\x89PNG\r\n\x1a\nrest");
        let (bytes, kind) = bytes_of(parse_image_input(
            &format!("data:image/png;base64,{payload}"),
            MAX,
        ));
        assert_eq!(bytes, b"\x89PNG\r\n\x1a\nrest");
        assert_eq!(kind, InputKind::DataUri);
        assert_eq!(kind.as_str(), "base64");
        // Case-insensitive scheme, media type and base64 marker, extra parameters, whitespace.
        let (bytes, _) = bytes_of(parse_image_input(
            &format!("DATA:Image/JPEG;name=x.jpg;BASE64,\n{payload}\n"),
            MAX,
        ));
        assert_eq!(bytes, b"\x89PNG\r\n\x1a\nrest");

        for (input, want) in [
            ("data:image/png,abcd", InputError::DataUriNotBase64),
            (
                "data:image/png;charset=x,abcd",
                InputError::DataUriNotBase64,
            ),
            (
                "data:image/png;base64;x=y,abcd",
                InputError::DataUriNotBase64,
            ),
            (
                "data:text/plain;base64,aGVsbG8=",
                InputError::DataUriNotImage,
            ),
            ("data:;base64,aGVsbG8=", InputError::DataUriNotImage),
            ("data:image/;base64,aGVsbG8=", InputError::DataUriNotImage),
            ("data:base64,aGVsbG8=", InputError::DataUriNotImage),
            ("data:image/png;base64", InputError::MalformedDataUri),
            ("data:image/png;base64,", InputError::EmptyImage),
            ("data:image/png;base64,%2Fabc", InputError::InvalidBase64),
        ] {
            assert_eq!(parse_image_input(input, MAX), Err(want), "{input}");
        }
    }

    #[test]
    fn bare_base64_variants() {
        let data: Vec<u8> = (0u8..=255).collect();
        let std_padded = STANDARD.encode(&data);
        let url_nopad = URL_SAFE_NO_PAD.encode(&data);
        assert!(std_padded.contains('+') || std_padded.contains('/'));
        assert!(url_nopad.contains('-') || url_nopad.contains('_'));
        let wrapped: String = std_padded
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\r\n");
        for text in [
            std_padded.clone(),
            std_padded.trim_end_matches('=').to_owned(),
            url_nopad.clone(),
            format!("{url_nopad}=="),
            wrapped,
            format!(" \t{std_padded}\n"),
        ] {
            let (bytes, kind) = bytes_of(parse_image_input(&text, MAX));
            assert_eq!(bytes, data);
            assert_eq!(kind, InputKind::Base64);
        }
        // One and two remaining bytes, with and without padding.
        assert_eq!(bytes_of(parse_image_input("QQ", MAX)).0, b"A");
        assert_eq!(bytes_of(parse_image_input("QQ==", MAX)).0, b"A");
        assert_eq!(bytes_of(parse_image_input("QUI", MAX)).0, b"AB");
        assert_eq!(bytes_of(parse_image_input("QUI=", MAX)).0, b"AB");
    }

    #[test]
    fn bad_base64() {
        for text in [
            "QQ=",       // wrong amount of padding
            "QUI==",     // wrong amount of padding
            "Q",         // impossible length
            "QUJDR",     // impossible length
            "QQ==QQ==",  // data after padding
            "ab+c-d",    // mixed alphabets
            "aGVsbG8*",  // bad character
            "aGVs\0bG8", // NUL
            "====",      // padding only
            "héllo",     // non-ASCII
        ] {
            assert_eq!(
                parse_image_input(text, MAX),
                Err(InputError::InvalidBase64),
                "{text:?}"
            );
        }
        assert_eq!(parse_image_input("", MAX), Err(InputError::Empty));
        assert_eq!(parse_image_input(" \n\t ", MAX), Err(InputError::Empty));
    }

    #[test]
    fn size_cap_exact_boundary() {
        let at_cap = STANDARD.encode(vec![7u8; MAX]);
        assert_eq!(bytes_of(parse_image_input(&at_cap, MAX)).0.len(), MAX);
        let over = STANDARD.encode(vec![7u8; MAX + 1]);
        assert_eq!(
            parse_image_input(&over, MAX),
            Err(InputError::TooLarge { limit: MAX })
        );
        assert_eq!(
            parse_image_input(&format!("data:image/png;base64,{over}"), MAX),
            Err(InputError::TooLarge { limit: MAX })
        );
        // A huge string of valid symbols is refused from its length alone.
        let huge = "A".repeat(4 * (MAX / 3 + 2));
        assert_eq!(
            parse_image_input(&huge, MAX),
            Err(InputError::TooLarge { limit: MAX })
        );
    }

    #[test]
    fn client_messages_are_helpful_and_do_not_echo_input() {
        let secret = "data:text/plain;base64,c2VjcmV0LXRva2Vu";
        let err = parse_image_input(secret, MAX).unwrap_err();
        let msg = err.client_message();
        assert!(msg.contains("image/"), "{msg}");
        assert!(!msg.contains("c2VjcmV0"), "{msg}");
        assert!(InputError::TooLarge { limit: 10 }
            .client_message()
            .contains("10 bytes"));
    }
}

//! The check request body and its `image` field: JSON, then base64, data URI or URL. Any bytes
//! give an input or an error with a client message, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livecheck::fetch::{parse_image_input, ImageInput};
use livecheck::server::body::parse_image_body;

const MAX: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let image = match parse_image_body(data) {
        Ok(body) => body.image,
        Err(err) => {
            assert!(!err.client_message().is_empty());
            // The field parser on its own, with the raw bytes as the field.
            match std::str::from_utf8(data) {
                Ok(s) => s.to_owned(),
                Err(_) => return,
            }
        }
    };
    match parse_image_input(&image, MAX) {
        Ok(ImageInput::Bytes { bytes, .. }) => assert!(bytes.len() <= MAX),
        Ok(ImageInput::Url(url)) => assert!(matches!(url.scheme(), "http" | "https")),
        Err(err) => assert!(!err.client_message().is_empty()),
    }
});

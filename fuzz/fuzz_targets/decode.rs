//! The image decode entry point with its limits: any bytes give pixels of the declared size or a
//! `DecodeError`, never a panic, a hang or an allocation past the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livecheck::pipeline::decode::{decode, DecodeLimits};

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits {
        max_bytes: 1 << 20,
        max_pixels: 4_000_000,
    };
    if let Ok(img) = decode(data, &limits) {
        assert!(img.width > 0 && img.height > 0);
        assert!(u64::from(img.width) * u64::from(img.height) <= limits.max_pixels);
        assert_eq!(
            img.data.len() as u64,
            u64::from(img.width) * u64::from(img.height) * 3
        );
    }
});

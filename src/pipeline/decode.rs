//! Decode
use serde::{Deserialize, Serialize};
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DecodeLimits {
    pub max_bytes: usize,
    pub max_pixels: u64,
}
pub struct BgrImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not an image")]
    NotAnImage,
}

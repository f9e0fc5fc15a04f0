//! livecheck — self-hosted face liveness.
//!
//! # Layout
//! - [`pipeline`]: image bytes → verdict (decode, detect, crop, classify, fuse). No I/O beyond CPU.
//! - [`engine`]: the inference trait and its tract implementation.
//! - [`models`]: model manifest, directory resolution, SHA-256 verification, fetch.
//! - [`fetch`]: SSRF-safe image fetching and request image parsing (URL / data URI / base64).
//! - [`store`]: audit records and API keys on SQLite or PostgreSQL.
//! - [`server`]: the HTTP API (axum), auth, rate limits, metrics, OpenAPI.
//! - [`eval`]: ISO/IEC 30107-3 evaluation, metrics and HTML report.
//! - [`cli`]: output formatting for the command-line tool.

pub mod cli;
pub mod engine;
pub mod eval;
pub mod fetch;
pub mod models;
pub mod pipeline;
pub mod server;
pub mod store;

//! livecheck — self-hosted face liveness.
//!
//! # Layout
//! - [`pipeline`]: image bytes → verdict (decode, detect, crop, classify, fuse). No I/O beyond CPU.
//! - [`service`]: the one check every front end runs (HTTP, `check`, `eval`): typed outcome and
//!   error, the audit row and the envelope built from the same outcome.
//! - [`engine`]: the inference trait and its tract implementation.
//! - [`models`]: model sets, directory resolution, SHA-256 verification, fetch.
//! - [`fetch`]: SSRF-safe image fetching and request image parsing (URL / data URI / base64).
//! - [`store`]: audit records and API keys on SQLite or PostgreSQL.
//! - [`server`]: the HTTP API (axum), auth, rate limits, metrics, OpenAPI.
//! - [`eval`]: ISO/IEC 30107-3 evaluation, metrics and HTML report.

pub mod engine;
pub mod eval;
pub mod fetch;
pub mod models;
pub mod pipeline;
pub mod receipts;
pub mod report;
pub mod resubmission;
pub mod server;
pub mod service;
pub mod signals;
pub mod store;

use std::path::Path;

/// Why a pipeline (or an engine) could not be loaded: a model set or file that does not resolve
/// or verify, or a model the engine cannot build.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Models(#[from] models::ModelError),
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
}

/// Load a pipeline for `model_set` (a built-in name or a set file; `None` is
/// [`models::DEFAULT_MODEL_SET`]) with the tract engine. Model files are looked for in
/// `model_dir` first, then the default places ([`models::search_path`]).
pub fn load_pipeline(
    model_set: Option<&str>,
    model_dir: Option<&Path>,
    config: pipeline::PipelineConfig,
) -> Result<pipeline::Pipeline, LoadError> {
    pipeline_for(models::LoadedSet::resolve(model_set, model_dir)?, config)
}

/// Load an already resolved set's files with the tract engine and build its pipeline.
pub fn pipeline_for(
    set: models::LoadedSet,
    config: pipeline::PipelineConfig,
) -> Result<pipeline::Pipeline, LoadError> {
    pipeline_with_kernels(set, config, engine::tract::Kernels::default())
}

/// [`pipeline_for`] with a choice of the engine's kernels.
pub fn pipeline_with_kernels(
    set: models::LoadedSet,
    config: pipeline::PipelineConfig,
    kernels: engine::tract::Kernels,
) -> Result<pipeline::Pipeline, LoadError> {
    let engine = engine::tract::TractEngine::load_with(&set, kernels)?;
    Ok(pipeline::Pipeline::new(Box::new(engine), set.set, config))
}

/// Lowercase hex SHA-256 of `bytes`: the one hash of the project (model files, set identity,
/// image digests in audit rows, dataset identity, API-key hashes).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

//! Audit records for the store's tests and benchmarks (`benches/store.rs` includes this file).

use chrono::{SubsecRound, Utc};
use livecheck::pipeline::{Reason, Timings};
use livecheck::store::{AuditRecord, ImageSource};
use uuid::Uuid;

/// A valid record of a base64 `no_face` check made now (to the microsecond, which both backends
/// keep) by `key_id`, with every optional field empty: the base that tests change with struct
/// update syntax.
pub fn plain_record(key_id: Option<Uuid>) -> AuditRecord {
    AuditRecord {
        reference: Uuid::new_v4(),
        key_id,
        created_at: Utc::now().trunc_subsecs(6),
        live: false,
        p_real: 0.0,
        threshold: 0.75,
        reason: Reason::NoFace,
        detail: String::new(),
        bbox: None,
        detector_confidence: None,
        image_sha256: "01".repeat(32),
        image_bytes: 0,
        image_width: None,
        image_height: None,
        input_kind: ImageSource::Base64,
        url_host: None,
        model_hash: "m".into(),
        engine: "tract".into(),
        app_version: "0.1.0".into(),
        timings_ms: Timings::default(),
        receipt: None,
        fingerprint: None,
        signals: None,
        shadow: None,
        session: None,
    }
}

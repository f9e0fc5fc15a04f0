//! The seed's success envelope, field for field and in the seed's order, plus the additive fields
//! livecheck adds inside `data` (clients ignore unknown keys).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::service::{CheckOutcome, OutcomeFace, Signals};
use crate::store::SessionRef;

/// Top-level `message` of a live verdict.
pub const MSG_LIVE: &str = "Face Liveliness successful";
/// Top-level `message` of a not-live verdict.
pub const MSG_NOT_LIVE: &str = "Face Liveliness failed";

/// The successful response: HTTP 200 for both live and not-live verdicts.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({
    "status": "success",
    "data": {
        "status": true,
        "detail": "Liveliness Detected",
        "response_code": "00",
        "confidence": 0.9999987030029297,
        "confidence_in_percentage": 99.99987030029297,
        "verification": {"status": "VERIFIED", "reference": "067cbed9-acda-4d30-97c2-7f8e0c2ad687"},
        "widget_info": {},
        "session": {},
        "reason": "live",
        "face": {"bbox": [203, 104, 248, 317], "confidence": 0.9995},
        "threshold": 0.5,
        "model": "sha256:3f1c..."
    },
    "message": "Face Liveliness successful"
}))]
pub struct CheckEnvelope {
    /// Always `"success"` for a verdict (live or not).
    pub status: String,
    pub data: CheckData,
    /// `"Face Liveliness successful"` or `"Face Liveliness failed"`.
    pub message: String,
}

/// `data` of a verdict. The first eight fields are the seed's; the rest are additive.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckData {
    /// `true` if liveness was detected.
    pub status: bool,
    /// Why: `"Liveliness Detected"`, `"Liveliness Not Detected"`, `"No face detected in image"`, ...
    pub detail: String,
    /// `"00"`: the check ran.
    pub response_code: String,
    /// Liveness probability in [0, 1].
    pub confidence: f64,
    /// `confidence * 100`.
    pub confidence_in_percentage: f64,
    pub verification: Verification,
    /// Always `{}`.
    #[schema(value_type = Object)]
    pub widget_info: serde_json::Map<String, serde_json::Value>,
    /// `{}`, or for a check made through a capture session `{"id": ...}` plus the integrator's
    /// `reference_id` when the session has one.
    #[schema(value_type = Object)]
    pub session: serde_json::Map<String, serde_json::Value>,
    /// Stable machine-readable reason: live, spoof, no_face, multiple_faces, face_too_small,
    /// face_too_close, image_too_small, resubmitted_image (only with `--reject-resubmissions`).
    pub reason: String,
    /// The face the verdict is about (absent when none was found).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub face: Option<FaceInfo>,
    /// Decision threshold on `confidence`.
    pub threshold: f64,
    /// Model manifest hash: which models produced this verdict.
    pub model: String,
    /// The signed decision receipt: a compact JWS (EdDSA, Ed25519) over the verdict's facts,
    /// verifiable with the keys at `/.well-known/jwks.json` (docs/receipts.md).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub receipt: Option<String>,
    /// Facts about the picture beside the verdict; absent when the service looks for none.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub signals: Option<Signals>,
}

/// `data.verification`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Verification {
    /// `"VERIFIED"` or `"FAILED"`.
    pub status: String,
    /// Unique reference of this check; `GET .../liveliness_check/{reference}/` returns it again.
    pub reference: Uuid,
}

/// The detected face.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FaceInfo {
    /// `[x, y, w, h]` in pixels of the upright image.
    pub bbox: [i32; 4],
    /// Detector confidence in [0, 1].
    pub confidence: f64,
}

impl From<OutcomeFace> for FaceInfo {
    fn from(f: OutcomeFace) -> Self {
        FaceInfo {
            bbox: f.bbox,
            confidence: f.confidence,
        }
    }
}

/// The envelope of a verdict.
impl From<&CheckOutcome> for CheckEnvelope {
    fn from(outcome: &CheckOutcome) -> Self {
        let (verification, message) = if outcome.live {
            ("VERIFIED", MSG_LIVE)
        } else {
            ("FAILED", MSG_NOT_LIVE)
        };
        CheckEnvelope {
            status: "success".to_owned(),
            data: CheckData {
                status: outcome.live,
                detail: outcome.detail.clone(),
                response_code: "00".to_owned(),
                confidence: outcome.p_real,
                confidence_in_percentage: outcome.p_real * 100.0,
                verification: Verification {
                    status: verification.to_owned(),
                    reference: outcome.reference,
                },
                widget_info: serde_json::Map::new(),
                session: session_object(outcome.session.as_ref()),
                reason: outcome.reason.code().to_owned(),
                face: outcome.face.map(FaceInfo::from),
                threshold: outcome.threshold,
                model: outcome.model.clone(),
                receipt: outcome.receipt.clone(),
                signals: outcome.signals.clone(),
            },
            message: message.to_owned(),
        }
    }
}

/// `data.session`: empty (the seed's `{}`) unless the check was made through a session.
fn session_object(session: Option<&SessionRef>) -> serde_json::Map<String, serde_json::Value> {
    match session.map(serde_json::to_value) {
        Some(Ok(serde_json::Value::Object(map))) => map,
        _ => serde_json::Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Reason;

    fn outcome(live: bool) -> CheckOutcome {
        CheckOutcome {
            reference: Uuid::parse_str("067cbed9-acda-4d30-97c2-7f8e0c2ad687").unwrap(),
            live,
            p_real: if live { 0.75 } else { 0.25 },
            threshold: 0.5,
            reason: if live { Reason::Live } else { Reason::Spoof },
            detail: if live {
                "Liveliness Detected"
            } else {
                "Liveliness Not Detected"
            }
            .to_owned(),
            face: Some(OutcomeFace {
                bbox: [1, 2, 3, 4],
                confidence: 0.5,
            }),
            model: "abc".to_owned(),
            receipt: None,
            signals: None,
            session: None,
        }
    }

    #[test]
    fn live_envelope_has_the_seed_fields_in_the_seed_order() {
        let body = serde_json::to_string(&CheckEnvelope::from(&outcome(true))).unwrap();
        assert_eq!(
            body,
            concat!(
                r#"{"status":"success","data":{"status":true,"detail":"Liveliness Detected","#,
                r#""response_code":"00","confidence":0.75,"confidence_in_percentage":75.0,"#,
                r#""verification":{"status":"VERIFIED","reference":"067cbed9-acda-4d30-97c2-7f8e0c2ad687"},"#,
                r#""widget_info":{},"session":{},"reason":"live","face":{"bbox":[1,2,3,4],"confidence":0.5},"#,
                r#""threshold":0.5,"model":"abc"},"message":"Face Liveliness successful"}"#
            )
        );
    }

    #[test]
    fn not_live_envelope() {
        let mut o = outcome(false);
        o.face = None;
        let v = serde_json::to_value(CheckEnvelope::from(&o)).unwrap();
        assert_eq!(v["status"], "success");
        assert_eq!(v["data"]["status"], false);
        assert_eq!(v["data"]["detail"], "Liveliness Not Detected");
        assert_eq!(v["data"]["verification"]["status"], "FAILED");
        assert_eq!(v["data"]["confidence_in_percentage"], 25.0);
        assert_eq!(v["message"], "Face Liveliness failed");
        assert!(v["data"].get("face").is_none());
    }

    #[test]
    fn a_session_check_names_its_session() {
        let mut o = outcome(true);
        let id = Uuid::new_v4();
        o.session = Some(SessionRef {
            id,
            reference_id: Some("applicant-9".into()),
        });
        let v = serde_json::to_value(CheckEnvelope::from(&o)).unwrap();
        assert_eq!(
            v["data"]["session"],
            serde_json::json!({"id": id, "reference_id": "applicant-9"})
        );
        o.session.as_mut().unwrap().reference_id = None;
        let v = serde_json::to_value(CheckEnvelope::from(&o)).unwrap();
        assert_eq!(v["data"]["session"], serde_json::json!({"id": id}));
    }
}

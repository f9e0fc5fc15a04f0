//! The check service: one check, whatever the front end. The HTTP API, `livecheck check` and
//! `livecheck eval` (and the sessions and receipts to come) all call [`CheckService::check`], and
//! what they report comes from the same types: [`CheckOutcome`] is what a front end says about a
//! verdict (the API envelope is built from it, and the audit row with [`CheckOutcome::audit`];
//! a row read back becomes the same outcome again), and [`CheckError`] is why there was none.
//!
//! **A decode failure is an input error, never a verdict.** Bytes that are not an image, in a
//! format livecheck does not decode, truncated or corrupt, or over the pixel or byte limits are
//! [`CheckError::Input`]: a 400 over HTTP, an error line (exit status 1) in `check`, a
//! `decode_error` non-response in `eval`. No front end ever reports `live` on them, and no audit
//! row is written for them (there is no verdict to explain).
//!
//! The service is synchronous and CPU-bound: callers run it where CPU work belongs (a CPU slot
//! of the server, a rayon pool of the CLI). It knows nothing of HTTP, SQL or the network.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::fetch::InputKind;
use crate::pipeline::{DecodeError, Pipeline, PipelineError, Precheck, Reason, Verdict};
use crate::store::{AuditRecord, ImageSource, SessionRef};

/// Why a check gave no verdict.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The bytes are not a usable image: the client's to fix.
    #[error(transparent)]
    Input(DecodeError),
    /// The models failed on a decodable image (an engine fault, a non-finite score, a box that
    /// gives no crop): ours to fix.
    #[error("inference failed: {0}")]
    Engine(PipelineError),
}

impl CheckError {
    /// A stable code: `not_an_image`, `unsupported_format`, `image_corrupt`, `too_many_pixels`
    /// (pixels or bytes over the limits) or `engine_error`.
    pub fn code(&self) -> &'static str {
        match self {
            CheckError::Input(e) => e.code(),
            CheckError::Engine(_) => "engine_error",
        }
    }

    /// Whether the input is at fault (as opposed to the service).
    pub fn is_input_error(&self) -> bool {
        matches!(self, CheckError::Input(_))
    }
}

impl From<PipelineError> for CheckError {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::Decode(d) => CheckError::Input(d),
            e @ (PipelineError::Engine(_) | PipelineError::Crop { .. }) => CheckError::Engine(e),
        }
    }
}

/// A verdict with the facts about the bytes it was made on.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub verdict: Verdict,
    /// Lowercase hex SHA-256 of the bytes as received.
    pub image_sha256: String,
    pub image_bytes: usize,
    /// The image signals (`data.signals` but `resubmission`, which needs the audit store).
    pub signals: Signals,
}

/// Largest preview frame [`CheckService::precheck`] takes, in bytes (the capture page sends
/// frames of at most 480 pixels a side, 20-60 KB as JPEG).
pub const MAX_PRECHECK_BYTES: usize = 256 * 1024;
/// Largest preview frame [`CheckService::precheck`] decodes, in pixels: a small file cannot make
/// it decode a large picture.
pub const MAX_PRECHECK_PIXELS: u64 = 1_000_000;

/// Runs checks with one loaded pipeline.
pub struct CheckService {
    pipeline: Arc<Pipeline>,
}

impl CheckService {
    pub fn new(pipeline: Arc<Pipeline>) -> Self {
        CheckService { pipeline }
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The model set's hash, as reported with every verdict.
    pub fn model_hash(&self) -> &str {
        self.pipeline.model_hash()
    }

    /// Decode, detect, classify and hash `bytes`. CPU-bound: run it on a CPU slot or a pool
    /// thread.
    pub fn check(&self, bytes: &[u8]) -> Result<Checked, CheckError> {
        self.check_with(bytes, None)
    }

    /// [`CheckService::check`], with the classifiers split over this thread and one `spare`
    /// lends when it has one idle ([`crate::pipeline::Spare`]): the same answer, sooner.
    pub fn check_with(
        &self,
        bytes: &[u8],
        spare: Option<&dyn crate::pipeline::Spare>,
    ) -> Result<Checked, CheckError> {
        use crate::pipeline::decode::LumaRead;
        // The double-compression signal counts the luma blocks the decode reads anyway.
        let mut scan = crate::signals::DoubleJpegScan::default();
        let (verdict, luma) =
            self.pipeline
                .check_with_luma(bytes, &mut |block| scan.visit(block), spare)?;
        let double_jpeg = match luma {
            LumaRead::Read(quant) => scan.finish(Some(quant)),
            LumaRead::Unreadable => scan.finish(None),
            LumaRead::Separately => crate::signals::double_jpeg(bytes),
        };
        let signals = crate::signals::examine_with(bytes, &verdict, double_jpeg);
        Ok(Checked {
            verdict,
            image_sha256: crate::sha256_hex(bytes),
            image_bytes: bytes.len(),
            signals,
        })
    }

    /// The quality gates alone on `bytes` (decode and detection, no classifiers, nothing
    /// hashed or stored): the capture page's framing guidance before its one check. CPU-bound
    /// like [`CheckService::check`].
    /// Preview frames are small: at most [`MAX_PRECHECK_BYTES`] and [`MAX_PRECHECK_PIXELS`].
    pub fn precheck(&self, bytes: &[u8]) -> Result<Precheck, CheckError> {
        let limits = crate::pipeline::DecodeLimits {
            max_bytes: MAX_PRECHECK_BYTES,
            max_pixels: MAX_PRECHECK_PIXELS,
        };
        let img = crate::pipeline::decode::decode(bytes, &limits).map_err(CheckError::Input)?;
        Ok(self.pipeline.precheck(&img)?)
    }

    /// What a front end reports about `checked` under a new `reference`.
    pub fn outcome(&self, checked: &Checked, reference: Uuid) -> CheckOutcome {
        let v = &checked.verdict;
        CheckOutcome {
            reference,
            live: v.live,
            p_real: f64::from(v.p_real),
            threshold: f64::from(v.threshold),
            reason: v.reason,
            detail: v.reason.sentence().to_owned(),
            face: v.face.map(|f| OutcomeFace {
                bbox: f.bbox,
                confidence: f64::from(f.confidence),
            }),
            model: self.model_hash().to_owned(),
            receipt: None,
            signals: Some(checked.signals.clone()),
            session: None,
        }
    }
}

/// The face a reported verdict is about.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutcomeFace {
    /// `[x, y, w, h]` in pixels of the upright image.
    pub bbox: [i32; 4],
    /// Detector confidence in [0, 1].
    pub confidence: f64,
}

/// What a front end reports about a verdict, whether just computed or read back from the audit
/// store (so the POST and the GET by reference answer with the same bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckOutcome {
    pub reference: Uuid,
    pub live: bool,
    /// Fused liveness probability; `p_real as f64` of the pipeline's f32.
    pub p_real: f64,
    pub threshold: f64,
    pub reason: Reason,
    /// The human sentence for `reason`, as it was when the verdict was made.
    pub detail: String,
    pub face: Option<OutcomeFace>,
    /// The model set's hash.
    pub model: String,
    /// The signed decision receipt (compact JWS), when the front end signs one.
    pub receipt: Option<String>,
    /// Facts about the picture reported beside the verdict (`data.signals`), when the front end
    /// looks for any.
    pub signals: Option<Signals>,
    /// The capture session the check was made through (`data.session`), if any.
    pub session: Option<SessionRef>,
}

pub use crate::signals::Signals;

impl CheckOutcome {
    /// Turn this outcome into a rejected re-submission (`reason: resubmitted_image`), keeping
    /// the score and the face it was made on.
    pub fn reject_as_resubmission(&mut self) {
        self.live = false;
        self.reason = Reason::ResubmittedImage;
        self.detail = Reason::ResubmittedImage.sentence().to_owned();
    }
}

/// Who asked for a check and how the image came: the audit row's context.
#[derive(Debug, Clone, PartialEq)]
pub struct Provenance {
    /// The API key (`None` when auth is disabled).
    pub key_id: Option<Uuid>,
    pub source: ImageSource,
    /// Host of the image URL, for URL inputs.
    pub url_host: Option<String>,
    pub engine: String,
    pub app_version: String,
    pub created_at: DateTime<Utc>,
}

impl CheckOutcome {
    /// What this outcome's signed receipt attests ([`crate::receipts`]).
    pub fn receipt_payload(
        &self,
        image_sha256: &str,
        provenance: &Provenance,
    ) -> crate::receipts::ReceiptPayload {
        crate::receipts::ReceiptPayload {
            reference: self.reference,
            key_id: provenance.key_id,
            iat: provenance.created_at.timestamp(),
            image_sha256: image_sha256.to_owned(),
            p_real: self.p_real,
            threshold: self.threshold,
            live: self.live,
            reason: self.reason.code().to_owned(),
            model: self.model.clone(),
            app_version: provenance.app_version.clone(),
            session: self.session.as_ref().map(|s| s.id.to_string()),
        }
    }

    /// The audit row of this outcome.
    pub fn audit(&self, checked: &Checked, provenance: Provenance) -> AuditRecord {
        let size = checked.verdict.image_size;
        AuditRecord {
            reference: self.reference,
            key_id: provenance.key_id,
            created_at: provenance.created_at,
            live: self.live,
            p_real: self.p_real,
            threshold: self.threshold,
            reason: self.reason,
            detail: self.detail.clone(),
            bbox: self.face.map(|f| f.bbox),
            detector_confidence: self.face.map(|f| f.confidence),
            image_sha256: checked.image_sha256.clone(),
            image_bytes: i64::try_from(checked.image_bytes).unwrap_or(i64::MAX),
            image_width: size.and_then(|s| i32::try_from(s[0]).ok()),
            image_height: size.and_then(|s| i32::try_from(s[1]).ok()),
            input_kind: provenance.source,
            url_host: provenance.url_host,
            model_hash: self.model.clone(),
            engine: provenance.engine,
            app_version: provenance.app_version,
            timings_ms: checked.verdict.timings,
            receipt: self.receipt.clone(),
            fingerprint: None,
            signals: self
                .signals
                .as_ref()
                .and_then(|s| serde_json::to_string(s).ok()),
            shadow: None,
            session: self.session.clone(),
        }
    }
}

/// The audit's coarse view of how the image came.
impl From<InputKind> for ImageSource {
    fn from(kind: InputKind) -> Self {
        match kind {
            InputKind::Url => ImageSource::Url,
            InputKind::DataUri | InputKind::Base64 => ImageSource::Base64,
        }
    }
}

impl From<&AuditRecord> for CheckOutcome {
    fn from(r: &AuditRecord) -> Self {
        CheckOutcome {
            reference: r.reference,
            live: r.live,
            p_real: r.p_real,
            threshold: r.threshold,
            reason: r.reason,
            detail: r.detail.clone(),
            face: match (r.bbox, r.detector_confidence) {
                (Some(bbox), Some(confidence)) => Some(OutcomeFace { bbox, confidence }),
                _ => None,
            },
            model: r.model_hash.clone(),
            receipt: r.receipt.clone(),
            signals: r
                .signals
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok()),
            session: r.session.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineError;
    use chrono::SubsecRound;

    #[test]
    fn decode_failures_are_input_errors_and_engine_faults_are_ours() {
        let e = CheckError::from(PipelineError::Decode(DecodeError::NotAnImage));
        assert!(e.is_input_error());
        assert_eq!(e.code(), "not_an_image");
        let e = CheckError::from(PipelineError::Decode(DecodeError::Corrupt("eof".into())));
        assert_eq!(e.code(), "image_corrupt");
        let e = CheckError::from(PipelineError::Engine(EngineError::Output {
            model: "m".into(),
            message: "NaN".into(),
        }));
        assert!(!e.is_input_error());
        assert_eq!(e.code(), "engine_error");
    }

    #[test]
    fn every_reason_code_reads_back_and_decode_codes_are_not_reasons() {
        for r in Reason::ALL {
            assert_eq!(Reason::from_code(r.code()), Some(r));
            assert_eq!(
                serde_json::to_value(r).unwrap(),
                serde_json::Value::from(r.code())
            );
        }
        for code in [
            "not_an_image",
            "unsupported_format",
            "image_corrupt",
            "too_many_pixels",
        ] {
            assert_eq!(Reason::from_code(code), None, "{code}");
        }
    }

    #[test]
    fn an_audit_row_read_back_gives_the_same_outcome() {
        let mut verdict = Verdict::quality(Reason::Spoof, 0.5);
        verdict.p_real = 0.25;
        verdict.face = Some(crate::pipeline::Face {
            bbox: [1, 2, 3, 4],
            confidence: 0.9,
        });
        verdict.image_size = Some([640, 480]);
        let checked = Checked {
            verdict,
            image_sha256: "ab".repeat(32),
            image_bytes: 1234,
            signals: Signals::default(),
        };
        let outcome = CheckOutcome {
            reference: Uuid::new_v4(),
            live: false,
            p_real: 0.25,
            threshold: 0.5,
            reason: Reason::Spoof,
            detail: Reason::Spoof.sentence().into(),
            face: Some(OutcomeFace {
                bbox: [1, 2, 3, 4],
                confidence: f64::from(0.9f32),
            }),
            model: "708e3dd2e45fc9c8".into(),
            receipt: Some("aGVhZGVy.cGF5bG9hZA.c2ln".into()),
            signals: Some(Signals {
                resubmission: Some(crate::resubmission::Resubmission {
                    seen_before: true,
                    first_seen: Some(Utc::now().trunc_subsecs(0)),
                    count: 2,
                    same_key: false,
                }),
                editor: Some(crate::signals::EditorSignal {
                    flagged: true,
                    software: Some("GIMP 2.10".into()),
                }),
                screenshot: Some(crate::signals::ScreenshotSignal {
                    flagged: false,
                    camera_exif: true,
                    screen_sized: false,
                }),
                double_jpeg: Some(crate::signals::DoubleJpegSignal {
                    flagged: false,
                    analysed: true,
                    quality: Some(92),
                    evidence: 1,
                }),
                face_share: Some(crate::signals::FaceShareSignal {
                    flagged: false,
                    share: Some(0.2817),
                }),
            }),
            session: Some(SessionRef {
                id: Uuid::new_v4(),
                reference_id: Some("applicant-1".into()),
            }),
        };
        let row = outcome.audit(
            &checked,
            Provenance {
                key_id: None,
                source: ImageSource::Base64,
                url_host: None,
                engine: "tract".into(),
                app_version: "0".into(),
                created_at: Utc::now(),
            },
        );
        assert_eq!((row.image_width, row.image_height), (Some(640), Some(480)));
        assert_eq!(row.image_bytes, 1234);
        assert_eq!(CheckOutcome::from(&row), outcome);
    }
}

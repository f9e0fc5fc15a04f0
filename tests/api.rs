//! The HTTP API end to end: the real server on 127.0.0.1:0 with the real models, a temporary
//! SQLite file (and PostgreSQL when `LIVECHECK_TEST_POSTGRES_URL` is set), and a real local image
//! server. Every URL used here points at loopback.

mod common;
#[path = "api/helpers.rs"]
mod helpers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use helpers::{on_each_backend, silentface, test_config, ImageServer, TestApp, CHECK};
use livecheck::server::AppConfig;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

const NO_CREDENTIALS: &str =
    r#"{"status":"failed","message":"Authentication credentials were not provided."}"#;
const INVALID_TOKEN: &str = r#"{"status":"failed","message":"Invalid token."}"#;
const MISSING_FIELDS: &str = r#"{"status":"failed","data":[],"message":"Missing required fields"}"#;
const NOT_FOUND: &str = r#"{"status":"failed","data":[],"message":"Not found."}"#;
const INTERNAL: &str = r#"{"status":"failed","data":[],"message":"Internal server error"}"#;

const IMAGES: [(&str, bool); 3] = [
    ("image_F1.jpg", false),
    ("image_F2.jpg", false),
    ("image_T1.jpg", true),
];

/// Status, headers and body of a response. Every response must carry an `x-request-id`.
async fn read(resp: reqwest::Response) -> (StatusCode, HeaderMap, String) {
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.text().await.unwrap();
    let id = headers
        .get("x-request-id")
        .unwrap_or_else(|| panic!("no x-request-id on {status} {body}"));
    assert!(!id.is_empty());
    (status, headers, body)
}

/// Asserts a 400 in the error envelope and returns its message.
fn bad_request_message(status: StatusCode, body: &str) -> String {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["status"], "failed", "{body}");
    assert_eq!(v["data"], serde_json::json!([]), "{body}");
    assert_eq!(v.as_object().unwrap().len(), 3, "{body}");
    let msg = v["message"].as_str().unwrap().to_owned();
    assert!(!msg.is_empty());
    msg
}

/// The JSON text of the first number under `key` in `body`.
fn raw_number<'a>(body: &'a str, key: &str) -> &'a str {
    let pat = format!("\"{key}\":");
    let start = body
        .find(&pat)
        .map(|i| i + pat.len())
        .unwrap_or_else(|| panic!("no {key}: {body}"));
    let rest = &body[start..];
    &rest[..rest.find([',', '}']).unwrap_or(rest.len())]
}

/// Asserts that `body` is the seed's verdict envelope, keys in the seed's order, and returns it.
fn assert_verdict(body: &str, live: bool) -> Value {
    let v: Value = serde_json::from_str(body).unwrap();
    let d = &v["data"];
    // The numbers as sent, parsed with Rust's correctly rounded parser (serde_json's default
    // float parser can be one ulp off, which made this comparison depend on the value).
    let (confidence_text, pct_text) = (
        raw_number(body, "confidence"),
        raw_number(body, "confidence_in_percentage"),
    );
    let confidence: f64 = confidence_text.parse().unwrap();
    let pct: f64 = pct_text.parse().unwrap();
    assert!((0.0..=1.0).contains(&confidence), "{body}");
    assert_eq!(pct, confidence * 100.0, "{body}");
    let reference = d["verification"]["reference"].as_str().unwrap();
    assert_eq!(Uuid::parse_str(reference).unwrap().get_version_num(), 4);
    let (detail, verification, message) = if live {
        (
            "Liveliness Detected",
            "VERIFIED",
            "Face Liveliness successful",
        )
    } else {
        (
            d["detail"].as_str().unwrap(),
            "FAILED",
            "Face Liveliness failed",
        )
    };
    let prefix = format!(
        concat!(
            r#"{{"status":"success","data":{{"status":{},"detail":{},"response_code":"00","#,
            r#""confidence":{},"confidence_in_percentage":{},"#,
            r#""verification":{{"status":"{}","reference":"{}"}},"widget_info":{{}},"session":{{}},"#
        ),
        live,
        serde_json::to_string(detail).unwrap(),
        confidence_text,
        pct_text,
        verification,
        reference,
    );
    assert!(
        body.starts_with(&prefix),
        "seed fields/order differ:\n{body}\n{prefix}"
    );
    assert!(
        body.ends_with(&format!(r#"}},"message":"{message}"}}"#)),
        "{body}"
    );
    assert_eq!(v.as_object().unwrap().len(), 3);
    // Additive fields.
    let reason = d["reason"].as_str().unwrap();
    assert_eq!(reason == "live", live, "{body}");
    assert_eq!(d["threshold"], 0.5);
    assert_eq!(d["model"], helpers::model_hash());
    assert!(
        d["receipt"]
            .as_str()
            .is_some_and(|r| r.split('.').count() == 3),
        "{body}"
    );
    v
}

fn reference_of(v: &Value) -> Uuid {
    Uuid::parse_str(v["data"]["verification"]["reference"].as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_request_answers_the_seed_envelope() {
    on_each_backend(test_config, |app| async move {
        // Exactly the seed's curl: header spelling and the pretty-printed body.
        let url = app.images.url("/img/image_T1.jpg");
        let body = format!("\n{{\n  \"image\": \"{url}\"\n}}\n");
        let resp = app
            .client
            .post(app.url(CHECK))
            .header("Content-Type", "application/json")
            .header("x-access-token", &app.token)
            .body(body)
            .send()
            .await
            .unwrap();
        let (status, headers, body) = read(resp).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(headers["content-type"], "application/json");
        let v = assert_verdict(&body, true);
        assert!(v["data"]["confidence"].as_f64().unwrap() > 0.9);
        let face = &v["data"]["face"];
        assert_eq!(face["bbox"].as_array().unwrap().len(), 4);
        assert!(face["confidence"].as_f64().unwrap() > 0.6);
        assert_eq!(app.audit_count().await, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_images_by_url_base64_and_data_uri() {
    on_each_backend(test_config, |app| async move {
        let mut oks = 0;
        for (name, live) in IMAGES {
            let bytes = silentface(name);
            let b64 = STANDARD.encode(&bytes);
            let inputs = [
                ("url", app.images.url(&format!("/img/{name}"))),
                ("base64", b64.clone()),
                ("base64", format!("data:image/jpeg;base64,{b64}")),
            ];
            let mut confidences = Vec::new();
            for (kind, image) in inputs {
                let (status, _, body) = read(app.check(&image).await).await;
                assert_eq!(status, StatusCode::OK, "{name} {kind}: {body}");
                oks += 1;
                let v = assert_verdict(&body, live);
                if !live {
                    assert_eq!(v["data"]["reason"], "spoof", "{name}");
                    assert_eq!(v["data"]["detail"], "Liveliness Not Detected");
                }
                confidences.push(v["data"]["confidence"].as_f64().unwrap());

                // The audit row: committed before the answer, describing this request only.
                let rec = app
                    .store
                    .get_audit(reference_of(&v), app.key_id)
                    .await
                    .unwrap()
                    .expect("audit row written before the response");
                assert_eq!(rec.live, live);
                // Parsed with Rust's correctly rounded parser (serde_json's can be one ulp off).
                let sent: f64 = raw_number(&body, "confidence").parse().unwrap();
                assert_eq!(rec.p_real, sent);
                assert_eq!(rec.threshold, 0.5);
                assert_eq!(rec.reason.code(), v["data"]["reason"].as_str().unwrap());
                assert_eq!(rec.detail, v["data"]["detail"].as_str().unwrap());
                assert_eq!(rec.image_sha256, hex::encode(Sha256::digest(&bytes)));
                assert_eq!(rec.image_bytes, bytes.len() as i64);
                assert!(rec.image_width.unwrap() > 0 && rec.image_height.unwrap() > 0);
                assert_eq!(rec.input_kind.code(), kind);
                if kind == "url" {
                    assert_eq!(rec.url_host.as_deref(), Some("127.0.0.1"));
                } else {
                    assert_eq!(rec.url_host, None);
                }
                assert_eq!(rec.model_hash, helpers::model_hash());
                assert_eq!(rec.engine, "tract");
                assert_eq!(rec.app_version, env!("CARGO_PKG_VERSION"));
                assert!(rec.timings_ms.total > 0.0);
                let bbox = v["data"]["face"]["bbox"].as_array().unwrap();
                let bbox: Vec<i32> = bbox.iter().map(|x| x.as_i64().unwrap() as i32).collect();
                assert_eq!(rec.bbox.unwrap().to_vec(), bbox);
                // Nothing of the URL beyond the host, and never the token.
                let dump = format!("{rec:?}");
                assert!(!dump.contains("/img/") && !dump.contains(&app.token));
            }
            // Same bytes, same verdict, whatever the transport.
            assert!(confidences.windows(2).all(|w| w[0] == w[1]), "{name}");
        }
        assert_eq!(app.audit_count().await, oks);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_by_reference_only_for_the_key_that_made_it() {
    on_each_backend(test_config, |app| async move {
        let b64 = STANDARD.encode(silentface("image_F1.jpg"));
        let (status, _, posted) = read(app.check(&b64).await).await;
        assert_eq!(status, StatusCode::OK, "{posted}");
        let reference = reference_of(&assert_verdict(&posted, false));
        let path = format!("{CHECK}{reference}/");

        // Own key, with and without the trailing slash: the same bytes as the POST.
        for p in [path.clone(), path.trim_end_matches('/').to_owned()] {
            let (status, _, body) = read(app.get(&p, Some(&app.token)).await).await;
            assert_eq!(status, StatusCode::OK, "{p}");
            assert_eq!(body, posted);
        }
        // Another key, an unknown reference, a malformed one: 404 in the envelope.
        let (status, _, body) = read(app.get(&path, Some(&app.other_token)).await).await;
        assert_eq!((status, body.as_str()), (StatusCode::NOT_FOUND, NOT_FOUND));
        let unknown = format!("{CHECK}{}/", Uuid::new_v4());
        let (status, _, body) = read(app.get(&unknown, Some(&app.token)).await).await;
        assert_eq!((status, body.as_str()), (StatusCode::NOT_FOUND, NOT_FOUND));
        let (status, _, body) = read(
            app.get(&format!("{CHECK}not-a-uuid/"), Some(&app.token))
                .await,
        )
        .await;
        assert_eq!((status, body.as_str()), (StatusCode::NOT_FOUND, NOT_FOUND));
        // No key, bad key.
        let (status, _, body) = read(app.get(&path, None).await).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::UNAUTHORIZED, NO_CREDENTIALS)
        );
        let (status, _, body) = read(app.get(&path, Some("lc_nope")).await).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::UNAUTHORIZED, INVALID_TOKEN)
        );
        assert_eq!(app.audit_count().await, 1);
    })
    .await;
}

/// The payload segment of `token` replaced by `payload` (signature kept).
fn with_payload(token: &str, payload: &Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(payload).unwrap()),
        parts[2]
    )
}

/// `token` checked by jsonwebtoken (ring's Ed25519), independently of livecheck's own code.
fn independent_verify(token: &str, jwks: &Value) -> Result<Value, String> {
    use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
    let kid = decode_header(token).map_err(|e| e.to_string())?.kid;
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"].as_str() == kid.as_deref())
        .ok_or("unknown kid")?;
    let key =
        DecodingKey::from_ed_components(jwk["x"].as_str().unwrap()).map_err(|e| e.to_string())?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    decode::<Value>(token, &key, &validation)
        .map(|d| d.claims)
        .map_err(|e| e.to_string())
}

/// Every verdict carries a receipt that verifies from the JWKS, with livecheck's verifier and
/// with an independent JOSE implementation, states exactly what the envelope says, comes back
/// unchanged from GET by reference, and fails when any field is altered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_carry_signed_receipts_that_verify_from_the_jwks() {
    on_each_backend(test_config, |app| async move {
        let (status, h, jwks_text) = read(app.get("/.well-known/jwks.json", None).await).await;
        assert_eq!(status, StatusCode::OK);
        assert!(h["cache-control"].to_str().unwrap().contains("max-age"));
        let jwks_json: Value = serde_json::from_str(&jwks_text).unwrap();
        let jwks = livecheck::receipts::Jwks::parse(&jwks_text).unwrap();
        assert_eq!(jwks.keys[0].kid, helpers::receipt_key().kid());
        for (name, live) in [("image_T1.jpg", true), ("image_F1.jpg", false)] {
            let bytes = silentface(name);
            let (status, _, posted) = read(app.check(&STANDARD.encode(&bytes)).await).await;
            assert_eq!(status, StatusCode::OK, "{posted}");
            let v = assert_verdict(&posted, live);
            let d = &v["data"];
            let token = d["receipt"].as_str().expect("a receipt");
            let ours = livecheck::receipts::verify(token, &jwks).unwrap();
            let theirs = independent_verify(token, &jwks_json).unwrap();
            assert_eq!(theirs, serde_json::to_value(&ours).unwrap());
            assert_eq!(ours.reference, reference_of(&v));
            assert_eq!(ours.key_id, Some(app.key_id));
            assert_eq!(ours.image_sha256, hex::encode(Sha256::digest(&bytes)));
            assert_eq!(ours.p_real, d["confidence"].as_f64().unwrap());
            assert_eq!(ours.threshold, d["threshold"].as_f64().unwrap());
            assert_eq!(ours.live, live);
            assert_eq!(ours.reason, d["reason"].as_str().unwrap());
            assert_eq!(ours.model, helpers::model_hash());
            assert_eq!(ours.app_version, env!("CARGO_PKG_VERSION"));
            assert_eq!(ours.session, None);
            let now = chrono::Utc::now().timestamp();
            assert!(
                (now - 120..=now + 1).contains(&ours.iat),
                "iat {}",
                ours.iat
            );
            // GET by reference: the same bytes, receipt included.
            let path = format!("{CHECK}{}/", reference_of(&v));
            let (_, _, got) = read(app.get(&path, Some(&app.token)).await).await;
            assert_eq!(got, posted);
            // Any altered field breaks the signature, for both verifiers.
            let payload = theirs.as_object().unwrap();
            for field in payload.keys() {
                let mut forged = theirs.clone();
                forged[field] = match &theirs[field] {
                    Value::Bool(b) => Value::Bool(!b),
                    Value::Number(n) => serde_json::json!(n.as_f64().unwrap() + 1.0),
                    Value::Null => Value::String(Uuid::new_v4().to_string()),
                    Value::String(x) => Value::String(format!("{x}0")),
                    other => panic!("unexpected {other}"),
                };
                let forged = with_payload(token, &forged);
                assert!(
                    matches!(
                        livecheck::receipts::verify(&forged, &jwks),
                        Err(livecheck::receipts::ReceiptError::BadSignature(_))
                    ),
                    "{field}"
                );
                assert!(independent_verify(&forged, &jwks_json).is_err(), "{field}");
            }
        }
    })
    .await;
}

/// The Silent-Face sample (upright, as livecheck decodes it: the file has an EXIF orientation)
/// re-encoded as PNG at half size: a near-copy with other bytes.
fn half_size_png(name: &str) -> Vec<u8> {
    let bgr = livecheck::pipeline::decode::decode(&silentface(name), &Default::default()).unwrap();
    let rgb: Vec<u8> = bgr
        .data
        .chunks_exact(3)
        .flat_map(|p| [p[2], p[1], p[0]])
        .collect();
    let img = image::DynamicImage::ImageRgb8(
        image::RgbImage::from_raw(bgr.width, bgr.height, rgb).unwrap(),
    );
    let small = img.resize_exact(
        img.width() / 2,
        img.height() / 2,
        image::imageops::FilterType::Triangle,
    );
    let mut out = std::io::Cursor::new(Vec::new());
    small.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Re-submission detection end to end, on both backends: a first submission is new; the same
/// bytes again (same key) and a half-size PNG copy (another key) are reported with the count,
/// the first sighting and whether the key had sent it; a different picture is not; GET by
/// reference answers the same signals; the stored hashes are keyed (the server's secret gives
/// them, another secret does not, and the raw SHA-256 is stored only in its own column).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubmissions_are_reported_with_keyed_hashes() {
    on_each_backend(test_config, |app: TestApp| async move {
        let f1 = STANDARD.encode(silentface("image_F1.jpg"));
        let signal = |v: &Value| v["data"]["signals"]["resubmission"].clone();
        let post = |token: String, image: String| {
            let app = &app;
            async move {
                let (status, _, body) = read(app.check_with(&token, &image).await).await;
                assert_eq!(status, StatusCode::OK, "{body}");
                serde_json::from_str::<Value>(&body).unwrap()
            }
        };
        let first = post(app.token.clone(), f1.clone()).await;
        assert_eq!(
            signal(&first),
            serde_json::json!({"seen_before": false, "first_seen": null, "count": 0, "same_key": false})
        );
        let before = chrono::Utc::now();
        let again = post(app.token.clone(), f1.clone()).await;
        let r = signal(&again);
        assert_eq!(r["seen_before"], true, "{again}");
        assert_eq!(r["count"], 1);
        assert_eq!(r["same_key"], true);
        let first_seen: chrono::DateTime<chrono::Utc> =
            r["first_seen"].as_str().unwrap().parse().unwrap();
        assert!(first_seen <= before, "{first_seen} {before}");
        // Reported, not rejected: the verdict is the picture's own.
        assert_eq!(again["data"]["reason"], first["data"]["reason"]);

        let copy = post(
            app.other_token.clone(),
            STANDARD.encode(half_size_png("image_F1.jpg")),
        )
        .await;
        let r = signal(&copy);
        assert_eq!(r["seen_before"], true, "a half-size PNG copy: {copy}");
        assert_eq!(r["count"], 2);
        assert_eq!(r["same_key"], false, "the other key never sent it");
        assert_eq!(r["first_seen"].as_str().unwrap(), first_seen.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));

        let other = post(app.token.clone(), STANDARD.encode(silentface("image_T1.jpg"))).await;
        assert_eq!(signal(&other)["seen_before"], false, "{other}");

        // GET by reference: the same signals.
        let reference = reference_of(&copy);
        let (status, _, body) = read(
            app.get(&format!("{CHECK}{reference}/"), Some(&app.other_token))
                .await,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let got: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(signal(&got), signal(&copy));
        // The image signals beside it, read back the same from the audit row.
        for name in ["editor", "screenshot", "double_jpeg", "face_share"] {
            assert!(copy["data"]["signals"][name]["flagged"].is_boolean(), "{name}: {copy}");
        }
        assert_eq!(copy["data"]["signals"]["double_jpeg"]["analysed"], false, "a PNG");
        assert_eq!(first["data"]["signals"]["double_jpeg"]["analysed"], true, "a JPEG");
        assert_eq!(got["data"]["signals"], copy["data"]["signals"]);

        // What is stored: keyed hashes only.
        let row = app
            .store
            .get_audit(reference_of(&first), app.key_id)
            .await
            .unwrap()
            .unwrap();
        let fp = row.fingerprint.clone().expect("a fingerprint");
        let img = livecheck::pipeline::decode::decode(
            &silentface("image_F1.jpg"),
            &Default::default(),
        )
        .unwrap();
        let print = livecheck::pipeline::print::ImagePrint::of_image(&img).unwrap();
        let ours = helpers::print_key().fingerprint(&row.image_sha256, Some(&print), row.reference);
        assert_eq!(fp.image_tag, ours.image_tag);
        assert_eq!(fp.bands, ours.bands);
        let stranger = livecheck::resubmission::PrintKey::generate().fingerprint(
            &row.image_sha256,
            Some(&print),
            row.reference,
        );
        assert_ne!(fp.image_tag, stranger.image_tag);
        let opened = helpers::print_key()
            .open(fp.sealed.as_deref().unwrap(), row.reference)
            .unwrap();
        assert!(opened.distance(&print) < 1e-3);
        let stored = format!("{}{:?}{:?}", fp.image_tag, fp.bands, fp.sealed);
        assert!(!stored.contains(&row.image_sha256));
        assert!(!stored.contains(&format!("{:016x}", print.bits())));
    })
    .await;
}

/// `--reject-resubmissions`: the second submission of a picture fails with
/// `resubmitted_image`, and its receipt says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_resubmissions_fail_the_check() {
    let config = || AppConfig {
        reject_resubmissions: true,
        ..test_config()
    };
    on_each_backend(config, |app: TestApp| async move {
        let jwks = livecheck::receipts::Jwks {
            keys: helpers::receipt_key().jwks().keys,
        };
        let image = STANDARD.encode(silentface("image_F1.jpg"));
        let (_, _, body) = read(app.check(&image).await).await;
        let first: Value = serde_json::from_str(&body).unwrap();
        assert_ne!(first["data"]["reason"], "resubmitted_image");
        let (status, _, body) = read(app.check_with(&app.other_token, &image).await).await;
        assert_eq!(status, StatusCode::OK);
        let second: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(second["data"]["status"], false, "{body}");
        assert_eq!(second["data"]["reason"], "resubmitted_image");
        assert_eq!(second["data"]["verification"]["status"], "FAILED");
        assert_eq!(second["message"], "Face Liveliness failed");
        assert_eq!(
            second["data"]["detail"],
            livecheck::pipeline::Reason::ResubmittedImage.sentence()
        );
        assert_eq!(second["data"]["signals"]["resubmission"]["count"], 1);
        let payload =
            livecheck::receipts::verify(second["data"]["receipt"].as_str().unwrap(), &jwks)
                .unwrap();
        assert_eq!(payload.reason, "resubmitted_image");
        assert!(!payload.live);
    })
    .await;
}

/// The audit row `reference` of the main key.
async fn audit_row(app: &TestApp, reference: Uuid) -> livecheck::store::AuditRecord {
    app.store
        .get_audit(reference, app.key_id)
        .await
        .unwrap()
        .expect("the audit row")
}

/// Shadow scoring: with a second model set, the answer is the live set's and arrives while the
/// shadow scorer is held (so it never waits for it); once released, the audit row gets the
/// shadow set's verdict on the same picture, as `pipeline.check` of that set gives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_scores_land_in_the_audit_row_after_the_answer() {
    let shadow = Arc::new(
        livecheck::load_pipeline(
            Some("minifas128"),
            Some(&common::models()),
            livecheck::pipeline::PipelineConfig::default(),
        )
        .unwrap(),
    );
    let expected = shadow.check(&silentface("image_F1.jpg")).unwrap();
    let config = {
        let shadow = shadow.clone();
        move || AppConfig {
            shadow_pipeline: Some(livecheck::server::shadow::ShadowSet(shadow.clone())),
            ..test_config()
        }
    };
    on_each_backend(config, |mut app: TestApp| {
        let shadow = shadow.clone();
        let expected = expected.clone();
        async move {
            assert!(app.shadow_pause.is_some());
            let (status, _, body) = read(
                app.check(&STANDARD.encode(silentface("image_F1.jpg")))
                    .await,
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["data"]["model"], helpers::model_hash());
            let reference = reference_of(&v);
            let row = audit_row(&app, reference).await;
            assert_eq!(
                row.shadow, None,
                "answered while the shadow scorer was held"
            );
            drop(app.shadow_pause.take());
            let deadline = Instant::now() + Duration::from_secs(60);
            let score = loop {
                if let Some(s) = audit_row(&app, reference).await.shadow {
                    break s;
                }
                assert!(Instant::now() < deadline, "no shadow score after 60 s");
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            assert_eq!(score.model, shadow.model_hash());
            assert_ne!(score.model, helpers::model_hash());
            assert_eq!(score.live, expected.live);
            assert_eq!(score.reason, expected.reason);
            assert!((score.p_real - f64::from(expected.p_real)).abs() < 1e-9);
            // GET by reference still answers the live set's verdict.
            let (_, _, body) = read(
                app.get(&format!("{CHECK}{reference}/"), Some(&app.token))
                    .await,
            )
            .await;
            let got: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(got["data"]["model"], helpers::model_hash());
        }
    })
    .await;
}

/// Rotation: a receipt signed before the key was rotated still verifies from the JWKS a server
/// with the new key publishes (new key first); a fresh key without `--retire` does not list it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_signed_before_a_rotation_still_verify() {
    use livecheck::receipts::{verify, Jwks, ReceiptError, ReceiptKey};
    let old = Arc::new(ReceiptKey::generate());
    let new = Arc::new(ReceiptKey::rotate(&old));
    let receipts = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let key = old.clone();
    let sink = receipts.clone();
    on_each_backend(
        move || AppConfig {
            receipt_key: Some(key.clone()),
            ..test_config()
        },
        |app| {
            let sink = sink.clone();
            async move {
                let (_, _, body) = read(
                    app.check(&STANDARD.encode(silentface("image_T1.jpg")))
                        .await,
                )
                .await;
                let v: Value = serde_json::from_str(&body).unwrap();
                let r = v["data"]["receipt"].as_str().unwrap().to_owned();
                sink.lock().unwrap().push(r);
            }
        },
    )
    .await;
    let key = new.clone();
    let signed = receipts.lock().unwrap().clone();
    assert!(!signed.is_empty());
    on_each_backend(
        move || AppConfig {
            receipt_key: Some(key.clone()),
            ..test_config()
        },
        |app| {
            let signed = signed.clone();
            let new_kid = new.kid().to_owned();
            async move {
                let (_, _, text) = read(app.get("/.well-known/jwks.json", None).await).await;
                let jwks = Jwks::parse(&text).unwrap();
                assert_eq!(jwks.keys[0].kid, new_kid);
                let json: Value = serde_json::from_str(&text).unwrap();
                for r in &signed {
                    verify(r, &jwks).unwrap();
                    independent_verify(r, &json).unwrap();
                }
            }
        },
    )
    .await;
    let revoked = ReceiptKey::generate().jwks();
    assert!(matches!(
        verify(&receipts.lock().unwrap()[0], &revoked),
        Err(ReceiptError::UnknownKid(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_cases_in_the_seed_envelope() {
    on_each_backend(test_config, |app| async move {
        let url = app.url(CHECK);
        let good = serde_json::json!({"image": app.images.url("/img/image_T1.jpg")}).to_string();

        // Authentication: byte-exact seed bodies, checked before the body is looked at.
        let resp = app
            .client
            .post(&url)
            .header("content-type", "application/json")
            .body(good.clone())
            .send()
            .await
            .unwrap();
        let (status, _, body) = read(resp).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::UNAUTHORIZED, NO_CREDENTIALS)
        );
        let resp = app
            .client
            .post(&url)
            .header("x-access-token", "")
            .body("garbage")
            .send()
            .await
            .unwrap();
        let (status, _, body) = read(resp).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::UNAUTHORIZED, NO_CREDENTIALS)
        );
        for bad in [
            "lc_0000000000000000000000000000000000000000",
            "x",
            &format!("{}x", app.token),
        ] {
            let resp = app
                .client
                .post(&url)
                .header("x-access-token", bad)
                .header("content-type", "application/json")
                .body(good.clone())
                .send()
                .await
                .unwrap();
            let (status, _, body) = read(resp).await;
            assert_eq!(
                (status, body.as_str()),
                (StatusCode::UNAUTHORIZED, INVALID_TOKEN),
                "{bad}"
            );
        }
        // A revoked key stops working at once.
        let (revoked, revoked_token) = app.store.create_key("revoked").await.unwrap();
        assert!(app.store.revoke_key(revoked.id).await.unwrap());
        let resp = app
            .client
            .post(&url)
            .header("x-access-token", &revoked_token)
            .header("content-type", "application/json")
            .body(good.clone())
            .send()
            .await
            .unwrap();
        let (status, _, body) = read(resp).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::UNAUTHORIZED, INVALID_TOKEN)
        );

        // Missing, empty or non-string image: byte-exact.
        for body in [
            r#"{}"#,
            r#"{"image":""}"#,
            r#"{"image":"   "}"#,
            r#"{"image":null}"#,
            r#"{"image":42}"#,
            r#"{"image":["http://127.0.0.1/x.jpg"]}"#,
            r#"{"picture":"http://127.0.0.1/x.jpg"}"#,
        ] {
            let (status, _, got) = read(app.check_raw(body).await).await;
            assert_eq!(
                (status, got.as_str()),
                (StatusCode::BAD_REQUEST, MISSING_FIELDS),
                "{body}"
            );
        }

        // Malformed JSON and wrong shapes.
        for body in [
            "",
            "{",
            r#"{"image": "x""#,
            "image=abc",
            r#"{"image":"a",}"#,
        ] {
            let (status, _, got) = read(app.check_raw(body).await).await;
            let msg = bad_request_message(status, &got);
            assert!(msg.contains("not valid JSON"), "{body}: {msg}");
        }
        for body in ["[]", r#""http://127.0.0.1/x.jpg""#, "null"] {
            let (status, _, got) = read(app.check_raw(body).await).await;
            let msg = bad_request_message(status, &got);
            assert!(msg.contains("JSON object"), "{body}: {msg}");
        }

        // Wrong or missing content type.
        for ct in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            None,
        ] {
            let mut req = app
                .client
                .post(&url)
                .header("x-access-token", &app.token)
                .body(good.clone());
            if let Some(ct) = ct {
                req = req.header("content-type", ct);
            }
            let (status, _, got) = read(req.send().await.unwrap()).await;
            let msg = bad_request_message(status, &got);
            assert_eq!(msg, "Content-Type must be application/json", "{ct:?}");
        }

        // Images that are not usable.
        let t1 = silentface("image_T1.jpg");
        let cases: Vec<(String, &str)> = vec![
            (
                STANDARD.encode(b"hello, this is text and not an image"),
                "not a valid image",
            ),
            (STANDARD.encode(&t1[..2000]), "could not be decoded"),
            ("data:text/plain;base64,aGVsbG8=".to_owned(), "image/"),
            ("%%% not base64 %%%".to_owned(), "base64"),
            ("ftp://127.0.0.1/x.jpg".to_owned(), "ftp"),
            (app.images.url("/text"), "not a valid image"),
            (app.images.url("/missing"), "404"),
            (app.images.url("/img/nope.jpg"), "404"),
        ];
        for (image, want) in &cases {
            let (status, _, got) = read(app.check(image).await).await;
            let msg = bad_request_message(status, &got);
            assert!(
                msg.contains(want),
                "{}: {msg}",
                &image[..image.len().min(60)]
            );
        }
        // A connection refused by a closed loopback port.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let (status, _, got) = read(app.check(&format!("http://{closed}/x.jpg")).await).await;
        let msg = bad_request_message(status, &got);
        assert!(msg.starts_with("Could not fetch image"), "{msg}");

        // Unknown route and wrong method: the envelope too.
        let (status, _, got) = read(app.get("/nope", Some(&app.token)).await).await;
        assert_eq!((status, got.as_str()), (StatusCode::NOT_FOUND, NOT_FOUND));
        let (status, _, got) = read(app.get(CHECK, Some(&app.token)).await).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            got,
            r#"{"status":"failed","data":[],"message":"Method not allowed."}"#
        );

        // No verdict, no audit row.
        assert_eq!(app.audit_count().await, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_generated_or_propagated() {
    on_each_backend(test_config, |app| async move {
        let (_, h1, _) = read(app.get("/healthz", None).await).await;
        let (_, h2, _) = read(app.get("/healthz", None).await).await;
        let id1 = h1["x-request-id"].to_str().unwrap();
        assert!(Uuid::parse_str(id1).is_ok(), "{id1}");
        assert_ne!(id1, h2["x-request-id"].to_str().unwrap());
        let resp = app
            .client
            .post(app.url(CHECK))
            .header("x-request-id", "trace-abc-123")
            .send()
            .await
            .unwrap();
        let (status, h, _) = read(resp).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(h["x-request-id"], "trace-abc-123");
    })
    .await;
}

fn rate_limited_config() -> AppConfig {
    AppConfig {
        rate_limit_per_minute: std::num::NonZeroU32::new(3),
        ..test_config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_rate_limit_answers_429_with_headers() {
    on_each_backend(rate_limited_config, |app| async move {
        let b64 = STANDARD.encode(silentface("image_T1.jpg"));
        let (status, h, body) = read(app.check(&b64).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let reference = reference_of(&assert_verdict(&body, true));
        assert_eq!(h["x-ratelimit-limit"], "3");
        assert_eq!(h["x-ratelimit-remaining"], "2");
        let reset: u64 = h["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
        assert!((1..=20).contains(&reset), "{reset}");
        // Refused requests count too.
        for _ in 0..2 {
            let (status, _, body) = read(app.check_raw("{}").await).await;
            assert_eq!(
                (status, body.as_str()),
                (StatusCode::BAD_REQUEST, MISSING_FIELDS)
            );
        }
        let (status, h, body) = read(app.check(&b64).await).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "failed");
        assert_eq!(v["data"], serde_json::json!([]));
        assert!(v["message"]
            .as_str()
            .unwrap()
            .contains("Rate limit exceeded"));
        let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=20).contains(&retry), "{retry}");
        assert_eq!(h["x-ratelimit-limit"], "3");
        assert_eq!(h["x-ratelimit-remaining"], "0");
        assert_eq!(h["x-ratelimit-reset"].to_str().unwrap(), retry.to_string());

        // Another key has its own budget; authentication still comes first.
        let resp = app
            .client
            .post(app.url(CHECK))
            .header("x-access-token", &app.other_token)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let (status, _, body) = read(resp).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::BAD_REQUEST, MISSING_FIELDS)
        );
        let resp = app
            .client
            .post(app.url(CHECK))
            .body("{}")
            .send()
            .await
            .unwrap();
        let (status, _, body) = read(resp).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::UNAUTHORIZED, NO_CREDENTIALS)
        );
        // Reading a result is not a check: still allowed.
        let (status, _, _) = read(
            app.get(&format!("{CHECK}{reference}/"), Some(&app.token))
                .await,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(app.audit_count().await, 1);
    })
    .await;
}

fn small_body_config() -> AppConfig {
    AppConfig {
        // T1 as base64 (98892 bytes) is over, F1 (86616 bytes) under.
        max_body_bytes: 96 * 1024,
        ..test_config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_is_413() {
    on_each_backend(small_body_config, |app| async move {
        let want = r#"{"status":"failed","data":[],"message":"Request body is larger than the limit of 98304 bytes"}"#;
        // Over the cap, with a Content-Length...
        let big = serde_json::json!({"image": STANDARD.encode(silentface("image_T1.jpg"))}).to_string();
        assert!(big.len() > 96 * 1024);
        let (status, _, body) = read(app.check_raw(big.clone()).await).await;
        assert_eq!((status, body.as_str()), (StatusCode::PAYLOAD_TOO_LARGE, want));
        // ...and streamed without one.
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            big.as_bytes().chunks(8192).map(|c| Ok(c.to_vec())).collect();
        let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
        let (status, _, got) = read(app.check_raw(body).await).await;
        assert_eq!((status, got.as_str()), (StatusCode::PAYLOAD_TOO_LARGE, want));
        // Just under the cap is read and judged normally.
        let b64 = STANDARD.encode(silentface("image_F1.jpg"));
        assert!(b64.len() < 96 * 1024 - 20, "{}", b64.len());
        let (status, _, body) = read(app.check(&b64).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(app.audit_count().await, 1);
    })
    .await;
}

fn short_body_timeout_config() -> AppConfig {
    AppConfig {
        body_timeout: Duration::from_millis(800),
        ..test_config()
    }
}

/// A client that announces a body and stalls gets 408 in the envelope once the body timeout
/// has passed, no check runs, and the server goes on answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_request_body_is_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    on_each_backend(short_body_timeout_config, |app| async move {
        let mut conn = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        let head = format!(
            "POST {CHECK} HTTP/1.1\r\nhost: {}\r\nx-access-token: {}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"image\": \"",
            app.addr, app.token
        );
        let start = Instant::now();
        conn.write_all(head.as_bytes()).await.unwrap();
        let want = r#"{"status":"failed","data":[],"message":"Request body was not received within 0.8 s"}"#;
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).ends_with(want) {
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
                .await
                .expect("no response to a stalled body")
                .unwrap();
            assert!(n > 0, "closed without the envelope: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        let elapsed = start.elapsed();
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(elapsed >= Duration::from_millis(750), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
        assert_eq!(app.audit_count().await, 0);
        // A body sent in time is checked as usual.
        let b64 = STANDARD.encode(silentface("image_F1.jpg"));
        let (status, _, body) = read(app.check(&b64).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(app.audit_count().await, 1);
    })
    .await;
}

fn small_image_config() -> AppConfig {
    AppConfig {
        // F1 (64962 bytes) fits, T1 (74168 bytes) does not.
        max_image_bytes: 70_000,
        ..test_config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_byte_and_pixel_caps_apply_to_urls_and_base64() {
    on_each_backend(small_image_config, |app| async move {
        let t1 = silentface("image_T1.jpg");
        assert!(t1.len() > 70_000);
        for image in [
            app.images.url("/img/image_T1.jpg"),
            STANDARD.encode(&t1),
            format!("data:image/jpeg;base64,{}", STANDARD.encode(&t1)),
        ] {
            let (status, _, body) = read(app.check(&image).await).await;
            let msg = bad_request_message(status, &body);
            assert!(msg.contains("too large") && msg.contains("70000"), "{msg}");
        }
        // The pixel cap (decompression bombs): a JPEG whose header declares 60000x60000.
        let mut bomb = silentface("image_F1.jpg");
        let sof = bomb
            .windows(2)
            .position(|w| w == [0xFF, 0xC0] || w == [0xFF, 0xC2])
            .unwrap();
        bomb[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]);
        let (status, _, body) = read(app.check(&STANDARD.encode(&bomb)).await).await;
        let msg = bad_request_message(status, &body);
        assert!(
            msg.starts_with("Image too large") && msg.contains("60000x60000"),
            "{msg}"
        );

        let (status, _, body) = read(app.check(&app.images.url("/img/image_F1.jpg")).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(app.audit_count().await, 1);
    })
    .await;
}

fn short_timeout_config() -> AppConfig {
    let mut c = test_config();
    c.fetch.total_timeout = Duration::from_millis(600);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_image_server_trips_the_fetch_timeout() {
    on_each_backend(short_timeout_config, |app| async move {
        let start = Instant::now();
        let (status, _, body) =
            read(app.check(&app.images.url("/slow/5000/image_T1.jpg")).await).await;
        let elapsed = start.elapsed();
        let msg = bad_request_message(status, &body);
        assert_eq!(
            msg,
            "Could not fetch image: image URL took too long to respond"
        );
        assert!(elapsed >= Duration::from_millis(550), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
        assert_eq!(app.images.hits(), 1);
        // A slow-but-in-time server is fine.
        let (status, _, body) =
            read(app.check(&app.images.url("/slow/100/image_T1.jpg")).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(app.audit_count().await, 1);
    })
    .await;
}

fn no_allow_list_config() -> AppConfig {
    let mut c = test_config();
    c.fetch.allow = Vec::new();
    c
}

/// With no allow-list, loopback targets in every spelling are refused before any connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_loopback_refused_without_allow_list() {
    on_each_backend(no_allow_list_config, |app| async move {
        let port = app.images.addr.port();
        let v6 = ImageServer::start_on("[::1]:0").await;
        let mut urls = vec![
            format!("http://127.0.0.1:{port}/img/image_T1.jpg"),
            format!("http://127.1:{port}/img/image_T1.jpg"),
            format!("http://2130706433:{port}/img/image_T1.jpg"),
            format!("http://0x7f.0.0.1:{port}/img/image_T1.jpg"),
            format!("http://0177.0.0.1:{port}/img/image_T1.jpg"),
            format!("http://localhost:{port}/img/image_T1.jpg"),
            format!("http://[::ffff:127.0.0.1]:{port}/img/image_T1.jpg"),
            format!("http://user:pass@127.0.0.1:{port}/img/image_T1.jpg"),
            format!("http://127.0.0.1:{port}/redirect?to=http://127.0.0.1:{port}/img/image_T1.jpg"),
        ];
        if let Some(v6) = &v6 {
            urls.push(format!("http://[::1]:{}/img/image_T1.jpg", v6.addr.port()));
        }
        for url in &urls {
            let (status, _, body) = read(app.check(url).await).await;
            let msg = bad_request_message(status, &body);
            assert!(msg.starts_with("Could not fetch image: "), "{url}: {msg}");
        }
        assert_eq!(app.images.hits(), 0, "a refused target was contacted");
        if let Some(v6) = &v6 {
            assert_eq!(v6.hits(), 0, "a refused [::1] target was contacted");
        }
        assert_eq!(app.audit_count().await, 0);
    })
    .await;
}

/// With 127.0.0.1/32 allowed, a redirector there cannot bounce the fetch to other loopback
/// targets (127.0.0.2, [::1], localhost): every hop is checked again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_redirects_are_revalidated_with_allow_list() {
    on_each_backend(test_config, |app| async move {
        let other = ImageServer::start_on("127.0.0.2:0").await;
        let v6 = ImageServer::start_on("[::1]:0").await;
        let redirect = |to: String| app.images.url(&format!("/redirect?to={to}"));
        let mut targets = vec![format!(
            "http://localhost:{}/img/image_T1.jpg",
            app.images.addr.port()
        )];
        if let Some(o) = &other {
            targets.push(o.url("/img/image_T1.jpg"));
        }
        if let Some(v6) = &v6 {
            targets.push(v6.url("/img/image_T1.jpg"));
        }
        for target in &targets {
            let (status, _, body) = read(app.check(&redirect(target.clone())).await).await;
            let msg = bad_request_message(status, &body);
            assert!(msg.contains("not allowed"), "{target}: {msg}");
        }
        // Directly, too.
        if let Some(o) = &other {
            let (status, _, body) = read(app.check(&o.url("/img/image_T1.jpg")).await).await;
            bad_request_message(status, &body);
            assert_eq!(
                o.hits(),
                0,
                "127.0.0.2 is outside the allow-list but was contacted"
            );
        }
        if let Some(v6) = &v6 {
            assert_eq!(
                v6.hits(),
                0,
                "[::1] is outside the allow-list but was contacted"
            );
        }
        // Only the redirector (allowed) was contacted, once per redirect test.
        assert_eq!(app.images.hits(), targets.len());
        // A redirect that stays inside the allow-list is followed.
        let (status, _, body) = read(
            app.check(&redirect(app.images.url("/img/image_T1.jpg")))
                .await,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_verdict(&body, true);
        assert_eq!(app.audit_count().await, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_metrics_and_openapi() {
    on_each_backend(test_config, |app| async move {
        let (status, _, body) = read(app.get("/healthz", None).await).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, r#"{"status":"ok"}"#)
        );
        let (status, _, body) = read(app.get("/readyz", None).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "ready");
        assert_eq!(v["database"], "ok");
        assert_eq!(v["models"], "loaded");
        assert_eq!(v["model"], helpers::model_hash());

        // One verdict, one 401, then the counters.
        let (status, _, _) = read(app.check(&app.images.url("/img/image_T1.jpg")).await).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _, _) = read(app.client.post(app.url(CHECK)).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, h, text) = read(app.get("/metrics", None).await).await;
        assert_eq!(status, StatusCode::OK);
        assert!(h["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        for line in [
            format!(
                r#"livecheck_http_requests_total{{method="POST",route="{CHECK}",status="200"}} 1"#
            ),
            format!(
                r#"livecheck_http_requests_total{{method="POST",route="{CHECK}",status="401"}} 1"#
            ),
            r#"livecheck_http_requests_total{method="GET",route="/readyz",status="200"} 1"#
                .to_owned(),
            r#"livecheck_verdicts_total{live="true",reason="live"} 1"#.to_owned(),
            r#"livecheck_stage_duration_seconds_count{stage="detect"} 1"#.to_owned(),
            r#"livecheck_stage_duration_seconds_count{stage="classify"} 1"#.to_owned(),
            r#"livecheck_stage_duration_seconds_count{stage="fetch"} 1"#.to_owned(),
            r#"livecheck_stage_duration_seconds_count{stage="audit"} 1"#.to_owned(),
            r#"livecheck_stage_duration_seconds_bucket{stage="detect",le="+Inf"} 1"#.to_owned(),
            "livecheck_checks_in_flight 0".to_owned(),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(
            text.contains(r#"livecheck_stage_duration_seconds_bucket{stage="detect",le="0.005"}"#)
        );

        let (status, _, body) = read(app.get("/openapi.json", None).await).await;
        assert_eq!(status, StatusCode::OK);
        let doc: Value = serde_json::from_str(&body).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            CHECK,
            "/api/onboarding/biometrics/face/liveliness_check/{reference}/",
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
        ] {
            assert!(paths.contains_key(p), "openapi lacks {p}");
        }
        assert_eq!(
            doc["components"]["securitySchemes"]["api_key"]["in"],
            "header"
        );

        // Database gone: not ready.
        app.store.close().await;
        let (status, _, body) = read(app.get("/readyz", None).await).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["database"], "unreachable");
    })
    .await;
}

fn one_slot_config() -> AppConfig {
    AppConfig {
        max_concurrent_checks: 1,
        max_queued_checks: 0,
        ..test_config()
    }
}

async fn wait_for_hits(server: &ImageServer, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.hits() < n {
        assert!(Instant::now() < deadline, "image server never reached");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One CPU slot and no queue: of a burst of parallel checks, those that find the slot taken are
/// refused at once with 503, the rest are judged and stored. (Which ones collide depends on
/// timing; that some do is certain, since 12 checks arrive within milliseconds and each takes
/// tens of milliseconds.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_fails_fast_with_503_and_retry_after() {
    on_each_backend(one_slot_config, |app| async move {
        let app = Arc::new(app);
        let b64 = STANDARD.encode(silentface("image_F1.jpg"));
        let mut burst = Vec::new();
        for _ in 0..12 {
            let (app, b64) = (app.clone(), b64.clone());
            burst.push(tokio::spawn(async move {
                let start = Instant::now();
                let r = read(app.check(&b64).await).await;
                (r, start.elapsed())
            }));
        }
        let (mut ok, mut busy) = (0, 0);
        for h in burst {
            let ((status, h, body), elapsed) = h.await.unwrap();
            match status {
                StatusCode::OK => ok += 1,
                StatusCode::SERVICE_UNAVAILABLE => {
                    busy += 1;
                    assert_eq!(h["retry-after"], "1");
                    assert_eq!(
                        body,
                        r#"{"status":"failed","data":[],"message":"Server is busy; retry after 1 s"}"#
                    );
                    assert!(elapsed < Duration::from_secs(2), "did not fail fast: {elapsed:?}");
                }
                other => panic!("{other}: {body}"),
            }
        }
        assert!(ok >= 1 && busy >= 1, "ok {ok}, busy {busy}");
        assert_eq!(app.audit_count().await, ok);
        let (_, _, metrics) = read(app.get("/metrics", None).await).await;
        assert!(
            metrics.contains(&format!(r#"livecheck_rejections_total{{cause="overloaded"}} {busy}"#)),
            "{metrics}"
        );
        assert!(metrics.lines().any(|l| l == "livecheck_checks_in_flight 0"), "{metrics}");
        // The slot is free again.
        let (status, _, body) = read(app.check(&b64).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_checks() {
    on_each_backend(test_config, |mut app| async move {
        let request = app
            .client
            .post(app.url(CHECK))
            .header("x-access-token", &app.token)
            .header("content-type", "application/json")
            .body(
                serde_json::json!({"image": app.images.url("/slow/800/image_T1.jpg")}).to_string(),
            );
        let in_flight = tokio::spawn(async move { read(request.send().await.unwrap()).await });
        wait_for_hits(&app.images, 1).await;
        app.begin_shutdown();
        let (status, _, body) = in_flight.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_verdict(&body, true);
        app.wait_stopped().await;
        // Stopped: no new connections.
        let fresh = reqwest::Client::builder().no_proxy().build().unwrap();
        assert!(fresh.get(app.url("/healthz")).send().await.is_err());
        assert_eq!(app.audit_count().await, 1);
    })
    .await;
}

/// What a proxy does: it opens a connection, then sends its POST. When shutdown begins between
/// the two, the request is answered (`Connection: close`), not closed unread (the proxy would
/// answer 502 and never replay the POST). A connection that never sends anything ends with the
/// header timeout, so it cannot hold the shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_requests_sent_on_connections_already_open() {
    let config = || AppConfig {
        header_timeout: Duration::from_secs(2),
        ..test_config()
    };
    on_each_backend(config, |mut app| async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut early = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        let _silent = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        let stopping = Instant::now();
        app.begin_shutdown();
        // Until the listener is closed: the server has gone past accepting.
        loop {
            match tokio::net::TcpStream::connect(app.addr).await {
                Err(_) => break,
                Ok(probe) => drop(probe),
            }
            assert!(
                stopping.elapsed() < Duration::from_secs(10),
                "still listening"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let body = serde_json::json!({"image": app.images.url("/img/image_T1.jpg")}).to_string();
        let request = format!(
            "POST {CHECK} HTTP/1.1\r\nhost: x\r\nx-access-token: {}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            app.token,
            body.len()
        );
        early.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), early.read_to_end(&mut answer))
            .await
            .expect("no answer within 30 s")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("\r\nconnection: close\r\n"),
            "{answer}"
        );
        let (_, body) = answer.split_once("\r\n\r\n").unwrap();
        assert_verdict(body, true);
        // The silent connection ended with the header timeout; nothing else held the stop.
        app.wait_stopped().await;
        assert!(
            stopping.elapsed() < Duration::from_secs(15),
            "{:?}",
            stopping.elapsed()
        );
        assert_eq!(app.audit_count().await, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_verdict_without_its_audit_row() {
    on_each_backend(test_config, |app: TestApp| async move {
        app.exec_sql("DROP TABLE audit").await;
        let b64 = STANDARD.encode(silentface("image_T1.jpg"));
        let (status, _, body) = read(app.check(&b64).await).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::INTERNAL_SERVER_ERROR, INTERNAL)
        );
    })
    .await;
}

/// `livecheck serve` as a process: flags, key created with `livecheck keys`, a check, transparent
/// huge pages off, and a clean exit on SIGTERM.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_binary_answers_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("serve.db").display());
    let token = helpers::create_key_cli(&db);
    let server =
        helpers::ServeProcess::spawn(&db, &["--rate-limit-per-minute", "5", "--log-json"], &[]);
    let addr = server.addr.clone();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let b64 = STANDARD.encode(silentface("image_T1.jpg"));
    let resp = client
        .post(format!("http://{addr}{CHECK}"))
        .header("x-access-token", &token)
        .header("content-type", "application/json")
        .body(serde_json::json!({ "image": b64 }).to_string())
        .send()
        .await
        .unwrap();
    let (status, h, body) = read(resp).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let verdict = assert_verdict(&body, true);
    assert_eq!(h["x-ratelimit-limit"], "5");
    // Without --receipt-key, the key was created beside the database on first start, and
    // `receipts verify` checks the receipt from the served JWKS.
    assert!(dir.path().join("receipt-key.json").is_file());
    let receipt = verdict["data"]["receipt"].as_str().unwrap().to_owned();
    let jwks_url = format!("http://{addr}/.well-known/jwks.json");
    let verify = |token: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_livecheck"))
            .args([
                "receipts",
                "verify",
                "--allow-fetch-from",
                "127.0.0.1/32",
                "--jwks",
            ])
            .args([jwks_url.as_str(), token])
            .output()
            .unwrap()
    };
    let out = tokio::task::block_in_place(|| verify(&receipt));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let payload: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        payload["reference"],
        verdict["data"]["verification"]["reference"]
    );
    let mut forged: Vec<char> = receipt.chars().collect();
    let i = receipt.find('.').unwrap() + 5;
    forged[i] = if forged[i] == 'A' { 'B' } else { 'A' };
    let forged: String = forged.into_iter().collect();
    let out = tokio::task::block_in_place(|| verify(&forged));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad_signature"), "{stderr}");
    // Without --allow-fetch-from, loopback URLs are refused.
    let resp = client
        .post(format!("http://{addr}{CHECK}"))
        .header("x-access-token", &token)
        .header("content-type", "application/json")
        .body(serde_json::json!({ "image": format!("http://{addr}/healthz") }).to_string())
        .send()
        .await
        .unwrap();
    let (status, _, body) = read(resp).await;
    bad_request_message(status, &body);
    // Transparent huge pages are off for the process (its memory under load; src/main.rs).
    #[cfg(target_os = "linux")]
    {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
        let thp = status
            .lines()
            .find_map(|l| l.strip_prefix("THP_enabled:"))
            .expect("no THP_enabled line in /proc/PID/status (kernel older than 5.0?)");
        assert_eq!(thp.trim(), "0", "transparent huge pages are on");
    }

    let (exit, logs) = tokio::task::spawn_blocking(move || server.stop("TERM"))
        .await
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    // JSON logs; the token and the image never appear in them.
    assert!(logs.contains(r#""message":"verdict""#), "{logs}");
    assert!(!logs.contains(&token));
    assert!(!logs.contains(&b64[..100]));
    let store = livecheck::store::Store::connect(&db).await.unwrap();
    assert_eq!(store.count_audit().await.unwrap(), 1);
    store.close().await;
}

/// Sixteen clients at once on two CPU slots are queued and all answered (the old fixed queue of
/// 2 running + 8 waiting refused most of such a burst): admission is by expected waiting time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_sixteen_is_queued_not_refused() {
    let config = || AppConfig {
        max_concurrent_checks: 2,
        max_queue_wait: AppConfig::default().max_queue_wait,
        max_queued_checks: AppConfig::default().max_queued_checks,
        ..test_config()
    };
    on_each_backend(config, |app| async move {
        let app = Arc::new(app);
        let b64 = STANDARD.encode(silentface("image_T1.jpg"));
        let burst: Vec<_> = (0..16)
            .map(|_| {
                let (app, b64) = (Arc::clone(&app), b64.clone());
                tokio::spawn(async move { read(app.check(&b64).await).await })
            })
            .collect();
        for h in burst {
            let (status, _, body) = h.await.unwrap();
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    })
    .await;
}

/// Authenticated keys are cached for `key_cache_ttl`: a key revoked meanwhile keeps working until
/// its entry expires (the documented bound), then gets 401. A key never cached stops at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_takes_effect_within_the_key_cache_ttl() {
    let config = || AppConfig {
        key_cache_ttl: Duration::from_secs(2),
        ..test_config()
    };
    on_each_backend(config, |app| async move {
        let (key, token) = app.store.create_key("cached").await.unwrap();
        let unknown_result = format!("{CHECK}{}/", Uuid::new_v4());
        let status = |resp: reqwest::Response| resp.status();
        // Authenticated (the reference is unknown: 404 after authentication), so now cached.
        let first = Instant::now();
        assert_eq!(
            status(app.get(&unknown_result, Some(&token)).await),
            StatusCode::NOT_FOUND
        );
        assert!(app.store.revoke_key(key.id).await.unwrap());
        let still = status(app.get(&unknown_result, Some(&token)).await);
        if first.elapsed() < Duration::from_millis(1500) {
            assert_eq!(still, StatusCode::NOT_FOUND, "served from the cache");
        }
        tokio::time::sleep(Duration::from_millis(2100).saturating_sub(first.elapsed())).await;
        assert_eq!(
            status(app.get(&unknown_result, Some(&token)).await),
            StatusCode::UNAUTHORIZED
        );
    })
    .await;
    // TTL zero: every request is looked up, so revocation is immediate even for a used key.
    let config = || AppConfig {
        key_cache_ttl: Duration::ZERO,
        ..test_config()
    };
    on_each_backend(config, |app| async move {
        let (key, token) = app.store.create_key("uncached").await.unwrap();
        let unknown_result = format!("{CHECK}{}/", Uuid::new_v4());
        let resp = app.get(&unknown_result, Some(&token)).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert!(app.store.revoke_key(key.id).await.unwrap());
        let resp = app.get(&unknown_result, Some(&token)).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    })
    .await;
}

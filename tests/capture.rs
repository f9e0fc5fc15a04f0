//! The capture page's server side, over real HTTP on 127.0.0.1:0 with the real models and a
//! SQLite file (no browser; tests/browser.rs drives the page in Chromium): the page and widget
//! files and their security headers, `capture_url`, the session lookup, the framing pre-check
//! (guidance from the real quality gates on real pictures, never spending the token, bounded),
//! and opt-in CORS for the browser endpoints.

mod common;
#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use helpers::{silentface, start, test_config, Backend, TestApp, CHECK, SESSIONS};
use livecheck::pipeline::{decode::decode, BgrImage, DecodeLimits, Reason};
use livecheck::server::AppConfig;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn app_with(config: AppConfig) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("livecheck.db").display());
    (start(Backend::Sqlite, db, config).await, dir)
}

async fn json_of(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")),
    )
}

async fn precheck(app: &TestApp, token: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let resp = app
        .client
        .post(app.url("/capture/precheck"))
        .header("x-session-token", token)
        .header("content-type", "image/jpeg")
        .body(body)
        .send()
        .await
        .unwrap();
    json_of(resp).await
}

fn sample(name: &str) -> BgrImage {
    decode(&silentface(name), &DecodeLimits::default()).unwrap()
}

/// `img` resized to `w x h` (triangle filter), as the page's canvas would send it.
fn resized(img: &BgrImage, w: u32, h: u32) -> BgrImage {
    let buf = image::RgbImage::from_raw(img.width, img.height, img.data.clone()).unwrap();
    let out = image::imageops::resize(&buf, w, h, image::imageops::FilterType::Triangle);
    BgrImage::from_raw(w, h, out.into_raw()).unwrap()
}

/// `inner` pasted at (`x`, `y`) on a `w x h` grey canvas.
fn on_canvas(inner: &BgrImage, w: u32, h: u32, x: u32, y: u32) -> BgrImage {
    let mut canvas = BgrImage::from_raw(w, h, vec![128u8; (w * h * 3) as usize]).unwrap();
    paste(&mut canvas, inner, x, y);
    canvas
}

fn paste(canvas: &mut BgrImage, inner: &BgrImage, x: u32, y: u32) {
    for row in 0..inner.height {
        let src = (row * inner.width * 3) as usize;
        let dst = (((y + row) * canvas.width + x) * 3) as usize;
        let n = (inner.width * 3) as usize;
        canvas.data[dst..dst + n].copy_from_slice(&inner.data[src..src + n]);
    }
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name}"))
        .to_str()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_widget_are_served_with_strict_headers() {
    let (app, _dir) = app_with(AppConfig {
        capture_frame_ancestors: "'self' https://bank.example".into(),
        ..test_config()
    })
    .await;
    let resp = app.get("/capture?session=ls_whatever", None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-type"), "text/html; charset=utf-8");
    let csp = header(&resp, "content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "require-trusted-types-for 'script'",
        "frame-ancestors 'self' https://bank.example",
    ] {
        assert!(csp.contains(directive), "{directive} not in {csp}");
    }
    assert_eq!(header(&resp, "referrer-policy"), "no-referrer");
    assert_eq!(header(&resp, "cache-control"), "no-store");
    assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
    assert!(header(&resp, "permissions-policy").contains("camera=(self)"));
    // Framing is allowed to the configured ancestors: no blanket X-Frame-Options.
    assert!(resp.headers().get("x-frame-options").is_none());
    let html = resp.text().await.unwrap();
    assert!(html.contains(r#"<script src="/capture.js""#), "{html}");
    assert!(!html.contains("<script>"), "inline script in the page");

    for (path, kind) in [
        ("/capture.js", "text/javascript; charset=utf-8"),
        ("/capture/page.js", "text/javascript; charset=utf-8"),
        ("/capture.css", "text/css; charset=utf-8"),
    ] {
        let resp = app.get(path, None).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&resp, "content-type"), kind, "{path}");
        assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
        let body = resp.text().await.unwrap();
        // Nothing is fetched from anywhere else: no absolute URL in the page's files.
        assert!(
            !body.contains("http://") && !body.contains("https://") && !body.contains("//cdn"),
            "{path} names another origin"
        );
    }
    assert!(app
        .get("/capture.js", None)
        .await
        .text()
        .await
        .unwrap()
        .contains("window.LiveCheck = { mount: mount"));

    // Default: no framing at all, old browsers included.
    let (app, _dir) = app_with(test_config()).await;
    let resp = app.get("/capture", None).await;
    assert!(header(&resp, "content-security-policy").ends_with("frame-ancestors 'none'"));
    assert_eq!(header(&resp, "x-frame-options"), "DENY");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_urls_and_session_lookup() {
    let (app, _dir) = app_with(test_config()).await;
    let data = app
        .new_session(&json!({"redirect_url": "https://bank.example/done?step=3"}))
        .await;
    let token = data["session_token"].as_str().unwrap();
    assert_eq!(
        data["capture_url"],
        format!("http://{}/capture?session={token}", app.addr)
    );

    // The lookup does not spend the token, and tells the page where to go after.
    for _ in 0..2 {
        let resp = app
            .client
            .get(app.url("/capture/session"))
            .header("x-session-token", token)
            .send()
            .await
            .unwrap();
        let (status, info) = json_of(resp).await;
        assert_eq!(status, StatusCode::OK, "{info}");
        assert_eq!(info["data"]["session_id"], data["session_id"]);
        assert_eq!(
            info["data"]["redirect_url"],
            "https://bank.example/done?step=3"
        );
        assert_eq!(info["data"]["expires_at"], data["expires_at"]);
    }
    let lookup = |t: Option<&str>| {
        let mut req = app.client.get(app.url("/capture/session"));
        if let Some(t) = t {
            req = req.header("x-session-token", t);
        }
        req.send()
    };
    let (status, v) = json_of(lookup(None).await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        v["message"],
        "Authentication credentials were not provided."
    );
    let (status, v) = json_of(lookup(Some("ls_nope")).await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(v["message"], "Invalid session token.");
    // An API key is not a session token.
    let (status, _) = json_of(lookup(Some(&app.token)).await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Spent by a check: the lookup says so.
    let resp = app
        .client
        .post(app.url(CHECK))
        .header("x-session-token", token)
        .header("content-type", "application/json")
        .body(json!({"image": STANDARD.encode(silentface("image_T1.jpg"))}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (status, v) = json_of(lookup(Some(token)).await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(v["message"], "Session token has already been used.");

    // Behind a proxy that names the public address.
    let (app, _dir) = app_with(AppConfig {
        public_url: Some("https://lc.bank.example/liveness".parse().unwrap()),
        ..test_config()
    })
    .await;
    let data = app.new_session(&json!({})).await;
    assert_eq!(
        data["capture_url"],
        format!(
            "https://lc.bank.example/liveness/capture?session={}",
            data["session_token"].as_str().unwrap()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prechecks_give_guidance_from_the_quality_gates() {
    let (app, _dir) = app_with(test_config()).await;
    let data = app.new_session(&json!({})).await;
    let token = data["session_token"].as_str().unwrap().to_owned();
    let t1 = sample("image_T1.jpg");
    let jpeg = |img: &BgrImage| common::encode_jpeg(img, 85);

    // The live sample as the page sends it (480 px wide): ready, with the face's box.
    let frame = resized(&t1, 480, 360);
    let (status, v) = precheck(&app, &token, jpeg(&frame)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        v["data"],
        json!({"ready": true, "guidance": "ready",
               "message": "Hold still. You can take the photo now.",
               "face_box": v["data"]["face_box"]})
    );
    let face: Vec<u32> = serde_json::from_value(v["data"]["face_box"].clone()).unwrap();
    assert!(face[2] > 50 && face[3] > 50, "{face:?}");

    let guidance = |v: &Value| v["data"]["guidance"].as_str().unwrap().to_owned();
    // Nothing there.
    let grey = BgrImage::from_raw(480, 360, vec![128; 480 * 360 * 3]).unwrap();
    let (_, v) = precheck(&app, &token, jpeg(&grey)).await;
    assert_eq!(guidance(&v), "no_face", "{v}");
    assert_eq!(v["data"]["ready"], false);
    // Two people.
    let half = resized(&t1, 320, 240);
    let mut pair = on_canvas(&half, 640, 240, 0, 0);
    paste(&mut pair, &half, 320, 0);
    let (_, v) = precheck(&app, &token, jpeg(&pair)).await;
    assert_eq!(guidance(&v), "one_face_only", "{v}");
    // Far away: the face (31 x 29 px) under the 32 px minimum, with room all around.
    let far = on_canvas(&resized(&t1, 96, 72), 480, 360, 180, 135);
    let (_, v) = precheck(&app, &token, jpeg(&far)).await;
    assert_eq!(guidance(&v), "move_closer", "{v}");
    // In the dark.
    let dark = BgrImage::from_raw(
        480,
        360,
        frame
            .data
            .iter()
            .map(|&p| (f32::from(p) * 0.12) as u8)
            .collect(),
    )
    .unwrap();
    let (_, v) = precheck(&app, &token, jpeg(&dark)).await;
    assert_eq!(guidance(&v), "more_light", "{v}");
    assert_eq!(
        v["data"]["message"],
        "It's too dark. Find more light, or face a window."
    );

    // Bad frames: clear errors in the envelope.
    let (status, v) = precheck(&app, &token, b"not an image".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (status, v) = precheck(&app, &token, vec![0u8; 300 * 1024]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    let big = resized(&t1, 1280, 960); // 1.2 MP: over the pre-check's pixel cap
    let (status, v) = precheck(&app, &token, jpeg(&big)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["message"].as_str().unwrap().contains("pixels"), "{v}");
    let resp = app
        .client
        .post(app.url("/capture/precheck"))
        .header("x-session-token", &token)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let (status, _) = precheck(&app, &app.token, jpeg(&frame)).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "an API key is no session token"
    );

    // None of this spent the token: the one check still goes through.
    let resp = app
        .client
        .post(app.url(CHECK))
        .header("x-session-token", &token)
        .header("content-type", "application/json")
        .body(json!({"image": STANDARD.encode(silentface("image_T1.jpg"))}).to_string())
        .send()
        .await
        .unwrap();
    let (status, v) = json_of(resp).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["verification"]["status"], "VERIFIED");
    // And after it, no more pre-checks.
    let (status, v) = precheck(&app, &token, jpeg(&frame)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(v["message"], "Session token has already been used.");
    // Pre-checks are not checks: no audit row beyond the one check.
    assert_eq!(app.audit_count().await, 1);
}

/// The pre-check is the check's own gates: on every picture, it stops where the check stops
/// (same reason), and passes exactly the pictures the check classifies; under the pipeline's
/// configuration, whatever it is (here also a strict `min_context_ratio`, so that close-ups
/// stop).
#[test]
fn the_precheck_stops_where_the_check_stops() {
    let t1 = sample("image_T1.jpg");
    let half = resized(&t1, 320, 240);
    let mut pair = on_canvas(&half, 640, 240, 0, 0);
    paste(&mut pair, &half, 320, 0);
    let mut pictures = vec![
        ("T1".to_owned(), t1.clone()),
        ("F1".to_owned(), sample("image_F1.jpg")),
        ("F2".to_owned(), sample("image_F2.jpg")),
        ("frame".to_owned(), resized(&t1, 480, 360)),
        ("pair".to_owned(), pair),
        (
            "far".to_owned(),
            on_canvas(&resized(&t1, 96, 72), 480, 360, 180, 135),
        ),
        (
            "grey".to_owned(),
            BgrImage::from_raw(64, 64, vec![128; 64 * 64 * 3]).unwrap(),
        ),
        ("tiny".to_owned(), resized(&t1, 24, 18)),
    ];
    // The devset's first pictures, when it is here (every kind of framing).
    if let Some(dir) = common::devset("the devset part of the pre-check agreement") {
        for row in common::devset_manifest(&dir).into_iter().take(60) {
            let bytes = std::fs::read(dir.join(&row["file"])).unwrap();
            if let Ok(img) = decode(&bytes, &DecodeLimits::default()) {
                pictures.push((row["file"].clone(), img));
            }
        }
    }
    let strict = livecheck::load_pipeline(
        Some("silentface"),
        Some(&common::models()),
        livecheck::pipeline::PipelineConfig {
            min_context_ratio: 2.0,
            ..Default::default()
        },
    )
    .unwrap();
    let mut stopped = std::collections::BTreeMap::<String, usize>::new();
    for pipeline in [&*helpers::pipeline(), &strict] {
        for (name, img) in &pictures {
            let pre = pipeline.precheck(img).unwrap();
            let check = pipeline.check_image(img).unwrap();
            let classified = matches!(check.reason, Reason::Live | Reason::Spoof);
            match pre.blocked {
                None => assert!(
                    classified,
                    "{name}: passed, the check said {:?}",
                    check.reason
                ),
                Some(r) => assert_eq!(r, check.reason, "{name}"),
            }
            assert_eq!(pre.face, check.face, "{name}");
            *stopped.entry(format!("{:?}", pre.blocked)).or_default() += 1;
        }
    }
    // Every gate stopped something, and something passed them all.
    for gate in [
        "None",
        "Some(NoFace)",
        "Some(MultipleFaces)",
        "Some(FaceTooSmall)",
        "Some(FaceTooClose)",
        "Some(ImageTooSmall)",
    ] {
        assert!(stopped.contains_key(gate), "{gate} never seen: {stopped:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prechecks_are_limited_per_session() {
    let (app, _dir) = app_with(test_config()).await;
    let a = app.new_session(&json!({})).await;
    let b = app.new_session(&json!({})).await;
    let a = a["session_token"].as_str().unwrap();
    let b = b["session_token"].as_str().unwrap();
    // Counted before the body is read or decoded: cheap frames that fail to decode count.
    let limit = livecheck::server::capture::PRECHECKS_PER_MINUTE;
    for i in 0..limit {
        let (status, v) = precheck(&app, a, b"x".to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "#{i}: {v}");
    }
    let resp = app
        .client
        .post(app.url("/capture/precheck"))
        .header("x-session-token", a)
        .header("content-type", "image/jpeg")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
    // Another session has its own allowance.
    let (status, _) = precheck(&app, b, b"x".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_is_opt_in_and_never_for_api_keys() {
    let origin = "http://127.0.0.1:4000";
    let preflight = |app: &TestApp, path: &str, from: &str, headers: &str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url(path))
            .header("origin", from)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", headers)
            .send()
    };
    let allowed = |resp: &reqwest::Response| {
        resp.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_owned())
    };

    let (app, _dir) = app_with(test_config()).await;
    let resp = preflight(&app, CHECK, origin, "content-type,x-session-token")
        .await
        .unwrap();
    assert_eq!(allowed(&resp), None, "CORS without --cors-origin");

    let (app, _dir) = app_with(AppConfig {
        cors_origins: vec![origin.into()],
        ..test_config()
    })
    .await;
    for path in [CHECK, "/capture/precheck", "/capture/session"] {
        let resp = preflight(&app, path, origin, "content-type,x-session-token")
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        assert_eq!(allowed(&resp).as_deref(), Some(origin), "{path}");
        let allow = header(&resp, "access-control-allow-headers").to_ascii_lowercase();
        assert!(allow.contains("x-session-token"), "{allow}");
        assert!(!allow.contains("x-access-token"), "{allow}");
        // Another origin is not allowed.
        let resp = preflight(&app, path, "http://127.0.0.1:4001", "x-session-token")
            .await
            .unwrap();
        assert_eq!(allowed(&resp), None, "{path}");
    }
    // Session creation (an API-key route) is never opened to browsers.
    let resp = preflight(&app, SESSIONS, origin, "x-access-token")
        .await
        .unwrap();
    assert_eq!(allowed(&resp), None);

    // A real cross-origin check carries the header the browser needs.
    let data = app.new_session(&json!({})).await;
    let resp = app
        .client
        .post(app.url(CHECK))
        .header("origin", origin)
        .header("x-session-token", data["session_token"].as_str().unwrap())
        .header("content-type", "application/json")
        .body(json!({"image": STANDARD.encode(silentface("image_F2.jpg"))}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(allowed(&resp).as_deref(), Some(origin));

    // Misconfiguration is refused at start.
    for bad in [
        vec!["*".to_owned()],
        vec!["http://127.0.0.1:4000/".to_owned()],
    ] {
        let built = livecheck::server::Application::build(
            AppConfig {
                cors_origins: bad.clone(),
                ..test_config()
            },
            helpers::pipeline(),
            app.store.clone(),
        );
        assert!(built.is_err(), "{bad:?} accepted");
    }
}

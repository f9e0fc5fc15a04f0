//! The browser flow end to end in real headless Chromium (Debian's `chromium`), driven by
//! playwright-core (`tests/browser/drive.mjs`; both installed by `scripts/browser-setup.sh`).
//!
//! The real server runs on 127.0.0.1:0 with the real models and a SQLite file; an "integrator"
//! server on another loopback port plays the bank's site (the redirect target, and a page that
//! embeds `/capture.js` cross-origin). Chromium's fake camera plays Y4M clips made here from the
//! upstream samples. What must hold:
//! - the live sample ends on "Verified", the attack sample on "Not verified", and the backend
//!   reads the same outcome from `GET .../sessions/{id}/`;
//! - the page follows the session's `redirect_url` with `session_id`;
//! - a refused camera shows the upload fallback with its message, and an uploaded photo is
//!   checked;
//! - at a 360 px wide mobile viewport nothing overflows;
//! - the photo can be taken with the keyboard alone, and axe-core finds no WCAG 2.1 A/AA
//!   violation on the camera, upload and result screens (contrast, labels, names, structure);
//! - the widget works embedded in another origin's page (with `--cors-origin`);
//! - no request leaves loopback, no CSP violation, no script error; screenshots are kept in
//!   `target/browser-e2e/`.

mod common;
#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::extract::Query;
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use helpers::{start, test_config, Backend, TestApp, SESSIONS};
use livecheck::server::AppConfig;
use serde_json::{json, Value};

/// Chromium and the driver, or why they are missing.
fn tools() -> Result<(PathBuf, PathBuf), String> {
    let chromium = std::env::var_os("LIVECHECK_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| {
            ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
        })
        .ok_or("no chromium (run scripts/browser-setup.sh)")?;
    let node_ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !node_ok {
        return Err("no node on PATH (run scripts/browser-setup.sh)".into());
    }
    let driver = common::root().join("tests/browser");
    if !driver
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return Err(
            "tests/browser/node_modules lacks playwright-core (run scripts/browser-setup.sh)"
                .into(),
        );
    }
    Ok((chromium, driver.join("drive.mjs")))
}

/// A one-frame Y4M clip (4:2:0, full-range BT.601, as `C420jpeg` says) of a sample, for
/// Chromium's `--use-file-for-fake-video-capture` (which plays it in a loop).
fn y4m(sample: &str) -> Vec<u8> {
    let img = livecheck::pipeline::decode::decode(
        &helpers::silentface(sample),
        &livecheck::pipeline::DecodeLimits::default(),
    )
    .unwrap();
    let (w, h) = ((img.width & !1) as usize, (img.height & !1) as usize);
    let px = |x: usize, y: usize| {
        let i = (y * img.width as usize + x) * 3;
        let [b, g, r] = [img.data[i], img.data[i + 1], img.data[i + 2]].map(f32::from);
        (r, g, b)
    };
    let mut out = format!("YUV4MPEG2 W{w} H{h} F10:1 Ip A1:1 C420jpeg\nFRAME\n").into_bytes();
    for y in 0..h {
        for x in 0..w {
            let (r, g, b) = px(x, y);
            out.push(
                (0.299 * r + 0.587 * g + 0.114 * b)
                    .round()
                    .clamp(0.0, 255.0) as u8,
            );
        }
    }
    let mut u = Vec::with_capacity(w * h / 4);
    let mut v = Vec::with_capacity(w * h / 4);
    for y in (0..h).step_by(2) {
        for x in (0..w).step_by(2) {
            let (mut r, mut g, mut b) = (0.0, 0.0, 0.0);
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let p = px(x + dx, y + dy);
                r += p.0 / 4.0;
                g += p.1 / 4.0;
                b += p.2 / 4.0;
            }
            u.push(
                (128.0 - 0.168_736 * r - 0.331_264 * g + 0.5 * b)
                    .round()
                    .clamp(0.0, 255.0) as u8,
            );
            v.push(
                (128.0 + 0.5 * r - 0.418_688 * g - 0.081_312 * b)
                    .round()
                    .clamp(0.0, 255.0) as u8,
            );
        }
    }
    out.extend(u);
    out.extend(v);
    out
}

/// The integrator's site: `/done` (the redirect target) and `/embed.html?lc=ORIGIN&token=T`, a
/// page of another origin that loads the widget from livecheck and mounts it.
fn integrator() -> Router {
    Router::new()
        .route(
            "/done",
            get(|| async { Html("<!doctype html><title>Done</title><p>Thanks</p>") }),
        )
        .route(
            "/favicon.ico",
            get(|| async { axum::http::StatusCode::NO_CONTENT }),
        )
        .route(
            "/embed.html",
            get(
                |Query(q): Query<std::collections::HashMap<String, String>>| async move {
                    let lc = q.get("lc").cloned().unwrap_or_default();
                    let token = q.get("token").cloned().unwrap_or_default();
                    // Test-only page: the values come from the test itself.
                    Html(format!(
                        "<!doctype html><meta name=viewport content='width=device-width'>\
                     <title>Bank onboarding</title><h1>Open your account</h1><div id=w></div>\
                     <script src='{lc}/capture.js'></script><script>\
                     LiveCheck.mount(document.getElementById('w'), {{sessionToken: '{token}', \
                     onResult: function (r) {{ window.__result = r; }}, \
                     onError: function (e) {{ window.__error = e; }}}});</script>"
                    ))
                },
            ),
        )
}

async fn create_session(app: &TestApp, body: Value) -> (String, String, String) {
    let d = app.new_session(&body).await;
    let field = |k: &str| d[k].as_str().unwrap().to_owned();
    (
        field("session_id"),
        field("session_token"),
        field("capture_url"),
    )
}

async fn session_status(app: &TestApp, id: &str) -> Value {
    let resp = app.get(&format!("{SESSIONS}{id}/"), Some(&app.token)).await;
    assert_eq!(resp.status(), 200);
    let v: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    v["data"].clone()
}

fn scenario<'a>(report: &'a Value, name: &str) -> &'a Value {
    let s = report["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no scenario {name}"));
    assert!(
        s.get("failure").is_none(),
        "{name} did not finish: {}\n{s:#}",
        s["failure"]
    );
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_page_in_chromium() {
    let (chromium, driver) = match tools() {
        Ok(t) => t,
        Err(why) => return common::skip_unless_ci("the Chromium end-to-end test", &why),
    };
    let site = common::TestServer::start(integrator()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = AppConfig {
        cors_origins: vec![site.base()],
        ..test_config()
    };
    let db = format!("sqlite://{}", dir.path().join("livecheck.db").display());
    let app = start(Backend::Sqlite, db, config).await;

    let out = common::root().join("target/browser-e2e");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let clip = |name: &str, sample: &str| -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, y4m(sample)).unwrap();
        path
    };
    let live_clip = clip("live.y4m", "image_T1.jpg");
    let attack_clip = clip("attack.y4m", "image_F2.jpg");
    let photo = common::silentface().join("image_T1.jpg");

    let done = format!("{}/done", site.base());
    let (live_id, _, live_url) = create_session(&app, json!({"redirect_url": done})).await;
    let (attack_id, _, attack_url) = create_session(&app, json!({})).await;
    let (denied_id, _, denied_url) = create_session(&app, json!({})).await;
    let (mobile_id, _, mobile_url) = create_session(&app, json!({})).await;
    let (embed_id, embed_token, _) = create_session(&app, json!({})).await;
    assert!(
        live_url.starts_with(&format!("http://{}/capture?session=ls_", app.addr)),
        "{live_url}"
    );
    let embed_url = format!(
        "{}/embed.html?lc=http://{}&token={embed_token}",
        site.base(),
        app.addr
    );
    let desktop = json!({"width": 1024, "height": 768});
    let config = json!({
        "chromium": chromium,
        "out": out,
        "scenarios": [
            {"name": "live", "url": live_url, "clip": live_clip, "camera": "grant",
             "viewport": desktop, "waitForUrl": format!("{done}?session_id={live_id}")},
            {"name": "attack", "url": attack_url, "clip": attack_clip, "camera": "grant",
             "viewport": desktop, "keyboard": true, "axe": true},
            {"name": "denied", "url": denied_url, "clip": live_clip, "camera": "deny",
             "viewport": desktop, "upload": photo, "axe": true},
            {"name": "mobile", "url": mobile_url, "clip": live_clip, "camera": "grant",
             "viewport": {"width": 360, "height": 640}, "mobile": true, "axe": true,
             "reducedMotion": true},
            {"name": "embed", "url": embed_url, "clip": live_clip, "camera": "grant",
             "viewport": desktop},
        ],
    });
    let config_path = dir.path().join("scenarios.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let run = tokio::process::Command::new("node")
        .arg(&driver)
        .arg(&config_path)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the Chromium driver ran for over 5 minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "driver failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("{stdout}"));

    // Live: verified on screen and for the backend; then the redirect with the session id.
    let live = scenario(&report, "live");
    assert_eq!(live["outcome"], "verified", "{live:#}");
    assert_eq!(live["title"], "Verified");
    assert_eq!(live["finalUrl"], format!("{done}?session_id={live_id}"));
    let status = session_status(&app, &live_id).await;
    assert_eq!(status["status"], "completed", "{status:#}");
    assert_eq!(status["result"]["status"], true);

    // Attack (photo taken with the keyboard alone): not verified, and the backend reads a failed
    // check.
    let attack = scenario(&report, "attack");
    assert_eq!(
        attack["keyboard"], true,
        "Tab never reached the capture button"
    );
    assert_eq!(attack["outcome"], "not_verified", "{attack:#}");
    assert_eq!(attack["title"], "Not verified");
    let status = session_status(&app, &attack_id).await;
    assert_eq!(status["status"], "completed");
    assert_eq!(status["result"]["status"], false);
    assert_eq!(status["result"]["reason"], "spoof");

    // Camera refused: the fallback says so, and an uploaded photo is checked.
    let denied = scenario(&report, "denied");
    let first = &denied["screens"][0];
    assert_eq!(first["screen"], "upload");
    assert_eq!(first["cameraError"], "NotAllowedError");
    assert!(
        first["status"]
            .as_str()
            .unwrap()
            .starts_with("Camera access was refused."),
        "{first:#}"
    );
    assert_eq!(denied["outcome"], "verified", "{denied:#}");
    assert_eq!(
        session_status(&app, &denied_id).await["result"]["status"],
        true
    );

    // 360 px wide: nothing wider than the viewport on any screen.
    let mobile = scenario(&report, "mobile");
    assert_eq!(mobile["outcome"], "verified", "{mobile:#}");
    assert_eq!(
        session_status(&app, &mobile_id).await["status"],
        "completed"
    );
    // It also asked for reduced motion: the oval does not animate (elsewhere it does).
    assert_eq!(mobile["ovalTransition"], "0s");
    assert_eq!(scenario(&report, "live")["ovalTransition"], "0.3s");
    for m in mobile["overflow"].as_array().unwrap() {
        assert_eq!(m["innerWidth"], 360, "{m}");
        assert!(
            m["scrollWidth"].as_u64().unwrap() <= 360,
            "overflow at 360 px: {m}"
        );
    }

    // Embedded in the integrator's page (another origin, CORS): the callback has the result.
    let embed = scenario(&report, "embed");
    assert_eq!(embed["outcome"], "verified", "{embed:#}");
    assert_eq!(embed["widgetResult"]["verified"], true);
    assert_eq!(embed["widgetResult"]["sessionId"], embed_id.as_str());

    // Everywhere: loopback only, no CSP violation, no script error, no accessibility
    // violation, screenshots kept.
    let audited: usize = report["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["accessibility"].as_array().unwrap().len())
        .sum();
    assert_eq!(audited, 6, "axe-core ran on 6 screens");
    for s in report["scenarios"].as_array().unwrap() {
        let name = &s["name"];
        for url in s["requests"].as_array().unwrap() {
            let url = url.as_str().unwrap();
            let parsed = url::Url::parse(url).unwrap();
            let local = matches!(parsed.scheme(), "data" | "blob")
                || parsed.host_str() == Some("127.0.0.1");
            assert!(local, "{name}: request outside loopback: {url}");
        }
        assert_eq!(s["cspViolations"], json!([]), "{name}: CSP violations");
        assert_eq!(
            s["pageErrors"],
            json!([]),
            "{name}: script errors: {:#}",
            s["requests"]
        );
        // Accessibility: no WCAG 2.1 A/AA violation found by axe-core on any screen audited.
        for audit in s["accessibility"].as_array().unwrap() {
            assert_eq!(audit["violations"], json!([]), "{name}: {audit:#}");
        }
        for shot in s["screenshots"].as_array().unwrap() {
            let path = Path::new(shot.as_str().unwrap());
            let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            assert!(len > 1000, "{name}: screenshot {} missing", path.display());
        }
    }
    eprintln!("screenshots in {}", out.display());
}

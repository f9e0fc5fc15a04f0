//! The `check` and `models` commands, run as a user would run them (the real binary).

mod common;
use common::livecheck;

use std::path::PathBuf;
use std::process::{Command, Output};

fn models() -> PathBuf {
    common::models()
}

fn lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn check_directory_prints_one_json_line_per_image() {
    let dir = common::silentface();
    let out = livecheck(&["check", "--threads", "2", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let l = lines(&out);
    assert_eq!(l.len(), 3);
    let live: Vec<bool> = l.iter().map(|v| v["live"].as_bool().unwrap()).collect();
    assert_eq!(live, vec![false, false, true]); // F1, F2, T1 in sorted order
    for v in &l {
        for key in [
            "file",
            "p_real",
            "confidence",
            "bbox",
            "detector_confidence",
            "reason",
            "scores",
        ] {
            assert!(!v[key].is_null(), "missing {key} in {v}");
        }
        for key in ["decode", "detect", "classify", "total"] {
            assert!(v["timings_ms"][key].as_f64().unwrap() >= 0.0);
        }
        assert_eq!(v["p_real"], v["confidence"]);
        assert_eq!(v["scores"]["MiniFASNetV2"].as_array().unwrap().len(), 3);
        // The image signals, as the API reports them (but re-submission, which needs a store).
        for signal in ["editor", "screenshot", "double_jpeg", "face_share"] {
            assert!(
                v["signals"][signal]["flagged"].is_boolean(),
                "{signal} in {v}"
            );
        }
        assert!(v["signals"].get("resubmission").is_none());
        assert_eq!(v["signals"]["double_jpeg"]["analysed"], true);
    }
    assert_eq!(l[0]["bbox"], serde_json::json!([178, 136, 223, 225]));
    // image_F1's face box is 223 pixels wide in a 480-pixel-wide picture.
    assert_eq!(l[0]["signals"]["face_share"]["share"], 0.4646);
}

#[test]
fn check_reports_undecodable_images_as_errors_never_verdicts() {
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("notes.jpg");
    std::fs::write(&text, b"this is not a jpeg").unwrap();
    let truncated = tmp.path().join("trunc.png");
    std::fs::write(&truncated, b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap();
    let live = common::silentface().join("image_T1.jpg");
    let out = livecheck(&[
        "check",
        text.to_str().unwrap(),
        truncated.to_str().unwrap(),
        live.to_str().unwrap(),
        "/nonexistent/file.jpg",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "failures give a non-zero exit status"
    );
    let l = lines(&out);
    assert_eq!(l.len(), 4);
    assert!(l[0]["error"]
        .as_str()
        .unwrap()
        .contains("not a valid image"));
    assert_eq!(l[0]["reason"], "not_an_image");
    // A decode failure is an input error (as over HTTP and in eval): an error line, no verdict.
    assert_eq!(l[1]["reason"], "image_corrupt");
    assert!(l[1].get("live").is_none(), "{}", l[1]);
    assert!(l[1]["error"]
        .as_str()
        .unwrap()
        .contains("truncated or corrupt"));
    assert_eq!(l[2]["live"], true);
    assert!(l[3].get("reason").is_none());
    assert!(l[3]["error"].as_str().unwrap().contains("cannot read"));
}

#[test]
fn check_pretty_and_threshold() {
    let live = common::silentface().join("image_T1.jpg");
    let out = livecheck(&[
        "check",
        "--pretty",
        "--threshold",
        "0.999",
        live.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("not live") && s.contains("spoof") && s.contains("p_real"),
        "{s}"
    );
    let out = livecheck(&["check", "--threshold", "1.5", live.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--threshold"));
}

#[test]
fn models_verify_and_fetch_from_directory() {
    let out = livecheck(&["models", "verify", models().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let tmp = tempfile::tempdir().unwrap();
    let to = tmp.path().join("m");
    let out = livecheck(&[
        "models",
        "fetch",
        "--from",
        models().to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = livecheck(&["models", "verify", to.to_str().unwrap()]);
    assert!(out.status.success());

    // Alter one file: verify names it, check refuses to start and says how to fix it.
    std::fs::write(to.join("MiniFASNetV1SE.onnx"), b"tampered").unwrap();
    let out = livecheck(&["models", "verify", to.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("MiniFASNetV1SE.onnx"));
    let img = common::silentface().join("image_T1.jpg");
    let out = livecheck(&[
        "check",
        "--models",
        to.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("MiniFASNetV1SE.onnx") && err.contains("models fetch"),
        "{err}"
    );

    // A file missing from --models falls back to the copy embedded in the binary (verified like
    // any file), and `models verify` says which source it used.
    std::fs::remove_file(to.join("MiniFASNetV2.onnx")).unwrap();
    std::fs::remove_file(to.join("MiniFASNetV1SE.onnx")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_livecheck"))
        .args([
            "check",
            "--models",
            to.to_str().unwrap(),
            img.to_str().unwrap(),
        ])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = livecheck(&["models", "verify", to.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("MiniFASNetV2.onnx (embedded in the binary)")
            && stdout.contains(&format!(
                "{}",
                to.join("retinaface_silentface.onnx").display()
            )),
        "{stdout}"
    );
    let out = livecheck(&[
        "models",
        "fetch",
        "--from",
        tmp.path().to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_fetch_from_url_base() {
    // A real HTTP server on loopback serving the model directory.
    let dir = models();
    let app = axum::Router::new().route(
        "/m/{file}",
        axum::routing::get(
            move |axum::extract::Path(file): axum::extract::Path<String>| {
                let dir = dir.clone();
                async move {
                    match std::fs::read(dir.join(file)) {
                        Ok(b) => (axum::http::StatusCode::OK, b),
                        Err(_) => (axum::http::StatusCode::NOT_FOUND, Vec::new()),
                    }
                }
            },
        ),
    );
    let server = common::TestServer::start(app).await;
    let tmp = tempfile::tempdir().unwrap();
    let to = tmp.path().to_path_buf();
    let base = format!("{}/m", server.base());
    let out = tokio::task::spawn_blocking(move || {
        livecheck(&[
            "models",
            "fetch",
            "--from",
            &base,
            "--to",
            to.to_str().unwrap(),
        ])
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "retinaface_silentface.onnx",
        "MiniFASNetV2.onnx",
        "MiniFASNetV1SE.onnx",
    ] {
        assert!(tmp.path().join(f).is_file());
    }
}

/// `livecheck ARGS` on the blocking pool, so that the test's own server keeps answering.
async fn livecheck_async(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        livecheck(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fetches_urls_under_the_address_policy() {
    let body = std::fs::read(common::silentface().join("image_T1.jpg")).unwrap();
    let app = axum::Router::new().fallback(move || {
        let body = body.clone();
        async move { ([(axum::http::header::CONTENT_TYPE, "image/jpeg")], body) }
    });
    let server = common::TestServer::start(app).await;
    let url = format!("{}/selfie.jpg?token=x", server.base());

    // Loopback is not public: refused before any connection, one error line, exit status 1.
    let out = livecheck_async(&["check", &url]).await;
    assert_eq!(out.status.code(), Some(1));
    let l = lines(&out);
    assert_eq!(l.len(), 1);
    assert_eq!(l[0]["file"], url.as_str());
    let err = l[0]["error"].as_str().unwrap();
    assert!(err.contains("cannot fetch image"), "{err}");
    assert_eq!(server.hits(), 0);

    // Opened explicitly: fetched and checked like the file (T1 is live), mixed with a local file.
    let file = common::silentface().join("image_F1.jpg");
    let out = livecheck_async(&[
        "check",
        "--allow-fetch-from",
        "127.0.0.1/32",
        &url,
        file.to_str().unwrap(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let l = lines(&out);
    assert_eq!(l.len(), 2);
    assert_eq!(l[0]["file"], url.as_str());
    assert_eq!(l[0]["live"], true);
    assert_eq!(l[1]["live"], false);
    assert_eq!(server.hits(), 1);

    // A malformed URL is a usage error before any model is loaded.
    let out = livecheck_async(&["check", "http://[::1"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid URL"));
}

/// From an empty directory, with no model files around and no `LIVECHECK_*` environment, the
/// binary uses the model files embedded in it (issue 12).
#[test]
fn check_and_serve_run_from_an_empty_directory_with_the_embedded_models() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("selfie.jpg");
    std::fs::copy(common::silentface().join("image_T1.jpg"), &img).unwrap();
    let run = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_livecheck"));
        cmd.args(args).current_dir(tmp.path());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("LIVECHECK_") {
                cmd.env_remove(k);
            }
        }
        cmd.output().unwrap()
    };
    let out = run(&["check", "selfie.jpg"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let l = lines(&out);
    assert_eq!(l.len(), 1);
    assert_eq!(l[0]["reason"], "live");
    // The default set (silentface-minifas128-calibrated) on the live sample.
    assert!((l[0]["p_real"].as_f64().unwrap() - 0.994918).abs() < 1e-3);
    for set in [
        "silentface",
        "silentface-minifas128",
        "minifas128",
        "silentface-minifas128-calibrated",
    ] {
        let out = run(&["models", "verify", "--model-set", set]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        assert_eq!(
            stdout.matches("(embedded in the binary)").count(),
            stdout.matches("ok ").count(),
            "{stdout}"
        );
    }

    // `serve` from the same empty directory (SQLite file created there), a key from `keys`, one
    // check over plain HTTP/1.1.
    let key = run(&["keys", "create", "--name", "t", "--json"]);
    assert!(key.status.success());
    let token = lines(&key)[0]["token"].as_str().unwrap().to_owned();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_livecheck"));
    cmd.args(["serve", "--bind", "127.0.0.1:0"])
        .current_dir(tmp.path())
        .stderr(std::process::Stdio::piped());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("LIVECHECK_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    // Keep reading the server's log until it exits (a closed pipe would fail its writes).
    let logs = std::thread::spawn(move || {
        let mut all = String::new();
        for l in std::io::BufRead::lines(stderr).map_while(Result::ok) {
            if let Some(a) = l.strip_prefix("livecheck listening on http://") {
                let _ = tx.send(a.to_owned());
            }
            all.push_str(&l);
            all.push('\n');
        }
        all
    });
    let addr = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("serve did not start");
    let http = |request: String| raw_http(&addr, &request);
    let ready = http("GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into());
    let answer = http(check_request(&token, &img));
    let _ = child.kill();
    let _ = child.wait();
    let logs = logs.join().unwrap();
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}\n{logs}");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}\n{logs}");
    assert!(answer.contains("VERIFIED"), "{answer}");
    assert!(tmp.path().join("livecheck.db").exists());
}

/// One request over a fresh connection (HTTP/1.1, `Connection: close`): the whole answer.
fn raw_http(addr: &str, request: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
}

/// A check request for the image file `img` with `token`.
fn check_request(token: &str, img: &std::path::Path) -> String {
    let body = format!(
        "{{\"image\":\"{}\"}}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            std::fs::read(img).unwrap()
        )
    );
    format!(
        "POST /api/onboarding/biometrics/face/liveliness_check/ HTTP/1.1\r\nHost: x\r\n\
         x-access-token: {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A log collector that goes away closes the server's stderr. Logging must not take the
/// requests with it: tracing-subscriber reported the failed write with `eprintln!`, which panicked
/// inside the request, and every check's connection was dropped unanswered.
#[test]
fn serve_keeps_answering_when_its_stderr_is_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let img = common::silentface().join("image_T1.jpg");
    let db = format!("sqlite://{}", tmp.path().join("l.db").display());
    let key = livecheck(&["keys", "create", "--name", "t", "--json", "--database", &db]);
    assert!(key.status.success());
    let token = lines(&key)[0]["token"].as_str().unwrap().to_owned();
    let mut child = Command::new(env!("CARGO_BIN_EXE_livecheck"))
        .args(["serve", "--bind", "127.0.0.1:0", "--database", &db])
        .env("RUST_LOG", "info")
        .env("LIVECHECK_DRAIN_GRACE", "0")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut addr = None;
    let mut line = String::new();
    while std::io::BufRead::read_line(&mut stderr, &mut line).unwrap_or(0) > 0 {
        if let Some(a) = line.trim().strip_prefix("livecheck listening on http://") {
            addr = Some(a.to_owned());
            break;
        }
        line.clear();
    }
    let addr = addr.expect("serve did not start");
    drop(stderr); // the collector is gone
    let answers: Vec<String> = (0..3)
        .map(|_| raw_http(&addr, &check_request(&token, &img)))
        .collect();
    let alive = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(alive, "serve exited");
    for a in answers {
        assert!(
            a.starts_with("HTTP/1.1 200") && a.contains("VERIFIED"),
            "{a:?}"
        );
    }
}

//! The `check` and `models` commands, run as a user would run them (the real binary).

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

fn models() -> PathBuf {
    common::models()
}

fn livecheck(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_livecheck"))
        .args(args)
        .env("LIVECHECK_MODEL_DIR", models())
        .output()
        .unwrap()
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
    }
    assert_eq!(l[0]["bbox"], serde_json::json!([178, 136, 223, 225]));
}

#[test]
fn check_reports_errors_and_quality_outcomes() {
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
    assert!(l[0]["error"].as_str().unwrap().contains("not an image"));
    assert_eq!(l[1]["reason"], "image_corrupt");
    assert_eq!(l[1]["live"], false);
    assert_eq!(l[2]["live"], true);
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let tmp = tempfile::tempdir().unwrap();
    let to = tmp.path().to_path_buf();
    let base = format!("http://{addr}/m");
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

/// A one-file HTTP server on 127.0.0.1 (std only): answers every request with `body` as
/// image/jpeg and counts the requests it saw.
struct ImageServer {
    port: u16,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

fn image_server(body: Vec<u8>) -> ImageServer {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            seen.fetch_add(1, Ordering::SeqCst);
            // Read the request head (small GET, no body).
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(&body);
        }
    });
    ImageServer { port, hits }
}

#[test]
fn check_fetches_urls_under_the_address_policy() {
    let body = std::fs::read(common::silentface().join("image_T1.jpg")).unwrap();
    let server = image_server(body);
    let url = format!("http://127.0.0.1:{}/selfie.jpg?token=x", server.port);

    // Loopback is not public: refused before any connection, one error line, exit status 1.
    let out = livecheck(&["check", &url]);
    assert_eq!(out.status.code(), Some(1));
    let l = lines(&out);
    assert_eq!(l.len(), 1);
    assert_eq!(l[0]["file"], url.as_str());
    let err = l[0]["error"].as_str().unwrap();
    assert!(err.contains("cannot fetch image"), "{err}");
    assert_eq!(server.hits.load(std::sync::atomic::Ordering::SeqCst), 0);

    // Opened explicitly: fetched and checked like the file (T1 is live), mixed with a local file.
    let file = common::silentface().join("image_F1.jpg");
    let out = livecheck(&[
        "check",
        "--allow-fetch-from",
        "127.0.0.1/32",
        &url,
        file.to_str().unwrap(),
    ]);
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
    assert_eq!(server.hits.load(std::sync::atomic::Ordering::SeqCst), 1);

    // A malformed URL is a usage error before any model is loaded.
    let out = livecheck(&["check", "http://[::1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid URL"));
}

/// From an empty directory, with no model files around and no `LIVECHECK_*` environment, the
/// binary uses the model files embedded in it (issue 12).
#[test]
fn check_runs_from_an_empty_directory_with_the_embedded_models() {
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
    assert!((l[0]["p_real"].as_f64().unwrap() - 0.993568).abs() < 1e-3);
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
}

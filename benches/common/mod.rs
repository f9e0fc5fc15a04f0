//! What the service benchmarks share: the upstream samples, a local image server, percentiles,
//! the CPU name and the docs/benchmarks.md section writer. Included by `load.rs` and `soak.rs`.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

#[path = "../../tests/api/helpers.rs"]
pub mod helpers;

#[allow(unused_imports)] // used by load.rs, not by soak.rs
pub use helpers::shared_dir;

use axum::extract::Path as UrlPath;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

pub const CHECK: &str = "/api/onboarding/biometrics/face/liveliness_check/";
/// The three upstream samples and whether each is live.
pub const IMAGES: [(&str, bool); 3] = [
    ("image_F1.jpg", false),
    ("image_F2.jpg", false),
    ("image_T1.jpg", true),
];

pub use helpers::silentface as read_image;

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Serves the samples at `/img/{name}` on 127.0.0.1:0.
pub async fn image_server() -> SocketAddr {
    let files: Arc<Vec<(String, Vec<u8>)>> = Arc::new(
        IMAGES
            .iter()
            .map(|(n, _)| ((*n).to_owned(), read_image(n)))
            .collect(),
    );
    let router = Router::new().route(
        "/img/{name}",
        get(move |UrlPath(name): UrlPath<String>| {
            let files = Arc::clone(&files);
            async move {
                match files.iter().find(|(n, _)| *n == name) {
                    Some((_, bytes)) => {
                        ([(header::CONTENT_TYPE, "image/jpeg")], bytes.clone()).into_response()
                    }
                    None => StatusCode::NOT_FOUND.into_response(),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

/// Replaces the section starting with `heading` (a `## ` line) of docs/benchmarks.md, up to the
/// next `## `, with `section`; or appends it.
pub fn write_docs(heading: &str, section: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/benchmarks.md");
    let old = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".to_owned());
    let marker = format!("{heading}\n");
    let new = match old.find(&marker) {
        Some(start) => {
            let rest = &old[start + 3..];
            let end = rest
                .find("\n## ")
                .map(|i| start + 3 + i + 1)
                .unwrap_or(old.len());
            let tail = &old[end..];
            let tail = if tail.is_empty() {
                String::new()
            } else {
                format!("\n{tail}")
            };
            format!("{}{}{}", &old[..start], section, tail)
        }
        None => format!(
            "{}\n{section}",
            old.trim_end_matches('\n').to_owned() + "\n"
        ),
    };
    std::fs::write(&path, new).unwrap();
    eprintln!("wrote {}", path.display());
}

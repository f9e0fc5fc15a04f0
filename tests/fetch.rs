//! Integration tests for `livecheck::fetch` against real HTTP servers on loopback.
//!
//! Network safety: every server binds 127.0.0.1 / 127.0.0.2 / [::1] and every URL handed to the
//! fetcher points at loopback (or at a name resolved by a fake lookup to loopback). Refused
//! targets are refused before any socket is opened, which the request counters verify.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use futures_util::future::BoxFuture;
use ipnet::IpNet;
use livecheck::fetch::{
    parse_image_input, FetchConfig, FetchError, Fetcher, ForbiddenReason, HostLookup, ImageInput,
    InputError, InputKind,
};
use url::Url;

mod common;

const IMAGE: &[u8] = b"\x89PNG\r\n\x1a\n-not-really-a-png-but-bytes-are-bytes";

/// A running test server ([`common::TestServer`]): its address and the requests it has seen.
type Server = common::TestServer;

/// `http://<addr><path>` as a URL.
trait UrlOf {
    fn url(&self, path: &str) -> Url;
}

impl UrlOf for Server {
    fn url(&self, path: &str) -> Url {
        Url::parse(&format!("{}{path}", self.base())).unwrap()
    }
}

/// Serve `router` on `bind` (port 0 = any). `None` when the address cannot be bound (e.g. no IPv6).
async fn serve_on(bind: &str, router: Router) -> Option<Server> {
    Server::start_on(bind, router).await
}

async fn serve(router: Router) -> Server {
    Server::start(router).await
}

fn image_response() -> Response {
    ([(header::CONTENT_TYPE, "image/png")], IMAGE).into_response()
}

fn redirect(status: StatusCode, location: &str) -> Response {
    (status, [(header::LOCATION, location.to_owned())]).into_response()
}

/// Streamed body of `total` bytes in 256-byte chunks, no Content-Length.
fn streamed(total: usize) -> Body {
    let chunks = (0..total.div_ceil(256)).map(move |i| {
        let len = (total - i * 256).min(256);
        Ok::<_, io::Error>(bytes::Bytes::from(vec![b'x'; len]))
    });
    Body::from_stream(futures_util::stream::iter(chunks))
}

/// Routes shared by most tests.
fn app() -> Router {
    Router::new()
        .route("/img", get(|| async { image_response() }))
        .route(
            "/chain/{n}",
            get(|Path(n): Path<usize>| async move {
                if n == 0 {
                    image_response()
                } else {
                    // Relative Location, resolved against the current URL.
                    redirect(StatusCode::FOUND, &format!("{}", n - 1))
                }
            }),
        )
        .route(
            "/slow-chain/{n}",
            get(|Path(n): Path<usize>| async move {
                tokio::time::sleep(Duration::from_millis(150)).await;
                if n == 0 {
                    image_response()
                } else {
                    redirect(StatusCode::FOUND, &format!("/slow-chain/{}", n - 1))
                }
            }),
        )
        .route(
            "/status-redirect/{code}",
            get(|Path(code): Path<u16>| async move {
                redirect(StatusCode::from_u16(code).unwrap(), "../img")
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                image_response()
            }),
        )
        .route(
            "/slow-body",
            get(|| async {
                let first = futures_util::stream::once(async {
                    Ok::<_, io::Error>(bytes::Bytes::from_static(b"\x89PNG"))
                });
                let stall = futures_util::stream::once(async {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    Ok::<_, io::Error>(bytes::Bytes::from_static(b"late"))
                });
                Body::from_stream(futures_util::StreamExt::chain(first, stall))
            }),
        )
        .route(
            "/big/{n}",
            get(|Path(n): Path<usize>| async move {
                ([(header::CONTENT_TYPE, "image/jpeg")], vec![b'x'; n]).into_response()
            }),
        )
        .route(
            "/stream/{n}",
            get(|Path(n): Path<usize>| async move { streamed(n) }),
        )
        .route(
            // Announces a huge Content-Length, sends a few bytes, then stalls: only an up-front
            // Content-Length check answers TooLarge instead of running into the deadline.
            "/huge-announced",
            get(|| async {
                let first = futures_util::stream::once(async {
                    Ok::<_, io::Error>(bytes::Bytes::from_static(b"xxxx"))
                });
                let stall = futures_util::stream::once(async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok::<_, io::Error>(bytes::Bytes::from_static(b"late"))
                });
                let mut resp =
                    Body::from_stream(futures_util::StreamExt::chain(first, stall)).into_response();
                resp.headers_mut().insert(
                    header::CONTENT_LENGTH,
                    HeaderValue::from_static("1000000000"),
                );
                resp
            }),
        )
        .route("/empty", get(|| async { StatusCode::OK }))
        .route("/boom", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
        .route("/no-location", get(|| async { StatusCode::FOUND }))
}

/// Router whose `/go` answers `302 Location: <target>`.
fn redirector(target: String) -> Router {
    Router::new().route(
        "/go",
        get(move || {
            let target = target.clone();
            async move { redirect(StatusCode::FOUND, &target) }
        }),
    )
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn cfg(allow: &[&str]) -> FetchConfig {
    FetchConfig {
        allow: nets(allow),
        connect_timeout: Duration::from_secs(2),
        total_timeout: Duration::from_secs(5),
        max_bytes: 4096,
        max_redirects: 3,
    }
}

fn fetcher(allow: &[&str]) -> Fetcher {
    Fetcher::new(cfg(allow)).unwrap()
}

fn assert_forbidden(
    result: Result<impl std::fmt::Debug, FetchError>,
    host: &str,
    want: ForbiddenReason,
) {
    match result {
        Err(FetchError::Forbidden { host: h, reason }) => {
            assert_eq!(reason, want, "reason");
            assert_eq!(h, host, "host");
        }
        other => panic!("expected Forbidden({want:?}) for {host}, got {other:?}"),
    }
}

#[tokio::test]
async fn plain_fetch_with_allow_list() {
    let server = serve(app()).await;
    let fetched = fetcher(&["127.0.0.0/8"])
        .fetch(&server.url("/img?token=abc"))
        .await
        .unwrap();
    assert_eq!(&fetched.bytes[..], IMAGE);
    assert_eq!(fetched.host, "127.0.0.1");
    assert_eq!(fetched.content_type.as_deref(), Some("image/png"));
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn loopback_refused_without_allow_list_and_never_contacted() {
    let server = serve(app()).await;
    let f = fetcher(&[]);
    assert_forbidden(
        f.fetch(&server.url("/img")).await,
        "127.0.0.1",
        ForbiddenReason::Loopback,
    );
    // Same for https and for other spellings of the same address.
    let port = server.addr.port();
    for url in [
        format!("https://127.0.0.1:{port}/img"),
        format!("http://2130706433:{port}/img"),
        format!("http://0x7f.1:{port}/img"),
        format!("http://017700000001:{port}/img"),
        format!("http://127.0.0.1.:{port}/img"),
        format!("http://[::ffff:127.0.0.1]:{port}/img"),
        format!("http://127.0.0.1:{port}#@example.com/"),
    ] {
        let url = Url::parse(&url).unwrap();
        let host = url.host_str().unwrap().to_owned();
        assert_forbidden(f.fetch(&url).await, &host, ForbiddenReason::Loopback);
    }
    assert_eq!(
        server.hits(),
        0,
        "a refused fetch must not reach the server"
    );
}

#[tokio::test]
async fn localhost_refused_by_name_even_with_allow_list() {
    let server = serve(app()).await;
    let port = server.addr.port();
    for allow in [&[][..], &["127.0.0.0/8", "::1/128"][..]] {
        let f = fetcher(allow);
        for name in ["localhost", "LOCALHOST.", "img.localhost"] {
            let url = Url::parse(&format!("http://{name}:{port}/img")).unwrap();
            let host = url.host_str().unwrap().to_owned();
            assert_forbidden(f.fetch(&url).await, &host, ForbiddenReason::Loopback);
        }
    }
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn credentials_in_url_refused() {
    let server = serve(app()).await;
    let f = fetcher(&["127.0.0.0/8"]);
    let url = Url::parse(&format!("http://example.com@{}/img", server.addr)).unwrap();
    assert!(matches!(f.fetch(&url).await, Err(FetchError::Credentials)));
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn ipv6_loopback_refused_unless_allow_listed() {
    let Some(server) = serve_on("[::1]:0", app()).await else {
        return;
    };
    let url = server.url("/img");
    assert_forbidden(
        fetcher(&[]).fetch(&url).await,
        "[::1]",
        ForbiddenReason::Loopback,
    );
    assert_forbidden(
        fetcher(&["127.0.0.0/8"]).fetch(&url).await,
        "[::1]",
        ForbiddenReason::Loopback,
    );
    assert_eq!(server.hits(), 0);
    let fetched = fetcher(&["::1/128"]).fetch(&url).await.unwrap();
    assert_eq!(&fetched.bytes[..], IMAGE);
    assert_eq!(fetched.host, "[::1]");
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn allow_single_address_does_not_open_neighbours() {
    let Some(other) = serve_on("127.0.0.2:0", app()).await else {
        return;
    };
    assert_forbidden(
        fetcher(&["127.0.0.1/32"]).fetch(&other.url("/img")).await,
        "127.0.0.2",
        ForbiddenReason::Loopback,
    );
    assert_eq!(other.hits(), 0);
    let fetched = fetcher(&["127.0.0.0/8"])
        .fetch(&other.url("/img"))
        .await
        .unwrap();
    assert_eq!(fetched.host, "127.0.0.2");
    assert_eq!(other.hits(), 1);
}

#[tokio::test]
async fn redirect_into_forbidden_address_is_refused_then_followed_when_allowed() {
    let Some(target) = serve_on("127.0.0.2:0", app()).await else {
        return;
    };
    let redir = serve(redirector(target.url("/img").to_string())).await;
    let start = redir.url("/go");

    // No allow-list: the redirector itself is refused, nothing is contacted.
    assert_forbidden(
        fetcher(&[]).fetch(&start).await,
        "127.0.0.1",
        ForbiddenReason::Loopback,
    );
    assert_eq!((redir.hits(), target.hits()), (0, 0));

    // Redirector allowed, target not: the hop is re-validated and refused.
    assert_forbidden(
        fetcher(&["127.0.0.1/32"]).fetch(&start).await,
        "127.0.0.2",
        ForbiddenReason::Loopback,
    );
    assert_eq!((redir.hits(), target.hits()), (1, 0));

    // Both allowed: followed.
    let fetched = fetcher(&["127.0.0.0/8"]).fetch(&start).await.unwrap();
    assert_eq!(&fetched.bytes[..], IMAGE);
    assert_eq!(fetched.host, "127.0.0.2");
    assert_eq!((redir.hits(), target.hits()), (2, 1));
}

#[tokio::test]
async fn redirects_to_bad_targets_are_refused() {
    let target = serve(app()).await;
    let port = target.addr.port();
    type Check = Box<dyn Fn(&FetchError) -> bool>;
    let cases: Vec<(String, Check)> = vec![
        (
            format!("http://localhost:{port}/img"),
            Box::new(|e| {
                matches!(
                    e,
                    FetchError::Forbidden {
                        reason: ForbiddenReason::Loopback,
                        ..
                    }
                )
            }),
        ),
        (
            format!("http://[::1]:{port}/img"),
            Box::new(|e| {
                matches!(
                    e,
                    FetchError::Forbidden {
                        reason: ForbiddenReason::Loopback,
                        ..
                    }
                )
            }),
        ),
        (
            format!("http://u:p@127.0.0.1:{port}/img"),
            Box::new(|e| matches!(e, FetchError::Credentials)),
        ),
        (
            "file:///etc/passwd".to_owned(),
            Box::new(|e| matches!(e, FetchError::UnsupportedScheme { scheme } if scheme == "file")),
        ),
        (
            "gopher://127.0.0.1:70/_x".to_owned(),
            Box::new(|e| matches!(e, FetchError::UnsupportedScheme { .. })),
        ),
        (
            "http://[::1".to_owned(),
            Box::new(|e| matches!(e, FetchError::BadRedirect)),
        ),
    ];
    // Only 127.0.0.1 is allowed (the redirector and `target` live there).
    let f = fetcher(&["127.0.0.1/32"]);
    for (location, check) in cases {
        let redir = serve(redirector(location.clone())).await;
        let err = f.fetch(&redir.url("/go")).await.unwrap_err();
        assert!(check(&err), "Location {location}: got {err:?}");
        assert_eq!(redir.hits(), 1);
    }
    assert_eq!(target.hits(), 0);
}

#[tokio::test]
async fn redirect_limits_and_relative_locations() {
    let server = serve(app()).await;
    let f = fetcher(&["127.0.0.0/8"]);
    // 3 redirects (the limit) are followed; relative Locations resolve against the current URL.
    let fetched = f.fetch(&server.url("/chain/3")).await.unwrap();
    assert_eq!(&fetched.bytes[..], IMAGE);
    assert_eq!(server.hits(), 4);
    // 4 redirects are one too many; the 4th Location is never requested.
    let err = f.fetch(&server.url("/chain/4")).await.unwrap_err();
    assert!(
        matches!(err, FetchError::TooManyRedirects { limit: 3 }),
        "{err:?}"
    );
    assert_eq!(server.hits(), 8);
    // max_redirects = 0 refuses the first redirect.
    let strict = Fetcher::new(FetchConfig {
        max_redirects: 0,
        ..cfg(&["127.0.0.0/8"])
    })
    .unwrap();
    assert!(matches!(
        strict.fetch(&server.url("/chain/1")).await,
        Err(FetchError::TooManyRedirects { limit: 0 })
    ));
    // Every redirect status is followed.
    for code in [301, 302, 303, 307, 308] {
        let fetched = f
            .fetch(&server.url(&format!("/status-redirect/{code}")))
            .await
            .unwrap_or_else(|e| panic!("{code}: {e:?}"));
        assert_eq!(&fetched.bytes[..], IMAGE, "{code}");
    }
    // A redirect status without Location is reported as that status.
    assert!(matches!(
        f.fetch(&server.url("/no-location")).await,
        Err(FetchError::Status(302))
    ));
}

#[tokio::test]
async fn total_deadline_covers_headers_body_and_all_hops() {
    let server = serve(app()).await;
    let quick = Fetcher::new(FetchConfig {
        total_timeout: Duration::from_millis(300),
        ..cfg(&["127.0.0.0/8"])
    })
    .unwrap();
    for path in ["/slow", "/slow-body"] {
        let started = Instant::now();
        let err = quick.fetch(&server.url(path)).await.unwrap_err();
        let elapsed = started.elapsed();
        assert!(matches!(err, FetchError::Timeout), "{path}: {err:?}");
        assert!(elapsed < Duration::from_secs(2), "{path}: took {elapsed:?}");
        assert!(
            elapsed >= Duration::from_millis(250),
            "{path}: took {elapsed:?}"
        );
    }
    // Each hop takes 150 ms, well under a 400 ms per-request limit, but 3 hops exceed one
    // 400 ms deadline for the whole fetch.
    let hops = Fetcher::new(FetchConfig {
        total_timeout: Duration::from_millis(400),
        ..cfg(&["127.0.0.0/8"])
    })
    .unwrap();
    let started = Instant::now();
    let err = hops.fetch(&server.url("/slow-chain/2")).await.unwrap_err();
    assert!(matches!(err, FetchError::Timeout), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // The same chain fits a generous deadline.
    let fetched = fetcher(&["127.0.0.0/8"])
        .fetch(&server.url("/slow-chain/2"))
        .await
        .unwrap();
    assert_eq!(&fetched.bytes[..], IMAGE);
}

#[tokio::test]
async fn body_size_cap() {
    let server = serve(app()).await;
    let f = fetcher(&["127.0.0.0/8"]); // max_bytes 4096
    for path in ["/big/4097", "/stream/4097", "/stream/100000"] {
        let err = f.fetch(&server.url(path)).await.unwrap_err();
        assert!(
            matches!(err, FetchError::TooLarge { limit: 4096 }),
            "{path}: {err:?}"
        );
    }
    for path in ["/big/4096", "/stream/4096"] {
        let fetched = f.fetch(&server.url(path)).await.unwrap();
        assert_eq!(fetched.bytes.len(), 4096, "{path}");
    }
    let jpeg = f.fetch(&server.url("/big/10")).await.unwrap();
    assert_eq!(jpeg.content_type.as_deref(), Some("image/jpeg"));
    // A huge announced Content-Length is refused from the header, without waiting for the body.
    let started = Instant::now();
    let err = f.fetch(&server.url("/huge-announced")).await.unwrap_err();
    assert!(
        matches!(err, FetchError::TooLarge { limit: 4096 }),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn non_success_statuses_and_empty_bodies() {
    let server = serve(app()).await;
    let f = fetcher(&["127.0.0.0/8"]);
    assert!(matches!(
        f.fetch(&server.url("/nope")).await,
        Err(FetchError::Status(404))
    ));
    assert!(matches!(
        f.fetch(&server.url("/boom")).await,
        Err(FetchError::Status(500))
    ));
    assert!(matches!(
        f.fetch(&server.url("/empty")).await,
        Err(FetchError::EmptyBody)
    ));
    let msg = FetchError::Status(404).client_message();
    assert!(msg.contains("404"), "{msg}");
}

#[tokio::test]
async fn closed_port_is_a_connect_error() {
    // Bind, learn the port, close: nothing listens there any more.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = Url::parse(&format!("http://127.0.0.1:{port}/img")).unwrap();
    let err = fetcher(&["127.0.0.0/8"]).fetch(&url).await.unwrap_err();
    assert!(
        matches!(&err, FetchError::Connect { host } if host == "127.0.0.1"),
        "{err:?}"
    );
}

/// A fixed name → addresses table that counts lookups; names map to a sequence of answers (the
/// last one repeats), to simulate DNS rebinding.
#[derive(Default)]
struct FakeDns {
    table: HashMap<String, Vec<Vec<IpAddr>>>,
    lookups: Mutex<HashMap<String, usize>>,
}

impl FakeDns {
    fn with(mut self, name: &str, answers: &[&[&str]]) -> Self {
        let answers = answers
            .iter()
            .map(|a| a.iter().map(|ip| ip.parse().unwrap()).collect())
            .collect();
        self.table.insert(name.to_owned(), answers);
        self
    }

    fn lookups(&self, name: &str) -> usize {
        self.lookups.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

impl HostLookup for FakeDns {
    fn lookup(&self, host: &str) -> BoxFuture<'static, io::Result<Vec<IpAddr>>> {
        let n = {
            let mut counts = self.lookups.lock().unwrap();
            let n = counts.entry(host.to_owned()).or_insert(0);
            *n += 1;
            *n
        };
        let answer = self
            .table
            .get(host)
            .map(|answers| answers[(n - 1).min(answers.len() - 1)].clone());
        Box::pin(async move {
            answer.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host"))
        })
    }
}

#[tokio::test]
async fn resolved_addresses_are_checked_and_used() {
    let server = serve(app()).await;
    let port = server.addr.port();
    let dns = Arc::new(
        FakeDns::default()
            .with("img.test", &[&["127.0.0.1"]])
            .with("mixed.test", &[&["127.0.0.1", "127.0.0.2"]])
            .with("meta.test", &[&["169.254.169.254"]])
            .with("empty.test", &[&[]]),
    );
    let url = |name: &str| Url::parse(&format!("http://{name}:{port}/img")).unwrap();

    let allowed = Fetcher::with_lookup(cfg(&["127.0.0.0/8"]), dns.clone()).unwrap();
    let fetched = allowed.fetch(&url("img.test")).await.unwrap();
    assert_eq!(&fetched.bytes[..], IMAGE);
    assert_eq!(fetched.host, "img.test");
    assert_eq!(server.hits(), 1);

    let refused = Fetcher::with_lookup(cfg(&[]), dns.clone()).unwrap();
    assert_forbidden(
        refused.fetch(&url("img.test")).await,
        "img.test",
        ForbiddenReason::Loopback,
    );

    // One forbidden address among the answers refuses the whole name.
    let narrow = Fetcher::with_lookup(cfg(&["127.0.0.1/32"]), dns.clone()).unwrap();
    assert_forbidden(
        narrow.fetch(&url("mixed.test")).await,
        "mixed.test",
        ForbiddenReason::Loopback,
    );

    // Metadata stays refused even under a catch-all allow-list. (Refused after the fake lookup;
    // no packet is ever aimed at it.)
    let wide = Fetcher::with_lookup(cfg(&["0.0.0.0/0"]), dns.clone()).unwrap();
    assert_forbidden(
        wide.fetch(&url("meta.test")).await,
        "meta.test",
        ForbiddenReason::Metadata,
    );

    for name in ["empty.test", "unknown.test"] {
        let err = allowed.fetch(&url(name)).await.unwrap_err();
        assert!(
            matches!(&err, FetchError::Resolve { host } if host == name),
            "{err:?}"
        );
    }
    assert_eq!(server.hits(), 1, "refused names must not reach the server");
}

#[tokio::test]
async fn no_dns_rebinding_window() {
    // `rebind.test` answers 127.0.0.1 (allowed) on the first lookup and 127.0.0.2 (forbidden)
    // afterwards. Servers listen on both addresses, same port. The fetch must connect to the
    // address that was checked: one lookup, bytes from the 127.0.0.1 server, none to 127.0.0.2.
    let good = serve(Router::new().route("/img", get(|| async { image_response() }))).await;
    let port = good.addr.port();
    let Some(evil) = serve_on(
        &format!("127.0.0.2:{port}"),
        Router::new().route("/img", get(|| async { "SECRET" })),
    )
    .await
    else {
        return;
    };
    let dns = Arc::new(FakeDns::default().with("rebind.test", &[&["127.0.0.1"], &["127.0.0.2"]]));
    let f = Fetcher::with_lookup(cfg(&["127.0.0.1/32"]), dns.clone()).unwrap();
    let url = Url::parse(&format!("http://rebind.test:{port}/img")).unwrap();
    let fetched = f.fetch(&url).await.unwrap();
    assert_eq!(&fetched.bytes[..], IMAGE);
    assert_eq!(dns.lookups("rebind.test"), 1);
    assert_eq!((good.hits(), evil.hits()), (1, 0));
    // A fresh fetcher (fresh pool) now gets the rebound answer, which is checked and refused.
    let f2 = Fetcher::with_lookup(cfg(&["127.0.0.1/32"]), dns.clone()).unwrap();
    assert_forbidden(
        f2.fetch(&url).await,
        "rebind.test",
        ForbiddenReason::Loopback,
    );
    assert_eq!(evil.hits(), 0);
}

#[test]
fn logs_name_the_host_but_never_the_path_or_query() {
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("livecheck=trace")
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = serve(app()).await;
        let ok = fetcher(&["127.0.0.0/8"]);
        ok.fetch(&server.url("/chain/1?token=s3cr3t-query"))
            .await
            .unwrap();
        let _ = fetcher(&[])
            .fetch(&server.url("/img?token=s3cr3t-query"))
            .await;
        let _ = ok.fetch(&server.url("/nope?token=s3cr3t-query")).await;
    });
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("127.0.0.1"), "{logs}");
    assert!(logs.contains("loopback"), "{logs}");
    for leak in ["s3cr3t", "/chain", "/img", "/nope", "token"] {
        assert!(!logs.contains(leak), "log leaks {leak:?}:\n{logs}");
    }
}

#[test]
fn image_input_parsing() {
    let b64 = base64::engine::general_purpose::STANDARD.encode(IMAGE);
    let max = 64;

    let data = parse_image_input(&format!("data:image/png;base64,{b64}"), max).unwrap();
    assert_eq!(data.kind(), InputKind::DataUri);
    assert_eq!(data.kind().as_str(), "base64");
    assert!(matches!(&data, ImageInput::Bytes { bytes, .. } if bytes == IMAGE));

    let bare = parse_image_input(&format!("\n{b64}\n"), max).unwrap();
    assert_eq!(bare.kind(), InputKind::Base64);
    assert!(matches!(&bare, ImageInput::Bytes { bytes, .. } if bytes == IMAGE));

    let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xfb, 0xff, 0xfe]);
    assert_eq!(url_safe, "-__-");
    assert!(matches!(
        parse_image_input(&url_safe, max),
        Ok(ImageInput::Bytes { bytes, kind: InputKind::Base64 }) if bytes == [0xfb, 0xff, 0xfe]
    ));

    let url = parse_image_input("https://cdn.example.com/face.jpg?sig=1", max).unwrap();
    assert_eq!(url.kind().as_str(), "url");
    assert!(matches!(url, ImageInput::Url(u) if u.host_str() == Some("cdn.example.com")));

    let oversize = base64::engine::general_purpose::STANDARD.encode(vec![0u8; max + 1]);
    for input in [
        oversize.clone(),
        format!("data:image/jpeg;base64,{oversize}"),
    ] {
        let err = parse_image_input(&input, max).unwrap_err();
        assert_eq!(err, InputError::TooLarge { limit: max });
        assert!(err.client_message().contains("64"));
    }
    let at_cap = base64::engine::general_purpose::STANDARD.encode(vec![0u8; max]);
    assert!(parse_image_input(&at_cap, max).is_ok());

    for (input, want) in [
        ("", InputError::Empty),
        ("   \n", InputError::Empty),
        (
            "file:///etc/passwd",
            InputError::UnsupportedScheme {
                scheme: "file".into(),
            },
        ),
        (
            "ftp://x/y.png",
            InputError::UnsupportedScheme {
                scheme: "ftp".into(),
            },
        ),
        (
            "data:text/html;base64,PGgxPg==",
            InputError::DataUriNotImage,
        ),
        ("data:image/png,rawbytes", InputError::DataUriNotBase64),
        ("not base64!", InputError::InvalidBase64),
    ] {
        let err = parse_image_input(input, max).unwrap_err();
        assert_eq!(err, want, "{input:?}");
        assert!(!err.client_message().is_empty());
    }
}

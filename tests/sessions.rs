//! Capture sessions end to end: the real server on 127.0.0.1:0 with the real models, on SQLite
//! and (when `LIVECHECK_TEST_POSTGRES_URL` is set) PostgreSQL. A session is created with an API
//! key, spent once with `x-session-token`, and read back with the key.

mod common;
#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use helpers::{on_each_backend, silentface, test_config, TestApp, CHECK, SESSIONS};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn read(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, body)
}

/// POST `.../sessions/` with `token` (`None`: no key) and `body`.
async fn create(app: &TestApp, token: Option<&str>, body: &str) -> (StatusCode, Value) {
    let mut req = app.client.post(app.url(SESSIONS)).body(body.to_owned());
    if let Some(t) = token {
        req = req.header("x-access-token", t);
    }
    read(req.send().await.unwrap()).await
}

/// POST a check of `image` (a sample's name) with `x-session-token`.
async fn check_with_session(
    app: &TestApp,
    session_token: &str,
    image: &str,
) -> (StatusCode, Value) {
    let resp = app
        .client
        .post(app.url(CHECK))
        .header("x-session-token", session_token)
        .header("content-type", "application/json")
        .body(json!({ "image": STANDARD.encode(silentface(image)) }).to_string())
        .send()
        .await
        .unwrap();
    read(resp).await
}

async fn session_status(app: &TestApp, id: &str, token: &str) -> (StatusCode, Value) {
    read(app.get(&format!("{SESSIONS}{id}/"), Some(token)).await).await
}

fn refused(message: &str) -> Value {
    json!({"status": "failed", "message": message})
}

/// The payload of a compact JWS, unverified (the receipts tests verify signatures).
fn jws_payload(jws: &str) -> Value {
    let part = jws.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_good_for_one_check_and_its_key_reads_the_result() {
    on_each_backend(test_config, |app: TestApp| async move {
        let before = chrono::Utc::now();
        let (status, created) = create(
            &app,
            Some(&app.token),
            r#"{"reference_id": "applicant-7731", "redirect_url": "https://bank.example/done"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(created["status"], "success");
        assert_eq!(created["message"], "Session created");
        let data = &created["data"];
        let id = data["session_id"].as_str().unwrap().to_owned();
        let token = data["session_token"].as_str().unwrap().to_owned();
        assert!(token.starts_with("ls_") && token.len() == 46, "{token}");
        let expires: chrono::DateTime<chrono::Utc> =
            data["expires_at"].as_str().unwrap().parse().unwrap();
        let ttl = (expires - before).num_seconds();
        assert!(
            (299..=301).contains(&ttl),
            "default lifetime 300 s, got {ttl}"
        );

        let (status, pending) = session_status(&app, &id, &app.token).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(pending["data"]["status"], "pending");
        assert_eq!(pending["data"]["result"], Value::Null);
        assert_eq!(pending["data"]["reference_id"], "applicant-7731");
        assert_eq!(pending["data"]["redirect_url"], "https://bank.example/done");

        // The browser's check: the session's key is charged, and the answer names the session.
        let (status, verdict) = check_with_session(&app, &token, "image_T1.jpg").await;
        assert_eq!(status, StatusCode::OK, "{verdict}");
        assert_eq!(verdict["data"]["verification"]["status"], "VERIFIED");
        assert_eq!(
            verdict["data"]["session"],
            json!({"id": id, "reference_id": "applicant-7731"})
        );
        let receipt = jws_payload(verdict["data"]["receipt"].as_str().unwrap());
        assert_eq!(receipt["session"], id.as_str());
        assert_eq!(receipt["key_id"], app.key_id.to_string());
        let reference = verdict["data"]["verification"]["reference"]
            .as_str()
            .unwrap()
            .to_owned();

        // One check only.
        let (status, again) = check_with_session(&app, &token, "image_T1.jpg").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(again, refused("Session token has already been used."));

        // The key reads the check by reference and the session's result: the same answer.
        let (status, by_reference) = read(
            app.get(&format!("{CHECK}{reference}/"), Some(&app.token))
                .await,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(by_reference["data"], verdict["data"]);
        let (status, done) = session_status(&app, &id, &app.token).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(done["data"]["status"], "completed");
        assert_eq!(done["data"]["result"], verdict["data"]);
        assert!(done["data"]["used_at"].is_string());
        let row = app
            .store
            .get_audit(reference.parse().unwrap(), app.key_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.session.unwrap().id.to_string(), id);

        // Another key sees neither the session nor its check.
        let (status, _) = session_status(&app, &id, &app.other_token).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = session_status(&app, "not-a-uuid", &app.token).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_tokens_are_refused_where_they_do_not_belong() {
    on_each_backend(test_config, |app: TestApp| async move {
        let (_, created) = create(&app, Some(&app.token), "").await;
        let token = created["data"]["session_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let id = created["data"]["session_id"].as_str().unwrap().to_owned();

        // A session token is not an API key.
        let (status, body) = read(app.check_with(&token, "x").await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body, refused("Invalid token."));
        let (status, body) = read(app.get(&format!("{SESSIONS}{id}/"), Some(&token)).await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body, refused("Invalid token."));
        // Nor does x-session-token open anything but the check endpoint.
        let resp = app
            .client
            .get(app.url(&format!("{SESSIONS}{id}/")))
            .header("x-session-token", &token)
            .send()
            .await
            .unwrap();
        let (status, body) = read(resp).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            body,
            refused("Authentication credentials were not provided.")
        );
        // Unknown and malformed session tokens.
        let forged = format!("ls_{}", "A".repeat(43));
        for bad in [forged.as_str(), "ls_short", "lc_not-a-session", "\u{e9}"] {
            let (status, body) = check_with_session(&app, bad, "image_T1.jpg").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad:?}");
            assert_eq!(body, refused("Invalid session token."), "{bad:?}");
        }
        // Creating needs a key; bad settings are 400 in the envelope.
        let (status, _) = create(&app, None, "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        for (body, message) in [
            (
                r#"{"ttl_seconds": 0}"#,
                "ttl_seconds must be between 1 and 1800",
            ),
            (
                r#"{"ttl_seconds": 86400}"#,
                "ttl_seconds must be between 1 and 1800",
            ),
            (
                r#"{"redirect_url": "javascript:alert(1)"}"#,
                "redirect_url must be an absolute http or https URL without credentials",
            ),
        ] {
            let (status, answer) = create(&app, Some(&app.token), body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(
                answer,
                json!({"status": "failed", "data": [], "message": message})
            );
        }
        let long = json!({ "reference_id": "x".repeat(129) }).to_string();
        let (status, answer) = create(&app, Some(&app.token), &long).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        // The session was never spent by any of this.
        let (_, s) = session_status(&app, &id, &app.token).await;
        assert_eq!(s["data"]["status"], "pending");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_and_die_with_their_key() {
    on_each_backend(test_config, |app: TestApp| async move {
        let (_, created) = create(&app, Some(&app.token), r#"{"ttl_seconds": 1}"#).await;
        let token = created["data"]["session_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let id = created["data"]["session_id"].as_str().unwrap().to_owned();
        tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
        let (status, body) = check_with_session(&app, &token, "image_T1.jpg").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body, refused("Session token has expired."));
        let (_, s) = session_status(&app, &id, &app.token).await;
        assert_eq!(s["data"]["status"], "expired");

        // A session of a key revoked since: refused, and not spent.
        let (status, created) = create(&app, Some(&app.other_token), "").await;
        assert_eq!(status, StatusCode::CREATED);
        let token = created["data"]["session_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let other = app
            .store
            .list_keys()
            .await
            .unwrap()
            .into_iter()
            .find(|k| k.name == "other")
            .unwrap();
        assert!(app.store.revoke_key(other.id).await.unwrap());
        let (status, body) = check_with_session(&app, &token, "image_T1.jpg").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            body,
            refused("The key that created this session has been revoked.")
        );
        assert_eq!(app.audit_count().await, 0);
    })
    .await;
}

/// Eight checks race with one token: exactly one verdict, seven 401s, one audit row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_checks_spend_a_token_once() {
    on_each_backend(test_config, |app: TestApp| async move {
        let (_, created) = create(&app, Some(&app.token), "").await;
        let token = created["data"]["session_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let answers = futures_util::future::join_all(
            (0..8).map(|_| check_with_session(&app, &token, "image_F1.jpg")),
        )
        .await;
        let ok = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
        let used = answers
            .iter()
            .filter(|(s, b)| {
                *s == StatusCode::UNAUTHORIZED
                    && *b == refused("Session token has already been used.")
            })
            .count();
        assert_eq!((ok, used), (1, 7), "{answers:?}");
        assert_eq!(app.audit_count().await, 1);
    })
    .await;
}

/// Two servers on one database (replicas): a session created on one is spent on the other, and
/// its result read on the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_works_across_replicas() {
    common::with_each_database(|url, backend| async move {
        let backend = match backend {
            "sqlite" => helpers::Backend::Sqlite,
            _ => helpers::Backend::Postgres,
        };
        let a = helpers::start(backend, url.clone(), test_config()).await;
        let b = helpers::start(backend, url, test_config()).await;
        let (_, created) = create(&a, Some(&a.token), r#"{"reference_id": "r-1"}"#).await;
        let token = created["data"]["session_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let id = created["data"]["session_id"].as_str().unwrap().to_owned();
        let (status, verdict) = check_with_session(&b, &token, "image_F2.jpg").await;
        assert_eq!(status, StatusCode::OK, "{verdict}");
        let (status, body) = check_with_session(&a, &token, "image_F2.jpg").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        let (_, s) = session_status(&a, &id, &a.token).await;
        assert_eq!(s["data"]["status"], "completed");
        assert_eq!(s["data"]["result"], verdict["data"]);
    })
    .await;
}

/// The serve binary's logs (at debug level) never hold a session token or the API key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_tokens_never_reach_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("serve.db").display());
    let key = helpers::create_key_cli(&db);
    let server = helpers::ServeProcess::spawn(
        &db,
        &["--log-json"],
        &[("RUST_LOG", "debug,hyper=info,sqlx=info,h2=info")],
    );
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let created = client
        .post(format!("{base}{SESSIONS}"))
        .header("x-access-token", &key)
        .body(r#"{"reference_id": "log-test"}"#)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let created: Value = serde_json::from_str(&created).unwrap();
    let token = created["data"]["session_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // The capture page (the token in its URL), the session lookup and a pre-check.
    let page = client
        .get(format!("{base}/capture?session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let lookup = client
        .get(format!("{base}/capture/session"))
        .header("x-session-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(lookup.status(), StatusCode::OK);
    let precheck = client
        .post(format!("{base}/capture/precheck"))
        .header("x-session-token", &token)
        .header("content-type", "image/jpeg")
        .body(silentface("image_T1.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(precheck.status(), StatusCode::OK);
    for _ in 0..2 {
        let status = client
            .post(format!("{base}{CHECK}"))
            .header("x-session-token", &token)
            .header("content-type", "application/json")
            .body(json!({ "image": STANDARD.encode(silentface("image_T1.jpg")) }).to_string())
            .send()
            .await
            .unwrap()
            .status();
        assert!(status == StatusCode::OK || status == StatusCode::UNAUTHORIZED);
    }
    let (exit, logs) = tokio::task::spawn_blocking(move || server.stop("TERM"))
        .await
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(
        logs.contains("sessions"),
        "debug logs name the route: {logs}"
    );
    assert!(
        logs.contains("/capture"),
        "debug logs name the page: {logs}"
    );
    assert!(!logs.contains(&token), "a session token in the logs");
    assert!(!logs.contains(&token[3..20]));
    assert!(!logs.contains(&key));
}

/// A request refused before its body is read (here a spent session token) is answered with
/// `Connection: close`, so the client's next request goes on a fresh connection instead of one
/// the server is closing; a served request keeps its connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_before_the_body_close_the_connection() {
    on_each_backend(test_config, |app: TestApp| async move {
        let image = STANDARD.encode(silentface("image_T1.jpg"));
        let post = |token: &'static str, value: String| {
            let app = &app;
            let image = image.clone();
            async move {
                app.client
                    .post(app.url(CHECK))
                    .header(token, value)
                    .header("content-type", "application/json")
                    .body(json!({ "image": image }).to_string())
                    .send()
                    .await
                    .unwrap()
            }
        };
        let served = post("x-access-token", app.token.clone()).await;
        assert_eq!(served.status(), StatusCode::OK);
        assert!(served.headers().get("connection").is_none());
        for _ in 0..5 {
            let refused = post("x-access-token", "lc_wrong".into()).await;
            assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(refused.headers()["connection"], "close");
            // The next request on the same client is answered, not reset.
            let (status, _) = create(&app, Some(&app.token), "").await;
            assert_eq!(status, StatusCode::CREATED);
        }
    })
    .await;
}

/// A request the server could not serve (503, overloaded) gives its session back: the browser's
/// retry with the same token is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_check_gives_its_session_back() {
    let one_slot = || livecheck::server::AppConfig {
        max_concurrent_checks: 1,
        max_queued_checks: 0,
        ..test_config()
    };
    on_each_backend(one_slot, |app: TestApp| async move {
        let mut tokens = Vec::new();
        for _ in 0..10 {
            let (_, created) = create(&app, Some(&app.token), "").await;
            tokens.push(
                created["data"]["session_token"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        let answers = futures_util::future::join_all(
            tokens
                .iter()
                .map(|t| check_with_session(&app, t, "image_F1.jpg")),
        )
        .await;
        let busy: Vec<&String> = tokens
            .iter()
            .zip(&answers)
            .filter(|(_, (s, _))| *s == StatusCode::SERVICE_UNAVAILABLE)
            .map(|(t, _)| t)
            .collect();
        let ok = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
        assert_eq!(ok + busy.len(), tokens.len(), "{answers:?}");
        assert!(!busy.is_empty(), "no request was shed: {answers:?}");
        for token in busy {
            let (status, body) = check_with_session(&app, token, "image_F1.jpg").await;
            assert_eq!(status, StatusCode::OK, "a shed session's retry: {body}");
        }
        assert_eq!(app.audit_count().await, tokens.len() as i64);
    })
    .await;
}

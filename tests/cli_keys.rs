//! `livecheck keys` end to end: the real binary on a temporary SQLite file.

mod common;
use common::assert_ok;

use std::path::Path;
use std::process::{Command, Output};

use livecheck::store::Store;

fn livecheck(dir: &Path, args: &[&str]) -> Output {
    common::livecheck_command()
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[tokio::test]
async fn create_list_revoke_with_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("keys.db").display());

    // create --json: exactly one line with id, name, token.
    let out = livecheck(
        dir.path(),
        &[
            "keys",
            "create",
            "--name",
            "ci bot",
            "--json",
            "--database",
            &url,
        ],
    );
    assert_ok(&out);
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    let created: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    let fields = created.as_object().unwrap();
    let mut names: Vec<&str> = fields.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["id", "name", "token"]);
    assert_eq!(created["name"], "ci bot");
    let id = created["id"].as_str().unwrap().to_string();
    let token = created["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("lc_") && token.len() == 46, "{token}");

    // The token works against the same file through the library.
    let store = Store::connect(&url).await.unwrap();
    let key = store.authenticate(&token).await.unwrap().unwrap();
    assert_eq!(key.id.to_string(), id);

    // Human create, database from the environment: warns the token is shown once.
    let out = Command::new(env!("CARGO_BIN_EXE_livecheck"))
        .args(["keys", "create", "--name", "second"])
        .current_dir(dir.path())
        .env("LIVECHECK_DATABASE_URL", &url)
        .output()
        .unwrap();
    assert_ok(&out);
    let text = stdout(&out);
    assert!(text.contains("will not be shown again"), "{text}");
    let second_token = text
        .split_whitespace()
        .find(|w| w.starts_with("lc_") && w.len() == 46)
        .unwrap()
        .to_string();
    assert!(store.authenticate(&second_token).await.unwrap().is_some());

    // list --json: both keys, no secrets.
    let out = livecheck(dir.path(), &["keys", "list", "--json", "--database", &url]);
    assert_ok(&out);
    let text = stdout(&out);
    assert!(!text.contains(&token) && !text.contains(&second_token));
    assert!(!text.contains("hash"));
    let listed: Vec<serde_json::Value> = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["name"], "ci bot");
    assert_eq!(listed[0]["prefix"], &token[..11]);
    assert!(listed[0]["last_used_at"].is_string(), "used above");
    assert!(listed[0]["revoked_at"].is_null());
    assert_eq!(listed[1]["name"], "second");

    // Human list: a table with the names, ids and prefixes.
    let out = livecheck(dir.path(), &["keys", "list", "--database", &url]);
    assert_ok(&out);
    let text = stdout(&out);
    for needle in [
        "Name",
        "Last used",
        "Revoked",
        "ci bot",
        "second",
        &id,
        &token[..11],
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    assert!(!text.contains(&token));

    // Revoke: the token stops working; again is a no-op; unknown ids fail.
    let out = livecheck(dir.path(), &["keys", "revoke", &id, "--database", &url]);
    assert_ok(&out);
    assert!(stdout(&out).contains("Revoked"), "{}", stdout(&out));
    assert_eq!(store.authenticate(&token).await.unwrap(), None);
    assert!(store.authenticate(&second_token).await.unwrap().is_some());

    let out = livecheck(dir.path(), &["keys", "revoke", &id, "--database", &url]);
    assert_ok(&out);
    assert!(stdout(&out).contains("already revoked"), "{}", stdout(&out));

    let unknown = uuid::Uuid::new_v4().to_string();
    let out = livecheck(
        dir.path(),
        &["keys", "revoke", &unknown, "--database", &url],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no API key"));

    let out = livecheck(
        dir.path(),
        &["keys", "revoke", "not-a-uuid", "--database", &url],
    );
    assert!(!out.status.success());

    let out = livecheck(dir.path(), &["keys", "list", "--json", "--database", &url]);
    assert_ok(&out);
    let listed: Vec<serde_json::Value> = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert!(listed[0]["revoked_at"].is_string());
    assert!(listed[1]["revoked_at"].is_null());
    store.close().await;
}

#[test]
fn default_database_is_livecheck_db_in_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = livecheck(dir.path(), &["keys", "list"]);
    assert_ok(&out);
    assert!(stdout(&out).contains("No API keys"));
    assert!(dir.path().join("livecheck.db").exists());
}

#[test]
fn bad_database_url_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let out = livecheck(
        dir.path(),
        &[
            "keys",
            "list",
            "--database",
            "mysql://root:hunter2@127.0.0.1/x",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid database URL"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

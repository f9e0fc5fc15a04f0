//! The store on real databases: a temporary SQLite file per test and, when
//! `LIVECHECK_TEST_POSTGRES_URL` is set, a fresh PostgreSQL schema per test (dropped afterwards).
//! Every test body runs on both backends.

use std::future::Future;
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use livecheck::pipeline::print::ImagePrint;
use livecheck::pipeline::Reason;
use livecheck::resubmission::{
    judge, Fingerprint, PrintKey, SameBytes, Sightings, MAX_BAND_CANDIDATES, MAX_SAME_BYTES,
};
use livecheck::store::{
    AuditRecord, AuditWriter, ImageSource, ShadowScore, Store, StoreError, StoreOptions, Timings,
};
use sqlx::Connection;
use uuid::Uuid;

mod common;
use common::{plain_record, with_each_database};

/// A fresh, migrated database and the URL that reaches it (to reconnect).
struct TestDb {
    store: Store,
    url: String,
}

/// Run `body` with a connected store on each backend.
async fn on_each_backend<F, Fut>(body: F)
where
    F: Fn(TestDb) -> Fut + Send + Sync + Copy + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    with_each_database(move |url, backend| async move {
        let store = Store::connect(&url).await.unwrap();
        assert_eq!(store.backend(), backend);
        store.ping().await.unwrap();
        body(TestDb { store, url }).await;
    })
    .await;
}

fn sha256_hex(seed: u8) -> String {
    format!("{seed:02x}").repeat(32)
}

/// A record with every optional field set and awkward values.
fn full_record(key_id: Option<Uuid>) -> AuditRecord {
    AuditRecord {
        reference: Uuid::new_v4(),
        key_id,
        created_at: Utc::now().trunc_subsecs(6),
        live: true,
        p_real: 0.1 + 0.2,
        threshold: 0.5,
        reason: Reason::Live,
        detail: "Liveliness Detected — \"quoted\" 'text' ✓".into(),
        bbox: Some([-3, 17, 2_000_000, 1]),
        detector_confidence: Some(0.999_999_999_999),
        image_sha256: sha256_hex(0xab),
        image_bytes: 5_000_000_000,
        image_width: Some(4032),
        image_height: Some(3024),
        input_kind: ImageSource::Url,
        url_host: Some("cdn.example.com".into()),
        model_hash: "9f86d081884c7d65".into(),
        engine: "tract".into(),
        app_version: "0.1.0".into(),
        timings_ms: Timings {
            decode: 1.25,
            detect: 1e-300,
            classify: 12345.678901234,
            total: f64::MAX,
        },
        receipt: None,
        fingerprint: Some(Fingerprint {
            image_tag: "a1".repeat(32),
            bands: Some([
                "b0".repeat(16),
                "b1".repeat(16),
                "b2".repeat(16),
                "b3".repeat(16),
            ]),
            sealed: Some("c2VhbGVkLXByaW50".into()),
        }),
        signals: Some(
            r#"{"resubmission":{"seen_before":false,"first_seen":null,"count":0,"same_key":false}}"#
                .into(),
        ),
        shadow: Some(ShadowScore {
            model: "a3c1e0f2b4d69788".into(),
            p_real: 0.123_456_789,
            live: false,
            reason: Reason::Spoof,
        }),
        session: Some(livecheck::store::SessionRef {
            id: Uuid::new_v4(),
            reference_id: Some("applicant-7731".into()),
        }),
    }
}

fn assert_between(t: DateTime<Utc>, before: DateTime<Utc>, after: DateTime<Utc>) {
    assert!(
        before.trunc_subsecs(6) <= t && t <= after,
        "{t} not within [{before}, {after}]"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_create_authenticate_revoke_list() {
    on_each_backend(|db| async move {
        let store = db.store;
        assert!(store.list_keys().await.unwrap().is_empty());

        let before = Utc::now();
        let (alpha, alpha_token) = store.create_key("  alpha  ").await.unwrap();
        let (beta, beta_token) = store.create_key("beta").await.unwrap();
        let after = Utc::now();

        assert_eq!(alpha.name, "alpha");
        assert!(alpha_token.starts_with("lc_"));
        assert_eq!(alpha_token.len(), 46);
        assert_eq!(alpha.prefix, alpha_token[..11]);
        assert_ne!(alpha_token, beta_token);
        assert_ne!(alpha.id, beta.id);
        assert_between(alpha.created_at, before, after);
        assert_eq!(alpha.last_used_at, None);
        assert_eq!(alpha.revoked_at, None);

        // Listing returns exactly what create returned, oldest first.
        assert_eq!(
            store.list_keys().await.unwrap(),
            vec![alpha.clone(), beta.clone()]
        );
        assert_eq!(store.get_key(beta.id).await.unwrap(), Some(beta.clone()));
        assert_eq!(store.get_key(Uuid::new_v4()).await.unwrap(), None);

        let a = store.authenticate(&alpha_token).await.unwrap().unwrap();
        assert_eq!(a.id, alpha.id);
        let b = store.authenticate(&beta_token).await.unwrap().unwrap();
        assert_eq!(b.id, beta.id);

        // Wrong tokens: one character changed, truncated, extended, other prefix, garbage.
        let mut chars: Vec<char> = alpha_token.chars().collect();
        chars[20] = if chars[20] == 'A' { 'B' } else { 'A' };
        let altered: String = chars.into_iter().collect();
        for wrong in [
            altered.as_str(),
            &alpha_token[..45],
            &format!("{alpha_token}A"),
            &format!(" {alpha_token}"),
            &format!("xx_{}", &alpha_token[3..]),
            "",
            "lc_",
            "Bearer whatever",
        ] {
            assert_eq!(store.authenticate(wrong).await.unwrap(), None, "{wrong:?}");
        }

        // Revocation: once, then no-ops; only that key stops working.
        assert!(store.revoke_key(alpha.id).await.unwrap());
        let revoked_at = store.get_key(alpha.id).await.unwrap().unwrap().revoked_at;
        assert!(revoked_at.is_some());
        assert!(!store.revoke_key(alpha.id).await.unwrap());
        assert!(!store.revoke_key(Uuid::new_v4()).await.unwrap());
        assert_eq!(
            store.get_key(alpha.id).await.unwrap().unwrap().revoked_at,
            revoked_at,
            "a second revoke must keep the first time"
        );
        assert_eq!(store.authenticate(&alpha_token).await.unwrap(), None);
        assert_eq!(
            store.authenticate(&beta_token).await.unwrap().unwrap().id,
            beta.id
        );

        let listed = store.list_keys().await.unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed[0].is_revoked() && listed[0].id == alpha.id);
        assert!(!listed[1].is_revoked() && listed[1].id == beta.id);

        for bad in ["", "   ", "tab\there", &"x".repeat(101)] {
            assert!(
                matches!(store.create_key(bad).await, Err(StoreError::Invalid(_))),
                "{bad:?}"
            );
        }
        assert_eq!(store.list_keys().await.unwrap().len(), 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_used_is_recorded_and_throttled() {
    on_each_backend(|db| async move {
        let store = db.store;
        let (key, token) = store.create_key("k").await.unwrap();

        let before = Utc::now();
        let authed = store.authenticate(&token).await.unwrap().unwrap();
        let after = Utc::now();
        let t1 = authed.last_used_at.expect("last_used_at set on first use");
        assert_between(t1, before, after);
        assert_eq!(
            store.get_key(key.id).await.unwrap().unwrap().last_used_at,
            Some(t1),
            "the write is persisted"
        );

        // Within the default resolution (60 s) the stored time is not rewritten.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let again = store.authenticate(&token).await.unwrap().unwrap();
        assert_eq!(again.last_used_at, Some(t1));
        assert_eq!(
            store.get_key(key.id).await.unwrap().unwrap().last_used_at,
            Some(t1)
        );

        // With a zero resolution every use moves it forward.
        let eager = Store::connect_with(
            &db.url,
            &StoreOptions {
                last_used_resolution: Duration::ZERO,
                ..StoreOptions::default()
            },
        )
        .await
        .unwrap();
        let t2 = eager
            .authenticate(&token)
            .await
            .unwrap()
            .unwrap()
            .last_used_at
            .unwrap();
        assert!(t2 > t1, "{t2} should be after {t1}");
        assert_eq!(
            store.get_key(key.id).await.unwrap().unwrap().last_used_at,
            Some(t2)
        );
        // A revoked key is neither returned nor touched.
        assert!(store.revoke_key(key.id).await.unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(eager.authenticate(&token).await.unwrap(), None);
        assert_eq!(
            store.get_key(key.id).await.unwrap().unwrap().last_used_at,
            Some(t2)
        );
        eager.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_round_trips_every_field() {
    on_each_backend(|db| async move {
        let store = db.store;
        let (key, _) = store.create_key("auditor").await.unwrap();

        let full = full_record(Some(key.id));
        store.insert_audit(&full).await.unwrap();
        assert_eq!(
            store.get_audit(full.reference, key.id).await.unwrap(),
            Some(full.clone())
        );

        let sparse = plain_record(Some(key.id));
        store.insert_audit(&sparse).await.unwrap();
        assert_eq!(
            store.get_audit(sparse.reference, key.id).await.unwrap(),
            Some(sparse.clone())
        );
        // A shadow score written later lands in its row only.
        let score = ShadowScore {
            model: "shadowset".into(),
            p_real: 0.75,
            live: true,
            reason: Reason::Live,
        };
        store
            .set_shadow_score(sparse.reference, &score)
            .await
            .unwrap();
        let back = store
            .get_audit(sparse.reference, key.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back.shadow, Some(score.clone()));
        assert_eq!(
            back,
            AuditRecord {
                shadow: Some(score),
                ..sparse.clone()
            }
        );
        assert_eq!(
            store.get_audit(full.reference, key.id).await.unwrap(),
            Some(full.clone())
        );

        // Sub-microsecond precision is truncated, identically on both backends.
        let mut precise = full_record(Some(key.id));
        precise.created_at = DateTime::parse_from_rfc3339("2024-02-29T23:59:59.123456789+02:00")
            .unwrap()
            .with_timezone(&Utc);
        store.insert_audit(&precise).await.unwrap();
        let back = store
            .get_audit(precise.reference, key.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            back.created_at,
            DateTime::parse_from_rfc3339("2024-02-29T21:59:59.123456Z").unwrap()
        );
        assert_eq!(
            back,
            AuditRecord {
                created_at: back.created_at,
                ..precise
            }
        );

        // The serde form round-trips too (the server may log or return it).
        let json = serde_json::to_string(&full).unwrap();
        let parsed: AuditRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed, full);
        assert!(json.contains("\"timings_ms\""));
    })
    .await;
}

/// Re-submission sightings on both backends: the earlier checks of the same bytes within the
/// window are counted (with the first one's time, and whether the asking key made one), and rows
/// sharing a band tag within the window are the near-copy candidates (and no others); a row
/// without a print is found by its image tag only; `judge` on them counts the copies, the first
/// sighting and the keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubmission_sightings_are_found_by_tag_within_the_window() {
    on_each_backend(|db| async move {
        let store = db.store;
        let (me, _) = store.create_key("me").await.unwrap();
        let (them, _) = store.create_key("them").await.unwrap();
        let secret = PrintKey::from_secret([9; 32]);
        let picture = unit_print(0.37);
        let mut copy = picture;
        copy.coeffs[5] += 0.01;
        let other = unit_print(2.3);
        let now = Utc::now().trunc_subsecs(6);
        let row = |key: Uuid, sha: u8, print: Option<&ImagePrint>, days_ago: i64| {
            let mut r = plain_record(Some(key));
            r.image_sha256 = sha256_hex(sha);
            r.created_at = now - chrono::Duration::days(days_ago);
            r.fingerprint = Some(secret.fingerprint(&r.image_sha256, print, r.reference));
            r
        };
        let old = row(me.id, 1, Some(&picture), 40); // outside a 30-day window
        let first = row(them.id, 2, Some(&copy), 20);
        let same_bytes = row(me.id, 3, None, 10);
        let unrelated = row(me.id, 4, Some(&other), 5);
        for r in [&old, &first, &same_bytes, &unrelated] {
            store.insert_audit(r).await.unwrap();
        }
        let query = secret.fingerprint(&sha256_hex(3), Some(&picture), Uuid::new_v4());
        let since = now - chrono::Duration::days(30);
        let found = store
            .resubmission_sightings(&query, since, Some(me.id))
            .await
            .unwrap();
        assert_eq!(
            found.same_bytes,
            SameBytes {
                count: 1,
                first_seen: Some(same_bytes.created_at),
                same_key: true
            }
        );
        let refs: Vec<Uuid> = found.near.iter().map(|c| c.reference).collect();
        assert_eq!(
            refs,
            vec![first.reference],
            "the band-sharing row in the window"
        );
        assert_eq!(found.near[0].created_at, first.created_at);
        assert_eq!(found.near[0].key_id, Some(them.id));
        let verdict = judge(&secret, &query, Some(&picture), Some(me.id), &found);
        assert!(verdict.seen_before);
        assert_eq!(verdict.count, 2);
        assert_eq!(verdict.first_seen, Some(first.created_at));
        assert!(verdict.same_key, "the same bytes came with this key before");
        // Another key asking: the same bytes were not its own.
        let theirs = store
            .resubmission_sightings(&query, since, Some(them.id))
            .await
            .unwrap();
        assert!(!theirs.same_bytes.same_key);
        // The whole history, and a picture never seen.
        let all = store
            .resubmission_sightings(&query, now - chrono::Duration::days(365), Some(me.id))
            .await
            .unwrap();
        assert_eq!((all.same_bytes.count, all.near.len()), (1, 2));
        let fresh = secret.fingerprint(&sha256_hex(7), Some(&unit_print(5.1)), Uuid::new_v4());
        let none = store
            .resubmission_sightings(&fresh, since, Some(me.id))
            .await
            .unwrap();
        assert_eq!(none, Sightings::default());
    })
    .await;
}

/// A picture checked far more often than the lookup reads: the count is exact below
/// `MAX_SAME_BYTES` and stops there, a key matches only among the newest `MAX_SAME_BYTES`
/// copies, the first sighting stays exact, and at most `MAX_BAND_CANDIDATES` rows per
/// band are read (the work per lookup is bounded; its cost is measured in docs/benchmarks.md).
/// The copies of the same bytes are never sent back as near-copy candidates (they are counted
/// once, as the same bytes); the newest checks of other bytes sharing the bands are, up to the
/// limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubmission_lookups_are_bounded_however_often_a_picture_was_seen() {
    on_each_backend(|db| async move {
        let store = db.store;
        let (me, _) = store.create_key("me").await.unwrap();
        let secret = PrintKey::from_secret([4; 32]);
        let picture = unit_print(0.61);
        let now = Utc::now().trunc_subsecs(6);
        let copies = MAX_SAME_BYTES as usize + 200;
        let rows: Vec<_> = (0..copies)
            .map(|i| {
                let mut r = plain_record(Some(me.id));
                r.image_sha256 = sha256_hex(9);
                r.created_at = now - chrono::Duration::seconds(i as i64 + 1);
                r.fingerprint =
                    Some(secret.fingerprint(&r.image_sha256, Some(&picture), r.reference));
                r
            })
            .collect();
        let query = secret.fingerprint(&sha256_hex(9), Some(&picture), Uuid::new_v4());
        let since = now - chrono::Duration::days(30);
        // One copy by another key, older than all of the above: the first sighting, but not
        // among the newest `MAX_SAME_BYTES`.
        let (them, _) = store.create_key("them").await.unwrap();
        let mut oldest = plain_record(Some(them.id));
        oldest.image_sha256 = sha256_hex(9);
        oldest.created_at = now - chrono::Duration::seconds(copies as i64 + 10);
        oldest.fingerprint =
            Some(secret.fingerprint(&oldest.image_sha256, Some(&picture), oldest.reference));
        store.insert_audit(&oldest).await.unwrap();
        // Counted exactly below the limit (333, 666, 999 copies and the oldest), then capped.
        let mut stored = 1;
        for chunk in rows.chunks(333) {
            store.insert_audit_batch(chunk).await.unwrap();
            stored += chunk.len();
            let found = store
                .resubmission_sightings(&query, since, Some(them.id))
                .await
                .unwrap();
            assert_eq!(
                found.same_bytes.count,
                stored.min(MAX_SAME_BYTES as usize) as u64
            );
            assert_eq!(
                found.same_bytes.same_key,
                stored <= MAX_SAME_BYTES as usize,
                "their copy is the oldest: among the newest {MAX_SAME_BYTES} with {stored} stored"
            );
            assert_eq!(found.same_bytes.first_seen, Some(oldest.created_at));
        }
        // Without a key, no copy is the asker's.
        let anonymous = store
            .resubmission_sightings(&query, since, None)
            .await
            .unwrap();
        assert!(!anonymous.same_bytes.same_key);
        assert_eq!(anonymous.same_bytes.count, MAX_SAME_BYTES as u64);
        let found = store
            .resubmission_sightings(&query, since, Some(me.id))
            .await
            .unwrap();
        assert_eq!(found.same_bytes.count, MAX_SAME_BYTES as u64);
        assert!(found.same_bytes.same_key);
        assert!(found.near.is_empty(), "the same bytes are no near-copy");
        let verdict = judge(&secret, &query, Some(&picture), Some(me.id), &found);
        assert_eq!(
            verdict.count, MAX_SAME_BYTES as u64,
            "same-bytes rows count once"
        );

        // Then more near-copies (other bytes, the same picture) than the lookup reads, all newer
        // than the copies above.
        let near_copies = MAX_BAND_CANDIDATES as usize + 50;
        let near_rows: Vec<_> = (0..near_copies)
            .map(|i| {
                let mut r = plain_record(Some(me.id));
                r.image_sha256 = sha256_hex(10 + (i % 200) as u8);
                r.created_at = now - chrono::Duration::milliseconds(i as i64 + 1);
                r.fingerprint =
                    Some(secret.fingerprint(&r.image_sha256, Some(&picture), r.reference));
                r
            })
            .collect();
        store.insert_audit_batch(&near_rows).await.unwrap();
        let found = store
            .resubmission_sightings(&query, since, Some(me.id))
            .await
            .unwrap();
        assert_eq!(found.same_bytes.count, MAX_SAME_BYTES as u64);
        assert_eq!(found.same_bytes.first_seen, Some(oldest.created_at));
        assert!(found.same_bytes.same_key);
        // Every band holds all the copies: each part stops at its limit, and the parts are
        // the same newest rows, the near-copies.
        assert_eq!(found.near.len(), MAX_BAND_CANDIDATES as usize);
        assert!(found
            .near
            .iter()
            .all(|c| c.image_tag != query.image_tag && c.created_at >= near_rows[99].created_at));
        let verdict = judge(&secret, &query, Some(&picture), Some(me.id), &found);
        assert_eq!(
            verdict.count,
            MAX_SAME_BYTES as u64 + MAX_BAND_CANDIDATES as u64,
            "same-bytes rows count once, each near-copy read once"
        );
        assert_eq!(verdict.first_seen, Some(oldest.created_at));
    })
    .await;
}

fn unit_print(seed: f32) -> ImagePrint {
    let mut c = [0f32; 63];
    for (i, v) in c.iter_mut().enumerate() {
        *v = ((i as f32 + 1.0) * seed).sin();
    }
    let n = c.iter().map(|v| v * v).sum::<f32>().sqrt();
    c.iter_mut().for_each(|v| *v /= n);
    ImagePrint { coeffs: c }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_is_scoped_to_its_key_and_counted() {
    on_each_backend(|db| async move {
        let store = db.store;
        let (mine, _) = store.create_key("mine").await.unwrap();
        let (theirs, _) = store.create_key("theirs").await.unwrap();
        assert_eq!(store.count_audit().await.unwrap(), 0);

        let record = full_record(Some(mine.id));
        store.insert_audit(&record).await.unwrap();
        let anonymous = plain_record(None);
        store.insert_audit(&anonymous).await.unwrap();
        assert_eq!(store.count_audit().await.unwrap(), 2);

        assert!(store
            .get_audit(record.reference, mine.id)
            .await
            .unwrap()
            .is_some());
        assert_eq!(
            store.get_audit(record.reference, theirs.id).await.unwrap(),
            None
        );
        assert_eq!(
            store
                .get_audit(record.reference, Uuid::new_v4())
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store.get_audit(Uuid::new_v4(), mine.id).await.unwrap(),
            None
        );
        // A record made without a key is not readable through any key.
        assert_eq!(
            store.get_audit(anonymous.reference, mine.id).await.unwrap(),
            None
        );

        // A duplicate reference is refused and changes nothing.
        let mut dup = plain_record(Some(theirs.id));
        dup.reference = record.reference;
        assert!(matches!(
            store.insert_audit(&dup).await,
            Err(StoreError::Query(_))
        ));
        assert_eq!(store.count_audit().await.unwrap(), 2);
        assert_eq!(
            store.get_audit(record.reference, theirs.id).await.unwrap(),
            None
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_refuses_bad_records() {
    on_each_backend(|db| async move {
        let store = db.store;
        let (key, _) = store.create_key("k").await.unwrap();
        let base = full_record(Some(key.id));

        let cases: Vec<(&str, AuditRecord)> = vec![
            (
                "full URL as host",
                AuditRecord {
                    url_host: Some("https://cdn.example.com/selfie.jpg".into()),
                    ..base.clone()
                },
            ),
            (
                "credentials in host",
                AuditRecord {
                    url_host: Some("user:secret@cdn.example.com".into()),
                    ..base.clone()
                },
            ),
            (
                "NaN score",
                AuditRecord {
                    p_real: f64::NAN,
                    ..base.clone()
                },
            ),
            (
                "infinite timing",
                AuditRecord {
                    timings_ms: Timings {
                        total: f64::INFINITY,
                        ..base.timings_ms
                    },
                    receipt: None,
                    ..base.clone()
                },
            ),
            (
                "short hash",
                AuditRecord {
                    image_sha256: "abc".into(),
                    ..base.clone()
                },
            ),
            (
                "negative size",
                AuditRecord {
                    image_bytes: -1,
                    ..base.clone()
                },
            ),
        ];
        // Signals must be one JSON object: not another JSON value, not broken or trailed JSON.
        let signals = [
            "[1]",
            "\"x\"",
            "1",
            "null",
            "{",
            "{\"a\":1} x",
            "{\"a\":1}{}",
            "{\"a\":}",
            "",
            " ",
        ]
        .map(|text| {
            (
                "signals",
                AuditRecord {
                    signals: Some(text.to_owned()),
                    ..base.clone()
                },
            )
        });
        for (what, record) in cases.into_iter().chain(signals) {
            assert!(
                matches!(
                    store.insert_audit(&record).await,
                    Err(StoreError::Invalid(_))
                ),
                "{what}"
            );
        }

        // The key must exist (foreign key enforced on both backends).
        let orphan = full_record(Some(Uuid::new_v4()));
        assert!(matches!(
            store.insert_audit(&orphan).await,
            Err(StoreError::Query(_))
        ));
        assert_eq!(store.count_audit().await.unwrap(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_reconnect() {
    on_each_backend(|db| async move {
        let (key, token) = db.store.create_key("durable").await.unwrap();
        let record = full_record(Some(key.id));
        db.store.insert_audit(&record).await.unwrap();
        db.store.close().await;
        assert!(db.store.ping().await.unwrap_err().is_unavailable());
        drop(db.store);

        let reopened = Store::connect(&db.url).await.unwrap();
        assert_eq!(reopened.list_keys().await.unwrap(), vec![key.clone()]);
        assert_eq!(
            reopened.authenticate(&token).await.unwrap().map(|k| k.id),
            Some(key.id)
        );
        assert_eq!(reopened.count_audit().await.unwrap(), 1);
        assert_eq!(
            reopened.get_audit(record.reference, key.id).await.unwrap(),
            Some(record)
        );
        reopened.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_inserts_all_land() {
    on_each_backend(|db| async move {
        let store = db.store;
        let (key, token) = store.create_key("busy").await.unwrap();
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let store = store.clone();
                let token = token.clone();
                tokio::spawn(async move {
                    let mut record = if i % 2 == 0 {
                        full_record(Some(key.id))
                    } else {
                        plain_record(Some(key.id))
                    };
                    record.image_bytes = i;
                    store.insert_audit(&record).await.unwrap();
                    assert!(store.authenticate(&token).await.unwrap().is_some());
                    record
                })
            })
            .collect();
        let mut records = Vec::new();
        for task in tasks {
            records.push(task.await.unwrap());
        }
        assert_eq!(store.count_audit().await.unwrap(), 50);
        for record in records {
            assert_eq!(
                store.get_audit(record.reference, key.id).await.unwrap(),
                Some(record)
            );
        }
    })
    .await;
}

/// Group commit: the rows of concurrent checks share transactions, and each caller is answered
/// only once its row is committed (another connection, opened afterwards, reads it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_shares_transactions_and_answers_after_commit() {
    on_each_backend(|db| async move {
        let (key, _) = db.store.create_key("busy").await.unwrap();
        let writer = AuditWriter::spawn(db.store.clone());
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let writer = writer.clone();
                let url = db.url.clone();
                tokio::spawn(async move {
                    let record = full_record(Some(key.id));
                    writer.insert(record.clone()).await.unwrap();
                    let reader = Store::connect(&url).await.unwrap();
                    let stored = reader.get_audit(record.reference, key.id).await.unwrap();
                    reader.close().await;
                    assert_eq!(stored, Some(record), "answered before its row was readable");
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let stats = writer.stats();
        assert_eq!(stats.rows, 64);
        assert!(
            stats.commits < stats.rows,
            "64 concurrent rows took {} transactions",
            stats.commits
        );
        assert_eq!(db.store.count_audit().await.unwrap(), 64);
    })
    .await;
}

/// A record whose insert fails on its data (here a trigger refuses it) fails alone: the rows that
/// shared its transaction are retried one by one and committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_a_bad_record_fails_alone() {
    on_each_backend(|db| async move {
        let sql: &[&str] = match db.store.backend() {
            "sqlite" => &["CREATE TRIGGER poison BEFORE INSERT ON audit WHEN NEW.detail = 'poison' \
                 BEGIN SELECT RAISE(ABORT, 'poisoned record'); END"],
            _ => &[
                "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN \
                 IF NEW.detail = 'poison' THEN RAISE EXCEPTION 'poisoned record'; END IF; \
                 RETURN NEW; END $$ LANGUAGE plpgsql",
                "CREATE TRIGGER poison BEFORE INSERT ON audit FOR EACH ROW EXECUTE FUNCTION poison()",
            ],
        };
        for statement in sql {
            raw_execute(&db.url, statement).await;
        }
        let writer = AuditWriter::spawn(db.store.clone());
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let writer = writer.clone();
                tokio::spawn(async move {
                    let mut record = plain_record(None);
                    if i % 5 == 0 {
                        record.detail = "poison".into();
                    }
                    let result = writer.insert(record.clone()).await;
                    (record, result)
                })
            })
            .collect();
        for task in tasks {
            let (record, result) = task.await.unwrap();
            if record.detail == "poison" {
                let err = result.unwrap_err();
                assert!(matches!(err, StoreError::Query(_)), "{err:?}");
            } else {
                result.unwrap();
            }
        }
        assert_eq!(db.store.count_audit().await.unwrap(), 32);
    })
    .await;
}

/// A commit that fails because the database is unavailable fails exactly the requests in it:
/// while another connection holds SQLite's write lock every transaction fails after the busy
/// timeout and none of its rows exists; once the lock is released, the next ones commit. Each
/// answer matches its row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_a_failed_commit_fails_exactly_its_requests() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("livecheck.db").display());
    let options = StoreOptions {
        busy_timeout: Duration::from_millis(50),
        ..StoreOptions::default()
    };
    let store = Store::connect_with(&url, &options).await.unwrap();
    let (key, _) = store.create_key("k").await.unwrap();
    let writer = AuditWriter::spawn(store.clone());
    let insert_many = |n: usize| {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let writer = writer.clone();
                tokio::spawn(async move {
                    let record = plain_record(Some(key.id));
                    let result = writer.insert(record.clone()).await;
                    (record, result)
                })
            })
            .collect();
        async move {
            let mut out = Vec::new();
            for task in tasks {
                out.push(task.await.unwrap());
            }
            out
        }
    };

    let mut holder = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .unwrap();
    let refused = insert_many(20).await;
    sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
    let accepted = insert_many(20).await;

    for (record, result) in &refused {
        let err = result.as_ref().unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        assert_eq!(
            store.get_audit(record.reference, key.id).await.unwrap(),
            None
        );
    }
    for (record, result) in &accepted {
        assert!(result.is_ok(), "{result:?}");
        assert!(store
            .get_audit(record.reference, key.id)
            .await
            .unwrap()
            .is_some());
    }
    assert_eq!(store.count_audit().await.unwrap(), 20);
}

async fn raw_execute(url: &str, sql: &str) {
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(sql).execute(&mut c).await.unwrap();
        let _ = c.close().await;
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(sql).execute(&mut c).await.unwrap();
        let _ = c.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_connects_migrate_once() {
    with_each_database(|url, backend| async move {
        let connects = (0..4).map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Store::connect(&url).await })
        });
        let mut stores = Vec::new();
        for c in connects {
            stores.push(
                c.await
                    .unwrap()
                    .unwrap_or_else(|e| panic!("{backend}: {e}")),
            );
        }
        let (key, token) = stores[0].create_key("k").await.unwrap();
        for s in &stores {
            assert_eq!(s.authenticate(&token).await.unwrap().unwrap().id, key.id);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_never_written_in_clear() {
    with_each_database(|url, backend| async move {
        if backend != "sqlite" {
            return; // the check reads the database files
        }
        let store = Store::connect(&url).await.unwrap();
        let (_, token) = store.create_key("secret").await.unwrap();
        let mut bytes = Vec::new();
        let path = url.strip_prefix("sqlite://").unwrap();
        for suffix in ["", "-wal"] {
            if let Ok(b) = std::fs::read(format!("{path}{suffix}")) {
                bytes.extend(b);
            }
        }
        let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        let hash = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(token.as_bytes()))
        };
        assert!(
            contains(hash.as_bytes()),
            "the hash is stored (files read correctly)"
        );
        assert!(!contains(token.as_bytes()));
        assert!(!contains(&token.as_bytes()[11..]));
        store.close().await;
    })
    .await;
}

#[tokio::test]
async fn unreachable_postgres_fails_fast_and_clearly() {
    // A loopback port that was free a moment ago: nothing listens there.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let started = Instant::now();
    let err = Store::connect(&format!(
        "postgres://postgres:hunter2@127.0.0.1:{port}/test"
    ))
    .await
    .unwrap_err();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    assert!(err.is_unavailable(), "{err:?}");
    assert!(!err.is_invalid_url());
    let message = err.to_string();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(message.to_lowercase().contains("refused"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

#[tokio::test]
async fn bad_urls_are_told_apart_from_unavailable_databases() {
    for url in [
        "mysql://root@127.0.0.1/db",
        "livecheck.db",
        "sqlite::memory:",
        "sqlite://file.db?mode=memory",
        "sqlite://",
        "sqlite://x.db?bogus=1",
        "postgres://u:hunter2@127.0.0.1:notaport/db",
        "postgres://u@127.0.0.1/db?sslmode=sometimes",
    ] {
        let err = Store::connect(url).await.unwrap_err();
        assert!(err.is_invalid_url(), "{url}: {err:?}");
        assert!(!err.is_unavailable(), "{url}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    // A SQLite file in a directory that does not exist: the URL is fine, the database is not.
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}",
        dir.path().join("missing").join("x.db").display()
    );
    let err = Store::connect(&url).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}

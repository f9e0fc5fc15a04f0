//! The re-submission lookup on SQLite, at its worst case: one picture checked more often than
//! the lookup reads (`MAX_SAME_BYTES` + 200 copies, all sharing its four band tags), as in the
//! loadbench (three samples sent again and again) or a fraud ring. Real SQLite file, real store.
//!
//!   cargo bench --bench store
//!
//! - `sightings_key_match`: the whole lookup of a check ([`Store::resubmission_sightings`]: the
//!   same-bytes summary and the band candidates, one statement), asked by the key that made the
//!   copies (the loadbench's case).
//! - `same_bytes_key_match`, `same_bytes_no_key`, `same_bytes_other_key`: the same-bytes summary
//!   alone (a fingerprint without a print), asked by that key, without a key (auth disabled),
//!   and by a key that made none of the copies (the key test then reads all the newest copies).
//! - `same_bytes_before_*`: the baseline in the same run, the same-bytes summary as it was
//!   written before session 25 (one pass counting the newest copies and testing each one's key),
//!   on its own connection to the same file; `round_trip` (`SELECT 1` on that connection) is the
//!   floor both pay.

use chrono::{SubsecRound, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use sqlx::Connection;
use uuid::Uuid;

use livecheck::pipeline::print::ImagePrint;
use livecheck::pipeline::Reason;
use livecheck::resubmission::{PrintKey, MAX_SAME_BYTES};
use livecheck::store::{AuditRecord, Store};

#[path = "../tests/common/records.rs"]
mod records;

/// The same-bytes summary before session 25 (src/store/audit.rs kept only the new one).
const BEFORE: &str = "SELECT COUNT(*), MAX(key_id = ?1), \
     (SELECT created_at FROM audit WHERE image_tag = ?2 \
      AND created_at >= ?3 ORDER BY created_at ASC LIMIT 1) \
     FROM (SELECT key_id FROM audit WHERE image_tag = ?2 AND created_at >= ?3 \
     ORDER BY created_at DESC LIMIT ?4)";

fn record(key_id: Uuid) -> AuditRecord {
    AuditRecord {
        live: true,
        p_real: 0.9,
        threshold: 0.72,
        reason: Reason::Live,
        detail: Reason::Live.sentence().into(),
        bbox: Some([10, 20, 100, 120]),
        detector_confidence: Some(0.99),
        image_sha256: "ab".repeat(32),
        image_bytes: 50_000,
        image_width: Some(640),
        image_height: Some(480),
        model_hash: "708e3dd2e45fc9c8".into(),
        ..records::plain_record(Some(key_id))
    }
}

fn lookups(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = rt.block_on(Store::connect(&url)).expect("store");
    let (me, _) = rt.block_on(store.create_key("me")).expect("key");
    let (other, _) = rt.block_on(store.create_key("other")).expect("key");
    let secret = PrintKey::from_secret([7; 32]);
    let mut coeffs = [0f32; 63];
    for (i, v) in coeffs.iter_mut().enumerate() {
        *v = ((i as f32 + 1.0) * 0.61).sin();
    }
    let norm = coeffs.iter().map(|v| v * v).sum::<f32>().sqrt();
    coeffs.iter_mut().for_each(|v| *v /= norm);
    let picture = ImagePrint { coeffs };
    let now = Utc::now().trunc_subsecs(6);
    let copies = MAX_SAME_BYTES as usize + 200;
    let rows: Vec<AuditRecord> = (0..copies)
        .map(|i| {
            let mut r = record(me.id);
            r.created_at = now - chrono::Duration::milliseconds(8 * (i as i64 + 1));
            r.fingerprint = Some(secret.fingerprint(&r.image_sha256, Some(&picture), r.reference));
            r
        })
        .collect();
    for chunk in rows.chunks(200) {
        rt.block_on(store.insert_audit_batch(chunk))
            .expect("insert");
    }
    let since = now - chrono::Duration::days(30);
    let with_print = secret.fingerprint(&"ab".repeat(32), Some(&picture), Uuid::new_v4());
    let bytes_only = secret.fingerprint(&"ab".repeat(32), None, Uuid::new_v4());
    let mut raw = rt
        .block_on(sqlx::SqliteConnection::connect(&url))
        .expect("connection");

    let mut g = c.benchmark_group("resubmission_lookup");
    g.bench_function("sightings_key_match", |b| {
        b.iter(|| {
            rt.block_on(store.resubmission_sightings(&with_print, since, Some(me.id)))
                .expect("lookup")
        })
    });
    for (name, key) in [
        ("key_match", Some(me.id)),
        ("no_key", None),
        ("other_key", Some(other.id)),
    ] {
        let found = rt
            .block_on(store.resubmission_sightings(&bytes_only, since, key))
            .expect("lookup");
        assert_eq!(found.same_bytes.count, MAX_SAME_BYTES as u64);
        g.bench_function(format!("same_bytes_{name}"), |b| {
            b.iter(|| {
                rt.block_on(store.resubmission_sightings(&bytes_only, since, key))
                    .expect("lookup")
            })
        });
        let key_text = key.map(|k| k.to_string()).unwrap_or_default();
        let since_text = since.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
        let mut before = || {
            rt.block_on(
                sqlx::query_as::<_, (i64, Option<i64>, Option<String>)>(BEFORE)
                    .bind(&key_text)
                    .bind(&bytes_only.image_tag)
                    .bind(&since_text)
                    .bind(MAX_SAME_BYTES)
                    .fetch_one(&mut raw),
            )
            .expect("before")
        };
        let (count, key_match, first) = before();
        assert_eq!(count, MAX_SAME_BYTES, "the baseline reads the same rows");
        assert_eq!(key_match == Some(1), found.same_bytes.same_key);
        assert!(first.is_some());
        g.bench_function(format!("same_bytes_before_{name}"), |b| b.iter(&mut before));
    }
    g.bench_function("round_trip", |b| {
        b.iter(|| {
            rt.block_on(sqlx::query_scalar::<_, i64>("SELECT 1").fetch_one(&mut raw))
                .expect("select 1")
        })
    });
    g.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);

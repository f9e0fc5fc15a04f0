//! `livecheck report` on a synthetic audit table with known drift, on each backend: a steady key
//! is not flagged, a key whose live rate and scores moved is flagged for both, a key with too few
//! checks is not tested, and the figures per key and day are the ones planted.

mod common;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use common::{assert_ok, livecheck, with_each_database};
use livecheck::pipeline::Reason;
use livecheck::store::{AuditRecord, ShadowScore, Store};
use serde_json::Value;
use uuid::Uuid;

const UNTIL: &str = "2026-11-30T00:00:00Z";

fn record(key: Uuid, at: DateTime<Utc>, live: bool, p_real: f64, reason: Reason) -> AuditRecord {
    AuditRecord {
        created_at: at.trunc_subsecs(6),
        live,
        p_real,
        threshold: 0.5,
        reason,
        detail: reason.sentence().into(),
        image_sha256: "ab".repeat(32),
        image_bytes: 1000,
        app_version: "0".into(),
        ..common::plain_record(Some(key))
    }
}

/// `n` checks spread evenly over the 7 days before `end`: `live_of_5` of every 5 are live, with
/// p_real in `[live_lo, live_lo + 0.15)`, the others spoofs in `[0.05, 0.3)`; every 20th is
/// `no_face` instead (never a live slot).
fn week(
    key: Uuid,
    end: DateTime<Utc>,
    n: usize,
    live_of_5: usize,
    live_lo: f64,
) -> Vec<AuditRecord> {
    let step = Duration::days(7) / n as i32;
    (0..n)
        .map(|i| {
            let at = end - Duration::days(7) + step * i as i32;
            let frac = (i as f64 * 0.618_033_988_7).fract();
            if i % 20 == 19 {
                record(key, at, false, 0.0, Reason::NoFace)
            } else if i % 5 < live_of_5 {
                record(key, at, true, live_lo + 0.15 * frac, Reason::Live)
            } else {
                record(key, at, false, 0.05 + 0.25 * frac, Reason::Spoof)
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_flags_the_key_that_drifted_and_only_it() {
    with_each_database(|url, _backend| async move {
        let store = Store::connect(&url).await.unwrap();
        let (steady, _) = store.create_key("steady").await.unwrap();
        let (drifting, _) = store.create_key("drifting").await.unwrap();
        let (small, _) = store.create_key("small").await.unwrap();
        let until: DateTime<Utc> = UNTIL.parse().unwrap();
        let since = until - Duration::days(7);
        let mut rows = Vec::new();
        rows.extend(week(steady.id, since, 200, 4, 0.8));
        // The steady key's current week was also shadow-scored: the shadow set reads 0.05
        // lower and decides the other way on every 10th picture.
        rows.extend(
            week(steady.id, until, 200, 4, 0.8)
                .into_iter()
                .enumerate()
                .map(|(i, mut r)| {
                    r.shadow = Some(ShadowScore {
                        model: "shadow".into(),
                        p_real: r.p_real - 0.05,
                        live: r.live != (i % 10 == 0),
                        reason: r.reason,
                    });
                    r
                }),
        );
        rows.extend(week(drifting.id, since, 200, 4, 0.8));
        // Now: 2 of 5 live instead of 4, and live scores 0.55-0.7 instead of 0.8-0.95.
        rows.extend(week(drifting.id, until, 200, 2, 0.55));
        rows.extend(week(small.id, until, 10, 4, 0.8));
        // Outside both periods: ignored.
        rows.extend(week(drifting.id, since - Duration::days(7), 50, 0, 0.1));
        store.insert_audit_batch(&rows).await.unwrap();
        store.close().await;

        let out = livecheck(&[
            "report",
            "--database",
            &url,
            "--until",
            UNTIL,
            "--since",
            "7d",
            "--json",
        ]);
        assert_ok(&out);
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        let key = |id: Uuid| -> Value {
            r["keys"]
                .as_array()
                .unwrap()
                .iter()
                .find(|k| k["key"] == id.to_string())
                .cloned()
                .unwrap_or_else(|| panic!("{id} not in {r}"))
        };
        // Flagged keys first.
        assert_eq!(r["keys"][0]["key"], drifting.id.to_string());
        let d = key(drifting.id);
        assert_eq!(d["flags"], serde_json::json!(["live_rate", "score"]), "{d}");
        assert_eq!(d["current"]["checks"], 200);
        assert_eq!(d["previous"]["checks"], 200);
        assert!(d["live_rate_test"]["p_value"].as_f64().unwrap() < 1e-6);
        assert!(d["score_test"]["p_value"].as_f64().unwrap() < 1e-6);
        // 2 of every 5, minus the no_face every 20th that falls on a live slot: 80 - 0 = 80
        // (i % 20 == 19 has i % 5 == 4, never a live slot here).
        assert_eq!(d["current"]["live"], 80);
        assert_eq!(d["previous"]["live"], 160);
        assert_eq!(d["current"]["reasons"]["no_face"], 10);

        let s = key(steady.id);
        assert_eq!(s["flags"], serde_json::json!([]), "{s}");
        assert!(!s["live_rate_test"]["shifted"].as_bool().unwrap());
        assert!(!s["score_test"]["shifted"].as_bool().unwrap());

        assert_eq!(s["shadow"]["compared"], 200);
        assert_eq!(s["shadow"]["agree"], 180);
        assert!((s["shadow"]["mean_abs_diff"].as_f64().unwrap() - 0.05).abs() < 1e-9);
        assert!(d["shadow"].is_null());
        assert_eq!(r["overall"]["shadow"]["compared"], 200);

        let small = key(small.id);
        assert!(small["live_rate_test"].is_null() && small["score_test"].is_null());
        assert_eq!(small["flags"], serde_json::json!([]));

        assert_eq!(r["overall"]["current"]["checks"], 410);
        assert_eq!(r["overall"]["previous"]["checks"], 400);
        // Seven days, and a row per day and key with checks that day.
        let days: std::collections::BTreeSet<&str> = r["days"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["day"].as_str().unwrap())
            .collect();
        assert_eq!(days.len(), 7, "{days:?}");
        assert_eq!(days.first(), Some(&"2026-11-23"));
        let total: u64 = r["days"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["stats"]["checks"].as_u64().unwrap())
            .sum();
        assert_eq!(total, 410);

        // One key only, and the tables a person reads.
        let out = livecheck(&[
            "report",
            "--database",
            &url,
            "--until",
            UNTIL,
            "--key",
            &steady.id.to_string(),
            "--json",
        ]);
        assert_ok(&out);
        let one: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(one["keys"].as_array().unwrap().len(), 1);
        let out = livecheck(&["report", "--database", &url, "--until", UNTIL]);
        assert_ok(&out);
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains("SHIFT") && text.contains("Kolmogorov-Smirnov"),
            "{text}"
        );
        assert!(
            text.contains("Shadow model set against the live one"),
            "{text}"
        );
        assert!(text.contains(&drifting.id.to_string()));
    })
    .await;
}

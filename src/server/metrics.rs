//! Prometheus metrics, one registry per [`super::Application`] (so several servers in one test
//! process never share counters). Histograms use explicit buckets chosen for this workload.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Buckets for HTTP request latency (seconds): 1 ms .. 30 s.
const REQUEST_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Buckets for pipeline stages (seconds): 0.5 ms .. 5 s; detection/classification sit around 5-50 ms.
const STAGE_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Buckets for p_real (the fused liveness score): twenty 0.05-wide bins over [0, 1], so that a
/// shift of the score distribution (drift) shows in any of them.
const SCORE_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85,
    0.9, 0.95, 1.0,
];

/// At most this many API keys get their own label in `livecheck_key_verdicts_total`; verdicts of
/// keys beyond (in the order they were first seen since start) count under `key="other"`, so a
/// deployment with thousands of keys cannot blow up the series count.
pub const MAX_KEY_LABELS: usize = 100;

/// Every metric the server exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `livecheck_http_requests_total{route,method,status}`.
    pub http_requests: IntCounterVec,
    /// `livecheck_http_request_duration_seconds{route}`.
    pub http_duration: HistogramVec,
    /// `livecheck_verdicts_total{reason,live}`.
    pub verdicts: IntCounterVec,
    /// `livecheck_stage_duration_seconds{stage}`: fetch, decode, detect, classify, pipeline, audit,
    /// precheck (the capture page's framing pre-checks).
    pub stage_duration: HistogramVec,
    /// `livecheck_checks_in_flight`: admitted checks (running or waiting for a CPU slot).
    pub in_flight: IntGauge,
    /// `livecheck_rejections_total{cause}`: rate_limited, overloaded.
    pub rejections: IntCounterVec,
    /// `livecheck_ratelimit_redis_errors_total`: Redis round trips of the shared rate limit that
    /// failed or timed out (those requests were counted by the replica's own limiter).
    pub ratelimit_redis_errors: IntCounter,
    /// `livecheck_p_real{model_set}`: the fused score of every verdict the classifiers made, by
    /// model-set hash (drift: compare its distribution over time).
    pub p_real: HistogramVec,
    /// `livecheck_key_verdicts_total{key,live}`: verdicts per API key id (bounded: see
    /// [`MAX_KEY_LABELS`]).
    key_verdicts: IntCounterVec,
    labelled_keys: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// `livecheck_resubmissions_total{same_key}`: checks of a picture seen before within the
    /// re-submission window.
    pub resubmissions: IntCounterVec,
    /// `livecheck_shadow_total{outcome}`: pictures of `--shadow-model-set` scored, dropped
    /// (the shadow queue was full) or failed.
    pub shadow: IntCounterVec,
}

impl Metrics {
    /// Creates and registers all metrics in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "livecheck_http_requests_total",
                "HTTP requests by route, method and status code",
            ),
            &["route", "method", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "livecheck_http_request_duration_seconds",
                "HTTP request latency by route",
            )
            .buckets(REQUEST_BUCKETS.to_vec()),
            &["route"],
        )?;
        let verdicts = IntCounterVec::new(
            Opts::new("livecheck_verdicts_total", "Verdicts by reason"),
            &["reason", "live"],
        )?;
        let stage_duration = HistogramVec::new(
            HistogramOpts::new(
                "livecheck_stage_duration_seconds",
                "Latency of each check stage (fetch, decode, detect, classify, pipeline, audit)",
            )
            .buckets(STAGE_BUCKETS.to_vec()),
            &["stage"],
        )?;
        let in_flight = IntGauge::new(
            "livecheck_checks_in_flight",
            "Checks admitted and not yet answered",
        )?;
        let rejections = IntCounterVec::new(
            Opts::new(
                "livecheck_rejections_total",
                "Requests refused before checking, by cause",
            ),
            &["cause"],
        )?;
        let ratelimit_redis_errors = IntCounter::new(
            "livecheck_ratelimit_redis_errors_total",
            "Shared rate-limit calls to Redis that failed or timed out (counted per replica instead)",
        )?;
        let p_real = HistogramVec::new(
            HistogramOpts::new(
                "livecheck_p_real",
                "Fused liveness score of verdicts the classifiers made, by model-set hash",
            )
            .buckets(SCORE_BUCKETS.to_vec()),
            &["model_set"],
        )?;
        let key_verdicts = IntCounterVec::new(
            Opts::new(
                "livecheck_key_verdicts_total",
                "Verdicts by API key id (the first 100 keys seen; later ones as key=\"other\")",
            ),
            &["key", "live"],
        )?;
        let resubmissions = IntCounterVec::new(
            Opts::new(
                "livecheck_resubmissions_total",
                "Checks of a picture already checked within the re-submission window",
            ),
            &["same_key"],
        )?;
        let shadow = IntCounterVec::new(
            Opts::new(
                "livecheck_shadow_total",
                "Pictures handed to the shadow model set, by outcome (scored, dropped, failed)",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(shadow.clone()))?;
        registry.register(Box::new(p_real.clone()))?;
        registry.register(Box::new(key_verdicts.clone()))?;
        registry.register(Box::new(resubmissions.clone()))?;
        registry.register(Box::new(ratelimit_redis_errors.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(verdicts.clone()))?;
        registry.register(Box::new(stage_duration.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(rejections.clone()))?;
        Ok(Metrics {
            registry,
            http_requests,
            http_duration,
            verdicts,
            stage_duration,
            in_flight,
            rejections,
            ratelimit_redis_errors,
            p_real,
            key_verdicts,
            labelled_keys: Default::default(),
            resubmissions,
            shadow,
        })
    }

    /// Counts one verdict for the key `key` (its id).
    pub fn count_key_verdict(&self, key: &str, live: bool) {
        let label = {
            let mut keys = self
                .labelled_keys
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if keys.contains(key) {
                key.to_owned()
            } else if keys.len() < MAX_KEY_LABELS {
                keys.insert(key.to_owned());
                key.to_owned()
            } else {
                "other".to_owned()
            }
        };
        self.key_verdicts
            .with_label_values(&[label.as_str(), if live { "true" } else { "false" }])
            .inc();
    }

    /// Records one stage duration given in milliseconds.
    pub fn observe_stage_ms(&self, stage: &str, ms: f64) {
        self.stage_duration
            .with_label_values(&[stage])
            .observe(ms / 1000.0);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_all_families_with_explicit_buckets() {
        let m = Metrics::new().unwrap();
        m.http_requests
            .with_label_values(&["/healthz", "GET", "200"])
            .inc();
        m.verdicts.with_label_values(&["spoof", "false"]).inc();
        m.observe_stage_ms("detect", 12.0);
        m.in_flight.inc();
        m.rejections.with_label_values(&["overloaded"]).inc();
        m.http_duration
            .with_label_values(&["/healthz"])
            .observe(0.002);
        let text = m.render().unwrap();
        assert!(text.contains(
            r#"livecheck_http_requests_total{method="GET",route="/healthz",status="200"} 1"#
        ));
        assert!(text.contains(r#"livecheck_verdicts_total{live="false",reason="spoof"} 1"#));
        assert!(
            text.contains(r#"livecheck_stage_duration_seconds_bucket{stage="detect",le="0.02"} 1"#)
        );
        assert!(
            text.contains(r#"livecheck_stage_duration_seconds_bucket{stage="detect",le="0.01"} 0"#)
        );
        assert!(text.contains("livecheck_checks_in_flight 1"));
        assert!(text.contains(r#"livecheck_rejections_total{cause="overloaded"} 1"#));
    }

    #[test]
    fn scores_and_key_verdicts_are_exported_with_bounded_key_labels() {
        let m = Metrics::new().unwrap();
        m.p_real
            .with_label_values(&["954c6072f75181f8"])
            .observe(0.42);
        m.resubmissions.with_label_values(&["false"]).inc();
        for i in 0..MAX_KEY_LABELS + 5 {
            m.count_key_verdict(&format!("key-{i}"), i % 2 == 0);
        }
        m.count_key_verdict("key-0", true);
        let text = m.render().unwrap();
        assert!(
            text.contains(r#"livecheck_p_real_bucket{model_set="954c6072f75181f8",le="0.45"} 1"#)
        );
        assert!(
            text.contains(r#"livecheck_p_real_bucket{model_set="954c6072f75181f8",le="0.4"} 0"#)
        );
        assert!(text.contains(r#"livecheck_key_verdicts_total{key="key-0",live="true"} 2"#));
        assert!(!text.contains(&format!("key=\"key-{MAX_KEY_LABELS}\"")));
        // The 5 keys past the bound, in one series per verdict.
        let other: u64 = text
            .lines()
            .filter(|l| l.starts_with(r#"livecheck_key_verdicts_total{key="other""#))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(other, 5);
        assert!(text.contains(r#"livecheck_resubmissions_total{same_key="false"} 1"#));
    }

    #[test]
    fn registries_are_independent() {
        let a = Metrics::new().unwrap();
        let b = Metrics::new().unwrap();
        a.in_flight.inc();
        assert!(b.render().unwrap().contains("livecheck_checks_in_flight 0"));
    }
}

//! `livecheck eval`: ISO/IEC 30107-3 evaluation on a labelled dataset.
//!
//! - [`dataset`]: load a folder layout or a CSV manifest, and hash it.
//! - [`metrics`]: the error rates (pure; see its module doc for every convention).
//! - [`plot`]: ROC, DET and histogram SVGs (plotters), and the inverse normal CDF for DET axes.
//! - [`report`]: `metrics.json`, `scores.csv`, `report.html` and the terminal summary.
//!
//! This module runs the [`CheckService`] over the dataset ([`run_dataset`]) and turns its verdicts into
//! pure [`metrics::Sample`]s: a verdict whose reason is neither `live` nor `spoof`, and every
//! `Err`, is a non-response (`p_real = None`).

pub mod calibrate;
pub mod dataset;
pub mod metrics;
pub mod plot;
pub mod report;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use crate::pipeline::{Reason, Verdict};
use crate::service::CheckError;
pub use crate::service::CheckService;
use dataset::{bytes_sha256, Dataset, DatasetItem};
use metrics::{Label, Sample};

/// What the pipeline said about one image.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A verdict: a decision (`live` / `spoof`) or a quality outcome (a non-response).
    Verdict(Verdict),
    /// No verdict: the file could not be read, was not an image, or inference failed.
    Failed {
        /// `read_error`, `decode_error` or `engine_error`.
        reason: &'static str,
        message: String,
    },
}

/// One dataset image with its outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredSample {
    pub file: String,
    pub label: Label,
    pub attack_type: String,
    /// Every manifest column except `file`.
    pub fields: BTreeMap<String, String>,
    /// Hex SHA-256 of the file content (`None` when it could not be read).
    pub content_sha256: Option<String>,
    pub outcome: Outcome,
}

impl ScoredSample {
    /// Builds a sample from the pipeline's answer.
    pub fn from_result(
        item: &DatasetItem,
        content_sha256: Option<String>,
        result: Result<Verdict, CheckError>,
    ) -> ScoredSample {
        let outcome = match result {
            Ok(v) => Outcome::Verdict(v),
            Err(e) => Outcome::Failed {
                reason: match e {
                    CheckError::Input(_) => "decode_error",
                    CheckError::Engine(_) => "engine_error",
                },
                message: e.to_string(),
            },
        };
        ScoredSample {
            file: item.file.clone(),
            label: item.label,
            attack_type: item.attack_type.clone(),
            fields: item.fields.clone(),
            content_sha256,
            outcome,
        }
    }

    /// `p_real` when a liveness decision was made (reason `live` or `spoof`), else `None`.
    pub fn p_real(&self) -> Option<f64> {
        match &self.outcome {
            Outcome::Verdict(v) if matches!(v.reason, Reason::Live | Reason::Spoof) => {
                Some(f64::from(v.p_real))
            }
            _ => None,
        }
    }

    /// `live`, `not_live` (any verdict that is not live, non-responses included) or `error`.
    pub fn verdict(&self) -> &'static str {
        match &self.outcome {
            Outcome::Verdict(v) if v.live => "live",
            Outcome::Verdict(_) => "not_live",
            Outcome::Failed { .. } => "error",
        }
    }

    /// The reason code (`live`, `spoof`, `no_face`, ..., `decode_error`).
    pub fn reason(&self) -> &'static str {
        match &self.outcome {
            Outcome::Verdict(v) => v.reason.code(),
            Outcome::Failed { reason, .. } => reason,
        }
    }

    /// The pure metrics view; `group_by` selects the group column kept.
    pub fn to_sample(&self, group_by: Option<&str>) -> Sample {
        let mut groups = BTreeMap::new();
        if let Some(col) = group_by {
            groups.insert(
                col.to_string(),
                self.fields.get(col).cloned().unwrap_or_default(),
            );
        }
        Sample {
            label: self.label,
            attack_type: self.attack_type.clone(),
            p_real: self.p_real(),
            groups,
        }
    }
}

/// The dataset hash ([`dataset::dataset_hash`]) from the contents read during the run; `None`
/// when some file could not be read.
pub fn dataset_hash_of(samples: &[ScoredSample]) -> Option<String> {
    let mut entries = Vec::with_capacity(samples.len());
    for s in samples {
        entries.push((
            s.file.clone(),
            s.label,
            s.attack_type.clone(),
            s.content_sha256.clone()?,
        ));
    }
    Some(dataset::dataset_hash(entries))
}

fn run_one(service: &CheckService, item: &DatasetItem) -> ScoredSample {
    match std::fs::read(&item.path) {
        Ok(bytes) => match service.check(&bytes) {
            Ok(c) => ScoredSample::from_result(item, Some(c.image_sha256), Ok(c.verdict)),
            Err(e) => ScoredSample::from_result(item, Some(bytes_sha256(&bytes)), Err(e)),
        },
        Err(e) => ScoredSample {
            file: item.file.clone(),
            label: item.label,
            attack_type: item.attack_type.clone(),
            fields: item.fields.clone(),
            content_sha256: None,
            outcome: Outcome::Failed {
                reason: "read_error",
                message: format!("cannot read {}: {e}", item.path.display()),
            },
        },
    }
}

/// Runs every image of `ds` through `pipeline` on a local rayon pool of `threads` threads
/// (at least 1). Results are in dataset order. `progress` is called after each image with the
/// number of images done so far.
pub fn run_dataset(
    service: &CheckService,
    ds: &Dataset,
    threads: usize,
    progress: impl Fn(usize) + Sync,
) -> Vec<ScoredSample> {
    let done = AtomicUsize::new(0);
    let work = || {
        // One image per task: rayon's default splitting hands out runs of images, and a run
        // of large ones left one thread working alone at the end (1.57x on 2 cores on the
        // devset, against 2.0x with one image per task; benches/throughput.rs).
        ds.items
            .par_iter()
            .with_max_len(1)
            .map(|item| {
                let s = run_one(service, item);
                progress(done.fetch_add(1, Ordering::Relaxed) + 1);
                s
            })
            .collect::<Vec<_>>()
    };
    match rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|i| format!("eval-{i}"))
        .build()
    {
        Ok(pool) => pool.install(work),
        // The OS refused threads: run on the calling thread instead.
        Err(_) => ds
            .items
            .iter()
            .map(|item| {
                let s = run_one(service, item);
                progress(done.fetch_add(1, Ordering::Relaxed) + 1);
                s
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineError;
    use crate::pipeline::{DecodeError, PipelineError, Timings};

    fn item(label: Label) -> DatasetItem {
        let mut fields = BTreeMap::new();
        fields.insert("source".to_string(), "s1".to_string());
        DatasetItem {
            file: "a.jpg".into(),
            path: "a.jpg".into(),
            label,
            attack_type: if label == Label::Live {
                "none"
            } else {
                "print"
            }
            .into(),
            fields,
        }
    }

    fn verdict(p: f32, live: bool, reason: Reason) -> Verdict {
        Verdict {
            live,
            p_real: p,
            threshold: 0.5,
            reason,
            face: None,
            scores: None,
            image_size: None,
            print: None,
            timings: Timings::default(),
        }
    }

    #[test]
    fn decisions_and_non_responses() {
        let s = ScoredSample::from_result(
            &item(Label::Live),
            None,
            Ok(verdict(0.75, true, Reason::Live)),
        );
        assert_eq!(s.p_real(), Some(0.75));
        assert_eq!((s.verdict(), s.reason()), ("live", "live"));

        let s = ScoredSample::from_result(
            &item(Label::Spoof),
            None,
            Ok(verdict(0.25, false, Reason::Spoof)),
        );
        assert_eq!(s.p_real(), Some(0.25));
        assert_eq!((s.verdict(), s.reason()), ("not_live", "spoof"));

        // A quality outcome is a non-response even when p_real is set.
        let s = ScoredSample::from_result(
            &item(Label::Live),
            None,
            Ok(verdict(0.9, false, Reason::FaceTooClose)),
        );
        assert_eq!(s.p_real(), None);
        assert_eq!((s.verdict(), s.reason()), ("not_live", "face_too_close"));

        let s = ScoredSample::from_result(
            &item(Label::Spoof),
            None,
            Err(CheckError::Input(DecodeError::NotAnImage)),
        );
        assert_eq!(s.p_real(), None);
        assert_eq!((s.verdict(), s.reason()), ("error", "decode_error"));

        let s = ScoredSample::from_result(
            &item(Label::Spoof),
            None,
            Err(CheckError::Engine(PipelineError::Engine(
                EngineError::Run {
                    model: "x".to_string(),
                    message: "boom".into(),
                },
            ))),
        );
        assert_eq!(s.reason(), "engine_error");
        let m = s.to_sample(Some("source"));
        assert_eq!(m.groups["source"], "s1");
        assert_eq!(m.p_real, None);
        assert_eq!(s.to_sample(Some("nope")).groups["nope"], "");
    }

    #[test]
    fn hash_of_samples_needs_every_content() {
        let mut a = ScoredSample::from_result(
            &item(Label::Live),
            Some("00".into()),
            Ok(verdict(0.7, true, Reason::Live)),
        );
        let h = dataset_hash_of(std::slice::from_ref(&a)).unwrap();
        assert_eq!(
            h,
            dataset::dataset_hash(vec![(
                "a.jpg".into(),
                Label::Live,
                "none".into(),
                "00".into()
            )])
        );
        a.content_sha256 = None;
        assert_eq!(dataset_hash_of(&[a]), None);
    }
}

//! `livecheck crops DATASET OUT`: the classifier inputs of a model set for every image of a
//! labelled dataset, as PNG files plus `crops.csv`, so that training (`training/`) sees exactly
//! the serving preprocessing.
//!
//! For each image whose face reaches the classifiers (reason `live` or `spoof`), view 0 is the
//! served crop of every member; views 1..=N use the detector's box jittered (shift up to
//! ±`--jitter-shift` of its side, scale within ±`--jitter-scale`; 0.10 each by default) and cut
//! by the same code.
//! `crops.csv`: `id,file,label,attack_type,source,view,member,crop,reason,logits` (logits
//! space-separated, the member's raw outputs for that view).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use livecheck::eval::dataset::{Dataset, DatasetItem};
use livecheck::pipeline::{decode, Pipeline, Reason};

use super::common::PipelineArgs;

#[derive(clap::Args)]
pub struct CropsArgs {
    /// Labelled dataset: a folder or CSV manifest, as `livecheck eval` reads.
    #[arg(value_name = "DATASET")]
    pub dataset: PathBuf,

    /// Output folder (one subfolder of PNGs per member, and crops.csv).
    #[arg(value_name = "OUT")]
    pub out: PathBuf,

    /// Jittered views per image besides the served crop.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub jitter: usize,

    /// Largest shift of a jittered box, as a fraction of the box side.
    #[arg(long, default_value_t = 0.10, value_name = "FRACTION", value_parser = fraction)]
    pub jitter_shift: f64,

    /// Largest relative change of a jittered box's side.
    #[arg(long, default_value_t = 0.10, value_name = "FRACTION", value_parser = fraction)]
    pub jitter_scale: f64,

    /// Seed of the jitter (per image, mixed with its file name: results do not depend on order
    /// or threads).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Manifest column written as `source` (the unit of leave-source-out validation).
    #[arg(long, default_value = "source_repo", value_name = "COLUMN")]
    pub group_by: String,

    /// Images processed in parallel (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

/// One row of crops.csv.
struct Row {
    view: usize,
    member: String,
    crop: String,
    reason: &'static str,
    logits: Vec<f32>,
}

/// What happened to one image.
enum ImageResult {
    Rows(Vec<Row>),
    /// No classifier ran: the reason code (or `read_error` / `decode_error`).
    Skipped(&'static str),
}

/// A jitter fraction: finite, in [0, 0.5].
fn fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=0.5).contains(&v) => Ok(v),
        _ => Err(format!("expected a number from 0 to 0.5, got {s:?}")),
    }
}

/// A box jittered around `bbox` (`[x, y, w, h]`): shift up to ±`shift` of its side, side scaled
/// within ±`scale`; deterministic in `rng`.
fn jitter(bbox: [i32; 4], shift: f64, scale: f64, rng: &mut impl Rng) -> [i32; 4] {
    let [x, y, w, h] = bbox.map(f64::from);
    let s = 1.0 + rng.random_range(-scale..=scale);
    let (nw, nh) = ((w * s).max(1.0), (h * s).max(1.0));
    let cx = x + w / 2.0 + rng.random_range(-shift..=shift) * w;
    let cy = y + h / 2.0 + rng.random_range(-shift..=shift) * h;
    [
        (cx - nw / 2.0).round() as i32,
        (cy - nh / 2.0).round() as i32,
        nw.round() as i32,
        nh.round() as i32,
    ]
}

/// A stable 64-bit seed from the run seed and the image's name (FNV-1a).
fn image_seed(seed: u64, file: &str) -> u64 {
    file.bytes().fold(0xcbf2_9ce4_8422_2325 ^ seed, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn write_png(path: &Path, bgr: &[u8], side: usize) -> anyhow::Result<()> {
    let rgb: Vec<u8> = bgr
        .chunks_exact(3)
        .flat_map(|p| [p[2], p[1], p[0]])
        .collect();
    let side = u32::try_from(side)?;
    image::save_buffer(path, &rgb, side, side, image::ExtendedColorType::Rgb8)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn crops_of(
    pipeline: &Pipeline,
    item: &DatasetItem,
    id: usize,
    args: &CropsArgs,
) -> anyhow::Result<ImageResult> {
    let Ok(bytes) = std::fs::read(&item.path) else {
        return Ok(ImageResult::Skipped("read_error"));
    };
    let Ok(img) = decode::decode(&bytes, &pipeline.config().limits) else {
        return Ok(ImageResult::Skipped("decode_error"));
    };
    let verdict = pipeline.check_image(&img)?;
    let (Reason::Live | Reason::Spoof, Some(face)) = (verdict.reason, verdict.face) else {
        return Ok(ImageResult::Skipped(verdict.reason.code()));
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(image_seed(args.seed, &item.file));
    let mut rows = Vec::new();
    for view in 0..=args.jitter {
        let bbox = if view == 0 {
            face.bbox
        } else {
            jitter(face.bbox, args.jitter_shift, args.jitter_scale, &mut rng)
        };
        for (index, member) in pipeline.model_set().classifiers.iter().enumerate() {
            let (pixels, score) = pipeline.member_sample(&img, bbox, index)?;
            let crop = format!("{}/{id:06}_{view}.png", member.name);
            write_png(&args.out.join(&crop), &pixels, member.size)?;
            rows.push(Row {
                view,
                member: member.name.clone(),
                crop,
                reason: verdict.reason.code(),
                logits: score.logits,
            });
        }
    }
    Ok(ImageResult::Rows(rows))
}

pub fn run(args: CropsArgs) -> anyhow::Result<ExitCode> {
    let ds = Dataset::load(&args.dataset)?;
    ds.check_group_column(&args.group_by)?;
    let pipeline = args.pipeline.build().context("cannot build the pipeline")?;
    for m in &pipeline.model_set().classifiers {
        std::fs::create_dir_all(args.out.join(&m.name))
            .with_context(|| format!("cannot create {}", args.out.display()))?;
    }
    let threads = match args.threads {
        Some(0) => anyhow::bail!("--threads must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let pb = super::common::image_progress(ds.items.len());
    let done = AtomicUsize::new(0);
    let results: Vec<anyhow::Result<ImageResult>> = pool.install(|| {
        ds.items
            .par_iter()
            .enumerate()
            .with_max_len(1)
            .map(|(id, item)| {
                let r = crops_of(&pipeline, item, id, &args);
                pb.set_position(done.fetch_add(1, Ordering::Relaxed) as u64 + 1);
                r
            })
            .collect()
    });
    pb.finish_and_clear();

    let csv_path = args.out.join("crops.csv");
    let mut w = csv::Writer::from_path(&csv_path)
        .with_context(|| format!("cannot write {}", csv_path.display()))?;
    w.write_record([
        "id",
        "file",
        "label",
        "attack_type",
        "source",
        "view",
        "member",
        "crop",
        "reason",
        "logits",
    ])?;
    let mut skipped = std::collections::BTreeMap::<&str, usize>::new();
    let mut images = 0usize;
    for (id, (item, result)) in ds.items.iter().zip(results).enumerate() {
        match result? {
            ImageResult::Skipped(reason) => *skipped.entry(reason).or_default() += 1,
            ImageResult::Rows(rows) => {
                images += 1;
                let label = item.label.as_str();
                let source = item.fields.get(&args.group_by).cloned().unwrap_or_default();
                for r in rows {
                    let logits = r
                        .logits
                        .iter()
                        .map(|l| l.to_string())
                        .collect::<Vec<_>>()
                        .join(" ");
                    w.write_record([
                        id.to_string().as_str(),
                        &item.file,
                        label,
                        &item.attack_type,
                        &source,
                        &r.view.to_string(),
                        &r.member,
                        &r.crop,
                        r.reason,
                        &logits,
                    ])?;
                }
            }
        }
    }
    w.flush()?;
    let skipped_text = skipped
        .iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    eprintln!(
        "{images} of {} images cropped ({} views x {} members, model set {} {}) into {}{}",
        ds.items.len(),
        args.jitter + 1,
        pipeline.model_set().classifiers.len(),
        pipeline.model_set().name,
        pipeline.model_hash(),
        csv_path.display(),
        if skipped.is_empty() {
            String::new()
        } else {
            format!("; skipped: {skipped_text}")
        }
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_near_the_box_and_is_deterministic() {
        let bbox = [100, 120, 200, 220];
        let mut a = rand::rngs::StdRng::seed_from_u64(image_seed(0, "x.jpg"));
        let mut b = rand::rngs::StdRng::seed_from_u64(image_seed(0, "x.jpg"));
        for _ in 0..200 {
            let j = jitter(bbox, 0.10, 0.10, &mut a);
            assert_eq!(j, jitter(bbox, 0.10, 0.10, &mut b));
            assert!(
                (180..=220).contains(&j[2]) && (198..=242).contains(&j[3]),
                "{j:?}"
            );
            let (cx, cy) = (j[0] + j[2] / 2, j[1] + j[3] / 2);
            assert!((cx - 200).abs() <= 22 && (cy - 230).abs() <= 24, "{j:?}");
        }
        let mut c = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..200 {
            let j = jitter(bbox, 0.02, 0.0, &mut c);
            assert!((j[2], j[3]) == (200, 220), "{j:?}");
            let (cx, cy) = (j[0] + j[2] / 2, j[1] + j[3] / 2);
            assert!((cx - 200).abs() <= 5 && (cy - 230).abs() <= 5, "{j:?}");
        }
        assert_eq!(jitter(bbox, 0.0, 0.0, &mut c), bbox);
        assert!(fraction("0.05").is_ok() && fraction("0.6").is_err() && fraction("nan").is_err());
        assert!(fraction("-0.1").is_err() && fraction("x").is_err());
        assert_ne!(image_seed(0, "x.jpg"), image_seed(1, "x.jpg"));
        assert_ne!(image_seed(0, "x.jpg"), image_seed(0, "y.jpg"));
    }
}

//! Re-submission detection: has this picture, or a near-copy of it, been checked before?
//!
//! Two things identify a picture: the SHA-256 of its bytes (the exact file) and its perceptual
//! print ([`crate::pipeline::print`]: the same picture re-encoded, resized, brightened or with
//! its contrast changed). Neither is stored as such. With the server's secret [`PrintKey`]:
//!
//! - the SHA-256 becomes `image_tag` = HMAC-SHA256(secret, "image" | sha256);
//! - each of the print's four 16-bit bands becomes a band tag = HMAC-SHA256(secret, "band" | i |
//!   band), truncated to 128 bits: a store finds candidates by equality on these (indexed);
//! - the print itself (63 coefficients as `i16`) is sealed: XORed with a keystream of
//!   HMAC-SHA256(secret, "seal" | reference | block), unique to the row, so only the server can
//!   open it to measure the distance to a candidate.
//!
//! A leaked database without the secret cannot be matched against outside pictures: every stored
//! value is a keyed hash or ciphertext. The distance decision ([`ImagePrint::matches`]) is made
//! on opened prints, so the bands only need to find candidates: prints that differ in at most
//! three of their 64 bits always share a band, and the copies measured on the devset share one
//! in 96-100 % of cases (docs/accuracy.md, "Re-submission").
//!
//! No HTTP or SQL here: the server asks the store for the candidates of a [`Fingerprint`] and
//! [`judge`]s them.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

use crate::pipeline::print::{ImagePrint, BANDS, COEFFS};

type HmacSha256 = Hmac<Sha256>;

/// Default of `--resubmission-window`: how far back a re-submission is looked for.
pub const DEFAULT_WINDOW_DAYS: i64 = 30;
/// Most earlier checks of the same bytes counted for one check: the newest. A file checked more
/// often than this within the window reports this `count`; `first_seen` is exact whatever their
/// number. (Counted from the index alone: no row is read.)
pub const MAX_SAME_BYTES: i64 = 1000;
/// Most stored checks read per band tag for one check, the newest: the candidates for a
/// near-copy, whose sealed prints are opened and compared. Bounded so that a picture submitted
/// thousands of times (by a fraud ring, or a load test) costs every later lookup the same.
pub const MAX_BAND_CANDIDATES: i64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum PrintKeyError {
    #[error("print key file {path}: {message}")]
    File { path: String, message: String },
}

/// The server secret behind every stored re-submission hash. Shared by all replicas of one
/// deployment (like the database), never by two deployments.
#[derive(Clone)]
pub struct PrintKey {
    secret: [u8; 32],
}

impl std::fmt::Debug for PrintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrintKey(..)")
    }
}

/// The key file's JSON.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrintKeyFile {
    /// Always `livecheck-print-key`.
    kind: String,
    /// The 32-byte secret, base64url without padding.
    secret: String,
    created: String,
}

const FILE_KIND: &str = "livecheck-print-key";

/// What is stored about one checked picture (all keyed; see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// HMAC of the bytes' SHA-256 (64 hex digits).
    pub image_tag: String,
    /// HMACs of the print's bands (32 hex digits each); `None` when the picture has no print.
    pub bands: Option<[String; BANDS]>,
    /// The sealed print (base64url); `None` when the picture has no print.
    pub sealed: Option<String>,
}

/// Earlier checks of the same bytes (the same image tag) within the window, as the store counts
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SameBytes {
    /// How many, among the newest [`MAX_SAME_BYTES`].
    pub count: u64,
    /// When the first was made (exact).
    pub first_seen: Option<DateTime<Utc>>,
    /// Whether one of the newest [`MAX_SAME_BYTES`] was made with the key asking now.
    pub same_key: bool,
}

/// What the store knows of a picture's earlier checks: the same bytes counted, and the checks of
/// other bytes among the newest sharing a band tag (at most [`MAX_BAND_CANDIDATES`] read per
/// band) to judge as near-copies.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sightings {
    pub same_bytes: SameBytes,
    pub near: Vec<Candidate>,
}

/// A stored check whose fingerprint shares the image tag or a band with the one being judged.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub reference: Uuid,
    pub key_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub image_tag: String,
    pub sealed: Option<String>,
}

/// `data.signals.resubmission`: whether the picture was seen before within the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Resubmission {
    /// The same bytes, or a near-copy of the picture, were checked before within the window.
    pub seen_before: bool,
    /// When it was first checked within the window (`null` when not seen before; for near-copies,
    /// among the newest 100 checks sharing each band).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub first_seen: Option<DateTime<Utc>>,
    /// How many earlier checks within the window were of this picture (the same bytes: among the
    /// newest 1000; near-copies: among the newest 100 checks sharing each band).
    pub count: u64,
    /// Whether one of those earlier checks was made with the same API key.
    pub same_key: bool,
}

impl PrintKey {
    pub fn generate() -> PrintKey {
        let mut secret = [0u8; 32];
        rand::Rng::fill(&mut rand::rng(), &mut secret);
        PrintKey { secret }
    }

    /// A key with a known secret (tests).
    pub fn from_secret(secret: [u8; 32]) -> PrintKey {
        PrintKey { secret }
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut m = <HmacSha256 as Mac>::new_from_slice(&self.secret)
            .expect("HMAC takes a key of any length");
        for p in parts {
            // Length-prefixed, so that no two part lists give the same input.
            m.update(&(p.len() as u32).to_be_bytes());
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }

    /// The stored fingerprint of a picture checked under `reference`.
    pub fn fingerprint(
        &self,
        image_sha256: &str,
        print: Option<&ImagePrint>,
        reference: Uuid,
    ) -> Fingerprint {
        let image_tag = hex::encode(self.mac(&[b"image", image_sha256.as_bytes()]));
        let bands = print.map(|p| self.band_tags(p));
        let sealed = print.map(|p| B64.encode(self.seal(p, reference)));
        Fingerprint {
            image_tag,
            bands,
            sealed,
        }
    }

    /// The band tags of a print.
    pub fn band_tags(&self, print: &ImagePrint) -> [String; BANDS] {
        let bands = print.bands();
        std::array::from_fn(|i| {
            let tag = self.mac(&[b"band", &[i as u8], &bands[i].to_be_bytes()]);
            hex::encode(&tag[..16])
        })
    }

    fn keystream(&self, reference: Uuid, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 32);
        let mut block = 0u32;
        while out.len() < len {
            out.extend_from_slice(&self.mac(&[
                b"seal",
                reference.as_bytes(),
                &block.to_be_bytes(),
            ]));
            block += 1;
        }
        out.truncate(len);
        out
    }

    fn seal(&self, print: &ImagePrint, reference: Uuid) -> Vec<u8> {
        let plain: Vec<u8> = print
            .quantized()
            .iter()
            .flat_map(|q| q.to_be_bytes())
            .collect();
        plain
            .iter()
            .zip(self.keystream(reference, plain.len()))
            .map(|(p, k)| p ^ k)
            .collect()
    }

    /// The print sealed in a row stored under `reference`; `None` when it is not a sealed print.
    pub fn open(&self, sealed: &str, reference: Uuid) -> Option<ImagePrint> {
        let bytes = B64.decode(sealed).ok()?;
        if bytes.len() != COEFFS * 2 {
            return None;
        }
        let plain: Vec<u8> = bytes
            .iter()
            .zip(self.keystream(reference, bytes.len()))
            .map(|(c, k)| c ^ k)
            .collect();
        let q: [i16; COEFFS] =
            std::array::from_fn(|i| i16::from_be_bytes([plain[2 * i], plain[2 * i + 1]]));
        Some(ImagePrint::from_quantized(&q))
    }

    /// Read a key file.
    pub fn load(path: &Path) -> Result<PrintKey, PrintKeyError> {
        let err = |message: String| PrintKeyError::File {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let file: PrintKeyFile = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        if file.kind != FILE_KIND {
            return Err(err(format!("kind is {:?}, not {FILE_KIND:?}", file.kind)));
        }
        let secret: [u8; 32] = B64
            .decode(&file.secret)
            .ok()
            .and_then(|d| d.try_into().ok())
            .ok_or_else(|| err("secret is not a base64url 32-byte value".into()))?;
        Ok(PrintKey { secret })
    }

    /// Write the key file at `path`, readable by its owner only, never overwriting (as
    /// [`crate::receipts::ReceiptKey::save`]).
    pub fn save(&self, path: &Path) -> Result<(), PrintKeyError> {
        let file = PrintKeyFile {
            kind: FILE_KIND.into(),
            secret: B64.encode(self.secret),
            created: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        let json = serde_json::to_string_pretty(&file).map_err(|e| PrintKeyError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        crate::receipts::write_new_private(path, json.as_bytes()).map_err(|message| {
            PrintKeyError::File {
                path: path.display().to_string(),
                message,
            }
        })
    }

    /// The key at `path`, or a new one written there when the file does not exist (`true` when
    /// it was created).
    pub fn load_or_create(path: &Path) -> Result<(PrintKey, bool), PrintKeyError> {
        crate::receipts::load_or_create_key(
            path,
            PrintKey::load,
            PrintKey::generate,
            PrintKey::save,
        )
    }
}

/// Judge a picture's earlier checks: those of the same bytes (counted by the store), and the
/// band candidates of other bytes whose opened print is within
/// [`crate::pipeline::print::MATCH_DISTANCE`] of `print`. `key_id` is the key asking now (the
/// store already answered `same_bytes.same_key` for it).
pub fn judge(
    key: &PrintKey,
    fingerprint: &Fingerprint,
    print: Option<&ImagePrint>,
    key_id: Option<Uuid>,
    sightings: &Sightings,
) -> Resubmission {
    let same = sightings.same_bytes;
    let mut out = Resubmission {
        seen_before: same.count > 0,
        first_seen: same.first_seen,
        count: same.count,
        same_key: same.same_key,
    };
    let Some(print) = print else {
        return out;
    };
    for c in &sightings.near {
        // The same bytes were counted above, whatever their prints say.
        if c.image_tag == fingerprint.image_tag {
            continue;
        }
        let near = c
            .sealed
            .as_deref()
            .and_then(|s| key.open(s, c.reference))
            .is_some_and(|q| print.matches(&q));
        if near {
            out.seen_before = true;
            out.count += 1;
            out.same_key |= key_id.is_some() && c.key_id == key_id;
            out.first_seen = Some(match out.first_seen {
                Some(t) if t <= c.created_at => t,
                _ => c.created_at,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn print(seed: f32) -> ImagePrint {
        let mut coeffs = [0f32; COEFFS];
        for (i, c) in coeffs.iter_mut().enumerate() {
            *c = ((i as f32 + 1.0) * seed).sin();
        }
        let n = coeffs.iter().map(|c| c * c).sum::<f32>().sqrt();
        coeffs.iter_mut().for_each(|c| *c /= n);
        ImagePrint { coeffs }
    }

    #[test]
    fn sealed_prints_open_only_with_their_key_and_reference() {
        let key = PrintKey::from_secret([7; 32]);
        let p = print(0.7);
        let r = Uuid::new_v4();
        let f = key.fingerprint(&"ab".repeat(32), Some(&p), r);
        let sealed = f.sealed.as_deref().unwrap();
        let opened = key.open(sealed, r).unwrap();
        assert!(p.distance(&opened) < 1e-3);
        // Another reference or another secret opens to noise, not to the print.
        let other = key.open(sealed, Uuid::new_v4()).unwrap();
        assert!(!p.matches(&other));
        let stranger = PrintKey::from_secret([8; 32]).open(sealed, r).unwrap();
        assert!(!p.matches(&stranger));
        assert!(key.open("not base64!", r).is_none());
        assert!(key.open(&B64.encode([0u8; 10]), r).is_none());
    }

    #[test]
    fn tags_are_keyed() {
        let (a, b) = (
            PrintKey::from_secret([1; 32]),
            PrintKey::from_secret([2; 32]),
        );
        let p = print(0.3);
        let sha = "cd".repeat(32);
        let (fa, fb) = (
            a.fingerprint(&sha, Some(&p), Uuid::nil()),
            b.fingerprint(&sha, Some(&p), Uuid::nil()),
        );
        assert_ne!(fa.image_tag, fb.image_tag);
        assert_ne!(fa.bands, fb.bands);
        assert_ne!(fa.image_tag, sha, "the raw hash is never stored");
        // The same key gives the same tags (that is how a store finds them again).
        assert_eq!(fa, a.fingerprint(&sha, Some(&p), Uuid::nil()));
        // Bands at different positions with equal values get different tags.
        let tags = a.band_tags(&p);
        assert_eq!(tags.len(), BANDS);
        assert!(tags.iter().all(|t| t.len() == 32));
    }

    #[test]
    fn judge_counts_exact_and_near_copies() {
        let key = PrintKey::from_secret([3; 32]);
        let me = Uuid::new_v4();
        let them = Uuid::new_v4();
        let p = print(0.5);
        let mut near = p;
        near.coeffs[0] += 0.05;
        let far = print(1.9);
        let t0 = DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let stored = |print: Option<&ImagePrint>, sha: &str, who: Uuid, days: i64| {
            let r = Uuid::new_v4();
            let f = key.fingerprint(sha, print, r);
            Candidate {
                reference: r,
                key_id: Some(who),
                created_at: t0 + chrono::Duration::days(days),
                image_tag: f.image_tag,
                sealed: f.sealed,
            }
        };
        let sha = "11".repeat(32);
        let query = key.fingerprint(&sha, Some(&p), Uuid::new_v4());
        let none = judge(&key, &query, Some(&p), Some(me), &Sightings::default());
        assert!(!none.seen_before && none.count == 0 && none.first_seen.is_none());

        // One earlier check of the same bytes (counted by the store, by the other key), and three
        // band candidates: a near copy, another picture, and a same-bytes row (already counted).
        let same_bytes = |same_key| SameBytes {
            count: 1,
            first_seen: Some(t0 + chrono::Duration::days(2)),
            same_key,
        };
        let near_rows = vec![
            stored(Some(&near), &"22".repeat(32), them, 3),
            stored(Some(&far), &"33".repeat(32), me, 1),
            stored(Some(&p), &sha, them, 2),
        ];
        let seen = Sightings {
            same_bytes: same_bytes(false),
            near: near_rows.clone(),
        };
        let r = judge(&key, &query, Some(&p), Some(me), &seen);
        assert!(r.seen_before);
        assert_eq!(
            r.count, 2,
            "the near copy and the same bytes (once), not the other picture"
        );
        assert!(!r.same_key, "only the other key saw it");
        assert_eq!(r.first_seen, Some(t0 + chrono::Duration::days(2)));
        let r = judge(&key, &query, Some(&p), Some(them), &seen);
        assert!(r.same_key, "the near copy came with this key");
        // A near copy older than the first same-bytes check moves first_seen back.
        let older = Sightings {
            same_bytes: same_bytes(false),
            near: vec![stored(Some(&near), &"44".repeat(32), them, 0)],
        };
        let r = judge(&key, &query, Some(&p), Some(me), &older);
        assert_eq!((r.count, r.first_seen), (2, Some(t0)));
        // Without a print, only the same bytes count.
        let r = judge(&key, &query, None, Some(me), &seen);
        assert_eq!((r.count, r.same_key), (1, false));
    }

    #[test]
    fn key_files_round_trip_and_are_never_overwritten() {
        let dir = std::env::temp_dir().join(format!("lc-print-key-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("print-key.json");
        let (k, created) = PrintKey::load_or_create(&path).unwrap();
        assert!(created);
        let (again, created) = PrintKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(k.secret, again.secret);
        assert!(PrintKey::generate().save(&path).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(
            dir.join("bad.json"),
            "{\"kind\":\"x\",\"secret\":\"\",\"created\":\"\"}",
        )
        .unwrap();
        assert!(PrintKey::load(&dir.join("bad.json")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

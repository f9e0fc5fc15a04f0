//! The audit trail: one row per liveness check.

use chrono::{DateTime, Datelike, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::sessions::SessionRef;
use super::{parse_ts, parse_uuid, pg_ts, ts_text, Hot, Pool, Store, StoreError, Timings};
use crate::pipeline::Reason;
use crate::resubmission::{
    Candidate, Fingerprint, SameBytes, Sightings, MAX_BAND_CANDIDATES, MAX_SAME_BYTES,
};

/// How the image reached the service, as audited (stored as `url` or `base64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageSource {
    /// Fetched from an http(s) URL.
    Url,
    /// Sent inline (bare base64 or a data URI).
    Base64,
}

impl ImageSource {
    /// The stored code.
    pub fn code(self) -> &'static str {
        match self {
            ImageSource::Url => "url",
            ImageSource::Base64 => "base64",
        }
    }

    fn from_code(code: &str) -> Option<ImageSource> {
        [ImageSource::Url, ImageSource::Base64]
            .into_iter()
            .find(|s| s.code() == code)
    }
}

/// One audited check. It holds what is needed to explain a decision later and nothing that would
/// make the trail itself sensitive: no image bytes (only their SHA-256 and size), no full URL
/// (only the host), no token (only the key id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The reference returned to the client.
    pub reference: Uuid,
    /// The API key that made the request (`None` when auth is disabled).
    pub key_id: Option<Uuid>,
    /// Stored with microsecond precision (truncated).
    pub created_at: DateTime<Utc>,
    pub live: bool,
    pub p_real: f64,
    pub threshold: f64,
    /// The verdict's reason (stored as its code: `live`, `spoof`, `no_face`...).
    pub reason: Reason,
    pub detail: String,
    /// Face box `[x, y, w, h]` in pixels of the upright image.
    pub bbox: Option<[i32; 4]>,
    pub detector_confidence: Option<f64>,
    /// Lowercase hex SHA-256 of the image bytes as received (64 hex digits).
    pub image_sha256: String,
    pub image_bytes: i64,
    pub image_width: Option<i32>,
    pub image_height: Option<i32>,
    /// How the image came (stored as `url` or `base64`).
    pub input_kind: ImageSource,
    /// Host of the image URL (no scheme, path, query or credentials), for `url` inputs.
    pub url_host: Option<String>,
    /// Hash identifying the model set that decided.
    pub model_hash: String,
    pub engine: String,
    pub app_version: String,
    pub timings_ms: Timings,
    /// The signed decision receipt sent with the verdict (`None` when the service signs none).
    pub receipt: Option<String>,
    /// The picture's keyed hashes for re-submission detection (`None` when the service keeps
    /// none).
    pub fingerprint: Option<Fingerprint>,
    /// The signals reported with the verdict (`data.signals`, a JSON object), if any.
    pub signals: Option<String>,
    /// The shadow model set's verdict on the same picture (`--shadow-model-set`), written after
    /// the answer; `None` until then or without a shadow set.
    pub shadow: Option<ShadowScore>,
    /// The capture session the check was made through (`x-session-token`), if any.
    pub session: Option<SessionRef>,
}

/// A shadow model set's verdict on an audited picture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowScore {
    /// The shadow set's hash.
    pub model: String,
    pub p_real: f64,
    pub live: bool,
    pub reason: Reason,
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    reference: String,
    key_id: Option<String>,
    created_at: String,
    live: bool,
    p_real: f64,
    threshold: f64,
    reason: String,
    detail: String,
    bbox_x: Option<i32>,
    bbox_y: Option<i32>,
    bbox_w: Option<i32>,
    bbox_h: Option<i32>,
    detector_confidence: Option<f64>,
    image_sha256: String,
    image_bytes: i64,
    image_width: Option<i32>,
    image_height: Option<i32>,
    input_kind: String,
    url_host: Option<String>,
    model_hash: String,
    engine: String,
    app_version: String,
    decode_ms: f64,
    detect_ms: f64,
    classify_ms: f64,
    total_ms: f64,
    receipt: Option<String>,
    image_tag: Option<String>,
    print_band0: Option<String>,
    print_band1: Option<String>,
    print_band2: Option<String>,
    print_band3: Option<String>,
    print_sealed: Option<String>,
    signals: Option<String>,
    shadow_model: Option<String>,
    shadow_p_real: Option<f64>,
    shadow_live: Option<bool>,
    shadow_reason: Option<String>,
    session_id: Option<String>,
    session_reference_id: Option<String>,
}

impl AuditRow {
    fn into_record(self) -> Result<AuditRecord, StoreError> {
        let bbox = match (self.bbox_x, self.bbox_y, self.bbox_w, self.bbox_h) {
            (Some(x), Some(y), Some(w), Some(h)) => Some([x, y, w, h]),
            (None, None, None, None) => None,
            _ => {
                return Err(StoreError::Corrupt {
                    column: "audit.bbox_*",
                    detail: "some but not all box coordinates are set".into(),
                })
            }
        };
        Ok(AuditRecord {
            reference: parse_uuid("audit.reference", &self.reference)?,
            key_id: self
                .key_id
                .as_deref()
                .map(|k| parse_uuid("audit.key_id", k))
                .transpose()?,
            created_at: parse_ts("audit.created_at", &self.created_at)?,
            live: self.live,
            p_real: self.p_real,
            threshold: self.threshold,
            reason: Reason::from_code(&self.reason).ok_or_else(|| StoreError::Corrupt {
                column: "audit.reason",
                detail: format!("unknown reason code {:?}", self.reason),
            })?,
            detail: self.detail,
            bbox,
            detector_confidence: self.detector_confidence,
            image_sha256: self.image_sha256,
            image_bytes: self.image_bytes,
            image_width: self.image_width,
            image_height: self.image_height,
            input_kind: ImageSource::from_code(&self.input_kind).ok_or_else(|| {
                StoreError::Corrupt {
                    column: "audit.input_kind",
                    detail: format!("unknown input kind {:?}", self.input_kind),
                }
            })?,
            url_host: self.url_host,
            model_hash: self.model_hash,
            engine: self.engine,
            app_version: self.app_version,
            timings_ms: Timings {
                decode: self.decode_ms,
                detect: self.detect_ms,
                classify: self.classify_ms,
                total: self.total_ms,
            },
            receipt: self.receipt,
            fingerprint: self.image_tag.map(|image_tag| {
                let bands = match (
                    self.print_band0,
                    self.print_band1,
                    self.print_band2,
                    self.print_band3,
                ) {
                    (Some(a), Some(b), Some(c), Some(d)) => Some([a, b, c, d]),
                    _ => None,
                };
                Fingerprint {
                    image_tag,
                    bands,
                    sealed: self.print_sealed,
                }
            }),
            signals: self.signals,
            shadow: match (
                self.shadow_model,
                self.shadow_p_real,
                self.shadow_live,
                self.shadow_reason,
            ) {
                (Some(model), Some(p_real), Some(live), Some(reason)) => Some(ShadowScore {
                    model,
                    p_real,
                    live,
                    reason: Reason::from_code(&reason).ok_or_else(|| StoreError::Corrupt {
                        column: "audit.shadow_reason",
                        detail: format!("unknown reason code {reason:?}"),
                    })?,
                }),
                (None, None, None, None) => None,
                _ => {
                    return Err(StoreError::Corrupt {
                        column: "audit.shadow_*",
                        detail: "some but not all shadow columns are set".into(),
                    })
                }
            },
            session: self
                .session_id
                .as_deref()
                .map(|id| -> Result<SessionRef, StoreError> {
                    Ok(SessionRef {
                        id: parse_uuid("audit.session_id", id)?,
                        reference_id: self.session_reference_id.clone(),
                    })
                })
                .transpose()?,
        })
    }
}

/// The audit table's columns in insert and row order, once (`concat!` needs a literal, hence
/// the macro). `PG_SELECT_COLUMNS` lists them again with PostgreSQL's casts to text.
macro_rules! audit_columns {
    () => {
        "reference, key_id, created_at, live, p_real, threshold, reason, detail, \
         bbox_x, bbox_y, bbox_w, bbox_h, detector_confidence, image_sha256, image_bytes, \
         image_width, image_height, input_kind, url_host, model_hash, engine, app_version, \
         decode_ms, detect_ms, classify_ms, total_ms, receipt, image_tag, print_band0, \
         print_band1, print_band2, print_band3, print_sealed, signals, shadow_model, \
         shadow_p_real, shadow_live, shadow_reason, session_id, session_reference_id"
    };
}

const COLUMNS: &str = audit_columns!();

/// The SQLite `INSERT` up to its value lists, and one row's value list.
const SQLITE_INSERT_INTO: &str = concat!("INSERT INTO audit (", audit_columns!(), ") VALUES ");
const SQLITE_ROW: &str =
    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, \
     ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// Rows per SQLite `INSERT` statement: the group-commit writer's largest batch, in one
/// statement (40 parameters a row: 10,240, well under SQLite's limit of 32,766).
const SQLITE_ROWS_PER_STATEMENT: usize = super::writer::MAX_BATCH;

/// The SQLite `INSERT` of `rows` records.
fn sqlite_insert_rows(rows: usize) -> String {
    format!(
        "{SQLITE_INSERT_INTO}{}",
        vec![SQLITE_ROW; rows.max(1)].join(", ")
    )
}

const PG_INSERT: &str = concat!(
    "INSERT INTO audit (",
    audit_columns!(),
    ") VALUES ($1::uuid, $2::uuid, $3::timestamptz, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
     $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, \
     $35, $36, $37, $38, $39::uuid, $40)"
);

const PG_SELECT_COLUMNS: &str = concat!(
    "reference::text AS reference, key_id::text AS key_id, ",
    pg_ts!("created_at"),
    ", live, p_real, threshold, reason, detail, bbox_x, bbox_y, bbox_w, bbox_h, \
     detector_confidence, image_sha256, image_bytes, image_width, image_height, input_kind, \
     url_host, model_hash, engine, app_version, decode_ms, detect_ms, classify_ms, total_ms, \
     receipt, image_tag, print_band0, print_band1, print_band2, print_band3, print_sealed, \
     signals, shadow_model, shadow_p_real, shadow_live, shadow_reason, \
     session_id::text AS session_id, session_reference_id"
);

/// Bind every field of a record, in [`COLUMNS`] order, to a query of either backend.
macro_rules! bind_record {
    ($query:expr, $r:expr) => {{
        let r: &AuditRecord = $r;
        let bbox = r.bbox;
        let fp = r.fingerprint.as_ref();
        let band = |i: usize| fp.and_then(|f| f.bands.as_ref()).map(|b| b[i].clone());
        $query
            .bind(r.reference.to_string())
            .bind(r.key_id.map(|k| k.to_string()))
            .bind(ts_text(r.created_at.trunc_subsecs(6)))
            .bind(r.live)
            .bind(r.p_real)
            .bind(r.threshold)
            .bind(r.reason.code())
            .bind(&r.detail)
            .bind(bbox.map(|b| b[0]))
            .bind(bbox.map(|b| b[1]))
            .bind(bbox.map(|b| b[2]))
            .bind(bbox.map(|b| b[3]))
            .bind(r.detector_confidence)
            .bind(&r.image_sha256)
            .bind(r.image_bytes)
            .bind(r.image_width)
            .bind(r.image_height)
            .bind(r.input_kind.code())
            .bind(&r.url_host)
            .bind(&r.model_hash)
            .bind(&r.engine)
            .bind(&r.app_version)
            .bind(r.timings_ms.decode)
            .bind(r.timings_ms.detect)
            .bind(r.timings_ms.classify)
            .bind(r.timings_ms.total)
            .bind(&r.receipt)
            .bind(fp.map(|f| f.image_tag.clone()))
            .bind(band(0))
            .bind(band(1))
            .bind(band(2))
            .bind(band(3))
            .bind(fp.and_then(|f| f.sealed.clone()))
            .bind(&r.signals)
            .bind(r.shadow.as_ref().map(|s| s.model.clone()))
            .bind(r.shadow.as_ref().map(|s| s.p_real))
            .bind(r.shadow.as_ref().map(|s| s.live))
            .bind(r.shadow.as_ref().map(|s| s.reason.code()))
            .bind(r.session.as_ref().map(|s| s.id.to_string()))
            .bind(r.session.as_ref().and_then(|s| s.reference_id.clone()))
    }};
}

/// Longest receipt an audit row holds (a receipt is about 700 characters).
const MAX_RECEIPT_LEN: usize = 4096;
/// Longest signals object an audit row holds.
const MAX_SIGNALS_LEN: usize = 4096;

/// Refuse records that are malformed or could smuggle in data the trail must not hold.
fn validate(r: &AuditRecord) -> Result<(), StoreError> {
    let invalid = |what: String| Err(StoreError::Invalid(format!("audit record: {what}")));
    let year = r.created_at.year();
    if !(1..=9999).contains(&year) {
        return invalid(format!("created_at year {year} is out of range"));
    }
    let floats = [
        ("p_real", Some(r.p_real)),
        ("threshold", Some(r.threshold)),
        ("detector_confidence", r.detector_confidence),
        ("timings_ms.decode", Some(r.timings_ms.decode)),
        ("timings_ms.detect", Some(r.timings_ms.detect)),
        ("timings_ms.classify", Some(r.timings_ms.classify)),
        ("timings_ms.total", Some(r.timings_ms.total)),
    ];
    for (name, value) in floats {
        if value.is_some_and(|v| !v.is_finite()) {
            return invalid(format!("{name} is not a finite number"));
        }
    }
    if r.image_sha256.len() != 64 || !r.image_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return invalid("image_sha256 is not 64 hex digits".into());
    }
    if r.image_bytes < 0 {
        return invalid("image_bytes is negative".into());
    }
    if let Some(host) = &r.url_host {
        if !is_bare_host(host) {
            return invalid("url_host is not a bare host name or address".into());
        }
    }
    if let Some(receipt) = &r.receipt {
        let jws = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
        if receipt.len() > MAX_RECEIPT_LEN || !receipt.bytes().all(jws) {
            return invalid("receipt is not a compact JWS".into());
        }
    }
    if let Some(f) = &r.fingerprint {
        let hex_of = |t: &str, n: usize| t.len() == n && t.bytes().all(|b| b.is_ascii_hexdigit());
        let b64 = |t: &str| {
            t.len() <= 256
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !hex_of(&f.image_tag, 64)
            || f.bands
                .as_ref()
                .is_some_and(|b| !b.iter().all(|t| hex_of(t, 32)))
            || f.sealed.as_deref().is_some_and(|t| !b64(t))
            || f.bands.is_some() != f.sealed.is_some()
        {
            return invalid("fingerprint is not a set of keyed hashes".into());
        }
    }
    if r.shadow.as_ref().is_some_and(|s| !s.p_real.is_finite()) {
        return invalid("shadow p_real is not a finite number".into());
    }
    if let Some(signals) = &r.signals {
        // The length first, then the syntax in full without building the value (`IgnoredAny`
        // allocates nothing); valid JSON whose first byte past the whitespace is `{` is an object.
        let object = || {
            signals.trim_start().starts_with('{')
                && serde_json::from_str::<serde::de::IgnoredAny>(signals).is_ok()
        };
        if signals.len() > MAX_SIGNALS_LEN || !object() {
            return invalid("signals is not a JSON object".into());
        }
    }
    if let Some(reference_id) = r.session.as_ref().and_then(|s| s.reference_id.as_deref()) {
        if reference_id.is_empty()
            || reference_id.chars().count() > super::MAX_REFERENCE_ID_CHARS
            || reference_id.chars().any(char::is_control)
        {
            return invalid("session reference_id is not a bounded printable string".into());
        }
    }
    Ok(())
}

/// A host name, IPv4 address or (bracketed or not) IPv6 address, optionally with a port: no
/// scheme, path, query, fragment, credentials or whitespace.
fn is_bare_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 260
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
        })
}

/// The near-copy candidates' query is, for each of the four bands, the newest rows sharing its
/// tag (parameters 1-4: the band tags, 5: since, 6: the limit per band), united, less those of
/// the same bytes (the image tag's parameter). Built once; this unites the four bands' parts.
///
/// The rows of the same bytes are dropped after the limit, in the database: the limit still
/// bounds the rows read, and [`crate::resubmission::judge`] would skip them anyway (the
/// same-bytes summary counts them), but a picture checked again and again made every lookup send
/// its 100 newest copies to the service to be parsed and thrown away.
fn band_union(part: impl Fn(usize) -> String) -> String {
    (0..4).map(part).collect::<Vec<_>>().join(" UNION ")
}

/// SQLite's candidates query, within [`SQLITE_SIGHTINGS`]: the image tag is parameter 8.
///
/// Each band's part reads only its index (`(print_bandN, created_at)` holds the rowid), the
/// parts unite rowids, and only the rows so chosen are read from the table. A picture checked
/// again and again shares all four bands with its copies: the rows were read four times over and
/// united on five columns, the sealed print among them (`EXPLAIN QUERY PLAN`: a covering index
/// per band now).
static SQLITE_BANDS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let rowids = band_union(|i| {
        format!(
            "SELECT rowid FROM (SELECT rowid FROM audit WHERE print_band{i} = ?{} \
             AND created_at >= ?5 ORDER BY created_at DESC LIMIT ?6)",
            i + 1
        )
    });
    format!(
        "SELECT reference, key_id, created_at, image_tag, print_sealed FROM audit \
         WHERE rowid IN ({rowids}) AND image_tag IS NOT ?8"
    )
});

/// PostgreSQL's candidates query: the image tag is parameter 7.
static POSTGRES_BANDS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    band_union(|i| {
        format!(
            "(SELECT * FROM (SELECT reference::text AS reference, key_id::text AS key_id, {}, \
             image_tag, print_sealed FROM audit WHERE print_band{i} = ${} \
             AND created_at >= $5::timestamptz ORDER BY created_at DESC LIMIT $6) band{i} \
             WHERE image_tag IS DISTINCT FROM $7)",
            pg_ts!("created_at"),
            i + 1
        )
    })
});

/// The same-bytes lookup in one statement (one trip to the connection): how many of the newest
/// rows (up to parameter 4) share the image tag (2) since (3), whether one of them is the key's
/// (1), and the first sighting in that window.
static SQLITE_SAME_BYTES: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| sqlite_same_bytes(["?1", "?2", "?3", "?4"]));

/// The same-bytes query with its parameters named `p`: the key (`''` for none), the image tag,
/// since, the limit. Three scalar subqueries over the `(image_tag, created_at, key_id)` index:
///
/// - the count: the limit itself if the limit-th newest row exists (an `OFFSET` walk, which
///   reads no column), else the plain count of the range, which then holds fewer rows than the
///   limit;
/// - the key match: the newest rows, up to the limit, read only until one is the key's (never
///   when there is no key);
/// - the first sighting: one index seek.
///
/// The answer is that of the one pass it replaces (count the newest rows, test each one's key),
/// which decoded every entry's `key_id` whatever the key. With a picture checked more than
/// 1,000 times (the loadbench's samples, or a fraud ring) that pass cost about as much as the
/// rest of the lookup: `cargo bench --bench store` (docs/benchmarks.md, "Session 25").
fn sqlite_same_bytes(p: [&str; 4]) -> String {
    let [key, tag, since, limit] = p;
    let range = format!("FROM audit WHERE image_tag = {tag} AND created_at >= {since}");
    format!(
        "SELECT COALESCE(\
           (SELECT {limit} {range} ORDER BY created_at DESC LIMIT 1 OFFSET {limit} - 1), \
           (SELECT COUNT(*) {range})), \
         CASE WHEN {key} = '' THEN 0 ELSE EXISTS (SELECT 1 FROM (SELECT key_id {range} \
           ORDER BY created_at DESC LIMIT {limit}) WHERE key_id = {key}) END, \
         (SELECT created_at {range} ORDER BY created_at ASC LIMIT 1)"
    )
}

/// SQLite's whole lookup in one statement, one trip to the connection's worker thread instead
/// of two: the same-bytes summary as a row of kind 0 (count, key match, first sighting; the
/// same query as [`SQLITE_SAME_BYTES`]), then the near-copy candidates as rows of kind 1
/// ([`SQLITE_BANDS`]). Parameters 1-6 as for the bands, 7: the key, 8: the image tag, 9: the
/// same-bytes limit.
static SQLITE_SIGHTINGS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT 0, *, NULL, NULL, NULL, NULL, NULL FROM ({}) \
         UNION ALL \
         SELECT 1, 0, NULL, NULL, reference, key_id, created_at, image_tag, print_sealed \
         FROM ({})",
        sqlite_same_bytes(["?7", "?8", "?5", "?9"]),
        SQLITE_BANDS.as_str()
    )
});

/// A row of [`SQLITE_SIGHTINGS`]: kind, then the summary's three columns, then a candidate's
/// five.
type SightingRow = (
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

const POSTGRES_SAME_BYTES: &str = concat!(
    "SELECT COUNT(*), bool_or(key_id::text = $1), (SELECT ",
    pg_ts!("created_at"),
    " FROM audit WHERE image_tag = $2 \
     AND created_at >= $3::timestamptz ORDER BY created_at ASC LIMIT 1) \
     FROM (SELECT key_id FROM audit WHERE image_tag = $2 AND created_at >= $3::timestamptz \
     ORDER BY created_at DESC LIMIT $4) newest"
);

impl Store {
    /// Insert one record; it is committed when this returns `Ok`. Fails with
    /// [`StoreError::Invalid`] for a malformed record (non-finite number, `image_sha256` not 64
    /// hex digits, negative size, `url_host` that is not a bare host) and [`StoreError::Query`]
    /// for a duplicate `reference` or a `key_id` that names no key.
    pub async fn insert_audit(&self, record: &AuditRecord) -> Result<(), StoreError> {
        self.insert_audit_batch(std::slice::from_ref(record)).await
    }

    /// Insert `records` in one transaction: all are committed when this returns `Ok`, none
    /// otherwise. Errors as for [`Store::insert_audit`]; every record is validated before the
    /// transaction starts.
    pub async fn insert_audit_batch(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        for record in records {
            validate(record)?;
        }
        let result = match &self.hot {
            Hot::Sqlite(hot) => {
                // An explicit transaction on one connection rather than sqlx's `Transaction`:
                // SQLite rolls a transaction back by itself on some errors (disk full, I/O error),
                // after which sqlx's own bookkeeping no longer matches the connection, and a
                // connection returned to the pool like that kept the database "unwritable" after
                // the disk had room again. A connection whose transaction failed for a database
                // fault is closed instead (see `Store::probe_write` for why that matters).
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    let mut held = hot.acquire().await.map_err(|e| self.db_err(e))?;
                    let conn = held.conn();
                    // A batch the group-commit writer makes is one statement: SQLite runs it
                    // in a transaction of its own, committed or rolled back as a whole, in one
                    // round trip to the connection's worker thread instead of 2 + one per row.
                    // Larger batches go in statements of that size inside one transaction.
                    let single = records.len() <= SQLITE_ROWS_PER_STATEMENT;
                    let result = async {
                        if !single {
                            sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
                        }
                        for chunk in records.chunks(SQLITE_ROWS_PER_STATEMENT) {
                            let sql = sqlite_insert_rows(chunk.len());
                            chunk
                                .iter()
                                .fold(sqlx::query(&sql), |q, record| bind_record!(q, record))
                                .execute(&mut *conn)
                                .await?;
                        }
                        if !single {
                            sqlx::query("COMMIT").execute(&mut *conn).await?;
                        }
                        Ok(())
                    }
                    .await;
                    let Err(e) = &result else { break result };
                    if !single {
                        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                    }
                    if super::is_connectivity(e) {
                        held.discard().await;
                    }
                    // A READONLY connection may be a stale one from the fault (discarded above):
                    // try once more, on a fresh connection.
                    if !super::is_sqlite_readonly(e) || attempts > 1 {
                        break result;
                    }
                }
            }
            Hot::Postgres(p) => {
                async {
                    let mut tx = p.begin().await?;
                    for record in records {
                        bind_record!(sqlx::query(PG_INSERT), record)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await
                }
                .await
            }
        };
        result.map_err(|e| self.db_err(e))
    }

    /// The record `reference`, only if it was made with key `key_id`.
    pub async fn get_audit(
        &self,
        reference: Uuid,
        key_id: Uuid,
    ) -> Result<Option<AuditRecord>, StoreError> {
        let row: Option<AuditRow> = match &self.pool {
            Pool::Sqlite(p) => {
                sqlx::query_as(&format!(
                    "SELECT {COLUMNS} FROM audit WHERE reference = ? AND key_id = ?"
                ))
                .bind(reference.to_string())
                .bind(key_id.to_string())
                .fetch_optional(p)
                .await
            }
            Pool::Postgres(p) => {
                sqlx::query_as(&format!(
                    "SELECT {PG_SELECT_COLUMNS} FROM audit \
                     WHERE reference = $1::uuid AND key_id = $2::uuid"
                ))
                .bind(reference.to_string())
                .bind(key_id.to_string())
                .fetch_optional(p)
                .await
            }
        }
        .map_err(|e| self.db_err(e))?;
        row.map(AuditRow::into_record).transpose()
    }

    /// The audit row of the check made through session `session_id` (at most one: a session
    /// token is spent once).
    pub async fn get_audit_by_session(
        &self,
        session_id: Uuid,
    ) -> Result<Option<AuditRecord>, StoreError> {
        let row: Option<AuditRow> = match &self.pool {
            Pool::Sqlite(p) => {
                sqlx::query_as(&format!(
                    "SELECT {COLUMNS} FROM audit WHERE session_id = ? LIMIT 1"
                ))
                .bind(session_id.to_string())
                .fetch_optional(p)
                .await
            }
            Pool::Postgres(p) => {
                sqlx::query_as(&format!(
                    "SELECT {PG_SELECT_COLUMNS} FROM audit WHERE session_id = $1::uuid LIMIT 1"
                ))
                .bind(session_id.to_string())
                .fetch_optional(p)
                .await
            }
        }
        .map_err(|e| self.db_err(e))?;
        row.map(AuditRow::into_record).transpose()
    }

    /// What is known of `fingerprint`'s picture from the checks made at or after `since`: the
    /// earlier checks of the same bytes, counted (how many among the newest
    /// [`MAX_SAME_BYTES`], the first one's time, whether `key_id` made one of those), and the
    /// newest [`MAX_BAND_CANDIDATES`] checks sharing each band tag, the near-copy candidates
    /// [`crate::resubmission::judge`] decides on.
    ///
    /// Bounded work whatever the history: each part is a range of a composite index
    /// (`(image_tag, created_at, key_id)`, `(print_bandN, created_at)`) read newest first up
    /// to its limit, and the first sighting is one index seek. Before, one query gathered every
    /// row sharing any tag and sorted them: a picture checked 4,000 times made each later check
    /// of it read 4,000 rows (docs/benchmarks.md, "Before the bounded re-submission lookup").
    pub async fn resubmission_sightings(
        &self,
        fingerprint: &Fingerprint,
        since: DateTime<Utc>,
        key_id: Option<Uuid>,
    ) -> Result<Sightings, StoreError> {
        let since = ts_text(since);
        let key = key_id.map(|k| k.to_string()).unwrap_or_default();
        type Near = (
            String,
            Option<String>,
            String,
            Option<String>,
            Option<String>,
        );
        // Parameters 1-6 of the bands' query: the four band tags, since, the limit per band.
        macro_rules! bind_bands {
            ($query:expr, $bands:expr) => {
                $query
                    .bind(&$bands[0])
                    .bind(&$bands[1])
                    .bind(&$bands[2])
                    .bind(&$bands[3])
                    .bind(&since)
                    .bind(MAX_BAND_CANDIDATES)
            };
        }
        // The same-bytes summary: (count, key match, first sighting).
        macro_rules! same_bytes {
            ($sql:expr, $key_match:ty) => {
                sqlx::query_as::<_, (i64, $key_match, Option<String>)>($sql)
                    .bind(&key)
                    .bind(&fingerprint.image_tag)
                    .bind(&since)
                    .bind(MAX_SAME_BYTES)
            };
        }
        let (count, same_key, first, near) = match &self.hot {
            // SQLite: one statement, one trip to the connection's worker thread
            // (`SQLITE_SIGHTINGS`), or only the same-bytes summary for a picture without bands.
            Hot::Sqlite(hot) => {
                let mut held = hot.acquire().await.map_err(|e| self.db_err(e))?;
                let conn = held.conn();
                let found = match &fingerprint.bands {
                    Some(bands) => bind_bands!(sqlx::query_as(SQLITE_SIGHTINGS.as_str()), bands)
                        .bind(&key)
                        .bind(&fingerprint.image_tag)
                        .bind(MAX_SAME_BYTES)
                        .fetch_all(&mut *conn)
                        .await
                        .map(|rows: Vec<SightingRow>| {
                            let mut found = (0, None, None, Vec::new());
                            for (kind, n, key_match, seen, reference, key_id, at, tag, sealed) in
                                rows
                            {
                                if kind == 0 {
                                    (found.0, found.1, found.2) = (n, key_match, seen);
                                } else if let (Some(reference), Some(at)) = (reference, at) {
                                    found.3.push((reference, key_id, at, tag, sealed));
                                }
                            }
                            found
                        }),
                    None => same_bytes!(SQLITE_SAME_BYTES.as_str(), Option<i64>)
                        .fetch_one(&mut *conn)
                        .await
                        .map(|(count, key_match, first)| (count, key_match, first, Vec::new())),
                };
                match found {
                    Ok((count, key_match, first, near)) => {
                        (count, key_match == Some(1), first, near)
                    }
                    Err(e) => {
                        if super::is_connectivity(&e) {
                            held.discard().await;
                        }
                        return Err(self.db_err(e));
                    }
                }
            }
            // PostgreSQL: the same two queries, in two round trips.
            Hot::Postgres(p) => {
                let (count, key_match, first) = same_bytes!(POSTGRES_SAME_BYTES, Option<bool>)
                    .fetch_one(p)
                    .await
                    .map_err(|e| self.db_err(e))?;
                let near: Vec<Near> = match &fingerprint.bands {
                    None => Vec::new(),
                    Some(bands) => bind_bands!(sqlx::query_as(POSTGRES_BANDS.as_str()), bands)
                        .bind(&fingerprint.image_tag)
                        .fetch_all(p)
                        .await
                        .map_err(|e| self.db_err(e))?,
                };
                (count, key_match == Some(true), first, near)
            }
        };
        let near = near
            .into_iter()
            .map(|(reference, key_id, created_at, image_tag, sealed)| {
                Ok(Candidate {
                    reference: parse_uuid("audit.reference", &reference)?,
                    key_id: key_id
                        .as_deref()
                        .map(|k| parse_uuid("audit.key_id", k))
                        .transpose()?,
                    created_at: parse_ts("audit.created_at", &created_at)?,
                    image_tag: image_tag.unwrap_or_default(),
                    sealed,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Sightings {
            same_bytes: SameBytes {
                count: u64::try_from(count).unwrap_or(0),
                first_seen: first
                    .as_deref()
                    .map(|t| parse_ts("audit.created_at", t))
                    .transpose()?,
                same_key: key_id.is_some() && same_key,
            },
            near,
        })
    }

    /// Every verdict made in `[from, until)` (with key `key` only, when given), as the report
    /// reads them, oldest first.
    pub async fn report_rows(
        &self,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
        key: Option<Uuid>,
    ) -> Result<Vec<crate::report::ReportRow>, StoreError> {
        type Row = (
            Option<String>,
            String,
            bool,
            f64,
            String,
            Option<f64>,
            Option<bool>,
        );
        let key = key.map(|k| k.to_string());
        let rows: Vec<Row> =
            match &self.pool {
                Pool::Sqlite(p) => sqlx::query_as(
                    "SELECT key_id, created_at, live, p_real, reason, shadow_p_real, shadow_live \
                     FROM audit \
                     WHERE created_at >= ? AND created_at < ? AND (? IS NULL OR key_id = ?) \
                     ORDER BY created_at",
                )
                .bind(ts_text(from))
                .bind(ts_text(until))
                .bind(&key)
                .bind(&key)
                .fetch_all(p)
                .await,
                Pool::Postgres(p) => {
                    sqlx::query_as(concat!(
                        "SELECT key_id::text AS key_id, ",
                        pg_ts!("created_at"),
                        ", live, p_real, reason, shadow_p_real, shadow_live FROM audit \
                     WHERE created_at >= $1::timestamptz AND created_at < $2::timestamptz \
                       AND ($3::text IS NULL OR key_id = $3::uuid) \
                     ORDER BY created_at"
                    ))
                    .bind(ts_text(from))
                    .bind(ts_text(until))
                    .bind(&key)
                    .fetch_all(p)
                    .await
                }
            }
            .map_err(|e| self.db_err(e))?;
        rows.into_iter()
            .map(
                |(key_id, created_at, live, p_real, reason, shadow_p, shadow_live)| {
                    Ok(crate::report::ReportRow {
                        shadow: shadow_p.zip(shadow_live),
                        key_id: key_id
                            .as_deref()
                            .map(|k| parse_uuid("audit.key_id", k))
                            .transpose()?,
                        created_at: parse_ts("audit.created_at", &created_at)?,
                        live,
                        p_real,
                        reason: Reason::from_code(&reason).ok_or_else(|| StoreError::Corrupt {
                            column: "audit.reason",
                            detail: format!("unknown reason code {reason:?}"),
                        })?,
                    })
                },
            )
            .collect()
    }

    /// Store the shadow model set's verdict on the picture of audit row `reference` (a no-op
    /// for an unknown reference: the row may have been deleted since).
    pub async fn set_shadow_score(
        &self,
        reference: Uuid,
        score: &ShadowScore,
    ) -> Result<(), StoreError> {
        if !score.p_real.is_finite() {
            return Err(StoreError::Invalid(
                "shadow p_real is not a finite number".into(),
            ));
        }
        match &self.pool {
            Pool::Sqlite(p) => sqlx::query(
                "UPDATE audit SET shadow_model = ?, shadow_p_real = ?, shadow_live = ?, \
                     shadow_reason = ? WHERE reference = ?",
            )
            .bind(&score.model)
            .bind(score.p_real)
            .bind(score.live)
            .bind(score.reason.code())
            .bind(reference.to_string())
            .execute(p)
            .await
            .map(|_| ()),
            Pool::Postgres(p) => sqlx::query(
                "UPDATE audit SET shadow_model = $1, shadow_p_real = $2, shadow_live = $3, \
                     shadow_reason = $4 WHERE reference = $5::uuid",
            )
            .bind(&score.model)
            .bind(score.p_real)
            .bind(score.live)
            .bind(score.reason.code())
            .bind(reference.to_string())
            .execute(p)
            .await
            .map(|_| ()),
        }
        .map_err(|e| self.db_err(e))
    }

    /// Number of audit records.
    pub async fn count_audit(&self) -> Result<i64, StoreError> {
        match &self.pool {
            Pool::Sqlite(p) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM audit")
                    .fetch_one(p)
                    .await
            }
            Pool::Postgres(p) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM audit")
                    .fetch_one(p)
                    .await
            }
        }
        .map_err(|e| self.db_err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_hosts() {
        for ok in [
            "example.com",
            "127.0.0.1",
            "[::1]",
            "::1",
            "cdn.example.com:8443",
            "a_b.c",
        ] {
            assert!(is_bare_host(ok), "{ok}");
        }
        for bad in [
            "",
            "https://example.com",
            "example.com/a.jpg",
            "example.com?x=1",
            "user:pw@example.com",
            "example.com#f",
            "exa mple.com",
            "example.com\n",
        ] {
            assert!(!is_bare_host(bad), "{bad:?}");
        }
    }
}

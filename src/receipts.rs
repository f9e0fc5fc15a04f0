//! Signed decision receipts: every verdict's facts in a compact JWS (RFC 7515) signed with EdDSA
//! over Ed25519 (RFC 8037), so a third party can check offline, from the service's published keys
//! (a JWKS, RFC 7517), that livecheck said what a compliance file says it said.
//!
//! A receipt is `BASE64URL(header) . BASE64URL(payload) . BASE64URL(signature)` with header
//! `{"alg":"EdDSA","kid":KID,"typ":"JWT"}`; `kid` is the key's RFC 7638 JWK thumbprint. The payload
//! is [`ReceiptPayload`]. The compact form is written here over `ed25519-dalek` rather than with a
//! JOSE crate: it is three base64url segments and one signature, and the JOSE crates either lack
//! EdDSA or bring a second cryptography stack (`ring`, OpenSSL) for it. `tests/receipts.rs` checks
//! the tokens with an independent JOSE implementation.
//!
//! Keys: a key file ([`KeyFile`]) holds the signing key and the public halves of retired keys.
//! Rotation writes a new key file that keeps the old key's public half (`livecheck receipts
//! keygen --retire OLD`), so receipts signed before the rotation still verify from the JWKS.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a receipt attests: one verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptPayload {
    /// The verdict's reference (`data.verification.reference`).
    pub reference: Uuid,
    /// The API key that asked (`null` when authentication is off).
    pub key_id: Option<Uuid>,
    /// When the verdict was made, in seconds since the Unix epoch.
    pub iat: i64,
    /// Lowercase hex SHA-256 of the image bytes as received.
    pub image_sha256: String,
    pub p_real: f64,
    pub threshold: f64,
    pub live: bool,
    /// The verdict's reason code (`live`, `spoof`, `no_face`, ...).
    pub reason: String,
    /// The model set's hash (`data.model`).
    pub model: String,
    pub app_version: String,
    /// The capture session, when the check belongs to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    #[error("not a compact JWS: {0}")]
    Malformed(String),
    #[error("unsupported algorithm {0:?} (receipts are EdDSA)")]
    Algorithm(String),
    #[error("unknown key id {0:?}: it is not in the key set")]
    UnknownKid(String),
    #[error("bad signature: the receipt was altered or not signed by key {0:?}")]
    BadSignature(String),
    #[error("key file {path}: {message}")]
    KeyFile { path: String, message: String },
    #[error("key set: {0}")]
    Jwks(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    kid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
}

/// One public key of a JWKS (`kty` OKP, `crv` Ed25519).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    /// The public key, base64url.
    pub x: String,
    pub kid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

/// A JSON Web Key Set: what `GET /.well-known/jwks.json` serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// The RFC 7638 thumbprint of an Ed25519 public key: base64url(SHA-256 of the canonical JWK).
pub fn thumbprint(public: &VerifyingKey) -> String {
    use sha2::Digest as _;
    let x = B64.encode(public.as_bytes());
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    B64.encode(sha2::Sha256::digest(canonical.as_bytes()))
}

fn jwk(public: &VerifyingKey) -> Jwk {
    Jwk {
        kty: "OKP".into(),
        crv: "Ed25519".into(),
        x: B64.encode(public.as_bytes()),
        kid: thumbprint(public),
        alg: Some("EdDSA".into()),
        use_: Some("sig".into()),
    }
}

/// The on-disk form of a signing key: `{"kid", "d", "x", "created", "retired": [JWK...]}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    pub kid: String,
    /// The 32-byte Ed25519 seed, base64url. Secret.
    pub d: String,
    /// The public key, base64url.
    pub x: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// Public halves of earlier keys, still published for verification.
    #[serde(default)]
    pub retired: Vec<Jwk>,
}

/// The service's signing key and the retired public keys it still publishes.
#[derive(Clone)]
pub struct ReceiptKey {
    signing: SigningKey,
    kid: String,
    retired: Vec<Jwk>,
}

impl std::fmt::Debug for ReceiptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptKey")
            .field("kid", &self.kid)
            .field("retired", &self.retired.len())
            .finish_non_exhaustive()
    }
}

impl ReceiptKey {
    /// A new random key (the operating system's generator through `rand`).
    pub fn generate() -> ReceiptKey {
        let seed: [u8; 32] = rand::random();
        ReceiptKey::from_seed(seed, Vec::new())
    }

    fn from_seed(seed: [u8; 32], retired: Vec<Jwk>) -> ReceiptKey {
        let signing = SigningKey::from_bytes(&seed);
        let kid = thumbprint(&signing.verifying_key());
        ReceiptKey {
            signing,
            kid,
            retired,
        }
    }

    /// A new key that keeps `old`'s public key (and the keys `old` had retired) in its JWKS.
    pub fn rotate(old: &ReceiptKey) -> ReceiptKey {
        let mut key = ReceiptKey::generate();
        key.retired = std::iter::once(jwk(&old.signing.verifying_key()))
            .chain(old.retired.iter().cloned())
            .collect();
        key
    }

    /// The key id in every receipt's header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public keys to publish: this key first, then the retired ones.
    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: std::iter::once(jwk(&self.signing.verifying_key()))
                .chain(self.retired.iter().cloned())
                .collect(),
        }
    }

    /// The compact JWS of `payload`.
    pub fn sign(&self, payload: &ReceiptPayload) -> String {
        let header = Header {
            alg: "EdDSA".into(),
            kid: self.kid.clone(),
            typ: Some("JWT".into()),
        };
        // Serialising these two plain structs cannot fail (string keys, finite or null numbers:
        // serde_json writes a non-finite f64 as null).
        let h = B64.encode(serde_json::to_vec(&header).unwrap_or_default());
        let p = B64.encode(serde_json::to_vec(payload).unwrap_or_default());
        let input = format!("{h}.{p}");
        let sig = self.signing.sign(input.as_bytes());
        format!("{input}.{}", B64.encode(sig.to_bytes()))
    }

    /// The key file of this key.
    pub fn to_file(&self) -> KeyFile {
        KeyFile {
            kid: self.kid.clone(),
            d: B64.encode(self.signing.to_bytes()),
            x: B64.encode(self.signing.verifying_key().as_bytes()),
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            retired: self.retired.clone(),
        }
    }

    /// Read a key file, checking that its public key and kid belong to its secret.
    pub fn load(path: &Path) -> Result<ReceiptKey, ReceiptError> {
        let err = |message: String| ReceiptError::KeyFile {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let file: KeyFile = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        let seed: [u8; 32] = B64
            .decode(&file.d)
            .ok()
            .and_then(|d| d.try_into().ok())
            .ok_or_else(|| err("d is not a base64url 32-byte Ed25519 seed".into()))?;
        let key = ReceiptKey::from_seed(seed, file.retired);
        if B64.encode(key.signing.verifying_key().as_bytes()) != file.x || key.kid != file.kid {
            return Err(err("x or kid does not match the secret key d".into()));
        }
        for r in &key.retired {
            public_key(r).map_err(|e| err(format!("retired key {:?}: {e}", r.kid)))?;
        }
        Ok(key)
    }

    /// Write the key file at `path`, readable by its owner only, refusing to overwrite. The file
    /// appears whole or not at all (written beside it, then hard-linked into place), so replicas
    /// starting together never read a half-written key.
    pub fn save(&self, path: &Path) -> Result<(), ReceiptError> {
        let err = |message: String| ReceiptError::KeyFile {
            path: path.display().to_string(),
            message,
        };
        let mut json =
            serde_json::to_string_pretty(&self.to_file()).map_err(|e| err(e.to_string()))?;
        json.push('\n');
        write_new_private(path, json.as_bytes()).map_err(err)
    }

    /// The key at `path`, or a new one written there when the file does not exist (`true` when
    /// it was created).
    pub fn load_or_create(path: &Path) -> Result<(ReceiptKey, bool), ReceiptError> {
        load_or_create_key(
            path,
            ReceiptKey::load,
            ReceiptKey::generate,
            ReceiptKey::save,
        )
    }
}

/// The key file at `path` (`load`), or a new key (`generate`) written there (`save`, which never
/// overwrites) when the file does not exist; `true` when it was created. Shared by the key files
/// of receipts and of re-submission detection.
pub(crate) fn load_or_create_key<K, E>(
    path: &Path,
    load: impl Fn(&Path) -> Result<K, E>,
    generate: impl FnOnce() -> K,
    save: impl FnOnce(&K, &Path) -> Result<(), E>,
) -> Result<(K, bool), E> {
    if path.exists() {
        return Ok((load(path)?, false));
    }
    let key = generate();
    match save(&key, path) {
        Ok(()) => Ok((key, true)),
        // Another process (a replica starting at the same time) wrote it first: use theirs.
        Err(_) if path.exists() => Ok((load(path)?, false)),
        Err(e) => Err(e),
    }
}

/// Write `bytes` to a new file at `path`, readable by its owner only, refusing to overwrite. The
/// file appears whole or not at all (written beside it, then hard-linked into place), so
/// replicas starting together never read a half-written key. Shared by the key files of
/// receipts and of re-submission detection.
pub(crate) fn write_new_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let written = opts.open(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    linked.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            "already exists (a key file is never overwritten)".to_string()
        } else {
            e.to_string()
        }
    })
}

fn public_key(k: &Jwk) -> Result<VerifyingKey, String> {
    if k.kty != "OKP" || k.crv != "Ed25519" {
        return Err(format!(
            "kty {:?} / crv {:?} is not OKP / Ed25519",
            k.kty, k.crv
        ));
    }
    let x: [u8; 32] = B64
        .decode(&k.x)
        .ok()
        .and_then(|x| x.try_into().ok())
        .ok_or("x is not a base64url 32-byte key")?;
    VerifyingKey::from_bytes(&x).map_err(|e| e.to_string())
}

impl Jwks {
    /// Parse a JWKS document.
    pub fn parse(json: &str) -> Result<Jwks, ReceiptError> {
        serde_json::from_str(json).map_err(|e| ReceiptError::Jwks(e.to_string()))
    }
}

/// The header's key id, without verifying anything (to say which key a receipt names).
pub fn receipt_kid(token: &str) -> Result<String, ReceiptError> {
    let (header, _, _) = split(token)?;
    Ok(header.kid)
}

fn split(token: &str) -> Result<(Header, Vec<u8>, Signature), ReceiptError> {
    let bad = |m: &str| ReceiptError::Malformed(m.to_string());
    let mut parts = token.trim().split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("expected three dot-separated segments"));
    };
    let header: Header = B64
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| bad("the header is not base64url JSON with alg and kid"))?;
    let payload = B64
        .decode(p)
        .map_err(|_| bad("the payload is not base64url"))?;
    let sig: [u8; 64] = B64
        .decode(s)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| bad("the signature is not a base64url 64-byte Ed25519 signature"))?;
    Ok((header, payload, Signature::from_bytes(&sig)))
}

/// Verify `token` against the keys of `jwks` and return its payload.
pub fn verify(token: &str, jwks: &Jwks) -> Result<ReceiptPayload, ReceiptError> {
    let token = token.trim();
    let (header, payload, sig) = split(token)?;
    if header.alg != "EdDSA" {
        return Err(ReceiptError::Algorithm(header.alg));
    }
    let jwk = jwks
        .keys
        .iter()
        .find(|k| k.kid == header.kid)
        .ok_or_else(|| ReceiptError::UnknownKid(header.kid.clone()))?;
    let key = public_key(jwk).map_err(ReceiptError::Jwks)?;
    // A key published under someone else's thumbprint is not this key.
    if thumbprint(&key) != jwk.kid {
        return Err(ReceiptError::Jwks(format!(
            "key {:?} does not match its thumbprint",
            jwk.kid
        )));
    }
    let signed = token
        .rsplit_once('.')
        .map(|(input, _)| input)
        .unwrap_or_default();
    // Strict: no small-order keys, no non-canonical signatures (RFC 8032 section 5.1.7
    // leaves room for both; a receipt never needs them).
    key.verify_strict(signed.as_bytes(), &sig)
        .map_err(|_| ReceiptError::BadSignature(header.kid.clone()))?;
    serde_json::from_slice(&payload)
        .map_err(|e| ReceiptError::Malformed(format!("the payload is not a receipt: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload() -> ReceiptPayload {
        ReceiptPayload {
            reference: Uuid::parse_str("067cbed9-acda-4d30-97c2-7f8e0c2ad687").unwrap(),
            key_id: Some(Uuid::parse_str("5f0c7d8e-1c2b-4a3d-9e8f-0a1b2c3d4e5f").unwrap()),
            iat: 1_764_580_000,
            image_sha256: "ab".repeat(32),
            p_real: 0.997,
            threshold: 0.72385186,
            live: true,
            reason: "live".into(),
            model: "954c6072f75181f8".into(),
            app_version: "0.1.0".into(),
            session: None,
        }
    }

    #[test]
    fn a_receipt_verifies_and_reads_back() {
        let key = ReceiptKey::generate();
        let token = key.sign(&payload());
        assert_eq!(token.split('.').count(), 3);
        assert_eq!(verify(&token, &key.jwks()).unwrap(), payload());
        assert_eq!(receipt_kid(&token).unwrap(), key.kid());
    }

    #[test]
    fn tampering_unknown_keys_and_garbage_are_told_apart() {
        let key = ReceiptKey::generate();
        let token = key.sign(&payload());
        let mut other = payload();
        other.live = false;
        let forged = format!(
            "{}.{}.{}",
            token.split('.').next().unwrap(),
            B64.encode(serde_json::to_vec(&other).unwrap()),
            token.split('.').nth(2).unwrap()
        );
        assert!(matches!(
            verify(&forged, &key.jwks()),
            Err(ReceiptError::BadSignature(_))
        ));
        let stranger = ReceiptKey::generate();
        assert!(matches!(
            verify(&token, &stranger.jwks()),
            Err(ReceiptError::UnknownKid(_))
        ));
        assert!(matches!(
            verify("a.b", &key.jwks()),
            Err(ReceiptError::Malformed(_))
        ));
    }

    #[test]
    fn rotation_keeps_old_receipts_verifiable() {
        let old = ReceiptKey::generate();
        let token = old.sign(&payload());
        let new = ReceiptKey::rotate(&old);
        let newer = ReceiptKey::rotate(&new);
        assert_ne!(old.kid(), newer.kid());
        assert_eq!(newer.jwks().keys.len(), 3);
        assert_eq!(verify(&token, &newer.jwks()).unwrap(), payload());
    }

    #[test]
    fn key_files_round_trip_and_refuse_mismatches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.json");
        let (key, created) = ReceiptKey::load_or_create(&path).unwrap();
        assert!(created);
        let (again, created) = ReceiptKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(again.kid(), key.kid());
        assert!(key.save(&path).is_err(), "never overwrites a key");
        let mut file = key.to_file();
        file.x = ReceiptKey::generate().to_file().x;
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, serde_json::to_string(&file).unwrap()).unwrap();
        assert!(ReceiptKey::load(&bad)
            .unwrap_err()
            .to_string()
            .contains("does not match"));
    }

    #[test]
    fn the_thumbprint_is_rfc_7638() {
        // RFC 8037 appendix A.3: the thumbprint of its example Ed25519 key.
        let x = B64
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .unwrap();
        let key = VerifyingKey::from_bytes(&x.try_into().unwrap()).unwrap();
        assert_eq!(
            thumbprint(&key),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }
}

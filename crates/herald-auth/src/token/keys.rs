//! Public keys from config files: one PEM key per file or a JWK Set, each checked at load and
//! tagged with the algorithms it may verify. Files are read once; nothing is fetched.

use super::algorithm_named;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::Value;
use std::fmt;
use std::io::Read as _;
use std::path::Path;

/// Key files larger than this are not key files.
const MAX_KEY_FILE_BYTES: u64 = 1024 * 1024;
/// Most keys one JWK Set may hold (every key may be tried for a token without `kid`).
const MAX_JWKS_KEYS: usize = 100;
/// Accepted RSA modulus sizes, in bits (the upper bound is the `rsa` crate's).
const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 4096;
/// Largest RSA public exponent the `rsa` crate accepts.
const MAX_RSA_EXPONENT: u64 = (1 << 33) - 1;

/// DER before the point in an EC P-256 SubjectPublicKeyInfo with an uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// DER before the point in an EC P-384 SubjectPublicKeyInfo with an uncompressed point.
const P384_SPKI_PREFIX: [u8; 23] = [
    0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b,
    0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
];
/// DER before the key in an Ed25519 SubjectPublicKeyInfo.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// The id-ecPublicKey OID's content bytes, to name EC keys on curves Herald does not support.
const EC_PUBLIC_KEY_OID: [u8; 7] = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];

/// A loaded public key and what it may verify.
pub(super) struct PublicKey {
    pub(super) key: DecodingKey,
    pub(super) kind: KeyKind,
    /// The JWK's `kid`; PEM keys have none.
    pub(super) kid: Option<String>,
    /// The JWK's `alg`, which restricts the key to one algorithm.
    pub(super) alg: Option<Algorithm>,
    /// The file (and `kid`) it came from, for logs.
    origin: String,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("kind", &self.kind)
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("origin", &self.origin)
            .finish()
    }
}

impl PublicKey {
    pub(super) fn verifies(&self, alg: Algorithm) -> bool {
        self.kind.algorithms().contains(&alg) && self.alg.is_none_or(|only| only == alg)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    fn algorithms(self) -> &'static [Algorithm] {
        match self {
            Self::Rsa => &[
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ],
            Self::P256 => &[Algorithm::ES256],
            Self::P384 => &[Algorithm::ES384],
            Self::Ed25519 => &[Algorithm::EdDSA],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Rsa => "RSA",
            Self::P256 => "EC P-256",
            Self::P384 => "EC P-384",
            Self::Ed25519 => "Ed25519",
        }
    }
}

pub(super) fn read_key_file(path: &Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|err| format!("{shown}: cannot read: {err}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("{shown}: cannot read: {err}"))?;
    if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(format!(
            "{shown}: is larger than {MAX_KEY_FILE_BYTES} bytes, too large for a key file"
        ));
    }
    Ok(bytes)
}

/// Loads one PEM public key, detecting its type.
pub(super) fn load_pem_key(path: &Path) -> Result<PublicKey, String> {
    let bytes = read_key_file(path)?;
    pem_key(&bytes, path.display().to_string())
}

/// A PEM public key from a file's bytes; `shown` names the file in errors.
pub(super) fn pem_key(bytes: &[u8], shown: String) -> Result<PublicKey, String> {
    let not_supported = || {
        format!(
            "{shown}: is not a supported public key PEM \
             (RSA, EC P-256 or P-384, or Ed25519; SPKI \"PUBLIC KEY\" or \"RSA PUBLIC KEY\")"
        )
    };
    let text = std::str::from_utf8(bytes).map_err(|_| not_supported())?;
    let (label, der) = single_pem_block(text).map_err(|why| format!("{shown}: {why}"))?;
    let (key, kind) = match label {
        "PUBLIC KEY" => spki_key(&der, text).ok_or_else(not_supported)?,
        "RSA PUBLIC KEY" => (DecodingKey::from_rsa_der(&der), KeyKind::Rsa),
        "CERTIFICATE" => {
            return Err(format!(
                "{shown}: is a certificate; configure its public key \
                 (`openssl x509 -in CERT -pubkey -noout`)"
            ))
        }
        label if label.contains("PRIVATE KEY") => {
            return Err(format!(
                "{shown}: is a private key ({label}); configure the public key \
                 (`openssl pkey -in KEY -pubout`)"
            ))
        }
        _ => return Err(not_supported()),
    };
    let key = checked_key(key, kind).map_err(|why| format!("{shown}: {why}"))?;
    Ok(PublicKey {
        key,
        kind,
        kid: None,
        alg: None,
        origin: shown,
    })
}

/// The label and DER of the file's only PEM block.
pub(super) fn single_pem_block(text: &str) -> Result<(&str, Vec<u8>), String> {
    const BEGIN: &str = "-----BEGIN ";
    const DASHES: &str = "-----";
    let Some(start) = text.find(BEGIN) else {
        return Err("is not a PEM file (no -----BEGIN line)".into());
    };
    let rest = &text[start + BEGIN.len()..];
    let Some(label_end) = rest.find(DASHES) else {
        return Err("is not a PEM file (a broken -----BEGIN line)".into());
    };
    let label = &rest[..label_end];
    let body = &rest[label_end + DASHES.len()..];
    let end_line = format!("-----END {label}-----");
    let Some(body_end) = body.find(&end_line) else {
        return Err(format!("is not a PEM file (no {end_line} line)"));
    };
    if body[body_end..].contains(BEGIN) {
        return Err("holds more than one PEM block; put one public key in each file".into());
    }
    let base64: String = body[..body_end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let der = STANDARD
        .decode(base64)
        .map_err(|_| format!("is not a PEM file (the {label} body is not base64)"))?;
    Ok((label, der))
}

/// A SubjectPublicKeyInfo as a key: EC and Ed25519 by their exact encodings, RSA through
/// jsonwebtoken's PEM reader.
fn spki_key(der: &[u8], pem: &str) -> Option<(DecodingKey, KeyKind)> {
    let exact = |prefix: &[u8], len: usize| {
        (der.len() == prefix.len() + len && der.starts_with(prefix)).then(|| &der[prefix.len()..])
    };
    if let Some(point) = exact(&P256_SPKI_PREFIX, 65) {
        return Some((DecodingKey::from_ec_der(point), KeyKind::P256));
    }
    if let Some(point) = exact(&P384_SPKI_PREFIX, 97) {
        return Some((DecodingKey::from_ec_der(point), KeyKind::P384));
    }
    if let Some(x) = exact(&ED25519_SPKI_PREFIX, 32) {
        return Some((DecodingKey::from_ed_der(x), KeyKind::Ed25519));
    }
    if der
        .windows(EC_PUBLIC_KEY_OID.len())
        .any(|w| w == EC_PUBLIC_KEY_OID)
    {
        // Another curve, or a compressed point.
        return None;
    }
    let key = DecodingKey::from_rsa_pem(pem.as_bytes()).ok()?;
    Some((key, KeyKind::Rsa))
}

/// Checks a key can verify its algorithms; RSA keys come back as (n, e).
fn checked_key(key: DecodingKey, kind: KeyKind) -> Result<DecodingKey, String> {
    match kind {
        KeyKind::Rsa => {
            let jwk = Jwk::from_decoding_key(&key, None)
                .map_err(|_| "is not a valid RSA public key".to_string())?;
            let AlgorithmParameters::RSA(rsa) = jwk.algorithm else {
                return Err("is not a valid RSA public key".into());
            };
            let n = URL_SAFE_NO_PAD.decode(rsa.n).map_err(|e| e.to_string())?;
            let e = URL_SAFE_NO_PAD.decode(rsa.e).map_err(|e| e.to_string())?;
            rsa_key(&n, &e)
        }
        KeyKind::P256 | KeyKind::P384 | KeyKind::Ed25519 => {
            // jsonwebtoken parses the point when it builds a verifier and reports a bad one as an
            // error, while a signature that does not verify is `Ok(false)`.
            let alg = kind.algorithms()[0];
            match jsonwebtoken::crypto::verify("AAAA", b"", &key, alg) {
                Ok(_) => Ok(key),
                Err(_) => Err(format!("is not a valid {} public key", kind.name())),
            }
        }
    }
}

/// An RSA public key from its big-endian modulus and exponent, within the sizes the `rsa`
/// crate verifies with.
fn rsa_key(n: &[u8], e: &[u8]) -> Result<DecodingKey, String> {
    let n = strip_leading_zeros(n);
    let e = strip_leading_zeros(e);
    let bits = n.first().map_or(0, |top| {
        (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize)
    });
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(format!(
            "is a {bits}-bit RSA key; {MIN_RSA_BITS} to {MAX_RSA_BITS} bits are supported"
        ));
    }
    let exponent = match e.len() {
        1..=8 => e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
        _ => u64::MAX,
    };
    let n_odd = n.last().is_some_and(|b| b & 1 == 1);
    if !n_odd || !(3..=MAX_RSA_EXPONENT).contains(&exponent) || exponent % 2 == 0 {
        return Err("is not a valid RSA public key".into());
    }
    Ok(DecodingKey::from_rsa_raw_components(n, e))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// The JSON of a JWK Set file.
#[derive(Deserialize)]
struct JwkSetFile {
    keys: Vec<JwkFields>,
}

/// The JWK members Herald reads.
#[derive(Deserialize)]
struct JwkFields {
    kty: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    usage: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
    /// Present only in private keys.
    d: Option<Value>,
}

/// The signing keys of a JWK Set; keys marked `"use": "enc"` are skipped.
pub(super) fn parse_jwks(bytes: &[u8], shown: &str) -> Result<Vec<PublicKey>, Vec<String>> {
    let set: JwkSetFile = serde_json::from_slice(bytes).map_err(|err| {
        vec![format!(
            "{shown}: is not a JWK Set ({{\"keys\": [...]}}): {err}"
        )]
    })?;
    if set.keys.len() > MAX_JWKS_KEYS {
        return Err(vec![format!(
            "{shown}: holds {} keys; at most {MAX_JWKS_KEYS} are supported",
            set.keys.len()
        )]);
    }
    let mut keys: Vec<PublicKey> = Vec::new();
    let mut errors = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let Some(kid) = jwk.kid.as_deref().filter(|kid| !kid.is_empty()) else {
            errors.push(format!(
                "{shown}: key #{i} has no kid; every key in the JWK Set needs one"
            ));
            continue;
        };
        if jwk.usage.as_deref() == Some("enc") {
            continue;
        }
        if keys.iter().any(|k| k.kid.as_deref() == Some(kid)) {
            errors.push(format!("{shown}: kid {kid:?} appears more than once"));
            continue;
        }
        match jwk_key(jwk) {
            Ok((key, kind, alg)) => keys.push(PublicKey {
                key,
                kind,
                kid: Some(kid.to_owned()),
                alg,
                origin: format!("{shown}#{kid}"),
            }),
            Err(why) => errors.push(format!("{shown}: key {kid:?} {why}")),
        }
    }
    if errors.is_empty() && keys.is_empty() {
        errors.push(format!("{shown}: holds no signing keys"));
    }
    if errors.is_empty() {
        Ok(keys)
    } else {
        Err(errors)
    }
}

fn jwk_key(jwk: &JwkFields) -> Result<(DecodingKey, KeyKind, Option<Algorithm>), String> {
    if jwk.d.is_some() {
        return Err("is a private key; the JWK Set must hold only public keys".into());
    }
    let member = |name: &str, value: &Option<String>| -> Result<Vec<u8>, String> {
        let text = value.as_deref().ok_or_else(|| format!("has no {name:?}"))?;
        URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| format!("has a {name:?} that is not base64url without padding"))
    };
    let sized = |name: &str, value: &Option<String>, len: usize| -> Result<Vec<u8>, String> {
        let bytes = member(name, value)?;
        if bytes.len() == len {
            Ok(bytes)
        } else {
            Err(format!(
                "has a {name:?} of {} bytes, not {len}",
                bytes.len()
            ))
        }
    };
    let (key, kind) = match (jwk.kty.as_deref(), jwk.crv.as_deref()) {
        (Some("RSA"), _) => (
            rsa_key(&member("n", &jwk.n)?, &member("e", &jwk.e)?)?,
            KeyKind::Rsa,
        ),
        (Some("EC"), Some(crv @ ("P-256" | "P-384"))) => {
            let (len, kind) = if crv == "P-256" {
                (32, KeyKind::P256)
            } else {
                (48, KeyKind::P384)
            };
            let mut point = vec![0x04];
            point.extend(sized("x", &jwk.x, len)?);
            point.extend(sized("y", &jwk.y, len)?);
            let key = checked_key(DecodingKey::from_ec_der(&point), kind)?;
            (key, kind)
        }
        (Some("OKP"), Some("Ed25519")) => {
            let x = sized("x", &jwk.x, 32)?;
            let key = checked_key(DecodingKey::from_ed_der(&x), KeyKind::Ed25519)?;
            (key, KeyKind::Ed25519)
        }
        (Some("EC" | "OKP"), crv) => {
            return Err(format!(
                "has an unsupported curve {crv:?} (P-256, P-384 and Ed25519 are supported)"
            ))
        }
        (Some("oct"), _) => {
            return Err(
                "is a symmetric key (kty \"oct\"), which a JWK Set may not hold; \
                 put HMAC secrets in auth.token.hmac_secrets"
                    .into(),
            )
        }
        (kty, _) => {
            return Err(format!(
                "has an unsupported key type {kty:?} (RSA, EC and OKP are supported)"
            ))
        }
    };
    let alg = match jwk.alg.as_deref() {
        None => None,
        Some(name) => {
            let alg =
                algorithm_named(name).ok_or_else(|| format!("has an unsupported alg {name:?}"))?;
            if !kind.algorithms().contains(&alg) {
                return Err(format!(
                    "has alg {name}, which a {} key cannot verify",
                    kind.name()
                ));
            }
            Some(alg)
        }
    };
    Ok((key, kind, alg))
}

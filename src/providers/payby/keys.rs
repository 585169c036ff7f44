//! PayBy's signatures: SHA256withRSA (RSASSA-PKCS1-v1_5 over SHA-256), standard base64.
//!
//! We sign every request body with the merchant's private key and verify every response body
//! with PayBy's public key. Everything runs in AWS-LC (`aws-lc-rs`, already linked for TLS):
//! parsing and checking keys, signing (blinded, constant-time) and verifying. The few DER
//! fields read here (the PKCS#8/SPKI algorithm and the modulus) are read only to say clearly
//! what is wrong with a key before AWS-LC, whose refusals are terse, checks it in full.
//! The simulator uses the same two types the other way round.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::error::KeyRejected;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    KeyPair as _, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The smallest modulus accepted, for the merchant key and PayBy's alike.
pub const MIN_BITS: usize = 2048;
/// The largest modulus AWS-LC signs and verifies with.
pub const MAX_BITS: usize = 8192;

/// An RSA private key that signs. Its `Debug` shows the size only.
#[derive(Clone)]
pub struct SigningKey {
    pair: Arc<RsaKeyPair>,
    public: VerifyingKey,
}

/// Keys are equal when their public halves are (a reload compares configurations): one
/// modulus has one factorisation.
impl PartialEq for SigningKey {
    fn eq(&self, other: &Self) -> bool {
        self.public == other.public
    }
}

/// An RSA public key that verifies: AWS-LC's parsed key, and the modulus and exponent
/// (big-endian, no leading zeros) that make it what it is, for comparison and size.
#[derive(Clone)]
pub struct VerifyingKey {
    parsed: Arc<ParsedPublicKey>,
    modulus: Arc<[u8]>,
    exponent: Arc<[u8]>,
}

impl PartialEq for VerifyingKey {
    fn eq(&self, other: &Self) -> bool {
        self.modulus == other.modulus && self.exponent == other.exponent
    }
}

impl Eq for VerifyingKey {}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(<redacted>, {} bits)", self.bits())
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({} bits)", self.bits())
    }
}

/// The OID of rsaEncryption (1.2.840.113549.1.1.1), as DER content bytes.
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

impl SigningKey {
    /// Reads a PEM private key: PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1 (`BEGIN RSA PRIVATE
    /// KEY`). It must be RSA, consistent, and from [`MIN_BITS`] to [`MAX_BITS`] long.
    /// Messages never contain key material.
    pub fn from_pem(text: &str) -> Result<SigningKey, String> {
        let text = text.trim();
        if !text.starts_with("-----BEGIN ") {
            return Err(
                "expected a PEM private key (-----BEGIN PRIVATE KEY----- or \
                        -----BEGIN RSA PRIVATE KEY-----)"
                    .to_owned(),
            );
        }
        let pem = pem::decode(text).map_err(|e| format!("not a readable PEM private key: {e}"))?;
        let pair = match pem.label {
            "PRIVATE KEY" => {
                let (algorithm, pkcs1) = der::pkcs8(&pem.der)
                    .ok_or("not a readable PKCS#8 private key: malformed DER")?;
                if algorithm != RSA_ENCRYPTION {
                    return Err(format!(
                        "not an RSA key (PKCS#8 algorithm {}); PayBy keys are RSA-2048",
                        der::oid_text(algorithm)
                    ));
                }
                let modulus = der::rsa_private_modulus(pkcs1)
                    .ok_or("not a readable RSA private key: malformed DER")?;
                check_bits(modulus)?;
                RsaKeyPair::from_pkcs8(&pem.der).map_err(private_rejected)?
            }
            "RSA PRIVATE KEY" => {
                if pem.encrypted {
                    return Err(encrypted());
                }
                let modulus = der::rsa_private_modulus(&pem.der)
                    .ok_or("not a readable PKCS#1 RSA private key: malformed DER")?;
                check_bits(modulus)?;
                RsaKeyPair::from_der(&pem.der).map_err(private_rejected)?
            }
            "ENCRYPTED PRIVATE KEY" => return Err(encrypted()),
            other => {
                return Err(format!(
                    "not an RSA private key (found -----BEGIN {other}-----); PayBy keys are RSA-2048"
                ));
            }
        };
        let public = VerifyingKey::from_pkcs1(
            pair.public_key().as_ref(),
            "the RSA private key's public half is not usable",
        )?;
        Ok(SigningKey {
            pair: Arc::new(pair),
            public,
        })
    }

    pub fn bits(&self) -> usize {
        self.public.bits()
    }

    /// The matching public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.public.clone()
    }

    /// The base64 SHA256withRSA signature of `bytes`, computed with blinding.
    pub fn sign(&self, bytes: &[u8]) -> Result<String, SignError> {
        let mut signature = vec![0; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                bytes,
                &mut signature,
            )
            .map_err(|_| SignError)?;
        Ok(STANDARD.encode(signature))
    }
}

fn encrypted() -> String {
    "the private key is encrypted; give it unencrypted (openssl pkey \
     -in key.pem -out plain.pem) and protect the file instead"
        .to_owned()
}

/// AWS-LC's refusal of a private key whose structure and size we already checked.
fn private_rejected(e: KeyRejected) -> String {
    match e.description_() {
        "InconsistentComponents" => format!("the RSA private key is inconsistent: {e}"),
        _ => format!("not a readable RSA private key: {e}"),
    }
}

/// Refuses a modulus outside [`MIN_BITS`]..=[`MAX_BITS`], saying how long it is.
fn check_bits(modulus: &[u8]) -> Result<(), String> {
    let bits = der::bit_length(modulus);
    if bits < MIN_BITS {
        return Err(format!(
            "the RSA key has {bits} bits; at least {MIN_BITS} are required"
        ));
    }
    if bits > MAX_BITS {
        return Err(format!(
            "the RSA key has {bits} bits; at most {MAX_BITS} are supported"
        ));
    }
    Ok(())
}

impl VerifyingKey {
    /// Reads a public key: SPKI PEM (`BEGIN PUBLIC KEY`), PKCS#1 PEM (`BEGIN RSA PUBLIC KEY`),
    /// or the SPKI DER as bare base64 without PEM armour (as PayBy's portal shows it). It
    /// must be RSA and from [`MIN_BITS`] to [`MAX_BITS`] long.
    pub fn from_text(text: &str) -> Result<VerifyingKey, String> {
        let text = text.trim();
        if text.starts_with("-----BEGIN ") {
            let pem = pem::decode(text).map_err(|e| format!("not a readable PEM key: {e}"))?;
            match pem.label {
                "PUBLIC KEY" => VerifyingKey::from_spki(&pem.der),
                "RSA PUBLIC KEY" => {
                    VerifyingKey::from_pkcs1(&pem.der, "not a readable PKCS#1 RSA public key")
                }
                "CERTIFICATE" => Err("a certificate, not a public key: extract the key with \
                                openssl x509 -in cert.pem -pubkey -noout"
                    .to_owned()),
                other => Err(format!("not a public key (found -----BEGIN {other}-----)")),
            }
        } else {
            let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            let der = STANDARD.decode(compact).map_err(|_| {
                "neither a PEM public key nor the key as base64 (SPKI DER)".to_owned()
            })?;
            VerifyingKey::from_spki(&der)
        }
    }

    fn from_spki(der: &[u8]) -> Result<VerifyingKey, String> {
        let (algorithm, pkcs1) =
            der::spki(der).ok_or("not a readable public key (SPKI): malformed DER")?;
        if algorithm != RSA_ENCRYPTION {
            return Err(format!(
                "not an RSA public key (algorithm {})",
                der::oid_text(algorithm)
            ));
        }
        VerifyingKey::from_pkcs1(pkcs1, "not a readable RSA public key")
    }

    /// From a PKCS#1 `RSAPublicKey`. A key that cannot be read is refused as `unreadable`
    /// says; one of the wrong size says how long it is.
    fn from_pkcs1(der: &[u8], unreadable: &str) -> Result<VerifyingKey, String> {
        let (modulus, exponent) =
            der::rsa_public_key(der).ok_or_else(|| format!("{unreadable}: malformed DER"))?;
        check_bits(modulus)?;
        let parsed = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der)
            .map_err(|e| format!("{unreadable}: {e}"))?;
        Ok(VerifyingKey {
            parsed: Arc::new(parsed),
            modulus: modulus.into(),
            exponent: exponent.into(),
        })
    }

    pub fn bits(&self) -> usize {
        der::bit_length(&self.modulus)
    }

    /// Whether `signature` (base64) is a valid SHA256withRSA signature of `bytes`.
    pub fn verify(&self, bytes: &[u8], signature: &str) -> bool {
        let compact: String = signature.chars().filter(|c| !c.is_whitespace()).collect();
        let Ok(signature) = STANDARD.decode(compact) else {
            return false;
        };
        self.parsed.verify_sig(bytes, &signature).is_ok()
    }
}

/// Signing failed inside AWS-LC (it does not say why; with a key that loaded, it does not
/// happen in practice).
#[derive(Debug, thiserror::Error)]
#[error("RSA signing failed")]
pub struct SignError;

/// PEM armour (RFC 7468): one block, its label and its DER.
mod pem {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    pub struct Pem<'a> {
        pub label: &'a str,
        pub der: Vec<u8>,
        /// The legacy OpenSSL `Proc-Type: 4,ENCRYPTED` header of an encrypted PKCS#1 key.
        pub encrypted: bool,
    }

    /// What is wrong with the armour. Never the text itself: it may be a key.
    #[derive(Debug, thiserror::Error)]
    pub enum PemError {
        #[error("malformed BEGIN line")]
        Begin,
        #[error("no matching END line")]
        End,
        #[error("text after the END line")]
        Trailing,
        #[error("the body is not base64")]
        Base64,
    }

    const MAX_LABEL: usize = 64;

    /// Decodes `text` (trimmed), which starts with `-----BEGIN `.
    pub fn decode(text: &str) -> Result<Pem<'_>, PemError> {
        let rest = text.strip_prefix("-----BEGIN ").ok_or(PemError::Begin)?;
        let (label, rest) = rest.split_once("-----").ok_or(PemError::Begin)?;
        let label_ok = label.len() <= MAX_LABEL
            && label
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == ' ');
        if !label_ok {
            return Err(PemError::Begin);
        }
        let end = format!("-----END {label}-----");
        let (body, after) = rest.split_once(end.as_str()).ok_or(PemError::End)?;
        if !after.trim().is_empty() {
            return Err(PemError::Trailing);
        }
        // Header lines (`Name: value`) come before the base64; only one matters here.
        let mut encrypted = false;
        let mut base64 = String::with_capacity(body.len());
        for line in body.lines() {
            let line = line.trim();
            if let Some((name, value)) = line.split_once(':') {
                encrypted |= name.trim() == "Proc-Type" && value.contains("ENCRYPTED");
                continue;
            }
            base64.push_str(line);
        }
        let der = STANDARD.decode(base64).map_err(|_| PemError::Base64)?;
        Ok(Pem {
            label,
            der,
            encrypted,
        })
    }
}

/// Just enough DER to find the algorithm and the modulus of a key; AWS-LC reads it in full.
/// Every reader returns `None` on anything malformed, never panics.
mod der {
    const SEQUENCE: u8 = 0x30;
    const INTEGER: u8 = 0x02;
    const BIT_STRING: u8 = 0x03;
    const OCTET_STRING: u8 = 0x04;
    const OID: u8 = 0x06;

    /// A cursor over DER elements.
    struct Reader<'a>(&'a [u8]);

    impl<'a> Reader<'a> {
        /// The content of the next element, which must have `tag`.
        fn take(&mut self, tag: u8) -> Option<&'a [u8]> {
            let (&found, rest) = self.0.split_first()?;
            if found != tag {
                return None;
            }
            let (&first, rest) = rest.split_first()?;
            let (len, rest) = if first < 0x80 {
                (usize::from(first), rest)
            } else {
                let n = usize::from(first & 0x7f);
                if n == 0 || n > 4 || rest.len() < n {
                    return None;
                }
                let (bytes, rest) = rest.split_at(n);
                let len = bytes
                    .iter()
                    .fold(0usize, |len, &b| (len << 8) | usize::from(b));
                (len, rest)
            };
            if rest.len() < len {
                return None;
            }
            let (content, rest) = rest.split_at(len);
            self.0 = rest;
            Some(content)
        }
    }

    /// A positive INTEGER's magnitude, without leading zeros.
    fn unsigned(integer: &[u8]) -> Option<&[u8]> {
        if integer.first().is_none_or(|b| b & 0x80 != 0) {
            return None;
        }
        let start = integer.iter().position(|&b| b != 0)?;
        Some(&integer[start..])
    }

    /// A PKCS#8 `PrivateKeyInfo`: its algorithm OID and the private key it wraps.
    pub fn pkcs8(der: &[u8]) -> Option<(&[u8], &[u8])> {
        let mut info = Reader(Reader(der).take(SEQUENCE)?);
        info.take(INTEGER)?;
        let algorithm = Reader(info.take(SEQUENCE)?).take(OID)?;
        let key = info.take(OCTET_STRING)?;
        Some((algorithm, key))
    }

    /// A `SubjectPublicKeyInfo`: its algorithm OID and the public key it wraps.
    pub fn spki(der: &[u8]) -> Option<(&[u8], &[u8])> {
        let mut outer = Reader(der);
        let mut info = Reader(outer.take(SEQUENCE)?);
        if !outer.0.is_empty() {
            return None;
        }
        let algorithm = Reader(info.take(SEQUENCE)?).take(OID)?;
        // A BIT STRING starts with its count of unused bits: none in a key.
        let key = info.take(BIT_STRING)?.strip_prefix(&[0])?;
        Some((algorithm, key))
    }

    /// The modulus of a PKCS#1 `RSAPrivateKey`.
    pub fn rsa_private_modulus(der: &[u8]) -> Option<&[u8]> {
        let mut key = Reader(Reader(der).take(SEQUENCE)?);
        key.take(INTEGER)?;
        unsigned(key.take(INTEGER)?)
    }

    /// The modulus and public exponent of a PKCS#1 `RSAPublicKey`.
    pub fn rsa_public_key(der: &[u8]) -> Option<(&[u8], &[u8])> {
        let mut outer = Reader(der);
        let mut key = Reader(outer.take(SEQUENCE)?);
        if !outer.0.is_empty() {
            return None;
        }
        let modulus = unsigned(key.take(INTEGER)?)?;
        let exponent = unsigned(key.take(INTEGER)?)?;
        Some((modulus, exponent))
    }

    /// The number of bits of a magnitude without leading zeros.
    pub fn bit_length(magnitude: &[u8]) -> usize {
        match magnitude.first() {
            Some(&first) => (magnitude.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
            None => 0,
        }
    }

    /// An OID in dotted form (`1.2.840.10045.2.1`), for messages; at most 16 arcs.
    pub fn oid_text(content: &[u8]) -> String {
        let mut arcs: Vec<u64> = Vec::new();
        let mut value: u64 = 0;
        for &b in content {
            value = value
                .saturating_mul(128)
                .saturating_add(u64::from(b & 0x7f));
            if b & 0x80 == 0 {
                if arcs.is_empty() {
                    let first = (value / 40).min(2);
                    arcs.push(first);
                    arcs.push(value - first * 40);
                } else {
                    arcs.push(value);
                }
                value = 0;
                if arcs.len() >= 16 {
                    break;
                }
            }
        }
        let text: Vec<String> = arcs.iter().map(u64::to_string).collect();
        if text.is_empty() {
            "unknown".to_owned()
        } else {
            text.join(".")
        }
    }

    /// A SubjectPublicKeyInfo for an RSA key, built from its modulus and exponent. Tests use
    /// it to make keys the loader must refuse.
    #[cfg(test)]
    pub fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
        fn element(tag: u8, content: &[u8]) -> Vec<u8> {
            let mut out = vec![tag];
            let len = content.len();
            if len < 0x80 {
                out.push(len as u8);
            } else {
                let bytes: Vec<u8> = len
                    .to_be_bytes()
                    .into_iter()
                    .skip_while(|&b| b == 0)
                    .collect();
                out.push(0x80 | bytes.len() as u8);
                out.extend(bytes);
            }
            out.extend_from_slice(content);
            out
        }
        // DER integers are minimal: a leading zero only to keep the sign bit clear.
        let integer = |magnitude: &[u8]| {
            let mut content = Vec::new();
            if magnitude.first().is_some_and(|b| b & 0x80 != 0) {
                content.push(0);
            }
            content.extend_from_slice(magnitude);
            element(INTEGER, &content)
        };
        let public = element(SEQUENCE, &[integer(modulus), integer(exponent)].concat());
        let algorithm = element(
            SEQUENCE,
            &[element(OID, super::RSA_ENCRYPTION), vec![0x05, 0x00]].concat(),
        );
        let bits = element(BIT_STRING, &[&[0][..], &public].concat());
        element(SEQUENCE, &[algorithm, bits].concat())
    }

    /// The SPKI DER of the public half of a PKCS#8 RSA private key, whatever its size.
    #[cfg(test)]
    pub fn spki_of_pkcs8(der: &[u8]) -> Option<Vec<u8>> {
        let (_, pkcs1) = pkcs8(der)?;
        let mut key = Reader(Reader(pkcs1).take(SEQUENCE)?);
        key.take(INTEGER)?;
        let modulus = unsigned(key.take(INTEGER)?)?;
        let exponent = unsigned(key.take(INTEGER)?)?;
        Some(rsa_spki(modulus, exponent))
    }
}

/// The public key, as bare base64 SPKI, of a PKCS#8 PEM RSA private key of any size: tests
/// make keys the loader must refuse (a 1024-bit public key) from the private keys in
/// `testdata/keys-invalid/`, without committing more key files.
#[cfg(test)]
pub(crate) fn test_public_key_of(private_pem: &str) -> String {
    let pem = pem::decode(private_pem.trim()).expect("PEM");
    STANDARD.encode(der::spki_of_pkcs8(&pem.der).expect("PKCS#8 RSA"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/payby/");

    fn read(name: &str) -> String {
        std::fs::read_to_string(format!("{DATA}{name}")).unwrap()
    }

    /// The shared test vector: RSASSA-PKCS1-v1_5 is deterministic, blinding or not.
    #[test]
    fn the_test_vector_signs_and_verifies() {
        let body = read("request_body.json");
        let expected = read("request_sign.txt");
        for file in [
            "merchant_private_key_pkcs8.pem",
            "merchant_private_key_pkcs1.pem",
        ] {
            let key = SigningKey::from_pem(&read(file)).unwrap();
            assert_eq!(key.bits(), 2048);
            assert_eq!(
                key.sign(body.as_bytes()).unwrap(),
                expected.trim(),
                "{file}"
            );
        }
        let merchant_public = VerifyingKey::from_text(&read("merchant_public_key.pem")).unwrap();
        assert!(merchant_public.verify(body.as_bytes(), &expected));

        let payby = VerifyingKey::from_text(&read("payby_public_key.pem")).unwrap();
        let response = read("response_body.json");
        let signature = read("response_sign.txt");
        assert!(payby.verify(response.as_bytes(), &signature));
        let mut changed = response.clone().into_bytes();
        let at = response.find("897993.88").unwrap();
        changed[at] = b'9';
        assert!(!payby.verify(&changed, &signature));
        // The merchant's key does not verify PayBy's signature.
        assert!(!merchant_public.verify(response.as_bytes(), &signature));
        assert!(!payby.verify(response.as_bytes(), "not base64!"));
    }

    #[test]
    fn a_bare_base64_public_key_is_the_same_key() {
        let pem = read("payby_public_key.pem");
        let bare: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert_eq!(
            VerifyingKey::from_text(&bare).unwrap(),
            VerifyingKey::from_text(&pem).unwrap()
        );
        let private = SigningKey::from_pem(&read("payby_private_key.pem")).unwrap();
        assert_eq!(
            private.verifying_key(),
            VerifyingKey::from_text(&pem).unwrap()
        );
    }

    #[test]
    fn bad_keys_are_refused_with_a_reason_and_no_key_material() {
        let public = read("payby_public_key.pem");
        let private = read("merchant_private_key_pkcs8.pem");
        let errors = [
            SigningKey::from_pem("hello").unwrap_err(),
            SigningKey::from_pem(&public).unwrap_err(),
            SigningKey::from_pem(&private.replace("PRIVATE KEY", "EC PRIVATE KEY")).unwrap_err(),
            SigningKey::from_pem(&private[..private.len() / 2]).unwrap_err(),
            VerifyingKey::from_text("!!!").unwrap_err(),
            VerifyingKey::from_text(&private).unwrap_err(),
        ];
        for error in &errors {
            assert!(!error.contains("MII"), "{error}");
        }
        assert!(errors[1].contains("BEGIN PUBLIC KEY"), "{}", errors[1]);
        assert!(errors[2].contains("not an RSA"), "{}", errors[2]);
        assert!(
            !format!("{:?}", SigningKey::from_pem(&private).unwrap()).contains("primes"),
            "Debug must not show the key"
        );
    }

    #[test]
    fn keys_that_are_not_rsa_or_too_short_are_refused() {
        let invalid = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/keys-invalid/");
        let read = |name: &str| std::fs::read_to_string(format!("{invalid}{name}")).unwrap();
        let ec = SigningKey::from_pem(&read("ec_private_key_pkcs8.pem")).unwrap_err();
        assert!(ec.contains("not an RSA key"), "{ec}");
        let short = SigningKey::from_pem(&read("rsa1024_private_key_pkcs8.pem")).unwrap_err();
        assert!(short.contains("1024 bits"), "{short}");
    }

    #[test]
    fn public_keys_under_2048_bits_are_refused_whatever_their_form() {
        let invalid = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/keys-invalid/");
        let private =
            std::fs::read_to_string(format!("{invalid}rsa1024_private_key_pkcs8.pem")).unwrap();
        let bare = test_public_key_of(&private);
        let pem = format!("-----BEGIN PUBLIC KEY-----\n{bare}\n-----END PUBLIC KEY-----\n");
        for text in [&bare, &pem] {
            let error = VerifyingKey::from_text(text).unwrap_err();
            assert_eq!(
                error,
                "the RSA key has 1024 bits; at least 2048 are required"
            );
        }
        // The same helper on a 2048-bit key gives a key that loads: the refusal is the size.
        let good = test_public_key_of(&read("merchant_private_key_pkcs8.pem"));
        assert_eq!(
            VerifyingKey::from_text(&good).unwrap(),
            VerifyingKey::from_text(&read("merchant_public_key.pem")).unwrap()
        );
    }

    #[test]
    fn a_pkcs1_public_key_and_both_private_forms_are_the_same_keys() {
        let spki = pem::decode(read("payby_public_key.pem").trim())
            .unwrap()
            .der;
        let (_, pkcs1) = der::spki(&spki).unwrap();
        let text = format!(
            "-----BEGIN RSA PUBLIC KEY-----\n{}\n-----END RSA PUBLIC KEY-----",
            STANDARD.encode(pkcs1)
        );
        let key = VerifyingKey::from_text(&text).unwrap();
        assert_eq!(
            key,
            VerifyingKey::from_text(&read("payby_public_key.pem")).unwrap()
        );
        assert_eq!(format!("{key:?}"), "VerifyingKey(2048 bits)");

        let pkcs1 = SigningKey::from_pem(&read("merchant_private_key_pkcs1.pem")).unwrap();
        let pkcs8 = SigningKey::from_pem(&read("merchant_private_key_pkcs8.pem")).unwrap();
        assert_eq!(pkcs1, pkcs8, "one key in two encodings");
        let payby = SigningKey::from_pem(&read("payby_private_key.pem")).unwrap();
        assert_ne!(pkcs1, payby);
        assert_ne!(pkcs1.verifying_key(), payby.verifying_key());
        assert_eq!(format!("{pkcs1:?}"), "SigningKey(<redacted>, 2048 bits)");
    }

    #[test]
    fn armour_problems_are_named_without_echoing_the_text() {
        let private = read("merchant_private_key_pkcs1.pem");
        let cases = [
            (
                private.replace("-----END RSA PRIVATE KEY-----", ""),
                "no matching END line",
            ),
            (format!("{private}\nMIIsecret"), "text after the END line"),
            (private.replacen("MII", "M!I", 1), "the body is not base64"),
            (
                private.replacen("\n", "\nProc-Type: 4,ENCRYPTED\n", 1),
                "the private key is encrypted",
            ),
            (
                private.replace("RSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY"),
                "the private key is encrypted",
            ),
        ];
        for (text, expected) in cases {
            let error = SigningKey::from_pem(&text).unwrap_err();
            assert!(error.contains(expected), "{error}");
            assert!(
                !error.contains("MII") && !error.contains("secret"),
                "{error}"
            );
        }
        // Valid armour around something that is not a key.
        let junk = "-----BEGIN RSA PRIVATE KEY-----\naGVsbG8=\n-----END RSA PRIVATE KEY-----";
        let error = SigningKey::from_pem(junk).unwrap_err();
        assert_eq!(
            error,
            "not a readable PKCS#1 RSA private key: malformed DER"
        );
        let error = VerifyingKey::from_text("aGVsbG8=").unwrap_err();
        assert_eq!(error, "not a readable public key (SPKI): malformed DER");
    }

    #[test]
    fn a_non_rsa_pkcs8_key_names_its_algorithm() {
        let invalid = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/keys-invalid/");
        let ec = std::fs::read_to_string(format!("{invalid}ec_private_key_pkcs8.pem")).unwrap();
        assert_eq!(
            SigningKey::from_pem(&ec).unwrap_err(),
            "not an RSA key (PKCS#8 algorithm 1.2.840.10045.2.1); PayBy keys are RSA-2048"
        );
    }

    #[test]
    fn the_der_readers_never_panic_on_arbitrary_bytes() {
        let spki = pem::decode(read("payby_public_key.pem").trim())
            .unwrap()
            .der;
        let pkcs8 = pem::decode(read("merchant_private_key_pkcs8.pem").trim())
            .unwrap()
            .der;
        for seed in [spki, pkcs8] {
            for cut in 0..seed.len().min(64) {
                let _ = der::spki(&seed[..cut]);
                let _ = der::pkcs8(&seed[..cut]);
                let _ = der::rsa_public_key(&seed[..cut]);
                let _ = der::rsa_private_modulus(&seed[..cut]);
            }
            for at in 0..seed.len().min(64) {
                let mut changed = seed.clone();
                changed[at] ^= 0xff;
                let _ = VerifyingKey::from_spki(&changed);
                let _ = der::pkcs8(&changed);
                let _ = der::oid_text(&changed);
            }
        }
    }
}

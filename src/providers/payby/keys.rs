//! PayBy's signatures: SHA256withRSA (RSASSA-PKCS1-v1_5 over SHA-256), standard base64.
//!
//! We sign every request body with the merchant's private key and verify every response body
//! with PayBy's public key. Keys are read and checked with the `rsa` crate; signing and
//! verifying run in AWS-LC (`aws-lc-rs`, already linked for TLS), whose RSA private-key
//! operations are blinded and constant-time and about 5x faster than the `rsa` crate's
//! (BENCHMARKS.md). rsa 0.9's own unblinded path leaks timing (RUSTSEC-2023-0071, "Marvin").
//! The simulator uses the same two types the other way round.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    KeyPair as _, RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY, RSA_PKCS1_SHA256, RsaKeyPair,
    UnparsedPublicKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rsa::pkcs1::{
    DecodeRsaPrivateKey, DecodeRsaPublicKey, EncodeRsaPrivateKey, EncodeRsaPublicKey,
};
use rsa::pkcs8::der::{Document, SecretDocument};
use rsa::pkcs8::{PrivateKeyInfo, SubjectPublicKeyInfoRef};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};

/// The smallest modulus accepted for the merchant key.
pub const MIN_BITS: usize = 2048;

/// An RSA private key that signs. Its `Debug` shows the size only: `RsaPrivateKey`'s own
/// `Debug` would print the private exponent and primes.
#[derive(Clone)]
pub struct SigningKey(Arc<RsaPrivateKey>, Arc<RsaKeyPair>);

/// Keys are equal when their RSA numbers are (a reload compares configurations).
impl PartialEq for SigningKey {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

/// An RSA public key that verifies: the key, and its PKCS#1 DER for AWS-LC.
#[derive(Clone)]
pub struct VerifyingKey(Arc<RsaPublicKey>, Arc<[u8]>);

impl PartialEq for VerifyingKey {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for VerifyingKey {}

impl VerifyingKey {
    fn new(key: RsaPublicKey) -> Result<VerifyingKey, String> {
        let der = key
            .to_pkcs1_der()
            .map_err(|e| format!("cannot encode the RSA public key: {e}"))?;
        Ok(VerifyingKey(Arc::new(key), der.as_bytes().into()))
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(<redacted>, {} bits)", self.bits())
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({} bits)", self.0.size() * 8)
    }
}

impl SigningKey {
    /// Reads a PEM private key: PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1 (`BEGIN RSA PRIVATE
    /// KEY`). It must be RSA, consistent, and at least [`MIN_BITS`] long. Messages never
    /// contain key material.
    pub fn from_pem(text: &str) -> Result<SigningKey, String> {
        let text = text.trim();
        if !text.starts_with("-----BEGIN ") {
            return Err(
                "expected a PEM private key (-----BEGIN PRIVATE KEY----- or \
                        -----BEGIN RSA PRIVATE KEY-----)"
                    .to_owned(),
            );
        }
        let (label, document) = SecretDocument::from_pem(text)
            .map_err(|e| format!("not a readable PEM private key: {e}"))?;
        let key = match label {
            "PRIVATE KEY" => {
                let info = PrivateKeyInfo::try_from(document.as_bytes())
                    .map_err(|e| format!("not a readable PKCS#8 private key: {e}"))?;
                if info.algorithm.oid != rsa::pkcs1::ALGORITHM_OID {
                    return Err(format!(
                        "not an RSA key (PKCS#8 algorithm {}); PayBy keys are RSA-2048",
                        info.algorithm.oid
                    ));
                }
                RsaPrivateKey::try_from(info)
                    .map_err(|e| format!("not a readable RSA private key: {e}"))?
            }
            "RSA PRIVATE KEY" => RsaPrivateKey::from_pkcs1_der(document.as_bytes())
                .map_err(|e| format!("not a readable PKCS#1 RSA private key: {e}"))?,
            "ENCRYPTED PRIVATE KEY" => {
                return Err(
                    "the private key is encrypted; give it unencrypted (openssl pkey \
                            -in key.pem -out plain.pem) and protect the file instead"
                        .to_owned(),
                );
            }
            other => {
                return Err(format!(
                    "not an RSA private key (found -----BEGIN {other}-----); PayBy keys are RSA-2048"
                ));
            }
        };
        key.validate()
            .map_err(|e| format!("the RSA private key is inconsistent: {e}"))?;
        let bits = key.size() * 8;
        if bits < MIN_BITS {
            return Err(format!(
                "the RSA key has {bits} bits; at least {MIN_BITS} are required"
            ));
        }
        let der = key
            .to_pkcs1_der()
            .map_err(|e| format!("cannot encode the RSA private key: {e}"))?;
        let pair = RsaKeyPair::from_der(der.as_bytes())
            .map_err(|e| format!("the RSA private key is not usable for signing: {e}"))?;
        Ok(SigningKey(Arc::new(key), Arc::new(pair)))
    }

    pub fn bits(&self) -> usize {
        self.0.size() * 8
    }

    /// The matching public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey(
            Arc::new(self.0.to_public_key()),
            self.1.public_key().as_ref().into(),
        )
    }

    /// The base64 SHA256withRSA signature of `bytes`, computed with blinding.
    pub fn sign(&self, bytes: &[u8]) -> Result<String, SignError> {
        let mut signature = vec![0; self.1.public_modulus_len()];
        self.1
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

impl VerifyingKey {
    /// Reads a public key: SPKI PEM (`BEGIN PUBLIC KEY`), PKCS#1 PEM (`BEGIN RSA PUBLIC KEY`),
    /// or the SPKI DER as bare base64 without PEM armour (as PayBy's portal shows it).
    pub fn from_text(text: &str) -> Result<VerifyingKey, String> {
        let text = text.trim();
        let key = if text.starts_with("-----BEGIN ") {
            let (label, document) =
                Document::from_pem(text).map_err(|e| format!("not a readable PEM key: {e}"))?;
            match label {
                "PUBLIC KEY" => spki_key(document.as_bytes())?,
                "RSA PUBLIC KEY" => RsaPublicKey::from_pkcs1_der(document.as_bytes())
                    .map_err(|e| format!("not a readable PKCS#1 RSA public key: {e}"))?,
                "CERTIFICATE" => {
                    return Err("a certificate, not a public key: extract the key with \
                                openssl x509 -in cert.pem -pubkey -noout"
                        .to_owned());
                }
                other => {
                    return Err(format!("not a public key (found -----BEGIN {other}-----)"));
                }
            }
        } else {
            let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            let der = STANDARD.decode(compact).map_err(|_| {
                "neither a PEM public key nor the key as base64 (SPKI DER)".to_owned()
            })?;
            spki_key(&der)?
        };
        VerifyingKey::new(key)
    }

    /// Whether `signature` (base64) is a valid SHA256withRSA signature of `bytes`.
    pub fn verify(&self, bytes: &[u8], signature: &str) -> bool {
        let compact: String = signature.chars().filter(|c| !c.is_whitespace()).collect();
        let Ok(signature) = STANDARD.decode(compact) else {
            return false;
        };
        // PayBy chooses its key size; 1024 bits and up verify, as they did before.
        UnparsedPublicKey::new(&RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY, &*self.1)
            .verify(bytes, &signature)
            .is_ok()
    }
}

/// Signing failed inside AWS-LC (it does not say why; with a key that loaded, it does not
/// happen in practice).
#[derive(Debug, thiserror::Error)]
#[error("RSA signing failed")]
pub struct SignError;

fn spki_key(der: &[u8]) -> Result<RsaPublicKey, String> {
    let info = SubjectPublicKeyInfoRef::try_from(der)
        .map_err(|e| format!("not a readable public key (SPKI): {e}"))?;
    if info.algorithm.oid != rsa::pkcs1::ALGORITHM_OID {
        return Err(format!(
            "not an RSA public key (algorithm {})",
            info.algorithm.oid
        ));
    }
    RsaPublicKey::try_from(info).map_err(|e| format!("not a readable RSA public key: {e}"))
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
}

//! Certificate signing requests (PKCS#10) for `pki sign`: the signature is
//! checked (the request was made by the holder of the key), and only the
//! subject's common name and the public key are taken from it. Whatever else
//! the request asks for (extensions, other name parts) is ignored: the CA
//! decides what a client certificate holds, as `pki issue` does.

use std::path::Path;

use rcgen::{PublicKeyData, SubjectPublicKeyInfo};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use super::error::PkiError;
use super::index::hex;

/// RSA keys shorter than this are refused (TLS peers refuse them too).
const MIN_RSA_BITS: usize = 2048;

/// What `sign` takes from a request.
pub(crate) struct Request {
    /// The subject's common name, not yet checked against the identity rule.
    pub identity: String,
    /// The public key to certify.
    pub key: SubjectPublicKeyInfo,
    /// The same, SubjectPublicKeyInfo DER in hex (as the index keeps keys).
    pub key_hex: String,
}

/// Reads and checks the request at `path`.
pub(crate) fn read(path: &Path) -> Result<Request, PkiError> {
    let bytes = std::fs::read(path).map_err(|e| PkiError::io(path, e))?;
    parse(path, &bytes)
}

/// Checks a request (PEM); `path` names it in errors.
pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<Request, PkiError> {
    let bad = |reason: String| PkiError::InvalidRequest {
        path: path.to_path_buf(),
        reason,
    };
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(bytes).map_err(|e| bad(format!("not a PEM file: {e}")))?;
    if !matches!(
        pem.label.as_str(),
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST"
    ) {
        return Err(bad(format!(
            "expected a CERTIFICATE REQUEST, found {:?} (send the .csr that \
             `twoway request` wrote, never the .key)",
            pem.label
        )));
    }
    parse_der(path, &pem.contents)
}

/// Checks a request (DER); `path` names it in errors.
fn parse_der(path: &Path, der: &[u8]) -> Result<Request, PkiError> {
    let bad = |reason: String| PkiError::InvalidRequest {
        path: path.to_path_buf(),
        reason,
    };
    let (_, csr) = X509CertificationRequest::from_der(der)
        .map_err(|e| bad(format!("not a PKCS#10 certificate request: {e}")))?;
    csr.verify_signature().map_err(|_| {
        bad("its signature does not verify: it was not made with the key it names".into())
    })?;
    let info = &csr.certification_request_info;
    let mut names = info.subject.iter_common_name();
    let identity = match (names.next(), names.next()) {
        (Some(cn), None) => cn
            .as_str()
            .map_err(|_| bad("its common name (CN) is not a text string".into()))?
            .to_owned(),
        (None, _) => return Err(bad("its subject has no common name (CN)".into())),
        (Some(_), Some(_)) => return Err(bad("its subject has more than one common name".into())),
    };
    let key = SubjectPublicKeyInfo::from_der(info.subject_pki.raw)
        .map_err(|e| bad(format!("unusable public key: {e}")))?;
    check_key(path, &key, &info.subject_pki)?;
    let key_hex = hex(&key.subject_public_key_info());
    Ok(Request {
        identity,
        key,
        key_hex,
    })
}

/// Accepts ECDSA P-256 and P-384, Ed25519, and RSA of 2048 bits or more;
/// `path` names the request in errors.
fn check_key(
    path: &Path,
    key: &SubjectPublicKeyInfo,
    raw: &x509_parser::x509::SubjectPublicKeyInfo<'_>,
) -> Result<(), PkiError> {
    let refused = |reason: String| PkiError::InvalidRequest {
        path: path.to_path_buf(),
        reason,
    };
    let alg = key.algorithm();
    if [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ED25519,
    ]
    .contains(&alg)
    {
        return Ok(());
    }
    if let Ok(x509_parser::public_key::PublicKey::RSA(rsa)) = raw.parsed() {
        let bits = rsa.key_size();
        return if bits >= MIN_RSA_BITS {
            Ok(())
        } else {
            Err(refused(format!(
                "its RSA key has {bits} bits; at least {MIN_RSA_BITS} are needed"
            )))
        };
    }
    Err(refused(format!(
        "its key type ({alg:?}) is not accepted: use ECDSA P-256 (what `twoway request` \
         makes), P-384, Ed25519 or RSA of {MIN_RSA_BITS} bits or more"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    fn request_for(cn: Option<&str>, key: &KeyPair) -> String {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.serialize_request(key).unwrap().pem().unwrap()
    }

    #[test]
    fn takes_the_common_name_and_the_key() {
        let key = KeyPair::generate().unwrap();
        let r = parse(
            Path::new("a.csr"),
            request_for(Some("alice"), &key).as_bytes(),
        )
        .unwrap();
        assert_eq!(r.identity, "alice");
        assert_eq!(r.key_hex, hex(&key.subject_public_key_info()));
    }

    #[test]
    fn a_tampered_request_is_refused() {
        let key = KeyPair::generate().unwrap();
        let pem = request_for(Some("alice"), &key);
        let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        // Change one letter of the CN inside the signed part.
        let mut der = parsed.contents.clone();
        let at = der.windows(5).position(|w| w == b"alice").unwrap();
        der[at] = b'm';
        let e = parse_der(Path::new("a.csr"), &der)
            .err()
            .expect("a forged request must be refused");
        assert!(e.to_string().contains("signature does not verify"), "{e}");
        assert!(parse_der(Path::new("a.csr"), &parsed.contents).is_ok());
    }

    #[test]
    fn refuses_keys_certificates_and_nameless_requests() {
        let key = KeyPair::generate().unwrap();
        let e = parse(Path::new("a.key"), key.serialize_pem().as_bytes())
            .err()
            .unwrap();
        assert!(e.to_string().contains("never the .key"), "{e}");
        let e = parse(Path::new("a.csr"), request_for(None, &key).as_bytes())
            .err()
            .unwrap();
        assert!(e.to_string().contains("no common name"), "{e}");
        let e = parse(Path::new("a.csr"), b"hello").err().unwrap();
        assert!(e.to_string().starts_with("a.csr: "), "{e}");
    }
}

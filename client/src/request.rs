//! `twoway request`: a new private key and a certificate signing request
//! (PKCS#10) for an identity, made on this machine. The key stays here; the
//! request goes to the administrator, whose `twoway-server pki sign` returns a
//! certificate and a client config that points at this key.

use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use twoway_common::atomic_file::{write_atomic, write_new_atomic};
use zeroize::Zeroizing;

use crate::error::ClientError;

/// Mode of the private key file.
const KEY_MODE: u32 = 0o600;
/// Mode of the request (public).
const CSR_MODE: u32 = 0o644;
/// Mode of a folder `request` creates (it holds the key).
const DIR_MODE: u32 = 0o700;

/// The files `request` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    /// ID.key, the private key (0600).
    pub key: PathBuf,
    /// ID.csr, the request to send to the administrator.
    pub csr: PathBuf,
}

/// Makes `out/ID.key` (ECDSA P-256, as the built-in PKI's own keys, PKCS#8
/// PEM) and `out/ID.csr` (subject CN = ID). Never overwrites a key.
pub fn request(identity: &str, out: &Path) -> Result<Requested, ClientError> {
    twoway_common::identity::name::check(identity).map_err(|reason| ClientError::IdentityName {
        name: identity.to_owned(),
        reason,
    })?;
    let key_path = out.join(format!("{identity}.key"));
    let csr_path = out.join(format!("{identity}.csr"));
    if key_path.symlink_metadata().is_ok() {
        return Err(ClientError::KeyExists(key_path));
    }
    let (key_pem, csr_pem) = make(identity)?;
    if !out.is_dir() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(out)
            .map_err(|source| file(out, source))?;
    }
    write_new_atomic(&key_path, key_pem.as_bytes(), KEY_MODE)
        .map_err(|source| file(&key_path, source))?;
    if let Err(e) = write_atomic(&csr_path, csr_pem.as_bytes(), CSR_MODE) {
        // Without its request the new key is of no use: leave nothing behind.
        let _ = std::fs::remove_file(&key_path);
        return Err(file(&csr_path, e));
    }
    Ok(Requested {
        key: key_path,
        csr: csr_path,
    })
}

/// A file or folder that could not be written.
fn file(path: &Path, source: std::io::Error) -> ClientError {
    ClientError::File {
        what: "",
        path: path.to_owned(),
        source,
    }
}

/// A new key and a request for `identity`, both PEM.
fn make(identity: &str) -> Result<(Zeroizing<String>, String), ClientError> {
    let internal = |what, source| ClientError::Key { what, source };
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| internal("generating the key", e))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, identity);
    params.distinguished_name = dn;
    let csr = params
        .serialize_request(&key)
        .map_err(|e| internal("making the request", e))?;
    let csr_pem = csr.pem().map_err(|e| internal("encoding the request", e))?;
    Ok((Zeroizing::new(key.serialize_pem()), csr_pem))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use x509_parser::prelude::FromDer;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn writes_a_private_key_and_a_signed_request_for_the_identity() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("keys");
        let r = request("alice@example.com", &out).unwrap();
        assert_eq!(r.key, out.join("alice@example.com.key"));
        assert_eq!(
            (mode(&r.key), mode(&r.csr), mode(&out)),
            (0o600, 0o644, 0o700)
        );

        let key = KeyPair::from_pem(&std::fs::read_to_string(&r.key).unwrap()).unwrap();
        let text = std::fs::read(&r.csr).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(&text).unwrap();
        assert_eq!(pem.label, "CERTIFICATE REQUEST");
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents)
                .unwrap();
        csr.verify_signature().unwrap();
        let info = &csr.certification_request_info;
        let cn = info.subject.iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "alice@example.com");
        // The request is for the key written beside it.
        assert_eq!(
            info.subject_pki.subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
    }

    #[test]
    fn never_overwrites_a_key_and_checks_the_name() {
        let tmp = tempfile::tempdir().unwrap();
        let first = request("bob", tmp.path()).unwrap();
        let before = std::fs::read(&first.key).unwrap();
        let e = request("bob", tmp.path()).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("never overwritten"), "{e}");
        assert_eq!(std::fs::read(&first.key).unwrap(), before);
        for bad in ["../x", "ca", ""] {
            let e = request(bad, tmp.path()).unwrap_err();
            assert!(e.to_string().contains("invalid identity name"), "{e}");
        }
    }
}

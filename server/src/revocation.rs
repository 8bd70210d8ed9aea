//! Reads the serial numbers on a CRL, so a reload can close the live sessions
//! of revoked certificates (rustls checks the CRL only at handshake time).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateRevocationListDer;
use x509_parser::error::X509Error;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

/// Why the serials of a CRL file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    /// The file could not be read, or holds no valid PEM.
    #[error("CRL {}: {source}", path.display())]
    Pem {
        /// The CRL file.
        path: PathBuf,
        /// What went wrong.
        source: rustls::pki_types::pem::Error,
    },
    /// A PEM block is not a CRL.
    #[error("CRL {}: not a certificate revocation list: {source}", path.display())]
    Parse {
        /// The CRL file.
        path: PathBuf,
        /// What the parser said.
        source: x509_parser::nom::Err<X509Error>,
    },
}

/// Serial numbers (lowercase hex, no separators) revoked by the CRL file.
pub fn revoked_serials(path: &Path) -> Result<HashSet<String>, CrlError> {
    let pem = |source| CrlError::Pem {
        path: path.to_owned(),
        source,
    };
    let mut serials = HashSet::new();
    for der in CertificateRevocationListDer::pem_file_iter(path).map_err(pem)? {
        let der = der.map_err(pem)?;
        let (_, crl) =
            CertificateRevocationList::from_der(&der).map_err(|source| CrlError::Parse {
                path: path.to_owned(),
                source,
            })?;
        for revoked in crl.iter_revoked_certificates() {
            serials.insert(revoked.raw_serial_as_string().replace(':', ""));
        }
    }
    Ok(serials)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_crl_is_an_error_naming_the_file() {
        let (dir, not_a_crl) = twoway_common::temp_path::temp_path("garbage.pem");
        let pem = "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n";
        std::fs::write(&not_a_crl, pem).unwrap();
        for (path, unparsable) in [(dir.path().join("missing.pem"), false), (not_a_crl, true)] {
            let e = revoked_serials(&path).unwrap_err();
            assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}");
            assert_eq!(matches!(e, CrlError::Parse { .. }), unparsable, "{e}");
        }
    }
}

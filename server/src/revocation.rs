//! Reads the serial numbers on a CRL, so a reload can close the live sessions
//! of revoked certificates (rustls checks the CRL only at handshake time).

use std::collections::HashSet;
use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateRevocationListDer;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

/// Serial numbers (lowercase hex, no separators) revoked by the CRL file.
pub fn revoked_serials(path: &Path) -> Result<HashSet<String>, String> {
    let mut serials = HashSet::new();
    let iter = CertificateRevocationListDer::pem_file_iter(path).map_err(|e| e.to_string())?;
    for der in iter {
        let der = der.map_err(|e| e.to_string())?;
        let (_, crl) = CertificateRevocationList::from_der(&der).map_err(|e| e.to_string())?;
        for revoked in crl.iter_revoked_certificates() {
            serials.insert(revoked.raw_serial_as_string().replace(':', ""));
        }
    }
    Ok(serials)
}

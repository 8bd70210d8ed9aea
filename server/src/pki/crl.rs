//! crl.pem: the certificate revocation list the server enforces. Reading it
//! back lets every operation reconcile the index with it, and lets a new CRL
//! keep every entry of the old one, so that entries are never lost.

use std::collections::BTreeMap;
use std::path::Path;

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{parse_x509_pem, FromDer};
use x509_parser::revocation_list::CertificateRevocationList;

use super::ca::Ca;
use super::error::PkiError;
use super::index::{hex, unhex};
use super::CRL_VALIDITY_DAYS;

/// What a CRL on disk says.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CrlContents {
    /// Its CRL number.
    pub number: u64,
    /// Serial (lowercase hex) → revocation time of every entry.
    pub revoked: BTreeMap<String, OffsetDateTime>,
}

/// Makes a CRL numbered `number` listing `revoked` (serial hex → revocation
/// time), valid from `now` for [`CRL_VALIDITY_DAYS`] days. Returns its PEM.
///
/// Entries carry no reason code: RFC 5280 §5.3.1 asks for the extension to be
/// absent rather than "unspecified", and `pki revoke` does not ask for a reason.
pub(crate) fn build(
    ca: &Ca,
    number: u64,
    revoked: &BTreeMap<String, OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<String, PkiError> {
    let mut revoked_certs = Vec::with_capacity(revoked.len());
    for (serial, at) in revoked {
        let bytes = unhex(serial).ok_or_else(|| PkiError::InvalidSerial(serial.clone()))?;
        revoked_certs.push(RevokedCertParams {
            serial_number: SerialNumber::from(bytes),
            revocation_time: *at,
            reason_code: None,
            invalidity_date: None,
        });
    }
    let params = CertificateRevocationListParams {
        this_update: now,
        next_update: now + Duration::days(i64::from(CRL_VALIDITY_DAYS)),
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params
        .signed_by(ca.issuer())
        .map_err(|e| PkiError::crypto("signing the CRL", e))?;
    crl.pem()
        .map_err(|e| PkiError::crypto("encoding the CRL as PEM", e))
}

/// Reads the CRL at `path`: its number and its entries.
pub(crate) fn read(path: &Path) -> Result<CrlContents, PkiError> {
    let bytes = std::fs::read(path).map_err(|e| PkiError::io(path, e))?;
    let (_, pem) =
        parse_x509_pem(&bytes).map_err(|e| PkiError::parse(path, format!("not a PEM CRL: {e}")))?;
    if pem.label != "X509 CRL" {
        return Err(PkiError::parse(
            path,
            format!("expected an X509 CRL, found {:?}", pem.label),
        ));
    }
    let (_, crl) = CertificateRevocationList::from_der(&pem.contents)
        .map_err(|e| PkiError::parse(path, format!("not an X.509 CRL: {e}")))?;
    let number = match crl.crl_number() {
        Some(n) => to_u64(&n.to_bytes_be())
            .ok_or_else(|| PkiError::parse(path, "CRL number does not fit in 64 bits"))?,
        None => return Err(PkiError::parse(path, "the CRL has no CRL number")),
    };
    let revoked = crl
        .iter_revoked_certificates()
        .map(|entry| {
            (
                hex(&entry.serial().to_bytes_be()),
                entry.revocation_date.to_datetime(),
            )
        })
        .collect();
    Ok(CrlContents { number, revoked })
}

/// A big-endian unsigned integer as u64, if it fits.
fn to_u64(bytes: &[u8]) -> Option<u64> {
    let digits: &[u8] = match bytes.iter().position(|b| *b != 0) {
        Some(first) => &bytes[first..],
        None => &[],
    };
    if digits.len() > 8 {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::index::now;
    use twoway_common::temp_path::temp_path;

    #[test]
    fn writes_and_reads_back_entries_and_number() {
        let (_dir, path) = temp_path("crl.pem");
        let t = now();
        let (ca, _) = Ca::create("vpn", t).unwrap();

        std::fs::write(&path, build(&ca, 1, &BTreeMap::new(), t).unwrap()).unwrap();
        let empty = read(&path).unwrap();
        assert_eq!(empty.number, 1);
        assert!(empty.revoked.is_empty());

        let mut revoked = BTreeMap::new();
        revoked.insert("4a0102030405060708090a0b0c0d0e0f".to_string(), t);
        std::fs::write(&path, build(&ca, 300, &revoked, t).unwrap()).unwrap();
        let back = read(&path).unwrap();
        assert_eq!(back.number, 300);
        assert_eq!(back.revoked, revoked);
    }

    #[test]
    fn big_endian_to_u64() {
        assert_eq!(to_u64(&[]), Some(0));
        assert_eq!(to_u64(&[0, 0, 1, 0]), Some(256));
        assert_eq!(to_u64(&[1; 9]), None);
        assert_eq!(
            to_u64(&[0, 1, 2, 3, 4, 5, 6, 7, 8]),
            Some(0x0102030405060708)
        );
    }

    #[test]
    fn refuses_a_certificate_as_crl() {
        let (_dir, path) = temp_path("crl.pem");
        let (_, issued) = Ca::create("vpn", now()).unwrap();
        std::fs::write(&path, issued.cert_pem).unwrap();
        assert!(matches!(read(&path), Err(PkiError::Parse { .. })));
    }
}

//! Certificate building: the CA, the server certificate and client
//! certificates, with random 16-byte serial numbers. Keys made here are
//! ECDSA P-256 (as `twoway request` makes them); a client certificate can
//! also certify a key made elsewhere.

use std::net::IpAddr;
use std::path::Path;

use rcgen::{
    string::Ia5String, BasicConstraints, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
    SerialNumber, SubjectPublicKeyInfo, PKCS_ECDSA_P256_SHA256,
};
use time::{Duration, OffsetDateTime};
use twoway_common::key_file::{self, KeyFileError};
use zeroize::Zeroizing;

use super::error::PkiError;
use super::index::{hex, rfc3339};
use super::names::{email_of, ServerName};
use super::{CA_CERT_FILE, CA_KEY_FILE, CLOCK_SKEW, DEFAULT_DAYS_CA};

/// Length of a certificate serial number, in bytes.
const SERIAL_LEN: usize = 16;

/// The CA: its signing key and what the certificates it signs need to know.
pub(crate) struct Ca {
    /// Subject, key identifier and key of the CA certificate.
    issuer: Issuer<'static, KeyPair>,
    /// End of the CA certificate's validity; nothing it signs outlives it.
    not_after: OffsetDateTime,
}

/// A freshly made certificate, and its private key when it was made here.
pub(crate) struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM; empty for a key made elsewhere (a CSR, `renew`).
    pub key_pem: Zeroizing<String>,
    /// The certified public key, SubjectPublicKeyInfo DER in hex (as the index keeps it).
    pub public_key: String,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

impl Ca {
    /// Makes a new self-signed CA "twoway CA NAME", valid for
    /// [`DEFAULT_DAYS_CA`] days. Returns the CA and its certificate + key.
    pub fn create(name: &str, now: OffsetDateTime) -> Result<(Ca, Issued), PkiError> {
        let key = new_key("the CA key")?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(&format!("twoway CA {name}"));
        // Constrained(0): this CA signs end-entity certificates only.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + Duration::days(i64::from(DEFAULT_DAYS_CA));
        params.serial_number = Some(random_serial()?);
        let serial = serial_hex(&params)?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| PkiError::crypto("signing the CA certificate", e))?;
        let issued = Issued {
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
            public_key: hex(&key.subject_public_key_info()),
            serial,
            not_after: params.not_after,
        };
        let ca = Ca {
            not_after: params.not_after,
            issuer: Issuer::new(params, key),
        };
        Ok((ca, issued))
    }

    /// Loads DIR/ca.pem and DIR/ca.key, checking that they belong together.
    pub fn load(dir: &Path) -> Result<Ca, PkiError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_pem =
            std::fs::read_to_string(&cert_path).map_err(|e| PkiError::io(&cert_path, e))?;
        let key_pem = match key_file::read(&key_path) {
            Ok(pem) => String::from_utf8(pem)
                .map_err(|_| PkiError::parse(&key_path, "not a PEM private key"))?,
            Err(KeyFileError::Read { source, .. }) => return Err(PkiError::io(&key_path, source)),
            Err(KeyFileError::Exposed(e)) => return Err(e.into()),
        };
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| PkiError::crypto(format!("reading {}", key_path.display()), e))?;

        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
            .map_err(|e| PkiError::parse(&cert_path, format!("not a PEM certificate: {e}")))?;
        let x509 = pem
            .parse_x509()
            .map_err(|e| PkiError::parse(&cert_path, format!("not an X.509 certificate: {e}")))?;
        if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(PkiError::CaKeyMismatch {
                key: key_path,
                cert: cert_path,
            });
        }
        let not_after = x509.validity().not_after.to_datetime();
        let issuer = Issuer::from_ca_cert_der(&pem.contents.as_slice().into(), key)
            .map_err(|e| PkiError::crypto(format!("reading {}", cert_path.display()), e))?;
        Ok(Ca { issuer, not_after })
    }

    /// The issuer, to sign a CRL with.
    pub fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// Makes the server certificate: CN = name, SAN = name (DNS or IP) plus
    /// every address in `ips`, EKU serverAuth.
    pub fn server_cert(
        &self,
        name: &ServerName,
        ips: &[IpAddr],
        days: u32,
        now: OffsetDateTime,
    ) -> Result<Issued, PkiError> {
        let mut sans = Vec::new();
        let cn = match name {
            ServerName::Dns(dns) => {
                let ia5 = Ia5String::try_from(dns.as_str())
                    .map_err(|e| PkiError::crypto(format!("server name {dns:?}"), e))?;
                sans.push(SanType::DnsName(ia5));
                dns.clone()
            }
            ServerName::Ip(ip) => {
                sans.push(SanType::IpAddress(*ip));
                ip.to_string()
            }
        };
        for ip in ips {
            let san = SanType::IpAddress(*ip);
            if !sans.contains(&san) {
                sans.push(san);
            }
        }
        let mut params = self.leaf_params(&cn, days, now)?;
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params, "the server certificate")
    }

    /// Makes a client certificate and its key: CN = identity, EKU
    /// clientAuth, and SAN rfc822Name = identity when the identity is an
    /// email address.
    pub fn client_cert(
        &self,
        identity: &str,
        days: u32,
        now: OffsetDateTime,
    ) -> Result<Issued, PkiError> {
        let params = self.client_params(identity, days, now)?;
        self.sign(params, &format!("the certificate of {identity:?}"))
    }

    /// Makes a client certificate as [`Ca::client_cert`] does, for a public
    /// key made elsewhere (a certificate request, or `renew`).
    pub fn client_cert_for(
        &self,
        identity: &str,
        key: &SubjectPublicKeyInfo,
        days: u32,
        now: OffsetDateTime,
    ) -> Result<Issued, PkiError> {
        let params = self.client_params(identity, days, now)?;
        let what = format!("the certificate of {identity:?}");
        let cert = params
            .signed_by(key, &self.issuer)
            .map_err(|e| PkiError::crypto(format!("signing {what}"), e))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: Zeroizing::default(),
            public_key: hex(&key.subject_public_key_info()),
            serial: serial_hex(&params)?,
            not_after: params.not_after,
        })
    }

    /// What every client certificate holds, whoever made its key.
    fn client_params(
        &self,
        identity: &str,
        days: u32,
        now: OffsetDateTime,
    ) -> Result<CertificateParams, PkiError> {
        let mut params = self.leaf_params(identity, days, now)?;
        if let Some(email) = email_of(identity) {
            let ia5 = Ia5String::try_from(email)
                .map_err(|e| PkiError::crypto(format!("identity {identity:?}"), e))?;
            params.subject_alt_names = vec![SanType::Rfc822Name(ia5)];
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        Ok(params)
    }

    /// Common parameters of server and client certificates.
    fn leaf_params(
        &self,
        cn: &str,
        days: u32,
        now: OffsetDateTime,
    ) -> Result<CertificateParams, PkiError> {
        if days == 0 {
            return Err(PkiError::InvalidDays("--days must be at least 1".into()));
        }
        let not_after = now + Duration::days(i64::from(days));
        if not_after > self.not_after {
            return Err(PkiError::InvalidDays(format!(
                "{days} days would run past the CA's expiry ({})",
                rfc3339(self.not_after)
            )));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(cn);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = now - CLOCK_SKEW;
        params.not_after = not_after;
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        Ok(params)
    }

    /// Generates a key and signs `params` for it.
    fn sign(&self, params: CertificateParams, what: &str) -> Result<Issued, PkiError> {
        let key = new_key(what)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| PkiError::crypto(format!("signing {what}"), e))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
            public_key: hex(&key.subject_public_key_info()),
            serial: serial_hex(&params)?,
            not_after: params.not_after,
        })
    }
}

/// A new ECDSA P-256 key.
fn new_key(what: &str) -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| PkiError::crypto(format!("generating the key for {what}"), e))
}

/// A distinguished name holding only a common name.
fn common_name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// A random positive serial of [`SERIAL_LEN`] bytes. The top bit is cleared
/// (positive) and the next one set, so that the DER encoding is always
/// exactly 16 bytes and the hex in the index matches what parsers print.
fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; SERIAL_LEN];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| PkiError::Random)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// The serial of `params` in hex (always set by this module).
fn serial_hex(params: &CertificateParams) -> Result<String, PkiError> {
    params
        .serial_number
        .as_ref()
        .map(|s| hex(s.as_ref()))
        .ok_or(PkiError::Random)
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    #[test]
    fn serials_are_positive_random_and_sixteen_bytes() {
        let a = random_serial().unwrap().to_bytes();
        let b = random_serial().unwrap().to_bytes();
        assert_eq!(a.len(), SERIAL_LEN);
        assert!(a[0] < 0x80 && a[0] >= 0x40);
        assert_ne!(a, b);
    }

    #[test]
    fn client_cert_is_signed_by_the_ca() {
        let now = super::super::index::now();
        let (ca, ca_issued) = Ca::create("vpn.example.com", now).unwrap();
        let issued = ca.client_cert("alice@example.com", 30, now).unwrap();

        let (_, ca_pem) = parse_x509_pem(ca_issued.cert_pem.as_bytes()).unwrap();
        let ca_x509 = ca_pem.parse_x509().unwrap();
        let (_, pem) = parse_x509_pem(issued.cert_pem.as_bytes()).unwrap();
        let x509 = pem.parse_x509().unwrap();
        assert_eq!(x509.issuer(), ca_x509.subject());
        x509.verify_signature(Some(ca_x509.public_key())).unwrap();
        assert_eq!(hex(x509.raw_serial()), issued.serial);
        let san = x509.subject_alternative_name().unwrap().unwrap();
        assert!(san
            .value
            .general_names
            .contains(&GeneralName::RFC822Name("alice@example.com")));
    }

    #[test]
    fn validity_is_bounded() {
        let now = super::super::index::now();
        let (ca, _) = Ca::create("vpn", now).unwrap();
        assert!(matches!(
            ca.client_cert("alice", 0, now),
            Err(PkiError::InvalidDays(_))
        ));
        assert!(matches!(
            ca.client_cert("alice", DEFAULT_DAYS_CA + 1, now),
            Err(PkiError::InvalidDays(_))
        ));
    }
}

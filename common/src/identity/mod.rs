//! The client's identity, read from its verified leaf certificate by the
//! configured source field; and which names the built-in PKI may give one
//! ([`name`]).

use std::fmt;

use serde::{Deserialize, Serialize};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

pub mod name;

/// Which certificate field names the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdentitySource {
    /// The subject's common name (default).
    #[default]
    Cn,
    /// The first rfc822Name (e-mail) subject alternative name.
    SanEmail,
    /// The first DNS subject alternative name.
    SanDns,
    /// The first URI subject alternative name.
    SanUri,
    /// The SHA-256 fingerprint of the whole certificate, lowercase hex.
    Fingerprint,
}

impl fmt::Display for IdentitySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cn => "cn",
            Self::SanEmail => "san-email",
            Self::SanDns => "san-dns",
            Self::SanUri => "san-uri",
            Self::Fingerprint => "fingerprint",
        })
    }
}

/// Why no identity could be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The DER could not be parsed (should not happen after verification).
    #[error("certificate cannot be parsed: {0}")]
    Unparsable(String),
    /// The configured field is absent.
    #[error("certificate has no {0} to take the identity from")]
    Missing(IdentitySource),
    /// The field is present but not usable as an identity.
    #[error(
        "certificate {0} is not a usable identity (empty, too long or with control characters)"
    )]
    Unusable(IdentitySource),
}

/// Longest identity accepted from a certificate, whatever its source: an
/// e-mail or URI name of an outside CA may be longer than the names the
/// built-in PKI gives ([`name::MAX_LEN`]).
pub const MAX_IDENTITY_LEN: usize = 256;

/// Reads the identity from a verified leaf certificate (DER).
pub fn extract(source: IdentitySource, der: &[u8]) -> Result<String, IdentityError> {
    if source == IdentitySource::Fingerprint {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
        return Ok(digest.as_ref().iter().map(|b| format!("{b:02x}")).collect());
    }
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| IdentityError::Unparsable(e.to_string()))?;
    let value = match source {
        IdentitySource::Cn => cert
            .subject()
            .iter_common_name()
            .next()
            .map(|cn| cn.as_str().map(str::to_owned))
            .transpose()
            .map_err(|_| IdentityError::Unusable(source))?,
        _ => san(&cert, source),
    };
    let value = value.ok_or(IdentityError::Missing(source))?;
    if value.is_empty() || value.len() > MAX_IDENTITY_LEN || value.chars().any(char::is_control) {
        return Err(IdentityError::Unusable(source));
    }
    Ok(value)
}

fn san(cert: &X509Certificate<'_>, source: IdentitySource) -> Option<String> {
    let ext = cert.subject_alternative_name().ok().flatten()?;
    ext.value
        .general_names
        .iter()
        .find_map(|name| match (source, name) {
            (IdentitySource::SanEmail, GeneralName::RFC822Name(v))
            | (IdentitySource::SanDns, GeneralName::DNSName(v))
            | (IdentitySource::SanUri, GeneralName::URI(v)) => Some((*v).to_owned()),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    // A self-signed certificate with CN=alice, SAN email alice@example.com,
    // DNS alice.example.com and URI spiffe://example/alice (made with openssl).
    const ALICE: &str = include_str!("../../testdata/alice-sans.pem");
    // CN only, no SAN.
    const BARE: &str = include_str!("../../testdata/bare.pem");

    fn der(pem: &str) -> Vec<u8> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[test]
    fn each_source_reads_its_field() {
        let d = der(ALICE);
        assert_eq!(extract(IdentitySource::Cn, &d).unwrap(), "alice");
        assert_eq!(
            extract(IdentitySource::SanEmail, &d).unwrap(),
            "alice@example.com"
        );
        assert_eq!(
            extract(IdentitySource::SanDns, &d).unwrap(),
            "alice.example.com"
        );
        assert_eq!(
            extract(IdentitySource::SanUri, &d).unwrap(),
            "spiffe://example/alice"
        );
        let fp = extract(IdentitySource::Fingerprint, &d).unwrap();
        assert_eq!(fp.len(), 64);
        assert!(fp.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn missing_field_is_a_clear_refusal() {
        let d = der(BARE);
        assert_eq!(extract(IdentitySource::Cn, &d).unwrap(), "bare");
        let err = extract(IdentitySource::SanEmail, &d).unwrap_err();
        assert_eq!(err, IdentityError::Missing(IdentitySource::SanEmail));
        assert_eq!(
            err.to_string(),
            "certificate has no san-email to take the identity from"
        );
    }

    #[test]
    fn garbage_is_unparsable() {
        assert!(matches!(
            extract(IdentitySource::Cn, b"not a certificate"),
            Err(IdentityError::Unparsable(_))
        ));
    }

    #[test]
    fn source_names_parse_from_config() {
        #[derive(Deserialize)]
        struct T {
            source: IdentitySource,
        }
        let t: T = toml::from_str(r#"source = "san-email""#).unwrap();
        assert_eq!(t.source, IdentitySource::SanEmail);
        assert!(toml::from_str::<T>(r#"source = "serial""#).is_err());
    }
}

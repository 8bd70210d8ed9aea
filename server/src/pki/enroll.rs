//! Certificates for keys the PKI does not make: `sign` certifies the key of
//! a request made on the client (`twoway request`; the key never leaves the
//! client), `renew` certifies the key of a live certificate again, for a new
//! period.
//!
//! Rules, as easy-rsa has them: `sign` refuses an identity that holds a
//! valid certificate (revoke it first, or renew it); an expired or revoked
//! one does not stand in the way. `renew` leaves the old certificate alone:
//! it stays valid until it expires, so the client keeps working until the
//! new certificate is installed; `pki revoke` revokes every live certificate
//! of an identity, the renewed ones included.

use std::path::{Path, PathBuf};

use rcgen::{KeyPair, PublicKeyData, SubjectPublicKeyInfo};
use twoway_common::key_file::{self, KeyFileError};
use x509_parser::prelude::{parse_x509_pem, FromDer, X509Certificate};
use zeroize::Zeroizing;

use super::ca::Ca;
use super::client_files::{read_ca, ClientFiles, ConfigWrite};
use super::files::{ensure_dir, exists, put_key};
use super::index::{hex, now, unhex, Index};
use super::{csr, load_reconciled, record, refuse_valid, validate_identity, PkiError};

/// What `pki sign` needs.
#[derive(Debug, Clone)]
pub struct SignOptions {
    /// The PKI folder.
    pub dir: PathBuf,
    /// The request (IDENTITY.csr from `twoway request`).
    pub csr: PathBuf,
    /// Validity of the certificate, in days.
    pub days: u32,
    /// Where to write the client's files; `None` means `dir`.
    pub out: Option<PathBuf>,
    /// The identity the administrator expects; the request's CN must be it.
    pub identity: Option<String>,
}

/// A certificate made by `sign` or `renew`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    /// The identity certified.
    pub identity: String,
    /// Serial number of the new certificate, lowercase hex.
    pub serial: String,
    /// The files written.
    pub written: Vec<PathBuf>,
}

/// Certifies the key of the request at `opts.csr` for the identity in its
/// CN (checked with the rule of `pki issue`), with the profile of `pki
/// issue`, and writes OUT/IDENTITY.pem, OUT/IDENTITY.toml pointing at
/// IDENTITY.key next to it (where the client keeps its key), and a copy of
/// ca.pem when OUT is not DIR.
pub fn sign(opts: &SignOptions) -> Result<Enrolled, PkiError> {
    let request = csr::read(&opts.csr)?;
    let identity = request.identity.as_str();
    validate_identity(identity)?;
    // The CN is the requester's word: a leaked key's owner, revoked, could
    // ask again under a colleague's file name. The administrator's word wins.
    if let Some(expected) = opts.identity.as_deref().filter(|e| *e != identity) {
        return Err(PkiError::InvalidIdentity {
            name: identity.to_owned(),
            reason: if expected.is_empty() {
                "the request names an identity, --identity is empty"
            } else {
                "the request's CN is not the identity given with --identity"
            },
        });
    }
    let dir = opts.dir.as_path();
    let (mut index, _) = load_reconciled(dir, true)?;
    refuse_valid(&index, identity)?;
    // A key certified before may be one that was revoked because it leaked.
    if let Some(earlier) = index.with_key(&request.key_hex) {
        return Err(PkiError::KeyReused {
            identity: earlier.identity.clone(),
            serial: earlier.serial.clone(),
        });
    }
    let out = opts.out.as_deref().unwrap_or(dir);
    ensure_dir(out)?;
    // The config points at IDENTITY.key beside it: if OUT holds a key of
    // that name, it must be the request's, or the config would not work.
    let key_path = out.join(format!("{identity}.key"));
    if exists(&key_path) && public_key_of(&key_path)? != request.key_hex {
        return Err(PkiError::ForeignKey { path: key_path });
    }

    let ca = Ca::load(dir)?;
    let issued = ca.client_cert_for(identity, &request.key, opts.days, now())?;
    record(&mut index, dir, identity, &issued)?;
    let mut written = Vec::new();
    ClientFiles::new(dir, out, &index, identity).write(
        &mut written,
        &issued.cert_pem,
        ConfigWrite::Always,
    )?;
    Ok(Enrolled {
        identity: identity.to_string(),
        serial: issued.serial,
        written,
    })
}

/// A new certificate for the key of `identity`'s newest live certificate
/// (expired or not), valid for `days`. Writes what the identity's client
/// uses: a one-file profile OUT/IDENTITY.toml that holds the key gets the
/// new certificate (and the CA) put into it; otherwise OUT/IDENTITY.pem,
/// a copy of ca.pem when OUT is not DIR, and IDENTITY.toml if there is none.
pub fn renew(
    dir: &Path,
    identity: &str,
    days: u32,
    out: Option<&Path>,
) -> Result<Enrolled, PkiError> {
    validate_identity(identity)?;
    let (mut index, _) = load_reconciled(dir, true)?;
    let out = out.unwrap_or(dir);
    let key_hex = certified_key(&index, dir, out, identity)?;
    let key = unhex(&key_hex)
        .and_then(|der| SubjectPublicKeyInfo::from_der(&der).ok())
        .ok_or_else(|| {
            PkiError::parse(
                &Index::path(dir),
                format!("public_key of {identity:?} is not a usable key"),
            )
        })?;
    ensure_dir(out)?;
    let profile_path = out.join(format!("{identity}.toml"));
    let profile = inline_profile(&profile_path, identity, &key_hex)?;

    let ca = Ca::load(dir)?;
    let issued = ca.client_cert_for(identity, &key, days, now())?;
    record(&mut index, dir, identity, &issued)?;
    let mut written = Vec::new();
    match profile {
        Some(mut table) => {
            let tls = table
                .get_mut("tls")
                .and_then(toml::Value::as_table_mut)
                .ok_or_else(|| PkiError::parse(&profile_path, "no [tls] table"))?;
            tls.insert("cert_pem".into(), issued.cert_pem.clone().into());
            tls.insert("ca_pem".into(), read_ca(dir)?.into());
            let body = Zeroizing::new(
                toml::to_string(&table)
                    .map_err(|e| PkiError::parse(&profile_path, e.to_string()))?,
            );
            let text = Zeroizing::new(format!(
                "# twoway client profile for {identity}, renewed by `twoway-server pki renew` \
                 (serial {}).\n# It holds the private key: keep it mode 0600.\n{}",
                issued.serial,
                body.as_str()
            ));
            put_key(&mut written, &profile_path, &text, true)?;
        }
        None => ClientFiles::new(dir, out, &index, identity).write(
            &mut written,
            &issued.cert_pem,
            ConfigWrite::IfMissing,
        )?,
    }
    Ok(Enrolled {
        identity: identity.to_string(),
        serial: issued.serial,
        written,
    })
}

/// The public key (hex SPKI) of `identity`'s newest live certificate: from
/// the index, or for an entry written before keys were recorded, from its
/// IDENTITY.pem in OUT or DIR (the one with the entry's serial).
fn certified_key(
    index: &Index,
    dir: &Path,
    out: &Path,
    identity: &str,
) -> Result<String, PkiError> {
    let Some(entry) = index.live(identity) else {
        return Err(index.no_live(dir, identity));
    };
    if let Some(key) = &entry.public_key {
        return Ok(key.clone());
    }
    for folder in [out, dir] {
        let Ok(bytes) = std::fs::read(folder.join(format!("{identity}.pem"))) else {
            continue;
        };
        let Ok((_, pem)) = parse_x509_pem(&bytes) else {
            continue;
        };
        let Ok((_, cert)) = X509Certificate::from_der(&pem.contents) else {
            continue;
        };
        if hex(cert.raw_serial()) == entry.serial {
            if let Ok(key) = SubjectPublicKeyInfo::from_der(cert.public_key().raw) {
                return Ok(hex(&key.subject_public_key_info()));
            }
        }
    }
    Err(PkiError::KeyUnknown {
        identity: identity.to_string(),
        serial: entry.serial.clone(),
        dir: out.to_path_buf(),
    })
}

/// The one-file profile at `path`, if there is one that holds a key; that
/// key must be the certified one (`key_hex`).
fn inline_profile(
    path: &Path,
    identity: &str,
    key_hex: &str,
) -> Result<Option<toml::Table>, PkiError> {
    if !exists(path) {
        return Ok(None);
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| PkiError::io(path, e))?);
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| PkiError::parse(path, e.to_string()))?;
    let Some(key_pem) = table
        .get("tls")
        .and_then(|t| t.get("key_pem"))
        .and_then(toml::Value::as_str)
    else {
        return Ok(None);
    };
    let matches =
        KeyPair::from_pem(key_pem).is_ok_and(|key| hex(&key.subject_public_key_info()) == key_hex);
    if !matches {
        return Err(PkiError::ProfileKeyMismatch {
            path: path.to_path_buf(),
            identity: identity.to_string(),
        });
    }
    Ok(Some(table))
}

/// The public key (hex SPKI) of the private key file at `path`.
fn public_key_of(path: &Path) -> Result<String, PkiError> {
    let pem = match key_file::read(path) {
        Ok(pem) => Zeroizing::new(pem),
        Err(KeyFileError::Read { source, .. }) => return Err(PkiError::io(path, source)),
        Err(KeyFileError::Exposed(e)) => return Err(e.into()),
    };
    let text =
        std::str::from_utf8(&pem).map_err(|_| PkiError::parse(path, "not a PEM private key"))?;
    let key = KeyPair::from_pem(text)
        .map_err(|e| PkiError::crypto(format!("reading {}", path.display()), e))?;
    Ok(hex(&key.subject_public_key_info()))
}

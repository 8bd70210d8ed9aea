//! The built-in PKI behind `twoway-server pki`: a CA, the server certificate,
//! client certificates, and the CRL, kept in one folder.
//!
//! Files in DIR: ca.pem, ca.key, server.pem, server.key, crl.pem, index.json
//! (this module's own state), and the example server.toml and policy.toml.
//! Private keys are created with mode 0600 and never overwritten; everything
//! else is replaced atomically, so a crash leaves the old or the new file.
//!
//! Order of writes, chosen so that a crash never leaves a certificate that
//! cannot be revoked or un-revokes one: `issue`, `sign` and `renew` record a
//! certificate in the index before writing it out, and `revoke` writes the
//! CRL before the index (every operation then reconciles the index with the
//! CRL).
//!
//! Keys: `issue` makes the client's key here; `sign` certifies a key made on
//! the client (`twoway request`), which never comes here; `renew` certifies
//! the same key again. The index keeps each certificate's public key.

mod ca;
mod client_files;
mod crl;
mod csr;
mod enroll;
#[cfg(test)]
mod enroll_tests;
mod error;
mod files;
mod index;
mod names;
#[cfg(test)]
mod revoke_tests;
mod templates;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod webpki_tests;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;

use zeroize::Zeroizing;

use self::ca::{Ca, Issued};
use self::client_files::{read_ca, ClientFiles, ConfigWrite};
pub use self::enroll::{renew, sign, Enrolled, SignOptions};
pub use self::error::PkiError;
use self::files::{ensure_dir, exists, put_key, put_public, write_public};
use self::index::{now, rfc3339, Index, IndexEntry};
use self::names::parse_server_name;
pub use self::names::validate_identity;

/// Validity of a new CA certificate, in days (about 10 years).
pub const DEFAULT_DAYS_CA: u32 = 3650;
/// Default validity of the server certificate, in days.
pub const DEFAULT_DAYS_SERVER: u32 = 825;
/// Default validity of a client certificate, in days.
pub const DEFAULT_DAYS_CLIENT: u32 = 365;
/// Validity of each CRL (its nextUpdate), in days; `revoke` writes a fresh one.
pub const CRL_VALIDITY_DAYS: u32 = 365;
/// Default port written into server.toml and client configs.
pub const DEFAULT_PORT: u16 = 4433;
/// Certificates start this long in the past, to tolerate clock skew.
pub const CLOCK_SKEW: time::Duration = time::Duration::hours(1);
/// The CRL number of the empty CRL written by `init`.
pub const FIRST_CRL_NUMBER: u64 = 1;

/// The CA certificate file in DIR.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA private key file in DIR.
pub const CA_KEY_FILE: &str = "ca.key";
/// The server certificate file in DIR.
pub const SERVER_CERT_FILE: &str = "server.pem";
/// The server private key file in DIR.
pub const SERVER_KEY_FILE: &str = "server.key";
/// The CRL file in DIR.
pub const CRL_FILE: &str = "crl.pem";
/// The PKI's state file in DIR.
pub const INDEX_FILE: &str = "index.json";
/// The example server configuration written by `init`.
pub const SERVER_CONFIG_FILE: &str = "server.toml";
/// The example policy written by `init`.
pub const POLICY_FILE: &str = "policy.toml";

/// What `pki init` needs.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The PKI folder, created (0700) if missing.
    pub dir: PathBuf,
    /// The server's name: CN and SAN of its certificate, and what clients check.
    pub name: String,
    /// Addresses added to the server certificate's SAN; the first is what clients dial.
    pub ips: Vec<IpAddr>,
    /// The port the server listens on (server.toml) and clients dial.
    pub port: u16,
    /// Validity of the server certificate, in days.
    pub days: u32,
}

/// What `pki issue` needs.
#[derive(Debug, Clone)]
pub struct IssueOptions {
    /// The PKI folder (holds the CA and index.json).
    pub dir: PathBuf,
    /// The client's identity: the certificate's CN and the file names.
    pub identity: String,
    /// Validity of the client certificate, in days.
    pub days: u32,
    /// Where to write the client's files; `None` means `dir`.
    pub out: Option<PathBuf>,
}

/// One issued client certificate, as `pki list` shows it.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct CertRecord {
    /// The identity (certificate CN).
    pub identity: String,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// End of validity, RFC 3339 UTC.
    pub not_after: String,
    /// Whether the certificate is revoked (in the index or on the CRL).
    pub revoked: bool,
}

/// Creates a new PKI in `opts.dir`: CA, server certificate, empty CRL, index,
/// server.toml and policy.toml. Refuses to touch a folder that holds any of
/// them. Returns the files written.
pub fn init(opts: &InitOptions) -> Result<Vec<PathBuf>, PkiError> {
    let name = parse_server_name(&opts.name)?;
    let dir = opts.dir.as_path();
    ensure_dir(dir)?;
    for file in [CA_KEY_FILE, CA_CERT_FILE] {
        if exists(&dir.join(file)) {
            return Err(PkiError::AlreadyInitialized(dir.join(file)));
        }
    }
    let others = [
        SERVER_KEY_FILE,
        SERVER_CERT_FILE,
        CRL_FILE,
        INDEX_FILE,
        SERVER_CONFIG_FILE,
        POLICY_FILE,
    ];
    if let Some(file) = others.iter().find(|f| exists(&dir.join(f))) {
        return Err(PkiError::FileExists(dir.join(file)));
    }

    // Make everything in memory first: a bad --days fails before any write.
    let now = now();
    let (ca, ca_files) = Ca::create(&opts.name, now)?;
    let server = ca.server_cert(&name, &opts.ips, opts.days, now)?;
    let crl_pem = crl::build(&ca, FIRST_CRL_NUMBER, &BTreeMap::new(), now)?;
    let index = Index::new(
        opts.name.clone(),
        opts.ips.clone(),
        opts.port,
        FIRST_CRL_NUMBER + 1,
    );

    let mut written = Vec::new();
    put_key(
        &mut written,
        &dir.join(CA_KEY_FILE),
        &ca_files.key_pem,
        false,
    )?;
    put_key(
        &mut written,
        &dir.join(SERVER_KEY_FILE),
        &server.key_pem,
        false,
    )?;
    put_public(&mut written, &dir.join(CA_CERT_FILE), &ca_files.cert_pem)?;
    put_public(&mut written, &dir.join(SERVER_CERT_FILE), &server.cert_pem)?;
    put_public(&mut written, &dir.join(CRL_FILE), &crl_pem)?;
    written.push(index.save(dir)?);
    let server_toml = templates::server_toml(opts.port);
    put_public(&mut written, &dir.join(SERVER_CONFIG_FILE), &server_toml)?;
    put_public(
        &mut written,
        &dir.join(POLICY_FILE),
        &templates::policy_toml(),
    )?;
    Ok(written)
}

/// Issues a client certificate for `opts.identity` and writes IDENTITY.pem,
/// IDENTITY.key, IDENTITY.toml (and a copy of ca.pem when `out` is another
/// folder). Refuses while the identity holds a valid certificate (neither
/// revoked nor expired). Returns the files written.
pub fn issue(opts: &IssueOptions) -> Result<Vec<PathBuf>, PkiError> {
    issue_as(opts, false)
}

/// Like [`issue`], but writes one file, IDENTITY.toml (0600): a one-file
/// profile with the CA, the certificate and the key inside (`[tls] ca_pem`,
/// `cert_pem`, `key_pem`). The key is written nowhere else.
pub fn issue_inline(opts: &IssueOptions) -> Result<Vec<PathBuf>, PkiError> {
    issue_as(opts, true)
}

fn issue_as(opts: &IssueOptions, inline: bool) -> Result<Vec<PathBuf>, PkiError> {
    let identity = opts.identity.as_str();
    validate_identity(identity)?;
    let dir = opts.dir.as_path();
    let (mut index, _) = load_reconciled(dir, true)?;
    refuse_valid(&index, identity)?;

    let out = opts.out.as_deref().unwrap_or(dir);
    ensure_dir(out)?;
    // The file that holds the key: IDENTITY.key, or the profile itself. An
    // existing one may only be of an earlier (revoked or expired)
    // certificate of this identity: there is no valid one, checked above.
    let key_path = out.join(format!(
        "{identity}.{}",
        if inline { "toml" } else { "key" }
    ));
    let replace_key = exists(&key_path);
    if replace_key && !index.knows(identity) {
        return Err(PkiError::KeyExists {
            path: key_path,
            identity: identity.to_string(),
        });
    }

    let ca = Ca::load(dir)?;
    let issued = ca.client_cert(identity, opts.days, now())?;
    record(&mut index, dir, identity, &issued)?;

    let mut written = Vec::new();
    if inline {
        let ca_pem = read_ca(dir)?;
        let server = templates::server_address(&index.server_name, &index.ips, index.port);
        let pems = templates::InlinePems {
            ca: &ca_pem,
            cert: &issued.cert_pem,
            key: &issued.key_pem,
        };
        let profile = Zeroizing::new(templates::client_toml_inline(
            identity,
            &server,
            &index.server_name,
            &pems,
        ));
        put_key(&mut written, &key_path, &profile, replace_key)?;
        return Ok(written);
    }
    put_key(&mut written, &key_path, &issued.key_pem, replace_key)?;
    ClientFiles::new(dir, out, &index, identity).write(
        &mut written,
        &issued.cert_pem,
        ConfigWrite::Always,
    )?;
    Ok(written)
}

/// Refuses to certify `identity` again while it holds a valid certificate.
fn refuse_valid(index: &Index, identity: &str) -> Result<(), PkiError> {
    match index.valid(identity, now()) {
        Some(valid) => Err(PkiError::AlreadyIssued {
            identity: identity.to_string(),
            serial: valid.serial.clone(),
            not_after: valid.not_after.clone(),
        }),
        None => Ok(()),
    }
}

/// Puts a new certificate on record before it exists anywhere: a crash
/// after this leaves a certificate that `revoke` knows about, never one
/// that it cannot find.
fn record(index: &mut Index, dir: &Path, identity: &str, issued: &Issued) -> Result<(), PkiError> {
    index.certs.push(IndexEntry {
        identity: identity.to_string(),
        serial: issued.serial.clone(),
        not_after: rfc3339(issued.not_after),
        revoked: false,
        revoked_at: None,
        public_key: Some(issued.public_key.clone()),
    });
    index.save(dir)?;
    Ok(())
}

/// Revokes every live certificate of `identity` (after `renew`, the old one
/// is live until it expires) and writes a new CRL (every revoked serial,
/// CRL number incremented). Returns how many were revoked.
pub fn revoke(dir: &Path, identity: &str) -> Result<usize, PkiError> {
    let (mut index, current) = load_reconciled(dir, true)?;
    let crl_path = dir.join(CRL_FILE);
    let now = now();
    let mut count = 0;
    for entry in index.live_all_mut(identity) {
        entry.revoked = true;
        entry.revoked_at = Some(rfc3339(now));
        count += 1;
    }
    if count == 0 {
        return Err(index.no_live(dir, identity));
    }

    // Keep every entry of the current CRL, whatever the index says.
    let mut revoked = current.revoked;
    for (serial, at) in index.revoked(dir)? {
        revoked.entry(serial).or_insert(at);
    }
    let number = index.next_crl_number.max(current.number.saturating_add(1));
    let ca = Ca::load(dir)?;
    let pem = crl::build(&ca, number, &revoked, now)?;
    // The CRL first: from here on the revocation is in force, and the next
    // operation copies it into the index if we crash before saving it.
    write_public(&crl_path, &pem)?;
    index.next_crl_number = number.saturating_add(1);
    index.save(dir)?;
    Ok(count)
}

/// Every client certificate issued, oldest first, revoked ones included.
pub fn list(dir: &Path) -> Result<Vec<CertRecord>, PkiError> {
    let (index, _) = load_reconciled(dir, false)?;
    Ok(index
        .certs
        .into_iter()
        .map(|c| CertRecord {
            identity: c.identity,
            serial: c.serial,
            not_after: c.not_after,
            revoked: c.revoked,
        })
        .collect())
}

/// Loads index.json and marks revoked whatever crl.pem lists; with `persist`,
/// saves the index if that changed it (repairing a crash during `revoke`).
/// Returns the index and what the CRL holds.
fn load_reconciled(dir: &Path, persist: bool) -> Result<(Index, crl::CrlContents), PkiError> {
    let mut index = Index::load(dir)?;
    let crl = crl::read(&dir.join(CRL_FILE))?;
    if index.reconcile(&crl.revoked) && persist {
        index.save(dir)?;
    }
    Ok((index, crl))
}

//! index.json: the PKI's own state. It records how the server was set up
//! (name, addresses, port, used by `issue` to write client configs), the next
//! CRL number, and every client certificate ever issued.
//!
//! The CRL, not the index, is what the server enforces. Every operation first
//! reconciles the index with crl.pem (a serial on the CRL is revoked, whatever
//! the index says), so a crash between writing the CRL and the index can never
//! un-revoke a certificate.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use twoway_common::atomic_file::write_atomic;

use super::error::PkiError;
use super::INDEX_FILE;

/// Version of the index.json format written by this code.
const INDEX_VERSION: u32 = 1;

/// The PKI's state, as stored in DIR/index.json.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Index {
    /// Format version.
    pub version: u32,
    /// The server name given to `init` (CN and SAN of the server certificate).
    pub server_name: String,
    /// The addresses given to `init` with --ip.
    pub ips: Vec<IpAddr>,
    /// The port the server listens on.
    pub port: u16,
    /// The CRL number the next CRL gets.
    pub next_crl_number: u64,
    /// Every client certificate issued, oldest first.
    pub certs: Vec<IndexEntry>,
}

/// One issued client certificate.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct IndexEntry {
    /// The identity (certificate CN).
    pub identity: String,
    /// Serial number, lowercase hex without separators.
    pub serial: String,
    /// End of validity, RFC 3339 UTC.
    pub not_after: String,
    /// Whether the certificate is revoked.
    pub revoked: bool,
    /// When it was revoked, RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// The certified public key (SubjectPublicKeyInfo DER, lowercase hex):
    /// what `renew` certifies again. Absent in entries written before
    /// twoway recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

impl IndexEntry {
    /// Whether the certificate is neither revoked nor expired at `now`.
    pub fn valid_at(&self, now: OffsetDateTime) -> bool {
        !self.revoked && OffsetDateTime::parse(&self.not_after, &Rfc3339).is_ok_and(|end| end > now)
    }
}

impl Index {
    /// A fresh index for a newly initialised PKI.
    pub fn new(server_name: String, ips: Vec<IpAddr>, port: u16, next_crl_number: u64) -> Self {
        Index {
            version: INDEX_VERSION,
            server_name,
            ips,
            port,
            next_crl_number,
            certs: Vec::new(),
        }
    }

    /// The path of the index in `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(INDEX_FILE)
    }

    /// Reads DIR/index.json.
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let path = Self::path(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(PkiError::NotInitialized(dir.to_path_buf()))
            }
            Err(e) => return Err(PkiError::io(&path, e)),
        };
        let index: Index =
            serde_json::from_str(&text).map_err(|e| PkiError::parse(&path, e.to_string()))?;
        if index.version != INDEX_VERSION {
            return Err(PkiError::parse(
                &path,
                format!(
                    "unsupported index version {} (expected {INDEX_VERSION})",
                    index.version
                ),
            ));
        }
        if let Some(bad) = index.certs.iter().find(|c| unhex(&c.serial).is_none()) {
            return Err(PkiError::parse(
                &path,
                format!("serial {:?} of {:?} is not hex", bad.serial, bad.identity),
            ));
        }
        Ok(index)
    }

    /// Replaces DIR/index.json atomically (mode 0600: it is the CA's bookkeeping).
    pub fn save(&self, dir: &Path) -> Result<PathBuf, PkiError> {
        let path = Self::path(dir);
        let mut json = serde_json::to_string_pretty(self)
            .map_err(|e| PkiError::parse(&path, e.to_string()))?;
        json.push('\n');
        write_atomic(&path, json.as_bytes(), 0o600).map_err(|e| PkiError::io(&path, e))?;
        Ok(path)
    }

    /// The newest certificate of `identity` that is not revoked.
    pub fn live(&self, identity: &str) -> Option<&IndexEntry> {
        self.certs
            .iter()
            .rev()
            .find(|c| c.identity == identity && !c.revoked)
    }

    /// Why `identity` has no live certificate in the index of `dir`: all of
    /// its certificates are revoked, or it was never issued one.
    pub fn no_live(&self, dir: &Path, identity: &str) -> PkiError {
        if self.knows(identity) {
            PkiError::AlreadyRevoked(identity.to_string())
        } else {
            PkiError::UnknownIdentity {
                identity: identity.to_string(),
                index: Self::path(dir),
            }
        }
    }

    /// The newest certificate of `identity` that is neither revoked nor expired.
    pub fn valid(&self, identity: &str, now: OffsetDateTime) -> Option<&IndexEntry> {
        self.certs
            .iter()
            .rev()
            .find(|c| c.identity == identity && c.valid_at(now))
    }

    /// Every certificate of `identity` that is not revoked (after `renew`,
    /// the old one stays live until it expires).
    pub fn live_all_mut<'a>(
        &'a mut self,
        identity: &'a str,
    ) -> impl Iterator<Item = &'a mut IndexEntry> + 'a {
        self.certs
            .iter_mut()
            .filter(move |c| c.identity == identity && !c.revoked)
    }

    /// A certificate of any identity that certified `public_key` (hex SPKI).
    pub fn with_key(&self, public_key: &str) -> Option<&IndexEntry> {
        self.certs
            .iter()
            .find(|c| c.public_key.as_deref() == Some(public_key))
    }

    /// Whether `identity` has ever been issued a certificate.
    pub fn knows(&self, identity: &str) -> bool {
        self.certs.iter().any(|c| c.identity == identity)
    }

    /// Marks revoked every certificate whose serial is on the CRL (serial hex
    /// → revocation time). Returns whether anything changed.
    pub fn reconcile(&mut self, on_crl: &BTreeMap<String, OffsetDateTime>) -> bool {
        let mut changed = false;
        for cert in self.certs.iter_mut().filter(|c| !c.revoked) {
            if let Some(at) = on_crl.get(&cert.serial) {
                cert.revoked = true;
                cert.revoked_at = Some(rfc3339(*at));
                changed = true;
            }
        }
        changed
    }

    /// Serial (hex) → revocation time of every revoked certificate in the index.
    /// `dir` only names the index in errors.
    pub fn revoked(&self, dir: &Path) -> Result<BTreeMap<String, OffsetDateTime>, PkiError> {
        let mut out = BTreeMap::new();
        for cert in self.certs.iter().filter(|c| c.revoked) {
            // An entry revoked without a time (hand-edited) counts as revoked now.
            let at = match &cert.revoked_at {
                Some(text) => OffsetDateTime::parse(text, &Rfc3339).map_err(|e| {
                    PkiError::parse(
                        &Self::path(dir),
                        format!("revoked_at {text:?} of serial {}: {e}", cert.serial),
                    )
                })?,
                None => now(),
            };
            out.insert(cert.serial.clone(), at);
        }
        Ok(out)
    }
}

/// The current time, whole seconds (certificates and the index hold seconds).
pub(crate) fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

/// Formats a time as RFC 3339 (`2030-01-02T03:04:05Z`).
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    // Formatting a UTC time with a four-digit year cannot fail; fall back to
    // the Unix time rather than panic if it ever does.
    t.format(&Rfc3339)
        .unwrap_or_else(|_| format!("@{}", t.unix_timestamp()))
}

/// Lowercase hex of `bytes`, no separators.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of a hex string (as written by [`hex`]); `None` if it is not hex.
pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(identity: &str, serial: &str, revoked: bool) -> IndexEntry {
        IndexEntry {
            identity: identity.into(),
            serial: serial.into(),
            not_after: "2030-01-01T00:00:00Z".into(),
            revoked,
            revoked_at: revoked.then(|| "2025-01-01T00:00:00Z".into()),
            public_key: None,
        }
    }

    #[test]
    fn round_trips_through_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = Index::new("vpn".into(), vec!["192.0.2.1".parse().unwrap()], 4433, 2);
        index.certs.push(entry("alice", "4a01", false));
        index.save(dir.path()).unwrap();
        assert_eq!(Index::load(dir.path()).unwrap(), index);
    }

    #[test]
    fn missing_index_means_not_initialized() {
        let dir = tempfile::tempdir().unwrap();
        let err = Index::load(dir.path()).unwrap_err();
        assert!(matches!(err, PkiError::NotInitialized(_)));
    }

    #[test]
    fn live_is_the_newest_unrevoked() {
        let mut index = Index::new("vpn".into(), vec![], 4433, 2);
        index.certs.push(entry("alice", "01", true));
        index.certs.push(entry("alice", "02", false));
        index.certs.push(entry("bob", "03", true));
        assert_eq!(index.live("alice").unwrap().serial, "02");
        assert!(index.live("bob").is_none());
        assert!(index.knows("bob"));
        assert!(!index.knows("carol"));
    }

    #[test]
    fn valid_skips_revoked_and_expired_and_live_all_finds_every_live_one() {
        let mut index = Index::new("vpn".into(), vec![], 4433, 2);
        let mut expired = entry("alice", "01", false);
        expired.not_after = "2020-01-01T00:00:00Z".into();
        index.certs.push(expired);
        index.certs.push(entry("alice", "02", true));
        index.certs.push(entry("bob", "03", false));
        let t = OffsetDateTime::parse("2025-06-01T00:00:00Z", &Rfc3339).unwrap();
        assert!(index.valid("alice", t).is_none());
        assert_eq!(index.valid("bob", t).unwrap().serial, "03");
        index.certs.push(entry("alice", "04", false));
        assert_eq!(index.valid("alice", t).unwrap().serial, "04");
        let live: Vec<_> = index
            .live_all_mut("alice")
            .map(|c| c.serial.clone())
            .collect();
        assert_eq!(live, ["01", "04"]);
    }

    #[test]
    fn entries_without_a_public_key_still_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(INDEX_FILE),
            r#"{"version":1,"server_name":"vpn","ips":[],"port":4433,"next_crl_number":2,
               "certs":[{"identity":"alice","serial":"4a01","not_after":"2030-01-01T00:00:00Z","revoked":false}]}"#,
        )
        .unwrap();
        let index = Index::load(dir.path()).unwrap();
        assert_eq!(index.certs[0].public_key, None);
        assert!(index.with_key("00").is_none());
    }

    #[test]
    fn reconcile_marks_crl_serials_revoked() {
        let mut index = Index::new("vpn".into(), vec![], 4433, 2);
        index.certs.push(entry("alice", "4a01", false));
        let mut on_crl = BTreeMap::new();
        on_crl.insert("4a01".to_string(), now());
        assert!(index.reconcile(&on_crl));
        assert!(index.certs[0].revoked);
        assert!(!index.reconcile(&on_crl));
        assert!(index.revoked(Path::new(".")).unwrap().contains_key("4a01"));
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(hex(&[0x4a, 0x00, 0xff]), "4a00ff");
        assert_eq!(unhex("4a00ff").unwrap(), vec![0x4a, 0x00, 0xff]);
        assert!(unhex("4a0").is_none());
        assert!(unhex("zz").is_none());
    }
}

//! Client identities for load tests, minted straight from the CA in a PKI
//! folder (`pki init` wrote ca.pem and ca.key there). `pki issue` does the
//! same for one identity but syncs every file it writes, about 0.2 s each;
//! a thousand identities this way take a second. The certificates are what
//! `pki issue` makes (P-256 key, CN = identity, clientAuth), though not
//! recorded in the PKI's index, so `pki revoke` does not know them.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};

/// Where the minted identities connect to.
#[derive(Debug, Clone)]
pub struct Target {
    /// Server address, `host:port`.
    pub server: String,
    /// Name the server certificate carries.
    pub server_name: String,
}

/// Writes `count` identities `PREFIX-0` .. into `out` (certificate, key and
/// a client config each, plus a copy of the CA certificate); returns the
/// config paths.
pub fn mint(
    pki: &Path,
    prefix: &str,
    count: usize,
    target: &Target,
    out: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    let read = |name: &str| {
        let p = pki.join(name);
        std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    };
    let ca_pem = read("ca.pem")?;
    let ca_key = KeyPair::from_pem(&read("ca.key")?).context("the CA key")?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).context("the CA certificate")?;
    std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
    std::fs::write(out.join("ca.pem"), &ca_pem)?;
    (0..count)
        .map(|i| {
            let name = format!("{prefix}-{i}");
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
            let mut params = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, name.as_str());
            params.distinguished_name = dn;
            params.is_ca = IsCa::ExplicitNoCa;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            params.use_authority_key_identifier_extension = true;
            let cert = params.signed_by(&key, &issuer)?;
            std::fs::write(out.join(format!("{name}.pem")), cert.pem())?;
            write_key(&out.join(format!("{name}.key")), &key.serialize_pem())?;
            let config = out.join(format!("{name}.toml"));
            std::fs::write(
                &config,
                format!(
                    "server = {:?}\nserver_name = {:?}\n\n[tls]\nca = \"ca.pem\"\n\
                     cert = \"{name}.pem\"\nkey = \"{name}.key\"\n\n[tunnel]\noffload = false\n",
                    target.server, target.server_name
                ),
            )?;
            Ok(config)
        })
        .collect()
}

/// Writes a private key 0600, as `pki` does: the client refuses a key other
/// users can read.
fn write_key(path: &Path, pem: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?
        .write_all(pem.as_bytes())
}

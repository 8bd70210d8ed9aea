//! Which identity names a certificate of the built-in PKI may carry. An
//! identity becomes file names (IDENTITY.pem, IDENTITY.key, IDENTITY.toml,
//! IDENTITY.csr) and a TOML string, so the allowed characters are few and
//! safe in both. `twoway-server pki` and `twoway request` apply the same rule.

/// The longest name the built-in PKI gives: it becomes the certificate's
/// common name, which RFC 5280 bounds at 64 (ub-common-name), and file
/// names. Tighter than [`super::MAX_IDENTITY_LEN`], the bound on any
/// identity read from a certificate, so every name issued is an identity
/// the server accepts.
pub const MAX_LEN: usize = 64;
const _: () = assert!(MAX_LEN <= super::MAX_IDENTITY_LEN);

/// Identities whose files would collide with the PKI's own
/// (ca.pem, ca.key, server.pem, server.key, server.toml, crl.pem, policy.toml, index.json).
const RESERVED: &[&str] = &["ca", "server", "crl", "policy", "index"];

/// `Err(reason)` unless `name` is 1-64 characters of `[A-Za-z0-9._@-]`, does
/// not start with '.' or '-', and is not one of the PKI's own file names.
pub fn check(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > MAX_LEN {
        return Err("it is longer than 64 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
    {
        return Err("use only the characters A-Z a-z 0-9 . _ @ -");
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err("it must not start with '.' or '-'");
    }
    if RESERVED.contains(&name) {
        return Err(
            "reserved: its files would overwrite the PKI's own (ca, server, crl, policy, index)",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_pass_and_unsafe_ones_do_not() {
        for name in ["alice", "bob.smith", "alice@example.com", "host-1", "a_b"] {
            assert_eq!(check(name), Ok(()), "{name}");
        }
        assert_eq!(check(&"a".repeat(MAX_LEN)), Ok(()));
        for name in ["", ".x", "-rf", "a/b", "../x", "a b", "é", "ca", "index"] {
            assert!(check(name).is_err(), "{name:?}");
        }
        assert!(check(&"a".repeat(MAX_LEN + 1)).is_err());
    }
}

//! Whether this process may create a TUN device and change routes, checked
//! before connecting: `up` without CAP_NET_ADMIN then ends at once with exit
//! code 5, whether or not the server is reachable, and the server never sees
//! a session that could not have been used.

use twoway_common::capability;

use crate::error::ClientError;

/// `Err(NoNetAdmin)` if the effective capabilities lack CAP_NET_ADMIN. When
/// they cannot be read (no /proc), creating the device will tell instead.
pub fn check() -> Result<(), ClientError> {
    match capability::net_admin() {
        Some(false) => Err(ClientError::NoNetAdmin),
        _ => Ok(()),
    }
}

//! Reload: policy, CRL and certificate swapped in as a whole, and the live
//! sessions that the new state no longer allows (or allows differently) closed.

use super::*;

impl Server {
    /// Re-reads policy, CRL and server certificate and swaps them in as a
    /// whole; a broken file changes nothing. Sessions the new state no longer
    /// allows are closed; the others keep running untouched.
    pub fn reload(&self) -> Result<Vec<u64>, StartError> {
        let tls = tls::server_config(&self.config.tls_files())?;
        let policy = Policy::load(&self.config.policy, &self.config.tunnel)?;
        let revoked = crate::revocation::revoked_serials(&self.config.tls.crl).unwrap_or_default();
        {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            let fresh = pool_for(&self.config, &policy);
            let leases = pool.leases().clone();
            *pool = fresh;
            pool.adopt(leases);
        }
        *self.tls.write().unwrap_or_else(|e| e.into_inner()) = tls;
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
        *self.revoked.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(revoked);
        // Sessions being set up right now see this and check themselves
        // once registered (see `session`), so none slips past the reload.
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let closed = self.registry.stop_each(|e| self.verdict(e));
        info!(
            closed = closed.len(),
            "reloaded policy, certificate and CRL"
        );
        Ok(closed)
    }
}

impl Server {
    /// Why the policy and CRL in force no longer allow a session as it was
    /// set up, if they don't.
    pub(super) fn verdict(&self, e: &Entry) -> Option<Bye> {
        let revoked = self
            .revoked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if revoked.contains(&e.serial) {
            return Some(Bye::new(ByeReason::Revoked, "certificate revoked"));
        }
        let changed = match self.policy().grant(&e.identity) {
            None => true,
            Some(mut new) => {
                if e.extra_device {
                    // Extra devices of one identity never get its static address.
                    (new.address, new.address6) = (None, None);
                }
                grant_changed(&e.grant, &new)
            }
        };
        changed.then(|| {
            Bye::new(
                ByeReason::PolicyChanged,
                "policy changed for this identity; reconnect",
            )
        })
    }
}

/// Whether a session granted `old` must reconnect to get `new`. A session
/// that got a pool address (no static one) keeps it unless a static one appears.
fn grant_changed(old: &Grant, new: &Grant) -> bool {
    old.access != new.access
        || old.client_to_client != new.client_to_client
        || (old.address, old.address6) != (new.address, new.address6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Access;

    fn grant(routes: &[&str], address: Option<&str>) -> Grant {
        Grant {
            address: address.map(|a| a.parse().unwrap()),
            address6: None,
            access: Access {
                routes: routes.iter().map(|r| r.parse().unwrap()).collect(),
                dns: vec![],
                search: vec![],
            },
            client_to_client: false,
        }
    }

    #[test]
    fn only_a_changed_grant_needs_a_reconnect() {
        let old = grant(&["10.99.0.0/24"], None);
        assert!(!grant_changed(&old, &grant(&["10.99.0.0/24"], None)));
        assert!(grant_changed(
            &old,
            &grant(&["10.99.0.0/24", "10.100.0.0/16"], None)
        ));
        assert!(grant_changed(
            &old,
            &grant(&["10.99.0.0/24"], Some("10.77.0.10"))
        ));
        let mut c2c = old.clone();
        c2c.client_to_client = true;
        assert!(grant_changed(&old, &c2c));
    }
}

//! What a session is given: its addresses (static, or from the pool and
//! persisted), routes, DNS, MTU and keepalive, and the filter its packets pass.

use super::*;

impl Server {
    /// The assignment for `identity` (its lease key) under `grant`; `leased`
    /// is the pool address the cluster leased, if the server is a node of one.
    pub(super) fn assignment(
        &self,
        identity: &str,
        grant: &Grant,
        leased: Option<std::net::Ipv4Addr>,
        offload: bool,
    ) -> Result<Assignment, (RefuseCode, String)> {
        let t = &self.config.tunnel;
        let address = match grant.address.or(leased) {
            Some(a) => a,
            None => {
                let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
                let now = unix_now();
                let had = pool.leases().get(identity).map(|l| l.address);
                let a = pool
                    .assign(identity, now, |a| self.router.contains(IpAddr::V4(a)))
                    .map_err(|e| (RefuseCode::PoolExhausted, e.to_string()))?;
                // A new or moved lease is written at once. A returning client
                // only refreshes its last-used time, which rides along with
                // the next write: a crash loses at most LEASE_REFRESH_SECS of
                // such refreshes (they only order evictions from a full pool),
                // and handshakes do not each pay a file write and two fsyncs.
                let saved_at = self.leases_saved_at.load(Ordering::Relaxed);
                if had != Some(a) || now.saturating_sub(saved_at) >= LEASE_REFRESH_SECS {
                    match self.leases.save(pool.leases()) {
                        Ok(()) => self.leases_saved_at.store(now, Ordering::Relaxed),
                        Err(e) => tracing::error!(file = %self.leases.path().display(), error = %e,
                            "cannot save leases; this address may not survive a restart"),
                    }
                }
                a
            }
        };
        let address6 = match (t.network6, grant.address6) {
            (Some(n6), Some(a6)) => Some((n6, a6)),
            // Without a static one, the IPv6 address mirrors the IPv4 host part.
            (Some(n6), None) => {
                let host = u32::from(address) & !u32::from(t.network.mask());
                Some((
                    n6,
                    std::net::Ipv6Addr::from(u128::from(n6.network()) | u128::from(host)),
                ))
            }
            _ => None,
        };
        let granted = reload::pushed(&grant.access);
        let mut gateways = vec![IpAddr::V4(t.server_address())];
        gateways.extend(t.server_address6().map(IpAddr::V6));
        Ok(Assignment {
            address: IpNetwork::new(IpAddr::V4(address), t.network.prefix())
                .map_err(|e| (RefuseCode::Internal, e.to_string()))?,
            address6: address6
                .map(|(n6, a6)| IpNetwork::new(IpAddr::V6(a6), n6.prefix()))
                .transpose()
                .map_err(|e| (RefuseCode::Internal, e.to_string()))?,
            gateways,
            // The lists an Update carries when a reload changes them.
            routes: granted.routes,
            dns: granted.dns,
            search: granted.search,
            mtu: t.mtu,
            keepalive_secs: self.config.keepalive.interval_secs,
            timeout_secs: self.config.keepalive.timeout_secs,
            features: if offload {
                vec![FEATURE_OFFLOAD.to_owned()]
            } else {
                vec![]
            },
            udp_session: None,
            udp_secret: None,
        })
    }

    /// The checks this session's packets must pass before they go inside.
    pub(super) fn filter(&self, assignment: &Assignment, grant: &Grant) -> SourceFilter {
        let t = &self.config.tunnel;
        SourceFilter {
            address: match assignment.address.ip() {
                IpAddr::V4(a) => a,
                IpAddr::V6(_) => t.server_address(),
            },
            address6: assignment.address6.and_then(|a| match a.ip() {
                IpAddr::V6(a) => Some(a),
                IpAddr::V4(_) => None,
            }),
            network: t.network,
            network6: t.network6,
            gateways: assignment.gateways.clone(),
            client_to_client: Arc::new(std::sync::atomic::AtomicBool::new(grant.client_to_client)),
        }
    }
}

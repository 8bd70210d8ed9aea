//! The real [`Inside`]: a Linux TUN device through tun-rs.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::Inside;

/// How to create the TUN device.
#[derive(Debug, Clone)]
pub struct TunSettings {
    /// Interface name, e.g. `twoway0`.
    pub name: String,
    /// IPv4 address and prefix length.
    pub ipv4: (Ipv4Addr, u8),
    /// Optional IPv6 address and prefix length.
    pub ipv6: Option<(Ipv6Addr, u8)>,
    /// MTU of the device.
    pub mtu: u16,
    /// Linux TUN offload (GSO/GRO): large TCP packets pass whole, with a header.
    pub offload: bool,
    /// Open the device multi-queue, so that [`TunInside::add_queue`] works.
    pub multi_queue: bool,
}

/// A TUN device; dropping it removes the interface, its addresses and routes.
pub struct TunInside {
    device: tun_rs::AsyncDevice,
    name: String,
    offload: bool,
    /// Merge tables for `send_batch`, one per concurrent writer.
    #[cfg(target_os = "linux")]
    gro_tables: std::sync::Mutex<Vec<tun_rs::GROTable>>,
}

/// A TUN device could not be created. The OS error is part of the message
/// (once, with what to do about it) and deliberately not a `source`, so
/// that printing the chain does not repeat it.
#[derive(Debug, thiserror::Error)]
#[error("cannot create TUN device {name:?}: {os_error}{}", self.hint())]
pub struct TunError {
    /// The requested interface name.
    pub name: String,
    /// The OS error (permission denied without CAP_NET_ADMIN, no /dev/net/tun, busy name).
    pub os_error: io::Error,
}

impl TunError {
    /// What to do about it, when we know.
    fn hint(&self) -> String {
        if self.os_error.kind() == io::ErrorKind::NotFound {
            " (no /dev/net/tun: load the tun module, `modprobe tun`)".into()
        } else if self.is_privilege() {
            format!(" ({})", crate::capability::NET_ADMIN_HINT)
        } else {
            String::new()
        }
    }

    /// Whether the failure is a missing privilege or device (exit code 5).
    pub fn is_privilege(&self) -> bool {
        matches!(
            self.os_error.kind(),
            io::ErrorKind::PermissionDenied | io::ErrorKind::NotFound
        ) || self.os_error.raw_os_error() == Some(nix::libc::EPERM)
    }
}

impl std::fmt::Debug for TunInside {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunInside")
            .field("name", &self.name)
            .finish()
    }
}

impl TunInside {
    /// Creates and brings up the device with its addresses and MTU.
    pub fn create(settings: &TunSettings) -> Result<Self, TunError> {
        let mut builder = tun_rs::DeviceBuilder::new()
            .name(&settings.name)
            .ipv4(settings.ipv4.0, settings.ipv4.1, None)
            .mtu(settings.mtu);
        #[cfg(target_os = "linux")]
        {
            builder = builder
                .offload(settings.offload)
                .multi_queue(settings.multi_queue);
        }
        if let Some((addr, prefix)) = settings.ipv6 {
            builder = builder.ipv6(addr, prefix);
        }
        let device = builder.build_async().map_err(|os_error| TunError {
            name: settings.name.clone(),
            os_error,
        })?;
        let name = device.name().unwrap_or_else(|_| settings.name.clone());
        Ok(Self {
            device,
            name,
            offload: cfg!(target_os = "linux") && settings.offload,
            #[cfg(target_os = "linux")]
            gro_tables: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Opens another queue of a multi-queue device.
    pub fn add_queue(&self) -> Result<Self, TunError> {
        let device = self.device.try_clone().map_err(|os_error| TunError {
            name: self.name.clone(),
            os_error,
        })?;
        Ok(Self {
            device,
            name: self.name.clone(),
            offload: self.offload,
            #[cfg(target_os = "linux")]
            gro_tables: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// The interface name the kernel gave the device.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Inside for TunInside {
    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.device.recv(buf).await
    }

    async fn send(&self, packet: &[u8]) -> io::Result<()> {
        self.device.send(packet).await.map(drop)
    }

    async fn send_parts(&self, head: &[u8], body: &[u8]) -> io::Result<()> {
        let parts = [io::IoSlice::new(head), io::IoSlice::new(body)];
        self.device.send_vectored(&parts).await.map(drop)
    }

    #[cfg(target_os = "linux")]
    async fn send_batch(&self, bufs: &mut [bytes::BytesMut]) -> io::Result<()> {
        let lock = || self.gro_tables.lock().unwrap_or_else(|e| e.into_inner());
        let mut table = lock().pop().unwrap_or_default();
        let result = self
            .device
            .send_multiple(&mut table, bufs, crate::offload::HEADER_LEN)
            .await;
        lock().push(table);
        result.map(drop)
    }

    fn offload(&self) -> bool {
        self.offload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(error: io::Error) -> TunError {
        TunError {
            name: "tw0".into(),
            os_error: error,
        }
    }

    #[test]
    fn a_missing_privilege_is_said_once_with_what_to_do() {
        let e = failure(io::Error::from_raw_os_error(nix::libc::EPERM));
        assert!(e.is_privilege());
        let text = e.to_string();
        assert_eq!(text.matches("Operation not permitted").count(), 1, "{text}");
        assert!(
            text.ends_with("(run as root or grant CAP_NET_ADMIN)"),
            "{text}"
        );
        // Not a source too, or a printed chain would say it twice.
        assert!(std::error::Error::source(&e).is_none());
        let e = failure(io::Error::from(io::ErrorKind::NotFound));
        assert!(
            e.is_privilege() && e.to_string().contains("modprobe tun"),
            "{e}"
        );
        let e = failure(io::Error::from_raw_os_error(nix::libc::EBUSY));
        assert!(
            !e.is_privilege() && !e.to_string().contains("CAP_NET_ADMIN"),
            "{e}"
        );
    }
}

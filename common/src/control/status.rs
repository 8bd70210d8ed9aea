//! The status objects of both programs, as `status --json` prints them and
//! the control socket carries them (docs/STATUS.md, field by field;
//! tests/tests/docs.rs holds the two together). Printed through
//! [`super::json_line`], so keys come out in alphabetical order whatever
//! the order of the fields here.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

/// Which connection carries a session's data now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Carrier {
    /// The UDP data channel.
    Udp,
    /// The TLS connection.
    Tcp,
}

/// `twoway-server status --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    /// Absolute path of the config the server runs with.
    pub config: String,
    /// Packets dropped since the start, by reason ([`crate::relay::DropReason::as_str`]).
    pub dropped: BTreeMap<String, u64>,
    /// The live sessions, oldest first.
    pub sessions: Vec<SessionStatus>,
    /// The UDP socket's counters; `null` without a UDP socket.
    pub udp: Option<UdpStatus>,
}

/// One live session of the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStatus {
    /// Session number, unique while the server runs.
    pub id: u64,
    /// The client's identity.
    pub identity: String,
    /// Its IPv4 tunnel address.
    pub address: String,
    /// Its IPv6 tunnel address, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<String>,
    /// Its public address and port.
    pub remote: String,
    /// RFC 3339 time the session started.
    pub since: String,
    /// Bytes received from the client.
    pub rx_bytes: u64,
    /// Bytes sent to the client.
    pub tx_bytes: u64,
    /// Where data goes now.
    pub transport: Carrier,
    /// The client's UDP address, once a datagram authenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_remote: Option<String>,
}

/// Counters of the server's UDP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UdpStatus {
    /// Batches that named no live session or did not parse.
    pub unknown_batches: u64,
    /// Batches dropped because their session's inbox was full.
    pub overflow_batches: u64,
}

/// Where a client is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientState {
    /// No client runs for this configuration.
    Down,
    /// First connection in progress.
    Connecting,
    /// Tunnel up.
    Up,
    /// Connection lost; the device and routes stay while it reconnects.
    Reconnecting,
}

impl ClientState {
    /// The state's name, as the JSON has it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Down => "down",
            Self::Connecting => "connecting",
            Self::Up => "up",
            Self::Reconnecting => "reconnecting",
        }
    }
}

/// `twoway status --json`: the state alone when the tunnel is down, the
/// state and every field of [`Tunnel`] while a client runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientStatus {
    /// Where the client is.
    pub state: ClientState,
    /// The running client's tunnel; `None` when down.
    #[serde(flatten)]
    pub tunnel: Option<Tunnel>,
}

impl ClientStatus {
    /// `{"state":"down"}`: no client runs.
    pub fn down() -> Self {
        Self {
            state: ClientState::Down,
            tunnel: None,
        }
    }

    /// The configuration file the client runs, if it says.
    pub fn config(&self) -> Option<&str> {
        self.tunnel.as_ref()?.config.as_deref()
    }
}

/// What a running client reports of its tunnel; fields without a value yet
/// are `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tunnel {
    /// The server as the configuration names it.
    pub server: String,
    /// Where data goes now.
    pub transport: Carrier,
    /// Absolute path of the configuration file.
    pub config: Option<String>,
    /// The TUN device, once the tunnel first came up.
    pub device: Option<String>,
    /// The IPv4 tunnel address, once assigned.
    pub address: Option<IpAddr>,
    /// The IPv6 tunnel address, when the server has one for us.
    pub address6: Option<IpAddr>,
    /// The networks routed into the tunnel.
    pub routes: Vec<IpNetwork>,
    /// Whether everything (of a family) goes through the tunnel.
    pub full_tunnel: bool,
    /// The DNS servers pushed.
    pub dns: Vec<IpAddr>,
    /// The DNS search domains pushed.
    pub search: Vec<String>,
    /// How the pushed DNS was applied, once the tunnel first came up.
    pub dns_method: Option<String>,
    /// The tunnel MTU, once assigned.
    pub mtu: Option<u16>,
    /// When the tunnel came up last (RFC 3339).
    pub since: Option<String>,
    /// Bytes received from the server and delivered into the device.
    pub rx_bytes: u64,
    /// Bytes sent to the server.
    pub tx_bytes: u64,
    /// Why the connection was lost, while reconnecting.
    pub last_error: Option<String>,
    /// When the client's certificate stops being valid (RFC 3339).
    pub certificate_expires: Option<String>,
    /// Things to act on.
    pub warnings: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::json_line;

    #[test]
    fn a_stopped_client_is_only_its_state() {
        assert_eq!(json_line(&ClientStatus::down()), r#"{"state":"down"}"#);
        let back: ClientStatus = serde_json::from_str(r#"{"state":"down"}"#).unwrap();
        assert_eq!(back, ClientStatus::down());
    }

    /// The example of docs/STATUS.md, byte for byte, and back.
    #[test]
    fn a_running_client_prints_every_field_in_key_order() {
        let line = r#"{"address":"10.77.0.128","address6":null,"certificate_expires":"2027-11-26T21:37:59Z","config":"/etc/twoway/alice.toml","device":"tw-alice","dns":["10.99.0.53"],"dns_method":"systemd-resolved","full_tunnel":false,"last_error":null,"mtu":1400,"routes":["10.99.0.0/24"],"rx_bytes":9120,"search":["corp.example.com"],"server":"203.0.113.10:4433","since":"2026-11-26T21:38:00.127003316Z","state":"up","transport":"udp","tx_bytes":8712,"warnings":[]}"#;
        let status: ClientStatus = serde_json::from_str(line).unwrap();
        assert_eq!(status.state, ClientState::Up);
        let tunnel = status.tunnel.as_ref().expect("running");
        assert_eq!(tunnel.transport, Carrier::Udp);
        assert_eq!(
            tunnel.routes,
            ["10.99.0.0/24".parse::<IpNetwork>().unwrap()]
        );
        assert_eq!(json_line(&status), line);
    }

    #[test]
    fn a_server_answer_is_not_a_client_status() {
        let server = r#"{"config":"/etc/twoway/server.toml","dropped":{},"ok":true,"sessions":[],"udp":null}"#;
        assert!(serde_json::from_str::<ClientStatus>(server).is_err());
    }

    #[test]
    fn server_status_matches_the_documented_example() {
        let line = r#"{"config":"/etc/twoway/server.toml","dropped":{"bad_offload":0,"client_to_client":0,"forged":0,"malformed":0,"no_route":1,"queue_full":0,"replayed":0,"spoofed":0},"sessions":[{"address":"10.77.0.128","id":1,"identity":"alice","remote":"198.51.100.7:51654","rx_bytes":168,"since":"2026-11-26T21:37:59.902577779Z","transport":"udp","tx_bytes":0,"udp_remote":"198.51.100.7:40212"}],"udp":{"overflow_batches":0,"unknown_batches":0}}"#;
        let status: ServerStatus = serde_json::from_str(line).unwrap();
        assert_eq!(status.sessions[0].transport, Carrier::Udp);
        assert_eq!(status.sessions[0].address6, None);
        assert_eq!(json_line(&status), line);
        let no_udp = ServerStatus {
            udp: None,
            ..status
        };
        assert!(json_line(&no_udp).ends_with(r#""udp":null}"#));
    }
}

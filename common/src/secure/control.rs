//! Records after the handshake that are not data: KeyUpdate (followed,
//! answered, limited), NewSessionTicket (not kept: no resumption) and alerts.

use std::io;

use rustls::AlertDescription;

use super::handshake::Kernel;
use super::{protocol_error, record_error, tls_error, OwnStream};
use crate::record::{Opener, Sealer, ALERT, HANDSHAKE};

/// KeyUpdates a peer may send without application data in between (as rustls).
const MAX_KEY_UPDATES_IN_A_ROW: u32 = 32;
/// Alert descriptions with a meaning of their own.
const CLOSE_NOTIFY: u8 = 0;
const USER_CANCELED: u8 = 90;

/// Handshake message types after the handshake (RFC 8446 4).
const NEW_SESSION_TICKET: u8 = 4;
const KEY_UPDATE: u8 = 24;

impl<T> OwnStream<T> {
    /// Sends a KeyUpdate under the old key, then switches to the next one.
    pub(super) fn update_tx_key(&mut self, request_peer_update: bool) -> io::Result<()> {
        let message = [KEY_UPDATE, 0, 0, 1, u8::from(request_peer_update)];
        self.seal_now(HANDSHAKE, &message)?;
        let (seq, secrets) = self.kernel.update_tx().map_err(tls_error)?;
        self.sealer = Sealer::new(&secrets, seq).map_err(record_error)?;
        self.tx_key_updates += 1;
        Ok(())
    }

    /// Acts on post-handshake messages (one record's worth).
    fn handle_handshake(&mut self, mut messages: &[u8]) -> io::Result<()> {
        if messages.is_empty() {
            return Err(protocol_error("empty handshake record"));
        }
        while !messages.is_empty() {
            let [kind, a, b, c, ..] = *messages else {
                return Err(protocol_error("fragmented post-handshake message"));
            };
            let len = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
            let body = messages
                .get(4..4 + len)
                .ok_or_else(|| protocol_error("fragmented post-handshake message"))?;
            messages = &messages[4 + len..];
            match (kind, body) {
                (KEY_UPDATE, &[request]) if request <= 1 => {
                    if !messages.is_empty() {
                        // RFC 8446 5.1: no message may follow a key change in its record.
                        return Err(protocol_error("data after KeyUpdate in the same record"));
                    }
                    self.key_updates_in_a_row += 1;
                    if self.key_updates_in_a_row > MAX_KEY_UPDATES_IN_A_ROW {
                        return Err(tls_error(rustls::Error::PeerMisbehaved(
                            rustls::PeerMisbehaved::TooManyKeyUpdateRequests,
                        )));
                    }
                    let (seq, secrets) = self.kernel.update_rx().map_err(tls_error)?;
                    self.opener = Opener::new(&secrets, seq).map_err(record_error)?;
                    // One answer covers every request made before it is sent.
                    if request == 1 && !self.closing && !self.key_update_answer_pending {
                        self.update_tx_key(false)?;
                        self.key_update_answer_pending = true;
                    }
                }
                // No resumption here: a ticket is simply not kept.
                (NEW_SESSION_TICKET, _) if matches!(self.kernel, Kernel::Client(_)) => {}
                _ => return Err(protocol_error("unexpected post-handshake message")),
            }
        }
        Ok(())
    }

    /// Acts on a record that is not application data.
    pub(super) fn handle_control(&mut self, content_type: u8, content: &[u8]) -> io::Result<()> {
        match (content_type, content) {
            (ALERT, &[_, CLOSE_NOTIFY]) => {
                self.peer_closed = true;
                Ok(())
            }
            // A warning that close_notify follows.
            (ALERT, &[1, USER_CANCELED]) => Ok(()),
            (ALERT, &[_, description]) => Err(tls_error(rustls::Error::AlertReceived(
                AlertDescription::from(description),
            ))),
            (HANDSHAKE, messages) => self.handle_handshake(messages),
            _ => Err(protocol_error("unexpected record type")),
        }
    }
}

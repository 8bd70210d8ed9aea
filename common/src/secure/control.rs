//! Records after the handshake that are not data: KeyUpdate (followed,
//! answered, limited), NewSessionTicket (not kept: no resumption), alerts
//! (understood, limited, and the fatal one we send when a read fails).

use std::io;
use std::task::Context;

use rustls::{AlertDescription, InvalidMessage, PeerMisbehaved};
use tokio::io::AsyncWrite;

use super::handshake::Kernel;
use super::{protocol_error, record_error, tls_error, OwnStream};
use crate::record::{Opener, RecordError, Sealer, ALERT, HANDSHAKE};

/// KeyUpdates a peer may send without application data in between (as rustls).
const MAX_KEY_UPDATES_IN_A_ROW: u32 = 32;
/// Warning alerts a peer may send without application data in between (as rustls).
const MAX_WARNINGS_IN_A_ROW: u32 = 4;
/// Longest post-handshake message we reassemble across records.
const MAX_HANDSHAKE_MESSAGE: usize = 64 * 1024;
/// Alert descriptions with a meaning of their own.
const CLOSE_NOTIFY: u8 = 0;
const USER_CANCELED: u8 = 90;
/// Alert levels.
const WARNING: u8 = 1;
const FATAL: u8 = 2;

/// Handshake message types after the handshake (RFC 8446 4).
const NEW_SESSION_TICKET: u8 = 4;
const KEY_UPDATE: u8 = 24;

fn peer_misbehaved(why: PeerMisbehaved) -> io::Error {
    tls_error(rustls::Error::PeerMisbehaved(why))
}

fn invalid_message(why: InvalidMessage) -> io::Error {
    tls_error(rustls::Error::InvalidMessage(why))
}

/// The fatal alert that tells the peer why a read failed (RFC 8446 6.2), or
/// None where the peer cannot be told (it failed first, or the transport did).
pub(super) fn alert_for(err: &io::Error) -> Option<AlertDescription> {
    let inner = err.get_ref()?;
    if let Some(record) = inner.downcast_ref::<RecordError>() {
        return Some(match record {
            RecordError::Authentication => AlertDescription::BadRecordMac,
            RecordError::Length(_) | RecordError::TooLarge(_) => AlertDescription::RecordOverflow,
            RecordError::Header(_) | RecordError::NoContentType => {
                AlertDescription::UnexpectedMessage
            }
            RecordError::UnsupportedSuite => AlertDescription::InternalError,
        });
    }
    Some(match inner.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(_) => return None,
        rustls::Error::InvalidMessage(InvalidMessage::InvalidKeyUpdate) => {
            AlertDescription::IllegalParameter
        }
        rustls::Error::InvalidMessage(_) => AlertDescription::DecodeError,
        _ => AlertDescription::UnexpectedMessage,
    })
}

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

    /// Acts on one record of post-handshake messages; a message may continue
    /// in the next record (RFC 8446 5.1).
    fn handle_handshake(&mut self, content: &[u8]) -> io::Result<()> {
        if content.is_empty() {
            return Err(invalid_message(InvalidMessage::InvalidEmptyPayload));
        }
        let mut joined = std::mem::take(&mut self.hs_partial);
        let mut messages = if joined.is_empty() {
            content
        } else {
            joined.extend_from_slice(content);
            &joined[..]
        };
        while !messages.is_empty() {
            let complete = match *messages {
                [_, a, b, c, ..] => {
                    let len = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
                    if len > MAX_HANDSHAKE_MESSAGE {
                        return Err(invalid_message(InvalidMessage::HandshakePayloadTooLarge));
                    }
                    messages.get(4..4 + len).map(|body| (messages[0], body, 4 + len))
                }
                _ => None,
            };
            let Some((kind, body, len)) = complete else {
                // The rest comes in the next record.
                self.hs_partial = messages.to_vec();
                return Ok(());
            };
            messages = &messages[len..];
            match kind {
                KEY_UPDATE => {
                    let &[request] = body else {
                        return Err(invalid_message(InvalidMessage::InvalidKeyUpdate));
                    };
                    if request > 1 {
                        // RFC 8446 4.6.3: any other value is an illegal_parameter.
                        return Err(invalid_message(InvalidMessage::InvalidKeyUpdate));
                    }
                    if !messages.is_empty() {
                        // RFC 8446 5.1: no message may follow a key change in its record.
                        return Err(peer_misbehaved(PeerMisbehaved::KeyEpochWithPendingFragment));
                    }
                    self.key_updates_in_a_row += 1;
                    if self.key_updates_in_a_row > MAX_KEY_UPDATES_IN_A_ROW {
                        return Err(peer_misbehaved(PeerMisbehaved::TooManyKeyUpdateRequests));
                    }
                    let (seq, secrets) = self.kernel.update_rx().map_err(tls_error)?;
                    self.opener = Opener::new(&secrets, seq).map_err(record_error)?;
                    // One answer covers every request made before our next data.
                    if request == 1 && !self.closing && !self.key_update_answer_pending {
                        self.update_tx_key(false)?;
                        self.key_update_answer_pending = true;
                    }
                }
                // No resumption here: a ticket is simply not kept.
                NEW_SESSION_TICKET if matches!(self.kernel, Kernel::Client(_)) => {}
                _ => return Err(protocol_error("unexpected post-handshake message")),
            }
        }
        Ok(())
    }

    /// Acts on a record that is not application data.
    pub(super) fn handle_control(&mut self, content_type: u8, content: &[u8]) -> io::Result<()> {
        if content_type != HANDSHAKE && !self.hs_partial.is_empty() {
            return Err(peer_misbehaved(PeerMisbehaved::MessageInterleavedWithHandshakeMessage));
        }
        match (content_type, content) {
            (ALERT, &[_, CLOSE_NOTIFY]) => {
                self.peer_closed = true;
                Ok(())
            }
            // A warning that close_notify follows; a few are fine.
            (ALERT, &[WARNING, USER_CANCELED]) => {
                self.warnings_in_a_row += 1;
                if self.warnings_in_a_row > MAX_WARNINGS_IN_A_ROW {
                    return Err(peer_misbehaved(PeerMisbehaved::TooManyWarningAlertsReceived));
                }
                Ok(())
            }
            // In TLS 1.3 every other alert is fatal, whatever its level says.
            (ALERT, &[_, description]) => Err(tls_error(rustls::Error::AlertReceived(
                AlertDescription::from(description),
            ))),
            (ALERT, _) => Err(invalid_message(InvalidMessage::MessageTooShort)),
            (HANDSHAKE, messages) => self.handle_handshake(messages),
            _ => Err(protocol_error("unexpected record type")),
        }
    }
}

impl<T: AsyncWrite + Unpin> OwnStream<T> {
    /// Seals a fatal alert and tries once to hand it to the socket; nothing
    /// is sent after it.
    pub(super) fn send_fatal_alert(&mut self, alert: AlertDescription, cx: &mut Context<'_>) {
        if self.closing {
            return;
        }
        if self.seal_now(ALERT, &[FATAL, u8::from(alert)]).is_ok() {
            let _ = self.poll_drain(cx);
        }
        self.closing = true;
    }
}

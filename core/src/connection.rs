//! [`Connection`]: the sans-IO SSH connection, client or server.
//!
//! Inputs (`handle_*`), commands, then drain the outputs (`pending_transmit`,
//! `poll_event`, `poll_timeout`) after every input or command.

use crate::config::{ClientConfig, ServerConfig, TransportConfig};
use crate::error::{CloseReason, DisconnectCode, Error};
use crate::event::{Event, State};
use crate::rng::{Rng, Seed};
use crate::time::Timestamp;
use crate::transport::{HostKey, Inbound, Negotiated, PeerExtensions, Role, Shared, Transport};
use std::collections::VecDeque;

/// Counters for monitoring.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes written to the socket (as consumed by the adapter).
    pub bytes_sent: u64,
    /// Bytes received from the socket.
    pub bytes_received: u64,
    /// Packets sent.
    pub packets_sent: u64,
    /// Packets received.
    pub packets_received: u64,
    /// Completed key re-exchanges (not counting the first).
    pub rekeys: u64,
    /// When the last key exchange completed.
    pub last_kex: Option<Timestamp>,
    /// When the last packet was received.
    pub last_received: Option<Timestamp>,
}

/// One SSH connection's state machine. It never touches a socket or a
/// clock: bytes and time go in, bytes, events and deadlines come out.
#[derive(Debug)]
pub struct Connection {
    shared: Shared,
    transport: Transport,
    /// Set once `Event::Closed` has been queued.
    closed: bool,
}

impl Connection {
    /// A client connection. Its version line and KEXINIT are ready in
    /// `pending_transmit` at once.
    pub fn client(config: ClientConfig, now: Timestamp, seed: Seed) -> Result<Self, Error> {
        Self::new(Role::Client, config.transport, Vec::new(), now, seed)
    }

    /// A server connection for one accepted client.
    pub fn server(config: ServerConfig, now: Timestamp, seed: Seed) -> Result<Self, Error> {
        Self::new(Role::Server, config.transport, config.host_keys, now, seed)
    }

    fn new(
        role: Role,
        config: TransportConfig,
        host_keys: Vec<HostKey>,
        now: Timestamp,
        seed: Seed,
    ) -> Result<Self, Error> {
        let mut shared = Shared {
            now,
            rng: Rng::from_seed(seed),
            events: VecDeque::new(),
            state: State::Connecting,
            stats: Stats::default(),
        };
        let transport = Transport::new(role, config, host_keys, &mut shared)?;
        Ok(Connection {
            shared,
            transport,
            closed: false,
        })
    }

    // ------------------------------------------------------------- getters

    /// Client or server.
    pub fn role(&self) -> Role {
        self.transport.role()
    }

    /// The lifecycle state.
    pub fn state(&self) -> State {
        self.shared.state
    }

    /// Whether `Event::Closed` has been emitted.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        let mut s = self.shared.stats.clone();
        s.packets_sent = self.transport.output.packets_total;
        s
    }

    /// The session identifier (H of the first key exchange), once known.
    pub fn session_id(&self) -> Option<&[u8; 32]> {
        self.transport.session_id()
    }

    /// The algorithms of the last completed key exchange.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.transport.negotiated()
    }

    /// The peer's version line (without CR LF), once received.
    pub fn peer_version(&self) -> Option<&str> {
        self.transport.peer_version()
    }

    /// Lines the server sent before its version line.
    pub fn banner_lines(&self) -> &[String] {
        self.transport.banner_lines()
    }

    /// What the peer's EXT_INFO announced (client role).
    pub fn peer_extensions(&self) -> &PeerExtensions {
        &self.transport.peer_ext
    }

    /// Whether a key re-exchange is running.
    pub fn is_rekeying(&self) -> bool {
        self.transport.is_rekeying()
    }

    // -------------------------------------------------------------- inputs

    /// Bytes received from the socket, in any fragmentation. On error the
    /// connection is closed (DISCONNECT queued, `Event::Closed` emitted) and
    /// the error is also returned. Input after closing is ignored.
    pub fn handle_input(&mut self, now: Timestamp, bytes: &[u8]) -> Result<(), Error> {
        if self.closed {
            return Ok(());
        }
        self.shared.now = now;
        self.shared.stats.bytes_received += bytes.len() as u64;
        let result = self.transport.receive(bytes).and_then(|()| self.process());
        if let Err(e) = &result {
            self.fail(e.clone());
        }
        result
    }

    fn process(&mut self) -> Result<(), Error> {
        while let Some(inbound) = self.transport.poll(&mut self.shared)? {
            match inbound {
                Inbound::Upper(range) => {
                    let payload = &self.transport.input.buf[range];
                    return Err(Error::UnexpectedMessage {
                        number: payload[0],
                        message: crate::wire::msg::name(payload[0]),
                        phase: "(authentication is not implemented yet)",
                    });
                }
                Inbound::Disconnect { code, description } => {
                    self.close_with(CloseReason::PeerDisconnect { code, description }, None);
                    return Ok(());
                }
            }
        }
        self.transport.check_rekey_limits(&mut self.shared);
        Ok(())
    }

    /// The peer closed the TCP stream (or reading failed).
    pub fn handle_eof(&mut self, now: Timestamp) {
        if self.closed {
            return;
        }
        self.shared.now = now;
        let reason = if self.transport.mid_packet() {
            CloseReason::Error(Error::Truncated {
                buffered: self.transport.input.buf.len(),
            })
        } else {
            CloseReason::Eof
        };
        self.close_with(reason, None);
    }

    /// Time passed. Spurious calls are harmless.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        if self.closed {
            return;
        }
        self.shared.now = now;
        if let Some(reason) = self.transport.handle_timeout(&mut self.shared) {
            let desc = "key exchange timed out";
            self.close_with(reason, Some((DisconnectCode::KEY_EXCHANGE_FAILED, desc)));
        }
    }

    // ------------------------------------------------------------ commands

    /// Trust the host key of `Event::HostKey { id, .. }`; the exchange goes on.
    pub fn accept_host_key(&mut self, id: u64) -> Result<(), Error> {
        self.ensure_open()?;
        self.transport.answer_host_key(id, true, &mut self.shared)?;
        // Input buffered during the decision can be processed now.
        let result = self.process();
        if let Err(e) = &result {
            self.fail(e.clone());
        }
        Ok(())
    }

    /// Refuse the host key: the connection closes with `HostKeyRejected`.
    pub fn reject_host_key(&mut self, id: u64) -> Result<(), Error> {
        self.ensure_open()?;
        if !self.transport.host_key_pending(id) {
            return Err(Error::UnknownId {
                what: "host key check",
                id,
            });
        }
        self.close_with(
            CloseReason::HostKeyRejected,
            Some((
                DisconnectCode::HOST_KEY_NOT_VERIFIABLE,
                "host key not accepted",
            )),
        );
        Ok(())
    }

    /// Start a key re-exchange now (no-op if one is running).
    pub fn rekey(&mut self) -> Result<(), Error> {
        self.ensure_open()?;
        self.transport.rekey(&mut self.shared)
    }

    /// Send SSH_MSG_PING (when the peer offers `ping@openssh.com`); the
    /// answer arrives as `Event::Pong`.
    pub fn ping(&mut self, data: &[u8]) -> Result<(), Error> {
        self.ensure_open()?;
        self.transport.ping(data, &mut self.shared)
    }

    /// Send SSH_MSG_IGNORE carrying `data`.
    pub fn send_ignore(&mut self, data: &[u8]) -> Result<(), Error> {
        self.ensure_open()?;
        self.transport.ignore(data, &mut self.shared);
        self.transport.check_rekey_limits(&mut self.shared);
        Ok(())
    }

    /// Send SSH_MSG_DEBUG.
    pub fn send_debug(&mut self, always_display: bool, message: &str) -> Result<(), Error> {
        self.ensure_open()?;
        self.transport
            .debug(always_display, message, &mut self.shared);
        Ok(())
    }

    /// Close: queue DISCONNECT with `code` and `description`, emit `Closed`.
    pub fn disconnect(&mut self, code: DisconnectCode, description: &str) -> Result<(), Error> {
        self.ensure_open()?;
        let reason = CloseReason::Local {
            code,
            description: description.to_owned(),
        };
        self.close_with(reason, Some((code, description)));
        Ok(())
    }

    fn ensure_open(&self) -> Result<(), Error> {
        if self.closed {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Closes because of `err`, telling the peer why where possible.
    fn fail(&mut self, err: Error) {
        let code = err.disconnect_code();
        let text = err.to_string();
        self.close_with(CloseReason::Error(err), Some((code, &text)));
    }

    fn close_with(&mut self, reason: CloseReason, disconnect: Option<(DisconnectCode, &str)>) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.transport.close(disconnect, &mut self.shared);
        let state = if self.transport.output.pending().is_empty() {
            State::Closed
        } else {
            State::Closing
        };
        self.shared.set_state(state);
        self.shared.events.push_back(Event::Closed { reason });
    }

    // ------------------------------------------------------------- outputs

    /// Bytes to write to the socket. Call `consume_transmit` with how many
    /// were written.
    pub fn pending_transmit(&self) -> &[u8] {
        self.transport.output.pending()
    }

    /// `n` bytes of `pending_transmit` were written.
    pub fn consume_transmit(&mut self, n: usize) {
        let n = n.min(self.transport.output.pending().len());
        self.shared.stats.bytes_sent += n as u64;
        self.transport.output.consume(n);
        if self.closed && self.transport.output.pending().is_empty() {
            self.shared.set_state(State::Closed);
        }
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.shared.events.pop_front()
    }

    /// When `handle_timeout` should next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        if self.closed {
            return None;
        }
        self.transport.poll_timeout()
    }
}

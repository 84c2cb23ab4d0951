//! Public types of the connection protocol: channel kinds, requests and options.

use core::fmt;

use crate::wire::{DecodeError, Reader, Writer};

/// A channel, named by our local channel number. Numbers are reused only
/// after both sides' CHANNEL_CLOSE have passed and the application has polled
/// the `ChannelClosed` (or `ChannelOpenFailed`) event.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(pub u32);

impl fmt::Debug for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ch{}", self.0)
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Flow-control settings of a channel's receiving side.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ChannelOptions {
    /// Initial window: bytes the peer may send before we grant more (OpenSSH: 2 MiB).
    pub window: u32,
    /// Largest data payload per packet we accept (OpenSSH: 32 KiB).
    pub max_packet: u32,
    /// When false (the default) the window is replenished as the application
    /// polls data events; when true only `Connection::channel_consumed`
    /// replenishes it (adapters that buffer data themselves use this, so a
    /// reader that stops reading stops the sender after one window).
    pub manual_window: bool,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        ChannelOptions { window: 2 * 1024 * 1024, max_packet: 32 * 1024, manual_window: false }
    }
}

/// What a channel carries (the CHANNEL_OPEN type and its data).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelKind {
    /// `session`: a shell, command or subsystem.
    Session,
    /// `direct-tcpip`: local forwarding, client to server (RFC 4254 §7.2).
    DirectTcpip {
        /// Where the server should connect.
        host: String,
        /// Its port.
        port: u32,
        /// Who connected to the client's listening socket.
        originator_host: String,
        /// Their port.
        originator_port: u32,
    },
    /// `forwarded-tcpip`: remote forwarding, server to client (RFC 4254 §7.2).
    ForwardedTcpip {
        /// The address that was connected to on the server.
        connected_host: String,
        /// Its port.
        connected_port: u32,
        /// Who connected there.
        originator_host: String,
        /// Their port.
        originator_port: u32,
    },
    /// Any other type, with its raw type-specific data.
    Other {
        /// The channel type name.
        name: String,
        /// Type-specific data, encoded.
        data: Vec<u8>,
    },
}

impl ChannelKind {
    /// The CHANNEL_OPEN type name.
    pub fn name(&self) -> &str {
        match self {
            ChannelKind::Session => "session",
            ChannelKind::DirectTcpip { .. } => "direct-tcpip",
            ChannelKind::ForwardedTcpip { .. } => "forwarded-tcpip",
            ChannelKind::Other { name, .. } => name,
        }
    }

    pub(crate) fn encode_data(&self, out: &mut Vec<u8>) {
        match self {
            ChannelKind::Session => {}
            ChannelKind::DirectTcpip { host, port, originator_host, originator_port } => {
                out.put_str(host);
                out.put_u32(*port);
                out.put_str(originator_host);
                out.put_u32(*originator_port);
            }
            ChannelKind::ForwardedTcpip {
                connected_host,
                connected_port,
                originator_host,
                originator_port,
            } => {
                out.put_str(connected_host);
                out.put_u32(*connected_port);
                out.put_str(originator_host);
                out.put_u32(*originator_port);
            }
            ChannelKind::Other { data, .. } => out.extend_from_slice(data),
        }
    }

    pub(crate) fn decode(name: &str, r: &mut Reader<'_>) -> Result<ChannelKind, DecodeError> {
        Ok(match name {
            "session" => ChannelKind::Session,
            "direct-tcpip" => ChannelKind::DirectTcpip {
                host: r.utf8("host")?.to_owned(),
                port: r.u32("port")?,
                originator_host: r.utf8("originator address")?.to_owned(),
                originator_port: r.u32("originator port")?,
            },
            "forwarded-tcpip" => ChannelKind::ForwardedTcpip {
                connected_host: r.utf8("connected address")?.to_owned(),
                connected_port: r.u32("connected port")?,
                originator_host: r.utf8("originator address")?.to_owned(),
                originator_port: r.u32("originator port")?,
            },
            other => ChannelKind::Other { name: other.to_owned(), data: r.remaining().to_vec() },
        })
    }
}

/// Why a channel open was refused (RFC 4254 §5.1).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct OpenFailure(pub u32);

#[allow(missing_docs)] // the RFC's names
impl OpenFailure {
    pub const ADMINISTRATIVELY_PROHIBITED: Self = Self(1);
    pub const CONNECT_FAILED: Self = Self(2);
    pub const UNKNOWN_CHANNEL_TYPE: Self = Self(3);
    pub const RESOURCE_SHORTAGE: Self = Self(4);
}

impl fmt::Display for OpenFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            1 => "administratively prohibited",
            2 => "connect failed",
            3 => "unknown channel type",
            4 => "resource shortage",
            _ => return write!(f, "reason {}", self.0),
        };
        f.write_str(name)
    }
}

/// A pseudo-terminal request (RFC 4254 §6.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pty {
    /// `TERM`, e.g. `xterm-256color`.
    pub term: String,
    /// Width in characters.
    pub cols: u32,
    /// Height in rows.
    pub rows: u32,
    /// Width in pixels (0 if unknown).
    pub width_px: u32,
    /// Height in pixels (0 if unknown).
    pub height_px: u32,
    /// Encoded terminal modes (RFC 4254 §8): opcode and value pairs.
    pub modes: Vec<(u8, u32)>,
}

impl Default for Pty {
    fn default() -> Self {
        Pty { term: "xterm".into(), cols: 80, rows: 24, width_px: 0, height_px: 0, modes: Vec::new() }
    }
}

/// Terminal-mode opcodes worth naming (RFC 4254 §8).
pub mod tty {
    /// End of the mode list.
    pub const TTY_OP_END: u8 = 0;
    /// Interrupt character (the value is the character, 255 for none).
    pub const VINTR: u8 = 1;
    /// Erase character.
    pub const VERASE: u8 = 3;
    /// End-of-file character.
    pub const VEOF: u8 = 5;
    /// Enable signals from INTR, QUIT and SUSP.
    pub const ISIG: u8 = 50;
    /// Echo input characters.
    pub const ECHO: u8 = 53;
    /// Canonical (line) input.
    pub const ICANON: u8 = 51;
    /// Map CR to NL on input.
    pub const ICRNL: u8 = 36;
    /// Input baud rate.
    pub const TTY_OP_ISPEED: u8 = 128;
    /// Output baud rate.
    pub const TTY_OP_OSPEED: u8 = 129;
}

/// How a remote command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// `exit-status`: the process exited with this code.
    Code(u32),
    /// `exit-signal`: the process was killed by a signal.
    Signal {
        /// Signal name without `SIG` (e.g. `TERM`).
        signal: String,
        /// Whether it dumped core.
        core_dumped: bool,
        /// The server's message, may be empty.
        message: String,
    },
}

/// A channel request (RFC 4254 §6), both directions.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelRequest {
    /// `pty-req`.
    Pty(Pty),
    /// `shell`.
    Shell,
    /// `exec`: run a command (bytes, as the protocol allows any).
    Exec {
        /// The command line.
        command: Vec<u8>,
    },
    /// `subsystem`, e.g. `sftp`.
    Subsystem {
        /// Its name.
        name: String,
    },
    /// `env`: set an environment variable (servers honour few: OpenSSH's AcceptEnv).
    Env {
        /// Variable name.
        name: String,
        /// Its value.
        value: String,
    },
    /// `window-change`: the terminal was resized.
    WindowChange {
        /// Width in characters.
        cols: u32,
        /// Height in rows.
        rows: u32,
        /// Width in pixels.
        width_px: u32,
        /// Height in pixels.
        height_px: u32,
    },
    /// `signal`: deliver a signal (name without `SIG`) to the remote process.
    Signal {
        /// e.g. `INT`, `TERM`.
        name: String,
    },
    /// `exit-status` (server to client).
    ExitStatus {
        /// The exit code.
        status: u32,
    },
    /// `exit-signal` (server to client).
    ExitSignal {
        /// Signal name without `SIG`.
        signal: String,
        /// Whether it dumped core.
        core_dumped: bool,
        /// Message, may be empty.
        message: String,
    },
    /// `xon-xoff`: whether the client may do flow control itself.
    XonXoff {
        /// Client can do it.
        client_can_do: bool,
    },
    /// Any other request, with its raw data.
    Other {
        /// Request name.
        name: String,
        /// Request-specific data, encoded.
        data: Vec<u8>,
    },
}

impl ChannelRequest {
    /// The request type name.
    pub fn name(&self) -> &str {
        match self {
            ChannelRequest::Pty(_) => "pty-req",
            ChannelRequest::Shell => "shell",
            ChannelRequest::Exec { .. } => "exec",
            ChannelRequest::Subsystem { .. } => "subsystem",
            ChannelRequest::Env { .. } => "env",
            ChannelRequest::WindowChange { .. } => "window-change",
            ChannelRequest::Signal { .. } => "signal",
            ChannelRequest::ExitStatus { .. } => "exit-status",
            ChannelRequest::ExitSignal { .. } => "exit-signal",
            ChannelRequest::XonXoff { .. } => "xon-xoff",
            ChannelRequest::Other { name, .. } => name,
        }
    }

    /// `exec` with a UTF-8 command line.
    pub fn exec(command: impl Into<String>) -> Self {
        ChannelRequest::Exec { command: command.into().into_bytes() }
    }

    pub(crate) fn encode_data(&self, out: &mut Vec<u8>) {
        match self {
            ChannelRequest::Pty(p) => {
                out.put_str(&p.term);
                out.put_u32(p.cols);
                out.put_u32(p.rows);
                out.put_u32(p.width_px);
                out.put_u32(p.height_px);
                let mut modes = Vec::with_capacity(p.modes.len() * 5 + 1);
                for (op, v) in &p.modes {
                    // Opcodes 160..255 take no argument we know how to encode; 0 ends the list.
                    if (1..160).contains(op) {
                        modes.push(*op);
                        modes.put_u32(*v);
                    }
                }
                modes.push(tty::TTY_OP_END);
                out.put_string(&modes);
            }
            ChannelRequest::Shell => {}
            ChannelRequest::Exec { command } => out.put_string(command),
            ChannelRequest::Subsystem { name } => out.put_str(name),
            ChannelRequest::Env { name, value } => {
                out.put_str(name);
                out.put_str(value);
            }
            ChannelRequest::WindowChange { cols, rows, width_px, height_px } => {
                out.put_u32(*cols);
                out.put_u32(*rows);
                out.put_u32(*width_px);
                out.put_u32(*height_px);
            }
            ChannelRequest::Signal { name } => out.put_str(name),
            ChannelRequest::ExitStatus { status } => out.put_u32(*status),
            ChannelRequest::ExitSignal { signal, core_dumped, message } => {
                out.put_str(signal);
                out.put_bool(*core_dumped);
                out.put_str(message);
                out.put_str("");
            }
            ChannelRequest::XonXoff { client_can_do } => out.put_bool(*client_can_do),
            ChannelRequest::Other { data, .. } => out.extend_from_slice(data),
        }
    }

    pub(crate) fn decode(name: &str, r: &mut Reader<'_>) -> Result<ChannelRequest, DecodeError> {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Ok(match name {
            "pty-req" => {
                let term = text(r.string("TERM")?);
                let cols = r.u32("columns")?;
                let rows = r.u32("rows")?;
                let width_px = r.u32("width")?;
                let height_px = r.u32("height")?;
                let mut m = Reader::new(r.string("terminal modes")?);
                let mut modes = Vec::new();
                while !m.is_empty() {
                    let op = m.u8("mode opcode")?;
                    // 0 ends the list; 160..=255 have no defined argument: stop there.
                    if op == tty::TTY_OP_END || op >= 160 {
                        break;
                    }
                    modes.push((op, m.u32("mode value")?));
                }
                ChannelRequest::Pty(Pty { term, cols, rows, width_px, height_px, modes })
            }
            "shell" => ChannelRequest::Shell,
            "exec" => ChannelRequest::Exec { command: r.string("command")?.to_vec() },
            "subsystem" => ChannelRequest::Subsystem { name: text(r.string("subsystem name")?) },
            "env" => ChannelRequest::Env {
                name: text(r.string("variable name")?),
                value: text(r.string("variable value")?),
            },
            "window-change" => ChannelRequest::WindowChange {
                cols: r.u32("columns")?,
                rows: r.u32("rows")?,
                width_px: r.u32("width")?,
                height_px: r.u32("height")?,
            },
            "signal" => ChannelRequest::Signal { name: text(r.string("signal name")?) },
            "exit-status" => ChannelRequest::ExitStatus { status: r.u32("exit status")? },
            "exit-signal" => ChannelRequest::ExitSignal {
                signal: text(r.string("signal name")?),
                core_dumped: r.bool("core dumped")?,
                message: text(r.string("error message")?),
            },
            "xon-xoff" => ChannelRequest::XonXoff { client_can_do: r.bool("client can do")? },
            other => ChannelRequest::Other { name: other.to_owned(), data: r.remaining().to_vec() },
        })
    }
}

/// A global request from the peer that the application may answer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GlobalRequest {
    /// `tcpip-forward`: listen on `address:port` (port 0: any) and open a
    /// `forwarded-tcpip` channel for every connection. Accept with the bound
    /// port when the request asked for port 0.
    TcpipForward {
        /// Address to bind (`""`, `localhost`, `0.0.0.0`, ...).
        address: String,
        /// Port to bind, 0 for any.
        port: u32,
    },
    /// `cancel-tcpip-forward`: stop a forwarding.
    CancelTcpipForward {
        /// The address it was bound to.
        address: String,
        /// The port.
        port: u32,
    },
    /// Any other request (e.g. `hostkeys-00@openssh.com`,
    /// `no-more-sessions@openssh.com`), with its raw data; only with
    /// `pass_unknown_requests` in the config, else the core refuses it.
    Other {
        /// Request name.
        name: String,
        /// Request-specific data, encoded.
        data: Vec<u8>,
    },
}

/// `tcpip-forward` (RFC 4254 §7.1).
pub(crate) const TCPIP_FORWARD: &str = "tcpip-forward";
/// `cancel-tcpip-forward` (RFC 4254 §7.1).
pub(crate) const CANCEL_TCPIP_FORWARD: &str = "cancel-tcpip-forward";

impl GlobalRequest {
    /// The request name.
    pub fn name(&self) -> &str {
        match self {
            GlobalRequest::TcpipForward { .. } => TCPIP_FORWARD,
            GlobalRequest::CancelTcpipForward { .. } => CANCEL_TCPIP_FORWARD,
            GlobalRequest::Other { name, .. } => name,
        }
    }

    /// Appends the request-specific data (what follows want-reply in GLOBAL_REQUEST).
    pub(crate) fn encode_data(&self, out: &mut Vec<u8>) {
        match self {
            GlobalRequest::TcpipForward { address, port }
            | GlobalRequest::CancelTcpipForward { address, port } => {
                out.put_str(address);
                out.put_u32(*port);
            }
            GlobalRequest::Other { data, .. } => out.extend_from_slice(data),
        }
    }

    /// Decodes the data of request `name` (as a server reads it: the
    /// forwarding requests typed, any other raw).
    pub(crate) fn decode(name: &str, data: &[u8]) -> Result<GlobalRequest, DecodeError> {
        let mut r = Reader::new(data);
        Ok(match name {
            TCPIP_FORWARD => GlobalRequest::TcpipForward {
                address: r.utf8("address to bind")?.to_owned(),
                port: r.u32("port to bind")?,
            },
            CANCEL_TCPIP_FORWARD => GlobalRequest::CancelTcpipForward {
                address: r.utf8("address to bind")?.to_owned(),
                port: r.u32("port to bind")?,
            },
            other => GlobalRequest::Other { name: other.to_owned(), data: data.to_vec() },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let reqs = [
            ChannelRequest::Pty(Pty {
                modes: vec![(tty::ECHO, 0), (tty::TTY_OP_ISPEED, 38400)],
                ..Pty::default()
            }),
            ChannelRequest::Shell,
            ChannelRequest::exec("echo hi"),
            ChannelRequest::Subsystem { name: "sftp".into() },
            ChannelRequest::Env { name: "LANG".into(), value: "C".into() },
            ChannelRequest::WindowChange { cols: 100, rows: 40, width_px: 0, height_px: 0 },
            ChannelRequest::Signal { name: "TERM".into() },
            ChannelRequest::ExitStatus { status: 3 },
            ChannelRequest::ExitSignal { signal: "KILL".into(), core_dumped: true, message: "oops".into() },
            ChannelRequest::XonXoff { client_can_do: true },
            ChannelRequest::Other { name: "x@y".into(), data: vec![1, 2, 3] },
        ];
        for req in reqs {
            let mut data = Vec::new();
            req.encode_data(&mut data);
            let mut r = Reader::new(&data);
            assert_eq!(ChannelRequest::decode(req.name(), &mut r).unwrap(), req);
        }
        let kinds = [
            ChannelKind::Session,
            ChannelKind::DirectTcpip {
                host: "h".into(),
                port: 80,
                originator_host: "o".into(),
                originator_port: 5,
            },
            ChannelKind::ForwardedTcpip {
                connected_host: "c".into(),
                connected_port: 1,
                originator_host: "o".into(),
                originator_port: 2,
            },
        ];
        for k in kinds {
            let mut data = Vec::new();
            k.encode_data(&mut data);
            assert_eq!(ChannelKind::decode(k.name(), &mut Reader::new(&data)).unwrap(), k);
        }
    }
}

//! SSH connection protocol messages (RFC 4254, message numbers 80–100) and the OpenSSH
//! extensions to it (OpenSSH `PROTOCOL` §2): a typed, borrowing codec.
//!
//! [`Message::parse`] turns one decrypted transport payload into a [`Message`] that borrows its
//! strings and data from the payload (channel data is never copied here); [`Message::encode`]
//! writes one back. Both go through [`Reader`] / [`Writer`].
//!
//! # Hostile input
//!
//! Every variable-length field has its own cap below the transport's packet cap (request and
//! channel type names 64 bytes as RFC 4250 §4.6.1 requires, an exec command 64 KiB, terminal modes
//! 4 KiB, ...): a field over its cap is [`DecodeError::FieldTooLong`], never silently cut. Bytes
//! after the last field of a known message are an error. Names of global requests, channel types
//! and channel requests must be printable US-ASCII (RFC 4251 §6); everything else a user or a
//! program chose (commands, environment values, paths, descriptions) is kept as bytes, because
//! OpenSSH does not require it to be UTF-8 and a relay must not change it. Nothing here panics on
//! any input.

use std::fmt;

use super::wire::{Reader, WireError, Writer};

/// Message numbers (RFC 4254 §9, RFC 4250 §4.1.2).
pub mod msg {
    /// SSH_MSG_GLOBAL_REQUEST
    pub const GLOBAL_REQUEST: u8 = 80;
    /// SSH_MSG_REQUEST_SUCCESS
    pub const REQUEST_SUCCESS: u8 = 81;
    /// SSH_MSG_REQUEST_FAILURE
    pub const REQUEST_FAILURE: u8 = 82;
    /// SSH_MSG_CHANNEL_OPEN
    pub const CHANNEL_OPEN: u8 = 90;
    /// SSH_MSG_CHANNEL_OPEN_CONFIRMATION
    pub const CHANNEL_OPEN_CONFIRMATION: u8 = 91;
    /// SSH_MSG_CHANNEL_OPEN_FAILURE
    pub const CHANNEL_OPEN_FAILURE: u8 = 92;
    /// SSH_MSG_CHANNEL_WINDOW_ADJUST
    pub const CHANNEL_WINDOW_ADJUST: u8 = 93;
    /// SSH_MSG_CHANNEL_DATA
    pub const CHANNEL_DATA: u8 = 94;
    /// SSH_MSG_CHANNEL_EXTENDED_DATA
    pub const CHANNEL_EXTENDED_DATA: u8 = 95;
    /// SSH_MSG_CHANNEL_EOF
    pub const CHANNEL_EOF: u8 = 96;
    /// SSH_MSG_CHANNEL_CLOSE
    pub const CHANNEL_CLOSE: u8 = 97;
    /// SSH_MSG_CHANNEL_REQUEST
    pub const CHANNEL_REQUEST: u8 = 98;
    /// SSH_MSG_CHANNEL_SUCCESS
    pub const CHANNEL_SUCCESS: u8 = 99;
    /// SSH_MSG_CHANNEL_FAILURE
    pub const CHANNEL_FAILURE: u8 = 100;
}

/// RFC 4254 §5.2: "SSH_EXTENDED_DATA_STDERR 1", the only extended data type defined.
pub const EXTENDED_DATA_STDERR: u32 = 1;

/// Longest request or channel type name. RFC 4250 §4.6.1: "Names MUST NOT be longer than 64
/// characters."
pub const MAX_NAME: usize = 64;
/// Longest host name or address (tcpip-forward, direct-tcpip, ...): a DNS name is at most 253
/// bytes; the slack covers bracketed IPv6 literals with zone ids.
pub const MAX_HOST: usize = 255;
/// Longest Unix socket path (streamlocal): `sun_path` is 108 bytes on Linux; the cap leaves room
/// for other systems without letting a path be a megabyte.
pub const MAX_SOCKET_PATH: usize = 1024;
/// Longest exec command. OpenSSH has no cap of its own below its 256 KiB packet limit; 64 KiB holds
/// any command line a person or rsync/scp builds, and the policy classifier sees it whole.
pub const MAX_EXEC_COMMAND: usize = 64 * 1024;
/// Longest environment variable name.
pub const MAX_ENV_NAME: usize = 256;
/// Longest environment variable value.
pub const MAX_ENV_VALUE: usize = 16 * 1024;
/// Longest encoded terminal modes blob (RFC 4254 §8). OpenSSH writes ~60 opcodes of 5 bytes.
pub const MAX_TERMINAL_MODES: usize = 4096;
/// Longest `TERM` value in a pty-req.
pub const MAX_TERM: usize = 256;
/// Longest subsystem name.
pub const MAX_SUBSYSTEM: usize = 256;
/// Longest signal name (RFC 4254 §6.10 names are like "INT", "USR1", or "name@domain").
pub const MAX_SIGNAL: usize = 64;
/// Longest human-readable text (open failure description, exit-signal message) and language tag.
pub const MAX_TEXT: usize = 4096;
/// Longest X11 authentication protocol name and cookie.
pub const MAX_X11_FIELD: usize = 1024;
/// Most host keys in one hostkeys-00 / hostkeys-prove-00 request (OpenSSH offers one per type).
pub const MAX_HOST_KEYS: usize = 32;
/// Longest opaque trailing data kept for an unknown request or channel type, and for the data of
/// a REQUEST_SUCCESS or OPEN_CONFIRMATION.
pub const MAX_OPAQUE: usize = 32 * 1024;

/// Why a payload is not a well-formed connection protocol message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The payload is empty (no message number).
    Empty,
    /// The message number is not one of the connection protocol's (80–100).
    NotConnectionMessage(u8),
    /// A field is malformed at the wire level (truncated, over `wire::MAX_FIELD`, trailing bytes,
    /// non-canonical boolean).
    Wire(WireError),
    /// A field is longer than its cap; the text names the field.
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Its cap in bytes.
        max: usize,
    },
    /// A request or channel type name is empty, longer than [`MAX_NAME`], or not printable
    /// US-ASCII.
    BadName,
    /// More than [`MAX_HOST_KEYS`] host keys in one request.
    TooManyHostKeys,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("empty payload"),
            Self::NotConnectionMessage(n) => {
                write!(f, "message {n} is not a connection protocol message")
            }
            Self::Wire(e) => write!(f, "malformed message: {e}"),
            Self::FieldTooLong { field, max } => {
                write!(f, "{field} is longer than {max} bytes")
            }
            Self::BadName => f.write_str("request or channel type name is not a valid SSH name"),
            Self::TooManyHostKeys => {
                write!(f, "more than {MAX_HOST_KEYS} host keys in one request")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

impl From<WireError> for DecodeError {
    fn from(e: WireError) -> Self {
        DecodeError::Wire(e)
    }
}

/// One connection protocol message, borrowing from the payload it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    /// SSH_MSG_GLOBAL_REQUEST (RFC 4254 §4).
    GlobalRequest(GlobalRequest<'a>),
    /// SSH_MSG_REQUEST_SUCCESS. RFC 4254 §4: "byte SSH_MSG_REQUEST_SUCCESS, ....  response
    /// specific data"; the data's shape depends on the request it answers (a bound port for
    /// tcpip-forward to port 0, signatures for hostkeys-prove-00), so it is kept raw.
    RequestSuccess {
        /// Request-specific data (often empty).
        data: &'a [u8],
    },
    /// SSH_MSG_REQUEST_FAILURE.
    RequestFailure,
    /// SSH_MSG_CHANNEL_OPEN (RFC 4254 §5.1).
    ChannelOpen(ChannelOpen<'a>),
    /// SSH_MSG_CHANNEL_OPEN_CONFIRMATION.
    OpenConfirmation(OpenConfirmation<'a>),
    /// SSH_MSG_CHANNEL_OPEN_FAILURE.
    OpenFailure(OpenFailure<'a>),
    /// SSH_MSG_CHANNEL_WINDOW_ADJUST (RFC 4254 §5.2).
    WindowAdjust {
        /// Recipient channel.
        recipient: u32,
        /// Bytes to add to the window.
        bytes: u32,
    },
    /// SSH_MSG_CHANNEL_DATA.
    Data {
        /// Recipient channel.
        recipient: u32,
        /// The data, borrowed from the payload.
        data: &'a [u8],
    },
    /// SSH_MSG_CHANNEL_EXTENDED_DATA.
    ExtendedData {
        /// Recipient channel.
        recipient: u32,
        /// Data type code ([`EXTENDED_DATA_STDERR`] is the only one defined).
        data_type: u32,
        /// The data, borrowed from the payload.
        data: &'a [u8],
    },
    /// SSH_MSG_CHANNEL_EOF (RFC 4254 §5.3).
    Eof {
        /// Recipient channel.
        recipient: u32,
    },
    /// SSH_MSG_CHANNEL_CLOSE.
    Close {
        /// Recipient channel.
        recipient: u32,
    },
    /// SSH_MSG_CHANNEL_REQUEST (RFC 4254 §5.4).
    ChannelRequest(ChannelRequest<'a>),
    /// SSH_MSG_CHANNEL_SUCCESS.
    ChannelSuccess {
        /// Recipient channel.
        recipient: u32,
    },
    /// SSH_MSG_CHANNEL_FAILURE.
    ChannelFailure {
        /// Recipient channel.
        recipient: u32,
    },
}

/// SSH_MSG_GLOBAL_REQUEST: "string request name in US-ASCII only, boolean want reply, ....
/// request-specific data follows".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalRequest<'a> {
    /// Whether the sender waits for REQUEST_SUCCESS / REQUEST_FAILURE.
    pub want_reply: bool,
    /// The request and its fields.
    pub kind: GlobalRequestKind<'a>,
}

/// The global requests the gateway knows.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GlobalRequestKind<'a> {
    /// RFC 4254 §7.1 "tcpip-forward": "string address to bind, uint32 port number to bind".
    TcpipForward {
        /// Address to bind ("" means all, "localhost" loopback).
        address: &'a [u8],
        /// Port to bind (0: the server picks one and returns it in REQUEST_SUCCESS).
        port: u32,
    },
    /// RFC 4254 §7.1 "cancel-tcpip-forward": same fields.
    CancelTcpipForward {
        /// Bound address.
        address: &'a [u8],
        /// Bound port.
        port: u32,
    },
    /// "keepalive@openssh.com" (no fields): sent by ServerAliveInterval / ClientAliveInterval to
    /// see that the peer answers; any answer will do.
    Keepalive,
    /// OpenSSH PROTOCOL §2.2 "no-more-sessions@openssh.com" (no fields).
    NoMoreSessions,
    /// OpenSSH PROTOCOL §2.5 "hostkeys-00@openssh.com": "string[] hostkeys".
    HostKeys {
        /// Public key blobs.
        keys: Vec<&'a [u8]>,
    },
    /// OpenSSH PROTOCOL §2.5 "hostkeys-prove-00@openssh.com": "string[] hostkeys".
    HostKeysProve {
        /// Public key blobs whose ownership the client asks to be proven.
        keys: Vec<&'a [u8]>,
    },
    /// Any other request, kept whole so it can be refused (or forwarded) without understanding it.
    Unknown {
        /// The request name.
        name: &'a str,
        /// The request-specific data.
        data: &'a [u8],
    },
}

impl GlobalRequestKind<'_> {
    /// The request name as it appears on the wire.
    pub fn name(&self) -> &str {
        match self {
            Self::TcpipForward { .. } => "tcpip-forward",
            Self::CancelTcpipForward { .. } => "cancel-tcpip-forward",
            Self::Keepalive => "keepalive@openssh.com",
            Self::NoMoreSessions => "no-more-sessions@openssh.com",
            Self::HostKeys { .. } => "hostkeys-00@openssh.com",
            Self::HostKeysProve { .. } => "hostkeys-prove-00@openssh.com",
            Self::Unknown { name, .. } => name,
        }
    }
}

/// SSH_MSG_CHANNEL_OPEN: "string channel type in US-ASCII only, uint32 sender channel, uint32
/// initial window size, uint32 maximum packet size, .... channel type specific data follows".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelOpen<'a> {
    /// The sender's channel number (the recipient of everything sent back on this channel).
    pub sender: u32,
    /// How many bytes the sender will accept before a WINDOW_ADJUST.
    pub initial_window: u32,
    /// Largest data field the sender accepts in one message.
    pub max_packet: u32,
    /// The channel type and its fields.
    pub kind: ChannelKind<'a>,
}

/// Channel types (RFC 4254 §6.1, §6.3.2, §7.2; OpenSSH PROTOCOL §2.4 and PROTOCOL.agent).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelKind<'a> {
    /// "session" (no fields).
    Session,
    /// "direct-tcpip" (client asks the server to connect): "string host to connect, uint32 port
    /// to connect, string originator IP address, uint32 originator port".
    DirectTcpip {
        /// Host to connect to.
        host: &'a [u8],
        /// Port to connect to.
        port: u32,
        /// Where the forwarded connection came from.
        originator: &'a [u8],
        /// Its port.
        originator_port: u32,
    },
    /// "forwarded-tcpip" (server reports a connection to a remote-forwarded port): "string
    /// address that was connected, uint32 port that was connected, string originator IP address,
    /// uint32 originator port".
    ForwardedTcpip {
        /// Address that was connected.
        address: &'a [u8],
        /// Port that was connected.
        port: u32,
        /// Where the connection came from.
        originator: &'a [u8],
        /// Its port.
        originator_port: u32,
    },
    /// "x11": "string originator address, uint32 originator port".
    X11 {
        /// Originator address.
        originator: &'a [u8],
        /// Originator port.
        originator_port: u32,
    },
    /// "auth-agent@openssh.com" (no fields): the server reaches the client's agent.
    AuthAgent,
    /// "direct-streamlocal@openssh.com": "string socket path, string reserved, uint32 reserved".
    DirectStreamlocal {
        /// Socket path on the server.
        socket_path: &'a [u8],
        /// Reserved string (OpenSSH sends "").
        reserved: &'a [u8],
        /// Reserved number (OpenSSH sends 0).
        reserved_port: u32,
    },
    /// "forwarded-streamlocal@openssh.com": "string socket path, string reserved for future use".
    ForwardedStreamlocal {
        /// Socket path that was connected.
        socket_path: &'a [u8],
        /// Reserved string.
        reserved: &'a [u8],
    },
    /// Any other type, kept whole.
    Unknown {
        /// The channel type name.
        name: &'a str,
        /// The type-specific data.
        data: &'a [u8],
    },
}

impl ChannelKind<'_> {
    /// The channel type as it appears on the wire.
    pub fn name(&self) -> &str {
        match self {
            Self::Session => "session",
            Self::DirectTcpip { .. } => "direct-tcpip",
            Self::ForwardedTcpip { .. } => "forwarded-tcpip",
            Self::X11 { .. } => "x11",
            Self::AuthAgent => "auth-agent@openssh.com",
            Self::DirectStreamlocal { .. } => "direct-streamlocal@openssh.com",
            Self::ForwardedStreamlocal { .. } => "forwarded-streamlocal@openssh.com",
            Self::Unknown { name, .. } => name,
        }
    }
}

/// SSH_MSG_CHANNEL_OPEN_CONFIRMATION: "uint32 recipient channel, uint32 sender channel, uint32
/// initial window size, uint32 maximum packet size, .... channel type specific data follows".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenConfirmation<'a> {
    /// Recipient channel (the opener's number).
    pub recipient: u32,
    /// Sender channel (the confirmer's number).
    pub sender: u32,
    /// How many bytes the confirmer will accept before a WINDOW_ADJUST.
    pub initial_window: u32,
    /// Largest data field the confirmer accepts in one message.
    pub max_packet: u32,
    /// Type-specific data (empty for every type defined so far).
    pub data: &'a [u8],
}

/// SSH_MSG_CHANNEL_OPEN_FAILURE: "uint32 recipient channel, uint32 reason code, string description
/// in ISO-10646 UTF-8 encoding, string language tag".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenFailure<'a> {
    /// Recipient channel (the opener's number).
    pub recipient: u32,
    /// Why.
    pub reason: OpenFailureReason,
    /// Human-readable text, kept as bytes (not every server sends valid UTF-8).
    pub description: &'a [u8],
    /// Language tag (usually empty).
    pub language: &'a [u8],
}

/// RFC 4254 §5.1 reason codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenFailureReason {
    /// SSH_OPEN_ADMINISTRATIVELY_PROHIBITED (1).
    AdministrativelyProhibited,
    /// SSH_OPEN_CONNECT_FAILED (2).
    ConnectFailed,
    /// SSH_OPEN_UNKNOWN_CHANNEL_TYPE (3).
    UnknownChannelType,
    /// SSH_OPEN_RESOURCE_SHORTAGE (4).
    ResourceShortage,
    /// Any other code ("0xFE000000 through 0xFFFFFFFF" are for local use).
    Other(u32),
}

impl OpenFailureReason {
    /// The wire code.
    pub fn code(self) -> u32 {
        match self {
            Self::AdministrativelyProhibited => 1,
            Self::ConnectFailed => 2,
            Self::UnknownChannelType => 3,
            Self::ResourceShortage => 4,
            Self::Other(n) => n,
        }
    }

    /// The reason for a wire code.
    pub fn from_code(code: u32) -> Self {
        match code {
            1 => Self::AdministrativelyProhibited,
            2 => Self::ConnectFailed,
            3 => Self::UnknownChannelType,
            4 => Self::ResourceShortage,
            n => Self::Other(n),
        }
    }
}

/// SSH_MSG_CHANNEL_REQUEST: "uint32 recipient channel, string request type in US-ASCII
/// characters only, boolean want reply, .... type-specific data follows".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRequest<'a> {
    /// Recipient channel.
    pub recipient: u32,
    /// Whether the sender waits for CHANNEL_SUCCESS / CHANNEL_FAILURE.
    pub want_reply: bool,
    /// The request and its fields.
    pub kind: ChannelRequestKind<'a>,
}

/// Terminal size as sent in pty-req and window-change (RFC 4254 §6.2, §6.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TerminalSize {
    /// Width in characters.
    pub cols: u32,
    /// Height in rows.
    pub rows: u32,
    /// Width in pixels (0 when unknown).
    pub width_px: u32,
    /// Height in pixels (0 when unknown).
    pub height_px: u32,
}

/// Channel request types (RFC 4254 §6, OpenSSH PROTOCOL §2.1 and PROTOCOL.agent).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelRequestKind<'a> {
    /// §6.2 "pty-req": "string TERM environment variable value, uint32 terminal width,
    /// characters, uint32 terminal height, rows, uint32 terminal width, pixels, uint32 terminal
    /// height, pixels, string encoded terminal modes".
    PtyReq {
        /// `TERM`.
        term: &'a [u8],
        /// Initial size.
        size: TerminalSize,
        /// Encoded terminal modes (§8), kept raw and capped at [`MAX_TERMINAL_MODES`].
        modes: &'a [u8],
    },
    /// §6.3.1 "x11-req": "boolean single connection, string x11 authentication protocol, string
    /// x11 authentication cookie, uint32 x11 screen number".
    X11Req {
        /// Only one X11 connection is to be forwarded.
        single_connection: bool,
        /// E.g. "MIT-MAGIC-COOKIE-1".
        auth_protocol: &'a [u8],
        /// Hex cookie.
        auth_cookie: &'a [u8],
        /// Screen number.
        screen: u32,
    },
    /// §6.4 "env": "string variable name, string variable value".
    Env {
        /// Variable name.
        name: &'a [u8],
        /// Variable value.
        value: &'a [u8],
    },
    /// §6.5 "shell" (no fields).
    Shell,
    /// §6.5 "exec": "string command".
    Exec {
        /// The command line, bytes as sent (not necessarily UTF-8).
        command: &'a [u8],
    },
    /// §6.5 "subsystem": "string subsystem name".
    Subsystem {
        /// E.g. "sftp".
        name: &'a [u8],
    },
    /// §6.7 "window-change": "uint32 terminal width, columns, uint32 terminal height, rows,
    /// uint32 terminal width, pixels, uint32 terminal height, pixels".
    WindowChange {
        /// New size.
        size: TerminalSize,
    },
    /// §6.8 "xon-xoff": "boolean client can do".
    XonXoff {
        /// Whether the client may do flow control itself.
        client_can_do: bool,
    },
    /// §6.9 "signal": "string signal name (without the "SIG" prefix)".
    Signal {
        /// E.g. "INT".
        name: &'a str,
    },
    /// §6.10 "exit-status": "uint32 exit_status".
    ExitStatus {
        /// The exit status.
        status: u32,
    },
    /// §6.10 "exit-signal": "string signal name (without the "SIG" prefix), boolean core dumped,
    /// string error message in ISO-10646 UTF-8 encoding, string language tag".
    ExitSignal {
        /// E.g. "KILL".
        signal: &'a str,
        /// Whether a core was dumped.
        core_dumped: bool,
        /// Message, kept as bytes.
        message: &'a [u8],
        /// Language tag.
        language: &'a [u8],
    },
    /// RFC 4335 "break": "uint32 break-length in milliseconds".
    Break {
        /// Length in milliseconds.
        length_ms: u32,
    },
    /// PROTOCOL.agent "auth-agent-req@openssh.com" (no fields): agent forwarding.
    AuthAgentReq,
    /// OpenSSH PROTOCOL §2.1 "eow@openssh.com" (no fields): end of write.
    Eow,
    /// "keepalive@openssh.com" (no fields), sent by sshd's ClientAliveInterval on a channel.
    Keepalive,
    /// Any other request, kept whole.
    Unknown {
        /// The request type name.
        name: &'a str,
        /// The type-specific data.
        data: &'a [u8],
    },
}

impl ChannelRequestKind<'_> {
    /// The request type as it appears on the wire.
    pub fn name(&self) -> &str {
        match self {
            Self::PtyReq { .. } => "pty-req",
            Self::X11Req { .. } => "x11-req",
            Self::Env { .. } => "env",
            Self::Shell => "shell",
            Self::Exec { .. } => "exec",
            Self::Subsystem { .. } => "subsystem",
            Self::WindowChange { .. } => "window-change",
            Self::XonXoff { .. } => "xon-xoff",
            Self::Signal { .. } => "signal",
            Self::ExitStatus { .. } => "exit-status",
            Self::ExitSignal { .. } => "exit-signal",
            Self::Break { .. } => "break",
            Self::AuthAgentReq => "auth-agent-req@openssh.com",
            Self::Eow => "eow@openssh.com",
            Self::Keepalive => "keepalive@openssh.com",
            Self::Unknown { name, .. } => name,
        }
    }
}

/// The recipient channel of a channel-level message (numbers 91–100), read without decoding the
/// rest: it sits right after the message number in every one of them.
pub fn recipient_of(payload: &[u8]) -> Option<u32> {
    match payload {
        [n, a, b, c, d, ..]
            if (msg::CHANNEL_OPEN_CONFIRMATION..=msg::CHANNEL_FAILURE).contains(n) =>
        {
            Some(u32::from_be_bytes([*a, *b, *c, *d]))
        }
        _ => None,
    }
}

/// Overwrites the recipient channel of a channel-level message (91–100) in place; the relay uses
/// it to forward a request byte for byte under the other connection's channel number. Returns
/// false (and changes nothing) for any other payload.
pub fn set_recipient(payload: &mut [u8], recipient: u32) -> bool {
    if recipient_of(payload).is_none() {
        return false;
    }
    match payload.get_mut(1..5) {
        Some(field) => {
            field.copy_from_slice(&recipient.to_be_bytes());
            true
        }
        None => false,
    }
}

fn capped<'a>(
    r: &mut Reader<'a>,
    field: &'static str,
    max: usize,
) -> Result<&'a [u8], DecodeError> {
    let v = r.string()?;
    if v.len() > max {
        return Err(DecodeError::FieldTooLong { field, max });
    }
    Ok(v)
}

/// RFC 4251 §6: names are printable US-ASCII, no spaces or controls; RFC 4250 §4.6.1: at most 64.
fn name<'a>(r: &mut Reader<'a>) -> Result<&'a str, DecodeError> {
    let raw = r.string()?;
    if raw.is_empty() || raw.len() > MAX_NAME || !raw.iter().all(u8::is_ascii_graphic) {
        return Err(DecodeError::BadName);
    }
    std::str::from_utf8(raw).map_err(|_| DecodeError::BadName)
}

fn signal_name<'a>(r: &mut Reader<'a>) -> Result<&'a str, DecodeError> {
    let raw = capped(r, "signal name", MAX_SIGNAL)?;
    if !raw.iter().all(u8::is_ascii_graphic) {
        return Err(DecodeError::BadName);
    }
    std::str::from_utf8(raw).map_err(|_| DecodeError::BadName)
}

fn opaque<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], DecodeError> {
    let rest = r.rest();
    if rest.len() > MAX_OPAQUE {
        return Err(DecodeError::FieldTooLong {
            field: "request-specific data",
            max: MAX_OPAQUE,
        });
    }
    Ok(rest)
}

fn host_keys<'a>(r: &mut Reader<'a>) -> Result<Vec<&'a [u8]>, DecodeError> {
    let mut keys = Vec::new();
    while !r.is_empty() {
        if keys.len() == MAX_HOST_KEYS {
            return Err(DecodeError::TooManyHostKeys);
        }
        keys.push(capped(r, "host key", MAX_TEXT)?);
    }
    Ok(keys)
}

fn terminal_size(r: &mut Reader<'_>) -> Result<TerminalSize, DecodeError> {
    Ok(TerminalSize {
        cols: r.u32()?,
        rows: r.u32()?,
        width_px: r.u32()?,
        height_px: r.u32()?,
    })
}

impl<'a> Message<'a> {
    /// Decodes one transport payload (message number included).
    ///
    /// # Errors
    /// [`DecodeError`] when the payload is not exactly one well-formed connection message with
    /// every field within its cap.
    pub fn parse(payload: &'a [u8]) -> Result<Message<'a>, DecodeError> {
        let mut r = Reader::new(payload);
        let number = r.u8().map_err(|_| DecodeError::Empty)?;
        let message = match number {
            msg::GLOBAL_REQUEST => Message::GlobalRequest(parse_global_request(&mut r)?),
            msg::REQUEST_SUCCESS => Message::RequestSuccess {
                data: opaque(&mut r)?,
            },
            msg::REQUEST_FAILURE => Message::RequestFailure,
            msg::CHANNEL_OPEN => Message::ChannelOpen(parse_channel_open(&mut r)?),
            msg::CHANNEL_OPEN_CONFIRMATION => Message::OpenConfirmation(OpenConfirmation {
                recipient: r.u32()?,
                sender: r.u32()?,
                initial_window: r.u32()?,
                max_packet: r.u32()?,
                data: opaque(&mut r)?,
            }),
            msg::CHANNEL_OPEN_FAILURE => Message::OpenFailure(OpenFailure {
                recipient: r.u32()?,
                reason: OpenFailureReason::from_code(r.u32()?),
                description: capped(&mut r, "open failure description", MAX_TEXT)?,
                language: capped(&mut r, "language tag", MAX_TEXT)?,
            }),
            msg::CHANNEL_WINDOW_ADJUST => Message::WindowAdjust {
                recipient: r.u32()?,
                bytes: r.u32()?,
            },
            msg::CHANNEL_DATA => Message::Data {
                recipient: r.u32()?,
                data: r.string()?,
            },
            msg::CHANNEL_EXTENDED_DATA => Message::ExtendedData {
                recipient: r.u32()?,
                data_type: r.u32()?,
                data: r.string()?,
            },
            msg::CHANNEL_EOF => Message::Eof {
                recipient: r.u32()?,
            },
            msg::CHANNEL_CLOSE => Message::Close {
                recipient: r.u32()?,
            },
            msg::CHANNEL_REQUEST => Message::ChannelRequest(parse_channel_request(&mut r)?),
            msg::CHANNEL_SUCCESS => Message::ChannelSuccess {
                recipient: r.u32()?,
            },
            msg::CHANNEL_FAILURE => Message::ChannelFailure {
                recipient: r.u32()?,
            },
            other => return Err(DecodeError::NotConnectionMessage(other)),
        };
        r.finish()?;
        Ok(message)
    }

    /// Encodes the message as one transport payload.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::GlobalRequest(req) => encode_global_request(req),
            Message::RequestSuccess { data } => {
                let mut w = Writer::message(msg::REQUEST_SUCCESS);
                w.raw(data);
                w.into_bytes()
            }
            Message::RequestFailure => vec![msg::REQUEST_FAILURE],
            Message::ChannelOpen(open) => encode_channel_open(open),
            Message::OpenConfirmation(c) => {
                let mut w = Writer::message(msg::CHANNEL_OPEN_CONFIRMATION);
                w.u32(c.recipient)
                    .u32(c.sender)
                    .u32(c.initial_window)
                    .u32(c.max_packet)
                    .raw(c.data);
                w.into_bytes()
            }
            Message::OpenFailure(f) => {
                let mut w = Writer::message(msg::CHANNEL_OPEN_FAILURE);
                w.u32(f.recipient)
                    .u32(f.reason.code())
                    .string(f.description)
                    .string(f.language);
                w.into_bytes()
            }
            Message::WindowAdjust { recipient, bytes } => {
                let mut w = Writer::message(msg::CHANNEL_WINDOW_ADJUST);
                w.u32(*recipient).u32(*bytes);
                w.into_bytes()
            }
            Message::Data { recipient, data } => {
                let mut w = Writer::message(msg::CHANNEL_DATA);
                w.u32(*recipient).string(data);
                w.into_bytes()
            }
            Message::ExtendedData {
                recipient,
                data_type,
                data,
            } => {
                let mut w = Writer::message(msg::CHANNEL_EXTENDED_DATA);
                w.u32(*recipient).u32(*data_type).string(data);
                w.into_bytes()
            }
            Message::Eof { recipient } => channel_only(msg::CHANNEL_EOF, *recipient),
            Message::Close { recipient } => channel_only(msg::CHANNEL_CLOSE, *recipient),
            Message::ChannelRequest(req) => encode_channel_request(req),
            Message::ChannelSuccess { recipient } => channel_only(msg::CHANNEL_SUCCESS, *recipient),
            Message::ChannelFailure { recipient } => channel_only(msg::CHANNEL_FAILURE, *recipient),
        }
    }
}

fn channel_only(number: u8, recipient: u32) -> Vec<u8> {
    let mut w = Writer::message(number);
    w.u32(recipient);
    w.into_bytes()
}

fn parse_global_request<'a>(r: &mut Reader<'a>) -> Result<GlobalRequest<'a>, DecodeError> {
    let request = name(r)?;
    let want_reply = r.bool()?;
    let kind = match request {
        "tcpip-forward" => GlobalRequestKind::TcpipForward {
            address: capped(r, "bind address", MAX_HOST)?,
            port: r.u32()?,
        },
        "cancel-tcpip-forward" => GlobalRequestKind::CancelTcpipForward {
            address: capped(r, "bind address", MAX_HOST)?,
            port: r.u32()?,
        },
        "keepalive@openssh.com" => GlobalRequestKind::Keepalive,
        "no-more-sessions@openssh.com" => GlobalRequestKind::NoMoreSessions,
        "hostkeys-00@openssh.com" => GlobalRequestKind::HostKeys {
            keys: host_keys(r)?,
        },
        "hostkeys-prove-00@openssh.com" => GlobalRequestKind::HostKeysProve {
            keys: host_keys(r)?,
        },
        other => GlobalRequestKind::Unknown {
            name: other,
            data: opaque(r)?,
        },
    };
    Ok(GlobalRequest { want_reply, kind })
}

fn encode_global_request(req: &GlobalRequest<'_>) -> Vec<u8> {
    let mut w = Writer::message(msg::GLOBAL_REQUEST);
    w.string(req.kind.name().as_bytes()).bool(req.want_reply);
    match &req.kind {
        GlobalRequestKind::TcpipForward { address, port }
        | GlobalRequestKind::CancelTcpipForward { address, port } => {
            w.string(address).u32(*port);
        }
        GlobalRequestKind::Keepalive | GlobalRequestKind::NoMoreSessions => {}
        GlobalRequestKind::HostKeys { keys } | GlobalRequestKind::HostKeysProve { keys } => {
            for key in keys {
                w.string(key);
            }
        }
        GlobalRequestKind::Unknown { data, .. } => {
            w.raw(data);
        }
    }
    w.into_bytes()
}

fn parse_channel_open<'a>(r: &mut Reader<'a>) -> Result<ChannelOpen<'a>, DecodeError> {
    let channel_type = name(r)?;
    let sender = r.u32()?;
    let initial_window = r.u32()?;
    let max_packet = r.u32()?;
    let kind = match channel_type {
        "session" => ChannelKind::Session,
        "direct-tcpip" => ChannelKind::DirectTcpip {
            host: capped(r, "host to connect", MAX_HOST)?,
            port: r.u32()?,
            originator: capped(r, "originator address", MAX_HOST)?,
            originator_port: r.u32()?,
        },
        "forwarded-tcpip" => ChannelKind::ForwardedTcpip {
            address: capped(r, "connected address", MAX_HOST)?,
            port: r.u32()?,
            originator: capped(r, "originator address", MAX_HOST)?,
            originator_port: r.u32()?,
        },
        "x11" => ChannelKind::X11 {
            originator: capped(r, "originator address", MAX_HOST)?,
            originator_port: r.u32()?,
        },
        "auth-agent@openssh.com" => ChannelKind::AuthAgent,
        "direct-streamlocal@openssh.com" => ChannelKind::DirectStreamlocal {
            socket_path: capped(r, "socket path", MAX_SOCKET_PATH)?,
            reserved: capped(r, "reserved", MAX_SOCKET_PATH)?,
            reserved_port: r.u32()?,
        },
        "forwarded-streamlocal@openssh.com" => ChannelKind::ForwardedStreamlocal {
            socket_path: capped(r, "socket path", MAX_SOCKET_PATH)?,
            reserved: capped(r, "reserved", MAX_SOCKET_PATH)?,
        },
        other => ChannelKind::Unknown {
            name: other,
            data: opaque(r)?,
        },
    };
    Ok(ChannelOpen {
        sender,
        initial_window,
        max_packet,
        kind,
    })
}

fn encode_channel_open(open: &ChannelOpen<'_>) -> Vec<u8> {
    let mut w = Writer::message(msg::CHANNEL_OPEN);
    w.string(open.kind.name().as_bytes())
        .u32(open.sender)
        .u32(open.initial_window)
        .u32(open.max_packet);
    match &open.kind {
        ChannelKind::Session | ChannelKind::AuthAgent => {}
        ChannelKind::DirectTcpip {
            host: a,
            port,
            originator,
            originator_port,
        }
        | ChannelKind::ForwardedTcpip {
            address: a,
            port,
            originator,
            originator_port,
        } => {
            w.string(a)
                .u32(*port)
                .string(originator)
                .u32(*originator_port);
        }
        ChannelKind::X11 {
            originator,
            originator_port,
        } => {
            w.string(originator).u32(*originator_port);
        }
        ChannelKind::DirectStreamlocal {
            socket_path,
            reserved,
            reserved_port,
        } => {
            w.string(socket_path).string(reserved).u32(*reserved_port);
        }
        ChannelKind::ForwardedStreamlocal {
            socket_path,
            reserved,
        } => {
            w.string(socket_path).string(reserved);
        }
        ChannelKind::Unknown { data, .. } => {
            w.raw(data);
        }
    }
    w.into_bytes()
}

fn parse_channel_request<'a>(r: &mut Reader<'a>) -> Result<ChannelRequest<'a>, DecodeError> {
    let recipient = r.u32()?;
    let request = name(r)?;
    let want_reply = r.bool()?;
    let kind = match request {
        "pty-req" => ChannelRequestKind::PtyReq {
            term: capped(r, "TERM", MAX_TERM)?,
            size: terminal_size(r)?,
            modes: capped(r, "terminal modes", MAX_TERMINAL_MODES)?,
        },
        "x11-req" => ChannelRequestKind::X11Req {
            single_connection: r.bool()?,
            auth_protocol: capped(r, "x11 auth protocol", MAX_X11_FIELD)?,
            auth_cookie: capped(r, "x11 auth cookie", MAX_X11_FIELD)?,
            screen: r.u32()?,
        },
        "env" => ChannelRequestKind::Env {
            name: capped(r, "env name", MAX_ENV_NAME)?,
            value: capped(r, "env value", MAX_ENV_VALUE)?,
        },
        "shell" => ChannelRequestKind::Shell,
        "exec" => ChannelRequestKind::Exec {
            command: capped(r, "exec command", MAX_EXEC_COMMAND)?,
        },
        "subsystem" => ChannelRequestKind::Subsystem {
            name: capped(r, "subsystem name", MAX_SUBSYSTEM)?,
        },
        "window-change" => ChannelRequestKind::WindowChange {
            size: terminal_size(r)?,
        },
        "xon-xoff" => ChannelRequestKind::XonXoff {
            client_can_do: r.bool()?,
        },
        "signal" => ChannelRequestKind::Signal {
            name: signal_name(r)?,
        },
        "exit-status" => ChannelRequestKind::ExitStatus { status: r.u32()? },
        "exit-signal" => ChannelRequestKind::ExitSignal {
            signal: signal_name(r)?,
            core_dumped: r.bool()?,
            message: capped(r, "exit-signal message", MAX_TEXT)?,
            language: capped(r, "language tag", MAX_TEXT)?,
        },
        "break" => ChannelRequestKind::Break {
            length_ms: r.u32()?,
        },
        "auth-agent-req@openssh.com" => ChannelRequestKind::AuthAgentReq,
        "eow@openssh.com" => ChannelRequestKind::Eow,
        "keepalive@openssh.com" => ChannelRequestKind::Keepalive,
        other => ChannelRequestKind::Unknown {
            name: other,
            data: opaque(r)?,
        },
    };
    Ok(ChannelRequest {
        recipient,
        want_reply,
        kind,
    })
}

fn put_size(w: &mut Writer, size: &TerminalSize) {
    w.u32(size.cols)
        .u32(size.rows)
        .u32(size.width_px)
        .u32(size.height_px);
}

fn encode_channel_request(req: &ChannelRequest<'_>) -> Vec<u8> {
    let mut w = Writer::message(msg::CHANNEL_REQUEST);
    w.u32(req.recipient)
        .string(req.kind.name().as_bytes())
        .bool(req.want_reply);
    match &req.kind {
        ChannelRequestKind::PtyReq { term, size, modes } => {
            w.string(term);
            put_size(&mut w, size);
            w.string(modes);
        }
        ChannelRequestKind::X11Req {
            single_connection,
            auth_protocol,
            auth_cookie,
            screen,
        } => {
            w.bool(*single_connection)
                .string(auth_protocol)
                .string(auth_cookie)
                .u32(*screen);
        }
        ChannelRequestKind::Env { name, value } => {
            w.string(name).string(value);
        }
        ChannelRequestKind::Exec { command } => {
            w.string(command);
        }
        ChannelRequestKind::Subsystem { name } => {
            w.string(name);
        }
        ChannelRequestKind::WindowChange { size } => put_size(&mut w, size),
        ChannelRequestKind::XonXoff { client_can_do } => {
            w.bool(*client_can_do);
        }
        ChannelRequestKind::Signal { name } => {
            w.string(name.as_bytes());
        }
        ChannelRequestKind::ExitStatus { status } => {
            w.u32(*status);
        }
        ChannelRequestKind::ExitSignal {
            signal,
            core_dumped,
            message,
            language,
        } => {
            w.string(signal.as_bytes())
                .bool(*core_dumped)
                .string(message)
                .string(language);
        }
        ChannelRequestKind::Break { length_ms } => {
            w.u32(*length_ms);
        }
        ChannelRequestKind::Shell
        | ChannelRequestKind::AuthAgentReq
        | ChannelRequestKind::Eow
        | ChannelRequestKind::Keepalive => {}
        ChannelRequestKind::Unknown { data, .. } => {
            w.raw(data);
        }
    }
    w.into_bytes()
}

#[cfg(test)]
#[path = "connection_tests.rs"]
mod tests;

//! SFTP as OpenSSH speaks it (draft-ietf-secsh-filexfer-02, protocol version 3, plus the
//! extensions in OpenSSH's PROTOCOL file): an incremental, sans-IO parser of the bytes of a
//! `subsystem sftp` channel in both directions, for audit and for a read-only mode.
//!
//! - [`FrameBuffer`] cuts one direction's byte stream into packets ("uint32 length, byte type,
//!   uint32 request-id, ..." — draft §3), whatever way the bytes were split, and refuses a length
//!   over [`MAX_PACKET`] as soon as the four length bytes are in.
//! - [`parse_request`] / [`parse_response`] read one packet into an [`SftpEvent`] (paths and
//!   names, lengths of data, never the data itself).
//! - [`SftpSession`] ties the two directions together: it remembers which handle belongs to
//!   which path (from OPEN/OPENDIR and their HANDLE answer), so that READ, WRITE and CLOSE events
//!   carry the path and CLOSE reports the bytes read and written; in [`SftpMode::ReadOnly`] it
//!   answers every request that could change the server's files with `SSH_FX_PERMISSION_DENIED`
//!   itself and never forwards it. Everything forwarded is forwarded byte for byte, in whole
//!   packets.
//!
//! Nothing here does I/O; tables are bounded ([`MAX_HANDLES`], [`MAX_PENDING`]); no input
//! panics. Errors are sticky: after one, the session refuses everything and the caller should
//! close the channel.

use std::collections::HashMap;
use std::fmt;

use super::wire::{Reader, WireError, Writer};

/// Largest packet length (the uint32 before the type) accepted. OpenSSH's sftp-server refuses
/// anything over `SFTP_MAX_MSG_LENGTH` (256 KiB); one more KiB leaves room for headers of other
/// servers' largest DATA packets.
pub const MAX_PACKET: usize = 256 * 1024 + 1024;
/// Most open handles tracked per session.
pub const MAX_HANDLES: usize = 1024;
/// Most requests awaiting an answer tracked per session (OpenSSH's client keeps at most 64
/// requests in flight by default).
pub const MAX_PENDING: usize = 4096;
/// Most extension pairs read from VERSION or an ATTRS block.
const MAX_EXTENSIONS: u32 = 256;

/// Packet types (draft-ietf-secsh-filexfer-02 §3).
pub mod fxp {
    pub const INIT: u8 = 1;
    pub const VERSION: u8 = 2;
    pub const OPEN: u8 = 3;
    pub const CLOSE: u8 = 4;
    pub const READ: u8 = 5;
    pub const WRITE: u8 = 6;
    pub const LSTAT: u8 = 7;
    pub const FSTAT: u8 = 8;
    pub const SETSTAT: u8 = 9;
    pub const FSETSTAT: u8 = 10;
    pub const OPENDIR: u8 = 11;
    pub const READDIR: u8 = 12;
    pub const REMOVE: u8 = 13;
    pub const MKDIR: u8 = 14;
    pub const RMDIR: u8 = 15;
    pub const REALPATH: u8 = 16;
    pub const STAT: u8 = 17;
    pub const RENAME: u8 = 18;
    pub const READLINK: u8 = 19;
    pub const SYMLINK: u8 = 20;
    pub const STATUS: u8 = 101;
    pub const HANDLE: u8 = 102;
    pub const DATA: u8 = 103;
    pub const NAME: u8 = 104;
    pub const ATTRS: u8 = 105;
    pub const EXTENDED: u8 = 200;
    pub const EXTENDED_REPLY: u8 = 201;
}

/// Status codes (draft §7).
pub mod status {
    pub const OK: u32 = 0;
    pub const EOF: u32 = 1;
    pub const NO_SUCH_FILE: u32 = 2;
    pub const PERMISSION_DENIED: u32 = 3;
    pub const FAILURE: u32 = 4;
    pub const BAD_MESSAGE: u32 = 5;
    pub const OP_UNSUPPORTED: u32 = 8;
}

/// `pflags` of SSH_FXP_OPEN (draft §6.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OpenFlags(pub u32);

impl OpenFlags {
    pub const READ: u32 = 0x01;
    pub const WRITE: u32 = 0x02;
    pub const APPEND: u32 = 0x04;
    pub const CREAT: u32 = 0x08;
    pub const TRUNC: u32 = 0x10;
    pub const EXCL: u32 = 0x20;

    pub fn read(self) -> bool {
        self.0 & Self::READ != 0
    }
    pub fn write(self) -> bool {
        self.0 & Self::WRITE != 0
    }
    pub fn append(self) -> bool {
        self.0 & Self::APPEND != 0
    }
    pub fn create(self) -> bool {
        self.0 & Self::CREAT != 0
    }
    pub fn truncate(self) -> bool {
        self.0 & Self::TRUNC != 0
    }
    /// Whether opening with these flags can change a file: any flag but READ (unknown bits
    /// included).
    pub fn modifies(self) -> bool {
        self.0 & !Self::READ != 0
    }
}

/// Attributes that matter for audit (draft §5; the rest is skipped).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attrs {
    pub size: Option<u64>,
    pub permissions: Option<u32>,
}

/// One SFTP packet, as read for audit. Handles are the server's opaque bytes; paths are the
/// protocol's byte strings shown as UTF-8 (invalid sequences replaced). `path` on handle-based
/// operations is the path the handle was opened with, when the session saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SftpEvent {
    // --- client to server ---
    Init {
        version: u32,
    },
    Open {
        id: u32,
        path: String,
        flags: OpenFlags,
    },
    Close {
        id: u32,
        handle: Vec<u8>,
        path: Option<String>,
        bytes_read: u64,
        bytes_written: u64,
    },
    Read {
        id: u32,
        handle: Vec<u8>,
        path: Option<String>,
        offset: u64,
        len: u32,
    },
    /// The data is not copied: `len` is its length.
    Write {
        id: u32,
        handle: Vec<u8>,
        path: Option<String>,
        offset: u64,
        len: u32,
    },
    Lstat {
        id: u32,
        path: String,
    },
    Fstat {
        id: u32,
        handle: Vec<u8>,
        path: Option<String>,
    },
    Setstat {
        id: u32,
        path: String,
        attrs: Attrs,
    },
    Fsetstat {
        id: u32,
        handle: Vec<u8>,
        path: Option<String>,
        attrs: Attrs,
    },
    Opendir {
        id: u32,
        path: String,
    },
    Readdir {
        id: u32,
        handle: Vec<u8>,
        path: Option<String>,
    },
    Remove {
        id: u32,
        path: String,
    },
    Mkdir {
        id: u32,
        path: String,
        attrs: Attrs,
    },
    Rmdir {
        id: u32,
        path: String,
    },
    Realpath {
        id: u32,
        path: String,
    },
    Stat {
        id: u32,
        path: String,
    },
    Rename {
        id: u32,
        old: String,
        new: String,
    },
    Readlink {
        id: u32,
        path: String,
    },
    /// OpenSSH's order (PROTOCOL §4.1): "the order of the arguments to the SSH_FXP_SYMLINK
    /// method was inadvertently reversed": `target` (what the link points to) comes first.
    Symlink {
        id: u32,
        target: String,
        link: String,
    },
    /// SSH_FXP_EXTENDED: `paths` are the path arguments of the extensions we know
    /// (posix-rename: old, new; statvfs, expand-path, lsetstat: path; hardlink: old, new).
    Extended {
        id: u32,
        name: String,
        paths: Vec<String>,
    },
    /// A request type this parser does not know.
    UnknownRequest {
        id: u32,
        kind: u8,
    },
    /// The request with this id was answered with PERMISSION_DENIED by the session (read-only
    /// mode) and not forwarded. Follows the request's own event.
    Denied {
        id: u32,
    },

    // --- server to client ---
    Version {
        version: u32,
        extensions: Vec<String>,
    },
    Status {
        id: u32,
        code: u32,
        message: String,
    },
    Handle {
        id: u32,
        handle: Vec<u8>,
        path: Option<String>,
    },
    /// The data is not copied: `len` is its length.
    Data {
        id: u32,
        len: u32,
        path: Option<String>,
    },
    Name {
        id: u32,
        names: Vec<String>,
    },
    Attrs {
        id: u32,
        attrs: Attrs,
    },
    ExtendedReply {
        id: u32,
    },
    UnknownResponse {
        id: u32,
        kind: u8,
    },
}

/// Why an SFTP stream can't be followed. Sticky: the session stays failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SftpError {
    /// A packet length over [`MAX_PACKET`].
    TooLong(u32),
    /// A packet length of zero (no type byte).
    Empty,
    /// A packet of this type whose fields don't parse.
    Malformed { kind: u8, error: WireError },
    /// More than [`MAX_HANDLES`] handles open at once.
    TooManyHandles,
    /// More than [`MAX_PENDING`] requests awaiting an answer.
    TooManyPending,
}

impl fmt::Display for SftpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SftpError::TooLong(n) => write!(f, "sftp packet of {n} bytes over the limit"),
            SftpError::Empty => f.write_str("sftp packet without a type"),
            SftpError::Malformed { kind, error } => {
                write!(f, "malformed sftp packet of type {kind}: {error}")
            }
            SftpError::TooManyHandles => f.write_str("too many open sftp handles"),
            SftpError::TooManyPending => f.write_str("too many sftp requests in flight"),
        }
    }
}

impl std::error::Error for SftpError {}

// ---------------------------------------------------------------------------------------------
// Framing

/// Cuts one direction's bytes into whole packets.
#[derive(Debug, Default)]
pub struct FrameBuffer {
    buf: Vec<u8>,
    /// Bytes before this index were already returned.
    start: usize,
}

impl FrameBuffer {
    pub fn new() -> FrameBuffer {
        FrameBuffer::default()
    }

    /// Appends bytes as they arrived.
    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes held that don't make a whole packet yet.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next whole packet, length field included, or `None` until one is complete.
    ///
    /// # Errors
    /// [`SftpError::TooLong`] / [`SftpError::Empty`] as soon as the length field is in.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, SftpError> {
        let avail = self.buf.get(self.start..).unwrap_or(&[]);
        let Some(len) = avail.get(..4) else {
            return Ok(None);
        };
        let declared = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        let len = usize::try_from(declared).map_err(|_| SftpError::TooLong(declared))?;
        if len > MAX_PACKET {
            return Err(SftpError::TooLong(declared));
        }
        if len == 0 {
            return Err(SftpError::Empty);
        }
        if avail.len() < 4 + len {
            return Ok(None);
        }
        let from = self.start;
        self.start += 4 + len;
        Ok(self.buf.get(from..from + 4 + len))
    }
}

// ---------------------------------------------------------------------------------------------
// Packets

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// ATTRS (draft §5): "uint32 flags, uint64 size (present if flag SSH_FILEXFER_ATTR_SIZE), uint32
/// uid, uint32 gid (…UIDGID), uint32 permissions (…PERMISSIONS), uint32 atime, uint32 mtime
/// (…ACMODTIME), uint32 extended_count, string extended_type, string extended_data … (…EXTENDED)".
fn attrs(r: &mut Reader<'_>) -> Result<Attrs, WireError> {
    const SIZE: u32 = 0x1;
    const UIDGID: u32 = 0x2;
    const PERMISSIONS: u32 = 0x4;
    const ACMODTIME: u32 = 0x8;
    const EXTENDED: u32 = 0x8000_0000;
    let flags = r.u32()?;
    let mut a = Attrs::default();
    if flags & SIZE != 0 {
        a.size = Some(r.u64()?);
    }
    if flags & UIDGID != 0 {
        r.u32()?;
        r.u32()?;
    }
    if flags & PERMISSIONS != 0 {
        a.permissions = Some(r.u32()?);
    }
    if flags & ACMODTIME != 0 {
        r.u32()?;
        r.u32()?;
    }
    if flags & EXTENDED != 0 {
        let n = r.u32()?;
        if n > MAX_EXTENSIONS {
            return Err(WireError::TooLong);
        }
        for _ in 0..n {
            r.string()?;
            r.string()?;
        }
    }
    Ok(a)
}

/// The packet body after the length field: (type, reader over the rest).
fn split(frame: &[u8]) -> Result<(u8, Reader<'_>), SftpError> {
    let body = frame.get(4..).unwrap_or(&[]);
    let (&kind, rest) = body.split_first().ok_or(SftpError::Empty)?;
    Ok((kind, Reader::new(rest)))
}

/// Reads a client-to-server packet (a whole frame from [`FrameBuffer::next_frame`]).
///
/// # Errors
/// [`SftpError::Malformed`] if the fields of a known type don't parse or bytes follow them.
pub fn parse_request(frame: &[u8]) -> Result<SftpEvent, SftpError> {
    let (kind, mut r) = split(frame)?;
    request_fields(kind, &mut r).map_err(|error| SftpError::Malformed { kind, error })
}

fn request_fields(kind: u8, r: &mut Reader<'_>) -> Result<SftpEvent, WireError> {
    if kind == fxp::INIT {
        // "uint32 version, <extension data>"
        let version = r.u32()?;
        r.rest();
        return Ok(SftpEvent::Init { version });
    }
    let id = r.u32()?;
    let path = |r: &mut Reader<'_>| r.string().map(text);
    let handle = |r: &mut Reader<'_>| r.string().map(<[u8]>::to_vec);
    let event = match kind {
        // "uint32 id, string filename, uint32 pflags, ATTRS attrs" (draft §6.3).
        fxp::OPEN => {
            let path = path(r)?;
            let flags = OpenFlags(r.u32()?);
            attrs(r)?;
            SftpEvent::Open { id, path, flags }
        }
        fxp::CLOSE => SftpEvent::Close {
            id,
            handle: handle(r)?,
            path: None,
            bytes_read: 0,
            bytes_written: 0,
        },
        fxp::READ => SftpEvent::Read {
            id,
            handle: handle(r)?,
            path: None,
            offset: r.u64()?,
            len: r.u32()?,
        },
        fxp::WRITE => {
            let handle = handle(r)?;
            let offset = r.u64()?;
            let data = r.string()?;
            SftpEvent::Write {
                id,
                handle,
                path: None,
                offset,
                len: u32::try_from(data.len()).map_err(|_| WireError::TooLong)?,
            }
        }
        fxp::LSTAT => SftpEvent::Lstat { id, path: path(r)? },
        fxp::FSTAT => SftpEvent::Fstat {
            id,
            handle: handle(r)?,
            path: None,
        },
        fxp::SETSTAT => SftpEvent::Setstat {
            id,
            path: path(r)?,
            attrs: attrs(r)?,
        },
        fxp::FSETSTAT => SftpEvent::Fsetstat {
            id,
            handle: handle(r)?,
            path: None,
            attrs: attrs(r)?,
        },
        fxp::OPENDIR => SftpEvent::Opendir { id, path: path(r)? },
        fxp::READDIR => SftpEvent::Readdir {
            id,
            handle: handle(r)?,
            path: None,
        },
        fxp::REMOVE => SftpEvent::Remove { id, path: path(r)? },
        fxp::MKDIR => SftpEvent::Mkdir {
            id,
            path: path(r)?,
            attrs: attrs(r)?,
        },
        fxp::RMDIR => SftpEvent::Rmdir { id, path: path(r)? },
        fxp::REALPATH => {
            let path = path(r)?;
            // OpenSSH's "expand-path" is an extension; plain REALPATH may carry a control
            // byte and compose paths in newer drafts: not in version 3, so nothing follows.
            SftpEvent::Realpath { id, path }
        }
        fxp::STAT => SftpEvent::Stat { id, path: path(r)? },
        fxp::RENAME => SftpEvent::Rename {
            id,
            old: path(r)?,
            new: path(r)?,
        },
        fxp::READLINK => SftpEvent::Readlink { id, path: path(r)? },
        fxp::SYMLINK => SftpEvent::Symlink {
            id,
            target: path(r)?,
            link: path(r)?,
        },
        fxp::EXTENDED => {
            let name = text(r.string()?);
            let paths = match name.as_str() {
                // PROTOCOL §4.3 posix-rename, §4.5 hardlink: "string oldpath, string newpath".
                "posix-rename@openssh.com" | "hardlink@openssh.com" => vec![path(r)?, path(r)?],
                // §4.4 statvfs, §4.9 expand-path, home-directory: "string path" / "string username".
                "statvfs@openssh.com" | "expand-path@openssh.com" | "home-directory" => {
                    vec![path(r)?]
                }
                // §4.7 lsetstat: "string path, ATTRS attrs".
                "lsetstat@openssh.com" => {
                    let p = path(r)?;
                    attrs(r)?;
                    vec![p]
                }
                // §4.4 fstatvfs, §4.6 fsync: "string handle".
                "fstatvfs@openssh.com" | "fsync@openssh.com" => {
                    r.string()?;
                    Vec::new()
                }
                // §4.8 limits: no arguments.
                "limits@openssh.com" => Vec::new(),
                // copy-data (draft-ietf-secsh-filexfer-extensions-00 §7): "string
                // read-from-handle, uint64 read-from-offset, uint64 read-data-length, string
                // write-to-handle, uint64 write-to-offset".
                "copy-data" => {
                    r.string()?;
                    r.u64()?;
                    r.u64()?;
                    r.string()?;
                    r.u64()?;
                    Vec::new()
                }
                _ => {
                    r.rest();
                    Vec::new()
                }
            };
            SftpEvent::Extended { id, name, paths }
        }
        _ => {
            r.rest();
            SftpEvent::UnknownRequest { id, kind }
        }
    };
    r.finish()?;
    Ok(event)
}

/// Reads a server-to-client packet.
///
/// # Errors
/// [`SftpError::Malformed`] if the fields of a known type don't parse or bytes follow them.
pub fn parse_response(frame: &[u8]) -> Result<SftpEvent, SftpError> {
    let (kind, mut r) = split(frame)?;
    response_fields(kind, &mut r).map_err(|error| SftpError::Malformed { kind, error })
}

fn response_fields(kind: u8, r: &mut Reader<'_>) -> Result<SftpEvent, WireError> {
    if kind == fxp::VERSION {
        // "uint32 version, <extension data>": pairs of "string extension_name, string
        // extension_data".
        let version = r.u32()?;
        let mut extensions = Vec::new();
        while !r.is_empty() {
            if extensions.len() >= usize::try_from(MAX_EXTENSIONS).unwrap_or(usize::MAX) {
                return Err(WireError::TooLong);
            }
            extensions.push(text(r.string()?));
            r.string()?;
        }
        return Ok(SftpEvent::Version {
            version,
            extensions,
        });
    }
    let id = r.u32()?;
    let event = match kind {
        fxp::STATUS => {
            let code = r.u32()?;
            // "string error message, string language tag"; version 3 servers send both, but
            // the draft lets older ones stop after the code.
            let message = if r.is_empty() {
                String::new()
            } else {
                let m = text(r.string()?);
                r.string()?;
                m
            };
            SftpEvent::Status { id, code, message }
        }
        fxp::HANDLE => SftpEvent::Handle {
            id,
            handle: r.string()?.to_vec(),
            path: None,
        },
        fxp::DATA => {
            let data = r.string()?;
            SftpEvent::Data {
                id,
                len: u32::try_from(data.len()).map_err(|_| WireError::TooLong)?,
                path: None,
            }
        }
        fxp::NAME => {
            // "uint32 count, repeats count times: string filename, string longname, ATTRS".
            let count = r.u32()?;
            // Each entry takes at least 12 bytes: the count can't claim more than that.
            let max = r.remaining().len() / 12;
            if usize::try_from(count).map_or(true, |c| c > max) {
                return Err(WireError::Truncated);
            }
            let mut names = Vec::new();
            for _ in 0..count {
                names.push(text(r.string()?));
                r.string()?;
                attrs(r)?;
            }
            SftpEvent::Name { id, names }
        }
        fxp::ATTRS => SftpEvent::Attrs {
            id,
            attrs: attrs(r)?,
        },
        fxp::EXTENDED_REPLY => {
            r.rest();
            SftpEvent::ExtendedReply { id }
        }
        _ => {
            r.rest();
            SftpEvent::UnknownResponse { id, kind }
        }
    };
    r.finish()?;
    Ok(event)
}

/// Whether a request can change the server's files (read-only mode refuses it). Unknown
/// request types and extensions count as writes: fail closed.
pub fn is_write(event: &SftpEvent) -> bool {
    match event {
        SftpEvent::Open { flags, .. } => flags.modifies(),
        SftpEvent::Write { .. }
        | SftpEvent::Remove { .. }
        | SftpEvent::Rename { .. }
        | SftpEvent::Mkdir { .. }
        | SftpEvent::Rmdir { .. }
        | SftpEvent::Setstat { .. }
        | SftpEvent::Fsetstat { .. }
        | SftpEvent::Symlink { .. }
        | SftpEvent::UnknownRequest { .. } => true,
        SftpEvent::Extended { name, .. } => !matches!(
            name.as_str(),
            "statvfs@openssh.com"
                | "fstatvfs@openssh.com"
                | "limits@openssh.com"
                | "expand-path@openssh.com"
                | "home-directory"
                | "fsync@openssh.com"
        ),
        _ => false,
    }
}

/// `SSH_FXP_STATUS` for `id` (draft §7: "uint32 id, uint32 error/status code, string error
/// message, string language tag").
pub fn status_packet(id: u32, code: u32, message: &str) -> Vec<u8> {
    let mut body = Writer::message(fxp::STATUS);
    body.u32(id)
        .u32(code)
        .string(message.as_bytes())
        .string(b"en");
    let body = body.into_bytes();
    let mut w = Writer::new();
    w.string(&body);
    w.into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Session

/// What the session lets through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SftpMode {
    /// Everything is forwarded (and audited).
    ReadWrite,
    /// Requests that could change files ([`is_write`]) are answered with PERMISSION_DENIED by the
    /// session and not forwarded.
    ReadOnly,
}

/// The message sent with a refused request.
pub const DENIED_MESSAGE: &str = "Permission denied (read-only session)";

#[derive(Debug)]
struct OpenFile {
    path: String,
    read: u64,
    written: u64,
}

#[derive(Debug)]
enum Pending {
    /// OPEN / OPENDIR of this path: the HANDLE answer names its handle.
    Open(String),
    /// READ on this handle: the DATA answer counts as read.
    Read(Vec<u8>),
}

/// Output of one call to [`SftpSession::client_data`] / [`SftpSession::server_data`].
#[derive(Debug, Default)]
pub struct SftpOutput {
    /// Bytes to forward to the server (whole packets).
    pub to_server: Vec<u8>,
    /// Bytes to send to the client (whole packets): the server's, or the session's refusals.
    pub to_client: Vec<u8>,
    pub events: Vec<SftpEvent>,
}

/// Both directions of one SFTP channel.
///
/// Call order: feed the client's bytes to [`client_data`](Self::client_data) and the server's to
/// [`server_data`](Self::server_data) as they arrive, then send `to_server` / `to_client`. Both
/// only ever emit whole packets, so the `to_client` bytes of the two calls may be interleaved in
/// any order without splitting a packet.
#[derive(Debug)]
pub struct SftpSession {
    mode: SftpMode,
    client: FrameBuffer,
    server: FrameBuffer,
    handles: HashMap<Vec<u8>, OpenFile>,
    pending: HashMap<u32, Pending>,
    failed: Option<SftpError>,
}

impl SftpSession {
    pub fn new(mode: SftpMode) -> SftpSession {
        SftpSession {
            mode,
            client: FrameBuffer::new(),
            server: FrameBuffer::new(),
            handles: HashMap::new(),
            pending: HashMap::new(),
            failed: None,
        }
    }

    /// Client bytes held back: the start of a packet not complete yet.
    pub fn client_held(&self) -> usize {
        self.client.buffered()
    }

    /// Server bytes held back: the start of a packet not complete yet.
    pub fn server_held(&self) -> usize {
        self.server.buffered()
    }

    fn fail(&mut self, e: SftpError) -> SftpError {
        self.failed = Some(e);
        e
    }

    /// Bytes from the client.
    ///
    /// # Errors
    /// An [`SftpError`], then the same error on every later call: close the channel.
    pub fn client_data(&mut self, data: &[u8], out: &mut SftpOutput) -> Result<(), SftpError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        self.client.push(data);
        loop {
            let frame = match self.client.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.fail(e)),
            };
            let mut event = match parse_request(frame) {
                Ok(ev) => ev,
                Err(e) => return Err(self.fail(e)),
            };
            let refuse = self.mode == SftpMode::ReadOnly && is_write(&event);
            if !refuse {
                out.to_server.extend_from_slice(frame);
            }
            if let Err(e) = self.on_request(&mut event, !refuse) {
                return Err(self.fail(e));
            }
            let id = request_id(&event);
            out.events.push(event);
            if refuse {
                if let Some(id) = id {
                    out.to_client.extend(status_packet(
                        id,
                        status::PERMISSION_DENIED,
                        DENIED_MESSAGE,
                    ));
                    out.events.push(SftpEvent::Denied { id });
                }
            }
        }
    }

    /// Bytes from the server.
    ///
    /// # Errors
    /// An [`SftpError`], then the same error on every later call: close the channel.
    pub fn server_data(&mut self, data: &[u8], out: &mut SftpOutput) -> Result<(), SftpError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        self.server.push(data);
        loop {
            let frame = match self.server.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.fail(e)),
            };
            let mut event = match parse_response(frame) {
                Ok(ev) => ev,
                Err(e) => return Err(self.fail(e)),
            };
            out.to_client.extend_from_slice(frame);
            if let Err(e) = self.on_response(&mut event) {
                return Err(self.fail(e));
            }
            out.events.push(event);
        }
    }

    fn expect_answer(&mut self, id: u32, p: Pending) -> Result<(), SftpError> {
        if self.pending.len() >= MAX_PENDING && !self.pending.contains_key(&id) {
            return Err(SftpError::TooManyPending);
        }
        self.pending.insert(id, p);
        Ok(())
    }

    fn path_of(&self, handle: &[u8]) -> Option<String> {
        self.handles.get(handle).map(|f| f.path.clone())
    }

    /// Fills in paths and records what the answer to a forwarded request will mean.
    fn on_request(&mut self, event: &mut SftpEvent, forwarded: bool) -> Result<(), SftpError> {
        match event {
            SftpEvent::Open { id, path, .. } | SftpEvent::Opendir { id, path } if forwarded => {
                self.expect_answer(*id, Pending::Open(path.clone()))?;
            }
            SftpEvent::Read {
                id, handle, path, ..
            } => {
                *path = self.path_of(handle);
                if forwarded {
                    self.expect_answer(*id, Pending::Read(handle.clone()))?;
                }
            }
            SftpEvent::Write {
                handle, path, len, ..
            } => {
                *path = self.path_of(handle);
                if forwarded {
                    if let Some(f) = self.handles.get_mut(handle.as_slice()) {
                        f.written = f.written.saturating_add(u64::from(*len));
                    }
                }
            }
            SftpEvent::Close {
                handle,
                path,
                bytes_read,
                bytes_written,
                ..
            } => {
                if let Some(f) = self.handles.remove(handle.as_slice()) {
                    *path = Some(f.path);
                    *bytes_read = f.read;
                    *bytes_written = f.written;
                }
            }
            SftpEvent::Fstat { handle, path, .. }
            | SftpEvent::Fsetstat { handle, path, .. }
            | SftpEvent::Readdir { handle, path, .. } => *path = self.path_of(handle),
            _ => {}
        }
        Ok(())
    }

    fn on_response(&mut self, event: &mut SftpEvent) -> Result<(), SftpError> {
        match event {
            SftpEvent::Handle { id, handle, path } => {
                if let Some(Pending::Open(p)) = self.pending.remove(id) {
                    if self.handles.len() >= MAX_HANDLES && !self.handles.contains_key(handle) {
                        return Err(SftpError::TooManyHandles);
                    }
                    *path = Some(p.clone());
                    self.handles.insert(
                        handle.clone(),
                        OpenFile {
                            path: p,
                            read: 0,
                            written: 0,
                        },
                    );
                }
            }
            SftpEvent::Data { id, len, path } => {
                if let Some(Pending::Read(h)) = self.pending.remove(id) {
                    if let Some(f) = self.handles.get_mut(h.as_slice()) {
                        f.read = f.read.saturating_add(u64::from(*len));
                        *path = Some(f.path.clone());
                    }
                }
            }
            SftpEvent::Status { id, .. }
            | SftpEvent::Name { id, .. }
            | SftpEvent::Attrs { id, .. }
            | SftpEvent::ExtendedReply { id }
            | SftpEvent::UnknownResponse { id, .. } => {
                self.pending.remove(id);
            }
            _ => {}
        }
        Ok(())
    }
}

/// The request id of a client packet (none for INIT).
fn request_id(event: &SftpEvent) -> Option<u32> {
    match event {
        SftpEvent::Init { .. } | SftpEvent::Version { .. } => None,
        SftpEvent::Open { id, .. }
        | SftpEvent::Close { id, .. }
        | SftpEvent::Read { id, .. }
        | SftpEvent::Write { id, .. }
        | SftpEvent::Lstat { id, .. }
        | SftpEvent::Fstat { id, .. }
        | SftpEvent::Setstat { id, .. }
        | SftpEvent::Fsetstat { id, .. }
        | SftpEvent::Opendir { id, .. }
        | SftpEvent::Readdir { id, .. }
        | SftpEvent::Remove { id, .. }
        | SftpEvent::Mkdir { id, .. }
        | SftpEvent::Rmdir { id, .. }
        | SftpEvent::Realpath { id, .. }
        | SftpEvent::Stat { id, .. }
        | SftpEvent::Rename { id, .. }
        | SftpEvent::Readlink { id, .. }
        | SftpEvent::Symlink { id, .. }
        | SftpEvent::Extended { id, .. }
        | SftpEvent::UnknownRequest { id, .. }
        | SftpEvent::Denied { id }
        | SftpEvent::Status { id, .. }
        | SftpEvent::Handle { id, .. }
        | SftpEvent::Data { id, .. }
        | SftpEvent::Name { id, .. }
        | SftpEvent::Attrs { id, .. }
        | SftpEvent::ExtendedReply { id }
        | SftpEvent::UnknownResponse { id, .. } => Some(*id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One packet: length, type, then `fields`.
    fn packet(kind: u8, fields: impl FnOnce(&mut Writer)) -> Vec<u8> {
        let mut body = Writer::message(kind);
        fields(&mut body);
        let mut w = Writer::new();
        w.string(body.as_bytes());
        w.into_bytes()
    }

    fn open(id: u32, path: &str, pflags: u32) -> Vec<u8> {
        packet(fxp::OPEN, |w| {
            w.u32(id).string(path.as_bytes()).u32(pflags).u32(0);
        })
    }

    fn handle(id: u32, h: &[u8]) -> Vec<u8> {
        packet(fxp::HANDLE, |w| {
            w.u32(id).string(h);
        })
    }

    fn client(s: &mut SftpSession, bytes: &[u8]) -> SftpOutput {
        let mut out = SftpOutput::default();
        s.client_data(bytes, &mut out).unwrap();
        out
    }

    fn server(s: &mut SftpSession, bytes: &[u8]) -> SftpOutput {
        let mut out = SftpOutput::default();
        s.server_data(bytes, &mut out).unwrap();
        out
    }

    #[test]
    fn status_packet_matches_the_draft_layout() {
        assert_eq!(
            status_packet(7, status::PERMISSION_DENIED, "no"),
            [
                0, 0, 0, 21, 101, 0, 0, 0, 7, 0, 0, 0, 3, 0, 0, 0, 2, b'n', b'o', 0, 0, 0, 2, b'e',
                b'n'
            ]
        );
    }

    #[test]
    fn accepts_packets_split_at_every_byte() {
        let mut stream = packet(fxp::INIT, |w| {
            w.u32(3);
        });
        stream.extend(open(1, "/etc/hosts", OpenFlags::READ));
        stream.extend(packet(fxp::READ, |w| {
            w.u32(2).string(b"h1").u64(0).u32(32768);
        }));
        stream.extend(packet(fxp::SYMLINK, |w| {
            w.u32(3).string(b"target").string(b"/tmp/link");
        }));
        let mut whole = SftpSession::new(SftpMode::ReadWrite);
        let want = client(&mut whole, &stream).events;
        assert_eq!(want.len(), 4);
        assert_eq!(
            want[3],
            SftpEvent::Symlink {
                id: 3,
                target: "target".into(),
                link: "/tmp/link".into()
            }
        );
        let mut split = SftpSession::new(SftpMode::ReadWrite);
        let mut events = Vec::new();
        let mut forwarded = Vec::new();
        for b in &stream {
            let out = client(&mut split, std::slice::from_ref(b));
            events.extend(out.events);
            forwarded.extend(out.to_server);
        }
        assert_eq!(events, want);
        assert_eq!(forwarded, stream);
    }

    #[test]
    fn rejects_oversized_and_empty_lengths_from_the_header_alone() {
        let mut s = SftpSession::new(SftpMode::ReadWrite);
        let mut out = SftpOutput::default();
        let too_long = u32::try_from(MAX_PACKET + 1).unwrap().to_be_bytes();
        assert_eq!(
            s.client_data(&too_long, &mut out),
            Err(SftpError::TooLong(too_long_value()))
        );
        // Sticky: everything after is refused.
        assert_eq!(
            s.client_data(&open(1, "x", 1), &mut out),
            Err(SftpError::TooLong(too_long_value()))
        );
        let mut s = SftpSession::new(SftpMode::ReadWrite);
        assert_eq!(
            s.server_data(&[0, 0, 0, 0], &mut out),
            Err(SftpError::Empty)
        );
        assert!(out.to_server.is_empty() && out.to_client.is_empty());
    }

    fn too_long_value() -> u32 {
        u32::try_from(MAX_PACKET + 1).unwrap()
    }

    #[test]
    fn rejects_truncated_fields_and_trailing_bytes() {
        let truncated = packet(fxp::OPEN, |w| {
            w.u32(1).string(b"/x");
        });
        assert!(matches!(
            parse_request(&truncated),
            Err(SftpError::Malformed {
                kind: fxp::OPEN,
                error: WireError::Truncated
            })
        ));
        let trailing = packet(fxp::REMOVE, |w| {
            w.u32(1).string(b"/x").u8(0);
        });
        assert!(matches!(
            parse_request(&trailing),
            Err(SftpError::Malformed {
                error: WireError::TrailingBytes,
                ..
            })
        ));
        // NAME claiming more entries than its bytes could hold.
        let name = packet(fxp::NAME, |w| {
            w.u32(1).u32(1_000_000);
        });
        assert!(parse_response(&name).is_err());
        let attrs_ext = packet(fxp::ATTRS, |w| {
            w.u32(1).u32(0x8000_0000).u32(MAX_EXTENSIONS + 1);
        });
        assert!(parse_response(&attrs_ext).is_err());
    }

    #[test]
    fn tracks_handles_so_read_write_close_carry_path_and_counts() {
        let mut s = SftpSession::new(SftpMode::ReadWrite);
        client(
            &mut s,
            &open(1, "/srv/a.txt", OpenFlags::READ | OpenFlags::WRITE),
        );
        let out = server(&mut s, &handle(1, b"\0\0\0\x05"));
        assert_eq!(
            out.events,
            [SftpEvent::Handle {
                id: 1,
                handle: b"\0\0\0\x05".to_vec(),
                path: Some("/srv/a.txt".into())
            }]
        );
        let write = packet(fxp::WRITE, |w| {
            w.u32(2).string(b"\0\0\0\x05").u64(0).string(&[7u8; 1000]);
        });
        let read = packet(fxp::READ, |w| {
            w.u32(3).string(b"\0\0\0\x05").u64(0).u32(4096);
        });
        let out = client(&mut s, &[write.clone(), read].concat());
        assert_eq!(
            out.events[0],
            SftpEvent::Write {
                id: 2,
                handle: b"\0\0\0\x05".to_vec(),
                path: Some("/srv/a.txt".into()),
                offset: 0,
                len: 1000
            }
        );
        let data = packet(fxp::DATA, |w| {
            w.u32(3).string(&[1u8; 600]);
        });
        let out = server(&mut s, &data);
        assert_eq!(
            out.events,
            [SftpEvent::Data {
                id: 3,
                len: 600,
                path: Some("/srv/a.txt".into())
            }]
        );
        assert_eq!(out.to_client, data);
        let close = packet(fxp::CLOSE, |w| {
            w.u32(4).string(b"\0\0\0\x05");
        });
        let out = client(&mut s, &close);
        assert_eq!(
            out.events,
            [SftpEvent::Close {
                id: 4,
                handle: b"\0\0\0\x05".to_vec(),
                path: Some("/srv/a.txt".into()),
                bytes_read: 600,
                bytes_written: 1000
            }]
        );
        // The handle is gone: a later write on it has no path.
        let out = client(&mut s, &write);
        assert!(matches!(
            &out.events[0],
            SftpEvent::Write { path: None, .. }
        ));
    }

    #[test]
    fn read_only_refuses_writes_with_permission_denied_and_forwards_reads_byte_for_byte() {
        let mut s = SftpSession::new(SftpMode::ReadOnly);
        let read_open = open(1, "/etc/hosts", OpenFlags::READ);
        let out = client(&mut s, &read_open);
        assert_eq!(out.to_server, read_open);
        assert!(out.to_client.is_empty());

        let refused = [
            open(2, "/etc/hosts", OpenFlags::WRITE),
            open(3, "/etc/hosts", OpenFlags::READ | OpenFlags::APPEND),
            open(4, "/tmp/new", OpenFlags::READ | OpenFlags::CREAT),
            open(5, "/tmp/t", OpenFlags::READ | OpenFlags::TRUNC),
            open(6, "/tmp/t", OpenFlags::READ | 0x100),
            packet(fxp::WRITE, |w| {
                w.u32(7).string(b"h").u64(0).string(b"x");
            }),
            packet(fxp::REMOVE, |w| {
                w.u32(8).string(b"/x");
            }),
            packet(fxp::RENAME, |w| {
                w.u32(9).string(b"/x").string(b"/y");
            }),
            packet(fxp::MKDIR, |w| {
                w.u32(10).string(b"/d").u32(0);
            }),
            packet(fxp::RMDIR, |w| {
                w.u32(11).string(b"/d");
            }),
            packet(fxp::SETSTAT, |w| {
                w.u32(12).string(b"/x").u32(4).u32(0o777);
            }),
            packet(fxp::FSETSTAT, |w| {
                w.u32(13).string(b"h").u32(0);
            }),
            packet(fxp::SYMLINK, |w| {
                w.u32(14).string(b"/a").string(b"/b");
            }),
            packet(fxp::EXTENDED, |w| {
                w.u32(15)
                    .string(b"posix-rename@openssh.com")
                    .string(b"/a")
                    .string(b"/b");
            }),
            packet(fxp::EXTENDED, |w| {
                w.u32(16)
                    .string(b"hardlink@openssh.com")
                    .string(b"/a")
                    .string(b"/b");
            }),
            packet(fxp::EXTENDED, |w| {
                w.u32(17)
                    .string(b"lsetstat@openssh.com")
                    .string(b"/a")
                    .u32(0);
            }),
            packet(fxp::EXTENDED, |w| {
                w.u32(18).string(b"made-up@example.com").string(b"?");
            }),
            packet(99, |w| {
                w.u32(19).string(b"?");
            }),
        ];
        for (k, p) in refused.iter().enumerate() {
            let id = u32::try_from(k).unwrap() + 2;
            let out = client(&mut s, p);
            assert!(out.to_server.is_empty(), "request {id} was forwarded");
            assert_eq!(
                out.to_client,
                status_packet(id, status::PERMISSION_DENIED, DENIED_MESSAGE)
            );
            assert_eq!(out.events.last(), Some(&SftpEvent::Denied { id }));
        }
        let allowed = [
            packet(fxp::STAT, |w| {
                w.u32(30).string(b"/x");
            }),
            packet(fxp::OPENDIR, |w| {
                w.u32(31).string(b"/");
            }),
            packet(fxp::REALPATH, |w| {
                w.u32(32).string(b".");
            }),
            packet(fxp::EXTENDED, |w| {
                w.u32(33).string(b"statvfs@openssh.com").string(b"/");
            }),
            packet(fxp::EXTENDED, |w| {
                w.u32(34).string(b"limits@openssh.com");
            }),
        ];
        for p in &allowed {
            let out = client(&mut s, p);
            assert_eq!(&out.to_server, p);
            assert!(out.to_client.is_empty());
        }
        // A refused OPEN leaves nothing pending: a HANDLE answering its id names no path.
        let out = server(&mut s, &handle(2, b"zz"));
        assert!(matches!(
            &out.events[0],
            SftpEvent::Handle { path: None, .. }
        ));
    }

    #[test]
    fn rejects_more_open_handles_than_the_table_holds() {
        let mut s = SftpSession::new(SftpMode::ReadWrite);
        let mut out = SftpOutput::default();
        for i in 0..=u32::try_from(MAX_HANDLES).unwrap() {
            s.client_data(&open(i, "/f", OpenFlags::READ), &mut out)
                .unwrap();
            let r = s.server_data(&handle(i, &i.to_be_bytes()), &mut out);
            if usize::try_from(i).unwrap() < MAX_HANDLES {
                r.unwrap();
            } else {
                assert_eq!(r, Err(SftpError::TooManyHandles));
            }
        }
    }

    #[test]
    fn parses_version_and_status_answers() {
        let version = packet(fxp::VERSION, |w| {
            w.u32(3)
                .string(b"posix-rename@openssh.com")
                .string(b"1")
                .string(b"limits@openssh.com")
                .string(b"1");
        });
        assert_eq!(
            parse_response(&version).unwrap(),
            SftpEvent::Version {
                version: 3,
                extensions: vec![
                    "posix-rename@openssh.com".into(),
                    "limits@openssh.com".into()
                ]
            }
        );
        let st = status_packet(9, status::EOF, "End of file");
        assert_eq!(
            parse_response(&st).unwrap(),
            SftpEvent::Status {
                id: 9,
                code: status::EOF,
                message: "End of file".into()
            }
        );
        let bare = packet(fxp::STATUS, |w| {
            w.u32(9).u32(0);
        });
        assert!(parse_response(&bare).is_ok());
    }

    #[test]
    fn never_panics_on_random_streams() {
        let mut seed = 0x243f_6a88_85a3_08d3u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let kinds = [
            1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 18, 20, 101, 102, 103, 104, 105,
            200, 201, 77,
        ];
        for _ in 0..20_000 {
            let mut s = SftpSession::new(if next() % 2 == 0 {
                SftpMode::ReadOnly
            } else {
                SftpMode::ReadWrite
            });
            let mut out = SftpOutput::default();
            for _ in 0..(next() % 4) {
                let n = usize::try_from(next() % 24).unwrap();
                let mut body = vec![kinds[usize::try_from(next() % 25).unwrap()]];
                body.extend((0..n).map(|_| {
                    let b = next().to_le_bytes()[0];
                    if b > 0xc0 {
                        0
                    } else {
                        b % 8
                    }
                }));
                let mut w = Writer::new();
                w.string(&body);
                let bytes = w.into_bytes();
                let _ = s.client_data(&bytes, &mut out);
                let _ = s.server_data(&bytes, &mut out);
            }
        }
    }
}

//! The identification-string exchange (RFC 4253 §4.2).
//!
//! "When the connection has been established, both sides MUST send an identification string.
//! This identification string MUST be `SSH-protoversion-softwareversion SP comments CR LF` ...
//! The maximum length of the string is 255 characters, including the Carriage Return and Line
//! Feed." A server "MAY send other lines of data before sending the version string"; a client
//! may not. "Key exchange will begin immediately after sending this identifier."
//!
//! Both strings, without CR LF, enter the exchange hash (V_C, V_S), so they are kept exactly.

use std::fmt;

/// RFC 4253 §4.2: at most 255 bytes including CR LF.
pub const MAX_VERSION_LINE: usize = 255;

/// Longest line a client accepts from a server before its identification string (OpenSSH allows
/// 1024 bytes per line too).
pub const MAX_PRE_BANNER_LINE: usize = 1024;

/// Most lines a client accepts from a server before its identification string.
pub const MAX_PRE_BANNER_LINES: usize = 64;

/// Our identification string, without CR LF: `SSH-2.0-portcullis_<crate version>`.
pub fn our_version() -> String {
    format!("SSH-2.0-portcullis_{}", env!("CARGO_PKG_VERSION"))
}

/// Why the peer's identification was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VersionError {
    /// The identification line is over 255 bytes (or a pre-banner line over 1024).
    LineTooLong,
    /// A client sent something other than its identification string first.
    NotAnIdentification,
    /// The server sent more than [`MAX_PRE_BANNER_LINES`] lines before its identification.
    TooManyLines,
    /// The protocol version is not 2.0 (or the 1.99 that means "2.0 and 1.x").
    UnsupportedVersion(String),
    /// The line holds a control character or a byte outside US-ASCII.
    InvalidCharacter,
}

impl fmt::Display for VersionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LineTooLong => f.write_str("identification line is too long"),
            Self::NotAnIdentification => {
                f.write_str("peer did not start with an SSH identification string")
            }
            Self::TooManyLines => f.write_str("too many lines before the identification string"),
            Self::UnsupportedVersion(v) => write!(f, "unsupported protocol version {v:?}"),
            Self::InvalidCharacter => f.write_str("identification line has an invalid character"),
        }
    }
}

impl std::error::Error for VersionError {}

/// What one scan of the receive buffer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// No complete line yet; nothing consumed.
    Incomplete,
    /// A line before the identification (only a server may send these); drop `consumed` bytes
    /// and scan again.
    OtherLine {
        /// Bytes of the line, line end included.
        consumed: usize,
    },
    /// The identification string.
    Identification {
        /// The line without CR LF (V_C or V_S).
        version: Vec<u8>,
        /// Bytes of the line, line end included.
        consumed: usize,
    },
}

/// Looks for the next line of the peer's version exchange in `input`.
///
/// `peer_is_server` selects the rules: a server may precede its identification with other lines
/// (each at most [`MAX_PRE_BANNER_LINE`] bytes; the caller counts them against
/// [`MAX_PRE_BANNER_LINES`]), a client may not. A bare LF is accepted as a line end as OpenSSH
/// does; the CR, if present, is not part of the version.
///
/// # Errors
/// See [`VersionError`]; all are fatal.
pub fn scan(input: &[u8], peer_is_server: bool) -> Result<Scan, VersionError> {
    let limit = if peer_is_server {
        MAX_PRE_BANNER_LINE
    } else {
        MAX_VERSION_LINE
    };
    let window = input.get(..limit).unwrap_or(input);
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        if input.len() >= limit {
            return Err(VersionError::LineTooLong);
        }
        // A client's first bytes must be able to start "SSH-": fail early on anything else
        // instead of waiting for a line end.
        if !peer_is_server && !b"SSH-".starts_with(input.get(..4).unwrap_or(input)) {
            return Err(VersionError::NotAnIdentification);
        }
        return Ok(Scan::Incomplete);
    };
    let consumed = lf + 1;
    let line = &input[..lf];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if !line.starts_with(b"SSH-") {
        if peer_is_server {
            return Ok(Scan::OtherLine { consumed });
        }
        return Err(VersionError::NotAnIdentification);
    }
    if consumed > MAX_VERSION_LINE {
        return Err(VersionError::LineTooLong);
    }
    // "MUST consist of printable US-ASCII characters, with the exception of whitespace
    // characters and the minus sign" for the two version fields; comments after a space are
    // printable too. We accept printable ASCII and spaces.
    if !line.iter().all(|&b| (0x20..0x7f).contains(&b)) {
        return Err(VersionError::InvalidCharacter);
    }
    // RFC 4253 §5.1: "Server implementations MAY support a configurable compatibility flag that
    // enables compatibility with old versions" — "SSH-1.99-" means a peer that also speaks 2.0.
    if !(line.starts_with(b"SSH-2.0-") || line.starts_with(b"SSH-1.99-")) {
        let proto = line
            .get(4..)
            .unwrap_or_default()
            .split(|&b| b == b'-')
            .next()
            .unwrap_or_default();
        return Err(VersionError::UnsupportedVersion(
            String::from_utf8_lossy(proto).into_owned(),
        ));
    }
    Ok(Scan::Identification {
        version: line.to_vec(),
        consumed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_version_is_a_valid_identification() {
        let line = format!("{}\r\n", our_version());
        assert!(line.len() <= MAX_VERSION_LINE);
        assert_eq!(
            scan(line.as_bytes(), false),
            Ok(Scan::Identification {
                version: our_version().into_bytes(),
                consumed: line.len()
            })
        );
    }

    #[test]
    fn accepts_openssh_client_line_with_following_packet_bytes() {
        let input = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6\r\n\x00\x00\x05\xdc";
        assert_eq!(
            scan(input, false),
            Ok(Scan::Identification {
                version: b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6".to_vec(),
                consumed: 40
            })
        );
    }

    #[test]
    fn accepts_bare_lf_and_ssh_1_99() {
        assert!(matches!(
            scan(b"SSH-1.99-old\n", false),
            Ok(Scan::Identification { consumed: 13, .. })
        ));
    }

    #[test]
    fn waits_for_the_line_end() {
        assert_eq!(scan(b"", false), Ok(Scan::Incomplete));
        assert_eq!(scan(b"SS", false), Ok(Scan::Incomplete));
        assert_eq!(scan(b"SSH-2.0-Open", false), Ok(Scan::Incomplete));
    }

    #[test]
    fn rejects_lines_before_a_client_identification() {
        assert_eq!(
            scan(b"hello\r\nSSH-2.0-x\r\n", false),
            Err(VersionError::NotAnIdentification)
        );
        // Refused as soon as the first bytes can't be "SSH-", without waiting for a line end.
        assert_eq!(scan(b"GET ", false), Err(VersionError::NotAnIdentification));
    }

    #[test]
    fn accepts_lines_before_a_server_identification() {
        assert_eq!(
            scan(b"Welcome\r\nSSH-2.0-x\r\n", true),
            Ok(Scan::OtherLine { consumed: 9 })
        );
    }

    #[test]
    fn rejects_overlong_identification() {
        let mut line = b"SSH-2.0-".to_vec();
        line.resize(254, b'a');
        line.extend_from_slice(b"\r\n"); // 256 bytes
        assert_eq!(scan(&line, false), Err(VersionError::LineTooLong));
        assert_eq!(scan(&line, true), Err(VersionError::LineTooLong));
        // Without a line end: refused once 255 bytes are buffered.
        assert_eq!(scan(&line[..255], false), Err(VersionError::LineTooLong));
        // Exactly 255 with CR LF is fine.
        let ok = [&line[..253], b"\r\n"].concat();
        assert!(matches!(scan(&ok, false), Ok(Scan::Identification { .. })));
    }

    #[test]
    fn rejects_overlong_pre_banner_line() {
        let junk = vec![b'x'; MAX_PRE_BANNER_LINE];
        assert_eq!(scan(&junk, true), Err(VersionError::LineTooLong));
    }

    #[test]
    fn rejects_other_protocol_versions_and_control_characters() {
        assert_eq!(
            scan(b"SSH-1.5-old\r\n", false),
            Err(VersionError::UnsupportedVersion("1.5".into()))
        );
        assert_eq!(
            scan(b"SSH-2.0-a\x01b\r\n", false),
            Err(VersionError::InvalidCharacter)
        );
        assert_eq!(
            scan(b"SSH-2.0-\xc3\xa9\r\n", false),
            Err(VersionError::InvalidCharacter)
        );
    }
}

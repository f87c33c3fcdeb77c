//! Transport-layer message numbers (RFC 4253 §12, RFC 5656 §7.1, RFC 8308 §2.3) and disconnect
//! reason codes (RFC 4253 §11.1).
//!
//! RFC 4250 §4.1.2 splits the message-number space: "Transport layer protocol: 1 to 19 Transport
//! layer generic ... 20 to 29 Algorithm negotiation, 30 to 49 Key exchange method specific
//! (numbers can be reused for different authentication methods)", and everything from 50 up belongs
//! to the user authentication and connection protocols, which the transport carries as opaque
//! payloads.

use std::fmt;

/// `SSH_MSG_DISCONNECT`: uint32 reason code, string description, string language tag.
pub const DISCONNECT: u8 = 1;
/// `SSH_MSG_IGNORE`: string data.
pub const IGNORE: u8 = 2;
/// `SSH_MSG_UNIMPLEMENTED`: uint32 sequence number of the rejected packet.
pub const UNIMPLEMENTED: u8 = 3;
/// `SSH_MSG_DEBUG`: boolean always_display, string message, string language tag.
pub const DEBUG: u8 = 4;
/// `SSH_MSG_SERVICE_REQUEST`: string service name.
pub const SERVICE_REQUEST: u8 = 5;
/// `SSH_MSG_SERVICE_ACCEPT`: string service name.
pub const SERVICE_ACCEPT: u8 = 6;
/// `SSH_MSG_EXT_INFO` (RFC 8308 §2.3): uint32 nr-extensions, then that many (name, value) strings.
pub const EXT_INFO: u8 = 7;
/// `SSH_MSG_KEXINIT`.
pub const KEXINIT: u8 = 20;
/// `SSH_MSG_NEWKEYS`: no fields.
pub const NEWKEYS: u8 = 21;
/// `SSH_MSG_KEX_ECDH_INIT` (RFC 5656 §7.1, reused by RFC 8731): string Q_C.
pub const KEX_ECDH_INIT: u8 = 30;
/// `SSH_MSG_KEX_ECDH_REPLY`: string K_S, string Q_S, string signature of H.
pub const KEX_ECDH_REPLY: u8 = 31;
/// First message number that belongs to the layers above the transport (RFC 4250 §4.1.2).
pub const FIRST_HIGHER_LAYER: u8 = 50;

/// Is `msg` one of the numbers RFC 4253 §7.1 allows while a key exchange is running ("Transport
/// layer generic messages (1 to 19) (but SSH_MSG_SERVICE_REQUEST and SSH_MSG_SERVICE_ACCEPT MUST
/// NOT be sent); Algorithm negotiation messages (20 to 29) ...; Specific key exchange method
/// messages (30 to 49)")?
pub fn allowed_during_kex(msg: u8) -> bool {
    (1..FIRST_HIGHER_LAYER).contains(&msg) && msg != SERVICE_REQUEST && msg != SERVICE_ACCEPT
}

/// Reason code of an `SSH_MSG_DISCONNECT` (RFC 4253 §11.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// 1, `SSH_DISCONNECT_HOST_NOT_ALLOWED_TO_CONNECT`.
    HostNotAllowedToConnect,
    /// 2, `SSH_DISCONNECT_PROTOCOL_ERROR`.
    ProtocolError,
    /// 3, `SSH_DISCONNECT_KEY_EXCHANGE_FAILED`.
    KeyExchangeFailed,
    /// 5, `SSH_DISCONNECT_MAC_ERROR` (also used for a failed AEAD tag).
    MacError,
    /// 6, `SSH_DISCONNECT_COMPRESSION_ERROR`.
    CompressionError,
    /// 7, `SSH_DISCONNECT_SERVICE_NOT_AVAILABLE`.
    ServiceNotAvailable,
    /// 8, `SSH_DISCONNECT_PROTOCOL_VERSION_NOT_SUPPORTED`.
    ProtocolVersionNotSupported,
    /// 9, `SSH_DISCONNECT_HOST_KEY_NOT_VERIFIABLE`.
    HostKeyNotVerifiable,
    /// 10, `SSH_DISCONNECT_CONNECTION_LOST`.
    ConnectionLost,
    /// 11, `SSH_DISCONNECT_BY_APPLICATION`.
    ByApplication,
    /// 12, `SSH_DISCONNECT_TOO_MANY_CONNECTIONS`.
    TooManyConnections,
    /// 13, `SSH_DISCONNECT_AUTH_CANCELLED_BY_USER`.
    AuthCancelledByUser,
    /// 14, `SSH_DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE`.
    NoMoreAuthMethodsAvailable,
    /// 15, `SSH_DISCONNECT_ILLEGAL_USER_NAME`.
    IllegalUserName,
    /// Any other code (4 is `SSH_DISCONNECT_RESERVED`).
    Unknown(u32),
}

impl DisconnectReason {
    /// The reason for a wire code.
    pub fn from_code(code: u32) -> Self {
        match code {
            1 => Self::HostNotAllowedToConnect,
            2 => Self::ProtocolError,
            3 => Self::KeyExchangeFailed,
            5 => Self::MacError,
            6 => Self::CompressionError,
            7 => Self::ServiceNotAvailable,
            8 => Self::ProtocolVersionNotSupported,
            9 => Self::HostKeyNotVerifiable,
            10 => Self::ConnectionLost,
            11 => Self::ByApplication,
            12 => Self::TooManyConnections,
            13 => Self::AuthCancelledByUser,
            14 => Self::NoMoreAuthMethodsAvailable,
            15 => Self::IllegalUserName,
            other => Self::Unknown(other),
        }
    }

    /// The wire code.
    pub fn code(self) -> u32 {
        match self {
            Self::HostNotAllowedToConnect => 1,
            Self::ProtocolError => 2,
            Self::KeyExchangeFailed => 3,
            Self::MacError => 5,
            Self::CompressionError => 6,
            Self::ServiceNotAvailable => 7,
            Self::ProtocolVersionNotSupported => 8,
            Self::HostKeyNotVerifiable => 9,
            Self::ConnectionLost => 10,
            Self::ByApplication => 11,
            Self::TooManyConnections => 12,
            Self::AuthCancelledByUser => 13,
            Self::NoMoreAuthMethodsAvailable => 14,
            Self::IllegalUserName => 15,
            Self::Unknown(code) => code,
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Self::HostNotAllowedToConnect => "host not allowed to connect",
            Self::ProtocolError => "protocol error",
            Self::KeyExchangeFailed => "key exchange failed",
            Self::MacError => "MAC error",
            Self::CompressionError => "compression error",
            Self::ServiceNotAvailable => "service not available",
            Self::ProtocolVersionNotSupported => "protocol version not supported",
            Self::HostKeyNotVerifiable => "host key not verifiable",
            Self::ConnectionLost => "connection lost",
            Self::ByApplication => "disconnected by application",
            Self::TooManyConnections => "too many connections",
            Self::AuthCancelledByUser => "authentication cancelled by user",
            Self::NoMoreAuthMethodsAvailable => "no more authentication methods available",
            Self::IllegalUserName => "illegal user name",
            Self::Unknown(code) => return write!(f, "disconnect reason {code}"),
        };
        f.write_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_disconnect_reason_codes() {
        for code in 0..20 {
            assert_eq!(DisconnectReason::from_code(code).code(), code);
        }
        assert_eq!(
            DisconnectReason::from_code(2),
            DisconnectReason::ProtocolError
        );
        assert_eq!(DisconnectReason::from_code(4), DisconnectReason::Unknown(4));
    }

    #[test]
    fn service_messages_are_not_allowed_during_kex() {
        assert!(allowed_during_kex(IGNORE));
        assert!(allowed_during_kex(KEX_ECDH_INIT));
        assert!(!allowed_during_kex(SERVICE_REQUEST));
        assert!(!allowed_during_kex(SERVICE_ACCEPT));
        assert!(!allowed_during_kex(FIRST_HIGHER_LAYER));
        assert!(!allowed_during_kex(0));
    }
}

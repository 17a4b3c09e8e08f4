//! The SDK's one error type. Server answers become [`ClientError::Gim`] (a business code, 1002..1010)
//! or [`ClientError::Server`] (1001 and anything unknown), so callers and the CLI print the gim code.

use gim_common::{GimCode, GimError};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A business error the server returned (on the socket or over gRPC).
    #[error(transparent)]
    Gim(#[from] GimError),
    /// A non-business failure the server reported on the socket (1001: retry later).
    #[error("server error: {message} (gim code {code})")]
    Server { code: i32, message: String },
    /// A gRPC failure that carries no gim code (unavailable, deadline, internal...).
    #[error("rpc failed: {} ({:?})", .0.message(), .0.code())]
    Rpc(Box<tonic::Status>),
    #[error("cannot reach {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    #[error("invalid endpoint {0:?}: expected tcp://host:port, ws://host:port/ws or host:port")]
    Endpoint(String),
    #[error("connection closed")]
    Closed,
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("signed out: the same device signed in elsewhere ({0})")]
    Kicked(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("client stopped")]
    Stopped,
}

impl ClientError {
    /// The error for a non-zero `Output.code`.
    pub fn from_code(code: i32, message: String) -> Self {
        match GimCode::from_i32(code) {
            Some(c) => ClientError::Gim(GimError::new(c, message)),
            None => ClientError::Server { code, message },
        }
    }

    /// The gim code, when the server sent one.
    pub fn gim_code(&self) -> Option<i32> {
        match self {
            ClientError::Gim(e) => Some(e.code.as_i32()),
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// 1011: milliseconds to wait before the call may succeed (0: a quota, or another error).
    pub fn retry_after_ms(&self) -> i64 {
        match self {
            ClientError::Gim(e) => e.retry_after_ms,
            _ => 0,
        }
    }

    /// Whether retrying the same call (after a reconnect) can succeed: transport trouble and 1001,
    /// never a business error.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClientError::Server { .. }
                | ClientError::Rpc(_)
                | ClientError::Connect { .. }
                | ClientError::Closed
                | ClientError::Timeout(_)
        )
    }
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        match GimError::from_status(&status) {
            Some(e) => ClientError::Gim(e),
            None => ClientError::Rpc(Box::new(status)),
        }
    }
}

impl From<tonic::transport::Error> for ClientError {
    fn from(e: tonic::transport::Error) -> Self {
        ClientError::Connect {
            endpoint: "gRPC server".into(),
            reason: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_business_or_server_errors() {
        let e = ClientError::from_code(1004, "not a member".into());
        assert_eq!(e.gim_code(), Some(1004));
        assert_eq!(e.to_string(), "not a member (gim code 1004)");
        assert!(!e.is_retryable());
        let e = ClientError::from_code(1001, "store unavailable".into());
        assert_eq!(
            e.to_string(),
            "server error: store unavailable (gim code 1001)"
        );
        assert!(e.is_retryable());
    }

    #[test]
    fn statuses_keep_their_gim_code() {
        let status = GimError::new(GimCode::UserNotFound, "no user 7").to_status();
        let e = ClientError::from(status);
        assert_eq!(e.to_string(), "no user 7 (gim code 1010)");
        let e = ClientError::from(tonic::Status::unavailable("down"));
        assert_eq!(e.gim_code(), None);
        assert!(e.is_retryable());
    }
}

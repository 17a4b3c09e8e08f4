//! The crate's one error type and its single mapping to a gRPC status.
//!
//! Business errors (`GimError`) are normal flow: they become their status silently. Store outages
//! become UNAVAILABLE (callers may retry elsewhere) and everything else INTERNAL; both are logged
//! exactly once, here at the RPC boundary, with their cause chain and the request's trace id.

use gim_common::{GimCode, GimError, error::ErrorDetail};
use prost::Message as _;
use std::error::Error as _;
use tonic::{Code, Status};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Gim(#[from] GimError),
    #[error("mysql")]
    Mysql(#[from] sqlx::Error),
    #[error("redis")]
    Redis(#[from] redis::RedisError),
    #[error("{0} timed out")]
    Timeout(&'static str),
    #[error("{0}")]
    Internal(String),
}

impl From<GimCode> for Error {
    fn from(c: GimCode) -> Self {
        Error::Gim(c.into())
    }
}

impl Error {
    pub fn bad_request(field: &str, reason: impl std::fmt::Display) -> Self {
        Error::Gim(GimError::bad_request(field, reason))
    }

    pub fn code(code: GimCode, msg: impl Into<String>) -> Self {
        Error::Gim(GimError::new(code, msg))
    }

    /// The business code, if this is a business error.
    pub fn gim_code(&self) -> Option<GimCode> {
        match self {
            Error::Gim(e) => Some(e.code),
            _ => None,
        }
    }

    /// True when a store is unreachable (down, refusing, timing out): the call may succeed later.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Mysql(e) => matches!(
                e,
                sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::WorkerCrashed
            ),
            Error::Redis(e) => {
                e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_cluster_error()
                    || matches!(
                        e.kind(),
                        redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown)
                            | redis::ErrorKind::Server(redis::ServerErrorKind::TryAgain)
                            | redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
                            | redis::ErrorKind::Server(redis::ServerErrorKind::MasterDown)
                    )
            }
            Error::Timeout(_) => true,
            _ => false,
        }
    }

    /// `self: cause: cause ...`, for the one log line of an unexpected failure.
    pub fn chain(&self) -> String {
        let mut s = self.to_string();
        let mut cur = self.source();
        // thiserror's `transparent` already prints the inner error; skip a source equal to it.
        while let Some(c) = cur {
            let t = c.to_string();
            if !s.ends_with(&t) {
                s.push_str(": ");
                s.push_str(&t);
            }
            cur = c.source();
        }
        s
    }

    /// The status to return; logs non-business errors once, with their cause chain.
    pub fn into_status(self, method: &str, trace_id: &str) -> Status {
        if let Error::Gim(e) = &self {
            return e.to_status();
        }
        let detail = ErrorDetail {
            code: 0,
            trace_id: trace_id.to_string(),
            retry_after_ms: 0,
        }
        .encode_to_vec();
        if self.is_unavailable() {
            tracing::warn!(method, trace_id, error = %self.chain(), "store unavailable");
            Status::with_details(
                Code::Unavailable,
                format!("store unavailable (trace id {trace_id})"),
                detail.into(),
            )
        } else {
            tracing::error!(method, trace_id, error = %self.chain(), "internal error");
            Status::with_details(
                Code::Internal,
                format!("internal error (trace id {trace_id})"),
                detail.into(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn business_errors_keep_their_code_and_outages_are_unavailable() {
        let s = Error::bad_request("user.nickname", "empty").into_status("m", "t");
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(GimError::from_status(&s).unwrap().code, GimCode::BadRequest);
        let s = Error::Mysql(sqlx::Error::PoolTimedOut).into_status("m", "t1");
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(ErrorDetail::decode(s.details()).unwrap().trace_id, "t1");
        let s = Error::Internal("boom".into()).into_status("m", "t");
        assert_eq!(s.code(), Code::Internal);
        assert!(GimError::from_status(&s).is_none());
    }

    #[test]
    fn chain_lists_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = Error::Mysql(sqlx::Error::Io(io));
        assert!(e.chain().contains("refused"), "{}", e.chain());
    }
}

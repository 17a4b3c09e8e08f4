//! gim's business error codes (SPEC §3) and their mapping to gRPC, in one place.
//!
//! On gRPC a business error travels as the closest standard status code, with the gim code in the
//! status details (an encoded [`ErrorDetail`]) and, for clients that cannot parse details, in the
//! `x-gim-code` metadata entry. [`GimError::from_status`] reads it back on the calling side, so an
//! error crosses any number of hops unchanged. On the long connection the same code goes into
//! `Output.code`.

use prost::Message as _;
use std::fmt;
use tonic::{Code, Status};

/// `Output.code` for a failure that is not a business error (a store unavailable, an internal
/// fault): the client may retry. Business codes start at 1002 as in the original gim.
pub const CODE_INTERNAL: i32 = 1001;

/// Metadata key that repeats the gim code of a failed call.
pub const GIM_CODE_HEADER: &str = "x-gim-code";

/// Metadata key of a 1011's wait in milliseconds before the call may succeed (absent: retrying
/// does not help until the limit changes).
pub const RETRY_AFTER_HEADER: &str = "retry-after-ms";

/// Business error codes. They are normal flow: callers act on them, and they are not logged as errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum GimCode {
    Unauthorized = 1002,
    NotFriends = 1003,
    NotInGroup = 1004,
    DeviceNotBound = 1005,
    BadRequest = 1006,
    UserAlreadyExists = 1007,
    GroupAlreadyExists = 1008,
    GroupNotFound = 1009,
    UserNotFound = 1010,
    // 1012-1019 are the conversations issue's; 1020-1029 are the security issue's blocks,
    // suspensions and revocation.
    /// Over one of the app's rate limits or quotas; carries the wait before a retry may
    /// succeed (0: a quota, retrying does not help).
    RateLimited = 1011,
    /// Recall, edit, delete: no such message in the caller's list (or, for a business server,
    /// in the app's user lists).
    MessageNotFound = 1012,
    /// Recall, edit: the caller neither sent the message nor administers its group.
    NotMessageSender = 1013,
    /// Recall, edit: the sender's recall window (per app, 120 s by default) has passed.
    RecallWindowPassed = 1014,
    /// The receiver has blocked the sender (1:1 sends).
    Blocked = 1020,
    /// The app is suspended: its clients cannot sign in, call or send.
    AppSuspended = 1021,
    /// The user is suspended: it cannot sign in, call or send.
    UserSuspended = 1022,
}

impl GimCode {
    pub const ALL: [GimCode; 16] = [
        GimCode::Unauthorized,
        GimCode::NotFriends,
        GimCode::NotInGroup,
        GimCode::DeviceNotBound,
        GimCode::BadRequest,
        GimCode::UserAlreadyExists,
        GimCode::GroupAlreadyExists,
        GimCode::GroupNotFound,
        GimCode::UserNotFound,
        GimCode::RateLimited,
        GimCode::MessageNotFound,
        GimCode::NotMessageSender,
        GimCode::RecallWindowPassed,
        GimCode::Blocked,
        GimCode::AppSuspended,
        GimCode::UserSuspended,
    ];

    pub fn as_i32(self) -> i32 {
        self as i32
    }

    pub fn from_i32(code: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_i32() == code)
    }

    /// The standard gRPC status code closest to this business code.
    pub fn grpc_code(self) -> Code {
        match self {
            GimCode::Unauthorized => Code::Unauthenticated,
            GimCode::NotFriends => Code::FailedPrecondition,
            GimCode::NotInGroup
            | GimCode::DeviceNotBound
            | GimCode::Blocked
            | GimCode::AppSuspended
            | GimCode::UserSuspended
            | GimCode::NotMessageSender => Code::PermissionDenied,
            GimCode::RecallWindowPassed => Code::FailedPrecondition,
            GimCode::MessageNotFound => Code::NotFound,
            GimCode::BadRequest => Code::InvalidArgument,
            GimCode::UserAlreadyExists | GimCode::GroupAlreadyExists => Code::AlreadyExists,
            GimCode::GroupNotFound | GimCode::UserNotFound => Code::NotFound,
            GimCode::RateLimited => Code::ResourceExhausted,
        }
    }

    pub fn default_message(self) -> &'static str {
        match self {
            GimCode::Unauthorized => "unauthorized",
            GimCode::NotFriends => "not friends",
            GimCode::NotInGroup => "not a member of the group",
            GimCode::DeviceNotBound => "device is not bound to this user",
            GimCode::BadRequest => "bad request",
            GimCode::UserAlreadyExists => "user already exists",
            GimCode::GroupAlreadyExists => "group already exists",
            GimCode::GroupNotFound => "group not found",
            GimCode::UserNotFound => "user not found",
            GimCode::MessageNotFound => "message not found",
            GimCode::NotMessageSender => "only the sender or a group admin may change the message",
            GimCode::RecallWindowPassed => "the recall window has passed",
            GimCode::RateLimited => "over a rate limit or quota",
            GimCode::Blocked => "the receiver has blocked the sender",
            GimCode::AppSuspended => "the app is suspended",
            GimCode::UserSuspended => "the user is suspended",
        }
    }
}

impl fmt::Display for GimCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.default_message(), self.as_i32())
    }
}

/// What a failed gim call carries in its status details.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ErrorDetail {
    /// The gim business code; 0 for errors that are not business errors.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// Trace id of the request, so an operator can find the server's log line for it.
    #[prost(string, tag = "2")]
    pub trace_id: String,
    /// 1011: milliseconds to wait before a retry may succeed; 0 = a quota (retrying does not
    /// help until the limit changes).
    #[prost(int64, tag = "3")]
    pub retry_after_ms: i64,
}

/// A business error: a code plus a human-readable message (which names the offending field for 1006).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (gim code {})", code.as_i32())]
pub struct GimError {
    pub code: GimCode,
    pub message: String,
    /// 1011 only: milliseconds before a retry may succeed (0: none will).
    pub retry_after_ms: i64,
}

impl GimError {
    pub fn new(code: GimCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_ms: 0,
        }
    }

    /// 1011: over a rate limit (`retry_after_ms` > 0) or a quota (0).
    pub fn rate_limited(message: impl Into<String>, retry_after_ms: i64) -> Self {
        Self {
            retry_after_ms: retry_after_ms.max(0),
            ..Self::new(GimCode::RateLimited, message)
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(GimCode::Unauthorized, message)
    }

    /// 1006 naming the field and what is wrong with it.
    pub fn bad_request(field: &str, reason: impl fmt::Display) -> Self {
        Self::new(GimCode::BadRequest, format!("{field}: {reason}"))
    }

    /// The status to return from a gRPC handler.
    pub fn to_status(&self) -> Status {
        let detail = ErrorDetail {
            code: self.code.as_i32(),
            trace_id: String::new(),
            retry_after_ms: self.retry_after_ms,
        };
        let mut status = Status::with_details(
            self.code.grpc_code(),
            self.message.clone(),
            detail.encode_to_vec().into(),
        );
        status.metadata_mut().insert(
            GIM_CODE_HEADER,
            self.code.as_i32().to_string().parse().expect("digits"),
        );
        if self.retry_after_ms > 0 {
            status.metadata_mut().insert(
                RETRY_AFTER_HEADER,
                self.retry_after_ms.to_string().parse().expect("digits"),
            );
        }
        status
    }

    /// Reads a business error back out of a status; `None` for errors that are not business errors
    /// (unavailable, internal, ...).
    pub fn from_status(status: &Status) -> Option<Self> {
        let detail = ErrorDetail::decode(status.details()).ok();
        let header = |k: &str| {
            status
                .metadata()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i64>().ok())
        };
        let retry_after_ms = detail
            .as_ref()
            .map(|d| d.retry_after_ms)
            .filter(|ms| *ms > 0)
            .or_else(|| header(RETRY_AFTER_HEADER))
            .unwrap_or(0);
        let code = detail.and_then(|d| GimCode::from_i32(d.code)).or_else(|| {
            header(GIM_CODE_HEADER).and_then(|c| GimCode::from_i32(i32::try_from(c).ok()?))
        })?;
        let mut e = Self::new(code, status.message());
        e.retry_after_ms = retry_after_ms;
        Some(e)
    }
}

impl From<GimCode> for GimError {
    fn from(code: GimCode) -> Self {
        Self::new(code, code.default_message())
    }
}

impl From<GimError> for Status {
    fn from(e: GimError) -> Self {
        e.to_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_a_status() {
        for code in GimCode::ALL {
            let e = GimError::new(code, "why");
            let status = e.to_status();
            assert_eq!(status.code(), code.grpc_code());
            assert_eq!(GimError::from_status(&status), Some(e));
        }
    }

    #[test]
    fn codes_have_their_spec_numbers() {
        let nums: Vec<i32> = GimCode::ALL.iter().map(|c| c.as_i32()).collect();
        let want: Vec<i32> = (1002..=1014).chain(1020..=1022).collect();
        assert_eq!(nums, want);
        assert_eq!(GimCode::from_i32(1001), None);
    }

    #[test]
    fn retry_after_crosses_a_status_in_details_and_metadata() {
        let s = GimError::rate_limited("sends", 250).to_status();
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(GimError::from_status(&s).unwrap().retry_after_ms, 250);
        let mut bare = Status::resource_exhausted("sends");
        bare.metadata_mut()
            .insert(GIM_CODE_HEADER, "1011".parse().unwrap());
        bare.metadata_mut()
            .insert(RETRY_AFTER_HEADER, "40".parse().unwrap());
        let e = GimError::from_status(&bare).unwrap();
        assert_eq!((e.code, e.retry_after_ms), (GimCode::RateLimited, 40));
    }

    #[test]
    fn metadata_alone_is_enough() {
        let mut status = Status::not_found("no such user");
        status
            .metadata_mut()
            .insert(GIM_CODE_HEADER, "1010".parse().unwrap());
        assert_eq!(
            GimError::from_status(&status).unwrap().code,
            GimCode::UserNotFound
        );
    }

    #[test]
    fn plain_statuses_are_not_business_errors() {
        assert_eq!(GimError::from_status(&Status::unavailable("db down")), None);
    }

    #[test]
    fn bad_request_names_the_field() {
        let e = GimError::bad_request("user.nickname", "must not be empty");
        assert_eq!(e.message, "user.nickname: must not be empty");
        assert_eq!(e.code.grpc_code(), Code::InvalidArgument);
    }
}

//! Error codes every part of Duikou speaks, from an RPC reply to the
//! GraphQL `extensions.code` a client sees.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A stable, machine-readable error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// No or invalid credentials.
    Unauthenticated,
    /// Authenticated, but not allowed.
    Forbidden,
    /// The input is invalid; the message says which part.
    BadUserInput,
    /// The thing asked for does not exist (or is not visible to the caller).
    NotFound,
    /// Not enough capacity for the request.
    SoldOut,
    /// The listing is closed on a night asked for.
    Closed,
    /// The stay is shorter than the listing's minimum stay.
    MinStay,
    /// The departure no longer takes bookings (past its cut-off day).
    CutOff,
    /// The listing is not on sale (a draft or unpublished route).
    NotPublished,
    /// The request conflicts with the current state.
    Conflict,
    /// An idempotency key was reused with different input.
    IdempotencyKeyReused,
    /// The payment provider refused the payment.
    PaymentDeclined,
    /// Too many requests.
    RateLimited,
    /// A part of the system did not answer in time.
    ServiceUnavailable,
    /// A bug or an unexpected failure; details are in the logs, not the reply.
    Internal,
}

impl ErrorCode {
    /// The code as clients see it, e.g. `BAD_USER_INPUT`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::BadUserInput => "BAD_USER_INPUT",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::SoldOut => "SOLD_OUT",
            ErrorCode::Closed => "CLOSED",
            ErrorCode::MinStay => "MIN_STAY",
            ErrorCode::CutOff => "CUT_OFF",
            ErrorCode::NotPublished => "NOT_PUBLISHED",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            ErrorCode::PaymentDeclined => "PAYMENT_DECLINED",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error with a code and a message meant for the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AppError {
    /// The machine-readable code.
    pub code: ErrorCode,
    /// A human message; never SQL or a stack trace.
    pub message: String,
}

impl AppError {
    /// An error with the given code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        AppError {
            code,
            message: message.into(),
        }
    }

    /// BAD_USER_INPUT.
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadUserInput, message)
    }

    /// NOT_FOUND.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// CONFLICT.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// INTERNAL: logs the cause and tells the client only that it happened.
    pub fn internal(cause: impl fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(ErrorCode::Internal, "internal error; it has been logged")
    }
}

/// The message of a transaction the database failed to break a deadlock
/// or a serialization conflict (SERVICE_UNAVAILABLE): the same request may
/// pass now, and a caller that knows it is safe may send it again.
pub const GAVE_WAY: &str = "a concurrent change got in the way; try again";

impl AppError {
    /// Whether this is a transaction that gave way to a concurrent one
    /// ([`GAVE_WAY`]).
    pub fn gave_way(&self) -> bool {
        self.code == ErrorCode::ServiceUnavailable && self.message == GAVE_WAY
    }
}

impl From<sea_orm::DbErr> for AppError {
    fn from(e: sea_orm::DbErr) -> Self {
        if crate::db::is_unavailable(&e) {
            tracing::warn!(error = %e, "database unavailable");
            AppError::new(
                ErrorCode::ServiceUnavailable,
                "a database is unavailable just now; try again shortly",
            )
        } else if crate::db::is_transient(&e) {
            // A deadlock or serialization failure: the database chose this
            // transaction to give way; the same request may pass now.
            tracing::info!(error = %e, "transaction gave way to a concurrent one");
            AppError::new(ErrorCode::ServiceUnavailable, GAVE_WAY)
        } else {
            AppError::internal(e)
        }
    }
}

/// The message a panic was raised with, if it was a string.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use super::{AppError, ErrorCode};
    use sea_orm::DbErr;

    #[test]
    fn a_transaction_that_gave_way_asks_to_try_again_and_a_bad_statement_is_internal() {
        let deadlock = AppError::from(DbErr::Custom(
            "error returned from database: deadlock detected (SQLSTATE 40P01)".into(),
        ));
        assert_eq!(deadlock.code, ErrorCode::ServiceUnavailable);
        let busy = AppError::from(DbErr::Custom("database is locked".into()));
        assert_eq!(busy.code, ErrorCode::ServiceUnavailable);
        let broken = AppError::from(DbErr::Custom("syntax error at or near SELEC".into()));
        assert_eq!(broken.code, ErrorCode::Internal);
    }
}

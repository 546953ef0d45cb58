//! Every error a client sees carries `extensions.code` and a human message.

use async_graphql::ErrorExtensions;
use shared::{AppError, ErrorCode};

/// Converts a service error into a GraphQL error with its code.
pub fn gql(e: AppError) -> async_graphql::Error {
    async_graphql::Error::new(e.message).extend_with(|_, ext| ext.set("code", e.code.as_str()))
}

/// A BAD_USER_INPUT error.
pub fn bad_input(message: impl Into<String>) -> async_graphql::Error {
    gql(AppError::new(ErrorCode::BadUserInput, message))
}

/// A BAD_USER_INPUT refusal of a whole request, from an extension (before
/// any resolver runs).
pub fn refused(message: impl Into<String>) -> async_graphql::ServerError {
    refused_as(ErrorCode::BadUserInput, message)
}

/// A refusal of a whole request with `code`, from an extension.
pub fn refused_as(code: ErrorCode, message: impl Into<String>) -> async_graphql::ServerError {
    let mut e = async_graphql::ServerError::new(message, None);
    e.extensions
        .get_or_insert_with(Default::default)
        .set("code", code.as_str());
    e
}

//! HTTP handlers, one module per concern.

pub mod cache;
pub mod counter;
pub mod extract;
pub mod health;

use crate::error::AppError;

/// Answers paths no route matches.
pub async fn not_found() -> AppError {
    AppError::RouteNotFound
}

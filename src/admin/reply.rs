//! Error replies of the admin API: one JSON shape, `{"error": "..."}`,
//! with the status that says what went wrong.
//!
//! Invariant: a leaf of the admin tree; it knows nothing of the state.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// A JSON error answer: `{"error": message}` with `status`.
pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    #[derive(Serialize)]
    struct E {
        error: String,
    }
    (
        status,
        Json(E {
            error: message.into(),
        }),
    )
        .into_response()
}

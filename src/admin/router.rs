//! The admin server's routes: which path goes to which handler, the
//! test-only routes, and the layers every request passes (the body limit,
//! the token check).
//!
//! Invariant: every route, the fallback included, sits behind
//! [`auth::require_token`] but the three public ones ([`PUBLIC`]: the
//! CA's trust page and certificate, which every client must be able to
//! fetch and which hold nothing secret); nothing here handles a request
//! itself but the 404 of an unknown path.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::middleware;
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;

use super::reply::error;
use super::state::AdminState;
use super::{auth, ca, debug, har, inventory, messages, records, rules, status, ui};

/// The routes served without the token: the CA's trust page and its
/// certificate (never the key).
pub const PUBLIC: [&str; 3] = ["/ca", "/ca.pem", "/ca.der"];

pub fn router(state: Arc<AdminState>) -> Router {
    // Merged after the token layer is applied, so it does not wrap them.
    let public = Router::new()
        .route(PUBLIC[0], get(ca::page))
        .route(PUBLIC[1], get(ca::pem))
        .route(PUBLIC[2], get(ca::der));
    let mut r = Router::new()
        .route("/api/health", get(status::health))
        .route("/api/connections", get(inventory::connections))
        .route("/api/connections/{id}", delete(inventory::kill))
        .route("/api/sockets", get(inventory::sockets))
        .route("/api/stats/history", get(status::history))
        .route("/api/users", get(inventory::users))
        .route("/api/records", get(records::list).delete(records::clear))
        .route("/api/records/live", get(records::live))
        .route("/api/har", get(har::har))
        .route("/api/records/{id}", get(records::one))
        .route("/api/records/{id}/body/{dir}", get(records::body))
        .route("/api/records/{id}/messages", get(messages::list))
        .route("/api/records/{id}/messages/live", get(messages::live))
        .route("/api/rules", get(rules::get_rules).put(rules::put_rules))
        .route("/api/rules/test", get(rules::test_rules))
        .route("/api/rules/validate", post(rules::validate_rules))
        .route("/api/records/count", get(records::count))
        .route("/api/watchdog", get(status::watchdog))
        .route("/api/tls", get(ca::status))
        .route(
            "/api/session",
            post(auth::session_open).delete(auth::session_close),
        )
        .route("/", get(ui::index))
        .route("/ui/{*file}", get(ui::asset))
        .route("/metrics", get(status::metrics));
    if state.config.test_hooks {
        r = r
            .route("/api/debug/leak-socket", post(debug::leak_socket))
            .route("/api/debug/recorder", post(debug::pause_recorder));
    }
    r.fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(rules::MAX_PUT))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .merge(public)
        .with_state(state)
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such admin route")
}

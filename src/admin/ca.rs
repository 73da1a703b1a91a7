//! The CA on the admin server: the public routes a person trusts it from
//! (`/ca`, the trust page; `/ca.pem`; `/ca.der`), served without the
//! token, and the authenticated `/api/tls` (the CA, the `--intercept`
//! scope, the leaf cache, the passthrough fallback table).
//!
//! Invariant: the public routes serve only what [`crate::tls::trust`]
//! renders from the certificate; nothing here can reach the key.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::state::AdminState;
use crate::tls::trust::{self, TrustItem};

type St = State<Arc<AdminState>>;

fn serve(st: &AdminState, item: TrustItem) -> Response {
    trust::answer(st.tls.leaves.ca(), item).into_response(axum::body::Body::from)
}

/// `GET /ca`: the trust page.
pub(super) async fn page(State(st): St) -> Response {
    serve(&st, TrustItem::Page)
}

/// `GET /ca.pem`.
pub(super) async fn pem(State(st): St) -> Response {
    serve(&st, TrustItem::Pem)
}

/// `GET /ca.der`.
pub(super) async fn der(State(st): St) -> Response {
    serve(&st, TrustItem::Der)
}

/// `GET /api/tls`: what interception is working with now.
pub(super) async fn status(State(st): St) -> Response {
    let tls = &st.tls;
    let ca = tls.leaves.ca();
    let summary = ca.summary();
    let (cached, made, hits) = tls.leaves.stats();
    Json(serde_json::json!({
        "ca": {
            "path": ca.cert_path().map(|p| p.display().to_string()),
            "subject": summary.subject,
            "sha256": summary.sha256,
            "not_before": summary.not_before,
            "not_after": summary.not_after,
            "created": summary.created,
        },
        "intercept": st.intercept,
        "insecure_upstream": tls.insecure_upstream,
        "leaf_cache": { "cached": cached, "made": made, "hits": hits },
        "fallback": tls.fallback.list(),
        "trust": {
            "page": "/ca",
            "pem": "/ca.pem",
            "der": "/ca.der",
            "through_proxy": format!("http://{}/", crate::tls::TRUST_HOST),
        },
    }))
    .into_response()
}

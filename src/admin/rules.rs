//! `/api/rules`: the live rules (read, replace), a check of a text
//! without installing it, and a dry run of which rules would apply to a
//! request.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::reply::error;
use super::state::AdminState;
use crate::rules::live::{PutError, Snapshot};
use crate::rules::{Answer, Applied, RuleId};

type St = State<Arc<AdminState>>;

/// Largest rule text `PUT /api/rules` takes.
pub const MAX_PUT: usize = 4 << 20;

#[derive(Serialize)]
struct RulesView<'a> {
    path: Option<String>,
    text: &'a str,
    rules: usize,
    generation: u64,
    loaded_at: String,
}

fn view(st: &AdminState, s: &Snapshot) -> Response {
    Json(RulesView {
        path: st.rules.path.as_ref().map(|p| p.display().to_string()),
        text: &s.text,
        rules: s.set.len(),
        generation: s.generation,
        loaded_at: humantime::format_rfc3339_millis(s.loaded_at).to_string(),
    })
    .into_response()
}

pub async fn get_rules(State(st): St) -> Response {
    let snap = st.rules.current();
    view(&st, &snap)
}

#[derive(Serialize)]
struct ErrorRow<'a> {
    line: usize,
    column: usize,
    message: &'a str,
}

fn error_rows(errors: &[crate::rules::RuleError]) -> Vec<ErrorRow<'_>> {
    errors
        .iter()
        .map(|e| ErrorRow {
            line: e.line,
            column: e.column,
            message: &e.message,
        })
        .collect()
}

pub async fn put_rules(State(st): St, body: Bytes) -> Response {
    if body.len() > MAX_PUT {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("rule text is larger than {} MiB", MAX_PUT >> 20),
        );
    }
    let text = match String::from_utf8(body.to_vec()) {
        Ok(t) => t,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "rule text is not UTF-8 (first bad byte at offset {})",
                    e.utf8_error().valid_up_to()
                ),
            )
        }
    };
    match st.rules.put(text).await {
        Ok(snap) => {
            tracing::info!(
                generation = snap.generation,
                rules = snap.set.len(),
                "rules replaced through the admin API"
            );
            view(&st, &snap)
        }
        Err(PutError::Invalid(errors)) => {
            let rows = error_rows(&errors);
            let n = errors.len();
            (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({
                    "error": format!(
                        "{n} error{} in the rule text; the running rules stay",
                        if n == 1 { "" } else { "s" }
                    ),
                    "errors": rows,
                })),
            )
                .into_response()
        }
        Err(PutError::Write(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot write the rule file: {e}; the running rules stay"),
        ),
    }
}

#[derive(Deserialize)]
pub struct TestQuery {
    url: Option<String>,
    method: Option<String>,
    client: Option<String>,
}

#[derive(Serialize)]
struct AnswerView {
    kind: &'static str,
    rule: RuleId,
    status: Option<u16>,
}

#[derive(Serialize)]
struct TestView {
    generation: u64,
    matched: Vec<RuleId>,
    applied: Vec<Applied>,
    answer: Option<AnswerView>,
}

pub async fn test_rules(State(st): St, Query(q): Query<TestQuery>) -> Response {
    let Some(url) = q.url.filter(|u| !u.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "url: missing");
    };
    let method = q
        .method
        .unwrap_or_else(|| "GET".into())
        .to_ascii_uppercase();
    let client: IpAddr = match q.client.as_deref() {
        None | Some("") => IpAddr::from([127, 0, 0, 1]),
        Some(c) => match c.parse() {
            Ok(ip) => ip,
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("client: `{c}` is not an IP address"),
                )
            }
        },
    };
    let snap = st.rules.current();
    let plan = match snap.set.plan_url(&method, &url, client) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("url: {e}")),
    };
    let answer = plan.answer(false).map(|a| match a {
        Answer::Block(c) => AnswerView {
            kind: "block",
            rule: c.rule,
            status: match c.action {
                crate::rules::Block::Status(s) => Some(s.as_u16()),
                crate::rules::Block::Close => None,
            },
        },
        Answer::Redirect(c) => AnswerView {
            kind: "redirect",
            rule: c.rule,
            status: Some(c.action.status.as_u16()),
        },
        Answer::Preflight(c) => AnswerView {
            kind: "preflight",
            rule: c.rule,
            status: Some(204),
        },
        Answer::Mock(c) => AnswerView {
            kind: "mock",
            rule: c.rule,
            status: Some(c.action.status.as_u16()),
        },
    });
    Json(TestView {
        generation: snap.generation,
        matched: plan.matched.clone(),
        applied: plan.describe(),
        answer,
    })
    .into_response()
}

/// Validations compiling at once. Each can take up to the regex budget
/// and a blocking thread; a flood of validates waits here instead of
/// occupying every blocking thread (file reloads and record queries need
/// them too).
static VALIDATING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// How long a validate waits for its turn before answering 503.
const VALIDATE_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether a `POST` could have come from a cross-origin page without a
/// CORS preflight: a "simple" request carries no custom header and no
/// `Authorization`, and its content type (if any) is one of the three a
/// form can send. The UI sends [`super::auth::UI_HEADER`]; scripts send a
/// bearer token or their own content type.
fn could_be_cross_site(headers: &axum::http::HeaderMap) -> bool {
    use axum::http::header;
    if headers.contains_key(super::auth::UI_HEADER) || headers.contains_key(header::AUTHORIZATION) {
        return false;
    }
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return true;
    };
    let essence = ct
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "" | "text/plain" | "application/x-www-form-urlencoded" | "multipart/form-data"
    )
}

/// `POST /api/rules/validate`: compiles the body as a rule file without
/// installing it (the editor's check before saving). Always 200 for a
/// readable text: `{valid, rules, errors: [{line, column, message}]}`.
/// The request must show it is not a cross-site form post (see
/// [`could_be_cross_site`]): 415 otherwise. The compile runs on a
/// blocking thread, one validation at a time.
pub async fn validate_rules(
    State(st): St,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    if could_be_cross_site(&headers) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "send the rule text with a `{}: 1` header or a content type such as \
                 `application/json` or `text/x-sluice-rules` (a plain form post could \
                 come from another web site)",
                super::auth::UI_HEADER
            ),
        );
    }
    if body.len() > MAX_PUT {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("rule text is larger than {} MiB", MAX_PUT >> 20),
        );
    }
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return error(StatusCode::BAD_REQUEST, "rule text is not UTF-8");
    };
    let Ok(Ok(_turn)) = tokio::time::timeout(VALIDATE_QUEUE_WAIT, VALIDATING.acquire()).await
    else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "other rule validations are still compiling; retry shortly",
        );
    };
    // `bodyFile://` paths resolve as a save would resolve them.
    let files = st.rules.files.clone();
    let compiled = tokio::task::spawn_blocking(move || {
        crate::rules::parse_in(&text, &files).map(|set| set.len())
    })
    .await;
    match compiled {
        Ok(Ok(rules)) => Json(serde_json::json!({
            "valid": true,
            "rules": rules,
            "errors": [],
        }))
        .into_response(),
        Ok(Err(errors)) => {
            let rows = error_rows(&errors);
            Json(serde_json::json!({ "valid": false, "rules": 0, "errors": rows })).into_response()
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rule validation task failed: {e}"),
        ),
    }
}

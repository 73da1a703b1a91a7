//! Answers sluice writes itself: short text bodies that say what failed and
//! who failed, so a user knows where to look; and what it answers for its
//! own name, [`crate::tls::TRUST_HOST`] ([`trust`]).

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::body::BoxError;
use crate::net::{ConnectError, ConnectErrorKind};
use crate::registry::Side;

pub type ProxyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// An error answer: status, the failing side and a human sentence.
#[derive(Debug)]
pub struct Failure {
    pub status: StatusCode,
    pub side: Side,
    /// Stable short code for logs, metrics and the `X-Sluice-Error` header.
    pub code: &'static str,
    pub message: String,
}

impl Failure {
    pub fn new(
        status: StatusCode,
        side: Side,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Failure {
            status,
            side,
            code,
            message: message.into(),
        }
    }

    /// The one mapping from a failed upstream connect to an answer, shared
    /// by the forward path and both CONNECT paths.
    pub fn from_connect(e: &ConnectError) -> Self {
        let (status, side, code) = match e.kind {
            ConnectErrorKind::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                Side::Upstream,
                "connect-timeout",
            ),
            ConnectErrorKind::Dns => (StatusCode::BAD_GATEWAY, Side::Upstream, "dns"),
            ConnectErrorKind::Refused => (StatusCode::BAD_GATEWAY, Side::Upstream, "refused"),
            ConnectErrorKind::Other => (StatusCode::BAD_GATEWAY, Side::Upstream, "connect-failed"),
            ConnectErrorKind::OwnListener => (StatusCode::LOOP_DETECTED, Side::Client, "loop"),
        };
        Failure::new(status, side, code, e.to_string())
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Failure::new(
            StatusCode::BAD_REQUEST,
            Side::Client,
            "bad-request",
            message,
        )
    }

    /// The answer as raw HTTP/1.1 bytes, for paths that do not go through
    /// hyper; always closes the connection.
    pub fn to_bytes(&self, extra_headers: &[(&str, &str)]) -> Vec<u8> {
        let body = self.body_text();
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nX-Sluice-Error: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or(""),
            self.code,
            body.len()
        );
        for (k, v) in extra_headers {
            out.push_str(k);
            out.push_str(": ");
            out.push_str(v);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.push_str(&body);
        out.into_bytes()
    }

    pub fn body_text(&self) -> String {
        format!(
            "{} {}\n{}\nfailed: {}\n",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or(""),
            self.message,
            self.side.as_str()
        )
    }

    pub fn into_response(self) -> Response<ProxyBody> {
        let text = self.body_text();
        let mut resp = Response::new(full(text));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert("x-sluice-error", HeaderValue::from_static(self.code));
        if self.side == Side::Client {
            // After a malformed request the stream position is unknowable.
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// sluice's answer to `method path` on its own name: the CA's trust page
/// (`/`, `/ca`), the certificate (`/ca.pem`, `/ca.der`), or why not.
pub fn trust(
    method: &http::Method,
    path: &str,
    ca: &crate::tls::Ca,
) -> Result<crate::tls::trust::TrustAnswer, Failure> {
    use crate::tls::trust::{answer, TrustItem};
    let host = crate::tls::TRUST_HOST;
    if method != http::Method::GET && method != http::Method::HEAD {
        return Err(Failure::new(
            StatusCode::METHOD_NOT_ALLOWED,
            Side::Client,
            "trust-page",
            format!("{host} is sluice's own name: it answers GET and HEAD only"),
        ));
    }
    let item = TrustItem::of_path(path).ok_or_else(|| {
        Failure::new(
            StatusCode::NOT_FOUND,
            Side::Client,
            "trust-page",
            format!(
                "{host} is sluice's own name: it serves http://{host}/ (how to trust its CA), \
                 /ca.pem and /ca.der, nothing else"
            ),
        )
    })?;
    Ok(answer(ca, item))
}

pub fn full(text: impl Into<Bytes>) -> ProxyBody {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> ProxyBody {
    full(Bytes::new())
}

//! A small client for the admin API, used by `sluice doctor` and `sluice top`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the admin server at {0}: {1}")]
    Connect(SocketAddr, String),
    #[error("admin server at {0} did not answer within {1:?}")]
    Timeout(SocketAddr, Duration),
    #[error("admin request failed: {0}")]
    Http(String),
    #[error("admin server answered {0}: {1}")]
    Status(u16, String),
}

/// GETs `path` from the admin server and returns the body of a 2xx answer.
pub async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Result<Bytes, ClientError> {
    let timeout = Duration::from_secs(10);
    let work = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| ClientError::Connect(addr, e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(conn);
        let mut req = http::Request::get(path)
            .header(http::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|e| ClientError::Http(e.to_string()))?;
        if let Some(t) = token {
            if let Ok(v) = http::HeaderValue::from_str(&format!("Bearer {t}")) {
                req.headers_mut().insert(http::header::AUTHORIZATION, v);
            }
        }
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(ClientError::Status(
                status.as_u16(),
                String::from_utf8_lossy(&body).trim().to_string(),
            ));
        }
        Ok(body)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ClientError::Timeout(addr, timeout))?
}

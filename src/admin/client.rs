//! A small client for the admin API, used by `sluice doctor`, `top`,
//! `records` and `har`, and how those commands find the admin token.
//!
//! Invariants: a token given on the command line, in a file or in the
//! environment wins; without one, the token the instance generated in its
//! data folder (`admin.token`, the same `--data-dir` default as the proxy)
//! is read, so the commands work with no flag; a 401 without any token
//! found says where it looked.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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

/// The token a client command sends, and where it looked for one.
#[derive(Debug, Clone, Default)]
pub struct ClientToken {
    pub value: Option<String>,
    /// The generated token's file, when that is where the search ended.
    pub looked_in: Option<PathBuf>,
}

impl ClientToken {
    /// `given` (flag or environment), else the file `file`, else the
    /// generated token in `data_dir` (default: the proxy's default data
    /// folder). A named file that cannot be read is an error.
    pub fn resolve(
        given: Option<&str>,
        file: Option<&Path>,
        data_dir: Option<&str>,
    ) -> Result<ClientToken, String> {
        if let Some(t) = given.map(str::trim).filter(|t| !t.is_empty()) {
            return Ok(ClientToken {
                value: Some(t.to_string()),
                looked_in: None,
            });
        }
        if let Some(f) = file {
            return super::token::read_file(f)
                .map(|t| ClientToken {
                    value: Some(t),
                    looked_in: None,
                })
                .map_err(|e| format!("cannot read the admin token file {}: {e}", f.display()));
        }
        let dir = match data_dir.map(str::trim) {
            Some(":memory:") => {
                return Ok(ClientToken::default());
            }
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => crate::config::default_data_dir(),
        };
        Ok(ClientToken {
            value: super::token::read(&dir),
            looked_in: Some(super::token::file_in(&dir)),
        })
    }

    pub fn as_deref(&self) -> Option<&str> {
        self.value.as_deref()
    }

    /// A 401 when no token was found gets the way out added.
    pub fn explain(&self, e: ClientError) -> ClientError {
        match e {
            ClientError::Status(401, body) if self.value.is_none() => {
                let looked = self
                    .looked_in
                    .as_ref()
                    .map(|p| format!("; looked for {}", p.display()))
                    .unwrap_or_default();
                ClientError::Status(
                    401,
                    format!(
                        "{body} (no admin token: start sluice, or pass --admin-token-file{looked})"
                    ),
                )
            }
            other => other,
        }
    }
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

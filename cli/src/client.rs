//! A small HTTP/1.1 client for arcad's Unix socket (hyper). One connection per request, each
//! checked to be served by a trusted uid before anything is sent (`socket.rs`); errors from the
//! daemon come back as `ErrorBody` and become one-line messages.

use anyhow::{anyhow, bail, Context, Result};
use arca_core::api::ErrorBody;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

use crate::socket::{Socket, TrustedPeers};

pub type ReqBody = BoxBody<Bytes, std::io::Error>;

pub struct Client {
    socket: Socket,
    peers: TrustedPeers,
}

/// Percent-encodes a query value (everything but unreserved characters).
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn empty() -> ReqBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

impl Client {
    pub fn new(socket: Socket, peers: TrustedPeers) -> Self {
        Self { socket, peers }
    }

    /// Sends one request and returns the response if its status is a success.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: ReqBody,
        content_type: &str,
    ) -> Result<Response<Incoming>> {
        let sock = &self.socket.path;
        let stream = tokio::net::UnixStream::connect(sock)
            .await
            .with_context(|| {
                format!(
                    "cannot reach arcad at {} ({}; is arcad running? name another socket with --socket or ARCA_SOCKET)",
                    sock.display(),
                    self.socket.why
                )
            })?;
        let peer = stream
            .peer_cred()
            .with_context(|| format!("reading the credentials of {}", sock.display()))?;
        self.peers.check(sock, peer.uid())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("talking to arcad")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "arcad")
            .header("content-type", content_type)
            .body(body)?;
        let resp = sender
            .send_request(req)
            .await
            .context("arcad closed the connection")?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(e) => Err(anyhow!(e.message)),
            Err(_) => bail!(
                "arcad answered {status}: {}",
                String::from_utf8_lossy(&bytes).trim()
            ),
        }
    }

    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl serde::Serialize>,
    ) -> Result<T> {
        let body = match body {
            Some(b) => Full::new(Bytes::from(serde_json::to_vec(b)?))
                .map_err(|never| match never {})
                .boxed(),
            None => empty(),
        };
        let resp = self.send(method, path, body, "application/json").await?;
        let bytes = resp
            .into_body()
            .collect()
            .await
            .context("reading arcad's answer")?
            .to_bytes();
        serde_json::from_slice(&bytes)
            .with_context(|| format!("arcad's answer to {path} does not parse"))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.json(Method::GET, path, None::<&()>).await
    }
}

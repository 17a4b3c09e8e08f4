//! logic's admin API (served on `logic.admin_listen`, guarded by `logic.admin_token`): app
//! creation for operators. The key pair is made here and only the public key is sent, so the
//! app's private key never leaves the caller.

use bytes::Bytes;
use gim_common::token::AppKey;
use http_body_util::{BodyExt, Full};
use std::time::Duration;

/// The whole call (connect, request, answer) gives up after this.
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("invalid admin URL {0:?}: expected http://host:port (logic's admin listener)")]
    Url(String),
    #[error("the admin token is not a valid HTTP header value")]
    Token,
    #[error("cannot reach {url}: {reason}")]
    Connect { url: String, reason: String },
    /// logic answered with an error status; `message` is its `error` text.
    #[error("logic refused the call (HTTP {status}): {message}")]
    Refused { status: u16, message: String },
    #[error("unexpected answer from logic: {0}")]
    Protocol(String),
}

/// Creates an app named `name` through the admin API at `admin_url` (e.g.
/// `http://127.0.0.1:9100`): its id and its private key, which gim does not have.
pub async fn create_app(
    admin_url: &str,
    token: &str,
    name: &str,
) -> Result<(i64, AppKey), AdminError> {
    let key = AppKey::generate();
    let body = serde_json::json!({ "name": name, "public_key": key.public_b64() }).to_string();
    let (status, answer) =
        match tokio::time::timeout(TIMEOUT, post(admin_url, "apps", token, body)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(AdminError::Connect {
                    url: admin_url.to_string(),
                    reason: format!("no answer within {TIMEOUT:?}"),
                });
            }
        };
    let json: Option<serde_json::Value> = serde_json::from_slice(&answer).ok();
    if status != http::StatusCode::CREATED {
        let message = json
            .as_ref()
            .and_then(|v| v["error"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&answer).trim().to_string());
        return Err(AdminError::Refused {
            status: status.as_u16(),
            message,
        });
    }
    let app = json
        .as_ref()
        .and_then(|v| v["app_id"].as_i64())
        .ok_or_else(|| {
            AdminError::Protocol(format!(
                "no app_id in {:?}",
                String::from_utf8_lossy(&answer)
            ))
        })?;
    Ok((app, key))
}

/// POSTs JSON to `<base>/<path>` over one HTTP/1.1 connection: the status and the body.
async fn post(
    base: &str,
    path: &str,
    token: &str,
    body: String,
) -> Result<(http::StatusCode, Bytes), AdminError> {
    let bad_url = || AdminError::Url(base.to_string());
    let uri: http::Uri = base.parse().map_err(|_| bad_url())?;
    if uri.scheme_str() != Some("http") {
        return Err(bad_url());
    }
    let authority = uri.authority().ok_or_else(bad_url)?.clone();
    // `[::1]` as written in a URL; the socket wants the bare address.
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(80);
    let target = format!("{}/{path}", uri.path().trim_end_matches('/'));
    let connect = |e: &dyn std::fmt::Display| AdminError::Connect {
        url: base.to_string(),
        reason: e.to_string(),
    };
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| connect(&e))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| connect(&e))?;
    tokio::spawn(async move {
        // Ends when the answer is read and `sender` dropped; its error is the request's too.
        let _ = conn.await;
    });
    let req = http::Request::post(target)
        .header(http::header::HOST, authority.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(
            http::header::AUTHORIZATION,
            http::HeaderValue::try_from(format!("Bearer {token}"))
                .map_err(|_| AdminError::Token)?,
        )
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| AdminError::Protocol(e.to_string()))?;
    let resp = sender.send_request(req).await.map_err(|e| connect(&e))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| connect(&e))?
        .to_bytes();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_urls_it_cannot_use_before_connecting() {
        for url in ["", "127.0.0.1:9100", "https://127.0.0.1:9100", "ftp://h/"] {
            let e = create_app(url, "t", "n").await.unwrap_err();
            assert!(matches!(e, AdminError::Url(_)), "{url}: {e}");
        }
        let e = create_app("http://127.0.0.1:1", "bad\ntoken", "n")
            .await
            .unwrap_err();
        // The URL is fine; the connection (or the header) fails, never a panic.
        assert!(
            matches!(e, AdminError::Connect { .. } | AdminError::Token),
            "{e}"
        );
    }
}

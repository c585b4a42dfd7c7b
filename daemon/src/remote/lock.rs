//! S3 Object Lock: the objects arca must keep (log entries, audit segments) written with a
//! retention, so that not even the store's administrator can delete or overwrite those
//! versions before it ends.
//!
//! object_store 0.13 cannot send the per-object retention headers (`x-amz-object-lock-mode`,
//! `x-amz-object-lock-retain-until-date`), and a bucket-wide default retention would lock the
//! packs too, which fleet GC must delete. So these few puts are signed here with rusty-s3 (its
//! actions sign the extra headers given to them: an S3 store refuses unsigned `x-amz-*`
//! headers) and sent with reqwest, the HTTP client object_store is built on. A put with
//! retention also carries `Content-MD5`, which AWS requires for it, and `If-None-Match: *`, so
//! it stays create-only.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use md5::Digest as _;
use rusty_s3::S3Action as _;

use super::{ETag, RemoteError};

/// How long a presigned request stays valid: far longer than a request may take (its timeout
/// bounds it), short enough that a leaked URL is soon useless.
const SIGNED_FOR: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// No one, the store's root user included, can delete the version or shorten its retention.
    Compliance,
    /// Users with the store's `s3:BypassGovernanceRetention` permission still can.
    Governance,
}

impl LockMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Compliance => "COMPLIANCE",
            LockMode::Governance => "GOVERNANCE",
        }
    }
}

/// The retention the configuration asks for (`object_lock`, `object_lock_days`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub mode: LockMode,
    pub days: u32,
}

/// Whether retention is in force on the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockState {
    /// Not checked yet (or the check could not reach the store): a retained put checks first.
    Unknown,
    /// Log entries and audit segments are written with this retention.
    InForce(Retention),
    /// They are written without one, for this reason.
    Off(String),
}

/// Signs and sends the puts with retention, and the check of the bucket's configuration.
pub(super) struct Locker {
    client: reqwest::Client,
    /// One per endpoint, in the configuration's order (as `Remote`'s stores).
    buckets: Vec<rusty_s3::Bucket>,
    credentials: Option<rusty_s3::Credentials>,
}

/// Why a request failed: transport (another endpoint may do better) or an answer.
fn answer_error(status: reqwest::StatusCode, body: &str, what: &str) -> RemoteError {
    let text = format!(
        "{what}: {status}: {}",
        body.chars().take(300).collect::<String>()
    );
    if status.is_server_error() {
        RemoteError::Unreachable(text)
    } else {
        RemoteError::Other(text)
    }
}

impl Locker {
    pub(super) fn new(
        endpoints: &[String],
        bucket: &str,
        region: &str,
        credentials: Option<(String, String)>,
        ca_pem: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Self, RemoteError> {
        let mut b = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(3)));
        if let Some(pem) = ca_pem {
            let c = reqwest::Certificate::from_pem(pem)
                .map_err(|e| RemoteError::Config(format!("CA file: {e}")))?;
            b = b.add_root_certificate(c);
        }
        let client = b
            .build()
            .map_err(|e| RemoteError::Config(format!("HTTP client: {e}")))?;
        let mut buckets = Vec::new();
        for ep in endpoints {
            let url: url::Url = ep
                .parse()
                .map_err(|e| RemoteError::Config(format!("endpoint {ep:?}: {e}")))?;
            buckets.push(
                rusty_s3::Bucket::new(
                    url,
                    rusty_s3::UrlStyle::Path,
                    bucket.to_owned(),
                    region.to_owned(),
                )
                .map_err(|e| RemoteError::Config(format!("endpoint {ep:?}: {e}")))?,
            );
        }
        Ok(Self {
            client,
            buckets,
            credentials: credentials.map(|(id, secret)| rusty_s3::Credentials::new(id, secret)),
        })
    }

    /// Whether the bucket has Object Lock enabled (`GET ?object-lock`), through endpoint `at`:
    /// `Ok(Err(why))` when it has not.
    pub(super) async fn configured(&self, at: usize) -> Result<Result<(), String>, RemoteError> {
        let bucket = &self.buckets[at];
        let base = bucket.base_url().clone();
        let url = match &self.credentials {
            Some(c) => rusty_s3::signing::sign(
                &jiff::Timestamp::now(),
                rusty_s3::Method::Get,
                base,
                c.key(),
                c.secret(),
                c.token(),
                bucket.region(),
                SIGNED_FOR.as_secs(),
                std::iter::once(("object-lock", "")),
                std::iter::empty(),
            ),
            None => {
                let mut u = base;
                u.set_query(Some("object-lock"));
                u
            }
        };
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| RemoteError::Unreachable(format!("checking Object Lock: {e}")))?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        Ok(match status.as_u16() {
            200 if body.contains("<ObjectLockEnabled>Enabled</ObjectLockEnabled>") => Ok(()),
            200 => Err("the bucket's Object Lock configuration does not enable it".into()),
            404 => Err(
                "the bucket has no Object Lock configuration (it was not created with Object Lock enabled)".into(),
            ),
            400 | 405 | 501 => Err(format!(
                "the store does not implement Object Lock (it answered {status})"
            )),
            403 => Err(format!(
                "the store's credentials may not read the bucket's Object Lock configuration ({status})"
            )),
            _ => return Err(answer_error(status, &body, "checking Object Lock")),
        })
    }

    /// Creates `full_key` (the prefix included) with `bytes`, retained as `r` says, only if no
    /// object has that key, through endpoint `at`.
    pub(super) async fn create(
        &self,
        at: usize,
        full_key: &str,
        bytes: Bytes,
        r: Retention,
    ) -> Result<ETag, RemoteError> {
        let until = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_hours(24 * i64::from(r.days)))
            .map_err(|e| RemoteError::Config(format!("retention of {} days: {e}", r.days)))?
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&bytes));
        let headers = [
            ("content-md5", md5.as_str()),
            ("if-none-match", "*"),
            ("x-amz-object-lock-mode", r.mode.as_str()),
            ("x-amz-object-lock-retain-until-date", until.as_str()),
        ];
        let mut action = self.buckets[at].put_object(self.credentials.as_ref(), full_key);
        for (k, v) in headers {
            action.headers_mut().insert(k, v);
        }
        let url = action.sign(SIGNED_FOR);
        let mut req = self.client.put(url).body(bytes);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| RemoteError::Unreachable(format!("{full_key}: {e}")))?;
        let status = resp.status();
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match status.as_u16() {
            200..=299 => Ok(ETag(etag.unwrap_or_default())),
            // Taken (412), or a concurrent conditional write to the same key (409).
            409 | 412 => Err(RemoteError::Exists(full_key.to_owned())),
            _ => {
                let body = resp.text().await.unwrap_or_default();
                Err(answer_error(status, &body, full_key))
            }
        }
    }
}

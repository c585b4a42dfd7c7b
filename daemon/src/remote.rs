//! The shared object store of a fleet, reached through the S3 API: **the only module that
//! imports `object_store`**, as `store/kv.rs` is the only one that imports `rocksdb`.
//!
//! What the fleet needs from a store is small: create-only puts (`If-None-Match: *`), puts that
//! replace only a known version (`If-Match`), whole and ranged gets, listings after a key, and
//! deletes. Every call is bounded in time (retries for seconds, not minutes) because the mount
//! waits on some of them, and every call runs on this module's own small runtime so that the
//! registry's blocking threads and the mount's threads can call it alike.
//!
//! Endpoints: a fleet may name several S3 gateways of one store (SeaweedFS filers, RGW
//! instances). Calls go to the one that last answered; a transport failure or a 5xx moves to the
//! next, so a gateway that dies costs one failed attempt, not an outage. The timeout bounds a
//! whole call, whatever the number of endpoints: a gateway that hangs (or a cut link) costs one
//! call its timeout, and the next call starts at the next gateway.

pub mod lock;

use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;

use object_store::aws::AmazonS3Builder;
use object_store::memory::InMemory;
use object_store::path::Path as ObjPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig, UpdateVersion,
};

/// How to reach the store (the `[fleet]` section of the config, minus what is the fleet's).
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// S3 endpoints of one store, tried in order (`http://` or `https://`).
    pub endpoints: Vec<String>,
    pub bucket: String,
    pub region: String,
    /// Every key arca writes starts with this (`arca/` by default), so a bucket can be shared.
    pub prefix: String,
    /// A file of two lines: access key id, then secret key. `None`: unsigned requests, which
    /// only a store that allows anonymous access takes.
    pub credentials_file: Option<PathBuf>,
    /// PEM file of the CA that signed the endpoints' certificates, added to the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Bound on one call: its request, its retries and the other endpoints it tries.
    pub timeout: Duration,
    /// Object Lock retention for log entries and audit segments, where the bucket has Object
    /// Lock enabled (`None`: never; `object_lock = "off"`).
    pub retention: Option<lock::Retention>,
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("object {0} not found")]
    NotFound(String),
    /// A create-only put found the key taken.
    #[error("object {0} already exists")]
    Exists(String),
    /// An `If-Match` put or get found another version.
    #[error("object {0} changed")]
    Changed(String),
    /// No endpoint answered (or each answered with a server error).
    #[error("object store unreachable: {0}")]
    Unreachable(String),
    #[error("object store: {0}")]
    Other(String),
    #[error("object store configuration: {0}")]
    Config(String),
    /// The object is larger than the caller allows (`get_capped`).
    #[error("{0}")]
    TooLarge(String),
}

impl RemoteError {
    fn from_os(key: &str, e: object_store::Error) -> Self {
        use object_store::Error as E;
        match e {
            E::NotFound { .. } => Self::NotFound(key.to_owned()),
            E::AlreadyExists { .. } => Self::Exists(key.to_owned()),
            E::Precondition { .. } => Self::Changed(key.to_owned()),
            E::NotModified { .. } => Self::Changed(key.to_owned()),
            other => {
                // The causes too: "error sending request" alone hides a refused certificate
                // or a refused connection.
                let mut text = other.to_string();
                let mut cause = std::error::Error::source(&other);
                while let Some(c) = cause {
                    let t = c.to_string();
                    if !text.contains(&t) {
                        text.push_str(": ");
                        text.push_str(&t);
                    }
                    cause = c.source();
                }
                // `object_store` folds transport failures and 5xx answers that outlived their
                // retries into `Generic`; they are what moves a call to the next endpoint. So
                // does it fold the store's 4xx answers (416 for a range past the end of an
                // object someone truncated), which are answers, not a store out of reach:
                // trying every endpoint and then calling the store down for everyone would let
                // one damaged object make the host refuse every change. Its error type is not
                // public, so the status is read from its message.
                // Only answers about the object itself count so: a gateway answering 400,
                // 401 or 403 to everything (stale credentials, a misconfigured or hostile
                // gateway) is a gateway to move away from, not a verdict on the object.
                match client_error_status(&text) {
                    Some(404 | 410 | 416) => Self::Other(text),
                    _ => Self::Unreachable(text),
                }
            }
        }
    }

    /// Whether another endpoint might do better.
    fn try_next(&self) -> bool {
        matches!(self, Self::Unreachable(_))
    }
}

/// The 4xx status in an `object_store` error message ("… non-2xx status code: 416 …").
fn client_error_status(text: &str) -> Option<u16> {
    let at = text.find("status code: ")? + "status code: ".len();
    let code: u16 = text.get(at..at + 3)?.parse().ok()?;
    (400..500).contains(&code).then_some(code)
}

/// Identity of one stored version of an object (the S3 ETag), for `If-Match`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ETag(pub String);

/// A listed object.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The key below the prefix.
    pub key: String,
    pub size: u64,
    /// When the store says the object was last written (ms since the epoch). The store can
    /// lie about it: only fleet GC's orphan search uses it, and never for a pack the log names.
    pub modified_ms: u64,
}

pub struct Remote {
    stores: Vec<Arc<dyn ObjectStore>>,
    /// The same endpoints for bulk transfers (pack uploads, streamed pack reads): the client's
    /// whole-request timeout would cut off a 32 MiB transfer on a slow link, so these have a
    /// long one; a streamed read's stalls are bounded piece by piece instead, and an upload by
    /// `BULK_TIMEOUT`.
    bulk: Vec<Arc<dyn ObjectStore>>,
    names: Vec<String>,
    /// Index of the endpoint that last answered.
    current: AtomicUsize,
    prefix: String,
    rt: tokio::runtime::Runtime,
    timeout: Duration,
    /// How the stores were built (none for the in-memory store).
    config: Option<RemoteConfig>,
    /// Until when (ms since the epoch) reads behind the mount fail at once: such a read just
    /// failed on every endpoint.
    down_until_ms: AtomicU64,
    /// Calls that failed on every endpoint, and bytes fetched, for status and metrics.
    pub errors: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub requests: AtomicU64,
    /// The puts with retention and the check of the bucket's Object Lock configuration (none
    /// for the in-memory store).
    locker: Option<lock::Locker>,
    lock_state: std::sync::Mutex<lock::LockState>,
    /// Idle clients for streamed pack reads, each on a runtime of its own (`StreamIo`).
    stream_io: std::sync::Mutex<Vec<StreamIo>>,
}

/// A streamed pack read's own runtime (one thread: the caller's) and clients. On the shared
/// runtime, the connection's task ran on a worker thread that woke the reader for every piece
/// of the body (measured: ~80k context switches per GiB fetched, 20% of a cold fleet read's
/// samples in scheduling); on this one, the thread that waits for the bytes reads the socket
/// itself. Kept in a pool between reads, so connections are reused.
struct StreamIo {
    rt: tokio::runtime::Runtime,
    bulk: Vec<Arc<dyn ObjectStore>>,
    /// Since when it is in the pool.
    idle_since: Instant,
}

impl StreamIo {
    /// Without waiting for its threads (a name lookup stuck on a dead resolver): the caller
    /// is a read with a bound to keep.
    fn discard(self) {
        self.rt.shutdown_background();
    }
}

/// Idle `StreamIo`s kept: one per fetch that may run at once, and a few for bulk reads.
const STREAM_IO_KEPT: usize = 8;

/// How long a `StreamIo` may wait in the pool. Nothing runs its connections' tasks while it
/// waits, so a connection the store closed meanwhile is only noticed at the next request,
/// which then costs a retry.
const STREAM_IO_IDLE: Duration = Duration::from_secs(20);

/// A `StreamIo` lent to one read; back to the pool when dropped, if the read went well (a
/// failed one may leave a connection half read).
struct StreamLease<'a> {
    remote: &'a Remote,
    io: Option<StreamIo>,
    ok: bool,
}

impl Drop for StreamLease<'_> {
    fn drop(&mut self) {
        let Some(mut io) = self.io.take() else { return };
        if self.ok {
            let mut pool = self
                .remote
                .stream_io
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if pool.len() < STREAM_IO_KEPT {
                io.idle_since = Instant::now();
                pool.push(io);
                return;
            }
        }
        io.discard();
    }
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("endpoints", &self.names)
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, RemoteError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("arca-remote")
        .enable_all()
        .build()
        .map_err(|e| RemoteError::Config(format!("runtime: {e}")))
}

fn display(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// The access key id and secret key from the credentials file, if one is configured.
fn read_credentials(cfg: &RemoteConfig) -> Result<Option<(String, String)>, RemoteError> {
    let Some(p) = &cfg.credentials_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(p)
        .map_err(|e| RemoteError::Config(format!("credentials file {}: {e}", p.display())))?;
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    match (lines.next(), lines.next()) {
        (Some(id), Some(secret)) => Ok(Some((id.to_owned(), secret.to_owned()))),
        _ => Err(RemoteError::Config(format!(
            "credentials file {}: expected two lines, the access key id and the secret key",
            p.display()
        ))),
    }
}

/// The PEM bytes of the CA file, if one is configured.
fn read_ca(cfg: &RemoteConfig) -> Result<Option<Vec<u8>>, RemoteError> {
    match &cfg.ca_file {
        Some(p) => std::fs::read(p)
            .map(Some)
            .map_err(|e| RemoteError::Config(format!("CA file {}: {e}", p.display()))),
        None => Ok(None),
    }
}

/// One client per endpoint, each bounded by `timeout` per request and for its retries.
fn build_stores(
    cfg: &RemoteConfig,
    timeout: Duration,
) -> Result<Vec<Arc<dyn ObjectStore>>, RemoteError> {
    let creds = read_credentials(cfg)?;
    let ca =
        match read_ca(cfg)? {
            Some(pem) => Some(object_store::Certificate::from_pem(&pem).map_err(|e| {
                RemoteError::Config(format!("CA file {}: {e}", display(&cfg.ca_file)))
            })?),
            None => None,
        };
    let mut stores: Vec<Arc<dyn ObjectStore>> = Vec::new();
    for ep in &cfg.endpoints {
        let http = ep.starts_with("http://");
        if !http && !ep.starts_with("https://") {
            return Err(RemoteError::Config(format!(
                "endpoint {ep:?}: must start with http:// or https://"
            )));
        }
        let mut opts = ClientOptions::new()
            .with_allow_http(http)
            .with_timeout(timeout)
            .with_connect_timeout(timeout.min(Duration::from_secs(3)));
        if let Some(c) = &ca {
            opts = opts.with_root_certificate(c.clone());
        }
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(500),
                base: 2.0,
            },
            max_retries: 2,
            retry_timeout: timeout,
        };
        let mut b = AmazonS3Builder::new()
            .with_endpoint(ep)
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region)
            .with_virtual_hosted_style_request(false)
            .with_client_options(opts)
            .with_retry(retry)
            .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch);
        match &creds {
            Some((id, secret)) => {
                b = b.with_access_key_id(id).with_secret_access_key(secret);
            }
            None => b = b.with_skip_signature(true),
        }
        stores
            .push(Arc::new(b.build().map_err(|e| {
                RemoteError::Config(format!("endpoint {ep}: {e}"))
            })?));
    }
    Ok(stores)
}

impl Remote {
    /// Connects to an S3 store (no request is made yet).
    pub fn s3(cfg: &RemoteConfig) -> Result<Self, RemoteError> {
        if cfg.endpoints.is_empty() {
            return Err(RemoteError::Config("no endpoint".into()));
        }
        let stores = build_stores(cfg, cfg.timeout)?;
        let bulk = build_stores(cfg, BULK_TIMEOUT)?;
        let locker = lock::Locker::new(
            &cfg.endpoints,
            &cfg.bucket,
            &cfg.region,
            read_credentials(cfg)?,
            read_ca(cfg)?.as_deref(),
            cfg.timeout,
        )?;
        Ok(Self {
            locker: Some(locker),
            lock_state: std::sync::Mutex::new(match cfg.retention {
                Some(_) => lock::LockState::Unknown,
                None => lock::LockState::Off(
                    "turned off in the configuration (object_lock = \"off\")".into(),
                ),
            }),
            stores,
            bulk,
            names: cfg.endpoints.clone(),
            current: AtomicUsize::new(0),
            prefix: normalise_prefix(&cfg.prefix),
            rt: runtime()?,
            timeout: cfg.timeout,
            config: Some(cfg.clone()),
            down_until_ms: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            stream_io: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// An in-memory store, for unit tests of the modules above this one.
    pub fn memory() -> Self {
        let mem: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        Self {
            locker: None,
            lock_state: std::sync::Mutex::new(lock::LockState::Off(
                "the in-memory store has no Object Lock".into(),
            )),
            stores: vec![mem.clone()],
            bulk: vec![mem],
            names: vec!["memory".into()],
            current: AtomicUsize::new(0),
            prefix: "arca/".into(),
            rt: runtime().expect("a runtime for the in-memory store"),
            timeout: Duration::from_secs(5),
            config: None,
            down_until_ms: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            stream_io: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The bound on one small request (every endpoint tried).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The endpoints, in order.
    pub fn endpoints(&self) -> &[String] {
        &self.names
    }

    /// The endpoint calls go to now.
    pub fn current_endpoint(&self) -> &str {
        &self.names[self.current.load(Ordering::Relaxed) % self.names.len()]
    }

    fn path(&self, key: &str) -> ObjPath {
        ObjPath::from(format!("{}{key}", self.prefix))
    }

    /// Runs `op` against the current endpoint, moving on to the next ones while it fails with
    /// an error another endpoint might not have. The whole call is bounded by the timeout.
    fn call<T, F, Fut>(&self, key: &str, op: F) -> Result<T, RemoteError>
    where
        F: Fn(Arc<dyn ObjectStore>, ObjPath) -> Fut,
        Fut: std::future::Future<Output = Result<T, object_store::Error>>,
    {
        self.call_via(&self.rt, &self.stores, false, self.timeout, key, op)
    }

    /// `call`, with these clients (one per endpoint) on this runtime, the whole call (every
    /// endpoint tried) bounded by `bound`. With `fail_fast`, a call made within `DOWN_FOR_MS`
    /// of one that failed on every endpoint fails at once.
    ///
    /// Only reads behind the mount fail fast: they are the callers that must answer within a
    /// bound, and many of them wait on one outage at once. A state change, a log poll or an
    /// audit shipment always asks: refusing a user's push because another caller's request
    /// timed out a moment ago (a loaded gateway, not a dead store) would refuse a change the
    /// store would have taken, and a shipment at shutdown would leave its events behind.
    ///
    /// The bound is on the call, not on each endpoint: an endpoint that refuses the connection
    /// costs nothing and the next is tried at once, but one that hangs (a cut link, a gateway
    /// that accepts and never answers) takes the whole bound, and the call fails then instead
    /// of waiting as long again on each further endpoint. (Bounding each endpoint made an
    /// uncached read behind the mount wait one timeout per configured endpoint: 10 s with the
    /// default 5 s and two gateways, past the mount's 10 s promise.) The next call starts at
    /// the endpoint after the one that hung, so a hung gateway costs one call, not every call.
    fn call_via<T, F, Fut>(
        &self,
        rt: &tokio::runtime::Runtime,
        stores: &[Arc<dyn ObjectStore>],
        fail_fast: bool,
        bound: Duration,
        key: &str,
        op: F,
    ) -> Result<T, RemoteError>
    where
        F: Fn(Arc<dyn ObjectStore>, ObjPath) -> Fut,
        Fut: std::future::Future<Output = Result<T, object_store::Error>>,
    {
        let now = now_ms();
        let until = self.down_until_ms.load(Ordering::Relaxed);
        if fail_fast && now < until {
            // Every endpoint failed a moment ago: fail at once instead of making each waiting
            // reader wait out the timeouts again; an uncached read behind the mount then fails
            // within one timeout, not one per chunk.
            return Err(RemoteError::Unreachable(format!(
                "no endpoint answered {} ms ago",
                DOWN_FOR_MS - (until - now)
            )));
        }
        let path = self.path(key);
        let n = self.stores.len();
        let start = self.current.load(Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + bound;
        let mut last = None;
        let mut tried = 0;
        for i in 0..n {
            let at = (start + i) % n;
            if i > 0 && tokio::time::Instant::now() >= deadline {
                break;
            }
            tried += 1;
            let store = stores[at].clone();
            self.requests.fetch_add(1, Ordering::Relaxed);
            let fut = op(store, path.clone());
            // The client's own timeouts bound each request; this bounds the retries as well,
            // and the endpoints after this one.
            let r = rt.block_on(async { tokio::time::timeout_at(deadline, fut).await });
            let r = match r {
                Ok(r) => r.map_err(|e| RemoteError::from_os(key, e)),
                Err(_) => Err(RemoteError::Unreachable(format!(
                    "{} did not answer within {:?}",
                    self.names[at], bound
                ))),
            };
            match r {
                Err(e) if e.try_next() => {
                    // Debug only: the callers report a failure once, not once per attempt.
                    tracing::debug!(endpoint = %self.names[at], "object store: {e}");
                    last = Some(e);
                }
                other => {
                    if at != start {
                        self.current.store(at, Ordering::Relaxed);
                        tracing::info!(endpoint = %self.names[at], "object store: now using this endpoint");
                    }
                    return other;
                }
            }
        }
        self.errors.fetch_add(1, Ordering::Relaxed);
        if tried < n {
            // The bound ran out before every endpoint was tried: the next call starts at the
            // first one not tried, which may answer.
            self.current.store((start + tried) % n, Ordering::Relaxed);
        }
        // Also when not every endpoint was tried: a call that hung for its whole bound is as
        // good a sign as any that the next one would too, and the kernel asks again at once
        // for a page whose readahead failed (a second wait of the whole bound for one read).
        // Only a read sets it: a write refused by a store coming back (503 while its volume
        // servers register) says nothing of reads, and made the next mount read fail at once.
        if fail_fast {
            self.down_until_ms
                .store(now_ms() + DOWN_FOR_MS, Ordering::Relaxed);
        }
        Err(last.unwrap_or_else(|| RemoteError::Unreachable("no endpoint".into())))
    }

    /// Creates `key` holding `bytes`, only if no object has that key (`If-None-Match: *`).
    pub fn create(&self, key: &str, bytes: Bytes) -> Result<ETag, RemoteError> {
        self.put(key, bytes, PutMode::Create)
    }

    /// Whether log entries and audit segments are written with Object Lock retention.
    pub fn lock_state(&self) -> lock::LockState {
        self.lock_state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Checks whether the bucket has Object Lock enabled (once: at start, or at the first
    /// retained put if the store could not be reached then), and so whether the configured
    /// retention is in force. A store out of reach leaves the question open (`Unknown`).
    pub fn check_object_lock(&self) -> lock::LockState {
        let mut st = self.lock_state.lock().unwrap_or_else(|p| p.into_inner());
        if *st != lock::LockState::Unknown {
            return st.clone();
        }
        let (Some(locker), Some(r)) =
            (&self.locker, self.config.as_ref().and_then(|c| c.retention))
        else {
            return st.clone();
        };
        let start = self.current.load(Ordering::Relaxed);
        for i in 0..self.names.len() {
            let at = (start + i) % self.names.len();
            let got = self.rt.block_on(async {
                tokio::time::timeout(self.timeout, locker.configured(at)).await
            });
            match got {
                Ok(Ok(Ok(()))) => {
                    *st = lock::LockState::InForce(r);
                    break;
                }
                Ok(Ok(Err(why))) => {
                    *st = lock::LockState::Off(why);
                    break;
                }
                Ok(Err(e)) if !e.try_next() => {
                    *st = lock::LockState::Off(format!("the check failed: {e}"));
                    break;
                }
                Ok(Err(e)) => tracing::debug!(endpoint = %self.names[at], "object store: {e}"),
                Err(_) => {
                    tracing::debug!(endpoint = %self.names[at], "object store: checking Object Lock timed out")
                }
            }
        }
        st.clone()
    }

    /// Creates `key` only if no object has that key, as `create` does, with the configured
    /// Object Lock retention where it is in force: for the objects that must outlive anyone's
    /// wish to remove them (log entries, audit segments). A store whose Object Lock could not
    /// be checked yet is checked first; out of reach, nothing is written.
    pub fn create_retained(&self, key: &str, bytes: Bytes) -> Result<ETag, RemoteError> {
        let r = match self.check_object_lock() {
            lock::LockState::InForce(r) => r,
            lock::LockState::Off(_) => return self.create(key, bytes),
            lock::LockState::Unknown => {
                return Err(RemoteError::Unreachable(
                    "could not check the bucket's Object Lock configuration".into(),
                ))
            }
        };
        let Some(locker) = &self.locker else {
            return self.create(key, bytes);
        };
        let full = format!("{}{key}", self.prefix);
        let n = self.names.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..n {
            let at = (start + i) % n;
            self.requests.fetch_add(1, Ordering::Relaxed);
            let got = self.rt.block_on(async {
                tokio::time::timeout(self.timeout, locker.create(at, &full, bytes.clone(), r)).await
            });
            let res = got.unwrap_or_else(|_| {
                Err(RemoteError::Unreachable(format!(
                    "{} did not answer within {:?}",
                    self.names[at], self.timeout
                )))
            });
            match res {
                Err(e) if e.try_next() => last = Some(e),
                other => {
                    if other.is_ok() {
                        self.bytes_out
                            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    }
                    if at != start {
                        self.current.store(at, Ordering::Relaxed);
                    }
                    return other;
                }
            }
        }
        self.errors.fetch_add(1, Ordering::Relaxed);
        Err(last.unwrap_or_else(|| RemoteError::Unreachable("no endpoint".into())))
    }

    /// Puts `key`, whatever is there (for objects one host alone writes: its heartbeat).
    pub fn overwrite(&self, key: &str, bytes: Bytes) -> Result<ETag, RemoteError> {
        self.put(key, bytes, PutMode::Overwrite)
    }

    /// Replaces `key` only if it still is the version `etag` names (`If-Match`).
    pub fn replace(&self, key: &str, bytes: Bytes, etag: &ETag) -> Result<ETag, RemoteError> {
        self.put(
            key,
            bytes,
            PutMode::Update(UpdateVersion {
                e_tag: Some(etag.0.clone()),
                version: None,
            }),
        )
    }

    fn put(&self, key: &str, bytes: Bytes, mode: PutMode) -> Result<ETag, RemoteError> {
        let len = bytes.len() as u64;
        // A pack takes as long as the link needs; a small object must answer at once.
        let bulk = len > BULK_OVER;
        let (stores, bound) = if bulk {
            (&self.bulk, BULK_TIMEOUT)
        } else {
            (&self.stores, self.timeout)
        };
        let r = self.call_via(&self.rt, stores, false, bound, key, |s, p| {
            let payload = PutPayload::from_bytes(bytes.clone());
            let opts = PutOptions::from(mode.clone());
            async move { s.put_opts(&p, payload, opts).await }
        });
        // A create whose first attempt landed but whose answer was lost is retried and then
        // refused as existing: that is reported as `Exists`, and the caller reads the object
        // back to tell its own write from another's.
        let r = r?;
        self.bytes_out.fetch_add(len, Ordering::Relaxed);
        Ok(ETag(r.e_tag.unwrap_or_default()))
    }

    /// The whole object and its ETag.
    pub fn get(&self, key: &str) -> Result<(Bytes, ETag), RemoteError> {
        let (bytes, etag) = self.call(key, |s, p| async move {
            let r = s.get(&p).await?;
            let etag = r.meta.e_tag.clone().unwrap_or_default();
            Ok((r.bytes().await?, etag))
        })?;
        self.bytes_in
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok((bytes, ETag(etag)))
    }

    /// The whole object, refused (`Other`) if it is larger than `max` bytes: read as a
    /// stream, so an oversized object planted in the bucket costs at most `max` of memory.
    pub fn get_capped(&self, key: &str, max: u64) -> Result<Bytes, RemoteError> {
        let started = self.call(key, |s, p| async move {
            s.get_opts(&p, Default::default()).await
        })?;
        if started.meta.size > max {
            return Err(RemoteError::TooLarge(format!(
                "object {key} holds {} bytes, more than the {max} it may",
                started.meta.size
            )));
        }
        let mut stream = started.into_stream();
        let timeout = self.timeout;
        let out = self.rt.block_on(async {
            let mut out = Vec::new();
            loop {
                match tokio::time::timeout(timeout, stream.next()).await {
                    Ok(Some(Ok(b))) => {
                        if (out.len() + b.len()) as u64 > max {
                            return Err(RemoteError::TooLarge(format!(
                                "object {key} is larger than the {max} bytes it may hold"
                            )));
                        }
                        out.extend_from_slice(&b);
                    }
                    Ok(Some(Err(e))) => return Err(RemoteError::from_os(key, e)),
                    Ok(None) => return Ok(out),
                    Err(_) => {
                        return Err(RemoteError::Unreachable(format!(
                            "object {key}: no bytes for {timeout:?} in the middle of a read"
                        )))
                    }
                }
            }
        })?;
        self.bytes_in.fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok(Bytes::from(out))
    }

    /// Bytes `range` of the object (one ranged GET).
    pub fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, RemoteError> {
        let want = range.end.saturating_sub(range.start);
        let bytes = self.call(key, |s, p| {
            let range = range.clone();
            async move { s.get_range(&p, range).await }
        })?;
        if bytes.len() as u64 != want {
            return Err(RemoteError::Other(format!(
                "object {key}: asked for {want} bytes, got {}",
                bytes.len()
            )));
        }
        self.bytes_in
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes)
    }

    /// Bytes `range` of the object, handed to `each` piece by piece as they arrive (one ranged
    /// GET), so the caller can use the first bytes before the last arrive. The request may go
    /// to another endpoint until its answer starts; each piece must then come within the
    /// timeout. Returns the bytes received.
    pub fn get_range_each(
        &self,
        key: &str,
        range: Range<u64>,
        mut each: impl FnMut(Bytes) -> Result<(), String>,
    ) -> Result<u64, RemoteError> {
        let want = range.end.saturating_sub(range.start);
        let mut lease = self.stream_lease();
        let (rt, stores) = match &lease.io {
            Some(io) => (&io.rt, &io.bulk[..]),
            None => (&self.rt, &self.bulk[..]),
        };
        // The answer's head within the timeout; its body piece by piece below.
        let started = self.call_via(rt, stores, true, self.timeout, key, |s, p| {
            let opts = object_store::GetOptions {
                range: Some(range.clone().into()),
                ..Default::default()
            };
            async move { s.get_opts(&p, opts).await }
        })?;
        let mut stream = started.into_stream();
        let timeout = self.timeout;
        let got = rt.block_on(async {
            let mut got = 0u64;
            loop {
                match tokio::time::timeout(timeout, stream.next()).await {
                    Ok(Some(Ok(b))) => {
                        got += b.len() as u64;
                        if got > want {
                            return Err(RemoteError::Other(format!(
                                "object {key}: more than the {want} bytes asked for"
                            )));
                        }
                        each(b).map_err(RemoteError::Other)?;
                    }
                    Ok(Some(Err(e))) => return Err(RemoteError::from_os(key, e)),
                    Ok(None) => return Ok(got),
                    Err(_) => {
                        return Err(RemoteError::Unreachable(format!(
                            "object {key}: no bytes for {timeout:?} in the middle of a read"
                        )))
                    }
                }
            }
        });
        let got = got.inspect_err(|_| {
            self.errors.fetch_add(1, Ordering::Relaxed);
        })?;
        self.bytes_in.fetch_add(got, Ordering::Relaxed);
        if got != want {
            return Err(RemoteError::Other(format!(
                "object {key}: asked for {want} bytes, got {got}"
            )));
        }
        lease.ok = true;
        Ok(got)
    }

    /// A `StreamIo` from the pool, or a new one; none (the shared runtime and bulk clients)
    /// for the in-memory store, or if one cannot be made.
    fn stream_lease(&self) -> StreamLease<'_> {
        let (pooled, stale) = {
            let mut pool = self.stream_io.lock().unwrap_or_else(|p| p.into_inner());
            let (stale, fresh): (Vec<_>, Vec<_>) = std::mem::take(&mut *pool)
                .into_iter()
                .partition(|io| io.idle_since.elapsed() > STREAM_IO_IDLE);
            *pool = fresh;
            (pool.pop(), stale)
        };
        stale.into_iter().for_each(StreamIo::discard);
        let io = pooled.or_else(|| {
            let cfg = self.config.as_ref()?;
            let made = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| RemoteError::Config(format!("runtime: {e}")))
                .and_then(|rt| {
                    Ok(StreamIo {
                        rt,
                        bulk: build_stores(cfg, BULK_TIMEOUT)?,
                        idle_since: Instant::now(),
                    })
                });
            made.inspect_err(|e| {
                tracing::warn!("object store: a streamed read on the shared runtime: {e}")
            })
            .ok()
        });
        StreamLease {
            remote: self,
            io,
            ok: false,
        }
    }

    /// Objects whose keys start with `prefix` and sort after `prefix` + `after` (all of them
    /// when `after` is empty), in key order.
    pub fn list_after(&self, prefix: &str, after: &str) -> Result<Vec<Listed>, RemoteError> {
        self.list_after_max(prefix, after, MAX_LISTED)
    }

    /// The first `max` (at most `MAX_LISTED`) keys below `prefix` after `prefix` + `after`,
    /// in key order.
    pub fn list_after_max(
        &self,
        prefix: &str,
        after: &str,
        max: usize,
    ) -> Result<Vec<Listed>, RemoteError> {
        let max = max.min(MAX_LISTED);
        let full = self.prefix.clone();
        let items = self.call(prefix, |s, p| {
            let offset = (!after.is_empty()).then(|| self.path(&format!("{prefix}{after}")));
            async move {
                let mut st = match &offset {
                    Some(o) => s.list_with_offset(Some(&p), o),
                    None => s.list(Some(&p)),
                };
                let mut out = Vec::new();
                while let Some(m) = st.next().await {
                    let m = m?;
                    out.push((
                        m.location.to_string(),
                        m.size,
                        u64::try_from(m.last_modified.timestamp_millis()).unwrap_or(0),
                    ));
                    // Callers look at the first few keys past a point; a bucket stuffed with
                    // keys must not fill memory.
                    if out.len() >= max {
                        break;
                    }
                }
                Ok(out)
            }
        })?;
        let mut out: Vec<Listed> = items
            .into_iter()
            .filter_map(|(loc, size, modified_ms)| {
                loc.strip_prefix(&full).map(|k| Listed {
                    key: k.to_owned(),
                    size,
                    modified_ms,
                })
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Every object under `prefix`, in key order, a page of listing at a time (at most
    /// `max` of them: a bound on memory, not a sample: more is an error).
    pub fn list_all(&self, prefix: &str, max: usize) -> Result<Vec<Listed>, RemoteError> {
        let mut out: Vec<Listed> = Vec::new();
        loop {
            let after = out
                .last()
                .and_then(|l| l.key.strip_prefix(prefix))
                .unwrap_or("")
                .to_owned();
            let page = self.list_after(prefix, &after)?;
            let full = page.len() >= MAX_LISTED;
            out.extend(page);
            if out.len() > max {
                return Err(RemoteError::TooLarge(format!(
                    "more than {max} objects under {prefix}"
                )));
            }
            if !full {
                return Ok(out);
            }
        }
    }

    /// The size of the object `key` (a HEAD request); `NotFound` if there is none.
    pub fn size(&self, key: &str) -> Result<u64, RemoteError> {
        let meta = self.call(key, |s, p| async move { s.head(&p).await })?;
        Ok(meta.size)
    }

    pub fn delete(&self, key: &str) -> Result<(), RemoteError> {
        self.call(key, |s, p| async move { s.delete(&p).await })
    }

    /// Checks, on a scratch key, that the store honours conditional writes: `racers` concurrent
    /// create-only puts must have exactly one winner, and an `If-Match` put with a stale ETag
    /// must be refused. A fleet's order rests on both, so a store that fails is refused.
    pub fn check_conditional_writes(&self, racers: usize) -> Result<(), RemoteError> {
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| RemoteError::Other(e.to_string()))?;
        let key = format!("scratch/conditional-{}", hex::encode(nonce));
        // Racing writers of one key wait on each other in some stores (SeaweedFS holds a lock
        // per key, and a waiting writer retries it about once a second), so the race gets a
        // client of its own with a longer timeout than the read path's.
        let at = self.current.load(Ordering::Relaxed) % self.stores.len();
        let store = match &self.config {
            Some(cfg) => build_stores(cfg, Duration::from_secs(60))?.swap_remove(at),
            None => self.stores[at].clone(),
        };
        let path = self.path(&key);
        let results: Vec<Result<object_store::PutResult, object_store::Error>> =
            self.rt.block_on(async {
                let tasks: Vec<_> = (0..racers)
                    .map(|i| {
                        let s = store.clone();
                        let p = path.clone();
                        tokio::spawn(async move {
                            s.put_opts(
                                &p,
                                PutPayload::from(format!("racer {i}").into_bytes()),
                                PutOptions::from(PutMode::Create),
                            )
                            .await
                        })
                    })
                    .collect();
                let mut out = Vec::new();
                for t in tasks {
                    out.push(t.await.unwrap_or_else(|e| {
                        Err(object_store::Error::Generic {
                            store: "join",
                            source: Box::new(e),
                        })
                    }));
                }
                out
            });
        let mut winners = Vec::new();
        for r in results {
            match r {
                Ok(p) => winners.push(p),
                Err(object_store::Error::AlreadyExists { .. })
                | Err(object_store::Error::Precondition { .. }) => {}
                Err(e) => return Err(RemoteError::from_os(&key, e)),
            }
        }
        let cleanup = |s: &Self| {
            let _ = s.delete(&key);
        };
        if winners.len() != 1 {
            cleanup(self);
            return Err(RemoteError::Other(format!(
                "{} of {racers} concurrent create-only puts of one key succeeded (exactly one must): this store does not honour If-None-Match, and a fleet's order rests on it",
                winners.len()
            )));
        }
        let first = ETag(winners[0].e_tag.clone().unwrap_or_default());
        let second = self.replace(&key, Bytes::from_static(b"second"), &first)?;
        match self.replace(&key, Bytes::from_static(b"stale"), &first) {
            Err(RemoteError::Changed(_)) => {}
            Ok(_) => {
                cleanup(self);
                return Err(RemoteError::Other(
                    "a put with a stale If-Match ETag succeeded: this store does not honour If-Match".into(),
                ));
            }
            Err(e) => return Err(e),
        }
        let (now, _) = self.get(&key)?;
        cleanup(self);
        if &now[..] != b"second" || second.0.is_empty() {
            return Err(RemoteError::Other(
                "a refused If-Match put changed the object".into(),
            ));
        }
        Ok(())
    }
}

/// Puts larger than this go through the bulk clients.
const BULK_OVER: u64 = 1 << 20;
/// Bound on one bulk request (a 32 MiB pack at 100 kB/s still fits).
const BULK_TIMEOUT: Duration = Duration::from_secs(600);

/// Most keys one listing returns.
const MAX_LISTED: usize = 10_000;

/// How long calls fail at once after every endpoint failed.
const DOWN_FOR_MS: u64 = 1000;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn normalise_prefix(p: &str) -> String {
    let p = p.trim_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_is_create_only_and_replace_needs_the_current_etag() {
        let r = Remote::memory();
        let e1 = r.create("log/1", Bytes::from_static(b"one")).unwrap();
        assert!(matches!(
            r.create("log/1", Bytes::from_static(b"two")),
            Err(RemoteError::Exists(_))
        ));
        let e2 = r
            .replace("log/1", Bytes::from_static(b"three"), &e1)
            .unwrap();
        assert!(matches!(
            r.replace("log/1", Bytes::from_static(b"four"), &e1),
            Err(RemoteError::Changed(_))
        ));
        let (b, e) = r.get("log/1").unwrap();
        assert_eq!(&b[..], b"three");
        assert_eq!(e, e2);
        assert_eq!(&r.get_range("log/1", 1..3).unwrap()[..], b"hr");
        assert!(matches!(r.get("log/2"), Err(RemoteError::NotFound(_))));
        r.check_conditional_writes(8).unwrap();
    }

    #[test]
    fn a_4xx_answer_is_not_an_unreachable_store() {
        assert_eq!(
            client_error_status("Error performing GET http://x/b/k in 2ms - Server returned non-2xx status code: 416 Range Not Satisfiable: "),
            Some(416)
        );
        assert_eq!(
            client_error_status("Server returned non-2xx status code: 503 Service Unavailable"),
            None
        );
        assert_eq!(client_error_status("error sending request"), None);
        assert_eq!(client_error_status("status code: 4"), None);
        // An answer about the object stays with this endpoint; a gateway refusing everything
        // (403) or failing moves the call to the next one.
        let generic = |msg: &str| object_store::Error::Generic {
            store: "S3",
            source: msg.to_owned().into(),
        };
        for (msg, next) in [
            (
                "Server returned non-2xx status code: 416 Range Not Satisfiable",
                false,
            ),
            ("Server returned non-2xx status code: 404 Not Found", false),
            ("Server returned non-2xx status code: 403 Forbidden", true),
            ("Server returned non-2xx status code: 400 Bad Request", true),
            (
                "Server returned non-2xx status code: 429 Too Many Requests",
                true,
            ),
            ("error sending request", true),
        ] {
            assert_eq!(
                RemoteError::from_os("packs/x", generic(msg)).try_next(),
                next,
                "{msg}"
            );
        }
    }

    #[test]
    fn listing_starts_after_the_offset() {
        let r = Remote::memory();
        for i in [1u64, 2, 3, 10] {
            r.create(&format!("log/{i:020}"), Bytes::from_static(b"x"))
                .unwrap();
        }
        r.create("packs/a", Bytes::from_static(b"x")).unwrap();
        let all: Vec<String> = r
            .list_after("log/", "")
            .unwrap()
            .into_iter()
            .map(|l| l.key)
            .collect();
        assert_eq!(all.len(), 4);
        let after: Vec<String> = r
            .list_after("log/", &format!("{:020}", 2))
            .unwrap()
            .into_iter()
            .map(|l| l.key)
            .collect();
        assert_eq!(
            after,
            vec![format!("log/{:020}", 3), format!("log/{:020}", 10)]
        );
    }

    /// A streamed read runs on a runtime leased from the pool; only one whose read went well
    /// goes back, and one idle too long is not lent again.
    #[test]
    fn a_streamed_read_leases_a_runtime_and_only_a_good_one_goes_back() {
        let cfg = RemoteConfig {
            // Nothing listens there: the connection is refused at once.
            endpoints: vec!["http://127.0.0.1:1".into()],
            bucket: "b".into(),
            region: "r".into(),
            prefix: "arca".into(),
            credentials_file: None,
            ca_file: None,
            timeout: Duration::from_secs(2),
            retention: None,
        };
        let r = Remote::s3(&cfg).unwrap();
        let err = r.get_range_each("packs/x", 0..10, |_| Ok(())).unwrap_err();
        assert!(err.try_next(), "a refused connection: {err}");
        assert!(
            r.stream_io.lock().unwrap().is_empty(),
            "a failed read's runtime is dropped"
        );

        let mut lease = r.stream_lease();
        assert!(lease.io.is_some(), "a runtime of its own");
        lease.ok = true;
        drop(lease);
        assert_eq!(r.stream_io.lock().unwrap().len(), 1);
        r.stream_io.lock().unwrap()[0].idle_since =
            Instant::now() - STREAM_IO_IDLE - Duration::from_secs(1);
        let lease = r.stream_lease();
        let fresh = lease.io.as_ref().unwrap().idle_since.elapsed();
        assert!(
            fresh < Duration::from_secs(1),
            "a new one, not the stale one"
        );
        assert!(r.stream_io.lock().unwrap().is_empty());
    }
}

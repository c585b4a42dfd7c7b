//! The control API over HTTP/1.1 on a Unix socket (axum). A thin translation: each handler reads
//! the caller from the connection's peer credentials, calls one `Registry` method (on a blocking
//! thread when it touches the store) and maps the result to JSON. Routes are listed in docs/api.md.

use std::sync::Arc;

use arca_core::api::{
    Approve, CommitUpload, CreateUpload, ErrorBody, ErrorCode, FileQuery, PolicyUpdate, Promote,
    RoleChange, Rollback, TrustKey, UploadCreated, VerifyLine,
};
use arca_core::{ModelName, ModelVersion, RelPath};
use axum::body::Body;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures_util::{StreamExt, TryStreamExt};
use tokio::net::UnixListener;

use crate::auth::Caller;
use crate::metrics::{Metrics, RequestLabels};
use crate::registry::{Registry, RegistryError};

/// Peer credentials of a connection, captured when it is accepted: uid, gid, pid and the
/// supplementary groups, all from the kernel.
#[derive(Clone, Debug)]
pub struct Peer(Option<PeerCred>);

#[derive(Clone, Debug)]
struct PeerCred {
    uid: u32,
    gid: u32,
    pid: Option<i32>,
    groups: Vec<u32>,
}

impl Connected<axum::serve::IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, UnixListener>) -> Self {
        Peer::of(stream.io())
    }
}

impl Peer {
    /// The kernel's record of who is on the other end of `io`.
    pub fn of(io: &tokio::net::UnixStream) -> Self {
        use std::os::fd::AsFd;
        let cred = io.peer_cred().ok();
        // Without its groups a caller would silently lose group-granted roles: treat a failure
        // to read them like a failure to read the credentials at all.
        let groups = crate::auth::peer_groups(io.as_fd());
        Peer(match (cred, groups) {
            (Some(c), Ok(groups)) => Some(PeerCred {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid(),
                groups,
            }),
            (_, Err(e)) => {
                tracing::warn!("reading a client's groups (SO_PEERGROUPS): {e}");
                None
            }
            (None, _) => None,
        })
    }
}

/// An API error as an HTTP response.
pub struct ApiError(ErrorCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self.0 {
            ErrorCode::BadRequest | ErrorCode::DigestMismatch => StatusCode::BAD_REQUEST,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::AlreadyExists => StatusCode::CONFLICT,
            ErrorCode::PermissionDenied
            | ErrorCode::SignatureMismatch
            | ErrorCode::UntrustedSigner => StatusCode::FORBIDDEN,
            ErrorCode::IntegrityFailure => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (
            status,
            Json(ErrorBody {
                code: self.0,
                message: self.1,
            }),
        )
            .into_response()
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let code = match &e {
            RegistryError::BadRequest(_) => ErrorCode::BadRequest,
            RegistryError::NotFound(_) => ErrorCode::NotFound,
            RegistryError::AlreadyExists(_) => ErrorCode::AlreadyExists,
            RegistryError::PermissionDenied(_) => ErrorCode::PermissionDenied,
            RegistryError::SignatureMismatch(_) => ErrorCode::SignatureMismatch,
            RegistryError::UntrustedSigner(_) => ErrorCode::UntrustedSigner,
            RegistryError::DigestMismatch(_) => ErrorCode::DigestMismatch,
            RegistryError::Integrity(_) => ErrorCode::IntegrityFailure,
            RegistryError::Store(crate::store::StoreError::Busy(m)) => {
                return ApiError(ErrorCode::AlreadyExists, m.clone())
            }
            RegistryError::Store(
                inner @ (crate::store::StoreError::FleetUnavailable(_)
                | crate::store::StoreError::FleetUnconfirmed(_)),
            ) => {
                tracing::warn!("{inner}");
                return ApiError(ErrorCode::Unavailable, inner.to_string());
            }
            RegistryError::Store(inner) if inner.no_space() => {
                tracing::error!("store error: {inner}");
                return ApiError(
                    ErrorCode::Internal,
                    "the state directory's file system is full (no space left on device): nothing was stored; free space, then restart arcad".into(),
                );
            }
            RegistryError::Store(inner) => {
                // Internal details go to the log; the client learns only that it failed.
                tracing::error!("store error: {inner}");
                return ApiError(
                    ErrorCode::Internal,
                    "internal store error (see the daemon's log)".into(),
                );
            }
        };
        ApiError(code, e.to_string())
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn caller(reg: &Registry, peer: &Peer) -> ApiResult<Caller> {
    match &peer.0 {
        Some(p) => Ok(reg.caller(p.uid, p.gid, p.pid, p.groups.clone())),
        None => Err(ApiError(
            ErrorCode::PermissionDenied,
            "the caller's credentials could not be read from the socket".into(),
        )),
    }
}

fn parse<T: std::str::FromStr>(s: &str) -> ApiResult<T>
where
    T::Err: std::fmt::Display,
{
    s.parse()
        .map_err(|e: T::Err| ApiError(ErrorCode::BadRequest, e.to_string()))
}

/// Runs store work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RegistryError> + Send + 'static,
) -> ApiResult<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => {
            tracing::error!("request task failed: {e}");
            Err(ApiError(ErrorCode::Internal, "internal error".into()))
        }
    }
}

type Reg = State<Arc<Registry>>;
type PeerInfo = ConnectInfo<Peer>;

/// Observes every request's latency under its route pattern.
async fn track(
    State(m): State<Arc<Metrics>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        // `:name` rather than axum's `{name}`: braces inside label values trip up some
        // Prometheus text parsers.
        .map_or_else(
            || "unmatched".to_string(),
            |p| p.as_str().replace('{', ":").replace('}', ""),
        );
    let method = req.method().to_string();
    let start = std::time::Instant::now();
    let resp = next.run(req).await;
    m.observe(
        RequestLabels {
            method,
            route,
            status: resp.status().as_u16(),
        },
        start.elapsed().as_secs_f64(),
    );
    resp
}

/// `GET /metrics`: the Prometheus text format.
async fn metrics_text(State(m): State<Arc<Metrics>>) -> Response {
    match m.render() {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The metrics alone, for the optional TCP listener (no other route is ever served on TCP).
pub fn metrics_router(m: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .with_state(m)
}

pub fn router(reg: Arc<Registry>, m: Arc<Metrics>) -> Router {
    let socket_metrics = Router::new()
        .route("/metrics", get(metrics_on_socket))
        .with_state((reg.clone(), m.clone()));
    api(reg)
        .route_layer(axum::middleware::from_fn_with_state(m, track))
        .merge(socket_metrics)
}

/// `GET /metrics` on the control socket: the same text, for callers with read on every model
/// (the store's figures are store-wide, and a pusher comparing them before and after a push
/// would learn whether its content was already stored). The TCP listener has no caller to ask;
/// docs/operations.md says so.
async fn metrics_on_socket(
    State((reg, m)): State<(Arc<Registry>, Arc<Metrics>)>,
    ConnectInfo(p): PeerInfo,
) -> Response {
    let allowed = match caller(&reg, &p) {
        Ok(c) => blocking(move || reg.require_read_all(&c, "read the metrics")).await,
        Err(e) => Err(e),
    };
    match allowed {
        Ok(()) => metrics_text(State(m)).await,
        Err(e) => e.into_response(),
    }
}

fn api(reg: Arc<Registry>) -> Router {
    Router::new()
        .route("/v1/whoami", get(whoami))
        .route("/v1/uploads", post(create_upload))
        .route(
            "/v1/uploads/{id}/files",
            put(put_file).layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/uploads/{id}/commit", post(commit))
        .route("/v1/uploads/{id}", axum::routing::delete(abort))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{name}", get(list_versions))
        .route("/v1/models/{name}/versions/{version}", get(show))
        .route("/v1/models/{name}/versions/{version}/file", get(read_file))
        .route(
            "/v1/models/{name}/versions/{version}/approvals",
            post(approve),
        )
        .route(
            "/v1/models/{name}/versions/{version}/promote",
            post(promote),
        )
        .route("/v1/models/{name}/rollback", post(rollback))
        .route("/v1/models/{name}/history", get(history))
        .route("/v1/models/{name}/verify", post(verify))
        .route(
            "/v1/models/{name}/versions/{version}",
            axum::routing::delete(delete_version),
        )
        .route("/v1/models/{name}/policy", get(policy).put(set_policy))
        .route("/v1/roles", get(list_roles).post(assign_role))
        .route("/v1/roles/revoke", post(revoke_role))
        .route("/v1/keys", get(list_keys).post(trust_key))
        .route("/v1/gc", post(gc))
        .route("/v1/status", get(status))
        .route("/v1/keys/untrust", post(untrust_key))
        .route("/v1/keys/rotate-kek", post(rotate_kek))
        .route("/v1/keys/rotate-dek", post(rotate_dek))
        .route("/v1/audit", get(audit_ls))
        .route("/v1/audit/verify", post(audit_verify))
        .route("/v1/audit/report/{name}", get(audit_report))
        .route("/v1/store/stats", get(stats))
        .with_state(reg)
}

async fn whoami(State(reg): Reg, ConnectInfo(p): PeerInfo) -> ApiResult<impl IntoResponse> {
    Ok(Json(reg.whoami(&caller(&reg, &p)?)))
}

async fn create_upload(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Json(req): Json<CreateUpload>,
) -> ApiResult<impl IntoResponse> {
    let c = caller(&reg, &p)?;
    let id = blocking(move || reg.create_upload(&c, req.metadata)).await?;
    Ok((StatusCode::CREATED, Json(UploadCreated { upload_id: id })))
}

async fn put_file(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Path(id): Path<String>,
    Query(q): Query<FileQuery>,
    body: Body,
) -> ApiResult<impl IntoResponse> {
    let c = caller(&reg, &p)?;
    // The body is streamed through a bounded bridge into the blocking ingest pipeline: memory
    // stays bounded whatever the file's size.
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let stored = blocking(move || reg.put_file(&c, &id, q.path, q.mode, reader)).await?;
    Ok(Json(stored))
}

async fn commit(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Path(id): Path<String>,
    Json(req): Json<CommitUpload>,
) -> ApiResult<impl IntoResponse> {
    let c = caller(&reg, &p)?;
    Ok(Json(blocking(move || reg.commit(&c, &id, req)).await?))
}

async fn abort(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let c = caller(&reg, &p)?;
    reg.abort_upload(&c, &id)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_models(State(reg): Reg, ConnectInfo(p): PeerInfo) -> ApiResult<impl IntoResponse> {
    Ok(Json(reg.list_models(&caller(&reg, &p)?)))
}

async fn list_versions(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let name: ModelName = parse(&name)?;
    Ok(Json(reg.list_versions(&caller(&reg, &p)?, &name)?))
}

async fn show(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let (name, version): (ModelName, ModelVersion) = (parse(&name)?, parse(&version)?);
    Ok(Json(reg.show(&caller(&reg, &p)?, &name, &version)?))
}

#[derive(serde::Deserialize)]
struct PathQuery {
    path: RelPath,
}

/// Streams a file's plaintext. Every chunk is fully verified before it is sent; if one fails the
/// stream is cut (the client sees an incomplete body, and its own digest check fails too). The
/// file's chunks stay pinned until the stream ends or its client goes away, so a deletion and a
/// collection meanwhile neither cut it nor pass for damage.
async fn read_file(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Path((name, version)): Path<(String, String)>,
    Query(q): Query<PathQuery>,
) -> ApiResult<Response> {
    let (name, version): (ModelName, ModelVersion) = (parse(&name)?, parse(&version)?);
    let c = caller(&reg, &p)?;
    let (file, pins) = reg.file_chunks(&c, &name, &version, &q.path)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, String>>(4);
    let path = file.entry.path.clone();
    tokio::task::spawn_blocking(move || {
        let _pins = pins;
        for cr in &file.chunks {
            let item = reg.read_chunk(&cr.id, cr.len).map(bytes::Bytes::from).map_err(|e| {
                tracing::error!(arca_event = arca_core::audit::EventKind::IntegrityViolation.as_str(), model = %name, version = %version, file = %file.entry.path, chunk = %cr.id, "integrity failure while serving: {e}");
                reg.integrity_event("get", &name, &version, Some(&file.entry.path), Some(&cr.id), &e.to_string());
                format!("file {}: chunk {}: {e}", file.entry.path, cr.id)
            });
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    // The first chunk is verified before the response starts, so a damaged file usually fails
    // with a proper error naming it; a later failure can only cut the body short.
    let first = match rx.recv().await {
        Some(Err(why)) => {
            return Err(ApiError(
                ErrorCode::IntegrityFailure,
                format!("integrity failure: {why}"),
            ))
        }
        other => other,
    };
    let rest =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    let stream = futures_util::stream::iter(first)
        .chain(rest)
        .map_err(move |why| std::io::Error::other(format!("{path}: {why}")));
    Response::builder()
        .header("content-type", "application/octet-stream")
        .header("content-length", file.entry.size)
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError(ErrorCode::Internal, e.to_string()))
}

async fn approve(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Path((name, version)): Path<(String, String)>,
    Json(req): Json<Approve>,
) -> ApiResult<impl IntoResponse> {
    let (name, version): (ModelName, ModelVersion) = (parse(&name)?, parse(&version)?);
    let c = caller(&reg, &p)?;
    Ok(Json(
        blocking(move || reg.approve(&c, &name, &version, req)).await?,
    ))
}

async fn promote(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Path((name, version)): Path<(String, String)>,
    Json(req): Json<Promote>,
) -> ApiResult<impl IntoResponse> {
    let (name, version): (ModelName, ModelVersion) = (parse(&name)?, parse(&version)?);
    let c = caller(&reg, &p)?;
    Ok(Json(
        blocking(move || reg.promote(&c, &name, &version, req)).await?,
    ))
}

async fn rollback(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Path(name): Path<String>,
    Json(req): Json<Rollback>,
) -> ApiResult<impl IntoResponse> {
    let name: ModelName = parse(&name)?;
    let c = caller(&reg, &p)?;
    Ok(Json(blocking(move || reg.rollback(&c, &name, req)).await?))
}

async fn history(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let name: ModelName = parse(&name)?;
    Ok(Json(reg.history(&caller(&reg, &p)?, &name)?))
}

#[derive(serde::Deserialize)]
struct VerifyQuery {
    version: Option<String>,
    /// Answer as NDJSON `VerifyLine`s, progress first (`arca verify` on a terminal).
    #[serde(default)]
    progress: bool,
}

async fn verify(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Path(name): Path<String>,
    Query(q): Query<VerifyQuery>,
) -> ApiResult<Response> {
    let name: ModelName = parse(&name)?;
    let version: Option<ModelVersion> = q.version.as_deref().map(parse).transpose()?;
    let c = caller(&reg, &p)?;
    if !q.progress {
        return Ok(
            Json(blocking(move || reg.verify(&c, &name, version.as_ref())).await?).into_response(),
        );
    }
    // The check runs on a blocking thread and reports through a channel: `Ok(line)` for each
    // line of the answer, `Err` when it failed before its first progress line, so a refusal or
    // a missing model is still a plain error status.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<VerifyLine, ApiError>>(8);
    tokio::task::spawn_blocking(move || {
        // Progress lines at most every 100 ms (a model has thousands of chunks), never waiting
        // for a slow reader: a line the channel has no room for is skipped, the next one
        // carries the newer count. The first one always goes, it starts the answer.
        let mut last: Option<std::time::Instant> = None;
        let r = reg.verify_with(&c, &name, version.as_ref(), &mut |checked, total| {
            let line = VerifyLine::Progress { checked, total };
            match last {
                None => {
                    let _ = tx.blocking_send(Ok(line));
                }
                Some(t) if t.elapsed() >= std::time::Duration::from_millis(100) => {
                    let _ = tx.try_send(Ok(line));
                }
                Some(_) => return,
            }
            last = Some(std::time::Instant::now());
        });
        let line = match r {
            Ok(report) => Ok(VerifyLine::Report(report)),
            Err(e) if last.is_none() => Err(ApiError::from(e)),
            Err(e) => {
                let ApiError(code, message) = ApiError::from(e);
                Ok(VerifyLine::Error(ErrorBody { code, message }))
            }
        };
        let _ = tx.blocking_send(line);
    });
    let first = match rx.recv().await {
        Some(Ok(line)) => line,
        Some(Err(e)) => return Err(e),
        None => return Err(ApiError(ErrorCode::Internal, "internal error".into())),
    };
    let rest =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
            .filter_map(|r| async move { r.ok() });
    let stream = futures_util::stream::iter([first]).chain(rest).map(|line| {
        let mut b = serde_json::to_vec(&line).map_err(std::io::Error::other)?;
        b.push(b'\n');
        Ok::<_, std::io::Error>(bytes::Bytes::from(b))
    });
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError(ErrorCode::Internal, e.to_string()))
}

async fn list_keys(State(reg): Reg, ConnectInfo(p): PeerInfo) -> ApiResult<impl IntoResponse> {
    let c = caller(&reg, &p)?;
    Ok(Json(blocking(move || reg.list_keys(&c)).await?))
}

async fn trust_key(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Json(req): Json<TrustKey>,
) -> ApiResult<impl IntoResponse> {
    let c = caller(&reg, &p)?;
    Ok(Json(blocking(move || reg.trust_key(&c, req)).await?))
}

async fn untrust_key(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Json(req): Json<arca_core::api::UntrustKey>,
) -> ApiResult<impl IntoResponse> {
    let c = caller(&reg, &p)?;
    Ok(Json(blocking(move || reg.untrust_key(&c, req)).await?))
}

async fn stats(State(reg): Reg, ConnectInfo(p): PeerInfo) -> ApiResult<impl IntoResponse> {
    let c = caller(&reg, &p)?;
    Ok(Json(blocking(move || reg.store_stats(&c)).await?))
}

async fn delete_version(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let (name, version): (ModelName, ModelVersion) = (parse(&name)?, parse(&version)?);
    let c = caller(&reg, &p)?;
    blocking(move || reg.delete_version(&c, &name, &version)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn policy(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let name: ModelName = parse(&name)?;
    Ok(Json(reg.policy(&caller(&reg, &p)?, &name)?))
}

async fn set_policy(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Path(name): Path<String>,
    Json(req): Json<PolicyUpdate>,
) -> ApiResult<impl IntoResponse> {
    let name: ModelName = parse(&name)?;
    let c = caller(&reg, &p)?;
    Ok(Json(
        blocking(move || reg.set_policy(&c, &name, req)).await?,
    ))
}

#[derive(serde::Deserialize)]
struct RolesQuery {
    user: Option<String>,
    model: Option<String>,
}

async fn list_roles(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Query(q): Query<RolesQuery>,
) -> ApiResult<impl IntoResponse> {
    let model: Option<ModelName> = q.model.as_deref().map(parse).transpose()?;
    let c = caller(&reg, &p)?;
    Ok(Json(reg.list_roles(
        &c,
        q.user.as_deref(),
        model.as_ref(),
    )?))
}

async fn assign_role(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Json(req): Json<RoleChange>,
) -> ApiResult<impl IntoResponse> {
    let c = caller(&reg, &p)?;
    Ok(Json(blocking(move || reg.assign_role(&c, req)).await?))
}

async fn revoke_role(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Json(req): Json<RoleChange>,
) -> ApiResult<impl IntoResponse> {
    let c = caller(&reg, &p)?;
    Ok(Json(blocking(move || reg.revoke_role(&c, req)).await?))
}

#[derive(serde::Deserialize)]
struct AuditQuery {
    model: Option<String>,
    version: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    user: Option<String>,
    /// Milliseconds since the epoch, inclusive.
    since: Option<u64>,
    until: Option<u64>,
    limit: Option<usize>,
}

async fn audit_ls(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Query(q): Query<AuditQuery>,
) -> ApiResult<impl IntoResponse> {
    let c = caller(&reg, &p)?;
    let kind = q
        .kind
        .as_deref()
        .map(str::parse::<arca_core::audit::EventKind>)
        .transpose()
        .map_err(|e| ApiError(ErrorCode::BadRequest, e))?;
    let f = crate::store::audit::AuditFilter {
        model: q.model,
        version: q.version,
        kind,
        user: q.user,
        since_ms: q.since,
        until_ms: q.until,
        limit: q.limit.unwrap_or(1000),
    };
    Ok(Json(blocking(move || reg.audit_ls(&c, f)).await?))
}

async fn audit_verify(State(reg): Reg, ConnectInfo(p): PeerInfo) -> ApiResult<impl IntoResponse> {
    let c = caller(&reg, &p)?;
    Ok(Json(blocking(move || reg.audit_verify(&c)).await?))
}

#[derive(serde::Deserialize)]
struct ReportQuery {
    from: u64,
    to: u64,
}

async fn audit_report(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Path(name): Path<String>,
    Query(q): Query<ReportQuery>,
) -> ApiResult<impl IntoResponse> {
    let name: ModelName = parse(&name)?;
    let c = caller(&reg, &p)?;
    Ok(Json(
        blocking(move || reg.audit_report(&c, &name, q.from, q.to)).await?,
    ))
}

#[derive(serde::Deserialize)]
struct GcQuery {
    #[serde(default)]
    dry_run: bool,
}

async fn gc(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Query(q): Query<GcQuery>,
) -> ApiResult<impl IntoResponse> {
    let c = caller(&reg, &p)?;
    Ok(Json(blocking(move || reg.gc(Some(&c), q.dry_run)).await?))
}

async fn status(State(reg): Reg, ConnectInfo(p): PeerInfo) -> ApiResult<impl IntoResponse> {
    let c = caller(&reg, &p)?;
    let mount = reg.mountpoint();
    Ok(Json(
        blocking(move || reg.status(&c, mount.as_deref())).await?,
    ))
}

async fn rotate_kek(State(reg): Reg, ConnectInfo(p): PeerInfo) -> ApiResult<impl IntoResponse> {
    let c = caller(&reg, &p)?;
    let path = reg.kek_rotation_path().ok_or_else(|| {
        ApiError(
            ErrorCode::BadRequest,
            "this daemon has no key file path to rotate to".into(),
        )
    })?;
    Ok(Json(blocking(move || reg.rotate_kek(&c, &path)).await?))
}

async fn rotate_dek(State(reg): Reg, ConnectInfo(p): PeerInfo) -> ApiResult<impl IntoResponse> {
    let c = caller(&reg, &p)?;
    Ok(Json(blocking(move || reg.rotate_dek(&c)).await?))
}

/// Limits on the control socket's connections: a local user cannot exhaust the daemon by
/// opening connections and sending nothing, or by sending endless headers.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    /// Per peer uid (root included), so one user's flood leaves room for the others.
    pub per_user: usize,
    /// A connection that has not sent a request's headers within this is closed (this also
    /// ends idle keep-alive connections).
    pub header_timeout: std::time::Duration,
    /// Bytes of request line and headers; more is answered 431.
    pub max_header_bytes: usize,
}

/// One connection slot of a uid, given back on drop.
struct UserSlot {
    counts: Arc<std::sync::Mutex<std::collections::HashMap<u32, usize>>>,
    uid: u32,
}

impl UserSlot {
    fn take(
        counts: &Arc<std::sync::Mutex<std::collections::HashMap<u32, usize>>>,
        uid: u32,
        max: usize,
    ) -> Option<Self> {
        let mut m = counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(uid).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Self {
            counts: counts.clone(),
            uid,
        })
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.uid);
            }
        }
    }
}

/// Serves `app` on the Unix socket with `limits`, until `shutdown` completes; then stops
/// accepting and lets requests in flight finish (up to 30 s).
pub async fn serve_unix(
    listener: UnixListener,
    app: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let total = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let per_user = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let peer = Peer::of(&stream);
        let uid = peer.0.as_ref().map_or(u32::MAX, |p| p.uid);
        let Ok(permit) = total.clone().try_acquire_owned() else {
            tracing::warn!(
                uid,
                "connection refused: {} connections open",
                limits.max_connections
            );
            continue;
        };
        let Some(slot) = UserSlot::take(&per_user, uid, limits.per_user) else {
            tracing::warn!(
                uid,
                "connection refused: this uid has {} connections open",
                limits.per_user
            );
            continue;
        };
        let svc = hyper_util::service::TowerToHyperService::new(
            app.clone().layer(axum::Extension(ConnectInfo(peer))),
        );
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(limits.max_header_bytes);
        let conn = b.serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection ended: {e}");
            }
            drop((permit, slot));
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => {
            tracing::warn!("requests still running 30 s after shutdown began; stopping anyway");
        }
    }
}

//! The control API over HTTP/1.1 on a Unix socket (axum). A thin translation: each handler reads
//! the caller from the connection's peer credentials, calls one `Registry` method (on a blocking
//! thread when it touches the store) and maps the result to JSON. Routes are listed in docs/api.md.
//! Each handler's `#[utoipa::path]` describes it for the OpenAPI document, and the router is built
//! from those same annotations (utoipa-axum's `routes!`), so what is served is what is documented
//! (`crate::openapi`, `GET /v1/openapi.json`).

use std::sync::Arc;

use arca_core::api::{
    Approve, AuditVerify, CommitUpload, Committed, ComplianceReport, CreateUpload, ErrorBody,
    ErrorCode, FileQuery, FileStored, GcReport, History, KekRotated, ModelSummary, PolicyInfo,
    PolicyUpdate, Promote, RoleAssignment, RoleChange, RoleListing, Rollback, RotationProgress,
    StatusReport, StoreStats, TrustKey, TrustedKey, UntrustKey, UploadCreated, VerifyLine,
    VerifyReport, VersionInfo, VersionSummary, WhoAmI,
};
use arca_core::audit::{AuditEvent, EventKind};
use arca_core::{ModelName, ModelVersion, RelPath};
use axum::body::Body;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::{StreamExt, TryStreamExt};
use tokio::net::UnixListener;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::extract::{Json, Path, Query};
use crate::metrics::{Metrics, RequestLabels};
use crate::openapi::errors::{
    BadRequest, Conflict, Forbidden, Integrity, Internal, NotFound, TooLarge, Unavailable,
};
use crate::openapi::params::{Model as ModelPath, Upload as UploadPath, Version as VersionPath};
use crate::registry::{ChunkReadError, Registry, RegistryError};

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
pub struct ApiError(pub ErrorCode, pub String);

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
                | crate::store::StoreError::FleetUnconfirmed(_)
                | crate::store::StoreError::FleetHalted(_)),
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
    let socket_metrics: Router = socket_metrics().with_state((reg.clone(), m.clone())).into();
    let api: Router = api().with_state(reg).into();
    api.route_layer(axum::middleware::from_fn_with_state(m, track))
        .merge(socket_metrics)
}

/// The control API's OpenAPI document, from the same routes `router` serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = api().into_openapi();
    doc.merge(socket_metrics().into_openapi());
    doc
}

fn socket_metrics() -> OpenApiRouter<(Arc<Registry>, Arc<Metrics>)> {
    OpenApiRouter::default().routes(routes!(metrics_on_socket))
}

/// The Prometheus metrics (text format 0.0.4).
///
/// Needs read on `*`: the store's figures are store-wide, and a pusher comparing them before and
/// after a push would learn whether its content was already stored. (The optional TCP listener,
/// `metrics_addr`, serves the same text to whoever reaches it: docs/operations.md.)
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format", body = String,
            content_type = "text/plain; version=0.0.4; charset=utf-8"),
        (status = 403, response = Forbidden), (status = 500, response = Internal),
    ),
)]
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

/// Every route of the control API but `/metrics`, each with its description for the document.
fn api() -> OpenApiRouter<Arc<Registry>> {
    OpenApiRouter::with_openapi(crate::openapi::base())
        .routes(routes!(whoami))
        .routes(routes!(openapi_json))
        .routes(routes!(create_upload))
        .routes(routes!(put_file).layer(DefaultBodyLimit::disable()))
        .routes(routes!(commit))
        .routes(routes!(abort))
        .routes(routes!(list_models))
        .routes(routes!(list_versions))
        .routes(routes!(show, delete_version))
        .routes(routes!(read_file))
        .routes(routes!(approve))
        .routes(routes!(promote))
        .routes(routes!(rollback))
        .routes(routes!(history))
        .routes(routes!(verify))
        .routes(routes!(policy, set_policy))
        .routes(routes!(list_roles, assign_role))
        .routes(routes!(revoke_role))
        .routes(routes!(list_keys, trust_key))
        .routes(routes!(gc))
        .routes(routes!(fleet_pin, fleet_unpin))
        .routes(routes!(status))
        .routes(routes!(untrust_key))
        .routes(routes!(rotate_kek))
        .routes(routes!(rotate_dek))
        .routes(routes!(audit_ls))
        .routes(routes!(audit_verify))
        .routes(routes!(audit_report))
        .routes(routes!(stats))
}

/// This document (OpenAPI 3.1).
///
/// Anyone who can connect may read it, with no role and no audit event: it describes the API,
/// not the store.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "caller",
    responses(
        (status = 200, description = "The OpenAPI document", body = serde_json::Value),
    ),
)]
async fn openapi_json() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(crate::openapi::json);
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        doc.as_str(),
    )
        .into_response()
}

/// Who the caller is, as arcad sees it from the socket's peer credentials.
///
/// Anyone.
#[utoipa::path(get, path = "/v1/whoami", tag = "caller",
    responses(
        (status = 200, description = "The caller", body = WhoAmI),
        (status = 403, response = Forbidden),
    ),
)]
async fn whoami(State(reg): Reg, ConnectInfo(p): PeerInfo) -> ApiResult<impl IntoResponse> {
    Ok(Json(reg.whoami(&caller(&reg, &p)?)))
}

/// Starts a push: checks the metadata and the caller's right to push it.
///
/// Needs write on the model. Refused early if the model already has its policy's
/// `max_versions`, the version exists, the parent does not, or the policy requires signing and
/// the caller has no trusted key.
#[utoipa::path(post, path = "/v1/uploads", tag = "uploads",
    request_body = CreateUpload,
    responses(
        (status = 201, description = "The upload was started", body = UploadCreated),
        (status = 400, response = BadRequest), (status = 403, response = Forbidden),
        (status = 404, response = NotFound), (status = 409, response = Conflict),
        (status = 413, response = TooLarge), (status = 500, response = Internal),
    ),
)]
async fn create_upload(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Json(req): Json<CreateUpload>,
) -> ApiResult<impl IntoResponse> {
    let c = caller(&reg, &p)?;
    let id = blocking(move || reg.create_upload(&c, req.metadata)).await?;
    Ok((StatusCode::CREATED, Json(UploadCreated { upload_id: id })))
}

/// Stores one file of an upload: its bytes are the body, streamed (no size limit, bounded memory).
///
/// The daemon chunks, hashes, seals and stores them as they arrive, and answers with the entry it
/// computed. Needs: the upload's owner. A body cut short discards the whole upload.
#[utoipa::path(put, path = "/v1/uploads/{id}/files", tag = "uploads",
    params(UploadPath, FileQuery),
    request_body(description = "The file's bytes", content(("application/octet-stream"))),
    responses(
        (status = 200, description = "The file was stored: the entry the daemon computed",
            body = FileStored),
        (status = 400, response = BadRequest), (status = 403, response = Forbidden),
        (status = 404, response = NotFound), (status = 409, response = Conflict),
        (status = 500, response = Internal),
    ),
)]
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

/// Commits an upload as a version, with what the publisher computed and signed.
///
/// The daemon recomputes the Merkle root and metadata digest, checks both and the signature
/// (`signature` and `public_key` both, or neither for an unsigned push its policy allows), then
/// writes the version in one synced batch. Needs: the upload's owner, and write. Any refusal
/// discards the upload.
#[utoipa::path(post, path = "/v1/uploads/{id}/commit", tag = "uploads",
    params(UploadPath),
    request_body = CommitUpload,
    responses(
        (status = 200, description = "The version was committed", body = Committed),
        (status = 400, response = BadRequest), (status = 403, response = Forbidden),
        (status = 404, response = NotFound), (status = 409, response = Conflict),
        (status = 413, response = TooLarge), (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
async fn commit(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Path(id): Path<String>,
    Json(req): Json<CommitUpload>,
) -> ApiResult<impl IntoResponse> {
    let c = caller(&reg, &p)?;
    Ok(Json(blocking(move || reg.commit(&c, &id, req)).await?))
}

/// Discards an upload and the chunks it added (unless something else needs them).
///
/// Needs: the upload's owner.
#[utoipa::path(delete, path = "/v1/uploads/{id}", tag = "uploads",
    params(UploadPath),
    responses(
        (status = 204, description = "Discarded"),
        (status = 403, response = Forbidden), (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
)]
async fn abort(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let c = caller(&reg, &p)?;
    reg.abort_upload(&c, &id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The models the caller may read.
///
/// Anyone (a caller without roles gets an empty list).
#[utoipa::path(get, path = "/v1/models", tag = "models",
    responses(
        (status = 200, description = "The models the caller may read", body = Vec<ModelSummary>),
        (status = 403, response = Forbidden),
    ),
)]
async fn list_models(State(reg): Reg, ConnectInfo(p): PeerInfo) -> ApiResult<impl IntoResponse> {
    Ok(Json(reg.list_models(&caller(&reg, &p)?)))
}

/// A model's versions.
///
/// Needs read on the model.
#[utoipa::path(get, path = "/v1/models/{name}", tag = "models",
    params(ModelPath),
    responses(
        (status = 200, description = "The model's versions", body = Vec<VersionSummary>),
        (status = 400, response = BadRequest), (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
async fn list_versions(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let name: ModelName = parse(&name)?;
    Ok(Json(reg.list_versions(&caller(&reg, &p)?, &name)?))
}

/// One version: metadata, files, signer, status, history and approvals.
///
/// Needs read on the model. `signer` is null for an unsigned version.
#[utoipa::path(get, path = "/v1/models/{name}/versions/{version}", tag = "models",
    params(ModelPath, ("version" = ModelVersion, Path, description = "The version")),
    responses(
        (status = 200, description = "The version", body = VersionInfo),
        (status = 400, response = BadRequest), (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
async fn show(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let (name, version): (ModelName, ModelVersion) = (parse(&name)?, parse(&version)?);
    Ok(Json(reg.show(&caller(&reg, &p)?, &name, &version)?))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct PathQuery {
    /// The file's path inside the version.
    path: RelPath,
}

/// A file's bytes, each chunk verified before it is sent.
///
/// Needs read on the model; refused for a model this daemon's `--environment` does not serve.
/// The first chunk is verified before the response starts (a failure is a 422 naming file and
/// chunk); a later failure cuts the body short, which the client detects by length and digest.
/// Every read is an `access` event.
//
// The file's chunks stay pinned until the stream ends or its client goes away, so a deletion
// and a collection meanwhile neither cut it nor pass for damage.
#[utoipa::path(get, path = "/v1/models/{name}/versions/{version}/file", tag = "models",
    params(ModelPath, ("version" = ModelVersion, Path, description = "The version"), PathQuery),
    responses(
        (status = 200, description = "The file's bytes", content(("application/octet-stream")),
            headers(("content-length" = u64, description = "The file's size"))),
        (status = 400, response = BadRequest), (status = 403, response = Forbidden),
        (status = 404, response = NotFound), (status = 422, response = Integrity),
        (status = 500, response = Internal), (status = 503, response = Unavailable),
    ),
)]
async fn read_file(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Path((name, version)): Path<(String, String)>,
    Query(q): Query<PathQuery>,
) -> ApiResult<Response> {
    let (name, version): (ModelName, ModelVersion) = (parse(&name)?, parse(&version)?);
    let c = caller(&reg, &p)?;
    let (file, pins) = reg.file_chunks(&c, &name, &version, &q.path)?;
    // Each item: a chunk's bytes, or why it failed and the code that says so.
    type Item = Result<bytes::Bytes, (ErrorCode, String)>;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Item>(4);
    let path = file.entry.path.clone();
    tokio::task::spawn_blocking(move || {
        let _pins = pins;
        for cr in &file.chunks {
            let item = reg.read_chunk(&cr.id, cr.len).map(bytes::Bytes::from).map_err(|e| {
                let why = format!("file {}: chunk {}: {e}", file.entry.path, cr.id);
                if let ChunkReadError::Unavailable(_) = e {
                    // A fleet host whose object store did not deliver an uncached chunk: an
                    // outage, not damage, so neither an integrity failure nor an audit event.
                    tracing::warn!(model = %name, version = %version, file = %file.entry.path, chunk = %cr.id, "chunk unavailable while serving: {e}");
                    return (ErrorCode::Unavailable, format!("the fleet's object store is unavailable: {why}"));
                }
                tracing::error!(arca_event = arca_core::audit::EventKind::IntegrityViolation.as_str(), model = %name, version = %version, file = %file.entry.path, chunk = %cr.id, "integrity failure while serving: {e}");
                reg.integrity_event("get", &name, &version, Some(&file.entry.path), Some(&cr.id), &e.to_string());
                (ErrorCode::IntegrityFailure, format!("integrity failure: {why}"))
            });
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    // The first chunk is verified before the response starts, so a damaged file (or one the
    // fleet's store cannot deliver now) usually fails with a proper error naming it; a later
    // failure can only cut the body short.
    let first = match rx.recv().await {
        Some(Err((code, why))) => return Err(ApiError(code, why)),
        other => other,
    };
    let rest =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    let stream = futures_util::stream::iter(first)
        .chain(rest)
        .map_err(move |(_, why)| std::io::Error::other(format!("{path}: {why}")));
    Response::builder()
        .header("content-type", "application/octet-stream")
        .header("content-length", file.entry.size)
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError(ErrorCode::Internal, e.to_string()))
}

/// A signed approval of a version for production, under a ticket.
///
/// Needs promote on the model. Refused if the approver published the version (four eyes), the
/// key is not trusted for the caller, or the signature does not match this name, version, root
/// and ticket (docs/format.md); the same approver and ticket again counts once.
#[utoipa::path(post, path = "/v1/models/{name}/versions/{version}/approvals", tag = "lifecycle",
    params(ModelPath, ("version" = ModelVersion, Path, description = "The version")),
    request_body = Approve,
    responses(
        (status = 200, description = "The version, with its valid approvals", body = VersionInfo),
        (status = 400, response = BadRequest), (status = 403, response = Forbidden),
        (status = 404, response = NotFound), (status = 413, response = TooLarge),
        (status = 500, response = Internal), (status = 503, response = Unavailable),
    ),
)]
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

/// Moves a version along its lifecycle.
///
/// Needs promote on the model. development→staging, staging→production or development,
/// production→deprecated, deprecated→archived; production needs the approvals its policy
/// requires, and deprecates the previous production version in the same write.
#[utoipa::path(post, path = "/v1/models/{name}/versions/{version}/promote", tag = "lifecycle",
    params(ModelPath, ("version" = ModelVersion, Path, description = "The version")),
    request_body = Promote,
    responses(
        (status = 200, description = "The version after the change", body = VersionInfo),
        (status = 400, response = BadRequest), (status = 403, response = Forbidden),
        (status = 404, response = NotFound), (status = 413, response = TooLarge),
        (status = 500, response = Internal), (status = 503, response = Unavailable),
    ),
)]
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

/// Puts an earlier production version back in production.
///
/// Needs rollback on the model. The current production version becomes deprecated in the same
/// write; no new approval is needed.
#[utoipa::path(post, path = "/v1/models/{name}/rollback", tag = "lifecycle",
    params(ModelPath),
    request_body = Rollback,
    responses(
        (status = 200, description = "The version now in production", body = VersionInfo),
        (status = 400, response = BadRequest), (status = 403, response = Forbidden),
        (status = 404, response = NotFound), (status = 413, response = TooLarge),
        (status = 500, response = Internal), (status = 503, response = Unavailable),
    ),
)]
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

/// A model's status changes in order, and each version's parent chain.
///
/// Needs read on the model.
#[utoipa::path(get, path = "/v1/models/{name}/history", tag = "lifecycle",
    params(ModelPath),
    responses(
        (status = 200, description = "The model's history", body = History),
        (status = 400, response = BadRequest), (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
async fn history(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let name: ModelName = parse(&name)?;
    Ok(Json(reg.history(&caller(&reg, &p)?, &name)?))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct VerifyQuery {
    /// Only this version (default: every version of the model).
    #[param(value_type = Option<ModelVersion>)]
    version: Option<String>,
    /// Answer as NDJSON `VerifyLine`s, progress first (`arca verify` on a terminal).
    #[serde(default)]
    progress: bool,
}

/// Re-reads and checks every chunk of a model (or one version), and its records.
///
/// Needs read on the model. With `progress=true` the answer is `application/x-ndjson`: one
/// `VerifyLine` per line, `progress` lines (the first at 0, then at most every 100 ms), then one
/// `report`, or one `error` if the check failed after its answer began (a refusal or an unknown
/// model is still a plain error status).
#[utoipa::path(post, path = "/v1/models/{name}/verify", tag = "models",
    params(ModelPath, VerifyQuery),
    responses(
        (status = 200,
            description = "The report; with `progress=true`, NDJSON lines ending in one `report` or `error` line",
            content(
                (VerifyReport = "application/json"),
                (VerifyLine = "application/x-ndjson"),
            )),
        (status = 400, response = BadRequest), (status = 403, response = Forbidden),
        (status = 404, response = NotFound), (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
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

/// The trusted signing keys.
///
/// Needs some role.
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses(
        (status = 200, description = "The trusted keys", body = Vec<TrustedKey>),
        (status = 403, response = Forbidden), (status = 500, response = Internal),
    ),
)]
async fn list_keys(State(reg): Reg, ConnectInfo(p): PeerInfo) -> ApiResult<impl IntoResponse> {
    let c = caller(&reg, &p)?;
    Ok(Json(blocking(move || reg.list_keys(&c)).await?))
}

/// Trusts a public key for a user (a name or a uid).
///
/// Needs admin on `*`.
#[utoipa::path(post, path = "/v1/keys", tag = "keys",
    request_body = TrustKey,
    responses(
        (status = 200, description = "The key, now trusted", body = TrustedKey),
        (status = 400, response = BadRequest), (status = 403, response = Forbidden),
        (status = 404, response = NotFound), (status = 409, response = Conflict),
        (status = 413, response = TooLarge), (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
async fn trust_key(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Json(req): Json<TrustKey>,
) -> ApiResult<impl IntoResponse> {
    let c = caller(&reg, &p)?;
    Ok(Json(blocking(move || reg.trust_key(&c, req)).await?))
}

/// Stops trusting a user's key, named by its fingerprint.
///
/// Needs admin on `*`. Versions it signed then fail `verify` and its approvals stop counting.
#[utoipa::path(post, path = "/v1/keys/untrust", tag = "keys",
    request_body = UntrustKey,
    responses(
        (status = 200, description = "The key that is no longer trusted", body = TrustedKey),
        (status = 400, response = BadRequest), (status = 403, response = Forbidden),
        (status = 404, response = NotFound), (status = 413, response = TooLarge),
        (status = 500, response = Internal), (status = 503, response = Unavailable),
    ),
)]
async fn untrust_key(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Json(req): Json<arca_core::api::UntrustKey>,
) -> ApiResult<impl IntoResponse> {
    let c = caller(&reg, &p)?;
    Ok(Json(blocking(move || reg.untrust_key(&c, req)).await?))
}

/// The store's figures and the mount's counters.
///
/// Needs some role; a caller without read on every model gets the counts of the versions it may
/// read.
#[utoipa::path(get, path = "/v1/store/stats", tag = "operations",
    responses(
        (status = 200, description = "The figures", body = StoreStats),
        (status = 403, response = Forbidden), (status = 500, response = Internal),
    ),
)]
async fn stats(State(reg): Reg, ConnectInfo(p): PeerInfo) -> ApiResult<impl IntoResponse> {
    let c = caller(&reg, &p)?;
    Ok(Json(blocking(move || reg.store_stats(&c)).await?))
}

/// Deletes a version record; its chunks become GC candidates in the same write.
///
/// Needs delete on the model. Refused (`bad_request`) for a production version and for the
/// parent of another version.
#[utoipa::path(delete, path = "/v1/models/{name}/versions/{version}", tag = "lifecycle",
    params(VersionPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, response = BadRequest), (status = 403, response = Forbidden),
        (status = 404, response = NotFound), (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
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

/// A model's policy (`explicit` false while it runs on the defaults).
///
/// Needs read on the model.
#[utoipa::path(get, path = "/v1/models/{name}/policy", tag = "access",
    params(ModelPath),
    responses(
        (status = 200, description = "The policy", body = PolicyInfo),
        (status = 400, response = BadRequest), (status = 403, response = Forbidden),
    ),
)]
async fn policy(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let name: ModelName = parse(&name)?;
    Ok(Json(reg.policy(&caller(&reg, &p)?, &name)?))
}

/// Changes a model's policy; absent fields keep their value. Takes effect at once.
///
/// Needs admin on the model. Refused (`bad_request`): `approvals` 0 while approval is required
/// or above 16, `max_versions` 0, no environments, an environment name not 1-64 letters, digits,
/// `-` or `_`.
#[utoipa::path(put, path = "/v1/models/{name}/policy", tag = "access",
    params(ModelPath),
    request_body = PolicyUpdate,
    responses(
        (status = 200, description = "The policy as changed", body = PolicyInfo),
        (status = 400, response = BadRequest), (status = 403, response = Forbidden),
        (status = 413, response = TooLarge), (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
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

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct RolesQuery {
    /// Only the assignments of this user (a name or a uid) and of its groups, with its
    /// effective permissions.
    user: Option<String>,
    /// Only the assignments for this model or `*`.
    #[param(value_type = Option<ModelName>)]
    model: Option<String>,
}

/// Role assignments, and a user's effective permissions.
///
/// Needs admin on `model`, or on `*` without it.
#[utoipa::path(get, path = "/v1/roles", tag = "access",
    params(RolesQuery),
    responses(
        (status = 200, description = "The matching assignments", body = RoleListing),
        (status = 400, response = BadRequest), (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
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

/// Assigns a role to a user, a uid or `group:NAME`, on a model or (without `model`) on `*`.
///
/// Needs admin on `model`, or on `*` without it.
#[utoipa::path(post, path = "/v1/roles", tag = "access",
    request_body = RoleChange,
    responses(
        (status = 200, description = "The new assignment", body = RoleAssignment),
        (status = 400, response = BadRequest), (status = 403, response = Forbidden),
        (status = 404, response = NotFound), (status = 409, response = Conflict),
        (status = 413, response = TooLarge), (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
async fn assign_role(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Json(req): Json<RoleChange>,
) -> ApiResult<impl IntoResponse> {
    let c = caller(&reg, &p)?;
    Ok(Json(blocking(move || reg.assign_role(&c, req)).await?))
}

/// Revokes a role assignment; 404 unless that principal has that role on exactly that scope.
///
/// Needs admin on `model`, or on `*` without it.
#[utoipa::path(post, path = "/v1/roles/revoke", tag = "access",
    request_body = RoleChange,
    responses(
        (status = 200, description = "The removed assignment", body = RoleAssignment),
        (status = 400, response = BadRequest), (status = 403, response = Forbidden),
        (status = 404, response = NotFound), (status = 413, response = TooLarge),
        (status = 500, response = Internal), (status = 503, response = Unavailable),
    ),
)]
async fn revoke_role(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Json(req): Json<RoleChange>,
) -> ApiResult<impl IntoResponse> {
    let c = caller(&reg, &p)?;
    Ok(Json(blocking(move || reg.revoke_role(&c, req)).await?))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// Only events of this model.
    #[param(value_type = Option<ModelName>)]
    model: Option<String>,
    /// Only events of this version.
    version: Option<String>,
    /// Only events of this type.
    #[serde(rename = "type")]
    #[param(value_type = Option<EventKind>)]
    kind: Option<String>,
    /// Only events by this user (account name).
    user: Option<String>,
    /// Milliseconds since the epoch, inclusive.
    since: Option<u64>,
    /// Milliseconds since the epoch, inclusive.
    until: Option<u64>,
    /// How many of the newest matching events (default 1000; 0 or more than 100000 means
    /// 100000).
    limit: Option<usize>,
}

/// The newest `limit` audit events matching every filter given, oldest first.
///
/// Needs read on `model`, or admin on `*` without it.
#[utoipa::path(get, path = "/v1/audit", tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "The matching events, oldest first", body = Vec<AuditEvent>),
        (status = 400, response = BadRequest), (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    ),
)]
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

/// Checks every event, link and signed checkpoint of the audit trail.
///
/// Needs admin on `*`. A broken trail is still 200, with `ok` false and `fault` naming the first
/// bad event.
#[utoipa::path(post, path = "/v1/audit/verify", tag = "audit",
    responses(
        (status = 200, description = "The result of the check (also when the trail is broken)",
            body = AuditVerify),
        (status = 403, response = Forbidden), (status = 500, response = Internal),
    ),
)]
async fn audit_verify(State(reg): Reg, ConnectInfo(p): PeerInfo) -> ApiResult<impl IntoResponse> {
    let c = caller(&reg, &p)?;
    Ok(Json(blocking(move || reg.audit_verify(&c)).await?))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ReportQuery {
    /// Milliseconds since the epoch, inclusive.
    from: u64,
    /// Milliseconds since the epoch, inclusive.
    to: u64,
}

/// A compliance report of a model's events in `[from, to]`.
///
/// Needs read on the model.
#[utoipa::path(get, path = "/v1/audit/report/{name}", tag = "audit",
    params(ModelPath, ReportQuery),
    responses(
        (status = 200, description = "The report", body = ComplianceReport),
        (status = 400, response = BadRequest), (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    ),
)]
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

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct GcQuery {
    /// Report what would be removed, writing nothing.
    #[serde(default)]
    dry_run: bool,
}

/// Garbage collection: archived versions past retention, then unreferenced chunks.
///
/// Needs admin on `*`. With `dry_run=true`, reports the same without writing.
#[utoipa::path(post, path = "/v1/gc", tag = "operations",
    params(GcQuery),
    responses(
        (status = 200, description = "What was (or, with dry_run, would be) removed",
            body = GcReport),
        (status = 400, response = BadRequest), (status = 403, response = Forbidden),
        (status = 409, response = Conflict), (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
async fn gc(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Query(q): Query<GcQuery>,
) -> ApiResult<impl IntoResponse> {
    let c = caller(&reg, &p)?;
    Ok(Json(blocking(move || reg.gc(Some(&c), q.dry_run)).await?))
}

/// Pins a version in this fleet host's chunk cache: its chunks are fetched now and never
/// evicted, whatever the cache's limit.
///
/// Needs admin on `*` (a pin spends this host's disk, which every model on it shares). A
/// single host answers `bad_request`. Returns this host's pins.
#[utoipa::path(put, path = "/v1/fleet/pins/{name}/{version}", tag = "operations",
    params(VersionPath),
    responses(
        (status = 200, description = "Pinned; this host's pins", body = Vec<arca_core::api::FleetPin>),
        (status = 400, response = BadRequest), (status = 403, response = Forbidden),
        (status = 404, response = NotFound), (status = 409, response = Conflict),
        (status = 500, response = Internal),
    ),
)]
async fn fleet_pin(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Path(v): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    set_fleet_pin(reg, p, v, true).await
}

/// `fleet_pin` and `fleet_unpin`.
async fn set_fleet_pin(
    reg: Arc<Registry>,
    p: Peer,
    (name, version): (String, String),
    pin: bool,
) -> ApiResult<Json<Vec<arca_core::api::FleetPin>>> {
    let (name, version): (ModelName, ModelVersion) = (parse(&name)?, parse(&version)?);
    let c = caller(&reg, &p)?;
    Ok(Json(
        blocking(move || reg.set_cache_pin(&c, &name, &version, pin)).await?,
    ))
}

/// Unpins a version in this fleet host's chunk cache: its chunks may be evicted again (unless
/// it is production or staging).
///
/// Needs admin on `*`. Returns this host's pins.
#[utoipa::path(delete, path = "/v1/fleet/pins/{name}/{version}", tag = "operations",
    params(VersionPath),
    responses(
        (status = 200, description = "Unpinned; this host's pins", body = Vec<arca_core::api::FleetPin>),
        (status = 400, response = BadRequest), (status = 403, response = Forbidden),
        (status = 404, response = NotFound), (status = 500, response = Internal),
    ),
)]
async fn fleet_unpin(
    State(reg): Reg,
    ConnectInfo(p): PeerInfo,
    Path(v): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    set_fleet_pin(reg, p, v, false).await
}

/// How the daemon and its store are doing: counts only, no names.
///
/// Needs some role; a caller without read on every model gets the counts of what it may read,
/// and no `disk_bytes` or `gc_candidates`.
#[utoipa::path(get, path = "/v1/status", tag = "operations",
    responses(
        (status = 200, description = "The status", body = StatusReport),
        (status = 403, response = Forbidden), (status = 500, response = Internal),
    ),
)]
async fn status(State(reg): Reg, ConnectInfo(p): PeerInfo) -> ApiResult<impl IntoResponse> {
    let c = caller(&reg, &p)?;
    let mount = reg.mountpoint();
    Ok(Json(
        blocking(move || reg.status(&c, mount.as_deref())).await?,
    ))
}

/// A new key-encryption key, and every wrapped key rewrapped under it in one synced write.
///
/// Needs admin on `*`. Data keys are not changed.
#[utoipa::path(post, path = "/v1/keys/rotate-kek", tag = "keys",
    responses(
        (status = 200, description = "The key-encryption key was rotated", body = KekRotated),
        (status = 400, response = BadRequest), (status = 403, response = Forbidden),
        (status = 409, response = Conflict), (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
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

/// A new data key, current at once; chunks and records are re-sealed in the background.
///
/// Needs admin on `*`. Asked while a rotation is unfinished, it resumes that one; a request
/// racing another's start gets `already_exists`.
#[utoipa::path(post, path = "/v1/keys/rotate-dek", tag = "keys",
    responses(
        (status = 200, description = "The rotation's progress", body = RotationProgress),
        (status = 403, response = Forbidden), (status = 409, response = Conflict),
        (status = 500, response = Internal), (status = 503, response = Unavailable),
    ),
)]
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

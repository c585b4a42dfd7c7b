//! The control API's OpenAPI 3.1 document: what surrounds the operations. The operations
//! themselves come from the `#[utoipa::path]` annotations on the handlers in `server.rs`, which
//! also build the router (utoipa-axum), and the schemas from the types in `arca-core`; so the
//! document cannot list a route that is not served, nor miss one that is. Served at
//! `GET /v1/openapi.json` and printed by `arcad --openapi`; `docs/openapi.json` is a copy that a
//! test keeps equal to it.

use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{InfoBuilder, OpenApi, ServerBuilder};

/// What the document says before its operations. Identity, errors and who may read what are
/// stated once here; docs/api.md has the full rules.
const DESCRIPTION: &str = r#"arcad's control API, version 1: HTTP/1.1 over arcad's Unix socket (`/run/arca/arcad.sock` on a host installed from the Debian package or by `scripts/install.sh`, `/var/tmp/arca-dev/arcad.sock` for a trial daemon), JSON bodies unless an operation says otherwise. Try it with `curl --unix-socket /run/arca/arcad.sock http://arca/v1/openapi.json`.

**Identity** is the socket's peer credentials (uid, gid and pid from SO_PEERCRED, supplementary groups from SO_PEERGROUPS), never anything in a request; so this document declares no security scheme. A request whose credentials cannot be read is refused (403 `permission_denied`). Root, arcad's own user and configured admins are bootstrap admins; everyone else may do what their roles (`viewer`, `developer`, `ml_engineer`, `ml_admin`, per model or on `*`) grant. Each operation says which permission it needs; a refusal for permission, policy, four eyes, approvals or a signature changes nothing but appends a `refusal` event to the audit trail.

**Errors** are a non-2xx status with an `ErrorBody` `{"code", "message"}`: `bad_request` and `digest_mismatch` (400), `permission_denied`, `signature_mismatch` and `untrusted_signer` (403), `not_found` (404), `already_exists` (409), `integrity_failure` (422), `internal` (500, details only in the daemon's log), `unavailable` (503: a fleet host's object store cannot be reached or its replica halted; nothing changed). A JSON body over 2 MB is refused with 413 (plain text, from the HTTP layer), request headers over 64 KiB with 431.

**This document** is served to anyone who can connect to the socket, without a role and without an audit event: it describes the API, not the store, and is the same on every host running this version. `docs/api.md` describes every route in prose, with the rules behind each refusal."#;

/// The document's frame: info, the socket as its server, and the tags operations are grouped by.
pub fn base() -> OpenApi {
    let mut doc = OpenApi::new(
        InfoBuilder::new()
            .title("arcad control API")
            .version("1")
            .description(Some(DESCRIPTION))
            .license(Some(
                utoipa::openapi::LicenseBuilder::new()
                    .name("Apache-2.0")
                    .identifier(Some("Apache-2.0"))
                    .build(),
            ))
            .build(),
        utoipa::openapi::Paths::new(),
    );
    doc.servers = Some(vec![ServerBuilder::new()
        .url("http://arca")
        .description(Some(
            "arcad's Unix socket: the host name is not used (curl --unix-socket SOCKET http://arca/...)",
        ))
        .build()]);
    doc.tags = Some(
        [
            ("caller", "Who the caller is, and this document."),
            ("uploads", "A push: an upload, its files, its commit."),
            (
                "models",
                "Reading models, versions and files; verifying them.",
            ),
            (
                "lifecycle",
                "Approvals, promotions, rollbacks, history and deletion.",
            ),
            ("access", "Roles and per-model policies."),
            (
                "keys",
                "Trusted signing keys and the store's key rotations.",
            ),
            ("audit", "The tamper-evident audit trail."),
            (
                "operations",
                "Garbage collection, status, figures and metrics.",
            ),
        ]
        .into_iter()
        .map(|(name, what)| TagBuilder::new().name(name).description(Some(what)).build())
        .collect(),
    );
    let components = doc.components.get_or_insert_with(Default::default);
    for (name, response) in errors::all() {
        components.responses.insert(name.to_string(), response);
    }
    doc
}

/// The document as served, printed and committed: pretty JSON with a final newline, from
/// `server::openapi()` with the unsigned integers' real bounds (below).
pub fn json() -> String {
    let generated = crate::server::openapi()
        .to_json()
        .expect("an OpenAPI document always serializes");
    let mut doc: Ordered = serde_json::from_str(&generated).expect("utoipa's JSON reads back");
    unsigned_bounds(&mut doc);
    let mut s = serde_json::to_string_pretty(&doc).expect("JSON values always serialize");
    s.push('\n');
    s
}

/// A JSON value that keeps its objects' key order, so the rewritten document reads as utoipa
/// wrote it (properties in declaration order). serde_json's `Value` sorts keys, and its
/// `preserve_order` must stay off in this workspace: the metadata digest relies on the sorting.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum Ordered {
    Null,
    Bool(bool),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Text(String),
    List(Vec<Ordered>),
    Map(indexmap::IndexMap<String, Ordered>),
}

/// utoipa writes a `u32` as `format: int32` and a `u64` (or `usize`) as `format: int64`, both
/// with `minimum: 0`: the signed formats' upper bounds, which the daemon does not keep (the
/// contract test sent 2^63 to a `u64` and had it accepted, against the document). Each such
/// schema gets `uint32` or `uint64` and its real maximum instead. (utoipa's own unsigned formats
/// print as `u-int32` and `u-int64`.) Signed integers have no `minimum: 0` and are left alone.
fn unsigned_bounds(v: &mut Ordered) {
    match v {
        Ordered::Map(m) => {
            let integer = match m.get("type") {
                Some(Ordered::Text(t)) => t == "integer",
                Some(Ordered::List(ts)) => ts
                    .iter()
                    .any(|t| matches!(t, Ordered::Text(t) if t == "integer")),
                _ => false,
            };
            if integer && matches!(m.get("minimum"), Some(Ordered::Unsigned(0))) {
                let unsigned = match m.get("format") {
                    Some(Ordered::Text(f)) if f == "int32" => Some(("uint32", u64::from(u32::MAX))),
                    Some(Ordered::Text(f)) if f == "int64" => Some(("uint64", u64::MAX)),
                    _ => None,
                };
                if let Some((format, max)) = unsigned {
                    m.insert("format".into(), Ordered::Text(format.into()));
                    m.insert("maximum".into(), Ordered::Unsigned(max));
                }
            }
            m.values_mut().for_each(unsigned_bounds);
        }
        Ordered::List(a) => a.iter_mut().for_each(unsigned_bounds),
        _ => {}
    }
}

/// The path parameters operations name in their `params(...)`. The handlers read them as strings
/// and parse them themselves (a malformed one is a 400 `bad_request`); these only describe.
#[allow(dead_code)]
pub mod params {
    use arca_core::{ModelName, ModelVersion};

    #[derive(utoipa::IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct Model {
        /// The model's name.
        name: ModelName,
    }

    #[derive(utoipa::IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct Version {
        /// The model's name.
        name: ModelName,
        /// The version.
        version: ModelVersion,
    }

    #[derive(utoipa::IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct Upload {
        /// The upload's id, from `POST /v1/uploads`.
        id: String,
    }
}

/// The error answers operations list in their `responses(...)` (as `(status = 403, response =
/// Forbidden)`), each an `ErrorBody` (or, for 413, the HTTP layer's plain text), kept once in the
/// document's `components/responses`. Never built: they only describe.
#[allow(dead_code)]
pub mod errors {
    use arca_core::api::ErrorBody;

    /// `bad_request`: a malformed name, version, path, query or body, or a request the rules
    /// refuse as invalid; `digest_mismatch`: what was uploaded is not what was signed.
    #[derive(utoipa::ToResponse)]
    pub struct BadRequest(ErrorBody);

    /// `permission_denied`: the caller lacks the permission (or role) the operation needs, or
    /// its credentials could not be read; `signature_mismatch`, `untrusted_signer`: a signature
    /// that does not verify, or a key not trusted for the caller.
    #[derive(utoipa::ToResponse)]
    pub struct Forbidden(ErrorBody);

    /// `not_found`: no such model, version, file, upload, user, role assignment or key.
    #[derive(utoipa::ToResponse)]
    pub struct NotFound(ErrorBody);

    /// `already_exists`.
    #[derive(utoipa::ToResponse)]
    pub struct Conflict(ErrorBody);

    /// The JSON body is larger than 2 MB (plain text, from the HTTP layer).
    #[derive(utoipa::ToResponse)]
    #[response(content_type = "text/plain")]
    pub struct TooLarge(String);

    /// `integrity_failure`: stored data failed verification (the message names file and chunk).
    #[derive(utoipa::ToResponse)]
    pub struct Integrity(ErrorBody);

    /// `internal`: the store failed (details only in the daemon's log); nothing was changed.
    #[derive(utoipa::ToResponse)]
    pub struct Internal(ErrorBody);

    /// `unavailable`: this fleet host cannot reach its object store, or its replica of the
    /// shared log halted; nothing was changed.
    #[derive(utoipa::ToResponse)]
    pub struct Unavailable(ErrorBody);

    /// Every one of them, for the document's components.
    pub fn all() -> Vec<(
        &'static str,
        utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
    )> {
        use utoipa::ToResponse;
        let mut v = Vec::new();
        macro_rules! add {
            ($($t:ty),*) => {$({
                let (name, r) = <$t>::response();
                v.push((name, r));
            })*};
        }
        add!(
            BadRequest,
            Forbidden,
            NotFound,
            Conflict,
            TooLarge,
            Integrity,
            Internal,
            Unavailable
        );
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What regenerates `docs/openapi.json`, printed when it is stale.
    const REGENERATE: &str = "cargo run --release --bin arcad -- --openapi > docs/openapi.json";

    #[test]
    fn committed_document_is_the_generated_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; generate it with: {REGENERATE}", path.display()));
        let generated = json();
        if committed != generated {
            let line = committed
                .lines()
                .zip(generated.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()))
                + 1;
            panic!(
                "docs/openapi.json differs from the document arcad generates (first at line {line}): \
                 the API changed without it. Regenerate it with:\n  {REGENERATE}\nand commit it."
            );
        }
    }

    /// Every operation says what it is, answers with a described success, and lists the 403 that
    /// any caller may get; every error response it names is one of the shared ones.
    #[test]
    fn every_operation_is_described() {
        let doc: serde_json::Value = serde_json::from_str(&json()).expect("JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().expect("paths");
        let mut ops = 0;
        for (path, item) in paths {
            for (method, op) in item.as_object().expect("path item") {
                let what = format!("{method} {path}");
                ops += 1;
                assert!(
                    op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                    "{what}: no summary"
                );
                assert!(
                    op["tags"].as_array().is_some_and(|t| t.len() == 1),
                    "{what}: no tag"
                );
                let responses = op["responses"].as_object().expect("responses");
                assert!(
                    responses.iter().any(|(code, r)| code.starts_with('2')
                        && r["description"].as_str().is_some_and(|d| !d.is_empty())),
                    "{what}: no described success"
                );
                if path != "/v1/openapi.json" {
                    assert!(responses.contains_key("403"), "{what}: no 403");
                }
                for (code, r) in responses.iter().filter(|(c, _)| !c.starts_with('2')) {
                    let target = r["$ref"].as_str().unwrap_or_default();
                    assert!(
                        target.starts_with("#/components/responses/"),
                        "{what}: {code} is not a shared error response"
                    );
                }
            }
        }
        assert!(ops >= 30, "only {ops} operations");
    }
}

//! The request extractors of the control API's handlers: axum's `Json`, `Query` and `Path`, whose
//! refusals are answered like every other refusal, a 400 `ErrorBody` (`bad_request`) naming what
//! was wrong, instead of axum's plain text (and its 415 and 422). So the API keeps one error
//! contract, the one docs/openapi.json states; the contract test found the plain-text answers. A
//! JSON body over the limit keeps axum's 413, which the document lists as the HTTP layer's.
//!
//! They carry axum's names so the handlers read as ordinary axum; `Json` also answers, as
//! axum's does.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use arca_core::api::ErrorCode;

use crate::server::ApiError;

fn refused(why: String) -> Response {
    ApiError(ErrorCode::BadRequest, why).into_response()
}

/// A JSON body (`Content-Type: application/json`), or a JSON answer.
///
/// The body must be a JSON object. serde also reads a struct from an array of its fields in
/// order, so without this check `[null, null]` passed for a `PolicyUpdate` and changed a policy
/// (found by the contract test); the document says every body is an object.
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let value = match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(v)) => v,
            Err(JsonRejection::BytesRejection(e))
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                return Err(e.into_response())
            }
            Err(e) => return Err(refused(e.body_text())),
        };
        if !value.is_object() {
            return Err(refused("the request body must be a JSON object".into()));
        }
        serde_json::from_value(value)
            .map(Json)
            .map_err(|e| refused(format!("invalid request body: {e}")))
    }
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// The query string.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| refused(e.body_text()))
    }
}

/// The path's parameters.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| refused(e.body_text()))
    }
}

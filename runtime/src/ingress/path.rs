//! Path parameters, refused in JSON like every other bad input (axum's own
//! `Path` rejection answers in plain text).

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::IngressError;

/// A route's path parameters, as `Path<T>` has them; 400 `bad_request`
/// for parameters that do not decode (an escape that is not UTF-8, say).
pub(crate) struct Params<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Params<T> {
    type Rejection = IngressError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, IngressError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(params)) => Ok(Params(params)),
            Err(PathRejection::FailedToDeserializePathParams(error)) => {
                Err(IngressError::bad(error.body_text()))
            }
            // A route without the parameters its handler takes: a bug here.
            Err(other) => Err(IngressError::Internal {
                detail: other.body_text(),
            }),
        }
    }
}

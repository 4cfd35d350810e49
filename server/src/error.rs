//! The one error type of the REST API and its JSON body:
//! `{"error": "validation_failed", "message": "...", "fields": {...}}`.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use courier_engine::{EngineError, StoreError};
use serde::Serialize;

/// The machine-readable error codes of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request could not be read (malformed JSON, wrong types).
    BadRequest,
    /// Well-formed but invalid input; `fields` says which.
    ValidationFailed,
    /// Missing, bad or expired credentials.
    Unauthorized,
    /// Authenticated, but not allowed.
    Forbidden,
    /// No such resource, or not visible to the caller.
    NotFound,
    /// The path exists, but not with this method; `Allow` lists those it answers.
    MethodNotAllowed,
    /// Contradicts stored state (a taken username).
    Conflict,
    /// The body is larger than accepted.
    PayloadTooLarge,
    /// Too many requests; see `Retry-After`.
    RateLimited,
    /// A dependency is down; retry later.
    Unavailable,
    /// Something unexpected; the cause is logged, not shown.
    Internal,
}

/// An API error: a code, a human message, and per-field reasons for validation errors.
#[derive(Debug)]
pub struct ApiError {
    /// What went wrong, for machines.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
    /// For `validation_failed`: field name to reasons.
    pub fields: Option<BTreeMap<String, Vec<String>>>,
    /// For `rate_limited`: seconds until a retry can succeed.
    pub retry_after_s: Option<u64>,
    /// For `rate_limited` on REST: the limit's `RateLimit-*` fields.
    pub rate_limit: Option<crate::limits::Standing>,
}

/// The body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable code.
    pub error: ErrorCode,
    /// A human-readable explanation.
    pub message: String,
    /// For `validation_failed`: each invalid field and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<BTreeMap<String, Vec<String>>>,
}

impl ApiError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            fields: None,
            retry_after_s: None,
            rate_limit: None,
        }
    }

    /// 401 with a message.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    /// 404 with a message.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// 422 for one field.
    pub fn invalid_field(field: &str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        let mut fields = BTreeMap::new();
        fields.insert(field.to_owned(), vec![reason.clone()]);
        Self {
            fields: Some(fields),
            ..Self::new(ErrorCode::ValidationFailed, format!("{field}: {reason}"))
        }
    }

    /// 500, logging the cause and showing nothing of it.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(ErrorCode::Internal, "an unexpected error occurred")
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self.code {
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::ValidationFailed => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let Some(seconds) = self.retry_after_s {
            response.insert_header(("Retry-After", seconds.to_string()));
        }
        let mut response = response.json(ErrorBody {
            error: self.code,
            message: self.message.clone(),
            fields: self.fields.clone(),
        });
        if let Some(standing) = self.rate_limit {
            standing.write_headers(response.headers_mut());
        }
        response
    }
}

impl From<validator::ValidationErrors> for ApiError {
    fn from(errors: validator::ValidationErrors) -> Self {
        let fields: BTreeMap<String, Vec<String>> = errors
            .field_errors()
            .into_iter()
            .map(|(field, errors)| {
                let reasons = errors
                    .iter()
                    .map(|error| {
                        error
                            .message
                            .as_ref()
                            .map_or_else(|| error.code.to_string(), ToString::to_string)
                    })
                    .collect();
                (camel_case(&field), reasons)
            })
            .collect();
        let summary = fields
            .iter()
            .map(|(field, reasons)| format!("{field}: {}", reasons.join(", ")))
            .collect::<Vec<_>>()
            .join("; ");
        Self {
            fields: Some(fields),
            ..Self::new(ErrorCode::ValidationFailed, summary)
        }
    }
}

/// validator names fields as in Rust (`display_name`); the API's JSON names them in
/// camelCase (`displayName`), and `fields` must use the names the client sent.
fn camel_case(field: &str) -> String {
    let mut name = String::with_capacity(field.len());
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            name.extend(c.to_uppercase());
            upper = false;
        } else {
            name.push(c);
        }
    }
    name
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        let message = error.to_string();
        match error {
            EngineError::ConversationNotFound(_)
            | EngineError::MessageNotFound(_)
            | EngineError::UserNotFound(_) => Self::new(ErrorCode::NotFound, message),
            EngineError::Forbidden(_) => Self::new(ErrorCode::Forbidden, message),
            EngineError::Conflict(_) => Self::new(ErrorCode::Conflict, message),
            EngineError::Invalid(reason) => Self::new(ErrorCode::ValidationFailed, reason),
            EngineError::RateLimited { retry_after_ms } => Self {
                retry_after_s: Some(retry_after_ms.div_ceil(1000)),
                ..Self::new(ErrorCode::RateLimited, "too many requests")
            },
            EngineError::Unavailable(reason) => {
                tracing::warn!(%reason, "unavailable");
                Self::new(
                    ErrorCode::Unavailable,
                    "temporarily unavailable, retry shortly",
                )
            }
            EngineError::Internal(cause) => Self::internal(cause),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        EngineError::from(error).into()
    }
}

/// Maps actix's JSON extractor errors into the documented shape.
pub fn json_error(
    error: actix_web::error::JsonPayloadError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    use actix_web::error::JsonPayloadError;
    let api = match &error {
        JsonPayloadError::Overflow { limit }
        | JsonPayloadError::OverflowKnownLength { limit, .. } => ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the body is larger than {limit} bytes"),
        ),
        JsonPayloadError::ContentType => ApiError::new(
            ErrorCode::BadRequest,
            "expected Content-Type: application/json",
        ),
        other => ApiError::new(ErrorCode::BadRequest, format!("invalid JSON body: {other}")),
    };
    api.into()
}

/// Maps query-string errors into the documented shape.
pub fn query_error(
    error: actix_web::error::QueryPayloadError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::new(ErrorCode::BadRequest, format!("invalid query: {error}")).into()
}

/// Maps path errors (a non-numeric id) into the documented shape.
pub fn path_error(
    error: actix_web::error::PathError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::new(ErrorCode::NotFound, format!("no such resource: {error}")).into()
}

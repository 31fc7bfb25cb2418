//! Accounts by invitation, and password resets by a mailed link.

use crate::AppState;
use crate::extract::{Caller, ClientAddress, JsonBody};
use crate::problem::{ApiError, PublicWriteErrors, TokenErrors, WriteErrors};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wharf_core::domain::User;
use wharf_core::services::{Invitation, NewInvitation, VerifiedEmail};
use wharf_core::throttle::Counted;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(invite))
        .routes(routes!(accept_invitation))
        .routes(routes!(request_password_reset))
        .routes(routes!(reset_password))
        .routes(routes!(verify_email))
        .routes(routes!(resend_verification))
}

/// A mailed token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"token": "<from the mail>"}))]
struct MailedToken {
    /// The token from the mailed link.
    token: String,
}

/// Verify a subscriber's address with the token mailed at sign-up (valid 7 days). Notices
/// and invoices go to an address only once it is verified.
#[utoipa::path(post, path = "/v1/email-verification", tag = "identity",
    request_body = MailedToken,
    responses((status = 200, body = VerifiedEmail), TokenErrors))]
async fn verify_email(
    State(s): State<AppState>,
    ClientAddress(from): ClientAddress,
    body: JsonBody<MailedToken>,
) -> Result<Json<VerifiedEmail>, ApiError> {
    s.services.admit_from(Counted::Signup, from)?;
    Ok(Json(s.services.verify_email(&body.value.token).await?))
}

/// Mail the calling subscriber a new verification link (409 once verified).
#[utoipa::path(post, path = "/v1/me/email-verification", tag = "identity",
    security(("bearer" = [])),
    responses((status = 202, body = ResetRequested), WriteErrors))]
async fn resend_verification(
    State(s): State<AppState>,
    who: Caller,
) -> Result<(StatusCode, Json<ResetRequested>), ApiError> {
    s.services.resend_verification(&who).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ResetRequested { accepted: true }),
    ))
}

/// Invite someone to make an account with a role: `vendor_admin` or `vendor_finance` in the
/// caller's tenant (vendor admins), `platform_admin` or `platform_finance` (platform
/// admins). The link, valid 7 days, goes only to the address; the answer does not hold it.
#[utoipa::path(post, path = "/v1/invitations", tag = "identity", request_body = NewInvitation,
    security(("bearer" = [])),
    responses((status = 202, body = Invitation), WriteErrors))]
async fn invite(
    State(s): State<AppState>,
    who: Caller,
    body: JsonBody<NewInvitation>,
) -> Result<(StatusCode, Json<Invitation>), ApiError> {
    let sent = s.services.invite(&who, body.value).await?;
    Ok((StatusCode::ACCEPTED, Json(sent)))
}

/// A mailed token and the password to set with it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"token": "<from the mail>", "password": "correct horse battery"}))]
struct TokenAndPassword {
    /// The token from the mailed link.
    token: String,
    /// The password to set (at least 12 characters).
    password: String,
}

/// Accept an invitation: makes the account with the chosen password. An invitation makes one
/// account (409 once used); an expired one is a 410.
#[utoipa::path(post, path = "/v1/invitations/accept", tag = "identity",
    request_body = TokenAndPassword,
    responses((status = 201, body = User), TokenErrors))]
async fn accept_invitation(
    State(s): State<AppState>,
    ClientAddress(from): ClientAddress,
    body: JsonBody<TokenAndPassword>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    s.services.admit_from(Counted::Signup, from)?;
    let user = s
        .services
        .accept_invitation(&body.value.token, &body.value.password)
        .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// An account's address.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "ops@acme.example"}))]
struct ResetRequest {
    email: String,
}

/// What a request for a mailed link answers.
#[derive(Debug, Serialize, ToSchema)]
struct ResetRequested {
    /// `true`: the link is on its way (for a reset: if the address has an account, which is
    /// not told).
    accepted: bool,
}

/// Ask for a password reset: a single-use link, valid an hour, is mailed to the address if it
/// has an account. The answer is the same either way.
#[utoipa::path(post, path = "/v1/auth/password-reset", tag = "identity",
    request_body = ResetRequest,
    responses((status = 202, body = ResetRequested), PublicWriteErrors))]
async fn request_password_reset(
    State(s): State<AppState>,
    ClientAddress(from): ClientAddress,
    body: JsonBody<ResetRequest>,
) -> Result<(StatusCode, Json<ResetRequested>), ApiError> {
    s.services.admit_from(Counted::Signup, from)?;
    s.services.request_password_reset(&body.value.email).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ResetRequested { accepted: true }),
    ))
}

/// Set a new password with a reset link's token (once; 410 when used or expired). Every
/// session of the account ends: its refresh tokens stop working.
#[utoipa::path(post, path = "/v1/auth/password-reset/confirm", tag = "identity",
    request_body = TokenAndPassword,
    responses((status = 204, description = "The password is changed"), TokenErrors))]
async fn reset_password(
    State(s): State<AppState>,
    ClientAddress(from): ClientAddress,
    body: JsonBody<TokenAndPassword>,
) -> Result<StatusCode, ApiError> {
    s.services.admit_from(Counted::Signup, from)?;
    s.services
        .reset_password(&body.value.token, &body.value.password)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

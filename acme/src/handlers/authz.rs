//! Authorizations and challenges (RFC 8555 §7.5): reading, deactivation, and
//! the challenge response that starts a validation in the background.

use std::sync::Arc;

use http::{StatusCode, header};
use tenure_engine::Identifier;
use tenure_engine::model::{Authorization, Challenge, ChallengeStatus, RecordedError};
use tracing::Instrument;

use crate::payloads;
use crate::problem::Problem;
use crate::request::Authenticated;
use crate::resources::{authz_json, challenge_json};
use crate::routes::Call;
use crate::server::{FrontEnd, Reply};
use crate::validation::ChallengeKind;

/// An authorization: read (POST-as-GET) or deactivate.
pub fn authorization(fe: &FrontEnd, call: &Call, req: Authenticated) -> Result<Reply, Problem> {
    let authz = load_authz(fe, call.param(), &req)?;
    let authz = match req.payload_or_get::<payloads::AuthorizationUpdate>()? {
        None => authz,
        // The payload type admits only {"status": "deactivated"}.
        Some(_) => {
            let account = req.account()?.clone();
            fe.engine(move |a| a.deactivate_authorization(&account, &authz))?
        }
    };
    let mut reply = Reply::json(StatusCode::OK, &authz_json(&call.urls, &authz));
    if authz.challenges.iter().any(|c| c.status == ChallengeStatus::Processing) {
        reply = reply.header(header::RETRY_AFTER, "1");
    }
    Ok(reply)
}

/// The authorization, if it is the requesting account's.
fn load_authz(fe: &FrontEnd, id: &str, req: &Authenticated) -> Result<Authorization, Problem> {
    let account = req.account()?;
    fe.engine(move |a| a.authorization_of(account, id))?.ok_or_else(|| Problem::not_found(format!("no authorization {id}")))
}

/// A challenge: read (POST-as-GET), or respond (`{}`) to start validation.
pub fn challenge(fe: &FrontEnd, call: &Call, req: Authenticated) -> Result<Reply, Problem> {
    let (urls, id) = (&call.urls, call.param());
    let account = req.account()?.clone();
    let (ch, authz) = fe.engine(|a| a.challenge_of(&account, id))?.ok_or_else(|| Problem::not_found(format!("no challenge {id}")))?;
    // RFC 8555 §7.5.1: the client says "go" with an object, normally `{}`.
    let respond = req.payload_or_get::<payloads::ChallengeResponse>()?.is_some();
    let mut ch = ch;
    if respond {
        let kind: ChallengeKind = ch.kind.parse().map_err(|_| Problem::internal("stored challenge type is unknown"))?;
        let (a2, c2, z2) = (account.clone(), ch.clone(), authz.clone());
        let start = fe.engine(move |a| a.begin_challenge(&a2, &c2, &z2))?;
        if start {
            ch.status = ChallengeStatus::Processing;
            spawn_validation(fe, kind, ch.clone(), authz.identifier.clone(), account.thumbprint.clone());
        } else if let Some((fresh, _)) = fe.engine({
            let id = ch.id.clone();
            move |a| a.challenge(&id)
        })? {
            ch = fresh;
        }
    }
    let mut reply = Reply::json(StatusCode::OK, &challenge_json(urls, &ch)).link(&urls.authz(&authz.id), "up");
    if ch.status == ChallengeStatus::Processing {
        reply = reply.header(header::RETRY_AFTER, "1");
    }
    Ok(reply)
}

/// Validates in the background and records the outcome; the client polls.
/// What it logs carries the span of the request that started it, if any.
fn spawn_validation(fe: &FrontEnd, kind: ChallengeKind, ch: Challenge, identifier: Identifier, thumbprint: String) {
    let validator = fe.validator.clone();
    let ra = fe.ra.clone();
    let span = tracing::Span::current();
    let task = async move {
        let key_authorization = format!("{}.{}", ch.token, thumbprint);
        let outcome = validator
            .validate(kind, &identifier, &ch.token, &key_authorization)
            .await
            .map_err(|p| RecordedError { kind: p.kind.name().to_string(), detail: p.detail });
        if let Err(e) = &outcome {
            tracing::info!(challenge = %ch.id, %identifier, kind = kind.as_str(), error = %e.detail, "validation failed");
        }
        let span = tracing::Span::current();
        let recorded = tokio::task::spawn_blocking(move || span.in_scope(|| ra.finish_challenge(&ch.id, outcome))).await;
        match recorded {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "recording a validation failed"),
            Err(e) => tracing::error!(error = %e, "recording a validation panicked"),
        }
    };
    tokio::spawn(task.instrument(span));
}

/// Validations cut short by a restart run again, so their orders can complete.
pub async fn resume_interrupted_validations(fe: &Arc<FrontEnd>) {
    let pending = match fe.blocking(|a| a.interrupted_challenges()).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(problem = %e, "could not list interrupted validations");
            return;
        }
    };
    for (ch, authz, account) in pending {
        match ch.kind.parse::<ChallengeKind>() {
            Ok(kind) => spawn_validation(fe, kind, ch, authz.identifier, account.thumbprint),
            Err(_) => tracing::error!(challenge = %ch.id, kind = %ch.kind, "unknown challenge type in store"),
        }
    }
}

//! One function per ACME resource (RFC 8555 §7). Each authenticates, asks the
//! engine, and renders; none of them decides anything itself.

use std::sync::Arc;

use bytes::Bytes;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{Method, StatusCode, header, request::Parts};
use serde_json::{Value, json};
use tenure_engine::Identifier;
use tenure_engine::ra::{NewAccount, NewOrder, Revoker};
use tenure_engine::model::{Authorization, Challenge, ChallengeStatus, OrderStatus, RecordedError};

use crate::jws::{self, Jws};
use crate::problem::{Problem, ProblemType};
use crate::request::{Authenticated, KeyRule, authenticate};
use crate::resources::*;
use crate::server::{FrontEnd, Reply};
use crate::validation::ChallengeKind;

pub async fn route(fe: &Arc<FrontEnd>, urls: &Urls, parts: &Parts, body: Bytes) -> Result<Reply, Problem> {
    let path = parts.uri.path();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = &parts.method;

    // Resources read without a JWS.
    match (method, segments.as_slice()) {
        (&Method::GET | &Method::HEAD, ["directory"]) => return Ok(directory(fe, urls)),
        (&Method::GET | &Method::HEAD, ["terms"]) => {
            let mut r = Reply::empty(StatusCode::OK);
            r.body = fe.options.terms_of_service.clone().into();
            r.content_type = "text/plain; charset=utf-8";
            return Ok(r);
        }
        (&Method::HEAD, ["acme", "new-nonce"]) => {
            return Ok(Reply::empty(StatusCode::OK).header(header::CACHE_CONTROL, "no-store"));
        }
        (&Method::GET, ["acme", "new-nonce"]) => {
            return Ok(Reply::empty(StatusCode::NO_CONTENT).header(header::CACHE_CONTROL, "no-store"));
        }
        // RFC 9773 §4.3: renewal information is a plain GET, no JWS.
        (&Method::GET, ["acme", "renewal-info", cert_id]) => return renewal_info(fe, cert_id).await,
        (&Method::GET | &Method::HEAD, ["crl", issuer]) => return crl(fe, issuer).await,
        _ => {}
    }

    let known = matches!(
        segments.as_slice(),
        ["acme", "new-account" | "new-order" | "revoke-cert" | "key-change"]
            | ["acme", "acct", _]
            | ["acme", "acct", _, "orders"]
            | ["acme", "order", _]
            | ["acme", "order", _, "finalize"]
            | ["acme", "authz", _]
            | ["acme", "chall", _]
            | ["acme", "cert", _]
    );
    if !known {
        return Err(Problem::not_found(format!("no resource at {path}")));
    }
    if method != Method::POST {
        return Err(Problem::malformed(format!("{path} accepts POST only (RFC 8555 §6.3)")).with_status(StatusCode::METHOD_NOT_ALLOWED));
    }

    // Everything after this point is signature checks, signing and SQLite:
    // one hop to a blocking thread per request, not one per engine call.
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let (urls, path) = (urls.clone(), path.to_string());
    fe.on_blocking_thread(move |fe| signed(fe, &urls, &path, &content_type, &body)).await
}

/// A POST carrying a JWS (RFC 8555 §6.2): authenticate, then the resource.
fn signed(fe: &FrontEnd, urls: &Urls, path: &str, content_type: &str, body: &[u8]) -> Result<Reply, Problem> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let url = format!("{}{}", urls.base, path);
    let rule = match segments.as_slice() {
        ["acme", "new-account"] => KeyRule::Jwk,
        ["acme", "revoke-cert"] => KeyRule::Either,
        _ => KeyRule::Kid,
    };
    let req = authenticate(fe, content_type, body, &url, urls, rule)?;

    match segments.as_slice() {
        ["acme", "new-account"] => new_account(fe, urls, &url, req),
        ["acme", "acct", id] => account(fe, urls, id, req),
        ["acme", "acct", id, "orders"] => account_orders(fe, urls, id, req),
        ["acme", "key-change"] => key_change(fe, urls, &url, req),
        ["acme", "new-order"] => new_order(fe, urls, req),
        ["acme", "order", id] => order(fe, urls, id, req),
        ["acme", "order", id, "finalize"] => finalize(fe, urls, id, req),
        ["acme", "authz", id] => authorization(fe, urls, id, req),
        ["acme", "chall", id] => challenge(fe, urls, id, req),
        ["acme", "cert", serial] => certificate(fe, serial, req),
        ["acme", "revoke-cert"] => revoke(fe, req),
        _ => Err(Problem::not_found(format!("no resource at {path}"))),
    }
}

fn directory(fe: &FrontEnd, urls: &Urls) -> Reply {
    let config = fe.ra.config();
    let profiles: serde_json::Map<String, Value> =
        config.profiles.iter().map(|p| (p.name.clone(), Value::String(p.description.clone()))).collect();
    Reply::json(
        StatusCode::OK,
        &json!({
            "newNonce": urls.new_nonce(),
            "newAccount": urls.new_account(),
            "newOrder": urls.new_order(),
            "revokeCert": urls.revoke_cert(),
            "keyChange": urls.key_change(),
            "renewalInfo": urls.renewal_info(),
            "meta": {
                "termsOfService": urls.terms(),
                "externalAccountRequired": config.eab_required,
                "profiles": profiles,
            },
        }),
    )
}

/// RFC 9773 §4.2: the suggested renewal window, and when to ask again.
async fn renewal_info(fe: &FrontEnd, cert_id: &str) -> Result<Reply, Problem> {
    let id = cert_id.to_string();
    let window = fe.blocking(move |a| a.renewal_info(&id)).await?;
    let rfc3339 = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .ok()
            .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
            .ok_or_else(|| Problem::internal("a renewal window is out of range"))
    };
    let body = json!({ "suggestedWindow": { "start": rfc3339(window.start)?, "end": rfc3339(window.end)? } });
    Ok(Reply::json(StatusCode::OK, &body).header(header::RETRY_AFTER, window.retry_after_seconds.to_string()))
}

/// An issuer's CRL, DER (RFC 5280 §5), at the URL its certificates carry.
async fn crl(fe: &FrontEnd, issuer: &str) -> Result<Reply, Problem> {
    let id: i64 = issuer.parse().map_err(|_| Problem::not_found(format!("no CRL {issuer:?}")))?;
    let der = fe.blocking(move |a| a.crl(id)).await?;
    let mut r = Reply::empty(StatusCode::OK);
    r.body = der.into();
    r.content_type = "application/pkix-crl";
    Ok(r)
}

// ---- accounts --------------------------------------------------------------

fn new_account(fe: &FrontEnd, urls: &Urls, url: &str, req: Authenticated) -> Result<Reply, Problem> {
    let payload = req.payload_object()?;
    let thumbprint = req.key.thumbprint();
    let only_existing = bool_member(&payload, "onlyReturnExisting")?.unwrap_or(false);

    let tp = thumbprint.clone();
    if let Some(existing) = fe.engine(move |a| a.account_by_thumbprint(&tp))? {
        // RFC 8555 §7.3.1: the key is registered already; say where.
        return Ok(Reply::json(StatusCode::OK, &account_json(urls, &existing)).location(urls.account(&existing.id)));
    }
    if only_existing {
        return Err(Problem::new(ProblemType::AccountDoesNotExist, "no account is registered for this key"));
    }

    let contact = contact_member(&payload)?.unwrap_or_default();
    let tos_agreed = bool_member(&payload, "termsOfServiceAgreed")?.unwrap_or(false);
    let eab_kid = match payload.get("externalAccountBinding") {
        None | Some(Value::Null) => None,
        Some(eab) => {
            let kid = jws::eab_key_id(eab)?;
            let lookup = kid.clone();
            let (_, hmac) = fe
                .engine(move |a| a.eab_key(&lookup))?
                .ok_or_else(|| Problem::unauthorized(format!("unknown External Account Binding key id {kid:?}")))?;
            jws::verify_eab(eab, &hmac, url, &req.key)?;
            Some(kid)
        }
    };
    if eab_kid.is_none() && fe.ra.config().eab_required {
        return Err(Problem::new(ProblemType::ExternalAccountRequired, "this server requires External Account Binding"));
    }
    let jwk = req.key.to_json().to_string();
    let (account, created) = fe.engine(move |a| a.create_account(NewAccount { jwk, thumbprint, contact, tos_agreed, eab_kid }))?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(Reply::json(status, &account_json(urls, &account)).location(urls.account(&account.id)))
}

fn account(fe: &FrontEnd, urls: &Urls, id: &str, req: Authenticated) -> Result<Reply, Problem> {
    let account = own_account(&req, id)?.clone();
    let Some(payload) = req.payload_json()? else {
        return Ok(Reply::json(StatusCode::OK, &account_json(urls, &account)).location(urls.account(id)));
    };
    let Value::Object(payload) = payload else {
        return Err(Problem::malformed("the account update must be a JSON object"));
    };
    let mut account = account;
    if let Some(status) = payload.get("status") {
        if status != "deactivated" {
            return Err(Problem::malformed("an account's status can only be changed to \"deactivated\""));
        }
        let a = account.clone();
        account = fe.engine(move |x| x.deactivate_account(&a))?;
    } else if let Some(contact) = contact_member(&payload)? {
        let a = account.clone();
        account = fe.engine(move |x| x.update_contact(&a, contact))?;
    }
    Ok(Reply::json(StatusCode::OK, &account_json(urls, &account)).location(urls.account(id)))
}

fn account_orders(fe: &FrontEnd, urls: &Urls, id: &str, req: Authenticated) -> Result<Reply, Problem> {
    req.require_post_as_get()?;
    let account = own_account(&req, id)?.clone();
    let ids = fe.engine(move |a| a.orders_of(&account))?;
    let list: Vec<String> = ids.iter().map(|o| urls.order(o)).collect();
    Ok(Reply::json(StatusCode::OK, &json!({ "orders": list })))
}

/// Key rollover (RFC 8555 §7.3.5): an inner JWS signed by the new key inside
/// the outer one signed by the old.
fn key_change(fe: &FrontEnd, urls: &Urls, url: &str, req: Authenticated) -> Result<Reply, Problem> {
    let account = req.account()?.clone();
    let inner = Jws::parse(&req.jws.payload)?;
    let new_key = inner.protected.jwk.clone().ok_or_else(|| Problem::malformed("the inner JWS must carry the new key as \"jwk\""))?;
    if inner.protected.kid.is_some() {
        return Err(Problem::malformed("the inner JWS must not have a \"kid\""));
    }
    if inner.protected.nonce.is_some() {
        return Err(Problem::malformed("the inner JWS must not have a \"nonce\""));
    }
    if inner.protected.url != url {
        return Err(Problem::malformed("the inner JWS \"url\" must equal the outer one"));
    }
    new_key.verify(inner.protected.alg, &inner.signing_input(), &inner.signature)?;
    let body: Value =
        serde_json::from_slice(&inner.payload).map_err(|e| Problem::malformed(format!("the inner payload is not JSON: {e}")))?;
    if body.get("account").and_then(Value::as_str) != Some(urls.account(&account.id).as_str()) {
        return Err(Problem::malformed("the inner payload's \"account\" is not the account making the request"));
    }
    let old = body.get("oldKey").ok_or_else(|| Problem::malformed("the inner payload has no \"oldKey\""))?;
    if crate::jws::Jwk::from_json(old)?.thumbprint() != account.thumbprint {
        return Err(Problem::unauthorized("\"oldKey\" is not the account's current key"));
    }
    let new_thumbprint = new_key.thumbprint();
    if new_thumbprint == account.thumbprint {
        return Err(Problem::malformed("the new key is the same as the old key"));
    }
    let jwk = new_key.to_json().to_string();
    let result = fe.engine(move |a| a.change_key(&account, jwk, new_thumbprint));
    match result {
        Ok(account) => Ok(Reply::json(StatusCode::OK, &account_json(urls, &account)).location(urls.account(&account.id))),
        Err(p) if p.status == Some(StatusCode::CONFLICT) => {
            // The detail is the id of the account already holding the key.
            let holder = urls.account(&p.detail);
            Err(Problem::malformed(format!("the new key is already in use by {holder}")).with_status(StatusCode::CONFLICT))
        }
        Err(p) => Err(p),
    }
}

// ---- orders ----------------------------------------------------------------

fn new_order(fe: &FrontEnd, urls: &Urls, req: Authenticated) -> Result<Reply, Problem> {
    let account = req.account()?.clone();
    let payload = req.payload_object()?;
    for unsupported in ["notBefore", "notAfter"] {
        if payload.get(unsupported).is_some_and(|v| !v.is_null()) {
            return Err(Problem::malformed(format!(
                "\"{unsupported}\" is not supported: lifetimes come from the profile (see the directory's meta.profiles)"
            )));
        }
    }
    let raw = payload
        .get("identifiers")
        .and_then(Value::as_array)
        .ok_or_else(|| Problem::malformed("newOrder needs an \"identifiers\" array"))?;
    let mut identifiers = Vec::with_capacity(raw.len());
    let mut rejected = Vec::new();
    for item in raw {
        let kind = item.get("type").and_then(Value::as_str);
        let value = item.get("value").and_then(Value::as_str);
        let (Some(kind), Some(value)) = (kind, value) else {
            return Err(Problem::malformed("each identifier needs a string \"type\" and \"value\""));
        };
        match Identifier::parse(kind, value) {
            Ok(id) => identifiers.push(id),
            Err(e) => {
                let p = Problem::from(e);
                rejected.push((p.kind, p.detail, Some(crate::problem::ProblemIdentifier { kind: kind.into(), value: value.into() })));
            }
        }
    }
    if !rejected.is_empty() {
        // One problem with a subproblem per bad identifier (RFC 8555 §6.7.1).
        let first = rejected[0].0;
        let mut p = if rejected.len() == 1 {
            Problem::new(first, rejected[0].1.clone())
        } else {
            Problem::new(ProblemType::Compound, format!("{} identifiers were refused", rejected.len()))
        };
        if rejected.len() > 1 || first == ProblemType::RejectedIdentifier {
            p.subproblems = rejected;
        }
        return Err(p);
    }
    let profile = optional_string(&payload, "profile")?;
    let replaces = optional_string(&payload, "replaces")?;
    let order = fe.engine(move |a| a.new_order(&account, NewOrder { identifiers, profile, replaces }))?;
    Ok(Reply::json(StatusCode::CREATED, &order_json(urls, &order)).location(urls.order(&order.id)))
}

fn order(fe: &FrontEnd, urls: &Urls, id: &str, req: Authenticated) -> Result<Reply, Problem> {
    req.require_post_as_get()?;
    let order = load_order(fe, id, &req)?;
    let mut reply = Reply::json(StatusCode::OK, &order_json(urls, &order));
    if order.status == OrderStatus::Processing {
        reply = reply.header(header::RETRY_AFTER, "1");
    }
    Ok(reply)
}

fn finalize(fe: &FrontEnd, urls: &Urls, id: &str, req: Authenticated) -> Result<Reply, Problem> {
    let payload = req.payload_object()?;
    let order = load_order(fe, id, &req)?;
    let csr_b64 = payload.get("csr").and_then(Value::as_str).ok_or_else(|| Problem::malformed("finalize needs a \"csr\" string"))?;
    let csr = URL_SAFE_NO_PAD.decode(csr_b64).map_err(|_| Problem::new(ProblemType::BadCsr, "\"csr\" is not base64url without padding"))?;
    let account = req.account()?.clone();
    let account_spki = req.key.spki_der();
    let order = fe.engine(move |a| a.finalize(&account, &order, &csr, &account_spki))?;
    let mut reply = Reply::json(StatusCode::OK, &order_json(urls, &order)).location(urls.order(&order.id));
    if order.status == OrderStatus::Processing {
        reply = reply.header(header::RETRY_AFTER, "1");
    }
    Ok(reply)
}

fn load_order(fe: &FrontEnd, id: &str, req: &Authenticated) -> Result<tenure_engine::model::Order, Problem> {
    let account = req.account()?;
    let lookup = id.to_string();
    let order = fe.engine(move |a| a.order(&lookup))?.ok_or_else(|| Problem::not_found(format!("no order {id}")))?;
    if order.account_id != account.id {
        return Err(Problem::unauthorized("this order belongs to another account"));
    }
    Ok(order)
}

// ---- authorizations and challenges ----------------------------------------------

fn authorization(fe: &FrontEnd, urls: &Urls, id: &str, req: Authenticated) -> Result<Reply, Problem> {
    let authz = load_authz(fe, id, &req)?;
    let authz = match req.payload_json()? {
        None => authz,
        Some(Value::Object(m)) if m.get("status").and_then(Value::as_str) == Some("deactivated") && m.len() == 1 => {
            let account = req.account()?.clone();
            fe.engine(move |a| a.deactivate_authorization(&account, &authz))?
        }
        Some(_) => return Err(Problem::malformed("an authorization accepts only {\"status\": \"deactivated\"}")),
    };
    let mut reply = Reply::json(StatusCode::OK, &authz_json(urls, &authz));
    if authz.challenges.iter().any(|c| c.status == ChallengeStatus::Processing) {
        reply = reply.header(header::RETRY_AFTER, "1");
    }
    Ok(reply)
}

fn load_authz(fe: &FrontEnd, id: &str, req: &Authenticated) -> Result<Authorization, Problem> {
    let account = req.account()?;
    let lookup = id.to_string();
    let authz = fe.engine(move |a| a.authorization(&lookup))?.ok_or_else(|| Problem::not_found(format!("no authorization {id}")))?;
    if authz.account_id != account.id {
        return Err(Problem::unauthorized("this authorization belongs to another account"));
    }
    Ok(authz)
}

fn challenge(fe: &FrontEnd, urls: &Urls, id: &str, req: Authenticated) -> Result<Reply, Problem> {
    let account = req.account()?.clone();
    let lookup = id.to_string();
    let (ch, authz) = fe.engine(move |a| a.challenge(&lookup))?.ok_or_else(|| Problem::not_found(format!("no challenge {id}")))?;
    if authz.account_id != account.id {
        return Err(Problem::unauthorized("this challenge belongs to another account"));
    }
    let respond = match req.payload_json()? {
        None => false,
        // RFC 8555 §7.5.1: the client says "go" with an empty object.
        Some(Value::Object(m)) if m.is_empty() => true,
        Some(_) => return Err(Problem::malformed("a challenge response must be the empty object {}")),
    };
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
fn spawn_validation(fe: &FrontEnd, kind: ChallengeKind, ch: Challenge, identifier: Identifier, thumbprint: String) {
    let validator = fe.validator.clone();
    let ra = fe.ra.clone();
    tokio::spawn(async move {
        let key_authorization = format!("{}.{}", ch.token, thumbprint);
        let outcome = validator
            .validate(kind, &identifier, &ch.token, &key_authorization)
            .await
            .map_err(|p| RecordedError { kind: p.kind.name().to_string(), detail: p.detail });
        if let Err(e) = &outcome {
            tracing::info!(challenge = %ch.id, %identifier, kind = kind.as_str(), error = %e.detail, "validation failed");
        }
        let recorded = tokio::task::spawn_blocking(move || ra.finish_challenge(&ch.id, outcome)).await;
        match recorded {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "recording a validation failed"),
            Err(e) => tracing::error!(error = %e, "recording a validation panicked"),
        }
    });
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

// ---- certificates ----------------------------------------------------------

fn certificate(fe: &FrontEnd, serial: &str, req: Authenticated) -> Result<Reply, Problem> {
    req.require_post_as_get()?;
    let account = req.account()?.clone();
    let lookup = serial.to_string();
    let pem = fe
        .engine(move |a| a.certificate_chain_of(&account, &lookup))?
        .ok_or_else(|| Problem::not_found(format!("no certificate {serial}")))?;
    let mut reply = Reply::empty(StatusCode::OK);
    reply.body = pem.into();
    reply.content_type = "application/pem-certificate-chain";
    Ok(reply)
}

fn revoke(fe: &FrontEnd, req: Authenticated) -> Result<Reply, Problem> {
    let payload = req.payload_object()?;
    let cert_b64 = payload
        .get("certificate")
        .and_then(Value::as_str)
        .ok_or_else(|| Problem::malformed("revokeCert needs a \"certificate\" string"))?;
    let der = URL_SAFE_NO_PAD.decode(cert_b64).map_err(|_| Problem::malformed("\"certificate\" is not base64url without padding"))?;
    let reason = match payload.get("reason") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|r| u8::try_from(r).ok())
                .ok_or_else(|| Problem::new(ProblemType::BadRevocationReason, "\"reason\" must be a CRL reason code"))?,
        ),
    };
    let revoker = match &req.account {
        Some(account) => RevokerOwned::Account(account.id.clone()),
        None => RevokerOwned::Key(req.key.spki_der()),
    };
    fe.engine(move |a| {
        let by = match &revoker {
            RevokerOwned::Account(id) => Revoker::Account(id),
            RevokerOwned::Key(spki) => Revoker::CertificateKey(spki),
        };
        a.revoke(by, &der, reason)
    })?;
    Ok(Reply::empty(StatusCode::OK))
}

enum RevokerOwned {
    Account(String),
    Key(Vec<u8>),
}

// ---- payload helpers --------------------------------------------------------------

fn own_account<'a>(req: &'a Authenticated, id: &str) -> Result<&'a tenure_engine::model::Account, Problem> {
    let account = req.account()?;
    if account.id != id {
        return Err(Problem::unauthorized("the request is signed by a different account"));
    }
    Ok(account)
}

fn bool_member(m: &serde_json::Map<String, Value>, name: &str) -> Result<Option<bool>, Problem> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(Problem::malformed(format!("\"{name}\" must be a boolean"))),
    }
}

fn optional_string(m: &serde_json::Map<String, Value>, name: &str) -> Result<Option<String>, Problem> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Problem::malformed(format!("\"{name}\" must be a string"))),
    }
}

fn contact_member(m: &serde_json::Map<String, Value>) -> Result<Option<Vec<String>>, Problem> {
    match m.get("contact") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| Problem::malformed("each contact must be a string")))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(Problem::malformed("\"contact\" must be an array of URLs")),
    }
}

//! Accounts (RFC 8555 §7.3): creation with External Account Binding, lookup,
//! contact update, deactivation, the orders list, key rollover.

use http::StatusCode;
use serde_json::json;
use tenure_engine::ra::NewAccount;

use super::own_account;
use crate::jws::{self, Jwk, Jws};
use crate::payloads::{self, Deactivation};
use crate::problem::{Problem, ProblemType};
use crate::request::Authenticated;
use crate::resources::account_json;
use crate::routes::Call;
use crate::server::{FrontEnd, Reply};

/// newAccount: the key's existing account, or a new one.
pub fn new_account(fe: &FrontEnd, call: &Call, req: Authenticated) -> Result<Reply, Problem> {
    let urls = &call.urls;
    let payload: payloads::NewAccount = req.payload()?;
    let thumbprint = req.key.thumbprint();

    let tp = thumbprint.clone();
    if let Some(existing) = fe.engine(move |a| a.account_by_thumbprint(&tp))? {
        crate::request_log::note_account(&existing.id);
        // RFC 8555 §7.3.1: the key is registered already; say where.
        return Ok(Reply::json(StatusCode::OK, &account_json(urls, &existing)).location(urls.account(&existing.id)));
    }
    if payload.only_return_existing.unwrap_or(false) {
        return Err(Problem::new(ProblemType::AccountDoesNotExist, "no account is registered for this key"));
    }

    // The engine verifies the binding's MAC (it holds the keys) and decides
    // whether one is required.
    let eab = payload.external_account_binding.as_ref().map(|eab| jws::external_binding(eab, &call.url)).transpose()?;
    let jwk = req.key.to_json().to_string();
    let contact = payload.contact.unwrap_or_default();
    let tos_agreed = payload.terms_of_service_agreed.unwrap_or(false);
    let source = Some(call.peer);
    let (account, created) = fe.engine(move |a| a.create_account(NewAccount { jwk, thumbprint, contact, tos_agreed, eab, source }))?;
    crate::request_log::note_account(&account.id);
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(Reply::json(status, &account_json(urls, &account)).location(urls.account(&account.id)))
}

/// An account: read (POST-as-GET), contact update, or deactivation.
pub fn account(fe: &FrontEnd, call: &Call, req: Authenticated) -> Result<Reply, Problem> {
    let (urls, id) = (&call.urls, call.param());
    let mut account = own_account(&req, id)?.clone();
    match req.payload_or_get::<payloads::AccountUpdate>()? {
        None => {}
        Some(update) => match (update.status, update.contact) {
            (Some(Deactivation::Deactivated), _) => {
                let a = account.clone();
                account = fe.engine(move |x| x.deactivate_account(&a))?;
            }
            (None, Some(contact)) => {
                let a = account.clone();
                account = fe.engine(move |x| x.update_contact(&a, contact))?;
            }
            (None, None) => {}
        },
    }
    Ok(Reply::json(StatusCode::OK, &account_json(urls, &account)).location(urls.account(id)))
}

/// An account's orders list (POST-as-GET).
pub fn orders(fe: &FrontEnd, call: &Call, req: Authenticated) -> Result<Reply, Problem> {
    req.require_post_as_get()?;
    let account = own_account(&req, call.param())?.clone();
    let ids = fe.engine(move |a| a.orders_of(&account))?;
    let list: Vec<String> = ids.iter().map(|o| call.urls.order(o)).collect();
    Ok(Reply::json(StatusCode::OK, &json!({ "orders": list })))
}

/// Key rollover (RFC 8555 §7.3.5): an inner JWS signed by the new key inside
/// the outer one signed by the old.
pub fn key_change(fe: &FrontEnd, call: &Call, req: Authenticated) -> Result<Reply, Problem> {
    let urls = &call.urls;
    let account = req.account()?.clone();
    let inner = Jws::parse(&req.jws.payload)?;
    let new_key = inner.protected.jwk.clone().ok_or_else(|| Problem::malformed("the inner JWS must carry the new key as \"jwk\""))?;
    if inner.protected.kid.is_some() {
        return Err(Problem::malformed("the inner JWS must not have a \"kid\""));
    }
    if inner.protected.nonce.is_some() {
        return Err(Problem::malformed("the inner JWS must not have a \"nonce\""));
    }
    if inner.protected.url != call.url {
        return Err(Problem::malformed("the inner JWS \"url\" must equal the outer one"));
    }
    new_key.verify(inner.protected.alg, &inner.signing_input(), &inner.signature)?;
    let body: payloads::KeyChange = payloads::parse(&inner.payload)?;
    if body.account != urls.account(&account.id) {
        return Err(Problem::malformed("the inner payload's \"account\" is not the account making the request"));
    }
    if Jwk::from_json(&body.old_key)?.thumbprint() != account.thumbprint {
        return Err(Problem::unauthorized("\"oldKey\" is not the account's current key"));
    }
    let new_thumbprint = new_key.thumbprint();
    if new_thumbprint == account.thumbprint {
        return Err(Problem::malformed("the new key is the same as the old key"));
    }
    let jwk = new_key.to_json().to_string();
    // The engine's typed conflict names the account holding the key.
    match fe.ra.change_key(&account, jwk, new_thumbprint) {
        Ok(account) => Ok(Reply::json(StatusCode::OK, &account_json(urls, &account)).location(urls.account(&account.id))),
        // RFC 8555 §7.3.5: 409 Conflict, naming the account holding the key.
        Err(tenure_engine::Error { conflict: Some(tenure_engine::Conflict::AccountKeyInUse { account: holder }), .. }) => {
            let holder = urls.account(&holder);
            Err(Problem::malformed(format!("the new key is already in use by {holder}")).with_status(StatusCode::CONFLICT))
        }
        Err(e) => Err(Problem::from(e)),
    }
}

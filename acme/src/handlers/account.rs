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
        // RFC 8555 §7.3.1: the key is registered already; say where.
        return Ok(Reply::json(StatusCode::OK, &account_json(urls, &existing)).location(urls.account(&existing.id)));
    }
    if payload.only_return_existing.unwrap_or(false) {
        return Err(Problem::new(ProblemType::AccountDoesNotExist, "no account is registered for this key"));
    }

    let eab_kid = match &payload.external_account_binding {
        None => None,
        Some(eab) => {
            let kid = jws::eab_key_id(eab)?;
            let lookup = kid.clone();
            let (_, hmac) = fe
                .engine(move |a| a.eab_key(&lookup))?
                .ok_or_else(|| Problem::unauthorized(format!("unknown External Account Binding key id {kid:?}")))?;
            jws::verify_eab(eab, &hmac, &call.url, &req.key)?;
            Some(kid)
        }
    };
    if eab_kid.is_none() && fe.ra.config().eab_required {
        return Err(Problem::new(ProblemType::ExternalAccountRequired, "this server requires External Account Binding"));
    }
    let jwk = req.key.to_json().to_string();
    let contact = payload.contact.unwrap_or_default();
    let tos_agreed = payload.terms_of_service_agreed.unwrap_or(false);
    let (account, created) = fe.engine(move |a| a.create_account(NewAccount { jwk, thumbprint, contact, tos_agreed, eab_kid }))?;
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
    match fe.engine(move |a| a.change_key(&account, jwk, new_thumbprint)) {
        Ok(account) => Ok(Reply::json(StatusCode::OK, &account_json(urls, &account)).location(urls.account(&account.id))),
        Err(p) if p.status == Some(StatusCode::CONFLICT) => {
            // TODO(issue 11): typed conflict. The engine's detail is the id of
            // the account already holding the key; decoded here until the
            // engine says so in a type.
            let holder = urls.account(&p.detail);
            Err(Problem::malformed(format!("the new key is already in use by {holder}")).with_status(StatusCode::CONFLICT))
        }
        Err(p) => Err(p),
    }
}

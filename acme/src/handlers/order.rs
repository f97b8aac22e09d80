//! Orders (RFC 8555 §7.4): creation, reading, finalize.

use http::StatusCode;
use tenure_engine::Identifier;
use tenure_engine::model::Order;
use tenure_engine::ra::NewOrder;

use crate::payloads;
use crate::problem::{Problem, ProblemIdentifier, ProblemType};
use crate::request::Authenticated;
use crate::resources::order_json;
use crate::routes::Call;
use crate::server::{FrontEnd, Reply};

/// newOrder: identifiers checked here for form, then the engine decides.
pub fn new_order(fe: &FrontEnd, call: &Call, req: Authenticated) -> Result<Reply, Problem> {
    let urls = &call.urls;
    let account = req.account()?.clone();
    let payload: payloads::NewOrder = req.payload()?;
    for (name, value) in [("notBefore", &payload.not_before), ("notAfter", &payload.not_after)] {
        if value.is_some() {
            return Err(Problem::malformed(format!(
                "\"{name}\" is not supported: lifetimes come from the profile (see the directory's meta.profiles)"
            )));
        }
    }
    let mut identifiers = Vec::with_capacity(payload.identifiers.len());
    let mut rejected = Vec::new();
    for item in payload.identifiers {
        match Identifier::parse(&item.kind, &item.value) {
            Ok(id) => identifiers.push(id),
            Err(e) => {
                let p = Problem::from(e);
                rejected.push((p.kind, p.detail, Some(ProblemIdentifier { kind: item.kind, value: item.value })));
            }
        }
    }
    if let Some(first) = rejected.first() {
        // One problem with a subproblem per bad identifier (RFC 8555 §6.7.1).
        let first_kind = first.0;
        let mut p = if rejected.len() == 1 {
            Problem::new(first_kind, first.1.clone())
        } else {
            Problem::new(ProblemType::Compound, format!("{} identifiers were refused", rejected.len()))
        };
        if rejected.len() > 1 || first_kind == ProblemType::RejectedIdentifier {
            p.subproblems = rejected;
        }
        return Err(p);
    }
    let (profile, replaces) = (payload.profile, payload.replaces);
    let order = fe.engine(move |a| a.new_order(&account, NewOrder { identifiers, profile, replaces }))?;
    Ok(Reply::json(StatusCode::CREATED, &order_json(urls, &order)).location(urls.order(&order.id)))
}

/// An order (POST-as-GET).
pub fn order(fe: &FrontEnd, call: &Call, req: Authenticated) -> Result<Reply, Problem> {
    req.require_post_as_get()?;
    let order = load_order(fe, call.param(), &req)?;
    Ok(Reply::json(StatusCode::OK, &order_json(&call.urls, &order)))
}

/// finalize: the CSR goes to the engine, which decides and signs.
pub fn finalize(fe: &FrontEnd, call: &Call, req: Authenticated) -> Result<Reply, Problem> {
    let payload: payloads::Finalize = req.payload()?;
    let order = load_order(fe, call.param(), &req)?;
    let csr = payload.csr_der()?;
    let account = req.account()?.clone();
    let account_spki = req.key.spki_der();
    let order = fe.engine(move |a| a.finalize(&account, &order, &csr, &account_spki))?;
    let reply = Reply::json(StatusCode::OK, &order_json(&call.urls, &order)).location(call.urls.order(&order.id));
    Ok(reply)
}

/// The order, if it is the requesting account's.
fn load_order(fe: &FrontEnd, id: &str, req: &Authenticated) -> Result<Order, Problem> {
    let account = req.account()?;
    fe.engine(move |a| a.order_of(account, id))?.ok_or_else(|| Problem::not_found(format!("no order {id}")))
}

//! Resources read without a JWS: the directory, the terms, nonces, renewal
//! information (RFC 9773) and CRLs.

use std::sync::Arc;

use http::{Method, StatusCode, header};
use serde_json::{Value, json};

use crate::problem::Problem;
use crate::routes::{BoxFuture, Call};
use crate::server::{FrontEnd, Reply};

/// The directory (RFC 8555 §7.1.1), its URLs from the route table.
pub fn directory<'a>(fe: &'a Arc<FrontEnd>, call: &'a Call) -> BoxFuture<'a, Result<Reply, Problem>> {
    let urls = &call.urls;
    let config = fe.ra.config();
    let profiles: serde_json::Map<String, Value> =
        config.profiles.iter().map(|p| (p.name.clone(), Value::String(p.description.clone()))).collect();
    let body = json!({
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
    });
    Box::pin(std::future::ready(Ok(Reply::json(StatusCode::OK, &body))))
}

/// The terms of service, as text.
pub fn terms<'a>(fe: &'a Arc<FrontEnd>, _call: &'a Call) -> BoxFuture<'a, Result<Reply, Problem>> {
    let mut r = Reply::empty(StatusCode::OK);
    r.body = fe.options.terms_of_service.clone().into();
    r.content_type = "text/plain; charset=utf-8";
    Box::pin(std::future::ready(Ok(r)))
}

/// newNonce (RFC 8555 §7.2): 200 to HEAD, 204 to GET; the nonce is in the
/// `Replay-Nonce` every response carries.
pub fn new_nonce<'a>(_fe: &'a Arc<FrontEnd>, call: &'a Call) -> BoxFuture<'a, Result<Reply, Problem>> {
    let status = if call.method == Method::HEAD { StatusCode::OK } else { StatusCode::NO_CONTENT };
    Box::pin(std::future::ready(Ok(Reply::empty(status).header(header::CACHE_CONTROL, "no-store"))))
}

/// RFC 9773 §4.2: the suggested renewal window, and when to ask again.
pub fn renewal_info<'a>(fe: &'a Arc<FrontEnd>, call: &'a Call) -> BoxFuture<'a, Result<Reply, Problem>> {
    Box::pin(async move {
        let id = call.param().to_string();
        let window = fe.blocking(move |a| a.renewal_info(&id)).await?;
        let rfc3339 = |t: i64| {
            time::OffsetDateTime::from_unix_timestamp(t)
                .ok()
                .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
                .ok_or_else(|| Problem::internal("a renewal window is out of range"))
        };
        let body = json!({ "suggestedWindow": { "start": rfc3339(window.start)?, "end": rfc3339(window.end)? } });
        Ok(Reply::json(StatusCode::OK, &body).header(header::RETRY_AFTER, window.retry_after_seconds.to_string()))
    })
}

/// An issuer's CRL, DER (RFC 5280 §5), at the URL its certificates carry.
pub fn crl<'a>(fe: &'a Arc<FrontEnd>, call: &'a Call) -> BoxFuture<'a, Result<Reply, Problem>> {
    Box::pin(async move {
        let issuer = call.param();
        let id: i64 = issuer.parse().map_err(|_| Problem::not_found(format!("no CRL {issuer:?}")))?;
        let der = fe.blocking(move |a| a.crl(id)).await?;
        let mut r = Reply::empty(StatusCode::OK);
        r.body = der.into();
        r.content_type = "application/pkix-crl";
        Ok(r)
    })
}

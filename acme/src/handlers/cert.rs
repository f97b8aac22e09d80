//! Certificates (RFC 8555 §7.4.2, §7.6): download with chain, revocation.

use http::StatusCode;

use crate::payloads;
use crate::problem::Problem;
use crate::request::Authenticated;
use crate::routes::Call;
use crate::server::{FrontEnd, Reply};
use tenure_engine::ra::Revoker;

/// A certificate and its chain, PEM (POST-as-GET), for the account it was issued to.
pub fn certificate(fe: &FrontEnd, call: &Call, req: Authenticated) -> Result<Reply, Problem> {
    req.require_post_as_get()?;
    let account = req.account()?.clone();
    let serial = call.param();
    let lookup = serial.to_string();
    let pem = fe
        .engine(move |a| a.certificate_chain_of(&account, &lookup))?
        .ok_or_else(|| Problem::not_found(format!("no certificate {serial}")))?;
    let mut reply = Reply::empty(StatusCode::OK);
    reply.body = pem.into();
    reply.content_type = "application/pem-certificate-chain";
    Ok(reply)
}

/// revokeCert, signed by the account (kid) or by the certificate's key (jwk).
pub fn revoke(fe: &FrontEnd, _call: &Call, req: Authenticated) -> Result<Reply, Problem> {
    let payload: payloads::RevokeCert = req.payload()?;
    let der = payload.certificate_der()?;
    let reason = payload.reason;
    let account = req.account.as_ref().map(|a| a.id.clone());
    let key = req.key.spki_der();
    fe.engine(move |a| {
        let by = match &account {
            Some(id) => Revoker::Account(id),
            None => Revoker::CertificateKey(&key),
        };
        a.revoke(by, &der, reason)
    })?;
    Ok(Reply::empty(StatusCode::OK))
}

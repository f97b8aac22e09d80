//! Authenticating a POST (RFC 8555 §6.2–6.5): content type, flattened JWS,
//! exact `url`, single-use nonce, `jwk` xor `kid` as the endpoint demands,
//! a known and valid account, and a good signature — in that order.

use tenure_engine::model::{Account, AccountStatus};

use crate::jws::{Jwk, Jws};
use crate::payloads::{self, Payload};
use crate::problem::{Problem, ProblemType};
use crate::server::FrontEnd;

/// Which key reference an endpoint accepts (RFC 8555 §6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRule {
    /// newAccount: the request carries its key.
    Jwk,
    /// Everything an account does: the request names its account.
    Kid,
    /// revokeCert: either the certificate's key or an account.
    Either,
}

/// A request whose signature checked out.
pub struct Authenticated {
    /// The request as received.
    pub jws: Jws,
    /// The key that signed the request.
    pub key: Jwk,
    /// The account, when the request used `kid`.
    pub account: Option<Account>,
}

impl Authenticated {
    /// The account of a `kid` request (the rules guarantee one exists).
    pub fn account(&self) -> Result<&Account, Problem> {
        self.account.as_ref().ok_or_else(|| Problem::malformed("this request must name its account with \"kid\""))
    }

    /// The typed payload of a request that needs one.
    pub fn payload<T: Payload>(&self) -> Result<T, Problem> {
        self.payload_or_get()?.ok_or_else(|| Problem::malformed("this request needs a payload; POST-as-GET is not allowed here"))
    }

    /// The typed payload, or `None` for POST-as-GET (an empty payload; `{}`
    /// is a different request, RFC 8555 §6.3).
    pub fn payload_or_get<T: Payload>(&self) -> Result<Option<T>, Problem> {
        if self.jws.is_post_as_get() {
            return Ok(None);
        }
        payloads::parse(&self.jws.payload).map(Some)
    }

    /// POST-as-GET (RFC 8555 §6.3): the payload must be empty.
    pub fn require_post_as_get(&self) -> Result<(), Problem> {
        if self.jws.is_post_as_get() {
            Ok(())
        } else {
            Err(Problem::malformed("this resource is read with POST-as-GET: the payload must be empty"))
        }
    }
}

/// Runs on a blocking thread (see `routes::dispatch`): it reads the account
/// from the store and checks a signature.
pub fn authenticate(
    fe: &FrontEnd,
    content_type: &str,
    body: &[u8],
    request_url: &str,
    base: &crate::resources::Urls,
    rule: KeyRule,
) -> Result<Authenticated, Problem> {
    if content_type.split(';').next().map(str::trim) != Some("application/jose+json") {
        return Err(Problem::malformed(format!("Content-Type must be application/jose+json, not {content_type:?}"))
            .with_status(http::StatusCode::UNSUPPORTED_MEDIA_TYPE));
    }
    let jws = Jws::parse(body)?;
    let p = &jws.protected;

    if p.url != request_url {
        return Err(Problem::unauthorized(format!("the JWS \"url\" {:?} does not match the request URL {request_url:?}", p.url)));
    }

    let nonce = p.nonce.as_deref().ok_or_else(|| Problem::new(ProblemType::BadNonce, "the JWS has no \"nonce\""))?;
    if !fe.redeem_nonce(nonce)? {
        return Err(Problem::new(ProblemType::BadNonce, "the nonce is unknown, expired or already used"));
    }

    let (key, account) = match (&p.jwk, &p.kid, rule) {
        (Some(_), Some(_), _) => {
            return Err(Problem::malformed("the JWS has both \"jwk\" and \"kid\"; exactly one is allowed"));
        }
        (None, None, _) => return Err(Problem::malformed("the JWS has neither \"jwk\" nor \"kid\"")),
        (Some(_), None, KeyRule::Kid) => {
            return Err(Problem::malformed("this request must name its account with \"kid\", not carry a \"jwk\""));
        }
        (None, Some(_), KeyRule::Jwk) => {
            return Err(Problem::malformed("this request must carry its key as \"jwk\", not \"kid\""));
        }
        (Some(jwk), None, _) => (jwk.clone(), None),
        (None, Some(kid), _) => {
            let id = base
                .account_id_of_kid(kid)
                .ok_or_else(|| Problem::new(ProblemType::AccountDoesNotExist, format!("{kid:?} is not an account URL of this server")))?
                .to_string();
            let account = fe
                .engine(move |a| a.account(&id))?
                .ok_or_else(|| Problem::new(ProblemType::AccountDoesNotExist, format!("no account at {kid:?}")))?;
            let key = fe.account_keys.get(&account.id, &account.jwk)?;
            ((*key).clone(), Some(account))
        }
    };

    key.verify(p.alg, &jws.signing_input(), &jws.signature)?;

    if let Some(a) = &account
        && a.status != AccountStatus::Valid
    {
        return Err(Problem::unauthorized(format!("the account is {}", a.status.as_str())));
    }
    Ok(Authenticated { jws, key, account })
}

//! One function per ACME resource (RFC 8555 §7), grouped by the objects they
//! serve. Each authenticates (via the route table), asks the engine, and
//! renders; none of them decides anything itself. Every engine call goes
//! through `FrontEnd::engine`, `FrontEnd::blocking` or the `Ra` handle.

pub mod account;
pub mod authz;
pub mod cert;
pub mod open;
pub mod order;

pub use authz::resume_interrupted_validations;

use tenure_engine::model::Account;

use crate::problem::Problem;
use crate::request::Authenticated;

/// The request's account, which must be the one the URL names.
fn own_account<'a>(req: &'a Authenticated, id: &str) -> Result<&'a Account, Problem> {
    let account = req.account()?;
    if account.id != id {
        return Err(Problem::unauthorized("the request is signed by a different account"));
    }
    Ok(account)
}

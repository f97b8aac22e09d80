//! Entry points for `fuzz/` (the `fuzzing` feature): the host's handling of a plugin's
//! answer without a plugin. Not an API.

use super::chain::{Asked, validate};
use super::host_state::{decision_out, tenure::policy::types as w};
use super::types::{Decision, HookRequest, IdentifierKind};

/// What `PolicyHost::decide` does with the `decision` a plugin's call returned for
/// `req`: the conversion from the WIT bindings' value, then the check against the
/// request (`Err` is the reason a malformed answer denies).
pub fn answer(req: &HookRequest, answer: &Decision, max_answer_bytes: usize) -> Result<Decision, String> {
    let asked = match req {
        HookRequest::Issuance(r) => Asked::Names(&r.identifiers, r.requested_lifetime_seconds),
        HookRequest::Renewal(r) => Asked::Names(&r.identifiers, r.requested_lifetime_seconds),
        HookRequest::Distribution(_) => Asked::Distribution,
    };
    validate(decision_out(wit(answer)), asked, max_answer_bytes)
}

/// The value a guest's bindings would hand the host for `d`.
fn wit(d: &Decision) -> w::Decision {
    let ids = |v: &[super::types::Identifier]| {
        v.iter()
            .map(|i| w::Identifier {
                kind: match i.kind {
                    IdentifierKind::Dns => w::IdentifierKind::Dns,
                    IdentifierKind::Ip => w::IdentifierKind::Ip,
                },
                value: i.value.clone(),
            })
            .collect()
    };
    match d {
        Decision::Allow(g) => w::Decision::Allow(w::Grant {
            identifiers: ids(&g.identifiers),
            lifetime_seconds: g.lifetime_seconds,
            profile: g.profile.clone(),
            authorize_by_control: ids(&g.authorize_by_control),
            rekey: g.rekey,
        }),
        Decision::Deny(r) => w::Decision::Deny(r.clone()),
    }
}

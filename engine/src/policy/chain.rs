//! Checking one plugin's answer against its request, and chaining several verdicts.

use super::types::{Decision, Grant, Identifier, IdentifierKind, Verdict};

/// What was asked, as far as checking the answer goes: the checks on a grant differ.
#[derive(Clone, Copy)]
pub(super) enum Asked<'a> {
    /// Issuance or renewal: the identifiers asked for, and the requested lifetime
    /// (0 would mean none, which a checked request never has).
    Names(&'a [Identifier], u64),
    Distribution,
}

fn same(a: &Identifier, b: &Identifier) -> bool {
    a.kind == b.kind
        && match a.kind {
            IdentifierKind::Dns => a.value.eq_ignore_ascii_case(&b.value),
            IdentifierKind::Ip => a.value == b.value,
        }
}

fn answer_size(g: &Grant) -> usize {
    let ids = |v: &[Identifier]| v.iter().map(|i| i.value.len() + 16).sum::<usize>();
    ids(&g.identifiers) + ids(&g.authorize_by_control) + g.profile.as_ref().map_or(0, String::len)
}

/// Keeps log lines and reasons printable.
fn sanitize(reason: &str) -> String {
    reason.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// Checks a plugin's answer. `Err` is the reason it is malformed, which denies.
/// A valid allow comes back normalized: identifiers spelled as in the request, no
/// duplicates, authorize-by-control within the grant, lifetime capped at the request's.
pub(super) fn validate(decision: Decision, asked: Asked<'_>, max_answer_bytes: usize) -> Result<Decision, String> {
    let mut g = match decision {
        Decision::Deny(reason) => {
            if reason.len() > max_answer_bytes {
                return Err(format!("oversized answer: a deny reason of {} bytes exceeds the {max_answer_bytes}-byte limit", reason.len()));
            }
            // Sanitized before trimmed: a reason of control characters alone is no reason.
            let reason = sanitize(&reason);
            let reason = reason.trim();
            return Ok(Decision::Deny(if reason.is_empty() { "denied without a reason".to_owned() } else { reason.to_owned() }));
        }
        Decision::Allow(g) => g,
    };
    let size = answer_size(&g);
    if size > max_answer_bytes {
        return Err(format!(
            "oversized answer: a grant of {} identifiers ({size} bytes) exceeds the {max_answer_bytes}-byte limit",
            g.identifiers.len() + g.authorize_by_control.len()
        ));
    }
    if g.profile.as_deref() == Some("") {
        g.profile = None;
    }
    let (requested, requested_lifetime) = match asked {
        Asked::Distribution => {
            if !g.identifiers.is_empty() || !g.authorize_by_control.is_empty() {
                return Err("malformed answer: a distribution grant names identifiers".to_owned());
            }
            return Ok(Decision::Allow(Grant { lifetime_seconds: 0, profile: None, rekey: false, ..g }));
        }
        Asked::Names(ids, lifetime) => (ids, lifetime),
    };
    // Within the request, spelled as the request spells it, once each.
    let mut granted: Vec<Identifier> = Vec::with_capacity(g.identifiers.len());
    for id in &g.identifiers {
        let Some(req) = requested.iter().find(|r| same(r, id)) else {
            return Err(format!("malformed answer: the grant names {}, which the request does not", sanitize(&id.value)));
        };
        if !granted.iter().any(|x| same(x, req)) {
            granted.push(req.clone());
        }
    }
    if granted.is_empty() {
        return Err("malformed answer: an allow that grants no identifier".to_owned());
    }
    let mut by_control: Vec<Identifier> = Vec::with_capacity(g.authorize_by_control.len());
    for id in &g.authorize_by_control {
        let Some(x) = granted.iter().find(|x| same(x, id)) else {
            return Err(format!("malformed answer: authorize-by-control names {}, which the grant does not", sanitize(&id.value)));
        };
        if !by_control.iter().any(|y| same(y, x)) {
            by_control.push(x.clone());
        }
    }
    if g.lifetime_seconds == 0 {
        return Err("malformed answer: an allow with a zero lifetime".to_owned());
    }
    if requested_lifetime > 0 {
        g.lifetime_seconds = g.lifetime_seconds.min(requested_lifetime);
    }
    Ok(Decision::Allow(Grant { identifiers: granted, authorize_by_control: by_control, ..g }))
}

fn short(digest: &str) -> &str {
    digest.get(..8).unwrap_or(digest)
}

/// Chains several verdicts (operator plugins, then tenant plugins): all must allow, and
/// the grant is the narrowest: the identifiers every plugin granted, the shortest
/// lifetime, authorize-by-control only where every plugin agreed, rekey if any asked.
/// Plugins that choose a profile must all choose the same one, else deny. No verdict at
/// all denies: no policy, no certificate.
pub fn chain(verdicts: &[Verdict]) -> Decision {
    if verdicts.is_empty() {
        return Decision::Deny("no policy plugin decided".to_owned());
    }
    let denials: Vec<&str> = verdicts.iter().filter_map(|v| v.decision.deny_reason()).collect();
    if !denials.is_empty() {
        return Decision::Deny(denials.join("; "));
    }
    let mut acc: Option<Grant> = None;
    let mut chooser: Option<&str> = None;
    let mut names_any = false;
    for v in verdicts {
        let Decision::Allow(g) = &v.decision else {
            continue;
        };
        names_any |= !g.identifiers.is_empty();
        if let Some(p) = &g.profile {
            if let (Some(prev), Some(who)) = (acc.as_ref().and_then(|a| a.profile.as_ref()), chooser)
                && prev != p
            {
                return Decision::Deny(format!(
                    "plugins disagree on the profile: {} chose {prev:?}, {} chose {p:?}",
                    short(who),
                    short(&v.plugin_digest)
                ));
            }
            chooser = Some(&v.plugin_digest);
        }
        acc = Some(match acc {
            None => g.clone(),
            Some(a) => Grant {
                identifiers: a.identifiers.into_iter().filter(|i| g.identifiers.iter().any(|j| same(i, j))).collect(),
                lifetime_seconds: a.lifetime_seconds.min(g.lifetime_seconds),
                profile: a.profile.or_else(|| g.profile.clone()),
                authorize_by_control: a
                    .authorize_by_control
                    .into_iter()
                    .filter(|i| g.authorize_by_control.iter().any(|j| same(i, j)))
                    .collect(),
                rekey: a.rekey || g.rekey,
            },
        });
    }
    let Some(mut grant) = acc else {
        return Decision::Deny("no policy plugin decided".to_owned());
    };
    grant.authorize_by_control.retain(|i| grant.identifiers.iter().any(|j| same(i, j)));
    if names_any && grant.identifiers.is_empty() {
        return Decision::Deny("no identifier is allowed by every policy plugin".to_owned());
    }
    Decision::Allow(grant)
}

//! The host's side of a plugin's answer (`policy::fuzzing::answer`: the WIT `decision`
//! converted to the host's, then checked against the request: bounds, identifiers
//! within the request, authorize-by-control within the grant, lifetime), the chaining
//! of several verdicts, and `HookRequest::from_json` (what `plugin eval` reads).
//!
//! Byte 0 % 4 = 0, 1, 2: the rest is the JSON of a decide-issuance, -renewal or
//! -distribution request. 3: the rest is read with `arbitrary` as a request and up to
//! four answers. Nothing may panic, and what the host lets through must hold what it
//! promises.

#![no_main]

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use tenure_engine::policy::fuzzing::answer;
use tenure_engine::policy::{
    CertificateInfo, Decision, DistributionRequest, Grant, Hook, HookRequest, Identifier, IdentifierKind, IssuanceRequest, KeyInfo,
    KeyType, RenewalRequest, Trigger, Verdict, chain,
};

#[derive(Arbitrary, Debug)]
struct Id {
    ip: bool,
    value: String,
}

impl Id {
    fn get(&self) -> Identifier {
        Identifier { kind: if self.ip { IdentifierKind::Ip } else { IdentifierKind::Dns }, value: self.value.clone() }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Trig {
    AcmeOrder,
    AcmeFinalize,
    Renewal,
    Rekey,
    Provisioning,
}

impl Trig {
    fn get(self) -> Trigger {
        match self {
            Trig::AcmeOrder => Trigger::AcmeOrder,
            Trig::AcmeFinalize => Trigger::AcmeFinalize,
            Trig::Renewal => Trigger::Renewal,
            Trig::Rekey => Trigger::Rekey,
            Trig::Provisioning => Trigger::Provisioning,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Request {
    Issuance {
        tenant: String,
        account: Option<String>,
        trigger: Trig,
        identifiers: Vec<Id>,
        key: Option<(u8, u32)>,
        profile: String,
        lifetime: u64,
        resource: Option<String>,
    },
    Renewal {
        tenant: String,
        trigger: Trig,
        identifiers: Vec<Id>,
        resources: Vec<String>,
        profile: String,
        lifetime: u64,
        certificate: Option<(String, Vec<Id>, u64, u64)>,
    },
    Distribution {
        tenant: String,
        key_id: String,
        source: String,
        target: String,
    },
}

fn ids(v: &[Id]) -> Vec<Identifier> {
    v.iter().map(Id::get).collect()
}

impl Request {
    fn get(&self) -> HookRequest {
        match self {
            Request::Issuance { tenant, account, trigger, identifiers, key, profile, lifetime, resource } => {
                HookRequest::Issuance(IssuanceRequest {
                    tenant: tenant.clone(),
                    account: account.clone(),
                    trigger: trigger.get(),
                    identifiers: ids(identifiers),
                    key: key.map(|(t, bits)| KeyInfo {
                        key_type: [KeyType::EcdsaP256, KeyType::EcdsaP384, KeyType::Rsa, KeyType::Ed25519, KeyType::Unknown]
                            [usize::from(t) % 5],
                        bits,
                    }),
                    profile: profile.clone(),
                    requested_lifetime_seconds: *lifetime,
                    resource: resource.clone(),
                })
            }
            Request::Renewal { tenant, trigger, identifiers, resources, profile, lifetime, certificate } => {
                HookRequest::Renewal(RenewalRequest {
                    tenant: tenant.clone(),
                    trigger: trigger.get(),
                    identifiers: ids(identifiers),
                    resources: resources.clone(),
                    profile: profile.clone(),
                    requested_lifetime_seconds: *lifetime,
                    certificate: certificate.as_ref().map(|(serial, names, not_before, not_after)| CertificateInfo {
                        serial: serial.clone(),
                        identifiers: ids(names),
                        not_before: *not_before,
                        not_after: *not_after,
                        resources: resources.clone(),
                    }),
                })
            }
            Request::Distribution { tenant, key_id, source, target } => HookRequest::Distribution(DistributionRequest {
                tenant: tenant.clone(),
                key_id: key_id.clone(),
                source_hsm: source.clone(),
                target_hsm: target.clone(),
            }),
        }
    }
}

/// An identifier in an answer: one of the request's (as a plugin would echo it,
/// perhaps in another case), or any other.
#[derive(Arbitrary, Debug)]
enum AnswerId {
    Requested { index: u8, upper: bool },
    Other(Id),
}

#[derive(Arbitrary, Debug)]
enum Answer {
    Allow { identifiers: Vec<AnswerId>, lifetime: u64, profile: Option<String>, by_control: Vec<AnswerId>, rekey: bool },
    Deny(String),
}

fn requested(req: &HookRequest) -> &[Identifier] {
    match req {
        HookRequest::Issuance(r) => &r.identifiers,
        HookRequest::Renewal(r) => &r.identifiers,
        HookRequest::Distribution(_) => &[],
    }
}

fn requested_lifetime(req: &HookRequest) -> u64 {
    match req {
        HookRequest::Issuance(r) => r.requested_lifetime_seconds,
        HookRequest::Renewal(r) => r.requested_lifetime_seconds,
        HookRequest::Distribution(_) => 0,
    }
}

impl Answer {
    fn get(&self, req: &HookRequest) -> Decision {
        let asked = requested(req);
        let pick = |v: &[AnswerId]| -> Vec<Identifier> {
            v.iter()
                .filter_map(|a| match a {
                    AnswerId::Requested { index, upper } => {
                        let mut id = asked.get(usize::from(*index) % asked.len().max(1))?.clone();
                        if *upper {
                            id.value = id.value.to_uppercase();
                        }
                        Some(id)
                    }
                    AnswerId::Other(id) => Some(id.get()),
                })
                .collect()
        };
        match self {
            Answer::Allow { identifiers, lifetime, profile, by_control, rekey } => Decision::Allow(Grant {
                identifiers: pick(identifiers),
                lifetime_seconds: *lifetime,
                profile: profile.clone(),
                authorize_by_control: pick(by_control),
                rekey: *rekey,
            }),
            Answer::Deny(reason) => Decision::Deny(reason.clone()),
        }
    }
}

fn same(a: &Identifier, b: &Identifier) -> bool {
    a.kind == b.kind
        && match a.kind {
            IdentifierKind::Dns => a.value.eq_ignore_ascii_case(&b.value),
            IdentifierKind::Ip => a.value == b.value,
        }
}

/// What `validate` promises of an answer it lets through.
fn check_checked(req: &HookRequest, d: &Decision) {
    let g = match d {
        Decision::Deny(reason) => {
            assert!(!reason.trim().is_empty() && !reason.chars().any(char::is_control), "deny reason {reason:?}");
            return;
        }
        Decision::Allow(g) => g,
    };
    assert_ne!(g.profile.as_deref(), Some(""), "an empty profile let through");
    if let HookRequest::Distribution(_) = req {
        assert!(g.identifiers.is_empty() && g.authorize_by_control.is_empty(), "a distribution grant with names");
        return;
    }
    let asked = requested(req);
    assert!(!g.identifiers.is_empty(), "an allow that grants nothing");
    for (i, id) in g.identifiers.iter().enumerate() {
        assert!(asked.contains(id), "granted {id:?}, not spelled as requested");
        assert!(!g.identifiers[..i].iter().any(|x| same(x, id)), "granted {id:?} twice");
    }
    for (i, id) in g.authorize_by_control.iter().enumerate() {
        assert!(g.identifiers.contains(id), "by-control {id:?} outside the grant");
        assert!(!g.authorize_by_control[..i].iter().any(|x| same(x, id)), "by-control {id:?} twice");
    }
    assert!(g.lifetime_seconds > 0, "an allow with lifetime 0");
    let max = requested_lifetime(req);
    assert!(max == 0 || g.lifetime_seconds <= max, "lifetime {} above the requested {max}", g.lifetime_seconds);
}

/// What `chain` promises: any deny denies; an allow is within every plugin's grant.
fn check_chain(verdicts: &[Verdict], chained: &Decision) {
    let any_deny = verdicts.iter().any(|v| !v.decision.is_allow());
    match chained {
        Decision::Deny(_) => {}
        Decision::Allow(g) => {
            assert!(!verdicts.is_empty() && !any_deny, "chain allowed over a denial");
            for v in verdicts {
                let Some(each) = v.decision.grant() else { continue };
                assert!(g.lifetime_seconds <= each.lifetime_seconds, "chained lifetime above a plugin's");
                for id in &g.identifiers {
                    assert!(each.identifiers.iter().any(|x| same(x, id)), "chained {id:?} that a plugin did not grant");
                }
                for id in &g.authorize_by_control {
                    assert!(each.authorize_by_control.iter().any(|x| same(x, id)), "chained by-control {id:?} a plugin refused");
                }
            }
            for id in &g.authorize_by_control {
                assert!(g.identifiers.iter().any(|x| same(x, id)), "chained by-control {id:?} outside the grant");
            }
        }
    }
}

fn decide(req: &HookRequest, answers: &[Decision], max_answer_bytes: usize) {
    let verdicts: Vec<Verdict> = answers
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let decision = answer(req, a, max_answer_bytes).unwrap_or_else(Decision::Deny);
            if let Ok(d) = answer(req, a, max_answer_bytes) {
                check_checked(req, &d);
            }
            Verdict { decision, plugin_digest: format!("{i:064x}"), duration: Duration::ZERO }
        })
        .collect();
    check_chain(&verdicts, &chain(&verdicts));
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 4 {
        m @ 0..=2 => {
            let Ok(text) = std::str::from_utf8(rest) else { return };
            let hook = Hook::ALL[usize::from(m)];
            let Ok(req) = HookRequest::from_json(hook, text) else { return };
            assert_eq!(req.hook(), hook);
            // What the audit log records reads back as the same request.
            let json = serde_json::to_string(&req).expect("a request serializes");
            assert_eq!(HookRequest::from_json(hook, &json).as_ref(), Ok(&req), "{json}");
            let all = Decision::Allow(Grant {
                identifiers: requested(&req).to_vec(),
                lifetime_seconds: u64::MAX,
                profile: None,
                authorize_by_control: requested(&req).to_vec(),
                rekey: false,
            });
            decide(&req, &[all, Decision::Deny(String::new())], 64 << 10);
        }
        _ => {
            let mut u = Unstructured::new(rest);
            let (Ok(request), Ok(answers), Ok(limit)) =
                (Request::arbitrary(&mut u), Vec::<Answer>::arbitrary(&mut u), u.int_in_range(0..=u16::MAX))
            else {
                return;
            };
            let req = request.get();
            let answers: Vec<Decision> = answers.iter().take(4).map(|a| a.get(&req)).collect();
            decide(&req, &answers, usize::from(limit) * 4);
        }
    }
});

//! Test plugin: distribution by attribute. A key may be copied to an HSM whose
//! registry attribute `key-group` equals the source HSM's; any other target is
//! denied, naming both groups. Both HSMs are read from the registry (`resource_by_id`),
//! so a changed attribute changes the answer. Issuance keeps the default, deny (and so
//! renewal, which asks it).
#![no_std]

use tenure_policy_sdk::prelude::*;

const GROUP: &str = "key-group";

struct DistributeByAttribute;

/// The `key-group` of an active resource `id`; the reason to deny otherwise.
fn group_of(id: &str) -> Result<Result<String, String>, String> {
    let Some(r) = registry::resource_by_id(id)? else {
        return Ok(Err(format!("hsm {id} is not in the registry")));
    };
    if r.state != ResourceState::Active {
        return Ok(Err(format!("hsm {id} is not active")));
    }
    Ok(r.attributes.into_iter().find(|(k, _)| k == GROUP).map(|(_, v)| v).ok_or_else(|| format!("hsm {id} has no {GROUP} attribute")))
}

impl Policy for DistributeByAttribute {
    fn decide_distribution(req: DistributionRequest) -> Result<Decision, String> {
        let source = match group_of(&req.source_hsm)? {
            Ok(g) => g,
            Err(why) => return Ok(deny(why)),
        };
        let target = match group_of(&req.target_hsm)? {
            Ok(g) => g,
            Err(why) => return Ok(deny(why)),
        };
        if source != target {
            return Ok(deny(format!("{GROUP} differs: {} is in {source:?}, {} in {target:?}", req.source_hsm, req.target_hsm)));
        }
        Ok(allow_distribution())
    }
}

tenure_policy_sdk::policy!(DistributeByAttribute);

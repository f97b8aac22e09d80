//! Registry, plugin and audit queries. PostgreSQL: see
//! `../sqlite/registry.rs`, whose meaning this file keeps.

use super::*;
use crate::registry::*;

const RESOURCE_COLUMNS: &str =
    "id, tenant, kind, names, zones, addresses, state, attributes, anchor, created_at, updated_at, lease_expires";

impl RegistryStore for PgStore {
    /// Adds a resource and its `created` event. Refuses names, zones or
    /// addresses another tenant's live resource already holds.
    fn insert_resource(&self, id: &str, r: &NewResource, rule: ConflictRule<'_>, provision: ProvisionRule<'_>) -> Result<Resource> {
        self.tx(|tx| {
            if let Some(anchor) = &r.anchor {
                let anchor_tenant: Option<String> = value(tx, "SELECT tenant FROM resources WHERE id = $1", &[anchor])?;
                match anchor_tenant {
                    None => return Err(Error::malformed(format!("anchor resource {anchor} does not exist"))),
                    Some(t) if t != r.tenant => {
                        return Err(Error::malformed(format!("anchor resource {anchor} belongs to another tenant")));
                    }
                    Some(_) => {}
                }
            }
            rule(&overlaps(tx, &conflict_items(r), None)?)?;
            let t = now();
            let lease = stored_lease(&r.attributes)?;
            tx.execute(
                &format!(
                    "INSERT INTO resources ({RESOURCE_COLUMNS}, lease_seconds)
                     VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $8, $9, $9, $10, $11)"
                ),
                &[
                    &id,
                    &r.tenant,
                    &r.kind,
                    &json(&r.names),
                    &json(&r.zones),
                    &json(&r.addresses),
                    &json(&r.attributes),
                    &r.anchor,
                    &t,
                    &lease.map(|n| t + n),
                    &lease,
                ],
            )?;
            index_resource(tx, id, r)?;
            event(tx, id, &r.tenant, EventKind::Created, serde_json::json!({ "kind": r.kind }))?;
            let resource = resource_by_id(tx, id)?.ok_or_else(|| Error::internal("resource vanished"))?;
            super::provisioning::enqueue_if(tx, &resource, "created", provision)?;
            Ok(resource)
        })
    }

    fn resource(&self, id: &str) -> Result<Option<Resource>> {
        self.read(|c| resource_by_id(c, id))
    }

    fn resources(&self, tenant: Option<&str>) -> Result<Vec<Resource>> {
        self.read(|c| match tenant {
            Some(t) => {
                rows(c, &format!("SELECT {RESOURCE_COLUMNS} FROM resources WHERE tenant = $1 ORDER BY created_at, id"), &[&t], resource_row)
            }
            None => rows(c, &format!("SELECT {RESOURCE_COLUMNS} FROM resources ORDER BY created_at, id"), &[], resource_row),
        })
    }

    /// Live (not released) resources of `tenant` holding a DNS name, exactly or through a zone.
    fn resources_holding_name(&self, tenant: Option<&str>, name: &str) -> Result<Vec<Resource>> {
        self.read(|c| holding_name(c, tenant, name))
    }

    fn resources_holding_address(&self, tenant: Option<&str>, address: &str) -> Result<Vec<Resource>> {
        self.read(|c| holding_address(c, tenant, address))
    }

    /// The resources holding what an identifier's authorization is for (a
    /// wildcard's base name), by name or zone for DNS, by address for IP.
    fn resources_holding(&self, tenant: Option<&str>, id: &crate::identifier::Identifier) -> Result<Vec<Resource>> {
        let target = id.authorization_target();
        match target.kind {
            crate::identifier::IdentifierKind::Dns => self.resources_holding_name(tenant, &target.value),
            crate::identifier::IdentifierKind::Ip => self.resources_holding_address(tenant, &target.value),
        }
    }

    fn resources_under(&self, zone: &str) -> Result<Vec<Resource>> {
        self.read(|c| {
            let found = names_under(c, zone)?;
            collect_live(c, None, found)
        })
    }

    /// Changes a resource's state (suspend, resume, release) and logs the event.
    fn set_resource_state(&self, id: &str, state: ResourceState, kind: EventKind, provision: ProvisionRule<'_>) -> Result<Resource> {
        self.tx(|tx| {
            let current = resource_by_id(tx, id)?.ok_or_else(|| Error::not_found(format!("no resource {id}")))?;
            if current.state == ResourceState::Released {
                return Err(Error::conflict(crate::Conflict::ResourceState, format!("resource {id} is released already")));
            }
            let t = now();
            tx.execute("UPDATE resources SET state = $2, updated_at = $3 WHERE id = $1", &[&id, &state.as_str(), &t])?;
            let mut detail = serde_json::json!({ "from": current.state.as_str() });
            match state {
                ResourceState::Released => {
                    // RFC 5280 reason 5, cessationOfOperation: the resource is gone.
                    let revoked = super::lifecycle::stop_certificates_of_resource(tx, id, 5, &format!("resource {id} was released"))?;
                    detail["revoked_certificates"] = revoked.into();
                }
                ResourceState::Suspended => {
                    detail["lapsed_certificates"] = lapse_certificates_of(tx, id)?.into();
                    let notice = serde_json::json!({ "resource": id, "tenant": current.tenant, "reason": "suspended by the platform",
                                                     "lapsed_certificates": detail["lapsed_certificates"] });
                    super::provisioning::notify_resource(tx, crate::lifecycle::events::SUSPENDED, id, &notice)?;
                }
                ResourceState::Active => {
                    // The lease runs again from the resumption, not from before the suspension.
                    tx.execute(
                        "UPDATE resources SET lease_expires = $2 + lease_seconds WHERE id = $1 AND lease_seconds IS NOT NULL",
                        &[&id, &t],
                    )?;
                    detail["rescheduled_certificates"] = reschedule_certificates_of(tx, id)?.into();
                }
            }
            event(tx, id, &current.tenant, kind, detail)?;
            let resource = resource_by_id(tx, id)?.ok_or_else(|| Error::internal("resource vanished"))?;
            // A resource suspended before it got its certificate gets it now.
            if state == ResourceState::Active && !has_live_certificate(tx, id)? {
                super::provisioning::enqueue_if(tx, &resource, "resumed", provision)?;
            }
            Ok(resource)
        })
    }

    /// Moves a resource to another tenant and logs the event.
    fn transfer_resource(&self, id: &str, to: &str, rule: ConflictRule<'_>, provision: ProvisionRule<'_>) -> Result<Resource> {
        self.tx(|tx| {
            let current = resource_by_id(tx, id)?.ok_or_else(|| Error::not_found(format!("no resource {id}")))?;
            if current.state == ResourceState::Released {
                return Err(Error::conflict(crate::Conflict::ResourceState, format!("resource {id} is released")));
            }
            if current.tenant == to {
                return Err(Error::malformed(format!("resource {id} already belongs to {to}")));
            }
            let nr = current.moved_to(to);
            rule(&overlaps(tx, &conflict_items(&nr), Some(id))?)?;
            // An anchor in the old tenant makes no sense in the new one.
            tx.execute("UPDATE resources SET tenant = $2, anchor = NULL, updated_at = $3 WHERE id = $1", &[&id, &to, &now()])?;
            // RFC 5280 reason 4, superseded: the new holder gets its own certificates.
            let revoked = super::lifecycle::stop_certificates_of_resource(tx, id, 4, &format!("resource {id} was transferred to {to}"))?;
            event(
                tx,
                id,
                to,
                EventKind::Transferred,
                serde_json::json!({ "from": current.tenant, "to": to, "revoked_certificates": revoked }),
            )?;
            let resource = resource_by_id(tx, id)?.ok_or_else(|| Error::internal("resource vanished"))?;
            // The new holder's certificate, if the resource asks for one, under its own intermediate.
            if resource.state == ResourceState::Active {
                super::provisioning::enqueue_if(tx, &resource, "transferred", provision)?;
            }
            Ok(resource)
        })
    }

    fn set_resource_attributes(&self, id: &str, changes: &AttributeChanges, provision: ProvisionRule<'_>) -> Result<Resource> {
        self.tx(|tx| {
            let current = resource_by_id(tx, id)?.ok_or_else(|| Error::not_found(format!("no resource {id}")))?;
            if current.state == ResourceState::Released {
                return Err(Error::conflict(crate::Conflict::ResourceState, format!("resource {id} is released")));
            }
            let mut attributes = current.attributes.clone();
            let (mut set, mut removed) = (Vec::new(), Vec::new());
            for (k, v) in changes {
                match v.as_deref().filter(|v| !v.is_empty()) {
                    Some(v) => {
                        if attributes.insert(k.clone(), v.to_string()).as_deref() != Some(v) {
                            set.push(k.as_str());
                        }
                    }
                    None => {
                        if attributes.remove(k).is_some() {
                            removed.push(k.as_str());
                        }
                    }
                }
            }
            let t = now();
            tx.execute("UPDATE resources SET attributes = $2, updated_at = $3 WHERE id = $1", &[&id, &json(&attributes), &t])?;
            // Only a change that names the lease touches it (an attribute kept
            // from before leases existed is no lease until it is set again).
            if changes.contains_key(crate::registry::LEASE_ATTRIBUTE) {
                let lease = stored_lease(&attributes)?;
                let old_lease: Option<i64> = get(&tx.query_one("SELECT lease_seconds FROM resources WHERE id = $1", &[&id])?, 0)?;
                if lease != old_lease {
                    // A new lease length counts from now: the platform's monitor
                    // that set it has just spoken for the resource.
                    tx.execute(
                        "UPDATE resources SET lease_seconds = $2, lease_expires = $3 WHERE id = $1",
                        &[&id, &lease, &lease.map(|n| t + n)],
                    )?;
                }
            }
            // Keys only: values may be secrets (a webhook URL's token).
            event(tx, id, &current.tenant, EventKind::AttributesChanged, serde_json::json!({ "set": set, "removed": removed }))?;
            let resource = resource_by_id(tx, id)?.ok_or_else(|| Error::internal("resource vanished"))?;
            if resource.state == ResourceState::Active && !(set.is_empty() && removed.is_empty()) {
                super::provisioning::enqueue_if(tx, &resource, "attributes-changed", provision)?;
            }
            Ok(resource)
        })
    }

    fn confirm_resource(&self, id: &str) -> Result<Resource> {
        self.tx(|tx| {
            let current = resource_by_id(tx, id)?.ok_or_else(|| Error::not_found(format!("no resource {id}")))?;
            if current.state != ResourceState::Active {
                return Err(Error::conflict(
                    crate::Conflict::ResourceState,
                    format!(
                        "resource {id} is {}; only an active resource's lease can be confirmed (resume restarts it)",
                        current.state.as_str()
                    ),
                ));
            }
            let t = now();
            let n = tx.execute(
                "UPDATE resources SET lease_expires = $2 + lease_seconds WHERE id = $1 AND lease_seconds IS NOT NULL",
                &[&id, &t],
            )?;
            if n != 1 {
                return Err(Error::conflict(
                    crate::Conflict::ResourceState,
                    format!("resource {id} has no lease to confirm (its attribute {} is not set)", crate::registry::LEASE_ATTRIBUTE),
                ));
            }
            let confirmed = resource_by_id(tx, id)?.ok_or_else(|| Error::internal("resource vanished"))?;
            event(tx, id, &current.tenant, EventKind::Confirmed, serde_json::json!({ "lease_expires": confirmed.lease_expires }))?;
            Ok(confirmed)
        })
    }

    fn expired_leases(&self, at: UnixTime, limit: i64) -> Result<Vec<String>> {
        self.read(|c| {
            // Walks resources_lease_due (active, leased) from its oldest deadline.
            ids(
                c,
                "SELECT id FROM resources WHERE state = 'active' AND lease_expires IS NOT NULL AND lease_expires <= $1
                 ORDER BY lease_expires LIMIT $2",
                &[&at, &limit],
            )
        })
    }

    fn suspend_expired_lease(&self, id: &str, at: UnixTime) -> Result<Option<Resource>> {
        self.tx(|tx| {
            let Some(current) = resource_by_id(tx, id)? else { return Ok(None) };
            let n = tx.execute(
                "UPDATE resources SET state = 'suspended', updated_at = $3
                 WHERE id = $1 AND state = 'active' AND lease_expires IS NOT NULL AND lease_expires <= $2",
                &[&id, &at, &now()],
            )?;
            if n != 1 {
                return Ok(None);
            }
            let lapsed = lapse_certificates_of(tx, id)?;
            let detail = serde_json::json!({
                "from": "active",
                "reason": "lease expired",
                "lease_expires": current.lease_expires,
                "lapsed_certificates": lapsed,
            });
            let notice = serde_json::json!({ "resource": id, "tenant": current.tenant, "reason": "lease expired",
                                             "lease_expires": current.lease_expires, "lapsed_certificates": lapsed });
            super::provisioning::notify_resource(tx, crate::lifecycle::events::SUSPENDED, id, &notice)?;
            event(tx, id, &current.tenant, EventKind::Suspended, detail)?;
            resource_by_id(tx, id)
        })
    }

    fn resource_events(&self, id: &str) -> Result<Vec<Event>> {
        self.read(|c| {
            rows(
                c,
                "SELECT seq, resource_id, tenant, kind, at, detail FROM resource_events WHERE resource_id = $1 ORDER BY seq",
                &[&id],
                |r| {
                    Ok(Event {
                        seq: get(r, 0)?,
                        resource_id: get(r, 1)?,
                        tenant: get(r, 2)?,
                        kind: get(r, 3)?,
                        at: get(r, 4)?,
                        detail: from_json(&get::<String>(r, 5)?)?,
                    })
                },
            )
        })
    }
}

impl PluginStore for PgStore {
    /// Installs (or replaces) the plugin of a scope and bumps the plugin generation.
    fn install_plugin(&self, scope: &str, digest: &str, wasm: &[u8]) -> Result<()> {
        self.tx(|tx| {
            tx.execute(
                "INSERT INTO plugins (scope, digest, wasm, installed_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (scope) DO UPDATE SET digest = excluded.digest, wasm = excluded.wasm, installed_at = excluded.installed_at,
                                                   signed_by = NULL",
                &[&scope, &digest, &wasm, &now()],
            )?;
            bump_generation(tx)
        })
    }

    fn remove_plugin(&self, scope: &str) -> Result<bool> {
        self.tx(|tx| {
            let n = tx.execute("DELETE FROM plugins WHERE scope = $1", &[&scope])?;
            bump_generation(tx)?;
            Ok(n == 1)
        })
    }

    /// (scope, digest, installed_at) of every installed plugin.
    fn plugins(&self) -> Result<Vec<(String, String, i64)>> {
        self.read(|c| {
            rows(c, "SELECT scope, digest, installed_at FROM plugins ORDER BY scope", &[], |r| Ok((get(r, 0)?, get(r, 1)?, get(r, 2)?)))
        })
    }

    fn plugin_wasm(&self, scope: &str) -> Result<Option<(String, Vec<u8>)>> {
        self.read(|c| row(c, "SELECT digest, wasm FROM plugins WHERE scope = $1", &[&scope], |r| Ok((get(r, 0)?, get(r, 1)?))))
    }

    /// A counter bumped by every plugin change, so servers notice installs made by the CLI.
    fn plugin_generation(&self) -> Result<i64> {
        self.read(generation)
    }
}

impl AuditStore for PgStore {
    fn audit(&self, tenant: Option<&str>, limit: i64) -> Result<Vec<AuditRecord>> {
        self.read(|c| {
            let sql = "SELECT seq, at, hook, tenant, account, plugins, input_digest, input, outcome, reason, grant_json, duration_us,
                              signers
                       FROM audit WHERE ($1::TEXT IS NULL OR tenant = $1) ORDER BY seq DESC LIMIT $2";
            let mut out = rows(c, sql, &[&tenant, &limit], |r| {
                let grant: Option<String> = get(r, 10)?;
                let plugins: Vec<String> = from_json(&get::<String>(r, 5)?)?;
                let signers: Option<String> = get(r, 12)?;
                Ok(AuditRecord {
                    signers: crate::audit::signers_read(signers.as_deref().map(from_json).transpose()?, plugins.len()),
                    seq: get(r, 0)?,
                    at: get(r, 1)?,
                    hook: get(r, 2)?,
                    tenant: get(r, 3)?,
                    account: get(r, 4)?,
                    plugins,
                    input_digest: get(r, 6)?,
                    input: from_json(&get::<String>(r, 7)?)?,
                    outcome: get(r, 8)?,
                    reason: get(r, 9)?,
                    grant: grant.as_deref().map(from_json).transpose()?,
                    duration_us: get(r, 11)?,
                })
            })?;
            out.reverse();
            Ok(out)
        })
    }

    /// Appends an audit record on its own (a denial that changes no other state).
    fn record_audit(&self, rec: &AuditRecord) -> Result<()> {
        self.tx(|tx| append_audit(tx, rec))
    }
}

/// Appends an audit record inside the caller's transaction, so a decision is
/// logged exactly when the state change it allowed (or refused) is.
pub(crate) fn append_audit(tx: &mut Tx<'_>, rec: &AuditRecord) -> Result<()> {
    tx.execute(
        "INSERT INTO audit (at, hook, tenant, account, plugins, input_digest, input, outcome, reason, grant_json, duration_us,
                            signers)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        &[
            &rec.at,
            &rec.hook,
            &rec.tenant,
            &rec.account,
            &json(&rec.plugins),
            &rec.input_digest,
            &rec.input.to_string(),
            &rec.outcome,
            &rec.reason,
            &rec.grant.as_ref().map(|g| g.to_string()),
            &rec.duration_us,
            &json(&rec.signers),
        ],
    )?;
    Ok(())
}

/// The plugin generation as stored (a decimal number in `settings`), 0 when unset.
fn generation<C: Db>(c: &mut C) -> Result<i64> {
    let v: Option<Vec<u8>> = value(c, "SELECT value FROM settings WHERE key = 'plugin_generation'", &[])?;
    Ok(v.and_then(|b| String::from_utf8(b).ok()).and_then(|s| s.parse().ok()).unwrap_or(0))
}

/// Read and write in one SERIALIZABLE transaction: two servers bumping at
/// once collide, and the one retried counts on from the other's value.
pub(super) fn bump_generation(tx: &mut Tx<'_>) -> Result<()> {
    let next = (generation(tx)? + 1).to_string().into_bytes();
    tx.execute(
        "INSERT INTO settings (key, value) VALUES ('plugin_generation', $1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[&next],
    )?;
    Ok(())
}

/// What a resource would hold, for the conflict rule: (is a zone, item), with
/// addresses as `ip:ADDRESS`.
fn conflict_items(r: &NewResource) -> Vec<(bool, String)> {
    let mut v: Vec<(bool, String)> = r.names.iter().map(|n| (false, n.clone())).collect();
    v.extend(r.zones.iter().map(|z| (true, z.clone())));
    v.extend(r.addresses.iter().map(|a| (false, format!("ip:{a}"))));
    v
}

/// The resources with a name or zone strictly under `zone`: one range of the
/// reversed-name index.
fn names_under<C: Db>(c: &mut C, zone: &str) -> Result<Vec<String>> {
    let (from, to) = crate::registry::under_zone_range(zone);
    ids(c, "SELECT DISTINCT resource_id FROM resource_names WHERE reversed >= $1 AND reversed < $2", &[&from, &to])
}

/// The live resources (other than `except`) that hold each item, or, for a
/// zone, anything inside it or a zone above it: the facts the registry's
/// conflict rule judges. Read inside the caller's SERIALIZABLE transaction,
/// so a concurrent add of an overlapping resource makes one of them retry.
fn overlaps<C: Db>(c: &mut C, items: &[(bool, String)], except: Option<&str>) -> Result<Vec<Overlap>> {
    let mut out = Vec::new();
    for (is_zone, item) in items {
        let holders = if let Some(addr) = item.strip_prefix("ip:") {
            holding_address(c, None, addr)?
        } else {
            let mut h = holding_name(c, None, item)?;
            if *is_zone {
                for id in names_under(c, item)? {
                    if let Some(r) = resource_by_id(c, &id)?
                        && r.state != ResourceState::Released
                    {
                        h.push(r);
                    }
                }
            }
            h
        };
        let item = item.trim_start_matches("ip:");
        out.extend(holders.into_iter().filter(|r| Some(r.id.as_str()) != except).map(|holder| Overlap { item: item.to_string(), holder }));
    }
    Ok(out)
}

fn index_resource(tx: &mut Tx<'_>, id: &str, r: &NewResource) -> Result<()> {
    let names = "INSERT INTO resource_names (name, zone, resource_id, reversed) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";
    for n in &r.names {
        tx.execute(names, &[n, &false, &id, &crate::registry::reversed_labels(n)])?;
    }
    for z in &r.zones {
        tx.execute(names, &[z, &true, &id, &crate::registry::reversed_labels(z)])?;
    }
    let addrs = "INSERT INTO resource_addresses (address, resource_id) VALUES ($1, $2) ON CONFLICT DO NOTHING";
    for a in &r.addresses {
        tx.execute(addrs, &[a, &id])?;
    }
    Ok(())
}

/// The lease the (validated) attributes give, for the lease columns.
fn stored_lease(attributes: &std::collections::BTreeMap<String, String>) -> Result<Option<i64>> {
    crate::registry::lease_seconds(attributes).map_err(|e| Error::internal(format!("unvalidated lease: {}", e.detail)))
}

/// Lapses the scheduled certificates bound to a resource being suspended:
/// not renewed meanwhile, not revoked. Returns how many.
fn lapse_certificates_of(tx: &mut Tx<'_>, id: &str) -> Result<usize> {
    Ok(count(tx.execute(
        "UPDATE certificates SET renewal = 'lapsed', renewal_note = $2
         WHERE serial IN (SELECT serial FROM certificate_resources WHERE resource_id = $1) AND renewal = 'scheduled'",
        &[&id, &format!("{SUSPENDED_LAPSE_NOTE} {id}")],
    )?))
}

/// Schedules again the certificates of a resumed resource that a suspension
/// lapsed, unless another resource they are bound to is still not active.
/// Their renewal time is kept: those whose window opened meanwhile are due at
/// once, and the next sweep reissues them. Returns how many.
fn reschedule_certificates_of(tx: &mut Tx<'_>, id: &str) -> Result<usize> {
    // The note is ours (no LIKE wildcards in it); PostgreSQL's LIKE is
    // case-sensitive where SQLite's was not, which the exact note does not mind.
    Ok(count(tx.execute(
        "UPDATE certificates SET renewal = 'scheduled', renewal_note = NULL
         WHERE serial IN (SELECT serial FROM certificate_resources WHERE resource_id = $1)
           AND renewal = 'lapsed' AND renewal_note LIKE $2 AND revoked_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM certificate_resources b JOIN resources r ON r.id = b.resource_id
                           WHERE b.serial = certificates.serial AND r.state <> 'active')",
        &[&id, &format!("{SUSPENDED_LAPSE_NOTE} %")],
    )?))
}

/// Whether a certificate bound to the resource is still renewed (or the client's) and not revoked.
fn has_live_certificate(tx: &mut Tx<'_>, id: &str) -> Result<bool> {
    get(
        &tx.query_one(
            "SELECT EXISTS (SELECT 1 FROM certificates c JOIN certificate_resources b ON b.serial = c.serial
                            WHERE b.resource_id = $1 AND c.revoked_at IS NULL AND c.renewal IN ('scheduled', 'client'))",
            &[&id],
        )?,
        0,
    )
}

pub(super) fn event(tx: &mut Tx<'_>, id: &str, tenant: &str, kind: EventKind, detail: serde_json::Value) -> Result<()> {
    tx.execute(
        "INSERT INTO resource_events (resource_id, tenant, kind, at, detail) VALUES ($1, $2, $3, $4, $5)",
        &[&id, &tenant, &kind.as_str(), &now(), &detail.to_string()],
    )?;
    Ok(())
}

/// One statement, where SQLite (in process) asks once per enclosing zone: a
/// round trip to PostgreSQL costs more than the lookup, and an issuance asks
/// this several times (measured: 25 statements an issuance became 5).
fn holding_name<C: Db>(c: &mut C, tenant: Option<&str>, name: &str) -> Result<Vec<Resource>> {
    let name = name.strip_prefix("*.").unwrap_or(name);
    let zones: Vec<&str> = enclosing_zones(name);
    let sql = format!(
        "SELECT {} FROM resources r WHERE r.id IN (
             SELECT resource_id FROM resource_names WHERE (name = $1 AND zone = false) OR (zone = true AND name = ANY($2)))
           AND r.state <> 'released' AND ($3::text IS NULL OR r.tenant = $3)
         ORDER BY r.id",
        RESOURCE_COLUMNS.split(", ").map(|c| format!("r.{c}")).collect::<Vec<_>>().join(", ")
    );
    rows(c, &sql, &[&name, &zones, &tenant], resource_row)
}

fn holding_address<C: Db>(c: &mut C, tenant: Option<&str>, address: &str) -> Result<Vec<Resource>> {
    let found = ids(c, "SELECT resource_id FROM resource_addresses WHERE address = $1", &[&address])?;
    collect_live(c, tenant, found)
}

fn collect_live<C: Db>(c: &mut C, tenant: Option<&str>, mut ids: Vec<String>) -> Result<Vec<Resource>> {
    ids.sort();
    ids.dedup();
    let mut out = Vec::new();
    for id in ids {
        if let Some(r) = resource_by_id(c, &id)?
            && r.state != ResourceState::Released
            && tenant.is_none_or(|t| t == r.tenant)
        {
            out.push(r);
        }
    }
    Ok(out)
}

/// A resource from the columns of [`RESOURCE_COLUMNS`], in that order.
fn resource_row(r: &Row) -> Result<Resource> {
    let state: String = get(r, 6)?;
    Ok(Resource {
        state: ResourceState::parse(&state).ok_or_else(|| Error::internal(format!("stored resource state {state:?}")))?,
        names: from_json(&get::<String>(r, 3)?)?,
        zones: from_json(&get::<String>(r, 4)?)?,
        addresses: from_json(&get::<String>(r, 5)?)?,
        attributes: from_json(&get::<String>(r, 7)?)?,
        id: get(r, 0)?,
        tenant: get(r, 1)?,
        kind: get(r, 2)?,
        anchor: get(r, 8)?,
        created_at: get(r, 9)?,
        updated_at: get(r, 10)?,
        lease_expires: get(r, 11)?,
    })
}

fn resource_by_id<C: Db>(c: &mut C, id: &str) -> Result<Option<Resource>> {
    row(c, &format!("SELECT {RESOURCE_COLUMNS} FROM resources WHERE id = $1"), &[&id], resource_row)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A fresh store with tenants `a` and `b`; None without a test cluster.
    fn store() -> Option<(String, PgStore)> {
        let url = super::super::testdb::fresh()?;
        let store = PgStore::open(&url).unwrap();
        for t in ["a", "b"] {
            store.insert_tenant(t, &[], b"der", b"key", b"secret", None, &|_| Ok(())).unwrap();
        }
        Some((url, store))
    }

    fn new(tenant: &str, names: &[&str], zones: &[&str]) -> NewResource {
        NewResource {
            tenant: tenant.into(),
            kind: "web".into(),
            names: names.iter().map(|s| s.to_string()).collect(),
            zones: zones.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    const ALLOW: ConflictRule<'static> = &|_| Ok(());
    const NEVER: ProvisionRule<'static> = &|_| false;

    /// Refuses what another tenant holds, as the registry's rule does.
    fn foreign(tenant: &'static str) -> impl Fn(&[Overlap]) -> Result<()> {
        move |o: &[Overlap]| match o.iter().find(|o| o.holder.tenant != tenant) {
            Some(o) => Err(Error::conflict(
                crate::Conflict::HeldElsewhere { resource: o.holder.id.clone(), tenant: o.holder.tenant.clone() },
                format!("{} is held", o.item),
            )),
            None => Ok(()),
        }
    }

    /// A scheduled certificate bound to `resources`, written directly (issuance is not this file's).
    fn certificate(store: &PgStore, serial: &str, resources: &[&str]) {
        store
            .read(|c| {
                let issuer: i64 = get(&c.query_one("SELECT issuer_id FROM tenants WHERE name = 'a'", &[])?, 0)?;
                c.execute(
                    "INSERT INTO certificates (serial, tenant, issuer_id, der, identifiers, not_before, not_after, created_at, renewal, renew_at)
                     VALUES ($1, 'a', $2, $3, '[]', 0, 100, 0, 'scheduled', 50)",
                    &[&serial, &issuer, &b"der".to_vec()],
                )?;
                for r in resources {
                    c.execute("INSERT INTO certificate_resources (serial, resource_id) VALUES ($1, $2)", &[&serial, r])?;
                }
                Ok(())
            })
            .unwrap();
    }

    fn renewal(store: &PgStore, serial: &str) -> (String, Option<String>) {
        store
            .read(|c| {
                let r = c.query_one("SELECT renewal, renewal_note FROM certificates WHERE serial = $1", &[&serial])?;
                Ok((get(&r, 0)?, get(&r, 1)?))
            })
            .unwrap()
    }

    #[test]
    fn conflict_rule_sees_overlaps() {
        let Some((_, store)) = store() else { return };
        let zone = store.insert_resource("r1", &new("a", &[], &["example.com"]), ALLOW, NEVER).unwrap();
        assert_eq!(zone.state, ResourceState::Active);
        // A name inside the zone, asked for by another tenant.
        let seen = std::sync::Mutex::new(Vec::new());
        let rule = |o: &[Overlap]| {
            seen.lock().unwrap().extend(o.iter().map(|o| (o.item.clone(), o.holder.id.clone())));
            foreign("b")(o)
        };
        let err = store.insert_resource("r2", &new("b", &["www.example.com"], &[]), &rule, NEVER).unwrap_err();
        assert_eq!(err.kind, crate::ErrorKind::Conflict);
        assert_eq!(*seen.lock().unwrap(), vec![("www.example.com".to_string(), "r1".to_string())]);
        assert!(store.resource("r2").unwrap().is_none());
        // A zone above a held name sees it too; the same tenant may hold both.
        store.insert_resource("r3", &new("a", &["mail.other.org"], &[]), ALLOW, NEVER).unwrap();
        seen.lock().unwrap().clear();
        let rule = |o: &[Overlap]| {
            seen.lock().unwrap().extend(o.iter().map(|o| (o.item.clone(), o.holder.id.clone())));
            Ok(())
        };
        store.insert_resource("r4", &new("a", &[], &["other.org"]), &rule, NEVER).unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![("other.org".to_string(), "r3".to_string())]);
        // Lookups through the index: exact, through a zone, under a zone.
        let ids = |v: Vec<Resource>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(store.resources_holding_name(None, "*.x.example.com").unwrap()), vec!["r1"]);
        assert_eq!(ids(store.resources_holding_name(Some("b"), "x.example.com").unwrap()), Vec::<String>::new());
        assert_eq!(ids(store.resources_holding_name(None, "mail.other.org").unwrap()), vec!["r3", "r4"]);
        assert_eq!(ids(store.resources_under("other.org").unwrap()), vec!["r3"]);
        assert_eq!(ids(store.resources(Some("a")).unwrap()).len(), 3);
        // Transfer judges the other holders, not the resource itself.
        seen.lock().unwrap().clear();
        let moved = store.transfer_resource("r3", "b", &rule, NEVER).unwrap();
        assert_eq!((moved.tenant.as_str(), moved.state), ("b", ResourceState::Active));
        assert_eq!(*seen.lock().unwrap(), vec![("mail.other.org".to_string(), "r4".to_string())]);
        assert_eq!(store.transfer_resource("r3", "b", ALLOW, NEVER).unwrap_err().kind, crate::ErrorKind::Malformed);
        // A release ends the resource: it holds nothing and changes no more.
        store.set_resource_state("r3", ResourceState::Released, EventKind::Released, NEVER).unwrap();
        assert_eq!(ids(store.resources_holding_name(None, "mail.other.org").unwrap()), vec!["r4"]);
        let err = store.set_resource_state("r3", ResourceState::Active, EventKind::Resumed, NEVER).unwrap_err();
        assert_eq!(err.conflict, Some(crate::Conflict::ResourceState));
        let kinds: Vec<_> = store.resource_events("r3").unwrap().into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec!["created", "transferred", "released"]);
    }

    #[test]
    fn racing_adds_cannot_both_pass_the_rule() {
        let Some((url, store)) = store() else { return };
        let other = Arc::new(PgStore::open(&url).unwrap());
        let store = Arc::new(store);
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let handles: Vec<_> = [(store.clone(), "a", "x1"), (other, "b", "x2")]
            .into_iter()
            .map(|(s, tenant, id)| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let rule = |o: &[Overlap]| {
                        // Both have read "no overlap" before either writes.
                        barrier.wait();
                        foreign(tenant)(o)
                    };
                    // The barrier is passed once; a retry must not wait for the other.
                    let once = std::sync::atomic::AtomicBool::new(false);
                    let rule = |o: &[Overlap]| {
                        if once.swap(true, std::sync::atomic::Ordering::SeqCst) { foreign(tenant)(o) } else { rule(o) }
                    };
                    s.insert_resource(id, &new(tenant, &["race.example.net"], &[]), &rule, NEVER)
                })
            })
            .collect();
        let outcomes: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 1, "{outcomes:?}");
        let err = outcomes.into_iter().find_map(|o| o.err()).unwrap();
        assert_eq!(err.kind, crate::ErrorKind::Conflict, "{err:?}");
        assert_eq!(store.resources_holding_name(None, "race.example.net").unwrap().len(), 1);
    }

    #[test]
    fn suspension_lapses_certificates_and_resume_schedules_them() {
        let Some((_, store)) = store() else { return };
        let mut leased = new("a", &["one.example.com"], &[]);
        leased.attributes.insert(LEASE_ATTRIBUTE.into(), "3600".into());
        let r1 = store.insert_resource("r1", &leased, ALLOW, NEVER).unwrap();
        assert!(r1.lease_expires.is_some());
        store.insert_resource("r2", &new("a", &["two.example.com"], &[]), ALLOW, NEVER).unwrap();
        certificate(&store, "c1", &["r1"]);
        certificate(&store, "c2", &["r1", "r2"]);
        certificate(&store, "c3", &["r2"]);

        let s = store.set_resource_state("r1", ResourceState::Suspended, EventKind::Suspended, NEVER).unwrap();
        assert_eq!(s.state, ResourceState::Suspended);
        assert_eq!(renewal(&store, "c1"), ("lapsed".into(), Some(format!("{SUSPENDED_LAPSE_NOTE} r1"))));
        assert_eq!(renewal(&store, "c2").0, "lapsed");
        assert_eq!(renewal(&store, "c3").0, "scheduled");
        store.set_resource_state("r2", ResourceState::Suspended, EventKind::Suspended, NEVER).unwrap();
        assert_eq!(renewal(&store, "c3").0, "lapsed");

        // c2 stays lapsed while r2, also bound to it, is still suspended.
        let resumed = store.set_resource_state("r1", ResourceState::Active, EventKind::Resumed, NEVER).unwrap();
        assert!(resumed.lease_expires.unwrap() >= now() + 3599);
        assert_eq!(renewal(&store, "c1"), ("scheduled".into(), None));
        assert_eq!(renewal(&store, "c2").0, "lapsed");
        store.set_resource_state("r2", ResourceState::Active, EventKind::Resumed, NEVER).unwrap();
        assert_eq!(renewal(&store, "c2").0, "scheduled");
        assert_eq!(renewal(&store, "c3").0, "scheduled");

        let events = store.resource_events("r1").unwrap();
        let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, vec!["created", "suspended", "resumed"]);
        assert_eq!(events[1].detail["lapsed_certificates"], 2);
        assert_eq!(events[2].detail["rescheduled_certificates"], 1);

        // An expired lease suspends once; a confirmed one not at all.
        assert!(store.expired_leases(now(), 10).unwrap().is_empty());
        let later = now() + 7200;
        assert_eq!(store.expired_leases(later, 10).unwrap(), vec!["r1"]);
        let confirmed = store.confirm_resource("r1").unwrap();
        assert!(confirmed.lease_expires.is_some());
        assert_eq!(store.confirm_resource("r2").unwrap_err().kind, crate::ErrorKind::Conflict);
        let s = store.suspend_expired_lease("r1", later).unwrap().unwrap();
        assert_eq!(s.state, ResourceState::Suspended);
        assert_eq!(renewal(&store, "c1").0, "lapsed");
        assert!(store.suspend_expired_lease("r1", later).unwrap().is_none());
        assert_eq!(store.confirm_resource("r1").unwrap_err().kind, crate::ErrorKind::Conflict);
    }

    #[test]
    fn attributes_change_the_lease_and_log_keys_only() {
        let Some((_, store)) = store() else { return };
        store.insert_resource("r1", &new("a", &["one.example.com"], &[]), ALLOW, NEVER).unwrap();
        let mut changes = AttributeChanges::new();
        changes.insert(LEASE_ATTRIBUTE.into(), Some("600".into()));
        changes.insert("webhook".into(), Some("https://hook.example/secret".into()));
        let r = store.set_resource_attributes("r1", &changes, NEVER).unwrap();
        assert!(r.lease_expires.is_some_and(|t| t >= now() + 599));
        assert_eq!(r.attributes.get("webhook").map(String::as_str), Some("https://hook.example/secret"));
        let mut changes = AttributeChanges::new();
        changes.insert(LEASE_ATTRIBUTE.into(), None);
        let r = store.set_resource_attributes("r1", &changes, NEVER).unwrap();
        assert_eq!(r.lease_expires, None);
        let events = store.resource_events("r1").unwrap();
        assert_eq!(events[1].detail, serde_json::json!({ "set": [LEASE_ATTRIBUTE, "webhook"], "removed": [] }));
        assert_eq!(events[2].detail, serde_json::json!({ "set": [], "removed": [LEASE_ATTRIBUTE] }));
        assert!(!events[1].detail.to_string().contains("secret"));
        // The provisioning rule runs in the same transaction: what it wants is queued.
        assert!(store.provisioning_request("r1").unwrap().is_none());
        store.insert_resource("r2", &new("a", &["two.example.com"], &[]), ALLOW, &|r| r.id == "r2").unwrap();
        assert_eq!(store.provisioning_request("r2").unwrap().map(|p| p.reason), Some("created".to_string()));
    }

    #[test]
    fn plugin_install_bumps_the_generation() {
        let Some((url, store)) = store() else { return };
        assert_eq!(store.plugin_generation().unwrap(), 0);
        store.install_plugin("global", "d1", b"wasm1").unwrap();
        assert_eq!(store.plugin_generation().unwrap(), 1);
        store.install_plugin("global", "d2", b"wasm2").unwrap();
        assert_eq!(store.plugin_generation().unwrap(), 2);
        assert_eq!(store.plugin_wasm("global").unwrap(), Some(("d2".to_string(), b"wasm2".to_vec())));
        let listed = store.plugins().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].0.as_str(), listed[0].1.as_str()), ("global", "d2"));
        assert!(store.remove_plugin("global").unwrap());
        assert!(!store.remove_plugin("global").unwrap());
        assert_eq!(store.plugin_generation().unwrap(), 4);
        assert_eq!(store.plugin_wasm("global").unwrap(), None);

        // Servers installing at once: every install counts.
        let other = Arc::new(PgStore::open(&url).unwrap());
        let store = Arc::new(store);
        let handles: Vec<_> = [store.clone(), other]
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                std::thread::spawn(move || {
                    for n in 0..5 {
                        s.install_plugin(&format!("tenant-{i}"), &format!("d{n}"), b"w").unwrap();
                    }
                })
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(store.plugin_generation().unwrap(), 14);
    }

    fn record(tenant: &str, n: i64) -> AuditRecord {
        AuditRecord {
            seq: 0,
            at: n,
            hook: "issuance".into(),
            tenant: tenant.into(),
            account: None,
            plugins: vec!["p".into()],
            signers: vec![Some(format!("k{n}"))],
            input_digest: format!("digest-{n}"),
            input: serde_json::json!({ "n": n }),
            outcome: "deny".into(),
            reason: Some("no".into()),
            grant: (n % 2 == 0).then(|| serde_json::json!({ "lifetime": n })),
            duration_us: n,
        }
    }

    #[test]
    fn audit_lists_by_tenant_oldest_first() {
        let Some((_, store)) = store() else { return };
        for (t, n) in [("a", 1), ("b", 2), ("a", 3), ("a", 4)] {
            store.record_audit(&record(t, n)).unwrap();
        }
        let of_a = store.audit(Some("a"), 10).unwrap();
        assert_eq!(of_a.iter().map(|r| r.at).collect::<Vec<_>>(), vec![1, 3, 4]);
        assert!(of_a.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(of_a[2].grant, Some(serde_json::json!({ "lifetime": 4 })));
        assert_eq!(of_a[0].input, serde_json::json!({ "n": 1 }));
        // The limit keeps the newest.
        assert_eq!(store.audit(None, 2).unwrap().iter().map(|r| r.at).collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(store.audit(Some("b"), 10).unwrap().len(), 1);
        assert!(store.audit(Some("c"), 10).unwrap().is_empty());
    }
}

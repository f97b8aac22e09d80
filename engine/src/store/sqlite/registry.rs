//! Registry, plugin and audit queries.

use rusqlite::{Connection, OptionalExtension, params};

use super::{SqliteStore, Tx, from_json, json};
use crate::error::{Error, Result};
use crate::model::{UnixTime, now};
use crate::registry::*;
use crate::store::*;

const RESOURCE_COLUMNS: &str =
    "id, tenant, kind, names, zones, addresses, state, attributes, anchor, created_at, updated_at, lease_expires";

impl RegistryStore for SqliteStore {
    /// Adds a resource and its `created` event. Refuses names, zones or
    /// addresses another tenant's live resource already holds.
    fn insert_resource(&self, id: &str, r: &NewResource, rule: ConflictRule<'_>, provision: ProvisionRule<'_>) -> Result<Resource> {
        self.tx(|tx| {
            if let Some(anchor) = &r.anchor {
                let anchor_tenant: Option<String> =
                    tx.query_row("SELECT tenant FROM resources WHERE id = ?1", [anchor], |row| row.get(0)).optional()?;
                match anchor_tenant {
                    None => return Err(Error::malformed(format!("anchor resource {anchor} does not exist"))),
                    Some(t) if t != r.tenant => {
                        return Err(Error::malformed(format!("anchor resource {anchor} belongs to another tenant")));
                    }
                    Some(_) => {}
                }
            }
            rule(&overlaps(tx, &r.identifiers_for_conflict(), None)?)?;
            let t = now();
            let lease = stored_lease(&r.attributes)?;
            tx.execute(
                &format!(
                    "INSERT INTO resources ({RESOURCE_COLUMNS}, lease_seconds) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'active', ?7, ?8, ?9, ?9, ?10, ?11)"
                ),
                params![
                    id,
                    r.tenant,
                    r.kind,
                    json(&r.names),
                    json(&r.zones),
                    json(&r.addresses),
                    json(&r.attributes),
                    r.anchor,
                    t,
                    lease.map(|n| t + n),
                    lease
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
        self.read(|c| {
            let (sql, arg) = match tenant {
                Some(t) => (format!("SELECT {RESOURCE_COLUMNS} FROM resources WHERE tenant = ?1 ORDER BY created_at, id"), t.to_string()),
                None => (format!("SELECT {RESOURCE_COLUMNS} FROM resources WHERE ?1 = ?1 ORDER BY created_at, id"), String::new()),
            };
            let mut st = c.prepare_cached(&sql)?;
            let rows = st.query_map([arg], raw_resource)?.collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter().map(RawResource::into_resource).collect()
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
            let ids = names_under(c, zone)?;
            collect_live(c, None, ids)
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
            tx.execute("UPDATE resources SET state = ?2, updated_at = ?3 WHERE id = ?1", params![id, state.as_str(), t])?;
            let mut detail = serde_json::json!({ "from": current.state.as_str() });
            match state {
                ResourceState::Released => {
                    // RFC 5280 reason 5, cessationOfOperation: the resource is gone.
                    let revoked = super::stop_certificates_of_resource(tx, id, 5, &format!("resource {id} was released"))?;
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
                        "UPDATE resources SET lease_expires = ?2 + lease_seconds WHERE id = ?1 AND lease_seconds IS NOT NULL",
                        params![id, t],
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
            rule(&overlaps(tx, &nr.identifiers_for_conflict(), Some(id))?)?;
            // An anchor in the old tenant makes no sense in the new one.
            tx.execute("UPDATE resources SET tenant = ?2, anchor = NULL, updated_at = ?3 WHERE id = ?1", params![id, to, now()])?;
            // RFC 5280 reason 4, superseded: the new holder gets its own certificates.
            let revoked = super::stop_certificates_of_resource(tx, id, 4, &format!("resource {id} was transferred to {to}"))?;
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
            tx.execute("UPDATE resources SET attributes = ?2, updated_at = ?3 WHERE id = ?1", params![id, json(&attributes), t])?;
            // Only a change that names the lease touches it (an attribute kept
            // from before leases existed is no lease until it is set again).
            if changes.contains_key(crate::registry::LEASE_ATTRIBUTE) {
                let lease = stored_lease(&attributes)?;
                let old_lease: Option<i64> = tx.query_row("SELECT lease_seconds FROM resources WHERE id = ?1", [id], |r| r.get(0))?;
                if lease != old_lease {
                    // A new lease length counts from now: the platform's monitor
                    // that set it has just spoken for the resource.
                    tx.execute(
                        "UPDATE resources SET lease_seconds = ?2, lease_expires = ?3 WHERE id = ?1",
                        params![id, lease, lease.map(|n| t + n)],
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
                "UPDATE resources SET lease_expires = ?2 + lease_seconds WHERE id = ?1 AND lease_seconds IS NOT NULL",
                params![id, t],
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
            let mut st = c.prepare_cached(
                "SELECT id FROM resources WHERE state = 'active' AND lease_expires IS NOT NULL AND lease_expires <= ?1
                 ORDER BY lease_expires LIMIT ?2",
            )?;
            let ids = st.query_map(params![at, limit], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
            Ok(ids)
        })
    }

    fn suspend_expired_lease(&self, id: &str, at: UnixTime) -> Result<Option<Resource>> {
        self.tx(|tx| {
            let Some(current) = resource_by_id(tx, id)? else { return Ok(None) };
            let n = tx.execute(
                "UPDATE resources SET state = 'suspended', updated_at = ?3
                 WHERE id = ?1 AND state = 'active' AND lease_expires IS NOT NULL AND lease_expires <= ?2",
                params![id, at, now()],
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
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT seq, resource_id, tenant, kind, at, detail FROM resource_events WHERE resource_id = ?1 ORDER BY seq",
            )?;
            let rows = st
                .query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get::<_, String>(5)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(seq, resource_id, tenant, kind, at, detail)| {
                    Ok(Event { seq, resource_id, tenant, kind, at, detail: from_json(&detail)? })
                })
                .collect()
        })
    }
}

impl PluginStore for SqliteStore {
    /// Installs (or replaces) the plugin of a scope and bumps the plugin generation.
    fn install_plugin(&self, scope: &str, digest: &str, wasm: &[u8]) -> Result<()> {
        self.tx(|tx| {
            tx.execute(
                "INSERT INTO plugins (scope, digest, wasm, installed_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (scope) DO UPDATE SET digest = excluded.digest, wasm = excluded.wasm, installed_at = excluded.installed_at,
                                                   signed_by = NULL",
                params![scope, digest, wasm, now()],
            )?;
            bump_generation(tx)
        })
    }

    fn remove_plugin(&self, scope: &str) -> Result<bool> {
        self.tx(|tx| {
            let n = tx.execute("DELETE FROM plugins WHERE scope = ?1", [scope])?;
            bump_generation(tx)?;
            Ok(n == 1)
        })
    }

    /// (scope, digest, installed_at) of every installed plugin.
    fn plugins(&self) -> Result<Vec<(String, String, i64)>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT scope, digest, installed_at FROM plugins ORDER BY scope")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    fn plugin_wasm(&self, scope: &str) -> Result<Option<(String, Vec<u8>)>> {
        self.with(|c| {
            Ok(c.query_row("SELECT digest, wasm FROM plugins WHERE scope = ?1", [scope], |r| Ok((r.get(0)?, r.get(1)?))).optional()?)
        })
    }

    /// A counter bumped by every plugin change, so servers notice installs made by the CLI.
    fn plugin_generation(&self) -> Result<i64> {
        self.read(|c| {
            let v: Option<Vec<u8>> =
                c.prepare_cached("SELECT value FROM settings WHERE key = 'plugin_generation'")?.query_row([], |r| r.get(0)).optional()?;
            Ok(v.and_then(|b| String::from_utf8(b).ok()).and_then(|s| s.parse().ok()).unwrap_or(0))
        })
    }
}

impl AuditStore for SqliteStore {
    fn audit(&self, tenant: Option<&str>, limit: i64) -> Result<Vec<AuditRecord>> {
        self.with(|c| {
            let sql = "SELECT seq, at, hook, tenant, account, plugins, input_digest, input, outcome, reason, grant_json, duration_us,
                              signers
                       FROM audit WHERE (?1 IS NULL OR tenant = ?1) ORDER BY seq DESC LIMIT ?2";
            let mut st = c.prepare_cached(sql)?;
            let rows = st
                .query_map(params![tenant, limit], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, String>(6)?,
                        r.get::<_, String>(7)?,
                        r.get::<_, String>(8)?,
                        r.get::<_, Option<String>>(9)?,
                        r.get::<_, Option<String>>(10)?,
                        r.get::<_, i64>(11)?,
                        r.get::<_, Option<String>>(12)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut out = rows
                .into_iter()
                .map(|(seq, at, hook, tenant, account, plugins, input_digest, input, outcome, reason, grant, duration_us, signers)| {
                    let plugins: Vec<String> = from_json(&plugins)?;
                    Ok(AuditRecord {
                        seq,
                        at,
                        hook,
                        tenant,
                        account,
                        signers: crate::audit::signers_read(signers.as_deref().map(from_json).transpose()?, plugins.len()),
                        plugins,
                        input_digest,
                        input: from_json(&input)?,
                        outcome,
                        reason,
                        grant: grant.as_deref().map(from_json).transpose()?,
                        duration_us,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
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
pub(crate) fn append_audit(tx: &Tx<'_>, rec: &AuditRecord) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO audit (at, hook, tenant, account, plugins, input_digest, input, outcome, reason, grant_json, duration_us,
                            signers)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        rec.at,
        rec.hook,
        rec.tenant,
        rec.account,
        json(&rec.plugins),
        rec.input_digest,
        rec.input.to_string(),
        rec.outcome,
        rec.reason,
        rec.grant.as_ref().map(|g| g.to_string()),
        rec.duration_us,
        json(&rec.signers)
    ])?;
    Ok(())
}

pub(super) fn bump_generation(tx: &Tx<'_>) -> Result<()> {
    let current: i64 = tx
        .query_row("SELECT value FROM settings WHERE key = 'plugin_generation'", [], |r| r.get::<_, Vec<u8>>(0))
        .optional()?
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    tx.execute(
        "INSERT INTO settings (key, value) VALUES ('plugin_generation', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [(current + 1).to_string().into_bytes()],
    )?;
    Ok(())
}

impl NewResource {
    fn identifiers_for_conflict(&self) -> Vec<(bool, String)> {
        let mut v: Vec<(bool, String)> = self.names.iter().map(|n| (false, n.clone())).collect();
        v.extend(self.zones.iter().map(|z| (true, z.clone())));
        v.extend(self.addresses.iter().map(|a| (false, format!("ip:{a}"))));
        v
    }
}

/// The live resources (other than `except`) that hold each item, or, for a
/// zone, anything inside it or a zone above it: the facts the registry's
/// conflict rule judges.
fn overlaps(c: &Connection, items: &[(bool, String)], except: Option<&str>) -> Result<Vec<Overlap>> {
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

fn index_resource(tx: &Tx<'_>, id: &str, r: &NewResource) -> Result<()> {
    let mut names =
        tx.prepare_cached("INSERT OR IGNORE INTO resource_names (name, zone, resource_id, reversed) VALUES (?1, ?2, ?3, ?4)")?;
    for n in &r.names {
        names.execute(params![n, false, id, crate::registry::reversed_labels(n)])?;
    }
    for z in &r.zones {
        names.execute(params![z, true, id, crate::registry::reversed_labels(z)])?;
    }
    let mut addrs = tx.prepare_cached("INSERT OR IGNORE INTO resource_addresses (address, resource_id) VALUES (?1, ?2)")?;
    for a in &r.addresses {
        addrs.execute(params![a, id])?;
    }
    Ok(())
}

/// The lease the (validated) attributes give, for the lease columns.
fn stored_lease(attributes: &std::collections::BTreeMap<String, String>) -> Result<Option<i64>> {
    crate::registry::lease_seconds(attributes).map_err(|e| Error::internal(format!("unvalidated lease: {}", e.detail)))
}

/// Lapses the scheduled certificates bound to a resource being suspended:
/// not renewed meanwhile, not revoked. Returns how many.
fn lapse_certificates_of(tx: &Tx<'_>, id: &str) -> Result<usize> {
    Ok(tx.execute(
        "UPDATE certificates SET renewal = 'lapsed', renewal_note = ?2
         WHERE serial IN (SELECT serial FROM certificate_resources WHERE resource_id = ?1) AND renewal = 'scheduled'",
        params![id, format!("{SUSPENDED_LAPSE_NOTE} {id}")],
    )?)
}

/// Schedules again the certificates of a resumed resource that a suspension
/// lapsed, unless another resource they are bound to is still not active.
/// Their renewal time is kept: those whose window opened meanwhile are due at
/// once, and the next sweep reissues them. Returns how many.
fn reschedule_certificates_of(tx: &Tx<'_>, id: &str) -> Result<usize> {
    Ok(tx.execute(
        "UPDATE certificates SET renewal = 'scheduled', renewal_note = NULL
         WHERE serial IN (SELECT serial FROM certificate_resources WHERE resource_id = ?1)
           AND renewal = 'lapsed' AND renewal_note LIKE ?2 AND revoked_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM certificate_resources b JOIN resources r ON r.id = b.resource_id
                           WHERE b.serial = certificates.serial AND r.state <> 'active')",
        params![id, format!("{SUSPENDED_LAPSE_NOTE} %")],
    )?)
}

/// Whether a certificate bound to the resource is still renewed (or the client's) and not revoked.
fn has_live_certificate(tx: &Tx<'_>, id: &str) -> Result<bool> {
    Ok(tx
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM certificates c JOIN certificate_resources b ON b.serial = c.serial
                            WHERE b.resource_id = ?1 AND c.revoked_at IS NULL AND c.renewal IN ('scheduled', 'client'))",
        )?
        .query_row([id], |r| r.get(0))?)
}

pub(super) fn event(tx: &Tx<'_>, id: &str, tenant: &str, kind: EventKind, detail: serde_json::Value) -> Result<()> {
    tx.prepare_cached("INSERT INTO resource_events (resource_id, tenant, kind, at, detail) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![id, tenant, kind.as_str(), now(), detail.to_string()])?;
    Ok(())
}

/// The resources with a name or zone strictly under `zone`: one range of the
/// reversed-name index.
fn names_under(c: &Connection, zone: &str) -> Result<Vec<String>> {
    let (from, to) = crate::registry::under_zone_range(zone);
    let mut st = c.prepare_cached("SELECT DISTINCT resource_id FROM resource_names WHERE reversed >= ?1 AND reversed < ?2")?;
    Ok(st.query_map([from, to], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn holding_name(c: &Connection, tenant: Option<&str>, name: &str) -> Result<Vec<Resource>> {
    let name = name.strip_prefix("*.").unwrap_or(name);
    let mut ids: Vec<String> = Vec::new();
    {
        let mut exact = c.prepare_cached("SELECT resource_id FROM resource_names WHERE name = ?1 AND zone = 0")?;
        ids.extend(exact.query_map([name], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?);
        let mut zone = c.prepare_cached("SELECT resource_id FROM resource_names WHERE name = ?1 AND zone = 1")?;
        for z in enclosing_zones(name) {
            ids.extend(zone.query_map([z], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?);
        }
    }
    collect_live(c, tenant, ids)
}

fn holding_address(c: &Connection, tenant: Option<&str>, address: &str) -> Result<Vec<Resource>> {
    let mut st = c.prepare_cached("SELECT resource_id FROM resource_addresses WHERE address = ?1")?;
    let ids = st.query_map([address], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
    collect_live(c, tenant, ids)
}

fn collect_live(c: &Connection, tenant: Option<&str>, mut ids: Vec<String>) -> Result<Vec<Resource>> {
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

struct RawResource {
    id: String,
    tenant: String,
    kind: String,
    names: String,
    zones: String,
    addresses: String,
    state: String,
    attributes: String,
    anchor: Option<String>,
    created_at: i64,
    updated_at: i64,
    lease_expires: Option<i64>,
}

fn raw_resource(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawResource> {
    Ok(RawResource {
        id: r.get(0)?,
        tenant: r.get(1)?,
        kind: r.get(2)?,
        names: r.get(3)?,
        zones: r.get(4)?,
        addresses: r.get(5)?,
        state: r.get(6)?,
        attributes: r.get(7)?,
        anchor: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
        lease_expires: r.get(11)?,
    })
}

impl RawResource {
    fn into_resource(self) -> Result<Resource> {
        Ok(Resource {
            state: ResourceState::parse(&self.state).ok_or_else(|| Error::internal(format!("stored resource state {:?}", self.state)))?,
            names: from_json(&self.names)?,
            zones: from_json(&self.zones)?,
            addresses: from_json(&self.addresses)?,
            attributes: from_json(&self.attributes)?,
            id: self.id,
            tenant: self.tenant,
            kind: self.kind,
            anchor: self.anchor,
            created_at: self.created_at,
            updated_at: self.updated_at,
            lease_expires: self.lease_expires,
        })
    }
}

fn resource_by_id(c: &Connection, id: &str) -> Result<Option<Resource>> {
    let mut st = c.prepare_cached(&format!("SELECT {RESOURCE_COLUMNS} FROM resources WHERE id = ?1"))?;
    st.query_row([id], raw_resource).optional()?.map(RawResource::into_resource).transpose()
}

//! Embedded migrations. Each entry moves the schema one version forward; the
//! version lives in `PRAGMA user_version`, so a data directory from any earlier
//! release upgrades in place on start.

pub const MIGRATIONS: &[&str] = &[
    // 1: the ACME CA.
    r#"
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value BLOB NOT NULL
    );
    CREATE TABLE issuers (
        id         INTEGER PRIMARY KEY,
        role       TEXT NOT NULL CHECK (role IN ('root', 'intermediate')),
        tenant     TEXT,
        cert_der   BLOB NOT NULL,
        key_pkcs8  BLOB NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE tenants (
        name       TEXT PRIMARY KEY,
        permits    TEXT NOT NULL,          -- JSON array of permitted subtrees; NULL-free, [] = none
        issuer_id  INTEGER NOT NULL REFERENCES issuers(id),
        created_at INTEGER NOT NULL
    );
    CREATE TABLE eab_keys (
        kid        TEXT PRIMARY KEY,
        tenant     TEXT NOT NULL REFERENCES tenants(name),
        hmac_key   BLOB NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE accounts (
        id          TEXT PRIMARY KEY,
        thumbprint  TEXT NOT NULL UNIQUE,
        jwk         TEXT NOT NULL,
        status      TEXT NOT NULL,
        contact     TEXT NOT NULL,         -- JSON array
        tenant      TEXT NOT NULL REFERENCES tenants(name),
        eab_kid     TEXT,
        tos_agreed  INTEGER NOT NULL,
        created_at  INTEGER NOT NULL
    );
    CREATE TABLE orders (
        id          TEXT PRIMARY KEY,
        account_id  TEXT NOT NULL REFERENCES accounts(id),
        status      TEXT NOT NULL,
        expires     INTEGER NOT NULL,
        identifiers TEXT NOT NULL,         -- JSON array of {type, value}
        profile     TEXT NOT NULL,
        error       TEXT,                  -- JSON {type, detail}
        certificate TEXT,                  -- serial of the issued certificate
        replaces    TEXT,
        created_at  INTEGER NOT NULL
    );
    CREATE INDEX orders_by_account ON orders(account_id, created_at);
    CREATE TABLE authorizations (
        id          TEXT PRIMARY KEY,
        order_id    TEXT NOT NULL REFERENCES orders(id),
        account_id  TEXT NOT NULL REFERENCES accounts(id),
        id_type     TEXT NOT NULL,
        id_value    TEXT NOT NULL,
        wildcard    INTEGER NOT NULL,
        status      TEXT NOT NULL,
        expires     INTEGER NOT NULL
    );
    CREATE INDEX authorizations_by_order ON authorizations(order_id);
    CREATE INDEX authorizations_by_account ON authorizations(account_id, id_type, id_value);
    CREATE TABLE challenges (
        id         TEXT PRIMARY KEY,
        authz_id   TEXT NOT NULL REFERENCES authorizations(id),
        type       TEXT NOT NULL,
        token      TEXT NOT NULL,
        status     TEXT NOT NULL,
        validated  INTEGER,
        error      TEXT
    );
    CREATE INDEX challenges_by_authz ON challenges(authz_id);
    CREATE INDEX challenges_by_status ON challenges(status);
    CREATE TABLE certificates (
        serial      TEXT PRIMARY KEY,
        account_id  TEXT NOT NULL REFERENCES accounts(id),
        order_id    TEXT NOT NULL REFERENCES orders(id),
        tenant      TEXT NOT NULL,
        issuer_id   INTEGER NOT NULL REFERENCES issuers(id),
        der         BLOB NOT NULL,
        identifiers TEXT NOT NULL,
        not_before  INTEGER NOT NULL,
        not_after   INTEGER NOT NULL,
        revoked_at  INTEGER,
        revocation_reason INTEGER,
        created_at  INTEGER NOT NULL
    );
    CREATE INDEX certificates_by_expiry ON certificates(not_after);
    "#,
    // 2: the resource registry, installed plugins and the decision audit log.
    r#"
    CREATE TABLE resources (
        id          TEXT PRIMARY KEY,
        tenant      TEXT NOT NULL REFERENCES tenants(name),
        kind        TEXT NOT NULL,
        names       TEXT NOT NULL,          -- JSON arrays, as given
        zones       TEXT NOT NULL,
        addresses   TEXT NOT NULL,
        state       TEXT NOT NULL CHECK (state IN ('active', 'suspended', 'released')),
        attributes  TEXT NOT NULL,          -- JSON object
        anchor      TEXT REFERENCES resources(id),
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL
    );
    CREATE INDEX resources_by_tenant ON resources(tenant, id);
    -- Lookup tables: a name or zone, an address, to the resources holding it.
    CREATE TABLE resource_names (
        name        TEXT NOT NULL,
        zone        INTEGER NOT NULL,       -- 1: every name under `name` is held
        resource_id TEXT NOT NULL REFERENCES resources(id),
        PRIMARY KEY (name, zone, resource_id)
    ) WITHOUT ROWID;
    CREATE TABLE resource_addresses (
        address     TEXT NOT NULL,
        resource_id TEXT NOT NULL REFERENCES resources(id),
        PRIMARY KEY (address, resource_id)
    ) WITHOUT ROWID;
    CREATE TABLE resource_events (
        seq         INTEGER PRIMARY KEY,
        resource_id TEXT NOT NULL REFERENCES resources(id),
        tenant      TEXT NOT NULL,
        kind        TEXT NOT NULL CHECK (kind IN ('created', 'transferred', 'suspended', 'resumed', 'released')),
        at          INTEGER NOT NULL,
        detail      TEXT NOT NULL
    );
    CREATE INDEX resource_events_by_resource ON resource_events(resource_id, seq);
    CREATE TABLE plugins (
        scope        TEXT NOT NULL,         -- 'operator', or 'tenant:<name>'
        digest       TEXT NOT NULL,
        wasm         BLOB NOT NULL,
        installed_at INTEGER NOT NULL,
        PRIMARY KEY (scope)
    );
    CREATE TABLE audit (
        seq          INTEGER PRIMARY KEY,
        at           INTEGER NOT NULL,
        hook         TEXT NOT NULL,
        tenant       TEXT NOT NULL,
        account      TEXT,
        plugins      TEXT NOT NULL,         -- JSON array of plugin digests, in chain order
        input_digest TEXT NOT NULL,
        input        TEXT NOT NULL,
        outcome      TEXT NOT NULL CHECK (outcome IN ('allow', 'deny')),
        reason       TEXT,
        grant_json   TEXT,
        duration_us  INTEGER NOT NULL
    );
    CREATE INDEX audit_by_tenant ON audit(tenant, seq);
    ALTER TABLE orders ADD COLUMN lifetime_seconds INTEGER;
    "#,
    // 3: certificate lifecycle: bindings to resources, server-initiated renewal,
    // deliveries, CRLs.
    r#"
    ALTER TABLE certificates ADD COLUMN profile TEXT NOT NULL DEFAULT 'default';
    -- client: the ACME client renews (not every name is held); scheduled: tenure
    -- reissues from renew_at on; renewed/replaced: a successor exists; lapsed: the
    -- policy refused renewal; stopped: the resource was released or transferred.
    ALTER TABLE certificates ADD COLUMN renewal TEXT NOT NULL DEFAULT 'client'
        CHECK (renewal IN ('client', 'scheduled', 'renewed', 'replaced', 'lapsed', 'stopped'));
    ALTER TABLE certificates ADD COLUMN renew_at INTEGER;        -- start of the renewal window
    ALTER TABLE certificates ADD COLUMN renewal_note TEXT;       -- why it lapsed or stopped
    ALTER TABLE certificates ADD COLUMN predecessor TEXT;
    ALTER TABLE certificates ADD COLUMN successor TEXT;
    ALTER TABLE certificates ADD COLUMN policy TEXT NOT NULL DEFAULT ''; -- plugin digests that allowed it
    -- The sweep's queue: only scheduled certificates, in the order they fall due.
    CREATE INDEX certificates_due ON certificates(renew_at, serial) WHERE renewal = 'scheduled';
    CREATE INDEX certificates_revoked ON certificates(issuer_id, not_after) WHERE revoked_at IS NOT NULL;
    CREATE INDEX certificates_by_tenant ON certificates(tenant, created_at);
    CREATE TABLE certificate_resources (
        serial      TEXT NOT NULL REFERENCES certificates(serial),
        resource_id TEXT NOT NULL REFERENCES resources(id),
        PRIMARY KEY (serial, resource_id)
    ) WITHOUT ROWID;
    CREATE INDEX certificate_resources_by_resource ON certificate_resources(resource_id, serial);
    -- Successors waiting to reach their delivery targets (an outbox: written in the
    -- renewal's transaction, worked off after it, retried with backoff).
    CREATE TABLE deliveries (
        id           INTEGER PRIMARY KEY,
        serial       TEXT NOT NULL REFERENCES certificates(serial),
        resource_id  TEXT NOT NULL REFERENCES resources(id),
        kind         TEXT NOT NULL CHECK (kind IN ('file', 'webhook')),
        target       TEXT NOT NULL,
        state        TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
        attempts     INTEGER NOT NULL DEFAULT 0,
        next_attempt INTEGER NOT NULL,
        last_error   TEXT,
        created_at   INTEGER NOT NULL,
        delivered_at INTEGER
    );
    CREATE INDEX deliveries_pending ON deliveries(next_attempt) WHERE state = 'pending';
    CREATE INDEX deliveries_by_serial ON deliveries(serial);
    -- The latest CRL of each issuer, and how many revocations it covered.
    CREATE TABLE crls (
        issuer_id   INTEGER PRIMARY KEY REFERENCES issuers(id),
        number      INTEGER NOT NULL,
        this_update INTEGER NOT NULL,
        next_update INTEGER NOT NULL,
        revocation_mark INTEGER NOT NULL,
        der         BLOB NOT NULL
    );
    "#,
    // 4: HSM custody: the pool of tokens, their allocation to tenants, the keys
    // tenure made or copied into them, and the log of what was done to them.
    r#"
    CREATE TABLE hsm_slots (
        id            TEXT PRIMARY KEY,
        module        TEXT NOT NULL,          -- PKCS#11 module path
        token_label   TEXT NOT NULL,
        so_pin        BLOB NOT NULL,          -- sealed under DIR/ca-key.kek
        user_pin      BLOB,                   -- sealed; NULL unless tenure may still use keys
        state         TEXT NOT NULL CHECK (state IN ('free', 'allocating', 'handed-over', 'tenant-only', 'releasing')),
        tenant        TEXT REFERENCES tenants(name),
        resource_id   TEXT REFERENCES resources(id),
        pin_handed_over_at INTEGER,
        release_after INTEGER,
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL,
        UNIQUE (module, token_label)
    );
    CREATE INDEX hsm_slots_by_resource ON hsm_slots(resource_id);
    CREATE TABLE hsm_keys (
        id            TEXT PRIMARY KEY,
        slot_id       TEXT NOT NULL REFERENCES hsm_slots(id),
        cka_id        BLOB NOT NULL,
        label         TEXT NOT NULL,
        resource_id   TEXT REFERENCES resources(id),  -- the resource whose certificate it keys
        spki          BLOB NOT NULL,
        cert_der      BLOB,
        cert_serial   TEXT,
        cert_not_after INTEGER,
        state         TEXT NOT NULL CHECK (state IN ('active', 'retiring', 'retired')),
        retire_after  INTEGER,
        replaces      TEXT REFERENCES hsm_keys(id),
        origin        TEXT NOT NULL CHECK (origin IN ('generated', 'distributed')),
        source_key    TEXT REFERENCES hsm_keys(id),
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL
    );
    CREATE INDEX hsm_keys_by_slot ON hsm_keys(slot_id, state);
    CREATE INDEX hsm_keys_by_resource ON hsm_keys(resource_id, state);
    CREATE TABLE hsm_events (
        seq      INTEGER PRIMARY KEY,
        slot_id  TEXT NOT NULL REFERENCES hsm_slots(id),
        key_id   TEXT,
        kind     TEXT NOT NULL,
        at       INTEGER NOT NULL,
        detail   TEXT NOT NULL
    );
    CREATE INDEX hsm_events_by_slot ON hsm_events(slot_id, seq);
    "#,
    // 5: one issuance path. A certificate may come from no ACME account or order
    // (an HSM rekey, and later provisioning): account_id and order_id become
    // nullable, and `trigger` records what issued it. SQLite cannot drop NOT NULL
    // in place, so the table is rebuilt (foreign keys are off while migrating;
    // `migrate` checks them before committing).
    r#"
    CREATE TABLE certificates_v5 (
        serial      TEXT PRIMARY KEY,
        account_id  TEXT REFERENCES accounts(id),
        order_id    TEXT REFERENCES orders(id),
        tenant      TEXT NOT NULL,
        issuer_id   INTEGER NOT NULL REFERENCES issuers(id),
        der         BLOB NOT NULL,
        identifiers TEXT NOT NULL,
        not_before  INTEGER NOT NULL,
        not_after   INTEGER NOT NULL,
        revoked_at  INTEGER,
        revocation_reason INTEGER,
        created_at  INTEGER NOT NULL,
        profile     TEXT NOT NULL DEFAULT 'default',
        renewal     TEXT NOT NULL DEFAULT 'client'
            CHECK (renewal IN ('client', 'scheduled', 'renewed', 'replaced', 'lapsed', 'stopped')),
        renew_at    INTEGER,
        renewal_note TEXT,
        predecessor TEXT,
        successor   TEXT,
        policy      TEXT NOT NULL DEFAULT '',
        trigger     TEXT NOT NULL DEFAULT 'acme-finalize'
            CHECK (trigger IN ('acme-finalize', 'renewal', 'rekey', 'provisioning'))
    );
    INSERT INTO certificates_v5
        SELECT serial, account_id, order_id, tenant, issuer_id, der, identifiers, not_before, not_after, revoked_at,
               revocation_reason, created_at, profile, renewal, renew_at, renewal_note, predecessor, successor, policy,
               CASE WHEN EXISTS (SELECT 1 FROM orders o WHERE o.certificate = certificates.serial) THEN 'acme-finalize'
                    ELSE 'renewal' END
        FROM certificates;
    DROP TABLE certificates;
    ALTER TABLE certificates_v5 RENAME TO certificates;
    CREATE INDEX certificates_by_expiry ON certificates(not_after);
    CREATE INDEX certificates_due ON certificates(renew_at, serial) WHERE renewal = 'scheduled';
    CREATE INDEX certificates_revoked ON certificates(issuer_id, not_after) WHERE revoked_at IS NOT NULL;
    CREATE INDEX certificates_by_tenant ON certificates(tenant, created_at);
    -- Orders are no longer marked processing while signing; one left so by a
    -- crash of an older release is ready to finalize again.
    UPDATE orders SET status = 'ready' WHERE status = 'processing';
    "#,
    // 6: the pending authorizations of an account, counted for its rate limit
    // (only pending rows: names held in the registry are valid at once).
    r#"
    CREATE INDEX authorizations_pending ON authorizations(account_id, expires) WHERE status = 'pending';
    "#,
    // 7: each tenant's webhook signing secret, sealed under DIR/ca-key.kek.
    // Tenants from before get one on first use (sealing needs the key, which
    // SQL does not have).
    r#"
    ALTER TABLE tenants ADD COLUMN webhook_secret BLOB;
    "#,
    // 8: orders that list authorizations of the account's earlier orders (the
    // operator's reuse of valid authorizations). An authorization still belongs
    // to the order that made it (authorizations.order_id); this links it to
    // later orders. `position` keeps their listing stable. IF NOT EXISTS: data
    // directories of the branch that first had it ran it as 8 behind an empty 7.
    r#"
    CREATE TABLE IF NOT EXISTS order_reused_authorizations (
        order_id    TEXT NOT NULL REFERENCES orders(id),
        authz_id    TEXT NOT NULL REFERENCES authorizations(id),
        position    INTEGER NOT NULL,
        PRIMARY KEY (order_id, authz_id)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS order_reused_authorizations_by_authz ON order_reused_authorizations(authz_id);
    "#,
    // 9: resource state from the platform. A lease (`lease-seconds`) kept as
    // columns so the scheduler finds expired ones through an index of active
    // leased resources only; resource events gain `attributes-changed` and
    // `confirmed` (a CHECK changes only by rebuilding the table).
    r#"
    ALTER TABLE resources ADD COLUMN lease_seconds INTEGER;
    ALTER TABLE resources ADD COLUMN lease_expires INTEGER;
    CREATE INDEX resources_lease_due ON resources(lease_expires) WHERE state = 'active' AND lease_expires IS NOT NULL;
    CREATE TABLE resource_events_v9 (
        seq         INTEGER PRIMARY KEY,
        resource_id TEXT NOT NULL REFERENCES resources(id),
        tenant      TEXT NOT NULL,
        kind        TEXT NOT NULL CHECK (kind IN ('created', 'transferred', 'suspended', 'resumed', 'released',
                                                  'attributes-changed', 'confirmed')),
        at          INTEGER NOT NULL,
        detail      TEXT NOT NULL
    );
    INSERT INTO resource_events_v9 SELECT seq, resource_id, tenant, kind, at, detail FROM resource_events;
    DROP TABLE resource_events;
    ALTER TABLE resource_events_v9 RENAME TO resource_events;
    CREATE INDEX resource_events_by_resource ON resource_events(resource_id, seq);
    "#,
    // 10: certificates no one asks for. Each certificate's generation (its
    // predecessor's plus one) and who holds its key (a client, a tenant's HSM,
    // the recipient tenure encrypted it to, the platform); the provisioning
    // queue, written in the transaction that adds or changes a resource and
    // settled in the one that records its certificate (or its denial), so a
    // resource is provisioned after a crash, and once; the outbox carries an
    // event, notices without a certificate, and the encrypted key of a
    // provisioned certificate until its delivery ends (a table rebuild: the
    // serial becomes optional).
    r#"
    ALTER TABLE certificates ADD COLUMN generation INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE certificates ADD COLUMN key_source TEXT NOT NULL DEFAULT 'client'
        CHECK (key_source IN ('client', 'hsm', 'recipient', 'platform'));
    UPDATE certificates SET key_source = 'hsm' WHERE trigger = 'rekey';
    WITH RECURSIVE line(serial, generation) AS (
        SELECT serial, 1 FROM certificates WHERE predecessor IS NULL
        UNION ALL
        SELECT c.serial, line.generation + 1 FROM certificates c JOIN line ON c.predecessor = line.serial
    )
    UPDATE certificates SET generation = (SELECT generation FROM line WHERE line.serial = certificates.serial)
        WHERE serial IN (SELECT serial FROM line WHERE generation > 1);
    CREATE TABLE provisioning (
        resource_id  TEXT PRIMARY KEY REFERENCES resources(id),
        request      INTEGER NOT NULL,     -- bumped by each change: a worker settles only the request it read
        reason       TEXT NOT NULL,
        attempts     INTEGER NOT NULL DEFAULT 0,
        next_attempt INTEGER NOT NULL,
        last_error   TEXT,
        claimed      INTEGER NOT NULL DEFAULT 0,  -- a worker holds it until next_attempt
        created_at   INTEGER NOT NULL
    );
    CREATE INDEX provisioning_due ON provisioning(next_attempt);
    CREATE TABLE deliveries_v10 (
        id           INTEGER PRIMARY KEY,
        event        TEXT NOT NULL,
        serial       TEXT REFERENCES certificates(serial),
        resource_id  TEXT NOT NULL REFERENCES resources(id),
        kind         TEXT NOT NULL CHECK (kind IN ('file', 'webhook')),
        target       TEXT NOT NULL,
        state        TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
        attempts     INTEGER NOT NULL DEFAULT 0,
        next_attempt INTEGER NOT NULL,
        last_error   TEXT,
        created_at   INTEGER NOT NULL,
        delivered_at INTEGER,
        payload      TEXT,
        key_age      TEXT
    );
    INSERT INTO deliveries_v10 (id, event, serial, resource_id, kind, target, state, attempts, next_attempt, last_error,
                                created_at, delivered_at)
        SELECT id, 'certificate.renewed', serial, resource_id, kind, target, state, attempts, next_attempt, last_error,
               created_at, delivered_at
        FROM deliveries;
    DROP TABLE deliveries;
    ALTER TABLE deliveries_v10 RENAME TO deliveries;
    CREATE INDEX deliveries_pending ON deliveries(next_attempt) WHERE state = 'pending';
    CREATE INDEX deliveries_by_serial ON deliveries(serial);
    CREATE INDEX deliveries_by_resource ON deliveries(resource_id, id);
    "#,
    // 11: nonces spent by servers sharing a database (ReplayStore). A single
    // SQLite server keeps its nonces in memory; the table is here so both
    // stores mean the same.
    r#"
    CREATE TABLE spent_nonces (
        nonce   BLOB PRIMARY KEY,
        expires INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX spent_nonces_by_expiry ON spent_nonces(expires);
    "#,
    // 12: tenants help themselves (issue 16). Each tenant may hold one admin
    // API token, stored only as the SHA-256 of its secret; keys registered to
    // sign the tenant's plugins, and which key signed each installed plugin
    // (copied into every audit record beside the digests); intermediates that
    // are replaced (`tenant update`, `tenant rotate`) stay for their leaves
    // and CRLs, and one revoked by `tenant remove` is listed in the root's
    // CRL; a removed tenant's row stays, so its history keeps its name.
    r#"
    ALTER TABLE tenants ADD COLUMN token_hash BLOB;
    ALTER TABLE tenants ADD COLUMN removed_at INTEGER;
    CREATE TABLE tenant_keys (
        tenant     TEXT NOT NULL REFERENCES tenants(name),
        key_id     TEXT NOT NULL,
        public_key BLOB NOT NULL,          -- SubjectPublicKeyInfo, DER
        created_at INTEGER NOT NULL,
        PRIMARY KEY (tenant, key_id)
    ) WITHOUT ROWID;
    ALTER TABLE plugins ADD COLUMN signed_by TEXT;
    ALTER TABLE audit ADD COLUMN signers TEXT;         -- JSON array beside `plugins`: key id or null
    ALTER TABLE issuers ADD COLUMN revoked_at INTEGER;
    ALTER TABLE issuers ADD COLUMN revocation_reason INTEGER;
    ALTER TABLE issuers ADD COLUMN not_after INTEGER;  -- NULL for rows from before: read from cert_der
    "#,
    // 13: names under a zone found through an index (issue 17): each name
    // also kept with its labels reversed (`example.corp.www`), so "every name
    // under corp.example" is one range of an index, not a scan of every name
    // (a wildcard order with 1,000,000 names registered took 130-190 ms).
    // Rows from before are filled in by `migrate` (SQLite has no string
    // reversal).
    r#"
    ALTER TABLE resource_names ADD COLUMN reversed TEXT;
    CREATE INDEX resource_names_reversed ON resource_names(reversed);
    "#,
];

/// The migration that adds `resource_names.reversed`, whose existing rows
/// `migrate` fills in.
pub const REVERSED_NAMES: usize = 13;

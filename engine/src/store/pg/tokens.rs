//! Tenants' admin-API token hashes. PostgreSQL: see `../sqlite/tokens.rs`,
//! whose meaning this file keeps.

use super::*;

impl TokenStore for PgStore {
    fn tenant_token_hash(&self, tenant: &str) -> Result<Option<Vec<u8>>> {
        self.read(|c| {
            Ok(value::<_, Option<Vec<u8>>>(c, "SELECT token_hash FROM tenants WHERE name = $1 AND removed_at IS NULL", &[&tenant])?
                .flatten())
        })
    }

    fn store_tenant_token_hash(&self, tenant: &str, hash: &[u8], replace: bool) -> Result<bool> {
        self.tx(|tx| {
            let live =
                value::<_, Option<Vec<u8>>>(tx, "SELECT token_hash FROM tenants WHERE name = $1 AND removed_at IS NULL", &[&tenant])?;
            match live {
                None => Err(Error::not_found(format!("no tenant {tenant:?}"))),
                Some(Some(_)) if !replace => Ok(false),
                Some(_) => {
                    tx.execute("UPDATE tenants SET token_hash = $2 WHERE name = $1", &[&tenant, &hash])?;
                    Ok(true)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_hash_is_set_once_replaced_on_request_and_void_once_removed() {
        let Some(url) = testdb::fresh() else { return };
        let s = PgStore::open(&url).unwrap();
        for t in ["a", "b"] {
            s.insert_tenant(t, &[], b"cert", b"key", b"sealed", None, &|_| Ok(())).unwrap();
        }
        assert_eq!(s.tenant_token_hash("a").unwrap(), None);
        assert!(s.store_tenant_token_hash("a", b"one", false).unwrap());
        assert!(!s.store_tenant_token_hash("a", b"two", false).unwrap(), "kept without replace");
        assert_eq!(s.tenant_token_hash("a").unwrap().as_deref(), Some(&b"one"[..]));
        assert!(s.store_tenant_token_hash("a", b"three", true).unwrap());
        assert_eq!(s.tenant_token_hash("a").unwrap().as_deref(), Some(&b"three"[..]));
        assert_eq!(s.tenant_token_hash("b").unwrap(), None, "another tenant's is its own");
        let e = s.store_tenant_token_hash("nobody", b"x", true).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::NotFound);
        assert_eq!(s.tenant_token_hash("nobody").unwrap(), None);

        s.tx(|tx| Ok(tx.execute("UPDATE tenants SET removed_at = 1 WHERE name = 'a'", &[])?)).unwrap();
        assert_eq!(s.tenant_token_hash("a").unwrap(), None, "a removed tenant's token never counts");
        let e = s.store_tenant_token_hash("a", b"four", true).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::NotFound);
    }
}

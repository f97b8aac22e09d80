//! The leaf signer: the one place a tenant leaf is signed. Private to
//! `issuance`, whose decide → sign → record sequence is the only way to it.

use std::time::{Duration, SystemTime};

use crate::ca::{self, IssuedLeaf, LeafRequest};
use crate::core::Core;
use crate::error::Result;
use crate::identifier::Identifier;

/// The capability to sign a leaf. Its field is private to this module, so
/// only this module can make one, and `ca::issue_leaf` demands it: a leaf
/// signed anywhere else does not compile.
pub(crate) struct LeafSigning(());

impl LeafSigning {
    /// For the CA's own unit tests of the certificate builder.
    #[cfg(test)]
    pub(crate) fn for_tests() -> LeafSigning {
        LeafSigning(())
    }
}

/// Signs a leaf for `spki` under issuer `issuer_id`, valid for `lifetime`
/// from now (backdated a minute for clients whose clocks run slightly
/// behind), with the issuer's CRL distribution point once the public URL is
/// known.
pub(super) fn sign(core: &Core, issuer_id: i64, spki: &[u8], identifiers: &[Identifier], lifetime: Duration) -> Result<IssuedLeaf> {
    let issuer = core.issuer(issuer_id)?;
    let not_before = SystemTime::now() - Duration::from_secs(60);
    let not_after = not_before + lifetime + Duration::from_secs(60);
    let request = LeafRequest { spki_der: spki, identifiers, not_before, not_after, crl_url: core.crl_url(issuer_id)? };
    ca::issue_leaf(&LeafSigning(()), &issuer, &request)
}

#[cfg(test)]
mod tests {
    /// The leaf signer has exactly one caller: `sign` above. (The compiler
    /// already refuses any other, since only this module can make a
    /// `LeafSigning`; this pins it against a `for_tests` leaking out of tests.)
    #[test]
    fn the_leaf_signer_has_exactly_one_caller() {
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        let mut callers = Vec::new();
        let mut stack = vec![std::path::PathBuf::from(src)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") && !path.to_string_lossy().ends_with("tests.rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    // Test code of the certificate builder is not a caller: cut it off
                    // (and skip whole test modules, `*tests.rs`).
                    let test_module = ["#[cfg(test)]\nmod", "#[cfg(test)]\npub(super) mod", "#[cfg(test)]\npub(crate) mod"]
                        .iter()
                        .filter_map(|m| text.find(m))
                        .min()
                        .unwrap_or(text.len());
                    let code = &text[..test_module];
                    for (n, line) in code.lines().enumerate() {
                        if line.contains("issue_leaf(") && !line.contains("fn issue_leaf(") && !line.trim_start().starts_with("//") {
                            callers.push(format!("{}:{}", path.display(), n + 1));
                        }
                    }
                }
            }
        }
        assert_eq!(callers.len(), 1, "{callers:?}");
        assert!(callers[0].contains("issuance/signer.rs"), "{callers:?}");
    }
}

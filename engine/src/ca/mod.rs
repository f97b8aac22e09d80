//! The CA hierarchy: root, per-tenant name-constrained intermediates, leaves.
//!
//! Every certificate is built with rcgen and read back with x509-parser. The
//! rule that matters most — a leaf never names anything outside its issuer's
//! nameConstraints — is enforced from the issuer certificate itself, so it holds
//! whatever the caller believes the tenant's permits to be.

mod authority;
mod constraints;
mod crl;
mod csr;
mod info;
mod issue;
mod keys;
mod material;
mod signing;
mod util;

#[cfg(test)]
mod fuzz_regressions;
#[cfg(test)]
mod openssl_tests;
#[cfg(test)]
mod testdata;

pub(crate) use authority::{INTERMEDIATE_DAYS, new_tenant_intermediate, tenant_ca_name};
pub use authority::{new_intermediate, new_intermediate_with, new_root, new_root_with};
pub use constraints::{Permit, permitted};
pub use crl::{CrlEntry, sign_crl};
pub use csr::{Csr, parse_csr};
pub use info::{CertInfo, cert_info};
pub(crate) use issue::issue_leaf;
pub use issue::{IssuedLeaf, LeafRequest, server_certificate};
pub use keys::KeyType;
pub use material::{CaMaterial, to_pem};
pub use signing::{CaKey, CaSigningKey, RemoteKey};
pub use util::{der_tlv, serial_hex};

//! External Account Binding (RFC 8555 §7.3.4): the account key MACed with a
//! key the CA gave a tenant, which makes the new account that tenant's. The
//! front end parses the binding's JWS; the MAC key never leaves the engine,
//! which checks the MAC here, then that the binding names this account's key.

use ring::hmac;

use crate::error::{Error, ErrorKind, Result};

/// The MAC algorithms RFC 8555 §7.3.4 allows for a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacAlgorithm {
    /// HMAC-SHA-256.
    Hs256,
    /// HMAC-SHA-384.
    Hs384,
    /// HMAC-SHA-512.
    Hs512,
}

impl MacAlgorithm {
    fn ring(self) -> hmac::Algorithm {
        match self {
            MacAlgorithm::Hs256 => hmac::HMAC_SHA256,
            MacAlgorithm::Hs384 => hmac::HMAC_SHA384,
            MacAlgorithm::Hs512 => hmac::HMAC_SHA512,
        }
    }
}

/// A binding as the front end parsed it from a newAccount request.
#[derive(Debug, Clone)]
pub struct ExternalBinding {
    /// The EAB key id (the JWS `kid`).
    pub kid: String,
    /// The JWS `alg`.
    pub algorithm: MacAlgorithm,
    /// `protected "." payload`, as sent.
    pub signing_input: Vec<u8>,
    /// The MAC, decoded.
    pub mac: Vec<u8>,
    /// The RFC 7638 thumbprint of the JWK the payload carries, or why the
    /// payload is not a JWK (judged only once the MAC holds).
    pub bound_key: std::result::Result<String, String>,
}

impl ExternalBinding {
    /// A binding of `thumbprint` made with `hmac_key`, as a client would make
    /// one (for tools and tests that register accounts in-process).
    pub fn for_key(kid: &str, hmac_key: &[u8], thumbprint: &str) -> ExternalBinding {
        let signing_input = format!("binding.{thumbprint}").into_bytes();
        let mac = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, hmac_key), &signing_input).as_ref().to_vec();
        ExternalBinding { kid: kid.into(), algorithm: MacAlgorithm::Hs256, signing_input, mac, bound_key: Ok(thumbprint.into()) }
    }
}

/// Checks a binding against the MAC key the CA issued under its `kid`, for
/// the account key `thumbprint`: the MAC first (a wrong one is
/// Unauthorized), then that the payload is a key (Malformed) and this one
/// (Unauthorized). An empty MAC key is a fault of ours: accepting it would
/// let anyone compute the binding.
pub fn verify_external_binding(binding: &ExternalBinding, hmac_key: &[u8], thumbprint: &str) -> Result<()> {
    if hmac_key.is_empty() {
        return Err(Error::internal("external account MAC key is empty"));
    }
    hmac::verify(&hmac::Key::new(binding.algorithm.ring(), hmac_key), &binding.signing_input, &binding.mac)
        .map_err(|_| Error::new(ErrorKind::Unauthorized, "external account binding signature is invalid"))?;
    match &binding.bound_key {
        Err(why) => Err(Error::malformed(format!("external account binding payload is not a valid JWK: {why}"))),
        Ok(bound) if bound != thumbprint => {
            Err(Error::new(ErrorKind::Unauthorized, "external account binding is for a different account key"))
        }
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mac_is_checked_before_the_payload() {
        let good = ExternalBinding::for_key("k", b"secret", "tp");
        verify_external_binding(&good, b"secret", "tp").unwrap();
        assert_eq!(verify_external_binding(&good, b"other", "tp").unwrap_err().kind, ErrorKind::Unauthorized);
        assert_eq!(verify_external_binding(&good, b"secret", "another key").unwrap_err().kind, ErrorKind::Unauthorized);
        assert_eq!(verify_external_binding(&good, b"", "tp").unwrap_err().kind, ErrorKind::Internal);
        let not_a_key = ExternalBinding { bound_key: Err("no kty".into()), ..good.clone() };
        assert_eq!(verify_external_binding(&not_a_key, b"secret", "tp").unwrap_err().kind, ErrorKind::Malformed);
        // A payload that is not a key, under a wrong MAC, is refused for the MAC.
        assert_eq!(verify_external_binding(&not_a_key, b"other", "tp").unwrap_err().kind, ErrorKind::Unauthorized);
    }
}

//! TLS client settings for validation: any certificate is accepted.
//!
//! tls-alpn-01 certificates are self-signed by design (RFC 8737 §3), and an
//! http-01 redirect to https must not fail on trust (RFC 8555 §8.3: the VA
//! does not validate the server certificate). The handshake signature is still
//! checked, so the peer holds the key of the certificate it presents. That
//! check reads only the certificate's public key: webpki would refuse the
//! critical acmeIdentifier extension it does not know.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, PeerMisbehaved, SignatureScheme};

#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss, false)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss, true)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl AnyCertificate {
    fn verify_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
        tls13: bool,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let bad_encoding = || rustls::Error::InvalidCertificate(CertificateError::BadEncoding);
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|_| bad_encoding())?;
        let spki = parsed.public_key().raw;
        if tls13 {
            let spki = SubjectPublicKeyInfoDer::from(spki);
            return rustls::crypto::verify_tls13_signature_with_raw_key(message, &spki, dss, &self.algorithms);
        }
        // TLS 1.2: rustls has no raw-key helper; match the key's algorithm to
        // one of those the signature scheme allows, as webpki would.
        let (key_alg, key) = split_spki(spki).ok_or_else(bad_encoding)?;
        let algs = self
            .algorithms
            .mapping
            .iter()
            .find(|(scheme, _)| *scheme == dss.scheme)
            .map(|(_, algs)| *algs)
            .ok_or(rustls::Error::PeerMisbehaved(PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme))?;
        let alg = algs
            .iter()
            .find(|alg| alg.public_key_alg_id().as_ref() == key_alg)
            .ok_or(rustls::Error::InvalidCertificate(CertificateError::BadSignature))?;
        alg.verify_signature(key, message, dss.signature())
            .map(|()| HandshakeSignatureValid::assertion())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadSignature))
    }
}

/// SubjectPublicKeyInfo DER → (AlgorithmIdentifier contents, key bits).
fn split_spki(spki: &[u8]) -> Option<(&[u8], &[u8])> {
    let (0x30, body, _) = der_element(spki)? else { return None };
    let (0x30, alg, rest) = der_element(body)? else { return None };
    let (0x03, bits, _) = der_element(rest)? else { return None };
    match bits {
        [0, key @ ..] => Some((alg, key)),
        _ => None,
    }
}

/// One DER element: (tag, contents, what follows).
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// A TLS 1.2/1.3 client config (ring provider) that offers exactly `alpn`.
pub(super) fn any_cert_config(alpn: Vec<Vec<u8>>) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyCertificate { algorithms: provider.signature_verification_algorithms });
    let mut config = ClientConfig::builder_with_provider(provider as Arc<CryptoProvider>)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS client configuration: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = alpn;
    // A validation is a one-off connection; resuming would only leak state
    // between validations of different accounts.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

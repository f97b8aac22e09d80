//! tls-alpn-01 (RFC 8737; RFC 8738 §6 for IP addresses): a TLS handshake
//! with ALPN `acme-tls/1` whose certificate names exactly the identifier and
//! carries a critical acmeIdentifier extension holding SHA-256(key authorization).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tenure_engine::{Identifier, IdentifierKind};
use tokio::time::Instant;
use x509_parser::extensions::GeneralName;

use super::{Inner, before, connect_any, error_chain, key_authorization_digest};
use crate::problem::{Problem, ProblemType};

pub(super) const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// id-pe-acmeIdentifier (RFC 8737 §6.1).
const ACME_IDENTIFIER_OID: &str = "1.3.6.1.5.5.7.1.31";

pub(super) async fn validate(va: &Inner, identifier: &Identifier, key_authorization: &str, deadline: Instant) -> Result<(), Problem> {
    let (ips, sni) = match identifier.kind {
        IdentifierKind::Dns if identifier.is_wildcard() => {
            return Err(Problem::malformed(format!("tls-alpn-01 cannot validate the wildcard {}", identifier.value)));
        }
        IdentifierKind::Dns => {
            let ips = before(
                deadline,
                ProblemType::Dns,
                || format!("looking up A/AAAA for {}", identifier.value),
                va.resolver.lookup_ips(&identifier.value),
            )
            .await?;
            (ips, identifier.value.clone())
        }
        IdentifierKind::Ip => {
            let ip = identifier.ip_addr().ok_or_else(|| Problem::malformed(format!("{:?} is not an IP address", identifier.value)))?;
            // TLS cannot carry an address as SNI, so RFC 8738 §6 uses the reverse name.
            (vec![ip], reverse_dns_name(ip))
        }
    };
    let server_name =
        ServerName::try_from(sni.clone()).map_err(|e| Problem::malformed(format!("{sni:?} cannot be sent as TLS SNI: {e}")))?;

    let what = format!("for the tls-alpn-01 challenge to {}", identifier.value);
    let (stream, addr) = connect_any(&ips, va.cfg.tlsalpn01_port, deadline, &what).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&va.acme_tls));
    let tls = before(deadline, ProblemType::Connection, || format!("during the TLS handshake with {addr}"), async {
        connector
            .connect(server_name, stream)
            .await
            .map_err(|e| Problem::new(ProblemType::Tls, format!("TLS handshake with {addr} (SNI {sni}) failed: {}", error_chain(&e))))
    })
    .await?;
    let (_, conn) = tls.get_ref();
    if conn.alpn_protocol() != Some(ACME_TLS_ALPN) {
        return Err(Problem::new(
            ProblemType::Tls,
            format!(
                "Server at {addr} did not negotiate ALPN protocol \"acme-tls/1\" for the tls-alpn-01 challenge (negotiated {})",
                conn.alpn_protocol().map_or("none".to_string(), |p| format!("{:?}", String::from_utf8_lossy(p)))
            ),
        ));
    }
    let Some(leaf) = conn.peer_certificates().and_then(|chain| chain.first()) else {
        return Err(Problem::new(ProblemType::Tls, format!("Server at {addr} presented no certificate")));
    };
    check_certificate(leaf.as_ref(), identifier, &key_authorization_digest(key_authorization), addr)
}

/// RFC 8737 §3: exactly one subjectAltName, the identifier; a critical
/// acmeIdentifier extension whose value is the DER OCTET STRING of the digest.
fn check_certificate(der: &[u8], identifier: &Identifier, expected: &[u8; 32], addr: SocketAddr) -> Result<(), Problem> {
    let incorrect =
        |why: String| Problem::new(ProblemType::IncorrectResponse, format!("Incorrect validation certificate from {addr}: {why}"));
    let unauthorized =
        |why: String| Problem::new(ProblemType::Unauthorized, format!("Incorrect validation certificate from {addr}: {why}"));
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| incorrect(format!("cannot parse it: {e}")))?;

    let san = cert
        .subject_alternative_name()
        .map_err(|e| incorrect(format!("bad subjectAltName extension: {e}")))?
        .ok_or_else(|| unauthorized(format!("no subjectAltName extension (expected exactly {})", identifier.value)))?;
    let names = &san.value.general_names;
    if !matches!(names.as_slice(), [only] if names_identifier(only, identifier)) {
        let found: Vec<String> = names.iter().map(describe).collect();
        return Err(unauthorized(format!("subjectAltName must be exactly [{}], found [{}]", identifier.value, found.join(", "))));
    }

    let mut acme_exts = cert.extensions().iter().filter(|ext| ext.oid.to_id_string() == ACME_IDENTIFIER_OID);
    let ext = match (acme_exts.next(), acme_exts.next()) {
        (Some(ext), None) => ext,
        (None, _) => return Err(unauthorized(format!("no acmeIdentifier extension ({ACME_IDENTIFIER_OID})"))),
        (Some(_), Some(_)) => return Err(incorrect("more than one acmeIdentifier extension".into())),
    };
    if !ext.critical {
        return Err(unauthorized("the acmeIdentifier extension is not marked critical".into()));
    }
    // extnValue holds OCTET STRING (0x04), length 32 (0x20), then the digest.
    let digest = match ext.value {
        [0x04, 0x20, digest @ ..] if digest.len() == 32 => digest,
        other => {
            return Err(incorrect(format!(
                "the acmeIdentifier extension is not a 32-byte DER OCTET STRING (got {} bytes: {})",
                other.len(),
                hex(&other[..other.len().min(40)])
            )));
        }
    };
    if digest != expected.as_slice() {
        return Err(unauthorized(format!(
            "acmeIdentifier is {}, expected {} (SHA-256 of the key authorization)",
            hex(digest),
            hex(expected)
        )));
    }
    Ok(())
}

fn names_identifier(name: &GeneralName<'_>, identifier: &Identifier) -> bool {
    match (name, identifier.kind) {
        (GeneralName::DNSName(dns), IdentifierKind::Dns) => dns.eq_ignore_ascii_case(&identifier.value),
        (GeneralName::IPAddress(bytes), IdentifierKind::Ip) => ip_from_bytes(bytes) == identifier.ip_addr(),
        _ => false,
    }
}

fn describe(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::DNSName(dns) => format!("dNSName {dns:?}"),
        GeneralName::IPAddress(bytes) => match ip_from_bytes(bytes) {
            Some(ip) => format!("iPAddress {ip}"),
            None => format!("iPAddress 0x{}", hex(bytes)),
        },
        other => format!("{other:?}").chars().take(80).collect(),
    }
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    ::hex::encode(bytes)
}

/// `4.3.2.1.in-addr.arpa` / nibble-reversed `….ip6.arpa` (RFC 1035, RFC 3596).
fn reverse_dns_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut name = String::with_capacity(72);
            for byte in v6.octets().iter().rev() {
                name.push_str(&format!("{:x}.{:x}.", byte & 0x0f, byte >> 4));
            }
            name.push_str("ip6.arpa");
            name
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use rcgen::{CertificateParams, CustomExtension, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::server::{ClientHello, ResolvesServerCert};
    use rustls::sign::CertifiedKey;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::super::testdns::TestDns;
    use super::super::{ChallengeKind, ValidationConfig, Validator};
    use super::*;

    const KEY_AUTH: &str = "token.thumbprint";

    /// Serves one certificate and records the SNI it was asked for.
    #[derive(Debug)]
    struct OneCert {
        key: Arc<CertifiedKey>,
        sni: Mutex<Option<String>>,
    }

    impl ResolvesServerCert for OneCert {
        fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            if let Ok(mut sni) = self.sni.lock() {
                *sni = hello.server_name().map(str::to_string);
            }
            Some(self.key.clone())
        }
    }

    fn certificate(sans: &[&str], ext: Option<CustomExtension>) -> Arc<CertifiedKey> {
        certificate_with(sans, ext, &rcgen::PKCS_ECDSA_P256_SHA256)
    }

    fn certificate_with(sans: &[&str], ext: Option<CustomExtension>, alg: &'static rcgen::SignatureAlgorithm) -> Arc<CertifiedKey> {
        let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.custom_extensions.extend(ext);
        let key = KeyPair::generate_for(alg).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let der: CertificateDer<'static> = cert.der().clone();
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signer = rustls::crypto::ring::default_provider().key_provider.load_private_key(key_der).unwrap();
        Arc::new(CertifiedKey::new(vec![der], signer))
    }

    fn good_extension() -> CustomExtension {
        CustomExtension::new_acme_identifier(&key_authorization_digest(KEY_AUTH))
    }

    /// A TLS server on 127.0.0.1 presenting `key`, negotiating `alpn`.
    async fn server(key: Arc<CertifiedKey>, alpn: &[&[u8]], versions: &[&'static rustls::SupportedProtocolVersion]) -> (u16, Arc<OneCert>) {
        let resolver = Arc::new(OneCert { key, sni: Mutex::new(None) });
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(stream).await {
                        let mut sink = Vec::new();
                        let _ = tls.read_to_end(&mut sink).await;
                    }
                });
            }
        });
        (port, resolver)
    }

    async fn run(key: Arc<CertifiedKey>, alpn: &[&[u8]], id: Identifier) -> (Result<(), Problem>, Option<String>) {
        run_with(key, alpn, id, rustls::DEFAULT_VERSIONS).await
    }

    async fn run_with(
        key: Arc<CertifiedKey>,
        alpn: &[&[u8]],
        id: Identifier,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> (Result<(), Problem>, Option<String>) {
        let dns = TestDns::start().await;
        let (port, seen) = server(key, alpn, versions).await;
        let cfg = ValidationConfig { tlsalpn01_port: port, dns_resolver: Some(dns.addr), ..Default::default() };
        let result = Validator::new(cfg).unwrap().validate(ChallengeKind::TlsAlpn01, &id, "token", KEY_AUTH).await;
        let sni = seen.sni.lock().unwrap().clone();
        (result, sni)
    }

    #[tokio::test]
    async fn valid_certificate_passes_with_sni() {
        let key = certificate(&["example.com"], Some(good_extension()));
        let (result, sni) = run(key, &[ACME_TLS_ALPN], Identifier::dns("example.com")).await;
        result.unwrap();
        assert_eq!(sni.as_deref(), Some("example.com"));
    }

    #[tokio::test]
    async fn tls12_handshake_signatures_are_checked_without_webpki() {
        // TLS 1.2 takes the hand-written SPKI path in tls.rs; try each key type.
        for alg in [&rcgen::PKCS_ECDSA_P256_SHA256, &rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
            let key = certificate_with(&["example.com"], Some(good_extension()), alg);
            let (result, _) = run_with(key, &[ACME_TLS_ALPN], Identifier::dns("example.com"), &[&rustls::version::TLS12]).await;
            result.unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        }
    }

    #[tokio::test]
    async fn ip_identifier_uses_reverse_name_sni() {
        let key = certificate(&["127.0.0.1"], Some(good_extension()));
        let (result, sni) = run(key, &[ACME_TLS_ALPN], Identifier::ip([127, 0, 0, 1].into())).await;
        result.unwrap();
        assert_eq!(sni.as_deref(), Some("1.0.0.127.in-addr.arpa"));
    }

    #[tokio::test]
    async fn wrong_digest_is_unauthorized() {
        let ext = CustomExtension::new_acme_identifier(&key_authorization_digest("other.key"));
        let (result, _) = run(certificate(&["example.com"], Some(ext)), &[ACME_TLS_ALPN], Identifier::dns("example.com")).await;
        let err = result.unwrap_err();
        assert_eq!(err.kind, ProblemType::Unauthorized);
        assert!(err.detail.contains(&hex(&key_authorization_digest(KEY_AUTH))), "{err}");
    }

    #[tokio::test]
    async fn missing_alpn_is_a_tls_problem() {
        let key = certificate(&["example.com"], Some(good_extension()));
        let (result, _) = run(key, &[], Identifier::dns("example.com")).await;
        let err = result.unwrap_err();
        assert_eq!(err.kind, ProblemType::Tls);
        assert!(err.detail.contains("acme-tls/1"), "{err}");
    }

    #[tokio::test]
    async fn non_critical_extension_is_unauthorized() {
        let mut ext = good_extension();
        ext.set_criticality(false);
        let (result, _) = run(certificate(&["example.com"], Some(ext)), &[ACME_TLS_ALPN], Identifier::dns("example.com")).await;
        let err = result.unwrap_err();
        assert_eq!(err.kind, ProblemType::Unauthorized);
        assert!(err.detail.contains("not marked critical"), "{err}");
    }

    #[tokio::test]
    async fn missing_extension_and_extra_names_are_unauthorized() {
        let (result, _) = run(certificate(&["example.com"], None), &[ACME_TLS_ALPN], Identifier::dns("example.com")).await;
        let err = result.unwrap_err();
        assert_eq!(err.kind, ProblemType::Unauthorized);
        assert!(err.detail.contains("no acmeIdentifier extension"), "{err}");

        let key = certificate(&["example.com", "www.example.com"], Some(good_extension()));
        let (result, _) = run(key, &[ACME_TLS_ALPN], Identifier::dns("example.com")).await;
        let err = result.unwrap_err();
        assert_eq!(err.kind, ProblemType::Unauthorized);
        assert!(err.detail.contains("www.example.com"), "{err}");
    }

    #[tokio::test]
    async fn refused_connection_is_a_connection_problem() {
        // Bound but not listening, and held for the whole test: nothing else gets the port.
        let closed = tokio::net::TcpSocket::new_v4().unwrap();
        closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = closed.local_addr().unwrap().port();
        let cfg = ValidationConfig { tlsalpn01_port: port, ..Default::default() };
        let err = Validator::new(cfg)
            .unwrap()
            .validate(ChallengeKind::TlsAlpn01, &Identifier::ip([127, 0, 0, 1].into()), "token", KEY_AUTH)
            .await
            .unwrap_err();
        assert_eq!(err.kind, ProblemType::Connection);
    }

    #[test]
    fn reverse_names() {
        assert_eq!(reverse_dns_name("192.0.2.1".parse().unwrap()), "1.2.0.192.in-addr.arpa");
        let v6 = reverse_dns_name("2001:db8::1".parse().unwrap());
        assert!(v6.starts_with("1.0.0.0.") && v6.ends_with(".8.b.d.0.1.0.0.2.ip6.arpa"), "{v6}");
    }
}

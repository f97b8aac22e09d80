//! CRLs as a relying party checks them: fetched from the URL in the leaf's
//! CRL distribution point, and `openssl verify -crl_check`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::Server;

/// The leaf (first certificate) of a PEM chain, DER.
pub fn leaf_der(chain: &str) -> Vec<u8> {
    x509_parser::pem::parse_x509_pem(chain.as_bytes()).unwrap().1.contents
}

/// GET over HTTPS, trusting the server's root.
pub async fn fetch(server: &Server, url: &str) -> Vec<u8> {
    let root = reqwest::Certificate::from_pem(&std::fs::read(server.root_pem()).unwrap()).unwrap();
    let client = reqwest::Client::builder().add_root_certificate(root).build().unwrap();
    let rsp = client.get(url).send().await.unwrap();
    assert!(rsp.status().is_success(), "GET {url}: {}", rsp.status());
    rsp.bytes().await.unwrap().to_vec()
}

/// The CRL distribution point URL the leaf carries.
pub fn crl_url(chain: &str) -> String {
    let der = leaf_der(chain);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    for ext in cert.extensions() {
        if let x509_parser::extensions::ParsedExtension::CRLDistributionPoints(points) = ext.parsed_extension() {
            for p in points.iter() {
                if let Some(x509_parser::extensions::DistributionPointName::FullName(names)) = &p.distribution_point {
                    for n in names {
                        if let x509_parser::extensions::GeneralName::URI(u) = n {
                            return u.to_string();
                        }
                    }
                }
            }
        }
    }
    panic!("the certificate has no CRL distribution point");
}

/// `openssl verify -crl_check` of the leaf with the CRL (DER from the server);
/// what openssl said includes the CRL as text.
pub fn openssl_crl_verify(server: &Server, chain: &str, crl_der: &[u8], work: &Path) -> (bool, String) {
    let crl = crl_pem_file(crl_der, work, "crl");
    let text = Command::new("openssl").args(["crl", "-noout", "-text", "-in"]).arg(&crl).output().unwrap();
    assert!(text.status.success(), "openssl crl -text: {}", String::from_utf8_lossy(&text.stderr));
    let (passed, said) = openssl_verify_with_crls(server, chain, &[crl], false, work);
    (passed, format!("{}{said}", String::from_utf8_lossy(&text.stdout)))
}

/// A CRL as served (DER) written as `work/NAME.pem`, which openssl refuses unless it is one.
pub fn crl_pem_file(crl_der: &[u8], work: &Path, name: &str) -> PathBuf {
    let (der, pem) = (work.join(format!("{name}.der")), work.join(format!("{name}.pem")));
    std::fs::write(&der, crl_der).unwrap();
    let out = Command::new("openssl").args(["crl", "-inform", "DER", "-in"]).arg(&der).arg("-out").arg(&pem).output().unwrap();
    assert!(out.status.success(), "openssl crl refused {name}: {}", String::from_utf8_lossy(&out.stderr));
    pem
}

/// `openssl verify` of a leaf-first chain's leaf, trusting only the server's
/// root, the rest of the chain untrusted, with the CRL files given:
/// `-crl_check_all` (every issuer's CRL) with `all`, else `-crl_check` (the
/// leaf's issuer's). (passed, what openssl said)
pub fn openssl_verify_with_crls(server: &Server, chain: &str, crls: &[PathBuf], all: bool, work: &Path) -> (bool, String) {
    let certs: Vec<&str> = chain.split_inclusive("-----END CERTIFICATE-----\n").collect();
    std::fs::write(work.join("leaf.pem"), certs[0]).unwrap();
    std::fs::write(work.join("inter.pem"), certs[1..].concat()).unwrap();
    let mut verify = Command::new("openssl");
    verify.arg("verify").arg(if all { "-crl_check_all" } else { "-crl_check" }).arg("-CAfile").arg(server.root_pem());
    verify.arg("-untrusted").arg(work.join("inter.pem"));
    for crl in crls {
        verify.arg("-CRLfile").arg(crl);
    }
    let out = verify.arg(work.join("leaf.pem")).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

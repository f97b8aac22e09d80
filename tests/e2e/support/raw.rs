//! A bare ACME client that signs whatever it is told to, so tests can send
//! exactly the malformed requests no real client would.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

pub struct Response {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    /// The ACME error type's last part, e.g. "badNonce".
    pub fn problem_type(&self) -> String {
        self.json()["type"].as_str().unwrap_or("").trim_start_matches("urn:ietf:params:acme:error:").to_string()
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }
}

pub struct EcKey {
    pair: EcdsaKeyPair,
    pub pkcs8: Vec<u8>,
}

impl EcKey {
    pub fn generate() -> EcKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("keygen");
        Self::from_pkcs8(pkcs8.as_ref())
    }
    pub fn from_pkcs8(pkcs8: &[u8]) -> EcKey {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &SystemRandom::new()).expect("key");
        EcKey { pair, pkcs8: pkcs8.to_vec() }
    }
    pub fn jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        json!({ "kty": "EC", "crv": "P-256", "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65]) })
    }
    pub fn sign(&self, data: &[u8]) -> Vec<u8> {
        self.pair.sign(&SystemRandom::new(), data).expect("sign").as_ref().to_vec()
    }
}

/// Builds a flattened JWS from an explicit protected header.
pub fn jws(key: &EcKey, protected: &Value, payload: &str) -> Value {
    let protected_b64 = B64.encode(protected.to_string());
    let payload_b64 = B64.encode(payload);
    let sig = key.sign(format!("{protected_b64}.{payload_b64}").as_bytes());
    json!({ "protected": protected_b64, "payload": payload_b64, "signature": B64.encode(sig) })
}

pub struct RawClient {
    http: reqwest::Client,
    pub directory: Value,
    pub key: EcKey,
    pub kid: Option<String>,
}

impl RawClient {
    pub async fn new(directory_url: &str, root_pem: &std::path::Path) -> RawClient {
        super::install_crypto_provider();
        let pem = std::fs::read(root_pem).expect("root.pem");
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.expect("pem")).expect("root");
        }
        let tls = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        let http = reqwest::Client::builder().tls_backend_preconfigured(tls).build().expect("client");
        let body = http.get(directory_url).send().await.expect("directory").bytes().await.expect("body");
        let directory: Value = serde_json::from_slice(&body).expect("directory is JSON");
        RawClient { http, directory, key: EcKey::generate(), kid: None }
    }

    pub fn url(&self, name: &str) -> String {
        self.directory[name].as_str().expect("directory entry").to_string()
    }

    pub async fn nonce(&self) -> String {
        let r = self.http.head(self.url("newNonce")).send().await.expect("nonce");
        r.headers()["replay-nonce"].to_str().expect("nonce").to_string()
    }

    pub async fn get(&self, url: &str) -> Response {
        let r = self.http.get(url).send().await.expect("get");
        Self::collect(r).await
    }

    /// POSTs a raw body with a content type.
    pub async fn post_raw(&self, url: &str, body: Vec<u8>, content_type: &str) -> Response {
        let r = self.http.post(url).header("content-type", content_type).body(body).send().await.expect("post");
        Self::collect(r).await
    }

    async fn collect(r: reqwest::Response) -> Response {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.bytes().await.expect("body").to_vec();
        Response { status, headers, body }
    }

    /// The protected header a well-behaved client would send.
    pub async fn protected(&self, url: &str) -> Value {
        let mut p = json!({ "alg": "ES256", "nonce": self.nonce().await, "url": url });
        match &self.kid {
            Some(kid) => p["kid"] = json!(kid),
            None => p["jwk"] = self.key.jwk(),
        }
        p
    }

    pub async fn post_jws(&self, url: &str, jws: &Value) -> Response {
        self.post_raw(url, jws.to_string().into_bytes(), "application/jose+json").await
    }

    /// A correct signed POST with `payload` ("" for POST-as-GET).
    pub async fn post(&self, url: &str, payload: &str) -> Response {
        let p = self.protected(url).await;
        self.post_jws(url, &jws(&self.key, &p, payload)).await
    }

    /// Registers the key; later requests use `kid`.
    pub async fn register(&mut self) -> Response {
        let url = self.url("newAccount");
        let r = self.post(&url, &json!({ "termsOfServiceAgreed": true }).to_string()).await;
        assert!(r.status == 201 || r.status == 200, "newAccount: {} {}", r.status, String::from_utf8_lossy(&r.body));
        self.kid = r.header("location");
        r
    }
}

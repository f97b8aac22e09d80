//! The HTTP side of certificate delivery: POSTs the engine's signed webhook
//! bodies. Called from the lifecycle thread (not the runtime), it blocks on
//! the runtime it was built with.

use std::time::Duration;

use tenure_engine::lifecycle::{WebhookSender, WebhookTarget};

/// The engine's `WebhookSender` over reqwest.
pub struct HttpWebhooks {
    runtime: tokio::runtime::Handle,
}

impl HttpWebhooks {
    /// `runtime` runs the requests; the caller must not be one of its worker threads.
    pub fn new(runtime: tokio::runtime::Handle) -> Result<HttpWebhooks, String> {
        // reqwest is built without a default crypto provider; rustls needs one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(HttpWebhooks { runtime })
    }

    /// A client that reaches `target.host` only at the addresses the engine
    /// checked: one per webhook, since reqwest pins addresses per client.
    /// No proxy (it would resolve the name again) and no redirects (they
    /// would lead anywhere).
    fn client(target: &WebhookTarget) -> Result<reqwest::Client, String> {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .resolve_to_addrs(&target.host, &target.addrs)
            .user_agent(concat!("tenure/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("webhook client: {e}"))
    }
}

impl WebhookSender for HttpWebhooks {
    fn post(&self, target: &WebhookTarget, headers: &[(String, String)], body: &[u8]) -> Result<(), String> {
        let url = &target.url;
        if target.addrs.is_empty() {
            return Err(format!("POST {url}: no checked address to connect to"));
        }
        let mut req = Self::client(target)?.post(url).body(body.to_vec());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let status = self.runtime.block_on(async { req.send().await.map(|r| r.status()) }).map_err(|e| format!("POST {url}: {e}"))?;
        if status.is_success() { Ok(()) } else { Err(format!("POST {url}: HTTP {status}")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The POST goes to the pinned address, whatever the name resolves to:
    /// `pinned.invalid` resolves nowhere, yet the request arrives.
    #[test]
    fn posts_only_to_the_pinned_address() {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap();
            s.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n").unwrap();
            String::from_utf8_lossy(&buf[..n]).to_string()
        });
        let hooks = HttpWebhooks::new(runtime.handle().clone()).unwrap();
        let target =
            WebhookTarget { url: format!("http://pinned.invalid:{}/hook", addr.port()), host: "pinned.invalid".into(), addrs: vec![addr] };
        hooks.post(&target, &[("X-Test".into(), "1".into())], b"{}").unwrap();
        let request = server.join().unwrap();
        assert!(request.starts_with("POST /hook "), "{request}");
        assert!(request.to_ascii_lowercase().contains("host: pinned.invalid"), "{request}");
        let none = WebhookTarget { addrs: vec![], ..target };
        assert!(hooks.post(&none, &[], b"{}").unwrap_err().contains("no checked address"));
    }
}

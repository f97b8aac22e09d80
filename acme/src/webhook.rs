//! The HTTP side of certificate delivery: POSTs the engine's signed webhook
//! bodies. Called from the lifecycle thread (not the runtime), it blocks on
//! the runtime it was built with.

use std::time::Duration;

use tenure_engine::lifecycle::WebhookSender;

/// The engine's `WebhookSender` over reqwest.
pub struct HttpWebhooks {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl HttpWebhooks {
    /// `runtime` runs the requests; the caller must not be one of its worker threads.
    pub fn new(runtime: tokio::runtime::Handle) -> Result<HttpWebhooks, String> {
        // reqwest is built without a default crypto provider; rustls needs one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tenure/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("webhook client: {e}"))?;
        Ok(HttpWebhooks { client, runtime })
    }
}

impl WebhookSender for HttpWebhooks {
    fn post(&self, url: &str, headers: &[(String, String)], body: &[u8]) -> Result<(), String> {
        let mut req = self.client.post(url).body(body.to_vec());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let status = self.runtime.block_on(async { req.send().await.map(|r| r.status()) }).map_err(|e| format!("POST {url}: {e}"))?;
        if status.is_success() { Ok(()) } else { Err(format!("POST {url}: HTTP {status}")) }
    }
}

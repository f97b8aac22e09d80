//! Where a webhook may go, and whose secret signs it.
//!
//! A `delivery-webhook` is an `https://` URL of a host with public addresses.
//! The operator widens that with allowances ([`WebhookAllow`]): a host name or
//! an address range that may be reached although it is loopback, link-local
//! or private, and, written `http://…`, over plain http. Names are resolved at
//! delivery time and every address is checked; the sender then connects only
//! to those addresses ([`WebhookTarget::addrs`]), so a DNS answer that changes
//! between the check and the connection cannot redirect the POST.
//!
//! Each tenant has its own signing secret, sealed in the store like CA keys:
//! a receiver of one tenant's webhooks cannot forge another tenant's.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ipnet::IpNet;

use crate::core::Core;
use crate::error::{Error, Result};

/// A destination the operator lets webhooks reach beyond public https hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookAllow {
    /// Plain http is allowed too (written with an `http://` prefix).
    pub http: bool,
    pub scope: AllowScope,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowScope {
    /// A host name exactly as URLs name it (lowercase): whatever it resolves to.
    Host(String),
    /// Addresses in this range, however the URL names them.
    Net(IpNet),
}

impl FromStr for WebhookAllow {
    type Err = String;

    /// `[http://]HOST`, `[http://]ADDRESS` or `[http://]ADDRESS/PREFIX`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let lower = s.trim().to_ascii_lowercase();
        let (http, rest) = match lower.strip_prefix("http://") {
            Some(rest) => (true, rest),
            None => (false, lower.strip_prefix("https://").unwrap_or(&lower)),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let bare = rest.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(rest);
        let scope = if let Ok(net) = bare.parse::<IpNet>() {
            if net.trunc() != net {
                return Err(format!("{s:?}: host bits are set (the network is {})", net.trunc()));
            }
            AllowScope::Net(net)
        } else if let Ok(ip) = bare.parse::<IpAddr>() {
            AllowScope::Net(IpNet::from(ip))
        } else if !rest.is_empty()
            && rest.len() <= 253
            && rest.split('.').all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        {
            AllowScope::Host(rest.to_string())
        } else {
            return Err(format!("{s:?} is not a host name, an IP address or an address range (CIDR), optionally after http://"));
        };
        Ok(WebhookAllow { http, scope })
    }
}

impl fmt::Display for WebhookAllow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.http {
            f.write_str("http://")?;
        }
        match &self.scope {
            AllowScope::Host(h) => f.write_str(h),
            AllowScope::Net(n) if n.prefix_len() == n.max_prefix_len() => write!(f, "{}", n.addr()),
            AllowScope::Net(n) => write!(f, "{n}"),
        }
    }
}

/// Where one webhook goes: its URL and the only addresses the sender may
/// connect to for it (checked, in the order the resolver gave them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookTarget {
    pub url: String,
    /// The URL's host: a DNS name, or an IP address as text.
    pub host: String,
    pub addrs: Vec<SocketAddr>,
}

/// A webhook URL parsed and checked as far as is possible without DNS.
struct Checked {
    url: url::Url,
    host: String,
    literal: Option<IpAddr>,
    port: u16,
}

/// Why an address is not one a webhook goes to by default; None for a public one.
pub fn restricted(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => restricted_v4(v4),
        IpAddr::V6(v6) => restricted_v6(v6),
    }
}

fn restricted_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(match () {
        _ if a == 0 => "an unspecified (this-network)",
        _ if ip.is_loopback() => "a loopback",
        _ if ip.is_link_local() => "a link-local",
        // Private (RFC 1918) and shared carrier-grade NAT space (RFC 6598):
        // the platform's own networks, which a tenant must not aim tenure at.
        _ if ip.is_private() => "a private",
        _ if a == 100 && (64..128).contains(&b) => "a shared (carrier-grade NAT)",
        _ if ip.is_multicast() => "a multicast",
        _ if ip.is_broadcast() || a >= 240 => "a reserved",
        _ => return None,
    })
}

fn restricted_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("an unspecified");
    }
    if ip.is_loopback() {
        return Some("a loopback");
    }
    // An IPv4 address dressed as IPv6 (mapped, NAT64, the old compatible form)
    // reaches that IPv4 host: judge it as one.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return restricted_v4(v4);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || s[..6] == [0; 6] {
        let [_, _, _, _, _, _, hi, lo] = s;
        return restricted_v4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    }
    Some(match s[0] {
        x if x & 0xffc0 == 0xfe80 => "a link-local",
        x if x & 0xffc0 == 0xfec0 => "a site-local",
        x if x & 0xfe00 == 0xfc00 => "a private (unique local)",
        x if x & 0xff00 == 0xff00 => "a multicast",
        _ => return None,
    })
}

fn host_allowed(allow: &[WebhookAllow], host: &str, ip: Option<IpAddr>, need_http: bool) -> bool {
    allow.iter().filter(|a| a.http || !need_http).any(|a| match &a.scope {
        AllowScope::Host(h) => h == host,
        AllowScope::Net(n) => ip.is_some_and(|ip| n.contains(&ip)),
    })
}

/// Parses `url` and checks what needs no DNS: the scheme (https, or http to
/// an allowed host), and an address written in the URL.
fn check_url(url: &str, allow: &[WebhookAllow]) -> Result<Checked> {
    let bad = |why: String| Error::malformed(format!("delivery-webhook {url:?} {why}"));
    let parsed = url::Url::parse(url).map_err(|e| bad(format!("is not a URL: {e}")))?;
    let (host, literal) = match parsed.host() {
        Some(url::Host::Domain(d)) => (d.trim_end_matches('.').to_ascii_lowercase(), None),
        Some(url::Host::Ipv4(ip)) => (ip.to_string(), Some(IpAddr::V4(ip))),
        Some(url::Host::Ipv6(ip)) => (ip.to_string(), Some(IpAddr::V6(ip))),
        None => return Err(bad("names no host".into())),
    };
    match parsed.scheme() {
        "https" => {}
        // Without an address yet, a name is let through if an http
        // allowance could cover it; delivery checks its addresses.
        "http" if literal.is_none() && allow.iter().any(|a| a.http && matches!(a.scope, AllowScope::Net(_))) => {}
        "http" if host_allowed(allow, &host, literal, true) => {}
        "http" => return Err(bad(format!("is plain http; webhooks use https unless the operator allows http to {host}"))),
        other => return Err(bad(format!("has the scheme {other}; webhooks use https"))),
    }
    let port = parsed.port_or_known_default().ok_or_else(|| bad("names no port".into()))?;
    if let Some(ip) = literal {
        check_address(allow, &host, ip, parsed.scheme() == "http").map_err(bad)?;
    }
    Ok(Checked { url: parsed, host, literal, port })
}

/// Whether `ip`, reached as `host`, is a destination the allowances permit;
/// the reason if not.
fn check_address(allow: &[WebhookAllow], host: &str, ip: IpAddr, http: bool) -> std::result::Result<(), String> {
    if http && !host_allowed(allow, host, Some(ip), true) {
        return Err(format!("is plain http to {ip}; webhooks use https unless the operator allows http to it"));
    }
    match restricted(ip) {
        Some(why) if !host_allowed(allow, host, Some(ip), false) => {
            Err(format!("reaches {ip}, {why} address; webhooks go to public addresses unless the operator allows it"))
        }
        _ => Ok(()),
    }
}

/// A `delivery-webhook` as it is set (registry): checked as far as possible
/// without resolving its host.
pub fn check_webhook_url(url: &str, allow: &[WebhookAllow]) -> Result<()> {
    check_url(url, allow).map(|_| ())
}

/// Resolves the webhook's host with `resolve` and checks every address; the
/// sender must connect only to the addresses returned.
pub fn webhook_target(
    url: &str,
    allow: &[WebhookAllow],
    resolve: &dyn Fn(&str, u16) -> std::io::Result<Vec<SocketAddr>>,
) -> Result<WebhookTarget> {
    let checked = check_url(url, allow)?;
    let http = checked.url.scheme() == "http";
    let addrs = match checked.literal {
        Some(ip) => vec![SocketAddr::new(ip, checked.port)],
        None => resolve(&checked.host, checked.port)
            .map_err(|e| Error::internal(format!("resolving webhook host {}: {e}", checked.host)).caused_by(e))?,
    };
    if addrs.is_empty() {
        return Err(Error::internal(format!("webhook host {} resolves to no address", checked.host)));
    }
    // Every address, not just the first: a name that resolves to a public
    // address and a loopback one must not reach the loopback one on a retry.
    for a in &addrs {
        check_address(allow, &checked.host, a.ip(), http)
            .map_err(|why| Error::malformed(format!("delivery-webhook {url:?} (host {}) {why}", checked.host)))?;
    }
    Ok(WebhookTarget { url: checked.url.to_string(), host: checked.host, addrs })
}

/// The system resolver (getaddrinfo), for the lifecycle thread.
pub fn system_resolve(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    Ok((host, port).to_socket_addrs()?.collect())
}

/// Associated data of a sealed webhook secret: bound to its tenant, so a blob
/// copied to another tenant's row does not open.
fn secret_context(tenant: &str) -> String {
    format!("webhook-secret:{tenant}")
}

/// A new secret: 32 random octets, base64url. Receivers use the text itself
/// as the HMAC key.
fn new_secret(core: &Core) -> Result<String> {
    let mut raw = [0u8; 32];
    core.fill_random(&mut raw)?;
    Ok(URL_SAFE_NO_PAD.encode(raw))
}

/// A new secret for a tenant being created, sealed for its row.
pub(crate) fn new_sealed_secret(core: &Core, tenant: &str) -> Result<Vec<u8>> {
    core.ca_keys.kek().seal(new_secret(core)?.as_bytes(), &secret_context(tenant))
}

fn open_secret(core: &Core, tenant: &str, sealed: &[u8]) -> Result<String> {
    let plain = core.ca_keys.kek().open(sealed, &secret_context(tenant))?;
    String::from_utf8(plain).map_err(|_| Error::internal(format!("the webhook secret of tenant {tenant} is not text")))
}

/// The tenant's webhook secret. A tenant from before per-tenant secrets gets
/// one now; two processes doing so at once agree on the first one stored.
pub(crate) fn tenant_secret(core: &Core, tenant: &str) -> Result<String> {
    if let Some(sealed) = core.store.tenant_webhook_secret(tenant)? {
        return open_secret(core, tenant, &sealed);
    }
    let sealed = new_sealed_secret(core, tenant)?;
    let stored = core.store.store_tenant_webhook_secret(tenant, &sealed, false)?;
    open_secret(core, tenant, &stored)
}

/// Replaces the tenant's webhook secret; webhooks sent from now on are signed
/// with the new one.
pub(crate) fn rotate_tenant_secret(core: &Core, tenant: &str) -> Result<String> {
    let secret = new_secret(core)?;
    let sealed = core.ca_keys.kek().seal(secret.as_bytes(), &secret_context(tenant))?;
    core.store.store_tenant_webhook_secret(tenant, &sealed, true)?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(list: &[&str]) -> Vec<WebhookAllow> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    fn fixed(addrs: &'static [&'static str]) -> impl Fn(&str, u16) -> std::io::Result<Vec<SocketAddr>> {
        move |_, port| Ok(addrs.iter().map(|a| SocketAddr::new(a.parse().unwrap(), port)).collect())
    }

    #[test]
    fn allowances_parse_and_print() {
        for (text, shown) in [
            ("127.0.0.1", "127.0.0.1"),
            ("http://127.0.0.1", "http://127.0.0.1"),
            ("HTTP://Hooks.Internal/", "http://hooks.internal"),
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("https://[::1]", "::1"),
            ("fd00::/8", "fd00::/8"),
        ] {
            assert_eq!(text.parse::<WebhookAllow>().unwrap().to_string(), shown, "{text}");
        }
        for bad in ["", "10.0.0.1/8", "ftp://x", "a..b", "host:8080", "*.example.com"] {
            assert!(bad.parse::<WebhookAllow>().is_err(), "{bad}");
        }
    }

    #[test]
    fn restricted_ranges() {
        for ip in [
            "127.0.0.1",
            "127.9.9.9",
            "0.0.0.0",
            "169.254.169.254",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "fd12::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(restricted(ip.parse().unwrap()).is_some(), "{ip}");
        }
        for ip in ["93.184.215.14", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "172.32.0.1", "100.128.0.1"] {
            assert_eq!(restricted(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[test]
    fn urls_must_be_https_unless_allowed() {
        check_webhook_url("https://hooks.example.com/x", &[]).unwrap();
        for (url, why) in [
            ("http://hooks.example.com/x", "plain http"),
            ("ftp://hooks.example.com/x", "scheme ftp"),
            ("not a url", "not a URL"),
            ("https://127.0.0.1:8443/x", "loopback"),
            ("https://[::1]/x", "loopback"),
            ("https://169.254.169.254/latest", "link-local"),
            ("https://10.0.0.7/x", "private"),
        ] {
            let err = check_webhook_url(url, &[]).unwrap_err();
            assert_eq!(err.kind, crate::ErrorKind::Malformed);
            assert!(err.detail.contains(why), "{url}: {}", err.detail);
        }
        // An address allowance lifts the address rule, not the https one.
        check_webhook_url("https://127.0.0.1:8443/x", &allow(&["127.0.0.1"])).unwrap();
        assert!(check_webhook_url("http://127.0.0.1:8080/x", &allow(&["127.0.0.1"])).unwrap_err().detail.contains("plain http"));
        check_webhook_url("http://127.0.0.1:8080/x", &allow(&["http://127.0.0.0/8"])).unwrap();
        check_webhook_url("http://hooks.internal/x", &allow(&["http://hooks.internal"])).unwrap();
        assert!(check_webhook_url("http://other.internal/x", &allow(&["http://hooks.internal"])).is_err());
    }

    #[test]
    fn delivery_checks_every_resolved_address_and_pins_them() {
        let public = webhook_target("https://hooks.example.com/x", &[], &fixed(&["93.184.215.14", "2606:4700::1111"])).unwrap();
        assert_eq!(public.host, "hooks.example.com");
        assert_eq!(public.addrs, vec!["93.184.215.14:443".parse().unwrap(), "[2606:4700::1111]:443".parse().unwrap()]);
        // A name that resolves to loopback (say, by DNS rebinding), even beside a public address.
        for addrs in [&["127.0.0.1"][..], &["93.184.215.14", "127.0.0.1"], &["::ffff:10.0.0.1"]] {
            let err = webhook_target("https://hooks.example.com/x", &[], &fixed(addrs)).unwrap_err();
            assert!(err.detail.contains("(host hooks.example.com) reaches"), "{}", err.detail);
        }
        // Allowed by name or by range.
        webhook_target("https://hooks.internal/x", &allow(&["hooks.internal"]), &fixed(&["10.0.0.7"])).unwrap();
        webhook_target("https://hooks.internal/x", &allow(&["10.0.0.0/24"]), &fixed(&["10.0.0.7"])).unwrap();
        assert!(webhook_target("https://hooks.internal/x", &allow(&["10.0.0.0/24"]), &fixed(&["10.0.1.7"])).is_err());
        // Plain http to a name allowed by range: each address must be in an http range.
        let t = webhook_target("http://localhost:8080/x", &allow(&["http://127.0.0.0/8"]), &fixed(&["127.0.0.1"])).unwrap();
        assert_eq!(t.addrs, vec!["127.0.0.1:8080".parse().unwrap()]);
        assert!(webhook_target("http://localhost:8080/x", &allow(&["http://127.0.0.0/8", "::1"]), &fixed(&["::1"])).is_err());
        // An address in the URL is not resolved.
        let t = webhook_target("http://127.0.0.1:9/x", &allow(&["http://127.0.0.1"]), &|_, _| panic!("resolved")).unwrap();
        assert_eq!(t.addrs, vec!["127.0.0.1:9".parse().unwrap()]);
        assert!(webhook_target("https://nowhere.example/x", &[], &fixed(&[])).unwrap_err().detail.contains("no address"));
    }
}

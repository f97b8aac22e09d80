//! DNS for validation: A/AAAA for http-01 and tls-alpn-01, TXT for dns-01.
//!
//! Caching is off: a client publishes its TXT record and answers the
//! challenge right away, so a cached NXDOMAIN from an earlier attempt would
//! fail a validation that should pass.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts, ServerOrderingStrategy};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::{Name, RData, RecordType};

use crate::problem::{Problem, ProblemType};

pub(super) struct Resolver {
    backend: Backend,
}

enum Backend {
    Hickory(Box<TokioResolver>),
    /// No DNS server is known (no readable resolv.conf): addresses come from
    /// the OS resolver, TXT lookups are impossible.
    System,
}

impl Resolver {
    /// `server`: send every query there (UDP, TCP on truncation); `None`: the
    /// name servers of /etc/resolv.conf.
    pub(super) fn new(server: Option<SocketAddr>, timeout: Duration) -> Result<Resolver, String> {
        let servers = match server {
            Some(addr) => vec![addr],
            None => system_name_servers(),
        };
        if servers.is_empty() {
            return Ok(Resolver { backend: Backend::System });
        }
        let mut config = ResolverConfig::from_name_servers(Vec::new());
        for addr in servers {
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            for conn in &mut ns.connections {
                conn.port = addr.port();
            }
            config.add_name_server(ns);
        }
        let mut opts = ResolverOpts::default();
        opts.timeout = (timeout / 2).max(Duration::from_millis(100));
        opts.attempts = 2;
        opts.cache_size = 0;
        opts.positive_max_ttl = Some(Duration::ZERO);
        opts.negative_max_ttl = Some(Duration::ZERO);
        // A CA must see what the DNS says, not what this host's /etc/hosts says.
        opts.use_hosts_file = ResolveHosts::Never;
        opts.server_ordering_strategy = ServerOrderingStrategy::UserProvidedOrder;
        let resolver = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .map_err(|e| format!("DNS resolver: {e}"))?;
        Ok(Resolver { backend: Backend::Hickory(Box::new(resolver)) })
    }

    /// The addresses of `name`, IPv6 first (as Boulder does), never empty.
    pub(super) async fn lookup_ips(&self, name: &str) -> Result<Vec<IpAddr>, Problem> {
        let mut ips: Vec<IpAddr> = match &self.backend {
            Backend::Hickory(resolver) => {
                let fqdn = fqdn(name)?;
                resolver.clear_lookup_cache(fqdn.clone(), RecordType::A);
                resolver.clear_lookup_cache(fqdn.clone(), RecordType::AAAA);
                match resolver.lookup_ip(fqdn).await {
                    Ok(lookup) => lookup.iter().collect(),
                    Err(e) if e.is_no_records_found() && !e.is_nx_domain() => Vec::new(),
                    Err(e) => return Err(dns_problem(&e, "A/AAAA", name)),
                }
            }
            Backend::System => match tokio::net::lookup_host((name, 0)).await {
                Ok(addrs) => addrs.map(|a| a.ip()).collect(),
                Err(e) => {
                    return Err(Problem::new(ProblemType::Dns, format!("DNS problem: looking up A/AAAA for {name}: {e}")));
                }
            },
        };
        ips.sort_by_key(|ip| ip.is_ipv4());
        ips.dedup();
        if ips.is_empty() {
            return Err(Problem::new(ProblemType::Dns, format!("No valid IP addresses found for {name}")));
        }
        Ok(ips)
    }

    /// The TXT records at `name`, each record's strings joined; empty when the
    /// name has none or does not exist (the caller decides what that means).
    pub(super) async fn lookup_txt(&self, name: &str) -> Result<Vec<String>, Problem> {
        let Backend::Hickory(resolver) = &self.backend else {
            return Err(Problem::new(ProblemType::Dns, format!("DNS problem: cannot look up TXT for {name}: no DNS server configured")));
        };
        let fqdn = fqdn(name)?;
        resolver.clear_lookup_cache(fqdn.clone(), RecordType::TXT);
        match resolver.lookup(fqdn, RecordType::TXT).await {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::TXT(txt) => Some(txt.txt_data.iter().map(|s| String::from_utf8_lossy(s)).collect()),
                    _ => None,
                })
                .collect()),
            Err(e) if e.is_no_records_found() => Ok(Vec::new()),
            Err(e) => Err(dns_problem(&e, "TXT", name)),
        }
    }
}

/// Absolute, so no search domain of this host is ever appended.
fn fqdn(name: &str) -> Result<Name, Problem> {
    let mut parsed =
        Name::from_ascii(name.trim_end_matches('.')).map_err(|e| Problem::malformed(format!("{name:?} is not a valid DNS name: {e}")))?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

fn dns_problem(err: &NetError, rtype: &str, name: &str) -> Problem {
    let what = match err {
        NetError::Timeout => "query timed out".to_string(),
        _ if err.is_nx_domain() => {
            return Problem::new(
                ProblemType::Dns,
                format!("DNS problem: NXDOMAIN looking up {rtype} for {name} - check that a DNS record exists for this domain"),
            );
        }
        NetError::Dns(DnsError::ResponseCode(code)) => format!("{code}"),
        other => other.to_string(),
    };
    Problem::new(ProblemType::Dns, format!("DNS problem: {what} looking up {rtype} for {name}"))
}

/// The `nameserver` lines of /etc/resolv.conf (port 53).
fn system_name_servers() -> Vec<SocketAddr> {
    let Ok(conf) = std::fs::read_to_string("/etc/resolv.conf") else {
        return Vec::new();
    };
    conf.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then_some(())?;
            // Link-local IPv6 with a zone (`fe80::1%eth0`) does not parse; skip it.
            words.next()?.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::testdns::TestDns;
    use super::*;

    #[tokio::test]
    async fn resolves_through_the_configured_server_without_caching() {
        let dns = TestDns::start().await;
        let resolver = Resolver::new(Some(dns.addr), Duration::from_secs(5)).unwrap();
        let ips = resolver.lookup_ips("anything.test").await.unwrap();
        assert_eq!(ips, vec![IpAddr::from([127, 0, 0, 1])]);

        assert!(resolver.lookup_txt("_acme-challenge.example.com").await.unwrap().is_empty());
        dns.set_txt("_acme-challenge.example.com", vec!["one".into(), "x".repeat(300)]);
        let mut txt = resolver.lookup_txt("_acme-challenge.example.com").await.unwrap();
        txt.sort();
        assert_eq!(txt, vec!["one".to_string(), "x".repeat(300)]);
        dns.clear_txt("_acme-challenge.example.com");
        assert!(resolver.lookup_txt("_acme-challenge.example.com").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn unreachable_server_is_a_dns_problem() {
        // Nothing answers on this UDP port, so the query times out.
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let resolver = Resolver::new(Some(addr), Duration::from_millis(400)).unwrap();
        let err = resolver.lookup_txt("_acme-challenge.example.com").await.unwrap_err();
        assert_eq!(err.kind, ProblemType::Dns, "{err}");
    }
}

//! Challenge validation (the VA role): http-01, dns-01, tls-alpn-01.

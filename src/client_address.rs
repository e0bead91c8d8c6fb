//! Who a call comes from, as far as the network tells: the TCP peer, or the client a trusted
//! proxy names, and the key per-address limits count it under. Middleware and handlers both
//! use it; neither owns it.

use std::net::{IpAddr, SocketAddr};

use http::Extensions;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// The TCP peer of the connection, over plain TCP or TLS.
pub fn peer_addr(extensions: &Extensions) -> Option<SocketAddr> {
    use crate::connections::ConnectionInfo;
    extensions
        .get::<ConnectionInfo>()
        .and_then(|info| info.tcp.remote_addr())
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<ConnectionInfo>>()
                .and_then(|info| info.get_ref().tcp.remote_addr())
        })
        .or_else(|| {
            extensions
                .get::<TcpConnectInfo>()
                .and_then(TcpConnectInfo::remote_addr)
        })
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|info| info.get_ref().remote_addr())
        })
}

/// The client behind the TCP peer `peer`: the peer itself, unless it is a trusted proxy, in
/// which case the nearest untrusted hop of `x-forwarded-for` (or `forwarded: for=`) is the client.
fn client_behind(peer: IpAddr, headers: &http::HeaderMap, trusted_proxies: &[IpAddr]) -> IpAddr {
    if !trusted_proxies.contains(&peer) {
        return peer;
    }
    let forwarded_for = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .map(str::to_owned)
        .collect::<Vec<_>>();
    let hops = if forwarded_for.is_empty() {
        headers
            .get_all("forwarded")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .flat_map(|element| element.split(';'))
            .filter_map(|pair| {
                let (key, value) = pair.trim().split_once('=')?;
                key.eq_ignore_ascii_case("for")
                    .then(|| value.trim_matches('"').trim_start_matches('[').to_owned())
            })
            .map(|value| match value.split_once(']') {
                Some((v6, _)) => v6.to_owned(),
                None => value,
            })
            .collect()
    } else {
        forwarded_for
    };
    // From the nearest hop outwards: each trusted proxy vouches for the hop before it. An
    // entry that does not parse ends the chain: the proxy that passed it on is the client as
    // far as anyone can tell (skipping it would let a client choose its own address).
    let mut client = peer;
    for hop in hops.iter().rev() {
        let parsed = hop
            .parse::<IpAddr>()
            .ok()
            .or_else(|| hop.parse::<SocketAddr>().ok().map(|addr| addr.ip()));
        match parsed {
            Some(ip) if trusted_proxies.contains(&ip) => client = ip,
            Some(ip) => return ip,
            None => return client,
        }
    }
    client
}

/// Who a call comes from, resolved once per call by the outermost layer
/// (`middleware::client_address`) and carried as a request extension that every limit,
/// handler and the access log read: the TCP peer, and the client's IP (the peer, or whom a
/// trusted proxy names); `None` when the connection names no peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress {
    pub peer: Option<SocketAddr>,
    pub ip: Option<IpAddr>,
}

impl ClientAddress {
    /// Works the address out from the connection and, behind a trusted proxy, its headers.
    pub fn resolve(
        extensions: &Extensions,
        headers: &http::HeaderMap,
        trusted_proxies: &[IpAddr],
    ) -> Self {
        let peer = peer_addr(extensions);
        let ip = peer.map(|peer| client_behind(peer.ip(), headers, trusted_proxies));
        Self { peer, ip }
    }
}

/// The key per-address limits count a client under: an IPv4 address, or an IPv6 address's
/// /64 prefix, since one IPv6 host commonly holds a whole /64 and could rotate through it.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(peer: &str, headers: &[(&'static str, &str)]) -> http::Request<()> {
        let mut request = http::Request::new(());
        for (name, value) in headers {
            request.headers_mut().append(*name, value.parse().unwrap());
        }
        let info = TcpConnectInfo {
            local_addr: None,
            remote_addr: Some(peer.parse().unwrap()),
        };
        request.extensions_mut().insert(info);
        request
    }

    #[test]
    fn forwarded_headers_from_an_untrusted_peer_are_ignored() {
        let request = request("203.0.113.9:5000", &[("x-forwarded-for", "198.51.100.1")]);
        assert_eq!(
            ClientAddress::resolve(request.extensions(), request.headers(), &[]).ip,
            "203.0.113.9".parse().ok()
        );
    }

    #[test]
    fn a_trusted_proxy_names_the_nearest_untrusted_hop() {
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let request = request(
            "10.0.0.2:5000",
            &[("x-forwarded-for", "198.51.100.7, 203.0.113.1, 10.0.0.2")],
        );
        assert_eq!(
            ClientAddress::resolve(request.extensions(), request.headers(), &[proxy]).ip,
            "203.0.113.1".parse().ok()
        );
    }

    #[test]
    fn an_entry_that_does_not_parse_ends_the_trusted_chain() {
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let request = request(
            "10.0.0.2:5000",
            &[("x-forwarded-for", "198.51.100.7, not-an-address")],
        );
        assert_eq!(
            ClientAddress::resolve(request.extensions(), request.headers(), &[proxy]).ip,
            Some(proxy),
            "the client-chosen address before the garbage is never believed"
        );
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_bit_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(other));
        let v4: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(address_key(v4), v4);
        let mapped: IpAddr = "::ffff:203.0.113.9".parse().unwrap();
        assert_eq!(address_key(mapped), v4);
    }

    #[test]
    fn the_forwarded_header_is_read_when_x_forwarded_for_is_absent() {
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let request = request(
            "10.0.0.2:5000",
            &[("forwarded", "for=\"[2001:db8::1]:4711\";proto=https")],
        );
        assert_eq!(
            ClientAddress::resolve(request.extensions(), request.headers(), &[proxy]).ip,
            "2001:db8::1".parse().ok()
        );
    }
}

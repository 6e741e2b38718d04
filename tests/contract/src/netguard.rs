//! The rule every test, probe and load generator of this project follows:
//! **test traffic never leaves this machine.**
//!
//! Before xtask or a test connects anywhere, it asks [`check_destination`]:
//! loopback is always fine; any other address must lie on a network the
//! caller owns (one of the stack's Docker networks, or a network namespace a
//! test made) *and* the host must route it over a local link, not the
//! default route. Anything else is refused with the address and its route in
//! the message, so a probe can never reach a stranger's server by accident.
//!
//! The host's routes and addresses are read from `/proc/net/route` and
//! `/proc/net/fib_trie` (IPv4, main table), so no tool is needed. The
//! project's networks are IPv4; an IPv6 destination other than `::1` is
//! refused.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

/// An IPv4 network such as `172.18.0.0/16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Net {
    pub address: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    pub fn new(address: Ipv4Addr, prefix: u8) -> Ipv4Net {
        Ipv4Net {
            address,
            prefix: prefix.min(32),
        }
    }

    fn mask(&self) -> u32 {
        match self.prefix {
            0 => 0,
            prefix => u32::MAX << (32 - u32::from(prefix)),
        }
    }

    pub fn contains(&self, address: Ipv4Addr) -> bool {
        (u32::from(address) & self.mask()) == (u32::from(self.address) & self.mask())
    }

    /// True when the two networks share any address.
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.contains(other.address) || other.contains(self.address)
    }
}

impl std::str::FromStr for Ipv4Net {
    type Err = String;

    /// `a.b.c.d/n`, as `docker network inspect` prints subnets.
    fn from_str(text: &str) -> Result<Ipv4Net, String> {
        let (address, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not a.b.c.d/prefix"))?;
        let address: Ipv4Addr = address
            .parse()
            .map_err(|error| format!("{text:?}: {error}"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|prefix| *prefix <= 32)
            .ok_or_else(|| format!("{text:?}: the prefix is not 0 to 32"))?;
        Ok(Ipv4Net::new(address, prefix))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// One row of the host's IPv4 routing table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub interface: String,
    pub destination: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub metric: u32,
}

impl Route {
    pub fn is_default(&self) -> bool {
        self.destination.prefix == 0
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} dev {}", self.destination, self.interface)?;
        if let Some(gateway) = self.gateway {
            write!(f, " via {gateway}")?;
        }
        if self.is_default() {
            write!(f, " (the default route, which leaves this machine)")?;
        }
        Ok(())
    }
}

/// What the host knows about its own IPv4 networking.
#[derive(Clone, Debug, Default)]
pub struct HostNetwork {
    pub routes: Vec<Route>,
    pub local_addresses: Vec<Ipv4Addr>,
}

impl HostNetwork {
    /// Reads `/proc/net/route` and `/proc/net/fib_trie`.
    pub fn read() -> Result<HostNetwork, String> {
        let read = |path: &str| {
            std::fs::read_to_string(path).map_err(|error| format!("read {path}: {error}"))
        };
        Ok(HostNetwork {
            routes: parse_proc_net_route(&read("/proc/net/route")?)?,
            local_addresses: parse_fib_trie_local_addresses(&read("/proc/net/fib_trie")?),
        })
    }

    /// The route the kernel would pick for `address` (longest prefix, then
    /// lowest metric), if any.
    pub fn route_to(&self, address: Ipv4Addr) -> Option<&Route> {
        self.routes
            .iter()
            .filter(|route| route.destination.contains(address))
            .min_by_key(|route| (std::cmp::Reverse(route.destination.prefix), route.metric))
    }

    /// Host addresses inside `network`.
    pub fn addresses_in(&self, network: &Ipv4Net) -> Vec<Ipv4Addr> {
        self.local_addresses
            .iter()
            .copied()
            .filter(|address| network.contains(*address))
            .collect()
    }

    /// Whether connecting to `destination` from the host keeps every packet
    /// on this machine. `own` lists the networks the caller may talk to
    /// besides loopback (the stack's Docker networks, or namespaces a test
    /// made); the destination must be on one of them and reached over a
    /// link of the host, never through the default route.
    pub fn check(&self, destination: IpAddr, own: &[Ipv4Net]) -> Result<(), RefusedDestination> {
        let refuse = |reason: String| {
            Err(RefusedDestination {
                destination,
                reason,
            })
        };
        if destination.is_loopback() {
            return Ok(());
        }
        let IpAddr::V4(address) = destination else {
            return refuse("only IPv6 loopback (::1) is allowed".to_string());
        };
        if self.local_addresses.contains(&address) {
            return Ok(());
        }
        let route = match self.route_to(address) {
            None => "no route".to_string(),
            Some(route) => route.to_string(),
        };
        let Some(network) = own.iter().find(|network| network.contains(address)) else {
            let own = if own.is_empty() {
                "none given".to_string()
            } else {
                own.iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return refuse(format!(
                "it is neither loopback nor on a network of the stack or of the tests ({own}); the host routes it: {route}"
            ));
        };
        match self.route_to(address) {
            Some(found) if !found.is_default() && found.gateway.is_none() => Ok(()),
            _ => refuse(format!(
                "it is on {network}, but the host has no link there; the host routes it: {route}"
            )),
        }
    }
}

/// Why [`check_destination`] refused an address.
#[derive(Clone, Debug)]
pub struct RefusedDestination {
    pub destination: IpAddr,
    pub reason: String,
}

impl fmt::Display for RefusedDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refusing to connect to {}: test traffic must stay on this machine, and {}",
            self.destination, self.reason
        )
    }
}

impl std::error::Error for RefusedDestination {}

/// [`HostNetwork::check`] against the host's current tables.
pub fn check_destination(destination: IpAddr, own: &[Ipv4Net]) -> Result<(), String> {
    HostNetwork::read()?
        .check(destination, own)
        .map_err(|refused| refused.to_string())
}

/// Checks every address the host part of an `http://host:port/...` (or
/// `https://`) URL resolves to, and returns them. Names resolve through the
/// host's own resolver (for `localhost` that is /etc/hosts).
pub fn check_url(url: &str, own: &[Ipv4Net]) -> Result<Vec<SocketAddr>, String> {
    let (rest, default_port) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (rest, 80),
        (_, Some(rest)) => (rest, 443),
        _ => {
            return Err(format!(
                "{url:?}: only http:// and https:// URLs are supported"
            ))
        }
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let with_port = if authority.starts_with('[') {
        if authority.contains("]:") {
            authority.to_string()
        } else {
            format!("{authority}:{default_port}")
        }
    } else if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:{default_port}")
    };
    let addresses: Vec<SocketAddr> = with_port
        .to_socket_addrs()
        .map_err(|error| format!("{url:?}: resolve {with_port}: {error}"))?
        .collect();
    if addresses.is_empty() {
        return Err(format!("{url:?}: {with_port} resolves to no address"));
    }
    let host = HostNetwork::read()?;
    for address in &addresses {
        host.check(address.ip(), own)
            .map_err(|refused| format!("{url}: {refused}"))?;
    }
    Ok(addresses)
}

/// Parses `/proc/net/route`: addresses are little-endian hex.
pub fn parse_proc_net_route(text: &str) -> Result<Vec<Route>, String> {
    let hex_address = |field: &str| {
        u32::from_str_radix(field, 16)
            .map(|raw| Ipv4Addr::from(raw.swap_bytes()))
            .map_err(|error| format!("/proc/net/route: {field:?}: {error}"))
    };
    let mut routes = Vec::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            continue;
        }
        let flags = u32::from_str_radix(fields[3], 16)
            .map_err(|error| format!("/proc/net/route: flags {:?}: {error}", fields[3]))?;
        const RTF_UP: u32 = 0x1;
        const RTF_GATEWAY: u32 = 0x2;
        if flags & RTF_UP == 0 {
            continue;
        }
        let destination = hex_address(fields[1])?;
        let gateway = hex_address(fields[2])?;
        let mask = u32::from(hex_address(fields[7])?);
        routes.push(Route {
            interface: fields[0].to_string(),
            destination: Ipv4Net::new(destination, mask.count_ones() as u8),
            gateway: (flags & RTF_GATEWAY != 0).then_some(gateway),
            metric: fields[6].parse().unwrap_or(0),
        });
    }
    Ok(routes)
}

/// The host's own IPv4 addresses: in `/proc/net/fib_trie`, an address line
/// (`|-- a.b.c.d`) followed by `/32 host LOCAL`.
pub fn parse_fib_trie_local_addresses(text: &str) -> Vec<Ipv4Addr> {
    let mut addresses = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(address) = trimmed.strip_prefix("|-- ") {
            last = address.parse().ok();
        } else if trimmed.starts_with("/32 host LOCAL") {
            if let Some(address) = last {
                if !addresses.contains(&address) {
                    addresses.push(address);
                }
            }
        }
    }
    addresses
}

#[cfg(test)]
mod tests {
    use super::*;

    // A host with a LAN on eth0, Docker's default bridge and one bridge of
    // a Compose project; the project's internal networks have no host
    // address and so no route.
    const ROUTES: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
br-0123abcd\t000012AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
";

    const FIB_TRIE: &str = "Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 172.17.0.0/16 2 0 2
        |-- 172.17.0.1
           /32 host LOCAL
     |-- 192.168.2.7
        /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
     |-- 172.17.0.1
        /32 host LOCAL
";

    fn host() -> HostNetwork {
        HostNetwork {
            routes: parse_proc_net_route(ROUTES).expect("parses"),
            local_addresses: parse_fib_trie_local_addresses(FIB_TRIE),
        }
    }

    fn net(text: &str) -> Ipv4Net {
        text.parse().expect("a network")
    }

    #[test]
    fn proc_net_route_is_parsed_with_little_endian_addresses() {
        let routes = host().routes;
        assert_eq!(routes.len(), 4);
        assert!(routes[0].is_default());
        assert_eq!(routes[0].gateway, Some(Ipv4Addr::new(192, 168, 2, 1)));
        assert_eq!(routes[1].destination, net("192.168.2.0/24"));
        assert_eq!(routes[3].interface, "br-0123abcd");
        assert_eq!(routes[3].destination, net("172.18.0.0/16"));
    }

    #[test]
    fn local_addresses_come_from_the_fib_trie_once_each() {
        assert_eq!(
            host().local_addresses,
            vec![Ipv4Addr::new(172, 17, 0, 1), Ipv4Addr::new(192, 168, 2, 7)]
        );
    }

    #[test]
    fn loopback_is_always_allowed() {
        let host = host();
        assert!(host.check("127.0.0.1".parse().expect("ip"), &[]).is_ok());
        assert!(host.check("127.3.4.5".parse().expect("ip"), &[]).is_ok());
        assert!(host.check("::1".parse().expect("ip"), &[]).is_ok());
    }

    #[test]
    fn an_address_on_a_network_of_the_stack_with_a_host_link_is_allowed() {
        let own = [net("172.18.0.0/16")];
        assert!(host()
            .check("172.18.0.5".parse().expect("ip"), &own)
            .is_ok());
    }

    #[test]
    fn an_address_of_the_stack_that_the_host_would_send_to_the_default_route_is_refused() {
        // An internal network: the stack owns it, but the host has no link
        // there, so a connect would leave through eth0.
        let own = [net("172.21.0.0/16")];
        let refused = host()
            .check("172.21.0.2".parse().expect("ip"), &own)
            .expect_err("no host link");
        let message = refused.to_string();
        assert!(message.contains("172.21.0.2"), "{message}");
        assert!(message.contains("default route"), "{message}");
        assert!(message.contains("via 192.168.2.1"), "{message}");
    }

    #[test]
    fn a_private_address_on_the_lan_that_is_not_ours_is_refused() {
        // The LAN has a link of the host, but it is not a network of ours.
        let refused = host()
            .check("192.168.2.50".parse().expect("ip"), &[net("172.18.0.0/16")])
            .expect_err("not ours");
        let message = refused.to_string();
        assert!(message.contains("192.168.2.0/24 dev eth0"), "{message}");
        assert!(message.contains("neither loopback"), "{message}");
    }

    #[test]
    fn a_public_address_and_ipv6_are_refused() {
        assert!(host().check("1.1.1.1".parse().expect("ip"), &[]).is_err());
        assert!(host()
            .check("fd00::1".parse().expect("ip"), &[net("0.0.0.0/0")])
            .is_err());
    }

    #[test]
    fn claiming_the_whole_internet_as_ours_still_refuses_the_default_route() {
        let refused = host()
            .check("8.8.8.8".parse().expect("ip"), &[net("0.0.0.0/0")])
            .expect_err("default route");
        assert!(refused.to_string().contains("no link"), "{refused}");
    }

    #[test]
    fn networks_parse_contain_and_overlap() {
        let network = net("10.1.2.3/8");
        assert!(network.contains(Ipv4Addr::new(10, 200, 0, 1)));
        assert!(!network.contains(Ipv4Addr::new(11, 0, 0, 1)));
        assert!(network.overlaps(&net("10.5.0.0/16")));
        assert!(!network.overlaps(&net("172.16.0.0/12")));
        assert!("10.0.0.0".parse::<Ipv4Net>().is_err());
        assert!("10.0.0.0/33".parse::<Ipv4Net>().is_err());
    }

    #[test]
    fn urls_on_loopback_pass_and_their_addresses_are_returned() {
        let addresses = check_url("http://127.0.0.1:8070/api/hits", &[]).expect("loopback");
        assert_eq!(addresses, vec!["127.0.0.1:8070".parse().expect("addr")]);
        assert!(check_url("ftp://127.0.0.1/", &[]).is_err());
        assert_eq!(
            check_url("https://127.0.0.1/", &[]).map(|addresses| addresses[0].port()),
            Ok(443)
        );
    }
}

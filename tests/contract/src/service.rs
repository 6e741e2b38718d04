//! The stack's services. Their names are also the DNS names the services
//! find each other by, the Compose service names, and (after `<stack>_`)
//! the Swarm service names.

use std::fmt;
use std::str::FromStr;

/// One of the stack's four services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    /// Redis.
    Db,
    /// The axum application, the one service with several replicas.
    Webapp,
    /// The back nginx and proxy-init: picks a webapp replica for each
    /// request, on the internal `frontend` network only.
    Balancer,
    /// The front nginx, the only service that publishes a port, on the
    /// `edge` network only; it reaches the balancer over a unix socket.
    Proxy,
}

impl Service {
    /// Every service, in the order the stack lists them.
    pub const ALL: [Service; 4] = [
        Service::Db,
        Service::Webapp,
        Service::Balancer,
        Service::Proxy,
    ];

    /// The service's name: `db`, `webapp`, `balancer`, `proxy`.
    pub const fn name(self) -> &'static str {
        match self {
            Service::Db => "db",
            Service::Webapp => "webapp",
            Service::Balancer => "balancer",
            Service::Proxy => "proxy",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// A name that is none of the stack's services.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownService(pub String);

impl fmt::Display for UnknownService {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{:?} is not a service of the stack (db, webapp, balancer, proxy)",
            self.0
        )
    }
}

impl std::error::Error for UnknownService {}

impl FromStr for Service {
    type Err = UnknownService;

    fn from_str(name: &str) -> Result<Service, UnknownService> {
        Service::ALL
            .into_iter()
            .find(|service| service.name() == name)
            .ok_or_else(|| UnknownService(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_to_their_service_and_nothing_else_parses() {
        for service in Service::ALL {
            assert_eq!(service.name().parse(), Ok(service));
            assert_eq!(service.to_string(), service.name());
        }
        assert_eq!(
            Service::ALL.map(Service::name),
            ["db", "webapp", "balancer", "proxy"]
        );
        let error = "redis".parse::<Service>().expect_err("not a service");
        assert!(error.to_string().contains("\"redis\""), "{error}");
    }
}

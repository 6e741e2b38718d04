//! The cluster's network: the hub namespace with its bridge, the host's
//! veth pair into it, each node's namespace and link, and cutting a link.

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use super::*;

/// Routes of the host that overlap the cluster's network (none may).
pub(super) fn check_subnet_is_free() -> anyhow::Result<()> {
    let host = stack_contract::netguard::HostNetwork::read().map_err(anyhow::Error::msg)?;
    if let Some(route) = host
        .routes
        .iter()
        .find(|route| !route.is_default() && route.destination.overlaps(&SUBNET))
    {
        bail!("the cluster's network {SUBNET} is already routed on this host ({route}): it cannot be used here");
    }
    Ok(())
}

pub(super) fn create_hub(sh: &Shell) -> anyhow::Result<()> {
    let host_address = format!("{HOST_ADDRESS}/{}", SUBNET.prefix);
    let hub = HUB_NAMESPACE;
    cmd!(sh, "ip netns add {hub}").quiet().run()?;
    cmd!(sh, "ip -n {hub} link set lo up").quiet().run()?;
    cmd!(sh, "ip -n {hub} link add {BRIDGE} type bridge")
        .quiet()
        .run()?;
    cmd!(sh, "ip -n {hub} link set {BRIDGE} up").quiet().run()?;
    cmd!(
        sh,
        "ip link add {HOST_LINK} type veth peer name {HOST_LINK_PEER} netns {hub}"
    )
    .quiet()
    .run()?;
    cmd!(
        sh,
        "ip -n {hub} link set {HOST_LINK_PEER} master {BRIDGE} up"
    )
    .quiet()
    .run()?;
    cmd!(sh, "ip addr add {host_address} dev {HOST_LINK}")
        .quiet()
        .run()?;
    cmd!(sh, "ip link set {HOST_LINK} up").quiet().run()?;
    Ok(())
}

pub(super) fn create_node_network(sh: &Shell, node: &Node) -> anyhow::Result<()> {
    let name = node.name();
    let link = node.hub_link();
    let hub = HUB_NAMESPACE;
    let address = format!("{}/{}", node.address(), SUBNET.prefix);
    cmd!(sh, "ip netns add {name}").quiet().run()?;
    cmd!(
        sh,
        "ip -n {hub} link add {link} type veth peer name eth0 netns {name}"
    )
    .quiet()
    .run()?;
    cmd!(sh, "ip -n {hub} link set {link} master {BRIDGE} up")
        .quiet()
        .run()?;
    cmd!(sh, "ip -n {name} link set lo up").quiet().run()?;
    cmd!(sh, "ip -n {name} addr add {address} dev eth0")
        .quiet()
        .run()?;
    cmd!(sh, "ip -n {name} link set eth0 up").quiet().run()?;
    Ok(())
}

/// Sets every node's link up again (after a test cut one off); best effort.
pub fn connect_all_links(sh: &Shell) {
    let hub = HUB_NAMESPACE;
    for node in existing_nodes() {
        let link = node.hub_link();
        let _ = cmd!(sh, "ip -n {hub} link set {link} up")
            .quiet()
            .ignore_stderr()
            .ignore_status()
            .run();
    }
}

pub(super) fn set_link(sh: &Shell, index: u8, state: LinkState) -> anyhow::Result<()> {
    require_root(sh)?;
    let node = existing_nodes()
        .into_iter()
        .find(|node| node.index == index)
        .with_context(|| format!("there is no node {index} (`cargo xtask cluster status`)"))?;
    let link = node.hub_link();
    let hub = HUB_NAMESPACE;
    let state = match state {
        LinkState::Up => "up",
        LinkState::Down => "down",
    };
    cmd!(sh, "ip -n {hub} link set {link} {state}")
        .quiet()
        .run()
        .with_context(|| format!("set the link of {} {state}", node.name()))?;
    eprintln!("cluster: {} link {state}", node.name());
    Ok(())
}

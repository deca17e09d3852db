//! The only netlink user: finds links, removes a same-named link that is not a TUN (a
//! kernel `wireguard` link left by the Go original, say), and keeps the remote pod
//! subnet routed through the device (`<podSubnet> dev wireguard.<remote> scope link`,
//! main table, replace semantics), deleting such routes that the config no longer asks for.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ip_network::IpNetwork;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::{Handle, RouteMessageBuilder};

/// A netlink failure, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("netlink: {what}: {source}")]
pub struct NetlinkError {
    what: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

fn nl_err(
    what: impl Into<String>,
    e: impl std::error::Error + Send + Sync + 'static,
) -> NetlinkError {
    NetlinkError {
        what: what.into(),
        source: Box::new(e),
    }
}

/// A link as netlink reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// `IFLA_INFO_KIND` (`tun`, `wireguard`, ...), if any.
    pub kind: Option<String>,
}

/// A netlink connection (its I/O task runs on the current tokio runtime).
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens the connection. Must be called inside a tokio runtime.
    pub fn connect() -> Result<Self, NetlinkError> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| nl_err("open socket", e))?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// The link called `name`, if it exists.
    pub async fn link(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(msg)) => Ok(Some(describe(&msg))),
            Ok(None) => Ok(None),
            // ENODEV: no such link.
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -19 => Ok(None),
            Err(e) => Err(nl_err(format!("get link {name}"), e)),
        }
    }

    /// Deletes link `name` if it exists and is not a TUN device; true if one was deleted.
    pub async fn remove_foreign_link(&self, name: &str) -> Result<bool, NetlinkError> {
        match self.link(name).await? {
            Some(link) if link.kind.as_deref() != Some("tun") => {
                self.handle
                    .link()
                    .del(link.index)
                    .execute()
                    .await
                    .map_err(|e| nl_err(format!("delete link {name}"), e))?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Routes `subnet` through link `ifname` (scope link, main table), replacing any
    /// route to the same destination.
    pub async fn ensure_route(&self, ifname: &str, subnet: IpNetwork) -> Result<(), NetlinkError> {
        let link = self.link(ifname).await?.ok_or_else(|| {
            nl_err(
                format!("route via {ifname}"),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })?;
        let addr: IpAddr = subnet.network_address();
        let msg = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(addr, subnet.netmask())
            .map_err(|e| nl_err(format!("route {subnet}"), e))?
            .output_interface(link.index)
            .scope(RouteScope::Link)
            // What `ip route add` and the Go original use; `ip route` then shows no proto.
            .protocol(RouteProtocol::Boot)
            .build();
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(|e| nl_err(format!("replace route {subnet} dev {ifname}"), e))
    }
}

impl Netlink {
    /// Routes `subnet` via `gateway` (a node of our cluster that runs the tunnel; main
    /// table), replacing any route to the same destination.
    pub async fn ensure_route_via(
        &self,
        subnet: IpNetwork,
        gateway: IpAddr,
    ) -> Result<(), NetlinkError> {
        let msg = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(subnet.network_address(), subnet.netmask())
            .map_err(|e| nl_err(format!("route {subnet}"), e))?
            .gateway(gateway)
            .map_err(|e| nl_err(format!("route {subnet} via {gateway}"), e))?
            .protocol(RouteProtocol::Boot)
            .build();
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(|e| nl_err(format!("replace route {subnet} via {gateway}"), e))
    }

    /// Deletes the routes through link `ifname` that look like ours (main table,
    /// `proto boot`, scope link) to a destination outside `keep`: what a config that routed
    /// more left behind (a prefix dropped from `extraSubnets`, a changed `podSubnet`), since
    /// the device outlives the agent. Returns what was deleted.
    pub async fn prune_routes(
        &self,
        ifname: &str,
        keep: &[IpNetwork],
    ) -> Result<Vec<IpNetwork>, NetlinkError> {
        let Some(link) = self.link(ifname).await? else {
            return Ok(Vec::new());
        };
        let mut stale = Vec::new();
        let dumps = [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ];
        for dump in dumps {
            let mut routes = self.handle.route().get(dump).execute();
            while let Some(route) = routes
                .try_next()
                .await
                .map_err(|e| nl_err(format!("list routes of {ifname}"), e))?
            {
                if let Some(net) = ours_through(&route, link.index)
                    && !keep.contains(&net)
                {
                    stale.push((net, route));
                }
            }
        }
        let mut deleted = Vec::new();
        for (net, route) in stale {
            self.handle
                .route()
                .del(route)
                .execute()
                .await
                .map_err(|e| nl_err(format!("delete route {net} dev {ifname}"), e))?;
            deleted.push(net);
        }
        Ok(deleted)
    }

    /// Deletes link `name` if it exists; true if one was deleted.
    pub async fn delete_link(&self, name: &str) -> Result<bool, NetlinkError> {
        let Some(link) = self.link(name).await? else {
            return Ok(false);
        };
        self.handle
            .link()
            .del(link.index)
            .execute()
            .await
            .map_err(|e| nl_err(format!("delete link {name}"), e))?;
        Ok(true)
    }
}

/// The destination of `route` if it is one of ours through link `index`: main table,
/// `proto boot`, scope link, no gateway.
fn ours_through(route: &RouteMessage, index: u32) -> Option<IpNetwork> {
    let h = &route.header;
    if h.table != RouteHeader::RT_TABLE_MAIN
        || h.protocol != RouteProtocol::Boot
        || h.scope != RouteScope::Link
    {
        return None;
    }
    let mut oif = None;
    let mut dest = None;
    for a in &route.attributes {
        match a {
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dest = Some(IpAddr::V4(*ip)),
            RouteAttribute::Destination(RouteAddress::Inet6(ip)) => dest = Some(IpAddr::V6(*ip)),
            RouteAttribute::Gateway(_) | RouteAttribute::Via(_) => return None,
            _ => {}
        }
    }
    if oif != Some(index) {
        return None;
    }
    IpNetwork::new(dest?, h.destination_prefix_length).ok()
}

fn describe(msg: &LinkMessage) -> Link {
    let kind = msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(InfoKind::Tun) => Some("tun".to_string()),
            LinkInfo::Kind(InfoKind::Wireguard) => Some("wireguard".to_string()),
            LinkInfo::Kind(other) => Some(other.to_string()),
            _ => None,
        }),
        _ => None,
    });
    Link {
        index: msg.header.index,
        kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(dest: &str, oif: u32, proto: RouteProtocol, scope: RouteScope) -> RouteMessage {
        let net: IpNetwork = dest.parse().unwrap();
        RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(net.network_address(), net.netmask())
            .unwrap()
            .output_interface(oif)
            .protocol(proto)
            .scope(scope)
            .build()
    }

    #[test]
    fn only_routes_like_ours_through_the_device_are_ours() {
        let ours = route("10.102.0.0/16", 7, RouteProtocol::Boot, RouteScope::Link);
        assert_eq!(
            ours_through(&ours, 7),
            Some("10.102.0.0/16".parse().unwrap())
        );
        let v6 = route("fd00:2::/32", 7, RouteProtocol::Boot, RouteScope::Link);
        assert_eq!(ours_through(&v6, 7), Some("fd00:2::/32".parse().unwrap()));
        // Another device, another protocol (an operator's `proto static`, the kernel's
        // link-local route), another scope, another table: not ours.
        assert_eq!(ours_through(&ours, 8), None);
        let r = route("10.250.0.0/24", 7, RouteProtocol::Static, RouteScope::Link);
        assert_eq!(ours_through(&r, 7), None);
        let r = route("fe80::/64", 7, RouteProtocol::Kernel, RouteScope::Universe);
        assert_eq!(ours_through(&r, 7), None);
        let r = route("10.3.0.0/16", 7, RouteProtocol::Boot, RouteScope::Universe);
        assert_eq!(ours_through(&r, 7), None);
        let mut r = route("10.102.0.0/16", 7, RouteProtocol::Boot, RouteScope::Link);
        r.header.table = 100;
        assert_eq!(ours_through(&r, 7), None);
        // A route via a gateway (gateway mode's, on a standby node) is never pruned here.
        let mut r = route("10.4.0.0/16", 7, RouteProtocol::Boot, RouteScope::Link);
        r.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(
                "10.0.0.9".parse().unwrap(),
            )));
        assert_eq!(ours_through(&r, 7), None);
    }
}

//! Pure: what the mirror writes, from what it reads. Names (`<prefix>-<ns>-73736d-<name>`,
//! `gl-<ns>-73736d-<name>`, `gl-<slice>`), the mirrored Service of a remote Service, the
//! global EndpointSlice of a source slice with its zones and hints rewritten, and the
//! labels that mark each as ours. Names over 63 characters are refused here, before
//! anything is created (the original created the Endpoints and slices and retried the
//! Service forever).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{EndpointHints, EndpointSlice, ForZone};
use kube::api::ObjectMeta;

/// `73736d`: "ssm" in hex, the separator CoreDNS rewrites split on.
pub const SEPARATOR: &str = "73736d";
/// The longest Service name (a DNS-1035 label).
pub const MAX_NAME: usize = 63;

/// Labels of mirrored Services (and Endpoints).
pub const MIRRORED_SVC: &str = "mirrored-svc";
/// The prefix of the runner that owns a mirrored Service.
pub const MIRROR_PREFIX: &str = "mirror-svc-prefix-sync";
/// Label of global Services.
pub const GLOBAL_SVC: &str = "global-svc";
/// Annotation: the clusters behind a global Service.
pub const GLOBAL_CLUSTERS: &str = "global-svc-clusters";
/// Annotation set when the routing-strategy selector matches.
pub const TOPOLOGY_HINTS: &str = "service.kubernetes.io/topology-aware-hints";
/// Label of global EndpointSlices.
pub const MIRRORED_SLICE: &str = "mirrored-endpoint-slice";
/// The cluster a global EndpointSlice came from.
pub const SLICE_CLUSTER: &str = "mirror-endpointslice-sync-name";
/// The Service an EndpointSlice belongs to.
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Who manages an EndpointSlice (keeps Kubernetes' own controllers away).
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// Our value of [`MANAGED_BY`].
pub const MANAGER: &str = "semaphore-service-mirror";
/// The zone every remote endpoint is put in.
pub const REMOTE_ZONE: &str = "remote";

/// A name that would be longer than Kubernetes allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is {} characters, over the {MAX_NAME} a Service name may have", name.len())]
pub struct NameTooLong {
    /// The name it would have.
    pub name: String,
}

fn checked(name: String) -> Result<String, NameTooLong> {
    if name.len() > MAX_NAME {
        Err(NameTooLong { name })
    } else {
        Ok(name)
    }
}

/// `<prefix>-<ns>-73736d-<name>`.
pub fn mirror_name(prefix: &str, namespace: &str, name: &str) -> Result<String, NameTooLong> {
    checked(format!("{prefix}-{namespace}-{SEPARATOR}-{name}"))
}

/// `gl-<ns>-73736d-<name>`.
pub fn global_name(namespace: &str, name: &str) -> Result<String, NameTooLong> {
    checked(format!("gl-{namespace}-{SEPARATOR}-{name}"))
}

/// `gl-<slice>` (a slice name may be a DNS subdomain of 253 characters).
pub fn global_slice_name(slice: &str) -> Result<String, NameTooLong> {
    let name = format!("gl-{slice}");
    if name.len() > 253 {
        return Err(NameTooLong { name });
    }
    Ok(name)
}

/// The labels of a mirrored Service of runner `prefix`.
pub fn mirror_labels(prefix: &str) -> BTreeMap<String, String> {
    [
        (MIRRORED_SVC.to_string(), "true".to_string()),
        (MIRROR_PREFIX.to_string(), prefix.to_string()),
    ]
    .into()
}

/// The ports of a remote Service as a local ClusterIP Service can have them: no node
/// ports (the original copied them, and a NodePort or LoadBalancer Service then failed to
/// mirror forever).
pub fn mirrored_ports(remote: &Service) -> Vec<ServicePort> {
    remote
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|p| ServicePort {
            node_port: None,
            ..p
        })
        .collect()
}

/// True when the Service is headless (`clusterIP: None`).
pub fn is_headless(s: &Service) -> bool {
    s.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// A new mirrored Service: selector-less ClusterIP (headless when the remote is), the
/// remote's ports (as [`mirrored_ports`] gives them), our labels.
pub fn new_mirror_service(
    name: &str,
    namespace: &str,
    prefix: &str,
    ports: Vec<ServicePort>,
    headless: bool,
) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(mirror_labels(prefix)),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(ports),
            cluster_ip: headless.then(|| "None".to_string()),
            ..Default::default()
        }),
        status: None,
    }
}

/// The labels of a global EndpointSlice from cluster `cluster` for global Service `global`.
pub fn global_slice_labels(cluster: &str, global: &str) -> BTreeMap<String, String> {
    [
        (MIRRORED_SLICE.to_string(), "true".to_string()),
        (SLICE_CLUSTER.to_string(), cluster.to_string()),
        (SERVICE_NAME.to_string(), global.to_string()),
        (MANAGED_BY.to_string(), MANAGER.to_string()),
    ]
    .into()
}

/// The global copy of `source` (from `cluster`; `local_zones` for the local cluster,
/// `None` for a remote one) bound to global Service `global` in `namespace`: endpoints of a
/// remote cluster go to zone `remote` with a `remote` hint; local ones keep their zone and
/// are hinted for every local zone.
pub fn global_slice(
    source: &EndpointSlice,
    name: &str,
    namespace: &str,
    cluster: &str,
    global: &str,
    local_zones: Option<&[String]>,
) -> EndpointSlice {
    let mut endpoints = source.endpoints.clone();
    for e in &mut endpoints {
        let zones: Vec<ForZone> = match local_zones {
            Some(zones) => zones.iter().map(|z| ForZone { name: z.clone() }).collect(),
            None => {
                e.zone = Some(REMOTE_ZONE.to_string());
                vec![ForZone {
                    name: REMOTE_ZONE.to_string(),
                }]
            }
        };
        e.hints = Some(EndpointHints {
            for_zones: Some(zones),
            ..Default::default()
        });
    }
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(global_slice_labels(cluster, global)),
            ..Default::default()
        },
        address_type: source.address_type.clone(),
        endpoints,
        ports: source.ports.clone(),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::discovery::v1::Endpoint;

    use super::*;

    #[test]
    fn names_and_their_limit() {
        assert_eq!(mirror_name("a", "foo", "bar").unwrap(), "a-foo-73736d-bar");
        assert_eq!(global_name("foo", "web").unwrap(), "gl-foo-73736d-web");
        assert_eq!(global_slice_name("web-x7k2p").unwrap(), "gl-web-x7k2p");
        // 63 fits, 64 does not: prefix (1) + ns (20) + name (33) + 9 = 63.
        let ns = "n".repeat(20);
        assert!(mirror_name("a", &ns, &"s".repeat(33)).is_ok());
        let e = mirror_name("a", &ns, &"s".repeat(34)).unwrap_err();
        assert!(e.to_string().contains("64 characters"), "{e}");
        assert!(global_name(&"n".repeat(30), &"s".repeat(23)).is_err());
    }

    #[test]
    fn a_mirrored_service_is_selectorless_headless_as_the_remote_without_node_ports() {
        let remote = Service {
            metadata: ObjectMeta {
                name: Some("bar".into()),
                labels: Some([("m".to_string(), "true".to_string())].into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("NodePort".into()),
                cluster_ip: Some("10.2.0.7".into()),
                selector: Some([("app".to_string(), "bar".to_string())].into()),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    node_port: Some(30080),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        };
        let m = new_mirror_service(
            "a-foo-73736d-bar",
            "sys",
            "a",
            mirrored_ports(&remote),
            is_headless(&remote),
        );
        let spec = m.spec.as_ref().unwrap();
        assert_eq!(spec.selector, None);
        assert_eq!(spec.cluster_ip, None, "allocated locally, never copied");
        assert_eq!(spec.type_, None, "ClusterIP");
        let ports = spec.ports.as_ref().unwrap();
        assert_eq!((ports[0].port, ports[0].node_port), (80, None));
        assert_eq!(m.metadata.labels.unwrap(), mirror_labels("a"));
        let mut headless = remote.clone();
        headless.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        let m = new_mirror_service(
            "x",
            "sys",
            "a",
            mirrored_ports(&headless),
            is_headless(&headless),
        );
        assert_eq!(m.spec.unwrap().cluster_ip.as_deref(), Some("None"));
    }

    #[test]
    fn global_slices_rewrite_zones_and_hints() {
        let source = EndpointSlice {
            metadata: ObjectMeta {
                name: Some("web-x7k2p".into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: vec![Endpoint {
                addresses: vec!["10.4.1.10".into()],
                zone: Some("eu-1a".into()),
                ..Default::default()
            }],
            ports: None,
        };
        let remote = global_slice(
            &source,
            "gl-web-x7k2p",
            "sys",
            "a",
            "gl-foo-73736d-web",
            None,
        );
        let e = &remote.endpoints[0];
        assert_eq!(e.zone.as_deref(), Some("remote"));
        assert_eq!(
            e.hints.as_ref().unwrap().for_zones.as_ref().unwrap()[0].name,
            "remote"
        );
        assert_eq!(remote.metadata.labels.as_ref().unwrap()[SLICE_CLUSTER], "a");
        assert_eq!(
            remote.metadata.labels.as_ref().unwrap()[SERVICE_NAME],
            "gl-foo-73736d-web"
        );
        assert_eq!(
            remote.metadata.labels.as_ref().unwrap()[MANAGED_BY],
            MANAGER
        );
        let zones = vec!["z1".to_string(), "z2".to_string()];
        let local = global_slice(&source, "gl-web-x7k2p", "sys", "local", "g", Some(&zones));
        let e = &local.endpoints[0];
        assert_eq!(e.zone.as_deref(), Some("eu-1a"), "kept");
        let hinted: Vec<_> = e
            .hints
            .as_ref()
            .unwrap()
            .for_zones
            .as_ref()
            .unwrap()
            .iter()
            .map(|z| z.name.as_str())
            .collect();
        assert_eq!(hinted, ["z1", "z2"]);
    }
}

//! The kinds besides Nodes and Leases that the service mirror uses: where they live in the
//! URL space and how they name themselves.

/// A kind served by the generic object store (`objects.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// core/v1 Namespaces (cluster-scoped).
    Namespace,
    /// core/v1 Services.
    Service,
    /// core/v1 Endpoints.
    Endpoints,
    /// discovery.k8s.io/v1 EndpointSlices.
    EndpointSlice,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 4] = [
        Kind::Namespace,
        Kind::Service,
        Kind::Endpoints,
        Kind::EndpointSlice,
    ];

    /// `apiVersion`.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            _ => "v1",
        }
    }

    /// `kind`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Service => "Service",
            Kind::Endpoints => "Endpoints",
            Kind::EndpointSlice => "EndpointSlice",
        }
    }

    /// The URL plural.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::Service => "services",
            Kind::Endpoints => "endpoints",
            Kind::EndpointSlice => "endpointslices",
        }
    }

    /// `/api/v1` or `/apis/<group>/<version>`.
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::EndpointSlice => "/apis/discovery.k8s.io/v1",
            _ => "/api/v1",
        }
    }

    /// Whether objects live in a namespace.
    pub fn namespaced(self) -> bool {
        self != Kind::Namespace
    }

    /// The resource name in error messages (`services`, `endpointslices.discovery.k8s.io`).
    pub fn resource(self) -> String {
        match self {
            Kind::EndpointSlice => "endpointslices.discovery.k8s.io".into(),
            k => k.plural().into(),
        }
    }
}

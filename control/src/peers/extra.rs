//! `extraCIDRs` claims: the parts of a remote's `extraSubnets` a node serves. A claim
//! inside them is granted (unless an older node holds it); others are refused on their
//! own, and the node stays a peer for the rest.

use std::fmt;

use ip_network::IpNetwork;

use crate::config::{Subnets, parse_cidr};
use crate::node::RemoteNode;

/// Why a prefix a node claimed with `extraCIDRs` was not given to it (the node is still a
/// peer for the rest). The kind's snake-case name is its metric label.
#[derive(Debug, Clone, PartialEq, Eq, strum::EnumDiscriminants)]
#[strum_discriminants(
    name(RefuseKind),
    derive(strum::IntoStaticStr, strum::EnumIter, strum::EnumCount),
    strum(serialize_all = "snake_case")
)]
pub enum RefuseReason {
    /// Not a CIDR.
    Invalid,
    /// Not inside any of the remote's `extraSubnets`.
    OutsideExtraSubnets,
    /// An older node holds addresses of it.
    Conflict {
        /// The node that holds them.
        holder: String,
    },
}

impl RefuseKind {
    /// Every kind, in declaration order.
    pub fn all() -> impl Iterator<Item = Self> {
        <Self as strum::IntoEnumIterator>::iter()
    }

    /// Number of kinds.
    pub const COUNT: usize = <Self as strum::EnumCount>::COUNT;

    /// Stable label for metrics.
    pub fn label(self) -> &'static str {
        self.into()
    }

    /// Position in [`RefuseKind::all`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl RefuseReason {
    /// What kind of reason this is.
    pub fn kind(&self) -> RefuseKind {
        self.into()
    }
}

impl fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid => f.write_str("not a CIDR"),
            Self::OutsideExtraSubnets => f.write_str("outside the remote's extraSubnets"),
            Self::Conflict { holder } => write!(f, "node {holder} claimed it first"),
        }
    }
}

/// An `extraCIDRs` claim refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The node that claimed it.
    pub node: String,
    /// The prefix, as written.
    pub prefix: String,
    /// Why.
    pub reason: RefuseReason,
}

/// The prefixes of `node`'s `extraCIDRs` annotation inside the remote's extra subnets;
/// the others go to `refused`.
pub(super) fn extra_claims(
    node: &RemoteNode,
    subnets: &Subnets,
    refused: &mut Vec<Refused>,
) -> Vec<IpNetwork> {
    let Some(value) = &node.extra_cidrs else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let reason = match parse_cidr(part) {
            None => RefuseReason::Invalid,
            Some(net) if subnets.extra_contains(&net) => {
                out.push(net);
                continue;
            }
            Some(_) => RefuseReason::OutsideExtraSubnets,
        };
        refused.push(Refused {
            node: node.name.clone(),
            prefix: part.to_string(),
            reason,
        });
    }
    out
}

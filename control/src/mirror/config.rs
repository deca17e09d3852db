//! The service mirror's JSON config, read as semaphore-service-mirror reads it with Go's
//! `encoding/json`: keys match case-insensitively, a repeated key's last value wins,
//! unknown keys are ignored, a value of the wrong type is an error; `resyncPeriod` is a Go
//! duration string or a number of nanoseconds. Validation keeps the original's order and
//! messages, then refuses what the original accepted and broke on: duplicate remote names
//! or service prefixes, a remote named like the local cluster, and names that cannot be
//! label values.

use std::time::Duration;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::config::{RemoteAccess, duration_from_json};

/// The whole file, after flag and environment overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorConfig {
    /// `global`.
    pub global: GlobalConfig,
    /// `localCluster`.
    pub local: LocalConfig,
    /// `remoteClusters`, in order.
    pub remotes: Vec<MirrorRemote>,
}

/// `global`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GlobalConfig {
    /// `globalSvcLabelSelector`.
    pub global_svc_label_selector: String,
    /// `globalSvcRoutingStrategyLabel`.
    pub global_svc_routing_strategy_label: String,
    /// `mirrorSvcLabelSelector`.
    pub mirror_svc_label_selector: String,
    /// `mirrorNamespace`.
    pub mirror_namespace: String,
    /// `serviceSync`: collect stale mirrored Services.
    pub service_sync: bool,
    /// `endpointSliceSync`: collect stale mirrored EndpointSlices.
    pub endpoint_slice_sync: bool,
}

/// `localCluster` (its `kubeConfigPath` is ignored, as in the original: the local client
/// comes from `-kube-config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalConfig {
    /// `name`.
    pub name: String,
    /// `zones`: the topology hints of local endpoints (default `["local"]`).
    pub zones: Vec<String>,
}

/// One of `remoteClusters`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorRemote {
    /// `name`.
    pub name: String,
    /// A kubeconfig, or API URL + CA URL + token file.
    pub access: RemoteAccess,
    /// `resyncPeriod` (zero: off).
    pub resync_period: Duration,
    /// `servicePrefix`.
    pub service_prefix: String,
}

/// The four global fields a flag or variable may set (a non-empty value wins over the
/// file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `-mirror-ns` / `SSM_MIRROR_NS`.
    pub mirror_namespace: String,
    /// `-mirror-svc-label-selector` / `SSM_MIRROR_SVC_LABEL_SELECTOR`.
    pub mirror_svc_label_selector: String,
    /// `-global-svc-label-selector` / `SSM_GLOBAL_SVC_LABEL_SELECTOR`.
    pub global_svc_label_selector: String,
    /// `-global-svc-routing-strategy-label` / `SSM_GLOBAL_SVC_TOPOLOGY_LABEL`.
    pub global_svc_routing_strategy_label: String,
}

/// The config cannot be used. The first messages are the original's, word for word.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MirrorConfigError {
    /// Not JSON, or a value of the wrong type.
    #[error("error unmarshalling config: {0}")]
    Json(String),
    #[error(
        "Label selector for service mirroring should be specified either via global json config, env vars or flag"
    )]
    /// No mirror selector.
    NoMirrorSelector,
    /// No global selector.
    #[error(
        "Label selector for global services should be specified either via global json config, env vars or flag"
    )]
    NoGlobalSelector,
    /// No routing-strategy label.
    #[error(
        "Label to enable topology aware hints for global services should be specified either via global json config, env vars or flag"
    )]
    NoRoutingLabel,
    /// No mirror namespace.
    #[error(
        "Local mirroring namespace should be specified either via global json config, env vars or flag"
    )]
    NoMirrorNamespace,
    /// No local name.
    #[error("Configuration is missing local cluster name")]
    NoLocalName,
    /// No remotes.
    #[error("No remote cluster configuration defined")]
    NoRemotes,
    /// A remote without a name.
    #[error("Configuration is missing remote cluster name")]
    NoRemoteName,
    /// A remote without credentials.
    #[error(
        "Insufficient configuration to create remote cluster client. Set kubeConfigPath or remoteAPIURL and remoteCAURL and remoteSATokenPath"
    )]
    NoRemoteAccess,
    /// A remote without a prefix.
    #[error("Configuration is missing a service prefix for services mirrored from the remote")]
    NoServicePrefix,
    /// A name or prefix that cannot be a label value (or, for prefixes, part of a Service
    /// name).
    #[error("{field}: {value:?} must be a lowercase DNS label of at most 63 characters")]
    InvalidName {
        /// The field.
        field: String,
        /// Its value.
        value: String,
    },
    /// Two remotes with one name or prefix, or a remote named like the local cluster:
    /// their objects would be mistaken for each other's.
    #[error("{field}: {value:?} is already used by {other}")]
    Duplicate {
        /// The field.
        field: String,
        /// Its value.
        value: String,
        /// Where it is used already.
        other: String,
    },
}

/// A JSON object with its keys in document order (Go's decoder walks them in order);
/// values stay raw text, so nested objects keep their order too.
struct Ordered(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, Box<RawValue>>()? {
                    out.push((k, v));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Fields of an object as Go matches them to struct fields: case-insensitively, the last
/// of several matching keys winning. `Null` counts as absent, as for Go's zero values.
struct Fields {
    at: String,
    entries: Vec<(String, Value)>,
    raw: Vec<(String, Box<RawValue>)>,
}

impl Fields {
    /// The object in `raw` (JSON text); `null` is an empty object.
    fn of(at: &str, raw: &str) -> Result<Self, MirrorConfigError> {
        let ordered = match serde_json::from_str::<Option<Ordered>>(raw) {
            Ok(o) => o.unwrap_or(Ordered(Vec::new())),
            Err(_) => {
                let v: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
                return Err(json_err(
                    at,
                    &format!("expected an object, got {}", kind(&v)),
                ));
            }
        };
        let entries = ordered
            .0
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    serde_json::from_str(v.get()).unwrap_or(Value::Null),
                )
            })
            .collect();
        Ok(Self {
            at: at.to_string(),
            entries,
            raw: ordered.0,
        })
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
            .filter(|v| !v.is_null())
    }

    fn raw(&self, key: &str) -> Option<&RawValue> {
        self.raw
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_ref())
    }

    /// The nested object `key`, its order kept (absent or null: empty).
    fn object(&self, key: &str) -> Result<Fields, MirrorConfigError> {
        let at = if self.at == "config" {
            key.to_string()
        } else {
            format!("{}.{key}", self.at)
        };
        Fields::of(&at, self.raw(key).map_or("null", RawValue::get))
    }

    /// The list `key`, each element raw (absent or null: empty).
    fn list(&self, key: &str) -> Result<Vec<Box<RawValue>>, MirrorConfigError> {
        let Some(raw) = self.raw(key) else {
            return Ok(Vec::new());
        };
        serde_json::from_str::<Option<Vec<Box<RawValue>>>>(raw.get())
            .map(Option::unwrap_or_default)
            .map_err(|_| self.wrong(key, "a list", self.get(key).unwrap_or(&Value::Null)))
    }

    fn string(&self, key: &str) -> Result<String, MirrorConfigError> {
        match self.get(key) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(self.wrong(key, "a string", other)),
        }
    }

    fn boolean(&self, key: &str) -> Result<bool, MirrorConfigError> {
        match self.get(key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(self.wrong(key, "a boolean", other)),
        }
    }

    fn strings(&self, key: &str) -> Result<Vec<String>, MirrorConfigError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(self.wrong(key, "a list of strings", other)),
                })
                .collect(),
            Some(other) => Err(self.wrong(key, "a list of strings", other)),
        }
    }

    fn wrong(&self, key: &str, want: &str, got: &Value) -> MirrorConfigError {
        json_err(
            &format!("{}.{key}", self.at),
            &format!("expected {want}, got {}", kind(got)),
        )
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn json_err(at: &str, what: &str) -> MirrorConfigError {
    MirrorConfigError::Json(format!("{at}: {what}"))
}

/// Parses `text` and applies `overrides`, then validates as the original does (same order,
/// same messages), then checks names.
pub fn parse(text: &str, overrides: &Overrides) -> Result<MirrorConfig, MirrorConfigError> {
    serde_json::from_str::<Value>(text).map_err(|e| MirrorConfigError::Json(e.to_string()))?;
    let top = Fields::of("config", text)?;
    let g = top.object("global")?;
    let pick = |flag: &str, file: String| {
        if flag.is_empty() {
            file
        } else {
            flag.to_string()
        }
    };
    let global = GlobalConfig {
        global_svc_label_selector: pick(
            &overrides.global_svc_label_selector,
            g.string("globalSvcLabelSelector")?,
        ),
        global_svc_routing_strategy_label: pick(
            &overrides.global_svc_routing_strategy_label,
            g.string("globalSvcRoutingStrategyLabel")?,
        ),
        mirror_svc_label_selector: pick(
            &overrides.mirror_svc_label_selector,
            g.string("mirrorSvcLabelSelector")?,
        ),
        mirror_namespace: pick(&overrides.mirror_namespace, g.string("mirrorNamespace")?),
        service_sync: g.boolean("serviceSync")?,
        endpoint_slice_sync: g.boolean("endpointSliceSync")?,
    };
    let l = top.object("localCluster")?;
    // Parsed (so that a wrong type is an error, as in Go) and ignored, as in the original.
    l.string("kubeConfigPath")?;
    let mut zones = l.strings("zones")?;
    if zones.is_empty() {
        zones = vec!["local".to_string()];
    }
    let local = LocalConfig {
        name: l.string("name")?,
        zones,
    };
    let raw_remotes = top.list("remoteClusters")?;
    let mut parsed = Vec::with_capacity(raw_remotes.len());
    for (i, r) in raw_remotes.iter().enumerate() {
        let at = format!("remoteClusters[{i}]");
        if r.get().trim() == "null" {
            return Err(json_err(&at, "expected an object, got null"));
        }
        let f = Fields::of(&at, r.get())?;
        let resync = match f.get("resyncPeriod") {
            None => Duration::ZERO,
            Some(v) => duration_from_json(v)
                .map_err(|e| json_err(&format!("{at}.resyncPeriod"), &e.to_string()))?,
        };
        parsed.push((
            f.string("name")?,
            f.string("kubeConfigPath")?,
            f.string("remoteAPIURL")?,
            f.string("remoteCAURL")?,
            f.string("remoteSATokenPath")?,
            resync,
            f.string("servicePrefix")?,
        ));
    }
    use MirrorConfigError as E;
    if global.mirror_svc_label_selector.is_empty() {
        return Err(E::NoMirrorSelector);
    }
    if global.global_svc_label_selector.is_empty() {
        return Err(E::NoGlobalSelector);
    }
    if global.global_svc_routing_strategy_label.is_empty() {
        return Err(E::NoRoutingLabel);
    }
    if global.mirror_namespace.is_empty() {
        return Err(E::NoMirrorNamespace);
    }
    if local.name.is_empty() {
        return Err(E::NoLocalName);
    }
    if parsed.is_empty() {
        return Err(E::NoRemotes);
    }
    let mut remotes: Vec<MirrorRemote> = Vec::with_capacity(parsed.len());
    for (i, (name, kubeconfig, api_url, ca_url, token_path, resync_period, prefix)) in
        parsed.into_iter().enumerate()
    {
        if name.is_empty() {
            return Err(E::NoRemoteName);
        }
        let access = if !kubeconfig.is_empty() {
            RemoteAccess::KubeConfig(kubeconfig)
        } else if !api_url.is_empty() && !ca_url.is_empty() && !token_path.is_empty() {
            RemoteAccess::Token {
                api_url,
                ca_url,
                token_path,
            }
        } else {
            return Err(E::NoRemoteAccess);
        };
        if prefix.is_empty() {
            return Err(E::NoServicePrefix);
        }
        let at = format!("remoteClusters[{i}]");
        check_label(&format!("{at}.name"), &name)?;
        check_label(&format!("{at}.servicePrefix"), &prefix)?;
        if name == local.name {
            return Err(E::Duplicate {
                field: format!("{at}.name"),
                value: name,
                other: "localCluster.name".into(),
            });
        }
        for (j, o) in remotes.iter().enumerate() {
            let dup = |field: &str, value: &str| E::Duplicate {
                field: format!("{at}.{field}"),
                value: value.to_string(),
                other: format!("remoteClusters[{j}]"),
            };
            if o.name == name {
                return Err(dup("name", &name));
            }
            if o.service_prefix == prefix {
                return Err(dup("servicePrefix", &prefix));
            }
        }
        remotes.push(MirrorRemote {
            name,
            access,
            resync_period,
            service_prefix: prefix,
        });
    }
    check_label("localCluster.name", &local.name)?;
    Ok(MirrorConfig {
        global,
        local,
        remotes,
    })
}

/// Names and prefixes become label values and parts of Service names: DNS labels.
fn check_label(field: &str, value: &str) -> Result<(), MirrorConfigError> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(MirrorConfigError::InvalidName {
            field: field.to_string(),
            value: value.to_string(),
        })
    }
}

#[cfg(test)]
mod tests;

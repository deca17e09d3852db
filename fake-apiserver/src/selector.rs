//! Label and field selectors, as far as Nodes need them.
//!
//! Label selectors support the equality forms (`k=v`, `k==v`, `k!=v`),
//! existence (`k`, `!k`) and the set forms (`k in (a,b)`, `k notin (a,b)`),
//! comma-separated and ANDed. Field selectors support `metadata.name` with
//! `=`, `==` and `!=`, like the real apiserver does for Nodes' name field.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;

use crate::status::ApiError;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
        }
    }
}

/// A parsed `labelSelector` plus `fieldSelector`; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    labels: Vec<Requirement>,
    name_is: Option<String>,
    name_is_not: Vec<String>,
    /// Set when two different `metadata.name=` terms were given.
    never: bool,
}

impl Selector {
    /// Parses the two query parameters; either may be absent or empty.
    pub fn parse(label: Option<&str>, field: Option<&str>) -> Result<Self, ApiError> {
        let mut selector = Selector::default();
        if let Some(label) = label {
            for term in split_terms(label) {
                selector.labels.push(parse_label_term(term)?);
            }
        }
        if let Some(field) = field {
            for term in field.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                selector.add_field_term(term)?;
            }
        }
        Ok(selector)
    }

    fn add_field_term(&mut self, term: &str) -> Result<(), ApiError> {
        let (key, value, negated) = if let Some((k, v)) = term.split_once("!=") {
            (k, v, true)
        } else if let Some((k, v)) = term.split_once("==") {
            (k, v, false)
        } else if let Some((k, v)) = term.split_once('=') {
            (k, v, false)
        } else {
            return Err(ApiError::BadRequest(format!(
                "invalid field selector: {term:?}"
            )));
        };
        if key.trim() != "metadata.name" {
            return Err(ApiError::BadRequest(format!(
                "field label not supported: {}",
                key.trim()
            )));
        }
        let value = value.trim().to_string();
        if negated {
            self.name_is_not.push(value);
        } else if self.name_is.as_ref().is_some_and(|n| *n != value) {
            self.never = true;
        } else {
            self.name_is = Some(value);
        }
        Ok(())
    }

    /// Whether `node` is selected.
    pub fn matches(&self, node: &Node) -> bool {
        let empty = BTreeMap::new();
        self.matches_meta(
            node.metadata.name.as_deref().unwrap_or_default(),
            node.metadata.labels.as_ref().unwrap_or(&empty),
        )
    }

    /// Whether an object of this name and these labels is selected.
    pub fn matches_meta(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        if self.never || self.name_is.as_deref().is_some_and(|n| n != name) {
            return false;
        }
        if self.name_is_not.iter().any(|n| n == name) {
            return false;
        }
        self.labels.iter().all(|r| r.matches(labels))
    }

    /// Whether this selector can reject nodes at all.
    pub fn is_everything(&self) -> bool {
        self.labels.is_empty()
            && self.name_is.is_none()
            && self.name_is_not.is_empty()
            && !self.never
    }
}

/// Splits a label selector at the commas that are not inside `( … )`.
fn split_terms(s: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&s[start..]);
    terms
        .into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn parse_label_term(term: &str) -> Result<Requirement, ApiError> {
    let bad = || ApiError::BadRequest(format!("unable to parse requirement: {term:?}"));
    let valid_key =
        |k: &str| !k.is_empty() && !k.contains(|c: char| c.is_whitespace() || "=!(),".contains(c));
    if let Some((k, v)) = term.split_once("!=") {
        let (k, v) = (k.trim(), v.trim());
        return valid_key(k)
            .then(|| Requirement::NotEquals(k.into(), v.into()))
            .ok_or_else(bad);
    }
    if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
        let (k, v) = (k.trim(), v.trim());
        return valid_key(k)
            .then(|| Requirement::Equals(k.into(), v.into()))
            .ok_or_else(bad);
    }
    if let Some(k) = term.strip_prefix('!') {
        let k = k.trim();
        return valid_key(k)
            .then(|| Requirement::NotExists(k.into()))
            .ok_or_else(bad);
    }
    if let Some(open) = term.find('(') {
        let list = term[open..]
            .strip_prefix('(')
            .and_then(|l| l.strip_suffix(')'))
            .ok_or_else(bad)?;
        let values: Vec<String> = list
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        let mut head = term[..open].split_whitespace();
        let (Some(k), Some(op), None) = (head.next(), head.next(), head.next()) else {
            return Err(bad());
        };
        if !valid_key(k) {
            return Err(bad());
        }
        return match op {
            "in" => Ok(Requirement::In(k.into(), values)),
            "notin" => Ok(Requirement::NotIn(k.into(), values)),
            _ => Err(bad()),
        };
    }
    valid_key(term)
        .then(|| Requirement::Exists(term.into()))
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, labels: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn sel(label: &str, field: &str) -> Selector {
        Selector::parse(Some(label), Some(field)).unwrap()
    }

    #[test]
    fn label_forms() {
        let n = node("a", &[("role", "worker"), ("zone", "z1")]);
        assert!(sel("", "").matches(&n));
        assert!(sel("role=worker", "").matches(&n));
        assert!(sel("role==worker,zone", "").matches(&n));
        assert!(!sel("role=master", "").matches(&n));
        assert!(!sel("role=worker,gpu", "").matches(&n));
        assert!(sel("!gpu, role != master", "").matches(&n));
        assert!(sel("zone in (z1, z2),role notin (master)", "").matches(&n));
        assert!(!sel("zone notin (z1)", "").matches(&n));
    }

    #[test]
    fn field_forms() {
        let n = node("a", &[]);
        assert!(sel("", "metadata.name=a").matches(&n));
        assert!(!sel("", "metadata.name=b").matches(&n));
        assert!(!sel("", "metadata.name!=a").matches(&n));
        assert!(!sel("", "metadata.name=a,metadata.name=b").matches(&n));
        assert!(Selector::parse(None, Some("spec.foo=x")).is_err());
        assert!(Selector::parse(Some("a in b"), None).is_err());
        assert!(Selector::parse(Some("=x"), None).is_err());
    }
}

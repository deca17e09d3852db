//! A label selector as the routing-strategy label of the original is written (`k=v`,
//! `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`, comma-separated and ANDed),
//! matched against a Service's labels.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    Absent(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed selector; the empty one matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Term>);

impl std::str::FromStr for LabelSelector {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        let mut depth = 0;
        let mut start = 0;
        let mut parts = Vec::new();
        for (i, c) in s.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&s[start..]);
        for part in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
            terms.push(term(part).ok_or_else(|| format!("invalid label selector term {part:?}"))?);
        }
        Ok(Self(terms))
    }
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
}

fn set(s: &str) -> Option<Vec<String>> {
    let inner = s.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(inner.split(',').map(|v| v.trim().to_string()).collect())
}

fn term(t: &str) -> Option<Term> {
    if let Some(k) = t.strip_prefix('!') {
        return valid_key(k.trim()).then(|| Term::Absent(k.trim().to_string()));
    }
    if let Some((k, v)) = t.split_once("!=") {
        return valid_key(k.trim()).then(|| Term::Ne(k.trim().into(), v.trim().into()));
    }
    if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
        return valid_key(k.trim()).then(|| Term::Eq(k.trim().into(), v.trim().into()));
    }
    if let Some((k, rest)) = t.split_once(" notin ") {
        return Some(Term::NotIn(k.trim().into(), set(rest)?)).filter(|_| valid_key(k.trim()));
    }
    if let Some((k, rest)) = t.split_once(" in ") {
        return Some(Term::In(k.trim().into(), set(rest)?)).filter(|_| valid_key(k.trim()));
    }
    valid_key(t).then(|| Term::Exists(t.to_string()))
}

impl LabelSelector {
    /// Whether `labels` satisfy every term.
    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let empty = BTreeMap::new();
        let l = labels.unwrap_or(&empty);
        self.0.iter().all(|t| match t {
            Term::Eq(k, v) => l.get(k) == Some(v),
            Term::Ne(k, v) => l.get(k) != Some(v),
            Term::Exists(k) => l.contains_key(k),
            Term::Absent(k) => !l.contains_key(k),
            Term::In(k, vs) => l.get(k).is_some_and(|v| vs.contains(v)),
            Term::NotIn(k, vs) => l.get(k).is_none_or(|v| !vs.contains(v)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forms() {
        let l: BTreeMap<String, String> = [
            ("r".to_string(), "local-first".to_string()),
            ("t".to_string(), "x".to_string()),
        ]
        .into();
        let m = |s: &str| s.parse::<LabelSelector>().unwrap().matches(Some(&l));
        assert!(m("r=local-first"));
        assert!(m("r==local-first,t"));
        assert!(!m("r!=local-first"));
        assert!(m("!missing"));
        assert!(m("r in (a, local-first)"));
        assert!(!m("r notin (local-first)"));
        assert!(m(""));
        assert!(
            !"r=local-first"
                .parse::<LabelSelector>()
                .unwrap()
                .matches(None)
        );
        for bad in ["=x", "a in b", "k notin (", "!"] {
            assert!(bad.parse::<LabelSelector>().is_err(), "{bad}");
        }
    }
}

//! Paged lists (`limit` and `continue`), served as the apiserver serves them: every page of
//! one list comes from the same snapshot (the state at the first page's resourceVersion),
//! so a node changed between pages shows up in the watch that follows, not in the list.
//! A few recent snapshots are kept; a `continue` token for one that was dropped gets
//! 410 `Expired`, as a token does after etcd compaction.

use std::collections::VecDeque;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;

use crate::status::ApiError;

/// Snapshots kept for continuing lists.
const KEPT: usize = 16;

/// One page of a list.
pub(crate) struct Page {
    pub items: Vec<Node>,
    /// The resourceVersion of the snapshot.
    pub rv: u64,
    /// The token for the next page, if there is one.
    pub next: Option<String>,
    /// Items after this page.
    pub remaining: usize,
}

/// The snapshots of lists still being paged through.
#[derive(Default)]
pub(crate) struct Pages {
    next_id: u64,
    kept: VecDeque<(u64, u64, Arc<Vec<Node>>)>,
}

impl Pages {
    /// The first page of `items` (the selected nodes at `rv`), `limit` long.
    pub fn first(&mut self, items: Vec<Node>, rv: u64, limit: usize) -> Page {
        if items.len() <= limit {
            return Page {
                items,
                rv,
                next: None,
                remaining: 0,
            };
        }
        self.next_id += 1;
        let id = self.next_id;
        let snapshot = Arc::new(items);
        self.kept.push_back((id, rv, Arc::clone(&snapshot)));
        while self.kept.len() > KEPT {
            self.kept.pop_front();
        }
        Self::page(&snapshot, id, rv, 0, limit)
    }

    /// The page a `continue` token points at.
    pub fn next(&self, token: &str, limit: usize) -> Result<Page, ApiError> {
        let (id, offset) = token
            .split_once(':')
            .and_then(|(id, off)| Some((id.parse::<u64>().ok()?, off.parse::<usize>().ok()?)))
            .ok_or_else(|| ApiError::BadRequest(format!("invalid continue token: {token:?}")))?;
        let (_, rv, snapshot) = self.kept.iter().find(|(i, _, _)| *i == id).ok_or_else(|| {
            ApiError::Expired(
                "The provided continue parameter is too old to display a consistent list \
                     result. You can start a new list without the continue parameter."
                    .into(),
            )
        })?;
        Ok(Self::page(snapshot, id, *rv, offset, limit))
    }

    fn page(snapshot: &[Node], id: u64, rv: u64, offset: usize, limit: usize) -> Page {
        let start = offset.min(snapshot.len());
        let end = start.saturating_add(limit.max(1)).min(snapshot.len());
        Page {
            items: snapshot[start..end].to_vec(),
            rv,
            next: (end < snapshot.len()).then(|| format!("{id}:{end}")),
            remaining: snapshot.len() - end,
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn nodes(n: usize) -> Vec<Node> {
        (0..n)
            .map(|i| Node {
                metadata: ObjectMeta {
                    name: Some(format!("n{i:02}")),
                    ..Default::default()
                },
                ..Default::default()
            })
            .collect()
    }

    fn names(p: &Page) -> Vec<&str> {
        p.items
            .iter()
            .map(|n| n.metadata.name.as_deref().unwrap())
            .collect()
    }

    #[test]
    fn pages_cover_the_snapshot_once_in_order() {
        let mut pages = Pages::default();
        let first = pages.first(nodes(5), 7, 2);
        assert_eq!(names(&first), ["n00", "n01"]);
        assert_eq!((first.rv, first.remaining), (7, 3));
        let second = pages.next(first.next.as_deref().unwrap(), 2).unwrap();
        assert_eq!(names(&second), ["n02", "n03"]);
        let third = pages.next(second.next.as_deref().unwrap(), 2).unwrap();
        assert_eq!(names(&third), ["n04"]);
        assert_eq!((third.next, third.remaining, third.rv), (None, 0, 7));
    }

    #[test]
    fn a_short_list_is_one_page_and_old_tokens_expire() {
        let mut pages = Pages::default();
        let all = pages.first(nodes(2), 1, 2);
        assert!(all.next.is_none() && pages.kept.is_empty());
        let first = pages.first(nodes(3), 1, 1);
        let token = first.next.unwrap();
        for _ in 0..KEPT {
            pages.first(nodes(3), 2, 1);
        }
        assert!(matches!(pages.next(&token, 1), Err(ApiError::Expired(_))));
        assert!(matches!(
            pages.next("junk", 1),
            Err(ApiError::BadRequest(_))
        ));
    }
}

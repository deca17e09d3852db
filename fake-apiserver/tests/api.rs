//! Request/response endpoints and auth, driven by the real `kube::Client`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use fake_apiserver::Options;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::json;

#[tokio::test]
async fn list_get_and_patch() {
    let n1 = {
        let mut n = node("n1", &[("role", "worker")]);
        n.metadata.annotations = Some([("keep".to_string(), "1".to_string())].into());
        n
    };
    let server = server(&[n1, node("n2", &[("role", "master")])]).await;
    let api = nodes_api(&server);

    let list = within("list", api.list(&ListParams::default()))
        .await
        .unwrap();
    let names: Vec<String> = list.items.iter().map(|n| n.name_any()).collect();
    assert_eq!(names, ["n1", "n2"]);
    assert_eq!(
        list.metadata.resource_version,
        Some(server.resource_version().to_string())
    );
    assert!(list.metadata.continue_.is_none());
    let workers = api
        .list(&ListParams::default().labels("role=worker"))
        .await
        .unwrap();
    assert_eq!(workers.items.len(), 1);
    let by_name = api
        .list(&ListParams::default().fields("metadata.name=n2"))
        .await
        .unwrap();
    assert_eq!(by_name.items[0].name_any(), "n2");
    let labelled = api
        .list(&ListParams::default().labels("role"))
        .await
        .unwrap();
    assert_eq!(labelled.items.len(), 2);

    let got = api.get("n1").await.unwrap();
    assert!(got.uid().is_some() && got.creation_timestamp().is_some());
    let rv_before: u64 = got.resource_version().unwrap().parse().unwrap();

    let pp = PatchParams::default();
    let merge = json!({"metadata": {"annotations": {"a": "1", "b": "2"}}});
    let patched = api.patch("n1", &pp, &Patch::Merge(&merge)).await.unwrap();
    assert_eq!(annotations(&patched)["a"], "1");
    assert_eq!(annotations(&patched)["keep"], "1");
    let rv_after: u64 = patched.resource_version().unwrap().parse().unwrap();
    assert!(rv_after > rv_before);
    assert_eq!(patched.uid(), got.uid());

    let strategic = json!({"metadata": {"annotations": {"a": null, "c": "3"}}});
    let patched = api
        .patch("n1", &pp, &Patch::Strategic(&strategic))
        .await
        .unwrap();
    let keys: Vec<String> = annotations(&patched).into_keys().collect();
    assert_eq!(keys, ["b", "c", "keep"]);
    assert_eq!(server.node("n1").unwrap(), patched);

    let apply = Patch::Apply(json!({"metadata": {"labels": {"x": "y"}}}));
    let err = api
        .patch("n1", &PatchParams::apply("test"), &apply)
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), 415);

    let err = api.get("missing").await.unwrap_err();
    assert_eq!(api_code(&err), 404);
    let kube::Error::Api(status) = &err else {
        unreachable!()
    };
    assert_eq!(status.reason, "NotFound");
    let err = api
        .patch("missing", &pp, &Patch::Merge(&merge))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), 404);

    let log = server.requests();
    assert!(log.contains(&"GET /api/v1/nodes/n1".to_string()), "{log:?}");
    assert!(
        log.iter().any(|r| r.starts_with("PATCH /api/v1/nodes/n1")),
        "{log:?}"
    );
}

#[tokio::test]
async fn paged_lists_come_from_one_snapshot() {
    let nodes: Vec<Node> = (0..5).map(|i| node(&format!("n{i}"), &[])).collect();
    let server = server(&nodes).await;
    let api = nodes_api(&server);
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    let names = |l: &kube::core::ObjectList<Node>| -> Vec<String> {
        l.items.iter().map(|n| n.name_any()).collect()
    };
    assert_eq!(names(&first), ["n0", "n1"]);
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let rv = first.metadata.resource_version.clone();
    // A change between pages is not in the list (the watch from its version brings it).
    api.delete("n3", &DeleteParams::default()).await.unwrap();
    let mut seen = names(&first);
    let mut token = first.metadata.continue_.clone();
    while let Some(t) = token {
        let page = api
            .list(&ListParams::default().limit(2).continue_token(&t))
            .await
            .unwrap();
        assert_eq!(page.metadata.resource_version, rv);
        seen.extend(names(&page));
        token = page.metadata.continue_.clone();
    }
    assert_eq!(seen, ["n0", "n1", "n2", "n3", "n4"]);
    // A fresh list sees the deletion; a bad token is a 400.
    let all = api.list(&ListParams::default().limit(10)).await.unwrap();
    assert_eq!(names(&all), ["n0", "n1", "n2", "n4"]);
    assert!(all.metadata.continue_.is_none());
    let bad = api
        .list(&ListParams::default().limit(2).continue_token("nonsense"))
        .await
        .unwrap_err();
    assert!(
        matches!(bad, kube::Error::Api(ref e) if e.code == 400),
        "{bad}"
    );
    // The requests carried the limit (what a watcher's page size turns into).
    assert!(server.requests().iter().any(|r| r.contains("limit=2")));
}

#[tokio::test]
async fn create_replace_delete() {
    let server = server(&[]).await;
    let api = nodes_api(&server);
    let pp = PostParams::default();

    let created = api.create(&pp, &node("a", &[])).await.unwrap();
    assert_eq!(created.name_any(), "a");
    let err = api.create(&pp, &node("a", &[])).await.unwrap_err();
    assert_eq!(api_code(&err), 409);
    let kube::Error::Api(status) = &err else {
        unreachable!()
    };
    assert_eq!(status.reason, "AlreadyExists");

    let mut changed = created.clone();
    changed.labels_mut().insert("role".into(), "worker".into());
    let replaced = api.replace("a", &pp, &changed).await.unwrap();
    assert_eq!(replaced.labels()["role"], "worker");
    // The stale resourceVersion of `created` is refused.
    let err = api.replace("a", &pp, &created).await.unwrap_err();
    assert_eq!(api_code(&err), 409);

    let deleted = api.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(deleted.left().map(|n| n.name_any()), Some("a".to_string()));
    assert!(server.node("a").is_none());
    let err = api.delete("a", &DeleteParams::default()).await.unwrap_err();
    assert_eq!(api_code(&err), 404);
    assert!(!server.delete_node("a"));
}

#[tokio::test]
async fn bearer_token_auth_and_rotation() {
    let opts = Options {
        token: Some("t1".into()),
        ..Options::default()
    };
    let server = server_with(opts, &[node("n1", &[])]).await;
    let url = server.url();
    let anonymous: Api<Node> = Api::all(client(&url, None));
    let old: Api<Node> = Api::all(client(&url, Some("t1")));
    let new: Api<Node> = Api::all(client(&url, Some("t2")));

    let err = anonymous.list(&ListParams::default()).await.unwrap_err();
    assert_eq!(api_code(&err), 401);
    let kube::Error::Api(status) = &err else {
        unreachable!()
    };
    assert_eq!(status.reason, "Unauthorized");
    assert_eq!(old.get("n1").await.unwrap().name_any(), "n1");
    assert_eq!(api_code(&new.get("n1").await.unwrap_err()), 401);

    server.set_token(Some("t2".into()));
    assert_eq!(api_code(&old.get("n1").await.unwrap_err()), 401);
    assert_eq!(new.get("n1").await.unwrap().name_any(), "n1");

    // /version stays public, like the real apiserver's.
    let version = client(&url, None).apiserver_version().await.unwrap();
    assert_eq!(version.git_version, "v1.33.0-fake");

    server.set_token(None);
    assert!(anonymous.get("n1").await.is_ok());
}

#[tokio::test]
async fn raw_watch_bookmarks_selectors_timeout_and_410() {
    let opts = Options {
        bookmark_interval: Duration::from_millis(100),
        ..Options::default()
    };
    let server = server_with(opts, &[node("a", &[("role", "x")])]).await;
    let api = nodes_api(&server);
    let rv = server.resource_version().to_string();

    // Bookmarks when asked for: a Node carrying only the current resourceVersion.
    let wp = WatchParams::default().timeout(5);
    let mut stream = api.watch(&wp, &rv).await.unwrap().boxed();
    let event = within("bookmark", stream.try_next())
        .await
        .unwrap()
        .unwrap();
    let WatchEvent::Bookmark(bookmark) = event else {
        panic!("expected a bookmark, got {event:?}")
    };
    assert_eq!(bookmark.metadata.resource_version, rv);
    assert_eq!(bookmark.types.kind, "Node");
    drop(stream);

    // No bookmarks otherwise; "0" starts with synthetic ADDEDs; the stream
    // ends by itself after timeoutSeconds.
    let wp = WatchParams::default().disable_bookmarks().timeout(1);
    let events: Vec<_> = within(
        "watch timeout",
        api.watch(&wp, "0").await.unwrap().try_collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(matches!(&events[0], WatchEvent::Added(n) if n.name_any() == "a"));

    // A node leaving the label selector is seen as DELETED, entering as ADDED.
    let wp = WatchParams::default()
        .disable_bookmarks()
        .labels("role=x")
        .timeout(5);
    let mut stream = api
        .watch(&wp, &server.resource_version().to_string())
        .await
        .unwrap()
        .boxed();
    server.upsert_node(node("a", &[("role", "y")]));
    server.upsert_node(node("b", &[("role", "x")]));
    server.upsert_node(node("c", &[("role", "y")]));
    server.upsert_node(node("c", &[("role", "x")]));
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match within("selector events", stream.try_next())
            .await
            .unwrap()
            .unwrap()
        {
            WatchEvent::Added(n) => seen.push(format!("ADDED {}", n.name_any())),
            WatchEvent::Deleted(n) => seen.push(format!("DELETED {}", n.name_any())),
            other => seen.push(format!("{other:?}")),
        }
    }
    assert_eq!(seen, ["DELETED a", "ADDED b", "ADDED c"]);
    drop(stream);

    // Resuming from an old resourceVersion replays history...
    let replay: Vec<_> = within(
        "replay",
        api.watch(&WatchParams::default().disable_bookmarks().timeout(1), &rv)
            .await
            .unwrap()
            .try_collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    assert_eq!(replay.len(), 4, "{replay:?}");
    // ...until compaction, after which it is a single 410 ERROR event.
    server.compact();
    let expired: Vec<_> = within(
        "410",
        api.watch(&WatchParams::default(), &rv)
            .await
            .unwrap()
            .try_collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    let [WatchEvent::Error(status)] = expired.as_slice() else {
        panic!("expected one error, got {expired:?}")
    };
    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
    assert!(
        status
            .message
            .starts_with(&format!("too old resource version: {rv} (")),
        "{}",
        status.message
    );
}

/// Kills the child process if the test fails before shutting it down.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test]
async fn binary_serves_preloaded_nodes_until_sigterm() {
    let dir = std::env::temp_dir().join(format!("fake-apiserver-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("nodes.json");
    let nodes = vec![node("p1", &[]), node("p2", &[])];
    std::fs::write(&file, serde_json::to_vec(&nodes).unwrap()).unwrap();

    let child = Command::new(env!("CARGO_BIN_EXE_fake-apiserver"))
        .args(["--listen", "127.0.0.1:0", "--token", "secret", "--nodes"])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(Some(child));
    let stdout = child.0.as_mut().unwrap().stdout.take().unwrap();
    let first_line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = within("listening line", first_line).await.unwrap().unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let api: Api<Node> = Api::all(client(&url, Some("secret")));
    let names: Vec<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .iter()
        .map(|n| n.name_any())
        .collect();
    assert_eq!(names, ["p1", "p2"]);

    let mut child = child.0.take().unwrap();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = within("exit", tokio::task::spawn_blocking(move || child.wait()))
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

//! The contract every [`ObjectStore`] keeps, as one suite of checks that
//! each implementation runs: memory and local directory in the unit tests,
//! S3 against a real Garage in the integration tests. A new store is done
//! when it passes. Checks panic with a message naming the broken promise.

use bytes::Bytes;
use tokio::io::AsyncReadExt;

use super::{ObjectMeta, ObjectStore, Presigned, MIN_PART};

/// Runs every check under `prefix`, which must be empty and unused by
/// anything else while it runs (it ends empty again).
pub async fn run(store: &dyn ObjectStore, prefix: &str) {
    empty_prefix_lists_nothing(store, prefix).await;
    missing_objects_are_not_found(store, prefix).await;
    small_object_round_trip(store, prefix).await;
    multi_part_round_trip(store, prefix).await;
    nothing_is_visible_before_commit_and_abort_leaves_nothing(store, prefix).await;
    commit_never_overwrites(store, prefix).await;
    list_filters_by_prefix(store, prefix).await;
    delete_is_idempotent(store, prefix).await;
    presign_names_the_object(store, prefix).await;
    let left = store.list(prefix).await.expect("final list");
    assert!(left.is_empty(), "the suite left objects behind: {left:?}");
}

fn meta(sha: &str) -> ObjectMeta {
    let mut m = ObjectMeta {
        sha256: sha.to_string(),
        ..Default::default()
    };
    m.extra.insert("dump-bytes".into(), "12345".into());
    m
}

async fn read_all(store: &dyn ObjectStore, key: &str) -> Vec<u8> {
    let mut out = Vec::new();
    store
        .get(key)
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e}"))
        .read_to_end(&mut out)
        .await
        .unwrap_or_else(|e| panic!("reading {key}: {e}"));
    out
}

async fn nothing_pending(store: &dyn ObjectStore, prefix: &str, why: &str) {
    let pending = store
        .pending_uploads(prefix)
        .await
        .expect("pending uploads");
    assert!(pending.is_empty(), "{why}: {pending:?}");
}

async fn empty_prefix_lists_nothing(store: &dyn ObjectStore, prefix: &str) {
    let got = store.list(prefix).await.expect("list of an empty prefix");
    assert!(got.is_empty(), "an unused prefix lists {got:?}");
}

async fn missing_objects_are_not_found(store: &dyn ObjectStore, prefix: &str) {
    let key = format!("{prefix}missing");
    let e = store
        .head(&key)
        .await
        .expect_err("head of a missing object");
    assert!(e.is_not_found(), "head of a missing object: {e}");
    match store.get(&key).await {
        Err(e) => assert!(e.is_not_found(), "get of a missing object: {e}"),
        Ok(_) => panic!("get of a missing object succeeded"),
    }
    match store.get_with_meta(&key).await {
        Err(e) => assert!(e.is_not_found(), "get_with_meta of a missing object: {e}"),
        Ok(_) => panic!("get_with_meta of a missing object succeeded"),
    }
}

async fn small_object_round_trip(store: &dyn ObjectStore, prefix: &str) {
    let key = format!("{prefix}small.bin");
    let body = Bytes::from_static(b"hello, object store");
    store
        .put(&key, body.clone(), &meta("ab12"))
        .await
        .expect("put");
    assert_eq!(read_all(store, &key).await, body.to_vec());
    let m = store.head(&key).await.expect("head");
    assert_eq!(m.sha256, "ab12", "sha256 travels with the object");
    if let Some(n) = m.extra.get("stored-bytes") {
        assert_eq!(n, &body.len().to_string());
    }
    // One request or two, the same metadata and bytes.
    let (m2, mut r) = store.get_with_meta(&key).await.expect("get_with_meta");
    assert_eq!(m2.sha256, m.sha256);
    assert_eq!(m2.extra, m.extra);
    let mut got = Vec::new();
    r.read_to_end(&mut got).await.expect("read");
    assert_eq!(got, body.to_vec());
    let listed = store.list(prefix).await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].key, key);
    assert_eq!(listed[0].size, body.len() as u64);
    assert!(store.delete(&[key]).await.expect("delete").is_empty());
}

async fn multi_part_round_trip(store: &dyn ObjectStore, prefix: &str) {
    let key = format!("{prefix}big.bin");
    let parts: Vec<Bytes> = (0..3u8)
        .map(|i| Bytes::from(vec![i; if i < 2 { MIN_PART } else { 1000 }]))
        .collect();
    let mut w = store.create(&key).await.expect("create");
    for p in &parts {
        w.write_part(p.clone()).await.expect("write_part");
    }
    w.commit(&meta("cd34")).await.expect("commit");
    let want: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    let got = read_all(store, &key).await;
    assert!(
        got == want,
        "multi-part body differs ({} bytes read)",
        got.len()
    );
    assert_eq!(store.head(&key).await.expect("head").sha256, "cd34");
    nothing_pending(store, prefix, "a committed upload is not pending").await;
    store.delete(&[key]).await.expect("delete");
}

async fn nothing_is_visible_before_commit_and_abort_leaves_nothing(
    store: &dyn ObjectStore,
    prefix: &str,
) {
    let key = format!("{prefix}aborted.bin");
    let mut w = store.create(&key).await.expect("create");
    for _ in 0..2 {
        w.write_part(Bytes::from(vec![1u8; MIN_PART]))
            .await
            .expect("write_part");
    }
    assert!(
        store.head(&key).await.is_err(),
        "an uncommitted object is visible"
    );
    w.abort().await;
    assert!(store.list(prefix).await.expect("list").is_empty());
    nothing_pending(store, prefix, "abort left a pending upload").await;
}

async fn commit_never_overwrites(store: &dyn ObjectStore, prefix: &str) {
    let key = format!("{prefix}taken.bin");
    store
        .put(&key, Bytes::from_static(b"first"), &meta("1111"))
        .await
        .expect("first put");
    // Both shapes: a one-part object and a multi-part one.
    for parts in [1usize, 2] {
        let mut w = store.create(&key).await.expect("create over a taken name");
        for _ in 0..parts {
            w.write_part(Bytes::from(vec![2u8; MIN_PART]))
                .await
                .expect("write_part");
        }
        let e = w
            .commit(&meta("2222"))
            .await
            .expect_err("commit over an existing object");
        assert!(
            matches!(e, super::StoreError::AlreadyExists { .. }),
            "commit over an existing object: {e}"
        );
        assert_eq!(
            read_all(store, &key).await,
            b"first",
            "the winner is intact"
        );
        assert_eq!(store.head(&key).await.expect("head").sha256, "1111");
        nothing_pending(store, prefix, "a refused commit left a pending upload").await;
    }
    store.delete(&[key]).await.expect("delete");
}

async fn list_filters_by_prefix(store: &dyn ObjectStore, prefix: &str) {
    let keys = [
        format!("{prefix}a/x_1"),
        format!("{prefix}a/x_2"),
        format!("{prefix}a/y_1"),
        format!("{prefix}b_1"),
    ];
    for k in &keys {
        store
            .put(k, Bytes::from_static(b"."), &meta(""))
            .await
            .expect("put");
    }
    let got: Vec<String> = store
        .list(&format!("{prefix}a/x_"))
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(got, keys[..2].to_vec(), "listing by prefix");
    let all: Vec<String> = store
        .list(prefix)
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(all, keys.to_vec(), "listing is recursive and by key");
    store.delete(&keys).await.expect("delete");
}

async fn delete_is_idempotent(store: &dyn ObjectStore, prefix: &str) {
    let key = format!("{prefix}gone.bin");
    store
        .put(&key, Bytes::from_static(b"x"), &meta("ee"))
        .await
        .expect("put");
    let failed = store
        .delete(&[key.clone(), key.clone(), format!("{prefix}never")])
        .await
        .expect("delete");
    assert!(failed.is_empty(), "deleting missing keys: {failed:?}");
    assert!(store.head(&key).await.expect_err("deleted").is_not_found());
}

async fn presign_names_the_object(store: &dyn ObjectStore, prefix: &str) {
    let key = format!("{prefix}shared.bin");
    store
        .put(&key, Bytes::from_static(b"x"), &meta("ff"))
        .await
        .expect("put");
    match store
        .presign(&key, std::time::Duration::from_secs(60))
        .await
        .expect("presign")
    {
        Presigned::Url(u) => assert!(u.contains("shared.bin"), "{u}"),
        Presigned::Path(p) => assert!(p.is_absolute() && p.exists(), "{}", p.display()),
    }
    store.delete(&[key]).await.expect("delete");
}

#[cfg(test)]
mod tests {
    use crate::storage::{local::LocalStorage, memory::MemoryStore};

    #[tokio::test]
    async fn memory_keeps_the_contract() {
        super::run(&MemoryStore::new(), "c/").await;
    }

    #[tokio::test]
    async fn local_directory_keeps_the_contract() {
        let dir =
            std::env::temp_dir().join(format!("pgbackup-conf-{:016x}", rand::random::<u64>()));
        super::run(&LocalStorage::new(&dir), "c/").await;
        super::run(&LocalStorage::new(&dir), "").await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}

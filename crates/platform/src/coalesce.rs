//! Concurrent reads of one document share a store round trip, without ever answering with
//! a read that began before the request arrived.
//!
//! Per document, at most one read runs at a time. A request that arrives while one runs
//! does not use it (it may have begun before a write the request must see); it joins the
//! *next* read, which begins once the running one ends and serves every request that joined
//! it. So each request's answer comes from a read that began after the request arrived,
//! exactly as if it had read alone (a value committed here or on another server before the
//! request arrived is seen), and a document read by many requests at once costs about one
//! round trip per round trip's worth of requests instead of one each. Nothing is kept once
//! a read has been handed out: this is not a cache.
//!
//! Reads run on their own task, so a request that goes away does not strand the requests
//! that joined its read. Entries exist only while a read is waiting or running, so the map
//! is bounded by the requests in progress.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use lanyard_storage::{DocumentRecord, Store, StoreError};
use tokio::sync::watch;

type Outcome = Result<Option<DocumentRecord>, StoreError>;
type Key = (String, String);

struct Flight {
    /// Set (under the map's lock) when the read begins; from then on nobody joins.
    started: AtomicBool,
    outcome: watch::Receiver<Option<Outcome>>,
}

impl Flight {
    async fn outcome(&self) -> Outcome {
        let mut rx = self.outcome.clone();
        let outcome = match rx.wait_for(Option::is_some).await {
            Ok(done) => done.as_ref().map(copy),
            Err(_) => None,
        };
        outcome.unwrap_or_else(|| Err(abandoned()))
    }
}

fn abandoned() -> StoreError {
    StoreError::Database("a shared document read was abandoned".into())
}

fn copy(outcome: &Outcome) -> Outcome {
    match outcome {
        Ok(doc) => Ok(doc.clone()),
        Err(e) => Err(match e {
            StoreError::Conflict(m) => StoreError::Conflict(m.clone()),
            StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
            StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
            StoreError::Database(m) => StoreError::Database(m.clone()),
        }),
    }
}

/// Shared document reads (see the module documentation).
#[derive(Default, Clone)]
pub struct Reads {
    flights: Arc<Mutex<HashMap<Key, Arc<Flight>>>>,
}

impl Reads {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads waiting or running (for tests and diagnostics).
    pub fn in_progress(&self) -> usize {
        self.flights.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The document `key` of `collection`, from a read that begins after this call.
    pub async fn document(&self, store: &Arc<dyn Store>, collection: &str, key: &str) -> Outcome {
        let store = Arc::clone(store);
        let id: Key = (collection.to_string(), key.to_string());
        let (c, k) = id.clone();
        self.shared(id, move || async move { store.document(&c, &k).await })
            .await
    }

    /// The outcome of `read` for `id`, or of a read of `id` another caller started after
    /// this call (then `read` is dropped unused).
    pub async fn shared<F, Fut>(&self, id: Key, read: F) -> Outcome
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        let flight = {
            let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            match flights.get(&id) {
                Some(f) if !f.started.load(Ordering::SeqCst) => Arc::clone(f),
                running => {
                    let previous = running.cloned();
                    let (tx, rx) = watch::channel(None);
                    let flight = Arc::new(Flight {
                        started: AtomicBool::new(false),
                        outcome: rx,
                    });
                    flights.insert(id.clone(), Arc::clone(&flight));
                    tokio::spawn(run(
                        Arc::clone(&self.flights),
                        id,
                        Arc::clone(&flight),
                        previous,
                        tx,
                        read,
                    ));
                    flight
                }
            }
        };
        flight.outcome().await
    }
}

async fn run<F, Fut>(
    flights: Arc<Mutex<HashMap<Key, Arc<Flight>>>>,
    id: Key,
    flight: Arc<Flight>,
    previous: Option<Arc<Flight>>,
    tx: watch::Sender<Option<Outcome>>,
    read: F,
) where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Outcome>,
{
    if let Some(previous) = previous {
        // Its outcome is not ours: it may have begun before our callers arrived.
        let _ = previous.outcome().await;
    }
    {
        // Under the lock every join decision takes: whoever joined did so before this.
        let _order = flights.lock().unwrap_or_else(|p| p.into_inner());
        flight.started.store(true, Ordering::SeqCst);
    }
    let outcome = read().await;
    tx.send_replace(Some(outcome));
    let mut flights = flights.lock().unwrap_or_else(|p| p.into_inner());
    if flights.get(&id).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
        flights.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    fn doc(version: i64) -> Outcome {
        Ok(Some(DocumentRecord {
            collection: "c".into(),
            key: "k".into(),
            version,
            body: serde_json::Value::Null,
        }))
    }

    fn version(outcome: &Outcome) -> i64 {
        outcome.as_ref().unwrap().as_ref().unwrap().version
    }

    fn id() -> Key {
        ("c".to_string(), "k".to_string())
    }

    /// Callers arriving while a read runs never get that read's answer; they share the next.
    #[tokio::test]
    async fn late_callers_share_the_next_read_never_the_running_one() {
        let reads = Reads::new();
        let count = Arc::new(AtomicUsize::new(0));
        let (open, gate) = tokio::sync::oneshot::channel::<()>();
        let first = {
            let reads = reads.clone();
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                reads
                    .shared(id(), move || async move {
                        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                        let _ = gate.await;
                        doc(n as i64)
                    })
                    .await
            })
        };
        // Wait until the first read is running.
        while count.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut late = Vec::new();
        for _ in 0..10 {
            let reads = reads.clone();
            let count = Arc::clone(&count);
            late.push(tokio::spawn(async move {
                reads
                    .shared(id(), move || async move {
                        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                        doc(n as i64)
                    })
                    .await
            }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            count.load(Ordering::SeqCst),
            1,
            "late callers wait for the running read"
        );
        open.send(()).unwrap();
        assert_eq!(version(&first.await.unwrap()), 1);
        for l in late {
            assert_eq!(
                version(&l.await.unwrap()),
                2,
                "a read that began after they arrived"
            );
        }
        assert_eq!(count.load(Ordering::SeqCst), 2, "ten callers, one read");
        assert_eq!(reads.in_progress(), 0, "nothing is kept");
        // Alone, a caller reads for itself.
        let n = Arc::clone(&count);
        let alone = reads
            .shared(id(), move || async move {
                doc(n.fetch_add(1, Ordering::SeqCst) as i64 + 1)
            })
            .await;
        assert_eq!(version(&alone), 3);
        // Errors reach every caller.
        let failed = reads
            .shared(id(), || async {
                Err(StoreError::Unavailable("down".into()))
            })
            .await;
        assert!(matches!(failed, Err(StoreError::Unavailable(_))));
    }

    /// Against a real store: a value committed before a call is always what the call sees,
    /// while many calls run at once.
    #[tokio::test]
    async fn every_call_sees_what_was_committed_before_it() {
        use lanyard_storage::{Batch, Change};

        let dir = tempfile::tempdir().unwrap();
        let store = lanyard_storage::open(dir.path().join("t.db").to_str().unwrap())
            .await
            .unwrap();
        let reads = Reads::new();
        let put = |version: i64| {
            Batch::new().with(Change::PutDocument(DocumentRecord {
                collection: "c".into(),
                key: "k".into(),
                version,
                body: serde_json::json!({ "v": version }),
            }))
        };
        // Background readers keep reads of the document running throughout.
        let stop = Arc::new(AtomicBool::new(false));
        let mut background = Vec::new();
        for _ in 0..8 {
            let (reads, store, stop) = (reads.clone(), Arc::clone(&store), Arc::clone(&stop));
            background.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    reads.document(&store, "c", "k").await.unwrap();
                }
            }));
        }
        for v in 1..=200 {
            store.commit(put(v)).await.unwrap();
            let seen = reads.document(&store, "c", "k").await.unwrap().unwrap();
            assert_eq!(seen.version, v, "a write committed before the call is seen");
        }
        stop.store(true, Ordering::SeqCst);
        for b in background {
            b.await.unwrap();
        }
        assert_eq!(reads.in_progress(), 0);
    }
}

//! The token endpoint's sign-in log, written with group commits.
//!
//! A token is handed out only once the record of its issue is durable, so every request
//! waits for its record's commit. Committing each record alone would make every token wait
//! for its own disk sync, one after another behind the single writer; instead a writer task
//! takes every record queued while the previous commit ran and commits them together, then
//! answers each waiter with the outcome of the commit that held its record.

use lanyard_platform::AppState;
use lanyard_storage::{Batch, Change, SignInRecord, StoreError};
use tokio::sync::{mpsc, oneshot};

/// Records waiting beyond this many make requests wait to enqueue (backpressure).
const QUEUE: usize = 4096;
/// Records in one commit at most.
const MAX_BATCH: usize = 512;

type Waiter = oneshot::Sender<Result<(), StoreError>>;

/// The queue in front of the sign-in log's writer task.
pub struct SignInLog {
    queue: mpsc::Sender<(SignInRecord, Waiter)>,
}

impl SignInLog {
    /// Starts the writer task on the current runtime; it ends when the log is dropped.
    pub fn start(state: AppState) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write(state, rx));
        Self { queue }
    }

    /// Writes `record`, returning once it is durable (or why it is not).
    pub async fn append(&self, record: SignInRecord) -> Result<(), StoreError> {
        let (done, outcome) = oneshot::channel();
        self.queue
            .send((record, done))
            .await
            .map_err(|_| StoreError::Unavailable("the sign-in log writer has stopped".into()))?;
        outcome
            .await
            .map_err(|_| StoreError::Unavailable("the sign-in log writer has stopped".into()))?
    }
}

async fn write(state: AppState, mut rx: mpsc::Receiver<(SignInRecord, Waiter)>) {
    let mut pending = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut pending, MAX_BATCH).await > 0 {
        let mut batch = Batch::new();
        let mut waiters = Vec::with_capacity(pending.len());
        for (record, waiter) in pending.drain(..) {
            batch.push(Change::AppendSignIn(record));
            waiters.push(waiter);
        }
        let outcome = state.commit(batch).await;
        if let Err(e) = &outcome {
            tracing::warn!(error = %e, records = waiters.len(), "sign-in records could not be written");
        }
        for waiter in waiters {
            // A waiter that went away (its client hung up) needs no answer.
            let _ = waiter.send(outcome.as_ref().map(|_| ()).map_err(same));
        }
    }
}

/// The same failure again, for each waiter of a shared commit.
fn same(e: &StoreError) -> StoreError {
    match e {
        StoreError::Conflict(m) => StoreError::Conflict(m.clone()),
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
        StoreError::Database(m) => StoreError::Database(m.clone()),
    }
}

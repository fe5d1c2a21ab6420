//! The one write path: load → plan → commit → on a lost race, load and plan again.
//!
//! A handler gives [`transact`] an attempt: a closure that reads what its plan needs and
//! returns a [`Step`] (a batch to commit and the answer it stands for, an answer with nothing
//! to write, or a preparatory batch after which it plans again). The combinator commits
//! through [`AppState::commit`], so every write goes through the same place: the store's
//! expectations, the commit feed applied to the in-memory views before the call returns,
//! and the revocation registration that holds off token mints while a revoking batch
//! commits. What a plane logs (the control plane's activity log) is part of its batches.
//!
//! A commit whose expectations failed ([`StoreError::Conflict`]) is a lost race: the
//! attempt runs again, up to [`Retry::attempts`] commits in all, with a short jittered
//! pause between tries when [`Retry::backoff`] says so. Any other store failure, and the
//! last lost race, become the plane's error through [`Retry::fail`].
//!
//! After-commit work that is not the store's (removing files a blob no longer names) runs on
//! the returned answer, which exists only once its batch is committed.

use std::future::Future;
use std::time::Duration;

use lanyard_storage::{Batch, StoreError};

use crate::AppState;

/// What one attempt decided.
pub enum Step<T> {
    /// Commit the batch; once it is committed, the answer is the write's result.
    Commit(Batch, T),
    /// Nothing to write: the answer as it is.
    Done(T),
    /// Commit this preparatory batch, then plan again (it counts in [`Attempt::prepared`]
    /// whether or not it commits).
    Then(Batch),
}

/// Where a write stands when an attempt starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attempt {
    /// Attempts run before this one (0 for the first).
    pub index: u32,
    /// [`Step::Then`] batches proposed before this attempt.
    pub prepared: u32,
}

impl Attempt {
    /// Whether this is the first attempt (what a caller read beforehand is still current).
    pub fn is_first(&self) -> bool {
        self.index == 0
    }
}

/// How a write retries, and how its failures become the plane's errors.
pub struct Retry<E> {
    /// Commits tried before a lost race is final.
    pub attempts: u32,
    /// Whether to pause (5 ms per lost race so far, plus up to 15 ms of jitter) before
    /// trying again, so racing writers spread out.
    pub backoff: bool,
    /// The plane's error for a store failure: any failure but a lost race, and the last
    /// lost race.
    pub fail: fn(StoreError) -> E,
}

impl<E> Clone for Retry<E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for Retry<E> {}

/// Runs `attempt` until its step is committed or needs no commit. See the module doc.
pub async fn transact<T, E, A, Fut>(state: &AppState, retry: Retry<E>, attempt: A) -> Result<T, E>
where
    A: FnMut(Attempt) -> Fut,
    Fut: Future<Output = Result<Step<T>, E>>,
{
    transact_checked(state, retry, || async { Ok(()) }, attempt).await
}

/// [`transact`], with `lost` run after every lost race before anything else: it may end the
/// write with its own error (a Key Vault write whose vault went away is a 404, not a race).
pub async fn transact_checked<T, E, A, Fut, L, LFut>(
    state: &AppState,
    retry: Retry<E>,
    mut lost: L,
    mut attempt: A,
) -> Result<T, E>
where
    A: FnMut(Attempt) -> Fut,
    Fut: Future<Output = Result<Step<T>, E>>,
    L: FnMut() -> LFut,
    LFut: Future<Output = Result<(), E>>,
{
    let mut at = Attempt::default();
    let mut losses = 0;
    loop {
        let (batch, answer) = match attempt(at).await? {
            Step::Done(answer) => return Ok(answer),
            Step::Commit(batch, answer) => (batch, Some(answer)),
            Step::Then(batch) => {
                at.prepared += 1;
                (batch, None)
            }
        };
        at.index += 1;
        match state.commit(batch).await {
            Ok(()) => {
                if let Some(answer) = answer {
                    return Ok(answer);
                }
            }
            Err(StoreError::Conflict(message)) => {
                lost().await?;
                losses += 1;
                if losses >= retry.attempts {
                    return Err((retry.fail)(StoreError::Conflict(message)));
                }
                if retry.backoff {
                    tokio::time::sleep(pause(losses)).await;
                }
            }
            Err(e) => return Err((retry.fail)(e)),
        }
    }
}

/// The pause after the `losses`-th lost race: 5 ms per loss and up to 15 ms of jitter.
fn pause(losses: u32) -> Duration {
    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0] % 16);
    Duration::from_millis(5 * u64::from(losses) + jitter)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use lanyard_storage::{Change, DocumentRecord, Expect};
    use std::sync::atomic::{AtomicU32, Ordering};

    const RETRY: Retry<String> = Retry {
        attempts: 3,
        backoff: false,
        fail,
    };

    fn fail(e: StoreError) -> String {
        match e {
            StoreError::Conflict(_) => "gave up".into(),
            e => e.to_string(),
        }
    }

    fn put(key: &str) -> Change {
        Change::PutDocument(DocumentRecord {
            collection: "c".into(),
            key: key.into(),
            version: 1,
            body: serde_json::json!({}),
        })
    }

    /// A batch that creates `key`, expecting it absent.
    fn create(key: &str) -> Batch {
        Batch::new()
            .expect(Expect::DocumentAbsent {
                collection: "c".into(),
                key: key.into(),
            })
            .with(put(key))
    }

    async fn state() -> (tempfile::TempDir, AppState) {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::state::tests::state_on(&dir.path().join("db.sqlite"), [7; 32]).await;
        (dir, state)
    }

    #[tokio::test]
    async fn a_lost_race_is_planned_again_up_to_the_attempts_then_fails_as_the_plane_says() {
        let (_dir, state) = state().await;
        state.commit(Batch::new().with(put("taken"))).await.unwrap();
        let (runs, losses) = (AtomicU32::new(0), AtomicU32::new(0));
        let out: Result<(), String> = transact_checked(
            &state,
            RETRY,
            || async {
                losses.fetch_add(1, Ordering::SeqCst);
                Ok(())
            },
            |at| {
                assert_eq!(at.index, runs.fetch_add(1, Ordering::SeqCst));
                async { Ok(Step::Commit(create("taken"), ())) }
            },
        )
        .await;
        assert_eq!(out, Err("gave up".to_string()));
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(losses.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn the_race_check_may_end_the_write_with_its_own_error() {
        let (_dir, state) = state().await;
        state.commit(Batch::new().with(put("taken"))).await.unwrap();
        let out: Result<(), String> = transact_checked(
            &state,
            RETRY,
            || async { Err("gone".to_string()) },
            |_| async { Ok(Step::Commit(create("taken"), ())) },
        )
        .await;
        assert_eq!(out, Err("gone".to_string()));
    }

    #[tokio::test]
    async fn a_plan_sees_what_the_lost_race_wrote_and_its_answer_comes_after_its_commit() {
        let (_dir, state) = state().await;
        let runs = AtomicU32::new(0);
        let out = transact(&state, RETRY, |at| {
            runs.fetch_add(1, Ordering::SeqCst);
            let state = &state;
            async move {
                if at.is_first() {
                    // Someone else creates the document between this read and the commit.
                    state.commit(Batch::new().with(put("k"))).await.unwrap();
                    return Ok(Step::Commit(create("k"), "first"));
                }
                let seen = state.store.document("c", "k").await.unwrap().is_some();
                assert!(seen);
                Ok(Step::Commit(create("other"), "second"))
            }
        })
        .await;
        assert_eq!(out, Ok("second"));
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert!(state.store.document("c", "other").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_preparatory_batch_is_committed_and_counted_then_the_plan_runs_again() {
        let (_dir, state) = state().await;
        let out = transact(&state, RETRY, |at| {
            let state = &state;
            async move {
                if at.prepared == 0 {
                    return Ok(Step::Then(create("mark")));
                }
                assert_eq!((at.index, at.prepared), (1, 1));
                assert!(state.store.document("c", "mark").await.unwrap().is_some());
                Ok(Step::Done(at.prepared))
            }
        })
        .await;
        assert_eq!(out, Ok(1));
    }

    #[test]
    fn pauses_grow_with_losses_and_stay_bounded() {
        for losses in 1..8 {
            let p = pause(losses).as_millis() as u64;
            assert!(p >= 5 * u64::from(losses) && p < 5 * u64::from(losses) + 16);
        }
    }
}

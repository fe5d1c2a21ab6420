//! The request-body deadline: the one place every plane's body reads are bounded in time.
//!
//! A body must keep up a minimum average rate (`request-body-min-bytes-per-sec`) once a grace
//! period (`request-body-timeout-secs`) has passed, both counted from when the handler first
//! reads it: the deadline is `first read + grace + bytes received / rate`. A client that sends
//! nothing is cut off after the grace period; one that trickles a byte now and then soon
//! after; an upload at or above the rate never. Where it is cut off the handler sees a read
//! error, and [`crate::app`] answers 408 in the plane's error shape whatever the handler made
//! of that error (with `Connection: close` on HTTP/1, as the rest of the body is unread).
//!
//! Cost: a body that is already complete (no body, or a `GET`) is not wrapped at all. Other
//! bodies take one wrapper and a shared flag; the timer is made only if a read has to wait.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use lanyard_platform::config::NetLimits;

/// The grace period and minimum rate of request bodies.
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadline {
    grace: Duration,
    min_rate: u64,
}

/// Set when a request's body was cut off for being too slow.
#[derive(Debug, Default)]
pub struct CutOff(AtomicBool);

impl CutOff {
    pub fn happened(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// What a handler reading a body that was cut off sees.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTooSlow;

impl BodyDeadline {
    pub fn new(limits: &NetLimits) -> Self {
        Self {
            grace: limits.request_body_timeout,
            min_rate: limits.request_body_min_rate.max(1),
        }
    }

    /// `request` with its body under the deadline, and the flag that tells whether it was cut
    /// off; a body already complete is left alone (`None`).
    pub fn apply(&self, request: Request) -> (Request, Option<Arc<CutOff>>) {
        if request.body().is_end_stream() {
            return (request, None);
        }
        let cut = Arc::new(CutOff::default());
        let (parts, body) = request.into_parts();
        let body = Body::new(Timed {
            inner: body,
            deadline: *self,
            started: None,
            received: 0,
            sleep: None,
            cut: Arc::clone(&cut),
            done: false,
        });
        (Request::from_parts(parts, body), Some(cut))
    }

    /// When a body first read at `started` that has delivered `received` bytes is cut off.
    fn due(&self, started: Instant, received: u64) -> Instant {
        let earned = Duration::from_millis(received.saturating_mul(1000) / self.min_rate);
        started + self.grace + earned
    }
}

/// A request body under a [`BodyDeadline`].
struct Timed {
    inner: Body,
    deadline: BodyDeadline,
    started: Option<Instant>,
    received: u64,
    /// Made the first time a read has to wait; reset as the deadline moves.
    sleep: Option<Pin<Box<Sleep>>>,
    cut: Arc<CutOff>,
    done: bool,
}

impl HttpBody for Timed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let started = *this.started.get_or_insert_with(Instant::now);
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received = this.received.saturating_add(data.len() as u64);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other),
            Poll::Pending => {
                let due = this.deadline.due(started, this.received);
                let sleep = match &mut this.sleep {
                    Some(sleep) => {
                        if sleep.deadline() != due {
                            sleep.as_mut().reset(due);
                        }
                        sleep
                    }
                    None => this.sleep.insert(Box::pin(tokio::time::sleep_until(due))),
                };
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.done = true;
                this.cut.0.store(true, Ordering::Release);
                tracing::info!(
                    received = this.received,
                    "request body cut off: slower than the minimum rate after the grace period"
                );
                Poll::Ready(Some(Err(axum::Error::new(BodyTooSlow))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.done {
            SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use futures::StreamExt;
    use http_body_util::BodyExt;

    fn deadline(grace: Duration, min_rate: u64) -> BodyDeadline {
        BodyDeadline { grace, min_rate }
    }

    /// A body that yields one byte every `every`, `count` times.
    fn trickle(every: Duration, count: usize) -> Body {
        let stream = futures::stream::iter(0..count).then(move |_| async move {
            tokio::time::sleep(every).await;
            Ok::<_, std::io::Error>(Bytes::from_static(b"x"))
        });
        Body::from_stream(stream)
    }

    fn request(body: Body) -> Request {
        Request::builder().method("POST").body(body).unwrap()
    }

    #[test]
    fn the_deadline_moves_with_the_bytes_received() {
        let d = deadline(Duration::from_secs(2), 1000);
        let t = Instant::now();
        assert_eq!(d.due(t, 0), t + Duration::from_secs(2));
        assert_eq!(d.due(t, 500), t + Duration::from_millis(2500));
        assert_eq!(
            d.due(t, u64::MAX),
            t + Duration::from_secs(2) + Duration::from_millis(u64::MAX / 1000)
        );
    }

    #[tokio::test]
    async fn a_trickle_is_cut_off() {
        // A byte every 50 ms for 10 s: more often than the 300 ms grace, far below the rate.
        let d = deadline(Duration::from_millis(300), 1024);
        let (req, cut) = d.apply(request(trickle(Duration::from_millis(50), 200)));
        let cut = cut.unwrap();
        let err = axum::body::to_bytes(req.into_body(), usize::MAX)
            .await
            .unwrap_err();
        assert!(format!("{err:?}").contains("BodyTooSlow"), "{err:?}");
        assert!(cut.happened());
    }

    #[tokio::test]
    async fn a_body_at_the_rate_is_never_cut_off() {
        // 50 bytes per second against a minimum of 2.
        let d = deadline(Duration::from_secs(1), 2);
        let (req, cut) = d.apply(request(trickle(Duration::from_millis(20), 25)));
        let bytes = axum::body::to_bytes(req.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(bytes.len(), 25);
        assert!(!cut.unwrap().happened());
    }

    #[tokio::test]
    async fn complete_bodies_are_not_wrapped() {
        let d = deadline(Duration::from_secs(1), 1);
        let (req, cut) = d.apply(request(Body::empty()));
        assert!(cut.is_none());
        assert!(req
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty());
    }
}

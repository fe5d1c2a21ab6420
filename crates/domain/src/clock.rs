//! Injected time. Everything that expires, rotates or is retained asks a [`Clock`], so
//! tests move time forward instead of sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use time::OffsetDateTime;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> OffsetDateTime;

    /// Seconds since the Unix epoch.
    fn unix(&self) -> i64 {
        self.now().unix_timestamp()
    }
}

/// The machine's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that only moves when told to; shareable across threads.
#[derive(Debug, Clone)]
pub struct ManualClock {
    nanos: Arc<AtomicI64>,
}

impl ManualClock {
    pub fn at_unix(seconds: i64) -> Self {
        Self {
            nanos: Arc::new(AtomicI64::new(seconds.saturating_mul(1_000_000_000))),
        }
    }

    pub fn advance(&self, by: std::time::Duration) {
        let by = i64::try_from(by.as_nanos()).unwrap_or(i64::MAX);
        self.nanos.fetch_add(by, Ordering::SeqCst);
    }

    pub fn set_unix(&self, seconds: i64) {
        self.nanos
            .store(seconds.saturating_mul(1_000_000_000), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        let nanos = self.nanos.load(Ordering::SeqCst);
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

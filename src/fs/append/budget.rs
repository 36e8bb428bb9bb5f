//! The global bound on bytes accepted but not yet appended. Writers wait above it
//! (backpressure, never loss), and a waiting writer puts the mount under pressure, which makes
//! every stream send what it holds at once instead of waiting for its flush interval.

use std::sync::{Mutex, MutexGuard};

use tokio::sync::{watch, Notify};

pub struct DirtyBudget {
    limit: u64,
    used: Mutex<u64>,
    freed: Notify,
    /// Bumped whenever a writer has to wait; streams watch it.
    pressure: watch::Sender<u64>,
}

impl DirtyBudget {
    pub fn new(limit: u64) -> Self {
        DirtyBudget {
            limit,
            used: Mutex::new(0),
            freed: Notify::new(),
            pressure: watch::channel(0).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, u64> {
        self.used.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `n` more bytes fit (a single write larger than the limit passes alone).
    pub async fn acquire(&self, n: u64) {
        let mut announced = false;
        loop {
            let freed = self.freed.notified();
            {
                let mut used = self.lock();
                if *used == 0 || *used + n <= self.limit {
                    *used += n;
                    return;
                }
            }
            if !announced {
                announced = true;
                self.pressure.send_modify(|v| *v += 1);
            }
            freed.await;
        }
    }

    pub fn release(&self, n: u64) {
        let mut used = self.lock();
        *used = used.saturating_sub(n);
        drop(used);
        self.freed.notify_waiters();
    }

    pub fn used(&self) -> u64 {
        *self.lock()
    }

    /// A receiver that changes whenever a writer starts waiting for room.
    pub fn pressure(&self) -> watch::Receiver<u64> {
        self.pressure.subscribe()
    }
}

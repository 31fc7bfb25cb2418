//! The [`Compute`] port on tokio's blocking threads: at most `width` jobs at once, one at a
//! time per lane. Both waits are first come, first served, so a lane with a queue of jobs
//! takes its turn between the others' instead of before them.

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::Semaphore;
use wharf_core::CoreError;
use wharf_core::ports::{Compute, Job};

/// Jobs on the blocking threads, a bounded number at once and one per lane.
pub struct Lanes {
    pool: Arc<Semaphore>,
    lanes: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Lanes {
    /// Runs at most `width` jobs at once (at least one).
    pub fn new(width: usize) -> Lanes {
        Lanes {
            pool: Arc::new(Semaphore::new(width.max(1))),
            lanes: Mutex::default(),
        }
    }

    /// As many jobs at once as the machine has cores.
    pub fn per_core() -> Lanes {
        Lanes::new(std::thread::available_parallelism().map_or(2, usize::from))
    }

    fn lane(&self, name: &str) -> Arc<Semaphore> {
        let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
        lanes
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(1)))
            .clone()
    }

    /// Forgets `name` when no job holds or waits for it.
    fn release(&self, name: &str, lane: Arc<Semaphore>) {
        let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
        // The map's reference and ours.
        if Arc::strong_count(&lane) == 2 {
            lanes.remove(name);
        }
    }

    /// Lanes known now (holding or waiting for a turn).
    pub fn lanes(&self) -> usize {
        self.lanes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[async_trait]
impl Compute for Lanes {
    async fn run(&self, lane: &str, job: Job) -> Result<(), CoreError> {
        let turn = self.lane(lane);
        let ran = async {
            let _lane = turn.acquire().await.map_err(CoreError::internal)?;
            let _pool = self.pool.acquire().await.map_err(CoreError::internal)?;
            tokio::task::spawn_blocking(job)
                .await
                .map_err(CoreError::internal)
        }
        .await;
        self.release(lane, turn);
        ran
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use wharf_core::ports::off_runtime;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_lane_runs_one_job_at_a_time_and_others_pass_it() {
        let lanes = Arc::new(Lanes::new(2));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut noisy = Vec::new();
        for _ in 0..4 {
            let (lanes, running, most) = (lanes.clone(), running.clone(), most.clone());
            noisy.push(tokio::spawn(async move {
                off_runtime(lanes.as_ref(), "noisy", move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(50));
                    running.fetch_sub(1, Ordering::SeqCst);
                })
                .await
            }));
        }
        // The quiet lane's job gets the pool's second place while the noisy lane queues.
        let quiet = off_runtime(lanes.as_ref(), "quiet", || 7).await;
        assert_eq!(quiet.ok(), Some(7));
        let finished = noisy.iter().filter(|t| t.is_finished()).count();
        assert!(
            finished < 4,
            "the quiet job waited for the whole noisy queue"
        );
        for t in noisy {
            assert!(matches!(t.await, Ok(Ok(()))));
        }
        assert_eq!(most.load(Ordering::SeqCst), 1, "one job at a time per lane");
        assert_eq!(lanes.lanes(), 0, "lanes are forgotten when idle");
    }
}

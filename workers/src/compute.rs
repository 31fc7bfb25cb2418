//! The [`Compute`] port on threads of its own: at most `width` jobs at once, one at a time
//! per lane. Both waits are first come, first served, so a lane with a queue of jobs takes
//! its turn between the others' instead of before them.
//!
//! The threads run at a lower scheduling priority than the rest of the process (on Linux,
//! `nice` 10 above it): a tenant's expensive expressions take the cores only when requests,
//! database writes and deliveries leave them free.

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{Semaphore, oneshot};
use wharf_core::CoreError;
use wharf_core::ports::{Compute, Job};

/// How much lower than the process the compute threads are scheduled (Linux `nice`).
pub const NICER_BY: i32 = 10;

/// A job and where to say that it ran (or panicked).
type Task = (Job, oneshot::Sender<std::thread::Result<()>>);

/// Jobs on the compute threads, a bounded number at once and one per lane.
pub struct Lanes {
    pool: Arc<Semaphore>,
    lanes: Mutex<HashMap<String, Arc<Semaphore>>>,
    tasks: mpsc::Sender<Task>,
}

impl Lanes {
    /// Runs at most `width` jobs at once (at least one), on as many threads.
    pub fn new(width: usize) -> Lanes {
        let width = width.max(1);
        let (tasks, queue) = mpsc::channel::<Task>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..width {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("wharf-compute-{n}"))
                .spawn(move || run_tasks(&queue));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a compute thread");
            }
        }
        Lanes {
            pool: Arc::new(Semaphore::new(width)),
            lanes: Mutex::default(),
            tasks,
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
            let (done, ran) = oneshot::channel();
            self.tasks
                .send((job, done))
                .map_err(|_| CoreError::internal("the compute threads have stopped"))?;
            match ran.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(CoreError::internal("a compute job panicked")),
                Err(_) => Err(CoreError::internal("a compute job was dropped")),
            }
        }
        .await;
        self.release(lane, turn);
        ran
    }
}

/// A compute thread: lowers its own priority, then runs tasks until the pool is dropped.
fn run_tasks(queue: &Mutex<mpsc::Receiver<Task>>) {
    lower_priority(NICER_BY);
    loop {
        // The lock is held only while waiting: one idle thread waits, the others wait for it.
        let task = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok((job, done)) = task else { return };
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        // The caller may have gone (its request was cancelled): nothing to tell.
        let _ = done.send(ran);
    }
}

/// Schedules the calling thread `by` below the process (Linux: a thread's nice value is its
/// own). Where that is refused, the thread runs at the process's priority.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn lower_priority(by: i32) {
    // SAFETY: getpriority/setpriority with PRIO_PROCESS and the calling thread's id read and
    // write only that thread's scheduling priority.
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        if libc::setpriority(libc::PRIO_PROCESS, tid, (now + by).min(19)) != 0 {
            tracing::debug!("cannot lower a thread's priority");
        }
    }
}

/// The calling thread's nice value (Linux), as the scheduler reports it.
#[cfg(target_os = "linux")]
pub fn thread_nice() -> Option<i64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let after_name = stat.rsplit(')').next()?;
    // Fields after the name start at the third; `nice` is the nineteenth.
    after_name.split_whitespace().nth(19 - 3)?.parse().ok()
}

/// Schedules the calling thread `by` below the process (only on Linux).
#[cfg(not(target_os = "linux"))]
pub fn lower_priority(by: i32) {
    let _ = by;
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

    #[tokio::test]
    async fn a_panicking_job_is_an_error_and_the_pool_goes_on() {
        let lanes = Lanes::new(1);
        let failed = off_runtime(&lanes, "a", || -> u8 { panic!("a job's bug") }).await;
        assert!(failed.is_err());
        assert_eq!(off_runtime(&lanes, "a", || 3).await.ok(), Some(3));
    }

    /// The `nice` value of the calling thread, from `/proc` (field 19 of its `stat`).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn jobs_run_below_the_priority_of_the_threads_serving_requests() {
        let lanes = Lanes::new(1);
        let serving = thread_nice().expect("the serving thread's nice value");
        let computing = off_runtime(&lanes, "a", thread_nice).await.ok().flatten();
        assert_eq!(computing, Some((serving + i64::from(NICER_BY)).min(19)));
    }
}

//! The threads phase runs execute on, reused from run to run.
//!
//! A run executes off the caller's thread so the caller can stream its logs and give up on it at
//! the deadline. Starting a thread per run (an 8 MiB stack, and wasmtime's per-thread signal
//! stack and trap handler set-up) cost as much as instantiating and calling a small component,
//! so idle workers are kept. A run that outlives its deadline keeps its worker busy: the host
//! abandons that worker (it exits once its job ends) and later runs start or take another.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::Mutex;

/// One unit of work for a worker: a whole phase run.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// How many idle workers a host keeps; more only happen with concurrent runs.
const MAX_IDLE: usize = 4;

/// A worker thread, ready for one job at a time. Dropping it lets the thread exit after the job
/// it is running, if any.
pub(crate) struct Worker {
    jobs: mpsc::Sender<Job>,
}

impl Worker {
    fn start() -> std::io::Result<Worker> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("stagecraft-phase".into())
            // Host calls from wasm run on this thread's stack.
            .stack_size(8 << 20)
            .spawn(move || {
                for job in queue {
                    // A panicking job must not take the worker down with it: the run it belongs
                    // to sees its result channel close and reports that.
                    let _ = catch_unwind(AssertUnwindSafe(job));
                }
            })?;
        Ok(Worker { jobs })
    }

    /// Hand `job` to the thread. Fails only if the thread is gone, which a caught panic cannot
    /// cause; the job is returned so the caller can say what happened.
    pub(crate) fn submit(&self, job: Job) -> Result<(), Job> {
        self.jobs.send(job).map_err(|e| e.0)
    }
}

/// How long a thread waiting for a phase's result polls before it sleeps. A no-op phase is
/// done in about 35 µs, but waking a sleeping thread costs about 80 µs on a virtual machine
/// whose other core is idle (measured with bench-plugin-host: 117 µs per run idle, 35 µs with
/// the other core busy): short phases come back while the caller still polls.
const SPIN: std::time::Duration = std::time::Duration::from_micros(200);

/// `rx.recv_timeout(wait)`, polling for the first [`SPIN`] of it before sleeping.
pub(crate) fn recv_spinning<T>(
    rx: &mpsc::Receiver<T>,
    wait: std::time::Duration,
) -> Result<T, mpsc::RecvTimeoutError> {
    let start = std::time::Instant::now();
    let spin = SPIN.min(wait);
    while start.elapsed() < spin {
        match rx.try_recv() {
            Ok(value) => return Ok(value),
            Err(mpsc::TryRecvError::Disconnected) => {
                return Err(mpsc::RecvTimeoutError::Disconnected)
            }
            Err(mpsc::TryRecvError::Empty) => std::hint::spin_loop(),
        }
    }
    rx.recv_timeout(wait.saturating_sub(start.elapsed()))
}

/// The idle workers of one host.
#[derive(Default)]
pub(crate) struct Workers {
    idle: Mutex<Vec<Worker>>,
}

impl Workers {
    /// An idle worker, or a new one.
    pub(crate) fn take(&self) -> std::io::Result<Worker> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        match idle {
            Some(worker) => Ok(worker),
            None => Worker::start(),
        }
    }

    /// Return a worker whose job has finished.
    pub(crate) fn give_back(&self, worker: Worker) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_IDLE {
                idle.push(worker);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_runs_jobs_in_turn_and_survives_a_panic() {
        let workers = Workers::default();
        let worker = workers.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let first = std::thread::current().id();
        let tx2 = tx.clone();
        worker
            .submit(Box::new(move || {
                tx2.send(std::thread::current().id()).unwrap()
            }))
            .ok()
            .unwrap();
        let thread = rx.recv().unwrap();
        assert_ne!(thread, first, "jobs run off the caller's thread");

        worker
            .submit(Box::new(|| panic!("job panics")))
            .ok()
            .unwrap();
        workers.give_back(worker);
        let worker = workers.take().unwrap();
        worker
            .submit(Box::new(move || {
                tx.send(std::thread::current().id()).unwrap()
            }))
            .ok()
            .unwrap();
        assert_eq!(
            rx.recv().unwrap(),
            thread,
            "the same thread, alive after the panic"
        );
    }
}

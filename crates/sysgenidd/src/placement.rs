//! Where the page-store thread runs. The serving thread hands it each bump's store and goes back
//! to sleep in its next read of `/dev/fuse`. Left to the scheduler, the woken page-store thread
//! lands on another, idle vCPU, and the trigger's answer, which it sends, waits for that vCPU to
//! wake. So it is kept to the CPU the serving thread handed the job over on, and as
//! `SCHED_BATCH` it does not preempt the serving thread there: it runs once that thread sleeps.
//! Both calls are best effort; where a sandbox refuses them the thread runs wherever the
//! scheduler puts it, as before.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use rustix::process::Pid;
use rustix::thread::CpuSet;

/// Makes the calling thread `SCHED_BATCH`: the same share of the CPU as before, but a wakeup
/// never preempts the running thread; it waits for that thread to sleep or for the next tick.
fn never_preempt_on_wakeup() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid `sched_param` for the duration of the call, and pid 0 is the
    // calling thread; the call changes nothing but that thread's scheduling policy.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What a [`Follower`] knows of its worker thread: its id while the worker may be placed (0
/// otherwise), and whether it is waiting for a job.
#[derive(Debug, Clone, Default)]
pub struct WorkerSlot(Arc<SlotState>);

#[derive(Debug, Default)]
struct SlotState {
    tid: AtomicI32,
    waiting: AtomicBool,
}

impl WorkerSlot {
    /// Called on the worker thread as it starts: makes it `SCHED_BATCH` and, if that worked, lets
    /// the follower place it until the returned guard drops, as the thread ends. Pinned but free
    /// to preempt, it would gain nothing, so a refusal leaves it unplaced.
    pub fn enter(&self) -> io::Result<Entered> {
        never_preempt_on_wakeup()?;
        let tid = rustix::thread::gettid().as_raw_nonzero().get();
        self.0.tid.store(tid, Ordering::Release);
        Ok(Entered(self.clone()))
    }

    /// Called on the worker thread: it is about to wait for its next job, or has one.
    pub fn set_waiting(&self, waiting: bool) {
        self.0.waiting.store(waiting, Ordering::Release);
    }

    /// The worker's id, while it waits for a job: moving a running thread would make the caller
    /// wait for the migration.
    fn waiting_worker(&self) -> Option<Pid> {
        if !self.0.waiting.load(Ordering::Acquire) {
            return None;
        }
        Pid::from_raw(self.0.tid.load(Ordering::Acquire))
    }
}

/// The worker may be placed while this lives; dropping it (the thread's end) forgets the id
/// before the kernel can give it to another thread.
#[derive(Debug)]
pub struct Entered(WorkerSlot);

impl Drop for Entered {
    fn drop(&mut self) {
        self.0.0.tid.store(0, Ordering::Release);
    }
}

/// Keeps a worker thread on the CPU of the thread that hands it work.
#[derive(Debug)]
pub struct Follower {
    worker: WorkerSlot,
    kept_on: Option<usize>,
    refused: bool,
}

impl Follower {
    /// Follows the worker of `worker`, once it has entered it.
    pub fn new(worker: WorkerSlot) -> Follower {
        Follower {
            worker,
            kept_on: None,
            refused: false,
        }
    }

    /// Keeps the worker, if it is waiting for a job, to the CPU the caller runs on now. Costs a
    /// system call only when that CPU changed. After a refusal it frees the worker to run on
    /// any CPU again and never tries again.
    pub fn keep_on_this_cpu(&mut self) {
        let cpu = rustix::thread::sched_getcpu();
        if self.refused || self.kept_on == Some(cpu) || cpu >= CpuSet::MAX_CPU {
            return;
        }
        let Some(worker) = self.worker.waiting_worker() else {
            return;
        };
        let mut cpus = CpuSet::new();
        cpus.set(cpu);
        match rustix::thread::sched_setaffinity(Some(worker), &cpus) {
            Ok(()) => self.kept_on = Some(cpu),
            Err(e) => self.give_up(worker, e),
        }
    }

    /// Frees `worker` to run on any CPU again, if it was kept to one, and stops placing it.
    fn give_up(&mut self, worker: Pid, error: rustix::io::Errno) {
        self.refused = true;
        if self.kept_on.take().is_some() {
            let _ = rustix::thread::sched_setaffinity(Some(worker), &every_cpu());
        }
        tracing::info!(%error, "the page-store thread runs where the scheduler puts it");
    }
}

/// Every CPU the set can name; the kernel keeps those the thread may use.
fn every_cpu() -> CpuSet {
    let mut cpus = CpuSet::new();
    for cpu in 0..CpuSet::MAX_CPU {
        cpus.set(cpu);
    }
    cpus
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// Field 41 of `/proc/self/task/<tid>/stat`: the scheduling policy.
    fn policy(tid: Pid) -> u32 {
        let path = format!("/proc/self/task/{}/stat", tid.as_raw_nonzero());
        let stat = std::fs::read_to_string(path).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        // Fields from 3 on; the policy is field 41.
        after_name.split(' ').nth(41 - 3).unwrap().parse().unwrap()
    }

    fn allowed_cpus(tid: Option<Pid>) -> Vec<usize> {
        let allowed = rustix::thread::sched_getaffinity(tid).unwrap();
        (0..CpuSet::MAX_CPU)
            .filter(|&c| allowed.is_set(c))
            .collect()
    }

    /// A worker thread that enters `slot`, says it waits for a job, and ends when told.
    struct Worker {
        tid: Pid,
        end: mpsc::Sender<()>,
        thread: std::thread::JoinHandle<()>,
    }

    impl Worker {
        fn start(slot: &WorkerSlot) -> Worker {
            let (slot, (said, tid), (end, ended)) =
                (slot.clone(), mpsc::channel(), mpsc::channel());
            let thread = std::thread::spawn(move || {
                let _entered = slot.enter().expect("SCHED_BATCH is refused");
                slot.set_waiting(true);
                said.send(rustix::thread::gettid()).unwrap();
                let _ = ended.recv();
            });
            let tid = tid.recv().unwrap();
            Worker { tid, end, thread }
        }

        fn end(self) {
            self.end.send(()).unwrap();
            self.thread.join().unwrap();
        }
    }

    #[test]
    fn an_entered_worker_is_batch_and_is_kept_to_the_cpu_its_follower_ran_on() {
        let slot = WorkerSlot::default();
        let worker = Worker::start(&slot);
        assert_eq!(policy(worker.tid), libc::SCHED_BATCH as u32);

        let mut follower = Follower::new(slot);
        follower.keep_on_this_cpu();
        let cpu = follower.kept_on.expect("kept on a CPU");
        assert_eq!(allowed_cpus(Some(worker.tid)), [cpu], "only that CPU");
        worker.end();
    }

    #[test]
    fn a_worker_busy_with_a_job_or_ended_is_left_where_it_runs() {
        let slot = WorkerSlot::default();
        let worker = Worker::start(&slot);
        slot.set_waiting(false);
        let mut follower = Follower::new(slot.clone());
        follower.keep_on_this_cpu();
        assert_eq!(follower.kept_on, None, "busy: not moved");
        assert_eq!(allowed_cpus(Some(worker.tid)), allowed_cpus(None));

        worker.end();
        slot.set_waiting(true);
        follower.keep_on_this_cpu();
        assert_eq!(follower.kept_on, None, "ended: its id is forgotten");
        assert!(!follower.refused);
    }

    #[test]
    fn a_refusal_frees_the_worker_and_placing_stops() {
        let slot = WorkerSlot::default();
        let worker = Worker::start(&slot);
        let mut follower = Follower::new(slot);
        follower.keep_on_this_cpu();
        assert!(follower.kept_on.is_some());

        follower.give_up(worker.tid, rustix::io::Errno::PERM);
        assert_eq!(
            allowed_cpus(Some(worker.tid)),
            allowed_cpus(None),
            "free to run on any CPU the process may use"
        );
        follower.keep_on_this_cpu();
        assert_eq!(follower.kept_on, None, "never tried again");
        worker.end();
    }
}

//! Where the page-store thread runs. The serving thread hands it each bump's store and goes back
//! to sleep in its next read of `/dev/fuse`. Left to the scheduler, the woken page-store thread
//! lands on another, idle vCPU, and the trigger's answer, which it sends, waits for that vCPU to
//! wake. So it is kept to the CPU the serving thread handed the job over on, and as
//! `SCHED_BATCH` it does not preempt the serving thread there: it runs once that thread sleeps.
//! Both calls are best effort; where a sandbox refuses them the thread runs wherever the
//! scheduler puts it, as before.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use rustix::process::Pid;
use rustix::thread::CpuSet;

/// Makes the calling thread `SCHED_BATCH`: the same share of the CPU as before, but a wakeup
/// never preempts the running thread; it waits for that thread to sleep or for the next tick.
pub fn never_preempt_on_wakeup() -> io::Result<()> {
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

/// A thread's id, known once the thread has said it (0 before).
#[derive(Debug, Clone, Default)]
pub struct ThreadId(Arc<AtomicI32>);

impl ThreadId {
    /// Records the calling thread's id.
    pub fn set_to_this_thread(&self) {
        let tid = rustix::thread::gettid().as_raw_nonzero().get();
        self.0.store(tid, Ordering::Release);
    }

    fn get(&self) -> Option<Pid> {
        Pid::from_raw(self.0.load(Ordering::Acquire))
    }
}

/// Keeps a worker thread on the CPU of the thread that hands it work.
#[derive(Debug)]
pub struct Follower {
    worker: ThreadId,
    kept_on: Option<usize>,
    refused: bool,
}

impl Follower {
    /// Follows `worker`, which records its id when it starts.
    pub fn new(worker: ThreadId) -> Follower {
        Follower {
            worker,
            kept_on: None,
            refused: false,
        }
    }

    /// Keeps the worker to the CPU the caller runs on now. Costs a system call only when that
    /// CPU changed; after a refusal (a seccomp filter, say) it never tries again.
    pub fn keep_on_this_cpu(&mut self) {
        let cpu = rustix::thread::sched_getcpu();
        if self.refused || self.kept_on == Some(cpu) {
            return;
        }
        let Some(worker) = self.worker.get() else {
            return;
        };
        let mut cpus = CpuSet::new();
        cpus.set(cpu);
        match rustix::thread::sched_setaffinity(Some(worker), &cpus) {
            Ok(()) => self.kept_on = Some(cpu),
            Err(e) => {
                self.refused = true;
                tracing::info!(error = %e, "the page-store thread runs where the scheduler puts it");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Field 41 of `/proc/self/task/<tid>/stat`: the scheduling policy.
    fn policy(tid: Pid) -> u32 {
        let stat =
            std::fs::read_to_string(format!("/proc/self/task/{}/stat", tid.as_raw_nonzero()))
                .unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        // Fields from 3 on; the policy is field 41.
        after_name.split(' ').nth(41 - 3).unwrap().parse().unwrap()
    }

    #[test]
    fn a_follower_keeps_its_worker_to_the_callers_cpu_and_the_worker_is_batch() {
        let id = ThreadId::default();
        let (started, done) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
        let worker = {
            let id = id.clone();
            let (started, done) = (started.0, done.1);
            std::thread::spawn(move || {
                id.set_to_this_thread();
                started.send(never_preempt_on_wakeup().is_ok()).unwrap();
                let _ = done.recv();
            })
        };
        assert!(started.1.recv().unwrap(), "SCHED_BATCH is refused");
        let tid = id.get().expect("the worker said its id");
        assert_eq!(policy(tid), libc::SCHED_BATCH as u32);

        let mut follower = Follower::new(id);
        follower.keep_on_this_cpu();
        let cpu = follower.kept_on.expect("kept on a CPU");
        let allowed = rustix::thread::sched_getaffinity(Some(tid)).unwrap();
        let cpus: Vec<usize> = (0..CpuSet::MAX_CPU)
            .filter(|&c| allowed.is_set(c))
            .collect();
        assert_eq!(cpus, [cpu], "the worker may run on the caller's CPU only");
        done.0.send(()).unwrap();
        worker.join().unwrap();
    }

    #[test]
    fn a_follower_of_a_thread_not_started_yet_does_nothing() {
        let mut follower = Follower::new(ThreadId::default());
        follower.keep_on_this_cpu();
        assert_eq!(follower.kept_on, None);
        assert!(!follower.refused);
    }
}

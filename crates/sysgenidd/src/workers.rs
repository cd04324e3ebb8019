//! The two jobs that may wait on a disk or on the kernel run on threads of their own, so the
//! thread that reads `/dev/fuse` never waits on them: the persist of a new generation with its
//! freshly drawn ID and their store into the page file (a frozen or slow state directory), and
//! the device page store (`FUSE_NOTIFY_STORE` waits for a page lock that a faulting mapper holds
//! until the serving thread answers its fill). A state directory in memory (tmpfs, the default
//! `/run/sysgenid`) has no disk to wait on: there the persist runs inline ([`start_persist`]).
//!
//! Each worker takes jobs in order from a queue and ends when the dispatcher drops its end. The
//! persist worker reports each outcome through the inbox; the page-store worker counts the
//! jobs it has written and wakes the loop only when the loop asked ([`Progress`]).

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::Duration;

use sysgenid_fuse::{Channel, Sent};

use crate::effects::{DeviceStore, Persist, Persisting, StoreJob, Storing};
use crate::inbox::{Inbox, Message};
use crate::page::PageFile;
use crate::placement::{Follower, WorkerSlot};
use crate::state::{self, StateFile};
use sysgenid_abi::GenerationId;

/// Draws the new generation's ID from the kernel, persists both, then stores them into the page
/// file, on its own thread; the outcome (the ID) comes back as `Message::Persisted`. A store
/// into the page file's mapping faults, and so waits, while its file system is frozen.
#[derive(Debug)]
pub struct PersistWorker {
    jobs: mpsc::Sender<u32>,
}

impl PersistWorker {
    /// Starts the thread that owns `state` and `page`.
    pub fn start(
        mut state: StateFile,
        page: Option<PageFile>,
        inbox: Inbox,
    ) -> std::io::Result<PersistWorker> {
        let (jobs, queue) = mpsc::channel::<u32>();
        std::thread::Builder::new()
            .name("persist".to_owned())
            .spawn(move || {
                for generation in queue {
                    let result = persist_and_store(&mut state, page.as_ref(), generation);
                    inbox.send(Message::Persisted(result));
                }
            })?;
        Ok(PersistWorker { jobs })
    }
}

/// Draws the ID of `generation`, persists both, then stores them into the page file.
fn persist_and_store(
    state: &mut StateFile,
    page: Option<&PageFile>,
    generation: u32,
) -> Result<GenerationId, String> {
    let id = state::draw_id().map_err(|e| format!("cannot draw a generation ID: {e}"))?;
    state.persist(generation, id).map_err(|e| e.to_string())?;
    if let Some(page) = page {
        page.store(generation, id);
    }
    Ok(id)
}

/// Persists on the serving thread itself, for a state directory in memory (tmpfs or ramfs):
/// a fixed-length `pwrite` and a store into a mapped page, with no `fdatasync`, which no disk
/// can stall and no `fsfreeze` can freeze (tmpfs refuses it). It saves the two thread hand-offs
/// of [`PersistWorker`].
#[derive(Debug)]
pub struct InlinePersist {
    state: StateFile,
    page: Option<PageFile>,
}

impl Persist for InlinePersist {
    fn persist(&mut self, generation: u32) -> Persisting {
        Persisting::Done(persist_and_store(
            &mut self.state,
            self.page.as_ref(),
            generation,
        ))
    }
}

/// The persist for `state`: inline where its directory is in memory and the kernel's random
/// pool is ready (so drawing an ID cannot wait), else on a [`PersistWorker`].
pub fn start_persist(
    state: StateFile,
    page: Option<PageFile>,
    inbox: Inbox,
) -> std::io::Result<Box<dyn Persist>> {
    let random_ready =
        rustix::rand::getrandom(&mut [0u8; 1], rustix::rand::GetRandomFlags::NONBLOCK).is_ok();
    if random_ready && state.in_memory()? {
        return Ok(Box::new(InlinePersist { state, page }));
    }
    Ok(Box::new(PersistWorker::start(state, page, inbox)?))
}

impl Persist for PersistWorker {
    fn persist(&mut self, generation: u32) -> Persisting {
        match self.jobs.send(generation) {
            Ok(()) => Persisting::Started,
            Err(_) => Persisting::Done(Err("the persist thread is gone".to_owned())),
        }
    }
}

/// Writes device page stores on its own thread, each job's messages in order, and counts the
/// jobs written; it wakes the loop for one only when the loop has asked. The thread runs on the
/// CPU the loop handed it the job on, once the loop sleeps ([`crate::placement`]).
#[derive(Debug)]
pub struct StoreWorker {
    jobs: Arc<JobQueue<StoreJob>>,
    progress: Arc<Progress>,
    /// For a job's kernel sends when the thread is gone.
    channel: Arc<Channel>,
    follower: Follower,
}

/// Between the page-store thread and the loop: the jobs written, and whether the loop waits
/// for the next one. Both sides write one and then read the other, all sequentially
/// consistent, so at least one sees the other's write: a job written while the loop goes to
/// sleep is counted before it sleeps or wakes it (no lost wakeup), and a job nothing waits on
/// costs the loop no wake.
#[derive(Debug, Default)]
struct Progress {
    written: AtomicU64,
    wake_wanted: AtomicBool,
}

impl Progress {
    /// The writer's side, after each job.
    fn job_written(&self, wake: impl FnOnce()) {
        self.written.fetch_add(1, Ordering::SeqCst);
        if self.wake_wanted.load(Ordering::SeqCst) {
            wake();
        }
    }

    /// The loop's side: say whether to be woken, then read the count.
    fn written(&self, wake_me: bool) -> u64 {
        self.wake_wanted.store(wake_me, Ordering::SeqCst);
        self.written.load(Ordering::SeqCst)
    }
}

/// How long the first store waits for a previous serving process that is still exiting.
pub const GATE_LIMIT: Duration = Duration::from_secs(5);

impl StoreWorker {
    /// Starts the thread that writes to `channel`. A store can sleep in the kernel until a
    /// page fill is answered, past this process's death, so the thread keeps its own
    /// descriptor table with only the connection and the inbox (see [`crate::thread_fds`]).
    ///
    /// With a `gate`, the first store waits until it opens (or [`GATE_LIMIT`]): a previous
    /// serving process still exiting may have a store of its own asleep, which lands once this
    /// process answers the page fill it waits for; a newer page stored before it would be
    /// overwritten with an older one.
    pub fn start(
        channel: Arc<Channel>,
        inbox: Inbox,
        gate: Option<mpsc::Receiver<()>>,
    ) -> std::io::Result<StoreWorker> {
        let jobs: Arc<JobQueue<StoreJob>> = Arc::new(JobQueue::default());
        let progress = Arc::new(Progress::default());
        let thread = WorkerSlot::default();
        let (queue, writer, told, me) = (
            Arc::clone(&jobs),
            Arc::clone(&channel),
            Arc::clone(&progress),
            thread.clone(),
        );
        std::thread::Builder::new()
            .name("page-store".to_owned())
            .spawn(move || {
                let _closed = Closer(&*queue);
                let _placed = me
                    .enter()
                    .inspect_err(|e| tracing::info!(error = %e, "the page-store thread stays unplaced"));
                if let Err(e) = crate::thread_fds::keep_only(&[writer.as_fd(), inbox.wake_fd()]) {
                    tracing::warn!(error = %e, "the page-store thread shares the process's files");
                }
                if let Some(gate) = gate
                    && gate.recv_timeout(GATE_LIMIT) == Err(mpsc::RecvTimeoutError::Timeout)
                {
                    tracing::warn!(
                        "the previous serving process has not exited in {GATE_LIMIT:?}; storing the page anyway"
                    );
                }
                loop {
                    me.set_waiting(true);
                    let Some(job) = queue.take() else { break };
                    me.set_waiting(false);
                    send_all(&writer, &job.page, "cannot store the device page");
                    send_all(&writer, &job.then, "cannot send to the kernel");
                    told.job_written(|| inbox.wake());
                }
            })?;
        Ok(StoreWorker {
            jobs,
            progress,
            channel,
            follower: Follower::new(thread),
        })
    }
}

impl Drop for StoreWorker {
    fn drop(&mut self) {
        self.jobs.close();
    }
}

fn send_all(channel: &Channel, messages: &[Vec<u8>], failure: &str) {
    for message in messages {
        match channel.send(message) {
            Ok(Sent::Delivered | Sent::NotFound | Sent::Unmounted) => {}
            Err(e) => tracing::warn!(error = %e, "{failure}"),
        }
    }
}

impl DeviceStore for StoreWorker {
    fn store(&mut self, job: StoreJob) -> Storing {
        self.follower.keep_on_this_cpu();
        match self.jobs.put(job) {
            Ok(()) => Storing::Started,
            Err(job) => {
                tracing::warn!("the page-store thread is gone; device mappings miss this value");
                send_all(&self.channel, &job.then, "cannot send to the kernel");
                Storing::Done
            }
        }
    }

    fn written(&self, wake_me: bool) -> u64 {
        self.progress.written(wake_me)
    }
}

/// Closes a queue when its worker ends, even by a panic: jobs put after that are refused (their
/// sends then go out from the serving thread) instead of queued for no one.
struct Closer<'a, T>(&'a JobQueue<T>);

impl<T> Drop for Closer<'_, T> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// A job queue for one worker thread. The worker is woken after the lock is dropped, so on a
/// single vCPU it never runs only to wait for the lock its waker still holds (as `mpsc`'s
/// blocking receive did, measured as a contended lock in every bump's page store).
#[derive(Debug, Default)]
struct JobQueue<T> {
    state: Mutex<(VecDeque<T>, bool)>,
    ready: Condvar,
}

impl<T> JobQueue<T> {
    /// Queues `job`, or gives it back once the queue is closed or its worker is gone.
    fn put(&self, job: T) -> Result<(), T> {
        {
            let Ok(mut state) = self.state.lock() else {
                return Err(job);
            };
            if state.1 {
                return Err(job);
            }
            state.0.push_back(job);
        }
        self.ready.notify_one();
        Ok(())
    }

    /// The oldest job, waiting for one; `None` once the queue is closed and empty.
    fn take(&self) -> Option<T> {
        let mut state = self.state.lock().ok()?;
        loop {
            if let Some(job) = state.0.pop_front() {
                return Some(job);
            }
            if state.1 {
                return None;
            }
            state = self.ready.wait(state).ok()?;
        }
    }

    /// No more jobs: the worker ends once it has taken those queued.
    fn close(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.1 = true;
        }
        self.ready.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::page;
    use crate::state_dir::StateDir;

    fn next_message(receiver: &crate::inbox::InboxReceiver) -> Message {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(message) = receiver.drain().into_iter().next() {
                return message;
            }
            assert!(Instant::now() < deadline, "no message from the worker");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_written_store_wakes_the_loop_only_when_it_asked() {
        let progress = Progress::default();
        let wakes = std::cell::Cell::new(0);
        assert_eq!(progress.written(false), 0);
        progress.job_written(|| wakes.set(wakes.get() + 1));
        assert_eq!((progress.written(true), wakes.get()), (1, 0));
        progress.job_written(|| wakes.set(wakes.get() + 1));
        assert_eq!((progress.written(false), wakes.get()), (2, 1));
    }

    /// Each round, the loop clears its wish (as when nothing waits), lets the writer write one
    /// job at a varying moment, and goes to sleep wishing to be woken, racing the writer. A
    /// wish not made or not heeded leaves the loop asleep until the 5-second limit.
    #[test]
    fn a_loop_going_to_sleep_never_misses_the_job_written_meanwhile() {
        const JOBS: u64 = 20_000;
        let progress = Arc::new(Progress::default());
        let (inbox, receiver) = crate::inbox::inbox().unwrap();
        let (go, go_rx) = mpsc::channel::<()>();
        let writer = {
            let progress = Arc::clone(&progress);
            std::thread::spawn(move || {
                let mut round = 0u32;
                while go_rx.recv().is_ok() {
                    // Land the write at spread points of the loop's way to sleep.
                    round = round.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    for _ in 0..(round >> 24) % 256 {
                        std::hint::spin_loop();
                    }
                    progress.job_written(|| inbox.wake());
                }
            })
        };
        let limit = rustix::event::Timespec {
            tv_sec: 5,
            tv_nsec: 0,
        };
        for job in 1..=JOBS {
            assert_eq!(progress.written(false), job - 1);
            receiver.drain();
            go.send(()).unwrap();
            while progress.written(true) < job {
                let mut fds = [rustix::event::PollFd::new(
                    &receiver,
                    rustix::event::PollFlags::IN,
                )];
                let ready = rustix::event::poll(&mut fds, Some(&limit)).unwrap();
                assert_eq!(ready, 1, "asleep with job {job} written");
                receiver.drain();
            }
        }
        drop(go);
        writer.join().unwrap();
    }

    fn in_memory(path: &std::path::Path) -> bool {
        state::on_memory_fs(std::fs::File::open(path).unwrap()).unwrap()
    }

    #[test]
    fn the_persist_runs_inline_exactly_where_the_state_directory_is_in_memory() {
        let parents = [std::path::PathBuf::from("/dev/shm"), std::env::temp_dir()];
        for parent in parents.iter().filter(|p| p.is_dir()) {
            let tmp = tempfile::tempdir_in(parent).unwrap();
            let dir = Arc::new(StateDir::open(&tmp.path().join("s")).unwrap());
            let state = StateFile::with_boot_id(Arc::clone(&dir), "a".to_owned());
            let page_file = PageFile::open_or_create(&dir, 3, state::draw_id().unwrap()).unwrap();
            let (inbox, receiver) = crate::inbox::inbox().unwrap();
            let mut persist = start_persist(state, Some(page_file), inbox).unwrap();
            let id = match persist.persist(4) {
                Persisting::Done(result) => {
                    assert!(in_memory(parent), "inline on {}", parent.display());
                    result.unwrap()
                }
                Persisting::Started => {
                    assert!(!in_memory(parent), "a worker on {}", parent.display());
                    let Message::Persisted(result) = next_message(&receiver) else {
                        panic!("no persist outcome");
                    };
                    result.unwrap()
                }
            };
            assert_eq!(
                page::peek(&dir),
                Some((4, Some(id))),
                "on {}",
                parent.display()
            );
        }
    }

    #[test]
    fn the_persist_worker_stores_into_the_page_file_only_after_a_persist_that_worked() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Arc::new(StateDir::open(&tmp.path().join("s")).unwrap());
        let state = StateFile::with_boot_id(Arc::clone(&dir), "a".to_owned());
        let page_file = PageFile::open_or_create(&dir, 3, state::draw_id().unwrap()).unwrap();
        let (inbox, receiver) = crate::inbox::inbox().unwrap();
        let mut worker = PersistWorker::start(state, Some(page_file), inbox).unwrap();

        assert_eq!(worker.persist(4), Persisting::Started);
        let Message::Persisted(Ok(id)) = next_message(&receiver) else {
            panic!("the persist failed");
        };
        assert_eq!(
            page::peek(&dir),
            Some((4, Some(id))),
            "the page file shows the persisted value and its new ID"
        );
        let loaded = StateFile::with_boot_id(Arc::clone(&dir), "a".to_owned()).load();
        assert_eq!(
            loaded.unwrap(),
            crate::state::Loaded::Continued(4, Some(id))
        );
        assert_eq!(worker.persist(5), Persisting::Started);
        let Message::Persisted(Ok(next)) = next_message(&receiver) else {
            panic!("the persist failed");
        };
        assert_ne!(next, id, "every bump draws a fresh ID");

        // A state file that refuses bumps: the persist fails and the page keeps its value.
        std::fs::write(tmp.path().join("s/state"), "garbage\n").unwrap();
        let mut refusing = StateFile::with_boot_id(Arc::clone(&dir), "a".to_owned());
        refusing.refuse_bumps("damaged".to_owned());
        let (inbox, receiver) = crate::inbox::inbox().unwrap();
        let page_file = PageFile::open_or_create(&dir, 5, next).unwrap();
        let mut worker = PersistWorker::start(refusing, Some(page_file), inbox).unwrap();
        assert_eq!(worker.persist(6), Persisting::Started);
        assert!(matches!(
            next_message(&receiver),
            Message::Persisted(Err(_))
        ));
        assert_eq!(
            page::peek(&dir),
            Some((5, Some(next))),
            "a failed persist publishes nothing"
        );
    }

    #[test]
    fn the_job_queue_keeps_order_and_refuses_jobs_once_closed() {
        let queue = Arc::new(JobQueue::default());
        let worker = {
            let queue = Arc::clone(&queue);
            std::thread::spawn(move || {
                let _closed = Closer(&*queue);
                std::iter::from_fn(|| queue.take()).collect::<Vec<u32>>()
            })
        };
        for job in 0..1000 {
            assert_eq!(queue.put(job), Ok(()));
        }
        queue.close();
        assert_eq!(worker.join().unwrap(), (0..1000).collect::<Vec<_>>());
        assert_eq!(queue.put(7), Err(7), "closed: the job comes back");
    }

    #[test]
    fn a_worker_that_panics_closes_its_queue() {
        let queue = Arc::new(JobQueue::<u32>::default());
        let worker = {
            let queue = Arc::clone(&queue);
            std::thread::spawn(move || {
                let _closed = Closer(&*queue);
                panic!("the worker ends");
            })
        };
        assert!(worker.join().is_err());
        assert_eq!(queue.put(1), Err(1), "no job is queued for nobody");
    }
}

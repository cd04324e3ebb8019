//! The persisted counter and its generation ID: `<state-dir>/state`, tied to the boot it was
//! written in.
//!
//! A daemon restart on the same boot continues from the persisted value, so the generation
//! never goes backwards; a new boot starts from 0, as the driver did (the daemon still never
//! publishes less than an existing page file shows).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use rustix::fs::OFlags;
use sysgenid_abi::GenerationId;

use crate::state_dir::StateDir;

/// File name of the persisted counter inside the state directory.
pub const STATE_FILE_NAME: &str = "state";
const HEADER: &str = "sysgenid-state 1";
const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";
/// `statfs` magic numbers of file systems whose content dies with the boot.
const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// Errors of the persisted counter.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The state file exists but cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A new generation could not be made durable.
    #[error("cannot persist generation {generation} to {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The value that was not persisted.
        generation: u32,
        /// Why.
        source: io::Error,
    },
    /// The state file is damaged and nothing else tells the counter: no bump is made until an
    /// operator decides, since guessing could hand out a generation again.
    #[error(
        "{} is not a sysgenid state file ({why}) and no page file shows the counter: bumps \
         are refused so that no generation is handed out twice; restore the file, or remove it \
         if the counter may start again from the value served now",
        path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

/// Where the counter is persisted, and which boot it belongs to. Updated in place: one
/// fixed-length `pwrite` of the whole record at offset 0, then `fdatasync` unless the file
/// lives on tmpfs (where nothing outlives the boot, and the record is tied to the boot anyway).
#[derive(Debug)]
pub struct StateFile {
    dir: Arc<StateDir>,
    path: PathBuf,
    boot_id: String,
    /// Opened at the first write, through the state directory and never through a link, with
    /// whether each write needs an `fdatasync` (everywhere but tmpfs and ramfs).
    file: Option<(File, bool)>,
    /// Bumps are refused while a damaged file stands in for a counter no record shows.
    refuse: Option<String>,
}

/// What was found at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// No state file: a fresh start at 0.
    Fresh,
    /// A state file from an earlier boot: a fresh start at 0.
    OtherBoot {
        /// The boot it was written in.
        boot_id: String,
    },
    /// The value persisted on this boot, with its ID (`None` in a record of a daemon older
    /// than the ID).
    Continued(u32, Option<GenerationId>),
    /// A file that is not a state file.
    Corrupt {
        /// What is wrong with it.
        why: String,
    },
}

impl Loaded {
    /// The generation this record alone would start from.
    pub fn generation(&self) -> u32 {
        match self {
            Loaded::Continued(g, _) => *g,
            Loaded::Fresh | Loaded::OtherBoot { .. } | Loaded::Corrupt { .. } => 0,
        }
    }
}

/// Where a start continues from, given every record: never below any of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartingPoint {
    /// The generation to serve.
    pub generation: u32,
    /// Its ID, from the record that shows the generation (the state file first), or `None`
    /// when none of them has one: the start draws a fresh one.
    pub id: Option<GenerationId>,
    /// Whether the state file must be written to show it (never when it already does).
    pub persist: bool,
    /// A damaged state file with no page file to stand in for it: bumps are refused.
    pub refuse_bumps: bool,
}

/// The starting point from the state file and the page file (`page`: the value and ID an
/// existing whole page file shows): the highest of them, so a rolled-back or lost record never
/// moves the counter back, with the ID of the record that shows it.
pub fn starting_point(loaded: &Loaded, page: Option<(u32, Option<GenerationId>)>) -> StartingPoint {
    let page_generation = page.map(|(g, _)| g);
    let generation = loaded.generation().max(page_generation.unwrap_or(0));
    let from_state = match loaded {
        Loaded::Continued(g, id) if *g == generation => *id,
        _ => None,
    };
    let from_page = page.and_then(|(g, id)| id.filter(|_| g == generation));
    StartingPoint {
        generation,
        id: from_state.or(from_page),
        persist: from_state.is_none(),
        refuse_bumps: matches!(loaded, Loaded::Corrupt { .. }) && page.is_none(),
    }
}

/// A fresh generation ID from the kernel's random source (`getrandom(2)`, which waits until
/// the kernel's pool is ready). Never from a generator in this process's memory: a snapshot
/// clones that memory with the machine. Never [`GenerationId::NONE`].
pub fn draw_id() -> io::Result<GenerationId> {
    loop {
        let mut id = GenerationId::NONE;
        let mut filled = 0;
        while filled < id.0.len() {
            filled += rustix::rand::getrandom(
                &mut id.0[filled..],
                rustix::rand::GetRandomFlags::empty(),
            )?;
        }
        if !id.is_none() {
            return Ok(id);
        }
    }
}

impl StateFile {
    /// The state file in `dir`, for the running boot.
    pub fn new(dir: Arc<StateDir>) -> io::Result<StateFile> {
        let boot_id = std::fs::read_to_string(BOOT_ID_PATH)?.trim().to_owned();
        Ok(StateFile::with_boot_id(dir, boot_id))
    }

    /// The state file in `dir`, for a given boot id.
    pub fn with_boot_id(dir: Arc<StateDir>, boot_id: String) -> StateFile {
        StateFile {
            path: dir.path_of(STATE_FILE_NAME),
            dir,
            boot_id,
            file: None,
            refuse: None,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Whether the state directory is on tmpfs or ramfs: memory, which no disk can stall and
    /// which cannot be frozen.
    pub fn in_memory(&self) -> io::Result<bool> {
        on_memory_fs(self.dir.as_ref())
    }

    /// Reads the persisted counter.
    pub fn load(&self) -> Result<Loaded, StateError> {
        let bytes = self
            .dir
            .read(STATE_FILE_NAME)
            .map_err(|source| StateError::Read {
                path: self.path.clone(),
                source,
            })?;
        Ok(match bytes {
            None => Loaded::Fresh,
            Some(bytes) => self.parse(&bytes),
        })
    }

    fn parse(&self, bytes: &[u8]) -> Loaded {
        let corrupt = |why: &str| Loaded::Corrupt {
            why: why.to_owned(),
        };
        let Ok(text) = std::str::from_utf8(bytes) else {
            return corrupt("not text");
        };
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return corrupt("no header");
        }
        let mut boot_id = None;
        let mut generation = None;
        let mut id = None;
        for line in lines {
            match line.split_once('=') {
                Some(("boot_id", v)) => boot_id = Some(v.to_owned()),
                Some(("generation", v)) => match v.parse::<u32>() {
                    Ok(g) => generation = Some(g),
                    Err(_) => return corrupt("bad generation"),
                },
                Some(("generation_id", v)) => match GenerationId::from_hex(v) {
                    Some(parsed) if !parsed.is_none() => id = Some(parsed),
                    _ => return corrupt("bad generation_id"),
                },
                _ => return corrupt("unknown line"),
            }
        }
        match (boot_id, generation) {
            (None, _) => corrupt("no boot_id"),
            (_, None) => corrupt("no generation"),
            (Some(boot_id), Some(_)) if boot_id != self.boot_id => Loaded::OtherBoot { boot_id },
            (Some(_), Some(g)) => Loaded::Continued(g, id),
        }
    }

    /// Refuses every later persist with this reason (a damaged file no other record covers).
    pub fn refuse_bumps(&mut self, why: String) {
        self.refuse = Some(why);
    }

    /// Makes `generation` and its ID durable: the whole fixed-length record written in place.
    pub fn persist(&mut self, generation: u32, id: GenerationId) -> Result<(), StateError> {
        let error = |path: &PathBuf, source| StateError::Write {
            path: path.clone(),
            generation,
            source,
        };
        if let Some(why) = &self.refuse {
            return Err(StateError::Corrupt {
                path: self.path.clone(),
                why: why.clone(),
            });
        }
        let record = format!(
            "{HEADER}\nboot_id={}\ngeneration={generation:010}\ngeneration_id={id}\n",
            self.boot_id
        );
        let (file, sync) = match &self.file {
            Some(opened) => opened,
            None => {
                let opened = self
                    .dir
                    .open_at(STATE_FILE_NAME, OFlags::RDWR | OFlags::CREATE, 0o600)
                    .and_then(|fd| open_whole(fd, record.len()))
                    .and_then(|file| {
                        let sync = !on_memory_fs(&file)?;
                        Ok((file, sync))
                    })
                    .map_err(|e| error(&self.path, e))?;
                self.file.insert(opened)
            }
        };
        write_record(file, record.as_bytes(), *sync).map_err(|e| error(&self.path, e))
    }
}

/// The state file at start, with the generation to serve and why the daemon is degraded, if it is.
#[derive(Debug)]
pub struct Recovered {
    /// The state file, ready for bumps.
    pub state: StateFile,
    /// The generation to serve: the highest any record shows.
    pub generation: u32,
    /// Its ID: the one the record that shows it holds, or a fresh one.
    pub generation_id: GenerationId,
    /// Why the counter is not durable (the start could not write it, or a damaged state file
    /// refuses bumps); bumps then fail with `EIO` until a persist works.
    pub degraded: Option<String>,
}

impl Recovered {
    /// Continues from a session's generation and ID where they are above the records (or equal,
    /// with an ID): the ID stays paired with the generation that wins. A session of a daemon
    /// older than the ID gets a fresh one.
    pub fn continue_from(&mut self, generation: u32, id: GenerationId) -> io::Result<()> {
        if generation > self.generation || (generation == self.generation && !id.is_none()) {
            self.generation = generation;
            self.generation_id = known_or_drawn(id)?;
        }
        Ok(())
    }
}

/// `id`, or a fresh one in place of [`GenerationId::NONE`] (a snapshot or session of a daemon
/// older than the ID).
pub fn known_or_drawn(id: GenerationId) -> io::Result<GenerationId> {
    if id.is_none() { draw_id() } else { Ok(id) }
}

/// Reads every record of `dir` (the state file, and the page file's value and ID `page`),
/// decides where to continue, and writes the state file only if it does not already show that.
/// A failed write or a damaged file does not stop the start: the daemon serves, degraded.
pub fn recover(
    dir: Arc<StateDir>,
    page: Option<(u32, Option<GenerationId>)>,
) -> io::Result<Recovered> {
    let mut state = StateFile::new(dir)?;
    let loaded = state
        .load()
        .unwrap_or_else(|e| Loaded::Corrupt { why: e.to_string() });
    let start = starting_point(&loaded, page);
    let generation_id = match start.id {
        Some(id) => id,
        None => draw_id()?,
    };
    log_start(&loaded, page.map(|(g, _)| g), &start);
    let mut degraded = None;
    if let Loaded::Corrupt { why } = &loaded
        && start.refuse_bumps
    {
        state.refuse_bumps(why.clone());
        let e = StateError::Corrupt {
            path: state.path.clone(),
            why: why.clone(),
        };
        tracing::error!(error = %e, "serving degraded");
        degraded = Some(e.to_string());
    } else if start.persist
        && let Err(e) = state.persist(start.generation, generation_id)
    {
        tracing::error!(error = %e, "serving degraded: bumps fail with EIO until a persist works");
        degraded = Some(e.to_string());
    }
    Ok(Recovered {
        state,
        generation: start.generation,
        generation_id,
        degraded,
    })
}

fn log_start(loaded: &Loaded, page: Option<u32>, start: &StartingPoint) {
    match loaded {
        Loaded::Fresh => tracing::info!("no persisted counter of this boot"),
        Loaded::OtherBoot { boot_id } => {
            tracing::info!(previous_boot = %boot_id, "persisted counter is from another boot")
        }
        Loaded::Continued(g, _) => {
            tracing::info!(generation = g, "persisted counter of this boot")
        }
        Loaded::Corrupt { why } => tracing::warn!(why, "the state file is damaged"),
    }
    if page.is_some_and(|p| p > loaded.generation()) {
        tracing::warn!(
            page = page,
            "the page file shows a higher generation than the state file (a lost or rolled-back \
             state file, or a state directory carried from another boot): continuing from it so \
             the counter never goes backwards"
        );
    }
    tracing::info!(
        generation = start.generation,
        id_found = start.id.is_some(),
        rewrite = start.persist,
        "starting"
    );
}

/// The state file, cut to the record's length (an older daemon's record may be longer).
fn open_whole(fd: OwnedFd, len: usize) -> io::Result<File> {
    let file = File::from(fd);
    if file.metadata()?.len() > len as u64 {
        file.set_len(len as u64)?;
    }
    Ok(file)
}

fn write_record(file: &File, record: &[u8], sync: bool) -> io::Result<()> {
    let written = rustix::io::pwrite(file, record, 0)?;
    if written != record.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short write"));
    }
    if sync {
        rustix::fs::fdatasync(file)?;
    }
    Ok(())
}

/// Whether `fd` is on tmpfs or ramfs.
pub(crate) fn on_memory_fs(fd: impl AsFd) -> io::Result<bool> {
    let fs_type = rustix::fs::fstatfs(fd)?.f_type as i64;
    Ok(fs_type == TMPFS_MAGIC || fs_type == RAMFS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Arc<StateDir>) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::open(&tmp.path().join("s")).unwrap();
        (tmp, Arc::new(dir))
    }

    fn id(seed: u8) -> GenerationId {
        GenerationId([seed; 16])
    }

    fn state(dir: &Arc<StateDir>, boot: &str) -> StateFile {
        StateFile::with_boot_id(Arc::clone(dir), boot.to_owned())
    }

    #[test]
    fn missing_file_is_a_fresh_start_at_zero() {
        let (_tmp, dir) = setup();
        assert_eq!(state(&dir, "a").load().unwrap(), Loaded::Fresh);
    }

    #[test]
    fn same_boot_continues_other_boot_starts_at_zero() {
        let (_tmp, dir) = setup();
        let mut s = state(&dir, "a");
        s.persist(41, id(41)).unwrap();
        s.persist(42, id(42)).unwrap();
        assert_eq!(
            state(&dir, "a").load().unwrap(),
            Loaded::Continued(42, Some(id(42)))
        );
        let other = state(&dir, "b").load().unwrap();
        assert_eq!(
            other,
            Loaded::OtherBoot {
                boot_id: "a".into()
            }
        );
        assert_eq!(other.generation(), 0);
    }

    #[test]
    fn an_older_daemons_record_is_read_and_overwritten_whole() {
        let (_tmp, dir) = setup();
        let long = "sysgenid-state 1\nboot_id=a-much-longer-boot-id-than-this-one\ngeneration=7\n";
        dir.replace(STATE_FILE_NAME, long.as_bytes(), 0o600)
            .unwrap();
        assert_eq!(
            state(&dir, "a-much-longer-boot-id-than-this-one")
                .load()
                .unwrap(),
            Loaded::Continued(7, None),
            "a record without an ID reads with none"
        );
        let mut s = state(&dir, "b");
        s.persist(8, id(8)).unwrap();
        let text = String::from_utf8(dir.read(STATE_FILE_NAME).unwrap().unwrap()).unwrap();
        assert_eq!(
            text,
            format!(
                "sysgenid-state 1\nboot_id=b\ngeneration=0000000008\ngeneration_id={}\n",
                id(8)
            )
        );
        assert_eq!(s.load().unwrap(), Loaded::Continued(8, Some(id(8))));
    }

    #[test]
    fn a_damaged_file_is_reported_not_guessed() {
        let (_tmp, dir) = setup();
        for text in [
            "",
            "garbage",
            "sysgenid-state 1\nboot_id=a\n",
            "sysgenid-state 1\nboot_id=a\ngeneration=-1\n",
            "sysgenid-state 1\nboot_id=a\ngeneration=4294967296\n",
            "sysgenid-state 1\nboot_id=a\ngeneration=1\ngeneration_id=12\n",
            "sysgenid-state 1\nboot_id=a\ngeneration=1\ngeneration_id=00000000000000000000000000000000\n",
        ] {
            dir.replace(STATE_FILE_NAME, text.as_bytes(), 0o600)
                .unwrap();
            let loaded = state(&dir, "a").load().unwrap();
            assert!(
                matches!(loaded, Loaded::Corrupt { .. }),
                "{text:?}: {loaded:?}"
            );
        }
    }

    #[test]
    fn the_start_continues_from_the_highest_record_and_writes_only_what_changed() {
        let same = Loaded::Continued(5, Some(id(5)));
        let page = |g: u32| Some((g, Some(id(g as u8 + 100))));
        assert_eq!(
            starting_point(&same, page(5)),
            StartingPoint {
                generation: 5,
                id: Some(id(5)),
                persist: false,
                refuse_bumps: false
            },
            "nothing to write when the state file already shows it; its ID wins a tie"
        );
        assert_eq!(starting_point(&same, page(9)).generation, 9, "rolled back");
        assert_eq!(
            starting_point(&same, page(9)).id,
            Some(id(109)),
            "the page's ID"
        );
        assert!(starting_point(&same, page(9)).persist);
        let higher = starting_point(&Loaded::Continued(9, Some(id(9))), page(5));
        assert_eq!((higher.generation, higher.id), (9, Some(id(9))));
        assert_eq!(starting_point(&Loaded::Fresh, page(3)).generation, 3);
        assert_eq!(starting_point(&Loaded::Fresh, None).generation, 0);
        assert_eq!(starting_point(&Loaded::Fresh, None).id, None, "drawn fresh");
        let damaged = Loaded::Corrupt { why: "x".into() };
        assert!(!starting_point(&damaged, page(4)).refuse_bumps);
        assert_eq!(starting_point(&damaged, page(4)).generation, 4);
        assert!(starting_point(&damaged, None).refuse_bumps);
    }

    #[test]
    fn an_upgrade_keeps_its_counter_and_pairs_an_id_with_it() {
        let old = Loaded::Continued(5, None);
        let from_page = starting_point(&old, Some((5, Some(id(1)))));
        assert_eq!((from_page.generation, from_page.id), (5, Some(id(1))));
        assert!(from_page.persist, "the record gains the ID");
        let none = starting_point(&old, Some((5, None)));
        assert_eq!(
            (none.generation, none.id),
            (5, None),
            "no record has one: drawn"
        );
        assert!(none.persist);
    }

    #[test]
    fn drawn_ids_are_fresh_and_never_none() {
        let a = draw_id().unwrap();
        let b = draw_id().unwrap();
        assert!(!a.is_none());
        assert_ne!(a, b);
    }

    #[test]
    fn a_refused_or_failed_persist_reports_the_value_and_keeps_the_old_record() {
        let (_tmp, dir) = setup();
        let mut s = state(&dir, "a");
        s.persist(7, id(7)).unwrap();
        s.refuse_bumps("no header".into());
        let err = s.persist(8, id(8)).unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("refused"), "{err}");
        assert_eq!(s.load().unwrap(), Loaded::Continued(7, Some(id(7))));
        // A directory in place of the file makes the first write fail.
        let mut fresh = state(&dir, "a");
        dir.remove(STATE_FILE_NAME).unwrap();
        std::fs::create_dir(dir.path_of(STATE_FILE_NAME)).unwrap();
        let err = fresh.persist(9, id(9)).unwrap_err();
        assert!(
            matches!(err, StateError::Write { generation: 9, .. }),
            "{err}"
        );
    }
}

//! The simulation served as a configfs-tsm report entry, laid out as the kernel's
//! sev_guest provider lays it out (no SVSM): `provider` ("sev_guest"), `privlevel_floor`,
//! `privlevel`, `inblob`, `outblob`, `auxblob`, `generation`.
//!
//! The kernel answers a read of `outblob` synchronously; plain files cannot, so `outblob`,
//! `auxblob` and `generation` are FIFOs whose reader blocks until a thread of this provider
//! answers (each open gets one answer, then end of file, as a read of the attribute does). Writes to `inblob` and `privlevel` are counted from inotify close-after-write
//! events, which the kernel queues before the writer's close returns: by the time a reader
//! opens `outblob`, every earlier write is counted, as the kernel counts it when it is made.
//! A report is made again only when the generation moved, from `inblob` and `privlevel` as
//! they are then, by [`SimulatedProcessor::extended_report`]: the same report bytes, and as
//! `auxblob` the certificate table the device path gets (empty when the simulated host
//! provides none, as the kernel leaves it).
//!
//! What it does not do: the kernel's errors (a wrong-length `inblob` reads as an empty
//! `outblob` here, not EINVAL), permissions, or creating entries on `mkdir` (the entry is
//! made ahead, which the agent accepts as it accepts an entry a systemd unit made).

use std::fs::OpenOptions;
use std::io::Write;
use std::mem::MaybeUninit;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::fd::OwnedFd;
use rustix::fs::inotify;

use super::SimulatedProcessor;
use crate::snp::configfs::SEV_GUEST_PROVIDER;
use crate::snp::{DeviceError, ExtendedReport, SecureProcessor};
use attestor_verify::evidence::snp::certs::encode_cert_table;

/// The attributes a reader waits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answered {
    Outblob,
    Auxblob,
    Generation,
}

impl Answered {
    const ALL: [Answered; 3] = [Answered::Outblob, Answered::Auxblob, Answered::Generation];

    fn name(self) -> &'static str {
        match self {
            Answered::Outblob => "outblob",
            Answered::Auxblob => "auxblob",
            Answered::Generation => "generation",
        }
    }
}

struct State {
    processor: SimulatedProcessor,
    inotify: OwnedFd,
    generation: u64,
    /// The generation the current blobs were made for, and the blobs.
    made: Option<(u64, Vec<u8>, Vec<u8>)>,
    reports_made: usize,
    /// Writes of another process to inject before the next reports are made.
    foreign_writes: usize,
}

struct Shared {
    entry: PathBuf,
    state: Mutex<State>,
    stop: AtomicBool,
}

/// A simulated configfs-tsm entry, answered by threads until dropped (drop it before its
/// directory is removed: the threads are woken through the entry's FIFOs).
pub struct SimulatedTsm {
    shared: Arc<Shared>,
    threads: Vec<(Answered, JoinHandle<()>)>,
}

impl SimulatedTsm {
    /// Lays out `report_dir/entry` and starts answering it with `processor`.
    pub fn start(
        report_dir: &Path,
        entry: &str,
        processor: SimulatedProcessor,
    ) -> Result<SimulatedTsm, DeviceError> {
        let entry = report_dir.join(entry);
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            DeviceError::Simulation(format!(
                "configfs-tsm entry {}: {what}: {e}",
                entry.display()
            ))
        };
        std::fs::create_dir_all(&entry).map_err(|e| fail("create", &e))?;
        for (name, content) in [
            ("provider", format!("{SEV_GUEST_PROVIDER}\n")),
            ("privlevel_floor", "0\n".to_string()),
            ("privlevel", String::new()),
            ("inblob", String::new()),
        ] {
            std::fs::write(entry.join(name), content).map_err(|e| fail(name, &e))?;
        }
        for answered in Answered::ALL {
            rustix::fs::mkfifoat(
                rustix::fs::CWD,
                entry.join(answered.name()),
                rustix::fs::Mode::from_raw_mode(0o644),
            )
            .map_err(|e| fail(answered.name(), &e))?;
        }
        let inotify = inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC)
            .map_err(|e| fail("inotify", &e))?;
        inotify::add_watch(&inotify, &entry, inotify::WatchFlags::CLOSE_WRITE)
            .map_err(|e| fail("inotify watch", &e))?;
        let shared = Arc::new(Shared {
            entry,
            state: Mutex::new(State {
                processor,
                inotify,
                generation: 0,
                made: None,
                reports_made: 0,
                foreign_writes: 0,
            }),
            stop: AtomicBool::new(false),
        });
        let threads = Answered::ALL
            .into_iter()
            .map(|answered| {
                let shared = Arc::clone(&shared);
                (
                    answered,
                    std::thread::spawn(move || shared.answer(answered)),
                )
            })
            .collect();
        Ok(SimulatedTsm { shared, threads })
    }

    /// The entry's directory.
    pub fn entry(&self) -> &Path {
        &self.shared.entry
    }

    /// Reports made so far (a request whose writes were all counted makes one).
    pub fn reports_made(&self) -> usize {
        self.shared.lock().reports_made
    }

    /// Writes counted so far (`generation`).
    pub fn generation(&self) -> u64 {
        let mut state = self.shared.lock();
        self.shared.count_writes(&mut state);
        state.generation
    }

    /// What the same simulated processor answers directly (as through `/dev/sev-guest`),
    /// to compare with what the entry serves.
    pub fn direct(&self, report_data: [u8; 64], vmpl: u32) -> Result<ExtendedReport, DeviceError> {
        self.shared
            .lock()
            .processor
            .extended_report(report_data, vmpl)
    }

    /// Before each of the next `count` reports, another process writes its own `inblob`
    /// (all 0xEE), between the requester's write and its read of `outblob`.
    pub fn interleave_foreign_writes(&self, count: usize) {
        self.shared.lock().foreign_writes = count;
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serves one attribute until stopped: each open by a reader gets one answer.
    fn answer(&self, answered: Answered) {
        let path = self.entry.join(answered.name());
        while !self.stop.load(Ordering::SeqCst) {
            // Blocks until a reader opens the FIFO.
            let Ok(mut fifo) = OpenOptions::new().write(true).open(&path) else {
                return;
            };
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            // A reader sees the end of an answer only once no writer is left: the next
            // reader gets a new FIFO at the same path, so that opening it for the next
            // answer cannot hold this reader's end back.
            if self.fresh_fifo(&path).is_err() {
                return;
            }
            let bytes = self.answer_bytes(answered);
            // A reader that left early is its own business.
            let _ = fifo.write_all(&bytes);
        }
    }

    /// Replaces the FIFO at `path` with a new one (atomically: no reader finds it missing).
    fn fresh_fifo(&self, path: &Path) -> std::io::Result<()> {
        let mut next = path.as_os_str().to_owned();
        next.push(".next");
        let _ = std::fs::remove_file(&next);
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            next.as_os_str(),
            rustix::fs::Mode::from_raw_mode(0o644),
        )?;
        std::fs::rename(&next, path)
    }

    fn answer_bytes(&self, answered: Answered) -> Vec<u8> {
        let mut state = self.lock();
        self.count_writes(&mut state);
        if answered == Answered::Generation {
            return format!("{}\n", state.generation).into_bytes();
        }
        if state.foreign_writes > 0 && state.made.as_ref().map(|m| m.0) != Some(state.generation) {
            state.foreign_writes -= 1;
            // Another process's write, made as that process would make it.
            let _ = std::fs::write(self.entry.join("inblob"), [0xEE; 64]);
            self.count_writes(&mut state);
        }
        let generation = state.generation;
        if state.made.as_ref().map(|m| m.0) != Some(generation) {
            let (report, table) = self.make(&mut state).unwrap_or_default();
            state.reports_made += 1;
            state.made = Some((generation, report, table));
        }
        match (&state.made, answered) {
            (Some((_, report, _)), Answered::Outblob) => report.clone(),
            (Some((_, _, table)), Answered::Auxblob) => table.clone(),
            _ => Vec::new(),
        }
    }

    /// A report for the entry as written now; None when `inblob` is not 64 bytes.
    fn make(&self, state: &mut State) -> Option<(Vec<u8>, Vec<u8>)> {
        let inblob: [u8; 64] = std::fs::read(self.entry.join("inblob"))
            .ok()?
            .try_into()
            .ok()?;
        let privlevel = std::fs::read_to_string(self.entry.join("privlevel")).ok()?;
        let vmpl = match privlevel.trim() {
            "" => 0,
            text => text.parse().ok()?,
        };
        let ext = state.processor.extended_report(inblob, vmpl).ok()?;
        let table = if ext.certs.is_empty() {
            Vec::new()
        } else {
            encode_cert_table(&ext.certs)
        };
        Some((ext.report, table))
    }

    /// Counts the writes to `inblob` and `privlevel` closed since the last count.
    fn count_writes(&self, state: &mut State) {
        let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
        let State {
            inotify,
            generation,
            ..
        } = state;
        let mut events = inotify::Reader::new(&*inotify, &mut buf);
        while let Ok(event) = events.next() {
            let written = event
                .file_name()
                .is_some_and(|n| n.to_bytes() == b"inblob" || n.to_bytes() == b"privlevel");
            if written {
                *generation += 1;
            }
        }
    }
}

impl Drop for SimulatedTsm {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(5);
        for (answered, thread) in self.threads.drain(..) {
            let path = self.shared.entry.join(answered.name());
            // A reader's open wakes a thread blocked opening its FIFO for writing.
            while !thread.is_finished() && Instant::now() < deadline && path.exists() {
                let _ = OpenOptions::new()
                    .read(true)
                    .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
                    .open(&path);
                std::thread::sleep(Duration::from_millis(1));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

//! The log's writer: one thread per folder, fed by a bounded queue. Requests never wait for
//! it: a full queue drops the record (counted). A record counts as written once the segment
//! it went to is flushed; what a failing write or flush loses counts as lost (`errors`). A
//! failing disk (full, read-only) puts the writer in a failing state: it drops what arrives
//! without touching the disk, retries the same segment after a backoff (1 s doubling to a
//! minute), and recovers by itself when space returns. A segment left empty is removed, and
//! so is an image's `.part` file when its write fails. The thread ends when the last hotkey
//! that logs to the folder is gone. Segments rotate by size and age.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::format::Record;

/// Records waiting for the writer; beyond this they are dropped.
const QUEUE: usize = 4096;

/// What the writer is handed: the record (its `image` hash and `image_file` filled here, off
/// the request path), the image's bytes, and whether to keep them (with this extension).
pub struct Entry {
    pub record: Record,
    pub bytes: bytes::Bytes,
    pub keep: Option<&'static str>,
    pub segment_bytes: u64,
    pub segment_age: Duration,
}

/// Counters of one log folder, and whether it is failing now.
#[derive(Default, Debug)]
pub struct Counts {
    /// Records on disk (their segment flushed).
    pub written: AtomicU64,
    /// Records dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Records lost to write errors (a full or read-only disk), including those dropped while
    /// the writer waits to retry.
    pub errors: AtomicU64,
    /// The last write error while the writer is failing; `None` once a write succeeds again.
    pub failing: parking_lot::Mutex<Option<String>>,
    /// Set when the writer's thread has ended (no hotkey logs to the folder any more).
    pub ended: std::sync::atomic::AtomicBool,
}

/// The first wait before a failing disk is tried again, and the longest.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));

pub struct Writer {
    tx: Sender<Entry>,
    pub counts: Arc<Counts>,
}

impl Writer {
    pub fn start(dir: &Path) -> std::io::Result<Writer> {
        std::fs::create_dir_all(dir.join("images"))?;
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let counts = Arc::new(Counts::default());
        let (d, c) = (dir.to_path_buf(), counts.clone());
        std::thread::Builder::new().name("prediction-log".into()).spawn(move || {
            run(&d, &rx, &c);
            c.ended.store(true, Ordering::SeqCst);
        })?;
        Ok(Writer { tx, counts })
    }

    /// Hands a record to the writer; never blocks.
    pub fn send(&self, e: Entry) -> bool {
        match self.tx.try_send(e) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

struct Segment {
    out: BufWriter<File>,
    path: std::path::PathBuf,
    bytes: u64,
    opened: Instant,
    /// Records written to the buffer since the last flush: durable once it succeeds.
    pending: u64,
}

fn open_segment(dir: &Path) -> std::io::Result<Segment> {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let mut path = dir.join(format!("predictions-{ms}.jsonl"));
    let mut n = 1;
    while path.exists() {
        path = dir.join(format!("predictions-{ms}-{n}.jsonl"));
        n += 1;
    }
    // create_new: two writers never share a segment
    let f = OpenOptions::new().create_new(true).append(true).open(&path)?;
    Ok(Segment { out: BufWriter::new(f), path, bytes: 0, opened: Instant::now(), pending: 0 })
}

/// The writer's state across records.
struct State {
    seg: Option<Segment>,
    /// While failing: when to try the disk again, and the next wait.
    retry: Option<(Instant, Duration)>,
}

impl State {
    /// A write or flush failed: what the buffer held is lost, the segment is let go (removed
    /// when nothing reached it), and the disk is left alone for a while.
    fn failed(&mut self, dir: &Path, counts: &Counts, err: &std::io::Error, lost: u64) {
        let lost = lost + self.seg.as_ref().map_or(0, |s| s.pending);
        counts.errors.fetch_add(lost, Ordering::Relaxed);
        if let Some(s) = self.seg.take() {
            let path = s.path.clone();
            drop(s.out.into_parts());
            if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
                let _ = std::fs::remove_file(&path);
            }
        }
        let wait = self.retry.map_or(BACKOFF.0, |(_, w)| (w * 2).min(BACKOFF.1));
        let mut failing = counts.failing.lock();
        if failing.is_none() {
            tracing::warn!(dir = %dir.display(), error = %err, "prediction log: writes fail; dropping records and retrying");
        }
        *failing = Some(err.to_string());
        self.retry = Some((Instant::now() + wait, wait));
    }

    fn flush(&mut self, dir: &Path, counts: &Counts) {
        let Some(s) = self.seg.as_mut() else { return };
        match s.out.flush() {
            Ok(()) => {
                counts.written.fetch_add(s.pending, Ordering::Relaxed);
                s.pending = 0;
                if self.retry.take().is_some() {
                    tracing::info!(dir = %dir.display(), "prediction log: writing again");
                }
                *counts.failing.lock() = None;
            }
            Err(err) => self.failed(dir, counts, &err, 0),
        }
    }
}

fn run(dir: &Path, rx: &Receiver<Entry>, counts: &Counts) {
    let mut st = State { seg: None, retry: None };
    // ends when every sender (the hotkeys that log here) is gone
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(e) = next.take() {
            if st.retry.is_some_and(|(at, _)| Instant::now() < at) {
                // failing: not a write per record, only the count
                counts.errors.fetch_add(1, Ordering::Relaxed);
            } else if let Err(err) = write(dir, &mut st.seg, e, counts) {
                st.failed(dir, counts, &err, 1);
            }
            next = rx.try_recv().ok();
        }
        // the queue is empty: what was written becomes visible to readers, and durable
        st.flush(dir, counts);
    }
    st.flush(dir, counts);
}

fn write(dir: &Path, seg: &mut Option<Segment>, mut e: Entry, counts: &Counts) -> std::io::Result<()> {
    e.record.image = crate::files::sha256_hex(&e.bytes);
    if let Some(ext) = e.keep {
        let name = format!("images/{}.{ext}", e.record.image);
        let p = dir.join(&name);
        if !p.exists() {
            let tmp = p.with_extension("part");
            if let Err(err) = std::fs::write(&tmp, &e.bytes).and_then(|()| std::fs::rename(&tmp, &p)) {
                let _ = std::fs::remove_file(&tmp);
                return Err(err);
            }
        }
        e.record.image_file = Some(name);
    }
    let rotate = seg.as_ref().is_none_or(|s| s.bytes >= e.segment_bytes || s.opened.elapsed() >= e.segment_age);
    if rotate {
        if let Some(s) = seg.as_mut() {
            s.out.flush()?;
            counts.written.fetch_add(s.pending, Ordering::Relaxed);
            s.pending = 0;
        }
        *seg = Some(open_segment(dir)?);
    }
    let s = seg.as_mut().expect("a segment is open");
    let mut line = serde_json::to_vec(&e.record).map_err(std::io::Error::other)?;
    line.push(b'\n');
    s.out.write_all(&line)?;
    s.bytes += line.len() as u64;
    s.pending += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(keep: bool) -> Entry {
        let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/log_line/record.json");
        let record = super::super::format::parse_line(&std::fs::read(seed).expect("seed")).expect("record");
        Entry {
            record,
            bytes: bytes::Bytes::from_static(b"jpeg bytes"),
            keep: keep.then_some("jpg"),
            // every record rotates: each one opens its segment
            segment_bytes: 1,
            segment_age: Duration::from_secs(3600),
        }
    }

    fn settle(w: &Writer, done: impl Fn(&Counts) -> bool) {
        let until = Instant::now() + Duration::from_secs(10);
        while !done(&w.counts) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The outside suite's finding on a full or read-only disk: an empty segment per failed
    /// flush, `.part` files left behind, records counted as written that never reached the
    /// disk, and no recovery. Here the folder disappears under the writer (what root sees of
    /// a lost disk; chmod does not stop root), then comes back.
    #[test]
    fn a_failing_disk_counts_what_is_lost_leaves_no_litter_and_recovers() {
        let dir = std::env::temp_dir().join(format!("predlog-failing-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let w = Writer::start(&dir).unwrap();
        for _ in 0..3 {
            w.send(entry(true));
        }
        settle(&w, |c| c.written.load(Ordering::Relaxed) == 3);
        assert_eq!(w.counts.written.load(Ordering::Relaxed), 3);
        std::fs::remove_dir_all(&dir).unwrap();
        for _ in 0..50 {
            w.send(entry(true));
        }
        settle(&w, |c| c.errors.load(Ordering::Relaxed) == 50);
        assert_eq!(w.counts.errors.load(Ordering::Relaxed), 50, "every lost record counted");
        assert_eq!(w.counts.written.load(Ordering::Relaxed), 3, "nothing counted that is not on disk");
        assert!(w.counts.failing.lock().is_some(), "the state says so");
        // the disk comes back: after the backoff the writer writes again by itself
        std::fs::create_dir_all(dir.join("images")).unwrap();
        std::thread::sleep(BACKOFF.0 + Duration::from_millis(200));
        w.send(entry(true));
        settle(&w, |c| c.written.load(Ordering::Relaxed) == 4);
        assert_eq!(w.counts.written.load(Ordering::Relaxed), 4);
        assert!(w.counts.failing.lock().is_none());
        let names: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        let segments = names.iter().filter(|n| n.starts_with("predictions-")).count();
        assert_eq!(segments, 1, "one segment for the one record written since: {names:?}");
        let images: Vec<_> = std::fs::read_dir(dir.join("images")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(images.iter().all(|n| !n.to_string_lossy().ends_with(".part")), "{images:?}");
        drop(w);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_thread_ends_with_the_last_sender() {
        let dir = std::env::temp_dir().join(format!("predlog-ends-{}", std::process::id()));
        let w = Writer::start(&dir).unwrap();
        let counts = w.counts.clone();
        w.send(entry(false));
        settle(&w, |c| c.written.load(Ordering::Relaxed) == 1);
        assert!(!counts.ended.load(Ordering::SeqCst));
        drop(w);
        // the writer flushed and its thread ended (before: one thread per folder ever named)
        let until = Instant::now() + Duration::from_secs(10);
        while !counts.ended.load(Ordering::SeqCst) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(counts.ended.load(Ordering::SeqCst), "the writer thread is still running");
        assert_eq!(counts.written.load(Ordering::Relaxed), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! The log's writer: one thread per folder, fed by a bounded queue. Requests never wait for
//! it: a full queue drops the record (counted), a failing disk drops what it cannot write
//! (counted) and tries again with the next record. Segments rotate by size and age.

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

/// Counters of one log folder.
#[derive(Default, Debug)]
pub struct Counts {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    pub errors: AtomicU64,
}

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
        std::thread::Builder::new().name("prediction-log".into()).spawn(move || run(&d, &rx, &c))?;
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
    bytes: u64,
    opened: Instant,
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
    Ok(Segment { out: BufWriter::new(f), bytes: 0, opened: Instant::now() })
}

fn run(dir: &Path, rx: &Receiver<Entry>, counts: &Counts) {
    let mut seg: Option<Segment> = None;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(e) = next.take() {
            match write(dir, &mut seg, e) {
                Ok(()) => counts.written.fetch_add(1, Ordering::Relaxed),
                Err(err) => {
                    // a full or failing disk: this record is lost, the next one tries again
                    if counts.errors.fetch_add(1, Ordering::Relaxed).is_multiple_of(1000) {
                        tracing::warn!(dir = %dir.display(), error = %err, "prediction log: a record could not be written");
                    }
                    seg = None;
                    0
                }
            };
            next = rx.try_recv().ok();
        }
        // the queue is empty: what was written becomes visible to readers
        if let Some(s) = seg.as_mut() {
            if s.out.flush().is_err() {
                counts.errors.fetch_add(1, Ordering::Relaxed);
                seg = None;
            }
        }
    }
}

fn write(dir: &Path, seg: &mut Option<Segment>, mut e: Entry) -> std::io::Result<()> {
    e.record.image = crate::files::sha256_hex(&e.bytes);
    if let Some(ext) = e.keep {
        let name = format!("images/{}.{ext}", e.record.image);
        let p = dir.join(&name);
        if !p.exists() {
            let tmp = p.with_extension("part");
            std::fs::write(&tmp, &e.bytes)?;
            std::fs::rename(&tmp, &p)?;
        }
        e.record.image_file = Some(name);
    }
    let rotate = seg.as_ref().is_none_or(|s| s.bytes >= e.segment_bytes || s.opened.elapsed() >= e.segment_age);
    if rotate {
        if let Some(mut s) = seg.take() {
            s.out.flush()?;
        }
        *seg = Some(open_segment(dir)?);
    }
    let s = seg.as_mut().expect("a segment is open");
    let mut line = serde_json::to_vec(&e.record).map_err(std::io::Error::other)?;
    line.push(b'\n');
    s.out.write_all(&line)?;
    s.bytes += line.len() as u64;
    Ok(())
}

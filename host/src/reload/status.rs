//! The reload history the admin API and the status page show: how many reloads ran, were
//! applied or refused, and the latest refusal of each file until that file is accepted.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{RefusedChange, Snapshot};

/// Reload history: counts, and the latest refusal per file until that file is accepted.
#[derive(Default)]
pub struct ReloadStatus {
    pub reloads: u64,
    pub applied: u64,
    pub refused: u64,
    pub outstanding: BTreeMap<PathBuf, RefusedChange>,
    pub last_reload_ms: f64,
    /// The latest reload's notes that do not stop serving (a stage's model missing from the
    /// registry, an optional model left out, keys on both lists).
    pub notes: Vec<super::Problem>,
}

impl ReloadStatus {
    pub fn record(&mut self, snap: &Snapshot) {
        self.reloads += 1;
        self.last_reload_ms = snap.took.as_secs_f64() * 1e3;
        self.notes = snap.warnings.clone();
        if !snap.applied.is_empty() {
            self.applied += 1;
        }
        for f in &snap.applied {
            self.outstanding.remove(f);
        }
        self.outstanding.retain(|f, _| f.exists());
        for r in &snap.refused {
            self.refused += 1;
            crate::metrics::global().refusal();
            self.outstanding.insert(r.file.clone(), r.clone());
        }
        crate::metrics::global().reload(if !snap.refused.is_empty() {
            "refused"
        } else if snap.applied.is_empty() {
            "unchanged"
        } else {
            "applied"
        });
    }
}

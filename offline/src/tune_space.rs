//! What `cascade tune` may change, and the router and fuser it simulates: `cascade-router`'s
//! stages with early exit (exit on the fused score after a stage at or below `exit_low`, at or
//! above `exit_high`; the last stage answers) and the `weighted` fuser (weighted mean over the
//! scores present, `boost` scores raising it noisy-OR) — or the mean without a fuser. The
//! chosen setting is checked through the real components afterwards (`tune` re-runs it).

use std::collections::BTreeMap;

use serde::Deserialize;

/// The largest space `tune` sweeps.
pub const MAX_SETTINGS: u64 = 2_000_000;

/// `--space FILE`: candidate values per stage threshold and per fuser weight.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpaceFile {
    #[serde(default)]
    pub stages: BTreeMap<String, StageSpace>,
    #[serde(default)]
    pub weights: BTreeMap<String, Vec<f32>>,
    #[serde(default)]
    pub boost: BTreeMap<String, Vec<f32>>,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct StageSpace {
    #[serde(default)]
    pub exit_low: Vec<f32>,
    #[serde(default)]
    pub exit_high: Vec<f32>,
}

/// One setting: per stage (low, high), the fuser's weights and boosts.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    pub exits: Vec<(Option<f32>, Option<f32>)>,
    pub weights: BTreeMap<String, f32>,
    pub boost: BTreeMap<String, f32>,
}

/// The axes of the sweep: each a list of values for one parameter.
#[derive(Debug)]
pub struct Space {
    /// (stage index, is_high, values)
    pub exits: Vec<(usize, bool, Vec<Option<f32>>)>,
    pub weights: Vec<(String, Vec<f32>)>,
    pub boost: Vec<(String, Vec<f32>)>,
    pub base: Setting,
}

impl Space {
    /// The space over `base` (the hotkey's own setting): the file's axes, or by default
    /// every non-final stage's thresholds on a grid (keeping the current value too).
    pub fn new(base: Setting, stage_names: &[String], file: Option<SpaceFile>) -> Result<Space, String> {
        let n = stage_names.len();
        let mut exits = Vec::new();
        let with_current = |mut v: Vec<f32>, cur: Option<f32>| -> Vec<Option<f32>> {
            if let Some(c) = cur {
                if !v.iter().any(|x| (x - c).abs() < 1e-6) {
                    v.push(c);
                }
            }
            v.sort_by(f32::total_cmp);
            v.into_iter().map(Some).collect()
        };
        let (mut weights, mut boost) = (Vec::new(), Vec::new());
        match file {
            None => {
                for (i, _) in stage_names.iter().enumerate().take(n.saturating_sub(1)) {
                    let (lo, hi) = base.exits[i];
                    exits.push((i, false, with_current(vec![0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4], lo)));
                    exits.push((i, true, with_current(vec![0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95], hi)));
                }
            }
            Some(f) => {
                for (name, s) in &f.stages {
                    let i = stage_names.iter().position(|x| x == name).ok_or_else(|| {
                        format!("space: no stage {name:?} (the hotkey's stages: {})", stage_names.join(", "))
                    })?;
                    if i + 1 == n {
                        return Err(format!("space: stage {name:?} is the last; it always answers (no exits)"));
                    }
                    for (high, vals) in [(false, &s.exit_low), (true, &s.exit_high)] {
                        if let Some(v) = vals.iter().find(|v| !(0.0..=1.0).contains(*v)) {
                            return Err(format!("space: stages.{name}: {v} is outside [0, 1]"));
                        }
                        if !vals.is_empty() {
                            exits.push((i, high, vals.iter().copied().map(Some).collect()));
                        }
                    }
                }
                weights = f.weights.into_iter().collect();
                boost = f.boost.into_iter().collect();
            }
        }
        Ok(Space { exits, weights, boost, base })
    }

    /// Settings in all: the product of the axes' lengths.
    pub fn size(&self) -> u64 {
        let lens =
            self.exits.iter().map(|e| e.2.len()).chain(self.weights.iter().chain(&self.boost).map(|w| w.1.len()));
        lens.fold(1u64, |a, l| a.saturating_mul(l as u64))
    }

    /// The `k`-th setting (mixed-radix over the axes); thresholds with low ≥ high are `None`.
    pub fn nth(&self, mut k: u64) -> Option<Setting> {
        let mut s = self.base.clone();
        for (i, high, vals) in &self.exits {
            let v = vals[(k % vals.len() as u64) as usize];
            k /= vals.len() as u64;
            if *high {
                s.exits[*i].1 = v;
            } else {
                s.exits[*i].0 = v;
            }
        }
        for (name, vals) in &self.weights {
            s.weights.insert(name.clone(), vals[(k % vals.len() as u64) as usize]);
            k /= vals.len() as u64;
        }
        for (name, vals) in &self.boost {
            s.boost.insert(name.clone(), vals[(k % vals.len() as u64) as usize]);
            k /= vals.len() as u64;
        }
        let ordered = s.exits.iter().all(|(lo, hi)| match (lo, hi) {
            (Some(l), Some(h)) => l < h,
            _ => true,
        });
        // with the weighted fuser at least one weight must count (without a fuser, the mean)
        let weighted = s.weights.is_empty() || s.weights.values().any(|w| *w > 0.0);
        (ordered && weighted).then_some(s)
    }
}

/// The fused score of `ev`, as `weighted` computes it (`None`: no weighted score, an error);
/// without a fuser (`weights` empty) the mean.
pub fn fuse(ev: &BTreeMap<String, f32>, s: &Setting, has_fuser: bool) -> Option<f32> {
    if !has_fuser {
        return (!ev.is_empty()).then(|| ev.values().sum::<f32>() / ev.len() as f32);
    }
    let (mut num, mut den, mut unboosted) = (0f32, 0f32, 1f32);
    for (name, score) in ev {
        if let Some(w) = s.weights.get(name) {
            num += w * score;
            den += w;
        } else if let Some(w) = s.boost.get(name) {
            unboosted *= 1.0 - w * score.clamp(0.0, 1.0);
        }
    }
    if den == 0.0 {
        return None;
    }
    let mean = (num / den).clamp(0.0, 1.0);
    Some(1.0 - (1.0 - mean) * unboosted)
}

/// What the router answers for one image: (prediction, stages run) or `None` (no answer).
pub fn decide(evidence: &[Option<BTreeMap<String, f32>>], s: &Setting, has_fuser: bool) -> Option<(f32, usize)> {
    let last = evidence.len().checked_sub(1)?;
    for (i, ev) in evidence.iter().enumerate() {
        let Some(ev) = ev.as_ref().filter(|e| !e.is_empty()) else {
            if i == last {
                return None;
            }
            continue;
        };
        let fused = fuse(ev, s, has_fuser)?;
        let (lo, hi) = s.exits.get(i).copied().unwrap_or((None, None));
        if i == last || lo.is_some_and(|l| fused <= l) || hi.is_some_and(|h| fused >= h) {
            let p = fused.clamp(0.0, 1.0);
            return Some((if p == 0.5 { 0.499 } else { p }, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(exits: Vec<(Option<f32>, Option<f32>)>) -> Setting {
        Setting { exits, weights: [("a".to_string(), 1.0), ("b".to_string(), 1.0)].into(), boost: BTreeMap::new() }
    }

    #[test]
    fn exits_and_fusion_follow_the_router() {
        let ev = |pairs: &[(&str, f32)]| Some(pairs.iter().map(|(n, v)| (n.to_string(), *v)).collect());
        let evidence = vec![ev(&[("a", 0.95)]), ev(&[("a", 0.95), ("b", 0.2)])];
        let s = setting(vec![(Some(0.1), Some(0.9)), (None, None)]);
        assert_eq!(decide(&evidence, &s, true), Some((0.95, 1)));
        let s = setting(vec![(Some(0.1), Some(0.97)), (None, None)]);
        let (p, stages) = decide(&evidence, &s, true).unwrap();
        assert!((p - 0.575).abs() < 1e-6 && stages == 2);
        // no evidence at a stage: the next one; none at the last: no answer
        assert_eq!(decide(&[None, ev(&[("b", 0.3)])], &s, true), Some((0.3, 2)));
        assert_eq!(decide(&[ev(&[("a", 0.5)]), None], &s, true), None);
    }

    #[test]
    fn the_space_enumerates_and_skips_crossed_thresholds() {
        let base = setting(vec![(Some(0.1), Some(0.9)), (None, None)]);
        let file = SpaceFile {
            stages: [("s0".to_string(), StageSpace { exit_low: vec![0.2, 0.5], exit_high: vec![0.4, 0.8] })].into(),
            ..SpaceFile::default()
        };
        let sp = Space::new(base.clone(), &["s0".into(), "s1".into()], Some(file)).unwrap();
        assert_eq!(sp.size(), 4);
        let valid: Vec<Setting> = (0..4).filter_map(|k| sp.nth(k)).collect();
        assert_eq!(valid.len(), 3, "0.5 ≥ 0.4 is skipped");
        let bad = SpaceFile { stages: [("s1".to_string(), StageSpace::default())].into(), ..SpaceFile::default() };
        assert!(Space::new(base.clone(), &["s0".into(), "s1".into()], Some(bad)).unwrap_err().contains("is the last"));
        let default = Space::new(base, &["s0".into(), "s1".into()], None).unwrap();
        assert_eq!(default.size(), 8 * 8, "the current values (0.1, 0.9) are on the grid");
        // without a fuser there are no weights, and every ordered setting is valid
        let unfused = Setting {
            exits: vec![(Some(0.1), Some(0.9)), (None, None)],
            weights: BTreeMap::new(),
            boost: BTreeMap::new(),
        };
        let sp = Space::new(unfused, &["s0".into(), "s1".into()], None).unwrap();
        assert_eq!((0..sp.size()).filter_map(|k| sp.nth(k)).count(), 64);
    }
}

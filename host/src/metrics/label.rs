//! Label values that cannot break the exposition or grow without bound. `prometheus-client`
//! writes label values verbatim, so every string label goes through `Label`, which keeps only
//! characters that need no escaping; names a component chooses (stages, models it asks for)
//! also go through `Bounded`, which caps how many distinct values one hotkey can create.

use std::collections::HashSet;
use std::fmt::Write;
use std::sync::Arc;

use parking_lot::RwLock;
use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// Longest label value kept; longer ones are cut.
pub(crate) const MAX_LABEL_LEN: usize = 64;

/// A label value made only of `[A-Za-z0-9_.:@/+-]`; anything else becomes `_`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label(Arc<str>);

impl Label {
    pub fn new(raw: &str) -> Label {
        let clean: String = raw
            .chars()
            .take(MAX_LABEL_LEN)
            .map(|c| if c.is_ascii_alphanumeric() || "_.:@/+-".contains(c) { c } else { '_' })
            .collect();
        Label(if clean.is_empty() { Arc::from("_") } else { Arc::from(clean) })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Label {
    fn from(s: &str) -> Label {
        Label::new(s)
    }
}

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

/// The value of a label that a guest chooses, per hotkey: the first `cap` distinct values are
/// kept, later new ones are reported as `other`. Reads (the common case) take a shared lock.
pub struct Bounded {
    seen: RwLock<HashSet<(Label, Label)>>,
    cap: usize,
}

impl Bounded {
    pub fn new(cap: usize) -> Bounded {
        Bounded { seen: RwLock::new(HashSet::new()), cap }
    }

    pub fn label(&self, hotkey: &Label, raw: &str) -> Label {
        let key = (hotkey.clone(), Label::new(raw));
        if self.seen.read().contains(&key) {
            return key.1;
        }
        let mut seen = self.seen.write();
        let of_hotkey = seen.iter().filter(|(h, _)| h == hotkey).count();
        if seen.contains(&key) || of_hotkey < self.cap {
            seen.insert(key.clone());
            key.1
        } else {
            Label::new("other")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_cannot_carry_quotes_newlines_or_length() {
        assert_eq!(Label::new("a\"} 1\ninjected_total 9").as_str(), "a___1_injected_total_9");
        assert_eq!(Label::new("").as_str(), "_");
        assert_eq!(Label::new(&"x".repeat(500)).as_str().len(), MAX_LABEL_LEN);
        assert_eq!(Label::new("roadwork:flip").as_str(), "roadwork:flip");
    }

    #[test]
    fn bounded_values_per_hotkey() {
        let b = Bounded::new(2);
        let (h, g) = (Label::new("h"), Label::new("g"));
        assert_eq!(b.label(&h, "a").as_str(), "a");
        assert_eq!(b.label(&h, "b").as_str(), "b");
        assert_eq!(b.label(&h, "c").as_str(), "other");
        assert_eq!(b.label(&h, "a").as_str(), "a");
        assert_eq!(b.label(&g, "c").as_str(), "c");
    }
}

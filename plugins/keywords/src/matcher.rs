//! Phrase matching over normalised text: lower-cased, with everything that is not a letter or
//! a digit removed, so "Road  Work", "ROADWORK" and "road-\nwork" are the same.

use std::collections::BTreeMap;

pub struct Matcher {
    positive: Vec<(Vec<char>, f32)>,
    negative: Vec<(Vec<char>, f32)>,
}

/// Summed weights of the phrases found (each phrase counts once).
#[derive(Debug, Default, PartialEq)]
pub struct Found {
    pub positive: f32,
    pub negative: f32,
}

pub fn normalise(s: &str) -> Vec<char> {
    s.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

fn compile(phrases: &BTreeMap<String, f32>) -> Result<Vec<(Vec<char>, f32)>, String> {
    let mut out: Vec<(Vec<char>, f32)> = Vec::with_capacity(phrases.len());
    for (p, w) in phrases {
        let n = normalise(p);
        if n.is_empty() {
            return Err(format!("phrase {p:?} has no letters or digits"));
        }
        out.push((n, *w));
    }
    // Longer phrases first, so a long negative masks before a shorter one inside it.
    out.sort_by_key(|b| std::cmp::Reverse(b.0.len()));
    Ok(out)
}

impl Matcher {
    pub fn new(positive: &BTreeMap<String, f32>, negative: &BTreeMap<String, f32>) -> Result<Self, String> {
        Ok(Matcher { positive: compile(positive)?, negative: compile(negative)? })
    }

    pub fn score(&self, text: &str) -> Found {
        // `None` marks a masked character: it can be part of no later match.
        let mut t: Vec<Option<char>> = normalise(text).into_iter().map(Some).collect();
        let mut found = Found::default();
        for (phrase, w) in &self.negative {
            if mask_all(&mut t, phrase) {
                found.negative += w;
            }
        }
        for (phrase, w) in &self.positive {
            if mask_all(&mut t, phrase) {
                found.positive += w;
            }
        }
        found
    }
}

/// Masks every occurrence of `phrase` in `t`; true when there was one.
fn mask_all(t: &mut [Option<char>], phrase: &[char]) -> bool {
    let n = phrase.len();
    if n > t.len() {
        return false;
    }
    let mut hit = false;
    let mut i = 0;
    while i + n <= t.len() {
        if t[i..i + n].iter().zip(phrase).all(|(a, b)| *a == Some(*b)) {
            t[i..i + n].iter_mut().for_each(|c| *c = None);
            hit = true;
            i += n;
        } else {
            i += 1;
        }
    }
    hit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> Matcher {
        let pos = [("road work", 1.0), ("workers ahead", 1.0), ("baustelle", 1.0)];
        let neg = [("end road work", 1.5), ("road work ends", 1.5)];
        let pos = pos.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let neg = neg.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        Matcher::new(&pos, &neg).unwrap()
    }

    #[test]
    fn spacing_case_and_line_breaks() {
        assert_eq!(m().score("ROAD\nWORK  ahead").positive, 1.0);
        assert_eq!(m().score("Roadwork").positive, 1.0);
    }

    #[test]
    fn negative_masks_inner_positive() {
        let f = m().score("END ROAD WORK");
        assert_eq!(f, Found { positive: 0.0, negative: 1.5 });
    }

    #[test]
    fn non_english() {
        assert_eq!(m().score("BAUSTELLE").positive, 1.0);
    }
}

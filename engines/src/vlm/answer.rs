//! A chat-completions reply to an [`Answer`]: the text after any reasoning block, and for a
//! yes/no question P(yes) from the first answer token's log-probabilities when the endpoint
//! gave them, else from the answer's words.

use serde_json::Value;

use crate::engine::{Answer, ScoreSource};

/// Why a reply could not be read (the caller names the model and the server).
#[derive(Debug, PartialEq)]
pub(crate) enum BadReply {
    Json(String),
    NoChoices,
    NoContent(String),
}

impl std::fmt::Display for BadReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadReply::Json(e) => write!(f, "malformed JSON: {e}"),
            BadReply::NoChoices => write!(f, "the reply has no choices"),
            BadReply::NoContent(why) => write!(f, "the reply has no answer text ({why})"),
        }
    }
}

/// Closing tags of the reasoning blocks thinking models write before their answer.
const REASONING_ENDS: [&str; 3] = ["</think>", "</thinking>", "</reasoning>"];

/// Reads a chat-completions body.
pub(crate) fn read(body: &str) -> Result<Answer, BadReply> {
    let v: Value = serde_json::from_str(body).map_err(|e| BadReply::Json(e.to_string()))?;
    let choice = v.get("choices").and_then(Value::as_array).and_then(|c| c.first()).ok_or(BadReply::NoChoices)?;
    let message = choice.get("message").ok_or_else(|| BadReply::NoContent("no message".into()))?;
    let content = match message.get("content").and_then(Value::as_str) {
        Some(c) => c,
        None => {
            // OpenAI's structured refusal: an answer, though not a yes or a no
            if let Some(r) = message.get("refusal").and_then(Value::as_str) {
                return Ok(Answer { text: r.trim().to_string(), p_yes: None, source: ScoreSource::None });
            }
            let finish = choice.get("finish_reason").and_then(Value::as_str).unwrap_or("unknown");
            return Err(BadReply::NoContent(format!("finish_reason {finish}")));
        }
    };
    let text = after_reasoning(content).trim().to_string();
    if let Some(p) =
        choice.get("logprobs").and_then(|l| l.get("content")).and_then(Value::as_array).and_then(|t| from_logprobs(t))
    {
        return Ok(Answer { text, p_yes: Some(p), source: ScoreSource::Logprobs });
    }
    Ok(match from_words(&text) {
        Some(p) => Answer { text, p_yes: Some(p), source: ScoreSource::Parsed },
        None => Answer { text, p_yes: None, source: ScoreSource::None },
    })
}

/// The text after the last reasoning block; an unclosed block (cut by `max_tokens`) leaves
/// nothing.
pub(crate) fn after_reasoning(s: &str) -> &str {
    let end = REASONING_ENDS.iter().filter_map(|t| s.rfind(t).map(|i| i + t.len())).max();
    match end {
        Some(e) => &s[e..],
        None if s.trim_start().starts_with("<think") || s.trim_start().starts_with("<reasoning") => "",
        None => s,
    }
}

/// A token or word as compared: lower case, letters only.
fn norm(t: &str) -> String {
    t.chars().filter(|c| c.is_alphabetic()).flat_map(char::to_lowercase).collect()
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Polarity {
    Yes,
    No,
}

fn polarity(word: &str) -> Option<Polarity> {
    match word {
        "yes" | "yeah" | "yep" | "true" | "affirmative" | "ja" | "oui" | "si" => Some(Polarity::Yes),
        "no" | "nope" | "false" | "negative" | "nein" | "non" => Some(Polarity::No),
        _ => None,
    }
}

/// P(yes) from the first answer token's alternatives: the probability mass of yes-like tokens
/// over yes-like plus no-like ones. Tokens of a reasoning block and empty or punctuation-only
/// tokens (`**`, a quote) are skipped; `None` when the first word token is neither a yes nor a
/// no (the answer is then read from its words).
fn from_logprobs(tokens: &[Value]) -> Option<f32> {
    // skip a reasoning block: everything up to the token that completes its closing tag
    let mut seen = String::new();
    let mut start = 0;
    for (i, t) in tokens.iter().enumerate() {
        seen.push_str(t.get("token").and_then(Value::as_str).unwrap_or(""));
        if REASONING_ENDS.iter().any(|e| seen.ends_with(e) || seen.trim_end().ends_with(e)) {
            start = i + 1;
        }
    }
    let first =
        tokens[start..].iter().find(|t| !norm(t.get("token").and_then(Value::as_str).unwrap_or("")).is_empty())?;
    let word = norm(first.get("token")?.as_str()?);
    let own = polarity(&word)?;
    let (mut yes, mut no) = (0.0f64, 0.0f64);
    let mut add = |tok: &str, lp: f64| match polarity(&norm(tok)) {
        Some(Polarity::Yes) => yes += lp.exp(),
        Some(Polarity::No) => no += lp.exp(),
        None => {}
    };
    match first.get("top_logprobs").and_then(Value::as_array).filter(|a| !a.is_empty()) {
        Some(alts) => {
            for a in alts {
                if let (Some(t), Some(lp)) =
                    (a.get("token").and_then(Value::as_str), a.get("logprob").and_then(Value::as_f64))
                {
                    add(t, lp);
                }
            }
        }
        None => {
            // only the chosen token's own probability: the rest counts for the other side
            let p = first.get("logprob").and_then(Value::as_f64)?.exp();
            return Some(match own {
                Polarity::Yes => p as f32,
                Polarity::No => (1.0 - p) as f32,
            });
        }
    }
    if yes + no <= 0.0 {
        return None;
    }
    Some((yes / (yes + no)) as f32)
}

/// P(yes) from the words of an answer: a leading yes or no, made stronger or weaker by the
/// certainty words the operators' plans ask for ("definitely", "likely", "possibly", ...).
/// `None` for anything else (a refusal, a description).
pub(crate) fn from_words(text: &str) -> Option<f32> {
    let words: Vec<String> = text.split_whitespace().take(12).map(norm).filter(|w| !w.is_empty()).collect();
    let has = |w: &str| words.iter().any(|x| x == w);
    let strong = has("definitely") || has("certainly") || has("clearly") || has("absolutely");
    let weak = has("likely") || has("probably");
    let unsure = has("possibly") || has("maybe") || has("perhaps") || has("unclear") || has("uncertain");
    let negated = has("not") || has("unlikely");
    let first = words.first().and_then(|w| polarity(w));
    let side = match first {
        Some(p) => p,
        // "likely", "probably not", "unlikely": a hedged answer without yes or no
        None if has("unlikely") || ((weak || strong) && negated) => Polarity::No,
        None if weak || unsure || strong => Polarity::Yes,
        None => return None,
    };
    let strength = if strong {
        0.97
    } else if first.is_some() && !weak && !unsure {
        0.9
    } else if weak || has("unlikely") {
        0.75
    } else {
        0.6
    };
    Some(match side {
        Polarity::Yes => strength,
        Polarity::No => 1.0 - strength,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reply(content: Value, logprobs: Value) -> String {
        json!({"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": logprobs, "finish_reason": "stop"}]}).to_string()
    }

    fn tok(t: &str, lp: f64, top: &[(&str, f64)]) -> Value {
        json!({"token": t, "logprob": lp, "top_logprobs": top.iter().map(|(t, l)| json!({"token": t, "logprob": l})).collect::<Vec<_>>()})
    }

    #[test]
    fn logprobs_give_p_yes_from_the_first_word_token() {
        let lp = json!({"content": [tok("**", -0.01, &[]), tok("Yes", -0.2, &[("Yes", -0.2), (" yes", -3.0), ("No", -1.8), ("Maybe", -4.0)])]});
        let a = read(&reply(json!("**Yes**"), lp)).unwrap();
        let (y, n) = ((-0.2f64).exp() + (-3.0f64).exp(), (-1.8f64).exp());
        assert_eq!(a.source, ScoreSource::Logprobs);
        assert!((a.p_yes.unwrap() as f64 - y / (y + n)).abs() < 1e-6, "{a:?}");
        assert_eq!(a.text, "**Yes**");
        // worked out by hand: P(Yes) 0.6 and P(No) 0.2 among the alternatives -> 0.6 / 0.8 = 0.75
        let lp = json!({"content": [tok("Yes", 0.6f64.ln(), &[("Yes", 0.6f64.ln()), ("No", 0.2f64.ln())])]});
        let a = read(&reply(json!("Yes"), lp)).unwrap();
        assert!((a.p_yes.unwrap() - 0.75).abs() < 1e-6, "{a:?}");
    }

    #[test]
    fn a_reasoning_block_is_skipped_in_text_and_tokens() {
        let lp = json!({"content": [tok("<think>", -0.1, &[]), tok("yes it is", -0.1, &[]), tok("</think>", -0.1, &[]), tok("\n", -0.1, &[]), tok("NO", -0.1, &[("NO", -0.1), ("YES", -2.4)])]});
        let a = read(&reply(json!("<think>yes it is</think>\nNO"), lp)).unwrap();
        assert_eq!(a.text, "NO");
        assert!(a.p_yes.unwrap() < 0.2, "{a:?}");
        // cut inside the reasoning: no answer at all
        assert_eq!(after_reasoning("<think>still thinking"), "");
        assert_eq!(after_reasoning("Yes"), "Yes");
    }

    #[test]
    fn without_logprobs_the_words_decide() {
        for (text, p) in [
            ("Yes.", 0.9),
            ("No", 0.1),
            ("YES, definitely active construction", 0.97),
            ("Definitely not.", 0.03),
            ("Likely yes", 0.75),
            ("Probably not", 0.25),
            ("Unlikely.", 0.25),
            ("Possibly", 0.6),
        ] {
            let a = read(&reply(json!(text), Value::Null)).unwrap();
            assert_eq!(a.source, ScoreSource::Parsed, "{text}");
            assert!((a.p_yes.unwrap() - p).abs() < 1e-6, "{text}: {a:?}");
        }
        let a = read(&reply(json!("The image shows a street with parked cars."), Value::Null)).unwrap();
        assert_eq!((a.p_yes, a.source), (None, ScoreSource::None));
    }

    #[test]
    fn a_first_token_that_is_no_yes_or_no_falls_back_to_the_words() {
        let lp = json!({"content": [tok("Likely", -0.3, &[("Likely", -0.3), ("Yes", -1.5)])]});
        let a = read(&reply(json!("Likely yes"), lp)).unwrap();
        assert_eq!((a.source, a.p_yes), (ScoreSource::Parsed, Some(0.75)));
        // no alternatives: the chosen token's own probability
        let lp = json!({"content": [{"token": "No", "logprob": -0.1}]});
        let a = read(&reply(json!("No"), lp)).unwrap();
        assert!((a.p_yes.unwrap() as f64 - (1.0 - (-0.1f64).exp())).abs() < 1e-6);
    }

    #[test]
    fn bad_replies_are_typed() {
        assert!(matches!(read("{\"choices\": [").unwrap_err(), BadReply::Json(_)));
        assert_eq!(read("{\"choices\": []}").unwrap_err(), BadReply::NoChoices);
        assert_eq!(read("{\"error\": {\"message\": \"x\"}}").unwrap_err(), BadReply::NoChoices);
        let none = json!({"choices": [{"message": {"role": "assistant", "content": null}, "finish_reason": "length"}]});
        assert!(matches!(read(&none.to_string()).unwrap_err(), BadReply::NoContent(w) if w.contains("length")));
        let refusal = json!({"choices": [{"message": {"role": "assistant", "content": null, "refusal": "I can't help with that."}}]});
        let a = read(&refusal.to_string()).unwrap();
        assert_eq!((a.p_yes, a.source), (None, ScoreSource::None));
    }
}

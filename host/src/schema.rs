//! The JSON Schema subset components declare for their parameters: `type`, `properties`,
//! `required`, `additionalProperties`, `items`, `enum`, `minimum`, `maximum`, `minItems`,
//! `maxItems` (`description` and `default` are allowed and ignored). Every violation is
//! reported with the path of the offending key.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Where, e.g. `stages[1].exit_low`; empty for the top level.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

const KEYWORDS: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "description",
    "default",
];

/// Refuses schemas that use keywords this validator does not implement (they would be
/// silently ignored otherwise).
pub(crate) fn check_schema(schema: &Value) -> Result<(), String> {
    let Value::Object(m) = schema else {
        return match schema {
            Value::Bool(_) => Ok(()),
            _ => Err("a schema must be an object or a boolean".into()),
        };
    };
    for (k, v) in m {
        if !KEYWORDS.contains(&k.as_str()) {
            return Err(format!("unsupported keyword {k:?}"));
        }
        match k.as_str() {
            "properties" => {
                let Value::Object(props) = v else { return Err("properties must be an object".into()) };
                for s in props.values() {
                    check_schema(s)?;
                }
            }
            "items" | "additionalProperties" => check_schema(v)?,
            _ => {}
        }
    }
    Ok(())
}

pub fn validate(value: &Value, schema: &Value) -> Vec<Violation> {
    let mut out = Vec::new();
    walk(value, schema, "", &mut out);
    out
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_type(v: &Value, t: &str) -> bool {
    let actual = type_name(v);
    actual == t || (t == "number" && actual == "integer")
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn walk(v: &Value, schema: &Value, path: &str, out: &mut Vec<Violation>) {
    let mut bad = |message: String| out.push(Violation { path: path.to_string(), message });
    let s = match schema {
        Value::Bool(true) => return,
        Value::Bool(false) => return bad("no value is allowed here".into()),
        Value::Object(s) => s,
        _ => return,
    };
    if let Some(t) = s.get("type") {
        let types: Vec<&str> = match t {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !types.is_empty() && !types.iter().any(|t| is_type(v, t)) {
            return bad(format!("expected {}, found {}", types.join(" or "), type_name(v)));
        }
    }
    if let Some(Value::Array(allowed)) = s.get("enum") {
        if !allowed.contains(v) {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            bad(format!("{v} is not one of {}", list.join(", ")));
        }
    }
    if let Some(x) = v.as_f64() {
        if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
            if x < min {
                bad(format!("{x} is below the minimum {min}"));
            }
        }
        if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
            if x > max {
                bad(format!("{x} is above the maximum {max}"));
            }
        }
    }
    match v {
        Value::Array(items) => {
            if let Some(min) = s.get("minItems").and_then(Value::as_u64) {
                if (items.len() as u64) < min {
                    bad(format!("needs at least {min} items, has {}", items.len()));
                }
            }
            if let Some(max) = s.get("maxItems").and_then(Value::as_u64) {
                if (items.len() as u64) > max {
                    bad(format!("allows at most {max} items, has {}", items.len()));
                }
            }
            if let Some(item) = s.get("items") {
                for (i, x) in items.iter().enumerate() {
                    walk(x, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        Value::Object(map) => {
            if let Some(Value::Array(req)) = s.get("required") {
                for k in req.iter().filter_map(Value::as_str) {
                    if !map.contains_key(k) {
                        out.push(Violation { path: join(path, k), message: "required key is missing".into() });
                    }
                }
            }
            let props = s.get("properties").and_then(Value::as_object);
            for (k, x) in map {
                let p = join(path, k);
                match props.and_then(|p| p.get(k)) {
                    Some(sub) => walk(x, sub, &p, out),
                    None => match s.get("additionalProperties") {
                        Some(Value::Bool(false)) => out.push(Violation { path: p, message: "unknown key".into() }),
                        Some(sub) => walk(x, sub, &p, out),
                        None => {}
                    },
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn names_unknown_and_ill_typed_keys() {
        let schema = json!({
            "type": "object", "additionalProperties": false, "required": ["stages"],
            "properties": {"stages": {"type": "array", "items": {
                "type": "object", "additionalProperties": false,
                "properties": {"exit_low": {"type": "number", "minimum": 0, "maximum": 1}}
            }}}
        });
        let v = json!({"stages": [{"exit_low": "x"}, {"exit_lo": 0.1}, {"exit_low": 2}], "extra": 1});
        let got: Vec<String> = validate(&v, &schema).iter().map(|e| e.to_string()).collect();
        assert_eq!(
            got,
            vec![
                "extra: unknown key",
                "stages[0].exit_low: expected number, found string",
                "stages[1].exit_lo: unknown key",
                "stages[2].exit_low: 2 is above the maximum 1",
            ]
        );
        assert!(validate(&json!({}), &schema)[0].to_string().contains("stages: required"));
    }

    #[test]
    fn refuses_unsupported_keywords() {
        assert!(check_schema(&json!({"type": "object", "pattern": "x"})).is_err());
        assert!(check_schema(&json!({"type": "object", "properties": {"a": {"maximum": 1}}})).is_ok());
    }
}

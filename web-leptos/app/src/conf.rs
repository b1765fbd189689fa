//! The run conf form's checks, done in the browser before a trigger is sent: the text must be
//! a JSON object, and each param the DAG declares (a JSON schema `{"type":"object",
//! "properties":{…},"required":[…]}`) must have the declared type, enum value and bounds. The
//! server checks again; this only says earlier which param is wrong.

use serde_json::{Map, Value};

/// The conf a trigger form starts from: every param's `default`.
pub fn defaults(params: &Value) -> Value {
    let mut conf = Map::new();
    if let Some(properties) = params.get("properties").and_then(Value::as_object) {
        for (name, schema) in properties {
            if let Some(default) = schema.get("default") {
                conf.insert(name.clone(), default.clone());
            }
        }
    }
    Value::Object(conf)
}

/// Parses the form's text and checks it against the params; the error names the param.
pub fn check(params: &Value, text: &str) -> Result<Value, String> {
    let text = text.trim();
    let conf: Value = if text.is_empty() {
        Value::Object(Map::new())
    } else {
        serde_json::from_str(text)
            .map_err(|error| format!("the conf is not valid JSON: {error}"))?
    };
    let Some(object) = conf.as_object() else {
        return Err("the conf must be a JSON object, e.g. {\"rows\": 10}".into());
    };
    let properties = params.get("properties").and_then(Value::as_object);
    if let Some(required) = params.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            let has_default = properties
                .and_then(|p| p.get(name))
                .is_some_and(|schema| schema.get("default").is_some());
            if !object.contains_key(name) && !has_default {
                return Err(format!("param {name} is required"));
            }
        }
    }
    if let Some(properties) = properties {
        for (name, value) in object {
            if let Some(schema) = properties.get(name) {
                check_value(name, schema, value)?;
            }
        }
    }
    Ok(conf)
}

fn type_matches(expected: &str, value: &Value) -> bool {
    match expected {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "null" => value.is_null(),
        _ => true,
    }
}

fn check_value(name: &str, schema: &Value, value: &Value) -> Result<(), String> {
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !types.is_empty() && !types.iter().any(|t| type_matches(t, value)) {
        return Err(format!(
            "param {name} must be of type {}, not {value}",
            types.join(" or ")
        ));
    }
    if let Some(choices) = schema.get("enum").and_then(Value::as_array) {
        if !choices.contains(value) {
            let list: Vec<String> = choices.iter().map(Value::to_string).collect();
            return Err(format!("param {name} must be one of {}", list.join(", ")));
        }
    }
    if let Some(number) = value.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
            if number < min {
                return Err(format!("param {name} must be at least {min}"));
            }
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
            if number > max {
                return Err(format!("param {name} must be at most {max}"));
            }
        }
    }
    if let Some(text) = value.as_str() {
        let length = text.chars().count() as u64;
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
            if length < min {
                return Err(format!("param {name} must be at least {min} characters"));
            }
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
            if length > max {
                return Err(format!("param {name} must be at most {max} characters"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params() -> Value {
        json!({
            "type": "object",
            "properties": {
                "rows": {"type": "integer", "default": 10, "minimum": 1},
                "mode": {"type": "string", "enum": ["fast", "full"]},
                "note": {"type": ["string", "null"], "maxLength": 5}
            },
            "required": ["rows", "mode"]
        })
    }

    #[test]
    fn defaults_fill_the_form() {
        assert_eq!(defaults(&params()), json!({"rows": 10}));
        assert_eq!(defaults(&json!({})), json!({}));
    }

    #[test]
    fn names_the_failing_param() {
        let p = params();
        assert_eq!(
            check(&p, r#"{"mode":"fast"}"#).unwrap(),
            json!({"mode": "fast"})
        );
        assert_eq!(check(&p, "{}").unwrap_err(), "param mode is required");
        assert!(check(&p, r#"{"mode":"fast","rows":"x"}"#)
            .unwrap_err()
            .starts_with("param rows must be of type integer"));
        assert_eq!(
            check(&p, r#"{"mode":"fast","rows":0}"#).unwrap_err(),
            "param rows must be at least 1"
        );
        assert!(check(&p, r#"{"mode":"slow"}"#)
            .unwrap_err()
            .starts_with("param mode must be one of"));
        assert_eq!(
            check(&p, r#"{"mode":"fast","note":"toolong"}"#).unwrap_err(),
            "param note must be at most 5 characters"
        );
        assert!(check(&p, r#"{"mode":"fast","note":null}"#).is_ok());
        assert!(check(&p, "[1]").unwrap_err().contains("JSON object"));
        assert!(check(&p, "{").unwrap_err().contains("not valid JSON"));
        assert!(check(&json!({}), "").is_ok());
    }
}

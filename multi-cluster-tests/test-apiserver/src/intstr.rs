//! IntOrString values (`3`, `"25%"`) as apimachinery's `intstr` resolves
//! them: validated by the store on write, resolved by the Deployment
//! controller against a replica count.

use serde_json::Value;

/// Resolves an IntOrString (`3`, `"25%"`) against `total`, rounding a
/// percentage up or down as the Deployment controller does.
pub fn int_or_percent(v: &Value, total: i64, round_up: bool) -> Result<i64, String> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .filter(|n| *n >= 0)
            .ok_or_else(|| format!("Invalid value: {n}: must be greater than or equal to 0")),
        Value::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .filter(|p| *p >= 0)
                .ok_or_else(|| {
                    format!("Invalid value: {s:?}: a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%')")
                })?;
            let scaled = total * pct;
            Ok(if round_up {
                (scaled + 99) / 100
            } else {
                scaled / 100
            })
        }
        other => Err(format!(
            "Invalid value: {other}: must be an integer or a percentage"
        )),
    }
}

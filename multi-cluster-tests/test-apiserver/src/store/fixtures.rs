//! What the defaulting and admission tests both start from: the
//! Deployment type and a minimal Deployment, normalized as the store does.

use serde_json::{Value, json};

use crate::registry::{Registry, ResourceType};
use crate::status::ApiResult;

pub(crate) fn deployments() -> ResourceType {
    Registry::new()
        .get("apps", "v1", "deployments")
        .cloned()
        .unwrap()
}

pub(crate) fn minimal() -> Value {
    json!({
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "img"}]}},
        },
    })
}

/// A write's defaulting then admission, as the store runs them.
pub(crate) fn normalize(rt: &ResourceType, body: &mut Value) -> ApiResult<()> {
    crate::store::defaulting::normalize(rt, body)?;
    crate::store::admission::validate(rt, body)
}

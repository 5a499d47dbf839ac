//! Query-string parameters as kube-apiserver decodes them.

/// A boolean query parameter (`watch`, `allowWatchBookmarks`,
/// `sendInitialEvents`) given with `value`, decoded as kube-apiserver's
/// parameter codec does (apimachinery's `Convert_Slice_string_To_bool`):
/// only `0` and `false` in any letter case mean false; every other value,
/// the empty one included, means true. It never refuses a value, so
/// neither does this server: `watch=True` (the Python client), `watch=1`
/// and `watch=true` (client-go, kube-rs) all watch, and an absent parameter
/// (no value at all) is false.
pub fn kube_bool(value: Option<&str>) -> bool {
    match value {
        None => false,
        Some(v) => !(v == "0" || v.eq_ignore_ascii_case("false")),
    }
}

#[cfg(test)]
mod tests;

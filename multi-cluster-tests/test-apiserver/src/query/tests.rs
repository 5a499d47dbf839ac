use super::*;

#[test]
fn booleans_decode_as_kube_apiserver_does() {
    // What clients send: Python `True`, client-go and kube-rs `true`, curl users `1`.
    for v in ["true", "True", "TRUE", "1", "t", "T", "yes", ""] {
        assert!(kube_bool(Some(v)), "{v:?} is true");
    }
    for v in ["false", "False", "FALSE", "fAlSe", "0"] {
        assert!(!kube_bool(Some(v)), "{v:?} is false");
    }
    assert!(!kube_bool(None), "an absent parameter is false");
}

#[test]
fn only_the_exact_zero_is_false() {
    // Not a number parse: "00" and " 0" are other values, hence true.
    for v in ["00", " 0", "f", "F", "no", "off"] {
        assert!(kube_bool(Some(v)), "{v:?} is true for kube-apiserver");
    }
}

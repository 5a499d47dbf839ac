use super::*;

#[derive(Debug)]
struct Layer {
    text: String,
    source: Option<Box<Layer>>,
}

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for Layer {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

fn layer(text: &str, source: Option<Layer>) -> Layer {
    Layer {
        text: text.into(),
        source: source.map(Box::new),
    }
}

#[test]
fn report_names_each_cause_once() {
    // The middle layer already quotes its cause; the outer one does not.
    let root = layer("permission denied", None);
    let middle = layer("read /etc/key: permission denied", Some(root));
    let outer = layer("cannot start the WireGuard device", Some(middle));
    assert_eq!(
        report(&outer),
        "cannot start the WireGuard device: read /etc/key: permission denied"
    );
    assert_eq!(report(&layer("alone", None)), "alone");
}

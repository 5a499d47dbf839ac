//! Packet capture: tcpdump on an interface inside a test namespace, written
//! to a pcap file that is removed when the result drops.
//!
//! Tests use it to check what crossed a wire (the underlay bridge, one of its
//! ports): that a payload marker is absent once encrypted, that only
//! WireGuard packets went by, that the capture saw the control packet that
//! proves it worked.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns::{NetNs, unique_name};

/// A running tcpdump (full packets, unbuffered) on one interface of a
/// namespace. [`Capture::stop`] ends it and returns what it wrote; dropped
/// without stopping, it is killed and its file removed.
#[derive(Debug)]
pub struct Capture {
    child: Option<Child>,
    file: PathBuf,
}

impl Capture {
    /// Starts tcpdump on `iface` inside `ns`; returns once tcpdump says it is
    /// listening (the capture is armed), at most 10 s.
    ///
    /// On a bridge, capture on a port rather than on the bridge device when
    /// the frames of interest are forwarded between ports: once MACs are
    /// learned the bridge device itself sees only frames addressed to it.
    pub fn start(ns: &NetNs, iface: &str) -> Capture {
        let file = std::env::temp_dir().join(format!("{}.pcap", unique_name("cap")));
        let mut child = ns
            .command("tcpdump")
            .args(["-i", iface, "-n", "-U", "--immediate-mode", "-s", "0", "-w"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "start tcpdump in {} (scripts/setup.sh installs it): {e}",
                    ns.name()
                )
            });
        let mut err = child.stderr.take().expect("tcpdump stderr is piped");
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut b = [0u8; 256];
        while !String::from_utf8_lossy(&seen).contains("listening on") {
            assert!(
                Instant::now() < deadline,
                "tcpdump on {iface} in {} did not start: {}",
                ns.name(),
                String::from_utf8_lossy(&seen)
            );
            let n = err.read(&mut b).unwrap_or(0);
            assert!(n > 0, "tcpdump exited: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&b[..n]);
        }
        // The rest of its stderr (the packet count at exit) goes to the
        // test's output, and the pipe never fills.
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = err.read_to_string(&mut rest);
            eprintln!("tcpdump: {}{rest}", String::from_utf8_lossy(&seen));
        });
        Capture {
            child: Some(child),
            file,
        }
    }

    /// Stops tcpdump (SIGINT, after a moment for the last packets, flushes
    /// it) and returns what it captured.
    pub fn stop(mut self) -> Captured {
        if let Some(mut child) = self.child.take() {
            std::thread::sleep(Duration::from_millis(300));
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
        let file = std::mem::take(&mut self.file);
        let bytes =
            std::fs::read(&file).unwrap_or_else(|e| panic!("read capture {}: {e}", file.display()));
        Captured { file, bytes }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !self.file.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.file);
        }
    }
}

/// What a stopped [`Capture`] wrote: the pcap bytes, and the file for
/// reading it again through a tcpdump filter.
#[derive(Debug)]
pub struct Captured {
    file: PathBuf,
    bytes: Vec<u8>,
}

impl Captured {
    /// The raw pcap file (header, records, payloads).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The pcap file on disk (removed when this drops).
    pub fn path(&self) -> &Path {
        &self.file
    }

    /// The captured frames (Ethernet), in order.
    pub fn frames(&self) -> Vec<Vec<u8>> {
        parse_pcap(&self.bytes)
    }

    /// Whether `needle` appears anywhere in the captured bytes.
    pub fn contains(&self, needle: &[u8]) -> bool {
        self.bytes.windows(needle.len()).any(|w| w == needle)
    }

    /// `tcpdump -nn -r` of the file through `filter`: one line a packet.
    pub fn text(&self, filter: &str) -> String {
        let out = Command::new("tcpdump")
            .args(["-nn", "-r"])
            .arg(&self.file)
            .arg(filter)
            .output()
            .unwrap_or_else(|e| panic!("tcpdump -r {}: {e}", self.file.display()));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// How many captured packets match `filter`.
    pub fn count(&self, filter: &str) -> usize {
        self.text(filter).lines().count()
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// Frames of a classic pcap file (Ethernet link type).
pub fn parse_pcap(data: &[u8]) -> Vec<Vec<u8>> {
    assert!(data.len() >= 24, "pcap file too short");
    let magic = u32::from_le_bytes(data[0..4].try_into().expect("4 bytes"));
    assert!(
        magic == 0xa1b2c3d4 || magic == 0xa1b23c4d,
        "unexpected pcap magic {magic:x}"
    );
    let mut frames = Vec::new();
    let mut off = 24;
    while off + 16 <= data.len() {
        let incl =
            u32::from_le_bytes(data[off + 8..off + 12].try_into().expect("4 bytes")) as usize;
        off += 16;
        if off + incl > data.len() {
            break;
        }
        frames.push(data[off..off + incl].to_vec());
        off += incl;
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pcap_file_reads_as_its_frames_and_a_cut_record_ends_it() {
        let mut f = Vec::new();
        f.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
        f.extend_from_slice(&[0; 20]);
        for frame in [&b"abc"[..], b"de"] {
            f.extend_from_slice(&[0; 8]);
            f.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            f.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            f.extend_from_slice(frame);
        }
        let mut cut = f.clone();
        cut.extend_from_slice(&[0; 8]);
        cut.extend_from_slice(&100u32.to_le_bytes());
        cut.extend_from_slice(&[0; 4]);
        assert_eq!(parse_pcap(&f), vec![b"abc".to_vec(), b"de".to_vec()]);
        assert_eq!(parse_pcap(&cut), parse_pcap(&f));
    }
}

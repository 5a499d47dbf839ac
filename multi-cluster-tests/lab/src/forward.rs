//! The lab's port forwarder: host loopback → an address inside a lab
//! namespace, as kind's port mapping does for its API servers. It lets
//! `kubectl` and `meshctl` in the host namespace reach a cluster's API server
//! without any route from the host into the lab.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::thread;

/// Listens on `listen` (host namespace) and forwards each connection to `to`
/// inside namespace `netns`. Writes the bound port to `port_file`, then
/// serves until killed.
pub fn serve(
    netns: &str,
    to: SocketAddr,
    listen: SocketAddr,
    port_file: &Path,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)?;
    // One thread lives in the lab namespace and opens the inner connections.
    let (req_tx, req_rx) = mpsc::channel::<mpsc::Sender<io::Result<TcpStream>>>();
    let (ready_tx, ready_rx) = mpsc::channel();
    let ns = netns.to_string();
    thread::spawn(move || {
        let entered = crate::netns::enter(&ns);
        let failed = entered.is_err();
        let _ = ready_tx.send(entered);
        if failed {
            return;
        }
        for reply in req_rx {
            let _ = reply.send(TcpStream::connect(to));
        }
    });
    ready_rx.recv()??;
    let tmp = port_file.with_extension("tmp");
    std::fs::write(&tmp, listener.local_addr()?.port().to_string())?;
    std::fs::rename(&tmp, port_file)?;
    for outer in listener.incoming() {
        let Ok(outer) = outer else { continue };
        let (tx, rx) = mpsc::channel();
        if req_tx.send(tx).is_err() {
            anyhow::bail!("the namespace thread of {netns} stopped");
        }
        match rx.recv()? {
            Ok(inner) => pipe(outer, inner),
            Err(e) => eprintln!("forward to {to} in {netns}: {e}"),
        }
    }
    Ok(())
}

fn pipe(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    thread::spawn(move || copy_then_shutdown(a, b));
    thread::spawn(move || copy_then_shutdown(b2, a2));
}

fn copy_then_shutdown(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(std::net::Shutdown::Write);
}

//! A small blocking client of the agent's local API (HTTP/1.1 over the unix
//! socket, std only), for the CNI plugin (which must not need an async
//! runtime), meshctl, tests and tools.

use std::io::{BufRead as _, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::endpoint::{Endpoint, EndpointRegistration};
use crate::error::{Error, Result};
use crate::flows::{FlowFilter, FlowRecord};
use crate::status::AgentStatus;

/// Client of one agent's socket.
#[derive(Debug, Clone)]
pub struct AgentClient {
    socket: PathBuf,
    timeout: Duration,
}

impl AgentClient {
    /// A client of the agent listening on `socket` (10 s timeout per request).
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        AgentClient {
            socket: socket.into(),
            timeout: Duration::from_secs(10),
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET /v1/status`.
    pub fn status(&self) -> Result<AgentStatus> {
        self.json("GET", "/v1/status", None)
    }

    /// `GET /v1/endpoints`.
    pub fn endpoints(&self) -> Result<Vec<Endpoint>> {
        self.json("GET", "/v1/endpoints", None)
    }

    /// `GET /v1/services`.
    pub fn services(&self) -> Result<Vec<crate::datapath::ServiceEntry>> {
        self.json("GET", "/v1/services", None)
    }

    /// `GET /v1/ipcache`.
    pub fn ipcache(&self) -> Result<Vec<crate::datapath::IpcacheEntry>> {
        self.json("GET", "/v1/ipcache", None)
    }

    /// `GET /v1/nodes`: every cluster's nodes, as the mesh feed holds them.
    pub fn nodes(&self) -> Result<Vec<mesh_api::NodeRecord>> {
        self.json("GET", "/v1/nodes", None)
    }

    /// `GET /v1/policies`.
    pub fn policies(&self) -> Result<Vec<crate::policy::EndpointPolicyReport>> {
        self.json("GET", "/v1/policies", None)
    }

    /// `GET /v1/encryption`.
    pub fn encryption(&self) -> Result<crate::encryption::EncryptionReport> {
        self.json("GET", "/v1/encryption", None)
    }

    /// `POST /v1/encryption/rotate-key`.
    pub fn rotate_key(&self) -> Result<crate::encryption::RotatedKey> {
        self.json("POST", "/v1/encryption/rotate-key", Some(b""))
    }

    /// `GET /v1/flows` with `filter` (its `follow` is ignored).
    pub fn flows(&self, filter: &FlowFilter) -> Result<Vec<FlowRecord>> {
        let filter = FlowFilter {
            follow: false,
            ..filter.clone()
        };
        self.json("GET", &format!("/v1/flows{}", filter.query()), None)
    }

    /// `GET /v1/flows?follow=true&…`: calls `on_flow` for every flow the
    /// agent streams until it returns `false` or the agent closes the
    /// stream. No read timeout: a follow waits for as long as it takes.
    pub fn follow_flows(
        &self,
        filter: &FlowFilter,
        mut on_flow: impl FnMut(FlowRecord) -> bool,
    ) -> Result<()> {
        let path = format!(
            "/v1/flows{}",
            FlowFilter {
                follow: true,
                ..filter.clone()
            }
            .query()
        );
        let unreachable = |source| Error::AgentUnreachable {
            socket: self.socket.clone(),
            source,
        };
        let protocol = |reason: String| Error::AgentProtocol {
            socket: self.socket.clone(),
            path: path.clone(),
            reason,
        };
        let mut stream = UnixStream::connect(&self.socket).map_err(unreachable)?;
        stream
            .set_write_timeout(Some(self.timeout))
            .map_err(unreachable)?;
        let head =
            format!("GET {path} HTTP/1.1\r\nHost: meshwork-agent\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).map_err(unreachable)?;
        let mut reader = std::io::BufReader::new(stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).map_err(unreachable)?;
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| protocol(format!("bad status line {status_line:?}")))?;
        let mut chunked = false;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).map_err(unreachable)? == 0 {
                return Err(protocol("no end of headers".into()));
            }
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() {
                break;
            }
            chunked |= l.starts_with("transfer-encoding:") && l.contains("chunked");
        }
        if status != 200 {
            let mut body = Vec::new();
            let _ = reader.read_to_end(&mut body);
            let body = if chunked {
                dechunk(&body).unwrap_or(body)
            } else {
                body
            };
            return Err(Error::AgentRefused {
                method: "GET",
                path,
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        let mut pending = Vec::new();
        let mut deliver = |data: &[u8], pending: &mut Vec<u8>| -> Result<bool> {
            pending.extend_from_slice(data);
            while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=nl).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let flow: FlowRecord = serde_json::from_slice(&line)
                    .map_err(|e| protocol(format!("streamed line is not a flow: {e}")))?;
                if !on_flow(flow) {
                    return Ok(false);
                }
            }
            Ok(true)
        };
        if !chunked {
            let mut buf = [0u8; 8192];
            loop {
                let n = reader.read(&mut buf).map_err(unreachable)?;
                if n == 0 || !deliver(&buf[..n], &mut pending)? {
                    return Ok(());
                }
            }
        }
        loop {
            let mut size_line = String::new();
            if reader.read_line(&mut size_line).map_err(unreachable)? == 0 {
                return Ok(());
            }
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| protocol(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                return Ok(());
            }
            let mut chunk = vec![0u8; size + 2];
            reader.read_exact(&mut chunk).map_err(unreachable)?;
            if !deliver(&chunk[..size], &mut pending)? {
                return Ok(());
            }
        }
    }

    /// `POST /v1/endpoints`.
    pub fn register(&self, reg: &EndpointRegistration) -> Result<Endpoint> {
        let body = serde_json::to_vec(reg).expect("registration serializes");
        self.json("POST", "/v1/endpoints", Some(&body))
    }

    /// `DELETE /v1/endpoints/<container>/<ifname>`: `true` when it was
    /// registered, `false` when the agent did not know it.
    pub fn deregister(&self, container_id: &str, ifname: &str) -> Result<bool> {
        let path = format!("/v1/endpoints/{container_id}/{ifname}");
        match self.request("DELETE", &path, None)? {
            (200..=299, _) => Ok(true),
            (404, _) => Ok(false),
            (status, body) => Err(Error::AgentRefused {
                method: "DELETE",
                path,
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            }),
        }
    }

    fn json<T: DeserializeOwned>(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<T> {
        let (status, resp) = self.request(method, path, body)?;
        if !(200..=299).contains(&status) {
            return Err(Error::AgentRefused {
                method,
                path: path.to_string(),
                status,
                body: String::from_utf8_lossy(&resp).into_owned(),
            });
        }
        serde_json::from_slice(&resp).map_err(|e| Error::AgentProtocol {
            socket: self.socket.clone(),
            path: path.to_string(),
            reason: format!("body is not the expected JSON: {e}"),
        })
    }

    /// One request; returns the status code and the body. Connection and
    /// I/O failures are [`Error::AgentUnreachable`].
    pub fn request(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>)> {
        let unreachable = |source| Error::AgentUnreachable {
            socket: self.socket.clone(),
            source,
        };
        let mut stream = UnixStream::connect(&self.socket).map_err(unreachable)?;
        stream
            .set_read_timeout(Some(self.timeout))
            .map_err(unreachable)?;
        stream
            .set_write_timeout(Some(self.timeout))
            .map_err(unreachable)?;
        let body = body.unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: meshwork-agent\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).map_err(unreachable)?;
        stream.write_all(body).map_err(unreachable)?;
        let mut resp = Vec::new();
        stream.read_to_end(&mut resp).map_err(unreachable)?;
        parse_response(&resp).map_err(|reason| Error::AgentProtocol {
            socket: self.socket.clone(),
            path: path.to_string(),
            reason,
        })
    }
}

fn parse_response(resp: &[u8]) -> std::result::Result<(u16, Vec<u8>), String> {
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&resp[..split]).map_err(|_| "headers are not UTF-8")?;
    let mut body = resp[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or("empty response")?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        body = dechunk(&body)?;
    }
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk")?;
        let size_text = std::str::from_utf8(&data[..eol]).map_err(|_| "bad chunk size")?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

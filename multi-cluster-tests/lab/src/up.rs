//! `mesh-lab up`: builds the lab described by a [`LabPlan`].

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mesh_testbed::{run, run_ok};

use crate::plan::{KUBE_API_PORT, LabPlan};
use anyhow::Context as _;

use crate::state::{LabState, Proc};

/// Prints one progress line.
pub fn progress(msg: &str) {
    eprintln!("mesh-lab: {msg}");
}

/// The lab being built: its plan, state and where it keeps files.
#[derive(Debug)]
pub struct Lab {
    /// The plan.
    pub plan: LabPlan,
    /// The record of what exists.
    pub state: LabState,
    /// Where state, logs and kubeconfigs live.
    pub dir: PathBuf,
}

impl Lab {
    /// Records `plan` before anything is created.
    pub fn start(plan: LabPlan, dir: &Path) -> anyhow::Result<Lab> {
        let existing = LabState::load(dir)?;
        if existing.plan.is_some() {
            anyhow::bail!(
                "a lab is already recorded in {} ; run `mesh-lab down --state-dir {}` first",
                dir.display(),
                dir.display()
            );
        }
        std::fs::create_dir_all(dir.join("logs"))?;
        let state = LabState {
            plan: Some(plan.clone()),
            ..LabState::default()
        };
        state.save(dir)?;
        Ok(Lab {
            plan,
            state,
            dir: dir.to_path_buf(),
        })
    }

    /// Creates the underlay bridge, every namespace and its underlay link.
    pub fn build_network(&self) -> anyhow::Result<()> {
        let ul = &self.plan.underlay_ns;
        progress(&format!(
            "underlay bridge br0 in namespace {ul} (never joined to the host's uplink)"
        ));
        add_ns(ul)?;
        run_ok("ip", &["-n", ul, "link", "add", "br0", "type", "bridge"]);
        run_ok("ip", &["-n", ul, "link", "set", "br0", "up"]);
        for c in &self.plan.clusters {
            progress(&format!(
                "cluster {}: control namespace {} at {}",
                c.name, c.control_ns, c.control_ip
            ));
            self.attach(&c.control_ns, &format!("{}ctl", c.name), c.control_ip)?;
            for n in &c.nodes {
                progress(&format!(
                    "cluster {}: node {} at {}, pod CIDR {}",
                    c.name, n.name, n.ip, n.pod_cidr
                ));
                self.attach(&n.ns, n.name.as_str(), n.ip)?;
                run_ok(
                    "ip",
                    &[
                        "netns",
                        "exec",
                        &n.ns,
                        "sysctl",
                        "-qw",
                        "net.ipv4.ip_forward=1",
                    ],
                );
            }
        }
        // Control namespaces answer pods (the API server, reached as the
        // `kube-apiserver` entity): routes to every pod CIDR via its node.
        for c in &self.plan.clusters {
            for other in &self.plan.clusters {
                for n in &other.nodes {
                    run_ok(
                        "ip",
                        &[
                            "-n",
                            &c.control_ns,
                            "route",
                            "add",
                            &n.pod_cidr.to_string(),
                            "via",
                            &n.ip.to_string(),
                        ],
                    );
                }
            }
        }
        let out = self.plan.outside_ns();
        let [primary, second] = crate::plan::OUTSIDE_IPS;
        progress(&format!(
            "outside host {out} at {primary} and {second} (in no cluster; routes to every pod CIDR via its node)"
        ));
        self.attach(&out, "outside", primary)?;
        run_ok(
            "ip",
            &[
                "-n",
                &out,
                "addr",
                "add",
                &format!("{second}/24"),
                "dev",
                "eth0",
            ],
        );
        for c in &self.plan.clusters {
            for n in &c.nodes {
                run_ok(
                    "ip",
                    &[
                        "-n",
                        &out,
                        "route",
                        "add",
                        &n.pod_cidr.to_string(),
                        "via",
                        &n.ip.to_string(),
                    ],
                );
            }
        }
        Ok(())
    }

    fn attach(&self, ns: &str, port: &str, ip: std::net::Ipv4Addr) -> anyhow::Result<()> {
        add_ns(ns)?;
        let ul = &self.plan.underlay_ns;
        let port: String = port.chars().take(15).collect();
        run_ok(
            "ip",
            &[
                "-n", ul, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ],
        );
        if let Some(mtu) = self.plan.underlay_mtu {
            let mtu = mtu.to_string();
            run_ok("ip", &["-n", ul, "link", "set", &port, "mtu", &mtu]);
            run_ok("ip", &["-n", ns, "link", "set", "eth0", "mtu", &mtu]);
        }
        run_ok(
            "ip",
            &["-n", ul, "link", "set", &port, "master", "br0", "up"],
        );
        run_ok(
            "ip",
            &["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
        );
        run_ok("ip", &["-n", ns, "link", "set", "eth0", "up"]);
        Ok(())
    }

    /// Runs the echo server on the outside host (port
    /// [`crate::plan::OUTSIDE_ECHO_PORT`]) and records the host in the
    /// state.
    pub fn start_outside(&mut self, bins: &crate::bins::Bins) -> anyhow::Result<()> {
        let ns = self.plan.outside_ns();
        let [ip, second_ip] = crate::plan::OUTSIDE_IPS;
        let port = crate::plan::OUTSIDE_ECHO_PORT;
        progress(&format!("outside host: echo server on {ip}:{port}"));
        let args = vec![
            "serve".to_string(),
            format!("--port={port}"),
            "--pod=outside/echo".to_string(),
            "--node=outside".to_string(),
            "--cluster=none".to_string(),
        ];
        self.spawn(
            "outside/echo",
            Some(&ns),
            &bins.ours("mesh-echo")?,
            &args,
            &[],
        )?;
        self.state.external = Some(crate::state::External {
            ip,
            second_ip,
            netns: ns,
            echo_port: port,
        });
        self.state.save(&self.dir)?;
        Ok(())
    }

    /// Starts `program args…` (inside `ns` when given), detached, logging to
    /// `logs/<role>.log`, and records it.
    pub fn spawn(
        &mut self,
        role: &str,
        ns: Option<&str>,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
    ) -> anyhow::Result<u32> {
        use std::os::unix::process::CommandExt as _;
        let log = self
            .dir
            .join("logs")
            .join(format!("{}.log", role.replace('/', "_")));
        let out = std::fs::File::create(&log)?;
        let mut cmd = match ns {
            // nsenter, not `ip netns exec`: the latter remounts /sys, which
            // would hide bpffs and cgroup2 from the node-agent.
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", crate::netns::netns_path(ns).display()))
                    .arg("--")
                    .arg(program);
                c
            }
            None => Command::new(program),
        };
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("start {} for {role}: {e}", program.display()))?;
        let pid = child.id();
        self.state.procs.push(Proc {
            role: role.to_string(),
            pid,
            command: Some(crate::state::Command {
                ns: ns.map(str::to_string),
                program: program.to_path_buf(),
                args: args.to_vec(),
                env: env.to_vec(),
            }),
            program: program
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            log,
        });
        self.state.save(&self.dir)?;
        Ok(pid)
    }

    /// Starts a host-loopback forwarder to each cluster's API server and
    /// records the ports.
    pub fn forward_kube_apis(&mut self, self_exe: &Path) -> anyhow::Result<()> {
        let clusters = self.plan.clusters.clone();
        for c in &clusters {
            let port_file = self.dir.join(format!("{}.kube-port", c.name));
            let _ = std::fs::remove_file(&port_file);
            let args = vec![
                "forward".to_string(),
                format!("--lab={}", self.plan.prefix),
                format!("--netns={}", c.control_ns),
                format!("--to={}:{KUBE_API_PORT}", c.control_ip),
                format!("--port-file={}", port_file.display()),
            ];
            self.spawn(
                &format!("{}/kube-forward", c.name),
                None,
                self_exe,
                &args,
                &[],
            )?;
            let port = wait_for_file(&port_file, Duration::from_secs(10))?;
            self.state
                .kube_api_ports
                .insert(c.name.to_string(), port.trim().parse()?);
        }
        self.state.save(&self.dir)
    }
}

fn add_ns(ns: &str) -> anyhow::Result<()> {
    let out = run("ip", &["netns", "add", ns]);
    anyhow::ensure!(
        out.status.success(),
        "create namespace {ns}: {}; a previous lab may be left over: run `mesh-lab down`",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    run_ok("ip", &["-n", ns, "link", "set", "lo", "up"]);
    Ok(())
}

/// Waits until `path` exists and returns its content.
pub fn wait_for_file(path: &Path, timeout: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            return Ok(s);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} did not appear within {timeout:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `path` exists (a socket, a directory: anything).
pub fn wait_for_path(path: &Path, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} did not appear within {timeout:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

impl Lab {
    /// Reopens the lab recorded in `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<Lab> {
        let state = LabState::load(dir)?;
        let plan = state.plan.clone().with_context(|| {
            format!("no lab in {} (start one with `mesh-lab up`)", dir.display())
        })?;
        Ok(Lab {
            plan,
            state,
            dir: dir.to_path_buf(),
        })
    }

    /// Kills the processes whose role is `role` (e.g. `c2/mesh-apiserver`).
    pub fn kill(&mut self, role: &str) -> anyhow::Result<usize> {
        let procs: Vec<Proc> = self
            .state
            .procs
            .iter()
            .filter(|p| p.role == role)
            .cloned()
            .collect();
        anyhow::ensure!(
            !procs.is_empty(),
            "no process with role {role:?}; see `mesh-lab status`"
        );
        let mut killed = 0;
        for p in procs {
            if Path::new(&format!("/proc/{}", p.pid)).exists()
                && run("kill", &["-9", &p.pid.to_string()]).status.success()
            {
                killed += 1;
                // Wait until it is gone, so a restart can bind its ports.
                let deadline = Instant::now() + Duration::from_secs(5);
                while Path::new(&format!("/proc/{}/cmdline", p.pid)).exists()
                    && std::fs::read(format!("/proc/{}/cmdline", p.pid))
                        .is_ok_and(|c| !c.is_empty())
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        Ok(killed)
    }

    /// Starts the process of `role` again with the command it had.
    pub fn restart(&mut self, role: &str) -> anyhow::Result<u32> {
        let last = self
            .state
            .procs
            .iter()
            .rev()
            .find(|p| p.role == role)
            .cloned()
            .with_context(|| format!("no process with role {role:?}; see `mesh-lab status`"))?;
        let cmd = last.command.with_context(|| {
            format!("{role} was recorded without its command; recreate the lab")
        })?;
        let _ = self.kill(role);
        self.state.procs.retain(|p| p.role != role);
        self.spawn(role, cmd.ns.as_deref(), &cmd.program, &cmd.args, &cmd.env)
    }
}

//! Processes the harness starts, and what `/proc` says about them.
//!
//! Every child is held in a [`Proc`], which stops it (and the processes it forked, such as
//! nginx's worker) when dropped, so neither an error nor a panic leaves a proxy running. The
//! `run` script adds a second net: it runs the driver in its own session and kills that whole
//! process group on exit.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A running child process, stopped with SIGTERM (then SIGKILL) on drop.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    /// Starts `program args` pinned to `cpus` (`taskset -c`, when the machine has the cores),
    /// with stdout and stderr appended to `log`.
    pub fn spawn(
        name: &str,
        cpus: Option<&str>,
        program: &Path,
        args: &[String],
        envs: &[(&str, &str)],
        log: &Path,
    ) -> Result<Proc, String> {
        let out = std::fs::File::create(log)
            .map_err(|e| format!("cannot create the log {}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let mut cmd = match cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(program);
                c
            }
            None => Command::new(program),
        };
        cmd.args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name} ({}): {e}", program.display()))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
        })
    }

    /// Starts a child whose stdout the caller reads (the upstream prints its address).
    pub fn spawn_piped(
        name: &str,
        cpus: Option<&str>,
        program: &Path,
        args: &[String],
    ) -> Result<(Proc, BufReader<std::process::ChildStdout>), String> {
        let mut cmd = match cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(program);
                c
            }
            None => Command::new(program),
        };
        let mut child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {name} ({}): {e}", program.display()))?;
        let stdout = child.stdout.take().expect("stdout was piped");
        Ok((
            Proc {
                name: name.to_owned(),
                child,
            },
            BufReader::new(stdout),
        ))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited (and with what), without waiting.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    /// This process and all its descendants (nginx's master and its worker).
    pub fn tree(&self) -> Vec<u32> {
        tree(self.pid())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let pids = self.tree();
        signal("TERM", &pids);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Whatever is left (a stuck child, an orphaned worker) is killed outright.
        let left: Vec<u32> = pids.into_iter().filter(|p| alive(*p)).collect();
        signal("KILL", &left);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(sig: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !matches!(stat_fields(&s).first(), Some(&"Z") | None))
        .unwrap_or(false)
}

/// The fields of `/proc/PID/stat` after the command name (which may hold spaces): index 0 is
/// the state (field 3 in proc(5)), 1 the parent pid, 11 utime and 12 stime.
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default()
}

/// `pid` and every process below it, found through the parent pids in `/proc/*/stat`.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat"))
                && let Some(pp) = stat_fields(&stat)
                    .get(1)
                    .and_then(|f| f.parse::<u32>().ok())
            {
                parents.push((p, pp));
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    out
}

/// CPU time (user + system) used so far by `pids`, in seconds.
pub fn cpu_seconds(pids: &[u32], clk_tck: f64) -> f64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .map(|s| {
            let f = stat_fields(&s);
            let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            (ticks(11) + ticks(12)) as f64 / clk_tck
        })
        .sum()
}

/// `VmRSS` and `VmHWM` (peak RSS) of `pids`, summed, in MiB.
pub fn memory_mib(pids: &[u32]) -> (f64, f64) {
    let mut rss = 0.0;
    let mut hwm = 0.0;
    for p in pids {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{p}/status")) else {
            continue;
        };
        for line in status.lines() {
            let kib = |l: &str| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            if line.starts_with("VmRSS:") {
                rss += kib(line) / 1024.0;
            } else if line.starts_with("VmHWM:") {
                hwm += kib(line) / 1024.0;
            }
        }
    }
    (rss, hwm)
}

/// The clock ticks per second that `/proc/PID/stat` counts in (`getconf CLK_TCK`).
pub fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// A port on 127.0.0.1 that was free a moment ago, for a program that cannot be told to bind
/// port 0 and report it (nginx, HAProxy, Envoy and mesh take their ports from their config).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind 127.0.0.1:0: is the loopback interface up?")
}

/// One HTTP/1.1 GET through `addr` with `host`: the status and the body's length.
pub fn get(addr: SocketAddr, host: &str) -> Result<(u16, usize), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: mesh-e2e\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write to {addr}: {e}"))?;
    let mut r = BufReader::new(s);
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let status_line = String::from_utf8_lossy(&line).into_owned();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("{addr} answered `{}`", status_line.trim()))?;
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).map_err(|e| e.to_string())? == 0 || line == b"\r\n" {
            break;
        }
    }
    let mut body = Vec::new();
    let _ = r.read_to_end(&mut body);
    Ok((status, body.len()))
}

/// Waits until `addr` answers a GET with 200 and the upstream's 1 KiB body (so the whole
/// chain, proxies and upstream, is up), or until `within`; fails early if a process exits.
pub fn wait_ready(
    addr: SocketAddr,
    host: &str,
    within: Duration,
    procs: &mut [Proc],
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        for p in procs.iter_mut() {
            if let Some(status) = p.exited() {
                return Err(format!("{} exited ({status}) before it was ready", p.name));
            }
        }
        match get(addr, host) {
            // 1 KiB, or a little more when a proxy re-chunks it.
            Ok((200, len)) if len >= 1024 => return Ok(()),
            Ok((status, len)) => last = format!("status {status}, {len}-byte body"),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "{addr} was not ready within {within:?}: last answer: {last}"
    ))
}

/// Waits until `addr` accepts a TCP connection, or until `within`.
pub fn wait_listening(addr: SocketAddr, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!(
                    "{addr} did not accept connections within {within:?}: {e}"
                ));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[cfg(test)]
mod tests;

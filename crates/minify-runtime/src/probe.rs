//! Probes: the checks that make a workload do its real work while it is traced, and that
//! prove the minified image still does it.
//!
//! - `--probe-cmd`: on the host, `sh -c`, with `MINIFY_CONTAINER`/`MINIFY_HOST` set. Run in
//!   a process group of its own, killed as a whole when the probe ends, times out or is
//!   cancelled (Ctrl-C), and by a watchdog in that group when minify itself dies, even by
//!   SIGKILL ([`HostGroup`]); as root, in a cgroup of its own as well, so what leaves the
//!   group (`setsid`, daemons) is killed too.
//! - `--probe-exec`: inside the container through the Docker exec API. A simple command is
//!   split into argv and exec'd directly, so no shell enters the image just because the tool
//!   needed one (slim keeps `/bin/sh` that way, its issue #551); shell syntax goes through the
//!   image's `/bin/sh -c`, and the result says so.
//! - `--probe-http PATH`: HTTP/1.1 GET on every exposed TCP port; any answer below 500 passes.
//! - The image's own `HEALTHCHECK`, run inside the container the way Docker runs it (`CMD`
//!   exec'd, `CMD-SHELL` through the image's shell), so what it uses (`curl`, `nc`, a
//!   script, the shell) is traced and kept: a minified image whose health check cannot run
//!   is marked unhealthy and restarted by orchestrators (slim dropped them; its issue #647).

use std::fmt::{self, Write as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bollard::exec::{CreateExecOptions, StartExecResults};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::Container;

/// Most bytes of probe output kept in a result.
const OUTPUT_LIMIT: usize = 4096;

/// One probe, as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "arg")]
pub enum Probe {
    /// `--probe-cmd CMD`: on the host.
    Cmd(String),
    /// `--probe-exec CMD`: inside the container.
    Exec(String),
    /// `--probe-http PATH`: GET on each exposed TCP port.
    Http(String),
    /// The image's `HEALTHCHECK`.
    Healthcheck(Healthcheck),
}

/// An image's `HEALTHCHECK`, as Docker runs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Healthcheck {
    /// What Docker execs in the container: `CMD`'s argv, or for `CMD-SHELL` the image's shell
    /// (`SHELL`, by default `/bin/sh -c`) and the command.
    pub argv: Vec<String>,
    /// The command as written in the image (for messages).
    pub command: String,
    /// `CMD-SHELL`: it runs through the image's shell, which the minified image then keeps.
    pub shell: bool,
    /// Attempts before it counts as failed (`Retries`; Docker's default is 3).
    pub retries: u32,
    /// Seconds each attempt may take (`Timeout`; Docker's default is 30).
    pub timeout_secs: u64,
    /// Seconds between Docker's attempts (`Interval`; default 30) and the grace at start in
    /// which failures do not count (`StartPeriod`; default 0): together with `retries` they
    /// say how long Docker lets a check fail before it calls the container unhealthy.
    #[serde(default)]
    pub interval_secs: u64,
    #[serde(default)]
    pub start_period_secs: u64,
}

impl Healthcheck {
    /// Docker's defaults for what the config leaves out.
    pub const DEFAULT_RETRIES: u32 = 3;
    pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
    pub const DEFAULT_INTERVAL_SECS: u64 = 30;

    /// The health check of an image config's `Healthcheck` (`Test`: `["CMD", argv...]`,
    /// `["CMD-SHELL", command]`; `["NONE"]` or nothing: none), with the config's `Shell`
    /// (empty: `/bin/sh -c`). Its durations are nanoseconds; 0 or unset means Docker's
    /// default.
    pub fn from_config(
        config: &bollard::models::HealthConfig,
        shell: &[String],
    ) -> Option<Healthcheck> {
        let test = config.test.as_deref().unwrap_or_default();
        let (kind, rest) = test.split_first()?;
        let (argv, command, shell) = match kind.as_str() {
            "CMD" if !rest.is_empty() => (rest.to_vec(), rest.join(" "), false),
            "CMD-SHELL" if !rest.is_empty() => {
                let command = rest.join(" ");
                let mut argv = if shell.is_empty() {
                    vec!["/bin/sh".to_owned(), "-c".to_owned()]
                } else {
                    shell.to_vec()
                };
                // As Docker does: the test's words after CMD-SHELL follow the shell's
                // (normally just one, the command line).
                argv.extend(rest.iter().cloned());
                (argv, command, true)
            }
            _ => return None,
        };
        // Whole seconds, rounded up; `None` when unset or not positive.
        let secs = |ns: Option<i64>| {
            ns.and_then(|n| u64::try_from(n).ok())
                .filter(|n| *n > 0)
                .map(|n| n.div_ceil(1_000_000_000))
        };
        Some(Healthcheck {
            argv,
            command,
            shell,
            retries: config
                .retries
                .and_then(|r| u32::try_from(r).ok())
                .filter(|r| *r > 0)
                .unwrap_or(Self::DEFAULT_RETRIES),
            timeout_secs: secs(config.timeout).unwrap_or(Self::DEFAULT_TIMEOUT_SECS),
            interval_secs: secs(config.interval).unwrap_or(Self::DEFAULT_INTERVAL_SECS),
            start_period_secs: secs(config.start_period).unwrap_or(0),
        })
    }

    /// How long Docker lets the check fail before it calls the container unhealthy:
    /// `StartPeriod`, then `Retries` failures `Interval` apart.
    pub fn failing_window(&self) -> Duration {
        Duration::from_secs(
            self.start_period_secs
                .saturating_add(u64::from(self.retries).saturating_mul(self.interval_secs)),
        )
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::Cmd(c) => write!(f, "--probe-cmd {c:?}"),
            Probe::Exec(c) => write!(f, "--probe-exec {c:?}"),
            Probe::Http(p) => write!(f, "--probe-http {p:?}"),
            Probe::Healthcheck(h) => write!(f, "HEALTHCHECK {:?}", h.command),
        }
    }
}

/// How a `--probe-exec` command is run inside the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecMode {
    /// Exec'd directly with this argv: no shell involved.
    Direct(Vec<String>),
    /// Needs `/bin/sh -c` (pipes, redirections, variables, globs, ...).
    Shell,
}

/// Decide how to run `cmd` in the container. Words may be quoted with `'...'` or `"..."`
/// (double quotes without `$`, `` ` `` or `\`); anything a shell would expand or interpret
/// (`| & ; < > ( ) $ ` \ * ? [ ] { } ~ #`, a leading `VAR=value` or `!`) needs the shell.
pub fn exec_mode(cmd: &str) -> ExecMode {
    #[derive(PartialEq)]
    enum St {
        Plain,
        Single,
        Double,
    }
    let mut words: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut st = St::Plain;
    for ch in cmd.chars() {
        match st {
            St::Plain => match ch {
                ' ' | '\t' => {
                    if in_word {
                        words.push(std::mem::take(&mut cur));
                        in_word = false;
                    }
                }
                '\'' => {
                    st = St::Single;
                    in_word = true;
                }
                '"' => {
                    st = St::Double;
                    in_word = true;
                }
                '|' | '&' | ';' | '<' | '>' | '(' | ')' | '$' | '`' | '\\' | '*' | '?' | '['
                | ']' | '{' | '}' | '~' | '#' | '\n' | '\r' => return ExecMode::Shell,
                c => {
                    cur.push(c);
                    in_word = true;
                }
            },
            St::Single => match ch {
                '\'' => st = St::Plain,
                c => cur.push(c),
            },
            St::Double => match ch {
                '"' => st = St::Plain,
                '$' | '`' | '\\' => return ExecMode::Shell,
                c => cur.push(c),
            },
        }
    }
    if st != St::Plain {
        return ExecMode::Shell;
    }
    if in_word {
        words.push(cur);
    }
    match words.first() {
        None => ExecMode::Shell,
        Some(w) if w == "!" || w.contains('=') => ExecMode::Shell,
        Some(_) => ExecMode::Direct(words),
    }
}

/// How a probe ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum ProbeOutcome {
    /// Exited with a code (`cmd`/`exec`); 0 passes.
    Exited { code: i64 },
    /// HTTP status per port; all below 500 pass.
    Http { statuses: Vec<(u16, u16)> },
    /// Did not finish within the probe timeout; killed.
    TimedOut { secs: u64 },
    /// Could not be run at all (no shell on the host, Docker exec refused, no port, ...).
    Error { message: String },
}

/// What one probe did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub probe: Probe,
    pub passed: bool,
    pub outcome: ProbeOutcome,
    pub duration_ms: u64,
    /// stdout then stderr (or the HTTP status lines), truncated to a few KiB.
    pub output: String,
    /// `--probe-exec` ran through the image's `/bin/sh -c` (so `sh` was traced and is kept).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub used_shell: bool,
}

impl ProbeResult {
    /// One line for humans: `--probe-http "/": passed (port 80: 200) in 12 ms`.
    pub fn summary(&self) -> String {
        let what = match &self.outcome {
            ProbeOutcome::Exited { code } => format!("exit code {code}"),
            ProbeOutcome::Http { statuses } => statuses
                .iter()
                .map(|(p, s)| format!("port {p}: HTTP {s}"))
                .collect::<Vec<_>>()
                .join(", "),
            ProbeOutcome::TimedOut { secs } => format!("timed out after {secs} s"),
            ProbeOutcome::Error { message } => message.clone(),
        };
        format!(
            "{}: {} ({what}) in {} ms",
            self.probe,
            if self.passed { "passed" } else { "FAILED" },
            self.duration_ms
        )
    }
}

/// Keep at most a few KiB of output: the head and the tail (where errors usually are).
pub fn truncate_output(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    if s.len() <= OUTPUT_LIMIT {
        return s.into_owned();
    }
    let head_end = floor_char(&s, OUTPUT_LIMIT / 4);
    let tail_start = ceil_char(&s, s.len() - OUTPUT_LIMIT * 3 / 4);
    format!(
        "{}\n[... {} bytes cut ...]\n{}",
        &s[..head_end],
        tail_start - head_end,
        &s[tail_start..]
    )
}

fn floor_char(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// The process group a `--probe-cmd` runs in, and what kills it.
///
/// The group is led by a watchdog, `sh -c 'read -r _; kill -9 0'`, whose stdin is a pipe
/// only this process holds the write end of (the "lifeline"; it is close-on-exec, so no
/// other child inherits it). When this process dies, however it dies, the kernel closes the
/// lifeline, the watchdog's `read` ends and it SIGKILLs the whole group: the probe's `sh`
/// and everything it started that stayed in its group, grandchildren included.
///
/// Why not `PR_SET_PDEATHSIG` on the probe's `sh`: it reaches that one process only (it is
/// reset in every child the probe forks, so `sleep 600; true` would leave the `sleep`), and
/// it fires when the *thread* that forked exits, not the process (tokio's blocking threads
/// and workers that ran `block_in_place` do exit while the run goes on), which would kill a
/// healthy probe. A pipe closes only with the process.
///
/// Dropping a `HostGroup` (the probe finished, timed out, or its future was dropped on
/// Ctrl-C) SIGKILLs the group at once. Its leader, the watchdog, is our child and is not
/// reaped before that, so the group id cannot have been reused by then.
///
/// Processes that leave the group (`setsid`, daemons) are caught by a cgroup: where this
/// host has a cgroup v2 hierarchy we may write (root), the probe moves itself into a fresh
/// one (named like a trace cgroup, so `minify gc` knows it) before anything else,
/// everything it starts stays in it whatever its process group, and it is killed through
/// `cgroup.kill` as well as `killpg`, by a drop or by the watchdog, which also removes the
/// emptied cgroup. Without one, processes that leave the group are out of reach.
struct HostGroup {
    watchdog: tokio::process::Child,
    pgid: nix::unistd::Pid,
    /// The write end of the watchdog's stdin; never written to.
    lifeline: Option<std::io::PipeWriter>,
    /// The group's cgroup v2 directory, if there is one.
    cgroup: Option<PathBuf>,
}

/// What the watchdog runs (`$1`: the cgroup directory, or empty): wait for EOF on stdin,
/// then kill the cgroup, remove it once empty (for up to 5 s; the watchdog is not in it),
/// and kill the process group, itself included. `$0` names it in `ps`.
const WATCHDOG: [&str; 3] = [
    "-c",
    r#"read -r _
if [ -n "$1" ]; then
  echo 1 >"$1/cgroup.kill"
  i=0; while [ $i -lt 100 ] && ! rmdir "$1" 2>/dev/null; do sleep 0.05; i=$((i+1)); done
fi
kill -9 0"#,
    "minify-probe-watchdog",
];

/// How the probe's `sh -c CMD` is started when there is a cgroup (`$0`: CMD, `$1`: the
/// cgroup's `cgroup.procs`): it moves itself into the cgroup, then becomes `sh -c CMD`, so
/// nothing the probe starts is outside. (Moving it from here after the spawn would race with
/// its first forks.)
const ENTER_CGROUP: &str = r#"echo 0 >"$1" || exit 125; exec sh -c "$0""#;

/// A fresh cgroup for a probe at the top of the v2 hierarchy; `None` where there is none or
/// it cannot be made (not root), and the probe runs in its process group alone.
fn probe_cgroup() -> Option<PathBuf> {
    match minify_host::cgroup::make_trace_cgroup(&minify_host::CgroupLayout::detect()) {
        Ok(made) => Some(made.path),
        Err(e) => {
            tracing::debug!("probe cgroup: {e}; the process group alone");
            None
        }
    }
}

impl HostGroup {
    /// Make the cgroup (where possible) and start the watchdog, leader of a new process
    /// group.
    fn start() -> std::io::Result<HostGroup> {
        let (read, lifeline) = std::io::pipe()?;
        let cgroup = probe_cgroup();
        let dir_arg = cgroup
            .as_deref()
            .map(|d| d.as_os_str().to_owned())
            .unwrap_or_default();
        let watchdog = tokio::process::Command::new("sh")
            .args(WATCHDOG)
            .arg(&dir_arg)
            .stdin(read)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .inspect_err(|_| {
                if let Some(d) = &cgroup {
                    let _ = std::fs::remove_dir(d);
                }
            })?;
        let pgid = watchdog
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .map(nix::unistd::Pid::from_raw)
            .ok_or_else(|| std::io::Error::other("the probe watchdog exited at once"))?;
        Ok(HostGroup {
            watchdog,
            pgid,
            lifeline: Some(lifeline),
            cgroup,
        })
    }

    /// The command that runs `cmd` as a member of this group: `sh -c CMD` in the process
    /// group, entering the cgroup first when there is one; killed if dropped.
    fn command(&self, cmd: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("sh");
        match &self.cgroup {
            Some(dir) => c
                .args(["-c", ENTER_CGROUP, cmd])
                .arg(dir.join("cgroup.procs")),
            None => c.args(["-c", cmd]),
        };
        c.process_group(self.pgid.as_raw()).kill_on_drop(true);
        c
    }

    /// SIGKILL every process in the cgroup and in the group.
    fn kill(&self) {
        if let Some(dir) = &self.cgroup {
            let _ = minify_host::cgroup::kill(dir);
        }
        let _ = nix::sys::signal::killpg(self.pgid, nix::sys::signal::Signal::SIGKILL);
    }
}

/// How long a drop waits for the killed group's cgroup to empty before leaving it to
/// `minify gc` (SIGKILLed processes are gone in milliseconds).
const CGROUP_DRAIN: Duration = Duration::from_secs(3);

impl Drop for HostGroup {
    fn drop(&mut self) {
        self.kill();
        // The group is dead: reap the watchdog now if it is gone already (`kill_on_drop`
        // hands it to tokio to be reaped later if not), and let its lifeline go.
        let _ = self.watchdog.try_wait();
        drop(self.lifeline.take());
        if let Some(dir) = self.cgroup.take()
            && let Err(e) = minify_host::cgroup::rmdir_retry(&dir, CGROUP_DRAIN)
        {
            tracing::warn!("leaving the probe cgroup to `minify gc`: {e}");
        }
    }
}

/// Run `cmd` with `sh -c` on the host in a [`HostGroup`], with `env` added, bounded by
/// `timeout`: how it ended and its output. When `sh` exits, what it left running in its
/// group is killed, so a backgrounded process neither outlives the probe nor keeps it
/// waiting on its output.
async fn run_host_cmd(
    cmd: &str,
    env: &[(&str, String)],
    timeout: Duration,
) -> (ProbeOutcome, String) {
    let cannot = |e: std::io::Error| {
        (
            ProbeOutcome::Error {
                message: format!("cannot run sh on the host: {e}"),
            },
            String::new(),
        )
    };
    let group = match HostGroup::start() {
        Ok(g) => g,
        Err(e) => return cannot(e),
    };
    let mut child = match group
        .command(cmd)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(ch) => ch,
        Err(e) => return cannot(e),
    };
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let run = async {
        // Read while waiting, or a probe writing more than a pipe holds would never exit.
        let outputs = async { tokio::join!(read_all(stdout), read_all(stderr)) };
        tokio::pin!(outputs);
        let mut read = None;
        let status = loop {
            tokio::select! {
                st = child.wait() => break st,
                o = &mut outputs, if read.is_none() => read = Some(o),
            }
        };
        // Whatever it left in its group still holds the pipes open: kill it, then the
        // output ends.
        group.kill();
        let (mut bytes, err) = match read {
            Some(o) => o,
            None => outputs.await,
        };
        bytes.extend_from_slice(&err);
        status.map(|st| (st, bytes))
    };
    // On timeout (or when this future is dropped) `group` goes out of scope and kills it all.
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok((status, bytes))) => {
            let code = status
                .code()
                .map_or_else(|| 128 + i64::from(signal_of(status)), i64::from);
            (ProbeOutcome::Exited { code }, truncate_output(&bytes))
        }
        Ok(Err(e)) => (
            ProbeOutcome::Error {
                message: format!("waiting for the probe: {e}"),
            },
            String::new(),
        ),
        Err(_) => (
            ProbeOutcome::TimedOut {
                secs: timeout.as_secs(),
            },
            String::new(),
        ),
    }
}

/// What a probe wrote on one stream, up to 1 MiB (the rest is read and dropped, so the
/// probe never blocks on a full pipe); what was read before an error.
async fn read_all(stream: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
    let mut buf = Vec::new();
    let Some(mut s) = stream else { return buf };
    let mut chunk = vec![0u8; 16 * 1024];
    while let Ok(n @ 1..) = s.read(&mut chunk).await {
        if buf.len() < 1 << 20 {
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    buf
}

impl Container {
    /// Run one probe against this container, bounded by `timeout`. Never fails: a probe that
    /// cannot even start is a failed probe with [`ProbeOutcome::Error`].
    pub async fn run_probe(&self, probe: &Probe, timeout: Duration) -> ProbeResult {
        let start = Instant::now();
        let (outcome, output, used_shell) = match probe {
            Probe::Cmd(cmd) => self.probe_cmd(cmd, timeout).await,
            Probe::Exec(cmd) => self.probe_exec(cmd, timeout).await,
            Probe::Http(path) => {
                let (o, out) = self.probe_http(path, timeout).await;
                (o, out, false)
            }
            Probe::Healthcheck(h) => self.probe_healthcheck(h, timeout).await,
        };
        let passed = match &outcome {
            ProbeOutcome::Exited { code } => *code == 0,
            ProbeOutcome::Http { statuses } => {
                !statuses.is_empty() && statuses.iter().all(|(_, s)| *s < 500)
            }
            ProbeOutcome::TimedOut { .. } | ProbeOutcome::Error { .. } => false,
        };
        ProbeResult {
            probe: probe.clone(),
            passed,
            outcome,
            duration_ms: start.elapsed().as_millis() as u64,
            output,
            used_shell,
        }
    }

    async fn probe_cmd(&self, cmd: &str, timeout: Duration) -> (ProbeOutcome, String, bool) {
        let env = [
            ("MINIFY_CONTAINER", self.id().to_owned()),
            (
                "MINIFY_HOST",
                self.ip().map(|ip| ip.to_string()).unwrap_or_default(),
            ),
        ];
        let (outcome, output) = run_host_cmd(cmd, &env, timeout).await;
        (outcome, output, false)
    }

    async fn probe_exec(&self, cmd: &str, timeout: Duration) -> (ProbeOutcome, String, bool) {
        let (argv, used_shell) = match exec_mode(cmd) {
            ExecMode::Direct(argv) => (argv, false),
            ExecMode::Shell => (
                vec!["/bin/sh".to_owned(), "-c".to_owned(), cmd.to_owned()],
                true,
            ),
        };
        self.exec_argv(argv, used_shell, timeout).await
    }

    /// The image's health check, given the time Docker gives it: it passes at its first
    /// success and fails once it has failed `retries` times and for as long as Docker lets
    /// it fail before calling the container unhealthy ([`Healthcheck::failing_window`]: a
    /// service that answers some seconds after opening its ports is healthy to Docker).
    /// Attempts are a second apart (not `Interval`, so a healthy service does not wait for
    /// one), each bounded by the check's own timeout, all of them by the probe timeout.
    async fn probe_healthcheck(
        &self,
        h: &Healthcheck,
        timeout: Duration,
    ) -> (ProbeOutcome, String, bool) {
        let start = Instant::now();
        let deadline = start + timeout;
        let window = h.failing_window();
        let mut attempts = 0u32;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let result = self
                .exec_argv(
                    h.argv.clone(),
                    h.shell,
                    left.min(Duration::from_secs(h.timeout_secs)),
                )
                .await;
            attempts += 1;
            if result.0 == (ProbeOutcome::Exited { code: 0 })
                || (attempts >= h.retries.max(1) && start.elapsed() >= window)
                || deadline.saturating_duration_since(Instant::now()) <= Duration::from_secs(1)
            {
                break result;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Exec `argv` in the container (`used_shell` is passed through to the result).
    async fn exec_argv(
        &self,
        argv: Vec<String>,
        used_shell: bool,
        timeout: Duration,
    ) -> (ProbeOutcome, String, bool) {
        let docker = self.docker();
        let err = |message: String| (ProbeOutcome::Error { message }, String::new(), used_shell);
        let exec = match docker
            .create_exec(
                self.id(),
                CreateExecOptions {
                    cmd: Some(argv),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
        {
            Ok(e) => e,
            Err(e) => return err(format!("docker exec in {}: {e}", self.name())),
        };
        let mut buf = Vec::new();
        let run = async {
            match docker.start_exec(&exec.id, None).await {
                Ok(StartExecResults::Attached { mut output, .. }) => {
                    while let Some(Ok(chunk)) = output.next().await {
                        if buf.len() < 1 << 20 {
                            buf.extend_from_slice(&chunk.into_bytes());
                        }
                    }
                    Ok(())
                }
                Ok(StartExecResults::Detached) => Ok(()),
                Err(e) => Err(e),
            }
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return err(format!("docker exec in {}: {e}", self.name())),
            Err(_) => {
                // Docker has no "kill exec" call; the exec'd process is a host process we
                // can signal (we are root), found through its host pid. On a loaded machine
                // the timeout can fire before runc has started it (pid still 0): wait a
                // little for the pid, or the process would start afterwards and outlive us.
                for _ in 0..100 {
                    match docker.inspect_exec(&exec.id).await {
                        Ok(ins) if ins.pid.is_some_and(|p| p > 0) => {
                            let pid = ins.pid.unwrap_or_default();
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid as i32),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                            break;
                        }
                        Ok(ins) if ins.running == Some(false) && ins.exit_code.is_some() => break,
                        Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                        Err(_) => break,
                    }
                }
                return (
                    ProbeOutcome::TimedOut {
                        secs: timeout.as_secs(),
                    },
                    truncate_output(&buf),
                    used_shell,
                );
            }
        }
        // The stream ends when the process closes its output; the exit code can lag a little.
        let mut code = None;
        for _ in 0..50 {
            match docker.inspect_exec(&exec.id).await {
                Ok(ins) if ins.running == Some(false) => {
                    code = ins.exit_code;
                    break;
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => return err(format!("inspecting exec in {}: {e}", self.name())),
            }
        }
        match code {
            Some(code) => (
                ProbeOutcome::Exited { code },
                truncate_output(&buf),
                used_shell,
            ),
            None => err("the exec'd command did not report an exit code".to_owned()),
        }
    }

    async fn probe_http(&self, path: &str, timeout: Duration) -> (ProbeOutcome, String) {
        let ports = self.image().tcp_ports();
        if ports.is_empty() {
            return (
                ProbeOutcome::Error {
                    message: format!("image {} exposes no TCP port", self.image().reference),
                },
                String::new(),
            );
        }
        let Some(ip) = self.ip() else {
            return (
                ProbeOutcome::Error {
                    message: format!("container {} has no IP address", self.name()),
                },
                String::new(),
            );
        };
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        let deadline = Instant::now() + timeout;
        let mut statuses = Vec::new();
        let mut output = String::new();
        for port in ports {
            let left = deadline.saturating_duration_since(Instant::now());
            let res = tokio::time::timeout(left, http_get(ip, port, &path)).await;
            match res {
                Ok(Ok((status, line))) => {
                    let _ = writeln!(output, "port {port}: {line}");
                    statuses.push((port, status));
                }
                Ok(Err(e)) => {
                    return (
                        ProbeOutcome::Error {
                            message: format!("GET http://{ip}:{port}{path}: {e}"),
                        },
                        output,
                    );
                }
                Err(_) => {
                    let _ = writeln!(output, "port {port}: no answer");
                    return (
                        ProbeOutcome::TimedOut {
                            secs: timeout.as_secs(),
                        },
                        output,
                    );
                }
            }
        }
        (ProbeOutcome::Http { statuses }, output)
    }
}

fn signal_of(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status.signal().unwrap_or(0)
}

/// GET `path` over plain HTTP/1.1 and read the whole answer (so the server finishes the work
/// the trace should see). Returns the status code and the status line.
async fn http_get(ip: std::net::IpAddr, port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect((ip, port)).await?;
    let host = match ip {
        std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        std::net::IpAddr::V4(v4) => format!("{v4}:{port}"),
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: minify-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        // Keep the head for parsing; the rest is read only so the server completes.
        if buf.len() < 64 * 1024 {
            buf.extend_from_slice(&chunk[..n]);
        }
        if response_complete(&buf) {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().next().unwrap_or_default().trim().to_owned();
    let status = line
        .split_whitespace()
        .nth(1)
        .filter(|_| line.starts_with("HTTP/"))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "not an HTTP answer: {:?}",
                    truncate_output(&buf[..buf.len().min(80)])
                ),
            )
        })?;
    Ok((status, line))
}

/// Whether a buffered response is complete by its own framing (Content-Length or the last
/// chunk), for servers that keep the connection open despite `Connection: close`.
fn response_complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let body = buf.len() - end - 4;
    for line in head.lines() {
        if let Some(v) = line.strip_prefix("content-length:") {
            return v.trim().parse::<usize>().is_ok_and(|n| body >= n);
        }
        if line.starts_with("transfer-encoding:") && line.contains("chunked") {
            return buf.ends_with(b"0\r\n\r\n");
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct(v: &[&str]) -> ExecMode {
        ExecMode::Direct(v.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn healthchecks_run_like_docker_runs_them() {
        let v = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        // A config with this test, retries and timeout (nanoseconds).
        let hc = |test: &[&str], retries: i64, timeout: i64| bollard::models::HealthConfig {
            test: Some(v(test)),
            retries: Some(retries),
            timeout: Some(timeout),
            ..Default::default()
        };
        let h =
            Healthcheck::from_config(&hc(&["CMD", "curl", "-f", "http://localhost/"], 0, 0), &[])
                .unwrap();
        assert_eq!(h.argv, ["curl", "-f", "http://localhost/"]);
        assert!(!h.shell);
        assert_eq!((h.retries, h.timeout_secs), (3, 30));
        // Docker's defaults: three failures 30 s apart before "unhealthy".
        assert_eq!(h.failing_window(), Duration::from_secs(90));
        let timed_config = |interval, start_period| bollard::models::HealthConfig {
            interval: Some(interval),
            start_period: Some(start_period),
            ..hc(&["CMD", "curl", "-f", "http://localhost/"], 0, 0)
        };
        let timed =
            Healthcheck::from_config(&timed_config(2_000_000_000, 10_500_000_000), &[]).unwrap();
        assert_eq!((timed.interval_secs, timed.start_period_secs), (2, 11));
        assert_eq!(timed.failing_window(), Duration::from_secs(11 + 3 * 2));
        assert_eq!(
            Healthcheck::from_config(&timed_config(0, -1), &[]).unwrap(),
            h
        );
        let h = Healthcheck::from_config(
            &hc(
                &["CMD-SHELL", "wget -qO- localhost || exit 1"],
                5,
                2_500_000_000,
            ),
            &[],
        )
        .unwrap();
        assert_eq!(h.argv, ["/bin/sh", "-c", "wget -qO- localhost || exit 1"]);
        assert!(h.shell);
        assert_eq!((h.retries, h.timeout_secs), (5, 3));
        // SHELL ["/bin/bash", "-o", "pipefail", "-c"] applies to CMD-SHELL, as in Docker.
        let h = Healthcheck::from_config(
            &hc(&["CMD-SHELL", "true"], 0, 0),
            &v(&["/bin/bash", "-o", "pipefail", "-c"]),
        )
        .unwrap();
        assert_eq!(h.argv, ["/bin/bash", "-o", "pipefail", "-c", "true"]);
        for none in [
            &[][..],
            &["NONE"][..],
            &["CMD"][..],
            &["CMD-SHELL"][..],
            &["WHAT", "x"][..],
        ] {
            assert_eq!(
                Healthcheck::from_config(&hc(none, 0, 0), &[]),
                None,
                "{none:?}"
            );
        }
        assert_eq!(
            Probe::Healthcheck(
                Healthcheck::from_config(&hc(&["CMD-SHELL", "pgrep redis"], 0, 0), &[]).unwrap()
            )
            .to_string(),
            "HEALTHCHECK \"pgrep redis\""
        );
    }

    #[test]
    fn simple_commands_need_no_shell() {
        assert_eq!(exec_mode("redis-cli ping"), direct(&["redis-cli", "ping"]));
        assert_eq!(
            exec_mode("  python3 -c 'import json' "),
            direct(&["python3", "-c", "import json"])
        );
        assert_eq!(
            exec_mode(r#"curl -H "a b" http://x:1/p?"#),
            ExecMode::Shell,
            "a glob character"
        );
        assert_eq!(exec_mode(r#"echo "a b"c"#), direct(&["echo", "a bc"]));
        assert_eq!(exec_mode("ls a=b"), direct(&["ls", "a=b"]));
    }

    #[test]
    fn shell_syntax_needs_the_shell() {
        for c in [
            "a | b",
            "a && b",
            "a; b",
            "a > f",
            "echo $HOME",
            "echo `x`",
            "ls *.py",
            "FOO=1 cmd",
            "echo 'unterminated",
            "echo \"$x\"",
            "",
            "   ",
            "(a)",
            "! true",
        ] {
            assert_eq!(exec_mode(c), ExecMode::Shell, "{c:?}");
        }
    }

    #[test]
    fn truncation_keeps_head_and_tail() {
        let mut s = "h".repeat(3000);
        s.push_str(&"é".repeat(3000));
        s.push_str("THE-END");
        let t = truncate_output(s.as_bytes());
        assert!(t.len() < 4200, "{}", t.len());
        assert!(t.starts_with("hhh"));
        assert!(t.ends_with("THE-END"));
        assert!(t.contains("bytes cut"));
        assert_eq!(truncate_output(b"short"), "short");
    }

    #[test]
    fn framing() {
        assert!(!response_complete(b"HTTP/1.1 200 OK\r\n"));
        assert!(response_complete(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        ));
        assert!(!response_complete(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok"
        ));
        assert!(response_complete(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
        ));
    }

    #[test]
    fn result_summary_names_the_probe() {
        let r = ProbeResult {
            probe: Probe::Http("/".into()),
            passed: false,
            outcome: ProbeOutcome::Http {
                statuses: vec![(80, 502)],
            },
            duration_ms: 3,
            output: String::new(),
            used_shell: false,
        };
        assert_eq!(
            r.summary(),
            "--probe-http \"/\": FAILED (port 80: HTTP 502) in 3 ms"
        );
        let json = serde_json::to_string(&r).unwrap();
        assert!(
            json.contains(r#""probe":{"kind":"http","arg":"/"}"#),
            "{json}"
        );
    }

    /// Whether `pid` is gone (or a zombie: dead, waiting for whoever reaps orphans here).
    fn dead(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
            Err(_) => true,
        }
    }

    /// Wait up to 5 s for `pid` to be dead.
    fn dies(pid: u32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !dead(pid) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }

    /// Wait up to 10 s for a probe to write its background pid to `file`.
    async fn pid_in(file: &std::path::Path) -> u32 {
        for _ in 0..200 {
            // The file exists (empty) a moment before the pid is in it.
            if let Ok(Ok(pid)) = std::fs::read_to_string(file).map(|s| s.trim().parse::<u32>()) {
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the probe wrote no pid to {}", file.display());
    }

    #[tokio::test]
    async fn host_cmd_output_code_and_env() {
        let (outcome, output) = run_host_cmd(
            "echo \"out $MINIFY_X\"; echo err >&2; exit 3",
            &[("MINIFY_X", "x1".to_owned())],
            Duration::from_secs(20),
        )
        .await;
        assert_eq!(outcome, ProbeOutcome::Exited { code: 3 });
        assert_eq!(output, "out x1\nerr\n");
        let (outcome, _) = run_host_cmd("kill -9 $$", &[], Duration::from_secs(20)).await;
        assert_eq!(outcome, ProbeOutcome::Exited { code: 137 });
    }

    #[tokio::test]
    async fn what_a_probe_leaves_running_dies_when_it_exits() {
        // The background sleep holds the output pipe open: the probe still ends with `sh`.
        // Had it waited for the sleep (an hour), the 1-minute timeout would have ended it
        // with `TimedOut`, not `Exited`: no clock is needed to tell.
        let (outcome, output) =
            run_host_cmd("sleep 4139 & echo $!", &[], Duration::from_mins(1)).await;
        assert_eq!(outcome, ProbeOutcome::Exited { code: 0 });
        let pid: u32 = output.trim().parse().unwrap();
        assert!(dies(pid), "the background sleep {pid} survived");
    }

    #[tokio::test]
    async fn a_timeout_kills_grandchildren() {
        let tmp = crate::gc::tests::TempDir::new("probe-timeout");
        let file = tmp.path().join("pid");
        let cmd = format!(
            "sh -c 'sleep 4141 & echo $! > {}; wait'; true",
            file.display()
        );
        let probe =
            tokio::spawn(async move { run_host_cmd(&cmd, &[], Duration::from_secs(3)).await });
        let pid = pid_in(&file).await;
        let (outcome, _) = probe.await.unwrap();
        assert_eq!(outcome, ProbeOutcome::TimedOut { secs: 3 });
        assert!(
            dies(pid),
            "the probe's grandchild {pid} survived its timeout"
        );
    }

    /// What the kernel does when minify dies: the lifeline's write end closes, nothing else.
    /// The probe's `sh`, `child`, must then die by the watchdog's SIGKILL.
    async fn cut_lifeline(group: &mut HostGroup, child: &mut tokio::process::Child) {
        group.lifeline = None;
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("the probe's sh outlived its lifeline")
            .unwrap();
        assert_eq!(signal_of(status), 9);
    }

    #[tokio::test]
    async fn the_watchdog_kills_the_group_when_its_lifeline_closes() {
        let tmp = crate::gc::tests::TempDir::new("probe-watchdog");
        let file = tmp.path().join("pid");
        let mut group = HostGroup::start().unwrap();
        let mut child = group
            .command(&format!(
                "sleep 4143 & echo $! > {}; sleep 4147; true",
                file.display()
            ))
            .spawn()
            .unwrap();
        let grandchild = pid_in(&file).await;
        cut_lifeline(&mut group, &mut child).await;
        assert!(
            dies(grandchild),
            "the probe's grandchild {grandchild} survived"
        );
        let watchdog = group.watchdog.wait().await.unwrap();
        assert_eq!(signal_of(watchdog), 9);
    }

    /// Whether this test process may make cgroups (root on a host with cgroup v2); the tests
    /// of what only a cgroup catches say so and skip otherwise.
    fn can_make_cgroups(test: &str) -> bool {
        probe_cgroup().is_some_and(|d| std::fs::remove_dir(d).is_ok())
            || minify_fixtures::skip(&format!(
                "{test} needs root and a cgroup v2 hierarchy (CI machines have both)"
            ))
    }

    #[tokio::test]
    async fn what_leaves_the_process_group_dies_with_the_probe() {
        if !can_make_cgroups("what_leaves_the_process_group_dies_with_the_probe") {
            return;
        }
        // `setsid` puts the sleep in a session and group of its own: only the cgroup holds it.
        let (outcome, output) = run_host_cmd(
            "setsid sleep 4151 >/dev/null 2>&1 & sleep 1; pgrep -f '^sleep 4151$'; grep '^0::' /proc/self/cgroup",
            &[],
            Duration::from_mins(1),
        )
        .await;
        assert_eq!(outcome, ProbeOutcome::Exited { code: 0 }, "{output}");
        let mut lines = output.lines();
        let pid: u32 = lines.next().unwrap().trim().parse().unwrap();
        assert!(dies(pid), "the setsid'd sleep {pid} survived the probe");
        // The probe ran in a cgroup of its own, which is gone with it.
        let cgroup = lines.next().unwrap().trim_start_matches("0::/").to_owned();
        assert!(
            minify_host::cgroup::is_trace_cgroup_name(&cgroup),
            "{output}"
        );
        let v2 = minify_host::CgroupLayout::detect().v2.unwrap();
        assert!(!v2.join(&cgroup).exists(), "{cgroup} left behind");
    }

    #[tokio::test]
    async fn the_watchdog_kills_what_left_the_group_when_its_lifeline_closes() {
        if !can_make_cgroups("the_watchdog_kills_what_left_the_group_when_its_lifeline_closes") {
            return;
        }
        let tmp = crate::gc::tests::TempDir::new("probe-watchdog-setsid");
        let file = tmp.path().join("pid");
        let mut group = HostGroup::start().unwrap();
        let dir = group.cgroup.clone().expect("a cgroup");
        let mut child = group
            .command(&format!(
                "setsid sh -c 'echo $$ > {}; exec sleep 4153' & sleep 4157; true",
                file.display()
            ))
            .spawn()
            .unwrap();
        let escaped = pid_in(&file).await;
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
        assert!(
            procs.lines().any(|l| l.trim() == escaped.to_string()),
            "{escaped} not in {}: {procs}",
            dir.display()
        );
        cut_lifeline(&mut group, &mut child).await;
        assert!(dies(escaped), "the setsid'd sleep {escaped} survived");
        // The watchdog removed the cgroup before it killed itself.
        let watchdog = group.watchdog.wait().await.unwrap();
        assert_eq!(signal_of(watchdog), 9);
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

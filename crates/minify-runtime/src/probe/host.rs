//! `--probe-cmd`: a command run on the host with `sh -c`, in a process group (and, as root,
//! a cgroup) of its own that a watchdog kills when minify dies, however it dies.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::AsyncReadExt as _;

use super::{ProbeOutcome, truncate_output};
use crate::Container;

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
    pub(super) async fn probe_cmd(
        &self,
        cmd: &str,
        timeout: Duration,
    ) -> (ProbeOutcome, String, bool) {
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
}

fn signal_of(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status.signal().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

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

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

//!
//! One file per job: this one holds the probe kinds and their results; `host.rs` the
//! host-side process group and its watchdog, `exec.rs` Docker exec (and the health check),
//! `http.rs` the HTTP GET.

mod exec;
mod host;
mod http;

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::Container;

pub use exec::{ExecMode, exec_mode};

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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

//! `--probe-exec` and the image's `HEALTHCHECK`: commands run inside the container through
//! the Docker exec API, without a shell when the command needs none.

use std::time::{Duration, Instant};

use bollard::exec::{CreateExecOptions, StartExecResults};
use futures_util::StreamExt as _;

use super::{Healthcheck, ProbeOutcome, truncate_output};
use crate::Container;

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

impl Container {
    pub(super) async fn probe_exec(
        &self,
        cmd: &str,
        timeout: Duration,
    ) -> (ProbeOutcome, String, bool) {
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
    pub(super) async fn probe_healthcheck(
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct(v: &[&str]) -> ExecMode {
        ExecMode::Direct(v.iter().map(|s| (*s).to_owned()).collect())
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
}

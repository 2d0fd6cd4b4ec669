//! Helpers every e2e module shares: the `minify` binary under test and a runner that echoes
//! what it ran, so a failing test shows the command's own one-line error; Docker's event
//! log over the span of a run.

use std::process::{Child, Command, Output};

/// The `minify` binary cargo built for this test run, with the caller's `RUST_LOG` removed so
/// the output the tests assert on is the default one.
pub fn minify() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_minify"));
    c.env_remove("RUST_LOG");
    c
}

/// Run a command to completion, echoing its arguments, status and stderr into the test log.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run minify");
    eprintln!(
        "--- {:?}: {}\n{}",
        cmd.get_args().collect::<Vec<_>>(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Send `signal` (`"INT"`, `"TERM"`) to the minify process `child` alone, as a terminal or a
/// CI runner would, wait for it, check it exited with `code` (130, 143), and return its
/// stderr.
pub fn signal_and_wait(child: Child, signal: &str, code: i32) -> String {
    let sent = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{signal}");
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(code), "{stderr}");
    stderr
}

/// Seconds since the epoch: the unit of `docker events --since/--until`.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The daemon's container events from `since` to `until` (seconds, from [`now_secs`] one
/// second before and after what they cover), narrowed by `filters` (`event=start`,
/// `label=K=V`, `image=REF`), one `format`ted line each.
pub fn container_events(since: u64, until: u64, filters: &[&str], format: &str) -> String {
    let mut args = vec![
        "events".to_owned(),
        "--since".to_owned(),
        since.to_string(),
        "--until".to_owned(),
        until.to_string(),
        "--filter".to_owned(),
        "type=container".to_owned(),
    ];
    for f in filters {
        args.extend(["--filter".to_owned(), (*f).to_owned()]);
    }
    args.extend(["--format".to_owned(), format.to_owned()]);
    minify_fixtures::docker(args).unwrap()
}

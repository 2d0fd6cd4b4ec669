//! Helpers every e2e module shares: the `minify` binary under test and a runner that echoes
//! what it ran, so a failing test shows the command's own one-line error.

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

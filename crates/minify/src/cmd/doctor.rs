//! `minify doctor`: what this machine allows (eBPF attach types, BTF, tracefs, cgroup v2,
//! privileges, Docker), each with a one-line fix. Exit 0 when `minify run` can work here,
//! 3 when something it needs is missing.

use std::io::{Read as _, Write as _};
use std::time::Duration;

use minify_trace::doctor::{Check, Status};

use crate::cli::DoctorArgs;

pub fn run(args: &DoctorArgs) -> anyhow::Result<u8> {
    let mut checks = minify_trace::doctor::check_environment();
    checks.extend(minify_trace::doctor::check_attach_types());
    checks.push(docker_check());
    let failed = checks.iter().any(|c| c.status == Status::Fail);
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        for c in &checks {
            let tag = match c.status {
                Status::Ok => "ok  ",
                Status::Unavailable => "no  ",
                Status::Fail => "FAIL",
            };
            outln!("{tag} {:<15} {}", c.name, c.detail);
            if let Some(fix) = &c.fix {
                outln!("     {:<15} fix: {fix}", "");
            }
        }
        outln!(
            "backend: {}",
            if failed {
                "none usable (see FAIL lines)"
            } else {
                "tracepoints (tp_btf on sys_exit and sched_process_exec, sched fork/exit; paths rebuilt in eBPF)"
            }
        );
    }
    Ok(if failed { crate::exit::ENVIRONMENT } else { 0 })
}

/// `GET /_ping` on the Docker socket (`DOCKER_HOST=unix://...` or the default path).
fn docker_check() -> Check {
    let sock = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| "/var/run/docker.sock".to_owned());
    let ping = || -> std::io::Result<String> {
        let mut s = std::os::unix::net::UnixStream::connect(&sock)?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        Ok(buf)
    };
    match ping() {
        Ok(r) if r.starts_with("HTTP/1.") && r.contains(" 200 ") => Check {
            name: "docker".into(),
            status: Status::Ok,
            detail: format!("daemon answers on {sock}"),
            fix: None,
        },
        Ok(r) => Check {
            name: "docker".into(),
            status: Status::Fail,
            detail: format!(
                "{sock}: unexpected answer {:?}",
                r.lines().next().unwrap_or("")
            ),
            fix: Some("restart the daemon: dockerd >/tmp/dockerd.log 2>&1 &".into()),
        },
        Err(e) => Check {
            name: "docker".into(),
            status: Status::Fail,
            detail: format!("{sock}: {e}"),
            fix: Some(if e.kind() == std::io::ErrorKind::PermissionDenied {
                "run as root (or as a member of the docker group)".into()
            } else {
                "start the daemon: dockerd >/tmp/dockerd.log 2>&1 &  (or set DOCKER_HOST)".into()
            }),
        },
    }
}

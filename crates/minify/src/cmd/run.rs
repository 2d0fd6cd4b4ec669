//! `minify run IMAGE [--probe-*]...`: turn the arguments into a [`RunPlan`], run the pipeline
//! under a tokio runtime that cleans up on Ctrl-C and SIGTERM, write the report (on every
//! exit, with its `status`), print the summary.

use std::time::Duration;

use anyhow::Context as _;
use clap::CommandFactory as _;
use minify_closure::{ClosureOptions, DefaultSet, DefaultSets, PackageOptions};
use minify_image::ImageRef;
use minify_runtime::{ExecMode, Overrides, Probe, exec_mode};

use crate::cli::{Cli, RunArgs};
use crate::exit;
use crate::pipeline::progress::Progress;
use crate::pipeline::{RunOutcome, RunPlan, RunState, default_output, execute};
use crate::report::{Report, RunStatus, VerifyStatus};

pub fn run(args: &RunArgs) -> anyhow::Result<u8> {
    let state = RunState::default();
    let outcome = plan(args).and_then(|plan| {
        let progress = Progress::new();
        let kept = crate::errors::Kept::default();
        crate::cmd::block_on_interruptible_keeping(execute(&plan, &progress, &kept, &state), &kept)
    });
    match outcome {
        Ok(RunOutcome { mut report, code }) => {
            report.status = match (&report.verify, code) {
                (_, exit::VERIFY_FAILED) => RunStatus::VerifyFailed,
                (Some(VerifyStatus::Passed), _) => RunStatus::Verified,
                _ => RunStatus::NotVerified,
            };
            report.exit_code = code;
            "done".clone_into(&mut report.phase);
            emit(args, &report)?;
            err!("{}", report.summary());
            Ok(code)
        }
        Err(e) => {
            // Whatever the run knew when it stopped; with `--report`, a CI step that reads
            // the file never reads an older run's.
            let mut report = state.take();
            let (code, line) = crate::describe(&e);
            if report.phase.is_empty() {
                // Stopped before the pipeline began: the arguments were refused.
                report.tool = crate::pipeline::tool_name();
                report.image.clone_from(&args.image);
                "arguments".clone_into(&mut report.phase);
            }
            report.status = match code {
                exit::INTERRUPTED | exit::TERMINATED => RunStatus::Interrupted,
                exit::ENVIRONMENT => RunStatus::EnvironmentError,
                _ if matches!(
                    report.status,
                    RunStatus::ProbeFailedOnOriginal | RunStatus::PolicyFailed
                ) =>
                {
                    report.status
                }
                _ => RunStatus::InputError,
            };
            report.exit_code = code;
            report.error = Some(line);
            if let Err(write) = emit(args, &report) {
                // The run's own error is the one to report; this one is said besides.
                errln!("minify: warning: {}", crate::describe(&write).1);
            }
            Err(e)
        }
    }
}

/// Write the report to `--report` (atomically, replacing an older one) and print it for
/// `--json`.
fn emit(args: &RunArgs, report: &Report) -> anyhow::Result<()> {
    if args.json {
        out!("{}", report.to_json());
    }
    if let Some(path) = &args.report {
        crate::files::write_atomic(path, report.to_json().as_bytes())
            .with_context(|| format!("writing the report {}", path.display()))?;
    }
    Ok(())
}

/// Validate the arguments into a plan; every problem here is a usage error (exit 2).
pub fn plan(args: &RunArgs) -> anyhow::Result<RunPlan> {
    let access = args.registry.access();
    let image = args
        .image
        .parse::<ImageRef>()
        .with_context(|| format!("image {}", args.image))?
        .with_access(&access);
    let output = match &args.tag {
        Some(t) => Some(
            t.parse::<ImageRef>()
                .with_context(|| format!("--tag {t}"))?
                .with_access(&access),
        ),
        // A file's own name is known once it is open (the pipeline derives it then).
        None if image.is_file() => None,
        None => Some(default_output(&image, &[]).with_context(|| {
            format!("image {image} has no name to derive NAME:TAG-min from; give --tag")
        })?),
    };
    // The source is never the output; an output that only names the source's image id is
    // found once the daemon is asked (in the pipeline).
    if let Some(out) = &output {
        crate::pipeline::source_guard::refuse_same_location(&image, out)?;
    }
    for kv in &args.env {
        if !kv.contains('=') || kv.starts_with('=') {
            anyhow::bail!("--env {kv:?}: expected KEY=value");
        }
    }
    let overrides = Overrides {
        entrypoint: args
            .entrypoint
            .as_deref()
            .map(|s| parse_argv("entrypoint", s))
            .transpose()?,
        cmd: args
            .cmd
            .as_deref()
            .map(|s| parse_argv("cmd", s))
            .transpose()?,
        env: args.env.clone(),
        workdir: args.workdir.clone(),
        user: args.user.clone(),
    };
    if let Some(n) = args.ring_bytes
        && (!n.is_power_of_two() || n < 4096)
    {
        anyhow::bail!("--ring-bytes {n}: must be a power of two of at least 4096");
    }
    for (flag, v) in [
        ("probe-timeout", args.probe_timeout),
        ("ready-timeout", args.ready_timeout),
        ("timeout", args.timeout),
    ] {
        if v == 0 {
            anyhow::bail!("--{flag} must be at least 1 second");
        }
    }
    if let Some(path) = &args.sbom {
        crate::sbom::check_path(path)?;
    }
    // No --tag for a file source: the output is NAME:TAG-min in the daemon.
    let write = crate::cmd::write_options(args.force, args.compression, output.as_ref());
    Ok(RunPlan {
        image,
        probes: probes_in_order(args),
        overrides,
        probe_timeout: Duration::from_secs(args.probe_timeout),
        ready_timeout: Duration::from_secs(args.ready_timeout),
        ready_http: args.ready_http.clone(),
        ready_cmd: args.ready_cmd.clone(),
        timeout: Duration::from_secs(args.timeout),
        stop_timeout: Duration::from_secs(args.stop_timeout),
        closure: ClosureOptions {
            include: args.include.clone(),
            include_bin: args.include_bin.clone(),
            exclude: args.exclude.clone(),
            default_sets: default_sets(&args.no_default_set, &args.with_set)?,
            packages: PackageOptions {
                granularity: args.granularity,
                include: args.include_package.clone(),
                exclude: args.exclude_package.clone(),
            },
            // Filled from the source image's config once it is open.
            ..ClosureOptions::default()
        },
        output,
        allowlist_out: args.allowlist_out.clone(),
        sbom: args.sbom.clone(),
        verify: !args.no_verify,
        allow_lossy: args.allow_lossy,
        ring_bytes: args.ring_bytes,
        write,
        measure_untraced: args.measure_untraced,
        trace_out: args.trace_out.clone(),
        healthcheck: !args.no_healthcheck,
        fail_on_shell: args.fail_on_shell,
    })
}

/// `--entrypoint`/`--cmd`: a JSON array is the exact argv; otherwise words split like a
/// simple shell command (quotes allowed, no expansions).
fn parse_argv(flag: &str, s: &str) -> anyhow::Result<Vec<String>> {
    if s.trim_start().starts_with('[') {
        return serde_json::from_str(s)
            .with_context(|| format!("--{flag} {s:?}: not a JSON array of strings"));
    }
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    match exec_mode(s) {
        ExecMode::Direct(argv) => Ok(argv),
        ExecMode::Shell => anyhow::bail!(
            "--{flag} {s:?} has shell syntax; give the exact argv as a JSON array, e.g. [\"/bin/sh\",\"-c\",\"...\"]"
        ),
    }
}

fn default_sets(no: &[String], with: &[String]) -> anyhow::Result<DefaultSets> {
    let mut sets = DefaultSets::default();
    let find = |flag: &str, name: &str| {
        DefaultSet::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .with_context(|| {
                format!(
                    "--{flag} {name}: unknown set (known: {}, all)",
                    DefaultSet::ALL.map(DefaultSet::name).join(", ")
                )
            })
    };
    for name in with {
        sets.set(find("with-set", name)?, true);
    }
    for name in no {
        if name == "all" {
            sets = DefaultSets::none();
            continue;
        }
        sets.set(find("no-default-set", name)?, false);
    }
    Ok(sets)
}

/// The probes in the order they were given on the command line, across the three flags.
/// clap's derive keeps each flag's values in order but not their interleaving, so read the
/// argument indices from a second parse of the same command line; when that is not
/// available (e.g. called with synthetic arguments), fall back to cmd, exec, http.
fn probes_in_order(args: &RunArgs) -> Vec<Probe> {
    let matches = Cli::command()
        .try_get_matches_from(std::env::args_os())
        .ok();
    let sub = matches.as_ref().and_then(|m| m.subcommand_matches("run"));
    let mut all: Vec<(usize, Probe)> = Vec::new();
    let mut add = |id: &str, values: &[String], base: usize, make: fn(String) -> Probe| {
        let idx: Option<Vec<usize>> = sub
            .and_then(|s| s.indices_of(id))
            .map(Iterator::collect)
            .filter(|v: &Vec<usize>| v.len() == values.len());
        for (k, v) in values.iter().enumerate() {
            let i = idx.as_ref().map_or(base + k, |ix| ix[k]);
            all.push((i, make(v.clone())));
        }
    };
    add("probe_cmd", &args.probe_cmd, 0, Probe::Cmd);
    add("probe_exec", &args.probe_exec, 1 << 20, Probe::Exec);
    add("probe_http", &args.probe_http, 2 << 20, Probe::Http);
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_forms() {
        assert_eq!(
            parse_argv("cmd", r#"["a b","c"]"#).unwrap(),
            vec!["a b", "c"]
        );
        assert_eq!(
            parse_argv("cmd", "python3 -m http.server 80")
                .unwrap()
                .len(),
            4
        );
        assert!(parse_argv("entrypoint", "").unwrap().is_empty());
        let err = parse_argv("cmd", "a | b").unwrap_err().to_string();
        assert!(err.contains("JSON array"), "{err}");
    }

    fn run_args(words: &[&str]) -> RunArgs {
        use clap::Parser as _;
        let cli = Cli::try_parse_from(["minify", "run"].iter().chain(words)).unwrap();
        match cli.command {
            crate::cli::Command::Run(args) => *args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn file_sources() {
        // No --tag: named after the file's own name:tag, known once it is open.
        let p = plan(&run_args(&["docker-archive:app.tar", "--probe-http", "/"])).unwrap();
        assert_eq!(p.image.to_string(), "docker-archive:app.tar");
        assert!(p.output.is_none());
        let p = plan(&run_args(&["oci:dir:v1", "-o", "oci-archive:out.tar"])).unwrap();
        assert_eq!(p.output.unwrap().to_string(), "oci-archive:out.tar");
        // A daemon source's default is known at once; an id has no name to derive it from.
        let p = plan(&run_args(&["app:1"])).unwrap();
        assert_eq!(p.output.unwrap().to_string(), "app:1-min");
        let id = format!("sha256:{}", "a".repeat(64));
        let err = plan(&run_args(&[&id])).unwrap_err().to_string();
        assert!(err.contains("give --tag"), "{err}");
    }

    #[test]
    fn sets() {
        let s = default_sets(&["nss".into()], &["zoneinfo".into()]).unwrap();
        assert!(!s.nss && s.zoneinfo && s.passwd);
        assert_eq!(
            default_sets(&["all".into()], &[]).unwrap(),
            DefaultSets::none()
        );
        let err = default_sets(&["nope".into()], &[]).unwrap_err().to_string();
        assert!(
            err.contains("unknown set") && err.contains("ca-certificates"),
            "{err}"
        );
    }
}

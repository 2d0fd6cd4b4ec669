//! The `minify run` report: the JSON written by `--report` (and printed by `--json`), and the
//! short human summary on stderr. Field names are a contract for CI scripts: add, don't rename.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use minify_runtime::{ProbeResult, Readiness};
use serde::Serialize;

/// How verification ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerifyStatus {
    Passed,
    Failed,
    /// `--no-verify`. (A file output is verified too, on a temporary copy in the daemon:
    /// see [`Report::verified_image`].)
    #[default]
    Skipped,
}

/// How a run ended: the one field a CI step reads. Every exit of `minify run --report FILE`
/// writes it (also exits 2, 3, 130 and 143), so a report at that path is never an older
/// run's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Written, and every probe that passed on the original passed on the output (exit 0).
    Verified,
    /// Written (a daemon output) or not (a file output), and verification failed (exit 1).
    VerifyFailed,
    /// `--no-verify`: written and not run again (exit 0).
    NotVerified,
    /// A probe (or the readiness wait before it) failed on the original image, so nothing
    /// was built (exit 2).
    ProbeFailedOnOriginal,
    /// Bad arguments or input: an image that does not exist, a corrupt file (exit 2).
    /// The default only so a report in the making has a value; every written report sets it.
    #[default]
    InputError,
    /// No daemon, no eBPF rights, a lossy trace (exit 3).
    EnvironmentError,
    /// Ctrl-C or SIGTERM (exit 130 or 143); what it had made was removed.
    Interrupted,
    /// `--fail-on-shell` and the output would keep a shell (`attack_surface.shells`): stopped
    /// after the closure, nothing written (exit 1).
    PolicyFailed,
}

/// One probe on both images.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeReport {
    /// The probe as given, e.g. `--probe-http "/"`.
    pub name: String,
    pub original: ProbeResult,
    /// `None` when verification was skipped.
    pub minified: Option<ProbeResult>,
}

/// A kept regular file and its size.
#[derive(Clone, Debug, Serialize)]
pub struct FileSize {
    pub path: String,
    pub bytes: u64,
}

/// What one default support set added (paths not kept for another reason).
#[derive(Clone, Debug, Serialize)]
pub struct SetReport {
    pub set: String,
    /// The paths it added, sorted.
    pub paths: Vec<String>,
    /// Bytes of the regular files among them.
    pub bytes: u64,
    /// What the set looks for that the source image lacks, so the output lacks it too
    /// (`skeleton`: e.g. `/tmp` in a `FROM scratch` image); empty for the other sets.
    pub absent: Vec<String>,
}

/// One package (dpkg package, Python distribution, npm package, JDK home) of the source
/// image and what the output keeps of it; also, for one kept whole by `--granularity package`
/// (or `--include-package`), what that rule added. Files are non-directory entries; bytes are
/// the source's bytes of its regular files (a file of two units, a JDK home inside its deb,
/// counts in both).
#[derive(Clone, Debug, Serialize)]
pub struct PackageKept {
    /// `deb`, `python`, `npm` or `jdk`.
    pub kind: String,
    pub name: String,
    pub version: String,
    /// `absent` (no file kept), `partial` or `whole`.
    pub state: String,
    pub kept_files: usize,
    pub kept_bytes: u64,
    /// Files the output lacks (for a `partial` package, how many it lost).
    pub removed_files: usize,
    pub removed_bytes: u64,
    /// Same as `kept_files` (the name before the audit).
    pub files: usize,
    /// Same as `kept_bytes`.
    pub bytes: u64,
    /// Bytes the package rule added beyond what the workload used (0 when it did not keep
    /// this package whole).
    pub added_bytes: u64,
    /// The kept path that made the package rule keep it whole (or `--include-package`);
    /// empty when the rule did not.
    pub pulled_by: String,
}

/// Every file of the source once, by whether a package owns it and whether the output keeps
/// it. `kept_bytes + removed_bytes == source_bytes`, the source's bytes of regular files
/// (hardlinked content once); unowned files (written by maintainer scripts, `/etc/passwd`,
/// the dpkg database itself, the app) are counted in the `unowned_` fields.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PackageTotals {
    pub packages: usize,
    pub absent: usize,
    pub partial: usize,
    pub whole: usize,
    pub source_files: usize,
    pub source_bytes: u64,
    pub kept_files: usize,
    pub kept_bytes: u64,
    pub removed_files: usize,
    pub removed_bytes: u64,
    pub owned_kept_bytes: u64,
    pub owned_removed_bytes: u64,
    pub unowned_kept_bytes: u64,
    pub unowned_removed_bytes: u64,
    /// `kept_bytes / source_bytes` (1.0 for an empty source).
    pub kept_ratio: f64,
}

/// The audit of every package of `db` from its accounts (largest removals first), with what
/// the package rule reported for those it kept whole.
pub fn package_audit(
    db: &minify_packages::PackageDb,
    accounts: &[minify_packages::Account],
    totals: &minify_packages::Totals,
    whole: &[minify_closure::PackageReport],
) -> (Vec<PackageKept>, PackageTotals) {
    let mut out: Vec<PackageKept> = accounts
        .iter()
        .map(|a| {
            let p = &db.packages[a.id];
            let rule = whole
                .iter()
                .find(|w| w.kind == p.kind.name() && w.name == p.name && w.version == p.version);
            PackageKept {
                kind: p.kind.name().to_owned(),
                name: p.name.clone(),
                version: p.version.clone(),
                state: a.state.name().to_owned(),
                kept_files: a.kept_files,
                kept_bytes: a.kept_bytes,
                removed_files: a.removed_files,
                removed_bytes: a.removed_bytes,
                files: a.kept_files,
                bytes: a.kept_bytes,
                added_bytes: rule.map_or(0, |w| w.added_bytes),
                pulled_by: rule.map(|w| w.pulled_by.clone()).unwrap_or_default(),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.removed_bytes
            .cmp(&a.removed_bytes)
            .then_with(|| (&a.kind, &a.name, &a.version).cmp(&(&b.kind, &b.name, &b.version)))
    });
    let count = |s: minify_packages::State| accounts.iter().filter(|a| a.state == s).count();
    let source_bytes = totals.source_bytes();
    let t = PackageTotals {
        packages: accounts.len(),
        absent: count(minify_packages::State::Absent),
        partial: count(minify_packages::State::Partial),
        whole: count(minify_packages::State::Whole),
        source_files: totals.source_files(),
        source_bytes,
        kept_files: totals.kept_files(),
        kept_bytes: totals.kept_bytes(),
        removed_files: totals.removed_files(),
        removed_bytes: totals.removed_bytes(),
        owned_kept_bytes: totals.owned_kept_bytes,
        owned_removed_bytes: totals.owned_removed_bytes,
        unowned_kept_bytes: totals.unowned_kept_bytes,
        unowned_removed_bytes: totals.unowned_removed_bytes,
        kept_ratio: if source_bytes == 0 {
            1.0
        } else {
            totals.kept_bytes() as f64 / source_bytes as f64
        },
    };
    (out, t)
}

/// When the workload ran without probes: how its main process ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum MainProcess {
    /// Exited by itself with this code.
    Exited { code: i64 },
    /// Still running at `--timeout` (then stopped).
    StillRunning,
}

/// Everything a run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub tool: String,
    /// How the run ended (see [`RunStatus`]).
    pub status: RunStatus,
    /// The exit code of `minify run`.
    pub exit_code: u8,
    /// The error line `minify run` printed (without `minify: error: `); `null` on exits 0
    /// and 1.
    pub error: Option<String>,
    /// The phase the run was in when it stopped (`arguments`, `open`, `untraced-run`,
    /// `trace`, `closure`, `pack`, `write`, `verify`), or `done`.
    pub phase: String,
    pub image: String,
    pub image_id: String,
    pub output: String,
    /// The minified image's id (`sha256:` of its config), also when it was not written.
    pub output_id: String,
    /// Whether this run wrote `output`. A daemon output is written before verification and
    /// stays when verification fails; a file output (`docker-archive:`, `oci:`,
    /// `oci-archive:`) is written only once verification passed (or with `--no-verify`), so
    /// `false` means nothing was written at its path.
    pub output_written: bool,
    /// The image verification ran: the output tag for a daemon output; for a file output
    /// the temporary copy loaded into the daemon (`minify-verify/<random>:<owner>`, removed
    /// afterwards), or the id of the identical image the daemon already held (run as it is,
    /// and left alone). `None` when verification was skipped.
    pub verified_image: Option<String>,
    /// The id of [`verified_image`](Self::verified_image) as the daemon gave it; equal to
    /// `output_id` when the image verified is the one written. `None` when skipped.
    pub verified_image_id: Option<String>,
    /// Bytes of the new layer as `output` stores it (compressed in an OCI output, see
    /// `output_layer_media`); 0 when nothing was written.
    pub output_layer_bytes: u64,
    /// How `output` stores the new layer: `tar`, `tar+gzip` or `tar+zstd`.
    pub output_layer_media: String,
    /// For a `docker://` output that was pushed: the manifest's digest (`NAME@DIGEST` pulls
    /// exactly this image). `None` otherwise.
    pub output_digest: Option<String>,
    /// Bytes as the Docker daemon reports them (uncompressed layers).
    pub size_before: u64,
    pub size_after: u64,
    /// `size_before / size_after`.
    pub factor: f64,
    /// Regular files in the original image and in the minified one.
    pub files_before: u64,
    pub files_after: u64,
    /// Entries (files, dirs, links) in the allowlist.
    pub allowlist_entries: usize,
    /// Bytes of regular files the trace, ELF closure and interpreters require.
    pub required_bytes: u64,
    /// Bytes of all kept regular files.
    pub kept_bytes: u64,
    /// Phase name -> milliseconds, in pipeline order.
    pub timings_ms: Vec<(String, u64)>,
    /// Wall time of the traced probe phase (readiness wait and probes, or the wait for exit).
    pub probe_phase_ms: u64,
    /// The same phase on the original image without tracing, when measured (benchmarks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub untraced_probe_phase_ms: Option<u64>,
    /// Trace events received, and lost per kind.
    pub events: u64,
    pub events_lost: BTreeMap<String, u64>,
    pub events_lost_total: u64,
    pub readiness: Option<Readiness>,
    /// The same wait on the image verified; `null` when verification did not run.
    pub readiness_minified: Option<Readiness>,
    /// Milliseconds until the original image's app answered: its ports accepted,
    /// `--ready-http`/`--ready-cmd` passed and, without those, the first `--probe-http`
    /// passed (after its retries). `null` when it never did, or with no probe.
    pub ready_ms: Option<u64>,
    /// The same on the image verified.
    pub ready_ms_minified: Option<u64>,
    /// With no probe: how the entrypoint ended on each image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub main_process: Option<MainProcess>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub main_process_minified: Option<MainProcess>,
    pub probes: Vec<ProbeReport>,
    /// Probes that ran through the image's `/bin/sh` (so `sh` is kept).
    pub shell_probes: Vec<String>,
    /// What the output leaves an attacker: shells, package managers and GTFOBins helpers
    /// kept (each with why), setuid/setgid files, world-writable directories without the
    /// sticky bit, the user. `null` until the closure is known.
    pub attack_surface: Option<minify_closure::AttackSurface>,
    pub default_sets: Vec<SetReport>,
    /// `file` or `package`.
    pub granularity: String,
    /// Every package of the source image and what the output keeps of it, largest removals
    /// first (see [`PackageKept`]).
    pub packages: Vec<PackageKept>,
    /// The same over every file of the source once, owned or not.
    pub package_totals: PackageTotals,
    pub largest_files: Vec<FileSize>,
    pub warnings: Vec<String>,
    pub verify: Option<VerifyStatus>,
    /// Why verification failed, one line each.
    pub verify_failures: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowlist: Option<String>,
}

impl Report {
    /// The JSON form (pretty, with a trailing newline).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("report serialises");
        s.push('\n');
        s
    }

    /// A few lines for humans.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "minify: {} -> {}", self.image, self.output);
        let _ = writeln!(
            s,
            "  size: {} -> {} ({:.1}x smaller), files {} -> {}",
            human_bytes(self.size_before),
            human_bytes(self.size_after),
            self.factor,
            self.files_before,
            self.files_after
        );
        if self.output_written && self.output_layer_media != "tar" {
            let _ = writeln!(
                s,
                "  stored: {} (the layer as {}, what a registry holds)",
                human_bytes(self.output_layer_bytes),
                self.output_layer_media
            );
        }
        if let Some(d) = &self.output_digest {
            let _ = writeln!(s, "  pushed: {} as {d}", self.output);
        }
        let passed = self.probes.iter().filter(|p| p.original.passed).count();
        let exercised = match &self.main_process {
            Some(MainProcess::Exited { code }) => {
                format!("no probe, the entrypoint exited with code {code}")
            }
            Some(MainProcess::StillRunning) if !self.probes.is_empty() => format!(
                "no probe, the entrypoint was still running at --timeout; then {}: {}",
                self.probes
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                if passed == self.probes.len() {
                    "passed"
                } else {
                    "FAILED"
                }
            ),
            Some(MainProcess::StillRunning) => {
                "no probe, the entrypoint was still running at --timeout".to_owned()
            }
            None => format!(
                "probes: {passed}/{} passed on the original",
                self.probes.len()
            ),
        };
        let _ = writeln!(
            s,
            "  trace: {} events, {} lost; {exercised}",
            self.events, self.events_lost_total,
        );
        let mut whole: Vec<&PackageKept> = self
            .packages
            .iter()
            .filter(|p| !p.pulled_by.is_empty())
            .collect();
        if !whole.is_empty() {
            whole.sort_by_key(|p| std::cmp::Reverse(p.added_bytes));
            let added: u64 = whole.iter().map(|p| p.added_bytes).sum();
            let top: Vec<String> = whole
                .iter()
                .take(3)
                .map(|p| format!("{} +{}", p.name, human_bytes(p.added_bytes)))
                .collect();
            let _ = writeln!(
                s,
                "  packages: {} kept whole, {} added ({})",
                whole.len(),
                human_bytes(added),
                top.join(", ")
            );
        }
        let t = &self.package_totals;
        if t.packages > 0 {
            let _ = writeln!(
                s,
                "  package database: {} of {} packages kept ({} whole, {} partial), {} removed",
                t.whole + t.partial,
                t.packages,
                t.whole,
                t.partial,
                t.absent
            );
        }
        for w in self.warnings.iter().take(3) {
            let _ = writeln!(s, "  warning: {w}");
        }
        if self.warnings.len() > 3 {
            let _ = writeln!(
                s,
                "  ... and {} more warnings (see --report)",
                self.warnings.len() - 3
            );
        }
        if let Some(a) = &self.attack_surface {
            let _ = writeln!(s, "  attack surface: {}", a.summary());
        }
        for sh in &self.shell_probes {
            let _ = writeln!(
                s,
                "  note: {sh} ran through the image's /bin/sh, so sh is kept"
            );
        }
        match &self.verify {
            Some(VerifyStatus::Passed) => {
                let _ = writeln!(s, "  verify: passed{}", self.verified_on());
            }
            Some(VerifyStatus::Failed) => {
                let _ = writeln!(s, "  verify: FAILED{}", self.verified_on());
                for f in &self.verify_failures {
                    let _ = writeln!(s, "    {f}");
                }
            }
            Some(VerifyStatus::Skipped) | None => {
                let _ = writeln!(s, "  verify: skipped");
            }
        }
        if let Some(a) = &self.allowlist {
            let _ = writeln!(s, "  allowlist: {a} ({} entries)", self.allowlist_entries);
        }
        s
    }

    /// ` (on a temporary copy, NAME)` when verification ran on another image than the output
    /// (` (on the identical image already in the daemon, ID)` when that was not a copy).
    fn verified_on(&self) -> String {
        match &self.verified_image {
            Some(v) if v.starts_with("sha256:") => {
                format!(" (on the identical image already in the daemon, {v})")
            }
            Some(v) if *v != self.output => format!(" (on a temporary copy, {v})"),
            _ => String::new(),
        }
    }
}

/// `1234567` -> `1.2 MB` (powers of 1000, like `docker images`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_234_567), "1.2 MB");
    }

    #[test]
    fn summary_and_json() {
        let r = Report {
            image: "a:1".into(),
            output: "a:1-min".into(),
            size_before: 100_000_000,
            size_after: 10_000_000,
            factor: 10.0,
            verify: Some(VerifyStatus::Failed),
            verify_failures: vec!["--probe-http \"/\" failed".into()],
            ..Default::default()
        };
        let s = r.summary();
        assert!(s.contains("100.0 MB -> 10.0 MB (10.0x smaller)"), "{s}");
        assert!(s.contains("verify: FAILED\n    --probe-http"), "{s}");
        let j = r.to_json();
        assert!(j.contains("\"verify\": \"failed\""), "{j}");
        // Stable keys for scripts: present (null/false) even when nothing was verified or
        // written.
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["output_written"], false, "{j}");
        assert!(v["verified_image"].is_null(), "{j}");
        assert!(v["verified_image_id"].is_null(), "{j}");
    }

    #[test]
    fn attack_surface_line_and_key() {
        let mut r = Report::default();
        assert!(!r.summary().contains("attack surface"));
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert!(v["attack_surface"].is_null(), "{v:#}");
        r.attack_surface = Some(minify_closure::AttackSurface::default());
        let s = r.summary();
        assert!(
            s.contains("  attack surface: no shell, no package manager, no GTFOBins helper"),
            "{s}"
        );
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(
            v["attack_surface"]["shells"],
            serde_json::json!([]),
            "{v:#}"
        );
        assert_eq!(v["attack_surface"]["user"]["root"], false, "{v:#}");
    }

    #[test]
    fn statuses_are_snake_case() {
        let names: Vec<String> = [
            RunStatus::Verified,
            RunStatus::VerifyFailed,
            RunStatus::NotVerified,
            RunStatus::ProbeFailedOnOriginal,
            RunStatus::InputError,
            RunStatus::EnvironmentError,
            RunStatus::Interrupted,
            RunStatus::PolicyFailed,
        ]
        .iter()
        .map(|s| serde_json::to_string(s).unwrap())
        .collect();
        assert_eq!(
            names.join(" "),
            r#""verified" "verify_failed" "not_verified" "probe_failed_on_original" "input_error" "environment_error" "interrupted" "policy_failed""#
        );
    }

    #[test]
    fn summary_names_a_temporary_verify_copy() {
        let copy = "minify-verify/0123abcd:1-2-3-4";
        let r = Report {
            output: "oci-archive:/tmp/a.tar".into(),
            output_id: "sha256:aa".into(),
            output_written: true,
            verify: Some(VerifyStatus::Passed),
            verified_image: Some(copy.into()),
            verified_image_id: Some("sha256:aa".into()),
            ..Default::default()
        };
        let s = r.summary();
        assert!(
            s.contains(&format!("verify: passed (on a temporary copy, {copy})")),
            "{s}"
        );
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["output_written"], true);
        assert_eq!(v["verified_image"], copy);
        // Each under its own key (comparing the two keys with each other would pass with
        // both missing).
        assert_eq!(v["verified_image_id"], "sha256:aa");
        assert_eq!(v["output_id"], "sha256:aa");
        // A daemon output verified in place says nothing more.
        let r = Report {
            output: "a:1-min".into(),
            verify: Some(VerifyStatus::Passed),
            verified_image: Some("a:1-min".into()),
            ..Default::default()
        };
        assert!(r.summary().contains("verify: passed\n"), "{}", r.summary());
    }
}

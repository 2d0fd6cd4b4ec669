//! dpkg's database: `/var/lib/dpkg/status` and `info/<pkg>[:arch].list`, or the distroless
//! layout, `status.d/<pkg>` (one status paragraph each) with `status.d/<pkg>.md5sums`.

use minify_model::ImagePath;

use crate::{Collector, Kind, ListStats, MAX_FILES_PER_UNIT};

const STATUS: &str = "/var/lib/dpkg/status";
const STATUS_D: &str = "/var/lib/dpkg/status.d";
const INFO: &str = "/var/lib/dpkg/info";

/// One installed package's paragraph of a dpkg status file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusEntry {
    pub package: String,
    pub version: String,
    pub architecture: String,
    /// `Conffiles:` paths (absolute, as written).
    pub conffiles: Vec<String>,
}

/// Parse a dpkg status file: the paragraphs whose `Status:` says `installed` (or that have no
/// `Status:`, as in distroless' `status.d/`). Returns them and one warning per paragraph
/// without a `Package:` field. Never panics, whatever the input.
pub fn parse_status(text: &str) -> (Vec<StatusEntry>, Vec<String>) {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    for (n, para) in text.split("\n\n").enumerate() {
        if para.trim().is_empty() {
            continue;
        }
        let mut e = StatusEntry::default();
        let mut installed = true;
        let mut in_conffiles = false;
        for line in para.lines() {
            if let Some(cont) = line.strip_prefix([' ', '\t']) {
                if in_conffiles
                    && let Some(p) = cont.split_whitespace().next()
                    && p.starts_with('/')
                {
                    e.conffiles.push(p.to_owned());
                }
                continue;
            }
            in_conffiles = false;
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key {
                "Package" => value.clone_into(&mut e.package),
                "Version" => value.clone_into(&mut e.version),
                "Architecture" => value.clone_into(&mut e.architecture),
                "Status" => installed = value.split_whitespace().last() == Some("installed"),
                "Conffiles" => in_conffiles = true,
                _ => {}
            }
        }
        if e.package.is_empty() {
            warnings.push(format!("paragraph {} has no Package field", n + 1));
            continue;
        }
        if installed {
            out.push(e);
        }
    }
    (out, warnings)
}

pub(crate) fn read(c: &mut Collector<'_>) {
    let status = ImagePath::new(STATUS);
    if c.fs.entry(&status).is_some()
        && let Some(text) = c.read_text(&status)
    {
        let (entries, warnings) = parse_status(&text);
        for w in warnings {
            c.warn(format!("{STATUS}: {w}"));
        }
        for e in entries {
            let list = list_file(c, &e);
            add_package(c, e, list.as_ref(), false);
        }
    }
    // distroless: no status file, one paragraph per file, file lists in md5sums.
    let dir = ImagePath::new(STATUS_D);
    if c.fs.entry(&dir).is_some_and(minify_model::Entry::is_dir) {
        for child in c.fs.children(&dir) {
            let name = child.as_str().rsplit('/').next().unwrap_or_default();
            if name.contains('.') {
                continue; // `<pkg>.md5sums` and friends
            }
            let Some(text) = c.read_text(&child) else {
                continue;
            };
            let (entries, warnings) = parse_status(&text);
            for w in warnings {
                c.warn(format!("{child}: {w}"));
            }
            for e in entries {
                let md5 = ImagePath::new(&format!("{child}.md5sums"));
                let list = c.fs.entry(&md5).is_some().then_some(md5);
                add_package(c, e, list.as_ref(), true);
            }
        }
    }
}

/// `info/<pkg>:<arch>.list`, else `info/<pkg>.list`.
fn list_file(c: &Collector<'_>, e: &StatusEntry) -> Option<ImagePath> {
    let qualified = ImagePath::new(&format!("{INFO}/{}:{}.list", e.package, e.architecture));
    let plain = ImagePath::new(&format!("{INFO}/{}.list", e.package));
    [qualified, plain]
        .into_iter()
        .find(|p| c.fs.entry(p).is_some())
}

fn add_package(c: &mut Collector<'_>, e: StatusEntry, list: Option<&ImagePath>, md5sums: bool) {
    let root = ImagePath::root();
    let mut stats = ListStats::default();
    let mut files = Vec::new();
    let source = list.map_or_else(|| STATUS.to_owned(), ToString::to_string);
    if let Some(list) = list
        && let Some(text) = c.read_text(list)
    {
        let mut n = 0usize;
        for line in text.lines() {
            // md5sums: `<hash>  <path without leading slash>`.
            let raw = if md5sums {
                match line.split_once("  ") {
                    Some((_, p)) => p,
                    None => continue,
                }
            } else {
                line
            };
            let raw = raw.trim_end_matches('\r');
            if raw.is_empty() || raw == "/." {
                continue;
            }
            n += 1;
            if n > MAX_FILES_PER_UNIT {
                c.warn(format!(
                    "{list}: more than {MAX_FILES_PER_UNIT} paths, the rest not read"
                ));
                break;
            }
            if let Some(p) = c.locate(&root, raw, &mut stats) {
                files.push(p);
            }
        }
    }
    for cf in &e.conffiles {
        // Conffiles removed by the admin are still listed (`obsolete`): not a problem.
        let mut quiet = ListStats::default();
        if let Some(p) = c.locate(&root, cf, &mut quiet) {
            files.push(p);
        }
    }
    let arch = e.architecture;
    if let Some(id) = c.add(Kind::Deb, e.package, e.version, files, &source, &stats) {
        c.db.packages[id].arch = arch;
    }
}

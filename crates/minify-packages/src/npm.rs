//! npm packages: every `node_modules/NAME` or `node_modules/@scope/NAME` directory holding a
//! `package.json` is a unit of all the files below it, except those of nested `node_modules`
//! (their own units).

use minify_model::ImagePath;

use crate::{Collector, Kind, ListStats, MAX_FILES_PER_UNIT};

/// Most bytes of a `package.json` read for its name and version.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// Whether `dir` is `.../node_modules/NAME` or `.../node_modules/@scope/NAME`.
fn is_package_dir(dir: &ImagePath) -> bool {
    let comps: Vec<&str> = dir.components().collect();
    match comps.as_slice() {
        [.., "node_modules", name] => !name.starts_with('@') && !name.starts_with('.'),
        [.., "node_modules", scope, _] => scope.starts_with('@'),
        _ => false,
    }
}

pub(crate) fn read(c: &mut Collector<'_>, paths: &[ImagePath]) {
    for manifest in paths {
        if !manifest.as_str().ends_with("/package.json") {
            continue;
        }
        let Some(dir) = manifest.parent() else {
            continue;
        };
        if !is_package_dir(&dir)
            || !c
                .fs
                .entry(manifest)
                .is_some_and(minify_model::Entry::is_file)
        {
            continue;
        }
        let (name, version) = match c.fs.read(manifest, Some(MAX_MANIFEST_BYTES)) {
            Ok(data) => match serde_json::from_slice::<serde_json::Value>(&data) {
                Ok(v) => (
                    v.get("name").and_then(|n| n.as_str()).map_or_else(
                        || {
                            dir.as_str()
                                .rsplit('/')
                                .next()
                                .unwrap_or_default()
                                .to_owned()
                        },
                        str::to_owned,
                    ),
                    v.get("version")
                        .and_then(|n| n.as_str())
                        .unwrap_or_default()
                        .to_owned(),
                ),
                Err(e) => {
                    c.warn(format!(
                        "{manifest}: not JSON ({e}); named after its directory"
                    ));
                    (
                        dir.as_str()
                            .rsplit('/')
                            .next()
                            .unwrap_or_default()
                            .to_owned(),
                        String::new(),
                    )
                }
            },
            Err(e) => {
                c.warn(format!("{manifest}: unreadable: {e}"));
                continue;
            }
        };
        let mut files = Vec::new();
        let prefix_len = dir.as_str().len();
        for p in crate::below(paths, &dir) {
            let rel = &p.as_str()[prefix_len..];
            if rel.split('/').any(|comp| comp == "node_modules") {
                continue;
            }
            if c.fs.entry(p).is_some_and(|e| !e.is_dir()) {
                files.push(p.clone());
            }
            if files.len() >= MAX_FILES_PER_UNIT {
                c.warn(format!(
                    "{dir}: more than {MAX_FILES_PER_UNIT} files, the rest not read"
                ));
                break;
            }
        }
        if let Some(id) = c.add(
            Kind::Npm,
            name,
            version,
            files,
            manifest.as_str(),
            &ListStats::default(),
        ) {
            c.db.packages[id].db_files = crate::DbFiles::Npm {
                manifest: manifest.clone(),
            };
        }
    }
}

//! JDK/JRE homes: a directory whose `release` file names `JAVA_VERSION` and that has a `lib/`.
//! Its `lib/` and `conf/` are one unit: the module image, the native libraries, the security
//! configuration and helpers such as `lib/jspawnhelper` are all reached lazily.

use minify_model::ImagePath;

use crate::{Collector, Kind, ListStats, MAX_FILES_PER_UNIT};

/// Most bytes of a `release` file read.
const MAX_RELEASE_BYTES: u64 = 64 << 10;

pub(crate) fn read(c: &mut Collector<'_>, paths: &[ImagePath]) {
    for release in paths {
        if !release.as_str().ends_with("/release") {
            continue;
        }
        let Some(home) = release.parent() else {
            continue;
        };
        if !c
            .fs
            .entry(release)
            .is_some_and(minify_model::Entry::is_file)
            || !c
                .fs
                .entry(&home.join("lib"))
                .is_some_and(minify_model::Entry::is_dir)
        {
            continue;
        }
        let Ok(data) = c.fs.read(release, Some(MAX_RELEASE_BYTES)) else {
            continue;
        };
        let text = String::from_utf8_lossy(&data);
        let Some(version) = text.lines().find_map(|l| {
            l.strip_prefix("JAVA_VERSION=")
                .map(|v| v.trim().trim_matches('"').to_owned())
        }) else {
            continue;
        };
        let mut files = vec![release.clone()];
        for sub in ["lib", "conf"] {
            for p in crate::below(paths, &home.join(sub)) {
                if c.fs.entry(p).is_some_and(|e| !e.is_dir()) {
                    files.push(p.clone());
                }
                if files.len() >= MAX_FILES_PER_UNIT {
                    break;
                }
            }
        }
        let name = home.as_str().rsplit('/').next().unwrap_or("jdk").to_owned();
        c.add(
            Kind::Jdk,
            name,
            version,
            files,
            release.as_str(),
            &ListStats::default(),
        );
    }
}

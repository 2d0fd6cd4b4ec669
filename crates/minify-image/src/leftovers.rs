//! What this crate makes that a killed run can leave behind, and how `minify gc` recognises
//! it ([`LEFTOVERS`]): its temporary directories in `$TMPDIR` and the temporary tag a daemon
//! output is loaded under. The names are decided here and nowhere else.

use minify_host::owner::{self, LeftoverNames, Maker};

use crate::Digest;

/// The kinds of temporary directory this crate makes (`minify-KIND.OWNER.RANDOM`, see
/// [`owner::temp_dir_prefix`]): a daemon export, a rootfs view's index, a layer being packed.
#[derive(Clone, Copy, Debug)]
pub(crate) enum TempKind {
    Image,
    View,
    Pack,
}

impl TempKind {
    const ALL: [TempKind; 3] = [TempKind::Image, TempKind::View, TempKind::Pack];

    fn name(self) -> &'static str {
        match self {
            TempKind::Image => "image",
            TempKind::View => "view",
            TempKind::Pack => "pack",
        }
    }

    /// A fresh temporary directory of this kind, named after this process so `minify gc`
    /// can remove it if we are killed.
    pub(crate) fn make(self) -> std::io::Result<tempfile::TempDir> {
        owner::temp_dir_prefix(self.name())
            .and_then(|prefix| tempfile::Builder::new().prefix(&prefix).tempdir())
    }

    /// What the directory's name looks like, for messages: `minify-view.*`.
    pub(crate) fn pattern(self) -> String {
        format!("minify-{}.*", self.name())
    }
}

/// The repository a daemon output is loaded under before it gets its name
/// (`minify-load:<short id>-<pid>`).
pub const LOAD_REPO: &str = "minify-load";

/// The temporary tag an image is loaded under before it gets its name.
pub(crate) fn load_tag(id: &Digest) -> String {
    format!("{LOAD_REPO}:{}-{}", id.short(), std::process::id())
}

/// Who loaded `reference`, when it is a [`load_tag`]: only a pid is recorded there.
fn load_tag_maker(reference: &str) -> Option<Maker> {
    let (repo, tag) = reference.rsplit_once(':')?;
    let (_, pid) = tag.rsplit_once('-')?;
    (repo == LOAD_REPO).then_some(Maker::Pid(pid.parse().ok()?))
}

fn temp_dir_owner(name: &str) -> Option<minify_host::Owner> {
    let kinds = TempKind::ALL.map(TempKind::name);
    owner::temp_dir_owner_of_kind(name, &kinds)
}

/// How `minify gc` recognises what this crate leaves behind.
pub const LEFTOVERS: LeftoverNames = LeftoverNames {
    maker: "minify-image",
    image: load_tag_maker,
    temp_dir: temp_dir_owner,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_its_own_names_only() {
        let id: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        let tag = load_tag(&id);
        assert_eq!(
            (LEFTOVERS.image)(&tag),
            Some(Maker::Pid(std::process::id()))
        );
        for other in [
            "minify-load",
            "minify-load:abc",
            "minify-loads:abc-1",
            "x/minify-load:a-1",
        ] {
            assert_eq!((LEFTOVERS.image)(other), None, "{other}");
        }
        let dir = TempKind::View.make().unwrap();
        let name = dir.path().file_name().unwrap().to_str().unwrap();
        assert!((LEFTOVERS.temp_dir)(name).is_some(), "{name}");
        let foreign = name.replacen("minify-view.", "minify-other.", 1);
        assert_eq!((LEFTOVERS.temp_dir)(&foreign), None);
    }
}

//! `--chown=user[:group]`: names resolved in the image's own `/etc/passwd` and
//! `/etc/group`, as BuildKit's file operations do (never the host's).
//!
//! BuildKit's rules (`dockerfile2llb` `parseUser` and the file op's `readUser`): a
//! numeric user alone gives gid = uid; a user name alone gives that user's uid and
//! primary gid from passwd; a group, when given, is a gid or a name from group.

use crate::rootfs::LowerTree;

/// A resolved owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Why an owner could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnerError {
    /// The user name is not in the image's `/etc/passwd`.
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    /// The group name is not in the image's `/etc/group`.
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
    /// The image's user database could not be read.
    #[error("cannot read {path} of the image: {message}")]
    Read {
        /// `/etc/passwd` or `/etc/group`.
        path: &'static str,
        /// The failure.
        message: String,
    },
}

fn lookup(
    tree: &LowerTree,
    file: &'static str,
    name: &str,
) -> Result<Option<(u32, u32)>, OwnerError> {
    let text = tree.read(file).map_err(|e| OwnerError::Read {
        path: file,
        message: e.to_string(),
    })?;
    let Some(text) = text else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&text);
    for line in text.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 3 || fields[0] != name {
            continue;
        }
        let id = fields[2].parse().ok();
        let gid = fields.get(3).and_then(|g| g.parse().ok());
        if let Some(id) = id {
            return Ok(Some((id, gid.unwrap_or(id))));
        }
    }
    Ok(None)
}

/// Resolve a `--chown` value (already expanded) against the image at `tree`.
pub fn resolve_owner(spec: &str, tree: &LowerTree) -> Result<Owner, OwnerError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, primary) = match user.parse::<u32>() {
        Ok(uid) => (uid, uid),
        Err(_) => lookup(tree, "/etc/passwd", user)?
            .ok_or_else(|| OwnerError::NoUser(user.to_string()))?,
    };
    let gid = match group {
        None | Some("") => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => lookup(tree, "/etc/group", g)?
                .map(|(gid, _)| gid)
                .ok_or_else(|| OwnerError::NoGroup(g.to_string()))?,
        },
    };
    Ok(Owner { uid, gid })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn numeric_and_named_owners() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("etc")).unwrap();
        fs::write(
            t.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        fs::write(
            t.path().join("etc/group"),
            "root:x:0:\nstaff:x:50:\napp:x:1001:\n",
        )
        .unwrap();
        let tree = LowerTree::new(vec![t.path().to_path_buf()]);
        let o = |s| resolve_owner(s, &tree);
        assert_eq!(o("42").unwrap(), Owner { uid: 42, gid: 42 });
        assert_eq!(o("42:7").unwrap(), Owner { uid: 42, gid: 7 });
        assert_eq!(
            o("app").unwrap(),
            Owner {
                uid: 1000,
                gid: 1001
            }
        );
        assert_eq!(o("app:staff").unwrap(), Owner { uid: 1000, gid: 50 });
        assert_eq!(o("0:app").unwrap(), Owner { uid: 0, gid: 1001 });
        assert_eq!(o("nobody"), Err(OwnerError::NoUser("nobody".into())));
        assert_eq!(o("app:nogroup"), Err(OwnerError::NoGroup("nogroup".into())));
        let empty = LowerTree::new(vec![]);
        assert_eq!(
            resolve_owner("app", &empty),
            Err(OwnerError::NoUser("app".into()))
        );
    }
}

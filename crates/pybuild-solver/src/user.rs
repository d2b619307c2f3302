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

/// The user a RUN step runs as (`USER` value, empty for root), with its supplementary
/// groups, as runc resolves it (`user.GetExecUser`): a name must exist in the image's
/// passwd; a numeric user need not, and then runs with gid 0 unless a group is given;
/// supplementary groups are the groups whose member list names the user.
pub fn resolve_user(spec: &str, tree: &LowerTree) -> Result<(Owner, Vec<u32>), OwnerError> {
    if spec.is_empty() {
        return Ok((Owner { uid: 0, gid: 0 }, Vec::new()));
    }
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = tree
        .read("/etc/passwd")
        .map_err(|e| OwnerError::Read {
            path: "/etc/passwd",
            message: e.to_string(),
        })?
        .unwrap_or_default();
    let passwd = String::from_utf8_lossy(&passwd);
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && (f[0] == user || (user.parse::<u32>().is_ok() && f[2] == user)));
    let (uid, primary, name) = match (&entry, user.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse().unwrap_or(0),
            f[3].parse().unwrap_or(0),
            Some(f[0].to_string()),
        ),
        (None, Ok(uid)) => (uid, 0, None),
        (None, Err(_)) => return Err(OwnerError::NoUser(user.to_string())),
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
    let mut groups = Vec::new();
    if group.is_none()
        && let Some(name) = name
    {
        let text = tree
            .read("/etc/group")
            .map_err(|e| OwnerError::Read {
                path: "/etc/group",
                message: e.to_string(),
            })?
            .unwrap_or_default();
        for line in String::from_utf8_lossy(&text).lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() >= 4
                && f[3].split(',').any(|m| m == name)
                && let Ok(g) = f[2].parse::<u32>()
                && g != gid
                && !groups.contains(&g)
            {
                groups.push(g);
            }
        }
    }
    Ok((Owner { uid, gid }, groups))
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

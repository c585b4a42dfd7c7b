//! Who is calling. The identity comes from the Unix socket's peer credentials (SO_PEERCRED), read
//! once per connection by the server; nothing in a request can change it.

/// The caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
    /// The account name for `uid`, or `uid:N` when it has none.
    pub user: String,
    /// Root and the daemon's own user are the bootstrap admins.
    pub admin: bool,
}

impl Caller {
    pub fn from_peer(uid: u32, gid: u32, pid: Option<i32>) -> Self {
        Self {
            uid,
            gid,
            pid,
            user: user_name(uid),
            admin: is_admin(uid),
        }
    }
}

/// Root and the daemon's own user are the bootstrap admins.
pub fn is_admin(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

/// The account name of a uid, from the system's user database.
pub fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => format!("uid:{uid}"),
    }
}

/// Resolves a user given as a name or a numeric uid.
pub fn resolve_user(s: &str) -> Option<(u32, String)> {
    if let Ok(uid) = s.strip_prefix("uid:").unwrap_or(s).parse::<u32>() {
        return Some((uid, user_name(uid)));
    }
    match nix::unistd::User::from_name(s) {
        Ok(Some(u)) => Some((u.uid.as_raw(), u.name)),
        _ => None,
    }
}

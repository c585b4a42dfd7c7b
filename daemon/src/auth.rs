//! Who is calling. The identity comes from the Unix socket's peer credentials (SO_PEERCRED for
//! uid, gid and pid; SO_PEERGROUPS for the supplementary groups), read once per connection by
//! the server; nothing in a request can change it. The mount has no socket: for a reading uid,
//! its groups come from the account database (`groups_of`), never from /proc.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
    /// Primary and supplementary groups, as the kernel reported them for the socket's peer.
    pub groups: Vec<u32>,
    /// The account name for `uid`, or `uid:N` when it has none.
    pub user: String,
    /// A bootstrap admin (see `Admins`): holds every permission without any role.
    pub admin: bool,
}

/// The bootstrap admins: root, the daemon's own user, and any the configuration names. They
/// need no role, so a fresh store can be administered at all.
#[derive(Debug, Clone)]
pub struct Admins(Vec<u32>);

impl Admins {
    /// Root, the daemon's effective user, and `extra` (user names or uids).
    pub fn new(extra: &[String]) -> Result<Self, String> {
        let mut uids = vec![0, nix::unistd::geteuid().as_raw()];
        for e in extra {
            let (uid, _) =
                resolve_user(e).ok_or_else(|| format!("admin {e:?} is not a user on this host"))?;
            uids.push(uid);
        }
        uids.sort_unstable();
        uids.dedup();
        Ok(Self(uids))
    }

    pub fn contains(&self, uid: u32) -> bool {
        self.0.contains(&uid)
    }
}

impl Caller {
    pub fn from_peer(
        uid: u32,
        gid: u32,
        pid: Option<i32>,
        mut groups: Vec<u32>,
        admins: &Admins,
    ) -> Self {
        if !groups.contains(&gid) {
            groups.push(gid);
        }
        Self {
            uid,
            gid,
            pid,
            groups,
            user: user_name(uid),
            admin: admins.contains(uid),
        }
    }
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

/// Resolves a group given as a name or a numeric gid.
pub fn resolve_group(s: &str) -> Option<(u32, String)> {
    if let Ok(gid) = s.parse::<u32>() {
        let name = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
            .ok()
            .flatten()
            .map_or_else(|| format!("gid:{gid}"), |g| g.name);
        return Some((gid, name));
    }
    match nix::unistd::Group::from_name(s) {
        Ok(Some(g)) => Some((g.gid.as_raw(), g.name)),
        _ => None,
    }
}

/// When a uid's groups were looked up, and what they were.
type Looked = (Instant, Vec<u32>);

/// The groups of a uid per the account database (primary `gid` included): for the mount, whose
/// requests carry only uid, gid and pid. Cached briefly, as a directory walk asks once per
/// lookup; `forget` drops the cache when roles change.
pub struct GroupCache {
    ttl: Duration,
    map: Mutex<HashMap<(u32, u32), Looked>>,
}

impl GroupCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn groups_of(&self, uid: u32, gid: u32) -> Vec<u32> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, g)) = map.get(&(uid, gid)) {
            if at.elapsed() < self.ttl {
                return g.clone();
            }
        }
        let g = lookup_groups(uid, gid);
        if map.len() > 4096 {
            map.clear();
        }
        map.insert((uid, gid), (Instant::now(), g.clone()));
        g
    }

    pub fn forget(&self) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// getgrouplist(3) for the uid's account name; only `gid` for a uid without an account.
pub fn lookup_groups(uid: u32, gid: u32) -> Vec<u32> {
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten();
    let mut out = vec![gid];
    if let Some(u) = user {
        if let Ok(name) = std::ffi::CString::new(u.name) {
            if let Ok(gs) = nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(gid)) {
                out.extend(gs.into_iter().map(|g| g.as_raw()));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The supplementary groups of a Unix socket's peer (SO_PEERGROUPS, Linux 4.13+): the groups
/// the peer process had when it connected, as the kernel recorded them. nix has no wrapper for
/// this option, hence an unsafe call (the others are in `alloc.rs`).
#[allow(unsafe_code)]
pub fn peer_groups(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<Vec<u32>> {
    use std::os::fd::AsRawFd;
    let mut buf: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (buf.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: buf is a valid writable buffer of `len` bytes; the kernel writes at most that
        // and reports the size it needs when it is too small (ERANGE).
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            buf.truncate(n);
            return Ok(buf);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) && n > buf.len() && n <= 65536 {
            buf.resize(n, 0);
            continue;
        }
        return Err(e);
    }
}

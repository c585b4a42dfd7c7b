//! The inode table: one immutable view of the catalog with its stable inode numbers, built from a
//! [`Snapshot`] and swapped whole on every update.
//!
//! **Inode numbers** are the first 8 bytes (little-endian) of a domain-separated BLAKE3 hash of
//! what the node is, with the top bit cleared (some tools treat inode numbers as signed):
//! `BLAKE3-derive-key("arca 2026 mount inode v2", kind || (u64 LE len || field)*)`, where kind is
//! 1 model (name), 2 version directory (model, version, created_at, Merkle root), 3 directory
//! inside a version (model, version, created_at, Merkle root, path) and 4 file (model, version,
//! created_at, Merkle root, path), 5 alias link (model, alias; not the target, so a switch keeps
//! the inode). They are therefore the same on every mount of the same catalog. The Merkle root
//! (which covers every path, size, mode and digest) is in the key so that a version deleted and
//! pushed again with other content gets new inodes even within the same second (`created_at`
//! alone has one-second steps): the kernel keeps an inode's pages while anyone holds it
//! (`KEEP_CACHE`), and a reused number would serve the old content for the new. A collision (two keys, one
//! number) is resolved first come, first served: the later key probes
//! `BLAKE3-derive-key("arca 2026 mount inode probe v1", key || u32 LE i)` for i = 1, 2, … until
//! a free number. The [`Registry`] remembers every number it ever handed out for as long as the
//! mount lives, so a number is never reused for a different node, even after the first one was
//! deleted: the kernel may still hold it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arca_core::{ModelName, ModelVersion};

use super::{Attr, Entry, Fail, Ino, Kind, DYNAMIC_TTL, IMMUTABLE_TTL, ROOT};
use crate::{MountFile, Snapshot, VersionEntry};

/// The status links of a model directory, in the order of `ModelInfo::aliases`.
pub(super) const ALIASES: [&str; 2] = ["production", "staging"];

/// The node kinds that start an inode key (module doc).
pub(super) const KIND_MODEL: u8 = 1;
pub(super) const KIND_VERSION: u8 = 2;
pub(super) const KIND_DIR: u8 = 3;
pub(super) const KIND_FILE: u8 = 4;
pub(super) const KIND_ALIAS: u8 = 5;

/// The model and version a directory or file belongs to: what authorization and failure reports
/// are about.
#[derive(Debug)]
pub(super) struct Scope {
    pub(super) model: ModelName,
    pub(super) version: ModelVersion,
}

/// A file of a version, shared by the table and by open handles (which keep working after the
/// version disappears from the catalog).
pub(super) struct FileNode {
    pub(super) ino: Ino,
    pub(super) scope: Arc<Scope>,
    version: Arc<VersionEntry>,
    index: usize,
    /// Start offset of every chunk plus the total, or why the chunk list does not add up to the
    /// file's size. Computed on first read, so building a table stays O(files), not O(chunks).
    layout: OnceLock<Result<Vec<u64>, String>>,
}

impl FileNode {
    pub(super) fn file(&self) -> &MountFile {
        &self.version.files[self.index]
    }

    /// The version this file belongs to, as it was when the node was built.
    pub(super) fn entry(&self) -> &Arc<VersionEntry> {
        &self.version
    }

    pub(super) fn attr(&self) -> Attr {
        let f = self.file();
        Attr {
            ino: self.ino,
            kind: Kind::File,
            size: f.size,
            // Readable by everyone the kernel lets through, executable if pushed executable:
            // who may read is decided by `may_read` at lookup and open, and pushed owner-only
            // modes (0600) would otherwise lock out the service users the mount exists for,
            // since every file is owned by the daemon's user.
            perm: if f.mode & 0o111 != 0 { 0o555 } else { 0o444 },
            nlink: 1,
            time: self.version.created_at,
        }
    }

    pub(super) fn layout(&self) -> &Result<Vec<u64>, String> {
        self.layout.get_or_init(|| {
            let f = self.file();
            let mut starts = Vec::with_capacity(f.chunks.len() + 1);
            let mut at = 0u64;
            for (id, len) in &f.chunks {
                if *len == 0 {
                    return Err(format!("chunk {id} has length 0"));
                }
                starts.push(at);
                at += u64::from(*len);
            }
            starts.push(at);
            if at == f.size {
                Ok(starts)
            } else {
                Err(format!(
                    "chunk lengths add up to {at} bytes but the file has {}",
                    f.size
                ))
            }
        })
    }
}

/// What a node is. Children are sorted by name: lookups binary-search them, listings walk them.
pub(super) enum NodeKind {
    Root {
        children: Vec<(String, Ino)>,
    },
    Model {
        model: ModelName,
        children: Vec<(String, Ino)>,
    },
    /// A version directory or a directory inside one.
    Dir {
        scope: Arc<Scope>,
        children: Vec<(String, Ino)>,
    },
    File(Arc<FileNode>),
    Alias {
        /// The model whose directory holds the link (what reading it is authorised against).
        model: ModelName,
        target: String,
    },
}

/// One inode of the table.
pub(super) struct Node {
    pub(super) parent: Ino,
    pub(super) nlink: u32,
    pub(super) time: u64,
    pub(super) kind: NodeKind,
}

impl Node {
    pub(super) fn children(&self) -> Option<&[(String, Ino)]> {
        match &self.kind {
            NodeKind::Root { children }
            | NodeKind::Model { children, .. }
            | NodeKind::Dir { children, .. } => Some(children),
            NodeKind::File(_) | NodeKind::Alias { .. } => None,
        }
    }

    pub(super) fn child(&self, name: &str) -> Option<Ino> {
        let children = self.children()?;
        children
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
            .map(|i| children[i].1)
    }

    pub(super) fn attr(&self, ino: Ino) -> Attr {
        let (kind, size, perm) = match &self.kind {
            NodeKind::File(f) => return f.attr(),
            NodeKind::Alias { target, .. } => (Kind::Symlink, target.len() as u64, 0o777),
            _ => (Kind::Dir, 0, 0o555),
        };
        Attr {
            ino,
            kind,
            size,
            perm,
            nlink: self.nlink,
            time: self.time,
        }
    }

    pub(super) fn ttl(&self) -> Duration {
        match &self.kind {
            NodeKind::Dir { .. } | NodeKind::File(_) => IMMUTABLE_TTL,
            NodeKind::Root { .. } | NodeKind::Model { .. } | NodeKind::Alias { .. } => DYNAMIC_TTL,
        }
    }

    /// The model a model directory or alias link belongs to: what `may_list` is asked about.
    pub(super) fn model(&self) -> Option<&ModelName> {
        match &self.kind {
            NodeKind::Model { model, .. } | NodeKind::Alias { model, .. } => Some(model),
            _ => None,
        }
    }

    pub(super) fn scope(&self) -> Option<&Scope> {
        match &self.kind {
            NodeKind::Dir { scope, .. } => Some(scope),
            NodeKind::File(f) => Some(&f.scope),
            _ => None,
        }
    }
}

/// Per model, what an update compares to find changed links.
pub(super) struct ModelInfo {
    pub(super) ino: Ino,
    /// The alias links actually shown (absent targets are dropped).
    pub(super) aliases: [Option<ModelVersion>; 2],
}

/// Per version, what an update compares to find changed or removed versions.
pub(super) struct VersionInfo {
    pub(super) entry: Arc<VersionEntry>,
    /// The version directory's inode and every inode below it.
    pub(super) inos: Vec<Ino>,
}

/// One immutable view of the catalog, swapped whole by [`Vfs::update`](super::Vfs::update).
pub(super) struct Table {
    pub(super) nodes: HashMap<Ino, Node>,
    pub(super) models: BTreeMap<ModelName, ModelInfo>,
    pub(super) versions: HashMap<(ModelName, ModelVersion), VersionInfo>,
}

/// Every inode number handed out during this mount's life, and to what (see the module doc).
#[derive(Default)]
pub(super) struct Registry {
    owners: HashMap<Ino, [u8; 32]>,
    /// Keys that did not get their primary number because it was taken.
    displaced: HashMap<[u8; 32], Ino>,
}

impl Registry {
    fn assign(&mut self, key: &[u8; 32]) -> Ino {
        self.place(key, ino_from(key[..8].try_into().unwrap_or_default()))
    }

    /// `assign` with the primary number given, so tests can stage a collision.
    pub(super) fn place(&mut self, key: &[u8; 32], primary: Ino) -> Ino {
        if primary > ROOT {
            match self.owners.get(&primary) {
                Some(owner) if owner == key => return primary,
                Some(_) => {}
                None => {
                    self.owners.insert(primary, *key);
                    return primary;
                }
            }
        }
        if let Some(&ino) = self.displaced.get(key) {
            return ino;
        }
        let mut i = 1u32;
        loop {
            let mut h = blake3::Hasher::new_derive_key("arca 2026 mount inode probe v1");
            h.update(key);
            h.update(&i.to_le_bytes());
            let candidate = ino_from(h.finalize().as_bytes()[..8].try_into().unwrap_or_default());
            if candidate > ROOT && !self.owners.contains_key(&candidate) {
                tracing::warn!(
                    primary,
                    ino = candidate,
                    "inode number collision resolved by probing"
                );
                self.owners.insert(candidate, *key);
                self.displaced.insert(*key, candidate);
                return candidate;
            }
            i = i.wrapping_add(1);
        }
    }
}

pub(super) fn ino_from(bytes: [u8; 8]) -> Ino {
    u64::from_le_bytes(bytes) & (u64::MAX >> 1)
}

pub(super) fn node_key(kind: u8, fields: &[&[u8]]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("arca 2026 mount inode v2");
    h.update(&[kind]);
    for f in fields {
        h.update(&(f.len() as u64).to_le_bytes());
        h.update(f);
    }
    *h.finalize().as_bytes()
}

/// Builds one [`Table`] from a [`Snapshot`].
struct Builder<'r> {
    registry: &'r mut Registry,
    nodes: HashMap<Ino, Node>,
}

impl Table {
    pub(super) fn build(snap: &Snapshot, registry: &mut Registry, mounted_at: u64) -> Table {
        let mut b = Builder {
            registry,
            nodes: HashMap::new(),
        };
        let mut models = BTreeMap::new();
        let mut versions = HashMap::new();
        let mut root_children = Vec::new();
        for (model, me) in &snap.models {
            let mino = b
                .registry
                .assign(&node_key(KIND_MODEL, &[model.as_str().as_bytes()]));
            let mut children = BTreeMap::new();
            for (version, entry) in &me.versions {
                let scope = Arc::new(Scope {
                    model: model.clone(),
                    version: version.clone(),
                });
                let (vname, vino, inos) = b.version(mino, scope, entry);
                children.insert(vname, vino);
                versions.insert(
                    (model.clone(), version.clone()),
                    VersionInfo {
                        entry: Arc::clone(entry),
                        inos,
                    },
                );
            }
            let mut aliases = [None, None];
            for (i, (alias, target)) in ALIASES
                .iter()
                .zip([&me.production, &me.staging])
                .enumerate()
            {
                let Some(target) = target else { continue };
                let Some(entry) = me.versions.get(target) else {
                    tracing::warn!(%model, alias, version = %target, "alias names an absent version; not shown");
                    continue;
                };
                let target_name = target.to_string();
                // The link's inode does not depend on its target: a path walk that resolved
                // `production` just before a switch then reads the new target from the same
                // inode, instead of finding its inode gone (ENOENT) in the new table.
                let key = node_key(KIND_ALIAS, &[model.as_str().as_bytes(), alias.as_bytes()]);
                let ino = b.registry.assign(&key);
                let node = Node {
                    parent: mino,
                    nlink: 1,
                    time: entry.created_at,
                    kind: NodeKind::Alias {
                        model: model.clone(),
                        target: target_name,
                    },
                };
                b.nodes.insert(ino, node);
                children.insert((*alias).to_owned(), ino);
                aliases[i] = Some(target.clone());
            }
            let time = me
                .versions
                .values()
                .map(|v| v.created_at)
                .max()
                .unwrap_or(mounted_at);
            let nlink = 2 + me.versions.len() as u32;
            let node = Node {
                parent: ROOT,
                nlink,
                time,
                kind: NodeKind::Model {
                    model: model.clone(),
                    children: children.into_iter().collect(),
                },
            };
            b.nodes.insert(mino, node);
            models.insert(model.clone(), ModelInfo { ino: mino, aliases });
            root_children.push((model.as_str().to_owned(), mino));
        }
        // 1 ("unknown", as for file systems that do not count): the number of models differs
        // from caller to caller, and the link count must not give away those one may not see.
        b.nodes.insert(
            ROOT,
            Node {
                parent: ROOT,
                nlink: 1,
                time: mounted_at,
                kind: NodeKind::Root {
                    children: root_children,
                },
            },
        );
        Table {
            nodes: b.nodes,
            models,
            versions,
        }
    }

    pub(super) fn node(&self, ino: Ino) -> Result<&Node, Fail> {
        self.nodes.get(&ino).ok_or(Fail::NotFound)
    }

    pub(super) fn entry(&self, ino: Ino) -> Result<Entry, Fail> {
        let node = self.node(ino)?;
        Ok(Entry {
            attr: node.attr(ino),
            ttl: node.ttl(),
        })
    }
}

/// A directory being assembled inside a version.
struct DirBuild {
    ino: Ino,
    parent: Ino,
    children: BTreeMap<String, Ino>,
    subdirs: u32,
}

impl Builder<'_> {
    /// Add a version directory and everything in it; returns its name, inode and all inodes.
    fn version(
        &mut self,
        mino: Ino,
        scope: Arc<Scope>,
        entry: &Arc<VersionEntry>,
    ) -> (String, Ino, Vec<Ino>) {
        let model = scope.model.as_str().as_bytes();
        let vname = scope.version.to_string();
        let created = entry.created_at.to_le_bytes();
        let root = entry.merkle_root.as_bytes();
        let vino = self.registry.assign(&node_key(
            KIND_VERSION,
            &[model, vname.as_bytes(), &created, root],
        ));
        // Directories by path inside the version ("" is the version directory itself).
        let mut dirs: HashMap<String, DirBuild> = HashMap::new();
        dirs.insert(
            String::new(),
            DirBuild {
                ino: vino,
                parent: mino,
                children: BTreeMap::new(),
                subdirs: 0,
            },
        );
        let mut files: HashSet<&str> = HashSet::new();
        let mut inos = vec![vino];
        for (index, f) in entry.files.iter().enumerate() {
            let path = f.path.as_str();
            // The daemon's manifest rules exclude these; should one slip through, the first
            // entry in file order wins and the conflicting one is left out (and logged).
            let prefixes: Vec<&str> = path.match_indices('/').map(|(i, _)| &path[..i]).collect();
            if files.contains(path)
                || dirs.contains_key(path)
                || prefixes.iter().any(|p| files.contains(p))
            {
                tracing::warn!(model = %scope.model, version = %scope.version, path, "conflicting path in version; not shown");
                continue;
            }
            let mut parent_path = "";
            for dir in prefixes {
                if !dirs.contains_key(dir) {
                    let ino = self.registry.assign(&node_key(
                        KIND_DIR,
                        &[model, vname.as_bytes(), &created, root, dir.as_bytes()],
                    ));
                    let parent = match dirs.get_mut(parent_path) {
                        Some(p) => {
                            p.children.insert(
                                dir[parent_path.len()..].trim_start_matches('/').to_owned(),
                                ino,
                            );
                            p.subdirs += 1;
                            p.ino
                        }
                        None => vino,
                    };
                    dirs.insert(
                        dir.to_owned(),
                        DirBuild {
                            ino,
                            parent,
                            children: BTreeMap::new(),
                            subdirs: 0,
                        },
                    );
                    inos.push(ino);
                }
                parent_path = dir;
            }
            let ino = self.registry.assign(&node_key(
                KIND_FILE,
                &[model, vname.as_bytes(), &created, root, path.as_bytes()],
            ));
            let name = path.rsplit('/').next().unwrap_or(path);
            let parent = match dirs.get_mut(parent_path) {
                Some(p) => {
                    p.children.insert(name.to_owned(), ino);
                    p.ino
                }
                None => vino,
            };
            files.insert(path);
            inos.push(ino);
            let file = FileNode {
                ino,
                scope: Arc::clone(&scope),
                version: Arc::clone(entry),
                index,
                layout: OnceLock::new(),
            };
            let node = Node {
                parent,
                nlink: 1,
                time: entry.created_at,
                kind: NodeKind::File(Arc::new(file)),
            };
            self.nodes.insert(ino, node);
        }
        for (_, d) in dirs {
            let kind = NodeKind::Dir {
                scope: Arc::clone(&scope),
                children: d.children.into_iter().collect(),
            };
            self.nodes.insert(
                d.ino,
                Node {
                    parent: d.parent,
                    nlink: 2 + d.subdirs,
                    time: entry.created_at,
                    kind,
                },
            );
        }
        (vname, vino, inos)
    }
}

//! The read-only FUSE mount of arca (issue #3); not written yet.

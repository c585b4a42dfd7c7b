//! End-to-end tests of arca live in `tests/e2e/`: they run the real `arcad` and `arca` binaries.

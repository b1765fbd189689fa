//! End-to-end browser tests of the web UI live in `tests/`; this library is empty.

//! What the link and cluster tests share: a deployment's certificates in a directory of its own.

#![allow(dead_code)]

use std::path::Path;
use weft_cells::certs::{self, Identity};
use weft_cells::link::Credentials;

/// A deployment: a CA, node `n1` (reached as `localhost` or 127.0.0.1) and worker `w1`.
pub struct Deployment {
    dir: tempfile::TempDir,
}

impl Deployment {
    pub fn new() -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        certs::init(dir.path(), false).unwrap();
        certs::issue(
            dir.path(),
            &Identity::node("n1").unwrap(),
            &["localhost".to_string(), "127.0.0.1".to_string()],
        )
        .unwrap();
        certs::issue(dir.path(), &Identity::worker("w1").unwrap(), &[]).unwrap();
        Deployment { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn node(&self) -> Credentials {
        Credentials::load(self.path(), &Identity::node("n1").unwrap()).unwrap()
    }

    pub fn worker(&self) -> Credentials {
        Credentials::load(self.path(), &Identity::worker("w1").unwrap()).unwrap()
    }

    pub fn read(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.path().join(file)).unwrap()
    }
}

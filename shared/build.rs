//! Fingerprints the contracts: a hash of every source file of this crate,
//! given to the code as `DUIKOU_CONTRACTS_FINGERPRINT`
//! ([`crate::CONTRACTS`]). Binaries built from different contracts (an old
//! and a new gateway side by side in a rolling upgrade) then keep their
//! cached answers apart: one decoding the other's views would fill a field
//! it did not know with its default.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            sources(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=src");
    let mut files = Vec::new();
    sources(Path::new("src"), &mut files)?;
    // The same order wherever it is built.
    files.sort();
    let mut hash = Sha256::new();
    for file in &files {
        hash.update(file.to_string_lossy().as_bytes());
        hash.update(std::fs::read(file)?);
    }
    let digest = hash.finalize();
    println!(
        "cargo:rustc-env=DUIKOU_CONTRACTS_FINGERPRINT={}",
        hex::encode(&digest[..6])
    );
    Ok(())
}

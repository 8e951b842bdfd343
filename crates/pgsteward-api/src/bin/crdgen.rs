//! Print or write the CRDs.
//!
//! `crdgen` prints every CRD to stdout as one YAML stream;
//! `crdgen DIR` writes `DIR/<plural>.<group>.yaml`, one file per CRD.

use std::{env, fs, path::PathBuf, process::ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    match args.as_slice() {
        [] => {
            for (_, crd) in pgsteward_api::crds() {
                print!("{}", pgsteward_api::crd_yaml(&crd));
            }
            ExitCode::SUCCESS
        }
        [dir] if !dir.starts_with('-') => {
            let dir = PathBuf::from(dir);
            if let Err(e) = fs::create_dir_all(&dir) {
                eprintln!("crdgen: cannot create {}: {e}", dir.display());
                return ExitCode::FAILURE;
            }
            for (file, crd) in pgsteward_api::crds() {
                let path = dir.join(file);
                if let Err(e) = fs::write(&path, pgsteward_api::crd_yaml(&crd)) {
                    eprintln!("crdgen: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
                println!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: crdgen [DIR]   (print the CRDs, or write them to DIR/*.yaml)");
            ExitCode::from(2)
        }
    }
}

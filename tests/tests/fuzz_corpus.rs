//! Replays the committed fuzz seed corpus (`fuzz/corpus/<target>/*`) through the same
//! property checks the fuzz targets run, so `cargo test` catches a regression on any input
//! the fuzzers have kept, without needing cargo-fuzz or a nightly toolchain.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use nexar_proto::fuzz_checks;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The names of the entries of `dir` (sorted), and their paths.
fn entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| {
            let entry = entry.expect("directory entry");
            let name = entry.file_name().into_string().expect("UTF-8 file name");
            (name, entry.path())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_corpus_file_keeps_its_target_property() {
    let corpus = fuzz_dir().join("corpus");
    let mut seen = BTreeSet::new();
    let mut files = 0;
    for (target, dir) in entries(&corpus) {
        assert!(dir.is_dir(), "{} is not a target directory", dir.display());
        let inputs = entries(&dir);
        assert!(!inputs.is_empty(), "the corpus of `{target}` is empty");
        for (name, path) in inputs {
            let data = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // A panic inside names the property; say which file it came from first.
            eprintln!("replaying {target}/{name} ({} bytes)", data.len());
            assert!(
                fuzz_checks::check(&target, &data),
                "corpus directory `{target}` names no fuzz target"
            );
            files += 1;
        }
        seen.insert(target);
    }
    let expected: BTreeSet<String> = fuzz_checks::targets().map(String::from).collect();
    assert_eq!(seen, expected, "corpus directories and fuzz targets differ");
    assert!(files >= expected.len());
}

#[test]
fn every_target_has_a_fuzz_binary() {
    let fuzz = fuzz_dir();
    let sources: BTreeSet<String> = entries(&fuzz.join("fuzz_targets"))
        .into_iter()
        .filter_map(|(name, _)| name.strip_suffix(".rs").map(String::from))
        .collect();
    let expected: BTreeSet<String> = fuzz_checks::targets().map(String::from).collect();
    assert_eq!(
        sources, expected,
        "fuzz/fuzz_targets/*.rs and fuzz_checks differ"
    );

    let manifest = fs::read_to_string(fuzz.join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for target in &expected {
        let source = fs::read_to_string(fuzz.join("fuzz_targets").join(format!("{target}.rs")))
            .expect("target source");
        assert!(
            source.contains(&format!("check(\"{target}\", data)")),
            "fuzz_targets/{target}.rs does not run its own check"
        );
        assert!(
            manifest.contains(&format!("path = \"fuzz_targets/{target}.rs\"")),
            "fuzz/Cargo.toml has no [[bin]] for {target}"
        );
    }
}

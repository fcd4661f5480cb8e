//! Every input of the fuzz corpora, replayed through its target (`keyway::fuzz`):
//! the hand-written seeds (`fuzz/seeds`), what the fuzzer kept (`fuzz/corpus`,
//! minimized) and every input that once broke a property (`fuzz/regressions`, named
//! for what it found). `fuzz/run` is what grows them; see fuzz/README.md.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

fn replay(name: &str) {
    let target = keyway::fuzz::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .unwrap_or_else(|| panic!("no fuzz target {name}"));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut inputs: Vec<PathBuf> = Vec::new();
    for dir in ["seeds", "corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
            continue;
        };
        inputs.extend(entries.map(|e| e.unwrap().path()));
    }
    inputs.sort();
    assert!(
        inputs
            .iter()
            .any(|p| p.to_string_lossy().contains("/seeds/")),
        "the {name} target has no seeds: the replay would prove nothing"
    );
    let mut broken = Vec::new();
    for path in &inputs {
        let data = std::fs::read(path).unwrap();
        if std::panic::catch_unwind(|| target(&data)).is_err() {
            broken.push(path.display().to_string());
        }
    }
    assert!(
        broken.is_empty(),
        "{name}: {} of {} inputs break a property:\n{}",
        broken.len(),
        inputs.len(),
        broken.join("\n")
    );
}

macro_rules! replays {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                replay(stringify!($name));
            }
        )*

        #[test]
        fn every_target_is_replayed() {
            let replayed = [$(stringify!($name)),*];
            for (name, _) in keyway::fuzz::TARGETS {
                assert!(replayed.contains(name), "{name} is not replayed");
            }
        }
    };
}

replays!(
    www_authenticate,
    resource_metadata,
    server_metadata,
    registration_answer,
    token_answer,
    callback_query,
    event_stream,
    bridge_line,
    gateway_message,
);

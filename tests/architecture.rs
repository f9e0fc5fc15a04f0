//! The invariants of ARCHITECTURE.md that a reading of the sources can check. Each test names the
//! invariant it guards; a failure prints the offending file and line.

use std::path::{Path, PathBuf};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir` (relative to the repository), with its code lines: comment lines
/// dropped, and the file cut at its first `#[cfg(test)]` (test modules sit at the end of a file
/// and may read fixtures from disk).
fn code_lines(dir: &str) -> Vec<(PathBuf, usize, String)> {
    let root = repo().join(dir);
    let mut files = Vec::new();
    if root.is_file() {
        files.push(root);
    } else {
        collect(&root, "rs", &mut files);
    }
    assert!(!files.is_empty(), "no sources under {dir}");
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            let t = line.trim_start();
            if t.starts_with("#[cfg(test)]") {
                break;
            }
            if t.starts_with("//") {
                continue;
            }
            out.push((f.clone(), i + 1, line.to_owned()));
        }
    }
    out
}

/// Files ending in `.ext` below `dir`, leaving out build output, git's own files and the Python
/// virtual environments the scripts install (any folder with a `pyvenv.cfg`).
fn collect(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let skip = ["target", ".git", "node_modules"];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !skip.contains(&name.as_str()) && !path.join("pyvenv.cfg").exists() {
                collect(&path, ext, out);
            }
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
}

fn assert_free_of(dirs: &[&str], forbidden: &[&str], invariant: &str) {
    let mut found = Vec::new();
    for dir in dirs {
        for (file, n, line) in code_lines(dir) {
            for word in forbidden {
                if line.contains(word) {
                    found.push(format!(
                        "{}:{n}: `{word}` in {line:?}",
                        file.strip_prefix(repo()).unwrap_or(&file).display()
                    ));
                }
            }
        }
    }
    assert!(found.is_empty(), "{invariant}:\n{}", found.join("\n"));
}

/// What does I/O: HTTP, SQL, Redis, the async runtime, sockets, files.
const IO: [&str; 8] = [
    "axum", "hyper", "reqwest", "sqlx", "redis", "tokio", "std::net", "std::fs",
];

/// "`pipeline` and `engine` know nothing of HTTP, SQL, the network or the file system."
#[test]
fn the_pipeline_and_the_engine_know_nothing_of_http_sql_the_network_or_files() {
    let upward = [
        "crate::server",
        "crate::store",
        "crate::fetch",
        "crate::service",
        "crate::eval",
    ];
    assert_free_of(
        &["src/pipeline", "src/engine"],
        &[&IO[..], &upward[..]].concat(),
        "the pipeline and the engine must not reach HTTP, SQL, the network or the file system",
    );
}

/// The check service is the one check of every front end: it knows the pipeline and the types of
/// the audit row, never HTTP, a database connection or the network.
#[test]
fn the_check_service_does_no_io() {
    assert_free_of(
        &["src/service.rs"],
        &[&IO[..], &["crate::server"][..]].concat(),
        "the check service must not do I/O",
    );
}

/// "Errors: `anyhow` only in the binary." The tract backend is the one exception: tract's own
/// error type (`TractResult`) is `anyhow`'s, and its ops must return it.
#[test]
fn anyhow_only_in_the_binary() {
    let mut dirs: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(repo().join("src")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name != "cmd" && name != "main.rs" && name != "engine" {
            dirs.push(format!("src/{name}"));
        }
    }
    dirs.push("src/engine/mod.rs".into());
    let dirs: Vec<&str> = dirs.iter().map(String::as_str).collect();
    assert_free_of(&dirs, &["anyhow"], "anyhow belongs to the binary (src/cmd)");
}

/// "Configuration defined once": the library takes its settings as values; only the binary
/// (clap, `src/cmd`) reads the environment.
#[test]
fn only_the_binary_reads_the_environment() {
    let mut dirs: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(repo().join("src")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name != "cmd" && name != "main.rs" {
            dirs.push(format!("src/{name}"));
        }
    }
    let dirs: Vec<&str> = dirs.iter().map(String::as_str).collect();
    assert_free_of(
        &dirs,
        &["env::var", "var_os("],
        "the library must not read environment variables",
    );
}

/// "The service is pure Rust; Python lives only in `training/` and the benchmark peers in
/// `scripts/`."
#[test]
fn python_lives_only_in_training_and_scripts() {
    let mut py = Vec::new();
    collect(repo(), "py", &mut py);
    let strays: Vec<_> = py
        .iter()
        .map(|p| p.strip_prefix(repo()).unwrap().to_path_buf())
        .filter(|p| !(p.starts_with("training") || p.starts_with("scripts")))
        .collect();
    assert!(
        strays.is_empty(),
        "Python outside training/ and scripts/: {strays:?}"
    );
}

/// "CPU work (the pipeline) never runs on async worker threads": the HTTP handlers call the
/// check service only inside a closure handed to `Running::run`, which runs it on a CPU slot's
/// own thread (src/server/admission.rs).
#[test]
fn the_server_runs_checks_on_the_cpu_slot_threads() {
    for (file, call) in [
        ("src/server/routes.rs", "service.check_with("),
        ("src/server/capture.rs", "service.precheck("),
    ] {
        let source = std::fs::read_to_string(repo().join(file)).unwrap();
        let calls: Vec<usize> = source.match_indices(call).map(|(i, _)| i).collect();
        assert!(!calls.is_empty(), "{file} no longer calls {call}");
        for i in calls {
            let before = &source[..i];
            let run = before
                .rfind(".run(")
                .unwrap_or_else(|| panic!("{call} in {file} outside Running::run"));
            // The call sits in the closure handed to that run: no await between the two.
            assert!(
                !before[run..].contains(".await"),
                "{call} in {file} is not inside the closure of the run before it"
            );
        }
    }
}

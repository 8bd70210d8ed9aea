//! The corpus of configuration files in `tests/configs/`, loaded by the real
//! binaries: `twoway-server check` for server.toml and policy.toml, and
//! `twoway status --config` (which loads a client config as `up` does) for
//! the client.
//!
//! Every file under `valid/` must load. Every file under `invalid/` must be
//! refused (exit 2) with an error that names the file, names the key of its
//! `# key:` line and says what its `# error:` line says: the contract of
//! CONFIG.md, that a malformed config names the file and the key. A file
//! with a `# gap:` line is refused as written but does not name file and key
//! yet;
//! the test fails once it does, so that the line goes.
//!
//! The files are checked inside the folder of a `pki init` (the same CA,
//! certificates and default policy for all), each copied under
//! `KIND-NAME.toml`. Policy files are named by a server.toml that has
//! `tunnel.network` 10.77.0.0/24 and `tunnel.network6` fd77::/64.

use std::path::{Path, PathBuf};
use std::time::Duration;

use twoway_tests::bins::pki_in;
use twoway_tests::toml_files::{self, edit_toml};
use twoway_tests::vpn::path_str;
use twoway_tests::{bins, proc, CmdOutput};

/// The three kinds of file, as the folders under `tests/configs/` name them.
const KINDS: [&str; 3] = ["server", "policy", "client"];

/// One file of the corpus and what its header says.
struct Case {
    kind: &'static str,
    valid: bool,
    file: PathBuf,
    /// `# key:`: the key the error must name.
    key: Option<String>,
    /// `# error:`: what the error must say.
    error: Option<String>,
    /// `# gap:`: why the error does not name the key yet.
    gap: Option<String>,
}

impl Case {
    fn name(&self) -> String {
        let stem = self.file.file_stem().expect("file name").to_string_lossy();
        format!("{}-{stem}", self.kind)
    }
}

fn corpus() -> Vec<Case> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut cases = Vec::new();
    for kind in KINDS {
        for valid in [true, false] {
            let dir = root
                .join(kind)
                .join(if valid { "valid" } else { "invalid" });
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|e| e.expect("directory entry").path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            files.sort();
            assert!(!files.is_empty(), "{} holds no .toml file", dir.display());
            for file in files {
                let text = std::fs::read_to_string(&file).expect("read corpus file");
                let header = |name: &str| {
                    let prefix = format!("# {name}: ");
                    text.lines()
                        .find_map(|l| l.strip_prefix(&prefix))
                        .map(String::from)
                };
                let case = Case {
                    kind,
                    valid,
                    key: header("key"),
                    error: header("error"),
                    gap: header("gap"),
                    file,
                };
                assert!(
                    valid == (case.key.is_none() && case.error.is_none()),
                    "{}: an invalid file needs `# key:` and `# error:` lines, a valid one neither",
                    case.file.display()
                );
                cases.push(case);
            }
        }
    }
    cases
}

/// Copy the case into the PKI folder and load it; the copy and the output.
fn load(pki: &Path, case: &Case) -> (PathBuf, CmdOutput) {
    let copy = pki.join(format!("{}.toml", case.name()));
    std::fs::copy(&case.file, &copy).expect("copy corpus file");
    let out = match case.kind {
        "server" => check(&copy),
        "policy" => {
            let server = pki.join(format!("check-{}.toml", case.name()));
            std::fs::copy(pki.join("server.toml"), &server).expect("copy server.toml");
            edit_toml(&server, |t| {
                toml_files::set(t, "policy", path_str(&copy));
                toml_files::set(t, "tunnel.network6", "fd77::/64");
            });
            check(&server)
        }
        _ => proc::run(
            &[
                bins().client_str(),
                "status",
                "--json",
                "--config",
                path_str(&copy),
            ],
            Duration::from_secs(10),
        ),
    };
    (copy, out)
}

fn check(config: &Path) -> CmdOutput {
    proc::run(
        &[bins().server_str(), "check", "--config", path_str(config)],
        Duration::from_secs(10),
    )
}

/// The errors of an output, one string each: every error starts a line with
/// an absolute path (after `twoway: ` for the client); a TOML parse error
/// goes on over the following lines.
fn errors(out: &CmdOutput) -> Vec<String> {
    let mut errors: Vec<String> = Vec::new();
    for line in out.stdout.lines().chain(out.stderr.lines()) {
        let starts = line.trim_start_matches("twoway: ").starts_with('/');
        match errors.last_mut() {
            Some(e) if !starts => {
                e.push('\n');
                e.push_str(line);
            }
            _ => errors.push(line.to_string()),
        }
    }
    errors
}

/// Whether an error names `key`: as ``key `tunnel.pool` `` (a value
/// refused), or, in a TOML parse error, as ``unknown field `netwrok` `` /
/// ``missing field `server` `` or on the quoted line of the file (`2 | mtu =
/// "big"`, `1 | [client]`).
fn names_key(error: &str, key: &str) -> bool {
    let leaf = key.rsplit('.').next().unwrap_or(key);
    let leaf = leaf.split('[').next().unwrap_or(leaf);
    let quoted_line = |l: &str| {
        let Some((number, code)) = l.split_once(" | ") else {
            return false;
        };
        let code = code.trim_start();
        number.trim().parse::<u32>().is_ok()
            && (code.starts_with(&format!("{leaf} "))
                || code.starts_with(&format!("{leaf}="))
                || code.starts_with(&format!("[{leaf}]"))
                || code.starts_with(&format!("[[{leaf}]]")))
    };
    error.contains(&format!("key `{key}`"))
        || error.contains(&format!("unknown field `{leaf}`"))
        || error.contains(&format!("missing field `{leaf}`"))
        || error.lines().any(quoted_line)
}

/// What is wrong with the outcome of one case; `None` when it is as the
/// header says.
fn judge(case: &Case, copy: &Path, out: &CmdOutput) -> Option<String> {
    if case.valid {
        let loaded = match case.kind {
            "client" => out.stdout.trim() == r#"{"state":"down"}"#,
            _ => true,
        };
        return (!(out.success() && loaded)).then(|| "refused, expected to load".into());
    }
    if out.code() != Some(2) {
        return Some(format!(
            "exit {:?}, expected 2 (a config error)",
            out.code()
        ));
    }
    let (key, said) = (case.key.as_deref()?, case.error.as_deref()?);
    let errors = errors(out);
    let said_it: Vec<&String> = errors.iter().filter(|e| e.contains(said)).collect();
    if said_it.is_empty() {
        return Some(format!("no error says {said:?}"));
    }
    let names_both = said_it
        .iter()
        .any(|e| e.contains(path_str(copy)) && names_key(e, key));
    match (&case.gap, names_both) {
        (None, true) | (Some(_), false) => None,
        (None, false) => Some(format!(
            "the error does not name both the file {} and the key `{key}`",
            copy.display()
        )),
        (Some(gap), true) => Some(format!(
            "the error names the file and the key `{key}` now: remove the `# gap:` line ({gap})"
        )),
    }
}

#[test]
fn every_corpus_file_loads_or_names_file_and_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = pki_in(tmp.path(), &["corpus"]);
    let cases = corpus();
    let mut failures = Vec::new();
    for case in &cases {
        let (copy, out) = load(&pki, case);
        if let Some(why) = judge(case, &copy, &out) {
            failures.push(format!("{}: {why}\n{out}", case.file.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus files are not handled as their header says:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn names_key_reads_both_forms_of_error() {
    let refused = "/etc/s.toml: key `tunnel.pool`: 10.78.0.0/25 is not inside";
    assert!(names_key(refused, "tunnel.pool"));
    assert!(!names_key(refused, "tunnel.network"));
    let parse = "/etc/s.toml: TOML parse error at line 2, column 7\n  |\n\
                 2 | mtu = \"big\"\n  |       ^^^^^\ninvalid type: string \"big\", expected u16";
    assert!(names_key(parse, "tunnel.mtu"));
    assert!(!names_key(parse, "tunnel.name"));
    let table = "/p.toml: TOML parse error at line 1, column 1\n  |\n1 | [[client]]\n  | ^\n\
                 missing field `identity`";
    assert!(names_key(table, "client[0].identity"));
    assert!(names_key(table, "client"));
    assert!(!names_key(table, "client[0].address"));
    let unknown = "unknown field `netwrok`, expected one of `name`, `network`";
    assert!(names_key(unknown, "tunnel.netwrok"));
    assert!(!names_key(unknown, "tunnel.network"));
    let file_only = "/etc/p.toml: cannot read: No such file or directory (os error 2)";
    assert!(!names_key(file_only, "policy"));
}

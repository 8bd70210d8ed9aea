//! docs/CONFIG.md and docs/STATUS.md against the code, so that they cannot
//! drift: every key the configuration structs accept is documented, every
//! documented key is accepted, documented defaults are the code's, every
//! example loads and validates; every field of both `status --json` outputs
//! is documented and every documented field is printed.
//!
//! The keys the structs accept are read from serde itself: each struct
//! denies unknown fields, and the error for an unknown one lists every field
//! it would have accepted (`unknown field `x`, expected one of `a`, `b``),
//! just as the user sees it. Nothing here has to be kept in step by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use toml::{Table, Value};
use twoway_client::config::ClientConfig;
use twoway_common::control::status::{Carrier, ClientStatus, SessionStatus};
use twoway_server::config::{ServerConfig, TunnelSection};
use twoway_server::policy::Policy;
use twoway_tests::toml_files;

fn doc(name: &str) -> (PathBuf, String) {
    let path = twoway_tests::workspace_root().join("docs").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    (path, text)
}

// ---------------------------------------------------------------------------
// What the code accepts.

/// One step of a key path: a key, or "each element of this array".
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Seg {
    Key(String),
    Each,
}

/// A key the structs accept.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Accepted {
    /// A value: a string, number, list of those...
    Leaf,
    /// A string from a fixed set (a serde enum).
    Choice(Vec<String>),
    /// A table (`[name]`) or an array of tables (`[[name]]`).
    Table { array: bool },
}

const PROBE: &str = "__probe__";

/// `{ __probe__ = 1 }` at `path`, as a whole document.
fn probe_document(path: &[Seg]) -> String {
    let mut value = Value::Table(Table::from_iter([(PROBE.to_owned(), Value::Integer(1))]));
    for seg in path.iter().rev() {
        value = match seg {
            Seg::Key(k) => Value::Table(Table::from_iter([(k.clone(), value)])),
            Seg::Each => Value::Array(vec![value]),
        };
    }
    toml::to_string(value.as_table().expect("a path starts with a key")).expect("serialise")
}

/// The serde message for the probe document at `path`.
fn probe<T: DeserializeOwned>(path: &[Seg]) -> String {
    let text = probe_document(path);
    match toml::from_str::<T>(&text) {
        Ok(_) => panic!("{text:?} was accepted"),
        Err(e) => e.message().to_owned(),
    }
}

/// The names in backticks after "expected" in a serde message.
fn expected_names(message: &str) -> Vec<String> {
    let Some((_, list)) = message.split_once(", expected") else {
        return Vec::new();
    };
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

fn dotted(path: &[Seg]) -> String {
    path.iter()
        .filter_map(|s| match s {
            Seg::Key(k) => Some(k.as_str()),
            Seg::Each => None,
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Every key `T` accepts, by dotted path (`tunnel.nice`, `group.name`).
fn accepted<T: DeserializeOwned>() -> BTreeMap<String, Accepted> {
    let mut out = BTreeMap::new();
    walk::<T>(&[], &mut out);
    out
}

fn walk<T: DeserializeOwned>(table: &[Seg], out: &mut BTreeMap<String, Accepted>) {
    let message = if table.is_empty() {
        toml::from_str::<T>(&format!("{PROBE} = 1"))
            .err()
            .map(|e| e.message().to_owned())
            .unwrap_or_default()
    } else {
        probe::<T>(table)
    };
    let unknown_field = format!("unknown field `{PROBE}`");
    assert!(
        message.starts_with(&unknown_field),
        "{}: the struct does not deny unknown fields? {message}",
        dotted(table)
    );
    for field in expected_names(&message) {
        let mut path = table.to_vec();
        path.push(Seg::Key(field));
        let as_table = probe::<T>(&path);
        if as_table.starts_with(&unknown_field) {
            out.insert(dotted(&path), Accepted::Table { array: false });
            walk::<T>(&path, out);
        } else if as_table.starts_with(&format!("unknown variant `{PROBE}`")) {
            out.insert(dotted(&path), Accepted::Choice(expected_names(&as_table)));
        } else {
            let mut each = path.clone();
            each.push(Seg::Each);
            if probe::<T>(&each).starts_with(&unknown_field) {
                out.insert(dotted(&path), Accepted::Table { array: true });
                walk::<T>(&each, out);
            } else {
                out.insert(dotted(&path), Accepted::Leaf);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// What the page documents.

/// A documented key: a row of a key table.
#[derive(Debug, Clone)]
struct Row {
    line: usize,
    /// The section heading it is under: `""` (top level), `tunnel`, `group`.
    section: String,
    /// Whether the heading is `[[section]]`.
    array: bool,
    key: String,
    default: String,
    text: String,
}

impl Row {
    fn path(&self) -> String {
        if self.section.is_empty() {
            self.key.clone()
        } else {
            format!("{}.{}", self.section, self.key)
        }
    }
}

#[derive(Debug, Default)]
struct File {
    rows: Vec<Row>,
    /// `(line, section heading, array)` of each `### [..]` heading.
    sections: Vec<(usize, String, bool)>,
    /// `(line, text)` of each ```toml block.
    examples: Vec<(usize, String)>,
}

/// The cells of a table row, without the outer pipes.
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    inner.split('|').map(|c| c.trim().to_owned()).collect()
}

/// A single code span, `` `x` ``: x.
fn code(cell: &str) -> Option<&str> {
    let inner = cell.strip_prefix('`')?.strip_suffix('`')?;
    (!inner.contains('`')).then_some(inner)
}

/// CONFIG.md by `##` section: `server`, `policy`, `client`.
fn config_doc() -> BTreeMap<&'static str, File> {
    let (_, text) = doc("CONFIG.md");
    let mut files: BTreeMap<&'static str, File> = BTreeMap::new();
    let mut file: Option<&'static str> = None;
    let mut section = (String::new(), false);
    // An open code block: (first line, text, whether it is TOML).
    let mut block: Option<(usize, String, bool)> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if let Some((start, body, toml)) = block.as_mut() {
            if line.starts_with("```") {
                if let (true, Some(f)) = (*toml, file) {
                    files
                        .entry(f)
                        .or_default()
                        .examples
                        .push((*start, body.clone()));
                }
                block = None;
            } else {
                body.push_str(line);
                body.push('\n');
            }
            continue;
        }
        if let Some(lang) = line.strip_prefix("```") {
            block = Some((n, String::new(), lang.trim() == "toml"));
            continue;
        }
        if let Some(h) = line.strip_prefix("## ") {
            file = if h.starts_with("server.toml") {
                Some("server")
            } else if h.starts_with("policy.toml") {
                Some("policy")
            } else if h.starts_with("Client configuration") {
                Some("client")
            } else {
                None
            };
            section = (String::new(), false);
            if let Some(f) = file {
                files.entry(f).or_default();
            }
            continue;
        }
        let Some(f) = file else { continue };
        if let Some(h) = line.strip_prefix("### ") {
            section = if let Some(name) = h.strip_prefix("[[").and_then(|h| h.strip_suffix("]]")) {
                (name.to_owned(), true)
            } else if let Some(name) = h.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                (name.to_owned(), false)
            } else {
                assert_eq!(
                    h, "Top-level keys",
                    "line {n}: a heading the test does not know"
                );
                (String::new(), false)
            };
            if !section.0.is_empty() {
                files
                    .entry(f)
                    .or_default()
                    .sections
                    .push((n, section.0.clone(), section.1));
            }
            continue;
        }
        if line.starts_with('|') {
            let c = cells(line);
            let Some(key) = code(&c[0]) else { continue };
            assert_eq!(
                c.len(),
                4,
                "line {n}: a key row has 4 cells: key, type, default, meaning"
            );
            files.entry(f).or_default().rows.push(Row {
                line: n,
                section: section.0.clone(),
                array: section.1,
                key: key.to_owned(),
                default: c[2].clone(),
                text: line.to_owned(),
            });
        }
    }
    assert!(block.is_none(), "CONFIG.md: a code block is not closed");
    files
}

// ---------------------------------------------------------------------------
// Building documents.

/// Deep merge: keys of `over` win, tables are merged, arrays replaced.
fn merge(base: &mut Table, over: &Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// A TOML value written in a default cell (`` `"twoway0"` ``, `` `[]` ``).
fn literal(row: &Row) -> Option<Value> {
    let text = code(&row.default)?;
    let t: Table = toml::from_str(&format!("v = {text}")).unwrap_or_else(|e| {
        panic!(
            "CONFIG.md line {}: default {} is not a TOML value: {e}",
            row.line, row.default
        )
    });
    t.get("v").cloned()
}

/// Every key the file requires, set to a placeholder; and for each array of
/// tables, an element with its required keys.
fn required(rows: &[Row]) -> (Table, BTreeMap<String, Table>) {
    let mut base = Table::new();
    let mut elements: BTreeMap<String, Table> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.default == "*required*") {
        let placeholder = Value::String("required".into());
        if r.array {
            elements
                .entry(r.section.clone())
                .or_default()
                .insert(r.key.clone(), placeholder);
        } else {
            toml_files::set(&mut base, &r.path(), placeholder);
        }
    }
    for r in rows.iter().filter(|r| r.array) {
        elements.entry(r.section.clone()).or_default();
    }
    (base, elements)
}

fn load<T: DeserializeOwned>(table: &Table) -> Result<T, String> {
    let text = toml::to_string(table).expect("serialise");
    toml::from_str::<T>(&text).map_err(|e| e.message().to_owned())
}

// ---------------------------------------------------------------------------
// The checks of one configuration file.

/// What a file's checks need to know about its struct.
struct Kind<T> {
    name: &'static str,
    /// The value problems of a loaded example (validation).
    validate: fn(&T) -> Vec<String>,
}

fn check_file<T: DeserializeOwned + std::fmt::Debug>(
    kind: &Kind<T>,
    file: &File,
    problems: &mut Vec<String>,
) {
    let name = kind.name;
    let accepted = accepted::<T>();
    let leaves: BTreeSet<&str> = accepted
        .iter()
        .filter(|(_, a)| !matches!(a, Accepted::Table { .. }))
        .map(|(k, _)| k.as_str())
        .collect();
    let mut documented = BTreeSet::new();
    for r in &file.rows {
        let path = r.path();
        if !documented.insert(path.clone()) {
            problems.push(format!(
                "CONFIG.md line {}: {name}: `{path}` is documented twice",
                r.line
            ));
        }
    }

    // Both directions.
    for key in &leaves {
        if !documented.contains(*key) {
            problems.push(format!(
                "{name}: key `{key}` is accepted by the code but not documented in docs/CONFIG.md"
            ));
        }
    }
    for r in &file.rows {
        if !leaves.contains(r.path().as_str()) {
            problems.push(format!(
                "CONFIG.md line {}: {name}: `{}` is documented but the code does not accept it",
                r.line,
                r.path()
            ));
        }
    }
    let tables: BTreeSet<(String, bool)> = accepted
        .iter()
        .filter_map(|(k, a)| match a {
            Accepted::Table { array } => Some((k.clone(), *array)),
            _ => None,
        })
        .collect();
    let headings: BTreeSet<(String, bool)> = file
        .sections
        .iter()
        .map(|(_, s, a)| (s.clone(), *a))
        .collect();
    for (t, array) in tables.difference(&headings) {
        let h = if *array {
            format!("[[{t}]]")
        } else {
            format!("[{t}]")
        };
        problems.push(format!(
            "{name}: section {h} has no `### {h}` heading in docs/CONFIG.md"
        ));
    }
    for (line, s, array) in &file.sections {
        if !tables.contains(&(s.clone(), *array)) {
            problems.push(format!(
                "CONFIG.md line {line}: {name}: the code has no {} section `{s}`",
                if *array { "[[array]]" } else { "[table]" }
            ));
        }
    }

    // Choices: every value the code accepts is named in the row.
    for r in &file.rows {
        if let Some(Accepted::Choice(values)) = accepted.get(&r.path()) {
            for v in values {
                if !r.text.contains(&format!("\"{v}\"")) {
                    problems.push(format!(
                        "CONFIG.md line {}: {name}: `{}` accepts \"{v}\", which the row does not name",
                        r.line,
                        r.path()
                    ));
                }
            }
        }
    }

    // Defaults.
    let (base, elements) = required(&file.rows);
    let with_elements = |mut t: Table, section: &str| {
        if let Some(e) = elements.get(section) {
            t.insert(
                section.to_owned(),
                Value::Array(vec![Value::Table(e.clone())]),
            );
        }
        t
    };
    let debug = |t: &Table| load::<T>(t).map(|c| format!("{c:?}"));
    match debug(&base) {
        Err(e) => problems.push(format!("{name}: the required keys alone do not load: {e}")),
        Ok(_) => {
            // An empty section is the same as an absent one (the Default
            // impl and the serde default functions agree).
            for (t, array) in &tables {
                if *array || t.contains('.') {
                    continue;
                }
                let mut empty = base.clone();
                if !empty.contains_key(t) {
                    empty.insert(t.clone(), Value::Table(Table::new()));
                }
                if debug(&empty) != debug(&base) {
                    problems.push(format!(
                        "{name}: an empty [{t}] differs from no [{t}]: the Default impl and the serde defaults disagree"
                    ));
                }
            }
        }
    }
    for r in &file.rows {
        // The row's section present (the serde default functions fill it);
        // the Default impls are compared with them above.
        let mut without = with_elements(base.clone(), &r.section);
        if !r.array && !r.section.is_empty() {
            without
                .entry(r.section.clone())
                .or_insert_with(|| Value::Table(Table::new()));
        }
        if r.default == "*required*" {
            let mut missing = without.clone();
            if r.array {
                if let Some(Value::Array(a)) = missing.get_mut(&r.section) {
                    a[0].as_table_mut().expect("a table").remove(&r.key);
                }
            } else {
                remove_path(&mut missing, &r.path());
            }
            match load::<T>(&missing) {
                Ok(_) => problems.push(format!(
                    "CONFIG.md line {}: {name}: `{}` is documented as required, but loads without it",
                    r.line,
                    r.path()
                )),
                Err(e) if !e.contains(&format!("missing field `{}`", r.key)) => problems.push(
                    format!("CONFIG.md line {}: {name}: without `{}`: {e}", r.line, r.path()),
                ),
                Err(_) => {}
            }
            continue;
        }
        let Some(value) = literal(r) else { continue };
        let mut with = without.clone();
        if r.array {
            if let Some(Value::Array(a)) = with.get_mut(&r.section) {
                a[0].as_table_mut()
                    .expect("a table")
                    .insert(r.key.clone(), value);
            }
        } else {
            toml_files::set(&mut with, &r.path(), value);
        }
        match (debug(&without), debug(&with)) {
            (Ok(a), Ok(b)) if a == b => {}
            (Ok(_), Ok(_)) => problems.push(format!(
                "CONFIG.md line {}: {name}: `{}`: the documented default {} is not the code's",
                r.line,
                r.path(),
                r.default
            )),
            (Err(e), _) if e.contains(&format!("missing field `{}`", r.key)) => problems.push(format!(
                "CONFIG.md line {}: {name}: `{}` is required by the code, but documented with a default",
                r.line,
                r.path()
            )),
            (Err(e), _) | (_, Err(e)) => problems.push(format!(
                "CONFIG.md line {}: {name}: `{}` with its default does not load: {e}",
                r.line,
                r.path()
            )),
        }
    }

    // Examples: each loads (over the first, which is a whole file) and
    // validates; every documented key appears in one.
    let Some((_, first)) = file.examples.first() else {
        problems.push(format!("{name}: no example"));
        return;
    };
    let first: Table = match toml::from_str(first) {
        Ok(t) => t,
        Err(e) => {
            problems.push(format!("{name}: the first example is not TOML: {e}"));
            return;
        }
    };
    let mut shown = BTreeSet::new();
    for (line, text) in &file.examples {
        let example: Table = match toml::from_str(text) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("CONFIG.md line {line}: {name}: not TOML: {e}"));
                continue;
            }
        };
        keys_of(&example, "", &mut shown);
        let mut whole = first.clone();
        without_replaced(&mut whole, &example);
        merge(&mut whole, &example);
        match load::<T>(&whole) {
            Ok(config) => {
                for p in (kind.validate)(&config) {
                    let p = p.trim_start_matches(": ");
                    problems.push(format!(
                        "CONFIG.md line {line}: {name}: example refused: {p}"
                    ));
                }
            }
            Err(e) => problems.push(format!(
                "CONFIG.md line {line}: {name}: example does not load: {e}"
            )),
        }
    }
    for r in &file.rows {
        if !shown.contains(&r.path()) {
            problems.push(format!(
                "CONFIG.md line {}: {name}: `{}` appears in no example",
                r.line,
                r.path()
            ));
        }
    }
}

/// An example that gives a key's PEM text (`tls.ca_pem`) replaces the file
/// key (`tls.ca`) of the first example: the two exclude each other.
fn without_replaced(whole: &mut Table, example: &Table) {
    let mut keys = BTreeSet::new();
    keys_of(example, "", &mut keys);
    for k in keys {
        if let Some(file_key) = k.strip_suffix("_pem") {
            remove_path(whole, file_key);
        }
    }
}

fn remove_path(table: &mut Table, path: &str) {
    match path.split_once('.') {
        None => {
            table.remove(path);
        }
        Some((head, rest)) => {
            if let Some(Value::Table(t)) = table.get_mut(head) {
                remove_path(t, rest);
            }
        }
    }
}

/// Every key set in `table`, dotted, array elements without an index.
fn keys_of(table: &Table, prefix: &str, out: &mut BTreeSet<String>) {
    for (k, v) in table {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        out.insert(path.clone());
        match v {
            Value::Table(t) => keys_of(t, &path, out),
            Value::Array(items) => {
                for item in items {
                    if let Value::Table(t) = item {
                        keys_of(t, &path, out);
                    }
                }
            }
            _ => {}
        }
    }
}

fn report(what: &str, problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{what} and the code disagree:\n  {}",
        problems.join("\n  ")
    );
}

fn strings<E: ToString>(errors: Vec<E>) -> Vec<String> {
    errors.iter().map(ToString::to_string).collect()
}

/// CONFIG.md's table of the `section` file against the type `T` the
/// code loads it into; `what` names the pair in the failure.
fn config_md_agrees<T: DeserializeOwned + std::fmt::Debug>(
    section: &str,
    kind: Kind<T>,
    what: &str,
) {
    let files = config_doc();
    let mut problems = Vec::new();
    check_file(&kind, &files[section], &mut problems);
    report(what, problems);
}

#[test]
fn config_md_documents_every_key_of_server_toml() {
    config_md_agrees::<ServerConfig>(
        "server",
        Kind {
            name: "server.toml",
            validate: |c| strings(c.validate()),
        },
        "docs/CONFIG.md (server.toml)",
    );
}

#[test]
fn config_md_documents_every_key_of_policy_toml() {
    config_md_agrees::<Policy>(
        "policy",
        Kind {
            name: "policy.toml",
            validate: |p| {
                let tunnel = TunnelSection {
                    network6: Some("fd77::/64".parse().expect("network")),
                    ..TunnelSection::default()
                };
                strings(p.validate(Path::new("policy.toml"), &tunnel))
            },
        },
        "docs/CONFIG.md (policy.toml)",
    );
}

#[test]
fn config_md_documents_every_key_of_the_client_config() {
    config_md_agrees::<ClientConfig>(
        "client",
        Kind {
            name: "client config",
            validate: |c| strings(c.validate()),
        },
        "docs/CONFIG.md (client configuration)",
    );
}

/// The probe finds what it must, so that the checks above cannot pass by
/// finding nothing.
#[test]
fn the_probe_sees_sections_arrays_and_choices() {
    let server = accepted::<ServerConfig>();
    assert_eq!(
        server.get("tunnel"),
        Some(&Accepted::Table { array: false })
    );
    assert_eq!(server.get("limits.max_sessions"), Some(&Accepted::Leaf));
    assert_eq!(
        server.get("identity.source"),
        Some(&Accepted::Choice(
            ["cn", "san-email", "san-dns", "san-uri", "fingerprint"]
                .map(String::from)
                .to_vec()
        ))
    );
    let policy = accepted::<Policy>();
    assert_eq!(policy.get("group"), Some(&Accepted::Table { array: true }));
    assert_eq!(policy.get("client.address6"), Some(&Accepted::Leaf));
    let client = accepted::<ClientConfig>();
    assert_eq!(client.get("hooks.up"), Some(&Accepted::Leaf));
    assert!(client.len() > 20, "{client:?}");
}

// ---------------------------------------------------------------------------
// STATUS.md.

/// The `.path`s documented under each `##` heading of STATUS.md.
fn status_doc() -> BTreeMap<String, BTreeSet<String>> {
    let (_, text) = doc("STATUS.md");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut heading = String::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            heading = h.trim().to_owned();
        } else if line.starts_with('|') {
            if let Some(path) = code(&cells(line)[0]).filter(|p| p.starts_with('.')) {
                let fresh = out
                    .entry(heading.clone())
                    .or_default()
                    .insert(path.to_owned());
                assert!(fresh, "STATUS.md: {path} is documented twice");
            }
        }
    }
    out
}

/// Every path in `value`: `.a`, `.a.b`, `.list`, `.list[].x` (arrays of
/// objects are entered, arrays of scalars are one field).
fn json_paths(value: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let path = format!("{prefix}.{k}");
                out.insert(path.clone());
                json_paths(v, &path, out);
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                json_paths(item, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

/// What the program prints for `status`, as a JSON value.
fn json<T: serde::Serialize>(status: &T) -> serde_json::Value {
    serde_json::from_str(&twoway_common::control::json_line(status)).expect("status JSON")
}

fn compare(heading: &str, printed: &serde_json::Value) {
    let documented = status_doc().remove(heading).unwrap_or_default();
    assert!(
        !documented.is_empty(),
        "STATUS.md has no fields under `## {heading}`"
    );
    let mut paths = BTreeSet::new();
    json_paths(printed, "", &mut paths);
    let mut problems = Vec::new();
    for p in paths.difference(&documented) {
        problems.push(format!("`{p}` is printed but not documented"));
    }
    for p in documented.difference(&paths) {
        problems.push(format!("`{p}` is documented but not printed"));
    }
    report(&format!("docs/STATUS.md (`{heading}`)"), problems);
}

#[tokio::test]
async fn status_md_documents_every_field_of_server_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = twoway_tests::loopback::make_pki(dir.path(), "");
    let config = ServerConfig::load(&pki.join("server.toml")).expect("server.toml");
    let server = Arc::new(twoway_server::server::Server::new(config).expect("server"));
    let udp = twoway_server::udp::UdpEndpoint::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("udp socket");
    server.enable_udp(Arc::new(udp));
    let mut status = twoway_server::daemon::status(&server);
    // A session with every optional field present. The type ties it to
    // what `sessions` holds.
    let sessions: Vec<SessionStatus> = server.sessions();
    assert!(sessions.is_empty());
    let session = SessionStatus {
        id: 1,
        identity: "alice".into(),
        address: "198.18.77.128".into(),
        address6: Some("fd77::80".into()),
        remote: "198.51.100.7:51654".into(),
        since: "2026-11-26T21:37:59.902577779Z".into(),
        rx_bytes: 168,
        tx_bytes: 0,
        transport: Carrier::Udp,
        udp_remote: Some("198.51.100.7:40212".into()),
        node: Some("vpn-a".into()),
    };
    status.sessions = vec![session];
    compare("twoway-server status --json", &json(&status));
}

#[tokio::test]
async fn status_md_documents_every_field_of_client_status() {
    let status = twoway_client::status::Status::new("vpn.example.com:4433")
        .with_config(Path::new("/etc/twoway/alice.toml"));
    compare("twoway status --json", &json(&status.report()));
    // A tunnel that is not running: only its state, as documented.
    let dir = tempfile::tempdir().expect("tempdir");
    let down = twoway_client::cli::query(
        &dir.path().join("none.sock"),
        std::time::Duration::from_secs(1),
    )
    .await
    .expect("a missing socket is a stopped tunnel");
    assert_eq!(down, ClientStatus::down());
    let (_, text) = doc("STATUS.md");
    assert!(text.contains(&twoway_common::control::json_line(&down)));
}

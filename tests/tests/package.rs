//! The Debian package as an admin gets it: `scripts/package.sh --profile dev
//! --lintian` (debug binaries, so CI does not pay for a release build with
//! LTO; the layout and scripts are the same) builds it and lintian passes;
//! then its file list, control data and maintainer scripts are checked, and
//! the files are unpacked and used: the binaries run and are stripped, the
//! units start the installed binaries, every man page renders without a
//! warning, the bash completion completes, the example configs are the ones
//! `pki init` and `pki issue` write.
//!
//! Needs dpkg-dev, pandoc, lintian and man-db (.ci/run installs them) and the
//! config reference docs/CONFIG.md. Outside CI, a missing tool skips the
//! tests with a message; under CI they must run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use twoway_tests::{in_ci, workspace_root};

const TOOLS: [&str; 6] = [
    "dpkg-deb",
    "dpkg-shlibdeps",
    "pandoc",
    "lintian",
    "man",
    "readelf",
];

/// The package, built once per test process: its path and a folder it is
/// unpacked in (both under a temporary folder kept for the process).
struct Built {
    deb: PathBuf,
    root: PathBuf,
    _dir: tempfile::TempDir,
}

fn package(test: &str) -> Option<&'static Built> {
    let missing: Vec<&str> = TOOLS.iter().copied().filter(|t| !on_path(t)).collect();
    if !missing.is_empty() {
        if in_ci() {
            panic!("{test}: {missing:?} not found and CI=true says it must run (apt-get install dpkg-dev pandoc lintian man-db binutils)");
        }
        eprintln!("SKIPPED {test}: {missing:?} not found (apt-get install dpkg-dev pandoc lintian man-db binutils)");
        return None;
    }
    static BUILT: OnceLock<Built> = OnceLock::new();
    Some(BUILT.get_or_init(build))
}

fn build() -> Built {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let status = Command::new("bash")
        .arg(workspace_root().join("scripts/package.sh"))
        .args(["--profile", "dev", "--lintian", "--out"])
        .arg(&out)
        .status()
        .expect("run scripts/package.sh");
    assert!(status.success(), "scripts/package.sh failed: {status}");
    let debs: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "one package in {}: {debs:?}", out.display());
    let deb = debs[0].clone();
    let root = dir.path().join("root");
    run(
        "dpkg-deb",
        &["-x".as_ref(), deb.as_os_str(), root.as_os_str()],
    );
    run(
        "dpkg-deb",
        &[
            "-e".as_ref(),
            deb.as_os_str(),
            root.join("DEBIAN").as_os_str(),
        ],
    );
    Built {
        deb,
        root,
        _dir: dir,
    }
}

fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs a command that must succeed; its stdout.
fn run(program: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn sh(script: &str) -> (bool, String, String) {
    let out = Command::new("bash").args(["-c", script]).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `dpkg-deb -c`: path -> (mode, owner).
fn listing(deb: &Path) -> Vec<(String, String, String)> {
    run("dpkg-deb", &["-c".as_ref(), deb.as_os_str()])
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let path = f[5].trim_start_matches('.').to_string();
            (path, f[0].to_string(), f[1].to_string())
        })
        .collect()
}

#[test]
fn the_package_holds_binaries_units_pages_completions_and_docs() {
    let Some(p) = package("the_package_holds_binaries_units_pages_completions_and_docs") else {
        return;
    };
    let files = listing(&p.deb);
    let mode_of = |path: &str| {
        files
            .iter()
            .find(|(p, _, _)| p == path)
            .map(|(_, mode, owner)| (mode.as_str(), owner.as_str()))
            .unwrap_or_else(|| panic!("{path} is not in the package"))
    };
    for bin in ["/usr/bin/twoway", "/usr/bin/twoway-server"] {
        assert_eq!(mode_of(bin), ("-rwxr-xr-x", "root/root"), "{bin}");
    }
    for file in [
        "/lib/systemd/system/twoway-server.service",
        "/lib/systemd/system/twoway@.service",
        "/usr/share/man/man1/twoway.1.gz",
        "/usr/share/man/man1/twoway-up.1.gz",
        "/usr/share/man/man1/twoway-list.1.gz",
        "/usr/share/man/man1/twoway-server.1.gz",
        "/usr/share/man/man1/twoway-server-run.1.gz",
        "/usr/share/man/man1/twoway-server-pki-init.1.gz",
        "/usr/share/man/man5/twoway-config.5.gz",
        "/usr/share/bash-completion/completions/twoway",
        "/usr/share/bash-completion/completions/twoway-server",
        "/usr/share/zsh/vendor-completions/_twoway",
        "/usr/share/zsh/vendor-completions/_twoway-server",
        "/usr/share/fish/vendor_completions.d/twoway.fish",
        "/usr/share/fish/vendor_completions.d/twoway-server.fish",
        "/usr/share/doc/twoway/copyright",
        "/usr/share/doc/twoway/changelog.gz",
        "/usr/share/doc/twoway/changelog.Debian.gz",
        "/usr/share/doc/twoway/OPERATIONS.md",
        "/usr/share/doc/twoway/CONFIG.md",
        "/usr/share/doc/twoway/examples/server.toml",
        "/usr/share/doc/twoway/examples/policy.toml",
        "/usr/share/doc/twoway/examples/client.toml",
    ] {
        assert_eq!(mode_of(file), ("-rw-r--r--", "root/root"), "{file}");
    }
    // No help pages for clap's `help` subcommand, nothing under /usr/local,
    // and /etc/twoway is the admin's (made by postinst, never in the package).
    for (path, _, _) in &files {
        assert!(!path.contains("-help"), "{path}");
        assert!(!path.starts_with("/usr/local"), "{path}");
        assert!(!path.starts_with("/etc"), "{path}");
    }
}

#[test]
fn control_data_and_maintainer_scripts() {
    let Some(p) = package("control_data_and_maintainer_scripts") else {
        return;
    };
    let control = std::fs::read_to_string(p.root.join("DEBIAN/control")).unwrap();
    let field = |name: &str| {
        control
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in control:\n{control}"))
            .to_string()
    };
    assert_eq!(field("Package"), "twoway");
    assert!(field("Version").starts_with(env!("CARGO_PKG_VERSION")));
    let depends = field("Depends");
    for dep in ["libc6 (>=", "adduser", "iproute2", "procps"] {
        assert!(depends.contains(dep), "Depends: {depends}");
    }
    // Configs are the admin's: no conffiles to ask about on upgrade.
    assert!(!p.root.join("DEBIAN/conffiles").exists());
    for script in ["postinst", "prerm", "postrm"] {
        let path = p.root.join("DEBIAN").join(script);
        let (ok, _, err) = sh(&format!("sh -n {}", path.display()));
        assert!(ok, "{script}: {err}");
    }
    let postinst = std::fs::read_to_string(p.root.join("DEBIAN/postinst")).unwrap();
    assert!(postinst.contains("adduser --system --group"));
    assert!(postinst.contains("chown root:twoway /etc/twoway"));
    // Nothing enabled or started on a first install.
    assert!(!postinst.contains("enable"), "{postinst}");
    let postrm = std::fs::read_to_string(p.root.join("DEBIAN/postrm")).unwrap();
    assert!(postrm.contains("rm -rf /var/lib/twoway") && postrm.contains("rmdir /etc/twoway"));
    assert!(!postrm.contains("deluser"), "the user stays after a purge");
}

#[test]
fn the_unpacked_files_work() {
    let Some(p) = package("the_unpacked_files_work") else {
        return;
    };
    let bin = |name: &str| p.root.join("usr/bin").join(name);
    for name in ["twoway", "twoway-server"] {
        let version = run(bin(name).to_str().unwrap(), &["--version".as_ref()]);
        assert_eq!(
            version.trim(),
            format!("{name} {}", env!("CARGO_PKG_VERSION"))
        );
        let sections = run("readelf", &["-S".as_ref(), bin(name).as_os_str()]);
        assert!(
            !sections.contains(".symtab") && !sections.contains(".debug_info"),
            "{name} is not stripped"
        );
    }

    // The units start the binaries where the package puts them.
    for (unit, exec) in [
        (
            "twoway-server.service",
            "ExecStart=/usr/bin/twoway-server run --config /etc/twoway/server.toml",
        ),
        (
            "twoway@.service",
            "ExecStart=/usr/bin/twoway up --config /etc/twoway/%i.toml",
        ),
    ] {
        let text = std::fs::read_to_string(p.root.join("lib/systemd/system").join(unit)).unwrap();
        assert!(text.lines().any(|l| l == exec), "{unit}:\n{text}");
        assert!(!text.contains("/usr/local"), "{unit}");
    }

    // Every page renders, without a warning from groff, and says what it is.
    let man = p.root.join("usr/share/man");
    for section in ["man1", "man5"] {
        for page in std::fs::read_dir(man.join(section)).unwrap() {
            let page = page.unwrap().path();
            let (ok, text, err) = sh(&format!(
                "MANWIDTH=80 LC_ALL=C.UTF-8 man --warnings -l {} 2>&1 >/dev/null | grep . >&2; \
                 MANWIDTH=80 LC_ALL=C.UTF-8 man -l {} 2>/dev/null",
                page.display(),
                page.display()
            ));
            assert!(ok && err.is_empty(), "{}: {err}", page.display());
            assert!(text.contains("NAME"), "{}:\n{text}", page.display());
        }
    }
    let (_, config_page, _) = sh(&format!(
        "MANWIDTH=80 man -l {}",
        man.join("man5/twoway-config.5.gz").display()
    ));
    assert!(config_page.contains("twoway-config - configuration files"));
    let (_, up_page, _) = sh(&format!(
        "MANWIDTH=80 man -l {}",
        man.join("man1/twoway-up.1.gz").display()
    ));
    assert!(up_page.contains("--detach") && !up_page.contains("notify-ready"));

    // The bash completion offers the subcommands and a subcommand's options.
    let completion = p.root.join("usr/share/bash-completion/completions/twoway");
    let (ok, words, err) = sh(&format!(
        "source {}; COMP_WORDS=(twoway ''); COMP_CWORD=1; _twoway twoway '' twoway; \
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        completion.display()
    ));
    assert!(ok, "{err}");
    for word in ["up", "down", "status", "list"] {
        assert!(words.lines().any(|w| w == word), "{word} in {words}");
    }
    let (_, words, _) = sh(&format!(
        "source {}; COMP_WORDS=(twoway up --); COMP_CWORD=2; _twoway twoway -- up; \
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        completion.display()
    ));
    assert!(words.lines().any(|w| w == "--detach"), "{words}");
    let completion = p
        .root
        .join("usr/share/bash-completion/completions/twoway-server");
    let (_, words, _) = sh(&format!(
        "source {}; COMP_WORDS=(twoway-server pki ''); COMP_CWORD=2; \
         _twoway__server twoway-server '' pki; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        completion.display()
    ));
    assert!(words.lines().any(|w| w == "init"), "{words}");

    // The examples are what `pki init` and `pki issue` write.
    let examples = p.root.join("usr/share/doc/twoway/examples");
    let server = std::fs::read_to_string(examples.join("server.toml")).unwrap();
    assert!(server.contains("written by `twoway-server pki init`"));
    let client = std::fs::read_to_string(examples.join("client.toml")).unwrap();
    assert!(
        client.contains("server_name = \"vpn.example.com\""),
        "{client}"
    );
}

//! The Debian package (`packaging/build-deb`), built around the binary under test: its
//! metadata, files and maintainer scripts, and — unpacked into a temporary root next to
//! systemd's own units — a unit that `systemd-analyze verify` accepts with the binary where
//! the package puts it, and a shipped configuration that `gridwatch validate` accepts;
//! installed by `dpkg` into a temporary root, where its maintainer scripts create the user and
//! directories and enable the unit, and purged again.
//! Needs `dpkg-deb` (Debian's dpkg), `systemd-analyze`, `readelf` (binutils) and `fakeroot`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(output.status.success(), "{command:?} failed:\n{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the package from the binary under test into `out`; returns its path.
fn build(out: &Path) -> PathBuf {
    let printed =
        run(Command::new(repo().join("packaging/build-deb")).args(["--binary", env!("CARGO_BIN_EXE_gridwatch"), "--compress", "none", "--out"]).arg(out));
    let deb = PathBuf::from(printed.trim());
    assert!(deb.starts_with(out) && deb.exists(), "build-deb printed {printed:?}");
    deb
}

fn debian_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "armhf",
        other => panic!("no Debian architecture for {other}"),
    }
}

#[test]
fn the_package_holds_the_binary_unit_sysusers_tmpfiles_and_the_configuration_as_a_conffile() {
    let dir = tempfile::tempdir().unwrap();
    let deb = build(dir.path());
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(name, format!("gridwatch_{}_{}.deb", env!("CARGO_PKG_VERSION"), debian_arch()));

    let info = run(Command::new("dpkg-deb").arg("--info").arg(&deb));
    for line in ["Package: gridwatch", &format!("Version: {}", env!("CARGO_PKG_VERSION")), &format!("Architecture: {}", debian_arch())] {
        assert!(info.lines().any(|l| l.trim() == line), "{line} not in:\n{info}");
    }
    let depends = info.lines().find_map(|l| l.trim().strip_prefix("Depends: ")).unwrap_or_else(|| panic!("no Depends:\n{info}"));
    assert!(depends.starts_with("libc6 (>= 2.") && depends.ends_with(", systemd"), "{depends}");
    for script in ["postinst", "prerm", "postrm", "conffiles"] {
        assert!(
            info.lines().any(|l| l.split_whitespace().last() == Some(script) || l.contains(&format!(" {script} "))),
            "{script} not in the control archive:\n{info}"
        );
    }

    let contents = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    let entry = |path: &str| {
        contents.lines().find(|l| l.ends_with(&format!(" ./{path}"))).unwrap_or_else(|| panic!("{path} not in the package:\n{contents}")).to_string()
    };
    assert!(entry("usr/bin/gridwatch").starts_with("-rwxr-xr-x root/root"), "{}", entry("usr/bin/gridwatch"));
    for file in [
        "usr/lib/systemd/system/gridwatch.service",
        "usr/lib/sysusers.d/gridwatch.conf",
        "usr/lib/tmpfiles.d/gridwatch.conf",
        "etc/gridwatch/gridwatch.toml",
        "usr/share/doc/gridwatch/copyright",
        "usr/share/doc/gridwatch/README.md",
        "usr/share/doc/gridwatch/dashboards/gridwatch-telemetry.json",
        "usr/share/doc/gridwatch/dashboards/gridwatch-daemon.json",
        "usr/share/doc/gridwatch/prometheus/gridwatch.rules.yml",
    ] {
        assert!(entry(file).starts_with("-rw-r--r-- root/root"), "{}", entry(file));
    }
    assert!(!contents.contains("/usr/local/"), "a package installs under /usr:\n{contents}");

    // The control archive, unpacked: conffiles names the configuration, the scripts parse.
    let control = dir.path().join("control");
    run(Command::new("dpkg-deb").arg("--control").arg(&deb).arg(&control));
    assert_eq!(std::fs::read_to_string(control.join("conffiles")).unwrap(), "/etc/gridwatch/gridwatch.toml\n");
    for script in ["postinst", "prerm", "postrm"] {
        run(Command::new("sh").arg("-n").arg(control.join(script)));
    }
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    for step in ["systemd-sysusers", "systemd-tmpfiles", "deb-systemd-helper enable gridwatch.service", "deb-systemd-invoke \"$action\" gridwatch.service"] {
        assert!(postinst.contains(step), "postinst does not `{step}`:\n{postinst}");
    }
}

#[test]
fn the_unpacked_package_passes_systemd_analyze_verify_and_its_configuration_validates() {
    let dir = tempfile::tempdir().unwrap();
    let deb = build(dir.path());
    let root = dir.path().join("root");
    run(Command::new("dpkg-deb").arg("--extract").arg(&deb).arg(&root));

    // systemd's own targets, which the unit orders itself after and is wanted by.
    let units = root.join("usr/lib/systemd/system");
    let system = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .map(Path::new)
        .find(|d| d.join("multi-user.target").exists())
        .expect("systemd's units (Debian package systemd)");
    for entry in std::fs::read_dir(system).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "target") && path.is_file() {
            std::fs::copy(&path, units.join(path.file_name().unwrap())).unwrap();
        }
    }
    let unit = std::fs::read_to_string(units.join("gridwatch.service")).unwrap();
    assert!(unit.lines().any(|l| l == "ExecStart=/usr/bin/gridwatch run --config /etc/gridwatch/gridwatch.toml"), "{unit}");
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("gridwatch.service")
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && complaints.trim().is_empty(), "systemd-analyze verify --root: {complaints}");

    // The same check fails without the binary: verify looks inside the root.
    std::fs::remove_file(root.join("usr/bin/gridwatch")).unwrap();
    let without = Command::new("systemd-analyze").arg("verify").arg(format!("--root={}", root.display())).arg("gridwatch.service").output().unwrap();
    assert!(String::from_utf8_lossy(&without.stderr).contains("/usr/bin/gridwatch is not executable"), "{}", String::from_utf8_lossy(&without.stderr));

    let sysusers = std::fs::read_to_string(root.join("usr/lib/sysusers.d/gridwatch.conf")).unwrap();
    assert!(sysusers.lines().any(|l| l.starts_with("u gridwatch ")), "{sysusers}");
    let tmpfiles = std::fs::read_to_string(root.join("usr/lib/tmpfiles.d/gridwatch.conf")).unwrap();
    assert!(tmpfiles.lines().any(|l| l.starts_with("d /etc/gridwatch 0750 root gridwatch")), "{tmpfiles}");

    // The configuration a fresh install starts with is valid (validate opens nothing).
    let validate =
        Command::new(env!("CARGO_BIN_EXE_gridwatch")).args(["validate", "--config"]).arg(root.join("etc/gridwatch/gridwatch.toml")).output().unwrap();
    assert!(validate.status.success(), "{}{}", String::from_utf8_lossy(&validate.stdout), String::from_utf8_lossy(&validate.stderr));
}

/// `dpkg` on an empty root with `DPKG_ROOT` (maintainer scripts run without chroot and act on
/// that root: the same path Debian uses to bootstrap systems) under `fakeroot`, so no
/// privileges are needed.
fn dpkg(root: &Path, args: &[&str]) -> String {
    let mut command = Command::new("fakeroot");
    command.env("DPKG_ROOT", root).arg("dpkg").arg(format!("--root={}", root.display()));
    // The empty root has no libc6 or systemd packages to satisfy Depends.
    command.args(["--force-script-chrootless", "--force-depends", "--log=/dev/null"]).args(args);
    let output = command.output().unwrap_or_else(|e| panic!("fakeroot not found ({e}): install Debian's `fakeroot` package (.ci/run does)"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "dpkg {args:?}:\n{text}");
    text
}

#[test]
fn dpkg_installs_it_into_a_temporary_root_with_its_user_directories_and_enabled_unit_and_purges_it() {
    let dir = tempfile::tempdir().unwrap();
    let deb = build(dir.path());
    let root = dir.path().join("root");
    for sub in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    for file in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
        std::fs::write(root.join(file), "").unwrap();
    }
    let log = dpkg(&root, &["--install", deb.to_str().unwrap()]);
    assert!(log.contains("Setting up gridwatch"), "{log}");

    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
    assert!(passwd.lines().any(|l| l.starts_with("gridwatch:") && l.contains(":/var/lib/gridwatch:")), "postinst ran systemd-sysusers:\n{log}\n{passwd}");
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap_or_default();
    for name in ["dialout", "gpio"] {
        assert!(group.lines().any(|l| l.starts_with(&format!("{name}:")) && l.ends_with(":gridwatch")), "gridwatch in {name}:\n{group}");
    }
    assert!(root.join("etc/gridwatch/credentials").is_dir(), "postinst ran systemd-tmpfiles:\n{log}");
    let wants = root.join("etc/systemd/system/multi-user.target.wants/gridwatch.service");
    assert_eq!(std::fs::read_link(&wants).ok(), Some(PathBuf::from("/usr/lib/systemd/system/gridwatch.service")), "the unit is enabled:\n{log}");
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    assert!(status.contains("Package: gridwatch\nStatus: install ok installed"), "{status}");
    assert!(status.contains(" /etc/gridwatch/gridwatch.toml "), "registered as a conffile:\n{status}");

    // An operator's edit survives a reinstall (upgrade path), and purge takes everything away.
    let config = root.join("etc/gridwatch/gridwatch.toml");
    let edited = std::fs::read_to_string(&config).unwrap().replace("client_id = \"gridwatch-office-1\"", "client_id = \"gridwatch-east\"");
    std::fs::write(&config, &edited).unwrap();
    dpkg(&root, &["--force-confold", "--install", deb.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);
    dpkg(&root, &["--purge", "gridwatch"]);
    assert!(
        !wants.exists() && !root.join("usr/bin/gridwatch").exists() && !root.join("etc/gridwatch").exists(),
        "purged: {:?}",
        std::fs::read_dir(root.join("etc")).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
}

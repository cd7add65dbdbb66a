//! A throw-away PostgreSQL cluster (Debian package `postgresql`): `initdb` in a temporary
//! directory, `pg_ctl` on a free loopback port, trust authentication for the user `gridwatch`,
//! stopped (immediately) when the handle drops. PostgreSQL refuses to run as root: as root (CI),
//! the directory is given to the `postgres` user and both programs run as it through `runuser`.

use crate::free_port;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tempfile::TempDir;

#[derive(Debug)]
pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    dir: TempDir,
}

/// The directory holding `initdb` and `pg_ctl`: on PATH, else Debian's versioned directory.
fn bin_dir() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(dir) = std::env::split_paths(&path).find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file()) {
        return Ok(dir);
    }
    let mut versions: Vec<PathBuf> =
        std::fs::read_dir("/usr/lib/postgresql").map(|dirs| dirs.filter_map(|d| d.ok()).map(|d| d.path().join("bin")).collect()).unwrap_or_default();
    versions.sort();
    versions.into_iter().rev().find(|dir| dir.join("initdb").is_file()).context("`initdb` not found: install the Debian package `postgresql` (.ci/run does)")
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// Runs `program args` as the `postgres` user when we are root, else as ourselves.
fn run_as_owner(program: &Path, args: &[&str]) -> anyhow::Result<Output> {
    let output = if is_root() {
        Command::new("runuser").args(["-u", "postgres", "--"]).arg(program).args(args).output()
    } else {
        Command::new(program).args(args).output()
    }
    .with_context(|| format!("running {}", program.display()))?;
    if !output.status.success() {
        bail!("{} failed: {}{}", program.display(), String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    }
    Ok(output)
}

impl Postgres {
    pub async fn start() -> anyhow::Result<Postgres> {
        let bin = bin_dir()?;
        let dir = tempfile::tempdir()?;
        if is_root() {
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status()?;
            anyhow::ensure!(status.success(), "cannot give {} to the postgres user", dir.path().display());
        }
        let data = dir.path().join("data");
        let data_arg = data.display().to_string();
        run_as_owner(&bin.join("initdb"), &["-D", &data_arg, "-U", "gridwatch", "--auth=trust", "--no-locale", "-E", "UTF8"])?;
        let postgres = Postgres { port: free_port(), bin, data, dir };
        postgres.start_server()?;
        Ok(postgres)
    }

    fn start_server(&self) -> anyhow::Result<()> {
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.dir.path().display());
        let log = self.dir.path().join("postgres.log").display().to_string();
        run_as_owner(&self.bin.join("pg_ctl"), &["-D", &self.data.display().to_string(), "-l", &log, "-o", &options, "-w", "-t", "30", "start"])?;
        Ok(())
    }

    /// A libpq connection string for the `postgres` database.
    pub fn conninfo(&self) -> String {
        format!("host=127.0.0.1 port={} user=gridwatch dbname=postgres connect_timeout=5", self.port)
    }

    /// Stops the server at once (as a crash would), keeping its data.
    pub fn stop(&self) -> anyhow::Result<()> {
        run_as_owner(&self.bin.join("pg_ctl"), &["-D", &self.data.display().to_string(), "-m", "immediate", "stop"])?;
        Ok(())
    }

    /// Starts a stopped server again on its port and data.
    pub fn restart(&self) -> anyhow::Result<()> {
        self.start_server()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

//! An SD card for a box's state directory, the way the field has it: a loop-mounted ext4 image
//! (`errors=remount-ro`) that can stall (`fsfreeze`), fail (ext4 told it found an error, so the
//! kernel remounts it read-only under the running daemon) and be repaired the way a reboot does
//! it (`e2fsck`, mounted again).
//!
//! Loop mounts need root (CAP_SYS_ADMIN), as `.ci/run` on a fresh Debian machine has: without it
//! a test using this fails and says so — it is never skipped silently.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A loop-mounted ext4 image; unmounted when dropped.
pub struct SdCard {
    image: PathBuf,
    mount: PathBuf,
    device: String,
}

impl SdCard {
    /// A new 64 MiB card mounted at `dir/state`.
    pub fn mount(dir: &Path) -> SdCard {
        SdCard::mount_sized(dir, "64M")
    }

    /// A new card of `size` (`truncate`'s syntax; the image is sparse) mounted at `dir/state`.
    pub fn mount_sized(dir: &Path, size: &str) -> SdCard {
        let image = dir.join("sd.img");
        let mount = dir.join("state");
        std::fs::create_dir_all(&mount).unwrap();
        run("truncate", &["-s", size, image.to_str().unwrap()]);
        run("mkfs.ext4", &["-q", image.to_str().unwrap()]);
        let device = attach(&image, &mount);
        SdCard { image, mount, device }
    }

    /// What a card busy with its own garbage collection, or a hung controller, does: writes block
    /// without an error (`fsfreeze`) until the returned guard is dropped.
    pub fn stall(&self) -> Stalled<'_> {
        run("fsfreeze", &["-f", self.mount.to_str().unwrap()]);
        Stalled { card: self }
    }

    /// What ext4 does when it meets an error on a card mounted `errors=remount-ro`.
    pub fn fail(&self) {
        std::fs::write(format!("/sys/fs/ext4/{}/trigger_fs_error", self.device), "gridwatch test: the SD card failed\n").unwrap();
        let probe = std::fs::write(self.mount.join("probe"), b"x");
        assert!(probe.is_err(), "the card is still writable after the error");
    }

    /// What the box's next boot does with a card that failed: the filesystem is checked and
    /// mounted again, writable. Nothing may have the card open (the daemon is gone).
    pub fn repair(&mut self) {
        run("umount", &[self.mount.to_str().unwrap()]);
        // 1: errors corrected, 2: corrected and the system should be rebooted (it is one).
        let checked = Command::new("e2fsck").args(["-f", "-y"]).arg(&self.image).output().unwrap();
        assert!(matches!(checked.status.code(), Some(0..=2)), "e2fsck could not repair the card: {checked:?}");
        self.device = attach(&self.image, &self.mount);
        std::fs::write(self.mount.join("probe"), b"x").expect("the repaired card is writable");
    }
}

/// Mounts `image` at `mount`; the kernel's name of its loop device.
fn attach(image: &Path, mount: &Path) -> String {
    let mounted = Command::new("mount").args(["-o", "loop,errors=remount-ro"]).arg(image).arg(mount).status().unwrap();
    assert!(
        mounted.success(),
        "this test loop-mounts an ext4 image as the state directory and needs root (CAP_SYS_ADMIN) and loop devices; run it as root, as .ci/run does on a fresh Debian machine"
    );
    let source = Command::new("findmnt").args(["-n", "-o", "SOURCE"]).arg(mount).output().unwrap();
    String::from_utf8(source.stdout).unwrap().trim().trim_start_matches("/dev/").to_string()
}

/// A stalled card; writes go through again when this is dropped (before the daemon is waited
/// for: a process blocked on a frozen filesystem cannot die until it thaws).
pub struct Stalled<'a> {
    card: &'a SdCard,
}

impl Drop for Stalled<'_> {
    fn drop(&mut self) {
        let _ = Command::new("fsfreeze").arg("-u").arg(&self.card.mount).status();
    }
}

impl Drop for SdCard {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
    }
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status().unwrap_or_else(|e| panic!("cannot run {program} (apt-get install e2fsprogs util-linux): {e}"));
    assert!(status.success(), "{program} {args:?} failed");
}

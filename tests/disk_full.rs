//! Disk full: the data dir on a small tmpfs that the test fills up.
//!
//! While the disk is full a message gets `452 4.3.1` and nothing acknowledged is lost or
//! corrupted; when space returns, service resumes without a restart; after a restart the store
//! holds exactly the acknowledged messages. Needs root (mount); as any other user the test
//! says so and passes without running, since it cannot create a full disk.

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{make_message, strip_trace, Server};

struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Writes zeros until the filesystem refuses; returns the file written.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = f.write_all(&chunk) {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "filling: {e}");
            break;
        }
    }
    // Fill the last partial block too.
    while f.write_all(&[0u8; 512]).is_ok() {}
    while f.write_all(&[0u8]).is_ok() {}
    path
}

#[test]
fn disk_full_gives_452_and_service_resumes_when_space_returns() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("disk_full: not root, cannot mount a small tmpfs; not run");
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let mnt = base.path().join("mnt");
    let tmpfs = Tmpfs::mount(&mnt, "8m").expect("mount tmpfs as root");
    let data = mnt.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("users"), common::users_file()).unwrap();
    let mut server = Server::start(&format!(
        "[server]\ndata_dir = {:?}\n[store]\nblob_segment_bytes_max = 1048576\nmeta_segment_bytes_max = 1048576\n",
        data.to_str().unwrap()
    ));

    let first = make_message(
        "carol@remote.test",
        "alice@example.test",
        "first@df",
        "before the disk fills\r\n",
    );
    let mut c = server.connect();
    c.expect("EHLO client.test", 250);
    let r = c
        .send_mail("carol@remote.test", &["alice@example.test"], &first)
        .unwrap();
    assert_eq!(r.code, 250, "{r:?}");

    let filler = fill(&mnt);
    // Larger than what is left of the pages the segments already own (tmpfs: 4 KiB).
    let big_body = ("x".repeat(78) + "\r\n").repeat(100);
    let refused = make_message(
        "carol@remote.test",
        "alice@example.test",
        "refused@df",
        &big_body,
    );
    let r = c
        .send_mail("carol@remote.test", &["alice@example.test"], &refused)
        .unwrap();
    assert_eq!(r.code, 452, "expected 452 on a full disk, got {r:?}");
    assert!(r.lines[0].starts_with("452 4.3.1 "), "{r:?}");
    // The session is still usable, and still refuses while the disk is full.
    let r = c
        .send_mail("carol@remote.test", &["alice@example.test"], &refused)
        .unwrap();
    assert_eq!(r.code, 452, "{r:?}");

    std::fs::remove_file(&filler).unwrap();
    let after = make_message(
        "carol@remote.test",
        "alice@example.test",
        "after@df",
        "space is back\r\n",
    );
    let r = c
        .send_mail("carol@remote.test", &["alice@example.test"], &after)
        .unwrap();
    assert_eq!(r.code, 250, "service did not resume: {r:?}");
    c.quit();

    let check = |server: &Server| {
        let got = server.export("alice@example.test");
        assert_eq!(
            got.len(),
            2,
            "expected exactly the two acknowledged messages"
        );
        assert_eq!(strip_trace(&got[0]), first.as_slice());
        assert_eq!(strip_trace(&got[1]), after.as_slice());
    };
    check(&server);
    server.stop();
    server.restart();
    check(&server);
    server.stop();
    drop(server);
    drop(tmpfs);
}

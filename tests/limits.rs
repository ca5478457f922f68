//! Limits enforced by the real binary that need their own configuration: the RFC 5321
//! 4.5.3.2 timeouts and the locked-memory check at start-up.

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Server;

/// Reads lines until EOF; returns them. Bounded by the client's read timeout.
fn lines_until_close(c: &mut common::SmtpClient) -> Vec<String> {
    let mut lines = Vec::new();
    while let Ok(l) = c.read_raw_line() {
        if l.is_empty() {
            break;
        }
        lines.push(String::from_utf8_lossy(&l).trim_end().to_string());
    }
    lines
}

#[test]
fn idle_client_gets_421_after_the_command_timeout() {
    let server = Server::start("[smtp]\ntimeout_ms_command = 400\n");
    let mut c = server.connect();
    c.expect("EHLO client.test", 250);
    let started = Instant::now();
    let lines = lines_until_close(&mut c);
    let waited = started.elapsed();
    assert_eq!(
        lines,
        ["421 4.4.2 mx.example.test Error: timeout exceeded"],
        "after {waited:?}"
    );
    assert!(
        waited >= Duration::from_millis(350),
        "closed too early: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "closed too late: {waited:?}"
    );
}

#[test]
fn stalled_data_gets_421_after_the_data_timeout_and_nothing_is_stored() {
    let mut server = Server::start("[smtp]\ntimeout_ms_data = 400\ntimeout_ms_command = 60000\n");
    let mut c = server.connect();
    c.expect("EHLO client.test", 250);
    c.expect("MAIL FROM:<carol@remote.test>", 250);
    c.expect("RCPT TO:<alice@example.test>", 250);
    c.expect("DATA", 354);
    c.send(b"Subject: half a message\r\n\r\nand then silence")
        .unwrap();
    let lines = lines_until_close(&mut c);
    assert_eq!(lines, ["421 4.4.2 mx.example.test Error: timeout exceeded"]);
    assert!(server.export("alice@example.test").is_empty());
    server.stop();
}

#[test]
fn serve_refuses_too_little_locked_memory_and_names_the_fixes() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ringmail.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = {:?}\n[smtp]\nlisten = [\"127.0.0.1:0\"]\n",
            dir.path().join("data").to_str().unwrap()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(common::bin());
    cmd.args(["serve", "--config", config.to_str().unwrap()]);
    // SAFETY: setrlimit is async-signal-safe; it only lowers this child's limit.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 100_000,
                rlim_max: 100_000,
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let run = common::run(&mut cmd, b"");
    assert!(
        !run.status.success(),
        "started with 100 kB of locked memory"
    );
    for needle in [
        "locked memory too small",
        "hard limit is 100000 bytes",
        "LimitMEMLOCK",
        "CAP_IPC_LOCK",
        "io_memory_bytes",
    ] {
        assert!(
            run.stderr.contains(needle),
            "{needle:?} missing: {}",
            run.stderr
        );
    }
}

#[test]
fn a_core_that_cannot_start_stops_the_process_promptly_with_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Core 0's store directory is a regular file: that core cannot open its store.
    std::fs::create_dir_all(data.join("store")).unwrap();
    std::fs::write(data.join("store").join("core-00"), b"not a directory").unwrap();
    let config = dir.path().join("ringmail.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = {:?}\n[smtp]\nlisten = [\"127.0.0.1:0\"]\n",
            data.to_str().unwrap()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let run = common::ringmail(&["serve", "--config", config.to_str().unwrap()], b"");
    let took = started.elapsed();
    assert!(!run.status.success(), "serve succeeded with a broken core");
    assert!(
        run.stderr.contains("core 0 (cpu ") && run.stderr.contains("opening the store"),
        "{}",
        run.stderr
    );
    assert!(
        !String::from_utf8_lossy(&run.stdout).contains("\nready"),
        "printed ready although a core failed"
    );
    // Well inside the drain timeout (10 s): the other cores notice the stop flag at once.
    assert!(took < Duration::from_secs(5), "took {took:?} to give up");
}

/// A free port for a fixed `listen`, below the kernel's ephemeral range: a port the kernel
/// handed out here could be handed out again, to a port-0 listener of a test running
/// meanwhile, before this test's server binds it.
fn free_port() -> u16 {
    let ephemeral_first: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let low = 10_000u16.min(ephemeral_first / 2);
    // Start somewhere different in each process, so concurrent test binaries spread out.
    let span = u32::from(ephemeral_first - low);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let start = std::process::id().wrapping_mul(7919).wrapping_add(nanos) % span;
    (0..span)
        .map(|i| low + ((start + i) % span) as u16)
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .expect("no free port below the ephemeral range")
}

#[test]
fn restart_on_a_fixed_port_right_after_traffic() {
    // Regression: the server-side TIME_WAIT sockets of the last run inherit SO_REUSEPORT, and a
    // plain test bind was refused for a minute after any run that closed connections.
    let port = free_port();
    let mut server = Server::start(&format!("[smtp]\nlisten = [\"127.0.0.1:{port}\"]\n"));
    for i in 0..5 {
        // One connection per message: each leaves a TIME_WAIT socket behind.
        let m = common::make_message(
            "c@remote.test",
            "alice@example.test",
            &format!("r{i}@t"),
            "hi\r\n",
        );
        server.deliver("c@remote.test", "alice@example.test", &[m]);
    }
    server.stop();
    server.restart();
    assert_eq!(server.port(), port);
    assert_eq!(server.export("alice@example.test").len(), 5);
    server.stop();
}

#[test]
fn a_second_ringmail_on_the_same_port_is_refused() {
    let port = free_port();
    let server = Server::start(&format!("[smtp]\nlisten = [\"127.0.0.1:{port}\"]\n"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("other.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = {:?}\n[smtp]\nlisten = [\"127.0.0.1:{port}\"]\n",
            dir.path().join("data").to_str().unwrap()
        ),
    )
    .unwrap();
    let run = common::ringmail(&["serve", "--config", config.to_str().unwrap()], b"");
    assert!(
        !run.status.success(),
        "second ringmail started on a taken port"
    );
    assert!(
        run.stderr
            .contains(&format!("cannot listen on 127.0.0.1:{port}"))
            && run.stderr.contains("another ringmail"),
        "{}",
        run.stderr
    );
    drop(server);
}

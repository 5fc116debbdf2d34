//! The harness the black-box tests of the `nodelink` binary share: spawning the binary with
//! a clean environment, gathering a child's output on threads, a guard that kills its child
//! on drop, waiting (bounded) for a long-running child's first stdout line, and running a
//! command to completion within a limit.
//!
//! Each test target compiles this module on its own and uses only part of it, hence the
//! `dead_code` allowances: an item unused by one target is used by another.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The `nodelink` binary, with the variables that would change its output removed.
pub fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodelink"));
    cmd.env_remove("RUST_LOG").env_remove("RUST_BACKTRACE");
    cmd
}

/// Collects a child's output stream on a thread, which ends at end of file.
pub fn collect(mut r: impl Read + Send + 'static) -> (Arc<Mutex<String>>, thread::JoinHandle<()>) {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    let reader = thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    (text, reader)
}

/// A running child that is killed on drop, with the stderr it has written so far.
pub struct Guard {
    child: Child,
    stderr: Arc<Mutex<String>>,
    /// Stdout lines after the first, for a child started by [`Guard::start`]; holding the
    /// receiver keeps the reading thread (and so the child's stdout pipe) alive.
    _rest: Option<mpsc::Receiver<String>>,
}

impl Guard {
    /// Starts `cmd` with piped output and waits, at most `limit`, for its first stdout
    /// line, which must begin with `prefix`. Returns the guard and the rest of that line.
    pub fn start(mut cmd: Command, prefix: &str, limit: Duration) -> (Guard, String) {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let (stderr, _) = collect(child.stderr.take().unwrap());
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut guard = Guard {
            child,
            stderr,
            _rest: None,
        };
        let first = match rx.recv_timeout(limit) {
            Ok(line) => line,
            Err(e) => panic!(
                "no first line from {cmd:?} ({e}); stderr: {}",
                guard.stderr()
            ),
        };
        guard._rest = Some(rx);
        let rest = first.strip_prefix(prefix).unwrap_or_else(|| {
            panic!(
                "unexpected first line {first:?}; stderr: {}",
                guard.stderr()
            )
        });
        (guard, rest.to_string())
    }

    /// The child's next stdout line after the first, waiting at most `limit`.
    pub fn next_line(&self, limit: Duration) -> String {
        let rest = self._rest.as_ref().expect("started with Guard::start");
        rest.recv_timeout(limit)
            .unwrap_or_else(|e| panic!("no further stdout line ({e}); stderr: {}", self.stderr()))
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (as `kill` spells it, e.g. `-TERM`) to the child.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Waits for the child to exit, at most `limit`.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "child did not exit within {limit:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// What the child has written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits, at most `limit`, until the child's stderr contains `needle`; returns all of
    /// it. Polls: the stderr pipe is drained by a thread that signals nothing.
    pub fn wait_stderr(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let text = self.stderr();
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} not in stderr within {limit:?}: {text}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The outcome of a command run to completion.
pub struct Run {
    /// How the command ended.
    pub status: ExitStatus,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

impl Run {
    /// The whole outcome, for an assertion's message.
    pub fn describe(&self) -> String {
        format!(
            "status {:?}\n--- stdout\n{}--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` to completion, at most `limit`; a command still running then is killed and
/// the test fails.
pub fn run(mut cmd: Command, limit: Duration) -> Run {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let (stdout, out_reader) = collect(child.stdout.take().unwrap());
    let (stderr, err_reader) = collect(child.stderr.take().unwrap());
    let mut guard = Guard {
        child,
        stderr: stderr.clone(),
        _rest: None,
    };
    let status = guard.wait(limit);
    // The pipes close with the process: the readers reach end of file.
    let _ = out_reader.join();
    let _ = err_reader.join();
    let stdout = stdout.lock().unwrap().clone();
    let stderr = stderr.lock().unwrap().clone();
    Run {
        status,
        stdout,
        stderr,
    }
}

/// Runs `nodelink <args>` to completion, at most `limit`.
pub fn run_nodelink(args: &[&str], limit: Duration) -> Run {
    let mut cmd = bin();
    cmd.args(args);
    run(cmd, limit)
}

/// Checks the one-line error format (`nodelink: error: ...`, no panic) and exit code 1.
pub fn assert_one_line_error(r: &Run) {
    assert_eq!(r.status.code(), Some(1), "{}", r.describe());
    assert!(
        r.stderr.starts_with("nodelink: error: "),
        "{}",
        r.describe()
    );
    assert_eq!(r.stderr.trim_end().lines().count(), 1, "{}", r.describe());
    assert!(!r.stderr.contains("panicked"), "{}", r.describe());
}

//! A log sink for tests that check what an operator sees: install it on the current
//! thread (a test on a current-thread runtime captures its tasks' lines too), then look
//! for lines by level and words.
//!
//! ```
//! let log = nodelink_testkit::Captured::default();
//! let _guard = log.install();
//! tracing::warn!(peer = "127.0.0.1:9", "a bad datagram");
//! log.expect_one("WARN", &["bad datagram", "127.0.0.1:9"]);
//! ```

use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;

/// A log sink shared with the test (clones write to the same buffer).
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Captured {
    /// Installs this sink for the current thread at INFO level.
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(self.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    /// Every line written so far.
    pub fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The lines at `level` containing every one of `words`.
    pub fn find(&self, level: &str, words: &[&str]) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| l.contains(level) && words.iter().all(|w| l.contains(w)))
            .collect()
    }

    /// Asserts exactly one such line; with the whole log on failure.
    pub fn expect_one(&self, level: &str, words: &[&str]) {
        let found = self.find(level, words);
        assert_eq!(
            found.len(),
            1,
            "expected one {level} line with {words:?}; log:\n{}",
            self.lines().join("\n")
        );
    }
}

//! Bounded waits for tests: a test that hangs fails with a message saying what it was
//! waiting for, instead of running until CI kills it.

use std::future::Future;
use std::time::Duration;

/// Awaits `f`, panicking with `what` if it takes longer than `limit`.
///
/// Each test suite picks its own default limit (generous: CI machines are loaded) and
/// usually wraps this as `within(what, fut)`.
pub async fn within_for<F: Future>(limit: Duration, what: &str, f: F) -> F::Output {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not done within {limit:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn returns_the_value_in_time_and_panics_late() {
        assert_eq!(
            within_for(Duration::from_secs(1), "now", async { 7 }).await,
            7
        );
        let late = tokio::spawn(within_for(
            Duration::from_secs(1),
            "never",
            std::future::pending::<()>(),
        ));
        let err = late.await.unwrap_err();
        assert!(err.is_panic());
    }
}

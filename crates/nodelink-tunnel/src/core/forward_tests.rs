//! Property tests of a forwarded connection's core: random sources (data, then an end of
//! stream or an error), destinations that take writes in random pieces, wait at random
//! and may fail, under both closing rules. Checked for every seed
//! (`TUNNEL_FORWARD_SEED=n` runs one):
//! - each destination gets a prefix of its source's bytes, in order, and all of them when
//!   nothing failed on that direction before its end;
//! - an end of stream is passed on (a shutdown of the destination) after the data before
//!   it;
//! - with `Closing::Full` the first end stops the other direction's reading; with
//!   `Closing::Half` each direction runs to its own end; an error stops both;
//! - the connection always finishes, and its outcome is the bytes copied or the first
//!   error.

use std::io;

use nodelink_testkit::SeededRng;

use super::forward::{Closing, Direction, Pipe, Settle, Want};

#[derive(Clone, Copy, Debug, PartialEq)]
enum SourceEnd {
    Eof,
    Error,
}

/// A socket as the pipe sees it.
struct Side {
    input: Vec<u8>,
    read: usize,
    end: SourceEnd,
    output: Vec<u8>,
    /// Writes fail once this much was written.
    fail_writes_at: Option<usize>,
    shut: bool,
    /// Reads done after the pipe stopped this side's direction.
    reads_after_stop: usize,
    /// Errors this side gave the pipe (a failed read or write).
    errors: usize,
}

impl Side {
    fn new(rng: &mut SeededRng) -> Side {
        let len = rng.below(100_000) as usize;
        let input = rng.bytes(len);
        let end = if rng.chance(200) {
            SourceEnd::Error
        } else {
            SourceEnd::Eof
        };
        let fail_writes_at = rng.chance(150).then(|| rng.below(100_000) as usize);
        Side {
            input,
            read: 0,
            end,
            output: Vec::new(),
            fail_writes_at,
            shut: false,
            reads_after_stop: 0,
            errors: 0,
        }
    }
}

/// One direction's I/O from `src` to `dst` until something would wait.
fn drive(dir: &mut Direction, src: &mut Side, dst: &mut Side, stopped: bool, rng: &mut SeededRng) {
    for _ in 0..1000 {
        if rng.chance(250) {
            return; // the operation would wait
        }
        match dir.want() {
            Want::Done => return,
            Want::Write => {
                assert!(!dst.shut, "a write after the shutdown");
                let pending = dir.unwritten();
                if dst.fail_writes_at.is_some_and(|at| dst.output.len() >= at) {
                    dst.errors += 1;
                    dir.fail(io::Error::other("write failed"));
                    continue;
                }
                let n = 1 + rng.below(pending.len() as u64) as usize;
                dst.output.extend_from_slice(&pending[..n]);
                dir.wrote(n);
            }
            Want::Shutdown => {
                dst.shut = true;
                dir.shut(Ok(()));
            }
            Want::Read => {
                if stopped {
                    src.reads_after_stop += 1;
                }
                let left = src.input.len() - src.read;
                if left == 0 {
                    match src.end {
                        SourceEnd::Eof => dir.read(0),
                        SourceEnd::Error => {
                            src.errors += 1;
                            dir.fail(io::Error::other("read failed"))
                        }
                    }
                    continue;
                }
                let space = dir.read_space();
                let n = (1 + rng.below(space.len() as u64) as usize).min(left);
                space[..n].copy_from_slice(&src.input[src.read..src.read + n]);
                src.read += n;
                dir.read(n);
                if dir.needs_flush() && rng.chance(500) {
                    dir.flushed();
                }
            }
        }
    }
}

fn run(seed: u64) -> Result<(), String> {
    let mut rng = SeededRng::new(seed);
    let closing = if rng.chance(500) {
        Closing::Full
    } else {
        Closing::Half
    };
    let mut a = Side::new(&mut rng);
    let mut b = Side::new(&mut rng);
    let mut pipe = Pipe::new(closing, 1 + rng.below(40_000) as usize);
    let mut stopped = false;
    let mut rounds = 0;
    loop {
        rounds += 1;
        if rounds > 1_000_000 {
            return Err(format!("seed {seed}: never finished"));
        }
        drive(&mut pipe.there, &mut a, &mut b, stopped, &mut rng);
        drive(&mut pipe.back, &mut b, &mut a, stopped, &mut rng);
        let one_done = pipe.there.is_done() != pipe.back.is_done();
        match pipe.settle() {
            Settle::Finished => break,
            Settle::Running if closing == Closing::Full && one_done => {
                return Err(format!("seed {seed}: v1 went on after one direction ended"));
            }
            Settle::Running => {}
            Settle::Stopped | Settle::Grace => stopped = true,
        }
    }
    let problem = |what: String| Err(format!("seed {seed} ({closing:?}): {what}"));
    // What each destination got is a prefix of its source.
    for (name, src, dst) in [("a to b", &a, &b), ("b to a", &b, &a)] {
        if !src.input.starts_with(&dst.output) {
            return problem(format!("{name}: bytes corrupted or reordered"));
        }
        if !dst.shut && dst.errors == 0 {
            return problem(format!("{name}: the destination was never shut down"));
        }
    }
    let nothing_failed = a.errors + b.errors == 0;
    if nothing_failed {
        match closing {
            Closing::Half => {
                if a.input != b.output || b.input != a.output {
                    return problem("a half close lost data".into());
                }
            }
            Closing::Full => {
                // The first direction to end delivered everything; the other may have
                // been stopped.
                if a.input != b.output && b.input != a.output {
                    return problem("neither direction delivered everything".into());
                }
            }
        }
        match pipe.outcome() {
            Ok((there, back))
                if there == b.output.len() as u64 && back == a.output.len() as u64 => {}
            other => return problem(format!("outcome {other:?}")),
        }
    } else if pipe.outcome().is_ok() {
        return problem("an error was not reported".into());
    }
    if closing == Closing::Full || !nothing_failed {
        // Once stopped, a direction reads no more. (The count includes at most the read
        // that was already decided in the round that stopped it.)
        if a.reads_after_stop + b.reads_after_stop > 2 {
            return problem(format!(
                "{} reads after the connection was ending",
                a.reads_after_stop + b.reads_after_stop
            ));
        }
    }
    Ok(())
}

#[test]
fn forwarded_connections_end_by_their_rule() {
    if let Ok(seed) = std::env::var("TUNNEL_FORWARD_SEED") {
        run(seed.parse().expect("a number")).unwrap();
        return;
    }
    let failures: Vec<String> = (0..400).filter_map(|s| run(s).err()).collect();
    assert!(
        failures.is_empty(),
        "{} seeds failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
}

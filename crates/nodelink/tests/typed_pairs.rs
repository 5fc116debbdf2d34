//! Typed request/answer pairs are checked by the compiler: asking for the wrong answer type
//! does not compile, nor does a pair that breaks NEO's answer-bit rule (checked where a
//! `serde_message!` pair is declared, or where `call`/`Handlers::on` use a hand-written
//! `Ask`). The programs are in `tests/ui/`, with the compiler's expected messages.
//!
//! The `pass` case makes trybuild build (not only check) the programs, so the answer-bit
//! rule of a hand-written pair, a constant evaluated when `call` is instantiated, is seen.
//! After a compiler upgrade or a change to the checks, refresh the expected messages with
//! `TRYBUILD=overwrite cargo test -p nodelink --test typed_pairs` and review the diff.
#![cfg(feature = "serde")]

#[test]
fn typed_pairs_are_checked_at_compile_time() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/typed_call.rs");
    cases.compile_fail("tests/ui/fail_*.rs");
}

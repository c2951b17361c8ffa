//! The five example systems (`examples/`), each started with the one command its README gives
//! and driven in headless Chromium against this build of Herald, through `npm test` in the
//! examples workspace (see `common::npm_test`).

mod common;

#[test]
fn every_example_runs_and_works_in_a_browser() {
    common::npm_test("examples", env!("CARGO_BIN_EXE_herald"));
}

//! The browser SDK (`sdk/js`) tested against this build of Herald: its unit tests and its
//! end-to-end tests in headless Chromium and Node, run through `npm test`, so the one test
//! command runs them too (see `common::npm_test`).

mod common;

#[test]
fn the_sdk_passes_its_unit_and_browser_tests_against_this_build() {
    common::npm_test("sdk/js", env!("CARGO_BIN_EXE_herald"));
}

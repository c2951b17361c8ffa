//! The browser SDK (`sdk/js`) tested against this build of Herald: its unit tests and its
//! end-to-end tests in headless Chromium, run with Node through `npm test`, so the one test
//! command runs them too. Needs Node.js 20+ with npm (without it the test is skipped, unless
//! `HERALD_TEST_REQUIRE_BACKENDS=1`); the first run installs the workspace's packages with
//! `npm ci` from the committed lockfile.

mod common;

use common::require_backends;
use std::path::Path;
use std::process::Command;

#[test]
fn the_sdk_passes_its_unit_and_browser_tests_against_this_build() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if Command::new("npm").arg("--version").output().is_err() {
        let why = "npm is missing (Node.js 20 or later builds and tests the SDK)";
        assert!(
            !require_backends(),
            "{why} (HERALD_TEST_REQUIRE_BACKENDS=1)"
        );
        eprintln!("skipped: {why}");
        return;
    }
    if !root.join("node_modules/playwright-core").is_dir() {
        // First run on this checkout: install the workspace's packages from the lockfile.
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&root)
            .status()
            .expect("run npm ci");
        assert!(status.success(), "npm ci failed: {status}");
    }
    let status = Command::new("npm")
        .args(["test", "--workspace", "sdk/js"])
        .current_dir(&root)
        .env("HERALD_BIN", env!("CARGO_BIN_EXE_herald"))
        .status()
        .expect("run npm test");
    assert!(status.success(), "npm test in sdk/js failed: {status}");
}

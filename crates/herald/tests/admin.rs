//! The admin page (`admin/`, served at `/admin`) tested in headless Chromium against this
//! build of Herald, through `npm test` (see `common::npm_test`).

mod common;

#[test]
fn the_admin_page_passes_its_browser_tests_against_this_build() {
    common::npm_test("admin", env!("CARGO_BIN_EXE_herald"));
}

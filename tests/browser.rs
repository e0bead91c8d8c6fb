//! The admin console in a real browser: Debian's Chromium, driven by Playwright from Node
//! (`tests/web/console.test.mjs`), against the real server started here. Run by
//! `make test-browser`, which installs Chromium and the Node packages when they are missing.
//! Screenshots of each page go to `target/console-screenshots/`.

// The harness shared with the other tests: this file uses part of it.
#[allow(dead_code, unused_imports)]
#[path = "support/mod.rs"]
mod helpers;

use std::path::PathBuf;

use user_service::domain::Role;
use user_service::pb::{self, CreateUserRequest};

use helpers::{TestApp, create_request, new_user, run_node_tests};

/// Creates a user with `role` who can sign in with `password`.
async fn account(app: &TestApp, username: &str, role: pb::UserRole, password: &str) {
    let request = CreateUserRequest {
        role: role as i32,
        password: password.to_owned(),
        ..new_user(username)
    };
    create_request(&mut app.client().await, request).await;
}

#[tokio::test]
#[ignore = "needs Chromium: run make test-browser"]
async fn the_console_works_in_chromium() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "no browser at {chromium}: make test-browser installs Debian's chromium"
    );
    let app = TestApp::spawn().await;
    let password = "correct horse battery staple";
    account(&app, "console_admin", pb::UserRole::Admin, password).await;
    account(&app, "console_moderator", pb::UserRole::Moderator, password).await;
    let screenshots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();

    let env = [
        ("USER_SERVICE_URL", format!("http://{}", app.addr)),
        ("USER_SERVICE_ADMIN_USERNAME", "console_admin".into()),
        ("USER_SERVICE_ADMIN_PASSWORD", password.into()),
        (
            "USER_SERVICE_MODERATOR_USERNAME",
            "console_moderator".into(),
        ),
        ("USER_SERVICE_MODERATOR_PASSWORD", password.into()),
        (
            "USER_SERVICE_ADMIN_TOKEN",
            app.token("another-client", Role::Admin),
        ),
        ("SCREENSHOT_DIR", screenshots.display().to_string()),
        ("CHROMIUM", chromium),
    ];

    run_node_tests(
        "console.test.mjs",
        env.map(|(k, v)| (k.to_owned(), v)).into(),
        16,
    )
    .await;
    println!("screenshots of each page: {}", screenshots.display());
}

//! The real `userctl` binary, run as a subprocess against a real server.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use user_service::domain::Role;

use crate::helpers::{TEST_SECRET, TestApp};

pub fn userctl(app: &TestApp, token: Option<&str>, args: &[&str]) -> Output {
    userctl_in(app, "/nonexistent/userctl-tests".as_ref(), token, args)
}

/// userctl with `config` as its config directory, where `login` stores its tokens.
fn userctl_in(
    app: &TestApp,
    config: &std::path::Path,
    token: Option<&str>,
    args: &[&str],
) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_userctl"));
    command
        .args(["--addr", &format!("http://{}", app.addr)])
        .args(args)
        .env_remove("USERCTL_ADDR")
        .env_remove("USERCTL_TOKEN")
        .env_remove("USERCTL_PASSWORD")
        .env_remove("USERCTL_CODE")
        .env("USERCTL_CONFIG_DIR", config)
        .stdin(Stdio::null());
    if let Some(token) = token {
        command.env("USERCTL_TOKEN", token);
    }
    command.output().expect("userctl runs")
}

fn admin(app: &TestApp) -> String {
    app.token("cli-admin", Role::Admin)
}

/// Runs a command that must succeed and parses its one line of JSON.
fn json(app: &TestApp, args: &[&str]) -> Value {
    let output = userctl(app, Some(&admin(app)), &[args, &["-o", "json"]].concat());
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the output is one JSON value")
}

fn lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect()
}

fn create(app: &TestApp, name: &str) -> Value {
    json(
        app,
        &[
            "create",
            "--username",
            name,
            "--email",
            &format!("{name}@example.com"),
            "--password",
            "password123",
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn create_get_update_delete_round_trip_through_json() {
    let app = TestApp::spawn().await;
    let created = json(
        &app,
        &[
            "create",
            "--username",
            "cli_ann",
            "--email",
            "ann@example.com",
            "--full-name",
            "Ann",
            "--password",
            "password123",
            "--role",
            "moderator",
            "--meta",
            "team=core",
        ],
    );
    assert_eq!(created["role"], "USER_ROLE_MODERATOR");
    assert_eq!(created["metadata"]["team"], "core");
    let id = created["id"].as_str().unwrap();

    let fetched = json(&app, &["get", id]);
    assert_eq!(fetched, created, "get shows what create made");

    let updated = json(
        &app,
        &[
            "update",
            id,
            "--full-name",
            "Ann L",
            "--remove-meta",
            "team",
            "--etag",
            created["etag"].as_str().unwrap(),
        ],
    );
    assert_eq!(updated["fullName"], "Ann L");
    assert_eq!(
        updated["email"], "ann@example.com",
        "unset flags leave fields alone"
    );
    assert!(updated.get("metadata").is_none(), "the key was removed");
    assert!(
        updated["updatedAt"].as_str().unwrap().ends_with('Z'),
        "RFC 3339 in UTC"
    );

    let stale = userctl(
        &app,
        Some(&admin(&app)),
        &[
            "update",
            id,
            "--full-name",
            "X",
            "--etag",
            created["etag"].as_str().unwrap(),
        ],
    );
    assert_eq!(
        stale.status.code(),
        Some(1),
        "a stale etag is an 'other' failure"
    );
    assert!(String::from_utf8_lossy(&stale.stderr).contains("ABORTED"));

    let deleted = json(&app, &["delete", id]);
    assert_eq!(deleted["success"], true);
    let gone = userctl(&app, Some(&admin(&app)), &["get", id]);
    assert_eq!(
        gone.status.code(),
        Some(3),
        "not found has its own exit code"
    );
    assert!(String::from_utf8_lossy(&gone.stderr).contains("NOT_FOUND"));
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_tell_usage_permission_and_unavailable_apart() {
    let app = TestApp::spawn().await;
    let usage = userctl(&app, None, &["create", "--no-such-flag"]);
    assert_eq!(usage.status.code(), Some(2));
    let permission = userctl(&app, None, &["list"]);
    assert_eq!(
        permission.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&permission.stderr)
    );
    assert!(String::from_utf8_lossy(&permission.stderr).contains("UNAUTHENTICATED"));

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = listener.local_addr().unwrap();
    drop(listener);
    let unavailable = Command::new(env!("CARGO_BIN_EXE_userctl"))
        .args([
            "--addr",
            &format!("http://{closed}"),
            "--timeout",
            "2s",
            "health",
        ])
        .env("USERCTL_CONFIG_DIR", "/nonexistent/userctl-tests")
        .output()
        .unwrap();
    assert_eq!(
        unavailable.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&unavailable.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn list_all_follows_page_tokens_and_prints_one_user_per_line() {
    let app = TestApp::spawn().await;
    for name in ["l1", "l2", "l3", "l4", "l5"] {
        create(&app, &format!("list_{name}"));
    }
    let output = userctl(
        &app,
        Some(&admin(&app)),
        &["list", "--all", "--page-size", "2", "-o", "json"],
    );
    assert!(output.status.success());
    let names: Vec<_> = lines(&output)
        .iter()
        .map(|user| user["username"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        ["list_l5", "list_l4", "list_l3", "list_l2", "list_l1"]
    );

    let page = json(&app, &["list", "--page-size", "2"]);
    assert_eq!(page["totalCount"], 5);
    assert!(page["nextPageToken"].is_string());

    let table = userctl(&app, Some(&admin(&app)), &["list"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("ID"), "a table with a header: {text}");
    assert_eq!(text.lines().count(), 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn import_creates_good_rows_and_lists_bad_ones_with_line_numbers() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("users.jsonl");
    std::fs::write(
        &jsonl,
        [
            r#"{"username":"imp_a","email":"a@example.com","full_name":"A","password":"password123"}"#,
            r#"{"username":"imp_b","email":"not-an-email","password":"password123"}"#,
            "",
            r#"{"username":"imp_c","email":"c@example.com","password":"password123","role":"admin","metadata":{"team":"x"}}"#,
            "this is not json",
        ]
        .join("\n"),
    )
    .unwrap();
    let output = userctl(
        &app,
        Some(&admin(&app)),
        &[
            "import",
            jsonl.to_str().unwrap(),
            "-o",
            "json",
            "--batch-size",
            "2",
        ],
    );
    assert_eq!(
        output.status.code(),
        Some(1),
        "rejected rows make the exit code non-zero"
    );
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        (
            summary["rowsRead"].as_u64(),
            summary["created"].as_u64(),
            summary["rejected"].as_u64()
        ),
        (Some(4), Some(2), Some(2))
    );
    let rejects = std::fs::read_to_string(dir.path().join("users.jsonl.rejects")).unwrap();
    let rejects: Vec<_> = rejects.lines().collect();
    assert_eq!(rejects.len(), 2, "{rejects:?}");
    assert!(rejects[0].starts_with("line 2: email:"), "{}", rejects[0]);
    assert!(
        rejects[1].starts_with("line 5: not valid JSON"),
        "{}",
        rejects[1]
    );

    let csv = dir.path().join("more.csv");
    std::fs::write(
        &csv,
        "username,email,full_name,password,role,meta.team\n\
         imp_d,d@example.com,D,password123,user,core\n\
         imp_e,e@example.com,E,short,user,\n",
    )
    .unwrap();
    let rejects_file = dir.path().join("csv-rejects.txt");
    let output = userctl(
        &app,
        Some(&admin(&app)),
        &[
            "import",
            csv.to_str().unwrap(),
            "--rejects",
            rejects_file.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("imported 1 user from 2 rows"));
    let rejects = std::fs::read_to_string(rejects_file).unwrap();
    assert!(rejects.starts_with("line 3: password:"), "{rejects}");

    let imported = json(&app, &["list", "--page-size", "10"]);
    assert_eq!(imported["totalCount"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_prints_one_result_per_input_line_in_order() {
    let app = TestApp::spawn().await;
    let user = create(&app, "syncee");
    let id = user["id"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("updates.jsonl");
    std::fs::write(
        &file,
        [
            format!(r#"{{"user_id":"{id}","full_name":"First"}}"#),
            "{broken".to_owned(),
            format!(r#"{{"user_id":"{id}","email":"nope"}}"#),
            format!(r#"{{"user_id":"{id}","status":"suspended"}}"#),
        ]
        .join("\n"),
    )
    .unwrap();
    let output = userctl(
        &app,
        Some(&admin(&app)),
        &["sync", file.to_str().unwrap(), "-o", "json"],
    );
    assert_eq!(output.status.code(), Some(1), "two lines failed");
    let results = lines(&output);
    // Each line is a UserEvent as the schema defines it; failures carry the code's number.
    let summary: Vec<_> = results
        .iter()
        .map(|event| match event.get("failure") {
            Some(failure) => failure["code"].clone(),
            None => event["type"].clone(),
        })
        .collect();
    assert_eq!(
        summary,
        [
            Value::from("EVENT_TYPE_UPDATED"),
            Value::from(tonic::Code::InvalidArgument as i32),
            Value::from(tonic::Code::InvalidArgument as i32),
            Value::from("EVENT_TYPE_UPDATED"),
        ]
    );
    assert!(
        results[1]["failure"]["message"]
            .as_str()
            .unwrap()
            .starts_with("not valid JSON"),
        "{}",
        results[1]
    );
    assert_eq!(results[3]["user"]["status"], "USER_STATUS_SUSPENDED");
}

#[tokio::test(flavor = "multi_thread")]
async fn login_stores_a_private_token_that_later_calls_use() {
    let app = TestApp::spawn().await;
    let user = create(&app, "logger");
    let config = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| userctl_in(&app, config.path(), None, args);
    let login = run(&["login", "--username", "logger", "--password", "password123"]);
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );
    let token_file = config.path().join("token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the token file is private");
    }
    let me = run(&["get", user["id"].as_str().unwrap(), "-o", "json"]);
    assert!(
        me.status.success(),
        "the stored token is used: {}",
        String::from_utf8_lossy(&me.stderr)
    );
    let others = run(&["list"]);
    assert_eq!(others.status.code(), Some(4), "as the plain user logger");
}

#[tokio::test(flavor = "multi_thread")]
async fn token_mints_a_token_the_server_accepts_and_health_reports_serving() {
    let app = TestApp::spawn().await;
    let minted = Command::new(env!("CARGO_BIN_EXE_userctl"))
        .args([
            "token",
            "--subject",
            "script",
            "--role",
            "admin",
            "--ttl",
            "5m",
        ])
        .env("USER_SERVICE_JWT_SECRET", TEST_SECRET)
        .output()
        .unwrap();
    assert!(minted.status.success());
    let token = String::from_utf8(minted.stdout).unwrap().trim().to_owned();
    let listed = userctl(&app, Some(&token), &["list", "-o", "json"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );

    // The same secret from a file that ends with a newline, as secret files do.
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{TEST_SECRET}\n")).unwrap();
    let from_file = Command::new(env!("CARGO_BIN_EXE_userctl"))
        .args(["token", "--subject", "script", "--role", "admin"])
        .arg("--jwt-secret-file")
        .arg(&secret_file)
        .env_remove("USER_SERVICE_JWT_SECRET")
        .output()
        .unwrap();
    assert!(
        from_file.status.success(),
        "{}",
        String::from_utf8_lossy(&from_file.stderr)
    );
    let token = String::from_utf8(from_file.stdout)
        .unwrap()
        .trim()
        .to_owned();
    let listed = userctl(&app, Some(&token), &["list", "-o", "json"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );

    let health = userctl(&app, None, &["health", "-o", "json"]);
    assert!(health.status.success());
    assert_eq!(
        serde_json::from_slice::<Value>(&health.stdout).unwrap()["status"],
        "SERVING"
    );
}

fn read_event(lines: &mut impl Iterator<Item = std::io::Result<String>>) -> Value {
    let line = lines
        .next()
        .expect("watch printed a line")
        .expect("readable");
    serde_json::from_str(&line).expect("a JSON event")
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_with_progress_prints_how_far_a_quiet_stream_is_current() {
    let app = TestApp::spawn_with(|settings| {
        settings.streams.watch_progress = Duration::from_millis(200);
    })
    .await;
    let created = crate::helpers::create(&mut app.client().await, "progress_line").await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_userctl"))
        .args(["--addr", &format!("http://{}", app.addr)])
        .args(["watch", "--all", "--from-revision", "1", "--progress"])
        .env("USERCTL_TOKEN", admin(&app))
        .env("USERCTL_CONFIG_DIR", "/nonexistent/userctl-tests")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    let event = lines.next().expect("the replayed event").unwrap();
    let progress = lines.next().expect("a progress line").unwrap();

    assert!(event.contains(&created.id), "{event}");
    assert_eq!(progress, "1 PROGRESS", "current to the create's revision");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_resumes_after_the_server_restarts_without_losing_or_repeating_events() {
    let app = TestApp::spawn().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_userctl"))
        .args([
            "--addr",
            &format!("http://{}", app.addr),
            "watch",
            "--all",
            "--from-revision",
            "1",
            "-o",
            "json",
        ])
        .env("USERCTL_TOKEN", admin(&app))
        .env("USERCTL_CONFIG_DIR", "/nonexistent/userctl-tests")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        while let Some(Ok(line)) = lines.next() {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    let mut lines =
        std::iter::from_fn(|| receiver.recv_timeout(Duration::from_secs(15)).ok().map(Ok));

    let mut client = app.client().await;
    let before = crate::helpers::create(&mut client, "before_restart").await;
    let first = read_event(&mut lines);
    assert_eq!(first["user"]["id"], before.id.as_str());
    assert_eq!(first["revision"], "1");

    let app = app.restart().await;
    let mut client = app.client().await;
    let after = crate::helpers::create(&mut client, "after_restart").await;
    let second = read_event(&mut lines);
    assert_eq!(
        second["user"]["id"],
        after.id.as_str(),
        "the next event, once"
    );
    assert_eq!(second["revision"], "2");

    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_past_its_timeout_is_deadline_exceeded_with_exit_code_5() {
    let app = TestApp::spawn_with(|settings| {
        settings.auth.argon2 = user_service::auth::hasher::Argon2Settings {
            memory_kib: 256 * 1024,
            iterations: 4,
            parallelism: 1,
        };
    })
    .await;
    let output = userctl(
        &app,
        Some(&admin(&app)),
        &[
            "--timeout",
            "20ms",
            "create",
            "--username",
            "hurried",
            "--email",
            "hurried@example.com",
            "--password",
            "password123",
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("DEADLINE_EXCEEDED"), "{stderr}");
}

fn write_jsonl(dir: &std::path::Path, name: &str, rows: &[String]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, rows.join("\n")).unwrap();
    path.display().to_string()
}

fn user_row(name: &str) -> String {
    format!(r#"{{"username":"{name}","email":"{name}@example.com","password":"password123"}}"#)
}

#[tokio::test(flavor = "multi_thread")]
async fn import_waits_when_rate_limited_and_sends_what_the_batch_limit_cut_off() {
    let app = TestApp::spawn_with(|settings| {
        settings.limits.rate_limit_per_second = 1;
        settings.limits.rate_limit_burst = 1;
        settings.limits.max_batch_items = 3;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut rows: Vec<String> = (0..7).map(|i| user_row(&format!("lim_{i}"))).collect();
    rows[1] = r#"{"username":"lim_bad","email":"nope","password":"password123"}"#.into();
    rows[5] = "not json".into();
    let file = write_jsonl(dir.path(), "limited.jsonl", &rows);

    // The first call learns that the server takes three rows a call; the second, right
    // after it, is refused by the rate limiter (one call a second) and sent again.
    let output = userctl(&app, Some(&admin(&app)), &["import", &file, "-o", "json"]);

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "two rows are rejected: {stderr}"
    );
    assert!(stderr.contains("sending again"), "{stderr}");
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["created"], 5, "{summary}");
    assert_eq!(summary["rejected"], 2, "{summary}");
    assert_eq!(summary["notSent"], 0, "{summary}");
    let rejects = std::fs::read_to_string(format!("{file}.rejects")).unwrap();
    let lines: Vec<_> = rejects
        .lines()
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(lines, ["line 2", "line 6"], "in line order: {rejects}");
    let listed = app
        .client()
        .await
        .list_users(user_service::pb::ListUsersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.total_count, 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_import_that_fails_still_prints_its_summary_and_writes_its_rejects() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let rows = ["not json".to_string(), user_row("fa_1"), user_row("fa_2")];
    let file = write_jsonl(dir.path(), "refused.jsonl", &rows);
    let user = app.token("0192a3b4-0000-7000-8000-000000000001", Role::User);

    let output = userctl(&app, Some(&user), &["import", &file, "-o", "json"]);

    assert_eq!(output.status.code(), Some(4), "a USER may not batch-create");
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        (
            &summary["created"],
            &summary["rejected"],
            &summary["notSent"]
        ),
        (&Value::from(0), &Value::from(1), &Value::from(2)),
        "{summary}"
    );
    let rejects = std::fs::read_to_string(format!("{file}.rejects")).unwrap();
    assert!(rejects.starts_with("line 1: not valid JSON"), "{rejects}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_csv_file_with_an_unknown_column_is_one_usage_error() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("typo.csv");
    std::fs::write(
        &csv,
        "username,emial,password\nann,ann@example.com,password123\n",
    )
    .unwrap();

    let output = userctl(&app, Some(&admin(&app)), &["import", csv.to_str().unwrap()]);

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("\"emial\""), "{stderr}");
    assert!(!dir.path().join("typo.csv.rejects").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn login_reads_a_piped_password_and_says_what_to_do_without_one() {
    let app = TestApp::spawn().await;
    create(&app, "piper");
    let config = tempfile::tempdir().unwrap();
    let login = |stdin: Stdio| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_userctl"))
            .args(["--addr", &format!("http://{}", app.addr)])
            .args(["login", "--username", "piper"])
            .env_remove("USERCTL_TOKEN")
            .env_remove("USERCTL_PASSWORD")
            .env_remove("USERCTL_CODE")
            .env("USERCTL_CONFIG_DIR", config.path())
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(mut input) = child.stdin.take() {
            use std::io::Write;
            input.write_all(b"password123\n").unwrap();
        }
        child.wait_with_output().unwrap()
    };

    let piped = login(Stdio::piped());
    assert!(
        piped.status.success(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );

    let none = login(Stdio::null());
    let stderr = String::from_utf8_lossy(&none.stderr);
    assert_eq!(none.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no terminal")
            && stderr.contains("--password")
            && stderr.contains("USERCTL_PASSWORD"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn flags_are_checked_once_and_alike_before_anything_is_sent() {
    let app = TestApp::spawn().await;
    let cases: [&[&str]; 6] = [
        &["list", "--role", "unspecified"],
        &["list", "--status", "deleted"],
        &["list", "--status", "bogus"],
        &[
            "update",
            "0192a3b4-0000-7000-8000-000000000001",
            "--status",
            "4",
        ],
        &[
            "create",
            "--username",
            "x_y",
            "--email",
            "x@example.com",
            "--password",
            "password123",
            "--role",
            "0",
        ],
        &["--token", "", "list"],
    ];
    for args in cases {
        let output = userctl(&app, Some(&admin(&app)), args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
    }
    let empty = userctl(&app, None, &["--token", "", "list"]);
    assert!(
        String::from_utf8_lossy(&empty.stderr)
            .contains("token given with --token or USERCTL_TOKEN is empty"),
        "{}",
        String::from_utf8_lossy(&empty.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn token_prints_a_json_object_with_o_json() {
    let app = TestApp::spawn().await;
    let output = Command::new(env!("CARGO_BIN_EXE_userctl"))
        .args(["token", "--subject", "ops", "--role", "admin", "-o", "json"])
        .env("USER_SERVICE_JWT_SECRET", TEST_SECRET)
        .output()
        .unwrap();
    assert!(output.status.success());
    let minted: Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    let token = minted["accessToken"].as_str().expect("accessToken");
    assert!(minted["expiresAt"].as_str().unwrap().ends_with('Z'));
    let listed = userctl(&app, Some(token), &["list"]);
    assert!(listed.status.success(), "the token works");
}

#[tokio::test(flavor = "multi_thread")]
async fn list_prints_a_header_alone_when_empty_and_aligned_columns_across_pages() {
    let app = TestApp::spawn().await;
    let empty = userctl(&app, Some(&admin(&app)), &["list"]);
    let stdout = String::from_utf8_lossy(&empty.stdout);
    assert_eq!(stdout.lines().count(), 1, "only the header: {stdout:?}");
    assert!(
        stdout.starts_with("ID ") && stdout.ends_with('\n'),
        "{stdout:?}"
    );
    assert_eq!(String::from_utf8_lossy(&empty.stderr), "0 of 0 users\n");

    for name in ["a", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "ccc"] {
        let name = format!("{name}_u");
        let name = &name[..name.len().min(30)];
        create(&app, name);
    }
    let all = userctl(
        &app,
        Some(&admin(&app)),
        &["list", "--all", "--page-size", "1"],
    );
    let stdout = String::from_utf8_lossy(&all.stdout);
    let lines: Vec<_> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "a header and three users: {stdout}");
    // EMAIL, the last column, starts after the last space on every line.
    let columns: Vec<_> = lines.iter().map(|line| line.rfind(' ')).collect();
    assert!(
        columns.windows(2).all(|pair| pair[0] == pair[1]),
        "the email column starts at one place on every page: {stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn health_of_a_service_the_server_does_not_know_exits_3() {
    let app = TestApp::spawn().await;
    let output = userctl(&app, None, &["health", "--service", "no.such.Service"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("NOT_FOUND"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn get_looks_a_user_up_by_username_or_email() {
    let app = TestApp::spawn().await;
    let created = create(&app, "cli_lookup");
    let by_email = json(&app, &["get", "--email", "CLI_LOOKUP@example.com"]);
    assert_eq!(by_email, created);
    let by_name = json(&app, &["get", "--username", "Cli_Lookup"]);
    assert_eq!(by_name, created);
    let neither = userctl(&app, Some(&admin(&app)), &["get"]);
    assert_eq!(
        neither.status.code(),
        Some(2),
        "an id, a username or an email is required"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stored_login_refreshes_itself_changes_its_password_and_logs_out() {
    // Access tokens of 10 s count as expiring at once (userctl refreshes 30 s ahead).
    let app =
        TestApp::spawn_with(|settings| settings.auth.jwt.token_ttl = Duration::from_secs(10)).await;
    let user = create(&app, "rotating");
    let id = user["id"].as_str().unwrap().to_owned();
    let config = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| userctl_in(&app, config.path(), None, args);
    let ok = |output: &Output, what: &str| {
        assert!(
            output.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let stored = |name: &str| std::fs::read_to_string(config.path().join(name)).unwrap();

    ok(
        &run(&[
            "login",
            "--username",
            "rotating",
            "--password",
            "password123",
        ]),
        "login",
    );
    let first_refresh = stored("refresh");
    ok(&run(&["get", &id]), "a call with the stored login");
    assert_ne!(
        stored("refresh"),
        first_refresh,
        "the expiring access token was refreshed, and the refresh token rotated"
    );

    let no_terminal = run(&["passwd"]);
    assert_eq!(no_terminal.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&no_terminal.stderr).contains("--current-password"),
        "{}",
        String::from_utf8_lossy(&no_terminal.stderr)
    );
    let before_change = stored("token");
    ok(
        &run(&[
            "passwd",
            "--current-password",
            "password123",
            "--new-password",
            "a different secret",
        ]),
        "passwd",
    );
    assert_ne!(stored("token"), before_change, "the new session is stored");
    ok(&run(&["get", &id]), "the new login works");
    let old = userctl(&app, Some(&before_change), &["get", &id]);
    assert_eq!(old.status.code(), Some(4), "the old session ended");

    let after_passwd = stored("token");
    ok(&run(&["logout"]), "logout");
    assert!(!config.path().join("token").exists());
    assert!(!config.path().join("refresh").exists());
    let ended = userctl(&app, Some(&after_passwd), &["get", &id]);
    assert_eq!(
        ended.status.code(),
        Some(4),
        "the logged-out token is refused"
    );

    ok(
        &run(&[
            "login",
            "--username",
            "rotating",
            "--password",
            "a different secret",
        ]),
        "login with the new password",
    );
    let session = stored("token");
    let admin = app.token("helpdesk", Role::Admin);
    let end = userctl(&app, Some(&admin), &["sessions", "end", &id, "-o", "json"]);
    ok(&end, "sessions end");
    let answer: serde_json::Value = serde_json::from_slice(&end.stdout).unwrap();
    assert_eq!(answer["ended"], "1", "proto3 JSON: int64 as a string");
    let refused = userctl(&app, Some(&session), &["get", &id]);
    assert_eq!(refused.status.code(), Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bench_that_mostly_measures_refusals_says_so_and_exits_non_zero() {
    let bench = |app: &TestApp| {
        create(app, "benched");
        let args = [
            "bench",
            "--rpc",
            "list",
            "--concurrency",
            "4",
            "--duration",
            "1s",
        ];
        userctl(app, Some(&admin(app)), &args)
    };
    let limited = TestApp::spawn_with(|settings| {
        settings.limits.rate_limit_per_second = 5;
        settings.limits.rate_limit_burst = 5;
    })
    .await;
    let output = bench(&limited);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "a run of refusals fails: {stderr}"
    );
    assert!(stderr.contains("errors dominate"), "{stderr}");
    assert!(
        stderr.contains("--rate-limit-per-second 0"),
        "it says how to benchmark past the limit: {stderr}"
    );

    let output = bench(&TestApp::spawn().await);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_say_what_to_do_next() {
    let app = TestApp::spawn().await;
    let stderr = |output: &Output| String::from_utf8_lossy(&output.stderr).into_owned();

    let without_token = userctl(&app, None, &["list"]);
    assert!(!without_token.status.success());
    let said = stderr(&without_token);
    assert!(
        said.contains("USERCTL_TOKEN") && said.contains("userctl login"),
        "no token names the variable and login: {said}"
    );

    let service_passwd = userctl(
        &app,
        Some(&admin(&app)),
        &[
            "passwd",
            "--current-password",
            "whatever1",
            "--new-password",
            "a new password",
        ],
    );
    assert!(!service_passwd.status.success());
    let said = stderr(&service_passwd);
    assert!(
        said.contains("--user"),
        "a service's passwd names --user: {said}"
    );

    // int64 in proto3 JSON is a string, as docs/userctl.md says of -o json.
    let id = create(&app, "ended")["id"].as_str().unwrap().to_owned();
    user_service::pb::auth_service_client::AuthServiceClient::new(app.channel().await)
        .login(user_service::pb::LoginRequest {
            username: "ended".into(),
            password: "password123".into(),
            ..Default::default()
        })
        .await
        .expect("the user logs in: one open session");
    let ended = json(&app, &["sessions", "end", &id]);
    assert_eq!(ended["ended"], "1", "{ended}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_clear_failures_forgives_an_accounts_wrong_passwords() {
    let app = TestApp::spawn().await;
    let id = create(&app, "forgetful")["id"].as_str().unwrap().to_owned();
    let mut auth =
        user_service::pb::auth_service_client::AuthServiceClient::new(app.channel().await);
    for _ in 0..3 {
        auth.login(user_service::pb::LoginRequest {
            username: "forgetful".into(),
            password: "not it at all".into(),
            ..Default::default()
        })
        .await
        .expect_err("a wrong password");
    }
    let cleared = json(&app, &["sessions", "clear-failures", &id]);
    assert_eq!(cleared["failures"], "3", "{cleared}");
    let again = userctl(
        &app,
        Some(&admin(&app)),
        &["sessions", "clear-failures", &id],
    );
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).trim(),
        "cleared 0 login failure(s)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_created_used_listed_and_revoked() {
    let app = TestApp::spawn().await;
    let created = userctl(
        &app,
        Some(&admin(&app)),
        &[
            "keys",
            "create",
            "nightly-sync",
            "--role",
            "moderator",
            "--expires-in",
            "30d",
        ],
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let out = String::from_utf8_lossy(&created.stdout);
    let secret = out
        .lines()
        .find(|line| line.starts_with("usk_"))
        .unwrap_or_else(|| panic!("the secret is printed on a line of its own: {out}"))
        .to_owned();

    let listed = userctl(&app, Some(&secret), &["list"]);
    assert!(
        listed.status.success(),
        "the key works as userctl's token: {}",
        String::from_utf8_lossy(&listed.stderr)
    );

    let keys = json(&app, &["keys", "list"]);
    let key = &keys["keys"][0];
    assert_eq!(key["name"], "nightly-sync", "{keys}");
    assert_eq!(key["role"], "USER_ROLE_MODERATOR", "{keys}");
    assert!(key["expiresAt"].is_string(), "{keys}");
    assert!(
        !keys.to_string().contains(&secret[40..]),
        "no secret listed"
    );
    let table = userctl(&app, Some(&admin(&app)), &["keys", "list"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("ID "), "{text}");
    assert!(text.contains("nightly-sync"), "{text}");

    let id = key["id"].as_str().unwrap();
    json(&app, &["keys", "revoke", id]);
    let refused = userctl(&app, Some(&secret), &["list"]);
    assert_eq!(refused.status.code(), Some(4), "a revoked key is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totp_is_enrolled_confirmed_used_at_login_and_disabled() {
    let app = TestApp::spawn().await;
    let id = create(&app, "authenticated")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let own = app.token(&id, Role::User);
    let ok = |output: &Output, what: &str| {
        assert!(
            output.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };

    let guessed = userctl(
        &app,
        Some(&own),
        &[
            "totp",
            "enroll",
            "--password",
            "not-the-password",
            "-o",
            "json",
        ],
    );
    assert!(
        !guessed.status.success(),
        "a token alone, without the owner's password, enrolls nothing"
    );
    let enroll = userctl(
        &app,
        Some(&own),
        &["totp", "enroll", "--password", "password123", "-o", "json"],
    );
    ok(&enroll, "totp enroll");
    let enrollment: Value = serde_json::from_slice(&enroll.stdout).unwrap();
    let secret = totp_rs::Secret::try_from_base32(enrollment["secret"].as_str().unwrap()).unwrap();
    let totp = totp_rs::Builder::new()
        .with_secret(secret.as_bytes().to_vec())
        .build()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let confirm = userctl(
        &app,
        Some(&own),
        &["totp", "confirm", &totp.generate(now).to_string()],
    );
    ok(&confirm, "totp confirm");
    let recovery: Vec<String> = String::from_utf8_lossy(&confirm.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(recovery.len(), 10, "one recovery code a line: {recovery:?}");

    let config = tempfile::tempdir().unwrap();
    let login = |code: Option<&str>| {
        let mut args = vec![
            "login",
            "--username",
            "authenticated",
            "--password",
            "password123",
        ];
        if let Some(code) = code {
            args.extend(["--code", code]);
        }
        userctl_in(&app, config.path(), None, &args)
    };
    let asked = login(None);
    assert!(!asked.status.success());
    assert!(
        String::from_utf8_lossy(&asked.stderr).contains("second_factor_code"),
        "{}",
        String::from_utf8_lossy(&asked.stderr)
    );
    ok(&login(Some(&recovery[0])), "login with a recovery code");

    let disable = userctl(
        &app,
        Some(&own),
        &[
            "totp",
            "disable",
            "--code",
            &totp.generate(now + 30).to_string(),
        ],
    );
    ok(&disable, "totp disable");
    ok(&login(None), "login with the password alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_and_deliveries_carry_a_code_from_the_mailer_to_a_new_password() {
    let app = TestApp::spawn().await;
    create(&app, "recovering");
    let started = userctl(&app, None, &["recover", "start", "recovering"]);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );

    let mut mailer = Command::new(env!("CARGO_BIN_EXE_userctl"))
        .args(["--addr", &format!("http://{}", app.addr), "deliveries"])
        .env("USERCTL_TOKEN", admin(&app))
        .env("USERCTL_CONFIG_DIR", "/nonexistent/userctl-tests")
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("userctl deliveries runs");
    let mut line = String::new();
    BufReader::new(mailer.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    mailer.kill().unwrap();
    let _ = mailer.wait();
    let delivery: Value = serde_json::from_str(&line).expect("one JSON line per delivery");
    assert_eq!(
        delivery["purpose"], "DELIVERY_PURPOSE_RECOVERY",
        "{delivery}"
    );
    let code = delivery["code"].as_str().unwrap();

    let completed = userctl(
        &app,
        None,
        &[
            "recover",
            "complete",
            "recovering",
            "--code",
            code,
            "--new-password",
            "a brand new passphrase",
        ],
    );
    assert!(
        completed.status.success(),
        "{}",
        String::from_utf8_lossy(&completed.stderr)
    );
    let config = tempfile::tempdir().unwrap();
    let login = userctl_in(
        &app,
        config.path(),
        None,
        &[
            "login",
            "--username",
            "recovering",
            "--password",
            "a brand new passphrase",
        ],
    );
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_with_several_ids_reads_them_in_one_call_and_names_the_missing() {
    let app = TestApp::spawn().await;
    let first = create(&app, "several_a")["id"].as_str().unwrap().to_owned();
    let second = create(&app, "several_b")["id"].as_str().unwrap().to_owned();
    let unknown = "0192a3b4-0000-7000-8000-000000000000";
    let answer = json(&app, &["get", &second, &first]);
    let names: Vec<&str> = answer["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|user| user["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["several_b", "several_a"], "{answer}");

    let partly = userctl(&app, Some(&admin(&app)), &["get", &first, unknown]);
    assert_eq!(partly.status.code(), Some(3), "a missing id exits 3");
    assert!(String::from_utf8_lossy(&partly.stdout).contains("several_a"));
    assert!(
        String::from_utf8_lossy(&partly.stderr).contains(unknown),
        "{}",
        String::from_utf8_lossy(&partly.stderr)
    );
}

/// An export with every field's value comparable across servers: ids, times and etags are
/// the new server's own, so they are left out.
fn comparable_export(path: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("the export was written");
    let mut rows: Vec<String> = if path.extension().is_some_and(|ext| ext == "csv") {
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let headers = reader.headers().unwrap().clone();
        reader
            .records()
            .map(|record| {
                let record = record.unwrap();
                headers
                    .iter()
                    .zip(record.iter())
                    .filter(|(name, _)| !["id", "created_at", "updated_at"].contains(name))
                    .map(|(name, value)| format!("{name}={value}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    } else {
        text.lines()
            .map(|line| {
                let mut row: Value = serde_json::from_str(line).unwrap();
                let user = row["user"].as_object_mut().unwrap();
                for key in ["id", "createdAt", "updatedAt", "etag"] {
                    assert!(user.remove(key).is_some(), "{key} is exported");
                }
                row.to_string()
            })
            .collect()
    };
    rows.sort();
    rows
}

#[tokio::test(flavor = "multi_thread")]
async fn an_export_imported_into_an_empty_server_exports_the_same_apart_from_ids_and_times() {
    use user_service::pb::{CreateUserRequest, UserRole, UserStatus};
    let source = TestApp::spawn().await;
    let mut client = source.client().await;
    let users = [
        ("rt_ann", UserRole::Admin, UserStatus::Active, "core", ""),
        (
            "rt_bo",
            UserRole::Moderator,
            UserStatus::Suspended,
            "edge, \"quoted\"",
            "",
        ),
        ("rt_cy", UserRole::User, UserStatus::Inactive, "", ""),
        (
            "rt_di",
            UserRole::User,
            UserStatus::Active,
            "ops",
            "$2b$04$abcdefghijklmnopqrstuuVbsuMsXIBR3YrmyTAqElyDHWDmgSFbe",
        ),
    ];
    for (name, role, status, team, hash) in users {
        let metadata = if team.is_empty() {
            Default::default()
        } else {
            [("team".to_string(), team.to_string())].into()
        };
        client
            .create_user(CreateUserRequest {
                username: name.into(),
                email: format!("{name}@example.com"),
                full_name: format!("{name} Émile, Jr."),
                password: if hash.is_empty() {
                    "password123".into()
                } else {
                    String::new()
                },
                password_hash: hash.into(),
                role: role as i32,
                status: status as i32,
                metadata,
            })
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    for format in ["jsonl", "csv"] {
        let first = dir.path().join(format!("first.{format}"));
        let second = dir.path().join(format!("second.{format}"));
        let target = TestApp::spawn().await;
        for (app, args) in [
            (
                &source,
                vec!["export", first.to_str().unwrap(), "--password-hashes"],
            ),
            (&target, vec!["import", first.to_str().unwrap()]),
            (
                &target,
                vec!["export", second.to_str().unwrap(), "--password-hashes"],
            ),
        ] {
            let output = userctl(app, Some(&admin(app)), &args);
            assert!(
                output.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let exported = comparable_export(&first);
        assert_eq!(exported.len(), users.len(), "{format}: {exported:#?}");
        assert_eq!(exported, comparable_export(&second), "{format}");
        crate::auth::login::login(&target, "rt_ann", "password123")
            .await
            .unwrap_or_else(|err| panic!("{format}: the password works after the import: {err:?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_signing_publishes_a_next_key_beside_the_active_one() {
    let app = TestApp::spawn().await;
    let rotated = json(&app, &["keys", "rotate-signing"]);
    let keys = rotated["keys"].as_array().expect("the keys");
    let states: Vec<&str> = keys
        .iter()
        .map(|key| key["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["active", "next"], "{rotated}");
    assert!(keys.iter().all(|key| key["algorithm"] == "ES256"));
    let text = userctl(
        &app,
        Some(&app.token("ops", Role::Admin)),
        &["keys", "rotate-signing"],
    );
    assert!(text.status.success());
    let lines = String::from_utf8_lossy(&text.stdout).lines().count();
    assert_eq!(lines, 2, "one line a key; the waiting rotation adds none");
}

//! Figures 1, 1b and 1c: GetUser under h2load against a bare tonic ceiling, its latency under
//! a tonic client, and its cost in instructions under callgrind.

use prost::Message as _;

use super::*;

/// The ceiling: bare tonic, GetUser answered with a constant user, no storage, no layers.
struct Ceiling(pb::User);

#[tonic::async_trait]
impl UserService for Ceiling {
    async fn get_user(
        &self,
        _: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        Ok(Response::new(pb::GetUserResponse {
            user: Some(self.0.clone()),
        }))
    }
    async fn list_users(
        &self,
        _: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        // The load generator lists once to learn ids.
        Ok(Response::new(pb::ListUsersResponse {
            users: vec![self.0.clone()],
            ..Default::default()
        }))
    }
    async fn create_user(
        &self,
        _: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        Err(Status::unimplemented("ceiling"))
    }
    async fn lookup_user(
        &self,
        _: Request<pb::LookupUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        Err(Status::unimplemented("ceiling"))
    }
    async fn batch_get_users(
        &self,
        _: Request<pb::BatchGetUsersRequest>,
    ) -> Result<Response<pb::BatchGetUsersResponse>, Status> {
        Err(Status::unimplemented("ceiling"))
    }
    async fn update_user(
        &self,
        _: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::UpdateUserResponse>, Status> {
        Err(Status::unimplemented("ceiling"))
    }
    async fn delete_user(
        &self,
        _: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        Err(Status::unimplemented("ceiling"))
    }
    type ExportUsersStream = user_service::grpc::export::ExportStream;
    async fn export_users(
        &self,
        _: Request<pb::ExportUsersRequest>,
    ) -> Result<Response<Self::ExportUsersStream>, Status> {
        Err(Status::unimplemented("ceiling"))
    }
    type WatchUsersStream = EventStream;
    async fn watch_users(
        &self,
        _: Request<pb::WatchUsersRequest>,
    ) -> Result<Response<EventStream>, Status> {
        Err(Status::unimplemented("ceiling"))
    }
    async fn batch_create_users(
        &self,
        _: Request<Streaming<pb::CreateUserRequest>>,
    ) -> Result<Response<pb::BatchCreateUsersResponse>, Status> {
        Err(Status::unimplemented("ceiling"))
    }
    type SyncUsersStream = EventStream;
    async fn sync_users(
        &self,
        _: Request<Streaming<pb::UpdateUserRequest>>,
    ) -> Result<Response<EventStream>, Status> {
        Err(Status::unimplemented("ceiling"))
    }
}

/// h2load pinned to core 1, making gRPC GetUser calls to `url`; the caller says for how long
/// (`-D`) or how many (`-n`).
pub(super) fn h2load_get_user(url: &str, body: &Path, token: &str) -> Command {
    h2load_get_user_as("application/grpc", url, body, token)
}

/// As `h2load_get_user`, with `content_type` (gRPC-Web, Connect) and its body.
fn h2load_get_user_as(content_type: &str, url: &str, body: &Path, token: &str) -> Command {
    let mut command = Command::new("taskset");
    command
        .args(["-c", "1", "h2load", "-c", "16", "-m", "32", "-t", "1"])
        .arg("-d")
        .arg(body)
        .args([
            "-H",
            &format!("content-type: {content_type}"),
            "-H",
            "te: trailers",
        ])
        .args(["-H", &format!("authorization: Bearer {token}")])
        .arg(format!("{url}/userservice.UserService/GetUser"));
    command
}

/// Runs h2load for `seconds` of GetUser calls: calls per second.
pub(super) fn h2load(url: &str, body: &Path, token: &str, seconds: u64) -> f64 {
    h2load_as("application/grpc", url, body, token, seconds)
}

fn h2load_as(content_type: &str, url: &str, body: &Path, token: &str, seconds: u64) -> f64 {
    let output = h2load_get_user_as(content_type, url, body, token)
        .args(["-D", &seconds.to_string()])
        .output()
        .expect("h2load runs");
    let text = String::from_utf8_lossy(&output.stdout);
    // "finished in 5.00s, 123456.78 req/s, ..."
    text.lines()
        .find_map(|line| line.strip_prefix("finished in "))
        .and_then(|rest| rest.split(", ").nth(1))
        .and_then(|rate| rate.trim_end_matches(" req/s").parse().ok())
        .unwrap_or_else(|| panic!("h2load printed no rate:\n{text}"))
}

/// Our server's flags in figures 1 and 1c: the limits no call reaches, metrics on, the access
/// log as given.
fn full_stack_flags(access_log: &str) -> Vec<&str> {
    let mut flags = UNREACHED_LIMITS.to_vec();
    flags.extend([
        "--access-log",
        access_log,
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    flags
}

/// Starts the ceiling in a process of its own, run by `wrapper` when one is given, answering
/// the user in the file `user` (encoded): the process and the address it serves on.
pub(super) fn start_ceiling(wrapper: &[String], user: &Path) -> (std::process::Child, String) {
    let mut ceiling = support::wrapped(wrapper, std::env::current_exe().unwrap())
        .arg(SERVE_CEILING)
        .arg(user)
        .stdout(Stdio::piped())
        .spawn()
        .expect("the ceiling starts");
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(ceiling.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (ceiling, line.trim().to_owned())
}

/// valgrind running callgrind, counting into `out` and writing its own messages beside it.
fn callgrind(out: &Path) -> Vec<String> {
    vec![
        "valgrind".to_owned(),
        "--tool=callgrind".to_owned(),
        // Names written out in every dump, so a kept profile reads on its own.
        "--compress-strings=no".to_owned(),
        format!("--callgrind-out-file={}", out.display()),
        format!("--log-file={}.log", out.display()),
    ]
}

/// Figure 1 (h2load): GetUser through the full stack (metrics on), with the access log on (to
/// a pipe) and off, against a bare tonic server answering a constant user, each in a process of its own
/// on core 0 while h2load, a far cheaper client than a tonic one, drives it from core 1.
/// Alternating, three rounds, medians.
pub(super) async fn get_user_with_h2load(suite: &mut Suite) {
    println!("1. GetUser under h2load (server on core 0, h2load on core 1), median of 3 rounds");
    if !installed("h2load") || !installed("taskset") {
        println!(
            "   h2load or taskset is missing: install them (apt-get install nghttp2-client util-linux)"
        );
        row(
            &mut suite.rows,
            "GetUser full stack / ceiling (h2load)",
            "not measured: no h2load".into(),
            "(rate beside the instruction ratio)",
            "NOT measured".into(),
        );
        return;
    }
    let token = token();
    let ours = |access_log: &str| {
        let server = ServerProcess::start_with(
            &TestDatabase::sqlite_file(&suite.small),
            &[("RUST_LOG", "info")],
            &full_stack_flags(access_log),
        );
        server.discard_log();
        pin_to_core_0(server.pid());
        server
    };
    let probe = ours("true");
    let user = one_user(probe.url()).await;
    drop(probe);
    // The ceiling answers the very user ours does, so both encode the same message.
    let ceiling_user = suite.dir.path().join("ceiling_user.bin");
    std::fs::write(&ceiling_user, user.encode_to_vec()).unwrap();
    let body = suite.dir.path().join("get_user.bin");
    std::fs::write(
        &body,
        grpc_frame(&pb::GetUserRequest {
            user_id: user.id.clone(),
        }),
    )
    .unwrap();
    let (mut ceiling, ceiling_url) = start_ceiling(&[], &ceiling_user);
    pin_to_core_0(ceiling.id());
    let (mut full, mut off, mut bare) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=3 {
        let server = ours("true");
        full.push(h2load(server.url(), &body, &token, 5));
        drop(server);
        let server = ours("false");
        off.push(h2load(server.url(), &body, &token, 5));
        drop(server);
        bare.push(h2load(&ceiling_url, &body, &token, 5));
        println!(
            "   round {round}: full stack {:.0}/s, access log off {:.0}/s, ceiling {:.0}/s",
            full[round - 1],
            off[round - 1],
            bare[round - 1]
        );
    }
    let _ = ceiling.kill();
    let _ = ceiling.wait();
    let (full, off, bare) = (median(full), median(off), median(bare));
    let r = full / bare;
    row(
        &mut suite.rows,
        "GetUser full stack / ceiling (h2load)",
        format!("{full:.0}/{bare:.0}/s = {r:.2}"),
        "(rate beside the instruction ratio)",
        "-".into(),
    );
    let r = off / bare;
    row(
        &mut suite.rows,
        "GetUser access log off / ceiling (h2load)",
        format!("{off:.0}/{bare:.0}/s = {r:.2}"),
        "(rate beside the instruction ratio)",
        "-".into(),
    );
    get_user_by_protocol(suite, &body, &user.id, &token, bare);
    get_user_instructions(suite, &body, &token, &ceiling_user);
}

/// Figure 1d (h2load): GetUser through the full stack over gRPC, gRPC-Web and Connect JSON,
/// one server, the protocols alternating, three rounds, medians; each as a ratio to gRPC in the
/// same run. h2load drove the bare ceiling at `ceiling` calls per second just before, so a rate
/// below that is the server's, not the tool's.
fn get_user_by_protocol(
    suite: &mut Suite,
    grpc_body: &Path,
    user_id: &str,
    token: &str,
    ceiling: f64,
) {
    println!(
        "\n1d. GetUser over each protocol, full stack, h2load over HTTP/2, median of 3 rounds"
    );
    let json_body = suite.dir.path().join("get_user.json");
    std::fs::write(&json_body, format!(r#"{{"userId":"{user_id}"}}"#)).unwrap();
    let protocols = [
        ("gRPC", "application/grpc", grpc_body),
        ("gRPC-Web", "application/grpc-web+proto", grpc_body),
        ("Connect JSON", "application/json", json_body.as_path()),
    ];
    let server = ServerProcess::start_with(
        &TestDatabase::sqlite_file(&suite.small),
        &[("RUST_LOG", "info")],
        &full_stack_flags("true"),
    );
    server.discard_log();
    pin_to_core_0(server.pid());
    let mut rates = vec![Vec::new(); protocols.len()];
    for round in 1..=3 {
        let mut line = format!("   round {round}:");
        for ((name, content_type, body), rates) in protocols.iter().zip(&mut rates) {
            let rate = h2load_as(content_type, server.url(), body, token, 3);
            line.push_str(&format!(" {name} {rate:.0}/s"));
            rates.push(rate);
        }
        println!("{line}");
    }
    let medians: Vec<f64> = rates.into_iter().map(median).collect();
    println!("   (h2load's own bound: the bare ceiling took {ceiling:.0}/s from it in figure 1)");
    for (index, (name, _, _)) in protocols.iter().enumerate().skip(1) {
        let r = medians[index] / medians[0];
        row(
            &mut suite.rows,
            &format!("GetUser {name} / gRPC (h2load)"),
            format!("{:.0}/{:.0}/s = {r:.2}", medians[index], medians[0]),
            "(figure beside gRPC)",
            "-".into(),
        );
    }
}

/// Calls made before callgrind's count starts, and then counted.
const WARM_UP_CALLS: u64 = 2_000;
const COUNTED_CALLS: u64 = 20_000;

/// Figure 1c (callgrind): the instructions one GetUser costs the server, ours with the access
/// log on and off and the ceiling, each run by valgrind's callgrind while h2load calls it. An
/// instruction count does not move with what else the machine runs, so it shows a change in
/// the cost of a call that the spread of figure 1's rates can hide; the rates stay the
/// figures that count, since a count weighs a cache miss like any other instruction.
fn get_user_instructions(suite: &mut Suite, body: &Path, token: &str, ceiling_user: &Path) {
    println!("\n1c. GetUser instructions per call under callgrind (valgrind), h2load calling");
    if !installed("valgrind") || !installed("callgrind_control") {
        println!("   valgrind is missing: install it (apt-get install valgrind)");
        return;
    }
    let ours = |name: &str, access_log: &str| {
        let out = suite.dir.path().join(format!("{name}.callgrind"));
        let server = ServerProcess::start_wrapped(
            &callgrind(&out),
            &TestDatabase::sqlite_file(&suite.small),
            &[("RUST_LOG", "info")],
            &full_stack_flags(access_log),
        );
        server.discard_log();
        instructions_per_call(server.pid(), server.url(), body, token, &out)
    };
    let full = ours("full", "true");
    let off = ours("off", "false");
    let out = suite.dir.path().join("ceiling.callgrind");
    let (mut ceiling, url) = start_ceiling(&callgrind(&out), ceiling_user);
    let bare = instructions_per_call(ceiling.id(), &url, body, token, &out);
    let _ = ceiling.kill();
    let _ = ceiling.wait();
    println!("   full stack {full:.0}, access log off {off:.0}, ceiling {bare:.0} per call");
    for (name, ours, target) in [
        (
            "GetUser instructions: ceiling / full stack (callgrind)",
            full,
            0.80,
        ),
        (
            "GetUser instructions: ceiling / access log off (callgrind)",
            off,
            0.85,
        ),
    ] {
        let ratio = bare / ours;
        row(
            &mut suite.rows,
            name,
            format!("{bare:.0}/{ours:.0} = {ratio:.2}"),
            &format!(">= {target:.2}"),
            verdict(ratio, target, true),
        );
    }
}

/// Instructions per call of the process `pid`, run by callgrind writing to `out`: counters are
/// dumped and zeroed after the warm-up calls, then dumped again after the counted ones.
fn instructions_per_call(pid: u32, url: &str, body: &Path, token: &str, out: &Path) -> f64 {
    let calls = |count: u64| {
        let done = h2load_get_user(url, body, token)
            .args(["-n", &count.to_string()])
            .output()
            .expect("h2load runs");
        let text = String::from_utf8_lossy(&done.stdout);
        assert!(
            text.contains(&format!("{count} succeeded")),
            "h2load's calls did not all succeed:\n{text}"
        );
    };
    let dump = |number: u32| -> String {
        let dumped = Command::new("callgrind_control")
            .args(["-d", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("callgrind_control runs");
        assert!(dumped.success(), "callgrind_control could not reach {pid}");
        // The file is complete once its totals are written.
        let file = PathBuf::from(format!("{}.{number}", out.display()));
        for _ in 0..600 {
            if let Ok(text) = std::fs::read_to_string(&file)
                && text.lines().any(|line| line.starts_with("totals:"))
            {
                return text;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("callgrind wrote no complete {}", file.display());
    };
    calls(WARM_UP_CALLS);
    dump(1);
    calls(COUNTED_CALLS);
    let counted = dump(2);
    keep_profile(out);
    let total: f64 = counted
        .lines()
        .find_map(|line| line.strip_prefix("totals: "))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .expect("callgrind's dump has its totals");
    total / COUNTED_CALLS as f64
}

/// Where `BENCH_PROFILES` names a directory, the counted part of the profile `out` is copied
/// there, for `callgrind_annotate` to show where the instructions go.
fn keep_profile(out: &Path) {
    let Some(dir) = std::env::var_os("BENCH_PROFILES") else {
        return;
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("BENCH_PROFILES is a directory we can write");
    let name = out.file_name().expect("a profile has a file name");
    let kept = dir.join(name);
    std::fs::copy(format!("{}.2", out.display()), &kept).expect("the profile is copied");
    println!("   profile kept in {}", kept.display());
}

/// The ceiling in a process of its own, answering the user encoded in the file `user`: its
/// address on the first line of standard output.
pub(super) async fn serve_ceiling_forever(user: &Path) {
    let user = pb::User::decode(&*std::fs::read(user).expect("the ceiling's user is readable"))
        .expect("the ceiling's user decodes");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("http://{}", listener.local_addr().unwrap());
    tonic::transport::Server::builder()
        .add_service(UserServiceServer::new(Ceiling(user)))
        .serve_with_incoming(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        )
        .await
        .unwrap();
}

/// Figure 1b (userctl bench): GetUser latency through the full stack under a tonic client in
/// this process. Its throughput is not a figure: that client saturates before the server does
/// (figure 1 measures throughput with h2load, and the ceiling with the same tool).
pub(super) async fn get_user_latency(suite: &mut Suite) {
    println!("\n1b. GetUser latency under userctl bench (a tonic client, 32 callers)");
    let (server, addr) = in_process(settings(&suite.small, CHEAPEST)).await;
    let report = measure(&addr, load(Rpc::Get, 32, suite.run)).await;
    println!("   full stack: {}", report.summary());
    let _ = server.stop().await;
    row(
        &mut suite.rows,
        "GetUser latency p50 / p99 (userctl bench)",
        format!(
            "{:?} / {:?}",
            report.percentile(0.5),
            report.percentile(0.99)
        ),
        "(measured)",
        "-".into(),
    );
}

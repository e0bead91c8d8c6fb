//! Figure 5: the same figures on PostgreSQL, and delivery across replicas.

use super::get_user::h2load;
use super::*;

/// Runs pgbench against `url` with these arguments: transactions per second.
fn pgbench(url: &str, args: &[&str]) -> f64 {
    let output = Command::new("pgbench")
        .args(args)
        .arg(url)
        .output()
        .expect("pgbench runs");
    let text = String::from_utf8_lossy(&output.stdout);
    // "tps = 27123.456789 (without initial connection time)"
    text.lines()
        .find_map(|line| line.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|tps| tps.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "pgbench printed no rate:\n{text}{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
}

/// Figure 5: PostgreSQL (TEST_DATABASE_URL, a database of its own per figure), each figure
/// beside the database's own ceiling, measured with pgbench in the same run, with as many
/// connections as the server's pool (16).
pub(super) async fn postgres(suite: &mut Suite) {
    println!(
        "\n5. PostgreSQL: the service against the database's own ceilings (pgbench, 16 connections)"
    );
    if !installed("pgbench") || !installed("h2load") {
        println!(
            "   pgbench or h2load is missing: install them (apt-get install postgresql-contrib nghttp2-client)"
        );
        row(
            &mut suite.rows,
            "PostgreSQL figures",
            "not measured: no pgbench or h2load".into(),
            "-",
            "NOT measured".into(),
        );
        return;
    }
    let run = suite.run;
    let ceilings = TestDatabase::postgres();
    let init = Command::new("pgbench")
        .args(["-i", "-s", "1", "-q"])
        .arg(ceilings.url())
        .output()
        .expect("pgbench runs");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let seconds = run.as_secs().to_string();
    let point_reads = pgbench(
        ceilings.url(),
        &[
            "-S", "-M", "prepared", "-c", "16", "-j", "1", "-T", &seconds,
        ],
    );
    let write_transactions = pgbench(
        ceilings.url(),
        &["-M", "prepared", "-c", "16", "-j", "1", "-T", &seconds],
    );
    drop(ceilings);
    println!(
        "   pgbench -S -M prepared -c 16: {point_reads:.0} tps; TPC-B -c 16: {write_transactions:.0} tps"
    );

    let small = Arc::new(TestDatabase::postgres());
    seed_url(small.url(), 1_000).await;
    let app = TestApp::start_with(small.clone(), settings_on(small.url(), CHEAPEST)).await;
    let addr = format!("http://{}", app.addr);
    let user = one_user(&addr).await;
    let body = suite.dir.path().join("get_user_postgres.bin");
    std::fs::write(
        &body,
        grpc_frame(&pb::GetUserRequest {
            user_id: user.id.clone(),
        }),
    )
    .unwrap();
    let reads = h2load(&addr, &body, &token(), run.as_secs());
    println!("   GetUser under h2load (-c 16 -m 32), full stack: {reads:.0}/s");
    let r = reads / point_reads;
    row(
        &mut suite.rows,
        "PG GetUser / pgbench -S (h2load)",
        format!("{reads:.0}/{point_reads:.0}/s = {r:.2}"),
        ">= 0.80",
        verdict(r, 0.8, true),
    );

    let creates = measure(&addr, load(Rpc::Create, 64, run)).await;
    println!(
        "   CreateUser, 64 callers (userctl bench): {}",
        creates.summary()
    );
    let r = creates.per_second() / write_transactions;
    row(
        &mut suite.rows,
        "PG CreateUser / pgbench TPC-B",
        format!(
            "{:.0}/{write_transactions:.0}/s = {r:.2}",
            creates.per_second()
        ),
        ">= 1.00",
        verdict(r, 1.0, true),
    );

    let started = Instant::now();
    let mut created = 0.0;
    for _ in 0..2 {
        let (a, b) = tokio::join!(batch_create(&addr, 10_000), batch_create(&addr, 10_000));
        created += a.0 + b.0;
    }
    let batch_rate = created / started.elapsed().as_secs_f64();
    println!("   BatchCreateUsers: {created:.0} users at {batch_rate:.0} users/s");
    row(
        &mut suite.rows,
        "PG BatchCreateUsers, cheapest Argon2",
        format!("{batch_rate:.0} users/s"),
        ">= 10000/s",
        verdict(batch_rate, 10_000.0, true),
    );

    // Cross-replica delivery: written through this replica, watched on a second one.
    let other = TestApp::start_with(small.clone(), settings_on(small.url(), CHEAPEST)).await;
    let delivery = cross_replica_delivery(&addr, &format!("http://{}", other.addr), 1_000).await;
    let p99 = delivery[delivery.len() * 99 / 100];
    println!(
        "   cross-replica watch delivery, 1,000 creates: p50 {:?}, p99 {p99:?}",
        delivery[delivery.len() / 2]
    );
    row(
        &mut suite.rows,
        "PG cross-replica watch delivery p99",
        format!("{p99:?}"),
        "< 50ms",
        verdict(p99.as_secs_f64(), 0.05, false),
    );
    let _ = other.stop().await;

    let at_small = measure(&addr, load(Rpc::List, 8, run)).await;
    println!(
        "   ListUsers, 1,000 users, first page:     {}",
        at_small.summary()
    );
    let search_small = measure(&addr, search_load(run)).await;
    println!(
        "   ListUsers, 1,000 users, query \"SEED1\":     {}",
        search_small.summary()
    );
    let _ = app.stop().await;
    let large = Arc::new(TestDatabase::postgres());
    let seeding = Instant::now();
    seed_url(large.url(), 1_000_000).await;
    println!(
        "   seeded 1,000,000 users through storage in {:.1}s",
        seeding.elapsed().as_secs_f64()
    );
    let app = TestApp::start_with(large.clone(), settings_on(large.url(), CHEAPEST)).await;
    let addr = format!("http://{}", app.addr);
    let at_large = measure(&addr, load(Rpc::List, 8, run)).await;
    println!(
        "   ListUsers, 1,000,000 users, first page: {}",
        at_large.summary()
    );
    let search_large = measure(&addr, search_load(run)).await;
    println!(
        "   ListUsers, 1,000,000 users, query \"SEED1\": {}",
        search_large.summary()
    );
    let _ = app.stop().await;
    flat_row(
        suite,
        "PG ListUsers with a query,",
        &search_large,
        &search_small,
    );
    flat_row(suite, "PG ListUsers", &at_large, &at_small);
}

/// Creates `count` users one after another through `writer` while a watcher on `watcher`
/// (another replica) receives them: each delay from the create's call to the event's
/// arrival, sorted.
async fn cross_replica_delivery(writer: &str, watcher: &str, count: usize) -> Vec<Duration> {
    let connect = |addr: &str| {
        let endpoint = tonic::transport::Endpoint::from_shared(addr.to_owned()).unwrap();
        async move { authorized(endpoint.connect().await.unwrap()) }
    };
    let mut events = connect(watcher)
        .await
        .watch_users(pb::WatchUsersRequest {
            user_ids: vec![],
            include_all: true,
            start_revision: 0,
            progress_notify: false,
            prev_user: false,
            filter: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let arrivals = tokio::spawn(async move {
        let mut arrived = std::collections::HashMap::new();
        while arrived.len() < count {
            let event = events.message().await.unwrap().unwrap();
            arrived.insert(event.user.unwrap().username, Instant::now());
        }
        arrived
    });
    let mut client = connect(writer).await;
    let mut sent = Vec::with_capacity(count);
    for i in 0..count {
        let username = format!("delivered{i}");
        sent.push((username.clone(), Instant::now()));
        client
            .create_user(pb::CreateUserRequest {
                username: username.clone(),
                email: format!("{username}@example.com"),
                password: "benchmark password".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let arrived = arrivals.await.unwrap();
    let mut delays: Vec<Duration> = sent
        .into_iter()
        .map(|(username, at)| arrived[&username].duration_since(at))
        .collect();
    delays.sort();
    delays
}

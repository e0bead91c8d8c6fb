//! Figure 3: CreateUser and BatchCreateUsers.

use super::*;

/// Figure 3: CreateUser and BatchCreateUsers against the hashing limit, and BatchCreateUsers with
/// the cheapest hashing.
pub(super) async fn create_users(suite: &mut Suite) {
    println!("\n3. CreateUser and BatchCreateUsers");
    let cores = suite.cores;
    let hasher = PasswordHasher::new(Argon2Settings::default()).unwrap();
    let password = Password::parse("benchmark password".into()).unwrap();
    hasher.hash(password.clone()).await.unwrap();
    let timing = Instant::now();
    for _ in 0..10 {
        hasher.hash(password.clone()).await.unwrap();
    }
    let per_hash = timing.elapsed() / 10;
    let limit = cores as f64 / per_hash.as_secs_f64();
    println!(
        "   one default Argon2id hash (19456 KiB, t=2, p=1) takes {per_hash:?}: hashing limit = {cores} cores / that = {limit:.0}/s"
    );
    let owasp = suite.dir.path().join("owasp.db");
    let (server, addr) = in_process(settings(&owasp, Argon2Settings::default())).await;
    let creates = measure(&addr, load(Rpc::Create, cores * 8, Duration::from_secs(10))).await;
    println!("   CreateUser:       {}", creates.summary());
    let (_, batch_rate) = batch_create(&addr, 400).await;
    println!("   BatchCreateUsers: 400 users at {batch_rate:.0} users/s");
    let _ = server.stop().await;
    let r = creates.per_second() / limit;
    row(
        &mut suite.rows,
        "CreateUser / hashing limit (default Argon2)",
        format!("{:.0}/{limit:.0}/s = {r:.2}", creates.per_second()),
        ">= 0.85",
        verdict(r, 0.85, true),
    );
    let r = batch_rate / limit;
    row(
        &mut suite.rows,
        "BatchCreateUsers / hashing limit (default)",
        format!("{batch_rate:.0}/{limit:.0}/s = {r:.2}"),
        ">= 0.85",
        verdict(r, 0.85, true),
    );
    let cheap = suite.dir.path().join("cheap.db");
    let (server, addr) = in_process(settings(&cheap, CHEAPEST)).await;
    // Two streams at once, twice, each of 10,000 users (the server's default batch limit).
    let started = Instant::now();
    let mut created = 0.0;
    for _ in 0..2 {
        let (a, b) = tokio::join!(batch_create(&addr, 10_000), batch_create(&addr, 10_000));
        created += a.0 + b.0;
    }
    let cheap_rate = created / started.elapsed().as_secs_f64();
    let _ = server.stop().await;
    row(
        &mut suite.rows,
        "BatchCreateUsers, cheapest Argon2",
        format!("{cheap_rate:.0} users/s"),
        ">= 10000/s",
        verdict(cheap_rate, 10_000.0, true),
    );
    // Single writes, which group commit gathers: 64 callers, cheapest hashing, no access log,
    // the server in a process of its own (the two still share the cores).
    let single = suite.dir.path().join("single.db");
    let server = server_process(&single, &["--access-log", "false"]);
    let creates = measure(server.url(), load(Rpc::Create, 64, suite.run)).await;
    println!(
        "   CreateUser, 64 callers, cheapest Argon2, no access log: {}",
        creates.summary()
    );
    let updates = measure(server.url(), load(Rpc::Update, 64, suite.run)).await;
    println!(
        "   UpdateUser, 64 callers, no access log: {}",
        updates.summary()
    );
    drop(server);
    for (name, report) in [
        (
            "CreateUser, 64 callers, cheapest Argon2 (userctl bench)",
            &creates,
        ),
        ("UpdateUser, 64 callers (userctl bench)", &updates),
    ] {
        let rate = report.per_second();
        row(
            &mut suite.rows,
            name,
            format!("{rate:.0}/s"),
            ">= 10000/s",
            verdict(rate, 10_000.0, true),
        );
    }
}

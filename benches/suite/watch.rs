//! Figure 4: WatchUsers fan-out and the memory of idle watchers.

use super::*;

/// Figure 4: WatchUsers fan-out against the real binary: completeness, delivery latency, and the
/// memory an idle watcher costs.
pub(super) async fn watch_fan_out(suite: &mut Suite) {
    println!("\n4. WatchUsers fan-out against the real binary: 2,000 watchers, 1,000 updates");
    // Every watcher is the bench's one caller: its cap on open streams (16 by default) is
    // raised, since this figure measures fan-out, not the caps.
    let server = server_process(&suite.small, &["--max-open-streams-per-caller", "4000"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.rss_kib();
    let args = BenchArgs {
        rpc: Rpc::Watch,
        concurrency: Some(2_000),
        connections: 8,
        duration: Duration::from_secs(60),
        page_token: String::new(),
        query: String::new(),
        page_size: 10,
        filter: String::new(),
        order_by: String::new(),
        ids: 100,
        updates: 1_000,
        max_error_ratio: 0.01,
    };
    let report = bench::run(&target(server.url()), args)
        .await
        .expect("the watch load runs");
    println!("   {}", report.summary());
    let idle = hold_idle_watchers(&server, 2_000).await;
    let per_watcher = idle.saturating_sub(before) as f64 / 2_000.0;
    println!("   server RSS {before} KiB before, {idle} KiB holding 2,000 idle watchers");
    drop(server);
    let outcome = report.watch.clone().expect("a watch outcome");
    let all = outcome.complete_in_order == outcome.watchers;
    row(
        &mut suite.rows,
        "watchers with all 1,000 updates in order",
        format!("{} of {}", outcome.complete_in_order, outcome.watchers),
        "all",
        if all { "met".into() } else { "NOT met".into() },
    );
    let p99 = report.percentile(0.99);
    row(
        &mut suite.rows,
        "watch delivery latency p99",
        format!("{p99:?}"),
        "< 100ms",
        verdict(p99.as_secs_f64(), 0.1, false),
    );
    row(
        &mut suite.rows,
        "server memory per idle watcher",
        format!("{per_watcher:.1} KiB"),
        "< 24 KiB",
        verdict(per_watcher, 24.0, false),
    );
}

/// Opens `count` watchers on the server and returns its RSS while they sit idle.
async fn hold_idle_watchers(server: &ServerProcess, count: usize) -> u64 {
    let mut channels = Vec::new();
    for _ in 0..8 {
        channels.push(
            tonic::transport::Endpoint::from_shared(server.url().to_owned())
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
    }
    let mut streams = Vec::new();
    for watcher in 0..count {
        let mut client = authorized(channels[watcher % channels.len()].clone());
        let request = pb::WatchUsersRequest {
            include_all: true,
            ..Default::default()
        };
        streams.push(client.watch_users(request).await.unwrap().into_inner());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = server.rss_kib();
    drop(streams);
    rss
}

//! Figure 2: ListUsers pages at 1,000 and 1,000,000 users.

use super::*;

/// Figure 2: a ListUsers page at 1,000 and at 1,000,000 users, first and last page. Returns the
/// database of a million users for the last figures.
pub(super) async fn list_users_at_a_million(suite: &mut Suite) -> PathBuf {
    println!("\n2. ListUsers, page of 10, at 1,000 and 1,000,000 users");
    let run = suite.run;
    let large = suite.dir.path().join("large.db");
    let seeding = Instant::now();
    let last_page = seed(&large, 1_000_000).await;
    println!(
        "   seeded 1,000,000 users through storage in {:.1}s",
        seeding.elapsed().as_secs_f64()
    );
    let (server, addr) = in_process(settings(&suite.small, CHEAPEST)).await;
    let at_small = measure(&addr, load(Rpc::List, 8, run)).await;
    println!("   1,000 users, first page:     {}", at_small.summary());
    let search_small = measure(&addr, search_load(run)).await;
    println!(
        "   1,000 users, query \"SEED1\":     {}",
        search_small.summary()
    );
    let _ = server.stop().await;
    let (server, addr) = in_process(settings(&large, CHEAPEST)).await;
    let at_large = measure(&addr, load(Rpc::List, 8, run)).await;
    println!("   1,000,000 users, first page: {}", at_large.summary());
    let search_large = measure(&addr, search_load(run)).await;
    println!(
        "   1,000,000 users, query \"SEED1\": {}",
        search_large.summary()
    );
    let last = measure(
        &addr,
        BenchArgs {
            page_token: last_page,
            ..load(Rpc::List, 8, run)
        },
    )
    .await;
    println!("   1,000,000 users, last page:  {}", last.summary());
    let _ = server.stop().await;
    let (large_p50, last_p50) = (at_large.percentile(0.5), last.percentile(0.5));
    flat_row(suite, "ListUsers", &at_large, &at_small);
    flat_row(
        suite,
        "ListUsers with a query,",
        &search_large,
        &search_small,
    );
    let tail = last_p50.as_secs_f64() / large_p50.as_secs_f64();
    row(
        &mut suite.rows,
        "ListUsers p50 last / first page at 1M",
        format!("{last_p50:?}/{large_p50:?} = {tail:.2}"),
        "as fast (<= 1.1)",
        verdict(tail, 1.1, false),
    );
    large
}

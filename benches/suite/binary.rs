//! Figures 6 and 7: the real binary on a million users, start-up and memory.

use super::*;

/// Figures 6-7: the real binary on a million users: start-up to SERVING, and memory once the read
/// cache is full.
pub(super) async fn the_binary_on_a_million_users(suite: &mut Suite, large: &Path) {
    println!("\n6-7. The real binary on 1,000,000 users");
    let (server, startup) = time_to_serving(large).await;
    println!("   spawn to SERVING: {startup:?}");
    let touched = touch_users(server.url(), 200_000).await;
    println!("   read {touched} distinct users once each, so the read cache fills to its bound");
    let rss = server.rss_kib() as f64 / 1024.0;
    drop(server);
    row(
        &mut suite.rows,
        "server RSS with 1,000,000 users",
        format!("{rss:.1} MiB"),
        "< 150 MiB",
        verdict(rss, 150.0, false),
    );
    row(
        &mut suite.rows,
        "start-up to SERVING with 1,000,000 users",
        format!("{startup:?}"),
        "< 1s",
        verdict(startup.as_secs_f64(), 1.0, false),
    );
}

/// Reads `count` distinct users once each (ids gathered by paging), 32 callers at a time.
pub(super) async fn touch_users(addr: &str, count: usize) -> usize {
    let channel = tonic::transport::Endpoint::from_shared(addr.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = authorized(channel.clone());
    let mut ids = Vec::with_capacity(count);
    let mut token = String::new();
    while ids.len() < count {
        let page = client
            .list_users(pb::ListUsersRequest {
                page_size: 100,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        ids.extend(page.users.into_iter().map(|user| user.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let ids = std::sync::Arc::new(ids);
    let readers: Vec<_> = (0..32)
        .map(|reader| {
            let ids = ids.clone();
            let mut client = authorized(channel.clone());
            tokio::spawn(async move {
                for id in ids.iter().skip(reader).step_by(32) {
                    client
                        .get_user(pb::GetUserRequest {
                            user_id: id.clone(),
                        })
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for reader in readers {
        reader.await.unwrap();
    }
    ids.len()
}

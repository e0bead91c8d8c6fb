//! The access policy through the real server: the table row by row, and the stored state that
//! outranks a token.

use tonic::Code;
use user_service::domain::Role;
use user_service::pb::{
    CreateUserRequest, DeleteUserRequest, GetUserRequest, UpdateUserRequest, UserRole, UserStatus,
};

use crate::helpers::{TestApp, create, create_request, new_user};

use super::{Op, attempt, create_with_role, update};

/// The access policy, one row a line: who calls, what call, on whom, and the code they get.
/// Callers: `anonymous`, `alice` and `bob` (role USER), `mod` (MODERATOR, with a token that
/// claims USER: the stored role counts), `boss` (ADMIN). Rows run in order, so the deletions
/// come last.
const POLICY: &str = "
anonymous  get             alice  UNAUTHENTICATED
anonymous  list            -      UNAUTHENTICATED
anonymous  create          -      UNAUTHENTICATED
alice      get             alice  OK
alice      get             bob    PERMISSION_DENIED
alice      list            -      PERMISSION_DENIED
alice      watch-all       -      PERMISSION_DENIED
alice      watch           alice  OK
alice      watch           bob    PERMISSION_DENIED
alice      rename          alice  OK
alice      make-admin      alice  PERMISSION_DENIED
alice      activate        alice  PERMISSION_DENIED
alice      rename          bob    PERMISSION_DENIED
alice      sync-rename     alice  OK
alice      sync-rename     bob    PERMISSION_DENIED
alice      create          -      PERMISSION_DENIED
alice      batch-admin     -      PERMISSION_DENIED
alice      delete          bob    PERMISSION_DENIED
mod        get             bob    OK
mod        list            -      OK
mod        watch-all       -      OK
mod        suspend         bob    OK
mod        activate        bob    OK
mod        rename          bob    PERMISSION_DENIED
mod        suspend         boss   PERMISSION_DENIED
mod        delete          bob    PERMISSION_DENIED
mod        create          -      PERMISSION_DENIED
boss       make-moderator  bob    OK
boss       create          -      OK
boss       batch           -      OK
boss       delete          bob    OK
alice      delete          alice  OK
";

/// The call a row names, on `target`; `row` makes created usernames unique.
fn op(call: &str, target: &str, row: usize) -> Op {
    let fresh = || new_user(&format!("policy_row_{row}"));
    let with = |change: UpdateUserRequest| UpdateUserRequest {
        user_id: target.into(),
        ..change
    };
    match call {
        "get" => Op::Get(target.into()),
        "list" => Op::List,
        "watch-all" => Op::WatchAll,
        "watch" => Op::WatchOnly(target.into()),
        "rename" => Op::Update(with(UpdateUserRequest {
            full_name: Some(format!("Renamed {row}")),
            ..Default::default()
        })),
        "sync-rename" => Op::Sync(with(UpdateUserRequest {
            full_name: Some(format!("Synced {row}")),
            ..Default::default()
        })),
        "make-admin" | "make-moderator" => Op::Update(with(UpdateUserRequest {
            role: Some(if call == "make-admin" {
                UserRole::Admin as i32
            } else {
                UserRole::Moderator as i32
            }),
            ..Default::default()
        })),
        "suspend" | "activate" => Op::Update(with(UpdateUserRequest {
            status: Some(if call == "suspend" {
                UserStatus::Suspended as i32
            } else {
                UserStatus::Active as i32
            }),
            ..Default::default()
        })),
        "delete" => Op::Delete(target.into()),
        "create" => Op::Create(fresh()),
        "batch" => Op::Batch(vec![fresh()]),
        "batch-admin" => Op::Batch(vec![CreateUserRequest {
            role: UserRole::Admin as i32,
            ..fresh()
        }]),
        other => panic!("the policy table names an unknown call {other:?}"),
    }
}

fn code(name: &str) -> Code {
    match name {
        "OK" => Code::Ok,
        "UNAUTHENTICATED" => Code::Unauthenticated,
        "PERMISSION_DENIED" => Code::PermissionDenied,
        other => panic!("the policy table names an unknown code {other:?}"),
    }
}

#[tokio::test]
async fn the_access_policy_holds_row_by_row_through_the_real_server() {
    let app = TestApp::spawn().await;
    let mut admin = app.client().await;
    let mut ids = std::collections::HashMap::new();
    for (name, role) in [
        ("alice", UserRole::User),
        ("bob", UserRole::User),
        ("mod", UserRole::Moderator),
        ("boss", UserRole::Admin),
    ] {
        ids.insert(
            name,
            create_with_role(&mut admin, &format!("{name}_p"), role).await,
        );
    }

    for (row, line) in POLICY
        .lines()
        .filter(|line| !line.trim().is_empty())
        .enumerate()
    {
        let [caller, call, target, expected] = line.split_whitespace().collect::<Vec<_>>()[..]
        else {
            panic!("a policy row has four columns: {line:?}");
        };
        let token = (caller != "anonymous").then(|| app.token(&ids[caller], Role::User));
        let target = ids.get(target).map_or("", String::as_str);
        let mut client = app.client_with(token.as_deref()).await;
        let got = attempt(&mut client, op(call, target, row)).await;
        assert_eq!(got, code(expected), "{line}");
    }
}
#[tokio::test]
async fn a_stored_users_current_role_counts_not_the_role_in_their_token() {
    let app = TestApp::spawn().await;
    let mut admin = app.client().await;
    let plain = create(&mut admin, "plainuser").await;
    // The token claims admin, but the stored user is a plain USER.
    let mut client = app
        .client_with(Some(&app.token(&plain.id, Role::Admin)))
        .await;
    assert_eq!(attempt(&mut client, Op::List).await, Code::PermissionDenied);
}

#[tokio::test]
async fn a_suspended_or_deleted_users_token_stops_working_on_the_next_call() {
    let app = TestApp::spawn().await;
    let mut admin = app.client().await;
    let user = create(&mut admin, "soonsuspended").await;
    let mut client = app
        .client_with(Some(&app.token(&user.id, Role::User)))
        .await;
    assert_eq!(
        attempt(&mut client, Op::Get(user.id.clone())).await,
        Code::Ok
    );

    let suspend = UpdateUserRequest {
        status: Some(UserStatus::Suspended as i32),
        ..update(&user.id)
    };
    admin.update_user(suspend).await.unwrap();
    let status = client
        .get_user(GetUserRequest {
            user_id: user.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("suspended"),
        "{}",
        status.message()
    );

    admin
        .delete_user(DeleteUserRequest {
            user_id: user.id.clone(),
            etag: None,
        })
        .await
        .unwrap();
    let status = client
        .get_user(GetUserRequest {
            user_id: user.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("no longer exists"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn sign_up_when_allowed_always_makes_a_plain_user() {
    let app = TestApp::spawn_with(|settings| settings.auth.allow_signup = true).await;
    let mut anonymous = app.client_with(None).await;
    let request = CreateUserRequest {
        role: UserRole::Admin as i32,
        ..new_user("upstart")
    };
    let user = create_request(&mut anonymous, request).await;
    assert_eq!(
        user.role,
        UserRole::User as i32,
        "sign-up asked for ADMIN and got USER"
    );
    assert_eq!(
        attempt(&mut anonymous, Op::List).await,
        Code::Unauthenticated
    );
}

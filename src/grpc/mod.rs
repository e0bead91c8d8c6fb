//! The UserService RPC handlers: convert the request, call storage, convert the answer.

pub mod auth_service;
mod batch;
pub mod batch_get;
pub mod convert;
pub mod export;
pub mod filtered;
pub mod page_token;
mod recovery;
mod second_factor;
mod service_keys;
mod signing_keys;
pub mod signup;
mod sync;
mod watch;

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::hasher::PasswordHasher;
use crate::auth::policy::{Access, Changes, admit_new_user, authorize};
use crate::caller::{Authenticated, Caller};
use crate::domain::{
    FieldViolation, PageSize, PasswordStrength, Role, SearchQuery, User, UserStatus,
};
use crate::error::ServiceError;
use crate::pb::{self, user_service_server::UserService};
use crate::shutdown::Shutdown;
use crate::storage::{Cursor, ListQuery, Search, Store, Updated, UserKey};
use crate::streams::{StreamControls, StreamKind};
use convert::{parse_create, parse_etag, parse_filter, parse_lookup_id, parse_update, user_to_pb};
use signup::SignupLimit;

use crate::contract::WATCH_START_REVISION;

pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::UserEvent, Status>> + Send>>;

#[derive(Clone)]
pub struct UserServiceImpl {
    store: Store,
    hasher: PasswordHasher,
    shutdown: Shutdown,
    max_batch_items: usize,
    max_message_bytes: usize,
    /// Set when anonymous sign-up is on.
    signup: Option<Arc<SignupLimit>>,
    streams: StreamControls,
    /// What a new password must pass.
    strength: PasswordStrength,
    /// Signs page and resume tokens.
    page_tokens: page_token::TokenSeal,
}

/// The caller the auth middleware attached; anonymous when there is none.
fn caller_of<T>(request: &Request<T>) -> Caller {
    Authenticated::caller_of(request.extensions()).clone()
}

/// Bytes of a ListUsers answer kept for the page token and the count.
const LIST_HEADROOM: usize = 1024;

/// A page's users as the answer carries them, in order, each with its position in the
/// listing; where the next user would take the answer past `budget` bytes, the page stops
/// early (a valid listing never fails on size) and the position of the last user kept comes
/// back, for the next page to start after.
fn fit_page<P>(
    budget: usize,
    page: impl IntoIterator<Item = (P, User)>,
) -> (Vec<pb::User>, Option<P>) {
    let mut users = Vec::new();
    let mut bytes = 0;
    let mut last_kept = None;
    for (position, user) in page {
        let user = user_to_pb(&user);
        let size = prost::Message::encoded_len(&user) + 8;
        if !users.is_empty() && bytes + size > budget {
            return (users, last_kept);
        }
        bytes += size;
        users.push(user);
        last_kept = Some(position);
    }
    (users, None)
}

/// What the caller's token needs to go on working, for streams that outlive the call's start.
fn token_basis<T>(request: &Request<T>) -> Option<crate::storage::sessions::TokenBasis> {
    Authenticated::of(request.extensions())?.basis
}

/// When the caller's token stops working, for streams that outlive the call's start.
fn token_expiry<T>(request: &Request<T>) -> Option<tokio::time::Instant> {
    Authenticated::of(request.extensions())?.expiry?.instant()
}

/// How much one call may carry.
#[derive(Debug, Clone, Copy)]
pub struct MessageLimits {
    /// Items in one BatchCreateUsers or BatchGetUsers call.
    pub max_batch_items: usize,
    /// Bytes of one message either way.
    pub max_message_bytes: usize,
}

impl UserServiceImpl {
    pub fn new(
        store: Store,
        hasher: PasswordHasher,
        shutdown: Shutdown,
        limits: MessageLimits,
        signup: Option<Arc<SignupLimit>>,
        streams: StreamControls,
        page_tokens: page_token::TokenSeal,
    ) -> Self {
        Self {
            store,
            hasher,
            shutdown,
            max_batch_items: limits.max_batch_items,
            max_message_bytes: limits.max_message_bytes,
            signup,
            streams,
            strength: PasswordStrength::new(PasswordStrength::DEFAULT_SCORE),
            page_tokens,
        }
    }

    /// What a new password must pass (the default rule unless set).
    pub fn with_password_strength(mut self, strength: PasswordStrength) -> Self {
        self.strength = strength;
        self
    }

    fn authorize(&self, caller: &Caller, access: &Access<'_>) -> Result<(), ServiceError> {
        Ok(authorize(caller, access, self.signup.is_some())?)
    }

    /// Validates, authorizes, applies and returns the committed update: UpdateUser and
    /// SyncUsers share it.
    async fn apply_update(
        &self,
        caller: &Caller,
        request: pb::UpdateUserRequest,
    ) -> Result<Updated, ServiceError> {
        let raw_id = request.user_id.clone();
        let (id, mut patch) = parse_update(request)?;
        patch.actor = caller.actor();
        // Only a moderator acting on someone else is judged by the target's role. The write is
        // conditioned on the etag read for that decision, so it fails if the role changed
        // meanwhile; a client etag that differs from it is stale, whatever it says.
        let target_role = if caller.role() == Some(Role::Moderator) && caller.user_id() != Some(id)
        {
            let target = self
                .store
                .get(id)
                .await
                .map_err(|err| ServiceError::from(err).naming(&raw_id))?;
            if let Some(expected) = patch.etag
                && expected != target.etag()
            {
                return Err(ServiceError::EtagMismatch {
                    expected: expected.revision(),
                    current: target.revision,
                });
            }
            patch.etag = Some(target.etag());
            Some(target.role)
        } else {
            None
        };
        self.authorize(
            caller,
            &Access::Update {
                target: id,
                target_role,
                changes: Changes::of(&patch),
            },
        )?;
        self.store
            .update(id, patch)
            .await
            .map_err(|err| ServiceError::from(err).naming(&raw_id))
    }
}

impl UserServiceImpl {
    /// ListUsers with a query: users whose username or email starts with it.
    async fn search(
        &self,
        request: pb::ListUsersRequest,
        query: SearchQuery,
        filters: page_token::Filters,
        limit: usize,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let prefix = query.prefix().to_owned();
        let after = match request.page_token.as_str() {
            "" => None,
            token => Some(
                page_token::decode_search(&self.page_tokens, token, filters, &prefix)
                    .map_err(invalid)?,
            ),
        };
        let page = self
            .store
            .search(Search {
                prefix: prefix.clone(),
                status: filters.status,
                role: filters.role,
                after,
                limit,
            })
            .await
            .map_err(ServiceError::from)?;
        let budget = self.max_message_bytes.saturating_sub(LIST_HEADROOM);
        let (users, cut) = fit_page(budget, page.users);
        let resume_after = match cut {
            Some(key) => Some(key),
            None if page.more => page.resume_after,
            None => None,
        };
        let next_page_token = resume_after
            .map(|key| page_token::encode_search(&self.page_tokens, &key, filters, &prefix))
            .unwrap_or_default();
        Ok(Response::new(pb::ListUsersResponse {
            users,
            next_page_token,
            total_count: i32::try_from(page.total).unwrap_or(i32::MAX),
        }))
    }
}

fn invalid(violation: FieldViolation) -> ServiceError {
    ServiceError::Invalid(violation.into())
}

#[tonic::async_trait]
impl UserService for UserServiceImpl {
    #[tracing::instrument(level = "debug", skip_all, fields(username = %request.get_ref().username))]
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        let caller = caller_of(&request);
        self.authorize(&caller, &Access::Create)?;
        if caller == Caller::Anonymous
            && let Some(signup) = &self.signup
        {
            signup.check(request.extensions())?;
        }
        let mut draft =
            parse_create(request.into_inner(), self.strength).map_err(ServiceError::from)?;
        admit_new_user(&caller, &mut draft).map_err(ServiceError::from)?;
        let hash = self
            .hasher
            .hash_credential(draft.credential.clone())
            .await
            .map_err(ServiceError::from)?;
        let event = self
            .store
            .create(draft.with_hash(hash, caller.actor()))
            .await
            .map_err(ServiceError::from)?;
        tracing::info!(user_id = %event.user.id, "user created");
        Ok(Response::new(pb::CreateUserResponse {
            user: Some(user_to_pb(&event.user)),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user_id = %request.get_ref().user_id))]
    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        let raw_id = &request.get_ref().user_id;
        let id = parse_lookup_id(raw_id).map_err(ServiceError::from)?;
        self.authorize(&caller_of(&request), &Access::Read { target: id })?;
        let user = self
            .store
            .get(id)
            .await
            .map_err(|err| ServiceError::from(err).naming(raw_id))?;
        Ok(Response::new(pb::GetUserResponse {
            user: Some(user_to_pb(&user)),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn batch_get_users(
        &self,
        request: Request<pb::BatchGetUsersRequest>,
    ) -> Result<Response<pb::BatchGetUsersResponse>, Status> {
        let caller = caller_of(&request);
        let response = batch_get::run(self, &caller, request.into_inner()).await?;
        Ok(Response::new(response))
    }

    type ExportUsersStream = export::ExportStream;

    #[tracing::instrument(level = "debug", skip_all, fields(resumed = !request.get_ref().resume_token.is_empty()))]
    async fn export_users(
        &self,
        request: Request<pb::ExportUsersRequest>,
    ) -> Result<Response<Self::ExportUsersStream>, Status> {
        let caller = caller_of(&request);
        let (place, _) = self.streams.enter(&caller, &request, StreamKind::Export)?;
        let stream = export::start(self, &caller, place, request.into_inner()).await?;
        Ok(Response::new(stream))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn lookup_user(
        &self,
        request: Request<pb::LookupUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        let caller = caller_of(&request);
        let (key, named) =
            convert::parse_lookup(request.into_inner()).map_err(ServiceError::from)?;
        // A user may look up only themselves, decided on the key alone, so that the answer
        // never tells them whether someone else's name exists.
        let own = match caller.user_id() {
            Some(id) => {
                let me = self.store.get(id).await.map_err(ServiceError::from)?;
                match &key {
                    UserKey::Username(username) => username.key() == me.username.key(),
                    UserKey::Email(email) => email.key() == me.email.key(),
                }
            }
            None => false,
        };
        self.authorize(&caller, &Access::Lookup { own })?;
        let user = self
            .store
            .find(key)
            .await
            .map_err(ServiceError::from)?
            .ok_or(ServiceError::NotFound(named))?;
        Ok(Response::new(pb::GetUserResponse {
            user: Some(user_to_pb(&user)),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user_id = %request.get_ref().user_id))]
    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::UpdateUserResponse>, Status> {
        let caller = caller_of(&request);
        let updated = self.apply_update(&caller, request.into_inner()).await?;
        Ok(Response::new(pb::UpdateUserResponse {
            user: Some(user_to_pb(&updated.into_user())),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user_id = %request.get_ref().user_id))]
    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let caller = caller_of(&request);
        let request = request.into_inner();
        let id = parse_lookup_id(&request.user_id).map_err(ServiceError::from)?;
        self.authorize(&caller, &Access::Delete { target: id })?;
        let etag = parse_etag(request.etag.as_deref()).map_err(ServiceError::from)?;
        let event = self
            .store
            .delete(id, etag, caller.actor())
            .await
            .map_err(|err| ServiceError::from(err).naming(&request.user_id))?;
        Ok(Response::new(pb::DeleteUserResponse {
            success: true,
            message: format!("user {} deleted", event.user.id),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(page_size = request.get_ref().page_size))]
    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        self.authorize(&caller_of(&request), &Access::List)?;
        let request = request.into_inner();
        let limit = PageSize::parse(request.page_size).map_err(invalid)?.get();
        let query = SearchQuery::parse(&request.query).map_err(invalid)?;
        let filters = page_token::Filters {
            status: parse_filter("status_filter", request.status_filter, UserStatus::parse)
                .map_err(invalid)?,
            role: parse_filter("role_filter", request.role_filter, Role::parse).map_err(invalid)?,
        };
        let filter = filtered::parse_filter(&request.filter).map_err(invalid)?;
        let order = filtered::parse_order_by(&request.order_by).map_err(invalid)?;
        if filter.is_some() || order.is_some() {
            if query.is_some() {
                return Err(invalid(FieldViolation::new(
                    "query",
                    "cannot be combined with filter or order_by: write username = \"ann*\" OR email = \"ann*\" in filter instead",
                ))
                .into());
            }
            return Ok(self
                .list_filtered(&request, filters, limit, (filter, order))
                .await?);
        }
        if let Some(query) = query {
            return self.search(request, query, filters, limit).await;
        }
        let after = match request.page_token.as_str() {
            "" => None,
            token => Some(page_token::decode(&self.page_tokens, token, filters).map_err(invalid)?),
        };
        let page = self
            .store
            .list(ListQuery {
                status: filters.status,
                role: filters.role,
                after,
                limit,
            })
            .await
            .map_err(ServiceError::from)?;
        let budget = self.max_message_bytes.saturating_sub(LIST_HEADROOM);
        let positioned = page.users.into_iter().map(|user| {
            let cursor = Cursor {
                created_at_ns: user.created_at_ns,
                id: user.id,
            };
            (cursor, user)
        });
        let (users, cut) = fit_page(budget, positioned);
        Ok(Response::new(pb::ListUsersResponse {
            users,
            next_page_token: cut
                .or(page.next)
                .map(|cursor| page_token::encode(&self.page_tokens, cursor, filters))
                .unwrap_or_default(),
            total_count: i32::try_from(page.total).unwrap_or(i32::MAX),
        }))
    }

    type WatchUsersStream = EventStream;

    #[tracing::instrument(level = "debug", skip_all, fields(include_all = request.get_ref().include_all, start_revision = request.get_ref().start_revision))]
    async fn watch_users(
        &self,
        request: Request<pb::WatchUsersRequest>,
    ) -> Result<Response<Self::WatchUsersStream>, Status> {
        let caller = caller_of(&request);
        let token = (token_expiry(&request), token_basis(&request));
        let (place, _) = self.streams.enter(&caller, &request, StreamKind::Watch)?;
        let (stream, start) =
            watch::start(self, &caller, token, place, request.into_inner()).await?;
        let mut response = Response::new(stream);
        // Every event from this revision on will be delivered: a client that saw none can
        // resume from here after a disconnect without missing any.
        response
            .metadata_mut()
            .insert(WATCH_START_REVISION, start.into());
        Ok(response)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn batch_create_users(
        &self,
        request: Request<Streaming<pb::CreateUserRequest>>,
    ) -> Result<Response<pb::BatchCreateUsersResponse>, Status> {
        let caller = caller_of(&request);
        self.authorize(&caller, &Access::BatchCreate)?;
        let (_place, _) = self.streams.enter(&caller, &request, StreamKind::Batch)?;
        let response = batch::run(self, request.into_inner(), &caller).await?;
        Ok(Response::new(response))
    }

    type SyncUsersStream = EventStream;

    #[tracing::instrument(level = "debug", skip_all)]
    async fn sync_users(
        &self,
        request: Request<Streaming<pb::UpdateUserRequest>>,
    ) -> Result<Response<Self::SyncUsersStream>, Status> {
        let caller = caller_of(&request);
        let expires = token_expiry(&request);
        let basis = token_basis(&request);
        let (place, key) = self.streams.enter(&caller, &request, StreamKind::Sync)?;
        Ok(Response::new(sync::start(
            self.clone(),
            sync::Opened {
                caller,
                expires,
                basis,
                place,
                key,
            },
            request.into_inner(),
        )))
    }
}

//! UserService.ExportUsers: every user as of one revision, in id order, in parts the client
//! can resume from after a broken stream.

use std::pin::Pin;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use uuid::Uuid;

use super::UserServiceImpl;
use super::convert::user_to_pb;
use super::page_token::TokenSeal;
use crate::auth::policy::Access;
use crate::caller::Caller;
use crate::domain::{FieldViolation, UserId, ValidationError};
use crate::error::ServiceError;
use crate::pb;
use crate::shutdown::Shutdown;
use crate::storage::export::{CHUNK, Export, Exported};
use crate::streams::StreamPlace;

pub type ExportStream = Pin<Box<dyn Stream<Item = Result<pb::ExportUsersResponse, Status>> + Send>>;

/// Bytes of a part kept for everything but its users.
const HEADROOM: usize = 1024;

/// Where a resumed export goes on: the first part's revision, and the last user sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    pub revision: i64,
    pub after: UserId,
}

const TOKEN_VERSION: &str = "e1";

pub fn encode_token(seal: &TokenSeal, resume: Resume) -> String {
    seal.seal(&format!(
        "{TOKEN_VERSION}:{}:{}",
        resume.revision,
        resume.after.as_uuid().simple()
    ))
}

pub fn decode_token(seal: &TokenSeal, token: &str) -> Result<Resume, FieldViolation> {
    let malformed = || {
        FieldViolation::new(
            "resume_token",
            "must be a resume_token returned by ExportUsers, unchanged",
        )
    };
    let text = seal.open(token).ok_or_else(malformed)?;
    let parts: Vec<&str> = text.split(':').collect();
    let [TOKEN_VERSION, revision, id] = parts.as_slice() else {
        return Err(malformed());
    };
    let revision: i64 = revision.parse().map_err(|_| malformed())?;
    let after = Uuid::try_parse(id).map_err(|_| malformed())?;
    if revision < 0 {
        return Err(malformed());
    }
    Ok(Resume {
        revision,
        after: UserId::from_uuid(after),
    })
}

pub(super) async fn start(
    service: &UserServiceImpl,
    caller: &Caller,
    place: StreamPlace,
    request: pb::ExportUsersRequest,
) -> Result<ExportStream, ServiceError> {
    service.authorize(caller, &Access::Export)?;
    let resume = match request.resume_token.as_str() {
        "" => None,
        token => Some(decode_token(&service.page_tokens, token).map_err(ValidationError::from)?),
    };
    if let Some(resume) = resume {
        // WatchUsers goes on from revision + 1: the log must still hold it.
        let oldest = service.store.oldest_revision();
        if resume.revision + 1 < oldest {
            return Err(ServiceError::FailedPrecondition(format!(
                "resume_token: the export's revision {} is older than the event log keeps (oldest {oldest}), so WatchUsers could not continue it without a gap: export again from the start",
                resume.revision
            )));
        }
    }
    let export = service
        .store
        .export(resume.map(|resume| resume.after))
        .await?;
    let (client, receiver) = mpsc::channel(1);
    let sender = Sender {
        revision: resume.map_or(export.revision, |resume| resume.revision),
        total: export.total,
        hashes: request.include_password_hashes,
        budget: service.max_message_bytes.saturating_sub(HEADROOM),
        seal: service.page_tokens.clone(),
        client,
        _place: place,
    };
    service
        .shutdown
        .spawn(sender.run(export, service.shutdown.clone()));
    Ok(Box::pin(ReceiverStream::new(receiver)))
}

/// Turns an export's chunks into parts for one client.
struct Sender {
    revision: i64,
    total: u64,
    hashes: bool,
    /// Bytes of users one part may hold.
    budget: usize,
    seal: TokenSeal,
    client: mpsc::Sender<Result<pb::ExportUsersResponse, Status>>,
    /// The stream's place under the caps, held until it ends.
    _place: StreamPlace,
}

impl Sender {
    async fn run(self, mut export: Export, mut shutdown: Shutdown) {
        let mut last: Option<UserId> = None;
        loop {
            let chunk = tokio::select! {
                chunk = export.parts.recv() => chunk,
                () = shutdown.triggered() => {
                    let resume = last.map_or_else(String::new, |after| self.token(after));
                    let status = ServiceError::ShuttingDown(format!(
                        ": resume the export with resume_token {resume:?}"
                    ));
                    let _ = self.client.send(Err(status.into())).await;
                    return;
                }
            };
            let users = match chunk {
                None => break,
                Some(Ok(users)) => users,
                Some(Err(err)) => {
                    let _ = self.client.send(Err(ServiceError::from(err).into())).await;
                    return;
                }
            };
            for part in self.parts(users) {
                last = part.last_id;
                if self.client.send(Ok(part.message)).await.is_err() {
                    return;
                }
            }
        }
        let done = pb::ExportUsersResponse {
            revision: self.revision,
            resume_token: last.map_or_else(String::new, |after| self.token(after)),
            total_users: i64::try_from(self.total).unwrap_or(i64::MAX),
            done: true,
            users: Vec::new(),
        };
        let _ = self.client.send(Ok(done)).await;
    }

    fn token(&self, after: UserId) -> String {
        encode_token(
            &self.seal,
            Resume {
                revision: self.revision,
                after,
            },
        )
    }

    /// A chunk's users in parts of at most `CHUNK` users and `budget` bytes.
    fn parts(&self, users: Vec<Exported>) -> Vec<Part> {
        let mut parts = Vec::new();
        let mut current: Vec<pb::ExportedUser> = Vec::new();
        let mut bytes = 0;
        let mut last_id = None;
        for exported in users {
            let message = pb::ExportedUser {
                user: Some(user_to_pb(&exported.user)),
                password_hash: if self.hashes {
                    exported.password_hash.as_phc().to_owned()
                } else {
                    String::new()
                },
            };
            let size = prost::Message::encoded_len(&message) + 8;
            if !current.is_empty() && (bytes + size > self.budget || current.len() == CHUNK) {
                parts.push(self.part(std::mem::take(&mut current), last_id));
                bytes = 0;
            }
            bytes += size;
            current.push(message);
            last_id = Some(exported.user.id);
        }
        if !current.is_empty() {
            parts.push(self.part(current, last_id));
        }
        parts
    }

    fn part(&self, users: Vec<pb::ExportedUser>, last_id: Option<UserId>) -> Part {
        Part {
            message: pb::ExportUsersResponse {
                users,
                revision: self.revision,
                resume_token: last_id.map_or_else(String::new, |after| self.token(after)),
                total_users: i64::try_from(self.total).unwrap_or(i64::MAX),
                done: false,
            },
            last_id,
        }
    }
}

struct Part {
    message: pb::ExportUsersResponse,
    last_id: Option<UserId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal() -> TokenSeal {
        TokenSeal::new(&[7; 32])
    }

    #[test]
    fn a_token_decodes_to_where_it_was_made() {
        let resume = Resume {
            revision: 42,
            after: UserId::new(),
        };
        assert_eq!(
            decode_token(&seal(), &encode_token(&seal(), resume)),
            Ok(resume)
        );
        let other = TokenSeal::new(&[8; 32]);
        assert!(
            decode_token(&other, &encode_token(&seal(), resume)).is_err(),
            "another deployment's token"
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_is_refused_as_a_token(token in "\\PC{0,120}") {
            proptest::prop_assert!(decode_token(&seal(), &token).is_err());
        }
    }

    #[test]
    fn negative_revisions_and_other_versions_are_refused() {
        let id = UserId::new().as_uuid().simple();
        for text in [
            format!("e1:-1:{id}"),
            format!("e2:1:{id}"),
            format!("e1:1:{id}:x"),
        ] {
            let token = seal().seal(&text);
            assert!(decode_token(&seal(), &token).is_err(), "{token}");
        }
    }
}

//! Who may do what. The rules, as docs/security.md states them:
//!
//! | caller    | may                                                                  |
//! |-----------|----------------------------------------------------------------------|
//! | admin     | everything, and alone: create users with imported password hashes    |
//! |           | clear an account's login failures and manage service keys            |
//! | moderator | read, list, look up and watch everyone; suspend or reactivate users    |
//! |           | whose role is USER; read, update (not role or status) and delete     |
//! |           | themselves; change their own password, end their own sessions        |
//! | user      | read, look up, update (not role or status) and delete themselves;    |
//! |           | change their own password, end their own sessions; watch only their  |
//! |           | own id                                                               |
//! | anonymous | CreateUser when sign-up is on (the role is always USER); nothing else |
//!
//! SyncUsers messages are judged like the UpdateUser each carries.

use crate::caller::Caller;
use crate::domain::{Credential, Role, UserDraft, UserId, UserPatch, UserStatus};
use crate::error::ServiceError;

/// What an update would change, as far as the policy cares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    pub role: bool,
    pub status: Option<UserStatus>,
    /// Username, email, full name or metadata.
    pub profile: bool,
}

impl Changes {
    pub fn of(patch: &UserPatch) -> Self {
        Self {
            role: patch.role.is_some(),
            status: patch.status,
            profile: patch.username.is_some()
                || patch.email.is_some()
                || patch.full_name.is_some()
                || !patch.metadata.is_empty(),
        }
    }
}

/// One request, described for the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access<'a> {
    Create,
    BatchCreate,
    Read {
        target: UserId,
    },
    List,
    /// `None` watches everyone.
    Watch {
        only: Option<&'a [UserId]>,
    },
    /// `target_role` is known only where the decision needs it (a moderator acting on
    /// someone else).
    Update {
        target: UserId,
        target_role: Option<Role>,
        changes: Changes,
    },
    Delete {
        target: UserId,
    },
    /// A lookup by username or email; `own` when it names the caller.
    Lookup {
        own: bool,
    },
    /// Ending every session of a user.
    EndSessions {
        target: UserId,
    },
    /// Changing a user's password: a user's own needs their current password (which the
    /// handler checks); anyone else's, an admin.
    SetPassword {
        target: UserId,
    },
    /// Creating users with password hashes made elsewhere (CreateUser or BatchCreateUsers
    /// with `password_hash`): admins only, since a hash can be a known password's.
    ImportPasswordHash,
    /// Forgiving the wrong passwords counted against an account: admins only.
    ClearLoginFailures,
    /// Creating, listing and revoking service keys: admins only.
    ManageKeys,
    /// Creating a user with a status other than ACTIVE (an import keeping an export's
    /// statuses): admins only.
    CreateWithStatus,
    /// Exporting every user, password hashes included when asked: admins only.
    Export,
    /// Asking for a code that proves a user's email: their own, or anyone's for an admin.
    VerifyEmail {
        target: UserId,
    },
    /// Turning off a user's second factor: their own (with a code, which the handler checks),
    /// or anyone's for an admin.
    DisableSecondFactor {
        target: UserId,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// UNAUTHENTICATED: the call needs a token.
    #[error("this call needs a bearer token in the authorization metadata")]
    NeedsToken,
    /// PERMISSION_DENIED.
    #[error("{role} may not {what}")]
    Forbidden {
        role: &'static str,
        what: &'static str,
    },
}

fn forbidden(role: Role, what: &'static str) -> Result<(), Denied> {
    Err(Denied::Forbidden {
        role: role.name(),
        what,
    })
}

/// Decides one request. `signup` is whether anonymous sign-up is on.
pub fn authorize(caller: &Caller, access: &Access<'_>, signup: bool) -> Result<(), Denied> {
    let Some(role) = caller.role() else {
        return match access {
            Access::Create if signup => Ok(()),
            _ => Err(Denied::NeedsToken),
        };
    };
    let me = caller.user_id();
    let is_me = |target: &UserId| me == Some(*target);
    match (role, access) {
        (Role::Admin, _) => Ok(()),

        (
            Role::Moderator,
            Access::Read { .. } | Access::List | Access::Watch { .. } | Access::Lookup { .. },
        ) => Ok(()),
        (Role::User, Access::Lookup { own: true }) => Ok(()),
        (
            Role::Moderator,
            Access::Update {
                target,
                target_role,
                changes,
            },
        ) if !is_me(target) => {
            let only_status = !changes.role && !changes.profile;
            let suspends_or_reactivates = matches!(
                changes.status,
                Some(UserStatus::Suspended | UserStatus::Active)
            );
            if *target_role == Some(Role::User) && only_status && suspends_or_reactivates {
                Ok(())
            } else {
                forbidden(
                    role,
                    "change other users beyond suspending or reactivating a USER",
                )
            }
        }

        (
            Role::Moderator | Role::User,
            Access::Read { target }
            | Access::Delete { target }
            | Access::EndSessions { target }
            | Access::SetPassword { target }
            | Access::DisableSecondFactor { target }
            | Access::VerifyEmail { target },
        ) if is_me(target) => Ok(()),
        (
            Role::Moderator | Role::User,
            Access::Update {
                target, changes, ..
            },
        ) if is_me(target) => {
            if changes.role {
                forbidden(role, "change their own role")
            } else if changes.status.is_some() {
                forbidden(role, "change their own status")
            } else {
                Ok(())
            }
        }
        (Role::User, Access::Watch { only: Some(ids) })
            if !ids.is_empty() && ids.iter().all(is_me) =>
        {
            Ok(())
        }

        (_, Access::Create) => forbidden(role, "create users"),
        (_, Access::BatchCreate) => forbidden(role, "batch-create users"),
        (_, Access::List) => forbidden(role, "list users"),
        (_, Access::Watch { .. }) => forbidden(role, "watch users other than themselves"),
        (_, Access::Read { .. }) => forbidden(role, "read other users"),
        (_, Access::Update { .. }) => forbidden(role, "update other users"),
        (_, Access::Delete { .. }) => forbidden(role, "delete other users"),
        (_, Access::Lookup { .. }) => forbidden(role, "look up other users"),
        (_, Access::ImportPasswordHash) => forbidden(role, "import password hashes"),
        (_, Access::EndSessions { .. }) => forbidden(role, "end other users' sessions"),
        (_, Access::SetPassword { .. }) => forbidden(role, "set other users' passwords"),
        (_, Access::ClearLoginFailures) => forbidden(role, "clear login failures"),
        (_, Access::ManageKeys) => forbidden(role, "manage service keys"),
        (_, Access::CreateWithStatus) => {
            forbidden(role, "create users with a status other than ACTIVE")
        }
        (_, Access::Export) => forbidden(role, "export users"),
        (_, Access::VerifyEmail { .. }) => forbidden(role, "verify other users' emails"),
        (_, Access::DisableSecondFactor { .. }) => {
            forbidden(role, "turn off other users' second factors")
        }
    }
}

/// What a new user may carry, decided for every RPC that creates users (CreateUser, and each
/// item of BatchCreateUsers) once the call itself is allowed: a password hash made elsewhere
/// only from a caller who may import hashes, and a role only from a caller with a token (an
/// anonymous sign-up gets USER, whatever it asked for).
pub fn admit_new_user(caller: &Caller, draft: &mut UserDraft) -> Result<(), Denied> {
    if matches!(draft.credential, Credential::Imported(_)) {
        authorize(caller, &Access::ImportPasswordHash, false)?;
    }
    if draft.status != UserStatus::Active {
        authorize(caller, &Access::CreateWithStatus, false)?;
    }
    if *caller == Caller::Anonymous {
        draft.role = Role::User;
    }
    Ok(())
}

impl From<Denied> for ServiceError {
    fn from(denied: Denied) -> Self {
        match denied {
            Denied::NeedsToken => ServiceError::Unauthenticated(denied.to_string()),
            Denied::Forbidden { .. } => ServiceError::PermissionDenied(denied.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role, id: UserId) -> Caller {
        Caller::User { id, role }
    }

    fn status_only(status: UserStatus) -> Changes {
        Changes {
            status: Some(status),
            ..Changes::default()
        }
    }

    const PROFILE: Changes = Changes {
        role: false,
        status: None,
        profile: true,
    };
    const ROLE: Changes = Changes {
        role: true,
        status: None,
        profile: false,
    };

    /// Every row of the policy for a stored user: (their role, access, allowed?). Anonymous
    /// callers have their own test below.
    #[test]
    fn the_policy_table_row_by_row() {
        let me = UserId::new();
        let other = UserId::new();
        let mine = [me];
        let theirs = [other];
        let update = |target, target_role, changes| Access::Update {
            target,
            target_role: Some(target_role),
            changes,
        };
        let rows: Vec<(Role, Access<'_>, bool)> = vec![
            (Role::Admin, Access::Create, true),
            (Role::Admin, Access::BatchCreate, true),
            (Role::Admin, Access::ImportPasswordHash, true),
            (Role::Moderator, Access::ImportPasswordHash, false),
            (Role::User, Access::ImportPasswordHash, false),
            (Role::Admin, Access::List, true),
            (Role::Admin, Access::Watch { only: None }, true),
            (Role::Admin, update(other, Role::Admin, ROLE), true),
            (Role::Admin, Access::Delete { target: other }, true),
            (Role::Moderator, Access::Read { target: other }, true),
            (Role::Moderator, Access::List, true),
            (Role::Moderator, Access::Watch { only: None }, true),
            (
                Role::Moderator,
                update(other, Role::User, status_only(UserStatus::Suspended)),
                true,
            ),
            (
                Role::Moderator,
                update(other, Role::User, status_only(UserStatus::Active)),
                true,
            ),
            (
                Role::Moderator,
                update(other, Role::User, status_only(UserStatus::Inactive)),
                false,
            ),
            (
                Role::Moderator,
                update(other, Role::Admin, status_only(UserStatus::Suspended)),
                false,
            ),
            (
                Role::Moderator,
                update(other, Role::Moderator, status_only(UserStatus::Suspended)),
                false,
            ),
            (Role::Moderator, update(other, Role::User, PROFILE), false),
            (Role::Moderator, update(other, Role::User, ROLE), false),
            (Role::Moderator, update(me, Role::Moderator, PROFILE), true),
            (Role::Moderator, update(me, Role::Moderator, ROLE), false),
            (Role::Moderator, Access::Delete { target: other }, false),
            (Role::Moderator, Access::Create, false),
            (Role::Moderator, Access::BatchCreate, false),
            (Role::User, Access::Read { target: me }, true),
            (Role::User, Access::Read { target: other }, false),
            (Role::User, update(me, Role::User, PROFILE), true),
            (Role::User, update(me, Role::User, ROLE), false),
            (
                Role::User,
                update(me, Role::User, status_only(UserStatus::Active)),
                false,
            ),
            (Role::User, update(other, Role::User, PROFILE), false),
            (Role::User, Access::Delete { target: me }, true),
            (Role::User, Access::Delete { target: other }, false),
            (Role::User, Access::Watch { only: Some(&mine) }, true),
            (
                Role::User,
                Access::Watch {
                    only: Some(&theirs),
                },
                false,
            ),
            (Role::User, Access::Watch { only: None }, false),
            (Role::User, Access::List, false),
            (Role::User, Access::Create, false),
            (Role::User, Access::BatchCreate, false),
            (Role::User, Access::Lookup { own: true }, true),
            (Role::User, Access::Lookup { own: false }, false),
            (Role::Moderator, Access::Lookup { own: false }, true),
            (Role::Admin, Access::Lookup { own: false }, true),
            (Role::Admin, Access::EndSessions { target: other }, true),
            (Role::Admin, Access::SetPassword { target: other }, true),
            (Role::Moderator, Access::EndSessions { target: me }, true),
            (
                Role::Moderator,
                Access::EndSessions { target: other },
                false,
            ),
            (Role::Moderator, Access::SetPassword { target: me }, true),
            (
                Role::Moderator,
                Access::SetPassword { target: other },
                false,
            ),
            (Role::User, Access::EndSessions { target: me }, true),
            (Role::User, Access::EndSessions { target: other }, false),
            (Role::User, Access::SetPassword { target: me }, true),
            (Role::User, Access::SetPassword { target: other }, false),
            (Role::Admin, Access::ClearLoginFailures, true),
            (Role::Moderator, Access::ClearLoginFailures, false),
            (Role::User, Access::ClearLoginFailures, false),
            (Role::Admin, Access::Export, true),
            (Role::Moderator, Access::Export, false),
            (Role::User, Access::Export, false),
            (Role::Admin, Access::CreateWithStatus, true),
            (Role::Moderator, Access::CreateWithStatus, false),
            (Role::User, Access::CreateWithStatus, false),
            (Role::Admin, Access::ManageKeys, true),
            (Role::Moderator, Access::ManageKeys, false),
            (Role::User, Access::ManageKeys, false),
            (Role::User, Access::DisableSecondFactor { target: me }, true),
            (
                Role::User,
                Access::DisableSecondFactor { target: other },
                false,
            ),
            (
                Role::Moderator,
                Access::DisableSecondFactor { target: other },
                false,
            ),
            (
                Role::Admin,
                Access::DisableSecondFactor { target: other },
                true,
            ),
            (Role::User, Access::VerifyEmail { target: me }, true),
            (Role::User, Access::VerifyEmail { target: other }, false),
            (
                Role::Moderator,
                Access::VerifyEmail { target: other },
                false,
            ),
            (Role::Admin, Access::VerifyEmail { target: other }, true),
        ];
        for (role, access, allowed) in rows {
            let who = caller(role, me);
            let decision = authorize(&who, &access, false);
            assert_eq!(
                decision.is_ok(),
                allowed,
                "{role:?} {access:?}: {decision:?}"
            );
        }
    }

    #[test]
    fn anonymous_callers_may_only_sign_up_and_only_when_sign_up_is_on() {
        assert_eq!(authorize(&Caller::Anonymous, &Access::Create, true), Ok(()));
        assert_eq!(
            authorize(&Caller::Anonymous, &Access::Create, false),
            Err(Denied::NeedsToken)
        );
        assert_eq!(
            authorize(&Caller::Anonymous, &Access::List, true),
            Err(Denied::NeedsToken)
        );
        assert_eq!(
            authorize(&Caller::Anonymous, &Access::ImportPasswordHash, true),
            Err(Denied::NeedsToken),
            "sign-up takes passwords, never hashes"
        );
    }

    #[test]
    fn a_service_token_acts_with_its_role_and_owns_no_account() {
        let service = Caller::Service {
            name: "billing".into(),
            role: Role::User,
        };
        let target = UserId::new();
        assert!(authorize(&service, &Access::Read { target }, false).is_err());
        let admin = Caller::Service {
            name: "ops".into(),
            role: Role::Admin,
        };
        assert!(authorize(&admin, &Access::Delete { target }, false).is_ok());
    }

    fn draft(role: Role, imported: bool) -> UserDraft {
        use crate::domain::{Email, FullName, Metadata, Password, PasswordHash, Username};
        let credential = if imported {
            Credential::Imported(
                PasswordHash::import(
                    "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW".into(),
                )
                .unwrap(),
            )
        } else {
            Credential::Password(Password::parse("correct horse battery".into()).unwrap())
        };
        UserDraft {
            username: Username::parse("newcomer".into()).unwrap(),
            email: Email::parse("newcomer@example.com".into()).unwrap(),
            full_name: FullName::parse("New Comer".into()).unwrap(),
            credential,
            role,
            status: UserStatus::Active,
            metadata: Metadata::default(),
        }
    }

    #[test]
    fn what_a_new_user_may_carry_depends_on_who_creates_them() {
        let admin = caller(Role::Admin, UserId::new());
        let moderator = caller(Role::Moderator, UserId::new());
        for (who, asked, imported, expected) in [
            (&Caller::Anonymous, Role::Admin, false, Ok(Role::User)),
            (
                &Caller::Anonymous,
                Role::User,
                true,
                Err(Denied::NeedsToken),
            ),
            (&admin, Role::Admin, true, Ok(Role::Admin)),
            (&admin, Role::Moderator, false, Ok(Role::Moderator)),
            (
                &moderator,
                Role::User,
                true,
                Err(Denied::Forbidden {
                    role: "moderator",
                    what: "import password hashes",
                }),
            ),
        ] {
            let mut new = draft(asked, imported);
            let admitted = admit_new_user(who, &mut new).map(|()| new.role);
            assert_eq!(
                admitted, expected,
                "{who:?} asking for {asked:?}, imported {imported}"
            );
        }
    }

    #[test]
    fn only_an_admin_creates_a_user_who_is_not_active() {
        let admin = caller(Role::Admin, UserId::new());
        for (who, expected) in [
            (&admin, Ok(())),
            (&Caller::Anonymous, Err(Denied::NeedsToken)),
        ] {
            let mut new = draft(Role::User, false);
            new.status = UserStatus::Suspended;
            assert_eq!(admit_new_user(who, &mut new), expected, "{who:?}");
        }
    }
}

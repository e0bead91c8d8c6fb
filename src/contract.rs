//! What the server and its clients agree on beyond the schema, owned by neither side: the
//! metadata keys and limits a client relies on. The server's handlers and userctl both
//! import from here.

/// Initial metadata of a WatchUsers response: the first revision the stream covers.
pub const WATCH_START_REVISION: &str = "x-watch-start-revision";

/// ListUsers page size when the request gives 0.
pub const DEFAULT_PAGE_SIZE: usize = crate::domain::limits::DEFAULT_PAGE_SIZE;
/// ListUsers never returns more than this many users at once.
pub const MAX_PAGE_SIZE: usize = crate::domain::limits::MAX_PAGE_SIZE;
/// The longest username, which clients size their tables by.
pub const USERNAME_MAX_CHARS: usize = crate::domain::limits::USERNAME_MAX_CHARS;

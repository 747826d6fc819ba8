//! Keyset pagination of the content list: `?limit=…&cursor=…`, newest first.
//!
//! A cursor names the last item of the previous page, not an offset, so that
//! content created while a client pages through the list does not shift the
//! pages (no item is shown twice, none is skipped). Cursors are opaque to
//! clients: today a cursor is the row's sequence number, and only cursors
//! this service issued are accepted.

use crate::model::Content;

/// The page size when `limit` is absent.
pub const DEFAULT_LIMIT: u32 = 20;

/// The largest page size accepted.
pub const MAX_LIMIT: u32 = 100;

/// A validated list request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// How many items to return at most.
    pub limit: u32,
    /// Return only items older than this one (the previous page's last), if set.
    pub after: Option<Cursor>,
}

/// A position in the newest-first list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(pub(crate) i64);

/// One page of content, newest first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Page {
    /// The items, newest first.
    pub items: Vec<Content>,
    /// Pass this as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Why the list parameters were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadPageRequest {
    /// `limit` is not an integer in 1..=100.
    #[error("limit must be an integer from 1 to {MAX_LIMIT}, got {0:?}")]
    Limit(String),
    /// `cursor` is not one this service issued.
    #[error(
        "cursor {0:?} is not a cursor this service issued; use the next_cursor of a previous page"
    )]
    Cursor(String),
}

impl PageRequest {
    /// Validates the raw `limit` and `cursor` query parameters (an empty cursor means none).
    pub fn parse(limit: Option<&str>, cursor: Option<&str>) -> Result<PageRequest, BadPageRequest> {
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(raw) => match raw.trim().parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => return Err(BadPageRequest::Limit(raw.to_owned())),
            },
        };
        let after = match cursor {
            None | Some("") => None,
            Some(raw) => {
                Some(Cursor::decode(raw).ok_or_else(|| BadPageRequest::Cursor(raw.to_owned()))?)
            }
        };
        Ok(PageRequest { limit, after })
    }
}

impl Cursor {
    /// The cursor's text form, as handed to clients.
    pub fn encode(self) -> String {
        self.0.to_string()
    }

    /// Reads a cursor's text form; `None` if it is not one.
    pub fn decode(text: &str) -> Option<Cursor> {
        // Only plain digits: `+5` or ` 5` were never issued.
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse::<i64>().ok().filter(|seq| *seq > 0).map(Cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        assert_eq!(
            PageRequest::parse(None, None),
            Ok(PageRequest {
                limit: 20,
                after: None
            })
        );
        assert_eq!(
            PageRequest::parse(Some("1"), Some("")),
            Ok(PageRequest {
                limit: 1,
                after: None
            })
        );
        assert_eq!(
            PageRequest::parse(Some("100"), Some("42")),
            Ok(PageRequest {
                limit: 100,
                after: Some(Cursor(42))
            })
        );
        for bad in ["0", "101", "-1", "ten", "", "1.5"] {
            assert_eq!(
                PageRequest::parse(Some(bad), None),
                Err(BadPageRequest::Limit(bad.to_owned())),
                "{bad}"
            );
        }
        for bad in ["abc", "0", "-3", "+5", "99999999999999999999"] {
            assert!(
                matches!(
                    PageRequest::parse(None, Some(bad)),
                    Err(BadPageRequest::Cursor(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn cursors_round_trip() {
        assert_eq!(Cursor::decode(&Cursor(12345).encode()), Some(Cursor(12345)));
    }
}

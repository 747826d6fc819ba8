//! What a piece of content is, and the rules a new one must satisfy.
//!
//! Validation reads the request as loose JSON rather than through a derived
//! struct so that every problem can be reported against the field it concerns
//! (`"field":"title"`), which a typed decoder cannot do for a wrong type.

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The longest title accepted, in characters, after trimming.
///
/// The notifier's own bound, so every title the API stores is one the
/// notifier publishes (a longer one would be dead-lettered there).
pub const MAX_TITLE_CHARS: usize = herald_notifier::handler::MAX_TITLE_CHARS;

/// The longest body accepted, in characters.
pub const MAX_BODY_CHARS: usize = 10_000;

/// A stored piece of content, as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Content {
    /// The public id (a UUIDv7, so ids sort roughly by creation time).
    pub id: String,
    /// The title, trimmed.
    pub title: String,
    /// The body, as given.
    pub body: String,
    /// When it was created, RFC 3339 in UTC with microseconds at most.
    pub created_at: String,
}

/// A request to create content that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewContent {
    /// The trimmed title: 1 to [`MAX_TITLE_CHARS`] characters.
    pub title: String,
    /// The body: 0 to [`MAX_BODY_CHARS`] characters.
    pub body: String,
}

/// Why a create request was refused, field by field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidContent {
    /// The request body is JSON but not an object.
    #[error("the request body must be a JSON object with \"title\" and \"body\"")]
    NotAnObject,
    /// One field breaks a rule.
    #[error("{field}: {message}")]
    Field {
        /// The field at fault.
        field: &'static str,
        /// What is wrong, for a person to read.
        message: String,
    },
}

impl NewContent {
    /// Checks a create request: `title` is required, a string, 1..=200
    /// characters after trimming; `body` is optional (empty if absent), a
    /// string, at most 10 000 characters. Unknown fields are ignored.
    pub fn from_json(request: &Value) -> Result<NewContent, InvalidContent> {
        let Value::Object(fields) = request else {
            return Err(InvalidContent::NotAnObject);
        };
        let title = match fields.get("title") {
            None | Some(Value::Null) => return Err(invalid("title", "title is required")),
            Some(Value::String(title)) => title.trim(),
            Some(_) => return Err(invalid("title", "title must be a string")),
        };
        let title_chars = title.chars().count();
        if title_chars == 0 {
            return Err(invalid(
                "title",
                "title must not be empty or only whitespace",
            ));
        }
        if title_chars > MAX_TITLE_CHARS {
            return Err(invalid(
                "title",
                &format!("title must be at most {MAX_TITLE_CHARS} characters, got {title_chars}"),
            ));
        }
        let body = match fields.get("body") {
            None | Some(Value::Null) => "",
            Some(Value::String(body)) => body.as_str(),
            Some(_) => return Err(invalid("body", "body must be a string")),
        };
        let body_chars = body.chars().count();
        if body_chars > MAX_BODY_CHARS {
            return Err(invalid(
                "body",
                &format!("body must be at most {MAX_BODY_CHARS} characters, got {body_chars}"),
            ));
        }
        Ok(NewContent {
            title: title.to_owned(),
            body: body.to_owned(),
        })
    }
}

fn invalid(field: &'static str, message: &str) -> InvalidContent {
    InvalidContent::Field {
        field,
        message: message.to_owned(),
    }
}

/// The current time in whole microseconds since the Unix epoch, the precision stored.
pub(crate) fn now_micros() -> i64 {
    let micros = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000;
    i64::try_from(micros).unwrap_or(i64::MAX)
}

/// A stored time as RFC 3339 in UTC; `None` if it is outside the representable range.
pub(crate) fn rfc3339(micros: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .ok()?
        .format(&Rfc3339)
        .ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn field_error(request: Value) -> (&'static str, String) {
        match NewContent::from_json(&request) {
            Err(InvalidContent::Field { field, message }) => (field, message),
            other => panic!("expected a field error for {request}, got {other:?}"),
        }
    }

    #[test]
    fn accepts_and_trims_a_valid_request() {
        let new =
            NewContent::from_json(&json!({"title":"  Hello  ","body":"World","extra":1})).unwrap();
        assert_eq!(
            new,
            NewContent {
                title: "Hello".into(),
                body: "World".into()
            }
        );
        let no_body = NewContent::from_json(&json!({"title":"t"})).unwrap();
        assert_eq!(no_body.body, "");
    }

    #[test]
    fn limits_count_characters_not_bytes() {
        assert!(
            NewContent::from_json(&json!({"title": "é".repeat(200), "body": "ü".repeat(10_000)}))
                .is_ok()
        );
        assert_eq!(field_error(json!({"title": "é".repeat(201)})).0, "title");
        assert_eq!(
            field_error(json!({"title": "t", "body": "ü".repeat(10_001)})).0,
            "body"
        );
    }

    #[test]
    fn reports_each_field_problem() {
        assert_eq!(
            field_error(json!({"body":"b"})),
            ("title", "title is required".to_owned())
        );
        assert_eq!(field_error(json!({"title":5})).1, "title must be a string");
        assert_eq!(field_error(json!({"title":" \t\n "})).0, "title");
        assert_eq!(
            field_error(json!({"title":"t","body":["x"]})),
            ("body", "body must be a string".to_owned())
        );
        assert_eq!(
            NewContent::from_json(&json!(["title"])),
            Err(InvalidContent::NotAnObject)
        );
    }

    #[test]
    fn times_format_as_rfc3339_utc() {
        assert_eq!(rfc3339(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(
            rfc3339(1_700_000_000_123_456).as_deref(),
            Some("2023-11-14T22:13:20.123456Z")
        );
        let now = now_micros();
        let text = rfc3339(now).unwrap();
        assert!(OffsetDateTime::parse(&text, &Rfc3339).is_ok());
    }
}
